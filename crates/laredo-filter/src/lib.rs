//! Built-in pipeline filters: keep a row only when one of its fields matches.
//!
//! Filters sit in a pipeline between the source and the target: the engine runs a
//! pipeline's filters in declaration order, before any transform, and the first `false`
//! drops the row. They see baseline rows, the new values of inserts and updates, and the
//! identity (old values) of deletes.
//!
//! | Config `type`  | Type            | Keeps a row when                                   |
//! |----------------|-----------------|----------------------------------------------------|
//! | `field-equals` | [`FieldEquals`] | the field is present and equal (numbers normalised) |
//! | `field-prefix` | [`FieldPrefix`] | the field is text and starts with the prefix        |
//! | `field-regex`  | [`FieldRegex`]  | the field is text and the pattern matches in it     |
//!
//! A delete often carries only the key columns as its identity. Every filter here lets
//! such an identity through when it lacks the filtered field
//! ([`PipelineFilter::include_identity`]): the target then deletes by key, a no-op for a
//! row it never held, instead of keeping a stale row.
//!
//! ```
//! use laredo_core::{row, table, PipelineFilter};
//! use laredo_filter::{FieldEquals, FieldPrefix, FieldRegex};
//!
//! let users = table("public", "users");
//! let active = FieldEquals::new("status", "active");
//! assert!(active.include(&users, &row! {"id" => 1, "status" => "active"}));
//! assert!(!active.include(&users, &row! {"id" => 2, "status" => "banned"}));
//! // A delete's identity without the field still passes.
//! assert!(active.include_identity(&users, &row! {"id" => 2}));
//!
//! let tenant = FieldPrefix::new("tenant", "eu-");
//! assert!(tenant.include(&users, &row! {"tenant" => "eu-west"}));
//!
//! let email = FieldRegex::new("email", r"@example\.com$").expect("valid pattern");
//! assert!(email.include(&users, &row! {"email" => "ann@example.com"}));
//! assert!(FieldRegex::new("email", "(").is_err());
//! ```
//!
//! [`PipelineFilter::include_identity`]: laredo_core::PipelineFilter::include_identity

mod equals;
mod error;
mod pattern;
mod prefix;

pub use crate::equals::FieldEquals;
pub use crate::error::FilterError;
pub use crate::pattern::FieldRegex;
pub use crate::prefix::FieldPrefix;
