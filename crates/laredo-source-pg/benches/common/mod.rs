//! What the PostgreSQL benches share: argument parsing, figure printing, engine set-up.

#![allow(dead_code, reason = "each bench uses part of it")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use laredo_core::{
    ApplyError, Change, ChangeKind, ColumnDefinition, Engine, PipelineOptions, Position, Row,
    RowAccess, SchemaChangeResponse, SnapshotTarget, SyncTarget, TableIdentifier, TargetError,
    TargetStatus, table,
};
use laredo_source_pg::{PgSource, PgSourceConfig, PublicationConfig, SlotMode};
use laredo_target_memory::IndexedTarget;
use laredo_test_support::PgCluster;

/// One result line.
pub(crate) struct Figure {
    pub(crate) name: String,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
}

impl Figure {
    pub(crate) fn new(name: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Self {
            name: name.into(),
            value,
            unit,
        }
    }
}

/// `--name N` from the command line, or `default`.
pub(crate) fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
}

/// Prints the human table, then one JSON line per figure.
pub(crate) fn print(bench: &str, title: &str, figures: &[Figure]) {
    println!();
    println!("{title}");
    println!("{:<28} {:>16} unit", "figure", "value");
    for f in figures {
        println!("{:<28} {:>16.2} {}", f.name, f.value, f.unit);
    }
    println!();
    for f in figures {
        println!(
            "{{\"bench\":\"{bench}\",\"figure\":\"{}\",\"value\":{:.1},\"unit\":\"{}\"}}",
            f.name, f.value, f.unit
        );
    }
}

/// A multi-threaded runtime with the machine's two cores.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A source of `public.t` in `db`.
pub(crate) fn source(pg: &PgCluster, db: &str, mode: SlotMode) -> Arc<PgSource> {
    Arc::new(
        PgSource::new(
            PgSourceConfig::new(pg.connection_string(db))
                .slot_mode(mode)
                .slot_name(format!("bench_{db}"))
                .publication(PublicationConfig::new(format!("bench_{db}")).create_missing(true))
                .status_interval(Duration::from_millis(100)),
        )
        .expect("source"),
    )
}

/// An IndexedTarget keyed by `id`, wrapped in a [`CheckedTarget`].
pub(crate) fn checked_target(retains_state: bool) -> Arc<CheckedTarget> {
    Arc::new(CheckedTarget {
        inner: IndexedTarget::builder().lookup_fields(["id"]).build(),
        retains_state,
        baseline_rows: AtomicU64::new(0),
        streamed: AtomicU64::new(0),
    })
}

/// An engine streaming `public.t` into `target`.
pub(crate) fn engine(source: Arc<PgSource>, target: Arc<CheckedTarget>) -> Engine {
    engine_observed(source, target, Arc::new(laredo_core::NullObserver))
}

/// [`engine`] with an observer.
pub(crate) fn engine_observed(
    source: Arc<PgSource>,
    target: Arc<CheckedTarget>,
    observer: Arc<dyn laredo_core::EngineObserver>,
) -> Engine {
    Engine::builder()
        .observer(observer)
        .source("pg", source)
        .pipeline(
            "pg",
            table("public", "t"),
            target.clone(),
            PipelineOptions::default(),
        )
        .build()
        .expect("engine")
}

/// An IndexedTarget that counts how rows reach it, so that a bench can check it
/// measured what it names: `baseline_rows` (rows loaded by a baseline) against
/// `streamed` (inserts, updates and deletes from the stream). It delegates everything
/// else, so the engine treats it as the IndexedTarget it wraps.
///
/// `retains_state` is the bench's statement that this same object, with its rows, is
/// handed from one engine to the next in one process: then it truly outlives the engine,
/// and a new engine may resume the source's slot into it instead of baselining.
pub(crate) struct CheckedTarget {
    pub(crate) inner: Arc<IndexedTarget>,
    retains_state: bool,
    baseline_rows: AtomicU64,
    streamed: AtomicU64,
}

impl CheckedTarget {
    /// Rows a baseline loaded into the target since the last [`CheckedTarget::reset`].
    pub(crate) fn baseline_rows(&self) -> u64 {
        self.baseline_rows.load(Ordering::SeqCst)
    }

    /// Inserts, updates and deletes applied since the last [`CheckedTarget::reset`].
    pub(crate) fn streamed(&self) -> u64 {
        self.streamed.load(Ordering::SeqCst)
    }

    /// Zeroes both counters.
    pub(crate) fn reset(&self) {
        self.baseline_rows.store(0, Ordering::SeqCst);
        self.streamed.store(0, Ordering::SeqCst);
    }
}

#[async_trait]
impl SyncTarget for CheckedTarget {
    fn type_name(&self) -> &str {
        self.inner.type_name()
    }
    async fn on_init(
        &self,
        table: &TableIdentifier,
        columns: &[ColumnDefinition],
    ) -> Result<(), TargetError> {
        self.inner.on_init(table, columns).await
    }
    async fn on_baseline(&self, table: &TableIdentifier, rows: &[Row]) -> Result<(), TargetError> {
        self.baseline_rows
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        self.inner.on_baseline(table, rows).await
    }
    async fn on_baseline_complete(
        &self,
        table: &TableIdentifier,
        position: Option<&Position>,
    ) -> Result<(), TargetError> {
        self.inner.on_baseline_complete(table, position).await
    }
    /// Counts the inserts, updates and deletes of the batch, then applies it.
    async fn apply(&self, table: &TableIdentifier, batch: &[Change]) -> Result<(), ApplyError> {
        let streamed = batch
            .iter()
            .filter(|c| !matches!(c.kind, ChangeKind::Truncate))
            .count();
        self.streamed.fetch_add(streamed as u64, Ordering::Relaxed);
        self.inner.apply(table, batch).await
    }
    fn retains_state(&self) -> bool {
        self.retains_state
    }
    fn durable_position(&self, applied: &Position) -> Option<Position> {
        self.inner.durable_position(applied)
    }
    async fn on_schema_change(
        &self,
        table: &TableIdentifier,
        old_columns: &[ColumnDefinition],
        new_columns: &[ColumnDefinition],
    ) -> SchemaChangeResponse {
        self.inner
            .on_schema_change(table, old_columns, new_columns)
            .await
    }
    async fn on_close(&self, table: &TableIdentifier) -> Result<(), TargetError> {
        self.inner.on_close(table).await
    }
    fn snapshots(&self) -> Option<&dyn SnapshotTarget> {
        self.inner.snapshots()
    }
    fn rows(&self) -> Option<&dyn RowAccess> {
        self.inner.rows()
    }
    fn status(&self) -> Option<&dyn TargetStatus> {
        self.inner.status()
    }
}

/// Runs `program` with `args`, failing loudly.
pub(crate) fn run(program: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} failed: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
