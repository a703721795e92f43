//! The finalizer's statements: what to publish, the staged rows in key
//! order (streamed, never all in memory), the pages discarded as gaps, and
//! the record of the published file.

use std::pin::Pin;

use futures::StreamExt;
use tokio_postgres::binary_copy::{BinaryCopyOutRow, BinaryCopyOutStream};
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::exports::parse_spec;
use super::{Store, StoreError};
use crate::lifecycle;
use crate::model::ExportState;
use crate::spec::ExportSpec;

#[derive(Debug, Clone)]
pub struct FinalizeWork {
    pub export_id: Uuid,
    pub tenant_id: String,
    pub state: ExportState,
    pub spec: ExportSpec,
    pub spec_hash: String,
    pub pages: i64,
    pub requests: i64,
    pub retries: i64,
    pub rate_limited: i64,
    pub rows_replaced: i64,
    pub duplicate_deliveries: i64,
    pub started_at: time::OffsetDateTime,
    pub output_path: Option<String>,
    /// Its pages' time fetching and landing, summed, in seconds.
    pub fetching_s: f64,
    pub landing_s: f64,
    /// When it turned `finalizing` (this time).
    pub finalizing_since: Option<time::OffsetDateTime>,
}

/// The published file, as recorded when the export completes.
#[derive(Debug, Clone)]
pub struct Published {
    pub output_path: String,
    pub manifest_path: String,
    pub rows: i64,
    pub bytes: i64,
    pub sha256: String,
    /// The reconciliation, as the manifest shows it.
    pub verification: serde_json::Value,
    /// `Some(shortfall)` when the counts disagree and the file is held
    /// beside its final path: the export ends `unverified`, not `completed`.
    pub held: Option<String>,
    /// Published without discarded pages: the export ends
    /// `completed_with_gaps`.
    pub gaps: bool,
}

/// A page an operator discarded, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Gap {
    pub partition: i32,
    pub page: i64,
    /// The partition's query parameters (a window's bounds, say).
    pub params: serde_json::Value,
    pub task: Uuid,
    pub dead_letter: Option<Uuid>,
    pub class: Option<String>,
    /// Why the page died.
    pub error: Option<String>,
    pub discarded_by: Option<String>,
    /// Why the operator discarded it.
    pub reason: Option<String>,
    /// A chain page: the pages after it were never planned either.
    pub chain: bool,
}

impl Store {
    pub async fn finalize_work(&self, export_id: Uuid) -> Result<Option<FinalizeWork>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT state, spec, spec_hash, pages_landed, requests, retries, rate_limited,
                        rows_replaced, duplicate_deliveries, COALESCE(started_at, created_at) AS started_at,
                        output_path,
                        tenant_id, time_fetching_us, time_landing_us, finalizing_since
                   FROM exports WHERE id = $1",
                &[&export_id],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let state: String = row.try_get("state")?;
        Ok(Some(FinalizeWork {
            export_id,
            state: state.parse()?,
            spec: parse_spec(export_id, row.try_get("spec")?)?,
            spec_hash: row.try_get("spec_hash")?,
            pages: row.try_get("pages_landed")?,
            requests: row.try_get("requests")?,
            retries: row.try_get("retries")?,
            rate_limited: row.try_get("rate_limited")?,
            rows_replaced: row.try_get("rows_replaced")?,
            duplicate_deliveries: row.try_get("duplicate_deliveries")?,
            started_at: row.try_get("started_at")?,
            output_path: row.try_get("output_path")?,
            tenant_id: row.try_get("tenant_id")?,
            fetching_s: row.try_get::<_, i64>("time_fetching_us")? as f64 / 1e6,
            landing_s: row.try_get::<_, i64>("time_landing_us")? as f64 / 1e6,
            finalizing_since: row.try_get("finalizing_since")?,
        }))
    }

    /// Inferred columns: the sorted union of every staged row's fields.
    pub async fn staged_columns(&self, export_id: Uuid) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name FROM export_columns WHERE export_id = $1 ORDER BY name",
                &[&export_id],
            )
            .await?;
        rows.iter().map(|r| Ok(r.try_get("name")?)).collect()
    }

    pub async fn staged_count(&self, export_id: Uuid) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) AS staged FROM staged_rows WHERE export_id = $1",
                &[&export_id],
            )
            .await?;
        Ok(row.try_get("staged")?)
    }

    /// The staged rows (key, row JSON) in key order, streamed by one
    /// binary `COPY … TO STDOUT`: one statement and one snapshot for the
    /// whole file, and flat memory at any row count (the connection reads
    /// on only as fast as the rows are taken). Paging by key instead costs
    /// a round trip a batch, and a statement with an optional bound
    /// (`$2 IS NULL OR row_key > $2`) is planned, once generic, as a scan
    /// from the first key every time: quadratic in the rows.
    ///
    /// The rows must come from the key's index as they are read: a plan that
    /// sorts first reads every row before it sends one (a second a million
    /// rows here, with the formatting waiting), and the planner picks one
    /// whenever staging's statistics lag its rows, as they do right after
    /// an export lands. Sorting is turned off for the statement's session,
    /// on a connection taken out of the pool so the setting ends with it.
    pub async fn staged_rows(&self, export_id: Uuid) -> Result<StagedRows, StoreError> {
        let client = deadpool_postgres::Object::take(self.client().await?);
        client.batch_execute("SET enable_sort = off").await?;
        // COPY takes no parameters; the id is a `Uuid`, formatted here.
        let sql = format!(
            "COPY (SELECT row_key, data FROM staged_rows
                    WHERE export_id = '{export_id}' ORDER BY row_key)
             TO STDOUT (FORMAT binary)"
        );
        let copy = client.copy_out(sql.as_str()).await?;
        Ok(StagedRows {
            rows: Box::pin(BinaryCopyOutStream::new(copy, &[Type::TEXT, Type::TEXT])),
            ended: false,
            _client: client,
        })
    }

    /// Records the published (or held) file and ends the export:
    /// `completed`, or `unverified` with the shortfall as its error. False
    /// when the export was no longer finalizing (another finalizer won).
    pub async fn complete_export(
        &self,
        export_id: Uuid,
        published: &Published,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let state = lifecycle::finished_state(published.gaps, published.held.is_some());
        let n = client
            .execute(
                "UPDATE exports
                    SET state = $9,
                        error = $8, output_path = $2, manifest_path = $3, csv_rows = $4,
                        csv_bytes = $5, csv_sha256 = $6, verification = $7,
                        finished_at = now(), updated_at = now()
                  WHERE id = $1 AND state = 'finalizing'",
                &[
                    &export_id,
                    &published.output_path,
                    &published.manifest_path,
                    &published.rows,
                    &published.bytes,
                    &published.sha256,
                    &published.verification,
                    &published.held,
                    &state.as_str(),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// The pages of the export an operator discarded, in partition and
    /// page order, each with its latest dead letter.
    pub async fn export_gaps(&self, export_id: Uuid) -> Result<Vec<Gap>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT t.id, t.partition_no, t.page_no, t.role, p.params, d.id AS letter, d.class,
                        d.reason, d.resolved_by, d.resolution_reason
                   FROM page_tasks t
                   JOIN partitions p ON p.export_id = t.export_id AND p.partition_no = t.partition_no
                   LEFT JOIN LATERAL (SELECT * FROM dead_letters d WHERE d.task_id = t.id
                                       ORDER BY d.id DESC LIMIT 1) d ON true
                  WHERE t.export_id = $1 AND t.state = 'discarded'
                  ORDER BY t.partition_no, t.page_no",
                &[&export_id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let role: String = r.try_get("role")?;
                Ok(Gap {
                    partition: r.try_get("partition_no")?,
                    page: r.try_get("page_no")?,
                    params: r.try_get("params")?,
                    task: r.try_get("id")?,
                    dead_letter: r.try_get("letter")?,
                    class: r.try_get("class")?,
                    error: r.try_get("reason")?,
                    discarded_by: r.try_get("resolved_by")?,
                    reason: r.try_get("resolution_reason")?,
                    chain: role == "chain",
                })
            })
            .collect()
    }

    /// The CSV could not be produced: record why.
    pub async fn fail_export(&self, export_id: Uuid, error: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE exports SET state = 'failed', error = $2, finished_at = now(), updated_at = now()
                  WHERE id = $1 AND state = 'finalizing'",
                &[&export_id, &error],
            )
            .await?;
        Ok(())
    }
}

