//! A change log the test writes and the fleet reads incrementally:
//! `GET /changes?updated_since=&updated_until=&starting_after=&limit=`
//! answers `{"data": [...], "has_more": bool}` with the records whose
//! `updated_at` (RFC 3339, whole seconds) is in `(since, until]`, by id
//! after `starting_after` (keyset pages: a record that changes while the
//! log is read leaves the window without moving any other). Each record is
//! `{"id", "updated_at", "rev", "name"}`; every upsert is kept, so a test
//! can ask what the source held at any instant.
//!
//! With `offset=` the same log pages by position instead, stating the
//! window's `total`, and refuses (400) an offset deeper than the cap a
//! test set: a source with a deep-pagination limit.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::server::lock;

/// What `pagefleet-mock` seeds for examples/backfill.toml: records per
/// month of 2025 (five times as many in March) and the log's offset cap.
pub const BACKFILL_PER_MONTH: u64 = 400;
pub const BACKFILL_MAX_OFFSET: usize = 1000;

/// Every version of every record, in the order written.
#[derive(Default)]
pub struct Changes {
    versions: Mutex<BTreeMap<u64, Vec<Version>>>,
    max_offset: Mutex<Option<usize>>,
}

#[derive(Debug, Clone, Copy)]
struct Version {
    updated_at: i64,
    rev: u32,
}

/// One page of the log, as `serve` answers it.
pub(crate) struct Query {
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub after: Option<u64>,
    pub offset: Option<usize>,
    pub limit: usize,
}

impl Changes {
    /// Writes a new version of `id` (a new record when it has none),
    /// stamped now.
    pub fn upsert(&self, id: u64) {
        self.upsert_at(id, OffsetDateTime::now_utc().unix_timestamp());
    }

    /// Writes a new version of `id` stamped `updated_at` (unix seconds).
    pub fn upsert_at(&self, id: u64, updated_at: i64) {
        let mut versions = lock(&self.versions);
        let history = versions.entry(id).or_default();
        let rev = history.last().map_or(0, |v| v.rev + 1);
        history.push(Version { updated_at, rev });
    }

    /// Records `1..=n`, stamped evenly over the day before `now` (unix
    /// seconds), the last one at `now`: a history to export incrementally.
    pub fn seed_history(&self, n: u64, now: i64) {
        let step = 86_400 / n.max(1) as i64;
        for id in 1..=n {
            let age = (n - id) as i64 * step.max(1);
            self.upsert_at(id, now - age);
        }
    }

    /// A year of history for a backfill: `per_month` records in each month
    /// of 2025 and five times as many in March, ids from `first_id`, each
    /// month's evenly inside it. Returns the ids it wrote.
    pub fn seed_2025(&self, first_id: u64, per_month: u64) -> std::ops::Range<u64> {
        let mut id = first_id;
        for month in 1..=12u8 {
            let start = month_start(2025, month);
            let end = if month == 12 {
                month_start(2026, 1)
            } else {
                month_start(2025, month + 1)
            };
            let n = if month == 3 { per_month * 5 } else { per_month };
            let step = (end - start - 1) / n.max(1) as i64;
            for j in 0..n as i64 {
                self.upsert_at(id, start + 1 + j * step);
                id += 1;
            }
        }
        first_id..id
    }

    /// The records as the source held them at `t`: for each id, its latest
    /// version stamped at or before `t`.
    pub fn at(&self, t: i64) -> BTreeMap<u64, Value> {
        let versions = lock(&self.versions);
        versions
            .iter()
            .filter_map(|(id, history)| {
                let version = history.iter().rev().find(|v| v.updated_at <= t)?;
                Some((*id, record(*id, *version)))
            })
            .collect()
    }

    /// The current version of every record.
    pub fn now(&self) -> BTreeMap<u64, Value> {
        let versions = lock(&self.versions);
        versions
            .iter()
            .filter_map(|(id, history)| Some((*id, record(*id, *history.last()?))))
            .collect()
    }

    /// Refuse offsets deeper than `max` (or none, with `None`).
    pub fn set_max_offset(&self, max: Option<usize>) {
        *lock(&self.max_offset) = max;
    }

    /// The offset page, or the refusal of a too-deep offset.
    pub(crate) fn offset_page(&self, query: &Query, offset: usize) -> Result<Value, String> {
        if let Some(max) = *lock(&self.max_offset) {
            if offset > max {
                return Err(format!(
                    "offset {offset} is deeper than this API allows ({max}); narrow the query"
                ));
            }
        }
        let versions = lock(&self.versions);
        let inside: Vec<Value> = versions
            .iter()
            .filter_map(|(id, history)| {
                let current = history.last()?;
                let inside = query.since.is_none_or(|s| current.updated_at > s)
                    && query.until.is_none_or(|u| current.updated_at <= u);
                inside.then(|| record(*id, *current))
            })
            .collect();
        let total = inside.len();
        let data: Vec<Value> = inside.into_iter().skip(offset).take(query.limit).collect();
        Ok(json!({ "data": data, "total": total }))
    }

    pub(crate) fn page(&self, query: &Query) -> Value {
        let versions = lock(&self.versions);
        let mut data = Vec::new();
        let mut has_more = false;
        let after = query.after.map_or(0, |a| a + 1);
        for (id, history) in versions.range(after..) {
            let Some(current) = history.last() else {
                continue;
            };
            let inside = query.since.is_none_or(|s| current.updated_at > s)
                && query.until.is_none_or(|u| current.updated_at <= u);
            if !inside {
                continue;
            }
            if data.len() == query.limit {
                has_more = true;
                break;
            }
            data.push(record(*id, *current));
        }
        json!({ "data": data, "has_more": has_more })
    }
}

fn record(id: u64, version: Version) -> Value {
    let updated_at = OffsetDateTime::from_unix_timestamp(version.updated_at)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default();
    json!({
        "id": id,
        "updated_at": updated_at,
        "rev": version.rev,
        "name": format!("record {id} rev {}", version.rev),
    })
}

fn month_start(year: i32, month: u8) -> i64 {
    time::Month::try_from(month)
        .ok()
        .and_then(|m| time::Date::from_calendar_date(year, m, 1).ok())
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .unwrap_or(0)
}

/// A query parameter as RFC 3339, or `Err` naming it.
pub(crate) fn instant(name: &str, value: &str) -> Result<i64, String> {
    OffsetDateTime::parse(value, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| format!("{name} is not RFC 3339: {value:?}"))
}
