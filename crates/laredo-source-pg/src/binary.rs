//! PostgreSQL values in binary format (the types' `send` functions) → [`Value`].
//!
//! [`parse_binary`] gives exactly the [`Value`] that [`crate::types::parse_text`] gives
//! for the text form of the same value, so a baseline read in binary and the text
//! stream agree. Binary needs no session settings: dates and timestamps arrive as day
//! and microsecond counts from 2000-01-01, numerics as base-10000 digits, floats as
//! IEEE bits. Where the text form carries information the bits do not, the text form
//! is rebuilt the way the server's output function writes it:
//!
//! - `numeric` becomes the decimal text `numeric_out` prints (display scale kept,
//!   `NaN`, `Infinity`, `-Infinity`);
//! - `float4` becomes the `f64` of the decimal `float4out` prints with
//!   `extra_float_digits > 0` (PostgreSQL's Ryu: the shortest decimal strictly inside
//!   the rounding interval, ties to even), not the widened `f32` bits: `0.1::float4`
//!   is `0.1`, as in text; every NaN becomes [`f64::NAN`] (`float8` keeps its bits:
//!   its text parses back to them);
//! - `"char"` with its high bit set becomes the octal escape `charout` prints
//!   (`\351`), and `'\0'` the empty string;
//! - `timetz` carries its zone in seconds west of UTC; the value holds the offset east.
//!
//! Types without a decoder here ([`is_supported`] is false: enums, `inet`, `money`,
//! domains, ranges, user types) must be read as text; the baseline asks the server for
//! their output function's text. Every length is checked: short, long or corrupt input
//! is a [`TypeError`], never a panic. Wire formats: `src/backend/utils/adt/*.c`,
//! `*send` functions, and <https://www.postgresql.org/docs/current/sql-copy.html>.

use std::sync::Arc;

use laredo_core::Value;

use crate::types::{Kind, TypeError, array_element, scalar_kind};

/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
/// The most array dimensions PostgreSQL allows (`MAXDIM`).
const MAX_ARRAY_DIMS: usize = 6;
/// Microseconds in a day; `time` is at most `24:00:00`.
const MICROS_PER_DAY: i64 = 86_400_000_000;

// `numeric` sign words (`NUMERIC_POS`, `NUMERIC_NEG`, `NUMERIC_NAN`, `NUMERIC_PINF`,
// `NUMERIC_NINF`) and the largest display scale (`NUMERIC_DSCALE_MASK`).
const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;
const NUMERIC_DSCALE_MASK: u16 = 0x3FFF;

/// Whether [`parse_binary`] decodes type `oid`; other types must be read as text.
pub(crate) fn is_supported(oid: u32) -> bool {
    Decoder::of(oid).is_some()
}

/// How to decode one type, looked up once per column rather than once per value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoder {
    Scalar(Kind),
    Array { element: u32 },
}

impl Decoder {
    /// The decoder of type `oid`, if it has one.
    pub(crate) fn of(oid: u32) -> Option<Self> {
        match array_element(oid) {
            Some(element) => Some(Self::Array { element }),
            None => scalar_kind(oid).map(Self::Scalar),
        }
    }

    /// [`parse_binary`] for a value of type `oid`, this decoder's type.
    pub(crate) fn decode(self, oid: u32, bytes: &[u8]) -> Result<Value, TypeError> {
        match self {
            Self::Scalar(kind) => parse_scalar(oid, kind, bytes),
            Self::Array { element } => parse_array(oid, element, bytes),
        }
    }
}

