//! The reconnect loop: one stream, many replication sessions.
//!
//! `stream` runs sessions until cancelled. The first one starts the connection the
//! baseline left pending; later ones reopen the persistent slot from the acknowledged
//! LSN, after looking the slot up so that a slot that was dropped or invalidated asks
//! the engine for a re-baseline instead of a retry. A lost session is retried with the
//! backoff of [`crate::ReconnectPolicy`]; the count starts over once a session got
//! somewhere, and the source fails when the attempts run out. An ephemeral source
//! cannot reconnect: its temporary slot ended with the connection, so it asks for a
//! re-baseline.
//!
//! A message that does not decode may have been damaged on the way, or be a poison
//! message that fails every time. [`PoisonGuard`] counts the failures at one WAL
//! position across sessions, and the source stops, naming the position and the cause,
//! once it failed `max_protocol_failures` times in a row.

use std::collections::HashMap;
use std::sync::atomic::Ordering as AtomicOrdering;

use laredo_core::{ChangeHandler, Position, SourceError, SourceState};
use pgwire_replication::ReplicationClient;
use tokio_util::sync::CancellationToken;

use super::connection::QUERY_TIMEOUT;
use super::decoder::Decoder;
use super::position::{format_lsn, pair};
use super::session::SessionEnd;
use super::{PgSource, other};
use crate::config::SlotMode;
use crate::replication;

/// Counts decode failures of the replication message at one WAL position across
/// reconnects: the same message failing again and again is a poison message, and the
/// source must stop and say so instead of reconnecting for ever.
#[derive(Debug, Default)]
struct PoisonGuard {
    /// The position of the last failure and how many times in a row it failed.
    last: Option<(u64, u32)>,
}

impl PoisonGuard {
    /// Records a failure at `lsn`; `Some(count)` once it failed `max` times in a row.
    fn record(&mut self, lsn: u64, max: u32) -> Option<u32> {
        let count = match self.last {
            Some((at, count)) if at == lsn => count + 1,
            _ => 1,
        };
        self.last = Some((lsn, count));
        (count >= max).then_some(count)
    }

    /// A message past the failing one decoded: the failure did not repeat.
    fn passed(&mut self, lsn: u64) {
        if self.last.is_some_and(|(at, _)| lsn > at) {
            self.last = None;
        }
    }
}

