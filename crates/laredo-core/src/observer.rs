//! [`EngineObserver`]: structured lifecycle and operational events.

use std::sync::Arc;
use std::time::Duration;

use crate::change::{ChangeAction, ChangeEvent};
use crate::dead_letter::DeadLetterEntry;
use crate::position::Position;
use crate::status::{BufferPolicy, PipelineState, SchemaChangeEvent, SyncMode, ValidationError};
use crate::table::TableIdentifier;

/// Receives engine events. Calls are synchronous, from engine tasks, and must not
/// block: hand slow work to a channel that drops on overflow.
///
/// Every method has an empty default, so an observer implements only what it needs.
#[expect(
    unused_variables,
    reason = "default no-op methods name their parameters for docs"
)]
pub trait EngineObserver: Send + Sync {
    /// A source connected (its `init` succeeded).
    fn on_source_connected(&self, source_id: &str, source_type: &str) {}
    /// A source disconnected or failed; `reason` says why.
    fn on_source_disconnected(&self, source_id: &str, reason: &str) {}
    /// A pipeline changed state.
    fn on_pipeline_state_changed(&self, pipeline_id: &str, old: PipelineState, new: PipelineState) {
    }
    /// A pipeline's baseline started.
    fn on_baseline_started(&self, pipeline_id: &str, table: &TableIdentifier) {}
    /// Baseline progress: `row_count` rows loaded so far.
    fn on_baseline_row_loaded(&self, pipeline_id: &str, table: &TableIdentifier, row_count: u64) {}
    /// A pipeline's baseline completed.
    fn on_baseline_completed(
        &self,
        pipeline_id: &str,
        table: &TableIdentifier,
        total_rows: u64,
        duration: Duration,
    ) {
    }
    /// A source's stream asked for a fresh baseline.
    fn on_rebaseline_triggered(&self, source_id: &str) {}
    /// A pipeline took a change from its buffer: `change` as the source emitted it
    /// (table, action, position, transaction id, rows). Format its position with the
    /// source's [`SyncSource::position_to_string`](crate::SyncSource::position_to_string).
    fn on_change_received(&self, pipeline_id: &str, change: &ChangeEvent) {}
    /// A pipeline applied a change.
    fn on_change_applied(
        &self,
        pipeline_id: &str,
        table: &TableIdentifier,
        action: ChangeAction,
        duration: Duration,
    ) {
    }
    /// A pipeline failed for good (its error policy applied; it is in ERROR now):
    /// `reason` says why, e.g. a target that panicked or a change that could not be
    /// applied nor dead-lettered.
    fn on_pipeline_failed(&self, pipeline_id: &str, reason: &str) {}
    /// A change failed to apply (each retry reports too).
    fn on_change_error(
        &self,
        pipeline_id: &str,
        table: &TableIdentifier,
        action: ChangeAction,
        error: &str,
    ) {
    }
    /// A source's acknowledged position advanced.
    fn on_ack_advanced(&self, source_id: &str, position: &Position) {}
    /// A pipeline's buffer depth: after every batch its consumer takes, and after a
    /// push that made the buffer non-empty, full, or crossed a multiple of 64 (not
    /// after every push).
    fn on_buffer_depth_changed(&self, pipeline_id: &str, depth: usize, capacity: usize) {}
    /// A pipeline's buffer was full and its policy acted.
    fn on_buffer_policy_triggered(&self, pipeline_id: &str, policy: BufferPolicy) {}
    /// A snapshot started.
    fn on_snapshot_started(&self, snapshot_id: &str) {}
    /// A snapshot completed.
    fn on_snapshot_completed(
        &self,
        snapshot_id: &str,
        tables: usize,
        rows: u64,
        size_bytes: u64,
        duration: Duration,
    ) {
    }
    /// A snapshot failed.
    fn on_snapshot_failed(&self, snapshot_id: &str, error: &str) {}
    /// A snapshot restore started.
    fn on_snapshot_restore_started(&self, snapshot_id: &str) {}
    /// A snapshot restore completed.
    fn on_snapshot_restore_completed(&self, snapshot_id: &str, duration: Duration) {}
    /// A source reported a column change.
    fn on_schema_change(
        &self,
        source_id: &str,
        table: &TableIdentifier,
        event: &SchemaChangeEvent,
    ) {
    }
    /// A source's table check found a caveat that does not stop the table (see
    /// [`ValidationError::warning`]), e.g. a PostgreSQL table with no primary key and
    /// no full replica identity.
    fn on_validation_warning(&self, source_id: &str, warning: &ValidationError) {}
    /// A source's lag was measured.
    fn on_lag_updated(&self, source_id: &str, lag_bytes: u64, lag_time: Option<Duration>) {}
    /// A change was parked in the dead letter store.
    fn on_dead_letter_written(&self, pipeline_id: &str, entry: &DeadLetterEntry) {}
    /// A row expired (TTL) and was removed.
    fn on_row_expired(&self, pipeline_id: &str, table: &TableIdentifier, key: &str) {}
    /// A row-count validation ran.
    fn on_validation_result(
        &self,
        pipeline_id: &str,
        table: &TableIdentifier,
        source_count: u64,
        target_count: u64,
        matched: bool,
    ) {
    }
    /// A fan-out client connected.
    fn on_fanout_client_connected(&self, pipeline_id: &str, client_id: &str, sync_mode: SyncMode) {}
    /// A fan-out client disconnected.
    fn on_fanout_client_disconnected(&self, pipeline_id: &str, client_id: &str, reason: &str) {}
    /// A fan-out client caught up with the live stream.
    fn on_fanout_client_caught_up(&self, pipeline_id: &str, client_id: &str, sequence: u64) {}
    /// A fan-out client's send buffer is filling.
    fn on_fanout_client_backpressure(
        &self,
        pipeline_id: &str,
        client_id: &str,
        buffer_depth: usize,
    ) {
    }
    /// A fan-out target took an in-memory snapshot.
    fn on_fanout_snapshot_created(
        &self,
        pipeline_id: &str,
        snapshot_id: &str,
        sequence: u64,
        rows: u64,
    ) {
    }
    /// A fan-out journal dropped old entries.
    fn on_fanout_journal_pruned(
        &self,
        pipeline_id: &str,
        entries_pruned: u64,
        oldest_sequence: u64,
    ) {
    }
}

