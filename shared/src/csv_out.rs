//! Writing flattened rows as RFC 4180 CSV, counting rows and bytes and
//! hashing every byte as it goes, so the export's manifest can state exactly
//! what was delivered without reading the file back.
//!
//! The output format:
//! - every record ends with CRLF;
//! - a field is quoted when it contains the delimiter, `"`, CR or LF, or
//!   starts with U+FEFF (readers drop it as a byte-order mark at the start
//!   of a file), and a `"` inside a quoted field is doubled;
//! - **null and empty text differ**: a null (or missing) cell is an empty
//!   unquoted field, an empty string is `""`. So `a,,""` is the text `a`,
//!   null, and the empty string. (One exception: a row whose only cell is null
//!   is written as `""`, because readers skip blank lines and the row would
//!   otherwise disappear.)
//! - the formula guard: when [`CsvOptions::formula_guard`] is on, a text cell
//!   or header cell starting with `=`, `+`, `-`, `@`, TAB or CR gets a leading
//!   `'`, so a spreadsheet shows it instead of running it. Numbers, booleans
//!   and JSON ([`Cell::Raw`]) are never changed: `-5` is not a formula.
//!
//! Pure over [`std::io::Write`]: the caller chooses the file.

use std::borrow::Cow;
use std::io::{self, BufWriter, Write};

use sha2::{Digest, Sha256};

use crate::flatten::{Cell, CellRef, Row};
use crate::spec::{hex, CsvOptions};

/// What a finished sink wrote: the writer handed back, the number of data
/// rows (header not counted), and the size and SHA-256 of every byte that
/// reached the writer.
#[derive(Debug)]
pub struct CsvSummary<W> {
    pub inner: W,
    pub rows: u64,
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// How a record is formatted: the delimiter and the formula guard. Apart
/// from the sink, so records can be formatted on other threads and the
/// sink only writes them ([`CsvSink::write_records`]).
#[derive(Debug, Clone, Copy)]
pub struct RecordFormat {
    delimiter: char,
    formula_guard: bool,
}

/// Streams CSV records into a writer. Rows are formatted one at a time, so
/// memory does not grow with the export.
pub struct CsvSink<W: Write> {
    out: BufWriter<Tally<W>>,
    format: RecordFormat,
    rows: u64,
    /// Bytes handed to `out`, including any still in its buffer.
    bytes: u64,
    /// One record being formatted; reused so rows do not allocate.
    line: Vec<u8>,
    /// Set when a write failed: the output may end in half a record, so the
    /// sink refuses to go on rather than produce a file that looks whole.
    failed: bool,
}

impl<W: Write> CsvSink<W> {
    pub fn new(inner: W, options: &CsvOptions) -> Self {
        CsvSink {
            out: BufWriter::new(Tally {
                inner,
                bytes: 0,
                hasher: Sha256::new(),
            }),
            format: RecordFormat::new(options),
            rows: 0,
            bytes: 0,
            line: Vec::new(),
            failed: false,
        }
    }

    /// Writes the header record. Column names come from the API or the user,
    /// so they are quoted and guarded like text cells.
    pub fn write_header(&mut self, columns: &[String]) -> io::Result<()> {
        self.line.clear();
        self.format.push_header(&mut self.line, columns);
        self.emit_line()
    }

    /// Writes one data record with a field for each of `columns`, in order.
    /// A column the row lacks is written like null.
    pub fn write_row(&mut self, columns: &[String], row: &Row) -> io::Result<()> {
        self.write_cells(columns.iter().map(|c| row.get(c).and_then(Cell::shown)))
    }

    /// Writes one data record of these fields, in order; `None` is null.
    pub fn write_cells<'c>(
        &mut self,
        cells: impl IntoIterator<Item = Option<CellRef<'c>>>,
    ) -> io::Result<()> {
        self.line.clear();
        self.format.push_record(&mut self.line, cells);
        self.emit_line()?;
        self.rows += 1;
        Ok(())
    }

    /// Writes `rows` data records formatted already, one after another, by
    /// [`RecordFormat::push_record`] (each ends in CRLF).
    pub fn write_records(&mut self, records: &[u8], rows: u64) -> io::Result<()> {
        self.check_not_failed()?;
        if let Err(e) = self.out.write_all(records) {
            self.failed = true;
            return Err(e);
        }
        self.bytes += records.len() as u64;
        self.rows += rows;
        Ok(())
    }

