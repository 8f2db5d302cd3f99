//! Rows: positional values over a shared column layout.
//!
//! A [`Row`] is two reference-counted pointers: the [`RowLayout`] (column names, shared
//! by every row of a table that a source emits) and the values. Cloning a row, or
//! sending it to several pipelines, copies no column data.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::table::ColumnDefinition;
use crate::value::Value;

/// Layouts with more columns than this get a hash index for by-name lookup; below it a
/// linear scan over short names is faster.
const LINEAR_LOOKUP_MAX: usize = 16;

/// The column names of a row, shared by all rows of one shape.
#[derive(Debug, PartialEq, Eq)]
pub struct RowLayout {
    names: Box<[Arc<str>]>,
    by_name: Option<HashMap<Arc<str>, usize>>,
}

impl RowLayout {
    /// Builds a layout from column names (in value order).
    pub fn new(names: impl IntoIterator<Item = impl AsRef<str>>) -> Arc<Self> {
        let names: Box<[Arc<str>]> = names.into_iter().map(|n| Arc::from(n.as_ref())).collect();
        let by_name = (names.len() > LINEAR_LOOKUP_MAX).then(|| {
            names
                .iter()
                .enumerate()
                .map(|(idx, n)| (Arc::clone(n), idx))
                .collect()
        });
        Arc::new(Self { names, by_name })
    }

    /// Builds a layout from column definitions, in their given order.
    pub fn from_columns(columns: &[ColumnDefinition]) -> Arc<Self> {
        Self::new(columns.iter().map(|c| c.name.as_str()))
    }

    /// The column names, in value order.
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// The position of column `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        match &self.by_name {
            Some(map) => map.get(name).copied(),
            None => self.names.iter().position(|n| &**n == name),
        }
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when the layout has no columns.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// A row: column name → [`Value`], with the names shared through a [`RowLayout`].
#[derive(Clone)]
pub struct Row {
    layout: Arc<RowLayout>,
    values: Arc<[Value]>,
}

impl Row {
    /// Builds a row over `layout`. Missing trailing values are NULL; extra values are
    /// dropped (a length mismatch is a bug in the caller and asserts in debug builds).
    pub fn new(layout: Arc<RowLayout>, mut values: Vec<Value>) -> Self {
        debug_assert_eq!(
            layout.len(),
            values.len(),
            "row values do not match the layout"
        );
        values.resize(layout.len(), Value::Null);
        Self {
            layout,
            values: values.into(),
        }
    }

    /// Builds a row over `layout` from values already in shared form, one per column
    /// (a length mismatch is a bug in the caller and asserts in debug builds). Decoders
    /// that collect into an `Arc<[Value]>` save [`Row::new`]'s copy.
    pub fn from_shared(layout: Arc<RowLayout>, values: Arc<[Value]>) -> Self {
        debug_assert_eq!(
            layout.len(),
            values.len(),
            "row values do not match the layout"
        );
        if values.len() == layout.len() {
            Self { layout, values }
        } else {
            Self::new(layout, values.to_vec())
        }
    }

    /// Builds a row with a fresh layout from `(name, value)` pairs.
    pub fn from_pairs<N: AsRef<str>, V: Into<Value>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let (names, values): (Vec<N>, Vec<Value>) =
            pairs.into_iter().map(|(n, v)| (n, v.into())).unzip();
        Self::new(RowLayout::new(names), values)
    }

    /// An empty row.
    pub fn empty() -> Self {
        Self::new(RowLayout::new(std::iter::empty::<&str>()), Vec::new())
    }

    /// The layout (column names) of this row.
    pub fn layout(&self) -> &Arc<RowLayout> {
        &self.layout
    }

    /// The column names, in value order.
    pub fn columns(&self) -> &[Arc<str>] {
        self.layout.names()
    }

    /// The values, in column order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The value of column `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.layout.index_of(name).map(|idx| &self.values[idx])
    }

    /// The value at position `idx`.
    pub fn value(&self, idx: usize) -> Option<&Value> {
        self.values.get(idx)
    }

    /// True when the row has column `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.layout.index_of(name).is_some()
    }

    /// The text payload of column `name` (`Text`, `Numeric` or `Json`).
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    /// The canonical string form of column `name` (`<nil>` for NULL), as the original's
    /// `GetString`.
    pub fn get_string(&self, name: &str) -> Option<String> {
        self.get(name).map(Value::to_canonical_string)
    }

    /// The integer value of column `name`.
    pub fn get_i64(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(Value::as_i64)
    }

    /// The float value of column `name` (integers are widened).
    pub fn get_f64(&self, name: &str) -> Option<f64> {
        self.get(name).and_then(Value::as_f64)
    }

    /// The boolean value of column `name`.
    pub fn get_bool(&self, name: &str) -> Option<bool> {
        self.get(name).and_then(Value::as_bool)
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `(name, value)` pairs in column order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.layout
            .names()
            .iter()
            .map(|n| &**n)
            .zip(self.values.iter())
    }

    /// Column names in sorted order (for deterministic output).
    pub fn sorted_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.layout.names().iter().map(|n| &**n).collect();
        keys.sort_unstable();
        keys
    }

    /// A copy of this row without the given columns.
    #[must_use]
    pub fn without(&self, names: &[&str]) -> Row {
        if !names.iter().any(|n| self.contains(n)) {
            return self.clone();
        }
        let (keep_names, keep_values): (Vec<&str>, Vec<Value>) = self
            .iter()
            .filter(|(n, _)| !names.contains(n))
            .map(|(n, v)| (n, v.clone()))
            .unzip();
        Row::new(RowLayout::new(keep_names), keep_values)
    }

    /// A copy of this row with column `name` set to `value` (appended when absent).
    #[must_use]
    pub fn with(&self, name: &str, value: impl Into<Value>) -> Row {
        let value = value.into();
        match self.layout.index_of(name) {
            Some(idx) => {
                let mut values = self.values.to_vec();
                values[idx] = value;
                Row {
                    layout: Arc::clone(&self.layout),
                    values: values.into(),
                }
            }
            None => {
                let names = self
                    .layout
                    .names()
                    .iter()
                    .map(|n| &**n)
                    .chain(std::iter::once(name));
                let mut values = self.values.to_vec();
                values.push(value);
                Row::new(RowLayout::new(names), values)
            }
        }
    }

    /// A copy of this row with the values replaced, keeping the layout.
    #[must_use]
    pub fn with_values(&self, values: Vec<Value>) -> Row {
        Row::new(Arc::clone(&self.layout), values)
    }

    /// The canonical key bytes of the given columns (see [`Value::write_key`]); a missing
    /// column counts as NULL.
    pub fn key_bytes(&self, fields: &[impl AsRef<str>]) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * fields.len());
        for field in fields {
            self.get(field.as_ref())
                .unwrap_or(&Value::Null)
                .write_key(&mut out);
        }
        out
    }

    /// The key string of the given columns: canonical strings joined with `\0` (the
    /// original's primary key string form).
    pub fn key_string(&self, fields: &[impl AsRef<str>]) -> String {
        let mut out = String::new();
        for (idx, field) in fields.iter().enumerate() {
            if idx > 0 {
                out.push('\0');
            }
            out.push_str(
                &self
                    .get(field.as_ref())
                    .unwrap_or(&Value::Null)
                    .to_canonical_string(),
            );
        }
        out
    }

    /// The row as a plain JSON object (see [`Value::to_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.iter()
                .map(|(n, v)| (n.to_string(), v.to_json()))
                .collect(),
        )
    }

    /// The sum of the values' raw sizes (see [`Value::raw_size`]).
    pub fn raw_size(&self) -> usize {
        self.values.iter().map(Value::raw_size).sum()
    }
}

