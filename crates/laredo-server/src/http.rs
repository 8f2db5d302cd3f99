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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use laredo_config::LaredoConfig;
use laredo_core::{Engine, PipelineState};
use laredo_service_oam::StatusEvents;
use serde_json::json;

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
