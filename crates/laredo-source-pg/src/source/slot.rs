//! The replication slot: dropping it, and moving its confirmed position by hand.
//!
//! A stateful source keeps one persistent slot (`slot_name`); an ephemeral source
//! creates a temporary slot with a suffix for each baseline, which the server drops
//! with its connection. The slot's `confirmed_flush_lsn` is the acknowledged position
//! the server keeps for us: while a session streams, its status updates carry it; when
//! none does (after the stream ended, at close), [`Inner::advance_slot`] moves it with
//! `pg_replication_slot_advance`. A slot held by a session that is still exiting
//! reports SQLSTATE 55006 (object in use): both operations wait and try again.
//!
//! Before a session resumes from the persistent slot, [`Inner::check_slot`] looks it
//! up: a slot dropped since, or invalidated by the server (`wal_status = lost`, once it
//! held back more WAL than `max_slot_wal_keep_size`), cannot serve the position, and
//! the engine re-baselines instead of the source retrying.

use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Duration;

use laredo_core::SourceError;
use tokio_postgres::Client;

use super::Inner;
use super::connection::QUERY_TIMEOUT;
use super::errors::failed;
use super::position::format_lsn;

impl Inner {
    /// Drops `slot` if it exists, ending the session that holds it first.
    pub(super) async fn drop_slot(&self, client: &Client, slot: &str) -> Result<bool, SourceError> {
        for _ in 0..50 {
            let row = client
                .query_opt(
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await
                .map_err(|e| failed(format!("looking up replication slot {slot:?}"), e))?;
            let Some(row) = row else {
                return Ok(false);
            };
            if let Some(pid) = row.get::<_, Option<i32>>(0) {
                let _ = client
                    .execute("SELECT pg_terminate_backend($1)", &[&pid])
                    .await;
            }
            match client
                .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) => {
                    let code = e.code().map(|c| c.code().to_string());
                    match code.as_deref() {
                        // Still active (the terminated session has not ended yet).
                        Some("55006") => tokio::time::sleep(Duration::from_millis(100)).await,
                        Some("42704") => return Ok(false),
                        _ => {
                            return Err(failed(format!("dropping replication slot {slot:?}"), e));
                        }
                    }
                }
            }
        }
        Err(SourceError::msg(format!(
            "replication slot {slot:?} stays in use by another session"
        )))
    }

    /// Moves the persistent slot's confirmed position to the acknowledged LSN while no
    /// session streams from it.
    pub(super) async fn advance_slot(&self) -> Result<(), SourceError> {
        let lsn = self.acked.load(AtomicOrdering::SeqCst);
        if lsn == 0 {
            return Ok(());
        }
        let client = self.query_client().await?;
        let slot = self.config.slot_name.clone();
        let mut wait = Duration::from_millis(10);
        for _ in 0..40 {
            let result = client
                .query_opt(
                    "SELECT pg_replication_slot_advance(slot_name, $2::text::pg_lsn) \
                     FROM pg_replication_slots \
                     WHERE slot_name = $1 AND confirmed_flush_lsn < $2::text::pg_lsn",
                    &[&slot, &format_lsn(lsn)],
                )
                .await;
            match result {
                Ok(_) => return Ok(()),
                // The walsender that held the slot is still exiting.
                Err(e) if e.code().is_some_and(|c| c.code() == "55006") => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(250));
                }
                Err(e) => {
                    return Err(failed(
                        format!("advancing replication slot {slot:?} to {}", format_lsn(lsn)),
                        e,
                    ));
                }
            }
        }
        Err(SourceError::msg(format!(
            "replication slot {slot:?} stayed in use; its position was not advanced to {}",
            format_lsn(lsn)
        )))
    }

    /// Looks `slot` up before a session resumes from it: a slot that was dropped or
    /// invalidated is [`SourceError::SlotMissing`] or [`SourceError::SlotInvalidated`],
    /// which the engine answers with a re-baseline, rather than a failed connection.
    ///
    /// # Errors
    /// As above, or the lookup failed or timed out (the query connection may be down
    /// too: a lost connection).
    pub(super) async fn check_slot(&self, slot: &str) -> Result<(), SourceError> {
        let lookup = async {
            let client = self.query_client().await?;
            client
                .query_opt(
                    "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await
                .map_err(|e| failed(format!("looking up replication slot {slot:?}"), e))
        };
        let row = match tokio::time::timeout(QUERY_TIMEOUT, lookup).await {
            Ok(row) => row?,
            Err(_) => {
                *self.query.lock().await = None;
                return Err(SourceError::connection_lost(format!(
                    "looking up replication slot {slot:?} took longer than {QUERY_TIMEOUT:?}"
                )));
            }
        };
        match row {
            None => Err(SourceError::SlotMissing {
                slot: slot.to_string(),
            }),
            Some(row) if row.get::<_, Option<String>>(0).as_deref() == Some("lost") => {
                Err(SourceError::SlotInvalidated {
                    slot: slot.to_string(),
                    reason: "wal_status = lost, the WAL it needed is gone".to_string(),
                })
            }
            Some(_) => Ok(()),
        }
    }
}
