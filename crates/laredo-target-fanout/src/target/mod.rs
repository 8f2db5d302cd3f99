//! [`FanoutTarget`]: the table state, journal, snapshots, client registry and drain.
//!
//! One `RwLock` orders everything that must be consistent: the rows, the journal and
//! the snapshots. An apply takes it for writing, changes the rows and appends the
//! journal entry together, prunes, then (after releasing it) publishes the new head
//! sequence on a watch channel that wakes every stream. Opening a stream takes the same
//! write lock to choose its mode, pick its snapshot and register its journal pin, so no
//! append can fall between "the snapshot is at S" and "entries after S".
//!
//! The target is one struct, defined here with its plain accessors; its methods live
//! in the rooms that hold their concern, and share the struct's private fields:
//!
//! - `state`: what the lock guards (rows by key, columns, journal, snapshots) and how
//!   a change is applied to the rows and turned into a journal entry;
//! - `appends`: the write path from a batch to the journal, pruning under the
//!   clients' pins, publishing the head to the streams, and journal reads;
//! - `snapshots`: in-memory snapshots, their retention, the shared snapshot build and
//!   the `snapshot.interval` scheduler;
//! - `clients`: the client registry (each client's pin), client states, the drain;
//! - `registration`: opening a stream, choosing its mode and start under the lock;
//! - `sync_target` and `capabilities`: the engine's doorway ([`SyncTarget`]) and the
//!   optional capabilities (snapshot export and restore, row access, fan-out control);
//! - `builder`: [`FanoutTargetBuilder`].
//!
//! [`SyncTarget`]: laredo_core::SyncTarget

mod appends;
mod builder;
mod capabilities;
mod clients;
mod registration;
mod snapshots;
mod state;
mod sync_target;
#[cfg(test)]
mod tests;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};

pub use laredo_core::DrainReason;
use laredo_core::{ColumnDefinition, EngineObserver, Listeners, Row, RowListener};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use self::builder::FanoutTargetBuilder;
use self::clients::Registry;
pub use self::clients::{ClientInfo, ClientState, DrainInfo};
pub(crate) use self::registration::{OpenError, OpenRequest, Opened};
pub use self::snapshots::FanoutSnapshot;
use self::state::State;
use crate::config::FanoutConfig;

/// The target type name.
pub const TYPE_NAME: &str = "replication-fanout";

/// The replication fan-out target (`replication-fanout`): keeps the table's rows by
/// primary key, a journal of every change, in-memory snapshots, and the clients that
/// replicate it through [`ReplicationService`](crate::ReplicationService).
///
/// See the crate docs for the consistency contract.
pub struct FanoutTarget {
    server_id: String,
    config: FanoutConfig,
    observer: Option<Arc<dyn EngineObserver>>,
    pipeline_id: Mutex<Option<String>>,
    fixed_pipeline_id: bool,
    state: RwLock<State>,
    /// The journal's current sequence, published after each append.
    head: watch::Sender<u64>,
    /// The head in steps of [`FanoutTarget::lag_step`]: what a stream whose client has
    /// not taken its last message waits on to check how far behind it fell, without a
    /// wake-up per append.
    lag_tick: watch::Sender<u64>,
    drain: watch::Sender<Option<DrainInfo>>,
    clients: Mutex<Registry>,
    /// Row listeners ([`RowAccess::subscribe`](laredo_core::RowAccess::subscribe)), removed
    /// by `on_close`.
    listeners: Arc<Listeners<RowListener>>,
    scheduler: Mutex<Option<JoinHandle<()>>>,
    /// Snapshots taken (copies of the rows) since the target was built.
    snapshots_taken: AtomicU64,
    /// Tests: a snapshot build waits for a message on this before it copies the rows.
    #[cfg(test)]
    build_gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    me: Weak<FanoutTarget>,
}

impl std::fmt::Debug for FanoutTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.read();
        f.debug_struct("FanoutTarget")
            .field("table", &state.table)
            .field("rows", &state.rows.len())
            .field("current_sequence", &state.journal.current_sequence())
            .field("clients", &self.client_count())
            .finish_non_exhaustive()
    }
}

impl Drop for FanoutTarget {
    fn drop(&mut self) {
        if let Some(handle) = self.scheduler.get_mut().take() {
            handle.abort();
        }
    }
}

impl FanoutTarget {
    /// A target with the default configuration.
    pub fn new() -> Arc<Self> {
        Self::builder().build()
    }

    /// A target with `config`.
    pub fn with_config(config: FanoutConfig) -> Arc<Self> {
        Self::builder().config(config).build()
    }

    /// A builder (configuration, observer).
    pub fn builder() -> FanoutTargetBuilder {
        FanoutTargetBuilder::default()
    }

    /// The configuration.
    pub fn config(&self) -> &FanoutConfig {
        &self.config
    }

    /// Identifies this target instance: sequences are only meaningful against the same
    /// id (sent in the handshake).
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    pub(crate) fn label(&self) -> String {
        if let Some(id) = self.pipeline_id.lock().as_ref() {
            return id.clone();
        }
        self.state
            .read()
            .table
            .as_ref()
            .map_or_else(|| TYPE_NAME.to_string(), ToString::to_string)
    }

    /// True once the baseline completed (or a snapshot was restored), until close.
    pub fn is_ready(&self) -> bool {
        self.state.read().ready
    }

    /// The table's columns.
    pub fn columns(&self) -> Vec<ColumnDefinition> {
        self.state.read().columns.clone()
    }

    /// The key columns rows are kept by (the primary key, else `id`).
    pub fn key_fields(&self) -> Vec<String> {
        self.state.read().key_fields.to_vec()
    }

    /// Every row held (order unspecified).
    pub fn rows(&self) -> Vec<Row> {
        self.state.read().rows.values().cloned().collect()
    }

    /// The number of rows held.
    pub fn row_count(&self) -> usize {
        self.state.read().rows.len()
    }

    pub(crate) fn observer(&self) -> Option<&Arc<dyn EngineObserver>> {
        self.observer.as_ref()
    }
}
