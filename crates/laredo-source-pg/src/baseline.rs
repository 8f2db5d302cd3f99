//! Reading a table for the baseline: `COPY (SELECT ...) TO STDOUT`, streamed.
//!
//! [`TableCopy`] hands out rows in batches as the server sends them, so memory stays
//! bounded by the batch size whatever the table's size: the reader keeps one batch of
//! rows and at most one partly received row (PostgreSQL sends one `CopyData` message
//! per row, decoded straight from the message).
//!
//! Two formats, giving the same `Value`s as the stream's
//! [`crate::types::parse_text`]:
//!
//! - **binary** ([`TableCopy::start`], the default): `COPY ... (FORMAT binary)`. A file
//!   header (`PGCOPY\n\xff\r\n\0`, flags, header extension), then per row a field
//!   count and each field as a length (`-1` = NULL) and its bytes, then a `-1` trailer.
//!   Values are decoded with [`crate::binary::parse_binary`]. A column whose type has
//!   no binary decoder (enums, domains, `inet`, `money`, ranges, user types) is selected
//!   as its output function's text, `concat(col)` (which turns NULL into `''`, hence a
//!   `CASE`), and mapped with [`crate::types::parse_text`] as in text mode. (`col::text`
//!   would not do: some types have a cast to text that differs from their output, e.g.
//!   `inet` adds `/32`.) The
//!   server skips the text formatting of timestamps, numerics and floats, and the
//!   client the escaping and parsing, which makes binary the faster of the two.
//! - **text** ([`TableCopy::start_text`]): one line per row, tab-separated, `\N` for
//!   NULL, backslash escapes; each field is mapped with [`crate::types::parse_text`].
//!   It relies on the session settings [`crate::types::SESSION_SETTINGS`].
//!
//! Run [`TableCopy::next_batch`] in a task on the runtime that drives the connection:
//! from a thread outside it (`block_on`), every batch of `CopyData` messages wakes the
//! reader across threads, which cost about a third more client CPU when measured.
//!
//! Format: <https://www.postgresql.org/docs/current/sql-copy.html> (Binary Format).

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use laredo_core::{ColumnDefinition, Row, RowLayout, TableIdentifier, Value};
use tokio_postgres::{Client, CopyOutStream};

use crate::binary::{Decoder, is_supported};
use crate::catalog::{CatalogError, quote_ident, quote_table};
use crate::types::{TypeError, parse_text};

/// The binary COPY file signature.
const BINARY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Header flag bit 16: each row carries an OID (never for `COPY (SELECT ...)`).
const BINARY_FLAG_OIDS: u32 = 1 << 16;
/// Header flag bits 16-31 are critical: a reader must reject ones it does not know.
const BINARY_FLAGS_CRITICAL: u32 = 0xffff_0000;

/// A baseline read failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BaselineError {
    /// The COPY failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The server sent data that is not a COPY row of the expected shape.
    #[error("malformed COPY row of {table}: {problem}")]
    BadRow {
        /// The table.
        table: TableIdentifier,
        /// What was wrong.
        problem: String,
    },
    /// A field did not parse as its column type.
    #[error("column {column} of {table}")]
    BadValue {
        /// The table.
        table: TableIdentifier,
        /// The column.
        column: String,
        /// The cause.
        #[source]
        source: TypeError,
    },
}

/// What the COPY stream yields: a `CopyData` message's bytes.
type CopyChunk = <CopyOutStream as Stream>::Item;

/// A streaming read of one table; see the module docs.
pub struct TableCopy {
    // Boxed as a trait object so the unit tests can feed chunks of their choosing.
    stream: Pin<Box<dyn Stream<Item = CopyChunk> + Send + Sync>>,
    decoder: RowDecoder,
    pending: Vec<u8>,
    finished: bool,
}

impl std::fmt::Debug for TableCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableCopy")
            .field("table", &self.decoder.table)
            .field("format", &self.decoder.format)
            .finish_non_exhaustive()
    }
}

