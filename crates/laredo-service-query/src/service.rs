//! [`QueryService`]: table resolution and the `LaredoQueryService` RPCs.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use laredo_core::{Engine, Row, RowAccess, TableIdentifier, Value};
use laredo_proto::laredo::v1 as wire;
use laredo_proto::laredo::v1::laredo_query_service_server::{
    LaredoQueryService, LaredoQueryServiceServer,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::page::{self, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::subscription::{SUBSCRIBER_BUFFER, SubscribeStream, SubscriberGuard};
use crate::table::Served;

/// The request metadata key that picks the source of a table served by several
/// sources (the request messages name only `schema` and `table`).
pub const SOURCE_METADATA_KEY: &str = "laredo-source";

/// An error registering a table with a [`QueryService`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The engine has no pipeline of the table on that source.
    #[error("no pipeline of {table} on source {source_id:?}")]
    UnknownTable {
        /// The source asked for.
        source_id: String,
        /// The table asked for.
        table: TableIdentifier,
    },
}

/// The Query service (`laredo.v1.LaredoQueryService`) over a running [`Engine`]:
/// lookups, rows, counts and change streams of the engine's targets.
///
/// A request names a table by schema and table. It is served by a reader registered
/// for that table with [`QueryService::with_rows`], else by the first of the table's
/// targets (in pipeline order) that has row access ([`SyncTarget::rows`]): the
/// in-memory targets, the replication fan-out target, or any target of the
/// application's. When several sources serve the table, the request must pick one
/// with the [`SOURCE_METADATA_KEY`] metadata, otherwise it fails with
/// `INVALID_ARGUMENT` naming the candidates.
///
/// Cheap to clone: clones share the registrations and the subscriber count.
///
/// [`SyncTarget::rows`]: laredo_core::SyncTarget::rows
#[derive(Clone)]
pub struct QueryService {
    engine: Engine,
    registered: Arc<HashMap<(String, TableIdentifier), Arc<dyn RowAccess>>>,
    subscriber_buffer: usize,
    subscribers: Arc<AtomicUsize>,
}

impl std::fmt::Debug for QueryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryService")
            .field("registered", &self.registered.keys().collect::<Vec<_>>())
            .field("subscriber_buffer", &self.subscriber_buffer)
            .field("subscribers", &self.subscriber_count())
            .finish_non_exhaustive()
    }
}

impl QueryService {
    /// A service reading `engine`'s targets that have row access.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            registered: Arc::new(HashMap::new()),
            subscriber_buffer: SUBSCRIBER_BUFFER,
            subscribers: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Serves `table` on `source_id` from `rows` instead of the table's target: for a
    /// target whose rows the service should not read as they are, above all a
    /// compiled target, whose objects only the application can turn into rows
    /// (laredo-target-memory's `CompiledTarget::serialized`).
    ///
    /// `ListRows` orders rows by the key fields' values in the rows `rows` hands out,
    /// so they must include the key columns (a page with a row that lacks one fails
    /// with `INTERNAL`). Subscribers' positions are printed by the source.
    ///
    /// # Errors
    /// [`Error::UnknownTable`] when the engine has no pipeline of `table` on
    /// `source_id`.
    pub fn with_rows(
        mut self,
        source_id: &str,
        table: &TableIdentifier,
        rows: Arc<dyn RowAccess>,
    ) -> Result<Self, Error> {
        if source_id.is_empty() || self.engine.targets(source_id, table).is_empty() {
            return Err(Error::UnknownTable {
                source_id: source_id.to_string(),
                table: table.clone(),
            });
        }
        Arc::make_mut(&mut self.registered).insert((source_id.to_string(), table.clone()), rows);
        Ok(self)
    }

    /// Changes each subscriber may have queued before further changes are dropped
    /// (and reported with an `events_dropped` marker). Default [`SUBSCRIBER_BUFFER`];
    /// at least 1.
    #[must_use]
    pub fn subscriber_buffer(mut self, changes: usize) -> Self {
        self.subscriber_buffer = changes.max(1);
        self
    }

