//! [`IndexedTarget`]: a raw-row replica of a table with hash indexes.
//!
//! Rows are stored as compact byte strings ([`crate::codec`]) in a slab; every index is
//! a `HashTable` of slot numbers hashed by the canonical key bytes of the indexed
//! columns, so an index costs a few bytes per row and a row is never stored twice. One
//! `RwLock` covers the slab and every index: a reader sees each change whole.

use std::cell::RefCell;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Arc;

use async_trait::async_trait;
use hashbrown::{DefaultHashBuilder, HashTable};
use laredo_core::{
    ColumnDefinition, IndexDefinition, Row, RowLayout, SchemaChangeResponse, SnapshotEntry,
    SyncTarget, TableIdentifier, TableSnapshotInfo, TargetError, Value, primary_key_columns,
};
use parking_lot::RwLock;

use crate::codec;
use crate::key::{IntoKey, key_bytes};
use crate::listener::{ListenerHandle, Registry};

/// The name under which the lookup index is reported and can be queried.
pub const PRIMARY_INDEX: &str = "(primary)";

/// The target type name.
const TYPE_NAME: &str = "indexed-memory";

type RowListener = dyn Fn(Option<&Row>, Option<&Row>) + Send + Sync;
type Slots = Vec<Option<Box<[u8]>>>;

/// A lookup on a missing index or with a key of the wrong arity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// No index has this name.
    #[error("unknown index {0:?}")]
    UnknownIndex(String),
    /// The key has a different number of values than the index has fields.
    #[error("index {index:?} has {expected} field(s), the key has {got}")]
    KeyArity {
        /// The index.
        index: String,
        /// Its field count.
        expected: usize,
        /// The key's value count.
        got: usize,
    },
}

/// Statistics of one index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexInfo {
    /// The name (`(primary)` for the lookup index).
    pub name: String,
    /// The indexed columns.
    pub fields: Vec<String>,
    /// Whether a key maps to at most one row.
    pub unique: bool,
    /// Entries in the index.
    pub entry_count: usize,
}

/// No slot (end of a group list).
const NONE: u32 = u32::MAX;

/// An index entry: a slot and 32 bits of its key's hash. Keeping the hash lets the
/// table grow without re-reading every row, and skips most key comparisons on probes.
#[derive(Debug, Clone, Copy)]
struct Slot {
    id: u32,
    hash: u32,
}

/// The 32 hash bits kept per entry.
fn key_hash(hasher: &DefaultHashBuilder, key: &[u8]) -> u32 {
    (hasher.hash_one(key) >> 32) as u32
}

/// The table hash of an entry: derived from its 32 kept bits only, so that rehashing
/// needs nothing else (hashbrown takes bucket bits from the bottom, tag bits from the
/// top).
fn spread(hash: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(hash)
}

/// An index over the slab.
///
/// A unique index maps each key to one slot. A non-unique index maps each distinct key
/// to the first slot of its group, and the group's rows form a doubly linked list
/// through `links` (`[prev, next]` per slot), so adding or removing a row is O(1)
/// however many rows share its key, and the index costs 8 bytes per row plus one
/// table entry per distinct key.
struct Index {
    name: String,
    fields: Vec<String>,
    positions: Vec<usize>,
    unique: bool,
    table: HashTable<Slot>,
    links: Vec<[u32; 2]>,
    entries: usize,
}

/// Computes a stored row's key bytes into `out` (cleared first).
fn stored_key(
    slots: &Slots,
    slot: u32,
    positions: &[usize],
    scratch: &mut Vec<Option<Value>>,
    out: &mut Vec<u8>,
) {
    out.clear();
    if let Some(bytes) = slots.get(slot as usize).and_then(Option::as_ref)
        && let Err(e) = codec::write_key(bytes, positions, scratch, out)
    {
        tracing::error!(error = %e, "stored row cannot be keyed");
    }
}

#[derive(Default)]
struct Scratch {
    values: Vec<Option<Value>>,
    key: Vec<u8>,
}

