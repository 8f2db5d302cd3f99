//! The bounded buffer between a source's dispatcher and one pipeline's consumer.
//!
//! One producer (the source task) and one consumer (the pipeline task). The producer
//! pushes one item at a time under the buffer's policy; the consumer takes whatever is
//! queued, up to a batch limit, so locking and wake-ups are paid per batch when the
//! consumer is behind. Wake-ups use `Notify` permits, so a notification sent between a
//! check and the wait is never lost, and they are sent only on the transitions a waiter
//! can be waiting for: the consumer sleeps only after seeing an empty queue under the
//! lock, so only a push onto an empty queue wakes it; the producer sleeps only after
//! seeing a full queue, so only a pop from a full queue wakes it. A busy pipeline pays
//! no wake-up per change.
//!
//! Besides items, the buffer holds a **caught-up mark**: the latest source position the
//! dispatcher has passed without giving this pipeline anything (a change of another
//! table, a heartbeat). The mark and the queue share one lock, and the consumer takes
//! the mark only when the queue is empty after it applied its batch, so everything the
//! dispatcher routed here before the mark has been applied: the pipeline may confirm
//! the mark. This keeps a pipeline whose table is idle from holding the ACK back, at
//! the cost of one overwrite per change, not one queued item.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::change::ChangeEvent;
use crate::position::Position;
use crate::table::ColumnDefinition;
use crate::target::Change;

/// What flows through a pipeline buffer.
#[derive(Debug)]
pub(crate) enum Item {
    /// A change for the pipeline's table.
    Change(ChangeEvent),
    /// A change the source could not read in full, and why (see
    /// `ChangeHandler::on_change_failed`).
    Failed { event: ChangeEvent, error: String },
    /// The table's columns changed; later changes use the new ones.
    Schema {
        old_columns: Vec<ColumnDefinition>,
        new_columns: Vec<ColumnDefinition>,
    },
}

/// Why a push did not happen.
#[derive(Debug)]
pub(crate) enum PushError {
    /// The wait was cancelled.
    Cancelled,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Item>,
    mark: Option<Position>,
    /// Items the consumer has applied, dropped by the producer (see `recycle`).
    garbage: Vec<Item>,
    /// Changes (holding the rows moved out of items) the consumer has applied, dropped
    /// by the producer likewise.
    spent: Vec<Change>,
}

/// Applied items held for the producer to drop, at most; past it the consumer drops.
const GARBAGE_MAX: usize = 4096;

#[derive(Debug)]
pub(crate) struct ChangeBuffer {
    queue: Mutex<Queue>,
    capacity: usize,
    not_empty: Notify,
    not_full: Notify,
    closed: CancellationToken,
}

impl ChangeBuffer {
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            queue: Mutex::new(Queue {
                items: VecDeque::with_capacity(capacity.min(4096)),
                mark: None,
                garbage: Vec::new(),
                spent: Vec::new(),
            }),
            capacity,
            not_empty: Notify::new(),
            not_full: Notify::new(),
            closed: CancellationToken::new(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.lock().items.len()
    }

    /// Records that the source passed `position` with nothing for this pipeline. Wakes
    /// the consumer only when no mark was pending (marks coalesce).
    pub(crate) fn set_mark(&self, position: Position) {
        let was_empty = self.queue.lock().mark.replace(position).is_none();
        if was_empty {
            self.not_empty.notify_one();
        }
    }

    /// The pending mark, taken only when no item is queued (see the module docs).
    pub(crate) fn take_mark_if_idle(&self) -> Option<Position> {
        let mut queue = self.queue.lock();
        if queue.items.is_empty() {
            queue.mark.take()
        } else {
            None
        }
    }

    /// Waits for room, then enqueues; returns the depth after the push.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes loses `item` but leaves the buffer intact.
    pub(crate) async fn push(
        &self,
        item: Item,
        cancel: &CancellationToken,
    ) -> Result<usize, PushError> {
        let mut item = item;
        loop {
            match self.try_push(item) {
                Ok(depth) => return Ok(depth),
                Err(back) => item = back,
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(PushError::Cancelled),
                () = self.not_full.notified() => {}
            }
        }
    }

