//! The engine's tasks: the source task (init → resume or baseline → stream, with the
//! re-baseline loop), its dispatcher, and one consumer per pipeline.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::change::{ChangeAction, ChangeEvent};
use crate::dead_letter::DeadLetterEntry;
use crate::position::Position;
use crate::row::Row;
use crate::source::{BaselineSink, ChangeHandler, SourceError};
use crate::status::{
    BufferPolicy, ErrorPolicy, PipelineState, SchemaChangeAction, SchemaChangeEvent,
    ValidationAction,
};
use crate::table::primary_key_columns;
use crate::table::{ColumnDefinition, TableIdentifier};
use crate::target::TargetError;
use crate::time;
use crate::value::Value;

use super::buffer::{ChangeBuffer, Item, PushError};
use super::snapshots::{self, Restore};
use super::{EngineError, Inner, PipelineEntry, SourceEntry, SourceRuntime, Transition, ack};

/// The most items a consumer takes from its buffer at once.
const MAX_BATCH: usize = 1024;

/// Starts the task of source `source_idx` under `parent`.
pub(crate) fn spawn_source(inner: &Arc<Inner>, source_idx: usize, parent: &CancellationToken) {
    let cancel = parent.child_token();
    let handle = tokio::spawn(run_source(Arc::clone(inner), source_idx, cancel.clone()));
    *inner.sources[source_idx].runtime.lock() = Some(SourceRuntime { cancel, handle });
}

/// Cancels the source's task (when one runs) and waits for it to end.
pub(crate) async fn stop_source_task(source: &SourceEntry) {
    let runtime = source.runtime.lock().take();
    if let Some(runtime) = runtime {
        runtime.cancel.cancel();
        if let Err(e) = runtime.handle.await {
            tracing::error!(source = %source.id, error = %e, "source task panicked");
        }
    }
}

/// One source's whole life: init, startup path, stream / re-baseline loop, drain.
async fn run_source(inner: Arc<Inner>, source_idx: usize, cancel: CancellationToken) {
    let source = &inner.sources[source_idx];
    let pipelines: Vec<&PipelineEntry> = source
        .pipelines
        .iter()
        .map(|&p| &inner.pipelines[p])
        .collect();

    let schemas = tokio::select! {
        () = cancel.cancelled() => return,
        res = source.source.init(&source.tables) => res,
    };
    let schemas = match schemas {
        Ok(schemas) => schemas,
        Err(e) => {
            for p in &pipelines {
                inner.set_state(p, PipelineState::Error, Transition::Bulk);
            }
            inner
                .observer
                .on_source_disconnected(&source.id, &format!("init failed: {e}"));
            tracing::error!(source = %source.id, error = %e, "source init failed");
            return;
        }
    };
    inner
        .observer
        .on_source_connected(&source.id, source.source.source_type());
    inner
        .schemas
        .write()
        .extend(schemas.iter().map(|(t, c)| (t.clone(), c.clone())));

    for problem in source.source.validate_tables(&source.tables).await {
        if problem.warning {
            tracing::warn!(source = %source.id, %problem, "table check");
            inner.observer.on_validation_warning(&source.id, &problem);
            continue;
        }
        tracing::error!(source = %source.id, %problem, "table validation failed");
        for p in &pipelines {
            if problem.table.as_ref().is_none_or(|t| *t == p.table) {
                inner.set_state(p, PipelineState::Error, Transition::Bulk);
            }
        }
    }
    for p in &pipelines {
        if p.state().is_terminal() {
            continue;
        }
        let columns = schemas.get(&p.table).cloned().unwrap_or_default();
        if let Err(e) = p.target.on_init(&p.table, &columns).await {
            tracing::error!(pipeline = %p.id, error = %e, "target init failed");
            inner.set_state(p, PipelineState::Error, Transition::Bulk);
        }
    }

    // One buffer and one consumer per pipeline, whatever its state, for this run.
    let mut consumers = JoinSet::new();
    let mut buffers = Vec::with_capacity(pipelines.len());
    for p in &pipelines {
        let buffer = Arc::new(ChangeBuffer::new(p.options.buffer_size));
        *p.buffer.lock() = Some(Arc::clone(&buffer));
        buffers.push(Arc::clone(&buffer));
        consumers.spawn(consume_guarded(
            Arc::clone(&inner),
            p.idx,
            Arc::clone(&buffer),
        ));
        if p.options.ttl.is_some() {
            consumers.spawn(scan_ttl(Arc::clone(&inner), p.idx, Arc::clone(&buffer)));
        }
        if p.options.post_baseline_validation || p.options.validation_interval.is_some() {
            consumers.spawn(validate_counts(Arc::clone(&inner), p.idx, buffer));
        }
    }

    if let Some(mut from) = startup_position(&inner, source_idx, &cancel).await {
        let mut dispatcher = Dispatcher::new(&inner, source_idx, cancel.clone());
        loop {
            *source.received.lock() = Some(from.clone());
            let result = source
                .source
                .stream(from.clone(), &mut dispatcher, cancel.clone())
                .await;
            match result {
                Ok(()) | Err(SourceError::Stopped) => break,
                Err(e) if e.is_rebaseline_required() && !cancel.is_cancelled() => {
                    tracing::warn!(source = %source.id, error = %e, "re-baseline required");
                    inner.observer.on_rebaseline_triggered(&source.id);
                    match baseline(&inner, source_idx, &source.tables, true, &cancel).await {
                        Some(position) => from = position,
                        None => break,
                    }
                }
                Err(e) => {
                    if !cancel.is_cancelled() {
                        inner
                            .observer
                            .on_source_disconnected(&source.id, &format!("stream error: {e}"));
                        tracing::error!(source = %source.id, error = %e, "source stream failed");
                        let reason = format!("source {} stopped: {e}", source.id);
                        for p in &pipelines {
                            if !p.state().is_terminal() {
                                inner.observer.on_pipeline_failed(&p.id, &reason);
                            }
                            inner.set_state(p, PipelineState::Error, Transition::Bulk);
                        }
                    }
                    break;
                }
            }
        }
    }

    for buffer in &buffers {
        buffer.close();
    }
    while let Some(res) = consumers.join_next().await {
        if let Err(e) = res {
            tracing::error!(source = %source.id, error = %e, "pipeline task panicked");
        }
    }
    for p in &pipelines {
        *p.buffer.lock() = None;
    }
}

