//! Rules that involve more than one key: references, port collisions, keys required by
//! another key's value. Each runs after the keys of its object were checked and
//! coerced, reads only values of the expected type, and falls back to the documented
//! defaults for keys that are not set.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::duration::parse_duration;
use crate::error::{ConfigError, KeyPath};
use crate::server::{
    DEFAULT_FANOUT_PORT, DEFAULT_GRPC_PORT, DEFAULT_HEALTH_PORT, DEFAULT_METRICS_PORT,
};

type Obj = Map<String, Value>;

fn get<'a>(map: &'a Obj, dotted: &str) -> Option<&'a Value> {
    let mut current = map;
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        let value = current.get(part)?;
        if parts.peek().is_none() {
            return Some(value);
        }
        current = value.as_object()?;
    }
    None
}

fn str_at<'a>(map: &'a Obj, dotted: &str) -> Option<&'a str> {
    get(map, dotted).and_then(Value::as_str)
}

fn bool_at(map: &Obj, dotted: &str) -> bool {
    get(map, dotted).and_then(Value::as_bool).unwrap_or(false)
}

fn duration_at(map: &Obj, key: &str, default: Duration) -> Option<Duration> {
    match map.get(key) {
        None => Some(default),
        Some(Value::Number(n)) => n.as_u64().map(Duration::from_millis),
        Some(Value::String(s)) => parse_duration(s).ok(),
        Some(_) => None,
    }
}

fn u64_at(map: &Obj, key: &str, default: u64) -> Option<u64> {
    match map.get(key) {
        None => Some(default),
        Some(v) => v.as_u64(),
    }
}

/// At least one source and table, table → source references, distinct ports.
pub(crate) fn root(map: &Obj, _path: &KeyPath, errors: &mut Vec<ConfigError>) {
    let sources = map.get("sources").and_then(Value::as_object);
    if sources.is_none_or(Map::is_empty) && !matches!(map.get("sources"), Some(v) if !v.is_object())
    {
        errors.push(ConfigError::at("", "at least one source is required"));
    }
    match map.get("tables") {
        Some(Value::Array(tables)) if !tables.is_empty() => {
            for (idx, table) in tables.iter().enumerate() {
                let Some(source) = table.get("source").and_then(Value::as_str) else {
                    continue;
                };
                if source.trim().is_empty() {
                    continue;
                }
                if !sources.is_some_and(|s| s.contains_key(source)) {
                    errors.push(ConfigError::at(
                        KeyPath::root().key("tables").index(idx).as_str(),
                        format!("references unknown source {source:?}"),
                    ));
                }
            }
        }
        Some(Value::Array(_)) | None => {
            errors.push(ConfigError::at("", "at least one table is required"));
        }
        Some(_) => {}
    }
    let ports = [
        ("grpc.port", DEFAULT_GRPC_PORT),
        ("fanout.grpc.port", DEFAULT_FANOUT_PORT),
        ("health.http_port", DEFAULT_HEALTH_PORT),
        ("observability.metrics.port", DEFAULT_METRICS_PORT),
    ];
    let mut seen: Vec<(&str, u64)> = Vec::new();
    for (key, default) in ports {
        let port = match get(map, key) {
            None => u64::from(default),
            Some(v) => match v.as_u64() {
                Some(p) => p,
                None => continue,
            },
        };
        // Port 0 asks the OS for a free port, so it never collides.
        if port == 0 {
            continue;
        }
        if let Some((earlier, _)) = seen.iter().find(|(_, p)| *p == port) {
            errors.push(ConfigError::at(
                "",
                format!("{key} ({port}) must differ from {earlier}"),
            ));
        }
        seen.push((key, port));
    }
    for key in [
        "grpc.bind",
        "fanout.grpc.bind",
        "health.bind",
        "observability.metrics.bind",
    ] {
        if let Some(bind) = get(map, key).and_then(Value::as_str)
            && bind.parse::<std::net::IpAddr>().is_err()
        {
            errors.push(ConfigError::at(
                key,
                format!(
                    "{bind:?} is not an IP address (\"0.0.0.0\" for every interface, \
                     \"127.0.0.1\" for loopback, \"::\")"
                ),
            ));
        }
    }
}

