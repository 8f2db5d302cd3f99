//! The in-memory dead-letter store.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use laredo_core::{DeadLetterEntry, DeadLetterError, DeadLetterStore};
use parking_lot::Mutex;

/// Keeps dead letters in memory, in a map from pipeline id to its entries (oldest
/// first). Entries are lost on restart; use [`LocalDeadLetterStore`] to keep them.
///
/// Ids increase per pipeline from 1 and are never reused within the store's lifetime,
/// not even after a purge.
///
/// [`LocalDeadLetterStore`]: crate::LocalDeadLetterStore
#[derive(Debug, Default)]
pub struct MemoryDeadLetterStore {
    pipelines: Mutex<HashMap<String, Pipeline>>,
}

#[derive(Debug, Default)]
struct Pipeline {
    /// The last id handed out (0 = none yet).
    last_id: u64,
    entries: Vec<DeadLetterEntry>,
}

impl MemoryDeadLetterStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl DeadLetterStore for MemoryDeadLetterStore {
    async fn write(&self, mut entry: DeadLetterEntry) -> Result<u64, DeadLetterError> {
        let mut pipelines = self.pipelines.lock();
        let pipeline = pipelines.entry(entry.pipeline_id.clone()).or_default();
        pipeline.last_id += 1;
        entry.id = pipeline.last_id;
        pipeline.entries.push(entry);
        Ok(pipeline.last_id)
    }

    async fn read(
        &self,
        pipeline_id: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetterEntry>, DeadLetterError> {
        let pipelines = self.pipelines.lock();
        let Some(pipeline) = pipelines.get(pipeline_id) else {
            return Ok(Vec::new());
        };
        let take = if limit == 0 {
            pipeline.entries.len()
        } else {
            limit
        };
        Ok(pipeline.entries.iter().take(take).cloned().collect())
    }

    async fn remove(&self, pipeline_id: &str, ids: &[u64]) -> Result<(), DeadLetterError> {
        let ids: HashSet<u64> = ids.iter().copied().collect();
        if let Some(pipeline) = self.pipelines.lock().get_mut(pipeline_id) {
            pipeline.entries.retain(|e| !ids.contains(&e.id));
        }
        Ok(())
    }

    async fn purge(&self, pipeline_id: &str) -> Result<(), DeadLetterError> {
        // The pipeline's record stays so that its ids keep increasing.
        if let Some(pipeline) = self.pipelines.lock().get_mut(pipeline_id) {
            pipeline.entries.clear();
        }
        Ok(())
    }

    async fn count(&self, pipeline_id: &str) -> Result<u64, DeadLetterError> {
        let pipelines = self.pipelines.lock();
        Ok(pipelines
            .get(pipeline_id)
            .map_or(0, |p| p.entries.len() as u64))
    }
}
