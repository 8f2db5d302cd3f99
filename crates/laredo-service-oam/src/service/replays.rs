//! Snapshot replays started over OAM: `StartReplay`, `GetReplayStatus`, `StopReplay`,
//! and the registry that finds a replay by its id.
//!
//! A replay writes a snapshot's rows into the live target of the pipeline it names
//! (required, since it changes that target's rows); the pipeline's own changes wait in
//! its buffer until the replay ends. `StartReplay` answers with a replay id at once.
//! The registry keeps running replays and the newest finished ones for their status.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use laredo_core::{
    DEFAULT_REALTIME_ROWS_PER_SECOND, EngineError, ReplayHandle, ReplaySpeed, ReplayState,
    TableIdentifier,
};
use laredo_proto::laredo::v1 as pb;
use parking_lot::Mutex;
use tonic::{Request, Response, Status};

use super::conversion::duration;
use super::{OamService, engine_status};

/// Finished replays kept for `GetReplayStatus`, beyond which the oldest finished one
/// is forgotten (running replays are always kept).
const KEEP_FINISHED: usize = 32;

/// Replays by id, oldest first.
#[derive(Debug, Default)]
pub(super) struct Replays {
    entries: Mutex<VecDeque<(String, Arc<ReplayHandle>)>>,
}

impl Replays {
    /// Registers a started replay under a fresh id,
    /// `replay-<pipeline>-<snapshot>-<unix-ms>` (bumped by a millisecond while taken),
    /// and returns the id.
    pub(super) fn insert(&self, pipeline_id: &str, handle: ReplayHandle) -> String {
        let mut millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let mut entries = self.entries.lock();
        let id = loop {
            let id = format!("replay-{pipeline_id}-{}-{millis}", handle.snapshot_id());
            if !entries.iter().any(|(taken, _)| *taken == id) {
                break id;
            }
            millis += 1;
        };
        entries.push_back((id.clone(), Arc::new(handle)));
        let finished = |h: &ReplayHandle| h.status().state != ReplayState::Running;
        while entries.iter().filter(|(_, h)| finished(h)).count() > KEEP_FINISHED {
            let Some(oldest) = entries.iter().position(|(_, h)| finished(h)) else {
                break;
            };
            entries.remove(oldest);
        }
        id
    }

    /// The replay with this id.
    pub(super) fn get(&self, id: &str) -> Option<Arc<ReplayHandle>> {
        self.entries
            .lock()
            .iter()
            .find(|(taken, _)| taken == id)
            .map(|(_, handle)| Arc::clone(handle))
    }
}

impl OamService {
    fn replay(&self, replay_id: &str) -> Result<Arc<laredo_core::ReplayHandle>, Status> {
        self.replays
            .get(replay_id)
            .ok_or_else(|| Status::not_found(format!("replay {replay_id} not found")))
    }
}

/// Starts a replay into the target of `target_pipeline_id` (required: the replay
/// changes that live target's rows). The pipeline applies none of its changes
/// while the replay runs; they wait in its buffer and follow the snapshot's rows.
/// `realtime` is a throttle (snapshots record no write times): see
/// [`laredo_core::SnapshotReplay`].
pub(super) async fn start_replay(
    service: &OamService,
    request: Request<pb::StartReplayRequest>,
) -> Result<Response<pb::StartReplayResponse>, Status> {
    let request = request.into_inner();
    if service.engine.snapshot_store().is_none() {
        return Err(engine_status(EngineError::NoSnapshotStore));
    }
    if request.snapshot_id.is_empty() {
        return Err(Status::invalid_argument("snapshot_id is required"));
    }
    if request.target_pipeline_id.is_empty() {
        return Err(Status::invalid_argument(
            "target_pipeline_id is required: a replay writes the snapshot's rows into \
             that pipeline's live target, so name the pipeline explicitly",
        ));
    }
    let speed = match pb::ReplaySpeed::try_from(request.speed) {
        Ok(pb::ReplaySpeed::Unspecified | pb::ReplaySpeed::Full) => ReplaySpeed::Full,
        Ok(pb::ReplaySpeed::Realtime) => ReplaySpeed::Realtime,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown replay speed {}",
                request.speed
            )));
        }
    };
    let mut tables = Vec::with_capacity(request.tables.len());
    for text in &request.tables {
        let table: TableIdentifier = text.parse().map_err(|_| {
            Status::invalid_argument(format!("invalid table {text:?}: expected schema.table"))
        })?;
        tables.push(table);
    }
    let pipeline = service.pipeline(&request.target_pipeline_id)?;
    let handle = match service
        .engine
        .start_replay(&request.snapshot_id, &pipeline.id, &tables, speed)
        .await
    {
        Ok(handle) => handle,
        Err(EngineError::ReplayRefused(reason)) => {
            return Ok(Response::new(pb::StartReplayResponse {
                accepted: false,
                replay_id: String::new(),
                message: reason,
            }));
        }
        Err(e) => return Err(engine_status(e)),
    };
    let replay_id = service.replays.insert(&pipeline.id, handle);
    let pace = match speed {
        ReplaySpeed::Realtime => format!(
            " at {DEFAULT_REALTIME_ROWS_PER_SECOND} rows/s (snapshots record no write \
             times, so realtime is a throttle)"
        ),
        _ => String::new(),
    };
    Ok(Response::new(pb::StartReplayResponse {
        accepted: true,
        message: format!(
            "replaying snapshot {} into pipeline {}{pace}; the pipeline's changes wait \
             until the replay ends",
            request.snapshot_id, pipeline.id
        ),
        replay_id,
    }))
}

pub(super) async fn get_replay_status(
    service: &OamService,
    request: Request<pb::GetReplayStatusRequest>,
) -> Result<Response<pb::GetReplayStatusResponse>, Status> {
    let replay_id = request.into_inner().replay_id;
    let handle = service.replay(&replay_id)?;
    let status = handle.status();
    let state = match status.state {
        ReplayState::Running => pb::ReplayState::Running,
        ReplayState::Completed => pb::ReplayState::Completed,
        ReplayState::Stopped => pb::ReplayState::Stopped,
        _ => pb::ReplayState::Error,
    };
    Ok(Response::new(pb::GetReplayStatusResponse {
        replay_id,
        state: state as i32,
        rows_replayed: status.rows_replayed,
        elapsed: duration(status.elapsed),
        message: status.error.unwrap_or_default(),
    }))
}

pub(super) async fn stop_replay(
    service: &OamService,
    request: Request<pb::StopReplayRequest>,
) -> Result<Response<pb::StopReplayResponse>, Status> {
    let handle = service.replay(&request.into_inner().replay_id)?;
    Ok(Response::new(pb::StopReplayResponse {
        stopped: handle.stop().await,
    }))
}
