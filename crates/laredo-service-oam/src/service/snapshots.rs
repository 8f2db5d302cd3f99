//! Engine snapshot RPCs: `CreateSnapshot`, `ListSnapshots`, `InspectSnapshot`,
//! `RestoreSnapshot`, `DeleteSnapshot` and `PruneSnapshots`.
//!
//! They go to the engine's snapshot store and answer `FAILED_PRECONDITION` when the
//! engine has none. Tables are written `schema.table`; a restore needs `confirm`, since
//! it replaces every target's rows. Listings name the store (type and location) each
//! snapshot lives in.

use std::collections::BTreeMap;

use laredo_core::{SnapshotDescriptor, SnapshotFilter, SnapshotMetadata, TableIdentifier, Value};
use laredo_proto::laredo::v1 as pb;
use tonic::{Request, Response, Status};

use super::conversion::micros_timestamp;
use super::{OamService, engine_status};

impl OamService {
    /// The store's type and location, for snapshot listings.
    async fn store_description(&self) -> (String, String) {
        match self.engine.snapshot_summary().await {
            Ok(Some(summary)) => (summary.store_type, summary.store_location),
            _ => (String::new(), String::new()),
        }
    }
}

pub(super) async fn create_snapshot(
    service: &OamService,
    request: Request<pb::CreateSnapshotRequest>,
) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
    let request = request.into_inner();
    let mut tables = Vec::with_capacity(request.tables.len());
    for (i, name) in request.tables.iter().enumerate() {
        match table_filter(name) {
            Ok(Some(table)) => tables.push(table),
            Ok(None) => {
                return Err(Status::invalid_argument(format!("tables[{i}] is empty")));
            }
            Err(status) => {
                return Err(Status::invalid_argument(format!(
                    "tables[{i}]: {}",
                    status.message()
                )));
            }
        }
    }
    let mut user_meta = BTreeMap::new();
    for (key, value) in &request.user_meta {
        let value = Value::try_from(value)
            .map_err(|e| Status::invalid_argument(format!("user_meta[{key:?}]: {e}")))?;
        user_meta.insert(key.clone(), value);
    }
    let descriptor = if tables.is_empty() {
        service.engine.create_snapshot(user_meta).await
    } else {
        service.engine.create_snapshot_of(&tables, user_meta).await
    }
    .map_err(engine_status)?;
    Ok(Response::new(pb::CreateSnapshotResponse {
        accepted: true,
        snapshot_id: descriptor.snapshot_id,
        message: format!(
            "{} table(s), {} row(s), {} byte(s)",
            descriptor.tables.len(),
            descriptor.tables.iter().map(|t| t.row_count).sum::<u64>(),
            descriptor.size_bytes
        ),
    }))
}

pub(super) async fn list_snapshots(
    service: &OamService,
    request: Request<pb::ListSnapshotsRequest>,
) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
    let request = request.into_inner();
    let filter = SnapshotFilter {
        table: table_filter(&request.table)?,
    };
    let mut listed = service
        .engine
        .list_snapshots(&filter)
        .await
        .map_err(engine_status)?;
    if request.limit > 0 {
        listed.truncate(request.limit as usize);
    }
    let (store_type, location) = service.store_description().await;
    let snapshots = listed
        .iter()
        .map(|d| snapshot_info(d, None, &store_type, &location))
        .collect();
    Ok(Response::new(pb::ListSnapshotsResponse { snapshots }))
}

pub(super) async fn inspect_snapshot(
    service: &OamService,
    request: Request<pb::InspectSnapshotRequest>,
) -> Result<Response<pb::InspectSnapshotResponse>, Status> {
    let id = request.into_inner().snapshot_id;
    if id.is_empty() {
        return Err(Status::invalid_argument("snapshot_id is required"));
    }
    let (metadata, descriptor) = service
        .engine
        .inspect_snapshot(&id)
        .await
        .map_err(engine_status)?;
    let (store_type, location) = service.store_description().await;
    Ok(Response::new(pb::InspectSnapshotResponse {
        info: Some(snapshot_info(
            &descriptor,
            Some(&metadata),
            &store_type,
            &location,
        )),
    }))
}

