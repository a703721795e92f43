//! Checking a written CSV file by reading it back before it is published.
//!
//! The writer's counters say what it meant to write; the strict reader
//! ([`pagefleet_shared::csv_check`]) says what the file holds. This module
//! owns the comparison of the two (and with staging), the reader's limit on
//! a record, and what the manifest records of the check. Only
//! [`read_file`] does I/O; the finalizer runs it on a blocking thread.

use std::fs::File;
use std::path::Path;

use serde::Serialize;

use pagefleet_shared::csv_check::{self, check_csv, CsvCheck, CsvCheckError, ExpectedCsv};
use pagefleet_shared::spec::CsvOptions;

/// Headroom over the computed bound on a record, so that a slip in that
/// reasoning cannot fail a good export; the limit guards memory and
/// runaway quotes, it is not a check of the data.
const RECORD_SLACK: u64 = 64 * 1024;

/// What the writer and staging say the file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedFile<'a> {
    pub rows_written: u64,
    pub rows_staged: i64,
    pub columns: usize,
    pub header: bool,
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: &'a str,
}

/// How the file read back differs from what was written.
#[derive(Debug, thiserror::Error)]
pub enum FileMismatch {
    #[error(transparent)]
    Unreadable(#[from] CsvCheckError),
    #[error("it holds {read} records, but {written} rows were written and staging holds {staged}")]
    Records {
        read: u64,
        written: u64,
        staged: i64,
    },
    #[error("its records have {read} fields, but there are {columns} columns")]
    FieldsPerRow { read: usize, columns: usize },
    #[error("a header was expected: {expected}, a header was read: {read}")]
    Header { expected: bool, read: bool },
    #[error("it holds {read} bytes, but {written} were written")]
    Bytes { read: u64, written: u64 },
    #[error("its SHA-256 is {read}, but the bytes written hash to {written}")]
    Sha256 { read: String, written: String },
}

/// What the manifest records of the check: the reader, and what it found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileCheckReport {
    pub reader: &'static str,
    pub records: u64,
    pub fields_per_row: usize,
    pub header: bool,
    pub bytes: u64,
    pub sha256: String,
}

impl From<&CsvCheck> for FileCheckReport {
    fn from(check: &CsvCheck) -> Self {
        FileCheckReport {
            reader: csv_check::READER,
            records: check.records,
            fields_per_row: check.fields_per_row,
            header: check.header,
            bytes: check.bytes,
            sha256: check.sha256.clone(),
        }
    }
}

/// Reads the file at `path` to its end with the strict reader. The outer
/// error is opening the file; the inner one, what the reader refused.
pub fn read_file(
    path: &Path,
    options: &CsvOptions,
    columns: &[String],
    max_record_bytes: u64,
) -> std::io::Result<Result<CsvCheck, CsvCheckError>> {
    let file = File::open(path)?;
    let expected = ExpectedCsv {
        options,
        columns,
        max_record_bytes,
    };
    // The reader buffers its reads itself.
    Ok(check_csv(file, &expected))
}

/// The longest record a file can hold. A row is one record of one
/// response body, so its values add up to at most `max_body_bytes`;
/// writing at most doubles them (quotes are doubled) and adds two quotes,
/// a guard and a delimiter per column, and the CRLF. The header is its
/// names treated the same way.
pub fn record_limit(max_body_bytes: u64, columns: &[String]) -> u64 {
    let names: u64 = columns.iter().map(|c| c.len() as u64).sum();
    let per_column = 4u64.saturating_mul(columns.len() as u64);
    (max_body_bytes.max(names))
        .saturating_mul(2)
        .saturating_add(per_column)
        .saturating_add(2 + RECORD_SLACK)
}

