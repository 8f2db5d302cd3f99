//! `ListRows` paging: a total order over row keys, page tokens and page selection.
//!
//! Rows are listed in key order (the primary key, or the lookup fields of a table
//! without one). A page token names the last key sent, not an offset, so the next page
//! starts at the first key after it: rows inserted or deleted elsewhere in the table
//! while a client pages neither repeat nor hide the other rows.
//!
//! The order is natural within a kind (numbers by value across `int`, `float` and
//! `numeric`, text by its bytes, times chronologically) and consistent with key
//! equality ([`Value::write_key`]): two keys that find the same row compare equal, and
//! any two other keys compare unequal, so "after the token" is well defined.
//!
//! A token is the key's values as a wire `ValueList`, protobuf-encoded behind a version
//! byte, in lowercase hex. Clients treat it as opaque.
//!
//! Cost: a target that keeps an ordered index of its keys
//! ([`RowAccess::rows_after`](laredo_core::RowAccess::rows_after): the indexed target,
//! which builds it on the first `ListRows` and keeps it current by its writes) pages
//! through it: a page seeks to the token's key and reads only its own rows, O(log n +
//! page) work and O(page) memory whatever the table's size. The order is the byte order
//! of [`laredo_index::sort_key`], which [`compare_keys`] uses too. A target without
//! such an index (a compiled or a fan-out target) is paged from a scan: each page reads
//! a copy of every row (O(n)) and sorts only the page.
//!
//! Limits: a page holds at most [`MAX_PAGE_SIZE`] rows (a larger `page_size` is clamped
//! to it); a token longer than [`MAX_PAGE_TOKEN_LEN`] characters is refused with
//! `INVALID_ARGUMENT` naming the limit before it is parsed.

use std::cmp::Ordering;

use laredo_core::{Row, Value};
use laredo_proto::laredo::v1 as wire;
use prost::Message;

/// Rows per page when the request asks for 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// The largest page served; a larger `page_size` is clamped to it (the response then
/// has this many rows and a `next_page_token`).
pub const MAX_PAGE_SIZE: usize = 1000;

/// The longest page token accepted, in characters: room for a key of about 4 KiB of
/// values (PostgreSQL's btree entries are at most about 2.7 KiB). A longer token is
/// refused with `INVALID_ARGUMENT` naming this limit, before it is parsed.
pub const MAX_PAGE_TOKEN_LEN: usize = 8 * 1024;

/// The first byte of every token; a later token format gets another.
const TOKEN_VERSION: u8 = 1;

/// A page token that does not decode into a key of the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    /// Longer than [`MAX_PAGE_TOKEN_LEN`].
    #[error("longer than the page token limit ({len} > {MAX_PAGE_TOKEN_LEN} characters)")]
    TooLong {
        /// The token's length.
        len: usize,
    },
    /// Not lowercase hex of even length.
    #[error("not a page token")]
    Encoding,
    /// An unknown version byte.
    #[error("unknown page token version {0}")]
    Version(u8),
    /// The protobuf payload does not decode.
    #[error("page token payload does not decode")]
    Payload,
    /// A value of the key is malformed.
    #[error("page token value {idx}: {source}")]
    Value {
        /// Its position in the key.
        idx: usize,
        /// Why.
        #[source]
        source: laredo_proto::ConversionError,
    },
    /// The key has a different number of values than the table's key.
    #[error("page token has {got} key value(s), the table key has {expected}")]
    Arity {
        /// The table key's field count.
        expected: usize,
        /// The token's value count.
        got: usize,
    },
}

/// The token naming `key`.
pub(crate) fn encode_token(key: &[Value]) -> String {
    let list = wire::ValueList {
        values: key.iter().map(wire::Value::from).collect(),
    };
    let mut bytes = Vec::with_capacity(1 + list.encoded_len());
    bytes.push(TOKEN_VERSION);
    list.encode(&mut bytes)
        .expect("a Vec grows to fit the message");
    to_hex(&bytes)
}

