//! Column values: one closed enum for every PostgreSQL value kind.
//!
//! Sources map their native types onto [`Value`]; targets, filters and transforms only
//! ever see these variants. Two forms matter beyond the enum itself:
//!
//! - the **canonical key bytes** ([`Value::write_key`]): the byte string used to build
//!   index keys and to compare values with numeric normalisation (`Int64(1)`,
//!   `Float64(1.0)` and `Numeric("1.00")` produce the same key);
//! - the **canonical text** ([`Value::to_canonical_string`]): ints as decimal, floats
//!   as their shortest round-trip form, bools as `true`/`false`, null as `<nil>`.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::time;

/// A dynamic column value.
///
/// Cloning is cheap: variable-length payloads are reference counted.
///
/// `UnchangedToast` is a marker a source may use internally for a PostgreSQL TOAST
/// column that an update did not change. It never reaches a target: the PostgreSQL
/// source merges the previous value in before emitting the change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Value {
    /// SQL NULL.
    #[default]
    Null,
    /// `bool`.
    Bool(bool),
    /// `int2`, `int4`, `int8` (and `oid`-like integer types).
    Int64(i64),
    /// `float4`, `float8`.
    Float64(f64),
    /// `numeric`, kept exact as its decimal text (`"12.500"`, `"NaN"`).
    Numeric(Arc<str>),
    /// `text`, `varchar`, `char`, `name`, enums, and any type without a richer mapping.
    Text(Arc<str>),
    /// `bytea`.
    Bytes(Arc<[u8]>),
    /// `json`/`jsonb`, as JSON text.
    Json(Arc<str>),
    /// `uuid`.
    Uuid([u8; 16]),
    /// `date`: days since 1970-01-01 (`i32::MIN`/`i32::MAX` are `-infinity`/`infinity`).
    Date(i32),
    /// `time`: microseconds since midnight.
    Time(i64),
    /// `timetz`: microseconds since midnight and the UTC offset in seconds (east positive).
    TimeTz {
        /// Microseconds since midnight.
        micros: i64,
        /// UTC offset in seconds, east of Greenwich positive.
        offset_seconds: i32,
    },
    /// `timestamp` (without time zone): microseconds since 1970-01-01 00:00:00.
    /// `i64::MIN`/`i64::MAX` are `-infinity`/`infinity`.
    Timestamp(i64),
    /// `timestamptz`: microseconds since the Unix epoch, UTC.
    /// `i64::MIN`/`i64::MAX` are `-infinity`/`infinity`.
    TimestampTz(i64),
    /// `interval`, with PostgreSQL's three fields.
    Interval {
        /// Months.
        months: i32,
        /// Days.
        days: i32,
        /// Microseconds.
        micros: i64,
    },
    /// Arrays of any element type (multi-dimensional arrays nest).
    Array(Arc<[Value]>),
    /// Internal marker for an unchanged TOAST column; never delivered to a target.
    UnchangedToast,
}

/// The kind of a [`Value`], without its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValueKind {
    /// [`Value::Null`]
    Null,
    /// [`Value::Bool`]
    Bool,
    /// [`Value::Int64`]
    Int64,
    /// [`Value::Float64`]
    Float64,
    /// [`Value::Numeric`]
    Numeric,
    /// [`Value::Text`]
    Text,
    /// [`Value::Bytes`]
    Bytes,
    /// [`Value::Json`]
    Json,
    /// [`Value::Uuid`]
    Uuid,
    /// [`Value::Date`]
    Date,
    /// [`Value::Time`]
    Time,
    /// [`Value::TimeTz`]
    TimeTz,
    /// [`Value::Timestamp`]
    Timestamp,
    /// [`Value::TimestampTz`]
    TimestampTz,
    /// [`Value::Interval`]
    Interval,
    /// [`Value::Array`]
    Array,
    /// [`Value::UnchangedToast`]
    UnchangedToast,
}

