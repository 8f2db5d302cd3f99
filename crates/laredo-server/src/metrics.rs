//! Prometheus metrics: an [`EngineObserver`] that counts events, and a renderer of the
//! text exposition format that adds gauges read live from the engine.
//!
//! A small hand-written registry instead of `metrics` + `metrics-exporter-prometheus`:
//! the server needs a couple of dozen series, and the exporter would bring a second
//! HTTP stack and a global recorder.
//!
//! **Labels:** `pipeline` (the pipeline id), `source` (the source id), `table`
//! (`schema.table`), `action` (`insert`, `update`, `delete`, `truncate`) and `result`
//! (`passed`, `failed`): the house convention, not PROM-02's `pipeline_id`/`source_id`.
//!
//! Series (see [`render`]): pipeline state, row count, buffer depth and capacity,
//! changes applied by action, change errors, dead letters, rows expired, baselines
//! completed and rows of the last baseline, validation runs; source lag (bytes,
//! seconds), connected, re-baselines and the age of the last acknowledgement;
//! snapshots created, failed and restored; fan-out connected clients, journal entries
//! and journal age. Histograms (apply, baseline and snapshot durations) are not kept.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use laredo_core::{
    ChangeAction, DeadLetterEntry, Engine, EngineObserver, Position, TableIdentifier,
};
use parking_lot::{Mutex, RwLock};

const PIPELINE_STATE: &str = "laredo_pipeline_state";
const PIPELINE_ROW_COUNT: &str = "laredo_pipeline_row_count";
const PIPELINE_BUFFER_DEPTH: &str = "laredo_pipeline_buffer_depth";
const PIPELINE_BUFFER_CAPACITY: &str = "laredo_pipeline_buffer_capacity";
const CHANGES_APPLIED: &str = "laredo_pipeline_changes_applied_total";
const CHANGE_ERRORS: &str = "laredo_pipeline_errors_total";
const DEAD_LETTERS: &str = "laredo_pipeline_dead_letters_total";
const ROWS_EXPIRED: &str = "laredo_pipeline_rows_expired_total";
const BASELINES: &str = "laredo_pipeline_baselines_total";
const BASELINE_ROWS: &str = "laredo_baseline_rows";
const VALIDATION_RUNS: &str = "laredo_validation_runs_total";
const SOURCE_LAG_BYTES: &str = "laredo_source_lag_bytes";
const SOURCE_LAG_SECONDS: &str = "laredo_source_lag_seconds";
const SOURCE_CONNECTED: &str = "laredo_source_connected";
const SOURCE_REBASELINES: &str = "laredo_source_rebaseline_total";
const SOURCE_ACK_AGE: &str = "laredo_source_ack_age_seconds";
const SNAPSHOTS_CREATED: &str = "laredo_snapshots_created_total";
const SNAPSHOTS_FAILED: &str = "laredo_snapshots_failed_total";
const SNAPSHOTS_RESTORED: &str = "laredo_snapshots_restored_total";
const FANOUT_CLIENTS: &str = "laredo_fanout_connected_clients";
const FANOUT_JOURNAL_ENTRIES: &str = "laredo_fanout_journal_entries";
const FANOUT_JOURNAL_AGE: &str = "laredo_fanout_journal_oldest_age_seconds";

const ACTIONS: [ChangeAction; 4] = [
    ChangeAction::Insert,
    ChangeAction::Update,
    ChangeAction::Delete,
    ChangeAction::Truncate,
];

fn action_idx(action: ChangeAction) -> usize {
    match action {
        ChangeAction::Insert => 0,
        ChangeAction::Update => 1,
        ChangeAction::Delete => 2,
        _ => 3,
    }
}

/// Counters of one pipeline; atomics, so the per-change path takes only a read lock.
#[derive(Default)]
struct PipelineCounters {
    table: Mutex<String>,
    applied: [AtomicU64; 4],
    errors: AtomicU64,
    dead_letters: AtomicU64,
    rows_expired: AtomicU64,
    baselines: AtomicU64,
    baseline_rows: AtomicU64,
    validations_passed: AtomicU64,
    validations_failed: AtomicU64,
}

#[derive(Default)]
struct SourceCounters {
    connected: AtomicBool,
    rebaselines: AtomicU64,
    last_ack: Mutex<Option<Instant>>,
}

