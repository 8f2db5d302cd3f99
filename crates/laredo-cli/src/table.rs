//! A small aligned text table: a header row and data rows, columns padded to their
//! widest cell and separated by two spaces.

/// An aligned text table for terminal output.
///
/// ```
/// let mut table = laredo_cli::Table::new(["NAME", "ROWS"]);
/// table.right_align(1);
/// table.row(["users", "1200"]);
/// table.row(["orders", "7"]);
/// assert_eq!(table.render(), "NAME    ROWS\nusers   1200\norders     7\n");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    right: Vec<bool>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<I, S>(headers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let headers: Vec<String> = headers.into_iter().map(Into::into).collect();
        let right = vec![false; headers.len()];
        Self {
            headers,
            rows: Vec::new(),
            right,
        }
    }

    /// Right-aligns column `column` (for numbers). Out-of-range columns are ignored.
    pub fn right_align(&mut self, column: usize) -> &mut Self {
        if let Some(flag) = self.right.get_mut(column) {
            *flag = true;
        }
        self
    }

    /// Appends a row. Missing cells print empty; extra cells are dropped. Line breaks
    /// in a cell print as `\n` so every row stays on one line.
    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut cells: Vec<String> = cells
            .into_iter()
            .map(|c| c.into().replace('\n', "\\n"))
            .take(self.headers.len())
            .collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
        self
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the table has no data rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text: the header line, then one line per row, each ending in a
    /// newline, without trailing spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (idx, cell) in row.iter().enumerate() {
                widths[idx] = widths[idx].max(width(cell));
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (idx, cell) in line.iter().enumerate() {
                if idx > 0 {
                    text.push_str("  ");
                }
                let pad = widths[idx] - width(cell);
                if self.right[idx] {
                    text.extend(std::iter::repeat_n(' ', pad));
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Display width of a cell, counted in characters (no wide-character handling).
fn width(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let mut table = Table::new(["A", "LONG HEADER", "C"]);
        table.row(["wide cell", "x", "1"]);
        table.row(["b", "yy", "22"]);
        assert_eq!(
            table.render(),
            "A          LONG HEADER  C\n\
             wide cell  x            1\n\
             b          yy           22\n"
        );
    }

    #[test]
    fn right_aligned_columns_pad_on_the_left() {
        let mut table = Table::new(["N", "NAME"]);
        table.right_align(0);
        table.row(["5", "a"]).row(["1234", "b"]);
        assert_eq!(table.render(), "   N  NAME\n   5  a\n1234  b\n");
    }

    #[test]
    fn short_and_long_rows_are_fitted_and_newlines_escaped() {
        let mut table = Table::new(["A", "B"]);
        table.row(["only"]);
        table.row(["x", "two\nlines", "dropped"]);
        assert_eq!(table.len(), 2);
        assert_eq!(table.render(), "A     B\nonly\nx     two\\nlines\n");
    }

    #[test]
    fn non_ascii_cells_count_characters() {
        let mut table = Table::new(["K", "V"]);
        table.row(["é→", "1"]);
        assert_eq!(table.render(), "K   V\né→  1\n");
    }

    #[test]
    fn an_empty_table_is_its_header() {
        let table = Table::new(["ONE", "TWO"]);
        assert!(table.is_empty());
        assert_eq!(table.render(), "ONE  TWO\n");
    }
}
