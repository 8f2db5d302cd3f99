//! Text and JSON forms of wire values: enum names, times, sizes, column values, rows
//! and `google.protobuf.Struct`s.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use laredo_proto::laredo::replication::v1 as rpb;
use laredo_proto::laredo::v1 as pb;
use serde_json::{Map, Value as Json, json};

/// Placeholder for a missing value in tables.
pub(crate) const NONE: &str = "-";

/// The enum value's proto name without its `PREFIX_`, or `UNKNOWN(n)`.
fn enum_text(name: Option<&str>, prefix: &str, value: i32) -> String {
    match name {
        Some(name) => name.strip_prefix(prefix).unwrap_or(name).to_string(),
        None => format!("UNKNOWN({value})"),
    }
}

/// `STREAMING`, `ERROR`, ... of a service state.
pub(crate) fn service_state(value: i32) -> String {
    let name = pb::ServiceState::try_from(value).ok();
    enum_text(
        name.as_ref().map(|s| s.as_str_name()),
        "SERVICE_STATE_",
        value,
    )
}

/// `STREAMING`, `PAUSED`, ... of a pipeline state.
pub(crate) fn pipeline_state(value: i32) -> String {
    let name = pb::PipelineState::try_from(value).ok();
    enum_text(
        name.as_ref().map(|s| s.as_str_name()),
        "PIPELINE_STATE_",
        value,
    )
}

/// `STREAMING`, `RECONNECTING`, ... of a source state.
pub(crate) fn source_state(value: i32) -> String {
    let name = pb::SourceState::try_from(value).ok();
    enum_text(
        name.as_ref().map(|s| s.as_str_name()),
        "SOURCE_STATE_",
        value,
    )
}

/// `TOTAL_ORDER`, ... of an ordering guarantee.
pub(crate) fn ordering(value: i32) -> String {
    let name = pb::OrderingGuarantee::try_from(value).ok();
    enum_text(
        name.as_ref().map(|s| s.as_str_name()),
        "ORDERING_GUARANTEE_",
        value,
    )
}

/// `INSERT`, `UPDATE`, `DELETE`, `TRUNCATE`.
pub(crate) fn action(value: i32) -> String {
    let name = pb::ChangeAction::try_from(value).ok();
    enum_text(
        name.as_ref().map(|s| s.as_str_name()),
        "CHANGE_ACTION_",
        value,
    )
}

/// `RUNNING`, `COMPLETED`, ... of a replay.
pub(crate) fn replay_state(value: i32) -> String {
    let name = pb::ReplayState::try_from(value).ok();
    enum_text(
        name.as_ref().map(|s| s.as_str_name()),
        "REPLAY_STATE_",
        value,
    )
}

/// `LIVE`, `CATCHING_UP`, ... of a replication client.
pub(crate) fn client_state(value: i32) -> String {
    let name = rpb::ClientState::try_from(value).ok();
    enum_text(
        name.as_ref().map(|s| s.as_str_name()),
        "CLIENT_STATE_",
        value,
    )
}

/// `FULL_SNAPSHOT`, `DELTA`, ... of a replication stream.
pub(crate) fn sync_mode(value: i32) -> String {
    let name = rpb::SyncMode::try_from(value).ok();
    enum_text(name.as_ref().map(|s| s.as_str_name()), "SYNC_MODE_", value)
}

/// A timestamp as `SystemTime`.
pub(crate) fn system_time(ts: &prost_types::Timestamp) -> Option<SystemTime> {
    SystemTime::try_from(*ts).ok()
}

/// ISO 8601 UTC with second precision (`2025-01-02T03:04:05Z`), or `-`.
pub(crate) fn timestamp(ts: Option<&prost_types::Timestamp>) -> String {
    match ts {
        Some(ts) => {
            let micros = ts.seconds.saturating_mul(1_000_000);
            laredo_core::Value::TimestampTz(micros).to_string()
        }
        None => NONE.to_string(),
    }
}

/// ISO 8601 UTC for JSON, or null.
pub(crate) fn timestamp_json(ts: Option<&prost_types::Timestamp>) -> Json {
    match ts {
        Some(ts) => {
            let micros = ts
                .seconds
                .saturating_mul(1_000_000)
                .saturating_add(i64::from(ts.nanos / 1000));
            Json::String(laredo_core::Value::TimestampTz(micros).to_string())
        }
        None => Json::Null,
    }
}

