//! Journal entries, snapshots and columns as wire messages.

use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
#[cfg(test)]
use laredo_core::ChangeAction;
use laredo_core::{ColumnDefinition, Position, Row, SyncMode};
use laredo_proto::laredo::replication::v1 as wire;
use laredo_proto::laredo::v1 as types;
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint};

use crate::journal::{EntryKind, JournalEntry};
use crate::target::{ClientState, DrainReason, FanoutSnapshot};

/// Rows per `SnapshotRows` message.
pub(crate) const SNAPSHOT_BATCH_ROWS: usize = 500;
/// Entries read from the journal per lock (and at most per `JournalEntries` message).
pub(crate) const JOURNAL_BATCH_ENTRIES: usize = 500;
/// A batch is sent once its rows (snapshot rows: raw size; journal entries: encoded
/// size) reach about this many bytes, well under the 4 MiB that tonic clients accept
/// per message by default.
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

fn position_text(entry: &JournalEntry, text: &PositionText) -> String {
    entry.position.as_ref().map(text).unwrap_or_default()
}

/// A change entry as a wire `JournalEntry` with rows in the given encoding; `None` for
/// a schema entry.
pub(crate) fn journal_entry(
    entry: &JournalEntry,
    text: &PositionText,
    encoding: wire::RowEncoding,
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
        new_values: new_values.as_ref().map(|new| match encoding {
            wire::RowEncoding::Named => row(new),
            wire::RowEncoding::Compact => compact_row(new, entry.shape.new_full),
        }),
        old_values: old_values.as_ref().map(|old| match encoding {
            wire::RowEncoding::Named => row(old),
            wire::RowEncoding::Compact => identity(old, &entry.shape.key_fields)
                .unwrap_or_else(|| compact_row(old, entry.shape.old_full)),
        }),
    })
}

/// A row in the COMPACT encoding: positional when it is the table's full row.
fn compact_row(row: &Row, full: bool) -> types::Row {
    if full {
        types::Row {
            columns: Vec::new(),
            values: row.values().iter().map(types::Value::from).collect(),
        }
    } else {
        types::Row::from(row)
    }
}

/// The key columns of `row`, named; `None` when the row lacks one of them or has no
/// other column (then it is sent whole).
fn identity(row: &Row, keys: &[String]) -> Option<types::Row> {
    if keys.is_empty() || row.columns().len() <= keys.len() {
        return None;
    }
    let values = keys
        .iter()
        .map(|key| row.get(key).map(types::Value::from))
        .collect::<Option<Vec<_>>>()?;
    Some(types::Row {
        columns: keys.to_vec(),
        values,
    })
}

/// Field number of `entries` in `JournalEntries`.
const JOURNAL_ENTRIES_ENTRIES_FIELD: u32 = 1;
/// Field number of `journal_entries` in `SyncResponse`.
const SYNC_RESPONSE_JOURNAL_ENTRIES_FIELD: u32 = 5;

/// A change entry encoded as one element of `JournalEntries.entries` (key, length and
/// message), made once per entry and encoding and shared by every stream: concatenated
/// after [`put_journal_entries_header`] they form a `SyncResponse`. `None` for a schema
/// entry.
///
/// The position text is the table's source's, the same for every stream of a target.
pub(crate) fn journal_entry_field<'a>(
    entry: &'a JournalEntry,
    text: &PositionText,
    encoding: wire::RowEncoding,
) -> Option<&'a [u8]> {
    if !matches!(entry.kind, EntryKind::Change { .. }) {
        return None;
    }
    let cache = match encoding {
        wire::RowEncoding::Named => &entry.wire,
        wire::RowEncoding::Compact => &entry.compact,
    };
    let bytes = cache.get_or_init(|| {
        let Some(message) = journal_entry(entry, text, encoding) else {
            return Bytes::new();
        };
        let len = message.encoded_len();
        let mut buf = BytesMut::with_capacity(len + 11);
        encode_key(
            JOURNAL_ENTRIES_ENTRIES_FIELD,
            WireType::LengthDelimited,
            &mut buf,
        );
        encode_varint(len as u64, &mut buf);
        message
            .encode(&mut buf)
            .expect("the buffer was sized for the message");
        buf.freeze()
    });
    Some(bytes)
}

/// The start of a `SyncResponse` holding `JournalEntries` whose encoded entries (from
/// [`journal_entry_field`]) total `len` bytes.
pub(crate) fn put_journal_entries_header(len: usize, buf: &mut impl BufMut) {
    encode_key(
        SYNC_RESPONSE_JOURNAL_ENTRIES_FIELD,
        WireType::LengthDelimited,
        buf,
    );
    encode_varint(len as u64, buf);
}

