//! [`ReplicationService`]: `laredo.replication.v1.LaredoReplicationService` over every
//! fan-out target of an [`Engine`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use laredo_core::{Engine, PipelineInfo, Position, SyncSource, TableIdentifier};
use laredo_proto::laredo::replication::v1 as wire;
use laredo_proto::laredo::replication::v1::laredo_replication_service_server::LaredoReplicationService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::encode::{self, PositionText, SNAPSHOT_BATCH_ROWS};
use crate::filter::RowFilter;
use crate::journal::EntryKind;
use crate::server::ReplicationServer;
use crate::stream::{self, RawSyncStream, Session, SyncStream};
use crate::target::{DrainReason, FanoutSnapshot, FanoutTarget, OpenError, OpenRequest, TYPE_NAME};

/// `ListJournalEntries` page size when the request asks for 0.
const DEFAULT_JOURNAL_LIMIT: usize = 100;
/// The largest `ListJournalEntries` page.
const MAX_JOURNAL_LIMIT: usize = 10_000;

/// Every fan-out target of `engine`, with its pipeline, in pipeline order.
pub fn fanout_targets(engine: &Engine) -> Vec<(PipelineInfo, Arc<FanoutTarget>)> {
    engine
        .pipelines()
        .into_iter()
        .filter(|p| p.target_type == TYPE_NAME)
        .filter_map(|p| {
            let target = engine.pipeline_target_as::<FanoutTarget>(&p.id)?;
            Some((p, target))
        })
        .collect()
}

/// Drains every fan-out target of `engine` (see [`FanoutTarget::drain`]); returns how
/// many started draining with this call. `laredo-server` calls it at shutdown, the OAM
/// `DrainReplication` RPC with [`DrainReason::Admin`].
pub fn drain_all(engine: &Engine, reason: DrainReason, timeout: Option<Duration>) -> usize {
    fanout_targets(engine)
        .into_iter()
        .filter(|(_, target)| target.drain(reason, timeout))
        .count()
}

/// A table's fan-out target with the source that orders its positions.
struct Served {
    table: TableIdentifier,
    target: Arc<FanoutTarget>,
    source: Option<Arc<dyn SyncSource>>,
}

impl Served {
    fn position_text(&self) -> Arc<PositionText> {
        match &self.source {
            Some(source) => {
                let source = Arc::clone(source);
                Arc::new(move |p: &Position| source.position_to_string(p))
            }
            None => Arc::new(|p: &Position| p.to_string()),
        }
    }
}

/// The replication service (`laredo.replication.v1.LaredoReplicationService`) over a
/// running [`Engine`]: one service for every [`FanoutTarget`] of the engine, each
/// request naming its table by `schema` and `table`. When several sources feed a
/// fan-out target of the same table, the first pipeline (in configuration order)
/// serves it.
///
/// Cheap to clone.
#[derive(Clone)]
pub struct ReplicationService {
    engine: Engine,
}

impl std::fmt::Debug for ReplicationService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationService").finish_non_exhaustive()
    }
}

