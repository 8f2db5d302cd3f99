//! Engines over the test source with a fan-out target, the replication service on a
//! loopback port, and a small replica client that applies a `Sync` stream by key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use laredo_core::{Engine, PipelineOptions, Position, Row, TableIdentifier, row, table};
use laredo_proto::laredo::replication::v1 as pb;
use laredo_proto::laredo::replication::v1::laredo_replication_service_client::LaredoReplicationServiceClient;
use laredo_proto::laredo::replication::v1::sync_response::Message;
use laredo_source_test::TestSource;
use laredo_target_fanout::{FanoutConfig, FanoutTarget, ReplicationService};
use laredo_test_support::wait_until;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

pub(crate) const WAIT: Duration = Duration::from_secs(30);

pub(crate) type Client = LaredoReplicationServiceClient<Channel>;

/// `public.items(id int8 pk, name text, region text, score int8)`.
pub(crate) fn items() -> TableIdentifier {
    table("public", "items")
}

pub(crate) fn item(id: i64, region: &str, score: i64) -> Row {
    row! {"id" => id, "name" => format!("item-{id}"), "region" => region, "score" => score}
}

pub(crate) fn source(rows: impl IntoIterator<Item = Row>) -> Arc<TestSource> {
    let source = TestSource::new();
    source.set_schema(
        items(),
        TestSource::columns(&[
            ("id", "int8", true),
            ("name", "text", false),
            ("region", "text", false),
            ("score", "int8", false),
        ]),
    );
    for row in rows {
        source.add_row(items(), row);
    }
    source
}

pub(crate) struct Server {
    pub(crate) engine: Engine,
    pub(crate) source: Arc<TestSource>,
    pub(crate) target: Arc<FanoutTarget>,
    pub(crate) service: ReplicationService,
    pub(crate) addr: SocketAddr,
}

impl Server {
    /// An engine streaming `items` (baseline `rows`) into a fan-out target, with the
    /// service on a loopback port.
    pub(crate) async fn start(config: FanoutConfig, rows: impl IntoIterator<Item = Row>) -> Self {
        let source = source(rows);
        let target = FanoutTarget::with_config(config);
        let engine = Engine::builder()
            .source("main", source.clone())
            .pipeline("main", items(), target.clone(), PipelineOptions::default())
            .build()
            .unwrap();
        engine.start().await.unwrap();
        assert!(engine.await_ready(WAIT).await, "{:?}", engine.pipelines());
        let service = ReplicationService::new(engine.clone());
        let addr = serve(engine.clone(), service.clone()).await;
        Self {
            engine,
            source,
            target,
            service,
            addr,
        }
    }

    pub(crate) async fn client(&self) -> Client {
        connect(self.addr, |e| e).await
    }

    /// Waits until the engine applied everything up to `position`.
    pub(crate) async fn applied(&self, position: Position) {
        let want = position.as_u64();
        wait_until("change applied", WAIT, || {
            self.source.acked_position() >= want
        })
        .await;
    }

    /// The target's rows by id.
    pub(crate) fn rows(&self) -> HashMap<i64, Row> {
        by_id(self.target.rows())
    }
}

pub(crate) fn by_id(rows: impl IntoIterator<Item = Row>) -> HashMap<i64, Row> {
    rows.into_iter()
        .map(|r| (r.get_i64("id").unwrap(), r))
        .collect()
}

/// Serves the replication service the way laredo-server does (without tokens here).
async fn serve(engine: Engine, service: ReplicationService) -> SocketAddr {
    let server = laredo_service::GrpcServer::builder(engine)
        .listen("127.0.0.1:0".parse().unwrap())
        .insecure(true)
        .add_service(service.into_server())
        .bind()
        .await
        .unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve(std::future::pending()));
    addr
}

pub(crate) async fn connect(
    addr: SocketAddr,
    endpoint: impl FnOnce(Endpoint) -> Endpoint,
) -> Client {
    let channel = endpoint(Endpoint::from_shared(format!("http://{addr}")).unwrap())
        .connect()
        .await
        .unwrap();
    LaredoReplicationServiceClient::new(channel)
}

