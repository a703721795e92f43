//! The finalizer: staged rows → the published CSV and its manifest.
//!
//! Rows stream from Postgres in key order, in batches, into a temporary file
//! beside the target, counted and hashed as they are written. The count is
//! checked against staging, the file read back with a strict CSV reader and
//! compared with what was written ([`crate::file_check`]), then fsynced and
//! renamed into place, and the directory fsynced, so the final path holds
//! either nothing or the whole, checked file. The manifest is written the
//! same way, then the export completes. The decisions in between are plain
//! functions: the manifest from what was written, what was read back and
//! the export's counters ([`manifest`]), the count check, and the names of
//! the temporary files.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use serde::Serialize;
use uuid::Uuid;

use pagefleet_shared::csv_check::CsvCheck;
use pagefleet_shared::csv_out::{CsvSink, CsvSummary, RecordFormat};
use pagefleet_shared::model::ExportState;
use pagefleet_shared::progress::Phases;
use pagefleet_shared::redact;
use pagefleet_shared::spec::OnMismatch;
use pagefleet_shared::store::{FinalizeWork, Published, StoreError};
use pagefleet_shared::telemetry::metrics;
use pagefleet_shared::tenancy::{self, CreateDirError};
use pagefleet_shared::verification::{reconcile, to_reread, PartitionLedger, Verification};

use crate::clock;
use crate::context::WorkerContext;
use crate::file_check::{self, ExpectedFile, FileCheckReport, FileMismatch};
use crate::staged_csv::{self, RowsError};

#[derive(Debug, thiserror::Error)]
pub enum FinalizeError {
    #[error("finalize export {export_id}: {source}")]
    Store { export_id: Uuid, source: StoreError },
    #[error("finalize export {export_id}: cannot write {path}: {source}")]
    Io {
        export_id: Uuid,
        path: String,
        source: std::io::Error,
    },
    #[error("finalize export {export_id}: staged row {key:?} is not readable: {message}")]
    BadRow {
        export_id: Uuid,
        key: String,
        message: String,
    },
    #[error("finalize export {export_id}: formatting the rows failed: {message}")]
    Formatter { export_id: Uuid, message: String },
    #[error("finalize export {export_id}: {source}")]
    Isolation {
        export_id: Uuid,
        source: tenancy::IsolationError,
    },
    #[error("finalize export {export_id}: wrote {written} rows but staging holds {staged}")]
    CountMismatch {
        export_id: Uuid,
        written: u64,
        staged: i64,
    },
    #[error("finalize export {export_id}: the file read back is not the file written: {detail}")]
    FileCheck {
        export_id: Uuid,
        detail: FileMismatch,
    },
}

impl FinalizeError {
    /// Errors about the data or the disk fail the export; errors reaching
    /// Postgres are retried by handing the task back.
    pub fn is_retryable(&self) -> bool {
        matches!(self, FinalizeError::Store { .. })
    }
}

/// The manifest written beside the CSV.
#[derive(Debug, Serialize)]
pub struct Manifest {
    pub export_id: Uuid,
    pub name: String,
    pub file: String,
    pub spec_hash: String,
    pub source: String,
    pub filters: serde_json::Value,
    pub columns: Vec<String>,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    /// What reading the file back before publishing it found.
    pub file_check: FileCheckReport,
    pub pages: i64,
    pub requests: i64,
    pub retries: i64,
    pub rate_limited: i64,
    pub rows_replaced: i64,
    pub duplicate_deliveries: i64,
    pub started_at: String,
    pub finished_at: String,
    /// What the counts were checked against, and what disagreed.
    pub verification: Verification,
    /// An incremental run's window over its cursor field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<ManifestWindow>,
    /// A backfill's windows that were split because the source could not
    /// serve them whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub splits: Vec<pagefleet_shared::store::PartitionSplit>,
    /// Pages an operator discarded and accepted as gaps: the file lacks
    /// their rows (and, for a chain page, the rows of the pages after it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<pagefleet_shared::store::Gap>,
    /// Where the time went: the wall time, fetching and landing (summed
    /// over pages), finalizing, each with its rows a second.
    pub phases: Phases,
}

/// `(from, to]` of an incremental run, in the cursor's own format.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ManifestWindow {
    pub cursor_field: String,
    pub from: String,
    /// Absent for an integer cursor (no upper bound).
    pub to: Option<String>,
}

impl ManifestWindow {
    fn of(spec: &pagefleet_shared::spec::ExportSpec) -> Option<ManifestWindow> {
        let incremental = spec.incremental.as_ref()?;
        let window = incremental.window?;
        Some(ManifestWindow {
            cursor_field: incremental.cursor_field.clone(),
            from: incremental.format.render(window.from),
            to: window.to.map(|to| incremental.format.render(to)),
        })
    }
}

/// What the finalizer did.
#[derive(Debug, Clone, PartialEq)]
pub enum FinalizeResult {
    Published {
        path: String,
        rows: u64,
    },
    /// Already completed, or not ready: nothing to do.
    Skipped,
    /// The data moved while it was read: these partitions are being read
    /// again (backwards) before the export is finalized.
    Rereading {
        partitions: Vec<i32>,
    },
}

