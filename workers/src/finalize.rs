//! The finalizer: staged rows → the published CSV and its manifest.
//!
//! Rows stream from Postgres in key order, in batches, into a temporary file
//! beside the target, counted and hashed as they are written. The count is
//! checked against staging, the file fsynced and renamed into place, and the
//! directory fsynced, so the final path holds either nothing or the whole
//! file. The manifest is written the same way, then the export completes.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use serde::Serialize;
use uuid::Uuid;

use pagefleet_shared::csv_out::CsvSink;
use pagefleet_shared::flatten::Row;
use pagefleet_shared::model::ExportState;
use pagefleet_shared::source;
use pagefleet_shared::store::{FinalizeWork, Published, StoreError};
use pagefleet_shared::telemetry::metrics;
use pagefleet_shared::tenancy::{self, CreateDirError};

use crate::context::WorkerContext;

/// Rows fetched from Postgres per batch.
const BATCH: i64 = 5_000;

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
    pub pages: i64,
    pub requests: i64,
    pub retries: i64,
    pub rate_limited: i64,
    pub rows_replaced: i64,
    pub duplicate_deliveries: i64,
    pub started_at: String,
    pub finished_at: String,
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
    match publish(ctx, work).await {
        Ok(published) => {
            let rows = published.rows as u64;
            let path = published.output_path.clone();
            let completed = ctx
                .store
                .complete_export(export_id, &published)
                .await
                .map_err(store_err)?;
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
            ctx.store
                .fail_export(export_id, &e.to_string())
                .await
                .map_err(store_err)?;
            Err(e)
        }
    }
}

