//! Reading a table for the baseline: `COPY (SELECT ...) TO STDOUT`, streamed.
//!
//! [`TableCopy`] hands out rows in batches as the server sends them, so memory stays
//! bounded by the batch size whatever the table's size. The text COPY format is used
//! (one line per row, tab-separated, `\N` for NULL, backslash escapes); each field is
//! mapped with [`crate::types::parse_text`], so baseline values are the same `Value`s
//! the stream produces.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;
use laredo_core::{ColumnDefinition, Row, RowLayout, TableIdentifier, Value};
use tokio_postgres::{Client, CopyOutStream};

use crate::catalog::{CatalogError, quote_ident, quote_table};
use crate::types::{TypeError, parse_text};

/// A baseline read failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BaselineError {
    /// The COPY failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The server sent a line that is not a COPY text row.
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

/// A streaming read of one table; see the module docs.
pub struct TableCopy {
    table: TableIdentifier,
    stream: Pin<Box<CopyOutStream>>,
    layout: Arc<RowLayout>,
    columns: Vec<(String, u32)>,
    pending: Vec<u8>,
    finished: bool,
}

impl std::fmt::Debug for TableCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableCopy")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl TableCopy {
    /// Starts copying `columns` of `table` (in that order). Run it inside the baseline's
    /// transaction (after `SET TRANSACTION SNAPSHOT`) for a consistent read.
    ///
    /// # Errors
    /// When the COPY cannot start.
    pub async fn start(
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
        let stream = client
            .copy_out(&sql)
            .await
            .map_err(|source| CatalogError::Query {
                what: format!("starting the baseline COPY of {table}"),
                source,
            })?;
        Ok(Self {
            table: table.clone(),
            stream: Box::pin(stream),
            layout: RowLayout::from_columns(columns),
            columns: columns
                .iter()
                .map(|c| (c.name.clone(), c.type_oid))
                .collect(),
            pending: Vec::new(),
            finished: false,
        })
    }

    /// The next rows, at most `max_rows`; `None` once the table is exhausted.
    ///
    /// # Errors
    /// A failed COPY or an unreadable row.
    pub async fn next_batch(&mut self, max_rows: usize) -> Result<Option<Vec<Row>>, BaselineError> {
        let mut rows = Vec::with_capacity(max_rows.min(4096));
        let mut consumed = 0;
        loop {
            while rows.len() < max_rows {
                let Some(end) = self.pending[consumed..].iter().position(|&b| b == b'\n') else {
                    break;
                };
                let line = &self.pending[consumed..consumed + end];
                rows.push(self.parse_row(line)?);
                consumed += end + 1;
            }
            if rows.len() >= max_rows || self.finished {
                break;
            }
            self.pending.drain(..consumed);
            consumed = 0;
            match self.stream.next().await {
                Some(Ok(chunk)) => self.pending.extend_from_slice(&chunk),
                Some(Err(source)) => {
                    return Err(CatalogError::Query {
                        what: format!("reading the baseline COPY of {}", self.table),
                        source,
                    }
                    .into());
                }
                None => self.finished = true,
            }
        }
        self.pending.drain(..consumed);
        if rows.is_empty() && self.finished {
            if !self.pending.is_empty() {
                return Err(self.bad_row("the last row has no line end"));
            }
            return Ok(None);
        }
        Ok(Some(rows))
    }

    fn bad_row(&self, problem: impl Into<String>) -> BaselineError {
        BaselineError::BadRow {
            table: self.table.clone(),
            problem: problem.into(),
        }
    }

    fn parse_row(&self, line: &[u8]) -> Result<Row, BaselineError> {
        let mut values = Vec::with_capacity(self.columns.len());
        for (idx, field) in line.split(|&b| b == b'\t').enumerate() {
            let Some((name, oid)) = self.columns.get(idx) else {
                return Err(self.bad_row(format!("more than {} fields", self.columns.len())));
            };
            if field == b"\\N" {
                values.push(Value::Null);
                continue;
            }
            let text = unescape(field)
                .ok_or_else(|| self.bad_row(format!("bad escape in column {name}")))?;
            let value = parse_text(*oid, &text).map_err(|source| BaselineError::BadValue {
                table: self.table.clone(),
                column: name.clone(),
                source,
            })?;
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
