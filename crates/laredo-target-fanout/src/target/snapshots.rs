//! The in-memory snapshots ([`FanoutSnapshot`]): the rows at a journal sequence, from
//! which `FULL_SNAPSHOT` streams start, and their retention.
//!
//! Snapshots are taken under the write lock at baseline end, after a truncate or a
//! schema change, at close, on restore and every `snapshot.interval` (the scheduler
//! here); none is taken when the newest is already at the head with the same columns.
//! `snapshot.retention` keeps at most `keep_count` of them and drops those older than
//! `max_age`, except the newest, which serves new clients; ages are checked when a
//! snapshot is taken, when a stream opens, and every [`SNAPSHOT_AGE_CHECK_EVERY`]
//! appends.
//!
//! A `FULL_SNAPSHOT` stream is served the newest snapshot while the journal still
//! covers it and no more entries follow it than it has rows (catching up is then
//! cheaper than a copy). Otherwise a snapshot is *built*: at most one at a time, on a
//! blocking thread, copying the rows under the **read** lock (appends wait, streams
//! keep reading). The build pins the journal after the sequence it started at (its
//! floor); every `FULL_SNAPSHOT` stream that opens meanwhile registers at that floor and
//! waits for the same build, then resumes after the build's sequence, which is at
//! least the floor. So a flood of `Sync` calls costs one copy of the table, not one
//! each, and the write lock is never held for a copy.

use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::{SystemTime, UNIX_EPOCH};

use laredo_core::{ColumnDefinition, Position, Row};
use tokio::sync::watch;

use super::FanoutTarget;
use super::state::State;

/// A snapshot held in memory: the rows at a journal sequence.
#[derive(Debug)]
pub struct FanoutSnapshot {
    pub(super) id: String,
    pub(super) sequence: u64,
    pub(super) position: Option<Position>,
    pub(super) created_at: SystemTime,
    pub(super) columns: Vec<ColumnDefinition>,
    pub(super) rows: Vec<Row>,
    pub(super) size_bytes: u64,
}

impl FanoutSnapshot {
    /// `fanout-<sequence>-<unix-ms>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The journal sequence the rows are at.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The source position the rows are at, when known.
    pub fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    /// When it was taken.
    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }

    /// The table's columns at that point.
    pub fn columns(&self) -> &[ColumnDefinition] {
        &self.columns
    }

    /// The rows.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The approximate memory the rows hold (their raw size).
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
}

/// A snapshot being built (see the module docs).
pub(super) struct Build {
    /// The journal's sequence when the build started: its rows are at this sequence or
    /// later, and the journal after it is kept while the build runs.
    pub(super) floor: u64,
    /// The snapshot, once built; dropped without one if the build failed.
    pub(super) done: watch::Sender<Option<Arc<FanoutSnapshot>>>,
}

/// Appends between two checks of the snapshots' ages (`snapshot.retention.max_age`);
/// snapshots are also checked whenever one is taken or a stream opens.
pub(super) const SNAPSHOT_AGE_CHECK_EVERY: usize = 1024;

