//! [`TestObserver`]: records every engine event.

use std::sync::Arc;
use std::time::Duration;

use laredo_core::{
    BufferPolicy, ChangeAction, ChangeEvent, DeadLetterEntry, EngineObserver, PipelineState,
    Position, SchemaChangeEvent, SyncMode, TableIdentifier, ValidationError,
};
use parking_lot::Mutex;
use tokio::sync::watch;

/// Kinds recorded per change, skipped by [`TestObserver::without_per_change_events`].
const PER_CHANGE: &[&str] = &["BufferDepthChanged", "ChangeReceived", "ChangeApplied"];

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The callback name without `on_`, in PascalCase (`SourceConnected`,
    /// `ReBaselineTriggered`, ...).
    pub kind: &'static str,
    /// The first id argument: the source or pipeline id (or the snapshot id).
    pub subject: String,
    /// The other arguments, rendered as text, by parameter name.
    pub fields: Vec<(&'static str, String)>,
}

impl RecordedEvent {
    /// The rendered value of argument `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An observer that records every event; see the crate docs.
#[derive(Debug)]
pub struct TestObserver {
    events: Mutex<Vec<RecordedEvent>>,
    /// Bumped on every record, so waiters wake without polling.
    version: watch::Sender<u64>,
    per_change: bool,
}

impl TestObserver {
    /// An observer recording every event.
    pub fn new() -> Arc<Self> {
        Self::build(true)
    }

    /// An observer that skips the per-change events (`BufferDepthChanged`,
    /// `ChangeReceived`, `ChangeApplied`), for bulk tests.
    pub fn without_per_change_events() -> Arc<Self> {
        Self::build(false)
    }

    fn build(per_change: bool) -> Arc<Self> {
        Arc::new(Self {
            events: Mutex::new(Vec::new()),
            version: watch::Sender::new(0),
            per_change,
        })
    }

    fn record(&self, kind: &'static str, subject: &str, fields: Vec<(&'static str, String)>) {
        if !self.per_change && PER_CHANGE.contains(&kind) {
            return;
        }
        self.events.lock().push(RecordedEvent {
            kind,
            subject: subject.to_string(),
            fields,
        });
        self.version.send_modify(|v| *v += 1);
    }

    /// Every event so far, in order.
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.events.lock().clone()
    }

    /// The events of one kind, in order.
    pub fn events_of(&self, kind: &str) -> Vec<RecordedEvent> {
        self.events
            .lock()
            .iter()
            .filter(|e| e.kind == kind)
            .cloned()
            .collect()
    }

    /// Whether an event of `kind` was recorded.
    pub fn has_event(&self, kind: &str) -> bool {
        self.events.lock().iter().any(|e| e.kind == kind)
    }

    /// How many events of `kind` were recorded.
    pub fn event_count(&self, kind: &str) -> usize {
        self.events.lock().iter().filter(|e| e.kind == kind).count()
    }

    /// Forgets every event.
    pub fn reset(&self) {
        self.events.lock().clear();
    }

    /// Waits for the first event of `kind` (returns at once if already recorded).
    ///
    /// # Panics
    /// On timeout.
    pub async fn wait_for_event(&self, kind: &str, timeout: Duration) -> RecordedEvent {
        self.wait_for(kind, timeout, |_| true).await
    }

    /// Waits until `count` events of `kind` were recorded.
    ///
    /// # Panics
    /// On timeout.
    pub async fn wait_for_event_count(&self, kind: &str, count: usize, timeout: Duration) {
        let mut rx = self.version.subscribe();
        let reached =
            tokio::time::timeout(timeout, rx.wait_for(|_| self.event_count(kind) >= count)).await;
        assert!(
            reached.is_ok(),
            "timed out after {timeout:?} waiting for {count} {kind} events (have {})",
            self.event_count(kind)
        );
    }

    /// Waits for the first event of `kind` matching `predicate`.
    ///
    /// # Panics
    /// On timeout.
    pub async fn wait_for(
        &self,
        kind: &str,
        timeout: Duration,
        predicate: impl Fn(&RecordedEvent) -> bool,
    ) -> RecordedEvent {
        let find = || {
            self.events
                .lock()
                .iter()
                .find(|e| e.kind == kind && predicate(e))
                .cloned()
        };
        let mut rx = self.version.subscribe();
        let found = tokio::time::timeout(timeout, async {
            loop {
                if let Some(event) = find() {
                    return event;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        match found {
            Ok(event) => event,
            Err(_) => panic!(
                "timed out after {timeout:?} waiting for a matching {kind} event; recorded: {:?}",
                self.events_of(kind)
            ),
        }
    }
}

fn s(value: impl ToString) -> String {
    value.to_string()
}

impl EngineObserver for TestObserver {
    fn on_source_connected(&self, source_id: &str, source_type: &str) {
        self.record(
            "SourceConnected",
            source_id,
            vec![("source_type", s(source_type))],
        );
    }
    fn on_source_disconnected(&self, source_id: &str, reason: &str) {
        self.record("SourceDisconnected", source_id, vec![("reason", s(reason))]);
    }
    fn on_pipeline_state_changed(&self, pipeline_id: &str, old: PipelineState, new: PipelineState) {
        self.record(
            "PipelineStateChanged",
            pipeline_id,
            vec![("old", s(old)), ("new", s(new))],
        );
    }
    fn on_pipeline_failed(&self, pipeline_id: &str, reason: &str) {
        self.record("PipelineFailed", pipeline_id, vec![("reason", s(reason))]);
    }
    fn on_baseline_started(&self, pipeline_id: &str, table: &TableIdentifier) {
        self.record("BaselineStarted", pipeline_id, vec![("table", s(table))]);
    }
    fn on_baseline_row_loaded(&self, pipeline_id: &str, table: &TableIdentifier, row_count: u64) {
        self.record(
            "BaselineRowLoaded",
            pipeline_id,
            vec![("table", s(table)), ("row_count", s(row_count))],
        );
    }
    fn on_baseline_completed(
        &self,
        pipeline_id: &str,
        table: &TableIdentifier,
        total_rows: u64,
        duration: Duration,
    ) {
        self.record(
            "BaselineCompleted",
            pipeline_id,
            vec![
                ("table", s(table)),
                ("total_rows", s(total_rows)),
                ("duration", format!("{duration:?}")),
            ],
        );
    }
    fn on_rebaseline_triggered(&self, source_id: &str) {
        self.record("ReBaselineTriggered", source_id, vec![]);
    }
    fn on_change_received(&self, pipeline_id: &str, change: &ChangeEvent) {
        self.record(
            "ChangeReceived",
            pipeline_id,
            vec![
                ("table", s(&change.table)),
                ("action", s(change.action)),
                ("position", s(&change.position)),
                ("xid", s(change.xid)),
            ],
        );
    }
    fn on_change_applied(
        &self,
        pipeline_id: &str,
        table: &TableIdentifier,
        action: ChangeAction,
        duration: Duration,
    ) {
        self.record(
            "ChangeApplied",
            pipeline_id,
            vec![
                ("table", s(table)),
                ("action", s(action)),
                ("duration", format!("{duration:?}")),
            ],
        );
    }
    fn on_change_error(
        &self,
        pipeline_id: &str,
        table: &TableIdentifier,
        action: ChangeAction,
        error: &str,
    ) {
        self.record(
            "ChangeError",
            pipeline_id,
            vec![
                ("table", s(table)),
                ("action", s(action)),
                ("error", s(error)),
            ],
        );
    }
    fn on_ack_advanced(&self, source_id: &str, position: &Position) {
        self.record("AckAdvanced", source_id, vec![("position", s(position))]);
    }
    fn on_buffer_depth_changed(&self, pipeline_id: &str, depth: usize, capacity: usize) {
        self.record(
            "BufferDepthChanged",
            pipeline_id,
            vec![("depth", s(depth)), ("capacity", s(capacity))],
        );
    }
    fn on_buffer_policy_triggered(&self, pipeline_id: &str, policy: BufferPolicy) {
        self.record(
            "BufferPolicyTriggered",
            pipeline_id,
            vec![("policy", s(policy))],
        );
    }
    fn on_snapshot_started(&self, snapshot_id: &str) {
        self.record("SnapshotStarted", snapshot_id, vec![]);
    }
    fn on_snapshot_completed(
        &self,
        snapshot_id: &str,
        tables: usize,
        rows: u64,
        size_bytes: u64,
        duration: Duration,
    ) {
        self.record(
            "SnapshotCompleted",
            snapshot_id,
            vec![
                ("tables", s(tables)),
                ("rows", s(rows)),
                ("size_bytes", s(size_bytes)),
                ("duration", format!("{duration:?}")),
            ],
        );
    }
    fn on_snapshot_failed(&self, snapshot_id: &str, error: &str) {
        self.record("SnapshotFailed", snapshot_id, vec![("error", s(error))]);
    }
    fn on_snapshot_restore_started(&self, snapshot_id: &str) {
        self.record("SnapshotRestoreStarted", snapshot_id, vec![]);
    }
    fn on_snapshot_restore_completed(&self, snapshot_id: &str, duration: Duration) {
        self.record(
            "SnapshotRestoreCompleted",
            snapshot_id,
            vec![("duration", format!("{duration:?}"))],
        );
    }
    fn on_schema_change(
        &self,
        source_id: &str,
        table: &TableIdentifier,
        event: &SchemaChangeEvent,
    ) {
        let names = |cols: &[laredo_core::ColumnDefinition]| {
            cols.iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        self.record(
            "SchemaChange",
            source_id,
            vec![
                ("table", s(table)),
                ("old_columns", names(&event.old_columns)),
                ("new_columns", names(&event.new_columns)),
            ],
        );
    }
    fn on_lag_updated(&self, source_id: &str, lag_bytes: u64, lag_time: Option<Duration>) {
        self.record(
            "LagUpdated",
            source_id,
            vec![
                ("lag_bytes", s(lag_bytes)),
                ("lag_time", format!("{lag_time:?}")),
            ],
        );
    }
    fn on_dead_letter_written(&self, pipeline_id: &str, entry: &DeadLetterEntry) {
        self.record(
            "DeadLetterWritten",
            pipeline_id,
            vec![
                ("action", s(entry.action)),
                ("position", entry.position.clone()),
                ("error", entry.error.clone()),
            ],
        );
    }
    fn on_validation_warning(&self, source_id: &str, warning: &ValidationError) {
        self.record(
            "ValidationWarning",
            source_id,
            vec![
                ("table", warning.table.as_ref().map(s).unwrap_or_default()),
                ("code", warning.code.clone()),
                ("message", warning.message.clone()),
            ],
        );
    }
    fn on_row_expired(&self, pipeline_id: &str, table: &TableIdentifier, key: &str) {
        self.record(
            "RowExpired",
            pipeline_id,
            vec![("table", s(table)), ("key", s(key))],
        );
    }
    fn on_validation_result(
        &self,
        pipeline_id: &str,
        table: &TableIdentifier,
        source_count: u64,
        target_count: u64,
        matched: bool,
    ) {
        self.record(
            "ValidationResult",
            pipeline_id,
            vec![
                ("table", s(table)),
                ("source_count", s(source_count)),
                ("target_count", s(target_count)),
                ("matched", s(matched)),
            ],
        );
    }
    fn on_fanout_client_connected(&self, pipeline_id: &str, client_id: &str, sync_mode: SyncMode) {
        self.record(
            "FanoutClientConnected",
            pipeline_id,
            vec![("client_id", s(client_id)), ("sync_mode", s(sync_mode))],
        );
    }
    fn on_fanout_client_disconnected(&self, pipeline_id: &str, client_id: &str, reason: &str) {
        self.record(
            "FanoutClientDisconnected",
            pipeline_id,
            vec![("client_id", s(client_id)), ("reason", s(reason))],
        );
    }
    fn on_fanout_client_caught_up(&self, pipeline_id: &str, client_id: &str, sequence: u64) {
        self.record(
            "FanoutClientCaughtUp",
            pipeline_id,
            vec![("client_id", s(client_id)), ("sequence", s(sequence))],
        );
    }
    fn on_fanout_client_backpressure(
        &self,
        pipeline_id: &str,
        client_id: &str,
        buffer_depth: usize,
    ) {
        self.record(
            "FanoutClientBackpressure",
            pipeline_id,
            vec![
                ("client_id", s(client_id)),
                ("buffer_depth", s(buffer_depth)),
            ],
        );
    }
    fn on_fanout_snapshot_created(
        &self,
        pipeline_id: &str,
        snapshot_id: &str,
        sequence: u64,
        rows: u64,
    ) {
        self.record(
            "FanoutSnapshotCreated",
            pipeline_id,
            vec![
                ("snapshot_id", s(snapshot_id)),
                ("sequence", s(sequence)),
                ("rows", s(rows)),
            ],
        );
    }
    fn on_fanout_journal_pruned(
        &self,
        pipeline_id: &str,
        entries_pruned: u64,
        oldest_sequence: u64,
    ) {
        self.record(
            "FanoutJournalPruned",
            pipeline_id,
            vec![
                ("entries_pruned", s(entries_pruned)),
                ("oldest_sequence", s(oldest_sequence)),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use laredo_core::{CompositeObserver, EngineObserver};

    use super::*;

    #[tokio::test]
    async fn waits_wake_on_new_events() {
        let observer = TestObserver::new();
        let waiter = tokio::spawn({
            let observer = Arc::clone(&observer);
            async move {
                observer
                    .wait_for_event("AckAdvanced", Duration::from_secs(5))
                    .await
            }
        });
        tokio::task::yield_now().await;
        observer.on_ack_advanced("main", &Position::from_u64(7));
        let event = waiter.await.unwrap();
        assert_eq!(
            (event.subject.as_str(), event.field("position")),
            ("main", Some("7"))
        );
    }

    #[test]
    fn per_change_events_can_be_skipped() {
        let observer = TestObserver::without_per_change_events();
        observer.on_buffer_depth_changed("p", 1, 2);
        observer.on_buffer_policy_triggered("p", BufferPolicy::DropOldest);
        assert_eq!(observer.events().len(), 1);
        assert_eq!(observer.events()[0].field("policy"), Some("drop_oldest"));
        observer.reset();
        assert!(observer.events().is_empty());
    }

    #[test]
    fn composite_fans_out_in_order_and_drops_none() {
        let first = TestObserver::new();
        let second = TestObserver::new();
        let composite = CompositeObserver::new([
            Some(Arc::clone(&first) as Arc<dyn EngineObserver>),
            None,
            Some(Arc::clone(&second) as Arc<dyn EngineObserver>),
        ]);
        assert_eq!(composite.len(), 2);
        composite.on_pipeline_state_changed("p", PipelineState::Streaming, PipelineState::Error);
        composite.on_rebaseline_triggered("main");
        for observer in [&first, &second] {
            let kinds: Vec<&str> = observer.events().iter().map(|e| e.kind).collect();
            assert_eq!(kinds, vec!["PipelineStateChanged", "ReBaselineTriggered"]);
            assert_eq!(observer.events()[0].field("new"), Some("ERROR"));
        }
    }
}
