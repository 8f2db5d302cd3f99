//! [`FanoutTargetBuilder`]: the configuration, the observer and the pipeline id a
//! target is built with, and the target's `server_id`.
//!
//! The target is built inside an `Arc` that it holds a weak reference to (`me`), so
//! that work it spawns (a snapshot build, the snapshot scheduler) and the guards of
//! its streams can hold it. The `server_id` is new for every target built (process id,
//! clock, counter): clients resume by sequence only against the id they saw, since
//! sequences restart with each target.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{SystemTime, UNIX_EPOCH};

use laredo_core::{EngineObserver, Listeners};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use super::FanoutTarget;
use super::clients::Registry;
use super::state::State;
use crate::config::FanoutConfig;

/// Builds a [`FanoutTarget`].
#[derive(Default)]
pub struct FanoutTargetBuilder {
    config: FanoutConfig,
    observer: Option<Arc<dyn EngineObserver>>,
    pipeline_id: Option<String>,
}

impl std::fmt::Debug for FanoutTargetBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutTargetBuilder")
            .field("config", &self.config)
            .field("pipeline_id", &self.pipeline_id)
            .finish_non_exhaustive()
    }
}

impl FanoutTargetBuilder {
    /// The configuration (default [`FanoutConfig::default`]).
    #[must_use]
    pub fn config(mut self, config: FanoutConfig) -> Self {
        self.config = config;
        self
    }

    /// Reports fan-out events (clients, snapshots, pruning) to `observer`, typically
    /// the engine's own.
    #[must_use]
    pub fn observer(mut self, observer: Arc<dyn EngineObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The pipeline id named in observer events (default: the table, `schema.table`).
    #[must_use]
    pub fn pipeline_id(mut self, id: impl Into<String>) -> Self {
        self.pipeline_id = Some(id.into());
        self
    }

    /// The target.
    pub fn build(self) -> Arc<FanoutTarget> {
        Arc::new_cyclic(|me| FanoutTarget {
            server_id: new_server_id(),
            config: self.config,
            observer: self.observer,
            pipeline_id: Mutex::new(self.pipeline_id.clone()),
            fixed_pipeline_id: self.pipeline_id.is_some(),
            state: RwLock::new(State::default()),
            head: watch::Sender::new(0),
            lag_tick: watch::Sender::new(0),
            drain: watch::Sender::new(None),
            clients: Mutex::new(Registry::default()),
            listeners: Listeners::new(),
            scheduler: Mutex::new(None),
            snapshots_taken: AtomicU64::new(0),
            #[cfg(test)]
            build_gate: Mutex::new(None),
            me: me.clone(),
        })
    }
}

fn new_server_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, AtomicOrdering::Relaxed);
    format!("{:x}-{nanos:x}-{n}", std::process::id())
}