impl ReplicationService {
    /// A service over `engine`'s fan-out targets.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> ReplicationServer {
        ReplicationServer::new(self)
    }

    /// Drains every fan-out target of the engine; see [`drain_all`].
    pub fn drain(&self, reason: DrainReason, timeout: Option<Duration>) -> usize {
        drain_all(&self.engine, reason, timeout)
    }

    /// Opens a `Sync` stream: resolves the table, registers the client and starts its
    /// producer.
    pub(crate) async fn open_sync(
        &self,
        request: wire::SyncRequest,
    ) -> Result<RawSyncStream, Status> {
        let served = self.resolve(&request.schema, &request.table)?;
        let filter = RowFilter::compile(&request.filters)?;
        let position = if request.last_known_source_position.is_empty() {
            None
        } else {
            match &served.source {
                Some(source) => {
                    match source.position_from_string(&request.last_known_source_position) {
                        Ok(position) => Some(position),
                        Err(error) => {
                            tracing::debug!(%error, "resume position does not parse: ignored");
                            None
                        }
                    }
                }
                None => None,
            }
        };
        let client_id = if request.client_id.is_empty() {
            format!("anon-{}", unix_millis())
        } else {
            request.client_id.clone()
        };
        let compare = {
            let source = served.source.clone();
            move |a: &Position, b: &Position| match &source {
                Some(source) => source.compare_positions(a, b),
                None => a.as_u64().cmp(&b.as_u64()),
            }
        };
        let opened = served
            .target
            .open(OpenRequest {
                client_id: client_id.clone(),
                last_known_sequence: request.last_known_sequence,
                last_known_position: position,
                last_snapshot_id: &request.last_snapshot_id,
                filters: request.filters.clone(),
                compare: &compare,
            })
            .await
            .map_err(|error| match error {
                OpenError::MaxClients(max) => Status::resource_exhausted(format!(
                    "the fan-out target for {} serves max_clients = {max} clients already",
                    served.table
                )),
                OpenError::SnapshotFailed => Status::unavailable(format!(
                    "the snapshot of {} could not be built; retry",
                    served.table
                )),
                OpenError::Draining => Status::unavailable(format!(
                    "the fan-out target for {} is draining",
                    served.table
                )),
            })?;
        tracing::debug!(
            table = %served.table,
            client = %client_id,
            mode = %opened.mode,
            resume_from = opened.resume_from,
            "replication stream opened"
        );
        // An unknown value (from a newer client) falls back to NAMED, which the
        // handshake tells it.
        let encoding =
            wire::RowEncoding::try_from(request.row_encoding).unwrap_or(wire::RowEncoding::Named);
        Ok(stream::start(Session {
            encoding,
            position_text: served.position_text(),
            target: served.target,
            opened,
            filter,
            client_id,
        }))
    }

    fn resolve(&self, schema: &str, table: &str) -> Result<Served, Status> {
        if schema.is_empty() || table.is_empty() {
            return Err(Status::invalid_argument("schema and table are required"));
        }
        let table = TableIdentifier::new(schema, table);
        let (info, target) = fanout_targets(&self.engine)
            .into_iter()
            .find(|(p, _)| p.table == table)
            .ok_or_else(|| Status::not_found(format!("no fan-out target for {table}")))?;
        Ok(Served {
            source: self.engine.source(&info.source_id),
            table,
            target,
        })
    }
}

fn unix_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl LaredoReplicationService for ReplicationService {
    type SyncStream = SyncStream;

    async fn sync(
        &self,
        request: Request<wire::SyncRequest>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let raw = self.open_sync(request.into_inner()).await?;
        Ok(Response::new(SyncStream::new(raw)))
    }

    async fn list_snapshots(
        &self,
        request: Request<wire::ListSnapshotsRequest>,
    ) -> Result<Response<wire::ListSnapshotsResponse>, Status> {
        let request = request.into_inner();
        let served = self.resolve(&request.schema, &request.table)?;
        let text = served.position_text();
        let limit = match request.limit {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let snapshots = served
            .target
            .snapshots()
            .iter()
            .take(limit)
            .map(|s| encode::snapshot_info(s, &*text))
            .collect();
        Ok(Response::new(wire::ListSnapshotsResponse { snapshots }))
    }

    type FetchSnapshotStream = BoxStream<wire::FetchSnapshotResponse>;

    async fn fetch_snapshot(
        &self,
        request: Request<wire::FetchSnapshotRequest>,
    ) -> Result<Response<Self::FetchSnapshotStream>, Status> {
        let id = request.into_inner().snapshot_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("snapshot_id is required"));
        }
        let found = fanout_targets(&self.engine)
            .into_iter()
            .find_map(|(info, target)| Some((info, target.snapshot(&id)?)));
        let Some((info, snapshot)) = found else {
            return Err(Status::not_found(format!("snapshot {id} not found")));
        };
        let text: Arc<PositionText> = match self.engine.source(&info.source_id) {
            Some(source) => Arc::new(move |p: &Position| source.position_to_string(p)),
            None => Arc::new(|p: &Position| p.to_string()),
        };
        let messages = FetchMessages::new(info.table, snapshot, &*text);
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    async fn get_replication_status(
        &self,
        request: Request<wire::GetReplicationStatusRequest>,
    ) -> Result<Response<wire::GetReplicationStatusResponse>, Status> {
        let request = request.into_inner();
        let served = self.resolve(&request.schema, &request.table)?;
        let target = &served.target;
        let text = served.position_text();
        let current = target.current_sequence();
        let clients: Vec<wire::ClientInfo> = target
            .client_records()
            .iter()
            .map(|c| {
                let sequence = c.sequence();
                wire::ClientInfo {
                    client_id: c.client_id.clone(),
                    current_sequence: sequence,
                    behind_count: current.saturating_sub(sequence),
                    buffer_depth: c.buffer_depth() as u64,
                    connected_at: Some(encode::timestamp(c.connected_at)),
                    state: encode::client_state(c.state()).into(),
                    mode: encode::sync_mode(c.mode).into(),
                    filters: c.filters.clone(),
                }
            })
            .collect();
        Ok(Response::new(wire::GetReplicationStatusResponse {
            current_sequence: current,
            journal_oldest_sequence: target.oldest_sequence(),
            journal_entry_count: target.journal_len() as u64,
            journal_oldest_at: target.journal_oldest_at().map(encode::timestamp),
            row_count: target.row_count() as u64,
            connected_clients: u32::try_from(clients.len()).unwrap_or(u32::MAX),
            clients,
            latest_snapshot: target
                .snapshots()
                .first()
                .map(|s| encode::snapshot_info(s, &*text)),
            draining: target.is_draining(),
            server_id: target.server_id().to_string(),
        }))
    }

    async fn list_journal_entries(
        &self,
        request: Request<wire::ListJournalEntriesRequest>,
    ) -> Result<Response<wire::ListJournalEntriesResponse>, Status> {
        let request = request.into_inner();
        let served = self.resolve(&request.schema, &request.table)?;
        let text = served.position_text();
        let limit = match request.limit {
            0 => DEFAULT_JOURNAL_LIMIT,
            n => usize::try_from(n)
                .unwrap_or(MAX_JOURNAL_LIMIT)
                .min(MAX_JOURNAL_LIMIT),
        };
        let entries = if request.after_sequence == 0 {
            served.target.journal_tail(limit)
        } else {
            // Entries after a pruned sequence: start from the oldest kept.
            let after = request
                .after_sequence
                .max(served.target.oldest_sequence().saturating_sub(1));
            served
                .target
                .entries_since(after, limit)
                .unwrap_or_default()
        };
        let mut response = wire::ListJournalEntriesResponse::default();
        for entry in &entries {
            match &entry.kind {
                EntryKind::Change { .. } => response.entries.extend(encode::journal_entry(
                    entry,
                    &*text,
                    wire::RowEncoding::Named,
                )),
                EntryKind::Schema { .. } => {
                    response
                        .schema_changes
                        .extend(encode::schema_change(entry, &*text));
                }
            }
        }
        Ok(Response::new(response))
    }
}

