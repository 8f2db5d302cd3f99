//! PostgreSQL source for laredo: a consistent baseline, then the `pgoutput` logical
//! replication stream.
//!
//! [`PgSource`] is the [`SyncSource`](laredo_core::SyncSource): ephemeral or stateful
//! replication slots, publication management, the exported-snapshot baseline handoff,
//! streaming with reconnects that neither lose nor repeat a change, and recovery from a
//! dropped or invalidated slot by a re-baseline. `docs/pg-source.md` describes the
//! behaviour in full; `docs/pg-types.md` maps each PostgreSQL type to a
//! [`Value`](laredo_core::Value).
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use laredo_core::{Engine, PipelineOptions, table};
//! use laredo_source_pg::{PgSource, PgSourceConfig, PublicationConfig, SlotMode};
//! use laredo_target_memory::IndexedTarget;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let source = PgSource::new(
//!     PgSourceConfig::new("postgresql://user:pass@localhost:5432/mydb")
//!         .slot_mode(SlotMode::Ephemeral)
//!         .publication(PublicationConfig::new("laredo_pub").create_missing(true)),
//! )?;
//! let users = table("public", "users");
//! let engine = Engine::builder()
//!     .source("pg_main", Arc::new(source))
//!     .pipeline(
//!         "pg_main",
//!         users.clone(),
//!         IndexedTarget::builder().lookup_fields(["id"]).build(),
//!         PipelineOptions::default(),
//!     )
//!     .build()?;
//! engine.start().await?;
//! engine.await_ready(Duration::from_secs(30)).await;
//! let target = engine
//!     .get_target::<IndexedTarget>("pg_main", &users)
//!     .ok_or("no target")?;
//! if let Some(row) = target.lookup("user-123") {
//!     println!("name: {}", row.get_string("name").unwrap_or_default());
//! }
//! engine.stop().await?;
//! # Ok(())
//! # }
//! ```
//!
//! The public face is [`PgSource`] and its settings ([`PgSourceConfig`],
//! [`PublicationConfig`], [`SlotMode`], [`ReconnectPolicy`]; TLS is read from the
//! connection string into [`TlsSettings`], with [`SslMode`] and [`SslNegotiation`] as
//! libpq defines them), plus [`format_lsn`] and [`parse_lsn`] for PostgreSQL's LSN
//! text. The parts under it are private modules: `pgoutput` (the message decoder),
//! `types` and `binary` (text and binary values to [`Value`](laredo_core::Value)),
//! `catalog` (columns, validation, publications), `baseline` (the streamed COPY),
//! `replication` (slot creation with an exported snapshot), `tls` and `relay` (libpq's
//! `sslmode` semantics on rustls, for both connections), and `source` (the
//! [`SyncSource`](laredo_core::SyncSource) itself: sessions, slot, reconnects,
//! decoding).
//!
//! TLS is always compiled in (rustls with the aws-lc-rs provider, as tonic in this
//! workspace); the connection string's `sslmode`, `sslrootcert`, `sslcert` and `sslkey`
//! choose it, as with libpq.

mod baseline;
mod binary;
mod catalog;
mod config;
mod pgoutput;
mod relay;
mod replication;
mod source;
mod tls;
mod types;

pub use crate::catalog::PublicationConfig;
pub use crate::config::{PgSourceConfig, ReconnectPolicy, SlotMode};
#[doc(hidden)]
pub use crate::source::MessageDecoder;
pub use crate::source::{PgSource, format_lsn, parse_lsn};
pub use crate::tls::{SslMode, SslNegotiation, TlsSettings};

/// The parts under [`PgSource`], for this crate's integration tests and benches, which
/// drive them against a real server. Not part of the API: hidden from the docs, no
/// stability promise.
#[doc(hidden)]
pub mod internals {
    /// The `pgoutput` message decoder.
    pub mod pgoutput {
        pub use crate::pgoutput::{DecodeError, Message, OldTuple, TupleValue, decode};
    }
    /// Text values.
    pub mod types {
        pub use crate::types::{SESSION_SETTINGS, TypeError, parse_text};
    }
    /// Binary values.
    pub mod binary {
        pub use crate::binary::parse_binary;
    }
    /// Catalog queries and publications.
    pub mod catalog {
        pub use crate::catalog::{
            CatalogError, MANAGED_COMMENT, PublicationConfig, discover_columns, drop_publication,
            publication_tables, server_problem, sync_publication, validate_server, validate_tables,
        };
    }
    /// The baseline's COPY reader.
    pub mod baseline {
        pub use crate::baseline::{BaselineError, TableCopy};
    }
    /// Slot creation with an exported snapshot.
    pub mod replication {
        pub use crate::replication::{ConnectionParams, create_slot_with_snapshot};
    }
}
