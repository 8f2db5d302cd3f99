//! Baselines: the source's consistent copy of its tables delivered to the pipelines in
//! batches under their apply locks, then the post-baseline row-count check.

use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Instant;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::position::Position;
use crate::row::Row;
use crate::source::{BaselineSink, SourceError};
use crate::status::{PipelineState, ValidationAction};
use crate::table::TableIdentifier;
use crate::time;

use super::runtime::{spawn_reload, truncate};
use super::{Inner, PipelineEntry, Transition, ack};

/// Runs a baseline of `tables` into their live pipelines (truncating them first when
/// `truncate`), holding each pipeline's apply lock throughout. Returns the position to
/// stream from, or `None` when the baseline failed (pipelines in ERROR) or was
/// cancelled.
pub(super) async fn baseline(
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
            inner.observer.on_source_disconnected(
                &source.id,
                &format!("baseline failed: {}", crate::ErrorChain(&e)),
            );
            tracing::error!(source = %source.id, error = %crate::ErrorChain(&e), "baseline failed");
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
        let received = source.received.get();
        if truncate && let Err(e) = self::truncate(p, received.as_ref()).await {
            tracing::error!(pipeline = %p.id, error = %crate::ErrorChain(&e), "truncate before re-baseline failed");
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
        if let Err(e) = p
            .target
            .on_baseline_complete(&p.table, Some(&position))
            .await
        {
            tracing::error!(pipeline = %p.id, error = %crate::ErrorChain(&e), "baseline completion failed");
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
    let Some(held) = p.target.rows().map(|rows| rows.count()) else {
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
                p.target.on_baseline(table, &rows).await
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
                p.target.on_baseline(table, &kept).await
            };
            if let Err(e) = result {
                tracing::error!(pipeline = %p.id, error = %crate::ErrorChain(&e), "baseline row failed");
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
