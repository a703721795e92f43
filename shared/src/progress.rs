//! How far an export is, when it will be done, and where its time goes:
//! the ETA from the pages left and the pace (the source's rate, or the
//! pace seen so far when that is slower), and the time its pages spent
//! fetching, waiting for tokens, retrying, parked, waiting for a worker
//! and finalizing, with the biggest named ("why slow").

use serde::{Deserialize, Serialize};

/// Where an export's time went, in seconds. The page times are summed
/// over its pages, which run side by side: they add up to more than the
/// wall time, and their shares are what tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimeBreakdown {
    pub fetching_s: f64,
    pub waiting_for_tokens_s: f64,
    pub retrying_s: f64,
    pub parked_s: f64,
    pub waiting_for_a_worker_s: f64,
    /// Wall time of the latest finalize.
    pub finalizing_s: f64,
}

impl TimeBreakdown {
    /// The share that took the most, when any took time.
    pub fn slowest(&self) -> Option<(&'static str, f64)> {
        [
            ("fetching pages from the source", self.fetching_s),
            ("waiting for rate-limit tokens", self.waiting_for_tokens_s),
            ("waiting to retry failed requests", self.retrying_s),
            ("parked until the source has tokens", self.parked_s),
            ("waiting for a worker", self.waiting_for_a_worker_s),
            ("finalizing the CSV", self.finalizing_s),
        ]
        .into_iter()
        .filter(|(_, s)| *s > 0.0)
        .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// One sentence on why the export takes the time it does.
    pub fn why_slow(&self, source_rate: Option<f64>) -> Option<String> {
        let (what, seconds) = self.slowest()?;
        let total = self.fetching_s
            + self.waiting_for_tokens_s
            + self.retrying_s
            + self.parked_s
            + self.waiting_for_a_worker_s
            + self.finalizing_s;
        let share = 100.0 * seconds / total.max(f64::EPSILON);
        let hint = match (what, source_rate) {
            (
                "waiting for rate-limit tokens" | "parked until the source has tokens",
                Some(rate),
            ) => {
                format!(
                    ": the source's rate ({}) bounds this export",
                    per_second(rate)
                )
            }
            ("waiting to retry failed requests", _) => ": the source is failing requests".into(),
            ("waiting for a worker", _) => {
                ": the workers are busy (more workers, or more concurrency)".into()
            }
            ("fetching pages from the source", _) => ": the source answers slowly".into(),
            _ => String::new(),
        };
        Some(format!("{share:.0} % of the time is spent {what}{hint}"))
    }
}

/// Where an export's time went, by phase, with the rows each moved a
/// second: what its manifest records. Page phases are summed over pages,
/// which run side by side, so they can add up to more than the wall time;
/// their rows a second are per page at a time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// From the export's start to the published file.
    pub wall: Phase,
    /// Sending requests and reading the answers.
    pub fetching: Phase,
    /// Turning answers into rows and storing them.
    pub landing: Phase,
    /// From the export turning `finalizing` to the published file.
    pub finalizing: Phase,
}

/// One phase: how long it took and how many rows it moved a second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub seconds: f64,
    /// `None` when it took no measurable time.
    pub rows_per_s: Option<f64>,
}

impl Phase {
    fn of(rows: u64, seconds: f64) -> Phase {
        let seconds = seconds.max(0.0);
        Phase {
            seconds,
            rows_per_s: (seconds > 0.0).then(|| rows as f64 / seconds),
        }
    }
}

impl Phases {
    /// The phases of an export of `rows` rows, from the seconds each took.
    pub fn of(
        rows: u64,
        wall_s: f64,
        fetching_s: f64,
        landing_s: f64,
        finalizing_s: f64,
    ) -> Phases {
        Phases {
            wall: Phase::of(rows, wall_s),
            fetching: Phase::of(rows, fetching_s),
            landing: Phase::of(rows, landing_s),
            finalizing: Phase::of(rows, finalizing_s),
        }
    }
}

/// What the ETA is worked out from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub pages_landed: i64,
    pub pages_planned: i64,
    /// Every partition knows its last page.
    pub total_known: bool,
    /// Seconds since the export started.
    pub elapsed_s: f64,
    /// The spec's `rate_limit.rate`, requests per second.
    pub source_rate: Option<f64>,
}

/// When an export will have landed every page.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Eta {
    pub pages_remaining: i64,
    /// Pages a second it is worked out at.
    pub pages_per_s: f64,
    pub seconds: f64,
}

/// Landed pages before the pace seen is trusted over the source's rate.
const PAGES_BEFORE_PACE: i64 = 5;

/// The ETA, when the pages left are known: at the source's rate, or at
/// the pace seen so far when that is slower (retries, a shared key, few
/// workers). `None` while a chain's length is still being learned.
pub fn eta(pace: Pace) -> Option<Eta> {
    if !pace.total_known {
        return None;
    }
    let remaining = (pace.pages_planned - pace.pages_landed).max(0);
    let seen = (pace.pages_landed >= PAGES_BEFORE_PACE && pace.elapsed_s > 0.0)
        .then(|| pace.pages_landed as f64 / pace.elapsed_s);
    let rate = match (pace.source_rate.filter(|r| *r > 0.0), seen) {
        (Some(r), Some(s)) => r.min(s),
        (Some(r), None) => r,
        (None, Some(s)) => s,
        (None, None) => return None,
    };
    Some(Eta {
        pages_remaining: remaining,
        pages_per_s: rate,
        seconds: remaining as f64 / rate,
    })
}

