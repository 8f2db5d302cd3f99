//! `laredo watch`: follows the OAM `WatchStatus` stream until Ctrl-C.
//!
//! The "watching" notice goes to stderr once the server has answered the call, which
//! is after it registered the watcher: every event from then on is printed.

use laredo_proto::laredo::v1 as pb;
use serde_json::{Value as Json, json};
use tokio_stream::StreamExt;

use crate::cli::{OutputFormat, WatchArgs};
use crate::commands::print_json_line;
use crate::connection::Connection;
use crate::format::{self, table_name};

/// `laredo watch`.
pub(crate) async fn run(
    conn: &Connection,
    output: OutputFormat,
    args: WatchArgs,
) -> anyhow::Result<()> {
    let mut tables = args.tables;
    tables.extend(args.table);
    let mut stream = conn
        .oam()
        .watch_status(conn.stream_request(pb::WatchStatusRequest {
            tables,
            pipeline_ids: args.pipelines,
            include_row_changes: true,
        }))
        .await
        .map_err(|s| conn.status_error(&s))?
        .into_inner();
    eprintln!("watching {} (Ctrl-C to stop)", conn.address());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let event = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            event = stream.next() => event,
        };
        let Some(event) = event else {
            anyhow::bail!("the server closed the watch stream");
        };
        let event = event.map_err(|s| conn.status_error(&s))?;
        match output {
            OutputFormat::Json => print_json_line(&event_json(&event)),
            OutputFormat::Table => {
                if let Some(line) = event_line(&event, args.verbose) {
                    println!("{line}");
                }
            }
        }
    }
}

/// One line per event: `[HH:MM:SS] Pipeline X: OLD → NEW`, `[..] Source X: connected —
/// msg`, `[..] INSERT s.t (pipeline=X)`.
pub(crate) fn event_line(event: &pb::WatchStatusResponse, verbose: bool) -> Option<String> {
    use pb::watch_status_response::Event;
    let clock = format::clock(event.timestamp.as_ref());
    let text = match event.event.as_ref()? {
        Event::ServiceStateChange(c) => format!(
            "Service: {} → {}",
            format::service_state(c.old_state),
            format::service_state(c.new_state)
        ),
        Event::PipelineStateChange(c) => {
            let mut text = format!(
                "Pipeline {}: {} → {}",
                c.pipeline_id,
                format::pipeline_state(c.old_state),
                format::pipeline_state(c.new_state)
            );
            if !c.message.is_empty() {
                text.push_str(&format!(" — {}", c.message));
            }
            text
        }
        Event::SourceStateChange(c) => {
            let what = match pb::SourceEventType::try_from(c.event_type) {
                Ok(pb::SourceEventType::Connected) => "connected",
                Ok(pb::SourceEventType::Disconnected) => "disconnected",
                _ => "changed",
            };
            if c.message.is_empty() {
                format!("Source {}: {what}", c.source_id)
            } else {
                format!("Source {}: {what} — {}", c.source_id, c.message)
            }
        }
        Event::RowChange(c) => {
            let mut text = format!(
                "{} {} (pipeline={})",
                format::action(c.action),
                table_name(&c.schema, &c.table),
                c.pipeline_id
            );
            if verbose {
                if !c.position.is_empty() {
                    text.push_str(&format!(" position={}", c.position));
                }
                if let Some(key) = &c.key {
                    text.push_str(&format!(" key: {}", format::row_inline(key)));
                }
            }
            text
        }
        Event::EventsDropped(d) => {
            format!("… {} events dropped (this watcher was too slow)", d.count)
        }
    };
    Some(format!("[{clock}] {text}"))
}

/// One JSON object per event.
pub(crate) fn event_json(event: &pb::WatchStatusResponse) -> Json {
    use pb::watch_status_response::Event;
    let timestamp = format::timestamp_json(event.timestamp.as_ref());
    match &event.event {
        Some(Event::ServiceStateChange(c)) => json!({
            "timestamp": timestamp,
            "type": "service_state_change",
            "old_state": format::service_state(c.old_state),
            "new_state": format::service_state(c.new_state),
        }),
        Some(Event::PipelineStateChange(c)) => json!({
            "timestamp": timestamp,
            "type": "pipeline_state_change",
            "pipeline_id": c.pipeline_id,
            "old_state": format::pipeline_state(c.old_state),
            "new_state": format::pipeline_state(c.new_state),
            "message": c.message,
        }),
        Some(Event::SourceStateChange(c)) => json!({
            "timestamp": timestamp,
            "type": "source_state_change",
            "source_id": c.source_id,
            "connected": c.event_type == pb::SourceEventType::Connected as i32,
            "message": c.message,
        }),
        Some(Event::RowChange(c)) => json!({
            "timestamp": timestamp,
            "type": "row_change",
            "pipeline_id": c.pipeline_id,
            "table": table_name(&c.schema, &c.table),
            "action": format::action(c.action),
            "position": c.position,
            "key": format::opt_row_json(c.key.as_ref()),
        }),
        Some(Event::EventsDropped(d)) => json!({
            "timestamp": timestamp,
            "type": "events_dropped",
            "count": d.count,
        }),
        None => json!({"timestamp": timestamp, "type": "unknown"}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(event: pb::watch_status_response::Event) -> pb::WatchStatusResponse {
        pb::WatchStatusResponse {
            timestamp: Some(prost_types::Timestamp {
                seconds: 13 * 3600 + 4 * 60 + 5,
                nanos: 0,
            }),
            event: Some(event),
        }
    }

    #[test]
    fn events_print_one_line_each() {
        use pb::watch_status_response::Event;
        let pipeline = at(Event::PipelineStateChange(pb::PipelineStateChange {
            pipeline_id: "p1".into(),
            old_state: pb::PipelineState::Streaming as i32,
            new_state: pb::PipelineState::Paused as i32,
            message: String::new(),
        }));
        assert_eq!(
            event_line(&pipeline, false).unwrap(),
            "[13:04:05] Pipeline p1: STREAMING → PAUSED"
        );
        let source = at(Event::SourceStateChange(pb::SourceStateChange {
            source_id: "main".into(),
            event_type: pb::SourceEventType::Connected as i32,
            message: "test".into(),
        }));
        assert_eq!(
            event_line(&source, false).unwrap(),
            "[13:04:05] Source main: connected — test"
        );
        let row = at(Event::RowChange(pb::WatchRowChange {
            pipeline_id: "p1".into(),
            schema: "public".into(),
            table: "users".into(),
            action: pb::ChangeAction::Update as i32,
            position: "9".into(),
            xid: 0,
            key: Some(pb::Row {
                columns: vec!["id".into()],
                values: vec![pb::Value::from(&laredo_core::Value::Int64(4))],
            }),
        }));
        assert_eq!(
            event_line(&row, false).unwrap(),
            "[13:04:05] UPDATE public.users (pipeline=p1)"
        );
        assert_eq!(
            event_line(&row, true).unwrap(),
            "[13:04:05] UPDATE public.users (pipeline=p1) position=9 key: id=4"
        );
        assert_eq!(event_json(&row)["key"], json!({"id": 4}));
    }
}
