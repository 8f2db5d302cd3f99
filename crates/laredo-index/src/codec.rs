//! The compact row encoding of [`IndexedRows`](crate::IndexedRows).
//!
//! A stored row is one byte string: its values in the target's column order, each a
//! one-byte tag followed by its payload. Integers, dates and times are zigzag varints
//! (an `int8` id below 2^20 takes 3 bytes, not 8), booleans live in the tag, variable
//! length values are a varint length and the bytes, floats 8 bytes, UUIDs 16. A column
//! the row did not have is tagged `ABSENT`, and trailing absent columns are not written,
//! so a row decodes to exactly the columns it was stored with.
//!
//! Index probes compare keys without decoding: [`write_key`] writes a stored row's
//! canonical key bytes (byte for byte what [`Value::write_key`] writes for the decoded
//! values) straight from the encoding, skipping the other columns. Decoding checks every
//! bound and returns [`CodecError`] on malformed input; it never panics.

use std::sync::{Arc, LazyLock};

use laredo_core::Value;

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT: u8 = 3;
const FLOAT: u8 = 4;
const NUMERIC: u8 = 5;
const TEXT: u8 = 6;
const BYTES: u8 = 7;
const JSON: u8 = 8;
const UUID: u8 = 9;
const DATE: u8 = 10;
const TIME: u8 = 11;
const TIMETZ: u8 = 12;
const TIMESTAMP: u8 = 13;
const TIMESTAMPTZ: u8 = 14;
const INTERVAL: u8 = 15;
const ARRAY: u8 = 16;
const TOAST: u8 = 17;
/// The row did not have this column.
const ABSENT: u8 = 18;

/// Nesting limit for arrays, so corrupt input cannot recurse without bound.
const MAX_DEPTH: usize = 32;

/// A stored row could not be decoded (a bug or memory corruption, never user input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt stored row at byte {offset}: {what}")]
pub(crate) struct CodecError {
    offset: usize,
    what: &'static str,
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    put_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// Appends the encoding of `value`.
pub(crate) fn encode_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Int64(v) => {
            out.push(INT);
            put_varint(zigzag(*v), out);
        }
        Value::Float64(f) => {
            out.push(FLOAT);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::Numeric(s) => put_bytes(NUMERIC, s.as_bytes(), out),
        Value::Text(s) => put_bytes(TEXT, s.as_bytes(), out),
        Value::Bytes(b) => put_bytes(BYTES, b, out),
        Value::Json(s) => put_bytes(JSON, s.as_bytes(), out),
        Value::Uuid(u) => {
            out.push(UUID);
            out.extend_from_slice(u);
        }
        Value::Date(d) => {
            out.push(DATE);
            put_varint(zigzag(i64::from(*d)), out);
        }
        Value::Time(t) => {
            out.push(TIME);
            put_varint(zigzag(*t), out);
        }
        Value::TimeTz {
            micros,
            offset_seconds,
        } => {
            out.push(TIMETZ);
            put_varint(zigzag(*micros), out);
            put_varint(zigzag(i64::from(*offset_seconds)), out);
        }
        Value::Timestamp(t) => {
            out.push(TIMESTAMP);
            put_varint(zigzag(*t), out);
        }
        Value::TimestampTz(t) => {
            out.push(TIMESTAMPTZ);
            put_varint(zigzag(*t), out);
        }
        Value::Interval {
            months,
            days,
            micros,
        } => {
            out.push(INTERVAL);
            put_varint(zigzag(i64::from(*months)), out);
            put_varint(zigzag(i64::from(*days)), out);
            put_varint(zigzag(*micros), out);
        }
        Value::Array(items) => {
            out.push(ARRAY);
            put_varint(items.len() as u64, out);
            for item in items.iter() {
                encode_value(item, out);
            }
        }
        Value::UnchangedToast => out.push(TOAST),
        // Null and any kind added to `Value` later without an encoding here.
        _ => out.push(NULL),
    }
}

/// Appends the "column absent" marker.
pub(crate) fn encode_absent(out: &mut Vec<u8>) {
    out.push(ABSENT);
}

