//! Laredo's indexed row store: a table's rows held in memory, compactly, with a unique
//! key, a lookup index, secondary indexes and an ordered index of the keys.
//!
//! Where it sits: below the readers of a table replica. laredo-target-memory's
//! `IndexedTarget` wraps [`IndexedRows`] as an engine target; laredo-client-fanout
//! keeps its local replica of a fan-out table in one. Both read it the same way
//! (lookups by key or index, pages in key order, listeners), so the store's layout and
//! its tuning live here once.
//!
//! - Each row is one compact byte string in a slab (`codec.rs`: tagged values, zigzag
//!   varints, booleans in the tag), decoded on read.
//! - Every index is a `hashbrown::HashTable` of slot numbers with 32 bits of the key's
//!   hash (`index.rs`); key bytes are never stored. A non-unique index links the rows
//!   of a key in a list, so adding or removing a row is O(1) however many share it.
//! - An ordered index of the keys (`store.rs`, built on the first ordered read) pages
//!   in key order ([`sort_key`]) reading only the page's rows.
//! - Keys are anything [`IntoKey`] and compare by canonical key bytes
//!   ([`Value::write_key`](laredo_core::Value::write_key)), so numeric kinds normalise.
//!
//! [`IndexedRows`] implements laredo-core's [`RowAccess`](laredo_core::RowAccess), so a
//! service can read it (and whatever wraps it) without knowing its type.
//!
//! ```
//! use laredo_core::{Change, ColumnDefinition, RowAccess, row, table};
//! use laredo_index::IndexedRows;
//!
//! let rows = IndexedRows::new(vec!["email".into()], vec![]);
//! let columns = [
//!     ColumnDefinition::new("id", "int8").primary_key(1),
//!     ColumnDefinition::new("email", "text"),
//! ];
//! rows.configure(&table("public", "users"), &columns).expect("columns fit");
//! let _listener = rows.listen(|old, new| println!("{old:?} -> {new:?}"));
//! rows.load(&[row! {"id" => 1, "email" => "a@x"}, row! {"id" => 2, "email" => "b@x"}])
//!     .expect("stored");
//! rows.apply(&[Change::delete(row! {"id" => 1})]).expect("applied");
//!
//! assert_eq!(rows.lookup("b@x"), Some(row! {"id" => 2, "email" => "b@x"}));
//! assert_eq!(rows.get(1), None);
//! assert_eq!(RowAccess::count(&rows), 1);
//! ```

mod codec;
mod index;
mod key;
mod order;
mod rows;
mod slab;
mod store;

pub use crate::key::IntoKey;
pub use crate::order::{sort_key, write_sort_key};
pub use crate::rows::{Error, IndexedRows};
