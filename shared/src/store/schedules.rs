//! Schedules in Postgres: create, list, show with their runs, pause,
//! resume, remove. Firing them is `store::firing`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::model::{new_id, ExportState};
use crate::schedule::{CatchUpPolicy, CronSchedule, OverlapPolicy, ScheduleSpec};

/// A schedule as its tenant sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ScheduleRecord {
    pub id: Uuid,
    pub name: String,
    pub cron: String,
    pub time_zone: String,
    pub overlap: OverlapPolicy,
    pub catch_up: CatchUpPolicy,
    pub catch_up_window_s: u64,
    pub pause_after_failures: u32,
    pub paused: bool,
    pub paused_reason: Option<String>,
    pub consecutive_failures: u32,
    /// Slots the catch-up policy let go (at least this many).
    pub missed_slots: u64,
    /// The next slot to be decided.
    #[serde(with = "time::serde::rfc3339")]
    pub next_slot: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// One fired slot and, when it started one, its export.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ScheduleRun {
    #[serde(with = "time::serde::rfc3339")]
    pub slot: OffsetDateTime,
    /// `started`, `queued` or `skipped`.
    pub outcome: String,
    pub manual: bool,
    pub export_id: Option<Uuid>,
    pub export_state: Option<ExportState>,
    pub fired_by: String,
    /// An incremental run's window `(from, to]`, in cursor units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_from: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_to: Option<i64>,
}

