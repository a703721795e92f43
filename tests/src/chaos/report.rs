//! The chaos report: what was done to the fleet, what came out, and the
//! verdict, printed as a table.

use std::time::Duration;

use super::services::Service;
use super::ChaosConfig;

/// A worker's death to its tasks' redelivery must stay within this.
pub const MAX_REDELIVERY: Duration = Duration::from_secs(30);
/// A worker asked to stop must be gone within this: its drain (5 s in the
/// chaos fleet), 5 s to hand back the rest, and some room.
pub const MAX_STOP: Duration = Duration::from_secs(15);

/// One worker kill and how long its tasks waited for another worker.
#[derive(Debug, Clone)]
pub struct Redelivery {
    pub worker: String,
    pub killed_at: Duration,
    pub tasks: usize,
    pub delay: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    pub seed: u64,
    pub pages: usize,
    pub records: usize,
    pub workers: usize,
    pub planned_events: usize,
    pub worker_kills: usize,
    /// Per SIGTERM: how long the worker took to exit, and whether it exited 0.
    pub worker_stops: Vec<(Duration, bool)>,
    pub scheduler_kills: usize,
    pub restarts: Vec<(Service, Duration)>,
    /// When each kill and restart happened, from the chaos export's start.
    pub timeline: Vec<(Duration, String)>,
    pub supervisor_restarts: usize,
    pub redeliveries: u64,
    pub duplicate_deliveries: u64,
    pub duplicate_fetches: u64,
    /// 429s the source's own bucket answered during the chaos run (the
    /// injected ones not counted): requests the fleet sent too fast.
    pub source_limit_429s: u64,
    /// The most requests the source saw in any one second, and its limit.
    pub peak_requests_1s: u64,
    pub source_limit_1s: u64,
    pub reference_duplicate_fetches: u64,
    pub rows_lost: usize,
    pub duplicate_rows: usize,
    pub poison_pages: Vec<usize>,
    pub dead_letters: usize,
    pub dead_letter_pages: Vec<usize>,
    pub dlq_messages: usize,
    /// Per kill with tasks in flight: when it happened and how long until
    /// the last of its tasks was claimed by another worker.
    pub redelivery_delays: Vec<Redelivery>,
    pub reference_sha: String,
    pub chaos_sha: String,
    pub events_done_at: Duration,
    pub elapsed: Duration,
    /// Where the processes' logs were kept (only when a check failed).
    pub logs: Option<std::path::PathBuf>,
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    pagefleet_shared::spec::hex(&Sha256::digest(bytes))
}

impl ChaosReport {
    pub fn new(config: &ChaosConfig) -> Self {
        ChaosReport {
            seed: config.seed,
            pages: config.pages,
            records: config.pages * config.page_size,
            workers: config.workers,
            planned_events: config.worker_kills
                + config.worker_stops
                + usize::from(config.kill_scheduler)
                + config.restarts.len(),
            ..ChaosReport::default()
        }
    }

    pub fn max_redelivery(&self) -> Duration {
        self.redelivery_delays
            .iter()
            .map(|r| r.delay)
            .max()
            .unwrap_or_default()
    }

    /// The slowest redeliveries, each with the events around its kill: what
    /// a reader needs to see why a takeover was slow.
    fn slowest_redeliveries(&self, n: usize) -> String {
        let mut slow: Vec<&Redelivery> = self.redelivery_delays.iter().collect();
        slow.sort_by_key(|r| std::cmp::Reverse(r.delay));
        let mut out = String::new();
        for r in slow.into_iter().take(n) {
            let nearby: Vec<String> = self
                .timeline
                .iter()
                .filter(|(at, what)| {
                    !what.starts_with("kill -9 worker")
                        && *at + Duration::from_secs(15) >= r.killed_at
                        && *at <= r.killed_at + r.delay
                })
                .map(|(at, what)| format!("{what} at {:.1} s", at.as_secs_f64()))
                .collect();
            out.push_str(&format!(
                "  redelivery {:.1} s: {} killed at {:.1} s holding {} task(s){}\n",
                r.delay.as_secs_f64(),
                r.worker,
                r.killed_at.as_secs_f64(),
                r.tasks,
                if nearby.is_empty() {
                    String::new()
                } else {
                    format!("; around it: {}", nearby.join(", "))
                }
            ));
        }
        out
    }

    fn events_done(&self) -> usize {
        self.worker_kills + self.worker_stops.len() + self.scheduler_kills + self.restarts.len()
    }

