//! Every key of the reference parses into the typed config.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use laredo_config::*;
use serde_json::json;

use crate::complete_path;

fn load_complete() -> LaredoConfig {
    match LaredoConfig::load(LoadOptions::new().file(complete_path())) {
        Ok(config) => config,
        Err(errors) => panic!("complete.conf should be valid:\n{errors}"),
    }
}

#[test]
fn pg_source_keys() {
    let config = load_complete();
    let SourceConfig::Postgres(pg) = &config.sources["pg_main"] else {
        panic!("pg_main is {:?}", config.sources["pg_main"]);
    };
    assert_eq!(
        pg.connection,
        "postgres://laredo:hunter2@db.internal:5432/app"
    );
    assert_eq!(pg.slot_mode, SlotMode::Stateful);
    assert_eq!(pg.slot_name, "laredo_orders");
    assert!(pg.always_baseline);
    assert_eq!(pg.publication.name.as_deref(), Some("orders_pub"));
    assert_eq!(pg.publication_name(), "orders_pub");
    assert!(pg.publication.create);
    assert_eq!(pg.publication.publish, "insert, update");
    let orders = &pg.publication.tables["public.orders"];
    assert_eq!(orders.row_filter.as_deref(), Some("region = 'eu'"));
    assert_eq!(
        orders.columns.as_deref(),
        Some(&["id".to_owned(), "region".to_owned(), "total".to_owned()][..])
    );
    assert_eq!(pg.reconnect.max_attempts, 7);
    assert_eq!(pg.reconnect.initial_backoff, Duration::from_millis(500));
    assert_eq!(pg.reconnect.max_backoff, Duration::from_secs(120));
    assert_eq!(pg.reconnect.backoff_multiplier, 1.5);
}

#[test]
fn kinesis_and_archive_source_keys() {
    let config = load_complete();
    let SourceConfig::Kinesis(kinesis) = &config.sources["stream"] else {
        panic!("stream is {:?}", config.sources["stream"]);
    };
    assert_eq!(kinesis.baseline_bucket, "s3://baselines/orders/");
    assert_eq!(kinesis.baseline_format, "jsonl");
    assert_eq!(
        kinesis.stream_arn,
        "arn:aws:kinesis:us-east-1:123456789012:stream/orders"
    );
    assert_eq!(kinesis.consumer_group.as_deref(), Some("laredo"));
    assert_eq!(
        kinesis.checkpoint_table.as_deref(),
        Some("dynamodb://laredo-checkpoints")
    );
    assert_eq!(kinesis.region.as_deref(), Some("us-east-1"));

    let SourceConfig::Archive(archive) = &config.sources["archive"] else {
        panic!("archive is {:?}", config.sources["archive"]);
    };
    assert_eq!(archive.store, StoreKind::S3);
    assert_eq!(archive.store_config.bucket.as_deref(), Some("archives"));
    assert_eq!(archive.store_config.prefix.as_deref(), Some("orders/"));
    assert_eq!(archive.store_config.region.as_deref(), Some("eu-west-1"));
    assert_eq!(archive.format, ["protobuf", "jsonl"]);
    assert_eq!(archive.key_prefix.as_deref(), Some("public.orders/"));
    assert_eq!(archive.key_fields, ["order_id"]);
    assert!(archive.follow);
    assert_eq!(archive.poll_interval, Duration::from_secs(10));
    assert_eq!(
        archive.state_path,
        Some(PathBuf::from("/var/lib/laredo/archive.pos"))
    );
    assert!(archive.group);
}

#[test]
fn table_keys() {
    let config = load_complete();
    let table = &config.tables[0];
    assert_eq!(
        (
            table.source.as_str(),
            table.schema.as_str(),
            table.table.as_str()
        ),
        ("pg_main", "public", "orders")
    );
    let ttl = table.ttl.as_ref().expect("ttl is set");
    assert_eq!(ttl.mode, TtlMode::Field);
    assert_eq!(ttl.field.as_deref(), Some("expires_at"));
    assert_eq!(ttl.check_interval, Some(Duration::from_secs(45)));
    assert!(!table.validation.post_baseline_row_count);
    assert!(table.validation.periodic_row_count.enabled);
    assert_eq!(
        table.validation.periodic_row_count.interval,
        Duration::from_secs(1_800)
    );
    assert_eq!(table.validation.on_mismatch, MismatchAction::ReBaseline);
    assert_eq!(
        config.tables[1].ttl.as_ref().map(|t| t.mode),
        Some(TtlMode::Computed)
    );
}

