//! In-memory targets: live, queryable replicas of a table inside the process.
//!
//! Where they sit: the engine's pipeline task applies the baseline and every change of
//! one table to a target through [`SyncTarget`](laredo_core::SyncTarget); the embedding
//! application keeps an `Arc` of the same target and queries it from any thread.
//!
//! - [`IndexedTarget`] (`indexed-memory`): the table's raw rows with a unique lookup
//!   index and optional secondary indexes (unique or not): `lookup`, `get`,
//!   `lookup_all`, `all`, `count` and `listen`. Each row is held once, as one compact
//!   byte string in a slab, and indexes hold slot numbers, so memory stays close to the
//!   raw size of the values (about 1.4 times it for a typical ten-column table). The
//!   store is laredo-index's `IndexedRows`, shared with laredo-client-fanout.
//! - [`CompiledTarget`] (`compiled-memory`): typed domain objects built from each row by
//!   a compiler function, keyed by key fields, with an optional filter;
//!   [`CompiledTarget::serialized`] reads them as rows ([`CompiledRows`]) for readers
//!   that cannot know their type.
//!
//! Both implement laredo-core's [`RowAccess`](laredo_core::RowAccess), so services
//! (the Query service, OAM's index report) read them without depending on this crate.
//!
//! Keys are anything [`IntoKey`]: `target.lookup("user-123")`, `target.lookup(7)`,
//! `target.lookup((1, "a"))`. They compare by canonical key bytes
//! ([`Value::write_key`](laredo_core::Value::write_key)), so numeric kinds normalise.
//!
//! One lock covers each target's rows and indexes, so a reader never sees a change half
//! applied. Listeners run on the writer's task right after each change becomes visible
//! (outside the lock: a listener may read the target), in change order.
//!
//! ```
//! use laredo_core::{row, table, Change, ColumnDefinition, IndexDefinition, Row, SyncTarget};
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
//! // The engine makes these calls; here they are made by hand.
//! users.on_init(&t, &columns).await.expect("columns fit");
//! let _listener = users.listen(|old: Option<&Row>, new: Option<&Row>| {
//!     println!("{old:?} -> {new:?}");
//! });
//! users.apply(&t, &[
//!     Change::insert(row! {"id" => 1, "email" => "a@x", "team" => "red"}),
//!     Change::insert(row! {"id" => 2, "email" => "b@x", "team" => "red"}),
//! ]).await.expect("applied");
//!
//! assert_eq!(users.lookup("a@x").and_then(|r| r.get_i64("id")), Some(1));
//! assert_eq!(users.get(2).and_then(|r| r.get_string("email")).as_deref(), Some("b@x"));
//! assert_eq!(users.lookup_all("by_team", "red").expect("known index").len(), 2);
//! assert_eq!(users.count(), 2);
//! # }
//! ```
//!
//! A compiled target holds objects instead of rows:
//!
//! ```
//! use laredo_core::{row, table, Change, ColumnDefinition, Row, SyncTarget};
//! use laredo_target_memory::CompiledTarget;
//!
//! struct User { name: String }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let users = CompiledTarget::builder(|row: &Row| -> Result<User, String> {
//!     Ok(User { name: row.get_string("name").ok_or("no name")? })
//! })
//! .filter(|row| row.get_bool("active") == Some(true))
//! .build();
//! let t = table("public", "users");
//! let columns = vec![
//!     ColumnDefinition::new("id", "int8").primary_key(1),
//!     ColumnDefinition::new("name", "text"),
//!     ColumnDefinition::new("active", "bool"),
//! ];
//! users.on_init(&t, &columns).await.expect("columns fit");
//! users.apply(&t, &[
//!     Change::insert(row! {"id" => 1, "name" => "ann", "active" => true}),
//!     Change::insert(row! {"id" => 2, "name" => "bob", "active" => false}),
//! ]).await.expect("applied");
//!
//! assert_eq!(users.get(1).map(|u| u.name.clone()).as_deref(), Some("ann"));
//! assert_eq!(users.count(), 1);
//! # }
//! ```

mod compiled;
mod indexed;
mod serialized;

pub use crate::compiled::{CompiledTarget, CompiledTargetBuilder};
pub use crate::indexed::{IndexedTarget, IndexedTargetBuilder};
pub use crate::serialized::CompiledRows;
// The row store is laredo-index's, and the capability types are laredo-core's; they
// are re-exported so that this crate's API reads as before the store moved out.
pub use laredo_core::{IndexError, IndexInfo, ListenerHandle, PRIMARY_INDEX};
pub use laredo_index::{IntoKey, sort_key, write_sort_key};
