//! The local replica: an [`IndexedTarget`] keyed by the table's primary key, plus the
//! resume state (sequence, position, snapshot id, server id).

use std::sync::Arc;

use laredo_core::{
    Change, ChangeKind, ColumnDefinition, IndexDefinition, Row, SyncTarget, TableIdentifier,
};
use laredo_target_memory::IndexedTarget;
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
    target: Arc<IndexedTarget>,
    state: Mutex<ReplicaState>,
    /// The position of the change being applied, for position listeners.
    position: Arc<Mutex<String>>,
}

impl Replica {
    pub(crate) fn new(table: TableIdentifier, indexes: &[IndexDefinition]) -> Self {
        let mut builder = IndexedTarget::builder();
        for index in indexes {
            builder = builder.index(index.clone());
        }
        Self {
            table,
            target: builder.build(),
            state: Mutex::new(ReplicaState::default()),
            position: Arc::new(Mutex::new(String::new())),
        }
    }

    pub(crate) fn target(&self) -> &Arc<IndexedTarget> {
        &self.target
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
    pub(crate) async fn set_columns(&self, columns: Vec<ColumnDefinition>) -> Result<(), String> {
        if self.state.lock().columns == columns {
            return Ok(());
        }
        self.target
            .on_init(&self.table, &columns)
            .await
            .map_err(|e| {
                format!(
                    "the replica cannot take the table's columns: {}",
                    laredo_core::ErrorChain(&e)
                )
            })?;
        self.state.lock().columns = columns;
        Ok(())
    }

    /// Applies one change to the replica's rows; a failure is logged (`what` failed).
    async fn apply(&self, kind: ChangeKind, what: &str) {
        let change = Change::new(kind);
        if let Err(e) = self
            .target
            .apply(&self.table, std::slice::from_ref(&change))
            .await
        {
            tracing::warn!(error = %laredo_core::ErrorChain(&e), "{what} failed");
        }
    }

    pub(crate) async fn clear(&self) {
        *self.position.lock() = String::new();
        self.apply(ChangeKind::Truncate, "clearing the replica")
            .await;
    }

    pub(crate) async fn upsert_rows(&self, rows: &[Row]) {
        *self.position.lock() = String::new();
        if let Err(e) = self.target.on_baseline(&self.table, rows).await {
            tracing::warn!(error = %laredo_core::ErrorChain(&e), "storing snapshot rows failed");
        }
    }

    pub(crate) async fn insert(&self, row: &Row, position: &str) {
        *self.position.lock() = position.to_string();
        let kind = ChangeKind::Insert { row: row.clone() };
        self.apply(kind, "applying an insert").await;
    }

    pub(crate) async fn update_row(&self, row: &Row, old: Option<&Row>, position: &str) {
        *self.position.lock() = position.to_string();
        let kind = ChangeKind::Update {
            row: row.clone(),
            identity: old.cloned(),
        };
        self.apply(kind, "applying an update").await;
    }

    pub(crate) async fn delete(&self, old: &Row, position: &str) {
        *self.position.lock() = position.to_string();
        let kind = ChangeKind::Delete {
            identity: old.clone(),
        };
        self.apply(kind, "applying a delete").await;
    }

    pub(crate) async fn truncate(&self, position: &str) {
        *self.position.lock() = position.to_string();
        self.apply(ChangeKind::Truncate, "applying a truncate")
            .await;
    }

    /// Loads a saved replica (before any stream).
    pub(crate) async fn load_file(&self, file: SnapshotFile) {
        if self.set_columns(file.columns.clone()).await.is_err() {
            return;
        }
        self.upsert_rows(&file.rows).await;
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
            rows: self.target.all(),
        }
    }
}
