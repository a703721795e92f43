//! Reading a written CSV file back, strictly, to prove it is the file
//! [`crate::csv_out`] meant to write before anyone is told it exists.
//!
//! This module owns the definition of a well-formed export file, as the
//! reader sees it: RFC 4180 exactly as [`crate::csv_out::CsvSink`] writes it,
//! and nothing looser (general-purpose readers, the `csv` crate among them,
//! forgive stray quotes and mixed line ends; a check must not).
//! - Every record ends with CRLF, the last one included. A CR or LF outside
//!   quotes that is not part of a CRLF is an error, and so is a blank line
//!   (the sink writes a record of no fields as `""`, never as a blank line).
//! - An unquoted field holds no `"`, CR or LF. A quoted field doubles its
//!   `"`, and its closing quote is followed by the delimiter or CRLF; a quoted
//!   field still open at the end of the input is an error.
//! - Every record has the expected number of fields, and the header, when
//!   the spec has one, equals the column names as the sink writes them (the
//!   formula guard included, see [`guarded_text`]).
//! - The bytes are UTF-8.
//!
//! It streams: the input is read in fixed chunks, and only the header's
//! fields are kept, so memory does not grow with the file. A record longer
//! than a limit is refused, which bounds the header and stops a runaway
//! quote at the limit rather than at the end of a multi-GB file.
//!
//! Positions in errors: records count from 1 at the top of the file (the
//! header, when there is one, is record 1), fields from 1 within their
//! record, and offsets are bytes from the start of the file.
//!
//! Pure over [`std::io::Read`]: the caller chooses the file.

use std::fmt;
use std::io::{self, Read};

use sha2::{Digest, Sha256};

use crate::csv_out::guarded_text;
use crate::spec::{hex, CsvOptions};

/// The name a manifest gives this reader.
pub const READER: &str = "rfc4180-strict";

/// Bytes read at a time.
const CHUNK: usize = 64 * 1024;

/// Header names longer than this are cut short in error messages.
const PREVIEW_CHARS: usize = 64;

/// What the file is expected to be.
#[derive(Debug, Clone, Copy)]
pub struct ExpectedCsv<'a> {
    /// The spec's delimiter and whether there is a header (and, for the
    /// header's names, whether the formula guard was on).
    pub options: &'a CsvOptions,
    /// The fields of every record, in order: the header's names.
    pub columns: &'a [String],
    /// The longest record accepted, in bytes, its CRLF included.
    pub max_record_bytes: u64,
}

/// What a file that passed the check holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvCheck {
    /// Data records; the header is not counted.
    pub records: u64,
    /// Fields in every record, the header's included.
    pub fields_per_row: usize,
    /// Whether a header record was read (and so equals the expected names).
    pub header: bool,
    /// Every byte of the input.
    pub bytes: u64,
    /// SHA-256 of every byte of the input, lowercase hex.
    pub sha256: String,
}

/// Where in the input something was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// From 1; the header, when there is one, is record 1.
    pub record: u64,
    /// From 1 within the record.
    pub field: usize,
    /// Bytes from the start of the input.
    pub offset: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record {}, field {}, byte {}",
            self.record, self.field, self.offset
        )
    }
}

/// Why a file is not what the writer meant to write.
#[derive(Debug, thiserror::Error)]
pub enum CsvCheckError {
    #[error("csv check: delimiter {0:?} cannot be read back: it must be one ASCII character other than quote, CR or LF")]
    BadDelimiter(char),
    #[error("csv check: reading failed at byte {offset}: {source}")]
    Read { offset: u64, source: io::Error },
    #[error("csv check: not valid UTF-8 at {at}")]
    NotUtf8 { at: Position },
    #[error("csv check: a quote inside an unquoted field at {at}")]
    QuoteInUnquotedField { at: Position },
    #[error("csv check: text after a closing quote at {at}")]
    TextAfterClosingQuote { at: Position },
    #[error("csv check: the quoted field opened at {at} is never closed")]
    UnterminatedQuote { at: Position },
    #[error("csv check: a line feed without a carriage return at {at} (records end with CRLF)")]
    BareLineFeed { at: Position },
    #[error("csv check: a carriage return not followed by a line feed at {at}")]
    BareCarriageReturn { at: Position },
    #[error("csv check: a blank line at {at}")]
    BlankLine { at: Position },
    #[error("csv check: the input ends inside a record, without its CRLF, at {at}")]
    MissingLineEnd { at: Position },
    #[error("csv check: record {record} (byte {offset}) has {found} fields, expected {expected}")]
    FieldCount {
        record: u64,
        offset: u64,
        expected: usize,
        found: usize,
    },
    #[error("csv check: record {record} (byte {offset}) is longer than {limit} bytes")]
    RecordTooLarge {
        record: u64,
        offset: u64,
        limit: u64,
    },
    #[error("csv check: the header is missing: the input is empty")]
    MissingHeader,
    #[error("csv check: header field {field} is {found:?}, expected {expected:?}")]
    HeaderMismatch {
        field: usize,
        expected: String,
        found: String,
    },
}

