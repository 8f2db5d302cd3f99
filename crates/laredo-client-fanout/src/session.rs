//! The background task: connect, apply, reconnect, fail over.
//!
//! Waits between attempts follow [`Backoff`]: a failure doubles the wait up to the
//! maximum, a session that got its handshake resets it, and a refusal of the credentials
//! (UNAUTHENTICATED, PERMISSION_DENIED, an unreadable token file) waits the maximum at
//! once, since retrying sooner cannot fix a token and only fills the server's log.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use laredo_core::ColumnDefinition;
use laredo_proto::RowDecoder;
use laredo_proto::laredo::replication::v1 as pb;
use laredo_proto::laredo::replication::v1::laredo_replication_service_client::LaredoReplicationServiceClient;
use laredo_proto::laredo::v1 as wire;
use tonic::Streaming;

use crate::Inner;
use crate::failure::{SessionError, SessionErrorKind};

/// How a stream ended.
enum End {
    Cancelled,
    /// The stream failed or ended; `progressed` when it had its handshake.
    Lost {
        error: SessionError,
        progressed: bool,
    },
    /// The table's primary key changed: start over without resume fields.
    Restart,
    /// A snapshot row or journal entry did not decode: start over without resume
    /// fields, after the backoff (a server that keeps sending such rows must not be
    /// hammered with snapshot requests).
    Undecodable {
        error: SessionError,
    },
}

type Opening = Pin<Box<dyn Future<Output = Result<Opened, SessionError>> + Send>>;

struct Opened {
    stream: Streaming<pb::SyncResponse>,
    handshake: pb::Handshake,
    /// The index of the endpoint.
    endpoint: usize,
}