/// `tables[N]`: at least one target.
pub(crate) fn table(map: &Obj, path: &KeyPath, errors: &mut Vec<ConfigError>) {
    match map.get("targets") {
        Some(Value::Array(targets)) if !targets.is_empty() => {}
        Some(Value::Array(_)) | None => {
            errors.push(ConfigError::at(
                path.as_str(),
                "at least one target is required",
            ));
        }
        Some(_) => {}
    }
}

/// `ttl`: `field` mode names its column.
pub(crate) fn ttl(map: &Obj, path: &KeyPath, errors: &mut Vec<ConfigError>) {
    let mode = str_at(map, "mode").unwrap_or("field");
    if mode == "field" && !map.contains_key("field") {
        errors.push(ConfigError::at(
            path.as_str(),
            "field is required when mode is field",
        ));
    }
}

/// `reconnect`: the cap is not below the first delay.
pub(crate) fn reconnect(map: &Obj, path: &KeyPath, errors: &mut Vec<ConfigError>) {
    let initial = duration_at(map, "initial_backoff", Duration::from_secs(1));
    let max = duration_at(map, "max_backoff", Duration::from_secs(60));
    if let (Some(initial), Some(max)) = (initial, max)
        && max < initial
    {
        errors.push(ConfigError::at(
            path.key("max_backoff").as_str(),
            format!(
                "must be at least initial_backoff ({})",
                crate::duration::format_duration(initial)
            ),
        ));
    }
}

/// `error_handling`: the backoff cap is not below the first delay.
pub(crate) fn error_handling(map: &Obj, path: &KeyPath, errors: &mut Vec<ConfigError>) {
    let first = u64_at(map, "retry_backoff_ms", 1_000);
    let max = u64_at(map, "retry_backoff_max_ms", 30_000);
    if let (Some(first), Some(max)) = (first, max)
        && max < first
    {
        errors.push(ConfigError::at(
            path.key("retry_backoff_max_ms").as_str(),
            format!("must be at least retry_backoff_ms ({first})"),
        ));
    }
}

/// A store location has what its kind needs: `path` for local, `bucket` for s3.
fn location(
    kind: Option<&str>,
    location: Option<&Value>,
    location_path: &KeyPath,
    errors: &mut Vec<ConfigError>,
) {
    let needed = match kind {
        Some("local") => "path",
        Some("s3") => "bucket",
        _ => return,
    };
    let present = location.and_then(Value::as_object).is_some_and(|l| {
        l.contains_key(needed) || (needed == "path" && l.contains_key("directory"))
    });
    if !present {
        errors.push(ConfigError::at(
            location_path.as_str(),
            format!(
                "{needed} is required for store {}",
                kind.unwrap_or_default()
            ),
        ));
    }
}

/// `error_handling.dead_letter`.
pub(crate) fn dead_letter(map: &Obj, path: &KeyPath, errors: &mut Vec<ConfigError>) {
    if bool_at(map, "enabled") {
        location(
            str_at(map, "store"),
            map.get("config"),
            &path.key("config"),
            errors,
        );
    }
}

/// `snapshot`: a store when enabled, and a location for it.
pub(crate) fn snapshot(map: &Obj, path: &KeyPath, errors: &mut Vec<ConfigError>) {
    if !bool_at(map, "enabled") {
        return;
    }
    let Some(store) = map.get("store") else {
        errors.push(ConfigError::at(
            path.as_str(),
            "store is required when enabled is true",
        ));
        return;
    };
    let (key, location_value) = match map.get("store_config") {
        Some(v) => ("store_config", Some(v)),
        None => ("config", map.get("config")),
    };
    location(store.as_str(), location_value, &path.key(key), errors);
}

/// `sources.<id>` of type archive.
pub(crate) fn archive_source(map: &Obj, path: &KeyPath, errors: &mut Vec<ConfigError>) {
    let group = bool_at(map, "group");
    let Some(store) = map.get("store") else {
        errors.push(ConfigError::at(
            path.as_str(),
            "archive source requires a store (store, store_config, key_prefix)",
        ));
        return;
    };
    location(
        store.as_str(),
        map.get("store_config"),
        &path.key("store_config"),
        errors,
    );
    if !group && !map.contains_key("key_prefix") {
        errors.push(ConfigError::at(
            path.as_str(),
            "key_prefix is required unless group is true",
        ));
    }
}

