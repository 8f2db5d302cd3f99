//! `Subscribe` streams: a bounded per-subscriber queue fed by a target listener, and
//! the response stream that drains it.
//!
//! The listener ([`RowAccess::subscribe`](laredo_core::RowAccess::subscribe)) runs on
//! the pipeline's task, inside the target's write path, so it must never wait: it
//! locks a small mutex, appends the change (a clone of the rows and of the change's
//! position; wire conversion and position printing happen on the reader's side) and
//! wakes the reader.
//! When the subscriber already has its capacity of changes queued, the change is
//! counted instead: consecutive drops share one `EventsDropped` marker placed where
//! they happened, so the client sees the gap at its position in the stream.
//!
//! The stream owns the listener's handle: when tonic drops the stream (the client
//! cancelled or went away), the listener is removed. When the target removes its
//! listeners (`on_close`), the queue closes and the stream ends after what is queued.
//!
//! Each change carries the position and transaction id of the applied change that made
//! it ([`RowChange::change`]), printed as the table's source prints positions.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use laredo_core::{ListenerHandle, Position, Row, RowChange, SyncSource};
use laredo_proto::laredo::v1 as wire;
use parking_lot::Mutex;
use tokio_stream::Stream;
use tonic::Status;

/// Changes queued per subscriber before further changes are dropped (and counted).
pub const SUBSCRIBER_BUFFER: usize = 256;

/// The response stream of `Subscribe`.
pub type SubscribeStream =
    Pin<Box<dyn Stream<Item = Result<wire::SubscribeResponse, Status>> + Send>>;

/// The position and transaction id of the applied change behind a row change.
type Origin = (Position, i64);

/// One queued event.
enum Event {
    Change {
        old: Option<Row>,
        new: Option<Row>,
        at: SystemTime,
        /// The applied change that made it, when one did.
        origin: Option<Origin>,
    },
    Dropped(u64),
}

struct QueueState {
    events: VecDeque<Event>,
    /// `Change` entries in `events` (markers do not count against the capacity).
    changes: usize,
    closed: bool,
    waker: Option<Waker>,
}

