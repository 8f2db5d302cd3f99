//! Replication fan-out: a target that keeps a table for many downstream replicas, and
//! the gRPC service they replicate it through.
//!
//! Where it sits: at the end of the engine's data path (WAL → source → engine →
//! pipeline → **fan-out target** → **replication service** → clients). The engine
//! applies a table's baseline and changes to a [`FanoutTarget`] (type name
//! `replication-fanout`); the target keeps
//!
//! - the **rows**, keyed by primary key (by `id` when the table has none);
//! - a **journal** of every change: sequences from 1, without gaps, each stamped with
//!   the source position its [`Change`] carries, baseline rows with the baseline's end
//!   position; bounded by `journal.max_entries`
//!   and `journal.max_age`, except that it never drops an entry a connected client
//!   still needs (its pin);
//! - in-memory **snapshots** (the rows at a sequence), taken at baseline end, after a
//!   truncate or schema change, for `FULL_SNAPSHOT` clients, at close, and every
//!   `snapshot.interval`; kept per `snapshot.retention` (3 snapshots, 24 h by
//!   default);
//! - the **clients** (at most `max_clients`, 1,000 by default) and the **drain** state.
//!
//! [`ReplicationService`] serves `laredo.replication.v1.LaredoReplicationService` for
//! every fan-out target of an engine; `proto/laredo/replication/v1/replication.proto`
//! documents the protocol (modes, seams, liveness, draining, filters, status codes).
//! Mount it on its own port (4002 by default) with laredo-service's `GrpcServer` or
//! any tonic server. [`drain_all`] (or [`ReplicationService::drain`]) drains every
//! fan-out target: one `GoAway` per stream, streams closed at the deadline, new ones
//! refused with `UNAVAILABLE`.
//!
//! # Consistency contract
//!
//! - **Snapshot plus journal equals the state.** A `FULL_SNAPSHOT` stream registers
//!   with its journal pin under the same write lock that orders appends, at the
//!   sequence S of a held snapshot it starts from (the newest, while the journal covers
//!   it and fewer entries follow it than it has rows) or at the floor of the snapshot
//!   build it waits for (whose rows are at S ≥ the floor, copied under the read lock);
//!   the stream then sends every entry after S. No append can fall between the two.
//! - **Bounded memory.** At most one snapshot build runs per target, shared by every
//!   `FULL_SNAPSHOT` stream that opens while it runs; `snapshot.retention` bounds the
//!   snapshots held; `max_clients` bounds the streams (one more gets
//!   `RESOURCE_EXHAUSTED` naming `max_clients`).
//! - **Strict sequence order, no gap, no duplicate within a stream.** Each stream has a
//!   single cursor (the last sequence served) and reads the journal after it; the
//!   target wakes streams through a watch channel after each append (no polling), so a
//!   burst of appends during catch-up is read in order in the next chunk. The cursor is
//!   the journal pin, so pruning never opens a gap under a connected client.
//! - **Resume.** By sequence: entries after the client's sequence (against the same
//!   `server_id` only). By source position (works across instances that tail the same
//!   database through the same publication): entries after the last entry strictly
//!   before the position, so the entries at exactly the client's position are sent
//!   again (harmless: clients apply by primary key). Mode order: position, sequence,
//!   snapshot id, full snapshot; `REPLAY_ARCHIVE` is not implemented.
//! - **Filters** (`equals`, `prefix`, `in`, AND-combined) apply alike to snapshot rows,
//!   catch-up and live entries; inserts and updates by the new row, deletes by the old
//!   row, truncates and schema changes always pass. A filtered client's resume point
//!   is the last sequence served, which heartbeats report as `delivered_sequence`.
//! - **Slow clients.** Each stream has a send buffer of `client_buffer.max_size`
//!   entries (journal entries and snapshot rows; other messages count one). A stream
//!   reads the journal only as its buffer drains, so the pinned journal holds its
//!   backlog. With `drop_disconnect` (default) a live client whose buffer stays full
//!   while it falls more than `max_size` entries behind the head is disconnected with
//!   `RESOURCE_EXHAUSTED` (releasing its pin); with `slow_down` it is only marked
//!   backpressured and its pin keeps the journal (which may then exceed its limits).
//!   The engine never waits for a client.
//!
//! # Configuration
//!
//! [`FanoutConfig`] holds the target keys (FO-27): `journal.max_entries` (1,000,000),
//! `journal.max_age` (24 h), `snapshot.interval` (off), `snapshot.retention.keep_count`
//! (3; 0 is unbounded), `snapshot.retention.max_age` (24 h; zero is none),
//! `max_clients` (1,000; 0 is unlimited),
//! `client_buffer.max_size` (50,000), `client_buffer.policy` (`drop_disconnect`),
//! `heartbeat_interval` (5 s).
//!
//! Observability: the target emits the `on_fanout_*` observer events (client
//! connected, disconnected, caught up, backpressure; snapshot created; journal pruned)
//! to the observer given to [`FanoutTargetBuilder::observer`]. Its client count and
//! journal size and age are readable (laredo-server exports them as the metrics
//! `laredo_fanout_connected_clients`, `laredo_fanout_journal_entries` and
//! `laredo_fanout_journal_oldest_age_seconds`).
//!
//! Not implemented yet: the cold-tier archive (`archive.*`, `REPLAY_ARCHIVE`) and a
//! durable snapshot store for fan-out snapshots.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use laredo_core::{Engine, PipelineOptions, row, table};
//! use laredo_proto::laredo::replication::v1::laredo_replication_service_client::LaredoReplicationServiceClient;
//! use laredo_proto::laredo::replication::v1::{SyncRequest, sync_response::Message};
//! use laredo_service::GrpcServer;
//! use laredo_source_test::TestSource;
//! use laredo_target_fanout::{FanoutConfig, FanoutTarget, ReplicationService};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let users = table("public", "users");
//! let source = TestSource::new();
//! source.set_schema(users.clone(), TestSource::columns(&[("id", "int8", true), ("name", "text", false)]));
//! source.add_row(users.clone(), row! {"id" => 1, "name" => "ann"});
//!
//! let fanout = FanoutTarget::with_config(FanoutConfig::default().max_clients(500));
//! let engine = Engine::builder()
//!     .source("main", source.clone())
//!     .pipeline("main", users.clone(), fanout.clone(), PipelineOptions::default())
//!     .build()?;
//! engine.start().await?;
//! assert!(engine.await_ready(Duration::from_secs(10)).await);
//!
//! // The replication service on its own loopback port.
//! let server = GrpcServer::builder(engine.clone())
//!     .listen("127.0.0.1:0".parse()?)
//!     .read_token("fanout-reader")
//!     .add_service(ReplicationService::new(engine.clone()).into_server())
//!     .bind()
//!     .await?;
//! let addr = server.local_addr();
//! let shutdown = CancellationToken::new();
//! let serving = tokio::spawn(server.serve(shutdown.clone().cancelled_owned()));
//!
//! // A replica: handshake, a snapshot of one row, caught up, then live entries.
//! let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
//!     .connect()
//!     .await?;
//! let mut client = LaredoReplicationServiceClient::new(channel);
//! let mut request = tonic::Request::new(SyncRequest {
//!     schema: "public".into(), table: "users".into(), ..Default::default()
//! });
//! request.metadata_mut().insert("authorization", "Bearer fanout-reader".parse()?);
//! let mut stream = client
//!     .sync(request)
//!     .await?
//!     .into_inner();
//! let mut rows = 0;
//! loop {
//!     match stream.message().await?.and_then(|m| m.message) {
//!         Some(Message::SnapshotRows(batch)) => rows += batch.rows.len(),
//!         Some(Message::CaughtUp(_)) => break,
//!         _ => {}
//!     }
//! }
//! assert_eq!(rows, 1);
//! source.emit_insert(users.clone(), row! {"id" => 2, "name" => "bob"}).await;
//! let live = loop {
//!     if let Some(Message::JournalEntries(batch)) = stream.message().await?.and_then(|m| m.message) {
//!         break batch.entries;
//!     }
//! };
//! assert_eq!(live[0].sequence, fanout.current_sequence());
//!
//! drop(stream);
//! shutdown.cancel();
//! serving.await??;
//! engine.stop().await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`Change`]: laredo_core::Change

mod config;
mod encode;
mod filter;
mod journal;
mod server;
mod service;
mod stream;
mod target;

pub use crate::config::{
    ClientBufferPolicy, DEFAULT_CLIENT_BUFFER_MAX_SIZE, DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_JOURNAL_MAX_AGE, DEFAULT_JOURNAL_MAX_ENTRIES, DEFAULT_MAX_CLIENTS,
    DEFAULT_SNAPSHOT_KEEP_COUNT, DEFAULT_SNAPSHOT_MAX_AGE, FanoutConfig, UnknownPolicy,
};
pub use crate::journal::{EntryKind, JournalEntry};
pub use crate::server::ReplicationServer;
pub use crate::service::{ReplicationService, drain_all, fanout_targets};
pub use crate::stream::SyncStream;
pub use crate::target::{
    ClientInfo, ClientState, DrainInfo, DrainReason, FanoutSnapshot, FanoutTarget,
    FanoutTargetBuilder, TYPE_NAME,
};
