//! Status RPCs: `GetStatus`, `GetTableStatus`, `GetPipelineStatus`, `ListPipelines`,
//! `CheckReady` and `GetSourceInfo`.
//!
//! A pipeline's status joins what the engine reports (state, row count, buffer depth,
//! readiness, the fan-out target's client count through its [`FanoutControl`]
//! capability) with the counters [`StatusEvents`] keeps from the observer's events
//! (changes applied, the last change, the last error) and, when a dead letter store is
//! configured, the pipeline's dead letter count (a store that cannot count is reported
//! in the status, not as a failed call). A source's status adds what it reports about
//! itself ([`SyncSource::details`], masked) and the warnings of its table checks.
//!
//! [`FanoutControl`]: laredo_core::FanoutControl
//! [`StatusEvents`]: crate::StatusEvents
//! [`SyncSource::details`]: laredo_core::SyncSource::details

use laredo_core::{IndexInfo, PipelineInfo, PipelineState, SyncTarget};
use laredo_proto::laredo::v1 as pb;
use tonic::{Request, Response, Status};

use super::OamService;
use super::conversion::{
    duration, json_struct, micros_timestamp, ordering, pipeline_state, source_state, timestamp,
};
use crate::describe;
use crate::events::service_state;

impl OamService {
    async fn pipeline_status(&self, p: &PipelineInfo) -> pb::PipelineStatus {
        let counters = self.events.counters(&p.id);
        let (dead_letters, dead_letter_error) = match self.engine.dead_letter_store() {
            Some(store) => match store.count(&p.id).await {
                Ok(count) => (count, String::new()),
                Err(e) => {
                    let error = laredo_core::ErrorChain(&e);
                    tracing::warn!(pipeline = %p.id, %error, "cannot count dead letters");
                    (0, format!("dead letter store: {error}"))
                }
            },
            None => (0, String::new()),
        };
        let error_message = if p.state == PipelineState::Error {
            counters
                .last_error
                .clone()
                .unwrap_or_else(|| "the pipeline failed; see the server log".to_string())
        } else {
            String::new()
        };
        pb::PipelineStatus {
            pipeline_id: p.id.clone(),
            source_id: p.source_id.clone(),
            schema: p.table.schema().to_string(),
            table: p.table.table().to_string(),
            target_type: p.target_type.clone(),
            state: pipeline_state(p.state) as i32,
            row_count: u64::try_from(p.row_count).unwrap_or(0),
            inserts_applied: counters.inserts,
            updates_applied: counters.updates,
            deletes_applied: counters.deletes,
            truncates_applied: counters.truncates,
            last_change_at: counters.last_change_at.map(timestamp),
            error_message,
            buffer_depth: p.buffer_depth as u64,
            buffer_capacity: p.buffer_capacity as u64,
            dead_letter_count: dead_letters,
            dead_letter_error,
            ready: self.engine.is_pipeline_ready(&p.id),
            fanout_client_count: self
                .engine
                .pipeline_target(&p.id)
                .and_then(|t| t.fanout().map(|fanout| fanout.client_count()))
                .map_or(0, |count| u32::try_from(count).unwrap_or(u32::MAX)),
        }
    }

    /// A source's info; `current_position` is the position the source delivered last
    /// (a change, a heartbeat, or where streaming started), `acked_position` the last
    /// one acknowledged to it.
    async fn source_info(&self, source_id: &str) -> Option<pb::SourceInfo> {
        let mut info = self.source_summary(source_id)?;
        info.details = self.source_details(source_id).await;
        Some(info)
    }

    /// What the source reports about itself ([`SyncSource::details`]: for PostgreSQL
    /// the slot and the publication), masked, plus the warnings of its table checks
    /// (`warnings`); `None` when there is nothing.
    ///
    /// [`SyncSource::details`]: laredo_core::SyncSource::details
    async fn source_details(&self, source_id: &str) -> Option<prost_types::Struct> {
        let source = self.engine.source(source_id)?;
        let mut details = describe::masked(source.details().await);
        let warnings = self.events.warnings(source_id);
        if !warnings.is_empty() {
            details.insert(
                "warnings".into(),
                serde_json::Value::Array(warnings.iter().map(|w| w.to_string().into()).collect()),
            );
        }
        (!details.is_empty()).then(|| json_struct(details))
    }

    fn source_summary(&self, source_id: &str) -> Option<pb::SourceInfo> {
        let info = self.engine.source_info(source_id)?;
        Some(pb::SourceInfo {
            source_id: info.id,
            source_type: info.source_type,
            state: source_state(info.state) as i32,
            supports_resume: info.supports_resume,
            ordering_guarantee: ordering(info.ordering) as i32,
            current_position: info.current_position.unwrap_or_default(),
            acked_position: info.last_acked_position.unwrap_or_default(),
            lag_bytes: Some(info.lag.lag_bytes),
            lag_time: info.lag.lag_time.and_then(duration),
            details: None,
        })
    }

    pub(super) fn service_state(&self) -> pb::ServiceState {
        service_state(self.engine.pipelines().iter().map(|p| p.state))
    }

    async fn snapshot_summary(&self) -> pb::SnapshotSummary {
        match self.engine.snapshot_summary().await {
            Ok(Some(summary)) => pb::SnapshotSummary {
                enabled: true,
                store_type: summary.store_type,
                last_snapshot_id: summary
                    .latest
                    .as_ref()
                    .map(|d| d.snapshot_id.clone())
                    .unwrap_or_default(),
                last_snapshot_at: summary
                    .latest
                    .as_ref()
                    .map(|d| micros_timestamp(d.created_at_micros)),
                next_scheduled_at: summary.next_scheduled_at.map(timestamp),
                snapshot_count: u32::try_from(summary.count).unwrap_or(u32::MAX),
            },
            Ok(None) => pb::SnapshotSummary::default(),
            Err(e) => {
                tracing::warn!(error = %laredo_core::ErrorChain(&e), "cannot list snapshots for status");
                pb::SnapshotSummary {
                    enabled: true,
                    ..Default::default()
                }
            }
        }
    }
}

