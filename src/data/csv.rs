//! RFC 4180 CSV: a reader for header-first tables (quoted multi-line fields, CRLF, BOM) and
//! writers that quote only where needed (atomic whole-file writes, appended batches).

use super::atomic::write_atomic;
use crate::error::{Error, Result};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A CSV file read whole: a header row, then rows with exactly as many fields.
///
/// Quoted fields may hold commas, doubled quotes (`""`) and line breaks; records end with
/// `\n`, `\r\n` or `\r`; a leading UTF-8 BOM is dropped; blank lines are skipped. A quote
/// inside an unquoted field is kept literally (as Python's `csv` does), but anything other
/// than a comma or a line break after a closing quote is an error.
#[derive(Clone, Debug)]
pub struct CsvTable {
    path: PathBuf,
    headers: Vec<String>,
    /// Field contents (unescaped) of all rows, concatenated.
    text: String,
    /// End offset in `text` of each field, row-major.
    ends: Vec<usize>,
    /// 1-based line on which each row starts.
    lines: Vec<usize>,
}

impl CsvTable {
    /// Reads and parses `path`. Errors name the file and, for malformed rows, the line.
    pub fn read(path: impl AsRef<Path>) -> Result<CsvTable> {
        let path = path.as_ref();
        let bytes =
            std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        let text = match std::str::from_utf8(&bytes) {
            Ok(t) => t,
            Err(e) => {
                let good = &bytes[..e.valid_up_to()];
                let line = 1 + good.iter().filter(|&&b| b == b'\n').count();
                return Err(Error::file(path, format!("line {line}: not valid UTF-8")));
            }
        };
        CsvTable::parse(text, path)
    }

    /// Parses CSV `text`; `path` only names the source in errors.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<CsvTable> {
        let path = path.as_ref();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let fail = |m: String| Error::file(path, m);
        let mut parser = Parser::new(text);
        let mut header_text = String::new();
        let mut header_ends = Vec::new();
        if parser
            .next_record(&mut header_text, &mut header_ends)
            .map_err(fail)?
            .is_none()
        {
            return Err(Error::file(path, "empty file (no header row)"));
        }
        let mut headers = Vec::with_capacity(header_ends.len());
        let mut start = 0;
        for &end in &header_ends {
            let name = header_text[start..end].to_string();
            if headers.contains(&name) {
                return Err(Error::file(
                    path,
                    format!("line 1: column {name:?} appears twice"),
                ));
            }
            headers.push(name);
            start = end;
        }
        let width = headers.len();
        let mut table = CsvTable {
            path: path.to_path_buf(),
            headers,
            text: String::with_capacity(text.len()),
            ends: Vec::new(),
            lines: Vec::new(),
        };
        loop {
            let before = table.ends.len();
            let Some(line) = parser
                .next_record(&mut table.text, &mut table.ends)
                .map_err(fail)?
            else {
                break;
            };
            let got = table.ends.len() - before;
            if got != width {
                return Err(Error::file(
                    path,
                    format!("line {line}: row has {got} fields but the header has {width}"),
                ));
            }
            table.lines.push(line);
        }
        Ok(table)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// Number of data rows (the header not counted).
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Index of column `name`; the error lists the columns the file has.
    pub fn column(&self, name: &str) -> Result<usize> {
        self.headers.iter().position(|h| h == name).ok_or_else(|| {
            Error::file(
                &self.path,
                format!("no column {name:?}; the columns are {:?}", self.headers),
            )
        })
    }

    /// Field `col` of data row `row`. Panics when either is out of range, like indexing.
    pub fn get(&self, row: usize, col: usize) -> &str {
        let width = self.headers.len();
        assert!(
            row < self.len() && col < width,
            "CSV index ({row}, {col}) out of range ({} rows, {width} columns)",
            self.len()
        );
        let i = row * width + col;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    /// 1-based line of the file on which data row `row` starts (for messages about it).
    pub fn line(&self, row: usize) -> usize {
        self.lines[row]
    }

    /// The data rows in file order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = Row<'_>> + '_ {
        (0..self.len()).map(move |index| Row { table: self, index })
    }
}

