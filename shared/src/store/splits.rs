//! Splitting a backfill window too big for the source: in the landing of
//! the window's first page, the partition is marked split (and planned to
//! its end), two partitions take its halves with a first page each, and
//! the split is recorded. The split page stages nothing and states
//! nothing, so the window's rows and counts come from its halves alone.

use deadpool_postgres::Transaction;
use serde_json::json;
use uuid::Uuid;

use super::exports::{insert_first_task, insert_partition, write_page_message};
use super::landing::{bump_counters, LandingTask, Merged};
use super::{Landed, StoreError};
use crate::model::RequestCounts;
use crate::spec::backfill::MAX_PARTITIONS;
use crate::spec::Split;

/// One recorded split, as the manifest shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PartitionSplit {
    pub partition: i32,
    pub params: serde_json::Value,
    pub into: Vec<i32>,
    pub reason: String,
}

pub(super) async fn split_partition(
    tx: &Transaction<'_>,
    task_id: Uuid,
    task: &LandingTask,
    split: &Split,
    counts: RequestCounts,
) -> Result<Landed, StoreError> {
    let halved = split_into(
        tx,
        task_id,
        task.export_id,
        &task.tenant_id,
        task.partition_no,
        split,
    )
    .await?;
    let Some(outbox_ids) = halved else {
        // The caller rolls back: the page becomes a dead letter saying so.
        return Ok(Landed::Refused {
            reason: format!("{}; {}", split.reason, too_many_partitions()),
        });
    };
    bump_counters(tx, task, 2, 1, Merged::default(), counts).await?;
    Ok(Landed::Page {
        rows_inserted: 0,
        rows_replaced: 0,
        outbox_ids,
        finalize: false,
        chain_next: None,
    })
}

pub(super) fn too_many_partitions() -> String {
    format!("splits stop at {MAX_PARTITIONS} partitions")
}

/// Marks the partition split (and planned to its end), makes two
/// partitions of its halves with a first page each (carrying the task's
/// overrides), and records the split. Returns the halves' outbox ids, or
/// `None` when the export has too many partitions to split again. The
/// caller counts the two new pages and the split page.
pub(super) async fn split_into(
    tx: &Transaction<'_>,
    task_id: Uuid,
    export_id: Uuid,
    tenant_id: &str,
    partition_no: i32,
    split: &Split,
) -> Result<Option<Vec<i64>>, StoreError> {
    let partitions: i32 = tx
        .query_one(
            &tx.prepare_cached("SELECT partitions FROM exports WHERE id = $1")
                .await?,
            &[&export_id],
        )
        .await?
        .try_get("partitions")?;
    if partitions.saturating_add(2) > MAX_PARTITIONS {
        return Ok(None);
    }
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "UPDATE partitions SET split = true, planned_all = true
              WHERE export_id = $1 AND partition_no = $2
          RETURNING params",
            )
            .await?,
            &[&export_id, &partition_no],
        )
        .await?;
    let params: serde_json::Value = row.try_get("params")?;
    // Partitions are numbered 0..n: the halves are n and n + 1. The update
    // locks the export's row, so two splits of one export number in turn.
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "UPDATE exports SET partitions = partitions + 2 WHERE id = $1
          RETURNING partitions - 2 AS first_new",
            )
            .await?,
            &[&export_id],
        )
        .await?;
    let first_new: i32 = row.try_get("first_new")?;
    // The halves start where the window did: its first page's position
    // (the task being split may be a later page of it).
    let task = tx
        .query_one(
            &tx.prepare_cached(
                "SELECT f.position, t.overrides FROM page_tasks t
               JOIN page_tasks f ON f.export_id = t.export_id AND f.partition_no = t.partition_no
                                AND f.page_no = 0
              WHERE t.id = $1",
            )
            .await?,
            &[&task_id],
        )
        .await?;
    let first: serde_json::Value = task.try_get("position")?;
    let overrides: Option<serde_json::Value> = task.try_get("overrides")?;
    let mut outbox_ids = Vec::with_capacity(2);
    let mut into = Vec::with_capacity(2);
    for (i, half) in split.halves.iter().enumerate() {
        let no = first_new + i as i32;
        insert_partition(tx, export_id, no, &json!(half), &first).await?;
        let task = insert_first_task(tx, export_id, tenant_id, no, &first).await?;
        if overrides.is_some() {
            tx.execute(
                &tx.prepare_cached("UPDATE page_tasks SET overrides = $2 WHERE id = $1")
                    .await?,
                &[&task, &overrides],
            )
            .await?;
        }
        outbox_ids.push(write_page_message(tx, export_id, task).await?);
        into.push(no);
    }
    tx.execute(
        &tx.prepare_cached("INSERT INTO partition_splits (export_id, partition_no, params, into_partitions, reason)
         VALUES ($1, $2, $3, $4, $5)").await?,
        &[&export_id, &partition_no, &params, &into, &split.reason],
    )
    .await?;
    tracing::info!(export = %export_id, partition = partition_no, into = ?into, reason = %split.reason, "window split");
    Ok(Some(outbox_ids))
}

impl super::Store {
    /// The export's recorded splits, in partition order.
    pub async fn partition_splits(
        &self,
        export_id: Uuid,
    ) -> Result<Vec<PartitionSplit>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT partition_no, params, into_partitions, reason FROM partition_splits
                  WHERE export_id = $1 ORDER BY partition_no",
                &[&export_id],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(PartitionSplit {
                    partition: row.try_get("partition_no")?,
                    params: row.try_get("params")?,
                    into: row.try_get("into_partitions")?,
                    reason: row.try_get("reason")?,
                })
            })
            .collect()
    }
}