/// The queue between one listener and one stream.
pub(crate) struct Queue {
    capacity: usize,
    state: Mutex<QueueState>,
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity: capacity.max(1),
            state: Mutex::new(QueueState {
                events: VecDeque::new(),
                changes: 0,
                closed: false,
                waker: None,
            }),
        })
    }

    /// Appends a change, or counts it as dropped when the queue is full. Never waits
    /// beyond the queue's own short lock.
    fn push(&self, old: Option<Row>, new: Option<Row>, origin: Option<Origin>) {
        let waker = {
            let mut state = self.state.lock();
            if state.changes < self.capacity {
                state.events.push_back(Event::Change {
                    old,
                    new,
                    at: SystemTime::now(),
                    origin,
                });
                state.changes += 1;
            } else if let Some(Event::Dropped(count)) = state.events.back_mut() {
                *count += 1;
            } else {
                state.events.push_back(Event::Dropped(1));
            }
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn close(&self) {
        let waker = {
            let mut state = self.state.lock();
            state.closed = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The next queued event; `Ready(None)` once closed and drained.
    fn poll_pop(&self, cx: &Context<'_>) -> Poll<Option<Event>> {
        let mut state = self.state.lock();
        match state.events.pop_front() {
            Some(event) => {
                if matches!(event, Event::Change { .. }) {
                    state.changes -= 1;
                }
                Poll::Ready(Some(event))
            }
            None if state.closed => Poll::Ready(None),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// The listener's side of a queue: moved into the listener closure, so when the
/// target drops the listener (unsubscribed, or the target closed) the queue closes and
/// the subscription stops counting.
pub(crate) struct Producer {
    queue: Arc<Queue>,
    _guard: SubscriberGuard,
}

impl Producer {
    pub(crate) fn new(queue: &Arc<Queue>, guard: SubscriberGuard) -> Self {
        Self {
            queue: Arc::clone(queue),
            _guard: guard,
        }
    }

    /// Queues the change as the target reported it, with its position and
    /// transaction id when an applied change made it.
    pub(crate) fn push(&self, change: &RowChange<'_>) {
        let origin = change.change.map(|c| (c.position.clone(), c.xid));
        self.queue
            .push(change.old.cloned(), change.new.cloned(), origin);
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// Counts registered subscription listeners; one guard per listener.
#[derive(Debug)]
pub(crate) struct SubscriberGuard(Arc<AtomicUsize>);

impl SubscriberGuard {
    pub(crate) fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(count))
    }
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Where the stream is: sending current rows, about to send the replay marker, or
/// draining the live queue.
enum Phase {
    Replay {
        rows: std::vec::IntoIter<Row>,
        sent: u64,
    },
    Live,
}

/// The `Subscribe` response stream over one queue.
pub(crate) struct Subscription {
    phase: Phase,
    queue: Arc<Queue>,
    /// Prints positions as the source does.
    source: Option<Weak<dyn SyncSource>>,
    // Dropped with the stream: removes the listener from the target.
    _listener: ListenerHandle,
}

impl Subscription {
    /// A stream that sends `existing` first (with a replay marker) when it is
    /// `Some`, then the queue's events.
    pub(crate) fn new(
        existing: Option<Vec<Row>>,
        queue: Arc<Queue>,
        source: Option<Weak<dyn SyncSource>>,
        listener: ListenerHandle,
    ) -> Self {
        let phase = match existing {
            Some(rows) => Phase::Replay {
                rows: rows.into_iter(),
                sent: 0,
            },
            None => Phase::Live,
        };
        Self {
            phase,
            queue,
            source,
            _listener: listener,
        }
    }

    pub(crate) fn boxed(self) -> SubscribeStream {
        Box::pin(self)
    }

    /// `position` as the table's source prints it; empty once the source is gone.
    fn position_text(&self, position: &Position) -> String {
        self.source
            .as_ref()
            .and_then(Weak::upgrade)
            .map_or_else(String::new, |source| source.position_to_string(position))
    }

    fn change(&self, event: Event) -> wire::subscribe_response::Event {
        use wire::subscribe_response::Event as Out;
        match event {
            Event::Dropped(count) => Out::EventsDropped(wire::EventsDropped { count }),
            Event::Change {
                old,
                new,
                at,
                origin,
            } => {
                let action = match (&old, &new) {
                    (None, Some(_)) => wire::ChangeAction::Insert,
                    (Some(_), Some(_)) => wire::ChangeAction::Update,
                    (Some(_), None) => wire::ChangeAction::Delete,
                    (None, None) => wire::ChangeAction::Truncate,
                };
                // Writes that are no applied change (baseline rows, a snapshot
                // restore) carry no position.
                let (position, xid) = match &origin {
                    Some((position, xid)) => (self.position_text(position), *xid),
                    None => (String::new(), 0),
                };
                Out::Change(wire::RowChange {
                    action: action.into(),
                    position,
                    xid,
                    timestamp: Some(at.into()),
                    old_values: old.as_ref().map(wire::Row::from),
                    new_values: new.as_ref().map(wire::Row::from),
                    existing: false,
                })
            }
        }
    }
}

fn response(
    event: wire::subscribe_response::Event,
) -> Poll<Option<Result<wire::SubscribeResponse, Status>>> {
    Poll::Ready(Some(Ok(wire::SubscribeResponse { event: Some(event) })))
}

impl Stream for Subscription {
    type Item = Result<wire::SubscribeResponse, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        use wire::subscribe_response::Event as Out;
        let this = self.get_mut();
        if let Phase::Replay { rows, sent } = &mut this.phase {
            if let Some(row) = rows.next() {
                *sent += 1;
                return response(Out::Change(wire::RowChange {
                    action: wire::ChangeAction::Insert.into(),
                    position: String::new(),
                    xid: 0,
                    timestamp: None,
                    old_values: None,
                    new_values: Some(wire::Row::from(&row)),
                    existing: true,
                }));
            }
            let rows_sent = *sent;
            this.phase = Phase::Live;
            return response(Out::ReplayComplete(wire::ReplayComplete { rows_sent }));
        }
        match this.queue.poll_pop(cx) {
            Poll::Ready(Some(event)) => response(this.change(event)),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use laredo_core::row;

    use super::*;

    fn pop(queue: &Queue) -> Option<String> {
        let cx = Context::from_waker(Waker::noop());
        match queue.poll_pop(&cx) {
            Poll::Ready(Some(Event::Change { new, .. })) => {
                Some(format!("{:?}", new.and_then(|row| row.get_i64("n"))))
            }
            Poll::Ready(Some(Event::Dropped(n))) => Some(format!("dropped {n}")),
            Poll::Ready(None) => Some("closed".into()),
            Poll::Pending => None,
        }
    }

    #[test]
    fn a_full_queue_counts_drops_in_one_marker_at_their_place() {
        let queue = Queue::new(2);
        let count = Arc::new(AtomicUsize::new(0));
        let producer = Producer::new(&queue, SubscriberGuard::new(&count));
        assert_eq!(count.load(Ordering::SeqCst), 1);
        let push = |n: i64| {
            let row = row! {"n" => n};
            producer.push(&RowChange::new(None, Some(&row), None));
        };
        for n in 1..=5 {
            push(n);
        }
        assert_eq!(pop(&queue).as_deref(), Some("Some(1)"));
        // Room for one more: it goes after the marker of 3, 4 and 5.
        push(6);
        push(7);
        assert_eq!(pop(&queue).as_deref(), Some("Some(2)"));
        assert_eq!(pop(&queue).as_deref(), Some("dropped 3"));
        assert_eq!(pop(&queue).as_deref(), Some("Some(6)"));
        assert_eq!(pop(&queue).as_deref(), Some("dropped 1"));
        assert_eq!(pop(&queue), None);
        drop(producer);
        assert_eq!(count.load(Ordering::SeqCst), 0);
        assert_eq!(pop(&queue).as_deref(), Some("closed"));
    }
}