async fn publish(ctx: &WorkerContext, work: &FinalizeWork) -> Result<Published, FinalizeError> {
    let export_id = work.export_id;
    let spec = &work.spec;
    let store_err = |source| FinalizeError::Store { export_id, source };
    let file_name = spec.file_name();
    // Under isolation the tenant reads these errors: name paths relative to
    // its own directory, never the server's layout.
    let tenant_roots: Vec<PathBuf> = ctx
        .output_root
        .as_ref()
        .map(|root| {
            let raw = root.join(&work.tenant_id);
            let canonical = fs::canonicalize(&raw).ok();
            std::iter::once(raw).chain(canonical).collect()
        })
        .unwrap_or_default();
    let io_err = |path: &Path, source| FinalizeError::Io {
        export_id,
        path: shown_path(&tenant_roots, path),
        source,
    };
    let dir = tenancy::create_output_dir(
        ctx.output_root.as_deref(),
        &work.tenant_id,
        &spec.output.dir,
    )
    .map_err(|e| match e {
        CreateDirError::Isolation(source) => FinalizeError::Isolation { export_id, source },
        CreateDirError::Io(path, source) => io_err(&path, source),
    })?;
    let dir = fs::canonicalize(&dir).map_err(|e| io_err(&dir, e))?;
    if let Some(root) = &ctx.output_root {
        // Belt and braces: whatever changed since the directory was made,
        // the file goes nowhere outside the tenant's directory.
        let tenant_root = root.join(&work.tenant_id);
        let tenant_root = fs::canonicalize(&tenant_root).map_err(|e| io_err(&tenant_root, e))?;
        if !dir.starts_with(&tenant_root) {
            return Err(FinalizeError::Isolation {
                export_id,
                source: tenancy::IsolationError::OutsideTenant {
                    dir: spec.output.dir.clone(),
                },
            });
        }
    }
    let final_path = dir.join(&file_name);
    let temp_prefix = format!(".{file_name}.{export_id}.");
    remove_stale_temps(&dir, &temp_prefix);
    let temp_path = dir.join(format!(
        "{temp_prefix}{}.tmp",
        pagefleet_shared::model::new_id()
    ));

    let columns = match &spec.columns {
        Some(c) => c.clone(),
        None => ctx
            .store
            .staged_columns(export_id)
            .await
            .map_err(store_err)?,
    };
    let file = File::create(&temp_path).map_err(|e| io_err(&temp_path, e))?;
    let mut sink = CsvSink::new(BufWriter::with_capacity(1 << 20, file), &spec.csv);
    let shown_temp = shown_path(&tenant_roots, &temp_path);
    let result = write_rows(ctx, work, &columns, &mut sink, &shown_temp).await;
    let summary = result.and_then(|()| sink.finish().map_err(|e| io_err(&temp_path, e)));
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            let _ = fs::remove_file(&temp_path);
            return Err(e);
        }
    };
    let staged = ctx.store.staged_count(export_id).await.map_err(store_err)?;
    if summary.rows as i64 != staged {
        let _ = fs::remove_file(&temp_path);
        return Err(FinalizeError::CountMismatch {
            export_id,
            written: summary.rows,
            staged,
        });
    }
    let file = summary
        .inner
        .into_inner()
        .map_err(|e| io_err(&temp_path, e.into_error()))?;
    let sync = |file: File, temp: PathBuf, target: PathBuf, dir: PathBuf| -> std::io::Result<()> {
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, &target)?;
        File::open(&dir)?.sync_all()
    };
    {
        let (t, f, d) = (temp_path.clone(), final_path.clone(), dir.clone());
        tokio::task::spawn_blocking(move || sync(file, t, f, d))
            .await
            .map_err(|e| io_err(&final_path, std::io::Error::other(e)))?
            .map_err(|e| {
                let _ = fs::remove_file(&temp_path);
                io_err(&final_path, e)
            })?;
    }

    let finished_at = time::OffsetDateTime::now_utc();
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let manifest = Manifest {
        export_id,
        name: spec.name.clone(),
        file: file_name.clone(),
        spec_hash: work.spec_hash.clone(),
        source: format!(
            "{}{}",
            spec.source.base_url.trim_end_matches('/'),
            spec.source.path
        ),
        filters: serde_json::json!({
            "query": spec.source.query.iter().map(|(k, v)| {
                let shown = if source::is_secret_param(k) { "***" } else { v.as_str() };
                (k.clone(), shown.to_string())
            }).collect::<std::collections::BTreeMap<_, _>>(),
            "partitions": spec.partitions.iter().map(|p| &p.params).collect::<Vec<_>>(),
        }),
        columns: columns.clone(),
        rows: summary.rows,
        bytes: summary.bytes,
        sha256: summary.sha256.clone(),
        pages: work.pages,
        requests: work.requests,
        retries: work.retries,
        rate_limited: work.rate_limited,
        rows_replaced: work.rows_replaced,
        duplicate_deliveries: work.duplicate_deliveries,
        started_at: rfc3339(work.started_at),
        finished_at: rfc3339(finished_at),
    };
    let manifest_path = dir.join(format!("{file_name}.manifest.json"));
    let manifest_temp = dir.join(format!(
        "{temp_prefix}{}.manifest.tmp",
        pagefleet_shared::model::new_id()
    ));
    let text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    {
        let (t, f, d) = (manifest_temp.clone(), manifest_path.clone(), dir.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let file = File::create(&t)?;
            std::io::Write::write_all(&mut &file, &text)?;
            sync(file, t, f, d)
        })
        .await
        .map_err(|e| io_err(&manifest_path, std::io::Error::other(e)))?
        .map_err(|e| io_err(&manifest_path, e))?;
    }
    Ok(Published {
        output_path: final_path.display().to_string(),
        manifest_path: manifest_path.display().to_string(),
        rows: summary.rows as i64,
        bytes: summary.bytes as i64,
        sha256: summary.sha256,
    })
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
    let mut after: Option<String> = None;
    loop {
        let batch = ctx
            .store
            .staged_rows_after(export_id, after.as_deref(), BATCH)
            .await
            .map_err(|source| FinalizeError::Store { export_id, source })?;
        let Some((last_key, _)) = batch.last() else {
            break;
        };
        let last_key = last_key.clone();
        // Writing a batch is a few MB of buffered writes: cheap enough to do
        // inline rather than shipping rows to a blocking thread.
        for (key, data) in &batch {
            let row: Row = serde_json::from_str(data).map_err(|e| FinalizeError::BadRow {
                export_id,
                key: key.clone(),
                message: e.to_string(),
            })?;
            sink.write_row(columns, &row).map_err(io_err)?;
        }
        after = Some(last_key);
        if (batch.len() as i64) < BATCH {
            break;
        }
    }
    Ok(())
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

/// Temporary files of an earlier, interrupted attempt at this export.
fn remove_stale_temps(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(prefix) && name.ends_with(".tmp") {
            let _ = fs::remove_file(entry.path());
        }
    }
}
