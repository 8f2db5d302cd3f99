//! [`IndexedTarget`]: a raw-row replica of a table with hash indexes, as an engine
//! target.
//!
//! The rows, their indexes and their listeners are laredo-index's [`IndexedRows`]
//! (the store laredo-client-fanout's replica uses too); this module makes it a
//! [`SyncTarget`] and keeps what only a target needs: the table's columns and the
//! error messages operators see.

use std::sync::Arc;

use async_trait::async_trait;
use laredo_core::{
    ApplyError, Change, ColumnDefinition, IndexDefinition, IndexError, IndexInfo, ListenerHandle,
    Row, RowAccess, RowListener, SchemaChangeAction, SchemaChangeResponse, SnapshotEntry,
    SnapshotTarget, SyncTarget, TableIdentifier, TableSnapshotInfo, TargetError, TargetStatus,
    Value,
};
use laredo_index::{IndexedRows, IntoKey};
use parking_lot::RwLock;

/// The target type name.
const TYPE_NAME: &str = "indexed-memory";

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
            rows: IndexedRows::new(self.lookup_fields, self.indexes),
            columns: RwLock::new(Vec::new()),
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
///
/// Capabilities: [`SnapshotTarget`], [`TargetStatus`] and [`RowAccess`] with every
/// optional method (key fields, indexes, lookups by index, pages from an ordered index
/// of the keys, and change streams that carry each change's position and transaction
/// id), so the Query service serves it in full.
pub struct IndexedTarget {
    rows: IndexedRows,
    columns: RwLock<Vec<ColumnDefinition>>,
}

impl std::fmt::Debug for IndexedTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexedTarget")
            .field("lookup_fields", &self.rows.configured_lookup_fields())
            .field("indexes", &self.rows.index_definitions())
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
        self.rows.lookup(key)
    }

    /// The row whose primary key equals `key`; `None` also when `key` has a different
    /// number of values than the primary key has columns.
    pub fn get(&self, key: impl IntoKey) -> Option<Row> {
        self.rows.get(key)
    }

    /// The rows whose `index` fields equal `key`: 0 or 1 for a unique index, any number
    /// for a non-unique one (order unspecified). [`PRIMARY_INDEX`](crate::PRIMARY_INDEX)
    /// names the lookup index.
    ///
    /// # Errors
    /// [`IndexError::UnknownIndex`] when no index has that name,
    /// [`IndexError::KeyArity`] when `key` has the wrong number of values.
    pub fn lookup_all(&self, index: &str, key: impl IntoKey) -> Result<Vec<Row>, IndexError> {
        self.rows.lookup_all(index, key)
    }

    /// Every row: a copy taken under one read lock (order unspecified).
    pub fn all(&self) -> Vec<Row> {
        self.rows.all()
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
        self.rows.rows_in_key_order(after, limit)
    }

    /// Rows decoded by [`IndexedTarget::all`] and [`IndexedTarget::rows_in_key_order`]
    /// since the target was built: what whole-table reads cost (a figure for tests and
    /// diagnostics).
    pub fn rows_read(&self) -> u64 {
        self.rows.rows_read()
    }

    /// The number of rows.
    pub fn count(&self) -> usize {
        self.rows.count()
    }

    /// Calls `listener(old, new)` after every change: `(None, new)` for an insert of a
    /// new key, `(old, new)` for an update or an insert that replaced a row,
    /// `(old, None)` for a delete of an existing row, `(None, None)` for a truncate. A
    /// snapshot restore is reported as a truncate followed by one insert per row.
    /// ([`RowAccess::subscribe`] registers a listener that also learns each change's
    /// position and transaction id.)
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
        self.rows.listen(listener)
    }

    /// Every index with its entry count, the lookup index first as
    /// [`PRIMARY_INDEX`](crate::PRIMARY_INDEX). Empty fields before `on_init` when no
    /// lookup fields were configured.
    pub fn indexes(&self) -> Vec<IndexInfo> {
        self.rows.indexes()
    }

    /// The table's columns, as given at `on_init` and updated by schema changes.
    pub fn columns(&self) -> Vec<ColumnDefinition> {
        self.columns.read().clone()
    }

    /// The lookup fields in effect: the configured ones, else (after `on_init`) the
    /// primary key.
    pub fn lookup_fields(&self) -> Vec<String> {
        self.rows.lookup_fields()
    }

    /// Approximate bytes this target has allocated for its rows: the slab, the encoded
    /// rows and the index tables (not the allocator's own per-block overhead).
    pub fn heap_size(&self) -> usize {
        self.rows.heap_size()
    }
}