/// A session-level advisory lock on one export's finalize, held on its own
/// connection. Dropping it without `release` closes that connection, which
/// releases the lock too (as does the process dying).
pub struct FinalizeLock {
    client: Option<deadpool_postgres::Client>,
    key: i64,
}

impl FinalizeLock {
    pub async fn release(mut self) {
        if let Some(client) = self.client.take() {
            if client
                .execute("SELECT pg_advisory_unlock($1)", &[&self.key])
                .await
                .is_err()
            {
                drop(deadpool_postgres::Object::take(client));
            }
        }
    }
}

impl Drop for FinalizeLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Never return a connection holding the lock to the pool.
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

/// A lock key for an export: its id folded to 64 bits, tagged so it cannot
/// meet the migration lock.
fn finalize_key(export_id: Uuid) -> i64 {
    let (hi, lo) = export_id.as_u64_pair();
    ((hi ^ lo) as i64) ^ 0x0f1a_11ce
}

impl Store {
    /// Takes the finalize lock of an export, or `None` when another
    /// finalizer holds it.
    pub async fn try_lock_finalize(
        &self,
        export_id: Uuid,
    ) -> Result<Option<FinalizeLock>, StoreError> {
        let client = self.client().await?;
        let key = finalize_key(export_id);
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1) AS locked", &[&key])
            .await?
            .try_get("locked")?;
        Ok(locked.then_some(FinalizeLock {
            client: Some(client),
            key,
        }))
    }
}

/// The staged rows of one export as `COPY` streams them; holds its
/// connection until dropped.
pub struct StagedRows {
    rows: Pin<Box<BinaryCopyOutStream>>,
    ended: bool,
    /// Out of the pool: closed when the rows are dropped.
    _client: deadpool_postgres::ClientWrapper,
}

impl StagedRows {
    /// The next row; `None` after the last.
    pub async fn next(&mut self) -> Option<Result<StagedRecord, StoreError>> {
        if self.ended {
            // The copy stream is not to be polled after its end.
            return None;
        }
        match self.rows.next().await {
            Some(Ok(row)) => Some(Ok(StagedRecord(row))),
            Some(Err(e)) => Some(Err(e.into())),
            None => {
                self.ended = true;
                None
            }
        }
    }

    /// Up to `max` next rows; empty after the last.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<StagedRecord>, StoreError> {
        let mut batch = Vec::with_capacity(max);
        while batch.len() < max {
            match self.next().await {
                Some(row) => batch.push(row?),
                None => break,
            }
        }
        Ok(batch)
    }
}

/// One staged row as `COPY` sent it: its key and its row JSON, read in
/// place.
pub struct StagedRecord(BinaryCopyOutRow);

impl StagedRecord {
    pub fn key(&self) -> Result<&str, StoreError> {
        Ok(self.0.try_get::<&str>(0)?)
    }

    pub fn data(&self) -> Result<&str, StoreError> {
        Ok(self.0.try_get::<&str>(1)?)
    }
}
