//! Row-count validation: after a baseline and periodically (drift), the target's count
//! against the engine's expectation and the source's count.

use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::{Duration, Instant};

use crate::status::{PipelineState, ValidationAction};

use super::buffer::ChangeBuffer;
use super::runtime::spawn_reload;
use super::{Inner, PipelineEntry, Transition};

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
pub(super) async fn validate_counts(
    inner: Arc<Inner>,
    pipeline_idx: usize,
    buffer: Arc<ChangeBuffer>,
) {
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
        let held = p.target.rows()?.count();
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
            p.target.rows()?.count()
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
