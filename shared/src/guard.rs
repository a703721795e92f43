//! Outages must not multiply load: a fleet-wide circuit breaker and retry
//! budget per source key, in Redis.
//!
//! The breaker opens after `THRESHOLD` consecutive transient failures of a
//! source (5xx, timeouts, resets) and lets nothing through while open; when
//! the open period ends, exactly one request goes as a probe (half-open). A
//! successful probe closes it; a failed one opens it again for twice as long,
//! up to `MAX_OPEN`. The retry budget lets retries be at most a ratio
//! (`retry.budget_ratio` of the spec, 0.1 by default) of the first attempts made against the source over the last `WINDOW_SECS`
//! seconds (plus a small allowance), so the fleet never turns one failed
//! request into many. One Lua script per decision, on Redis server time.
//!
//! Without Redis both fail open: the local fallback bucket still caps the
//! rate, so nothing exceeds the source's limit.

use std::time::Duration;

use redis::Script;

use crate::ratelimit::RateLimitError;
use crate::redis_conn::SharedRedis;

/// Consecutive failures that open the breaker.
pub const THRESHOLD: u32 = 5;
/// First open period; doubles on each failed probe, up to `MAX_OPEN`.
pub const BASE_OPEN: Duration = Duration::from_secs(2);
pub const MAX_OPEN: Duration = Duration::from_secs(16);
/// Retries always allowed in a window, so a small export can retry at all.
pub const MIN_RETRIES: u32 = 10;
pub const WINDOW_SECS: u32 = 10;

const GUARD: &str = r#"
local b = KEYS[1]
local budget = KEYS[2]
local op = ARGV[1]
local threshold = tonumber(ARGV[2])
local base_open = tonumber(ARGV[3])
local max_open = tonumber(ARGV[4])
local probe_us = tonumber(ARGV[5])
local ratio = tonumber(ARGV[6])
local min_retries = tonumber(ARGV[7])
local window = tonumber(ARGV[8])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local sec = tonumber(t[1])
local open_until = tonumber(redis.call('HGET', b, 'open_until') or '0')
redis.call('EXPIRE', b, 3600)

if op == 'ok' then
  if open_until > 0 or tonumber(redis.call('HGET', b, 'fails') or '0') > 0 then
    redis.call('HSET', b, 'fails', 0, 'open_until', 0, 'probe_until', 0, 'opens', 0)
  end
  return {0, 0}
end
if op == 'fail' then
  local fails = redis.call('HINCRBY', b, 'fails', 1)
  if open_until > 0 then
    if now >= open_until then
      local opens = redis.call('HINCRBY', b, 'opens', 1)
      local open_for = math.min(max_open, base_open * math.pow(2, opens - 1))
      redis.call('HSET', b, 'open_until', now + open_for, 'probe_until', 0)
      return {1, open_for}
    end
    return {1, open_until - now}
  end
  if fails >= threshold then
    redis.call('HSET', b, 'open_until', now + base_open, 'probe_until', 0, 'opens', 1)
    return {1, base_open}
  end
  return {0, 0}
end

-- op is 'first' or 'retry': may a request go?
if open_until > 0 then
  if now < open_until then return {1, open_until - now} end
  local probe = tonumber(redis.call('HGET', b, 'probe_until') or '0')
  if probe > now then return {1, probe - now} end
  redis.call('HSET', b, 'probe_until', now + probe_us)
  return {2, 0}
end
if op == 'retry' then
  local firsts, retries = 0, 0
  for s = sec - window + 1, sec do
    firsts = firsts + tonumber(redis.call('HGET', budget, 'f:' .. s) or '0')
    retries = retries + tonumber(redis.call('HGET', budget, 'r:' .. s) or '0')
  end
  if retries + 1 > math.max(min_retries, ratio * firsts) then
    return {3, 1000000 - tonumber(t[2])}
  end
  redis.call('HINCRBY', budget, 'r:' .. sec, 1)
else
  redis.call('HINCRBY', budget, 'f:' .. sec, 1)
end
for s = sec - window - 5, sec - window do
  redis.call('HDEL', budget, 'f:' .. s, 'r:' .. s)
end
redis.call('EXPIRE', budget, window * 2)
return {0, 0}
"#;

/// May a request to the source go now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Go,
    /// The breaker is half-open and this request is its probe.
    Probe,
    /// The breaker is open for this long.
    Open(Duration),
    /// The retry budget is spent; it refills within this long.
    NoBudget(Duration),
}

#[derive(Clone)]
pub struct SourceGuard {
    redis: SharedRedis,
    prefix: String,
    script: Script,
}

impl SourceGuard {
    pub fn new(redis_url: &str, namespace: &str) -> Result<SourceGuard, RateLimitError> {
        Ok(SourceGuard {
            redis: SharedRedis::new(redis_url)?,
            prefix: format!("{namespace}:guard:"),
            script: Script::new(GUARD),
        })
    }

    async fn run(
        &self,
        key: &str,
        op: &str,
        probe: Duration,
        ratio: f64,
    ) -> Result<(i64, i64), RateLimitError> {
        let mut held = self.redis.connection().await?;
        self.script
            .key(format!("{}cb:{key}", self.prefix))
            .key(format!("{}rb:{key}", self.prefix))
            .arg(op)
            .arg(THRESHOLD)
            .arg(BASE_OPEN.as_micros() as u64)
            .arg(MAX_OPEN.as_micros() as u64)
            .arg(probe.as_micros() as u64)
            .arg(ratio)
            .arg(MIN_RETRIES)
            .arg(WINDOW_SECS)
            .invoke_async(&mut held.conn)
            .await
            .map_err(|e| {
                self.redis.forget(&held);
                RateLimitError::Redis(e.to_string())
            })
    }

    /// Asks before a request. `retry` is true when the request repeats one
    /// that failed. `probe_for` is how long a probe may take (the request
    /// timeout) before another may go. Fails open without Redis.
    pub async fn admit(&self, key: &str, retry: bool, probe_for: Duration, ratio: f64) -> Gate {
        let op = if retry { "retry" } else { "first" };
        match self.run(key, op, probe_for, ratio).await {
            Ok((0, _)) => Gate::Go,
            Ok((2, _)) => Gate::Probe,
            Ok((1, wait)) => Gate::Open(Duration::from_micros(wait.max(0) as u64)),
            Ok((_, wait)) => Gate::NoBudget(Duration::from_micros(wait.max(0) as u64)),
            Err(e) => {
                tracing::debug!(error = %e, "source guard unavailable; admitting");
                Gate::Go
            }
        }
    }

    /// Reports how a request ended: `true` for an answer from a healthy
    /// source (any 2xx, 4xx or 429), `false` for a transient failure.
    /// Returns whether the breaker is open afterwards.
    pub async fn record(&self, key: &str, healthy: bool) -> bool {
        let op = if healthy { "ok" } else { "fail" };
        matches!(self.run(key, op, Duration::ZERO, 0.0).await, Ok((1, _)))
    }
}
