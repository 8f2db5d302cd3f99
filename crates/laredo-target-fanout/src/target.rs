//! [`FanoutTarget`]: the table state, journal, snapshots, client registry and drain.
//!
//! One `RwLock` orders everything that must be consistent: the rows, the journal and
//! the snapshots. An apply takes it for writing, changes the rows and appends the
//! journal entry together, prunes, then (after releasing it) publishes the new head
//! sequence on a watch channel that wakes every stream. Opening a stream takes the same
//! write lock to choose its mode, pick its snapshot and register its journal pin, so no
//! append can fall between "the snapshot is at S" and "entries after S".
//!
//! A `FULL_SNAPSHOT` stream is served the newest snapshot while the journal still
//! covers it and no more entries follow it than it has rows (catching up is then
//! cheaper than a copy). Otherwise a snapshot is *built*: at most one at a time, on a
//! blocking thread, copying the rows under the **read** lock (appends wait, streams
//! keep reading). The build pins the journal after the sequence it started at (its
//! floor); every `FULL_SNAPSHOT` stream that opens meanwhile registers at that floor and
//! waits for the same build, then resumes after the build's sequence, which is at
//! least the floor. So a flood of `Sync` calls costs one copy of the table, not one
//! each, and the write lock is never held for a copy.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
pub use laredo_core::DrainReason;
use laredo_core::{
    ApplyError, Change, ChangeAction, ChangeKind, ColumnDefinition, EngineObserver, FanoutControl,
    ListenerHandle, Listeners, Position, Row, RowAccess, RowChange, RowListener,
    SchemaChangeResponse, SnapshotEntry, SnapshotTarget, SyncMode, SyncTarget, TableIdentifier,
    TableSnapshotInfo, TargetError, primary_key_columns,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::FanoutConfig;
use crate::journal::{EntryKind, Journal, JournalEntry, Read, Shape};

/// The target type name.
pub const TYPE_NAME: &str = "replication-fanout";

/// The key column used when a table has no primary key.
const FALLBACK_KEY: &str = "id";

/// A snapshot held in memory: the rows at a journal sequence.
#[derive(Debug)]
pub struct FanoutSnapshot {
    id: String,
    sequence: u64,
    position: Option<Position>,
    created_at: SystemTime,
    columns: Vec<ColumnDefinition>,
    rows: Vec<Row>,
    size_bytes: u64,
}

impl FanoutSnapshot {
    /// `fanout-<sequence>-<unix-ms>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The journal sequence the rows are at.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The source position the rows are at, when known.
    pub fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    /// When it was taken.
    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }

    /// The table's columns at that point.
    pub fn columns(&self) -> &[ColumnDefinition] {
        &self.columns
    }

    /// The rows.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The approximate memory the rows hold (their raw size).
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
}

/// A drain in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainInfo {
    /// Why.
    pub reason: DrainReason,
    /// When the streams are closed; `None`: they stay until their clients leave.
    pub deadline: Option<SystemTime>,
    pub(crate) deadline_instant: Option<tokio::time::Instant>,
}

/// The state of a replication client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientState {
    /// Receiving its snapshot or backlog.
    CatchingUp,
    /// Receiving live entries.
    Live,
    /// Its send buffer is full (`slow_down`).
    Backpressured,
    /// Told to leave (`GoAway` sent).
    Draining,
}

impl ClientState {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Live,
            2 => Self::Backpressured,
            3 => Self::Draining,
            _ => Self::CatchingUp,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Self::CatchingUp => 0,
            Self::Live => 1,
            Self::Backpressured => 2,
            Self::Draining => 3,
        }
    }
}

/// A connected client, as [`FanoutTarget::clients`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientInfo {
    /// The client's id.
    pub client_id: String,
    /// The last sequence served to it (sent, or skipped by its filters).
    pub current_sequence: u64,
    /// When it connected.
    pub connected_at: SystemTime,
    /// Its state.
    pub state: ClientState,
    /// The mode its stream started in.
    pub mode: SyncMode,
    /// Messages waiting in its send buffer.
    pub buffer_depth: usize,
}

/// The send side of a client's buffer, as the registry sees it (for its depth).
pub(crate) type QueueProbe = Box<dyn Fn() -> usize + Send + Sync>;

pub(crate) struct ClientRecord {
    pub(crate) client_id: String,
    pub(crate) connected_at: SystemTime,
    pub(crate) mode: SyncMode,
    pub(crate) filters: Vec<laredo_proto::laredo::replication::v1::FieldPredicate>,
    /// The last sequence served; also the client's journal pin.
    sequence: AtomicU64,
    state: AtomicU8,
    depth: Mutex<Option<QueueProbe>>,
    /// Cancelled by [`FanoutTarget::disconnect_all`].
    pub(crate) cancel: CancellationToken,
}

impl ClientRecord {
    pub(crate) fn advance(&self, sequence: u64) {
        self.sequence.fetch_max(sequence, AtomicOrdering::AcqRel);
    }

    pub(crate) fn sequence(&self) -> u64 {
        self.sequence.load(AtomicOrdering::Acquire)
    }

    pub(crate) fn set_state(&self, state: ClientState) {
        self.state.store(state.as_u8(), AtomicOrdering::Release);
    }

    pub(crate) fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(AtomicOrdering::Acquire))
    }

    pub(crate) fn set_queue_probe(&self, probe: QueueProbe) {
        *self.depth.lock() = Some(probe);
    }

    pub(crate) fn buffer_depth(&self) -> usize {
        self.depth.lock().as_ref().map_or(0, |probe| probe())
    }

    fn info(&self) -> ClientInfo {
        ClientInfo {
            client_id: self.client_id.clone(),
            current_sequence: self.sequence(),
            connected_at: self.connected_at,
            state: self.state(),
            mode: self.mode,
            buffer_depth: self.buffer_depth(),
        }
    }
}

#[derive(Default)]
struct Registry {
    next_key: u64,
    clients: hashbrown::HashMap<u64, Arc<ClientRecord>>,
}

impl Registry {
    fn lowest_pin(&self) -> Option<u64> {
        self.clients.values().map(|c| c.sequence()).min()
    }
}

/// A snapshot being built (see the module docs).
struct Build {
    /// The journal's sequence when the build started: its rows are at this sequence or
    /// later, and the journal after it is kept while the build runs.
    floor: u64,
    /// The snapshot, once built; dropped without one if the build failed.
    done: watch::Sender<Option<Arc<FanoutSnapshot>>>,
}

#[derive(Default)]
struct State {
    table: Option<TableIdentifier>,
    columns: Vec<ColumnDefinition>,
    key_fields: Arc<[String]>,
    rows: hashbrown::HashMap<Vec<u8>, Row>,
    journal: Journal,
    /// Newest first.
    snapshots: VecDeque<Arc<FanoutSnapshot>>,
    /// The snapshot build in flight, when any (at most one).
    building: Option<Arc<Build>>,
    /// Appends since the snapshots' ages were last checked.
    appended_since_snapshot_check: usize,
    ready: bool,
    /// Entries appended since pruning last looked at the clients' pins.
    appended_since_prune: usize,
    /// When pruning last looked at the clients' pins.
    last_prune: Option<Instant>,
}

/// A change of the rows for the row listeners, reported once the write lock is
/// released: old row, new row, and the index of the change that made it in its batch
/// (`None`: baseline rows, a restore).
type Notification = (Option<Row>, Option<Row>, Option<usize>);

impl State {
    fn key_of(&self, row: &Row) -> Vec<u8> {
        row.key_bytes(&self.key_fields)
    }

