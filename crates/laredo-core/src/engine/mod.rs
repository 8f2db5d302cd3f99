//! The engine: sources, pipelines, buffers, ACK coordination, readiness and admin.
//!
//! Shape: one task per source runs `init`, the startup path (resume or baseline) and
//! then the stream, demultiplexing each change by table into the bounded buffer of
//! every pipeline of that table ([`buffer`]). One task per pipeline takes batches from
//! its buffer and applies them to its target ([`runtime`]). After each batch the
//! pipeline confirms the last position its target made durable, and the source is
//! acknowledged at the minimum confirmed position over its live pipelines ([`ack`]).
//!
//! Invariants:
//! - the ACK never passes a position that some live pipeline has not made durable;
//! - a pipeline's target is written by one task at a time (its apply lock), in source
//!   order; baselines and reloads hold the same lock;
//! - a PAUSED or reloading pipeline keeps its buffered changes and applies them later:
//!   nothing is dropped except by the `drop_oldest` policy or for a pipeline in ERROR.

mod ack;
mod baseline;
mod buffer;
mod builder;
mod consumer;
mod dispatch;
mod position_cell;
mod replay;
mod runtime;
mod snapshots;
mod ttl;
mod validation;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering as AtomicOrdering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::dead_letter::DeadLetterStore;
use crate::observer::EngineObserver;
use crate::pipeline::RowChain;
use crate::source::{SourceError, SyncSource};
use crate::status::{LagInfo, OrderingGuarantee, PipelineState, SourceState};
use crate::table::{ColumnDefinition, TableIdentifier};
use crate::target::SyncTarget;
use crate::value::Value;

use self::builder::pipeline_id;
pub use self::builder::{
    ConfigError, ConfigErrors, DEFAULT_BUFFER_SIZE, DEFAULT_LAG_POLL_INTERVAL, DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_BACKOFF, DEFAULT_RETRY_BACKOFF_MAX, DEFAULT_TTL_SCAN_INTERVAL, EngineBuilder,
    PipelineOptions, TtlFn,
};
pub use self::snapshots::{RestoreMismatch, RestoreOutcome, SnapshotOptions, SnapshotSummary};

/// An engine API error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// `start` was called twice.
    #[error("already started")]
    AlreadyStarted,
    /// The engine was stopped.
    #[error("stopped")]
    Stopped,
    /// The engine was not started.
    #[error("not started")]
    NotStarted,
    /// No source has this id.
    #[error("unknown source: {0}")]
    UnknownSource(String),
    /// No pipeline of the table is streaming or paused.
    #[error("no active pipelines for {table} on source {source_id}")]
    NoActivePipelines {
        /// The source.
        source_id: String,
        /// The table.
        table: TableIdentifier,
    },
    /// Snapshots need a snapshot store.
    #[error("no snapshot store configured")]
    NoSnapshotStore,
    /// The snapshot does not exist.
    #[error("{0}")]
    SnapshotNotFound(String),
    /// The snapshot store failed, or a snapshot could not be taken or restored.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// A restore was refused before anything was touched (it would lose changes, the
    /// snapshot lacks a pipeline, the user metadata differs).
    #[error("restore refused: {0}")]
    SnapshotRefused(String),
    /// The source has no reset.
    #[error("source {0} does not support reset")]
    ResetUnsupported(String),
    /// The shutdown timeout passed.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// A source call failed.
    #[error("{operation} source {source_id}")]
    Source {
        /// What was attempted (`pause`, `resume`, `reset`).
        operation: &'static str,
        /// The source.
        source_id: String,
        /// The cause.
        #[source]
        source: SourceError,
    },
    /// No pipeline serves this table.
    #[error("no pipeline serves table {0}")]
    UnknownTable(TableIdentifier),
    /// No pipeline has this id.
    #[error("unknown pipeline: {0}")]
    UnknownPipeline(String),
    /// Dead-letter operations need a dead letter store.
    #[error("no dead letter store configured")]
    NoDeadLetterStore,
    /// The dead letter store failed (its error is the source).
    #[error("dead letter store")]
    DeadLetter(#[source] crate::dead_letter::DeadLetterError),
    /// A replay named a table it cannot replay (not in the snapshot, not the target
    /// pipeline's).
    #[error("invalid table {table:?}: {reason}")]
    ReplayTable {
        /// The table as named.
        table: String,
        /// Why.
        reason: String,
    },
    /// A replay was refused before anything was touched (the pipeline is not
    /// streaming, the snapshot lacks its table, the columns differ).
    #[error("replay refused: {0}")]
    ReplayRefused(String),
    /// A reload's baseline failed; its pipelines are in ERROR.
    #[error("reload baseline failed for {table}: {message}")]
    ReloadFailed {
        /// The table.
        table: TableIdentifier,
        /// What failed.
        message: String,
    },
}

