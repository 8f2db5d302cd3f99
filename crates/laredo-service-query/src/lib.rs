//! The Query gRPC service of laredo (`laredo.v1.LaredoQueryService`): reads of the rows
//! held by a running [`Engine`](laredo_core::Engine)'s targets, and a stream of their
//! changes.
//!
//! Where it sits: at the end of the data path, beside the application. The engine
//! applies a table's baseline and changes to its targets; this service answers
//! `Lookup`, `LookupAll`, `GetRow`, `ListRows`, `CountRows` and `Subscribe` over gRPC
//! from any target with row access ([`RowAccess`](laredo_core::RowAccess), reached
//! through [`SyncTarget::rows`](laredo_core::SyncTarget::rows)): laredo-target-memory's
//! indexed and compiled targets, laredo-target-fanout's replication target, or one of
//! the application's. It depends on laredo-core's traits only, never on a target
//! crate. It only provides the service: mount [`QueryService::into_server`] on any
//! tonic server (laredo-service's assembly adds health, reflection, gRPC-Web and TLS).
//!
//! | RPC | Reads |
//! |---|---|
//! | `Lookup` | the lookup index (no `index_name`; the key for a target without one) or a named index, first match |
//! | `LookupAll` | every row of a key in a named index (`(primary)` is the lookup index, or the key) |
//! | `GetRow` | by primary key, one value per key column |
//! | `ListRows` | pages in primary-key order; the token names the last key sent; a page reads only its rows where the target keeps an ordered index (else a sorted scan); `page_size` clamped to [`MAX_PAGE_SIZE`] |
//! | `CountRows` | the row count |
//! | `Subscribe` | live changes, optionally after the current rows and a `replay_complete` marker (`UNIMPLEMENTED` for a target that does not report its changes) |
//!
//! Tables: a request names `schema` and `table`; the first target of that table with
//! row access serves it. A table served by several sources needs the
//! [`SOURCE_METADATA_KEY`] request metadata to pick one. A compiled target serves the
//! rows its objects were compiled from; to serve the objects themselves, register the
//! rows its serializer makes of them ([`QueryService::with_rows`] with
//! laredo-target-memory's `CompiledTarget::serialized`).
//!
//! Status codes: `INVALID_ARGUMENT` for a missing schema or table, a missing index
//! name, a key with the wrong number of values (the message names the expected
//! fields), a malformed value or page token, a page token longer than
//! [`MAX_PAGE_TOKEN_LEN`] (checked before parsing), or an ambiguous table; `NOT_FOUND` for an
//! unknown table, source or index (the message lists the known indexes); `UNAVAILABLE`
//! while a target is not initialised; `INTERNAL` for a serialized compiled row without
//! its key columns.
//!
//! Subscribers never slow the engine: each has a bounded queue
//! ([`SUBSCRIBER_BUFFER`] changes); when it is full, changes are dropped and counted,
//! and an `events_dropped` marker at the place of the gap tells the client how many.
//! A subscription ends when the client goes away (its listener is removed) or when the
//! target closes.
//!
//! Each live change carries its source `position` (as the source prints it, e.g.
//! `16/B374D848` for PostgreSQL) and origin transaction id `xid`: the target's
//! listener receives the applied change with each row change
//! ([`RowChange::change`](laredo_core::RowChange::change)). Writes the engine makes of
//! its own (a TTL expiry, a dead letter replay, a reload's truncate) carry the position
//! the stream had reached and `xid` 0; baseline rows, a snapshot restore and replayed
//! current rows carry an empty position and `xid` 0.
//!
//! ```
//! use std::time::Duration;
//!
//! use laredo_core::{Engine, PipelineOptions, row, table};
//! use laredo_proto::laredo::v1::{LookupRequest, Value};
//! use laredo_proto::laredo::v1::laredo_query_service_client::LaredoQueryServiceClient;
//! use laredo_service_query::QueryService;
//! use laredo_source_test::TestSource;
//! use laredo_target_memory::IndexedTarget;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let users = table("public", "users");
//! let source = TestSource::new();
//! source.set_schema(users.clone(), TestSource::columns(&[("id", "int8", true), ("name", "text", false)]));
//! source.add_row(users.clone(), row! {"id" => 7, "name" => "ann"});
//! let engine = Engine::builder()
//!     .source("main", source)
//!     .pipeline("main", users, IndexedTarget::builder().build(), PipelineOptions::default())
//!     .build()?;
//! engine.start().await?;
//! assert!(engine.await_ready(Duration::from_secs(10)).await);
//!
//! // Serve the Query service on a loopback port.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let service = QueryService::new(engine.clone()).into_server();
//! tokio::spawn(
//!     tonic::transport::Server::builder()
//!         .add_service(service)
//!         .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
//! );
//!
//! // A client looks a row up by the lookup fields (here the primary key).
//! let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
//!     .connect()
//!     .await?;
//! let mut client = LaredoQueryServiceClient::new(channel);
//! let found = client
//!     .lookup(LookupRequest {
//!         schema: "public".into(),
//!         table: "users".into(),
//!         index_name: String::new(),
//!         key_values: vec![Value::from(&laredo_core::Value::Int64(7))],
//!     })
//!     .await?
//!     .into_inner();
//! let row = laredo_core::Row::try_from(&found.row.expect("found"))?;
//! assert_eq!(row, row! {"id" => 7, "name" => "ann"});
//! engine.stop().await?;
//! # Ok(())
//! # }
//! ```

mod page;
mod service;
mod subscription;
mod table;

pub use crate::page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_PAGE_TOKEN_LEN};
pub use crate::service::{Error, QueryService, SOURCE_METADATA_KEY};
pub use crate::subscription::{SUBSCRIBER_BUFFER, SubscribeStream};