/// One data row of a [`CsvTable`].
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    table: &'a CsvTable,
    index: usize,
}

impl<'a> Row<'a> {
    /// Field `col`; panics when out of range.
    pub fn get(&self, col: usize) -> &'a str {
        self.table.get(self.index, col)
    }
    /// Position among the data rows (0-based).
    pub fn index(&self) -> usize {
        self.index
    }
    /// 1-based line of the file on which the row starts.
    pub fn line(&self) -> usize {
        self.table.line(self.index)
    }
    pub fn fields(&self) -> impl Iterator<Item = &'a str> + 'a {
        let (table, index) = (self.table, self.index);
        (0..table.headers.len()).map(move |c| table.get(index, c))
    }
}

/// A record-at-a-time RFC 4180 parser over text (splits only at ASCII bytes, so slices stay
/// valid UTF-8). Errors are "line N: ..." strings; callers add the file.
struct Parser<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser {
            src,
            pos: 0,
            line: 1,
        }
    }

    /// Appends the next record's fields to `out`, pushing each field's end offset to `ends`;
    /// returns the line the record starts on, or `None` at the end of the text.
    fn next_record(
        &mut self,
        out: &mut String,
        ends: &mut Vec<usize>,
    ) -> std::result::Result<Option<usize>, String> {
        let s = self.src.as_bytes();
        // Skip blank lines.
        loop {
            match s.get(self.pos) {
                None => return Ok(None),
                Some(b'\n' | b'\r') => self.end_of_line(),
                Some(_) => break,
            }
        }
        let start_line = self.line;
        loop {
            if s.get(self.pos) == Some(&b'"') {
                let quote_line = self.line;
                self.pos += 1;
                loop {
                    let Some(q) = s[self.pos..].iter().position(|&b| b == b'"') else {
                        return Err(format!(
                            "line {quote_line}: quoted field is never closed (missing '\"')"
                        ));
                    };
                    let piece = &self.src[self.pos..self.pos + q];
                    self.line += count_line_breaks(piece.as_bytes());
                    out.push_str(piece);
                    self.pos += q + 1;
                    if s.get(self.pos) == Some(&b'"') {
                        out.push('"');
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                if let Some(&c) = s.get(self.pos) {
                    if !matches!(c, b',' | b'\n' | b'\r') {
                        return Err(format!(
                            "line {}: unexpected {:?} after a closing quote (quotes inside a quoted field must be doubled)",
                            self.line,
                            self.src[self.pos..].chars().next().unwrap_or('?')
                        ));
                    }
                }
            } else {
                let len = s[self.pos..]
                    .iter()
                    .position(|&b| matches!(b, b',' | b'\n' | b'\r'))
                    .unwrap_or(s.len() - self.pos);
                out.push_str(&self.src[self.pos..self.pos + len]);
                self.pos += len;
            }
            ends.push(out.len());
            match s.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(_) => {
                    self.end_of_line();
                    return Ok(Some(start_line));
                }
                None => return Ok(Some(start_line)),
            }
        }
    }

    /// Steps over one line break (`\n`, `\r\n` or `\r`) at `pos`.
    fn end_of_line(&mut self) {
        let s = self.src.as_bytes();
        if s[self.pos] == b'\r' && s.get(self.pos + 1) == Some(&b'\n') {
            self.pos += 1;
        }
        self.pos += 1;
        self.line += 1;
    }
}

/// Line breaks in `b`: each `\n`, and each `\r` not followed by `\n`.
fn count_line_breaks(b: &[u8]) -> usize {
    b.iter()
        .enumerate()
        .filter(|&(i, &c)| c == b'\n' || (c == b'\r' && b.get(i + 1) != Some(&b'\n')))
        .count()
}

/// Appends `field` to `out`, quoted (with `"` doubled) only when it holds a comma, a quote
/// or a line break.
pub fn write_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

/// Builds CSV text in memory: one header row, then rows of the same width, `\n` line ends.
#[derive(Clone, Debug)]
pub struct CsvWriter {
    buf: String,
    width: usize,
}