/// A pipeline as reported by [`Engine::pipelines`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipelineInfo {
    /// `{source}:{schema}.{table}:{target_type}` or the explicit id.
    pub id: String,
    /// The source.
    pub source_id: String,
    /// The table.
    pub table: TableIdentifier,
    /// The target's type name.
    pub target_type: String,
    /// The current state.
    pub state: PipelineState,
    /// Rows the engine expects the target to hold (baseline rows + inserts − deletes).
    pub row_count: i64,
    /// Changes waiting in the pipeline's buffer.
    pub buffer_depth: usize,
    /// The buffer's capacity.
    pub buffer_capacity: usize,
}

/// A source as reported by [`Engine::source_info`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceRunInfo {
    /// The id.
    pub id: String,
    /// The source's type name.
    pub source_type: String,
    /// Whether it resumes after a restart.
    pub supports_resume: bool,
    /// Its ordering guarantee.
    pub ordering: OrderingGuarantee,
    /// Its connection state.
    pub state: SourceState,
    /// Its lag.
    pub lag: LagInfo,
    /// The last acknowledged position, in the source's text form.
    pub last_acked_position: Option<String>,
    /// The position the source delivered last — of a change, of a heartbeat, or the
    /// point a baseline or resume starts streaming from — in the source's text form.
    pub current_position: Option<String>,
}

/// Pipeline-level data the engine tasks share.
pub(crate) struct PipelineEntry {
    pub(crate) idx: usize,
    pub(crate) id: String,
    pub(crate) source_idx: usize,
    /// Index of this pipeline within its source's pipeline list (ACK slot).
    pub(crate) local_idx: usize,
    pub(crate) table: TableIdentifier,
    pub(crate) target: Arc<dyn SyncTarget>,
    pub(crate) chain: RowChain,
    pub(crate) options: PipelineOptions,
    /// The state, for waiters; `state_now` mirrors it for the hot path.
    pub(crate) state: watch::Sender<PipelineState>,
    /// The state as a number, read on every change without touching the watch's lock.
    pub(crate) state_now: AtomicU8,
    pub(crate) expected_rows: AtomicI64,
    /// Held by whoever writes the target: the consumer per batch, baselines and reloads
    /// for their whole duration.
    pub(crate) apply_lock: tokio::sync::Mutex<()>,
    /// The buffer of the current source run.
    pub(crate) buffer: Mutex<Option<Arc<buffer::ChangeBuffer>>>,
    /// The position of the last baseline: changes at or before it are already in the
    /// baseline's rows, so buffered ones are skipped instead of applied over it.
    pub(crate) baseline_floor: Mutex<Option<crate::Position>>,
    /// Signalled when a baseline of the pipeline completed (its validation task then
    /// compares the source's count).
    pub(crate) baselined: tokio::sync::Notify,
}

impl PipelineEntry {
    pub(crate) fn state(&self) -> PipelineState {
        PipelineState::from_number(self.state_now.load(AtomicOrdering::Acquire))
            .expect("state_now only ever holds PipelineState numbers")
    }
}

pub(crate) struct SourceRuntime {
    pub(crate) cancel: CancellationToken,
    pub(crate) handle: JoinHandle<()>,
}

