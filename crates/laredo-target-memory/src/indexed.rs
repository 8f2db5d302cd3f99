//! [`IndexedTarget`]: a raw-row replica of a table with hash indexes.
//!
//! Rows are stored as compact byte strings ([`crate::codec`]) in a slab; every index is
//! a `HashTable` of slot numbers hashed by the canonical key bytes of the indexed
//! columns ([`crate::index`]), so an index costs a few bytes per row and a row is never
//! stored twice. One `RwLock` covers the slab, the layout and every index
//! ([`crate::store`]): a reader sees each change whole.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use async_trait::async_trait;
use laredo_core::{
    ApplyError, Change, ChangeKind, ColumnDefinition, IndexDefinition, Row, RowAccess,
    SchemaChangeResponse, SnapshotEntry, SnapshotTarget, SyncTarget, TableIdentifier,
    TableSnapshotInfo, TargetError, TargetStatus, Value, primary_key_columns,
};
use parking_lot::RwLock;

use crate::key::{IntoKey, key_bytes};
use crate::listener::{ListenerHandle, Registry};
use crate::store::{Full, Store};

/// The name under which the lookup index is reported by [`IndexedTarget::indexes`] and
/// can be queried with [`IndexedTarget::lookup_all`].
pub const PRIMARY_INDEX: &str = "(primary)";

/// The target type name.
const TYPE_NAME: &str = "indexed-memory";

type RowListener = dyn Fn(Option<&Row>, Option<&Row>) + Send + Sync;

/// A change to report to listeners once the write lock is released.
type Notification = (Option<Row>, Option<Row>);

/// The error of [`IndexedTarget::lookup_all`].
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

/// Statistics of one index (OAM `IndexInfo`).
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

/// Builds an [`IndexedTarget`].
#[derive(Debug, Default)]
#[must_use]
pub struct IndexedTargetBuilder {
    lookup_fields: Vec<String>,
    indexes: Vec<IndexDefinition>,
}

impl IndexedTargetBuilder {
    /// The fields of the unique lookup index behind [`IndexedTarget::lookup`]. Default
    /// (or empty): the table's primary key.
    pub fn lookup_fields(mut self, fields: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.lookup_fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a secondary index, queried with [`IndexedTarget::lookup_all`].
    pub fn index(mut self, index: IndexDefinition) -> Self {
        self.indexes.push(index);
        self
    }

    /// Builds the target. Fields and index names are checked against the table's
    /// columns at `on_init`.
    pub fn build(self) -> Arc<IndexedTarget> {
        Arc::new(IndexedTarget {
            lookup_fields: self.lookup_fields,
            index_defs: self.indexes,
            store: RwLock::new(Store::new()),
            columns: RwLock::new(Vec::new()),
            listeners: Registry::new(),
            rows_read: AtomicU64::new(0),
        })
    }
}

/// A raw-row replica of one table (`indexed-memory`): rows by primary key, a unique
/// lookup index and optional secondary indexes (unique or not).
///
/// Written by the engine through [`SyncTarget`], read from any thread: reads take a
/// shared lock and return copies, and every write changes the rows and all indexes
/// under one exclusive lock, so a reader never sees a change half applied.
///
/// Keys are compared by canonical key bytes ([`laredo_core::Value::write_key`]), so
/// numeric kinds normalise: a lookup by `7` finds a row whose column is `Int64(7)` or
/// `Float64(7.0)`.
///
/// Memory: each row is held once, as one compact byte string, and decoded on read;
/// indexes hold slot numbers. See [`IndexedTarget::heap_size`].
pub struct IndexedTarget {
    lookup_fields: Vec<String>,
    index_defs: Vec<IndexDefinition>,
    store: RwLock<Store>,
    columns: RwLock<Vec<ColumnDefinition>>,
    listeners: Arc<Registry<RowListener>>,
    /// Rows decoded by whole-table reads ([`IndexedTarget::rows_read`]).
    rows_read: AtomicU64,
}

impl std::fmt::Debug for IndexedTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexedTarget")
            .field("lookup_fields", &self.lookup_fields)
            .field("indexes", &self.index_defs)
            .field("count", &self.count())
            .finish()
    }
}