/// Parses the binary form of a value of type `oid` (an array type parses element-wise).
///
/// ```
/// use laredo_core::Value;
/// use laredo_source_pg::internals::binary::parse_binary;
///
/// // numeric -12.50: 2 digits, weight 0, negative, display scale 2, digits 12 and 5000.
/// let bytes = [0, 2, 0, 0, 0x40, 0, 0, 2, 0, 12, 0x13, 0x88];
/// assert_eq!(parse_binary(1700, &bytes)?, Value::numeric("-12.50"));
/// # Ok::<(), laredo_source_pg::internals::types::TypeError>(())
/// ```
///
/// # Errors
/// When the type has no binary decoder here (see `is_supported`), or the bytes are
/// not a valid value of the type (wrong length, bad UTF-8, out-of-range fields).
pub fn parse_binary(oid: u32, bytes: &[u8]) -> Result<Value, TypeError> {
    match Decoder::of(oid) {
        Some(decoder) => decoder.decode(oid, bytes),
        None => Err(fail(oid, "a type with a binary decoder", bytes)),
    }
}

fn fail(oid: u32, type_name: &'static str, bytes: &[u8]) -> TypeError {
    use std::fmt::Write as _;
    let mut text = String::from("\\x");
    for byte in bytes.iter().take(31) {
        let _ = write!(text, "{byte:02x}");
    }
    TypeError {
        oid,
        type_name,
        text,
    }
}

/// `N` bytes exactly, or `None`.
fn exact<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    bytes.try_into().ok()
}

fn parse_scalar(oid: u32, kind: Kind, bytes: &[u8]) -> Result<Value, TypeError> {
    let bad = || fail(oid, kind.name(), bytes);
    Ok(match kind {
        Kind::Bool => match bytes {
            [0] => Value::Bool(false),
            [1] => Value::Bool(true),
            _ => return Err(bad()),
        },
        Kind::Int => Value::Int64(match (oid, bytes.len()) {
            (21, 2) => i64::from(i16::from_be_bytes(exact(bytes).ok_or_else(bad)?)),
            (23, 4) => i64::from(i32::from_be_bytes(exact(bytes).ok_or_else(bad)?)),
            (20, 8) => i64::from_be_bytes(exact(bytes).ok_or_else(bad)?),
            // oid and xid are unsigned.
            (26 | 28, 4) => i64::from(u32::from_be_bytes(exact(bytes).ok_or_else(bad)?)),
            _ => return Err(bad()),
        }),
        Kind::Float => Value::Float64(match (oid, bytes.len()) {
            (700, 4) => float4(f32::from_be_bytes(exact(bytes).ok_or_else(bad)?)),
            (701, 8) => canonical_nan(f64::from_be_bytes(exact(bytes).ok_or_else(bad)?)),
            _ => return Err(bad()),
        }),
        Kind::Numeric => Value::Numeric(numeric(bytes).ok_or_else(bad)?),
        Kind::Text if oid == 18 => {
            let [byte] = exact(bytes).ok_or_else(bad)?;
            Value::text(char_out(byte))
        }
        Kind::Text => Value::text(std::str::from_utf8(bytes).map_err(|_| bad())?),
        Kind::Json => {
            // jsonb's send format is a version byte (1) and then the text.
            let text = if oid == 3802 {
                match bytes.split_first() {
                    Some((1, text)) => text,
                    _ => return Err(bad()),
                }
            } else {
                bytes
            };
            Value::json(std::str::from_utf8(text).map_err(|_| bad())?)
        }
        Kind::Bytes => Value::bytes(bytes),
        Kind::Uuid => Value::Uuid(exact(bytes).ok_or_else(bad)?),
        Kind::Date => Value::Date(match i32::from_be_bytes(exact(bytes).ok_or_else(bad)?) {
            days @ (i32::MIN | i32::MAX) => days,
            days => days.checked_add(PG_EPOCH_DAYS).ok_or_else(bad)?,
        }),
        Kind::Time => Value::Time(time(exact(bytes).ok_or_else(bad)?).ok_or_else(bad)?),
        Kind::TimeTz => {
            let bytes: [u8; 12] = exact(bytes).ok_or_else(bad)?;
            let (micros, zone) = bytes.split_at(8);
            let micros = time(exact(micros).ok_or_else(bad)?).ok_or_else(bad)?;
            // The server stores the zone in seconds west of UTC.
            let zone = i32::from_be_bytes(exact(zone).ok_or_else(bad)?);
            Value::TimeTz {
                micros,
                offset_seconds: zone.checked_neg().ok_or_else(bad)?,
            }
        }
        Kind::Timestamp => {
            Value::Timestamp(timestamp(exact(bytes).ok_or_else(bad)?).ok_or_else(bad)?)
        }
        Kind::TimestampTz => {
            Value::TimestampTz(timestamp(exact(bytes).ok_or_else(bad)?).ok_or_else(bad)?)
        }
        Kind::Interval => {
            let bytes: [u8; 16] = exact(bytes).ok_or_else(bad)?;
            let (micros, rest) = bytes.split_at(8);
            let (days, months) = rest.split_at(4);
            Value::Interval {
                months: i32::from_be_bytes(exact(months).ok_or_else(bad)?),
                days: i32::from_be_bytes(exact(days).ok_or_else(bad)?),
                micros: i64::from_be_bytes(exact(micros).ok_or_else(bad)?),
            }
        }
    })
}

