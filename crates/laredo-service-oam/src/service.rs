//! [`OamService`]: `laredo.v1.LaredoOAMService` over a running [`Engine`].

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use laredo_core::{
    DEFAULT_REALTIME_ROWS_PER_SECOND, DrainReason, Engine, EngineError, IndexInfo,
    OrderingGuarantee, PipelineInfo, PipelineState, Position, ReplaySpeed, ReplayState, Row,
    SnapshotDescriptor, SnapshotFilter, SnapshotMetadata, SourceState, SyncSource, SyncTarget,
    TableIdentifier, Value, primary_key_columns,
};
use laredo_proto::laredo::v1 as pb;
use laredo_proto::laredo::v1::laredo_oam_service_server::{
    LaredoOamService, LaredoOamServiceServer,
};
use parking_lot::Mutex;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::describe;
use crate::events::{StatusEvent, StatusEvents, service_state};
use crate::replays::Replays;

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

    /// Keeps the handle of a background reload, forgetting finished ones.
    fn track_reload(&self, handle: JoinHandle<()>) {
        let mut reloads = self.reloads.lock();
        reloads.retain(|h| !h.is_finished());
        reloads.push(handle);
    }

    fn service_state(&self) -> pb::ServiceState {
        service_state(self.engine.pipelines().iter().map(|p| p.state))
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

    /// The store's type and location, for snapshot listings.
    async fn store_description(&self) -> (String, String) {
        match self.engine.snapshot_summary().await {
            Ok(Some(summary)) => (summary.store_type, summary.store_location),
            _ => (String::new(), String::new()),
        }
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

    fn replay(&self, replay_id: &str) -> Result<Arc<laredo_core::ReplayHandle>, Status> {
        self.replays
            .get(replay_id)
            .ok_or_else(|| Status::not_found(format!("replay {replay_id} not found")))
    }

    fn dead_letter_store(&self) -> Result<Arc<dyn laredo_core::DeadLetterStore>, Status> {
        self.engine
            .dead_letter_store()
            .ok_or_else(|| Status::failed_precondition("no dead letter store is configured"))
    }
}

/// A `WatchStatus` stream.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl LaredoOamService for OamService {
    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let pipelines = self.engine.pipelines();
        let mut statuses = Vec::with_capacity(pipelines.len());
        for p in &pipelines {
            statuses.push(self.pipeline_status(p).await);
        }
        let last_change_at = statuses
            .iter()
            .filter_map(|s| s.last_change_at)
            .max_by_key(|t| (t.seconds, t.nanos));
        let mut sources = Vec::new();
        for id in self.engine.source_ids() {
            sources.extend(self.source_info(&id).await);
        }
        Ok(Response::new(pb::GetStatusResponse {
            state: service_state(pipelines.iter().map(|p| p.state)) as i32,
            sources,
            pipelines: statuses,
            started_at: Some(timestamp(self.started_at)),
            last_change_at,
            snapshot_status: Some(self.snapshot_summary().await),
        }))
    }

    async fn get_table_status(
        &self,
        request: Request<pb::GetTableStatusRequest>,
    ) -> Result<Response<pb::GetTableStatusResponse>, Status> {
        let request = request.into_inner();
        let table = self.table(&request.schema, &request.table)?;
        let mut pipelines = Vec::new();
        for p in self.engine.pipelines().iter().filter(|p| p.table == table) {
            pipelines.push(self.pipeline_status(p).await);
        }
        // The first target of the table that lists indexes (the indexed targets).
        let indexes = self
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

    async fn get_pipeline_status(
        &self,
        request: Request<pb::GetPipelineStatusRequest>,
    ) -> Result<Response<pb::GetPipelineStatusResponse>, Status> {
        let p = self.pipeline(&request.into_inner().pipeline_id)?;
        let indexes = self
            .engine
            .pipeline_target(&p.id)
            .map(|t| index_infos(t.as_ref()))
            .unwrap_or_default();
        Ok(Response::new(pb::GetPipelineStatusResponse {
            status: Some(self.pipeline_status(&p).await),
            indexes,
        }))
    }

    async fn list_pipelines(
        &self,
        request: Request<pb::ListPipelinesRequest>,
    ) -> Result<Response<pb::ListPipelinesResponse>, Status> {
        let request = request.into_inner();
        let mut pipelines = Vec::new();
        for p in self.engine.pipelines() {
            if !request.source_id.is_empty() && p.source_id != request.source_id {
                continue;
            }
            if !request.table.is_empty()
                && p.table.to_string() != request.table
                && p.table.table() != request.table
            {
                continue;
            }
            pipelines.push(self.pipeline_status(&p).await);
        }
        Ok(Response::new(pb::ListPipelinesResponse { pipelines }))
    }

    type WatchStatusStream = WatchStream;

    async fn watch_status(
        &self,
        request: Request<pb::WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        let request = request.into_inner();
        let tables: Vec<String> = request.tables;
        let pipeline_ids: Vec<String> = request.pipeline_ids;
        let rows = request.include_row_changes;
        let table_of: HashMap<String, TableIdentifier> = self
            .engine
            .pipelines()
            .into_iter()
            .map(|p| (p.id, p.table))
            .collect();
        let mut receiver = self.events.subscribe();
        let wanted = move |event: &StatusEvent| -> bool {
            match event {
                StatusEvent::Row { .. } if !rows => return false,
                // Service and source events name no pipeline nor table: they always pass.
                StatusEvent::ServiceState { .. } | StatusEvent::Source { .. } => return true,
                _ => {}
            }
            if !pipeline_ids.is_empty()
                && !event
                    .pipeline_id()
                    .is_some_and(|id| pipeline_ids.iter().any(|p| p == id))
            {
                return false;
            }
            if !tables.is_empty() {
                let table = event
                    .table()
                    .cloned()
                    .or_else(|| event.pipeline_id().and_then(|id| table_of.get(id).cloned()));
                let Some(table) = table else {
                    return false;
                };
                let name = table.to_string();
                if !tables.iter().any(|t| *t == name || t == table.table()) {
                    return false;
                }
            }
            true
        };
        let mut rows = RowEvents::new(self.engine.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let item = match receiver.recv().await {
                    Ok(event) if wanted(&event) => watch_response(&event, &mut rows),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(count)) => pb::WatchStatusResponse {
                        timestamp: Some(timestamp(SystemTime::now())),
                        event: Some(pb::watch_status_response::Event::EventsDropped(
                            pb::EventsDropped { count },
                        )),
                    },
                    Err(RecvError::Closed) => return,
                };
                if tx.send(Ok(item)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn check_ready(
        &self,
        request: Request<pb::CheckReadyRequest>,
    ) -> Result<Response<pb::CheckReadyResponse>, Status> {
        let request = request.into_inner();
        let pipelines: Vec<PipelineInfo> = self
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
            .filter(|p| !self.engine.is_pipeline_ready(&p.id))
            .map(|p| format!("pipeline {} is {}", p.id, p.state))
            .collect();
        Ok(Response::new(pb::CheckReadyResponse {
            ready: not_ready_reasons.is_empty(),
            not_ready_reasons,
        }))
    }

    async fn get_source_info(
        &self,
        request: Request<pb::GetSourceInfoRequest>,
    ) -> Result<Response<pb::GetSourceInfoResponse>, Status> {
        let ids = self.source_ids(&request.into_inner().source_id)?;
        let mut sources = Vec::with_capacity(ids.len());
        for id in &ids {
            sources.extend(self.source_info(id).await);
        }
        Ok(Response::new(pb::GetSourceInfoResponse { sources }))
    }

    async fn list_tables(
        &self,
        _request: Request<pb::ListTablesRequest>,
    ) -> Result<Response<pb::ListTablesResponse>, Status> {
        let mut source_configs = HashMap::new();
        for id in self.engine.source_ids() {
            if let Some(config) = describe::source_config(&self.engine, &id).await {
                source_configs.insert(id, json_struct(config));
            }
        }
        let tables = self
            .engine
            .pipelines()
            .into_iter()
            .map(|p| {
                let primary_key = self
                    .engine
                    .table_schema(&p.table)
                    .map(|columns| {
                        let mut key: Vec<_> =
                            columns.into_iter().filter(|c| c.primary_key).collect();
                        key.sort_by_key(|c| c.primary_key_ordinal);
                        key.into_iter().map(|c| c.name).collect()
                    })
                    .unwrap_or_default();
                pb::TableConfig {
                    schema: p.table.schema().to_string(),
                    table: p.table.table().to_string(),
                    primary_key,
                    source_type: self
                        .engine
                        .source_info(&p.source_id)
                        .map(|s| s.source_type)
                        .unwrap_or_default(),
                    source_config: source_configs.get(&p.source_id).cloned(),
                    source_id: p.source_id,
                    target_type: p.target_type,
                    target_config: self
                        .engine
                        .pipeline_target(&p.id)
                        .map(|t| json_struct(describe::target_config(t.as_ref()))),
                    pipeline_id: p.id,
                }
            })
            .collect();
        Ok(Response::new(pb::ListTablesResponse { tables }))
    }

    async fn get_table_schema(
        &self,
        request: Request<pb::GetTableSchemaRequest>,
    ) -> Result<Response<pb::GetTableSchemaResponse>, Status> {
        let request = request.into_inner();
        let table = self.table(&request.schema, &request.table)?;
        let columns = self.engine.table_schema(&table).ok_or_else(|| {
            Status::unavailable(format!(
                "the columns of {table} are not known yet (the source has not started)"
            ))
        })?;
        Ok(Response::new(pb::GetTableSchemaResponse {
            columns: columns.iter().map(Into::into).collect(),
        }))
    }

    /// Checks what can be known up front (the table, its source, an active pipeline),
    /// then reloads in the background and answers at once; a failure of the reload
    /// itself shows as its pipelines going to ERROR (and in the server log).
    async fn reload_table(
        &self,
        request: Request<pb::ReloadTableRequest>,
    ) -> Result<Response<pb::ReloadTableResponse>, Status> {
        let request = request.into_inner();
        let table = self.table(&request.schema, &request.table)?;
        let of_table: Vec<PipelineInfo> = self
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
            self.source_ids(&request.source_id)?;
            if !of_table.iter().any(|p| p.source_id == request.source_id) {
                return Err(Status::not_found(format!(
                    "no pipeline serves table {table} on source {:?}",
                    request.source_id
                )));
            }
            request.source_id
        };
        let active = of_table.iter().any(|p| {
            p.source_id == source
                && matches!(p.state, PipelineState::Streaming | PipelineState::Paused)
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
        let engine = self.engine.clone();
        self.track_reload(tokio::spawn(async move {
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

    async fn reload_all(
        &self,
        request: Request<pb::ReloadAllRequest>,
    ) -> Result<Response<pb::ReloadAllResponse>, Status> {
        let source_id = request.into_inner().source_id;
        let sources = self.source_ids(&source_id)?;
        let active = self.engine.pipelines().iter().any(|p| {
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
        let engine = self.engine.clone();
        self.track_reload(tokio::spawn(async move {
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

    async fn pause_sync(
        &self,
        request: Request<pb::PauseSyncRequest>,
    ) -> Result<Response<pb::PauseSyncResponse>, Status> {
        for source in self.source_ids(&request.into_inner().source_id)? {
            self.engine.pause(&source).await.map_err(engine_status)?;
        }
        Ok(Response::new(pb::PauseSyncResponse {
            state: self.service_state() as i32,
        }))
    }

    async fn resume_sync(
        &self,
        request: Request<pb::ResumeSyncRequest>,
    ) -> Result<Response<pb::ResumeSyncResponse>, Status> {
        for source in self.source_ids(&request.into_inner().source_id)? {
            self.engine.resume(&source).await.map_err(engine_status)?;
        }
        Ok(Response::new(pb::ResumeSyncResponse {
            state: self.service_state() as i32,
        }))
    }

    async fn reset_source(
        &self,
        request: Request<pb::ResetSourceRequest>,
    ) -> Result<Response<pb::ResetSourceResponse>, Status> {
        let request = request.into_inner();
        if request.source_id.is_empty() {
            return Err(Status::invalid_argument("source_id is required"));
        }
        self.source_ids(&request.source_id)?;
        if !request.confirm {
            return Err(Status::failed_precondition(format!(
                "resetting source {:?} discards its position and re-baselines every table: set confirm",
                request.source_id
            )));
        }
        self.engine
            .reset_source(&request.source_id, request.drop_publication)
            .await
            .map_err(engine_status)?;
        let mut details = serde_json::Map::new();
        details.insert("source_id".into(), request.source_id.clone().into());
        details.insert("drop_publication".into(), request.drop_publication.into());
        // After the reset: the source as it is now (for PostgreSQL the slot is gone or
        // new, the publication dropped or kept).
        if let Some(source) = self.engine.source(&request.source_id) {
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

    async fn drain_replication(
        &self,
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
        let targets: Vec<(PipelineInfo, Arc<dyn SyncTarget>)> = self
            .engine
            .pipelines()
            .into_iter()
            .filter_map(|p| {
                let target = self.engine.pipeline_target(&p.id)?;
                target.fanout().is_some().then_some((p, target))
            })
            .collect();
        if targets.is_empty() {
            return Err(Status::failed_precondition(
                "no replication fan-out target is configured",
            ));
        }
        let wanted = (!request.table.is_empty())
            .then(|| TableIdentifier::new(&request.schema, &request.table));
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

    async fn create_snapshot(
        &self,
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
            self.engine.create_snapshot(user_meta).await
        } else {
            self.engine.create_snapshot_of(&tables, user_meta).await
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

    async fn list_snapshots(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let request = request.into_inner();
        let filter = SnapshotFilter {
            table: table_filter(&request.table)?,
        };
        let mut listed = self
            .engine
            .list_snapshots(&filter)
            .await
            .map_err(engine_status)?;
        if request.limit > 0 {
            listed.truncate(request.limit as usize);
        }
        let (store_type, location) = self.store_description().await;
        let snapshots = listed
            .iter()
            .map(|d| snapshot_info(d, None, &store_type, &location))
            .collect();
        Ok(Response::new(pb::ListSnapshotsResponse { snapshots }))
    }

    async fn inspect_snapshot(
        &self,
        request: Request<pb::InspectSnapshotRequest>,
    ) -> Result<Response<pb::InspectSnapshotResponse>, Status> {
        let id = request.into_inner().snapshot_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("snapshot_id is required"));
        }
        let (metadata, descriptor) = self
            .engine
            .inspect_snapshot(&id)
            .await
            .map_err(engine_status)?;
        let (store_type, location) = self.store_description().await;
        Ok(Response::new(pb::InspectSnapshotResponse {
            info: Some(snapshot_info(
                &descriptor,
                Some(&metadata),
                &store_type,
                &location,
            )),
        }))
    }

    async fn restore_snapshot(
        &self,
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
        let outcome = self
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

    async fn delete_snapshot(
        &self,
        request: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        let id = request.into_inner().snapshot_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("snapshot_id is required"));
        }
        self.engine
            .delete_snapshot(&id)
            .await
            .map_err(engine_status)?;
        Ok(Response::new(pb::DeleteSnapshotResponse { deleted: true }))
    }

    async fn prune_snapshots(
        &self,
        request: Request<pb::PruneSnapshotsRequest>,
    ) -> Result<Response<pb::PruneSnapshotsResponse>, Status> {
        let request = request.into_inner();
        if request.keep == 0 {
            return Err(Status::invalid_argument("keep must be positive"));
        }
        let table = table_filter(&request.table)?;
        let deleted = self
            .engine
            .prune_snapshots(request.keep as usize, table.as_ref())
            .await
            .map_err(engine_status)?;
        Ok(Response::new(pb::PruneSnapshotsResponse {
            deleted_count: u32::try_from(deleted).unwrap_or(u32::MAX),
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let request = request.into_inner();
        let p = self.pipeline(&request.pipeline_id)?;
        let store = self.dead_letter_store()?;
        let entries = store
            .read(&p.id, request.limit as usize)
            .await
            .map_err(|e| {
                Status::internal(format!(
                    "dead letter store: {}",
                    laredo_core::ErrorChain(&e)
                ))
            })?;
        let total_count = store.count(&p.id).await.map_err(|e| {
            Status::internal(format!(
                "dead letter store: {}",
                laredo_core::ErrorChain(&e)
            ))
        })?;
        Ok(Response::new(pb::ListDeadLettersResponse {
            entries: entries
                .iter()
                .map(|e| pb::DeadLetterEntry {
                    id: e.id,
                    timestamp: Some(micros_timestamp(e.timestamp_micros)),
                    schema: e.table.schema().to_string(),
                    table: e.table.table().to_string(),
                    action: pb::ChangeAction::from(e.action) as i32,
                    position: e.position.clone(),
                    xid: e.xid,
                    new_values: e.new_values.as_ref().map(Into::into),
                    old_values: e.old_values.as_ref().map(Into::into),
                    error_message: e.error.clone(),
                })
                .collect(),
            total_count,
        }))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<pb::ReplayDeadLettersRequest>,
    ) -> Result<Response<pb::ReplayDeadLettersResponse>, Status> {
        let id = request.into_inner().pipeline_id;
        self.pipeline(&id)?;
        self.dead_letter_store()?;
        let outcome = self
            .engine
            .replay_dead_letters(&id)
            .await
            .map_err(engine_status)?;
        Ok(Response::new(pb::ReplayDeadLettersResponse {
            replayed: outcome.replayed,
            succeeded: outcome.succeeded,
            failed: outcome.failed,
        }))
    }

    async fn purge_dead_letters(
        &self,
        request: Request<pb::PurgeDeadLettersRequest>,
    ) -> Result<Response<pb::PurgeDeadLettersResponse>, Status> {
        let id = request.into_inner().pipeline_id;
        self.pipeline(&id)?;
        let store = self.dead_letter_store()?;
        let purged = store.count(&id).await.map_err(|e| {
            Status::internal(format!(
                "dead letter store: {}",
                laredo_core::ErrorChain(&e)
            ))
        })?;
        store.purge(&id).await.map_err(|e| {
            Status::internal(format!(
                "dead letter store: {}",
                laredo_core::ErrorChain(&e)
            ))
        })?;
        Ok(Response::new(pb::PurgeDeadLettersResponse { purged }))
    }

    /// Starts a replay into the target of `target_pipeline_id` (required: the replay
    /// changes that live target's rows). The pipeline applies none of its changes
    /// while the replay runs; they wait in its buffer and follow the snapshot's rows.
    /// `realtime` is a throttle (snapshots record no write times): see
    /// [`laredo_core::SnapshotReplay`].
    async fn start_replay(
        &self,
        request: Request<pb::StartReplayRequest>,
    ) -> Result<Response<pb::StartReplayResponse>, Status> {
        let request = request.into_inner();
        if self.engine.snapshot_store().is_none() {
            return Err(engine_status(EngineError::NoSnapshotStore));
        }
        if request.snapshot_id.is_empty() {
            return Err(Status::invalid_argument("snapshot_id is required"));
        }
        if request.target_pipeline_id.is_empty() {
            return Err(Status::invalid_argument(
                "target_pipeline_id is required: a replay writes the snapshot's rows into \
                 that pipeline's live target, so name the pipeline explicitly",
            ));
        }
        let speed = match pb::ReplaySpeed::try_from(request.speed) {
            Ok(pb::ReplaySpeed::Unspecified | pb::ReplaySpeed::Full) => ReplaySpeed::Full,
            Ok(pb::ReplaySpeed::Realtime) => ReplaySpeed::Realtime,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown replay speed {}",
                    request.speed
                )));
            }
        };
        let mut tables = Vec::with_capacity(request.tables.len());
        for text in &request.tables {
            let table: TableIdentifier = text.parse().map_err(|_| {
                Status::invalid_argument(format!("invalid table {text:?}: expected schema.table"))
            })?;
            tables.push(table);
        }
        let pipeline = self.pipeline(&request.target_pipeline_id)?;
        let handle = match self
            .engine
            .start_replay(&request.snapshot_id, &pipeline.id, &tables, speed)
            .await
        {
            Ok(handle) => handle,
            Err(EngineError::ReplayRefused(reason)) => {
                return Ok(Response::new(pb::StartReplayResponse {
                    accepted: false,
                    replay_id: String::new(),
                    message: reason,
                }));
            }
            Err(e) => return Err(engine_status(e)),
        };
        let replay_id = self.replays.insert(&pipeline.id, handle);
        let pace = match speed {
            ReplaySpeed::Realtime => format!(
                " at {DEFAULT_REALTIME_ROWS_PER_SECOND} rows/s (snapshots record no write \
                 times, so realtime is a throttle)"
            ),
            _ => String::new(),
        };
        Ok(Response::new(pb::StartReplayResponse {
            accepted: true,
            message: format!(
                "replaying snapshot {} into pipeline {}{pace}; the pipeline's changes wait \
                 until the replay ends",
                request.snapshot_id, pipeline.id
            ),
            replay_id,
        }))
    }

    async fn get_replay_status(
        &self,
        request: Request<pb::GetReplayStatusRequest>,
    ) -> Result<Response<pb::GetReplayStatusResponse>, Status> {
        let replay_id = request.into_inner().replay_id;
        let handle = self.replay(&replay_id)?;
        let status = handle.status();
        let state = match status.state {
            ReplayState::Running => pb::ReplayState::Running,
            ReplayState::Completed => pb::ReplayState::Completed,
            ReplayState::Stopped => pb::ReplayState::Stopped,
            _ => pb::ReplayState::Error,
        };
        Ok(Response::new(pb::GetReplayStatusResponse {
            replay_id,
            state: state as i32,
            rows_replayed: status.rows_replayed,
            elapsed: duration(status.elapsed),
            message: status.error.unwrap_or_default(),
        }))
    }

    async fn stop_replay(
        &self,
        request: Request<pb::StopReplayRequest>,
    ) -> Result<Response<pb::StopReplayResponse>, Status> {
        let handle = self.replay(&request.into_inner().replay_id)?;
        Ok(Response::new(pb::StopReplayResponse {
            stopped: handle.stop().await,
        }))
    }
}

/// A JSON object as a protobuf `Struct`.
fn json_struct(map: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.into_iter().map(|(k, v)| (k, json_value(v))).collect(),
    }
}

fn json_value(value: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    let kind = match value {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        J::String(s) => Kind::StringValue(s),
        J::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_value).collect(),
        }),
        J::Object(map) => Kind::StructValue(json_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
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

/// What a watcher needs to print row events as the source does: each pipeline's
/// source (for its position format) and each table's key columns, looked up once.
struct RowEvents {
    engine: Engine,
    sources: HashMap<String, Option<Arc<dyn SyncSource>>>,
    keys: HashMap<TableIdentifier, Vec<String>>,
}

impl RowEvents {
    fn new(engine: Engine) -> Self {
        Self {
            engine,
            sources: HashMap::new(),
            keys: HashMap::new(),
        }
    }

    /// `position` as the pipeline's source prints it (`16/B374D848` for PostgreSQL).
    fn position(&mut self, pipeline_id: &str, position: &Position) -> String {
        let engine = &self.engine;
        let source = self
            .sources
            .entry(pipeline_id.to_string())
            .or_insert_with(|| {
                let source_id = engine
                    .pipelines()
                    .into_iter()
                    .find(|p| p.id == pipeline_id)?
                    .source_id;
                engine.source(&source_id)
            });
        match source {
            Some(source) => source.position_to_string(position),
            None => position.to_string(),
        }
    }

    /// The primary key columns of `identity` (the whole identity for a table without
    /// a primary key, whose identity is the full row).
    fn key(&mut self, table: &TableIdentifier, identity: &Row) -> pb::Row {
        let engine = &self.engine;
        let fields = self.keys.entry(table.clone()).or_insert_with(|| {
            engine
                .table_schema(table)
                .map(|columns| {
                    primary_key_columns(&columns)
                        .into_iter()
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        });
        if fields.is_empty() {
            return pb::Row::from(identity);
        }
        let key = Row::from_pairs(
            fields
                .iter()
                .filter_map(|f| identity.get(f).map(|v| (f.as_str(), v.clone()))),
        );
        pb::Row::from(&key)
    }
}

fn watch_response(event: &StatusEvent, rows: &mut RowEvents) -> pb::WatchStatusResponse {
    use pb::watch_status_response::Event;
    let (at, event) = match event {
        StatusEvent::ServiceState { at, old, new } => (
            *at,
            Event::ServiceStateChange(pb::ServiceStateChange {
                old_state: *old as i32,
                new_state: *new as i32,
            }),
        ),
        StatusEvent::PipelineState {
            at,
            pipeline_id,
            old,
            new,
            ..
        } => (
            *at,
            Event::PipelineStateChange(pb::PipelineStateChange {
                pipeline_id: pipeline_id.clone(),
                old_state: pipeline_state(*old) as i32,
                new_state: pipeline_state(*new) as i32,
                message: String::new(),
            }),
        ),
        StatusEvent::Source {
            at,
            source_id,
            connected,
            message,
        } => (
            *at,
            Event::SourceStateChange(pb::SourceStateChange {
                source_id: source_id.clone(),
                event_type: if *connected {
                    pb::SourceEventType::Connected
                } else {
                    pb::SourceEventType::Disconnected
                } as i32,
                message: message.clone(),
            }),
        ),
        StatusEvent::Row {
            at,
            pipeline_id,
            table,
            action,
            position,
            xid,
            identity,
        } => (
            *at,
            Event::RowChange(pb::WatchRowChange {
                pipeline_id: pipeline_id.clone(),
                schema: table.schema().to_string(),
                table: table.table().to_string(),
                action: pb::ChangeAction::from(*action) as i32,
                position: rows.position(pipeline_id, position),
                xid: *xid,
                key: identity.as_ref().map(|identity| rows.key(table, identity)),
            }),
        ),
    };
    pb::WatchStatusResponse {
        timestamp: Some(timestamp(at)),
        event: Some(event),
    }
}

fn pipeline_state(state: PipelineState) -> pb::PipelineState {
    match state {
        PipelineState::Initializing => pb::PipelineState::Initializing,
        PipelineState::Baselining => pb::PipelineState::Baselining,
        PipelineState::Streaming => pb::PipelineState::Streaming,
        PipelineState::Paused => pb::PipelineState::Paused,
        PipelineState::Error => pb::PipelineState::Error,
        PipelineState::Stopped => pb::PipelineState::Stopped,
    }
}

fn source_state(state: SourceState) -> pb::SourceState {
    match state {
        SourceState::Connecting => pb::SourceState::Connecting,
        SourceState::Connected => pb::SourceState::Connected,
        SourceState::Streaming => pb::SourceState::Streaming,
        SourceState::Reconnecting => pb::SourceState::Reconnecting,
        SourceState::Paused => pb::SourceState::Paused,
        SourceState::Error => pb::SourceState::Error,
        SourceState::Closed => pb::SourceState::Closed,
    }
}

fn ordering(ordering: OrderingGuarantee) -> pb::OrderingGuarantee {
    match ordering {
        OrderingGuarantee::TotalOrder => pb::OrderingGuarantee::TotalOrder,
        OrderingGuarantee::PerTableOrder => pb::OrderingGuarantee::PerTableOrder,
        OrderingGuarantee::PerPartitionOrder => pb::OrderingGuarantee::PerPartitionOrder,
        OrderingGuarantee::BestEffort => pb::OrderingGuarantee::BestEffort,
    }
}

fn timestamp(at: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(at)
}

fn micros_timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

fn duration(d: std::time::Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}