// Tags of the canonical key encoding. Numbers share one tag per normalised form so that
// `Int64(2)`, `Float64(2.0)` and `Numeric("2.0")` compare equal.
const KEY_NULL: u8 = 0;
const KEY_BOOL: u8 = 1;
const KEY_INT: u8 = 2;
const KEY_FLOAT: u8 = 3;
const KEY_DECIMAL: u8 = 4;
const KEY_TEXT: u8 = 5;
const KEY_BYTES: u8 = 6;
const KEY_JSON: u8 = 7;
const KEY_UUID: u8 = 8;
const KEY_DATE: u8 = 9;
const KEY_TIME: u8 = 10;
const KEY_TIMETZ: u8 = 11;
const KEY_TIMESTAMP: u8 = 12;
const KEY_TIMESTAMPTZ: u8 = 13;
const KEY_INTERVAL: u8 = 14;
const KEY_ARRAY: u8 = 15;
const KEY_TOAST: u8 = 16;

impl Value {
    /// Builds a [`Value::Text`].
    pub fn text(s: impl AsRef<str>) -> Self {
        Value::Text(Arc::from(s.as_ref()))
    }

    /// Builds a [`Value::Numeric`] from its decimal text (not validated).
    pub fn numeric(s: impl AsRef<str>) -> Self {
        Value::Numeric(Arc::from(s.as_ref()))
    }

    /// Builds a [`Value::Json`] from JSON text (not validated).
    pub fn json(s: impl AsRef<str>) -> Self {
        Value::Json(Arc::from(s.as_ref()))
    }

    /// Builds a [`Value::Bytes`].
    pub fn bytes(b: impl AsRef<[u8]>) -> Self {
        Value::Bytes(Arc::from(b.as_ref()))
    }

    /// Builds a [`Value::Array`].
    pub fn array(items: impl IntoIterator<Item = Value>) -> Self {
        Value::Array(items.into_iter().collect())
    }