    /// What `kind` is about to do to the rows, as row listeners hear it (called before
    /// [`State::apply_change`], while the rows it replaces are still held): an
    /// update that moves a row onto a key another row held reports that row deleted
    /// first; a delete of a missing key is not reported.
    fn row_changes(&self, kind: &ChangeKind, at: Option<usize>, out: &mut Vec<Notification>) {
        match kind {
            ChangeKind::Insert { row } => {
                let old = self.rows.get(&self.key_of(row)).cloned();
                out.push((old, Some(row.clone()), at));
            }
            ChangeKind::Update { row, identity } => {
                let new_key = self.key_of(row);
                let moved = identity
                    .as_ref()
                    .map(|identity| self.key_of(identity))
                    .filter(|old_key| *old_key != new_key)
                    .and_then(|old_key| self.rows.get(&old_key).cloned());
                let replaced = self.rows.get(&new_key).cloned();
                match (moved, replaced) {
                    (Some(moved), Some(replaced)) => {
                        out.push((Some(replaced), None, at));
                        out.push((Some(moved), Some(row.clone()), at));
                    }
                    (moved, replaced) => out.push((moved.or(replaced), Some(row.clone()), at)),
                }
            }
            ChangeKind::Delete { identity } => {
                if let Some(old) = self.rows.get(&self.key_of(identity)) {
                    out.push((Some(old.clone()), None, at));
                }
            }
            ChangeKind::Truncate => out.push((None, None, at)),
        }
    }

    /// Applies a change to the rows; returns the journal entry that describes it (an
    /// update or delete carries the old row the target held, else the identity).
    fn apply_change(&mut self, kind: &ChangeKind) -> EntryKind {
        match kind {
            ChangeKind::Insert { row } => {
                let key = self.key_of(row);
                self.rows.insert(key, row.clone());
                EntryKind::Change {
                    action: ChangeAction::Insert,
                    old_values: None,
                    new_values: Some(row.clone()),
                }
            }
            ChangeKind::Update { row, identity } => {
                let old_key = self.key_of(identity.as_ref().unwrap_or(row));
                let old = self.rows.remove(&old_key);
                let new_key = self.key_of(row);
                self.rows.insert(new_key, row.clone());
                EntryKind::Change {
                    action: ChangeAction::Update,
                    old_values: old.or_else(|| identity.clone()),
                    new_values: Some(row.clone()),
                }
            }
            ChangeKind::Delete { identity } => {
                let key = self.key_of(identity);
                let old = self.rows.remove(&key);
                EntryKind::Change {
                    action: ChangeAction::Delete,
                    old_values: Some(old.unwrap_or_else(|| identity.clone())),
                    new_values: None,
                }
            }
            ChangeKind::Truncate => {
                self.rows.clear();
                EntryKind::Change {
                    action: ChangeAction::Truncate,
                    old_values: None,
                    new_values: None,
                }
            }
        }
    }

    /// Appends a change entry (with its shape against the table now), or a schema
    /// entry, whose new columns the target takes (the rows before it follow the
    /// columns the target had, whatever the source says were the old ones).
    fn append(&mut self, position: Option<Position>, kind: EntryKind) -> u64 {
        match &kind {
            EntryKind::Schema { new_columns, .. } => {
                let prior = self.take_columns(new_columns);
                self.journal.append_schema(position, kind, prior)
            }
            EntryKind::Change { .. } => {
                let shape = Shape::of(&kind, &self.columns, &self.key_fields);
                self.journal.append(position, kind, shape)
            }
        }
    }

    /// Takes new columns (and their key fields), re-keying the rows when the key
    /// changed; returns the columns before.
    fn take_columns(&mut self, columns: &[ColumnDefinition]) -> Vec<ColumnDefinition> {
        let keys = key_fields(columns);
        let prior = std::mem::replace(&mut self.columns, columns.to_vec());
        if keys != self.key_fields {
            // Re-key the rows so later changes find them.
            let rows: Vec<Row> = self.rows.drain().map(|(_, row)| row).collect();
            self.key_fields = keys;
            for row in rows {
                let key = self.key_of(&row);
                self.rows.insert(key, row);
            }
        }
        prior
    }
}

/// Whether rows of `b` read like rows of `a`: the same column names, types and key, in
/// the same order (other metadata, such as nullability or defaults, may differ).
fn same_layout(a: &[ColumnDefinition], b: &[ColumnDefinition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.name == b.name && a.type_name == b.type_name && a.primary_key == b.primary_key
        })
}

/// The fields rows are keyed by: the primary key columns, else [`FALLBACK_KEY`].
fn key_fields(columns: &[ColumnDefinition]) -> Arc<[String]> {
    let mut keys: Vec<String> = primary_key_columns(columns)
        .into_iter()
        .map(str::to_string)
        .collect();
    if keys.is_empty() {
        keys.push(FALLBACK_KEY.to_string());
    }
    keys.into()
}

/// What a new stream asks for (FO-15).
pub(crate) struct OpenRequest<'a> {
    pub(crate) client_id: String,
    pub(crate) last_known_sequence: u64,
    pub(crate) last_known_position: Option<Position>,
    pub(crate) last_snapshot_id: &'a str,
    pub(crate) filters: Vec<laredo_proto::laredo::replication::v1::FieldPredicate>,
    pub(crate) compare: &'a (dyn Fn(&Position, &Position) -> std::cmp::Ordering + Send + Sync),
}

/// Why a stream could not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// `max_clients` (the value) streams are open.
    MaxClients(usize),
    Draining,
    /// The snapshot build the stream waited for failed.
    SnapshotFailed,
}

/// A registered stream and where it starts.
pub(crate) struct Opened {
    pub(crate) guard: ClientGuard,
    pub(crate) mode: SyncMode,
    pub(crate) resume_from: u64,
    /// The snapshot to send (FULL_SNAPSHOT) or the one the client holds
    /// (DELTA_FROM_SNAPSHOT).
    pub(crate) snapshot: Option<Arc<FanoutSnapshot>>,
    pub(crate) current_sequence: u64,
    pub(crate) oldest_sequence: u64,
    pub(crate) columns: Vec<ColumnDefinition>,
    /// The columns as of `resume_from`, which COMPACT streams' positional rows follow
    /// until the first schema change they send.
    pub(crate) row_columns: Vec<ColumnDefinition>,
}

/// Unregisters its client (and so releases its pin) when dropped.
pub(crate) struct ClientGuard {
    target: Arc<FanoutTarget>,
    key: u64,
    pub(crate) record: Arc<ClientRecord>,
    reason: Mutex<&'static str>,
}

impl ClientGuard {
    /// Records why the stream ends (reported to the observer).
    pub(crate) fn set_reason(&self, reason: &'static str) {
        *self.reason.lock() = reason;
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.target.clients.lock().clients.remove(&self.key);
        if let Some(observer) = &self.target.observer {
            observer.on_fanout_client_disconnected(
                &self.target.label(),
                &self.record.client_id,
                &self.reason.lock(),
            );
        }
    }
}

/// Builds a [`FanoutTarget`].
#[derive(Default)]
pub struct FanoutTargetBuilder {
    config: FanoutConfig,
    observer: Option<Arc<dyn EngineObserver>>,
    pipeline_id: Option<String>,
}

impl std::fmt::Debug for FanoutTargetBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutTargetBuilder")
            .field("config", &self.config)
            .field("pipeline_id", &self.pipeline_id)
            .finish_non_exhaustive()
    }
}

impl FanoutTargetBuilder {
    /// The configuration (default [`FanoutConfig::default`]).
    #[must_use]
    pub fn config(mut self, config: FanoutConfig) -> Self {
        self.config = config;
        self
    }

