//! What the source's errors tell a caller to do, against a real server: retry a
//! connection, re-baseline past a lost slot, or have an operator grant a privilege or
//! fix a setting. The text stays what failed followed by the server's reason.

use async_trait::async_trait;
use laredo_core::{BaselineSink, Row, SourceError, SyncSource, TableIdentifier, table};
use laredo_source_pg::{PgSource, PgSourceConfig, PublicationConfig, SlotMode};
use laredo_test_support::PgCluster;

use super::with_user;

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
