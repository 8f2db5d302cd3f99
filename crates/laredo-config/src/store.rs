//! Store locations shared by archive sources, fan-out archives, snapshots and dead
//! letters, and the "one string or a list" helper.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

/// Where an archive or snapshot store keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StoreKind {
    /// A local directory (`store_config.path`).
    #[default]
    Local,
    /// An S3 bucket (`store_config.bucket`, `prefix`, `region`), with ambient credentials.
    S3,
}

/// `store_config` / `config`: a local path or an S3 location.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct StoreLocation {
    /// Local directory (alias `directory`).
    #[serde(alias = "directory", skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// S3 bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// S3 key prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// AWS region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Accepts `"a"` or `["a", "b"]`.
pub(crate) fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}
