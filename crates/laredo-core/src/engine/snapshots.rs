//! Engine snapshots: create, list, inspect, delete, prune and restore through a
//! [`SnapshotStore`], on demand, on a schedule and at shutdown; restore at startup.
//!
//! A snapshot holds every exportable pipeline's rows and, per source, the last
//! acknowledged position. Targets are exported under their apply locks while the sources
//! are paused, so each export holds at least everything acknowledged: restoring it and
//! streaming from the recorded position replays the changes after it, which targets
//! apply by key (at-least-once, never a gap).
//!
//! A restore needs the source to still have every change after the snapshot's position
//! ([`SyncSource::can_stream_from`](crate::SyncSource::can_stream_from)). When it does
//! not (a PostgreSQL slot confirmed past it, a new temporary slot), startup runs a
//! baseline instead and a runtime restore is refused: a restore never opens a gap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::position::Position;
use crate::snapshot::{
    SnapshotDescriptor, SnapshotError, SnapshotFilter, SnapshotMetadata, SnapshotStore,
    TableEntries, TableSnapshotInfo,
};
use crate::status::PipelineState;
use crate::table::TableIdentifier;
use crate::value::Value;

use super::{Engine, EngineError, Inner, PipelineEntry, SourceEntry, Transition, ack, runtime};

/// What a restore does when the snapshot's user metadata differs from the configured
/// one ([`SnapshotOptions::user_meta`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestoreMismatch {
    /// Restore anyway and report the differences (default).
    #[default]
    Warn,
    /// Refuse the snapshot (startup then runs a baseline).
    Reject,
}

/// Engine snapshot settings, given to
/// [`EngineBuilder::snapshots`](crate::EngineBuilder::snapshots).
#[derive(Clone)]
#[non_exhaustive]
pub struct SnapshotOptions {
    pub(crate) store: Arc<dyn SnapshotStore>,
    pub(crate) store_type: String,
    pub(crate) store_location: String,
    pub(crate) schedule: Option<Duration>,
    pub(crate) keep: usize,
    pub(crate) on_shutdown: bool,
    pub(crate) restore_on_startup: bool,
    pub(crate) user_meta: BTreeMap<String, Value>,
    pub(crate) on_mismatch: RestoreMismatch,
}

impl std::fmt::Debug for SnapshotOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotOptions")
            .field("store_type", &self.store_type)
            .field("store_location", &self.store_location)
            .field("schedule", &self.schedule)
            .field("keep", &self.keep)
            .field("on_shutdown", &self.on_shutdown)
            .field("restore_on_startup", &self.restore_on_startup)
            .field("user_meta", &self.user_meta)
            .field("on_mismatch", &self.on_mismatch)
            .finish()
    }
}

impl SnapshotOptions {
    /// Snapshots in `store`: no schedule, no retention limit, none at shutdown, restore
    /// at startup on.
    pub fn new(store: Arc<dyn SnapshotStore>) -> Self {
        Self {
            store,
            store_type: "custom".to_string(),
            store_location: String::new(),
            schedule: None,
            keep: 0,
            on_shutdown: false,
            restore_on_startup: true,
            user_meta: BTreeMap::new(),
            on_mismatch: RestoreMismatch::Warn,
        }
    }

    /// How the store is described in status output: its type (`local`, `s3`) and
    /// location (a path, an `s3://` URL).
    #[must_use]
    pub fn describe_store(
        mut self,
        store_type: impl Into<String>,
        location: impl Into<String>,
    ) -> Self {
        self.store_type = store_type.into();
        self.store_location = location.into();
        self
    }

    /// Takes a snapshot every `interval` (user metadata `trigger = "scheduled"`); zero
    /// disables.
    #[must_use]
    pub fn schedule(mut self, interval: Duration) -> Self {
        self.schedule = (!interval.is_zero()).then_some(interval);
        self
    }

    /// Keeps the newest `keep` snapshots after each one is taken; 0 keeps all.
    #[must_use]
    pub fn keep(mut self, keep: usize) -> Self {
        self.keep = keep;
        self
    }

    /// Takes a snapshot when the engine stops (`trigger = "shutdown"`).
    #[must_use]
    pub fn on_shutdown(mut self, enabled: bool) -> Self {
        self.on_shutdown = enabled;
        self
    }

