//! `make bench`: how close the fleet runs to a source's rate limit R without
//! crossing it, against a naive baseline; the other walks; a chain against a
//! slow source (`chain`); the learning of a limit nobody states
//! (`adaptive`); one huge page of small records (`memory`); an
//! unthrottled export of many rows (`throughput`); an
//! outage; and the limiter alone. Rate use is measured as ratios; absolute
//! times on a shared machine are noisy. Speed is measured here, never
//! asserted in tests. The report (`report`) is one summary table of every
//! goal, then each part's own.

use std::path::Path;
use std::time::{Duration, Instant};

use uuid::Uuid;

use pagefleet_shared::model::ExportState;
use pagefleet_shared::ratelimit::{Bucket, Permit, RateLimiter};
use pagefleet_shared::spec::ExportSpec;

pub mod adaptive;
pub mod chain;
pub mod memory;
mod report;
pub mod throughput;

use adaptive::{adaptive_goals, render_adaptive, run_adaptive, AdaptiveConfig};
use chain::{chain_goals, render_chain, run_chain, ChainConfig};
use memory::{memory_goals, render_memory, run_memory, MemoryConfig};
use report::{Goal, Report, Table};
use throughput::{render_throughput, run_throughput, throughput_goals, ThroughputConfig};

use crate::chaos::fleet::offset_spec;
use crate::chaos::ProcessFleet;
use crate::mock::{MockConfig, MockServer};

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub pages: usize,
    pub page_size: usize,
    pub rates: Vec<f64>,
    pub burst: u32,
    pub workers: Vec<usize>,
    pub outage: Duration,
    /// The parts to run (`BENCH_ONLY`); every part when empty.
    pub only: Vec<String>,
    pub adaptive: AdaptiveConfig,
    pub chain: ChainConfig,
    pub throughput: ThroughputConfig,
    pub memory: MemoryConfig,
}

impl BenchConfig {
    /// Whether the part `name` runs.
    fn runs(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|n| n == name)
    }
}

/// The parts of the bench, in the order they run.
pub const PARTS: [&str; 8] = [
    "rate",
    "walks",
    "chain",
    "adaptive",
    "memory",
    "throughput",
    "outage",
    "limiter",
];

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            pages: 2_000,
            page_size: 10,
            rates: vec![50.0, 200.0],
            burst: 10,
            workers: vec![1, 4, 8],
            outage: Duration::from_secs(60),
            only: Vec::new(),
            adaptive: AdaptiveConfig::default(),
            chain: ChainConfig::default(),
            throughput: ThroughputConfig::default(),
            memory: MemoryConfig::default(),
        }
    }
}

/// How an export walks the source's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// Offset pagination whose body states the total: every page at once.
    OffsetFanOut,
    /// `Link` headers numbering their pages (json-server): every page at
    /// once, planned from `rel="last"`.
    LinkFanOut,
    /// `Link` headers with keyset `next` links: one page at a time.
    LinkChain,
}

impl Walk {
    fn label(self) -> &'static str {
        match self {
            Walk::OffsetFanOut => "offset, total in the body (fan-out)",
            Walk::LinkFanOut => "Link rel=\"last\" with page numbers (fan-out)",
            Walk::LinkChain => "Link rel=\"next\" only (chain)",
        }
    }

    /// The spec `offset_toml` (an [`offset_spec`]) walking this way
    /// instead: its source path and pagination.
    pub fn adapt(self, offset_toml: String) -> String {
        let (path, pagination) = match self {
            Walk::OffsetFanOut => return offset_toml,
            Walk::LinkFanOut => (
                "/json-server/items",
                "style = \"link_header\"\nsize_param = \"_limit\"\npage_param = \"_page\"\nfirst_page = 1",
            ),
            Walk::LinkChain => ("/link/items", "style = \"link_header\""),
        };
        offset_toml
            .replace("path = \"/offset/items\"", &format!("path = \"{path}\""))
            .replace("records_path = \"data\"\n", "")
            .replace("style = \"offset\"\ntotal_path = \"total\"", pagination)
    }
}

/// One export's numbers.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub walk: Walk,
    pub rate: f64,
    pub workers: usize,
    pub shared: bool,
    pub wall: Duration,
    pub source_span: Duration,
    pub requests: u64,
    pub status_429: u64,
    pub peak_1s: u64,
    pub pages: usize,
    pub rss_kib: u64,
}

