//! Firing schedules: exactly one decision per (schedule, slot), however
//! many schedulers run.
//!
//! A firing is one transaction: lock one due schedule row (`FOR UPDATE SKIP
//! LOCKED`, so schedulers share the due schedules instead of waiting on
//! each other), decide its due slots (`schedule::due_slots`, then
//! `schedule::overlap_outcome` for each), write a row per fired slot (the
//! primary key is the slot), create the exports those slots start, and
//! move `next_slot` past now. A scheduler that dies before the commit
//! leaves nothing; after it, everything.

use deadpool_postgres::Transaction;
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::exports::submit_in;
use super::{Store, StoreError, SubmitError};
use crate::model::ExportState;
use crate::schedule::{
    due_slots, overlap_outcome, CatchUpPolicy, CronSchedule, OverlapPolicy, SlotOutcome,
};
use crate::spec::incremental::advanced;
use crate::spec::{ExportSpec, Window};

/// What one firing transaction did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fired {
    pub schedule_id: Uuid,
    pub name: String,
    /// Exports started, by slot.
    pub started: Vec<(OffsetDateTime, Uuid)>,
    pub queued: usize,
    pub skipped: usize,
    pub cancelled: u64,
    pub missed: u64,
    /// Outbox rows of the started exports' first pages, to publish now.
    pub outbox_ids: Vec<i64>,
}

impl Fired {
    /// Nothing fired yet, for `schedule`.
    fn of(schedule: &Locked) -> Fired {
        Fired {
            schedule_id: schedule.id,
            name: schedule.name.clone(),
            ..Fired::default()
        }
    }
}

/// A schedule row locked for firing.
struct Locked {
    id: Uuid,
    tenant_id: String,
    name: String,
    cron: Result<CronSchedule, String>,
    spec: serde_json::Value,
    overlap: OverlapPolicy,
    catch_up: CatchUpPolicy,
    window: time::Duration,
    next_slot: OffsetDateTime,
    now: OffsetDateTime,
}

const LOCKED_COLUMNS: &str = "s.id, s.tenant_id, s.name, s.cron, s.time_zone, s.spec, s.overlap,
    s.catch_up, s.catch_up_window_s, s.next_slot, now() AS now";

fn locked(row: &Row) -> Result<Locked, StoreError> {
    let cron: String = row.try_get("cron")?;
    let zone: String = row.try_get("time_zone")?;
    let overlap: String = row.try_get("overlap")?;
    let catch_up: String = row.try_get("catch_up")?;
    let window: i64 = row.try_get("catch_up_window_s")?;
    Ok(Locked {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        cron: CronSchedule::parse(&cron, &zone).map_err(|e| e.to_string()),
        spec: row.try_get("spec")?,
        overlap: overlap.parse()?,
        catch_up: catch_up.parse()?,
        window: time::Duration::seconds(window),
        next_slot: row.try_get("next_slot")?,
        now: row.try_get("now")?,
    })
}