/// A cursor over one encoded row.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn err(&self, what: &'static str) -> CodecError {
        CodecError {
            offset: self.pos,
            what,
        }
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| self.err("unexpected end"))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.err("varint too long"))
    }

    fn int(&mut self) -> Result<i64, CodecError> {
        self.varint().map(unzigzag)
    }

    fn int32(&mut self) -> Result<i32, CodecError> {
        i32::try_from(self.int()?).map_err(|_| self.err("32-bit value out of range"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.err("length past end"))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn unknown_tag(&self) -> CodecError {
        CodecError {
            offset: self.pos.saturating_sub(1),
            what: "unknown tag",
        }
    }

    fn float(&mut self) -> Result<f64, CodecError> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(f64::from_bits(u64::from_le_bytes(buf)))
    }

    fn uuid(&mut self) -> Result<[u8; 16], CodecError> {
        let mut buf = [0u8; 16];
        buf.copy_from_slice(self.take(16)?);
        Ok(buf)
    }

    fn len_prefixed(&mut self) -> Result<&'a [u8], CodecError> {
        let len = usize::try_from(self.varint()?).map_err(|_| self.err("length overflow"))?;
        self.take(len)
    }

    fn str(&mut self) -> Result<Arc<str>, CodecError> {
        let bytes = self.len_prefixed()?;
        std::str::from_utf8(bytes)
            .map(Arc::from)
            .map_err(|_| self.err("invalid utf-8"))
    }

    /// The next column: `None` when it is absent.
    pub(crate) fn next_value(&mut self) -> Result<Option<Value>, CodecError> {
        self.value(0)
    }

    fn value(&mut self, depth: usize) -> Result<Option<Value>, CodecError> {
        let tag = self.byte()?;
        let value = match tag {
            NULL => Value::Null,
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            INT => Value::Int64(self.int()?),
            FLOAT => Value::Float64(self.float()?),
            NUMERIC => Value::Numeric(self.str()?),
            TEXT => Value::Text(self.str()?),
            BYTES => Value::Bytes(Arc::from(self.len_prefixed()?)),
            JSON => Value::Json(self.str()?),
            UUID => Value::Uuid(self.uuid()?),
            DATE => Value::Date(self.int32()?),
            TIME => Value::Time(self.int()?),
            TIMETZ => Value::TimeTz {
                micros: self.int()?,
                offset_seconds: self.int32()?,
            },
            TIMESTAMP => Value::Timestamp(self.int()?),
            TIMESTAMPTZ => Value::TimestampTz(self.int()?),
            INTERVAL => Value::Interval {
                months: self.int32()?,
                days: self.int32()?,
                micros: self.int()?,
            },
            ARRAY => {
                let count = self.array_len(depth)?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.value(depth + 1)?.unwrap_or(Value::Null));
                }
                Value::Array(items.into())
            }
            TOAST => Value::UnchangedToast,
            ABSENT => return Ok(None),
            _ => return Err(self.unknown_tag()),
        };
        Ok(Some(value))
    }
}

/// Decodes every column of a row: `None` for absent columns, and for columns past the
/// end of the encoding.
pub(crate) fn decode(
    bytes: &[u8],
    columns: usize,
    out: &mut Vec<Option<Value>>,
) -> Result<(), CodecError> {
    let mut reader = Reader::new(bytes);
    for _ in 0..columns {
        if reader.at_end() {
            out.push(None);
        } else {
            out.push(reader.next_value()?);
        }
    }
    if !reader.at_end() {
        return Err(reader.err("trailing bytes"));
    }
    Ok(())
}

/// Appends the canonical key bytes (exactly as [`Value::write_key`] would) of the
/// columns at `positions` of an encoded row, in `positions` order; absent columns and
/// columns past the end key as NULL.
///
/// Works on the encoded bytes: skipped columns are not decoded and nothing is
/// allocated, except for `numeric` key values, whose normalisation is left to
/// [`Value::write_key`].
pub(crate) fn write_key(
    bytes: &[u8],
    positions: &[usize],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let mut reader = Reader::new(bytes);
    let mut column = 0;
    for &position in positions {
        if position < column {
            // Key fields out of column order: scan again from the start.
            reader.pos = 0;
            column = 0;
        }
        while column < position && !reader.at_end() {
            reader.skip_value(0)?;
            column += 1;
        }
        if column < position || reader.at_end() {
            Value::Null.write_key(out);
            continue;
        }
        reader.write_value_key(0, out)?;
        column += 1;
    }
    Ok(())
}

