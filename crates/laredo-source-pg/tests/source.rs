//! `PgSource` in a running engine against a real server.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use laredo_core::{
    ApplyError, Change, ChangeKind, ColumnDefinition, Engine, PipelineOptions, Row, RowAccess,
    SchemaChangeResponse, SyncSource, SyncTarget, TableIdentifier, TargetError, Value, table,
};
use laredo_source_pg::{PgSource, PgSourceConfig, PublicationConfig, ReconnectPolicy, SlotMode};
use laredo_test_support::{CountingTarget, PgCluster, TestObserver, memory_kib, wait_until};
use parking_lot::Mutex;

use super::connect;

const WAIT: Duration = Duration::from_secs(60);

/// What a target saw: the table keyed by `id`, and every applied stream change.
#[derive(Default)]
pub(crate) struct Model {
    pub(crate) rows: BTreeMap<i64, Row>,
    /// (action, id, row text) of every streamed change, to find duplicates.
    pub(crate) applied: Vec<(char, i64, String)>,
    pub(crate) baseline_rows: u64,
    pub(crate) truncates: u64,
    pub(crate) schema_changes: Vec<Vec<String>>,
}

/// A target that keeps its state across engine restarts (a durable target would).
#[derive(Default)]
pub(crate) struct ModelTarget {
    pub(crate) model: Mutex<Model>,
    pub(crate) schema_response: Mutex<Option<SchemaChangeResponse>>,
    /// While true, stream changes wait before they apply (a slow target).
    pub(crate) hold: tokio::sync::watch::Sender<bool>,
}

fn id_of(row: &Row) -> i64 {
    row.get_i64("id").expect("rows carry an int8 id")
}

impl ModelTarget {
    pub(crate) fn row(&self, id: i64) -> Option<Row> {
        self.model.lock().rows.get(&id).cloned()
    }

    /// Stream changes applied more than once.
    pub(crate) fn duplicates(&self) -> Vec<(char, i64, String)> {
        let model = self.model.lock();
        let mut seen = HashSet::new();
        model
            .applied
            .iter()
            .filter(|c| !seen.insert((*c).clone()))
            .cloned()
            .collect()
    }

    async fn wait_for_release(&self) {
        let mut hold = self.hold.subscribe();
        let _ = hold.wait_for(|held| !held).await;
    }

    /// `(id, v)` pairs the target holds.
    pub(crate) fn pairs(&self) -> Vec<(i64, i64)> {
        self.model
            .lock()
            .rows
            .iter()
            .map(|(id, row)| (*id, row.get_i64("v").unwrap_or(-1)))
            .collect()
    }
}

#[async_trait]
impl SyncTarget for ModelTarget {
    fn type_name(&self) -> &str {
        "model"
    }
    async fn on_baseline(&self, _: &TableIdentifier, rows: &[Row]) -> Result<(), TargetError> {
        let mut model = self.model.lock();
        for row in rows {
            model.baseline_rows += 1;
            model.rows.insert(id_of(row), row.clone());
        }
        Ok(())
    }
    /// Inserts and updates wait while the model is held; every change is logged.
    async fn apply(&self, _: &TableIdentifier, batch: &[Change]) -> Result<(), ApplyError> {
        for change in batch {
            if matches!(
                change.kind,
                ChangeKind::Insert { .. } | ChangeKind::Update { .. }
            ) {
                self.wait_for_release().await;
            }
            let mut model = self.model.lock();
            match &change.kind {
                ChangeKind::Insert { row } => {
                    model.applied.push(('I', id_of(row), row.to_string()));
                    model.rows.insert(id_of(row), row.clone());
                }
                ChangeKind::Update { row, identity } => {
                    model.applied.push(('U', id_of(row), row.to_string()));
                    if let Some(old) = identity {
                        model.rows.remove(&id_of(old));
                    }
                    model.rows.insert(id_of(row), row.clone());
                }
                ChangeKind::Delete { identity } => {
                    model
                        .applied
                        .push(('D', id_of(identity), identity.to_string()));
                    model.rows.remove(&id_of(identity));
                }
                ChangeKind::Truncate => {
                    model.truncates += 1;
                    model.rows.clear();
                }
            }
        }
        Ok(())
    }
    /// The model stands for a target whose rows outlive the engine (tests restart
    /// engines over the same model and expect a resume).
    fn retains_state(&self) -> bool {
        true
    }
    async fn on_schema_change(
        &self,
        _: &TableIdentifier,
        _: &[ColumnDefinition],
        new_columns: &[ColumnDefinition],
    ) -> SchemaChangeResponse {
        self.model
            .lock()
            .schema_changes
            .push(new_columns.iter().map(|c| c.name.clone()).collect());
        self.schema_response
            .lock()
            .clone()
            .unwrap_or_else(SchemaChangeResponse::proceed)
    }
    fn rows(&self) -> Option<&dyn RowAccess> {
        Some(self)
    }
}

/// Counts the model's rows. It stands for a target that cannot look a row up by key
/// or scan: `get` answers `None` and `scan` nothing.
impl RowAccess for ModelTarget {
    fn get(&self, _identity: &Row) -> Option<Row> {
        None
    }
    fn count(&self) -> u64 {
        self.model.lock().rows.len() as u64
    }
    fn scan(&self) -> Vec<Row> {
        Vec::new()
    }
}

/// A source config for `db` with a slot named after the database.
pub(crate) fn config(pg: &PgCluster, db: &str, mode: SlotMode) -> PgSourceConfig {
    PgSourceConfig::new(pg.connection_string(db))
        .slot_mode(mode)
        .slot_name(format!("slot_{db}"))
        .publication(PublicationConfig::new(format!("pub_{db}")).create_missing(true))
        .status_interval(Duration::from_millis(100))
        .reconnect(ReconnectPolicy::new(
            u32::MAX,
            Duration::from_millis(50),
            Duration::from_millis(500),
            2.0,
        ))
}

