//! Read-only OAM commands: `status`, `source`, `pipelines`, `tables`, `schema`, `ready`.

use std::process::ExitCode;
use std::time::SystemTime;

use laredo_proto::laredo::v1 as pb;
use serde_json::{Value as Json, json};

use crate::cli::OutputFormat;
use crate::commands::print_json;
use crate::connection::Connection;
use crate::format::{self, NONE, table_name};
use crate::table::Table;

/// `laredo status [--table s.t]`.
pub(crate) async fn status(
    conn: &Connection,
    output: OutputFormat,
    table: Option<&str>,
) -> anyhow::Result<()> {
    let mut oam = conn.oam();
    let now = SystemTime::now();
    if let Some(name) = table {
        let (schema, table) = format::split_table(name);
        let response = conn
            .call(
                oam.get_table_status(conn.request(pb::GetTableStatusRequest {
                    schema: schema.clone(),
                    table: table.clone(),
                })),
            )
            .await?;
        match output {
            OutputFormat::Json => print_json(&json!({
                "table": table_name(&schema, &table),
                "pipelines": response.pipelines.iter().map(format::pipeline_json).collect::<Vec<_>>(),
                "indexes": response.indexes.iter().map(format::index_json).collect::<Vec<_>>(),
            })),
            OutputFormat::Table => print!(
                "{}",
                render_table_status(&table_name(&schema, &table), &response, now)
            ),
        }
        return Ok(());
    }
    let response = conn
        .call(oam.get_status(conn.request(pb::GetStatusRequest {})))
        .await?;
    match output {
        OutputFormat::Json => print_json(&status_json(&response, now)),
        OutputFormat::Table => print!("{}", render_status(&response, now)),
    }
    Ok(())
}

fn uptime(
    started_at: Option<&prost_types::Timestamp>,
    now: SystemTime,
) -> Option<std::time::Duration> {
    started_at
        .and_then(format::system_time)
        .and_then(|at| now.duration_since(at).ok())
}

fn status_json(s: &pb::GetStatusResponse, now: SystemTime) -> Json {
    let snapshots = s.snapshot_status.clone().unwrap_or_default();
    json!({
        "state": format::service_state(s.state),
        "started_at": format::timestamp_json(s.started_at.as_ref()),
        "uptime_seconds": uptime(s.started_at.as_ref(), now).map(|d| d.as_secs()),
        "last_change_at": format::timestamp_json(s.last_change_at.as_ref()),
        "sources": s.sources.iter().map(format::source_json).collect::<Vec<_>>(),
        "pipelines": s.pipelines.iter().map(format::pipeline_json).collect::<Vec<_>>(),
        "snapshots": {
            "enabled": snapshots.enabled,
            "store_type": snapshots.store_type,
            "last_snapshot_id": snapshots.last_snapshot_id,
            "last_snapshot_at": format::timestamp_json(snapshots.last_snapshot_at.as_ref()),
            "next_scheduled_at": format::timestamp_json(snapshots.next_scheduled_at.as_ref()),
            "snapshot_count": snapshots.snapshot_count,
        },
    })
}

/// The human form of `GetStatus`.
pub(crate) fn render_status(s: &pb::GetStatusResponse, now: SystemTime) -> String {
    let mut out = String::new();
    let uptime =
        uptime(s.started_at.as_ref(), now).map_or_else(|| NONE.to_string(), format::duration);
    out.push_str(&format::key_values(&[
        ("Service".to_string(), format::service_state(s.state)),
        ("Uptime".to_string(), uptime),
        (
            "Last change".to_string(),
            format::age(s.last_change_at.as_ref(), now),
        ),
    ]));
    out.push_str("\nSources:\n");
    out.push_str(&sources_table(&s.sources).render());
    out.push_str("\nPipelines:\n");
    let mut pipelines = Table::new([
        "PIPELINE",
        "STATE",
        "ROWS",
        "BUFFER",
        "LAST CHANGE",
        "CLIENTS",
    ]);
    pipelines.right_align(2).right_align(5);
    for p in &s.pipelines {
        pipelines.row([
            p.pipeline_id.clone(),
            format::pipeline_state(p.state),
            p.row_count.to_string(),
            format!("{}/{}", p.buffer_depth, p.buffer_capacity),
            format::age(p.last_change_at.as_ref(), now),
            if p.target_type == "replication-fanout" {
                p.fanout_client_count.to_string()
            } else {
                NONE.to_string()
            },
        ]);
    }
    out.push_str(&pipelines.render());
    out.push_str("\nSnapshots: ");
    match &s.snapshot_status {
        Some(snap) if snap.enabled => {
            let last = if snap.last_snapshot_id.is_empty() {
                "none".to_string()
            } else {
                format!(
                    "{} ({})",
                    snap.last_snapshot_id,
                    format::timestamp(snap.last_snapshot_at.as_ref())
                )
            };
            out.push_str(&format!(
                "enabled, store {}, {} stored, last {last}, next {}\n",
                snap.store_type,
                snap.snapshot_count,
                format::timestamp(snap.next_scheduled_at.as_ref())
            ));
        }
        _ => out.push_str("disabled\n"),
    }
    out
}

