//! `cargo xtask bench baseline [--rows N] [--runs R]`: rows/s of the PostgreSQL source's
//! baseline into an IndexedTarget, against `psql \copy (SELECT ...) to /dev/null` on the
//! same table in the same run. Each side runs `R` times (default 3); the best run counts.

mod common;

use std::time::{Duration, Instant};

use common::{Figure, arg, engine, print, run, runtime, source};
use laredo_source_pg::SlotMode;
use laredo_test_support::PgCluster;

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

        let took = rt.block_on(async {
            let (engine, target) = engine(source(&pg, &db, SlotMode::Ephemeral));
            let started = Instant::now();
            engine.start().await.expect("start");
            assert!(engine.await_ready(Duration::from_secs(600)).await, "ready");
            let took = started.elapsed();
            assert_eq!(target.count() as u64, rows, "every row loaded");
            engine.stop().await.expect("stop");
            took
        });
        ours = ours.min(took);
    }
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    let figures = vec![
        Figure::new("rows_per_sec", rate(ours), "rows/s"),
        Figure::new("reference_rows_per_sec", rate(reference), "rows/s"),
        Figure::new("copy_ratio", rate(ours) / rate(reference), "ratio"),
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