impl CsvWriter {
    /// A writer whose text starts with the header row.
    pub fn new<H: AsRef<str>>(headers: &[H]) -> Self {
        let mut w = CsvWriter::without_header(headers.len());
        w.push_record(headers);
        w
    }

    /// A writer for rows of `width` fields with no header row (for appending).
    pub fn without_header(width: usize) -> Self {
        CsvWriter {
            buf: String::new(),
            width,
        }
    }

    /// Appends one row; an error if it does not have the header's number of fields.
    pub fn write_row<S: AsRef<str>>(&mut self, fields: &[S]) -> Result<()> {
        if fields.len() != self.width {
            return Err(Error::msg(format!(
                "CSV row has {} fields but the header has {}",
                fields.len(),
                self.width
            )));
        }
        self.push_record(fields);
        Ok(())
    }

    fn push_record<S: AsRef<str>>(&mut self, fields: &[S]) {
        // A lone empty field is written `""` so the row is not read back as a blank line.
        if let [only] = fields {
            if only.as_ref().is_empty() {
                self.buf.push_str("\"\"\n");
                return;
            }
        }
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                self.buf.push(',');
            }
            write_field(&mut self.buf, f.as_ref());
        }
        self.buf.push('\n');
    }

    pub fn as_str(&self) -> &str {
        &self.buf
    }

    pub fn into_string(self) -> String {
        self.buf
    }
}

/// Writes a whole CSV file atomically (temp file in the same folder, then rename).
pub fn write_csv_atomic<H, R, S>(path: impl AsRef<Path>, headers: &[H], rows: &[R]) -> Result<()>
where
    H: AsRef<str>,
    R: AsRef<[S]>,
    S: AsRef<str>,
{
    let path = path.as_ref();
    let mut w = CsvWriter::new(headers);
    for (i, row) in rows.iter().enumerate() {
        w.write_row(row.as_ref())
            .map_err(|e| Error::file(path, format!("row {i}: {}", e.message())))?;
    }
    write_atomic(path, w.as_str().as_bytes())
}

/// Appends `rows` to the CSV file at `path`, creating it with the header row when it is
/// absent or empty. An existing file must start with exactly `headers` and end with a line
/// break. The batch goes out in one `write` call and is synced before returning, so a file
/// that grows while images are written stays readable after a crash. One process per file:
/// two writers creating the same file at once could both write the header.
pub fn append_rows<H, R, S>(path: impl AsRef<Path>, headers: &[H], rows: &[R]) -> Result<()>
where
    H: AsRef<str>,
    R: AsRef<[S]>,
    S: AsRef<str>,
{
    let path = path.as_ref();
    let io = |what: &str, e: std::io::Error| Error::file(path, format!("cannot {what}: {e}"));
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| io("open for appending", e))?;
    let len = file.metadata().map_err(|e| io("stat", e))?.len();
    let mut w = if len == 0 {
        CsvWriter::new(headers)
    } else {
        check_existing(path, &mut file, len, headers)?;
        CsvWriter::without_header(headers.len())
    };
    for (i, row) in rows.iter().enumerate() {
        w.write_row(row.as_ref())
            .map_err(|e| Error::file(path, format!("row {i}: {}", e.message())))?;
    }
    file.write_all(w.as_str().as_bytes())
        .and_then(|()| file.flush())
        .and_then(|()| file.sync_data())
        .map_err(|e| io("append", e))
}

