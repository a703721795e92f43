//! The fleet at a glance, for the scheduler's gauges: exports by state,
//! page tasks by state, open dead letters, and the exports still going
//! with their progress.

use uuid::Uuid;

use super::{Store, StoreError};

/// At most this many exports still going get gauges of their own.
pub const MAX_EXPORT_GAUGES: i64 = 200;

#[derive(Debug, Clone, Default)]
pub struct FleetSnapshot {
    pub exports_by_state: Vec<(String, i64)>,
    pub tasks_by_state: Vec<(String, i64)>,
    pub dead_letters_open: i64,
    pub active: Vec<ActiveExport>,
}

#[derive(Debug, Clone)]
pub struct ActiveExport {
    pub id: Uuid,
    pub pages_remaining: i64,
    pub retries: i64,
    pub rate_limited: i64,
    /// Seconds since the export's row last changed (a landing, a park, a
    /// dead letter, an operator's action).
    pub idle_seconds: i64,
}

impl Store {
    pub async fn fleet_snapshot(&self) -> Result<FleetSnapshot, StoreError> {
        let client = self.client().await?;
        let pairs = |rows: Vec<tokio_postgres::Row>| -> Result<Vec<(String, i64)>, StoreError> {
            rows.iter()
                .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
                .collect()
        };
        let exports = client
            .query(
                "SELECT state, count(*) AS n FROM exports GROUP BY state",
                &[],
            )
            .await?;
        let tasks = client
            .query(
                "SELECT CASE WHEN state = 'queued' AND not_before IS NOT NULL THEN 'parked'
                             ELSE state END AS state, count(*) AS n
                   FROM page_tasks GROUP BY 1",
                &[],
            )
            .await?;
        let dead: i64 = client
            .query_one(
                "SELECT count(*) AS n FROM dead_letters WHERE resolved_at IS NULL",
                &[],
            )
            .await?
            .try_get("n")?;
        let active = client
            .query(
                "SELECT id, GREATEST(pages_planned - pages_landed, 0) AS remaining, retries,
                        rate_limited,
                        EXTRACT(EPOCH FROM now() - updated_at)::int8 AS idle
                   FROM exports
                  WHERE state IN ('planning', 'running', 'blocked', 'paused', 'finalizing')
                  ORDER BY id DESC LIMIT $1",
                &[&MAX_EXPORT_GAUGES],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(ActiveExport {
                    id: r.try_get("id")?,
                    pages_remaining: r.try_get("remaining")?,
                    retries: r.try_get("retries")?,
                    rate_limited: r.try_get("rate_limited")?,
                    idle_seconds: r.try_get("idle")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(FleetSnapshot {
            exports_by_state: pairs(exports)?,
            tasks_by_state: pairs(tasks)?,
            dead_letters_open: dead,
            active,
        })
    }
}
