//! [`CompiledTarget`]: typed domain objects compiled from rows.
//!
//! Each row goes through the filter and the user's compiler; the object is stored as
//! an `Arc<T>` beside the original row (kept for snapshot export), keyed by the
//! canonical key bytes of the key fields. The filter and the compiler run before the
//! write lock is taken, so a slow compiler never blocks readers.
//!
//! The target holds an object for a key exactly when the latest row with that key
//! passes the filter and compiles: a row that fails either (on insert, update or
//! restore) leaves no object, and removes the object its key or identity had.

use std::collections::HashSet;
use std::fmt::Display;
use std::sync::Arc;

use async_trait::async_trait;
use hashbrown::HashMap;
use laredo_core::{
    ApplyError, Change, ChangeKind, ColumnDefinition, ListenerHandle, Listeners, Row, RowAccess,
    SchemaChangeResponse, SnapshotEntry, SnapshotTarget, SyncTarget, TableIdentifier,
    TableSnapshotInfo, TargetError, Value, primary_key_columns,
};
use laredo_index::IntoKey;
use parking_lot::RwLock;

/// The target type name.
const TYPE_NAME: &str = "compiled-memory";

type Compiler<T> = dyn Fn(&Row) -> Result<T, String> + Send + Sync;
type RowFilter = dyn Fn(&Row) -> bool + Send + Sync;
/// A listener of the objects, told the applied change behind each call when there is
/// one ([`CompiledTarget::listen_changes`]).
type ObjectListener<T> = dyn Fn(Option<&Arc<T>>, Option<&Arc<T>>, Option<&Change>) + Send + Sync;

/// A change to report to listeners once the write lock is released.
type Notice<T> = (Option<Arc<T>>, Option<Arc<T>>);

/// The canonical key bytes of `key` and its number of values.
fn key_bytes(key: impl IntoKey) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(24);
    let arity = key.into_key_bytes(&mut out);
    (out, arity)
}

/// What the filter and the compiler made of a row.
enum Outcome<T> {
    Object(Arc<T>),
    Filtered,
    Failed(String),
}

/// Builds a [`CompiledTarget`].
#[must_use]
pub struct CompiledTargetBuilder<T> {
    compiler: Box<Compiler<T>>,
    key_fields: Vec<String>,
    filter: Option<Box<RowFilter>>,
}

impl<T> std::fmt::Debug for CompiledTargetBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledTargetBuilder")
            .field("key_fields", &self.key_fields)
            .field("filter", &self.filter.is_some())
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> CompiledTargetBuilder<T> {
    /// The columns forming the object key, in key order. Default (or empty): the
    /// table's primary key.
    pub fn key_fields(mut self, fields: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.key_fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Only rows for which `filter` returns true become objects.
    pub fn filter(mut self, filter: impl Fn(&Row) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Box::new(filter));
        self
    }

    /// Builds the target (key fields are checked against the columns at `on_init`).
    pub fn build(self) -> Arc<CompiledTarget<T>> {
        Arc::new(CompiledTarget {
            compiler: self.compiler,
            configured_keys: self.key_fields,
            filter: self.filter,
            state: RwLock::new(State {
                key_fields: Vec::new(),
                entries: HashMap::new(),
            }),
            listeners: Listeners::new(),
        })
    }
}

struct Entry<T> {
    object: Arc<T>,
    row: Row,
}

struct State<T> {
    /// The key fields in effect (empty until `on_init`).
    key_fields: Vec<String>,
    entries: HashMap<Vec<u8>, Entry<T>>,
}

impl<T> State<T> {
    fn ensure_configured(&self) -> Result<(), TargetError> {
        if self.key_fields.is_empty() {
            Err(TargetError::new(
                "compiled-memory target is not initialised: on_init was not called",
            ))
        } else {
            Ok(())
        }
    }

    /// Applies one row's outcome; `identity` is the update's old row. Pushes the
    /// changes to report, and returns the error and the row's key when compilation
    /// failed.
    fn put(
        &mut self,
        row: &Row,
        identity: Option<&Row>,
        outcome: Outcome<T>,
        changes: &mut Vec<Notice<T>>,
    ) -> Option<(String, String)> {
        let key = row.key_bytes(&self.key_fields);
        let moved = identity
            .map(|i| i.key_bytes(&self.key_fields))
            .filter(|old_key| *old_key != key)
            .and_then(|old_key| self.entries.remove(&old_key));
        let failure = match outcome {
            Outcome::Object(object) => {
                self.store(key, row, object, moved, changes);
                return None;
            }
            Outcome::Filtered => None,
            Outcome::Failed(error) => Some((error, describe_key(row, &self.key_fields))),
        };
        // The row has no object: whatever stood for it goes.
        let gone = self.entries.remove(&key);
        changes.extend(
            moved
                .into_iter()
                .chain(gone)
                .map(|e| (Some(e.object), None)),
        );
        failure
    }

