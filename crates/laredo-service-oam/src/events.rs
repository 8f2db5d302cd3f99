//! [`StatusEvents`]: the observer that feeds the OAM service its counters and its
//! `WatchStatus` stream.

use std::collections::HashMap;
use std::time::SystemTime;

use laredo_core::{ChangeAction, EngineObserver, PipelineState, Position, TableIdentifier};
use parking_lot::Mutex;
use tokio::sync::broadcast;

/// Events kept for slow `WatchStatus` readers before the oldest are dropped (and the
/// reader told how many).
pub const WATCH_BUFFER: usize = 4096;

/// Per-pipeline counters the engine does not keep itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipelineCounters {
    /// Inserts applied.
    pub inserts: u64,
    /// Updates applied.
    pub updates: u64,
    /// Deletes applied.
    pub deletes: u64,
    /// Truncates applied.
    pub truncates: u64,
    /// When the last change was applied.
    pub last_change_at: Option<SystemTime>,
    /// The last error reported for the pipeline.
    pub last_error: Option<String>,
}

/// One status event, as `WatchStatus` streams it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StatusEvent {
    /// A pipeline changed state.
    PipelineState {
        /// When.
        at: SystemTime,
        /// The pipeline.
        pipeline_id: String,
        /// Before.
        old: PipelineState,
        /// After.
        new: PipelineState,
    },
    /// A source connected (`connected` true) or disconnected.
    Source {
        /// When.
        at: SystemTime,
        /// The source.
        source_id: String,
        /// Connected or disconnected.
        connected: bool,
        /// The source type, or why it disconnected.
        message: String,
    },
    /// A change reached a pipeline.
    Row {
        /// When.
        at: SystemTime,
        /// The pipeline.
        pipeline_id: String,
        /// The table.
        table: TableIdentifier,
        /// What happened.
        action: ChangeAction,
        /// The source position, as the engine shows it.
        position: String,
    },
}

impl StatusEvent {
    /// The pipeline the event is about, if any.
    pub fn pipeline_id(&self) -> Option<&str> {
        match self {
            StatusEvent::PipelineState { pipeline_id, .. }
            | StatusEvent::Row { pipeline_id, .. } => Some(pipeline_id),
            StatusEvent::Source { .. } => None,
        }
    }

    /// The table a row event is about (the others name a pipeline or a source).
    pub fn table(&self) -> Option<&TableIdentifier> {
        match self {
            StatusEvent::Row { table, .. } => Some(table),
            StatusEvent::PipelineState { .. } | StatusEvent::Source { .. } => None,
        }
    }
}

/// An [`EngineObserver`] to register with the engine (`EngineBuilder::observer`), then
/// hand to [`OamService::new`](crate::OamService::new): it counts applied changes per
/// pipeline, remembers the last error, and broadcasts status events to `WatchStatus`
/// callers. Every method is a few atomic or short-lock operations: it never blocks the
/// engine.
#[derive(Debug)]
pub struct StatusEvents {
    counters: Mutex<HashMap<String, PipelineCounters>>,
    sender: broadcast::Sender<StatusEvent>,
}

impl Default for StatusEvents {
    fn default() -> Self {
        Self {
            counters: Mutex::new(HashMap::new()),
            sender: broadcast::Sender::new(WATCH_BUFFER),
        }
    }
}

impl StatusEvents {
    /// A new observer, shared between the engine and the service.
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self::default())
    }

    /// The counters of a pipeline (zero when nothing happened yet).
    pub fn counters(&self, pipeline_id: &str) -> PipelineCounters {
        self.counters
            .lock()
            .get(pipeline_id)
            .cloned()
            .unwrap_or_default()
    }

    /// A receiver of every status event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StatusEvent> {
        self.sender.subscribe()
    }

    fn publish(&self, event: StatusEvent) {
        // No receiver is not an error: nobody is watching.
        let _ = self.sender.send(event);
    }
}

impl EngineObserver for StatusEvents {
    fn on_source_connected(&self, source_id: &str, source_type: &str) {
        self.publish(StatusEvent::Source {
            at: SystemTime::now(),
            source_id: source_id.to_string(),
            connected: true,
            message: source_type.to_string(),
        });
    }

    fn on_source_disconnected(&self, source_id: &str, reason: &str) {
        self.publish(StatusEvent::Source {
            at: SystemTime::now(),
            source_id: source_id.to_string(),
            connected: false,
            message: reason.to_string(),
        });
    }

    fn on_pipeline_state_changed(&self, pipeline_id: &str, old: PipelineState, new: PipelineState) {
        self.publish(StatusEvent::PipelineState {
            at: SystemTime::now(),
            pipeline_id: pipeline_id.to_string(),
            old,
            new,
        });
    }

    fn on_change_received(
        &self,
        pipeline_id: &str,
        table: &TableIdentifier,
        action: ChangeAction,
        position: &Position,
    ) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        self.publish(StatusEvent::Row {
            at: SystemTime::now(),
            pipeline_id: pipeline_id.to_string(),
            table: table.clone(),
            action,
            position: position.to_string(),
        });
    }

    fn on_change_applied(
        &self,
        pipeline_id: &str,
        _table: &TableIdentifier,
        action: ChangeAction,
        _duration: std::time::Duration,
    ) {
        let mut counters = self.counters.lock();
        let c = counters.entry(pipeline_id.to_string()).or_default();
        match action {
            ChangeAction::Insert => c.inserts += 1,
            ChangeAction::Update => c.updates += 1,
            ChangeAction::Delete => c.deletes += 1,
            ChangeAction::Truncate => c.truncates += 1,
        }
        c.last_change_at = Some(SystemTime::now());
    }

    fn on_pipeline_failed(&self, pipeline_id: &str, reason: &str) {
        self.counters
            .lock()
            .entry(pipeline_id.to_string())
            .or_default()
            .last_error = Some(reason.to_string());
    }

    fn on_change_error(
        &self,
        pipeline_id: &str,
        _table: &TableIdentifier,
        action: ChangeAction,
        error: &str,
    ) {
        self.counters
            .lock()
            .entry(pipeline_id.to_string())
            .or_default()
            .last_error = Some(format!("{action}: {error}"));
    }
}
