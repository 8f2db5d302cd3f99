//! The write path: a batch of changes (or a schema change) becomes rows and journal
//! entries under one write lock, then the journal is pruned and the new head is
//! published to the streams; also the journal's read side.
//!
//! Each append holds the write lock for the whole batch: the rows change and each
//! change is journaled at its position, so a stream never sees rows and journal
//! disagree. Pruning runs under the same lock but only looks at the clients' pins
//! when due (every [`prune_slack`] entries over the limit, or every [`PRUNE_EVERY`]),
//! and keeps every entry after the lowest pin of a connected client or of a snapshot
//! build in flight. After the lock is released, the head goes out on a watch channel
//! that wakes every stream (no polling), the observer hears of pruning, and row
//! listeners ([`RowAccess::subscribe`]) hear each change, outside the lock since a
//! listener may read the target.
//!
//! [`RowAccess::subscribe`]: laredo_core::RowAccess::subscribe

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use laredo_core::{Change, ColumnDefinition, Position, RowChange};
use tokio::sync::watch;

use super::FanoutTarget;
use super::state::{Notification, State};
use crate::journal::{EntryKind, JournalEntry, Read};

/// How often pruning looks at the clients' pins at the least, however few entries
/// were appended.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// Entries appended between two looks at the clients' pins: 1/64 of
/// `journal.max_entries`, at most 4,096 (1 for journals under 128 entries).
pub(super) fn prune_slack(max_entries: usize) -> usize {
    (max_entries / 64).clamp(1, 4096)
}

impl FanoutTarget {
    /// The last journal sequence assigned (0 when none).
    pub fn current_sequence(&self) -> u64 {
        self.state.read().journal.current_sequence()
    }

    /// The oldest journal sequence kept (0 when the journal is empty).
    pub fn oldest_sequence(&self) -> u64 {
        self.state.read().journal.oldest_sequence()
    }

    /// The number of journal entries kept.
    pub fn journal_len(&self) -> usize {
        self.state.read().journal.len()
    }

    /// When the oldest kept journal entry was appended.
    pub fn journal_oldest_at(&self) -> Option<SystemTime> {
        self.state.read().journal.oldest_timestamp()
    }

    /// Journal entries after `sequence`, at most `limit`; `None` when entries after it
    /// were pruned.
    pub fn entries_since(&self, sequence: u64, limit: usize) -> Option<Vec<Arc<JournalEntry>>> {
        match self.state.read().journal.read_after(sequence, limit) {
            Read::Entries(entries) => Some(entries),
            Read::Gap => None,
        }
    }

    /// The newest `limit` journal entries, oldest first.
    pub fn journal_tail(&self, limit: usize) -> Vec<Arc<JournalEntry>> {
        self.state.read().journal.tail(limit)
    }

    /// The position of the entry at `sequence`, when kept and known.
    pub fn position_at(&self, sequence: u64) -> Option<Position> {
        self.state.read().journal.position_at(sequence)
    }

    /// The sequence a client at source `position` resumes after (FO-08), or `None`
    /// when the journal no longer covers it. Entries at exactly `position` are sent
    /// again.
    pub fn resume_sequence_for_position(
        &self,
        position: &Position,
        compare: impl Fn(&Position, &Position) -> std::cmp::Ordering,
    ) -> Option<u64> {
        self.state
            .read()
            .journal
            .resume_after_position(position, compare)
    }

    pub(crate) fn subscribe_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    pub(crate) fn subscribe_lag_tick(&self) -> watch::Receiver<u64> {
        self.lag_tick.subscribe()
    }

    /// Entries per [`lag_tick`](Self::lag_tick) step: an eighth of a client's send
    /// buffer, so a stalled client is found at most that many entries after it fell a
    /// buffer behind.
    fn lag_step(&self) -> u64 {
        (self.config.client_buffer_max_size as u64 / 8).max(1)
    }

    /// Publishes the journal's head to the streams.
    pub(super) fn publish_head(&self, current: u64) {
        self.head.send_replace(current);
        let step = self.lag_step();
        self.lag_tick.send_if_modified(|tick| {
            let changed = *tick / step != current / step;
            *tick = current;
            changed
        });
    }