    /// Whether a source without a resume position restores the newest snapshot at
    /// startup instead of running a baseline (default true).
    #[must_use]
    pub fn restore_on_startup(mut self, enabled: bool) -> Self {
        self.restore_on_startup = enabled;
        self
    }

    /// Metadata stored with every snapshot and compared on restore (a schema version,
    /// a deployment name).
    #[must_use]
    pub fn user_meta(mut self, meta: BTreeMap<String, Value>) -> Self {
        self.user_meta = meta;
        self
    }

    /// What a restore does when the user metadata differs.
    #[must_use]
    pub fn on_mismatch(mut self, action: RestoreMismatch) -> Self {
        self.on_mismatch = action;
        self
    }
}

/// Snapshot status for OAM.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SnapshotSummary {
    /// Store type (`local`, `s3`, `custom`).
    pub store_type: String,
    /// Store location.
    pub store_location: String,
    /// The newest snapshot.
    pub latest: Option<SnapshotDescriptor>,
    /// Snapshots in the store.
    pub count: usize,
    /// When the next scheduled snapshot is due.
    pub next_scheduled_at: Option<SystemTime>,
}

/// The result of [`Engine::restore_snapshot`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RestoreOutcome {
    /// The snapshot restored.
    pub snapshot_id: String,
    /// Its user metadata.
    pub user_meta: BTreeMap<String, Value>,
    /// User-metadata differences that did not block the restore.
    pub warnings: Vec<String>,
}

pub(crate) struct SnapshotState {
    pub(crate) options: SnapshotOptions,
    /// One snapshot or restore at a time.
    lock: tokio::sync::Mutex<()>,
    next_scheduled: Mutex<Option<SystemTime>>,
}

impl SnapshotState {
    pub(crate) fn new(options: SnapshotOptions) -> Self {
        Self {
            options,
            lock: tokio::sync::Mutex::new(()),
            next_scheduled: Mutex::new(None),
        }
    }
}

/// A restore handed to a restarting source task.
pub(crate) struct PendingRestore {
    pub(crate) metadata: SnapshotMetadata,
    pub(crate) tables: TableEntries,
    pub(crate) done: oneshot::Sender<Result<(), String>>,
}

pub(crate) fn store_error(error: SnapshotError) -> EngineError {
    if error.is_not_found() {
        // Its message already says "snapshot X not found".
        EngineError::SnapshotNotFound(error.message().to_string())
    } else {
        EngineError::Snapshot(crate::ErrorChain(&error).to_string())
    }
}

impl Engine {
    fn snapshot_state(&self) -> Result<&SnapshotState, EngineError> {
        self.inner
            .snapshots
            .as_ref()
            .ok_or(EngineError::NoSnapshotStore)
    }

    /// The snapshot store, when one is configured.
    pub fn snapshot_store(&self) -> Option<Arc<dyn SnapshotStore>> {
        self.inner
            .snapshots
            .as_ref()
            .map(|s| Arc::clone(&s.options.store))
    }

    /// Takes an engine snapshot (`snap-<unix-nanos>`): pauses the sources, exports every
    /// STREAMING or PAUSED pipeline under its apply lock, records each source's last
    /// acknowledged position, resumes the sources, saves, and prunes to the retention.
    /// `user_meta` is added to the configured metadata.
    ///
    /// # Errors
    /// Engine not running, no snapshot store, a source that cannot pause, a target that
    /// cannot export, or the store failing (the sources are resumed first).
    pub async fn create_snapshot(
        &self,
        user_meta: BTreeMap<String, Value>,
    ) -> Result<SnapshotDescriptor, EngineError> {
        self.inner.ensure_running()?;
        self.snapshot_state()?;
        create(&self.inner, None, user_meta).await
    }