    /// Data rows written so far (the header is not counted).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes written so far. Some may still be buffered until [`finish`](Self::finish).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes everything to the writer and returns it with the totals.
    pub fn finish(mut self) -> io::Result<CsvSummary<W>> {
        self.check_not_failed()?;
        self.out.flush()?;
        // The buffer is empty after a successful flush, so nothing is lost
        // by taking the writer out without flushing again.
        let (tally, _) = self.out.into_parts();
        if tally.bytes != self.bytes {
            return Err(io::Error::other(format!(
                "csv output: {} bytes formatted but {} reached the writer",
                self.bytes, tally.bytes
            )));
        }
        Ok(CsvSummary {
            inner: tally.inner,
            rows: self.rows,
            bytes: tally.bytes,
            sha256: hex(&tally.hasher.finalize()),
        })
    }

    /// Ends the record in `line` and writes it in one piece, so a failure
    /// never leaves the counters describing a row that was not written.
    fn emit_line(&mut self) -> io::Result<()> {
        self.check_not_failed()?;
        if let Err(e) = self.out.write_all(&self.line) {
            self.failed = true;
            return Err(e);
        }
        self.bytes += self.line.len() as u64;
        Ok(())
    }

    fn check_not_failed(&self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other(
                "csv output: an earlier write failed, so the file is incomplete",
            ));
        }
        Ok(())
    }
}

impl RecordFormat {
    pub fn new(options: &CsvOptions) -> RecordFormat {
        RecordFormat {
            delimiter: options.delimiter,
            formula_guard: options.formula_guard,
        }
    }

    /// Appends the header record. Column names come from the API or the
    /// user, so they are quoted and guarded like text cells.
    pub fn push_header(&self, line: &mut Vec<u8>, columns: &[String]) {
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                self.push_delimiter(line);
            }
            self.push_text(line, column);
        }
        end_record(line, 0);
    }

    /// Appends one data record of these fields, in order, ending in CRLF;
    /// `None` is null.
    pub fn push_record<'c>(
        &self,
        line: &mut Vec<u8>,
        cells: impl IntoIterator<Item = Option<CellRef<'c>>>,
    ) {
        let start = line.len();
        for (i, cell) in cells.into_iter().enumerate() {
            if i > 0 {
                self.push_delimiter(line);
            }
            match cell {
                None => {}
                Some(CellRef::Text(text)) => self.push_text(line, text),
                Some(CellRef::Raw(r)) => self.push_field(line, r),
            }
        }
        end_record(line, start);
    }

    fn push_delimiter(&self, line: &mut Vec<u8>) {
        let mut buf = [0u8; 4];
        line.extend_from_slice(self.delimiter.encode_utf8(&mut buf).as_bytes());
    }

    /// A text cell: guarded, and quoted when empty so it is not read as null.
    fn push_text(&self, line: &mut Vec<u8>, text: &str) {
        let shown = guarded_text(text, self.formula_guard);
        self.push_field(line, &shown);
    }

    /// Any non-null field: quoted when it must be, or when it is empty (an
    /// unquoted empty field means null), or when it starts with U+FEFF: at
    /// the start of the file that is the UTF-8 byte-order mark, which
    /// readers drop, and inside quotes it is the field's own character.
    fn push_field(&self, line: &mut Vec<u8>, value: &str) {
        let needs_quotes = value.is_empty()
            || value.starts_with('\u{feff}')
            || match u8::try_from(self.delimiter) {
                // An ASCII delimiter is one byte: no need to decode characters.
                Ok(d) if d.is_ascii() => {
                    (value.bytes()).any(|b| b == d || b == b'"' || b == b'\r' || b == b'\n')
                }
                _ => (value.chars())
                    .any(|c| c == self.delimiter || c == '"' || c == '\r' || c == '\n'),
            };
        if !needs_quotes {
            line.extend_from_slice(value.as_bytes());
            return;
        }
        line.push(b'"');
        for b in value.bytes() {
            if b == b'"' {
                line.push(b'"');
            }
            line.push(b);
        }
        line.push(b'"');
    }
}

