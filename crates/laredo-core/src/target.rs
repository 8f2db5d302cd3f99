//! The target side: [`SyncTarget`], the batches it applies ([`Change`]) and its optional
//! capabilities ([`SnapshotTarget`], [`RowAccess`], [`TargetStatus`],
//! [`FanoutControl`]).
//!
//! Services and clients reach a target through these traits only: the Query service
//! reads any target with [`RowAccess`], OAM reports indexes, target configuration and
//! fan-out clients and drains fan-out targets through [`RowAccess`], [`TargetStatus`]
//! and [`FanoutControl`], without depending on a target crate.
//!
//! # The contract between the engine and a target
//!
//! - **One writer, in order.** The engine calls a target's data methods (`on_init`,
//!   `on_baseline`, `on_baseline_complete`, `apply`, `on_schema_change`, `on_close`)
//!   from one task per pipeline, never two at once, in source order. Methods take
//!   `&self` because readers (queries, listeners, fan-out clients) use the target
//!   concurrently: a target protects its own state.
//! - **Batches are not transactions.** [`SyncTarget::apply`] receives the changes the
//!   engine had buffered for the pipeline, up to a few hundred, in order. A batch may
//!   end in the middle of a source transaction or hold several; a target must not read
//!   meaning into its boundaries. Each [`Change`] carries its own position and
//!   transaction id. Positions never go backwards within a pipeline's stream (equal
//!   positions are possible for sources without a per-change position).
//! - **Partial failure.** A target that fails part way reports how many changes it
//!   applied ([`ApplyError::applied`]); the engine retries from the failing change, and
//!   after its retries dead-letters that change alone (or applies the pipeline's error
//!   policy) and goes on with the rest.
//! - **At-least-once.** After a crash or restart the source resumes from its last
//!   acknowledged position, so a change a target applied may arrive again; after a
//!   re-baseline every row arrives again. Apply by key: an insert of an existing key
//!   replaces the row, a delete of a missing key is a no-op.
//! - **Durability.** After each batch the engine asks [`SyncTarget::durable_position`]
//!   how far the target is durable and acknowledges the source at the minimum over the
//!   source's pipelines. A target must never report a position whose change (or any
//!   earlier one) could still be lost: that change would never be delivered again.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::change::ChangeAction;
use crate::error::PluginError;
use crate::listener::ListenerHandle;
use crate::position::Position;
use crate::row::Row;
use crate::snapshot::{SnapshotEntry, TableSnapshotInfo};
use crate::status::SchemaChangeResponse;
use crate::table::{ColumnDefinition, TableIdentifier};
use crate::value::Value;

/// A target's error. The engine retries, dead-letters or applies the pipeline's error
/// policy; the message names what failed and the cause is the
/// [`source`](std::error::Error::source).
pub type TargetError = PluginError;

/// A batch that failed part way: the first [`ApplyError::applied`] changes are applied,
/// the next one failed with [`ApplyError::error`], the rest were not tried.
///
/// It shows as its `error`: `Display` is the error's message and `source()` the error's
/// cause.
#[derive(Debug)]
pub struct ApplyError {
    /// How many changes of the batch, from its start, are applied.
    pub applied: usize,
    /// Why the change at index `applied` failed.
    pub error: TargetError,
}

impl ApplyError {
    /// The change at index `applied` failed with `error`.
    pub fn at(applied: usize, error: TargetError) -> Self {
        Self { applied, error }
    }
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for ApplyError {
    // The error's own cause, not the error: its text is this one's already.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

impl From<TargetError> for ApplyError {
    /// A failure before any change of the batch was applied (a target that is not
    /// initialised, a closed connection). Do not use it once a change is applied: the
    /// engine would blame the first change of the batch.
    fn from(error: TargetError) -> Self {
        Self { applied: 0, error }
    }
}

/// What a [`Change`] does.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeKind {
    /// A new row.
    Insert {
        /// The row.
        row: Row,
    },
    /// A changed row.
    Update {
        /// The complete new row.
        row: Row,
        /// The old row or its key columns, when the source had them. When its key
        /// differs from the new row's, the row moved to a new key.
        identity: Option<Row>,
    },
    /// A removed row.
    Delete {
        /// The old row or at least its key columns.
        identity: Row,
    },
    /// Every row removed.
    Truncate,
}

/// One change as a target receives it: what it does, with its source position and
/// transaction, after the pipeline's filters and transforms.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Change {
    /// What the change does.
    pub kind: ChangeKind,
    /// The source position of the change.
    pub position: Position,
    /// The origin transaction id (0 when unknown).
    pub xid: i64,
    /// The commit time at the origin, when known.
    pub commit_timestamp: Option<SystemTime>,
}

