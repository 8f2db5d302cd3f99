//! `rename-fields`: rename columns.

use std::collections::HashMap;

use laredo_core::{PipelineTransform, Row, RowLayout, TableIdentifier};

use crate::layout_cache::{LayoutCache, Projection};

/// Copies each row with columns renamed (`old → new`), keeping the column order.
/// Columns the mapping does not name, and mapped columns the row lacks, are left alone.
///
/// Renaming onto the name of a column that is itself not renamed **replaces** that
/// column: the renamed column's value wins, at the renamed column's position. When
/// several columns are renamed to one name, the last of them in column order wins.
/// Mappings may swap names (`a → b`, `b → a`).
#[derive(Debug)]
pub struct RenameFields {
    mapping: HashMap<String, String>,
    cache: LayoutCache<Projection>,
}

impl RenameFields {
    /// A transform renaming each `old` column to `new`. When `old` appears more than once
    /// the last mapping wins.
    pub fn new<O: Into<String>, N: Into<String>>(
        mapping: impl IntoIterator<Item = (O, N)>,
    ) -> Self {
        Self {
            mapping: mapping
                .into_iter()
                .map(|(old, new)| (old.into(), new.into()))
                .collect(),
            cache: LayoutCache::new(),
        }
    }

    /// The new name of column `old`, if the mapping renames it.
    pub fn new_name(&self, old: &str) -> Option<&str> {
        self.mapping.get(old).map(String::as_str)
    }

    fn plan(&self, input: &RowLayout) -> Projection {
        // (input index, output name, renamed?)
        let columns: Vec<(usize, &str, bool)> = input
            .names()
            .iter()
            .enumerate()
            .map(|(idx, name)| match self.mapping.get(&**name) {
                Some(new) if new.as_str() != &**name => (idx, new.as_str(), true),
                _ => (idx, &**name, false),
            })
            .collect();
        // For each output name, the column that provides it: a renamed column beats one
        // that keeps its name, and a later renamed column beats an earlier one.
        let mut provider: HashMap<&str, usize> = HashMap::with_capacity(columns.len());
        for (pos, &(_, name, renamed)) in columns.iter().enumerate() {
            provider
                .entry(name)
                .and_modify(|current| {
                    if renamed {
                        *current = pos;
                    }
                })
                .or_insert(pos);
        }
        let (keep, names): (Vec<usize>, Vec<&str>) = columns
            .iter()
            .enumerate()
            .filter(|(pos, (_, name, _))| provider.get(name) == Some(pos))
            .map(|(_, &(idx, name, _))| (idx, name))
            .unzip();
        Projection::new(input, keep, names)
    }
}

impl PipelineTransform for RenameFields {
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

    fn apply(t: &RenameFields, row: Row) -> Row {
        t.transform(&table("public", "users"), row).unwrap()
    }

    fn columns(row: &Row) -> Vec<&str> {
        row.columns().iter().map(|c| &**c).collect()
    }

    #[test]
    fn renames_keeping_column_order() {
        let t = RenameFields::new([("name", "display_name"), ("mail", "email")]);
        let out = apply(
            &t,
            row! {"id" => 1, "name" => "ann", "mail" => "a@x", "age" => 30},
        );
        assert_eq!(
            out,
            row! {"id" => 1, "display_name" => "ann", "email" => "a@x", "age" => 30}
        );
        assert_eq!(columns(&out), ["id", "display_name", "email", "age"]);
    }

    #[test]
    fn row_without_mapped_columns_passes_unchanged() {
        let t = RenameFields::new([("name", "display_name")]);
        let row = row! {"id" => 1};
        let out = apply(&t, row.clone());
        assert_eq!(out, row);
        assert!(Arc::ptr_eq(out.layout(), row.layout()));
        let out = apply(&RenameFields::new([("id", "id")]), row.clone());
        assert!(Arc::ptr_eq(out.layout(), row.layout()));
    }

    #[test]
    fn renaming_onto_an_existing_column_replaces_it() {
        let t = RenameFields::new([("nick", "name")]);
        let out = apply(&t, row! {"id" => 1, "name" => "Ann Smith", "nick" => "ann"});
        assert_eq!(out, row! {"id" => 1, "name" => "ann"});
        assert_eq!(columns(&out), ["id", "name"]);

        let out = apply(&t, row! {"nick" => "ann", "id" => 1, "name" => "Ann Smith"});
        assert_eq!(columns(&out), ["name", "id"]);
        assert_eq!(out.get_str("name"), Some("ann"));
    }

    #[test]
    fn several_columns_onto_one_name_keeps_the_last() {
        let t = RenameFields::new([("a", "x"), ("b", "x")]);
        let out = apply(&t, row! {"a" => 1, "b" => 2, "c" => 3});
        assert_eq!(columns(&out), ["x", "c"]);
        assert_eq!(out.get("x"), Some(&Value::Int64(2)));
    }

    #[test]
    fn swaps_names() {
        let t = RenameFields::new([("a", "b"), ("b", "a")]);
        let out = apply(&t, row! {"a" => 1, "b" => 2});
        assert_eq!(columns(&out), ["b", "a"]);
        assert_eq!(out, row! {"a" => 2, "b" => 1});
    }

    #[test]
    fn rows_with_one_layout_share_the_output_layout() {
        let t = RenameFields::new([("name", "display_name")]);
        let layout = RowLayout::new(["id", "name"]);
        let a = apply(
            &t,
            Row::new(
                Arc::clone(&layout),
                vec![Value::from(1), Value::from("ann")],
            ),
        );
        let b = apply(
            &t,
            Row::new(
                Arc::clone(&layout),
                vec![Value::from(2), Value::from("bob")],
            ),
        );
        assert!(Arc::ptr_eq(a.layout(), b.layout()));
        assert_eq!(b, row! {"id" => 2, "display_name" => "bob"});
    }

    #[test]
    fn new_name_reports_the_mapping() {
        let t = RenameFields::new([("a", "b"), ("a", "c")]);
        assert_eq!(t.new_name("a"), Some("c"));
        assert_eq!(t.new_name("b"), None);
    }
}
