//! Snapshot replay: feeds a stored engine snapshot's rows into targets through their
//! baseline path, for debugging, demos and scratch targets.
//!
//! For each table of the snapshot that has a target, in snapshot order: `on_init` with
//! the snapshot's columns, the rows in batches through `on_baseline`, then
//! `on_baseline_complete`. Tables without a target are skipped. When a snapshot holds a
//! table twice (two pipelines of it), a target takes the entry exported from its own
//! target type, else the table's first entry. Targets apply baseline rows by key, so a
//! replay into a target that already holds rows overwrites the snapshot's keys and
//! leaves the other rows alone.
//!
//! Pacing: [`ReplaySpeed::Full`] delivers as fast as the targets take rows.
//! [`ReplaySpeed::Realtime`] cannot pace by the rows' original write times — a
//! snapshot records none, only its own creation time — so it throttles delivery to a
//! fixed rate instead ([`SnapshotReplay::realtime_rate`], by default
//! [`DEFAULT_REALTIME_ROWS_PER_SECOND`]).
//!
//! Into a running engine, [`Engine::start_replay`](crate::Engine::start_replay)
//! replays into one named pipeline's target and holds that pipeline's apply lock for
//! the whole replay, so the live changes of the pipeline wait in its buffer and are
//! applied after the snapshot's rows, never interleaved with them.
//!
//! # Cancel safety
//! [`SnapshotReplay::run`] may be dropped at any await: the targets then hold the rows
//! delivered so far. A started replay stops between two batches
//! ([`ReplayHandle::stop`]).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::engine::Inner;
use crate::error::ErrorChain;
use crate::row::Row;
use crate::snapshot::{SnapshotError, SnapshotStore, TableEntries};
use crate::status::ReplaySpeed;
use crate::table::TableIdentifier;
use crate::target::{SyncTarget, TargetError};

/// The default pace of [`ReplaySpeed::Realtime`], in rows per second.
pub const DEFAULT_REALTIME_ROWS_PER_SECOND: u32 = 1000;

/// Rows per `on_baseline` call at full speed.
const FULL_SPEED_BATCH: usize = 1024;

/// A replay error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The store has no snapshot with this id.
    #[error("snapshot {snapshot_id} not found")]
    NotFound {
        /// The id asked for.
        snapshot_id: String,
    },
    /// The store failed to read the snapshot.
    #[error("cannot read snapshot {snapshot_id}")]
    Store {
        /// The snapshot.
        snapshot_id: String,
        /// The cause.
        #[source]
        source: SnapshotError,
    },
    /// A target refused the snapshot's columns or rows.
    #[error("target of {table} ({target_type}) failed")]
    Target {
        /// The table being replayed.
        table: TableIdentifier,
        /// The target's type name.
        target_type: String,
        /// The cause.
        #[source]
        source: TargetError,
    },
    /// The replay was stopped.
    #[error("replay stopped")]
    Cancelled,
}

impl ReplayError {
    fn from_store(snapshot_id: &str, source: SnapshotError) -> Self {
        if source.is_not_found() {
            Self::NotFound {
                snapshot_id: snapshot_id.to_string(),
            }
        } else {
            Self::Store {
                snapshot_id: snapshot_id.to_string(),
                source,
            }
        }
    }
}

/// What a finished replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// The snapshot replayed.
    pub snapshot_id: String,
    /// The tables that had a target, in snapshot order (a table with two targets
    /// appears once).
    pub tables: Vec<TableIdentifier>,
    /// Rows delivered, summed over the targets.
    pub total_rows: u64,
    /// Time from the start of loading to the last `on_baseline_complete`.
    pub duration: Duration,
}

/// The state of a started replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReplayState {
    /// Loading or delivering rows.
    Running,
    /// Every row was delivered.
    Completed,
    /// The store or a target failed (see [`ReplayStatus::error`]).
    Failed,
    /// Stopped by [`ReplayHandle::stop`] or by the engine stopping.
    Stopped,
}

/// Progress of a started replay, from [`ReplayHandle::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayStatus {
    /// The snapshot being replayed.
    pub snapshot_id: String,
    /// The state.
    pub state: ReplayState,
    /// Rows delivered so far, summed over the targets.
    pub rows_replayed: u64,
    /// Time since the start, or from the start to the end once finished.
    pub elapsed: Duration,
    /// The tables that have a target; empty until the snapshot is loaded.
    pub tables: Vec<TableIdentifier>,
    /// The error and its causes, when it failed.
    pub error: Option<String>,
}