impl Change {
    /// A change of `kind` at position 0, with no transaction; see [`Change::at`].
    pub fn new(kind: ChangeKind) -> Self {
        Self {
            kind,
            position: Position::from_u64(0),
            xid: 0,
            commit_timestamp: None,
        }
    }

    /// An insert of `row`.
    pub fn insert(row: Row) -> Self {
        Self::new(ChangeKind::Insert { row })
    }

    /// An update to `row`, with the old row or its identity when known.
    pub fn update(row: Row, identity: Option<Row>) -> Self {
        Self::new(ChangeKind::Update { row, identity })
    }

    /// A delete of the row identified by `identity`.
    pub fn delete(identity: Row) -> Self {
        Self::new(ChangeKind::Delete { identity })
    }

    /// A truncate.
    pub fn truncate() -> Self {
        Self::new(ChangeKind::Truncate)
    }

    /// The same change at `position`.
    #[must_use]
    pub fn at(mut self, position: Position) -> Self {
        self.position = position;
        self
    }

    /// The same change with its transaction id and commit time.
    #[must_use]
    pub fn with_commit(mut self, xid: i64, commit_timestamp: Option<SystemTime>) -> Self {
        self.xid = xid;
        self.commit_timestamp = commit_timestamp;
        self
    }

    /// The kind as a [`ChangeAction`].
    pub fn action(&self) -> ChangeAction {
        match self.kind {
            ChangeKind::Insert { .. } => ChangeAction::Insert,
            ChangeKind::Update { .. } => ChangeAction::Update,
            ChangeKind::Delete { .. } => ChangeAction::Delete,
            ChangeKind::Truncate => ChangeAction::Truncate,
        }
    }

    /// The new row (insert and update).
    pub fn row(&self) -> Option<&Row> {
        match &self.kind {
            ChangeKind::Insert { row } | ChangeKind::Update { row, .. } => Some(row),
            ChangeKind::Delete { .. } | ChangeKind::Truncate => None,
        }
    }

    /// The row that identifies the changed row: the identity when present, else the new
    /// row; `None` for a truncate.
    pub fn identity(&self) -> Option<&Row> {
        match &self.kind {
            ChangeKind::Insert { row } => Some(row),
            ChangeKind::Update { row, identity } => Some(identity.as_ref().unwrap_or(row)),
            ChangeKind::Delete { identity } => Some(identity),
            ChangeKind::Truncate => None,
        }
    }
}

