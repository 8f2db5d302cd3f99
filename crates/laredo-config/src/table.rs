//! `tables[]`: which table of which source feeds which targets, and how.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::serde_duration;
use crate::store::{StoreKind, StoreLocation, one_or_many};

/// One `tables[]` entry: a table of a source and the targets it feeds. Each target
/// becomes one pipeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TableConfig {
    /// The id of a configured source (required).
    pub source: String,
    /// Schema name (required).
    pub schema: String,
    /// Table name (required).
    pub table: String,
    /// At least one target.
    pub targets: Vec<TargetConfig>,
    /// Row expiry; `None` means rows never expire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<TtlConfig>,
    /// Row-count validation.
    pub validation: TableValidationConfig,
}

/// How a row's expiry is found (`ttl.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TtlMode {
    /// The column `ttl.field` holds the expiry timestamp.
    #[default]
    Field,
    /// A function registered by the embedding application computes it.
    Computed,
}

/// `tables[].ttl`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TtlConfig {
    /// `field` (default) or `computed`.
    pub mode: TtlMode,
    /// The expiry column; required in `field` mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Expiry scanner cadence; `None` leaves it to the engine.
    #[serde(
        with = "serde_duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub check_interval: Option<Duration>,
}

/// What to do when a row count does not match (`validation.on_mismatch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MismatchAction {
    /// Log and report only.
    #[default]
    Warn,
    /// Reload the table.
    ReBaseline,
    /// Put the pipeline in ERROR.
    Error,
}

/// `tables[].validation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TableValidationConfig {
    /// Compare row counts after the baseline; default true.
    pub post_baseline_row_count: bool,
    /// Periodic row-count comparison.
    pub periodic_row_count: PeriodicRowCountConfig,
    /// Reaction to a mismatch; default `warn`.
    pub on_mismatch: MismatchAction,
}

impl Default for TableValidationConfig {
    fn default() -> Self {
        Self {
            post_baseline_row_count: true,
            periodic_row_count: PeriodicRowCountConfig::default(),
            on_mismatch: MismatchAction::default(),
        }
    }
}

/// `validation.periodic_row_count`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct PeriodicRowCountConfig {
    /// Default false.
    pub enabled: bool,
    /// Default 1h.
    #[serde(with = "serde_duration")]
    pub interval: Duration,
}

impl Default for PeriodicRowCountConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: Duration::from_secs(3_600),
        }
    }
}

/// One target of a table: the type-specific part plus the keys every target has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TargetConfig {
    /// The `type` key and the type-specific keys.
    #[serde(flatten)]
    pub kind: TargetKind,
    /// The pipeline buffer.
    pub buffer: BufferConfig,
    /// Retries, dead letters and the error policy.
    pub error_handling: ErrorHandlingConfig,
    /// Filters, in order; all run before any transform.
    pub filters: Vec<FilterConfig>,
    /// Transforms, in order, after the filters.
    pub transforms: Vec<TransformConfig>,
}

/// The target type and its own keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum TargetKind {
    /// `type = indexed-memory`.
    #[serde(rename = "indexed-memory")]
    IndexedMemory(IndexedMemoryConfig),
    /// `type = compiled-memory`.
    #[serde(rename = "compiled-memory")]
    CompiledMemory(CompiledMemoryConfig),
    /// `type = replication-fanout`.
    #[serde(rename = "replication-fanout")]
    ReplicationFanout(FanoutTargetConfig),
    /// `type = http-sync`.
    #[serde(rename = "http-sync")]
    HttpSync(HttpSyncConfig),
}

impl Default for TargetKind {
    fn default() -> Self {
        Self::IndexedMemory(IndexedMemoryConfig::default())
    }
}

impl TargetKind {
    /// The `type` name, such as `indexed-memory`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::IndexedMemory(_) => "indexed-memory",
            Self::CompiledMemory(_) => "compiled-memory",
            Self::ReplicationFanout(_) => "replication-fanout",
            Self::HttpSync(_) => "http-sync",
        }
    }
}

/// `type = indexed-memory`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct IndexedMemoryConfig {
    /// Fields of the unique primary lookup index (required, non-empty).
    pub lookup_fields: Vec<String>,
    /// Further indexes.
    pub additional_indexes: Vec<IndexConfig>,
}

/// `additional_indexes[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct IndexConfig {
    /// Index name (required).
    pub name: String,
    /// Indexed fields (required, non-empty).
    pub fields: Vec<String>,
    /// Unique (key → row) or not (key → rows); default false.
    pub unique: bool,
}

