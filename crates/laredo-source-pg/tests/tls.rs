//! TLS to PostgreSQL on both connections, against a real server with `ssl = on` and a
//! certificate from a CA made in the test.

use std::sync::Arc;
use std::time::Duration;

use laredo_core::{SyncSource, table};
use laredo_source_pg::internals::replication::{ConnectionParams, create_slot_with_snapshot};
use laredo_source_pg::{PgSource, PgSourceConfig, PublicationConfig, SlotMode};
use laredo_test_support::{PgCluster, TestCa, TestObserver, TlsCluster, wait_until};

use super::source::{ModelTarget, start_engine};

const WAIT: Duration = Duration::from_secs(60);

/// A database with `t (id, v)` holding `rows` rows.
fn setup(pg: &PgCluster, prefix: &str, rows: u32) -> String {
    let db = pg.create_database(prefix).unwrap();
    pg.psql(
        &db,
        &format!(
            "CREATE TABLE t (id int8 PRIMARY KEY, v int8 NOT NULL); \
             INSERT INTO t SELECT g, 0 FROM generate_series(1, {rows}) g;"
        ),
    )
    .unwrap();
    db
}

fn source_config(url: String, db: &str) -> PgSourceConfig {
    PgSourceConfig::new(url)
        .slot_mode(SlotMode::Ephemeral)
        .slot_name(format!("slot_{db}"))
        .publication(PublicationConfig::new(format!("pub_{db}")).create_missing(true))
        .status_interval(Duration::from_millis(100))
}

/// An error and all its causes, as the edge prints them.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

/// What the query connection says when it cannot validate `public.t` on `url`.
async fn query_connection_error(url: &str, db: &str) -> String {
    let source = PgSource::new(source_config(url.to_string(), db)).unwrap();
    let problems = source.validate_tables(&[table("public", "t")]).await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    problems[0].message.clone()
}

/// What opening a replication connection on `url` says.
async fn replication_connection_error(url: &str, db: &str) -> String {
    let params = ConnectionParams::parse(url).unwrap();
    let outcome = create_slot_with_snapshot(&params, &format!("s_{db}"), "p", true).await;
    let error = outcome
        .err()
        .expect("the replication connection is refused");
    chain(&error)
}