/// Checks that an existing file to append to has header `headers` and ends with a line break.
fn check_existing<H: AsRef<str>>(
    path: &Path,
    file: &mut std::fs::File,
    len: u64,
    headers: &[H],
) -> Result<()> {
    const MAX_HEADER: u64 = 1 << 20;
    let io = |e: std::io::Error| Error::file(path, format!("cannot read: {e}"));
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1)).map_err(io)?;
    file.read_exact(&mut last).map_err(io)?;
    if last[0] != b'\n' && last[0] != b'\r' {
        return Err(Error::file(
            path,
            "the file ends in the middle of a row (an interrupted write?); fix or remove it before appending",
        ));
    }
    let mut head = Vec::new();
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    Read::by_ref(file)
        .take(MAX_HEADER)
        .read_to_end(&mut head)
        .map_err(io)?;
    // Cut at the last line break so a multi-byte character is never split.
    let cut = head.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let text = std::str::from_utf8(&head[..cut])
        .map_err(|_| Error::file(path, "header row is not valid UTF-8"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (mut found, mut ends) = (String::new(), Vec::new());
    Parser::new(text)
        .next_record(&mut found, &mut ends)
        .map_err(|e| Error::file(path, e))?;
    let mut start = 0;
    let mut names = Vec::new();
    for end in ends {
        names.push(&found[start..end]);
        start = end;
    }
    let expected: Vec<&str> = headers.iter().map(|h| h.as_ref()).collect();
    if names != expected {
        return Err(Error::file(
            path,
            format!("cannot append: the file's columns are {names:?}, expected {expected:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CsvTable> {
        CsvTable::parse(text, "t.csv")
    }

    #[test]
    fn quoted_fields_crlf_bom_and_blank_lines() {
        let t = parse("\u{feff}id,text\r\n1,\"a, \"\"b\"\"\r\nc\"\r\n\r\n2,plain\r\n3,\n").unwrap();
        assert_eq!(t.headers(), ["id", "text"]);
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(0, 1), "a, \"b\"\r\nc");
        assert_eq!(t.get(1, 1), "plain");
        assert_eq!(t.get(2, 1), "");
        assert_eq!(t.line(1), 5);
        assert_eq!(t.line(2), 6);
    }

    #[test]
    fn last_record_without_line_break_and_lone_cr() {
        let t = parse("a,b\r1,2\r3,\"x\"").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!((t.get(1, 0), t.get(1, 1)), ("3", "x"));
        assert_eq!(t.line(1), 3);
    }

    #[test]
    fn bare_quote_inside_unquoted_field_is_literal() {
        let t = parse("id,p\n1,a 5\" nodule\n").unwrap();
        assert_eq!(t.get(0, 1), "a 5\" nodule");
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse("a,b\n1,2\n3\n").unwrap_err().to_string();
        assert_eq!(e, "t.csv: line 3: row has 1 fields but the header has 2");
        let e = parse("a,b\n1,\"x\ny\"\n2,\"open\n\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.csv: line 4: quoted field is never closed"),
            "{e}"
        );
        let e = parse("a,b\n1,\"x\"y\n").unwrap_err().to_string();
        assert!(
            e.starts_with("t.csv: line 2: unexpected 'y' after a closing quote"),
            "{e}"
        );
        let e = parse("").unwrap_err().to_string();
        assert_eq!(e, "t.csv: empty file (no header row)");
        let e = parse("a,a\n").unwrap_err().to_string();
        assert!(e.contains("column \"a\" appears twice"), "{e}");
    }

    #[test]
    fn column_lookup_lists_columns() {
        let t = parse("id,prompt\n").unwrap();
        assert_eq!(t.column("prompt").unwrap(), 1);
        assert!(t.is_empty());
        let e = t.column("text").unwrap_err().to_string();
        assert_eq!(
            e,
            "t.csv: no column \"text\"; the columns are [\"id\", \"prompt\"]"
        );
    }

    #[test]
    fn writer_quotes_only_when_needed() {
        let mut w = CsvWriter::new(&["a", "b"]);
        w.write_row(&["plain", "x,y"]).unwrap();
        w.write_row(&["say \"hi\"", "l1\nl2"]).unwrap();
        w.write_row(&["", " spaced "]).unwrap();
        assert_eq!(
            w.as_str(),
            "a,b\nplain,\"x,y\"\n\"say \"\"hi\"\"\",\"l1\nl2\"\n, spaced \n"
        );
        assert!(w.write_row(&["only one"]).is_err());
        let mut one = CsvWriter::new(&["x"]);
        one.write_row(&[""]).unwrap();
        let t = parse(one.as_str()).unwrap();
        assert_eq!((t.len(), t.get(0, 0)), (1, ""));
    }
}
