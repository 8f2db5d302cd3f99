//! `laredo fanout`: the replication service of fan-out targets, on the fan-out address
//! (`--fanout-address`); `drain` is an OAM admin call on the main address.

use std::time::SystemTime;

use laredo_proto::laredo::replication::v1 as rpb;
use laredo_proto::laredo::v1 as pb;
use serde_json::{Value as Json, json};

use crate::cli::{FanoutCommand, GlobalArgs, OutputFormat};
use crate::commands::print_json;
use crate::connection::Connection;
use crate::format::{self, NONE};
use crate::table::Table;

/// `laredo fanout ...`.
pub(crate) async fn run(global: &GlobalArgs, command: FanoutCommand) -> anyhow::Result<()> {
    let output = global.output;
    if let FanoutCommand::Drain { table, deadline } = command {
        let conn = Connection::open(&global.address, global).await?;
        let (schema, table) = table
            .as_deref()
            .map(format::split_table)
            .unwrap_or_default();
        let response = conn
            .call(
                conn.oam()
                    .drain_replication(conn.request(pb::DrainReplicationRequest {
                        schema,
                        table,
                        drain_deadline:
                            deadline.and_then(|d| prost_types::Duration::try_from(d).ok()),
                    })),
            )
            .await?;
        match output {
            OutputFormat::Json => print_json(&json!({
                "accepted": response.accepted,
                "message": response.message,
                "drained_targets": response.drained_targets,
            })),
            OutputFormat::Table => {
                println!("{}", response.message);
                for target in &response.drained_targets {
                    println!("  drained {target}");
                }
            }
        }
        if !response.accepted {
            anyhow::bail!("drain refused: {}", response.message);
        }
        return Ok(());
    }
    let conn = Connection::open(&global.fanout_address, global).await?;
    let mut client = conn.replication();
    let now = SystemTime::now();
    match command {
        FanoutCommand::Status { table } => {
            let (schema, table) = format::split_table(&table);
            let status = conn
                .call(client.get_replication_status(
                    conn.request(rpb::GetReplicationStatusRequest { schema, table }),
                ))
                .await?;
            match output {
                OutputFormat::Json => print_json(&status_json(&status)),
                OutputFormat::Table => print!("{}", render_status(&status, now)),
            }
        }
        FanoutCommand::Clients { table } => {
            let (schema, table) = format::split_table(&table);
            let status = conn
                .call(client.get_replication_status(
                    conn.request(rpb::GetReplicationStatusRequest { schema, table }),
                ))
                .await?;
            match output {
                OutputFormat::Json => {
                    print_json(&Json::Array(
                        status.clients.iter().map(client_json).collect(),
                    ));
                }
                OutputFormat::Table => print!("{}", render_clients(&status.clients, now)),
            }
        }
        FanoutCommand::Snapshots { table, limit } => {
            let (schema, table) = format::split_table(&table);
            let response = conn
                .call(
                    client.list_snapshots(conn.request(rpb::ListSnapshotsRequest {
                        schema,
                        table,
                        limit,
                    })),
                )
                .await?;
            match output {
                OutputFormat::Json => print_json(&Json::Array(
                    response.snapshots.iter().map(snapshot_json).collect(),
                )),
                OutputFormat::Table => print!("{}", render_snapshots(&response.snapshots, now)),
            }
        }
        FanoutCommand::Journal { table, tail } => {
            let (schema, table) = format::split_table(&table);
            let response = conn
                .call(
                    client.list_journal_entries(conn.request(rpb::ListJournalEntriesRequest {
                        schema,
                        table,
                        after_sequence: 0,
                        limit: tail,
                    })),
                )
                .await?;
            match output {
                OutputFormat::Json => print_json(&json!({
                    "entries": response.entries.iter().map(|e| json!({
                        "sequence": e.sequence,
                        "source_position": e.source_position,
                        "timestamp": format::timestamp_json(e.timestamp.as_ref()),
                        "action": format::action(e.action),
                        "new": format::opt_row_json(e.new_values.as_ref()),
                        "old": format::opt_row_json(e.old_values.as_ref()),
                    })).collect::<Vec<_>>(),
                    "schema_changes": response.schema_changes.iter().map(|c| json!({
                        "sequence": c.sequence,
                        "timestamp": format::timestamp_json(c.timestamp.as_ref()),
                        "old_columns": c.old_columns.iter().map(format::column_json).collect::<Vec<_>>(),
                        "new_columns": c.new_columns.iter().map(format::column_json).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })),
                OutputFormat::Table => print!("{}", render_journal(&response.entries)),
            }
        }
        FanoutCommand::Drain { .. } => unreachable!("handled above"),
    }
    Ok(())
}

fn snapshot_json(s: &rpb::SnapshotInfo) -> Json {
    json!({
        "snapshot_id": s.snapshot_id,
        "sequence": s.sequence,
        "source_position": s.source_position,
        "row_count": s.row_count,
        "size_bytes": s.size_bytes,
        "created_at": format::timestamp_json(s.created_at.as_ref()),
    })
}

fn client_json(c: &rpb::ClientInfo) -> Json {
    json!({
        "client_id": c.client_id,
        "current_sequence": c.current_sequence,
        "behind_count": c.behind_count,
        "buffer_depth": c.buffer_depth,
        "connected_at": format::timestamp_json(c.connected_at.as_ref()),
        "state": format::client_state(c.state),
        "mode": format::sync_mode(c.mode),
        "filter_count": c.filters.len(),
    })
}

fn status_json(s: &rpb::GetReplicationStatusResponse) -> Json {
    json!({
        "server_id": s.server_id,
        "current_sequence": s.current_sequence,
        "row_count": s.row_count,
        "draining": s.draining,
        "journal": {
            "entry_count": s.journal_entry_count,
            "oldest_sequence": s.journal_oldest_sequence,
            "newest_sequence": s.current_sequence,
            "oldest_at": format::timestamp_json(s.journal_oldest_at.as_ref()),
        },
        "latest_snapshot": s.latest_snapshot.as_ref().map_or(Json::Null, snapshot_json),
        "connected_clients": s.connected_clients,
        "clients": s.clients.iter().map(client_json).collect::<Vec<_>>(),
    })
}

/// The human form of `GetReplicationStatus`.
pub(crate) fn render_status(s: &rpb::GetReplicationStatusResponse, now: SystemTime) -> String {
    let latest = s.latest_snapshot.as_ref().map_or_else(
        || "none".to_string(),
        |snap| {
            format!(
                "{} (sequence {}, {} rows, {})",
                snap.snapshot_id,
                snap.sequence,
                snap.row_count,
                format::age(snap.created_at.as_ref(), now)
            )
        },
    );
    let mut out = format::key_values(&[
        ("Server".to_string(), s.server_id.clone()),
        ("Sequence".to_string(), s.current_sequence.to_string()),
        ("Rows".to_string(), s.row_count.to_string()),
        (
            "Journal".to_string(),
            format!(
                "{} entries, oldest {} ({}), newest {}",
                s.journal_entry_count,
                s.journal_oldest_sequence,
                format::age(s.journal_oldest_at.as_ref(), now),
                s.current_sequence
            ),
        ),
        ("Latest snapshot".to_string(), latest),
        (
            "Draining".to_string(),
            format::yes_no(s.draining).to_string(),
        ),
        ("Clients".to_string(), s.connected_clients.to_string()),
    ]);
    if !s.clients.is_empty() {
        out.push('\n');
        out.push_str(&render_clients(&s.clients, now));
    }
    out
}

/// The human form of the client list.
pub(crate) fn render_clients(clients: &[rpb::ClientInfo], now: SystemTime) -> String {
    let mut table = Table::new([
        "CLIENT ID",
        "SEQUENCE",
        "BEHIND",
        "STATE",
        "BUFFER",
        "CONNECTED",
    ]);
    table.right_align(1).right_align(2).right_align(4);
    for c in clients {
        table.row([
            c.client_id.clone(),
            c.current_sequence.to_string(),
            c.behind_count.to_string(),
            format::client_state(c.state),
            c.buffer_depth.to_string(),
            format::age(c.connected_at.as_ref(), now),
        ]);
    }
    table.render()
}

/// The human form of the fan-out snapshot list.
pub(crate) fn render_snapshots(snapshots: &[rpb::SnapshotInfo], now: SystemTime) -> String {
    let mut table = Table::new(["ID", "SEQUENCE", "ROWS", "SIZE", "AGE"]);
    table.right_align(1).right_align(2).right_align(3);
    for s in snapshots {
        table.row([
            s.snapshot_id.clone(),
            s.sequence.to_string(),
            s.row_count.to_string(),
            format::bytes(s.size_bytes),
            format::age(s.created_at.as_ref(), now),
        ]);
    }
    table.render()
}

/// The human form of journal entries; the key is the old row's identity for a delete,
/// else the new row (all its columns: the entry does not say which are the key).
pub(crate) fn render_journal(entries: &[rpb::JournalEntry]) -> String {
    let mut table = Table::new(["SEQUENCE", "TIMESTAMP", "ACTION", "KEY"]);
    table.right_align(0);
    for e in entries {
        let row = if e.action == pb::ChangeAction::Delete as i32 {
            e.old_values.as_ref()
        } else {
            e.new_values.as_ref().or(e.old_values.as_ref())
        };
        table.row([
            e.sequence.to_string(),
            format::timestamp(e.timestamp.as_ref()),
            format::action(e.action),
            row.map_or_else(|| NONE.to_string(), format::row_inline),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn clients_and_journal_render_as_tables() {
        let connected = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        let now = SystemTime::try_from(connected).unwrap() + Duration::from_secs(90);
        let client = rpb::ClientInfo {
            client_id: "replica-1".into(),
            current_sequence: 120,
            behind_count: 3,
            buffer_depth: 1,
            connected_at: Some(connected),
            state: rpb::ClientState::Live as i32,
            ..Default::default()
        };
        assert_eq!(
            render_clients(&[client], now),
            "CLIENT ID  SEQUENCE  BEHIND  STATE  BUFFER  CONNECTED\n\
             replica-1       120       3  LIVE        1  1m 30s ago\n"
        );
        let entry = rpb::JournalEntry {
            sequence: 7,
            action: pb::ChangeAction::Delete as i32,
            old_values: Some(pb::Row {
                columns: vec!["id".into()],
                values: vec![pb::Value::from(&laredo_core::Value::Int64(4))],
            }),
            ..Default::default()
        };
        assert_eq!(
            render_journal(&[entry]),
            "SEQUENCE  TIMESTAMP  ACTION  KEY\n       7  -          DELETE  id=4\n"
        );
    }
}