    /// The number of `Subscribe` listeners registered on targets: one per open
    /// stream, released when the client goes away or the target closes.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.load(Ordering::SeqCst)
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> LaredoQueryServiceServer<Self> {
        LaredoQueryServiceServer::new(self)
    }

    /// The table a request names: the registered reader or the target with row access
    /// of `schema.table` on the one source serving it, or on the source the request's
    /// metadata picks.
    fn resolve(&self, schema: &str, table: &str, metadata: &MetadataMap) -> Result<Served, Status> {
        if schema.is_empty() || table.is_empty() {
            return Err(Status::invalid_argument("schema and table are required"));
        }
        let table = TableIdentifier::new(schema, table);
        let wanted = requested_source(metadata)?;
        let sources = self.engine.source_ids();
        if let Some(wanted) = wanted
            && !sources.iter().any(|s| s == wanted)
        {
            return Err(Status::not_found(format!("source {wanted} not found")));
        }
        let mut candidates: Vec<(String, Served)> = sources
            .into_iter()
            .filter(|source| wanted.is_none_or(|wanted| wanted == source))
            .filter_map(|source| {
                let served = self.served_on(&source, &table)?;
                Some((source, served))
            })
            .collect();
        match candidates.len() {
            0 => Err(Status::not_found(match wanted {
                Some(source) => {
                    format!("no target with row access found for {table} on source {source}")
                }
                None => format!("no target with row access found for {table}"),
            })),
            1 => Ok(candidates.remove(0).1),
            _ => {
                let names: Vec<&str> = candidates.iter().map(|(s, _)| s.as_str()).collect();
                Err(Status::invalid_argument(format!(
                    "{table} is served by several sources ({}): pick one with the \
                     {SOURCE_METADATA_KEY} request metadata",
                    names.join(", ")
                )))
            }
        }
    }

    fn served_on(&self, source_id: &str, table: &TableIdentifier) -> Option<Served> {
        let source = self.engine.source(source_id);
        if let Some(rows) = self.registered.get(&(source_id.to_string(), table.clone())) {
            return Some(Served::registered(
                table.clone(),
                Arc::clone(rows),
                source.as_ref(),
            ));
        }
        self.engine
            .targets(source_id, table)
            .into_iter()
            .find_map(|target| Served::target(table.clone(), target, source.as_ref()))
    }
}

fn requested_source(metadata: &MetadataMap) -> Result<Option<&str>, Status> {
    match metadata.get(SOURCE_METADATA_KEY) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(Some)
            .map_err(|_| Status::invalid_argument(format!("{SOURCE_METADATA_KEY} is not text"))),
    }
}

/// Converts request key values, naming the field of the first bad one.
fn key_values(field: &str, values: &[wire::Value]) -> Result<Vec<Value>, Status> {
    values
        .iter()
        .enumerate()
        .map(|(idx, value)| {
            Value::try_from(value)
                .map_err(|error| Status::invalid_argument(format!("{field}[{idx}]: {error}")))
        })
        .collect()
}

fn page_size(requested: u32) -> usize {
    match usize::try_from(requested) {
        Ok(0) => DEFAULT_PAGE_SIZE,
        Ok(size) => size.min(MAX_PAGE_SIZE),
        Err(_) => MAX_PAGE_SIZE,
    }
}

/// The values of `fields` in `row`, or `INTERNAL` when the row lacks one.
fn row_key(table: &str, fields: &[String], row: &Row) -> Result<Vec<Value>, Status> {
    fields
        .iter()
        .map(|field| {
            row.get(field).cloned().ok_or_else(|| {
                Status::internal(format!("a row of {table} has no key column {field}"))
            })
        })
        .collect()
}

#[tonic::async_trait]
impl LaredoQueryService for QueryService {
    async fn lookup(
        &self,
        request: Request<wire::LookupRequest>,
    ) -> Result<Response<wire::LookupResponse>, Status> {
        let served = self.resolve(
            &request.get_ref().schema,
            &request.get_ref().table,
            request.metadata(),
        )?;
        let request = request.into_inner();
        let key = key_values("key_values", &request.key_values)?;
        let index = Some(request.index_name.as_str()).filter(|name| !name.is_empty());
        let row = served.lookup(index, key)?;
        Ok(Response::new(wire::LookupResponse {
            found: row.is_some(),
            row: row.as_ref().map(wire::Row::from),
        }))
    }

