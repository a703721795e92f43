//! The fleet-wide limiter and the source guard, against the real Redis:
//! the bucket never grants more than `burst + rate * t` in any window of
//! length `t`, whatever the number of callers; the breaker opens and
//! half-opens; the retry budget holds retries to its share.

mod common;

use std::time::{Duration, Instant};

use common::unique;
use pagefleet_shared::guard::{Gate, SourceGuard, MIN_RETRIES, THRESHOLD};
use pagefleet_shared::ratelimit::{Bucket, Permit, RateLimiter};

const REDIS: &str = "redis://127.0.0.1:6379";

/// Callers loop on `acquire` and record when each granted request may go
/// (the decision time plus the reserved wait).
async fn grants(
    limiter: &RateLimiter,
    bucket: &Bucket,
    callers: usize,
    run_for: Duration,
) -> Vec<Duration> {
    let origin = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let limiter = limiter.clone();
        let bucket = bucket.clone();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            while origin.elapsed() < run_for {
                let asked = origin.elapsed();
                match limiter
                    .acquire(&bucket, Duration::from_millis(500))
                    .await
                    .unwrap()
                {
                    Permit::Go => times.push(asked),
                    Permit::Reserved(wait) => {
                        times.push(asked + wait);
                        tokio::time::sleep(wait).await;
                    }
                    Permit::Later(wait) | Permit::Paused(wait) => tokio::time::sleep(wait).await,
                }
            }
            times
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}

