//! The receive watchdog: telling a quiet replication connection from a dead one.
//!
//! PostgreSQL sends nothing on an idle, caught-up stream, and a connection cut
//! without a FIN or RST (a dropped route, a frozen server) reads as silence too. So
//! after half of `receive_timeout` of silence [`SilenceWatch`] writes a
//! non-transactional logical message (`pg_logical_emit_message`) on the query
//! connection, which the server sends down the replication connection at once. Only
//! when the probe was written and still nothing arrived by the full timeout is the
//! connection given up; a probe that could not be written proves nothing and starts
//! the wait over.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use super::Inner;

/// The silence deadline of one replication session, and its probe while one is out.
pub(super) struct SilenceWatch {
    timeout: Duration,
    last_heard: tokio::time::Instant,
    probe: Option<tokio::task::JoinHandle<bool>>,
}

/// What [`SilenceWatch::expired`] found.
pub(super) enum Silence {
    /// A probe is out, or could not be written: keep waiting.
    Probed,
    /// The probe went out and nothing came back: the connection is dead.
    Dead,
}

impl SilenceWatch {
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            last_heard: tokio::time::Instant::now(),
            probe: None,
        }
    }

    /// When the silence is looked at next.
    pub(super) fn deadline(&self) -> tokio::time::Instant {
        match self.probe {
            None => self.last_heard + self.timeout / 2,
            Some(_) => self.last_heard + self.timeout,
        }
    }

    /// Something arrived: the silence starts over.
    pub(super) fn heard(&mut self) {
        self.last_heard = tokio::time::Instant::now();
        if let Some(probe) = self.probe.take() {
            probe.abort();
        }
    }

    /// The deadline passed: send a probe, or give the connection up.
    pub(super) fn expired(&mut self, inner: &Arc<Inner>) -> Silence {
        match self.probe.take() {
            None => {
                let inner = Arc::clone(inner);
                let within = self.timeout / 2;
                self.probe = Some(tokio::spawn(async move {
                    let probe = async {
                        let client = inner.query_client().await.ok()?;
                        client
                            .execute(
                                "SELECT pg_logical_emit_message(false, 'laredo.probe', '')",
                                &[],
                            )
                            .await
                            .ok()
                    };
                    let sent = tokio::time::timeout(within, probe)
                        .await
                        .ok()
                        .flatten()
                        .is_some();
                    if !sent {
                        tracing::debug!("the silence probe could not be written");
                    }
                    sent
                }));
                Silence::Probed
            }
            Some(probe) if probe.is_finished() => {
                // A probe that could not be written (no privilege, server unreachable
                // on the query connection too) proves nothing: give the connection up
                // only when the probe went out and still nothing came back.
                let sent = probe.now_or_never().and_then(Result::ok).unwrap_or(false);
                if sent {
                    Silence::Dead
                } else {
                    self.last_heard = tokio::time::Instant::now();
                    Silence::Probed
                }
            }
            Some(probe) => {
                // The probe itself is stuck: the query connection is as dead as this one.
                probe.abort();
                Silence::Dead
            }
        }
    }
}
