//! Submitting an export (and planning its first pages) and reading its status.

use deadpool_postgres::Transaction;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::model::{new_id, ExportState};
use crate::pagination::{first_position, Role};
use crate::progress::{self, Eta, Pace, TimeBreakdown};
use crate::spec::ExportSpec;

/// The answer to a submission.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Submitted {
    pub id: Uuid,
    /// False when the idempotency key had already created this export.
    pub created: bool,
    /// Outbox rows of the first page tasks, for the caller to publish now.
    #[serde(skip)]
    pub outbox_ids: Vec<i64>,
}

/// What an operator (or `pagefleet status`) sees of an export.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ExportStatus {
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub state: ExportState,
    pub partitions: i32,
    pub pages_planned: i64,
    pub pages_landed: i64,
    /// True once every partition knows its last page, so `pages_planned` is
    /// the final total rather than "so far".
    pub pages_total_known: bool,
    pub rows_staged: i64,
    pub rows_replaced: i64,
    pub requests: i64,
    pub retries: i64,
    pub rate_limited: i64,
    pub duplicate_deliveries: i64,
    pub dead_letters_open: i64,
    /// Pages whose task is dead (waiting for a replay).
    pub pages_dead: i64,
    /// Pages queued or in flight.
    pub pages_open: i64,
    /// Pages an operator discarded: the export's gaps.
    #[serde(default)]
    pub pages_discarded: i64,
    /// Every discarded page is a gap an operator accepted: the export
    /// publishes without them (true too when there is none).
    #[serde(default)]
    pub accept_gaps: bool,
    /// Pages parked, the ETA, and where the time goes.
    #[serde(default)]
    pub progress: Progress,
    pub output_path: Option<String>,
    pub manifest_path: Option<String>,
    pub csv_rows: Option<i64>,
    pub csv_bytes: Option<i64>,
    pub csv_sha256: Option<String>,
    /// Why the export failed, or (when `unverified`) what disagreed.
    pub error: Option<String>,
    /// What the finalizer checked against the source's counts (the
    /// manifest's `verification`); absent until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub verification: Option<crate::verification::Verification>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// When its staged rows were removed, the fleet's staging retention
    /// past (the published file is untouched).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub staging_removed_at: Option<OffsetDateTime>,
}

/// Which exports a listing shows. Empty fields match every export.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportListFilter {
    pub state: Option<ExportState>,
    /// Part of the export's name.
    pub name: Option<String>,
    /// Part of its source's base URL.
    pub source: Option<String>,
    /// Created at most this many seconds ago.
    pub newer_than_s: Option<f64>,
    /// Created at least this many seconds ago.
    pub older_than_s: Option<f64>,
}