    /// Stores `object` under `key`; `moved` is the entry the update's identity had.
    fn store(
        &mut self,
        key: Vec<u8>,
        row: &Row,
        object: Arc<T>,
        moved: Option<Entry<T>>,
        changes: &mut Vec<Notice<T>>,
    ) {
        let replaced = self.entries.insert(
            key,
            Entry {
                object: Arc::clone(&object),
                row: row.clone(),
            },
        );
        match (moved, replaced) {
            (Some(moved), Some(replaced)) => {
                // A key change onto a key that held an object: that one goes first.
                changes.push((Some(replaced.object), None));
                changes.push((Some(moved.object), Some(object)));
            }
            (moved, replaced) => changes.push((moved.or(replaced).map(|e| e.object), Some(object))),
        }
    }
}

/// `id=7, tenant=a`: a row's key for log messages.
fn describe_key(row: &Row, key_fields: &[String]) -> String {
    key_fields
        .iter()
        .map(|f| format!("{f}={}", row.get(f).unwrap_or(&Value::Null)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A table replica of typed objects (`compiled-memory`): each row goes through an
/// optional filter and a compiler function `Fn(&Row) -> Result<T, E>`; objects are
/// keyed by the key fields.
///
/// A row whose compilation fails is skipped and logged (`warn`, with its key). Reads
/// take a shared lock and hand out `Arc<T>` clones.
pub struct CompiledTarget<T> {
    compiler: Box<Compiler<T>>,
    configured_keys: Vec<String>,
    filter: Option<Box<RowFilter>>,
    state: RwLock<State<T>>,
    listeners: Arc<Listeners<ObjectListener<T>>>,
}

impl<T> std::fmt::Debug for CompiledTarget<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledTarget")
            .field("key_fields", &self.configured_keys)
            .field("filter", &self.filter.is_some())
            .field("count", &self.state.read().entries.len())
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> CompiledTarget<T> {
    /// Starts building a target that compiles rows with `compiler`.
    pub fn builder<E: Display>(
        compiler: impl Fn(&Row) -> Result<T, E> + Send + Sync + 'static,
    ) -> CompiledTargetBuilder<T> {
        CompiledTargetBuilder {
            compiler: Box::new(move |row: &Row| compiler(row).map_err(|e| e.to_string())),
            key_fields: Vec::new(),
            filter: None,
        }
    }

    /// The object whose key fields equal `key`; `None` also when `key` has a different
    /// number of values than there are key fields.
    pub fn get(&self, key: impl IntoKey) -> Option<Arc<T>> {
        let (key, arity) = key_bytes(key);
        let state = self.state.read();
        if arity != state.key_fields.len() {
            return None;
        }
        state.entries.get(&key).map(|e| Arc::clone(&e.object))
    }

    /// Every object (order unspecified).
    pub fn all(&self) -> Vec<Arc<T>> {
        self.state
            .read()
            .entries
            .values()
            .map(|e| Arc::clone(&e.object))
            .collect()
    }

    /// The number of objects.
    pub fn count(&self) -> usize {
        self.state.read().entries.len()
    }

    /// The key fields in effect: the configured ones, else (after `on_init`) the
    /// primary key.
    pub fn key_fields(&self) -> Vec<String> {
        if !self.configured_keys.is_empty() {
            return self.configured_keys.clone();
        }
        self.state.read().key_fields.clone()
    }

    /// Calls `listener(old, new)` after every change of an object: `(None, new)` for a
    /// new object, `(old, new)` for a replaced one, `(old, None)` for a removed one
    /// (deleted, or its row left the filter or stopped compiling), `(None, None)` for a
    /// truncate. A snapshot restore is reported as a truncate followed by one new
    /// object per row.
    ///
    /// As [`IndexedTarget::listen`](crate::IndexedTarget::listen): listeners run on the
    /// writer's task once the change is visible, in order, and must not block; the
    /// listener stays registered until the handle is dropped or unsubscribed, or
    /// `on_close`.
    pub fn listen(
        &self,
        listener: impl Fn(Option<&Arc<T>>, Option<&Arc<T>>) + Send + Sync + 'static,
    ) -> ListenerHandle {
        self.listen_changes(move |old, new, _| listener(old, new))
    }

    /// As [`CompiledTarget::listen`], and each call also gets the applied change that
    /// made it (its source position and transaction id), `None` for baseline rows and a
    /// snapshot restore.
    pub fn listen_changes(
        &self,
        listener: impl Fn(Option<&Arc<T>>, Option<&Arc<T>>, Option<&Change>) + Send + Sync + 'static,
    ) -> ListenerHandle {
        self.listeners.add(Arc::new(listener))
    }

    /// Filters and compiles `row` (outside any lock).
    fn outcome(&self, row: &Row) -> Outcome<T> {
        if self.filter.as_ref().is_some_and(|f| !f(row)) {
            return Outcome::Filtered;
        }
        match (self.compiler)(row) {
            Ok(object) => Outcome::Object(Arc::new(object)),
            Err(error) => Outcome::Failed(error),
        }
    }

    /// Applies `rows` (with the update identity, if any) under one write lock, clearing
    /// first when `restore`; then logs compile failures and notifies.
    fn put_rows(
        &self,
        rows: &[Row],
        identity: Option<&Row>,
        restore: bool,
    ) -> Result<(), TargetError> {
        let outcomes: Vec<Outcome<T>> = rows.iter().map(|row| self.outcome(row)).collect();
        let mut changes = Vec::new();
        let mut failures = Vec::new();
        {
            let mut state = self.state.write();
            state.ensure_configured()?;
            if restore {
                state.entries.clear();
                changes.push((None, None));
            }
            for (row, outcome) in rows.iter().zip(outcomes) {
                failures.extend(state.put(row, identity, outcome, &mut changes));
            }
        }
        for (error, key) in failures {
            tracing::warn!(%error, %key, "row skipped: compile failed");
        }
        self.notify(&changes, &[], &[]);
        Ok(())
    }

    /// Calls the listeners for each of `changes`; `origins[n]`, when there, is the index
    /// in `batch` of the change that made notice `n`.
    fn notify(&self, changes: &[Notice<T>], origins: &[usize], batch: &[Change]) {
        if changes.is_empty() || self.listeners.is_empty() {
            return;
        }
        let listeners = self.listeners.snapshot();
        for (n, (old, new)) in changes.iter().enumerate() {
            let change = origins.get(n).and_then(|&at| batch.get(at));
            for listener in &listeners {
                listener(old.as_ref(), new.as_ref(), change);
            }
        }
    }
}

#[async_trait]
impl<T: Send + Sync + 'static> SyncTarget for CompiledTarget<T> {
    fn type_name(&self) -> &str {
        TYPE_NAME
    }

    /// Checks the key fields against `columns` (default: the primary key) and re-keys
    /// the objects already held.
    async fn on_init(
        &self,
        table: &TableIdentifier,
        columns: &[ColumnDefinition],
    ) -> Result<(), TargetError> {
        let names: HashSet<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        let mut problems: Vec<String> = self
            .configured_keys
            .iter()
            .filter(|f| !names.contains(f.as_str()))
            .map(|f| format!("key field {f} not found in columns"))
            .collect();
        let key_fields = if self.configured_keys.is_empty() {
            primary_key_columns(columns)
                .into_iter()
                .map(str::to_string)
                .collect()
        } else {
            self.configured_keys.clone()
        };
        if key_fields.is_empty() {
            problems.push(format!(
                "table {table} has no primary key and no key_fields are configured"
            ));
        }
        if !problems.is_empty() {
            return Err(TargetError::new(problems.join("; ")));
        }
        let mut state = self.state.write();
        if state.key_fields != key_fields {
            let entries = std::mem::take(&mut state.entries);
            state.entries = entries
                .into_values()
                .map(|e| (e.row.key_bytes(&key_fields), e))
                .collect();
            state.key_fields = key_fields;
        }
        Ok(())
    }

    /// Compiles the batch, then takes the write lock once for it.
    async fn on_baseline(&self, _table: &TableIdentifier, rows: &[Row]) -> Result<(), TargetError> {
        self.put_rows(rows, None, false)
    }

    /// Compiles the batch's new rows first, then applies every change under one write
    /// lock and notifies in order. When an update's new row fails the filter (or to
    /// compile), the object of its identity (or its key) is removed: `(old, None)`.
    /// Otherwise the object is stored under the new key, the identity's key removed
    /// when it differs: `(old?, new)`.
    async fn apply(&self, _table: &TableIdentifier, batch: &[Change]) -> Result<(), ApplyError> {
        let mut outcomes: Vec<Outcome<T>> = batch
            .iter()
            .filter_map(Change::row)
            .map(|row| self.outcome(row))
            .collect();
        outcomes.reverse();
        let mut notices = Vec::new();
        // Per notice: the index of its change in the batch.
        let mut origins = Vec::new();
        let mut failures = Vec::new();
        {
            let mut state = self.state.write();
            if batch
                .iter()
                .any(|c| !matches!(c.kind, ChangeKind::Truncate))
            {
                // Checked before anything is applied: a failure blames no later change.
                state.ensure_configured()?;
            }
            for (at, change) in batch.iter().enumerate() {
                match &change.kind {
                    ChangeKind::Insert { row }
                    | ChangeKind::Update {
                        row,
                        identity: None,
                    } => {
                        let outcome = outcomes.pop().expect("one outcome per new row");
                        failures.extend(state.put(row, None, outcome, &mut notices));
                    }
                    ChangeKind::Update {
                        row,
                        identity: Some(identity),
                    } => {
                        let outcome = outcomes.pop().expect("one outcome per new row");
                        failures.extend(state.put(row, Some(identity), outcome, &mut notices));
                    }
                    ChangeKind::Delete { identity } => {
                        let key = identity.key_bytes(&state.key_fields);
                        if let Some(entry) = state.entries.remove(&key) {
                            notices.push((Some(entry.object), None));
                        }
                    }
                    ChangeKind::Truncate => {
                        state.entries = HashMap::new();
                        notices.push((None, None));
                    }
                }
                origins.resize(notices.len(), at);
            }
        }
        for (error, key) in failures {
            tracing::warn!(%error, %key, "row skipped: compile failed");
        }
        self.notify(&notices, &origins, batch);
        Ok(())
    }

    /// Always `RE_BASELINE`: the compiler may depend on any column.
    async fn on_schema_change(
        &self,
        _table: &TableIdentifier,
        _old: &[ColumnDefinition],
        _new: &[ColumnDefinition],
    ) -> SchemaChangeResponse {
        SchemaChangeResponse::re_baseline("compiled objects are rebuilt from the new columns")
    }

    /// Removes every listener; the objects stay readable.
    async fn on_close(&self, _table: &TableIdentifier) -> Result<(), TargetError> {
        self.listeners.clear();
        Ok(())
    }

    fn snapshots(&self) -> Option<&dyn SnapshotTarget> {
        Some(self)
    }

    fn rows(&self) -> Option<&dyn RowAccess> {
        Some(self)
    }
}

#[async_trait]
impl<T: Send + Sync + 'static> SnapshotTarget for CompiledTarget<T> {
    /// The original rows of the objects.
    async fn export_snapshot(&self) -> Result<Vec<SnapshotEntry>, TargetError> {
        Ok(self
            .state
            .read()
            .entries
            .values()
            .map(|e| SnapshotEntry { row: e.row.clone() })
            .collect())
    }

    /// Clears the target and recompiles every row through the filter, applied under one
    /// write lock. A target not initialised yet is first initialised with the
    /// snapshot's columns.
    async fn restore_snapshot(
        &self,
        info: &TableSnapshotInfo,
        entries: Vec<SnapshotEntry>,
    ) -> Result<(), TargetError> {
        if self.state.read().ensure_configured().is_err() {
            SyncTarget::on_init(self, &info.table, &info.columns).await?;
        }
        let rows: Vec<Row> = entries.into_iter().map(|e| e.row).collect();
        self.put_rows(&rows, None, true)
    }

    fn supports_consistent_snapshot(&self) -> bool {
        true
    }
}

impl<T: Send + Sync + 'static> RowAccess for CompiledTarget<T> {
    /// The original row of the object held for `identity`'s key.
    fn get(&self, identity: &Row) -> Option<Row> {
        let state = self.state.read();
        let key = identity.key_bytes(&state.key_fields);
        state.entries.get(&key).map(|e| e.row.clone())
    }

    fn count(&self) -> u64 {
        self.state.read().entries.len() as u64
    }

    /// The original rows of the objects held.
    fn scan(&self) -> Vec<Row> {
        self.state
            .read()
            .entries
            .values()
            .map(|e| e.row.clone())
            .collect()
    }

    /// The key fields in effect ([`CompiledTarget::key_fields`]).
    fn key_fields(&self) -> Vec<String> {
        CompiledTarget::key_fields(self)
    }
}
