//! [`IndexedRows`]: a table's rows with hash indexes, and the listeners of their changes.
//!
//! Rows are stored as compact byte strings ([`crate::codec`]) in a slab; every index is
//! a `HashTable` of slot numbers hashed by the canonical key bytes of the indexed
//! columns ([`crate::index`]), so an index costs a few bytes per row and a row is never
//! stored twice. One `RwLock` covers the slab, the layout and every index
//! ([`crate::store`]): a reader sees each change whole.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use laredo_core::{
    Change, ChangeKind, ColumnDefinition, IndexDefinition, IndexError, IndexInfo, ListenerHandle,
    Listeners, PRIMARY_INDEX, Row, RowAccess, RowChange, RowListener, SchemaChangeResponse,
    TableIdentifier, Value, primary_key_columns,
};
use parking_lot::RwLock;

use crate::key::{IntoKey, key_bytes};
use crate::store::{Full, Store};

/// A change to report to listeners once the write lock is released: old row, new row,
/// and the index in its batch of the change that made it (`None`: baseline rows, a
/// restore).
type Notification = (Option<Row>, Option<Row>, Option<usize>);

/// Why [`IndexedRows`] refused a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A row arrived before [`IndexedRows::configure`] told the rows their key.
    #[error("not initialised: configure was not called")]
    NotConfigured,
    /// The slab holds `u32::MAX - 1` rows and the row is new.
    #[error("no row slot left")]
    Full,
    /// The columns given to [`IndexedRows::configure`] do not fit the lookup fields and
    /// indexes; every problem, joined by `; `.
    #[error("{}", .problems.join("; "))]
    Columns {
        /// One message per problem (`lookup field mail not found in columns`).
        problems: Vec<String>,
    },
}

/// A table's rows (a raw-row replica) keyed by the primary key, with a unique lookup
/// index and optional secondary indexes (unique or not), and listeners called after
/// each change: the store of laredo-target-memory's `IndexedTarget` and of
/// laredo-client-fanout's replica.
///
/// Read from any thread: reads take a shared lock and return copies, and every write
/// changes the rows and all indexes under one exclusive lock, so a reader never sees a
/// change half applied. Writes come from one writer at a time (the engine's pipeline
/// task, the client's session).
///
/// Keys are compared by canonical key bytes ([`laredo_core::Value::write_key`]), so
/// numeric kinds normalise: a lookup by `7` finds a row whose column is `Int64(7)` or
/// `Float64(7.0)`.
///
/// Memory: each row is held once, as one compact byte string, and decoded on read;
/// indexes hold slot numbers. See [`IndexedRows::heap_size`].
///
/// ```
/// use laredo_core::{Change, ColumnDefinition, IndexDefinition, row, table};
/// use laredo_index::IndexedRows;
///
/// let rows = IndexedRows::new(vec![], vec![IndexDefinition::new("by_team", ["team"], false)]);
/// let columns = [
///     ColumnDefinition::new("id", "int8").primary_key(1),
///     ColumnDefinition::new("team", "text"),
/// ];
/// rows.configure(&table("public", "users"), &columns).expect("columns fit");
/// rows.apply(&[
///     Change::insert(row! {"id" => 1, "team" => "red"}),
///     Change::insert(row! {"id" => 2, "team" => "red"}),
/// ]).expect("applied");
/// assert_eq!(rows.get(2), Some(row! {"id" => 2, "team" => "red"}));
/// assert_eq!(rows.lookup_all("by_team", "red").expect("known index").len(), 2);
/// ```
pub struct IndexedRows {
    lookup_fields: Vec<String>,
    index_defs: Vec<IndexDefinition>,
    store: RwLock<Store>,
    listeners: Arc<Listeners<RowListener>>,
    /// Rows decoded by whole-table reads ([`IndexedRows::rows_read`]).
    rows_read: AtomicU64,
}

impl std::fmt::Debug for IndexedRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexedRows")
            .field("lookup_fields", &self.lookup_fields)
            .field("indexes", &self.index_defs)
            .field("count", &self.count())
            .finish()
    }
}

impl IndexedRows {
    /// Empty rows with the unique lookup index over `lookup_fields` (empty: the
    /// table's primary key) and the secondary `indexes`; fields and index names are
    /// checked against the table's columns by [`IndexedRows::configure`].
    pub fn new(lookup_fields: Vec<String>, indexes: Vec<IndexDefinition>) -> Self {
        Self {
            lookup_fields,
            index_defs: indexes,
            store: RwLock::new(Store::new()),
            listeners: Listeners::new(),
            rows_read: AtomicU64::new(0),
        }
    }