/// How far an export is and where its time goes (see `progress`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Progress {
    /// Pages parked until their source has tokens.
    pub pages_parked: i64,
    /// The rate the source key runs at, requests per second: as the fleet
    /// learned it once a page has asked, else the spec's.
    pub source_rate: Option<f64>,
    /// The spec's `rate_limit.rate`, when it states one.
    #[serde(default)]
    pub stated_rate: Option<f64>,
    /// `source_rate` was learned from the source's answers.
    #[serde(default)]
    pub rate_learned: bool,
    /// While it runs and its pages are known.
    pub eta: Option<Eta>,
    pub time: TimeBreakdown,
    pub why_slow: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("idempotency key {key:?} was already used for a different spec (export {existing})")]
    IdempotencyConflict { key: String, existing: Uuid },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Creates the export with its partitions and the first page task of each
    /// (plus their outbox messages) in one transaction. With an idempotency
    /// key, a second submission of the same spec returns the first export.
    pub async fn submit_export(
        &self,
        tenant_id: &str,
        idempotency_key: Option<&str>,
        spec: &ExportSpec,
    ) -> Result<Submitted, SubmitError> {
        self.submit_run(tenant_id, idempotency_key, spec, spec)
            .await
    }

    /// `submit_export` of `run`, the pinned form of `submitted` (see
    /// `ExportSpec::pinned`): the idempotency key is held to `submitted`.
    pub async fn submit_run(
        &self,
        tenant_id: &str,
        idempotency_key: Option<&str>,
        submitted: &ExportSpec,
        run: &ExportSpec,
    ) -> Result<Submitted, SubmitError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let request_hash = submitted.hash();
        let submitted = submit_in(&tx, tenant_id, idempotency_key, &request_hash, run).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(submitted)
    }
    pub async fn export_status(&self, id: Uuid) -> Result<Option<ExportStatus>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("{STATUS_SELECT} WHERE e.id = $1"), &[&id])
            .await?;
        row.map(|r| status_from_row(&r)).transpose()
    }

    /// The newest exports first.
    pub async fn list_exports(
        &self,
        tenant_id: &str,
        limit: i64,
    ) -> Result<Vec<ExportStatus>, StoreError> {
        (self.list_exports_where(tenant_id, &ExportListFilter::default(), limit)).await
    }

    /// The newest exports a filter matches, first.
    pub async fn list_exports_where(
        &self,
        tenant_id: &str,
        filter: &ExportListFilter,
        limit: i64,
    ) -> Result<Vec<ExportStatus>, StoreError> {
        let client = self.client().await?;
        let state = filter.state.map(ExportState::as_str);
        let rows = client
            .query(
                &format!(
                    "{STATUS_SELECT}
                      WHERE e.tenant_id = $1
                        AND ($2::text IS NULL OR e.state = $2)
                        AND ($3::text IS NULL OR strpos(e.name, $3) > 0)
                        AND ($4::text IS NULL OR strpos(e.spec->'source'->>'base_url', $4) > 0)
                        AND ($5::float8 IS NULL OR e.created_at >= now() - make_interval(secs => $5))
                        AND ($6::float8 IS NULL OR e.created_at < now() - make_interval(secs => $6))
                      ORDER BY e.id DESC LIMIT $7"
                ),
                &[
                    &tenant_id,
                    &state,
                    &filter.name,
                    &filter.source,
                    &filter.newer_than_s,
                    &filter.older_than_s,
                    &limit,
                ],
            )
            .await?;
        rows.iter().map(status_from_row).collect()
    }

    /// The stored spec of an export.
    pub async fn export_spec(&self, id: Uuid) -> Result<Option<ExportSpec>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT spec FROM exports WHERE id = $1", &[&id])
            .await?;
        row.map(|r| parse_spec(id, r.try_get("spec")?)).transpose()
    }
}

pub(super) fn parse_spec(id: Uuid, value: serde_json::Value) -> Result<ExportSpec, StoreError> {
    serde_json::from_value(value).map_err(|e| StoreError::Corrupt {
        what: "spec",
        export_id: id,
        message: e.to_string(),
    })
}

impl ExportStatus {
    /// Nothing more will happen without an operator: the export finished,
    /// is paused, or is blocked and no page is queued or in flight any more.
    pub fn is_settled(&self) -> bool {
        self.state.is_terminal()
            || self.state == ExportState::Paused
            || (self.state == ExportState::Blocked && self.pages_open == 0)
    }
}