pub async fn handle_finalize(
    ctx: &WorkerContext,
    export_id: Uuid,
) -> Result<FinalizeResult, FinalizeError> {
    let store_err = |source| FinalizeError::Store { export_id, source };
    let Some(work) = ctx
        .store
        .finalize_work(export_id)
        .await
        .map_err(store_err)?
    else {
        return Ok(FinalizeResult::Skipped);
    };
    if work.state != ExportState::Finalizing {
        return Ok(FinalizeResult::Skipped);
    }
    // One finalizer per export at a time; a second delivery of the task
    // leaves it to the one that holds the lock (which releases it by dying).
    let Some(lock) = ctx
        .store
        .try_lock_finalize(export_id)
        .await
        .map_err(store_err)?
    else {
        return Ok(FinalizeResult::Skipped);
    };
    let result = finalize_locked(ctx, &work).await;
    lock.release().await;
    result
}

async fn finalize_locked(
    ctx: &WorkerContext,
    work: &FinalizeWork,
) -> Result<FinalizeResult, FinalizeError> {
    let export_id = work.export_id;
    let store_err = |source| FinalizeError::Store { export_id, source };
    // Re-read under the lock: another finalizer may have just finished.
    match ctx
        .store
        .finalize_work(export_id)
        .await
        .map_err(store_err)?
    {
        Some(w) if w.state == ExportState::Finalizing => {}
        _ => return Ok(FinalizeResult::Skipped),
    }
    // Every page has landed and none runs while the export is finalizing:
    // the ledger read once here is the one the file is checked against.
    let ledgers = ctx.store.ledger(export_id).await.map_err(store_err)?;
    if let Some(reread) = reread_if_moved(ctx, work, &ledgers).await? {
        return Ok(reread);
    }
    match publish(ctx, work, &ledgers).await {
        Ok(published) => {
            let rows = published.rows as u64;
            let path = published.output_path.clone();
            let completed = ctx
                .store
                .complete_export(export_id, &published)
                .await
                .map_err(store_err)?;
            if completed && published.held.is_some() {
                metrics().artifacts_held.inc();
            }
            if completed {
                metrics().exports_finalized.inc();
                let seconds = (time::OffsetDateTime::now_utc() - work.started_at).as_seconds_f64();
                metrics().export_seconds.observe(seconds.max(0.0));
                tracing::info!(export = %export_id, %path, rows, "CSV published");
            }
            Ok(FinalizeResult::Published { path, rows })
        }
        Err(e) if e.is_retryable() => Err(e),
        Err(e) => {
            tracing::error!(export = %export_id, error = %e, "export failed in finalize");
            metrics().finalize_failures.inc();
            ctx.store
                .fail_export(export_id, &e.to_string())
                .await
                .map_err(store_err)?;
            Err(e)
        }
    }
}

/// Sends the partitions whose data moved under a shifting style back for a
/// backward pass instead of publishing; the pass's last page finalizes the
/// export again. `None` when there is nothing to re-read.
async fn reread_if_moved(
    ctx: &WorkerContext,
    work: &FinalizeWork,
    ledgers: &[PartitionLedger],
) -> Result<Option<FinalizeResult>, FinalizeError> {
    let export_id = work.export_id;
    let store_err = |source| FinalizeError::Store { export_id, source };
    let partitions = to_reread(ledgers, work.spec.pagination.style().under_drift());
    if partitions.is_empty() {
        return Ok(None);
    }
    let outbox_ids = ctx
        .store
        .plan_backward_pass(export_id, &partitions)
        .await
        .map_err(store_err)?;
    if outbox_ids.is_empty() {
        // Nothing could be read again: the verification says so.
        return Ok(None);
    }
    tracing::info!(export = %export_id, ?partitions, pages = outbox_ids.len(),
        "the source's counts moved while it was read; reading again, last page first");
    ctx.publish_outbox(&outbox_ids).await;
    Ok(Some(FinalizeResult::Rereading { partitions }))
}