#[test]
fn indexed_target_with_common_keys() {
    let config = load_complete();
    let target = &config.tables[0].targets[0];
    let TargetKind::IndexedMemory(indexed) = &target.kind else {
        panic!("{:?}", target.kind);
    };
    assert_eq!(indexed.lookup_fields, ["id"]);
    assert_eq!(indexed.additional_indexes.len(), 1);
    assert_eq!(indexed.additional_indexes[0].name, "by_customer");
    assert_eq!(
        indexed.additional_indexes[0].fields,
        ["customer_id", "region"]
    );
    assert!(indexed.additional_indexes[0].unique);
    assert_eq!(target.buffer.max_size, 500);
    assert_eq!(target.buffer.policy, BufferPolicy::DropOldest);
    let eh = &target.error_handling;
    assert_eq!(eh.max_retries, 2);
    assert_eq!(eh.retry_backoff, Duration::from_millis(250));
    assert_eq!(eh.retry_backoff_max, Duration::from_millis(4_000));
    assert_eq!(eh.on_persistent_failure, ErrorPolicy::StopSource);
    assert!(eh.dead_letter.enabled);
    assert_eq!(eh.dead_letter.store, DeadLetterStoreKind::Local);
    assert_eq!(
        eh.dead_letter.config.path,
        Some(PathBuf::from("/var/lib/laredo/dead-letters"))
    );
    assert_eq!(
        target.filters,
        vec![
            FilterConfig::FieldEquals {
                field: "region".into(),
                value: json!("eu")
            },
            FilterConfig::FieldPrefix {
                field: "sku".into(),
                prefix: "A-".into()
            },
            FilterConfig::FieldRegex {
                field: "email".into(),
                pattern: r"^[a-z]+@example\.com$".into()
            },
        ]
    );
    assert_eq!(
        target.transforms,
        vec![
            TransformConfig::DropFields {
                fields: vec!["internal_notes".into()]
            },
            TransformConfig::RenameFields {
                mapping: BTreeMap::from([("total".into(), "amount".into())])
            },
            TransformConfig::AddTimestamp {
                field: "synced_at".into()
            },
        ]
    );
}

#[test]
fn compiled_and_fanout_targets() {
    let config = load_complete();
    let TargetKind::CompiledMemory(compiled) = &config.tables[0].targets[1].kind else {
        panic!("{:?}", config.tables[0].targets[1].kind);
    };
    assert_eq!(compiled.compiler, "order_summary");
    assert_eq!(compiled.key_fields, ["id", "region"]);
    let filter = compiled.filter.as_ref().expect("filter is set");
    assert_eq!(
        (filter.field.as_str(), filter.prefix.as_str()),
        ("status", "open")
    );

    let TargetKind::ReplicationFanout(fanout) = &config.tables[0].targets[2].kind else {
        panic!("{:?}", config.tables[0].targets[2].kind);
    };
    assert_eq!(fanout.journal.max_entries, 5_000);
    assert_eq!(fanout.journal.max_age, Duration::from_secs(7_200));
    assert_eq!(fanout.snapshot.interval, Duration::from_secs(300));
    assert_eq!(fanout.snapshot.retention.keep_count, 5);
    assert_eq!(
        fanout.snapshot.retention.max_age,
        Duration::from_secs(3_600)
    );
    assert_eq!(fanout.max_clients, 500);
    assert_eq!(fanout.client_buffer.max_size, 1_000);
    assert_eq!(fanout.client_buffer.policy, ClientBufferPolicy::SlowDown);
    assert_eq!(fanout.heartbeat_interval, Duration::from_secs(2));
    let archive = fanout.archive.as_ref().expect("archive is set");
    assert_eq!(archive.store, StoreKind::Local);
    assert_eq!(
        archive.store_config.path,
        Some(PathBuf::from("/var/lib/laredo/archive"))
    );
    assert_eq!(archive.format, ["jsonl"]);
    assert_eq!(archive.key_prefix.as_deref(), Some("public.orders/"));
    assert!(config.has_fanout_target());
}

