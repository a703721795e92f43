//! Schedules, and the pure decisions of firing them: when a cron expression
//! in a time zone has its slots, which due slots the catch-up policy fires
//! and which it lets go, and what the overlap policy does with a slot that
//! comes while a run of the same schedule is still going.
//!
//! The I/O half is `store::schedules` (one transaction per firing, a row
//! per slot) and the scheduler's `firing` loop.

use std::str::FromStr;

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::model::{is_plain_name, text_enum};
use crate::spec::{ExportSpec, SpecError};

/// The longest catch-up window: a week of missed slots.
pub const MAX_CATCH_UP_WINDOW_S: u64 = 7 * 24 * 3600;
/// At most this many missed slots are fired by one `all` catch-up (the
/// most recent ones); older ones are let go.
pub const MAX_CATCH_UP_RUNS: usize = 50;
/// A slot is on time while it is at most this late (or half the interval
/// to the next slot, when that is shorter).
const ON_TIME: Duration = Duration::seconds(30);

text_enum!(
    /// What a slot does while the schedule's previous run is still going.
    #[derive(Default)]
    OverlapPolicy {
        /// The slot is skipped (recorded as `skipped`).
        #[default]
        Skip => "skip",
        /// The slot waits (one at most) and starts when the run ends.
        QueueOne => "queue_one",
        /// The running export is cancelled and the slot starts.
        CancelRunning => "cancel_running",
    }
);

text_enum!(
    /// What happens to slots that passed while no scheduler ran.
    #[derive(Default)]
    CatchUpPolicy {
        /// One run, for the latest missed slot within the window.
        #[default]
        Once => "once",
        /// A run for every missed slot within the window (the most recent
        /// `MAX_CATCH_UP_RUNS`), oldest first.
        All => "all",
        /// None: only a slot that is on time fires.
        Skip => "skip",
    }
);

/// What `POST /v1/schedules` takes: when to fire, how, and the export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Unique among the tenant's schedules.
    pub name: String,
    /// Five fields (minute granularity) or six (with seconds first).
    pub cron: String,
    /// An IANA time zone (`Europe/Berlin`); slots follow its clock,
    /// daylight-saving changes included.
    #[serde(default = "utc")]
    pub time_zone: String,
    #[serde(default)]
    pub overlap: OverlapPolicy,
    #[serde(default)]
    pub catch_up: CatchUpPolicy,
    /// How late a missed slot may still fire.
    #[serde(default = "default_window")]
    pub catch_up_window_s: u64,
    /// Pause after this many runs in a row ended failed or unverified
    /// (0: never pause).
    #[serde(default = "default_pause_after")]
    pub pause_after_failures: u32,
    pub export: ExportSpec,
}

fn utc() -> String {
    "UTC".into()
}

fn default_window() -> u64 {
    24 * 3600
}

fn default_pause_after() -> u32 {
    3
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    #[error("schedule field `{field}`: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("schedule field `export`: {0}")]
    Export(#[from] SpecError),
}

fn invalid(field: &'static str, message: impl Into<String>) -> ScheduleError {
    ScheduleError::Invalid {
        field,
        message: message.into(),
    }
}

impl ScheduleSpec {
    /// Checks every field; returns the parsed cron expression.
    pub fn validate(&self) -> Result<CronSchedule, ScheduleError> {
        if !is_plain_name(&self.name) {
            return Err(invalid(
                "name",
                "must be 1-64 characters of letters, digits, `_`, `.` or `-`",
            ));
        }
        if self.catch_up_window_s == 0 || self.catch_up_window_s > MAX_CATCH_UP_WINDOW_S {
            return Err(invalid(
                "catch_up_window_s",
                format!("must be between 1 and {MAX_CATCH_UP_WINDOW_S} (a week)"),
            ));
        }
        if self.pause_after_failures > 1000 {
            return Err(invalid("pause_after_failures", "must be at most 1000"));
        }
        self.export.validate()?;
        CronSchedule::parse(&self.cron, &self.time_zone)
    }
}

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    zone: Tz,
}

impl CronSchedule {
    pub fn parse(cron: &str, time_zone: &str) -> Result<CronSchedule, ScheduleError> {
        if cron.len() > 200 {
            return Err(invalid("cron", "longer than 200 characters"));
        }
        let zone = Tz::from_str(time_zone).map_err(|_| {
            invalid(
                "time_zone",
                format!("{time_zone:?} is not an IANA time zone (like `UTC` or `Europe/Berlin`)"),
            )
        })?;
        let parser = CronParser::builder().seconds(Seconds::Optional).build();
        let cron = parser
            .parse(cron)
            .map_err(|e| invalid("cron", format!("{cron:?}: {e}")))?;
        let parsed = CronSchedule { cron, zone };
        if parsed.next_after(OffsetDateTime::now_utc()).is_none() {
            return Err(invalid("cron", "has no future slot"));
        }
        Ok(parsed)
    }