    /// Reports fan-out events (clients, snapshots, pruning) to `observer`, typically
    /// the engine's own.
    #[must_use]
    pub fn observer(mut self, observer: Arc<dyn EngineObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The pipeline id named in observer events (default: the table, `schema.table`).
    #[must_use]
    pub fn pipeline_id(mut self, id: impl Into<String>) -> Self {
        self.pipeline_id = Some(id.into());
        self
    }

    /// The target.
    pub fn build(self) -> Arc<FanoutTarget> {
        Arc::new_cyclic(|me| FanoutTarget {
            server_id: new_server_id(),
            config: self.config,
            observer: self.observer,
            pipeline_id: Mutex::new(self.pipeline_id.clone()),
            fixed_pipeline_id: self.pipeline_id.is_some(),
            state: RwLock::new(State::default()),
            head: watch::Sender::new(0),
            lag_tick: watch::Sender::new(0),
            drain: watch::Sender::new(None),
            clients: Mutex::new(Registry::default()),
            listeners: Listeners::new(),
            scheduler: Mutex::new(None),
            snapshots_taken: AtomicU64::new(0),
            #[cfg(test)]
            build_gate: Mutex::new(None),
            me: me.clone(),
        })
    }
}

/// How often pruning looks at the clients' pins at the least, however few entries
/// were appended.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// Appends between two checks of the snapshots' ages (`snapshot.retention.max_age`);
/// snapshots are also checked whenever one is taken or a stream opens.
const SNAPSHOT_AGE_CHECK_EVERY: usize = 1024;

/// Entries appended between two looks at the clients' pins: 1/64 of
/// `journal.max_entries`, at most 4,096 (1 for journals under 128 entries).
fn prune_slack(max_entries: usize) -> usize {
    (max_entries / 64).clamp(1, 4096)
}

fn new_server_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, AtomicOrdering::Relaxed);
    format!("{:x}-{nanos:x}-{n}", std::process::id())
}

