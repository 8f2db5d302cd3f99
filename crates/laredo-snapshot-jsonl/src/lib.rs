//! The default snapshot serializer, format id `jsonl`.
//!
//! One table's snapshot is a text file of JSON lines:
//! - line 1: the [`TableSnapshotInfo`] header (table, row count, columns, target type,
//!   indexes);
//! - every further line: one row, a JSON object from column name to a tagged value
//!   (`{"Int64":7}`, `{"Timestamp":...}`), so a restore gives back exactly the
//!   [`Value`](laredo_core::Value) kinds the baseline produced: integers stay integers,
//!   numerics stay exact, timestamps stay timestamps.
//!
//! Lines are written without HTML escaping and may be up to [`MAX_LINE_BYTES`] long.
//! Reading fails with a message naming the line for an empty input, a bad header or a
//! bad row.
//!
//! ```
//! use laredo_core::{row, table, SnapshotEntry, SnapshotSerializer, TableSnapshotInfo, Value};
//! use laredo_snapshot_jsonl::JsonlSerializer;
//!
//! let info = TableSnapshotInfo {
//!     table: table("public", "users"),
//!     row_count: 1,
//!     columns: Vec::new(),
//!     target_type: "indexed-memory".to_string(),
//!     indexes: Vec::new(),
//! };
//! let entries = vec![SnapshotEntry { row: row! {"id" => 7i64, "name" => "ada"} }];
//! let mut bytes = Vec::new();
//! JsonlSerializer.write(&info, &entries, &mut bytes).expect("written");
//!
//! let (header, rows) = JsonlSerializer.read(&mut bytes.as_slice()).expect("read back");
//! assert_eq!(header, info);
//! assert_eq!(rows[0].row.get("id"), Some(&Value::Int64(7)));
//! ```

use std::io::{BufRead, BufReader, Read, Write};

use laredo_core::{SnapshotEntry, SnapshotError, SnapshotSerializer, TableSnapshotInfo};

/// The longest line [`JsonlSerializer::read`] accepts: 10 MiB.
pub const MAX_LINE_BYTES: usize = 10 * 1024 * 1024;

/// The format id written into snapshot metadata.
pub const FORMAT_ID: &str = "jsonl";

/// Writes and reads table snapshots as JSON lines (see the crate docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonlSerializer;

impl SnapshotSerializer for JsonlSerializer {
    fn format_id(&self) -> &str {
        FORMAT_ID
    }

    fn write(
        &self,
        info: &TableSnapshotInfo,
        entries: &[SnapshotEntry],
        writer: &mut dyn Write,
    ) -> Result<(), SnapshotError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            SnapshotError::new(format!("writing the {what} of {}: {e}", info.table))
        };
        serde_json::to_writer(&mut *writer, info).map_err(|e| fail("header", &e))?;
        writer.write_all(b"\n").map_err(|e| fail("header", &e))?;
        for entry in entries {
            serde_json::to_writer(&mut *writer, &entry.row).map_err(|e| fail("rows", &e))?;
            writer.write_all(b"\n").map_err(|e| fail("rows", &e))?;
        }
        writer.flush().map_err(|e| fail("rows", &e))
    }

    fn read(
        &self,
        reader: &mut dyn Read,
    ) -> Result<(TableSnapshotInfo, Vec<SnapshotEntry>), SnapshotError> {
        let mut lines = BufReader::new(reader);
        let mut line = Vec::new();
        if !read_line(&mut lines, &mut line, 1)? {
            return Err(SnapshotError::new("empty snapshot file: no header line"));
        }
        let info: TableSnapshotInfo = serde_json::from_slice(&line)
            .map_err(|e| SnapshotError::new(format!("line 1: bad snapshot header: {e}")))?;
        let capacity = usize::try_from(info.row_count).unwrap_or(0).min(1 << 20);
        let mut entries = Vec::with_capacity(capacity);
        let mut line_no = 1;
        loop {
            line_no += 1;
            if !read_line(&mut lines, &mut line, line_no)? {
                break;
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let row = serde_json::from_slice(&line).map_err(|e| {
                SnapshotError::new(format!("line {line_no}: bad row of {}: {e}", info.table))
            })?;
            entries.push(SnapshotEntry { row });
        }
        Ok((info, entries))
    }
}