/// An engine streaming `public.t` of the source into `target`.
pub(crate) async fn start_engine(
    source: Arc<PgSource>,
    target: Arc<dyn SyncTarget>,
    observer: Arc<TestObserver>,
) -> Engine {
    let engine = Engine::builder()
        .source("pg", source)
        .pipeline(
            "pg",
            table("public", "t"),
            target,
            PipelineOptions::default(),
        )
        .observer(observer)
        .build()
        .unwrap();
    engine.start().await.unwrap();
    assert!(engine.await_ready(WAIT).await, "engine ready");
    engine
}

/// `(id, v)` of every row of `t`.
pub(crate) async fn table_pairs(url: &str) -> Vec<(i64, i64)> {
    let client = connect(url).await;
    client
        .query("SELECT id, v FROM t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Waits until the target holds exactly the table's rows.
pub(crate) async fn converge(url: &str, target: &ModelTarget, what: &str) {
    let expected = table_pairs(url).await;
    wait_until(what, WAIT, || target.pairs() == expected).await;
}

/// Runs inserts and updates on `t` until stopped; returns how many rounds ran.
pub(crate) fn spawn_writer(
    url: String,
    first_id: i64,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = connect(&url).await;
        let mut id = first_id;
        while !stop.load(Ordering::SeqCst) {
            id += 1;
            // Errors while the server restarts are expected: reconnect and go on.
            let ok = client
                .batch_execute(&format!(
                    "BEGIN; INSERT INTO t VALUES ({id}, 0); UPDATE t SET v = v + 1 WHERE id = {}; COMMIT;",
                    id % 100 + 1
                ))
                .await
                .is_ok();
            if !ok {
                return;
            }
            written.fetch_add(1, Ordering::SeqCst);
        }
    })
}