/// The key named by `token`, checked to have `arity` values.
pub(crate) fn decode_token(token: &str, arity: usize) -> Result<Vec<Value>, TokenError> {
    if token.len() > MAX_PAGE_TOKEN_LEN {
        return Err(TokenError::TooLong { len: token.len() });
    }
    let bytes = from_hex(token).ok_or(TokenError::Encoding)?;
    let (&version, payload) = bytes.split_first().ok_or(TokenError::Encoding)?;
    if version != TOKEN_VERSION {
        return Err(TokenError::Version(version));
    }
    let list = wire::ValueList::decode(payload).map_err(|_| TokenError::Payload)?;
    if list.values.len() != arity {
        return Err(TokenError::Arity {
            expected: arity,
            got: list.values.len(),
        });
    }
    list.values
        .iter()
        .enumerate()
        .map(|(idx, value)| {
            Value::try_from(value).map_err(|source| TokenError::Value { idx, source })
        })
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// One page of rows in key order.
#[derive(Debug)]
pub(crate) struct Page {
    /// The rows, ordered by key.
    pub(crate) rows: Vec<Row>,
    /// The key of the last row, when more rows follow.
    pub(crate) next: Option<Vec<Value>>,
}

/// The first `size` rows (by key) whose key is after `after`. `key_of` extracts a row's
/// key; rows it refuses make the whole call fail with its error.
pub(crate) fn select_page<E>(
    rows: Vec<Row>,
    after: Option<&[Value]>,
    size: usize,
    key_of: impl Fn(&Row) -> Result<Vec<Value>, E>,
) -> Result<Page, E> {
    let mut keyed = Vec::with_capacity(rows.len().min(size.saturating_mul(2)));
    for row in rows {
        let key = key_of(&row)?;
        if after.is_none_or(|after| compare_keys(&key, after) == Ordering::Greater) {
            keyed.push((key, row));
        }
    }
    let more = keyed.len() > size;
    if more {
        // Only the page needs sorting: partition around the size-th key first.
        keyed.select_nth_unstable_by(size, |a, b| compare_keys(&a.0, &b.0));
        keyed.truncate(size);
    }
    keyed.sort_unstable_by(|a, b| compare_keys(&a.0, &b.0));
    let next = if more {
        keyed.last().map(|(key, _)| key.clone())
    } else {
        None
    };
    Ok(Page {
        rows: keyed.into_iter().map(|(_, row)| row).collect(),
        next,
    })
}

/// Orders two keys of the same table: the order of their sort keys
/// ([`laredo_index::sort_key`]), the one ordered indexes keep
/// ([`RowAccess::rows_after`](laredo_core::RowAccess::rows_after)), so pages of every
/// target and their tokens follow one order.
pub(crate) fn compare_keys(a: &[Value], b: &[Value]) -> Ordering {
    laredo_index::sort_key(a).cmp(&laredo_index::sort_key(b))
}

/// [`compare_keys`] for single values.
#[cfg(test)]
pub(crate) fn compare_values(a: &Value, b: &Value) -> Ordering {
    compare_keys(std::slice::from_ref(a), std::slice::from_ref(b))
}

#[cfg(test)]
mod tests {
    use laredo_core::row;

    use super::*;

    #[test]
    fn numbers_order_by_value_across_kinds() {
        let ordered = [
            Value::Float64(f64::NEG_INFINITY),
            Value::Int64(i64::MIN),
            Value::Int64(-10),
            Value::numeric("-2.5"),
            Value::Int64(-1),
            Value::Int64(0),
            Value::Float64(0.5),
            Value::Int64(2),
            Value::numeric("2.0000001"),
            Value::Int64(10),
            Value::Int64(i64::MAX - 1),
            Value::Int64(i64::MAX),
            Value::Float64(f64::INFINITY),
            Value::Float64(f64::NAN),
        ];
        for (idx, a) in ordered.iter().enumerate() {
            for (jdx, b) in ordered.iter().enumerate() {
                assert_eq!(compare_values(a, b), idx.cmp(&jdx), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn equal_keys_compare_equal_and_others_do_not() {
        let same = [Value::Int64(7), Value::Float64(7.0), Value::numeric("7.00")];
        for a in &same {
            for b in &same {
                assert_eq!(compare_values(a, b), Ordering::Equal, "{a:?} vs {b:?}");
            }
        }
        assert_eq!(
            compare_values(&Value::Float64(-0.0), &Value::Float64(0.0)),
            Ordering::Equal
        );
        // Beyond f64 precision the floats tie, and the key bytes still order them.
        let big = Value::Int64(9_007_199_254_740_993);
        let bigger = Value::Int64(9_007_199_254_740_994);
        assert_eq!(compare_values(&big, &bigger), Ordering::Less);
        assert_eq!(compare_values(&bigger, &big), Ordering::Greater);
        // "1e3" is not the same key as 1000 (decimals key by normalised text), so the
        // two must not compare equal either, and the order must be antisymmetric.
        assert_eq!(
            compare_values(&Value::numeric("1e3"), &Value::Int64(1000)),
            compare_values(&Value::Int64(1000), &Value::numeric("1e3")).reverse()
        );
        assert_ne!(
            compare_values(&Value::numeric("1e3"), &Value::Int64(1000)),
            Ordering::Equal,
            "different keys never compare equal"
        );
    }

    #[test]
    fn text_orders_by_bytes_not_length() {
        assert_eq!(
            compare_values(&Value::text("b"), &Value::text("aa")),
            Ordering::Greater
        );
        assert_eq!(
            compare_values(&Value::Null, &Value::text("")),
            Ordering::Less,
            "NULL first"
        );
    }

    #[test]
    fn composite_keys_order_value_by_value() {
        let a = [Value::Int64(1), Value::text("b")];
        let b = [Value::Int64(2), Value::text("a")];
        let c = [Value::Int64(2), Value::text("b")];
        assert_eq!(compare_keys(&a, &b), Ordering::Less);
        assert_eq!(compare_keys(&b, &c), Ordering::Less);
        assert_eq!(compare_keys(&c, &c), Ordering::Equal);
    }

    #[test]
    fn tokens_round_trip() {
        let key = vec![Value::Int64(-3), Value::text("x"), Value::Null];
        let token = encode_token(&key);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(decode_token(&token, 3), Ok(key));
    }

    #[test]
    fn bad_tokens_are_rejected() {
        let token = encode_token(&[Value::Int64(1)]);
        assert_eq!(
            decode_token(&token, 2),
            Err(TokenError::Arity {
                expected: 2,
                got: 1
            })
        );
        assert_eq!(decode_token("xyz", 1), Err(TokenError::Encoding));
        assert_eq!(decode_token("abc", 1), Err(TokenError::Encoding));
        assert_eq!(decode_token("", 1), Err(TokenError::Encoding));
        assert_eq!(decode_token("02", 1), Err(TokenError::Version(2)));
        assert_eq!(decode_token("01ff", 1), Err(TokenError::Payload));
        // A ValueList with one Value of no kind: field 1, length 0.
        assert!(matches!(
            decode_token("010a00", 1),
            Err(TokenError::Value { idx: 0, .. })
        ));
    }

    fn rows(ids: &[i64]) -> Vec<Row> {
        ids.iter().map(|id| row! {"id" => *id}).collect()
    }

    fn key(row: &Row) -> Result<Vec<Value>, ()> {
        Ok(vec![row.get("id").cloned().ok_or(())?])
    }

    fn ids(page: &Page) -> Vec<i64> {
        page.rows.iter().filter_map(|r| r.get_i64("id")).collect()
    }

    #[test]
    fn pages_follow_the_key_order() {
        let all = rows(&[5, -1, 3, 10, 0, 7]);
        let first = select_page(all.clone(), None, 4, key).unwrap();
        assert_eq!(ids(&first), [-1, 0, 3, 5]);
        assert_eq!(first.next, Some(vec![Value::Int64(5)]));
        let second = select_page(all, first.next.as_deref(), 4, key).unwrap();
        assert_eq!(ids(&second), [7, 10]);
        assert_eq!(second.next, None);
    }

    #[test]
    fn a_page_that_ends_exactly_at_the_last_row_has_no_next() {
        let page = select_page(rows(&[2, 1]), None, 2, key).unwrap();
        assert_eq!(ids(&page), [1, 2]);
        assert_eq!(page.next, None);
    }

    #[test]
    fn a_refused_row_fails_the_page() {
        let mut all = rows(&[1]);
        all.push(row! {"other" => 1});
        assert_eq!(select_page(all, None, 10, key).unwrap_err(), ());
    }
}
