//! Journal entries, snapshots and columns as wire messages.

use std::time::{Duration, SystemTime};

#[cfg(test)]
use laredo_core::ChangeAction;
use laredo_core::{ColumnDefinition, Position, Row, SyncMode};
use laredo_proto::laredo::replication::v1 as wire;
use laredo_proto::laredo::v1 as types;

use crate::journal::{EntryKind, JournalEntry};
use crate::target::{ClientState, DrainReason, FanoutSnapshot};

/// Rows per `SnapshotRows` message.
pub(crate) const SNAPSHOT_BATCH_ROWS: usize = 500;
/// Entries read from the journal per lock (and at most per `JournalEntries` message).
pub(crate) const JOURNAL_BATCH_ENTRIES: usize = 500;
/// A batch is sent once its rows reach about this many raw bytes, well under the
/// 4 MiB that tonic clients accept per message by default.
pub(crate) const BATCH_BYTES: usize = 1024 * 1024;

/// Renders a position in the text form of the table's source.
pub(crate) type PositionText = dyn Fn(&Position) -> String + Send + Sync;

pub(crate) fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

pub(crate) fn duration(duration: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(duration).ok()
}

pub(crate) fn columns(columns: &[ColumnDefinition]) -> Vec<types::ColumnDefinition> {
    columns.iter().map(types::ColumnDefinition::from).collect()
}

pub(crate) fn row(row: &Row) -> types::Row {
    types::Row::from(row)
}

/// The raw size of an entry's rows, for batching.
pub(crate) fn entry_size(entry: &JournalEntry) -> usize {
    match &entry.kind {
        EntryKind::Change {
            old_values,
            new_values,
            ..
        } => {
            old_values.as_ref().map_or(0, Row::raw_size)
                + new_values.as_ref().map_or(0, Row::raw_size)
                + 32
        }
        EntryKind::Schema { .. } => 256,
    }
}

fn position_text(entry: &JournalEntry, text: &PositionText) -> String {
    entry.position.as_ref().map(text).unwrap_or_default()
}

/// A change entry as a wire `JournalEntry`; `None` for a schema entry.
pub(crate) fn journal_entry(
    entry: &JournalEntry,
    text: &PositionText,
) -> Option<wire::JournalEntry> {
    let EntryKind::Change {
        action,
        old_values,
        new_values,
    } = &entry.kind
    else {
        return None;
    };
    Some(wire::JournalEntry {
        sequence: entry.sequence,
        source_position: position_text(entry, text),
        timestamp: Some(timestamp(entry.timestamp)),
        commit_timestamp: None,
        xid: 0,
        action: types::ChangeAction::from(*action).into(),
        new_values: new_values.as_ref().map(row),
        old_values: old_values.as_ref().map(row),
    })
}

/// A schema entry as a wire `SchemaChange`; `None` for a change entry.
pub(crate) fn schema_change(
    entry: &JournalEntry,
    text: &PositionText,
) -> Option<wire::SchemaChange> {
    let EntryKind::Schema {
        old_columns,
        new_columns,
    } = &entry.kind
    else {
        return None;
    };
    Some(wire::SchemaChange {
        sequence: entry.sequence,
        source_position: position_text(entry, text),
        timestamp: Some(timestamp(entry.timestamp)),
        old_columns: columns(old_columns),
        new_columns: columns(new_columns),
    })
}

pub(crate) fn snapshot_info(snapshot: &FanoutSnapshot, text: &PositionText) -> wire::SnapshotInfo {
    wire::SnapshotInfo {
        snapshot_id: snapshot.id().to_string(),
        sequence: snapshot.sequence(),
        source_position: snapshot.position().map(text).unwrap_or_default(),
        row_count: snapshot.rows().len() as u64,
        size_bytes: snapshot.size_bytes(),
        created_at: Some(timestamp(snapshot.created_at())),
    }
}

pub(crate) fn sync_mode(mode: SyncMode) -> wire::SyncMode {
    match mode {
        SyncMode::FullSnapshot => wire::SyncMode::FullSnapshot,
        SyncMode::Delta => wire::SyncMode::Delta,
        SyncMode::DeltaFromSnapshot => wire::SyncMode::DeltaFromSnapshot,
        SyncMode::ReplayArchive => wire::SyncMode::ReplayArchive,
    }
}

pub(crate) fn client_state(state: ClientState) -> wire::ClientState {
    match state {
        ClientState::CatchingUp => wire::ClientState::CatchingUp,
        ClientState::Live => wire::ClientState::Live,
        ClientState::Backpressured => wire::ClientState::Backpressured,
        ClientState::Draining => wire::ClientState::Draining,
    }
}

pub(crate) fn go_away_reason(reason: DrainReason) -> wire::GoAwayReason {
    match reason {
        DrainReason::Shutdown => wire::GoAwayReason::Draining,
        DrainReason::Admin => wire::GoAwayReason::Admin,
    }
}

/// Whether an action is a change entry's (used by tests of the encoding).
#[cfg(test)]
pub(crate) fn action_of(entry: &wire::JournalEntry) -> Option<ChangeAction> {
    types::ChangeAction::try_from(entry.action)
        .ok()
        .and_then(|a| ChangeAction::try_from(a).ok())
}

#[cfg(test)]
mod tests {
    use laredo_core::row;

    use super::*;

    #[test]
    fn change_entries_carry_their_rows_and_position_text() {
        let entry = JournalEntry {
            sequence: 7,
            timestamp: SystemTime::UNIX_EPOCH,
            position: Some(Position::from_u64(42)),
            kind: EntryKind::Change {
                action: ChangeAction::Update,
                old_values: Some(row! {"id" => 1}),
                new_values: Some(row! {"id" => 1, "n" => "x"}),
            },
        };
        let text = |p: &Position| format!("pos:{p}");
        let wire = journal_entry(&entry, &text).unwrap();
        assert_eq!(wire.sequence, 7);
        assert_eq!(wire.source_position, "pos:42");
        assert_eq!(action_of(&wire), Some(ChangeAction::Update));
        assert_eq!(
            Row::try_from(wire.new_values.as_ref().unwrap()).unwrap(),
            row! {"id" => 1, "n" => "x"}
        );
        assert!(schema_change(&entry, &text).is_none());
    }
}