    async fn lookup_all(
        &self,
        request: Request<wire::LookupAllRequest>,
    ) -> Result<Response<wire::LookupAllResponse>, Status> {
        let served = self.resolve(
            &request.get_ref().schema,
            &request.get_ref().table,
            request.metadata(),
        )?;
        let request = request.into_inner();
        if request.index_name.is_empty() {
            return Err(Status::invalid_argument("index_name is required"));
        }
        let key = key_values("key_values", &request.key_values)?;
        let rows = served.lookup_all(&request.index_name, key)?;
        Ok(Response::new(wire::LookupAllResponse {
            rows: rows.iter().map(wire::Row::from).collect(),
        }))
    }

    async fn get_row(
        &self,
        request: Request<wire::GetRowRequest>,
    ) -> Result<Response<wire::GetRowResponse>, Status> {
        let served = self.resolve(
            &request.get_ref().schema,
            &request.get_ref().table,
            request.metadata(),
        )?;
        let key = key_values("primary_key", &request.get_ref().primary_key)?;
        let row = served.get(key)?;
        Ok(Response::new(wire::GetRowResponse {
            found: row.is_some(),
            row: row.as_ref().map(wire::Row::from),
        }))
    }

    async fn list_rows(
        &self,
        request: Request<wire::ListRowsRequest>,
    ) -> Result<Response<wire::ListRowsResponse>, Status> {
        let served = self.resolve(
            &request.get_ref().schema,
            &request.get_ref().table,
            request.metadata(),
        )?;
        let request = request.into_inner();
        let fields = served.key_fields()?;
        let after = if request.page_token.is_empty() {
            None
        } else {
            let key = page::decode_token(&request.page_token, fields.len()).map_err(|error| {
                Status::invalid_argument(format!("invalid page_token: {error}"))
            })?;
            Some(key)
        };
        let table = format!("{}.{}", request.schema, request.table);
        let size = page_size(request.page_size);
        let key_of = |row: &Row| row_key(&table, &fields, row);
        // One row past the page tells whether more follow.
        let (page, total_count) = match served.rows_after(after.as_deref(), size + 1)? {
            Some(mut rows) => {
                let more = rows.len() > size;
                rows.truncate(size);
                let next = match rows.last() {
                    Some(last) if more => Some(key_of(last)?),
                    _ => None,
                };
                (page::Page { rows, next }, served.count()?)
            }
            None => {
                let rows = served.rows()?;
                let total = rows.len() as u64;
                (
                    page::select_page(rows, after.as_deref(), size, key_of)?,
                    total,
                )
            }
        };
        Ok(Response::new(wire::ListRowsResponse {
            rows: page.rows.iter().map(wire::Row::from).collect(),
            next_page_token: page
                .next
                .map(|key| page::encode_token(&key))
                .unwrap_or_default(),
            total_count,
        }))
    }

    async fn count_rows(
        &self,
        request: Request<wire::CountRowsRequest>,
    ) -> Result<Response<wire::CountRowsResponse>, Status> {
        let served = self.resolve(
            &request.get_ref().schema,
            &request.get_ref().table,
            request.metadata(),
        )?;
        Ok(Response::new(wire::CountRowsResponse {
            count: served.count()?,
        }))
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<wire::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let served = self.resolve(
            &request.get_ref().schema,
            &request.get_ref().table,
            request.metadata(),
        )?;
        let request = request.into_inner();
        tracing::debug!(
            schema = %request.schema,
            table = %request.table,
            replay_existing = request.replay_existing,
            "subscription opened"
        );
        let guard = SubscriberGuard::new(&self.subscribers);
        Ok(Response::new(served.subscribe(
            request.replay_existing,
            self.subscriber_buffer,
            guard,
        )?))
    }
}
