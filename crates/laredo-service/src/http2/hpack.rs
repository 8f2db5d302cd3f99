//! HPACK header compression (RFC 7541) for the HTTP/2 server.
//!
//! The decoder keeps one dynamic table per connection and decodes complete header blocks
//! (HEADERS plus any CONTINUATION frames, already joined by the caller). The encoder side is
//! deliberately minimal: responses are written with the static `:status` entries or with
//! literals that never touch the peer's dynamic table, so no encoder state is needed.

use std::collections::VecDeque;
use std::fmt;

/// Error decoding a header block: always a connection error (`COMPRESSION_ERROR`) in HTTP/2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HpackError(pub(crate) &'static str);

impl fmt::Display for HpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HPACK decoding error: {}", self.0)
    }
}

impl std::error::Error for HpackError {}

/// The dynamic table size a connection starts with (RFC 7540 `SETTINGS_HEADER_TABLE_SIZE` default).
const DEFAULT_TABLE_SIZE: usize = 4096;

/// Per-entry overhead in the RFC 7541 §4.1 size accounting.
const ENTRY_OVERHEAD: usize = 32;

/// Largest integer the decoder accepts; anything bigger cannot be a valid index, length or size.
const MAX_INTEGER: u64 = 0xffff_ffff;

/// Continuation octets accepted after an integer prefix: 5 × 7 bits covers [`MAX_INTEGER`].
const MAX_INTEGER_OCTETS: u32 = 5;

/// Decoder state for one connection: the dynamic table.
pub(crate) struct Decoder {
    /// The dynamic table with the size the encoder chose.
    table: DynamicTable,
    /// The largest size the encoder may choose (the `SETTINGS_HEADER_TABLE_SIZE` we advertised).
    max_table_size: usize,
}

/// Sizes only: the table holds header values (cookies, credentials) that must not reach logs.
impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("entries", &self.table.entries.len())
            .field("table_size", &self.table.size)
            .field("table_capacity", &self.table.capacity)
            .field("max_table_size", &self.max_table_size)
            .finish()
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with the default 4,096-byte dynamic table limit.
    pub(crate) fn new() -> Self {
        Self {
            table: DynamicTable::new(DEFAULT_TABLE_SIZE),
            max_table_size: DEFAULT_TABLE_SIZE,
        }
    }

    /// Sets the limit (`SETTINGS_HEADER_TABLE_SIZE` we advertised); size updates in blocks above it are errors.
    ///
    /// Call it when the limit takes effect: once the peer has acknowledged the SETTINGS frame
    /// carrying it. A limit of at least the default 4,096 may be set right away, since the
    /// peer's encoder starts at 4,096 whatever it has seen of our settings.
    /// Lowering the limit below the table's current size shrinks the table right away (the
    /// encoder must send a matching size update anyway, RFC 7541 §4.2); raising it leaves the
    /// table size alone until the encoder signals a new size.
    #[cfg(test)] // the server keeps the default table
    pub(crate) fn set_max_table_size(&mut self, size: usize) {
        self.max_table_size = size;
        if self.table.capacity > size {
            self.table.set_capacity(size);
        }
    }

    /// Bytes the dynamic table holds now (RFC size: sum of name+value+32).
    #[cfg(test)] // the server keeps the default table
    pub(crate) fn table_size(&self) -> usize {
        self.table.size
    }

    /// Decodes one complete header block, calling `emit(name, value)` for each field in order.
    ///
    /// Enforces: dynamic table size updates only at the start of a block and <= max; indices in
    /// range; integer overflow; string lengths within the block; Huffman padding rules;
    /// `max_header_list_size` (sum of name + value + 32 over the fields): past it, the
    /// block is still decoded to its end (the dynamic table stays in step with the peer's)
    /// but no further field is emitted, and the answer is [`ListSize::TooLarge`], an error
    /// for that request only. Any error is fatal to the connection: the dynamic table is
    /// left in an unspecified state.
    pub(crate) fn decode(
        &mut self,
        block: &[u8],
        max_header_list_size: usize,
        mut emit: impl FnMut(&[u8], &[u8]),
    ) -> Result<ListSize, HpackError> {
        let mut input = Reader::new(block);
        // Scratch space for Huffman-decoded strings; raw strings are borrowed from `block`.
        let mut name_buf = Vec::new();
        let mut value_buf = Vec::new();
        let mut list_size = 0_usize;
        let mut too_large = false;
        let mut size_update_allowed = true;

        while let Some(first) = input.peek() {
            if first & 0x80 != 0 {
                // §6.1 Indexed Header Field.
                let index = input.read_int(7)?;
                let (name, value) = self.lookup(index)?;
                too_large =
                    too_large || !account(&mut list_size, name, value, max_header_list_size);
                if !too_large {
                    emit(name, value);
                }
            } else if first & 0xe0 == 0x20 {
                // §6.3 Dynamic Table Size Update: only before the first field (§4.2).
                if !size_update_allowed {
                    return Err(HpackError("dynamic table size update after a header field"));
                }
                let size = input.read_int(5)?;
                if size > self.max_table_size {
                    return Err(HpackError("dynamic table size update above the limit"));
                }
                self.table.set_capacity(size);
                continue;
            } else {
                // §6.2.1 with Incremental Indexing (01, 6-bit index), §6.2.2 without Indexing
                // (0000) and §6.2.3 Never Indexed (0001, both 4-bit index).
                let indexing = first & 0x40 != 0;
                let index = input.read_int(if indexing { 6 } else { 4 })?;
                let name = if index == 0 {
                    input.read_string(&mut name_buf)?
                } else {
                    self.lookup(index)?.0
                };
                let value = input.read_string(&mut value_buf)?;
                too_large =
                    too_large || !account(&mut list_size, name, value, max_header_list_size);
                if !too_large {
                    emit(name, value);
                }
                if indexing {
                    // Copied before inserting: the name may come from an entry it evicts (§4.4).
                    let entry = Entry::new(name, value);
                    self.table.insert(entry);
                }
            }
            size_update_allowed = false;
        }
        Ok(if too_large {
            ListSize::TooLarge
        } else {
            ListSize::Within
        })
    }

    /// The (name, value) at `index` in the combined static + dynamic index space (§2.3.3).
    fn lookup(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        if index == 0 {
            return Err(HpackError("index 0"));
        }
        if let Some(&(name, value)) = STATIC_TABLE.get(index - 1) {
            return Ok((name, value));
        }
        self.table
            .entries
            .get(index - 1 - STATIC_TABLE.len())
            .map(|entry| (entry.name(), entry.value()))
            .ok_or(HpackError("index beyond the dynamic table"))
    }
}

