//! Conversions between laredo-core values, rows, columns and actions and their wire
//! messages.
//!
//! laredo to wire is infallible (`From`); wire to laredo validates what a peer sent
//! (`TryFrom`, [`ConversionError`]) and never panics. Nesting depth needs no check
//! here: prost refuses messages nested deeper than 100 levels while decoding.

use std::collections::HashSet;
use std::sync::Arc;

use laredo_core::{ChangeAction, ColumnDefinition, Row, RowLayout, Value};

use crate::laredo::v1 as wire;
use crate::laredo::v1::value::Kind;

/// A wire message that does not describe a valid laredo value, row or action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConversionError {
    /// A `Value` with no kind: the sender used a kind this reader does not know, or
    /// built an empty value.
    #[error("value has no kind set")]
    MissingValueKind,
    /// A `uuid_value` that is not 16 bytes long.
    #[error("uuid value has {len} bytes, expected 16")]
    UuidLength {
        /// The length received.
        len: usize,
    },
    /// A `Row` whose column and value lists differ in length.
    #[error("row has {columns} columns but {values} values")]
    RowLength {
        /// Column names received.
        columns: usize,
        /// Values received.
        values: usize,
    },
    /// A positional `Row` (values without column names) where no columns are known.
    #[error("row has {values} values and no column names, and no columns are known")]
    UnknownColumns {
        /// Values received.
        values: usize,
    },
    /// A `Row` that names a column twice.
    #[error("row repeats column {column:?}")]
    DuplicateColumn {
        /// The repeated name.
        column: String,
    },
    /// A value of a row column failed to convert.
    #[error("column {column:?}")]
    Column {
        /// The column name.
        column: String,
        /// Why its value failed.
        #[source]
        source: Box<ConversionError>,
    },
    /// A change action that is unspecified or unknown to this reader.
    #[error("unknown change action {value}")]
    UnknownChangeAction {
        /// The enum number received.
        value: i32,
    },
}

impl From<&Value> for wire::Value {
    /// Converts a laredo value. Two cases are not one-to-one: the internal
    /// `UnchangedToast` marker, which never reaches a target and so should never be
    /// sent, becomes NULL; a kind added to laredo-core after this crate travels as
    /// its canonical text until the proto grows a field for it.
    fn from(value: &Value) -> Self {
        let kind = match value {
            Value::Null | Value::UnchangedToast => {
                Kind::NullValue(prost_types::NullValue::NullValue.into())
            }
            Value::Bool(b) => Kind::BoolValue(*b),
            Value::Int64(v) => Kind::Int64Value(*v),
            Value::Float64(f) => Kind::Float64Value(*f),
            Value::Numeric(s) => Kind::NumericValue(s.to_string()),
            Value::Text(s) => Kind::TextValue(s.to_string()),
            Value::Bytes(b) => Kind::BytesValue(b.to_vec()),
            Value::Json(s) => Kind::JsonValue(s.to_string()),
            Value::Uuid(u) => Kind::UuidValue(u.to_vec()),
            Value::Date(d) => Kind::DateValue(*d),
            Value::Time(t) => Kind::TimeValue(*t),
            Value::TimeTz {
                micros,
                offset_seconds,
            } => Kind::TimetzValue(wire::TimeTz {
                micros: *micros,
                offset_seconds: *offset_seconds,
            }),
            Value::Timestamp(t) => Kind::TimestampValue(*t),
            Value::TimestampTz(t) => Kind::TimestamptzValue(*t),
            Value::Interval {
                months,
                days,
                micros,
            } => Kind::IntervalValue(wire::Interval {
                months: *months,
                days: *days,
                micros: *micros,
            }),
            Value::Array(items) => Kind::ArrayValue(wire::ValueList {
                values: items.iter().map(wire::Value::from).collect(),
            }),
            other => Kind::TextValue(other.to_canonical_string()),
        };
        wire::Value { kind: Some(kind) }
    }
}

