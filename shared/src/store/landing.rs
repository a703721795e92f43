//! A page task's life in Postgres: claimed by a worker (its lease extended,
//! released, or parked until later), then landed in one transaction, or
//! dead-lettered.
//!
//! Landing updates the export row last, just before it commits. That row
//! lock serializes the end of the landings of one export, so exactly one
//! landing sees that it was the last and writes the finalize message, and
//! the counters never lose an update, while the expensive part (merging
//! rows) runs in parallel.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use deadpool_postgres::Transaction;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::exports::parse_spec;
use super::ledger::{leave_marks, record_statements};
use super::page_copy::{copy_chunks, COPY_STAGED_ROWS};
use super::page_rows::{MergeOrder, PageRows};
use super::{Store, StoreError};
use crate::limits::Breach;
use crate::model::{new_id, DeadLetterClass, ExportState, RequestCounts, TimeSpent};
use crate::pagination::{repeat_reason, Next, Position, Role, Statement};
use crate::replay_edit::TaskOverrides;
use crate::spec::ExportSpec;
use crate::spec::Split;

/// Everything a worker needs to fetch one page.
#[derive(Debug, Clone)]
pub struct PageWork {
    pub task_id: Uuid,
    pub export_id: Uuid,
    pub tenant_id: String,
    pub partition_no: i32,
    pub page_no: i64,
    pub position: Position,
    pub role: Role,
    pub deliveries: i32,
    /// Claims of this task whose worker was lost before an outcome
    /// (counted when the task was taken over or re-queued after its lease).
    pub lost_claims: u32,
    pub partition_params: std::collections::BTreeMap<String, String>,
    pub spec: ExportSpec,
    pub export_state: ExportState,
    /// Failed attempts before this claim (kept across parking).
    pub failures: u32,
    /// Time since the first failed attempt.
    pub failing_for: Duration,
    /// How long it waited for this claim (queued, or held by a worker
    /// that was lost).
    pub queued_for: Duration,
}

/// The export's spec with the task's overrides (an edited replay's) laid
/// over it.
fn task_spec(
    export_id: Uuid,
    spec: serde_json::Value,
    overrides: Option<serde_json::Value>,
) -> Result<ExportSpec, StoreError> {
    let spec = parse_spec(export_id, spec)?;
    let Some(overrides) = overrides else {
        return Ok(spec);
    };
    let overrides: TaskOverrides =
        serde_json::from_value(overrides).map_err(|e| StoreError::Corrupt {
            what: "task overrides",
            export_id,
            message: e.to_string(),
        })?;
    Ok(overrides.apply(spec))
}

/// What extending a claim's lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    Extended,
    /// This claim landed the task: there is no lease left to keep.
    TaskDone,
    /// Taken over, given back, or its export paused or ended.
    Lost,
}

/// The answer to a claim.
#[derive(Debug)]
pub enum Claim {
    Claimed(Box<PageWork>),
    /// Another worker holds a live lease for this long.
    Held {
        remaining: Duration,
    },
    /// Dead, or unknown: nothing to do.
    Gone,
    /// Already landed: a duplicate delivery, counted on the export.
    Duplicate,
}

/// A fetched page, ready to land.
#[derive(Debug, Clone)]
pub struct Landing {
    pub task_id: Uuid,
    /// (row key, flattened row as JSON text), in page order.
    pub rows: PageRows,
    pub columns: BTreeSet<String>,
    pub next: Next,
    pub counts: RequestCounts,
    /// The counts the page stated about its partition.
    pub stated: Vec<Statement>,
    /// A chain page's marks (see `pagination::chain_marks`); empty for leaves.
    pub marks: Vec<String>,
    /// The spec's `verify.max_pages_per_partition`.
    pub max_pages: u64,
    /// The fleet's `limits.max_columns`: the export's inferred columns,
    /// this page's included, may not be more.
    pub max_columns: u64,
    /// An incremental export's largest cursor value on the page.
    pub max_cursor: Option<i64>,
    /// A backfill window too big for the source: the page lands nothing
    /// and its partition is replaced by these halves.
    pub split: Option<Split>,
}

/// What a landing did.
#[derive(Debug, Clone, PartialEq)]
pub enum Landed {
    /// The task was already done (a duplicate delivery): nothing committed.
    Duplicate,
    /// The page must not land (its chain loops, or runs past the page cap):
    /// nothing committed; the reason is for the dead letter.
    Refused { reason: String },
    /// The page would bring its export over the fleet's ceiling on columns
    /// (the export's, counted with the landings before it): nothing
    /// committed.
    OverLimit { breach: Breach },
    Page {
        rows_inserted: u64,
        rows_replaced: u64,
        /// Outbox rows written by this landing, for the caller to publish now.
        outbox_ids: Vec<i64>,
        /// This was the export's last page: the finalize message is in the outbox.
        finalize: bool,
        /// The chain's next page, when the landing planned one: the
        /// worker may fetch it itself (see [`Store::claim_followed`]); its
        /// message is in the outbox all the same.
        chain_next: Option<ChainNext>,
    },
}

/// A chain's next page task and the outbox row of its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainNext {
    pub task_id: Uuid,
    pub outbox_id: i64,
}

/// One attempt in a dead letter's history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attempt {
    pub at: String,
    pub outcome: String,
    pub status: Option<u16>,
    pub millis: u64,
    /// What went wrong without an answer (a timeout, a dropped connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The answer's `Retry-After`, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// The answer's rate-limit headers (`X-RateLimit-*`, `RateLimit*`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rate_limit: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct DeadLetterInput {
    pub task_id: Uuid,
    pub class: DeadLetterClass,
    pub reason: String,
    pub last_status: Option<u16>,
    pub body_excerpt: Option<String>,
    /// Response headers with secrets removed.
    pub headers: serde_json::Value,
    /// Attempts of this claim not yet recorded on the task; the letter
    /// keeps the task's whole history.
    pub attempts: Vec<Attempt>,
    pub counts: RequestCounts,
    /// The request as sent: method, URL without secrets, header names.
    pub request: serde_json::Value,
    /// The rate-limit bucket it draws from.
    pub source_key: Option<String>,
    /// Groups letters failing the same way (see `fingerprint::failure`).
    pub fingerprint: String,
}