    /// As [`Engine::create_snapshot`], of `tables` only: only the sources serving them
    /// pause, only their pipelines are exported, and only those sources' positions are
    /// recorded. Such a snapshot restores at startup only where it covers every
    /// pipeline of a source (otherwise that source baselines); `RestoreSnapshot` and
    /// replays use the tables it has.
    ///
    /// # Errors
    /// As [`Engine::create_snapshot`]; [`EngineError::UnknownTable`] for a table no
    /// pipeline serves (nothing is taken).
    pub async fn create_snapshot_of(
        &self,
        tables: &[TableIdentifier],
        user_meta: BTreeMap<String, Value>,
    ) -> Result<SnapshotDescriptor, EngineError> {
        self.inner.ensure_running()?;
        self.snapshot_state()?;
        if let Some(unknown) = tables
            .iter()
            .find(|t| !self.inner.pipelines.iter().any(|p| &p.table == *t))
        {
            return Err(EngineError::UnknownTable(unknown.clone()));
        }
        create(&self.inner, Some(tables), user_meta).await
    }

    /// Snapshots in the store, newest first.
    ///
    /// # Errors
    /// No snapshot store, or the store failing.
    pub async fn list_snapshots(
        &self,
        filter: &SnapshotFilter,
    ) -> Result<Vec<SnapshotDescriptor>, EngineError> {
        let state = self.snapshot_state()?;
        state.options.store.list(filter).await.map_err(store_error)
    }

    /// A snapshot's metadata (positions, tables, user metadata) and stored size.
    ///
    /// # Errors
    /// No snapshot store, an unknown id ([`EngineError::SnapshotNotFound`]), or the
    /// store failing.
    pub async fn inspect_snapshot(
        &self,
        snapshot_id: &str,
    ) -> Result<(SnapshotMetadata, SnapshotDescriptor), EngineError> {
        let store = &self.snapshot_state()?.options.store;
        let descriptor = store.describe(snapshot_id).await.map_err(store_error)?;
        let metadata = store
            .read_metadata(snapshot_id)
            .await
            .map_err(store_error)?;
        Ok((metadata, descriptor))
    }

