//! [`OamService`]: `laredo.v1.LaredoOAMService` over a running [`Engine`].
//!
//! The service is a handle on the engine (plus the [`StatusEvents`] fed by the
//! engine's observer, the replays it started and the reloads it runs in the
//! background); it holds no state of its own that the engine does not. The trait
//! impl here is the table of RPCs: each one is served by a function in the room that
//! holds its concern, and the lookups they share (a pipeline, a table, the sources an
//! optional id selects, each with the gRPC status a caller can act on) live here:
//!
//! - `status`: service, source and pipeline status, readiness, the indexes of a table;
//! - `watch`: the `WatchStatus` stream of status events, filtered per watcher;
//! - `tables`: table configurations (masked) and schemas;
//! - `admin`: reload, pause and resume, source reset, draining replication;
//! - `snapshots`: engine snapshots (create, list, inspect, restore, delete, prune);
//! - `dead_letters`: a pipeline's dead letters (list, replay, purge);
//! - `replays`: snapshot replays into a live pipeline, by replay id;
//! - `conversion`: engine values as protobuf messages (states, times, JSON).
//!
//! [`engine_status`] maps engine errors to gRPC statuses for every room.

mod admin;
mod conversion;
mod dead_letters;
mod replays;
mod snapshots;
mod status;
mod tables;
mod watch;

use std::sync::Arc;
use std::time::SystemTime;

use laredo_core::{Engine, EngineError, PipelineInfo, TableIdentifier};
use laredo_proto::laredo::v1 as pb;
use laredo_proto::laredo::v1::laredo_oam_service_server::{
    LaredoOamService, LaredoOamServiceServer,
};
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use self::replays::Replays;
pub use self::watch::WatchStream;
use crate::events::StatusEvents;

/// The OAM service of one engine.
#[derive(Debug, Clone)]
pub struct OamService {
    engine: Engine,
    events: Arc<StatusEvents>,
    started_at: SystemTime,
    replays: Arc<Replays>,
    /// Reloads started by `ReloadTable`, until they finish. Never aborted: a reload cut
    /// off half way would leave its source paused; the engine's stop cancels them.
    reloads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl OamService {
    /// The service for `engine`, fed by `events` (the observer registered with the
    /// engine's builder).
    pub fn new(engine: Engine, events: Arc<StatusEvents>) -> Self {
        events.seed_states(&engine.pipelines());
        Self {
            engine,
            events,
            started_at: SystemTime::now(),
            replays: Arc::default(),
            reloads: Arc::default(),
        }
    }

    /// The tonic server to add to a gRPC server.
    pub fn into_server(self) -> LaredoOamServiceServer<Self> {
        LaredoOamServiceServer::new(self)
    }

    fn pipeline(&self, id: &str) -> Result<PipelineInfo, Status> {
        self.engine
            .pipelines()
            .into_iter()
            .find(|p| p.id == id)
            .ok_or_else(|| Status::not_found(format!("pipeline {id} not found")))
    }

    fn source_ids(&self, source_id: &str) -> Result<Vec<String>, Status> {
        if source_id.is_empty() {
            return Ok(self.engine.source_ids());
        }
        if self.engine.source_ids().iter().any(|s| s == source_id) {
            Ok(vec![source_id.to_string()])
        } else {
            Err(Status::not_found(format!("no source {source_id:?}")))
        }
    }

    fn table(&self, schema: &str, table: &str) -> Result<TableIdentifier, Status> {
        if table.is_empty() {
            return Err(Status::invalid_argument("table is required"));
        }
        let schema = if schema.is_empty() { "public" } else { schema };
        let id = TableIdentifier::new(schema, table);
        if self.engine.pipelines().iter().any(|p| p.table == id) {
            Ok(id)
        } else {
            Err(Status::not_found(format!("no pipeline serves table {id}")))
        }
    }
}

#[tonic::async_trait]
impl LaredoOamService for OamService {
    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        status::get_status(self, request).await
    }

    async fn get_table_status(
        &self,
        request: Request<pb::GetTableStatusRequest>,
    ) -> Result<Response<pb::GetTableStatusResponse>, Status> {
        status::get_table_status(self, request).await
    }

    async fn get_pipeline_status(
        &self,
        request: Request<pb::GetPipelineStatusRequest>,
    ) -> Result<Response<pb::GetPipelineStatusResponse>, Status> {
        status::get_pipeline_status(self, request).await
    }

    async fn list_pipelines(
        &self,
        request: Request<pb::ListPipelinesRequest>,
    ) -> Result<Response<pb::ListPipelinesResponse>, Status> {
        status::list_pipelines(self, request).await
    }

    type WatchStatusStream = WatchStream;

    async fn watch_status(
        &self,
        request: Request<pb::WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        watch::watch_status(self, request).await
    }

    async fn check_ready(
        &self,
        request: Request<pb::CheckReadyRequest>,
    ) -> Result<Response<pb::CheckReadyResponse>, Status> {
        status::check_ready(self, request).await
    }

    async fn get_source_info(
        &self,
        request: Request<pb::GetSourceInfoRequest>,
    ) -> Result<Response<pb::GetSourceInfoResponse>, Status> {
        status::get_source_info(self, request).await
    }

