//! The TTL scanner: removes rows whose expiry has passed.

use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;

use crate::position::Position;
use crate::row::Row;
use crate::status::PipelineState;
use crate::table::primary_key_columns;
use crate::time;

use super::Inner;
use super::buffer::ChangeBuffer;
use crate::target::Change;

/// The TTL scanner of one pipeline: every scan interval, while the pipeline streams,
/// removes the rows whose expiry has passed. Runs until the source run ends.
pub(super) async fn scan_ttl(inner: Arc<Inner>, pipeline_idx: usize, buffer: Arc<ChangeBuffer>) {
    let p = &inner.pipelines[pipeline_idx];
    let source = &inner.sources[p.source_idx];
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
        let Some(rows) = p.target.rows().map(|rows| rows.scan()) else {
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
            .rows()
            .map(|rows| rows.scan())
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
            let change = Change::delete(row.clone())
                .at(source.received.get().unwrap_or(Position::from_u64(0)));
            match p
                .target
                .apply(&p.table, std::slice::from_ref(&change))
                .await
            {
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
                    tracing::warn!(pipeline = %p.id, error = %crate::ErrorChain(&e), "expiring a row failed; retried next scan")
                }
            }
        }
    }
}
