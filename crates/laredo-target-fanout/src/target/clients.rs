//! The clients of a target: the registry of connected streams, each one's state and
//! journal pin, and the drain.
//!
//! A client's record holds the last sequence served to it, which is also its pin:
//! pruning never drops an entry after the lowest pin, so the journal keeps every
//! connected client's backlog. The pin only moves forward (a stream advances it as it
//! serves or skips entries). A stream holds its [`ClientGuard`] for as long as it runs;
//! dropping the guard takes the record out of the registry, which releases the pin and
//! reports the disconnect to the observer.
//!
//! Draining (FO-11) is a watch channel every stream follows: set once, it makes each
//! stream send one `GoAway` and close at the deadline, and refuses new streams.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, SystemTime};

use laredo_core::{DrainReason, SyncMode};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::FanoutTarget;

/// A drain in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainInfo {
    /// Why.
    pub reason: DrainReason,
    /// When the streams are closed; `None`: they stay until their clients leave.
    pub deadline: Option<SystemTime>,
    pub(crate) deadline_instant: Option<tokio::time::Instant>,
}

/// The state of a replication client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientState {
    /// Receiving its snapshot or backlog.
    CatchingUp,
    /// Receiving live entries.
    Live,
    /// Its send buffer is full (`slow_down`).
    Backpressured,
    /// Told to leave (`GoAway` sent).
    Draining,
}

impl ClientState {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Live,
            2 => Self::Backpressured,
            3 => Self::Draining,
            _ => Self::CatchingUp,
        }
    }

    pub(super) fn as_u8(self) -> u8 {
        match self {
            Self::CatchingUp => 0,
            Self::Live => 1,
            Self::Backpressured => 2,
            Self::Draining => 3,
        }
    }
}

/// A connected client, as [`FanoutTarget::clients`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientInfo {
    /// The client's id.
    pub client_id: String,
    /// The last sequence served to it (sent, or skipped by its filters).
    pub current_sequence: u64,
    /// When it connected.
    pub connected_at: SystemTime,
    /// Its state.
    pub state: ClientState,
    /// The mode its stream started in.
    pub mode: SyncMode,
    /// Messages waiting in its send buffer.
    pub buffer_depth: usize,
}

/// The send side of a client's buffer, as the registry sees it (for its depth).
pub(crate) type QueueProbe = Box<dyn Fn() -> usize + Send + Sync>;

pub(crate) struct ClientRecord {
    pub(crate) client_id: String,
    pub(crate) connected_at: SystemTime,
    pub(crate) mode: SyncMode,
    pub(crate) filters: Vec<laredo_proto::laredo::replication::v1::FieldPredicate>,
    /// The last sequence served; also the client's journal pin.
    pub(super) sequence: AtomicU64,
    pub(super) state: AtomicU8,
    pub(super) depth: Mutex<Option<QueueProbe>>,
    /// Cancelled by [`FanoutTarget::disconnect_all`].
    pub(crate) cancel: CancellationToken,
}

impl ClientRecord {
    pub(crate) fn advance(&self, sequence: u64) {
        self.sequence.fetch_max(sequence, AtomicOrdering::AcqRel);
    }

    pub(crate) fn sequence(&self) -> u64 {
        self.sequence.load(AtomicOrdering::Acquire)
    }

    pub(crate) fn set_state(&self, state: ClientState) {
        self.state.store(state.as_u8(), AtomicOrdering::Release);
    }

    pub(crate) fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(AtomicOrdering::Acquire))
    }

    pub(crate) fn set_queue_probe(&self, probe: QueueProbe) {
        *self.depth.lock() = Some(probe);
    }

    pub(crate) fn buffer_depth(&self) -> usize {
        self.depth.lock().as_ref().map_or(0, |probe| probe())
    }

    fn info(&self) -> ClientInfo {
        ClientInfo {
            client_id: self.client_id.clone(),
            current_sequence: self.sequence(),
            connected_at: self.connected_at,
            state: self.state(),
            mode: self.mode,
            buffer_depth: self.buffer_depth(),
        }
    }
}

/// The connected clients, by a key of their own.
#[derive(Default)]
pub(super) struct Registry {
    pub(super) next_key: u64,
    pub(super) clients: hashbrown::HashMap<u64, Arc<ClientRecord>>,
}

impl Registry {
    /// The lowest pin of a connected client, when any.
    pub(super) fn lowest_pin(&self) -> Option<u64> {
        self.clients.values().map(|c| c.sequence()).min()
    }
}

/// Unregisters its client (and so releases its pin) when dropped.
pub(crate) struct ClientGuard {
    pub(super) target: Arc<FanoutTarget>,
    pub(super) key: u64,
    pub(crate) record: Arc<ClientRecord>,
    pub(super) reason: Mutex<&'static str>,
}

impl ClientGuard {
    /// Records why the stream ends (reported to the observer).
    pub(crate) fn set_reason(&self, reason: &'static str) {
        *self.reason.lock() = reason;
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.target.clients.lock().clients.remove(&self.key);
        if let Some(observer) = &self.target.observer {
            observer.on_fanout_client_disconnected(
                &self.target.label(),
                &self.record.client_id,
                &self.reason.lock(),
            );
        }
    }
}

impl FanoutTarget {
    /// The clients connected, in no particular order.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.clients
            .lock()
            .clients
            .values()
            .map(|c| c.info())
            .collect()
    }

    pub(crate) fn client_records(&self) -> Vec<Arc<ClientRecord>> {
        self.clients.lock().clients.values().cloned().collect()
    }

    /// The number of clients connected.
    pub fn client_count(&self) -> usize {
        self.clients.lock().clients.len()
    }

    /// Ends every client's stream (each gets a `GoAway` first when there is room for
    /// it); clients reconnect and resume.
    pub fn disconnect_all(&self) {
        for client in self.clients.lock().clients.values() {
            client.cancel.cancel();
        }
    }

    /// Starts draining (FO-11): every stream gets one `GoAway`; streams are closed at
    /// `now + timeout` (never, with `None`, until their clients leave); new streams are
    /// refused with `UNAVAILABLE`. Idempotent: returns `false` when already draining
    /// (the first reason and deadline stay).
    pub fn drain(&self, reason: DrainReason, timeout: Option<Duration>) -> bool {
        self.drain.send_if_modified(|drain| {
            if drain.is_some() {
                return false;
            }
            *drain = Some(DrainInfo {
                reason,
                deadline: timeout.map(|t| SystemTime::now() + t),
                deadline_instant: timeout.map(|t| tokio::time::Instant::now() + t),
            });
            true
        })
    }

    /// True once [`FanoutTarget::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.drain.borrow().is_some()
    }

    /// The drain in progress, when any.
    pub fn drain_info(&self) -> Option<DrainInfo> {
        self.drain.borrow().clone()
    }

    pub(crate) fn subscribe_drain(&self) -> watch::Receiver<Option<DrainInfo>> {
        self.drain.subscribe()
    }
}