/// Reads `input` to its end and checks it against `expected`; see the
/// module doc for what is checked. Reads are retried when interrupted.
pub fn check_csv<R: Read>(
    mut input: R,
    expected: &ExpectedCsv<'_>,
) -> Result<CsvCheck, CsvCheckError> {
    let mut scanner = Scanner::new(expected)?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; CHUNK];
    // The first bytes of a character split between two reads wait at the
    // front of `buf` for the rest (at most 3 of them).
    let mut carried = 0;
    loop {
        let space = buf.get_mut(carried..).unwrap_or_default();
        let n = read_some(&mut input, space, bytes)?;
        if n == 0 {
            break;
        }
        let filled = carried + n;
        let chunk = buf.get(..filled).unwrap_or_default();
        hasher.update(chunk.get(carried..).unwrap_or_default());
        bytes += n as u64;
        carried = scanner.scan_text(chunk)?;
        buf.copy_within(filled - carried..filled, 0);
    }
    if carried > 0 {
        // The input ends inside a character.
        return Err(CsvCheckError::NotUtf8 { at: scanner.here() });
    }
    scanner.finish(bytes, hex(&hasher.finalize()))
}

/// One read into `buf`, retried when interrupted. The count is clamped to
/// `buf`, so a reader that claims more cannot make the caller slice past it.
fn read_some<R: Read>(input: &mut R, buf: &mut [u8], offset: u64) -> Result<usize, CsvCheckError> {
    loop {
        match input.read(buf) {
            Ok(n) => return Ok(n.min(buf.len())),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(CsvCheckError::Read { offset, source }),
        }
    }
}

/// Where the scanner is within a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing of the record read yet.
    RecordStart,
    /// Just after a delimiter.
    FieldStart,
    /// Inside an unquoted field, after at least one byte of it.
    Unquoted,
    /// Inside a quoted field.
    Quoted,
    /// A `"` inside a quoted field: the closing one, or the first of a pair.
    QuoteInQuoted,
    /// A CR outside quotes: only LF may follow.
    AfterCr,
}

/// The strict CSV state machine, fed bytes that are known to be UTF-8.
struct Scanner {
    delimiter: u8,
    fields_expected: usize,
    /// The header's names as the sink writes them; `None` without a header.
    header_expected: Option<Vec<String>>,
    max_record_bytes: u64,
    state: State,
    /// Offset of the next byte.
    offset: u64,
    record: u64,
    record_start: u64,
    /// Bytes of the record so far, its CRLF included.
    record_bytes: u64,
    /// Fields of the record ended so far.
    fields_done: usize,
    field_start: u64,
    /// Whether the field being read (or the last one ended) is quoted.
    field_quoted: bool,
    /// The header's fields, unquoted, while it is read.
    header_fields: Vec<Vec<u8>>,
    /// The header field being read, unquoted.
    header_field: Vec<u8>,
    data_records: u64,
    header_read: bool,
}

impl Scanner {
    fn new(expected: &ExpectedCsv<'_>) -> Result<Scanner, CsvCheckError> {
        let options = expected.options;
        let delimiter = u8::try_from(options.delimiter)
            .ok()
            .filter(|d| d.is_ascii() && !matches!(d, b'"' | b'\r' | b'\n'))
            .ok_or(CsvCheckError::BadDelimiter(options.delimiter))?;
        let header_expected = options.header.then(|| {
            (expected.columns.iter())
                .map(|c| guarded_text(c, options.formula_guard).into_owned())
                .collect()
        });
        Ok(Scanner {
            delimiter,
            fields_expected: expected.columns.len(),
            header_expected,
            max_record_bytes: expected.max_record_bytes,
            state: State::RecordStart,
            offset: 0,
            record: 1,
            record_start: 0,
            record_bytes: 0,
            fields_done: 0,
            field_start: 0,
            field_quoted: false,
            header_fields: Vec::new(),
            header_field: Vec::new(),
            data_records: 0,
            header_read: false,
        })
    }

