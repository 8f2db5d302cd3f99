//! The stream's decoder: replication events in, [`ChangeEvent`]s out.
//!
//! [`Decoder`] keeps the state of one stream across its sessions: the open
//! transaction, the relations the server described, and the end of the last complete
//! transaction. A `Begin` opens a transaction, each change in it takes the next
//! sequence number (its position, see [`super::position`]), a `Commit` closes it and
//! is a heartbeat; a keepalive outside a transaction is one too. A change already
//! delivered before a reconnect (the server resends whole transactions) is skipped, as
//! is a change of a table the source does not serve. A row that does not map to
//! [`laredo_core::Value`]s goes to [`ChangeHandler::on_change_failed`] with its raw
//! text, for the pipelines' dead letter stores; a message that does not decode at all
//! fails the session (the reconnect loop reads it again, see [`super::reconnect`]).

use std::collections::HashMap;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use laredo_core::{ChangeEvent, ChangeHandler, Position, SourceError, TableIdentifier};
use pgwire_replication::ReplicationEvent;

use super::relations::RelationInfo;
use super::rows::{key_row, raw_row, tuple_row};
use super::{Inner, PgSource};
use crate::pgoutput::{Message, OldTuple};

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// The decoding state of one stream.
pub(super) struct Decoder {
    /// The relations the server described, by OID.
    pub(super) relations: HashMap<u32, RelationInfo>,
    /// The tables the source serves.
    pub(super) tables: Vec<TableIdentifier>,
    /// The open transaction.
    pub(super) tx: Option<Tx>,
    /// The end LSN of the last complete transaction (at first, the start position).
    pub(super) last_complete: u64,
}

/// A transaction between its `Begin` and its `Commit`.
pub(super) struct Tx {
    final_lsn: u64,
    xid: i64,
    commit_time: SystemTime,
    seq: u64,
    /// Whether a change of ours was delivered (else its `tx_starts` entry goes).
    delivered: bool,
}

/// A PostgreSQL timestamp (microseconds since 2000-01-01) as a [`SystemTime`].
fn pg_time(micros: i64) -> SystemTime {
    let unix = micros.saturating_add(PG_EPOCH_OFFSET_MICROS);
    match u64::try_from(unix) {
        Ok(us) => UNIX_EPOCH + Duration::from_micros(us),
        Err(_) => UNIX_EPOCH,
    }
}

