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
//! The building blocks are public too: [`pgoutput`] (the message decoder), [`types`]
//! (text values), [`catalog`] (columns, validation, publications), [`baseline`] (the
//! streamed COPY), [`replication`] (slot creation with an exported snapshot) and
//! [`tls`] (libpq's `sslmode` semantics on rustls, for both connections).
//!
//! TLS is always compiled in (rustls with the aws-lc-rs provider, as tonic in this
//! workspace); the connection string's `sslmode`, `sslrootcert`, `sslcert` and `sslkey`
//! choose it, as with libpq.

pub mod baseline;
pub mod binary;
pub mod catalog;
pub mod config;
pub mod pgoutput;
mod relay;
pub mod replication;
mod source;
pub mod tls;
pub mod types;

pub use crate::catalog::PublicationConfig;
pub use crate::config::{PgSourceConfig, ReconnectPolicy, SlotMode};
pub use crate::source::{MessageDecoder, PgSource, format_lsn, parse_lsn};
pub use crate::tls::{SslMode, SslNegotiation, TlsSettings};
