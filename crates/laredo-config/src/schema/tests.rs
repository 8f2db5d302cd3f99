//! The schema and the typed structs describe the same keys.
//!
//! [`every_field`] is a configuration that sets every field of every struct to a value
//! other than its default. It is written with struct literals without `..`, so a new
//! field does not compile until it is set here, and [`type_index`] matches every `type`
//! enum without `_`, so a new variant does not compile until it is counted. Then:
//!
//! - every key the structs write is a schema key: the serialized configuration passes
//!   the schema without a problem;
//! - every schema key is a struct field: the serialized configuration sets every key of
//!   the schema (a key no struct has would be missing from it);
//! - the schema's types fit the structs': what passed the schema deserializes back to
//!   the same configuration, and so does every value of every enum the schema lists;
//! - each node's `defaults` name the struct of that node.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Field, Kind, Node, ROOT, join, key_ids, variant_id};
use crate::error::KeyPath;
use crate::server::{
    FanoutConfig, FanoutGrpcConfig, GrpcAuthConfig, GrpcConfig, GrpcLimitsConfig, GrpcWebConfig,
    HealthConfig, LogFormat, LogLevel, LoggingConfig, MetricsConfig, MetricsKind,
    ObservabilityConfig, OtelConfig, OtelExporter, RestoreMismatch, ShutdownConfig, SnapshotConfig,
    SnapshotRetentionConfig, TlsConfig,
};
use crate::source::{
    ArchiveSourceConfig, KinesisSourceConfig, PgSourceConfig, PublicationConfig,
    PublicationTableConfig, ReconnectConfig, SlotMode, SourceConfig,
};
use crate::store::{StoreKind, StoreLocation};
use crate::table::{
    BufferConfig, BufferPolicy, ClientBufferConfig, ClientBufferPolicy, CompiledFilterConfig,
    CompiledMemoryConfig, DeadLetterConfig, DeadLetterStoreKind, ErrorHandlingConfig, ErrorPolicy,
    FanoutArchiveConfig, FanoutRetentionConfig, FanoutSnapshotConfig, FanoutTargetConfig,
    FilterConfig, HttpSyncConfig, IndexConfig, IndexedMemoryConfig, JournalConfig, MismatchAction,
    PeriodicRowCountConfig, TableConfig, TableValidationConfig, TargetConfig, TargetKind,
    TransformConfig, TtlConfig, TtlMode,
};
use crate::validate::check;
use crate::{LaredoConfig, LoadOptions};

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn location() -> StoreLocation {
    StoreLocation {
        path: Some(PathBuf::from("/var/lib/laredo/store")),
        bucket: Some("bucket".to_owned()),
        prefix: Some("prefix/".to_owned()),
        region: Some("eu-west-1".to_owned()),
    }
}

fn limits(connections: usize) -> GrpcLimitsConfig {
    GrpcLimitsConfig {
        max_connections: Some(connections),
        max_concurrent_streams: Some(8),
        max_header_list_size: Some(8_192),
        max_message_size: Some(1_048_576),
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_timeout: Some(Duration::from_secs(5)),
        max_pending_accept_reset_streams: Some(10),
        max_local_error_reset_streams: Some(100),
        max_cancelled_calls: Some(50),
        request_timeout: Some(Duration::from_secs(10)),
        idle_timeout: Some(Duration::from_secs(120)),
        tcp_keepalive: Some(Duration::from_secs(30)),
    }
}

fn sources() -> Vec<SourceConfig> {
    vec![
        SourceConfig::Postgres(PgSourceConfig {
            connection: "postgres://laredo@db/app".to_owned(),
            slot_mode: SlotMode::Stateful,
            slot_name: "orders".to_owned(),
            always_baseline: true,
            publication: PublicationConfig {
                name: Some("orders_pub".to_owned()),
                create: true,
                adopt_existing: true,
                publish: "insert, update".to_owned(),
                tables: BTreeMap::from([(
                    "public.orders".to_owned(),
                    PublicationTableConfig {
                        row_filter: Some("region = 'eu'".to_owned()),
                        columns: Some(strings(&["id", "region"])),
                    },
                )]),
            },
            reconnect: ReconnectConfig {
                max_attempts: 7,
                initial_backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(120),
                backoff_multiplier: 1.5,
            },
            max_protocol_failures: 9,
        }),
        SourceConfig::Kinesis(KinesisSourceConfig {
            baseline_bucket: "s3://baselines/orders/".to_owned(),
            baseline_format: "jsonl".to_owned(),
            stream_arn: "arn:aws:kinesis:us-east-1:1:stream/orders".to_owned(),
            consumer_group: Some("laredo".to_owned()),
            checkpoint_table: Some("dynamodb://checkpoints".to_owned()),
            region: Some("us-east-1".to_owned()),
        }),
        SourceConfig::Archive(ArchiveSourceConfig {
            store: StoreKind::S3,
            store_config: location(),
            format: strings(&["protobuf", "jsonl"]),
            key_prefix: Some("public.orders/".to_owned()),
            key_fields: strings(&["order_id"]),
            follow: true,
            poll_interval: Duration::from_secs(10),
            state_path: Some(PathBuf::from("/var/lib/laredo/archive.pos")),
            group: true,
        }),
    ]
}

