//! One consumer per pipeline: takes batches of items from the pipeline's buffer, runs
//! filters, transforms and TTL, and hands the target the resulting [`Change`]s in one
//! [`SyncTarget::apply`](crate::SyncTarget::apply) call per batch; retries a failing
//! change, then dead-letters it or applies the pipeline's error policy; confirms the
//! position the target made durable.
//!
//! A batch is cut short (applied before going on) where the next step needs the
//! target up to date: before a schema change, an unreadable change, a pause, and an
//! update whose unchanged values are completed from the row the target holds.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Instant;

use crate::change::{ChangeAction, ChangeEvent};
use crate::dead_letter::DeadLetterEntry;
use crate::position::Position;
use crate::row::Row;
use crate::status::{ErrorPolicy, PipelineState, SchemaChangeAction};
use crate::target::{ApplyError, Change, ChangeKind};
use crate::time;
use crate::value::Value;

use super::buffer::{ChangeBuffer, Item};
use super::runtime::spawn_reload;
use super::{Inner, PipelineEntry, Transition, ack};

/// The most items a consumer takes from its buffer at once.
pub(super) const MAX_BATCH: usize = 1024;

/// The changes gathered for the next [`SyncTarget::apply`](crate::SyncTarget::apply)
/// call, with where each came from (for the observer and the dead letter store).
#[derive(Default)]
struct Pending {
    changes: Vec<Change>,
    origins: Vec<Origin>,
}

/// The source event of a pending change: an item of the popped batch, or the event as
/// completed with the target's values. Its rows may have been moved into the change
/// (see [`take_change`]): read the rows from the change.
enum Origin {
    Item(usize),
    Completed(Box<ChangeEvent>),
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    fn clear(&mut self) {
        self.changes.clear();
        self.origins.clear();
    }

    /// The change `n` as a source event, for the dead letter store: what the target
    /// failed to apply (after the pipeline's filters and transforms, so that a replay,
    /// which goes straight to the target, applies the same change).
    fn dead_letter_event(&self, items: &[Item], n: usize) -> ChangeEvent {
        let change = &self.changes[n];
        let mut event = self.event(items, n).clone();
        event.action = change.action();
        (event.new_values, event.old_values) = match &change.kind {
            ChangeKind::Insert { row } => (Some(row.clone()), None),
            ChangeKind::Update { row, identity } => (Some(row.clone()), identity.clone()),
            ChangeKind::Delete { identity } => (None, Some(identity.clone())),
            ChangeKind::Truncate => (None, None),
        };
        event
    }

    fn event<'a>(&'a self, items: &'a [Item], n: usize) -> &'a ChangeEvent {
        match &self.origins[n] {
            Origin::Completed(event) => event,
            Origin::Item(at) => match &items[*at] {
                Item::Change(event) | Item::Failed { event, .. } => event,
                Item::Schema { .. } => unreachable!("only changes are pending"),
            },
        }
    }
}

/// What a change becomes for the target. A pipeline without filters, transforms or
/// TTL takes the event's rows as they are, moved out of the event (no reference-count
/// traffic on the rows per change); otherwise [`prepare`] decides.
fn take_change(p: &PipelineEntry, event: &mut ChangeEvent) -> Option<ChangeKind> {
    if !p.chain.is_empty() || p.options.ttl.is_some() {
        return prepare(p, event);
    }
    match event.action {
        ChangeAction::Insert => Some(ChangeKind::Insert {
            row: event.new_values.take()?,
        }),
        ChangeAction::Update => Some(ChangeKind::Update {
            row: event.new_values.take()?,
            identity: event.old_values.take(),
        }),
        ChangeAction::Delete => Some(ChangeKind::Delete {
            identity: event.old_values.take()?,
        }),
        ChangeAction::Truncate => Some(ChangeKind::Truncate),
    }
}