impl RunResult {
    /// Useful requests / (R × time the source was busy with us).
    pub fn efficiency(&self) -> f64 {
        self.pages as f64 / (self.rate * self.source_span.as_secs_f64().max(0.001))
    }
    pub fn share_429(&self) -> f64 {
        self.status_429 as f64 / self.requests.max(1) as f64
    }
    pub fn per_page(&self) -> f64 {
        self.requests as f64 / self.pages as f64
    }
}

/// The bench's export: the chaos spec with patient retries, at `rate`,
/// walking the pages as `walk` says.
fn bench_spec(
    config: &BenchConfig,
    rate: f64,
    walk: Walk,
    mock: &MockServer,
    out: &Path,
) -> anyhow::Result<ExportSpec> {
    Ok(ExportSpec::from_toml(&walk.adapt(offset_spec(
        "bench",
        config.page_size,
        rate,
        config.burst,
        &mock.base_url(),
        out,
        "max_attempts = 50\nmax_elapsed_ms = 900000\nbase_ms = 200\ncap_ms = 5000",
    )))?)
}

async fn start_mock(config: &BenchConfig, rate: f64, token: &str) -> anyhow::Result<MockServer> {
    let mut mock = MockConfig::new(42, config.pages * config.page_size);
    mock.rate = rate;
    mock.burst = config.burst;
    mock.token = token.to_string();
    mock.max_page_size = config.page_size;
    Ok(MockServer::start(mock).await?)
}

/// One export with `workers` workers against a source limited to `rate`.
pub async fn run_export(
    config: &BenchConfig,
    rate: f64,
    workers: usize,
    shared: bool,
    walk: Walk,
    work_dir: &Path,
) -> anyhow::Result<RunResult> {
    let token = format!("bench-{}", Uuid::now_v7().simple());
    let mock = start_mock(config, rate, &token).await?;
    let args = if shared {
        Vec::new()
    } else {
        vec!["--no-shared-limiter".to_string()]
    };
    // The label names a database too: lower case only.
    let label = format!(
        "r{rate}-w{workers}-{}-{}",
        if shared { "shared" } else { "naive" },
        format!("{walk:?}").to_lowercase()
    );
    let mut fleet = ProcessFleet::start_with(&label, workers, work_dir, &token, args).await?;
    let out = crate::chaos::fleet::default_tenant_dir(work_dir, &format!("{label}-out"));
    let spec = bench_spec(config, rate, walk, &mock, &out)?;
    let started = Instant::now();
    let id = fleet.api.submit(&spec, None).await?.id;
    let status = fleet.wait_ended(id, Duration::from_secs(1800)).await?;
    let wall = started.elapsed();
    let rss = fleet
        .workers
        .iter()
        .filter_map(|w| w.peak_rss_kib())
        .max()
        .unwrap_or(0);
    fleet.stop().await;
    let stats = mock.finish().await;
    anyhow::ensure!(
        status.state == ExportState::Completed,
        "{label} ended {}",
        status.state
    );
    let span_ms = stats
        .last_request_at_ms
        .unwrap_or(0)
        .saturating_sub(stats.first_request_at_ms.unwrap_or(0));
    Ok(RunResult {
        walk,
        rate,
        workers,
        shared,
        wall,
        source_span: Duration::from_millis(span_ms),
        requests: stats.requests,
        status_429: stats.status_429,
        peak_1s: stats.peak_requests_1s,
        pages: config.pages,
        rss_kib: rss,
    })
}

#[derive(Debug, Clone)]
pub struct OutageResult {
    pub rate_before: f64,
    pub rate_during: f64,
    pub recovery: Option<Duration>,
}

