//! Admin OAM commands: `reload`, `pause`, `resume`, `reset-source`, `snapshot ...`,
//! `dead-letters ...` and `replay`. The server protects them with the admin token.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use laredo_proto::laredo::v1 as pb;
use serde_json::{Value as Json, json};

use crate::cli::{
    DeadLetterArgs, DeadLetterCommand, OutputFormat, ReplaySpeedArg, SnapshotCommand,
};
use crate::commands::{confirm, print_json, spinner};
use crate::connection::Connection;
use crate::format::{self, table_name};
use crate::table::Table;

/// How often `replay` and `reload` ask for progress.
const PROGRESS_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Prints an `accepted` / `message` answer; a refusal is an error.
fn accepted(output: OutputFormat, accepted: bool, message: &str) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        print_json(&json!({"accepted": accepted, "message": message}));
    }
    if !accepted {
        bail!("refused: {message}");
    }
    if output == OutputFormat::Table {
        println!("accepted: {message}");
    }
    Ok(())
}

/// `laredo reload --all [--source id] [--no-wait]`: the server accepts at once and
/// reloads every table (of the source) in the background, one after another; unless
/// `--no-wait`, this follows them to their end like [`reload_table`].
pub(crate) async fn reload_all(
    conn: &Connection,
    output: OutputFormat,
    source: Option<&str>,
    wait: bool,
) -> anyhow::Result<()> {
    let mut oam = conn.oam();
    let events = if wait {
        let stream = oam
            .watch_status(conn.stream_request(pb::WatchStatusRequest {
                tables: Vec::new(),
                pipeline_ids: Vec::new(),
                include_row_changes: false,
            }))
            .await
            .map_err(|s| conn.status_error(&s))?
            .into_inner();
        Some(stream)
    } else {
        None
    };
    let before = table_pipelines(conn, "", source).await?;
    let response = conn
        .call(oam.reload_all(conn.request(pb::ReloadAllRequest {
            source_id: source.unwrap_or_default().to_string(),
        })))
        .await?;
    let Some(events) = events.filter(|_| response.accepted) else {
        return accepted(output, response.accepted, &response.message);
    };
    report_followed(conn, output, events, "", source, &before, &response.message).await
}

/// `laredo reload <s.t> [--source id] [--no-wait]`: the server accepts at once and
/// reloads in the background; unless `--no-wait`, this follows the reload to its end
/// (see [`follow_reload`]) and prints each pipeline's state and row count.
pub(crate) async fn reload_table(
    conn: &Connection,
    output: OutputFormat,
    name: &str,
    source: Option<&str>,
    wait: bool,
) -> anyhow::Result<()> {
    let (schema, table) = format::split_table(name);
    let full_name = table_name(&schema, &table);
    let mut oam = conn.oam();
    // Watch before asking: the server has registered the watcher once the call
    // answers, so no state change of the reload is missed.
    let events = if wait {
        let stream = oam
            .watch_status(conn.stream_request(pb::WatchStatusRequest {
                tables: vec![full_name.clone()],
                pipeline_ids: Vec::new(),
                include_row_changes: false,
            }))
            .await
            .map_err(|s| conn.status_error(&s))?
            .into_inner();
        Some(stream)
    } else {
        None
    };
    let before = table_pipelines(conn, &full_name, source).await?;
    let response = conn
        .call(oam.reload_table(conn.request(pb::ReloadTableRequest {
            source_id: source.unwrap_or_default().to_string(),
            schema,
            table,
        })))
        .await?;
    let Some(events) = events.filter(|_| response.accepted) else {
        return accepted(output, response.accepted, &response.message);
    };
    report_followed(
        conn,
        output,
        events,
        &full_name,
        source,
        &before,
        &response.message,
    )
    .await
}

