//! Rows out of pgoutput tuples.
//!
//! The stream sends column values in text (`t`) or binary (`b`) form, NULL (`n`), or
//! `u` for an unchanged TOASTed value it did not send. Each value is mapped by its
//! column's type OID with [`crate::types::parse_text`]. An update whose old row the
//! server sent in full (`REPLICA IDENTITY FULL`) takes unchanged TOAST values from it;
//! otherwise they stay [`Value::UnchangedToast`] for the engine to fill in.

use std::sync::Arc;

use laredo_core::{Row, SourceError, Value};

use super::relations::RelationInfo;
use crate::pgoutput::{Tuple, TupleValue};
use crate::types::parse_text;

/// The value of column `idx`.
fn value_of(rel: &RelationInfo, idx: usize, value: &TupleValue) -> Result<Value, SourceError> {
    Ok(match value {
        TupleValue::Null => Value::Null,
        TupleValue::UnchangedToast => Value::UnchangedToast,
        TupleValue::Text(bytes) | TupleValue::Binary(bytes) => {
            let text = std::str::from_utf8(bytes).map_err(|e| {
                SourceError::with_source(
                    format!(
                        "{}: column {} is not UTF-8",
                        rel.table,
                        rel.layout.names()[idx]
                    ),
                    e,
                )
            })?;
            parse_text(rel.oids[idx], text).map_err(|e| {
                SourceError::with_source(
                    format!("{}: column {}", rel.table, rel.layout.names()[idx]),
                    e,
                )
            })?
        }
    })
}

/// A whole row; unchanged TOAST values are taken from `old` when the server sent the
/// whole old row.
pub(super) fn tuple_row(
    rel: &RelationInfo,
    tuple: &Tuple,
    old: Option<&Tuple>,
) -> Result<Row, SourceError> {
    if tuple.len() != rel.oids.len() {
        return Err(SourceError::msg(format!(
            "{}: a row of {} columns, the relation has {}",
            rel.table,
            tuple.len(),
            rel.oids.len()
        )));
    }
    let mut values = Vec::with_capacity(tuple.len());
    for (idx, value) in tuple.iter().enumerate() {
        let value = match (value, old.and_then(|o| o.get(idx))) {
            (TupleValue::UnchangedToast, Some(previous)) => value_of(rel, idx, previous)?,
            _ => value_of(rel, idx, value)?,
        };
        values.push(value);
    }
    Ok(Row::new(Arc::clone(&rel.layout), values))
}

/// What could be read of a row that did not decode: each column's text as sent
/// (invalid UTF-8 replaced), for the dead letter store. A key tuple (`K`) carries
/// only the key columns: the others read as NULL.
pub(super) fn raw_row(rel: &RelationInfo, tuple: &Tuple) -> Row {
    let values = (0..rel.oids.len())
        .map(|idx| match tuple.get(idx) {
            Some(TupleValue::Text(bytes) | TupleValue::Binary(bytes)) => {
                Value::text(String::from_utf8_lossy(bytes).as_ref())
            }
            _ => Value::Null,
        })
        .collect();
    Row::new(Arc::clone(&rel.layout), values)
}

/// The replica identity key columns of a `K` old tuple.
pub(super) fn key_row(rel: &RelationInfo, tuple: &Tuple) -> Result<Row, SourceError> {
    let mut values = Vec::with_capacity(rel.key_indexes.len());
    for &idx in &rel.key_indexes {
        let value = tuple.get(idx).unwrap_or(&TupleValue::Null);
        values.push(value_of(rel, idx, value)?);
    }
    Ok(Row::new(Arc::clone(&rel.key_layout), values))
}