/// Consumes the baseline rows and the changes of one table (one pipeline).
///
/// The required surface is what every target needs: initialise, load the baseline,
/// apply batches of changes, say how far it is durable, close. What only some targets
/// can do is a capability behind an accessor that returns `None` by default:
/// [`SyncTarget::snapshots`] (engine snapshots), [`SyncTarget::rows`] (reading the rows
/// held), [`SyncTarget::status`] (what operators see) and [`SyncTarget::fanout`]
/// (downstream clients a target serves). The module docs state the
/// contract: ordering, batches, partial failure, redelivery and durability.
///
/// `Any` is a supertrait so that [`Engine::get_target`](crate::Engine::get_target) can
/// hand back the concrete type.
///
/// ```
/// use async_trait::async_trait;
/// use laredo_core::{ApplyError, Change, ChangeKind, Row, SyncTarget, TableIdentifier, TargetError};
///
/// /// Counts the rows a table holds.
/// #[derive(Default)]
/// struct Counter(std::sync::atomic::AtomicI64);
///
/// #[async_trait]
/// impl SyncTarget for Counter {
///     fn type_name(&self) -> &str { "counter" }
///     async fn on_baseline(&self, _: &TableIdentifier, rows: &[Row]) -> Result<(), TargetError> {
///         self.0.fetch_add(rows.len() as i64, std::sync::atomic::Ordering::Relaxed);
///         Ok(())
///     }
///     async fn apply(&self, _: &TableIdentifier, batch: &[Change]) -> Result<(), ApplyError> {
///         for change in batch {
///             let delta = match change.kind {
///                 ChangeKind::Insert { .. } => 1,
///                 ChangeKind::Delete { .. } => -1,
///                 ChangeKind::Update { .. } => 0,
///                 ChangeKind::Truncate => -self.0.load(std::sync::atomic::Ordering::Relaxed),
///             };
///             self.0.fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
///         }
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait SyncTarget: Any + Send + Sync {
    /// The target type name: `indexed-memory`, `compiled-memory`, `http-sync`,
    /// `replication-fanout`, or a custom name. Part of the pipeline id.
    fn type_name(&self) -> &str;

    /// Prepares for `table` with its columns. Called before the baseline and again
    /// before a re-baseline. The default accepts any columns.
    ///
    /// # Errors
    /// When the columns do not fit the target's configuration (a missing key field).
    async fn on_init(
        &self,
        table: &TableIdentifier,
        columns: &[ColumnDefinition],
    ) -> Result<(), TargetError> {
        let _ = (table, columns);
        Ok(())
    }

    /// Receives a batch of baseline rows (after the pipeline's filters and transforms).
    ///
    /// # Errors
    /// When the rows cannot be stored; the pipeline goes to ERROR.
    async fn on_baseline(&self, table: &TableIdentifier, rows: &[Row]) -> Result<(), TargetError>;

    /// The baseline is complete; `position` is the source position it is consistent
    /// with (the changes that follow come after it), when the source has one. The
    /// default does nothing.
    ///
    /// # Errors
    /// When the target cannot finish the load.
    async fn on_baseline_complete(
        &self,
        table: &TableIdentifier,
        position: Option<&Position>,
    ) -> Result<(), TargetError> {
        let _ = (table, position);
        Ok(())
    }

    /// Applies `batch` in order: one call per batch, the hot path. See the module docs
    /// for ordering, batch boundaries and redelivery.
    ///
    /// # Errors
    /// An [`ApplyError`] saying how many changes were applied before one failed; the
    /// engine retries from that change, then dead-letters it or applies the error
    /// policy.
    async fn apply(&self, table: &TableIdentifier, batch: &[Change]) -> Result<(), ApplyError>;

    /// The position up to which this target is durable, given that it has applied
    /// everything up to `applied`. The default, `applied`, is right for a target whose
    /// applied changes are safe at once (in memory: a restart re-baselines it anyway).
    /// A batching or remote target returns the position of its last change that is
    /// safely stored, or `None`, so the ACK never passes buffered data.
    fn durable_position(&self, applied: &Position) -> Option<Position> {
        Some(applied.clone())
    }

    /// True when what this target applied outlives the process (a database, a remote
    /// service), so a new process may resume a stateful source into it. The default,
    /// `false`, is right for in-memory targets: they start empty, so on an engine's
    /// first start the engine restores a snapshot into them or runs a baseline, never
    /// resumes from the source's acknowledged position (that would leave them missing
    /// every row written before it).
    fn retains_state(&self) -> bool {
        false
    }

    /// Reacts to a column change of the table, in stream order with the changes. The
    /// default continues.
    async fn on_schema_change(
        &self,
        table: &TableIdentifier,
        old_columns: &[ColumnDefinition],
        new_columns: &[ColumnDefinition],
    ) -> SchemaChangeResponse {
        let _ = (table, old_columns, new_columns);
        SchemaChangeResponse::proceed()
    }

    /// The engine is stopping. The default does nothing.
    ///
    /// # Errors
    /// When closing fails; the engine reports it and goes on.
    async fn on_close(&self, table: &TableIdentifier) -> Result<(), TargetError> {
        let _ = table;
        Ok(())
    }

    /// The snapshot capability, for targets whose rows can be exported and restored
    /// (engine snapshots). `None` (the default): the target cannot be snapshotted.
    fn snapshots(&self) -> Option<&dyn SnapshotTarget> {
        None
    }

    /// The row access capability, for targets that keep rows. `None` (the default):
    /// the target keeps none.
    fn rows(&self) -> Option<&dyn RowAccess> {
        None
    }

    /// The status capability: what operators see of the target. `None` (the default):
    /// the type name only.
    fn status(&self) -> Option<&dyn TargetStatus> {
        None
    }

    /// The fan-out capability, for targets that serve downstream clients of their own
    /// (the replication fan-out): their count, and draining them. `None` (the
    /// default): the target serves no clients.
    fn fanout(&self) -> Option<&dyn FanoutControl> {
        None
    }
}

/// Capability: a target whose rows can be exported into an engine snapshot and
/// restored from one.
#[async_trait]
pub trait SnapshotTarget: Send + Sync {
    /// Every row, for an engine snapshot.
    ///
    /// # Errors
    /// When the target cannot export.
    async fn export_snapshot(&self) -> Result<Vec<SnapshotEntry>, TargetError>;

