//! Dead letters: listing them, and replaying them (idempotently).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::model::DeadLetterClass;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: Uuid,
    pub export_id: Uuid,
    pub task_id: Uuid,
    pub partition_no: i32,
    pub page_no: i64,
    pub class: DeadLetterClass,
    pub reason: String,
    pub last_status: Option<i32>,
    pub body_excerpt: Option<String>,
    pub headers: serde_json::Value,
    pub attempts: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub resolution: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayTarget {
    Task(Uuid),
    Export(Uuid),
}

/// A row of the listing query, read by column name.
fn dead_letter_from_row(r: &tokio_postgres::Row) -> Result<DeadLetter, StoreError> {
    let class: String = r.try_get("class")?;
    Ok(DeadLetter {
        id: r.try_get("id")?,
        export_id: r.try_get("export_id")?,
        task_id: r.try_get("task_id")?,
        partition_no: r.try_get("partition_no")?,
        page_no: r.try_get("page_no")?,
        class: class.parse()?,
        reason: r.try_get("reason")?,
        last_status: r.try_get("last_status")?,
        body_excerpt: r.try_get("body_excerpt")?,
        headers: r.try_get("headers")?,
        attempts: r.try_get("attempts")?,
        created_at: r.try_get("created_at")?,
        resolution: r.try_get("resolution")?,
    })
}

impl Store {
    /// Open dead letters (or all, with `include_resolved`), newest first.
    pub async fn list_dead_letters(
        &self,
        tenant_id: &str,
        export_id: Option<Uuid>,
        include_resolved: bool,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT d.id, d.export_id, d.task_id, t.partition_no, t.page_no, d.class, d.reason,
                        d.last_status, d.body_excerpt, d.headers, d.attempts, d.created_at, d.resolution
                   FROM dead_letters d JOIN page_tasks t ON t.id = d.task_id
                  WHERE d.tenant_id = $1
                    AND ($2::uuid IS NULL OR d.export_id = $2)
                    AND ($3 OR d.resolved_at IS NULL)
                  ORDER BY d.id DESC LIMIT 1000",
                &[&tenant_id, &export_id, &include_resolved],
            )
            .await?;
        rows.iter().map(dead_letter_from_row).collect()
    }

    /// Puts dead tasks back in the queue: the task (by task id or by the
    /// task id of a dead letter) or every dead task of an export. Replaying
    /// what is not dead does nothing, so a replay is idempotent. Returns the
    /// replayed task ids and the outbox ids to publish.
    pub async fn replay(
        &self,
        tenant_id: &str,
        target: ReplayTarget,
    ) -> Result<(Vec<Uuid>, Vec<i64>), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let export_id: Option<Uuid> = match target {
            ReplayTarget::Export(id) => Some(id),
            ReplayTarget::Task(id) => tx
                .query_opt(
                    "SELECT export_id FROM page_tasks WHERE id = $1 AND tenant_id = $2
                     UNION ALL
                     SELECT export_id FROM dead_letters WHERE id = $1 AND tenant_id = $2
                     LIMIT 1",
                    &[&id, &tenant_id],
                )
                .await?
                .map(|r| r.try_get("export_id"))
                .transpose()?,
        };
        let Some(export_id) = export_id else {
            return Ok((Vec::new(), Vec::new()));
        };
        let locked = tx
            .query_opt(
                "SELECT 1 FROM exports WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
                &[&export_id, &tenant_id],
            )
            .await?;
        if locked.is_none() {
            return Ok((Vec::new(), Vec::new()));
        }
        let (task_filter, only): (Option<Uuid>, bool) = match target {
            ReplayTarget::Task(id) => (Some(id), true),
            ReplayTarget::Export(_) => (None, false),
        };
        let tasks: Vec<Uuid> = tx
            .query(
                "UPDATE page_tasks SET state = 'queued', deliveries = 0, last_error = NULL,
                        failures = 0, first_failure_at = NULL, not_before = NULL, lost_claims = 0,
                        updated_at = now()
                  WHERE export_id = $1 AND state = 'dead'
                    AND (NOT $3 OR id = $2
                         OR id IN (SELECT task_id FROM dead_letters WHERE id = $2))
                  RETURNING id",
                &[&export_id, &task_filter, &only],
            )
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        if tasks.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        tx.execute(
            "UPDATE dead_letters SET resolved_at = now(), resolution = 'replayed'
              WHERE task_id = ANY($1) AND resolved_at IS NULL",
            &[&tasks],
        )
        .await?;
        tx.execute(
            "UPDATE exports SET state = 'running', updated_at = now()
              WHERE id = $1 AND state = 'blocked'
                AND NOT EXISTS (SELECT 1 FROM page_tasks WHERE export_id = $1 AND state = 'dead')",
            &[&export_id],
        )
        .await?;
        let outbox: Vec<i64> = tx
            .query(
                "INSERT INTO outbox (queue, body)
                 SELECT 'pages', pagefleet_page_message($1, t)
                   FROM unnest($2::uuid[]) AS t
                 RETURNING id",
                &[&export_id, &tasks],
            )
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        tx.commit().await?;
        Ok((tasks, outbox))
    }
}