impl TryFrom<&wire::Value> for Value {
    type Error = ConversionError;

    /// Converts a wire value.
    ///
    /// # Errors
    ///
    /// [`ConversionError::MissingValueKind`] for a value without a kind,
    /// [`ConversionError::UuidLength`] for a UUID that is not 16 bytes.
    fn try_from(value: &wire::Value) -> Result<Self, Self::Error> {
        let kind = value
            .kind
            .as_ref()
            .ok_or(ConversionError::MissingValueKind)?;
        Ok(match kind {
            // NullValue has one member; any number means NULL.
            Kind::NullValue(_) => Value::Null,
            Kind::BoolValue(b) => Value::Bool(*b),
            Kind::Int64Value(v) => Value::Int64(*v),
            Kind::Float64Value(f) => Value::Float64(*f),
            Kind::NumericValue(s) => Value::numeric(s),
            Kind::TextValue(s) => Value::text(s),
            Kind::BytesValue(b) => Value::bytes(b),
            Kind::JsonValue(s) => Value::json(s),
            Kind::UuidValue(b) => Value::Uuid(
                b.as_slice()
                    .try_into()
                    .map_err(|_| ConversionError::UuidLength { len: b.len() })?,
            ),
            Kind::DateValue(d) => Value::Date(*d),
            Kind::TimeValue(t) => Value::Time(*t),
            Kind::TimetzValue(t) => Value::TimeTz {
                micros: t.micros,
                offset_seconds: t.offset_seconds,
            },
            Kind::TimestampValue(t) => Value::Timestamp(*t),
            Kind::TimestamptzValue(t) => Value::TimestampTz(*t),
            Kind::IntervalValue(i) => Value::Interval {
                months: i.months,
                days: i.days,
                micros: i.micros,
            },
            Kind::ArrayValue(list) => Value::Array(
                list.values
                    .iter()
                    .map(Value::try_from)
                    .collect::<Result<Arc<[Value]>, _>>()?,
            ),
        })
    }
}

impl From<&Row> for wire::Row {
    fn from(row: &Row) -> Self {
        wire::Row {
            columns: row.columns().iter().map(|c| c.to_string()).collect(),
            values: row.values().iter().map(wire::Value::from).collect(),
        }
    }
}

impl TryFrom<&wire::Row> for Row {
    type Error = ConversionError;

    /// Converts one wire row with a layout of its own; use a [`RowDecoder`] to share
    /// layouts across many rows.
    ///
    /// # Errors
    ///
    /// As [`RowDecoder::decode`].
    fn try_from(row: &wire::Row) -> Result<Self, Self::Error> {
        RowDecoder::new().decode(row)
    }
}

/// Converts wire rows to laredo rows, reusing the previous row's [`RowLayout`] while
/// the column names stay the same.
///
/// Rows of one stream (a snapshot, a journal) almost always share their columns, so
/// the decoded rows share one layout allocation, as rows from a source do.
///
/// A row sent without column names but with values is *positional*: its values are the
/// columns set with [`set_positional_columns`](Self::set_positional_columns), in order
/// (a replication `Sync` stream with the COMPACT row encoding sends journal rows that
/// hold every column of the table that way).
#[derive(Debug, Default, Clone)]
pub struct RowDecoder {
    layout: Option<Arc<RowLayout>>,
    positional: Option<Arc<RowLayout>>,
}

impl RowDecoder {
    /// A decoder with no cached layout.
    pub fn new() -> Self {
        Self::default()
    }

