//! Lag: how far the acknowledged position is behind the server.
//!
//! Bytes are the server's WAL end minus the acknowledged LSN. The WAL end comes from
//! the stream (commits, keepalives, message headers) and, so that lag also shows
//! during the baseline and while the replication connection is down or paused, from a
//! poller reading `pg_current_wal_lsn()` on the query connection. Time is the age of
//! the oldest delivered, unacknowledged commit (`commits`, trimmed by each
//! acknowledgement).

use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::{Duration, SystemTime};

use laredo_core::LagInfo;

use super::Inner;
use super::connection::QUERY_TIMEOUT;
use super::position::parse_lsn;

/// How often the server's WAL end is read for the lag figures.
const LAG_POLL_INTERVAL: Duration = Duration::from_secs(2);

impl Inner {
    /// Reads the server's WAL end on the query connection every few seconds, so lag
    /// shows during the baseline and while the replication connection is down or
    /// paused. Started once, by `init`; stopped by `close`.
    pub(super) fn start_lag_poller(self: &Arc<Self>) {
        let mut poller = self.poller.lock();
        if poller.is_some() {
            return;
        }
        let inner = Arc::downgrade(self);
        *poller = Some(tokio::spawn(async move {
            loop {
                let Some(strong) = inner.upgrade() else {
                    return;
                };
                let read = async {
                    let client = strong.query_client().await.ok()?;
                    let row = client
                        .query_one("SELECT pg_current_wal_lsn()::text", &[])
                        .await
                        .ok()?;
                    parse_lsn(row.get(0))
                };
                if let Ok(Some(lsn)) = tokio::time::timeout(QUERY_TIMEOUT, read).await {
                    strong.server_wal_end.fetch_max(lsn, AtomicOrdering::SeqCst);
                }
                drop(strong);
                tokio::time::sleep(LAG_POLL_INTERVAL).await;
            }
        }));
    }

    /// The lag figures as they stand.
    pub(super) fn lag(&self) -> LagInfo {
        let wal_end = self.server_wal_end.load(AtomicOrdering::SeqCst);
        let acked = self.acked.load(AtomicOrdering::SeqCst);
        LagInfo {
            lag_bytes: wal_end.saturating_sub(acked),
            lag_time: Some(
                self.commits
                    .lock()
                    .front()
                    .and_then(|&(_, at)| SystemTime::now().duration_since(at).ok())
                    .unwrap_or(Duration::ZERO),
            ),
        }
    }
}
