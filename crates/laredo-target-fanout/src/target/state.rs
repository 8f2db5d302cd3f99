//! What the target's lock guards ([`State`]): the table's columns and key, the rows
//! by key, the journal, the snapshots held and the build in flight, and the counters
//! that pace pruning and snapshot retention.
//!
//! Rows are keyed by the bytes of their key fields (the primary key, else `id`), so an
//! update that changes the key moves the row. Applying a change here does both halves
//! of an append at once: it changes the rows and returns the journal entry that
//! describes the change, carrying the old row the target held (clients need it for
//! deletes and key moves even when the source sent only the identity). A schema entry
//! makes the target take the new columns, re-keying the rows when the key changed.
//! Everything here runs with the write lock held; nothing here locks or publishes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use laredo_core::{
    ChangeAction, ChangeKind, ColumnDefinition, Position, Row, TableIdentifier, primary_key_columns,
};

use super::snapshots::{Build, FanoutSnapshot};
use crate::journal::{EntryKind, Journal, Shape};

/// The key column used when a table has no primary key.
const FALLBACK_KEY: &str = "id";

/// The table state under [`FanoutTarget`](super::FanoutTarget)'s lock.
#[derive(Default)]
pub(super) struct State {
    pub(super) table: Option<TableIdentifier>,
    pub(super) columns: Vec<ColumnDefinition>,
    pub(super) key_fields: Arc<[String]>,
    pub(super) rows: hashbrown::HashMap<Vec<u8>, Row>,
    pub(super) journal: Journal,
    /// Newest first.
    pub(super) snapshots: VecDeque<Arc<FanoutSnapshot>>,
    /// The snapshot build in flight, when any (at most one).
    pub(super) building: Option<Arc<Build>>,
    /// Appends since the snapshots' ages were last checked.
    pub(super) appended_since_snapshot_check: usize,
    pub(super) ready: bool,
    /// Entries appended since pruning last looked at the clients' pins.
    pub(super) appended_since_prune: usize,
    /// When pruning last looked at the clients' pins.
    pub(super) last_prune: Option<Instant>,
}

/// A change of the rows for the row listeners, reported once the write lock is
/// released: old row, new row, and the index of the change that made it in its batch
/// (`None`: baseline rows, a restore).
pub(super) type Notification = (Option<Row>, Option<Row>, Option<usize>);

impl State {
    pub(super) fn key_of(&self, row: &Row) -> Vec<u8> {
        row.key_bytes(&self.key_fields)
    }

    /// What `kind` is about to do to the rows, as row listeners hear it (called before
    /// [`State::apply_change`], while the rows it replaces are still held): an
    /// update that moves a row onto a key another row held reports that row deleted
    /// first; a delete of a missing key is not reported.
    pub(super) fn row_changes(
        &self,
        kind: &ChangeKind,
        at: Option<usize>,
        out: &mut Vec<Notification>,
    ) {
        match kind {
            ChangeKind::Insert { row } => {
                let old = self.rows.get(&self.key_of(row)).cloned();
                out.push((old, Some(row.clone()), at));
            }
            ChangeKind::Update { row, identity } => {
                let new_key = self.key_of(row);
                let moved = identity
                    .as_ref()
                    .map(|identity| self.key_of(identity))
                    .filter(|old_key| *old_key != new_key)
                    .and_then(|old_key| self.rows.get(&old_key).cloned());
                let replaced = self.rows.get(&new_key).cloned();
                match (moved, replaced) {
                    (Some(moved), Some(replaced)) => {
                        out.push((Some(replaced), None, at));
                        out.push((Some(moved), Some(row.clone()), at));
                    }
                    (moved, replaced) => out.push((moved.or(replaced), Some(row.clone()), at)),
                }
            }
            ChangeKind::Delete { identity } => {
                if let Some(old) = self.rows.get(&self.key_of(identity)) {
                    out.push((Some(old.clone()), None, at));
                }
            }
            ChangeKind::Truncate => out.push((None, None, at)),
        }
    }

    /// Applies a change to the rows; returns the journal entry that describes it (an
    /// update or delete carries the old row the target held, else the identity).
    pub(super) fn apply_change(&mut self, kind: &ChangeKind) -> EntryKind {
        match kind {
            ChangeKind::Insert { row } => {
                let key = self.key_of(row);
                self.rows.insert(key, row.clone());
                EntryKind::Change {
                    action: ChangeAction::Insert,
                    old_values: None,
                    new_values: Some(row.clone()),
                }
            }
            ChangeKind::Update { row, identity } => {
                let old_key = self.key_of(identity.as_ref().unwrap_or(row));
                let old = self.rows.remove(&old_key);
                let new_key = self.key_of(row);
                self.rows.insert(new_key, row.clone());
                EntryKind::Change {
                    action: ChangeAction::Update,
                    old_values: old.or_else(|| identity.clone()),
                    new_values: Some(row.clone()),
                }
            }
            ChangeKind::Delete { identity } => {
                let key = self.key_of(identity);
                let old = self.rows.remove(&key);
                EntryKind::Change {
                    action: ChangeAction::Delete,
                    old_values: Some(old.unwrap_or_else(|| identity.clone())),
                    new_values: None,
                }
            }
            ChangeKind::Truncate => {
                self.rows.clear();
                EntryKind::Change {
                    action: ChangeAction::Truncate,
                    old_values: None,
                    new_values: None,
                }
            }
        }
    }

    /// Appends a change entry (with its shape against the table now), or a schema
    /// entry, whose new columns the target takes (the rows before it follow the
    /// columns the target had, whatever the source says were the old ones).
    pub(super) fn append(&mut self, position: Option<Position>, kind: EntryKind) -> u64 {
        match &kind {
            EntryKind::Schema { new_columns, .. } => {
                let prior = self.take_columns(new_columns);
                self.journal.append_schema(position, kind, prior)
            }
            EntryKind::Change { .. } => {
                let shape = Shape::of(&kind, &self.columns, &self.key_fields);
                self.journal.append(position, kind, shape)
            }
        }
    }

    /// Takes new columns (and their key fields), re-keying the rows when the key
    /// changed; returns the columns before.
    pub(super) fn take_columns(&mut self, columns: &[ColumnDefinition]) -> Vec<ColumnDefinition> {
        let keys = key_fields(columns);
        let prior = std::mem::replace(&mut self.columns, columns.to_vec());
        if keys != self.key_fields {
            // Re-key the rows so later changes find them.
            let rows: Vec<Row> = self.rows.drain().map(|(_, row)| row).collect();
            self.key_fields = keys;
            for row in rows {
                let key = self.key_of(&row);
                self.rows.insert(key, row);
            }
        }
        prior
    }
}

/// Whether rows of `b` read like rows of `a`: the same column names, types and key, in
/// the same order (other metadata, such as nullability or defaults, may differ).
pub(super) fn same_layout(a: &[ColumnDefinition], b: &[ColumnDefinition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.name == b.name && a.type_name == b.type_name && a.primary_key == b.primary_key
        })
}

/// The fields rows are keyed by: the primary key columns, else [`FALLBACK_KEY`].
pub(super) fn key_fields(columns: &[ColumnDefinition]) -> Arc<[String]> {
    let mut keys: Vec<String> = primary_key_columns(columns)
        .into_iter()
        .map(str::to_string)
        .collect();
    if keys.is_empty() {
        keys.push(FALLBACK_KEY.to_string());
    }
    keys.into()
}
