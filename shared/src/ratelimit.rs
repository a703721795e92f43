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

use redis::Script;

use crate::adaptive_rate::{Adaptation, RateBounds, LEARNED_TTL_MS};
use crate::redis_conn::SharedRedis;

/// One decision on one bucket, and the learning of its rate (see
/// [`crate::adaptive_rate`]). `ARGV[3]` names the operation and `ARGV[4]`
/// is its argument (see [`Op`]): `reserve` (max wait µs), `check` (is the
/// source paused?), `pause` (a 429: µs, > 0) or `sync` (tokens the source
/// says remain, >= 0, and in `ARGV[11]` the rate its policy states, 0 for
/// none). `ARGV[1]`, `[5]` and `[6]` are the ceiling, start and floor of the
/// rate, `[2]` the burst, `[7]`–`[10]`, `[13]` and `[14]` the learning's
/// tunables, `[12]` how long the bucket is kept (ms). Returns
/// `{code, wait_us, rate in milli-requests/s}` (see [`Reply`]): 0 go now, 1
/// reserved (sleep wait, then go), 2 not reserved (retry after wait), 3
/// paused (retry after wait), 4 synced.
const GCRA: &str = r#"
local key = KEYS[1]
local ceiling = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local op = ARGV[3]
local value = tonumber(ARGV[4])
local start = tonumber(ARGV[5])
local floor_rate = tonumber(ARGV[6])
local cut = tonumber(ARGV[7])
local growth = tonumber(ARGV[8])
local margin = tonumber(ARGV[9])
local probe = tonumber(ARGV[10])
local stated = tonumber(ARGV[11])
local ttl_ms = tonumber(ARGV[12])
local soon_us = tonumber(ARGV[13])
local deep = tonumber(ARGV[14])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local f = redis.call('HMGET', key, 'tat', 'pause', 'rate', 'refused', 'grown_at', 'quiet_from',
  'ceiling')
local tat = tonumber(f[1]) or 0
local pause = tonumber(f[2]) or 0
local rate = math.max(floor_rate, math.min(ceiling, tonumber(f[3]) or start))
local refused = tonumber(f[4])
local grown_at = tonumber(f[5]) or now
local quiet_from = tonumber(f[6])
local known_ceiling = tonumber(f[7])
if known_ceiling and ceiling > known_ceiling then
  -- A higher rate is stated than the one this was learned under: what
  -- was refused then says nothing now; start again.
  refused = nil
  quiet_from = nil
  rate = math.max(floor_rate, math.min(ceiling, start))
end
local function save()
  redis.call('HSET', key, 'tat', tat, 'pause', pause, 'rate', rate, 'grown_at', grown_at,
    'ceiling', ceiling)
  if refused then
    redis.call('HSET', key, 'refused', refused, 'quiet_from', quiet_from or 0)
  else
    redis.call('HDEL', key, 'refused', 'quiet_from')
  end
  redis.call('PEXPIRE', key, ttl_ms + math.ceil(math.max(0, pause - now) / 1000))
end
local function milli() return math.floor(rate * 1000) end
if op == 'pause' then
  if pause <= now then
    -- A new refusal (answers arriving while paused are the same one):
    -- remember the rate that was refused and cut below it. Refused again
    -- soon after the last pause, the limit is well below this rate.
    if quiet_from and now - quiet_from < soon_us then
      refused = rate * deep
    else
      refused = rate
    end
    rate = math.max(floor_rate, refused * cut)
    grown_at = now
    quiet_from = math.max(pause, now + value)
  end
  local T = 1000000 / rate
  local tau = T * burst
  pause = math.max(pause, now + value)
  -- The bucket is empty when the pause ends: no burst right after a 429.
  local empty_at = pause + tau - T
  if empty_at > tat then tat = empty_at end
  -- A pause is not time the rate was tried at: growth starts after it.
  if pause > grown_at then grown_at = pause end
  save()
  return {3, pause - now, milli()}
end
if op == 'sync' then
  if stated > 0 then
    -- The source states its policy: that is the rate, and what probing
    -- stops at.
    rate = math.max(floor_rate, math.min(ceiling, stated))
    refused = rate / margin
    grown_at = now
  end
  -- The source knows best: never believe in more tokens than it has left.
  local T = 1000000 / rate
  local floor = now + T * burst - value * T
  if floor > tat then tat = floor end
  save()
  return {4, 0, milli()}
end
if pause > now then
  return {3, pause - now, milli()}
end
if op == 'check' then
  return {0, 0, milli()}
end
if op ~= 'reserve' then
  return redis.error_reply('unknown limiter operation ' .. tostring(op))
