//! `add-timestamp`: set a column to the current time.

use std::sync::Arc;

use laredo_core::{PipelineTransform, Row, RowLayout, TableIdentifier, Value, time};

use crate::layout_cache::LayoutCache;

/// Copies each row with `field` set to the current time, as a
/// [`Value::TimestampTz`] (microseconds since the Unix epoch, UTC). A row that already
/// has the column gets its value replaced in place; otherwise the column is appended.
#[derive(Debug)]
pub struct AddTimestamp {
    field: String,
    cache: LayoutCache<Placement>,
}

/// Where the timestamp goes in rows of one input layout.
#[derive(Debug)]
enum Placement {
    /// Replace the value at this index; the layout stays.
    Replace(usize),
    /// Append a column; the output layout has it last.
    Append(Arc<RowLayout>),
}

impl AddTimestamp {
    /// A transform setting `field` to now.
    pub fn new(field: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            cache: LayoutCache::new(),
        }
    }

    /// The column set to now.
    pub fn field(&self) -> &str {
        &self.field
    }

    fn plan(&self, input: &RowLayout) -> Placement {
        match input.index_of(&self.field) {
            Some(idx) => Placement::Replace(idx),
            None => Placement::Append(RowLayout::new(
                input
                    .names()
                    .iter()
                    .map(|n| &**n)
                    .chain(std::iter::once(self.field.as_str())),
            )),
        }
    }
}

impl PipelineTransform for AddTimestamp {
    fn transform(&self, _table: &TableIdentifier, row: Row) -> Option<Row> {
        let now = Value::TimestampTz(time::now_micros());
        let plan = self
            .cache
            .get_or_build(row.layout(), |layout| self.plan(layout));
        let mut values = row.values().to_vec();
        Some(match &*plan {
            Placement::Replace(idx) => {
                if let Some(slot) = values.get_mut(*idx) {
                    *slot = now;
                }
                row.with_values(values)
            }
            Placement::Append(layout) => {
                values.push(now);
                Row::new(Arc::clone(layout), values)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use laredo_core::{row, table};

    use super::*;

    fn apply(t: &AddTimestamp, row: Row) -> Row {
        t.transform(&table("public", "users"), row).unwrap()
    }

    fn timestamp(row: &Row, field: &str) -> i64 {
        match row.get(field) {
            Some(Value::TimestampTz(micros)) => *micros,
            other => panic!("expected a timestamptz in {field}, got {other:?}"),
        }
    }

    #[test]
    fn appends_the_current_time() {
        let t = AddTimestamp::new("synced_at");
        let before = time::now_micros();
        let out = apply(&t, row! {"id" => 1});
        let after = time::now_micros();
        let at = timestamp(&out, "synced_at");
        assert!(
            (before..=after).contains(&at),
            "{before} <= {at} <= {after}"
        );
        assert_eq!(out, row! {"id" => 1, "synced_at" => Value::TimestampTz(at)});
        assert_eq!(out.columns().last().map(|c| &**c), Some("synced_at"));
    }

    #[test]
    fn replaces_an_existing_column_in_place() {
        let t = AddTimestamp::new("synced_at");
        let row = row! {"synced_at" => "old", "id" => 1};
        let before = time::now_micros();
        let out = apply(&t, row.clone());
        assert!(timestamp(&out, "synced_at") >= before);
        assert_eq!(out.get_i64("id"), Some(1));
        assert!(Arc::ptr_eq(out.layout(), row.layout()));
    }

    #[test]
    fn rows_with_one_layout_share_the_output_layout() {
        let t = AddTimestamp::new("synced_at");
        let layout = RowLayout::new(["id"]);
        let a = apply(&t, Row::new(Arc::clone(&layout), vec![Value::from(1)]));
        let b = apply(&t, Row::new(Arc::clone(&layout), vec![Value::from(2)]));
        assert!(Arc::ptr_eq(a.layout(), b.layout()));
        assert_eq!(b.get_i64("id"), Some(2));
        assert_eq!(t.field(), "synced_at");
    }
}