    /// Replaces the contents with a snapshot's rows.
    ///
    /// # Errors
    /// When the rows cannot be loaded.
    async fn restore_snapshot(
        &self,
        info: &TableSnapshotInfo,
        entries: Vec<SnapshotEntry>,
    ) -> Result<(), TargetError>;

    /// Reserved: whether the target can export without the sources paused.
    fn supports_consistent_snapshot(&self) -> bool {
        false
    }
}

/// The name [`RowAccess::indexes`] gives a target's lookup index: the unique index a
/// lookup without an index name uses.
pub const PRIMARY_INDEX: &str = "(primary)";

/// One index over a target's rows, as [`RowAccess::indexes`] lists it (OAM
/// `IndexInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexInfo {
    /// The name ([`PRIMARY_INDEX`] for the lookup index).
    pub name: String,
    /// The indexed columns, in key order.
    pub fields: Vec<String>,
    /// Whether a key maps to at most one row.
    pub unique: bool,
    /// Rows in the index (for a unique index: its keys).
    pub entry_count: usize,
}

impl IndexInfo {
    /// An index named `name` over `fields` holding `entry_count` entries.
    pub fn new(
        name: impl Into<String>,
        fields: Vec<String>,
        unique: bool,
        entry_count: usize,
    ) -> Self {
        Self {
            name: name.into(),
            fields,
            unique,
            entry_count,
        }
    }
}

/// Why a lookup by index ([`RowAccess::lookup`]) found no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// No index has this name.
    #[error("unknown index {0:?}")]
    UnknownIndex(String),
    /// The key has a different number of values than the index has fields.
    #[error("index {index:?} has {expected} field(s), the key has {got}")]
    KeyArity {
        /// The index.
        index: String,
        /// Its field count.
        expected: usize,
        /// The key's value count.
        got: usize,
    },
}

/// One change of the rows a target holds, as a [`RowAccess::subscribe`] listener sees
/// it: `(None, new)` a new key, `(old, new)` a replaced row, `(old, None)` a removed
/// row, `(None, None)` every row removed.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RowChange<'a> {
    /// The row before; `None` for a new key and a truncate.
    pub old: Option<&'a Row>,
    /// The row after; `None` for a removed row and a truncate.
    pub new: Option<&'a Row>,
    /// The change of [`SyncTarget::apply`] that made it, with its source position and
    /// transaction id. `None` for writes that are no applied change: baseline rows and
    /// a snapshot restore.
    pub change: Option<&'a Change>,
}

impl<'a> RowChange<'a> {
    /// A change from `old` to `new`, made by `change` when it came from
    /// [`SyncTarget::apply`].
    pub fn new(old: Option<&'a Row>, new: Option<&'a Row>, change: Option<&'a Change>) -> Self {
        Self { old, new, change }
    }

    /// What happened to the rows: an insert of a new key, an update, a delete, or a
    /// truncate (as the rows tell it; an applied insert that replaced a row is an
    /// update here).
    pub fn action(&self) -> ChangeAction {
        match (self.old, self.new) {
            (None, Some(_)) => ChangeAction::Insert,
            (Some(_), Some(_)) => ChangeAction::Update,
            (Some(_), None) => ChangeAction::Delete,
            (None, None) => ChangeAction::Truncate,
        }
    }
}

