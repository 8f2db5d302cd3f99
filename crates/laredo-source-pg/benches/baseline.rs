//! `cargo xtask bench baseline [--rows N] [--runs R]`: rows/s of the PostgreSQL source's
//! baseline into an IndexedTarget, against `psql \copy (SELECT ...) to /dev/null` on the
//! same table in the same run. Each side runs `R` times (default 3); the best run counts.
//! `rows_per_sec` covers the baseline as the engine reports it (slot creation with its
//! exported snapshot, then the COPY into the target); `start_to_ready_*` also covers
//! connecting, reading the catalog and syncing the publication.
//!
//! Each run checks that it measured a baseline: every row reached the target as a
//! baseline row (none through the stream) and the engine reported the baseline of all
//! of them; otherwise the bench panics.

mod common;

use std::time::{Duration, Instant};

use std::sync::Arc;

use common::{Figure, arg, checked_target, engine_observed, print, run, runtime, source};
use laredo_core::{EngineObserver, TableIdentifier};
use laredo_source_pg::SlotMode;
use laredo_test_support::PgCluster;
use parking_lot::Mutex;

/// Keeps the row count and duration the engine reports for the baseline (slot
/// creation with its snapshot, then the COPY into the target).
#[derive(Default)]
struct BaselineTimer(Mutex<Option<(u64, Duration)>>);

impl EngineObserver for BaselineTimer {
    fn on_baseline_completed(&self, _: &str, _: &TableIdentifier, rows: u64, duration: Duration) {
        *self.0.lock() = Some((rows, duration));
    }
}

fn main() {
    let rows = arg("--rows", 1_000_000);
    let runs = arg("--runs", 3).max(1);
    let pg = PgCluster::start().expect("PostgreSQL");
    let db = pg.create_database("bench_baseline").expect("database");
    pg.psql(
        &db,
        &format!(
            "CREATE TABLE t (id int8 PRIMARY KEY, name text NOT NULL, amount numeric(12, 2), \
               ts timestamptz NOT NULL, payload jsonb); \
             INSERT INTO t SELECT g, 'name-' || g, (g % 100000) / 100.0, \
               '2024-01-01'::timestamptz + g * interval '1 second', \
               jsonb_build_object('n', g, 'tag', 't' || (g % 10)) \
             FROM generate_series(1, {rows}) g;"
        ),
    )
    .expect("table");
    pg.psql(&db, "VACUUM ANALYZE t").expect("vacuum");
    let psql = pg.program("psql");
    let url = pg.connection_string(&db);

    let mut reference = Duration::MAX;
    let mut ours = Duration::MAX;
    let mut to_ready = Duration::MAX;
    let rt = runtime();
    for _ in 0..runs {
        let started = Instant::now();
        run(
            &psql,
            &[
                &url,
                "-q",
                "-c",
                "\\copy (SELECT id, name, amount, ts, payload FROM t) to /dev/null",
            ],
        );
        reference = reference.min(started.elapsed());

        let (baseline, ready) = rt.block_on(async {
            let timer = Arc::new(BaselineTimer::default());
            let target = checked_target(false);
            let engine = engine_observed(
                source(&pg, &db, SlotMode::Ephemeral),
                target.clone(),
                timer.clone(),
            );
            let started = Instant::now();
            engine.start().await.expect("start");
            assert!(engine.await_ready(Duration::from_secs(600)).await, "ready");
            let ready = started.elapsed();
            assert_eq!(target.inner.count() as u64, rows, "every row loaded");
            engine.stop().await.expect("stop");
            assert_eq!(
                (target.baseline_rows(), target.streamed()),
                (rows, 0),
                "baseline bench: every row must reach the target by the baseline, none streamed"
            );
            let (baselined, baseline) = timer.0.lock().expect("baseline completed");
            assert_eq!(baselined, rows, "rows the engine reports baselined");
            (baseline, ready)
        });
        ours = ours.min(baseline);
        to_ready = to_ready.min(ready);
    }
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    let figures = vec![
        Figure::new("rows_per_sec", rate(ours), "rows/s"),
        Figure::new("reference_rows_per_sec", rate(reference), "rows/s"),
        Figure::new("copy_ratio", rate(ours) / rate(reference), "ratio"),
        Figure::new("start_to_ready_rows_per_sec", rate(to_ready), "rows/s"),
        Figure::new(
            "start_to_ready_ratio",
            rate(to_ready) / rate(reference),
            "ratio",
        ),
    ];
    print(
        "baseline",
        &format!(
            "baseline benchmark, {rows} rows (int8, text, numeric, timestamptz, jsonb), best of {runs}; \
             reference: psql \\copy to /dev/null"
        ),
        &figures,
    );
}
