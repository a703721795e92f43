//! Everything the mock server counts, so tests can assert on what a client
//! actually did: outcomes by kind, records served and the request rate seen.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The fault names used as keys of [`MockStats::faults`].
pub const FAULT_KEYS: [&str; 9] = [
    "429",
    "500",
    "502",
    "503",
    "504",
    "reset",
    "truncated",
    "slow",
    "hang",
];

/// A snapshot of the server's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MockStats {
    /// Every HTTP request received on the data endpoints.
    pub requests: u64,
    /// 200s with a complete body.
    pub ok: u64,
    /// All 429s, from the bucket and injected.
    pub status_429: u64,
    /// 429s because the token bucket was empty.
    pub bucket_429: u64,
    /// Injected faults by name (see [`FAULT_KEYS`]); every name is present.
    pub faults: BTreeMap<String, u64>,
    pub unauthorized: u64,
    pub not_found: u64,
    /// 400s: unparsable parameters or an invalid cursor.
    #[serde(default)]
    pub bad_request: u64,
    /// Records in complete 200 bodies.
    pub records_served: u64,
    /// The most requests that arrived within any sliding 1-second window.
    pub peak_requests_1s: u64,
    /// Milliseconds since server start.
    pub first_request_at_ms: Option<u64>,
    pub last_request_at_ms: Option<u64>,
}

/// The live counters behind [`MockStats`].
#[derive(Debug)]
pub(crate) struct Recorder {
    started: Instant,
    stats: MockStats,
    window: PeakWindow,
    /// When each request arrived (µs since start), the first
    /// [`MAX_ARRIVALS`]: what the gaps between a chain's pages are read from.
    arrivals_us: Vec<u64>,
}

/// Arrivals kept for [`Recorder::arrivals_us`] (8 MB).
const MAX_ARRIVALS: usize = 1_000_000;

impl Recorder {
    pub(crate) fn new(started: Instant) -> Self {
        let mut stats = MockStats::default();
        for key in FAULT_KEYS {
            stats.faults.insert(key.to_string(), 0);
        }
        Recorder {
            started,
            stats,
            window: PeakWindow::new(1_000_000),
            arrivals_us: Vec::new(),
        }
    }

    /// Counts a request arriving on a data endpoint.
    pub(crate) fn arrival(&mut self, now: Instant) {
        let us = now.saturating_duration_since(self.started).as_micros() as u64;
        let ms = us / 1000;
        self.stats.requests += 1;
        self.stats.first_request_at_ms.get_or_insert(ms);
        self.stats.last_request_at_ms = Some(ms);
        self.stats.peak_requests_1s = self.window.arrive(us);
        if self.arrivals_us.len() < MAX_ARRIVALS {
            self.arrivals_us.push(us);
        }
    }

    /// When the requests arrived, in µs since the server started.
    pub(crate) fn arrivals_us(&self) -> &[u64] {
        &self.arrivals_us
    }

    pub(crate) fn reset_peak(&mut self) {
        self.window = PeakWindow::new(self.window.width);
        self.stats.peak_requests_1s = 0;
    }

    pub(crate) fn ok(&mut self, records: usize) {
        self.stats.ok += 1;
        self.stats.records_served += records as u64;
    }

    pub(crate) fn unauthorized(&mut self) {
        self.stats.unauthorized += 1;
    }

    pub(crate) fn not_found(&mut self) {
        self.stats.not_found += 1;
    }

    pub(crate) fn bad_request(&mut self) {
        self.stats.bad_request += 1;
    }

    /// Counts a bucket 429 and returns how many came before it, which seeds
    /// the choice of Retry-After form.
    pub(crate) fn bucket_429(&mut self) -> u64 {
        self.stats.status_429 += 1;
        self.stats.bucket_429 += 1;
        self.stats.bucket_429 - 1
    }

    pub(crate) fn fault(&mut self, key: &str) {
        if key == "429" {
            self.stats.status_429 += 1;
        }
        *self.stats.faults.entry(key.to_string()).or_insert(0) += 1;
    }

    pub(crate) fn snapshot(&self) -> MockStats {
        self.stats.clone()
    }
}

/// Tracks the largest number of arrivals within any window of a fixed width,
/// incrementally. Arrivals must come in non-decreasing time order, which holds
/// because they are stamped under the recorder's lock from a monotonic clock.
#[derive(Debug)]
pub(crate) struct PeakWindow {
    width: u64,
    recent: VecDeque<u64>,
    peak: u64,
}

impl PeakWindow {
    pub(crate) fn new(width: u64) -> Self {
        PeakWindow {
            width,
            recent: VecDeque::new(),
            peak: 0,
        }
    }

    /// Records an arrival at time `t` and returns the peak so far.
    pub(crate) fn arrive(&mut self, t: u64) -> u64 {
        // Every window with the maximum count can be slid right until its end
        // touches an arrival, so checking the windows (t - width, t] ending at
        // each arrival finds the maximum.
        while self
            .recent
            .front()
            .is_some_and(|&first| t.saturating_sub(first) >= self.width)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(t);
        self.peak = self.peak.max(self.recent.len() as u64);
        self.peak
    }
}

/// The largest number of arrivals within any half-open window `[s, s + width)`,
/// for arrival times sorted ascending.
pub fn peak_in_window(sorted: &[u64], width: u64) -> u64 {
    let mut best = 0;
    let mut start = 0;
    for (end, &t) in sorted.iter().enumerate() {
        while sorted
            .get(start)
            .is_some_and(|&s| t.saturating_sub(s) >= width)
        {
            start += 1;
        }
        best = best.max((end + 1 - start) as u64);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn window_is_sliding_not_aligned() {
        // Clock-aligned seconds would see at most 5; the window 400..1400
        // holds 8.
        let t = [400, 600, 700, 800, 900, 1100, 1200, 1300, 2500];
        assert_eq!(peak_in_window(&t, 1000), 8);
    }

    #[test]
    fn window_edges_are_half_open() {
        assert_eq!(peak_in_window(&[0, 999], 1000), 2);
        assert_eq!(peak_in_window(&[0, 1000], 1000), 1);
        assert_eq!(peak_in_window(&[], 1000), 0);
        assert_eq!(peak_in_window(&[5, 5, 5], 1000), 3);
    }

    #[test]
    fn incremental_matches_pure() {
        let mut rng = StdRng::seed_from_u64(9);
        for _ in 0..50 {
            let mut t = 0u64;
            let mut arrivals = Vec::new();
            let mut window = PeakWindow::new(1000);
            let mut last = 0;
            for _ in 0..rng.random_range(0..200) {
                t += rng.random_range(0u64..300);
                arrivals.push(t);
                last = window.arrive(t);
            }
            assert_eq!(last, peak_in_window(&arrivals, 1000), "{arrivals:?}");
        }
    }

    #[test]
    fn recorder_counts() {
        let start = Instant::now();
        let mut r = Recorder::new(start);
        r.arrival(start);
        r.arrival(start);
        r.ok(10);
        assert_eq!(r.bucket_429(), 0);
        assert_eq!(r.bucket_429(), 1);
        r.fault("429");
        r.fault("reset");
        let s = r.snapshot();
        assert_eq!(s.requests, 2);
        assert_eq!(s.records_served, 10);
        assert_eq!(s.status_429, 3);
        assert_eq!(s.bucket_429, 2);
        assert_eq!(s.faults["reset"], 1);
        assert_eq!(s.faults["hang"], 0);
        assert_eq!(s.peak_requests_1s, 2);
        assert_eq!(s.first_request_at_ms, Some(0));
    }
}