/// `submit_export` inside the caller's transaction (a schedule's firing
/// creates its export in the transaction that claims the slot).
pub(crate) async fn submit_in(
    tx: &Transaction<'_>,
    tenant_id: &str,
    idempotency_key: Option<&str>,
    request_hash: &str,
    spec: &ExportSpec,
) -> Result<Submitted, SubmitError> {
    let spec_json = serde_json::to_value(spec).map_err(|e| StoreError::Corrupt {
        what: "spec",
        export_id: Uuid::nil(),
        message: e.to_string(),
    })?;
    let spec_hash = spec.hash();
    let partitions = partition_params(spec);
    let export = NewExport {
        id: new_id(),
        tenant_id,
        idempotency_key,
        name: &spec.name,
        spec: &spec_json,
        spec_hash: &spec_hash,
        request_hash,
        partitions: partitions.len(),
    };
    if !insert_export(tx, &export).await? {
        return submitted_before(tx, tenant_id, idempotency_key, request_hash).await;
    }
    let id = export.id;
    let first = serde_json::to_value(first_position(&spec.pagination)).map_err(|e| {
        StoreError::Corrupt {
            what: "position",
            export_id: id,
            message: e.to_string(),
        }
    })?;
    let mut outbox_ids = Vec::with_capacity(partitions.len());
    for (no, params) in partitions.iter().enumerate() {
        let no = no as i32;
        insert_partition(tx, id, no, params, &first).await?;
        let task_id = insert_first_task(tx, id, tenant_id, no, &first).await?;
        outbox_ids.push(write_page_message(tx, id, task_id).await?);
    }
    Ok(Submitted {
        id,
        created: true,
        outbox_ids,
    })
}

const STATUS_SELECT: &str = "
    SELECT e.id, e.tenant_id, e.name, e.state, e.partitions, e.pages_planned, e.pages_landed,
           NOT EXISTS (SELECT 1 FROM partitions p WHERE p.export_id = e.id AND NOT p.planned_all)
               AS pages_total_known,
           e.rows_staged, e.rows_replaced, e.requests, e.retries, e.rate_limited,
           e.duplicate_deliveries,
           (SELECT count(*) FROM dead_letters d WHERE d.export_id = e.id AND d.resolved_at IS NULL)
               AS dead_letters_open,
           (SELECT count(*) FROM page_tasks t WHERE t.export_id = e.id AND t.state = 'dead')
               AS pages_dead,
           (SELECT count(*) FROM page_tasks t WHERE t.export_id = e.id AND t.state IN ('queued', 'in_flight'))
               AS pages_open,
           (SELECT count(*) FROM page_tasks t WHERE t.export_id = e.id AND t.state = 'discarded')
               AS pages_discarded,
           pagefleet_gaps_settled(e.id) AS accept_gaps,
           (SELECT count(*) FROM page_tasks t
             WHERE t.export_id = e.id AND t.state = 'queued' AND t.not_before IS NOT NULL)
               AS pages_parked,
           e.time_fetching_us, e.time_tokens_us, e.time_retrying_us, e.time_queued_us,
           e.time_parked_us,
           COALESCE(EXTRACT(EPOCH FROM COALESCE(e.finished_at, now()) - e.finalizing_since), 0)::float8
               AS finalizing_secs,
           EXTRACT(EPOCH FROM COALESCE(e.finished_at, now()) - COALESCE(e.started_at, e.created_at))::float8
               AS elapsed_secs,
           (e.spec->'rate_limit'->>'rate')::float8 AS stated_rate, e.learned_rate,
           e.output_path, e.manifest_path, e.csv_rows, e.csv_bytes, e.csv_sha256, e.error, e.verification,
           e.created_at, e.finished_at, e.staging_removed_at
    FROM exports e";

