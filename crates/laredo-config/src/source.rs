//! `sources.<id>`: where changes come from.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::serde_duration;
use crate::store::{StoreKind, StoreLocation, one_or_many};

/// Default replication slot name (`sources.<id>.slot_name`).
pub const DEFAULT_SLOT_NAME: &str = "laredo_slot";
/// Default `publication.publish` operations.
pub const DEFAULT_PUBLISH: &str = "insert, update, delete, truncate";

/// One configured source, chosen by its `type` key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum SourceConfig {
    /// `type = postgresql` (alias `pg`): logical replication with `pgoutput`.
    #[serde(rename = "postgresql", alias = "pg")]
    Postgres(PgSourceConfig),
    /// `type = s3-kinesis`: an S3 JSONL baseline plus a Kinesis change stream.
    #[serde(rename = "s3-kinesis")]
    Kinesis(KinesisSourceConfig),
    /// `type = archive` (alias `file`): replays a snapshotter archive.
    #[serde(rename = "archive", alias = "file")]
    Archive(ArchiveSourceConfig),
}

impl SourceConfig {
    /// The canonical `type` name: `postgresql`, `s3-kinesis` or `archive`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgresql",
            Self::Kinesis(_) => "s3-kinesis",
            Self::Archive(_) => "archive",
        }
    }
}

/// Replication slot lifetime (`slot_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SlotMode {
    /// A temporary slot, dropped when the connection closes; a full baseline on every start.
    #[default]
    Ephemeral,
    /// A persistent named slot that survives restarts; resumes from its confirmed LSN.
    Stateful,
}

/// `type = postgresql`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct PgSourceConfig {
    /// libpq connection URI or `key=value` string (required), TLS keys (`sslmode`,
    /// `sslrootcert`, `sslcert`, `sslkey`, ...) included. Redacted in dumps as a whole.
    pub connection: String,
    /// Slot lifetime; default `ephemeral`.
    pub slot_mode: SlotMode,
    /// Slot name; default `laredo_slot`.
    pub slot_name: String,
    /// Full baseline on every start even when a stateful slot could resume.
    pub always_baseline: bool,
    /// The publication the slot streams.
    pub publication: PublicationConfig,
    /// Reconnect policy after a lost connection.
    pub reconnect: ReconnectConfig,
    /// How many times in a row the replication message at one position may fail to
    /// decode before the source stops naming it; default 5.
    pub max_protocol_failures: u32,
}

impl Default for PgSourceConfig {
    fn default() -> Self {
        Self {
            connection: String::new(),
            slot_mode: SlotMode::default(),
            slot_name: DEFAULT_SLOT_NAME.to_owned(),
            always_baseline: false,
            publication: PublicationConfig::default(),
            reconnect: ReconnectConfig::default(),
            max_protocol_failures: 5,
        }
    }
}

impl PgSourceConfig {
    /// The publication name: `publication.name`, or `{slot_name}_pub` when unset.
    pub fn publication_name(&self) -> String {
        self.publication
            .name
            .clone()
            .unwrap_or_else(|| format!("{}_pub", self.slot_name))
    }
}

/// `sources.<id>.publication`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct PublicationConfig {
    /// Publication name; `None` means `{slot_name}_pub`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Create the publication when missing and keep the table list of a publication
    /// laredo created in step; default false (it must exist, and is never altered).
    pub create: bool,
    /// With `create`, also take over an existing publication laredo did not create
    /// (altered to match the configuration); default false.
    pub adopt_existing: bool,
    /// Operations published; default `"insert, update, delete, truncate"`.
    pub publish: String,
    /// PostgreSQL 15+ row filters and column lists, keyed by `"schema.table"`.
    pub tables: BTreeMap<String, PublicationTableConfig>,
}

impl Default for PublicationConfig {
    fn default() -> Self {
        Self {
            name: None,
            create: false,
            adopt_existing: false,
            publish: DEFAULT_PUBLISH.to_owned(),
            tables: BTreeMap::new(),
        }
    }
}

/// `publication.tables."schema.table"`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct PublicationTableConfig {
    /// Row filter expression (`WHERE (...)`), passed through as written.
    #[serde(rename = "where", skip_serializing_if = "Option::is_none")]
    pub row_filter: Option<String>,
    /// Published columns; `None` means all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
}

/// `sources.<id>.reconnect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ReconnectConfig {
    /// Attempts before the source goes to ERROR; default 10 (0 means the default).
    pub max_attempts: u32,
    /// First delay; default 1s.
    #[serde(with = "serde_duration")]
    pub initial_backoff: Duration,
    /// Delay cap; default 60s.
    #[serde(with = "serde_duration")]
    pub max_backoff: Duration,
    /// Growth factor per attempt; default 2.0.
    pub backoff_multiplier: f64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            backoff_multiplier: 2.0,
        }
    }
}

/// `type = s3-kinesis`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct KinesisSourceConfig {
    /// Baseline location, `s3://bucket/prefix/` (required).
    pub baseline_bucket: String,
    /// Baseline format; default `jsonl`.
    pub baseline_format: String,
    /// The Kinesis stream ARN (required).
    pub stream_arn: String,
    /// Consumer group name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<String>,
    /// `dynamodb://table`: enables resume from a checkpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_table: Option<String>,
    /// AWS region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl Default for KinesisSourceConfig {
    fn default() -> Self {
        Self {
            baseline_bucket: String::new(),
            baseline_format: "jsonl".to_owned(),
            stream_arn: String::new(),
            consumer_group: None,
            checkpoint_table: None,
            region: None,
        }
    }
}

/// `type = archive`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ArchiveSourceConfig {
    /// Where the archive lives (required).
    pub store: StoreKind,
    /// `path` (local) or `bucket`, `prefix`, `region` (s3).
    pub store_config: StoreLocation,
    /// Artifact formats, tried in order; default `[jsonl]`. A single string is accepted.
    #[serde(deserialize_with = "one_or_many")]
    pub format: Vec<String>,
    /// Key prefix, which must match the writer's (required unless `group`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// Primary key fields; default `[id]`. A single string is accepted.
    #[serde(deserialize_with = "one_or_many")]
    pub key_fields: Vec<String>,
    /// Keep polling the manifest after reaching its head.
    pub follow: bool,
    /// Manifest polling cadence when following; default 5s.
    #[serde(with = "serde_duration")]
    pub poll_interval: Duration,
    /// Resume file (a directory when `group`); unset means re-baseline on every start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_path: Option<PathBuf>,
    /// One source per referencing table, with id `<id>/<schema>.<table>`.
    pub group: bool,
}

impl Default for ArchiveSourceConfig {
    fn default() -> Self {
        Self {
            store: StoreKind::Local,
            store_config: StoreLocation::default(),
            format: vec!["jsonl".to_owned()],
            key_prefix: None,
            key_fields: vec!["id".to_owned()],
            follow: false,
            poll_interval: Duration::from_secs(5),
            state_path: None,
            group: false,
        }
    }
}