/// Every NaN is the one [`f64::NAN`], as `"NaN".parse()` gives in text.
fn canonical_nan(value: f64) -> f64 {
    if value.is_nan() { f64::NAN } else { value }
}

/// The `f64` of the decimal `float4out` prints for `value` with `extra_float_digits > 0`:
/// what the text path parses. That is the shortest decimal strictly inside `value`'s
/// rounding interval and, among those, the closest to `value`, ties to even
/// (PostgreSQL's Ryu, `src/common/f2s.c`, which never picks a decimal on the edge).
///
/// Rust's `{:e}` is not quite that: it may print an edge, a midpoint between two
/// `f32`s that rounds back to `value` (`66114610`, halfway between `66114608` and
/// `66114612`, for which PostgreSQL prints `6.6114608e+07`), and breaks ties upwards
/// (`1544842.3` for `1544842.25`; PostgreSQL prints `1.5448422e+06`). Its length is a
/// lower bound, so the search starts there.
fn float4(value: f32) -> f64 {
    if !value.is_finite() || value == 0.0 {
        return canonical_nan(f64::from(value));
    }
    let magnitude = value.abs();
    let shortest = format!("{magnitude:e}");
    let digit_count = shortest.split_once('e').map_or(1, |(mantissa, _)| {
        mantissa.bytes().filter(u8::is_ascii_digit).count()
    });
    let decimal = float4_search(magnitude, digit_count.saturating_sub(1));
    if value < 0.0 { -decimal } else { decimal }
}

/// The midpoints between positive finite `value` and its `f32` neighbours (exact in
/// `f64`); below a power of two the lower neighbour is half as far.
fn rounding_interval(value: f32) -> (f64, f64) {
    let bits = value.to_bits();
    let below = f64::from(f32::from_bits(bits - 1));
    let value = f64::from(value);
    // f32::MAX has no finite upper neighbour; its gap up equals its gap down.
    let above = f32::from_bits(bits + 1);
    let above = if above.is_finite() {
        f64::from(above)
    } else {
        value + (value - below)
    };
    ((below + value) / 2.0, (value + above) / 2.0)
}

