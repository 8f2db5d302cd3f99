//! [`PositionCell`]: the last position a source delivered, written on every change by
//! the source's task and read rarely (status, a truncate or replay that needs "now").
//!
//! A sequence lock over the position's numbers, so the writer takes no lock and clones
//! nothing per change for numeric and pair positions (every PostgreSQL position); a
//! text position (rare: a shard map) goes through a mutex.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering, fence};

use parking_lot::Mutex;

use crate::position::Position;

const NONE: u8 = 0;
const NUMBER: u8 = 1;
const PAIR: u8 = 2;
const TEXT: u8 = 3;

/// One source's last delivered position. One writer at a time (the source's task, or
/// an admin operation while that task is stopped); any number of readers.
#[derive(Debug, Default)]
pub(crate) struct PositionCell {
    /// Odd while a write is in progress; bumped twice per write.
    seq: AtomicU64,
    kind: AtomicU8,
    first: AtomicU64,
    second: AtomicU64,
    text: Mutex<Option<Position>>,
}

impl PositionCell {
    /// Records `position` (`None`: forgets it).
    pub(crate) fn set(&self, position: Option<&Position>) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        let (kind, first, second) = match position {
            None => (NONE, 0, 0),
            Some(p) => match (p.as_u64(), p.as_pair()) {
                (Some(n), _) => (NUMBER, n, 0),
                (None, Some((a, b))) => (PAIR, a, b),
                (None, None) => {
                    *self.text.lock() = Some(p.clone());
                    (TEXT, 0, 0)
                }
            },
        };
        self.kind.store(kind, Ordering::Relaxed);
        self.first.store(first, Ordering::Relaxed);
        self.second.store(second, Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// The position recorded last.
    pub(crate) fn get(&self) -> Option<Position> {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let kind = self.kind.load(Ordering::Relaxed);
            let first = self.first.load(Ordering::Relaxed);
            let second = self.second.load(Ordering::Relaxed);
            let text = (kind == TEXT).then(|| self.text.lock().clone()).flatten();
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) != before {
                continue;
            }
            return match kind {
                NUMBER => Some(Position::from_u64(first)),
                PAIR => Some(Position::from_pair(first, second)),
                TEXT => text,
                _ => None,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn holds_each_kind_of_position_and_none() {
        let cell = PositionCell::default();
        assert_eq!(cell.get(), None);
        for position in [
            Position::from_u64(7),
            Position::from_pair(10, 3),
            Position::from_text("shard-1:42"),
            Position::from_u64(0),
        ] {
            cell.set(Some(&position));
            assert_eq!(cell.get(), Some(position));
        }
        cell.set(None);
        assert_eq!(cell.get(), None);
    }

    #[test]
    fn a_reader_never_sees_a_torn_pair() {
        let cell = Arc::new(PositionCell::default());
        let writer = {
            let cell = Arc::clone(&cell);
            std::thread::spawn(move || {
                for n in 1..=200_000u64 {
                    cell.set(Some(&Position::from_pair(n, n)));
                }
            })
        };
        let mut last = 0;
        while !writer.is_finished() {
            if let Some((a, b)) = cell.get().and_then(|p| p.as_pair()) {
                assert_eq!(a, b, "both halves come from one write");
                assert!(a >= last, "positions never go back");
                last = a;
            }
        }
        writer.join().unwrap();
        assert_eq!(cell.get(), Some(Position::from_pair(200_000, 200_000)));
    }
}
