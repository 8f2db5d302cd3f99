//! One replication session: from a started replication connection to its end.
//!
//! The session reads events from the connection's read-ahead and hands each to the
//! decoder, racing cancellation, pause, acknowledgements (sent to the server as the
//! applied LSN) and the silence watchdog. While paused it delivers nothing; a change
//! read while a pause arrived is held, not dropped. Each delivery holds `gate`, so
//! `pause` can wait for one under way. Events already read ahead are handled in bursts
//! of [`FAST_PATH_BURST`] without waiting on anything else, so pause and cancel stay
//! prompt while a busy stream pays no `select!` per event.
//!
//! A session ends cancelled, or lost (the connection failed, the server ended the
//! stream, the watchdog gave up); the reconnect loop decides what comes next.

use std::sync::atomic::Ordering as AtomicOrdering;

use futures_util::FutureExt;
use laredo_core::{ChangeHandler, SourceError};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};
use tokio_util::sync::CancellationToken;

use super::PgSource;
use super::decoder::Decoder;
use super::errors::sqlstate;
use super::watchdog::{Silence, SilenceWatch};

/// Events handled in a row from the read-ahead before the stream looks at cancel,
/// pause and acknowledgements again.
const FAST_PATH_BURST: usize = 256;

/// Why a replication session ended.
pub(super) enum SessionEnd {
    /// The stream was cancelled.
    Cancelled,
    /// The connection failed; `progressed` tells whether anything arrived first.
    Lost {
        error: SourceError,
        progressed: bool,
    },
}

impl PgSource {
    /// Streams on `client` until cancelled or the connection is lost.
    ///
    /// # Errors
    /// What the decoder or `handler` returned: the session cannot go on.
    pub(super) async fn run_session(
        &self,
        mut client: ReplicationClient,
        decoder: &mut Decoder,
        handler: &mut dyn ChangeHandler,
        cancel: &CancellationToken,
    ) -> Result<SessionEnd, SourceError> {
        let inner = &self.inner;
        let mut progressed = false;
        let mut paused = inner.paused.subscribe();
        let mut sent_ack = inner.acked.load(AtomicOrdering::SeqCst);
        client.update_applied_lsn(Lsn(sent_ack));
        let mut silence = SilenceWatch::new(inner.config.receive_timeout);
        loop {
            if *paused.borrow_and_update() {
                tokio::select! {
                    () = cancel.cancelled() => {
                        let _ = client.shutdown().await;
                        return Ok(SessionEnd::Cancelled);
                    }
                    _ = paused.changed() => continue,
                    () = inner.ack_changed.notified() => {
                        client.update_applied_lsn(Lsn(inner.acked.load(AtomicOrdering::SeqCst)));
                        continue;
                    }
                }
            }
            let event = tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    let _ = client.shutdown().await;
                    return Ok(SessionEnd::Cancelled);
                }
                () = inner.ack_changed.notified() => {
                    sent_ack = inner.acked.load(AtomicOrdering::SeqCst);
                    client.update_applied_lsn(Lsn(sent_ack));
                    continue;
                }
                _ = paused.changed() => continue,
                event = tokio::time::timeout_at(silence.deadline(), client.recv()) => match event {
                    Ok(event) => event,
                    Err(_) => match silence.expired(inner) {
                        Silence::Probed => continue,
                        Silence::Dead => {
                            client.abort();
                            return Ok(SessionEnd::Lost {
                                error: SourceError::connection_lost(format!(
                                    "nothing received for {:?}, not even a probe; the connection is presumed dead",
                                    inner.config.receive_timeout
                                )),
                                progressed,
                            });
                        }
                    },
                },
            };
            silence.heard();
            let event = match self.received(event, progressed)? {
                Ok(event) => event,
                Err(end) => return Ok(end),
            };
            progressed = true;
            let gate = inner.gate.lock().await;
            if *inner.paused.borrow() {
                // Paused while waiting for the gate: deliver after resume. The event
                // is held here, not dropped.
                drop(gate);
                while *paused.borrow_and_update() {
                    tokio::select! {
                        () = cancel.cancelled() => {
                            let _ = client.shutdown().await;
                            return Ok(SessionEnd::Cancelled);
                        }
                        _ = paused.changed() => {}
                    }
                }
                let _delivering = inner.gate.lock().await;
                self.handle_event(event, decoder, handler).await?;
                continue;
            }
            self.handle_event(event, decoder, handler).await?;
            // Fast path: events already read ahead are handled without waiting on
            // anything else (a burst at a time, so pause and cancel stay prompt).
            for _ in 0..FAST_PATH_BURST {
                if cancel.is_cancelled() || *inner.paused.borrow() {
                    break;
                }
                let Some(next) = client.recv().now_or_never() else {
                    break;
                };
                let event = match self.received(next, progressed)? {
                    Ok(event) => event,
                    Err(end) => return Ok(end),
                };
                self.handle_event(event, decoder, handler).await?;
            }
            drop(gate);
            let acked = inner.acked.load(AtomicOrdering::SeqCst);
            if acked > sent_ack {
                client.update_applied_lsn(Lsn(acked));
                sent_ack = acked;
            }
        }
    }

    /// Sorts what `recv` returned into an event, the end of the session, or an error
    /// that needs a re-baseline.
    fn received(
        &self,
        result: pgwire_replication::Result<Option<ReplicationEvent>>,
        progressed: bool,
    ) -> Result<Result<ReplicationEvent, SessionEnd>, SourceError> {
        match result {
            Ok(Some(event)) => Ok(Ok(event)),
            Ok(None) => Ok(Err(SessionEnd::Lost {
                error: SourceError::connection_lost("the server ended the replication stream"),
                progressed,
            })),
            Err(e) => {
                let slot = self.inner.slot.lock().clone();
                // Whatever the error (a dropped slot and a dropped publication share
                // SQLSTATE 42704), the next attempt looks the slot up first and asks
                // for a re-baseline only when the slot itself is gone or invalidated;
                // anything else is retried with backoff and fails the source in the end.
                if let Some(code) = sqlstate(&e) {
                    tracing::warn!(slot, code, error = %e, "the server ended the replication stream");
                }
                Ok(Err(SessionEnd::Lost {
                    error: SourceError::ConnectionLost {
                        message: format!("replication stream of slot {slot:?}"),
                        cause: Some(e.into()),
                    },
                    progressed,
                }))
            }
        }
    }
}