    /// The kind of this value.
    pub fn kind(&self) -> ValueKind {
        match self {
            Value::Null => ValueKind::Null,
            Value::Bool(_) => ValueKind::Bool,
            Value::Int64(_) => ValueKind::Int64,
            Value::Float64(_) => ValueKind::Float64,
            Value::Numeric(_) => ValueKind::Numeric,
            Value::Text(_) => ValueKind::Text,
            Value::Bytes(_) => ValueKind::Bytes,
            Value::Json(_) => ValueKind::Json,
            Value::Uuid(_) => ValueKind::Uuid,
            Value::Date(_) => ValueKind::Date,
            Value::Time(_) => ValueKind::Time,
            Value::TimeTz { .. } => ValueKind::TimeTz,
            Value::Timestamp(_) => ValueKind::Timestamp,
            Value::TimestampTz(_) => ValueKind::TimestampTz,
            Value::Interval { .. } => ValueKind::Interval,
            Value::Array(_) => ValueKind::Array,
            Value::UnchangedToast => ValueKind::UnchangedToast,
        }
    }

    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The string payload of `Text`, `Numeric` and `Json`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) | Value::Numeric(s) | Value::Json(s) => Some(s),
            _ => None,
        }
    }

    /// The integer payload of `Int64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int64(v) => Some(*v),
            _ => None,
        }
    }

    /// The numeric payload of `Int64` or `Float64` as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float64(v) => Some(*v),
            #[expect(clippy::cast_precision_loss, reason = "documented lossy view")]
            Value::Int64(v) => Some(*v as f64),
            _ => None,
        }
    }

    /// The payload of `Bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(v) => Some(*v),
            _ => None,
        }
    }

    /// Appends the canonical key bytes of this value to `out`.
    ///
    /// Two values produce the same bytes exactly when they are equal under numeric
    /// normalisation: integral floats and integral decimals encode like integers,
    /// `-0.0` like `0.0`, every NaN alike, and decimals without trailing zeros.
    pub fn write_key(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.push(KEY_NULL),
            Value::Bool(b) => out.extend_from_slice(&[KEY_BOOL, u8::from(*b)]),
            Value::Int64(v) => write_key_int(*v, out),
            Value::Float64(f) => write_key_float(*f, out),
            Value::Numeric(s) => write_key_decimal(s, out),
            Value::Text(s) => write_key_len_prefixed(KEY_TEXT, s.as_bytes(), out),
            Value::Bytes(b) => write_key_len_prefixed(KEY_BYTES, b, out),
            Value::Json(s) => write_key_len_prefixed(KEY_JSON, s.as_bytes(), out),
            Value::Uuid(u) => {
                out.push(KEY_UUID);
                out.extend_from_slice(u);
            }
            Value::Date(d) => {
                out.push(KEY_DATE);
                out.extend_from_slice(&d.to_be_bytes());
            }
            Value::Time(t) => {
                out.push(KEY_TIME);
                out.extend_from_slice(&t.to_be_bytes());
            }
            Value::TimeTz {
                micros,
                offset_seconds,
            } => {
                out.push(KEY_TIMETZ);
                out.extend_from_slice(&micros.to_be_bytes());
                out.extend_from_slice(&offset_seconds.to_be_bytes());
            }
            Value::Timestamp(t) => {
                out.push(KEY_TIMESTAMP);
                out.extend_from_slice(&t.to_be_bytes());
            }
            Value::TimestampTz(t) => {
                out.push(KEY_TIMESTAMPTZ);
                out.extend_from_slice(&t.to_be_bytes());
            }
            Value::Interval {
                months,
                days,
                micros,
            } => {
                out.push(KEY_INTERVAL);
                out.extend_from_slice(&months.to_be_bytes());
                out.extend_from_slice(&days.to_be_bytes());
                out.extend_from_slice(&micros.to_be_bytes());
            }
            Value::Array(items) => {
                out.push(KEY_ARRAY);
                out.extend_from_slice(&(items.len() as u64).to_be_bytes());
                for item in items.iter() {
                    item.write_key(out);
                }
            }
            Value::UnchangedToast => out.push(KEY_TOAST),
        }
    }

    /// The canonical key bytes of this value (see [`Value::write_key`]).
    pub fn key_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_key(&mut out);
        out
    }

    /// Equality with numeric normalisation (`Int64(1)` equals `Float64(1.0)`).
    pub fn eq_normalized(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Int64(a), Value::Int64(b)) => a == b,
            (Value::Text(a), Value::Text(b)) => a == b,
            _ => self.key_bytes() == other.key_bytes(),
        }
    }

    /// The canonical text form used for display and composite key strings.
    pub fn to_canonical_string(&self) -> String {
        self.to_string()
    }

    /// Plain JSON for humans and HTTP payloads: numbers as numbers (numeric as a
    /// string to stay exact), times as ISO 8601 strings, bytes as `\x`-hex, JSON
    /// columns inlined.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null | Value::UnchangedToast => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int64(v) => J::from(*v),
            Value::Float64(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or_else(|| J::String(self.to_string())),
            Value::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| J::String(s.to_string())),
            Value::Array(items) => J::Array(items.iter().map(Value::to_json).collect()),
            Value::Text(s) | Value::Numeric(s) => J::String(s.to_string()),
            other => J::String(other.to_string()),
        }
    }

    /// The number of bytes the value's payload occupies in its natural binary form
    /// (8 for an `int8`, the UTF-8 length of a text, ...). Used to report memory
    /// overhead against the raw data size.
    pub fn raw_size(&self) -> usize {
        match self {
            Value::Null | Value::UnchangedToast => 0,
            Value::Bool(_) => 1,
            Value::Int64(_)
            | Value::Float64(_)
            | Value::Time(_)
            | Value::Timestamp(_)
            | Value::TimestampTz(_) => 8,
            Value::Date(_) => 4,
            Value::TimeTz { .. } => 12,
            Value::Interval { .. } | Value::Uuid(_) => 16,
            Value::Numeric(s) | Value::Text(s) | Value::Json(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Array(items) => items.iter().map(Value::raw_size).sum(),
        }
    }
}

fn write_key_int(v: i64, out: &mut Vec<u8>) {
    out.push(KEY_INT);
    out.extend_from_slice(&v.to_be_bytes());
}

