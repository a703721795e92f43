//! The fleet-wide rate limiter: one GCRA bucket per source key in Redis.
//!
//! Every decision is one atomic Lua script that reads the Redis server's
//! clock, so workers on different machines agree on time. A caller either
//! may send now, holds a reserved slot `w` from now (it sleeps once, no
//! polling, and waiters go in order), is told to come back later (the wait
//! exceeded what it is willing to hold; nothing is reserved), or is told the
//! source is paused after a 429.
//!
//! With emission interval `T = 1/rate` and tolerance `tau = T * burst`, the
//! bucket never grants more than `burst + rate * t` requests in any window of
//! length `t`, whatever the number of workers.

use std::time::Duration;

use deadpool_redis::{Config, Pool, Runtime};
use redis::Script;

use crate::config::redact_url;

/// Reserve (`ARGV[3]` = max wait) or pause (`ARGV[4]` = pause µs). Returns
/// `{code, wait_us}`: 0 go now, 1 reserved (sleep wait, then go), 2 not
/// reserved (retry after wait), 3 paused (retry after wait).
const GCRA: &str = r#"
local key = KEYS[1]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local pause_us = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T = 1000000 / rate
local tau = T * burst
local tat = tonumber(redis.call('HGET', key, 'tat') or '0')
local pause = tonumber(redis.call('HGET', key, 'pause') or '0')
local ttl_ms = math.ceil((tau + math.max(0, pause - now)) / 1000) + 60000
if pause_us > 0 then
  local until_ = math.max(pause, now + pause_us)
  -- The bucket is empty when the pause ends: no burst right after a 429.
  local empty_at = until_ + tau - T
  if empty_at > tat then tat = empty_at end
  redis.call('HSET', key, 'tat', tat, 'pause', until_)
  redis.call('PEXPIRE', key, math.ceil((until_ - now + tau) / 1000) + 60000)
  return {3, until_ - now}
end
if pause > now then
  return {3, pause - now}
end
if tat < now then tat = now end
local new_tat = tat + T
local wait = new_tat - tau - now
if wait <= 0 then
  redis.call('HSET', key, 'tat', new_tat)
  redis.call('PEXPIRE', key, ttl_ms)
  return {0, 0}
end
if wait <= max_wait then
  redis.call('HSET', key, 'tat', new_tat)
  redis.call('PEXPIRE', key, ttl_ms)
  return {1, math.ceil(wait)}
end
return {2, math.ceil(wait)}
"#;

#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error("redis URL {url} is not valid: {message}")]
    Config { url: String, message: String },
    #[error("rate limiter unavailable (redis): {0}")]
    Redis(String),
}

/// The answer to "may I send a request to this source?"
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Send now.
    Go,
    /// A slot is reserved: sleep this long, then send.
    Reserved(Duration),
    /// The wait is longer than the caller would hold; nothing reserved.
    Later(Duration),
    /// The source is paused after a 429 for this long.
    Paused(Duration),
}

/// The bucket parameters of one source.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub key: String,
    pub rate: f64,
    pub burst: u32,
}

#[derive(Clone)]
pub struct RateLimiter {
    pool: Pool,
    prefix: String,
    script: Script,
}

impl RateLimiter {
    pub fn new(redis_url: &str, namespace: &str) -> Result<RateLimiter, RateLimitError> {
        let pool = Config::from_url(redis_url)
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| RateLimitError::Config {
                url: redact_url(redis_url),
                message: e.to_string(),
            })?;
        Ok(RateLimiter {
            pool,
            prefix: format!("{namespace}:rl:"),
            script: Script::new(GCRA),
        })
    }

    async fn run(
        &self,
        bucket: &Bucket,
        max_wait: Duration,
        pause: Duration,
    ) -> Result<(i64, i64), RateLimitError> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| RateLimitError::Redis(e.to_string()))?;
        // invoke_async reloads the script after a Redis restart (NOSCRIPT).
        let (code, wait): (i64, i64) = self
            .script
            .key(format!("{}{}", self.prefix, bucket.key))
            .arg(bucket.rate)
            .arg(bucket.burst)
            .arg(max_wait.as_micros() as u64)
            .arg(pause.as_micros() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| RateLimitError::Redis(e.to_string()))?;
        Ok((code, wait))
    }

    /// One decision for one request.
    pub async fn acquire(
        &self,
        bucket: &Bucket,
        max_wait: Duration,
    ) -> Result<Permit, RateLimitError> {
        let (code, wait) = self.run(bucket, max_wait, Duration::ZERO).await?;
        let wait = Duration::from_micros(wait.max(0) as u64);
        Ok(match code {
            0 => Permit::Go,
            1 => Permit::Reserved(wait),
            3 => Permit::Paused(wait),
            _ => Permit::Later(wait),
        })
    }

    /// Pauses the whole fleet's use of this source (after a 429).
    pub async fn pause(&self, bucket: &Bucket, duration: Duration) -> Result<(), RateLimitError> {
        let duration = duration.max(Duration::from_millis(1));
        self.run(bucket, Duration::ZERO, duration).await?;
        Ok(())
    }

    /// Waits until a request may go, sleeping once per decision. Returns the
    /// time spent waiting. When Redis is unreachable it waits and asks again:
    /// without the shared bucket no request goes (fail closed).
    pub async fn wait_for_permit(&self, bucket: &Bucket, max_wait: Duration) -> Duration {
        let started = std::time::Instant::now();
        let mut failures = 0u32;
        loop {
            match self.acquire(bucket, max_wait).await {
                Ok(Permit::Go) => return started.elapsed(),
                Ok(Permit::Reserved(wait)) => {
                    tokio::time::sleep(wait).await;
                    return started.elapsed();
                }
                Ok(Permit::Later(wait)) | Ok(Permit::Paused(wait)) => {
                    failures = 0;
                    tokio::time::sleep(wait.min(max_wait).max(Duration::from_millis(1))).await;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(30) {
                        tracing::warn!(error = %e, bucket = %bucket.key, "rate limiter unavailable; holding requests");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Deletes every bucket of this namespace (tests).
    pub async fn clear(&self) -> Result<(), RateLimitError> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| RateLimitError::Redis(e.to_string()))?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut conn)
            .await
            .map_err(|e| RateLimitError::Redis(e.to_string()))?;
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut conn)
                .await
                .map_err(|e| RateLimitError::Redis(e.to_string()))?;
        }
        Ok(())
    }
}