/// [`float4`]'s search for positive finite `value`: from `first_precision + 1` to 9
/// significant digits, the correctly rounded decimal of `value` (Rust's exact
/// formatting rounds ties to even, as Ryu does) or else its neighbour on the other
/// side of `value`, the first strictly inside the rounding interval.
fn float4_search(value: f32, first_precision: usize) -> f64 {
    let (low, high) = rounding_interval(value);
    let exponent = decimal_exponent(&format!("{value:e}"));
    for precision in first_precision..9 {
        // The grid of this many digits in `value`'s decade: multiples of 10^unit.
        let unit = exponent - i32::try_from(precision).unwrap_or(0);
        let rounded = format!("{:.*e}", precision, f64::from(value));
        let (mantissa, _) = rounded.split_once('e').unwrap_or((&rounded, ""));
        let Ok(mut digits) = mantissa.replace('.', "").parse::<u64>() else {
            break;
        };
        // Rounding up may carry into the next decade (9.96 to two digits is 1.0e1).
        if decimal_exponent(&rounded) > exponent {
            digits *= 10;
        }
        for candidate in [digits, digits.saturating_sub(1), digits + 1] {
            let text = format!("{candidate}e{unit}");
            let Ok(decimal) = text.parse::<f64>() else {
                continue;
            };
            // `decimal` rounds `text`, so it is strictly inside when it is; on an edge,
            // `text` itself must be compared.
            let inside = (low < decimal && decimal < high)
                || ((decimal == low || decimal == high)
                    && text.parse::<f32>() == Ok(value)
                    && !equals_exactly(candidate, unit, decimal));
            if inside {
                return decimal;
            }
        }
    }
    // Nine digits always suffice; this is not reached.
    f64::from(value)
}

/// The power of ten of Rust's `{:e}` output (`"1.5e-7"` → -7).
fn decimal_exponent(text: &str) -> i32 {
    text.rsplit_once('e')
        .and_then(|(_, exponent)| exponent.parse().ok())
        .unwrap_or(0)
}

/// Whether `digits × 10^unit` is exactly `x`, a midpoint between `f32`s (at most 113
/// significant digits, which 120 decimals print exactly).
fn equals_exactly(digits: u64, unit: i32, x: f64) -> bool {
    let exact = format!("{x:.120e}");
    let (mantissa, _) = exact.split_once('e').unwrap_or((&exact, ""));
    let exact_digits = mantissa.replace('.', "");
    let exact_digits = exact_digits.trim_end_matches('0');
    // Both as (significant digits, power of ten of the last one).
    let exact_unit = decimal_exponent(&exact) - i32::try_from(exact_digits.len()).unwrap_or(0) + 1;
    let ours = digits.to_string();
    let trimmed = ours.trim_end_matches('0');
    let our_unit = unit + i32::try_from(ours.len() - trimmed.len()).unwrap_or(0);
    trimmed == exact_digits && our_unit == exact_unit
}

/// `"char"` as `charout` prints it: high-bit bytes as a `\ooo` octal escape, `'\0'` as
/// the empty string.
fn char_out(byte: u8) -> String {
    match byte {
        0 => String::new(),
        0x80.. => format!("\\{byte:03o}"),
        _ => char::from(byte).to_string(),
    }
}

fn time(bytes: [u8; 8]) -> Option<i64> {
    Some(i64::from_be_bytes(bytes)).filter(|micros| (0..=MICROS_PER_DAY).contains(micros))
}

fn timestamp(bytes: [u8; 8]) -> Option<i64> {
    match i64::from_be_bytes(bytes) {
        micros @ (i64::MIN | i64::MAX) => Some(micros),
        micros => micros.checked_add(PG_EPOCH_MICROS),
    }
}

