//! Checks before the engine starts, beyond the configuration's own validation; how
//! many run depends on `--validate`:
//!
//! | Mode | Configuration | Safety ([`safety`]) | Sources ([`reach_sources`]) |
//! |---|---|---|---|
//! | `strict` (default) | errors | errors | connects; errors |
//! | `structural` | errors | errors | not checked |
//! | `none` | errors | warnings | not checked |
//!
//! The configuration checks (shape, references, what this build implements) cannot be
//! skipped: without them there is nothing to build.

use std::time::Duration;

use clap::ValueEnum;
use laredo_config::{LaredoConfig, SlotMode, SourceConfig, StoreKind, TargetKind};
use laredo_core::TableIdentifier;

/// How long [`reach_sources`] waits for one source to answer.
const REACH_TIMEOUT: Duration = Duration::from_secs(30);

/// `--validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum ValidateMode {
    /// Configuration and safety checks, then connect to every source and check every
    /// table exists and is readable.
    #[default]
    Strict,
    /// Configuration and safety checks; connects to nothing.
    Structural,
    /// Configuration checks; safety problems are logged as warnings.
    None,
}

/// Configurations that defeat their own purpose, one message each (starting with its
/// key path).
///
/// A stateful slot is kept so that a restart can resume. In-memory targets start empty
/// in a new process, so the engine never resumes into them: it restores a snapshot or
/// runs a baseline. With neither a snapshot store nor `always_baseline`, the slot only
/// holds WAL back while laredo is down, and every start is a full baseline anyway.
pub(crate) fn safety(config: &LaredoConfig) -> Vec<String> {
    let snapshot = &config.snapshot;
    let has_store = snapshot.enabled
        && snapshot.store == Some(StoreKind::Local)
        && snapshot.store_config.path.is_some();
    let mut problems = Vec::new();
    for (id, source) in &config.sources {
        let SourceConfig::Postgres(pg) = source else {
            continue;
        };
        if pg.slot_mode != SlotMode::Stateful || pg.always_baseline || has_store {
            continue;
        }
        let in_memory = config
            .tables
            .iter()
            .enumerate()
            .filter(|(_, table)| table.source == *id)
            .flat_map(|(t, table)| {
                table
                    .targets
                    .iter()
                    .enumerate()
                    .map(move |(g, target)| (t, g, target))
            })
            .find(|(_, _, target)| !matches!(target.kind, TargetKind::HttpSync(_)));
        if let Some((t, g, target)) = in_memory {
            problems.push(format!(
                "sources.{id}.slot_mode: a stateful slot is kept to resume after a restart, \
                 but tables[{t}].targets[{g}] ({}) keeps its rows in memory and no snapshot store is configured, \
                 so every start must run a full baseline anyway while the slot holds WAL back in between; \
                 configure snapshots \
                 (snapshot {{ enabled = true, store = local, store_config.path = ..., on_shutdown = true }}), \
                 set sources.{id}.always_baseline = true to accept that, or use slot_mode = ephemeral",
                target.kind.type_name()
            ));
        }
    }
    problems
}

/// Advice that does not stop anything, one message each.
pub(crate) fn advice(config: &LaredoConfig) -> Vec<String> {
    let snapshot = &config.snapshot;
    let mut advice = Vec::new();
    if snapshot.enabled && !snapshot.on_shutdown && snapshot.schedule.is_none() {
        advice.push(
            "snapshot: enabled, but neither snapshot.on_shutdown nor snapshot.schedule is set; \
             snapshots are taken only on request (laredo snapshot create)"
                .to_string(),
        );
    }
    advice
}

/// Connects to every source and checks its tables exist and are readable: one message
/// per problem, keyed like the configuration (`sources.<id>.connection: ...`,
/// `tables[N]: ...`). Empty when all is well.
pub(crate) async fn reach_sources(config: &LaredoConfig) -> Vec<String> {
    let mut problems = Vec::new();
    for (id, source) in &config.sources {
        let SourceConfig::Postgres(pg) = source else {
            continue; // refused earlier by `build::unsupported`
        };
        let tables: Vec<(usize, TableIdentifier)> = config
            .tables
            .iter()
            .enumerate()
            .filter(|(_, table)| table.source == *id)
            .map(|(t, table)| (t, TableIdentifier::new(&table.schema, &table.table)))
            .collect();
        let source = match crate::build::pg_source(id, pg) {
            Ok(source) => source,
            Err(error) => {
                problems.push(error);
                continue;
            }
        };
        let ids: Vec<TableIdentifier> = tables.iter().map(|(_, table)| table.clone()).collect();
        let found = match tokio::time::timeout(REACH_TIMEOUT, source.preflight(&ids)).await {
            Ok(found) => found,
            Err(_) => {
                problems.push(format!(
                    "sources.{id}.connection: no answer within {REACH_TIMEOUT:?}"
                ));
                continue;
            }
        };
        for problem in found {
            let at = problem
                .table
                .as_ref()
                .and_then(|table| tables.iter().find(|(_, t)| t == table));
            problems.push(match at {
                Some((t, table)) => format!("tables[{t}]: {table}: {}", problem.message),
                None => format!("sources.{id}.connection: {}", problem.message),
            });
        }
    }
    problems
}
