//! [`CountingTarget`] and [`memory_kib`]: for measuring laredo's own memory while
//! changes stream into a target that keeps nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use laredo_core::{
    ColumnDefinition, Row, SchemaChangeResponse, SyncTarget, TableIdentifier, TargetError,
};

/// A target that counts streamed inserts and keeps no rows, so memory growth while it
/// runs is the engine's and the source's own. Always durable; accepts schema changes.
#[derive(Debug, Default)]
pub struct CountingTarget {
    inserts: AtomicU64,
}

impl CountingTarget {
    /// Inserts applied so far.
    pub fn inserts(&self) -> u64 {
        self.inserts.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl SyncTarget for CountingTarget {
    fn type_name(&self) -> &str {
        "counting"
    }
    async fn on_baseline_row(&self, _: &TableIdentifier, _: &Row) -> Result<(), TargetError> {
        Ok(())
    }
    async fn on_insert(&self, _: &TableIdentifier, _: &Row) -> Result<(), TargetError> {
        self.inserts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn on_update(
        &self,
        _: &TableIdentifier,
        _: &Row,
        _: Option<&Row>,
    ) -> Result<(), TargetError> {
        Ok(())
    }
    async fn on_delete(&self, _: &TableIdentifier, _: &Row) -> Result<(), TargetError> {
        Ok(())
    }
    async fn on_truncate(&self, _: &TableIdentifier) -> Result<(), TargetError> {
        Ok(())
    }
    fn is_durable(&self) -> bool {
        true
    }
    async fn on_schema_change(
        &self,
        _: &TableIdentifier,
        _: &[ColumnDefinition],
        _: &[ColumnDefinition],
    ) -> SchemaChangeResponse {
        SchemaChangeResponse::proceed()
    }
}

/// This process's memory figure `field` from `/proc/self/status` in KiB: `VmRSS`
/// (resident now) or `VmHWM` (peak resident).
///
/// # Panics
/// When `/proc/self/status` lacks the field (not Linux).
pub fn memory_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("memory field")
}
