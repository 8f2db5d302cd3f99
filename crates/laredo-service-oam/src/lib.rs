//! The OAM gRPC service of laredo (`laredo.v1.LaredoOAMService`): status of the
//! service, its sources and pipelines (state, lag, buffer depth, row counts, applied
//! changes), table schemas, reload, pause and resume, source reset, dead letters (list,
//! replay, purge), engine snapshots and snapshot replay, and a streaming watch of
//! status events, over a running [`Engine`](laredo_core::Engine).
//!
//! Long operations answer at once: `ReloadTable` checks what it can up front, then
//! reloads in the background (follow the pipeline states); `StartReplay` returns a
//! replay id for `GetReplayStatus` and `StopReplay`, and needs the target pipeline
//! named, because a replay writes into that pipeline's live target (whose own changes
//! wait until it ends; see [`Engine::start_replay`](laredo_core::Engine::start_replay)).
//!
//! Register a [`StatusEvents`] observer with the engine, then serve an [`OamService`]
//! with any tonic server (or `laredo-service`'s assembly):
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use laredo_core::Engine;
//! use laredo_service_oam::{OamService, StatusEvents};
//!
//! # fn build(builder: laredo_core::EngineBuilder) -> Result<(), Box<dyn std::error::Error>> {
//! let events = StatusEvents::new();
//! let engine: Engine = builder.observer(events.clone()).build()?;
//! let oam = OamService::new(engine, events).into_server();
//! // tonic::transport::Server::builder().add_service(oam).serve(addr).await?;
//! # let _ = oam;
//! # Ok(())
//! # }
//! ```
//!
//! Errors carry gRPC codes a caller can act on: `NOT_FOUND` for an unknown source,
//! pipeline or table, `FAILED_PRECONDITION` for an operation the configuration does not
//! allow (no snapshot store, no dead letter store, a reset without `confirm`, no active
//! pipeline to reload), `INVALID_ARGUMENT` for missing arguments. Snapshots and snapshot
//! replay answer `FAILED_PRECONDITION` until the engine has a snapshot store.

mod describe;
mod events;
mod service;

pub use crate::events::{PipelineCounters, StatusEvent, StatusEvents, WATCH_BUFFER, service_state};
pub use crate::service::{OamService, WatchStream, engine_status};
