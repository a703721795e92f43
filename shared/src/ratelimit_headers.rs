//! What a source says about its own rate limit, read from its response
//! headers (pure).
//!
//! Understood: `X-RateLimit-Limit/Remaining/Reset` (reset as seconds from
//! now, or as a Unix time when it is that large), the IETF drafts'
//! `RateLimit-Limit/Remaining/Reset` headers, and the combined
//! `RateLimit: limit=100, remaining=5, reset=3` and structured
//! `RateLimit: "default";r=5;t=3` forms; and the rate a source's policy
//! states, `q` requests per `w` seconds, from `RateLimit-Policy:
//! "default";q=100;w=60` (or `100;w=60`, also inside `RateLimit-Limit`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;

/// The source's view of its budget for this credential.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceBudget {
    pub limit: Option<u64>,
    pub remaining: u64,
    /// When the budget is back (full, or the window resets).
    pub reset: Option<Duration>,
    /// Requests per second the source's stated policy allows.
    pub policy_rate: Option<f64>,
}

/// Reset values above this are Unix timestamps, not delays.
const EPOCH_THRESHOLD: u64 = 1_000_000_000;

pub fn parse(headers: &HeaderMap, now: SystemTime) -> Option<SourceBudget> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let num = |v: Option<&str>| {
        v.and_then(|v| v.parse::<f64>().ok())
            .filter(|n| n.is_finite() && *n >= 0.0)
    };

    let policy_rate = ["ratelimit-policy", "ratelimit-limit", "x-ratelimit-limit"]
        .into_iter()
        .find_map(|name| get(name).and_then(policy_rate));
    for prefix in ["x-ratelimit-", "ratelimit-"] {
        if let Some(remaining) = num(get(&format!("{prefix}remaining"))) {
            return Some(SourceBudget {
                limit: get(&format!("{prefix}limit"))
                    .and_then(|v| num(v.split([',', ';']).next()))
                    .map(|n| n as u64),
                remaining: remaining as u64,
                reset: num(get(&format!("{prefix}reset"))).map(|r| reset_delay(r, now)),
                policy_rate,
            });
        }
    }
    let combined = get("ratelimit")?;
    let mut limit = None;
    let mut remaining = None;
    let mut reset = None;
    for part in combined.split([',', ';']) {
        let mut kv = part.splitn(2, '=');
        let key = kv.next().unwrap_or("").trim().to_ascii_lowercase();
        let value = kv.next().map(|v| v.trim().trim_matches('"'));
        let value = num(value);
        match key.as_str() {
            "limit" | "q" => limit = value.map(|n| n as u64),
            "remaining" | "r" => remaining = value.map(|n| n as u64),
            "reset" | "t" => reset = value.map(|r| reset_delay(r, now)),
            _ => {}
        }
    }
    Some(SourceBudget {
        limit,
        remaining: remaining?,
        reset,
        policy_rate,
    })
}

/// The strictest rate of the policies in a `RateLimit-Policy` value (or a
/// `RateLimit-Limit` carrying them after its limit): `q` (or the leading
/// number) over `w` seconds. A policy without a window states no rate.
/// The strictest, because the fleet must keep to all of them: 120 a
/// minute and 1,000 a day is 1,000 a day at 0.0116/s.
fn policy_rate(value: &str) -> Option<f64> {
    (value.split(','))
        .filter_map(one_policy_rate)
        .min_by(f64::total_cmp)
}

fn one_policy_rate(first: &str) -> Option<f64> {
    let mut quota = None;
    let mut window = None;
    for (i, part) in first.split(';').enumerate() {
        let mut kv = part.splitn(2, '=');
        let key = kv.next().unwrap_or("").trim();
        match (key, kv.next().map(str::trim)) {
            ("q", Some(v)) => quota = v.parse::<f64>().ok(),
            ("w", Some(v)) => window = v.parse::<f64>().ok(),
            (n, None) if i == 0 => quota = n.parse::<f64>().ok(),
            _ => {}
        }
    }
    let (quota, window) = (quota?, window?);
    let rate = quota / window;
    (quota > 0.0 && window > 0.0 && rate.is_finite()).then_some(rate)
}

