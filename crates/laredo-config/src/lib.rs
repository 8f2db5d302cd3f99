//! HOCON configuration for laredo: layered loading, typed structs, and validation that
//! reports every problem at once with its key path.
//!
//! This crate sits before the engine: `laredo-server` loads a [`LaredoConfig`] here and
//! maps it to sources, targets and pipelines. Nothing here builds engine objects or
//! depends on source or target crates.
//!
//! Layers, later wins (see [`LoadOptions`]): built-in defaults, the main file (or
//! `LAREDO_CONFIG`), the init dir's `*.conf`, the conf dir's `*.conf` (default
//! `conf.d` next to the main file), `LAREDO_*` environment variables (`LAREDO_GRPC_PORT`
//! → `grpc.port`), then `--set key=value` overrides. `${VAR}` substitutions fall back
//! to the given environment. The full key reference is `docs/configuration.md`, generated
//! from this crate's schema and typed defaults by `cargo xtask codegen`
//! ([`configuration_reference`]).
//!
//! ```
//! use std::time::Duration;
//! use laredo_config::{LaredoConfig, LoadOptions, SourceConfig};
//!
//! let text = r#"
//!     sources.pg_main { type = postgresql, connection = ${PG_URL}, slot_mode = stateful }
//!     tables = [{
//!       source = pg_main, schema = public, table = users
//!       targets = [{ type = indexed-memory, lookup_fields = [id] }]
//!     }]
//!     shutdown.timeout = 30s
//! "#;
//! let config = LaredoConfig::load(
//!     LoadOptions::new()
//!         .text(text)
//!         .env([("PG_URL", "postgres://laredo@db/app"), ("LAREDO_GRPC_PORT", "5001")])
//!         .set("health.http_port=8081"),
//! )?;
//! assert_eq!(config.grpc.port, 5001);
//! assert_eq!(config.health.http_port, 8081);
//! assert_eq!(config.shutdown.timeout, Duration::from_secs(30));
//! let SourceConfig::Postgres(pg) = &config.sources["pg_main"] else { panic!("pg") };
//! assert_eq!(pg.publication_name(), "laredo_slot_pub");
//! assert!(config.to_hocon_string().contains(r#"connection = "***""#));
//!
//! // Every problem at once, each with its key path.
//! let errors = "tables = [{ source = nope, schema = s, table = t, targets = [] }]"
//!     .parse::<LaredoConfig>()
//!     .unwrap_err();
//! assert_eq!(errors.to_string(), "\
//! tables[0]: at least one target is required
//! at least one source is required
//! tables[0]: references unknown source \"nope\"");
//! # Ok::<(), laredo_config::ConfigErrors>(())
//! ```

mod checks;
mod config;
mod dump;
mod duration;
mod env;
mod error;
mod load;
mod reference;
mod schema;
mod server;
mod source;
mod store;
mod table;
mod validate;

pub use crate::config::LaredoConfig;
pub use crate::dump::REDACTED;
pub use crate::duration::{format_duration, parse_duration};
pub use crate::env::ENV_PREFIX;
pub use crate::error::{ConfigError, ConfigErrors};
pub use crate::load::{
    CONFIG_ENV_VAR, DEFAULT_CONF_DIR, DEFAULT_CONFIG_PATH, DEFAULT_INIT_DIR, LoadOptions,
};
pub use crate::reference::configuration_reference;
pub use crate::server::{
    DEFAULT_BIND, DEFAULT_FANOUT_PORT, DEFAULT_GRPC_PORT, DEFAULT_HEALTH_PORT,
    DEFAULT_METRICS_PORT, FanoutConfig, FanoutGrpcConfig, GrpcAuthConfig, GrpcConfig,
    GrpcLimitsConfig, GrpcWebConfig, HealthConfig, LogFormat, LogLevel, LoggingConfig,
    MetricsConfig, MetricsKind, ObservabilityConfig, OtelConfig, OtelExporter, RestoreMismatch,
    ShutdownConfig, SnapshotConfig, SnapshotRetentionConfig, TlsConfig,
};
pub use crate::source::{
    ArchiveSourceConfig, DEFAULT_PUBLISH, DEFAULT_SLOT_NAME, KinesisSourceConfig, PgSourceConfig,
    PublicationConfig, PublicationTableConfig, ReconnectConfig, SlotMode, SourceConfig,
};
pub use crate::store::{StoreKind, StoreLocation};
pub use crate::table::{
    BufferConfig, BufferPolicy, ClientBufferConfig, ClientBufferPolicy, CompiledFilterConfig,
    CompiledMemoryConfig, DeadLetterConfig, DeadLetterStoreKind, ErrorHandlingConfig, ErrorPolicy,
    FanoutArchiveConfig, FanoutRetentionConfig, FanoutSnapshotConfig, FanoutTargetConfig,
    FilterConfig, HttpSyncConfig, IndexConfig, IndexedMemoryConfig, JournalConfig, MismatchAction,
    PeriodicRowCountConfig, TableConfig, TableValidationConfig, TargetConfig, TargetKind,
    TransformConfig, TtlConfig, TtlMode,
};
