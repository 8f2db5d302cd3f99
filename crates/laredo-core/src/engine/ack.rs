//! ACK coordination: a source is acknowledged at the minimum position that every one of
//! its live pipelines has made durable.
//!
//! Each pipeline confirms positions monotonically. Pipelines in ERROR or STOPPED are
//! skipped when their target keeps no state across restarts (an in-memory target is
//! rebuilt by a baseline anyway), so such a failure does not hold the source's WAL for
//! ever. A failed pipeline whose target retains state (`retains_state`) keeps holding
//! the ACK at what it made durable: moving past it would lose its changes for good. The ACK
//! cannot move until every live pipeline has confirmed at least once, and it only ever
//! moves forward. The lock is held across `source.ack()` so two pipelines advancing at
//! once cannot acknowledge out of order.

use std::cmp::Ordering;

use crate::position::Position;

use super::Inner;

#[derive(Debug, Default)]
pub(crate) struct AckState {
    /// Last durable position per pipeline of the source (by local index).
    confirmed: Vec<Option<Position>>,
    pub(crate) last_acked: Option<Position>,
}

impl AckState {
    pub(crate) fn new(pipelines: usize) -> Self {
        Self {
            confirmed: vec![None; pipelines],
            last_acked: None,
        }
    }

    /// Forgets every confirmation (a reset source starts over).
    pub(crate) fn clear(&mut self) {
        self.confirmed.iter_mut().for_each(|c| *c = None);
        self.last_acked = None;
    }
}

/// Records that pipeline `local_idx` of the source is durable up to `position`, then
/// tries to advance the source's ACK.
pub(crate) async fn confirm(
    inner: &Inner,
    source_idx: usize,
    local_idx: usize,
    position: Position,
) {
    let source = &inner.sources[source_idx];
    let mut state = source.ack.lock().await;
    let newer = match &state.confirmed[local_idx] {
        Some(current) => source.source.compare_positions(&position, current) == Ordering::Greater,
        None => true,
    };
    if newer {
        state.confirmed[local_idx] = Some(position);
    }
    advance_locked(inner, source_idx, &mut state).await;
}

/// Seeds every pipeline of the source with `position` (a resume point) and records it
/// as already acknowledged.
pub(crate) async fn seed(inner: &Inner, source_idx: usize, position: &Position) {
    let source = &inner.sources[source_idx];
    let mut state = source.ack.lock().await;
    state
        .confirmed
        .iter_mut()
        .for_each(|c| *c = Some(position.clone()));
    state.last_acked = Some(position.clone());
    *source.acked.lock() = Some(position.clone());
}

/// Tries to advance the source's ACK (after pipelines left the tracker by failing).
pub(crate) async fn advance(inner: &Inner, source_idx: usize) {
    let mut state = inner.sources[source_idx].ack.lock().await;
    advance_locked(inner, source_idx, &mut state).await;
}

async fn advance_locked(inner: &Inner, source_idx: usize, state: &mut AckState) {
    let source = &inner.sources[source_idx];
    let mut minimum: Option<&Position> = None;
    for (local_idx, &pipeline_idx) in source.pipelines.iter().enumerate() {
        let pipeline = &inner.pipelines[pipeline_idx];
        if pipeline.state().is_terminal() && !pipeline.target.retains_state() {
            continue;
        }
        let Some(confirmed) = &state.confirmed[local_idx] else {
            return;
        };
        minimum = match minimum {
            Some(current)
                if source.source.compare_positions(confirmed, current) != Ordering::Less =>
            {
                Some(current)
            }
            _ => Some(confirmed),
        };
    }
    let Some(minimum) = minimum.cloned() else {
        return;
    };
    let advances = state
        .last_acked
        .as_ref()
        .is_none_or(|last| source.source.compare_positions(&minimum, last) == Ordering::Greater);
    if !advances {
        return;
    }
    match source.source.ack(&minimum).await {
        Ok(()) => {
            inner.observer.on_ack_advanced(&source.id, &minimum);
            *source.acked.lock() = Some(minimum.clone());
            state.last_acked = Some(minimum);
        }
        Err(e) => {
            tracing::warn!(source = %source.id, error = %crate::ErrorChain(&e), "source ack failed")
        }
    }
}