pub(crate) struct SourceEntry {
    pub(crate) id: String,
    pub(crate) source: Arc<dyn SyncSource>,
    pub(crate) pipelines: Vec<usize>,
    pub(crate) tables: Vec<TableIdentifier>,
    pub(crate) by_table: HashMap<TableIdentifier, Vec<usize>>,
    pub(crate) ack: tokio::sync::Mutex<ack::AckState>,
    pub(crate) runtime: Mutex<Option<SourceRuntime>>,
    /// Serialises admin operations (reload, pause, resume, reset) on this source.
    pub(crate) admin: tokio::sync::Mutex<()>,
    /// Paused by [`Engine::pause`] (as opposed to paused for a reload).
    pub(crate) user_paused: AtomicBool,
    /// A snapshot restore for the next run of the source task.
    pub(crate) pending_restore: Mutex<Option<snapshots::PendingRestore>>,
    /// Set by the first run of the source task (startup restores only then).
    pub(crate) started_once: AtomicBool,
    /// A copy of `ack.last_acked`, readable without waiting for the ACK lock (held
    /// across `source.ack()`).
    pub(crate) acked: Mutex<Option<crate::Position>>,
    /// The position the source delivered last to the source task (see
    /// [`SourceRunInfo::current_position`]).
    pub(crate) received: position_cell::PositionCell,
}

enum Lifecycle {
    NotStarted,
    Running {
        cancel: CancellationToken,
        lag_poller: JoinHandle<()>,
    },
    Stopped,
}

type ReadyCallback = Box<dyn FnOnce() + Send>;

pub(crate) struct Inner {
    pub(crate) sources: Vec<SourceEntry>,
    pub(crate) pipelines: Vec<PipelineEntry>,
    pub(crate) observer: Arc<dyn EngineObserver>,
    pub(crate) dead_letters: Option<Arc<dyn DeadLetterStore>>,
    pub(crate) snapshots: Option<snapshots::SnapshotState>,
    pub(crate) schemas: RwLock<HashMap<TableIdentifier, Vec<ColumnDefinition>>>,
    lifecycle: Mutex<Lifecycle>,
    ready: watch::Sender<bool>,
    ready_callbacks: Mutex<Vec<ReadyCallback>>,
    shutdown_timeout: Option<Duration>,
    lag_poll_interval: Duration,
    /// Cancels every source (the `stop_all` error policy and [`Engine::stop`]).
    pub(crate) root_cancel: Mutex<Option<CancellationToken>>,
}

/// How a state transition treats pipelines in ERROR or STOPPED.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// Bulk transitions never leave ERROR or STOPPED.
    Bulk,
    /// Explicit transitions (stop, reset) may.
    Explicit,
}

impl Inner {
    /// Moves a pipeline to `new`, emitting the event and updating readiness only when
    /// the state really changes.
    pub(crate) fn set_state(
        &self,
        pipeline: &PipelineEntry,
        new: PipelineState,
        transition: Transition,
    ) -> bool {
        let mut old = new;
        let changed = pipeline.state.send_if_modified(|state| {
            if *state == new || (transition == Transition::Bulk && state.is_terminal()) {
                return false;
            }
            old = *state;
            *state = new;
            pipeline
                .state_now
                .store(new.as_number(), AtomicOrdering::Release);
            true
        });
        if changed {
            tracing::debug!(pipeline = %pipeline.id, %old, %new, "pipeline state changed");
            self.observer
                .on_pipeline_state_changed(&pipeline.id, old, new);
            self.refresh_readiness();
        }
        changed
    }

    /// Moves a pipeline from `from` to `to` only if it is in `from`.
    pub(crate) fn transition_from(
        &self,
        pipeline: &PipelineEntry,
        from: PipelineState,
        to: PipelineState,
    ) -> bool {
        let changed = pipeline.state.send_if_modified(|state| {
            if *state != from {
                return false;
            }
            *state = to;
            pipeline
                .state_now
                .store(to.as_number(), AtomicOrdering::Release);
            true
        });
        if changed {
            self.observer
                .on_pipeline_state_changed(&pipeline.id, from, to);
            self.refresh_readiness();
        }
        changed
    }

