//! Dead letter RPCs: `ListDeadLetters`, `ReplayDeadLetters` and `PurgeDeadLetters`, per
//! pipeline, against the engine's dead letter store (`FAILED_PRECONDITION` without
//! one).
//!
//! Listing and purging read the store directly (a store error is `INTERNAL`, with its
//! cause chain); replaying goes through the engine, which re-applies each dead letter
//! to the pipeline's target (oldest first, holding the pipeline's apply lock so that
//! no batch interleaves) and keeps those that fail for a later attempt.

use std::sync::Arc;

use laredo_proto::laredo::v1 as pb;
use tonic::{Request, Response, Status};

use super::conversion::micros_timestamp;
use super::{OamService, engine_status};

impl OamService {
    fn dead_letter_store(&self) -> Result<Arc<dyn laredo_core::DeadLetterStore>, Status> {
        self.engine
            .dead_letter_store()
            .ok_or_else(|| Status::failed_precondition("no dead letter store is configured"))
    }
}

pub(super) async fn list_dead_letters(
    service: &OamService,
    request: Request<pb::ListDeadLettersRequest>,
) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
    let request = request.into_inner();
    let p = service.pipeline(&request.pipeline_id)?;
    let store = service.dead_letter_store()?;
    let entries = store
        .read(&p.id, request.limit as usize)
        .await
        .map_err(|e| {
            Status::internal(format!(
                "dead letter store: {}",
                laredo_core::ErrorChain(&e)
            ))
        })?;
    let total_count = store.count(&p.id).await.map_err(|e| {
        Status::internal(format!(
            "dead letter store: {}",
            laredo_core::ErrorChain(&e)
        ))
    })?;
    Ok(Response::new(pb::ListDeadLettersResponse {
        entries: entries
            .iter()
            .map(|e| pb::DeadLetterEntry {
                id: e.id,
                timestamp: Some(micros_timestamp(e.timestamp_micros)),
                schema: e.table.schema().to_string(),
                table: e.table.table().to_string(),
                action: pb::ChangeAction::from(e.action) as i32,
                position: e.position.clone(),
                xid: e.xid,
                new_values: e.new_values.as_ref().map(Into::into),
                old_values: e.old_values.as_ref().map(Into::into),
                error_message: e.error.clone(),
            })
            .collect(),
        total_count,
    }))
}

pub(super) async fn replay_dead_letters(
    service: &OamService,
    request: Request<pb::ReplayDeadLettersRequest>,
) -> Result<Response<pb::ReplayDeadLettersResponse>, Status> {
    let id = request.into_inner().pipeline_id;
    service.pipeline(&id)?;
    service.dead_letter_store()?;
    let outcome = service
        .engine
        .replay_dead_letters(&id)
        .await
        .map_err(engine_status)?;
    Ok(Response::new(pb::ReplayDeadLettersResponse {
        replayed: outcome.replayed,
        succeeded: outcome.succeeded,
        failed: outcome.failed,
    }))
}

pub(super) async fn purge_dead_letters(
    service: &OamService,
    request: Request<pb::PurgeDeadLettersRequest>,
) -> Result<Response<pb::PurgeDeadLettersResponse>, Status> {
    let id = request.into_inner().pipeline_id;
    service.pipeline(&id)?;
    let store = service.dead_letter_store()?;
    let purged = store.count(&id).await.map_err(|e| {
        Status::internal(format!(
            "dead letter store: {}",
            laredo_core::ErrorChain(&e)
        ))
    })?;
    store.purge(&id).await.map_err(|e| {
        Status::internal(format!(
            "dead letter store: {}",
            laredo_core::ErrorChain(&e)
        ))
    })?;
    Ok(Response::new(pb::PurgeDeadLettersResponse { purged }))
}
