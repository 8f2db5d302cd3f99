//! What the source's errors tell a caller to do, against a real server: retry a
//! connection, re-baseline past a lost slot, or have an operator grant a privilege or
//! fix a setting. The text stays what failed followed by the server's reason.

use std::time::Duration;

use async_trait::async_trait;
use laredo_core::{
    BaselineSink, ChangeEvent, ChangeHandler, Row, SourceError, SyncSource, TableIdentifier, table,
};
use laredo_source_pg::{PgSource, PgSourceConfig, PublicationConfig, SlotMode};
use laredo_test_support::PgCluster;
use tokio_util::sync::CancellationToken;

use super::with_user;

const WAIT: Duration = Duration::from_secs(60);

/// Counts baseline rows.
#[derive(Default)]
struct CountRows(usize);

#[async_trait]
impl BaselineSink for CountRows {
    async fn on_rows(&mut self, _: &TableIdentifier, rows: Vec<Row>) -> Result<(), SourceError> {
        self.0 += rows.len();
        Ok(())
    }
}

/// Refuses every change: none is expected.
struct NoChanges;

#[async_trait]
impl ChangeHandler for NoChanges {
    async fn on_change(&mut self, event: ChangeEvent) -> Result<(), SourceError> {
        panic!("no change was expected: {event:?}");
    }
}

/// Refuses baseline rows, as the engine does when it stops.
struct RefuseRows;

#[async_trait]
impl BaselineSink for RefuseRows {
    async fn on_rows(&mut self, _: &TableIdentifier, _: Vec<Row>) -> Result<(), SourceError> {
        Err(SourceError::Stopped)
    }
}

/// A database with `t (id, v)` of three rows and a publication `p` of it.
fn setup(pg: &PgCluster, prefix: &str) -> String {
    let db = pg.create_database(prefix).unwrap();
    pg.psql(
        &db,
        "CREATE TABLE t (id int8 PRIMARY KEY, v int8 NOT NULL); \
         INSERT INTO t SELECT g, 0 FROM generate_series(1, 3) g; \
         CREATE PUBLICATION p FOR TABLE t;",
    )
    .unwrap();
    db
}

fn config(url: String, db: &str, mode: SlotMode) -> PgSourceConfig {
    PgSourceConfig::new(url)
        .slot_mode(mode)
        .slot_name(format!("slot_{db}"))
        .publication(PublicationConfig::new("p"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_nobody_listens_on_is_a_retryable_connect_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    let source = PgSource::new(config(url, "none", SlotMode::Ephemeral)).unwrap();
    let error = source.init(&[table("public", "t")]).await.unwrap_err();
    assert!(
        matches!(error, SourceError::Connect { .. }) && error.is_retryable(),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port} (sslmode=disable): "
        )),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_the_server_does_not_know_is_denied_and_not_retryable() {
    let pg = PgCluster::shared();
    let db = setup(pg, "err_role");
    let url = with_user(&pg.connection_string(&db), "no_such_role");
    let source = PgSource::new(config(url, &db, SlotMode::Ephemeral)).unwrap();
    let error = source.init(&[table("public", "t")]).await.unwrap_err();
    assert!(
        matches!(error, SourceError::PermissionDenied { .. })
            && error.needs_operator()
            && !error.is_retryable(),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.starts_with("cannot connect to PostgreSQL at ")
            && text.contains("role \"no_such_role\" does not exist"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_replication_is_denied_the_slot() {
    let pg = PgCluster::shared();
    let db = setup(pg, "err_norepl");
    pg.psql(
        &db,
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'plain_reader') \
         THEN CREATE ROLE plain_reader LOGIN; END IF; END $$; \
         GRANT SELECT ON t TO plain_reader",
    )
    .unwrap();
    let url = with_user(&pg.connection_string(&db), "plain_reader");
    let source = PgSource::new(config(url, &db, SlotMode::Ephemeral)).unwrap();
    let t = table("public", "t");
    source.init(std::slice::from_ref(&t)).await.unwrap();
    let error = source
        .baseline(&[t], &mut CountRows::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, SourceError::PermissionDenied { .. }) && error.needs_operator(),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with("creating replication slot "),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_slot_is_slot_missing_which_asks_for_a_rebaseline() {
    let pg = PgCluster::shared();
    let db = setup(pg, "err_dropped");
    let source = PgSource::new(config(pg.connection_string(&db), &db, SlotMode::Stateful)).unwrap();
    let t = table("public", "t");
    source.init(std::slice::from_ref(&t)).await.unwrap();
    let mut rows = CountRows::default();
    let position = source.baseline(&[t], &mut rows).await.unwrap();
    assert_eq!(rows.0, 3);
    source.close().await.unwrap();
    let slot = source.slot_name();
    assert!(
        pg.wait_for_value(
            &db,
            &format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}' AND active"
            ),
            "0",
            WAIT
        ),
        "the baseline's session ended with close"
    );
    pg.psql(&db, &format!("SELECT pg_drop_replication_slot('{slot}')"))
        .unwrap();

    let error = source
        .stream(position, &mut NoChanges, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, SourceError::SlotMissing { slot: missing } if *missing == slot)
            && error.is_rebaseline_required(),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "re-baseline required: replication slot {slot:?} does not exist any more (dropped?)"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_the_engine_stops_returns_its_error_and_drops_the_new_slot() {
    let pg = PgCluster::shared();
    let db = setup(pg, "err_stopped");
    let source = PgSource::new(config(pg.connection_string(&db), &db, SlotMode::Stateful)).unwrap();
    let t = table("public", "t");
    source.init(std::slice::from_ref(&t)).await.unwrap();
    let error = tokio::time::timeout(WAIT, source.baseline(&[t], &mut RefuseRows))
        .await
        .expect("the failed baseline returns")
        .unwrap_err();
    assert!(matches!(error, SourceError::Stopped), "{error:?}");
    // A slot whose baseline never completed must not be resumed from.
    assert!(
        pg.wait_for_value(
            &db,
            &format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}'",
                source.slot_name()
            ),
            "0",
            WAIT
        ),
        "the new slot is dropped"
    );
    source.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_list_naming_an_unknown_column_is_a_configuration_error() {
    let pg = PgCluster::shared();
    let db = setup(pg, "err_columns");
    let t = table("public", "t");
    let mut publication = PublicationConfig::new("p");
    publication
        .column_lists
        .insert(t.clone(), vec!["id".to_string(), "nope".to_string()]);
    let source = PgSource::new(
        config(pg.connection_string(&db), &db, SlotMode::Ephemeral).publication(publication),
    )
    .unwrap();
    let error = source.init(&[t]).await.unwrap_err();
    assert!(
        matches!(error, SourceError::Configuration { .. }) && error.needs_operator(),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "publication column list of public.t names column \"nope\", which the table does not have"
    );
}