/// An observer that ignores every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullObserver;

impl EngineObserver for NullObserver {}

/// Forwards every event to several observers, in order.
#[derive(Clone, Default)]
pub struct CompositeObserver {
    observers: Vec<Arc<dyn EngineObserver>>,
}

impl CompositeObserver {
    /// Builds a composite; `None` entries are dropped.
    pub fn new(observers: impl IntoIterator<Item = Option<Arc<dyn EngineObserver>>>) -> Self {
        Self {
            observers: observers.into_iter().flatten().collect(),
        }
    }

    /// Adds an observer at the end.
    pub fn push(&mut self, observer: Arc<dyn EngineObserver>) {
        self.observers.push(observer);
    }

    /// The number of observers.
    pub fn len(&self) -> usize {
        self.observers.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.observers.is_empty()
    }
}

impl std::fmt::Debug for CompositeObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompositeObserver")
            .field("len", &self.observers.len())
            .finish()
    }
}

macro_rules! fan_out {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        impl EngineObserver for CompositeObserver {
            $(fn $method(&self, $($arg: $ty),*) {
                for o in &self.observers { o.$method($($arg),*); }
            })*
        }
    };
}

fan_out! {
    on_source_connected(source_id: &str, source_type: &str);
    on_source_disconnected(source_id: &str, reason: &str);
    on_pipeline_state_changed(pipeline_id: &str, old: PipelineState, new: PipelineState);
    on_baseline_started(pipeline_id: &str, table: &TableIdentifier);
    on_baseline_row_loaded(pipeline_id: &str, table: &TableIdentifier, row_count: u64);
    on_baseline_completed(pipeline_id: &str, table: &TableIdentifier, total_rows: u64, duration: Duration);
    on_rebaseline_triggered(source_id: &str);
    on_change_received(pipeline_id: &str, change: &ChangeEvent);
    on_change_applied(pipeline_id: &str, table: &TableIdentifier, action: ChangeAction, duration: Duration);
    on_pipeline_failed(pipeline_id: &str, reason: &str);
    on_change_error(pipeline_id: &str, table: &TableIdentifier, action: ChangeAction, error: &str);
    on_ack_advanced(source_id: &str, position: &Position);
    on_buffer_depth_changed(pipeline_id: &str, depth: usize, capacity: usize);
    on_buffer_policy_triggered(pipeline_id: &str, policy: BufferPolicy);
    on_snapshot_started(snapshot_id: &str);
    on_snapshot_completed(snapshot_id: &str, tables: usize, rows: u64, size_bytes: u64, duration: Duration);
    on_snapshot_failed(snapshot_id: &str, error: &str);
    on_snapshot_restore_started(snapshot_id: &str);
    on_snapshot_restore_completed(snapshot_id: &str, duration: Duration);
    on_schema_change(source_id: &str, table: &TableIdentifier, event: &SchemaChangeEvent);
    on_validation_warning(source_id: &str, warning: &ValidationError);
    on_lag_updated(source_id: &str, lag_bytes: u64, lag_time: Option<Duration>);
    on_dead_letter_written(pipeline_id: &str, entry: &DeadLetterEntry);
    on_row_expired(pipeline_id: &str, table: &TableIdentifier, key: &str);
    on_validation_result(pipeline_id: &str, table: &TableIdentifier, source_count: u64, target_count: u64, matched: bool);
    on_fanout_client_connected(pipeline_id: &str, client_id: &str, sync_mode: SyncMode);
    on_fanout_client_disconnected(pipeline_id: &str, client_id: &str, reason: &str);
    on_fanout_client_caught_up(pipeline_id: &str, client_id: &str, sequence: u64);
    on_fanout_client_backpressure(pipeline_id: &str, client_id: &str, buffer_depth: usize);
    on_fanout_snapshot_created(pipeline_id: &str, snapshot_id: &str, sequence: u64, rows: u64);
    on_fanout_journal_pruned(pipeline_id: &str, entries_pruned: u64, oldest_sequence: u64);
}
