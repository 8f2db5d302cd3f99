//! The baseline and its handoff to the stream.
//!
//! A first baseline creates the slot on a replication connection with an exported
//! snapshot ([`crate::replication::create_slot_with_snapshot`]), reads every table
//! under that snapshot on a query connection (`SET TRANSACTION SNAPSHOT`), and parks the
//! replication connection, not yet streaming, as `pending`: the snapshot lives only
//! until the next command on it. `stream` then starts it at the slot's consistent
//! point, so the baseline plus the stream is every change exactly once. A stateful
//! source drops its old slot first; a baseline that fails drops the new slot again, so
//! a slot whose baseline never completed is never resumed from.
//!
//! A reload (some tables, or while the stream runs) reads under a fresh snapshot and
//! keeps the slot: changes held back meanwhile are older than the snapshot and are
//! applied afterwards, so the table converges as the stream catches up.

use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::{SystemTime, UNIX_EPOCH};

use laredo_core::{BaselineSink, Position, SourceError, TableIdentifier};
use tokio_postgres::Client;

use super::errors::failed;
use super::position::format_lsn;
use super::{Inner, Pending, PgSource, end_unstarted};
use crate::baseline::TableCopy;
use crate::catalog;
use crate::config::SlotMode;
use crate::replication::create_slot_with_snapshot;

impl PgSource {
    /// [`SyncSource::baseline`](laredo_core::SyncSource::baseline).
    pub(super) async fn run_baseline(
        &self,
        tables: &[TableIdentifier],
        sink: &mut dyn BaselineSink,
    ) -> Result<Position, SourceError> {
        let inner = &self.inner;
        let all_tables = {
            let ours = inner.tables.lock();
            ours.iter().all(|t| tables.contains(t))
        };
        if inner.streaming.load(AtomicOrdering::SeqCst) || !all_tables {
            // A reload while the stream runs: a fresh snapshot, no new slot. Changes
            // held while it runs are applied afterwards (they are older than the
            // snapshot, so the table converges as the stream catches up).
            inner.copy_tables(tables, None, sink).await?;
            let (lsn, seq) = *inner.last_delivered.lock();
            return Ok(Position::from_pair(lsn, seq));
        }
        if let Some(old) = inner.pending.lock().await.take() {
            end_unstarted(old.client);
        }
        let client = inner.query_client().await?;
        if inner.config.publication.create {
            // Put back a publication dropped since init (its loss ends the stream).
            let ours = inner.tables.lock().clone();
            catalog::sync_publication(&client, &inner.config.publication, &ours)
                .await
                .map_err(|e| {
                    failed(
                        format!("publication {:?}", inner.config.publication.name),
                        e,
                    )
                })?;
        }
        let slot = match inner.config.slot_mode {
            SlotMode::Stateful => {
                let slot = inner.config.slot_name.clone();
                if inner.drop_slot(&client, &slot).await? {
                    tracing::info!(
                        slot,
                        "dropped the old replication slot for a fresh baseline"
                    );
                }
                slot
            }
            SlotMode::Ephemeral => {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                format!(
                    "{}_{:x}",
                    inner.config.slot_name,
                    (nanos as u64) ^ u64::from(std::process::id())
                )
            }
        };
        *inner.slot.lock() = slot.clone();
        let (repl, created) = create_slot_with_snapshot(
            &inner.params,
            &slot,
            &inner.config.publication.name,
            inner.config.slot_mode == SlotMode::Ephemeral,
        )
        .await
        .map_err(|e| failed(format!("creating replication slot {slot:?}"), e))?;
        tracing::info!(
            slot,
            consistent_point = %format_lsn(created.consistent_point),
            "replication slot created; reading the baseline under its snapshot"
        );
        if let Err(e) = inner
            .copy_tables(tables, Some(&created.snapshot_name), sink)
            .await
        {
            end_unstarted(repl);
            if inner.config.slot_mode == SlotMode::Stateful {
                // A slot whose baseline never completed must not be resumed from.
                if let Err(drop_error) = inner.drop_slot(&client, &slot).await {
                    tracing::warn!(slot, error = %drop_error, "could not drop the slot of a failed baseline");
                }
            }
            return Err(e);
        }
        inner
            .acked
            .store(created.consistent_point, AtomicOrdering::SeqCst);
        *inner.last_delivered.lock() = (created.consistent_point, 0);
        inner.tx_starts.lock().clear();
        inner.commits.lock().clear();
        *inner.pending.lock().await = Some(Pending { client: repl });
        Ok(Position::from_pair(created.consistent_point, 0))
    }
}

impl Inner {
    /// Reads `tables` under `snapshot` (or a fresh snapshot) into `sink`.
    async fn copy_tables(
        &self,
        tables: &[TableIdentifier],
        snapshot: Option<&str>,
        sink: &mut dyn BaselineSink,
    ) -> Result<(), SourceError> {
        // The connection's I/O is driven by this task too (not a spawned one): reading,
        // decoding and applying on one thread keeps rows allocated and freed on the
        // same thread, on the allocator's thread-local fast path. Handing decoded rows
        // or socket buffers to another thread measured 20-30% slower.
        let (client, connection) = self.connect_unspawned().await?;
        let copy = self.copy_on(&client, tables, snapshot, sink);
        tokio::pin!(connection);
        tokio::select! {
            outcome = copy => outcome,
            ended = &mut connection => Err(match ended {
                Ok(()) => SourceError::connection_lost("the baseline connection closed"),
                Err(e) => SourceError::ConnectionLost {
                    message: "the baseline connection failed".to_string(),
                    cause: Some(e.into()),
                },
            }),
        }
    }

    /// The baseline transaction of [`Self::copy_tables`] on `client`.
    async fn copy_on(
        &self,
        client: &Client,
        tables: &[TableIdentifier],
        snapshot: Option<&str>,
        sink: &mut dyn BaselineSink,
    ) -> Result<(), SourceError> {
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| failed("starting the baseline transaction", e))?;
        if let Some(snapshot) = snapshot {
            client
                .batch_execute(&format!(
                    "SET TRANSACTION SNAPSHOT '{}'",
                    snapshot.replace('\'', "''")
                ))
                .await
                .map_err(|e| failed(format!("importing snapshot {snapshot:?}"), e))?;
        }
        let mut jobs = Vec::with_capacity(tables.len());
        for table in tables {
            let columns = self.columns.lock().get(table).cloned().ok_or_else(|| {
                SourceError::msg(format!("{table} was not initialised by this source"))
            })?;
            let filter = self.config.publication.row_filters.get(table).cloned();
            jobs.push((table.clone(), columns, filter));
        }
        // Rows are read, decoded and applied in turn, on this task (see copy_tables).
        let batch_rows = self.config.baseline_batch_rows.max(1);
        for (table, columns, filter) in jobs {
            let mut copy = TableCopy::start_filtered(client, &table, &columns, filter.as_deref())
                .await
                .map_err(|e| failed(format!("baseline of {table}"), e))?;
            while let Some(rows) = copy
                .next_batch(batch_rows)
                .await
                .map_err(|e| failed(format!("baseline of {table}"), e))?
            {
                sink.on_rows(&table, rows).await?;
            }
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| failed("ending the baseline transaction", e))
    }
}