/// A pending runtime restore first; then (first run only) the newest snapshot when the
/// source can stream from its position; then resume from the last acknowledged position
/// when the source can; else baseline.
/// `None` when the source cannot stream (baseline failed or cancelled).
async fn startup_position(
    inner: &Arc<Inner>,
    source_idx: usize,
    cancel: &CancellationToken,
) -> Option<Position> {
    let source = &inner.sources[source_idx];
    let first_run = !source.started_once.swap(true, AtomicOrdering::SeqCst);
    let pending = source.pending_restore.lock().take();
    let restored = match pending {
        Some(pending) => {
            let (restored, reason) =
                snapshots::restore_source(inner, source_idx, &pending.metadata, pending.tables)
                    .await;
            let _ = pending.done.send(reason.map_or(Ok(()), Err));
            match restored {
                // A requested restore that did not happen leaves the targets as they
                // were before the request: start them over.
                Restore::Skipped => Restore::Failed,
                other => other,
            }
        }
        // Before resuming: in-memory targets start empty in a new process, and a
        // snapshot the source can still stream from is what fills them.
        None if first_run => snapshots::restore_at_startup(inner, source_idx).await,
        None => Restore::Skipped,
    };
    match restored {
        Restore::Restored(position) => return Some(position),
        // Targets may hold part of a snapshot: the baseline starts them empty.
        Restore::Failed => {
            return baseline(inner, source_idx, &source.tables, true, cancel).await;
        }
        Restore::Skipped => {}
    }
    // Targets that start empty with the process cannot be resumed into: the rows
    // before the acknowledged position would never reach them.
    let empty_targets = first_run
        && source
            .pipelines
            .iter()
            .any(|&p| !inner.pipelines[p].target.retains_state());
    if source.source.supports_resume() {
        match source.source.last_acked_position().await {
            Ok(Some(position)) if empty_targets => {
                tracing::info!(
                    source = %source.id,
                    %position,
                    "targets that start empty with the process and no snapshot restored: baselining instead of resuming"
                );
                // Truncated first: targets that do keep state may hold rows deleted
                // since.
                return baseline(inner, source_idx, &source.tables, true, cancel).await;
            }
            Ok(Some(position)) => {
                tracing::info!(source = %source.id, %position, "resuming from acknowledged position");
                ack::seed(inner, source_idx, &position).await;
                for &p in &source.pipelines {
                    let p = &inner.pipelines[p];
                    inner.transition_from(p, PipelineState::Initializing, PipelineState::Streaming);
                }
                return Some(position);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(source = %source.id, error = %e, "cannot read the acknowledged position, baselining")
            }
        }
    }
    baseline(inner, source_idx, &source.tables, false, cancel).await
}

/// Runs a baseline of `tables` into their live pipelines (truncating them first when
/// `truncate`), holding each pipeline's apply lock throughout. Returns the position to
/// stream from, or `None` when the baseline failed (pipelines in ERROR) or was
/// cancelled.
async fn baseline(
    inner: &Arc<Inner>,
    source_idx: usize,
    tables: &[TableIdentifier],
    truncate: bool,
    cancel: &CancellationToken,
) -> Option<Position> {
    let source = &inner.sources[source_idx];
    let pipelines: Vec<&PipelineEntry> = source
        .pipelines
        .iter()
        .map(|&p| &inner.pipelines[p])
        .filter(|p| tables.contains(&p.table) && !p.state().is_terminal())
        .collect();
    let mut guards = Vec::with_capacity(pipelines.len());
    for p in &pipelines {
        guards.push(p.apply_lock.lock().await);
    }
    let result = run_baseline_locked(inner, source_idx, tables, &pipelines, truncate, cancel).await;
    if let Ok((position, _)) = &result {
        // Buffered changes from before this baseline (a re-baseline after a lost
        // stream, a reload) are in its rows already: applying them again over it could
        // resurrect deleted rows or roll values back.
        for p in &pipelines {
            *p.baseline_floor.lock() = Some(position.clone());
        }
    }
    drop(guards);
    match result {
        Ok((position, mismatched)) => {
            // A row-count mismatch under `re_baseline` reloads the table once; a reload
            // that mismatches again only warns, so a target that never matches cannot
            // loop.
            if !truncate {
                for table in mismatched {
                    spawn_reload(inner, source_idx, table);
                }
            }
            for p in &pipelines {
                if let Some(durable) = p.target.durable_position(&position) {
                    ack::confirm(inner, source_idx, p.local_idx, durable).await;
                }
            }
            Some(position)
        }
        Err(None) => None,
        Err(Some(e)) => {
            for p in &pipelines {
                inner.set_state(p, PipelineState::Error, Transition::Bulk);
            }
            inner
                .observer
                .on_source_disconnected(&source.id, &format!("baseline failed: {e}"));
            tracing::error!(source = %source.id, error = %e, "baseline failed");
            None
        }
    }
}

/// The baseline proper; `Err(None)` means cancelled.
async fn run_baseline_locked(
    inner: &Inner,
    source_idx: usize,
    tables: &[TableIdentifier],
    pipelines: &[&PipelineEntry],
    truncate: bool,
    cancel: &CancellationToken,
) -> Result<(Position, Vec<TableIdentifier>), Option<SourceError>> {
    let source = &inner.sources[source_idx];
    let mut mismatched = Vec::new();
    for p in pipelines {
        inner.set_state(p, PipelineState::Baselining, Transition::Bulk);
        p.expected_rows.store(0, AtomicOrdering::Relaxed);
        if truncate && let Err(e) = p.target.on_truncate(&p.table).await {
            tracing::error!(pipeline = %p.id, error = %e, "truncate before re-baseline failed");
            inner.set_state(p, PipelineState::Error, Transition::Bulk);
            continue;
        }
        inner.observer.on_baseline_started(&p.id, &p.table);
    }
    let mut sink = BaselineDispatch::new(inner, pipelines);
    let started = Instant::now();
    let result = tokio::select! {
        () = cancel.cancelled() => return Err(None),
        res = source.source.baseline(tables, &mut sink) => res,
    };
    let position = result.map_err(Some)?;
    for (slot, p) in pipelines.iter().enumerate() {
        if p.state() != PipelineState::Baselining {
            continue;
        }
        p.target.set_change_position(&position);
        if let Err(e) = p.target.on_baseline_complete(&p.table).await {
            tracing::error!(pipeline = %p.id, error = %e, "baseline completion failed");
            inner.set_state(p, PipelineState::Error, Transition::Bulk);
            continue;
        }
        let rows = sink.rows[slot];
        inner
            .observer
            .on_baseline_completed(&p.id, &p.table, rows, started.elapsed());
        let validation = validate_count(inner, p, rows);
        match validation {
            Validation::Matched | Validation::Passed => {}
            Validation::Failed => continue,
            Validation::ReBaseline => {
                if !mismatched.contains(&p.table) {
                    mismatched.push(p.table.clone());
                }
            }
        }
        inner.set_state(p, PipelineState::Streaming, Transition::Bulk);
        if matches!(validation, Validation::Matched) {
            // The target holds the baseline: now compare with the source's own count.
            p.baselined.notify_one();
        }
    }
    Ok((position, mismatched))
}