/// One line on the rate an export's source runs at: learned or stated,
/// and the spec's rate beside a learned one.
pub fn rate_line(source_rate: Option<f64>, stated_rate: Option<f64>, learned: bool) -> String {
    let rate = per_second;
    match (source_rate, stated_rate, learned) {
        (Some(r), Some(s), true) => format!(
            "{} learned from the source (the spec states {})",
            rate(r),
            rate(s)
        ),
        (Some(r), None, true) => {
            format!("{} learned from the source (the spec states none)", rate(r))
        }
        (_, Some(s), false) => format!("{} as the spec states (nothing learned yet)", rate(s)),
        _ => "not learned yet (the spec states none: the fleet starts low and finds the limit)"
            .to_string(),
    }
}

/// A rate as people read it: `50/s`, `4.85/s`.
fn per_second(rate: f64) -> String {
    if rate >= 10.0 || rate.fract() == 0.0 {
        format!("{rate:.0}/s")
    } else {
        format!("{rate:.2}/s")
    }
}

/// Seconds as `1h 02m`, `3m 05s` or `42s`.
pub fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// An age as people write it: `90s`, `30m`, `2h`, `7d`; seconds.
pub fn parse_age(text: &str) -> Option<f64> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let scale = match unit {
        's' => 1.0,
        'm' => 60.0,
        'h' => 3600.0,
        'd' => 86_400.0,
        _ => return None,
    };
    let n: u32 = text[..text.len() - 1].parse().ok()?;
    Some(f64::from(n) * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(landed: i64, planned: i64, elapsed_s: f64, rate: Option<f64>) -> Pace {
        Pace {
            pages_landed: landed,
            pages_planned: planned,
            total_known: true,
            elapsed_s,
            source_rate: rate,
        }
    }

    #[test]
    fn the_eta_goes_at_the_slower_of_the_source_rate_and_the_pace_seen() {
        // 10 pages in 20 s is 0.5/s, slower than the rate of 2/s.
        let e = eta(pace(10, 30, 20.0, Some(2.0))).unwrap();
        assert_eq!(e.pages_remaining, 20);
        assert_eq!(e.pages_per_s, 0.5);
        assert_eq!(e.seconds, 40.0);
        // Faster than the rate: the rate bounds it.
        assert_eq!(eta(pace(100, 130, 10.0, Some(2.0))).unwrap().seconds, 15.0);
        // Too few pages to trust the pace: the rate alone.
        assert_eq!(eta(pace(2, 12, 100.0, Some(5.0))).unwrap().seconds, 2.0);
    }

    #[test]
    fn no_eta_while_a_chain_is_being_learned_or_nothing_tells_the_pace() {
        let mut learning = pace(10, 11, 5.0, Some(1.0));
        learning.total_known = false;
        assert_eq!(eta(learning), None);
        assert_eq!(eta(pace(0, 10, 0.0, None)), None);
        assert_eq!(eta(pace(10, 10, 4.0, Some(1.0))).unwrap().seconds, 0.0);
    }

    #[test]
    fn ages_parse_in_their_units_and_nothing_else() {
        assert_eq!(parse_age("90s"), Some(90.0));
        assert_eq!(parse_age("2h"), Some(7200.0));
        assert_eq!(parse_age("7d"), Some(604_800.0));
        for bad in ["", "h", "2", "-2h", "2w", "1.5h"] {
            assert_eq!(parse_age(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_rate_line_says_where_the_rate_comes_from() {
        assert_eq!(
            rate_line(Some(4.851), Some(50.0), true),
            "4.85/s learned from the source (the spec states 50/s)"
        );
        assert_eq!(
            rate_line(Some(12.0), None, true),
            "12/s learned from the source (the spec states none)"
        );
        assert_eq!(
            rate_line(Some(50.0), Some(50.0), false),
            "50/s as the spec states (nothing learned yet)"
        );
        assert!(rate_line(None, None, false).starts_with("not learned yet"));
    }

    #[test]
    fn each_phase_says_its_time_and_the_rows_it_moved_a_second() {
        let p = Phases::of(1_000_000, 10.0, 20.0, 5.0, 2.0);
        assert_eq!(p.wall.rows_per_s, Some(100_000.0));
        // Summed over pages side by side: more than the wall time.
        assert_eq!(p.fetching.seconds, 20.0);
        assert_eq!(p.landing.rows_per_s, Some(200_000.0));
        assert_eq!(p.finalizing.rows_per_s, Some(500_000.0));
        // No time measured: no rate, not infinity.
        assert_eq!(Phases::of(5, 0.0, 0.0, -1.0, 0.0).landing.rows_per_s, None);
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(human_duration(42.4), "42s");
        assert_eq!(human_duration(185.0), "3m 05s");
        assert_eq!(human_duration(3720.0), "1h 02m");
        assert_eq!(human_duration(-3.0), "0s");
    }

    #[test]
    fn why_slow_names_the_biggest_share_and_what_it_means() {
        let time = TimeBreakdown {
            fetching_s: 10.0,
            waiting_for_tokens_s: 30.0,
            ..TimeBreakdown::default()
        };
        assert_eq!(
            time.why_slow(Some(1.0)).unwrap(),
            "75 % of the time is spent waiting for rate-limit tokens: the source's rate (1/s) \
             bounds this export"
        );
        let retrying = TimeBreakdown {
            retrying_s: 3.0,
            fetching_s: 1.0,
            ..TimeBreakdown::default()
        };
        assert!(retrying
            .why_slow(None)
            .unwrap()
            .contains("the source is failing requests"));
        assert_eq!(TimeBreakdown::default().why_slow(None), None);
    }
}