    /// The lookup fields as configured (empty: the primary key).
    pub fn configured_lookup_fields(&self) -> &[String] {
        &self.lookup_fields
    }

    /// The secondary indexes as configured.
    pub fn index_definitions(&self) -> &[IndexDefinition] {
        &self.index_defs
    }

    /// Takes the table's columns: checks the lookup and index fields against them
    /// (every problem is reported in one error), takes the primary key as the row key
    /// (the lookup fields when the table has none) and re-keys any rows already held.
    ///
    /// # Errors
    /// [`Error::Columns`] listing every field or index that does not fit.
    pub fn configure(
        &self,
        table: &TableIdentifier,
        columns: &[ColumnDefinition],
    ) -> Result<(), Error> {
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
            return Err(Error::Columns { problems });
        }
        let lookup = (!self.lookup_fields.is_empty()).then(|| self.lookup_fields.clone());
        self.store
            .write()
            .configure(key_fields, lookup, &self.index_defs);
        Ok(())
    }

    /// Whether [`IndexedRows::configure`] succeeded once.
    pub fn is_configured(&self) -> bool {
        self.store.read().is_configured()
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

    /// Rows decoded by [`IndexedRows::all`] and [`IndexedRows::rows_in_key_order`]
    /// since the rows were created: what whole-table reads cost (a figure for tests and
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
    /// restore ([`IndexedRows::restore`]) is reported as a truncate followed by one
    /// insert per row. [`RowAccess::subscribe`] registers a listener that also learns
    /// the change's position and transaction id.
    ///
    /// Listeners run on the writer's task once the change is visible to readers (the
    /// write lock is released, so a listener may read the rows), in change order.
    /// They must not block: the writer waits for them.
    ///
    /// The listener stays registered while the returned handle lives: dropping the
    /// handle or calling [`ListenerHandle::unsubscribe`] removes it, and
    /// [`ListenerHandle::forget`] keeps it until [`IndexedRows::remove_listeners`].
    pub fn listen(
        &self,
        listener: impl Fn(Option<&Row>, Option<&Row>) + Send + Sync + 'static,
    ) -> ListenerHandle {
        self.listeners.add(Arc::new(move |change: &RowChange<'_>| {
            listener(change.old, change.new);
        }))
    }

    /// Removes every listener (a target's close); the rows stay readable.
    pub fn remove_listeners(&self) {
        self.listeners.clear();
    }

    /// Every index with its entry count, the lookup index first as [`PRIMARY_INDEX`].
    /// Empty fields before [`IndexedRows::configure`] when no lookup fields were
    /// configured.
    pub fn indexes(&self) -> Vec<IndexInfo> {
        let store = self.store.read();
        store
            .reported_indexes()
            .map(|(name, index)| {
                IndexInfo::new(
                    name,
                    index.fields().to_vec(),
                    index.is_unique(),
                    index.entry_count(),
                )
            })
            .collect()
    }

    /// The lookup fields in effect: the configured ones, else (once configured) the
    /// primary key.
    pub fn lookup_fields(&self) -> Vec<String> {
        if !self.lookup_fields.is_empty() {
            return self.lookup_fields.clone();
        }
        self.store.read().lookup_index().fields().to_vec()
    }

    /// The fields rows are keyed by: the primary key, else the lookup fields; empty
    /// until configured.
    pub fn key_fields(&self) -> Vec<String> {
        self.store.read().key_fields().to_vec()
    }

    /// Approximate bytes allocated for the rows: the slab, the encoded rows and the
    /// index tables (not the allocator's own per-block overhead).
    pub fn heap_size(&self) -> usize {
        self.store.read().heap_size()
    }

    /// Stores `rows` (baseline or snapshot rows: each replaces the row of its key)
    /// under one write lock, then notifies.
    ///
    /// # Errors
    /// [`Error::NotConfigured`], or [`Error::Full`] after the rows before the one that
    /// did not fit were stored (and reported).
    pub fn load(&self, rows: &[Row]) -> Result<(), Error> {
        self.upsert_rows(rows, false)
    }

    /// Replaces every row with `rows` under one write lock (a snapshot restore), then
    /// notifies a truncate and one insert per row.
    ///
    /// # Errors
    /// As [`IndexedRows::load`].
    pub fn restore(&self, rows: &[Row]) -> Result<(), Error> {
        self.upsert_rows(rows, true)
    }

    /// Applies `batch` in order under one write lock, then notifies the listeners of
    /// every change in order. An insert replaces the row of its key. An update replaces
    /// the row with the identity's key (the new row's key when there is no identity);
    /// when the key changed, the old row goes and the new one is stored under its key,
    /// replacing any row already there, which is reported as deleted first. A delete of
    /// a missing key changes nothing and is not reported.
    ///
    /// # Errors
    /// The number of changes applied and why the next one failed
    /// ([`Error::NotConfigured`], [`Error::Full`]); the changes before it are applied
    /// and reported.
    pub fn apply(&self, batch: &[Change]) -> Result<(), (usize, Error)> {
        let listening = !self.listeners.is_empty();
        let mut notifications = Vec::new();
        let result = {
            let mut store = self.store.write();
            batch.iter().enumerate().try_for_each(|(n, change)| {
                apply_change(&mut store, n, change, listening, &mut notifications)
                    .map_err(|e| (n, e))
            })
        };
        // Changes applied before a failure are visible: report them too.
        self.notify(&notifications, batch);
        result
    }

    /// Takes a column change: `CONTINUE` when columns were only added, or when the
    /// dropped or retyped columns are neither in the key nor indexed (dropped columns
    /// disappear from the rows read from then on); `RE_BASELINE` when a key, lookup or
    /// indexed column was dropped or changed type, or the primary key changed (the rows
    /// are then left as they are).
    pub fn schema_change(
        &self,
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
        SchemaChangeResponse::proceed()
    }

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

    /// Upserts `rows` under one write lock, then notifies; with `restore`, the store is
    /// cleared first (in the same lock).
    fn upsert_rows(&self, rows: &[Row], restore: bool) -> Result<(), Error> {
        let listening = !self.listeners.is_empty();
        let mut notifications = Vec::new();
        let result = {
            let mut store = self.store.write();
            ensure_configured(&store)?;
            if restore {
                store.clear();
                if listening {
                    notifications.push((None, None, None));
                }
            }
            rows.iter().try_for_each(|row| {
                let old = store.upsert(row).map_err(full)?;
                if listening {
                    let old = old.and_then(|bytes| store.decode(&bytes));
                    notifications.push((old, Some(row.clone()), None));
                }
                Ok(())
            })
        };
        // Rows applied before a failure are visible: report them too.
        self.notify(&notifications, &[]);
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

impl RowAccess for IndexedRows {
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

    /// The primary key, else the lookup fields; empty until configured.
    fn key_fields(&self) -> Vec<String> {
        IndexedRows::key_fields(self)
    }

    /// The lookup index as [`PRIMARY_INDEX`], then the secondary indexes.
    fn indexes(&self) -> Vec<IndexInfo> {
        IndexedRows::indexes(self)
    }

    fn lookup(&self, index: &str, key: &[Value]) -> Result<Vec<Row>, IndexError> {
        self.lookup_all(index, key)
    }

    /// Pages through the ordered index of the keys ([`IndexedRows::rows_in_key_order`]).
    fn rows_after(&self, after: Option<&[Value]>, limit: usize) -> Option<Vec<Row>> {
        Some(self.rows_in_key_order(after, limit))
    }

    fn subscribe(&self, listener: Arc<RowListener>) -> Option<ListenerHandle> {
        Some(self.listeners.add(listener))
    }
}

fn ensure_configured(store: &Store) -> Result<(), Error> {
    if store.is_configured() {
        Ok(())
    } else {
        Err(Error::NotConfigured)
    }
}

fn full(_: Full) -> Error {
    Error::Full
}

/// Applies change `n` of a batch to the store (the caller holds the write lock),
/// collecting the listener notifications when `listening`.
fn apply_change(
    store: &mut Store,
    n: usize,
    change: &Change,
    listening: bool,
    notifications: &mut Vec<Notification>,
) -> Result<(), Error> {
    match &change.kind {
        ChangeKind::Insert { row } => {
            ensure_configured(store)?;
            let old = store.upsert(row).map_err(full)?;
            if listening {
                let old = old.and_then(|bytes| store.decode(&bytes));
                notifications.push((old, Some(row.clone()), Some(n)));
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
                    notifications.push((replaced, None, Some(n)));
                } else {
                    old = old.or(replaced);
                }
                notifications.push((old, Some(row.clone()), Some(n)));
            }
        }
        ChangeKind::Delete { identity } => {
            ensure_configured(store)?;
            let key = identity.key_bytes(store.key_fields());
            let removed = store.remove(&key);
            if listening && let Some(old) = removed.and_then(|b| store.decode(&b)) {
                notifications.push((Some(old), None, Some(n)));
            }
        }
        ChangeKind::Truncate => {
            store.clear();
            if listening {
                notifications.push((None, None, Some(n)));
            }
        }
    }
    Ok(())
}