/// `type = compiled-memory`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CompiledMemoryConfig {
    /// Name of a compiler registered by the embedding application (required).
    pub compiler: String,
    /// Fields of the composite key (required, non-empty).
    pub key_fields: Vec<String>,
    /// Optional prefix filter applied before compiling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<CompiledFilterConfig>,
}

/// `compiled-memory` `filter { field, prefix }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CompiledFilterConfig {
    /// The string field tested.
    pub field: String,
    /// The prefix it must start with.
    pub prefix: String,
}

/// `type = replication-fanout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct FanoutTargetConfig {
    /// Journal limits.
    pub journal: JournalConfig,
    /// In-memory snapshots served to clients.
    pub snapshot: FanoutSnapshotConfig,
    /// Client cap for this target; default 1,000; 0 means unlimited. One more client
    /// is refused with `RESOURCE_EXHAUSTED` naming `max_clients`.
    pub max_clients: u32,
    /// Per-client send queue.
    pub client_buffer: ClientBufferConfig,
    /// Heartbeat after this long without data; default 5s.
    #[serde(with = "serde_duration")]
    pub heartbeat_interval: Duration,
    /// Cold-tier archive for clients older than the journal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<FanoutArchiveConfig>,
}

impl Default for FanoutTargetConfig {
    fn default() -> Self {
        Self {
            journal: JournalConfig::default(),
            snapshot: FanoutSnapshotConfig::default(),
            max_clients: 1_000,
            client_buffer: ClientBufferConfig::default(),
            heartbeat_interval: Duration::from_secs(5),
            archive: None,
        }
    }
}

/// `journal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct JournalConfig {
    /// Entries kept; default 1,000,000.
    pub max_entries: u64,
    /// Age limit; default 24h.
    #[serde(with = "serde_duration")]
    pub max_age: Duration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            max_entries: 1_000_000,
            max_age: Duration::from_secs(24 * 3_600),
        }
    }
}

/// Fan-out `snapshot`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct FanoutSnapshotConfig {
    /// Snapshot cadence; 0 (default) disables periodic snapshots.
    #[serde(with = "serde_duration")]
    pub interval: Duration,
    /// Which snapshots are kept.
    pub retention: FanoutRetentionConfig,
}

/// Fan-out `snapshot.retention`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct FanoutRetentionConfig {
    /// Snapshots kept, newest first; default 3; 0 means unbounded (set explicitly).
    pub keep_count: u32,
    /// Age limit (the newest snapshot is always kept); default 24h; 0 means none (set
    /// explicitly).
    #[serde(with = "serde_duration")]
    pub max_age: Duration,
}

impl Default for FanoutRetentionConfig {
    fn default() -> Self {
        Self {
            keep_count: 3,
            max_age: Duration::from_secs(24 * 3_600),
        }
    }
}

/// What a full client queue does (`client_buffer.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientBufferPolicy {
    /// Disconnect the client, which reconnects and resumes.
    #[default]
    DropDisconnect,
    /// Block the client's stream; its pin holds the journal.
    SlowDown,
}

/// `client_buffer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ClientBufferConfig {
    /// Queue capacity; default 50000.
    pub max_size: u64,
    /// Default `drop_disconnect`.
    pub policy: ClientBufferPolicy,
}

impl Default for ClientBufferConfig {
    fn default() -> Self {
        Self {
            max_size: 50_000,
            policy: ClientBufferPolicy::default(),
        }
    }
}

/// Fan-out `archive` (cold tier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct FanoutArchiveConfig {
    /// `local` or `s3` (required).
    pub store: StoreKind,
    /// Archive location; S3 uses ambient credentials only.
    pub store_config: StoreLocation,
    /// Artifact formats, tried in order; default `[jsonl]`.
    #[serde(deserialize_with = "one_or_many")]
    pub format: Vec<String>,
    /// Must match the writer's prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}

impl Default for FanoutArchiveConfig {
    fn default() -> Self {
        Self {
            store: StoreKind::Local,
            store_config: StoreLocation::default(),
            format: vec!["jsonl".to_owned()],
            key_prefix: None,
        }
    }
}

/// `type = http-sync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct HttpSyncConfig {
    /// Endpoint root (required).
    pub base_url: String,
    /// Flush threshold in rows or changes; default 500.
    pub batch_size: u32,
    /// Time-based flush; default 200ms.
    #[serde(with = "serde_duration")]
    pub flush_interval: Duration,
    /// Per-request timeout, key `timeout_ms`; default 5000.
    #[serde(rename = "timeout_ms", with = "serde_duration::millis")]
    pub timeout: Duration,
    /// Retries per request; default 3.
    pub retry_count: u32,
    /// Initial retry backoff, key `retry_backoff_ms`; default 500.
    #[serde(rename = "retry_backoff_ms", with = "serde_duration::millis")]
    pub retry_backoff: Duration,
    /// Sent as `Authorization`; redacted in dumps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_header: Option<String>,
    /// Extra headers on every request.
    pub headers: BTreeMap<String, String>,
}

