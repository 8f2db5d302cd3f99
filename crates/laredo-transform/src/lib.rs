//! Built-in pipeline transforms: rewrite a row's columns on its way into a target.
//!
//! Transforms sit in a pipeline after the filters: the engine runs them in declaration
//! order on baseline rows and the new values of inserts and updates, never on a delete's
//! identity.
//!
//! | Config `type`   | Type             | Output row                                     |
//! |-----------------|------------------|------------------------------------------------|
//! | `drop-fields`   | [`DropFields`]   | the row without the listed columns             |
//! | `rename-fields` | [`RenameFields`] | the row with columns renamed, order kept       |
//! | `add-timestamp` | [`AddTimestamp`] | the row with a column set to now (UTC)         |
//!
//! Transforms run per row on the hot path. Each one remembers the last input
//! [`RowLayout`](laredo_core::RowLayout) it saw and the output layout derived from it, so
//! rows that share a layout (every row a source emits for one table) share one output
//! layout too, instead of allocating column names per row.
//!
//! ```
//! use laredo_core::{row, table, PipelineTransform, Value};
//! use laredo_transform::{AddTimestamp, DropFields, RenameFields};
//!
//! let users = table("public", "users");
//! let row = row! {"id" => 1, "name" => "ann", "password" => "secret"};
//!
//! let row = DropFields::new(["password"]).transform(&users, row).expect("kept");
//! let row = RenameFields::new([("name", "display_name")]).transform(&users, row).expect("kept");
//! assert_eq!(row, row! {"id" => 1, "display_name" => "ann"});
//!
//! let row = AddTimestamp::new("synced_at").transform(&users, row).expect("kept");
//! assert!(matches!(row.get("synced_at"), Some(Value::TimestampTz(_))));
//! ```

mod drop;
mod layout_cache;
mod rename;
mod timestamp;

pub use crate::drop::DropFields;
pub use crate::rename::RenameFields;
pub use crate::timestamp::AddTimestamp;