/// Whether a decoded header list stayed within the limit given to [`Decoder::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListSize {
    /// Every field was emitted.
    Within,
    /// The list went past the limit; the fields from there on were not emitted.
    TooLarge,
}

/// Adds one field to the running header list size; `false` once past the limit.
fn account(total: &mut usize, name: &[u8], value: &[u8], max: usize) -> bool {
    *total = total
        .saturating_add(name.len())
        .saturating_add(value.len())
        .saturating_add(ENTRY_OVERHEAD);
    *total <= max
}

/// One dynamic table entry: name and value in a single allocation.
struct Entry {
    /// The name followed by the value.
    bytes: Box<[u8]>,
    /// Where the name ends in `bytes`.
    name_len: usize,
}

impl Entry {
    fn new(name: &[u8], value: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(name.len() + value.len());
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(value);
        Self {
            bytes: bytes.into_boxed_slice(),
            name_len: name.len(),
        }
    }

    fn name(&self) -> &[u8] {
        self.bytes.get(..self.name_len).unwrap_or_default()
    }

    fn value(&self) -> &[u8] {
        self.bytes.get(self.name_len..).unwrap_or_default()
    }

    /// The RFC 7541 §4.1 size: name + value + 32.
    fn size(&self) -> usize {
        self.bytes.len().saturating_add(ENTRY_OVERHEAD)
    }
}

/// The dynamic table (§2.3.2): newest entry at the front.
struct DynamicTable {
    entries: VecDeque<Entry>,
    /// Sum of the entries' RFC sizes.
    size: usize,
    /// The maximum size the encoder last chose.
    capacity: usize,
}

impl DynamicTable {
    /// An empty table; allocates nothing until the first insertion.
    fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            capacity,
        }
    }

    /// Changes the maximum size, evicting entries that no longer fit (§4.3).
    fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        self.evict_to(capacity);
        if self.entries.is_empty() {
            // Give the memory back when the table is emptied (e.g. a size update to 0).
            self.entries.shrink_to_fit();
        }
    }

    /// Adds an entry, evicting the oldest ones to make room; an entry larger than the
    /// maximum size empties the table and is not added (§4.4).
    fn insert(&mut self, entry: Entry) {
        let entry_size = entry.size();
        let Some(room) = self.capacity.checked_sub(entry_size) else {
            self.entries.clear();
            self.size = 0;
            return;
        };
        self.evict_to(room);
        self.size += entry_size;
        self.entries.push_front(entry);
    }

    /// Evicts the oldest entries until the table size is at most `target`.
    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            let Some(entry) = self.entries.pop_back() else {
                self.size = 0;
                break;
            };
            self.size -= entry.size();
        }
    }
}

/// A cursor over a header block.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn next_byte(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    /// Reads an integer with an N-bit prefix (§5.1), N in 1..=8; the bits above the prefix in
    /// the first octet are ignored.
    fn read_int(&mut self, prefix_bits: u32) -> Result<usize, HpackError> {
        const TRUNCATED: HpackError = HpackError("truncated integer");
        let mask = u8::MAX >> (8 - prefix_bits);
        let first = self.next_byte().ok_or(TRUNCATED)? & mask;
        let mut value = u64::from(first);
        if first == mask {
            let mut shift = 0_u32;
            loop {
                if shift >= 7 * MAX_INTEGER_OCTETS {
                    return Err(HpackError("integer overflow"));
                }
                let byte = self.next_byte().ok_or(TRUNCATED)?;
                value += u64::from(byte & 0x7f) << shift;
                if value > MAX_INTEGER {
                    return Err(HpackError("integer overflow"));
                }
                if byte & 0x80 == 0 {
                    break;
                }
                shift += 7;
            }
        }
        usize::try_from(value).map_err(|_| HpackError("integer overflow"))
    }

    /// Reads a string literal (§5.2): borrowed from the block when raw, decoded into
    /// `scratch` when Huffman-coded.
    fn read_string<'s>(&mut self, scratch: &'s mut Vec<u8>) -> Result<&'s [u8], HpackError>
    where
        'a: 's,
    {
        let huffman = self.peek().is_some_and(|byte| byte & 0x80 != 0);
        let len = self.read_int(7)?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.buf.len())
            .ok_or(HpackError("string length beyond the header block"))?;
        let raw: &'a [u8] = self.buf.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        if huffman {
            scratch.clear();
            huffman_decode(raw, scratch)?;
            Ok(scratch.as_slice())
        } else {
            Ok(raw)
        }
    }
}

