//! Administration RPCs: `ReloadTable`, `ReloadAll`, `PauseSync`, `ResumeSync`,
//! `ResetSource` and `DrainReplication`.
//!
//! Reloads answer at once: what can be checked up front is (the table, its source, an
//! active pipeline), then the reload runs in a background task whose handle the
//! service keeps until it ends; its progress shows in the pipeline states and its
//! failure in the server log. A reload is never aborted (cut off half way it would
//! leave its source paused); the engine's stop cancels it. A reset needs `confirm`,
//! since it discards the source's position. Draining reaches fan-out targets through
//! their [`FanoutControl`] capability only.
//!
//! [`FanoutControl`]: laredo_core::FanoutControl

use std::sync::Arc;

use laredo_core::{
    DrainReason, EngineError, PipelineInfo, PipelineState, SyncTarget, TableIdentifier,
};
use laredo_proto::laredo::v1 as pb;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use super::conversion::json_struct;
use super::{OamService, engine_status};
use crate::describe;

impl OamService {
    /// Keeps the handle of a background reload, forgetting finished ones.
    fn track_reload(&self, handle: JoinHandle<()>) {
        let mut reloads = self.reloads.lock();
        reloads.retain(|h| !h.is_finished());
        reloads.push(handle);
    }
}

/// Checks what can be known up front (the table, its source, an active pipeline),
/// then reloads in the background and answers at once; a failure of the reload
/// itself shows as its pipelines going to ERROR (and in the server log).
pub(super) async fn reload_table(
    service: &OamService,
    request: Request<pb::ReloadTableRequest>,
) -> Result<Response<pb::ReloadTableResponse>, Status> {
    let request = request.into_inner();
    let table = service.table(&request.schema, &request.table)?;
    let of_table: Vec<PipelineInfo> = service
        .engine
        .pipelines()
        .into_iter()
        .filter(|p| p.table == table)
        .collect();
    let source = if request.source_id.is_empty() {
        let mut ids: Vec<&str> = of_table.iter().map(|p| p.source_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        match ids.as_slice() {
            [one] => (*one).to_string(),
            several => {
                return Err(Status::invalid_argument(format!(
                    "{table} is served by sources {}: set source_id",
                    several.join(", ")
                )));
            }
        }
    } else {
        service.source_ids(&request.source_id)?;
        if !of_table.iter().any(|p| p.source_id == request.source_id) {
            return Err(Status::not_found(format!(
                "no pipeline serves table {table} on source {:?}",
                request.source_id
            )));
        }
        request.source_id
    };
    let active = of_table.iter().any(|p| {
        p.source_id == source && matches!(p.state, PipelineState::Streaming | PipelineState::Paused)
    });
    if !active {
        let refused = EngineError::NoActivePipelines {
            source_id: source,
            table,
        };
        return Ok(Response::new(pb::ReloadTableResponse {
            accepted: false,
            message: refused.to_string(),
        }));
    }
    let message = format!("reload started for {table} on source {source}");
    let engine = service.engine.clone();
    service.track_reload(tokio::spawn(async move {
        match engine.reload(&source, &table).await {
            Ok(()) => tracing::info!(%table, source = %source, "reload completed"),
            Err(e) => {
                tracing::warn!(%table, source = %source, error = %laredo_core::ErrorChain(&e), "reload failed")
            }
        }
    }));
    Ok(Response::new(pb::ReloadTableResponse {
        accepted: true,
        message,
    }))
}

pub(super) async fn reload_all(
    service: &OamService,
    request: Request<pb::ReloadAllRequest>,
) -> Result<Response<pb::ReloadAllResponse>, Status> {
    let source_id = request.into_inner().source_id;
    let sources = service.source_ids(&source_id)?;
    let active = service.engine.pipelines().iter().any(|p| {
        sources.contains(&p.source_id)
            && matches!(p.state, PipelineState::Streaming | PipelineState::Paused)
    });
    let what = if source_id.is_empty() {
        "every table".to_string()
    } else {
        format!("every table of source {source_id}")
    };
    if !active {
        return Ok(Response::new(pb::ReloadAllResponse {
            accepted: false,
            message: format!("cannot reload {what}: no pipeline is streaming or paused"),
        }));
    }
    // Like ReloadTable: accepted at once, the reloads (one table after another)
    // run in the background; pipeline states and the watch stream show progress.
    let engine = service.engine.clone();
    service.track_reload(tokio::spawn(async move {
        let source = (!source_id.is_empty()).then_some(source_id.as_str());
        match engine.reload_all(source).await {
            Ok(()) => tracing::info!(source = ?source, "reload of every table completed"),
            Err(e) => {
                tracing::warn!(source = ?source, error = %laredo_core::ErrorChain(&e), "reload of every table failed")
            }
        }
    }));
    Ok(Response::new(pb::ReloadAllResponse {
        accepted: true,
        message: format!("reload started for {what}"),
    }))
}

pub(super) async fn pause_sync(
    service: &OamService,
    request: Request<pb::PauseSyncRequest>,
) -> Result<Response<pb::PauseSyncResponse>, Status> {
    for source in service.source_ids(&request.into_inner().source_id)? {
        service.engine.pause(&source).await.map_err(engine_status)?;
    }
    Ok(Response::new(pb::PauseSyncResponse {
        state: service.service_state() as i32,
    }))
}

pub(super) async fn resume_sync(
    service: &OamService,
    request: Request<pb::ResumeSyncRequest>,
) -> Result<Response<pb::ResumeSyncResponse>, Status> {
    for source in service.source_ids(&request.into_inner().source_id)? {
        service
            .engine
            .resume(&source)
            .await
            .map_err(engine_status)?;
    }
    Ok(Response::new(pb::ResumeSyncResponse {
        state: service.service_state() as i32,
    }))
}

pub(super) async fn reset_source(
    service: &OamService,
    request: Request<pb::ResetSourceRequest>,
) -> Result<Response<pb::ResetSourceResponse>, Status> {
    let request = request.into_inner();
    if request.source_id.is_empty() {
        return Err(Status::invalid_argument("source_id is required"));
    }
    service.source_ids(&request.source_id)?;
    if !request.confirm {
        return Err(Status::failed_precondition(format!(
            "resetting source {:?} discards its position and re-baselines every table: set confirm",
            request.source_id
        )));
    }
    service
        .engine
        .reset_source(&request.source_id, request.drop_publication)
        .await
        .map_err(engine_status)?;
    let mut details = serde_json::Map::new();
    details.insert("source_id".into(), request.source_id.clone().into());
    details.insert("drop_publication".into(), request.drop_publication.into());
    // After the reset: the source as it is now (for PostgreSQL the slot is gone or
    // new, the publication dropped or kept).
    if let Some(source) = service.engine.source(&request.source_id) {
        details.insert("source_type".into(), source.source_type().into());
        let now = describe::masked(source.details().await);
        if !now.is_empty() {
            details.insert("source".into(), now.into());
        }
    }
    Ok(Response::new(pb::ResetSourceResponse {
        accepted: true,
        message: format!(
            "source {:?} reset; a fresh baseline runs",
            request.source_id
        ),
        details: Some(json_struct(details)),
    }))
}

pub(super) async fn drain_replication(
    service: &OamService,
    request: Request<pb::DrainReplicationRequest>,
) -> Result<Response<pb::DrainReplicationResponse>, Status> {
    let request = request.into_inner();
    if request.schema.is_empty() != request.table.is_empty() {
        return Err(Status::invalid_argument(
            "set both schema and table to drain one target, or neither to drain all",
        ));
    }
    let deadline = request
        .drain_deadline
        .and_then(|d| std::time::Duration::try_from(d).ok())
        .filter(|d| !d.is_zero());
    // Every target that serves clients of its own (the replication fan-out).
    let targets: Vec<(PipelineInfo, Arc<dyn SyncTarget>)> = service
        .engine
        .pipelines()
        .into_iter()
        .filter_map(|p| {
            let target = service.engine.pipeline_target(&p.id)?;
            target.fanout().is_some().then_some((p, target))
        })
        .collect();
    if targets.is_empty() {
        return Err(Status::failed_precondition(
            "no replication fan-out target is configured",
        ));
    }
    let wanted =
        (!request.table.is_empty()).then(|| TableIdentifier::new(&request.schema, &request.table));
    let mut drained = Vec::new();
    for (info, target) in targets {
        if wanted.as_ref().is_some_and(|t| *t != info.table) {
            continue;
        }
        if let Some(fanout) = target.fanout() {
            fanout.drain(DrainReason::Admin, deadline);
            drained.push(info.table.to_string());
        }
    }
    if drained.is_empty() {
        return Err(Status::not_found(format!(
            "no fan-out target for {}.{}",
            request.schema, request.table
        )));
    }
    Ok(Response::new(pb::DrainReplicationResponse {
        accepted: true,
        message: format!("draining {} fan-out target(s)", drained.len()),
        drained_targets: drained,
    }))
}
