//! The dispatcher: the [`ChangeHandler`] a source task hands its source, routing each
//! change to the buffers of its table's pipelines under their buffer policies.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::change::ChangeEvent;
use crate::position::Position;
use crate::source::{ChangeHandler, SourceError};
use crate::status::{BufferPolicy, PipelineState, SchemaChangeEvent};
use crate::table::{ColumnDefinition, TableIdentifier};

use super::buffer::{ChangeBuffer, Item, PushError};
use super::consumer::fail_pipeline;
use super::{Inner, PipelineEntry};

/// The dispatcher reports a buffer's depth when it crosses a multiple of this (see
/// `Dispatcher::report_depth`).
const DEPTH_REPORT_STEP: usize = 64;

/// A pipeline (by index) and its buffer.
type Route = (usize, Arc<ChangeBuffer>);

/// The [`ChangeHandler`] of a source task: routes each change to the buffers of its
/// table's pipelines under their buffer policies.
pub(super) struct Dispatcher<'a> {
    inner: &'a Inner,
    source_idx: usize,
    cancel: CancellationToken,
    /// Per table: its pipelines and their buffers.
    routes: Vec<(TableIdentifier, Vec<Route>)>,
    route_index: HashMap<TableIdentifier, usize>,
    all: Vec<(usize, Arc<ChangeBuffer>)>,
    /// The route of the previous change, to skip hashing when changes of one table
    /// follow each other (sources hand out clones of one identifier per table).
    last_route: Option<usize>,
}

impl<'a> Dispatcher<'a> {
    pub(super) fn new(inner: &'a Inner, source_idx: usize, cancel: CancellationToken) -> Self {
        let source = &inner.sources[source_idx];
        let mut routes: HashMap<TableIdentifier, Vec<(usize, Arc<ChangeBuffer>)>> = HashMap::new();
        let mut all = Vec::new();
        for &p in &source.pipelines {
            let pipeline = &inner.pipelines[p];
            let buffer = pipeline
                .buffer
                .lock()
                .clone()
                .expect("the source task created every buffer");
            routes
                .entry(pipeline.table.clone())
                .or_default()
                .push((p, Arc::clone(&buffer)));
            all.push((p, buffer));
        }
        let routes: Vec<(TableIdentifier, Vec<Route>)> = routes.into_iter().collect();
        let route_index = routes
            .iter()
            .enumerate()
            .map(|(i, (t, _))| (t.clone(), i))
            .collect();
        Self {
            inner,
            source_idx,
            cancel,
            routes,
            route_index,
            all,
            last_route: None,
        }
    }

    /// Whether a pipeline in `state` takes changes: after its baseline it does, also
    /// while paused or reloading (they are held in its buffer).
    fn accepts(state: PipelineState) -> bool {
        matches!(
            state,
            PipelineState::Streaming | PipelineState::Paused | PipelineState::Baselining
        )
    }

    /// Leaves a caught-up mark at `position` on every pipeline not of `table`.
    fn mark_others(&self, table: &TableIdentifier, position: &Position, routed: bool) {
        if self.routes.len() == 1 && routed {
            return;
        }
        for (p, buffer) in &self.all {
            let pipeline = &self.inner.pipelines[*p];
            if &pipeline.table != table && Self::accepts(pipeline.state()) {
                buffer.set_mark(position.clone());
            }
        }
    }

    /// Reports the depth after a push when it says something new: the buffer just
    /// stopped being empty, it is full, or it crossed a multiple of
    /// [`DEPTH_REPORT_STEP`]. The consumer reports the depth after every batch it
    /// takes, so the gauge stays current without an observer call per change.
    fn report_depth(&self, pipeline: &PipelineEntry, buffer: &ChangeBuffer, depth: usize) {
        let capacity = buffer.capacity();
        if depth == 1 || depth >= capacity || depth.is_multiple_of(DEPTH_REPORT_STEP) {
            self.inner
                .observer
                .on_buffer_depth_changed(&pipeline.id, depth, capacity);
        }
    }

    async fn push_blocking(
        &self,
        pipeline: &PipelineEntry,
        buffer: &ChangeBuffer,
        item: Item,
    ) -> Result<(), SourceError> {
        let depth = buffer
            .push(item, &self.cancel)
            .await
            .map_err(|_| SourceError::Stopped)?;
        self.inner
            .observer
            .on_buffer_depth_changed(&pipeline.id, depth, buffer.capacity());
        Ok(())
    }
}

