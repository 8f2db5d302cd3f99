//! Table identity and column metadata.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A table's identity: `schema.table`.
///
/// Cheap to clone (both parts are reference counted); hashable, ordered and usable as a
/// map key. Displays and parses as `schema.table` (the split is at the first `.`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableIdentifier {
    schema: Arc<str>,
    table: Arc<str>,
}

impl TableIdentifier {
    /// Builds an identifier from its two parts.
    pub fn new(schema: impl AsRef<str>, table: impl AsRef<str>) -> Self {
        Self {
            schema: Arc::from(schema.as_ref()),
            table: Arc::from(table.as_ref()),
        }
    }

    /// The schema part.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The table part.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// True when both parts share their allocations with `other`'s (a clone of the same
    /// identifier): a cheap positive check before comparing strings.
    pub(crate) fn same_allocation(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.schema, &other.schema) && Arc::ptr_eq(&self.table, &other.table)
    }
}

/// Shorthand for [`TableIdentifier::new`], as in the seed's `laredo.Table("public", "users")`.
pub fn table(schema: impl AsRef<str>, name: impl AsRef<str>) -> TableIdentifier {
    TableIdentifier::new(schema, name)
}

impl fmt::Display for TableIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// The error of parsing a [`TableIdentifier`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid table identifier {input:?}: expected schema.table")]
pub struct ParseTableError {
    input: String,
}

impl FromStr for TableIdentifier {
    type Err = ParseTableError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('.') {
            Some((schema, table)) if !schema.is_empty() && !table.is_empty() => {
                Ok(Self::new(schema, table))
            }
            _ => Err(ParseTableError {
                input: s.to_string(),
            }),
        }
    }
}

/// One column of a table, as the source discovered it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ColumnDefinition {
    /// Column name.
    pub name: String,
    /// Source type name (`int8`, `text`, `jsonb`, ...).
    pub type_name: String,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// Whether the column is part of the primary key.
    pub primary_key: bool,
    /// 1-based position in the table; 0 when unknown.
    pub ordinal_position: u32,
    /// 1-based position within a composite primary key; 0 when not a key column.
    pub primary_key_ordinal: u32,
    /// Default expression, if any.
    pub default_value: Option<String>,
    /// Maximum length (0 = unlimited).
    pub max_length: u32,
    /// Source type OID (0 = unknown).
    pub type_oid: u32,
}

impl ColumnDefinition {
    /// A nullable, non-key column.
    pub fn new(name: impl Into<String>, type_name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            type_name: type_name.into(),
            nullable: true,
            ..Self::default()
        }
    }

    /// Marks the column as the `ordinal`-th (1-based) primary key column; it becomes
    /// non-nullable.
    #[must_use]
    pub fn primary_key(mut self, ordinal: u32) -> Self {
        self.primary_key = true;
        self.primary_key_ordinal = ordinal;
        self.nullable = false;
        self
    }

    /// Sets the ordinal position.
    #[must_use]
    pub fn ordinal(mut self, ordinal: u32) -> Self {
        self.ordinal_position = ordinal;
        self
    }

    /// Sets the type OID.
    #[must_use]
    pub fn oid(mut self, type_oid: u32) -> Self {
        self.type_oid = type_oid;
        self
    }
}

/// The primary key column names of `columns`, ordered by key ordinal.
pub fn primary_key_columns(columns: &[ColumnDefinition]) -> Vec<&str> {
    let mut keys: Vec<&ColumnDefinition> = columns.iter().filter(|c| c.primary_key).collect();
    keys.sort_by_key(|c| c.primary_key_ordinal);
    keys.into_iter().map(|c| c.name.as_str()).collect()
}

/// A secondary index of an in-memory target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDefinition {
    /// Index name, unique per target.
    pub name: String,
    /// The indexed columns, in key order.
    pub fields: Vec<String>,
    /// Whether a key maps to at most one row.
    pub unique: bool,
}

impl IndexDefinition {
    /// Builds an index definition.
    pub fn new(
        name: impl Into<String>,
        fields: impl IntoIterator<Item = impl Into<String>>,
        unique: bool,
    ) -> Self {
        Self {
            name: name.into(),
            fields: fields.into_iter().map(Into::into).collect(),
            unique,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let t: TableIdentifier = "public.users".parse().unwrap();
        assert_eq!(t, table("public", "users"));
        assert_eq!(t.to_string(), "public.users");
        let dotted: TableIdentifier = "a.b.c".parse().unwrap();
        assert_eq!((dotted.schema(), dotted.table()), ("a", "b.c"));
        for bad in ["", "users", ".users", "public."] {
            let err = bad.parse::<TableIdentifier>().unwrap_err();
            assert!(err.to_string().contains("expected schema.table"), "{err}");
        }
    }

    #[test]
    fn primary_keys_follow_ordinals() {
        let cols = vec![
            ColumnDefinition::new("b", "int8").primary_key(2),
            ColumnDefinition::new("x", "text"),
            ColumnDefinition::new("a", "int8").primary_key(1),
        ];
        assert_eq!(primary_key_columns(&cols), vec!["a", "b"]);
    }
}