impl Store {
    /// Fires the due slots of one due schedule, if any is due and not being
    /// fired by another scheduler. Call until it returns `None`.
    pub async fn fire_next_due(&self, fired_by: &str) -> Result<Option<Fired>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                &format!(
                    "SELECT {LOCKED_COLUMNS} FROM schedules s
                      WHERE NOT s.paused AND s.next_slot <= now()
                      ORDER BY s.next_slot LIMIT 1
                      FOR UPDATE SKIP LOCKED"
                ),
                &[],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: Uuid = row.try_get("id")?;
        let fired = match locked(&row) {
            Ok(schedule) => fire_locked(&tx, &schedule, fired_by).await,
            Err(e) => Err(e),
        };
        match fired {
            Ok(fired) => {
                tx.commit().await?;
                Ok(Some(fired))
            }
            // What fails the same way every time (a stored spec this
            // version cannot read) pauses its schedule, saying why, and the
            // others go on firing.
            Err(e) if !e.is_retryable() => {
                drop(tx);
                drop(client);
                self.pause_broken(id, &e).await?;
                Ok(Some(Fired {
                    schedule_id: id,
                    ..Fired::default()
                }))
            }
            Err(e) => Err(e),
        }
    }

    async fn pause_broken(&self, schedule_id: Uuid, e: &StoreError) -> Result<(), StoreError> {
        tracing::error!(schedule = %schedule_id, error = %e, "schedule cannot fire; pausing it");
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        pause(&tx, schedule_id, "firing failed; see the scheduler log").await?;
        tx.commit().await?;
        Ok(())
    }

    /// Starts the slot that waits (`queue_one`) of one schedule whose run
    /// has ended. Call until it returns `None`.
    pub async fn start_next_queued(&self) -> Result<Option<Fired>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                &format!(
                    "SELECT {LOCKED_COLUMNS}, f.slot FROM schedules s
                       JOIN schedule_firings f ON f.schedule_id = s.id AND f.outcome = 'queued'
                      WHERE NOT s.paused AND NOT EXISTS ({RUNNING})
                      ORDER BY f.slot LIMIT 1
                      FOR UPDATE OF s SKIP LOCKED"
                ),
                &[],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let schedule = locked(&row)?;
        let slot: OffsetDateTime = row.try_get("slot")?;
        // The run that ended moves the watermark before this one pins.
        let paused = settle_ended(&tx, schedule.id).await?.is_some();
        let mut fired = Fired::of(&schedule);
        if paused {
            tx.commit().await?;
            return Ok(Some(fired));
        }
        start_run(&tx, &schedule, slot, &mut fired).await?;
        tx.commit().await?;
        Ok(Some(fired))
    }

    /// A slot now, by hand (`run-now`), under the schedule's overlap policy.
    /// `None` when the tenant has no such schedule.
    pub async fn run_schedule_now(
        &self,
        tenant_id: &str,
        name: &str,
        fired_by: &str,
    ) -> Result<Option<Fired>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                &format!(
                    "SELECT {LOCKED_COLUMNS} FROM schedules s
                      WHERE s.tenant_id = $1 AND s.name = $2 FOR UPDATE"
                ),
                &[&tenant_id, &name],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let schedule = locked(&row)?;
        let mut fired = Fired::of(&schedule);
        settle_ended(&tx, schedule.id).await?;
        start_waiting(&tx, &schedule, &mut fired).await?;
        fire_slot(&tx, &schedule, schedule.now, true, fired_by, &mut fired).await?;
        tx.commit().await?;
        Ok(Some(fired))
    }

    /// Counts the outcome of every run that ended since the last call
    /// toward its schedule's consecutive failures, and pauses a schedule
    /// that reached its limit. Returns the schedules paused.
    pub async fn settle_schedule_runs(&self) -> Result<Vec<String>, StoreError> {
        let ids: Vec<Uuid> = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT DISTINCT f.schedule_id FROM schedule_firings f
                       JOIN exports e ON e.id = f.export_id
                      WHERE f.outcome = 'started' AND NOT f.settled AND {ENDED}"
                ),
                &[],
            )
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        let mut paused = Vec::new();
        for id in ids {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // The schedule row first, as a firing takes it: no deadlock.
            let locked = tx
                .query_opt(
                    "SELECT 1 FROM schedules WHERE id = $1 FOR UPDATE SKIP LOCKED",
                    &[&id],
                )
                .await?;
            if locked.is_some() {
                paused.extend(settle_ended(&tx, id).await?);
            }
            tx.commit().await?;
        }
        Ok(paused)
    }
}

/// Counts the schedule's runs that ended (its row locked by the caller):
/// toward its consecutive failures, and a published incremental run's
/// cursor toward its watermark. Returns its name if this paused it.
async fn settle_ended(
    tx: &Transaction<'_>,
    schedule_id: Uuid,
) -> Result<Option<String>, StoreError> {
    let ended = tx
        .query(
            &format!(
                "WITH ended AS (
                     UPDATE schedule_firings f SET settled = true
                       FROM exports e
                      WHERE f.schedule_id = $1 AND e.id = f.export_id
                        AND f.outcome = 'started' AND NOT f.settled AND {ENDED}
                  RETURNING f.slot, f.export_id, f.window_from, f.window_to, e.state)
                 SELECT * FROM ended ORDER BY slot"
            ),
            &[&schedule_id],
        )
        .await?;
    let mut paused = None;
    for row in &ended {
        let state: ExportState = row.try_get::<_, String>("state")?.parse()?;
        if state == ExportState::Completed {
            if let Some(from) = row.try_get::<_, Option<i64>>("window_from")? {
                let window = Window {
                    from,
                    to: row.try_get("window_to")?,
                };
                advance_watermark(tx, schedule_id, row.try_get("export_id")?, &window).await?;
            }
        }
        if let Some(name) = count_outcome(tx, schedule_id, state).await? {
            paused = Some(name);
        }
    }
    Ok(paused)
}

