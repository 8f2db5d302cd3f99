//! Health probes and `/metrics` over HTTP/1 (axum).
//!
//! | Path (configurable) | 200 when | Body |
//! |---|---|---|
//! | `health.liveness_path` | no source has every pipeline in ERROR | `{"status":"ok"}` |
//! | `health.readiness_path` | engine ready and not draining | `{"ready":bool,"pipelines":{id:"STATE"}}` |
//! | `health.startup_path` | engine started and every pipeline past INITIALIZING | `{"status":"started"}` |
//! | `observability.metrics.path` | always | Prometheus text |
//!
//! A pipeline in ERROR shows as `"ERROR: <last error>"` when one was reported. The
//! failing answers are 503.
//!
//! Both ports stay open to probes and scrapers (no token) and reveal no row data or
//! secrets. They are served over HTTP/1.1 by hyper with limits: a client must send its
//! request headers within [`HEADER_READ_TIMEOUT`] (also between requests on a kept-alive
//! connection), headers are capped at [`MAX_HEADER_BYTES`], and at most
//! [`MAX_CONNECTIONS`] connections are open per port (more are closed at once).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use laredo_config::LaredoConfig;
use laredo_core::{Engine, PipelineState};
use laredo_service_oam::StatusEvents;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What the probes read.
pub(crate) struct Health {
    pub(crate) engine: Engine,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) events: Arc<StatusEvents>,
    /// Set when shutdown begins: readiness answers 503 from then on.
    pub(crate) draining: AtomicBool,
    /// Set once `Engine::start` returned.
    pub(crate) started: AtomicBool,
}

type Shared = Arc<Health>;

/// The health port's routes: the three probes and the metrics path.
pub(crate) fn health_router(config: &LaredoConfig, health: Shared) -> Router {
    Router::new()
        .route(&config.health.liveness_path, get(live))
        .route(&config.health.readiness_path, get(ready))
        .route(&config.health.startup_path, get(startup))
        .route(&config.observability.metrics.path, get(metrics))
        .with_state(health)
}

/// The dedicated metrics port's routes.
pub(crate) fn metrics_router(config: &LaredoConfig, health: Shared) -> Router {
    Router::new()
        .route(&config.observability.metrics.path, get(metrics))
        .with_state(health)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

async fn live(State(health): State<Shared>) -> Response {
    // Dead: some source whose every pipeline failed (nothing on it can recover alone).
    let mut by_source: HashMap<String, bool> = HashMap::new();
    for p in health.engine.pipelines() {
        let all_failed = by_source.entry(p.source_id).or_insert(true);
        *all_failed &= p.state == PipelineState::Error;
    }
    let failed: Vec<&String> = by_source
        .iter()
        .filter_map(|(id, all)| all.then_some(id))
        .collect();
    if failed.is_empty() {
        json_response(StatusCode::OK, &json!({"status": "ok"}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "error", "failed_sources": failed}),
        )
    }
}

async fn ready(State(health): State<Shared>) -> Response {
    let pipelines: BTreeMap<String, String> = health
        .engine
        .pipelines()
        .into_iter()
        .map(|p| {
            let state = match (p.state, health.events.counters(&p.id).last_error) {
                (PipelineState::Error, Some(error)) => format!("ERROR: {error}"),
                (state, _) => state.to_string(),
            };
            (p.id, state)
        })
        .collect();
    let draining = health.draining.load(Ordering::SeqCst);
    let ready = health.engine.is_ready() && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        &json!({"ready": ready, "draining": draining, "pipelines": pipelines}),
    )
}

async fn startup(State(health): State<Shared>) -> Response {
    let started = health.started.load(Ordering::SeqCst)
        && health
            .engine
            .pipelines()
            .iter()
            .all(|p| p.state != PipelineState::Initializing);
    if started {
        json_response(StatusCode::OK, &json!({"status": "started"}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "starting"}),
        )
    }
}

async fn metrics(State(health): State<Shared>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        crate::metrics::render(&health.metrics, &health.engine),
    )
        .into_response()
}

/// How long a client may take to send its request headers.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request head (request line and headers) read, in bytes.
pub(crate) const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Connections open at once per HTTP port.
pub(crate) const MAX_CONNECTIONS: usize = 256;

/// How long in-flight requests may finish once `stop` is cancelled.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `stop` is cancelled, under the limits above;
/// requests in flight then get [`SHUTDOWN_GRACE`] to finish.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(
                limit = MAX_CONNECTIONS,
                "HTTP connection limit reached: closing a new connection"
            );
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the shutdown grace");
    }
    Ok(())
}