    /// Scans the whole characters of `chunk` and returns how many bytes at
    /// its end begin a character that the next read must complete.
    fn scan_text(&mut self, chunk: &[u8]) -> Result<usize, CsvCheckError> {
        let invalid = match std::str::from_utf8(chunk) {
            Ok(_) => return self.scan(chunk).map(|()| 0),
            Err(e) => e,
        };
        let (valid, rest) = chunk.split_at(invalid.valid_up_to());
        // Errors earlier in the chunk are reported first.
        self.scan(valid)?;
        match invalid.error_len() {
            None => Ok(rest.len()),
            Some(_) => Err(CsvCheckError::NotUtf8 { at: self.here() }),
        }
    }

    fn scan(&mut self, mut bytes: &[u8]) -> Result<(), CsvCheckError> {
        while let Some((&b, rest)) = bytes.split_first() {
            // Bytes that cannot change the state are passed over at once, up
            // to the record's limit: the byte past it takes the slow path,
            // which reports it.
            let allowance = self.max_record_bytes.saturating_sub(self.record_bytes);
            let run = self
                .plain_run(bytes)
                .min(usize::try_from(allowance).unwrap_or(usize::MAX));
            if run > 0 {
                self.record_bytes += run as u64;
                self.offset += run as u64;
                bytes = bytes.get(run..).unwrap_or_default();
                continue;
            }
            bytes = rest;
            self.record_bytes += 1;
            if self.record_bytes > self.max_record_bytes {
                return Err(CsvCheckError::RecordTooLarge {
                    record: self.record,
                    offset: self.record_start,
                    limit: self.max_record_bytes,
                });
            }
            self.state = self.step(b)?;
            self.offset += 1;
        }
        Ok(())
    }

    /// How many bytes at the start of `bytes` leave the state as it is:
    /// in a quoted field any but `"`, in an unquoted one any but `"`, CR,
    /// LF and the delimiter. None in the header, whose bytes are kept.
    fn plain_run(&self, bytes: &[u8]) -> usize {
        if self.reading_header() {
            return 0;
        }
        let d = self.delimiter;
        match self.state {
            State::Quoted => memchr::memchr(b'"', bytes).unwrap_or(bytes.len()),
            State::Unquoted => (bytes.iter())
                .position(|&b| matches!(b, b'"' | b'\r' | b'\n') || b == d)
                .unwrap_or(bytes.len()),
            _ => 0,
        }
    }

    fn step(&mut self, b: u8) -> Result<State, CsvCheckError> {
        match self.state {
            State::RecordStart | State::FieldStart => self.at_field_start(b),
            State::Unquoted => self.in_unquoted(b),
            State::Quoted => Ok(self.in_quoted(b)),
            State::QuoteInQuoted => self.after_quote(b),
            State::AfterCr => self.after_cr(b),
        }
    }

    fn at_field_start(&mut self, b: u8) -> Result<State, CsvCheckError> {
        self.field_start = self.offset;
        self.field_quoted = b == b'"';
        match b {
            b'"' => Ok(State::Quoted),
            b'\r' if self.state == State::RecordStart => {
                Err(CsvCheckError::BlankLine { at: self.here() })
            }
            _ => self.in_unquoted(b),
        }
    }

    fn in_unquoted(&mut self, b: u8) -> Result<State, CsvCheckError> {
        match b {
            b'"' => Err(CsvCheckError::QuoteInUnquotedField { at: self.here() }),
            b'\r' => Ok(State::AfterCr),
            b'\n' => Err(CsvCheckError::BareLineFeed { at: self.here() }),
            _ if b == self.delimiter => Ok(self.end_field()),
            _ => {
                self.keep(b);
                Ok(State::Unquoted)
            }
        }
    }

    /// Anything goes inside quotes, CR and LF included, except `"`.
    fn in_quoted(&mut self, b: u8) -> State {
        if b == b'"' {
            return State::QuoteInQuoted;
        }
        self.keep(b);
        State::Quoted
    }

