//! [`Slots`]: the row slab, slot number → encoded row, on [`Segmented`], a vector in
//! segments (also the non-unique indexes' per-slot links).
//!
//! Entries live in segments of [`SEGMENT`] entries, so growing never copies what is
//! held and never reserves more than one segment ahead. A `Vec` that doubles would, at
//! ten million rows, hold room for sixteen million (about ten bytes per row unused for
//! the slab alone) and copy every entry on each doubling. The first segment grows like
//! a `Vec`, so a small table stays small.

/// Slots per segment (2^16: 1 MiB of slots).
const SEGMENT_SHIFT: usize = 16;
const SEGMENT: usize = 1 << SEGMENT_SHIFT;
const SEGMENT_MASK: usize = SEGMENT - 1;

/// One slot: an encoded row, or `None` for a free slot.
pub(crate) type Slot = Option<Box<[u8]>>;

/// The row slab (see the module docs).
pub(crate) type Slots = Segmented<Slot>;

/// A vector in segments (see the module docs).
#[derive(Debug)]
pub(crate) struct Segmented<T> {
    segments: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Segmented<T> {
    fn default() -> Self {
        Self {
            segments: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Segmented<T> {
    /// Entries pushed (the next pushed entry's index).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Entry `idx`, if it was ever pushed.
    pub(crate) fn get(&self, idx: usize) -> Option<&T> {
        self.segments
            .get(idx >> SEGMENT_SHIFT)?
            .get(idx & SEGMENT_MASK)
    }

    /// Entry `idx` for writing, if it was ever pushed.
    pub(crate) fn get_mut(&mut self, idx: usize) -> Option<&mut T> {
        self.segments
            .get_mut(idx >> SEGMENT_SHIFT)?
            .get_mut(idx & SEGMENT_MASK)
    }

    /// Appends an entry (index [`Segmented::len`] before the call).
    pub(crate) fn push(&mut self, value: T) {
        match self.segments.last_mut() {
            Some(segment) if segment.len() < SEGMENT => segment.push(value),
            _ => {
                // Later segments are allocated whole: they never grow by copying.
                let mut segment = if self.segments.is_empty() {
                    Vec::new()
                } else {
                    Vec::with_capacity(SEGMENT)
                };
                segment.push(value);
                self.segments.push(segment);
            }
        }
        self.len += 1;
    }

    /// Every entry, in index order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.segments.iter().flatten()
    }

    /// Bytes allocated for the entries themselves (not what they point to).
    pub(crate) fn heap_size(&self) -> usize {
        self.segments
            .iter()
            .map(|s| s.capacity() * size_of::<T>())
            .sum::<usize>()
            + self.segments.capacity() * size_of::<Vec<T>>()
    }
}

impl<T: Clone> Segmented<T> {
    /// Grows to at least `len` entries, filling with `value`.
    pub(crate) fn grow_to(&mut self, len: usize, value: T) {
        while self.len < len {
            self.push(value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: usize) -> Slot {
        Some(n.to_le_bytes().to_vec().into_boxed_slice())
    }

    #[test]
    fn slots_across_segments_keep_their_numbers() {
        let mut slots = Slots::default();
        let total = 2 * SEGMENT + 5;
        for n in 0..total {
            slots.push(row(n));
        }
        assert_eq!(slots.len(), total);
        for n in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            2 * SEGMENT,
            total - 1,
        ] {
            assert_eq!(slots.get(n), Some(&row(n)), "slot {n}");
        }
        assert_eq!(slots.get(total), None);
        *slots.get_mut(SEGMENT).unwrap() = None;
        assert_eq!(slots.get(SEGMENT), Some(&None));
        assert_eq!(slots.iter().count(), total);
        assert_eq!(slots.iter().flatten().count(), total - 1);
    }

    #[test]
    fn grow_to_fills_and_never_shrinks() {
        let mut links: Segmented<[u32; 2]> = Segmented::default();
        links.grow_to(SEGMENT + 3, [7, 7]);
        assert_eq!(links.len(), SEGMENT + 3);
        assert_eq!(links.get(SEGMENT + 2), Some(&[7, 7]));
        links.grow_to(2, [0, 0]);
        assert_eq!(links.len(), SEGMENT + 3);
    }

    #[test]
    fn a_large_slab_reserves_at_most_one_segment_ahead() {
        let mut slots = Slots::default();
        let total = 3 * SEGMENT + 1;
        for n in 0..total {
            slots.push(row(n));
        }
        // The slots of whole segments, plus the small list of segments itself.
        let reserved = slots.heap_size() / size_of::<Slot>();
        assert!(
            reserved <= total + SEGMENT + 16,
            "{reserved} slots reserved for {total}"
        );
        let mut small = Slots::default();
        small.push(row(1));
        assert!(
            small.heap_size() < 1024,
            "a one-row slab holds {} bytes",
            small.heap_size()
        );
    }
}