/// Follows an accepted reload of `table` (`""`: every table) to its end and prints
/// each pipeline's state and row count; fails when one ends in ERROR.
async fn report_followed(
    conn: &Connection,
    output: OutputFormat,
    events: tonic::Streaming<pb::WatchStatusResponse>,
    full_name: &str,
    source: Option<&str>,
    before: &[pb::PipelineStatus],
    message: &str,
) -> anyhow::Result<()> {
    if output == OutputFormat::Table {
        println!("accepted: {message}");
    }
    let expected: Vec<String> = before
        .iter()
        .filter(|p| {
            [pb::PipelineState::Streaming, pb::PipelineState::Paused]
                .iter()
                .any(|s| *s as i32 == p.state)
        })
        .map(|p| p.pipeline_id.clone())
        .collect();
    let pipelines = follow_reload(conn, events, full_name, source, &expected).await?;
    let what = if full_name.is_empty() {
        "every table"
    } else {
        full_name
    };
    match output {
        OutputFormat::Json => print_json(&json!({
            "accepted": true,
            "message": message,
            "pipelines": pipelines.iter().map(|p| json!({
                "pipeline_id": p.pipeline_id,
                "state": format::pipeline_state(p.state),
                "row_count": p.row_count,
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            for p in &pipelines {
                println!(
                    "reloaded {}: {}, {} rows",
                    p.pipeline_id,
                    format::pipeline_state(p.state),
                    p.row_count
                );
            }
        }
    }
    if let Some(failed) = pipelines
        .iter()
        .find(|p| p.state == pb::PipelineState::Error as i32)
    {
        bail!(
            "reload of {what} failed: pipeline {} is in ERROR{}",
            failed.pipeline_id,
            if failed.error_message.is_empty() {
                String::new()
            } else {
                format!(": {}", failed.error_message)
            }
        );
    }
    Ok(())
}

/// The pipelines of `table` (of `source`, when given).
async fn table_pipelines(
    conn: &Connection,
    table: &str,
    source: Option<&str>,
) -> anyhow::Result<Vec<pb::PipelineStatus>> {
    Ok(conn
        .call(
            conn.oam()
                .list_pipelines(conn.request(pb::ListPipelinesRequest {
                    source_id: source.unwrap_or_default().to_string(),
                    table: table.to_string(),
                })),
        )
        .await?
        .pipelines)
}

/// Follows a reload until each of the `expected` pipelines (the table's active ones)
/// has entered BASELINING and left it again, from the watch stream's state changes;
/// polls the pipelines meanwhile for the progress display (rows loaded so far).
/// Returns the table's pipelines afterwards.
///
/// When the watch lost events (its queue overflowed), a poll that finds no pipeline
/// still BASELINING ends the wait. When no pipeline starts within the call timeout,
/// the reload is taken to have failed before its baseline (the server log says why).
async fn follow_reload(
    conn: &Connection,
    mut events: tonic::Streaming<pb::WatchStatusResponse>,
    table: &str,
    source: Option<&str>,
    expected: &[String],
) -> anyhow::Result<Vec<pb::PipelineStatus>> {
    use std::collections::HashSet;

    use pb::watch_status_response::Event;
    use tokio_stream::StreamExt;

    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(format!("reloading {table}"));
    bar.enable_steady_tick(Duration::from_millis(120));
    let baselining = pb::PipelineState::Baselining as i32;
    let start_deadline = tokio::time::Instant::now() + conn.timeout();
    let mut started: HashSet<String> = HashSet::new();
    let mut ended: HashSet<String> = HashSet::new();
    let mut lost_events = false;
    let mut poll = tokio::time::interval(PROGRESS_POLL_INTERVAL);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let done = !started.is_empty()
            && expected.iter().all(|id| started.contains(id))
            && started.iter().all(|id| ended.contains(id));
        if done {
            break;
        }
        tokio::select! {
            _ = &mut ctrl_c => {
                bar.finish_and_clear();
                bail!("stopped following the reload of {table}; it goes on in the server");
            }
            event = events.next() => {
                let event = match event {
                    Some(event) => event.map_err(|s| conn.status_error(&s))?,
                    None => bail!("the server closed the watch stream before the reload of {table} finished"),
                };
                match event.event {
                    Some(Event::PipelineStateChange(change)) => {
                        if change.new_state == baselining {
                            started.insert(change.pipeline_id.clone());
                            ended.remove(&change.pipeline_id);
                        } else if started.contains(&change.pipeline_id) {
                            ended.insert(change.pipeline_id);
                        }
                    }
                    Some(Event::EventsDropped(_)) => lost_events = true,
                    _ => {}
                }
            }
            _ = poll.tick() => {
                let pipelines = table_pipelines(conn, table, source).await?;
                let loading: Vec<&pb::PipelineStatus> =
                    pipelines.iter().filter(|p| p.state == baselining).collect();
                // A lost event, or an expected pipeline that was never reloaded (it
                // failed meanwhile): the poll sees the end.
                if !started.is_empty()
                    && loading.is_empty()
                    && (lost_events || started.iter().all(|id| ended.contains(id)))
                {
                    break;
                }
                let rows: u64 = loading.iter().map(|p| p.row_count).max().unwrap_or(0);
                bar.set_message(format!("reloading {table}: {rows} rows loaded"));
                if started.is_empty() && tokio::time::Instant::now() >= start_deadline {
                    bar.finish_and_clear();
                    bail!(
                        "the reload of {table} was accepted but did not start within {:?}; see the server log",
                        conn.timeout()
                    );
                }
            }
        }
    }
    bar.finish_and_clear();
    table_pipelines(conn, table, source).await
}

/// `laredo pause [--source id]`.
pub(crate) async fn pause(
    conn: &Connection,
    output: OutputFormat,
    source: Option<&str>,
) -> anyhow::Result<()> {
    let response = conn
        .call(conn.oam().pause_sync(conn.request(pb::PauseSyncRequest {
            source_id: source.unwrap_or_default().to_string(),
        })))
        .await?;
    let state = format::service_state(response.state);
    match output {
        OutputFormat::Json => print_json(&json!({"state": state})),
        OutputFormat::Table => match source {
            Some(s) => {
                println!("Source {s} paused; changes accumulate at the source. Service: {state}")
            }
            None => println!("Sync paused. WAL is accumulating. Service: {state}"),
        },
    }
    Ok(())
}

/// `laredo resume [--source id]`.
pub(crate) async fn resume(
    conn: &Connection,
    output: OutputFormat,
    source: Option<&str>,
) -> anyhow::Result<()> {
    let response = conn
        .call(conn.oam().resume_sync(conn.request(pb::ResumeSyncRequest {
            source_id: source.unwrap_or_default().to_string(),
        })))
        .await?;
    let state = format::service_state(response.state);
    match output {
        OutputFormat::Json => print_json(&json!({"state": state})),
        OutputFormat::Table => match source {
            Some(s) => println!("Source {s} resumed. Service: {state}"),
            None => println!("Sync resumed. Service: {state}"),
        },
    }
    Ok(())
}

/// `laredo reset-source <id> [--drop-publication] [--confirm]`.
pub(crate) async fn reset_source(
    conn: &Connection,
    output: OutputFormat,
    source_id: &str,
    drop_publication: bool,
    confirmed: bool,
) -> anyhow::Result<()> {
    if !confirmed {
        let question = format!(
            "Reset source {source_id}? Its replication position is discarded{} and every table is truncated and re-baselined.",
            if drop_publication {
                ", its publication dropped"
            } else {
                ""
            }
        );
        if !confirm(&question)? {
            bail!("reset of source {source_id} cancelled");
        }
    }
    let response = spinner(
        format!("resetting source {source_id}"),
        conn.call(
            conn.oam()
                .reset_source(conn.request(pb::ResetSourceRequest {
                    source_id: source_id.to_string(),
                    confirm: true,
                    drop_publication,
                })),
        ),
    )
    .await?;
    if output == OutputFormat::Json {
        print_json(&json!({
            "accepted": response.accepted,
            "message": response.message,
            "details": response.details.as_ref().map_or(Json::Null, format::struct_json),
        }));
    } else if response.accepted {
        println!("{}", response.message);
    }
    if !response.accepted {
        bail!("refused: {}", response.message);
    }
    Ok(())
}

/// `laredo snapshot ...`.
pub(crate) async fn snapshot(
    conn: &Connection,
    output: OutputFormat,
    command: SnapshotCommand,
) -> anyhow::Result<()> {
    let mut oam = conn.oam();
    match command {
        SnapshotCommand::Create { meta, tables } => {
            let user_meta = meta
                .into_iter()
                .map(|(k, v)| (k, pb::Value::from(&laredo_core::Value::text(v))))
                .collect();
            let response = spinner(
                "taking a snapshot".to_string(),
                conn.call(oam.create_snapshot(
                    conn.request(pb::CreateSnapshotRequest { tables, user_meta }),
                )),
            )
            .await?;
            if output == OutputFormat::Json {
                print_json(&json!({
                    "accepted": response.accepted,
                    "snapshot_id": response.snapshot_id,
                    "message": response.message,
                }));
            } else if response.accepted {
                println!("snapshot {} created", response.snapshot_id);
            }
            if !response.accepted {
                bail!("snapshot refused: {}", response.message);
            }
        }
        SnapshotCommand::List { table, limit } => {
            let response = conn
                .call(oam.list_snapshots(conn.request(pb::ListSnapshotsRequest {
                    table: table.unwrap_or_default(),
                    limit,
                })))
                .await?;
            match output {
                OutputFormat::Json => print_json(&Json::Array(
                    response.snapshots.iter().map(snapshot_json).collect(),
                )),
                OutputFormat::Table => print!("{}", render_snapshots(&response.snapshots)),
            }
        }
        SnapshotCommand::Inspect { snapshot_id } => {
            let response = conn
                .call(
                    oam.inspect_snapshot(conn.request(pb::InspectSnapshotRequest { snapshot_id })),
                )
                .await?;
            let info = response.info.unwrap_or_default();
            match output {
                OutputFormat::Json => print_json(&snapshot_json(&info)),
                OutputFormat::Table => print!("{}", render_snapshot(&info)),
            }
        }
        SnapshotCommand::Restore {
            snapshot_id,
            confirm: confirmed,
            skip_meta_check,
        } => {
            restore(conn, output, snapshot_id, confirmed, skip_meta_check).await?;
        }
        SnapshotCommand::Delete { snapshot_id } => {
            let response = conn
                .call(oam.delete_snapshot(conn.request(pb::DeleteSnapshotRequest {
                    snapshot_id: snapshot_id.clone(),
                })))
                .await?;
            match output {
                OutputFormat::Json => print_json(&json!({"deleted": response.deleted})),
                OutputFormat::Table if response.deleted => {
                    println!("snapshot {snapshot_id} deleted")
                }
                OutputFormat::Table => {}
            }
            if !response.deleted {
                bail!("snapshot {snapshot_id} was not deleted");
            }
        }
        SnapshotCommand::Prune { keep, table } => {
            let response = spinner(
                format!("pruning snapshots, keeping {keep}"),
                conn.call(oam.prune_snapshots(conn.request(pb::PruneSnapshotsRequest {
                    keep,
                    table: table.unwrap_or_default(),
                }))),
            )
            .await?;
            match output {
                OutputFormat::Json => print_json(&json!({"deleted_count": response.deleted_count})),
                OutputFormat::Table => println!("pruned {} snapshots", response.deleted_count),
            }
        }
    }
    Ok(())
}

async fn restore(
    conn: &Connection,
    output: OutputFormat,
    snapshot_id: String,
    confirmed: bool,
    skip_meta_check: bool,
) -> anyhow::Result<()> {
    let mut oam = conn.oam();
    if !confirmed {
        let info = conn
            .call(
                oam.inspect_snapshot(conn.request(pb::InspectSnapshotRequest {
                    snapshot_id: snapshot_id.clone(),
                })),
            )
            .await?
            .info
            .unwrap_or_default();
        eprint!("{}", render_snapshot(&info));
        let question =
            format!("Restore every target from snapshot {snapshot_id}? Current rows are replaced.");
        if !confirm(&question)? {
            bail!("restore of snapshot {snapshot_id} cancelled");
        }
    }
    let response = spinner(
        format!("restoring snapshot {snapshot_id}"),
        conn.call(
            oam.restore_snapshot(conn.request(pb::RestoreSnapshotRequest {
                snapshot_id,
                confirm: true,
                skip_meta_check,
            })),
        ),
    )
    .await?;
    if output == OutputFormat::Json {
        print_json(&json!({
            "accepted": response.accepted,
            "message": response.message,
            "user_meta": format::meta_json(&response.user_meta),
            "warnings": response.warnings,
        }));
    } else {
        if !response.user_meta.is_empty() {
            println!("Snapshot user metadata:");
            print!("{}", meta_lines(&response.user_meta));
        }
        for warning in &response.warnings {
            println!("warning: {warning}");
        }
        if response.accepted {
            println!("{}", response.message);
        }
    }
    if !response.accepted {
        bail!("restore refused: {}", response.message);
    }
    Ok(())
}

fn meta_lines(meta: &std::collections::HashMap<String, pb::Value>) -> String {
    let mut pairs: Vec<(String, String)> = meta
        .iter()
        .map(|(k, v)| (format!("  {k}"), format::value(v)))
        .collect();
    pairs.sort();
    format::key_values(&pairs)
}

fn snapshot_json(s: &pb::SnapshotInfo) -> Json {
    json!({
        "snapshot_id": s.snapshot_id,
        "created_at": format::timestamp_json(s.created_at.as_ref()),
        "format": s.format,
        "source_positions": s.source_positions.iter().map(|p| json!({"source_id": p.source_id, "position": p.position})).collect::<Vec<_>>(),
        "tables": s.tables.iter().map(|t| json!({
            "table": table_name(&t.schema, &t.table),
            "row_count": t.row_count,
            "target_type": t.target_type,
            "columns": t.columns.iter().map(format::column_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "size_bytes": s.size_bytes,
        "store_type": s.store_type,
        "store_location": s.store_location,
        "user_meta": format::meta_json(&s.user_meta),
    })
}

/// The human form of `ListSnapshots`.
pub(crate) fn render_snapshots(snapshots: &[pb::SnapshotInfo]) -> String {
    let mut table = Table::new(["ID", "CREATED", "TABLES", "ROWS", "SIZE", "STORE"]);
    table.right_align(2).right_align(3).right_align(4);
    for s in snapshots {
        let rows: u64 = s.tables.iter().map(|t| t.row_count).sum();
        table.row([
            s.snapshot_id.clone(),
            format::timestamp(s.created_at.as_ref()),
            s.tables.len().to_string(),
            rows.to_string(),
            format::bytes(s.size_bytes),
            s.store_type.clone(),
        ]);
    }
    table.render()
}

/// The human form of one snapshot.
pub(crate) fn render_snapshot(s: &pb::SnapshotInfo) -> String {
    let mut out = format::key_values(&[
        ("Snapshot".to_string(), s.snapshot_id.clone()),
        (
            "Created".to_string(),
            format::timestamp(s.created_at.as_ref()),
        ),
        ("Format".to_string(), s.format.clone()),
        ("Size".to_string(), format::bytes(s.size_bytes)),
        (
            "Store".to_string(),
            format!("{} {}", s.store_type, s.store_location)
                .trim()
                .to_string(),
        ),
    ]);
    out.push_str("Positions:\n");
    let mut positions = Table::new(["SOURCE", "POSITION"]);
    for p in &s.source_positions {
        positions.row([p.source_id.clone(), p.position.clone()]);
    }
    out.push_str(&positions.render());
    out.push_str("Tables:\n");
    let mut tables = Table::new(["TABLE", "ROWS", "TARGET", "COLUMNS"]);
    tables.right_align(1);
    for t in &s.tables {
        tables.row([
            table_name(&t.schema, &t.table),
            t.row_count.to_string(),
            t.target_type.clone(),
            t.columns.len().to_string(),
        ]);
    }
    out.push_str(&tables.render());
    if !s.user_meta.is_empty() {
        out.push_str("User metadata:\n");
        out.push_str(&meta_lines(&s.user_meta));
    }
    out
}

/// `laredo dead-letters ...`.
pub(crate) async fn dead_letters(
    conn: &Connection,
    output: OutputFormat,
    args: DeadLetterArgs,
) -> anyhow::Result<()> {
    let mut oam = conn.oam();
    match args.command {
        Some(DeadLetterCommand::Replay { pipeline_id }) => {
            let response = spinner(
                format!("replaying dead letters of {pipeline_id}"),
                conn.call(oam.replay_dead_letters(
                    conn.request(pb::ReplayDeadLettersRequest { pipeline_id }),
                )),
            )
            .await?;
            match output {
                OutputFormat::Json => print_json(&json!({
                    "replayed": response.replayed,
                    "succeeded": response.succeeded,
                    "failed": response.failed,
                })),
                OutputFormat::Table => println!(
                    "replayed {}, succeeded {}, failed {}",
                    response.replayed, response.succeeded, response.failed
                ),
            }
        }
        Some(DeadLetterCommand::Purge { pipeline_id }) => {
            let response = conn
                .call(
                    oam.purge_dead_letters(
                        conn.request(pb::PurgeDeadLettersRequest { pipeline_id }),
                    ),
                )
                .await?;
            match output {
                OutputFormat::Json => print_json(&json!({"purged": response.purged})),
                OutputFormat::Table => println!("purged {}", response.purged),
            }
        }
        None => {
            let Some(pipeline_id) = args.pipeline_id else {
                bail!("name the pipeline: laredo dead-letters <pipeline_id>");
            };
            let response = conn
                .call(
                    oam.list_dead_letters(conn.request(pb::ListDeadLettersRequest {
                        pipeline_id,
                        limit: args.limit,
                    })),
                )
                .await?;
            match output {
                OutputFormat::Json => print_json(&json!({
                    "total_count": response.total_count,
                    "entries": response.entries.iter().map(|e| json!({
                        "id": e.id,
                        "timestamp": format::timestamp_json(e.timestamp.as_ref()),
                        "table": table_name(&e.schema, &e.table),
                        "action": format::action(e.action),
                        "position": e.position,
                        "xid": e.xid,
                        "new": format::opt_row_json(e.new_values.as_ref()),
                        "old": format::opt_row_json(e.old_values.as_ref()),
                        "error_message": e.error_message,
                    })).collect::<Vec<_>>(),
                })),
                OutputFormat::Table => print!("{}", render_dead_letters(&response)),
            }
        }
    }
    Ok(())
}

/// The human form of `ListDeadLetters`.
pub(crate) fn render_dead_letters(response: &pb::ListDeadLettersResponse) -> String {
    let mut table = Table::new(["TIMESTAMP", "ACTION", "POSITION", "ERROR"]);
    for e in &response.entries {
        table.row([
            format::timestamp(e.timestamp.as_ref()),
            format::action(e.action),
            e.position.clone(),
            e.error_message.clone(),
        ]);
    }
    format!(
        "{}Showing {} of {} dead letters\n",
        table.render(),
        response.entries.len(),
        response.total_count
    )
}

/// `laredo replay`: starts a replay and follows it until it ends; Ctrl-C stops it.
pub(crate) async fn replay(
    conn: &Connection,
    output: OutputFormat,
    snapshot_id: String,
    pipeline: String,
    speed: ReplaySpeedArg,
    tables: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let mut oam = conn.oam();
    let speed = match speed {
        ReplaySpeedArg::Full => pb::ReplaySpeed::Full,
        ReplaySpeedArg::Realtime => pb::ReplaySpeed::Realtime,
    };
    // Listen for Ctrl-C from before the replay starts: the first poll registers it.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    tokio::select! {
        biased;
        _ = &mut ctrl_c => bail!("interrupted before the replay started"),
        () = std::future::ready(()) => {}
    }
    let started = conn
        .call(oam.start_replay(conn.request(pb::StartReplayRequest {
            snapshot_id,
            target_pipeline_id: pipeline,
            speed: speed as i32,
            tables,
        })))
        .await?;
    if !started.accepted {
        bail!("replay refused: {}", started.message);
    }
    let replay_id = started.replay_id;
    eprintln!(
        "replay {replay_id} started: {} (Ctrl-C to stop)",
        started.message
    );
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(format!("replay {replay_id}: starting"));
    bar.enable_steady_tick(Duration::from_millis(120));
    let status = loop {
        let status = conn
            .call(
                oam.get_replay_status(conn.request(pb::GetReplayStatusRequest {
                    replay_id: replay_id.clone(),
                })),
            )
            .await?;
        if status.state != pb::ReplayState::Running as i32 {
            break status;
        }
        bar.set_message(format!(
            "replay {replay_id}: {} rows, {}",
            status.rows_replayed,
            format::proto_duration(status.elapsed.as_ref())
        ));
        tokio::select! {
            _ = &mut ctrl_c => {
                bar.finish_and_clear();
                let stopped = conn
                    .call(oam.stop_replay(conn.request(pb::StopReplayRequest { replay_id: replay_id.clone() })))
                    .await?;
                eprintln!("replay {replay_id} {}", if stopped.stopped { "stopped" } else { "had already ended" });
                return Ok(ExitCode::FAILURE);
            }
            () = tokio::time::sleep(PROGRESS_POLL_INTERVAL) => {}
        }
    };
    bar.finish_and_clear();
    let state = format::replay_state(status.state);
    match output {
        OutputFormat::Json => print_json(&json!({
            "replay_id": status.replay_id,
            "state": state,
            "rows_replayed": status.rows_replayed,
            "elapsed_seconds": status.elapsed.and_then(|d| Duration::try_from(d).ok()).map(|d| d.as_secs_f64()),
            "message": status.message,
        })),
        OutputFormat::Table => println!(
            "replay {replay_id}: {state}, {} rows in {}{}",
            status.rows_replayed,
            format::proto_duration(status.elapsed.as_ref()),
            if status.message.is_empty() {
                String::new()
            } else {
                format!(": {}", status.message)
            }
        ),
    }
    if status.state == pb::ReplayState::Completed as i32 {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_list_sums_rows_per_snapshot() {
        let snapshot = pb::SnapshotInfo {
            snapshot_id: "snap-1".into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            tables: vec![
                pb::SnapshotTableInfo {
                    row_count: 10,
                    ..Default::default()
                },
                pb::SnapshotTableInfo {
                    row_count: 5,
                    ..Default::default()
                },
            ],
            size_bytes: 2048,
            store_type: "local".into(),
            ..Default::default()
        };
        assert_eq!(
            render_snapshots(&[snapshot]),
            "ID      CREATED               TABLES  ROWS     SIZE  STORE\n\
             snap-1  2023-11-14T22:13:20Z       2    15  2.0 KiB  local\n"
        );
    }

    #[test]
    fn dead_letters_show_a_total() {
        let response = pb::ListDeadLettersResponse {
            entries: vec![pb::DeadLetterEntry {
                action: pb::ChangeAction::Insert as i32,
                position: "7".into(),
                error_message: "bad row refused".into(),
                ..Default::default()
            }],
            total_count: 3,
        };
        assert_eq!(
            render_dead_letters(&response),
            "TIMESTAMP  ACTION  POSITION  ERROR\n\
             -          INSERT  7         bad row refused\n\
             Showing 1 of 3 dead letters\n"
        );
    }
}
