//! [`CompiledTarget`]: domain objects compiled from rows.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::sync::Arc;

use async_trait::async_trait;
use laredo_core::{
    ColumnDefinition, Row, SchemaChangeResponse, SnapshotEntry, SyncTarget, TableIdentifier,
    TableSnapshotInfo, TargetError, primary_key_columns,
};
use parking_lot::RwLock;

use crate::key::{IntoKey, key_bytes};
use crate::listener::{ListenerHandle, Registry};

const TYPE_NAME: &str = "compiled-memory";

type Compiler<T> = dyn Fn(&Row) -> Result<T, String> + Send + Sync;
type RowFilter = dyn Fn(&Row) -> bool + Send + Sync;
type ObjectListener<T> = dyn Fn(Option<&Arc<T>>, Option<&Arc<T>>) + Send + Sync;

/// Builds a [`CompiledTarget`].
#[must_use]
pub struct CompiledTargetBuilder<T> {
    compiler: Arc<Compiler<T>>,
    key_fields: Vec<String>,
    filter: Option<Arc<RowFilter>>,
}

impl<T: Send + Sync + 'static> CompiledTargetBuilder<T> {
    /// The columns forming the object key (default: the table's primary key).
    pub fn key_fields(mut self, fields: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.key_fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Only rows for which `filter` is true become objects.
    pub fn filter(mut self, filter: impl Fn(&Row) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Arc::new(filter));
        self
    }

    /// Builds the target (key fields are checked at `on_init`).
    pub fn build(self) -> Arc<CompiledTarget<T>> {
        Arc::new(CompiledTarget {
            compiler: self.compiler,
            configured_keys: self.key_fields,
            filter: self.filter,
            state: RwLock::new(State {
                key_fields: Vec::new(),
                entries: HashMap::new(),
            }),
            listeners: Registry::new(),
        })
    }
}

struct Entry<T> {
    object: Arc<T>,
    row: Row,
}

struct State<T> {
    key_fields: Vec<String>,
    entries: HashMap<Vec<u8>, Entry<T>>,
}

/// A table replica of typed objects: each row goes through a compiler function; see
/// the crate docs.
pub struct CompiledTarget<T> {
    compiler: Arc<Compiler<T>>,
    configured_keys: Vec<String>,
    filter: Option<Arc<RowFilter>>,
    state: RwLock<State<T>>,
    listeners: Arc<Registry<ObjectListener<T>>>,
}

impl<T> std::fmt::Debug for CompiledTarget<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledTarget")
            .field("key_fields", &self.configured_keys)
            .field("count", &self.state.read().entries.len())
            .finish()
    }
}

type Change<T> = (Option<Arc<T>>, Option<Arc<T>>);

impl<T: Send + Sync + 'static> CompiledTarget<T> {
    /// Starts building a target that compiles rows with `compiler`; a row whose
    /// compilation fails is skipped and logged.
    pub fn builder<E: Display>(
        compiler: impl Fn(&Row) -> Result<T, E> + Send + Sync + 'static,
    ) -> CompiledTargetBuilder<T> {
        CompiledTargetBuilder {
            compiler: Arc::new(move |row: &Row| compiler(row).map_err(|e| e.to_string())),
            key_fields: Vec::new(),
            filter: None,
        }
    }

    /// The object with this key.
    pub fn get(&self, key: impl IntoKey) -> Option<Arc<T>> {
        let state = self.state.read();
        let values = key.into_key();
        if values.len() != state.key_fields.len() {
            return None;
        }
        state
            .entries
            .get(&key_bytes(&values))
            .map(|e| Arc::clone(&e.object))
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

    /// Calls `listener(old, new)` after every change (as `IndexedTarget::listen`).
    pub fn listen(
        &self,
        listener: impl Fn(Option<&Arc<T>>, Option<&Arc<T>>) + Send + Sync + 'static,
    ) -> ListenerHandle {
        self.listeners.add(Arc::new(listener))
    }

    fn passes(&self, row: &Row) -> bool {
        self.filter.as_ref().is_none_or(|f| f(row))
    }

    fn compile(&self, row: &Row) -> Option<Arc<T>> {
        match (self.compiler)(row) {
            Ok(object) => Some(Arc::new(object)),
            Err(e) => {
                tracing::warn!(error = %e, %row, "row skipped: compile failed");
                None
            }
        }
    }

    /// Upserts `row` (after the filter), removing `old_key` first when it differs.
    fn put(&self, row: &Row, old_key: Option<Vec<u8>>) -> Option<Change<T>> {
        let mut state = self.state.write();
        let key = row.key_bytes(&state.key_fields);
        let removed = match old_key {
            Some(old_key) if old_key != key => state.entries.remove(&old_key),
            _ => None,
        };
        if !self.passes(row) {
            // The row left the filtered set: it is no longer an object here.
            let gone = removed.or_else(|| state.entries.remove(&key));
            return gone.map(|e| (Some(e.object), None));
        }
        let object = self.compile(row)?;
        let replaced = state.entries.insert(
            key,
            Entry {
                object: Arc::clone(&object),
                row: row.clone(),
            },
        );
        let old = removed.or(replaced).map(|e| e.object);
        Some((old, Some(object)))
    }

    fn notify(&self, change: Option<Change<T>>) {
        let Some((old, new)) = change else {
            return;
        };
        for listener in self.listeners.snapshot() {
            listener(old.as_ref(), new.as_ref());
        }
    }
}