/// `numeric`'s send format (`ndigits`, `weight`, `sign`, `dscale`, then `ndigits`
/// base-10000 digits, the first one `weight` places left of the point) printed as
/// `numeric_out` does (`get_str_from_var`): the integer part without leading zeros
/// (`0` when there is none), then exactly `dscale` decimals.
fn numeric(bytes: &[u8]) -> Option<Arc<str>> {
    let (header, digits) = bytes.split_at_checked(8)?;
    let word = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let ndigits = usize::try_from(i16::from_be_bytes([header[0], header[1]])).ok()?;
    let weight = i32::from(i16::from_be_bytes([header[2], header[3]]));
    let (sign, dscale) = (word(4), word(6));
    match sign {
        NUMERIC_NAN => return Some(Arc::from("NaN")),
        NUMERIC_PINF => return Some(Arc::from("Infinity")),
        NUMERIC_NINF => return Some(Arc::from("-Infinity")),
        NUMERIC_POS | NUMERIC_NEG => {}
        _ => return None,
    }
    if dscale & !NUMERIC_DSCALE_MASK != 0 || digits.len() != ndigits * 2 {
        return None;
    }
    let digit = |position: i32| -> u16 {
        usize::try_from(position)
            .ok()
            .and_then(|i| digits.get(2 * i..2 * i + 2))
            .map_or(0, |d| u16::from_be_bytes([d[0], d[1]]))
    };
    if digits
        .chunks_exact(2)
        .any(|d| u16::from_be_bytes([d[0], d[1]]) >= 10_000)
    {
        return None;
    }
    let mut out = DigitBuffer::default();
    if sign == NUMERIC_NEG {
        out.push(b'-');
    }
    let mut position = 0;
    if weight < 0 {
        out.push(b'0');
        position = weight + 1;
    } else {
        while position <= weight {
            let group = digit(position);
            // The first group prints without leading zeros.
            let width = if position == 0 { group_width(group) } else { 4 };
            out.push_group(group, width, 4);
            position += 1;
        }
    }
    if dscale > 0 {
        out.push(b'.');
        let mut left = usize::from(dscale);
        while left > 0 {
            let take = left.min(4);
            out.push_group(digit(position), 4, take);
            left -= take;
            position += 1;
        }
    }
    std::str::from_utf8(out.as_bytes()).ok().map(Arc::from)
}

/// How many decimal digits `group` needs (at least 1).
fn group_width(group: u16) -> usize {
    match group {
        1000.. => 4,
        100.. => 3,
        10.. => 2,
        _ => 1,
    }
}

/// Stack room for the usual numeric's text, so printing one allocates only its
/// `Arc<str>`.
const DIGIT_BUFFER_STACK: usize = 64;

/// Bytes on the stack, moved to the heap past [`DIGIT_BUFFER_STACK`].
struct DigitBuffer {
    stack: [u8; DIGIT_BUFFER_STACK],
    len: usize,
    heap: Vec<u8>,
}

impl Default for DigitBuffer {
    fn default() -> Self {
        Self {
            stack: [0; DIGIT_BUFFER_STACK],
            len: 0,
            heap: Vec::new(),
        }
    }
}

impl DigitBuffer {
    fn push(&mut self, byte: u8) {
        if self.len < DIGIT_BUFFER_STACK {
            self.stack[self.len] = byte;
        } else {
            if self.heap.is_empty() {
                self.heap.extend_from_slice(&self.stack);
            }
            self.heap.push(byte);
        }
        self.len += 1;
    }

    /// The first `take` of the last `width` decimal digits of `group` (< 10000).
    fn push_group(&mut self, group: u16, width: usize, take: usize) {
        let digits = [group / 1000, group / 100 % 10, group / 10 % 10, group % 10];
        for d in digits[4 - width..].iter().take(take) {
            self.push(b'0' + u8::try_from(*d).unwrap_or(0));
        }
    }

    fn as_bytes(&self) -> &[u8] {
        if self.len <= DIGIT_BUFFER_STACK {
            &self.stack[..self.len]
        } else {
            &self.heap
        }
    }
}

/// A cursor over bytes that reads big-endian words.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.bytes.split_at_checked(len)?;
        self.bytes = rest;
        Some(head)
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(exact(self.take(4)?)?))
    }
}