impl IndexedTarget {
    /// Starts building a target.
    pub fn builder() -> IndexedTargetBuilder {
        IndexedTargetBuilder::default()
    }

    /// The row whose lookup fields equal `key`; `None` also when `key` has a different
    /// number of values than there are lookup fields.
    pub fn lookup(&self, key: impl IntoKey) -> Option<Row> {
        let (key, arity) = key_bytes(key);
        let store = self.store.read();
        let index = store.lookup_index();
        if arity != index.fields().len() {
            return None;
        }
        store.find_one(index, &key)
    }

    /// The row whose primary key equals `key`; `None` also when `key` has a different
    /// number of values than the primary key has columns.
    pub fn get(&self, key: impl IntoKey) -> Option<Row> {
        let (key, arity) = key_bytes(key);
        let store = self.store.read();
        if arity != store.key_fields().len() {
            return None;
        }
        store.get(&key)
    }

    /// The rows whose `index` fields equal `key`: 0 or 1 for a unique index, any number
    /// for a non-unique one (order unspecified). [`PRIMARY_INDEX`] names the lookup
    /// index.
    ///
    /// # Errors
    /// [`IndexError::UnknownIndex`] when no index has that name,
    /// [`IndexError::KeyArity`] when `key` has the wrong number of values.
    pub fn lookup_all(&self, index: &str, key: impl IntoKey) -> Result<Vec<Row>, IndexError> {
        let (key, arity) = key_bytes(key);
        let store = self.store.read();
        let found = store
            .index_named(index)
            .ok_or_else(|| IndexError::UnknownIndex(index.to_string()))?;
        if arity != found.fields().len() {
            return Err(IndexError::KeyArity {
                index: index.to_string(),
                expected: found.fields().len(),
                got: arity,
            });
        }
        Ok(store.find(found, &key))
    }

    /// Every row: a copy taken under one read lock (order unspecified).
    pub fn all(&self) -> Vec<Row> {
        let rows = self.store.read().rows();
        self.rows_read
            .fetch_add(rows.len() as u64, AtomicOrdering::Relaxed);
        rows
    }

    /// Up to `limit` rows in primary key order (the sort order of
    /// [`sort_key`](crate::sort_key)) whose key sorts after `after` (the key's values;
    /// `None`: from the first row).
    ///
    /// Cost: the first call builds an ordered index of the keys (O(n log n), under the
    /// write lock, once; the index then costs about the key's size plus 40 bytes per
    /// row, and every write keeps it current). Each call after that reads only the rows
    /// it returns: O(log n + limit), whatever the table's size.
    pub fn rows_in_key_order(&self, after: Option<&[Value]>, limit: usize) -> Vec<Row> {
        let after = after.map(crate::sort_key);
        let store = self.store.upgradable_read();
        let store = if store.is_ordered() {
            parking_lot::RwLockUpgradableReadGuard::downgrade(store)
        } else {
            let mut store = parking_lot::RwLockUpgradableReadGuard::upgrade(store);
            store.enable_order();
            parking_lot::RwLockWriteGuard::downgrade(store)
        };
        let rows = store
            .rows_after(after.as_deref(), limit)
            .expect("the ordered index was just enabled");
        drop(store);
        self.rows_read
            .fetch_add(rows.len() as u64, AtomicOrdering::Relaxed);
        rows
    }

    /// Rows decoded by [`IndexedTarget::all`] and [`IndexedTarget::rows_in_key_order`]
    /// since the target was built: what whole-table reads cost (a figure for tests and
    /// diagnostics).
    pub fn rows_read(&self) -> u64 {
        self.rows_read.load(AtomicOrdering::Relaxed)
    }

    /// The number of rows.
    pub fn count(&self) -> usize {
        self.store.read().len()
    }