impl PgSource {
    /// Handles one replication event.
    ///
    /// # Errors
    /// A message that does not decode, a stream out of order, or what `handler`
    /// returned.
    pub(super) async fn handle_event(
        &self,
        event: ReplicationEvent,
        decoder: &mut Decoder,
        handler: &mut dyn ChangeHandler,
    ) -> Result<(), SourceError> {
        let inner = &self.inner;
        match event {
            ReplicationEvent::Begin {
                final_lsn,
                xid,
                commit_time_micros,
            } => {
                let final_lsn = final_lsn.as_u64();
                // A transaction the server sends again after a reconnect keeps the entry
                // of its first delivery: `last_complete` may have moved past it since.
                inner
                    .tx_starts
                    .lock()
                    .entry(final_lsn)
                    .or_insert(decoder.last_complete);
                decoder.tx = Some(Tx {
                    final_lsn,
                    xid: i64::from(xid),
                    commit_time: pg_time(commit_time_micros),
                    seq: 0,
                    delivered: false,
                });
            }
            ReplicationEvent::Commit {
                end_lsn,
                commit_time_micros,
                ..
            } => {
                let end = end_lsn.as_u64();
                if let Some(tx) = decoder.tx.take()
                    && !tx.delivered
                {
                    inner.tx_starts.lock().remove(&tx.final_lsn);
                }
                decoder.last_complete = end;
                inner.server_wal_end.fetch_max(end, AtomicOrdering::SeqCst);
                if inner.advance_delivered((end, 0)) {
                    {
                        let mut commits = inner.commits.lock();
                        // Bounded: the oldest entries (what lag_time reports) stay; when
                        // full, the newest is replaced, so lag never reads as zero while
                        // commits are unacknowledged.
                        if commits.len() >= 100_000 {
                            commits.pop_back();
                        }
                        commits.push_back((end, pg_time(commit_time_micros)));
                    }
                    handler.on_heartbeat(Position::from_pair(end, 0)).await?;
                }
            }
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                let wal_end = wal_end.as_u64();
                inner
                    .server_wal_end
                    .fetch_max(wal_end, AtomicOrdering::SeqCst);
                if decoder.tx.is_none() && inner.advance_delivered((wal_end, 0)) {
                    decoder.last_complete = decoder.last_complete.max(wal_end);
                    handler
                        .on_heartbeat(Position::from_pair(wal_end, 0))
                        .await?;
                }
            }
            ReplicationEvent::XLogData {
                data,
                wal_start,
                wal_end,
                ..
            } => {
                inner
                    .server_wal_end
                    .fetch_max(wal_end.as_u64(), AtomicOrdering::SeqCst);
                let message = match (inner.decode)(&data) {
                    Ok(message) => message,
                    Err(e) => {
                        // The reconnect loop reads it again, up to max_protocol_failures
                        // times: the position tells the same message failing again.
                        return Err(SourceError::Protocol {
                            message: "undecodable pgoutput message".to_string(),
                            position: Some(Position::from_u64(wal_start.as_u64())),
                            cause: Some(e.into()),
                        });
                    }
                };
                self.handle_message(message, decoder, handler).await?;
            }
            ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => {}
        }
        Ok(())
    }

    async fn handle_message(
        &self,
        message: Message,
        decoder: &mut Decoder,
        handler: &mut dyn ChangeHandler,
    ) -> Result<(), SourceError> {
        match message {
            Message::Relation(relation) => self.on_relation(relation, decoder, handler).await,
            Message::Insert(insert) => {
                let Some((rel, position, tx)) = next_change(decoder, insert.relation, &self.inner)?
                else {
                    return Ok(());
                };
                let row = match tuple_row(rel, &insert.new, None) {
                    Ok(row) => row,
                    Err(e) => {
                        let event = ChangeEvent::insert(
                            rel.table.clone(),
                            position,
                            raw_row(rel, &insert.new),
                        )
                        .with_commit(Some(tx.0), tx.1);
                        return handler.on_change_failed(event, e.to_string()).await;
                    }
                };
                let event = ChangeEvent::insert(rel.table.clone(), position, row)
                    .with_commit(Some(tx.0), tx.1);
                handler.on_change(event).await
            }
            Message::Update(update) => {
                let Some((rel, position, tx)) = next_change(decoder, update.relation, &self.inner)?
                else {
                    return Ok(());
                };
                let decoded = (|| {
                    let (old_row, full_old) = match &update.old {
                        Some(OldTuple::Full(old)) => (Some(tuple_row(rel, old, None)?), Some(old)),
                        Some(OldTuple::Key(key)) => (Some(key_row(rel, key)?), None),
                        None => (None, None),
                    };
                    Ok::<_, SourceError>((tuple_row(rel, &update.new, full_old)?, old_row))
                })();
                let (new_row, old_row) = match decoded {
                    Ok(rows) => rows,
                    Err(e) => {
                        let event = ChangeEvent::update(
                            rel.table.clone(),
                            position,
                            raw_row(rel, &update.new),
                            None,
                        )
                        .with_commit(Some(tx.0), tx.1);
                        return handler.on_change_failed(event, e.to_string()).await;
                    }
                };
                let event = ChangeEvent::update(rel.table.clone(), position, new_row, old_row)
                    .with_commit(Some(tx.0), tx.1);
                handler.on_change(event).await
            }
            Message::Delete(delete) => {
                let Some((rel, position, tx)) = next_change(decoder, delete.relation, &self.inner)?
                else {
                    return Ok(());
                };
                let (decoded, raw) = match &delete.old {
                    OldTuple::Full(old) => (tuple_row(rel, old, None), old),
                    OldTuple::Key(key) => (key_row(rel, key), key),
                };
                let identity = match decoded {
                    Ok(identity) => identity,
                    Err(e) => {
                        let event =
                            ChangeEvent::delete(rel.table.clone(), position, raw_row(rel, raw))
                                .with_commit(Some(tx.0), tx.1);
                        return handler.on_change_failed(event, e.to_string()).await;
                    }
                };
                let event = ChangeEvent::delete(rel.table.clone(), position, identity)
                    .with_commit(Some(tx.0), tx.1);
                handler.on_change(event).await
            }
            Message::Truncate(truncate) => {
                for oid in truncate.relations {
                    let Some((rel, position, tx)) = next_change(decoder, oid, &self.inner)? else {
                        continue;
                    };
                    let event = ChangeEvent::truncate(rel.table.clone(), position)
                        .with_commit(Some(tx.0), tx.1);
                    handler.on_change(event).await?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// A stream out of the protocol's order, where no position tells which message.
fn protocol(message: impl Into<String>) -> SourceError {
    SourceError::Protocol {
        message: message.into(),
        position: None,
        cause: None,
    }
}

/// A change's relation, position and (commit time, xid).
type NextChange<'a> = (&'a RelationInfo, Position, (SystemTime, i64));

/// The relation, position and (commit time, xid) of the next change of `oid`, or
/// `None` when the change is not ours or was delivered before a reconnect.
fn next_change<'a>(
    decoder: &'a mut Decoder,
    oid: u32,
    inner: &Inner,
) -> Result<Option<NextChange<'a>>, SourceError> {
    let Some(tx) = decoder.tx.as_mut() else {
        return Err(protocol("a change arrived outside a transaction"));
    };
    tx.seq += 1;
    let position = (tx.final_lsn, tx.seq);
    let tx_delivered = &mut tx.delivered;
    let commit = (tx.commit_time, tx.xid);
    let Some(rel) = decoder.relations.get(&oid) else {
        return Err(protocol(format!(
            "a change of relation {oid} arrived before its relation message"
        )));
    };
    if !rel.ours {
        return Ok(None);
    }
    *tx_delivered = true;
    if !inner.advance_delivered(position) {
        return Ok(None);
    }
    Ok(Some((
        rel,
        Position::from_pair(position.0, position.1),
        commit,
    )))
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use laredo_core::{ColumnDefinition, SyncSource};
    use pgwire_replication::Lsn;

    use super::*;
    use crate::config::PgSourceConfig;
    use crate::pgoutput::{self, Relation, TupleValue};
    use crate::source::position::format_lsn;

    /// Collects what the source hands over.
    #[derive(Default)]
    struct Collect {
        changes: Vec<Position>,
    }

    #[async_trait]
    impl ChangeHandler for Collect {
        async fn on_change(&mut self, event: ChangeEvent) -> Result<(), SourceError> {
            self.changes.push(event.position);
            Ok(())
        }
    }

    fn xlog(message: &Message) -> ReplicationEvent {
        ReplicationEvent::XLogData {
            wal_start: Lsn(0),
            wal_end: Lsn(0),
            server_time_micros: 0,
            data: pgoutput::encode(message).into(),
        }
    }

    #[tokio::test]
    async fn a_resent_transaction_keeps_the_ack_boundary_of_its_first_delivery() {
        let source = PgSource::new(PgSourceConfig::new("postgres://u@localhost/db")).unwrap();
        let t = TableIdentifier::new("public", "t");
        *source.inner.tables.lock() = vec![t.clone()];
        source.inner.columns.lock().insert(
            t.clone(),
            vec![ColumnDefinition::new("id", "int8").primary_key(1).oid(20)],
        );
        let mut decoder = Decoder {
            relations: HashMap::new(),
            tables: vec![t],
            tx: None,
            last_complete: 50,
        };
        let relation = Message::Relation(Relation {
            oid: 7,
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: b'd',
            columns: vec![pgoutput::RelationColumn {
                key: true,
                name: "id".into(),
                type_oid: 20,
                type_modifier: -1,
            }],
        });
        let insert = |id: &str| {
            Message::Insert(pgoutput::Insert {
                relation: 7,
                new: vec![TupleValue::Text(id.as_bytes().to_vec())],
            })
        };
        let begin = |final_lsn: u64| ReplicationEvent::Begin {
            final_lsn: Lsn(final_lsn),
            xid: 1,
            commit_time_micros: 0,
        };
        let commit = |lsn: u64, end: u64| ReplicationEvent::Commit {
            lsn: Lsn(lsn),
            end_lsn: Lsn(end),
            commit_time_micros: 0,
        };
        let mut handler = Collect::default();
        let mut feed = Vec::new();
        // T1 (commit at 100, ends 110), T2 (commit at 200, ends 210); then, after a
        // reconnect, the server sends T1 again.
        feed.extend([
            xlog(&relation),
            begin(100),
            xlog(&insert("1")),
            commit(100, 110),
        ]);
        feed.extend([begin(200), xlog(&insert("2")), commit(200, 210)]);
        feed.extend([
            xlog(&relation),
            begin(100),
            xlog(&insert("1")),
            commit(100, 110),
        ]);
        for event in feed {
            source
                .handle_event(event, &mut decoder, &mut handler)
                .await
                .unwrap();
        }
        assert_eq!(
            handler.changes,
            vec![Position::from_pair(100, 1), Position::from_pair(200, 1)],
            "the resent change is skipped"
        );
        // The engine acknowledges the first change of T1 only: nothing after the
        // transaction before T1 may be confirmed.
        source.ack(&Position::from_pair(100, 1)).await.unwrap();
        assert_eq!(source.acknowledged_lsn(), 50);
        source.ack(&Position::from_pair(110, 0)).await.unwrap();
        assert_eq!(source.acknowledged_lsn(), 110);
    }

    #[tokio::test]
    async fn an_undecodable_message_is_a_protocol_error_with_its_position_for_the_poison_guard() {
        let source = PgSource::new(PgSourceConfig::new("postgres://u@localhost/db")).unwrap();
        let mut decoder = Decoder {
            relations: HashMap::new(),
            tables: Vec::new(),
            tx: None,
            last_complete: 0,
        };
        let garbage = ReplicationEvent::XLogData {
            wal_start: Lsn(0x16_B374_D848),
            wal_end: Lsn(0x16_B374_D900),
            server_time_micros: 0,
            data: vec![b'Z', 1, 2, 3].into(),
        };
        let error = source
            .handle_event(garbage, &mut decoder, &mut Collect::default())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("undecodable"), "{error}");
        let SourceError::Protocol {
            position: Some(position),
            cause: Some(cause),
            ..
        } = &error
        else {
            panic!("a protocol error with its position and cause: {error:?}");
        };
        assert_eq!(
            format_lsn(position.as_u64().expect("an LSN")),
            "16/B374D848"
        );
        assert!(!cause.to_string().is_empty());
    }
}