thread_local! {
    /// Buffers for keying stored rows during probes and rehashing, reused per thread so
    /// that lookups and inserts allocate nothing for keys. Never borrowed re-entrantly:
    /// hashbrown does not call its `eq` and `hasher` closures inside each other.
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// Whether the stored row in `slot` has key bytes `key` for the columns at `positions`.
fn slot_matches(slots: &Slots, slot: u32, positions: &[usize], key: &[u8]) -> bool {
    SCRATCH.with_borrow_mut(|Scratch { values, key: buf }| {
        stored_key(slots, slot, positions, values, buf);
        buf.as_slice() == key
    })
}

/// Writes the key bytes of `row` for the stored columns at `positions`; `map` gives each
/// stored column's position in the row (`None`: the row has the stored layout).
fn row_key(row: &Row, positions: &[usize], map: Option<&[Option<usize>]>, out: &mut Vec<u8>) {
    out.clear();
    for &p in positions {
        let value = match map {
            None => row.value(p),
            Some(map) => map.get(p).copied().flatten().and_then(|rp| row.value(rp)),
        };
        value.unwrap_or(&Value::Null).write_key(out);
    }
}

impl Index {
    fn new(name: &str, fields: Vec<String>, unique: bool) -> Self {
        Self {
            name: name.to_string(),
            fields,
            positions: Vec::new(),
            unique,
            table: HashTable::new(),
            links: Vec::new(),
            entries: 0,
        }
    }

    fn clear(&mut self) {
        self.table = HashTable::new();
        self.links = Vec::new();
        self.entries = 0;
    }

    fn link(&mut self, slot: u32) -> &mut [u32; 2] {
        let idx = slot as usize;
        if self.links.len() <= idx {
            self.links.resize(idx + 1, [NONE, NONE]);
        }
        &mut self.links[idx]
    }

    fn key_of_row(&self, row: &Row) -> Vec<u8> {
        row.key_bytes(&self.fields)
    }

    /// Adds `slot` under `key` (kept hash bits `hash`); a unique index re-points an
    /// existing key (last write wins), a non-unique one adds the row to the key's group.
    fn insert_hashed(&mut self, slots: &Slots, hash: u32, slot: u32, key: &[u8]) {
        let positions = &self.positions;
        let existing = self.table.find_mut(spread(hash), |e| {
            e.hash == hash && slot_matches(slots, e.id, positions, key)
        });
        match existing {
            Some(head) if self.unique => head.id = slot,
            Some(head) => {
                let next = std::mem::replace(&mut head.id, slot);
                *self.link(slot) = [NONE, next];
                self.link(next)[0] = slot;
                self.entries += 1;
            }
            None => self.insert_absent(hash, slot),
        }
    }

    /// Adds `slot` knowing its key is not in the index yet.
    fn insert_absent(&mut self, hash: u32, slot: u32) {
        self.table
            .insert_unique(spread(hash), Slot { id: slot, hash }, |e| spread(e.hash));
        if !self.unique {
            *self.link(slot) = [NONE, NONE];
            self.entries += 1;
        }
    }

    fn insert(&mut self, slots: &Slots, hasher: &DefaultHashBuilder, slot: u32, key: &[u8]) {
        self.insert_hashed(slots, key_hash(hasher, key), slot, key);
    }

    fn find_hashed(&self, slots: &Slots, hash: u32, key: &[u8]) -> Option<u32> {
        self.table
            .find(spread(hash), |e| {
                e.hash == hash && slot_matches(slots, e.id, &self.positions, key)
            })
            .map(|e| e.id)
    }

    /// Removes `slot`, whose key in this index was `key` (its bytes may already differ).
    fn remove(&mut self, hasher: &DefaultHashBuilder, slot: u32, key: &[u8]) {
        let hash = spread(key_hash(hasher, key));
        if self.unique {
            if let Ok(entry) = self.table.find_entry(hash, |e| e.id == slot) {
                entry.remove();
            }
            return;
        }
        let Some(&[prev, next]) = self.links.get(slot as usize) else {
            return;
        };
        if prev == NONE {
            // The group's head: the table entry moves to the next row, or goes.
            match self.table.find_entry(hash, |e| e.id == slot) {
                Ok(entry) if next == NONE => {
                    entry.remove();
                }
                Ok(mut entry) => entry.get_mut().id = next,
                Err(_) => return,
            }
        } else {
            self.links[prev as usize][1] = next;
        }
        if next != NONE {
            self.links[next as usize][0] = prev;
        }
        self.links[slot as usize] = [NONE, NONE];
        self.entries -= 1;
    }

    fn entry_count(&self) -> usize {
        if self.unique {
            self.table.len()
        } else {
            self.entries
        }
    }

    fn find_one(&self, slots: &Slots, hasher: &DefaultHashBuilder, key: &[u8]) -> Option<u32> {
        self.find_hashed(slots, key_hash(hasher, key), key)
    }

    fn find_all(&self, slots: &Slots, hasher: &DefaultHashBuilder, key: &[u8]) -> Vec<u32> {
        let mut found = Vec::new();
        let mut next = self.find_one(slots, hasher, key).unwrap_or(NONE);
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
}

/// Slab, indexes and layout, under one lock.
struct Store {
    /// The decode layout: the first stored row's columns, extended by later ones.
    layout: Option<Arc<RowLayout>>,
    /// For the last incoming layout seen: per stored column, its position in the row.
    mapping: Option<(Arc<RowLayout>, Vec<Option<usize>>)>,
    slots: Slots,
    free: Vec<u32>,
    len: usize,
    row_bytes: usize,
    /// Keyed by the primary key (the store key).
    primary: Index,
    /// The lookup index when the lookup fields differ from the primary key.
    lookup: Option<Index>,
    indexes: Vec<Index>,
    hasher: DefaultHashBuilder,
    encode_buf: Vec<u8>,
    /// Whether the row last encoded had the stored layout (else `mapping` applies).
    last_identity: bool,
    key_buf: Vec<u8>,
    old_key_buf: Vec<u8>,
    old_values: Vec<Option<Value>>,
}

impl Store {
    fn new() -> Self {
        Self {
            layout: None,
            mapping: None,
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            row_bytes: 0,
            primary: Index::new("(key)", Vec::new(), true),
            lookup: None,
            indexes: Vec::new(),
            hasher: DefaultHashBuilder::default(),
            encode_buf: Vec::new(),
            last_identity: true,
            key_buf: Vec::new(),
            old_key_buf: Vec::new(),
            old_values: Vec::new(),
        }
    }

    fn all_indexes_mut(&mut self) -> impl Iterator<Item = &mut Index> {
        std::iter::once(&mut self.primary)
            .chain(self.lookup.as_mut())
            .chain(self.indexes.iter_mut())
    }

    /// Makes sure the layout exists and holds every column of `row` and every indexed
    /// field, then refreshes the index positions.
    fn fit_layout(&mut self, row: &Row) {
        let current = match &self.layout {
            Some(layout) if Arc::ptr_eq(layout, row.layout()) => return,
            Some(layout) => Arc::clone(layout),
            None => Arc::clone(row.layout()),
        };
        let mut names: Vec<Arc<str>> = current.names().to_vec();
        let mut grown = self.layout.is_none();
        let wanted = row
            .columns()
            .iter()
            .map(|n| n.to_string())
            .chain(self.all_fields())
            .collect::<Vec<_>>();
        for name in wanted {
            if !names.iter().any(|n| **n == *name) {
                names.push(Arc::from(name.as_str()));
                grown = true;
            }
        }
        if grown {
            let layout = if names.as_slice() == current.names() {
                current
            } else {
                RowLayout::new(&names)
            };
            self.set_layout(layout);
        }
    }

    fn all_fields(&self) -> Vec<String> {
        let mut fields: Vec<String> = self.primary.fields.clone();
        fields.extend(self.lookup.iter().flat_map(|i| i.fields.iter().cloned()));
        fields.extend(self.indexes.iter().flat_map(|i| i.fields.iter().cloned()));
        fields
    }

    fn set_layout(&mut self, layout: Arc<RowLayout>) {
        self.mapping = None;
        for index in std::iter::once(&mut self.primary)
            .chain(self.lookup.as_mut())
            .chain(self.indexes.iter_mut())
        {
            index.positions = index
                .fields
                .iter()
                .map(|f| {
                    layout
                        .index_of(f)
                        .expect("fit_layout added every indexed field")
                })
                .collect();
        }
        self.layout = Some(layout);
    }

    fn encode(&mut self, row: &Row) -> Box<[u8]> {
        self.fit_layout(row);
        let layout = self.layout.clone().expect("fit_layout set the layout");
        let mut buf = std::mem::take(&mut self.encode_buf);
        buf.clear();
        self.last_identity = Arc::ptr_eq(&layout, row.layout()) || layout.names() == row.columns();
        if self.last_identity {
            row.values()
                .iter()
                .for_each(|v| codec::encode_value(v, &mut buf));
        } else {
            let fresh =
                !matches!(&self.mapping, Some((cached, _)) if Arc::ptr_eq(cached, row.layout()));
            if fresh {
                let positions = layout
                    .names()
                    .iter()
                    .map(|n| row.layout().index_of(n))
                    .collect();
                self.mapping = Some((Arc::clone(row.layout()), positions));
            }
            let (_, positions) = self.mapping.as_ref().expect("set above");
            let mut end = 0;
            for position in positions {
                match position.and_then(|p| row.value(p)) {
                    Some(value) => {
                        codec::encode_value(value, &mut buf);
                        end = buf.len();
                    }
                    None => codec::encode_absent(&mut buf),
                }
            }
            buf.truncate(end);
        }
        let bytes = buf.as_slice().into();
        self.encode_buf = buf;
        bytes
    }

    fn decode(&self, bytes: &[u8]) -> Option<Row> {
        let layout = self.layout.as_ref()?;
        let mut values = Vec::with_capacity(layout.len());
        if let Err(e) = codec::decode(bytes, layout.len(), &mut values) {
            tracing::error!(error = %e, "stored row cannot be decoded");
            return None;
        }
        if values.iter().all(Option::is_some) {
            return Some(Row::new(
                Arc::clone(layout),
                values.into_iter().flatten().collect(),
            ));
        }
        let (names, present): (Vec<&str>, Vec<Value>) = layout
            .names()
            .iter()
            .zip(values)
            .filter_map(|(name, value)| value.map(|v| (&**name, v)))
            .unzip();
        Some(Row::new(RowLayout::new(names), present))
    }

    fn row_at(&self, slot: u32) -> Option<Row> {
        self.slots
            .get(slot as usize)?
            .as_deref()
            .and_then(|b| self.decode(b))
    }

    fn find_by_key(&self, key: &[u8]) -> Option<u32> {
        self.primary.find_one(&self.slots, &self.hasher, key)
    }

    /// Removes the index entries of `slot` (whose bytes are still in place).
    fn unindex(&mut self, slot: u32) {
        let Some(bytes) = self.slots.get(slot as usize).and_then(Option::as_ref) else {
            return;
        };
        let mut keys = Vec::new();
        let mut scratch = Vec::new();
        for index in std::iter::once(&self.primary)
            .chain(self.lookup.as_ref())
            .chain(self.indexes.iter())
        {
            let mut key = Vec::new();
            if codec::write_key(bytes, &index.positions, &mut scratch, &mut key).is_err() {
                tracing::error!(index = %index.name, "stored row cannot be keyed");
            }
            keys.push(key);
        }
        let hasher = self.hasher.clone();
        for (index, key) in std::iter::once(&mut self.primary)
            .chain(self.lookup.as_mut())
            .chain(self.indexes.iter_mut())
            .zip(keys)
        {
            index.remove(&hasher, slot, &key);
        }
    }

    /// Inserts or replaces the row with `row`'s primary key; returns the old row bytes.
    ///
    /// One probe of the primary index; a replacement leaves the primary index alone
    /// and touches a secondary index only when the row's key in it changed.
    fn upsert(&mut self, row: &Row) -> Option<Box<[u8]>> {
        let bytes = self.encode(row);
        let Self {
            slots,
            free,
            len,
            row_bytes,
            primary,
            lookup,
            indexes,
            hasher,
            mapping,
            last_identity,
            key_buf,
            old_key_buf,
            old_values,
            ..
        } = self;
        let map = if *last_identity {
            None
        } else {
            mapping.as_ref().map(|(_, m)| m.as_slice())
        };
        row_key(row, &primary.positions, map, key_buf);
        let hash = key_hash(hasher, key_buf);
        *row_bytes += bytes.len();
        match primary.find_hashed(slots, hash, key_buf) {
            Some(slot) => {
                let old = slots[slot as usize]
                    .replace(bytes)
                    .expect("indexed slots hold a row");
                *row_bytes -= old.len();
                for index in lookup.iter_mut().chain(indexes.iter_mut()) {
                    old_key_buf.clear();
                    if codec::write_key(&old, &index.positions, old_values, old_key_buf).is_err() {
                        tracing::error!(index = %index.name, "stored row cannot be keyed");
                    }
                    row_key(row, &index.positions, map, key_buf);
                    if old_key_buf == key_buf && !index.unique {
                        continue;
                    }
                    index.remove(hasher, slot, old_key_buf);
                    index.insert(slots, hasher, slot, key_buf);
                }
                Some(old)
            }
            None => {
                let slot = match free.pop() {
                    Some(slot) => {
                        slots[slot as usize] = Some(bytes);
                        slot
                    }
                    None => {
                        slots.push(Some(bytes));
                        u32::try_from(slots.len() - 1).expect("fewer than 2^32 rows")
                    }
                };
                *len += 1;
                primary.insert_absent(hash, slot);
                for index in lookup.iter_mut().chain(indexes.iter_mut()) {
                    row_key(row, &index.positions, map, key_buf);
                    index.insert(slots, hasher, slot, key_buf);
                }
                None
            }
        }
    }

    /// Removes the row with this primary key; returns its bytes.
    fn remove(&mut self, key: &[u8]) -> Option<Box<[u8]>> {
        let slot = self.find_by_key(key)?;
        self.unindex(slot);
        let old = self.slots[slot as usize].take();
        if let Some(old) = &old {
            self.row_bytes -= old.len();
        }
        self.free.push(slot);
        self.len -= 1;
        old
    }

    fn clear(&mut self) {
        self.slots = Vec::new();
        self.free = Vec::new();
        self.len = 0;
        self.row_bytes = 0;
        self.all_indexes_mut().for_each(Index::clear);
    }

    fn rows(&self) -> Vec<Row> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|b| self.decode(b))
            .collect()
    }

    fn index_named(&self, name: &str) -> Option<&Index> {
        if name == PRIMARY_INDEX {
            return Some(self.lookup.as_ref().unwrap_or(&self.primary));
        }
        self.indexes.iter().find(|i| i.name == name)
    }
}