/// Appends `:status` for `status` (indexed static entry when the static table has it: 200,204,206,304,400,404,500; otherwise literal without indexing with indexed name 8).
pub(crate) fn encode_status(status: u16, out: &mut Vec<u8>) {
    let index: u8 = match status {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => {
            // Literal without indexing, name = static index 8 (`:status`), raw decimal value.
            const DIGITS: &[u8; 10] = b"0123456789";
            let mut digits = [0_u8; 5];
            let mut start = digits.len();
            let mut rest = status;
            loop {
                start -= 1;
                digits[start] = DIGITS[usize::from(rest % 10)];
                rest /= 10;
                if rest == 0 {
                    break;
                }
            }
            out.push(0x08);
            encode_string(&digits[start..], out);
            return;
        }
    };
    out.push(0x80 | index);
}

/// Appends a field as "literal without indexing — new name" (0x00 prefix), raw (non-Huffman) strings.
///
/// HTTP/2 requires lowercase field names; the caller passes them that way.
pub(crate) fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.reserve(name.len() + value.len() + 7);
    out.push(0x00);
    encode_string(name, out);
    encode_string(value, out);
}

/// Appends a raw string literal: H = 0, 7-bit-prefix length, then the octets.
fn encode_string(bytes: &[u8], out: &mut Vec<u8>) {
    encode_int(bytes.len(), 0x7f, 0x00, out);
    out.extend_from_slice(bytes);
}

/// Appends an integer (§5.1) with the prefix given by `mask` (2^N - 1) and the bits of
/// `flags` above it in the first octet.
fn encode_int(value: usize, mask: u8, flags: u8, out: &mut Vec<u8>) {
    match u8::try_from(value) {
        Ok(small) if small < mask => out.push(flags | small),
        _ => {
            out.push(flags | mask);
            let mut rest = value - usize::from(mask);
            while rest >= 0x80 {
                // The low byte of `rest`, without a narrowing cast.
                out.push(0x80 | (rest.to_le_bytes()[0] & 0x7f));
                rest >>= 7;
            }
            out.push(rest.to_le_bytes()[0]);
        }
    }
}

/// The static table (RFC 7541 Appendix A); index 1 is element 0.
static STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// Number of Huffman symbols: the 256 octets plus EOS (256).
const HUFFMAN_SYMBOLS: usize = 257;

/// Longest Huffman code, in bits.
const MAX_CODE_LEN: usize = 30;

/// Shortest Huffman code, in bits.
const MIN_CODE_LEN: usize = 5;

/// Code length in bits of each symbol (RFC 7541 Appendix B). The code is canonical: codes are
/// assigned in increasing order of (length, symbol), which [`CANONICAL`] reconstructs.
#[rustfmt::skip]
const HUFFMAN_LENGTHS: [u8; HUFFMAN_SYMBOLS] = [
    // 0x00..=0x0f
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    // 0x10..=0x1f
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    // ' ' ! " # $ % & ' ( ) * + , - . /
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    // 0 1 2 3 4 5 6 7 8 9 : ; < = > ?
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
    // @ A B C D E F G H I J K L M N O
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    // P Q R S T U V W X Y Z [ \ ] ^ _
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
    // ` a b c d e f g h i j k l m n o
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
    // p q r s t u v w x y z { | } ~ DEL
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    // 0x80..=0x8f
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    // 0x90..=0x9f
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    // 0xa0..=0xaf
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    // 0xb0..=0xbf
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    // 0xc0..=0xcf
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    // 0xd0..=0xdf
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    // 0xe0..=0xef
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    // 0xf0..=0xff
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    // EOS
    30,
];

/// The canonical Huffman code in decoding form, indexed by code length.
struct Canonical {
    /// First (numerically smallest) code of each length.
    first: [u32; MAX_CODE_LEN + 1],
    /// Number of codes of each length.
    count: [u32; MAX_CODE_LEN + 1],
    /// Index in `symbols` of the first symbol of each length.
    offset: [usize; MAX_CODE_LEN + 1],
    /// All symbols sorted by (code length, symbol), i.e. by code.
    symbols: [u16; HUFFMAN_SYMBOLS],
}

/// Decoding tables built at compile time from [`HUFFMAN_LENGTHS`].
static CANONICAL: Canonical = build_canonical();

const fn build_canonical() -> Canonical {
    let mut count = [0_u32; MAX_CODE_LEN + 1];
    let mut sym = 0;
    while sym < HUFFMAN_SYMBOLS {
        count[HUFFMAN_LENGTHS[sym] as usize] += 1;
        sym += 1;
    }

    let mut first = [0_u32; MAX_CODE_LEN + 1];
    let mut offset = [0_usize; MAX_CODE_LEN + 1];
    let mut code = 0_u32;
    let mut len = 1;
    while len <= MAX_CODE_LEN {
        code = (code + count[len - 1]) << 1;
        first[len] = code;
        offset[len] = offset[len - 1] + count[len - 1] as usize;
        len += 1;
    }

    let mut next = offset;
    let mut symbols = [0_u16; HUFFMAN_SYMBOLS];
    let mut sym: u16 = 0;
    while (sym as usize) < HUFFMAN_SYMBOLS {
        let len = HUFFMAN_LENGTHS[sym as usize] as usize;
        symbols[next[len]] = sym;
        next[len] += 1;
        sym += 1;
    }

    Canonical {
        first,
        count,
        offset,
        symbols,
    }
}

