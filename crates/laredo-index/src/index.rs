//! Hash indexes over the row slab of [`IndexedRows`](crate::IndexedRows).
//!
//! An index is a `hashbrown::HashTable` of slot numbers. Key bytes are never stored:
//! a probe recomputes a candidate's canonical key from its encoded row
//! ([`codec::write_key`]) and compares it with the probe key. Each entry keeps 32 bits
//! of its key's hash beside the slot, so growing the table reads no rows and most
//! non-matching candidates are rejected without looking at their row.
//!
//! A unique index maps each key to one slot (last write wins). A non-unique index maps
//! each distinct key to the first slot of its group, and the group's rows form a doubly
//! linked list through `links` (`[prev, next]` per slot): adding or removing a row is
//! O(1) however many rows share its key, and the index costs 8 bytes per row plus one
//! table entry per distinct key, with no allocation per key.

use std::cell::RefCell;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::codec;

use crate::slab::Segmented;
pub(crate) use crate::slab::Slots;

/// No slot (the end of a group list).
const NONE: u32 = u32::MAX;

/// An index entry: a slot and 32 bits of its key's hash.
#[derive(Debug, Clone, Copy)]
struct Entry {
    slot: u32,
    hash: u32,
}

/// The 32 hash bits kept per entry, from the canonical key bytes.
pub(crate) fn key_hash(hasher: &DefaultHashBuilder, key: &[u8]) -> u32 {
    (hasher.hash_one(key) >> 32) as u32
}

/// The table hash of an entry, derived from its 32 kept bits only so that rehashing
/// needs nothing else (hashbrown takes bucket bits from the bottom, tag bits from the
/// top).
fn spread(hash: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(hash)
}

thread_local! {
    /// The buffer a stored row's key is written into during probes, reused so that
    /// probing allocates nothing.
    static CANDIDATE_KEY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Whether the row in `slot` has the key bytes `key` for the columns at `positions`.
fn slot_matches(slots: &Slots, slot: u32, positions: &[usize], key: &[u8]) -> bool {
    let Some(bytes) = slots.get(slot as usize).and_then(Option::as_deref) else {
        return false;
    };
    let check = |buf: &mut Vec<u8>| {
        buf.clear();
        match codec::write_key(bytes, positions, buf) {
            Ok(()) => buf.as_slice() == key,
            Err(e) => {
                tracing::error!(error = %e, slot, "stored row cannot be keyed");
                false
            }
        }
    };
    CANDIDATE_KEY.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => check(&mut buf),
        // Not reached (hashbrown never nests its callbacks), but cheap to survive.
        Err(_) => check(&mut Vec::new()),
    })
}

/// One index over the slab.
pub(crate) struct Index {
    name: String,
    fields: Vec<String>,
    /// The position of each field in the stored layout (kept current by the store).
    positions: Vec<usize>,
    unique: bool,
    table: HashTable<Entry>,
    /// Non-unique indexes: `[prev, next]` per slot within its key group.
    links: Segmented<[u32; 2]>,
    /// Non-unique indexes: the rows indexed.
    entries: usize,
}

impl Index {
    pub(crate) fn new(name: &str, fields: Vec<String>, unique: bool) -> Self {
        Self {
            name: name.to_string(),
            fields,
            positions: Vec::new(),
            unique,
            table: HashTable::new(),
            links: Segmented::default(),
            entries: 0,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn fields(&self) -> &[String] {
        &self.fields
    }

    pub(crate) fn positions(&self) -> &[usize] {
        &self.positions
    }

    pub(crate) fn set_positions(&mut self, positions: Vec<usize>) {
        self.positions = positions;
    }

    pub(crate) fn is_unique(&self) -> bool {
        self.unique
    }

    /// Drops every entry and frees the memory.
    pub(crate) fn clear(&mut self) {
        self.table = HashTable::new();
        self.links = Segmented::default();
        self.entries = 0;
    }

    fn link(&mut self, slot: u32) -> &mut [u32; 2] {
        let idx = slot as usize;
        self.links.grow_to(idx + 1, [NONE, NONE]);
        self.links.get_mut(idx).expect("grown to hold the slot")
    }

    /// Adds `slot` under `key` (hash bits `hash`): a unique index re-points an existing
    /// key (last write wins), a non-unique one adds the row to the key's group.
    pub(crate) fn insert(&mut self, slots: &Slots, hash: u32, slot: u32, key: &[u8]) {
        let positions = &self.positions;
        let existing = self.table.find_mut(spread(hash), |e| {
            e.hash == hash && slot_matches(slots, e.slot, positions, key)
        });
        match existing {
            Some(head) if self.unique => head.slot = slot,
            Some(head) => {
                let next = std::mem::replace(&mut head.slot, slot);
                *self.link(slot) = [NONE, next];
                self.link(next)[0] = slot;
                self.entries += 1;
            }
            None => self.insert_absent(hash, slot),
        }
    }

    /// Adds `slot`, knowing that its key is not in the index yet.
    pub(crate) fn insert_absent(&mut self, hash: u32, slot: u32) {
        self.table
            .insert_unique(spread(hash), Entry { slot, hash }, |e| spread(e.hash));
        if !self.unique {
            *self.link(slot) = [NONE, NONE];
            self.entries += 1;
        }
    }

    /// The slot under `key` (the group's first for a non-unique index).
    pub(crate) fn find(&self, slots: &Slots, hash: u32, key: &[u8]) -> Option<u32> {
        self.table
            .find(spread(hash), |e| {
                e.hash == hash && slot_matches(slots, e.slot, &self.positions, key)
            })
            .map(|e| e.slot)
    }

    /// Every slot under `key`.
    pub(crate) fn find_all(&self, slots: &Slots, hash: u32, key: &[u8]) -> Vec<u32> {
        let mut found = Vec::new();
        let mut next = self.find(slots, hash, key).unwrap_or(NONE);
        while next != NONE {
            found.push(next);
            next = if self.unique {
                NONE
            } else {
                self.links.get(next as usize).map_or(NONE, |l| l[1])
            };
        }
        found
    }

    /// Removes `slot`, whose key in this index hashes to `hash`. A no-op when the slot
    /// is not indexed (a unique index whose key a later row took over).
    pub(crate) fn remove(&mut self, hash: u32, slot: u32) {
        let hash64 = spread(hash);
        if self.unique {
            if let Ok(entry) = self.table.find_entry(hash64, |e| e.slot == slot) {
                entry.remove();
            }
            return;
        }
        let Some(&[prev, next]) = self.links.get(slot as usize) else {
            return;
        };
        if prev == NONE {
            // The group's head: the table entry moves to the next row, or goes.
            match self.table.find_entry(hash64, |e| e.slot == slot) {
                Ok(entry) if next == NONE => {
                    entry.remove();
                }
                Ok(mut entry) => entry.get_mut().slot = next,
                Err(_) => return,
            }
        } else if let Some(link) = self.links.get_mut(prev as usize) {
            link[1] = next;
        }
        if let Some(link) = self.links.get_mut(next as usize) {
            link[0] = prev;
        }
        if let Some(link) = self.links.get_mut(slot as usize) {
            *link = [NONE, NONE];
        }
        self.entries = self.entries.saturating_sub(1);
    }

    /// The rows this index points at (for a unique index: its distinct keys).
    pub(crate) fn entry_count(&self) -> usize {
        if self.unique {
            self.table.len()
        } else {
            self.entries
        }
    }

    /// Bytes allocated by the table and the group links.
    pub(crate) fn heap_size(&self) -> usize {
        self.table.allocation_size() + self.links.heap_size()
    }
}