/// A listener of [`RowAccess::subscribe`].
pub type RowListener = dyn Fn(&RowChange<'_>) + Send + Sync;

/// Capability: read access to the rows a target holds.
///
/// The engine uses it to complete an update whose new row lacks values the source did
/// not resend (PostgreSQL's unchanged TOAST columns), to validate row counts and to
/// expire rows by TTL. The Query service serves every target that has it: by key
/// ([`RowAccess::get`], [`RowAccess::key_fields`]), by index ([`RowAccess::indexes`],
/// [`RowAccess::lookup`]), in pages ([`RowAccess::rows_after`], else a sorted
/// [`RowAccess::scan`]), counted, and as a change stream ([`RowAccess::subscribe`]).
/// Only `get`, `count` and `scan` are required; a target says what more it can do by
/// overriding the others.
///
/// Readers call these methods from any thread while the engine writes: each answers
/// from one consistent state (a change is seen whole or not at all).
pub trait RowAccess: Send + Sync {
    /// The row held for `identity` (a row carrying at least the key columns), if any.
    fn get(&self, identity: &Row) -> Option<Row>;

    /// The number of rows held.
    fn count(&self) -> u64;

    /// Every row held, in no particular order.
    fn scan(&self) -> Vec<Row>;

    /// The columns that identify a row, in key order: what [`RowAccess::get`] reads of
    /// its identity and what pages are ordered by (the primary key, or the columns the
    /// target keys a table without one by). Empty (the default) until the target knows
    /// its table, and for a target that does not say.
    fn key_fields(&self) -> Vec<String> {
        Vec::new()
    }

    /// The indexes [`RowAccess::lookup`] can use, with their sizes; the lookup index
    /// first, named [`PRIMARY_INDEX`]. Empty (the default): lookups go by key only.
    fn indexes(&self) -> Vec<IndexInfo> {
        Vec::new()
    }

    /// The rows whose `index` fields equal `key` (one value per field, in field
    /// order): at most one for a unique index, any number otherwise, in no particular
    /// order. Keys compare by canonical key bytes ([`Value::write_key`]), so numeric
    /// kinds normalise.
    ///
    /// # Errors
    /// [`IndexError::UnknownIndex`] when the target has no index of that name (the
    /// default, for every name), [`IndexError::KeyArity`] when `key` has the wrong
    /// number of values.
    fn lookup(&self, index: &str, key: &[Value]) -> Result<Vec<Row>, IndexError> {
        let _ = key;
        Err(IndexError::UnknownIndex(index.to_string()))
    }

    /// Up to `limit` rows in key order whose key ([`RowAccess::key_fields`]' values)
    /// sorts after `after`, or from the first row when `after` is `None`: one page of
    /// a listing that survives concurrent writes, since the next page starts after the
    /// last key sent.
    ///
    /// Key order is the byte order of the keys' sort keys as laredo-index's `sort_key`
    /// writes them: natural within a kind (numbers by value across kinds, text by its
    /// bytes, times chronologically), consistent with key equality. A caller that
    /// orders a [`RowAccess::scan`] itself uses the same order, so pages agree.
    ///
    /// `None` (the default): the target keeps no ordered index, and the caller orders a
    /// scan. A target that can read a page without reading every row (an ordered index
    /// of its keys) overrides it, so a page costs work and memory in proportion to the
    /// page, not the table.
    fn rows_after(&self, after: Option<&[Value]>, limit: usize) -> Option<Vec<Row>> {
        let _ = (after, limit);
        None
    }

    /// Calls `listener` after every change of the rows held, in change order, on the
    /// writer's task once the change is visible to readers; each call carries the
    /// applied [`Change`] (its position and transaction id) when there was one, so a
    /// change stream needs nothing from the engine. A snapshot restore is reported as
    /// a truncate followed by one new row per restored row.
    ///
    /// The listener must not block: the pipeline waits for it. It stays registered
    /// while the returned handle lives (dropping it unsubscribes) or until the target
    /// closes and drops its listeners, which also drops the listener itself (a stream
    /// fed by it can end there).
    ///
    /// `None` (the default): the target does not report its changes.
    fn subscribe(&self, listener: Arc<RowListener>) -> Option<ListenerHandle> {
        let _ = listener;
        None
    }
}

/// Capability: what operators see of a target (OAM `ListTables`).
pub trait TargetStatus: Send + Sync {
    /// The target's configuration: lookup fields, indexes, an endpoint. Leave secrets
    /// out (OAM also masks keys that look like them).
    fn describe(&self) -> serde_json::Map<String, serde_json::Value>;
}

/// Why a fan-out target drains its clients ([`FanoutControl::drain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DrainReason {
    /// The server is shutting down (`GoAway` reason `DRAINING`).
    Shutdown,
    /// An operator asked for it (`GoAway` reason `ADMIN`).
    Admin,
}

/// Capability: a target that serves downstream clients of its own (the replication
/// fan-out), as OAM sees it: how many are connected, and draining them before a
/// shutdown or on an operator's request.
pub trait FanoutControl: Send + Sync {
    /// The number of clients connected now.
    fn client_count(&self) -> usize;

    /// Whether [`FanoutControl::drain`] was called.
    fn is_draining(&self) -> bool;

    /// Starts draining: every client is told to leave (and may reconnect elsewhere),
    /// the connections are closed at `now + timeout` (with `None`, when their clients
    /// leave), and new ones are refused. Returns `false` when the target was already
    /// draining: the first reason and deadline stay.
    fn drain(&self, reason: DrainReason, timeout: Option<Duration>) -> bool;
}