end
-- Growth, only while the bucket is what holds requests back (this request
-- would have to wait at the current rate).
local dt = math.min(math.max(0, now - grown_at), 1000000) / 1000000
local T_now = 1000000 / rate
local binding = math.max(tat, now) + T_now - T_now * burst > now
if binding and dt > 0 then
  if not refused then
    rate = rate * (1 + growth) ^ dt
  elseif rate < refused * margin then
    rate = math.min(refused * margin, rate * (1 + growth) ^ dt)
  else
    refused = refused * (1 + probe * dt)
    rate = refused * margin
  end
  rate = math.min(ceiling, rate)
end
grown_at = now
local T = 1000000 / rate
local tau = T * burst
local max_wait = value
if tat < now then tat = now end
local new_tat = tat + T
local wait = new_tat - tau - now
if wait <= 0 then
  tat = new_tat
  save()
  return {0, 0, milli()}
end
if wait <= max_wait then
  tat = new_tat
  save()
  return {1, math.ceil(wait), milli()}
end
save()
return {2, math.ceil(wait), milli()}
"#;

/// What the script is asked to do, with its argument.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    /// Take a token now, or reserve one at most this far ahead.
    Reserve { max_wait: Duration },
    /// Only tell whether the source is paused.
    CheckPause,
    /// The source refused (429): pause it for this long and learn.
    Pause(Duration),
    /// The source says this many tokens remain, and perhaps the rate its
    /// policy allows.
    Sync {
        remaining: u64,
        stated_rate: Option<f64>,
    },
}

impl Op {
    /// `ARGV[3]` and `ARGV[4]`.
    fn args(self) -> (&'static str, u64) {
        match self {
            Op::Reserve { max_wait } => ("reserve", max_wait.as_micros() as u64),
            Op::CheckPause => ("check", 0),
            Op::Pause(d) => ("pause", (d.as_micros() as u64).max(1)),
            Op::Sync { remaining, .. } => ("sync", remaining),
        }
    }

    /// `ARGV[11]`: the rate a source's policy states, 0 for none.
    fn stated_rate(self) -> f64 {
        match self {
            Op::Sync {
                stated_rate: Some(rate),
                ..
            } if rate.is_finite() && rate > 0.0 => rate,
            _ => 0.0,
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

/// The outcome of [`RateLimiter::permit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// Send now; this long was spent waiting.
    Go(Duration),
    /// Too long to hold the task: park it for this long.
    Park(Duration),
}

/// The bucket parameters of one source: its key, where its rate starts
/// and the most it may reach, its burst, and how it learns.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub key: String,
    pub bounds: RateBounds,
    pub burst: u32,
    pub adaptation: Adaptation,
    /// Whether a policy the source states (`RateLimit-Policy`) sets the
    /// rate. Not for a budget the operator declares for several tenants:
    /// a policy describes one credential's plan, and one tenant's answers
    /// must not set everyone's rate.
    pub follows_policy: bool,
}

impl Bucket {
    /// A bucket at a rate someone stated: it starts there and never
    /// exceeds it, and learns a lower one from 429s.
    pub fn stated(key: impl Into<String>, rate: f64, burst: u32) -> Bucket {
        Bucket {
            key: key.into(),
            bounds: RateBounds::stated(rate),
            burst,
            adaptation: Adaptation::DEFAULT,
            follows_policy: true,
        }
    }