/// Moves the watermark to the largest cursor the published run delivered
/// (or its window's upper bound when it delivered none); never back.
async fn advance_watermark(
    tx: &Transaction<'_>,
    schedule_id: Uuid,
    export_id: Uuid,
    window: &Window,
) -> Result<(), StoreError> {
    let row = tx
        .query_one(
            "SELECT (SELECT max(max_cursor) FROM page_tasks WHERE export_id = $2) AS seen,
                    s.watermark
               FROM schedules s WHERE s.id = $1",
            &[&schedule_id, &export_id],
        )
        .await?;
    let seen: Option<i64> = row.try_get("seen")?;
    let previous: Option<i64> = row.try_get("watermark")?;
    // Set at creation for an incremental schedule; the window's start is
    // the next best floor.
    let next = advanced(previous.unwrap_or(window.from), window, seen);
    tx.execute(
        "UPDATE schedules SET watermark = $2 WHERE id = $1",
        &[&schedule_id, &next],
    )
    .await?;
    Ok(())
}

/// A due schedule's firing, its row locked: the runs that ended counted
/// first (a window pins from the watermark they moved, and a pause they
/// caused stops this firing), then its due slots.
async fn fire_locked(
    tx: &Transaction<'_>,
    schedule: &Locked,
    fired_by: &str,
) -> Result<Fired, StoreError> {
    if settle_ended(tx, schedule.id).await?.is_some() {
        return Ok(Fired::of(schedule));
    }
    match &schedule.cron {
        Ok(cron) => fire_slots(tx, schedule, cron, fired_by).await,
        Err(e) => {
            let reason = format!("its cron expression no longer parses: {e}");
            pause(tx, schedule.id, &reason).await?;
            Ok(Fired::of(schedule))
        }
    }
}

/// A run that has ended: finished, or blocked on dead letters with every
/// other page landed (it waits for an operator; a replay that completes it
/// later publishes its file, but the schedule has counted it a failure and
/// moved on, its watermark where it was).
macro_rules! ended_sql {
    () => {
        "(e.state IN ('completed', 'completed_with_gaps', 'unverified', 'failed', 'cancelled')
          OR (e.state = 'blocked' AND NOT EXISTS (
              SELECT 1 FROM page_tasks t
               WHERE t.export_id = e.id AND t.state IN ('queued', 'in_flight'))))"
    };
}
const ENDED: &str = ended_sql!();

/// Exports of the schedule that are still going.
const RUNNING: &str = concat!(
    "SELECT 1 FROM schedule_firings r JOIN exports e ON e.id = r.export_id
      WHERE r.schedule_id = s.id AND r.outcome = 'started' AND NOT ",
    ended_sql!()
);

async fn fire_slots(
    tx: &Transaction<'_>,
    schedule: &Locked,
    cron: &CronSchedule,
    fired_by: &str,
) -> Result<Fired, StoreError> {
    let due = due_slots(
        cron,
        schedule.next_slot,
        schedule.now,
        schedule.catch_up,
        schedule.window,
    );
    let mut fired = Fired {
        missed: due.missed,
        ..Fired::of(schedule)
    };
    start_waiting(tx, schedule, &mut fired).await?;
    for slot in due.fire {
        fire_slot(tx, schedule, slot, false, fired_by, &mut fired).await?;
    }
    let missed = i64::try_from(due.missed).unwrap_or(i64::MAX);
    match due.next_slot {
        Some(next) => {
            tx.execute(
                "UPDATE schedules SET next_slot = $2, missed_slots = missed_slots + $3
                  WHERE id = $1",
                &[&schedule.id, &next, &missed],
            )
            .await?;
        }
        None => pause(tx, schedule.id, "its cron expression has no further slot").await?,
    }
    Ok(fired)
}