/// Most schedules one tenant may keep.
pub const MAX_SCHEDULES_PER_TENANT: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum CreateScheduleError {
    #[error("a schedule named {name:?} already exists")]
    NameTaken { name: String },
    #[error("the tenant has {MAX_SCHEDULES_PER_TENANT} schedules, the most it may keep; remove one first")]
    TooMany,
    #[error("schedule {name:?}: its cron expression has no future slot")]
    NoFutureSlot { name: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

const COLUMNS: &str = "id, name, cron, time_zone, overlap, catch_up, catch_up_window_s,
    pause_after_failures, paused, paused_reason, consecutive_failures, missed_slots,
    next_slot, created_at";

fn record(row: &tokio_postgres::Row) -> Result<ScheduleRecord, StoreError> {
    let overlap: String = row.try_get("overlap")?;
    let catch_up: String = row.try_get("catch_up")?;
    let count = |column: &str| -> Result<u32, StoreError> {
        Ok(u32::try_from(row.try_get::<_, i32>(column)?).unwrap_or(0))
    };
    let big = |column: &str| -> Result<u64, StoreError> {
        Ok(u64::try_from(row.try_get::<_, i64>(column)?).unwrap_or(0))
    };
    Ok(ScheduleRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        cron: row.try_get("cron")?,
        time_zone: row.try_get("time_zone")?,
        overlap: overlap.parse()?,
        catch_up: catch_up.parse()?,
        catch_up_window_s: big("catch_up_window_s")?,
        pause_after_failures: count("pause_after_failures")?,
        paused: row.try_get("paused")?,
        paused_reason: row.try_get("paused_reason")?,
        consecutive_failures: count("consecutive_failures")?,
        missed_slots: big("missed_slots")?,
        next_slot: row.try_get("next_slot")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Stores a validated schedule; its first slot is the first after now.
    pub async fn create_schedule(
        &self,
        tenant_id: &str,
        spec: &ScheduleSpec,
        cron: &CronSchedule,
    ) -> Result<ScheduleRecord, CreateScheduleError> {
        let first = cron.next_after(OffsetDateTime::now_utc()).ok_or_else(|| {
            CreateScheduleError::NoFutureSlot {
                name: spec.name.clone(),
            }
        })?;
        let export = serde_json::to_value(&spec.export).map_err(|e| StoreError::Corrupt {
            what: "schedule spec",
            export_id: Uuid::nil(),
            message: e.to_string(),
        })?;
        let client = self.client().await?;
        let kept: i64 = client
            .query_one(
                "SELECT count(*) FROM schedules WHERE tenant_id = $1",
                &[&tenant_id],
            )
            .await
            .map_err(StoreError::from)?
            .try_get(0)
            .map_err(StoreError::from)?;
        if kept >= MAX_SCHEDULES_PER_TENANT {
            return Err(CreateScheduleError::TooMany);
        }
        let window = i64::try_from(spec.catch_up_window_s).unwrap_or(i64::MAX);
        // An incremental schedule's watermark starts at its `start`: a run
        // that finds nothing never takes it below.
        let watermark = match &spec.export.incremental {
            Some(incremental) => {
                Some(incremental.start_units().map_err(|e| StoreError::Corrupt {
                    what: "schedule spec",
                    export_id: Uuid::nil(),
                    message: e.to_string(),
                })?)
            }
            None => None,
        };
        let pause_after = i32::try_from(spec.pause_after_failures).unwrap_or(i32::MAX);
        let row = client
            .query_opt(
                &format!(
                    "INSERT INTO schedules (id, tenant_id, name, cron, time_zone, spec, overlap,
                         catch_up, catch_up_window_s, pause_after_failures, next_slot, watermark)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     ON CONFLICT (tenant_id, name) DO NOTHING
                     RETURNING {COLUMNS}"
                ),
                &[
                    &new_id(),
                    &tenant_id,
                    &spec.name,
                    &spec.cron,
                    &spec.time_zone,
                    &export,
                    &spec.overlap.as_str(),
                    &spec.catch_up.as_str(),
                    &window,
                    &pause_after,
                    &first,
                    &watermark,
                ],
            )
            .await
            .map_err(StoreError::from)?;
        match row {
            Some(row) => Ok(record(&row)?),
            None => Err(CreateScheduleError::NameTaken {
                name: spec.name.clone(),
            }),
        }
    }

    pub async fn list_schedules(&self, tenant_id: &str) -> Result<Vec<ScheduleRecord>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {COLUMNS} FROM schedules WHERE tenant_id = $1 ORDER BY name"),
                &[&tenant_id],
            )
            .await?;
        rows.iter().map(record).collect()
    }

    /// The tenant's schedule by name; `None` for another tenant's.
    pub async fn schedule(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<Option<ScheduleRecord>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {COLUMNS} FROM schedules WHERE tenant_id = $1 AND name = $2"),
                &[&tenant_id, &name],
            )
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// The export spec the tenant's schedule runs.
    pub async fn schedule_export(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<Option<crate::spec::ExportSpec>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT id, spec FROM schedules WHERE tenant_id = $1 AND name = $2",
                &[&tenant_id, &name],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let spec: serde_json::Value = row.try_get("spec")?;
        serde_json::from_value(spec)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                what: "schedule spec",
                export_id: Uuid::nil(),
                message: e.to_string(),
            })
    }

    /// The schedule's most recent fired slots, newest first.
    pub async fn schedule_runs(
        &self,
        schedule_id: Uuid,
        limit: i64,
    ) -> Result<Vec<ScheduleRun>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT f.slot, f.outcome, f.manual, f.export_id, f.fired_by, e.state,
                        f.window_from, f.window_to
                   FROM schedule_firings f LEFT JOIN exports e ON e.id = f.export_id
                  WHERE f.schedule_id = $1
                  ORDER BY f.slot DESC LIMIT $2",
                &[&schedule_id, &limit],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let state: Option<String> = row.try_get("state")?;
                Ok(ScheduleRun {
                    slot: row.try_get("slot")?,
                    outcome: row.try_get("outcome")?,
                    manual: row.try_get("manual")?,
                    export_id: row.try_get("export_id")?,
                    export_state: state.map(|s| s.parse()).transpose()?,
                    fired_by: row.try_get("fired_by")?,
                    window_from: row.try_get("window_from")?,
                    window_to: row.try_get("window_to")?,
                })
            })
            .collect()
    }

    /// Pauses the tenant's schedule; false when there is none.
    pub async fn pause_schedule(
        &self,
        tenant_id: &str,
        name: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE schedules SET paused = true, paused_reason = $3
                  WHERE tenant_id = $1 AND name = $2",
                &[&tenant_id, &name, &reason],
            )
            .await?;
        Ok(n > 0)
    }

    /// Resumes the tenant's schedule from `next_slot` (the first slot after
    /// now: slots that passed while paused do not catch up) with its
    /// failure count reset; false when there is none.
    pub async fn resume_schedule(
        &self,
        tenant_id: &str,
        name: &str,
        next_slot: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE schedules SET paused = false, paused_reason = NULL,
                        consecutive_failures = 0, next_slot = $3
                  WHERE tenant_id = $1 AND name = $2",
                &[&tenant_id, &name, &next_slot],
            )
            .await?;
        Ok(n > 0)
    }

    /// Forgets `skipped` slots decided more than `keep` ago (a schedule
    /// that fires every second behind a long run writes one a second);
    /// started and queued slots stay. Past slots need no row to stay
    /// decided: `next_slot` is beyond them. Returns how many went.
    pub async fn prune_skipped_firings(
        &self,
        keep: std::time::Duration,
    ) -> Result<u64, StoreError> {
        Ok(self
            .client()
            .await?
            .execute(
                "DELETE FROM schedule_firings
                  WHERE outcome = 'skipped' AND fired_at < now() - make_interval(secs => $1)",
                &[&keep.as_secs_f64()],
            )
            .await?)
    }

    /// Removes the tenant's schedule and its firing record (its exports
    /// stay); false when there is none.
    pub async fn delete_schedule(&self, tenant_id: &str, name: &str) -> Result<bool, StoreError> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM schedules WHERE tenant_id = $1 AND name = $2",
                &[&tenant_id, &name],
            )
            .await?;
        Ok(n > 0)
    }
}
