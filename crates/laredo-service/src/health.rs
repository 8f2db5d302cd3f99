//! The health statuses, kept in step with the engine's readiness.
//!
//! The engine offers a readiness flag (`is_ready`) and a wait for it to become true
//! (`await_ready`), but no notification when it turns false again (a pipeline in ERROR,
//! the engine stopped). So the follower waits on `await_ready` while not ready (reacting
//! at once to readiness) and checks `is_ready` every poll interval while ready.

use std::sync::Arc;
use std::time::Duration;

use laredo_core::Engine;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The overall status's service name in the health protocol.
const OVERALL: &str = "";

/// The health reporter of one server and the services whose status it sets.
#[derive(Debug, Clone)]
pub(crate) struct Health {
    reporter: HealthReporter,
    service_names: Arc<[&'static str]>,
    /// Set once shutdown began; held while statuses are written, so the follower
    /// cannot write SERVING over the shutdown's NOT_SERVING.
    draining: Arc<tokio::sync::Mutex<bool>>,
}

impl Health {
    /// Every status NOT_SERVING to begin with.
    pub(crate) async fn new(reporter: HealthReporter, service_names: Vec<&'static str>) -> Self {
        let health = Self {
            reporter,
            service_names: service_names.into(),
            draining: Arc::new(tokio::sync::Mutex::new(false)),
        };
        health.write(ServingStatus::NotServing).await;
        health
    }

    /// The overall status last, so that whoever sees it change can rely on every
    /// service's status having changed already.
    async fn write(&self, status: ServingStatus) {
        for name in self.service_names.iter() {
            self.reporter.set_service_status(name, status).await;
        }
        self.reporter.set_service_status(OVERALL, status).await;
    }

    /// Follows readiness: SERVING when ready, NOT_SERVING otherwise. Returns false
    /// (writing nothing) once draining.
    async fn set_ready(&self, ready: bool) -> bool {
        let draining = self.draining.lock().await;
        if *draining {
            return false;
        }
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.write(status).await;
        true
    }

    /// NOT_SERVING for good: shutdown has begun.
    pub(crate) async fn drain(&self) {
        let mut draining = self.draining.lock().await;
        *draining = true;
        self.write(ServingStatus::NotServing).await;
    }
}

/// Keeps `health` in step with `engine.is_ready()` until `stop` is cancelled.
///
/// # Cancel safety
/// Runs as a task; `stop` ends it between two updates.
pub(crate) async fn follow_readiness(
    engine: Engine,
    health: Health,
    poll_interval: Duration,
    stop: CancellationToken,
) {
    let mut reported = None;
    loop {
        let ready = engine.is_ready();
        if reported != Some(ready) {
            if !health.set_ready(ready).await {
                return;
            }
            tracing::info!(ready, "health status follows engine readiness");
            reported = Some(ready);
        }
        let wait = async {
            if ready {
                tokio::time::sleep(poll_interval).await;
            } else {
                engine.await_ready(poll_interval).await;
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = wait => {}
        }
    }
}
