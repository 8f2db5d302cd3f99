//! Table RPCs: `ListTables` (each pipeline's table with its key, its source's and its
//! target's configuration) and `GetTableSchema`.
//!
//! Configurations are what sources and targets report about themselves, masked by
//! `describe` (passwords in URLs and secret-looking keys), so that a listing never
//! carries a credential.

use std::collections::HashMap;

use laredo_proto::laredo::v1 as pb;
use tonic::{Request, Response, Status};

use super::OamService;
use super::conversion::json_struct;
use crate::describe;

pub(super) async fn list_tables(
    service: &OamService,
    _request: Request<pb::ListTablesRequest>,
) -> Result<Response<pb::ListTablesResponse>, Status> {
    let mut source_configs = HashMap::new();
    for id in service.engine.source_ids() {
        if let Some(config) = describe::source_config(&service.engine, &id).await {
            source_configs.insert(id, json_struct(config));
        }
    }
    let tables = service
        .engine
        .pipelines()
        .into_iter()
        .map(|p| {
            let primary_key = service
                .engine
                .table_schema(&p.table)
                .map(|columns| {
                    let mut key: Vec<_> = columns.into_iter().filter(|c| c.primary_key).collect();
                    key.sort_by_key(|c| c.primary_key_ordinal);
                    key.into_iter().map(|c| c.name).collect()
                })
                .unwrap_or_default();
            pb::TableConfig {
                schema: p.table.schema().to_string(),
                table: p.table.table().to_string(),
                primary_key,
                source_type: service
                    .engine
                    .source_info(&p.source_id)
                    .map(|s| s.source_type)
                    .unwrap_or_default(),
                source_config: source_configs.get(&p.source_id).cloned(),
                source_id: p.source_id,
                target_type: p.target_type,
                target_config: service
                    .engine
                    .pipeline_target(&p.id)
                    .map(|t| json_struct(describe::target_config(t.as_ref()))),
                pipeline_id: p.id,
            }
        })
        .collect();
    Ok(Response::new(pb::ListTablesResponse { tables }))
}

pub(super) async fn get_table_schema(
    service: &OamService,
    request: Request<pb::GetTableSchemaRequest>,
) -> Result<Response<pb::GetTableSchemaResponse>, Status> {
    let request = request.into_inner();
    let table = service.table(&request.schema, &request.table)?;
    let columns = service.engine.table_schema(&table).ok_or_else(|| {
        Status::unavailable(format!(
            "the columns of {table} are not known yet (the source has not started)"
        ))
    })?;
    Ok(Response::new(pb::GetTableSchemaResponse {
        columns: columns.iter().map(Into::into).collect(),
    }))
}