/// The leading tag bytes of the canonical key forms written here without building a
/// [`Value`], taken from [`Value::write_key`] itself so the two cannot drift apart (the
/// property tests check the rest of the format).
struct KeyTags {
    text: u8,
    bytes: u8,
    json: u8,
    array: u8,
}

static KEY_TAGS: LazyLock<KeyTags> = LazyLock::new(|| {
    let tag = |value: Value| value.key_bytes().first().copied().unwrap_or_default();
    KeyTags {
        text: tag(Value::text("")),
        bytes: tag(Value::bytes([])),
        json: tag(Value::json("")),
        array: tag(Value::array([])),
    }
});

/// Appends the canonical key bytes of a text value, as `Value::text(text).write_key`
/// does, without allocating the value.
pub(crate) fn write_text_key(text: &str, out: &mut Vec<u8>) {
    write_key_len_prefixed(KEY_TAGS.text, text.as_bytes(), out);
}

/// A length-prefixed canonical key: tag, length as 8 big-endian bytes, payload.
fn write_key_len_prefixed(tag: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    out.extend_from_slice(payload);
}

impl Reader<'_> {
    fn array_len(&mut self, depth: usize) -> Result<usize, CodecError> {
        if depth >= MAX_DEPTH {
            return Err(self.err("arrays nested too deeply"));
        }
        let count = usize::try_from(self.varint()?).map_err(|_| self.err("length overflow"))?;
        // Every element takes at least one byte: refuse counts past the input.
        if count > self.bytes.len() - self.pos {
            return Err(self.err("array length past end"));
        }
        Ok(count)
    }

    /// Moves past the next value without decoding it.
    fn skip_value(&mut self, depth: usize) -> Result<(), CodecError> {
        match self.byte()? {
            NULL | FALSE | TRUE | TOAST | ABSENT => {}
            INT | DATE | TIME | TIMESTAMP | TIMESTAMPTZ => {
                self.varint()?;
            }
            TIMETZ => {
                self.varint()?;
                self.varint()?;
            }
            INTERVAL => {
                self.varint()?;
                self.varint()?;
                self.varint()?;
            }
            FLOAT => {
                self.take(8)?;
            }
            UUID => {
                self.take(16)?;
            }
            NUMERIC | TEXT | BYTES | JSON => {
                self.len_prefixed()?;
            }
            ARRAY => {
                for _ in 0..self.array_len(depth)? {
                    self.skip_value(depth + 1)?;
                }
            }
            _ => return Err(self.unknown_tag()),
        }
        Ok(())
    }

    /// Appends the canonical key bytes of the next value (an absent value keys as
    /// NULL, as it decodes).
    fn write_value_key(&mut self, depth: usize, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let tags = &*KEY_TAGS;
        match self.byte()? {
            NULL | ABSENT => Value::Null.write_key(out),
            FALSE => Value::Bool(false).write_key(out),
            TRUE => Value::Bool(true).write_key(out),
            TOAST => Value::UnchangedToast.write_key(out),
            INT => Value::Int64(self.int()?).write_key(out),
            FLOAT => Value::Float64(self.float()?).write_key(out),
            NUMERIC => {
                let text = std::str::from_utf8(self.len_prefixed()?)
                    .map_err(|_| self.err("invalid utf-8"))?;
                Value::numeric(text).write_key(out);
            }
            TEXT => write_key_len_prefixed(tags.text, self.len_prefixed()?, out),
            BYTES => write_key_len_prefixed(tags.bytes, self.len_prefixed()?, out),
            JSON => write_key_len_prefixed(tags.json, self.len_prefixed()?, out),
            UUID => Value::Uuid(self.uuid()?).write_key(out),
            DATE => Value::Date(self.int32()?).write_key(out),
            TIME => Value::Time(self.int()?).write_key(out),
            TIMETZ => Value::TimeTz {
                micros: self.int()?,
                offset_seconds: self.int32()?,
            }
            .write_key(out),
            TIMESTAMP => Value::Timestamp(self.int()?).write_key(out),
            TIMESTAMPTZ => Value::TimestampTz(self.int()?).write_key(out),
            INTERVAL => Value::Interval {
                months: self.int32()?,
                days: self.int32()?,
                micros: self.int()?,
            }
            .write_key(out),
            ARRAY => {
                let count = self.array_len(depth)?;
                out.push(tags.array);
                out.extend_from_slice(&(count as u64).to_be_bytes());
                for _ in 0..count {
                    self.write_value_key(depth + 1, out)?;
                }
            }
            _ => return Err(self.unknown_tag()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int64),
            any::<f64>().prop_map(Value::Float64),
            "[-+]?[0-9]{1,20}(\\.[0-9]{0,10})?|NaN".prop_map(Value::numeric),
            ".{0,40}".prop_map(Value::text),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::bytes),
            "\\{\"a\":[0-9]{1,5}\\}".prop_map(Value::json),
            any::<[u8; 16]>().prop_map(Value::Uuid),
            any::<i32>().prop_map(Value::Date),
            any::<i64>().prop_map(Value::Time),
            (any::<i64>(), any::<i32>()).prop_map(|(micros, offset_seconds)| Value::TimeTz {
                micros,
                offset_seconds
            }),
            any::<i64>().prop_map(Value::Timestamp),
            any::<i64>().prop_map(Value::TimestampTz),
            (any::<i32>(), any::<i32>(), any::<i64>()).prop_map(|(months, days, micros)| {
                Value::Interval {
                    months,
                    days,
                    micros,
                }
            }),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 24, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Value::array)
        })
    }

    proptest! {
        #[test]
        fn round_trip(values in proptest::collection::vec(proptest::option::of(value()), 0..12)) {
            let mut bytes = Vec::new();
            for v in &values {
                match v {
                    Some(v) => encode_value(v, &mut bytes),
                    None => encode_absent(&mut bytes),
                }
            }
            let mut decoded = Vec::new();
            decode(&bytes, values.len(), &mut decoded).unwrap();
            prop_assert_eq!(decoded, values);
        }

        #[test]
        fn key_bytes_match_values(
            values in proptest::collection::vec(proptest::option::of(value()), 0..8),
            positions in proptest::collection::vec(0usize..10, 1..4),
        ) {
            // `None` is an absent column; positions past the end are absent too.
            let mut bytes = Vec::new();
            for v in &values {
                match v {
                    Some(v) => encode_value(v, &mut bytes),
                    None => encode_absent(&mut bytes),
                }
            }
            let mut expected = Vec::new();
            for &p in &positions {
                values.get(p).cloned().flatten().unwrap_or(Value::Null).write_key(&mut expected);
            }
            let mut actual = Vec::new();
            write_key(&bytes, &positions, &mut actual).unwrap();
            prop_assert_eq!(actual, expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), columns in 0usize..16) {
            let _ = decode(&bytes, columns, &mut Vec::new());
            let _ = write_key(&bytes, &[3, 0, columns], &mut Vec::new());
            let mut reader = Reader::new(&bytes);
            while !reader.at_end() && reader.skip_value(0).is_ok() {}
        }
    }

    #[test]
    fn malformed_rows_are_errors() {
        let bad: [&[u8]; 7] = [
            &[INT],
            &[INT, 0x80],
            &[TEXT, 5, b'a'],
            &[TEXT, 2, 0xff, 0xfe],
            &[FLOAT, 1, 2],
            &[ARRAY, 200, NULL],
            &[99],
        ];
        for bytes in bad {
            assert!(decode(bytes, 1, &mut Vec::new()).is_err(), "{bytes:?}");
        }
        assert!(
            decode(&[NULL, NULL], 1, &mut Vec::new()).is_err(),
            "trailing bytes"
        );
        let mut deep = [ARRAY, 1].repeat(MAX_DEPTH + 1);
        deep.push(NULL);
        assert!(decode(&deep, 1, &mut Vec::new()).is_err(), "nesting limit");
        assert!(write_key(&deep, &[0], &mut Vec::new()).is_err());
        assert!(write_key(&[TEXT, 5, b'a'], &[0], &mut Vec::new()).is_err());
        assert!(
            write_key(&[99, NULL], &[1], &mut Vec::new()).is_err(),
            "skipping checks too"
        );
    }

    #[test]
    fn small_integers_are_small() {
        let mut bytes = Vec::new();
        encode_value(&Value::Int64(1_000_000), &mut bytes);
        assert_eq!(bytes.len(), 1 + 3);
        bytes.clear();
        encode_value(&Value::Bool(true), &mut bytes);
        assert_eq!(bytes.len(), 1);
    }
}
