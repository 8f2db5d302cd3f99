//! `cargo xtask bench stream [--changes N] [--rate R] [--seconds S]`: changes/s from
//! WAL into an IndexedTarget, against `pg_recvlogical` (pgoutput, to /dev/null) reading
//! the same WAL in the same run; then the end-to-end lag (row written → applied in the
//! target) at `R` changes/s (default 10,000) for `S` seconds (default 5).
//!
//! How it makes sure the changes come from the WAL: a first engine creates the slot and
//! baselines the still-empty table into a target; it stops, the changes are written, and
//! a second engine is given **that same target object**, which says `retains_state() =
//! true` (it is the one the first engine filled, kept by this process, so it does hold
//! the state at the slot's position). A new engine therefore resumes the slot into it
//! and streams the changes from the WAL, as `pg_recvlogical` does, instead of
//! baselining the written table (which it does into targets that start empty, and which
//! would make this a baseline bench). Keeping the first engine running while the
//! changes are written would make the write rate, not the streaming, the limit.
//! The target counts how rows reach it: the bench panics if any baseline row reached it
//! while measuring (`baseline_rows_applied`, always 0 in a printed result) or if the
//! streamed inserts and updates are not exactly the changes written.
//!
//! `cargo xtask bench stream --big-tx N` measures something else instead: the growth of
//! this process's resident set while one N-row transaction (for example 10,000,000)
//! streams into a target that keeps no rows, i.e. laredo's own memory for a large
//! transaction (`big_tx_rss_growth_mib`, limit 256 MiB), and its changes/s.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{CheckedTarget, Figure, arg, checked_target, engine, print, run, runtime, source};
use laredo_core::{Engine, PipelineOptions, Row, Value, table};
use laredo_source_pg::SlotMode;
use laredo_test_support::{CountingTarget, PgCluster, memory_kib};
use parking_lot::Mutex;

/// Microseconds since the Unix epoch (the unit of `Value::TimestampTz`).
fn now_micros() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros();
    i64::try_from(unix).expect("time")
}

fn main() {
    let big_tx = arg("--big-tx", 0);
    if big_tx > 0 {
        big_transaction(big_tx);
        return;
    }
    let changes = arg("--changes", 1_000_000);
    let rate = arg("--rate", 10_000);
    let seconds = arg("--seconds", 5);
    let inserts = changes / 2;
    let changes = 2 * inserts;
    let pg = PgCluster::start().expect("PostgreSQL");
    let db = pg.create_database("bench_stream").expect("database");
    pg.psql(
        &db,
        "CREATE TABLE t (id int8 PRIMARY KEY, v int8 NOT NULL, note text, \
           created timestamptz NOT NULL DEFAULT clock_timestamp())",
    )
    .expect("table");
    let rt = runtime();
    let src = source(&pg, &db, SlotMode::Stateful);
    // One target for both engines; see the module docs.
    let target = checked_target(true);
    // First run: creates the slot and the publication, baselines the empty table.
    rt.block_on(async {
        let engine = engine(Arc::clone(&src), Arc::clone(&target));
        engine.start().await.expect("start");
        assert!(engine.await_ready(Duration::from_secs(60)).await);
        engine.stop().await.expect("stop");
    });
    assert_eq!(
        (
            target.baseline_rows(),
            target.streamed(),
            target.inner.count()
        ),
        (0, 0, 0),
        "the first engine baselines the empty table and streams nothing"
    );
    let publication = format!("bench_{db}");
    pg.psql(
        &db,
        "SELECT pg_create_logical_replication_slot('bench_reference', 'pgoutput')",
    )
    .expect("reference slot");

    // The same WAL for both: inserts, then updates, in transactions of 1,000 rows.
    let url = pg.connection_string(&db);
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        for start in (1..=inserts).step_by(1000) {
            let end = (start + 999).min(inserts);
            client
                .batch_execute(&format!(
                    "INSERT INTO t (id, v, note) SELECT g, 0, 'note ' || g FROM generate_series({start}, {end}) g"
                ))
                .await
                .expect("insert");
        }
        for start in (1..=inserts).step_by(1000) {
            let end = (start + 999).min(inserts);
            client
                .batch_execute(&format!("UPDATE t SET v = 1 WHERE id BETWEEN {start} AND {end}"))
                .await
                .expect("update");
        }
    });
    let end_lsn = pg
        .psql(&db, "SELECT pg_current_wal_lsn()")
        .expect("wal position");

    let started = Instant::now();
    run(
        &pg.program("pg_recvlogical"),
        &[
            "-d",
            &url,
            "--slot",
            "bench_reference",
            "--start",
            "--endpos",
            &end_lsn,
            "--no-loop",
            "-o",
            "proto_version=1",
            "-o",
            &format!("publication_names={publication}"),
            "-f",
            "/dev/null",
        ],
    );
    let reference = started.elapsed();

    let (ours, lags) = rt.block_on(async {
        target.reset();
        let engine = engine(Arc::clone(&src), Arc::clone(&target));
        let cpu_before = laredo_test_support::process_cpu_seconds("self");
        let started = Instant::now();
        engine.start().await.expect("start");
        let last = i64::try_from(inserts).expect("count");
        while target
            .inner
            .lookup(last)
            .is_none_or(|row| row.get_i64("v") != Some(1))
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ours = started.elapsed();
        let cpu = laredo_test_support::process_cpu_seconds("self") - cpu_before;
        check_streamed(&target, changes, "measuring changes/s");
        println!(
            "laredo used {cpu:.2} s of CPU in {:.2} s ({:.0}% of one core)",
            ours.as_secs_f64(),
            100.0 * cpu / ours.as_secs_f64()
        );

        // Lag under a steady write load: batches of 100 rows every 100/rate seconds.
        let lags = Arc::new(Mutex::new(Vec::new()));
        let _listener = target.inner.listen({
            let lags = Arc::clone(&lags);
            move |old: Option<&Row>, new: Option<&Row>| {
                if old.is_none()
                    && let Some(Value::TimestampTz(created)) = new.and_then(|r| r.get("created"))
                {
                    lags.lock().push(now_micros() - created);
                }
            }
        });
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        let batches = rate * seconds / 100;
        let every = Duration::from_secs_f64(100.0 / rate as f64);
        let mut tick = tokio::time::interval(every);
        let mut next = last + 1;
        for _ in 0..batches {
            tick.tick().await;
            client
                .execute(
                    "INSERT INTO t (id, v) SELECT g, 2 FROM generate_series($1::int8, $1::int8 + 99) g",
                    &[&next],
                )
                .await
                .expect("insert");
            next += 100;
        }
        let expected = usize::try_from(batches * 100).expect("count");
        while lags.lock().len() < expected {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        engine.stop().await.expect("stop");
        check_streamed(
            &target,
            changes + batches * 100,
            "measuring the lag under write load",
        );
        let mut lags = lags.lock().clone();
        lags.sort_unstable();
        (ours, lags)
    });
    let pct = |p: f64| {
        let idx = ((lags.len() as f64 - 1.0) * p).round() as usize;
        lags.get(idx).copied().unwrap_or(0) as f64 / 1000.0
    };
    let per_sec = |d: Duration| changes as f64 / d.as_secs_f64();
    let figures = vec![
        Figure::new("changes_per_sec", per_sec(ours), "changes/s"),
        Figure::new("reference_changes_per_sec", per_sec(reference), "changes/s"),
        Figure::new(
            "recvlogical_ratio",
            per_sec(ours) / per_sec(reference),
            "ratio",
        ),
        Figure::new(
            "baseline_rows_applied",
            target.baseline_rows() as f64,
            "rows",
        ),
        Figure::new("lag_p50_ms", pct(0.50), "ms"),
        Figure::new("lag_p99_ms", pct(0.99), "ms"),
        Figure::new("lag_max_ms", pct(1.0), "ms"),
    ];
    print(
        "stream",
        &format!(
            "stream benchmark, {changes} changes ({inserts} inserts + {inserts} updates, 1,000 per transaction); \
             reference: pg_recvlogical to /dev/null; lag at {rate} changes/s for {seconds} s"
        ),
        &figures,
    );
}