fn unix_millis(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

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
    /// Row listeners ([`RowAccess::subscribe`]), removed by `on_close`.
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

    /// The last journal sequence assigned (0 when none).
    pub fn current_sequence(&self) -> u64 {
        self.state.read().journal.current_sequence()
    }

    /// The oldest journal sequence kept (0 when the journal is empty).
    pub fn oldest_sequence(&self) -> u64 {
        self.state.read().journal.oldest_sequence()
    }

    /// The number of journal entries kept.
    pub fn journal_len(&self) -> usize {
        self.state.read().journal.len()
    }

    /// When the oldest kept journal entry was appended.
    pub fn journal_oldest_at(&self) -> Option<SystemTime> {
        self.state.read().journal.oldest_timestamp()
    }

    /// Journal entries after `sequence`, at most `limit`; `None` when entries after it
    /// were pruned.
    pub fn entries_since(&self, sequence: u64, limit: usize) -> Option<Vec<Arc<JournalEntry>>> {
        match self.state.read().journal.read_after(sequence, limit) {
            Read::Entries(entries) => Some(entries),
            Read::Gap => None,
        }
    }

    /// The newest `limit` journal entries, oldest first.
    pub fn journal_tail(&self, limit: usize) -> Vec<Arc<JournalEntry>> {
        self.state.read().journal.tail(limit)
    }

    /// The position of the entry at `sequence`, when kept and known.
    pub fn position_at(&self, sequence: u64) -> Option<Position> {
        self.state.read().journal.position_at(sequence)
    }

    /// The sequence a client at source `position` resumes after (FO-08), or `None`
    /// when the journal no longer covers it. Entries at exactly `position` are sent
    /// again.
    pub fn resume_sequence_for_position(
        &self,
        position: &Position,
        compare: impl Fn(&Position, &Position) -> std::cmp::Ordering,
    ) -> Option<u64> {
        self.state
            .read()
            .journal
            .resume_after_position(position, compare)
    }

    /// The snapshots held, newest first.
    pub fn snapshots(&self) -> Vec<Arc<FanoutSnapshot>> {
        self.state.read().snapshots.iter().cloned().collect()
    }

    /// The snapshot with this id, when held.
    pub fn snapshot(&self, id: &str) -> Option<Arc<FanoutSnapshot>> {
        self.state
            .read()
            .snapshots
            .iter()
            .find(|s| s.id == id)
            .cloned()
    }

    /// Takes a snapshot of the current rows now (and applies the retention).
    pub fn take_snapshot(&self) -> Arc<FanoutSnapshot> {
        let snapshot = {
            let mut state = self.state.write();
            self.snapshot_locked(&mut state)
        };
        self.report_snapshot(&snapshot);
        snapshot
    }

    /// The number of snapshots taken (copies of the rows made) since the target was
    /// built: at baseline end, truncate, schema change, close, restore, every
    /// `snapshot.interval`, and the builds for `FULL_SNAPSHOT` clients, which share one
    /// build among every client that asks while it runs.
    pub fn snapshots_taken(&self) -> u64 {
        self.snapshots_taken.load(AtomicOrdering::Relaxed)
    }

    /// Takes a snapshot under the write lock, unless the newest is already at the
    /// journal's head with the same columns.
    fn snapshot_locked(&self, state: &mut State) -> Arc<FanoutSnapshot> {
        let sequence = state.journal.current_sequence();
        if let Some(newest) = state.snapshots.front()
            && newest.sequence == sequence
            && newest.columns == state.columns
        {
            return Arc::clone(newest);
        }
        let snapshot = Arc::new(self.copy_rows(state));
        self.keep_snapshot(state, Arc::clone(&snapshot));
        snapshot
    }

    /// A snapshot of the rows at the journal's head (the caller holds a lock).
    fn copy_rows(&self, state: &State) -> FanoutSnapshot {
        let sequence = state.journal.current_sequence();
        let created_at = SystemTime::now();
        let rows: Vec<Row> = state.rows.values().cloned().collect();
        let size_bytes = rows.iter().map(|r| r.raw_size() as u64).sum();
        self.snapshots_taken.fetch_add(1, AtomicOrdering::Relaxed);
        FanoutSnapshot {
            id: format!("fanout-{sequence}-{}", unix_millis(created_at)),
            sequence,
            position: state.journal.head_position().cloned(),
            created_at,
            columns: state.columns.clone(),
            rows,
            size_bytes,
        }
    }

    /// Adds `snapshot` to the held ones (newest first, by sequence) and applies the
    /// retention.
    fn keep_snapshot(&self, state: &mut State, snapshot: Arc<FanoutSnapshot>) {
        let at = state
            .snapshots
            .iter()
            .position(|s| s.sequence <= snapshot.sequence)
            .unwrap_or(state.snapshots.len());
        state.snapshots.insert(at, snapshot);
        self.retain_snapshots(state, SystemTime::now());
    }

    /// Applies `snapshot.retention`: at most `keep_count` snapshots (0: any number),
    /// none older than `max_age` (zero: any age) except the newest, which serves new
    /// clients.
    fn retain_snapshots(&self, state: &mut State, now: SystemTime) {
        state.appended_since_snapshot_check = 0;
        let keep = self.config.snapshot_keep_count;
        if keep > 0 {
            state.snapshots.truncate(keep);
        }
        let max_age = self.config.snapshot_max_age;
        if max_age.is_zero() {
            return;
        }
        let newest = state.snapshots.front().map(|s| s.sequence);
        state.snapshots.retain(|s| {
            Some(s.sequence) == newest
                || now
                    .duration_since(s.created_at)
                    .is_ok_and(|age| age <= max_age)
        });
    }

    /// Starts a snapshot build (see the module docs) unless one is in flight; returns
    /// the build in flight.
    fn start_build(&self, state: &mut State) -> Arc<Build> {
        if let Some(build) = &state.building {
            return Arc::clone(build);
        }
        let build = Arc::new(Build {
            floor: state.journal.current_sequence(),
            done: watch::Sender::new(None),
        });
        state.building = Some(Arc::clone(&build));
        let target = self
            .me
            .upgrade()
            .expect("a target in use is held by an Arc");
        let running = Arc::clone(&build);
        // Detached on purpose: the build must finish for every client waiting on it,
        // whichever of them goes away; they see its end through `done`.
        drop(tokio::task::spawn_blocking(move || {
            target.run_build(&running);
        }));
        build
    }

    /// Copies the rows under the read lock, keeps the snapshot, ends the build and
    /// hands the snapshot to the clients waiting on it.
    fn run_build(&self, build: &Arc<Build>) {
        /// Ends the build even if the copy panics (its clients then get an error).
        struct Finish<'a>(&'a FanoutTarget, &'a Arc<Build>);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                let mut state = self.0.state.write();
                if state
                    .building
                    .as_ref()
                    .is_some_and(|b| Arc::ptr_eq(b, self.1))
                {
                    state.building = None;
                }
            }
        }
        let finish = Finish(self, build);
        #[cfg(test)]
        self.wait_build_gate();
        let snapshot = Arc::new(self.copy_rows(&self.state.read()));
        {
            let mut state = self.state.write();
            self.keep_snapshot(&mut state, Arc::clone(&snapshot));
            state.building = None;
        }
        drop(finish);
        build.done.send_replace(Some(Arc::clone(&snapshot)));
        self.report_snapshot(&snapshot);
    }

    #[cfg(test)]
    fn wait_build_gate(&self) {
        let gate = self.build_gate.lock().take();
        if let Some(gate) = gate {
            let _ = gate.recv();
        }
    }

    fn report_snapshot(&self, snapshot: &FanoutSnapshot) {
        tracing::debug!(snapshot = %snapshot.id, rows = snapshot.rows.len(), "fan-out snapshot taken");
        if let Some(observer) = &self.observer {
            observer.on_fanout_snapshot_created(
                &self.label(),
                &snapshot.id,
                snapshot.sequence,
                snapshot.rows.len() as u64,
            );
        }
    }

    /// The clients connected, in no particular order.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.clients
            .lock()
            .clients
            .values()
            .map(|c| c.info())
            .collect()
    }

    pub(crate) fn client_records(&self) -> Vec<Arc<ClientRecord>> {
        self.clients.lock().clients.values().cloned().collect()
    }

    /// The number of clients connected.
    pub fn client_count(&self) -> usize {
        self.clients.lock().clients.len()
    }

    /// Ends every client's stream (each gets a `GoAway` first when there is room for
    /// it); clients reconnect and resume.
    pub fn disconnect_all(&self) {
        for client in self.clients.lock().clients.values() {
            client.cancel.cancel();
        }
    }

    /// Starts draining (FO-11): every stream gets one `GoAway`; streams are closed at
    /// `now + timeout` (never, with `None`, until their clients leave); new streams are
    /// refused with `UNAVAILABLE`. Idempotent: returns `false` when already draining
    /// (the first reason and deadline stay).
    pub fn drain(&self, reason: DrainReason, timeout: Option<Duration>) -> bool {
        self.drain.send_if_modified(|drain| {
            if drain.is_some() {
                return false;
            }
            *drain = Some(DrainInfo {
                reason,
                deadline: timeout.map(|t| SystemTime::now() + t),
                deadline_instant: timeout.map(|t| tokio::time::Instant::now() + t),
            });
            true
        })
    }

    /// True once [`FanoutTarget::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.drain.borrow().is_some()
    }

    /// The drain in progress, when any.
    pub fn drain_info(&self) -> Option<DrainInfo> {
        self.drain.borrow().clone()
    }

    pub(crate) fn subscribe_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    pub(crate) fn subscribe_lag_tick(&self) -> watch::Receiver<u64> {
        self.lag_tick.subscribe()
    }

    /// Entries per [`lag_tick`](Self::lag_tick) step: an eighth of a client's send
    /// buffer, so a stalled client is found at most that many entries after it fell a
    /// buffer behind.
    fn lag_step(&self) -> u64 {
        (self.config.client_buffer_max_size as u64 / 8).max(1)
    }

    /// Publishes the journal's head to the streams.
    fn publish_head(&self, current: u64) {
        self.head.send_replace(current);
        let step = self.lag_step();
        self.lag_tick.send_if_modified(|tick| {
            let changed = *tick / step != current / step;
            *tick = current;
            changed
        });
    }

    pub(crate) fn subscribe_drain(&self) -> watch::Receiver<Option<DrainInfo>> {
        self.drain.subscribe()
    }

    pub(crate) fn observer(&self) -> Option<&Arc<dyn EngineObserver>> {
        self.observer.as_ref()
    }

    /// Visits journal entries after `sequence` under the read lock (see
    /// `Journal::visit_after`); false on a gap.
    pub(crate) fn visit_after(
        &self,
        sequence: u64,
        limit: usize,
        visit: impl FnMut(&Arc<JournalEntry>, usize) -> bool,
    ) -> bool {
        self.state
            .read()
            .journal
            .visit_after(sequence, limit, visit)
    }

    /// Registers a stream and chooses its mode (FO-15) under the write lock, so no
    /// change lands between the choice and the pin; a `FULL_SNAPSHOT` stream that needs
    /// a new snapshot then waits for the build in flight (see the module docs).
    ///
    /// # Cancel safety
    /// Dropping the future while it waits for a build unregisters the client; the
    /// build goes on for the others.
    pub(crate) async fn open(&self, request: OpenRequest<'_>) -> Result<Opened, OpenError> {
        let (mut opened, building) = self.register(request)?;
        if let Some(observer) = &self.observer {
            observer.on_fanout_client_connected(
                &self.label(),
                &opened.guard.record.client_id,
                opened.mode,
            );
        }
        let Some(mut done) = building else {
            return Ok(opened);
        };
        let snapshot = match done.wait_for(Option::is_some).await {
            Ok(snapshot) => snapshot.clone().expect("waited for a snapshot"),
            Err(_) => {
                opened.guard.set_reason("snapshot build failed");
                return Err(OpenError::SnapshotFailed);
            }
        };
        // The build's rows are at its floor (the client's pin) or later.
        opened.guard.record.advance(snapshot.sequence);
        let state = self.state.read();
        opened.resume_from = snapshot.sequence;
        opened.current_sequence = state.journal.current_sequence();
        opened.oldest_sequence = state.journal.oldest_sequence();
        opened.columns = snapshot.columns.clone();
        opened.row_columns = state
            .journal
            .columns_after(snapshot.sequence)
            .map_or_else(|| state.columns.clone(), <[_]>::to_vec);
        drop(state);
        opened.snapshot = Some(snapshot);
        Ok(opened)
    }

    /// The newest snapshot when a `FULL_SNAPSHOT` stream may start from it: it has the
    /// current columns and is at the head, or the journal covers it and no more entries
    /// follow it than it has rows.
    fn reusable_snapshot(state: &State) -> Option<Arc<FanoutSnapshot>> {
        let newest = state.snapshots.front()?;
        let current = state.journal.current_sequence();
        let behind = current.saturating_sub(newest.sequence);
        let usable = newest.columns == state.columns
            && (behind == 0
                || (state.journal.covers(newest.sequence) && behind <= newest.rows.len() as u64));
        usable.then(|| Arc::clone(newest))
    }

    /// Registers a stream; for a `FULL_SNAPSHOT` stream whose snapshot is being built,
    /// also returns where the snapshot will arrive.
    #[expect(clippy::type_complexity, reason = "private, one caller")]
    fn register(
        &self,
        request: OpenRequest<'_>,
    ) -> Result<(Opened, Option<watch::Receiver<Option<Arc<FanoutSnapshot>>>>), OpenError> {
        let target = self
            .me
            .upgrade()
            .expect("a target in use is held by an Arc");
        let mut state = self.state.write();
        if self.is_draining() {
            return Err(OpenError::Draining);
        }
        let mut registry = self.clients.lock();
        let max = self.config.max_clients;
        if max > 0 && registry.clients.len() >= max {
            return Err(OpenError::MaxClients(max));
        }
        let journal = &state.journal;
        let by_position = request
            .last_known_position
            .as_ref()
            .and_then(|p| journal.resume_after_position(p, request.compare));
        let by_sequence = (request.last_known_sequence > 0
            && journal.covers(request.last_known_sequence))
        .then_some(request.last_known_sequence);
        let by_snapshot = (!request.last_snapshot_id.is_empty())
            .then(|| {
                state
                    .snapshots
                    .iter()
                    .find(|s| s.id == request.last_snapshot_id && journal.covers(s.sequence))
                    .cloned()
            })
            .flatten();
        let mut building = None;
        let (mode, resume_from, snapshot) = if let Some(seq) = by_position {
            (SyncMode::Delta, seq, None)
        } else if let Some(seq) = by_sequence {
            (SyncMode::Delta, seq, None)
        } else if let Some(snapshot) = by_snapshot {
            (
                SyncMode::DeltaFromSnapshot,
                snapshot.sequence,
                Some(snapshot),
            )
        } else {
            self.retain_snapshots(&mut state, SystemTime::now());
            if let Some(snapshot) = Self::reusable_snapshot(&state) {
                (SyncMode::FullSnapshot, snapshot.sequence, Some(snapshot))
            } else {
                let build = self.start_build(&mut state);
                building = Some(build.done.subscribe());
                (SyncMode::FullSnapshot, build.floor, None)
            }
        };
        let record = Arc::new(ClientRecord {
            client_id: request.client_id,
            connected_at: SystemTime::now(),
            mode,
            filters: request.filters,
            sequence: AtomicU64::new(resume_from),
            state: AtomicU8::new(ClientState::CatchingUp.as_u8()),
            depth: Mutex::new(None),
            cancel: CancellationToken::new(),
        });
        registry.next_key += 1;
        let key = registry.next_key;
        registry.clients.insert(key, Arc::clone(&record));
        drop(registry);
        let opened = Opened {
            guard: ClientGuard {
                target,
                key,
                record,
                reason: Mutex::new("stream ended"),
            },
            mode,
            resume_from,
            snapshot,
            current_sequence: state.journal.current_sequence(),
            oldest_sequence: state.journal.oldest_sequence(),
            columns: state.columns.clone(),
            row_columns: state
                .journal
                .columns_after(resume_from)
                .map_or_else(|| state.columns.clone(), <[_]>::to_vec),
        };
        drop(state);
        Ok((opened, building))
    }

    /// Applies `changes` and journals each at its position, under one write lock;
    /// then prunes and publishes the head.
    fn append_changes(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let listening = !self.listeners.is_empty();
        let mut notifications = Vec::new();
        let (current, pruned) = {
            let mut state = self.state.write();
            let mut current = state.journal.current_sequence();
            for (at, change) in changes.iter().enumerate() {
                if listening {
                    state.row_changes(&change.kind, Some(at), &mut notifications);
                }
                let kind = state.apply_change(&change.kind);
                current = state.append(Some(change.position.clone()), kind);
            }
            let pruned = self.prune_locked(&mut state, changes.len());
            self.count_for_snapshot_check(&mut state, changes.len());
            (current, pruned)
        };
        self.publish_head(current);
        self.report_pruned(pruned);
        self.notify(&notifications, changes);
    }

    /// Calls the row listeners with `notifications` (outside the state's lock: a
    /// listener may read the target), in order; `batch` holds the changes they refer
    /// to.
    fn notify(&self, notifications: &[Notification], batch: &[Change]) {
        if notifications.is_empty() {
            return;
        }
        let listeners = self.listeners.snapshot();
        for (old, new, at) in notifications {
            let change = RowChange::new(old.as_ref(), new.as_ref(), at.and_then(|n| batch.get(n)));
            for listener in &listeners {
                listener(&change);
            }
        }
    }

    /// Journals a schema entry at the journal's position, then prunes and publishes
    /// the head.
    fn append_schema(&self, old_columns: &[ColumnDefinition], new_columns: &[ColumnDefinition]) {
        let (current, pruned) = {
            let mut state = self.state.write();
            let kind = EntryKind::Schema {
                old_columns: old_columns.to_vec(),
                new_columns: new_columns.to_vec(),
            };
            // It takes the journal's position, so clients can still resume by
            // position across it.
            let position = state.journal.head_position().cloned();
            let current = state.append(position, kind);
            let pruned = self.prune_locked(&mut state, 1);
            self.count_for_snapshot_check(&mut state, 1);
            (current, pruned)
        };
        self.publish_head(current);
        self.report_pruned(pruned);
    }

    /// Counts appended entries; every [`SNAPSHOT_AGE_CHECK_EVERY`] of them, drops the
    /// snapshots past their retention.
    fn count_for_snapshot_check(&self, state: &mut State, appended: usize) {
        state.appended_since_snapshot_check += appended;
        if state.appended_since_snapshot_check >= SNAPSHOT_AGE_CHECK_EVERY {
            self.retain_snapshots(state, SystemTime::now());
        }
    }

    /// Prunes after `appended` new entries. Finding the lowest pin reads every client,
    /// so with a full journal (the steady state of a long-running server) it is done
    /// once per [`prune_slack`] entries, or once a second, rather than on every append:
    /// the journal may run that many entries over `journal.max_entries`, and never
    /// drops an entry sooner than configured.
    fn prune_locked(&self, state: &mut State, appended: usize) -> Option<(u64, u64)> {
        let max_entries = self.config.journal_max_entries.max(1);
        let max_age = self.config.journal_max_age;
        let journal = &state.journal;
        let too_old = !max_age.is_zero()
            && journal
                .oldest_timestamp()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > max_age);
        if journal.len() <= max_entries && !too_old {
            return None;
        }
        state.appended_since_prune = state.appended_since_prune.saturating_add(appended);
        let now = Instant::now();
        let due = state.appended_since_prune >= prune_slack(max_entries)
            || state
                .last_prune
                .is_none_or(|last| now.duration_since(last) >= PRUNE_EVERY);
        if !due {
            return None;
        }
        state.appended_since_prune = 0;
        state.last_prune = Some(now);
        let clients = self.clients.lock().lowest_pin();
        // A snapshot build in flight keeps the journal after its floor for the clients
        // that will start from it.
        let building = state.building.as_ref().map(|b| b.floor);
        let pin = match (clients, building) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let journal = &mut state.journal;
        let dropped = journal.prune(max_entries, max_age, pin);
        (dropped > 0).then(|| (dropped, journal.oldest_sequence()))
    }

    fn report_pruned(&self, pruned: Option<(u64, u64)>) {
        if let (Some((count, oldest)), Some(observer)) = (pruned, &self.observer) {
            observer.on_fanout_journal_pruned(&self.label(), count, oldest);
        }
    }

    fn start_scheduler(&self) {
        let interval = self.config.snapshot_interval;
        if interval.is_zero() {
            return;
        }
        let mut scheduler = self.scheduler.lock();
        if scheduler.is_some() {
            return;
        }
        let me = self.me.clone();
        *scheduler = Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(target) = me.upgrade() else { return };
                if target.is_ready() {
                    target.take_snapshot();
                }
            }
        }));
    }
}