    fn compute_ready(&self) -> bool {
        !self.pipelines.is_empty() && self.pipelines.iter().all(|p| is_ready_state(p.state()))
    }

    pub(crate) fn refresh_readiness(&self) {
        let ready = self.compute_ready();
        let became_ready = self.ready.send_if_modified(|current| {
            let changed = *current != ready;
            *current = ready;
            changed
        }) && ready;
        if became_ready {
            let callbacks = std::mem::take(&mut *self.ready_callbacks.lock());
            for cb in callbacks {
                cb();
            }
        }
    }

    pub(crate) fn source_index(&self, source_id: &str) -> Result<usize, EngineError> {
        self.sources
            .iter()
            .position(|s| s.id == source_id)
            .ok_or_else(|| EngineError::UnknownSource(source_id.to_string()))
    }

    fn ensure_running(&self) -> Result<(), EngineError> {
        match &*self.lifecycle.lock() {
            Lifecycle::NotStarted => Err(EngineError::NotStarted),
            Lifecycle::Running { .. } => Ok(()),
            Lifecycle::Stopped => Err(EngineError::Stopped),
        }
    }
}

fn is_ready_state(state: PipelineState) -> bool {
    matches!(state, PipelineState::Streaming | PipelineState::Paused)
}

/// The sync engine: moves a consistent baseline and then every change from its
/// sources into its pipelines' targets.
///
/// Cheap to clone: clones share one engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("sources", &self.source_ids())
            .field(
                "pipelines",
                &self
                    .inner
                    .pipelines
                    .iter()
                    .map(|p| &p.id)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Engine {
    /// Starts building an engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    fn from_parts(builder: EngineBuilder, observer: Arc<dyn EngineObserver>) -> Self {
        let EngineBuilder {
            sources,
            pipelines: specs,
            dead_letters,
            snapshots,
            shutdown_timeout,
            lag_poll_interval,
            ..
        } = builder;
        let mut source_entries: Vec<SourceEntry> = sources
            .into_iter()
            .map(|(id, source)| SourceEntry {
                id,
                source,
                pipelines: Vec::new(),
                tables: Vec::new(),
                by_table: HashMap::new(),
                ack: tokio::sync::Mutex::new(ack::AckState::default()),
                runtime: Mutex::new(None),
                admin: tokio::sync::Mutex::new(()),
                user_paused: AtomicBool::new(false),
                pending_restore: Mutex::new(None),
                started_once: AtomicBool::new(false),
                acked: Mutex::new(None),
                received: position_cell::PositionCell::default(),
            })
            .collect();
        let mut pipelines = Vec::with_capacity(specs.len());
        for (idx, spec) in specs.into_iter().enumerate() {
            let id = pipeline_id(&spec);
            let source_idx = source_entries
                .iter()
                .position(|s| s.id == spec.source_id)
                .expect("build() validated every pipeline's source");
            let source = &mut source_entries[source_idx];
            let local_idx = source.pipelines.len();
            source.pipelines.push(idx);
            if !source.tables.contains(&spec.table) {
                source.tables.push(spec.table.clone());
            }
            source
                .by_table
                .entry(spec.table.clone())
                .or_default()
                .push(idx);
            let chain = RowChain::new(
                spec.options.filters.clone(),
                spec.options.transforms.clone(),
            );
            pipelines.push(PipelineEntry {
                idx,
                id,
                source_idx,
                local_idx,
                table: spec.table,
                target: spec.target,
                chain,
                options: spec.options,
                state: watch::Sender::new(PipelineState::Initializing),
                state_now: AtomicU8::new(PipelineState::Initializing.as_number()),
                expected_rows: AtomicI64::new(0),
                apply_lock: tokio::sync::Mutex::new(()),
                baseline_floor: Mutex::new(None),
                baselined: tokio::sync::Notify::new(),
                buffer: Mutex::new(None),
            });
        }
        for source in &mut source_entries {
            source.ack = tokio::sync::Mutex::new(ack::AckState::new(source.pipelines.len()));
        }
        Self {
            inner: Arc::new(Inner {
                sources: source_entries,
                pipelines,
                observer,
                dead_letters,
                snapshots: snapshots.map(snapshots::SnapshotState::new),
                schemas: RwLock::new(HashMap::new()),
                lifecycle: Mutex::new(Lifecycle::NotStarted),
                ready: watch::Sender::new(false),
                ready_callbacks: Mutex::new(Vec::new()),
                shutdown_timeout,
                lag_poll_interval: lag_poll_interval.unwrap_or(builder::DEFAULT_LAG_POLL_INTERVAL),
                root_cancel: Mutex::new(None),
            }),
        }
    }

    /// Starts every source task in the background: init, then resume or baseline, then
    /// streaming. Returns at once; use [`Engine::await_ready`] to wait for the baselines.
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// "already started" or "stopped".
    pub async fn start(&self) -> Result<(), EngineError> {
        let mut lifecycle = self.inner.lifecycle.lock();
        match &*lifecycle {
            Lifecycle::NotStarted => {}
            Lifecycle::Running { .. } => return Err(EngineError::AlreadyStarted),
            Lifecycle::Stopped => return Err(EngineError::Stopped),
        }
        let cancel = CancellationToken::new();
        *self.inner.root_cancel.lock() = Some(cancel.clone());
        for source_idx in 0..self.inner.sources.len() {
            runtime::spawn_source(&self.inner, source_idx, &cancel);
        }
        let lag_poller = tokio::spawn(runtime::poll_lag(
            Arc::clone(&self.inner),
            self.inner.lag_poll_interval,
            cancel.clone(),
        ));
        if let Some(interval) = self
            .inner
            .snapshots
            .as_ref()
            .and_then(|s| s.options.schedule)
        {
            tokio::spawn(snapshots::schedule(
                Arc::clone(&self.inner),
                interval,
                cancel.child_token(),
            ));
        }
        *lifecycle = Lifecycle::Running { cancel, lag_poller };
        Ok(())
    }

    /// Stops the engine: cancels the streams, lets every pipeline drain its buffer,
    /// acknowledges the final positions, closes the targets (moving them to STOPPED) and
    /// then the sources.
    ///
    /// # Errors
    /// "not started", "stopped" (a second stop), or "deadline exceeded" when the
    /// shutdown timeout passes first.
    pub async fn stop(&self) -> Result<(), EngineError> {
        let (cancel, lag_poller) = {
            let mut lifecycle = self.inner.lifecycle.lock();
            match std::mem::replace(&mut *lifecycle, Lifecycle::Stopped) {
                Lifecycle::NotStarted => {
                    *lifecycle = Lifecycle::NotStarted;
                    return Err(EngineError::NotStarted);
                }
                Lifecycle::Stopped => return Err(EngineError::Stopped),
                Lifecycle::Running { cancel, lag_poller } => (cancel, lag_poller),
            }
        };
        let inner = Arc::clone(&self.inner);
        let work = async move {
            cancel.cancel();
            lag_poller.abort();
            for source in &inner.sources {
                runtime::stop_source_task(source).await;
            }
            for source_idx in 0..inner.sources.len() {
                ack::advance(&inner, source_idx).await;
            }
            // After the streams ended and the final positions were acknowledged: the
            // snapshot's positions are exactly where each source will resume.
            if inner
                .snapshots
                .as_ref()
                .is_some_and(|s| s.options.on_shutdown)
            {
                let meta = BTreeMap::from([("trigger".to_string(), Value::text("shutdown"))]);
                if let Err(e) = snapshots::create(&inner, None, meta).await {
                    tracing::warn!(error = %crate::ErrorChain(&e), "shutdown snapshot failed");
                }
            }
            for pipeline in &inner.pipelines {
                if pipeline.state() == PipelineState::Stopped {
                    continue;
                }
                if let Err(e) = pipeline.target.on_close(&pipeline.table).await {
                    tracing::warn!(pipeline = %pipeline.id, error = %crate::ErrorChain(&e), "target close failed");
                }
                inner.set_state(pipeline, PipelineState::Stopped, Transition::Explicit);
            }
            for source in &inner.sources {
                if let Err(e) = source.source.close().await {
                    inner.observer.on_source_disconnected(
                        &source.id,
                        &format!("close error: {}", crate::ErrorChain(&e)),
                    );
                }
            }
        };
        match self.inner.shutdown_timeout {
            Some(timeout) => tokio::time::timeout(timeout, work)
                .await
                .map_err(|_| EngineError::DeadlineExceeded),
            None => {
                work.await;
                Ok(())
            }
        }
    }

    /// Waits until every pipeline is ready or `timeout` passes; a zero timeout just
    /// checks. Returns whether the engine is ready.
    pub async fn await_ready(&self, timeout: Duration) -> bool {
        if timeout.is_zero() {
            return self.is_ready();
        }
        let mut rx = self.inner.ready.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|ready| *ready))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// True when every pipeline has its baseline (or was resumed) and is STREAMING or
    /// PAUSED. Computed live: a pipeline in ERROR makes the engine not ready.
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// True when the source has pipelines and all are STREAMING or PAUSED.
    pub fn is_source_ready(&self, source_id: &str) -> bool {
        self.inner
            .sources
            .iter()
            .find(|s| s.id == source_id)
            .is_some_and(|s| {
                !s.pipelines.is_empty()
                    && s.pipelines
                        .iter()
                        .all(|&p| is_ready_state(self.inner.pipelines[p].state()))
            })
    }

    /// True when every pipeline of `table` on `source_id` is ready.
    pub fn is_table_ready(&self, source_id: &str, table: &TableIdentifier) -> bool {
        let mut pipelines = self.pipelines_of(source_id, table).peekable();
        pipelines.peek().is_some() && pipelines.all(|p| is_ready_state(p.state()))
    }

    /// True when the pipeline with this id is ready.
    pub fn is_pipeline_ready(&self, pipeline_id: &str) -> bool {
        self.inner
            .pipelines
            .iter()
            .any(|p| p.id == pipeline_id && is_ready_state(p.state()))
    }

    /// Calls `callback` once the engine is ready: at once (on this thread) when it
    /// already is, otherwise from the task that makes it ready, outside engine locks.
    pub fn on_ready(&self, callback: impl FnOnce() + Send + 'static) {
        let mut callbacks = self.inner.ready_callbacks.lock();
        if self.is_ready() {
            drop(callbacks);
            callback();
        } else {
            callbacks.push(Box::new(callback));
        }
    }

    /// Re-baselines one table while the source's other tables keep streaming: pauses
    /// the source, truncates the table's targets, loads a fresh baseline, then resumes.
    /// Changes that arrive meanwhile stay buffered and are applied afterwards, so none
    /// is lost (some may be applied twice; targets apply by key).
    ///
    /// # Errors
    /// Engine not running, unknown source, no active pipeline for the table, the
    /// source failing to pause, or the baseline failing (the pipelines go to ERROR).
    pub async fn reload(
        &self,
        source_id: &str,
        table: &TableIdentifier,
    ) -> Result<(), EngineError> {
        self.inner.ensure_running()?;
        let source_idx = self.inner.source_index(source_id)?;
        runtime::reload(&self.inner, source_idx, table).await
    }

    /// Reloads every table of a source (or of every source when `source_id` is `None`).
    ///
    /// # Errors
    /// As [`Engine::reload`]; stops at the first failure.
    pub async fn reload_all(&self, source_id: Option<&str>) -> Result<(), EngineError> {
        self.inner.ensure_running()?;
        let sources: Vec<usize> = match source_id {
            Some(id) => vec![self.inner.source_index(id)?],
            None => (0..self.inner.sources.len()).collect(),
        };
        for source_idx in sources {
            for table in self.inner.sources[source_idx].tables.clone() {
                match runtime::reload(&self.inner, source_idx, &table).await {
                    Err(EngineError::NoActivePipelines { .. }) => {}
                    other => other?,
                }
            }
        }
        Ok(())
    }

    /// Pauses a source: no further change is delivered until [`Engine::resume`]; its
    /// STREAMING pipelines become PAUSED and keep what they have buffered.
    ///
    /// # Errors
    /// Engine not running, unknown source, or the source failing to pause.
    pub async fn pause(&self, source_id: &str) -> Result<(), EngineError> {
        self.set_paused(source_id, true).await
    }

    /// Resumes a paused source; its PAUSED pipelines apply what they held and stream on.
    ///
    /// # Errors
    /// Engine not running, unknown source, or the source failing to resume.
    pub async fn resume(&self, source_id: &str) -> Result<(), EngineError> {
        self.set_paused(source_id, false).await
    }

    async fn set_paused(&self, source_id: &str, paused: bool) -> Result<(), EngineError> {
        self.inner.ensure_running()?;
        let source_idx = self.inner.source_index(source_id)?;
        let source = &self.inner.sources[source_idx];
        let _admin = source.admin.lock().await;
        let (operation, result, from, to) = if paused {
            let result = source.source.pause().await;
            (
                "pause",
                result,
                PipelineState::Streaming,
                PipelineState::Paused,
            )
        } else {
            let result = source.source.resume().await;
            (
                "resume",
                result,
                PipelineState::Paused,
                PipelineState::Streaming,
            )
        };
        result.map_err(|e| EngineError::Source {
            operation,
            source_id: source_id.to_string(),
            source: e,
        })?;
        source.user_paused.store(paused, AtomicOrdering::SeqCst);
        for &p in &source.pipelines {
            self.inner
                .transition_from(&self.inner.pipelines[p], from, to);
        }
        Ok(())
    }

    /// Resets a source: stops its task, calls the source's reset (PostgreSQL drops the
    /// slot and optionally the publication), truncates its targets and starts it again
    /// from a fresh baseline, without a process restart.
    ///
    /// # Errors
    /// Engine not running, unknown source, "does not support reset", or the reset failing
    /// (the source is restarted as it was).
    pub async fn reset_source(
        &self,
        source_id: &str,
        drop_publication: bool,
    ) -> Result<(), EngineError> {
        self.inner.ensure_running()?;
        let source_idx = self.inner.source_index(source_id)?;
        runtime::reset_source(&self.inner, source_idx, drop_publication).await
    }

    /// The targets of `table` on `source_id` (an empty id matches any source).
    pub fn targets(&self, source_id: &str, table: &TableIdentifier) -> Vec<Arc<dyn SyncTarget>> {
        self.pipelines_of(source_id, table)
            .map(|p| Arc::clone(&p.target))
            .collect()
    }

    /// The target of the pipeline with this id.
    pub fn pipeline_target(&self, pipeline_id: &str) -> Option<Arc<dyn SyncTarget>> {
        self.inner
            .pipelines
            .iter()
            .find(|p| p.id == pipeline_id)
            .map(|p| Arc::clone(&p.target))
    }

    /// The target of a pipeline when its concrete type is `T`.
    pub fn pipeline_target_as<T: SyncTarget>(&self, pipeline_id: &str) -> Option<Arc<T>> {
        self.inner
            .pipelines
            .iter()
            .find(|p| p.id == pipeline_id)
            .and_then(downcast_target)
    }

    /// The first target of `table` on `source_id` (empty = any source) whose concrete
    /// type is `T`: the typed handle of a running target.
    pub fn get_target<T: SyncTarget>(
        &self,
        source_id: &str,
        table: &TableIdentifier,
    ) -> Option<Arc<T>> {
        self.pipelines_of(source_id, table)
            .find_map(downcast_target)
    }

    fn pipelines_of<'a>(
        &'a self,
        source_id: &'a str,
        table: &'a TableIdentifier,
    ) -> impl Iterator<Item = &'a PipelineEntry> + 'a {
        self.inner.pipelines.iter().filter(move |p| {
            &p.table == table
                && (source_id.is_empty() || self.inner.sources[p.source_idx].id == source_id)
        })
    }

    /// Every pipeline with its state and counters.
    pub fn pipelines(&self) -> Vec<PipelineInfo> {
        self.inner
            .pipelines
            .iter()
            .map(|p| {
                let buffer = p.buffer.lock().clone();
                PipelineInfo {
                    id: p.id.clone(),
                    source_id: self.inner.sources[p.source_idx].id.clone(),
                    table: p.table.clone(),
                    target_type: p.target.type_name().to_string(),
                    state: p.state(),
                    row_count: p.expected_rows.load(AtomicOrdering::Relaxed),
                    buffer_depth: buffer.as_ref().map_or(0, |b| b.len()),
                    buffer_capacity: p.options.buffer_size,
                }
            })
            .collect()
    }

    /// The source ids, in registration order.
    pub fn source_ids(&self) -> Vec<String> {
        self.inner.sources.iter().map(|s| s.id.clone()).collect()
    }

    /// The source registered under `source_id`.
    pub fn source(&self, source_id: &str) -> Option<Arc<dyn SyncSource>> {
        self.inner
            .sources
            .iter()
            .find(|s| s.id == source_id)
            .map(|s| Arc::clone(&s.source))
    }

    /// Status of a source.
    pub fn source_info(&self, source_id: &str) -> Option<SourceRunInfo> {
        let source = self.inner.sources.iter().find(|s| s.id == source_id)?;
        let text =
            |p: &Option<crate::Position>| p.as_ref().map(|p| source.source.position_to_string(p));
        let last_acked = text(&source.acked.lock());
        let current = text(&source.received.get());
        Some(SourceRunInfo {
            id: source.id.clone(),
            source_type: source.source.source_type().to_string(),
            supports_resume: source.source.supports_resume(),
            ordering: source.source.ordering_guarantee(),
            state: source.source.state(),
            lag: source.source.lag(),
            last_acked_position: last_acked,
            current_position: current,
        })
    }

    /// The dead letter store, when one is configured.
    pub fn dead_letter_store(&self) -> Option<Arc<dyn crate::DeadLetterStore>> {
        self.inner.dead_letters.clone()
    }

    /// Re-applies a pipeline's dead letters to its target, oldest first, while no
    /// change of the pipeline is being applied (the pipeline's apply lock is held);
    /// the entries that succeed leave the store.
    ///
    /// # Errors
    /// An unknown pipeline, no dead letter store, or the store failing.
    pub async fn replay_dead_letters(
        &self,
        pipeline_id: &str,
    ) -> Result<crate::ReplayOutcome, EngineError> {
        let p = self
            .inner
            .pipelines
            .iter()
            .find(|p| p.id == pipeline_id)
            .ok_or_else(|| EngineError::UnknownPipeline(pipeline_id.to_string()))?;
        let store = self
            .inner
            .dead_letters
            .clone()
            .ok_or(EngineError::NoDeadLetterStore)?;
        let _applying = p.apply_lock.lock().await;
        let position = self.inner.sources[p.source_idx]
            .received
            .get()
            .unwrap_or(crate::Position::from_u64(0));
        store
            .replay(pipeline_id, p.target.as_ref(), &position)
            .await
            .map_err(EngineError::DeadLetter)
    }

    /// The columns of `table` as its source last reported them.
    pub fn table_schema(&self, table: &TableIdentifier) -> Option<Vec<ColumnDefinition>> {
        self.inner.schemas.read().get(table).cloned()
    }
}

/// A pipeline's target as its concrete type `T`, when it is one.
fn downcast_target<T: SyncTarget>(p: &PipelineEntry) -> Option<Arc<T>> {
    let any: Arc<dyn std::any::Any + Send + Sync> = Arc::clone(&p.target) as _;
    any.downcast::<T>().ok()
}
