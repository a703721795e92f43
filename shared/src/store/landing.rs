//! A page task's life in Postgres: claimed by a worker, then landed in one
//! transaction, or dead-lettered.
//!
//! Landing updates the export row last, just before it commits. That row
//! lock serializes the end of the landings of one export, so exactly one
//! landing sees that it was the last and writes the finalize message, and
//! the counters never lose an update, while the expensive part (merging
//! rows) runs in parallel.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::exports::{parse_spec, role_text};
use super::{Store, StoreError};
use crate::model::{new_id, DeadLetterClass, ExportState, RequestCounts};
use crate::pagination::{Next, Position, Role};
use crate::spec::ExportSpec;

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
    pub partition_params: std::collections::BTreeMap<String, String>,
    pub spec: ExportSpec,
    pub export_state: ExportState,
    /// Failed attempts before this claim (kept across parking).
    pub failures: u32,
    /// Time since the first failed attempt.
    pub failing_for: Duration,
}

/// The answer to a claim.
#[derive(Debug)]
pub enum Claim {
    Claimed(Box<PageWork>),
    /// Another worker holds a live lease for this long.
    Held {
        remaining: Duration,
    },
    /// Done, dead, or unknown: nothing to do.
    Gone,
}

/// A fetched page, ready to land.
#[derive(Debug, Clone)]
pub struct Landing {
    pub task_id: Uuid,
    /// (row key, flattened row as JSON text), in page order.
    pub rows: Vec<(String, String)>,
    pub columns: BTreeSet<String>,
    pub next: Next,
    pub counts: RequestCounts,
}

/// What a landing did.
#[derive(Debug, Clone, PartialEq)]
pub enum Landed {
    /// The task was already done (a duplicate delivery): nothing committed.
    Duplicate,
    Page {
        rows_inserted: u64,
        rows_replaced: u64,
        /// Outbox rows written by this landing, for the caller to publish now.
        outbox_ids: Vec<i64>,
        /// This was the export's last page: the finalize message is in the outbox.
        finalize: bool,
    },
}