    /// Visits journal entries after `sequence` under the read lock (see
    /// `Journal::visit_after`); false on a gap.
    pub(crate) fn visit_after(
        &self,
        sequence: u64,
        limit: usize,
        visit: impl FnMut(&Arc<JournalEntry>, usize) -> bool,
    ) -> bool {
        self.state
            .read()
            .journal
            .visit_after(sequence, limit, visit)
    }

    /// Applies `changes` and journals each at its position, under one write lock;
    /// then prunes and publishes the head.
    pub(super) fn append_changes(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let listening = !self.listeners.is_empty();
        let mut notifications = Vec::new();
        let (current, pruned) = {
            let mut state = self.state.write();
            let mut current = state.journal.current_sequence();
            for (at, change) in changes.iter().enumerate() {
                if listening {
                    state.row_changes(&change.kind, Some(at), &mut notifications);
                }
                let kind = state.apply_change(&change.kind);
                current = state.append(Some(change.position.clone()), kind);
            }
            let pruned = self.prune_locked(&mut state, changes.len());
            self.count_for_snapshot_check(&mut state, changes.len());
            (current, pruned)
        };
        self.publish_head(current);
        self.report_pruned(pruned);
        self.notify(&notifications, changes);
    }

    /// Calls the row listeners with `notifications` (outside the state's lock: a
    /// listener may read the target), in order; `batch` holds the changes they refer
    /// to.
    pub(super) fn notify(&self, notifications: &[Notification], batch: &[Change]) {
        if notifications.is_empty() {
            return;
        }
        let listeners = self.listeners.snapshot();
        for (old, new, at) in notifications {
            let change = RowChange::new(old.as_ref(), new.as_ref(), at.and_then(|n| batch.get(n)));
            for listener in &listeners {
                listener(&change);
            }
        }
    }

    /// Journals a schema entry at the journal's position, then prunes and publishes
    /// the head.
    pub(super) fn append_schema(
        &self,
        old_columns: &[ColumnDefinition],
        new_columns: &[ColumnDefinition],
    ) {
        let (current, pruned) = {
            let mut state = self.state.write();
            let kind = EntryKind::Schema {
                old_columns: old_columns.to_vec(),
                new_columns: new_columns.to_vec(),
            };
            // It takes the journal's position, so clients can still resume by
            // position across it.
            let position = state.journal.head_position().cloned();
            let current = state.append(position, kind);
            let pruned = self.prune_locked(&mut state, 1);
            self.count_for_snapshot_check(&mut state, 1);
            (current, pruned)
        };
        self.publish_head(current);
        self.report_pruned(pruned);
    }

    /// Prunes after `appended` new entries. Finding the lowest pin reads every client,
    /// so with a full journal (the steady state of a long-running server) it is done
    /// once per [`prune_slack`] entries, or once a second, rather than on every append:
    /// the journal may run that many entries over `journal.max_entries`, and never
    /// drops an entry sooner than configured.
    pub(super) fn prune_locked(&self, state: &mut State, appended: usize) -> Option<(u64, u64)> {
        let max_entries = self.config.journal_max_entries.max(1);
        let max_age = self.config.journal_max_age;
        let journal = &state.journal;
        let too_old = !max_age.is_zero()
            && journal
                .oldest_timestamp()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > max_age);
        if journal.len() <= max_entries && !too_old {
            return None;
        }
        state.appended_since_prune = state.appended_since_prune.saturating_add(appended);
        let now = Instant::now();
        let due = state.appended_since_prune >= prune_slack(max_entries)
            || state
                .last_prune
                .is_none_or(|last| now.duration_since(last) >= PRUNE_EVERY);
        if !due {
            return None;
        }
        state.appended_since_prune = 0;
        state.last_prune = Some(now);
        let clients = self.clients.lock().lowest_pin();
        // A snapshot build in flight keeps the journal after its floor for the clients
        // that will start from it.
        let building = state.building.as_ref().map(|b| b.floor);
        let pin = match (clients, building) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let journal = &mut state.journal;
        let dropped = journal.prune(max_entries, max_age, pin);
        (dropped > 0).then(|| (dropped, journal.oldest_sequence()))
    }

    pub(super) fn report_pruned(&self, pruned: Option<(u64, u64)>) {
        if let (Some((count, oldest)), Some(observer)) = (pruned, &self.observer) {
            observer.on_fanout_journal_pruned(&self.label(), count, oldest);
        }
    }
}
