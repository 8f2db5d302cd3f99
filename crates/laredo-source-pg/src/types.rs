//! PostgreSQL values in text format → [`Value`].
//!
//! The source pins its sessions to `DateStyle=ISO`, `TimeZone=UTC`,
//! `IntervalStyle=iso_8601`, `bytea_output=hex` and `extra_float_digits=3`
//! ([`SESSION_SETTINGS`]), so every text form parsed here has one shape. The mapping
//! table is in `docs/pg-types.md`. A type without a richer mapping (enums, `inet`,
//! geometric types, ranges, ...) becomes [`Value::Text`] with the server's text; a
//! domain maps as its base type once the source resolved it. An infinite `interval`
//! (PostgreSQL 17) maps to its binary sentinel: every field `MAX` (`infinity`) or `MIN`
//! (`-infinity`).
//!
//! [`crate::binary::parse_binary`] maps the binary send formats to the same values.

use std::sync::Arc;

use laredo_core::Value;
use laredo_core::time::days_from_civil;

/// Session settings every laredo connection sets, so text values parse unambiguously.
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "iso_8601"),
    ("bytea_output", "hex"),
    ("extra_float_digits", "3"),
];

/// A text value that does not parse as its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {text:?} as {type_name} (type oid {oid})")]
pub struct TypeError {
    /// The type's OID.
    pub oid: u32,
    /// A short name of the expected type.
    pub type_name: &'static str,
    /// The text (cut to 64 bytes); for a binary value, its first bytes as `\x` hex.
    pub text: String,
}

/// What a type OID maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Int,
    Float,
    Numeric,
    Text,
    Bytes,
    Json,
    Uuid,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    Interval,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::Int => "integer",
            Kind::Float => "float",
            Kind::Numeric => "numeric",
            Kind::Text => "text",
            Kind::Bytes => "bytea",
            Kind::Json => "json",
            Kind::Uuid => "uuid",
            Kind::Date => "date",
            Kind::Time => "time",
            Kind::TimeTz => "timetz",
            Kind::Timestamp => "timestamp",
            Kind::TimestampTz => "timestamptz",
            Kind::Interval => "interval",
        }
    }
}

/// The scalar kind of a built-in type OID.
pub(crate) fn scalar_kind(oid: u32) -> Option<Kind> {
    Some(match oid {
        16 => Kind::Bool,
        20 | 21 | 23 | 26 | 28 => Kind::Int, // int8, int2, int4, oid, xid
        700 | 701 => Kind::Float,
        1700 => Kind::Numeric,
        17 => Kind::Bytes,
        114 | 3802 => Kind::Json,
        2950 => Kind::Uuid,
        1082 => Kind::Date,
        1083 => Kind::Time,
        1266 => Kind::TimeTz,
        1114 => Kind::Timestamp,
        1184 => Kind::TimestampTz,
        1186 => Kind::Interval,
        25 | 1042 | 1043 | 19 | 18 => Kind::Text, // text, bpchar, varchar, name, char
        _ => return None,
    })
}

/// The element type OID of a built-in array type OID.
pub(crate) fn array_element(oid: u32) -> Option<u32> {
    Some(match oid {
        1000 => 16,
        1016 => 20,
        1005 => 21,
        1007 => 23,
        1028 => 26,
        1021 => 700,
        1022 => 701,
        1231 => 1700,
        1009 => 25,
        1014 => 1042,
        1015 => 1043,
        1003 => 19,
        1001 => 17,
        199 => 114,
        3807 => 3802,
        2951 => 2950,
        1182 => 1082,
        1183 => 1083,
        1270 => 1266,
        1115 => 1114,
        1185 => 1184,
        1187 => 1186,
        _ => return None,
    })
}

