//! Listener registries: [`Listeners`] for targets that call back readers after their
//! writes ([`RowAccess::subscribe`](crate::RowAccess::subscribe), the in-memory
//! targets' `listen`), and the [`ListenerHandle`] that keeps one registered.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

/// The registered callbacks of one target; `L` is the callback type (for example
/// [`RowListener`](crate::RowListener)).
///
/// A writer checks [`Listeners::is_empty`] before it builds notifications (one atomic
/// load), then calls each of [`Listeners::snapshot`] outside its own locks.
///
/// ```
/// use std::sync::Arc;
/// use laredo_core::Listeners;
///
/// let listeners: Arc<Listeners<dyn Fn(i64) + Send + Sync>> = Listeners::new();
/// let handle = listeners.add(Arc::new(|n| println!("{n}")));
/// for listener in listeners.snapshot() {
///     listener(7);
/// }
/// drop(handle); // unsubscribes
/// assert!(listeners.is_empty());
/// ```
pub struct Listeners<L: ?Sized> {
    entries: Mutex<Vec<(u64, Arc<L>)>>,
    next_id: AtomicU64,
    len: AtomicUsize,
}

impl<L: ?Sized> std::fmt::Debug for Listeners<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners")
            .field("len", &self.len.load(Ordering::Acquire))
            .finish()
    }
}

impl<L: ?Sized + Send + Sync + 'static> Listeners<L> {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            len: AtomicUsize::new(0),
        })
    }

    /// Whether anyone listens (checked before building notifications).
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// The current listeners, cloned so they are called outside the registry's lock.
    pub fn snapshot(&self) -> Vec<Arc<L>> {
        self.entries
            .lock()
            .iter()
            .map(|(_, l)| Arc::clone(l))
            .collect()
    }

    /// Registers `listener` while the returned handle lives.
    pub fn add(self: &Arc<Self>, listener: Arc<L>) -> ListenerHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.lock();
        entries.push((id, listener));
        self.len.store(entries.len(), Ordering::Release);
        drop(entries);
        let registry: Weak<Self> = Arc::downgrade(self);
        ListenerHandle::new(move || {
            if let Some(registry) = registry.upgrade() {
                registry.remove(id);
            }
        })
    }

    fn remove(&self, id: u64) {
        let mut entries = self.entries.lock();
        entries.retain(|(entry_id, _)| *entry_id != id);
        self.len.store(entries.len(), Ordering::Release);
    }

    /// Removes every listener (a target's `on_close`); their handles become no-ops.
    pub fn clear(&self) {
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
    /// A handle that calls `unsubscribe` once, when it is dropped or
    /// [`ListenerHandle::unsubscribe`]d (never after [`ListenerHandle::forget`]).
    pub fn new(unsubscribe: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self {
            unsubscribe: Some(Box::new(unsubscribe)),
        }
    }

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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;

    use super::*;

    type Counter = dyn Fn(i64) + Send + Sync;

    #[test]
    fn a_listener_is_called_until_its_handle_goes() {
        let listeners: Arc<Listeners<Counter>> = Listeners::new();
        let seen = Arc::new(AtomicI64::new(0));
        let total = Arc::clone(&seen);
        let handle = listeners.add(Arc::new(move |n| {
            total.fetch_add(n, Ordering::SeqCst);
        }));
        assert!(!listeners.is_empty());
        listeners.snapshot().iter().for_each(|l| l(2));
        handle.unsubscribe();
        assert!(listeners.is_empty());
        listeners.snapshot().iter().for_each(|l| l(5));
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_forgotten_handle_keeps_its_listener_until_cleared() {
        let listeners: Arc<Listeners<Counter>> = Listeners::new();
        listeners.add(Arc::new(|_| {})).forget();
        let kept = listeners.add(Arc::new(|_| {}));
        assert_eq!(listeners.snapshot().len(), 2);
        listeners.clear();
        assert!(listeners.is_empty());
        drop(kept);
        assert!(listeners.snapshot().is_empty());
    }
}
