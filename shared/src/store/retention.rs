//! Staging retention: the staged rows of an export that ended published
//! or cancelled are removed once the fleet's retention has passed, a batch
//! at a time, so Postgres does not grow with every export ever run.
//! Removing is idempotent; the export records when its staging went.

use std::time::Duration;

use uuid::Uuid;

use super::{Store, StoreError};
use crate::lifecycle;

/// An export whose staging outlived the retention.
#[derive(Debug, Clone, PartialEq)]
pub struct Expired {
    pub export_id: Uuid,
    pub state: String,
}

impl Store {
    /// Up to `limit` exports that ended (in a state whose staging nothing
    /// reads again) more than `retention` ago and still have staging,
    /// oldest first.
    pub async fn staging_past_retention(
        &self,
        retention: Duration,
        limit: i64,
    ) -> Result<Vec<Expired>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, state FROM exports
                  WHERE staging_removed_at IS NULL AND finished_at IS NOT NULL
                    AND finished_at < now() - make_interval(secs => $1)
                    AND state = ANY($2)
                  ORDER BY finished_at LIMIT $3",
                &[
                    &retention.as_secs_f64(),
                    &lifecycle::staging_removable_texts(),
                    &limit,
                ],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Expired {
                    export_id: r.try_get("id")?,
                    state: r.try_get("state")?,
                })
            })
            .collect()
    }

    /// Removes the export's next `batch` staged rows after the key `after`
    /// (a short statement each, rather than one that locks and logs
    /// millions of rows at once; paging by key, so no batch walks past the
    /// rows the ones before it removed) and returns the last key removed,
    /// `None` when none was left. The state is checked again in the
    /// statement: nothing goes from an export not ended so.
    pub async fn remove_staged_batch(
        &self,
        export_id: Uuid,
        after: &str,
        batch: i64,
    ) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "WITH doomed AS (
                   SELECT row_key FROM staged_rows
                    WHERE export_id = $1 AND row_key > $2 ORDER BY row_key LIMIT $4),
                 gone AS (
                   DELETE FROM staged_rows s USING doomed d
                    WHERE s.export_id = $1 AND s.row_key = d.row_key
                      AND EXISTS (SELECT 1 FROM exports
                                   WHERE id = $1 AND state = ANY($3) AND finished_at IS NOT NULL)
                   RETURNING s.row_key)
                 SELECT max(row_key) AS last FROM gone",
                &[
                    &export_id,
                    &after,
                    &lifecycle::staging_removable_texts(),
                    &batch,
                ],
            )
            .await?;
        Ok(row.try_get("last")?)
    }

    /// Whether any staged row of the export is left (a key at or before
    /// the first `after` would be: keys are never empty, so none is).
    pub async fn has_staged_rows(&self, export_id: Uuid) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM staged_rows WHERE export_id = $1) AS left",
                &[&export_id],
            )
            .await?;
        Ok(row.try_get("left")?)
    }

    /// Records that the export's staging is gone.
    pub async fn mark_staging_removed(&self, export_id: Uuid) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE exports SET staging_removed_at = now()
                  WHERE id = $1 AND staging_removed_at IS NULL",
                &[&export_id],
            )
            .await?;
        Ok(())
    }
}