impl Store {
    /// Marks the task in flight under this worker's lease and returns what
    /// to fetch. A task whose lease another worker still holds is not taken
    /// over (that worker is alive and heartbeating); one that is done, dead
    /// or unknown is gone.
    pub async fn claim_page(
        &self,
        task_id: Uuid,
        lease: Duration,
        worker: &str,
    ) -> Result<Claim, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &client.prepare_cached(CLAIM_PAGE).await?,
                &[&task_id, &lease.as_secs_f64(), &worker],
            )
            .await?;
        match row {
            Some(row) => claimed_work(task_id, &row),
            None => unclaimed(&client, task_id).await,
        }
    }

    /// Claims a chain's next page for the worker that landed the page
    /// before it, and marks its message (outbox row `outbox_id`) sent, in
    /// one statement: the worker fetches it next, without the hop through
    /// the queue. A worker killed after this leaves an in-flight task with
    /// no message; the reconciler re-queues it when its lease runs out.
    /// Not claimed (the export paused or ended meanwhile), the message
    /// stays unsent for the caller to publish.
    pub async fn claim_followed(
        &self,
        next: ChainNext,
        lease: Duration,
        worker: &str,
    ) -> Result<Claim, StoreError> {
        let client = self.client().await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
            &next.task_id,
            &lease.as_secs_f64(),
            &worker,
            &next.outbox_id,
        ];
        let row = client
            .query_opt(&client.prepare_cached(CLAIM_FOLLOWED).await?, &params)
            .await?;
        match row {
            Some(row) => claimed_work(next.task_id, &row),
            None => unclaimed(&client, next.task_id).await,
        }
    }

    /// Extends the lease of a task this worker still holds. A task no
    /// longer in flight under this claim is `TaskDone` when this claim
    /// landed it, else `Lost` (taken over); a task whose export was paused
    /// or has ended is `Lost` and its claim given back (queued, for a resume
    /// to publish again), so a page retrying when an operator pauses or
    /// cancels stops within one heartbeat.
    pub async fn extend_lease(
        &self,
        task_id: Uuid,
        lease: Duration,
        worker: &str,
    ) -> Result<Lease, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE page_tasks t SET lease_until = now() + make_interval(secs => $2)
                   FROM exports e
                  WHERE t.id = $1 AND t.state = 'in_flight' AND t.claimed_by = $3
                    AND e.id = t.export_id
                    AND e.state NOT IN ('paused', 'completed', 'completed_with_gaps',
                                        'unverified', 'failed', 'cancelled')",
                    )
                    .await?,
                &[&task_id, &lease.as_secs_f64(), &worker],
            )
            .await?;
        if n == 1 {
            return Ok(Lease::Extended);
        }
        self.release_claim(task_id, worker).await?;
        let done = client
            .query_opt(
                "SELECT 1 FROM page_tasks WHERE id = $1 AND state = 'done' AND claimed_by = $2",
                &[&task_id, &worker],
            )
            .await?;
        Ok(match done {
            Some(_) => Lease::TaskDone,
            None => Lease::Lost,
        })
    }

    /// Appends attempts to the history of a task this worker holds, as
    /// they happen: a worker lost mid-task leaves them to the next claim
    /// and to the dead letter.
    pub async fn record_attempts(
        &self,
        task_id: Uuid,
        worker: &str,
        attempts: &[Attempt],
    ) -> Result<(), StoreError> {
        if attempts.is_empty() {
            return Ok(());
        }
        let attempts = attempts_json(Uuid::nil(), attempts)?;
        self.client()
            .await?
            .execute(
                "UPDATE page_tasks SET attempt_log = pagefleet_append_attempts(attempt_log, $3)
                  WHERE id = $1 AND state = 'in_flight' AND claimed_by = $2",
                &[&task_id, &worker, &attempts],
            )
            .await?;
        Ok(())
    }

    /// Gives up a claim this worker holds without finishing the task (a
    /// worker shutting down): the task is `queued` again with no lease, so
    /// its redelivery is claimed at once. False when the claim was no
    /// longer held (the task landed or was taken over meanwhile).
    pub async fn release_claim(&self, task_id: Uuid, worker: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                &client.prepare_cached("UPDATE page_tasks SET state = 'queued', lease_until = NULL, claimed_by = NULL,
                        updated_at = now()
                  WHERE id = $1 AND state = 'in_flight' AND claimed_by = $2").await?,
                &[&task_id, &worker],
            )
            .await?;
        Ok(n == 1)
    }

    /// Parks a task this worker holds: back to `queued`, not to be delivered
    /// before `wait` has passed (the scheduler re-publishes it then). The
    /// requests it made so far are counted now; its failures are kept.
    pub async fn park_page(
        &self,
        task_id: Uuid,
        worker: &str,
        wait: Duration,
        failures: u32,
        counts: RequestCounts,
        attempts: &[Attempt],
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let attempts = attempts_json(Uuid::nil(), attempts)?;
        let row = tx
            .query_opt(
                &tx.prepare_cached("UPDATE page_tasks
                    SET state = 'queued', not_before = now() + make_interval(secs => $3),
                        lease_until = NULL, claimed_by = NULL, updated_at = now(),
                        failures = $4,
                        first_failure_at = CASE WHEN $4 > 0 THEN COALESCE(first_failure_at, now()) END,
                        attempt_log = pagefleet_append_attempts(attempt_log, $5)
                  WHERE id = $1 AND state = 'in_flight' AND claimed_by = $2
              RETURNING export_id").await?,
                &[&task_id, &worker, &wait.as_secs_f64(), &(failures as i32), &attempts],
            )
            .await?;
        let Some(row) = row else { return Ok(false) };
        let export_id: Uuid = row.try_get("export_id")?;
        tx.execute(
            &tx.prepare_cached(
                "UPDATE exports SET requests = requests + $2, retries = retries + $3,
                    rate_limited = rate_limited + $4,
                    learned_rate = COALESCE($5, learned_rate), updated_at = now()
              WHERE id = $1",
            )
            .await?,
            &[
                &export_id,
                &(counts.requests as i64),
                &(counts.retries as i64),
                &(counts.rate_limited as i64),
                &counts.source_rate(),
            ],
        )
        .await?;
        let time = counts.time;
        add_time(&tx, export_id, &time).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Re-publishes parked tasks whose time has come. Returns the outbox ids.
    pub async fn unpark_due(&self) -> Result<Vec<i64>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "WITH due AS (
                     UPDATE page_tasks SET not_before = NULL, updated_at = now()
                      WHERE state = 'queued' AND not_before IS NOT NULL AND not_before <= now()
                      RETURNING id, export_id)
                 INSERT INTO outbox (queue, body)
                 SELECT 'pages', pagefleet_page_message(export_id, id)
                   FROM due
                 RETURNING id",
                    )
                    .await?,
                &[],
            )
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Tasks parked right now.
    pub async fn parked_count(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &client
                    .prepare_cached(
                        "SELECT count(*) AS parked FROM page_tasks
                  WHERE state = 'queued' AND not_before IS NOT NULL",
                    )
                    .await?,
                &[],
            )
            .await?;
        Ok(row.try_get("parked")?)
    }

    /// Lands a page in one transaction: task done (only if it was not),
    /// rows merged by key, checkpoint advanced, next tasks and outbox written,
    /// counters updated, and the finalize message when this was the last page.
    ///
    /// Locks are taken in this order: the task row, the staged rows (in key
    /// order), the export's column set, the partition row, the new task rows, and the export row last,
    /// so landings of one export run in parallel until their commit.
    pub async fn land_page(&self, landing: &Landing) -> Result<Landed, StoreError> {
        let landing_started = std::time::Instant::now();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(task) = read_task(&tx, landing.task_id).await? else {
            return Ok(Landed::Duplicate);
        };
        if task.state == ExportState::Cancelled {
            return Ok(Landed::Duplicate);
        }
        let records = i32::try_from(landing.rows.len()).unwrap_or(i32::MAX);
        if !mark_done_if_not(&tx, landing.task_id, records, landing.max_cursor).await? {
            // Already done (or dead): count the duplicate, change nothing else.
            count_duplicate(&tx, task.export_id, landing.counts).await?;
            tx.commit().await?;
            return Ok(Landed::Duplicate);
        }
        if let Some(split) = &landing.split {
            let landed =
                super::splits::split_partition(&tx, landing.task_id, &task, split, landing.counts)
                    .await?;
            // A refused split rolls the task's `done` back with the rest.
            if !matches!(landed, Landed::Refused { .. }) {
                tx.commit().await?;
            }
            return Ok(landed);
        }
        let backward_next = match task.role {
            Role::Backward => next_backward_position(&tx, &task).await?,
            _ => None,
        };
        let plan = match task.role {
            Role::Backward => plan_backward(backward_next.as_ref(), task.page_no),
            Role::Chain => plan_next(&landing.next, task.page_no, false),
            Role::Leaf | Role::Sentinel => plan_next(&landing.next, task.page_no, true),
        };
        if let Some(reason) = refusal(&tx, &task, landing, &plan).await? {
            // Dropping the transaction rolls the task's `done` back.
            return Ok(Landed::Refused { reason });
        }
        let (export_id, partition_no) = (task.export_id, task.partition_no);
        record_statements(&tx, export_id, partition_no, task.page_no, &landing.stated).await?;
        // A backward pass reads pages whose rows are staged already.
        let first_pass = task.role != Role::Backward;
        let merged = merge_rows(&tx, task.export_id, &landing.rows, first_pass).await?;
        record_columns(&tx, task.export_id, &landing.columns).await?;
        if plan.touches_partition {
            advance_checkpoint(&tx, &task, &plan).await?;
        }
        let created = insert_next_tasks(&tx, &task, &plan.tasks).await?;
        let chain_next = match (task.role, plan.tasks.as_slice(), created.as_slice()) {
            (Role::Chain, [planned], [next]) if planned.role == Role::Chain => Some(*next),
            _ => None,
        };
        let mut outbox_ids: Vec<i64> = created.iter().map(|c| c.outbox_id).collect();
        let skipped = match (task.role, landing.rows.is_empty()) {
            (Role::Leaf, true) => skip_past_the_end(&tx, &task).await?,
            _ => 0,
        };
        let planned = outbox_ids.len() as i64;
        let landed = 1 + skipped;
        // The landing's time so far goes in with its counters (its last
        // statement and the commit are not in it).
        let mut counts = landing.counts;
        counts.time.landing_us += micros_since(landing_started);
        let counted = bump_counters(&tx, &task, planned, landed, merged, counts).await?;
        // Counted after the export's row is locked (by `bump_counters`), so
        // the landings of one export count one after another and each sees
        // the columns of those that committed before it.
        if !landing.columns.is_empty() {
            if let Err(breach) = count_columns(&tx, export_id, landing.max_columns).await? {
                // Dropping the transaction rolls the whole landing back.
                return Ok(Landed::OverLimit { breach });
            }
        }
        let finalize_id = finalize_if_last(&tx, task.export_id, counted).await?;
        outbox_ids.extend(finalize_id);
        tx.commit().await?;
        Ok(Landed::Page {
            rows_inserted: merged.inserted,
            rows_replaced: merged.replaced,
            outbox_ids,
            finalize: finalize_id.is_some(),
            chain_next,
        })
    }

    /// Records an exhausted or permanently failed task, blocks its export,
    /// and queues the dead-letter message. Returns the outbox id, or `None`
    /// when the task was already done or dead (nothing changed).
    pub async fn dead_letter(&self, input: &DeadLetterInput) -> Result<Option<i64>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(task) = tx
            .query_opt(
                &tx.prepare_cached("SELECT export_id, tenant_id FROM page_tasks WHERE id = $1")
                    .await?,
                &[&input.task_id],
            )
            .await?
        else {
            return Ok(None);
        };
        let export_id: Uuid = task.try_get("export_id")?;
        let tenant_id: String = task.try_get("tenant_id")?;
        // Task row first, export row last: the same order as a landing, so
        // the two cannot deadlock.
        let marked = tx
            .execute(
                &tx.prepare_cached(
                    "UPDATE page_tasks SET state = 'dead', lease_until = NULL, last_error = $2,
                        updated_at = now()
                  WHERE id = $1 AND state IN ('queued', 'in_flight')
                    AND NOT EXISTS (SELECT 1 FROM exports e
                                     WHERE e.id = $3 AND e.state = 'cancelled')",
                )
                .await?,
                &[&input.task_id, &input.reason, &export_id],
            )
            .await?;
        if marked == 0 {
            return Ok(None);
        }
        let id = new_id();
        let attempts = attempts_json(export_id, &input.attempts)?;
        tx.execute(
            &tx.prepare_cached("INSERT INTO dead_letters (id, tenant_id, export_id, task_id, class, reason, last_status,
                                       body_excerpt, headers, attempts, request, source_key,
                                       fingerprint)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9,
                    pagefleet_append_attempts(t.attempt_log, $10), $11, $12, $13
               FROM page_tasks t WHERE t.id = $4").await?,
            &[
                &id,
                &tenant_id,
                &export_id,
                &input.task_id,
                &input.class.as_str(),
                &input.reason,
                &input.last_status.map(i32::from),
                &input.body_excerpt,
                &input.headers,
                &attempts,
                &input.request,
                &input.source_key,
                &input.fingerprint,
            ],
        )
        .await?;
        tx.execute(
            &tx.prepare_cached("UPDATE exports
                SET state = CASE WHEN state IN ('planning', 'running') THEN 'blocked' ELSE state END,
                    dead_letters = dead_letters + 1, requests = requests + $2,
                    retries = retries + $3, rate_limited = rate_limited + $4,
                    learned_rate = COALESCE($5, learned_rate), updated_at = now()
              WHERE id = $1").await?,
            &[
                &export_id,
                &(input.counts.requests as i64),
                &(input.counts.retries as i64),
                &(input.counts.rate_limited as i64),
                &input.counts.source_rate(),
            ],
        )
        .await?;
        add_time(&tx, export_id, &input.counts.time).await?;
        let outbox: i64 = tx
            .query_one(
                &tx.prepare_cached(
                    "INSERT INTO outbox (queue, body)
                 VALUES ('dead', pagefleet_dead_letter_message($1, $2, $3))
                 RETURNING id",
                )
                .await?,
                &[&export_id, &input.task_id, &id],
            )
            .await?
            .try_get("id")?;
        tx.commit().await?;
        Ok(Some(outbox))
    }
}