/// One attempt in a dead letter's history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attempt {
    pub at: String,
    pub outcome: String,
    pub status: Option<u16>,
    pub millis: u64,
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
    pub attempts: Vec<Attempt>,
    pub counts: RequestCounts,
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
                "UPDATE page_tasks t
                    SET state = 'in_flight', deliveries = t.deliveries + 1,
                        lease_until = now() + make_interval(secs => $2), updated_at = now(),
                        claimed_by = $3, claimed_at = now()
                   FROM exports e, partitions p
                  WHERE t.id = $1
                    AND (t.not_before IS NULL OR t.not_before <= now())
                    AND (t.state = 'queued'
                         OR (t.state = 'in_flight'
                             AND (t.lease_until IS NULL OR t.lease_until < now() OR t.claimed_by = $3)))
                    AND e.id = t.export_id
                    AND e.state NOT IN ('completed', 'failed', 'cancelled')
                    AND p.export_id = t.export_id AND p.partition_no = t.partition_no
              RETURNING t.export_id, t.tenant_id, t.partition_no, t.page_no, t.position, t.role,
                        t.deliveries, p.params, e.spec, e.state, t.failures,
                        COALESCE(EXTRACT(EPOCH FROM now() - t.first_failure_at), 0)::float8",
                &[&task_id, &lease.as_secs_f64(), &worker],
            )
            .await?;
        let Some(row) = row else {
            let current = client
                .query_opt(
                    "SELECT t.state, GREATEST(0, EXTRACT(EPOCH FROM t.lease_until - now()))::float8,
                            e.state IN ('completed', 'failed', 'cancelled')
                       FROM page_tasks t JOIN exports e ON e.id = t.export_id
                      WHERE t.id = $1",
                    &[&task_id],
                )
                .await?;
            return match current {
                Some(r) if r.get::<_, String>(0) == "done" => {
                    // A duplicate delivery of a landed page. Count it; fetch nothing.
                    client
                        .execute(
                            "UPDATE exports e SET duplicate_deliveries = duplicate_deliveries + 1
                               FROM page_tasks t WHERE t.id = $1 AND e.id = t.export_id",
                            &[&task_id],
                        )
                        .await?;
                    Ok(Claim::Gone)
                }
                // Nothing more will happen to a finished export's tasks,
                // whatever lease a dead holder left on them.
                Some(r) if r.get::<_, bool>(2) => Ok(Claim::Gone),
                Some(r) if r.get::<_, String>(0) == "in_flight" => Ok(Claim::Held {
                    remaining: Duration::from_secs_f64(r.get::<_, Option<f64>>(1).unwrap_or(0.0)),
                }),
                _ => Ok(Claim::Gone),
            };
        };
        let export_id: Uuid = row.get(0);
        let corrupt = |what: &'static str, e: serde_json::Error| StoreError::Corrupt {
            what,
            export_id,
            message: e.to_string(),
        };
        let role: String = row.get(5);
        let state: String = row.get(9);
        Ok(Claim::Claimed(Box::new(PageWork {
            task_id,
            export_id,
            tenant_id: row.get(1),
            partition_no: row.get(2),
            page_no: row.get(3),
            position: serde_json::from_value(row.get(4)).map_err(|e| corrupt("position", e))?,
            role: if role == "leaf" {
                Role::Leaf
            } else {
                Role::Chain
            },
            deliveries: row.get(6),
            partition_params: serde_json::from_value(row.get(7))
                .map_err(|e| corrupt("partition params", e))?,
            spec: parse_spec(export_id, row.get(8))?,
            export_state: state.parse()?,
            failures: row.get::<_, i32>(10).max(0) as u32,
            failing_for: Duration::from_secs_f64(row.get::<_, f64>(11).max(0.0)),
        })))
    }

    /// Extends the lease of a task this worker still holds. False when the
    /// task is no longer in flight under this worker (taken over or done).
    pub async fn extend_lease(
        &self,
        task_id: Uuid,
        lease: Duration,
        worker: &str,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE page_tasks SET lease_until = now() + make_interval(secs => $2)
                  WHERE id = $1 AND state = 'in_flight' AND claimed_by = $3",
                &[&task_id, &lease.as_secs_f64(), &worker],
            )
            .await?;
        Ok(n == 1)
    }

    /// Gives up a claim this worker holds without finishing the task (a
    /// worker shutting down): the task is `queued` again with no lease, so
    /// its redelivery is claimed at once. False when the claim was no
    /// longer held (the task landed or was taken over meanwhile).
    pub async fn release_claim(&self, task_id: Uuid, worker: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE page_tasks SET state = 'queued', lease_until = NULL, claimed_by = NULL,
                        updated_at = now()
                  WHERE id = $1 AND state = 'in_flight' AND claimed_by = $2",
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
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "UPDATE page_tasks
                    SET state = 'queued', not_before = now() + make_interval(secs => $3),
                        lease_until = NULL, claimed_by = NULL, updated_at = now(),
                        failures = $4,
                        first_failure_at = CASE WHEN $4 > 0 THEN COALESCE(first_failure_at, now()) END
                  WHERE id = $1 AND state = 'in_flight' AND claimed_by = $2
              RETURNING export_id",
                &[&task_id, &worker, &wait.as_secs_f64(), &(failures as i32)],
            )
            .await?;
        let Some(row) = row else { return Ok(false) };
        let export_id: Uuid = row.get(0);
        let RequestCounts {
            requests,
            retries,
            rate_limited,
        } = counts;
        tx.execute(
            "UPDATE exports SET requests = requests + $2, retries = retries + $3,
                    rate_limited = rate_limited + $4, updated_at = now()
              WHERE id = $1",
            &[
                &export_id,
                &(requests as i64),
                &(retries as i64),
                &(rate_limited as i64),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Re-publishes parked tasks whose time has come. Returns the outbox ids.
    pub async fn unpark_due(&self) -> Result<Vec<i64>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "WITH due AS (
                     UPDATE page_tasks SET not_before = NULL, updated_at = now()
                      WHERE state = 'queued' AND not_before IS NOT NULL AND not_before <= now()
                      RETURNING id, export_id)
                 INSERT INTO outbox (queue, body)
                 SELECT 'pages', pagefleet_page_message(export_id, id)
                   FROM due
                 RETURNING id",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Tasks parked right now.
    pub async fn parked_count(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_one(
                "SELECT count(*) FROM page_tasks WHERE state = 'queued' AND not_before IS NOT NULL",
                &[],
            )
            .await?
            .get(0))
    }

    /// Lands a page in one transaction: task done (only if it was not),
    /// rows merged by key, checkpoint advanced, next tasks and outbox written,
    /// counters updated, and the finalize message when this was the last page.
    pub async fn land_page(&self, landing: &Landing) -> Result<Landed, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(task) = tx
            .query_opt(
                "SELECT t.export_id, t.tenant_id, t.partition_no, t.page_no, t.role, e.state
                   FROM page_tasks t JOIN exports e ON e.id = t.export_id
                  WHERE t.id = $1",
                &[&landing.task_id],
            )
            .await?
        else {
            return Ok(Landed::Duplicate);
        };
        let export_id: Uuid = task.get(0);
        let tenant_id: String = task.get(1);
        let partition_no: i32 = task.get(2);
        let page_no: i64 = task.get(3);
        let is_leaf = task.get::<_, String>(4) == "leaf";
        let state: ExportState = task.get::<_, String>(5).parse()?;
        if state == ExportState::Cancelled {
            return Ok(Landed::Duplicate);
        }

        let marked = tx
            .execute(
                "UPDATE page_tasks SET state = 'done', lease_until = NULL, last_error = NULL,
                        updated_at = now()
                  WHERE id = $1 AND state IN ('queued', 'in_flight')",
                &[&landing.task_id],
            )
            .await?;
        if marked == 0 {
            // Already done (or dead): count the duplicate, change nothing else.
            tx.execute(
                "UPDATE exports SET duplicate_deliveries = duplicate_deliveries + 1,
                        requests = requests + $2
                  WHERE id = $1",
                &[&export_id, &(landing.counts.requests as i64)],
            )
            .await?;
            tx.commit().await?;
            return Ok(Landed::Duplicate);
        }

        // Merge rows. ON CONFLICT cannot touch one key twice in a statement,
        // so keep the last occurrence of a key within the page.
        // Keys in sorted order, so two landings that overlap lock their rows
        // in the same order and cannot deadlock.
        let mut by_key = std::collections::BTreeMap::new();
        for (key, row) in &landing.rows {
            by_key.insert(key.as_str(), row.as_str());
        }
        let in_page_duplicates = (landing.rows.len() - by_key.len()) as u64;
        let keys: Vec<&str> = by_key.keys().copied().collect();
        let data: Vec<&str> = by_key.values().copied().collect();
        let merged = tx
            .query(
                "INSERT INTO staged_rows (export_id, row_key, data)
                 SELECT $1, k, d FROM unnest($2::text[], $3::text[]) AS t(k, d)
                 ON CONFLICT (export_id, row_key) DO UPDATE SET data = EXCLUDED.data
                 RETURNING (xmax = 0)",
                &[&export_id, &keys, &data],
            )
            .await?;
        let rows_inserted = merged.iter().filter(|r| r.get::<_, bool>(0)).count() as u64;
        let rows_replaced = merged.len() as u64 - rows_inserted + in_page_duplicates;

        if !landing.columns.is_empty() {
            let columns: Vec<&str> = landing.columns.iter().map(String::as_str).collect();
            tx.execute(
                "INSERT INTO export_columns (export_id, name)
                 SELECT $1, c FROM unnest($2::text[]) AS c
                 ON CONFLICT DO NOTHING",
                &[&export_id, &columns],
            )
            .await?;
        }

        // Plan what follows and advance the checkpoint.
        let mut new_tasks: Vec<(Uuid, i64, serde_json::Value, Role)> = Vec::new();
        let to_json = |p: &Position| {
            serde_json::to_value(p).map_err(|e| StoreError::Corrupt {
                what: "position",
                export_id,
                message: e.to_string(),
            })
        };
        let planned_all = match &landing.next {
            Next::Done => true,
            Next::Chain(position) => {
                new_tasks.push((new_id(), page_no + 1, to_json(position)?, Role::Chain));
                false
            }
            Next::FanOut(positions) => {
                for (i, position) in positions.iter().enumerate() {
                    new_tasks.push((
                        new_id(),
                        page_no + 1 + i as i64,
                        to_json(position)?,
                        Role::Leaf,
                    ));
                }
                true
            }
        };
        let next_position = match &landing.next {
            Next::Chain(position) => Some(to_json(position)?),
            _ => None,
        };
        // A fan-out leaf changes nothing in its partition; not touching the
        // row keeps leaves from serializing on it.
        if !(is_leaf && matches!(landing.next, Next::Done)) {
            tx.execute(
                "UPDATE partitions
                SET pages_landed = pages_landed + 1,
                    planned_all = planned_all OR $3,
                    checkpoint_page = GREATEST(checkpoint_page, $4),
                    next_position = CASE WHEN $4 > checkpoint_page THEN $5 ELSE next_position END
              WHERE export_id = $1 AND partition_no = $2",
                &[
                    &export_id,
                    &partition_no,
                    &planned_all,
                    &page_no,
                    &next_position,
                ],
            )
            .await?;
        }

        let mut outbox_ids = Vec::new();
        if !new_tasks.is_empty() {
            let ids: Vec<Uuid> = new_tasks.iter().map(|t| t.0).collect();
            let pages: Vec<i64> = new_tasks.iter().map(|t| t.1).collect();
            let positions: Vec<String> = new_tasks.iter().map(|t| t.2.to_string()).collect();
            let roles: Vec<&str> = new_tasks.iter().map(|t| role_text(t.3)).collect();
            let rows = tx
                .query(
                    "WITH inserted AS (
                         INSERT INTO page_tasks (id, tenant_id, export_id, partition_no, page_no, position, role)
                         SELECT i, $2, $1, $3, p, pos::jsonb, r
                           FROM unnest($4::uuid[], $5::int8[], $6::text[], $7::text[]) AS t(i, p, pos, r)
                         ON CONFLICT (export_id, partition_no, page_no) DO NOTHING
                         RETURNING id)
                     INSERT INTO outbox (queue, body)
                     SELECT 'pages', pagefleet_page_message($1, id)
                       FROM inserted
                     RETURNING id",
                    &[&export_id, &tenant_id, &partition_no, &ids, &pages, &positions, &roles],
                )
                .await?;
            outbox_ids.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
        }
        let planned = outbox_ids.len() as i64;

        // The export row is the one lock all landings of an export share, so
        // it is taken last, right before the commit. Every task is counted in
        // pages_planned when it is created and in pages_landed once when it
        // is marked done; under this row lock exactly one landing sees the two
        // meet, and it writes the finalize message.
        let counted = tx
            .query_one(
                "UPDATE exports
                SET pages_landed = pages_landed + 1, pages_planned = pages_planned + $2,
                    rows_staged = rows_staged + $3, rows_replaced = rows_replaced + $4,
                    requests = requests + $5, retries = retries + $6,
                    rate_limited = rate_limited + $7, updated_at = now()
              WHERE id = $1
          RETURNING pages_landed >= pages_planned, state",
                &[
                    &export_id,
                    &planned,
                    &(rows_inserted as i64),
                    &(rows_replaced as i64),
                    &(landing.counts.requests as i64),
                    &(landing.counts.retries as i64),
                    &(landing.counts.rate_limited as i64),
                ],
            )
            .await?;
        let all_landed: bool = counted.get(0);
        let state: ExportState = counted.get::<_, String>(1).parse()?;

        let finalize = if all_landed && matches!(state, ExportState::Running | ExportState::Blocked)
        {
            let last: bool = tx
                .query_one(
                    "SELECT NOT EXISTS (SELECT 1 FROM partitions WHERE export_id = $1 AND NOT planned_all)",
                    &[&export_id],
                )
                .await?
                .get(0);
            if last {
                tx.execute(
                    "UPDATE exports SET state = 'finalizing' WHERE id = $1",
                    &[&export_id],
                )
                .await?;
                let id: i64 = tx
                    .query_one(
                        "INSERT INTO outbox (queue, body)
                         VALUES ('finalize', pagefleet_finalize_message($1))
                         RETURNING id",
                        &[&export_id],
                    )
                    .await?
                    .get(0);
                outbox_ids.push(id);
            }
            last
        } else {
            false
        };
        tx.commit().await?;
        Ok(Landed::Page {
            rows_inserted,
            rows_replaced,
            outbox_ids,
            finalize,
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
                "SELECT export_id, tenant_id FROM page_tasks WHERE id = $1",
                &[&input.task_id],
            )
            .await?
        else {
            return Ok(None);
        };
        let export_id: Uuid = task.get(0);
        let tenant_id: String = task.get(1);
        // Task row first, export row last: the same order as a landing, so
        // the two cannot deadlock.
        let marked = tx
            .execute(
                "UPDATE page_tasks SET state = 'dead', lease_until = NULL, last_error = $2,
                        updated_at = now()
                  WHERE id = $1 AND state IN ('queued', 'in_flight')",
                &[&input.task_id, &input.reason],
            )
            .await?;
        if marked == 0 {
            return Ok(None);
        }
        let id = new_id();
        let attempts = serde_json::to_value(&input.attempts).map_err(|e| StoreError::Corrupt {
            what: "attempts",
            export_id,
            message: e.to_string(),
        })?;
        tx.execute(
            "INSERT INTO dead_letters (id, tenant_id, export_id, task_id, class, reason, last_status,
                                       body_excerpt, headers, attempts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
            ],
        )
        .await?;
        tx.execute(
            "UPDATE exports
                SET state = CASE WHEN state IN ('planning', 'running') THEN 'blocked' ELSE state END,
                    dead_letters = dead_letters + 1, requests = requests + $2,
                    retries = retries + $3, rate_limited = rate_limited + $4, updated_at = now()
              WHERE id = $1",
            &[
                &export_id,
                &(input.counts.requests as i64),
                &(input.counts.retries as i64),
                &(input.counts.rate_limited as i64),
            ],
        )
        .await?;
        let outbox: i64 = tx
            .query_one(
                "INSERT INTO outbox (queue, body)
                 VALUES ('dead', pagefleet_dead_letter_message($1, $2, $3))
                 RETURNING id",
                &[&export_id, &input.task_id, &id],
            )
            .await?
            .get(0);
        tx.commit().await?;
        Ok(Some(outbox))
    }
}
