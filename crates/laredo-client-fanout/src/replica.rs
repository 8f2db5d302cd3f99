//! The local replica: laredo-index's [`IndexedRows`] keyed by the table's primary key
//! (the store laredo-target-memory's `IndexedTarget` uses too), plus the resume state
//! (sequence, position, snapshot id, server id).

use std::sync::Arc;

use laredo_core::{Change, ChangeKind, ColumnDefinition, IndexDefinition, Row, TableIdentifier};
use laredo_index::IndexedRows;
use parking_lot::Mutex;

use crate::snapshot_file::SnapshotFile;

/// Where the replica stands.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplicaState {
    pub(crate) columns: Vec<ColumnDefinition>,
    pub(crate) last_seq: u64,
    pub(crate) last_position: String,
    pub(crate) snapshot_id: String,
    pub(crate) server_id: String,
}

pub(crate) struct Replica {
    table: TableIdentifier,
    rows: Arc<IndexedRows>,
    state: Mutex<ReplicaState>,
    /// The position of the change being applied, for position listeners.
    position: Arc<Mutex<String>>,
}

impl Replica {
    pub(crate) fn new(table: TableIdentifier, indexes: &[IndexDefinition]) -> Self {
        Self {
            table,
            rows: Arc::new(IndexedRows::new(Vec::new(), indexes.to_vec())),
            state: Mutex::new(ReplicaState::default()),
            position: Arc::new(Mutex::new(String::new())),
        }
    }

    pub(crate) fn rows(&self) -> &Arc<IndexedRows> {
        &self.rows
    }

    pub(crate) fn state(&self) -> ReplicaState {
        self.state.lock().clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut ReplicaState)) {
        f(&mut self.state.lock());
    }

    pub(crate) fn current_position(&self) -> Arc<Mutex<String>> {
        Arc::clone(&self.position)
    }

    /// Takes the server's columns; rows are keyed by their primary key columns.
    pub(crate) fn set_columns(&self, columns: Vec<ColumnDefinition>) -> Result<(), String> {
        if self.state.lock().columns == columns {
            return Ok(());
        }
        self.rows.configure(&self.table, &columns).map_err(|e| {
            format!(
                "the replica cannot take the table's columns: {}",
                laredo_core::ErrorChain(&e)
            )
        })?;
        self.state.lock().columns = columns;
        Ok(())
    }

    /// Applies one change to the replica's rows; a failure is logged (`what` failed).
    fn apply(&self, kind: ChangeKind, what: &str) {
        let change = Change::new(kind);
        if let Err((_, e)) = self.rows.apply(std::slice::from_ref(&change)) {
            tracing::warn!(error = %laredo_core::ErrorChain(&e), "{what} failed");
        }
    }

    pub(crate) fn clear(&self) {
        *self.position.lock() = String::new();
        self.apply(ChangeKind::Truncate, "clearing the replica");
    }

    pub(crate) fn upsert_rows(&self, rows: &[Row]) {
        *self.position.lock() = String::new();
        if let Err(e) = self.rows.load(rows) {
            tracing::warn!(error = %laredo_core::ErrorChain(&e), "storing snapshot rows failed");
        }
    }

    pub(crate) fn insert(&self, row: &Row, position: &str) {
        *self.position.lock() = position.to_string();
        let kind = ChangeKind::Insert { row: row.clone() };
        self.apply(kind, "applying an insert");
    }

    pub(crate) fn update_row(&self, row: &Row, old: Option<&Row>, position: &str) {
        *self.position.lock() = position.to_string();
        let kind = ChangeKind::Update {
            row: row.clone(),
            identity: old.cloned(),
        };
        self.apply(kind, "applying an update");
    }

    pub(crate) fn delete(&self, old: &Row, position: &str) {
        *self.position.lock() = position.to_string();
        let kind = ChangeKind::Delete {
            identity: old.clone(),
        };
        self.apply(kind, "applying a delete");
    }

    pub(crate) fn truncate(&self, position: &str) {
        *self.position.lock() = position.to_string();
        self.apply(ChangeKind::Truncate, "applying a truncate");
    }

    /// Loads a saved replica (before any stream).
    pub(crate) fn load_file(&self, file: SnapshotFile) {
        if self.set_columns(file.columns.clone()).is_err() {
            return;
        }
        self.upsert_rows(&file.rows);
        let mut state = self.state.lock();
        state.last_seq = file.last_seq;
        state.last_position = file.last_source_position;
        state.snapshot_id = file.snapshot_id;
        state.server_id = file.server_id;
    }

    pub(crate) fn to_file(&self) -> SnapshotFile {
        let state = self.state();
        SnapshotFile {
            version: 1,
            last_seq: state.last_seq,
            snapshot_id: state.snapshot_id,
            last_source_position: state.last_position,
            server_id: state.server_id,
            columns: state.columns,
            rows: self.rows.all(),
        }
    }
}