/// The claim statement (a macro, so [`CLAIM_FOLLOWED`] can embed it):
/// marks a page task in flight under a worker's lease (`$1` the task, `$2`
/// the lease in seconds, `$3` the claim) and returns what to fetch.
macro_rules! claim_page_sql {
    () => {
        "UPDATE page_tasks t
            SET state = 'in_flight', deliveries = t.deliveries + 1,
                lost_claims = t.lost_claims
                    + CASE WHEN t.state = 'in_flight' AND t.claimed_by IS DISTINCT FROM $3
                           THEN 1 ELSE 0 END,
                lease_until = now() + make_interval(secs => $2), updated_at = now(),
                claimed_by = $3, claimed_at = now()
           FROM exports e, partitions p,
                -- Read before the update: since when it waited.
                (SELECT updated_at AS waiting_since FROM page_tasks WHERE id = $1) q
          WHERE t.id = $1
            AND (t.not_before IS NULL OR t.not_before <= now())
            AND (t.state = 'queued'
                 OR (t.state = 'in_flight'
                     AND (t.lease_until IS NULL OR t.lease_until < now() OR t.claimed_by = $3)))
            AND e.id = t.export_id
            AND e.state NOT IN ('paused', 'completed', 'completed_with_gaps', 'unverified',
                                'failed', 'cancelled')
            AND p.export_id = t.export_id AND p.partition_no = t.partition_no
      RETURNING t.export_id, t.tenant_id, t.partition_no, t.page_no, t.position, t.role,
                t.deliveries, t.lost_claims, p.params, e.spec, e.state AS export_state,
                t.failures, t.overrides,
                GREATEST(0, EXTRACT(EPOCH FROM now() - q.waiting_since))::float8
                    AS queued_secs,
                COALESCE(EXTRACT(EPOCH FROM now() - t.first_failure_at), 0)::float8
                    AS failing_for_secs"
    };
}