/// Starts the run of a decided slot, or skips it when its spec no longer
/// pins (the schedule is then paused, saying why).
async fn start_run(
    tx: &Transaction<'_>,
    schedule: &Locked,
    slot: OffsetDateTime,
    fired: &mut Fired,
) -> Result<(), StoreError> {
    match create_run(tx, schedule, slot).await? {
        Some((export_id, outbox_ids)) => {
            fired.started.push((slot, export_id));
            fired.outbox_ids.extend(outbox_ids);
        }
        None => {
            mark_skipped(tx, schedule.id, slot).await?;
            fired.skipped += 1;
        }
    }
    Ok(())
}

/// A slot that waited (`queue_one`) starts before any newer slot is
/// decided, once nothing of the schedule runs.
async fn start_waiting(
    tx: &Transaction<'_>,
    schedule: &Locked,
    fired: &mut Fired,
) -> Result<(), StoreError> {
    let waiting = tx
        .query_opt(
            &format!(
                "SELECT q.slot FROM schedule_firings q, schedules s
                  WHERE s.id = $1 AND q.schedule_id = s.id AND q.outcome = 'queued'
                    AND NOT EXISTS ({RUNNING})
                  ORDER BY q.slot LIMIT 1"
            ),
            &[&schedule.id],
        )
        .await?;
    if let Some(row) = waiting {
        start_run(tx, schedule, row.try_get("slot")?, fired).await?;
    }
    Ok(())
}

/// Decides one slot under the overlap policy and records it.
async fn fire_slot(
    tx: &Transaction<'_>,
    schedule: &Locked,
    slot: OffsetDateTime,
    manual: bool,
    fired_by: &str,
    fired: &mut Fired,
) -> Result<(), StoreError> {
    let state = tx
        .query_one(
            &format!(
                "SELECT EXISTS ({RUNNING}) AS running,
                        EXISTS (SELECT 1 FROM schedule_firings q
                                 WHERE q.schedule_id = s.id AND q.outcome = 'queued') AS queued
                   FROM schedules s WHERE s.id = $1"
            ),
            &[&schedule.id],
        )
        .await?;
    let outcome = overlap_outcome(
        schedule.overlap,
        state.try_get("running")?,
        state.try_get("queued")?,
    );
    let recorded = match outcome {
        SlotOutcome::Start | SlotOutcome::CancelThenStart => "started",
        SlotOutcome::Queue => "queued",
        SlotOutcome::Skip => "skipped",
    };
    let inserted = tx
        .execute(
            "INSERT INTO schedule_firings (schedule_id, slot, outcome, fired_by, manual)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[&schedule.id, &slot, &recorded, &fired_by, &manual],
        )
        .await?;
    if inserted == 0 {
        // Decided before (a run-now in the same instant): nothing to do.
        return Ok(());
    }
    match outcome {
        SlotOutcome::Skip => fired.skipped += 1,
        SlotOutcome::Queue => fired.queued += 1,
        SlotOutcome::Start | SlotOutcome::CancelThenStart => {
            if outcome == SlotOutcome::CancelThenStart {
                fired.cancelled += cancel_running(tx, schedule, slot).await?;
            }
            start_run(tx, schedule, slot, fired).await?;
        }
    }
    Ok(())
}

