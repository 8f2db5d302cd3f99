//! Engine-level snapshots and the blocks `laredo-server` reads: listeners, health,
//! observability and shutdown.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::serde_duration;
use crate::store::{StoreKind, StoreLocation};

/// Default OAM + Query gRPC port.
pub const DEFAULT_GRPC_PORT: u16 = 4001;
/// Default fan-out replication gRPC port.
pub const DEFAULT_FANOUT_PORT: u16 = 4002;
/// Default health HTTP port.
pub const DEFAULT_HEALTH_PORT: u16 = 8080;
/// Default Prometheus metrics port.
pub const DEFAULT_METRICS_PORT: u16 = 9090;

/// What to do when a snapshot's `user_meta` does not match on restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RestoreMismatch {
    /// Restore anyway and warn.
    #[default]
    Warn,
    /// Refuse the snapshot.
    Reject,
}

/// `snapshot`: engine-level snapshots of every pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SnapshotConfig {
    /// Default false.
    pub enabled: bool,
    /// `local` or `s3`; required when enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreKind>,
    /// Store location (alias `config`, whose `directory` is an alias of `path`).
    #[serde(alias = "config")]
    pub store_config: StoreLocation,
    /// Serializer; default `jsonl`.
    pub serializer: String,
    /// Periodic snapshot cadence (`6h` or `every 6h`); `None` means no schedule.
    #[serde(
        with = "serde_duration::schedule",
        skip_serializing_if = "Option::is_none"
    )]
    pub schedule: Option<Duration>,
    /// Take a snapshot during shutdown; default false.
    pub on_shutdown: bool,
    /// Pruning.
    pub retention: SnapshotRetentionConfig,
    /// Stored with every snapshot.
    pub user_meta: serde_json::Map<String, serde_json::Value>,
    /// `user_meta` compatibility on restore; default `warn`.
    pub on_restore_mismatch: RestoreMismatch,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            store: None,
            store_config: StoreLocation::default(),
            serializer: "jsonl".to_owned(),
            schedule: None,
            on_shutdown: false,
            retention: SnapshotRetentionConfig::default(),
            user_meta: serde_json::Map::new(),
            on_restore_mismatch: RestoreMismatch::default(),
        }
    }
}

/// `snapshot.retention`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SnapshotRetentionConfig {
    /// Keep the newest N; 0 (default) keeps all.
    pub keep_count: u32,
    /// Prune snapshots older than this.
    #[serde(
        with = "serde_duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age: Option<Duration>,
}

/// Default bind address of every listener: all interfaces.
pub const DEFAULT_BIND: &str = "0.0.0.0";

fn default_bind() -> String {
    DEFAULT_BIND.to_owned()
}

/// `grpc`: the OAM + Query listener, and the settings the fan-out listener shares
/// (TLS, auth, gRPC-Web).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct GrpcConfig {
    /// Default 4001. 0 picks a free port.
    pub port: u16,
    /// Address to listen on; default `0.0.0.0` (every interface).
    pub bind: String,
    /// TLS from PEM files.
    pub tls: TlsConfig,
    /// Bearer-token roles (`admin`, `read`).
    pub auth: GrpcAuthConfig,
    /// gRPC-Web and CORS for browsers.
    pub web: GrpcWebConfig,
    /// Limits of this port; unset keys take the defaults.
    pub limits: GrpcLimitsConfig,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            port: DEFAULT_GRPC_PORT,
            bind: default_bind(),
            tls: TlsConfig::default(),
            auth: GrpcAuthConfig::default(),
            web: GrpcWebConfig::default(),
            limits: GrpcLimitsConfig::default(),
        }
    }
}

/// `grpc.tls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TlsConfig {
    /// Default false.
    pub enabled: bool,
    /// PEM certificate chain; required when enabled.
    pub cert_path: PathBuf,
    /// PEM private key; required when enabled.
    pub key_path: PathBuf,
}

/// `grpc.auth`: tokens of the two roles, for both gRPC ports. An `admin` token may
/// call every method; a `read` token every method but the admin ones. Without any
/// token the server refuses to start unless `insecure = true`. Tokens are redacted in
/// dumps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct GrpcAuthConfig {
    /// One admin token (also `LAREDO_GRPC_AUTH_ADMIN_TOKEN`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// More admin tokens (rotation: old and new side by side).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub admin_tokens: Vec<String>,
    /// Files holding one admin token each (a mounted secret); read at startup, surrounding
    /// whitespace trimmed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub admin_token_files: Vec<PathBuf>,
    /// One read token (also `LAREDO_GRPC_AUTH_READ_TOKEN`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_token: Option<String>,
    /// More read tokens.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub read_tokens: Vec<String>,
    /// Files holding one read token each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub read_token_files: Vec<PathBuf>,
    /// Method paths (`/package.Service/Method`, or `/package.Service/` for a whole
    /// service) that need the admin role in addition to the OAM methods that change
    /// state.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub admin_methods: Vec<String>,
}

/// `grpc.web`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct GrpcWebConfig {
    /// Accept gRPC-Web; default false.
    pub enabled: bool,
    /// Origins allowed by CORS; empty means none.
    pub cors_allowed_origins: Vec<String>,
}