/// Parses the text form of a value of type `oid` (an array type parses element-wise;
/// an unknown type stays text).
///
/// # Errors
/// When the text is not a valid value of the type.
pub fn parse_text(oid: u32, text: &str) -> Result<Value, TypeError> {
    if let Some(element) = array_element(oid) {
        return parse_array(oid, element, text);
    }
    match scalar_kind(oid) {
        Some(kind) => parse_scalar(oid, kind, text),
        None => Ok(Value::text(text)),
    }
}

fn fail(oid: u32, kind: Kind, text: &str) -> TypeError {
    let mut cut = text.len().min(64);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    TypeError {
        oid,
        type_name: kind.name(),
        text: text[..cut].to_string(),
    }
}

fn parse_scalar(oid: u32, kind: Kind, text: &str) -> Result<Value, TypeError> {
    let bad = || fail(oid, kind, text);
    Ok(match kind {
        Kind::Bool => match text {
            "t" | "true" => Value::Bool(true),
            "f" | "false" => Value::Bool(false),
            _ => return Err(bad()),
        },
        Kind::Int => Value::Int64(text.parse().map_err(|_| bad())?),
        Kind::Float => Value::Float64(match text {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            _ => text.parse().map_err(|_| bad())?,
        }),
        Kind::Numeric => {
            let valid = matches!(text, "NaN" | "Infinity" | "-Infinity")
                || (!text.is_empty()
                    && text
                        .trim_start_matches(['-', '+'])
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b'.'));
            if !valid {
                return Err(bad());
            }
            Value::Numeric(Arc::from(text))
        }
        Kind::Text => Value::text(text),
        Kind::Json => Value::json(text),
        Kind::Bytes => Value::bytes(parse_hex_bytea(text).ok_or_else(bad)?),
        Kind::Uuid => Value::Uuid(parse_uuid(text).ok_or_else(bad)?),
        Kind::Date => Value::Date(parse_date(text).ok_or_else(bad)?),
        Kind::Time => Value::Time(parse_time(text).ok_or_else(bad)?),
        Kind::TimeTz => {
            let split = text.rfind(['+', '-']).ok_or_else(bad)?;
            let micros = parse_time(&text[..split]).ok_or_else(bad)?;
            let offset_seconds = parse_offset(&text[split..]).ok_or_else(bad)?;
            Value::TimeTz {
                micros,
                offset_seconds,
            }
        }
        Kind::Timestamp => Value::Timestamp(parse_timestamp(text, false).ok_or_else(bad)?),
        Kind::TimestampTz => Value::TimestampTz(parse_timestamp(text, true).ok_or_else(bad)?),
        Kind::Interval => {
            let (months, days, micros) = match text {
                "infinity" => (i32::MAX, i32::MAX, i64::MAX),
                "-infinity" => (i32::MIN, i32::MIN, i64::MIN),
                _ => parse_iso_interval(text).ok_or_else(bad)?,
            };
            Value::Interval {
                months,
                days,
                micros,
            }
        }
    })
}