/// The wait before the next attempt.
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// Back to the initial wait (a session got its handshake, or starts over).
    fn reset(&mut self) {
        self.next = self.initial;
    }

    /// The wait after a failure; the one after it doubles, up to the maximum. A
    /// credentials failure waits the maximum.
    fn after(&mut self, error: &SessionError) -> Duration {
        if error.is_credentials() {
            self.next = self.max;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

pub(crate) async fn run(inner: Arc<Inner>) {
    let options = &inner.options;
    let endpoints = inner.connector.len();
    let mut backoff = Backoff::new(options.initial_backoff, options.max_backoff);
    let mut endpoint = 0usize;
    let mut by_position = false;
    loop {
        if inner.cancel().is_cancelled() {
            return;
        }
        let opened = tokio::select! {
            () = inner.cancel().cancelled() => return,
            opened = open(Arc::clone(&inner), endpoint, by_position) => opened,
        };
        let end = match opened {
            Ok(opened) => drive(&inner, opened).await,
            Err(error) => End::Lost {
                error,
                progressed: false,
            },
        };
        let error = match end {
            End::Cancelled => return,
            End::Restart => {
                inner.replica.update(|s| {
                    s.last_seq = 0;
                    s.last_position.clear();
                    s.snapshot_id.clear();
                });
                backoff.reset();
                continue;
            }
            End::Undecodable { error } => {
                tracing::warn!(endpoint = %error.endpoint, error = %error.message, "an undecodable row: taking a fresh snapshot");
                inner.replica.update(|s| {
                    s.last_seq = 0;
                    s.last_position.clear();
                    s.snapshot_id.clear();
                });
                error
            }
            End::Lost { error, progressed } => {
                if progressed {
                    backoff.reset();
                }
                // Another instance (when there is one) resumes by position.
                if endpoints > 1 {
                    endpoint += 1;
                    by_position = true;
                }
                error
            }
        };
        let wait = backoff.after(&error);
        if error.is_credentials() {
            // An operator must act: the token is missing, wrong or of the wrong role.
            tracing::error!(
                endpoint = %error.endpoint,
                kind = ?error.kind,
                error = %error.message,
                retry_in = ?wait,
                "the server refused the client's credentials"
            );
        } else {
            tracing::warn!(endpoint = %error.endpoint, kind = ?error.kind, error = %error.message, retry_in = ?wait, "replication stream lost");
        }
        {
            let mut stats = inner.stats.lock();
            if matches!(
                error.kind,
                SessionErrorKind::Unauthenticated | SessionErrorKind::PermissionDenied
            ) {
                stats.auth_failures += 1;
            }
            stats.last_error = Some(error);
        }
        tokio::select! {
            () = inner.cancel().cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Connects and reads the handshake. `by_position` leaves out the sequence and snapshot
/// id (they belong to another server instance).
async fn open(
    inner: Arc<Inner>,
    endpoint: usize,
    by_position: bool,
) -> Result<Opened, SessionError> {
    let options = &inner.options;
    let url = inner.connector.url(endpoint).to_string();
    let authorization = inner.connector.authorization(&url).await?;
    let channel = inner.connector.connect(endpoint).await?;
    let state = inner.replica.state();
    let mut request = tonic::Request::new(pb::SyncRequest {
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
    });
    if let Some(value) = authorization {
        request.metadata_mut().insert("authorization", value);
    }
    let mut client = LaredoReplicationServiceClient::new(channel);
    let mut stream = client
        .sync(request)
        .await
        .map_err(|s| SessionError::from_status(&url, &s, SessionErrorKind::Refused))?
        .into_inner();
    let first = tokio::time::timeout(options.heartbeat_timeout, stream.message())
        .await
        .map_err(|_| SessionError::new(&url, SessionErrorKind::Refused, "no handshake"))?
        .map_err(|s| SessionError::from_status(&url, &s, SessionErrorKind::Refused))?;
    match first.and_then(|m| m.message) {
        Some(pb::sync_response::Message::Handshake(handshake)) => Ok(Opened {
            stream,
            handshake,
            endpoint,
        }),
        other => Err(SessionError::new(
            &url,
            SessionErrorKind::Refused,
            format!("expected a handshake, got {other:?}"),
        )),
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
    let url = inner.connector.url(endpoint).to_string();
    let lost = |kind: SessionErrorKind, message: String| End::Lost {
        error: SessionError::new(url.as_str(), kind, message),
        progressed: true,
    };
    if let Err(message) = take_handshake(inner, &handshake, &url).await {
        return End::Lost {
            error: SessionError::new(url.as_str(), SessionErrorKind::Refused, message),
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
                        tracing::info!(from = %url, to = %inner.connector.url(opened.endpoint), "switched streams after GoAway");
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
                return lost(
                    SessionErrorKind::Lost,
                    format!("nothing received for {:?}", inner.options.heartbeat_timeout),
                );
            }
            Ok(Err(status)) => {
                return End::Lost {
                    error: SessionError::from_status(&url, &status, SessionErrorKind::Lost),
                    progressed: true,
                };
            }
            Ok(Ok(None)) => {
                return lost(
                    SessionErrorKind::Lost,
                    "the server closed the stream".into(),
                );
            }
            Ok(Ok(Some(message))) => message,
        };
        let Some(message) = message.message else {
            continue;
        };
        use pb::sync_response::Message as M;
        match message {
            M::Handshake(_) => {
                return lost(SessionErrorKind::Lost, "a second handshake".into());
            }
            M::SnapshotBegin(begin) => {
                inner.replica.clear();
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
                                error: SessionError::new(
                                    url.as_str(),
                                    SessionErrorKind::Lost,
                                    format!("snapshot row: {e}"),
                                ),
                            };
                        }
                    }
                }
                inner.replica.upsert_rows(&rows);
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
                    if let Err(message) = apply(inner, &mut decoder, entry).await {
                        // Skipping the entry would leave the replica wrong for good.
                        return End::Undecodable {
                            error: SessionError::new(url.as_str(), SessionErrorKind::Lost, message),
                        };
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
                if let Err(error) = inner.replica.set_columns(columns) {
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
                    let next = (endpoint + 1) % inner.connector.len();
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
    inner.replica.set_columns(columns)?;
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
    stats.last_error = None;
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
                replica.insert(new, position);
            }
        }
        Ok(wire::ChangeAction::Update) => {
            if let Some(new) = &new {
                replica.update_row(new, old.as_ref(), position);
            }
        }
        Ok(wire::ChangeAction::Delete) => {
            if let Some(old) = &old {
                replica.delete(old, position);
            }
        }
        Ok(wire::ChangeAction::Truncate) => replica.truncate(position),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn error(kind: SessionErrorKind) -> SessionError {
        SessionError::new("http://127.0.0.1:1", kind, "test")
    }

    #[test]
    fn failures_double_the_wait_up_to_the_maximum() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let waits: Vec<u64> = (0..5)
            .map(|_| backoff.after(&error(SessionErrorKind::Connect)).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        backoff.reset();
        assert_eq!(
            backoff.after(&error(SessionErrorKind::Lost)),
            Duration::from_secs(1)
        );
    }

    /// A refused token does not fix itself: no quick retries that would only fill the
    /// server's log with rejected calls.
    #[test]
    fn a_refused_credential_waits_the_maximum_at_once() {
        for kind in [
            SessionErrorKind::Unauthenticated,
            SessionErrorKind::PermissionDenied,
            SessionErrorKind::TokenFile,
        ] {
            let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
            assert_eq!(
                backoff.after(&error(kind)),
                Duration::from_secs(30),
                "{kind:?}"
            );
            assert_eq!(
                backoff.after(&error(kind)),
                Duration::from_secs(30),
                "{kind:?}"
            );
        }
    }
}