const CLAIM_PAGE: &str = claim_page_sql!();

/// The claim, marking the task's message (`$4`, an outbox id) sent when it
/// succeeds.
const CLAIM_FOLLOWED: &str = concat!(
    "WITH claimed AS (",
    claim_page_sql!(),
    "), sent AS (UPDATE outbox SET sent_at = now()
                  WHERE id = $4 AND sent_at IS NULL AND EXISTS (SELECT 1 FROM claimed))
     SELECT * FROM claimed"
);

/// The work a claim statement's row describes.
fn claimed_work(task_id: Uuid, row: &tokio_postgres::Row) -> Result<Claim, StoreError> {
    let export_id: Uuid = row.try_get("export_id")?;
    let corrupt = |what: &'static str, e: serde_json::Error| StoreError::Corrupt {
        what,
        export_id,
        message: e.to_string(),
    };
    let role: String = row.try_get("role")?;
    let state: String = row.try_get("export_state")?;
    Ok(Claim::Claimed(Box::new(PageWork {
        task_id,
        export_id,
        tenant_id: row.try_get("tenant_id")?,
        partition_no: row.try_get("partition_no")?,
        page_no: row.try_get("page_no")?,
        position: serde_json::from_value(row.try_get("position")?)
            .map_err(|e| corrupt("position", e))?,
        role: role.parse()?,
        deliveries: row.try_get("deliveries")?,
        lost_claims: row.try_get::<_, i32>("lost_claims")?.max(0) as u32,
        partition_params: serde_json::from_value(row.try_get("params")?)
            .map_err(|e| corrupt("partition params", e))?,
        spec: task_spec(export_id, row.try_get("spec")?, row.try_get("overrides")?)?,
        export_state: state.parse()?,
        failures: row.try_get::<_, i32>("failures")?.max(0) as u32,
        failing_for: Duration::from_secs_f64(row.try_get::<_, f64>("failing_for_secs")?.max(0.0)),
        queued_for: Duration::from_secs_f64(row.try_get::<_, f64>("queued_secs")?.max(0.0)),
    })))
}

