//! `cargo xtask bench engine`: changes/s from the test source through one pipeline into
//! an `IndexedTarget` with one non-unique secondary index, lookups/s, and bytes held per
//! row against the raw size of the values.
//!
//! `changes_per_sec` is the headline: N new rows (inserts) streamed through the engine.
//! `update_changes_per_sec` then updates every row in random order (index keys change),
//! which is bound by memory latency over the whole table; `mixed_changes_per_sec` is
//! both phases together.
//!
//! Reference run in the same invocation: the same changes applied straight to a fresh
//! `IndexedTarget` through `SyncTarget::apply` in batches of 1,024 (the engine's
//! largest), with no engine in between, so `engine_overhead_ratio` shows what the
//! engine's buffers, tasks, observer calls and ACK tracking cost against the target's
//! best case. `direct_single_changes_per_sec` applies them one per call (the shape of
//! the per-change doorway batches replaced) and `engine_vs_single_ratio` compares the
//! engine with that.
//!
//! Memory is counted by a counting global allocator (`stats_alloc`): the bytes the
//! target still holds after loading every row, divided by the rows, against the sum of
//! `Value::raw_size` per row. It counts requested bytes, not the allocator's own
//! per-block overhead; RSS growth is printed beside it for that.
//!
//! Each phase checks that it measured what it names, or panics: the changes went through
//! the engine's stream (no baseline row reached a target, the no-op target saw every
//! insert, and the loaded target holds exactly the inserted, then the updated rows).
//!
//! Options: `--rows N` (default 1,000,000).

use std::alloc::System;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use laredo_core::{
    ApplyError, Change, ChangeEvent, ChangeKind, Engine, EngineObserver, IndexDefinition,
    PipelineOptions, Position, Row, RowLayout, SyncSource, SyncTarget, TableIdentifier,
    TargetError, Value, table,
};
use laredo_source_test::TestSource;
use laredo_target_memory::IndexedTarget;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const BENCH: &str = "engine";

/// Averages the pipeline buffer's fill over every enqueue and dequeue: near 1 the
/// target (consumer) limits throughput, near 0 the source side does. Also counts the
/// rows the engine reports baselined, which must stay 0: the bench streams.
#[derive(Default)]
struct FillObserver {
    samples: AtomicU64,
    permille_sum: AtomicU64,
    baseline_rows: AtomicU64,
}

impl EngineObserver for FillObserver {
    fn on_buffer_depth_changed(&self, _pipeline_id: &str, depth: usize, capacity: usize) {
        self.samples.fetch_add(1, Ordering::Relaxed);
        self.permille_sum
            .fetch_add((depth * 1000 / capacity.max(1)) as u64, Ordering::Relaxed);
    }

    fn on_baseline_completed(&self, _: &str, _: &TableIdentifier, rows: u64, _: Duration) {
        self.baseline_rows.fetch_add(rows, Ordering::Relaxed);
    }
}

impl FillObserver {
    fn average(&self) -> f64 {
        let samples = self.samples.load(Ordering::Relaxed).max(1);
        self.permille_sum.load(Ordering::Relaxed) as f64 / samples as f64 / 1000.0
    }
}
const ACCOUNTS: u64 = 1000;

/// The reference applies its changes in batches this large: the most the engine's
/// consumer takes from its buffer at once.
const DIRECT_BATCH: usize = 1024;

struct Figure {
    name: &'static str,
    value: f64,
    unit: &'static str,
}

fn main() {
    let rows = parse_rows();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let figures = runtime.block_on(run(rows));
    println!();
    println!("engine benchmark, {rows} rows, 1 pipeline, IndexedTarget with 1 non-unique index");
    println!("{:<28} {:>16} unit", "figure", "value");
    for f in &figures {
        println!("{:<28} {:>16.2} {}", f.name, f.value, f.unit);
    }
    println!();
    for f in &figures {
        println!(
            "{{\"bench\":\"{BENCH}\",\"figure\":\"{}\",\"value\":{:.1},\"unit\":\"{}\"}}",
            f.name, f.value, f.unit
        );
    }
}

fn parse_rows() -> usize {
    let args: Vec<String> = std::env::args().collect();
    let mut rows = 1_000_000;
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        if arg == "--rows" {
            rows = iter
                .next()
                .and_then(|v| v.parse().ok())
                .expect("--rows takes a number");
        }
    }
    rows
}

