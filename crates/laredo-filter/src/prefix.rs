//! `field-prefix`: a text field starts with a prefix.

use laredo_core::{PipelineFilter, Row, TableIdentifier, Value};

/// Keeps rows whose `field` is text ([`Value::Text`]) starting with `prefix`.
///
/// Any other kind of value (numbers, JSON, NULL, ...) and a missing field are dropped.
#[derive(Debug, Clone)]
pub struct FieldPrefix {
    field: String,
    prefix: String,
}

impl FieldPrefix {
    /// A filter keeping rows where `field` is text starting with `prefix`.
    pub fn new(field: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            prefix: prefix.into(),
        }
    }

    /// The filtered field.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The required prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn matches(&self, actual: &Value) -> bool {
        matches!(actual, Value::Text(s) if s.starts_with(self.prefix.as_str()))
    }
}

impl PipelineFilter for FieldPrefix {
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
    fn keeps_text_with_the_prefix() {
        let f = FieldPrefix::new("tenant", "eu-");
        assert!(f.include(&users(), &row! {"tenant" => "eu-west"}));
        assert!(f.include(&users(), &row! {"tenant" => "eu-"}));
        assert!(!f.include(&users(), &row! {"tenant" => "us-east"}));
        assert!(!f.include(&users(), &row! {"tenant" => "eu"}));
    }

    #[test]
    fn drops_missing_and_non_text_fields() {
        let f = FieldPrefix::new("code", "1");
        assert!(!f.include(&users(), &row! {"id" => 1}));
        assert!(!f.include(&users(), &row! {"code" => 12}));
        assert!(!f.include(&users(), &row! {"code" => Value::numeric("12")}));
        assert!(!f.include(&users(), &row! {"code" => Value::json("\"12\"")}));
        assert!(!f.include(&users(), &row! {"code" => Value::Null}));
    }

    #[test]
    fn empty_prefix_keeps_any_text() {
        let f = FieldPrefix::new("name", "");
        assert!(f.include(&users(), &row! {"name" => ""}));
        assert!(!f.include(&users(), &row! {"name" => 1}));
    }

    #[test]
    fn identity_without_the_field_passes() {
        let f = FieldPrefix::new("tenant", "eu-");
        assert!(f.include_identity(&users(), &row! {"id" => 1}));
        assert!(f.include_identity(&users(), &row! {"id" => 1, "tenant" => "eu-north"}));
        assert!(!f.include_identity(&users(), &row! {"id" => 1, "tenant" => "us-east"}));
        assert!(!f.include_identity(&users(), &row! {"id" => 1, "tenant" => 7}));
    }
}
