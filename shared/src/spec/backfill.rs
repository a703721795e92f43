//! `[backfill]`: years of history as one export, one partition per window
//! (`(from, to]` cut into `window`s), each walked in parallel within the
//! rate limit with its own checkpoint, one CSV at the end.
//!
//! A window too big for the source is split in two, recursively: when its
//! first page states more records than `split_above`, or than the source's
//! deep-pagination cap lets a walk reach (`max_offset`, to whole pages). The
//! window's halves become new partitions; the split is recorded (and
//! shown in the manifest), and the split window's own page counts toward
//! nothing, so its rows come from its halves alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::incremental::CursorFormat;
use super::{invalid, PartitionSpec, SpecError};
use crate::pagination::{Counts, Statement};

/// Most windows one backfill may plan.
pub const MAX_WINDOWS: usize = 10_000;
/// Most partitions a backfill may reach by splitting: a window still too
/// big then is refused (a dead letter naming it), not split further.
pub const MAX_PARTITIONS: i32 = 20_000;

impl BackfillSpec {
    /// The thresholds make sense for pages of `page_size`: a cap below one
    /// page would split every window down to `min_window`.
    pub fn validate_for(&self, page_size: u32) -> Result<(), SpecError> {
        let page = u64::from(page_size);
        if self.split_above.is_some_and(|n| n < page) {
            return Err(invalid(
                "backfill.split_above",
                "must be at least `page_size`",
            ));
        }
        if self.max_offset.is_some_and(|n| n < page) {
            return Err(invalid(
                "backfill.max_offset",
                "must be at least `page_size`",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillSpec {
    /// The range's lower bound (exclusive), in `format`.
    pub from: String,
    /// Its upper bound (inclusive).
    pub to: String,
    /// Each window's length: `<n><unit>`, unit `s`, `m`, `h`, `d`, `w`, or
    /// `mo` (calendar months, UTC).
    pub window: String,
    /// How a bound reads (`rfc3339`, `unix`, `unix_ms`, `integer`).
    pub format: CursorFormat,
    pub since_param: String,
    pub until_param: String,
    /// Split a window whose first page states more records than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_above: Option<u64>,
    /// The source's deepest offset: a window whose walk (its pages and the
    /// one past its end) would ask past it is split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_offset: Option<u64>,
    /// Windows are never split below this (cursor units).
    #[serde(default = "default_min_window")]
    pub min_window: i64,
}

fn default_min_window() -> i64 {
    1
}

/// A window's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Units(i64),
    Months(u32),
}

/// A window's bounds were asked to split: the halves' parameters and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub halves: [BTreeMap<String, String>; 2],
    pub reason: String,
}

impl BackfillSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        let (from, to) = self.bounds()?;
        if to <= from {
            return Err(invalid("backfill.to", "must be after `from`"));
        }
        self.step()?;
        if self.since_param.is_empty()
            || self.until_param.is_empty()
            || self.since_param == self.until_param
        {
            return Err(invalid(
                "backfill.since_param",
                "`since_param` and `until_param` must be two different parameters",
            ));
        }
        if self.min_window < 1 || i128::from(self.min_window) > i128::from(to) - i128::from(from) {
            return Err(invalid(
                "backfill.min_window",
                "must be at least 1 and at most the range",
            ));
        }
        let windows = self.windows()?;
        if windows.len() > MAX_WINDOWS {
            return Err(invalid(
                "backfill.window",
                format!(
                    "cuts the range into {} windows; at most {MAX_WINDOWS}",
                    windows.len()
                ),
            ));
        }
        Ok(())
    }

    fn bounds(&self) -> Result<(i64, i64), SpecError> {
        let from = self
            .format
            .parse(&self.from)
            .map_err(|e| invalid("backfill.from", e))?;
        let to = self
            .format
            .parse(&self.to)
            .map_err(|e| invalid("backfill.to", e))?;
        Ok((from, to))
    }

    fn step(&self) -> Result<Step, SpecError> {
        let text = self.window.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (n, unit) = text.split_at(split);
        let bad = || {
            invalid(
                "backfill.window",
                format!("{text:?}: use <n><unit>, unit s, m, h, d, w or mo (like `1mo` or `7d`)"),
            )
        };
        let n: i64 = n.parse().map_err(|_| bad())?;
        if !(1..=1_000_000).contains(&n) {
            return Err(bad());
        }
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "mo" if self.format != CursorFormat::Integer => {
                return Ok(Step::Months(u32::try_from(n).map_err(|_| bad())?))
            }
            _ => return Err(bad()),
        };
        Ok(match self.format {
            CursorFormat::Integer if unit == "s" => Step::Units(n),
            CursorFormat::Integer => return Err(bad()),
            CursorFormat::UnixMs => Step::Units(n * seconds * 1000),
            _ => Step::Units(n * seconds),
        })
    }