/// A store error as the target reports it.
fn target_error(error: laredo_index::Error) -> TargetError {
    match error {
        laredo_index::Error::NotConfigured => TargetError::new(format!(
            "{TYPE_NAME} target is not initialised: on_init was not called"
        )),
        laredo_index::Error::Full => {
            TargetError::new(format!("{TYPE_NAME} target is full: no row slot left"))
        }
        other => TargetError::new(other.to_string()),
    }
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
        self.rows.configure(table, columns).map_err(target_error)?;
        *self.columns.write() = columns.to_vec();
        Ok(())
    }

    /// Takes the write lock once for the whole batch.
    async fn on_baseline(&self, _table: &TableIdentifier, rows: &[Row]) -> Result<(), TargetError> {
        self.rows.load(rows).map_err(target_error)
    }

    /// Applies the batch under one write lock, then notifies the listeners of every
    /// change in order. An insert replaces the row of its key. An update replaces the
    /// row with the identity's key (the new row's key when there is no identity); when
    /// the key changed, the old row goes and the new one is stored under its key,
    /// replacing any row already there, which is reported as deleted first.
    async fn apply(&self, _table: &TableIdentifier, batch: &[Change]) -> Result<(), ApplyError> {
        self.rows
            .apply(batch)
            .map_err(|(applied, error)| ApplyError::at(applied, target_error(error)))
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
        let response = self.rows.schema_change(old, new);
        if response.action == SchemaChangeAction::Continue {
            *self.columns.write() = new.to_vec();
        }
        response
    }

    /// Removes every listener; the rows stay readable.
    async fn on_close(&self, _table: &TableIdentifier) -> Result<(), TargetError> {
        self.rows.remove_listeners();
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
        if !self.rows.is_configured() {
            SyncTarget::on_init(self, &info.table, &info.columns).await?;
        }
        let rows: Vec<Row> = entries.into_iter().map(|e| e.row).collect();
        self.rows.restore(&rows).map_err(target_error)
    }

    fn supports_consistent_snapshot(&self) -> bool {
        true
    }
}

/// The rows' [`RowAccess`]: lookups by key and by every index, pages from the ordered
/// index of the keys, and subscriptions.
impl RowAccess for IndexedTarget {
    fn get(&self, identity: &Row) -> Option<Row> {
        RowAccess::get(&self.rows, identity)
    }

    fn count(&self) -> u64 {
        RowAccess::count(&self.rows)
    }

    fn scan(&self) -> Vec<Row> {
        RowAccess::scan(&self.rows)
    }

    fn key_fields(&self) -> Vec<String> {
        RowAccess::key_fields(&self.rows)
    }

    fn indexes(&self) -> Vec<IndexInfo> {
        RowAccess::indexes(&self.rows)
    }

    fn lookup(&self, index: &str, key: &[Value]) -> Result<Vec<Row>, IndexError> {
        RowAccess::lookup(&self.rows, index, key)
    }

    fn rows_after(&self, after: Option<&[Value]>, limit: usize) -> Option<Vec<Row>> {
        RowAccess::rows_after(&self.rows, after, limit)
    }

    fn subscribe(&self, listener: Arc<RowListener>) -> Option<ListenerHandle> {
        RowAccess::subscribe(&self.rows, listener)
    }
}

impl TargetStatus for IndexedTarget {
    /// `lookup_fields` (the configured ones, else the key in use; empty before
    /// `on_init`) and the configured `indexes` (`name`, `fields`, `unique`).
    fn describe(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::{Value as J, json};
        let indexes: Vec<J> = self
            .rows
            .index_definitions()
            .iter()
            .map(|i| json!({"name": i.name, "fields": i.fields, "unique": i.unique}))
            .collect();
        let mut map = serde_json::Map::new();
        map.insert("lookup_fields".into(), J::from(self.lookup_fields()));
        map.insert("indexes".into(), J::Array(indexes));
        map
    }
}