/// `grpc.limits` and `fanout.grpc.limits`: what one port allows a client. Unset keys
/// take the port's defaults (see docs/configuration.md); every limit answers with a
/// gRPC status naming it or ends the offending connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct GrpcLimitsConfig {
    /// Connections open at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Calls (HTTP/2 streams) open at once per connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
    /// Largest request header block, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_header_list_size: Option<u32>,
    /// Largest request message, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<usize>,
    /// HTTP/2 ping interval.
    #[serde(
        with = "serde_duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered.
    #[serde(
        with = "serde_duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub keepalive_timeout: Option<Duration>,
    /// Streams a client may reset before the server took them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending_accept_reset_streams: Option<usize>,
    /// Streams the server may reset for a client's protocol errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_local_error_reset_streams: Option<usize>,
    /// Calls a client may cancel per connection within 10 s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cancelled_calls: Option<u32>,
    /// How long a unary call may take.
    #[serde(
        with = "serde_duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_timeout: Option<Duration>,
    /// A connection with no call for this long is closed.
    #[serde(
        with = "serde_duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive idle time and probe interval.
    #[serde(
        with = "serde_duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub tcp_keepalive: Option<Duration>,
}

/// `fanout`: the replication listener, shared by every fan-out target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct FanoutConfig {
    /// `fanout.grpc`.
    pub grpc: FanoutGrpcConfig,
}

/// `fanout.grpc`: the replication listener's own address and limits; TLS, auth and
/// gRPC-Web come from `grpc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct FanoutGrpcConfig {
    /// Default 4002; started only when a `replication-fanout` target exists.
    pub port: u16,
    /// Address to listen on; default `0.0.0.0`.
    pub bind: String,
    /// Limits of this port; unset keys take the fan-out port's defaults.
    pub limits: GrpcLimitsConfig,
}

impl Default for FanoutGrpcConfig {
    fn default() -> Self {
        Self {
            port: DEFAULT_FANOUT_PORT,
            bind: default_bind(),
            limits: GrpcLimitsConfig::default(),
        }
    }
}

/// `health`: the HTTP probe endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct HealthConfig {
    /// Default 8080.
    pub http_port: u16,
    /// Address to listen on; default `0.0.0.0`.
    pub bind: String,
    /// Default `/health/ready`.
    pub readiness_path: String,
    /// Default `/health/live`.
    pub liveness_path: String,
    /// Default `/health/startup`.
    pub startup_path: String,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            http_port: DEFAULT_HEALTH_PORT,
            bind: default_bind(),
            readiness_path: "/health/ready".to_owned(),
            liveness_path: "/health/live".to_owned(),
            startup_path: "/health/startup".to_owned(),
        }
    }
}

/// `observability`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ObservabilityConfig {
    /// Metrics export.
    pub metrics: MetricsConfig,
    /// Logs.
    pub logging: LoggingConfig,
}

/// Metrics backend (`observability.metrics.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MetricsKind {
    /// Prometheus exposition on `port` and `path`.
    #[default]
    Prometheus,
    /// OpenTelemetry.
    Otel,
}

/// `observability.metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// Default `prometheus`.
    #[serde(rename = "type")]
    pub kind: MetricsKind,
    /// Dedicated metrics port; default 9090 (`/metrics` is also on the health port).
    pub port: u16,
    /// Address the metrics port listens on; default `0.0.0.0`.
    pub bind: String,
    /// Default `/metrics`.
    pub path: String,
    /// OpenTelemetry settings, used when `type = otel`.
    pub otel: OtelConfig,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            kind: MetricsKind::default(),
            port: DEFAULT_METRICS_PORT,
            bind: default_bind(),
            path: "/metrics".to_owned(),
            otel: OtelConfig::default(),
        }
    }
}

/// OpenTelemetry exporter (`observability.metrics.otel.exporter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OtelExporter {
    /// Print to stdout.
    #[default]
    Stdout,
    /// OTLP to `endpoint`.
    Otlp,
}

/// `observability.metrics.otel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct OtelConfig {
    /// Default `stdout`.
    pub exporter: OtelExporter,
    /// OTLP endpoint; required for `otlp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Export cadence; default 10s.
    #[serde(with = "serde_duration")]
    pub interval: Duration,
}

impl Default for OtelConfig {
    fn default() -> Self {
        Self {
            exporter: OtelExporter::default(),
            endpoint: None,
            interval: Duration::from_secs(10),
        }
    }
}

/// Log format (`observability.logging.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LogFormat {
    /// JSON lines on stderr.
    #[default]
    Structured,
    /// Human-readable lines on stderr.
    Text,
}

/// Log level (`observability.logging.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LogLevel {
    /// Per batch.
    Debug,
    /// Lifecycle.
    #[default]
    Info,
    /// Unexpected but recovered.
    Warn,
    /// An operator must act.
    Error,
}

/// `observability.logging`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct LoggingConfig {
    /// `structured` (default) or `text`.
    #[serde(rename = "type")]
    pub format: LogFormat,
    /// Default `info`.
    pub level: LogLevel,
}

/// `shutdown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ShutdownConfig {
    /// Cap on the whole shutdown; default 120s.
    #[serde(with = "serde_duration")]
    pub timeout: Duration,
    /// Fan-out drain time; default 10s.
    #[serde(with = "serde_duration")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(10),
        }
    }
}
