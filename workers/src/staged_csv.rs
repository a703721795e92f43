//! The finalizer's rows: staged rows read in key order and formatted as
//! CSV records on blocking threads, a batch each, while the next batches
//! are read, then written to the sink in the order they were read.
//!
//! Formatting (reading a staged row's cells and quoting them) was most of
//! finalizing's time and ran on one core while the other waited; here up
//! to [`FORMATTERS`] batches are formatted at once. The sink alone counts,
//! hashes and writes, one batch after another, so the file, its count and
//! its SHA-256 are exactly what one thread writing row by row would give.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;

use tokio::task::JoinHandle;
use uuid::Uuid;

use pagefleet_shared::csv_out::{CsvSink, RecordFormat};
use pagefleet_shared::flatten::StagedRow;
use pagefleet_shared::store::{StagedRecord, StagedRows, StoreError};

/// Rows a batch: large enough that a batch's hand-over costs little, small
/// enough that the batches in flight stay a few hundred kilobytes.
const BATCH_ROWS: usize = 2_000;

/// Batches formatted at once. Two cores here; more would only queue.
const FORMATTERS: usize = 2;

/// Why the rows could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RowsError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("staged row {key:?} is not readable: {message}")]
    BadRow { key: String, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("a formatting thread ended without an answer: {0}")]
    Formatter(String),
}

/// One batch's records, formatted.
struct Formatted {
    records: Vec<u8>,
    rows: u64,
}

/// Writes every staged row into the sink as a record of `columns`.
pub async fn write_staged<W: Write>(
    export_id: Uuid,
    mut rows: StagedRows,
    format: RecordFormat,
    columns: Arc<[String]>,
    sink: &mut CsvSink<W>,
) -> Result<(), RowsError> {
    let mut in_flight: VecDeque<JoinHandle<Result<Formatted, RowsError>>> = VecDeque::new();
    loop {
        let batch = rows.next_batch(BATCH_ROWS).await?;
        let last = batch.is_empty();
        if !last {
            let columns = Arc::clone(&columns);
            in_flight.push_back(tokio::task::spawn_blocking(move || {
                format_batch(&format, &columns, &batch)
            }));
        }
        // Up to FORMATTERS batches in flight; after the last, none.
        let keep = if last { 0 } else { FORMATTERS - 1 };
        while in_flight.len() > keep {
            let Some(next) = in_flight.pop_front() else {
                break;
            };
            let formatted = next
                .await
                .map_err(|e| RowsError::Formatter(e.to_string()))??;
            sink.write_records(&formatted.records, formatted.rows)?;
        }
        if last {
            tracing::debug!(export = %export_id, rows = sink.rows(), "staged rows formatted");
            return Ok(());
        }
    }
}

/// Formats a batch of staged rows as records of `columns`.
fn format_batch(
    format: &RecordFormat,
    columns: &[String],
    batch: &[StagedRecord],
) -> Result<Formatted, RowsError> {
    let mut records = Vec::with_capacity(batch.len() * 64);
    for staged in batch {
        let row = StagedRow::parse(staged.data()?).map_err(|e| RowsError::BadRow {
            key: staged
                .key()
                .map_or_else(|e| format!("(unreadable: {e})"), str::to_owned),
            message: e.to_string(),
        })?;
        format.push_record(&mut records, columns.iter().map(|c| row.cell(c)));
    }
    Ok(Formatted {
        records,
        rows: batch.len() as u64,
    })
}