/// The encoded length of a `SyncResponse` holding `len` bytes of encoded entries.
pub(crate) fn journal_entries_encoded_len(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
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
        DrainReason::Admin => wire::GoAwayReason::Admin,
        // Shutdown, and any reason laredo-core adds later: the server is going away.
        _ => wire::GoAwayReason::Draining,
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

    fn entry(kind: EntryKind, shape: crate::journal::Shape) -> JournalEntry {
        JournalEntry {
            sequence: 1,
            timestamp: SystemTime::UNIX_EPOCH,
            position: None,
            kind,
            shape,
            wire: crate::journal::WireCache::default(),
            compact: crate::journal::WireCache::default(),
        }
    }

    #[test]
    fn compact_rows_keep_names_where_the_reader_could_not_place_them() {
        let text = |p: &Position| p.to_string();
        let keys: std::sync::Arc<[String]> = vec!["id".to_string()].into();
        // A projected new row (not the table's full row) keeps its names; a delete's
        // old row without its key column goes whole, with names.
        let projected = entry(
            EntryKind::Change {
                action: ChangeAction::Delete,
                old_values: Some(row! {"n" => "x"}),
                new_values: None,
            },
            crate::journal::Shape {
                old_full: false,
                new_full: false,
                key_fields: std::sync::Arc::clone(&keys),
            },
        );
        let wire = journal_entry(&projected, &text, wire::RowEncoding::Compact).unwrap();
        assert_eq!(
            Row::try_from(wire.old_values.as_ref().unwrap()).unwrap(),
            row! {"n" => "x"}
        );
        // An insert of a row that is only its key goes positionally; an old row that
        // is only its key goes whole (positionally when full).
        let keyed = entry(
            EntryKind::Change {
                action: ChangeAction::Update,
                old_values: Some(row! {"id" => 1}),
                new_values: Some(row! {"id" => 2}),
            },
            crate::journal::Shape {
                old_full: true,
                new_full: true,
                key_fields: keys,
            },
        );
        let wire = journal_entry(&keyed, &text, wire::RowEncoding::Compact).unwrap();
        let mut decoder = laredo_proto::RowDecoder::new();
        decoder.set_positional_columns(["id"]);
        assert_eq!(
            decoder.decode(wire.old_values.as_ref().unwrap()).unwrap(),
            row! {"id" => 1}
        );
        assert_eq!(
            decoder.decode(wire.new_values.as_ref().unwrap()).unwrap(),
            row! {"id" => 2}
        );
    }

    #[test]
    fn change_entries_carry_their_rows_and_position_text() {
        let entry = JournalEntry {
            sequence: 7,
            timestamp: SystemTime::UNIX_EPOCH,
            position: Some(Position::from_u64(42)),
            kind: EntryKind::Change {
                action: ChangeAction::Update,
                old_values: Some(row! {"id" => 1, "n" => "w"}),
                new_values: Some(row! {"id" => 1, "n" => "x"}),
            },
            // The table's columns are (id, n), keyed by id: both rows are full.
            shape: crate::journal::Shape {
                old_full: true,
                new_full: true,
                key_fields: vec!["id".to_string()].into(),
            },
            wire: crate::journal::WireCache::default(),
            compact: crate::journal::WireCache::default(),
        };
        let text = |p: &Position| format!("pos:{p}");
        let wire = journal_entry(&entry, &text, wire::RowEncoding::Named).unwrap();
        assert_eq!(wire.sequence, 7);
        assert_eq!(wire.source_position, "pos:42");
        assert_eq!(action_of(&wire), Some(ChangeAction::Update));
        assert_eq!(
            Row::try_from(wire.new_values.as_ref().unwrap()).unwrap(),
            row! {"id" => 1, "n" => "x"}
        );
        assert_eq!(
            Row::try_from(wire.old_values.as_ref().unwrap()).unwrap(),
            row! {"id" => 1, "n" => "w"}
        );
        assert!(schema_change(&entry, &text).is_none());

        // COMPACT: the full new row positionally, the old row cut to its identity.
        let compact = journal_entry(&entry, &text, wire::RowEncoding::Compact).unwrap();
        let new_values = compact.new_values.as_ref().unwrap();
        assert!(new_values.columns.is_empty());
        let mut decoder = laredo_proto::RowDecoder::new();
        decoder.set_positional_columns(["id", "n"]);
        assert_eq!(
            decoder.decode(new_values).unwrap(),
            row! {"id" => 1, "n" => "x"}
        );
        assert_eq!(
            decoder
                .decode(compact.old_values.as_ref().unwrap())
                .unwrap(),
            row! {"id" => 1}
        );
        assert!(compact.encoded_len() < wire.encoded_len());
        let compact_field = journal_entry_field(&entry, &text, wire::RowEncoding::Compact).unwrap();
        assert_eq!(compact_field.len(), {
            let len = compact.encoded_len();
            1 + prost::encoding::encoded_len_varint(len as u64) + len
        });

        // The shared encoding, framed, is the same `SyncResponse`.
        let field = journal_entry_field(&entry, &text, wire::RowEncoding::Named).unwrap();
        let mut framed = Vec::new();
        put_journal_entries_header(field.len(), &mut framed);
        framed.extend_from_slice(field);
        assert_eq!(framed.len(), journal_entries_encoded_len(field.len()));
        let decoded = wire::SyncResponse::decode(framed.as_slice()).unwrap();
        let expected = wire::SyncResponse {
            message: Some(wire::sync_response::Message::JournalEntries(
                wire::JournalEntries {
                    entries: vec![wire],
                },
            )),
        };
        assert_eq!(decoded, expected);
    }
}
