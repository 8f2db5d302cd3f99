//! The snapshot replays started over OAM (`StartReplay`), by replay id.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use laredo_core::{ReplayHandle, ReplayState};
use parking_lot::Mutex;

/// Finished replays kept for `GetReplayStatus`, beyond which the oldest finished one
/// is forgotten (running replays are always kept).
const KEEP_FINISHED: usize = 32;

/// Replays by id, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Replays {
    entries: Mutex<VecDeque<(String, Arc<ReplayHandle>)>>,
}

impl Replays {
    /// Registers a started replay under a fresh id,
    /// `replay-<pipeline>-<snapshot>-<unix-ms>` (bumped by a millisecond while taken),
    /// and returns the id.
    pub(crate) fn insert(&self, pipeline_id: &str, handle: ReplayHandle) -> String {
        let mut millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let mut entries = self.entries.lock();
        let id = loop {
            let id = format!("replay-{pipeline_id}-{}-{millis}", handle.snapshot_id());
            if !entries.iter().any(|(taken, _)| *taken == id) {
                break id;
            }
            millis += 1;
        };
        entries.push_back((id.clone(), Arc::new(handle)));
        let finished = |h: &ReplayHandle| h.status().state != ReplayState::Running;
        while entries.iter().filter(|(_, h)| finished(h)).count() > KEEP_FINISHED {
            let Some(oldest) = entries.iter().position(|(_, h)| finished(h)) else {
                break;
            };
            entries.remove(oldest);
        }
        id
    }

    /// The replay with this id.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<ReplayHandle>> {
        self.entries
            .lock()
            .iter()
            .find(|(taken, _)| taken == id)
            .map(|(_, handle)| Arc::clone(handle))
    }
}
