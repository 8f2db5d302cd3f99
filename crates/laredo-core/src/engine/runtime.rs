//! The source task: init, then restore, resume or baseline, then the stream with its
//! re-baseline loop; reloads and resets of a source.

use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::position::Position;
use crate::source::SourceError;
use crate::status::PipelineState;
use crate::table::TableIdentifier;
use crate::target::Change;

use super::baseline::baseline;
use super::buffer::ChangeBuffer;
use super::consumer::consume_guarded;
use super::dispatch::Dispatcher;
use super::snapshots::{self, Restore};
use super::ttl::scan_ttl;
use super::validation::validate_counts;
use super::{EngineError, Inner, PipelineEntry, SourceEntry, SourceRuntime, Transition, ack};

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
            inner.observer.on_source_disconnected(
                &source.id,
                &format!("init failed: {}", crate::ErrorChain(&e)),
            );
            tracing::error!(source = %source.id, error = %crate::ErrorChain(&e), "source init failed");
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
            tracing::error!(pipeline = %p.id, error = %crate::ErrorChain(&e), "target init failed");
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
            source.received.set(Some(&from));
            let result = source
                .source
                .stream(from.clone(), &mut dispatcher, cancel.clone())
                .await;
            match result {
                Ok(()) | Err(SourceError::Stopped) => break,
                Err(e) if e.is_rebaseline_required() && !cancel.is_cancelled() => {
                    tracing::warn!(source = %source.id, error = %crate::ErrorChain(&e), "re-baseline required");
                    inner.observer.on_rebaseline_triggered(&source.id);
                    match baseline(&inner, source_idx, &source.tables, true, &cancel).await {
                        Some(position) => from = position,
                        None => break,
                    }
                }
                Err(e) => {
                    if !cancel.is_cancelled() {
                        inner.observer.on_source_disconnected(
                            &source.id,
                            &format!("stream error: {}", crate::ErrorChain(&e)),
                        );
                        tracing::error!(source = %source.id, error = %crate::ErrorChain(&e), "source stream failed");
                        let reason =
                            format!("source {} stopped: {}", source.id, crate::ErrorChain(&e));
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
                tracing::warn!(source = %source.id, error = %crate::ErrorChain(&e), "cannot read the acknowledged position, baselining")
            }
        }
    }
    baseline(inner, source_idx, &source.tables, false, cancel).await
}

/// Reloads a table from a background task (a consumer cannot reload inline: the reload
/// needs the consumer's apply lock).
pub(super) fn spawn_reload(inner: &Arc<Inner>, source_idx: usize, table: TableIdentifier) {
    let inner = Arc::clone(inner);
    tokio::spawn(async move {
        if let Err(e) = reload(&inner, source_idx, &table).await {
            tracing::error!(%table, error = %crate::ErrorChain(&e), "reload after schema change failed");
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
    source.received.set(None);
    source.user_paused.store(false, AtomicOrdering::SeqCst);
    for &p in &source.pipelines {
        let p = &inner.pipelines[p];
        // A reset source may number its positions afresh.
        *p.baseline_floor.lock() = None;
        if let Err(e) = truncate(p, None).await {
            tracing::warn!(pipeline = %p.id, error = %crate::ErrorChain(&e), "truncate on reset failed");
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

/// Empties a pipeline's target with a truncate at `position` (the position the next
/// rows are consistent with, when known; else the start of the stream).
pub(super) async fn truncate(
    p: &PipelineEntry,
    position: Option<&Position>,
) -> Result<(), crate::target::TargetError> {
    let change = Change::truncate().at(position.cloned().unwrap_or(Position::from_u64(0)));
    p.target
        .apply(&p.table, std::slice::from_ref(&change))
        .await
        .map_err(|e| e.error)
}
