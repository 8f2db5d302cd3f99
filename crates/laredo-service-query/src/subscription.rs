//! `Subscribe` streams: a bounded per-subscriber queue fed by a target listener, and
//! the response stream that drains it.
//!
//! The listener runs on the pipeline's task, inside the target's write path, so it
//! must never wait: it locks a small mutex, appends the change (a cheap clone of the
//! row or object; wire conversion happens on the reader's side) and wakes the reader.
//! When the subscriber already has its capacity of changes queued, the change is
//! counted instead: consecutive drops share one `EventsDropped` marker placed where
//! they happened, so the client sees the gap at its position in the stream.
//!
//! The stream owns the listener's handle: when tonic drops the stream (the client
//! cancelled or went away), the listener is removed. When the target removes its
//! listeners (`on_close`), the queue closes and the stream ends after what is queued.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use laredo_core::{AppliedChange, ChangeCursor};
use laredo_proto::laredo::v1 as wire;
use laredo_target_memory::ListenerHandle;
use parking_lot::Mutex;
use tokio_stream::Stream;
use tonic::Status;

/// Changes queued per subscriber before further changes are dropped (and counted).
pub const SUBSCRIBER_BUFFER: usize = 256;

/// The response stream of `Subscribe`.
pub type SubscribeStream =
    Pin<Box<dyn Stream<Item = Result<wire::SubscribeResponse, Status>> + Send>>;

/// One queued event; `P` is what the target hands its listeners (a row or an object).
enum Event<P> {
    Change {
        old: Option<P>,
        new: Option<P>,
        at: SystemTime,
        /// The source change being applied, when the change came from one.
        source: Option<AppliedChange>,
    },
    Dropped(u64),
}

struct QueueState<P> {
    events: VecDeque<Event<P>>,
    /// `Change` entries in `events` (markers do not count against the capacity).
    changes: usize,
    closed: bool,
    waker: Option<Waker>,
}

/// The queue between one listener and one stream.
pub(crate) struct Queue<P> {
    capacity: usize,
    state: Mutex<QueueState<P>>,
}

impl<P> Queue<P> {
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
    fn push(&self, old: Option<P>, new: Option<P>, source: Option<AppliedChange>) {
        let waker = {
            let mut state = self.state.lock();
            if state.changes < self.capacity {
                state.events.push_back(Event::Change {
                    old,
                    new,
                    at: SystemTime::now(),
                    source,
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
    fn poll_pop(&self, cx: &Context<'_>) -> Poll<Option<Event<P>>> {
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
pub(crate) struct Producer<P> {
    queue: Arc<Queue<P>>,
    /// Which source change the target is applying (`None` for a target the engine
    /// does not run).
    cursor: Option<ChangeCursor>,
    _guard: SubscriberGuard,
}

impl<P> Producer<P> {
    pub(crate) fn new(
        queue: &Arc<Queue<P>>,
        cursor: Option<ChangeCursor>,
        guard: SubscriberGuard,
    ) -> Self {
        Self {
            queue: Arc::clone(queue),
            cursor,
            _guard: guard,
        }
    }

    /// Queues `(old, new)` as the target reported it, with the source change being
    /// applied (the listener runs inside the apply call).
    pub(crate) fn push(&self, old: Option<P>, new: Option<P>) {
        let source = self.cursor.as_ref().and_then(ChangeCursor::current);
        self.queue.push(old, new, source);
    }
}

impl<P> Drop for Producer<P> {
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
enum Phase<P> {
    Replay {
        rows: std::vec::IntoIter<P>,
        sent: u64,
    },
    Live,
}

/// The `Subscribe` response stream over one queue; `convert` turns a row or object
/// into a wire row when it is sent.
pub(crate) struct Subscription<P, C> {
    phase: Phase<P>,
    queue: Arc<Queue<P>>,
    convert: C,
    /// Prints positions as the source does.
    cursor: Option<ChangeCursor>,
    // Dropped with the stream: removes the listener from the target.
    _listener: ListenerHandle,
}

impl<P, C> Subscription<P, C>
where
    P: Send + Unpin + 'static,
    C: Fn(&P) -> wire::Row + Send + Unpin + 'static,
{
    /// A stream that sends `existing` first (with a replay marker) when it is
    /// `Some`, then the queue's events.
    pub(crate) fn new(
        existing: Option<Vec<P>>,
        queue: Arc<Queue<P>>,
        convert: C,
        cursor: Option<ChangeCursor>,
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
            convert,
            cursor,
            _listener: listener,
        }
    }

    pub(crate) fn boxed(self) -> SubscribeStream {
        Box::pin(self)
    }

    fn change(&self, event: Event<P>) -> wire::subscribe_response::Event {
        use wire::subscribe_response::Event as Out;
        match event {
            Event::Dropped(count) => Out::EventsDropped(wire::EventsDropped { count }),
            Event::Change {
                old,
                new,
                at,
                source,
            } => {
                let action = match (&old, &new) {
                    (None, Some(_)) => wire::ChangeAction::Insert,
                    (Some(_), Some(_)) => wire::ChangeAction::Update,
                    (Some(_), None) => wire::ChangeAction::Delete,
                    (None, None) => wire::ChangeAction::Truncate,
                };
                // Writes that are no source change (a snapshot restore, the TTL
                // scanner) carry no position.
                let (position, xid) = match (&source, &self.cursor) {
                    (Some(source), Some(cursor)) => {
                        (cursor.position_to_string(&source.position), source.xid)
                    }
                    _ => (String::new(), 0),
                };
                Out::Change(wire::RowChange {
                    action: action.into(),
                    position,
                    xid,
                    timestamp: Some(at.into()),
                    old_values: old.as_ref().map(&self.convert),
                    new_values: new.as_ref().map(&self.convert),
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

impl<P, C> Stream for Subscription<P, C>
where
    P: Send + Unpin + 'static,
    C: Fn(&P) -> wire::Row + Send + Unpin + 'static,
{
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
                    new_values: Some((this.convert)(&row)),
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

    use super::*;

    fn pop(queue: &Queue<u32>) -> Option<String> {
        let cx = Context::from_waker(Waker::noop());
        match queue.poll_pop(&cx) {
            Poll::Ready(Some(Event::Change { new, .. })) => Some(format!("{new:?}")),
            Poll::Ready(Some(Event::Dropped(n))) => Some(format!("dropped {n}")),
            Poll::Ready(None) => Some("closed".into()),
            Poll::Pending => None,
        }
    }

    #[test]
    fn a_full_queue_counts_drops_in_one_marker_at_their_place() {
        let queue = Queue::new(2);
        let count = Arc::new(AtomicUsize::new(0));
        let producer = Producer::new(&queue, None, SubscriberGuard::new(&count));
        assert_eq!(count.load(Ordering::SeqCst), 1);
        for n in 1..=5 {
            producer.push(None, Some(n));
        }
        assert_eq!(pop(&queue).as_deref(), Some("Some(1)"));
        // Room for one more: it goes after the marker of 3, 4 and 5.
        producer.push(None, Some(6));
        producer.push(None, Some(7));
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