    fn after_quote(&mut self, b: u8) -> Result<State, CsvCheckError> {
        match b {
            b'"' => {
                self.keep(b);
                Ok(State::Quoted)
            }
            b'\r' => Ok(State::AfterCr),
            b'\n' => Err(CsvCheckError::BareLineFeed { at: self.here() }),
            _ if b == self.delimiter => Ok(self.end_field()),
            _ => Err(CsvCheckError::TextAfterClosingQuote { at: self.here() }),
        }
    }

    fn after_cr(&mut self, b: u8) -> Result<State, CsvCheckError> {
        if b != b'\n' {
            let at = Position {
                offset: self.offset - 1,
                ..self.here()
            };
            return Err(CsvCheckError::BareCarriageReturn { at });
        }
        self.end_field();
        self.end_record()?;
        Ok(State::RecordStart)
    }

    /// Keeps a byte of a field's text, when the field is the header's.
    fn keep(&mut self, b: u8) {
        if self.reading_header() {
            self.header_field.push(b);
        }
    }

    fn end_field(&mut self) -> State {
        if self.reading_header() {
            let field = std::mem::take(&mut self.header_field);
            self.header_fields.push(field);
        }
        self.fields_done += 1;
        State::FieldStart
    }

    /// Called on the LF of a record's CRLF.
    fn end_record(&mut self) -> Result<(), CsvCheckError> {
        let found = self.fields_found();
        if found != self.fields_expected {
            return Err(CsvCheckError::FieldCount {
                record: self.record,
                offset: self.record_start,
                expected: self.fields_expected,
                found,
            });
        }
        if self.reading_header() {
            self.check_header()?;
            self.header_read = true;
        } else {
            self.data_records += 1;
        }
        self.record += 1;
        self.record_start = self.offset + 1;
        self.record_bytes = 0;
        self.fields_done = 0;
        Ok(())
    }

    /// Fields in the record just ended. The sink writes a record of no
    /// fields as `""` (a blank line would be skipped by readers), so when no
    /// fields are expected, that record has none.
    fn fields_found(&self) -> usize {
        let lone_empty_quoted =
            self.fields_done == 1 && self.field_quoted && self.record_bytes == 4;
        if lone_empty_quoted && self.fields_expected == 0 {
            0
        } else {
            self.fields_done
        }
    }

    /// Compares the header just read with the expected names; the number of
    /// fields has been checked already.
    fn check_header(&mut self) -> Result<(), CsvCheckError> {
        let found = std::mem::take(&mut self.header_fields);
        let expected = self.header_expected.as_deref().unwrap_or_default();
        for (i, (want, got)) in expected.iter().zip(&found).enumerate() {
            if want.as_bytes() != got.as_slice() {
                return Err(CsvCheckError::HeaderMismatch {
                    field: i + 1,
                    expected: preview(want),
                    found: preview(&String::from_utf8_lossy(got)),
                });
            }
        }
        Ok(())
    }

    fn reading_header(&self) -> bool {
        self.header_expected.is_some() && self.record == 1
    }

    fn here(&self) -> Position {
        Position {
            record: self.record,
            field: self.fields_done + 1,
            offset: self.offset,
        }
    }

    fn finish(self, bytes: u64, sha256: String) -> Result<CsvCheck, CsvCheckError> {
        match self.state {
            State::RecordStart => {}
            State::Quoted => {
                let at = Position {
                    offset: self.field_start,
                    ..self.here()
                };
                return Err(CsvCheckError::UnterminatedQuote { at });
            }
            _ => return Err(CsvCheckError::MissingLineEnd { at: self.here() }),
        }
        if self.header_expected.is_some() && !self.header_read {
            return Err(CsvCheckError::MissingHeader);
        }
        Ok(CsvCheck {
            records: self.data_records,
            fields_per_row: self.fields_expected,
            header: self.header_read,
            bytes,
            sha256,
        })
    }
}

