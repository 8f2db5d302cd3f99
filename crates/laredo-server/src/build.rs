//! From a checked [`LaredoConfig`] to an [`Engine`]: sources, targets, pipelines,
//! filters, transforms, dead letters and snapshots.
//!
//! `laredo-config` has already validated shapes, ranges and references; this module
//! only maps, and refuses what this build does not implement ([`unsupported`]), so
//! every refusal is known before anything connects to a database. Errors name their
//! key path like the configuration's own.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use laredo_config::{
    BufferPolicy, DeadLetterStoreKind, ErrorPolicy, FilterConfig, LaredoConfig, MetricsKind,
    MismatchAction, PgSourceConfig as PgConfig, RestoreMismatch, SlotMode, SourceConfig, StoreKind,
    TableConfig, TargetConfig, TargetKind, TransformConfig, TtlMode,
};
use laredo_core::{
    Engine, EngineObserver, IndexDefinition, PipelineFilter, PipelineOptions, PipelineTransform,
    SnapshotOptions, SyncTarget, TableIdentifier, ValidationAction, Value,
};
use laredo_deadletter::{LocalDeadLetterStore, MemoryDeadLetterStore};
use laredo_filter::{FieldEquals, FieldPrefix, FieldRegex};
use laredo_snapshot_local::LocalSnapshotStore;
use laredo_source_pg::{PgSource, PublicationConfig, ReconnectPolicy};
use laredo_target_fanout::{ClientBufferPolicy, FanoutConfig, FanoutTarget};
use laredo_target_memory::IndexedTarget;
use laredo_transform::{AddTimestamp, DropFields, RenameFields};

/// Configured features this build has no implementation for, one message per key
/// path, in configuration order. Empty when everything can run.
pub(crate) fn unsupported(config: &LaredoConfig) -> Vec<String> {
    let mut errors = Vec::new();
    let not_here =
        |path: String, what: &str| format!("{path}: {what} is not available in this build");
    for (id, source) in &config.sources {
        if !matches!(source, SourceConfig::Postgres(_)) {
            errors.push(not_here(
                format!("sources.{id}"),
                &format!("type {}", source.type_name()),
            ));
        }
    }
    for (t, table) in config.tables.iter().enumerate() {
        if let Some(ttl) = &table.ttl
            && ttl.mode == TtlMode::Computed
        {
            errors.push(format!(
                "tables[{t}].ttl.mode: computed TTL needs a function registered by an embedding application; not available in laredo-server"
            ));
        }
        for (g, target) in table.targets.iter().enumerate() {
            let path = format!("tables[{t}].targets[{g}]");
            match &target.kind {
                TargetKind::IndexedMemory(_) => {}
                TargetKind::ReplicationFanout(fanout) => {
                    if fanout.archive.is_some() {
                        errors.push(not_here(format!("{path}.archive"), "the fan-out archive"));
                    }
                }
                other => errors.push(not_here(
                    format!("{path}.type"),
                    &format!("type {}", other.type_name()),
                )),
            }
            let dead_letter = &target.error_handling.dead_letter;
            if dead_letter.enabled && dead_letter.store == DeadLetterStoreKind::S3 {
                errors.push(not_here(
                    format!("{path}.error_handling.dead_letter.store"),
                    "store s3",
                ));
            }
        }
    }
    errors.extend(dead_letter_conflicts(config));
    let snapshot = &config.snapshot;
    if snapshot.enabled {
        if snapshot.store == Some(StoreKind::S3) {
            errors.push(not_here("snapshot.store".into(), "store s3"));
        }
        if snapshot.retention.max_age.is_some() {
            errors.push(not_here(
                "snapshot.retention.max_age".into(),
                "pruning engine snapshots by age",
            ));
        }
    }
    if config.observability.metrics.kind == MetricsKind::Otel {
        errors.push(not_here("observability.metrics.type".into(), "type otel"));
    }
    errors
}

