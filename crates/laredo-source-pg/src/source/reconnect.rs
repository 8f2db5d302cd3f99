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

use super::PgSource;
use super::decoder::Decoder;
use super::errors::{connect_failed, failed};
use super::position::{format_lsn, pair};
use super::session::SessionEnd;
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

/// The WAL position of a replication message that did not decode, for the poison
/// guard; `None` for any other error.
fn undecodable_at(error: &SourceError) -> Option<u64> {
    match error {
        SourceError::Protocol {
            position: Some(position),
            ..
        } => position.as_u64(),
        _ => None,
    }
}

/// The error that ends the stream once the reconnect attempts ran out, `last` being
/// the last attempt's: still an operator's matter when `last` was (a privilege, a
/// setting), else a lost connection.
fn attempts_exhausted(message: String, last: SourceError) -> SourceError {
    if last.needs_operator() {
        let denied = matches!(last, SourceError::PermissionDenied { .. });
        let cause = Some(last.into());
        return if denied {
            SourceError::PermissionDenied { message, cause }
        } else {
            SourceError::Configuration { message, cause }
        };
    }
    SourceError::ConnectionLost {
        message,
        cause: Some(last.into()),
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
                        .map_err(|e| failed("starting replication", e))?;
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
                        Err(error) => match undecodable_at(&error) {
                            // A message that did not decode: maybe damaged on the way,
                            // maybe a poison message. Reconnect and read it again; stop
                            // once it failed max_protocol_failures times in a row.
                            Some(lsn) => {
                                let max = inner.config.max_protocol_failures;
                                if let Some(count) = poison.record(lsn, max) {
                                    let cause =
                                        error.cause().map(ToString::to_string).unwrap_or_default();
                                    return Err(SourceError::Protocol {
                                        message: format!(
                                            "the replication message at {} could not be \
                                             decoded {count} times in a row \
                                             (max_protocol_failures): {cause}; the source \
                                             stops instead of reading it again",
                                            format_lsn(lsn)
                                        ),
                                        position: Some(Position::from_u64(lsn)),
                                        cause: Some(error.into()),
                                    });
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
                        return Err(attempts_exhausted(
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
        inner.check_slot(&slot).await?;
        let acked = inner.acked.load(AtomicOrdering::SeqCst);
        let mut config = inner.replication_config(&slot, acked);
        let endpoint = || {
            format!(
                "PostgreSQL at {}:{} for the replication stream of slot {slot:?}",
                inner.params.host, inner.params.port
            )
        };
        replication::route(&inner.params, &mut config)
            .await
            .map_err(|e| connect_failed(endpoint(), e))?;
        ReplicationClient::connect(config)
            .await
            .map_err(|e| connect_failed(endpoint(), e))
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