fn target_kinds() -> Vec<TargetKind> {
    vec![
        TargetKind::IndexedMemory(IndexedMemoryConfig {
            lookup_fields: strings(&["id"]),
            additional_indexes: vec![IndexConfig {
                name: "by_customer".to_owned(),
                fields: strings(&["customer_id"]),
                unique: true,
            }],
        }),
        TargetKind::CompiledMemory(CompiledMemoryConfig {
            compiler: "summary".to_owned(),
            key_fields: strings(&["id", "region"]),
            filter: Some(CompiledFilterConfig {
                field: "status".to_owned(),
                prefix: "open".to_owned(),
            }),
        }),
        TargetKind::ReplicationFanout(FanoutTargetConfig {
            journal: JournalConfig {
                max_entries: 5_000,
                max_age: Duration::from_secs(7_200),
            },
            snapshot: FanoutSnapshotConfig {
                interval: Duration::from_secs(300),
                retention: FanoutRetentionConfig {
                    keep_count: 5,
                    max_age: Duration::from_secs(3_600),
                },
            },
            max_clients: 500,
            client_buffer: ClientBufferConfig {
                max_size: 1_000,
                policy: ClientBufferPolicy::SlowDown,
            },
            heartbeat_interval: Duration::from_secs(2),
            archive: Some(FanoutArchiveConfig {
                store: StoreKind::Local,
                store_config: location(),
                format: strings(&["protobuf"]),
                key_prefix: Some("public.orders/".to_owned()),
            }),
        }),
        TargetKind::HttpSync(HttpSyncConfig {
            base_url: "https://sink.internal/laredo".to_owned(),
            batch_size: 100,
            flush_interval: Duration::from_secs(1),
            timeout: Duration::from_millis(3_000),
            retry_count: 6,
            retry_backoff: Duration::from_millis(200),
            auth_header: Some("Bearer sink".to_owned()),
            headers: BTreeMap::from([("X-Tenant".to_owned(), "acme".to_owned())]),
        }),
    ]
}

fn filters() -> Vec<FilterConfig> {
    vec![
        FilterConfig::FieldEquals {
            field: "region".to_owned(),
            value: json!("eu"),
        },
        FilterConfig::FieldPrefix {
            field: "sku".to_owned(),
            prefix: "A-".to_owned(),
        },
        FilterConfig::FieldRegex {
            field: "email".to_owned(),
            pattern: "^[a-z]+@example\\.com$".to_owned(),
        },
    ]
}

fn transforms() -> Vec<TransformConfig> {
    vec![
        TransformConfig::DropFields {
            fields: strings(&["notes"]),
        },
        TransformConfig::RenameFields {
            mapping: BTreeMap::from([("total".to_owned(), "amount".to_owned())]),
        },
        TransformConfig::AddTimestamp {
            field: "synced_at".to_owned(),
        },
    ]
}

fn target(kind: TargetKind) -> TargetConfig {
    TargetConfig {
        kind,
        buffer: BufferConfig {
            max_size: 500,
            policy: BufferPolicy::DropOldest,
        },
        error_handling: ErrorHandlingConfig {
            max_retries: 2,
            retry_backoff: Duration::from_millis(250),
            retry_backoff_max: Duration::from_millis(4_000),
            on_persistent_failure: ErrorPolicy::StopSource,
            dead_letter: DeadLetterConfig {
                enabled: true,
                store: DeadLetterStoreKind::Local,
                config: location(),
            },
        },
        filters: filters(),
        transforms: transforms(),
    }
}