/// Writes the CSV and its manifest. The order is what makes it crash-safe:
/// rows go to a temporary file, the count is checked against staging, the
/// file is read back and compared with what was written, fsynced and
/// renamed into place and the directory fsynced; only then is the manifest
/// written (the same way). A crash at any point leaves the final path empty
/// or whole, and the temporary files to the next try.
async fn publish(
    ctx: &WorkerContext,
    work: &FinalizeWork,
    ledgers: &[PartitionLedger],
) -> Result<Published, FinalizeError> {
    let export_id = work.export_id;
    let store_err = |source| FinalizeError::Store { export_id, source };
    let file_name = work.spec.file_name();
    let out = OutputDir::open(ctx, work)?;
    let names = TempNames::new(&file_name, export_id);
    remove_stale_temps(&out.dir, &names.prefix);
    let temp_path = out.dir.join(names.csv(pagefleet_shared::model::new_id()));
    let columns = match &work.spec.columns {
        Some(c) => c.clone(),
        None => ctx
            .store
            .staged_columns(export_id)
            .await
            .map_err(store_err)?,
    };
    let writing = std::time::Instant::now();
    // Staging is counted while the file is written, on a connection of its
    // own: every page landed before the export turned finalizing, and a
    // late delivery of one commits nothing (its task is done), so both see
    // the same rows.
    let (summary, staged) = tokio::join!(
        write_csv(ctx, work, &columns, &out, &temp_path),
        ctx.store.staged_count(export_id)
    );
    let summary = summary?;
    let written_in = writing.elapsed();
    let staged = match staged {
        Ok(staged) => staged,
        Err(source) => {
            discard_temp(&temp_path);
            return Err(store_err(source));
        }
    };
    // Checked before the rename: a file short of rows never takes the
    // final path.
    if let Err(e) = check_count(export_id, summary.rows, staged) {
        discard_temp(&temp_path);
        return Err(e);
    }
    let written = Written {
        rows: summary.rows,
        bytes: summary.bytes,
        sha256: summary.sha256,
    };
    let under_drift = work.spec.pagination.style().under_drift();
    let verification = reconcile(ledgers, written.rows, under_drift);
    let gaps = ctx.store.export_gaps(export_id).await.map_err(store_err)?;
    // Gaps an operator accepted explain the shortfall of their partitions:
    // the file is published, the export ends `completed_with_gaps`, and the
    // manifest lists them. A partition without a gap that disagrees is
    // held as ever.
    let gap_partitions: std::collections::BTreeSet<i32> =
        gaps.iter().map(|g| g.partition).collect();
    let held = match gaps.is_empty() || verification.fails_beyond(&gap_partitions) {
        true => held_because(&verification, work.spec.verify.on_mismatch),
        false => None,
    };
    report_verification(export_id, &verification, held.is_some());
    if !gaps.is_empty() {
        tracing::warn!(export = %export_id, gaps = gaps.len(), "publishing with accepted gaps");
    }
    // A file whose counts disagree never takes the final path (unless the
    // spec says to publish anyway): it is kept beside it, named so.
    let published_name = match held {
        Some(_) => held_file_name(&file_name),
        None => file_name.clone(),
    };
    let file = (summary.inner.into_inner()).map_err(|e| out.io_err(&temp_path, e.into_error()))?;
    // Read back before the rename, too: a file that is not exactly what was
    // written never takes the final path.
    let expected = ExpectedFile {
        rows_written: written.rows,
        rows_staged: staged,
        columns: columns.len(),
        header: work.spec.csv.header,
        bytes: written.bytes,
        sha256: &written.sha256,
    };
    let checking = std::time::Instant::now();
    let check = verify_temp(work, &columns, &out, &temp_path, &expected).await?;
    // Where finalizing's time goes, for `make bench` and for an operator
    // asking why a large export takes long to publish.
    tracing::info!(
        export = %export_id,
        rows = written.rows,
        write_s = written_in.as_secs_f64(),
        check_s = checking.elapsed().as_secs_f64(),
        "CSV written and read back"
    );
    let final_path = out.dir.join(&published_name);
    out.commit(file, temp_path, final_path.clone()).await?;

    let finished_at = time::OffsetDateTime::now_utc();
    let mut manifest = manifest(
        work,
        &published_name,
        columns,
        &written,
        &check,
        verification.clone(),
        finished_at,
    );
    manifest.gaps = gaps;
    if work.spec.backfill.is_some() {
        manifest.splits = ctx
            .store
            .partition_splits(export_id)
            .await
            .map_err(store_err)?;
    }
    let manifest_path = out.dir.join(manifest_file_name(&published_name));
    let manifest_temp = out
        .dir
        .join(names.manifest(pagefleet_shared::model::new_id()));
    out.write_json(&manifest, manifest_temp, &manifest_path)
        .await?;
    if held.is_none() {
        if let Some(latest) = &work.spec.output.latest {
            let pointer = LatestPointer {
                export_id,
                file: shown_path(&out.tenant_roots, &final_path),
                manifest: shown_path(&out.tenant_roots, &manifest_path),
                rows: written.rows,
                sha256: written.sha256.clone(),
                window: manifest.window.clone(),
                published_at: clock::rfc3339(finished_at),
            };
            // The CSV is published: a pointer that cannot be written is
            // the pointer's failure, not the export's.
            if let Err(e) = write_latest(ctx, work, latest, &pointer).await {
                tracing::warn!(export = %export_id, error = %e, "output.latest not updated");
            }
        }
    }
    Ok(Published {
        output_path: final_path.display().to_string(),
        manifest_path: manifest_path.display().to_string(),
        rows: written.rows as i64,
        bytes: written.bytes as i64,
        sha256: written.sha256,
        verification: serde_json::to_value(&verification)
            .map_err(|e| out.io_err(&manifest_path, e.into()))?,
        held,
        gaps: !manifest.gaps.is_empty(),
    })
}

/// What `output.latest` holds: the latest published run of the spec.
#[derive(Debug, Serialize)]
struct LatestPointer {
    export_id: Uuid,
    /// Paths as the tenant sees them (`<output>/…`).
    file: String,
    manifest: String,
    rows: u64,
    sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<ManifestWindow>,
    published_at: String,
}

/// Replaces the pointer atomically (a temporary file renamed over it), in
/// its own directory under the tenant's, created like the output's.
async fn write_latest(
    ctx: &WorkerContext,
    work: &FinalizeWork,
    latest: &str,
    pointer: &LatestPointer,
) -> Result<(), FinalizeError> {
    let path = Path::new(latest);
    let dir = match path.parent().map(|p| p.to_string_lossy().into_owned()) {
        Some(parent) if !parent.is_empty() => parent,
        _ => ".".to_string(),
    };
    // The spec was validated: the pointer's path ends in a plain file name.
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "latest.json".into());
    let out = OutputDir::open_dir(ctx, work, &dir)?;
    let target = out.dir.join(&name);
    let temp = out.dir.join(format!(
        ".{name}.{}.tmp",
        pagefleet_shared::model::new_id().simple()
    ));
    out.write_json(pointer, temp, &target).await
}

