//! What the PostgreSQL benches share: argument parsing, figure printing, engine set-up.

#![allow(dead_code, reason = "each bench uses part of it")]

use std::sync::Arc;
use std::time::Duration;

use laredo_core::{Engine, PipelineOptions, table};
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

/// An engine streaming `public.t` into an IndexedTarget keyed by `id`.
pub(crate) fn engine(source: Arc<PgSource>) -> (Engine, Arc<IndexedTarget>) {
    engine_observed(source, Arc::new(laredo_core::NullObserver))
}

/// [`engine`] with an observer.
pub(crate) fn engine_observed(
    source: Arc<PgSource>,
    observer: Arc<dyn laredo_core::EngineObserver>,
) -> (Engine, Arc<IndexedTarget>) {
    let target = IndexedTarget::builder().lookup_fields(["id"]).build();
    let engine = Engine::builder()
        .observer(observer)
        .source("pg", source)
        .pipeline(
            "pg",
            table("public", "t"),
            target.clone(),
            PipelineOptions::default(),
        )
        .build()
        .expect("engine");
    (engine, target)
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