/// Every field of every struct set, each `type` variant once.
fn every_field() -> LaredoConfig {
    let sources = sources()
        .into_iter()
        .map(|source| {
            let id = match type_index::source(&source) {
                0 => "pg",
                1 => "stream",
                _ => "archive",
            };
            (id.to_owned(), source)
        })
        .collect();
    LaredoConfig {
        insecure: true,
        sources,
        tables: vec![TableConfig {
            source: "pg".to_owned(),
            schema: "public".to_owned(),
            table: "orders".to_owned(),
            targets: target_kinds().into_iter().map(target).collect(),
            ttl: Some(TtlConfig {
                mode: TtlMode::Field,
                field: Some("expires_at".to_owned()),
                check_interval: Some(Duration::from_secs(45)),
            }),
            validation: TableValidationConfig {
                post_baseline_row_count: false,
                periodic_row_count: PeriodicRowCountConfig {
                    enabled: true,
                    interval: Duration::from_secs(1_800),
                },
                on_mismatch: MismatchAction::ReBaseline,
            },
        }],
        snapshot: SnapshotConfig {
            enabled: true,
            store: Some(StoreKind::Local),
            store_config: location(),
            serializer: "jsonl".to_owned(),
            schedule: Some(Duration::from_secs(6 * 3_600)),
            on_shutdown: true,
            retention: SnapshotRetentionConfig {
                keep_count: 3,
                max_age: Some(Duration::from_secs(7 * 86_400)),
            },
            user_meta: serde_json::Map::from_iter([("build".to_owned(), json!(42))]),
            on_restore_mismatch: RestoreMismatch::Reject,
        },
        grpc: GrpcConfig {
            port: 5_001,
            bind: "127.0.0.1".to_owned(),
            tls: TlsConfig {
                enabled: true,
                cert_path: PathBuf::from("/etc/laredo/tls.crt"),
                key_path: PathBuf::from("/etc/laredo/tls.key"),
            },
            auth: GrpcAuthConfig {
                admin_token: Some("admin".to_owned()),
                admin_tokens: strings(&["admin-next"]),
                admin_token_files: vec![PathBuf::from("/run/secrets/admin")],
                read_token: Some("read".to_owned()),
                read_tokens: strings(&["read-next"]),
                read_token_files: vec![PathBuf::from("/run/secrets/read")],
                admin_methods: strings(&["/laredo.v1.LaredoQueryService/"]),
            },
            web: GrpcWebConfig {
                enabled: true,
                cors_allowed_origins: strings(&["https://console.internal"]),
            },
            limits: limits(2_048),
        },
        fanout: FanoutConfig {
            grpc: FanoutGrpcConfig {
                port: 5_002,
                bind: "::".to_owned(),
                limits: limits(20_000),
            },
        },
        health: HealthConfig {
            http_port: 8_081,
            bind: "10.0.0.5".to_owned(),
            readiness_path: "/ready".to_owned(),
            liveness_path: "/live".to_owned(),
            startup_path: "/started".to_owned(),
        },
        observability: ObservabilityConfig {
            metrics: MetricsConfig {
                kind: MetricsKind::Otel,
                port: 9_191,
                bind: "10.0.0.6".to_owned(),
                path: "/prom".to_owned(),
                otel: OtelConfig {
                    exporter: OtelExporter::Otlp,
                    endpoint: Some("http://collector:4317".to_owned()),
                    interval: Duration::from_secs(15),
                },
            },
            logging: LoggingConfig {
                format: LogFormat::Text,
                level: LogLevel::Debug,
            },
        },
        shutdown: ShutdownConfig {
            timeout: Duration::from_secs(90),
            drain_timeout: Duration::from_secs(5),
        },
    }
}

/// The index of each `type` variant, matched without `_`: a new variant does not
/// compile until it is counted here (and then [`every_field`] must set it).
mod type_index {
    use super::{FilterConfig, SourceConfig, TargetKind, TransformConfig};

    pub(super) fn source(source: &SourceConfig) -> usize {
        match source {
            SourceConfig::Postgres(_) => 0,
            SourceConfig::Kinesis(_) => 1,
            SourceConfig::Archive(_) => 2,
        }
    }

    pub(super) fn target(kind: &TargetKind) -> usize {
        match kind {
            TargetKind::IndexedMemory(_) => 0,
            TargetKind::CompiledMemory(_) => 1,
            TargetKind::ReplicationFanout(_) => 2,
            TargetKind::HttpSync(_) => 3,
        }
    }