#[async_trait]
impl SyncTarget for FanoutTarget {
    fn type_name(&self) -> &str {
        TYPE_NAME
    }

    async fn on_init(
        &self,
        table: &TableIdentifier,
        columns: &[ColumnDefinition],
    ) -> Result<(), TargetError> {
        let mut state = self.state.write();
        state.table = Some(table.clone());
        state.ready = false;
        // A live target initialised again (a re-baseline, a failed restore) with other
        // columns: journal the change, as a schema change would, so that streams read
        // the rows after it against the new columns. It takes the journal's position,
        // so clients can still resume by position across it.
        let head = if !state.columns.is_empty() && !same_layout(&state.columns, columns) {
            let schema = EntryKind::Schema {
                old_columns: state.columns.clone(),
                new_columns: columns.to_vec(),
            };
            let position = state.journal.head_position().cloned();
            let current = state.append(position, schema);
            let pruned = self.prune_locked(&mut state, 1);
            Some((current, pruned))
        } else {
            state.take_columns(columns);
            None
        };
        drop(state);
        if let Some((current, pruned)) = head {
            self.publish_head(current);
            self.report_pruned(pruned);
        }
        if !self.fixed_pipeline_id {
            *self.pipeline_id.lock() = Some(table.to_string());
        }
        Ok(())
    }