/// Ends the record that starts at `start` with CRLF.
fn end_record(line: &mut Vec<u8>, start: usize) {
    if line.len() == start {
        // A blank line would be skipped by readers; see the module doc.
        line.extend_from_slice(b"\"\"");
    }
    line.extend_from_slice(b"\r\n");
}

/// A text cell (or header cell) as the file holds it once unquoted: with a
/// leading `'` when the guard is on and the text starts like a formula.
/// Public because a reader checking the file must expect exactly this.
pub fn guarded_text(text: &str, formula_guard: bool) -> Cow<'_, str> {
    if formula_guard && starts_like_formula(text) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Characters that make a spreadsheet treat a cell as a formula (or, for
/// TAB and CR, that some spreadsheets strip before looking for one).
fn starts_like_formula(text: &str) -> bool {
    matches!(
        text.chars().next(),
        Some('=' | '+' | '-' | '@' | '\t' | '\r')
    )
}

/// Counts and hashes exactly the bytes the inner writer accepted.
struct Tally<W> {
    inner: W,
    bytes: u64,
    hasher: Sha256,
}

impl<W: Write> Write for Tally<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // A writer may accept fewer bytes than offered; only those count.
        let accepted = buf.get(..n).unwrap_or(buf);
        self.hasher.update(accepted);
        self.bytes += accepted.len() as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flatten::flatten_record;
    use serde_json::json;

    fn opts(delimiter: char, formula_guard: bool) -> CsvOptions {
        CsvOptions {
            delimiter,
            header: true,
            formula_guard,
        }
    }

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn text(s: &str) -> Cell {
        Cell::Text(s.to_owned())
    }

    fn raw(s: &str) -> Cell {
        Cell::Raw { r: s.to_owned() }
    }

    fn row(cells: &[(&str, Cell)]) -> Row {
        cells
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    /// Writes a header and rows, and checks the summary against the bytes.
    fn write(options: &CsvOptions, columns: &[String], rows: &[Row]) -> Vec<u8> {
        let mut sink = CsvSink::new(Vec::new(), options);
        sink.write_header(columns).unwrap();
        for r in rows {
            sink.write_row(columns, r).unwrap();
        }
        assert_eq!(sink.rows(), rows.len() as u64);
        let expected_bytes = sink.bytes();
        let summary = sink.finish().unwrap();
        assert_eq!(summary.rows, rows.len() as u64);
        assert_eq!(summary.bytes, summary.inner.len() as u64);
        assert_eq!(summary.bytes, expected_bytes);
        assert_eq!(summary.sha256, independent_sha256(&summary.inner));
        let batched = write_in_batches(options, columns, rows);
        assert_eq!(
            (batched.rows, &batched.sha256, &batched.inner),
            (summary.rows, &summary.sha256, &summary.inner),
            "records formatted apart and written in batches are the same file"
        );
        summary.inner
    }

    /// The same file, its records formatted by `RecordFormat` two at a time
    /// and handed to the sink with `write_records`.
    fn write_in_batches(
        options: &CsvOptions,
        columns: &[String],
        rows: &[Row],
    ) -> CsvSummary<Vec<u8>> {
        let format = RecordFormat::new(options);
        let mut sink = CsvSink::new(Vec::new(), options);
        sink.write_header(columns).unwrap();
        for batch in rows.chunks(2) {
            let mut records = Vec::new();
            for r in batch {
                let cells = columns.iter().map(|c| r.get(c).and_then(Cell::shown));
                format.push_record(&mut records, cells);
            }
            sink.write_records(&records, batch.len() as u64).unwrap();
        }
        sink.finish().unwrap()
    }

    fn independent_sha256(bytes: &[u8]) -> String {
        let digest = Sha256::digest(bytes);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses CSV back with the csv crate; header included as the first record.
    fn read_back(bytes: &[u8], delimiter: u8) -> Vec<Vec<String>> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(delimiter)
            .from_reader(bytes);
        reader
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect()
    }

    const HOSTILE: &[&str] = &[
        "plain",
        "comma, inside",
        "semi;colon",
        "tab\tinside",
        "\"quoted\"",
        "\"",
        "\"\"",
        "a\"b",
        "line\nfeed",
        "carriage\rreturn",
        "cr\r\nlf",
        "\r\n",
        "trailing newline\n",
        " spaces ",
        "ünïcödé ✓",
        "emoji 🚀👩‍👩‍👧",
        "'already quoted",
        "null",
        "NULL",
        "\\N",
        "=1+1",
        "+1",
        "-1",
        "@SUM(A1)",
        "\tleading tab",
        "\rleading cr",
    ];

    /// What a reader sees for a text cell written with the guard on or off.
    fn as_read(value: &str, guard: bool) -> String {
        if guard && starts_like_formula(value) {
            format!("'{value}")
        } else {
            value.to_owned()
        }
    }

    #[test]
    fn hostile_text_round_trips_with_every_delimiter() {
        for delimiter in [',', ';', '\t', '|'] {
            for guard in [true, false] {
                let columns = cols(&["v"]);
                let rows: Vec<Row> = HOSTILE.iter().map(|v| row(&[("v", text(v))])).collect();
                let bytes = write(&opts(delimiter, guard), &columns, &rows);
                let records = read_back(&bytes, delimiter as u8);
                assert_eq!(records.len(), HOSTILE.len() + 1, "delimiter {delimiter:?}");
                assert_eq!(records[0], ["v"]);
                for (record, value) in records[1..].iter().zip(HOSTILE) {
                    assert_eq!(
                        record,
                        &[as_read(value, guard)],
                        "delimiter {delimiter:?}, guard {guard}"
                    );
                }
            }
        }
    }

    #[test]
    fn many_columns_round_trip() {
        let names: Vec<String> = (0..HOSTILE.len()).map(|i| format!("c{i}")).collect();
        let r: Row = names
            .iter()
            .zip(HOSTILE)
            .map(|(n, v)| (n.clone(), text(v)))
            .collect();
        for delimiter in [',', ';', '\t'] {
            for guard in [true, false] {
                let bytes = write(&opts(delimiter, guard), &names, &[r.clone(), r.clone()]);
                let records = read_back(&bytes, delimiter as u8);
                assert_eq!(records.len(), 3);
                assert_eq!(records[0], names);
                let expected: Vec<String> = HOSTILE.iter().map(|v| as_read(v, guard)).collect();
                for record in &records[1..] {
                    assert_eq!(record, &expected);
                }
            }
        }
    }

    #[test]
    fn exact_bytes_for_quoting_and_crlf() {
        let columns = cols(&["a", "b", "c", "d"]);
        let r = row(&[
            ("a", text("x,y")),
            ("b", text("say \"hi\"")),
            ("c", text("l1\nl2")),
            ("d", text("plain")),
        ]);
        let bytes = write(&opts(',', true), &columns, &[r]);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "a,b,c,d\r\n\"x,y\",\"say \"\"hi\"\"\",\"l1\nl2\",plain\r\n"
        );
    }

    #[test]
    fn null_missing_and_empty_text_differ_in_the_bytes() {
        let columns = cols(&["null", "missing", "empty", "raw"]);
        let r = row(&[("null", Cell::Null), ("empty", text("")), ("raw", raw("1"))]);
        let bytes = write(&opts(',', true), &columns, &[r]);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "null,missing,empty,raw\r\n,,\"\",1\r\n"
        );
        // A plain reader sees all three as empty; the quotes are what differ.
        assert_eq!(read_back(&bytes, b',')[1], ["", "", "", "1"]);
    }

    #[test]
    fn a_row_of_one_null_is_not_a_blank_line() {
        let columns = cols(&["only"]);
        let rows = vec![
            row(&[("only", Cell::Null)]),
            row(&[]),
            row(&[("only", text("x"))]),
        ];
        let bytes = write(&opts(',', true), &columns, &rows);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "only\r\n\"\"\r\n\"\"\r\nx\r\n"
        );
        assert_eq!(read_back(&bytes, b',').len(), 4);
    }

    #[test]
    fn a_field_starting_with_a_byte_order_mark_keeps_it() {
        // Found by `make fuzz`: a file whose first field began with U+FEFF
        // began with the UTF-8 byte-order mark, which readers take for an
        // encoding mark and drop, so the cell lost its first character.
        let columns = cols(&["\u{feff}id", "b"]);
        let rows = [row(&[
            ("\u{feff}id", text("\u{feff}x")),
            ("b", raw("\u{feff}1")),
        ])];
        let options = CsvOptions {
            header: false,
            ..opts(',', true)
        };
        let mut sink = CsvSink::new(Vec::new(), &options);
        sink.write_row(&columns, &rows[0]).unwrap();
        let bytes = sink.finish().unwrap().inner;
        assert_eq!(read_back(&bytes, b','), [["\u{feff}x", "\u{feff}1"]]);
        let bytes = write(&opts(',', true), &columns, &rows);
        assert_eq!(
            read_back(&bytes, b','),
            [["\u{feff}id", "b"], ["\u{feff}x", "\u{feff}1"]]
        );
    }

    #[test]
    fn formula_guard_prefixes_text_only() {
        let columns = cols(&["v"]);
        let cases = [
            ("=SUM(A1)", "'=SUM(A1)"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@cmd", "'@cmd"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("=1,2", "'=1,2"),
            ("=\"a\"", "'=\"a\""),
            ("a=b", "a=b"),
            (" =x", " =x"),
            ("'=x", "'=x"),
            ("", ""),
        ];
        let rows: Vec<Row> = cases.iter().map(|(v, _)| row(&[("v", text(v))])).collect();
        let bytes = write(&opts(',', true), &columns, &rows);
        let records = read_back(&bytes, b',');
        for (record, (input, expected)) in records[1..].iter().zip(cases) {
            assert_eq!(record, &[expected.to_string()], "input {input:?}");
        }
        // CR forces quoting after the guard.
        assert!(String::from_utf8(bytes).unwrap().contains("\"'\rx\""));
    }

    #[test]
    fn raw_cells_are_never_guarded() {
        let columns = cols(&["n", "j", "b"]);
        let r = row(&[
            ("n", raw("-5")),
            ("j", raw(r#"["=x",{"a":"b,c"}]"#)),
            ("b", raw("+1")),
        ]);
        let bytes = write(&opts(',', true), &columns, &[r]);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "n,j,b\r\n-5,\"[\"\"=x\"\",{\"\"a\"\":\"\"b,c\"\"}]\",+1\r\n"
        );
    }

    #[test]
    fn guard_off_leaves_text_alone() {
        let columns = cols(&["=h"]);
        let rows = vec![row(&[("=h", text("=SUM(A1)"))]), row(&[("=h", text("-1"))])];
        let bytes = write(&opts(',', false), &columns, &rows);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "=h\r\n=SUM(A1)\r\n-1\r\n"
        );
    }

    #[test]
    fn header_cells_are_quoted_and_guarded() {
        let columns = cols(&["id", "a,b", "=cmd", "q\"", "", "-x"]);
        let bytes = write(&opts(',', true), &columns, &[]);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "id,\"a,b\",'=cmd,\"q\"\"\",\"\",'-x\r\n"
        );
        assert_eq!(
            read_back(&bytes, b',')[0],
            ["id", "a,b", "'=cmd", "q\"", "", "'-x"]
        );
    }

    #[test]
    fn semicolon_and_tab_delimiters() {
        let columns = cols(&["a", "b", "c"]);
        let r = row(&[("a", text("x;y")), ("b", text("t\tu")), ("c", raw("1.5"))]);
        let semi = write(&opts(';', true), &columns, std::slice::from_ref(&r));
        assert_eq!(
            String::from_utf8(semi.clone()).unwrap(),
            "a;b;c\r\n\"x;y\";t\tu;1.5\r\n"
        );
        assert_eq!(read_back(&semi, b';')[1], ["x;y", "t\tu", "1.5"]);
        let tab = write(&opts('\t', true), &columns, &[r]);
        assert_eq!(
            String::from_utf8(tab.clone()).unwrap(),
            "a\tb\tc\r\nx;y\t\"t\tu\"\t1.5\r\n"
        );
        assert_eq!(read_back(&tab, b'\t')[1], ["x;y", "t\tu", "1.5"]);
        // A raw cell holding the delimiter is quoted too.
        let j = row(&[("a", raw("[1;2]"))]);
        let bytes = write(&opts(';', true), &cols(&["a"]), &[j]);
        assert_eq!(String::from_utf8(bytes).unwrap(), "a\r\n\"[1;2]\"\r\n");
    }

    #[test]
    fn flattened_records_end_to_end() {
        let records: Vec<serde_json::Value> = vec![
            serde_json::from_str(
                r#"{"id": 9007199254740993, "price": 12.50, "ok": true,
                    "user": {"name": "=HYPERLINK(\"x\")", "city": null},
                    "tags": ["a", "b,c"], "note": "line1\r\nline2", "empty": ""}"#,
            )
            .unwrap(),
            json!({"id": -5, "user": {"name": "Zoë 🚀"}, "extra": 1}),
        ];
        let rows: Vec<Row> = records.iter().map(|r| flatten_record(r).unwrap()).collect();
        let columns = cols(&[
            "id",
            "price",
            "ok",
            "user.name",
            "user.city",
            "tags",
            "note",
            "empty",
        ]);
        let bytes = write(&opts(',', true), &columns, &rows);
        let out = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            out,
            "id,price,ok,user.name,user.city,tags,note,empty\r\n\
             9007199254740993,12.50,true,\"'=HYPERLINK(\"\"x\"\")\",,\"[\"\"a\"\",\"\"b,c\"\"]\",\"line1\r\nline2\",\"\"\r\n\
             -5,,,Zoë 🚀,,,,\r\n"
        );
        let records = read_back(&bytes, b',');
        assert_eq!(
            records[1],
            [
                "9007199254740993",
                "12.50",
                "true",
                "'=HYPERLINK(\"x\")",
                "",
                r#"["a","b,c"]"#,
                "line1\r\nline2",
                ""
            ]
        );
        assert_eq!(records[2][0], "-5");
        assert_eq!(records[2][3], "Zoë 🚀");
    }

    #[test]
    fn counts_and_hash_of_an_empty_output() {
        let sink = CsvSink::new(Vec::new(), &CsvOptions::default());
        assert_eq!((sink.rows(), sink.bytes()), (0, 0));
        let summary = sink.finish().unwrap();
        assert_eq!(summary.bytes, 0);
        assert_eq!(summary.rows, 0);
        assert_eq!(
            summary.sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hash_matches_across_a_large_output() {
        // Larger than the BufWriter's buffer, so several flushes happen.
        let columns = cols(&["id", "v"]);
        let rows: Vec<Row> = (0..5000)
            .map(|i| {
                row(&[
                    ("id", raw(&i.to_string())),
                    ("v", text(HOSTILE[i % HOSTILE.len()])),
                ])
            })
            .collect();
        let bytes = write(&opts(',', true), &columns, &rows);
        assert!(bytes.len() > 64 * 1024);
        assert_eq!(read_back(&bytes, b',').len(), 5001);
    }

    /// Accepts at most a few bytes per call, like a pipe under pressure.
    #[derive(Debug)]
    struct Trickle(Vec<u8>);
    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn short_writes_are_counted_exactly() {
        let mut sink = CsvSink::new(Trickle(Vec::new()), &CsvOptions::default());
        sink.write_header(&cols(&["a"])).unwrap();
        for i in 0..100 {
            sink.write_row(&cols(&["a"]), &row(&[("a", text(&format!("v,{i}")))]))
                .unwrap();
        }
        let summary = sink.finish().unwrap();
        assert_eq!(summary.rows, 100);
        assert_eq!(summary.bytes, summary.inner.0.len() as u64);
        assert_eq!(summary.sha256, independent_sha256(&summary.inner.0));
    }

    /// Fails every write after `ok` bytes.
    #[derive(Debug)]
    struct Breaks {
        ok: usize,
        got: Vec<u8>,
    }
    impl Write for Breaks {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.got.len() >= self.ok {
                return Err(io::Error::other("disk full"));
            }
            let n = buf.len().min(self.ok - self.got.len());
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_poisons_the_sink() {
        let mut sink = CsvSink::new(
            Breaks {
                ok: 10,
                got: Vec::new(),
            },
            &CsvOptions::default(),
        );
        let columns = cols(&["a"]);
        let big = "x".repeat(20_000);
        sink.write_header(&columns).unwrap();
        let err = sink.write_row(&columns, &row(&[("a", text(&big))]));
        assert!(err.is_err());
        assert_eq!(sink.rows(), 0);
        assert!(sink.write_row(&columns, &row(&[("a", text("y"))])).is_err());
        let err = sink.finish().unwrap_err();
        assert!(err.to_string().contains("incomplete"), "{err}");
    }
}