/// Builds an [`IndexedTarget`].
#[derive(Debug, Default)]
#[must_use]
pub struct IndexedTargetBuilder {
    lookup_fields: Vec<String>,
    indexes: Vec<IndexDefinition>,
}

impl IndexedTargetBuilder {
    /// The fields of the unique lookup index used by [`IndexedTarget::lookup`]
    /// (default: the table's primary key).
    pub fn lookup_fields(mut self, fields: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.lookup_fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a secondary index.
    pub fn index(mut self, index: IndexDefinition) -> Self {
        self.indexes.push(index);
        self
    }

    /// Builds the target (fields are checked against the columns at `on_init`).
    pub fn build(self) -> Arc<IndexedTarget> {
        Arc::new(IndexedTarget {
            lookup_fields: self.lookup_fields,
            index_defs: self.indexes,
            store: RwLock::new(Store::new()),
            columns: RwLock::new(Vec::new()),
            listeners: Registry::new(),
        })
    }
}

/// A raw-row replica of one table, with a unique lookup index and optional secondary
/// indexes; see the crate docs.
pub struct IndexedTarget {
    lookup_fields: Vec<String>,
    index_defs: Vec<IndexDefinition>,
    store: RwLock<Store>,
    columns: RwLock<Vec<ColumnDefinition>>,
    listeners: Arc<Registry<RowListener>>,
}

impl std::fmt::Debug for IndexedTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexedTarget")
            .field("lookup_fields", &self.lookup_fields)
            .field("indexes", &self.index_defs)
            .field("count", &self.count())
            .finish()
    }
}