/// `HH:MM:SS` (UTC) of a timestamp.
pub(crate) fn clock(ts: Option<&prost_types::Timestamp>) -> String {
    let seconds = match ts {
        Some(ts) => ts.seconds,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
            .unwrap_or(0),
    };
    let of_day = seconds.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// `1h 2m 3s`, `4m 0s`, `5s`, `250ms`.
pub(crate) fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.subsec_millis());
    }
    let (days, hours, minutes, seconds) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if days > 0 {
        format!("{days}d {hours}h {minutes}m")
    } else if hours > 0 {
        format!("{hours}h {minutes}m {seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m {seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// A protobuf duration as text, or `-`.
pub(crate) fn proto_duration(d: Option<&prost_types::Duration>) -> String {
    d.and_then(|d| Duration::try_from(*d).ok())
        .map_or_else(|| NONE.to_string(), duration)
}

/// Time from `ts` to `now` (`5m 3s ago`), or `-`.
pub(crate) fn age(ts: Option<&prost_types::Timestamp>, now: SystemTime) -> String {
    match ts.and_then(system_time) {
        Some(at) => match now.duration_since(at) {
            Ok(d) => format!("{} ago", duration(d)),
            Err(_) => "just now".to_string(),
        },
        None => NONE.to_string(),
    }
}

/// `512 B`, `1.5 KiB`, `3.2 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    #[expect(clippy::cast_precision_loss, reason = "a display rounded to 0.1")]
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A column value as text: the laredo canonical form, `NULL` for null.
pub(crate) fn value(v: &pb::Value) -> String {
    match laredo_core::Value::try_from(v) {
        Ok(laredo_core::Value::Null) => "NULL".to_string(),
        Ok(v) => v.to_string(),
        Err(e) => format!("<invalid: {e}>"),
    }
}

/// A column value as JSON (numbers as numbers, numeric as a string, times as ISO 8601).
pub(crate) fn value_json(v: &pb::Value) -> Json {
    match laredo_core::Value::try_from(v) {
        Ok(v) => v.to_json(),
        Err(e) => json!({ "invalid": e.to_string() }),
    }
}

/// A row as `(column, text)` pairs in column order.
pub(crate) fn row_cells(row: &pb::Row) -> Vec<(String, String)> {
    row.columns
        .iter()
        .zip(&row.values)
        .map(|(c, v)| (c.clone(), value(v)))
        .collect()
}

/// A row as a JSON object.
pub(crate) fn row_json(row: &pb::Row) -> Json {
    let mut map = Map::new();
    for (column, v) in row.columns.iter().zip(&row.values) {
        map.insert(column.clone(), value_json(v));
    }
    Json::Object(map)
}

/// An optional row as JSON (null when unset).
pub(crate) fn opt_row_json(row: Option<&pb::Row>) -> Json {
    row.map_or(Json::Null, row_json)
}

/// A row as `column=value` pairs on one line.
pub(crate) fn row_inline(row: &pb::Row) -> String {
    row_cells(row)
        .into_iter()
        .map(|(c, v)| format!("{c}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A `google.protobuf.Struct` as JSON.
pub(crate) fn struct_json(s: &prost_types::Struct) -> Json {
    Json::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), proto_value_json(v)))
            .collect(),
    )
}

fn proto_value_json(v: &prost_types::Value) -> Json {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number)
        }
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::StructValue(s)) => struct_json(s),
        Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(proto_value_json).collect()),
    }
}