/// 100 % 503 for `config.outage` in the middle of an export.
pub async fn run_outage(
    config: &BenchConfig,
    rate: f64,
    workers: usize,
    work_dir: &Path,
) -> anyhow::Result<OutageResult> {
    let token = format!("bench-{}", Uuid::now_v7().simple());
    let mock = start_mock(config, rate, &token).await?;
    let mut fleet = ProcessFleet::start("outage", workers, work_dir, &token).await?;
    let out = crate::chaos::fleet::default_tenant_dir(work_dir, "outage-out");
    let spec = bench_spec(config, rate, Walk::OffsetFanOut, &mock, &out)?;
    let id = fleet.api.submit(&spec, None).await?.id;
    // Let it reach steady state, then measure 10 s before the outage.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before_start = mock.stats().requests;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let before = mock.stats().requests - before_start;
    mock.set_outage(true);
    let during_start = mock.stats().requests;
    tokio::time::sleep(config.outage).await;
    let during = mock.stats().requests - during_start;
    mock.set_outage(false);
    // Recovery: the first moment the last 2 s ran at >= 95 % of R.
    let ended = Instant::now();
    let mut samples: Vec<(Instant, u64)> = vec![(ended, mock.stats().ok)];
    let mut recovery = None;
    while ended.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = Instant::now();
        let ok = mock.stats().ok;
        samples.push((now, ok));
        if let Some((t0, ok0)) = samples
            .iter()
            .rev()
            .find(|(t, _)| now.duration_since(*t) >= Duration::from_secs(2))
        {
            let r = (ok - ok0) as f64 / now.duration_since(*t0).as_secs_f64();
            if r >= 0.95 * rate {
                recovery = Some(t0.duration_since(ended));
                break;
            }
        }
        if let Ok(s) = fleet.api.status(id).await {
            if s.state.is_terminal() {
                break;
            }
        }
    }
    let _ = fleet.wait_ended(id, Duration::from_secs(900)).await;
    fleet.stop().await;
    mock.shutdown().await;
    Ok(OutageResult {
        rate_before: before as f64 / 10.0,
        rate_during: during as f64 / config.outage.as_secs_f64(),
        recovery,
    })
}

