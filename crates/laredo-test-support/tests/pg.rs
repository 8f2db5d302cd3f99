//! The throwaway PostgreSQL cluster: starts, runs SQL, survives a crash restart, and
//! leaves nothing behind.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::time::Duration;

use laredo_test_support::PgCluster;

#[test]
fn a_cluster_is_configured_for_logical_replication() {
    let pg = PgCluster::shared();
    assert_eq!(pg.psql("postgres", "SHOW wal_level").unwrap(), "logical");
    assert_eq!(pg.psql("postgres", "SHOW fsync").unwrap(), "off");
    let db = pg.create_database("smoke").unwrap();
    pg.psql(
        &db,
        "CREATE TABLE t (id int8 PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b')",
    )
    .unwrap();
    assert_eq!(
        pg.psql(&db, "SELECT string_agg(v, ',' ORDER BY id) FROM t")
            .unwrap(),
        "a,b"
    );
    assert!(
        pg.connection_string(&db)
            .ends_with(&format!(":{}/{db}", pg.port()))
    );
    let err = pg.psql(&db, "SELECT * FROM missing").unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    assert_eq!(pg.terminate_walsenders().unwrap(), 0);
}

#[test]
fn a_crash_restart_keeps_committed_data_and_drop_cleans_up() {
    let pg = PgCluster::start().unwrap();
    let db = pg.create_database("crash").unwrap();
    pg.psql(&db, "CREATE TABLE t (id int8); INSERT INTO t VALUES (1)")
        .unwrap();
    pg.restart().unwrap();
    assert!(pg.wait_for_value(&db, "SELECT count(*) FROM t", "1", Duration::from_secs(30)));
    let root = pg.root().to_path_buf();
    let port = pg.port();
    drop(pg);
    assert!(!root.exists(), "the cluster directory is removed");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server is stopped"
    );
}
