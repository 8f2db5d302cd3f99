//! Sort keys: a byte encoding of key values whose byte order is the order rows are
//! listed in (`ListRows`), so an ordered index can be a `BTreeMap` of plain bytes.
//!
//! The order: values by kind in a fixed order (NULL first), then naturally within the
//! kind (numbers by value across `int`, `float` and `numeric`, text and bytes by their
//! bytes, times chronologically, arrays element by element), then, for the rare
//! numbers that tie as f64 without being the same key, by their canonical key bytes
//! ([`Value::write_key`]). Two keys that find the same row get the same sort key, and
//! any two others get different ones. A composite key is its values' encodings in turn;
//! each encoding is prefix-free (fixed widths, or escaped and terminated bytes), so the
//! concatenation orders value by value.
//!
//! A `numeric` is parsed once, when its sort key is written, never per comparison.

use laredo_core::Value;

/// Writes the sort key of `values` (a key, in key field order) into `out` (appended).
pub fn write_sort_key<'a>(values: impl IntoIterator<Item = &'a Value>, out: &mut Vec<u8>) {
    for value in values {
        write_value(value, out);
    }
}

/// The sort key of `values` (see [`write_sort_key`]).
pub fn sort_key(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    write_sort_key(values, &mut out);
    out
}

fn rank(value: &Value) -> u8 {
    match value {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Int64(_) | Value::Float64(_) | Value::Numeric(_) => 2,
        Value::Text(_) => 3,
        Value::Json(_) => 4,
        Value::Bytes(_) => 5,
        Value::Uuid(_) => 6,
        Value::Date(_) => 7,
        Value::Time(_) => 8,
        Value::TimeTz { .. } => 9,
        Value::Timestamp(_) => 10,
        Value::TimestampTz(_) => 11,
        Value::Interval { .. } => 12,
        Value::Array(_) => 13,
        Value::UnchangedToast => 14,
        _ => 15,
    }
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    out.push(rank(value));
    match value {
        Value::Null | Value::UnchangedToast => {}
        Value::Bool(b) => out.push(u8::from(*b)),
        Value::Int64(_) | Value::Float64(_) | Value::Numeric(_) => {
            out.extend_from_slice(&float_bits(number(value)).to_be_bytes());
            // Ties as f64 (beyond its precision) are broken by the key bytes.
            write_escaped(&value.key_bytes(), out);
        }
        Value::Text(s) | Value::Json(s) => write_escaped(s.as_bytes(), out),
        Value::Bytes(b) => write_escaped(b, out),
        Value::Uuid(u) => out.extend_from_slice(u),
        Value::Date(d) => write_i32(*d, out),
        Value::Time(t) | Value::Timestamp(t) | Value::TimestampTz(t) => write_i64(*t, out),
        Value::TimeTz {
            micros,
            offset_seconds,
        } => {
            // UTC first, as PostgreSQL orders `timetz`.
            let utc = micros.saturating_sub(i64::from(*offset_seconds).saturating_mul(1_000_000));
            write_i64(utc, out);
            write_i32(*offset_seconds, out);
        }
        Value::Interval {
            months,
            days,
            micros,
        } => {
            write_i32(*months, out);
            write_i32(*days, out);
            write_i64(*micros, out);
        }
        Value::Array(items) => {
            for item in items.iter() {
                out.push(1);
                write_value(item, out);
            }
            // Ends before any further element: a prefix sorts first.
            out.push(0);
        }
        other => write_escaped(&other.key_bytes(), out),
    }
}

/// A number's value as f64, normalised so that values with equal keys map to equal
/// floats (`-0.0` is `0.0`, every NaN the same).
fn number(value: &Value) -> f64 {
    #[expect(
        clippy::cast_precision_loss,
        reason = "an approximation: the key bytes break ties beyond f64 precision"
    )]
    let f = match value {
        Value::Int64(v) => *v as f64,
        Value::Float64(f) => *f,
        Value::Numeric(s) => s.trim().parse::<f64>().unwrap_or(f64::NAN),
        _ => f64::NAN,
    };
    if f.is_nan() {
        f64::NAN
    } else if f == 0.0 {
        0.0
    } else {
        f
    }
}

/// The bits of `f` as an unsigned number in `f64::total_cmp` order.
fn float_bits(f: f64) -> u64 {
    let bits = f.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

fn write_i32(v: i32, out: &mut Vec<u8>) {
    out.extend_from_slice(&(v.cast_unsigned() ^ 1 << 31).to_be_bytes());
}

fn write_i64(v: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(&(v.cast_unsigned() ^ 1 << 63).to_be_bytes());
}

/// Bytes with every 0 escaped as `0 0xff`, ended by `0 1`: prefix-free, and a string
/// sorts before every longer string it starts.
fn write_escaped(bytes: &[u8], out: &mut Vec<u8>) {
    for &byte in bytes {
        out.push(byte);
        if byte == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 1]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_order_by_value_across_kinds() {
        let ordered = [
            Value::Null,
            Value::Float64(f64::NEG_INFINITY),
            Value::Int64(i64::MIN),
            Value::Int64(-10),
            Value::numeric("-2.5"),
            Value::Int64(-1),
            Value::Int64(0),
            Value::Float64(0.5),
            Value::Int64(2),
            Value::numeric("2.0000001"),
            Value::Int64(9_007_199_254_740_993),
            Value::Int64(9_007_199_254_740_994),
            Value::Int64(i64::MAX),
            Value::Float64(f64::INFINITY),
            Value::Float64(f64::NAN),
            Value::text(""),
            Value::text("a"),
            Value::text("a\0"),
            Value::text("aa"),
            Value::text("b"),
        ];
        for (idx, a) in ordered.iter().enumerate() {
            for (jdx, b) in ordered.iter().enumerate() {
                assert_eq!(
                    sort_key(std::slice::from_ref(a)).cmp(&sort_key(std::slice::from_ref(b))),
                    idx.cmp(&jdx),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }

    #[test]
    fn equal_keys_get_equal_sort_keys() {
        let same = [Value::Int64(7), Value::Float64(7.0), Value::numeric("7.00")];
        for a in &same {
            assert_eq!(
                sort_key(std::slice::from_ref(a)),
                sort_key(&[Value::Int64(7)]),
                "{a:?}"
            );
        }
    }

    #[test]
    fn composite_keys_order_value_by_value() {
        let a = sort_key(&[Value::text("a"), Value::Int64(9)]);
        let b = sort_key(&[Value::text("ab"), Value::Int64(1)]);
        let c = sort_key(&[Value::text("b"), Value::Int64(0)]);
        assert!(a < b && b < c);
    }
}