fn setup(pg: &PgCluster, prefix: &str, rows: u32) -> String {
    let db = pg.create_database(prefix).unwrap();
    pg.psql(
        &db,
        &format!(
            "CREATE TABLE t (id int8 PRIMARY KEY, v int8 NOT NULL, note text); \
             INSERT INTO t SELECT g, 0, 'n' || g FROM generate_series(1, {rows}) g;"
        ),
    )
    .unwrap();
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_every_kind_of_change_into_the_target() {
    let pg = PgCluster::shared();
    let db = setup(pg, "stream", 100);
    let url = pg.connection_string(&db);
    let source = Arc::new(PgSource::new(config(pg, &db, SlotMode::Stateful)).unwrap());
    let target = Arc::new(ModelTarget::default());
    let observer = TestObserver::new();
    let engine = start_engine(Arc::clone(&source), target.clone(), observer).await;
    assert_eq!(target.model.lock().baseline_rows, 100);

    pg.psql(
        &db,
        "INSERT INTO t VALUES (1000, 5, 'new'); \
         UPDATE t SET v = 7, note = 'changed' WHERE id = 2; \
         DELETE FROM t WHERE id = 3; \
         UPDATE t SET id = 2000 WHERE id = 4;",
    )
    .unwrap();
    converge(&url, &target, "DML applied").await;
    let row = target.row(2).unwrap();
    assert_eq!(row.get("note"), Some(&Value::from("changed")));
    assert!(
        target.row(4).is_none(),
        "a key-changing update removes the old key"
    );

    pg.psql(&db, "TRUNCATE t; INSERT INTO t VALUES (1, 1, 'after');")
        .unwrap();
    converge(&url, &target, "truncate applied").await;
    assert_eq!(target.model.lock().truncates, 1);
    assert!(target.duplicates().is_empty());

    // The slot follows the acknowledged position.
    let client = connect(&url).await;
    let current: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let current = laredo_source_pg::parse_lsn(&current).unwrap();
    wait_until("the slot confirms the last commit", WAIT, || {
        source.acknowledged_lsn() >= current
    })
    .await;
    let slot = source.slot_name();
    assert!(pg.wait_for_value(
        &db,
        &format!(
            "SELECT confirmed_flush_lsn >= '{}'::pg_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'",
            laredo_source_pg::format_lsn(current)
        ),
        "t",
        WAIT
    ));
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baseline_handoff_loses_and_repeats_nothing_while_writers_run() {
    let pg = PgCluster::shared();
    let db = setup(pg, "handoff_engine", 100);
    let url = pg.connection_string(&db);
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = spawn_writer(
        url.clone(),
        100_000,
        Arc::clone(&stop),
        Arc::clone(&written),
    );
    wait_until("writer running", WAIT, || {
        written.load(Ordering::SeqCst) > 20
    })
    .await;

    let source = Arc::new(PgSource::new(config(pg, &db, SlotMode::Ephemeral)).unwrap());
    let target = Arc::new(ModelTarget::default());
    let engine = start_engine(source, target.clone(), TestObserver::new()).await;
    let at_start = written.load(Ordering::SeqCst);
    wait_until("writes after the handoff", WAIT, || {
        written.load(Ordering::SeqCst) > at_start + 50
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    converge(&url, &target, "target equals SELECT *").await;
    assert!(target.duplicates().is_empty(), "{:?}", target.duplicates());
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateful_restart_resumes_with_rows_written_while_stopped() {
    let pg = PgCluster::shared();
    let db = setup(pg, "resume", 10);
    let url = pg.connection_string(&db);
    let target = Arc::new(ModelTarget::default());
    let source = Arc::new(PgSource::new(config(pg, &db, SlotMode::Stateful)).unwrap());
    let engine = start_engine(source, target.clone(), TestObserver::new()).await;
    pg.psql(
        &db,
        "INSERT INTO t VALUES (11, 0, 'x'); UPDATE t SET v = 1 WHERE id = 1;",
    )
    .unwrap();
    converge(&url, &target, "first run").await;
    engine.stop().await.unwrap();

    pg.psql(
        &db,
        "INSERT INTO t SELECT g, 0, 'while stopped' FROM generate_series(12, 40) g; \
         UPDATE t SET v = v + 10 WHERE id <= 5; DELETE FROM t WHERE id = 6;",
    )
    .unwrap();
    let source = Arc::new(PgSource::new(config(pg, &db, SlotMode::Stateful)).unwrap());
    let engine = start_engine(source, target.clone(), TestObserver::new()).await;
    converge(&url, &target, "second run").await;
    assert_eq!(
        target.model.lock().baseline_rows,
        10,
        "the restart resumed from the slot instead of re-reading the table"
    );
    assert!(target.duplicates().is_empty(), "{:?}", target.duplicates());
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_walsender_is_reconnected_without_gaps_or_duplicates() {
    let pg = PgCluster::shared();
    let db = setup(pg, "walsender", 100);
    let url = pg.connection_string(&db);
    let target = Arc::new(ModelTarget::default());
    let source = Arc::new(PgSource::new(config(pg, &db, SlotMode::Stateful)).unwrap());
    let engine = start_engine(Arc::clone(&source), target.clone(), TestObserver::new()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = spawn_writer(url.clone(), 1000, Arc::clone(&stop), Arc::clone(&written));
    // The target falls behind: at each kill the source has delivered changes that are
    // not acknowledged, and the server sends them again.
    target.hold.send_replace(true);
    for round in 1..=3u64 {
        wait_until("writes before the kill", WAIT, || {
            written.load(Ordering::SeqCst) > round * 30
        })
        .await;
        let client = connect(&url).await;
        let slot = source.slot_name();
        assert!(pg.wait_for_value(
            &db,
            &format!(
                "SELECT active_pid IS NOT NULL FROM pg_replication_slots WHERE slot_name = '{slot}'"
            ),
            "t",
            WAIT
        ));
        let killed: bool = client
            .query_one(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap()
            .get::<_, Option<bool>>(0)
            .unwrap_or(false);
        assert!(killed, "the walsender of {slot} was running");
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    target.hold.send_replace(false);
    converge(&url, &target, "target equals the table after the kills").await;
    assert!(target.duplicates().is_empty(), "{:?}", target.duplicates());
    assert_eq!(target.model.lock().baseline_rows, 100, "no re-baseline");
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_source_rebaselines_after_losing_its_connection() {
    let pg = PgCluster::shared();
    let db = setup(pg, "ephemeral", 50);
    let url = pg.connection_string(&db);
    let target = Arc::new(ModelTarget::default());
    let source = Arc::new(PgSource::new(config(pg, &db, SlotMode::Ephemeral)).unwrap());
    let observer = TestObserver::new();
    let engine = start_engine(Arc::clone(&source), target.clone(), Arc::clone(&observer)).await;
    let slot = source.slot_name();
    assert!(slot.starts_with(&format!("slot_{db}_")), "{slot}");
    pg.psql(&db, &format!(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '{slot}'"
    ))
    .unwrap();
    pg.psql(
        &db,
        "INSERT INTO t VALUES (500, 1, 'after the cut'); DELETE FROM t WHERE id = 1;",
    )
    .unwrap();
    observer.wait_for_event("ReBaselineTriggered", WAIT).await;
    converge(
        &url,
        &target,
        "target equals the table after the re-baseline",
    )
    .await;
    assert!(
        target.model.lock().baseline_rows >= 100,
        "a second baseline ran"
    );
    assert_ne!(source.slot_name(), slot, "a new temporary slot");
    engine.stop().await.unwrap();
    assert!(
        pg.wait_for_value(
            &db,
            &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'slot_{db}%'"),
            "0",
            WAIT
        ),
        "temporary slots are gone after stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_slot_is_named_and_recovered_by_a_rebaseline() {
    let pg = PgCluster::shared();
    let db = setup(pg, "dropslot", 20);
    let url = pg.connection_string(&db);
    let target = Arc::new(ModelTarget::default());
    let source = Arc::new(PgSource::new(config(pg, &db, SlotMode::Stateful)).unwrap());
    let observer = TestObserver::new();
    let engine = start_engine(Arc::clone(&source), target.clone(), Arc::clone(&observer)).await;
    let slot = source.slot_name();
    let client = connect(&url).await;
    // End the walsender and drop the slot before the source gets it back; when the
    // source reconnects first (its backoff is 50 ms), end it again and retry.
    let deadline = std::time::Instant::now() + WAIT;
    let mut dropped = false;
    while !dropped && std::time::Instant::now() < deadline {
        client
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '{slot}' AND active_pid IS NOT NULL"
            ))
            .await
            .unwrap();
        for _ in 0..50 {
            if client
                .batch_execute(&format!("SELECT pg_drop_replication_slot('{slot}')"))
                .await
                .is_ok()
            {
                dropped = true;
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    assert!(dropped, "dropped the slot");
    pg.psql(&db, "INSERT INTO t VALUES (99, 9, 'after the drop');")
        .unwrap();
    observer.wait_for_event("ReBaselineTriggered", WAIT).await;
    converge(&url, &target, "target equals the table after recovery").await;
    assert!(
        pg.wait_for_value(
            &db,
            &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"),
            "1",
            WAIT
        ),
        "the slot was created again"
    );
    engine.stop().await.unwrap();
    let _ = source.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toast_values_reach_targets_complete_under_every_replica_identity() {
    let pg = PgCluster::shared();
    for (name, identity) in [
        ("default", "DEFAULT"),
        ("full", "FULL"),
        ("index", "USING INDEX t_id_idx"),
    ] {
        let db = setup(pg, &format!("toast_{name}"), 0);
        let url = pg.connection_string(&db);
        // 20 kB of incompressible text, stored out of line.
        pg.psql(
            &db,
            &format!(
                "ALTER TABLE t ALTER COLUMN note SET STORAGE EXTERNAL; \
                 CREATE UNIQUE INDEX t_id_idx ON t (id); \
                 ALTER TABLE t REPLICA IDENTITY {identity}; \
                 INSERT INTO t SELECT g, 0, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 625) i) \
                 FROM generate_series(1, 3) g;"
            ),
        )
        .unwrap();
        let big: String = connect(&url)
            .await
            .query_one("SELECT note FROM t WHERE id = 2", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(big.len(), 20_000);
        let source = Arc::new(PgSource::new(config(pg, &db, SlotMode::Stateful)).unwrap());
        let indexed = laredo_target_memory::IndexedTarget::builder()
            .lookup_fields(["id"])
            .build();
        let stateless = Arc::new(ModelTarget::default());
        let engine = Engine::builder()
            .source("pg", source)
            .pipeline(
                "pg",
                table("public", "t"),
                indexed.clone(),
                PipelineOptions::default(),
            )
            .pipeline(
                "pg",
                table("public", "t"),
                stateless.clone(),
                PipelineOptions::default(),
            )
            .build()
            .unwrap();
        engine.start().await.unwrap();
        assert!(engine.await_ready(WAIT).await);
        pg.psql(
            &db,
            "UPDATE t SET v = 5 WHERE id = 2; UPDATE t SET id = 20, v = 6 WHERE id = 3;",
        )
        .unwrap();
        converge(&url, &stateless, &format!("updates applied ({identity})")).await;
        for id in [2, 20] {
            let row = indexed.lookup(id).unwrap();
            let note = row.get("note").unwrap();
            assert!(
                matches!(note, Value::Text(t) if t.len() == 20_000),
                "{identity}: the indexed target holds the whole value"
            );
            let seen = stateless.row(id).unwrap();
            assert!(
                seen.values()
                    .iter()
                    .all(|v| !matches!(v, Value::UnchangedToast | Value::Null)),
                "{identity}: never a marker or a null: {seen}"
            );
            if identity == "FULL" {
                assert_eq!(
                    seen.get("note"),
                    Some(note),
                    "FULL: completed from the old row image"
                );
            } else {
                assert!(
                    !seen.contains("note"),
                    "{identity}: the server did not resend the value and a target without rows \
                     gets the row without it: {seen}"
                );
            }
        }
        assert!(
            indexed.lookup(3).is_none(),
            "{identity}: the old key is gone"
        );
        engine.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_crash_and_restart_is_survived_without_gaps_or_duplicates() {
    // A cluster of its own: the crash must not hit other tests.
    let pg = Arc::new(PgCluster::start().unwrap());
    let db = setup(&pg, "restart", 50);
    let url = pg.connection_string(&db);
    let target = Arc::new(ModelTarget::default());
    let source = Arc::new(PgSource::new(config(&pg, &db, SlotMode::Stateful)).unwrap());
    let engine = start_engine(source, target.clone(), TestObserver::new()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = spawn_writer(url.clone(), 1000, Arc::clone(&stop), Arc::clone(&written));
    wait_until("writes before the crash", WAIT, || {
        written.load(Ordering::SeqCst) > 50
    })
    .await;
    target.hold.send_replace(true);
    let crash = tokio::task::spawn_blocking({
        let pg = Arc::clone(&pg);
        move || pg.restart()
    });
    crash.await.unwrap().unwrap();
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    target.hold.send_replace(false);
    pg.psql(&db, "INSERT INTO t SELECT g, 1, 'after' FROM generate_series(5000, 5100) g; DELETE FROM t WHERE id = 7;")
        .unwrap();
    converge(&url, &target, "target equals the table after the crash").await;
    assert!(target.duplicates().is_empty(), "{:?}", target.duplicates());
    assert_eq!(
        target.model.lock().baseline_rows,
        50,
        "resumed, no re-baseline"
    );
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_changes_reach_the_target_and_its_answer_is_honoured() {
    let pg = PgCluster::shared();
    let db = setup(pg, "schema", 5);
    let url = pg.connection_string(&db);
    let target = Arc::new(ModelTarget::default());
    let source = Arc::new(PgSource::new(config(pg, &db, SlotMode::Stateful)).unwrap());
    let observer = TestObserver::new();
    let engine = start_engine(source, target.clone(), Arc::clone(&observer)).await;

    pg.psql(
        &db,
        "ALTER TABLE t ADD COLUMN extra int4; INSERT INTO t VALUES (6, 0, 'x', 42);",
    )
    .unwrap();
    converge(&url, &target, "insert after ADD COLUMN").await;
    assert_eq!(
        target.row(6).unwrap().get("extra"),
        Some(&Value::from(42i32))
    );
    assert_eq!(
        target.model.lock().schema_changes,
        vec![vec!["id", "v", "note", "extra"]]
    );
    observer.wait_for_event("SchemaChange", WAIT).await;

    // Now the target asks for a re-baseline on the next change of columns.
    *target.schema_response.lock() = Some(SchemaChangeResponse::re_baseline("columns moved"));
    pg.psql(
        &db,
        "ALTER TABLE t DROP COLUMN note; UPDATE t SET v = 9 WHERE id = 1;",
    )
    .unwrap();
    wait_until("re-baselined", WAIT, || {
        target.model.lock().baseline_rows >= 11
    })
    .await;
    converge(&url, &target, "after DROP COLUMN").await;
    assert!(!target.row(1).unwrap().contains("note"));
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_transaction_streams_in_bounded_memory() {
    let pg = PgCluster::shared();
    let db = setup(pg, "bigtx", 0);
    let target = Arc::new(CountingTarget::default());
    let source = Arc::new(PgSource::new(config(pg, &db, SlotMode::Stateful)).unwrap());
    let engine = start_engine(
        source,
        target.clone(),
        TestObserver::without_per_change_events(),
    )
    .await;
    let before = memory_kib("VmRSS");
    pg.psql(
        &db,
        "INSERT INTO t SELECT g, g, 'row number ' || g FROM generate_series(1, 1000000) g",
    )
    .unwrap();
    wait_until(
        "a million inserts applied",
        Duration::from_secs(300),
        || target.inserts() == 1_000_000,
    )
    .await;
    let peak = memory_kib("VmHWM");
    let growth_mib = peak.saturating_sub(before) / 1024;
    assert!(
        growth_mib <= 256,
        "RSS grew by {growth_mib} MiB for one 1M-row transaction"
    );
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_follows_the_servers_wal_while_only_other_tables_are_written() {
    let pg = Arc::new(PgCluster::start().unwrap());
    let db = setup(&pg, "idle", 10);
    pg.psql(&db, "CREATE TABLE other (id int8, pad text);")
        .unwrap();
    let source = Arc::new(PgSource::new(config(&pg, &db, SlotMode::Stateful)).unwrap());
    let target = Arc::new(ModelTarget::default());
    let engine = start_engine(Arc::clone(&source), target.clone(), TestObserver::new()).await;
    // About 500 MB of WAL in a table the publication does not publish.
    for _ in 0..10 {
        pg.psql(
            &db,
            "INSERT INTO other SELECT g, repeat(md5(g::text), 30) FROM generate_series(1, 50000) g",
        )
        .unwrap();
    }
    pg.psql(&db, "CHECKPOINT").unwrap();
    let slot = source.slot_name();
    let close = format!(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) < 64 * 1024 * 1024 \
           AND pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) < 64 * 1024 * 1024 \
           AND pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') > 500 * 1000 * 1000 \
         FROM pg_replication_slots WHERE slot_name = '{slot}'"
    );
    let caught_up = tokio::task::spawn_blocking({
        let pg = Arc::clone(&pg);
        move || pg.wait_for_value(&db, &close, "t", Duration::from_secs(30))
    })
    .await
    .unwrap();
    assert!(
        caught_up,
        "the slot's confirmed and restart LSNs follow the WAL end"
    );
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_cut_is_survived_without_gaps_or_duplicates() {
    let pg = PgCluster::shared();
    let db = setup(pg, "netcut", 30);
    let url = pg.connection_string(&db);
    let proxy = laredo_test_support::FaultProxy::start(([127, 0, 0, 1], pg.port()).into())
        .await
        .unwrap();
    let mut settings = config(pg, &db, SlotMode::Stateful);
    settings.connection_string = format!("postgresql://postgres@127.0.0.1:{}/{db}", proxy.port());
    let source = Arc::new(PgSource::new(settings).unwrap());
    let target = Arc::new(ModelTarget::default());
    let engine = start_engine(Arc::clone(&source), target.clone(), TestObserver::new()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    // The writer goes straight to the server.
    let writer = spawn_writer(url.clone(), 1000, Arc::clone(&stop), Arc::clone(&written));
    target.hold.send_replace(true);
    for round in 1..=2u64 {
        wait_until("writes before the cut", WAIT, || {
            written.load(Ordering::SeqCst) > round * 40
        })
        .await;
        proxy.cut();
        let seen = written.load(Ordering::SeqCst);
        wait_until("writes during the cut", WAIT, || {
            written.load(Ordering::SeqCst) > seen + 20
        })
        .await;
        proxy.restore();
        wait_until("reconnected through the proxy", WAIT, || {
            proxy.open_connections() > 0 && source.state() == laredo_core::SourceState::Streaming
        })
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    target.hold.send_replace(false);
    converge(&url, &target, "target equals the table after the cuts").await;
    assert!(target.duplicates().is_empty(), "{:?}", target.duplicates());
    assert_eq!(target.model.lock().baseline_rows, 30, "no re-baseline");
    assert!(proxy.connections() >= 3, "reconnected after each cut");
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mapped_type_reads_the_same_from_the_baseline_and_the_stream() {
    let pg = PgCluster::shared();
    let db = pg.create_database("roundtrip").unwrap();
    let values = "true, -5, 7, 9000000000, 1.5, 0.1, 'NaN'::float8, 12.500, 'NaN'::numeric, \
        -123456789012345678901234567890.123456789, 'héllo\ttab\nline', 'ab', 'x', 'nm', '\\xdead00', \
        '{\"a\": [1, 2]}', '{\"b\": null}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', 'infinity'::date, \
        '13:14:15.5', '01:02:03+05:30', '2024-05-01 10:00:00.25', '-infinity'::timestamp, \
        '2024-05-01 10:00:00+02', '1 year 2 months 3 days 04:05:06.5', '-3 days -00:00:01', \
        '{1,NULL,3}', '{{1,2},{3,4}}', '{}'::int4[], '{\"a b\",c,NULL}', 'happy', 42, '10.1.2.3/32', \
        4294967295, '$1.50', NULL";
    pg.psql(
        &db,
        &format!(
            "CREATE TYPE mood AS ENUM ('sad', 'happy'); \
             CREATE DOMAIN positive AS int4 CHECK (VALUE > 0); \
             CREATE TABLE t (id int8 PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 real, f8 float8, \
               f8nan float8, n numeric, nnan numeric, nbig numeric, t text, vc varchar(5), bp char(3), nm name, \
               by bytea, j json, jb jsonb, u uuid, d date, dinf date, tm time, ttz timetz, ts timestamp, \
               tsinf timestamp, tstz timestamptz, iv interval, ivneg interval, ai int4[], a2 int4[], \
               aempty int4[], at text[], m mood, dom positive, ip inet, o oid, mo money, nul text); \
             INSERT INTO t VALUES (1, {values});"
        ),
    )
    .unwrap();
    let source = Arc::new(PgSource::new(config(pg, &db, SlotMode::Stateful)).unwrap());
    let target = laredo_target_memory::IndexedTarget::builder()
        .lookup_fields(["id"])
        .build();
    let engine = Engine::builder()
        .source("pg", source)
        .pipeline(
            "pg",
            table("public", "t"),
            target.clone(),
            PipelineOptions::default(),
        )
        .build()
        .unwrap();
    engine.start().await.unwrap();
    assert!(engine.await_ready(WAIT).await);
    pg.psql(&db, &format!("INSERT INTO t VALUES (2, {values})"))
        .unwrap();
    wait_until("streamed row", WAIT, || target.lookup(2i64).is_some()).await;
    let baseline = target.lookup(1i64).unwrap();
    let streamed = target.lookup(2i64).unwrap();
    assert_eq!(baseline.len(), 38);
    for (name, value) in baseline.iter().skip(1) {
        assert_eq!(
            streamed.get(name),
            Some(value),
            "column {name}: the baseline and the stream agree"
        );
    }
    assert_eq!(
        baseline.get("dom"),
        Some(&Value::Int64(42)),
        "a domain maps as its base type"
    );
    assert_eq!(
        baseline.get("m"),
        Some(&Value::from("happy")),
        "an enum is its label"
    );
    assert_eq!(
        baseline.get("nbig"),
        Some(&Value::numeric("-123456789012345678901234567890.123456789")),
        "numeric stays exact"
    );
    assert_eq!(baseline.get("nul"), Some(&Value::Null));
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_is_reported_and_recovered_by_a_rebaseline() {
    let pg = Arc::new(PgCluster::start().unwrap());
    let db = setup(&pg, "invalid", 10);
    pg.psql(&db, "CREATE TABLE other (id int8, pad text)")
        .unwrap();
    pg.psql(&db, "ALTER SYSTEM SET max_slot_wal_keep_size = '32MB'")
        .unwrap();
    pg.psql(&db, "SELECT pg_reload_conf()").unwrap();
    let url = pg.connection_string(&db);
    let target = Arc::new(ModelTarget::default());
    let source = Arc::new(PgSource::new(config(&pg, &db, SlotMode::Stateful)).unwrap());
    let engine = start_engine(Arc::clone(&source), target.clone(), TestObserver::new()).await;
    engine.stop().await.unwrap();
    let slot = source.slot_name();

    // While stopped: a change of ours, then far more WAL than the slot may hold.
    pg.psql(&db, "INSERT INTO t VALUES (77, 7, 'while stopped')")
        .unwrap();
    for _ in 0..4 {
        pg.psql(
            &db,
            "INSERT INTO other SELECT g, repeat(md5(g::text), 30) FROM generate_series(1, 30000) g",
        )
        .unwrap();
        pg.psql(&db, "CHECKPOINT").unwrap();
    }
    let lost = tokio::task::spawn_blocking({
        let (pg, db, slot) = (Arc::clone(&pg), db.clone(), slot.clone());
        move || {
            pg.wait_for_value(
                &db,
                &format!("SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{slot}'"),
                "lost",
                WAIT,
            )
        }
    })
    .await
    .unwrap();
    assert!(lost, "the server invalidated the slot");

    let observer = TestObserver::new();
    let source = Arc::new(PgSource::new(config(&pg, &db, SlotMode::Stateful)).unwrap());
    let engine = start_engine(source, target.clone(), Arc::clone(&observer)).await;
    observer.wait_for_event("ReBaselineTriggered", WAIT).await;
    converge(
        &url,
        &target,
        "target equals the table after the re-baseline",
    )
    .await;
    assert!(
        target.row(77).is_some(),
        "the change made while stopped is there"
    );
    pg.psql(&db, "INSERT INTO t VALUES (78, 8, 'after recovery')")
        .unwrap();
    converge(&url, &target, "streaming again").await;
    assert!(pg.wait_for_value(
        &db,
        &format!(
            "SELECT wal_status <> 'lost' FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ),
        "t",
        WAIT
    ));
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_drops_the_slot_and_publication_and_lag_is_reported() {
    let pg = PgCluster::shared();
    let db = setup(pg, "reset", 10);
    let url = pg.connection_string(&db);
    let target = Arc::new(ModelTarget::default());
    let source = Arc::new(PgSource::new(config(pg, &db, SlotMode::Stateful)).unwrap());
    let engine = start_engine(Arc::clone(&source), target.clone(), TestObserver::new()).await;

    // Lag: held changes show up in bytes and time, and drain to zero.
    target.hold.send_replace(true);
    pg.psql(
        &db,
        "INSERT INTO t SELECT g, 0, 'lag' FROM generate_series(100, 200) g",
    )
    .unwrap();
    wait_until("lag in bytes", WAIT, || source.lag().lag_bytes > 0).await;
    wait_until("lag in time", WAIT, || {
        source.lag().lag_time.is_some_and(|t| t > Duration::ZERO)
    })
    .await;
    target.hold.send_replace(false);
    converge(&url, &target, "caught up").await;
    wait_until("no lag once applied", WAIT, || {
        source.lag().lag_time == Some(Duration::ZERO)
    })
    .await;

    let slot = source.slot_name();
    let publication = format!("pub_{db}");
    // Through the engine: the source starts over with a fresh baseline.
    engine.reset_source("pg", true).await.unwrap();
    wait_until("a second baseline", WAIT, || {
        target.model.lock().baseline_rows == 10 + 111
    })
    .await;
    converge(&url, &target, "after the reset").await;
    engine.stop().await.unwrap();
    // Directly: the slot and the publication go.
    source.reset(true).await.unwrap();
    assert!(
        pg.wait_for_value(
            &db,
            &format!(
                "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}') + \
                    (SELECT count(*) FROM pg_publication WHERE pubname = '{publication}')"
            ),
            "0",
            WAIT
        ),
        "reset dropped the slot and the publication"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_source_delivers_nothing_until_resumed() {
    let pg = PgCluster::shared();
    let db = setup(pg, "pause", 5);
    let url = pg.connection_string(&db);
    let target = Arc::new(ModelTarget::default());
    let source = Arc::new(PgSource::new(config(pg, &db, SlotMode::Stateful)).unwrap());
    let engine = start_engine(Arc::clone(&source), target.clone(), TestObserver::new()).await;
    engine.pause("pg").await.unwrap();
    assert_eq!(source.state(), laredo_core::SourceState::Paused);
    pg.psql(
        &db,
        "INSERT INTO t SELECT g, 1, 'paused' FROM generate_series(10, 20) g",
    )
    .unwrap();
    // The server has sent the changes: they wait in the source, not in the target.
    let lsn = pg.psql(&db, "SELECT pg_current_wal_lsn()").unwrap();
    let slot = source.slot_name();
    assert!(pg.wait_for_value(
        &db,
        &format!(
            "SELECT r.sent_lsn >= '{lsn}' FROM pg_stat_replication r \
             JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = '{slot}'"
        ),
        "t",
        WAIT
    ));
    assert_eq!(target.pairs().len(), 5, "nothing applied while paused");
    engine.resume("pg").await.unwrap();
    converge(&url, &target, "applied after resume").await;
    assert!(target.duplicates().is_empty());
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_filters_and_column_lists_shape_both_the_baseline_and_the_stream() {
    let pg = PgCluster::shared();
    let db = setup(pg, "filters", 0);
    pg.psql(
        &db,
        "INSERT INTO t SELECT g, g % 2, 'n' || g FROM generate_series(1, 20) g",
    )
    .unwrap();
    let url = pg.connection_string(&db);
    let mut publication = PublicationConfig::new(format!("pub_{db}")).create_missing(true);
    publication
        .row_filters
        .insert(table("public", "t"), "id % 2 = 0".to_string());
    publication.column_lists.insert(
        table("public", "t"),
        vec!["id".to_string(), "v".to_string()],
    );
    let source = Arc::new(
        PgSource::new(config(pg, &db, SlotMode::Stateful).publication(publication)).unwrap(),
    );
    let target = Arc::new(ModelTarget::default());
    let engine = start_engine(source, target.clone(), TestObserver::new()).await;
    assert_eq!(
        target.model.lock().baseline_rows,
        10,
        "only rows with even ids"
    );
    assert!(
        !target.row(2).unwrap().contains("note"),
        "only listed columns"
    );

    // In, out, and moving across the filter (PostgreSQL requires filter columns in
    // the replica identity, so rows cross it by changing their key).
    pg.psql(
        &db,
        "INSERT INTO t VALUES (100, 0, 'in'), (101, 5, 'out'); \
         UPDATE t SET v = 9 WHERE id = 2; UPDATE t SET id = 5000 + 1 WHERE id = 4; \
         UPDATE t SET id = 70 WHERE id = 7;",
    )
    .unwrap();
    let expected: Vec<(i64, i64)> = connect(&url)
        .await
        .query("SELECT id, v FROM t WHERE id % 2 = 0 ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    wait_until("filtered changes applied", WAIT, || {
        target.pairs() == expected
    })
    .await;
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_given_up_and_reopened() {
    let pg = PgCluster::shared();
    let db = setup(pg, "stall", 10);
    let url = pg.connection_string(&db);
    let proxy = laredo_test_support::FaultProxy::start(([127, 0, 0, 1], pg.port()).into())
        .await
        .unwrap();
    let mut settings =
        config(pg, &db, SlotMode::Stateful).receive_timeout(Duration::from_millis(1500));
    settings.connection_string = format!("postgresql://postgres@127.0.0.1:{}/{db}", proxy.port());
    let source = Arc::new(PgSource::new(settings).unwrap());
    let target = Arc::new(ModelTarget::default());
    let engine = start_engine(Arc::clone(&source), target.clone(), TestObserver::new()).await;
    // A black hole: nothing is closed, nothing arrives.
    proxy.stall();
    pg.psql(&db, "INSERT INTO t VALUES (50, 5, 'during the stall')")
        .unwrap();
    wait_until("the source gives the connection up", WAIT, || {
        source.state() == laredo_core::SourceState::Reconnecting
    })
    .await;
    proxy.restore();
    pg.psql(&db, "INSERT INTO t VALUES (51, 5, 'after the stall')")
        .unwrap();
    converge(&url, &target, "target equals the table after the stall").await;
    assert!(target.duplicates().is_empty());
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_is_kept_by_probing_rather_than_dropped() {
    let pg = PgCluster::shared();
    let db = setup(pg, "idleprobe", 3);
    let url = pg.connection_string(&db);
    let source = Arc::new(
        PgSource::new(
            config(pg, &db, SlotMode::Ephemeral).receive_timeout(Duration::from_millis(800)),
        )
        .unwrap(),
    );
    let target = Arc::new(ModelTarget::default());
    let observer = TestObserver::new();
    let engine = start_engine(Arc::clone(&source), target.clone(), Arc::clone(&observer)).await;
    let slot = source.slot_name();
    let walsender = |pg: &PgCluster| {
        pg.psql(
            &db,
            &format!("SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{slot}'"),
        )
        .unwrap()
    };
    let before = walsender(pg);
    // Silence far longer than the receive timeout: what is under test is the passing
    // of time itself, so this sleep is the measurement, not a synchronisation.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(walsender(pg), before, "the same replication session");
    assert!(!observer.has_event("ReBaselineTriggered"), "no re-baseline");
    assert_eq!(source.state(), laredo_core::SourceState::Streaming);
    pg.psql(&db, "INSERT INTO t VALUES (4, 4, 'after the quiet')")
        .unwrap();
    converge(&url, &target, "still streaming").await;
    engine.stop().await.unwrap();
}

/// Fails to decode any message that carries the marker: a poison message at one WAL
/// position, read again after every reconnect. A real server sends no undecodable
/// pgoutput, so the fault is injected here (in the decoder only; the server, the slot,
/// the reconnects and the resumes are real).
fn poison_decoder(
    data: &[u8],
) -> Result<
    laredo_source_pg::internals::pgoutput::Message,
    laredo_source_pg::internals::pgoutput::DecodeError,
> {
    if data.windows(13).any(|w| w == b"laredo-poison") {
        return Err(laredo_source_pg::internals::pgoutput::DecodeError {
            message: "Insert",
            offset: 0,
            problem: "injected poison".to_string(),
        });
    }
    laredo_source_pg::internals::pgoutput::decode(data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_never_decodes_stops_the_source_after_max_protocol_failures_tries() {
    use laredo_core::PipelineState;
    use laredo_target_memory::IndexedTarget;

    let pg = PgCluster::shared();
    let db = pg.create_database("poison_msg").unwrap();
    pg.psql(&db, "CREATE TABLE t (id int8 PRIMARY KEY, v text)")
        .unwrap();
    let config = config(pg, &db, SlotMode::Stateful).max_protocol_failures(3);
    let source = Arc::new(PgSource::with_message_decoder(config, poison_decoder).unwrap());
    let target = IndexedTarget::builder().lookup_fields(["id"]).build();
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("pg", source)
        .pipeline(
            "pg",
            table("public", "t"),
            target.clone(),
            PipelineOptions::default(),
        )
        .observer(observer.clone())
        .build()
        .unwrap();
    engine.start().await.unwrap();
    assert!(engine.await_ready(WAIT).await, "engine ready");
    pg.psql(&db, "INSERT INTO t VALUES (1, 'fine')").unwrap();
    wait_until("the first row streamed", WAIT, || {
        target.lookup(1i64).is_some()
    })
    .await;

    pg.psql(&db, "INSERT INTO t VALUES (2, 'laredo-poison')")
        .unwrap();
    let failed = observer.wait_for_event("PipelineFailed", WAIT).await;
    let reason = failed.field("reason").unwrap().to_string();
    assert!(
        reason.contains("could not be decoded 3 times in a row (max_protocol_failures)")
            && reason.contains("injected poison"),
        "{reason}"
    );
    // The position is the message's own, in PostgreSQL's format.
    assert!(
        reason.contains("the replication message at ") && reason.contains('/'),
        "{reason}"
    );
    wait_until("the pipeline is in ERROR", WAIT, || {
        engine.pipelines()[0].state == PipelineState::Error
    })
    .await;
    assert!(target.lookup(2i64).is_none());
    engine.stop().await.unwrap();
}

/// Decodes as PostgreSQL sent it, then turns a text value `laredo-poison-value` into
/// bytes that are not UTF-8: a value the source cannot read, in one table's change.
/// PostgreSQL itself refuses to send text invalid in the client encoding (SQLSTATE
/// 22021 ends the walsender) and its pinned output styles all parse, so the damage is
/// injected here; the server, the tables and the streaming are real.
fn poison_value_decoder(
    data: &[u8],
) -> Result<
    laredo_source_pg::internals::pgoutput::Message,
    laredo_source_pg::internals::pgoutput::DecodeError,
> {
    use laredo_source_pg::internals::pgoutput::{Message, TupleValue};
    let mut message = laredo_source_pg::internals::pgoutput::decode(data)?;
    if let Message::Insert(insert) = &mut message {
        for value in &mut insert.new {
            if matches!(value, TupleValue::Text(bytes) if bytes.as_slice() == b"laredo-poison-value")
            {
                *value = TupleValue::Text(vec![b'b', b'a', b'd', 0xFF]);
            }
        }
    }
    Ok(message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_value_goes_to_its_dead_letter_store_and_the_other_table_keeps_streaming() {
    use laredo_core::{DeadLetterStore, PipelineState};
    use laredo_deadletter::MemoryDeadLetterStore;
    use laredo_target_memory::IndexedTarget;

    let pg = PgCluster::shared();
    let db = pg.create_database("poison_value").unwrap();
    pg.psql(
        &db,
        "CREATE TABLE a (id int8 PRIMARY KEY, v text); CREATE TABLE b (id int8 PRIMARY KEY, v text)",
    )
    .unwrap();
    let config = config(pg, &db, SlotMode::Stateful);
    let source = Arc::new(PgSource::with_message_decoder(config, poison_value_decoder).unwrap());
    let (a, b) = (table("public", "a"), table("public", "b"));
    let target_a = IndexedTarget::builder().lookup_fields(["id"]).build();
    let target_b = IndexedTarget::builder().lookup_fields(["id"]).build();
    let dead_letters = Arc::new(MemoryDeadLetterStore::new());
    let engine = Engine::builder()
        .source("pg", source)
        .pipeline(
            "pg",
            a.clone(),
            target_a.clone(),
            PipelineOptions::default(),
        )
        .pipeline(
            "pg",
            b.clone(),
            target_b.clone(),
            PipelineOptions::default(),
        )
        .dead_letter_store(dead_letters.clone())
        .build()
        .unwrap();
    engine.start().await.unwrap();
    assert!(engine.await_ready(WAIT).await, "engine ready");

    pg.psql(
        &db,
        "INSERT INTO a VALUES (1, 'laredo-poison-value'); INSERT INTO b VALUES (1, 'one'); \
         INSERT INTO a VALUES (2, 'two');",
    )
    .unwrap();
    wait_until("both tables streamed past the poison", WAIT, || {
        target_a.lookup(2i64).is_some() && target_b.lookup(1i64).is_some()
    })
    .await;
    assert!(
        target_a.lookup(1i64).is_none(),
        "the poison row was not applied"
    );
    let pipeline_a = engine
        .pipelines()
        .into_iter()
        .find(|p| p.table == a)
        .unwrap();
    let parked = dead_letters.read(&pipeline_a.id, 0).await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert!(parked[0].error.contains("not UTF-8"), "{parked:?}");
    assert!(
        engine
            .pipelines()
            .iter()
            .all(|p| p.state == PipelineState::Streaming),
        "{:?}",
        engine.pipelines()
    );
    engine.stop().await.unwrap();
}