/// Reads one line (without its newline) into `line`; false at the end of the input.
fn read_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    line_no: usize,
) -> Result<bool, SnapshotError> {
    line.clear();
    let limit = u64::try_from(MAX_LINE_BYTES + 1).unwrap_or(u64::MAX);
    let read = reader
        .take(limit)
        .read_until(b'\n', line)
        .map_err(|e| SnapshotError::with_source(format!("line {line_no}: read failed"), e))?;
    if read == 0 {
        return Ok(false);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > MAX_LINE_BYTES {
        return Err(SnapshotError::new(format!(
            "line {line_no}: longer than {MAX_LINE_BYTES} bytes"
        )));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use laredo_core::{ColumnDefinition, Value, row, table};

    use super::*;

    fn info(rows: u64) -> TableSnapshotInfo {
        TableSnapshotInfo {
            table: table("public", "t"),
            row_count: rows,
            columns: vec![ColumnDefinition::new("id", "int8").primary_key(1)],
            target_type: "indexed-memory".to_string(),
            indexes: Vec::new(),
        }
    }

    #[test]
    fn every_value_kind_round_trips() {
        let rows = vec![
            SnapshotEntry {
                row: row! {
                    "id" => 1i64,
                    "small" => -4i64,
                    "f" => 1.5f64,
                    "n" => Value::numeric("12345678901234567890.000001"),
                    "ts" => Value::Timestamp(1_700_000_000_123_456),
                    "b" => Value::bytes([0u8, 159, 255]),
                    "j" => Value::json("{\"a\":[1,2]}"),
                    "s" => "<tag> & \"quotes\" \u{e9}",
                    "none" => Value::Null,
                    "u" => Value::Uuid([7; 16]),
                    "d" => Value::Date(19_000),
                    "flag" => true,
                },
            },
            SnapshotEntry {
                row: row! {"id" => 2i64},
            },
        ];
        let mut bytes = Vec::new();
        JsonlSerializer
            .write(&info(2), &rows, &mut bytes)
            .expect("write");
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        assert_eq!(text.lines().count(), 3);
        assert!(text.contains("<tag> & "), "no HTML escaping: {text}");
        let (header, back) = JsonlSerializer.read(&mut bytes.as_slice()).expect("read");
        assert_eq!(header, info(2));
        assert_eq!(back, rows);
    }

    #[test]
    fn empty_input_bad_header_and_bad_rows_are_errors_naming_the_line() {
        let empty = JsonlSerializer
            .read(&mut &b""[..])
            .expect_err("empty input");
        assert!(empty.to_string().contains("empty"), "{empty}");

        let header = JsonlSerializer
            .read(&mut &b"not json\n"[..])
            .expect_err("bad header");
        assert!(header.to_string().contains("line 1"), "{header}");

        let mut bytes = Vec::new();
        JsonlSerializer
            .write(&info(1), &[], &mut bytes)
            .expect("write");
        bytes.extend_from_slice(b"{\"id\":{\"Int64\":1}}\n{\"id\": oops}\n");
        let row = JsonlSerializer
            .read(&mut bytes.as_slice())
            .expect_err("bad row");
        assert!(row.to_string().contains("line 3"), "{row}");
    }

    #[test]
    fn a_line_over_the_limit_is_refused() {
        let mut bytes = Vec::new();
        JsonlSerializer
            .write(&info(1), &[], &mut bytes)
            .expect("write");
        bytes.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        let error = JsonlSerializer
            .read(&mut bytes.as_slice())
            .expect_err("too long");
        assert!(error.to_string().contains("line 2"), "{error}");
    }
}