    /// Calls `listener(old, new)` after every change: `(None, new)` for an insert of a
    /// new key, `(old, new)` for an update or an insert that replaced a row,
    /// `(old, None)` for a delete of an existing row, `(None, None)` for a truncate. A
    /// snapshot restore is reported as a truncate followed by one insert per row.
    ///
    /// Listeners run on the writer's task once the change is visible to readers (the
    /// write lock is released, so a listener may read the target), in change order.
    /// They must not block: the pipeline waits for them.
    ///
    /// The listener stays registered while the returned handle lives: dropping the
    /// handle or calling [`ListenerHandle::unsubscribe`] removes it, and
    /// [`ListenerHandle::forget`] keeps it for the target's lifetime. `on_close`
    /// removes every listener.
    pub fn listen(
        &self,
        listener: impl Fn(Option<&Row>, Option<&Row>) + Send + Sync + 'static,
    ) -> ListenerHandle {
        self.listeners.add(Arc::new(listener))
    }

    /// Every index with its entry count, the lookup index first as [`PRIMARY_INDEX`].
    /// Empty fields before `on_init` when no lookup fields were configured.
    pub fn indexes(&self) -> Vec<IndexInfo> {
        let store = self.store.read();
        store
            .reported_indexes()
            .map(|(name, index)| IndexInfo {
                name: name.to_string(),
                fields: index.fields().to_vec(),
                unique: index.is_unique(),
                entry_count: index.entry_count(),
            })
            .collect()
    }

    /// The table's columns, as given at `on_init` and updated by schema changes.
    pub fn columns(&self) -> Vec<ColumnDefinition> {
        self.columns.read().clone()
    }

    /// The lookup fields in effect: the configured ones, else (after `on_init`) the
    /// primary key.
    pub fn lookup_fields(&self) -> Vec<String> {
        if !self.lookup_fields.is_empty() {
            return self.lookup_fields.clone();
        }
        self.store.read().lookup_index().fields().to_vec()
    }

    /// Approximate bytes this target has allocated for its rows: the slab, the encoded
    /// rows and the index tables (not the allocator's own per-block overhead).
    pub fn heap_size(&self) -> usize {
        self.store.read().heap_size()
    }

    fn notify(&self, notifications: &[Notification]) {
        if notifications.is_empty() {
            return;
        }
        let listeners = self.listeners.snapshot();
        for (old, new) in notifications {
            for listener in &listeners {
                listener(old.as_ref(), new.as_ref());
            }
        }
    }

    /// Upserts `rows` under one write lock, then notifies; with `restore`, the store is
    /// cleared first (in the same lock).
    fn upsert_rows(&self, rows: &[Row], restore: bool) -> Result<(), TargetError> {
        let listening = !self.listeners.is_empty();
        let mut notifications = Vec::new();
        let result = {
            let mut store = self.store.write();
            ensure_configured(&store)?;
            if restore {
                store.clear();
                if listening {
                    notifications.push((None, None));
                }
            }
            rows.iter().try_for_each(|row| {
                let old = store.upsert(row).map_err(full)?;
                if listening {
                    let old = old.and_then(|bytes| store.decode(&bytes));
                    notifications.push((old, Some(row.clone())));
                }
                Ok(())
            })
        };
        // Rows applied before a failure are visible: report them too.
        self.notify(&notifications);
        result
    }

    fn check_fields(&self, columns: &[ColumnDefinition]) -> Vec<String> {
        let names: HashSet<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        let mut problems = Vec::new();
        for field in &self.lookup_fields {
            if !names.contains(field.as_str()) {
                problems.push(format!("lookup field {field} not found in columns"));
            }
        }
        let mut seen = HashSet::new();
        for index in &self.index_defs {
            let name = &index.name;
            if name == PRIMARY_INDEX {
                problems.push(format!("index name {PRIMARY_INDEX} is reserved"));
            } else if !seen.insert(name.as_str()) {
                problems.push(format!("index {name} is defined more than once"));
            }
            if index.fields.is_empty() {
                problems.push(format!("index {name} has no fields"));
            }
            for field in &index.fields {
                if !names.contains(field.as_str()) {
                    problems.push(format!("index {name} field {field} not found in columns"));
                }
            }
        }
        problems
    }
}

fn ensure_configured(store: &Store) -> Result<(), TargetError> {
    if store.is_configured() {
        Ok(())
    } else {
        Err(TargetError::new(
            "indexed-memory target is not initialised: on_init was not called",
        ))
    }
}