    /// Deletes a snapshot.
    ///
    /// # Errors
    /// No snapshot store, an unknown id, or the store failing.
    pub async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), EngineError> {
        let state = self.snapshot_state()?;
        let _one_at_a_time = state.lock.lock().await;
        state
            .options
            .store
            .delete(snapshot_id)
            .await
            .map_err(store_error)
    }

    /// Keeps the newest `keep` snapshots (of `table`, when given); returns how many were
    /// deleted.
    ///
    /// # Errors
    /// No snapshot store, or the store failing.
    pub async fn prune_snapshots(
        &self,
        keep: usize,
        table: Option<&TableIdentifier>,
    ) -> Result<usize, EngineError> {
        let state = self.snapshot_state()?;
        let _one_at_a_time = state.lock.lock().await;
        state
            .options
            .store
            .prune(keep, table)
            .await
            .map_err(store_error)
    }

    /// Snapshot status: store, newest snapshot, count, next scheduled time; `None`
    /// without a store.
    ///
    /// # Errors
    /// The store failing to list.
    pub async fn snapshot_summary(&self) -> Result<Option<SnapshotSummary>, EngineError> {
        let Some(state) = self.inner.snapshots.as_ref() else {
            return Ok(None);
        };
        let listed = state
            .options
            .store
            .list(&SnapshotFilter::default())
            .await
            .map_err(store_error)?;
        Ok(Some(SnapshotSummary {
            store_type: state.options.store_type.clone(),
            store_location: state.options.store_location.clone(),
            count: listed.len(),
            latest: listed.into_iter().next(),
            next_scheduled_at: *state.next_scheduled.lock(),
        }))
    }

    /// Replaces the targets' contents with a snapshot and streams on from its
    /// positions. Every source with pipelines in the snapshot is restarted: its
    /// pipelines get the snapshot's rows and streaming resumes at the recorded position,
    /// replaying what came after it.
    ///
    /// Refused (nothing is touched) when a source cannot stream from the snapshot's
    /// position — restoring would lose the changes since — when the snapshot lacks a
    /// pipeline's rows or a source's position, or when the user metadata differs under
    /// [`RestoreMismatch::Reject`] and `skip_meta_check` is false.
    ///
    /// # Errors
    /// [`EngineError::SnapshotRefused`] as above, [`EngineError::SnapshotNotFound`], no
    /// store, or a target failing to load the rows (its source then runs a baseline).
    pub async fn restore_snapshot(
        &self,
        snapshot_id: &str,
        skip_meta_check: bool,
    ) -> Result<RestoreOutcome, EngineError> {
        self.inner.ensure_running()?;
        let state = self.snapshot_state()?;
        let _one_at_a_time = state.lock.lock().await;
        let (metadata, tables) = state
            .options
            .store
            .load(snapshot_id)
            .await
            .map_err(store_error)?;
        let warnings = meta_differences(&state.options.user_meta, &metadata.user_meta);
        if !warnings.is_empty()
            && !skip_meta_check
            && state.options.on_mismatch == RestoreMismatch::Reject
        {
            return Err(EngineError::SnapshotRefused(format!(
                "snapshot {snapshot_id}: user metadata differs: {}",
                warnings.join("; ")
            )));
        }
        let inner = &self.inner;
        // Every check before anything is touched.
        let mut affected = Vec::new();
        for (source_idx, source) in inner.sources.iter().enumerate() {
            let live = live_pipelines(inner, source_idx);
            let holds_rows = live
                .iter()
                .any(|p| tables.iter().any(|(i, _)| i.table == p.table));
            if !holds_rows {
                continue;
            }
            plan(&metadata, &tables, &live).map_err(EngineError::SnapshotRefused)?;
            let position = snapshot_position(inner, source_idx, &metadata)
                .map_err(EngineError::SnapshotRefused)?;
            check_streamable(inner, source_idx, &position, &metadata)
                .await
                .map_err(EngineError::SnapshotRefused)?;
            affected.push((source_idx, source));
        }
        if affected.is_empty() {
            return Err(EngineError::SnapshotRefused(format!(
                "snapshot {snapshot_id} holds no rows for any pipeline of this engine"
            )));
        }
        let parent = inner.root_cancel.lock().clone().unwrap_or_default();
        let mut waiting = Vec::new();
        for (source_idx, source) in affected {
            let _admin = source.admin.lock().await;
            runtime::stop_source_task(source).await;
            source.user_paused.store(false, AtomicOrdering::SeqCst);
            for p in live_pipelines(inner, source_idx) {
                inner.set_state(p, PipelineState::Initializing, Transition::Explicit);
            }
            let (done, result) = oneshot::channel();
            *source.pending_restore.lock() = Some(PendingRestore {
                metadata: metadata.clone(),
                tables: tables.clone(),
                done,
            });
            runtime::spawn_source(inner, source_idx, &parent);
            waiting.push((source.id.clone(), result));
        }
        for (source_id, result) in waiting {
            match result.await {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => {
                    return Err(EngineError::Snapshot(format!(
                        "restoring source {source_id}: {reason} (a baseline runs instead)"
                    )));
                }
                Err(_) => {
                    return Err(EngineError::Snapshot(format!(
                        "source {source_id} stopped before the restore finished"
                    )));
                }
            }
        }
        Ok(RestoreOutcome {
            snapshot_id: metadata.snapshot_id,
            user_meta: metadata.user_meta,
            warnings,
        })
    }
}

/// The pipelines of a source that are not in ERROR or STOPPED.
fn live_pipelines(inner: &Inner, source_idx: usize) -> Vec<&PipelineEntry> {
    inner.sources[source_idx]
        .pipelines
        .iter()
        .map(|&p| &inner.pipelines[p])
        .filter(|p| !p.state().is_terminal())
        .collect()
}

/// Which snapshot table entry each pipeline restores from: the next unused entry of the
/// same table and target type, in order.
fn plan(
    metadata: &SnapshotMetadata,
    tables: &TableEntries,
    pipelines: &[&PipelineEntry],
) -> Result<Vec<usize>, String> {
    let mut used = vec![false; tables.len()];
    let mut chosen = Vec::with_capacity(pipelines.len());
    for p in pipelines {
        let found = tables.iter().enumerate().position(|(i, (info, _))| {
            !used[i] && info.table == p.table && info.target_type == p.target.type_name()
        });
        let Some(i) = found else {
            return Err(format!(
                "snapshot {} holds no rows for pipeline {}",
                metadata.snapshot_id, p.id
            ));
        };
        used[i] = true;
        chosen.push(i);
    }
    Ok(chosen)
}

