//! Listener registries shared by the targets.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

/// Registered callbacks of one target.
pub(crate) struct Registry<L: ?Sized> {
    entries: Mutex<Vec<(u64, Arc<L>)>>,
    next_id: AtomicU64,
    len: AtomicUsize,
}

impl<L: ?Sized + Send + Sync + 'static> Registry<L> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            len: AtomicUsize::new(0),
        })
    }

    /// Whether anyone listens (checked before building notifications).
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// The current listeners, cloned so they are called outside the registry's lock.
    pub(crate) fn snapshot(&self) -> Vec<Arc<L>> {
        self.entries
            .lock()
            .iter()
            .map(|(_, l)| Arc::clone(l))
            .collect()
    }

    pub(crate) fn add(self: &Arc<Self>, listener: Arc<L>) -> ListenerHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.lock();
        entries.push((id, listener));
        self.len.store(entries.len(), Ordering::Release);
        drop(entries);
        let registry: Weak<Self> = Arc::downgrade(self);
        ListenerHandle {
            unsubscribe: Some(Box::new(move || {
                if let Some(registry) = registry.upgrade() {
                    registry.remove(id);
                }
            })),
        }
    }

    fn remove(&self, id: u64) {
        let mut entries = self.entries.lock();
        entries.retain(|(entry_id, _)| *entry_id != id);
        self.len.store(entries.len(), Ordering::Release);
    }

    pub(crate) fn clear(&self) {
        let mut entries = self.entries.lock();
        entries.clear();
        self.len.store(0, Ordering::Release);
    }
}

/// Keeps a listener registered; dropping it (or [`ListenerHandle::unsubscribe`])
/// removes the listener.
#[must_use = "dropping the handle unsubscribes the listener at once"]
pub struct ListenerHandle {
    unsubscribe: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl ListenerHandle {
    /// Removes the listener.
    pub fn unsubscribe(mut self) {
        if let Some(f) = self.unsubscribe.take() {
            f();
        }
    }

    /// Keeps the listener registered for the target's lifetime.
    pub fn forget(mut self) {
        self.unsubscribe = None;
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        if let Some(f) = self.unsubscribe.take() {
            f();
        }
    }
}

impl std::fmt::Debug for ListenerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerHandle")
            .field("active", &self.unsubscribe.is_some())
            .finish()
    }
}
