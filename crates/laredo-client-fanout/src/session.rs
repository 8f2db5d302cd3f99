//! The background task: connect, apply, reconnect, fail over.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use laredo_core::ColumnDefinition;
use laredo_proto::RowDecoder;
use laredo_proto::laredo::replication::v1 as pb;
use laredo_proto::laredo::replication::v1::laredo_replication_service_client::LaredoReplicationServiceClient;
use laredo_proto::laredo::v1 as wire;
use tonic::Streaming;
use tonic::transport::Endpoint;

use crate::Inner;

/// How a stream ended.
enum End {
    Cancelled,
    /// The stream failed or ended; `progressed` when it had its handshake.
    Lost {
        error: String,
        progressed: bool,
    },
    /// The table's primary key changed: start over without resume fields.
    Restart,
    /// A snapshot row or journal entry did not decode: start over without resume
    /// fields, after the backoff (a server that keeps sending such rows must not be
    /// hammered with snapshot requests).
    Undecodable {
        error: String,
    },
}

type Opening = Pin<Box<dyn Future<Output = Result<Opened, String>> + Send>>;

struct Opened {
    stream: Streaming<pb::SyncResponse>,
    handshake: pb::Handshake,
    endpoint: String,
}

pub(crate) async fn run(inner: Arc<Inner>) {
    let options = &inner.options;
    let mut backoff = options.initial_backoff;
    let mut endpoint = 0usize;
    let mut by_position = false;
    loop {
        if inner.cancel().is_cancelled() {
            return;
        }
        let address = options.endpoints[endpoint % options.endpoints.len()].clone();
        let opened = tokio::select! {
            () = inner.cancel().cancelled() => return,
            opened = open(Arc::clone(&inner), address.clone(), by_position) => opened,
        };
        let end = match opened {
            Ok(opened) => drive(&inner, opened).await,
            Err(error) => End::Lost {
                error,
                progressed: false,
            },
        };
        match end {
            End::Cancelled => return,
            End::Restart => {
                inner.replica.update(|s| {
                    s.last_seq = 0;
                    s.last_position.clear();
                    s.snapshot_id.clear();
                });
                backoff = options.initial_backoff;
            }
            End::Undecodable { error } => {
                tracing::warn!(endpoint = %address, %error, "an undecodable row: taking a fresh snapshot");
                inner.replica.update(|s| {
                    s.last_seq = 0;
                    s.last_position.clear();
                    s.snapshot_id.clear();
                });
                tokio::select! {
                    () = inner.cancel().cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(options.max_backoff);
            }
            End::Lost { error, progressed } => {
                tracing::warn!(endpoint = %address, %error, "replication stream lost");
                if progressed {
                    backoff = options.initial_backoff;
                }
                // Another instance (when there is one) resumes by position.
                if options.endpoints.len() > 1 {
                    endpoint += 1;
                    by_position = true;
                }
                tokio::select! {
                    () = inner.cancel().cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(options.max_backoff);
            }
        }
    }
}

/// Connects and reads the handshake. `by_position` leaves out the sequence and snapshot
/// id (they belong to another server instance).
async fn open(inner: Arc<Inner>, address: String, by_position: bool) -> Result<Opened, String> {
    let options = &inner.options;
    let channel = Endpoint::from_shared(address.clone())
        .map_err(|e| format!("bad address {address}: {e}"))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let state = inner.replica.state();
    let request = pb::SyncRequest {
        schema: options.schema.clone(),
        table: options.table.clone(),
        client_id: options.client_id.clone(),
        last_known_sequence: if by_position { 0 } else { state.last_seq },
        last_known_source_position: state.last_position.clone(),
        last_snapshot_id: if by_position {
            String::new()
        } else {
            state.snapshot_id.clone()
        },
        filters: options.filters.clone(),
        // The replica holds the table: it needs neither column names on full rows nor
        // whole previous rows.
        row_encoding: pb::RowEncoding::Compact.into(),
    };
    let mut client = LaredoReplicationServiceClient::new(channel);
    let mut stream = client
        .sync(request)
        .await
        .map_err(|s| format!("{address}: {} ({:?})", s.message(), s.code()))?
        .into_inner();
    let first = tokio::time::timeout(options.heartbeat_timeout, stream.message())
        .await
        .map_err(|_| format!("{address}: no handshake"))?
        .map_err(|s| format!("{address}: {} ({:?})", s.message(), s.code()))?;
    match first.and_then(|m| m.message) {
        Some(pb::sync_response::Message::Handshake(handshake)) => Ok(Opened {
            stream,
            handshake,
            endpoint: address,
        }),
        other => Err(format!("{address}: expected a handshake, got {other:?}")),
    }
}

/// Applies a stream until it ends; on `GoAway`, opens the next one while still applying
/// this one, and switches when the new handshake arrives.
async fn drive(inner: &Arc<Inner>, opened: Opened) -> End {
    let Opened {
        mut stream,
        handshake,
        endpoint,
    } = opened;
    if let Err(error) = take_handshake(inner, &handshake, &endpoint).await {
        return End::Lost {
            error,
            progressed: false,
        };
    }
    let mut decoder = RowDecoder::new();
    // COMPACT journal rows that hold every column come without names, in the order of
    // the handshake's row columns (as of the resume point), then of each schema change.
    let compact = handshake.row_encoding == i32::from(pb::RowEncoding::Compact);
    if compact {
        decoder
            .set_positional_columns(handshake.row_columns.iter().map(|c| c.column_name.as_str()));
    }
    let mut switching: Option<Opening> = None;
    loop {
        let next = async {
            match switching.as_mut() {
                Some(opening) => Some(opening.await),
                None => std::future::pending().await,
            }
        };
        let message = tokio::select! {
            () = inner.cancel().cancelled() => return End::Cancelled,
            opened = next => {
                switching = None;
                match opened {
                    Some(Ok(opened)) => {
                        tracing::info!(from = %endpoint, to = %opened.endpoint, "switched streams after GoAway");
                        return Box::pin(drive(inner, opened)).await;
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "opening a stream after GoAway failed; staying on the old one");
                    }
                    None => {}
                }
                continue;
            }
            message = tokio::time::timeout(inner.options.heartbeat_timeout, stream.message()) => message,
        };
        let message = match message {
            Err(_) => {
                return End::Lost {
                    error: format!("nothing received for {:?}", inner.options.heartbeat_timeout),
                    progressed: true,
                };
            }
            Ok(Err(status)) => {
                return End::Lost {
                    error: format!("{} ({:?})", status.message(), status.code()),
                    progressed: true,
                };
            }
            Ok(Ok(None)) => {
                return End::Lost {
                    error: "the server closed the stream".into(),
                    progressed: true,
                };
            }
            Ok(Ok(Some(message))) => message,
        };
        let Some(message) = message.message else {
            continue;
        };
        use pb::sync_response::Message as M;
        match message {
            M::Handshake(_) => {
                return End::Lost {
                    error: "a second handshake".into(),
                    progressed: true,
                };
            }
            M::SnapshotBegin(begin) => {
                inner.replica.clear().await;
                inner.replica.update(|s| s.snapshot_id = begin.snapshot_id);
            }
            M::SnapshotRows(batch) => {
                let mut rows = Vec::with_capacity(batch.rows.len());
                for row in &batch.rows {
                    match decoder.decode(row) {
                        Ok(row) => rows.push(row),
                        // A replica without the row would be wrong until it is next
                        // changed: try again with a fresh snapshot.
                        Err(e) => {
                            return End::Undecodable {
                                error: format!("snapshot row: {e}"),
                            };
                        }
                    }
                }
                inner.replica.upsert_rows(&rows).await;
            }
            M::SnapshotEnd(end) => {
                inner.replica.update(|s| {
                    s.last_seq = end.sequence;
                    s.last_position = end.source_position;
                });
                inner.ready.send_replace(true);
            }
            M::JournalEntries(entries) => {
                for entry in entries.entries {
                    if let Err(error) = apply(inner, &mut decoder, entry).await {
                        // Skipping the entry would leave the replica wrong for good.
                        return End::Undecodable { error };
                    }
                }
                inner.ready.send_replace(true);
            }
            M::SchemaChange(change) => {
                if compact {
                    decoder.set_positional_columns(
                        change.new_columns.iter().map(|c| c.column_name.as_str()),
                    );
                }
                let columns: Vec<ColumnDefinition> = change
                    .new_columns
                    .iter()
                    .map(ColumnDefinition::from)
                    .collect();
                let old: Vec<ColumnDefinition> = change
                    .old_columns
                    .iter()
                    .map(ColumnDefinition::from)
                    .collect();
                if laredo_core::primary_key_columns(&old)
                    != laredo_core::primary_key_columns(&columns)
                {
                    tracing::warn!("the primary key changed: taking a fresh snapshot");
                    return End::Restart;
                }
                if let Err(error) = inner.replica.set_columns(columns).await {
                    tracing::warn!(%error, "taking a fresh snapshot");
                    return End::Restart;
                }
                inner.replica.update(|s| {
                    s.last_seq = change.sequence;
                    if !change.source_position.is_empty() {
                        s.last_position = change.source_position;
                    }
                });
            }
            M::Heartbeat(beat) => {
                inner.replica.update(|s| {
                    if beat.delivered_sequence > s.last_seq {
                        s.last_seq = beat.delivered_sequence;
                        if !beat.delivered_source_position.is_empty() {
                            s.last_position = beat.delivered_source_position;
                        }
                    }
                });
            }
            M::CaughtUp(_) => {
                inner.ready.send_replace(true);
            }
            M::GoAway(go_away) => {
                inner.stats.lock().go_aways += 1;
                if switching.is_none() {
                    let reconnect_after = go_away
                        .reconnect_after
                        .and_then(|d| Duration::try_from(d).ok())
                        .unwrap_or(Duration::ZERO);
                    let options = &inner.options;
                    let next = options.endpoints[(options
                        .endpoints
                        .iter()
                        .position(|e| *e == endpoint)
                        .unwrap_or(0)
                        + 1)
                        % options.endpoints.len()]
                    .clone();
                    let opener = Arc::clone(inner);
                    let wait = reconnect_after;
                    switching = Some(Box::pin(async move {
                        tokio::time::sleep(wait).await;
                        open(opener, next, true).await
                    }));
                }
            }
        }
    }
}

async fn take_handshake(
    inner: &Arc<Inner>,
    handshake: &pb::Handshake,
    endpoint: &str,
) -> Result<(), String> {
    let columns: Vec<ColumnDefinition> = handshake
        .columns
        .iter()
        .map(ColumnDefinition::from)
        .collect();
    inner.replica.set_columns(columns).await?;
    let full = handshake.mode == pb::SyncMode::FullSnapshot as i32;
    inner.replica.update(|s| {
        if s.server_id != handshake.server_id {
            // Sequences are per server: from here on, this server's.
            s.server_id = handshake.server_id.clone();
            s.last_seq = handshake.resume_from_sequence;
        }
    });
    let mut stats = inner.stats.lock();
    stats.sessions += 1;
    stats.endpoint = endpoint.to_string();
    if full {
        stats.full_snapshots += 1;
    } else {
        stats.resumed += 1;
    }
    Ok(())
}

/// Applies one journal entry; an error (a row that does not decode) leaves the replica
/// as it was.
async fn apply(
    inner: &Arc<Inner>,
    decoder: &mut RowDecoder,
    entry: pb::JournalEntry,
) -> Result<(), String> {
    let mut decode = |row: Option<&wire::Row>| {
        row.map(|row| decoder.decode(row))
            .transpose()
            .map_err(|e| format!("entry {}: {e}", entry.sequence))
    };
    let new = decode(entry.new_values.as_ref())?;
    let old = decode(entry.old_values.as_ref())?;
    let position = entry.source_position.as_str();
    let replica = &inner.replica;
    match wire::ChangeAction::try_from(entry.action) {
        Ok(wire::ChangeAction::Insert) => {
            if let Some(new) = &new {
                replica.insert(new, position).await;
            }
        }
        Ok(wire::ChangeAction::Update) => {
            if let Some(new) = &new {
                replica.update_row(new, old.as_ref(), position).await;
            }
        }
        Ok(wire::ChangeAction::Delete) => {
            if let Some(old) = &old {
                replica.delete(old, position).await;
            }
        }
        Ok(wire::ChangeAction::Truncate) => replica.truncate(position).await,
        other => tracing::warn!(action = ?other, "skipping a journal entry with an unknown action"),
    }
    replica.update(|s| {
        s.last_seq = entry.sequence;
        if !entry.source_position.is_empty() {
            s.last_position = entry.source_position;
        }
    });
    Ok(())
}