enum Validation {
    /// The target holds the rows the baseline delivered.
    Matched,
    /// Not checked, or a mismatch the action tolerates.
    Passed,
    Failed,
    ReBaseline,
}

/// Post-baseline row-count validation for countable targets.
fn validate_count(inner: &Inner, p: &PipelineEntry, expected: u64) -> Validation {
    if !p.options.post_baseline_validation {
        return Validation::Passed;
    }
    let Some(held) = p.target.count() else {
        return Validation::Passed;
    };
    let matched = held == expected;
    inner
        .observer
        .on_validation_result(&p.id, &p.table, expected, held, matched);
    if matched {
        return Validation::Matched;
    }
    match p.options.validation_action {
        ValidationAction::Warn => {
            tracing::warn!(pipeline = %p.id, expected, held, "row count mismatch after baseline");
            Validation::Passed
        }
        ValidationAction::Error => {
            tracing::error!(pipeline = %p.id, expected, held, "row count mismatch after baseline");
            inner.set_state(p, PipelineState::Error, Transition::Bulk);
            Validation::Failed
        }
        ValidationAction::ReBaseline => {
            tracing::warn!(pipeline = %p.id, expected, held, "row count mismatch after baseline; reloading");
            Validation::ReBaseline
        }
    }
}

/// Delivers baseline rows to the pipelines of their table.
struct BaselineDispatch<'a> {
    inner: &'a Inner,
    pipelines: &'a [&'a PipelineEntry],
    rows: Vec<u64>,
}

impl<'a> BaselineDispatch<'a> {
    fn new(inner: &'a Inner, pipelines: &'a [&'a PipelineEntry]) -> Self {
        Self {
            inner,
            pipelines,
            rows: vec![0; pipelines.len()],
        }
    }
}

#[async_trait]
impl BaselineSink for BaselineDispatch<'_> {
    async fn on_rows(
        &mut self,
        table: &TableIdentifier,
        rows: Vec<Row>,
    ) -> Result<(), SourceError> {
        for (slot, p) in self.pipelines.iter().enumerate() {
            if &p.table != table || p.state() != PipelineState::Baselining {
                continue;
            }
            let result = if p.chain.is_empty() && p.options.ttl.is_none() {
                self.rows[slot] += rows.len() as u64;
                p.target.on_baseline_rows(table, &rows).await
            } else {
                let now = time::now_micros();
                let kept: Vec<Row> = rows
                    .iter()
                    .filter_map(|r| p.chain.apply(table, r))
                    .filter(|r| {
                        p.options
                            .ttl
                            .as_ref()
                            .is_none_or(|ttl| !ttl.is_expired(r, now))
                    })
                    .collect();
                self.rows[slot] += kept.len() as u64;
                p.target.on_baseline_rows(table, &kept).await
            };
            if let Err(e) = result {
                tracing::error!(pipeline = %p.id, error = %e, "baseline row failed");
                self.inner
                    .set_state(p, PipelineState::Error, Transition::Bulk);
                continue;
            }
            let loaded = self.rows[slot];
            p.expected_rows.store(
                i64::try_from(loaded).unwrap_or(i64::MAX),
                AtomicOrdering::Relaxed,
            );
            self.inner
                .observer
                .on_baseline_row_loaded(&p.id, table, loaded);
        }
        Ok(())
    }
}

/// A pipeline (by index) and its buffer.
type Route = (usize, Arc<ChangeBuffer>);

/// The [`ChangeHandler`] of a source task: routes each change to the buffers of its
/// table's pipelines under their buffer policies.
struct Dispatcher<'a> {
    inner: &'a Inner,
    source_idx: usize,
    cancel: CancellationToken,
    /// Per table: its pipelines and their buffers.
    routes: Vec<(TableIdentifier, Vec<Route>)>,
    route_index: HashMap<TableIdentifier, usize>,
    all: Vec<(usize, Arc<ChangeBuffer>)>,
    /// The route of the previous change, to skip hashing when changes of one table
    /// follow each other (sources hand out clones of one identifier per table).
    last_route: Option<usize>,
}

impl<'a> Dispatcher<'a> {
    fn new(inner: &'a Inner, source_idx: usize, cancel: CancellationToken) -> Self {
        let source = &inner.sources[source_idx];
        let mut routes: HashMap<TableIdentifier, Vec<(usize, Arc<ChangeBuffer>)>> = HashMap::new();
        let mut all = Vec::new();
        for &p in &source.pipelines {
            let pipeline = &inner.pipelines[p];
            let buffer = pipeline
                .buffer
                .lock()
                .clone()
                .expect("the source task created every buffer");
            routes
                .entry(pipeline.table.clone())
                .or_default()
                .push((p, Arc::clone(&buffer)));
            all.push((p, buffer));
        }
        let routes: Vec<(TableIdentifier, Vec<Route>)> = routes.into_iter().collect();
        let route_index = routes
            .iter()
            .enumerate()
            .map(|(i, (t, _))| (t.clone(), i))
            .collect();
        Self {
            inner,
            source_idx,
            cancel,
            routes,
            route_index,
            all,
            last_route: None,
        }
    }

    /// Whether a pipeline in `state` takes changes: after its baseline it does, also
    /// while paused or reloading (they are held in its buffer).
    fn accepts(state: PipelineState) -> bool {
        matches!(
            state,
            PipelineState::Streaming | PipelineState::Paused | PipelineState::Baselining
        )
    }

