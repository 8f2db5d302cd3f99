//! Dead letters: changes a pipeline could not apply, parked for inspection and replay.

use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::change::{ChangeAction, ChangeEvent};
use crate::error::PluginError;
use crate::position::Position;
use crate::row::Row;
use crate::table::TableIdentifier;
use crate::target::{Change, ChangeKind, SyncTarget};
use crate::time;

/// One parked change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadLetterEntry {
    /// Store-assigned id, unique per pipeline (0 until written).
    pub id: u64,
    /// The pipeline that failed.
    pub pipeline_id: String,
    /// When the change was parked, microseconds since the Unix epoch.
    pub timestamp_micros: i64,
    /// The table of the change.
    pub table: TableIdentifier,
    /// The change kind.
    pub action: ChangeAction,
    /// The source position, in the source's own text form.
    pub position: String,
    /// The origin transaction id.
    pub xid: i64,
    /// The new row (insert, update).
    pub new_values: Option<Row>,
    /// The old row or identity (update, delete).
    pub old_values: Option<Row>,
    /// The last error.
    pub error: String,
}

impl DeadLetterEntry {
    /// An entry for `change`, whose position renders as `position`.
    pub fn new(
        pipeline_id: impl Into<String>,
        change: &ChangeEvent,
        position: impl Into<String>,
        error: impl Into<String>,
    ) -> Self {
        Self {
            id: 0,
            pipeline_id: pipeline_id.into(),
            timestamp_micros: time::system_time_to_micros(SystemTime::now()),
            table: change.table.clone(),
            action: change.action,
            position: position.into(),
            xid: change.xid,
            new_values: change.new_values.clone(),
            old_values: change.old_values.clone(),
            error: error.into(),
        }
    }
}

/// The outcome of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayOutcome {
    /// Entries tried.
    pub replayed: u64,
    /// Entries applied (and removed from the store).
    pub succeeded: u64,
    /// Entries that failed again (kept in the store).
    pub failed: u64,
}

/// A dead-letter store error; the message names what failed and the cause is the
/// [`source`](std::error::Error::source).
pub type DeadLetterError = PluginError;

/// Where changes that could not be applied are parked.
#[async_trait]
pub trait DeadLetterStore: Send + Sync {
    /// Parks `entry`; returns the id it was given.
    ///
    /// # Errors
    /// When the entry cannot be stored (the pipeline's error policy then applies).
    async fn write(&self, entry: DeadLetterEntry) -> Result<u64, DeadLetterError>;

    /// Up to `limit` entries of a pipeline, oldest first (`limit` 0 = all).
    ///
    /// # Errors
    /// When the store cannot be read.
    async fn read(
        &self,
        pipeline_id: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetterEntry>, DeadLetterError>;

    /// Removes the entries with the given ids.
    ///
    /// # Errors
    /// When the store cannot be written.
    async fn remove(&self, pipeline_id: &str, ids: &[u64]) -> Result<(), DeadLetterError>;

    /// Removes every entry of a pipeline.
    ///
    /// # Errors
    /// When the store cannot be written.
    async fn purge(&self, pipeline_id: &str) -> Result<(), DeadLetterError>;

    /// The number of entries of a pipeline.
    ///
    /// # Errors
    /// When the store cannot be read.
    async fn count(&self, pipeline_id: &str) -> Result<u64, DeadLetterError>;

    /// Re-applies every entry of a pipeline to `target`, oldest first, and removes the
    /// entries that succeeded; failed ones stay for a later attempt. The changes are
    /// applied at `position`, the stream's current position: they are applied now,
    /// after the changes that followed them at the source.
    ///
    /// # Errors
    /// When the store cannot be read or written (apply failures are counted instead).
    async fn replay(
        &self,
        pipeline_id: &str,
        target: &dyn SyncTarget,
        position: &Position,
    ) -> Result<ReplayOutcome, DeadLetterError> {
        let entries = self.read(pipeline_id, 0).await?;
        let mut outcome = ReplayOutcome::default();
        let mut done = Vec::new();
        for entry in &entries {
            outcome.replayed += 1;
            if apply_entry(target, entry, position).await.is_ok() {
                outcome.succeeded += 1;
                done.push(entry.id);
            } else {
                outcome.failed += 1;
            }
        }
        if !done.is_empty() {
            self.remove(pipeline_id, &done).await?;
        }
        Ok(outcome)
    }
}

async fn apply_entry(
    target: &dyn SyncTarget,
    entry: &DeadLetterEntry,
    position: &Position,
) -> Result<(), crate::TargetError> {
    let missing = || {
        crate::TargetError::new(format!(
            "dead letter {} has no row for {}",
            entry.id, entry.action
        ))
    };
    let kind = match entry.action {
        ChangeAction::Insert => ChangeKind::Insert {
            row: entry.new_values.clone().ok_or_else(missing)?,
        },
        ChangeAction::Update => ChangeKind::Update {
            row: entry.new_values.clone().ok_or_else(missing)?,
            identity: entry.old_values.clone(),
        },
        ChangeAction::Delete => ChangeKind::Delete {
            identity: entry
                .old_values
                .clone()
                .or_else(|| entry.new_values.clone())
                .ok_or_else(missing)?,
        },
        ChangeAction::Truncate => ChangeKind::Truncate,
    };
    let change = Change::new(kind).at(position.clone());
    target
        .apply(&entry.table, std::slice::from_ref(&change))
        .await
        .map_err(|e| e.error)
}
