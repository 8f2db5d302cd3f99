//! The engine's doorway: [`SyncTarget`] for [`FanoutTarget`].
//!
//! The engine initialises the target (journaling a schema entry when a live target is
//! initialised again with other columns) and applies the baseline, journaled as
//! inserts; when the baseline completes, its entries are stamped with its end position
//! and the first snapshot is taken. Then come batches of changes, each applied under
//! one write lock. A truncate ends a run of its batch and is followed by a snapshot,
//! as is a schema change: a client far behind restarts from it instead of replaying
//! what was erased. Close takes a last snapshot, stops the scheduler, ends every
//! stream and drops the row listeners. The engine never waits for a client.

use async_trait::async_trait;
use laredo_core::{
    ApplyError, Change, ChangeAction, ChangeKind, ColumnDefinition, FanoutControl, Position, Row,
    RowAccess, SchemaChangeResponse, SnapshotTarget, SyncTarget, TableIdentifier, TargetError,
};

use super::state::same_layout;
use super::{FanoutTarget, TYPE_NAME};
use crate::journal::EntryKind;

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