    /// Leaves a caught-up mark at `position` on every pipeline not of `table`.
    fn mark_others(&self, table: &TableIdentifier, position: &Position, routed: bool) {
        if self.routes.len() == 1 && routed {
            return;
        }
        for (p, buffer) in &self.all {
            let pipeline = &self.inner.pipelines[*p];
            if &pipeline.table != table && Self::accepts(pipeline.state()) {
                buffer.set_mark(position.clone());
            }
        }
    }

    async fn push_blocking(
        &self,
        pipeline: &PipelineEntry,
        buffer: &ChangeBuffer,
        item: Item,
    ) -> Result<(), SourceError> {
        let depth = buffer
            .push(item, &self.cancel)
            .await
            .map_err(|_| SourceError::Stopped)?;
        self.inner
            .observer
            .on_buffer_depth_changed(&pipeline.id, depth, buffer.capacity());
        Ok(())
    }
}

#[async_trait]
impl ChangeHandler for Dispatcher<'_> {
    async fn on_change(&mut self, event: ChangeEvent) -> Result<(), SourceError> {
        if self.cancel.is_cancelled() {
            return Err(SourceError::Stopped);
        }
        let route = match self.last_route {
            Some(i) if self.routes[i].0.same_allocation(&event.table) => Some(i),
            _ => {
                let found = self.route_index.get(&event.table).copied();
                if found.is_some() {
                    self.last_route = found;
                }
                found
            }
        };
        self.mark_others(&event.table, &event.position, route.is_some());
        *self.inner.sources[self.source_idx].received.lock() = Some(event.position.clone());
        let Some(route) = route else {
            return Ok(());
        };
        let routes = &self.routes[route].1;
        let last = routes.len() - 1;
        let mut event = Some(event);
        for (n, (p, buffer)) in routes.iter().enumerate() {
            let pipeline = &self.inner.pipelines[*p];
            if !Self::accepts(pipeline.state()) {
                continue;
            }
            let item = if n == last {
                Item::Change(event.take().expect("moved only on the last route"))
            } else {
                Item::Change(event.clone().expect("present before the last route"))
            };
            match pipeline.options.buffer_policy {
                BufferPolicy::Block => match buffer.push(item, &self.cancel).await {
                    Ok(depth) => self.inner.observer.on_buffer_depth_changed(
                        &pipeline.id,
                        depth,
                        buffer.capacity(),
                    ),
                    Err(PushError::Cancelled) => return Err(SourceError::Stopped),
                },
                BufferPolicy::DropOldest => {
                    let (depth, dropped) = buffer.push_drop_oldest(item);
                    if dropped {
                        self.inner
                            .observer
                            .on_buffer_policy_triggered(&pipeline.id, BufferPolicy::DropOldest);
                        tracing::warn!(pipeline = %pipeline.id, "buffer full: dropped the oldest change");
                    }
                    self.inner.observer.on_buffer_depth_changed(
                        &pipeline.id,
                        depth,
                        buffer.capacity(),
                    );
                }
                BufferPolicy::Error => match buffer.try_push(item) {
                    Ok(depth) => self.inner.observer.on_buffer_depth_changed(
                        &pipeline.id,
                        depth,
                        buffer.capacity(),
                    ),
                    Err(_) => {
                        self.inner
                            .observer
                            .on_buffer_policy_triggered(&pipeline.id, BufferPolicy::Error);
                        fail_pipeline(self.inner, pipeline, "buffer full").await;
                        if self.cancel.is_cancelled() {
                            return Err(SourceError::Stopped);
                        }
                    }
                },
            }
        }
        Ok(())
    }

    async fn on_change_failed(
        &mut self,
        event: ChangeEvent,
        error: String,
    ) -> Result<(), SourceError> {
        if self.cancel.is_cancelled() {
            return Err(SourceError::Stopped);
        }
        self.mark_others(&event.table, &event.position, true);
        *self.inner.sources[self.source_idx].received.lock() = Some(event.position.clone());
        tracing::warn!(table = %event.table, position = %self.inner.sources[self.source_idx].source.position_to_string(&event.position), error, "the source could not read a change");
        let Some(&route) = self.route_index.get(&event.table) else {
            return Ok(());
        };
        for (p, buffer) in &self.routes[route].1 {
            let pipeline = &self.inner.pipelines[*p];
            if Self::accepts(pipeline.state()) {
                let item = Item::Failed {
                    event: event.clone(),
                    error: error.clone(),
                };
                self.push_blocking(pipeline, buffer, item).await?;
            }
        }
        Ok(())
    }

    async fn on_heartbeat(&mut self, position: Position) -> Result<(), SourceError> {
        if self.cancel.is_cancelled() {
            return Err(SourceError::Stopped);
        }
        *self.inner.sources[self.source_idx].received.lock() = Some(position.clone());
        for (p, buffer) in &self.all {
            if Self::accepts(self.inner.pipelines[*p].state()) {
                buffer.set_mark(position.clone());
            }
        }
        Ok(())
    }

    async fn on_schema_change(
        &mut self,
        table: TableIdentifier,
        old_columns: Vec<ColumnDefinition>,
        new_columns: Vec<ColumnDefinition>,
    ) -> Result<(), SourceError> {
        let source_id = &self.inner.sources[self.source_idx].id;
        self.inner
            .schemas
            .write()
            .insert(table.clone(), new_columns.clone());
        let event = SchemaChangeEvent {
            old_columns,
            new_columns,
        };
        self.inner
            .observer
            .on_schema_change(source_id, &table, &event);
        let Some(&route) = self.route_index.get(&table) else {
            return Ok(());
        };
        for (p, buffer) in &self.routes[route].1 {
            let pipeline = &self.inner.pipelines[*p];
            if Self::accepts(pipeline.state()) {
                let item = Item::Schema {
                    old_columns: event.old_columns.clone(),
                    new_columns: event.new_columns.clone(),
                };
                self.push_blocking(pipeline, buffer, item).await?;
            }
        }
        Ok(())
    }
}