/// A change to report to listeners once the write lock is released.
type Notification = (Option<Row>, Option<Row>);

impl IndexedTarget {
    /// Starts building a target.
    pub fn builder() -> IndexedTargetBuilder {
        IndexedTargetBuilder::default()
    }

    /// The row whose lookup fields equal `key`.
    pub fn lookup(&self, key: impl IntoKey) -> Option<Row> {
        let store = self.store.read();
        let index = store.lookup.as_ref().unwrap_or(&store.primary);
        let values = key.into_key();
        if values.len() != index.fields.len() {
            return None;
        }
        let slot = index.find_one(&store.slots, &store.hasher, &key_bytes(&values))?;
        store.row_at(slot)
    }

    /// The row whose primary key equals `key`.
    pub fn get(&self, key: impl IntoKey) -> Option<Row> {
        let store = self.store.read();
        let values = key.into_key();
        if values.len() != store.primary.fields.len() {
            return None;
        }
        let slot = store.find_by_key(&key_bytes(&values))?;
        store.row_at(slot)
    }

    /// The rows whose `index` fields equal `key`: 0 or 1 for a unique index, any number
    /// for a non-unique one. `(primary)` names the lookup index.
    ///
    /// # Errors
    /// An unknown index, or a key with the wrong number of values.
    pub fn lookup_all(&self, index: &str, key: impl IntoKey) -> Result<Vec<Row>, IndexError> {
        let store = self.store.read();
        let found = store
            .index_named(index)
            .ok_or_else(|| IndexError::UnknownIndex(index.to_string()))?;
        let values = key.into_key();
        if values.len() != found.fields.len() {
            return Err(IndexError::KeyArity {
                index: index.to_string(),
                expected: found.fields.len(),
                got: values.len(),
            });
        }
        let key = key_bytes(&values);
        let slots = if found.unique {
            found
                .find_one(&store.slots, &store.hasher, &key)
                .into_iter()
                .collect()
        } else {
            found.find_all(&store.slots, &store.hasher, &key)
        };
        Ok(slots.into_iter().filter_map(|s| store.row_at(s)).collect())
    }