#[test]
fn http_sync_target() {
    let config = load_complete();
    let target = &config.tables[0].targets[3];
    let TargetKind::HttpSync(http) = &target.kind else {
        panic!("{:?}", target.kind);
    };
    assert_eq!(http.base_url, "https://sink.internal/laredo");
    assert_eq!(http.batch_size, 100);
    assert_eq!(http.flush_interval, Duration::from_secs(1));
    assert_eq!(http.timeout, Duration::from_millis(3_000));
    assert_eq!(http.retry_count, 6);
    assert_eq!(http.retry_backoff, Duration::from_millis(200));
    assert_eq!(http.auth_header.as_deref(), Some("Bearer sink-secret"));
    assert_eq!(
        http.headers,
        BTreeMap::from([("X-Tenant".to_owned(), "acme".to_owned())])
    );
    let dead_letter = &target.error_handling.dead_letter;
    assert_eq!(dead_letter.store, DeadLetterStoreKind::S3);
    assert_eq!(dead_letter.config.bucket.as_deref(), Some("dlq"));
    assert_eq!(dead_letter.config.prefix.as_deref(), Some("dl/"));
    assert_eq!(dead_letter.config.region.as_deref(), Some("us-east-1"));
}

#[test]
fn snapshot_keys() {
    let snapshot = load_complete().snapshot;
    assert!(snapshot.enabled);
    assert_eq!(snapshot.store, Some(StoreKind::Local));
    // `config { directory }` is accepted for `store_config { path }`.
    assert_eq!(
        snapshot.store_config.path,
        Some(PathBuf::from("/var/lib/laredo/snapshots"))
    );
    assert_eq!(snapshot.serializer, "jsonl");
    assert_eq!(snapshot.schedule, Some(Duration::from_secs(6 * 3_600)));
    assert!(snapshot.on_shutdown);
    assert_eq!(snapshot.retention.keep_count, 3);
    assert_eq!(
        snapshot.retention.max_age,
        Some(Duration::from_secs(7 * 86_400))
    );
    assert_eq!(snapshot.user_meta.get("app_version"), Some(&json!("1.2.3")));
    assert_eq!(snapshot.user_meta.get("build"), Some(&json!(42)));
    assert_eq!(snapshot.on_restore_mismatch, RestoreMismatch::Reject);
}

#[test]
fn server_blocks() {
    let config = load_complete();
    assert_eq!(config.grpc.port, 5001);
    assert!(config.grpc.tls.enabled);
    assert_eq!(
        config.grpc.tls.cert_path,
        PathBuf::from("/etc/laredo/tls.crt")
    );
    assert_eq!(
        config.grpc.tls.key_path,
        PathBuf::from("/etc/laredo/tls.key")
    );
    assert_eq!(
        config.grpc.auth.admin_token.as_deref(),
        Some("s3cret-token")
    );
    let auth = &config.grpc.auth;
    assert_eq!(auth.admin_tokens, ["next-admin-token"]);
    assert_eq!(
        auth.admin_token_files,
        [PathBuf::from("/run/secrets/laredo-admin")]
    );
    assert_eq!(auth.read_tokens, ["reader-token-1", "reader-token-2"]);
    assert_eq!(
        auth.read_token_files,
        [PathBuf::from("/run/secrets/laredo-read")]
    );
    assert_eq!(auth.admin_methods, ["/laredo.v1.LaredoQueryService/"]);
    assert_eq!(config.grpc.bind, "127.0.0.1");
    let limits = &config.grpc.limits;
    assert_eq!(limits.max_connections, Some(2048));
    assert_eq!(limits.max_concurrent_streams, Some(64));
    assert_eq!(limits.max_header_list_size, Some(8192));
    assert_eq!(limits.max_message_size, Some(1_048_576));
    assert_eq!(limits.keepalive_interval, Some(Duration::from_secs(15)));
    assert_eq!(limits.keepalive_timeout, Some(Duration::from_secs(5)));
    assert_eq!(limits.max_pending_accept_reset_streams, Some(10));
    assert_eq!(limits.max_local_error_reset_streams, Some(100));
    assert_eq!(limits.max_cancelled_calls, Some(50));
    assert_eq!(limits.request_timeout, Some(Duration::from_secs(10)));
    assert_eq!(limits.idle_timeout, Some(Duration::from_secs(120)));
    assert_eq!(limits.tcp_keepalive, Some(Duration::from_secs(30)));
    assert!(config.grpc.web.enabled);
    assert_eq!(
        config.grpc.web.cors_allowed_origins,
        ["https://console.internal"]
    );
    assert_eq!(config.fanout.grpc.port, 5002);
    assert_eq!(config.fanout.grpc.bind, "::");
    assert_eq!(config.fanout.grpc.limits.max_connections, Some(20_000));
    assert_eq!(
        config.fanout.grpc.limits.idle_timeout,
        Some(Duration::from_secs(3600))
    );
    assert_eq!(config.fanout.grpc.limits.max_concurrent_streams, None);
    assert_eq!(config.health.bind, "10.0.0.5");
    assert_eq!(config.health.http_port, 8081);
    assert_eq!(config.health.readiness_path, "/ready");
    assert_eq!(config.health.liveness_path, "/live");
    assert_eq!(config.health.startup_path, "/started");
    let metrics = &config.observability.metrics;
    assert_eq!(metrics.kind, MetricsKind::Otel);
    assert_eq!(metrics.port, 9191);
    assert_eq!(metrics.path, "/prom");
    assert_eq!(metrics.otel.exporter, OtelExporter::Otlp);
    assert_eq!(
        metrics.otel.endpoint.as_deref(),
        Some("http://collector:4317")
    );
    assert_eq!(metrics.otel.interval, Duration::from_secs(15));
    assert_eq!(config.observability.logging.format, LogFormat::Structured);
    assert_eq!(config.observability.logging.level, LogLevel::Debug);
    assert_eq!(config.shutdown.timeout, Duration::from_secs(90));
    assert_eq!(config.shutdown.drain_timeout, Duration::from_secs(5));
}