fn sources_table(sources: &[pb::SourceInfo]) -> Table {
    let mut table = Table::new([
        "SOURCE",
        "TYPE",
        "STATE",
        "RESUMABLE",
        "ORDERING",
        "POSITION",
        "ACKED",
        "LAG",
    ]);
    for s in sources {
        let lag = match (s.lag_bytes, s.lag_time.as_ref()) {
            (Some(b), Some(t)) => {
                format!("{} / {}", format::bytes(b), format::proto_duration(Some(t)))
            }
            (Some(b), None) => format::bytes(b),
            (None, Some(t)) => format::proto_duration(Some(t)),
            (None, None) => NONE.to_string(),
        };
        table.row([
            s.source_id.clone(),
            s.source_type.clone(),
            format::source_state(s.state),
            format::yes_no(s.supports_resume).to_string(),
            format::ordering(s.ordering_guarantee),
            or_none(&s.current_position),
            or_none(&s.acked_position),
            lag,
        ]);
    }
    table
}

fn or_none(text: &str) -> String {
    if text.is_empty() {
        NONE.to_string()
    } else {
        text.to_string()
    }
}

/// The human form of `GetTableStatus`.
pub(crate) fn render_table_status(
    name: &str,
    s: &pb::GetTableStatusResponse,
    now: SystemTime,
) -> String {
    let mut out = format!("Table {name}\n");
    for p in &s.pipelines {
        out.push('\n');
        out.push_str(&format::key_values(&[
            ("Pipeline".to_string(), p.pipeline_id.clone()),
            ("Target".to_string(), p.target_type.clone()),
            ("State".to_string(), format::pipeline_state(p.state)),
            ("Ready".to_string(), format::yes_no(p.ready).to_string()),
            ("Rows".to_string(), p.row_count.to_string()),
            (
                "Applied".to_string(),
                format!(
                    "{} inserts, {} updates, {} deletes, {} truncates",
                    p.inserts_applied, p.updates_applied, p.deletes_applied, p.truncates_applied
                ),
            ),
            (
                "Buffer".to_string(),
                format!("{}/{}", p.buffer_depth, p.buffer_capacity),
            ),
            (
                "Last change".to_string(),
                format::age(p.last_change_at.as_ref(), now),
            ),
            ("Dead letters".to_string(), p.dead_letter_count.to_string()),
            ("Error".to_string(), or_none(&p.error_message)),
        ]));
    }
    out.push_str("\nIndexes:\n");
    let mut indexes = Table::new(["NAME", "FIELDS", "UNIQUE", "ENTRIES"]);
    indexes.right_align(3);
    for i in &s.indexes {
        indexes.row([
            i.name.clone(),
            i.fields.join(","),
            format::yes_no(i.unique).to_string(),
            i.entry_count.to_string(),
        ]);
    }
    out.push_str(&indexes.render());
    out
}