fn snapshot_position(
    inner: &Inner,
    source_idx: usize,
    metadata: &SnapshotMetadata,
) -> Result<Position, String> {
    let source = &inner.sources[source_idx];
    let text = metadata.source_positions.get(&source.id).ok_or_else(|| {
        format!(
            "snapshot {} has no position for source {}",
            metadata.snapshot_id, source.id
        )
    })?;
    source.source.position_from_string(text).map_err(|e| {
        format!(
            "snapshot {}: position {text:?} of source {}: {}",
            metadata.snapshot_id,
            source.id,
            crate::ErrorChain(&e)
        )
    })
}

async fn check_streamable(
    inner: &Inner,
    source_idx: usize,
    position: &Position,
    metadata: &SnapshotMetadata,
) -> Result<(), String> {
    let source = &inner.sources[source_idx];
    let text = source.source.position_to_string(position);
    match source.source.can_stream_from(position).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "source {} cannot stream from snapshot {}'s position {text}: the changes since \
             are no longer available there, so restoring would lose them",
            source.id, metadata.snapshot_id
        )),
        Err(e) => Err(format!(
            "source {} cannot tell whether it can stream from {text}: {}",
            source.id,
            crate::ErrorChain(&e)
        )),
    }
}

/// Configured keys whose value the snapshot lacks or differs in.
fn meta_differences(
    configured: &BTreeMap<String, Value>,
    stored: &BTreeMap<String, Value>,
) -> Vec<String> {
    configured
        .iter()
        .filter_map(|(key, want)| match stored.get(key) {
            Some(have) if have == want => None,
            Some(have) => Some(format!("{key}: configured {want}, snapshot has {have}")),
            None => Some(format!("{key}: configured {want}, snapshot has none")),
        })
        .collect()
}

/// How a restore attempt ended.
pub(crate) enum Restore {
    /// The pipelines hold the snapshot; stream from here.
    Restored(Position),
    /// Not used, and no target was touched (no snapshot, unusable position, mismatch).
    Skipped,
    /// A target failed while loading: targets may hold part of the snapshot.
    Failed,
}

/// Restores one source's pipelines from a loaded snapshot. Called by the source task
/// after `init`, with no stream running. Every check runs before a target is touched.
pub(crate) async fn restore_source(
    inner: &Inner,
    source_idx: usize,
    metadata: &SnapshotMetadata,
    mut tables: TableEntries,
) -> (Restore, Option<String>) {
    let source = &inner.sources[source_idx];
    let id = &metadata.snapshot_id;
    inner.observer.on_snapshot_restore_started(id);
    let started = Instant::now();
    let pipelines = live_pipelines(inner, source_idx);
    let checked: Result<(Position, Vec<usize>), String> = async {
        let position = snapshot_position(inner, source_idx, metadata)?;
        let chosen = plan(metadata, &tables, &pipelines)?;
        check_streamable(inner, source_idx, &position, metadata).await?;
        Ok((position, chosen))
    }
    .await;
    let (position, chosen) = match checked {
        Ok(checked) => checked,
        Err(reason) => {
            tracing::info!(source = %source.id, snapshot = %id, %reason, "snapshot not restored");
            inner.observer.on_snapshot_failed(id, &reason);
            return (Restore::Skipped, Some(reason));
        }
    };
    for (p, i) in pipelines.iter().zip(chosen) {
        let info = tables[i].0.clone();
        let entries = std::mem::take(&mut tables[i].1);
        let _apply = p.apply_lock.lock().await;
        let restored = match p.target.snapshots() {
            Some(snapshots) => snapshots.restore_snapshot(&info, entries).await,
            None => Err(unsupported(p)),
        };
        if let Err(e) = restored {
            let reason = format!(
                "pipeline {} could not load snapshot {id}: {}",
                p.id,
                crate::ErrorChain(&e)
            );
            tracing::warn!(source = %source.id, %reason, "snapshot restore failed");
            inner.observer.on_snapshot_failed(id, &reason);
            return (Restore::Failed, Some(reason));
        }
        p.expected_rows.store(
            i64::try_from(info.row_count).unwrap_or(i64::MAX),
            AtomicOrdering::Relaxed,
        );
        *p.baseline_floor.lock() = None;
    }
    source.ack.lock().await.clear();
    *source.acked.lock() = None;
    ack::seed(inner, source_idx, &position).await;
    tracing::info!(source = %source.id, snapshot = %id, %position, "restored from snapshot");
    // Before the pipelines turn ready, so whoever waits for readiness sees the restore.
    inner
        .observer
        .on_snapshot_restore_completed(id, started.elapsed());
    for p in &pipelines {
        inner.set_state(p, PipelineState::Streaming, Transition::Bulk);
    }
    (Restore::Restored(position), None)
}