/// The shortfall that holds the file back, when the counts disagree and
/// the spec does not say to publish anyway.
fn held_because(verification: &Verification, on_mismatch: OnMismatch) -> Option<String> {
    if verification.agreed() || on_mismatch == OnMismatch::Publish {
        return None;
    }
    Some(
        verification
            .shortfall
            .clone()
            .unwrap_or_else(|| "the counts disagree with the source's".to_string()),
    )
}

/// Says loudly when the counts disagree, whatever becomes of the file.
fn report_verification(export_id: Uuid, verification: &Verification, held: bool) {
    let Some(shortfall) = &verification.shortfall else {
        return;
    };
    if held {
        tracing::error!(export = %export_id, %shortfall, "counts disagree; the CSV is held, not published");
    } else {
        tracing::warn!(export = %export_id, %shortfall, "counts disagree; publishing anyway (verify.on_mismatch = \"publish\")");
    }
}

/// Where a file whose counts disagree is kept: beside the final path, under
/// a name no `*.csv` glob picks up.
fn held_file_name(file_name: &str) -> String {
    format!("{file_name}.unverified")
}

/// The export's directory, resolved, and how errors name paths in it.
struct OutputDir {
    export_id: Uuid,
    dir: PathBuf,
    /// Under isolation, the tenant's directory as configured and as
    /// resolved; empty without isolation.
    tenant_roots: Vec<PathBuf>,
}

impl OutputDir {
    /// Creates the spec's output directory (inside the tenant's, under
    /// isolation) and resolves it.
    fn open(ctx: &WorkerContext, work: &FinalizeWork) -> Result<OutputDir, FinalizeError> {
        Self::open_dir(ctx, work, &work.spec.output.dir)
    }

    /// Like `open`, for `dir` (relative to the tenant's directory).
    fn open_dir(
        ctx: &WorkerContext,
        work: &FinalizeWork,
        output_dir: &str,
    ) -> Result<OutputDir, FinalizeError> {
        let export_id = work.export_id;
        let root = ctx.output_root.as_path();
        let mut out = OutputDir {
            export_id,
            dir: PathBuf::new(),
            tenant_roots: tenancy::tenant_roots(root, &work.tenant_id),
        };
        let dir =
            tenancy::create_output_dir(root, &work.tenant_id, output_dir).map_err(|e| match e {
                CreateDirError::Isolation(source) => FinalizeError::Isolation { export_id, source },
                CreateDirError::Io(path, source) => out.io_err(&path, source),
            })?;
        out.dir = fs::canonicalize(&dir).map_err(|e| out.io_err(&dir, e))?;
        // Belt and braces: whatever changed since the directory was made,
        // the file goes nowhere outside the tenant's directory.
        let tenant_root = root.join(&work.tenant_id);
        let tenant_root =
            fs::canonicalize(&tenant_root).map_err(|e| out.io_err(&tenant_root, e))?;
        if !out.dir.starts_with(&tenant_root) {
            return Err(FinalizeError::Isolation {
                export_id,
                source: tenancy::IsolationError::OutsideTenant {
                    dir: output_dir.to_string(),
                },
            });
        }
        Ok(out)
    }

    /// An I/O error naming `path` as the tenant may see it.
    fn io_err(&self, path: &Path, source: std::io::Error) -> FinalizeError {
        FinalizeError::Io {
            export_id: self.export_id,
            path: shown_path(&self.tenant_roots, path),
            source,
        }
    }

    /// Makes a finished temporary file the target: fsync, rename, fsync
    /// the directory (so the rename itself survives a crash). The
    /// temporary file is removed when that fails.
    async fn commit(
        &self,
        file: File,
        temp: PathBuf,
        target: PathBuf,
    ) -> Result<(), FinalizeError> {
        let (t, f, d) = (temp.clone(), target.clone(), self.dir.clone());
        tokio::task::spawn_blocking(move || sync_and_rename(file, &t, &f, &d))
            .await
            .map_err(|e| self.io_err(&target, std::io::Error::other(e)))?
            .map_err(|e| {
                discard_temp(&temp);
                self.io_err(&target, e)
            })
    }

    /// Writes a JSON file (a manifest, the latest pointer) the same way as
    /// the CSV: a temporary file, fsynced and renamed into place.
    async fn write_json(
        &self,
        value: &impl Serialize,
        temp: PathBuf,
        target: &Path,
    ) -> Result<(), FinalizeError> {
        // A struct of strings, numbers and JSON values always serializes;
        // the error path only keeps that from needing an unwrap.
        let text = serde_json::to_vec_pretty(value).map_err(|e| self.io_err(target, e.into()))?;
        let (f, d) = (target.to_path_buf(), self.dir.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let file = create_fresh(&temp)?;
            std::io::Write::write_all(&mut &file, &text)?;
            sync_and_rename(file, &temp, &f, &d)
        })
        .await
        .map_err(|e| self.io_err(target, std::io::Error::other(e)))?
        .map_err(|e| self.io_err(target, e))
    }
}