pub(crate) fn sync_request(client_id: &str) -> pb::SyncRequest {
    pb::SyncRequest {
        schema: "public".into(),
        table: "items".into(),
        client_id: client_id.into(),
        ..Default::default()
    }
}

/// A request for the COMPACT row encoding (as laredo-client-fanout asks).
pub(crate) fn compact_request(client_id: &str) -> pb::SyncRequest {
    pb::SyncRequest {
        row_encoding: pb::RowEncoding::Compact.into(),
        ..sync_request(client_id)
    }
}

/// What a replica has seen and holds.
#[derive(Debug, Default, Clone)]
pub(crate) struct ReplicaState {
    pub(crate) rows: HashMap<i64, Row>,
    pub(crate) handshake: Option<pb::Handshake>,
    /// Sequences of the journal entries applied, in order (across snapshots).
    pub(crate) sequences: Vec<u64>,
    /// Source positions of the journal entries applied, in order.
    pub(crate) positions: Vec<String>,
    pub(crate) last_sequence: u64,
    pub(crate) last_position: String,
    pub(crate) snapshot: Option<pb::SnapshotEnd>,
    pub(crate) snapshot_rows: Vec<Row>,
    pub(crate) caught_up: Option<u64>,
    pub(crate) heartbeats: Vec<pb::Heartbeat>,
    pub(crate) go_aways: Vec<pb::GoAway>,
    /// `Some(Ok)` when the stream ended cleanly, `Some(Err)` with its status.
    pub(crate) ended: Option<Result<(), tonic::Status>>,
    /// Problems seen: out-of-order entries, a message before the handshake, a row
    /// that does not decode...
    pub(crate) violations: Vec<String>,
    /// Reads rows; on COMPACT streams positional ones against the handshake's row
    /// columns, then each schema change's.
    pub(crate) decoder: laredo_proto::RowDecoder,
    /// Journal rows received without column names.
    pub(crate) positional_rows: usize,
}

impl ReplicaState {
    fn apply(&mut self, message: Message) {
        if self.handshake.is_none() && !matches!(message, Message::Handshake(_)) {
            self.violations.push("message before the handshake".into());
        }
        match message {
            Message::Handshake(h) => {
                if h.row_encoding() == pb::RowEncoding::Compact {
                    self.decoder.set_positional_columns(
                        h.row_columns.iter().map(|c| c.column_name.as_str()),
                    );
                } else {
                    self.decoder = laredo_proto::RowDecoder::new();
                }
                self.handshake = Some(h);
            }
            Message::SnapshotBegin(_) => {
                self.rows.clear();
                self.snapshot_rows.clear();
            }
            Message::SnapshotRows(batch) => {
                for row in &batch.rows {
                    let row = Row::try_from(row).expect("snapshot rows carry names");
                    self.snapshot_rows.push(row.clone());
                    self.rows.insert(row.get_i64("id").unwrap(), row);
                }
            }
            Message::SnapshotEnd(end) => {
                self.last_sequence = end.sequence;
                self.last_position.clone_from(&end.source_position);
                self.snapshot = Some(end);
            }
            Message::JournalEntries(batch) => {
                for entry in batch.entries {
                    self.apply_entry(&entry);
                }
            }
            Message::SchemaChange(change) => {
                if self
                    .handshake
                    .as_ref()
                    .is_some_and(|h| h.row_encoding() == pb::RowEncoding::Compact)
                {
                    self.decoder.set_positional_columns(
                        change.new_columns.iter().map(|c| c.column_name.as_str()),
                    );
                }
                self.advance(change.sequence, change.source_position);
            }
            Message::Heartbeat(h) => self.heartbeats.push(h),
            Message::GoAway(g) => self.go_aways.push(g),
            Message::CaughtUp(c) => {
                if self.caught_up.is_some() {
                    self.violations.push("second caught_up".into());
                }
                self.caught_up = Some(c.sequence);
            }
        }
    }

    fn advance(&mut self, sequence: u64, position: String) {
        if sequence <= self.last_sequence {
            self.violations
                .push(format!("entry {sequence} after {}", self.last_sequence));
        }
        self.sequences.push(sequence);
        self.positions.push(position.clone());
        self.last_sequence = sequence;
        self.last_position = position;
    }

