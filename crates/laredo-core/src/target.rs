//! The target side: [`SyncTarget`].

use std::any::Any;

use async_trait::async_trait;

use crate::BoxError;
use crate::position::Position;
use crate::row::Row;
use crate::snapshot::{SnapshotEntry, TableSnapshotInfo};
use crate::status::SchemaChangeResponse;
use crate::table::{ColumnDefinition, TableIdentifier};

/// A target's error. The engine retries, dead-letters or applies the pipeline's error
/// policy; the message names what failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}{}", crate::Causes(.cause.as_ref()))]
pub struct TargetError {
    message: String,
    cause: Option<BoxError>,
}

impl TargetError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            cause: None,
        }
    }

    /// An error with a message and a cause.
    pub fn with_source(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            message: message.into(),
            cause: Some(source.into()),
        }
    }

    /// The cause, if there is one (its text is part of this error's).
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.cause.as_deref()
    }

    /// The message, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Consumes the baseline rows and the changes of one table (one pipeline).
///
/// The engine calls the apply methods from a single task per pipeline, in source order,
/// so a target sees its changes strictly ordered. Methods take `&self` because readers
/// (queries, listeners) use the target concurrently: a target protects its own state.
///
/// Delivery is at-least-once (after a restart from the last ACK or a re-baseline a
/// change may arrive twice), so apply by primary key: an insert of an existing key
/// replaces it, a delete of a missing key is a no-op.
///
/// `Any` is a supertrait so that [`Engine::get_target`](crate::Engine::get_target) can
/// hand back the concrete type.
#[async_trait]
pub trait SyncTarget: Any + Send + Sync {
    /// The target type name: `indexed-memory`, `compiled-memory`, `http-sync`,
    /// `replication-fanout`, or a custom name. Part of the pipeline id.
    fn type_name(&self) -> &str;

    /// The target's configuration for operators (OAM `ListTables`): lookup fields,
    /// indexes, an endpoint. Leave secrets out (OAM also masks keys that look like
    /// them). The default describes nothing.
    fn describe(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }

    /// Prepares for `table` with its columns. Called before the baseline and again
    /// before a re-baseline. The default accepts any columns.
    ///
    /// # Errors
    /// When the columns do not fit the target's configuration (a missing key field).
    async fn on_init(
        &self,
        table: &TableIdentifier,
        columns: &[ColumnDefinition],
    ) -> Result<(), TargetError> {
        let _ = (table, columns);
        Ok(())
    }

    /// Receives one baseline row.
    ///
    /// # Errors
    /// When the row cannot be stored; the pipeline goes to ERROR.
    async fn on_baseline_row(&self, table: &TableIdentifier, row: &Row) -> Result<(), TargetError>;

    /// Receives a batch of baseline rows. The default calls
    /// [`SyncTarget::on_baseline_row`] for each; override to amortise locking.
    ///
    /// # Errors
    /// As [`SyncTarget::on_baseline_row`].
    async fn on_baseline_rows(
        &self,
        table: &TableIdentifier,
        rows: &[Row],
    ) -> Result<(), TargetError> {
        for row in rows {
            self.on_baseline_row(table, row).await?;
        }
        Ok(())
    }

    /// The baseline is complete. The default does nothing.
    ///
    /// # Errors
    /// When the target cannot finish the load.
    async fn on_baseline_complete(&self, table: &TableIdentifier) -> Result<(), TargetError> {
        let _ = table;
        Ok(())
    }

    /// Applies an insert.
    ///
    /// # Errors
    /// When the change cannot be applied (it is retried, then dead-lettered).
    async fn on_insert(&self, table: &TableIdentifier, row: &Row) -> Result<(), TargetError>;

    /// Applies an update: `row` is the complete new row, `identity` the old row or its
    /// key columns when the source had them.
    ///
    /// # Errors
    /// As [`SyncTarget::on_insert`].
    async fn on_update(
        &self,
        table: &TableIdentifier,
        row: &Row,
        identity: Option<&Row>,
    ) -> Result<(), TargetError>;

