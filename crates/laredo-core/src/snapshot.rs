//! Engine snapshot types and the [`SnapshotStore`] / [`SnapshotSerializer`] traits.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::PluginError;
use crate::row::Row;
use crate::table::{ColumnDefinition, IndexDefinition, TableIdentifier};
use crate::value::Value;

/// One row of a table snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    /// The row.
    pub row: Row,
}

/// What a snapshot holds for one table (one pipeline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSnapshotInfo {
    /// The table.
    pub table: TableIdentifier,
    /// Rows in the snapshot.
    pub row_count: u64,
    /// The table's columns.
    pub columns: Vec<ColumnDefinition>,
    /// The type name of the target the rows came from.
    pub target_type: String,
    /// The target's indexes, when it has any.
    pub indexes: Vec<IndexDefinition>,
}

/// A snapshot's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotMetadata {
    /// `snap-<unix-nanos>`.
    pub snapshot_id: String,
    /// Creation time, microseconds since the Unix epoch.
    pub created_at_micros: i64,
    /// Source id → position, in each source's own text form.
    pub source_positions: BTreeMap<String, String>,
    /// The tables held.
    pub tables: Vec<TableSnapshotInfo>,
    /// The serializer's format id.
    pub format: String,
    /// Caller-supplied metadata.
    pub user_meta: BTreeMap<String, Value>,
}

/// A stored snapshot, as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotDescriptor {
    /// The id.
    pub snapshot_id: String,
    /// Creation time, microseconds since the Unix epoch.
    pub created_at_micros: i64,
    /// The serializer's format id.
    pub format: String,
    /// The tables held.
    pub tables: Vec<TableSnapshotInfo>,
    /// Stored size.
    pub size_bytes: u64,
    /// Each source's position at the snapshot (as in [`SnapshotMetadata`]), so a
    /// listing shows where each snapshot stands.
    #[serde(default)]
    pub source_positions: BTreeMap<String, String>,
}

/// Narrows a snapshot listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Only snapshots holding this table.
    pub table: Option<TableIdentifier>,
}

/// A snapshot store or serializer error; the message names what failed and the cause
/// is the [`source`](std::error::Error::source). A missing snapshot is
/// [`PluginError::not_found`].
pub type SnapshotError = PluginError;

/// Entries per table, keyed like `TableSnapshotInfo` order.
pub type TableEntries = Vec<(TableSnapshotInfo, Vec<SnapshotEntry>)>;

/// Durable storage for engine snapshots.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Stores a snapshot atomically.
    ///
    /// # Errors
    /// When it cannot be stored; nothing partial is listed afterwards.
    async fn save(
        &self,
        metadata: &SnapshotMetadata,
        tables: &TableEntries,
    ) -> Result<SnapshotDescriptor, SnapshotError>;
    /// Loads a snapshot.
    ///
    /// # Errors
    /// When it is missing or unreadable.
    async fn load(
        &self,
        snapshot_id: &str,
    ) -> Result<(SnapshotMetadata, TableEntries), SnapshotError>;
    /// A snapshot's metadata (positions, tables, user metadata) without its rows. The
    /// default loads the whole snapshot; stores override it to read only the metadata.
    ///
    /// # Errors
    /// When it is missing or unreadable.
    async fn read_metadata(&self, snapshot_id: &str) -> Result<SnapshotMetadata, SnapshotError> {
        self.load(snapshot_id).await.map(|(metadata, _)| metadata)
    }
    /// Describes a snapshot without loading rows.
    ///
    /// # Errors
    /// When it is missing or unreadable.
    async fn describe(&self, snapshot_id: &str) -> Result<SnapshotDescriptor, SnapshotError>;
    /// Lists snapshots, newest first.
    ///
    /// # Errors
    /// When the store cannot be listed.
    async fn list(&self, filter: &SnapshotFilter)
    -> Result<Vec<SnapshotDescriptor>, SnapshotError>;
    /// Deletes a snapshot.
    ///
    /// # Errors
    /// When it is missing or cannot be removed.
    async fn delete(&self, snapshot_id: &str) -> Result<(), SnapshotError>;
    /// Keeps the newest `keep` snapshots (of `table`, when given) and deletes the rest;
    /// returns how many were deleted.
    ///
    /// # Errors
    /// When listing or deleting fails.
    async fn prune(
        &self,
        keep: usize,
        table: Option<&TableIdentifier>,
    ) -> Result<usize, SnapshotError>;
}

/// Writes and reads one table's snapshot rows in a format.
pub trait SnapshotSerializer: Send + Sync {
    /// The format id (`jsonl`).
    fn format_id(&self) -> &str;
    /// Writes a table's rows.
    ///
    /// # Errors
    /// When writing fails.
    fn write(
        &self,
        info: &TableSnapshotInfo,
        entries: &[SnapshotEntry],
        writer: &mut dyn Write,
    ) -> Result<(), SnapshotError>;
    /// Reads a table's rows.
    ///
    /// # Errors
    /// When the input is empty or malformed.
    fn read(
        &self,
        reader: &mut dyn Read,
    ) -> Result<(TableSnapshotInfo, Vec<SnapshotEntry>), SnapshotError>;
}
