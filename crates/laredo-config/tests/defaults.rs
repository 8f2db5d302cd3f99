//! Built-in defaults: what a minimal configuration gets.

use std::time::Duration;

use laredo_config::*;

use crate::{MINIMAL, parse};

#[test]
fn server_defaults() {
    let config = parse(MINIMAL);
    assert_eq!(config.grpc.port, 4001);
    assert!(!config.grpc.tls.enabled);
    assert_eq!(config.grpc.auth.admin_token, None);
    assert_eq!(config.fanout.grpc.port, 4002);
    assert!(!config.insecure);
    assert!(config.grpc.auth.admin_tokens.is_empty());
    assert!(config.grpc.auth.read_tokens.is_empty());
    assert!(config.grpc.auth.admin_methods.is_empty());
    assert_eq!(config.grpc.limits, GrpcLimitsConfig::default());
    for bind in [
        &config.grpc.bind,
        &config.fanout.grpc.bind,
        &config.health.bind,
        &config.observability.metrics.bind,
    ] {
        assert_eq!(bind, DEFAULT_BIND);
    }
    assert_eq!(config.health.http_port, 8080);
    assert_eq!(config.health.readiness_path, "/health/ready");
    assert_eq!(config.health.liveness_path, "/health/live");
    assert_eq!(config.observability.metrics.kind, MetricsKind::Prometheus);
    assert_eq!(config.observability.metrics.port, 9090);
    assert_eq!(config.observability.metrics.path, "/metrics");
    assert_eq!(config.observability.logging.level, LogLevel::Info);
    assert_eq!(config.shutdown.timeout, Duration::from_secs(120));
    assert_eq!(config.shutdown.drain_timeout, Duration::from_secs(10));
    assert!(!config.snapshot.enabled);
    assert_eq!(config.snapshot.serializer, "jsonl");
    assert_eq!(config.snapshot.on_restore_mismatch, RestoreMismatch::Warn);
    assert!(!config.has_fanout_target());
}

#[test]
fn pg_source_defaults() {
    let config = parse(MINIMAL);
    let SourceConfig::Postgres(pg) = &config.sources["pg"] else {
        panic!("{:?}", config.sources["pg"]);
    };
    assert_eq!(pg.slot_mode, SlotMode::Ephemeral);
    assert_eq!(pg.slot_name, "laredo_slot");
    assert!(!pg.always_baseline);
    assert_eq!(pg.publication_name(), "laredo_slot_pub");
    assert!(!pg.publication.create);
    assert_eq!(pg.publication.publish, "insert, update, delete, truncate");
    assert_eq!(pg.reconnect.max_attempts, 10);
    assert_eq!(pg.reconnect.initial_backoff, Duration::from_secs(1));
    assert_eq!(pg.reconnect.max_backoff, Duration::from_secs(60));
    assert_eq!(pg.reconnect.backoff_multiplier, 2.0);
}

#[test]
fn table_and_target_defaults() {
    let config = parse(MINIMAL);
    let table = &config.tables[0];
    assert_eq!(table.ttl, None);
    assert!(table.validation.post_baseline_row_count);
    assert!(!table.validation.periodic_row_count.enabled);
    assert_eq!(
        table.validation.periodic_row_count.interval,
        Duration::from_secs(3_600)
    );
    assert_eq!(table.validation.on_mismatch, MismatchAction::Warn);
    let target = &table.targets[0];
    assert_eq!(target.buffer.max_size, 10_000);
    assert_eq!(target.buffer.policy, BufferPolicy::Block);
    assert_eq!(target.error_handling.max_retries, 5);
    assert_eq!(
        target.error_handling.retry_backoff,
        Duration::from_millis(1_000)
    );
    assert_eq!(
        target.error_handling.retry_backoff_max,
        Duration::from_millis(30_000)
    );
    assert_eq!(
        target.error_handling.on_persistent_failure,
        ErrorPolicy::Isolate
    );
    assert!(!target.error_handling.dead_letter.enabled);
    assert!(target.filters.is_empty() && target.transforms.is_empty());
}

#[test]
fn fanout_and_http_defaults() {
    let config = parse(
        r#"
        sources.pg { type = postgresql, connection = "postgres://h/db" }
        tables = [{ source = pg, schema = s, table = t, targets = [
          { type = replication-fanout }
          { type = http-sync, base_url = "http://sink" }
        ] }]
        "#,
    );
    let TargetKind::ReplicationFanout(fanout) = &config.tables[0].targets[0].kind else {
        panic!("{:?}", config.tables[0].targets[0].kind);
    };
    assert_eq!(fanout.journal.max_entries, 1_000_000);
    assert_eq!(fanout.journal.max_age, Duration::from_secs(86_400));
    assert_eq!(fanout.snapshot.interval, Duration::ZERO);
    assert_eq!(fanout.snapshot.retention.keep_count, 3);
    assert_eq!(
        fanout.snapshot.retention.max_age,
        Duration::from_secs(86_400)
    );
    assert_eq!(fanout.max_clients, 1_000);
    assert_eq!(fanout.client_buffer.max_size, 50_000);
    assert_eq!(
        fanout.client_buffer.policy,
        ClientBufferPolicy::DropDisconnect
    );
    assert_eq!(fanout.heartbeat_interval, Duration::from_secs(5));
    let TargetKind::HttpSync(http) = &config.tables[0].targets[1].kind else {
        panic!("{:?}", config.tables[0].targets[1].kind);
    };
    assert_eq!(http.batch_size, 500);
    assert_eq!(http.flush_interval, Duration::from_millis(200));
    assert_eq!(http.timeout, Duration::from_secs(5));
    assert_eq!(http.retry_count, 3);
    assert_eq!(http.retry_backoff, Duration::from_millis(500));
    assert!(config.has_fanout_target());
}