/// The messages of a `FetchSnapshot` stream, made lazily from the held snapshot.
struct FetchMessages {
    table: TableIdentifier,
    snapshot: Arc<FanoutSnapshot>,
    position: String,
    next_row: usize,
    begun: bool,
    ended: bool,
}

impl FetchMessages {
    fn new(table: TableIdentifier, snapshot: Arc<FanoutSnapshot>, text: &PositionText) -> Self {
        let position = snapshot.position().map(text).unwrap_or_default();
        Self {
            table,
            snapshot,
            position,
            next_row: 0,
            begun: false,
            ended: false,
        }
    }
}

impl Iterator for FetchMessages {
    type Item = Result<wire::FetchSnapshotResponse, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        use wire::fetch_snapshot_response::Message;
        let snapshot = &self.snapshot;
        let message = if !self.begun {
            self.begun = true;
            Message::Begin(wire::SnapshotBegin {
                snapshot_id: snapshot.id().to_string(),
                sequence: snapshot.sequence(),
                row_count: snapshot.rows().len() as u64,
                source_position: self.position.clone(),
                schema: self.table.schema().to_string(),
                table: self.table.table().to_string(),
                columns: encode::columns(snapshot.columns()),
            })
        } else if self.next_row < snapshot.rows().len() {
            let end = (self.next_row + SNAPSHOT_BATCH_ROWS).min(snapshot.rows().len());
            let rows = snapshot.rows()[self.next_row..end]
                .iter()
                .map(encode::row)
                .collect();
            self.next_row = end;
            Message::Rows(wire::SnapshotRows { rows })
        } else if !self.ended {
            self.ended = true;
            Message::End(wire::SnapshotEnd {
                snapshot_id: snapshot.id().to_string(),
                sequence: snapshot.sequence(),
                rows_sent: snapshot.rows().len() as u64,
                source_position: self.position.clone(),
            })
        } else {
            return None;
        };
        Some(Ok(wire::FetchSnapshotResponse {
            message: Some(message),
        }))
    }
}