pub(super) async fn get_status(
    service: &OamService,
    _request: Request<pb::GetStatusRequest>,
) -> Result<Response<pb::GetStatusResponse>, Status> {
    let pipelines = service.engine.pipelines();
    let mut statuses = Vec::with_capacity(pipelines.len());
    for p in &pipelines {
        statuses.push(service.pipeline_status(p).await);
    }
    let last_change_at = statuses
        .iter()
        .filter_map(|s| s.last_change_at)
        .max_by_key(|t| (t.seconds, t.nanos));
    let mut sources = Vec::new();
    for id in service.engine.source_ids() {
        sources.extend(service.source_info(&id).await);
    }
    Ok(Response::new(pb::GetStatusResponse {
        state: service_state(pipelines.iter().map(|p| p.state)) as i32,
        sources,
        pipelines: statuses,
        started_at: Some(timestamp(service.started_at)),
        last_change_at,
        snapshot_status: Some(service.snapshot_summary().await),
    }))
}

pub(super) async fn get_table_status(
    service: &OamService,
    request: Request<pb::GetTableStatusRequest>,
) -> Result<Response<pb::GetTableStatusResponse>, Status> {
    let request = request.into_inner();
    let table = service.table(&request.schema, &request.table)?;
    let mut pipelines = Vec::new();
    for p in service
        .engine
        .pipelines()
        .iter()
        .filter(|p| p.table == table)
    {
        pipelines.push(service.pipeline_status(p).await);
    }
    // The first target of the table that lists indexes (the indexed targets).
    let indexes = service
        .engine
        .targets("", &table)
        .iter()
        .map(|t| index_infos(t.as_ref()))
        .find(|indexes| !indexes.is_empty())
        .unwrap_or_default();
    Ok(Response::new(pb::GetTableStatusResponse {
        pipelines,
        indexes,
    }))
}

pub(super) async fn get_pipeline_status(
    service: &OamService,
    request: Request<pb::GetPipelineStatusRequest>,
) -> Result<Response<pb::GetPipelineStatusResponse>, Status> {
    let p = service.pipeline(&request.into_inner().pipeline_id)?;
    let indexes = service
        .engine
        .pipeline_target(&p.id)
        .map(|t| index_infos(t.as_ref()))
        .unwrap_or_default();
    Ok(Response::new(pb::GetPipelineStatusResponse {
        status: Some(service.pipeline_status(&p).await),
        indexes,
    }))
}

pub(super) async fn list_pipelines(
    service: &OamService,
    request: Request<pb::ListPipelinesRequest>,
) -> Result<Response<pb::ListPipelinesResponse>, Status> {
    let request = request.into_inner();
    let mut pipelines = Vec::new();
    for p in service.engine.pipelines() {
        if !request.source_id.is_empty() && p.source_id != request.source_id {
            continue;
        }
        if !request.table.is_empty()
            && p.table.to_string() != request.table
            && p.table.table() != request.table
        {
            continue;
        }
        pipelines.push(service.pipeline_status(&p).await);
    }
    Ok(Response::new(pb::ListPipelinesResponse { pipelines }))
}

pub(super) async fn check_ready(
    service: &OamService,
    request: Request<pb::CheckReadyRequest>,
) -> Result<Response<pb::CheckReadyResponse>, Status> {
    let request = request.into_inner();
    let pipelines: Vec<PipelineInfo> = service
        .engine
        .pipelines()
        .into_iter()
        .filter(|p| request.source.is_empty() || p.source_id == request.source)
        .filter(|p| {
            request.table.is_empty()
                || p.table.to_string() == request.table
                || p.table.table() == request.table
        })
        .filter(|p| request.pipeline_id.is_empty() || p.id == request.pipeline_id)
        .collect();
    if pipelines.is_empty() {
        return Err(Status::not_found(
            "no pipeline matches the given source, table and pipeline id",
        ));
    }
    let not_ready_reasons: Vec<String> = pipelines
        .iter()
        .filter(|p| !service.engine.is_pipeline_ready(&p.id))
        .map(|p| format!("pipeline {} is {}", p.id, p.state))
        .collect();
    Ok(Response::new(pb::CheckReadyResponse {
        ready: not_ready_reasons.is_empty(),
        not_ready_reasons,
    }))
}

pub(super) async fn get_source_info(
    service: &OamService,
    request: Request<pb::GetSourceInfoRequest>,
) -> Result<Response<pb::GetSourceInfoResponse>, Status> {
    let ids = service.source_ids(&request.into_inner().source_id)?;
    let mut sources = Vec::with_capacity(ids.len());
    for id in &ids {
        sources.extend(service.source_info(id).await);
    }
    Ok(Response::new(pb::GetSourceInfoResponse { sources }))
}

/// The indexes a target lists through its row access ([`RowAccess::indexes`]); none
/// for a target without.
///
/// [`RowAccess::indexes`]: laredo_core::RowAccess::indexes
fn index_infos(target: &dyn SyncTarget) -> Vec<pb::IndexInfo> {
    target
        .rows()
        .map(|rows| rows.indexes())
        .unwrap_or_default()
        .into_iter()
        .map(|i: IndexInfo| pb::IndexInfo {
            name: i.name,
            fields: i.fields,
            unique: i.unique,
            entry_count: i.entry_count as u64,
        })
        .collect()
}