    /// The windows `(a, b]` that cover `(from, to]`, in order; the last
    /// one ends at `to`. (An integer cursor's window is `<n>s`: n ids.)
    pub fn windows(&self) -> Result<Vec<(i64, i64)>, SpecError> {
        let (from, to) = self.bounds()?;
        let step = self.step()?;
        let mut windows = Vec::new();
        let mut start = from;
        while start < to {
            let end = match step {
                Step::Units(n) => start.saturating_add(n),
                Step::Months(n) => add_months(start, n, self.format),
            }
            .min(to);
            if end <= start || windows.len() > MAX_WINDOWS {
                break;
            }
            windows.push((start, end));
            start = end;
        }
        Ok(windows)
    }

    /// One partition per window.
    pub fn partitions(&self) -> Result<Vec<PartitionSpec>, SpecError> {
        Ok(self
            .windows()?
            .into_iter()
            .map(|(a, b)| PartitionSpec {
                params: self.window_params(a, b),
            })
            .collect())
    }

    fn window_params(&self, from: i64, to: i64) -> BTreeMap<String, String> {
        BTreeMap::from([
            (self.since_param.clone(), self.format.render(from)),
            (self.until_param.clone(), self.format.render(to)),
        ])
    }

    /// Whether the partition whose first page stated `stated` must be split
    /// before it is walked, and into what.
    pub fn split(
        &self,
        params: &BTreeMap<String, String>,
        stated: &[Statement],
        page_size: u32,
    ) -> Option<Split> {
        let total = stated
            .iter()
            .filter(|s| s.counts == Counts::Records)
            .map(|s| s.value)
            .max()?;
        // A walk asks for every page up to the one past the stated end
        // (the sentinel): the last offset it sends is the total rounded up
        // to a page, so a total up to the cap rounded down to a page fits.
        let page = u64::from(page_size.max(1));
        let reachable = self.max_offset.map(|offset| offset / page * page);
        let (limit, why) = match (self.split_above, reachable) {
            (Some(above), Some(reach)) if reach < above => (reach, "the source's deepest offset"),
            (Some(above), _) => (above, "`split_above`"),
            (None, Some(reach)) => (reach, "the source's deepest offset"),
            (None, None) => return None,
        };
        if total <= limit {
            return None;
        }
        let from = self.format.parse(params.get(&self.since_param)?).ok()?;
        let to = self.format.parse(params.get(&self.until_param)?).ok()?;
        Some(Split {
            halves: self.halve(params)?,
            reason: format!(
                "the window ({}, {}] states {total} records, more than {why} allows ({limit})",
                self.format.render(from),
                self.format.render(to)
            ),
        })
    }

