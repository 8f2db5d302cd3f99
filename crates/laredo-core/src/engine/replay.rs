//! [`Engine::start_replay`]: a snapshot replay into one live pipeline's target.
//!
//! The replay holds the pipeline's apply lock from its first row to its last, as a
//! reload does: the pipeline's live changes wait in its buffer (backpressure reaches
//! the source when the buffer fills) and are applied after the snapshot's rows, never
//! interleaved with them. While it runs the pipeline confirms nothing, so its source's
//! ACK stays where it was. Afterwards the target holds the snapshot's rows overlaid by
//! the changes since; a reload of the table returns it to the source's rows.

use std::sync::Arc;

use crate::replay::{ReplayHandle, SnapshotReplay};
use crate::status::{PipelineState, ReplaySpeed};
use crate::table::{ColumnDefinition, TableIdentifier};

use super::snapshots::store_error;
use super::{Engine, EngineError};

impl Engine {
    /// Starts replaying stored snapshot `snapshot_id` into the target of pipeline
    /// `pipeline_id`, in the background (see [`SnapshotReplay`] for the delivery and
    /// the module docs of `engine::replay` for what happens to the live pipeline).
    /// `tables`, when not empty, must name the pipeline's table: a pipeline has one
    /// table, and the snapshot's other tables are skipped. The replay stops when the
    /// engine stops.
    ///
    /// # Errors
    /// Engine not running, [`EngineError::NoSnapshotStore`],
    /// [`EngineError::UnknownPipeline`], [`EngineError::SnapshotNotFound`] (or the
    /// store failing), [`EngineError::ReplayTable`] for a listed table the snapshot
    /// lacks or the pipeline does not serve, and [`EngineError::ReplayRefused`] when
    /// the pipeline is not STREAMING or PAUSED, the snapshot lacks its table, or the
    /// snapshot's columns of the table differ from the live ones.
    pub async fn start_replay(
        &self,
        snapshot_id: &str,
        pipeline_id: &str,
        tables: &[TableIdentifier],
        speed: ReplaySpeed,
    ) -> Result<ReplayHandle, EngineError> {
        self.inner.ensure_running()?;
        let store = self.snapshot_store().ok_or(EngineError::NoSnapshotStore)?;
        let pipeline = self
            .inner
            .pipelines
            .iter()
            .find(|p| p.id == pipeline_id)
            .ok_or_else(|| EngineError::UnknownPipeline(pipeline_id.to_string()))?;
        let metadata = store
            .read_metadata(snapshot_id)
            .await
            .map_err(store_error)?;
        for table in tables {
            let reason = if !metadata.tables.iter().any(|t| t.table == *table) {
                format!("snapshot {snapshot_id} does not hold it")
            } else if *table != pipeline.table {
                format!("pipeline {pipeline_id} receives only {}", pipeline.table)
            } else {
                continue;
            };
            return Err(EngineError::ReplayTable {
                table: table.to_string(),
                reason,
            });
        }
        let Some(info) = metadata.tables.iter().find(|t| t.table == pipeline.table) else {
            return Err(EngineError::ReplayRefused(format!(
                "snapshot {snapshot_id} holds no rows of {}, the table of pipeline {pipeline_id}",
                pipeline.table
            )));
        };
        let state = pipeline.state();
        if !matches!(state, PipelineState::Streaming | PipelineState::Paused) {
            return Err(EngineError::ReplayRefused(format!(
                "pipeline {pipeline_id} is {state}; a replay needs a STREAMING or PAUSED pipeline"
            )));
        }
        if let Some(live) = self.table_schema(&pipeline.table)
            && !info.columns.is_empty()
            && !same_shape(&live, &info.columns)
        {
            return Err(EngineError::ReplayRefused(format!(
                "the columns of {} in snapshot {snapshot_id} differ from the live table's \
                 (names or primary key): replaying would re-key the live target",
                pipeline.table
            )));
        }
        let replay = SnapshotReplay::new(store)
            .target(pipeline.table.clone(), Arc::clone(&pipeline.target))
            .speed(speed)
            .exclusive(Arc::clone(&self.inner), pipeline.idx);
        tracing::info!(snapshot = %snapshot_id, pipeline = %pipeline_id, %speed, "snapshot replay started");
        Ok(replay.spawn(snapshot_id))
    }
}

/// Whether two column lists have the same names and primary key, in order.
fn same_shape(a: &[ColumnDefinition], b: &[ColumnDefinition]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.name == y.name && x.primary_key == y.primary_key)
}
