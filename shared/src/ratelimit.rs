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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_redis::{Config, Pool, Runtime};
use redis::Script;

use crate::config::redact_url;

/// One decision on one bucket. `ARGV[3]` names the operation and
/// `ARGV[4]` is its argument (see [`Op`]): `reserve` (max wait µs),
/// `check` (is the source paused?), `pause` (µs, > 0) or `sync` (tokens the
/// source says remain, >= 0). Returns `{code, wait_us}` (see [`Reply`]):
/// 0 go now, 1 reserved (sleep wait, then go), 2 not reserved (retry after
/// wait), 3 paused (retry after wait), 4 synced.
const GCRA: &str = r#"
local key = KEYS[1]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local op = ARGV[3]
local value = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T = 1000000 / rate
local tau = T * burst
local tat = tonumber(redis.call('HGET', key, 'tat') or '0')
local pause = tonumber(redis.call('HGET', key, 'pause') or '0')
local ttl_ms = math.ceil((tau + math.max(0, pause - now)) / 1000) + 60000
if op == 'pause' then
  local until_ = math.max(pause, now + value)
  -- The bucket is empty when the pause ends: no burst right after a 429.
  local empty_at = until_ + tau - T
  if empty_at > tat then tat = empty_at end
  redis.call('HSET', key, 'tat', tat, 'pause', until_)
  redis.call('PEXPIRE', key, math.ceil((until_ - now + tau) / 1000) + 60000)
  return {3, until_ - now}
end
if op == 'sync' then
  -- The source knows best: never believe in more tokens than it has left.
  local floor = now + tau - value * T
  if floor > tat then
    redis.call('HSET', key, 'tat', floor)
    redis.call('PEXPIRE', key, ttl_ms)
  end
  return {4, 0}
end
if pause > now then
  return {3, pause - now}
end
if op == 'check' then
  return {0, 0}
end
if op ~= 'reserve' then
  return redis.error_reply('unknown limiter operation ' .. tostring(op))
end
local max_wait = value
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

/// What the script is asked to do, with its argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Take a token now, or reserve one at most this far ahead.
    Reserve { max_wait: Duration },
    /// Only tell whether the source is paused.
    CheckPause,
    /// Pause the source for this long (after a 429).
    Pause(Duration),
    /// The source says this many tokens remain.
    Sync { remaining: u64 },
}

impl Op {
    /// `ARGV[3]` and `ARGV[4]`.
    fn args(self) -> (&'static str, u64) {
        match self {
            Op::Reserve { max_wait } => ("reserve", max_wait.as_micros() as u64),
            Op::CheckPause => ("check", 0),
            Op::Pause(d) => ("pause", (d.as_micros() as u64).max(1)),
            Op::Sync { remaining } => ("sync", remaining),
        }
    }
}

/// The script's answer, read from `{code, wait_us}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Go,
    Reserved(Duration),
    NotReserved(Duration),
    Paused(Duration),
    Synced,
}

impl Reply {
    fn parse(code: i64, wait_us: i64) -> Result<Reply, RateLimitError> {
        let wait = Duration::from_micros(wait_us.max(0) as u64);
        Ok(match code {
            0 => Reply::Go,
            1 => Reply::Reserved(wait),
            2 => Reply::NotReserved(wait),
            3 => Reply::Paused(wait),
            4 => Reply::Synced,
            other => {
                return Err(RateLimitError::Redis(format!(
                    "the limiter script answered code {other}, which this worker does not know"
                )))
            }
        })
    }
}

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

/// A pool of Redis connections (shared by the limiter and the guard).
pub fn redis_pool(redis_url: &str) -> Result<Pool, RateLimitError> {
    Config::from_url(redis_url)
        .create_pool(Some(Runtime::Tokio1))
        .map_err(|e| RateLimitError::Config {
            url: redact_url(redis_url),
            message: e.to_string(),
        })
}

/// The outcome of [`RateLimiter::permit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// Send now; this long was spent waiting.
    Go(Duration),
    /// Too long to hold the task: park it for this long.
    Park(Duration),
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
    fallback: Arc<LocalFallback>,
}

/// While Redis is away each worker keeps its own bucket at `rate / fleet
/// size` with no burst, so the fleet together stays at the source's rate:
/// fail safe, never open.
struct LocalFallback {
    fleet_size: AtomicU32,
    buckets: Mutex<HashMap<String, LocalBucket>>,
}

#[derive(Clone, Copy)]
struct LocalBucket {
    next_at: Instant,
    paused_until: Instant,
}