fn full(_: Full) -> TargetError {
    TargetError::new("indexed-memory target is full: no row slot left")
}

#[async_trait]
impl SyncTarget for IndexedTarget {
    fn type_name(&self) -> &str {
        TYPE_NAME
    }

    /// Checks the lookup and index fields against `columns` (every problem is reported
    /// in one error), takes the primary key as the row key (the lookup fields when the
    /// table has none) and re-keys any rows already held.
    async fn on_init(
        &self,
        table: &TableIdentifier,
        columns: &[ColumnDefinition],
    ) -> Result<(), TargetError> {
        let mut problems = self.check_fields(columns);
        let primary_key: Vec<String> = primary_key_columns(columns)
            .into_iter()
            .map(str::to_string)
            .collect();
        let key_fields = if primary_key.is_empty() {
            self.lookup_fields.clone()
        } else {
            primary_key
        };
        if key_fields.is_empty() {
            problems.push(format!(
                "table {table} has no primary key and no lookup_fields are configured"
            ));
        }
        if !problems.is_empty() {
            return Err(TargetError::new(problems.join("; ")));
        }
        let lookup = (!self.lookup_fields.is_empty()).then(|| self.lookup_fields.clone());
        self.store
            .write()
            .configure(key_fields, lookup, &self.index_defs);
        *self.columns.write() = columns.to_vec();
        Ok(())
    }

    /// Takes the write lock once for the whole batch.
    async fn on_baseline(&self, _table: &TableIdentifier, rows: &[Row]) -> Result<(), TargetError> {
        self.upsert_rows(rows, false)
    }

    /// Applies the batch under one write lock, then notifies the listeners of every
    /// change in order. An insert replaces the row of its key. An update replaces the
    /// row with the identity's key (the new row's key when there is no identity); when
    /// the key changed, the old row goes and the new one is stored under its key,
    /// replacing any row already there, which is reported as deleted first.
    async fn apply(&self, _table: &TableIdentifier, batch: &[Change]) -> Result<(), ApplyError> {
        let listening = !self.listeners.is_empty();
        let mut notifications = Vec::new();
        let result = {
            let mut store = self.store.write();
            batch.iter().enumerate().try_for_each(|(n, change)| {
                apply_change(&mut store, change, listening, &mut notifications)
                    .map_err(|e| ApplyError::at(n, e))
            })
        };
        // Changes applied before a failure are visible: report them too.
        self.notify(&notifications);
        result
    }

    /// `CONTINUE` when columns were only added, or when the dropped or retyped columns
    /// are neither in the primary key nor indexed (dropped columns disappear from the
    /// rows read from then on); `RE_BASELINE` when a primary key, lookup or indexed
    /// column was dropped or changed type, or the primary key changed.
    async fn on_schema_change(
        &self,
        _table: &TableIdentifier,
        old: &[ColumnDefinition],
        new: &[ColumnDefinition],
    ) -> SchemaChangeResponse {
        if primary_key_columns(old) != primary_key_columns(new) {
            return SchemaChangeResponse::re_baseline(format!(
                "primary key changed from ({}) to ({})",
                primary_key_columns(old).join(", "),
                primary_key_columns(new).join(", ")
            ));
        }
        let mut store = self.store.write();
        let indexed: HashSet<&str> = store
            .indexed_fields()
            .map(String::as_str)
            .chain(self.lookup_fields.iter().map(String::as_str))
            .chain(
                self.index_defs
                    .iter()
                    .flat_map(|d| d.fields.iter())
                    .map(String::as_str),
            )
            .chain(primary_key_columns(old))
            .collect();
        let mut dropped = Vec::new();
        for column in old {
            let name = column.name.as_str();
            match new.iter().find(|c| c.name == column.name) {
                None if indexed.contains(name) => {
                    return SchemaChangeResponse::re_baseline(format!(
                        "indexed column {name} was dropped"
                    ));
                }
                None => dropped.push(name),
                Some(changed)
                    if changed.type_name != column.type_name && indexed.contains(name) =>
                {
                    return SchemaChangeResponse::re_baseline(format!(
                        "indexed column {name} changed type from {} to {}",
                        column.type_name, changed.type_name
                    ));
                }
                Some(_) => {}
            }
        }
        store.drop_columns(&dropped);
        drop(store);
        *self.columns.write() = new.to_vec();
        SchemaChangeResponse::proceed()
    }