    /// Decodes a row of an entry: its id and the row, or a violation.
    fn decode(
        &mut self,
        sequence: u64,
        row: Option<&laredo_proto::laredo::v1::Row>,
    ) -> Option<(i64, Row)> {
        let row = row?;
        if row.columns.is_empty() && !row.values.is_empty() {
            self.positional_rows += 1;
        }
        match self.decoder.decode(row) {
            Ok(row) => Some((row.get_i64("id").unwrap(), row)),
            Err(e) => {
                self.violations.push(format!("entry {sequence}: {e}"));
                None
            }
        }
    }

    fn apply_entry(&mut self, entry: &pb::JournalEntry) {
        let old = self.decode(entry.sequence, entry.old_values.as_ref());
        let new = self.decode(entry.sequence, entry.new_values.as_ref());
        match entry.action() {
            laredo_proto::laredo::v1::ChangeAction::Insert
            | laredo_proto::laredo::v1::ChangeAction::Update => {
                if let Some((old, _)) = old {
                    self.rows.remove(&old);
                }
                if let Some((new, row)) = new {
                    self.rows.insert(new, row);
                }
            }
            laredo_proto::laredo::v1::ChangeAction::Delete => {
                if let Some((old, _)) = old {
                    self.rows.remove(&old);
                }
            }
            laredo_proto::laredo::v1::ChangeAction::Truncate => self.rows.clear(),
            laredo_proto::laredo::v1::ChangeAction::Unspecified => {
                self.violations.push("unspecified action".into());
            }
        }
        self.advance(entry.sequence, entry.source_position.clone());
    }
}

/// A test replica: a task that reads one `Sync` stream and applies it.
pub(crate) struct Replica {
    pub(crate) state: Arc<Mutex<ReplicaState>>,
    task: JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Replica {
    /// Opens a stream (panics when the call fails) and applies it in the background.
    pub(crate) async fn start(client: &Client, request: pb::SyncRequest) -> Self {
        Self::resume(client, request, ReplicaState::default()).await
    }

    /// As [`Replica::start`], keeping the rows (and cursor) of an earlier stream.
    pub(crate) async fn resume(
        client: &Client,
        request: pb::SyncRequest,
        previous: ReplicaState,
    ) -> Self {
        let mut stream = client
            .clone()
            .sync(request)
            .await
            .expect("sync opens")
            .into_inner();
        let state = Arc::new(Mutex::new(ReplicaState {
            rows: previous.rows,
            last_sequence: previous.last_sequence,
            last_position: previous.last_position,
            ..ReplicaState::default()
        }));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(response)) => {
                        if let Some(message) = response.message {
                            shared.lock().apply(message);
                        }
                    }
                    Ok(None) => {
                        shared.lock().ended = Some(Ok(()));
                        return;
                    }
                    Err(status) => {
                        shared.lock().ended = Some(Err(status));
                        return;
                    }
                }
            }
        });
        Self { state, task }
    }

    pub(crate) fn snapshot(&self) -> ReplicaState {
        self.state.lock().clone()
    }

    pub(crate) async fn wait_caught_up(&self) {
        wait_until("replica caught up", WAIT, || {
            self.state.lock().caught_up.is_some()
        })
        .await;
    }

    /// Waits until the replica holds `rows`.
    pub(crate) async fn wait_rows(&self, what: &str, rows: impl Fn() -> HashMap<i64, Row>) {
        wait_until(what, WAIT, || self.state.lock().rows == rows()).await;
    }

    /// Stops reading and closes the stream; returns what the replica held.
    pub(crate) fn stop(self) -> ReplicaState {
        self.task.abort();
        self.snapshot()
    }
}

/// Asserts the replica applied consecutive sequences from `from + 1` (no gap, no
/// duplicate) and saw nothing out of order.
pub(crate) fn assert_consecutive(state: &ReplicaState, from: u64) {
    assert!(state.violations.is_empty(), "{:?}", state.violations);
    let expected: Vec<u64> = (from + 1..=from + state.sequences.len() as u64).collect();
    assert_eq!(state.sequences, expected, "entries after {from}");
}