    /// Applies a delete of the row identified by `identity` (at least its key columns).
    ///
    /// # Errors
    /// As [`SyncTarget::on_insert`].
    async fn on_delete(&self, table: &TableIdentifier, identity: &Row) -> Result<(), TargetError>;

    /// Removes every row.
    ///
    /// # Errors
    /// As [`SyncTarget::on_insert`].
    async fn on_truncate(&self, table: &TableIdentifier) -> Result<(), TargetError>;

    /// True once everything applied so far is durable (in-memory targets: always).
    fn is_durable(&self) -> bool;

    /// True when what this target applied outlives the process (a database, a remote
    /// service), so a new process may resume a stateful source into it. The default,
    /// `false`, is right for in-memory targets: they start empty, so on an engine's
    /// first start the engine restores a snapshot into them or runs a baseline, never
    /// resumes from the source's acknowledged position (that would leave them missing
    /// every row written before it).
    fn retains_state(&self) -> bool {
        false
    }

    /// The position up to which this target is durable, given that it has applied
    /// everything up to `applied`. The default is `applied` when
    /// [`SyncTarget::is_durable`], else `None`; a batching target returns the position
    /// of its last flushed change so the ACK never passes buffered data.
    fn durable_position(&self, applied: &Position) -> Option<Position> {
        self.is_durable().then(|| applied.clone())
    }

    /// Called before each change (and before [`SyncTarget::on_baseline_complete`] with
    /// the baseline's end position) for targets that track source positions.
    fn set_change_position(&self, position: &Position) {
        let _ = position;
    }

    /// Reacts to a column change of the table.
    async fn on_schema_change(
        &self,
        table: &TableIdentifier,
        old_columns: &[ColumnDefinition],
        new_columns: &[ColumnDefinition],
    ) -> SchemaChangeResponse;

    /// Every row, for an engine snapshot. The default refuses: a target that keeps no
    /// rows cannot be snapshotted.
    ///
    /// # Errors
    /// When the target cannot export.
    async fn export_snapshot(&self) -> Result<Vec<SnapshotEntry>, TargetError> {
        Err(TargetError::new(format!(
            "{} targets do not support snapshots",
            self.type_name()
        )))
    }

    /// Replaces the contents with a snapshot's rows. The default refuses.
    ///
    /// # Errors
    /// When the rows cannot be loaded.
    async fn restore_snapshot(
        &self,
        info: &TableSnapshotInfo,
        entries: Vec<SnapshotEntry>,
    ) -> Result<(), TargetError> {
        let _ = (info, entries);
        Err(TargetError::new(format!(
            "{} targets do not support snapshots",
            self.type_name()
        )))
    }

    /// Reserved: whether the target can export without the sources paused.
    fn supports_consistent_snapshot(&self) -> bool {
        false
    }

    /// The engine is stopping. The default does nothing.
    ///
    /// # Errors
    /// When closing fails; the engine reports it and goes on.
    async fn on_close(&self, table: &TableIdentifier) -> Result<(), TargetError> {
        let _ = table;
        Ok(())
    }

    /// The row the target holds for `identity` (a row carrying at least the key
    /// columns), for targets that keep rows. The engine uses it to complete an update
    /// whose new row lacks values the source did not resend (PostgreSQL's unchanged
    /// TOAST columns). `None` (the default) when the target keeps no rows or has none
    /// for that key.
    fn current_row(&self, table: &TableIdentifier, identity: &Row) -> Option<Row> {
        let _ = (table, identity);
        None
    }

    /// The number of rows held, for targets that can count (row-count validation).
    fn count(&self) -> Option<u64> {
        None
    }

    /// Every row held, for targets that can scan (the TTL scanner); `None` when the
    /// target cannot.
    fn scan_rows(&self) -> Option<Vec<Row>> {
        None
    }
}