fn reset_delay(value: f64, now: SystemTime) -> Duration {
    let capped = value.min(crate::retry::MAX_RETRY_AFTER.as_secs_f64());
    if value >= EPOCH_THRESHOLD as f64 {
        UNIX_EPOCH
            .checked_add(Duration::from_secs(value as u64))
            .map_or(crate::retry::MAX_RETRY_AFTER, |at| {
                at.duration_since(now).unwrap_or(Duration::ZERO)
            })
            .min(crate::retry::MAX_RETRY_AFTER)
    } else {
        Duration::from_secs_f64(capped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn x_ratelimit_headers() {
        let h = headers(&[
            ("X-RateLimit-Limit", "10"),
            ("X-RateLimit-Remaining", "3"),
            ("X-RateLimit-Reset", "2"),
        ]);
        assert_eq!(
            parse(&h, at(0)),
            Some(SourceBudget {
                limit: Some(10),
                remaining: 3,
                reset: Some(Duration::from_secs(2)),
                policy_rate: None,
            })
        );
    }

    #[test]
    fn reset_as_a_unix_time() {
        let h = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1700000030"),
        ]);
        assert_eq!(
            parse(&h, at(1_700_000_000)).unwrap().reset,
            Some(Duration::from_secs(30))
        );
        // In the past: no wait.
        assert_eq!(
            parse(&h, at(1_800_000_000)).unwrap().reset,
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn ietf_forms() {
        let separate = headers(&[
            ("RateLimit-Limit", "100"),
            ("RateLimit-Remaining", "40"),
            ("RateLimit-Reset", "7"),
        ]);
        assert_eq!(parse(&separate, at(0)).unwrap().remaining, 40);
        let combined = headers(&[("RateLimit", "limit=100, remaining=5, reset=3")]);
        assert_eq!(
            parse(&combined, at(0)),
            Some(SourceBudget {
                limit: Some(100),
                remaining: 5,
                reset: Some(Duration::from_secs(3)),
                policy_rate: None,
            })
        );
        let structured = headers(&[
            ("RateLimit", "\"default\";r=7;t=12"),
            ("RateLimit-Policy", "\"default\";q=100;w=60"),
        ]);
        assert_eq!(
            parse(&structured, at(0)),
            Some(SourceBudget {
                limit: None,
                remaining: 7,
                reset: Some(Duration::from_secs(12)),
                policy_rate: Some(100.0 / 60.0),
            })
        );
    }

    #[test]
    fn a_stated_policy_is_a_rate() {
        let rate = |pairs: &[(&str, &str)]| {
            let mut with_remaining = pairs.to_vec();
            with_remaining.push(("RateLimit-Remaining", "1"));
            parse(&headers(&with_remaining), at(0)).and_then(|b| b.policy_rate)
        };
        assert_eq!(rate(&[("RateLimit-Policy", "10;w=1")]), Some(10.0));
        assert_eq!(
            rate(&[(
                "RateLimit-Policy",
                "\"burst\";q=120;w=60, \"day\";q=1000;w=86400"
            )]),
            Some(1000.0 / 86400.0)
        );
        assert_eq!(rate(&[("RateLimit-Limit", "100, 100;w=50")]), Some(2.0));
        // The limit alone names no window: no rate.
        assert_eq!(rate(&[("RateLimit-Limit", "100")]), None);
        for nonsense in ["q=5;w=0", "q=-5;w=1", "q=x;w=1", "w=10", "q=1e308;w=1e-308"] {
            assert_eq!(rate(&[("RateLimit-Policy", nonsense)]), None, "{nonsense}");
        }
        // With a policy, the limit header's leading number is still the limit.
        let h = headers(&[
            ("RateLimit-Limit", "100, 100;w=50"),
            ("RateLimit-Remaining", "4"),
        ]);
        assert_eq!(parse(&h, at(0)).unwrap().limit, Some(100));
    }

    #[test]
    fn nothing_or_nonsense_gives_nothing() {
        assert_eq!(parse(&headers(&[]), at(0)), None);
        assert_eq!(
            parse(&headers(&[("x-ratelimit-remaining", "lots")]), at(0)),
            None
        );
        assert_eq!(
            parse(&headers(&[("x-ratelimit-remaining", "-1")]), at(0)),
            None
        );
        assert_eq!(parse(&headers(&[("ratelimit", "limit=5")]), at(0)), None);
        let huge = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1e300"),
        ]);
        assert!(parse(&huge, at(0)).unwrap().reset.unwrap() <= crate::retry::MAX_RETRY_AFTER);
    }
}