/// Why a task could not be claimed: a duplicate delivery of a landed page
/// (counted), a live lease held by another worker, or nothing to do.
async fn unclaimed(client: &deadpool_postgres::Client, task_id: Uuid) -> Result<Claim, StoreError> {
    let current = client
        .query_opt(
            &client.prepare_cached("SELECT t.state,
                    GREATEST(0, EXTRACT(EPOCH FROM t.lease_until - now()))::float8
                        AS lease_remaining_secs,
                    e.state IN ('completed', 'completed_with_gaps', 'unverified', 'failed', 'cancelled')
                        AS export_finished
               FROM page_tasks t JOIN exports e ON e.id = t.export_id
              WHERE t.id = $1").await?,
            &[&task_id],
        )
        .await?;
    let Some(current) = current else {
        return Ok(Claim::Gone);
    };
    let task_state: String = current.try_get("state")?;
    let export_finished: bool = current.try_get("export_finished")?;
    match task_state.as_str() {
        "done" => {
            // A duplicate delivery of a landed page. Count it; fetch nothing.
            client
                .execute(
                    &client
                        .prepare_cached(
                            "UPDATE exports e SET duplicate_deliveries = duplicate_deliveries + 1
                       FROM page_tasks t WHERE t.id = $1 AND e.id = t.export_id",
                        )
                        .await?,
                    &[&task_id],
                )
                .await?;
            Ok(Claim::Duplicate)
        }
        // Nothing more will happen to a finished export's tasks,
        // whatever lease a dead holder left on them.
        _ if export_finished => Ok(Claim::Gone),
        "in_flight" => Ok(Claim::Held {
            // GREATEST skips a NULL lease: never NULL, 0 at least.
            remaining: Duration::from_secs_f64(current.try_get("lease_remaining_secs")?),
        }),
        _ => Ok(Claim::Gone),
    }
}

/// Microseconds as Postgres's bigint.
fn micros(us: u64) -> i64 {
    i64::try_from(us).unwrap_or(i64::MAX)
}

/// Microseconds since `started`.
fn micros_since(started: std::time::Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Adds a task's time to its export's, in the transaction that counts its
/// requests (the export's row is locked by then); a landing adds it in its
/// own counters' statement instead.
pub(super) async fn add_time(
    tx: &Transaction<'_>,
    export_id: Uuid,
    time: &TimeSpent,
) -> Result<(), StoreError> {
    if *time == TimeSpent::default() {
        return Ok(());
    }

    tx.execute(
        &tx.prepare_cached(
            "UPDATE exports SET time_fetching_us = time_fetching_us + $2,
                time_tokens_us = time_tokens_us + $3, time_retrying_us = time_retrying_us + $4,
                time_queued_us = time_queued_us + $5, time_parked_us = time_parked_us + $6
          WHERE id = $1",
        )
        .await?,
        &[
            &export_id,
            &micros(time.fetching_us),
            &micros(time.tokens_us),
            &micros(time.retrying_us),
            &micros(time.queued_us),
            &micros(time.parked_us),
        ],
    )
    .await?;
    Ok(())
}

fn attempts_json(export_id: Uuid, attempts: &[Attempt]) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(attempts).map_err(|e| StoreError::Corrupt {
        what: "attempts",
        export_id,
        message: e.to_string(),
    })
}

// The landing transaction, one function per statement, in the order
// `Store::land_page` runs them.

/// The task being landed, as the landing transaction first reads it.
pub(super) struct LandingTask {
    pub(super) export_id: Uuid,
    pub(super) tenant_id: String,
    pub(super) partition_no: i32,
    pub(super) page_no: i64,
    pub(super) role: Role,
    /// The export's state when the landing began.
    pub(super) state: ExportState,
    /// An edited replay's overrides, carried to the pages it plans (its
    /// page size to chain pages only).
    pub(super) overrides: Option<serde_json::Value>,
}

/// The task and its export's state; `None` when the task is unknown.
async fn read_task(tx: &Transaction<'_>, task_id: Uuid) -> Result<Option<LandingTask>, StoreError> {
    let Some(row) = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT t.export_id, t.tenant_id, t.partition_no, t.page_no, t.role, t.overrides,
                    e.state AS export_state
               FROM page_tasks t JOIN exports e ON e.id = t.export_id
              WHERE t.id = $1",
            )
            .await?,
            &[&task_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let role: String = row.try_get("role")?;
    let state: String = row.try_get("export_state")?;
    Ok(Some(LandingTask {
        export_id: row.try_get("export_id")?,
        tenant_id: row.try_get("tenant_id")?,
        partition_no: row.try_get("partition_no")?,
        page_no: row.try_get("page_no")?,
        role: role.parse()?,
        state: state.parse()?,
        overrides: row.try_get("overrides")?,
    }))
}

/// Marks the task done, with the records it delivered, unless it already
/// is (or is dead). False means a duplicate delivery: the landing must
/// change nothing else.
async fn mark_done_if_not(
    tx: &Transaction<'_>,
    task_id: Uuid,
    records: i32,
    max_cursor: Option<i64>,
) -> Result<bool, StoreError> {
    let marked = tx
        .execute(
            &tx.prepare_cached(
                "UPDATE page_tasks SET state = 'done', lease_until = NULL, last_error = NULL,
                    records = $2, max_cursor = $3, updated_at = now()
              WHERE id = $1 AND state IN ('queued', 'in_flight')",
            )
            .await?,
            &[&task_id, &records, &max_cursor],
        )
        .await?;
    Ok(marked > 0)
}

/// Why the page must not land, if it must not: what it plans runs past the
/// partition's page cap, or its chain repeats itself.
async fn refusal(
    tx: &Transaction<'_>,
    task: &LandingTask,
    landing: &Landing,
    plan: &Plan<'_>,
) -> Result<Option<String>, StoreError> {
    if let Some(reason) = past_the_cap(plan, task.partition_no, landing.max_pages) {
        return Ok(Some(reason));
    }
    let (export_id, partition_no, page_no) = (task.export_id, task.partition_no, task.page_no);
    let repeat = leave_marks(tx, export_id, partition_no, page_no, &landing.marks).await?;
    Ok(repeat.map(|r| repeat_reason(&r.mark, page_no, r.earlier_page, partition_no)))
}

/// A plan whose last page would be past `max_pages` pages in its partition.
/// The sentinel page and a backward pass's pages are not the source's
/// pages: they do not count.
fn past_the_cap(plan: &Plan<'_>, partition_no: i32, max_pages: u64) -> Option<String> {
    let last = (plan.tasks.iter())
        .rfind(|t| matches!(t.role, Role::Chain | Role::Leaf))?
        .page_no;
    let pages = u64::try_from(last).ok()?.saturating_add(1);
    (pages > max_pages).then(|| {
        format!(
            "partition {partition_no} would have {pages} pages, more than \
             verify.max_pages_per_partition = {max_pages}; stopping instead of running on"
        )
    })
}

/// Counts a duplicate delivery (and the requests it made) on its export.
async fn count_duplicate(
    tx: &Transaction<'_>,
    export_id: Uuid,
    counts: RequestCounts,
) -> Result<(), StoreError> {
    tx.execute(
        &tx.prepare_cached(
            "UPDATE exports SET duplicate_deliveries = duplicate_deliveries + 1,
                requests = requests + $2
          WHERE id = $1",
        )
        .await?,
        &[&export_id, &(counts.requests as i64)],
    )
    .await?;
    add_time(tx, export_id, &counts.time).await
}

/// What merging a page did to staging.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Merged {
    pub(super) inserted: u64,
    pub(super) replaced: u64,
}

/// Rows merged a statement: a page of any size binds at most this many
/// rows' text at once.
const MERGE_CHUNK: usize = 5_000;

/// Merges the rows into staging by key, one row per key (the page's last),
/// in key order and in chunks: a re-fetched row replaces the staged one and
/// is counted as replaced. Postgres counts what it inserted, so the answer
/// is one row, not one a row.
///
/// On a first pass, where a page's keys are new, the page is copied in
/// instead (`page_copy`), under a savepoint: a key already staged fails
/// the copy at that row, the savepoint undoes it, and the page merges.
async fn merge_rows(
    tx: &Transaction<'_>,
    export_id: Uuid,
    rows: &PageRows,
    first_pass: bool,
) -> Result<Merged, StoreError> {
    let order = rows.merge_order();
    if order.is_empty() {
        return Ok(Merged::default());
    }
    if !first_pass {
        return merge_on_conflict(tx, export_id, &order).await;
    }
    tx.batch_execute("SAVEPOINT copy_rows").await?;
    match copy_rows(tx, export_id, &order).await {
        Ok(copied) => {
            tx.batch_execute("RELEASE SAVEPOINT copy_rows").await?;
            return Ok(Merged {
                inserted: copied,
                replaced: order.in_page_duplicates,
            });
        }
        Err(CopyFailed::KeyStaged) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT copy_rows; RELEASE SAVEPOINT copy_rows")
                .await?;
        }
        Err(CopyFailed::Other(error)) => return Err(error),
    }
    merge_on_conflict(tx, export_id, &order).await
}