/// The most grants in any window of `width`, sliding over every grant.
fn max_in_window(sorted: &[Duration], width: Duration) -> usize {
    let mut best = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] >= width {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bucket_never_grants_more_than_burst_plus_rate_times_t() {
    for (rate, burst, callers) in [(50.0, 10u32, 8usize), (200.0, 5, 16), (20.0, 1, 4)] {
        let ns = unique("pft-limiter-");
        let limiter = RateLimiter::new(REDIS, &ns).unwrap();
        let bucket = Bucket::stated("source", rate, burst);
        let times = grants(&limiter, &bucket, callers, Duration::from_secs(2)).await;
        limiter.clear().await.unwrap();
        assert!(
            times.len() as f64 >= rate * 1.5,
            "{rate}/s: only {} grants in 2 s",
            times.len()
        );
        for width_ms in [50u64, 100, 250, 500, 1000, 1500] {
            let width = Duration::from_millis(width_ms);
            let most = max_in_window(&times, width);
            // A few ms of slack: grant times are measured on this side of
            // the network, the bucket runs on Redis's clock.
            let allowed = burst as f64 + rate * (width.as_secs_f64() + 0.005);
            assert!(
                most as f64 <= allowed.floor() + 1.0,
                "rate {rate}, burst {burst}: {most} grants in {width_ms} ms, allowed {allowed:.1}"
            );
        }
    }
}

#[tokio::test]
async fn a_pause_empties_the_bucket_for_the_whole_fleet() {
    let ns = unique("pft-limiter-");
    let limiter = RateLimiter::new(REDIS, &ns).unwrap();
    let other_worker = RateLimiter::new(REDIS, &ns).unwrap();
    // 20/s: a token every 50 ms; a full bucket would let 10 go at once.
    let bucket = Bucket::stated("source", 20.0, 10);
    limiter
        .pause(&bucket, Duration::from_millis(800))
        .await
        .unwrap();
    let wait = match other_worker
        .acquire(&bucket, Duration::from_millis(100))
        .await
        .unwrap()
    {
        Permit::Paused(wait) => wait,
        other => panic!("expected a pause, got {other:?}"),
    };
    assert!(wait > Duration::from_millis(600), "{wait:?}");
    // Right when the pause ends the bucket is empty: no burst, tokens come
    // back at the rate (one, maybe two with the sleep's overshoot).
    tokio::time::sleep(wait + Duration::from_millis(5)).await;
    let mut immediate = 0;
    for _ in 0..5 {
        if other_worker
            .acquire(&bucket, Duration::from_secs(1))
            .await
            .unwrap()
            == Permit::Go
        {
            immediate += 1;
        }
    }
    assert!(
        (1..=2).contains(&immediate),
        "{immediate} requests went at once right after a pause"
    );
    limiter.clear().await.unwrap();
}

#[tokio::test]
async fn the_source_s_remaining_count_lowers_the_bucket() {
    let ns = unique("pft-limiter-");
    let limiter = RateLimiter::new(REDIS, &ns).unwrap();
    let bucket = Bucket::stated("source", 10.0, 10);
    // A full bucket would let 10 go at once; the source says 2 remain.
    limiter.sync_with_source(&bucket, 2, None).await.unwrap();
    let mut immediate = 0;
    for _ in 0..10 {
        if limiter
            .acquire(&bucket, Duration::from_secs(5))
            .await
            .unwrap()
            == Permit::Go
        {
            immediate += 1;
        }
    }
    assert_eq!(immediate, 2);
    limiter.clear().await.unwrap();
}

/// Takes every token the bucket grants, from a few acquirers at once as a
/// busy fleet would, until `enough` holds of the rate the last reply
/// carried or `patience` runs out (after one round at least); returns that
/// rate.
///
/// Learning grows a rate only while a request waits on the bucket. One
/// acquirer on a loaded machine often comes back after its token was due,
/// and the bucket, not binding then, rightly learns nothing; with several,
/// one always holds a token reserved ahead. And the test waits for what
/// it asserts instead of for a time, so a slow run is slower, not red.
async fn keep_busy_until(
    limiter: &RateLimiter,
    bucket: &Bucket,
    patience: Duration,
    enough: impl Fn(f64) -> bool,
) -> f64 {
    const ACQUIRERS: usize = 4;
    const ROUND: Duration = Duration::from_millis(200);
    let started = Instant::now();
    loop {
        let acquirers = (0..ACQUIRERS).map(|_| take_tokens(limiter, bucket, ROUND));
        futures::future::join_all(acquirers).await;
        let rate = limiter.learned_rate(bucket).unwrap();
        if enough(rate) || started.elapsed() > patience {
            return rate;
        }
    }
}

async fn take_tokens(limiter: &RateLimiter, bucket: &Bucket, run_for: Duration) {
    let started = Instant::now();
    while started.elapsed() < run_for {
        match limiter
            .acquire(bucket, Duration::from_millis(50))
            .await
            .unwrap()
        {
            Permit::Go => {}
            Permit::Reserved(wait) | Permit::Later(wait) | Permit::Paused(wait) => {
                tokio::time::sleep(wait.min(Duration::from_millis(50))).await
            }
        }
    }
}

/// Long enough for learning at the tests' fast growth on a machine
/// running every other test beside this one.
const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_429_cuts_the_rate_once_per_pause_for_the_whole_fleet() {
    let ns = unique("pft-limiter-");
    let limiter = RateLimiter::new(REDIS, &ns).unwrap();
    let other_worker = RateLimiter::new(REDIS, &ns).unwrap();
    let bucket = Bucket::stated("source", 100.0, 1);
    let (cut, deep) = (bucket.adaptation.cut, bucket.adaptation.deep);
    limiter.acquire(&bucket, Duration::ZERO).await.unwrap();
    assert_eq!(limiter.learned_rate(&bucket), Some(100.0));
    limiter
        .pause(&bucket, Duration::from_millis(300))
        .await
        .unwrap();
    // Every answer the refusal sent back while paused is the same refusal.
    other_worker
        .pause(&bucket, Duration::from_millis(300))
        .await
        .unwrap();
    other_worker.acquire(&bucket, Duration::ZERO).await.unwrap();
    let after = other_worker.learned_rate(&bucket).unwrap();
    assert!(
        (after - 100.0 * cut).abs() < 0.01,
        "one cut, seen fleet-wide: {after}"
    );
    // A refusal after the pause ended is a new one; this soon after it,
    // the limit is well below the rate refused.
    tokio::time::sleep(Duration::from_millis(350)).await;
    limiter
        .pause(&bucket, Duration::from_millis(10))
        .await
        .unwrap();
    let twice = limiter.learned_rate(&bucket).unwrap();
    let expected = 100.0 * cut * deep * cut;
    assert!((twice - expected).abs() < 0.01, "{twice} vs {expected}");
    limiter.clear().await.unwrap();
}

#[tokio::test]
async fn without_a_stated_rate_the_bucket_grows_while_it_binds_and_never_past_its_ceiling() {
    let ns = unique("pft-limiter-");
    let limiter = RateLimiter::new(REDIS, &ns).unwrap();
    let mut bucket = Bucket::unstated("source", 40.0, 1);
    // Fast learning, so the test takes a second, not a minute.
    bucket.adaptation.growth_per_s = 4.0;
    assert!(limiter.acquire(&bucket, Duration::ZERO).await.unwrap() == Permit::Go);
    assert_eq!(limiter.learned_rate(&bucket), Some(bucket.bounds.start));
    let grown = keep_busy_until(&limiter, &bucket, PATIENCE, |rate| rate > 5.0).await;
    assert!(
        grown > 5.0,
        "slow start should have grown from 1/s: {grown}"
    );
    let capped = keep_busy_until(&limiter, &bucket, PATIENCE, |rate| rate >= 40.0).await;
    assert_eq!(capped, 40.0, "the fleet's ceiling bounds what it learns");
    let still = keep_busy_until(&limiter, &bucket, Duration::ZERO, |_| true).await;
    assert_eq!(still, 40.0, "and learning goes no further while it binds");
    // Idle: nothing binds, nothing grows (and a refusal brings it down).
    limiter
        .pause(&bucket, Duration::from_millis(10))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    limiter.acquire(&bucket, Duration::ZERO).await.unwrap();
    let idle = limiter.learned_rate(&bucket).unwrap();
    assert!((idle - 40.0 * bucket.adaptation.cut).abs() < 0.5, "{idle}");
    limiter.clear().await.unwrap();
}

#[tokio::test]
async fn after_a_429_the_rate_settles_a_margin_below_the_refused_one() {
    let ns = unique("pft-limiter-");
    let limiter = RateLimiter::new(REDIS, &ns).unwrap();
    let mut bucket = Bucket::stated("source", 50.0, 1);
    bucket.adaptation.growth_per_s = 4.0;
    limiter.acquire(&bucket, Duration::ZERO).await.unwrap();
    limiter
        .pause(&bucket, Duration::from_millis(10))
        .await
        .unwrap();
    let margin = 50.0 * bucket.adaptation.margin;
    let settled = keep_busy_until(&limiter, &bucket, PATIENCE, |rate| rate >= margin).await;
    // Probing creeps up 0.05 % a second: within a few thousandths.
    assert!(
        settled >= margin && settled < margin * 1.005,
        "settled at {settled}, expected just above {margin}"
    );
    limiter.clear().await.unwrap();
}

#[tokio::test]
async fn a_higher_stated_rate_forgets_what_was_refused_under_a_lower_one() {
    let ns = unique("pft-limiter-");
    let limiter = RateLimiter::new(REDIS, &ns).unwrap();
    let slow = Bucket::stated("source", 50.0, 1);
    limiter.acquire(&slow, Duration::ZERO).await.unwrap();
    limiter
        .pause(&slow, Duration::from_millis(10))
        .await
        .unwrap();
    assert!(limiter.learned_rate(&slow).unwrap() < 50.0);
    // A lower stated rate keeps what was learned...
    let slower = Bucket::stated("source", 40.0, 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    limiter.acquire(&slower, Duration::ZERO).await.unwrap();
    assert!(limiter.learned_rate(&slower).unwrap() < 40.0);
    // ...a higher one starts again from itself.
    let fast = Bucket::stated("source", 100.0, 1);
    limiter.acquire(&fast, Duration::ZERO).await.unwrap();
    assert_eq!(limiter.learned_rate(&fast), Some(100.0));
    limiter.clear().await.unwrap();
}

#[tokio::test]
async fn a_stated_policy_sets_the_rate_under_the_ceiling() {
    let ns = unique("pft-limiter-");
    let limiter = RateLimiter::new(REDIS, &ns).unwrap();
    let bucket = Bucket::unstated("source", 100.0, 1);
    limiter
        .sync_with_source(&bucket, 1, Some(12.5))
        .await
        .unwrap();
    assert_eq!(limiter.learned_rate(&bucket), Some(12.5));
    limiter
        .sync_with_source(&bucket, 1, Some(500.0))
        .await
        .unwrap();
    assert_eq!(limiter.learned_rate(&bucket), Some(100.0));
    limiter.clear().await.unwrap();
}

#[tokio::test]
async fn the_breaker_opens_after_consecutive_failures_and_half_opens() {
    let ns = unique("pft-guard-");
    let guard = SourceGuard::new(REDIS, &ns).unwrap();
    let probe = Duration::from_secs(5);
    assert_eq!(guard.admit("src", false, probe, 0.1).await, Gate::Go);
    for i in 1..THRESHOLD {
        assert!(
            !guard.record("src", false).await,
            "open after only {i} failures"
        );
    }
    assert!(
        guard.record("src", false).await,
        "open after {THRESHOLD} failures"
    );
    assert!(matches!(
        guard.admit("src", false, probe, 0.1).await,
        Gate::Open(_)
    ));
    // A success elsewhere in the fleet does not reach a closed-down source;
    // after the open period exactly one probe goes.
    tokio::time::sleep(pagefleet_shared::guard::BASE_OPEN + Duration::from_millis(100)).await;
    assert_eq!(guard.admit("src", false, probe, 0.1).await, Gate::Probe);
    assert!(
        matches!(guard.admit("src", false, probe, 0.1).await, Gate::Open(_)),
        "one probe at a time"
    );
    // The probe fails: open again, for longer.
    assert!(guard.record("src", false).await);
    match guard.admit("src", false, probe, 0.1).await {
        Gate::Open(wait) => assert!(wait > pagefleet_shared::guard::BASE_OPEN, "{wait:?}"),
        other => panic!("expected open, got {other:?}"),
    }
    // A success closes it.
    guard.record("src", true).await;
    assert_eq!(guard.admit("src", false, probe, 0.1).await, Gate::Go);
}

#[tokio::test]
async fn retries_stay_within_the_budget() {
    let ns = unique("pft-guard-");
    let guard = SourceGuard::new(REDIS, &ns).unwrap();
    let probe = Duration::from_secs(5);
    // With no first attempts, only the small allowance.
    let mut allowed = 0;
    for _ in 0..(MIN_RETRIES * 3) {
        if guard.admit("b", true, probe, 0.1).await == Gate::Go {
            allowed += 1;
        }
    }
    assert_eq!(allowed, MIN_RETRIES);
    // 300 first attempts buy 10 % of retries: 30 in all.
    for _ in 0..300 {
        assert_eq!(guard.admit("b", false, probe, 0.1).await, Gate::Go);
    }
    let mut more = 0;
    for _ in 0..100 {
        if guard.admit("b", true, probe, 0.1).await == Gate::Go {
            more += 1;
        }
    }
    assert_eq!(
        allowed + more,
        30,
        "retries capped at 10 % of 300 first attempts"
    );
    assert!(matches!(
        guard.admit("b", true, probe, 0.1).await,
        Gate::NoBudget(_)
    ));
}
