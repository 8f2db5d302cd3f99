//! [`LaredoConfig`]: the whole configuration, and how it is loaded.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ConfigError, ConfigErrors, KeyPath};
use crate::load::{LoadOptions, merged_tree};
use crate::server::{
    FanoutConfig, GrpcConfig, HealthConfig, ObservabilityConfig, ShutdownConfig, SnapshotConfig,
};
use crate::source::SourceConfig;
use crate::table::{TableConfig, TargetKind};

/// The whole laredo configuration, validated.
///
/// Build it with [`LaredoConfig::load`] (files, fragments, environment, overrides) or
/// from text with [`str::parse`]; both return every problem at once. Deserializing it
/// directly with serde skips validation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct LaredoConfig {
    /// Serve the gRPC ports without authentication when no token is configured.
    /// Default false: without any token laredo-server refuses to start. Meant for a
    /// laptop or the demo; every start then logs a warning.
    pub insecure: bool,
    /// Sources by id.
    pub sources: BTreeMap<String, SourceConfig>,
    /// Tables and their targets; one pipeline per target.
    pub tables: Vec<TableConfig>,
    /// Engine-level snapshots.
    pub snapshot: SnapshotConfig,
    /// OAM + Query gRPC listener.
    pub grpc: GrpcConfig,
    /// Replication (fan-out) listener.
    pub fanout: FanoutConfig,
    /// Health HTTP endpoints.
    pub health: HealthConfig,
    /// Metrics and logs.
    pub observability: ObservabilityConfig,
    /// Shutdown limits.
    pub shutdown: ShutdownConfig,
}

impl LaredoConfig {
    /// Loads every layer of `options`, merges them and validates the result.
    ///
    /// # Errors
    ///
    /// Every problem found: unreadable or malformed files, unresolved substitutions,
    /// malformed overrides, and each validation problem with its key path.
    pub fn load(options: LoadOptions) -> Result<Self, ConfigErrors> {
        let tree = merged_tree(&options).map_err(ConfigErrors::new)?;
        Self::from_json(tree)
    }

    /// Validates an already-merged JSON tree (for embedding applications that build
    /// their configuration some other way).
    ///
    /// # Errors
    ///
    /// Every validation problem, each with its key path.
    pub fn from_json(mut tree: Value) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        crate::validate::check(
            &crate::schema::ROOT,
            &mut tree,
            &KeyPath::root(),
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(ConfigErrors::new(errors));
        }
        serde_json::from_value(tree).map_err(|error| {
            // The schema accepted the tree, so this is a disagreement between the
            // schema and the structs: report it rather than panic.
            ConfigErrors::from(ConfigError::at(
                "",
                format!("internal configuration error: {error}"),
            ))
        })
    }

    /// Whether any table has a `replication-fanout` target (the replication listener
    /// is started only then).
    pub fn has_fanout_target(&self) -> bool {
        self.tables
            .iter()
            .flat_map(|t| &t.targets)
            .any(|t| matches!(t.kind, TargetKind::ReplicationFanout(_)))
    }

    /// The configuration as JSON, with defaults filled in and secrets replaced by
    /// `***` (source `connection`, `auth_header`, and any key containing `password`,
    /// `secret` or `token`). Empty values stay empty.
    pub fn to_json(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        crate::dump::redact(&mut value);
        value
    }

    /// [`to_json`](Self::to_json) as pretty-printed text.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string_pretty(&self.to_json()).unwrap_or_default()
    }

    /// The configuration as HOCON, with defaults filled in and secrets redacted like
    /// [`to_json`](Self::to_json). Without secrets it parses back to an equal config.
    pub fn to_hocon_string(&self) -> String {
        crate::dump::to_hocon(&self.to_json())
    }
}

impl FromStr for LaredoConfig {
    type Err = ConfigErrors;

    /// Parses and validates HOCON text with no other layer and an empty environment.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::load(LoadOptions::new().text(text))
    }
}