impl PartialEq for Row {
    /// Rows are equal when they hold the same columns with equal values, whatever the
    /// column order.
    fn eq(&self, other: &Self) -> bool {
        if Arc::ptr_eq(&self.layout, &other.layout) || self.layout == other.layout {
            return self.values == other.values;
        }
        self.len() == other.len() && self.iter().all(|(n, v)| other.get(n) == Some(v))
    }
}

impl Eq for Row {}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (idx, (name, value)) in self.iter().enumerate() {
            if idx > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}: {value}")?;
        }
        f.write_str("}")
    }
}

impl Serialize for Row {
    /// Serialises as a map of column name to the tagged [`Value`] form, which keeps
    /// value kinds across a round trip.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (name, value) in self.iter() {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RowVisitor;
        impl<'de> Visitor<'de> for RowVisitor {
            type Value = Row;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of column name to value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
                let mut names = Vec::new();
                let mut values = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, Value>()? {
                    names.push(name);
                    values.push(value);
                }
                Ok(Row::new(RowLayout::new(names), values))
            }
        }
        deserializer.deserialize_map(RowVisitor)
    }
}

impl<N: AsRef<str>, V: Into<Value>> FromIterator<(N, V)> for Row {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Row::from_pairs(iter)
    }
}

/// Builds a [`Row`] from `name => value` pairs: `row!{"id" => 1, "name" => "a"}`.
#[macro_export]
macro_rules! row {
    ($($name:expr => $value:expr),* $(,)?) => {
        $crate::Row::from_pairs([$(($name, $crate::Value::from($value))),*])
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors() {
        let r = crate::row! {"id" => 7, "name" => "ann", "score" => 1.5, "ok" => true, "gone" => Value::Null};
        assert_eq!(r.get_i64("id"), Some(7));
        assert_eq!(r.get_str("name"), Some("ann"));
        assert_eq!(r.get_f64("score"), Some(1.5));
        assert_eq!(r.get_bool("ok"), Some(true));
        assert_eq!(r.get_string("gone").as_deref(), Some("<nil>"));
        assert_eq!(r.get("missing"), None);
        assert_eq!(r.sorted_keys(), vec!["gone", "id", "name", "ok", "score"]);
    }

    #[test]
    fn without_and_with_copy() {
        let r = crate::row! {"id" => 1, "secret" => "x", "name" => "a"};
        let dropped = r.without(&["secret"]);
        assert_eq!(dropped, crate::row! {"id" => 1, "name" => "a"});
        assert_eq!(r.get_str("secret"), Some("x"), "original untouched");
        assert_eq!(r.with("name", "b").get_str("name"), Some("b"));
        assert_eq!(r.with("extra", 3).get_i64("extra"), Some(3));
    }

    #[test]
    fn equality_ignores_column_order() {
        let a = crate::row! {"id" => 1, "name" => "a"};
        let b = crate::row! {"name" => "a", "id" => 1};
        assert_eq!(a, b);
        assert_ne!(a, crate::row! {"id" => 1, "name" => "b"});
        assert_ne!(a, crate::row! {"id" => 1});
    }

    #[test]
    fn wide_layouts_use_the_name_index() {
        let names: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
        let values: Vec<Value> = (0..40).map(Value::from).collect();
        let r = Row::new(RowLayout::new(&names), values);
        assert_eq!(r.get_i64("c33"), Some(33));
    }

    #[test]
    fn serde_round_trip() {
        let r = crate::row! {"id" => 1, "ts" => Value::TimestampTz(5), "f" => 2.0};
        let json = serde_json::to_string(&r).unwrap();
        let back: Row = serde_json::from_str(&json).unwrap();
        assert_eq!(r, back);
        assert_eq!(back.get("f"), Some(&Value::Float64(2.0)));
    }
}