/// Flattened `key: value` lines of a JSON object (nested keys joined with `.`).
pub(crate) fn flatten(prefix: &str, value: &Json, out: &mut Vec<(String, String)>) {
    match value {
        Json::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Json::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// `key: value` lines with the keys padded to one width.
pub(crate) fn key_values(pairs: &[(String, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let pad = width - k.chars().count();
        out.push_str(k);
        out.push(':');
        out.push_str(&" ".repeat(pad + 1));
        out.push_str(v);
        out.push('\n');
    }
    out
}

/// `yes` / `no`.
pub(crate) fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// `schema.table`.
pub(crate) fn table_name(schema: &str, table: &str) -> String {
    format!("{schema}.{table}")
}

/// Splits `schema.table`; a bare name is in `public`.
pub(crate) fn split_table(name: &str) -> (String, String) {
    match name.split_once('.') {
        Some((schema, table)) => (schema.to_string(), table.to_string()),
        None => ("public".to_string(), name.to_string()),
    }
}

/// A pipeline's status as JSON.
pub(crate) fn pipeline_json(p: &pb::PipelineStatus) -> Json {
    json!({
        "pipeline_id": p.pipeline_id,
        "source_id": p.source_id,
        "table": table_name(&p.schema, &p.table),
        "target_type": p.target_type,
        "state": pipeline_state(p.state),
        "ready": p.ready,
        "row_count": p.row_count,
        "inserts_applied": p.inserts_applied,
        "updates_applied": p.updates_applied,
        "deletes_applied": p.deletes_applied,
        "truncates_applied": p.truncates_applied,
        "last_change_at": timestamp_json(p.last_change_at.as_ref()),
        "error_message": p.error_message,
        "buffer_depth": p.buffer_depth,
        "buffer_capacity": p.buffer_capacity,
        "dead_letter_count": p.dead_letter_count,
        "fanout_client_count": p.fanout_client_count,
    })
}

/// A source as JSON.
pub(crate) fn source_json(s: &pb::SourceInfo) -> Json {
    json!({
        "source_id": s.source_id,
        "source_type": s.source_type,
        "state": source_state(s.state),
        "supports_resume": s.supports_resume,
        "ordering_guarantee": ordering(s.ordering_guarantee),
        "current_position": s.current_position,
        "acked_position": s.acked_position,
        "lag_bytes": s.lag_bytes,
        "lag_seconds": s.lag_time.and_then(|d| Duration::try_from(d).ok()).map(|d| d.as_secs_f64()),
        "details": s.details.as_ref().map_or(Json::Null, struct_json),
    })
}

/// An index as JSON.
pub(crate) fn index_json(i: &pb::IndexInfo) -> Json {
    json!({
        "name": i.name,
        "fields": i.fields,
        "unique": i.unique,
        "entry_count": i.entry_count,
    })
}

/// A column definition as JSON.
pub(crate) fn column_json(c: &pb::ColumnDefinition) -> Json {
    json!({
        "column_name": c.column_name,
        "data_type": c.data_type,
        "not_null": c.not_null,
        "is_primary_key": c.is_primary_key,
        "ordinal_position": c.ordinal_position,
        "primary_key_ordinal": c.primary_key_ordinal,
        "default_value": c.default_value,
    })
}

/// A map of user metadata as JSON.
pub(crate) fn meta_json(meta: &std::collections::HashMap<String, pb::Value>) -> Json {
    Json::Object(
        meta.iter()
            .map(|(k, v)| (k.clone(), value_json(v)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(v: i64) -> pb::Value {
        pb::Value::from(&laredo_core::Value::Int64(v))
    }

    #[test]
    fn enum_names_lose_their_prefix() {
        assert_eq!(
            pipeline_state(pb::PipelineState::Streaming as i32),
            "STREAMING"
        );
        assert_eq!(service_state(pb::ServiceState::Paused as i32), "PAUSED");
        assert_eq!(action(pb::ChangeAction::Insert as i32), "INSERT");
        assert_eq!(pipeline_state(99), "UNKNOWN(99)");
    }

    #[test]
    fn times_and_durations_print_for_people() {
        let ts = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 500_000_000,
        };
        assert_eq!(timestamp(Some(&ts)), "2023-11-14T22:13:20Z");
        assert_eq!(timestamp_json(Some(&ts)), json!("2023-11-14T22:13:20.5Z"));
        assert_eq!(clock(Some(&ts)), "22:13:20");
        assert_eq!(timestamp(None), "-");
        assert_eq!(duration(Duration::from_secs(3723)), "1h 2m 3s");
        assert_eq!(duration(Duration::from_secs(61)), "1m 1s");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        let now = SystemTime::try_from(ts).unwrap() + Duration::from_secs(5);
        assert_eq!(age(Some(&ts), now), "5s ago");
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn rows_print_as_text_and_json() {
        let row = pb::Row {
            columns: vec!["id".into(), "name".into(), "gone".into()],
            values: vec![
                int(7),
                pb::Value::from(&laredo_core::Value::text("ann")),
                pb::Value::from(&laredo_core::Value::Null),
            ],
        };
        assert_eq!(row_inline(&row), "id=7 name=ann gone=NULL");
        assert_eq!(
            row_json(&row),
            json!({"id": 7, "name": "ann", "gone": null})
        );
        assert_eq!(
            value(&pb::Value { kind: None }),
            "<invalid: value has no kind set>"
        );
    }

    #[test]
    fn key_value_lines_align() {
        let pairs = vec![
            ("id".to_string(), "1".to_string()),
            ("email".into(), "a@x".into()),
        ];
        assert_eq!(key_values(&pairs), "id:    1\nemail: a@x\n");
    }

    #[test]
    fn structs_flatten_to_dotted_keys() {
        let mut out = Vec::new();
        flatten(
            "",
            &json!({"slot": {"name": "s1", "active": true}}),
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                ("slot.active".to_string(), "true".to_string()),
                ("slot.name".to_string(), "s1".to_string())
            ]
        );
    }

    #[test]
    fn table_names_default_to_public() {
        assert_eq!(split_table("app.users"), ("app".into(), "users".into()));
        assert_eq!(split_table("users"), ("public".into(), "users".into()));
    }
}
