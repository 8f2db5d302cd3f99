//! `field-equals`: the field is present and equal to a value.

use laredo_core::{PipelineFilter, Row, TableIdentifier, Value};

/// Keeps rows whose `field` is present and equal to `value`.
///
/// Values compare with numeric normalisation ([`Value::eq_normalized`]): `Int64(1)`,
/// `Float64(1.0)` and `Numeric("1.0")` are equal, while `Text("1")` is not equal to any
/// of them. A row without the field is dropped. `Null` equals only `Null`.
#[derive(Debug, Clone)]
pub struct FieldEquals {
    field: String,
    value: Value,
    /// `value`'s canonical key bytes, computed once so that a comparison across value
    /// kinds encodes only the row's value.
    value_key: Vec<u8>,
}

impl FieldEquals {
    /// A filter keeping rows where `field` equals `value`.
    pub fn new(field: impl Into<String>, value: impl Into<Value>) -> Self {
        let value = value.into();
        let value_key = value.key_bytes();
        Self {
            field: field.into(),
            value,
            value_key,
        }
    }

    /// The filtered field.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The value the field must equal.
    pub fn value(&self) -> &Value {
        &self.value
    }

    fn matches(&self, actual: &Value) -> bool {
        match (actual, &self.value) {
            // Fast paths for the common kinds; same answer as the key comparison.
            (Value::Int64(a), Value::Int64(b)) => a == b,
            (Value::Text(a), Value::Text(b)) => a == b,
            _ => actual.key_bytes() == self.value_key,
        }
    }
}

impl PipelineFilter for FieldEquals {
    fn include(&self, _table: &TableIdentifier, row: &Row) -> bool {
        row.get(&self.field).is_some_and(|v| self.matches(v))
    }

    fn include_identity(&self, _table: &TableIdentifier, identity: &Row) -> bool {
        identity.get(&self.field).is_none_or(|v| self.matches(v))
    }
}

#[cfg(test)]
mod tests {
    use laredo_core::{row, table};

    use super::*;

    fn users() -> TableIdentifier {
        table("public", "users")
    }

    #[test]
    fn keeps_equal_text() {
        let f = FieldEquals::new("status", "active");
        assert!(f.include(&users(), &row! {"id" => 1, "status" => "active"}));
        assert!(!f.include(&users(), &row! {"id" => 1, "status" => "inactive"}));
    }

    #[test]
    fn drops_rows_without_the_field() {
        let f = FieldEquals::new("status", "active");
        assert!(!f.include(&users(), &row! {"id" => 1}));
    }

    #[test]
    fn numbers_compare_normalised() {
        let f = FieldEquals::new("n", 1);
        assert!(f.include(&users(), &row! {"n" => 1}));
        assert!(f.include(&users(), &row! {"n" => Value::Float64(1.0)}));
        assert!(f.include(&users(), &row! {"n" => Value::numeric("1.0")}));
        assert!(!f.include(&users(), &row! {"n" => Value::Float64(1.5)}));
        assert!(!f.include(&users(), &row! {"n" => 2}));

        let f = FieldEquals::new("n", Value::numeric("2.50"));
        assert!(f.include(&users(), &row! {"n" => 2.5}));
        assert!(f.include(&users(), &row! {"n" => Value::numeric("2.5")}));
    }

    #[test]
    fn kinds_other_than_numbers_do_not_mix() {
        let f = FieldEquals::new("n", 1);
        assert!(!f.include(&users(), &row! {"n" => "1"}));
        assert!(!f.include(&users(), &row! {"n" => true}));
        let f = FieldEquals::new("s", "1");
        assert!(!f.include(&users(), &row! {"s" => 1}));
    }

    #[test]
    fn null_equals_only_null() {
        let f = FieldEquals::new("deleted_at", Value::Null);
        assert!(f.include(&users(), &row! {"deleted_at" => Value::Null}));
        assert!(!f.include(&users(), &row! {"deleted_at" => 0}));
        assert!(
            !FieldEquals::new("deleted_at", 0)
                .include(&users(), &row! {"deleted_at" => Value::Null})
        );
    }

    #[test]
    fn identity_without_the_field_passes() {
        let f = FieldEquals::new("status", "active");
        assert!(f.include_identity(&users(), &row! {"id" => 1}));
        assert!(f.include_identity(&users(), &row! {"id" => 1, "status" => "active"}));
        assert!(!f.include_identity(&users(), &row! {"id" => 1, "status" => "inactive"}));
    }

    #[test]
    fn accessors() {
        let f = FieldEquals::new("n", 3);
        assert_eq!(f.field(), "n");
        assert_eq!(f.value(), &Value::Int64(3));
    }
}