/// What a change becomes after the pipeline's filters, transforms and TTL: `None`
/// when it does not concern the pipeline's rows.
fn prepare(p: &PipelineEntry, event: &ChangeEvent) -> Option<ChangeKind> {
    let table = &event.table;
    let owned = |row: Cow<'_, Row>| row.into_owned();
    match event.action {
        ChangeAction::Insert => {
            let row = event
                .new_values
                .as_ref()
                .and_then(|row| p.chain.apply_borrowed(table, row))?;
            (!is_expired(p, &row)).then(|| ChangeKind::Insert { row: owned(row) })
        }
        ChangeAction::Update => {
            let new = event.new_values.as_ref()?;
            match p.chain.apply_borrowed(table, new) {
                // An update to an expired time removes the row (by its old identity
                // when known, else by the new row's key).
                Some(row) if is_expired(p, &row) => Some(ChangeKind::Delete {
                    identity: event.old_values.as_ref().unwrap_or(new).clone(),
                }),
                Some(row) => Some(ChangeKind::Update {
                    row: owned(row),
                    identity: event.old_values.clone(),
                }),
                // The row left the pipeline's set: remove it unless the old row was
                // (known to be) outside the set too.
                None => match &event.old_values {
                    Some(old) if !p.chain.includes_identity(table, old) => None,
                    Some(old) => Some(ChangeKind::Delete {
                        identity: old.clone(),
                    }),
                    None => Some(ChangeKind::Delete {
                        identity: new.clone(),
                    }),
                },
            }
        }
        ChangeAction::Delete => match event.old_values.as_ref() {
            Some(identity) if p.chain.includes_identity(table, identity) => {
                Some(ChangeKind::Delete {
                    identity: identity.clone(),
                })
            }
            _ => None,
        },
        ChangeAction::Truncate => Some(ChangeKind::Truncate),
    }
}

/// Whether `event`'s new row carries [`Value::UnchangedToast`] markers.
fn has_unchanged_values(event: &ChangeEvent) -> bool {
    event.new_values.as_ref().is_some_and(|row| {
        row.values()
            .iter()
            .any(|v| matches!(v, Value::UnchangedToast))
    })
}

/// Whether `position` is at or before the pipeline's last baseline. Positions only
/// grow, so the first change past the floor clears it and later changes skip the
/// comparison.
fn is_below_floor(
    inner: &Inner,
    p: &PipelineEntry,
    position: &Position,
    pending: &mut bool,
) -> bool {
    let mut floor = p.baseline_floor.lock();
    let Some(at) = floor.as_ref() else {
        *pending = false;
        return false;
    };
    let below = inner.sources[p.source_idx]
        .source
        .compare_positions(position, at)
        .is_le();
    if !below {
        *floor = None;
        *pending = false;
    }
    below
}