impl TableCopy {
    /// Starts copying `columns` of `table` (in that order) in binary format. Run it
    /// inside the baseline's transaction (after `SET TRANSACTION SNAPSHOT`) for a
    /// consistent read.
    ///
    /// # Errors
    /// When the COPY cannot start.
    pub async fn start(
        client: &Client,
        table: &TableIdentifier,
        columns: &[ColumnDefinition],
    ) -> Result<Self, BaselineError> {
        Self::start_filtered(client, table, columns, None).await
    }

    /// [`TableCopy::start`] for the rows matching `filter`, an SQL boolean expression
    /// over the table's columns (a publication's row filter, so that the baseline and
    /// the stream agree on which rows belong).
    ///
    /// # Errors
    /// When the COPY cannot start (a filter that does not parse, for one).
    pub async fn start_filtered(
        client: &Client,
        table: &TableIdentifier,
        columns: &[ColumnDefinition],
        filter: Option<&str>,
    ) -> Result<Self, BaselineError> {
        let list: Vec<String> = columns
            .iter()
            .map(|c| {
                let name = quote_ident(&c.name);
                if is_supported(c.type_oid) {
                    name
                } else {
                    format!("CASE WHEN {name} IS NULL THEN NULL ELSE concat({name}) END")
                }
            })
            .collect();
        let sql = format!(
            "COPY (SELECT {} FROM {}{}) TO STDOUT (FORMAT binary)",
            list.join(", "),
            quote_table(table),
            filter.map(|f| format!(" WHERE ({f})")).unwrap_or_default()
        );
        Self::copy(client, table, columns, &sql, Format::Binary(Stage::Header)).await
    }

    /// Starts copying `columns` of `table` (in that order) in text format, which needs
    /// the connection's [`crate::types::SESSION_SETTINGS`]. [`TableCopy::start`] is
    /// faster and needs no settings; this is kept as the reference it is tested
    /// against.
    ///
    /// # Errors
    /// When the COPY cannot start.
    pub async fn start_text(
        client: &Client,
        table: &TableIdentifier,
        columns: &[ColumnDefinition],
    ) -> Result<Self, BaselineError> {
        let list: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        let sql = format!(
            "COPY (SELECT {} FROM {}) TO STDOUT",
            list.join(", "),
            quote_table(table)
        );
        Self::copy(client, table, columns, &sql, Format::Text).await
    }

    async fn copy(
        client: &Client,
        table: &TableIdentifier,
        columns: &[ColumnDefinition],
        sql: &str,
        format: Format,
    ) -> Result<Self, BaselineError> {
        let stream = client
            .copy_out(sql)
            .await
            .map_err(|source| CatalogError::Query {
                what: format!("starting the baseline COPY of {table}"),
                source,
            })?;
        Ok(Self::from_stream(Box::pin(stream), table, columns, format))
    }

    fn from_stream(
        stream: Pin<Box<dyn Stream<Item = CopyChunk> + Send + Sync>>,
        table: &TableIdentifier,
        columns: &[ColumnDefinition],
        format: Format,
    ) -> Self {
        let binary = matches!(format, Format::Binary(_));
        Self {
            stream,
            decoder: RowDecoder {
                table: table.clone(),
                layout: RowLayout::from_columns(columns),
                columns: columns
                    .iter()
                    .map(|c| Column {
                        name: c.name.clone(),
                        oid: c.type_oid,
                        binary: Decoder::of(c.type_oid).filter(|_| binary),
                    })
                    .collect(),
                format,
                scratch: Vec::with_capacity(columns.len()),
            },
            pending: Vec::new(),
            finished: false,
        }
    }