    pub(super) fn filter(filter: &FilterConfig) -> usize {
        match filter {
            FilterConfig::FieldEquals { .. } => 0,
            FilterConfig::FieldPrefix { .. } => 1,
            FilterConfig::FieldRegex { .. } => 2,
        }
    }

    pub(super) fn transform(transform: &TransformConfig) -> usize {
        match transform {
            TransformConfig::DropFields { .. } => 0,
            TransformConfig::RenameFields { .. } => 1,
            TransformConfig::AddTimestamp { .. } => 2,
        }
    }
}

fn serialized() -> Value {
    serde_json::to_value(every_field()).expect("a configuration serializes")
}

/// The key ids (see [`key_ids`]) that `value` sets, read along `node`.
fn ids_set(node: &Node, value: &Value, id: &str, out: &mut BTreeSet<String>) {
    match node {
        Node::Object(obj) => fields_set(obj.fields, value, id, out),
        Node::Map(item) => {
            for child in value.as_object().into_iter().flat_map(|m| m.values()) {
                ids_set(item, child, id, out);
            }
        }
        Node::List(item) => {
            for child in value.as_array().into_iter().flatten() {
                ids_set(item, child, id, out);
            }
        }
        Node::Tagged(tagged) => {
            fields_set(tagged.common, value, id, out);
            let name = value
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Some(variant) = tagged.variants.iter().find(|v| v.names.contains(&name)) {
                let variant_id = join(id, &variant_id(variant));
                fields_set(variant.fields, value, &variant_id, out);
                out.insert(variant_id);
            }
        }
        Node::Scalar(_) | Node::Any => {}
    }
}

fn fields_set(fields: &[Field], value: &Value, id: &str, out: &mut BTreeSet<String>) {
    for field in fields {
        let names = std::iter::once(field.name).chain(field.aliases.iter().copied());
        for child in names.filter_map(|name| value.get(name)) {
            let field_id = join(id, field.name);
            ids_set(&field.node, child, &field_id, out);
            out.insert(field_id);
        }
    }
}

fn keys_not_set(value: &Value) -> Vec<String> {
    let mut set = BTreeSet::new();
    ids_set(&ROOT, value, "", &mut set);
    key_ids()
        .into_iter()
        .filter(|id| !set.contains(id))
        .collect()
}

#[test]
fn the_fixture_has_every_type_variant() {
    fn assert_all<T>(what: &str, items: &[T], count: usize, index: fn(&T) -> usize) {
        let seen: BTreeSet<usize> = items.iter().map(index).collect();
        assert_eq!(seen.len(), count, "every_field misses a {what} type");
    }
    assert_all("source", &sources(), 3, type_index::source);
    assert_all("target", &target_kinds(), 4, type_index::target);
    assert_all("filter", &filters(), 3, type_index::filter);
    assert_all("transform", &transforms(), 3, type_index::transform);
}

#[test]
fn the_schema_accepts_every_key_the_structs_write() {
    let mut value = serialized();
    let mut errors = Vec::new();
    check(&ROOT, &mut value, &KeyPath::root(), &mut errors);
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        Vec::<String>::new(),
        "the typed structs write keys the schema rejects: add them to the schema"
    );
}

#[test]
fn the_structs_have_every_key_of_the_schema() {
    assert_eq!(
        keys_not_set(&serialized()),
        Vec::<String>::new(),
        "schema keys that no typed struct writes: add the fields (and set them in \
         every_field) or remove the keys"
    );
}

#[test]
fn what_the_schema_accepts_reads_back_into_the_same_structs() {
    let config = LaredoConfig::from_json(serialized()).expect("valid");
    assert_eq!(config, every_field());
}