/// An update whose new row carries [`Value::UnchangedToast`] markers (values the
/// source did not resend) completed from the row the target holds; without one, the
/// marked columns are left out of the row, so the target never sees a marker or a
/// made-up null. For events that [`has_unchanged_values`]; `None` without a new row.
fn complete_unchanged_values(p: &PipelineEntry, event: &ChangeEvent) -> Option<ChangeEvent> {
    let new = event.new_values.as_ref()?;
    let identity = event.old_values.as_ref().unwrap_or(new);
    let current = p.target.rows().and_then(|rows| rows.get(identity));
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

/// The outcome of handing the target what is pending.
enum Flushed {
    /// Every pending change is applied or dead-lettered.
    Done,
    /// A change failed for good and the error policy put the pipeline in ERROR.
    Failed,
}

/// Applies the pending changes in one call (more only when one fails): a failing change
/// is retried with backoff from where the target stopped, then dead-lettered (the rest
/// of the batch goes on) or the pipeline fails.
async fn flush(
    inner: &Inner,
    p: &PipelineEntry,
    buffer: &ChangeBuffer,
    items: &[Item],
    pending: &mut Pending,
) -> Flushed {
    if pending.is_empty() {
        return Flushed::Done;
    }
    let total = pending.changes.len();
    let mut start = 0;
    let mut attempt = 0;
    let mut backoff = p.options.retry_backoff;
    let mut outcome = Flushed::Done;
    while start < total {
        let began = Instant::now();
        let result = p.target.apply(&p.table, &pending.changes[start..]).await;
        let (applied, error) = match result {
            Ok(()) => (total - start, None),
            Err(ApplyError { applied, error }) => (applied.min(total - start - 1), Some(error)),
        };
        account(inner, p, items, pending, start..start + applied, began);
        start += applied;
        let Some(error) = error else {
            break;
        };
        if applied > 0 {
            attempt = 0;
            backoff = p.options.retry_backoff;
        }
        let event = pending.event(items, start);
        let message = if attempt == 0 {
            crate::ErrorChain(&error).to_string()
        } else {
            let error = crate::ErrorChain(&error);
            format!("retry {attempt}/{}: {error}", p.options.max_retries)
        };
        inner
            .observer
            .on_change_error(&p.id, &p.table, event.action, &message);
        tracing::warn!(pipeline = %p.id, action = %event.action, error = %message, "change failed");
        if attempt < p.options.max_retries {
            attempt += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(p.options.retry_backoff_max);
            continue;
        }
        let event = pending.dead_letter_event(items, start);
        let reason = crate::ErrorChain(&error).to_string();
        if dead_letter_or_fail(inner, p, &event, &reason).await {
            start += 1;
            attempt = 0;
            backoff = p.options.retry_backoff;
        } else {
            outcome = Flushed::Failed;
            break;
        }
    }
    pending.origins.clear();
    buffer.recycle_changes(&mut pending.changes);
    outcome
}

/// Counts the applied changes `range` of `pending`: the expected row count, and one
/// observer event per change with its share of the call's time.
fn account(
    inner: &Inner,
    p: &PipelineEntry,
    items: &[Item],
    pending: &Pending,
    range: std::ops::Range<usize>,
    began: Instant,
) {
    if range.is_empty() {
        return;
    }
    let share = began.elapsed() / u32::try_from(range.len()).unwrap_or(u32::MAX);
    for n in range {
        match pending.changes[n].kind {
            ChangeKind::Insert { .. } => {
                p.expected_rows.fetch_add(1, AtomicOrdering::Relaxed);
            }
            ChangeKind::Delete { .. } => {
                p.expected_rows.fetch_sub(1, AtomicOrdering::Relaxed);
            }
            ChangeKind::Truncate => p.expected_rows.store(0, AtomicOrdering::Relaxed),
            ChangeKind::Update { .. } => {}
        }
        let action = pending.event(items, n).action;
        inner
            .observer
            .on_change_applied(&p.id, &p.table, action, share);
    }
}

/// A change that could not be applied for good: parked in the dead letter store when
/// there is one (the pipeline goes on: `true`), else the pipeline's error policy
/// applies (`false`).
async fn dead_letter_or_fail(
    inner: &Inner,
    p: &PipelineEntry,
    event: &ChangeEvent,
    error: &str,
) -> bool {
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
                return true;
            }
            Err(e) => {
                tracing::error!(pipeline = %p.id, error = %crate::ErrorChain(&e), "dead letter write failed")
            }
        }
    }
    fail_pipeline(inner, p, error).await;
    false
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
pub(super) async fn consume_guarded(
    inner: Arc<Inner>,
    pipeline_idx: usize,
    buffer: Arc<ChangeBuffer>,
) {
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

/// One pipeline's consumer: applies its buffer to its target until the buffer closes.
async fn consume(inner: Arc<Inner>, pipeline_idx: usize, buffer: Arc<ChangeBuffer>) {
    let p = &inner.pipelines[pipeline_idx];
    let mut state_rx = p.state.subscribe();
    let mut items = Vec::with_capacity(MAX_BATCH);
    let mut pending = Pending::default();
    while buffer.pop_batch(&mut items, MAX_BATCH).await {
        inner
            .observer
            .on_buffer_depth_changed(&p.id, buffer.len(), buffer.capacity());
        // The position of the last item handled: once everything pending is applied,
        // everything up to it is done.
        let mut done: Option<Position> = None;
        let mut failed = false;
        let mut guard = p.apply_lock.lock().await;
        // Whether a baseline floor is pending: read under the apply lock (a baseline
        // sets it holding that lock), so most batches take no floor lock per change.
        let mut floor_pending = p.baseline_floor.lock().is_some();
        let mut at = 0;
        while at < items.len() {
            match p.state() {
                PipelineState::Streaming => {}
                PipelineState::Error | PipelineState::Stopped => break,
                // Paused or reloading: hold the change until the state moves on; on
                // shutdown (buffer closed) a paused pipeline drains what it holds.
                PipelineState::Paused if buffer.is_closed() => {}
                PipelineState::Paused | PipelineState::Baselining | PipelineState::Initializing => {
                    if let Flushed::Failed = flush(&inner, p, &buffer, &items, &mut pending).await {
                        failed = true;
                        break;
                    }
                    drop(guard);
                    state_rx.borrow_and_update();
                    tokio::select! {
                        _ = state_rx.changed() => {}
                        () = buffer.closed() => {}
                    }
                    guard = p.apply_lock.lock().await;
                    floor_pending = p.baseline_floor.lock().is_some();
                    continue;
                }
            }
            match &mut items[at] {
                Item::Change(event) | Item::Failed { event, .. }
                    if floor_pending
                        && is_below_floor(&inner, p, &event.position, &mut floor_pending) => {}
                Item::Failed { .. } => {
                    if let Flushed::Failed = flush(&inner, p, &buffer, &items, &mut pending).await {
                        failed = true;
                        break;
                    }
                    let Item::Failed { event, error } = &items[at] else {
                        unreachable!("matched above")
                    };
                    inner.observer.on_change_received(&p.id, event);
                    inner
                        .observer
                        .on_change_error(&p.id, &p.table, event.action, error);
                    if !dead_letter_or_fail(&inner, p, event, error).await {
                        failed = true;
                        break;
                    }
                    done = Some(event.position.clone());
                }
                Item::Change(event) => {
                    inner.observer.on_change_received(&p.id, event);
                    let mut completed = None;
                    if has_unchanged_values(event) {
                        // The values come from the row the target holds: apply what
                        // is pending first.
                        if let Flushed::Failed =
                            flush(&inner, p, &buffer, &items, &mut pending).await
                        {
                            failed = true;
                            break;
                        }
                        let Item::Change(event) = &items[at] else {
                            unreachable!("matched above")
                        };
                        completed = complete_unchanged_values(p, event);
                    }
                    let Item::Change(event) = &mut items[at] else {
                        unreachable!("matched above")
                    };
                    let position = event.position.clone();
                    let source_event = completed.as_mut().unwrap_or(event);
                    if let Some(kind) = take_change(p, source_event) {
                        pending.changes.push(Change {
                            kind,
                            position: position.clone(),
                            xid: source_event.xid,
                            commit_timestamp: source_event.commit_timestamp,
                        });
                        pending.origins.push(match completed {
                            Some(event) => Origin::Completed(Box::new(event)),
                            None => Origin::Item(at),
                        });
                    }
                    done = Some(position);
                }
                Item::Schema { .. } => {
                    if let Flushed::Failed = flush(&inner, p, &buffer, &items, &mut pending).await {
                        failed = true;
                        break;
                    }
                    let Item::Schema {
                        old_columns,
                        new_columns,
                    } = &items[at]
                    else {
                        unreachable!("matched above")
                    };
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
        if !failed && let Flushed::Failed = flush(&inner, p, &buffer, &items, &mut pending).await {
            failed = true;
        }
        pending.clear();
        drop(guard);
        buffer.recycle(&mut items);
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
            && !failed
            && !p.state().is_terminal()
            && let Some(durable) = p.target.durable_position(&position)
        {
            ack::confirm(&inner, p.source_idx, p.local_idx, durable).await;
        }
    }
}