    /// The next rows, at most `max_rows`; `None` once the table is exhausted.
    ///
    /// # Errors
    /// A failed COPY or an unreadable row.
    pub async fn next_batch(&mut self, max_rows: usize) -> Result<Option<Vec<Row>>, BaselineError> {
        let mut rows = Vec::with_capacity(max_rows.min(4096));
        let mut consumed = 0;
        loop {
            if rows.len() < max_rows {
                consumed += self
                    .decoder
                    .parse(&self.pending[consumed..], &mut rows, max_rows)?;
            }
            if rows.len() >= max_rows || self.finished {
                break;
            }
            self.pending.drain(..consumed);
            consumed = 0;
            match self.stream.next().await {
                Some(Ok(chunk)) if self.pending.is_empty() => {
                    // Whole rows (the usual case) decode straight from the message.
                    let used = self.decoder.parse(&chunk, &mut rows, max_rows)?;
                    self.pending.extend_from_slice(&chunk[used..]);
                }
                Some(Ok(chunk)) => self.pending.extend_from_slice(&chunk),
                Some(Err(source)) => {
                    return Err(CatalogError::Query {
                        what: format!("reading the baseline COPY of {}", self.decoder.table),
                        source,
                    }
                    .into());
                }
                None => self.finished = true,
            }
        }
        self.pending.drain(..consumed);
        if rows.is_empty() && self.finished {
            self.decoder.finish(&self.pending)?;
            return Ok(None);
        }
        Ok(Some(rows))
    }
}

/// One column as the decoder reads it.
#[derive(Debug)]
struct Column {
    name: String,
    oid: u32,
    /// The decoder when the value is sent in binary (else it is text, also in a
    /// binary COPY).
    binary: Option<Decoder>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Binary(Stage),
}

/// Where a binary COPY is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Header,
    Rows,
    Trailer,
}

/// Turns COPY data into rows: the state of the read without its buffer.
#[derive(Debug)]
struct RowDecoder {
    table: TableIdentifier,
    layout: Arc<RowLayout>,
    columns: Vec<Column>,
    format: Format,
    /// Reused for each binary row's values.
    scratch: Vec<Value>,
}

impl RowDecoder {
    fn bad_row(&self, problem: impl Into<String>) -> BaselineError {
        BaselineError::BadRow {
            table: self.table.clone(),
            problem: problem.into(),
        }
    }

    fn bad_value(&self, column: &Column, source: TypeError) -> BaselineError {
        BaselineError::BadValue {
            table: self.table.clone(),
            column: column.name.clone(),
            source,
        }
    }

    /// Decodes the complete rows at the start of `input` into `rows` (until it holds
    /// `max_rows`); returns how many bytes they took.
    fn parse(
        &mut self,
        input: &[u8],
        rows: &mut Vec<Row>,
        max_rows: usize,
    ) -> Result<usize, BaselineError> {
        match self.format {
            Format::Text => self.parse_text_rows(input, rows, max_rows),
            Format::Binary(_) => self.parse_binary_rows(input, rows, max_rows),
        }
    }

    /// Checks the end of the data: nothing left over, and a binary COPY's trailer seen.
    fn finish(&self, leftover: &[u8]) -> Result<(), BaselineError> {
        if !leftover.is_empty() {
            return Err(self.bad_row(match self.format {
                Format::Text => "the last row has no line end",
                Format::Binary(_) => "the data ends inside a row",
            }));
        }
        match self.format {
            Format::Binary(Stage::Header | Stage::Rows) => {
                Err(self.bad_row("the data ends without the binary COPY trailer"))
            }
            _ => Ok(()),
        }
    }

    fn parse_text_rows(
        &self,
        input: &[u8],
        rows: &mut Vec<Row>,
        max_rows: usize,
    ) -> Result<usize, BaselineError> {
        let mut consumed = 0;
        while rows.len() < max_rows {
            let Some(end) = input[consumed..].iter().position(|&b| b == b'\n') else {
                break;
            };
            rows.push(self.parse_text_row(&input[consumed..consumed + end])?);
            consumed += end + 1;
        }
        Ok(consumed)
    }

