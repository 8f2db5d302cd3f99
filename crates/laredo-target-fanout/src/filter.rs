//! Subscription filters (FO-22): `FieldPredicate`s compiled once per stream and applied
//! to snapshot rows, catch-up and live entries alike.

use laredo_core::{ChangeAction, Row, Value};
use laredo_proto::laredo::replication::v1 as wire;
use laredo_proto::laredo::replication::v1::field_predicate::Match;
use tonic::Status;

use crate::journal::{EntryKind, JournalEntry};

#[derive(Debug, Clone)]
enum Test {
    Equals(Value),
    Prefix(String),
    In(Vec<Value>),
}

#[derive(Debug, Clone)]
struct Predicate {
    field: String,
    test: Test,
}

/// AND-combined predicates; empty passes everything.
#[derive(Debug, Clone, Default)]
pub(crate) struct RowFilter {
    predicates: Vec<Predicate>,
}

impl RowFilter {
    /// Compiles the request's predicates.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` naming the predicate: an empty field, no match case, or a
    /// value that is not a valid laredo value.
    pub(crate) fn compile(predicates: &[wire::FieldPredicate]) -> Result<Self, Status> {
        let mut compiled = Vec::with_capacity(predicates.len());
        for (idx, predicate) in predicates.iter().enumerate() {
            if predicate.field.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "filter[{idx}]: field is required"
                )));
            }
            let invalid = |error: laredo_proto::ConversionError| {
                Status::invalid_argument(format!("filter[{idx}]: {error}"))
            };
            let test = match &predicate.r#match {
                None => {
                    return Err(Status::invalid_argument(format!(
                        "filter[{idx}]: one of equals, prefix or in is required"
                    )));
                }
                Some(Match::Equals(value)) => {
                    Test::Equals(Value::try_from(value).map_err(invalid)?)
                }
                Some(Match::Prefix(prefix)) => Test::Prefix(prefix.clone()),
                Some(Match::In(list)) => Test::In(
                    list.values
                        .iter()
                        .map(Value::try_from)
                        .collect::<Result<_, _>>()
                        .map_err(invalid)?,
                ),
            };
            compiled.push(Predicate {
                field: predicate.field.clone(),
                test,
            });
        }
        Ok(Self {
            predicates: compiled,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.predicates.is_empty()
    }

    /// Whether `row` passes every predicate.
    pub(crate) fn matches_row(&self, row: &Row) -> bool {
        self.predicates.iter().all(|p| {
            let Some(value) = row.get(&p.field).filter(|v| !v.is_null()) else {
                return false;
            };
            match &p.test {
                Test::Equals(expected) => values_equal(value, expected),
                Test::Prefix(prefix) => {
                    matches!(value, Value::Text(text) if text.starts_with(prefix.as_str()))
                }
                Test::In(candidates) => candidates.iter().any(|c| values_equal(value, c)),
            }
        })
    }

    /// Whether a journal entry passes: inserts and updates by the new row, deletes by
    /// the old row; truncates and schema changes always pass.
    pub(crate) fn matches_entry(&self, entry: &JournalEntry) -> bool {
        if self.is_empty() {
            return true;
        }
        match &entry.kind {
            EntryKind::Schema { .. } => true,
            EntryKind::Change {
                action,
                old_values,
                new_values,
            } => match action {
                ChangeAction::Truncate => true,
                ChangeAction::Delete => old_values.as_ref().is_some_and(|r| self.matches_row(r)),
                _ => new_values.as_ref().is_some_and(|r| self.matches_row(r)),
            },
        }
    }
}

/// Equality where every numeric kind compares as `f64`; other kinds compare by their
/// canonical key (a null never matches).
fn values_equal(a: &Value, b: &Value) -> bool {
    if a.is_null() || b.is_null() {
        return false;
    }
    match (as_number(a), as_number(b)) {
        (Some(x), Some(y)) => x == y,
        (None, None) => a.eq_normalized(b),
        _ => false,
    }
}

fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Int64(_) | Value::Float64(_) => value.as_f64(),
        Value::Numeric(text) => text.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use laredo_core::row;
    use laredo_proto::laredo::v1 as types;

    use super::*;

    fn predicate(field: &str, test: Option<Match>) -> wire::FieldPredicate {
        wire::FieldPredicate {
            field: field.into(),
            r#match: test,
        }
    }

    fn value(v: impl Into<Value>) -> types::Value {
        types::Value::from(&v.into())
    }

    #[test]
    fn predicates_are_and_combined() {
        let filter = RowFilter::compile(&[
            predicate("region", Some(Match::Prefix("eu".into()))),
            predicate(
                "score",
                Some(Match::In(types::ValueList {
                    values: vec![value(1), value(Value::numeric("2.0"))],
                })),
            ),
        ])
        .unwrap();
        assert!(filter.matches_row(&row! {"region" => "eu-west", "score" => 2}));
        assert!(filter.matches_row(&row! {"region" => "eu", "score" => 1.0}));
        assert!(!filter.matches_row(&row! {"region" => "us", "score" => 1}));
        assert!(!filter.matches_row(&row! {"region" => "eu", "score" => 3}));
        assert!(!filter.matches_row(&row! {"region" => "eu"}), "missing");
        assert!(!filter.matches_row(&row! {"region" => "eu", "score" => Value::Null}));
    }

    #[test]
    fn equals_compares_numbers_numerically_and_prefix_only_text() {
        let equals = RowFilter::compile(&[predicate("n", Some(Match::Equals(value(1))))]).unwrap();
        assert!(equals.matches_row(&row! {"n" => Value::numeric("1.00")}));
        assert!(equals.matches_row(&row! {"n" => 1.0}));
        assert!(!equals.matches_row(&row! {"n" => "1"}));
        let prefix =
            RowFilter::compile(&[predicate("n", Some(Match::Prefix("1".into())))]).unwrap();
        assert!(!prefix.matches_row(&row! {"n" => 12}));
        assert!(prefix.matches_row(&row! {"n" => "12"}));
    }

    #[test]
    fn invalid_predicates_are_rejected_with_their_index() {
        let err = RowFilter::compile(&[
            predicate("a", Some(Match::Prefix("x".into()))),
            predicate("", Some(Match::Prefix("x".into()))),
        ])
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(err.message(), "filter[1]: field is required");
        let err = RowFilter::compile(&[predicate("a", None)]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().starts_with("filter[0]: "),
            "{}",
            err.message()
        );
    }
}