fn unix_millis(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

impl FanoutTarget {
    /// The snapshots held, newest first.
    pub fn snapshots(&self) -> Vec<Arc<FanoutSnapshot>> {
        self.state.read().snapshots.iter().cloned().collect()
    }

    /// The snapshot with this id, when held.
    pub fn snapshot(&self, id: &str) -> Option<Arc<FanoutSnapshot>> {
        self.state
            .read()
            .snapshots
            .iter()
            .find(|s| s.id == id)
            .cloned()
    }

    /// Takes a snapshot of the current rows now (and applies the retention).
    pub fn take_snapshot(&self) -> Arc<FanoutSnapshot> {
        let snapshot = {
            let mut state = self.state.write();
            self.snapshot_locked(&mut state)
        };
        self.report_snapshot(&snapshot);
        snapshot
    }

    /// The number of snapshots taken (copies of the rows made) since the target was
    /// built: at baseline end, truncate, schema change, close, restore, every
    /// `snapshot.interval`, and the builds for `FULL_SNAPSHOT` clients, which share one
    /// build among every client that asks while it runs.
    pub fn snapshots_taken(&self) -> u64 {
        self.snapshots_taken.load(AtomicOrdering::Relaxed)
    }

    /// Takes a snapshot under the write lock, unless the newest is already at the
    /// journal's head with the same columns.
    pub(super) fn snapshot_locked(&self, state: &mut State) -> Arc<FanoutSnapshot> {
        let sequence = state.journal.current_sequence();
        if let Some(newest) = state.snapshots.front()
            && newest.sequence == sequence
            && newest.columns == state.columns
        {
            return Arc::clone(newest);
        }
        let snapshot = Arc::new(self.copy_rows(state));
        self.keep_snapshot(state, Arc::clone(&snapshot));
        snapshot
    }

    /// A snapshot of the rows at the journal's head (the caller holds a lock).
    fn copy_rows(&self, state: &State) -> FanoutSnapshot {
        let sequence = state.journal.current_sequence();
        let created_at = SystemTime::now();
        let rows: Vec<Row> = state.rows.values().cloned().collect();
        let size_bytes = rows.iter().map(|r| r.raw_size() as u64).sum();
        self.snapshots_taken.fetch_add(1, AtomicOrdering::Relaxed);
        FanoutSnapshot {
            id: format!("fanout-{sequence}-{}", unix_millis(created_at)),
            sequence,
            position: state.journal.head_position().cloned(),
            created_at,
            columns: state.columns.clone(),
            rows,
            size_bytes,
        }
    }

    /// Adds `snapshot` to the held ones (newest first, by sequence) and applies the
    /// retention.
    fn keep_snapshot(&self, state: &mut State, snapshot: Arc<FanoutSnapshot>) {
        let at = state
            .snapshots
            .iter()
            .position(|s| s.sequence <= snapshot.sequence)
            .unwrap_or(state.snapshots.len());
        state.snapshots.insert(at, snapshot);
        self.retain_snapshots(state, SystemTime::now());
    }

    /// Applies `snapshot.retention`: at most `keep_count` snapshots (0: any number),
    /// none older than `max_age` (zero: any age) except the newest, which serves new
    /// clients.
    pub(super) fn retain_snapshots(&self, state: &mut State, now: SystemTime) {
        state.appended_since_snapshot_check = 0;
        let keep = self.config.snapshot_keep_count;
        if keep > 0 {
            state.snapshots.truncate(keep);
        }
        let max_age = self.config.snapshot_max_age;
        if max_age.is_zero() {
            return;
        }
        let newest = state.snapshots.front().map(|s| s.sequence);
        state.snapshots.retain(|s| {
            Some(s.sequence) == newest
                || now
                    .duration_since(s.created_at)
                    .is_ok_and(|age| age <= max_age)
        });
    }

    /// Starts a snapshot build (see the module docs) unless one is in flight; returns
    /// the build in flight.
    pub(super) fn start_build(&self, state: &mut State) -> Arc<Build> {
        if let Some(build) = &state.building {
            return Arc::clone(build);
        }
        let build = Arc::new(Build {
            floor: state.journal.current_sequence(),
            done: watch::Sender::new(None),
        });
        state.building = Some(Arc::clone(&build));
        let target = self
            .me
            .upgrade()
            .expect("a target in use is held by an Arc");
        let running = Arc::clone(&build);
        // Detached on purpose: the build must finish for every client waiting on it,
        // whichever of them goes away; they see its end through `done`.
        drop(tokio::task::spawn_blocking(move || {
            target.run_build(&running);
        }));
        build
    }

    /// Copies the rows under the read lock, keeps the snapshot, ends the build and
    /// hands the snapshot to the clients waiting on it.
    fn run_build(&self, build: &Arc<Build>) {
        /// Ends the build even if the copy panics (its clients then get an error).
        struct Finish<'a>(&'a FanoutTarget, &'a Arc<Build>);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                let mut state = self.0.state.write();
                if state
                    .building
                    .as_ref()
                    .is_some_and(|b| Arc::ptr_eq(b, self.1))
                {
                    state.building = None;
                }
            }
        }
        let finish = Finish(self, build);
        #[cfg(test)]
        self.wait_build_gate();
        let snapshot = Arc::new(self.copy_rows(&self.state.read()));
        {
            let mut state = self.state.write();
            self.keep_snapshot(&mut state, Arc::clone(&snapshot));
            state.building = None;
        }
        drop(finish);
        build.done.send_replace(Some(Arc::clone(&snapshot)));
        self.report_snapshot(&snapshot);
    }

    #[cfg(test)]
    fn wait_build_gate(&self) {
        let gate = self.build_gate.lock().take();
        if let Some(gate) = gate {
            let _ = gate.recv();
        }
    }

    pub(super) fn report_snapshot(&self, snapshot: &FanoutSnapshot) {
        tracing::debug!(snapshot = %snapshot.id, rows = snapshot.rows.len(), "fan-out snapshot taken");
        if let Some(observer) = &self.observer {
            observer.on_fanout_snapshot_created(
                &self.label(),
                &snapshot.id,
                snapshot.sequence,
                snapshot.rows.len() as u64,
            );
        }
    }

    /// The newest snapshot when a `FULL_SNAPSHOT` stream may start from it: it has the
    /// current columns and is at the head, or the journal covers it and no more entries
    /// follow it than it has rows.
    pub(super) fn reusable_snapshot(state: &State) -> Option<Arc<FanoutSnapshot>> {
        let newest = state.snapshots.front()?;
        let current = state.journal.current_sequence();
        let behind = current.saturating_sub(newest.sequence);
        let usable = newest.columns == state.columns
            && (behind == 0
                || (state.journal.covers(newest.sequence) && behind <= newest.rows.len() as u64));
        usable.then(|| Arc::clone(newest))
    }

    /// Counts appended entries; every [`SNAPSHOT_AGE_CHECK_EVERY`] of them, drops the
    /// snapshots past their retention.
    pub(super) fn count_for_snapshot_check(&self, state: &mut State, appended: usize) {
        state.appended_since_snapshot_check += appended;
        if state.appended_since_snapshot_check >= SNAPSHOT_AGE_CHECK_EVERY {
            self.retain_snapshots(state, SystemTime::now());
        }
    }

    pub(super) fn start_scheduler(&self) {
        let interval = self.config.snapshot_interval;
        if interval.is_zero() {
            return;
        }
        let mut scheduler = self.scheduler.lock();
        if scheduler.is_some() {
            return;
        }
        let me = self.me.clone();
        *scheduler = Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(target) = me.upgrade() else { return };
                if target.is_ready() {
                    target.take_snapshot();
                }
            }
        }));
    }
}