/// A name short enough for an error message.
fn preview(text: &str) -> String {
    let mut chars = text.chars();
    let mut shown: String = chars.by_ref().take(PREVIEW_CHARS).collect();
    if chars.next().is_some() {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csv_out::CsvSink;
    use crate::flatten::{Cell, Row};

    fn opts(delimiter: char, header: bool, formula_guard: bool) -> CsvOptions {
        CsvOptions {
            delimiter,
            header,
            formula_guard,
        }
    }

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn check(
        bytes: &[u8],
        options: &CsvOptions,
        columns: &[String],
    ) -> Result<CsvCheck, CsvCheckError> {
        let expected = ExpectedCsv {
            options,
            columns,
            max_record_bytes: 1 << 20,
        };
        check_csv(bytes, &expected)
    }

    /// The usual case of the malformed inputs: two columns `a,b`, a header.
    fn check_ab(bytes: &[u8]) -> Result<CsvCheck, CsvCheckError> {
        check(bytes, &opts(',', true, true), &cols(&["a", "b"]))
    }

    fn at(record: u64, field: usize, offset: u64) -> Position {
        Position {
            record,
            field,
            offset,
        }
    }

    const HOSTILE: &[&str] = &[
        "plain",
        "comma, inside",
        "semi;colon",
        "tab\tinside",
        "pipe|inside",
        "\"quoted\"",
        "\"",
        "a\"b",
        "line\nfeed",
        "carriage\rreturn",
        "cr\r\nlf",
        "\r\n",
        "\r",
        "\n",
        "",
        " ",
        "ünïcödé ✓",
        "emoji 🚀👩‍👩‍👧",
        "=1+1",
        "+1",
        "-1",
        "@SUM(A1)",
        "\tleading tab",
        "\rleading cr",
        "'already quoted",
    ];

    /// Rows of hostile cells, with nulls, missing and raw cells among them.
    fn hostile_rows(columns: &[String]) -> Vec<Row> {
        (0..HOSTILE.len() * 2)
            .map(|i| {
                (columns.iter().enumerate())
                    .filter(|(j, _)| (i + j) % 7 != 3)
                    .map(|(j, c)| {
                        let cell = match (i + j) % 5 {
                            0 => Cell::Null,
                            1 => Cell::Raw {
                                r: format!("[\"{}\",-{i}]", HOSTILE[(i + j) % HOSTILE.len()]),
                            },
                            _ => Cell::Text(HOSTILE[(i * 3 + j) % HOSTILE.len()].to_string()),
                        };
                        (c.clone(), cell)
                    })
                    .collect()
            })
            .collect()
    }

    /// Writes with the project's sink; returns the bytes and the sink's summary.
    fn write(options: &CsvOptions, columns: &[String], rows: &[Row]) -> (Vec<u8>, u64, String) {
        let mut sink = CsvSink::new(Vec::new(), options);
        if options.header {
            sink.write_header(columns).unwrap();
        }
        for row in rows {
            sink.write_row(columns, row).unwrap();
        }
        let summary = sink.finish().unwrap();
        assert_eq!(summary.rows, rows.len() as u64);
        (summary.inner, summary.bytes, summary.sha256)
    }

    #[test]
    fn what_the_sink_writes_reads_back_with_equal_counts_and_hash() {
        let header_names = ["id", "a,b", "=cmd", "q\"", "", "-x", "x;y", "t\tu", "ü"];
        for delimiter in [',', ';', '\t', '|'] {
            for header in [true, false] {
                for guard in [true, false] {
                    let options = opts(delimiter, header, guard);
                    let columns = cols(&header_names);
                    let rows = hostile_rows(&columns);
                    let (bytes, written, sha256) = write(&options, &columns, &rows);
                    let checked = check(&bytes, &options, &columns)
                        .unwrap_or_else(|e| panic!("{delimiter:?} {header} {guard}: {e}"));
                    assert_eq!(
                        checked,
                        CsvCheck {
                            records: rows.len() as u64,
                            fields_per_row: columns.len(),
                            header,
                            bytes: written,
                            sha256,
                        }
                    );
                }
            }
        }
    }

    #[test]
    fn every_hostile_cell_alone_in_one_column_reads_back() {
        for delimiter in [',', ';', '\t'] {
            let options = opts(delimiter, true, true);
            let columns = cols(&["v"]);
            let mut rows: Vec<Row> = (HOSTILE.iter())
                .map(|v| Row::from([("v".to_string(), Cell::Text(v.to_string()))]))
                .collect();
            // A lone null and a missing cell are written as `""`.
            rows.push(Row::from([("v".to_string(), Cell::Null)]));
            rows.push(Row::new());
            let (bytes, written, sha256) = write(&options, &columns, &rows);
            let checked = check(&bytes, &options, &columns).unwrap();
            assert_eq!(checked.records, rows.len() as u64);
            assert_eq!((checked.bytes, checked.sha256), (written, sha256));
        }
    }

    #[test]
    fn a_file_of_no_columns_reads_back() {
        // An export with no rows and no declared columns has none.
        for header in [true, false] {
            let options = opts(',', header, true);
            let rows = vec![Row::new(), Row::new()];
            let (bytes, written, _) = write(&options, &[], &rows);
            let checked = check(&bytes, &options, &[]).unwrap();
            assert_eq!(
                (checked.records, checked.fields_per_row, checked.header),
                (2, 0, header)
            );
            assert_eq!(checked.bytes, written);
        }
        // With one column, `""` is one field (an empty string or a lone null).
        assert!(matches!(
            check(b"\"\"\r\n", &opts(',', false, true), &[]),
            Ok(CsvCheck { records: 1, .. })
        ));
        assert!(matches!(
            check(b"x\r\n", &opts(',', false, true), &[]),
            Err(CsvCheckError::FieldCount {
                found: 1,
                expected: 0,
                ..
            })
        ));
    }

    #[test]
    fn empty_input() {
        let checked = check(b"", &opts(',', false, true), &cols(&["a"])).unwrap();
        assert_eq!(
            (checked.records, checked.bytes, checked.header),
            (0, 0, false)
        );
        assert_eq!(
            checked.sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(matches!(check_ab(b""), Err(CsvCheckError::MissingHeader)));
    }

    /// Hands out at most `step` bytes per read, interrupted now and then,
    /// so characters and records split across reads.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
        reads: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            if self.reads.is_multiple_of(5) {
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            let n = self.step.min(buf.len()).min(self.bytes.len());
            let (head, tail) = self.bytes.split_at(n);
            buf[..n].copy_from_slice(head);
            self.bytes = tail;
            Ok(n)
        }
    }

    #[test]
    fn reads_split_anywhere_give_the_same_result() {
        let options = opts(';', true, true);
        let columns = cols(&["id", "ü", "v"]);
        let rows = hostile_rows(&columns);
        let (bytes, _, _) = write(&options, &columns, &rows);
        let whole = check(&bytes, &options, &columns).unwrap();
        for step in [1, 2, 3, 5, 7, 64] {
            let input = Trickle {
                bytes: &bytes,
                step,
                reads: 0,
            };
            let expected = ExpectedCsv {
                options: &options,
                columns: &columns,
                max_record_bytes: 1 << 20,
            };
            assert_eq!(check_csv(input, &expected).unwrap(), whole, "step {step}");
        }
    }

    #[test]
    fn a_file_larger_than_a_chunk_reads_back() {
        let options = opts(',', true, true);
        let columns = cols(&["id", "v"]);
        let rows: Vec<Row> = (0..20_000)
            .map(|i| {
                Row::from([
                    ("id".to_string(), Cell::Raw { r: i.to_string() }),
                    (
                        "v".to_string(),
                        Cell::Text(HOSTILE[i % HOSTILE.len()].to_string()),
                    ),
                ])
            })
            .collect();
        let (bytes, written, sha256) = write(&options, &columns, &rows);
        assert!(bytes.len() > 4 * CHUNK);
        let checked = check(&bytes, &options, &columns).unwrap();
        assert_eq!(checked.records, 20_000);
        assert_eq!((checked.bytes, checked.sha256), (written, sha256));
    }

    #[test]
    fn a_file_cut_short_anywhere_but_between_records_is_refused() {
        let options = opts(',', true, true);
        let columns = cols(&["a", "b"]);
        let rows = hostile_rows(&columns);
        // Where each record ends.
        let mut sink = CsvSink::new(Vec::new(), &options);
        sink.write_header(&columns).unwrap();
        let mut ends = vec![sink.bytes()];
        for row in &rows {
            sink.write_row(&columns, row).unwrap();
            ends.push(sink.bytes());
        }
        let bytes = sink.finish().unwrap().inner;
        for len in 0..=bytes.len() {
            let result = check(&bytes[..len], &options, &columns);
            let at_record_end = ends.iter().position(|&e| e == len as u64);
            match (at_record_end, result) {
                (Some(i), Ok(c)) => assert_eq!(c.records, i as u64, "cut at {len}"),
                (None, Err(_)) => {}
                (end, result) => panic!("cut at {len}: end {end:?}, {result:?}"),
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small alphabet of the bytes that matter, so that odd sequences
        // of them come up often.
        let alphabet = [b'a', b',', b'"', b'\r', b'\n', 0xc3, 0xa9, 0xff, 0xf0, b';'];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let columns = cols(&["a", "b"]);
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            for header in [true, false] {
                let options = opts(',', header, true);
                let expected = ExpectedCsv {
                    options: &options,
                    columns: &columns,
                    max_record_bytes: 16,
                };
                let _ = check_csv(input.as_slice(), &expected);
            }
        }
    }

    #[test]
    fn a_quote_inside_an_unquoted_field() {
        match check_ab(b"a,b\r\nx,y\"z\r\n") {
            Err(CsvCheckError::QuoteInUnquotedField { at: p }) => assert_eq!(p, at(2, 2, 8)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn text_after_a_closing_quote() {
        match check_ab(b"a,b\r\n\"x\"y,z\r\n") {
            Err(CsvCheckError::TextAfterClosingQuote { at: p }) => assert_eq!(p, at(2, 1, 8)),
            other => panic!("{other:?}"),
        }
        // A space after the quote is text too.
        assert!(matches!(
            check_ab(b"a,b\r\n\"x\" ,z\r\n"),
            Err(CsvCheckError::TextAfterClosingQuote { .. })
        ));
    }

    #[test]
    fn a_quoted_field_never_closed() {
        match check_ab(b"a,b\r\nx,\"y\r\nz,w\r\n") {
            Err(CsvCheckError::UnterminatedQuote { at: p }) => assert_eq!(p, at(2, 2, 7)),
            other => panic!("{other:?}"),
        }
        // A doubled quote does not close it.
        assert!(matches!(
            check_ab(b"a,b\r\nx,\"y\"\"\r\n"),
            Err(CsvCheckError::UnterminatedQuote { .. })
        ));
    }

    #[test]
    fn line_ends_are_crlf_and_nothing_else() {
        match check_ab(b"a,b\nx,y\n") {
            Err(CsvCheckError::BareLineFeed { at: p }) => assert_eq!(p, at(1, 2, 3)),
            other => panic!("{other:?}"),
        }
        match check_ab(b"a,b\r\n\"x\"\n") {
            Err(CsvCheckError::BareLineFeed { at: p }) => assert_eq!(p, at(2, 1, 8)),
            other => panic!("{other:?}"),
        }
        match check_ab(b"a,b\r\nx\ry,z\r\n") {
            Err(CsvCheckError::BareCarriageReturn { at: p }) => assert_eq!(p, at(2, 1, 6)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check_ab(b"a,b\r\r\n"),
            Err(CsvCheckError::BareCarriageReturn { .. })
        ));
        // Inside quotes, CR and LF are text.
        assert!(check_ab(b"a,b\r\n\"x\ry\",\"\n\"\r\n").is_ok());
    }

    #[test]
    fn a_blank_line() {
        match check_ab(b"a,b\r\n\r\nx,y\r\n") {
            Err(CsvCheckError::BlankLine { at: p }) => assert_eq!(p, at(2, 1, 5)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_last_record_needs_its_crlf() {
        for cut in [
            &b"a,b\r\nx,y"[..],
            b"a,b\r\nx,y\r",
            b"a,b\r\nx,\"y\"",
            b"a,b\r\nx,",
        ] {
            match check_ab(cut) {
                Err(CsvCheckError::MissingLineEnd { at: p }) => {
                    assert_eq!((p.record, p.offset), (2, cut.len() as u64), "{cut:?}")
                }
                other => panic!("{cut:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_record_has_the_expected_fields() {
        match check_ab(b"a,b\r\nx,y\r\nx,y,z\r\n") {
            Err(CsvCheckError::FieldCount {
                record,
                offset,
                expected,
                found,
            }) => assert_eq!((record, offset, expected, found), (3, 10, 2, 3)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check_ab(b"a\r\n"),
            Err(CsvCheckError::FieldCount {
                record: 1,
                found: 1,
                ..
            })
        ));
        // A delimiter inside quotes does not split the field.
        assert!(check_ab(b"a,b\r\n\"x,y\",z\r\n").is_ok());
    }

    #[test]
    fn the_header_must_equal_the_columns_as_written() {
        match check_ab(b"a,c\r\n") {
            Err(CsvCheckError::HeaderMismatch {
                field,
                expected,
                found,
            }) => assert_eq!((field, expected.as_str(), found.as_str()), (2, "b", "c")),
            other => panic!("{other:?}"),
        }
        // Quoting is undone before comparing.
        assert!(check_ab(b"\"a\",\"b\"\r\n").unwrap().header);
        // With the guard on, the sink writes `=x` as `'=x`; without, as is.
        let columns = cols(&["=x"]);
        assert!(check(b"'=x\r\n", &opts(',', true, true), &columns).is_ok());
        assert!(matches!(
            check(b"=x\r\n", &opts(',', true, true), &columns),
            Err(CsvCheckError::HeaderMismatch { field: 1, .. })
        ));
        assert!(check(b"=x\r\n", &opts(',', true, false), &columns).is_ok());
        // Without a header, the first record is data.
        let checked = check(b"a,b\r\n", &opts(',', false, true), &cols(&["a", "b"])).unwrap();
        assert_eq!((checked.records, checked.header), (1, false));
    }

    #[test]
    fn a_long_header_name_is_cut_short_in_the_error() {
        let long = "x".repeat(500);
        let text = format!("{long},b\r\n");
        match check_ab(text.as_bytes()) {
            Err(CsvCheckError::HeaderMismatch { found, .. }) => {
                assert_eq!(found.chars().count(), PREVIEW_CHARS + 1)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_input_must_be_utf8() {
        match check_ab(b"a,b\r\nx,y\xffz\r\n") {
            Err(CsvCheckError::NotUtf8 { at: p }) => assert_eq!(p, at(2, 2, 8)),
            other => panic!("{other:?}"),
        }
        // An overlong encoding, a surrogate, and a character cut off at the end.
        for bad in [
            &b"a,b\r\n\xc0\xaf,y\r\n"[..],
            b"a,b\r\n\xed\xa0\x80,y\r\n",
            b"a,b\r\nx,\xc3",
        ] {
            match check_ab(bad) {
                Err(CsvCheckError::NotUtf8 { at: p }) => assert_eq!(p.record, 2, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        // An earlier error in the same chunk comes first.
        assert!(matches!(
            check_ab(b"a,b\r\nx\"y,\xff\r\n"),
            Err(CsvCheckError::QuoteInUnquotedField { .. })
        ));
    }

    #[test]
    fn a_record_longer_than_the_limit() {
        let options = opts(',', true, true);
        let columns = cols(&["a", "b"]);
        let expected = ExpectedCsv {
            options: &options,
            columns: &columns,
            max_record_bytes: 8,
        };
        // Exactly at the limit is fine: `xx,yyy` and its CRLF are 8 bytes.
        assert!(check_csv(&b"a,b\r\nxx,yyy\r\n"[..], &expected).is_ok());
        match check_csv(&b"a,b\r\nxx,yyyy\r\n"[..], &expected) {
            Err(CsvCheckError::RecordTooLarge {
                record,
                offset,
                limit,
            }) => assert_eq!((record, offset, limit), (2, 5, 8)),
            other => panic!("{other:?}"),
        }
        // A runaway quote stops at the limit, not at the end of the input.
        let runaway = [&b"a,b\r\n\"x"[..], &[b'y'; 1000]].concat();
        assert!(matches!(
            check_csv(runaway.as_slice(), &expected),
            Err(CsvCheckError::RecordTooLarge { record: 2, .. })
        ));
    }

    #[test]
    fn a_delimiter_that_cannot_be_read_back() {
        for d in ['"', '\r', '\n', 'é', '🚀'] {
            assert!(
                matches!(
                    check(b"", &opts(d, false, true), &cols(&["a"])),
                    Err(CsvCheckError::BadDelimiter(c)) if c == d
                ),
                "{d:?}"
            );
        }
    }

    /// Fails after handing out some bytes.
    struct Breaks(usize);

    impl Read for Breaks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("disk gone"));
            }
            let n = self.0.min(buf.len());
            buf[..n].fill(b'x');
            self.0 -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_read_error_names_its_offset() {
        let options = opts(',', false, true);
        let columns = cols(&["a"]);
        let expected = ExpectedCsv {
            options: &options,
            columns: &columns,
            max_record_bytes: 1 << 20,
        };
        match check_csv(Breaks(10), &expected) {
            Err(CsvCheckError::Read { offset, source }) => {
                assert_eq!(offset, 10);
                assert!(source.to_string().contains("disk gone"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = check_ab(b"a,b\r\nx,y\"z\r\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "csv check: a quote inside an unquoted field at record 2, field 2, byte 8"
        );
    }
}