pub(super) async fn restore_snapshot(
    service: &OamService,
    request: Request<pb::RestoreSnapshotRequest>,
) -> Result<Response<pb::RestoreSnapshotResponse>, Status> {
    let request = request.into_inner();
    if request.snapshot_id.is_empty() {
        return Err(Status::invalid_argument("snapshot_id is required"));
    }
    if !request.confirm {
        return Err(Status::failed_precondition(
            "restoring replaces every target's rows: set confirm to proceed",
        ));
    }
    let outcome = service
        .engine
        .restore_snapshot(&request.snapshot_id, request.skip_meta_check)
        .await
        .map_err(engine_status)?;
    Ok(Response::new(pb::RestoreSnapshotResponse {
        accepted: true,
        message: format!(
            "restored {}; streaming resumed from its positions",
            outcome.snapshot_id
        ),
        user_meta: outcome
            .user_meta
            .iter()
            .map(|(k, v)| (k.clone(), pb::Value::from(v)))
            .collect(),
        warnings: outcome.warnings,
    }))
}

pub(super) async fn delete_snapshot(
    service: &OamService,
    request: Request<pb::DeleteSnapshotRequest>,
) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
    let id = request.into_inner().snapshot_id;
    if id.is_empty() {
        return Err(Status::invalid_argument("snapshot_id is required"));
    }
    service
        .engine
        .delete_snapshot(&id)
        .await
        .map_err(engine_status)?;
    Ok(Response::new(pb::DeleteSnapshotResponse { deleted: true }))
}

pub(super) async fn prune_snapshots(
    service: &OamService,
    request: Request<pb::PruneSnapshotsRequest>,
) -> Result<Response<pb::PruneSnapshotsResponse>, Status> {
    let request = request.into_inner();
    if request.keep == 0 {
        return Err(Status::invalid_argument("keep must be positive"));
    }
    let table = table_filter(&request.table)?;
    let deleted = service
        .engine
        .prune_snapshots(request.keep as usize, table.as_ref())
        .await
        .map_err(engine_status)?;
    Ok(Response::new(pb::PruneSnapshotsResponse {
        deleted_count: u32::try_from(deleted).unwrap_or(u32::MAX),
    }))
}

/// An optional `"schema.table"` argument.
fn table_filter(text: &str) -> Result<Option<TableIdentifier>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        Status::invalid_argument(format!("table {text:?} must be written schema.table"))
    })
}

fn snapshot_info(
    descriptor: &SnapshotDescriptor,
    metadata: Option<&SnapshotMetadata>,
    store_type: &str,
    location: &str,
) -> pb::SnapshotInfo {
    pb::SnapshotInfo {
        snapshot_id: descriptor.snapshot_id.clone(),
        created_at: Some(micros_timestamp(descriptor.created_at_micros)),
        format: descriptor.format.clone(),
        source_positions: metadata
            .map_or(&descriptor.source_positions, |m| &m.source_positions)
            .iter()
            .map(|(source_id, position)| pb::SourcePosition {
                source_id: source_id.clone(),
                position: position.clone(),
            })
            .collect(),
        tables: descriptor
            .tables
            .iter()
            .map(|t| pb::SnapshotTableInfo {
                schema: t.table.schema().to_string(),
                table: t.table.table().to_string(),
                row_count: t.row_count,
                target_type: t.target_type.clone(),
                columns: t.columns.iter().map(pb::ColumnDefinition::from).collect(),
            })
            .collect(),
        size_bytes: descriptor.size_bytes,
        store_type: store_type.to_string(),
        store_location: location.to_string(),
        user_meta: metadata
            .map(|m| {
                m.user_meta
                    .iter()
                    .map(|(k, v)| (k.clone(), pb::Value::from(v)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}
