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

#[test]
fn a_tls_cluster_serves_tls_with_the_test_ca() {
    use laredo_test_support::TlsCluster;
    let tls = TlsCluster::shared();
    let pg = tls.cluster();
    assert_eq!(pg.psql("postgres", "SHOW ssl").unwrap(), "on");
    // psql (libpq) verifying the server's certificate against the test CA, by host
    // name and by IP address.
    for host in ["localhost", "127.0.0.1"] {
        let out = std::process::Command::new(pg.program("psql"))
            .args(["-X", "-A", "-t", "-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"])
            .arg(format!(
                "host={host} port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
                pg.port(),
                tls.ca_file().display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");
    }
    // The certificate role gets in with its certificate, and not without one.
    let cert_login = |extra: &str| {
        std::process::Command::new(pg.program("psql"))
            .args(["-X", "-A", "-t", "-c", "SELECT current_user"])
            .arg(format!(
                "host=127.0.0.1 port={} user={} dbname=postgres sslmode=verify-ca sslrootcert={} {extra}",
                pg.port(),
                TlsCluster::CERT_USER,
                tls.ca_file().display()
            ))
            .output()
            .unwrap()
    };
    let out = cert_login(&format!(
        "sslcert={} sslkey={}",
        tls.client_cert_file().display(),
        tls.client_key_file().display()
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        TlsCluster::CERT_USER
    );
    assert!(
        !cert_login("sslcert=/nonexistent sslkey=/nonexistent")
            .status
            .success()
    );
}