    async fn on_baseline(&self, _table: &TableIdentifier, rows: &[Row]) -> Result<(), TargetError> {
        let listening = !self.listeners.is_empty();
        let mut notifications = Vec::new();
        let (current, pruned) = {
            let mut state = self.state.write();
            for row in rows {
                if listening {
                    let insert = ChangeKind::Insert { row: row.clone() };
                    state.row_changes(&insert, None, &mut notifications);
                }
                let key = state.key_of(row);
                state.rows.insert(key, row.clone());
                state.append(
                    None,
                    EntryKind::Change {
                        action: ChangeAction::Insert,
                        old_values: None,
                        new_values: Some(row.clone()),
                    },
                );
            }
            let pruned = self.prune_locked(&mut state, rows.len());
            (state.journal.current_sequence(), pruned)
        };
        self.publish_head(current);
        self.report_pruned(pruned);
        self.notify(&notifications, &[]);
        Ok(())
    }

    /// Stamps the baseline's entries with `position` and takes the first snapshot.
    async fn on_baseline_complete(
        &self,
        _table: &TableIdentifier,
        position: Option<&Position>,
    ) -> Result<(), TargetError> {
        let snapshot = {
            let mut state = self.state.write();
            if let Some(position) = position {
                state.journal.stamp_unpositioned(position);
            }
            state.ready = true;
            self.snapshot_locked(&mut state)
        };
        self.report_snapshot(&snapshot);
        self.start_scheduler();
        Ok(())
    }

    /// Applies and journals the batch under one write lock; a truncate ends a run of
    /// the batch and is followed by a snapshot (clients far behind restart from it
    /// instead of replaying what the truncate erased).
    async fn apply(&self, _table: &TableIdentifier, batch: &[Change]) -> Result<(), ApplyError> {
        let mut rest = batch;
        while !rest.is_empty() {
            let end = rest
                .iter()
                .position(|c| matches!(c.kind, ChangeKind::Truncate))
                .map_or(rest.len(), |at| at + 1);
            let (run, after) = rest.split_at(end);
            self.append_changes(run);
            if matches!(run.last().map(|c| &c.kind), Some(ChangeKind::Truncate)) && self.is_ready()
            {
                self.take_snapshot();
            }
            rest = after;
        }
        Ok(())
    }

    async fn on_schema_change(
        &self,
        _table: &TableIdentifier,
        old_columns: &[ColumnDefinition],
        new_columns: &[ColumnDefinition],
    ) -> SchemaChangeResponse {
        // Journaled even when the target's columns were already these (taken by
        // `on_init`): the entry records the columns the target had before it.
        self.append_schema(old_columns, new_columns);
        if self.is_ready() {
            self.take_snapshot();
        }
        SchemaChangeResponse::proceed()
    }

    async fn on_close(&self, _table: &TableIdentifier) -> Result<(), TargetError> {
        if self.is_ready() {
            self.take_snapshot();
        }
        self.state.write().ready = false;
        if let Some(handle) = self.scheduler.lock().take() {
            handle.abort();
        }
        self.disconnect_all();
        self.listeners.clear();
        Ok(())
    }

    fn snapshots(&self) -> Option<&dyn SnapshotTarget> {
        Some(self)
    }

    fn rows(&self) -> Option<&dyn RowAccess> {
        Some(self)
    }

    fn fanout(&self) -> Option<&dyn FanoutControl> {
        Some(self)
    }
}

/// What OAM sees and does: the client count, and the drain (`DrainReplication`).
impl FanoutControl for FanoutTarget {
    fn client_count(&self) -> usize {
        FanoutTarget::client_count(self)
    }

    fn is_draining(&self) -> bool {
        FanoutTarget::is_draining(self)
    }

    fn drain(&self, reason: DrainReason, timeout: Option<Duration>) -> bool {
        FanoutTarget::drain(self, reason, timeout)
    }
}

#[async_trait]
impl SnapshotTarget for FanoutTarget {
    async fn export_snapshot(&self) -> Result<Vec<SnapshotEntry>, TargetError> {
        Ok(self
            .state
            .read()
            .rows
            .values()
            .map(|row| SnapshotEntry { row: row.clone() })
            .collect())
    }

    async fn restore_snapshot(
        &self,
        info: &TableSnapshotInfo,
        entries: Vec<SnapshotEntry>,
    ) -> Result<(), TargetError> {
        let mut notifications = Vec::new();
        let (current, snapshot) = {
            let mut state = self.state.write();
            if !info.columns.is_empty() {
                // The journal is reseeded below: no schema entry needed.
                state.columns.clone_from(&info.columns);
                state.key_fields = key_fields(&info.columns);
            }
            if state.table.is_none() {
                state.table = Some(info.table.clone());
            }
            state.rows.clear();
            if !self.listeners.is_empty() {
                notifications.push((None, None, None));
                notifications.extend(entries.iter().map(|e| (None, Some(e.row.clone()), None)));
            }
            for entry in entries {
                let key = state.key_of(&entry.row);
                state.rows.insert(key, entry.row);
            }
            // No earlier sequence describes these rows: reseed so every client
            // re-snapshots.
            state.journal.reseed();
            state.snapshots.clear();
            state.ready = true;
            let snapshot = self.snapshot_locked(&mut state);
            (state.journal.current_sequence(), snapshot)
        };
        self.publish_head(current);
        self.report_snapshot(&snapshot);
        self.start_scheduler();
        self.notify(&notifications, &[]);
        Ok(())
    }

    fn supports_consistent_snapshot(&self) -> bool {
        false
    }
}

/// The rows by key, for the engine and the Query service (QRY-08): no secondary
/// index and no ordered index (the Query service pages a sorted scan), and change
/// streams with each change's position and transaction id.
impl RowAccess for FanoutTarget {
    fn get(&self, identity: &Row) -> Option<Row> {
        let state = self.state.read();
        state.rows.get(&state.key_of(identity)).cloned()
    }

    fn count(&self) -> u64 {
        self.row_count() as u64
    }

    fn scan(&self) -> Vec<Row> {
        self.rows()
    }

    /// The primary key, else `id`; empty before `on_init`.
    fn key_fields(&self) -> Vec<String> {
        FanoutTarget::key_fields(self)
    }

    /// Every change of the rows, in order, after it is journaled; a restore is a
    /// truncate followed by one insert per row. `on_close` removes the listeners.
    fn subscribe(&self, listener: Arc<RowListener>) -> Option<ListenerHandle> {
        Some(self.listeners.add(listener))
    }
}

#[cfg(test)]
mod tests {
    use laredo_core::{row, table};
    use laredo_test_support::OneChange;

    use super::*;

    fn columns() -> Vec<ColumnDefinition> {
        vec![
            ColumnDefinition::new("id", "int8").primary_key(1),
            ColumnDefinition::new("name", "text"),
        ]
    }