/// Every leaf of the file reaches the typed config: the schema and the structs agree.
#[test]
fn every_key_of_the_file_survives_into_the_typed_config() {
    let text = std::fs::read_to_string(complete_path()).expect("read complete.conf");
    let raw = hocon::parse(&text).expect("complete.conf parses");
    let config = load_complete();
    let typed = serde_json::to_value(&config).expect("serialize");
    let leaves = leaf_paths(&raw);
    assert!(leaves.len() >= 150, "only {} leaves", leaves.len());
    let mut missing = Vec::new();
    for key in leaves {
        if lookup(&typed, &key).is_none() {
            missing.push(key.join("."));
        }
    }
    assert_eq!(missing, Vec::<String>::new());
}

fn leaf_paths(config: &hocon::Config) -> Vec<Vec<String>> {
    fn walk(value: &hocon::HoconValue, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        match value {
            hocon::HoconValue::Object(map) => {
                for (k, v) in map {
                    prefix.push(k.clone());
                    walk(v, prefix, out);
                    prefix.pop();
                }
            }
            hocon::HoconValue::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    prefix.push(i.to_string());
                    walk(v, prefix, out);
                    prefix.pop();
                }
            }
            _ => out.push(prefix.clone()),
        }
    }
    let mut out = Vec::new();
    for key in config.keys() {
        let value = config.get(&format!("{key:?}")).expect("top-level key");
        walk(value, &mut vec![key.to_owned()], &mut out);
    }
    out
}

fn lookup<'v>(value: &'v serde_json::Value, path: &[String]) -> Option<&'v serde_json::Value> {
    path.iter().try_fold(value, |v, segment| {
        // Aliases in the file: `config`/`directory` are stored as `store_config`/`path`.
        let alias = match segment.as_str() {
            "config" if v.get("store_config").is_some() => "store_config",
            "directory" => "path",
            other => other,
        };
        match v {
            serde_json::Value::Array(items) => items.get(alias.parse::<usize>().ok()?),
            _ => v.get(alias),
        }
    })
}

/// The example in docs/configuration.md is a valid configuration.
#[test]
fn documented_example_is_valid() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"),
    )
    .expect("read docs/configuration.md");
    let start = doc.find("```hocon\n").expect("an example block") + "```hocon\n".len();
    let example = &doc[start..start + doc[start..].find("```").expect("closed block")];
    let config = LaredoConfig::load(
        LoadOptions::new()
            .text(example)
            .env([("POSTGRES_URL", "postgres://laredo@db/app")]),
    )
    .unwrap_or_else(|errors| panic!("documented example is invalid:\n{errors}"));
    assert_eq!(config.tables.len(), 2);
    assert!(config.has_fanout_target());
}