/// Decodes a Huffman-coded string (§5.2) onto `out`.
///
/// Walks the input bit by bit, checking after each bit whether the bits read so far form a
/// complete code of that length (one comparison against the canonical table). Rejects the EOS
/// symbol, padding longer than 7 bits and padding that is not a prefix of EOS (all ones).
fn huffman_decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    // Codes are at least 5 bits: output is at most 8/5 of the input.
    out.reserve(input.len() + input.len() / 2 + input.len() / 8);
    let mut code = 0_u32;
    let mut len = 0_usize;
    for &byte in input {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            if len < MIN_CODE_LEN {
                continue;
            }
            // In a canonical code an unfinished prefix is always >= first[len], so a
            // wrapped-around difference simply fails the range test.
            let rank = code.wrapping_sub(CANONICAL.first[len]);
            if rank < CANONICAL.count[len] {
                let Some(&sym) = usize::try_from(rank)
                    .ok()
                    .and_then(|rank| CANONICAL.symbols.get(CANONICAL.offset[len] + rank))
                else {
                    return Err(HpackError("invalid Huffman code"));
                };
                // EOS (256) is the only symbol that is not an octet; it must not appear (§5.2).
                let Ok(octet) = u8::try_from(sym) else {
                    return Err(HpackError("Huffman EOS symbol in string"));
                };
                out.push(octet);
                code = 0;
                len = 0;
            } else if len >= MAX_CODE_LEN {
                // Unreachable with a complete code (every 30-bit pattern is a code), kept
                // so a table mistake cannot index past the arrays.
                return Err(HpackError("invalid Huffman code"));
            }
        }
    }
    if len > 7 {
        return Err(HpackError("Huffman padding longer than 7 bits"));
    }
    if code != (1_u32 << len) - 1 {
        return Err(HpackError("Huffman padding not all ones"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end-of-string symbol.
    const EOS: u16 = 256;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .map(|b| match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                _ => panic!("bad hex digit {b}"),
            })
            .collect();
        assert_eq!(digits.len() % 2, 0, "odd hex length");
        digits
            .chunks(2)
            .map(|pair| (pair[0] << 4) | pair[1])
            .collect()
    }

    fn decode_with(decoder: &mut Decoder, block: &[u8], max: usize) -> Result<Fields, HpackError> {
        let mut fields = Vec::new();
        let size = decoder.decode(block, max, |name, value| {
            fields.push((name.to_vec(), value.to_vec()));
        })?;
        match size {
            ListSize::Within => Ok(fields),
            ListSize::TooLarge => Err(HpackError("header list too large")),
        }
    }

    fn decode(decoder: &mut Decoder, block: &[u8]) -> Fields {
        decode_with(decoder, block, usize::MAX).expect("block decodes")
    }

    fn decode_err(decoder: &mut Decoder, block: &[u8]) -> HpackError {
        decode_with(decoder, block, usize::MAX).expect_err("block must fail")
    }

    fn fields(list: &[(&str, &str)]) -> Fields {
        list.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    /// Dynamic table contents, newest first.
    fn table(decoder: &Decoder) -> Fields {
        decoder
            .table
            .entries
            .iter()
            .map(|entry| (entry.name().to_vec(), entry.value().to_vec()))
            .collect()
    }

    /// (code, length) of a symbol, recomputed from the canonical tables.
    fn code_of(sym: u16) -> (u32, usize) {
        let len = usize::from(HUFFMAN_LENGTHS[usize::from(sym)]);
        let position = CANONICAL
            .symbols
            .iter()
            .position(|&s| s == sym)
            .expect("every symbol is in the table");
        let rank = u32::try_from(position - CANONICAL.offset[len]).expect("small rank");
        (CANONICAL.first[len] + rank, len)
    }

    /// Test-only Huffman encoder built from `code_of`.
    fn huffman_encode(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut acc = 0_u64;
        let mut bits = 0_usize;
        for &byte in data {
            let (code, len) = code_of(u16::from(byte));
            acc = (acc << len) | u64::from(code);
            bits += len;
            while bits >= 8 {
                bits -= 8;
                out.push(u8::try_from((acc >> bits) & 0xff).expect("masked"));
            }
            acc &= (1 << bits) - 1;
        }
        if bits > 0 {
            let pad = 8 - bits;
            out.push(u8::try_from(((acc << pad) | ((1 << pad) - 1)) & 0xff).expect("masked"));
        }
        out
    }

    fn huffman(input: &[u8]) -> Result<Vec<u8>, HpackError> {
        let mut out = Vec::new();
        huffman_decode(input, &mut out)?;
        Ok(out)
    }

    // ---- Huffman code ----

    #[test]
    fn huffman_codes_match_rfc() {
        assert_eq!(code_of(0), (0x1ff8, 13));
        assert_eq!(code_of(u16::from(b'0')), (0x0, 5));
        assert_eq!(code_of(u16::from(b'a')), (0x3, 5));
        assert_eq!(code_of(EOS), (0x3fff_ffff, 30));
        // A few more from Appendix B across all the length groups.
        assert_eq!(code_of(1), (0x7f_ffd8, 23));
        assert_eq!(code_of(9), (0xff_ffea, 24));
        assert_eq!(code_of(10), (0x3fff_fffc, 30));
        assert_eq!(code_of(22), (0x3fff_fffe, 30));
        assert_eq!(code_of(u16::from(b' ')), (0x14, 6));
        assert_eq!(code_of(u16::from(b':')), (0x5c, 7));
        assert_eq!(code_of(u16::from(b'&')), (0xf8, 8));
        assert_eq!(code_of(u16::from(b'?')), (0x3fc, 10));
        assert_eq!(code_of(u16::from(b'|')), (0x7fc, 11));
        assert_eq!(code_of(u16::from(b'>')), (0xffb, 12));
        assert_eq!(code_of(u16::from(b'~')), (0x1ffd, 13));
        assert_eq!(code_of(u16::from(b'}')), (0x3ffd, 14));
        assert_eq!(code_of(u16::from(b'{')), (0x7ffe, 15));
        assert_eq!(code_of(u16::from(b'\\')), (0x7fff0, 19));
        assert_eq!(code_of(127), (0xfff_fffc, 28));
        assert_eq!(code_of(128), (0xf_ffe6, 20));
        assert_eq!(code_of(153), (0x1f_ffdc, 21));
        assert_eq!(code_of(129), (0x3f_ffd2, 22));
        assert_eq!(code_of(199), (0x1ff_ffec, 25));
        assert_eq!(code_of(192), (0x3ff_ffe0, 26));
        assert_eq!(code_of(203), (0x7ff_ffde, 27));
        assert_eq!(code_of(220), (0xfff_fffd, 28));
        assert_eq!(code_of(249), (0xfff_fffe, 28));
        assert_eq!(code_of(254), (0x7ff_fff0, 27));
        assert_eq!(code_of(255), (0x3ff_ffee, 26));
    }

    #[test]
    fn huffman_code_is_complete() {
        // Kraft sum of exactly 1: every bit pattern up to 30 bits starts with a code.
        let total: u64 = HUFFMAN_LENGTHS
            .iter()
            .map(|&len| 1_u64 << (30 - u32::from(len)))
            .sum();
        assert_eq!(total, 1 << 30);
    }

    #[test]
    fn huffman_rfc_strings() {
        let cases = [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
                "https://www.example.com",
            ),
            ("9bd9 ab", "gzip"),
            (
                "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 \
                 3160 65c0 03ed 4ee5 b106 3d50 07",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            ),
        ];
        for (encoded, text) in cases {
            assert_eq!(
                huffman(&hex(encoded)).expect("valid"),
                text.as_bytes(),
                "{text}"
            );
            assert_eq!(huffman_encode(text.as_bytes()), hex(encoded), "{text}");
        }
        assert_eq!(huffman(&[]).expect("empty is valid"), b"");
    }

    #[test]
    fn huffman_round_trips_every_octet() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(huffman(&huffman_encode(&all)).expect("valid"), all);
        // Pseudo-random strings of every length up to 64 (xorshift, fixed seed).
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..64 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state.to_le_bytes()[0]
                })
                .collect();
            assert_eq!(huffman(&huffman_encode(&data)).expect("valid"), data);
        }
    }

    #[test]
    fn huffman_rejects_eos() {
        // 30 one bits (EOS) + 2 padding bits.
        assert_eq!(
            huffman(&[0xff; 4]),
            Err(HpackError("Huffman EOS symbol in string"))
        );
        // 'a' then EOS.
        let mut bits = huffman_encode(b"a");
        bits.extend_from_slice(&[0xff; 4]);
        assert!(huffman(&bits).is_err());
    }

    #[test]
    fn huffman_rejects_bad_padding() {
        // 'a' = 00011, padding 000: not all ones.
        assert_eq!(
            huffman(&[0x18]),
            Err(HpackError("Huffman padding not all ones"))
        );
        // 'a' + 11 bits of ones: padding longer than 7 bits.
        assert_eq!(
            huffman(&[0x1f, 0xff]),
            Err(HpackError("Huffman padding longer than 7 bits"))
        );
        // A whole byte of ones alone is also too much padding.
        assert_eq!(
            huffman(&[0xff]),
            Err(HpackError("Huffman padding longer than 7 bits"))
        );
        // 'a' + 111 is fine.
        assert_eq!(huffman(&[0x1f]).expect("valid"), b"a");
    }

    // ---- Integers ----

    #[test]
    fn integers_rfc_c1() {
        // C.1.1: 10 with a 5-bit prefix; C.1.2: 1337 with a 5-bit prefix; C.1.3: 42 at an octet boundary.
        assert_eq!(Reader::new(&[0x0a]).read_int(5), Ok(10));
        assert_eq!(Reader::new(&[0xff, 0x9a, 0x0a]).read_int(5), Ok(1337));
        assert_eq!(Reader::new(&[0x2a]).read_int(8), Ok(42));
        let mut out = Vec::new();
        encode_int(1337, 0x1f, 0xe0, &mut out);
        assert_eq!(out, [0xff, 0x9a, 0x0a]);
        out.clear();
        encode_int(10, 0x1f, 0x00, &mut out);
        assert_eq!(out, [0x0a]);
        out.clear();
        encode_int(127, 0x7f, 0x00, &mut out);
        assert_eq!(out, [0x7f, 0x00]);
        for value in [
            0,
            1,
            14,
            15,
            16,
            126,
            127,
            128,
            255,
            256,
            16_383,
            16_384,
            1 << 20,
            0xffff_ffff,
        ] {
            for (mask, bits) in [(0x0f_u8, 4), (0x1f, 5), (0x3f, 6), (0x7f, 7)] {
                out.clear();
                encode_int(value, mask, 0, &mut out);
                let mut reader = Reader::new(&out);
                assert_eq!(reader.read_int(bits), Ok(value), "{value} with {bits} bits");
                assert_eq!(reader.pos, out.len());
            }
        }
    }

    #[test]
    fn integers_reject_truncation_and_overflow() {
        assert_eq!(
            Reader::new(&[]).read_int(7),
            Err(HpackError("truncated integer"))
        );
        assert_eq!(
            Reader::new(&[0x7f]).read_int(7),
            Err(HpackError("truncated integer"))
        );
        assert_eq!(
            Reader::new(&[0x7f, 0x80]).read_int(7),
            Err(HpackError("truncated integer"))
        );
        // 2^32 does not fit.
        assert_eq!(
            Reader::new(&[0x7f, 0x81, 0xff, 0xff, 0xff, 0x0f]).read_int(7),
            Err(HpackError("integer overflow"))
        );
        // Endless zero continuation octets.
        assert_eq!(
            Reader::new(&[0x7f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]).read_int(7),
            Err(HpackError("integer overflow"))
        );
        let mut decoder = Decoder::new();
        assert_eq!(
            decode_err(&mut decoder, &[0xff]),
            HpackError("truncated integer")
        );
        let mut decoder = Decoder::new();
        assert_eq!(
            decode_err(
                &mut decoder,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]
            ),
            HpackError("integer overflow")
        );
    }

    // ---- RFC 7541 Appendix C ----

    #[test]
    fn rfc_c2_1_literal_with_indexing() {
        let mut decoder = Decoder::new();
        let block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        assert_eq!(
            decode(&mut decoder, &block),
            fields(&[("custom-key", "custom-header")])
        );
        assert_eq!(table(&decoder), fields(&[("custom-key", "custom-header")]));
        assert_eq!(decoder.table_size(), 55);
    }

    #[test]
    fn rfc_c2_2_literal_without_indexing() {
        let mut decoder = Decoder::new();
        let block = hex("040c 2f73 616d 706c 652f 7061 7468");
        assert_eq!(
            decode(&mut decoder, &block),
            fields(&[(":path", "/sample/path")])
        );
        assert!(table(&decoder).is_empty());
        assert_eq!(decoder.table_size(), 0);
    }

    #[test]
    fn rfc_c2_3_literal_never_indexed() {
        let mut decoder = Decoder::new();
        let block = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
        assert_eq!(
            decode(&mut decoder, &block),
            fields(&[("password", "secret")])
        );
        assert!(table(&decoder).is_empty());
        assert_eq!(decoder.table_size(), 0);
    }

    #[test]
    fn rfc_c2_4_indexed() {
        let mut decoder = Decoder::new();
        assert_eq!(decode(&mut decoder, &[0x82]), fields(&[(":method", "GET")]));
        assert!(table(&decoder).is_empty());
        assert_eq!(decoder.table_size(), 0);
    }

    /// Runs C.3 or C.4: the same three requests, raw or Huffman-coded.
    fn requests(blocks: [&str; 3]) {
        let mut decoder = Decoder::new();

        let first = decode(&mut decoder, &hex(blocks[0]));
        assert_eq!(
            first,
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ])
        );
        assert_eq!(
            table(&decoder),
            fields(&[(":authority", "www.example.com")])
        );
        assert_eq!(decoder.table_size(), 57);

        let second = decode(&mut decoder, &hex(blocks[1]));
        assert_eq!(
            second,
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ])
        );
        assert_eq!(
            table(&decoder),
            fields(&[
                ("cache-control", "no-cache"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(decoder.table_size(), 110);

        let third = decode(&mut decoder, &hex(blocks[2]));
        assert_eq!(
            third,
            fields(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ])
        );
        assert_eq!(
            table(&decoder),
            fields(&[
                ("custom-key", "custom-value"),
                ("cache-control", "no-cache"),
                (":authority", "www.example.com"),
            ])
        );
        assert_eq!(decoder.table_size(), 164);
    }

    #[test]
    fn rfc_c3_requests_without_huffman() {
        requests([
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ]);
    }

    #[test]
    fn rfc_c4_requests_with_huffman() {
        requests([
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ]);
    }

    /// Runs C.5 or C.6: three responses with a 256-byte table, raw or Huffman-coded.
    fn responses(blocks: [&str; 3]) {
        const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
        let mut decoder = Decoder::new();
        decoder.set_max_table_size(256);

        let first = decode(&mut decoder, &hex(blocks[0]));
        assert_eq!(
            first,
            fields(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com"),
            ])
        );
        assert_eq!(
            table(&decoder),
            fields(&[
                ("location", "https://www.example.com"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("cache-control", "private"),
                (":status", "302"),
            ])
        );
        assert_eq!(decoder.table_size(), 222);

        // `:status: 307` evicts `:status: 302`.
        let second = decode(&mut decoder, &hex(blocks[1]));
        assert_eq!(
            second,
            fields(&[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com"),
            ])
        );
        assert_eq!(
            table(&decoder),
            fields(&[
                (":status", "307"),
                ("location", "https://www.example.com"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("cache-control", "private"),
            ])
        );
        assert_eq!(decoder.table_size(), 222);

        let third = decode(&mut decoder, &hex(blocks[2]));
        assert_eq!(
            third,
            fields(&[
                (":status", "200"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
                ("location", "https://www.example.com"),
                ("content-encoding", "gzip"),
                ("set-cookie", COOKIE),
            ])
        );
        assert_eq!(
            table(&decoder),
            fields(&[
                ("set-cookie", COOKIE),
                ("content-encoding", "gzip"),
                ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
            ])
        );
        assert_eq!(decoder.table_size(), 215);
    }

    #[test]
    fn rfc_c5_responses_without_huffman() {
        responses([
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
             2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
             6c65 2e63 6f6d",
            "4803 3330 37c1 c0bf",
            "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d \
             54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 \
             5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e \
             3d31",
        ]);
    }

    #[test]
    fn rfc_c6_responses_with_huffman() {
        responses([
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "4883 640e ffc1 c0bf",
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
             77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
             9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        ]);
    }

    // ---- Decoder errors ----

    #[test]
    fn rejects_index_zero() {
        let mut decoder = Decoder::new();
        assert_eq!(decode_err(&mut decoder, &[0x80]), HpackError("index 0"));
    }

    #[test]
    fn rejects_index_beyond_table() {
        // 62 is the first dynamic index; the table is empty.
        let mut decoder = Decoder::new();
        assert_eq!(
            decode_err(&mut decoder, &[0xbe]),
            HpackError("index beyond the dynamic table")
        );
        // Indexed name beyond the table in a literal.
        let mut decoder = Decoder::new();
        assert_eq!(
            decode_err(&mut decoder, &[0x7e, 0x01, b'x']),
            HpackError("index beyond the dynamic table")
        );
        // With one entry, 62 works and 63 does not.
        let mut decoder = Decoder::new();
        decode(
            &mut decoder,
            &hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"),
        );
        assert_eq!(
            decode(&mut decoder, &[0xbe]),
            fields(&[(":authority", "www.example.com")])
        );
        assert_eq!(
            decode_err(&mut decoder, &[0xbf]),
            HpackError("index beyond the dynamic table")
        );
        // The last static entry is 61.
        let mut decoder = Decoder::new();
        assert_eq!(
            decode(&mut decoder, &[0xbd]),
            fields(&[("www-authenticate", "")])
        );
    }

    #[test]
    fn rejects_string_beyond_block() {
        let mut decoder = Decoder::new();
        assert_eq!(
            decode_err(&mut decoder, &[0x40, 0x0a, b'c', b'u', b's']),
            HpackError("string length beyond the header block")
        );
        let mut decoder = Decoder::new();
        assert_eq!(
            decode_err(&mut decoder, &[0x04, 0x05, b'/', b'a']),
            HpackError("string length beyond the header block")
        );
        // Missing value string entirely.
        let mut decoder = Decoder::new();
        assert_eq!(
            decode_err(&mut decoder, &[0x04]),
            HpackError("truncated integer")
        );
    }

    #[test]
    fn rejects_huffman_eos_and_padding_in_block() {
        let mut decoder = Decoder::new();
        assert_eq!(
            decode_err(&mut decoder, &[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]),
            HpackError("Huffman EOS symbol in string")
        );
        let mut decoder = Decoder::new();
        assert_eq!(
            decode_err(&mut decoder, &[0x04, 0x81, 0x18]),
            HpackError("Huffman padding not all ones")
        );
        let mut decoder = Decoder::new();
        assert_eq!(
            decode_err(&mut decoder, &[0x04, 0x82, 0x1f, 0xff]),
            HpackError("Huffman padding longer than 7 bits")
        );
    }

    #[test]
    fn size_updates() {
        // 4097 (001 11111, 4097 - 31 = 4066 = 0x62 | 0x80, 0x1f) is above the default limit.
        let mut decoder = Decoder::new();
        assert_eq!(
            decode_err(&mut decoder, &[0x3f, 0xe2, 0x1f]),
            HpackError("dynamic table size update above the limit")
        );
        // 4096 is fine, also twice, also followed by a field.
        let mut decoder = Decoder::new();
        assert_eq!(
            decode(
                &mut decoder,
                &[0x3f, 0xe1, 0x1f, 0x20, 0x3f, 0xe1, 0x1f, 0x82]
            )
            .len(),
            1
        );
        // After a field it is an error, even when the size is valid.
        let mut decoder = Decoder::new();
        assert_eq!(
            decode_err(&mut decoder, &[0x82, 0x20]),
            HpackError("dynamic table size update after a header field")
        );
        // A lowered limit applies to updates.
        let mut decoder = Decoder::new();
        decoder.set_max_table_size(100);
        assert_eq!(
            decode_err(&mut decoder, &[0x3f, 0x46]),
            HpackError("dynamic table size update above the limit")
        );
        let mut decoder = Decoder::new();
        decoder.set_max_table_size(100);
        assert!(decode(&mut decoder, &[0x3f, 0x45]).is_empty());
        // A raised limit allows larger updates, and a block of only an update is valid.
        let mut decoder = Decoder::new();
        decoder.set_max_table_size(65_536);
        assert!(decode(&mut decoder, &[0x3f, 0xe1, 0xff, 0x03]).is_empty());
        assert_eq!(decoder.table.capacity, 65_536);
    }

    #[test]
    fn size_update_evicts() {
        let mut decoder = Decoder::new();
        decode(
            &mut decoder,
            &hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"),
        );
        decode(&mut decoder, &hex("8286 84be 5808 6e6f 2d63 6163 6865"));
        assert_eq!(decoder.table_size(), 110);
        // Shrink to 60: only the newest entry (53 bytes) stays.
        assert!(decode(&mut decoder, &[0x3f, 0x1d]).is_empty());
        assert_eq!(table(&decoder), fields(&[("cache-control", "no-cache")]));
        assert_eq!(decoder.table_size(), 53);
        // Size 0 empties the table and frees its memory; new entries are not kept.
        assert_eq!(decode(&mut decoder, &[0x20, 0x82]).len(), 1);
        assert_eq!(decoder.table_size(), 0);
        assert_eq!(decoder.table.entries.capacity(), 0);
        assert_eq!(
            decode(&mut decoder, &[0x41, 0x01, b'x']),
            fields(&[(":authority", "x")])
        );
        assert_eq!(decoder.table_size(), 0);
        assert_eq!(
            decode_err(&mut decoder, &[0xbe]),
            HpackError("index beyond the dynamic table")
        );
    }

    #[test]
    fn entry_larger_than_table_empties_it() {
        let mut decoder = Decoder::new();
        decoder.set_max_table_size(100);
        decode(&mut decoder, &[0x41, 0x01, b'x']);
        assert_eq!(decoder.table_size(), 43);
        // name 10 + value 60 + 32 = 102 > 100: the table is emptied, the field still emitted.
        let mut block = vec![0x40, 10];
        block.extend_from_slice(b"custom-key");
        block.push(60);
        block.extend_from_slice(&[b'v'; 60]);
        let got = decode(&mut decoder, &block);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.len(), 60);
        assert!(table(&decoder).is_empty());
        assert_eq!(decoder.table_size(), 0);
        // Exactly the table size fits.
        let value_len_at = block.len() - 60 - 1;
        block[value_len_at] = 58;
        block.truncate(block.len() - 2);
        decode(&mut decoder, &block);
        assert_eq!(decoder.table_size(), 100);
    }

    #[test]
    fn indexed_name_survives_eviction_of_its_entry() {
        // The name refers to the entry the insertion evicts (RFC 7541 §4.4).
        let mut decoder = Decoder::new();
        decoder.set_max_table_size(45);
        decode(
            &mut decoder,
            &[0x40, 0x03, b'a', b'b', b'c', 0x03, b'1', b'2', b'3'],
        );
        assert_eq!(decoder.table_size(), 38);
        // Literal with indexing, name = index 62 ("abc"), value "4567".
        let got = decode(&mut decoder, &[0x7e, 0x04, b'4', b'5', b'6', b'7']);
        assert_eq!(got, fields(&[("abc", "4567")]));
        assert_eq!(table(&decoder), fields(&[("abc", "4567")]));
        assert_eq!(decoder.table_size(), 39);
    }

    #[test]
    fn header_list_size_limit() {
        let block = hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d");
        // 42 + 43 + 38 + 57 = 180.
        let mut decoder = Decoder::new();
        assert_eq!(
            decode_with(&mut decoder, &block, 180)
                .expect("at the limit")
                .len(),
            4
        );
        let mut decoder = Decoder::new();
        assert_eq!(
            decode_with(&mut decoder, &block, 179),
            Err(HpackError("header list too large"))
        );
        let mut decoder = Decoder::new();
        let mut emitted = 0;
        let result = decoder.decode(&block, 100, |_, _| emitted += 1);
        assert_eq!(result, Ok(ListSize::TooLarge));
        assert_eq!(emitted, 2, "fields past the limit are not emitted");
        // The block was still decoded to its end: the indexed :authority is in the table.
        assert_eq!(decoder.table_size(), 57);
    }

    #[test]
    fn empty_block_and_empty_decoder() {
        let mut decoder = Decoder::new();
        assert_eq!(decoder.table_size(), 0);
        assert_eq!(decoder.table.entries.capacity(), 0);
        assert!(decode(&mut decoder, &[]).is_empty());
        assert_eq!(decoder.table.entries.capacity(), 0);
    }

    #[test]
    fn error_display_and_decoder_debug() {
        assert_eq!(
            HpackError("index 0").to_string(),
            "HPACK decoding error: index 0"
        );
        let mut decoder = Decoder::new();
        decode(
            &mut decoder,
            &[0x40, 0x01, b'k', 0x06, b's', b'e', b'c', b'r', b'e', b't'],
        );
        let debug = format!("{decoder:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("table_size: 39"), "{debug}");
    }

    // ---- Encoder ----

    #[test]
    fn encode_status_static_and_literal() {
        let mut out = Vec::new();
        encode_status(200, &mut out);
        assert_eq!(out, [0x88]);
        out.clear();
        encode_status(404, &mut out);
        assert_eq!(out, [0x8d]);
        out.clear();
        encode_status(302, &mut out);
        assert_eq!(out, [0x08, 0x03, b'3', b'0', b'2']);

        let statuses = [
            0,
            7,
            100,
            200,
            201,
            204,
            206,
            302,
            304,
            400,
            404,
            429,
            500,
            503,
            999,
            10_000,
            u16::MAX,
        ];
        for status in statuses {
            out.clear();
            encode_status(status, &mut out);
            let mut decoder = Decoder::new();
            assert_eq!(
                decode(&mut decoder, &out),
                fields(&[(":status", status.to_string().as_str())])
            );
            assert_eq!(decoder.table_size(), 0, "status is never indexed");
        }
    }

    #[test]
    fn encode_literal_round_trips() {
        let mut out = Vec::new();
        encode_literal(b"grpc-status", b"0", &mut out);
        let mut expected = vec![0x00, 11];
        expected.extend_from_slice(b"grpc-status");
        expected.extend_from_slice(&[1, b'0']);
        assert_eq!(out, expected);

        let long_value = "x".repeat(300);
        let long_name = "n".repeat(127);
        let mut block = Vec::new();
        encode_status(200, &mut block);
        encode_literal(b"content-type", b"application/grpc", &mut block);
        encode_literal(b"grpc-message", long_value.as_bytes(), &mut block);
        encode_literal(long_name.as_bytes(), b"", &mut block);
        encode_literal(b"", b"", &mut block);
        encode_status(503, &mut block);
        let mut decoder = Decoder::new();
        assert_eq!(
            decode(&mut decoder, &block),
            fields(&[
                (":status", "200"),
                ("content-type", "application/grpc"),
                ("grpc-message", long_value.as_str()),
                (long_name.as_str(), ""),
                ("", ""),
                (":status", "503"),
            ])
        );
        assert_eq!(decoder.table_size(), 0);
    }
}
