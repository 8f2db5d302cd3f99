//! The journal: the target's changes in sequence order, bounded by count and age.
//!
//! Sequences start at 1, only increase and have no gaps; `current` is the last one
//! assigned, so it survives pruning (an empty journal keeps it). Pruning drops from the
//! front only, never an entry after the lowest pin: a pin at `S` means "someone still
//! needs the entries after `S`". Entries are `Arc`s so readers copy pointers, not rows.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use laredo_core::{ChangeAction, ColumnDefinition, Position, Row};

/// What a journal entry records.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EntryKind {
    /// A row change.
    Change {
        /// Insert, update, delete or truncate.
        action: ChangeAction,
        /// The previous row (update, delete): the full row the target held, or the
        /// identity the source sent when the target had none.
        old_values: Option<Row>,
        /// The new row (insert, update).
        new_values: Option<Row>,
    },
    /// The table's columns changed (sent as `SchemaChange`).
    Schema {
        /// Columns before.
        old_columns: Vec<ColumnDefinition>,
        /// Columns after.
        new_columns: Vec<ColumnDefinition>,
    },
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JournalEntry {
    /// The sequence (from 1, no gaps).
    pub sequence: u64,
    /// When the target appended it.
    pub timestamp: SystemTime,
    /// The source position of the change; `None` for baseline rows until the baseline
    /// completes (they are then stamped with its end position).
    pub position: Option<Position>,
    /// What happened.
    pub kind: EntryKind,
    /// The shape of its rows against the table at the time, for the COMPACT encoding.
    pub(crate) shape: Shape,
    /// The entry as `Sync` streams send it, encoded once for every client: with
    /// NAMED rows, and with COMPACT rows.
    pub(crate) wire: WireCache,
    pub(crate) compact: WireCache,
}

/// What the COMPACT row encoding needs to know of a change entry's rows: which are the
/// table's full rows at the time of the change (same column names, same order), sent
/// positionally, and the key columns of the time, to which the old row is cut down.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) old_full: bool,
    pub(crate) new_full: bool,
    pub(crate) key_fields: Arc<[String]>,
}

impl Shape {
    /// The shape of `kind` against the table's `columns` and key fields now.
    pub(crate) fn of(kind: &EntryKind, columns: &[ColumnDefinition], keys: &Arc<[String]>) -> Self {
        let full = |row: &Option<Row>| {
            row.as_ref().is_some_and(|row| {
                !columns.is_empty()
                    && row.columns().len() == columns.len()
                    && row
                        .columns()
                        .iter()
                        .zip(columns)
                        .all(|(name, column)| **name == *column.name)
            })
        };
        match kind {
            EntryKind::Change {
                old_values,
                new_values,
                ..
            } => Self {
                old_full: full(old_values),
                new_full: full(new_values),
                key_fields: Arc::clone(keys),
            },
            EntryKind::Schema { .. } => Self::default(),
        }
    }
}

/// A journal entry's wire encoding (see `encode::journal_entry_field`), made by the
/// first stream that sends the entry and shared by the others. It is derived data:
/// equality ignores it, and a clone (a changed copy) starts empty.
#[derive(Default)]
pub(crate) struct WireCache(OnceLock<Bytes>);

impl WireCache {
    pub(crate) fn get_or_init(&self, encode: impl FnOnce() -> Bytes) -> &Bytes {
        self.0.get_or_init(encode)
    }
}

impl Clone for WireCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for WireCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for WireCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "encoded"
        } else {
            "-"
        })
    }
}

/// The result of reading entries after a sequence.
#[derive(Debug)]
pub(crate) enum Read {
    /// Entries in order, starting right after the cursor (possibly empty).
    Entries(Vec<Arc<JournalEntry>>),
    /// Entries after the cursor were pruned (or the journal was reseeded): a gap.
    Gap,
}

/// What came before the oldest kept entry.
#[derive(Debug, Clone, Default)]
enum Before {
    /// Nothing: the journal starts at sequence 1 from an empty table.
    #[default]
    Start,
    /// Dropped entries, the newest at this position.
    At(Position),
    /// Dropped entries of unknown position (unstamped baseline rows, a reseed).
    Unknown,
}