impl LocalFallback {
    /// Reserves the next local slot and returns how long to wait for it.
    fn reserve(&self, bucket: &Bucket) -> Duration {
        let fleet = self.fleet_size.load(Ordering::Relaxed).max(1) as f64;
        let interval = Duration::from_secs_f64(fleet / bucket.rate);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let entry = buckets.entry(bucket.key.clone()).or_insert(LocalBucket {
            next_at: now,
            paused_until: now,
        });
        let at = entry.next_at.max(entry.paused_until).max(now);
        entry.next_at = at + interval;
        at - now
    }

    fn pause(&self, bucket: &Bucket, duration: Duration) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let entry = buckets.entry(bucket.key.clone()).or_insert(LocalBucket {
            next_at: now,
            paused_until: now,
        });
        entry.paused_until = entry.paused_until.max(now + duration);
    }
}

impl RateLimiter {
    pub fn new(redis_url: &str, namespace: &str) -> Result<RateLimiter, RateLimitError> {
        let pool = redis_pool(redis_url)?;
        Ok(RateLimiter {
            pool,
            prefix: format!("{namespace}:rl:"),
            script: Script::new(GCRA),
            fallback: Arc::new(LocalFallback {
                fleet_size: AtomicU32::new(1),
                buckets: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// How many workers share the source: each falls back to `1/n` of the
    /// rate while Redis is unreachable. Workers keep it current from the
    /// number of consumers on the pages queue.
    pub fn set_fleet_size(&self, workers: u32) {
        self.fallback
            .fleet_size
            .store(workers.max(1), Ordering::Relaxed);
    }

    pub fn fleet_size(&self) -> u32 {
        self.fallback.fleet_size.load(Ordering::Relaxed)
    }

    async fn run(&self, bucket: &Bucket, op: Op) -> Result<Reply, RateLimitError> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| RateLimitError::Redis(e.to_string()))?;
        let (name, value) = op.args();
        // invoke_async reloads the script after a Redis restart (NOSCRIPT).
        let (code, wait): (i64, i64) = self
            .script
            .key(format!("{}{}", self.prefix, bucket.key))
            .arg(bucket.rate)
            .arg(bucket.burst)
            .arg(name)
            .arg(value)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| RateLimitError::Redis(e.to_string()))?;
        Reply::parse(code, wait)
    }

    /// One decision for one request.
    pub async fn acquire(
        &self,
        bucket: &Bucket,
        max_wait: Duration,
    ) -> Result<Permit, RateLimitError> {
        Ok(match self.run(bucket, Op::Reserve { max_wait }).await? {
            Reply::Go => Permit::Go,
            Reply::Reserved(wait) => Permit::Reserved(wait),
            Reply::Paused(wait) => Permit::Paused(wait),
            Reply::NotReserved(wait) => Permit::Later(wait),
            Reply::Synced => {
                return Err(RateLimitError::Redis(
                    "the limiter script answered a reservation as a sync".into(),
                ))
            }
        })
    }

    /// How much longer the source is paused, if it is (Redis errors read
    /// as "not paused": the local fallback has its own pause).
    async fn paused_for(&self, bucket: &Bucket) -> Option<Duration> {
        match self.run(bucket, Op::CheckPause).await {
            Ok(Reply::Paused(wait)) => Some(wait),
            _ => None,
        }
    }

    /// Pauses the whole fleet's use of this source (after a 429). The
    /// local fallback bucket pauses too, in case Redis goes away meanwhile.
    pub async fn pause(&self, bucket: &Bucket, duration: Duration) -> Result<(), RateLimitError> {
        let duration = duration.max(Duration::from_millis(1));
        self.fallback.pause(bucket, duration);
        self.run(bucket, Op::Pause(duration)).await?;
        Ok(())
    }

    /// Tells the bucket what the source reported left in its budget; the
    /// bucket drops to that many tokens when it believed in more.
    pub async fn sync_with_source(
        &self,
        bucket: &Bucket,
        remaining: u64,
    ) -> Result<(), RateLimitError> {
        let remaining = remaining.min(bucket.burst as u64);
        self.run(bucket, Op::Sync { remaining }).await?;
        Ok(())
    }

    /// Waits until a request may go, sleeping once per decision, and
    /// returns the time spent waiting; or, when the source is paused or
    /// booked up for longer than `park_after`, returns how long without
    /// waiting, so the caller can park the task and do other work. When
    /// Redis is unreachable the local fallback bucket decides instead.
    pub async fn permit(
        &self,
        bucket: &Bucket,
        max_wait: Duration,
        park_after: Duration,
    ) -> Waited {
        let started = std::time::Instant::now();
        loop {
            match self.acquire(bucket, max_wait).await {
                Ok(Permit::Go) => return Waited::Go(started.elapsed()),
                Ok(Permit::Reserved(wait)) => {
                    tokio::time::sleep(wait).await;
                    // A 429 elsewhere in the fleet during the sleep paused
                    // the source: the reserved slot is void, wait again.
                    match self.paused_for(bucket).await {
                        Some(pause) if pause > park_after => return Waited::Park(pause),
                        Some(pause) => tokio::time::sleep(pause).await,
                        None => return Waited::Go(started.elapsed()),
                    }
                }
                Ok(Permit::Later(wait)) | Ok(Permit::Paused(wait)) => {
                    if wait > park_after {
                        return Waited::Park(wait);
                    }
                    tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                }
                Err(e) => {
                    let wait = self.fallback.reserve(bucket);
                    tracing::warn!(error = %e, bucket = %bucket.key, fleet = self.fleet_size(),
                        wait_ms = wait.as_millis() as u64, "rate limiter unavailable; using the local fallback bucket");
                    tokio::time::sleep(wait).await;
                    return Waited::Go(started.elapsed());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> RateLimiter {
        RateLimiter::new("redis://127.0.0.1:1", "unit").unwrap()
    }

    #[test]
    fn script_replies_are_read_into_decisions() {
        let ms = Duration::from_millis;
        assert_eq!(Reply::parse(0, 0).unwrap(), Reply::Go);
        assert_eq!(Reply::parse(1, 2_000).unwrap(), Reply::Reserved(ms(2)));
        assert_eq!(Reply::parse(2, 5_000).unwrap(), Reply::NotReserved(ms(5)));
        assert_eq!(Reply::parse(3, 7_000).unwrap(), Reply::Paused(ms(7)));
        assert_eq!(Reply::parse(4, 0).unwrap(), Reply::Synced);
        // A negative wait (clock skew inside Redis) is no wait, not a panic.
        assert_eq!(
            Reply::parse(1, -5).unwrap(),
            Reply::Reserved(Duration::ZERO)
        );
        let unknown = Reply::parse(9, 0).unwrap_err().to_string();
        assert!(unknown.contains("code 9"), "{unknown}");
    }

    #[test]
    fn each_operation_names_itself_to_the_script() {
        let ms = Duration::from_millis;
        assert_eq!(Op::Reserve { max_wait: ms(3) }.args(), ("reserve", 3_000));
        assert_eq!(Op::CheckPause.args(), ("check", 0));
        assert_eq!(Op::Pause(ms(2)).args(), ("pause", 2_000));
        // The script pauses only for a positive duration.
        assert_eq!(Op::Pause(Duration::ZERO).args(), ("pause", 1));
        assert_eq!(Op::Sync { remaining: 0 }.args(), ("sync", 0));
        for op in [
            Op::Reserve { max_wait: ms(1) },
            Op::CheckPause,
            Op::Pause(ms(1)),
            Op::Sync { remaining: 1 },
        ] {
            let (name, _) = op.args();
            assert!(
                GCRA.contains(&format!("op == '{name}'"))
                    || GCRA.contains(&format!("op ~= '{name}'")),
                "{name}"
            );
        }
    }

    #[test]
    fn the_local_fallback_splits_the_rate_across_the_fleet() {
        let limiter = limiter();
        limiter.set_fleet_size(4);
        let bucket = Bucket {
            key: "k".into(),
            rate: 100.0,
            burst: 10,
        };
        // 4 workers at 100/s: each may send every 40 ms, and never bursts.
        let waits: Vec<Duration> = (0..5).map(|_| limiter.fallback.reserve(&bucket)).collect();
        assert!(waits[0] < Duration::from_millis(5));
        for (i, w) in waits.iter().enumerate().skip(1) {
            let expected = Duration::from_millis(40 * i as u64);
            assert!(
                w.abs_diff(expected) < Duration::from_millis(10),
                "slot {i}: {w:?} vs {expected:?}"
            );
        }
    }

    #[test]
    fn a_pause_holds_the_local_fallback_too() {
        let limiter = limiter();
        let bucket = Bucket {
            key: "k".into(),
            rate: 1000.0,
            burst: 1,
        };
        limiter.fallback.pause(&bucket, Duration::from_secs(2));
        assert!(limiter.fallback.reserve(&bucket) > Duration::from_millis(1900));
    }
}
