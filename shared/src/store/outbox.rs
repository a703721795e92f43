//! The outbox: messages written in the transaction that caused them, then
//! published with confirms and marked sent. A message is never lost (it stays
//! until marked) and may be published twice (consumers are idempotent).
//!
//! Also the reconciler's statements that write messages again for tasks
//! whose message was lost: expired leases, idle queued tasks, idle
//! finalizing exports.

use std::time::Duration;

use super::{Store, StoreError};
use crate::model::QueueRole;

#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub id: i64,
    pub queue: QueueRole,
    pub body: serde_json::Value,
}

/// Which unsent messages to publish.
#[derive(Debug, Clone, Copy)]
pub enum OutboxFilter<'a> {
    /// Older than `min_age` (the relay's share), oldest first.
    Pending { min_age: Duration, limit: i64 },
    /// These ids (what the caller's own transaction just wrote).
    Ids(&'a [i64]),
}

impl Store {
    /// Gives a chain's next page back to the queue (its worker meant to
    /// run it itself, and drains, or handed it back unfinished): releases
    /// the claim `claim` holds on task `task_id`, if it holds one, and
    /// marks the message `outbox_id` unsent again, in one statement, for
    /// the relay or the caller to publish after all.
    pub async fn give_back_followed(
        &self,
        task_id: uuid::Uuid,
        claim: Option<&str>,
        outbox_id: i64,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "WITH released AS (
                     UPDATE page_tasks SET state = 'queued', lease_until = NULL, claimed_by = NULL,
                            updated_at = now()
                      WHERE id = $1 AND state = 'in_flight' AND claimed_by = $2)
                 UPDATE outbox SET sent_at = NULL WHERE id = $3",
                &[&task_id, &claim, &outbox_id],
            )
            .await?;
        Ok(())
    }

    /// Locks unsent messages (skipping those another publisher holds), hands
    /// them to `publish`, and marks the ids it returns as sent, all in one
    /// transaction. Two relays, or a relay and a worker, never publish the
    /// same message at the same time; a crash between publish and commit
    /// leaves the message unsent, to be published again (at least once).
    pub async fn publish_outbox<F, Fut, E>(
        &self,
        filter: OutboxFilter<'_>,
        publish: F,
    ) -> Result<(usize, Option<E>), StoreError>
    where
        F: FnOnce(Vec<OutboxMessage>) -> Fut,
        Fut: std::future::Future<Output = (Vec<i64>, Option<E>)>,
    {
        if let OutboxFilter::Ids(ids) = filter {
            if ids.is_empty() {
                return Ok((0, None));
            }
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let rows = match filter {
            OutboxFilter::Pending { min_age, limit } => {
                tx.query(
                    "SELECT id, queue, body FROM outbox
                      WHERE sent_at IS NULL AND created_at <= now() - make_interval(secs => $1)
                      ORDER BY id LIMIT $2
                      FOR UPDATE SKIP LOCKED",
                    &[&min_age.as_secs_f64(), &limit],
                )
                .await?
            }
            OutboxFilter::Ids(ids) => {
                tx.query(
                    "SELECT id, queue, body FROM outbox
                      WHERE id = ANY($1) AND sent_at IS NULL
                      ORDER BY id
                      FOR UPDATE SKIP LOCKED",
                    &[&ids],
                )
                .await?
            }
        };
        let mut messages = Vec::with_capacity(rows.len());
        for r in &rows {
            let queue: String = r.try_get("queue")?;
            // The table's CHECK admits only the known queues.
            let Some(queue) = QueueRole::parse(&queue) else {
                continue;
            };
            messages.push(OutboxMessage {
                id: r.try_get("id")?,
                queue,
                body: r.try_get("body")?,
            });
        }
        if messages.is_empty() {
            return Ok((0, None));
        }
        let (sent, error) = publish(messages).await;
        if !sent.is_empty() {
            tx.execute(
                "UPDATE outbox SET sent_at = now() WHERE id = ANY($1)",
                &[&sent],
            )
            .await?;
        }
        tx.commit().await?;
        Ok((sent.len(), error))
    }

    /// Whether any message waits to be published.
    pub async fn outbox_has_unsent(&self) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE sent_at IS NULL) AS unsent",
                &[],
            )
            .await?;
        Ok(row.try_get("unsent")?)
    }

    /// Re-publishes page tasks whose worker vanished: in flight, with a lease
    /// that ran out more than `grace` ago. (The broker redelivers unacked
    /// messages of a dead connection by itself; this covers a message lost
    /// in between.) Returns how many were re-queued.
    pub async fn requeue_expired(&self, grace: Duration) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                &format!(
                    "WITH stale AS (
                     UPDATE page_tasks SET updated_at = now(), state = 'queued', lease_until = NULL,
                            lost_claims = lost_claims + 1
                      WHERE state = 'in_flight'
                        AND lease_until < now() - make_interval(secs => $1)
                        AND export_id IN ({OPEN_EXPORTS})
                      RETURNING id, export_id)
                 INSERT INTO outbox (queue, body)
                 SELECT 'pages', pagefleet_page_message(export_id, id)
                   FROM stale"
                ),
                &[&grace.as_secs_f64()],
            )
            .await?;
        Ok(n)
    }
}

/// Exports whose tasks may still run: a task of a paused or finished
/// export is never re-published.
const OPEN_EXPORTS: &str = "SELECT id FROM exports WHERE state NOT IN
         ('paused', 'completed', 'completed_with_gaps', 'unverified', 'failed', 'cancelled')";

impl Store {
    /// Re-publishes queued tasks that nothing has touched for `idle`. Call
    /// it only when the pages queue has no ready message and the outbox is
    /// empty: then a queued task with no delivery in sight has lost its
    /// message (a broker dead-lettered it after too many deliveries, or it
    /// was lost in between). A task still sitting unacked in a consumer's
    /// prefetch may be published twice; its second delivery is absorbed.
    pub async fn requeue_idle_queued(&self, idle: Duration) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                &format!(
                    "WITH idle AS (
                     UPDATE page_tasks SET updated_at = now()
                      WHERE state = 'queued' AND not_before IS NULL
                        AND updated_at < now() - make_interval(secs => $1)
                        AND export_id IN ({OPEN_EXPORTS})
                      RETURNING id, export_id)
                 INSERT INTO outbox (queue, body)
                 SELECT 'pages', pagefleet_page_message(export_id, id)
                   FROM idle"
                ),
                &[&idle.as_secs_f64()],
            )
            .await?;
        Ok(n)
    }

    /// Re-publishes the finalize task of exports stuck in `finalizing` for
    /// `idle` (same precondition: the finalize queue is empty).
    pub async fn requeue_idle_finalize(&self, idle: Duration) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "WITH idle AS (
                     UPDATE exports SET updated_at = now()
                      WHERE state = 'finalizing'
                        AND updated_at < now() - make_interval(secs => $1)
                      RETURNING id)
                 INSERT INTO outbox (queue, body)
                 SELECT 'finalize', pagefleet_finalize_message(id)
                   FROM idle",
                &[&idle.as_secs_f64()],
            )
            .await?;
        Ok(n)
    }
}
