//! Dead-letter stores: where a pipeline parks the changes its target could not apply.
//!
//! When the engine has retried a change up to the pipeline's `max_retries` and a
//! [`DeadLetterStore`](laredo_core::DeadLetterStore) is configured, it writes a
//! [`DeadLetterEntry`](laredo_core::DeadLetterEntry) here and then applies the error
//! policy. Operators list, replay (re-apply to the target, removing what succeeds) and
//! purge entries per pipeline through the OAM service.
//!
//! | Store `store =` | Type                      | Keeps entries                                        |
//! |-----------------|---------------------------|------------------------------------------------------|
//! | `memory`        | [`MemoryDeadLetterStore`] | in a map from pipeline id to entries, until restart  |
//! | `local`         | [`LocalDeadLetterStore`]  | in `<base>/<pipeline>.jsonl`, one JSON entry a line  |
//!
//! Ids are assigned by the store, increasing per pipeline from 1.
//!
//! ```
//! use laredo_core::{row, table, ChangeEvent, DeadLetterEntry, DeadLetterStore, Position};
//! use laredo_deadletter::{LocalDeadLetterStore, MemoryDeadLetterStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let change = ChangeEvent::insert(table("public", "users"), Position::from_u64(7), row! {"id" => 1});
//! let entry = DeadLetterEntry::new("main:public.users:indexed-memory", &change, "0/7", "target unavailable");
//!
//! let memory = MemoryDeadLetterStore::new();
//! assert_eq!(memory.write(entry.clone()).await.expect("stored"), 1);
//! assert_eq!(memory.count("main:public.users:indexed-memory").await.expect("counted"), 1);
//!
//! let dir = tempfile::tempdir().expect("temp dir");
//! let local = LocalDeadLetterStore::new(dir.path().join("dead-letters"));
//! assert_eq!(local.write(entry).await.expect("stored"), 1);
//! let parked = local.read("main:public.users:indexed-memory", 0).await.expect("read");
//! assert_eq!(parked[0].error, "target unavailable");
//! # }
//! ```

mod local;
mod memory;

pub use crate::local::LocalDeadLetterStore;
pub use crate::memory::MemoryDeadLetterStore;
