//! The optional capabilities of [`FanoutTarget`], through which services reach it by
//! laredo-core's traits alone: [`FanoutControl`] (client count and drain, for OAM),
//! [`SnapshotTarget`] (export and restore of the rows for engine snapshots) and
//! [`RowAccess`] (rows by key, scans and row change streams, for the engine and the
//! Query service).
//!
//! A restore replaces the rows and reseeds the journal: no earlier sequence describes
//! the restored rows, so every client starts again from a snapshot.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use laredo_core::{
    DrainReason, FanoutControl, ListenerHandle, Row, RowAccess, RowListener, SnapshotEntry,
    SnapshotTarget, TableSnapshotInfo, TargetError,
};

use super::FanoutTarget;
use super::state::key_fields;

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