impl Default for HttpSyncConfig {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            batch_size: 500,
            flush_interval: Duration::from_millis(200),
            timeout: Duration::from_millis(5_000),
            retry_count: 3,
            retry_backoff: Duration::from_millis(500),
            auth_header: None,
            headers: BTreeMap::new(),
        }
    }
}

/// What a full pipeline buffer does (`buffer.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BufferPolicy {
    /// The source waits for space (no loss; slows every pipeline of the source).
    #[default]
    Block,
    /// Evict the oldest change (latest-state-wins targets only).
    DropOldest,
    /// Fail the change and apply the error policy.
    Error,
}

/// `buffer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct BufferConfig {
    /// Capacity, at least 1; default 10000.
    pub max_size: u64,
    /// Default `block`.
    pub policy: BufferPolicy,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            max_size: 10_000,
            policy: BufferPolicy::default(),
        }
    }
}

/// What happens when retries are exhausted (`on_persistent_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorPolicy {
    /// The pipeline goes to ERROR; the others continue.
    #[default]
    Isolate,
    /// Every pipeline of the source stops.
    StopSource,
    /// The whole engine stops.
    StopAll,
}

/// `error_handling`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ErrorHandlingConfig {
    /// Retries after the first failure; default 5.
    pub max_retries: u32,
    /// First retry delay, key `retry_backoff_ms`; default 1000.
    #[serde(rename = "retry_backoff_ms", with = "serde_duration::millis")]
    pub retry_backoff: Duration,
    /// Retry delay cap, key `retry_backoff_max_ms`; default 30000.
    #[serde(rename = "retry_backoff_max_ms", with = "serde_duration::millis")]
    pub retry_backoff_max: Duration,
    /// Default `isolate`.
    pub on_persistent_failure: ErrorPolicy,
    /// Where changes go when retries are exhausted.
    pub dead_letter: DeadLetterConfig,
}

impl Default for ErrorHandlingConfig {
    fn default() -> Self {
        Self {
            max_retries: 5,
            retry_backoff: Duration::from_millis(1_000),
            retry_backoff_max: Duration::from_millis(30_000),
            on_persistent_failure: ErrorPolicy::default(),
            dead_letter: DeadLetterConfig::default(),
        }
    }
}

/// Dead-letter store kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeadLetterStoreKind {
    /// In memory (lost on restart).
    #[default]
    Memory,
    /// `<path>/<pipeline>.jsonl` files.
    Local,
    /// Objects under `prefix` in `bucket`.
    S3,
}

/// `error_handling.dead_letter`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct DeadLetterConfig {
    /// Default false.
    pub enabled: bool,
    /// Default `memory`.
    pub store: DeadLetterStoreKind,
    /// `path` (local) or `bucket`, `prefix` (default `dead-letters/`), `region` (s3).
    pub config: StoreLocation,
}

/// `filters[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum FilterConfig {
    /// `field-equals { field, value }`.
    #[serde(rename = "field-equals")]
    FieldEquals {
        /// The field tested.
        field: String,
        /// The value it must equal (compared with numeric normalisation).
        value: serde_json::Value,
    },
    /// `field-prefix { field, prefix }`.
    #[serde(rename = "field-prefix")]
    FieldPrefix {
        /// The string field tested.
        field: String,
        /// The prefix it must start with.
        prefix: String,
    },
    /// `field-regex { field, pattern }`; the pattern is checked at load time.
    #[serde(rename = "field-regex")]
    FieldRegex {
        /// The string field tested.
        field: String,
        /// A regular expression (Rust `regex` syntax).
        pattern: String,
    },
}

/// `transforms[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum TransformConfig {
    /// `drop-fields { fields }`.
    #[serde(rename = "drop-fields")]
    DropFields {
        /// Fields removed from every row.
        fields: Vec<String>,
    },
    /// `rename-fields { mapping { old = new } }`.
    #[serde(rename = "rename-fields")]
    RenameFields {
        /// Old name → new name.
        mapping: BTreeMap<String, String>,
    },
    /// `add-timestamp { field }`.
    #[serde(rename = "add-timestamp")]
    AddTimestamp {
        /// Field set to the current UTC time.
        field: String,
    },
}