    fn parse_text_row(&self, line: &[u8]) -> Result<Row, BaselineError> {
        let mut values = Vec::with_capacity(self.columns.len());
        for (idx, field) in line.split(|&b| b == b'\t').enumerate() {
            let Some(column) = self.columns.get(idx) else {
                return Err(self.bad_row(format!("more than {} fields", self.columns.len())));
            };
            if field == b"\\N" {
                values.push(Value::Null);
                continue;
            }
            let text = unescape(field)
                .ok_or_else(|| self.bad_row(format!("bad escape in column {}", column.name)))?;
            let value =
                parse_text(column.oid, &text).map_err(|source| self.bad_value(column, source))?;
            values.push(value);
        }
        if values.len() != self.columns.len() {
            return Err(self.bad_row(format!(
                "{} fields, expected {}",
                values.len(),
                self.columns.len()
            )));
        }
        Ok(Row::new(Arc::clone(&self.layout), values))
    }

    fn parse_binary_rows(
        &mut self,
        input: &[u8],
        rows: &mut Vec<Row>,
        max_rows: usize,
    ) -> Result<usize, BaselineError> {
        let mut consumed = 0;
        if self.format == Format::Binary(Stage::Header) {
            let Some(len) = self.binary_header_len(input)? else {
                return Ok(0);
            };
            consumed = len;
            self.format = Format::Binary(Stage::Rows);
        }
        while rows.len() < max_rows && consumed < input.len() {
            if self.format == Format::Binary(Stage::Trailer) {
                return Err(self.bad_row("data after the binary COPY trailer"));
            }
            let rest = &input[consumed..];
            let Some(count) = rest.get(..2).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
                break;
            };
            if count == -1 {
                self.format = Format::Binary(Stage::Trailer);
                consumed += 2;
                continue;
            }
            if usize::try_from(count).ok() != Some(self.columns.len()) {
                return Err(
                    self.bad_row(format!("{count} fields, expected {}", self.columns.len()))
                );
            }
            let Some(len) = self.binary_row_len(rest)? else {
                break;
            };
            rows.push(self.parse_binary_row(&rest[2..len])?);
            consumed += len;
        }
        Ok(consumed)
    }

    /// The header's length once `input` holds all of it.
    fn binary_header_len(&self, input: &[u8]) -> Result<Option<usize>, BaselineError> {
        let signature = &input[..input.len().min(BINARY_SIGNATURE.len())];
        if !BINARY_SIGNATURE.starts_with(signature) {
            return Err(self.bad_row("no binary COPY signature"));
        }
        let Some(fixed) = input.get(11..19) else {
            return Ok(None);
        };
        let flags = u32::from_be_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]);
        if flags & BINARY_FLAG_OIDS != 0 {
            return Err(self.bad_row("rows carry OIDs"));
        }
        if flags & BINARY_FLAGS_CRITICAL != 0 {
            return Err(self.bad_row(format!("unknown critical header flags {flags:#x}")));
        }
        let extension = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let len = usize::try_from(extension)
            .ok()
            .and_then(|e| e.checked_add(19))
            .ok_or_else(|| self.bad_row("header extension too long"))?;
        Ok((input.len() >= len).then_some(len))
    }

    /// The length of the row at the start of `input` (field count included) once
    /// `input` holds all of it.
    fn binary_row_len(&self, input: &[u8]) -> Result<Option<usize>, BaselineError> {
        let mut at = 2;
        for column in &self.columns {
            let Some(len) = input.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            match i32::from_be_bytes([len[0], len[1], len[2], len[3]]) {
                -1 => {}
                len => {
                    let len = usize::try_from(len).map_err(|_| {
                        self.bad_row(format!("negative field length in column {}", column.name))
                    })?;
                    at += len;
                }
            }
        }
        Ok((input.len() >= at).then_some(at))
    }

    /// Decodes the fields of a row whose framing [`Self::binary_row_len`] checked.
    fn parse_binary_row(&mut self, mut fields: &[u8]) -> Result<Row, BaselineError> {
        let mut values = std::mem::take(&mut self.scratch);
        values.clear();
        for column in &self.columns {
            let (len, rest) = fields
                .split_first_chunk::<4>()
                .ok_or_else(|| self.bad_row("row shorter than its field lengths"))?;
            let len = i32::from_be_bytes(*len);
            let Ok(len) = usize::try_from(len) else {
                values.push(Value::Null);
                fields = rest;
                continue;
            };
            let (bytes, rest) = rest
                .split_at_checked(len)
                .ok_or_else(|| self.bad_row("row shorter than its field lengths"))?;
            fields = rest;
            let value = if let Some(decoder) = column.binary {
                decoder.decode(column.oid, bytes)
            } else {
                match std::str::from_utf8(bytes) {
                    Ok(text) => parse_text(column.oid, text),
                    Err(_) => {
                        return Err(self.bad_row(format!("column {} is not UTF-8", column.name)));
                    }
                }
            };
            values.push(value.map_err(|source| self.bad_value(column, source))?);
        }
        // Collecting a drain makes the shared slice in one allocation, and the
        // scratch vector keeps its capacity for the next row.
        let row = Row::from_shared(Arc::clone(&self.layout), values.drain(..).collect());
        self.scratch = values;
        Ok(row)
    }
}