/// JSON pointers to each enum key the serialized configuration sets, with the values
/// the schema allows there.
fn enum_keys(
    node: &Node,
    value: &Value,
    pointer: &str,
    out: &mut Vec<(String, &'static [&'static str])>,
) {
    let fields = |fields: &'static [Field], out: &mut Vec<(String, &'static [&'static str])>| {
        for field in fields {
            if let Some(child) = value.get(field.name) {
                let pointer = format!("{pointer}/{}", escape(field.name));
                match field.node {
                    Node::Scalar(Kind::Enum(values)) => out.push((pointer, values)),
                    ref node => enum_keys(node, child, &pointer, out),
                }
            }
        }
    };
    match node {
        Node::Object(obj) => fields(obj.fields, out),
        Node::Tagged(tagged) => {
            fields(tagged.common, out);
            let name = value
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Some(variant) = tagged.variants.iter().find(|v| v.names.contains(&name)) {
                fields(variant.fields, out);
            }
        }
        Node::Map(item) => {
            for (key, child) in value.as_object().into_iter().flatten() {
                enum_keys(item, child, &format!("{pointer}/{}", escape(key)), out);
            }
        }
        Node::List(item) => {
            for (idx, child) in value.as_array().into_iter().flatten().enumerate() {
                enum_keys(item, child, &format!("{pointer}/{idx}"), out);
            }
        }
        Node::Scalar(_) | Node::Any => {}
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[test]
fn every_enum_value_of_the_schema_reads_into_the_structs() {
    let value = serialized();
    let mut keys = Vec::new();
    enum_keys(&ROOT, &value, "", &mut keys);
    assert!(keys.len() >= 20, "only {} enum keys", keys.len());
    for (pointer, allowed) in keys {
        for choice in allowed {
            let mut changed = value.clone();
            *changed.pointer_mut(&pointer).expect("the key is set") = json!(choice);
            let config = LaredoConfig::from_json(changed)
                .unwrap_or_else(|errors| panic!("{pointer} = {choice}:\n{errors}"));
            let back = serde_json::to_value(&config).expect("serializes");
            assert_eq!(back.pointer(&pointer), Some(&json!(choice)), "{pointer}");
        }
    }
}

/// Every node with its own `defaults`, with the keys it may have.
fn defaults_and_keys(node: &Node, out: &mut Vec<(Value, BTreeSet<&'static str>)>) {
    let names = |fields: &[Field]| fields.iter().map(|f| f.name).collect::<BTreeSet<_>>();
    match node {
        Node::Object(obj) => {
            if let Some(defaults) = obj.defaults {
                out.push((defaults(), names(obj.fields)));
            }
            for field in obj.fields {
                defaults_and_keys(&field.node, out);
            }
        }
        Node::Tagged(tagged) => {
            for variant in tagged.variants {
                if let Some(defaults) = variant.defaults {
                    out.push((defaults(), names(variant.fields)));
                }
                for field in variant.fields {
                    defaults_and_keys(&field.node, out);
                }
            }
            if let Some(defaults) = tagged.defaults {
                // The common keys, and the default variant's flattened beside them.
                let defaults = defaults();
                let name = defaults
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let mut keys = names(tagged.common);
                keys.insert("type");
                if let Some(variant) = tagged.variants.iter().find(|v| v.names.contains(&name)) {
                    keys.extend(names(variant.fields));
                }
                out.push((defaults, keys));
            }
            for field in tagged.common {
                defaults_and_keys(&field.node, out);
            }
        }
        Node::Map(item) | Node::List(item) => defaults_and_keys(item, out),
        Node::Scalar(_) | Node::Any => {}
    }
}

#[test]
fn defaults_name_the_struct_of_their_node() {
    let mut nodes = Vec::new();
    defaults_and_keys(&ROOT, &mut nodes);
    assert!(
        nodes.len() >= 15,
        "only {} nodes with defaults",
        nodes.len()
    );
    for (defaults, keys) in nodes {
        let object = defaults.as_object().expect("defaults are an object");
        let foreign: Vec<&String> = object
            .keys()
            .filter(|k| !keys.contains(k.as_str()))
            .collect();
        assert!(
            foreign.is_empty(),
            "defaults {defaults} have keys {foreign:?} that the node lacks"
        );
    }
}

/// `tests/data/complete.conf` is what it says: every key of the schema, set. Its
/// `fanout.grpc.limits` sets only some of the keys (the same keys as `grpc.limits`,
/// which it sets in full), so that its tests see the others stay unset.
#[test]
fn complete_conf_sets_every_key() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/complete.conf");
    let tree =
        crate::load::merged_tree(&LoadOptions::new().file(path)).expect("complete.conf loads");
    let missing: Vec<String> = keys_not_set(&tree)
        .into_iter()
        .filter(|id| !id.starts_with("fanout.grpc.limits."))
        .collect();
    assert_eq!(
        missing,
        Vec::<String>::new(),
        "keys complete.conf does not set"
    );
}