/// What the consumer does with a change after filters and transforms.
enum Op<'a> {
    Skip,
    Insert(Cow<'a, Row>),
    Update(Cow<'a, Row>, Option<&'a Row>),
    Delete(&'a Row),
    Truncate,
}

fn prepare<'a>(p: &PipelineEntry, event: &'a ChangeEvent) -> Op<'a> {
    let table = &event.table;
    match event.action {
        ChangeAction::Insert => match event
            .new_values
            .as_ref()
            .and_then(|row| p.chain.apply_borrowed(table, row))
        {
            Some(row) if is_expired(p, &row) => Op::Skip,
            Some(row) => Op::Insert(row),
            None => Op::Skip,
        },
        ChangeAction::Update => {
            let Some(new) = event.new_values.as_ref() else {
                return Op::Skip;
            };
            match p.chain.apply_borrowed(table, new) {
                // An update to an expired time removes the row (by its old identity
                // when known, else by the new row's key).
                Some(row) if is_expired(p, &row) => {
                    Op::Delete(event.old_values.as_ref().unwrap_or(new))
                }
                Some(row) => Op::Update(row, event.old_values.as_ref()),
                // The row left the pipeline's set: remove it unless the old row was
                // (known to be) outside the set too.
                None => match &event.old_values {
                    Some(old) if !p.chain.includes_identity(table, old) => Op::Skip,
                    Some(old) => Op::Delete(old),
                    None => Op::Delete(new),
                },
            }
        }
        ChangeAction::Delete => match event.old_values.as_ref() {
            Some(identity) if p.chain.includes_identity(table, identity) => Op::Delete(identity),
            _ => Op::Skip,
        },
        ChangeAction::Truncate => Op::Truncate,
    }
}

/// Whether `position` is at or before the pipeline's last baseline. Positions only
/// grow, so the first change past the floor clears it and later changes skip the
/// comparison.
fn is_below_floor(inner: &Inner, p: &PipelineEntry, position: &Position) -> bool {
    let mut floor = p.baseline_floor.lock();
    let Some(at) = floor.as_ref() else {
        return false;
    };
    let below = inner.sources[p.source_idx]
        .source
        .compare_positions(position, at)
        .is_le();
    if !below {
        *floor = None;
    }
    below
}

/// An update whose new row carries [`Value::UnchangedToast`] markers (values the
/// source did not resend) completed from the row the target holds; without one, the
/// marked columns are left out of the row, so the target never sees a marker or a
/// made-up null. `None` when the event needs nothing.
fn complete_unchanged_values(p: &PipelineEntry, event: &ChangeEvent) -> Option<ChangeEvent> {
    let new = event.new_values.as_ref()?;
    if !new
        .values()
        .iter()
        .any(|v| matches!(v, Value::UnchangedToast))
    {
        return None;
    }
    let identity = event.old_values.as_ref().unwrap_or(new);
    let current = p.target.current_row(&event.table, identity);
    let mut values = Vec::with_capacity(new.len());
    let mut missing = Vec::new();
    for (name, value) in new.iter() {
        if matches!(value, Value::UnchangedToast) {
            match current.as_ref().and_then(|row| row.get(name)) {
                Some(previous) if !matches!(previous, Value::UnchangedToast) => {
                    values.push(previous.clone());
                }
                _ => {
                    missing.push(name);
                    values.push(Value::Null);
                }
            }
        } else {
            values.push(value.clone());
        }
    }
    let mut row = new.with_values(values);
    if !missing.is_empty() {
        tracing::debug!(
            pipeline = %p.id,
            columns = ?missing,
            "unchanged values unknown to the target are left out of the update"
        );
        row = row.without(&missing);
    }
    let mut completed = event.clone();
    completed.new_values = Some(row);
    Some(completed)
}

fn is_expired(p: &PipelineEntry, row: &Row) -> bool {
    p.options
        .ttl
        .as_ref()
        .is_some_and(|ttl| ttl.is_expired(row, time::now_micros()))
}

async fn apply_op(p: &PipelineEntry, op: &Op<'_>) -> Result<(), TargetError> {
    let table = &p.table;
    match op {
        Op::Skip => Ok(()),
        Op::Insert(row) => p.target.on_insert(table, row.as_ref()).await,
        Op::Update(row, identity) => p.target.on_update(table, row.as_ref(), *identity).await,
        Op::Delete(identity) => p.target.on_delete(table, identity).await,
        Op::Truncate => p.target.on_truncate(table).await,
    }
}

/// The outcome of handling one change.
enum Handled {
    /// Applied (or skipped by the filters): the position is done.
    Done,
    /// Failed and parked in the dead letter store: the position is done.
    DeadLettered,
    /// Failed; the error policy put the pipeline in ERROR.
    Failed,
}

/// Handles one change. `clock` is when the previous change of the batch finished (or the
/// batch started): the applied change's duration runs from there, one clock read per
/// change.
async fn handle_change(
    inner: &Inner,
    p: &PipelineEntry,
    event: &ChangeEvent,
    clock: &mut Instant,
) -> Handled {
    inner.observer.on_change_received(&p.id, event);
    let completed;
    let event = match complete_unchanged_values(p, event) {
        Some(full) => {
            completed = full;
            &completed
        }
        None => event,
    };
    let op = prepare(p, event);
    if matches!(op, Op::Skip) {
        return Handled::Done;
    }
    if p.cursor_wanted.load(AtomicOrdering::Acquire) {
        *p.applying.lock() = Some(super::AppliedChange {
            position: event.position.clone(),
            xid: event.xid,
        });
    }
    p.target.set_change_position(&event.position);
    let mut backoff = p.options.retry_backoff;
    let mut attempt = 0;
    let error = loop {
        match apply_op(p, &op).await {
            Ok(()) => {
                match &op {
                    Op::Insert(_) => {
                        p.expected_rows.fetch_add(1, AtomicOrdering::Relaxed);
                    }
                    Op::Delete(_) => {
                        p.expected_rows.fetch_sub(1, AtomicOrdering::Relaxed);
                    }
                    Op::Truncate => p.expected_rows.store(0, AtomicOrdering::Relaxed),
                    Op::Update(..) | Op::Skip => {}
                }
                inner
                    .observer
                    .on_change_applied(&p.id, &p.table, event.action, {
                        let now = Instant::now();
                        let took = now - *clock;
                        *clock = now;
                        took
                    });
                return Handled::Done;
            }
            Err(e) => {
                let message = if attempt == 0 {
                    e.to_string()
                } else {
                    format!("retry {attempt}/{}: {e}", p.options.max_retries)
                };
                inner
                    .observer
                    .on_change_error(&p.id, &p.table, event.action, &message);
                tracing::warn!(pipeline = %p.id, action = %event.action, error = %message, "change failed");
                if attempt >= p.options.max_retries {
                    break e;
                }
                attempt += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(p.options.retry_backoff_max);
            }
        }
    };
    dead_letter_or_fail(inner, p, event, &error.to_string()).await
}