/// A new file at a path nothing holds yet: `O_CREAT | O_EXCL`, which also
/// refuses to follow a symlink planted there.
fn create_fresh(path: &Path) -> std::io::Result<File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// The final path may hold only a regular file (an earlier run's output):
/// a symlink, directory, pipe or device there is never replaced.
fn replaceable(target: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(target) {
        Ok(meta) if !meta.file_type().is_file() => Err(std::io::Error::other(
            "the final path holds something other than a regular file (a symlink, directory or device); nothing replaces it",
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn sync_and_rename(file: File, temp: &Path, target: &Path, dir: &Path) -> std::io::Result<()> {
    file.sync_all()?;
    drop(file);
    replaceable(target)?;
    fs::rename(temp, target)?;
    File::open(dir)?.sync_all()
}

/// Streams the staged rows into a new temporary file and flushes it;
/// removes the file when that fails.
async fn write_csv(
    ctx: &WorkerContext,
    work: &FinalizeWork,
    columns: &[String],
    out: &OutputDir,
    temp_path: &Path,
) -> Result<CsvSummary<BufWriter<File>>, FinalizeError> {
    let file = create_fresh(temp_path).map_err(|e| out.io_err(temp_path, e))?;
    let mut sink = CsvSink::new(BufWriter::with_capacity(1 << 20, file), &work.spec.csv);
    let shown_temp = shown_path(&out.tenant_roots, temp_path);
    let result = write_rows(ctx, work, columns, &mut sink, &shown_temp).await;
    let summary = result.and_then(|()| sink.finish().map_err(|e| out.io_err(temp_path, e)));
    if summary.is_err() {
        discard_temp(temp_path);
    }
    summary
}

/// Reads the flushed temporary file back with the strict reader (on a
/// blocking thread: it is file I/O over the whole file) and compares it
/// with what the writer and staging say it holds; removes the file when
/// that fails.
async fn verify_temp(
    work: &FinalizeWork,
    columns: &[String],
    out: &OutputDir,
    temp_path: &Path,
    expected: &ExpectedFile<'_>,
) -> Result<CsvCheck, FinalizeError> {
    let checked = read_back_and_compare(work, columns, out, temp_path, expected).await;
    if checked.is_err() {
        discard_temp(temp_path);
    }
    checked
}

async fn read_back_and_compare(
    work: &FinalizeWork,
    columns: &[String],
    out: &OutputDir,
    temp_path: &Path,
    expected: &ExpectedFile<'_>,
) -> Result<CsvCheck, FinalizeError> {
    let export_id = work.export_id;
    let limit = file_check::record_limit(work.spec.source.max_body_bytes, columns);
    let (path, options, cols) = (
        temp_path.to_path_buf(),
        work.spec.csv.clone(),
        columns.to_vec(),
    );
    let read =
        tokio::task::spawn_blocking(move || file_check::read_file(&path, &options, &cols, limit))
            .await
            .map_err(|e| out.io_err(temp_path, std::io::Error::other(e)))?
            .map_err(|e| out.io_err(temp_path, e))?;
    let file_err = |detail| FinalizeError::FileCheck { export_id, detail };
    let check = read.map_err(|e| file_err(e.into()))?;
    file_check::compare(&check, expected).map_err(file_err)?;
    Ok(check)
}

/// What the CSV file came to.
#[derive(Debug, Clone, PartialEq)]
struct Written {
    rows: u64,
    bytes: u64,
    sha256: String,
}

/// Every staged row must be in the file: fewer means rows went missing
/// between staging and the file, and such a file must not be published.
fn check_count(export_id: Uuid, written: u64, staged: i64) -> Result<(), FinalizeError> {
    if written as i64 == staged {
        Ok(())
    } else {
        Err(FinalizeError::CountMismatch {
            export_id,
            written,
            staged,
        })
    }
}

/// The manifest of a written file: the spec's identity, what the file
/// holds, what reading it back found, and the export's counters. Secret
/// query parameters show as `***`.
fn manifest(
    work: &FinalizeWork,
    file_name: &str,
    columns: Vec<String>,
    written: &Written,
    check: &CsvCheck,
    verification: Verification,
    finished_at: time::OffsetDateTime,
) -> Manifest {
    let spec = &work.spec;
    let query = redact::params(&spec.source.query);
    let partitions: Vec<_> = (spec.planned_partitions().iter())
        .map(|p| redact::params(&p.params))
        .collect();
    Manifest {
        export_id: work.export_id,
        name: spec.name.clone(),
        file: file_name.to_string(),
        spec_hash: work.spec_hash.clone(),
        source: redact::url_text(&format!(
            "{}{}",
            spec.source.base_url.trim_end_matches('/'),
            spec.source.path
        )),
        filters: serde_json::json!({ "query": query, "partitions": partitions }),
        columns,
        rows: written.rows,
        bytes: written.bytes,
        sha256: written.sha256.clone(),
        file_check: FileCheckReport::from(check),
        pages: work.pages,
        requests: work.requests,
        retries: work.retries,
        rate_limited: work.rate_limited,
        rows_replaced: work.rows_replaced,
        duplicate_deliveries: work.duplicate_deliveries,
        started_at: clock::rfc3339(work.started_at),
        finished_at: clock::rfc3339(finished_at),
        verification,
        window: ManifestWindow::of(spec),
        splits: Vec::new(),
        gaps: Vec::new(),
        phases: phases(work, written.rows, finished_at),
    }
}

/// The export's phases, up to `finished_at`.
fn phases(work: &FinalizeWork, rows: u64, finished_at: time::OffsetDateTime) -> Phases {
    let since = |at: time::OffsetDateTime| (finished_at - at).as_seconds_f64();
    let finalizing = work.finalizing_since.map_or(0.0, since);
    Phases::of(
        rows,
        since(work.started_at),
        work.fetching_s,
        work.landing_s,
        finalizing,
    )
}

fn manifest_file_name(file_name: &str) -> String {
    format!("{file_name}.manifest.json")
}

/// The names of an export's temporary files. They share a prefix naming
/// the file and the export, so a later attempt finds (and removes) what an
/// interrupted one left, and never another export's.
struct TempNames {
    prefix: String,
}

impl TempNames {
    fn new(file_name: &str, export_id: Uuid) -> TempNames {
        TempNames {
            prefix: format!(".{file_name}.{export_id}."),
        }
    }

    fn csv(&self, attempt: Uuid) -> String {
        format!("{}{attempt}.tmp", self.prefix)
    }

    fn manifest(&self, attempt: Uuid) -> String {
        format!("{}{attempt}.manifest.tmp", self.prefix)
    }
}

/// Whether a directory entry is a temporary file with this prefix.
fn is_stale_temp(name: &str, prefix: &str) -> bool {
    name.starts_with(prefix) && name.ends_with(".tmp")
}

async fn write_rows(
    ctx: &WorkerContext,
    work: &FinalizeWork,
    columns: &[String],
    sink: &mut CsvSink<BufWriter<File>>,
    shown_temp: &str,
) -> Result<(), FinalizeError> {
    let export_id = work.export_id;
    let io_err = |source| FinalizeError::Io {
        export_id,
        path: shown_temp.to_string(),
        source,
    };
    if work.spec.csv.header {
        sink.write_header(columns).map_err(io_err)?;
    }
    let rows = ctx
        .store
        .staged_rows(export_id)
        .await
        .map_err(|source| FinalizeError::Store { export_id, source })?;
    let format = RecordFormat::new(&work.spec.csv);
    let written = staged_csv::write_staged(export_id, rows, format, columns.into(), sink).await;
    written.map_err(|e| match e {
        RowsError::Store(source) => FinalizeError::Store { export_id, source },
        RowsError::BadRow { key, message } => FinalizeError::BadRow {
            export_id,
            key,
            message,
        },
        RowsError::Io(source) => io_err(source),
        RowsError::Formatter(message) => FinalizeError::Formatter { export_id, message },
    })
}

/// A path for an error message: as is without isolation, else relative to
/// the tenant's directory (`tenant_roots` holds it as configured and as
/// resolved).
fn shown_path(tenant_roots: &[PathBuf], path: &Path) -> String {
    if tenant_roots.is_empty() {
        return path.display().to_string();
    }
    tenant_roots
        .iter()
        .find_map(|root| path.strip_prefix(root).ok())
        .map(|rel| format!("<output>/{}", rel.display()))
        .unwrap_or_else(|| "<output>".to_string())
}

/// Removes a temporary file after a failure. Best effort: one left behind
/// is never published, and the next attempt's `remove_stale_temps` takes it.
fn discard_temp(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        tracing::debug!(error = %e, path = %path.display(), "temporary file not removed");
    }
}

/// Temporary files of an earlier, interrupted attempt at this export.
/// Best effort, like `discard_temp`: what stays is only disk space.
fn remove_stale_temps(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if is_stale_temp(&name, prefix) {
            if let Err(e) = fs::remove_file(entry.path()) {
                // Harmless: the next attempt writes a temporary file of its own.
                tracing::debug!(error = %e, file = ?entry.file_name(), "cannot remove a stale temporary CSV");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_created_fresh_and_only_a_regular_file_is_replaced() {
        let dir = std::env::temp_dir().join(format!("pagefleet-fresh-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let outside = dir.join("outside");
        fs::write(&outside, "keep").unwrap();
        // A symlink planted at a temporary file's name is not followed.
        std::os::unix::fs::symlink(&outside, dir.join("planted")).unwrap();
        assert!(create_fresh(&dir.join("planted")).is_err());
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep");
        // A symlink or a directory at the final path is not replaced.
        std::os::unix::fs::symlink(&outside, dir.join("final.csv")).unwrap();
        fs::create_dir_all(dir.join("final-dir.csv")).unwrap();
        for target in ["final.csv", "final-dir.csv"] {
            let temp = dir.join(format!(".{target}.tmp"));
            let file = create_fresh(&temp).unwrap();
            let err = sync_and_rename(file, &temp, &dir.join(target), &dir).unwrap_err();
            assert!(err.to_string().contains("regular file"), "{target}: {err}");
        }
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep");
        // An earlier run's regular file is replaced.
        fs::write(dir.join("earlier.csv"), "old").unwrap();
        let temp = dir.join(".earlier.tmp");
        let file = create_fresh(&temp).unwrap();
        std::io::Write::write_all(&mut &file, b"new").unwrap();
        sync_and_rename(file, &temp, &dir.join("earlier.csv"), &dir).unwrap();
        assert_eq!(fs::read_to_string(dir.join("earlier.csv")).unwrap(), "new");
        fs::remove_dir_all(&dir).unwrap();
    }
    use pagefleet_shared::flatten::Row;
    use pagefleet_shared::pagination::UnderDrift;
    use pagefleet_shared::spec::ExportSpec;

    const SPEC: &str = r#"
name = "orders"
primary_key = ["id"]

[source]
base_url = "https://api.example.com/v2/"
path = "/orders"
query = { status = "open", api_key = "hunter2" }

[rate_limit]
rate = 5
burst = 5

[output]
dir = "out"

[pagination]
style = "page_number"
page_param = "page"
size_param = "per_page"

[[partitions]]
params = { region = "eu" }

[[partitions]]
params = { region = "us", signature = "partition-s3cr3t" }
"#;

    fn work() -> FinalizeWork {
        FinalizeWork {
            export_id: Uuid::from_u128(7),
            tenant_id: "default".into(),
            state: ExportState::Finalizing,
            spec: ExportSpec::from_toml(SPEC).unwrap(),
            spec_hash: "abc123".into(),
            pages: 12,
            requests: 15,
            retries: 3,
            rate_limited: 2,
            rows_replaced: 4,
            duplicate_deliveries: 1,
            started_at: time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            output_path: None,
            fetching_s: 30.0,
            landing_s: 5.9,
            finalizing_since: Some(
                time::OffsetDateTime::from_unix_timestamp(1_700_000_080).unwrap(),
            ),
        }
    }

    fn written() -> Written {
        Written {
            rows: 1180,
            bytes: 54321,
            sha256: "f00d".into(),
        }
    }

    fn checked() -> CsvCheck {
        CsvCheck {
            records: 1180,
            fields_per_row: 2,
            header: true,
            bytes: 54321,
            sha256: "f00d".into(),
        }
    }

    #[test]
    fn the_manifest_describes_the_file_and_the_export() {
        let finished = time::OffsetDateTime::from_unix_timestamp(1_700_000_090).unwrap();
        let columns = vec!["id".to_string(), "total".to_string()];
        let m = manifest(
            &work(),
            "orders.csv",
            columns.clone(),
            &written(),
            &checked(),
            reconcile(&[], 3, UnderDrift::Shifts),
            finished,
        );
        assert_eq!(m.export_id, Uuid::from_u128(7));
        assert_eq!(m.name, "orders");
        assert_eq!(m.file, "orders.csv");
        assert_eq!(m.spec_hash, "abc123");
        // One slash between the base URL and the path.
        assert_eq!(m.source, "https://api.example.com/v2/orders");
        assert_eq!(m.columns, columns);
        assert_eq!((m.rows, m.bytes, m.sha256.as_str()), (1180, 54321, "f00d"));
        assert_eq!(
            (m.pages, m.requests, m.retries, m.rate_limited),
            (12, 15, 3, 2)
        );
        assert_eq!((m.rows_replaced, m.duplicate_deliveries), (4, 1));
        assert_eq!(m.started_at, "2023-11-14T22:13:20Z");
        assert_eq!(m.finished_at, "2023-11-14T22:14:50Z");
        // 1180 rows: 90 s end to end, 10 s finalizing, 5.9 s landing.
        assert_eq!(m.phases.wall.seconds, 90.0);
        assert_eq!(m.phases.finalizing.rows_per_s, Some(118.0));
        assert_eq!(m.phases.landing.rows_per_s, Some(200.0));
        assert_eq!(m.phases.fetching.seconds, 30.0);
    }

    #[test]
    fn the_manifest_records_what_reading_the_file_back_found() {
        let finished = time::OffsetDateTime::from_unix_timestamp(1_700_000_090).unwrap();
        let m = manifest(
            &work(),
            "orders.csv",
            vec![],
            &written(),
            &checked(),
            reconcile(&[], 3, UnderDrift::Shifts),
            finished,
        );
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(
            json["file_check"],
            serde_json::json!({
                "reader": "rfc4180-strict",
                "records": 1180,
                "fields_per_row": 2,
                "header": true,
                "bytes": 54321,
                "sha256": "f00d",
            })
        );
        // The fields that were there before are still there.
        for field in ["rows", "bytes", "sha256", "columns", "spec_hash"] {
            assert!(json.get(field).is_some(), "{field}");
        }
    }

    #[test]
    fn the_manifest_hides_secret_query_and_partition_parameters() {
        let finished = time::OffsetDateTime::from_unix_timestamp(1_700_000_090).unwrap();
        let m = manifest(
            &work(),
            "orders.csv",
            vec![],
            &written(),
            &checked(),
            reconcile(&[], 3, UnderDrift::Shifts),
            finished,
        );
        assert_eq!(
            m.filters,
            serde_json::json!({
                "query": { "api_key": "***", "status": "open" },
                "partitions": [{ "region": "eu" }, { "region": "us", "signature": "***" }],
            })
        );
        let text = serde_json::to_string(&m).unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("partition-s3cr3t"),
            "{text}"
        );
        let text = serde_json::to_string(&m).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn a_count_short_of_staging_is_refused() {
        let id = Uuid::from_u128(7);
        assert!(matches!(check_count(id, 10, 10), Ok(())));
        match check_count(id, 9, 10) {
            Err(FinalizeError::CountMismatch {
                export_id,
                written,
                staged,
            }) => assert_eq!((export_id, written, staged), (id, 9, 10)),
            other => panic!("{other:?}"),
        }
        assert!(check_count(id, 11, 10).is_err(), "more rows is as wrong");
    }

    #[test]
    fn only_an_unreachable_store_is_retried() {
        let id = Uuid::from_u128(7);
        let mismatch = check_count(id, 1, 2).unwrap_err();
        assert!(!mismatch.is_retryable());
        let io = FinalizeError::Io {
            export_id: id,
            path: "<output>/out".into(),
            source: std::io::Error::other("disk full"),
        };
        assert!(!io.is_retryable());
        let check = FinalizeError::FileCheck {
            export_id: id,
            detail: FileMismatch::Bytes {
                read: 1,
                written: 2,
            },
        };
        assert!(!check.is_retryable());
    }

    /// A temporary CSV of `rows` one-column rows in a directory of its own.
    fn temp_csv(rows: u64) -> (OutputDir, PathBuf, Written) {
        let dir = std::env::temp_dir().join(format!("pagefleet-verify-{}", Uuid::now_v7()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".orders.csv.tmp");
        let mut sink = CsvSink::new(Vec::new(), &work().spec.csv);
        let columns = vec!["id".to_string()];
        sink.write_header(&columns).unwrap();
        for i in 0..rows {
            let cell = pagefleet_shared::flatten::Cell::Text(format!("v,{i}"));
            let row = Row::from([("id".to_string(), cell)]);
            sink.write_row(&columns, &row).unwrap();
        }
        let summary = sink.finish().unwrap();
        fs::write(&path, &summary.inner).unwrap();
        let out = OutputDir {
            export_id: work().export_id,
            dir,
            tenant_roots: vec![],
        };
        let written = Written {
            rows: summary.rows,
            bytes: summary.bytes,
            sha256: summary.sha256,
        };
        (out, path, written)
    }

    fn expect(written: &Written) -> ExpectedFile<'_> {
        ExpectedFile {
            rows_written: written.rows,
            rows_staged: written.rows as i64,
            columns: 1,
            header: true,
            bytes: written.bytes,
            sha256: &written.sha256,
        }
    }

    #[tokio::test]
    async fn a_file_that_reads_back_as_written_is_kept() {
        let (out, path, written) = temp_csv(3);
        let columns = vec!["id".to_string()];
        let check = verify_temp(&work(), &columns, &out, &path, &expect(&written))
            .await
            .unwrap();
        assert_eq!((check.records, check.bytes), (3, written.bytes));
        assert!(path.exists());
        fs::remove_dir_all(&out.dir).unwrap();
    }

    #[tokio::test]
    async fn a_file_that_does_not_read_back_as_written_is_removed() {
        let columns = vec!["id".to_string()];
        // Damaged after it was written: a bare LF where a CRLF was.
        let (out, path, written) = temp_csv(3);
        let mut bytes = fs::read(&path).unwrap();
        let crlf = bytes.windows(2).position(|w| w == b"\r\n").unwrap();
        bytes.remove(crlf);
        fs::write(&path, &bytes).unwrap();
        match verify_temp(&work(), &columns, &out, &path, &expect(&written)).await {
            Err(e @ FinalizeError::FileCheck { .. }) => {
                assert!(e.to_string().contains("line feed"), "{e}");
                assert!(!e.is_retryable());
            }
            other => panic!("{other:?}"),
        }
        assert!(!path.exists());
        fs::remove_dir_all(&out.dir).unwrap();

        // Well formed, but not what was written: one row short.
        let (out, path, written) = temp_csv(3);
        let (_, short, _) = temp_csv(2);
        fs::copy(&short, &path).unwrap();
        fs::remove_dir_all(short.parent().unwrap()).unwrap();
        match verify_temp(&work(), &columns, &out, &path, &expect(&written)).await {
            Err(FinalizeError::FileCheck {
                detail: FileMismatch::Records { read: 2, .. },
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(!path.exists());
        fs::remove_dir_all(&out.dir).unwrap();
    }

    #[test]
    fn temp_names_belong_to_their_export_and_are_found_again() {
        let names = TempNames::new("orders.csv", Uuid::from_u128(7));
        let attempt = Uuid::from_u128(9);
        let csv = names.csv(attempt);
        let manifest = names.manifest(attempt);
        assert_eq!(
            csv,
            format!(".orders.csv.{}.{attempt}.tmp", Uuid::from_u128(7))
        );
        assert!(manifest.ends_with(".manifest.tmp"));
        assert!(is_stale_temp(&csv, &names.prefix));
        assert!(is_stale_temp(&manifest, &names.prefix));
        // Neither the published files nor another export's temporaries.
        assert!(!is_stale_temp("orders.csv", &names.prefix));
        assert!(!is_stale_temp(
            &manifest_file_name("orders.csv"),
            &names.prefix
        ));
        let other = TempNames::new("orders.csv", Uuid::from_u128(8));
        assert!(!is_stale_temp(&other.csv(attempt), &names.prefix));
        assert_eq!(manifest_file_name("orders.csv"), "orders.csv.manifest.json");
    }

    #[test]
    fn stale_temps_are_removed_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("pagefleet-finalize-{}", Uuid::now_v7()));
        fs::create_dir_all(&dir).unwrap();
        let names = TempNames::new("orders.csv", Uuid::from_u128(7));
        let stale = dir.join(names.csv(Uuid::from_u128(1)));
        let keep = ["orders.csv", "orders.csv.manifest.json"].map(|n| dir.join(n));
        for path in keep.iter().chain([&stale]) {
            fs::write(path, "x").unwrap();
        }
        remove_stale_temps(&dir, &names.prefix);
        assert!(!stale.exists());
        assert!(keep.iter().all(|p| p.exists()));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn error_paths_are_relative_to_the_tenant_under_isolation() {
        let file = Path::new("/srv/out/acme/reports/x.csv");
        assert_eq!(shown_path(&[], file), "/srv/out/acme/reports/x.csv");
        let roots = [PathBuf::from("/srv/out/acme"), PathBuf::from("/data/acme")];
        assert_eq!(shown_path(&roots, file), "<output>/reports/x.csv");
        assert_eq!(
            shown_path(&roots, Path::new("/data/acme/y.csv")),
            "<output>/y.csv"
        );
        assert_eq!(shown_path(&roots, Path::new("/etc/passwd")), "<output>");
    }
}
