//! In-memory targets: live, queryable replicas of a table inside the process.
//!
//! - [`IndexedTarget`] (`indexed-memory`): the table's rows with a unique lookup index
//!   and optional secondary indexes (unique or not); `lookup`, `get`, `lookup_all`,
//!   `all`, `count` and `listen`. Rows are held as compact encoded byte strings in a
//!   slab and indexes store slot numbers, so memory stays close to the raw data size.
//! - [`CompiledTarget`] (`compiled-memory`): typed domain objects built from each row
//!   by a compiler function, keyed by key fields, with an optional filter.
//!
//! Both are written by the engine's pipeline task and read from any thread: one lock
//! covers rows and indexes, so a reader never sees a change half applied. Listeners
//! run on the writer's task after each change is visible.
//!
//! ```
//! use laredo_core::{row, table, ColumnDefinition, IndexDefinition, SyncTarget};
//! use laredo_target_memory::IndexedTarget;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let users = IndexedTarget::builder()
//!     .lookup_fields(["email"])
//!     .index(IndexDefinition::new("by_team", ["team"], false))
//!     .build();
//! let t = table("public", "users");
//! let columns = vec![
//!     ColumnDefinition::new("id", "int8").primary_key(1),
//!     ColumnDefinition::new("email", "text"),
//!     ColumnDefinition::new("team", "text"),
//! ];
//! users.on_init(&t, &columns).await.unwrap();
//! users.on_insert(&t, &row! {"id" => 1, "email" => "a@x", "team" => "red"}).await.unwrap();
//! users.on_insert(&t, &row! {"id" => 2, "email" => "b@x", "team" => "red"}).await.unwrap();
//!
//! assert_eq!(users.lookup("a@x").and_then(|r| r.get_i64("id")), Some(1));
//! assert_eq!(users.get(2).and_then(|r| r.get_string("email")).as_deref(), Some("b@x"));
//! assert_eq!(users.lookup_all("by_team", "red").unwrap().len(), 2);
//! # }
//! ```

mod codec;
mod compiled;
mod indexed;
mod key;
mod listener;

pub use crate::compiled::{CompiledTarget, CompiledTargetBuilder};
pub use crate::indexed::{
    IndexError, IndexInfo, IndexedTarget, IndexedTargetBuilder, PRIMARY_INDEX,
};
pub use crate::key::IntoKey;
pub use crate::listener::ListenerHandle;