    /// Removes every listener; the rows stay readable.
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

    fn status(&self) -> Option<&dyn TargetStatus> {
        Some(self)
    }
}

#[async_trait]
impl SnapshotTarget for IndexedTarget {
    async fn export_snapshot(&self) -> Result<Vec<SnapshotEntry>, TargetError> {
        Ok(self
            .all()
            .into_iter()
            .map(|row| SnapshotEntry { row })
            .collect())
    }

    /// Clears the target and loads `entries`, under one write lock. A target not
    /// initialised yet is first initialised with the snapshot's columns.
    async fn restore_snapshot(
        &self,
        info: &TableSnapshotInfo,
        entries: Vec<SnapshotEntry>,
    ) -> Result<(), TargetError> {
        if !self.store.read().is_configured() {
            SyncTarget::on_init(self, &info.table, &info.columns).await?;
        }
        let rows: Vec<Row> = entries.into_iter().map(|e| e.row).collect();
        self.upsert_rows(&rows, true)
    }

    fn supports_consistent_snapshot(&self) -> bool {
        true
    }
}

impl RowAccess for IndexedTarget {
    fn get(&self, identity: &Row) -> Option<Row> {
        let store = self.store.read();
        if !store.is_configured() {
            return None;
        }
        store.get(&identity.key_bytes(store.key_fields()))
    }

    fn count(&self) -> u64 {
        self.store.read().len() as u64
    }

    fn scan(&self) -> Vec<Row> {
        self.all()
    }
}

impl TargetStatus for IndexedTarget {
    /// `lookup_fields` (the configured ones, else the key in use; empty before
    /// `on_init`) and the configured `indexes` (`name`, `fields`, `unique`).
    fn describe(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::{Value as J, json};
        let indexes: Vec<J> = self
            .index_defs
            .iter()
            .map(|i| json!({"name": i.name, "fields": i.fields, "unique": i.unique}))
            .collect();
        let mut map = serde_json::Map::new();
        map.insert("lookup_fields".into(), J::from(self.lookup_fields()));
        map.insert("indexes".into(), J::Array(indexes));
        map
    }
}

/// Applies one change to the store (the caller holds the write lock), collecting the
/// listener notifications when `listening`.
fn apply_change(
    store: &mut Store,
    change: &Change,
    listening: bool,
    notifications: &mut Vec<Notification>,
) -> Result<(), TargetError> {
    match &change.kind {
        ChangeKind::Insert { row } => {
            ensure_configured(store)?;
            let old = store.upsert(row).map_err(full)?;
            if listening {
                let old = old.and_then(|bytes| store.decode(&bytes));
                notifications.push((old, Some(row.clone())));
            }
        }
        ChangeKind::Update { row, identity } => {
            ensure_configured(store)?;
            let new_key = row.key_bytes(store.key_fields());
            let moved = identity
                .as_ref()
                .map(|i| i.key_bytes(store.key_fields()))
                .filter(|old_key| *old_key != new_key)
                .and_then(|old_key| store.remove(&old_key));
            let replaced = store.upsert(row).map_err(full)?;
            if listening {
                let mut old = moved.and_then(|b| store.decode(&b));
                let replaced = replaced.and_then(|b| store.decode(&b));
                if old.is_some() && replaced.is_some() {
                    notifications.push((replaced, None));
                } else {
                    old = old.or(replaced);
                }
                notifications.push((old, Some(row.clone())));
            }
        }
        ChangeKind::Delete { identity } => {
            ensure_configured(store)?;
            let key = identity.key_bytes(store.key_fields());
            let removed = store.remove(&key);
            if listening && let Some(old) = removed.and_then(|b| store.decode(&b)) {
                notifications.push((Some(old), None));
            }
        }
        ChangeKind::Truncate => {
            store.clear();
            if listening {
                notifications.push((None, None));
            }
        }
    }
    Ok(())
}