fn parse_hex_bytea(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn digits(text: &str) -> Option<i64> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// `YYYY-MM-DD` (years may have more digits; ` BC` suffix) → days since 1970-01-01.
fn parse_days(text: &str) -> Option<i64> {
    let (text, bc) = match text.strip_suffix(" BC") {
        Some(t) => (t, true),
        None => (text, false),
    };
    let mut parts = text.splitn(3, '-');
    // PostgreSQL's dates end in 5874897; the bound keeps the arithmetic in range.
    let year = digits(parts.next()?).filter(|year| *year <= 10_000_000)?;
    let month = u32::try_from(digits(parts.next()?)?)
        .ok()
        .filter(|m| (1..=12).contains(m))?;
    let day = u32::try_from(digits(parts.next()?)?)
        .ok()
        .filter(|d| (1..=31).contains(d))?;
    // 1 BC is year 0 in the proleptic calendar.
    let year = if bc { 1 - year } else { year };
    Some(days_from_civil(year, month, day))
}

fn parse_date(text: &str) -> Option<i32> {
    match text {
        "infinity" => Some(i32::MAX),
        "-infinity" => Some(i32::MIN),
        _ => i32::try_from(parse_days(text)?).ok(),
    }
}

/// `HH:MM:SS[.ffffff]` → microseconds.
fn parse_time(text: &str) -> Option<i64> {
    let (hms, frac) = text.split_once('.').unwrap_or((text, ""));
    let mut parts = hms.split(':');
    let h = digits(parts.next()?)?;
    let m = digits(parts.next()?)?;
    let s = digits(parts.next()?)?;
    if parts.next().is_some() || m > 59 || s > 60 || h > 24 {
        return None;
    }
    Some((h * 3600 + m * 60 + s) * 1_000_000 + parse_fraction(frac)?)
}

/// Fractional seconds digits → microseconds.
fn parse_fraction(frac: &str) -> Option<i64> {
    if frac.is_empty() {
        return Some(0);
    }
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(frac.parse::<i64>().ok()? * 10i64.pow(6 - u32::try_from(frac.len()).ok()?))
}

/// `+HH`, `+HH:MM`, `+HH:MM:SS` → seconds east of UTC.
fn parse_offset(text: &str) -> Option<i32> {
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let mut total = 0i64;
    for (part, scale) in text[1..].split(':').zip([3600, 60, 1]) {
        total = total.checked_add(digits(part)?.checked_mul(scale)?)?;
    }
    i32::try_from(sign * total).ok()
}

fn parse_timestamp(text: &str, with_zone: bool) -> Option<i64> {
    match text {
        "infinity" => return Some(i64::MAX),
        "-infinity" => return Some(i64::MIN),
        _ => {}
    }
    let (text, bc) = match text.strip_suffix(" BC") {
        Some(t) => (t, true),
        None => (text, false),
    };
    let (date, rest) = text.split_once(' ')?;
    let (time, offset) = if with_zone {
        let split = rest.rfind(['+', '-'])?;
        (&rest[..split], parse_offset(&rest[split..])?)
    } else {
        (rest, 0)
    };
    let date = if bc {
        format!("{date} BC")
    } else {
        date.to_string()
    };
    let days = parse_days(&date)?;
    // The latest timestamps PostgreSQL accepts (294276 AD) overflow microseconds since
    // 1970 in an i64: they are errors, as in `binary`.
    days.checked_mul(86_400_000_000)?
        .checked_add(parse_time(time)?)?
        .checked_sub(i64::from(offset) * 1_000_000)
}

/// ISO 8601 interval as `IntervalStyle=iso_8601` prints it (`P1Y2M3DT4H5M6.5S`, signed
/// fields) → (months, days, micros).
fn parse_iso_interval(text: &str) -> Option<(i32, i32, i64)> {
    let body = text.strip_prefix('P')?;
    let (date, time) = body.split_once('T').unwrap_or((body, ""));
    let mut months = 0i64;
    let mut days = 0i64;
    let mut micros = 0i64;
    for (number, unit) in fields(date)? {
        let n: i64 = number.parse().ok()?;
        match unit {
            'Y' => months = months.checked_add(n.checked_mul(12)?)?,
            'M' => months = months.checked_add(n)?,
            'W' => days = days.checked_add(n.checked_mul(7)?)?,
            'D' => days = days.checked_add(n)?,
            _ => return None,
        }
    }
    for (number, unit) in fields(time)? {
        let value = match unit {
            'H' => number.parse::<i64>().ok()?.checked_mul(3_600_000_000)?,
            'M' => number.parse::<i64>().ok()?.checked_mul(60_000_000)?,
            'S' => {
                let negative = number.starts_with('-');
                let (whole, frac) = number
                    .trim_start_matches(['-', '+'])
                    .split_once('.')
                    .unwrap_or((number.trim_start_matches(['-', '+']), ""));
                let value = digits(whole)?
                    .checked_mul(1_000_000)?
                    .checked_add(parse_fraction(frac)?)?;
                if negative { -value } else { value }
            }
            _ => return None,
        };
        micros = micros.checked_add(value)?;
    }
    Some((
        i32::try_from(months).ok()?,
        i32::try_from(days).ok()?,
        micros,
    ))
}

/// Splits `1Y-2M3D` into (`"1"`, 'Y'), (`"-2"`, 'M'), (`"3"`, 'D').
fn fields(text: &str) -> Option<Vec<(&str, char)>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c.is_ascii_alphabetic() {
            let number = &text[start..i];
            if number.is_empty() {
                return None;
            }
            out.push((number, c));
            start = i + 1;
        }
    }
    (start == text.len()).then_some(out)
}