fn bench_table() -> TableIdentifier {
    table("public", "accounts_users")
}

/// Deterministic xorshift so every run loads the same data.
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

fn columns() -> Vec<(&'static str, &'static str, bool)> {
    vec![
        ("id", "int8", true),
        ("account_id", "int8", false),
        ("email", "text", false),
        ("name", "text", false),
        ("status", "text", false),
        ("score", "float8", false),
        ("login_count", "int8", false),
        ("active", "bool", false),
        ("created_at", "timestamptz", false),
        ("updated_at", "timestamptz", false),
    ]
}

fn make_row(layout: &Arc<RowLayout>, rng: &mut Rng, id: u64) -> Row {
    let created = 1_700_000_000_000_000 + (rng.next() % 10_000_000_000) as i64;
    Row::new(
        Arc::clone(layout),
        vec![
            Value::Int64(id as i64),
            Value::Int64((rng.next() % ACCOUNTS) as i64),
            Value::text(format!("{}@{}.example", rng.word(12), rng.word(6))),
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

fn generate(rows: usize, seed: u64) -> Vec<Row> {
    let names: Vec<&str> = columns().into_iter().map(|(n, _, _)| n).collect();
    let layout = RowLayout::new(names);
    let mut rng = Rng(seed);
    (1..=rows as u64)
        .map(|id| make_row(&layout, &mut rng, id))
        .collect()
}

fn new_target() -> Arc<IndexedTarget> {
    IndexedTarget::builder()
        .lookup_fields(["id"])
        .index(IndexDefinition::new("by_account", ["account_id"], false))
        .build()
}

/// A target that applies nothing, only counts: the engine's own ceiling.
#[derive(Default)]
struct NoopTarget {
    baseline_rows: AtomicU64,
    inserts: AtomicU64,
}

#[async_trait::async_trait]
impl SyncTarget for NoopTarget {
    fn type_name(&self) -> &str {
        "noop"
    }
    async fn on_baseline(&self, _: &TableIdentifier, rows: &[Row]) -> Result<(), TargetError> {
        self.baseline_rows
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    async fn apply(&self, _: &TableIdentifier, batch: &[Change]) -> Result<(), ApplyError> {
        let inserts = batch
            .iter()
            .filter(|c| matches!(c.kind, ChangeKind::Insert { .. }))
            .count();
        self.inserts.fetch_add(inserts as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Streams the inserts through an engine whose only pipeline applies nothing.
async fn engine_only_rate(inserts: &[Row], t: &TableIdentifier) -> f64 {
    let source = TestSource::new();
    source.set_schema(t.clone(), TestSource::columns(&columns()));
    let target = Arc::new(NoopTarget::default());
    let engine = Engine::builder()
        .source("bench", source.clone())
        .pipeline(
            "bench",
            t.clone(),
            target.clone(),
            PipelineOptions::default(),
        )
        .build()
        .expect("valid engine");
    engine.start().await.expect("engine starts");
    assert!(
        engine.await_ready(Duration::from_secs(30)).await,
        "engine ready"
    );
    let events = inserts
        .iter()
        .map(|r| ChangeEvent::insert(t.clone(), Position::from_u64(0), r.clone()));
    let elapsed = stream_through_engine(&source, t, events, || true).await;
    engine.stop().await.expect("engine stops");
    assert_eq!(
        (
            target.baseline_rows.load(Ordering::Relaxed),
            target.inserts.load(Ordering::Relaxed)
        ),
        (0, inserts.len() as u64),
        "engine_only: every insert, and nothing else, went through the engine"
    );
    inserts.len() as f64 / elapsed.as_secs_f64()
}

async fn run(rows: usize) -> Vec<Figure> {
    let mut figures = Vec::new();
    let inserts = generate(rows, 0x5eed_1234);
    let updates = generate(rows, 0xfeed_beef);
    let raw_bytes: usize = inserts.iter().map(Row::raw_size).sum();
    let t = bench_table();

    // Memory first, in a fresh process, so that RSS growth means something.
    // Memory: bytes a freshly loaded target holds per row.
    let memory_target = new_target();
    memory_target
        .on_init(&t, &TestSource::columns(&columns()))
        .await
        .expect("init");
    let rss_before = laredo_test_support::memory_kib("VmRSS") * 1024;
    let region = Region::new(GLOBAL);
    for chunk in inserts.chunks(10_000) {
        memory_target.on_baseline(&t, chunk).await.expect("load");
    }
    memory_target
        .on_baseline_complete(&t, None)
        .await
        .expect("complete");
    let stats = region.change();
    // `bytes_allocated`/`bytes_deallocated` already include realloc growth and shrinkage.
    let held = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;
    let rss_after = laredo_test_support::memory_kib("VmRSS") * 1024;
    let raw_per_row = raw_bytes as f64 / rows as f64;
    let held_per_row = held as f64 / rows as f64;
    figures.push(Figure {
        name: "raw_bytes_per_row",
        value: raw_per_row,
        unit: "bytes",
    });
    figures.push(Figure {
        name: "held_bytes_per_row",
        value: held_per_row,
        unit: "bytes",
    });
    figures.push(Figure {
        name: "bytes_per_row_ratio",
        value: held_per_row / raw_per_row,
        unit: "ratio",
    });
    figures.push(Figure {
        name: "rss_bytes_per_row",
        value: rss_after.saturating_sub(rss_before) as f64 / rows as f64,
        unit: "bytes",
    });
    figures.push(Figure {
        name: "heap_size_bytes_per_row",
        value: memory_target.heap_size() as f64 / rows as f64,
        unit: "bytes",
    });
    assert_eq!(memory_target.count(), rows);
    drop(memory_target);

    // Engine: inserts then updates, from the test source's stream.
    let source = TestSource::new();
    source.set_schema(t.clone(), TestSource::columns(&columns()));
    let target = new_target();
    let fill = Arc::new(FillObserver::default());
    let engine = Engine::builder()
        .source("bench", source.clone())
        .observer(fill.clone())
        .pipeline(
            "bench",
            t.clone(),
            target.clone(),
            PipelineOptions::default(),
        )
        .build()
        .expect("valid engine");
    engine.start().await.expect("engine starts");
    assert!(
        engine.await_ready(Duration::from_secs(30)).await,
        "engine ready"
    );

    let insert_time = stream_through_engine(
        &source,
        &t,
        inserts
            .iter()
            .map(|r| ChangeEvent::insert(t.clone(), Position::from_u64(0), r.clone())),
        || target.count() == rows,
    )
    .await;
    assert_eq!(target.count(), rows);
    let update_time = stream_through_engine(
        &source,
        &t,
        updates
            .iter()
            .map(|r| ChangeEvent::update(t.clone(), Position::from_u64(0), r.clone(), None)),
        || true,
    )
    .await;
    let engine_rate = (2 * rows) as f64 / (insert_time + update_time).as_secs_f64();
    // What was measured went through the engine's stream: no baseline, and the target
    // holds exactly the updated rows (checked after the timing).
    assert_eq!(
        fill.baseline_rows.load(Ordering::Relaxed),
        0,
        "no row may come from a baseline"
    );
    assert_eq!(target.count(), rows);
    for row in &updates {
        let id = row.get_i64("id").expect("id");
        assert!(
            target.lookup(id).as_ref() == Some(row),
            "row {id} does not hold its streamed update"
        );
    }
    figures.push(Figure {
        name: "changes_per_sec",
        value: rows as f64 / insert_time.as_secs_f64(),
        unit: "changes/s",
    });
    figures.push(Figure {
        name: "update_changes_per_sec",
        value: rows as f64 / update_time.as_secs_f64(),
        unit: "changes/s",
    });
    figures.push(Figure {
        name: "mixed_changes_per_sec",
        value: engine_rate,
        unit: "changes/s",
    });
    figures.push(Figure {
        name: "average_buffer_fill",
        value: fill.average(),
        unit: "ratio",
    });

    // Lookups on the loaded target, one thread.
    let mut rng = Rng(42);
    let started = Instant::now();
    let mut found = 0usize;
    for _ in 0..rows {
        let id = (rng.next() % rows as u64 + 1) as i64;
        found += usize::from(target.lookup(id).is_some());
    }
    let lookup_time = started.elapsed();
    assert_eq!(found, rows, "every looked-up id exists");
    figures.push(Figure {
        name: "lookups_per_sec",
        value: rows as f64 / lookup_time.as_secs_f64(),
        unit: "lookups/s",
    });
    let index_lookups = 10_000usize;
    let started = Instant::now();
    let mut index_rows = 0usize;
    for n in 0..index_lookups {
        index_rows += target
            .lookup_all("by_account", (n as u64 % ACCOUNTS) as i64)
            .expect("index exists")
            .len();
    }
    let index_time = started.elapsed();
    figures.push(Figure {
        name: "index_lookups_per_sec",
        value: index_lookups as f64 / index_time.as_secs_f64(),
        unit: "lookups/s",
    });
    figures.push(Figure {
        name: "index_rows_per_sec",
        value: index_rows as f64 / index_time.as_secs_f64(),
        unit: "rows/s",
    });
    engine.stop().await.expect("engine stops");
    drop(engine);
    drop(target);
    drop(source);

    figures.push(Figure {
        name: "engine_only_changes_per_sec",
        value: engine_only_rate(&inserts, &t).await,
        unit: "changes/s",
    });

    // Reference: the same changes applied straight to a target.
    let direct = new_target();
    direct
        .on_init(&t, &TestSource::columns(&columns()))
        .await
        .expect("init");
    // In batches as large as the engine's largest, each change built from its row
    // as the engine builds it: the target's best case.
    let started = Instant::now();
    for chunk in inserts.chunks(DIRECT_BATCH) {
        let batch: Vec<Change> = chunk
            .iter()
            .map(|row| Change::insert(row.clone()).at(Position::from_u64(0)))
            .collect();
        direct.apply(&t, &batch).await.expect("insert");
    }
    let direct_insert_time = started.elapsed();
    let update_started = Instant::now();
    for chunk in updates.chunks(DIRECT_BATCH) {
        let batch: Vec<Change> = chunk
            .iter()
            .map(|row| Change::update(row.clone(), None).at(Position::from_u64(0)))
            .collect();
        direct.apply(&t, &batch).await.expect("update");
    }
    let direct_rate = (2 * rows) as f64 / started.elapsed().as_secs_f64();
    let direct_update_time = update_started.elapsed();
    assert_eq!(direct.count(), rows, "reference applied every row");
    figures.push(Figure {
        name: "direct_insert_changes_per_sec",
        value: rows as f64 / direct_insert_time.as_secs_f64(),
        unit: "changes/s",
    });
    figures.push(Figure {
        name: "direct_update_changes_per_sec",
        value: rows as f64 / direct_update_time.as_secs_f64(),
        unit: "changes/s",
    });
    figures.push(Figure {
        name: "direct_changes_per_sec",
        value: direct_rate,
        unit: "changes/s",
    });
    figures.push(Figure {
        name: "engine_overhead_ratio",
        value: engine_rate / direct_rate,
        unit: "ratio",
    });
    drop(direct);

    // The same changes one per call (the shape of the per-change doorway before
    // batches): what batching saves at the target itself.
    let single = new_target();
    single
        .on_init(&t, &TestSource::columns(&columns()))
        .await
        .expect("init");
    let started = Instant::now();
    for row in &inserts {
        let change = Change::insert(row.clone()).at(Position::from_u64(0));
        single
            .apply(&t, std::slice::from_ref(&change))
            .await
            .expect("insert");
    }
    for row in &updates {
        let change = Change::update(row.clone(), None).at(Position::from_u64(0));
        single
            .apply(&t, std::slice::from_ref(&change))
            .await
            .expect("update");
    }
    let single_rate = (2 * rows) as f64 / started.elapsed().as_secs_f64();
    assert_eq!(single.count(), rows, "reference applied every row");
    figures.push(Figure {
        name: "direct_single_changes_per_sec",
        value: single_rate,
        unit: "changes/s",
    });
    figures.push(Figure {
        name: "engine_vs_single_ratio",
        value: engine_rate / single_rate,
        unit: "ratio",
    });
    drop(single);

    figures
}

/// Pauses the source, queues `events`, resumes, and times until every change is applied
/// and acknowledged.
async fn stream_through_engine(
    source: &Arc<TestSource>,
    _table: &TableIdentifier,
    events: impl Iterator<Item = ChangeEvent>,
    mut applied: impl FnMut() -> bool,
) -> Duration {
    source.pause().await.expect("pause");
    let last = source.enqueue(events).as_u64().expect("u64 position");
    let started = Instant::now();
    source.resume().await.expect("resume");
    loop {
        if source.acked_position().is_some_and(|acked| acked >= last) && applied() {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}