    /// Hands applied items back so that the producer drops them: the producer cloned or
    /// allocated them, so it frees them on its own core and allocator arena instead of
    /// the consumer paying cross-core reference-count and free traffic per change.
    /// Empties `batch` either way.
    pub(crate) fn recycle(&self, batch: &mut Vec<Item>) {
        {
            let mut queue = self.queue.lock();
            if queue.garbage.is_empty() {
                std::mem::swap(&mut queue.garbage, batch);
            } else if queue.garbage.len() + batch.len() <= GARBAGE_MAX {
                queue.garbage.append(batch);
            }
        }
        batch.clear();
    }

    /// Hands applied changes back so that the producer drops them, as
    /// [`ChangeBuffer::recycle`] does for items (their rows were moved out of the
    /// producer's items). Empties `changes` either way.
    pub(crate) fn recycle_changes(&self, changes: &mut Vec<Change>) {
        {
            let mut queue = self.queue.lock();
            if queue.spent.is_empty() {
                std::mem::swap(&mut queue.spent, changes);
            } else if queue.spent.len() + changes.len() <= GARBAGE_MAX {
                queue.spent.append(changes);
            }
        }
        changes.clear();
    }

    /// Enqueues if there is room; gives the item back otherwise.
    #[expect(
        clippy::result_large_err,
        reason = "the item is handed back by value, without allocating"
    )]
    pub(crate) fn try_push(&self, item: Item) -> Result<usize, Item> {
        let (depth, garbage) = {
            let mut queue = self.queue.lock();
            if queue.items.len() >= self.capacity {
                return Err(item);
            }
            queue.items.push_back(item);
            let garbage = (
                std::mem::take(&mut queue.garbage),
                std::mem::take(&mut queue.spent),
            );
            (queue.items.len(), garbage)
        };
        drop(garbage);
        if depth == 1 {
            self.not_empty.notify_one();
        }
        Ok(depth)
    }

    /// Enqueues, discarding the oldest queued item when full; returns the depth and
    /// whether an item was discarded.
    pub(crate) fn push_drop_oldest(&self, item: Item) -> (usize, bool) {
        let (depth, dropped) = {
            let mut queue = self.queue.lock();
            let dropped = queue.items.len() >= self.capacity && queue.items.pop_front().is_some();
            queue.items.push_back(item);
            (queue.items.len(), dropped)
        };
        if depth == 1 {
            self.not_empty.notify_one();
        }
        (depth, dropped)
    }

    /// Waits for items (or a pending mark) and moves up to `max` items into `out`, which
    /// may stay empty when only a mark is pending. Returns `false` once the buffer is
    /// closed and empty.
    ///
    /// # Cancel safety
    /// Cancel safe: items are moved only in the synchronous part.
    pub(crate) async fn pop_batch(&self, out: &mut Vec<Item>, max: usize) -> bool {
        loop {
            {
                let mut queue = self.queue.lock();
                if !queue.items.is_empty() {
                    let was_full = queue.items.len() >= self.capacity;
                    let n = queue.items.len().min(max);
                    out.extend(queue.items.drain(..n));
                    drop(queue);
                    if was_full {
                        self.not_full.notify_one();
                    }
                    return true;
                }
                if queue.mark.is_some() {
                    return true;
                }
                if self.closed.is_cancelled() {
                    return false;
                }
            }
            tokio::select! {
                () = self.not_empty.notified() => {}
                () = self.closed.cancelled() => {}
            }
        }
    }

    /// No more pushes will come; the consumer drains what is queued and ends.
    pub(crate) fn close(&self) {
        self.closed.cancel();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Completes once [`ChangeBuffer::close`] was called.
    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn hb(n: u64) -> Item {
        Item::Change(ChangeEvent::truncate(
            crate::table("s", "t"),
            Position::from_u64(n),
        ))
    }

    fn positions(items: &[Item]) -> Vec<u64> {
        items
            .iter()
            .map(|i| match i {
                Item::Change(e) => e.position.as_u64().unwrap(),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn marks_coalesce_and_wait_for_an_empty_queue() {
        let b = ChangeBuffer::new(4);
        b.try_push(hb(1)).unwrap();
        b.set_mark(Position::from_u64(5));
        b.set_mark(Position::from_u64(6));
        assert_eq!(
            b.take_mark_if_idle(),
            None,
            "items before the mark are still queued"
        );
        let mut out = Vec::new();
        assert!(b.pop_batch(&mut out, 10).await);
        assert_eq!(positions(&out), vec![1]);
        assert_eq!(b.take_mark_if_idle(), Some(Position::from_u64(6)));
        assert_eq!(b.take_mark_if_idle(), None);
        b.set_mark(Position::from_u64(7));
        out.clear();
        assert!(
            b.pop_batch(&mut out, 10).await,
            "a pending mark wakes the consumer"
        );
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn drop_oldest_evicts_the_front() {
        let b = ChangeBuffer::new(2);
        assert_eq!(b.push_drop_oldest(hb(1)), (1, false));
        assert_eq!(b.push_drop_oldest(hb(2)), (2, false));
        assert_eq!(b.push_drop_oldest(hb(3)), (2, true));
        let mut out = Vec::new();
        assert!(b.pop_batch(&mut out, 10).await);
        assert_eq!(positions(&out), vec![2, 3]);
    }

    #[tokio::test]
    async fn try_push_refuses_when_full_and_minimum_capacity_is_one() {
        let b = ChangeBuffer::new(0);
        assert_eq!(b.capacity(), 1);
        assert!(b.try_push(hb(1)).is_ok());
        assert!(b.try_push(hb(2)).is_err());
    }

    #[tokio::test]
    async fn blocking_push_waits_for_room_and_can_be_cancelled() {
        let b = Arc::new(ChangeBuffer::new(1));
        let cancel = CancellationToken::new();
        b.push(hb(1), &cancel).await.unwrap();
        let producer = {
            let (b, cancel) = (Arc::clone(&b), cancel.clone());
            tokio::spawn(async move { b.push(hb(2), &cancel).await.map(|_| ()) })
        };
        let mut out = Vec::new();
        assert!(b.pop_batch(&mut out, 10).await);
        producer.await.unwrap().unwrap();
        out.clear();
        assert!(b.pop_batch(&mut out, 10).await);
        assert_eq!(positions(&out), vec![2]);

        b.push(hb(3), &cancel).await.unwrap();
        let blocked = {
            let (b, cancel) = (Arc::clone(&b), cancel.clone());
            tokio::spawn(async move { b.push(hb(4), &cancel).await })
        };
        cancel.cancel();
        let res = tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(res, Err(PushError::Cancelled)));
    }

    #[tokio::test]
    async fn close_drains_then_ends() {
        let b = ChangeBuffer::new(4);
        b.try_push(hb(1)).unwrap();
        b.close();
        let mut out = Vec::new();
        assert!(b.pop_batch(&mut out, 10).await);
        assert!(!b.pop_batch(&mut out, 10).await);
        assert_eq!(positions(&out), vec![1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_producer_and_consumer_keep_order() {
        let b = Arc::new(ChangeBuffer::new(8));
        let cancel = CancellationToken::new();
        let producer = {
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                for n in 0..10_000 {
                    b.push(hb(n), &cancel).await.unwrap();
                }
                b.close();
            })
        };
        let mut seen = Vec::new();
        let mut out = Vec::new();
        while b.pop_batch(&mut out, 3).await {
            seen.extend(positions(&out));
            out.clear();
        }
        producer.await.unwrap();
        assert_eq!(seen, (0..10_000).collect::<Vec<_>>());
    }
}
