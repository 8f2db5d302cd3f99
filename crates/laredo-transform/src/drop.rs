//! `drop-fields`: remove columns.

use laredo_core::{PipelineTransform, Row, RowLayout, TableIdentifier};

use crate::layout_cache::{LayoutCache, Projection};

/// Copies each row without the listed columns. Columns the row lacks are ignored; a row
/// with none of them passes through unchanged.
///
/// The result equals [`Row::without`], but rows sharing a layout share the output
/// layout.
#[derive(Debug)]
pub struct DropFields {
    fields: Vec<String>,
    cache: LayoutCache<Projection>,
}

impl DropFields {
    /// A transform dropping `fields`.
    pub fn new(fields: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            fields: fields.into_iter().map(Into::into).collect(),
            cache: LayoutCache::new(),
        }
    }

    /// The dropped columns.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    fn plan(&self, input: &RowLayout) -> Projection {
        let (keep, names): (Vec<usize>, Vec<&str>) = input
            .names()
            .iter()
            .enumerate()
            .filter(|(_, name)| !self.fields.iter().any(|f| f.as_str() == &***name))
            .map(|(idx, name)| (idx, &**name))
            .unzip();
        Projection::new(input, keep, names)
    }
}

impl PipelineTransform for DropFields {
    fn transform(&self, _table: &TableIdentifier, row: Row) -> Option<Row> {
        let plan = self
            .cache
            .get_or_build(row.layout(), |layout| self.plan(layout));
        Some(plan.apply(row))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use laredo_core::{Value, row, table};

    use super::*;

    fn apply(t: &DropFields, row: Row) -> Row {
        t.transform(&table("public", "users"), row).unwrap()
    }

    #[test]
    fn drops_the_listed_columns() {
        let t = DropFields::new(["password", "token"]);
        let out = apply(
            &t,
            row! {"id" => 1, "password" => "x", "name" => "ann", "token" => "t"},
        );
        assert_eq!(out, row! {"id" => 1, "name" => "ann"});
        assert_eq!(
            out.columns().iter().map(|c| &**c).collect::<Vec<_>>(),
            ["id", "name"]
        );
    }

    #[test]
    fn matches_row_without() {
        let row = row! {"id" => 1, "password" => "x", "name" => Value::Null};
        let out = apply(&DropFields::new(["password", "missing"]), row.clone());
        assert_eq!(out, row.without(&["password", "missing"]));
    }

    #[test]
    fn row_without_the_columns_passes_unchanged() {
        let row = row! {"id" => 1, "name" => "ann"};
        let out = apply(&DropFields::new(["password"]), row.clone());
        assert_eq!(out, row);
        assert!(Arc::ptr_eq(out.layout(), row.layout()));
    }

    #[test]
    fn dropping_every_column_leaves_an_empty_row() {
        let out = apply(&DropFields::new(["id"]), row! {"id" => 1});
        assert!(out.is_empty());
    }

    #[test]
    fn rows_with_one_layout_share_the_output_layout() {
        let t = DropFields::new(["password"]);
        let layout = RowLayout::new(["id", "password"]);
        let a = apply(
            &t,
            Row::new(Arc::clone(&layout), vec![Value::from(1), Value::from("x")]),
        );
        let b = apply(
            &t,
            Row::new(Arc::clone(&layout), vec![Value::from(2), Value::from("y")]),
        );
        assert!(Arc::ptr_eq(a.layout(), b.layout()));
        assert_eq!(a, row! {"id" => 1});
        assert_eq!(b, row! {"id" => 2});
    }

    #[test]
    fn a_new_layout_gets_its_own_output() {
        let t = DropFields::new(["password"]);
        let a = apply(&t, row! {"id" => 1, "password" => "x"});
        let b = apply(&t, row! {"name" => "ann", "password" => "y", "id" => 2});
        assert_eq!(a, row! {"id" => 1});
        assert_eq!(b, row! {"name" => "ann", "id" => 2});
    }
}
