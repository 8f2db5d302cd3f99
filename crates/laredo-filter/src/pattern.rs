//! `field-regex`: a regular expression matches in a text field.

use laredo_core::{PipelineFilter, Row, TableIdentifier, Value};
use regex::Regex;

use crate::error::FilterError;

/// Keeps rows whose `field` is text ([`Value::Text`]) in which `pattern` matches.
///
/// The pattern uses the [`regex`] crate's syntax and is unanchored, as Go's
/// `MatchString`: write `^...$` to match the whole value. It is compiled once, by
/// [`FieldRegex::new`]. Any other kind of value and a missing field are dropped.
#[derive(Debug, Clone)]
pub struct FieldRegex {
    field: String,
    regex: Regex,
}

impl FieldRegex {
    /// A filter keeping rows where `pattern` matches in the text of `field`.
    ///
    /// # Errors
    /// [`FilterError::InvalidPattern`] when `pattern` does not compile.
    pub fn new(field: impl Into<String>, pattern: impl AsRef<str>) -> Result<Self, FilterError> {
        let field = field.into();
        let pattern = pattern.as_ref();
        match Regex::new(pattern) {
            Ok(regex) => Ok(Self { field, regex }),
            Err(source) => Err(FilterError::InvalidPattern {
                field,
                pattern: pattern.to_string(),
                source,
            }),
        }
    }

    /// The filtered field.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The pattern as given.
    pub fn pattern(&self) -> &str {
        self.regex.as_str()
    }

    fn matches(&self, actual: &Value) -> bool {
        matches!(actual, Value::Text(s) if self.regex.is_match(s))
    }
}

impl PipelineFilter for FieldRegex {
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
    fn keeps_text_where_the_pattern_matches() {
        let f = FieldRegex::new("email", r"@example\.com$").unwrap();
        assert!(f.include(&users(), &row! {"email" => "ann@example.com"}));
        assert!(!f.include(&users(), &row! {"email" => "ann@example.org"}));
    }

    #[test]
    fn pattern_is_unanchored() {
        let f = FieldRegex::new("name", "nn").unwrap();
        assert!(f.include(&users(), &row! {"name" => "ann"}));
        let anchored = FieldRegex::new("name", "^nn$").unwrap();
        assert!(!anchored.include(&users(), &row! {"name" => "ann"}));
    }

    #[test]
    fn drops_missing_and_non_text_fields() {
        let f = FieldRegex::new("code", "^[0-9]+$").unwrap();
        assert!(f.include(&users(), &row! {"code" => "12"}));
        assert!(!f.include(&users(), &row! {"id" => 1}));
        assert!(!f.include(&users(), &row! {"code" => 12}));
        assert!(!f.include(&users(), &row! {"code" => Value::numeric("12")}));
        assert!(!f.include(&users(), &row! {"code" => Value::Null}));
    }

    #[test]
    fn invalid_pattern_is_an_error_naming_it() {
        let err = FieldRegex::new("email", "a(b").unwrap_err();
        assert!(
            matches!(&err, FilterError::InvalidPattern { field, pattern, .. } if field == "email" && pattern == "a(b")
        );
        assert_eq!(
            err.to_string(),
            r#"invalid regex pattern "a(b" for field "email""#
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn identity_without_the_field_passes() {
        let f = FieldRegex::new("email", "@example").unwrap();
        assert!(f.include_identity(&users(), &row! {"id" => 1}));
        assert!(f.include_identity(&users(), &row! {"id" => 1, "email" => "a@example.com"}));
        assert!(!f.include_identity(&users(), &row! {"id" => 1, "email" => "a@other.com"}));
    }

    #[test]
    fn accessors() {
        let f = FieldRegex::new("email", "x+").unwrap();
        assert_eq!(f.field(), "email");
        assert_eq!(f.pattern(), "x+");
    }
}