/// `laredo source [id]`.
pub(crate) async fn source(
    conn: &Connection,
    output: OutputFormat,
    source_id: Option<&str>,
) -> anyhow::Result<()> {
    let response = conn
        .call(
            conn.oam()
                .get_source_info(conn.request(pb::GetSourceInfoRequest {
                    source_id: source_id.unwrap_or_default().to_string(),
                })),
        )
        .await?;
    match output {
        OutputFormat::Json => print_json(&Json::Array(
            response.sources.iter().map(format::source_json).collect(),
        )),
        OutputFormat::Table => print!("{}", render_sources(&response.sources)),
    }
    Ok(())
}

/// The human form of `GetSourceInfo`: one block of `key: value` lines per source.
pub(crate) fn render_sources(sources: &[pb::SourceInfo]) -> String {
    let mut blocks = Vec::new();
    for s in sources {
        let mut pairs = vec![
            ("Source".to_string(), s.source_id.clone()),
            ("Type".to_string(), s.source_type.clone()),
            ("State".to_string(), format::source_state(s.state)),
            (
                "Resumable".to_string(),
                format::yes_no(s.supports_resume).to_string(),
            ),
            (
                "Ordering".to_string(),
                format::ordering(s.ordering_guarantee),
            ),
            ("Position".to_string(), or_none(&s.current_position)),
            ("Acked".to_string(), or_none(&s.acked_position)),
            (
                "Lag".to_string(),
                s.lag_bytes.map_or_else(|| NONE.to_string(), format::bytes),
            ),
            (
                "Lag time".to_string(),
                format::proto_duration(s.lag_time.as_ref()),
            ),
        ];
        if let Some(details) = &s.details {
            format::flatten("", &format::struct_json(details), &mut pairs);
        }
        blocks.push(format::key_values(&pairs));
    }
    blocks.join("\n")
}

/// `laredo pipelines`.
pub(crate) async fn pipelines(
    conn: &Connection,
    output: OutputFormat,
    source: Option<&str>,
    table: Option<&str>,
) -> anyhow::Result<()> {
    let response = conn
        .call(
            conn.oam()
                .list_pipelines(conn.request(pb::ListPipelinesRequest {
                    source_id: source.unwrap_or_default().to_string(),
                    table: table.unwrap_or_default().to_string(),
                })),
        )
        .await?;
    match output {
        OutputFormat::Json => print_json(&Json::Array(
            response
                .pipelines
                .iter()
                .map(format::pipeline_json)
                .collect(),
        )),
        OutputFormat::Table => print!("{}", render_pipelines(&response.pipelines)),
    }
    Ok(())
}

/// The human form of `ListPipelines`.
pub(crate) fn render_pipelines(pipelines: &[pb::PipelineStatus]) -> String {
    let mut table = Table::new([
        "PIPELINE", "SOURCE", "TABLE", "TARGET", "STATE", "ROWS", "BUFFER", "ERRORS", "DLQ",
    ]);
    table.right_align(5).right_align(8);
    for p in pipelines {
        table.row([
            p.pipeline_id.clone(),
            p.source_id.clone(),
            table_name(&p.schema, &p.table),
            p.target_type.clone(),
            format::pipeline_state(p.state),
            p.row_count.to_string(),
            format!("{}/{}", p.buffer_depth, p.buffer_capacity),
            or_none(&p.error_message),
            p.dead_letter_count.to_string(),
        ]);
    }
    table.render()
}

/// `laredo tables`.
pub(crate) async fn tables(conn: &Connection, output: OutputFormat) -> anyhow::Result<()> {
    let response = conn
        .call(
            conn.oam()
                .list_tables(conn.request(pb::ListTablesRequest {})),
        )
        .await?;
    match output {
        OutputFormat::Json => print_json(&Json::Array(
            response
                .tables
                .iter()
                .map(|t| {
                    json!({
                        "table": table_name(&t.schema, &t.table),
                        "source_id": t.source_id,
                        "source_type": t.source_type,
                        "primary_key": t.primary_key,
                        "target_type": t.target_type,
                        "pipeline_id": t.pipeline_id,
                        "target_config": t.target_config.as_ref().map_or(Json::Null, format::struct_json),
                    })
                })
                .collect(),
        )),
        OutputFormat::Table => print!("{}", render_tables(&response.tables)),
    }
    Ok(())
}

