//! What to do after a request: classify the outcome, and how long to wait.
//!
//! Owns the retry rules of the design: 2xx is success, 429 is rate-limited
//! (wait `Retry-After`, fleet-wide), 408 and 5xx and every transport or body
//! failure are transient (capped exponential backoff with full jitter), and
//! 400/401/403/404/422 (and any other 4xx) are permanent. Retries are capped by
//! attempts and by total time.

use std::time::{Duration, SystemTime};

use rand::RngExt;

use crate::spec::RetrySpec;

/// The class of a finished attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success,
    /// HTTP 429. `retry_after` is `None` when the header was absent or useless
    /// (zero, negative, past or unparseable values): back off instead.
    RateLimited {
        retry_after: Option<Duration>,
    },
    Transient {
        reason: String,
    },
    Permanent {
        reason: String,
    },
}

/// Classifies an HTTP status. Success still needs a body that parses; the
/// caller downgrades a bad body to `Transient`.
pub fn classify_status(status: u16) -> StatusClass {
    match status {
        200..=299 => StatusClass::Success,
        429 => StatusClass::RateLimited,
        408 | 500..=599 => StatusClass::Transient,
        _ => StatusClass::Permanent,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Success,
    RateLimited,
    Transient,
    Permanent,
}

/// Parses `Retry-After` as delta-seconds or as an HTTP date.
///
/// `now` is the local clock; when the response carried a `Date` header, the
/// HTTP-date form is measured against it instead, so a source whose clock is
/// off by minutes still means "N seconds from now". Zero, negative, past or
/// unparseable values give `None`: the caller must back off rather than retry
/// at once, the failure mode that turns a 429 into a storm.
pub fn parse_retry_after(value: &str, now: SystemTime, date: Option<&str>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<i64>() {
        return (secs > 0).then(|| Duration::from_secs(secs as u64).min(MAX_RETRY_AFTER));
    }
    if let Ok(secs) = value.parse::<f64>() {
        // Clamp before converting: a huge value must not overflow Duration.
        // A positive value below a nanosecond converts to zero, which is
        // no wait at all.
        return (secs.is_finite() && secs > 0.0)
            .then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())))
            .filter(|wait| !wait.is_zero());
    }
    let when = httpdate::parse_http_date(value).ok()?;
    let reference = date
        .and_then(|d| httpdate::parse_http_date(d.trim()).ok())
        .unwrap_or(now);
    let wait = when.duration_since(reference).ok()?;
    (!wait.is_zero()).then(|| wait.min(MAX_RETRY_AFTER))
}

/// A source asking for more than this is treated as asking for this: an
/// absurd header must not park a fleet for a day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// Full jitter: uniform in `[0, min(cap, base * 2^attempt))`. `attempt`
/// counts from 0 for the first retry.
pub fn full_jitter(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = backoff_ceiling(attempt, base, cap);
    let ms = ceiling.as_millis() as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..ms))
}

/// The exponential ceiling `min(cap, base * 2^attempt)` without overflow.
pub fn backoff_ceiling(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

/// Tracks one task's attempts against the spec's caps.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    spec: RetrySpec,
    attempts: u32,
    rate_limited: u32,
    started: std::time::Instant,
}

/// 429s do not use up attempts (the source is healthy, only busy), but there
/// is still a ceiling so a source that never stops throttling ends in the
/// dead letters instead of looping.
const MAX_RATE_LIMITED_PER_TASK: u32 = 50;

impl RetryBudget {
    pub fn new(spec: &RetrySpec) -> Self {
        RetryBudget {
            spec: spec.clone(),
            attempts: 0,
            rate_limited: 0,
            started: std::time::Instant::now(),
        }
    }

    /// Records a failed attempt and returns how long to wait before the next
    /// one, or `None` when the task is exhausted.
    pub fn next_delay(&mut self, outcome: &Outcome) -> Option<Duration> {
        let elapsed = self.started.elapsed();
        let delay = match outcome {
            Outcome::Success | Outcome::Permanent { .. } => return None,
            Outcome::RateLimited { retry_after } => {
                self.rate_limited += 1;
                if self.rate_limited > MAX_RATE_LIMITED_PER_TASK {
                    return None;
                }
                match retry_after {
                    Some(wait) => *wait,
                    None => self.backoff(self.rate_limited - 1),
                }
            }
            Outcome::Transient { .. } => {
                self.attempts += 1;
                if self.attempts >= self.spec.max_attempts {
                    return None;
                }
                self.backoff(self.attempts - 1)
            }
        };
        let limit = Duration::from_millis(self.spec.max_elapsed_ms);
        (elapsed + delay <= limit).then_some(delay)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        full_jitter(
            attempt,
            Duration::from_millis(self.spec.base_ms),
            Duration::from_millis(self.spec.cap_ms),
        )
    }

    /// A budget that continues where a parked task left off.
    pub fn resume(spec: &RetrySpec, failed_attempts: u32, failing_for: Duration) -> Self {
        let mut budget = RetryBudget::new(spec);
        budget.attempts = failed_attempts;
        budget.started = std::time::Instant::now()
            .checked_sub(failing_for)
            .unwrap_or(budget.started);
        budget
    }

    pub fn failed_attempts(&self) -> u32 {
        self.attempts
    }

    /// The backoff a transient failure would get now, without counting it.
    pub fn peek_backoff(&self) -> Duration {
        self.backoff(self.attempts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify_status(200), StatusClass::Success);
        assert_eq!(classify_status(204), StatusClass::Success);
        assert_eq!(classify_status(429), StatusClass::RateLimited);
        for s in [408, 500, 502, 503, 504, 599] {
            assert_eq!(classify_status(s), StatusClass::Transient, "{s}");
        }
        for s in [400, 401, 403, 404, 410, 422] {
            assert_eq!(classify_status(s), StatusClass::Permanent, "{s}");
        }
    }