/// The ETA and the time breakdown of a row of `STATUS_SELECT`.
fn progress_from_row(r: &tokio_postgres::Row) -> Result<Progress, StoreError> {
    let seconds =
        |column: &str| -> Result<f64, StoreError> { Ok(r.try_get::<_, i64>(column)? as f64 / 1e6) };
    let time = TimeBreakdown {
        fetching_s: seconds("time_fetching_us")?,
        waiting_for_tokens_s: seconds("time_tokens_us")?,
        retrying_s: seconds("time_retrying_us")?,
        parked_s: seconds("time_parked_us")?,
        waiting_for_a_worker_s: seconds("time_queued_us")?,
        finalizing_s: r.try_get::<_, f64>("finalizing_secs")?.max(0.0),
    };
    let stated_rate: Option<f64> = r.try_get("stated_rate")?;
    let learned_rate: Option<f64> = r.try_get("learned_rate")?;
    let source_rate = learned_rate.or(stated_rate);
    let state: ExportState = r.try_get::<_, String>("state")?.parse()?;
    let eta = match state {
        ExportState::Planning | ExportState::Running => progress::eta(Pace {
            pages_landed: r.try_get("pages_landed")?,
            pages_planned: r.try_get("pages_planned")?,
            total_known: r.try_get("pages_total_known")?,
            elapsed_s: r.try_get::<_, f64>("elapsed_secs")?.max(0.0),
            source_rate,
        }),
        _ => None,
    };
    Ok(Progress {
        pages_parked: r.try_get("pages_parked")?,
        source_rate,
        stated_rate,
        rate_learned: learned_rate.is_some(),
        eta,
        why_slow: time.why_slow(source_rate),
        time,
    })
}

/// A row of `STATUS_SELECT`, read by column name.
fn status_from_row(r: &tokio_postgres::Row) -> Result<ExportStatus, StoreError> {
    let state: String = r.try_get("state")?;
    Ok(ExportStatus {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        state: state.parse()?,
        partitions: r.try_get("partitions")?,
        pages_planned: r.try_get("pages_planned")?,
        pages_landed: r.try_get("pages_landed")?,
        pages_total_known: r.try_get("pages_total_known")?,
        rows_staged: r.try_get("rows_staged")?,
        rows_replaced: r.try_get("rows_replaced")?,
        requests: r.try_get("requests")?,
        retries: r.try_get("retries")?,
        rate_limited: r.try_get("rate_limited")?,
        duplicate_deliveries: r.try_get("duplicate_deliveries")?,
        dead_letters_open: r.try_get("dead_letters_open")?,
        pages_dead: r.try_get("pages_dead")?,
        pages_open: r.try_get("pages_open")?,
        pages_discarded: r.try_get("pages_discarded")?,
        accept_gaps: r.try_get("accept_gaps")?,
        progress: progress_from_row(r)?,
        output_path: r.try_get("output_path")?,
        manifest_path: r.try_get("manifest_path")?,
        csv_rows: r.try_get("csv_rows")?,
        csv_bytes: r.try_get("csv_bytes")?,
        csv_sha256: r.try_get("csv_sha256")?,
        error: r.try_get("error")?,
        verification: verification(r)?,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
        staging_removed_at: r.try_get("staging_removed_at")?,
    })
}

// The submission transaction, one function per statement, in the order
// `Store::submit_export` runs them.

/// The parameters of each partition: one empty set for a plain export.
/// Each partition's query parameters, with the incremental window's.
fn partition_params(spec: &ExportSpec) -> Vec<serde_json::Value> {
    let window = spec.window_params();
    let with_window = |params: &std::collections::BTreeMap<String, String>| {
        let mut params = params.clone();
        params.extend(window.iter().cloned());
        serde_json::json!(params)
    };
    let partitions = spec.planned_partitions();
    if partitions.is_empty() {
        vec![with_window(&Default::default())]
    } else {
        partitions.iter().map(|p| with_window(&p.params)).collect()
    }
}

/// The export row a submission creates.
struct NewExport<'a> {
    id: Uuid,
    tenant_id: &'a str,
    idempotency_key: Option<&'a str>,
    name: &'a str,
    spec: &'a serde_json::Value,
    spec_hash: &'a str,
    request_hash: &'a str,
    partitions: usize,
}