/// Panics unless every change since the target's last reset came from the stream:
/// no baseline row, and exactly `changes` inserts and updates.
fn check_streamed(target: &CheckedTarget, changes: u64, phase: &str) {
    let baseline_rows = target.baseline_rows();
    assert!(
        baseline_rows == 0,
        "stream bench measured a baseline, not the WAL: {baseline_rows} baseline rows reached \
         the target while {phase} (the engine did not resume from the slot)"
    );
    assert_eq!(
        target.streamed(),
        changes,
        "streamed changes applied while {phase}"
    );
}

/// `--big-tx N`: one N-row transaction streamed while the resident set is watched.
fn big_transaction(rows: u64) {
    let pg = PgCluster::start().expect("PostgreSQL");
    let db = pg.create_database("bench_big_tx").expect("database");
    pg.psql(
        &db,
        "CREATE TABLE t (id int8 PRIMARY KEY, v int8 NOT NULL, note text)",
    )
    .expect("table");
    let rt = runtime();
    let (growth_kib, elapsed) = rt.block_on(async {
        let target = Arc::new(CountingTarget::default());
        let engine = Engine::builder()
            .source("pg", source(&pg, &db, SlotMode::Stateful))
            .pipeline(
                "pg",
                table("public", "t"),
                target.clone(),
                PipelineOptions::default(),
            )
            .build()
            .expect("engine");
        engine.start().await.expect("start");
        assert!(engine.await_ready(Duration::from_secs(60)).await, "ready");
        let before = memory_kib("VmRSS");
        // The server decodes the transaction only after its commit; the time counts
        // from the commit to the last change applied.
        pg.psql(
            &db,
            &format!(
                "INSERT INTO t SELECT g, g, 'row number ' || g FROM generate_series(1, {rows}) g"
            ),
        )
        .expect("insert");
        let started = Instant::now();
        while target.inserts() < rows {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        // The table was empty at the baseline: the rows counted are streamed inserts.
        assert_eq!(target.inserts(), rows, "streamed inserts");
        let peak = memory_kib("VmHWM");
        engine.stop().await.expect("stop");
        (peak.saturating_sub(before), elapsed)
    });
    let figures = vec![
        Figure::new("big_tx_rows", rows as f64, "rows"),
        Figure::new("big_tx_rss_growth_mib", growth_kib as f64 / 1024.0, "MiB"),
        Figure::new(
            "big_tx_changes_per_sec",
            rows as f64 / elapsed.as_secs_f64(),
            "changes/s",
        ),
    ];
    print(
        "stream",
        &format!(
            "one {rows}-row transaction into a target that keeps no rows: peak resident set \
             growth of this process (limit 256 MiB) and changes/s from commit to the last apply"
        ),
        &figures,
    );
}