/// Undoes COPY text escaping: `\b \f \n \r \t \v \\`, octal `\ooo`, hex `\xhh`; any
/// other escaped character stands for itself. `None` when the bytes are not UTF-8.
fn unescape(field: &[u8]) -> Option<String> {
    if !field.contains(&b'\\') {
        return std::str::from_utf8(field).ok().map(str::to_string);
    }
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let escaped = *field.get(i)?;
        i += 1;
        match escaped {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut value = u32::from(escaped - b'0');
                for _ in 0..2 {
                    match field.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(u8::try_from(value & 0xff).ok()?);
            }
            b'x' => {
                let mut value = 0u8;
                let mut digits = 0;
                while digits < 2 {
                    let Some(d) = field.get(i).and_then(|&d| char::from(d).to_digit(16)) else {
                        break;
                    };
                    value = value * 16 + u8::try_from(d).ok()?;
                    i += 1;
                    digits += 1;
                }
                if digits == 0 {
                    out.push(b'x');
                } else {
                    out.push(value);
                }
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn columns() -> Vec<ColumnDefinition> {
        vec![
            ColumnDefinition::new("id", "int8").oid(20),
            ColumnDefinition::new("name", "text").oid(25),
            ColumnDefinition::new("tags", "_int4").oid(1007),
            // An enum: no binary decoder, so the COPY carries its text.
            ColumnDefinition::new("mood", "mood").oid(99_999),
        ]
    }

    /// A field: its length (`-1` for NULL) and bytes.
    fn field(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
        match bytes {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(bytes) => {
                out.extend_from_slice(&i32::try_from(bytes.len()).unwrap().to_be_bytes());
                out.extend_from_slice(bytes);
            }
        }
    }

    /// A binary COPY of `count` rows (with a header extension, which readers skip).
    fn binary_copy(count: i64) -> Vec<u8> {
        let mut out = BINARY_SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&3u32.to_be_bytes());
        out.extend_from_slice(b"ext");
        for id in 1..=count {
            out.extend_from_slice(&4i16.to_be_bytes());
            field(&mut out, Some(&id.to_be_bytes()));
            field(
                &mut out,
                (id % 3 != 0).then_some(format!("row {id} é").as_bytes()),
            );
            let mut tags = Vec::new();
            // One dimension, has NULLs, int4 elements, 2 elements from subscript 1.
            for word in [1i32, 1, 23, 2, 1] {
                tags.extend_from_slice(&word.to_be_bytes());
            }
            field(&mut tags, Some(&7i32.to_be_bytes()));
            field(&mut tags, None);
            field(&mut out, Some(&tags));
            field(&mut out, Some(b"happy"));
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    fn text_copy(count: i64) -> Vec<u8> {
        (1..=count)
            .map(|id| {
                let name = if id % 3 == 0 {
                    "\\N".to_string()
                } else {
                    format!("row {id} é")
                };
                format!("{id}\t{name}\t{{7,NULL}}\thappy\n")
            })
            .collect::<String>()
            .into_bytes()
    }

    fn expected(count: i64) -> Vec<Row> {
        let layout = RowLayout::from_columns(&columns());
        (1..=count)
            .map(|id| {
                let name = if id % 3 == 0 {
                    Value::Null
                } else {
                    Value::text(format!("row {id} é"))
                };
                let tags = Value::array([Value::Int64(7), Value::Null]);
                Row::new(
                    Arc::clone(&layout),
                    vec![Value::Int64(id), name, tags, Value::text("happy")],
                )
            })
            .collect()
    }

    /// Reads `data`, cut into chunks at `cuts`, in batches of `max_rows`.
    fn read(
        data: &[u8],
        cuts: &[usize],
        format: Format,
        max_rows: usize,
    ) -> Result<Vec<Row>, BaselineError> {
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        bounds.extend([0, data.len()]);
        bounds.sort_unstable();
        let chunks: Vec<CopyChunk> = bounds
            .windows(2)
            .map(|w| Ok(data[w[0]..w[1]].to_vec().into()))
            .collect();
        let stream = Box::pin(futures_util::stream::iter(chunks));
        let mut copy = TableCopy::from_stream(
            stream,
            &TableIdentifier::new("public", "t"),
            &columns(),
            format,
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut rows = Vec::new();
            while let Some(batch) = copy.next_batch(max_rows).await? {
                assert!(!batch.is_empty() && batch.len() <= max_rows);
                rows.extend(batch);
            }
            Ok(rows)
        })
    }

    proptest! {
        #[test]
        fn binary_rows_decode_however_the_data_is_cut(
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            max_rows in 1usize..5,
        ) {
            let rows = read(&binary_copy(7), &cuts, Format::Binary(Stage::Header), max_rows).unwrap();
            prop_assert_eq!(rows, expected(7));
        }

        #[test]
        fn text_rows_decode_however_the_data_is_cut(
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            max_rows in 1usize..5,
        ) {
            let rows = read(&text_copy(7), &cuts, Format::Text, max_rows).unwrap();
            prop_assert_eq!(rows, expected(7));
        }

        #[test]
        fn a_truncated_binary_copy_is_an_error(
            len_seed in any::<usize>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..4),
        ) {
            let data = binary_copy(3);
            let len = len_seed % data.len();
            prop_assert!(read(&data[..len], &cuts, Format::Binary(Stage::Header), 2).is_err(), "cut at {}", len);
        }

        #[test]
        fn arbitrary_binary_data_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..200),
            keep_header in any::<bool>(),
        ) {
            let data = if keep_header { [&binary_copy(0)[..19], &data].concat() } else { data };
            let _ = read(&data, &[], Format::Binary(Stage::Header), 3);
        }
    }

    #[test]
    fn binary_errors_name_the_problem() {
        let mut data = binary_copy(1);
        data.extend_from_slice(&[0, 1]);
        let err = read(&data, &[], Format::Binary(Stage::Header), 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed COPY row of public.t: data after the binary COPY trailer"
        );
        let mut oids = binary_copy(0);
        oids[11..15].copy_from_slice(&BINARY_FLAG_OIDS.to_be_bytes());
        let err = read(&oids, &[], Format::Binary(Stage::Header), 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed COPY row of public.t: rows carry OIDs"
        );
        let mut bad_int = binary_copy(1);
        bad_int[19 + 2 + 3] = 7; // the id's length: 7 bytes, not 8
        let err = read(&bad_int, &[], Format::Binary(Stage::Header), 10).unwrap_err();
        assert!(
            matches!(
                err,
                BaselineError::BadRow { .. } | BaselineError::BadValue { .. }
            ),
            "{err}"
        );
    }

    #[test]
    fn unescapes_copy_text() {
        assert_eq!(unescape(b"plain").as_deref(), Some("plain"));
        assert_eq!(unescape(b"a\\tb\\nc\\\\d").as_deref(), Some("a\tb\nc\\d"));
        assert_eq!(unescape(b"\\101\\x42").as_deref(), Some("AB"));
        assert_eq!(
            unescape(b"\\\\x00ff").as_deref(),
            Some("\\x00ff"),
            "bytea text keeps its \\x prefix"
        );
        assert_eq!(unescape(b"dangling\\"), None);
    }
}
