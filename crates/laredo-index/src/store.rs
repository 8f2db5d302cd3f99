//! The state of an [`IndexedRows`](crate::IndexedRows): the slab of encoded rows,
//! its column layout and its indexes, always changed together under one lock.
//!
//! The stored layout is the first row's layout (so rows from a source, which share
//! their layout, encode without any name lookup), extended with every column a later
//! row brings. A column dropped by a schema change is renamed to a name no PostgreSQL
//! column can have (it starts with NUL) and hidden from reads; rows written later leave
//! it out, and a column added again under the same name gets a new position.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use hashbrown::DefaultHashBuilder;
use laredo_core::{IndexDefinition, PRIMARY_INDEX, Row, RowLayout, Value};

use crate::codec;
use crate::index::{Index, Slots, key_hash};
use crate::order;

/// The slab holds `u32::MAX - 1` rows at most (`u32::MAX` marks "no slot").
const MAX_ROWS: usize = u32::MAX as usize - 1;

/// The slab has no free slot left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// Prefix of a dropped column's internal name.
const DROPPED_PREFIX: char = '\0';

/// The visible columns when some stored columns were dropped.
struct Visible {
    layout: Arc<RowLayout>,
    /// Per stored column: whether it is visible.
    live: Box<[bool]>,
}

/// Slab, layout and indexes.
pub(crate) struct Store {
    /// The stored column order (`None` until the first row).
    layout: Option<Arc<RowLayout>>,
    visible: Option<Visible>,
    /// For the last incoming layout that is not the stored one: per stored column, its
    /// position in such rows.
    mapping: Option<(Arc<RowLayout>, Vec<Option<usize>>)>,
    slots: Slots,
    /// Free slot numbers, reused before the slab grows.
    free: Vec<u32>,
    len: usize,
    /// The sum of the encoded rows' lengths.
    row_bytes: usize,
    /// Keyed by the store key (the primary key); empty fields until configured.
    primary: Index,
    /// The lookup index, when the lookup fields differ from the store key.
    lookup: Option<Index>,
    indexes: Vec<Index>,
    hasher: DefaultHashBuilder,
    encode_buf: Vec<u8>,
    key_buf: Vec<u8>,
    old_key_buf: Vec<u8>,
    /// The store keys in sort order ([`order`]) → slot, once an ordered read asked for
    /// it ([`Store::enable_order`]); kept current by every write from then on.
    ordered: Option<BTreeMap<Box<[u8]>, u32>>,
}

/// Writes the canonical key of `row` for the stored columns at `positions`; `map` gives
/// each stored column's position in the row (`None`: the row has the stored layout).
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

/// Writes the canonical key of an encoded row into `out` (cleared first).
fn stored_key(bytes: &[u8], index: &Index, out: &mut Vec<u8>) {
    out.clear();
    if let Err(e) = codec::write_key(bytes, index.positions(), out) {
        tracing::error!(error = %e, index = index.name(), "stored row cannot be keyed");
    }
}

impl Store {
    pub(crate) fn new() -> Self {
        Self {
            layout: None,
            visible: None,
            mapping: None,
            slots: Slots::default(),
            free: Vec::new(),
            len: 0,
            row_bytes: 0,
            primary: Index::new("(key)", Vec::new(), true),
            lookup: None,
            indexes: Vec::new(),
            hasher: DefaultHashBuilder::default(),
            encode_buf: Vec::new(),
            key_buf: Vec::new(),
            old_key_buf: Vec::new(),
            ordered: None,
        }
    }

    /// Whether the ordered index is kept.
    pub(crate) fn is_ordered(&self) -> bool {
        self.ordered.is_some()
    }

    /// Builds the ordered index of the store keys (once; writes keep it current).
    pub(crate) fn enable_order(&mut self) {
        if self.ordered.is_some() {
            return;
        }
        let mut ordered = BTreeMap::new();
        for (slot, bytes) in self.slots.iter().enumerate() {
            let (Some(bytes), Ok(slot)) = (bytes, u32::try_from(slot)) else {
                continue;
            };
            if let Some(key) = self.stored_sort_key(bytes) {
                ordered.insert(key, slot);
            }
        }
        self.ordered = Some(ordered);
    }