/// The metrics observer; register it with the engine and [`render`] it per scrape.
#[derive(Default)]
pub(crate) struct Metrics {
    pipelines: RwLock<HashMap<String, Arc<PipelineCounters>>>,
    sources: RwLock<HashMap<String, Arc<SourceCounters>>>,
    snapshots_created: AtomicU64,
    snapshots_failed: AtomicU64,
    snapshots_restored: AtomicU64,
}

impl Metrics {
    /// An empty registry.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn pipeline(&self, id: &str) -> Arc<PipelineCounters> {
        if let Some(counters) = self.pipelines.read().get(id) {
            return Arc::clone(counters);
        }
        Arc::clone(self.pipelines.write().entry(id.to_owned()).or_default())
    }

    fn source(&self, id: &str) -> Arc<SourceCounters> {
        if let Some(counters) = self.sources.read().get(id) {
            return Arc::clone(counters);
        }
        Arc::clone(self.sources.write().entry(id.to_owned()).or_default())
    }
}

impl EngineObserver for Metrics {
    fn on_source_connected(&self, source_id: &str, _source_type: &str) {
        self.source(source_id)
            .connected
            .store(true, Ordering::Relaxed);
    }

    fn on_source_disconnected(&self, source_id: &str, _reason: &str) {
        self.source(source_id)
            .connected
            .store(false, Ordering::Relaxed);
    }

    fn on_baseline_completed(
        &self,
        pipeline_id: &str,
        table: &TableIdentifier,
        total_rows: u64,
        _duration: Duration,
    ) {
        let p = self.pipeline(pipeline_id);
        *p.table.lock() = table.to_string();
        p.baselines.fetch_add(1, Ordering::Relaxed);
        p.baseline_rows.store(total_rows, Ordering::Relaxed);
    }

    fn on_rebaseline_triggered(&self, source_id: &str) {
        self.source(source_id)
            .rebaselines
            .fetch_add(1, Ordering::Relaxed);
    }

    fn on_change_applied(
        &self,
        pipeline_id: &str,
        _table: &TableIdentifier,
        action: ChangeAction,
        _duration: Duration,
    ) {
        self.pipeline(pipeline_id).applied[action_idx(action)].fetch_add(1, Ordering::Relaxed);
    }

    fn on_change_error(
        &self,
        pipeline_id: &str,
        _table: &TableIdentifier,
        _action: ChangeAction,
        _error: &str,
    ) {
        self.pipeline(pipeline_id)
            .errors
            .fetch_add(1, Ordering::Relaxed);
    }

    fn on_ack_advanced(&self, source_id: &str, _position: &Position) {
        *self.source(source_id).last_ack.lock() = Some(Instant::now());
    }

    fn on_snapshot_completed(
        &self,
        _snapshot_id: &str,
        _tables: usize,
        _rows: u64,
        _size_bytes: u64,
        _duration: Duration,
    ) {
        self.snapshots_created.fetch_add(1, Ordering::Relaxed);
    }

    fn on_snapshot_failed(&self, _snapshot_id: &str, _error: &str) {
        self.snapshots_failed.fetch_add(1, Ordering::Relaxed);
    }

    fn on_snapshot_restore_completed(&self, _snapshot_id: &str, _duration: Duration) {
        self.snapshots_restored.fetch_add(1, Ordering::Relaxed);
    }

    fn on_dead_letter_written(&self, pipeline_id: &str, _entry: &DeadLetterEntry) {
        self.pipeline(pipeline_id)
            .dead_letters
            .fetch_add(1, Ordering::Relaxed);
    }

    fn on_row_expired(&self, pipeline_id: &str, _table: &TableIdentifier, _key: &str) {
        self.pipeline(pipeline_id)
            .rows_expired
            .fetch_add(1, Ordering::Relaxed);
    }