#[async_trait]
impl<T: Send + Sync + 'static> SyncTarget for CompiledTarget<T> {
    fn type_name(&self) -> &str {
        TYPE_NAME
    }

    async fn on_init(
        &self,
        table: &TableIdentifier,
        columns: &[ColumnDefinition],
    ) -> Result<(), TargetError> {
        let names: HashSet<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        if let Some(field) = self
            .configured_keys
            .iter()
            .find(|f| !names.contains(f.as_str()))
        {
            return Err(TargetError::new(format!(
                "key field {field} not found in columns"
            )));
        }
        let key_fields = if self.configured_keys.is_empty() {
            primary_key_columns(columns)
                .into_iter()
                .map(str::to_string)
                .collect()
        } else {
            self.configured_keys.clone()
        };
        if key_fields.is_empty() {
            return Err(TargetError::new(format!(
                "table {table} has no primary key and no key_fields are configured"
            )));
        }
        self.state.write().key_fields = key_fields;
        Ok(())
    }

    async fn on_baseline_row(
        &self,
        _table: &TableIdentifier,
        row: &Row,
    ) -> Result<(), TargetError> {
        let change = self.put(row, None);
        self.notify(change);
        Ok(())
    }

    async fn on_baseline_complete(&self, _table: &TableIdentifier) -> Result<(), TargetError> {
        Ok(())
    }

    async fn on_insert(&self, _table: &TableIdentifier, row: &Row) -> Result<(), TargetError> {
        let change = self.put(row, None);
        self.notify(change);
        Ok(())
    }

    async fn on_update(
        &self,
        _table: &TableIdentifier,
        row: &Row,
        identity: Option<&Row>,
    ) -> Result<(), TargetError> {
        let old_key = identity.map(|i| i.key_bytes(&self.state.read().key_fields));
        let change = self.put(row, old_key);
        self.notify(change);
        Ok(())
    }

    async fn on_delete(&self, _table: &TableIdentifier, identity: &Row) -> Result<(), TargetError> {
        let removed = {
            let mut state = self.state.write();
            let key = identity.key_bytes(&state.key_fields);
            state.entries.remove(&key)
        };
        self.notify(removed.map(|e| (Some(e.object), None)));
        Ok(())
    }

    async fn on_truncate(&self, _table: &TableIdentifier) -> Result<(), TargetError> {
        self.state.write().entries.clear();
        self.notify(Some((None, None)));
        Ok(())
    }

    fn is_durable(&self) -> bool {
        true
    }

    async fn on_schema_change(
        &self,
        _table: &TableIdentifier,
        _old: &[ColumnDefinition],
        _new: &[ColumnDefinition],
    ) -> SchemaChangeResponse {
        SchemaChangeResponse::re_baseline("compiled objects are rebuilt from the new columns")
    }

    async fn export_snapshot(&self) -> Result<Vec<SnapshotEntry>, TargetError> {
        Ok(self
            .state
            .read()
            .entries
            .values()
            .map(|e| SnapshotEntry { row: e.row.clone() })
            .collect())
    }

    async fn restore_snapshot(
        &self,
        _info: &TableSnapshotInfo,
        entries: Vec<SnapshotEntry>,
    ) -> Result<(), TargetError> {
        self.state.write().entries.clear();
        for entry in entries {
            let _ = self.put(&entry.row, None);
        }
        Ok(())
    }

    fn supports_consistent_snapshot(&self) -> bool {
        true
    }

    async fn on_close(&self, _table: &TableIdentifier) -> Result<(), TargetError> {
        self.listeners.clear();
        Ok(())
    }

    fn count(&self) -> Option<u64> {
        Some(self.state.read().entries.len() as u64)
    }

    fn scan_rows(&self) -> Option<Vec<Row>> {
        Some(
            self.state
                .read()
                .entries
                .values()
                .map(|e| e.row.clone())
                .collect(),
        )
    }
}