/// Why a page's rows could not be copied in.
enum CopyFailed {
    /// One of its keys is staged already (or being staged by a landing
    /// that committed first).
    KeyStaged,
    Other(StoreError),
}

impl From<tokio_postgres::Error> for CopyFailed {
    fn from(error: tokio_postgres::Error) -> Self {
        match error.code() {
            Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => CopyFailed::KeyStaged,
            _ => CopyFailed::Other(error.into()),
        }
    }
}

/// Copies the rows into staging; fails with `KeyStaged` at the first row
/// whose key is there.
async fn copy_rows(
    tx: &Transaction<'_>,
    export_id: Uuid,
    order: &MergeOrder<'_>,
) -> Result<u64, CopyFailed> {
    use futures::SinkExt;
    let sink = tx
        .copy_in(&tx.prepare_cached(COPY_STAGED_ROWS).await?)
        .await?;
    futures::pin_mut!(sink);
    for chunk in copy_chunks(export_id, order) {
        let chunk = chunk.map_err(|too_long| {
            CopyFailed::Other(StoreError::Rows {
                export_id,
                message: too_long.to_string(),
            })
        })?;
        sink.feed(chunk).await?;
    }
    Ok(sink.as_mut().finish().await?)
}

/// Merges the rows with `INSERT … ON CONFLICT`, counting the replaced.
async fn merge_on_conflict(
    tx: &Transaction<'_>,
    export_id: Uuid,
    order: &MergeOrder<'_>,
) -> Result<Merged, StoreError> {
    let mut merged = Merged {
        inserted: 0,
        replaced: order.in_page_duplicates,
    };
    for (keys, data) in order.chunks(MERGE_CHUNK) {
        let counted = tx
            .query_one(
                &tx.prepare_cached(
                    "WITH merged AS (
                   INSERT INTO staged_rows (export_id, row_key, data)
                   SELECT $1, k, d FROM unnest($2::text[], $3::text[]) AS t(k, d)
                   ON CONFLICT (export_id, row_key) DO UPDATE SET data = EXCLUDED.data
                   RETURNING (xmax = 0) AS inserted)
                 SELECT count(*) FILTER (WHERE inserted) AS inserted, count(*) AS merged
                   FROM merged",
                )
                .await?,
                &[&export_id, &keys, &data],
            )
            .await?;
        let inserted = counted.try_get::<_, i64>("inserted")?.max(0) as u64;
        let all = counted.try_get::<_, i64>("merged")?.max(0) as u64;
        merged.inserted += inserted;
        merged.replaced += all.saturating_sub(inserted);
    }
    Ok(merged)
}

/// The export's inferred columns against the fleet's ceiling.
async fn count_columns(
    tx: &Transaction<'_>,
    export_id: Uuid,
    max_columns: u64,
) -> Result<Result<(), Breach>, StoreError> {
    let row = tx
        .query_one(
            &tx.prepare_cached("SELECT count(*) AS n FROM export_columns WHERE export_id = $1")
                .await?,
            &[&export_id],
        )
        .await?;
    let n: i64 = row.try_get("n")?;
    Ok(Breach::columns(u64::try_from(n).unwrap_or(0), max_columns))
}

/// Adds the page's columns to the export's inferred columns.
async fn record_columns(
    tx: &Transaction<'_>,
    export_id: Uuid,
    columns: &BTreeSet<String>,
) -> Result<(), StoreError> {
    if columns.is_empty() {
        return Ok(());
    }
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO export_columns (export_id, name)
         SELECT $1, c FROM unnest($2::text[]) AS c
         ON CONFLICT DO NOTHING",
        )
        .await?,
        &[&export_id, &columns],
    )
    .await?;
    Ok(())
}

/// A page task a landing creates.
#[derive(Debug, PartialEq)]
struct PlannedTask<'a> {
    page_no: i64,
    position: &'a Position,
    role: Role,
}

/// What a landing plans from its page's `Next`.
#[derive(Debug, PartialEq)]
struct Plan<'a> {
    /// The tasks to create, in page order.
    tasks: Vec<PlannedTask<'a>>,
    /// Every page of the partition has a task once these exist.
    planned_all: bool,
    /// Where the chain goes on, for the checkpoint.
    next_position: Option<&'a Position>,
    /// Whether the partition row changes at all.
    touches_partition: bool,
}

/// A chain page plans the next page of its chain; a fan-out plans every
/// remaining page of the partition as leaves; the end of a chain plans
/// nothing. A fan-out leaf changes nothing in its partition; not touching
/// the row keeps leaves from serializing on it.
fn plan_next(next: &Next, page_no: i64, is_leaf: bool) -> Plan<'_> {
    match next {
        Next::Done => Plan {
            tasks: Vec::new(),
            planned_all: true,
            next_position: None,
            touches_partition: !is_leaf,
        },
        Next::Chain(position) => Plan {
            tasks: vec![PlannedTask {
                page_no: page_no + 1,
                position,
                role: Role::Chain,
            }],
            planned_all: false,
            next_position: Some(position),
            touches_partition: true,
        },
        Next::FanOut(positions) => Plan {
            tasks: positions
                .iter()
                .enumerate()
                .map(|(i, position)| PlannedTask {
                    page_no: page_no + 1 + i as i64,
                    position,
                    role: if i + 1 == positions.len() {
                        Role::Sentinel
                    } else {
                        Role::Leaf
                    },
                })
                .collect(),
            planned_all: true,
            next_position: None,
            touches_partition: true,
        },
    }
}

/// A backward page plans the next page of its pass, which was planned with
/// it; after the pass's last page the partition is planned again.
fn plan_backward(next: Option<&Position>, page_no: i64) -> Plan<'_> {
    Plan {
        tasks: next
            .map(|position| PlannedTask {
                page_no: page_no + 1,
                position,
                role: Role::Backward,
            })
            .into_iter()
            .collect(),
        planned_all: next.is_none(),
        next_position: next,
        touches_partition: true,
    }
}