    /// A bucket whose rate nobody stated: it starts low and finds the
    /// source's limit, never past `ceiling`.
    pub fn unstated(key: impl Into<String>, ceiling: f64, burst: u32) -> Bucket {
        Bucket {
            key: key.into(),
            bounds: RateBounds::unstated(ceiling),
            burst,
            adaptation: Adaptation::DEFAULT,
            follows_policy: true,
        }
    }
}

/// The longest the local fallback spaces a worker's requests (a rate of
/// 0.001/s split over a large fleet would be days).
const FALLBACK_MAX_INTERVAL: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub struct RateLimiter {
    redis: SharedRedis,
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
    /// The rate each bucket's last reply from Redis carried: what the
    /// fleet has learned, and what the fallback splits.
    learned: Mutex<HashMap<String, f64>>,
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
        let bounds = &bucket.bounds;
        // What another export of the key learned, within this bucket's
        // own bounds.
        let rate = (self.learned(&bucket.key).unwrap_or(bounds.start))
            .clamp(bounds.floor, bounds.ceiling)
            .max(f64::MIN_POSITIVE);
        let interval = Duration::try_from_secs_f64(fleet / rate)
            .unwrap_or(FALLBACK_MAX_INTERVAL)
            .min(FALLBACK_MAX_INTERVAL);
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

    fn learned(&self, key: &str) -> Option<f64> {
        let learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        learned.get(key).copied()
    }

    fn learn(&self, key: &str, rate: f64) {
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = learned.get_mut(key) {
            *known = rate;
        } else {
            learned.insert(key.to_string(), rate);
        }
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
        Ok(RateLimiter {
            redis: SharedRedis::new(redis_url)?,
            prefix: format!("{namespace}:rl:"),
            script: Script::new(GCRA),
            fallback: Arc::new(LocalFallback {
                fleet_size: AtomicU32::new(1),
                buckets: Mutex::new(HashMap::new()),
                learned: Mutex::new(HashMap::new()),
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
        let mut held = self.redis.connection().await?;
        let (name, value) = op.args();
        let (bounds, learning) = (&bucket.bounds, &bucket.adaptation);
        // invoke_async reloads the script after a Redis restart (NOSCRIPT).
        let (code, wait, rate_milli): (i64, i64, i64) = self
            .script
            .key(format!("{}{}", self.prefix, bucket.key))
            .arg(bounds.ceiling)
            .arg(bucket.burst)
            .arg(name)
            .arg(value)
            .arg(bounds.start)
            .arg(bounds.floor)
            .arg(learning.cut)
            .arg(learning.growth_per_s)
            .arg(learning.margin)
            .arg(learning.probe_per_s)
            .arg(op.stated_rate())
            .arg(LEARNED_TTL_MS)
            .arg(learning.soon.as_micros() as u64)
            .arg(learning.deep)
            .invoke_async(&mut held.conn)
            .await
            .map_err(|e| {
                self.redis.forget(&held);
                RateLimitError::Redis(e.to_string())
            })?;
        // Thousandths round a rate under 0.001/s to nothing: keep the last.
        if rate_milli > 0 {
            self.fallback.learn(&bucket.key, rate_milli as f64 / 1000.0);
        }
        Reply::parse(code, wait)
    }

    /// The rate this bucket's last decision in this process ran at
    /// (learned fleet-wide), requests per second.
    pub fn learned_rate(&self, bucket: &Bucket) -> Option<f64> {
        self.fallback.learned(&bucket.key)
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

    /// Tells the bucket what the source reported left in its budget (the
    /// bucket drops to that many tokens when it believed in more) and the
    /// rate its policy states, when it states one (the bucket takes it).
    pub async fn sync_with_source(
        &self,
        bucket: &Bucket,
        remaining: u64,
        stated_rate: Option<f64>,
    ) -> Result<(), RateLimitError> {
        let remaining = remaining.min(bucket.burst as u64);
        let op = Op::Sync {
            remaining,
            stated_rate,
        };
        self.run(bucket, op).await?;
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
        let mut held = self.redis.connection().await?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut held.conn)
            .await
            .map_err(|e| RateLimitError::Redis(e.to_string()))?;
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut held.conn)
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
        let sync = |remaining, stated_rate| Op::Sync {
            remaining,
            stated_rate,
        };
        assert_eq!(sync(0, None).args(), ("sync", 0));
        assert_eq!(sync(0, None).stated_rate(), 0.0);
        assert_eq!(sync(3, Some(2.5)).stated_rate(), 2.5);
        // Nonsense from a source's headers states nothing.
        assert_eq!(sync(3, Some(f64::NAN)).stated_rate(), 0.0);
        assert_eq!(sync(3, Some(-1.0)).stated_rate(), 0.0);
        for op in [
            Op::Reserve { max_wait: ms(1) },
            Op::CheckPause,
            Op::Pause(ms(1)),
            sync(1, None),
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
        let bucket = Bucket::stated("k", 100.0, 10);
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
        let bucket = Bucket::stated("k", 1000.0, 1);
        limiter.fallback.pause(&bucket, Duration::from_secs(2));
        assert!(limiter.fallback.reserve(&bucket) > Duration::from_millis(1900));
    }

    #[test]
    fn the_local_fallback_splits_what_the_fleet_learned() {
        let limiter = limiter();
        let bucket = Bucket::unstated("k", 100.0, 1);
        // Nothing learned yet: the bucket's start, 1/s.
        limiter.fallback.reserve(&bucket);
        let unlearned = limiter.fallback.reserve(&bucket);
        assert!(unlearned > Duration::from_millis(900), "{unlearned:?}");
        // Redis said the source takes 20/s: a slot every 50 ms.
        limiter.fallback.learn("k", 20.0);
        assert_eq!(limiter.learned_rate(&bucket), Some(20.0));
        let other = Bucket::unstated("other", 100.0, 1);
        limiter.fallback.learn("other", 20.0);
        limiter.fallback.reserve(&other);
        let learned = limiter.fallback.reserve(&other);
        assert!(learned.abs_diff(Duration::from_millis(50)) < Duration::from_millis(10));
    }
}