/// The binary array format (`array_send`): `ndim`, a has-nulls flag, the element OID,
/// `ndim` (size, lower bound) pairs, then each element as a length (`-1` = NULL) and
/// its bytes, last subscript fastest. Dimensions nest; lower bounds are dropped.
fn parse_array(oid: u32, element: u32, bytes: &[u8]) -> Result<Value, TypeError> {
    let bad = || fail(oid, "array", bytes);
    let mut reader = Reader { bytes };
    let ndim = usize::try_from(reader.i32().ok_or_else(bad)?).map_err(|_| bad())?;
    let flags = reader.i32().ok_or_else(bad)?;
    let element_oid = u32::from_be_bytes(exact(reader.take(4).ok_or_else(bad)?).ok_or_else(bad)?);
    if ndim > MAX_ARRAY_DIMS || !(0..=1).contains(&flags) || element_oid != element {
        return Err(bad());
    }
    let mut sizes = [0usize; MAX_ARRAY_DIMS];
    for size in &mut sizes[..ndim] {
        *size = usize::try_from(reader.i32().ok_or_else(bad)?).map_err(|_| bad())?;
        reader.i32().ok_or_else(bad)?; // the lower bound
    }
    // Each element takes at least its 4-byte length: a count the bytes cannot hold is
    // corrupt, and checking it first bounds every allocation by the input's size.
    if ndim == 0 {
        return if reader.bytes.is_empty() {
            Ok(Value::array([]))
        } else {
            Err(bad())
        };
    }
    let count = sizes[..ndim]
        .iter()
        .try_fold(1usize, |n, &size| n.checked_mul(size))
        .ok_or_else(bad)?;
    if count.saturating_mul(4) > reader.bytes.len() {
        return Err(bad());
    }
    let value = array_level(element, &sizes[..ndim], &mut reader)?.ok_or_else(bad)?;
    if !reader.bytes.is_empty() {
        return Err(bad());
    }
    Ok(value)
}