/// Replays a stored snapshot into targets: see the module docs.
///
/// ```
/// # use std::sync::Arc;
/// # use laredo_core::{ReplaySpeed, SnapshotReplay, SnapshotStore, SyncTarget, table};
/// # async fn f(store: Arc<dyn SnapshotStore>, users: Arc<dyn SyncTarget>) -> Result<(), laredo_core::ReplayError> {
/// let report = SnapshotReplay::new(store)
///     .target(table("public", "users"), users)
///     .speed(ReplaySpeed::Full)
///     .run("snap-1700000000000000000")
///     .await?;
/// println!("{} rows of {} tables", report.total_rows, report.tables.len());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SnapshotReplay {
    store: Arc<dyn SnapshotStore>,
    targets: Vec<(TableIdentifier, Arc<dyn SyncTarget>)>,
    speed: ReplaySpeed,
    realtime_rate: u32,
    /// Set by the engine: the pipeline whose apply lock the replay holds.
    exclusive: Option<(Arc<Inner>, usize)>,
    /// Set by the engine: the replay stops when the engine does.
    parent_cancel: Option<CancellationToken>,
}

impl fmt::Debug for SnapshotReplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotReplay")
            .field(
                "targets",
                &self
                    .targets
                    .iter()
                    .map(|(table, target)| format!("{table}: {}", target.type_name()))
                    .collect::<Vec<_>>(),
            )
            .field("speed", &self.speed)
            .field("realtime_rate", &self.realtime_rate)
            .finish_non_exhaustive()
    }
}

impl SnapshotReplay {
    /// A replay of snapshots in `store`, with no targets yet, at full speed.
    pub fn new(store: Arc<dyn SnapshotStore>) -> Self {
        Self {
            store,
            targets: Vec::new(),
            speed: ReplaySpeed::Full,
            realtime_rate: DEFAULT_REALTIME_ROWS_PER_SECOND,
            exclusive: None,
            parent_cancel: None,
        }
    }

    /// Sends the rows of `table` to `target` (call again for more tables, or for a
    /// second target of one table).
    #[must_use]
    pub fn target(mut self, table: TableIdentifier, target: Arc<dyn SyncTarget>) -> Self {
        self.targets.push((table, target));
        self
    }

    /// The pacing (default [`ReplaySpeed::Full`]).
    #[must_use]
    pub fn speed(mut self, speed: ReplaySpeed) -> Self {
        self.speed = speed;
        self
    }

    /// Rows per second under [`ReplaySpeed::Realtime`] (default
    /// [`DEFAULT_REALTIME_ROWS_PER_SECOND`]; 0 is taken as 1).
    #[must_use]
    pub fn realtime_rate(mut self, rows_per_second: u32) -> Self {
        self.realtime_rate = rows_per_second.max(1);
        self
    }

    /// Makes the replay hold pipeline `pipeline_idx`'s apply lock throughout and stop
    /// with the engine.
    pub(crate) fn exclusive(mut self, inner: Arc<Inner>, pipeline_idx: usize) -> Self {
        self.parent_cancel = inner.root_cancel.lock().clone();
        self.exclusive = Some((inner, pipeline_idx));
        self
    }

    /// Loads the snapshot and delivers it; returns when every target has it.
    ///
    /// # Errors
    /// [`ReplayError::NotFound`] for an unknown id, [`ReplayError::Store`] when the
    /// store fails, [`ReplayError::Target`] when a target refuses the columns or rows
    /// (the targets keep what they received).
    pub async fn run(&self, snapshot_id: &str) -> Result<ReplayReport, ReplayError> {
        let progress = Progress::new(snapshot_id);
        self.deliver(&progress, &CancellationToken::new()).await
    }