/// Inserts the export, running, with one planned page per partition.
/// False when its tenant already used the idempotency key.
async fn insert_export(tx: &Transaction<'_>, export: &NewExport<'_>) -> Result<bool, StoreError> {
    let inserted = tx
        .query_opt(
            "INSERT INTO exports (id, tenant_id, idempotency_key, name, spec, spec_hash, state,
                                  partitions, pages_planned, started_at, request_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), $10)
             ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
             RETURNING id",
            &[
                &export.id,
                &export.tenant_id,
                &export.idempotency_key,
                &export.name,
                export.spec,
                &export.spec_hash,
                &ExportState::Running.as_str(),
                &(export.partitions as i32),
                &(export.partitions as i64),
                &export.request_hash,
            ],
        )
        .await?;
    Ok(inserted.is_some())
}

/// The export an earlier submission with the same idempotency key created,
/// if its spec is the same.
async fn submitted_before(
    tx: &Transaction<'_>,
    tenant_id: &str,
    idempotency_key: Option<&str>,
    request_hash: &str,
) -> Result<Submitted, SubmitError> {
    // Only the (tenant_id, idempotency_key) constraint is let conflict, and
    // a NULL key never conflicts.
    let Some(key) = idempotency_key else {
        return Err(StoreError::Missing {
            table: "exports",
            column: "idempotency_key",
            whose: format!("a submission of tenant {tenant_id} that conflicted"),
        }
        .into());
    };
    let row = tx
        .query_one(
            "SELECT id, COALESCE(request_hash, spec_hash) AS request_hash
               FROM exports WHERE tenant_id = $1 AND idempotency_key = $2",
            &[&tenant_id, &key],
        )
        .await
        .map_err(StoreError::from)?;
    let existing: Uuid = row.try_get("id").map_err(StoreError::from)?;
    let existing_hash: String = row.try_get("request_hash").map_err(StoreError::from)?;
    if existing_hash != request_hash {
        return Err(SubmitError::IdempotencyConflict {
            key: key.to_string(),
            existing,
        });
    }
    Ok(Submitted {
        id: existing,
        created: false,
        outbox_ids: Vec::new(),
    })
}

/// A partition with its checkpoint at the first page.
pub(super) async fn insert_partition(
    tx: &Transaction<'_>,
    export_id: Uuid,
    partition_no: i32,
    params: &serde_json::Value,
    first: &serde_json::Value,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO partitions (export_id, partition_no, params, next_position)
         VALUES ($1, $2, $3, $4)",
        &[&export_id, &partition_no, params, first],
    )
    .await?;
    Ok(())
}

/// The first page task of a partition: the head of its chain.
pub(super) async fn insert_first_task(
    tx: &Transaction<'_>,
    export_id: Uuid,
    tenant_id: &str,
    partition_no: i32,
    first: &serde_json::Value,
) -> Result<Uuid, StoreError> {
    let task_id = new_id();
    tx.execute(
        "INSERT INTO page_tasks (id, tenant_id, export_id, partition_no, page_no, position, role)
         VALUES ($1, $2, $3, $4, 0, $5, $6)",
        &[
            &task_id,
            &tenant_id,
            &export_id,
            &partition_no,
            first,
            &Role::Chain.as_str(),
        ],
    )
    .await?;
    Ok(task_id)
}

/// The page message of a task. Returns its outbox id.
pub(super) async fn write_page_message(
    tx: &Transaction<'_>,
    export_id: Uuid,
    task_id: Uuid,
) -> Result<i64, StoreError> {
    let row = tx
        .query_one(
            "INSERT INTO outbox (queue, body)
             VALUES ('pages', pagefleet_page_message($1, $2))
             RETURNING id",
            &[&export_id, &task_id],
        )
        .await?;
    Ok(row.try_get("id")?)
}

/// The stored verification, read back as the type that wrote it.
fn verification(
    row: &tokio_postgres::Row,
) -> Result<Option<crate::verification::Verification>, StoreError> {
    let Some(value) = row.try_get::<_, Option<serde_json::Value>>("verification")? else {
        return Ok(None);
    };
    let export_id: Uuid = row.try_get("id")?;
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            what: "verification",
            export_id,
            message: e.to_string(),
        })
}