/// An array literal (`{1,2}`, `{{a,b},{c,d}}`, `{"x y",NULL}`); multi-dimensional arrays
/// nest. A lower-bound prefix (`[0:1]={...}`) is accepted and dropped.
fn parse_array(oid: u32, element: u32, text: &str) -> Result<Value, TypeError> {
    let bad = || TypeError {
        oid,
        type_name: "array",
        text: text.chars().take(64).collect(),
    };
    let body = match text.split_once("={") {
        Some((bounds, _)) if bounds.starts_with('[') => &text[bounds.len() + 1..],
        _ => text,
    };
    let mut chars = body.char_indices().peekable();
    let value =
        parse_array_level(element, body, &mut chars, 0).map_err(|e| e.unwrap_or_else(bad))?;
    if chars.next().is_some() {
        return Err(bad());
    }
    Ok(value)
}

type Chars<'a> = std::iter::Peekable<std::str::CharIndices<'a>>;

/// Parses one `{...}` level; `Err(None)` is a syntax error.
fn parse_array_level(
    element: u32,
    text: &str,
    chars: &mut Chars<'_>,
    depth: usize,
) -> Result<Value, Option<TypeError>> {
    if depth > 6 || chars.next().map(|(_, c)| c) != Some('{') {
        return Err(None);
    }
    let mut items = Vec::new();
    if chars.peek().map(|(_, c)| *c) == Some('}') {
        chars.next();
        return Ok(Value::array(items));
    }
    loop {
        match chars.peek().map(|(_, c)| *c) {
            Some('{') => items.push(parse_array_level(element, text, chars, depth + 1)?),
            Some('"') => {
                chars.next();
                let mut item = String::new();
                loop {
                    match chars.next().map(|(_, c)| c) {
                        Some('\\') => item.push(chars.next().ok_or(None)?.1),
                        Some('"') => break,
                        Some(c) => item.push(c),
                        None => return Err(None),
                    }
                }
                items.push(parse_text(element, &item).map_err(Some)?);
            }
            Some(_) => {
                let start = chars.peek().map(|(i, _)| *i).ok_or(None)?;
                let mut end = start;
                while let Some(&(i, c)) = chars.peek() {
                    if c == ',' || c == '}' {
                        break;
                    }
                    end = i + c.len_utf8();
                    chars.next();
                }
                let item = text[start..end].trim();
                items.push(if item == "NULL" {
                    Value::Null
                } else {
                    parse_text(element, item).map_err(Some)?
                });
            }
            None => return Err(None),
        }
        match chars.next().map(|(_, c)| c) {
            Some(',') => {}
            Some('}') => return Ok(Value::array(items)),
            _ => return Err(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars() {
        assert_eq!(parse_text(16, "t").unwrap(), Value::Bool(true));
        assert_eq!(
            parse_text(20, "-9223372036854775808").unwrap(),
            Value::Int64(i64::MIN)
        );
        assert_eq!(parse_text(701, "0.1").unwrap(), Value::Float64(0.1));
        assert!(matches!(parse_text(701, "NaN").unwrap(), Value::Float64(f) if f.is_nan()));
        assert_eq!(
            parse_text(1700, "123456789012345678901234567890.000100").unwrap(),
            Value::numeric("123456789012345678901234567890.000100")
        );
        assert_eq!(
            parse_text(17, "\\xdeadbeef").unwrap(),
            Value::bytes([0xde, 0xad, 0xbe, 0xef])
        );
        assert_eq!(
            parse_text(2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
                .unwrap()
                .to_string(),
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
        );
        assert_eq!(parse_text(1082, "1970-01-02").unwrap(), Value::Date(1));
        assert_eq!(
            parse_text(1082, "0001-01-01 BC").unwrap().to_string(),
            "0000-01-01"
        );
        assert_eq!(
            parse_text(1083, "01:02:03.5").unwrap(),
            Value::Time(3_723_500_000)
        );
        assert_eq!(
            parse_text(1266, "01:00:00+02").unwrap(),
            Value::TimeTz {
                micros: 3_600_000_000,
                offset_seconds: 7200
            }
        );
        assert_eq!(
            parse_text(1114, "1970-01-01 00:00:01.000001").unwrap(),
            Value::Timestamp(1_000_001)
        );
        assert_eq!(
            parse_text(1184, "1970-01-01 02:00:00+02").unwrap(),
            Value::TimestampTz(0)
        );
        assert_eq!(
            parse_text(1184, "infinity").unwrap(),
            Value::TimestampTz(i64::MAX)
        );
        assert!(
            parse_text(1184, "294276-12-31 23:59:59+00").is_err(),
            "beyond i64 microseconds since 1970"
        );
        assert_eq!(
            parse_text(1186, "-infinity").unwrap(),
            Value::Interval {
                months: i32::MIN,
                days: i32::MIN,
                micros: i64::MIN
            }
        );
        assert_eq!(
            parse_text(1186, "P1Y2M3DT4H5M6.5S").unwrap(),
            Value::Interval {
                months: 14,
                days: 3,
                micros: 14_706_500_000
            }
        );
        assert_eq!(
            parse_text(1186, "P-1DT-0.25S").unwrap(),
            Value::Interval {
                months: 0,
                days: -1,
                micros: -250_000
            }
        );
        assert_eq!(
            parse_text(12345, "happy").unwrap(),
            Value::text("happy"),
            "unknown types stay text"
        );
    }

    #[test]
    fn arrays() {
        assert_eq!(
            parse_text(1007, "{1,2,NULL}").unwrap(),
            Value::array([Value::Int64(1), Value::Int64(2), Value::Null])
        );
        assert_eq!(
            parse_text(1009, r#"{"a b","c\"d",NULL,"NULL"}"#).unwrap(),
            Value::array([
                Value::text("a b"),
                Value::text("c\"d"),
                Value::Null,
                Value::text("NULL")
            ])
        );
        assert_eq!(
            parse_text(1007, "{{1,2},{3,4}}").unwrap(),
            Value::array([
                Value::array([Value::Int64(1), Value::Int64(2)]),
                Value::array([Value::Int64(3), Value::Int64(4)])
            ])
        );
        assert_eq!(parse_text(1007, "{}").unwrap(), Value::array([]));
        assert_eq!(
            parse_text(1007, "[0:1]={5,6}").unwrap(),
            Value::array([Value::Int64(5), Value::Int64(6)])
        );
    }

    #[test]
    fn bad_text_is_an_error_naming_the_type() {
        let err = parse_text(23, "12x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read \"12x\" as integer (type oid 23)"
        );
        for (oid, text) in [
            (16, "yes"),
            (17, "\\xabc"),
            (2950, "nope"),
            (1082, "2024-13-01"),
            (1186, "1 day"),
            (1186, "PT9999999999999H"),
            (1184, "99999999999999999-01-01 00:00:00+00"),
            (1184, "2024-01-01 00:00:00+99999999999999999"),
            (1007, "{1,2"),
            (1007, "{1,x}"),
        ] {
            assert!(parse_text(oid, text).is_err(), "{oid} {text}");
        }
    }
}