/// A source on `url` runs its baseline and streams a live change, and both of its
/// connections (query and walsender) are TLS on the server's side.
async fn streams_over_tls(pg: &PgCluster, url: String, db: &str) {
    let source = Arc::new(PgSource::new(source_config(url, db)).unwrap());
    let target = Arc::new(ModelTarget::default());
    let engine = start_engine(source, target.clone(), TestObserver::new()).await;
    assert_eq!(target.model.lock().baseline_rows, 10);

    pg.psql(
        db,
        "INSERT INTO t VALUES (11, 7); UPDATE t SET v = 5 WHERE id = 1",
    )
    .unwrap();
    wait_until("the live changes arrive", WAIT, || {
        target.row(11).and_then(|r| r.get_i64("v")) == Some(7)
            && target.row(1).and_then(|r| r.get_i64("v")) == Some(5)
    })
    .await;

    // The walsender streaming to laredo (the only one on this database), seen from
    // the server: TLS.
    let walsender = format!(
        "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s ON s.pid = r.pid \
         JOIN pg_stat_activity a ON a.pid = r.pid WHERE a.datname = '{db}'"
    );
    assert!(
        pg.wait_for_value(db, &walsender, "t", WAIT),
        "the replication connection is TLS: {:?}",
        pg.psql(db, &walsender)
    );
    // The query connection too: every backend on this database but psql's own.
    let connections = format!(
        "SELECT string_agg(DISTINCT a.backend_type || ':' || s.ssl, ',') \
         FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid \
         WHERE a.datname = '{db}' AND a.pid <> pg_backend_pid()"
    );
    assert_eq!(
        pg.psql(db, &connections).unwrap(),
        "client backend:true,walsender:true"
    );
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_right_ca_and_host_streams_over_tls_on_both_connections() {
    let tls = TlsCluster::shared();
    let pg = tls.cluster();
    let db = setup(pg, "tls_full", 10);
    let url = format!(
        "postgresql://postgres@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}",
        pg.port(),
        tls.ca_file().display()
    );
    streams_over_tls(pg, url, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateful_source_reconnects_over_tls_after_its_walsender_is_killed() {
    let tls = TlsCluster::shared();
    let pg = tls.cluster();
    let db = setup(pg, "tls_reconnect", 10);
    let url = format!(
        "postgresql://postgres@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}",
        pg.port(),
        tls.ca_file().display()
    );
    let config = source_config(url, &db).slot_mode(SlotMode::Stateful);
    let source = Arc::new(PgSource::new(config).unwrap());
    let target = Arc::new(ModelTarget::default());
    let engine = start_engine(source, target.clone(), TestObserver::new()).await;
    let walsender = format!(
        "SELECT r.pid || ':' || s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s ON s.pid = r.pid \
         JOIN pg_stat_activity a ON a.pid = r.pid WHERE a.datname = '{db}'"
    );
    let mut first = String::new();
    wait_until("the first walsender streams", WAIT, || {
        first = pg.psql(&db, &walsender).unwrap();
        !first.is_empty()
    })
    .await;
    assert!(first.ends_with(":true"), "{first}");
    let pid = first.trim_end_matches(":true");
    pg.psql(&db, &format!("SELECT pg_terminate_backend({pid})"))
        .unwrap();

    // The stream reconnects on its own (a new walsender, TLS again) and goes on
    // without a re-baseline.
    let mut second = String::new();
    wait_until("a new walsender streams", WAIT, || {
        second = pg.psql(&db, &walsender).unwrap();
        !second.is_empty() && second != first
    })
    .await;
    assert!(
        second.ends_with(":true"),
        "the new walsender is TLS: {second}"
    );
    pg.psql(&db, "INSERT INTO t VALUES (11, 7)").unwrap();
    wait_until("the change after the reconnect arrives", WAIT, || {
        target.row(11).is_some()
    })
    .await;
    assert_eq!(target.model.lock().baseline_rows, 10, "no re-baseline");
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_accepts_an_ip_address_in_the_certificate_in_key_value_form() {
    let tls = TlsCluster::shared();
    let pg = tls.cluster();
    let db = setup(pg, "tls_ip", 10);
    let url = format!(
        "host=127.0.0.1 port={} user=postgres dbname={db} sslmode=verify-full sslrootcert='{}'",
        pg.port(),
        tls.ca_file().display()
    );
    streams_over_tls(pg, url, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_a_wrong_ca_fails_on_both_connections_naming_the_issuer_problem() {
    let tls = TlsCluster::shared();
    let pg = tls.cluster();
    let db = setup(pg, "tls_wrong_ca", 1);
    let url = format!(
        "postgresql://postgres@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}",
        pg.port(),
        tls.other_ca_file().display()
    );
    let query = query_connection_error(&url, &db).await;
    assert!(
        query.contains(&format!("localhost:{} (sslmode=verify-full)", pg.port()))
            && query.contains(&format!(
                "TLS handshake with localhost failed (sslmode=verify-full, sslrootcert={})",
                tls.other_ca_file().display()
            ))
            && query.contains("UnknownIssuer"),
        "{query}"
    );
    let replication = replication_connection_error(&url, &db).await;
    assert!(
        replication.contains(&format!(
            "TLS handshake with localhost:{} failed (sslmode=verify-full, sslrootcert={})",
            pg.port(),
            tls.other_ca_file().display()
        )) && replication.contains("UnknownIssuer"),
        "{replication}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_a_host_name_not_in_the_certificate_fails_and_verify_ca_accepts_it() {
    let tls = TlsCluster::shared();
    let pg = tls.cluster();
    let db = setup(pg, "tls_wrong_host", 1);
    // The certificate names localhost and 127.0.0.1; `hostaddr` reaches the server
    // while `host` is the name the certificate is checked against.
    let url = |mode: &str| {
        format!(
            "postgresql://postgres@db.example.invalid:{}/{db}?hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={}",
            pg.port(),
            tls.ca_file().display()
        )
    };
    let query = query_connection_error(&url("verify-full"), &db).await;
    assert!(
        query.contains(
            "TLS handshake with db.example.invalid failed (sslmode=verify-full, sslrootcert="
        ) && query.contains("not valid for name"),
        "{query}"
    );
    let replication = replication_connection_error(&url("verify-full"), &db).await;
    assert!(
        replication.contains("TLS handshake with db.example.invalid")
            && replication.contains("not valid for name"),
        "{replication}"
    );

    // The chain is right, only the name is wrong: verify-ca lets both connections in.
    let source = PgSource::new(source_config(url("verify-ca"), &db)).unwrap();
    let problems = source.validate_tables(&[table("public", "t")]).await;
    assert!(problems.is_empty(), "{problems:?}");
    pg.psql(&db, "CREATE PUBLICATION p FOR TABLE t").unwrap();
    let params = ConnectionParams::parse(&url("verify-ca")).unwrap();
    let (replication, created) = create_slot_with_snapshot(&params, &format!("ca_{db}"), "p", true)
        .await
        .unwrap();
    assert!(created.consistent_point > 0);
    drop(replication);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_against_a_server_without_tls_fails_instead_of_falling_back_to_plaintext() {
    let pg = PgCluster::shared();
    assert_eq!(pg.psql("postgres", "SHOW ssl").unwrap(), "off");
    let db = setup(pg, "tls_require", 1);
    let url = |mode: &str| format!("{}?sslmode={mode}", pg.connection_string(&db));
    let ca = pg.root().join(format!("ca_{db}.pem"));
    std::fs::write(&ca, TestCa::new("unused CA").unwrap().cert_pem()).unwrap();
    for mode in ["require", "verify-ca", "verify-full"] {
        // verify-* need a root certificate before they even connect: give one.
        let url = if mode == "require" {
            url(mode)
        } else {
            format!("{}&sslrootcert={}", url(mode), ca.display())
        };
        let query = query_connection_error(&url, &db).await;
        assert!(
            query.contains(&format!("(sslmode={mode})"))
                && query.contains("server does not support TLS"),
            "{query}"
        );
        let replication = replication_connection_error(&url, &db).await;
        assert!(
            replication.contains(&format!(
                "does not accept TLS, and sslmode={mode} never falls back to plaintext"
            )),
            "{replication}"
        );
    }
    // `prefer` does fall back, on both connections.
    let source = PgSource::new(source_config(url("prefer"), &db)).unwrap();
    let problems = source.validate_tables(&[table("public", "t")]).await;
    assert!(problems.is_empty(), "{problems:?}");
    pg.psql(&db, "CREATE PUBLICATION p FOR TABLE t").unwrap();
    let params = ConnectionParams::parse(&url("prefer")).unwrap();
    let (replication, _) = create_slot_with_snapshot(&params, &format!("pf_{db}"), "p", true)
        .await
        .unwrap();
    drop(replication);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_logs_in_a_certificate_only_role_on_both_connections() {
    let tls = TlsCluster::shared();
    let pg = tls.cluster();
    let db = setup(pg, "tls_client_cert", 10);
    let base = format!(
        "postgresql://{}@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}",
        TlsCluster::CERT_USER,
        pg.port(),
        tls.ca_file().display()
    );
    // Without a certificate the server refuses the role.
    let refused = query_connection_error(&base, &db).await;
    assert!(
        refused.contains("requires a valid client certificate"),
        "{refused}"
    );

    let url = format!(
        "{base}&sslcert={}&sslkey={}",
        tls.client_cert_file().display(),
        tls.client_key_file().display()
    );
    streams_over_tls(pg, url, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_key_readable_by_others_is_refused_like_libpq_does() {
    use std::os::unix::fs::PermissionsExt;
    let tls = TlsCluster::shared();
    let pg = tls.cluster();
    let db = setup(pg, "tls_key_mode", 1);
    let key = tls.client_dir().join("open.key");
    std::fs::copy(tls.client_key_file(), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let url = format!(
        "postgresql://{}@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
        TlsCluster::CERT_USER,
        pg.port(),
        tls.ca_file().display(),
        tls.client_cert_file().display(),
        key.display()
    );
    let error = query_connection_error(&url, &db).await;
    assert!(
        error.contains(&format!(
            "sslkey \"{}\": has group or world access (mode 644)",
            key.display()
        )),
        "{error}"
    );
}

#[test]
fn a_bad_sslmode_is_refused_naming_the_key_and_the_accepted_values() {
    let error = PgSource::new(PgSourceConfig::new(
        "postgres://u@localhost/db?sslmode=verify_full",
    ))
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid PostgreSQL connection string: invalid connection string: invalid value \"verify_full\" for sslmode: \
         expected one of disable, allow, prefer, require, verify-ca, verify-full"
    );
    let error =
        PgSource::new(PgSourceConfig::new("host=localhost user=u sslmode=bogus")).unwrap_err();
    assert!(
        error.to_string().contains("for sslmode: expected one of"),
        "{error}"
    );
    // What tokio-postgres could not read before: accepted now.
    assert!(PgSource::new(PgSourceConfig::new(
        "host=localhost user=u sslmode=verify-full sslrootcert=/ca.pem sslcert=/c.pem sslkey=/k.pem"
    ))
    .is_ok());
}