    /// Every row (a copy; order unspecified).
    pub fn all(&self) -> Vec<Row> {
        self.store.read().rows()
    }

    /// The number of rows.
    pub fn count(&self) -> usize {
        self.store.read().len
    }

    /// Calls `listener(old, new)` after every change: `(None, new)` for an insert,
    /// `(old, new)` for an update, `(old, None)` for a delete of an existing row and
    /// `(None, None)` for a truncate. Listeners run on the writer's task after the
    /// change is visible, in order, and must not block; they may read the target.
    pub fn listen(
        &self,
        listener: impl Fn(Option<&Row>, Option<&Row>) + Send + Sync + 'static,
    ) -> ListenerHandle {
        self.listeners.add(Arc::new(listener))
    }

    /// The indexes with their entry counts; `(primary)` is the lookup index.
    pub fn indexes(&self) -> Vec<IndexInfo> {
        let store = self.store.read();
        let lookup = store.lookup.as_ref().unwrap_or(&store.primary);
        std::iter::once((PRIMARY_INDEX, lookup))
            .chain(store.indexes.iter().map(|i| (i.name.as_str(), i)))
            .map(|(name, i)| IndexInfo {
                name: name.to_string(),
                fields: i.fields.clone(),
                unique: i.unique,
                entry_count: i.entry_count(),
            })
            .collect()
    }