    async fn ready(target: &FanoutTarget) {
        let t = table("public", "t");
        target.on_init(&t, &columns()).await.unwrap();
        target
            .on_baseline(&t, &[row! {"id" => 1, "name" => "a"}])
            .await
            .unwrap();
        target
            .on_baseline_complete(&t, Some(&Position::from_u64(10)))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_full_journal_is_pruned_in_steps_and_stays_within_its_slack() {
        let max = 1000;
        let slack = prune_slack(max);
        assert_eq!(slack, 15);
        let target = FanoutTarget::with_config(FanoutConfig::default().journal_max_entries(max));
        ready(&target).await;
        let t = table("public", "t");
        let mut longest = 0;
        let mut pruned_steps = 0;
        let mut previous_oldest = target.oldest_sequence();
        for n in 0..3000_i64 {
            target
                .on_insert(&t, &row! {"id" => n + 2, "name" => "x"})
                .await
                .unwrap();
            longest = longest.max(target.journal_len());
            if target.oldest_sequence() != previous_oldest {
                pruned_steps += 1;
                previous_oldest = target.oldest_sequence();
            }
        }
        assert!(longest <= max + slack, "journal reached {longest} entries");
        assert!(target.journal_len() >= max, "never pruned below the limit");
        // One look at the pins per `slack` appends (or per second), not per append.
        assert!(
            pruned_steps <= 2000 / slack + 10,
            "{pruned_steps} prunes for 2000 appends over the limit"
        );
        assert!(pruned_steps >= 2000 / slack / 2, "{pruned_steps} prunes");
    }

    #[tokio::test]
    async fn the_baseline_is_journaled_and_stamped_with_its_end() {
        let target = FanoutTarget::new();
        ready(&target).await;
        assert!(target.is_ready());
        let entries = target.entries_since(0, 10).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].position, Some(Position::from_u64(10)));
        let snapshots = target.snapshots();
        assert_eq!(snapshots.len(), 1, "initial snapshot");
        assert_eq!(snapshots[0].sequence(), 1);
        assert!(snapshots[0].id().starts_with("fanout-1-"));
    }

    #[tokio::test]
    async fn changes_carry_old_rows_found_by_identity() {
        let target = FanoutTarget::new();
        ready(&target).await;
        let t = table("public", "t");
        let update = Change::update(row! {"id" => 2, "name" => "b"}, Some(row! {"id" => 1}));
        let delete = Change::delete(row! {"id" => 2});
        target
            .apply(
                &t,
                &[
                    update.at(Position::from_u64(11)),
                    delete.at(Position::from_u64(12)),
                ],
            )
            .await
            .unwrap();
        let entries = target.entries_since(1, 10).unwrap();
        let kinds: Vec<&EntryKind> = entries.iter().map(|e| &e.kind).collect();
        assert_eq!(
            kinds,
            [
                &EntryKind::Change {
                    action: ChangeAction::Update,
                    old_values: Some(row! {"id" => 1, "name" => "a"}),
                    new_values: Some(row! {"id" => 2, "name" => "b"}),
                },
                &EntryKind::Change {
                    action: ChangeAction::Delete,
                    old_values: Some(row! {"id" => 2, "name" => "b"}),
                    new_values: None,
                },
            ]
        );
        assert_eq!(entries[1].position, Some(Position::from_u64(12)));
        assert_eq!(target.row_count(), 0);
    }

    #[tokio::test]
    async fn snapshot_retention_keeps_the_newest() {
        let target = FanoutTarget::with_config(FanoutConfig::default().snapshot_keep_count(2));
        ready(&target).await;
        let t = table("public", "t");
        for id in 2..6 {
            target.on_insert(&t, &row! {"id" => id}).await.unwrap();
            target.take_snapshot();
        }
        let sequences: Vec<u64> = target.snapshots().iter().map(|s| s.sequence()).collect();
        assert_eq!(sequences, [5, 4]);
    }

    #[tokio::test]
    async fn a_schema_change_is_journaled_and_continues() {
        let target = FanoutTarget::new();
        ready(&target).await;
        let t = table("public", "t");
        let mut new_columns = columns();
        new_columns.push(ColumnDefinition::new("age", "int8"));
        let response = target.on_schema_change(&t, &columns(), &new_columns).await;
        assert_eq!(response, SchemaChangeResponse::proceed());
        let entries = target.entries_since(1, 10).unwrap();
        assert!(
            matches!(&entries[0].kind, EntryKind::Schema { new_columns: c, .. } if c.len() == 3)
        );
        assert_eq!(target.columns(), new_columns);
    }

    #[tokio::test]
    async fn initialising_a_live_target_with_other_columns_journals_the_change() {
        let target = FanoutTarget::new();
        ready(&target).await;
        let t = table("public", "t");
        // The same columns again (a restart of the pipeline): nothing to journal.
        target.on_init(&t, &columns()).await.unwrap();
        assert_eq!(target.entries_since(1, 10).unwrap().len(), 0);
        // Other columns (a re-baseline after the table changed): rows after this
        // follow them, so streams must get the change in sequence order.
        let mut new_columns = columns();
        new_columns.push(ColumnDefinition::new("age", "int8"));
        target.on_init(&t, &new_columns).await.unwrap();
        target
            .on_insert(&t, &row! {"id" => 5, "name" => "e", "age" => 3})
            .await
            .unwrap();
        let entries = target.entries_since(1, 10).unwrap();
        assert!(
            matches!(&entries[0].kind, EntryKind::Schema { old_columns, new_columns: c, .. }
                if old_columns == &columns() && c == &new_columns),
            "{entries:?}"
        );
        // The insert is a full row of the new columns: COMPACT sends it positionally.
        assert!(entries[1].shape.new_full);
        assert_eq!(target.columns(), new_columns);
        assert_eq!(target.subscribe_head().borrow().to_owned(), 3);
    }

    #[tokio::test]
    async fn rows_between_a_reinit_and_the_sources_schema_change_follow_the_targets_columns() {
        // The engine may initialise the target with new columns before the source's
        // schema change reaches it; the rows in between follow the new columns, and a
        // COMPACT stream resuming among them must be told those, not the source's old
        // ones (same length: a mix-up would decode without an error).
        let target = FanoutTarget::new();
        ready(&target).await;
        let t = table("public", "t");
        let renamed = vec![
            ColumnDefinition::new("id", "int8").primary_key(1),
            ColumnDefinition::new("title", "text"),
        ];
        target.on_init(&t, &renamed).await.unwrap();
        target
            .apply_at(
                &t,
                Change::insert(row! {"id" => 5, "title" => "e"}),
                Position::from_u64(11),
            )
            .await
            .unwrap();
        target.on_schema_change(&t, &columns(), &renamed).await;
        target
            .apply_at(
                &t,
                Change::insert(row! {"id" => 6, "title" => "f"}),
                Position::from_u64(13),
            )
            .await
            .unwrap();
        let entries = target.entries_since(1, 10).unwrap();
        assert_eq!(entries.len(), 4);
        // The re-init's entry takes the journal's position: resuming by position
        // across it still works.
        assert_eq!(entries[0].position, Some(Position::from_u64(10)));
        assert!(entries[1].shape.new_full && entries[3].shape.new_full);
        {
            let journal = &target.state.read().journal;
            assert_eq!(journal.columns_after(1), Some(columns().as_slice()));
            assert_eq!(journal.columns_after(2), Some(renamed.as_slice()));
            assert_eq!(journal.columns_after(3), Some(renamed.as_slice()));
            assert_eq!(journal.columns_after(4), None);
        }
        // Metadata alone (nullability here) is no schema change.
        let mut relaxed = renamed.clone();
        relaxed[1].nullable = !relaxed[1].nullable;
        target.on_init(&t, &relaxed).await.unwrap();
        assert_eq!(target.entries_since(1, 10).unwrap().len(), 4);
        assert_eq!(target.columns(), relaxed);
    }

    #[tokio::test]
    async fn schema_bookkeeping_follows_pruning_and_reseeding() {
        let target = FanoutTarget::with_config(FanoutConfig::default().journal_max_entries(2));
        ready(&target).await;
        let t = table("public", "t");
        let mut wider = columns();
        wider.push(ColumnDefinition::new("age", "int8"));
        target.on_schema_change(&t, &columns(), &wider).await;
        assert_eq!(
            target.state.read().journal.columns_after(1),
            Some(columns().as_slice())
        );
        for id in 2..10 {
            target
                .on_insert(&t, &row! {"id" => id, "name" => "x", "age" => id})
                .await
                .unwrap();
        }
        // The schema entry was pruned with the entries around it.
        assert!(target.oldest_sequence() > 2);
        assert_eq!(target.state.read().journal.columns_after(1), None);
        target.on_schema_change(&t, &wider, &columns()).await;
        assert!(target.state.read().journal.columns_after(2).is_some());
        target
            .restore_snapshot(
                &TableSnapshotInfo {
                    table: t.clone(),
                    row_count: 1,
                    columns: columns(),
                    target_type: TYPE_NAME.to_string(),
                    indexes: Vec::new(),
                },
                vec![SnapshotEntry {
                    row: row! {"id" => 1, "name" => "a"},
                }],
            )
            .await
            .unwrap();
        assert_eq!(target.state.read().journal.columns_after(0), None);
    }

    fn full_snapshot_request(client_id: &str) -> OpenRequest<'static> {
        fn compare(a: &Position, b: &Position) -> std::cmp::Ordering {
            a.as_u64().cmp(&b.as_u64())
        }
        OpenRequest {
            client_id: client_id.to_string(),
            last_known_sequence: 0,
            last_known_position: None,
            last_snapshot_id: "",
            filters: Vec::new(),
            compare: &compare,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_opening_during_a_snapshot_build_share_it() {
        let target = FanoutTarget::new();
        ready(&target).await;
        let t = table("public", "t");
        // More changes than rows: the baseline's snapshot is not reused.
        for id in 2..6 {
            target.on_insert(&t, &row! {"id" => id}).await.unwrap();
        }
        let taken = target.snapshots_taken();
        let (release, gate) = std::sync::mpsc::channel();
        *target.build_gate.lock() = Some(gate);
        let mut opening = Vec::new();
        for n in 0..20 {
            let target = Arc::clone(&target);
            opening.push(tokio::spawn(async move {
                target
                    .open(full_snapshot_request(&format!("c{n}")))
                    .await
                    .map_err(|_| "refused")
            }));
        }
        laredo_test_support::wait_until("every stream waits", Duration::from_secs(10), || {
            target.client_count() == 20
        })
        .await;
        // Changes while the build waits: they land before its copy, which takes them.
        for id in 6..9 {
            target.on_insert(&t, &row! {"id" => id}).await.unwrap();
        }
        assert!(
            target.state.read().building.is_some(),
            "one build in flight"
        );
        release.send(()).unwrap();
        let mut ids = std::collections::HashSet::new();
        for opening in opening {
            let opened = opening.await.unwrap().unwrap();
            let snapshot = opened.snapshot.clone().unwrap();
            assert_eq!(snapshot.sequence(), target.current_sequence());
            assert_eq!(opened.resume_from, snapshot.sequence());
            assert_eq!(opened.guard.record.sequence(), snapshot.sequence());
            assert_eq!(snapshot.rows().len(), 8);
            ids.insert(snapshot.id().to_string());
        }
        assert_eq!(ids.len(), 1, "one snapshot for every stream: {ids:?}");
        assert_eq!(target.snapshots_taken(), taken + 1, "one build");
        assert!(target.state.read().building.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_build_pins_the_journal_after_its_floor() {
        let target = FanoutTarget::with_config(FanoutConfig::default().journal_max_entries(2));
        ready(&target).await;
        let t = table("public", "t");
        for id in 2..6 {
            target.on_insert(&t, &row! {"id" => id}).await.unwrap();
        }
        let (release, gate) = std::sync::mpsc::channel();
        *target.build_gate.lock() = Some(gate);
        let opening = {
            let target = Arc::clone(&target);
            tokio::spawn(async move {
                let opened = target.open(full_snapshot_request("c")).await;
                opened.map(|o| o.resume_from).map_err(|_| "refused")
            })
        };
        laredo_test_support::wait_until("the stream waits", Duration::from_secs(10), || {
            target.client_count() == 1
        })
        .await;
        let floor = target.current_sequence();
        for id in 6..20 {
            target.on_insert(&t, &row! {"id" => id}).await.unwrap();
        }
        assert!(
            target.oldest_sequence() <= floor + 1,
            "entries after the floor ({floor}) kept, oldest {}",
            target.oldest_sequence()
        );
        release.send(()).unwrap();
        assert_eq!(opening.await.unwrap(), Ok(target.current_sequence()));
    }

    #[tokio::test]
    async fn a_full_snapshot_stream_reuses_the_newest_snapshot_while_catching_up_is_cheaper() {
        let target = FanoutTarget::new();
        let t = table("public", "t");
        target.on_init(&t, &columns()).await.unwrap();
        let rows: Vec<Row> = (1..=10)
            .map(|id| row! {"id" => id, "name" => "a"})
            .collect();
        target.on_baseline(&t, &rows).await.unwrap();
        target.on_baseline_complete(&t, None).await.unwrap();
        let baseline = target.snapshots()[0].clone();
        for id in 11..=20 {
            target.on_insert(&t, &row! {"id" => id}).await.unwrap();
        }
        let opened = target.open(full_snapshot_request("a")).await.ok().unwrap();
        assert_eq!(
            opened.snapshot.unwrap().id(),
            baseline.id(),
            "10 behind, 10 rows"
        );
        assert_eq!(opened.resume_from, baseline.sequence());
        target.on_insert(&t, &row! {"id" => 21}).await.unwrap();
        let opened = target.open(full_snapshot_request("b")).await.ok().unwrap();
        let snapshot = opened.snapshot.unwrap();
        assert_eq!(
            snapshot.sequence(),
            target.current_sequence(),
            "11 behind: rebuilt"
        );
        assert_eq!(snapshot.rows().len(), 21);
    }

    #[tokio::test]
    async fn snapshot_retention_keeps_three_by_default() {
        let target = FanoutTarget::new();
        ready(&target).await;
        let t = table("public", "t");
        for id in 2..8 {
            target.on_insert(&t, &row! {"id" => id}).await.unwrap();
            target.take_snapshot();
        }
        let sequences: Vec<u64> = target.snapshots().iter().map(|s| s.sequence()).collect();
        assert_eq!(sequences, [7, 6, 5]);
    }

    /// Makes every held snapshot but the newest `age` old.
    fn age_snapshots(target: &FanoutTarget, age: Duration) {
        let mut state = target.state.write();
        let newest = state.snapshots.front().map(|s| s.sequence);
        for snapshot in &mut state.snapshots {
            if Some(snapshot.sequence) == newest {
                continue;
            }
            let old = FanoutSnapshot {
                id: snapshot.id.clone(),
                sequence: snapshot.sequence,
                position: snapshot.position.clone(),
                created_at: SystemTime::now() - age,
                columns: snapshot.columns.clone(),
                rows: snapshot.rows.clone(),
                size_bytes: snapshot.size_bytes,
            };
            *snapshot = Arc::new(old);
        }
    }

    #[tokio::test]
    async fn snapshots_older_than_a_day_are_dropped_by_default_as_changes_arrive() {
        let target = FanoutTarget::new();
        ready(&target).await;
        let t = table("public", "t");
        target.on_insert(&t, &row! {"id" => 2}).await.unwrap();
        target.take_snapshot();
        assert_eq!(target.snapshots().len(), 2);
        age_snapshots(&target, Duration::from_secs(25 * 3600));
        // No snapshot is taken: the changes alone drop the old one.
        for id in 3..(3 + SNAPSHOT_AGE_CHECK_EVERY as i64) {
            target.on_insert(&t, &row! {"id" => id}).await.unwrap();
        }
        let sequences: Vec<u64> = target.snapshots().iter().map(|s| s.sequence()).collect();
        assert_eq!(sequences, [2], "the day-old baseline snapshot is gone");
    }

    #[tokio::test]
    async fn drain_is_idempotent() {
        let target = FanoutTarget::new();
        assert!(target.drain(DrainReason::Admin, None));
        assert!(!target.drain(DrainReason::Shutdown, Some(Duration::from_secs(1))));
        let info = target.drain_info().unwrap();
        assert_eq!((info.reason, info.deadline), (DrainReason::Admin, None));
    }
}