    async fn list_tables(
        &self,
        request: Request<pb::ListTablesRequest>,
    ) -> Result<Response<pb::ListTablesResponse>, Status> {
        tables::list_tables(self, request).await
    }

    async fn get_table_schema(
        &self,
        request: Request<pb::GetTableSchemaRequest>,
    ) -> Result<Response<pb::GetTableSchemaResponse>, Status> {
        tables::get_table_schema(self, request).await
    }

    async fn reload_table(
        &self,
        request: Request<pb::ReloadTableRequest>,
    ) -> Result<Response<pb::ReloadTableResponse>, Status> {
        admin::reload_table(self, request).await
    }

    async fn reload_all(
        &self,
        request: Request<pb::ReloadAllRequest>,
    ) -> Result<Response<pb::ReloadAllResponse>, Status> {
        admin::reload_all(self, request).await
    }

    async fn pause_sync(
        &self,
        request: Request<pb::PauseSyncRequest>,
    ) -> Result<Response<pb::PauseSyncResponse>, Status> {
        admin::pause_sync(self, request).await
    }

    async fn resume_sync(
        &self,
        request: Request<pb::ResumeSyncRequest>,
    ) -> Result<Response<pb::ResumeSyncResponse>, Status> {
        admin::resume_sync(self, request).await
    }

    async fn reset_source(
        &self,
        request: Request<pb::ResetSourceRequest>,
    ) -> Result<Response<pb::ResetSourceResponse>, Status> {
        admin::reset_source(self, request).await
    }

    async fn drain_replication(
        &self,
        request: Request<pb::DrainReplicationRequest>,
    ) -> Result<Response<pb::DrainReplicationResponse>, Status> {
        admin::drain_replication(self, request).await
    }

    async fn create_snapshot(
        &self,
        request: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
        snapshots::create_snapshot(self, request).await
    }

    async fn list_snapshots(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        snapshots::list_snapshots(self, request).await
    }

    async fn inspect_snapshot(
        &self,
        request: Request<pb::InspectSnapshotRequest>,
    ) -> Result<Response<pb::InspectSnapshotResponse>, Status> {
        snapshots::inspect_snapshot(self, request).await
    }

    async fn restore_snapshot(
        &self,
        request: Request<pb::RestoreSnapshotRequest>,
    ) -> Result<Response<pb::RestoreSnapshotResponse>, Status> {
        snapshots::restore_snapshot(self, request).await
    }

    async fn delete_snapshot(
        &self,
        request: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        snapshots::delete_snapshot(self, request).await
    }

    async fn prune_snapshots(
        &self,
        request: Request<pb::PruneSnapshotsRequest>,
    ) -> Result<Response<pb::PruneSnapshotsResponse>, Status> {
        snapshots::prune_snapshots(self, request).await
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        dead_letters::list_dead_letters(self, request).await
    }

    async fn replay_dead_letters(
        &self,
        request: Request<pb::ReplayDeadLettersRequest>,
    ) -> Result<Response<pb::ReplayDeadLettersResponse>, Status> {
        dead_letters::replay_dead_letters(self, request).await
    }

    async fn purge_dead_letters(
        &self,
        request: Request<pb::PurgeDeadLettersRequest>,
    ) -> Result<Response<pb::PurgeDeadLettersResponse>, Status> {
        dead_letters::purge_dead_letters(self, request).await
    }

    async fn start_replay(
        &self,
        request: Request<pb::StartReplayRequest>,
    ) -> Result<Response<pb::StartReplayResponse>, Status> {
        replays::start_replay(self, request).await
    }

    async fn get_replay_status(
        &self,
        request: Request<pb::GetReplayStatusRequest>,
    ) -> Result<Response<pb::GetReplayStatusResponse>, Status> {
        replays::get_replay_status(self, request).await
    }

    async fn stop_replay(
        &self,
        request: Request<pb::StopReplayRequest>,
    ) -> Result<Response<pb::StopReplayResponse>, Status> {
        replays::stop_replay(self, request).await
    }
}

/// Maps an engine error to the gRPC status a caller can act on.
pub fn engine_status(error: EngineError) -> Status {
    let message = laredo_core::ErrorChain(&error).to_string();
    match error {
        EngineError::UnknownSource(_)
        | EngineError::UnknownPipeline(_)
        | EngineError::UnknownTable(_)
        | EngineError::SnapshotNotFound(_) => Status::not_found(message),
        EngineError::ReplayTable { .. } => Status::invalid_argument(message),
        EngineError::NotStarted
        | EngineError::Stopped
        | EngineError::NoActivePipelines { .. }
        | EngineError::NoSnapshotStore
        | EngineError::SnapshotRefused(_)
        | EngineError::ReplayRefused(_)
        | EngineError::NoDeadLetterStore
        | EngineError::ResetUnsupported(_)
        | EngineError::AlreadyStarted => Status::failed_precondition(message),
        EngineError::DeadlineExceeded => Status::deadline_exceeded(message),
        EngineError::ReloadFailed { .. } => Status::aborted(message),
        EngineError::Source { .. } => Status::unavailable(message),
        _ => Status::internal(message),
    }
}