    /// The columns given at `on_init`.
    pub fn columns(&self) -> Vec<ColumnDefinition> {
        self.columns.read().clone()
    }

    /// The lookup fields in effect (the primary key when none were configured).
    pub fn lookup_fields(&self) -> Vec<String> {
        let store = self.store.read();
        store
            .lookup
            .as_ref()
            .unwrap_or(&store.primary)
            .fields
            .clone()
    }

    /// Approximate bytes this target has allocated: the slab, the encoded rows and the
    /// index tables.
    pub fn heap_size(&self) -> usize {
        let store = self.store.read();
        let tables: usize = std::iter::once(&store.primary)
            .chain(store.lookup.as_ref())
            .chain(store.indexes.iter())
            .map(|i| {
                i.table.allocation_size() + i.links.capacity() * std::mem::size_of::<[u32; 2]>()
            })
            .sum();
        store.slots.capacity() * std::mem::size_of::<Option<Box<[u8]>>>()
            + store.free.capacity() * std::mem::size_of::<u32>()
            + store.row_bytes
            + tables
    }

    fn notify(&self, notifications: Vec<Notification>) {
        if notifications.is_empty() {
            return;
        }
        let listeners = self.listeners.snapshot();
        for (old, new) in &notifications {
            for listener in &listeners {
                listener(old.as_ref(), new.as_ref());
            }
        }
    }