/// The position of the backward pass's page after this one, if any.
async fn next_backward_position(
    tx: &Transaction<'_>,
    task: &LandingTask,
) -> Result<Option<Position>, StoreError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT position FROM backward_passes
              WHERE export_id = $1 AND partition_no = $2 AND page_no = $3",
            )
            .await?,
            &[&task.export_id, &task.partition_no, &(task.page_no + 1)],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    serde_json::from_value(row.try_get("position")?)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            what: "backward pass position",
            export_id: task.export_id,
            message: e.to_string(),
        })
}

fn position_json(export_id: Uuid, position: &Position) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(position).map_err(|e| StoreError::Corrupt {
        what: "position",
        export_id,
        message: e.to_string(),
    })
}

/// Counts the landed page in its partition and moves the checkpoint
/// forward (never back: an older page landing late leaves it).
async fn advance_checkpoint(
    tx: &Transaction<'_>,
    task: &LandingTask,
    plan: &Plan<'_>,
) -> Result<(), StoreError> {
    let next_position = plan
        .next_position
        .map(|p| position_json(task.export_id, p))
        .transpose()?;
    tx.execute(
        &tx.prepare_cached(
            "UPDATE partitions
            SET pages_landed = pages_landed + 1,
                planned_all = planned_all OR $3,
                checkpoint_page = GREATEST(checkpoint_page, $4),
                next_position = CASE WHEN $4 > checkpoint_page THEN $5 ELSE next_position END
          WHERE export_id = $1 AND partition_no = $2",
        )
        .await?,
        &[
            &task.export_id,
            &task.partition_no,
            &plan.planned_all,
            &task.page_no,
            &next_position,
        ],
    )
    .await?;
    Ok(())
}

/// Creates the planned tasks and their page messages. A task that already
/// exists (a landing before a crash created it) is left alone and gets no
/// message. Returns each task created with its message's outbox id.
async fn insert_next_tasks(
    tx: &Transaction<'_>,
    task: &LandingTask,
    tasks: &[PlannedTask<'_>],
) -> Result<Vec<ChainNext>, StoreError> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = tasks.iter().map(|_| new_id()).collect();
    let pages: Vec<i64> = tasks.iter().map(|t| t.page_no).collect();
    let positions = tasks
        .iter()
        .map(|t| Ok(position_json(task.export_id, t.position)?.to_string()))
        .collect::<Result<Vec<String>, StoreError>>()?;
    let roles: Vec<&str> = tasks.iter().map(|t| t.role.as_str()).collect();
    let rows = tx
        .query(
            &tx.prepare_cached(
                "WITH inserted AS (
                 INSERT INTO page_tasks (id, tenant_id, export_id, partition_no, page_no, position,
                                         role, overrides)
                 SELECT i, $2, $1, $3, p, pos::jsonb, r, CASE WHEN r = 'chain' THEN $8::jsonb
                                                   ELSE $8::jsonb - 'page_size' END
                   FROM unnest($4::uuid[], $5::int8[], $6::text[], $7::text[]) AS t(i, p, pos, r)
                 ON CONFLICT (export_id, partition_no, page_no) DO NOTHING
                 RETURNING id)
             INSERT INTO outbox (queue, body)
             SELECT 'pages', pagefleet_page_message($1, id)
               FROM inserted
             RETURNING id, (body->>'task_id')::uuid AS task_id",
            )
            .await?,
            &[
                &task.export_id,
                &task.tenant_id,
                &task.partition_no,
                &ids,
                &pages,
                &positions,
                &roles,
                &task.overrides,
            ],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(ChainNext {
                task_id: r.try_get("task_id")?,
                outbox_id: r.try_get("id")?,
            })
        })
        .collect()
}

/// A fanned-out page came back empty before the stated end: the data ends
/// here, and the pages planned past it (from a total that was too high)
/// would be empty as well. They are marked done with no records instead of
/// fetched, so a lying total costs rows in Postgres, not requests to the
/// source. Pages another worker is claiming right now are left to it
/// (`SKIP LOCKED`, which also keeps two such landings from deadlocking).
/// Returns how many were skipped.
async fn skip_past_the_end(tx: &Transaction<'_>, task: &LandingTask) -> Result<i64, StoreError> {
    let skipped = tx
        .execute(
            &tx.prepare_cached(
                "WITH past AS (
                 SELECT id FROM page_tasks
                  WHERE export_id = $1 AND partition_no = $2 AND page_no > $3
                    AND state = 'queued' AND role IN ('leaf', 'sentinel')
                  ORDER BY page_no
                    FOR UPDATE SKIP LOCKED)
             UPDATE page_tasks t SET state = 'done', records = 0, updated_at = now(),
                    last_error = 'not fetched: an earlier page of the fan-out was empty'
               FROM past WHERE t.id = past.id",
            )
            .await?,
            &[&task.export_id, &task.partition_no, &task.page_no],
        )
        .await?;
    Ok(skipped as i64)
}

/// The export's counters after a landing, read under its row lock.
#[derive(Debug, Clone, Copy)]
pub(super) struct Counted {
    /// Every page planned so far has landed.
    all_landed: bool,
    state: ExportState,
}