/// The human form of `ListTables`: one line per table and source, its targets joined.
pub(crate) fn render_tables(tables: &[pb::TableConfig]) -> String {
    let mut grouped: Vec<(String, String, Vec<String>, Vec<String>)> = Vec::new();
    for t in tables {
        let name = table_name(&t.schema, &t.table);
        match grouped
            .iter_mut()
            .find(|(n, s, _, _)| *n == name && *s == t.source_id)
        {
            Some((_, _, _, targets)) => targets.push(t.target_type.clone()),
            None => grouped.push((
                name,
                t.source_id.clone(),
                t.primary_key.clone(),
                vec![t.target_type.clone()],
            )),
        }
    }
    let mut table = Table::new(["TABLE", "SOURCE", "PK", "TARGETS"]);
    for (name, source, pk, targets) in grouped {
        let pk = if pk.is_empty() {
            NONE.to_string()
        } else {
            pk.join(",")
        };
        table.row([name, source, pk, targets.join(", ")]);
    }
    table.render()
}

/// `laredo schema s.t`.
pub(crate) async fn schema(
    conn: &Connection,
    output: OutputFormat,
    name: &str,
) -> anyhow::Result<()> {
    let (schema, table) = format::split_table(name);
    let response = conn
        .call(
            conn.oam()
                .get_table_schema(conn.request(pb::GetTableSchemaRequest { schema, table })),
        )
        .await?;
    match output {
        OutputFormat::Json => print_json(&Json::Array(
            response.columns.iter().map(format::column_json).collect(),
        )),
        OutputFormat::Table => print!("{}", render_schema(&response.columns)),
    }
    Ok(())
}

/// The human form of `GetTableSchema`.
pub(crate) fn render_schema(columns: &[pb::ColumnDefinition]) -> String {
    let mut table = Table::new(["#", "COLUMN", "TYPE", "NOT NULL", "PK"]);
    table.right_align(0);
    for c in columns {
        let pk = if c.is_primary_key {
            if c.primary_key_ordinal > 0 {
                c.primary_key_ordinal.to_string()
            } else {
                "yes".to_string()
            }
        } else {
            String::new()
        };
        let ordinal = if c.ordinal_position > 0 {
            c.ordinal_position.to_string()
        } else {
            NONE.to_string()
        };
        table.row([
            ordinal,
            c.column_name.clone(),
            c.data_type.clone(),
            if c.not_null { "yes" } else { "" }.to_string(),
            pk,
        ]);
    }
    table.render()
}