fn write_key_float(f: f64, out: &mut Vec<u8>) {
    // Integral floats inside the exact i64 range are keyed as integers.
    #[expect(clippy::cast_possible_truncation, reason = "checked round trip below")]
    let as_int = f as i64;
    #[expect(clippy::cast_precision_loss, reason = "checked round trip")]
    if f.is_finite()
        && f.fract() == 0.0
        && (as_int as f64) == f
        && f.abs() < 9.007_199_254_740_992e15
    {
        write_key_int(as_int, out);
        return;
    }
    let bits = if f.is_nan() {
        f64::NAN.to_bits()
    } else if f == 0.0 {
        0
    } else {
        f.to_bits()
    };
    out.push(KEY_FLOAT);
    out.extend_from_slice(&bits.to_be_bytes());
}

fn write_key_decimal(s: &str, out: &mut Vec<u8>) {
    let normalized = normalize_decimal(s);
    if let Ok(int) = normalized.parse::<i64>() {
        write_key_int(int, out);
    } else if let Some(f) = exact_float(&normalized) {
        write_key_float(f, out);
    } else {
        write_key_len_prefixed(KEY_DECIMAL, normalized.as_bytes(), out);
    }
}

/// A decimal whose value is exactly representable as f64 with few digits keys like the
/// float, so `Float64(1.5)` equals `Numeric("1.50")`.
fn exact_float(normalized: &str) -> Option<f64> {
    let f: f64 = normalized.parse().ok()?;
    (f.is_finite() && format_float(f) == normalized).then_some(f)
}

/// Strips a leading `+`, leading zeros of the integer part and trailing zeros of the
/// fraction: `"+007.500"` → `"7.5"`, `"-0.0"` → `"0"`.
fn normalize_decimal(s: &str) -> String {
    let s = s.trim();
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') || digits.is_empty() {
        return s.to_string();
    }
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let int_part = int_part.trim_start_matches('0');
    let frac_part = frac_part.trim_end_matches('0');
    let int_part = if int_part.is_empty() { "0" } else { int_part };
    let is_zero = int_part == "0" && frac_part.is_empty();
    let mut out = String::with_capacity(s.len());
    if negative && !is_zero {
        out.push('-');
    }
    out.push_str(int_part);
    if !frac_part.is_empty() {
        out.push('.');
        out.push_str(frac_part);
    }
    out
}

fn write_key_len_prefixed(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Formats a float in its shortest round-trip form (`1`, `1.5`, `1e300`, `NaN`).
pub(crate) fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_string()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
    } else {
        format!("{f}")
    }
}