/// A change that could not be applied for good: parked in the dead letter store when
/// there is one (the pipeline goes on), else the pipeline's error policy applies.
async fn dead_letter_or_fail(
    inner: &Inner,
    p: &PipelineEntry,
    event: &ChangeEvent,
    error: &str,
) -> Handled {
    if let Some(store) = &inner.dead_letters {
        let source = &inner.sources[p.source_idx];
        let mut entry = DeadLetterEntry::new(
            &p.id,
            event,
            source.source.position_to_string(&event.position),
            error.to_owned(),
        );
        match store.write(entry.clone()).await {
            Ok(id) => {
                entry.id = id;
                inner.observer.on_dead_letter_written(&p.id, &entry);
                return Handled::DeadLettered;
            }
            Err(e) => tracing::error!(pipeline = %p.id, error = %e, "dead letter write failed"),
        }
    }
    fail_pipeline(inner, p, error).await;
    Handled::Failed
}

/// Applies the pipeline's error policy after an unrecoverable failure.
pub(crate) async fn fail_pipeline(inner: &Inner, p: &PipelineEntry, reason: &str) {
    let source = &inner.sources[p.source_idx];
    tracing::error!(pipeline = %p.id, policy = %p.options.error_policy, reason, "pipeline failed");
    inner.observer.on_pipeline_failed(&p.id, reason);
    match p.options.error_policy {
        ErrorPolicy::Isolate => {
            inner.set_state(p, PipelineState::Error, Transition::Bulk);
        }
        ErrorPolicy::StopSource => {
            for &other in &source.pipelines {
                inner.set_state(
                    &inner.pipelines[other],
                    PipelineState::Error,
                    Transition::Bulk,
                );
            }
            if let Some(runtime) = &*source.runtime.lock() {
                runtime.cancel.cancel();
            }
        }
        ErrorPolicy::StopAll => {
            for other in &inner.pipelines {
                inner.set_state(other, PipelineState::Error, Transition::Bulk);
            }
            if let Some(root) = &*inner.root_cancel.lock() {
                root.cancel();
            }
        }
    }
    // The failed pipelines left the ACK tracker; the others may now advance.
    ack::advance(inner, p.source_idx).await;
}

/// Runs a pipeline's consumer in a task of its own and contains its panic: the pipeline
/// fails at once (its error policy applies, the observer hears why, readiness drops)
/// instead of stalling its source until shutdown. The buffer keeps being emptied, so
/// the source never waits on a consumer that is gone; the pipeline's later changes are
/// dropped, and a reload starts it over.
async fn consume_guarded(inner: Arc<Inner>, pipeline_idx: usize, buffer: Arc<ChangeBuffer>) {
    let task = tokio::spawn(consume(
        Arc::clone(&inner),
        pipeline_idx,
        Arc::clone(&buffer),
    ));
    let panic = match task.await {
        Ok(()) => return,
        Err(e) if e.is_panic() => e.into_panic(),
        Err(_) => return,
    };
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    let p = &inner.pipelines[pipeline_idx];
    fail_pipeline(&inner, p, &format!("pipeline task panicked: {message}")).await;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while buffer.pop_batch(&mut batch, MAX_BATCH).await {
        buffer.recycle(&mut batch);
        let _ = buffer.take_mark_if_idle();
    }
}

/// Forgets the change being applied (see `PipelineEntry::applying`).
fn clear_applying(p: &PipelineEntry) {
    if p.cursor_wanted.load(AtomicOrdering::Acquire) {
        *p.applying.lock() = None;
    }
}

/// One pipeline's consumer: applies its buffer to its target until the buffer closes.
async fn consume(inner: Arc<Inner>, pipeline_idx: usize, buffer: Arc<ChangeBuffer>) {
    let p = &inner.pipelines[pipeline_idx];
    let mut state_rx = p.state.subscribe();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while buffer.pop_batch(&mut batch, MAX_BATCH).await {
        inner
            .observer
            .on_buffer_depth_changed(&p.id, buffer.len(), buffer.capacity());
        let mut done: Option<Position> = None;
        let mut guard = p.apply_lock.lock().await;
        let mut clock = Instant::now();
        let mut at = 0;
        while let Some(item) = batch.get(at) {
            match p.state() {
                PipelineState::Streaming => {}
                PipelineState::Error | PipelineState::Stopped => break,
                // Paused or reloading: hold the change until the state moves on; on
                // shutdown (buffer closed) a paused pipeline drains what it holds.
                PipelineState::Paused if buffer.is_closed() => {}
                PipelineState::Paused | PipelineState::Baselining | PipelineState::Initializing => {
                    clear_applying(p);
                    drop(guard);
                    state_rx.borrow_and_update();
                    tokio::select! {
                        _ = state_rx.changed() => {}
                        () = buffer.closed() => {}
                    }
                    guard = p.apply_lock.lock().await;
                    clock = Instant::now();
                    continue;
                }
            }
            match item {
                Item::Change(event) | Item::Failed { event, .. }
                    if is_below_floor(&inner, p, &event.position) => {}
                Item::Failed { event, error } => {
                    inner.observer.on_change_received(&p.id, event);
                    inner
                        .observer
                        .on_change_error(&p.id, &p.table, event.action, error);
                    match dead_letter_or_fail(&inner, p, event, error).await {
                        Handled::Done | Handled::DeadLettered => {
                            done = Some(event.position.clone());
                        }
                        Handled::Failed => break,
                    }
                }
                Item::Change(event) => match handle_change(&inner, p, event, &mut clock).await {
                    Handled::Done | Handled::DeadLettered => done = Some(event.position.clone()),
                    Handled::Failed => break,
                },
                Item::Schema {
                    old_columns,
                    new_columns,
                } => {
                    let response = p
                        .target
                        .on_schema_change(&p.table, old_columns, new_columns)
                        .await;
                    match response.action {
                        SchemaChangeAction::Continue => {}
                        SchemaChangeAction::ReBaseline => {
                            tracing::info!(pipeline = %p.id, reason = ?response.message, "schema change: reloading table");
                            spawn_reload(&inner, p.source_idx, p.table.clone());
                        }
                        SchemaChangeAction::Error => {
                            tracing::error!(pipeline = %p.id, reason = ?response.message, "schema change rejected by target");
                            inner.set_state(p, PipelineState::Error, Transition::Bulk);
                            break;
                        }
                    }
                }
            }
            at += 1;
        }
        clear_applying(p);
        drop(guard);
        buffer.recycle(&mut batch);
        // Everything routed here before a pending caught-up mark is now applied when the
        // queue is empty: the mark is as good as a change of our own at that position.
        if let Some(mark) = buffer.take_mark_if_idle() {
            let source = &inner.sources[p.source_idx].source;
            done = match done {
                Some(applied) if source.compare_positions(&applied, &mark).is_ge() => Some(applied),
                _ => Some(mark),
            };
        }
        if let Some(position) = done
            && !p.state().is_terminal()
            && let Some(durable) = p.target.durable_position(&position)
        {
            ack::confirm(&inner, p.source_idx, p.local_idx, durable).await;
        }
    }
}

