//! Laredo core: the values, rows and plugin traits every laredo crate shares, and the
//! engine that moves a consistent baseline and then every change from sources into
//! targets.
//!
//! Data path: a [`SyncSource`] takes a baseline and streams [`ChangeEvent`]s; the
//! [`Engine`] runs one task per source that demultiplexes changes by table into one
//! bounded buffer per pipeline, and one task per pipeline that applies its buffer to a
//! [`SyncTarget`] after the pipeline's filters and transforms. The source is
//! acknowledged at the minimum position every pipeline has made durable.
//!
//! laredo-core knows nothing of PostgreSQL, gRPC or any cloud: sources and targets live
//! in their own crates.
//!
//! ```
//! use std::time::Duration;
//! use laredo_core::{Engine, table, row, PipelineOptions};
//! use laredo_source_test::TestSource;
//! use laredo_target_memory::IndexedTarget;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let source = TestSource::new();
//! source.set_schema(table("public", "users"), TestSource::columns(&[("id", "int8", true), ("name", "text", false)]));
//! source.add_row(table("public", "users"), row! {"id" => 1, "name" => "ann"});
//!
//! let engine = Engine::builder()
//!     .source("main", source.clone())
//!     .pipeline("main", table("public", "users"), IndexedTarget::builder().lookup_fields(["id"]).build(), PipelineOptions::default())
//!     .build()
//!     .expect("valid configuration");
//! engine.start().await.expect("starts");
//! assert!(engine.await_ready(Duration::from_secs(5)).await);
//!
//! // Query the running target: by lookup fields, all rows, and live changes.
//! let users = engine.get_target::<IndexedTarget>("main", &table("public", "users")).expect("registered");
//! assert_eq!(users.lookup(1).and_then(|r| r.get_string("name")).as_deref(), Some("ann"));
//! assert_eq!(users.all().len(), 1);
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let _listener = users.listen(move |old: Option<&laredo_core::Row>, new: Option<&laredo_core::Row>| {
//!     let _ = tx.send((old.cloned(), new.cloned()));
//! });
//! source.emit_insert(table("public", "users"), row! {"id" => 2, "name" => "bob"}).await;
//! let (old, new) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("listener called").expect("open");
//! assert_eq!((old, new), (None, Some(row! {"id" => 2, "name" => "bob"})));
//! engine.stop().await.expect("stops");
//! # }
//! ```

mod change;
mod dead_letter;
mod engine;
mod error;
mod listener;
mod observer;
mod pipeline;
mod position;
mod replay;
mod row;
mod snapshot;
mod source;
mod status;
mod table;
mod target;
pub mod time;
mod value;

// Only `SourceError` uses `Causes` (`Other` and its typed variants), until it keeps its
// cause as its `source()`.
pub(crate) use crate::error::Causes;

pub use crate::change::{ChangeAction, ChangeEvent};
pub use crate::dead_letter::{DeadLetterEntry, DeadLetterError, DeadLetterStore, ReplayOutcome};
pub use crate::engine::{
    ConfigError, ConfigErrors, DEFAULT_BUFFER_SIZE, DEFAULT_LAG_POLL_INTERVAL, DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_BACKOFF, DEFAULT_RETRY_BACKOFF_MAX, DEFAULT_TTL_SCAN_INTERVAL, Engine,
    EngineBuilder, EngineError, PipelineInfo, PipelineOptions, RestoreMismatch, RestoreOutcome,
    SnapshotOptions, SnapshotSummary, SourceRunInfo, TtlFn,
};
pub use crate::error::{BoxError, ErrorChain, PluginError};
pub use crate::listener::{ListenerHandle, Listeners};
pub use crate::observer::{CompositeObserver, EngineObserver, NullObserver};
pub use crate::pipeline::{PipelineFilter, PipelineTransform, filter_fn, transform_fn};
pub use crate::position::Position;
pub use crate::replay::{
    DEFAULT_REALTIME_ROWS_PER_SECOND, ReplayError, ReplayHandle, ReplayReport, ReplayState,
    ReplayStatus, SnapshotReplay,
};
pub use crate::row::{Row, RowLayout};
pub use crate::snapshot::{
    SnapshotDescriptor, SnapshotEntry, SnapshotError, SnapshotFilter, SnapshotMetadata,
    SnapshotSerializer, SnapshotStore, TableEntries, TableSnapshotInfo,
};
pub use crate::source::{BaselineSink, ChangeHandler, SourceError, SyncSource};
pub use crate::status::{
    BufferPolicy, ErrorPolicy, LagInfo, OrderingGuarantee, PipelineState, ReplaySpeed,
    SchemaChangeAction, SchemaChangeEvent, SchemaChangeResponse, SourceState, SyncMode,
    ValidationAction, ValidationError,
};
pub use crate::table::{
    ColumnDefinition, IndexDefinition, ParseTableError, TableIdentifier, primary_key_columns, table,
};
pub use crate::target::{
    ApplyError, Change, ChangeKind, DrainReason, FanoutControl, IndexError, IndexInfo,
    PRIMARY_INDEX, RowAccess, RowChange, RowListener, SnapshotTarget, SyncTarget, TargetError,
    TargetStatus,
};
pub use crate::value::{Value, ValueKind};