#[derive(Debug, Clone)]
pub struct LimiterResult {
    pub decisions_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// The limiter alone: concurrent callers deciding against one bucket.
pub async fn run_limiter(duration: Duration) -> anyhow::Result<LimiterResult> {
    let ns = format!("bench-{}", Uuid::now_v7().simple());
    let limiter = RateLimiter::new("redis://127.0.0.1:6379", &ns)?;
    let bucket = Bucket::stated("limiter-bench", 1_000_000.0, 1_000);
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..16 {
        let limiter = limiter.clone();
        let bucket = bucket.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while started.elapsed() < duration {
                let t = Instant::now();
                if let Ok(Permit::Go | Permit::Reserved(_)) =
                    limiter.acquire(&bucket, Duration::ZERO).await
                {}
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let elapsed = started.elapsed();
    limiter.clear().await?;
    all.sort();
    let pick = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(LimiterResult {
        decisions_per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pick(0.5),
        p99: pick(0.99),
    })
}

/// Runs the parts `config.only` names (all by default) and returns the
/// printed report.
pub async fn run_all(config: &BenchConfig, progress: impl Fn(&str)) -> anyhow::Result<String> {
    let work_dir =
        std::env::temp_dir().join(format!("pagefleet-bench-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&work_dir)?;
    let mut report = Report::default();
    let mut runs = Vec::new();
    if config.runs("rate") {
        runs = rate_runs(config, &work_dir, &progress).await?;
        report.parts.push(render_rate(config, &runs));
        report.goals.extend(rate_goals(&runs));
    }
    if config.runs("walks") {
        let walks = walk_runs(config, &work_dir, &progress).await?;
        report.parts.push(render_walks(&runs, &walks));
        report.goals.extend(walk_goals(&walks));
    }
    if config.runs("chain") {
        let mut results = Vec::new();
        for &latency in &config.chain.latencies_ms {
            for followed in [true, false] {
                progress(&format!(
                    "bench: a chain against a source answering in {latency} ms, {}...",
                    if followed {
                        "followed by its worker"
                    } else {
                        "every page through the queue"
                    }
                ));
                let r = run_chain(&config.chain, latency, followed, &work_dir).await?;
                progress(&format!(
                    "  {:.1} pages/s, {:.0}% of 1/latency",
                    r.pages_per_s,
                    r.share_of_latency_bound() * 100.0
                ));
                results.push(r);
            }
        }
        report.parts.push(render_chain(&config.chain, &results));
        report.goals.extend(chain_goals(&results));
    }
    if config.runs("adaptive") {
        let mut results = Vec::new();
        let ten_times = config.adaptive.limit * 10.0;
        for stated in [Some(ten_times), None] {
            progress(&format!(
                "bench: a source limited to {}/s that states it only by refusing, spec rate {}...",
                config.adaptive.limit,
                stated.map_or("none".to_string(), |r| format!("{r}/s"))
            ));
            let r = run_adaptive(&config.adaptive, stated, &work_dir).await?;
            progress(&format!(
                "  after learning: {:.2}% 429s, {:.1}% of the limit",
                r.after_learning.share_429() * 100.0,
                r.after_learning.share_of_limit(config.adaptive.limit) * 100.0
            ));
            results.push(r);
        }
        report
            .parts
            .push(render_adaptive(&config.adaptive, &results));
        report
            .goals
            .extend(adaptive_goals(&config.adaptive, &results));
    }
    if config.runs("memory") {
        let m = &config.memory;
        progress(&format!(
            "bench: one page of {} small records, one worker...",
            m.records
        ));
        let r = run_memory(m, &work_dir).await?;
        progress(&format!(
            "  peak {:.0} MiB, {:.1}x the body over idle",
            r.peak_kib as f64 / 1024.0,
            r.times_body()
        ));
        report.parts.push(render_memory(&r));
        report.goals.extend(memory_goals(&r));
    }
    if config.runs("throughput") {
        let t = &config.throughput;
        progress(&format!(
            "bench: {} rows unthrottled, pages of {}, {} workers...",
            t.rows, t.page_size, t.workers
        ));
        let r = run_throughput(t, &work_dir).await?;
        progress(&format!("  {:.0} rows/s", r.rows_per_s()));
        report.parts.push(render_throughput(t, &r));
        report.goals.extend(throughput_goals(&r));
    }
    if config.runs("outage") {
        let outage_rate = config.rates[0];
        let outage_workers = *config.workers.last().unwrap_or(&1);
        progress(&format!(
            "bench: outage of {:?} at R={outage_rate}/s with {outage_workers} workers...",
            config.outage
        ));
        let outage = run_outage(config, outage_rate, outage_workers, &work_dir).await?;
        let line = render_outage(config, &outage, outage_rate, outage_workers);
        report.parts.push(line);
        let ratio = outage.rate_during / outage.rate_before.max(0.001);
        report.goals.push(Goal::new(
            format!("outage: requests during / before ({outage_workers} workers)"),
            format!("{ratio:.3}"),
            "≤ 0.05",
            Some(ratio <= 0.05),
        ));
    }
    if config.runs("limiter") {
        progress("bench: the limiter alone...");
        let limiter = run_limiter(Duration::from_secs(3)).await?;
        report.parts.push(render_limiter(&limiter));
        report.goals.push(Goal::new(
            "limiter alone: decisions/s (p99)",
            format!(
                "{:.0} ({:.2} ms)",
                limiter.decisions_per_sec,
                limiter.p99.as_secs_f64() * 1000.0
            ),
            "",
            None,
        ));
    }
    let _ = std::fs::remove_dir_all(&work_dir);
    Ok(report.render())
}

async fn rate_runs(
    config: &BenchConfig,
    work_dir: &Path,
    progress: &impl Fn(&str),
) -> anyhow::Result<Vec<RunResult>> {
    let mut runs = Vec::new();
    for &rate in &config.rates {
        for &workers in &config.workers {
            for shared in [true, false] {
                progress(&format!(
                    "bench: R={rate}/s, {workers} worker(s), {} limiter...",
                    if shared { "shared" } else { "no shared" }
                ));
                let walk = Walk::OffsetFanOut;
                let r = run_export(config, rate, workers, shared, walk, work_dir).await?;
                progress(&format!(
                    "  {:.1}% of R, {:.2}% 429s, peak {} in 1 s",
                    r.efficiency() * 100.0,
                    r.share_429() * 100.0,
                    r.peak_1s
                ));
                runs.push(r);
            }
        }
    }
    Ok(runs)
}

/// The other walks at the highest rate, where one page at a time cannot
/// keep up.
async fn walk_runs(
    config: &BenchConfig,
    work_dir: &Path,
    progress: &impl Fn(&str),
) -> anyhow::Result<Vec<RunResult>> {
    let walk_rate = config.rates.iter().copied().fold(0.0, f64::max);
    let walk_workers = 4;
    let mut walks = Vec::new();
    for walk in [Walk::LinkFanOut, Walk::LinkChain] {
        progress(&format!(
            "bench: {} at R={walk_rate}/s, {walk_workers} workers...",
            walk.label()
        ));
        let r = run_export(config, walk_rate, walk_workers, true, walk, work_dir).await?;
        progress(&format!("  {:.1}% of R", r.efficiency() * 100.0));
        walks.push(r);
    }
    Ok(walks)
}

fn rate_goals(runs: &[RunResult]) -> Vec<Goal> {
    runs.iter()
        .filter(|r| r.shared)
        .map(|r| {
            Goal::new(
                format!("rate use at R={}/s, {} worker(s)", r.rate, r.workers),
                format!(
                    "{:.1} % ({:.2} % 429s)",
                    r.efficiency() * 100.0,
                    r.share_429() * 100.0
                ),
                "≥ 95 %, 0 429s",
                Some(r.efficiency() >= 0.95 && r.status_429 == 0),
            )
        })
        .collect()
}

fn walk_goals(walks: &[RunResult]) -> Vec<Goal> {
    walks
        .iter()
        .map(|r| {
            Goal::new(
                format!("{} at R={}/s", r.walk.label(), r.rate),
                format!("{:.1} % of R", r.efficiency() * 100.0),
                "",
                None,
            )
        })
        .collect()
}

fn render_outage(
    config: &BenchConfig,
    outage: &OutageResult,
    outage_rate: f64,
    outage_workers: usize,
) -> String {
    format!(
        "outage: 100 % 503 for {:.0} s at R={outage_rate}/s, {outage_workers} workers: {:.1} req/s before, {:.2} req/s during → ratio {:.3}; back to >= 95 % of R {}\n",
        config.outage.as_secs_f64(),
        outage.rate_before,
        outage.rate_during,
        outage.rate_during / outage.rate_before.max(0.001),
        match outage.recovery {
            Some(d) => format!("{:.1} s after it ended", d.as_secs_f64()),
            None => "not within 90 s".to_string(),
        }
    )
}

fn render_limiter(limiter: &LimiterResult) -> String {
    format!(
        "limiter alone (16 concurrent callers, one bucket): {:.0} decisions/s, p50 {:.2} ms, p99 {:.2} ms\n",
        limiter.decisions_per_sec,
        limiter.p50.as_secs_f64() * 1000.0,
        limiter.p99.as_secs_f64() * 1000.0
    )
}

fn render_rate(config: &BenchConfig, runs: &[RunResult]) -> String {
    let title = format!(
        "pagefleet bench: {} pages of {} records, offset pagination (fan-out), burst {}",
        config.pages, config.page_size, config.burst
    );
    let mut t = Table::new(
        &title,
        &[
            "R/s",
            "workers",
            "<limiter",
            "wall s",
            "source busy s",
            "useful/(R*busy)",
            "429 share",
            "peak 1 s (R+burst)",
            "req/page",
            "worker RSS MiB",
        ],
    );
    for r in runs {
        t.row(&[
            format!("{:.0}", r.rate),
            r.workers.to_string(),
            (if r.shared { "shared" } else { "naive" }).to_string(),
            format!("{:.1}", r.wall.as_secs_f64()),
            format!("{:.1}", r.source_span.as_secs_f64()),
            format!("{:.1} %", r.efficiency() * 100.0),
            format!("{:.2} %", r.share_429() * 100.0),
            format!("{} ({})", r.peak_1s, r.rate as u64 + config.burst as u64),
            format!("{:.3}", r.per_page()),
            format!("{:.1}", r.rss_kib as f64 / 1024.0),
        ]);
    }
    t.finish()
}

fn render_walks(runs: &[RunResult], walks: &[RunResult]) -> String {
    let mut t = Table::new(
        "other walks, at the highest rate",
        &[
            "<pagination",
            "R/s",
            "workers",
            "wall s",
            "useful/(R*busy)",
            "requests",
            "429 share",
        ],
    );
    let same_load = |r: &&RunResult| {
        walks
            .first()
            .is_some_and(|w| r.shared && r.rate == w.rate && r.workers == w.workers)
    };
    for r in runs.iter().filter(same_load).chain(walks) {
        t.row(&[
            r.walk.label().to_string(),
            format!("{:.0}", r.rate),
            r.workers.to_string(),
            format!("{:.1}", r.wall.as_secs_f64()),
            format!("{:.1} %", r.efficiency() * 100.0),
            r.requests.to_string(),
            format!("{:.2} %", r.share_429() * 100.0),
        ]);
    }
    t.finish()
}