/// The file read back must be the file written: as many records as rows
/// written and staged, a field per column, the header when the spec has
/// one, and the same bytes.
pub fn compare(check: &CsvCheck, expected: &ExpectedFile<'_>) -> Result<(), FileMismatch> {
    let staged_matches = i64::try_from(check.records).is_ok_and(|r| r == expected.rows_staged);
    if check.records != expected.rows_written || !staged_matches {
        return Err(FileMismatch::Records {
            read: check.records,
            written: expected.rows_written,
            staged: expected.rows_staged,
        });
    }
    if check.fields_per_row != expected.columns {
        return Err(FileMismatch::FieldsPerRow {
            read: check.fields_per_row,
            columns: expected.columns,
        });
    }
    if check.header != expected.header {
        return Err(FileMismatch::Header {
            expected: expected.header,
            read: check.header,
        });
    }
    if check.bytes != expected.bytes {
        return Err(FileMismatch::Bytes {
            read: check.bytes,
            written: expected.bytes,
        });
    }
    if check.sha256 != expected.sha256 {
        return Err(FileMismatch::Sha256 {
            read: check.sha256.clone(),
            written: expected.sha256.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagefleet_shared::csv_out::CsvSink;
    use pagefleet_shared::flatten::{Cell, Row};

    const SHA: &str = "ab12";

    fn check() -> CsvCheck {
        CsvCheck {
            records: 10,
            fields_per_row: 3,
            header: true,
            bytes: 500,
            sha256: SHA.to_string(),
        }
    }

    fn expected() -> ExpectedFile<'static> {
        ExpectedFile {
            rows_written: 10,
            rows_staged: 10,
            columns: 3,
            header: true,
            bytes: 500,
            sha256: SHA,
        }
    }

    #[test]
    fn a_file_that_reads_back_as_written_passes() {
        assert!(compare(&check(), &expected()).is_ok());
    }

    #[test]
    fn fewer_or_more_records_than_written_or_staged() {
        let short = CsvCheck {
            records: 9,
            ..check()
        };
        assert!(matches!(
            compare(&short, &expected()),
            Err(FileMismatch::Records {
                read: 9,
                written: 10,
                staged: 10
            })
        ));
        let staged_more = ExpectedFile {
            rows_staged: 11,
            ..expected()
        };
        assert!(matches!(
            compare(&check(), &staged_more),
            Err(FileMismatch::Records { staged: 11, .. })
        ));
        let written_fewer = ExpectedFile {
            rows_written: 9,
            ..expected()
        };
        assert!(matches!(
            compare(&check(), &written_fewer),
            Err(FileMismatch::Records { written: 9, .. })
        ));
    }

    #[test]
    fn fields_other_than_the_columns() {
        let wide = CsvCheck {
            fields_per_row: 4,
            ..check()
        };
        assert!(matches!(
            compare(&wide, &expected()),
            Err(FileMismatch::FieldsPerRow {
                read: 4,
                columns: 3
            })
        ));
    }

    #[test]
    fn a_header_missing_or_unasked_for() {
        let headless = CsvCheck {
            header: false,
            ..check()
        };
        assert!(matches!(
            compare(&headless, &expected()),
            Err(FileMismatch::Header {
                expected: true,
                read: false
            })
        ));
        let no_header = ExpectedFile {
            header: false,
            ..expected()
        };
        assert!(matches!(
            compare(&check(), &no_header),
            Err(FileMismatch::Header {
                expected: false,
                read: true
            })
        ));
    }

    #[test]
    fn other_bytes_than_written() {
        let longer = CsvCheck {
            bytes: 501,
            ..check()
        };
        assert!(matches!(
            compare(&longer, &expected()),
            Err(FileMismatch::Bytes {
                read: 501,
                written: 500
            })
        ));
        let changed = CsvCheck {
            sha256: "ffff".into(),
            ..check()
        };
        match compare(&changed, &expected()) {
            Err(FileMismatch::Sha256 { read, written }) => {
                assert_eq!((read.as_str(), written.as_str()), ("ffff", SHA))
            }
            other => panic!("{other:?}"),
        }
    }

    fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "pagefleet-file-check-{}-{name}",
            uuid::Uuid::now_v7()
        ));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn a_written_file_reads_back_and_compares_equal() {
        let options = CsvOptions::default();
        let columns = vec!["id".to_string(), "note".to_string()];
        let mut sink = CsvSink::new(Vec::new(), &options);
        sink.write_header(&columns).unwrap();
        let row = Row::from([
            ("id".to_string(), Cell::Raw { r: "1".into() }),
            ("note".to_string(), Cell::Text("=a,\"b\"\r\nc".into())),
        ]);
        sink.write_row(&columns, &row).unwrap();
        let summary = sink.finish().unwrap();
        let path = temp_file("good.csv", &summary.inner);
        let limit = record_limit(1024, &columns);
        let check = read_file(&path, &options, &columns, limit)
            .unwrap()
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        let expected = ExpectedFile {
            rows_written: summary.rows,
            rows_staged: 1,
            columns: 2,
            header: true,
            bytes: summary.bytes,
            sha256: &summary.sha256,
        };
        assert!(compare(&check, &expected).is_ok());
        let report = FileCheckReport::from(&check);
        assert_eq!(report.reader, "rfc4180-strict");
        assert_eq!((report.records, report.fields_per_row), (1, 2));
    }

    #[test]
    fn a_malformed_file_is_unreadable() {
        let options = CsvOptions::default();
        let columns = vec!["id".to_string()];
        let path = temp_file("bad.csv", b"id\n1\n");
        let read = read_file(&path, &options, &columns, 1024).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mismatch = FileMismatch::from(read.unwrap_err());
        assert!(
            mismatch
                .to_string()
                .contains("line feed without a carriage return"),
            "{mismatch}"
        );
        let missing = std::env::temp_dir().join("pagefleet-file-check-no-such-file");
        assert!(read_file(&missing, &options, &columns, 1024).is_err());
    }

    #[test]
    fn the_record_limit_covers_the_worst_a_body_can_become() {
        let columns = vec!["a".to_string(), "b".to_string()];
        // A body of nothing but quotes doubles, plus quotes, guard and
        // delimiter per column, and the CRLF.
        assert!(record_limit(1000, &columns) >= 2 * 1000 + 4 * 2 + 2);
        // Long names: the header is the longest record.
        let long = vec!["n".repeat(5000)];
        assert!(record_limit(10, &long) >= 2 * 5000 + 4 + 2);
        assert_eq!(record_limit(u64::MAX, &columns), u64::MAX);
    }
}