/// The engine keeps one dead letter store for all pipelines: every target that enables
/// dead letters must name the same store.
fn dead_letter_conflicts(config: &LaredoConfig) -> Vec<String> {
    let mut first: Option<(String, DeadLetterStoreKind, Option<PathBuf>)> = None;
    let mut errors = Vec::new();
    for (t, table) in config.tables.iter().enumerate() {
        for (g, target) in table.targets.iter().enumerate() {
            let dl = &target.error_handling.dead_letter;
            if !dl.enabled {
                continue;
            }
            let path = format!("tables[{t}].targets[{g}].error_handling.dead_letter");
            let this = (dl.store, dl.config.path.clone());
            match &first {
                None => first = Some((path, this.0, this.1)),
                Some((first_path, kind, dir)) if (*kind, dir.clone()) != this => {
                    errors.push(format!(
                        "{path}: laredo-server has one dead letter store for every pipeline; this one differs from {first_path}"
                    ));
                }
                Some(_) => {}
            }
        }
    }
    errors
}

/// Builds the engine. `observer` receives the engine's events (and the fan-out
/// targets' client events).
///
/// # Errors
/// Every problem, one line each with its key path (the engine builder's own checks
/// included). Nothing connects to a database here.
pub(crate) fn build_engine(
    config: &LaredoConfig,
    observer: Arc<dyn EngineObserver>,
) -> Result<Engine, Vec<String>> {
    let mut errors = unsupported(config);
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut builder = Engine::builder()
        .observer(Arc::clone(&observer))
        .shutdown_timeout(config.shutdown.timeout);
    for (id, source) in &config.sources {
        let SourceConfig::Postgres(pg) = source else {
            continue; // refused by `unsupported`
        };
        match pg_source(id, pg) {
            Ok(source) => builder = builder.source(id.clone(), Arc::new(source)),
            Err(error) => errors.push(error),
        }
    }
    let mut ids: HashMap<String, usize> = HashMap::new();
    for (t, table) in config.tables.iter().enumerate() {
        let table_id = TableIdentifier::new(&table.schema, &table.table);
        for (g, target) in table.targets.iter().enumerate() {
            let path = format!("tables[{t}].targets[{g}]");
            let base = format!("{}:{}:{}", table.source, table_id, target.kind.type_name());
            // Two targets of one type on one table need distinct pipeline ids.
            let seen = ids.entry(base.clone()).or_default();
            let pipeline_id = if *seen == 0 {
                base
            } else {
                format!("{base}:{g}")
            };
            *seen += 1;
            let Some(sync_target) = make_target(target, &pipeline_id, &observer) else {
                continue; // refused by `unsupported`
            };
            match pipeline_options(table, target, &path, &pipeline_id) {
                Ok(options) => {
                    builder = builder.pipeline(
                        table.source.clone(),
                        table_id.clone(),
                        sync_target,
                        options,
                    );
                }
                Err(mut more) => errors.append(&mut more),
            }
        }
    }
    if let Some(store) = dead_letter_store(config) {
        builder = builder.dead_letter_store(store);
    }
    if let Some(options) = snapshot_options(config) {
        builder = builder.snapshots(options);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    builder
        .build()
        .map_err(|e| e.errors().iter().map(ToString::to_string).collect())
}

pub(crate) fn pg_source(id: &str, pg: &PgConfig) -> Result<PgSource, String> {
    let path = format!("sources.{id}");
    let mut publication =
        PublicationConfig::new(pg.publication_name()).create_missing(pg.publication.create);
    publication.adopt_existing = pg.publication.adopt_existing;
    publication.publish = pg
        .publication
        .publish
        .split(',')
        .map(|op| op.trim().to_owned())
        .filter(|op| !op.is_empty())
        .collect();
    for (name, table) in &pg.publication.tables {
        let table_id: TableIdentifier = name.parse().map_err(|_| {
            format!("{path}.publication.tables.\"{name}\": expected a \"schema.table\" name")
        })?;
        if let Some(filter) = &table.row_filter {
            publication
                .row_filters
                .insert(table_id.clone(), filter.clone());
        }
        if let Some(columns) = &table.columns {
            publication.column_lists.insert(table_id, columns.clone());
        }
    }
    let reconnect = ReconnectPolicy::new(
        pg.reconnect.max_attempts,
        pg.reconnect.initial_backoff,
        pg.reconnect.max_backoff,
        pg.reconnect.backoff_multiplier,
    );
    let slot_mode = match pg.slot_mode {
        SlotMode::Stateful => laredo_source_pg::SlotMode::Stateful,
        _ => laredo_source_pg::SlotMode::Ephemeral,
    };
    let config = laredo_source_pg::PgSourceConfig::new(pg.connection.clone())
        .slot_mode(slot_mode)
        .slot_name(pg.slot_name.clone())
        .always_baseline(pg.always_baseline)
        .publication(publication)
        .reconnect(reconnect)
        .max_protocol_failures(pg.max_protocol_failures);
    PgSource::new(config).map_err(|e| format!("{path}.connection: {e}"))
}

fn make_target(
    target: &TargetConfig,
    pipeline_id: &str,
    observer: &Arc<dyn EngineObserver>,
) -> Option<Arc<dyn SyncTarget>> {
    match &target.kind {
        TargetKind::IndexedMemory(indexed) => {
            let mut builder = IndexedTarget::builder().lookup_fields(indexed.lookup_fields.clone());
            for index in &indexed.additional_indexes {
                builder = builder.index(IndexDefinition::new(
                    index.name.clone(),
                    index.fields.clone(),
                    index.unique,
                ));
            }
            Some(builder.build())
        }
        TargetKind::ReplicationFanout(fanout) => {
            let policy = match fanout.client_buffer.policy {
                laredo_config::ClientBufferPolicy::SlowDown => ClientBufferPolicy::SlowDown,
                _ => ClientBufferPolicy::DropDisconnect,
            };
            let config = FanoutConfig::default()
                .journal_max_entries(saturating_usize(fanout.journal.max_entries))
                .journal_max_age(fanout.journal.max_age)
                .snapshot_interval(fanout.snapshot.interval)
                .snapshot_keep_count(saturating_usize(
                    fanout.snapshot.retention.keep_count.into(),
                ))
                .snapshot_max_age(fanout.snapshot.retention.max_age)
                .max_clients(saturating_usize(fanout.max_clients.into()))
                .client_buffer_max_size(saturating_usize(fanout.client_buffer.max_size))
                .client_buffer_policy(policy)
                .heartbeat_interval(fanout.heartbeat_interval);
            Some(
                FanoutTarget::builder()
                    .config(config)
                    .observer(Arc::clone(observer))
                    .pipeline_id(pipeline_id)
                    .build(),
            )
        }
        _ => None,
    }
}

fn saturating_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn pipeline_options(
    table: &TableConfig,
    target: &TargetConfig,
    path: &str,
    pipeline_id: &str,
) -> Result<PipelineOptions, Vec<String>> {
    let handling = &target.error_handling;
    let validation = match table.validation.on_mismatch {
        MismatchAction::ReBaseline => ValidationAction::ReBaseline,
        MismatchAction::Error => ValidationAction::Error,
        _ => ValidationAction::Warn,
    };
    let mut options = PipelineOptions::default()
        .id(pipeline_id)
        .buffer_size(saturating_usize(target.buffer.max_size))
        .buffer_policy(match target.buffer.policy {
            BufferPolicy::DropOldest => laredo_core::BufferPolicy::DropOldest,
            BufferPolicy::Error => laredo_core::BufferPolicy::Error,
            _ => laredo_core::BufferPolicy::Block,
        })
        .error_policy(match handling.on_persistent_failure {
            ErrorPolicy::StopSource => laredo_core::ErrorPolicy::StopSource,
            ErrorPolicy::StopAll => laredo_core::ErrorPolicy::StopAll,
            _ => laredo_core::ErrorPolicy::Isolate,
        })
        .max_retries(handling.max_retries)
        .retry_backoff(handling.retry_backoff, handling.retry_backoff_max)
        .validation_action(validation)
        .post_baseline_validation(table.validation.post_baseline_row_count);
    let periodic = &table.validation.periodic_row_count;
    if periodic.enabled {
        options = options.validation_interval(periodic.interval);
    }
    if let Some(ttl) = &table.ttl {
        if let Some(field) = &ttl.field {
            options = options.ttl_field(field.clone());
        }
        if let Some(interval) = ttl.check_interval {
            options = options.ttl_scan_interval(interval);
        }
    }
    let mut errors = Vec::new();
    for (k, filter) in target.filters.iter().enumerate() {
        match make_filter(filter) {
            Ok(filter) => options = options.filter(filter),
            Err(error) => errors.push(format!("{path}.filters[{k}].pattern: {error}")),
        }
    }
    for transform in &target.transforms {
        options = options.transform(make_transform(transform));
    }
    if errors.is_empty() {
        Ok(options)
    } else {
        Err(errors)
    }
}

fn make_filter(filter: &FilterConfig) -> Result<Arc<dyn PipelineFilter>, String> {
    Ok(match filter {
        FilterConfig::FieldEquals { field, value } => {
            Arc::new(FieldEquals::new(field.clone(), json_value(value)))
        }
        FilterConfig::FieldPrefix { field, prefix } => {
            Arc::new(FieldPrefix::new(field.clone(), prefix.clone()))
        }
        FilterConfig::FieldRegex { field, pattern } => {
            Arc::new(FieldRegex::new(field.clone(), pattern).map_err(|e| e.to_string())?)
        }
        // `FilterConfig` is non-exhaustive; a new kind needs a mapping here.
        other => return Err(format!("unsupported filter {other:?}")),
    })
}

fn make_transform(transform: &TransformConfig) -> Arc<dyn PipelineTransform> {
    match transform {
        TransformConfig::DropFields { fields } => Arc::new(DropFields::new(fields.clone())),
        TransformConfig::RenameFields { mapping } => Arc::new(RenameFields::new(mapping.clone())),
        TransformConfig::AddTimestamp { field } => Arc::new(AddTimestamp::new(field.clone())),
        // `TransformConfig` is non-exhaustive; an unknown kind changes nothing.
        _ => Arc::new(DropFields::new(Vec::<String>::new())),
    }
}

/// A configuration scalar as an engine value: strings as text, integers as int8, other
/// numbers as float8, objects and lists as JSON.
fn json_value(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int64(i),
            None => Value::Float64(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::text(s),
        other => Value::json(other.to_string()),
    }
}

fn dead_letter_store(config: &LaredoConfig) -> Option<Arc<dyn laredo_core::DeadLetterStore>> {
    let dl = config
        .tables
        .iter()
        .flat_map(|t| &t.targets)
        .map(|t| &t.error_handling.dead_letter)
        .find(|dl| dl.enabled)?;
    match (dl.store, &dl.config.path) {
        (DeadLetterStoreKind::Local, Some(path)) => Some(Arc::new(LocalDeadLetterStore::new(path))),
        _ => Some(Arc::new(MemoryDeadLetterStore::new())),
    }
}

fn snapshot_options(config: &LaredoConfig) -> Option<SnapshotOptions> {
    let snapshot = &config.snapshot;
    if !snapshot.enabled || snapshot.store != Some(StoreKind::Local) {
        return None;
    }
    let path = snapshot.store_config.path.clone()?;
    let user_meta: BTreeMap<String, Value> = snapshot
        .user_meta
        .iter()
        .map(|(k, v)| (k.clone(), json_value(v)))
        .collect();
    let mut options = SnapshotOptions::new(Arc::new(LocalSnapshotStore::new(&path)))
        .describe_store("local", path.display().to_string())
        .keep(snapshot.retention.keep_count as usize)
        .on_shutdown(snapshot.on_shutdown)
        .user_meta(user_meta)
        .on_mismatch(match snapshot.on_restore_mismatch {
            RestoreMismatch::Reject => laredo_core::RestoreMismatch::Reject,
            _ => laredo_core::RestoreMismatch::Warn,
        });
    if let Some(schedule) = snapshot.schedule {
        options = options.schedule(schedule);
    }
    Some(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> LaredoConfig {
        LaredoConfig::load(laredo_config::LoadOptions::new().text(text)).unwrap()
    }

    const BASE: &str = r#"
        sources.pg { type = postgresql, connection = "postgres://u@127.0.0.1:1/db" }
        tables = [{ source = pg, schema = public, table = users,
                    targets = [{ type = indexed-memory, lookup_fields = [id] }] }]
    "#;

    #[test]
    fn a_supported_config_has_nothing_unsupported() {
        assert_eq!(unsupported(&config(BASE)), Vec::<String>::new());
    }

    #[test]
    fn unavailable_features_are_named_by_key_path() {
        let text = format!(
            "{BASE}\n{}",
            r#"
            sources.k { type = s3-kinesis, baseline_bucket = "s3://b/", stream_arn = "arn:aws:kinesis:us-east-1:1:stream/s" }
            tables += { source = pg, schema = public, table = orders,
                        targets = [{ type = http-sync, base_url = "http://x" }] }
            snapshot { enabled = true, store = s3, store_config { bucket = b } }
            observability.metrics.type = otel
            "#
        );
        assert_eq!(
            unsupported(&config(&text)),
            vec![
                "sources.k: type s3-kinesis is not available in this build",
                "tables[1].targets[0].type: type http-sync is not available in this build",
                "snapshot.store: store s3 is not available in this build",
                "observability.metrics.type: type otel is not available in this build",
            ]
        );
    }

    #[test]
    fn pipelines_get_distinct_ids_and_the_engine_builds() {
        let text = r#"
            sources.pg { type = postgresql, connection = "postgres://u@127.0.0.1:1/db",
                         publication { tables { "public.users" { where = "id > 0", columns = [id] } } } }
            tables = [{ source = pg, schema = public, table = users, targets = [
                { type = indexed-memory, lookup_fields = [id],
                  filters = [{ type = field-equals, field = team, value = 3 }],
                  transforms = [{ type = drop-fields, fields = [secret] }] },
                { type = indexed-memory, lookup_fields = [name] },
                { type = replication-fanout } ] }]
        "#;
        let engine = build_engine(&config(text), Arc::new(laredo_core::NullObserver)).unwrap();
        let ids: Vec<String> = engine.pipelines().into_iter().map(|p| p.id).collect();
        assert_eq!(
            ids,
            vec![
                "pg:public.users:indexed-memory",
                "pg:public.users:indexed-memory:1",
                "pg:public.users:replication-fanout",
            ]
        );
    }

    #[test]
    fn validation_settings_reach_the_pipeline() {
        let text = r#"
            sources.pg { type = postgresql, connection = "postgres://u@127.0.0.1:1/db" }
            tables = [{ source = pg, schema = public, table = users,
                        validation { post_baseline_row_count = false, on_mismatch = error,
                                     periodic_row_count { enabled = true, interval = 5m } },
                        targets = [{ type = indexed-memory, lookup_fields = [id] }] }]
        "#;
        let config = config(text);
        assert_eq!(unsupported(&config), Vec::<String>::new());
        let table = &config.tables[0];
        let options =
            pipeline_options(table, &table.targets[0], "tables[0].targets[0]", "p").unwrap();
        let debug = format!("{options:?}");
        for expected in [
            "validation_action: Error",
            "post_baseline_validation: false",
            "validation_interval: Some(300s)",
        ] {
            assert!(debug.contains(expected), "{expected} in {debug}");
        }
    }

    #[test]
    fn dead_letter_stores_must_agree() {
        let text = r#"
            sources.pg { type = postgresql, connection = "postgres://u@127.0.0.1:1/db" }
            tables = [{ source = pg, schema = public, table = users, targets = [
                { type = indexed-memory, lookup_fields = [id], error_handling.dead_letter { enabled = true } },
                { type = indexed-memory, lookup_fields = [id],
                  error_handling.dead_letter { enabled = true, store = local, config.path = /tmp/dl } } ] }]
        "#;
        assert_eq!(
            unsupported(&config(text)),
            vec![
                "tables[0].targets[1].error_handling.dead_letter: laredo-server has one dead letter store for every pipeline; this one differs from tables[0].targets[0].error_handling.dead_letter"
            ]
        );
    }
}