/// `laredo ready`: exit 0 when ready, 1 when not.
pub(crate) async fn ready(
    conn: &Connection,
    output: OutputFormat,
    source: Option<&str>,
    table: Option<&str>,
    pipeline: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let response = conn
        .call(conn.oam().check_ready(conn.request(pb::CheckReadyRequest {
            source: source.unwrap_or_default().to_string(),
            table: table.unwrap_or_default().to_string(),
            pipeline_id: pipeline.unwrap_or_default().to_string(),
        })))
        .await?;
    let scope = match (pipeline, table, source) {
        (Some(p), _, _) => format!("pipeline {p}"),
        (None, Some(t), Some(s)) => format!("table {t} of source {s}"),
        (None, Some(t), None) => format!("table {t}"),
        (None, None, Some(s)) => format!("source {s}"),
        (None, None, None) => "all pipelines".to_string(),
    };
    match output {
        OutputFormat::Json => print_json(&json!({
            "ready": response.ready,
            "not_ready_reasons": response.not_ready_reasons,
        })),
        OutputFormat::Table if response.ready => println!("READY: {scope}"),
        OutputFormat::Table => println!("NOT READY: {}", response.not_ready_reasons.join("; ")),
    }
    Ok(if response.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pipeline(id: &str, state: pb::PipelineState, rows: u64) -> pb::PipelineStatus {
        pb::PipelineStatus {
            pipeline_id: id.into(),
            source_id: "main".into(),
            schema: "public".into(),
            table: "users".into(),
            target_type: "indexed-memory".into(),
            state: state as i32,
            row_count: rows,
            buffer_depth: 2,
            buffer_capacity: 1024,
            ready: true,
            ..Default::default()
        }
    }

    #[test]
    fn status_shows_service_sources_pipelines_and_snapshots() {
        let started = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        let now = SystemTime::try_from(started).unwrap() + Duration::from_secs(125);
        let response = pb::GetStatusResponse {
            state: pb::ServiceState::Streaming as i32,
            sources: vec![pb::SourceInfo {
                source_id: "main".into(),
                source_type: "test".into(),
                state: pb::SourceState::Streaming as i32,
                supports_resume: true,
                ordering_guarantee: pb::OrderingGuarantee::TotalOrder as i32,
                acked_position: "42".into(),
                lag_bytes: Some(0),
                ..Default::default()
            }],
            pipelines: vec![pipeline(
                "main:public.users:indexed-memory",
                pb::PipelineState::Streaming,
                3,
            )],
            started_at: Some(started),
            last_change_at: None,
            snapshot_status: Some(pb::SnapshotSummary::default()),
        };
        assert_eq!(
            render_status(&response, now),
            "Service:     STREAMING\n\
             Uptime:      2m 5s\n\
             Last change: -\n\
             \n\
             Sources:\n\
             SOURCE  TYPE  STATE      RESUMABLE  ORDERING     POSITION  ACKED  LAG\n\
             main    test  STREAMING  yes        TOTAL_ORDER  -         42     0 B\n\
             \n\
             Pipelines:\n\
             PIPELINE                          STATE      ROWS  BUFFER  LAST CHANGE  CLIENTS\n\
             main:public.users:indexed-memory  STREAMING     3  2/1024  -                  -\n\
             \n\
             Snapshots: disabled\n"
        );
    }

    #[test]
    fn pipelines_table_has_the_documented_columns() {
        let mut errored = pipeline("b", pb::PipelineState::Error, 0);
        errored.error_message = "boom".into();
        errored.dead_letter_count = 12;
        assert_eq!(
            render_pipelines(&[pipeline("a", pb::PipelineState::Paused, 10), errored]),
            "PIPELINE  SOURCE  TABLE         TARGET          STATE   ROWS  BUFFER  ERRORS  DLQ\n\
             a         main    public.users  indexed-memory  PAUSED    10  2/1024  -         0\n\
             b         main    public.users  indexed-memory  ERROR      0  2/1024  boom     12\n"
        );
    }

    #[test]
    fn tables_group_targets_of_one_table() {
        let config = |target: &str| pb::TableConfig {
            schema: "public".into(),
            table: "users".into(),
            primary_key: vec!["id".into()],
            source_id: "main".into(),
            target_type: target.into(),
            ..Default::default()
        };
        assert_eq!(
            render_tables(&[config("indexed-memory"), config("http-sync")]),
            "TABLE         SOURCE  PK  TARGETS\n\
             public.users  main    id  indexed-memory, http-sync\n"
        );
    }

    #[test]
    fn schema_lists_columns_with_key_ordinals() {
        let column = |name: &str, ordinal: u32, pk: u32| pb::ColumnDefinition {
            column_name: name.into(),
            data_type: "int8".into(),
            not_null: pk > 0,
            is_primary_key: pk > 0,
            ordinal_position: ordinal,
            primary_key_ordinal: pk,
            ..Default::default()
        };
        assert_eq!(
            render_schema(&[
                column("region", 1, 1),
                column("id", 2, 2),
                column("total", 3, 0)
            ]),
            "#  COLUMN  TYPE  NOT NULL  PK\n\
             1  region  int8  yes       1\n\
             2  id      int8  yes       2\n\
             3  total   int8\n"
        );
    }

    #[test]
    fn table_status_lists_pipelines_and_indexes() {
        let response = pb::GetTableStatusResponse {
            pipelines: vec![pipeline("p1", pb::PipelineState::Streaming, 3)],
            indexes: vec![pb::IndexInfo {
                name: "lookup".into(),
                fields: vec!["email".into()],
                unique: true,
                entry_count: 3,
            }],
        };
        let text = render_table_status("public.users", &response, SystemTime::now());
        assert!(
            text.starts_with("Table public.users\n\nPipeline:     p1\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "Indexes:\nNAME    FIELDS  UNIQUE  ENTRIES\nlookup  email   yes           3\n"
            ),
            "{text}"
        );
    }
}