    /// A window's two halves, `None` when its parameters are not a window
    /// of this backfill or a half would be shorter than `min_window`.
    pub fn halve(
        &self,
        params: &BTreeMap<String, String>,
    ) -> Option<[BTreeMap<String, String>; 2]> {
        let from = self.format.parse(params.get(&self.since_param)?).ok()?;
        let to = self.format.parse(params.get(&self.until_param)?).ok()?;
        // Wide arithmetic: bounds near the ends of i64 neither overflow
        // nor wrap into a window that splits forever.
        let width = i128::from(to) - i128::from(from);
        if width / 2 < i128::from(self.min_window) {
            return None;
        }
        let middle = i64::try_from(i128::from(from) + width / 2).ok()?;
        let mut halves = [
            self.window_params(from, middle),
            self.window_params(middle, to),
        ];
        // The window's other parameters (the ones every partition shares)
        // stay on both halves.
        for half in &mut halves {
            for (k, v) in params {
                half.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        Some(halves)
    }
}

/// `t` (cursor units) plus `n` calendar months, UTC; the day of the month
/// is kept where the month has it, else the month's last day.
fn add_months(t: i64, n: u32, format: CursorFormat) -> i64 {
    let (seconds, scale) = match format {
        CursorFormat::UnixMs => (t.div_euclid(1000), 1000),
        _ => (t, 1),
    };
    let Ok(at) = OffsetDateTime::from_unix_timestamp(seconds) else {
        return i64::MAX;
    };
    let months = i64::from(u8::from(at.month())) - 1 + i64::from(n);
    let year = at.year() as i64 + months.div_euclid(12);
    let Ok(month) = time::Month::try_from((months.rem_euclid(12) + 1) as u8) else {
        return i64::MAX;
    };
    let Ok(year) = i32::try_from(year) else {
        return i64::MAX;
    };
    let day = at.day().min(time::util::days_in_month(month, year));
    match time::Date::from_calendar_date(year, month, day) {
        Ok(date) => date.with_time(at.time()).assume_utc().unix_timestamp() * scale,
        Err(_) => i64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn year_of_months() -> BackfillSpec {
        BackfillSpec {
            from: "2025-01-01T00:00:00Z".into(),
            to: "2026-01-01T00:00:00Z".into(),
            window: "1mo".into(),
            format: CursorFormat::Rfc3339,
            since_param: "created_after".into(),
            until_param: "created_before".into(),
            split_above: None,
            max_offset: Some(1000),
            min_window: 60,
        }
    }

    #[test]
    fn a_year_of_months_is_twelve_windows_that_tile_the_range() {
        let spec = year_of_months();
        spec.validate().unwrap();
        let windows = spec.windows().unwrap();
        assert_eq!(windows.len(), 12);
        assert_eq!(
            windows[0].0,
            datetime!(2025-01-01 00:00 UTC).unix_timestamp()
        );
        assert_eq!(
            windows[1].0,
            datetime!(2025-02-01 00:00 UTC).unix_timestamp()
        );
        assert_eq!(
            windows[2].0,
            datetime!(2025-03-01 00:00 UTC).unix_timestamp()
        );
        assert_eq!(
            windows[11].1,
            datetime!(2026-01-01 00:00 UTC).unix_timestamp()
        );
        for pair in windows.windows(2) {
            assert_eq!(pair[0].1, pair[1].0, "no gap, no overlap");
        }
        let partitions = spec.partitions().unwrap();
        assert_eq!(
            partitions[1].params["created_after"],
            "2025-02-01T00:00:00Z"
        );
        assert_eq!(
            partitions[1].params["created_before"],
            "2025-03-01T00:00:00Z"
        );
    }

    #[test]
    fn the_last_window_ends_at_the_range_and_month_ends_are_kept() {
        let spec = BackfillSpec {
            from: "2025-01-31T00:00:00Z".into(),
            to: "2025-04-15T00:00:00Z".into(),
            ..year_of_months()
        };
        let windows = spec.windows().unwrap();
        let ends: Vec<_> = windows.iter().map(|w| w.1).collect();
        assert_eq!(
            ends,
            vec![
                datetime!(2025-02-28 00:00 UTC).unix_timestamp(),
                datetime!(2025-03-28 00:00 UTC).unix_timestamp(),
                datetime!(2025-04-15 00:00 UTC).unix_timestamp(),
            ]
        );
    }

    #[test]
    fn a_window_past_the_deepest_offset_splits_in_half() {
        let spec = year_of_months();
        let params = spec.window_params(0, 1000);
        let stated = |n| vec![Statement::records("body total", n)];
        assert_eq!(
            spec.split(&params, &stated(1000), 100),
            None,
            "1000 is reachable"
        );
        let split = spec.split(&params, &stated(1001), 100).unwrap();
        assert_eq!(
            split.halves[0]["created_before"],
            split.halves[1]["created_after"]
        );
        assert!(
            split.reason.contains("1001") && split.reason.contains("deepest offset"),
            "{}",
            split.reason
        );
        assert_eq!(
            spec.split(&params, &[], 100),
            None,
            "no statement, no split"
        );
        // Whole pages: with pages of 300 the walk's last offset is 900.
        assert!(spec.split(&params, &stated(901), 300).is_some());
        assert!(spec.split(&params, &stated(900), 300).is_none());
        // Never below the smallest window.
        let narrow = spec.window_params(0, 100);
        assert_eq!(spec.split(&narrow, &stated(5000), 100), None);
        let above = BackfillSpec {
            split_above: Some(500),
            ..year_of_months()
        };
        assert!(above
            .split(&params, &stated(501), 100)
            .unwrap()
            .reason
            .contains("split_above"));
    }

    #[test]
    fn bad_ranges_and_windows_name_their_field() {
        for (spec, field) in [
            (
                BackfillSpec {
                    to: "2024-01-01T00:00:00Z".into(),
                    ..year_of_months()
                },
                "backfill.to",
            ),
            (
                BackfillSpec {
                    window: "1fortnight".into(),
                    ..year_of_months()
                },
                "backfill.window",
            ),
            (
                BackfillSpec {
                    window: "1s".into(),
                    ..year_of_months()
                },
                "backfill.window",
            ),
            (
                BackfillSpec {
                    from: "then".into(),
                    ..year_of_months()
                },
                "backfill.from",
            ),
        ] {
            let err = spec.validate().unwrap_err();
            assert!(err.to_string().contains(field), "{err}");
        }
    }
}