/// Creates the schedule's export in the firing's transaction, with an
/// incremental export's window pinned from the schedule's watermark and
/// recorded on the firing row. `None` when the spec no longer pins (the
/// schedule is paused, saying why).
async fn create_run(
    tx: &Transaction<'_>,
    schedule: &Locked,
    slot: OffsetDateTime,
) -> Result<Option<(Uuid, Vec<i64>)>, StoreError> {
    let spec: ExportSpec =
        serde_json::from_value(schedule.spec.clone()).map_err(|e| StoreError::Corrupt {
            what: "schedule spec",
            export_id: Uuid::nil(),
            message: format!("schedule {}: {e}", schedule.id),
        })?;
    let watermark: Option<i64> = tx
        .query_one(
            "SELECT watermark FROM schedules WHERE id = $1",
            &[&schedule.id],
        )
        .await?
        .try_get("watermark")?;
    let run = match spec.pinned(watermark, schedule.now) {
        Ok(run) => run,
        Err(e) => {
            pause(
                tx,
                schedule.id,
                &format!("its export no longer pins a run: {e}"),
            )
            .await?;
            return Ok(None);
        }
    };
    let submitted = submit_in(tx, &schedule.tenant_id, None, &run.hash(), &run)
        .await
        .map_err(|e| match e {
            SubmitError::Store(e) => e,
            // Without an idempotency key there is nothing to conflict with.
            SubmitError::IdempotencyConflict { key, existing } => StoreError::Corrupt {
                what: "schedule run",
                export_id: existing,
                message: format!("idempotency key {key:?} conflicted"),
            },
        })?;
    let window = run.incremental.as_ref().and_then(|i| i.window);
    tx.execute(
        "UPDATE schedule_firings SET outcome = 'started', export_id = $3,
                window_from = $4, window_to = $5
          WHERE schedule_id = $1 AND slot = $2",
        &[
            &schedule.id,
            &slot,
            &submitted.id,
            &window.map(|w| w.from),
            &window.and_then(|w| w.to),
        ],
    )
    .await?;
    Ok(Some((submitted.id, submitted.outbox_ids)))
}

/// Cancels the schedule's exports that have not begun to finalize.
async fn cancel_running(
    tx: &Transaction<'_>,
    schedule: &Locked,
    slot: OffsetDateTime,
) -> Result<u64, StoreError> {
    let reason = format!(
        "cancelled by schedule {:?}: the run for slot {slot} started (overlap = cancel_running)",
        schedule.name
    );
    Ok(tx
        .execute(
            "UPDATE exports e SET state = 'cancelled', error = $2,
                    finished_at = now(), updated_at = now()
               FROM schedule_firings f
              WHERE f.schedule_id = $1 AND f.outcome = 'started' AND f.export_id = e.id
                AND e.state IN ('planning', 'running', 'blocked', 'paused')",
            &[&schedule.id, &reason],
        )
        .await?)
}

async fn mark_skipped(
    tx: &Transaction<'_>,
    schedule_id: Uuid,
    slot: OffsetDateTime,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE schedule_firings SET outcome = 'skipped' WHERE schedule_id = $1 AND slot = $2",
        &[&schedule_id, &slot],
    )
    .await?;
    Ok(())
}

async fn pause(tx: &Transaction<'_>, schedule_id: Uuid, reason: &str) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE schedules SET paused = true, paused_reason = $2 WHERE id = $1",
        &[&schedule_id, &reason],
    )
    .await?;
    Ok(())
}

/// Counts one ended run; returns the schedule's name when this pauses it.
async fn count_outcome(
    tx: &Transaction<'_>,
    schedule_id: Uuid,
    state: ExportState,
) -> Result<Option<String>, StoreError> {
    let failed = match state {
        // Gaps an operator accepted: the run counts as done (its
        // watermark stays, so the next window reads the gap's range again).
        ExportState::Completed | ExportState::CompletedWithGaps => false,
        ExportState::Failed | ExportState::Unverified | ExportState::Blocked => true,
        // A run cancelled (by the overlap policy) says nothing either way.
        _ => return Ok(None),
    };
    let Some(row) = tx
        .query_opt(
            "SELECT name, consecutive_failures, pause_after_failures, paused
               FROM schedules WHERE id = $1 FOR UPDATE",
            &[&schedule_id],
        )
        .await?
    else {
        return Ok(None); // removed meanwhile
    };
    let current: i32 = row.try_get("consecutive_failures")?;
    let pause_after: i32 = row.try_get("pause_after_failures")?;
    let failures = if failed { current.saturating_add(1) } else { 0 };
    let pause_now =
        failed && !row.try_get::<_, bool>("paused")? && pause_after > 0 && failures >= pause_after;
    let reason =
        format!("paused after {failures} runs in a row ended failed, unverified or blocked");
    tx.execute(
        "UPDATE schedules SET consecutive_failures = $2,
                paused = paused OR $3,
                paused_reason = CASE WHEN $3 THEN $4 ELSE paused_reason END
          WHERE id = $1",
        &[&schedule_id, &failures, &pause_now, &reason],
    )
    .await?;
    Ok(pause_now.then(|| row.try_get("name")).transpose()?)
}