    /// The sort key of a stored row's store key.
    fn stored_sort_key(&self, bytes: &[u8]) -> Option<Box<[u8]>> {
        let layout = self.layout.as_ref()?;
        let mut values = Vec::with_capacity(layout.len());
        if let Err(e) = codec::decode(bytes, layout.len(), &mut values) {
            tracing::error!(error = %e, "stored row cannot be decoded");
            return None;
        }
        let mut key = Vec::new();
        order::write_sort_key(
            self.primary.positions().iter().map(|&p| {
                values
                    .get(p)
                    .and_then(Option::as_ref)
                    .unwrap_or(&Value::Null)
            }),
            &mut key,
        );
        Some(key.into_boxed_slice())
    }

    /// Up to `limit` rows whose store key sorts after `after` (a sort key), in order.
    /// Reads only those rows: `None` when the ordered index is not kept.
    pub(crate) fn rows_after(&self, after: Option<&[u8]>, limit: usize) -> Option<Vec<Row>> {
        let ordered = self.ordered.as_ref()?;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Some(
            ordered
                .range::<[u8], _>((lower, Bound::Unbounded))
                .take(limit)
                .filter_map(|(_, &slot)| self.row_at(slot))
                .collect(),
        )
    }

    /// Sets the store key, the lookup fields (`None`: the store key) and the secondary
    /// indexes, and re-keys the rows already held.
    pub(crate) fn configure(
        &mut self,
        key_fields: Vec<String>,
        lookup_fields: Option<Vec<String>>,
        indexes: &[IndexDefinition],
    ) {
        let rows = self.rows();
        self.primary = Index::new("(key)", key_fields, true);
        self.lookup = lookup_fields
            .filter(|fields| *fields != self.primary.fields())
            .map(|fields| Index::new(PRIMARY_INDEX, fields, true));
        self.indexes = indexes
            .iter()
            .map(|d| Index::new(&d.name, d.fields.clone(), d.unique))
            .collect();
        self.clear();
        for row in &rows {
            // Fewer rows than before: the slab cannot be full.
            let _ = self.upsert(row);
        }
    }

    /// Whether [`Store::configure`] ran (the store key is never empty after it).
    pub(crate) fn is_configured(&self) -> bool {
        !self.primary.fields().is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The store key fields.
    pub(crate) fn key_fields(&self) -> &[String] {
        self.primary.fields()
    }

    /// The unique index behind `lookup`.
    pub(crate) fn lookup_index(&self) -> &Index {
        self.lookup.as_ref().unwrap_or(&self.primary)
    }

    /// The lookup index under [`PRIMARY_INDEX`], then the secondary indexes.
    pub(crate) fn reported_indexes(&self) -> impl Iterator<Item = (&str, &Index)> {
        std::iter::once((PRIMARY_INDEX, self.lookup_index()))
            .chain(self.indexes.iter().map(|i| (i.name(), i)))
    }

    /// `(primary)` for the lookup index, else a secondary index by name.
    pub(crate) fn index_named(&self, name: &str) -> Option<&Index> {
        if name == PRIMARY_INDEX {
            return Some(self.lookup_index());
        }
        self.indexes.iter().find(|i| i.name() == name)
    }

    /// Every field of every index, the store key included.
    pub(crate) fn indexed_fields(&self) -> impl Iterator<Item = &String> {
        self.all_indexes().flat_map(|i| i.fields().iter())
    }

    fn all_indexes(&self) -> impl Iterator<Item = &Index> {
        std::iter::once(&self.primary)
            .chain(self.lookup.as_ref())
            .chain(self.indexes.iter())
    }

    /// The rows under `key` (canonical key bytes) in `index`.
    pub(crate) fn find(&self, index: &Index, key: &[u8]) -> Vec<Row> {
        let hash = key_hash(&self.hasher, key);
        if index.is_unique() {
            return index
                .find(&self.slots, hash, key)
                .and_then(|slot| self.row_at(slot))
                .into_iter()
                .collect();
        }
        index
            .find_all(&self.slots, hash, key)
            .into_iter()
            .filter_map(|slot| self.row_at(slot))
            .collect()
    }

    /// The row under `key` in the unique `index`.
    pub(crate) fn find_one(&self, index: &Index, key: &[u8]) -> Option<Row> {
        let slot = index.find(&self.slots, key_hash(&self.hasher, key), key)?;
        self.row_at(slot)
    }

    /// The row with this store key.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Row> {
        self.find_one(&self.primary, key)
    }