    fn upsert_rows(&self, rows: &[Row]) {
        let listening = !self.listeners.is_empty();
        let mut notifications = Vec::new();
        {
            let mut store = self.store.write();
            for row in rows {
                let old = store.upsert(row);
                if listening {
                    let old = old.and_then(|b| store.decode(&b));
                    notifications.push((old, Some(row.clone())));
                }
            }
        }
        self.notify(notifications);
    }
}

fn missing_field(kind: &str, field: &str) -> TargetError {
    TargetError::new(format!("{kind} field {field} not found in columns"))
}

#[async_trait]
impl SyncTarget for IndexedTarget {
    fn type_name(&self) -> &str {
        TYPE_NAME
    }

    async fn on_init(
        &self,
        table: &TableIdentifier,
        columns: &[ColumnDefinition],
    ) -> Result<(), TargetError> {
        let names: HashSet<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        for field in &self.lookup_fields {
            if !names.contains(field.as_str()) {
                return Err(TargetError::new(format!(
                    "lookup field {field} not found in columns"
                )));
            }
        }
        for index in &self.index_defs {
            if let Some(field) = index.fields.iter().find(|f| !names.contains(f.as_str())) {
                return Err(missing_field(&format!("index {}", index.name), field));
            }
        }
        let pk: Vec<String> = primary_key_columns(columns)
            .into_iter()
            .map(str::to_string)
            .collect();
        let key_fields = if pk.is_empty() {
            self.lookup_fields.clone()
        } else {
            pk
        };
        if key_fields.is_empty() {
            return Err(TargetError::new(format!(
                "table {table} has no primary key and no lookup_fields are configured"
            )));
        }
        let mut store = self.store.write();
        store.primary = Index::new("(key)", key_fields.clone(), true);
        store.lookup = (!self.lookup_fields.is_empty() && self.lookup_fields != key_fields)
            .then(|| Index::new(PRIMARY_INDEX, self.lookup_fields.clone(), true));
        store.indexes = self
            .index_defs
            .iter()
            .map(|d| Index::new(&d.name, d.fields.clone(), d.unique))
            .collect();
        // Re-key what is already held (a re-init after a reset or schema change).
        let rows = store.rows();
        store.clear();
        store.layout = None;
        store.mapping = None;
        for row in &rows {
            store.upsert(row);
        }
        drop(store);
        *self.columns.write() = columns.to_vec();
        Ok(())
    }

    async fn on_baseline_row(
        &self,
        _table: &TableIdentifier,
        row: &Row,
    ) -> Result<(), TargetError> {
        self.upsert_rows(std::slice::from_ref(row));
        Ok(())
    }