    /// The first slot strictly after `t` (whole seconds).
    pub fn next_after(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let local = Utc
            .timestamp_opt(t.unix_timestamp(), 0)
            .single()?
            .with_timezone(&self.zone);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        OffsetDateTime::from_unix_timestamp(next.timestamp()).ok()
    }

    /// The latest slot at or before `t`.
    pub fn latest_at_or_before(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let local = Utc
            .timestamp_opt(t.unix_timestamp(), 0)
            .single()?
            .with_timezone(&self.zone);
        let previous = self.cron.find_previous_occurrence(&local, true).ok()?;
        OffsetDateTime::from_unix_timestamp(previous.timestamp()).ok()
    }

    /// How late `slot` may be and still be on time: `ON_TIME`, or half the
    /// interval to the next slot when that is shorter.
    pub fn on_time_grace(&self, slot: OffsetDateTime) -> Duration {
        match self.next_after(slot) {
            Some(next) => ON_TIME.min((next - slot) / 2),
            None => ON_TIME,
        }
    }
}

/// Which due slots fire and where the schedule stands afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct DueSlots {
    /// Slots to fire, oldest first.
    pub fire: Vec<OffsetDateTime>,
    /// Due slots the catch-up policy let go (at least this many; slots
    /// older than the window are not counted one by one).
    pub missed: u64,
    /// The first slot after `now`: nothing before it is left to decide.
    pub next_slot: Option<OffsetDateTime>,
}

/// Decides the slots in `[next_slot, now]` under `policy`.
pub fn due_slots(
    schedule: &CronSchedule,
    next_slot: OffsetDateTime,
    now: OffsetDateTime,
    policy: CatchUpPolicy,
    window: Duration,
) -> DueSlots {
    let after = schedule.next_after(now);
    let Some(latest) = schedule
        .latest_at_or_before(now)
        .filter(|s| *s >= next_slot)
    else {
        return DueSlots {
            fire: Vec::new(),
            missed: 0,
            next_slot: after,
        };
    };
    let within = |slot: OffsetDateTime| now - slot <= window;
    let mut due = Vec::new();
    let mut cursor = Some(latest);
    // Walk back from the latest due slot: the recent ones are what fires.
    while let Some(slot) = cursor.filter(|s| *s >= next_slot) {
        if due.len() > MAX_CATCH_UP_RUNS || !within(slot) {
            break;
        }
        due.push(slot);
        cursor = schedule.latest_at_or_before(slot - Duration::seconds(1));
    }
    due.reverse();
    let older_than_window = u64::from(cursor.is_some_and(|s| s >= next_slot));
    let fire: Vec<OffsetDateTime> = match policy {
        CatchUpPolicy::Skip if now - latest <= schedule.on_time_grace(latest) => vec![latest],
        CatchUpPolicy::Skip => Vec::new(),
        CatchUpPolicy::Once if within(latest) => vec![latest],
        CatchUpPolicy::Once => Vec::new(),
        CatchUpPolicy::All => {
            let keep = due.len().min(MAX_CATCH_UP_RUNS);
            due[due.len() - keep..].to_vec()
        }
    };
    let considered = due.len().max(1) as u64;
    DueSlots {
        missed: considered + older_than_window - fire.len() as u64,
        fire,
        next_slot: after,
    }
}

/// What one slot becomes, given the schedule's runs at that moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotOutcome {
    /// Start an export now.
    Start,
    /// Cancel the running export, then start one.
    CancelThenStart,
    /// Wait for the running export to end.
    Queue,
    /// Nothing runs for this slot.
    Skip,
}