/// Reloads a table from a background task (a consumer cannot reload inline: the reload
/// needs the consumer's apply lock).
fn spawn_reload(inner: &Arc<Inner>, source_idx: usize, table: TableIdentifier) {
    let inner = Arc::clone(inner);
    tokio::spawn(async move {
        if let Err(e) = reload(&inner, source_idx, &table).await {
            tracing::error!(%table, error = %e, "reload after schema change failed");
        }
    });
}

/// See [`Engine::reload`](super::Engine::reload).
pub(crate) async fn reload(
    inner: &Arc<Inner>,
    source_idx: usize,
    table: &TableIdentifier,
) -> Result<(), EngineError> {
    let source = &inner.sources[source_idx];
    let active =
        |p: &PipelineEntry| matches!(p.state(), PipelineState::Streaming | PipelineState::Paused);
    let has_active = source
        .by_table
        .get(table)
        .is_some_and(|ps| ps.iter().any(|&p| active(&inner.pipelines[p])));
    if !has_active {
        return Err(EngineError::NoActivePipelines {
            source_id: source.id.clone(),
            table: table.clone(),
        });
    }
    let _admin = source.admin.lock().await;
    let user_paused = source.user_paused.load(AtomicOrdering::SeqCst);
    if !user_paused {
        source
            .source
            .pause()
            .await
            .map_err(|e| EngineError::Source {
                operation: "pause",
                source_id: source.id.clone(),
                source: e,
            })?;
    }
    let cancel = source
        .runtime
        .lock()
        .as_ref()
        .map_or_else(CancellationToken::new, |r| r.cancel.clone());
    let position = baseline(
        inner,
        source_idx,
        std::slice::from_ref(table),
        true,
        &cancel,
    )
    .await;
    if user_paused {
        if let Some(ps) = source.by_table.get(table) {
            for &p in ps {
                inner.transition_from(
                    &inner.pipelines[p],
                    PipelineState::Streaming,
                    PipelineState::Paused,
                );
            }
        }
    } else if let Err(e) = source.source.resume().await {
        return Err(EngineError::Source {
            operation: "resume",
            source_id: source.id.clone(),
            source: e,
        });
    }
    match position {
        Some(_) => Ok(()),
        None => Err(EngineError::ReloadFailed {
            table: table.clone(),
            message: "the baseline failed or was cancelled; see the source's disconnect event"
                .to_string(),
        }),
    }
}

/// See [`Engine::reset_source`](super::Engine::reset_source).
pub(crate) async fn reset_source(
    inner: &Arc<Inner>,
    source_idx: usize,
    drop_publication: bool,
) -> Result<(), EngineError> {
    let source = &inner.sources[source_idx];
    let _admin = source.admin.lock().await;
    stop_source_task(source).await;
    let parent = inner.root_cancel.lock().clone().unwrap_or_default();
    if let Err(e) = source.source.reset(drop_publication).await {
        spawn_source(inner, source_idx, &parent);
        return Err(match e {
            SourceError::Unsupported { .. } => EngineError::ResetUnsupported(source.id.clone()),
            other => EngineError::Source {
                operation: "reset",
                source_id: source.id.clone(),
                source: other,
            },
        });
    }
    source.ack.lock().await.clear();
    *source.acked.lock() = None;
    *source.received.lock() = None;
    source.user_paused.store(false, AtomicOrdering::SeqCst);
    for &p in &source.pipelines {
        let p = &inner.pipelines[p];
        // A reset source may number its positions afresh.
        *p.baseline_floor.lock() = None;
        if let Err(e) = p.target.on_truncate(&p.table).await {
            tracing::warn!(pipeline = %p.id, error = %e, "truncate on reset failed");
        }
        p.expected_rows.store(0, AtomicOrdering::Relaxed);
        inner.set_state(p, PipelineState::Initializing, Transition::Explicit);
    }
    spawn_source(inner, source_idx, &parent);
    Ok(())
}

/// Reports every source's lag every `interval` until cancelled.
pub(crate) async fn poll_lag(inner: Arc<Inner>, interval: Duration, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        for source in &inner.sources {
            let lag = source.source.lag();
            inner
                .observer
                .on_lag_updated(&source.id, lag.lag_bytes, lag.lag_time);
        }
    }
}