    /// The columns of positional rows from now on: the table's columns, in order.
    pub fn set_positional_columns<I>(&mut self, names: I)
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.positional = Some(RowLayout::new(names));
    }

    /// Converts a wire row.
    ///
    /// # Errors
    ///
    /// [`ConversionError::RowLength`] when the column and value lists differ in
    /// length (for a positional row: the values and the positional columns),
    /// [`ConversionError::UnknownColumns`] for a positional row before any positional
    /// columns were set, [`ConversionError::DuplicateColumn`] when a name repeats, and
    /// [`ConversionError::Column`] when a value fails to convert.
    pub fn decode(&mut self, row: &wire::Row) -> Result<Row, ConversionError> {
        let layout = if row.columns.is_empty() && !row.values.is_empty() {
            Arc::clone(
                self.positional
                    .as_ref()
                    .ok_or(ConversionError::UnknownColumns {
                        values: row.values.len(),
                    })?,
            )
        } else {
            match &self.layout {
                Some(layout) if same_names(layout, &row.columns) => Arc::clone(layout),
                _ => {
                    if row.columns.len() != row.values.len() {
                        return Err(ConversionError::RowLength {
                            columns: row.columns.len(),
                            values: row.values.len(),
                        });
                    }
                    check_unique(&row.columns)?;
                    let layout = RowLayout::new(&row.columns);
                    self.layout = Some(Arc::clone(&layout));
                    layout
                }
            }
        };
        if layout.len() != row.values.len() {
            return Err(ConversionError::RowLength {
                columns: layout.len(),
                values: row.values.len(),
            });
        }
        let values = layout
            .names()
            .iter()
            .zip(&row.values)
            .map(|(column, value)| {
                Value::try_from(value).map_err(|source| ConversionError::Column {
                    column: column.to_string(),
                    source: Box::new(source),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Row::new(layout, values))
    }
}

fn same_names(layout: &RowLayout, columns: &[String]) -> bool {
    layout.len() == columns.len()
        && layout
            .names()
            .iter()
            .zip(columns)
            .all(|(name, column)| **name == **column)
}

fn check_unique(columns: &[String]) -> Result<(), ConversionError> {
    let mut seen = HashSet::with_capacity(columns.len());
    match columns.iter().find(|column| !seen.insert(column.as_str())) {
        Some(column) => Err(ConversionError::DuplicateColumn {
            column: column.clone(),
        }),
        None => Ok(()),
    }
}

impl From<&ColumnDefinition> for wire::ColumnDefinition {
    fn from(column: &ColumnDefinition) -> Self {
        wire::ColumnDefinition {
            column_name: column.name.clone(),
            data_type: column.type_name.clone(),
            not_null: !column.nullable,
            is_primary_key: column.primary_key,
            ordinal_position: column.ordinal_position,
            primary_key_ordinal: column.primary_key_ordinal,
            default_value: column.default_value.clone(),
            max_length: column.max_length,
            type_oid: column.type_oid,
        }
    }
}

impl From<&wire::ColumnDefinition> for ColumnDefinition {
    fn from(column: &wire::ColumnDefinition) -> Self {
        let mut out = ColumnDefinition::new(&column.column_name, &column.data_type);
        out.nullable = !column.not_null;
        out.primary_key = column.is_primary_key;
        out.ordinal_position = column.ordinal_position;
        out.primary_key_ordinal = column.primary_key_ordinal;
        out.default_value.clone_from(&column.default_value);
        out.max_length = column.max_length;
        out.type_oid = column.type_oid;
        out
    }
}

impl From<ChangeAction> for wire::ChangeAction {
    fn from(action: ChangeAction) -> Self {
        match action {
            ChangeAction::Insert => wire::ChangeAction::Insert,
            ChangeAction::Update => wire::ChangeAction::Update,
            ChangeAction::Delete => wire::ChangeAction::Delete,
            ChangeAction::Truncate => wire::ChangeAction::Truncate,
        }
    }
}

impl TryFrom<wire::ChangeAction> for ChangeAction {
    type Error = ConversionError;

    /// # Errors
    ///
    /// [`ConversionError::UnknownChangeAction`] for `CHANGE_ACTION_UNSPECIFIED`.
    fn try_from(action: wire::ChangeAction) -> Result<Self, Self::Error> {
        match action {
            wire::ChangeAction::Insert => Ok(ChangeAction::Insert),
            wire::ChangeAction::Update => Ok(ChangeAction::Update),
            wire::ChangeAction::Delete => Ok(ChangeAction::Delete),
            wire::ChangeAction::Truncate => Ok(ChangeAction::Truncate),
            wire::ChangeAction::Unspecified => Err(ConversionError::UnknownChangeAction {
                value: action.into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn wire(kind: Kind) -> wire::Value {
        wire::Value { kind: Some(kind) }
    }

    /// Every laredo value kind with the wire value it must map to, edge values
    /// included (NaN, the infinity sentinels, empty payloads, nested arrays).
    fn every_kind() -> Vec<(Value, wire::Value)> {
        let null = || wire(Kind::NullValue(prost_types::NullValue::NullValue.into()));
        vec![
            (Value::Null, null()),
            (Value::Bool(true), wire(Kind::BoolValue(true))),
            (Value::Bool(false), wire(Kind::BoolValue(false))),
            (Value::Int64(-42), wire(Kind::Int64Value(-42))),
            (Value::Int64(i64::MIN), wire(Kind::Int64Value(i64::MIN))),
            (Value::Float64(1.5), wire(Kind::Float64Value(1.5))),
            (Value::Float64(-0.0), wire(Kind::Float64Value(-0.0))),
            (Value::Float64(f64::NAN), wire(Kind::Float64Value(f64::NAN))),
            (
                Value::Float64(f64::NEG_INFINITY),
                wire(Kind::Float64Value(f64::NEG_INFINITY)),
            ),
            (
                Value::numeric("123456789012345678901234567890.100"),
                wire(Kind::NumericValue(
                    "123456789012345678901234567890.100".into(),
                )),
            ),
            (
                Value::numeric("NaN"),
                wire(Kind::NumericValue("NaN".into())),
            ),
            (Value::text("héllo"), wire(Kind::TextValue("héllo".into()))),
            (Value::text(""), wire(Kind::TextValue(String::new()))),
            (
                Value::bytes([0, 0xde, 0xad]),
                wire(Kind::BytesValue(vec![0, 0xde, 0xad])),
            ),
            (Value::bytes([]), wire(Kind::BytesValue(Vec::new()))),
            (
                Value::json(r#"{"a":[1,null]}"#),
                wire(Kind::JsonValue(r#"{"a":[1,null]}"#.into())),
            ),
            (
                Value::Uuid(*b"0123456789abcdef"),
                wire(Kind::UuidValue(b"0123456789abcdef".to_vec())),
            ),
            (Value::Date(-1), wire(Kind::DateValue(-1))),
            (Value::Date(i32::MAX), wire(Kind::DateValue(i32::MAX))),
            (
                Value::Time(86_399_999_999),
                wire(Kind::TimeValue(86_399_999_999)),
            ),
            (
                Value::TimeTz {
                    micros: 3_600_000_000,
                    offset_seconds: -19_800,
                },
                wire(Kind::TimetzValue(wire::TimeTz {
                    micros: 3_600_000_000,
                    offset_seconds: -19_800,
                })),
            ),
            (
                Value::Timestamp(-1_000_000),
                wire(Kind::TimestampValue(-1_000_000)),
            ),
            (
                Value::TimestampTz(1_700_000_000_123_456),
                wire(Kind::TimestamptzValue(1_700_000_000_123_456)),
            ),
            (
                Value::TimestampTz(i64::MIN),
                wire(Kind::TimestamptzValue(i64::MIN)),
            ),
            (
                Value::Interval {
                    months: 14,
                    days: -3,
                    micros: 4_000_001,
                },
                wire(Kind::IntervalValue(wire::Interval {
                    months: 14,
                    days: -3,
                    micros: 4_000_001,
                })),
            ),
            (
                Value::array([Value::Int64(1), Value::Null, Value::text("x")]),
                wire(Kind::ArrayValue(wire::ValueList {
                    values: vec![
                        wire(Kind::Int64Value(1)),
                        null(),
                        wire(Kind::TextValue("x".into())),
                    ],
                })),
            ),
            (
                Value::array([Value::array([Value::Bool(true)]), Value::array([])]),
                wire(Kind::ArrayValue(wire::ValueList {
                    values: vec![
                        wire(Kind::ArrayValue(wire::ValueList {
                            values: vec![wire(Kind::BoolValue(true))],
                        })),
                        wire(Kind::ArrayValue(wire::ValueList { values: vec![] })),
                    ],
                })),
            ),
        ]
    }

    #[test]
    fn every_kind_maps_to_its_own_wire_kind() {
        for (value, expected) in every_kind() {
            // prost's PartialEq compares floats by value, so compare the encodings
            // (bit-exact, and NaN equals NaN).
            assert_eq!(
                wire::Value::from(&value).encode_to_vec(),
                expected.encode_to_vec(),
                "{value:?}"
            );
            assert_eq!(Value::try_from(&expected), Ok(value));
        }
    }

    #[test]
    fn every_kind_round_trips_through_encoded_bytes() {
        for (value, _) in every_kind() {
            let bytes = wire::Value::from(&value).encode_to_vec();
            let decoded = wire::Value::decode(bytes.as_slice()).expect("decodes");
            // Value's PartialEq compares floats bit for bit: -0.0 and NaN must survive.
            assert_eq!(Value::try_from(&decoded), Ok(value));
        }
    }

    #[test]
    fn unchanged_toast_marker_is_sent_as_null() {
        let sent = wire::Value::from(&Value::UnchangedToast);
        assert_eq!(Value::try_from(&sent), Ok(Value::Null));
    }

    #[test]
    fn a_value_without_kind_is_rejected() {
        assert_eq!(
            Value::try_from(&wire::Value { kind: None }),
            Err(ConversionError::MissingValueKind)
        );
        let in_array = wire(Kind::ArrayValue(wire::ValueList {
            values: vec![wire::Value { kind: None }],
        }));
        assert_eq!(
            Value::try_from(&in_array),
            Err(ConversionError::MissingValueKind)
        );
    }

    #[test]
    fn a_uuid_of_the_wrong_length_is_rejected() {
        assert_eq!(
            Value::try_from(&wire(Kind::UuidValue(vec![1; 15]))),
            Err(ConversionError::UuidLength { len: 15 })
        );
    }

    #[test]
    fn rows_round_trip_in_column_order() {
        let row = laredo_core::row! {"id" => 7, "name" => "ann", "gone" => Value::Null};
        let sent = wire::Row::from(&row);
        assert_eq!(sent.columns, ["id", "name", "gone"]);
        let bytes = sent.encode_to_vec();
        let back = Row::try_from(&wire::Row::decode(bytes.as_slice()).expect("decodes"))
            .expect("valid row");
        assert_eq!(back, row);
        let columns: Vec<&str> = back.columns().iter().map(|c| &**c).collect();
        assert_eq!(columns, ["id", "name", "gone"]);
    }

    #[test]
    fn a_row_with_every_kind_round_trips() {
        let row = Row::from_pairs(
            every_kind()
                .into_iter()
                .enumerate()
                .map(|(idx, (value, _))| (format!("c{idx}"), value)),
        );
        assert_eq!(Row::try_from(&wire::Row::from(&row)), Ok(row));
    }

    #[test]
    fn the_decoder_shares_a_layout_between_rows_of_one_shape() {
        let mut decoder = RowDecoder::new();
        let first = decoder
            .decode(&wire::Row::from(
                &laredo_core::row! {"id" => 1, "name" => "a"},
            ))
            .expect("valid");
        let second = decoder
            .decode(&wire::Row::from(
                &laredo_core::row! {"id" => 2, "name" => "b"},
            ))
            .expect("valid");
        let other = decoder
            .decode(&wire::Row::from(&laredo_core::row! {"id" => 3}))
            .expect("valid");
        assert!(Arc::ptr_eq(first.layout(), second.layout()));
        assert!(!Arc::ptr_eq(first.layout(), other.layout()));
        assert_eq!(second, laredo_core::row! {"id" => 2, "name" => "b"});
        assert_eq!(other, laredo_core::row! {"id" => 3});
    }

    #[test]
    fn positional_rows_take_the_columns_set_for_them() {
        let mut decoder = RowDecoder::new();
        let full = wire::Row::from(&laredo_core::row! {"id" => 1, "name" => "a"});
        let positional = wire::Row {
            columns: Vec::new(),
            values: full.values.clone(),
        };
        assert_eq!(
            decoder.decode(&positional),
            Err(ConversionError::UnknownColumns { values: 2 })
        );
        decoder.set_positional_columns(["id", "name"]);
        let first = decoder.decode(&positional).expect("positional");
        assert_eq!(first, laredo_core::row! {"id" => 1, "name" => "a"});
        let second = decoder.decode(&positional).expect("positional");
        assert!(Arc::ptr_eq(first.layout(), second.layout()));
        // Rows with names are unaffected; an empty row stays empty.
        let keyed = wire::Row::from(&laredo_core::row! {"id" => 7});
        assert_eq!(decoder.decode(&keyed), Ok(laredo_core::row! {"id" => 7}));
        assert_eq!(
            decoder.decode(&wire::Row::default()).map(|r| r.len()),
            Ok(0)
        );
        // After a schema change, the new columns.
        decoder.set_positional_columns(["id", "name", "age"]);
        assert_eq!(
            decoder.decode(&positional),
            Err(ConversionError::RowLength {
                columns: 3,
                values: 2
            })
        );
    }

    #[test]
    fn malformed_rows_are_rejected() {
        let value = || wire(Kind::Int64Value(1));
        let short = wire::Row {
            columns: vec!["a".into(), "b".into()],
            values: vec![value()],
        };
        assert_eq!(
            Row::try_from(&short),
            Err(ConversionError::RowLength {
                columns: 2,
                values: 1
            })
        );
        let repeated = wire::Row {
            columns: vec!["a".into(), "a".into()],
            values: vec![value(), value()],
        };
        assert_eq!(
            Row::try_from(&repeated),
            Err(ConversionError::DuplicateColumn { column: "a".into() })
        );
        let bad_value = wire::Row {
            columns: vec!["id".into()],
            values: vec![wire::Value { kind: None }],
        };
        let err = Row::try_from(&bad_value).expect_err("no kind");
        assert_eq!(
            err,
            ConversionError::Column {
                column: "id".into(),
                source: Box::new(ConversionError::MissingValueKind)
            }
        );
        assert_eq!(err.to_string(), r#"column "id""#);
    }

    #[test]
    fn column_definitions_round_trip() {
        let mut column = ColumnDefinition::new("id", "int8")
            .primary_key(2)
            .ordinal(3)
            .oid(20);
        column.default_value = Some("nextval('s')".into());
        column.max_length = 64;
        let sent = wire::ColumnDefinition::from(&column);
        assert!(sent.not_null && sent.is_primary_key);
        assert_eq!(ColumnDefinition::from(&sent), column);
        let plain = ColumnDefinition::new("name", "text");
        assert_eq!(
            ColumnDefinition::from(&wire::ColumnDefinition::from(&plain)),
            plain
        );
    }

    #[test]
    fn change_actions_round_trip() {
        for action in [
            ChangeAction::Insert,
            ChangeAction::Update,
            ChangeAction::Delete,
            ChangeAction::Truncate,
        ] {
            let sent = wire::ChangeAction::from(action);
            assert_eq!(sent.as_str_name(), format!("CHANGE_ACTION_{action}"));
            assert_eq!(ChangeAction::try_from(sent), Ok(action));
        }
        assert_eq!(
            ChangeAction::try_from(wire::ChangeAction::Unspecified),
            Err(ConversionError::UnknownChangeAction { value: 0 })
        );
    }
}