    fn on_validation_result(
        &self,
        pipeline_id: &str,
        _table: &TableIdentifier,
        _source_count: u64,
        _target_count: u64,
        matched: bool,
    ) {
        let p = self.pipeline(pipeline_id);
        let counter = if matched {
            &p.validations_passed
        } else {
            &p.validations_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads one counter of a pipeline.
type ReadCounter = fn(&PipelineCounters) -> u64;

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Self { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (idx, (key, val)) in labels.iter().enumerate() {
                if idx > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text: the observer's counters plus gauges read from `engine`.
pub(crate) fn render(metrics: &Metrics, engine: &Engine) -> String {
    let mut out = String::new();
    let pipelines = engine.pipelines();
    let counters: Vec<(String, String, Arc<PipelineCounters>)> = pipelines
        .iter()
        .map(|p| (p.id.clone(), p.table.to_string(), metrics.pipeline(&p.id)))
        .collect();

    let mut f = Family::new(
        &mut out,
        PIPELINE_STATE,
        "gauge",
        "Pipeline state: 0 INITIALIZING, 1 BASELINING, 2 STREAMING, 3 PAUSED, 4 ERROR, 5 STOPPED.",
    );
    for p in &pipelines {
        let table = p.table.to_string();
        f.sample(
            PIPELINE_STATE,
            &[
                ("pipeline", &p.id),
                ("source", &p.source_id),
                ("table", &table),
            ],
            p.state.as_number(),
        );
    }
    let mut f = Family::new(
        &mut out,
        PIPELINE_ROW_COUNT,
        "gauge",
        "Rows the pipeline's target holds.",
    );
    for p in &pipelines {
        let table = p.table.to_string();
        f.sample(
            PIPELINE_ROW_COUNT,
            &[("pipeline", &p.id), ("table", &table)],
            p.row_count,
        );
    }
    let mut f = Family::new(
        &mut out,
        PIPELINE_BUFFER_DEPTH,
        "gauge",
        "Changes waiting in the pipeline's buffer.",
    );
    for p in &pipelines {
        f.sample(
            PIPELINE_BUFFER_DEPTH,
            &[("pipeline", &p.id)],
            p.buffer_depth,
        );
    }
    let mut f = Family::new(
        &mut out,
        PIPELINE_BUFFER_CAPACITY,
        "gauge",
        "Capacity of the pipeline's buffer.",
    );
    for p in &pipelines {
        f.sample(
            PIPELINE_BUFFER_CAPACITY,
            &[("pipeline", &p.id)],
            p.buffer_capacity,
        );
    }
    let mut f = Family::new(
        &mut out,
        CHANGES_APPLIED,
        "counter",
        "Changes applied to the target, by action.",
    );
    for (id, table, c) in &counters {
        for action in ACTIONS {
            let name = action.as_str().to_ascii_lowercase();
            let value = c.applied[action_idx(action)].load(Ordering::Relaxed);
            f.sample(
                CHANGES_APPLIED,
                &[("pipeline", id), ("table", table), ("action", &name)],
                value,
            );
        }
    }
    let per_pipeline: [(&str, &str, ReadCounter); 4] = [
        (
            CHANGE_ERRORS,
            "Failed change applications (each retry counts).",
            |c| c.errors.load(Ordering::Relaxed),
        ),
        (
            DEAD_LETTERS,
            "Changes parked in the dead letter store.",
            |c| c.dead_letters.load(Ordering::Relaxed),
        ),
        (ROWS_EXPIRED, "Rows removed by TTL.", |c| {
            c.rows_expired.load(Ordering::Relaxed)
        }),
        (
            BASELINES,
            "Baselines completed since the process started.",
            |c| c.baselines.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, read) in per_pipeline {
        let mut f = Family::new(&mut out, name, "counter", help);
        for (id, table, c) in &counters {
            f.sample(name, &[("pipeline", id), ("table", table)], read(c));
        }
    }
    let mut f = Family::new(
        &mut out,
        BASELINE_ROWS,
        "gauge",
        "Rows loaded by the pipeline's last baseline.",
    );
    for (id, _, c) in &counters {
        f.sample(
            BASELINE_ROWS,
            &[("pipeline", id)],
            c.baseline_rows.load(Ordering::Relaxed),
        );
    }
    let mut f = Family::new(
        &mut out,
        VALIDATION_RUNS,
        "counter",
        "Row-count validations, by result.",
    );
    for (id, _, c) in &counters {
        let passed = c.validations_passed.load(Ordering::Relaxed);
        let failed = c.validations_failed.load(Ordering::Relaxed);
        f.sample(
            VALIDATION_RUNS,
            &[("pipeline", id), ("result", "passed")],
            passed,
        );
        f.sample(
            VALIDATION_RUNS,
            &[("pipeline", id), ("result", "failed")],
            failed,
        );
    }

    render_sources(&mut out, metrics, engine);
    render_snapshots(&mut out, metrics);
    render_fanout(&mut out, engine);
    out
}

fn render_sources(out: &mut String, metrics: &Metrics, engine: &Engine) {
    let sources: Vec<_> = engine
        .source_ids()
        .into_iter()
        .filter_map(|id| Some((metrics.source(&id), engine.source_info(&id)?, id)))
        .collect();
    let mut f = Family::new(
        out,
        SOURCE_LAG_BYTES,
        "gauge",
        "Bytes of the source's stream not yet consumed.",
    );
    for (_, info, id) in &sources {
        f.sample(SOURCE_LAG_BYTES, &[("source", id)], info.lag.lag_bytes);
    }
    let mut f = Family::new(
        out,
        SOURCE_LAG_SECONDS,
        "gauge",
        "Age of the oldest unconsumed change, when known.",
    );
    for (_, info, id) in &sources {
        if let Some(lag) = info.lag.lag_time {
            f.sample(SOURCE_LAG_SECONDS, &[("source", id)], lag.as_secs_f64());
        }
    }
    let mut f = Family::new(
        out,
        SOURCE_CONNECTED,
        "gauge",
        "1 while the source is connected.",
    );
    for (c, _, id) in &sources {
        f.sample(
            SOURCE_CONNECTED,
            &[("source", id)],
            u8::from(c.connected.load(Ordering::Relaxed)),
        );
    }
    let mut f = Family::new(
        out,
        SOURCE_REBASELINES,
        "counter",
        "Re-baselines the source's stream asked for.",
    );
    for (c, _, id) in &sources {
        f.sample(
            SOURCE_REBASELINES,
            &[("source", id)],
            c.rebaselines.load(Ordering::Relaxed),
        );
    }
    let mut f = Family::new(
        out,
        SOURCE_ACK_AGE,
        "gauge",
        "Seconds since the source's acknowledged position last advanced.",
    );
    for (c, _, id) in &sources {
        if let Some(at) = *c.last_ack.lock() {
            f.sample(
                SOURCE_ACK_AGE,
                &[("source", id)],
                at.elapsed().as_secs_f64(),
            );
        }
    }
}

fn render_snapshots(out: &mut String, metrics: &Metrics) {
    for (name, help, counter) in [
        (
            SNAPSHOTS_CREATED,
            "Engine snapshots created.",
            &metrics.snapshots_created,
        ),
        (
            SNAPSHOTS_FAILED,
            "Engine snapshots that failed.",
            &metrics.snapshots_failed,
        ),
        (
            SNAPSHOTS_RESTORED,
            "Engine snapshots restored.",
            &metrics.snapshots_restored,
        ),
    ] {
        Family::new(out, name, "counter", help).sample(name, &[], counter.load(Ordering::Relaxed));
    }
}

fn render_fanout(out: &mut String, engine: &Engine) {
    let targets = laredo_target_fanout::fanout_targets(engine);
    if targets.is_empty() {
        return;
    }
    let mut f = Family::new(
        out,
        FANOUT_CLIENTS,
        "gauge",
        "Replication clients connected.",
    );
    for (p, target) in &targets {
        f.sample(
            FANOUT_CLIENTS,
            &[("pipeline", &p.id)],
            target.client_count(),
        );
    }
    let mut f = Family::new(
        out,
        FANOUT_JOURNAL_ENTRIES,
        "gauge",
        "Entries in the fan-out journal.",
    );
    for (p, target) in &targets {
        f.sample(
            FANOUT_JOURNAL_ENTRIES,
            &[("pipeline", &p.id)],
            target.journal_len(),
        );
    }
    let mut f = Family::new(
        out,
        FANOUT_JOURNAL_AGE,
        "gauge",
        "Age of the oldest fan-out journal entry.",
    );
    for (p, target) in &targets {
        if let Some(oldest) = target.journal_oldest_at() {
            let age = SystemTime::now().duration_since(oldest).unwrap_or_default();
            f.sample(
                FANOUT_JOURNAL_AGE,
                &[("pipeline", &p.id)],
                age.as_secs_f64(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        Family::new(&mut out, "m", "gauge", "help").sample("m", &[("a", "x\"y\\z\n")], 1);
        assert_eq!(
            out,
            "# HELP m help\n# TYPE m gauge\nm{a=\"x\\\"y\\\\z\\n\"} 1\n"
        );
    }
}
