//! The rate limit: a token bucket per bearer token, in real time, and the
//! numbers it reports in the `X-RateLimit-*` and `Retry-After` headers.

use std::time::Instant;

/// Longest wait ever reported, so a zero or broken rate cannot produce an
/// absurd header.
const MAX_WAIT_SECS: u64 = 3600;

/// What the rate-limit headers say after a request was admitted or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateInfo {
    /// Bucket capacity.
    pub limit: u32,
    /// Whole tokens left.
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    Allowed(RateInfo),
    /// Refused; `retry_after_secs` is the wait for one token, at least 1.
    Limited {
        info: RateInfo,
        retry_after_secs: u64,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: u32,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: f64, burst: u32, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes one token if there is one. A refusal takes nothing, so a client
    /// that is told to wait is not punished further for asking.
    pub(crate) fn try_take(&mut self, now: Instant) -> Admit {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Admit::Allowed(self.info())
        } else {
            let retry_after_secs = self.secs_until(1.0).max(1);
            Admit::Limited {
                info: self.info(),
                retry_after_secs,
            }
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        if self.rate.is_finite() && self.rate > 0.0 {
            self.tokens = (self.tokens + elapsed * self.rate).min(f64::from(self.burst));
        }
    }

    fn info(&self) -> RateInfo {
        RateInfo {
            limit: self.burst,
            remaining: self.tokens.max(0.0).floor() as u64,
            reset_secs: self.secs_until(f64::from(self.burst)),
        }
    }

    /// Whole seconds, rounded up, until the bucket holds `level` tokens.
    fn secs_until(&self, level: f64) -> u64 {
        let missing = level - self.tokens;
        if missing <= 0.0 {
            return 0;
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return MAX_WAIT_SECS;
        }
        let secs = (missing / self.rate).ceil();
        if secs >= MAX_WAIT_SECS as f64 {
            MAX_WAIT_SECS
        } else {
            secs as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_limited_then_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 3, t0);
        for left in [2, 1, 0] {
            match b.try_take(t0) {
                Admit::Allowed(info) => {
                    assert_eq!(info.remaining, left);
                    assert_eq!(info.limit, 3);
                }
                other => panic!("{other:?}"),
            }
        }
        match b.try_take(t0) {
            Admit::Limited {
                info,
                retry_after_secs,
            } => {
                assert_eq!(retry_after_secs, 1);
                assert_eq!(info.remaining, 0);
                assert_eq!(info.reset_secs, 2);
            }
            other => panic!("{other:?}"),
        }
        // Refusals consume nothing: half a second later one token is back.
        assert!(matches!(
            b.try_take(t0 + Duration::from_millis(500)),
            Admit::Allowed(_)
        ));
    }

    #[test]
    fn slow_rate_reports_long_waits() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.1, 1, t0);
        assert!(matches!(b.try_take(t0), Admit::Allowed(_)));
        assert!(matches!(
            b.try_take(t0),
            Admit::Limited {
                retry_after_secs: 10,
                ..
            }
        ));
        let mut zero = TokenBucket::new(0.0, 0, t0);
        assert!(matches!(
            zero.try_take(t0),
            Admit::Limited {
                retry_after_secs: MAX_WAIT_SECS,
                ..
            }
        ));
    }
}
