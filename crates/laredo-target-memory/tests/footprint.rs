//! Bytes an `IndexedTarget` holds per row, counted by a counting global allocator
//! (`stats_alloc`), against the raw size of the values (`Value::raw_size`).
//!
//! Its own test binary: the global allocator counts every allocation of the process,
//! so nothing else may run beside the measurement. The shape is the engine
//! benchmark's (`cargo xtask bench engine`, `bytes_per_row_ratio`): 1,000,000 rows of
//! ten columns, the `int8` primary key as lookup field and one non-unique index over
//! 1000 distinct `account_id`s. Only requested bytes are counted, not the allocator's
//! per-block overhead.

use std::alloc::System;
use std::sync::Arc;

use laredo_core::{ColumnDefinition, IndexDefinition, Row, RowLayout, SyncTarget, Value, table};
use laredo_target_memory::IndexedTarget;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const ROWS: i64 = 1_000_000;
const ACCOUNTS: i64 = 1000;
/// The headline bound: bytes held per row at most 1.5 times the raw bytes per row.
const MAX_RATIO: f64 = 1.5;

fn columns() -> Vec<ColumnDefinition> {
    vec![
        ColumnDefinition::new("id", "int8").primary_key(1),
        ColumnDefinition::new("account_id", "int8"),
        ColumnDefinition::new("email", "text"),
        ColumnDefinition::new("name", "text"),
        ColumnDefinition::new("status", "text"),
        ColumnDefinition::new("score", "float8"),
        ColumnDefinition::new("login_count", "int4"),
        ColumnDefinition::new("active", "bool"),
        ColumnDefinition::new("created_at", "timestamptz"),
        ColumnDefinition::new("updated_at", "timestamptz"),
    ]
}

/// Deterministic xorshift.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn word(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(b'a' + (self.next() % 26) as u8))
            .collect()
    }
}

fn make_row(layout: &Arc<RowLayout>, rng: &mut Rng, id: i64) -> Row {
    let created = 1_700_000_000_000_000 + (rng.next() % 10_000_000_000) as i64;
    Row::new(
        Arc::clone(layout),
        vec![
            Value::Int64(id),
            Value::Int64((rng.next() % ACCOUNTS as u64) as i64),
            // ~24 characters
            Value::text(format!("{}@{}.example", rng.word(8), rng.word(7))),
            // ~16 characters
            Value::text(format!("{} {}", rng.word(7), rng.word(8))),
            Value::text(if rng.next().is_multiple_of(3) {
                "pending"
            } else {
                "active!"
            }),
            Value::Float64((rng.next() % 100_000) as f64 / 7.0),
            Value::Int64((rng.next() % 5000) as i64),
            Value::Bool(rng.next().is_multiple_of(2)),
            Value::TimestampTz(created),
            Value::TimestampTz(created + 1_000_000),
        ],
    )
}

#[tokio::test(flavor = "current_thread")]
async fn bytes_held_per_row_stay_within_one_and_a_half_times_the_raw_size() {
    let t = table("public", "accounts_users");
    let target = IndexedTarget::builder()
        .lookup_fields(["id"])
        .index(IndexDefinition::new("by_account", ["account_id"], false))
        .build();
    target.on_init(&t, &columns()).await.unwrap();
    let layout = RowLayout::from_columns(&columns());
    let mut rng = Rng(0x5eed_1234);
    let mut raw_bytes = 0usize;

    let region = Region::new(GLOBAL);
    let mut id = 1;
    while id <= ROWS {
        // Rows are made inside the region but freed after each batch, so they net out.
        let end = (id + 10_000).min(ROWS + 1);
        let batch: Vec<Row> = (id..end)
            .map(|id| make_row(&layout, &mut rng, id))
            .collect();
        raw_bytes += batch.iter().map(Row::raw_size).sum::<usize>();
        target.on_baseline(&t, &batch).await.unwrap();
        id = end;
    }
    target.on_baseline_complete(&t, None).await.unwrap();
    let stats = region.change();
    let held = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;

    let rows = ROWS as f64;
    let raw_per_row = raw_bytes as f64 / rows;
    let held_per_row = held as f64 / rows;
    let ratio = held_per_row / raw_per_row;
    let heap_size_per_row = target.heap_size() as f64 / rows;
    println!(
        "raw {raw_per_row:.1} B/row, held {held_per_row:.1} B/row, ratio {ratio:.3}, heap_size {heap_size_per_row:.1} B/row"
    );
    assert_eq!(target.count(), ROWS as usize);
    assert_eq!(
        target.lookup_all("by_account", 7).unwrap().len(),
        target
            .all()
            .iter()
            .filter(|r| r.get_i64("account_id") == Some(7))
            .count()
    );
    assert!(
        ratio <= MAX_RATIO,
        "held {held_per_row:.1} bytes per row for {raw_per_row:.1} raw bytes: ratio {ratio:.3}"
    );
    // `heap_size` is the bench's cross-check: within 5% of what the allocator saw.
    assert!(
        (heap_size_per_row - held_per_row).abs() <= held_per_row * 0.05,
        "heap_size {heap_size_per_row:.1} B/row against {held_per_row:.1} B/row counted"
    );
}