    async fn on_baseline_rows(
        &self,
        _table: &TableIdentifier,
        rows: &[Row],
    ) -> Result<(), TargetError> {
        self.upsert_rows(rows);
        Ok(())
    }

    async fn on_baseline_complete(&self, _table: &TableIdentifier) -> Result<(), TargetError> {
        Ok(())
    }

    async fn on_insert(&self, _table: &TableIdentifier, row: &Row) -> Result<(), TargetError> {
        self.upsert_rows(std::slice::from_ref(row));
        Ok(())
    }

    async fn on_update(
        &self,
        _table: &TableIdentifier,
        row: &Row,
        identity: Option<&Row>,
    ) -> Result<(), TargetError> {
        let listening = !self.listeners.is_empty();
        let notification = {
            let mut store = self.store.write();
            let new_key = store.primary.key_of_row(row);
            let old_key = identity.map(|i| store.primary.key_of_row(i));
            let removed = match old_key {
                Some(old_key) if old_key != new_key => store.remove(&old_key),
                _ => None,
            };
            let replaced = store.upsert(row);
            let old = removed.or(replaced);
            listening.then(|| (old.and_then(|b| store.decode(&b)), Some(row.clone())))
        };
        self.notify(notification.into_iter().collect());
        Ok(())
    }

    async fn on_delete(&self, _table: &TableIdentifier, identity: &Row) -> Result<(), TargetError> {
        let listening = !self.listeners.is_empty();
        let notification = {
            let mut store = self.store.write();
            let key = store.primary.key_of_row(identity);
            let removed = store.remove(&key);
            match removed {
                Some(bytes) if listening => Some((store.decode(&bytes), None)),
                _ => None,
            }
        };
        self.notify(notification.into_iter().collect());
        Ok(())
    }

    async fn on_truncate(&self, _table: &TableIdentifier) -> Result<(), TargetError> {
        self.store.write().clear();
        self.notify(vec![(None, None)]);
        Ok(())
    }

    fn is_durable(&self) -> bool {
        true
    }

    async fn on_schema_change(
        &self,
        _table: &TableIdentifier,
        old: &[ColumnDefinition],
        new: &[ColumnDefinition],
    ) -> SchemaChangeResponse {
        let indexed: HashSet<String> = {
            let store = self.store.read();
            store
                .all_fields()
                .into_iter()
                .chain(self.lookup_fields.iter().cloned())
                .collect()
        };
        for column in old {
            match new.iter().find(|c| c.name == column.name) {
                None if indexed.contains(&column.name) => {
                    return SchemaChangeResponse::re_baseline(format!(
                        "indexed column {} was dropped",
                        column.name
                    ));
                }
                Some(changed)
                    if changed.type_name != column.type_name && indexed.contains(&column.name) =>
                {
                    return SchemaChangeResponse::re_baseline(format!(
                        "indexed column {} changed type from {} to {}",
                        column.name, column.type_name, changed.type_name
                    ));
                }
                _ => {}
            }
        }
        *self.columns.write() = new.to_vec();
        SchemaChangeResponse::proceed()
    }

    async fn export_snapshot(&self) -> Result<Vec<SnapshotEntry>, TargetError> {
        Ok(self
            .all()
            .into_iter()
            .map(|row| SnapshotEntry { row })
            .collect())
    }

    async fn restore_snapshot(
        &self,
        _info: &TableSnapshotInfo,
        entries: Vec<SnapshotEntry>,
    ) -> Result<(), TargetError> {
        self.store.write().clear();
        let rows: Vec<Row> = entries.into_iter().map(|e| e.row).collect();
        self.upsert_rows(&rows);
        Ok(())
    }

    fn supports_consistent_snapshot(&self) -> bool {
        true
    }

    async fn on_close(&self, _table: &TableIdentifier) -> Result<(), TargetError> {
        self.listeners.clear();
        Ok(())
    }

    fn count(&self) -> Option<u64> {
        Some(self.store.read().len as u64)
    }

    fn scan_rows(&self) -> Option<Vec<Row>> {
        Some(self.all())
    }
}