impl PgSource {
    /// [`SyncSource::stream`](laredo_core::SyncSource::stream) without the state
    /// bookkeeping around it.
    pub(super) async fn stream_inner(
        &self,
        from: Position,
        handler: &mut dyn ChangeHandler,
        cancel: CancellationToken,
    ) -> Result<(), SourceError> {
        let inner = &self.inner;
        let (from_lsn, from_seq) = pair(&from);
        inner.advance_delivered((from_lsn, from_seq));
        let mut decoder = Decoder {
            undecodable: None,
            relations: HashMap::new(),
            tables: inner.tables.lock().clone(),
            tx: None,
            last_complete: from_lsn,
        };
        let mut failures = 0u32;
        let mut poison = PoisonGuard::default();
        loop {
            let pending = inner.pending.lock().await.take();
            let client = match pending {
                Some(mut pending) => {
                    pending
                        .client
                        .start()
                        .await
                        .map_err(|e| other("starting replication", e))?;
                    Ok(pending.client)
                }
                None => {
                    if inner.config.slot_mode == SlotMode::Ephemeral {
                        return Err(SourceError::ReBaselineRequired {
                            reason: format!(
                                "the temporary replication slot {:?} ended with its connection",
                                inner.slot.lock().clone()
                            ),
                        });
                    }
                    self.open_stream().await
                }
            };
            let end = match client {
                Ok(client) => {
                    inner.set_streaming();
                    match self
                        .run_session(client, &mut decoder, handler, &cancel)
                        .await
                    {
                        Ok(end) => {
                            poison.passed(decoder.last_complete);
                            end
                        }
                        Err(error) => match decoder.undecodable.take() {
                            // A message that did not decode: maybe damaged on the way,
                            // maybe a poison message. Reconnect and read it again; stop
                            // once it failed max_protocol_failures times in a row.
                            Some((lsn, cause)) => {
                                let max = inner.config.max_protocol_failures;
                                if let Some(count) = poison.record(lsn, max) {
                                    return Err(other(
                                        format!(
                                            "the replication message at {} could not be \
                                             decoded {count} times in a row \
                                             (max_protocol_failures): {cause}; the source \
                                             stops instead of reading it again",
                                            format_lsn(lsn)
                                        ),
                                        error,
                                    ));
                                }
                                tracing::warn!(
                                    position = %format_lsn(lsn),
                                    error = %error,
                                    "an undecodable replication message: reconnecting to read it again"
                                );
                                SessionEnd::Lost {
                                    error,
                                    progressed: false,
                                }
                            }
                            None => return Err(error),
                        },
                    }
                }
                Err(error) if error.is_rebaseline_required() => return Err(error),
                Err(error) => SessionEnd::Lost {
                    error,
                    progressed: false,
                },
            };
            match end {
                SessionEnd::Cancelled => return Ok(()),
                SessionEnd::Lost { error, progressed } => {
                    if cancel.is_cancelled() {
                        return Ok(());
                    }
                    if inner.config.slot_mode == SlotMode::Ephemeral {
                        return Err(SourceError::ReBaselineRequired {
                            reason: format!(
                                "the replication connection of temporary slot {:?} was lost: {error}",
                                inner.slot.lock().clone()
                            ),
                        });
                    }
                    if progressed {
                        failures = 0;
                    }
                    failures += 1;
                    let policy = &inner.config.reconnect;
                    if failures > policy.attempts() {
                        return Err(other(
                            format!(
                                "replication connection lost: exhausted {} reconnect attempts",
                                policy.attempts()
                            ),
                            error,
                        ));
                    }
                    let wait = policy.backoff(failures);
                    tracing::warn!(
                        error = %error, attempt = failures, wait_ms = wait.as_millis(),
                        "replication connection lost; reconnecting"
                    );
                    inner.set_state(SourceState::Reconnecting);
                    decoder.tx = None;
                    tokio::select! {
                        () = cancel.cancelled() => return Ok(()),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Opens a streaming session on the persistent slot, checking the slot first so a
    /// missing or invalidated slot is reported as such.
    async fn open_stream(&self) -> Result<ReplicationClient, SourceError> {
        let inner = &self.inner;
        let slot = inner.config.slot_name.clone();
        // The query connection may be down too; a failure here is a lost connection.
        let lookup = async {
            let client = inner.query_client().await?;
            client
                .query_opt(
                    "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await
                .map_err(|e| other(format!("looking up replication slot {slot:?}"), e))
        };
        let row = match tokio::time::timeout(QUERY_TIMEOUT, lookup).await {
            Ok(row) => row?,
            Err(_) => {
                *inner.query.lock().await = None;
                return Err(SourceError::msg(format!(
                    "looking up replication slot {slot:?} took longer than {QUERY_TIMEOUT:?}"
                )));
            }
        };
        match row {
            None => {
                return Err(SourceError::ReBaselineRequired {
                    reason: format!("replication slot {slot:?} does not exist any more (dropped?)"),
                });
            }
            Some(row) if row.get::<_, Option<String>>(0).as_deref() == Some("lost") => {
                return Err(SourceError::ReBaselineRequired {
                    reason: format!(
                        "replication slot {slot:?} was invalidated (wal_status = lost): the WAL it needed is gone"
                    ),
                });
            }
            Some(_) => {}
        }
        let acked = inner.acked.load(AtomicOrdering::SeqCst);
        let mut config = inner.replication_config(&slot, acked);
        replication::route(&inner.params, &mut config)
            .await
            .map_err(|e| {
                other(
                    format!("opening the replication stream of slot {slot:?}"),
                    e,
                )
            })?;
        ReplicationClient::connect(config).await.map_err(|e| {
            other(
                format!("opening the replication stream of slot {slot:?}"),
                e,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_message_failing_max_times_in_a_row_is_a_poison_message() {
        let mut guard = PoisonGuard::default();
        assert_eq!(guard.record(100, 3), None);
        assert_eq!(guard.record(100, 3), None);
        assert_eq!(guard.record(100, 3), Some(3));
        // Another position starts over; getting past the failing one clears it.
        let mut guard = PoisonGuard::default();
        assert_eq!(guard.record(100, 3), None);
        assert_eq!(guard.record(200, 3), None);
        assert_eq!(guard.record(200, 3), None);
        guard.passed(250);
        assert_eq!(guard.record(200, 3), None);
        guard.passed(150);
        assert_eq!(guard.record(200, 3), None);
        assert_eq!(guard.record(200, 3), Some(3));
    }
}