/// One dimension's elements; `Ok(None)` when the bytes run out.
fn array_level(
    element: u32,
    sizes: &[usize],
    reader: &mut Reader<'_>,
) -> Result<Option<Value>, TypeError> {
    let Some((&size, inner)) = sizes.split_first() else {
        return Ok(None);
    };
    let mut items = Vec::with_capacity(size);
    for _ in 0..size {
        let item = if inner.is_empty() {
            let Some(len) = reader.i32() else {
                return Ok(None);
            };
            if len == -1 {
                Value::Null
            } else {
                let Some(bytes) = usize::try_from(len).ok().and_then(|len| reader.take(len)) else {
                    return Ok(None);
                };
                parse_binary(element, bytes)?
            }
        } else {
            match array_level(element, inner, reader)? {
                Some(item) => item,
                None => return Ok(None),
            }
        };
        items.push(item);
    }
    Ok(Some(Value::Array(items.into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::parse_text;
    use proptest::prelude::*;

    fn numeric_bytes(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&i16::try_from(digits.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out
    }

    #[test]
    fn numerics_print_as_numeric_out() {
        for (weight, sign, dscale, digits, text) in [
            (0, NUMERIC_POS, 3, &[12, 5000][..], "12.500"),
            (0, NUMERIC_NEG, 2, &[12, 5000], "-12.50"),
            (0, NUMERIC_POS, 0, &[], "0"),
            (0, NUMERIC_POS, 4, &[], "0.0000"),
            (-1, NUMERIC_POS, 4, &[1], "0.0001"),
            (-2, NUMERIC_NEG, 6, &[1200], "-0.000012"),
            (1, NUMERIC_POS, 0, &[1], "10000"),
            (2, NUMERIC_POS, 1, &[9999, 0, 1], "999900000001.0"),
            (-1, NUMERIC_POS, 2, &[1234], "0.12"),
            (0, NUMERIC_NAN, 0, &[], "NaN"),
            (0, NUMERIC_PINF, 0, &[], "Infinity"),
            (0, NUMERIC_NINF, 0, &[], "-Infinity"),
        ] {
            assert_eq!(
                parse_binary(1700, &numeric_bytes(weight, sign, dscale, digits)).unwrap(),
                Value::numeric(text),
                "{text}"
            );
        }
    }

    #[test]
    fn scalars_match_the_text_mapping() {
        let cases: Vec<(u32, Vec<u8>, &str)> = vec![
            (16, vec![1], "t"),
            (21, (-5i16).to_be_bytes().to_vec(), "-5"),
            (26, u32::MAX.to_be_bytes().to_vec(), "4294967295"),
            (700, 0.1f32.to_be_bytes().to_vec(), "0.1"),
            (700, 3.4028235e38f32.to_be_bytes().to_vec(), "3.4028235e+38"),
            (700, f32::NAN.to_be_bytes().to_vec(), "NaN"),
            (701, (-0.0f64).to_be_bytes().to_vec(), "-0"),
            (701, f64::NEG_INFINITY.to_be_bytes().to_vec(), "-Infinity"),
            (18, vec![0xe9], "\\351"),
            (18, vec![b'a'], "a"),
            (18, vec![0], ""),
            (3802, b"\x01{\"a\": 1}".to_vec(), "{\"a\": 1}"),
            (1082, 0i32.to_be_bytes().to_vec(), "2000-01-01"),
            (1082, i32::MAX.to_be_bytes().to_vec(), "infinity"),
            (
                1114,
                (-1i64).to_be_bytes().to_vec(),
                "1999-12-31 23:59:59.999999",
            ),
            (1184, i64::MIN.to_be_bytes().to_vec(), "-infinity"),
            (
                1266,
                [
                    3_723_000_000i64.to_be_bytes().as_slice(),
                    &(-19_800i32).to_be_bytes(),
                ]
                .concat(),
                "01:02:03+05:30",
            ),
            (
                1186,
                [
                    (-250_000i64).to_be_bytes().as_slice(),
                    &(-1i32).to_be_bytes(),
                    &0i32.to_be_bytes(),
                ]
                .concat(),
                "P-1DT-0.25S",
            ),
            (
                1186,
                [
                    i64::MAX.to_be_bytes().as_slice(),
                    &i32::MAX.to_be_bytes(),
                    &i32::MAX.to_be_bytes(),
                ]
                .concat(),
                "infinity",
            ),
        ];
        for (oid, bytes, text) in cases {
            assert_eq!(
                parse_binary(oid, &bytes).unwrap(),
                parse_text(oid, text).unwrap(),
                "{oid} {text}"
            );
        }
    }

    fn array_bytes(element: u32, dims: &[(i32, i32)], items: &[Option<&[u8]>]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&i32::try_from(dims.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&i32::from(items.iter().any(Option::is_none)).to_be_bytes());
        out.extend_from_slice(&element.to_be_bytes());
        for (size, lower) in dims {
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&lower.to_be_bytes());
        }
        for item in items {
            match item {
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(bytes) => {
                    out.extend_from_slice(&i32::try_from(bytes.len()).unwrap().to_be_bytes());
                    out.extend_from_slice(bytes);
                }
            }
        }
        out
    }

    #[test]
    fn arrays_nest_like_the_text_mapping() {
        let one = 1i32.to_be_bytes();
        let two = 2i32.to_be_bytes();
        for (bytes, text) in [
            (array_bytes(23, &[], &[]), "{}"),
            (
                array_bytes(23, &[(3, 1)], &[Some(&one), None, Some(&two)]),
                "{1,NULL,2}",
            ),
            (
                array_bytes(
                    23,
                    &[(2, 0), (2, 1)],
                    &[Some(&one), Some(&two), None, Some(&one)],
                ),
                "[0:1][1:2]={{1,2},{NULL,1}}",
            ),
        ] {
            assert_eq!(
                parse_binary(1007, &bytes).unwrap(),
                parse_text(1007, text).unwrap(),
                "{text}"
            );
        }
        let wrong_element = array_bytes(20, &[(1, 1)], &[Some(&one)]);
        assert!(parse_binary(1007, &wrong_element).is_err());
        let too_many = array_bytes(23, &[(1 << 30, 1)], &[Some(&one)]);
        assert!(parse_binary(1007, &too_many).is_err());
    }

    #[test]
    fn bad_input_is_an_error_naming_the_type() {
        let err = parse_binary(23, &[0, 1]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read \"\\\\x0001\" as integer (type oid 23)"
        );
        for (oid, bytes) in [
            (16, &[2][..]),
            (25, &[0xff][..]),
            (3802, b"\x02{}"),
            (1083, &(-1i64).to_be_bytes()),
            (1700, &numeric_bytes(0, 0x1234, 0, &[])),
            (1700, &numeric_bytes(0, NUMERIC_POS, 0, &[10_000])),
            (1700, &numeric_bytes(0, NUMERIC_POS, 0x4000, &[])),
            (12345, b"happy"),
        ] {
            assert!(parse_binary(oid, bytes).is_err(), "{oid} {bytes:?}");
        }
    }

    #[test]
    fn float4_never_prints_a_midpoint() {
        // 66114610 lies halfway between the f32s 66114608 and 66114612: Rust's shortest
        // form, but PostgreSQL prints 6.6114608e+07.
        assert_eq!(float4(66_114_608.0), 66_114_608.0);
        assert_eq!(float4(-66_114_608.0), -66_114_608.0);
        assert_eq!(float4(0.1), 0.1);
        // A tie between 1544842.2 and 1544842.3 goes to even, as in PostgreSQL.
        let tie: f32 = 1_544_842.0 + 0.25; // exact in f32
        assert_eq!(float4(tie), 1_544_842.2);
        assert_eq!(float4(f32::MAX), 3.402_823_5e38);
        assert_eq!(float4(f32::from_bits(1)), 1e-45);
    }

    /// Every supported type OID, scalars and arrays.
    const SUPPORTED: &[u32] = &[
        16, 20, 21, 23, 26, 28, 700, 701, 1700, 17, 114, 3802, 2950, 1082, 1083, 1266, 1114, 1184,
        1186, 25, 1042, 1043, 19, 18, 1000, 1016, 1005, 1007, 1028, 1021, 1022, 1231, 1009, 1014,
        1015, 1003, 1001, 199, 3807, 2951, 1182, 1183, 1270, 1115, 1185, 1187,
    ];

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            oid in proptest::sample::select(SUPPORTED),
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let _ = parse_binary(oid, &bytes);
        }

        #[test]
        fn float4_search_may_start_at_rusts_shortest_length(bits in any::<u32>()) {
            let value = f32::from_bits(bits).abs();
            prop_assume!(value.is_finite() && value != 0.0);
            let decimal = float4(value);
            prop_assert_eq!(decimal, float4_search(value, 0));
            #[expect(clippy::cast_possible_truncation, reason = "the round trip under test")]
            let back = decimal as f32;
            prop_assert_eq!(back, value);
        }

        #[test]
        fn truncated_values_are_errors(
            digits in proptest::collection::vec(0u16..10_000, 1..8),
            weight in -4i16..8,
            dscale in 0u16..40,
            items in proptest::collection::vec(proptest::option::of(any::<i64>()), 1..8),
            cut_seed in any::<usize>(),
        ) {
            let numeric = numeric_bytes(weight, NUMERIC_NEG, dscale, &digits);
            let item_bytes: Vec<Option<[u8; 8]>> =
                items.iter().map(|i| i.map(i64::to_be_bytes)).collect();
            let item_refs: Vec<Option<&[u8]>> =
                item_bytes.iter().map(|i| i.as_ref().map(|b| &b[..])).collect();
            let array = array_bytes(20, &[(i32::try_from(items.len()).unwrap(), 1)], &item_refs);
            for (oid, bytes) in [(1700, numeric), (1016, array)] {
                prop_assert!(parse_binary(oid, &bytes).is_ok());
                let cut = cut_seed % bytes.len();
                prop_assert!(parse_binary(oid, &bytes[..cut]).is_err(), "{oid} cut at {cut}");
            }
        }

    }
}