/// The startup restore of the newest snapshot, when a store is configured with
/// restore at startup on.
pub(crate) async fn restore_at_startup(inner: &Inner, source_idx: usize) -> Restore {
    let Some(state) = inner.snapshots.as_ref() else {
        return Restore::Skipped;
    };
    if !state.options.restore_on_startup {
        return Restore::Skipped;
    }
    let source = &inner.sources[source_idx];
    let store = &state.options.store;
    let newest = match store.list(&SnapshotFilter::default()).await {
        Ok(listed) => match listed.into_iter().next() {
            Some(newest) => newest,
            None => return Restore::Skipped,
        },
        Err(e) => {
            tracing::warn!(source = %source.id, error = %crate::ErrorChain(&e), "cannot list snapshots");
            return Restore::Skipped;
        }
    };
    let (metadata, tables) = match store.load(&newest.snapshot_id).await {
        Ok(loaded) => loaded,
        Err(e) => {
            let reason = format!(
                "cannot load snapshot {}: {}",
                newest.snapshot_id,
                crate::ErrorChain(&e)
            );
            inner
                .observer
                .on_snapshot_failed(&newest.snapshot_id, &reason);
            return Restore::Skipped;
        }
    };
    let differences = meta_differences(&state.options.user_meta, &metadata.user_meta);
    if !differences.is_empty() {
        let text = differences.join("; ");
        if state.options.on_mismatch == RestoreMismatch::Reject {
            let reason = format!(
                "snapshot {}: user metadata differs: {text}",
                metadata.snapshot_id
            );
            inner
                .observer
                .on_snapshot_failed(&metadata.snapshot_id, &reason);
            return Restore::Skipped;
        }
        tracing::warn!(source = %source.id, snapshot = %metadata.snapshot_id, differences = %text, "restoring a snapshot whose user metadata differs");
    }
    restore_source(inner, source_idx, &metadata, tables).await.0
}

/// Takes a snapshot (the engine's running state is checked by the caller).
pub(crate) async fn create(
    inner: &Arc<Inner>,
    only: Option<&[TableIdentifier]>,
    user_meta: BTreeMap<String, Value>,
) -> Result<SnapshotDescriptor, EngineError> {
    let state = inner
        .snapshots
        .as_ref()
        .ok_or(EngineError::NoSnapshotStore)?;
    let _one_at_a_time = state.lock.lock().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let id = format!("snap-{}", now.as_nanos());
    inner.observer.on_snapshot_started(&id);
    let started = Instant::now();
    let result = export_and_save(inner, state, &id, now, only, user_meta).await;
    match &result {
        Ok(descriptor) => {
            let rows = descriptor.tables.iter().map(|t| t.row_count).sum();
            inner.observer.on_snapshot_completed(
                &id,
                descriptor.tables.len(),
                rows,
                descriptor.size_bytes,
                started.elapsed(),
            );
            if state.options.keep > 0
                && let Err(e) = state.options.store.prune(state.options.keep, None).await
            {
                tracing::warn!(error = %crate::ErrorChain(&e), "pruning snapshots failed");
            }
        }
        Err(e) => inner
            .observer
            .on_snapshot_failed(&id, &crate::ErrorChain(&e).to_string()),
    }
    result
}

