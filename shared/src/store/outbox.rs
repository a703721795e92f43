//! The outbox: messages written in the transaction that caused them, then
//! published with confirms and marked sent. A message is never lost (it stays
//! until marked) and may be published twice (consumers are idempotent).

use std::time::Duration;

use super::{Store, StoreError};
use crate::model::QueueRole;

#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub id: i64,
    pub queue: QueueRole,
    pub body: serde_json::Value,
}

impl Store {
    /// Unsent messages older than `min_age`, oldest first. The age lets the
    /// process that wrote a message publish it first; the relay is the
    /// safety net for the ones whose writer died.
    pub async fn outbox_pending(
        &self,
        min_age: Duration,
        limit: i64,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, queue, body FROM outbox
                  WHERE sent_at IS NULL AND created_at <= now() - make_interval(secs => $1)
                  ORDER BY id LIMIT $2",
                &[&min_age.as_secs_f64(), &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let queue: String = r.get(1);
                Some(OutboxMessage {
                    id: r.get(0),
                    queue: QueueRole::parse(&queue)?,
                    body: r.get(2),
                })
            })
            .collect())
    }

    /// Messages by id (those a landing just wrote), unsent only.
    pub async fn outbox_by_ids(&self, ids: &[i64]) -> Result<Vec<OutboxMessage>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, queue, body FROM outbox WHERE id = ANY($1) AND sent_at IS NULL ORDER BY id",
                &[&ids],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let queue: String = r.get(1);
                Some(OutboxMessage {
                    id: r.get(0),
                    queue: QueueRole::parse(&queue)?,
                    body: r.get(2),
                })
            })
            .collect())
    }

    pub async fn outbox_mark_sent(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        client
            .execute(
                "UPDATE outbox SET sent_at = now() WHERE id = ANY($1) AND sent_at IS NULL",
                &[&ids],
            )
            .await?;
        Ok(())
    }

    /// Re-publishes page tasks whose worker vanished: in flight, with a lease
    /// that ran out more than `grace` ago. (The broker redelivers unacked
    /// messages of a dead connection by itself; this covers a message lost
    /// in between.) Returns how many were re-queued.
    pub async fn requeue_expired(&self, grace: Duration) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "WITH stale AS (
                     UPDATE page_tasks SET updated_at = now(), state = 'queued', lease_until = NULL
                      WHERE state = 'in_flight'
                        AND lease_until < now() - make_interval(secs => $1)
                      RETURNING id, export_id)
                 INSERT INTO outbox (queue, body)
                 SELECT 'pages', jsonb_build_object('type', 'page', 'export_id', export_id, 'task_id', id)
                   FROM stale",
                &[&grace.as_secs_f64()],
            )
            .await?;
        Ok(n)
    }
}