/// Adds the landing to the export's counters. The export row is the one
/// lock all landings of an export share, so it is taken last, right before
/// the commit. Every task is counted in pages_planned when it is created
/// and in pages_landed once when it is marked done; under this row lock
/// exactly one landing sees the two meet, and it writes the finalize
/// message.
pub(super) async fn bump_counters(
    tx: &Transaction<'_>,
    task: &LandingTask,
    planned: i64,
    landed: i64,
    merged: Merged,
    counts: RequestCounts,
) -> Result<Counted, StoreError> {
    // The task's time goes in the same statement: a landing is the hot
    // path, and the export's row is the one lock all landings share.
    let time = &counts.time;
    let row = tx
        .query_one(
            &tx.prepare_cached("UPDATE exports
                SET pages_landed = pages_landed + $8, pages_planned = pages_planned + $2,
                    rows_staged = rows_staged + $3, rows_replaced = rows_replaced + $4,
                    requests = requests + $5, retries = retries + $6,
                    rate_limited = rate_limited + $7,
                    time_fetching_us = time_fetching_us + $9, time_tokens_us = time_tokens_us + $10,
                    time_retrying_us = time_retrying_us + $11, time_queued_us = time_queued_us + $12,
                    time_parked_us = time_parked_us + $13, time_landing_us = time_landing_us + $15,
                    learned_rate = COALESCE($14, learned_rate), updated_at = now()
              WHERE id = $1
          RETURNING pages_landed >= pages_planned AS all_landed, state").await?,
            &[
                &task.export_id,
                &planned,
                &(merged.inserted as i64),
                &(merged.replaced as i64),
                &(counts.requests as i64),
                &(counts.retries as i64),
                &(counts.rate_limited as i64),
                &landed,
                &micros(time.fetching_us),
                &micros(time.tokens_us),
                &micros(time.retrying_us),
                &micros(time.queued_us),
                &micros(time.parked_us),
                &counts.source_rate(),
                &micros(time.landing_us),
            ],
        )
        .await?;
    let state: String = row.try_get("state")?;
    Ok(Counted {
        all_landed: row.try_get("all_landed")?,
        state: state.parse()?,
    })
}

/// Whether this landing may be the export's last: every page planned so
/// far has landed, and the export still waits for pages (a blocked export
/// whose dead pages were all replayed and landed counts too). It is the
/// last when, besides, every partition has planned all its pages.
fn may_be_last(counted: Counted) -> bool {
    counted.all_landed && matches!(counted.state, ExportState::Running | ExportState::Blocked)
}

/// When this was the last page, moves the export to finalizing and writes
/// the finalize message. Returns its outbox id.
async fn finalize_if_last(
    tx: &Transaction<'_>,
    export_id: Uuid,
    counted: Counted,
) -> Result<Option<i64>, StoreError> {
    if !may_be_last(counted) || !all_partitions_planned(tx, export_id).await? {
        return Ok(None);
    }
    mark_finalizing(tx, export_id).await?;
    Ok(Some(write_finalize_message(tx, export_id).await?))
}

/// Every partition knows its last page (no page is left to plan), and no
/// discarded page waits for its gap to be accepted.
async fn all_partitions_planned(tx: &Transaction<'_>, export_id: Uuid) -> Result<bool, StoreError> {
    let row = tx
        .query_one(
            &tx.prepare_cached("SELECT NOT EXISTS (SELECT 1 FROM partitions WHERE export_id = $1 AND NOT planned_all)
                    AND pagefleet_gaps_settled($1) AS all_planned").await?,
            &[&export_id],
        )
        .await?;
    Ok(row.try_get("all_planned")?)
}

async fn mark_finalizing(tx: &Transaction<'_>, export_id: Uuid) -> Result<(), StoreError> {
    tx.execute(
        &tx.prepare_cached("UPDATE exports SET state = 'finalizing' WHERE id = $1")
            .await?,
        &[&export_id],
    )
    .await?;
    Ok(())
}

async fn write_finalize_message(tx: &Transaction<'_>, export_id: Uuid) -> Result<i64, StoreError> {
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "INSERT INTO outbox (queue, body)
             VALUES ('finalize', pagefleet_finalize_message($1))
             RETURNING id",
            )
            .await?,
            &[&export_id],
        )
        .await?;
    Ok(row.try_get("id")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(offset: u64) -> Position {
        Position::Offset { offset }
    }

    #[test]
    fn a_backward_page_plans_the_next_of_its_pass_and_the_last_ends_it() {
        let next = offset(100);
        let plan = plan_backward(Some(&next), 41);
        assert_eq!(
            plan.tasks,
            vec![PlannedTask {
                page_no: 42,
                position: &next,
                role: Role::Backward,
            }]
        );
        assert!(!plan.planned_all);
        let last = plan_backward(None, 60);
        assert!(last.tasks.is_empty());
        assert!(last.planned_all && last.touches_partition);
    }

    #[test]
    fn plans_past_the_page_cap_are_refused() {
        let next = Next::FanOut(vec![offset(10), offset(20), offset(30)]);
        let plan = plan_next(&next, 0, false);
        // Pages 0, 1 and 2, and the sentinel page 3, which does not count.
        assert_eq!(past_the_cap(&plan, 0, 3), None);
        let reason = past_the_cap(&plan, 2, 2).unwrap();
        assert!(
            reason.starts_with(
                "partition 2 would have 3 pages, more than verify.max_pages_per_partition = 2"
            ),
            "{reason}"
        );
        // A backward pass is not the source's pages either.
        let backward = offset(0);
        assert_eq!(
            past_the_cap(&plan_backward(Some(&backward), 50), 0, 3),
            None
        );
        assert_eq!(past_the_cap(&plan_next(&Next::Done, 9, false), 0, 1), None);
        let chain = Next::Chain(offset(5));
        assert!(past_the_cap(&plan_next(&chain, 9, false), 0, 10).is_some());
    }

    #[test]
    fn a_chain_page_plans_the_next_page_of_its_chain() {
        let next = Next::Chain(offset(20));
        let plan = plan_next(&next, 3, false);
        assert_eq!(
            plan,
            Plan {
                tasks: vec![PlannedTask {
                    page_no: 4,
                    position: &offset(20),
                    role: Role::Chain,
                }],
                planned_all: false,
                next_position: Some(&offset(20)),
                touches_partition: true,
            }
        );
    }

    #[test]
    fn a_fan_out_plans_every_remaining_page_as_leaves() {
        let next = Next::FanOut(vec![offset(10), offset(20), offset(30)]);
        let plan = plan_next(&next, 0, false);
        let pages: Vec<(i64, &Position, Role)> = plan
            .tasks
            .iter()
            .map(|t| (t.page_no, t.position, t.role))
            .collect();
        assert_eq!(
            pages,
            vec![
                (1, &offset(10), Role::Leaf),
                (2, &offset(20), Role::Leaf),
                (3, &offset(30), Role::Sentinel),
            ]
        );
        assert!(plan.planned_all);
        assert_eq!(plan.next_position, None);
        assert!(plan.touches_partition);
    }

    #[test]
    fn the_end_of_a_chain_plans_nothing_and_closes_the_partition() {
        let plan = plan_next(&Next::Done, 7, false);
        assert!(plan.tasks.is_empty());
        assert!(plan.planned_all);
        assert_eq!(plan.next_position, None);
        assert!(plan.touches_partition, "the chain's last page is counted");
    }

    #[test]
    fn a_landed_leaf_leaves_its_partition_alone() {
        let plan = plan_next(&Next::Done, 5, true);
        assert!(plan.tasks.is_empty());
        assert!(!plan.touches_partition);
    }

    #[test]
    fn only_a_landing_that_sees_every_page_landed_of_a_waiting_export_may_be_last() {
        let counted = |all_landed, state| Counted { all_landed, state };
        assert!(may_be_last(counted(true, ExportState::Running)));
        assert!(may_be_last(counted(true, ExportState::Blocked)));
        assert!(!may_be_last(counted(false, ExportState::Running)));
        for state in [
            ExportState::Planning,
            ExportState::Finalizing,
            ExportState::Completed,
            ExportState::Failed,
            ExportState::Cancelled,
        ] {
            assert!(!may_be_last(counted(true, state)), "{state}");
        }
    }
}