async fn export_and_save(
    inner: &Arc<Inner>,
    state: &SnapshotState,
    id: &str,
    now: Duration,
    only: Option<&[TableIdentifier]>,
    user_meta: BTreeMap<String, Value>,
) -> Result<SnapshotDescriptor, EngineError> {
    let wanted = |table: &TableIdentifier| only.is_none_or(|tables| tables.contains(table));
    // Only the sources with a table to export take part.
    let sources: Vec<&SourceEntry> = inner
        .sources
        .iter()
        .filter(|s| s.tables.iter().any(wanted))
        .collect();
    // Admin locks in index order keep reloads and resets out; pause what runs.
    let mut admin = Vec::with_capacity(sources.len());
    for source in &sources {
        admin.push(source.admin.lock().await);
    }
    let mut paused = Vec::new();
    let mut failure = None;
    for source in &sources {
        if source.user_paused.load(AtomicOrdering::SeqCst) {
            continue;
        }
        match source.source.pause().await {
            Ok(()) => paused.push(source),
            Err(e) => {
                failure = Some(EngineError::Source {
                    operation: "pause",
                    source_id: source.id.clone(),
                    source: e,
                });
                break;
            }
        }
    }
    let exported = match failure {
        Some(e) => Err(e),
        None => export(inner, only).await,
    };
    for source in paused {
        if let Err(e) = source.source.resume().await {
            tracing::error!(source = %source.id, error = %crate::ErrorChain(&e), "resume after snapshot failed");
        }
    }
    drop(admin);
    let (tables, source_positions) = exported?;
    let mut meta = state.options.user_meta.clone();
    meta.extend(user_meta);
    let metadata = SnapshotMetadata {
        snapshot_id: id.to_string(),
        created_at_micros: i64::try_from(now.as_micros()).unwrap_or(i64::MAX),
        source_positions,
        tables: tables.iter().map(|(info, _)| info.clone()).collect(),
        format: String::new(),
        user_meta: meta,
    };
    state
        .options
        .store
        .save(&metadata, &tables)
        .await
        .map_err(store_error)
}

type Exported = (TableEntries, BTreeMap<String, String>);

async fn export(inner: &Inner, only: Option<&[TableIdentifier]>) -> Result<Exported, EngineError> {
    let mut tables = Vec::new();
    let mut positions = BTreeMap::new();
    for source in &inner.sources {
        let mut any = false;
        for &p in &source.pipelines {
            let p = &inner.pipelines[p];
            if only.is_some_and(|only| !only.contains(&p.table)) {
                continue;
            }
            if !matches!(p.state(), PipelineState::Streaming | PipelineState::Paused) {
                continue;
            }
            let entries = {
                let _apply = p.apply_lock.lock().await;
                let exported = match p.target.snapshots() {
                    Some(snapshots) => snapshots.export_snapshot().await,
                    None => Err(unsupported(p)),
                };
                exported.map_err(|e| {
                    EngineError::Snapshot(format!(
                        "pipeline {} cannot export: {}",
                        p.id,
                        crate::ErrorChain(&e)
                    ))
                })?
            };
            let columns = inner
                .schemas
                .read()
                .get(&p.table)
                .cloned()
                .unwrap_or_default();
            let info = TableSnapshotInfo {
                table: p.table.clone(),
                row_count: entries.len() as u64,
                columns,
                target_type: p.target.type_name().to_string(),
                indexes: Vec::new(),
            };
            tables.push((info, entries));
            any = true;
        }
        if any && let Some(position) = &source.ack.lock().await.last_acked {
            positions.insert(
                source.id.clone(),
                source.source.position_to_string(position),
            );
        }
    }
    Ok((tables, positions))
}

/// Takes a snapshot every `interval` until cancelled (failures are reported through the
/// observer by [`create`]).
pub(crate) async fn schedule(inner: Arc<Inner>, interval: Duration, cancel: CancellationToken) {
    let Some(state) = inner.snapshots.as_ref() else {
        return;
    };
    loop {
        *state.next_scheduled.lock() = Some(SystemTime::now() + interval);
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
        let meta = BTreeMap::from([("trigger".to_string(), Value::text("scheduled"))]);
        if let Err(e) = create(&inner, None, meta).await {
            tracing::warn!(error = %crate::ErrorChain(&e), "scheduled snapshot failed");
        }
    }
    *state.next_scheduled.lock() = None;
}

/// The error of a target without the snapshot capability.
fn unsupported(p: &PipelineEntry) -> crate::target::TargetError {
    crate::target::TargetError::new(format!(
        "{} targets do not support snapshots",
        p.target.type_name()
    ))
}