/// The overlap policy's answer for a slot, given whether a run is going
/// and whether a slot is already waiting.
pub fn overlap_outcome(policy: OverlapPolicy, running: bool, queued: bool) -> SlotOutcome {
    match (policy, running) {
        (_, false) => SlotOutcome::Start,
        (OverlapPolicy::Skip, true) => SlotOutcome::Skip,
        (OverlapPolicy::QueueOne, true) if queued => SlotOutcome::Skip,
        (OverlapPolicy::QueueOne, true) => SlotOutcome::Queue,
        (OverlapPolicy::CancelRunning, true) => SlotOutcome::CancelThenStart,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn every(seconds: u32) -> CronSchedule {
        CronSchedule::parse(&format!("*/{seconds} * * * * *"), "UTC").unwrap()
    }

    #[test]
    fn slots_follow_the_time_zone_across_a_daylight_saving_change() {
        let nightly = CronSchedule::parse("0 2 * * *", "Europe/Berlin").unwrap();
        // Winter: 02:00 in Berlin is 01:00 UTC.
        let t = datetime!(2026-01-10 12:00 UTC);
        assert_eq!(nightly.next_after(t), Some(datetime!(2026-01-11 01:00 UTC)));
        // Summer: 02:00 in Berlin is 00:00 UTC.
        let t = datetime!(2026-07-10 12:00 UTC);
        assert_eq!(nightly.next_after(t), Some(datetime!(2026-07-11 00:00 UTC)));
    }

    #[test]
    fn bad_expressions_and_zones_name_their_field() {
        let err = CronSchedule::parse("61 * * * *", "UTC").unwrap_err();
        assert!(
            matches!(err, ScheduleError::Invalid { field: "cron", .. }),
            "{err}"
        );
        let err = CronSchedule::parse("0 2 * * *", "Mars/Olympus").unwrap_err();
        assert!(
            matches!(
                err,
                ScheduleError::Invalid {
                    field: "time_zone",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn an_on_time_slot_fires_under_every_policy() {
        let s = every(10);
        let next = datetime!(2026-12-01 10:00:00 UTC);
        let now = datetime!(2026-12-01 10:00:01 UTC);
        for policy in [CatchUpPolicy::Once, CatchUpPolicy::All, CatchUpPolicy::Skip] {
            let due = due_slots(&s, next, now, policy, Duration::hours(1));
            assert_eq!(due.fire, vec![next], "{policy}");
            assert_eq!(due.missed, 0, "{policy}");
            assert_eq!(due.next_slot, Some(datetime!(2026-12-01 10:00:10 UTC)));
        }
    }

    #[test]
    fn nothing_is_due_before_the_next_slot() {
        let s = every(10);
        let next = datetime!(2026-12-01 10:00:10 UTC);
        let now = datetime!(2026-12-01 10:00:05 UTC);
        let due = due_slots(&s, next, now, CatchUpPolicy::All, Duration::hours(1));
        assert!(due.fire.is_empty());
        assert_eq!(due.missed, 0);
        assert_eq!(due.next_slot, Some(next));
    }

    #[test]
    fn missed_slots_follow_the_catch_up_policy() {
        let s = every(10);
        // Down from 10:00:00 to 10:00:26: slots :00, :10, :20 passed.
        let next = datetime!(2026-12-01 10:00:00 UTC);
        let now = datetime!(2026-12-01 10:00:26 UTC);
        let window = Duration::hours(1);
        let all = due_slots(&s, next, now, CatchUpPolicy::All, window);
        assert_eq!(
            all.fire,
            vec![
                datetime!(2026-12-01 10:00:00 UTC),
                datetime!(2026-12-01 10:00:10 UTC),
                datetime!(2026-12-01 10:00:20 UTC)
            ]
        );
        assert_eq!(all.missed, 0);
        let once = due_slots(&s, next, now, CatchUpPolicy::Once, window);
        assert_eq!(once.fire, vec![datetime!(2026-12-01 10:00:20 UTC)]);
        assert_eq!(once.missed, 2);
        // 6 s late is more than half the 10 s interval: not on time.
        let skip = due_slots(&s, next, now, CatchUpPolicy::Skip, window);
        assert!(skip.fire.is_empty());
        assert_eq!(skip.missed, 3);
        for due in [all, once, skip] {
            assert_eq!(due.next_slot, Some(datetime!(2026-12-01 10:00:30 UTC)));
        }
    }

    #[test]
    fn slots_older_than_the_window_never_fire() {
        let s = every(10);
        let next = datetime!(2026-12-01 10:00:00 UTC);
        let now = datetime!(2026-12-01 10:01:05 UTC);
        let window = Duration::seconds(30);
        let all = due_slots(&s, next, now, CatchUpPolicy::All, window);
        assert_eq!(
            all.fire,
            vec![
                datetime!(2026-12-01 10:00:40 UTC),
                datetime!(2026-12-01 10:00:50 UTC),
                datetime!(2026-12-01 10:01:00 UTC)
            ]
        );
        assert!(all.missed >= 1, "the older slots are counted as missed");
        let once = due_slots(
            &s,
            next,
            datetime!(2026-12-01 10:01:09 UTC),
            CatchUpPolicy::Once,
            Duration::seconds(5),
        );
        assert!(once.fire.is_empty(), "the latest slot is 9 s old");
    }

    #[test]
    fn an_all_catch_up_fires_at_most_the_most_recent_runs() {
        let s = every(1);
        let next = datetime!(2026-12-01 10:00:00 UTC);
        let now = datetime!(2026-12-01 10:10:00 UTC);
        let all = due_slots(&s, next, now, CatchUpPolicy::All, Duration::hours(1));
        assert_eq!(all.fire.len(), MAX_CATCH_UP_RUNS);
        assert_eq!(all.fire.last(), Some(&now));
        assert!(all.missed >= 1);
    }

    #[test]
    fn the_overlap_policy_decides_a_slot_while_a_run_is_going() {
        use OverlapPolicy::*;
        for policy in [Skip, QueueOne, CancelRunning] {
            assert_eq!(overlap_outcome(policy, false, false), SlotOutcome::Start);
        }
        assert_eq!(overlap_outcome(Skip, true, false), SlotOutcome::Skip);
        assert_eq!(overlap_outcome(QueueOne, true, false), SlotOutcome::Queue);
        assert_eq!(overlap_outcome(QueueOne, true, true), SlotOutcome::Skip);
        assert_eq!(
            overlap_outcome(CancelRunning, true, false),
            SlotOutcome::CancelThenStart
        );
    }
}