impl PartialEq for Value {
    /// Structural equality with one exception: floats compare by bit pattern so that
    /// equality is reflexive (NaN equals NaN). Use [`Value::eq_normalized`] to compare
    /// across numeric kinds.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Float64(a), Value::Float64(b)) => a.to_bits() == b.to_bits(),
            (Value::Null, Value::Null) | (Value::UnchangedToast, Value::UnchangedToast) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int64(a), Value::Int64(b)) => a == b,
            (Value::Numeric(a), Value::Numeric(b))
            | (Value::Text(a), Value::Text(b))
            | (Value::Json(a), Value::Json(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::Uuid(a), Value::Uuid(b)) => a == b,
            (Value::Date(a), Value::Date(b)) => a == b,
            (Value::Time(a), Value::Time(b))
            | (Value::Timestamp(a), Value::Timestamp(b))
            | (Value::TimestampTz(a), Value::TimestampTz(b)) => a == b,
            (
                Value::TimeTz {
                    micros: a,
                    offset_seconds: ao,
                },
                Value::TimeTz {
                    micros: b,
                    offset_seconds: bo,
                },
            ) => a == b && ao == bo,
            (
                Value::Interval {
                    months: am,
                    days: ad,
                    micros: au,
                },
                Value::Interval {
                    months: bm,
                    days: bd,
                    micros: bu,
                },
            ) => am == bm && ad == bd && au == bu,
            (Value::Array(a), Value::Array(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl fmt::Display for Value {
    /// The canonical text form: ints as decimal, floats shortest round-trip, bools as
    /// `true`/`false`, null as `<nil>`, times in ISO 8601, bytes as `\x`-hex, UUIDs
    /// hyphenated, arrays as `{a,b}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("<nil>"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int64(v) => write!(f, "{v}"),
            Value::Float64(v) => f.write_str(&format_float(*v)),
            Value::Numeric(s) | Value::Text(s) | Value::Json(s) => f.write_str(s),
            Value::Bytes(b) => {
                f.write_str("\\x")?;
                for byte in b.iter() {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
            Value::Uuid(u) => time::write_uuid(f, u),
            Value::Date(d) => time::write_date(f, *d),
            Value::Time(t) => time::write_time(f, *t),
            Value::TimeTz {
                micros,
                offset_seconds,
            } => {
                time::write_time(f, *micros)?;
                time::write_offset(f, *offset_seconds)
            }
            Value::Timestamp(t) => time::write_timestamp(f, *t, false),
            Value::TimestampTz(t) => time::write_timestamp(f, *t, true),
            Value::Interval {
                months,
                days,
                micros,
            } => time::write_interval(f, *months, *days, *micros),
            Value::Array(items) => {
                f.write_str("{")?;
                for (idx, item) in items.iter().enumerate() {
                    if idx > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("}")
            }
            Value::UnchangedToast => f.write_str("<unchanged-toast>"),
        }
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self { Value::Int64(i64::from(v)) }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32);

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float64(v)
    }
}

impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Float64(f64::from(v))
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(Arc::from(v))
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(Arc::from(v))
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(Arc::from(v.as_str()))
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(Arc::from(v))
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_kinds_normalise_in_keys() {
        assert!(Value::Int64(2).eq_normalized(&Value::Float64(2.0)));
        assert!(Value::Int64(2).eq_normalized(&Value::numeric("2.000")));
        assert!(Value::Float64(1.5).eq_normalized(&Value::numeric("+01.50")));
        assert!(Value::Float64(-0.0).eq_normalized(&Value::Int64(0)));
        assert!(!Value::Int64(2).eq_normalized(&Value::text("2")));
        assert!(!Value::Float64(2.5).eq_normalized(&Value::Int64(2)));
        assert!(Value::Float64(f64::NAN).eq_normalized(&Value::Float64(f64::NAN)));
        assert_eq!(normalize_decimal("-0.000"), "0");
        assert_eq!(
            normalize_decimal("123456789012345678901234567890.10"),
            "123456789012345678901234567890.1"
        );
    }

    #[test]
    fn key_bytes_do_not_collide_across_lengths() {
        let a = [Value::text("ab"), Value::text("c")];
        let b = [Value::text("a"), Value::text("bc")];
        let key = |vals: &[Value]| {
            let mut out = Vec::new();
            vals.iter().for_each(|v| v.write_key(&mut out));
            out
        };
        assert_ne!(key(&a), key(&b));
    }

    #[test]
    fn canonical_strings() {
        assert_eq!(Value::Null.to_string(), "<nil>");
        assert_eq!(Value::Float64(0.1).to_string(), "0.1");
        assert_eq!(Value::Float64(3.0).to_string(), "3");
        assert_eq!(Value::bytes([0xde, 0xad]).to_string(), "\\xdead");
        assert_eq!(
            Value::array([Value::Int64(1), Value::Null]).to_string(),
            "{1,<nil>}"
        );
        assert_eq!(Value::TimestampTz(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Value::Date(-1).to_string(), "1969-12-31");
    }

    #[test]
    fn serde_round_trip_keeps_kinds() {
        let values = vec![
            Value::Int64(7),
            Value::Float64(7.0),
            Value::numeric("7.10"),
            Value::TimestampTz(1_700_000_000_123_456),
            Value::Uuid([7; 16]),
            Value::array([Value::text("x")]),
        ];
        let json = serde_json::to_string(&values).unwrap();
        let back: Vec<Value> = serde_json::from_str(&json).unwrap();
        assert_eq!(values, back);
    }
}
