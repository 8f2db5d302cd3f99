//! `WatchStatus`: a stream of status events (service, source and pipeline state
//! changes, and row changes when asked for), filtered by pipeline and table.
//!
//! Each watcher subscribes to the broadcast channel of [`StatusEvents`] and gets a
//! task that filters and renders the events into a bounded channel the response
//! streams from; the task ends when the watcher goes away or the events end. A watcher
//! that falls more than the broadcast buffer behind gets an `EventsDropped` event with
//! the count instead of the events it missed. Row events print their position as the
//! pipeline's source does and carry the row's primary key, both looked up once per
//! watcher.
//!
//! [`StatusEvents`]: crate::StatusEvents

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use laredo_core::{Engine, Position, Row, SyncSource, TableIdentifier, primary_key_columns};
use laredo_proto::laredo::v1 as pb;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::OamService;
use super::conversion::{pipeline_state, timestamp};
use crate::events::StatusEvent;

/// A `WatchStatus` stream.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchStatusResponse, Status>> + Send>>;

pub(super) async fn watch_status(
    service: &OamService,
    request: Request<pb::WatchStatusRequest>,
) -> Result<Response<WatchStream>, Status> {
    let request = request.into_inner();
    let tables: Vec<String> = request.tables;
    let pipeline_ids: Vec<String> = request.pipeline_ids;
    let rows = request.include_row_changes;
    let table_of: HashMap<String, TableIdentifier> = service
        .engine
        .pipelines()
        .into_iter()
        .map(|p| (p.id, p.table))
        .collect();
    let mut receiver = service.events.subscribe();
    let wanted = move |event: &StatusEvent| -> bool {
        match event {
            StatusEvent::Row { .. } if !rows => return false,
            // Service and source events name no pipeline nor table: they always pass.
            StatusEvent::ServiceState { .. } | StatusEvent::Source { .. } => return true,
            _ => {}
        }
        if !pipeline_ids.is_empty()
            && !event
                .pipeline_id()
                .is_some_and(|id| pipeline_ids.iter().any(|p| p == id))
        {
            return false;
        }
        if !tables.is_empty() {
            let table = event
                .table()
                .cloned()
                .or_else(|| event.pipeline_id().and_then(|id| table_of.get(id).cloned()));
            let Some(table) = table else {
                return false;
            };
            let name = table.to_string();
            if !tables.iter().any(|t| *t == name || t == table.table()) {
                return false;
            }
        }
        true
    };
    let mut rows = RowEvents::new(service.engine.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let item = match receiver.recv().await {
                Ok(event) if wanted(&event) => watch_response(&event, &mut rows),
                Ok(_) => continue,
                Err(RecvError::Lagged(count)) => pb::WatchStatusResponse {
                    timestamp: Some(timestamp(SystemTime::now())),
                    event: Some(pb::watch_status_response::Event::EventsDropped(
                        pb::EventsDropped { count },
                    )),
                },
                Err(RecvError::Closed) => return,
            };
            if tx.send(Ok(item)).await.is_err() {
                return;
            }
        }
    });
    Ok(Response::new(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )))
}

/// What a watcher needs to print row events as the source does: each pipeline's
/// source (for its position format) and each table's key columns, looked up once.
struct RowEvents {
    engine: Engine,
    sources: HashMap<String, Option<Arc<dyn SyncSource>>>,
    keys: HashMap<TableIdentifier, Vec<String>>,
}

impl RowEvents {
    fn new(engine: Engine) -> Self {
        Self {
            engine,
            sources: HashMap::new(),
            keys: HashMap::new(),
        }
    }

    /// `position` as the pipeline's source prints it (`16/B374D848` for PostgreSQL).
    fn position(&mut self, pipeline_id: &str, position: &Position) -> String {
        let engine = &self.engine;
        let source = self
            .sources
            .entry(pipeline_id.to_string())
            .or_insert_with(|| {
                let source_id = engine
                    .pipelines()
                    .into_iter()
                    .find(|p| p.id == pipeline_id)?
                    .source_id;
                engine.source(&source_id)
            });
        match source {
            Some(source) => source.position_to_string(position),
            None => position.to_string(),
        }
    }

    /// The primary key columns of `identity` (the whole identity for a table without
    /// a primary key, whose identity is the full row).
    fn key(&mut self, table: &TableIdentifier, identity: &Row) -> pb::Row {
        let engine = &self.engine;
        let fields = self.keys.entry(table.clone()).or_insert_with(|| {
            engine
                .table_schema(table)
                .map(|columns| {
                    primary_key_columns(&columns)
                        .into_iter()
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        });
        if fields.is_empty() {
            return pb::Row::from(identity);
        }
        let key = Row::from_pairs(
            fields
                .iter()
                .filter_map(|f| identity.get(f).map(|v| (f.as_str(), v.clone()))),
        );
        pb::Row::from(&key)
    }
}

fn watch_response(event: &StatusEvent, rows: &mut RowEvents) -> pb::WatchStatusResponse {
    use pb::watch_status_response::Event;
    let (at, event) = match event {
        StatusEvent::ServiceState { at, old, new } => (
            *at,
            Event::ServiceStateChange(pb::ServiceStateChange {
                old_state: *old as i32,
                new_state: *new as i32,
            }),
        ),
        StatusEvent::PipelineState {
            at,
            pipeline_id,
            old,
            new,
            ..
        } => (
            *at,
            Event::PipelineStateChange(pb::PipelineStateChange {
                pipeline_id: pipeline_id.clone(),
                old_state: pipeline_state(*old) as i32,
                new_state: pipeline_state(*new) as i32,
                message: String::new(),
            }),
        ),
        StatusEvent::Source {
            at,
            source_id,
            connected,
            message,
        } => (
            *at,
            Event::SourceStateChange(pb::SourceStateChange {
                source_id: source_id.clone(),
                event_type: if *connected {
                    pb::SourceEventType::Connected
                } else {
                    pb::SourceEventType::Disconnected
                } as i32,
                message: message.clone(),
            }),
        ),
        StatusEvent::Row {
            at,
            pipeline_id,
            table,
            action,
            position,
            xid,
            identity,
        } => (
            *at,
            Event::RowChange(pb::WatchRowChange {
                pipeline_id: pipeline_id.clone(),
                schema: table.schema().to_string(),
                table: table.table().to_string(),
                action: pb::ChangeAction::from(*action) as i32,
                position: rows.position(pipeline_id, position),
                xid: *xid,
                key: identity.as_ref().map(|identity| rows.key(table, identity)),
            }),
        ),
    };
    pb::WatchStatusResponse {
        timestamp: Some(timestamp(at)),
        event: Some(event),
    }
}
