//! [`StatusEvents`]: the observer that feeds the OAM service its counters and its
//! `WatchStatus` stream.

use std::collections::HashMap;
use std::time::SystemTime;

use laredo_core::{
    ChangeAction, ChangeEvent, EngineObserver, PipelineInfo, PipelineState, Position, Row,
    TableIdentifier, ValidationError,
};
use laredo_proto::laredo::v1::ServiceState;
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
    /// The service state (derived from every pipeline's state, see
    /// [`service_state`]) changed.
    ServiceState {
        /// When.
        at: SystemTime,
        /// Before.
        old: ServiceState,
        /// After.
        new: ServiceState,
    },
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
        /// The source position (the service prints it as the source does).
        position: Position,
        /// The origin transaction id; 0 when the source does not know it.
        xid: i64,
        /// The changed row's identity: the old row or key for an update or delete, the
        /// new row for an insert; `None` for a truncate.
        identity: Option<Row>,
    },
}

impl StatusEvent {
    /// The pipeline the event is about, if any.
    pub fn pipeline_id(&self) -> Option<&str> {
        match self {
            StatusEvent::PipelineState { pipeline_id, .. }
            | StatusEvent::Row { pipeline_id, .. } => Some(pipeline_id),
            StatusEvent::Source { .. } | StatusEvent::ServiceState { .. } => None,
        }
    }

    /// The table a row event is about (the others name a pipeline or a source).
    pub fn table(&self) -> Option<&TableIdentifier> {
        match self {
            StatusEvent::Row { table, .. } => Some(table),
            StatusEvent::PipelineState { .. }
            | StatusEvent::Source { .. }
            | StatusEvent::ServiceState { .. } => None,
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
    /// Every pipeline's last known state, and the service state derived from them.
    states: Mutex<(HashMap<String, PipelineState>, ServiceState)>,
    /// Table check warnings per source (e.g. a table without a row identity).
    warnings: Mutex<HashMap<String, Vec<ValidationError>>>,
    sender: broadcast::Sender<StatusEvent>,
}

impl Default for StatusEvents {
    fn default() -> Self {
        Self {
            counters: Mutex::new(HashMap::new()),
            states: Mutex::new((HashMap::new(), ServiceState::Starting)),
            warnings: Mutex::new(HashMap::new()),
            sender: broadcast::Sender::new(WATCH_BUFFER),
        }
    }
}

/// The service state of a set of pipeline states: RELOADING while some pipeline
/// baselines and another streams; else ERROR when any pipeline is in ERROR; else
/// BASELINING while any baselines; STARTING while any is initialising (or there is
/// none); PAUSED when every pipeline is paused; else STREAMING.
pub fn service_state(states: impl IntoIterator<Item = PipelineState>) -> ServiceState {
    let (mut error, mut baselining, mut streaming, mut initializing, mut all_paused, mut any) =
        (false, false, false, false, true, false);
    for state in states {
        any = true;
        error |= state == PipelineState::Error;
        baselining |= state == PipelineState::Baselining;
        streaming |= state == PipelineState::Streaming;
        initializing |= state == PipelineState::Initializing;
        all_paused &= state == PipelineState::Paused;
    }
    if error {
        ServiceState::Error
    } else if baselining && streaming {
        ServiceState::Reloading
    } else if baselining {
        ServiceState::Baselining
    } else if initializing || !any {
        ServiceState::Starting
    } else if all_paused {
        ServiceState::Paused
    } else {
        ServiceState::Streaming
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

    /// Takes every pipeline's current state from the engine (the service does this
    /// when it is created), so the service state is derived from all of them and not
    /// only from those that changed state since the observer was registered.
    pub fn seed_states(&self, pipelines: &[PipelineInfo]) {
        let mut states = self.states.lock();
        for p in pipelines {
            states.0.insert(p.id.clone(), p.state);
        }
        states.1 = service_state(states.0.values().copied());
    }

    /// The service state as derived from the pipeline states seen.
    pub fn service_state(&self) -> ServiceState {
        self.states.lock().1
    }

    /// The table check warnings a source reported when it started.
    pub fn warnings(&self, source_id: &str) -> Vec<ValidationError> {
        self.warnings
            .lock()
            .get(source_id)
            .cloned()
            .unwrap_or_default()
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
        let at = SystemTime::now();
        // Under the states lock, so that service state changes are published in the
        // order they are derived.
        let mut states = self.states.lock();
        states.0.insert(pipeline_id.to_string(), new);
        self.publish(StatusEvent::PipelineState {
            at,
            pipeline_id: pipeline_id.to_string(),
            old,
            new,
        });
        let derived = service_state(states.0.values().copied());
        if derived != states.1 {
            let old = std::mem::replace(&mut states.1, derived);
            self.publish(StatusEvent::ServiceState {
                at,
                old,
                new: derived,
            });
        }
    }

    fn on_validation_warning(&self, source_id: &str, warning: &ValidationError) {
        let mut warnings = self.warnings.lock();
        let list = warnings.entry(source_id.to_string()).or_default();
        if !list.contains(warning) {
            list.push(warning.clone());
        }
    }

    fn on_change_received(&self, pipeline_id: &str, change: &ChangeEvent) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        self.publish(StatusEvent::Row {
            at: SystemTime::now(),
            pipeline_id: pipeline_id.to_string(),
            table: change.table.clone(),
            action: change.action,
            position: change.position.clone(),
            xid: change.xid,
            identity: change.identity().cloned(),
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