    /// Every row (order unspecified).
    pub(crate) fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::with_capacity(self.len);
        rows.extend(self.slots.iter().flatten().filter_map(|b| self.decode(b)));
        rows
    }

    /// Decodes a stored row; `None` (logged) if it cannot be decoded.
    pub(crate) fn decode(&self, bytes: &[u8]) -> Option<Row> {
        let layout = self.layout.as_ref()?;
        let mut values = Vec::with_capacity(layout.len());
        if let Err(e) = codec::decode(bytes, layout.len(), &mut values) {
            tracing::error!(error = %e, "stored row cannot be decoded");
            return None;
        }
        let (layout, values) = match &self.visible {
            None => (layout, values),
            Some(visible) => (
                &visible.layout,
                values
                    .into_iter()
                    .zip(visible.live.iter())
                    .filter_map(|(value, live)| live.then_some(value))
                    .collect(),
            ),
        };
        if values.iter().all(Option::is_some) {
            return Some(Row::new(
                Arc::clone(layout),
                values.into_iter().flatten().collect(),
            ));
        }
        // A row stored without some columns: it decodes to exactly the columns it had.
        let (names, present): (Vec<&str>, Vec<Value>) = layout
            .names()
            .iter()
            .zip(values)
            .filter_map(|(name, value)| value.map(|v| (&**name, v)))
            .unzip();
        Some(Row::new(RowLayout::new(names), present))
    }

    fn row_at(&self, slot: u32) -> Option<Row> {
        let bytes = self.slots.get(slot as usize)?.as_deref()?;
        self.decode(bytes)
    }

    /// Makes the stored layout hold every column of `row` and caches how `row`'s layout
    /// maps onto it.
    fn prepare(&mut self, row: &Row) {
        if let Some(layout) = &self.layout {
            if Arc::ptr_eq(layout, row.layout()) {
                return;
            }
            if matches!(&self.mapping, Some((seen, _)) if Arc::ptr_eq(seen, row.layout())) {
                return;
            }
        }
        let mut names: Vec<Arc<str>> = self
            .layout
            .as_ref()
            .map(|l| l.names().to_vec())
            .unwrap_or_default();
        let known = names.len();
        let indexed: Vec<Arc<str>> = self.indexed_fields().map(|f| Arc::from(&**f)).collect();
        for name in row.columns().iter().chain(&indexed) {
            if !names.contains(name) {
                names.push(Arc::clone(name));
            }
        }
        if self.layout.is_none() && names.as_slice() == row.columns() {
            self.set_layout(Arc::clone(row.layout()));
            return;
        }
        if self.layout.is_none() || names.len() > known {
            self.set_layout(RowLayout::new(&names));
        }
        if let Some(layout) = &self.layout {
            let map = layout
                .names()
                .iter()
                .map(|n| row.layout().index_of(n))
                .collect();
            self.mapping = Some((Arc::clone(row.layout()), map));
        }
    }

    fn set_layout(&mut self, layout: Arc<RowLayout>) {
        self.mapping = None;
        for index in std::iter::once(&mut self.primary)
            .chain(self.lookup.as_mut())
            .chain(self.indexes.iter_mut())
        {
            // Every indexed field is in the layout (`prepare` adds them); a missing one
            // would key as NULL, never panic.
            let positions = index
                .fields()
                .iter()
                .map(|f| layout.index_of(f).unwrap_or(usize::MAX))
                .collect();
            index.set_positions(positions);
        }
        if let Some(visible) = &mut self.visible
            && visible.live.len() < layout.len()
        {
            // Columns added after a drop are visible.
            let mut live = visible.live.to_vec();
            live.resize(layout.len(), true);
            visible.live = live.into();
            visible.layout = RowLayout::new(
                layout
                    .names()
                    .iter()
                    .filter(|n| !n.starts_with(DROPPED_PREFIX)),
            );
        }
        self.layout = Some(layout);
    }

    /// The position map of `row` onto the stored layout (`None`: the row has it).
    fn row_map<'a>(
        layout: Option<&Arc<RowLayout>>,
        mapping: &'a Option<(Arc<RowLayout>, Vec<Option<usize>>)>,
        row: &Row,
    ) -> Option<&'a [Option<usize>]> {
        if layout.is_some_and(|l| Arc::ptr_eq(l, row.layout())) {
            return None;
        }
        mapping
            .as_ref()
            .filter(|(seen, _)| Arc::ptr_eq(seen, row.layout()))
            .map(|(_, map)| map.as_slice())
    }

    /// Encodes `row` in the stored layout (after [`Store::prepare`]).
    fn encode(&mut self, row: &Row) -> Box<[u8]> {
        let mut buf = std::mem::take(&mut self.encode_buf);
        buf.clear();
        match Self::row_map(self.layout.as_ref(), &self.mapping, row) {
            None => row
                .values()
                .iter()
                .for_each(|v| codec::encode_value(v, &mut buf)),
            Some(map) => {
                // Trailing absent columns are not written at all.
                let mut end = 0;
                for position in map {
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
        }
        let bytes = buf.as_slice().into();
        self.encode_buf = buf;
        bytes
    }

    /// Inserts `row`, or replaces the row with its store key; returns the replaced
    /// row's bytes.
    ///
    /// One probe of the store key index; a replacement leaves that index alone and
    /// touches a secondary index only when the row's key in it changed (or it is unique:
    /// the replacement then takes the key over, last write wins).
    ///
    /// # Errors
    /// [`Full`] when the row is new and the slab holds [`MAX_ROWS`] rows already.
    pub(crate) fn upsert(&mut self, row: &Row) -> Result<Option<Box<[u8]>>, Full> {
        self.prepare(row);
        let bytes = self.encode(row);
        let Self {
            layout,
            mapping,
            slots,
            free,
            len,
            row_bytes,
            primary,
            lookup,
            indexes,
            hasher,
            key_buf,
            old_key_buf,
            ..
        } = self;
        let map = Self::row_map(layout.as_ref(), mapping, row);
        row_key(row, primary.positions(), map, key_buf);
        let hash = key_hash(hasher, key_buf);
        *row_bytes += bytes.len();
        if let Some(slot) = primary.find(slots, hash, key_buf) {
            let old = slots
                .get_mut(slot as usize)
                .and_then(|s| s.replace(bytes))
                .unwrap_or_default();
            *row_bytes -= old.len();
            for index in lookup.iter_mut().chain(indexes.iter_mut()) {
                stored_key(&old, index, old_key_buf);
                row_key(row, index.positions(), map, key_buf);
                if old_key_buf == key_buf && !index.is_unique() {
                    continue;
                }
                index.remove(key_hash(hasher, old_key_buf), slot);
                index.insert(slots, key_hash(hasher, key_buf), slot, key_buf);
            }
            return Ok(Some(old));
        }
        let slot = match free.pop() {
            Some(slot) => {
                if let Some(entry) = slots.get_mut(slot as usize) {
                    *entry = Some(bytes);
                }
                slot
            }
            None => {
                let slot = match u32::try_from(slots.len()) {
                    Ok(slot) if (slot as usize) < MAX_ROWS => slot,
                    _ => {
                        *row_bytes -= bytes.len();
                        return Err(Full);
                    }
                };
                slots.push(Some(bytes));
                slot
            }
        };
        *len += 1;
        primary.insert_absent(hash, slot);
        if let Some(ordered) = self.ordered.as_mut() {
            let mut key = Vec::new();
            order::write_sort_key(
                primary.positions().iter().map(|&p| {
                    let value = match map {
                        None => row.value(p),
                        Some(map) => map.get(p).copied().flatten().and_then(|rp| row.value(rp)),
                    };
                    value.unwrap_or(&Value::Null)
                }),
                &mut key,
            );
            ordered.insert(key.into_boxed_slice(), slot);
        }
        for index in lookup.iter_mut().chain(indexes.iter_mut()) {
            row_key(row, index.positions(), map, key_buf);
            index.insert(slots, key_hash(hasher, key_buf), slot, key_buf);
        }
        Ok(None)
    }

    /// Removes the row with this store key; returns its bytes.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Box<[u8]>> {
        let slot = self
            .primary
            .find(&self.slots, key_hash(&self.hasher, key), key)?;
        let bytes = self.slots.get_mut(slot as usize)?.take()?;
        let Self {
            primary,
            lookup,
            indexes,
            hasher,
            key_buf,
            ..
        } = self;
        for index in std::iter::once(primary)
            .chain(lookup.iter_mut())
            .chain(indexes.iter_mut())
        {
            stored_key(&bytes, index, key_buf);
            index.remove(key_hash(hasher, key_buf), slot);
        }
        if self.ordered.is_some()
            && let Some(key) = self.stored_sort_key(&bytes)
            && let Some(ordered) = self.ordered.as_mut()
        {
            ordered.remove(&key);
        }
        self.row_bytes -= bytes.len();
        self.free.push(slot);
        self.len -= 1;
        Some(bytes)
    }

    /// Removes every row and frees the memory; the next row sets the layout afresh.
    pub(crate) fn clear(&mut self) {
        if let Some(ordered) = self.ordered.as_mut() {
            ordered.clear();
        }
        self.slots = Slots::default();
        self.free = Vec::new();
        self.len = 0;
        self.row_bytes = 0;
        self.layout = None;
        self.visible = None;
        self.mapping = None;
        for index in std::iter::once(&mut self.primary)
            .chain(self.lookup.as_mut())
            .chain(self.indexes.iter_mut())
        {
            index.clear();
        }
    }

    /// Hides the columns `dropped` from every row read from now on (they must not be
    /// indexed).
    pub(crate) fn drop_columns(&mut self, dropped: &[&str]) {
        let Some(layout) = &self.layout else {
            return;
        };
        if !layout.names().iter().any(|n| dropped.contains(&&**n)) {
            return;
        }
        let names: Vec<Arc<str>> = layout
            .names()
            .iter()
            .enumerate()
            .map(|(idx, name)| {
                if dropped.contains(&&**name) {
                    Arc::from(format!("{DROPPED_PREFIX}dropped-{idx}"))
                } else {
                    Arc::clone(name)
                }
            })
            .collect();
        let live: Box<[bool]> = names
            .iter()
            .map(|n| !n.starts_with(DROPPED_PREFIX))
            .collect();
        self.visible = Some(Visible {
            layout: RowLayout::new(names.iter().filter(|n| !n.starts_with(DROPPED_PREFIX))),
            live,
        });
        self.set_layout(RowLayout::new(&names));
    }

    /// Approximate bytes allocated: the slab, the free list, the encoded rows and the
    /// index tables.
    pub(crate) fn heap_size(&self) -> usize {
        self.slots.heap_size()
            + self.free.capacity() * size_of::<u32>()
            + self.row_bytes
            + self.all_indexes().map(Index::heap_size).sum::<usize>()
            + self.ordered.as_ref().map_or(0, |ordered| {
                ordered
                    .keys()
                    .map(|key| key.len() + size_of::<Box<[u8]>>() + size_of::<u32>())
                    .sum()
            })
    }
}
