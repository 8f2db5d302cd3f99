//! The server running against PostgreSQL: serving, probes, metrics, shutdown, restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use laredo_test_support::PgCluster;

use crate::support::{
    READ_TOKEN, Server, WAIT, binary, http_get, metric, users_config, users_config_with_targets,
    users_db, wait_for, wait_served_equals_table, write_config,
};

const PIPELINE: &str = "pg:public.users:indexed-memory";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_table_with_probes_and_metrics() {
    let pg = PgCluster::shared();
    let db = users_db(pg, "serve", 20);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &users_config(pg, &db, ""));
    let mut server = Server::start(&config);

    server.wait_ready();
    let (status, body) = server.get("/health/ready");
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["ready"], true);
    assert_eq!(body["pipelines"][PIPELINE], "STREAMING");
    assert_eq!(
        server.get("/health/live"),
        (200, r#"{"status":"ok"}"#.to_string())
    );
    assert_eq!(
        server.get("/health/startup"),
        (200, r#"{"status":"started"}"#.to_string())
    );

    pg.psql(
        &db,
        "INSERT INTO users SELECT g, 'new-' || g FROM generate_series(21, 30) g; \
         UPDATE users SET name = 'renamed' WHERE id = 3; DELETE FROM users WHERE id = 4;",
    )
    .unwrap();
    wait_served_equals_table(&server, pg, &db).await;

    let (status, text) = server.get("/metrics");
    assert_eq!(status, 200);
    let labels = format!("pipeline=\"{PIPELINE}\"");
    assert_eq!(
        metric(
            &text,
            &format!("laredo_pipeline_state{{{labels},source=\"pg\",table=\"public.users\"}}")
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!("laredo_pipeline_row_count{{{labels},table=\"public.users\"}}")
        ),
        Some(29.0)
    );
    let applied = |action: &str| {
        metric(
            &text,
            &format!(
                "laredo_pipeline_changes_applied_total{{{labels},table=\"public.users\",action=\"{action}\"}}"
            ),
        )
    };
    assert_eq!(applied("insert"), Some(10.0));
    assert_eq!(applied("update"), Some(1.0));
    assert_eq!(applied("delete"), Some(1.0));
    assert_eq!(
        metric(&text, &format!("laredo_baseline_rows{{{labels}}}")),
        Some(20.0)
    );
    assert_eq!(
        metric(
            &text,
            &format!("laredo_pipeline_errors_total{{{labels},table=\"public.users\"}}")
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "laredo_source_connected{source=\"pg\"}"),
        Some(1.0)
    );
    assert!(
        text.contains("# TYPE laredo_source_lag_bytes gauge"),
        "{text}"
    );
    assert!(
        text.contains(&format!("laredo_pipeline_buffer_depth{{{labels}}} ")),
        "{text}"
    );
    // The dedicated metrics port serves the same families.
    let (status, dedicated) = http_get(server.addrs.metrics, "/metrics");
    assert_eq!(status, 200);
    assert!(dedicated.contains("# TYPE laredo_pipeline_state gauge"));

    // `healthcheck` against the running server.
    let out = binary()
        .args([
            "healthcheck",
            "--port",
            &server.addrs.health.port().to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\n");

    server.terminate();
    assert!(
        server.wait_exit(WAIT).success(),
        "{}",
        server.logs().join("\n")
    );

    let out = binary()
        .args([
            "healthcheck",
            "--port",
            &server.addrs.health.port().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("not ready ("),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_ports_need_tokens_and_bound_message_sizes() {
    use laredo_proto::laredo::replication::v1::SyncRequest;
    use laredo_proto::laredo::replication::v1::laredo_replication_service_client::LaredoReplicationServiceClient;
    use laredo_proto::laredo::v1::CountRowsRequest;
    use laredo_proto::laredo::v1::laredo_query_service_client::LaredoQueryServiceClient;

    let pg = PgCluster::shared();
    let db = users_db(pg, "auth", 3);
    let dir = tempfile::tempdir().unwrap();
    let targets = "{ type = indexed-memory, lookup_fields = [id] }, { type = replication-fanout }";
    let extra = "grpc.limits.max_message_size = 1024";
    let config = write_config(
        dir.path(),
        &users_config_with_targets(pg, &db, targets, extra),
    );
    let server = Server::start(&config);
    server.wait_ready();

    // No token: Query and fan-out Sync are refused.
    let plain = |addr: std::net::SocketAddr| async move {
        tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let status = LaredoQueryServiceClient::new(plain(server.addrs.grpc).await)
        .count_rows(CountRowsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let fanout = server.addrs.fanout.expect("a replication listener");
    let status = LaredoReplicationServiceClient::new(plain(fanout).await)
        .sync(SyncRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");

    // With the read token: served, but a message over grpc.limits.max_message_size is not.
    let mut query = server.query().await;
    let count = query
        .count_rows(CountRowsRequest {
            schema: "public".into(),
            table: "users".into(),
        })
        .await
        .unwrap();
    assert_eq!(count.into_inner().count, 3);
    let status = query
        .count_rows(CountRowsRequest {
            schema: "s".repeat(4096),
            table: "users".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("max_message_size") && status.message().contains("1024"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_write_load_exits_cleanly() {
    let pg = PgCluster::shared();
    let db = users_db(pg, "sigterm", 10);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &users_config(pg, &db, ""));
    let mut server = Server::start(&config);
    server.wait_ready();

    // A write load in the background until the server is gone.
    let stop = Arc::new(AtomicBool::new(false));
    let batches = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, batches, db) = (Arc::clone(&stop), Arc::clone(&batches), db.clone());
        std::thread::spawn(move || {
            let mut next = 1_000_i64;
            while !stop.load(Ordering::SeqCst) {
                pg.psql(
                    &db,
                    &format!(
                        "INSERT INTO users SELECT g, 'load-' || g FROM generate_series({next}, {}) g",
                        next + 99
                    ),
                )
                .unwrap();
                next += 100;
                batches.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let inserts = format!(
        "laredo_pipeline_changes_applied_total{{pipeline=\"{PIPELINE}\",table=\"public.users\",action=\"insert\"}}"
    );
    wait_for("changes of the load applied", WAIT, || {
        metric(&server.get("/metrics").1, &inserts).is_some_and(|n| n >= 200.0)
    });
    server.terminate();
    let status = server.wait_exit(WAIT);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    // Counted only here: the writer counts a batch after psql returns, so while it
    // runs the count can trail the metric.
    assert!(batches.load(Ordering::SeqCst) >= 2);
    assert!(status.success(), "{status}:\n{}", server.logs().join("\n"));
    assert!(server.log_fields("shutting down").is_some());
    assert!(server.log_fields("stopped").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateful_restart_restores_the_shutdown_snapshot_and_streams_the_rest() {
    let pg = PgCluster::shared();
    let db = users_db(pg, "restart", 30);
    let dir = tempfile::tempdir().unwrap();
    let snapshots = dir.path().join("snapshots");
    let extra = format!(
        "sources.pg.slot_mode = stateful\n\
         snapshot {{ enabled = true, store = local, store_config.path = \"{}\", on_shutdown = true }}",
        snapshots.display()
    );
    let config = write_config(dir.path(), &users_config(pg, &db, &extra));

    let mut first = Server::start(&config);
    first.wait_ready();
    pg.psql(
        &db,
        "INSERT INTO users VALUES (31, 'before-stop'); UPDATE users SET name = 'x' WHERE id = 1;",
    )
    .unwrap();
    wait_served_equals_table(&first, pg, &db).await;
    let baselines = format!(
        "laredo_pipeline_baselines_total{{pipeline=\"{PIPELINE}\",table=\"public.users\"}}"
    );
    assert_eq!(metric(&first.get("/metrics").1, &baselines), Some(1.0));
    first.terminate();
    assert!(
        first.wait_exit(WAIT).success(),
        "{}",
        first.logs().join("\n")
    );
    assert!(
        std::fs::read_dir(&snapshots).unwrap().next().is_some(),
        "a shutdown snapshot was written"
    );

    // Changes while the server is down.
    pg.psql(
        &db,
        "INSERT INTO users VALUES (32, 'while-down'); UPDATE users SET name = 'y' WHERE id = 2; \
         DELETE FROM users WHERE id = 5;",
    )
    .unwrap();

    let second = Server::start(&config);
    second.wait_ready();
    wait_served_equals_table(&second, pg, &db).await;
    let text = second.get("/metrics").1;
    assert_eq!(
        metric(&text, "laredo_snapshots_restored_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, &baselines),
        Some(0.0),
        "no new baseline: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_fanout_clients_and_a_second_signal_skips_the_grace() {
    use laredo_proto::laredo::replication::v1::laredo_replication_service_client::LaredoReplicationServiceClient;
    use laredo_proto::laredo::replication::v1::{SyncRequest, sync_response::Message};

    let pg = PgCluster::shared();
    let db = users_db(pg, "drain", 5);
    let dir = tempfile::tempdir().unwrap();
    let targets = "{ type = indexed-memory, lookup_fields = [id] }, { type = replication-fanout }";
    let config = write_config(dir.path(), &users_config_with_targets(pg, &db, targets, ""));
    // A grace far longer than the test waits: only the second signal ends it in time.
    let mut server = Server::start_with(&config, &["--drain-grace", "10m"]);
    server.wait_ready();

    let fanout = server.addrs.fanout.expect("a replication listener");
    let mut client =
        LaredoReplicationServiceClient::new(crate::support::authed(fanout, READ_TOKEN).await);
    let mut stream = client
        .sync(SyncRequest {
            schema: "public".into(),
            table: "users".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut rows = 0;
    loop {
        match stream.message().await.unwrap().and_then(|m| m.message) {
            Some(Message::SnapshotRows(batch)) => rows += batch.rows.len(),
            Some(Message::CaughtUp(_)) => break,
            _ => {}
        }
    }
    assert_eq!(rows, 5);
    let clients =
        "laredo_fanout_connected_clients{pipeline=\"pg:public.users:replication-fanout\"}";
    assert_eq!(metric(&server.get("/metrics").1, clients), Some(1.0));

    server.terminate();
    // The client is told to go away; readiness answers 503 while the grace runs.
    let go_away = tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await.unwrap().and_then(|m| m.message) {
                Some(Message::GoAway(go_away)) => break go_away,
                Some(_) => {}
                None => panic!("stream ended without GoAway"),
            }
        }
    })
    .await
    .expect("a GoAway");
    assert!(
        !go_away.message.is_empty() || go_away.reason != 0,
        "{go_away:?}"
    );
    let (status, body) = server.get("/health/ready");
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (body["ready"].clone(), body["draining"].clone()),
        (false.into(), true.into())
    );

    server.terminate();
    assert!(
        server.wait_exit(WAIT).success(),
        "{}",
        server.logs().join("\n")
    );
    assert!(
        server
            .log_fields("second signal: skipping the drain grace")
            .is_some()
    );
}

#[test]
fn strict_validation_names_missing_tables_before_serving() {
    let pg = PgCluster::shared();
    let db = users_db(pg, "strict", 3);
    let dir = tempfile::tempdir().unwrap();
    let extra = "tables += { source = pg, schema = public, table = nope, \
                 targets = [{ type = indexed-memory, lookup_fields = [id] }] }";
    let config = write_config(dir.path(), &users_config(pg, &db, extra));
    let want = vec!["tables[1]: public.nope: table does not exist".to_string()];
    for command in [&["validate"][..], &[]] {
        let out = binary()
            .args(command)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{command:?}: {out:?}");
        let stderr: Vec<String> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|line| !line.starts_with('{')) // JSON log lines of the run
            .map(str::to_string)
            .collect();
        assert_eq!(stderr, want, "{command:?}");
    }
    // The same configuration validates without connecting.
    let out = binary()
        .args(["validate", "--validate", "structural", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn text_logs_are_lines_for_people() {
    use std::io::{BufRead, BufReader};

    let pg = PgCluster::shared();
    let db = users_db(pg, "textlog", 3);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &users_config(pg, &db, ""));
    let mut child = binary()
        // The config key (the `--log-format` flag overrides it).
        .args(["--set", "observability.logging.type=text", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = loop {
        let line = rx.recv_timeout(WAIT).expect("a `server started` line");
        if line.contains("server started") {
            break line;
        }
    };
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        !started.starts_with('{') && started.contains(" INFO ") && started.contains("grpc_addr="),
        "{started}"
    );
}