#[async_trait]
impl ChangeHandler for Dispatcher<'_> {
    async fn on_change(&mut self, event: ChangeEvent) -> Result<(), SourceError> {
        if self.cancel.is_cancelled() {
            return Err(SourceError::Stopped);
        }
        let route = match self.last_route {
            Some(i) if self.routes[i].0.same_allocation(&event.table) => Some(i),
            _ => {
                let found = self.route_index.get(&event.table).copied();
                if found.is_some() {
                    self.last_route = found;
                }
                found
            }
        };
        self.mark_others(&event.table, &event.position, route.is_some());
        self.inner.sources[self.source_idx]
            .received
            .set(Some(&event.position));
        let Some(route) = route else {
            return Ok(());
        };
        let routes = &self.routes[route].1;
        let last = routes.len() - 1;
        let mut event = Some(event);
        for (n, (p, buffer)) in routes.iter().enumerate() {
            let pipeline = &self.inner.pipelines[*p];
            if !Self::accepts(pipeline.state()) {
                continue;
            }
            let item = if n == last {
                Item::Change(event.take().expect("moved only on the last route"))
            } else {
                Item::Change(event.clone().expect("present before the last route"))
            };
            match pipeline.options.buffer_policy {
                BufferPolicy::Block => match buffer.push(item, &self.cancel).await {
                    Ok(depth) => self.report_depth(pipeline, buffer, depth),
                    Err(PushError::Cancelled) => return Err(SourceError::Stopped),
                },
                BufferPolicy::DropOldest => {
                    let (depth, dropped) = buffer.push_drop_oldest(item);
                    if dropped {
                        self.inner
                            .observer
                            .on_buffer_policy_triggered(&pipeline.id, BufferPolicy::DropOldest);
                        tracing::warn!(pipeline = %pipeline.id, "buffer full: dropped the oldest change");
                    }
                    self.report_depth(pipeline, buffer, depth);
                }
                BufferPolicy::Error => match buffer.try_push(item) {
                    Ok(depth) => self.report_depth(pipeline, buffer, depth),
                    Err(_) => {
                        self.inner
                            .observer
                            .on_buffer_policy_triggered(&pipeline.id, BufferPolicy::Error);
                        fail_pipeline(self.inner, pipeline, "buffer full").await;
                        if self.cancel.is_cancelled() {
                            return Err(SourceError::Stopped);
                        }
                    }
                },
            }
        }
        Ok(())
    }

    async fn on_change_failed(
        &mut self,
        event: ChangeEvent,
        error: String,
    ) -> Result<(), SourceError> {
        if self.cancel.is_cancelled() {
            return Err(SourceError::Stopped);
        }
        self.mark_others(&event.table, &event.position, true);
        self.inner.sources[self.source_idx]
            .received
            .set(Some(&event.position));
        tracing::warn!(table = %event.table, position = %self.inner.sources[self.source_idx].source.position_to_string(&event.position), error, "the source could not read a change");
        let Some(&route) = self.route_index.get(&event.table) else {
            return Ok(());
        };
        for (p, buffer) in &self.routes[route].1 {
            let pipeline = &self.inner.pipelines[*p];
            if Self::accepts(pipeline.state()) {
                let item = Item::Failed {
                    event: event.clone(),
                    error: error.clone(),
                };
                self.push_blocking(pipeline, buffer, item).await?;
            }
        }
        Ok(())
    }

    async fn on_heartbeat(&mut self, position: Position) -> Result<(), SourceError> {
        if self.cancel.is_cancelled() {
            return Err(SourceError::Stopped);
        }
        self.inner.sources[self.source_idx]
            .received
            .set(Some(&position));
        for (p, buffer) in &self.all {
            if Self::accepts(self.inner.pipelines[*p].state()) {
                buffer.set_mark(position.clone());
            }
        }
        Ok(())
    }

    async fn on_schema_change(
        &mut self,
        table: TableIdentifier,
        old_columns: Vec<ColumnDefinition>,
        new_columns: Vec<ColumnDefinition>,
    ) -> Result<(), SourceError> {
        let source_id = &self.inner.sources[self.source_idx].id;
        self.inner
            .schemas
            .write()
            .insert(table.clone(), new_columns.clone());
        let event = SchemaChangeEvent {
            old_columns,
            new_columns,
        };
        self.inner
            .observer
            .on_schema_change(source_id, &table, &event);
        let Some(&route) = self.route_index.get(&table) else {
            return Ok(());
        };
        for (p, buffer) in &self.routes[route].1 {
            let pipeline = &self.inner.pipelines[*p];
            if Self::accepts(pipeline.state()) {
                let item = Item::Schema {
                    old_columns: event.old_columns.clone(),
                    new_columns: event.new_columns.clone(),
                };
                self.push_blocking(pipeline, buffer, item).await?;
            }
        }
        Ok(())
    }
}