    /// Checks that the snapshot exists, then replays it in the background.
    ///
    /// # Errors
    /// [`ReplayError::NotFound`] for an unknown id, [`ReplayError::Store`] when the
    /// store cannot describe it.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn start(self, snapshot_id: &str) -> Result<ReplayHandle, ReplayError> {
        self.store
            .read_metadata(snapshot_id)
            .await
            .map_err(|e| ReplayError::from_store(snapshot_id, e))?;
        Ok(self.spawn(snapshot_id))
    }

    /// Replays in the background without checking the id first (the caller did).
    pub(crate) fn spawn(self, snapshot_id: &str) -> ReplayHandle {
        let progress = Arc::new(Progress::new(snapshot_id));
        let cancel = self
            .parent_cancel
            .as_ref()
            .map_or_else(CancellationToken::new, CancellationToken::child_token);
        let task = tokio::spawn({
            let progress = Arc::clone(&progress);
            let cancel = cancel.clone();
            async move {
                let result = self.run_exclusive(&progress, &cancel).await;
                match &result {
                    Ok(report) => tracing::info!(
                        snapshot = %report.snapshot_id,
                        rows = report.total_rows,
                        tables = report.tables.len(),
                        "snapshot replay completed"
                    ),
                    Err(e) => tracing::warn!(
                        snapshot = %progress.snapshot_id,
                        error = %ErrorChain(e),
                        "snapshot replay ended early"
                    ),
                }
                progress.finish(&result);
            }
        });
        ReplayHandle {
            progress,
            cancel,
            task: tokio::sync::Mutex::new(Some(task)),
        }
    }

    async fn run_exclusive(
        &self,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<ReplayReport, ReplayError> {
        let Some((inner, pipeline_idx)) = &self.exclusive else {
            return self.deliver(progress, cancel).await;
        };
        let pipeline = &inner.pipelines[*pipeline_idx];
        let _apply = tokio::select! {
            () = cancel.cancelled() => return Err(ReplayError::Cancelled),
            guard = pipeline.apply_lock.lock() => guard,
        };
        tracing::info!(pipeline = %pipeline.id, snapshot = %progress.snapshot_id, "replaying a snapshot into a live pipeline; its changes wait");
        self.deliver(progress, cancel).await
    }

    async fn deliver(
        &self,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<ReplayReport, ReplayError> {
        let snapshot_id = progress.snapshot_id.as_str();
        let loaded = tokio::select! {
            () = cancel.cancelled() => return Err(ReplayError::Cancelled),
            loaded = self.store.load(snapshot_id) => loaded,
        };
        let (_, tables) = loaded.map_err(|e| ReplayError::from_store(snapshot_id, e))?;
        let steps = plan(&tables, &self.targets);
        let mut replayed: Vec<TableIdentifier> = Vec::new();
        for (entry, _) in &steps {
            let table = &tables[*entry].0.table;
            if !replayed.contains(table) {
                replayed.push(table.clone());
            }
        }
        *progress.tables.lock() = replayed.clone();
        let batch = match self.speed {
            ReplaySpeed::Full => FULL_SPEED_BATCH,
            // About ten batches a second, so the pace is smooth.
            ReplaySpeed::Realtime => (self.realtime_rate as usize / 10).max(1),
        };
        let pace_started = tokio::time::Instant::now();
        for (entry, target) in &steps {
            let (info, entries) = &tables[*entry];
            let table = &info.table;
            let failed = |source| ReplayError::Target {
                table: table.clone(),
                target_type: target.type_name().to_string(),
                source,
            };
            target.on_init(table, &info.columns).await.map_err(failed)?;
            for chunk in entries.chunks(batch) {
                if cancel.is_cancelled() {
                    return Err(ReplayError::Cancelled);
                }
                let rows: Vec<Row> = chunk.iter().map(|e| e.row.clone()).collect();
                target.on_baseline(table, &rows).await.map_err(failed)?;
                let delivered = progress
                    .rows
                    .fetch_add(rows.len() as u64, Ordering::Relaxed)
                    + rows.len() as u64;
                tracing::debug!(%table, rows = rows.len(), "replayed a batch");
                if self.speed == ReplaySpeed::Realtime {
                    self.pace(pace_started, delivered, cancel).await?;
                }
            }
            target
                .on_baseline_complete(table, None)
                .await
                .map_err(failed)?;
        }
        Ok(ReplayReport {
            snapshot_id: snapshot_id.to_string(),
            tables: replayed,
            total_rows: progress.rows.load(Ordering::Relaxed),
            duration: progress.started.elapsed(),
        })
    }

    /// Waits until `delivered` rows are due at the realtime rate.
    async fn pace(
        &self,
        started: tokio::time::Instant,
        delivered: u64,
        cancel: &CancellationToken,
    ) -> Result<(), ReplayError> {
        let due =
            started + Duration::from_secs_f64(delivered as f64 / f64::from(self.realtime_rate));
        tokio::select! {
            () = cancel.cancelled() => Err(ReplayError::Cancelled),
            () = tokio::time::sleep_until(due) => Ok(()),
        }
    }
}

/// Which snapshot entry each target takes, in snapshot order: the entry of its table
/// exported from the same target type, else the table's first entry.
fn plan(
    tables: &TableEntries,
    targets: &[(TableIdentifier, Arc<dyn SyncTarget>)],
) -> Vec<(usize, Arc<dyn SyncTarget>)> {
    let mut steps = Vec::new();
    for (table, target) in targets {
        let of_table = || {
            tables
                .iter()
                .enumerate()
                .filter(|(_, (info, _))| info.table == *table)
        };
        let chosen = of_table()
            .find(|(_, (info, _))| info.target_type == target.type_name())
            .or_else(|| of_table().next())
            .map(|(idx, _)| idx);
        match chosen {
            Some(idx) => steps.push((idx, Arc::clone(target))),
            None => tracing::debug!(%table, "the snapshot does not hold this table"),
        }
    }
    // Stable: snapshot order, then the order the targets were given in.
    steps.sort_by_key(|(idx, _)| *idx);
    steps
}

struct Progress {
    snapshot_id: String,
    started: Instant,
    rows: AtomicU64,
    tables: Mutex<Vec<TableIdentifier>>,
    /// Written before `state` leaves RUNNING, so a finished state always has it.
    end: Mutex<Option<(Duration, Option<String>)>>,
    state: watch::Sender<ReplayState>,
}

impl Progress {
    fn new(snapshot_id: &str) -> Self {
        Self {
            snapshot_id: snapshot_id.to_string(),
            started: Instant::now(),
            rows: AtomicU64::new(0),
            tables: Mutex::new(Vec::new()),
            end: Mutex::new(None),
            state: watch::Sender::new(ReplayState::Running),
        }
    }

    fn finish(&self, result: &Result<ReplayReport, ReplayError>) {
        let (state, error) = match result {
            Ok(_) => (ReplayState::Completed, None),
            Err(ReplayError::Cancelled) => (ReplayState::Stopped, None),
            Err(e) => (ReplayState::Failed, Some(ErrorChain(e).to_string())),
        };
        self.end_with(state, error);
    }

    fn end_with(&self, state: ReplayState, error: Option<String>) {
        *self.end.lock() = Some((self.started.elapsed(), error));
        self.state.send_replace(state);
    }

    fn status(&self) -> ReplayStatus {
        let state = *self.state.borrow();
        let (elapsed, error) = match (state, self.end.lock().clone()) {
            (ReplayState::Running, _) | (_, None) => (self.started.elapsed(), None),
            (_, Some(end)) => end,
        };
        ReplayStatus {
            snapshot_id: self.snapshot_id.clone(),
            state,
            rows_replayed: self.rows.load(Ordering::Relaxed),
            elapsed,
            tables: self.tables.lock().clone(),
            error,
        }
    }
}

/// A replay running in the background, from [`SnapshotReplay::start`] or
/// [`Engine::start_replay`](crate::Engine::start_replay).
///
/// Dropping the handle does not stop the replay; [`ReplayHandle::stop`] does.
pub struct ReplayHandle {
    progress: Arc<Progress>,
    cancel: CancellationToken,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for ReplayHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayHandle")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl ReplayHandle {
    /// The snapshot being replayed.
    pub fn snapshot_id(&self) -> &str {
        &self.progress.snapshot_id
    }

    /// The progress so far.
    pub fn status(&self) -> ReplayStatus {
        self.progress.status()
    }

    /// Waits until the replay ends and returns its final status.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future leaves the replay running.
    pub async fn wait(&self) -> ReplayStatus {
        let mut task = self.task.lock().await;
        if let Some(handle) = task.as_mut() {
            if let Err(e) = handle.await {
                // A panicking target: the task never recorded an end.
                self.progress.end_with(
                    ReplayState::Failed,
                    Some(format!("replay task failed: {e}")),
                );
            }
            *task = None;
        }
        self.status()
    }

    /// Stops the replay between two batches and waits for it to end; the targets keep
    /// the rows delivered so far. Returns true when it was running and is now
    /// stopped, false when it had already ended.
    pub async fn stop(&self) -> bool {
        if *self.progress.state.borrow() != ReplayState::Running {
            return false;
        }
        self.cancel.cancel();
        self.wait().await.state == ReplayState::Stopped
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::collections::BTreeMap;

    use async_trait::async_trait;

    use super::*;
    use crate::snapshot::{
        SnapshotDescriptor, SnapshotEntry, SnapshotFilter, SnapshotMetadata, TableSnapshotInfo,
    };
    use crate::table::{ColumnDefinition, table};
    use crate::value::Value;

    /// Snapshots held in memory.
    #[derive(Default)]
    struct MemoryStore {
        snapshots: Mutex<BTreeMap<String, (SnapshotMetadata, TableEntries)>>,
    }

    fn descriptor(metadata: &SnapshotMetadata) -> SnapshotDescriptor {
        SnapshotDescriptor {
            snapshot_id: metadata.snapshot_id.clone(),
            created_at_micros: metadata.created_at_micros,
            format: metadata.format.clone(),
            tables: metadata.tables.clone(),
            size_bytes: 0,
            source_positions: metadata.source_positions.clone(),
        }
    }

    #[async_trait]
    impl SnapshotStore for MemoryStore {
        async fn save(
            &self,
            metadata: &SnapshotMetadata,
            tables: &TableEntries,
        ) -> Result<SnapshotDescriptor, SnapshotError> {
            self.snapshots.lock().insert(
                metadata.snapshot_id.clone(),
                (metadata.clone(), tables.clone()),
            );
            Ok(descriptor(metadata))
        }
        async fn load(
            &self,
            snapshot_id: &str,
        ) -> Result<(SnapshotMetadata, TableEntries), SnapshotError> {
            self.snapshots
                .lock()
                .get(snapshot_id)
                .cloned()
                .ok_or_else(|| SnapshotError::not_found(format_args!("snapshot {snapshot_id}")))
        }
        async fn describe(&self, snapshot_id: &str) -> Result<SnapshotDescriptor, SnapshotError> {
            self.load(snapshot_id).await.map(|(m, _)| descriptor(&m))
        }
        async fn list(
            &self,
            _filter: &SnapshotFilter,
        ) -> Result<Vec<SnapshotDescriptor>, SnapshotError> {
            Ok(self
                .snapshots
                .lock()
                .values()
                .map(|(m, _)| descriptor(m))
                .collect())
        }
        async fn delete(&self, snapshot_id: &str) -> Result<(), SnapshotError> {
            self.snapshots.lock().remove(snapshot_id);
            Ok(())
        }
        async fn prune(
            &self,
            _keep: usize,
            _table: Option<&TableIdentifier>,
        ) -> Result<usize, SnapshotError> {
            Ok(0)
        }
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Call {
        Init(TableIdentifier, Vec<String>),
        Rows(TableIdentifier, Vec<Row>),
        Complete(TableIdentifier),
    }

    /// Records the baseline calls; refuses rows when `refuse` is set.
    struct Recorder {
        calls: Mutex<Vec<Call>>,
        refuse: bool,
    }

    impl Recorder {
        fn new() -> Arc<Self> {
            Self::with(false)
        }

        fn with(refuse: bool) -> Arc<Self> {
            Arc::new(Self {
                calls: Mutex::new(Vec::new()),
                refuse,
            })
        }

        fn calls(&self) -> Vec<Call> {
            self.calls.lock().clone()
        }

        fn rows(&self) -> Vec<Row> {
            self.calls()
                .into_iter()
                .flat_map(|c| match c {
                    Call::Rows(_, rows) => rows,
                    _ => Vec::new(),
                })
                .collect()
        }
    }

    #[async_trait]
    impl SyncTarget for Recorder {
        fn type_name(&self) -> &str {
            "recorder"
        }
        async fn on_init(
            &self,
            table: &TableIdentifier,
            columns: &[ColumnDefinition],
        ) -> Result<(), TargetError> {
            let names = columns.iter().map(|c| c.name.clone()).collect();
            self.calls.lock().push(Call::Init(table.clone(), names));
            Ok(())
        }
        async fn on_baseline(
            &self,
            table: &TableIdentifier,
            rows: &[Row],
        ) -> Result<(), TargetError> {
            if self.refuse {
                return Err(TargetError::new("row refused"));
            }
            self.calls
                .lock()
                .push(Call::Rows(table.clone(), rows.to_vec()));
            Ok(())
        }
        async fn on_baseline_complete(
            &self,
            table: &TableIdentifier,
            _position: Option<&crate::Position>,
        ) -> Result<(), TargetError> {
            self.calls.lock().push(Call::Complete(table.clone()));
            Ok(())
        }
        async fn apply(
            &self,
            _: &TableIdentifier,
            _: &[crate::Change],
        ) -> Result<(), crate::ApplyError> {
            Ok(())
        }
    }

    fn users() -> TableIdentifier {
        table("public", "users")
    }

    fn orders() -> TableIdentifier {
        table("public", "orders")
    }

    fn audit() -> TableIdentifier {
        table("public", "audit")
    }

    fn user(id: i64) -> Row {
        crate::row! {"id" => id, "name" => format!("user-{id}")}
    }

    fn entry(
        t: TableIdentifier,
        target_type: &str,
        rows: Vec<Row>,
    ) -> (TableSnapshotInfo, Vec<SnapshotEntry>) {
        (
            TableSnapshotInfo {
                table: t,
                row_count: rows.len() as u64,
                columns: vec![
                    ColumnDefinition::new("id", "int8"),
                    ColumnDefinition::new("name", "text"),
                ],
                target_type: target_type.to_string(),
                indexes: Vec::new(),
            },
            rows.into_iter().map(|row| SnapshotEntry { row }).collect(),
        )
    }

    async fn store_with(id: &str, tables: TableEntries) -> Arc<MemoryStore> {
        let store = Arc::new(MemoryStore::default());
        let metadata = SnapshotMetadata {
            snapshot_id: id.to_string(),
            created_at_micros: 1,
            source_positions: BTreeMap::new(),
            tables: tables.iter().map(|(info, _)| info.clone()).collect(),
            format: "memory".to_string(),
            user_meta: BTreeMap::from([("k".to_string(), Value::text("v"))]),
        };
        store.save(&metadata, &tables).await.unwrap();
        store
    }

    /// users (3 rows), orders (1 row), audit (1 row).
    async fn three_tables() -> Arc<MemoryStore> {
        store_with(
            "snap-1",
            vec![
                entry(users(), "indexed-memory", (1..=3).map(user).collect()),
                entry(orders(), "indexed-memory", vec![user(10)]),
                entry(audit(), "indexed-memory", vec![user(20)]),
            ],
        )
        .await
    }

    #[tokio::test]
    async fn run_feeds_every_mapped_table_through_the_baseline_path_and_skips_the_rest() {
        let store = three_tables().await;
        let users_target = Recorder::new();
        let orders_target = Recorder::new();
        let report = SnapshotReplay::new(store)
            .target(orders(), orders_target.clone())
            .target(users(), users_target.clone())
            .run("snap-1")
            .await
            .unwrap();
        assert_eq!(report.snapshot_id, "snap-1");
        assert_eq!(
            report.tables,
            [users(), orders()],
            "snapshot order; audit skipped"
        );
        assert_eq!(report.total_rows, 4);
        let columns = vec!["id".to_string(), "name".to_string()];
        assert_eq!(
            users_target.calls(),
            [
                Call::Init(users(), columns.clone()),
                Call::Rows(users(), vec![user(1), user(2), user(3)]),
                Call::Complete(users()),
            ]
        );
        assert_eq!(
            orders_target.calls(),
            [
                Call::Init(orders(), columns),
                Call::Rows(orders(), vec![user(10)]),
                Call::Complete(orders()),
            ]
        );
    }

    #[tokio::test]
    async fn a_target_takes_the_entry_of_its_own_target_type() {
        let store = store_with(
            "snap-2",
            vec![
                entry(users(), "other", vec![user(1)]),
                entry(users(), "recorder", vec![user(2)]),
            ],
        )
        .await;
        let target = Recorder::new();
        let report = SnapshotReplay::new(store)
            .target(users(), target.clone())
            .run("snap-2")
            .await
            .unwrap();
        assert_eq!(report.total_rows, 1);
        assert_eq!(target.rows(), [user(2)]);
    }

    #[tokio::test]
    async fn an_unknown_snapshot_is_an_error_of_run_and_of_start() {
        let store = three_tables().await;
        let replay = SnapshotReplay::new(store).target(users(), Recorder::new());
        let err = replay.run("snap-0").await.unwrap_err();
        assert!(
            matches!(&err, ReplayError::NotFound { snapshot_id } if snapshot_id == "snap-0"),
            "{err:?}"
        );
        let err = replay.start("snap-0").await.unwrap_err();
        assert_eq!(err.to_string(), "snapshot snap-0 not found");
    }

    #[tokio::test]
    async fn a_failing_target_fails_the_replay_with_the_cause() {
        let store = three_tables().await;
        let err = SnapshotReplay::new(store.clone())
            .target(users(), Recorder::with(true))
            .run("snap-1")
            .await
            .unwrap_err();
        assert_eq!(
            ErrorChain(&err).to_string(),
            "target of public.users (recorder) failed: row refused"
        );
        let handle = SnapshotReplay::new(store)
            .target(users(), Recorder::with(true))
            .start("snap-1")
            .await
            .unwrap();
        let status = handle.wait().await;
        assert_eq!(status.state, ReplayState::Failed);
        assert_eq!(
            status.error.as_deref(),
            Some("target of public.users (recorder) failed: row refused")
        );
    }

    #[tokio::test]
    async fn start_runs_in_the_background_until_completed() {
        let store = three_tables().await;
        let target = Recorder::new();
        let handle = SnapshotReplay::new(store)
            .target(users(), target.clone())
            .start("snap-1")
            .await
            .unwrap();
        assert_eq!(handle.snapshot_id(), "snap-1");
        let status = handle.wait().await;
        assert_eq!(status.state, ReplayState::Completed);
        assert_eq!(status.rows_replayed, 3);
        assert_eq!(status.tables, [users()]);
        assert_eq!(status.error, None);
        assert_eq!(target.rows(), [user(1), user(2), user(3)]);
        assert!(!handle.stop().await, "already ended");
    }

    #[tokio::test]
    async fn stop_ends_a_running_replay_between_batches() {
        let rows: Vec<Row> = (1..=5).map(user).collect();
        let store = store_with("snap-3", vec![entry(users(), "recorder", rows)]).await;
        let target = Recorder::new();
        // One row a second: the replay is still running when it is stopped.
        let handle = SnapshotReplay::new(store)
            .target(users(), target.clone())
            .speed(ReplaySpeed::Realtime)
            .realtime_rate(1)
            .start("snap-3")
            .await
            .unwrap();
        laredo_test_support::wait_until("a row replayed", Duration::from_secs(10), || {
            handle.status().rows_replayed >= 1
        })
        .await;
        assert_eq!(handle.status().state, ReplayState::Running);
        assert!(handle.stop().await);
        let status = handle.status();
        assert_eq!(status.state, ReplayState::Stopped);
        assert_eq!(status.error, None);
        assert!(status.rows_replayed < 5, "{status:?}");
        assert!(
            !target.calls().contains(&Call::Complete(users())),
            "a stopped replay does not complete the baseline"
        );
        assert!(!handle.stop().await, "already stopped");
    }

    #[tokio::test]
    async fn realtime_paces_batches_at_the_rate() {
        let rows: Vec<Row> = (1..=4).map(user).collect();
        let store = store_with("snap-4", vec![entry(users(), "recorder", rows)]).await;
        let target = Recorder::new();
        let started = Instant::now();
        let report = SnapshotReplay::new(store)
            .target(users(), target.clone())
            .speed(ReplaySpeed::Realtime)
            .realtime_rate(20)
            .run("snap-4")
            .await
            .unwrap();
        assert_eq!(report.total_rows, 4);
        // 20 rows/s: batches of two rows, the second due 0.2 s after the start (a lower
        // bound, which sleeping guarantees).
        assert!(started.elapsed() >= Duration::from_millis(200));
        let batches: Vec<usize> = target
            .calls()
            .iter()
            .filter_map(|c| match c {
                Call::Rows(_, rows) => Some(rows.len()),
                _ => None,
            })
            .collect();
        assert_eq!(batches, [2, 2]);
    }
}
