//! Opening a stream (FO-15): choosing where it starts, and registering its client and
//! journal pin at that point, in one step under the target's write lock.
//!
//! The modes are tried in order: by source position (entries after the last one
//! strictly before the client's position), by sequence (when the journal still covers
//! it), from a snapshot the client holds (`DELTA_FROM_SNAPSHOT`, when the journal covers
//! it), else a full snapshot. Because the choice and the pin are made under the lock
//! that orders appends, no change can land between "the stream starts at S" and the
//! pin at S. A `FULL_SNAPSHOT` stream takes the newest snapshot when it is still cheaper
//! than a copy; otherwise it registers at the floor of the snapshot build in flight
//! (starting one if none runs) and, after the lock is released, waits for that build
//! (see the `snapshots` module docs), then moves its pin to the build's sequence.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64};
use std::time::SystemTime;

use laredo_core::{ColumnDefinition, Position, SyncMode};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::FanoutTarget;
use super::clients::{ClientGuard, ClientRecord, ClientState};
use super::snapshots::FanoutSnapshot;

/// What a new stream asks for (FO-15).
pub(crate) struct OpenRequest<'a> {
    pub(crate) client_id: String,
    pub(crate) last_known_sequence: u64,
    pub(crate) last_known_position: Option<Position>,
    pub(crate) last_snapshot_id: &'a str,
    pub(crate) filters: Vec<laredo_proto::laredo::replication::v1::FieldPredicate>,
    pub(crate) compare: &'a (dyn Fn(&Position, &Position) -> std::cmp::Ordering + Send + Sync),
}

/// Why a stream could not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// `max_clients` (the value) streams are open.
    MaxClients(usize),
    Draining,
    /// The snapshot build the stream waited for failed.
    SnapshotFailed,
}

/// A registered stream and where it starts.
pub(crate) struct Opened {
    pub(crate) guard: ClientGuard,
    pub(crate) mode: SyncMode,
    pub(crate) resume_from: u64,
    /// The snapshot to send (FULL_SNAPSHOT) or the one the client holds
    /// (DELTA_FROM_SNAPSHOT).
    pub(crate) snapshot: Option<Arc<FanoutSnapshot>>,
    pub(crate) current_sequence: u64,
    pub(crate) oldest_sequence: u64,
    pub(crate) columns: Vec<ColumnDefinition>,
    /// The columns as of `resume_from`, which COMPACT streams' positional rows follow
    /// until the first schema change they send.
    pub(crate) row_columns: Vec<ColumnDefinition>,
}

impl FanoutTarget {
    /// Registers a stream and chooses its mode (FO-15) under the write lock, so no
    /// change lands between the choice and the pin; a `FULL_SNAPSHOT` stream that needs
    /// a new snapshot then waits for the build in flight (see the module docs).
    ///
    /// # Cancel safety
    /// Dropping the future while it waits for a build unregisters the client; the
    /// build goes on for the others.
    pub(crate) async fn open(&self, request: OpenRequest<'_>) -> Result<Opened, OpenError> {
        let (mut opened, building) = self.register(request)?;
        if let Some(observer) = &self.observer {
            observer.on_fanout_client_connected(
                &self.label(),
                &opened.guard.record.client_id,
                opened.mode,
            );
        }
        let Some(mut done) = building else {
            return Ok(opened);
        };
        let snapshot = match done.wait_for(Option::is_some).await {
            Ok(snapshot) => snapshot.clone().expect("waited for a snapshot"),
            Err(_) => {
                opened.guard.set_reason("snapshot build failed");
                return Err(OpenError::SnapshotFailed);
            }
        };
        // The build's rows are at its floor (the client's pin) or later.
        opened.guard.record.advance(snapshot.sequence);
        let state = self.state.read();
        opened.resume_from = snapshot.sequence;
        opened.current_sequence = state.journal.current_sequence();
        opened.oldest_sequence = state.journal.oldest_sequence();
        opened.columns = snapshot.columns.clone();
        opened.row_columns = state
            .journal
            .columns_after(snapshot.sequence)
            .map_or_else(|| state.columns.clone(), <[_]>::to_vec);
        drop(state);
        opened.snapshot = Some(snapshot);
        Ok(opened)
    }

    /// Registers a stream; for a `FULL_SNAPSHOT` stream whose snapshot is being built,
    /// also returns where the snapshot will arrive.
    #[expect(clippy::type_complexity, reason = "private, one caller")]
    fn register(
        &self,
        request: OpenRequest<'_>,
    ) -> Result<(Opened, Option<watch::Receiver<Option<Arc<FanoutSnapshot>>>>), OpenError> {
        let target = self
            .me
            .upgrade()
            .expect("a target in use is held by an Arc");
        let mut state = self.state.write();
        if self.is_draining() {
            return Err(OpenError::Draining);
        }
        let mut registry = self.clients.lock();
        let max = self.config.max_clients;
        if max > 0 && registry.clients.len() >= max {
            return Err(OpenError::MaxClients(max));
        }
        let journal = &state.journal;
        let by_position = request
            .last_known_position
            .as_ref()
            .and_then(|p| journal.resume_after_position(p, request.compare));
        let by_sequence = (request.last_known_sequence > 0
            && journal.covers(request.last_known_sequence))
        .then_some(request.last_known_sequence);
        let by_snapshot = (!request.last_snapshot_id.is_empty())
            .then(|| {
                state
                    .snapshots
                    .iter()
                    .find(|s| s.id == request.last_snapshot_id && journal.covers(s.sequence))
                    .cloned()
            })
            .flatten();
        let mut building = None;
        let (mode, resume_from, snapshot) = if let Some(seq) = by_position {
            (SyncMode::Delta, seq, None)
        } else if let Some(seq) = by_sequence {
            (SyncMode::Delta, seq, None)
        } else if let Some(snapshot) = by_snapshot {
            (
                SyncMode::DeltaFromSnapshot,
                snapshot.sequence,
                Some(snapshot),
            )
        } else {
            self.retain_snapshots(&mut state, SystemTime::now());
            if let Some(snapshot) = Self::reusable_snapshot(&state) {
                (SyncMode::FullSnapshot, snapshot.sequence, Some(snapshot))
            } else {
                let build = self.start_build(&mut state);
                building = Some(build.done.subscribe());
                (SyncMode::FullSnapshot, build.floor, None)
            }
        };
        let record = Arc::new(ClientRecord {
            client_id: request.client_id,
            connected_at: SystemTime::now(),
            mode,
            filters: request.filters,
            sequence: AtomicU64::new(resume_from),
            state: AtomicU8::new(ClientState::CatchingUp.as_u8()),
            depth: Mutex::new(None),
            cancel: CancellationToken::new(),
        });
        registry.next_key += 1;
        let key = registry.next_key;
        registry.clients.insert(key, Arc::clone(&record));
        drop(registry);
        let opened = Opened {
            guard: ClientGuard {
                target,
                key,
                record,
                reason: Mutex::new("stream ended"),
            },
            mode,
            resume_from,
            snapshot,
            current_sequence: state.journal.current_sequence(),
            oldest_sequence: state.journal.oldest_sequence(),
            columns: state.columns.clone(),
            row_columns: state
                .journal
                .columns_after(resume_from)
                .map_or_else(|| state.columns.clone(), <[_]>::to_vec),
        };
        drop(state);
        Ok((opened, building))
    }
}