    /// Every check, with whether it held.
    pub fn checks(&self) -> Vec<(&'static str, bool)> {
        vec![
            (
                "every planned kill and restart happened",
                self.events_done() == self.planned_events,
            ),
            (
                "every SIGTERM'd worker exited 0 within 15 s",
                self.worker_stops
                    .iter()
                    .all(|(took, clean)| *clean && *took <= MAX_STOP),
            ),
            ("0 rows lost", self.rows_lost == 0),
            ("0 duplicate rows", self.duplicate_rows == 0),
            (
                "SHA-256 equals the fault-free run",
                !self.chaos_sha.is_empty() && self.chaos_sha == self.reference_sha,
            ),
            (
                "dead letters are exactly the poison pages",
                self.dead_letter_pages == self.poison_pages,
            ),
            (
                "the dead-letter queue holds exactly them",
                self.dlq_messages == self.poison_pages.len(),
            ),
            (
                "worker death to redelivery within 30 s",
                self.max_redelivery() <= MAX_REDELIVERY,
            ),
        ]
    }

    pub fn passed(&self) -> bool {
        self.checks().iter().all(|(_, ok)| *ok)
    }

    pub fn table(&self) -> String {
        let mut t = String::new();
        let mut row = |k: &str, v: String| t.push_str(&format!("| {k:<46} | {v:<40} |\n"));
        row("seed", self.seed.to_string());
        row(
            "pages / records / workers",
            format!("{} / {} / {}", self.pages, self.records, self.workers),
        );
        row(
            "worker kill -9 (each restarted)",
            self.worker_kills.to_string(),
        );
        if !self.worker_stops.is_empty() {
            let slowest = self
                .worker_stops
                .iter()
                .map(|(took, _)| *took)
                .max()
                .unwrap_or_default();
            let clean = self.worker_stops.iter().filter(|(_, c)| *c).count();
            row(
                "worker SIGTERM (drained, replaced)",
                format!(
                    "{} ({clean} exited 0, slowest {:.1} s)",
                    self.worker_stops.len(),
                    slowest.as_secs_f64()
                ),
            );
        }
        row(
            "scheduler kill -9 (restarted)",
            self.scheduler_kills.to_string(),
        );
        for (service, took) in &self.restarts {
            row(
                &format!("{} restart", service.name()),
                format!("1 (back in {:.1} s)", took.as_secs_f64()),
            );
        }
        row(
            "processes restarted after exiting on their own",
            self.supervisor_restarts.to_string(),
        );
        row(
            "redeliveries (claims beyond the first)",
            self.redeliveries.to_string(),
        );
        row(
            "duplicate deliveries absorbed",
            self.duplicate_deliveries.to_string(),
        );
        row(
            "duplicate fetches (2xx beyond 1 per page)",
            format!(
                "{} (fault-free run: {})",
                self.duplicate_fetches, self.reference_duplicate_fetches
            ),
        );
        row(
            "429s from the source's own limit",
            self.source_limit_429s.to_string(),
        );
        row(
            "peak requests in any 1 s (source allows)",
            format!("{} ({})", self.peak_requests_1s, self.source_limit_1s),
        );
        row("rows lost", self.rows_lost.to_string());
        row("duplicate rows", self.duplicate_rows.to_string());
        row(
            "dead letters (poison pages)",
            format!(
                "{} at pages {:?} (poisoned {:?})",
                self.dead_letters, self.dead_letter_pages, self.poison_pages
            ),
        );
        row(
            "messages in the dead-letter queue",
            self.dlq_messages.to_string(),
        );
        row(
            "worker death → redelivery, max",
            format!(
                "{:.1} s over {} kills with tasks in flight",
                self.max_redelivery().as_secs_f64(),
                self.redelivery_delays.len()
            ),
        );
        row(
            "CSV SHA-256 equals the fault-free run",
            format!(
                "{} ({})",
                if self.chaos_sha == self.reference_sha {
                    "yes"
                } else {
                    "NO"
                },
                &self.chaos_sha.get(..16).unwrap_or("-")
            ),
        );
        row(
            "export wall time",
            format!(
                "{:.1} s (chaos over after {:.1} s)",
                self.elapsed.as_secs_f64(),
                self.events_done_at.as_secs_f64()
            ),
        );
        let line = format!("+{}+{}+\n", "-".repeat(48), "-".repeat(42));
        let mut out = format!("{line}{t}{line}");
        out.push_str(&self.slowest_redeliveries(3));
        for (check, ok) in self.checks() {
            out.push_str(&format!("  [{}] {check}\n", if ok { "ok" } else { "FAIL" }));
        }
        out.push_str(if self.passed() {
            "  verdict: PASS\n"
        } else {
            "  verdict: FAIL\n"
        });
        if let Some(logs) = &self.logs {
            out.push_str(&format!("  logs: {}\n", logs.display()));
        }
        out
    }
}