#[derive(Debug, Default)]
pub(crate) struct Journal {
    entries: VecDeque<Arc<JournalEntry>>,
    current: u64,
    /// The source position the journal has reached: the newest entry's, or the
    /// baseline's end.
    head_position: Option<Position>,
    before: Before,
    /// The sequences of the schema entries kept, oldest first.
    schemas: VecDeque<(u64, Vec<ColumnDefinition>)>,
}

impl Journal {
    pub(crate) fn current_sequence(&self) -> u64 {
        self.current
    }

    pub(crate) fn oldest_sequence(&self) -> u64 {
        self.entries.front().map_or(0, |e| e.sequence)
    }

    pub(crate) fn oldest_timestamp(&self) -> Option<SystemTime> {
        self.entries.front().map(|e| e.timestamp)
    }

    /// The source position the journal has reached (newest entry or baseline end).
    pub(crate) fn head_position(&self) -> Option<&Position> {
        self.head_position.as_ref()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The position of the entry at `sequence`, when it is kept and has one.
    pub(crate) fn position_at(&self, sequence: u64) -> Option<Position> {
        self.get(sequence).and_then(|e| e.position.clone())
    }

    fn get(&self, sequence: u64) -> Option<&Arc<JournalEntry>> {
        let oldest = self.entries.front()?.sequence;
        let idx = usize::try_from(sequence.checked_sub(oldest)?).ok()?;
        self.entries.get(idx)
    }

    /// Appends a change entry of the given `shape` ([`Shape::of`] against the table of
    /// the time).
    pub(crate) fn append(
        &mut self,
        position: Option<Position>,
        kind: EntryKind,
        shape: Shape,
    ) -> u64 {
        debug_assert!(matches!(kind, EntryKind::Change { .. }));
        self.push(position, kind, shape)
    }

    /// Appends a schema entry; `prior` are the target's columns up to it (which may
    /// differ from the source's `old_columns`): the rows before it follow them.
    pub(crate) fn append_schema(
        &mut self,
        position: Option<Position>,
        kind: EntryKind,
        prior: Vec<ColumnDefinition>,
    ) -> u64 {
        debug_assert!(matches!(kind, EntryKind::Schema { .. }));
        let sequence = self.push(position, kind, Shape::default());
        self.schemas.push_back((sequence, prior));
        sequence
    }

    fn push(&mut self, position: Option<Position>, kind: EntryKind, shape: Shape) -> u64 {
        self.current += 1;
        if position.is_some() {
            self.head_position.clone_from(&position);
        }
        self.entries.push_back(Arc::new(JournalEntry {
            sequence: self.current,
            timestamp: SystemTime::now(),
            position,
            kind,
            shape,
            wire: WireCache::default(),
            compact: WireCache::default(),
        }));
        self.current
    }

    /// The target's columns just after `sequence` when a schema entry kept in the
    /// journal came later (the columns it replaced); `None`: the current columns.
    /// COMPACT streams' positional rows after `sequence` follow these until the next
    /// schema change.
    pub(crate) fn columns_after(&self, sequence: u64) -> Option<&[ColumnDefinition]> {
        self.schemas
            .iter()
            .find(|(s, _)| *s > sequence)
            .map(|(_, prior)| prior.as_slice())
    }

    /// Stamps `position` on every entry that has none (the baseline rows).
    pub(crate) fn stamp_unpositioned(&mut self, position: &Position) {
        for entry in &mut self.entries {
            if entry.position.is_none() {
                let mut stamped = JournalEntry::clone(entry);
                stamped.position = Some(position.clone());
                *entry = Arc::new(stamped);
            }
        }
        self.head_position = Some(position.clone());
    }

    /// Drops every entry and skips one sequence, so no earlier sequence is covered any
    /// more (a restore replaced the rows).
    pub(crate) fn reseed(&mut self) {
        self.entries.clear();
        self.schemas.clear();
        self.current += 1;
        self.head_position = None;
        self.before = Before::Unknown;
    }

    /// True when a client that holds everything up to `sequence` can be served from
    /// the journal without a gap.
    pub(crate) fn covers(&self, sequence: u64) -> bool {
        if sequence > self.current {
            return false;
        }
        if sequence == self.current {
            return true;
        }
        let oldest = self.oldest_sequence();
        oldest != 0 && sequence + 1 >= oldest
    }

    /// Entries after `after`, at most `limit`.
    pub(crate) fn read_after(&self, after: u64, limit: usize) -> Read {
        if after >= self.current {
            return Read::Entries(Vec::new());
        }
        if !self.covers(after) {
            return Read::Gap;
        }
        let oldest = self.oldest_sequence();
        let skip = usize::try_from(after + 1 - oldest).unwrap_or(usize::MAX);
        Read::Entries(
            self.entries
                .iter()
                .skip(skip)
                .take(limit)
                .cloned()
                .collect(),
        )
    }

    /// Visits the entries after `after` in order, at most `limit`, until `visit`
    /// returns false; its second argument counts the entries left to visit, this one
    /// included (1 for the last).
    /// Returns false (visiting nothing) when entries after `after` were pruned: a gap.
    pub(crate) fn visit_after(
        &self,
        after: u64,
        limit: usize,
        mut visit: impl FnMut(&Arc<JournalEntry>, usize) -> bool,
    ) -> bool {
        if after >= self.current {
            return true;
        }
        if !self.covers(after) {
            return false;
        }
        let oldest = self.oldest_sequence();
        let skip = usize::try_from(after + 1 - oldest).unwrap_or(usize::MAX);
        let end = self.entries.len().min(skip.saturating_add(limit));
        for idx in skip..end {
            if !visit(&self.entries[idx], end - idx) {
                break;
            }
        }
        true
    }

    /// The newest `limit` entries.
    pub(crate) fn tail(&self, limit: usize) -> Vec<Arc<JournalEntry>> {
        let skip = self.entries.len().saturating_sub(limit);
        self.entries.iter().skip(skip).cloned().collect()
    }

    /// The sequence to resume after for a client at source position `position`, or
    /// `None` when the journal no longer covers it.
    ///
    /// The answer is the last entry strictly before `position`: entries at exactly the
    /// client's position are sent again (several entries may share a position, and the
    /// client may hold only some of them), which clients absorb by applying by key.
    /// While baseline rows are unstamped (the baseline is running) no position is
    /// covered.
    pub(crate) fn resume_after_position(
        &self,
        position: &Position,
        compare: impl Fn(&Position, &Position) -> Ordering,
    ) -> Option<u64> {
        for entry in self.entries.iter().rev() {
            let entry_position = entry.position.as_ref()?;
            if compare(entry_position, position).is_lt() {
                return Some(entry.sequence);
            }
        }
        let Some(oldest) = self.entries.front() else {
            // Nothing kept: covered when the client is not behind the journal's head.
            let head = self.head_position.as_ref()?;
            return compare(head, position).is_le().then_some(self.current);
        };
        // Every kept entry is at or after the client. Resuming before the oldest is
        // safe only when the oldest is at the client's position and nothing dropped
        // before it shares that position.
        let oldest_position = oldest.position.as_ref()?;
        let boundary_ok = match &self.before {
            Before::Start => true,
            Before::At(dropped) => compare(dropped, position).is_lt(),
            Before::Unknown => false,
        };
        (compare(oldest_position, position).is_eq() && boundary_ok).then_some(oldest.sequence - 1)
    }

    /// Drops entries beyond `max_entries` or older than `max_age` (zero: no age limit),
    /// never one after `pin` (when set). Returns how many were dropped.
    pub(crate) fn prune(&mut self, max_entries: usize, max_age: Duration, pin: Option<u64>) -> u64 {
        let now = SystemTime::now();
        let mut dropped = 0;
        while let Some(front) = self.entries.front() {
            let too_many = self.entries.len() > max_entries.max(1);
            let too_old = !max_age.is_zero()
                && now
                    .duration_since(front.timestamp)
                    .is_ok_and(|age| age > max_age);
            if !(too_many || too_old) || pin.is_some_and(|pin| front.sequence > pin) {
                break;
            }
            self.before = match &front.position {
                Some(position) => Before::At(position.clone()),
                None => Before::Unknown,
            };
            if self.schemas.front().map(|(s, _)| *s) == Some(front.sequence) {
                self.schemas.pop_front();
            }
            self.entries.pop_front();
            dropped += 1;
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use laredo_core::row;

    use super::*;

    fn insert(journal: &mut Journal, position: Option<u64>) -> u64 {
        journal.append(
            position.map(Position::from_u64),
            EntryKind::Change {
                action: ChangeAction::Insert,
                old_values: None,
                new_values: Some(row! {"id" => 1}),
            },
            Shape::default(),
        )
    }

    fn cmp(a: &Position, b: &Position) -> Ordering {
        a.as_u64().cmp(&b.as_u64())
    }

    #[test]
    fn sequences_start_at_one_and_survive_pruning() {
        let mut journal = Journal::default();
        assert_eq!(
            (journal.current_sequence(), journal.oldest_sequence()),
            (0, 0)
        );
        for _ in 0..5 {
            insert(&mut journal, None);
        }
        assert_eq!(
            (journal.current_sequence(), journal.oldest_sequence()),
            (5, 1)
        );
        assert_eq!(journal.prune(2, Duration::ZERO, None), 3);
        assert_eq!(
            (journal.current_sequence(), journal.oldest_sequence()),
            (5, 4)
        );
        assert_eq!(insert(&mut journal, None), 6);
    }

    #[test]
    fn pins_stop_pruning_after_them() {
        let mut journal = Journal::default();
        for _ in 0..10 {
            insert(&mut journal, None);
        }
        assert_eq!(journal.prune(1, Duration::ZERO, Some(3)), 3);
        assert_eq!(journal.oldest_sequence(), 4);
        assert!(journal.covers(3));
        assert!(!journal.covers(2));
    }

    #[test]
    fn reads_after_a_pruned_sequence_are_gaps() {
        let mut journal = Journal::default();
        for _ in 0..10 {
            insert(&mut journal, None);
        }
        journal.prune(5, Duration::ZERO, None);
        assert!(matches!(journal.read_after(4, 100), Read::Gap));
        let Read::Entries(entries) = journal.read_after(5, 2) else {
            panic!("covered")
        };
        let seqs: Vec<u64> = entries.iter().map(|e| e.sequence).collect();
        assert_eq!(seqs, [6, 7]);
        assert!(matches!(journal.read_after(10, 2), Read::Entries(e) if e.is_empty()));
        journal.reseed();
        assert!(matches!(journal.read_after(10, 2), Read::Gap));
        assert!(!journal.covers(10));
        assert!(journal.covers(11));
    }

    #[test]
    fn resume_by_position_repeats_only_the_clients_position() {
        let mut journal = Journal::default();
        insert(&mut journal, None); // 1: baseline
        journal.stamp_unpositioned(&Position::from_u64(10));
        insert(&mut journal, Some(20)); // 2
        insert(&mut journal, Some(30)); // 3
        insert(&mut journal, Some(30)); // 4: same position
        insert(&mut journal, Some(40)); // 5
        let at = |journal: &Journal, p| journal.resume_after_position(&Position::from_u64(p), cmp);
        assert_eq!(at(&journal, 30), Some(2));
        assert_eq!(at(&journal, 35), Some(4));
        assert_eq!(at(&journal, 99), Some(5));
        assert_eq!(at(&journal, 20), Some(1));
        assert_eq!(
            at(&journal, 10),
            Some(0),
            "the baseline rows are sent again"
        );
        assert_eq!(at(&journal, 5), None, "before the baseline");
        journal.prune(2, Duration::ZERO, None);
        assert_eq!(journal.oldest_sequence(), 4);
        assert_eq!(at(&journal, 30), None, "entry 3 at 30 was pruned");
        assert_eq!(at(&journal, 35), Some(4));
        assert_eq!(at(&journal, 40), Some(4));
        journal.prune(1, Duration::ZERO, None);
        assert_eq!(at(&journal, 40), Some(4), "entry 4 (dropped) is before 40");
    }

    #[test]
    fn an_empty_journal_covers_only_positions_at_or_after_its_head() {
        let mut journal = Journal::default();
        assert_eq!(
            journal.resume_after_position(&Position::from_u64(7), cmp),
            None,
            "no baseline yet"
        );
        journal.stamp_unpositioned(&Position::from_u64(5));
        assert_eq!(
            journal.resume_after_position(&Position::from_u64(7), cmp),
            Some(0)
        );
        insert(&mut journal, Some(20));
        journal.prune(0, Duration::from_nanos(1), None);
        assert_eq!(journal.len(), 0);
        assert_eq!(
            journal.resume_after_position(&Position::from_u64(20), cmp),
            Some(1)
        );
        assert_eq!(
            journal.resume_after_position(&Position::from_u64(19), cmp),
            None
        );
    }
}