/// `sources.<id>` of type s3-kinesis: URI schemes.
pub(crate) fn kinesis_source(map: &Obj, path: &KeyPath, errors: &mut Vec<ConfigError>) {
    for (key, scheme) in [
        ("baseline_bucket", "s3://"),
        ("checkpoint_table", "dynamodb://"),
    ] {
        if let Some(value) = str_at(map, key)
            && !value.is_empty()
            && !value.starts_with(scheme)
        {
            errors.push(ConfigError::at(
                path.key(key).as_str(),
                format!("expected a {scheme}… URI, found {value:?}"),
            ));
        }
    }
}

/// Fan-out `archive`: a location for its store.
pub(crate) fn fanout_archive(map: &Obj, path: &KeyPath, errors: &mut Vec<ConfigError>) {
    location(
        str_at(map, "store"),
        map.get("store_config"),
        &path.key("store_config"),
        errors,
    );
}

/// `http-sync`: an http(s) URL.
pub(crate) fn http_sync(map: &Obj, path: &KeyPath, errors: &mut Vec<ConfigError>) {
    if let Some(url) = str_at(map, "base_url")
        && !url.trim().is_empty()
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        errors.push(ConfigError::at(
            path.key("base_url").as_str(),
            format!("expected an http:// or https:// URL, found {url:?}"),
        ));
    }
}

/// `indexed-memory`: index names are unique.
pub(crate) fn index_names(map: &Obj, path: &KeyPath, errors: &mut Vec<ConfigError>) {
    let Some(Value::Array(indexes)) = map.get("additional_indexes") else {
        return;
    };
    let mut seen = Vec::new();
    for (idx, index) in indexes.iter().enumerate() {
        if let Some(name) = index.get("name").and_then(Value::as_str) {
            if seen.contains(&name) {
                errors.push(ConfigError::at(
                    path.key("additional_indexes")
                        .index(idx)
                        .key("name")
                        .as_str(),
                    format!("duplicate index name {name:?}"),
                ));
            }
            seen.push(name);
        }
    }
}

/// `rename-fields`: at least one mapping.
pub(crate) fn rename_mapping(map: &Obj, path: &KeyPath, errors: &mut Vec<ConfigError>) {
    if map
        .get("mapping")
        .and_then(Value::as_object)
        .is_some_and(Map::is_empty)
    {
        errors.push(ConfigError::at(
            path.key("mapping").as_str(),
            "must not be empty",
        ));
    }
}

/// `grpc.tls`: both files when enabled.
pub(crate) fn tls(map: &Obj, path: &KeyPath, errors: &mut Vec<ConfigError>) {
    if !bool_at(map, "enabled") {
        return;
    }
    for key in ["cert_path", "key_path"] {
        if str_at(map, key).is_none_or(|p| p.trim().is_empty()) {
            errors.push(ConfigError::at(
                path.as_str(),
                format!("{key} is required when enabled is true"),
            ));
        }
    }
}

/// `observability.metrics.otel`: an endpoint for OTLP.
pub(crate) fn otel(map: &Obj, path: &KeyPath, errors: &mut Vec<ConfigError>) {
    if str_at(map, "exporter") == Some("otlp") && !map.contains_key("endpoint") {
        errors.push(ConfigError::at(
            path.as_str(),
            "endpoint is required when exporter is otlp",
        ));
    }
}

/// `health.*_path`: absolute paths.
pub(crate) fn health_paths(map: &Obj, path: &KeyPath, errors: &mut Vec<ConfigError>) {
    for key in ["readiness_path", "liveness_path", "startup_path"] {
        if let Some(value) = str_at(map, key)
            && !value.is_empty()
            && !value.starts_with('/')
        {
            errors.push(ConfigError::at(
                path.key(key).as_str(),
                format!("must start with \"/\", found {value:?}"),
            ));
        }
    }
}