/// The TTL scanner of one pipeline: every scan interval, while the pipeline streams,
/// removes the rows whose expiry has passed. Runs until the source run ends.
async fn scan_ttl(inner: Arc<Inner>, pipeline_idx: usize, buffer: Arc<ChangeBuffer>) {
    let p = &inner.pipelines[pipeline_idx];
    let Some(ttl) = p.options.ttl.clone() else {
        return;
    };
    let mut ticker = tokio::time::interval(p.options.ttl_scan_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = buffer.closed() => return,
            _ = ticker.tick() => {}
        }
        if p.state() != PipelineState::Streaming {
            continue;
        }
        let Some(rows) = p.target.scan_rows() else {
            tracing::warn!(pipeline = %p.id, "ttl configured but the target cannot scan its rows; scanner stopped");
            return;
        };
        if !rows.iter().any(|r| ttl.is_expired(r, time::now_micros())) {
            continue;
        }
        // Something expired: scan again under the apply lock, so that a change applied
        // since the first scan (an update extending the expiry) is respected.
        let _guard = p.apply_lock.lock().await;
        let now = time::now_micros();
        let expired: Vec<Row> = p
            .target
            .scan_rows()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| ttl.is_expired(r, now))
            .collect();
        let key_fields: Vec<String> = {
            let schemas = inner.schemas.read();
            let columns = schemas.get(&p.table).map(Vec::as_slice).unwrap_or_default();
            primary_key_columns(columns)
                .into_iter()
                .map(str::to_string)
                .collect()
        };
        for row in expired {
            if p.state() != PipelineState::Streaming {
                break;
            }
            match p.target.on_delete(&p.table, &row).await {
                Ok(()) => {
                    p.expected_rows.fetch_sub(1, AtomicOrdering::Relaxed);
                    let key = if key_fields.is_empty() {
                        row.to_string()
                    } else {
                        row.key_string(&key_fields)
                    };
                    inner.observer.on_row_expired(&p.id, &p.table, &key);
                }
                Err(e) => {
                    tracing::warn!(pipeline = %p.id, error = %e, "expiring a row failed; retried next scan")
                }
            }
        }
    }
}

/// Counts of the source taken before a source-count mismatch is reported: a count
/// races the changes in flight, so a mismatch must persist.
const SOURCE_COUNT_TRIES: u32 = 3;
/// The pause between two source counts of one check (backoff, not synchronisation).
const SOURCE_COUNT_PAUSE: Duration = Duration::from_millis(200);
/// How long a source count waits for the pipeline's buffer to empty.
const SOURCE_COUNT_SETTLE: Duration = Duration::from_secs(5);

/// One pipeline's row-count validation task for a source run: after each baseline
/// (post-baseline validation), and every `validation_interval` while streaming
/// (drift validation, CORE-43), compares the target's count with what it should hold.
/// Ends with the source run.
async fn validate_counts(inner: Arc<Inner>, pipeline_idx: usize, buffer: Arc<ChangeBuffer>) {
    let p = &inner.pipelines[pipeline_idx];
    let mut ticker = p.options.validation_interval.map(|interval| {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    loop {
        let periodic = tokio::select! {
            () = buffer.closed() => return,
            () = p.baselined.notified() => false,
            _ = async {
                match ticker.as_mut() {
                    Some(ticker) => ticker.tick().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        if p.state() != PipelineState::Streaming {
            continue;
        }
        let outcome = if periodic {
            check_drift(&inner, p, &buffer).await
        } else if p.options.post_baseline_validation {
            // The target matched the baseline already; now the source's own count.
            check_source_count(&inner, p, &buffer).await
        } else {
            None
        };
        let Some((source_count, target_count)) = outcome else {
            continue;
        };
        let matched = source_count == target_count;
        inner
            .observer
            .on_validation_result(&p.id, &p.table, source_count, target_count, matched);
        if !matched {
            act_on_mismatch(&inner, p, source_count, target_count, periodic);
        }
    }
}

/// Drift check: the target's count against the engine's expected count (under the
/// apply lock, so no change is half applied), then against the source's count.
/// `None` when nothing can be compared.
async fn check_drift(
    inner: &Arc<Inner>,
    p: &PipelineEntry,
    buffer: &ChangeBuffer,
) -> Option<(u64, u64)> {
    let (expected, held) = {
        let _guard = p.apply_lock.lock().await;
        let held = p.target.count()?;
        let expected = u64::try_from(p.expected_rows.load(AtomicOrdering::Relaxed)).unwrap_or(0);
        (expected, held)
    };
    if expected != held {
        return Some((expected, held));
    }
    check_source_count(inner, p, buffer)
        .await
        .or(Some((expected, held)))
}

/// The source's count of the table against the target's, for a pipeline that keeps
/// every row (no filter, transform or TTL) of a source that can count. Each try waits
/// for the pipeline's buffer to empty first; a mismatch is reported only when
/// [`SOURCE_COUNT_TRIES`] tries all differ. `None` when the comparison does not apply.
async fn check_source_count(
    inner: &Arc<Inner>,
    p: &PipelineEntry,
    buffer: &ChangeBuffer,
) -> Option<(u64, u64)> {
    if !p.chain.is_empty() || p.options.ttl.is_some() {
        return None;
    }
    let source = &inner.sources[p.source_idx].source;
    let mut last = None;
    for attempt in 0..SOURCE_COUNT_TRIES {
        if attempt > 0 {
            tokio::time::sleep(SOURCE_COUNT_PAUSE).await;
        }
        let settle_by = Instant::now() + SOURCE_COUNT_SETTLE;
        while buffer.len() > 0 && Instant::now() < settle_by && !buffer.is_closed() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let source_count = source.count_rows(&p.table).await?;
        let held = {
            let _guard = p.apply_lock.lock().await;
            p.target.count()?
        };
        if source_count == held {
            return Some((source_count, held));
        }
        last = Some((source_count, held));
    }
    last
}

/// Applies the pipeline's validation action to a row-count mismatch.
fn act_on_mismatch(
    inner: &Arc<Inner>,
    p: &PipelineEntry,
    expected: u64,
    held: u64,
    periodic: bool,
) {
    let when = if periodic {
        "drift validation"
    } else {
        "after baseline"
    };
    match p.options.validation_action {
        ValidationAction::Warn => {
            tracing::warn!(pipeline = %p.id, expected, held, when, "row count mismatch");
        }
        ValidationAction::Error => {
            tracing::error!(pipeline = %p.id, expected, held, when, "row count mismatch");
            inner.observer.on_pipeline_failed(
                &p.id,
                &format!("row count mismatch ({when}): expected {expected}, target holds {held}"),
            );
            inner.set_state(p, PipelineState::Error, Transition::Bulk);
        }
        // A baseline just ran: reloading again could loop on a source that keeps
        // differing, so after a baseline the mismatch only warns.
        ValidationAction::ReBaseline if !periodic => {
            tracing::warn!(pipeline = %p.id, expected, held, when, "row count mismatch; not reloading right after a baseline");
        }
        ValidationAction::ReBaseline => {
            tracing::warn!(pipeline = %p.id, expected, held, when, "row count mismatch; reloading");
            spawn_reload(inner, p.source_idx, p.table.clone());
        }
    }
}