    #[test]
    fn retry_after_seconds() {
        let now = at(1_000_000);
        assert_eq!(
            parse_retry_after("3", now, None),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after(" 120 ", now, None),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("1.5", now, None),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("0", now, None), None);
        assert_eq!(parse_retry_after("-5", now, None), None);
        assert_eq!(parse_retry_after("", now, None), None);
        assert_eq!(parse_retry_after("soon", now, None), None);
        assert_eq!(parse_retry_after("NaN", now, None), None);
        assert_eq!(
            parse_retry_after("99999999", now, None),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999", now, None),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("1e300", now, None), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn a_retry_after_below_a_nanosecond_is_no_wait_at_all() {
        // Found by `make fuzz`: a tiny positive value rounded to a zero
        // Duration and was returned as "retry now", the storm a useless
        // header must not cause.
        let now = at(1_000_000);
        for tiny in ["0.0000000001", "1e-300", "4.9e-324"] {
            assert_eq!(parse_retry_after(tiny, now, None), None, "{tiny}");
        }
        assert_eq!(
            parse_retry_after("0.000000001", now, None),
            Some(Duration::from_nanos(1))
        );
    }

    #[test]
    fn retry_after_http_date() {
        let now = at(1_700_000_000);
        let later = httpdate::fmt_http_date(at(1_700_000_007));
        assert_eq!(
            parse_retry_after(&later, now, None),
            Some(Duration::from_secs(7))
        );
        let past = httpdate::fmt_http_date(at(1_699_999_990));
        assert_eq!(parse_retry_after(&past, now, None), None);
        let same = httpdate::fmt_http_date(now);
        assert_eq!(parse_retry_after(&same, now, None), None);
    }

    #[test]
    fn retry_after_date_is_measured_against_the_response_date() {
        // The source's clock is 1 hour behind ours: its date says "5 s after
        // my now", which must mean 5 s, not "an hour ago".
        let ours = at(1_700_003_600);
        let theirs = httpdate::fmt_http_date(at(1_700_000_000));
        let until = httpdate::fmt_http_date(at(1_700_000_005));
        assert_eq!(
            parse_retry_after(&until, ours, Some(&theirs)),
            Some(Duration::from_secs(5))
        );
        // A garbage Date header falls back to our clock.
        assert_eq!(parse_retry_after(&until, ours, Some("garbage")), None);
    }

    #[test]
    fn jitter_stays_under_the_ceiling() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        for attempt in 0..40 {
            // The ceiling, computed the long way: base * 2^attempt, capped.
            let doubled = 100u128 << attempt.min(100);
            let expected = Duration::from_millis(doubled.min(2_000) as u64);
            let ceiling = backoff_ceiling(attempt, base, cap);
            assert_eq!(ceiling, expected, "attempt {attempt}");
            let draws: Vec<Duration> = (0..50).map(|_| full_jitter(attempt, base, cap)).collect();
            assert!(
                draws.iter().all(|d| *d < ceiling),
                "attempt {attempt}: {draws:?}"
            );
            // Spread over the whole range, not stuck at one value: the odds
            // that 50 uniform draws all fall in the lower half are 2^-50.
            let highest = draws.iter().max().copied().unwrap_or_default();
            assert!(highest >= ceiling / 2, "attempt {attempt}: {draws:?}");
        }
        assert_eq!(backoff_ceiling(0, base, cap), base);
        assert_eq!(backoff_ceiling(3, base, cap), Duration::from_millis(800));
        assert_eq!(backoff_ceiling(5, base, cap), cap);
        assert_eq!(backoff_ceiling(u32::MAX, base, cap), cap);
    }

    #[test]
    fn jitter_is_spread_out() {
        let base = Duration::from_millis(1000);
        let draws: Vec<_> = (0..200).map(|_| full_jitter(0, base, base)).collect();
        let low = draws.iter().filter(|d| d.as_millis() < 500).count();
        assert!((40..160).contains(&low), "{low} of 200 under half");
    }

    #[test]
    fn budget_caps_attempts() {
        let spec = RetrySpec {
            max_attempts: 3,
            max_elapsed_ms: 60_000,
            base_ms: 1,
            cap_ms: 2,
            ..RetrySpec::default()
        };
        let mut budget = RetryBudget::new(&spec);
        let t = Outcome::Transient {
            reason: "503".into(),
        };
        assert!(budget.next_delay(&t).is_some());
        assert!(budget.next_delay(&t).is_some());
        assert!(budget.next_delay(&t).is_none());
        assert!(budget
            .next_delay(&Outcome::Permanent {
                reason: "404".into()
            })
            .is_none());
    }

    #[test]
    fn budget_caps_total_time() {
        let spec = RetrySpec {
            max_attempts: 100,
            max_elapsed_ms: 1_000,
            base_ms: 1,
            cap_ms: 1,
            ..RetrySpec::default()
        };
        let mut budget = RetryBudget::new(&spec);
        let wait = Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(5)),
        };
        assert!(
            budget.next_delay(&wait).is_none(),
            "5 s wait exceeds a 1 s budget"
        );
    }

    #[test]
    fn rate_limits_do_not_use_attempts() {
        let spec = RetrySpec {
            max_attempts: 2,
            max_elapsed_ms: 60_000,
            base_ms: 1,
            cap_ms: 1,
            ..RetrySpec::default()
        };
        let mut budget = RetryBudget::new(&spec);
        let limited = Outcome::RateLimited { retry_after: None };
        for _ in 0..10 {
            assert!(budget.next_delay(&limited).is_some());
        }
        assert_eq!(budget.failed_attempts(), 0);
    }
}
