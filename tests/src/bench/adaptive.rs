//! The adaptive-rate rows of `make bench`: a source that states its limit
//! only by refusing (429 with `Retry-After`, no rate-limit headers), with
//! the spec's rate 10× too high and with no rate at all. Measured after
//! the first 30 s (learning) and over the whole run.

use std::path::Path;
use std::time::{Duration, Instant};

use uuid::Uuid;

use pagefleet_shared::model::ExportState;
use pagefleet_shared::spec::ExportSpec;

use super::report::{Goal, Table};
use crate::chaos::fleet::{default_tenant_dir, offset_spec};
use crate::chaos::ProcessFleet;
use crate::mock::{MockConfig, MockServer, MockStats};

/// What the source really allows, and the export run against it.
#[derive(Debug, Clone)]
pub struct AdaptiveConfig {
    /// The source's real limit, requests per second (never stated).
    pub limit: f64,
    /// The source's own tolerance of a burst.
    pub source_burst: u32,
    pub pages: usize,
    pub page_size: usize,
    pub workers: usize,
    /// What counts as learning: left out of the "after" numbers.
    pub learning: Duration,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            limit: 10.0,
            source_burst: 5,
            pages: 1_500,
            page_size: 10,
            workers: 4,
            learning: Duration::from_secs(30),
        }
    }
}

/// Requests, 429s and useful answers over a stretch of the run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stretch {
    pub requests: u64,
    pub status_429: u64,
    pub ok: u64,
    pub seconds: f64,
}

impl Stretch {
    fn between(from: &MockStats, from_ms: u64, to: &MockStats, to_ms: u64) -> Stretch {
        Stretch {
            requests: to.requests - from.requests,
            status_429: to.status_429 - from.status_429,
            ok: to.ok - from.ok,
            seconds: to_ms.saturating_sub(from_ms) as f64 / 1000.0,
        }
    }

    pub fn share_429(&self) -> f64 {
        self.status_429 as f64 / self.requests.max(1) as f64
    }

    /// Useful answers over what the real limit allowed in the stretch.
    pub fn share_of_limit(&self, limit: f64) -> f64 {
        self.ok as f64 / (limit * self.seconds.max(0.001))
    }
}

#[derive(Debug, Clone)]
pub struct AdaptiveResult {
    /// The spec's rate; `None` when it states none.
    pub stated: Option<f64>,
    pub whole: Stretch,
    pub after_learning: Stretch,
    /// What the export's status said the fleet learned, at the end.
    pub learned: Option<f64>,
}

/// The bench spec at `stated` (or with no rate, burst left at its default).
fn spec(
    config: &AdaptiveConfig,
    stated: Option<f64>,
    mock: &MockServer,
    out: &Path,
) -> anyhow::Result<ExportSpec> {
    let retry = "max_attempts = 50\nmax_elapsed_ms = 900000\nbase_ms = 200\ncap_ms = 5000";
    let rate = stated.unwrap_or(1.0);
    let toml = offset_spec(
        "adaptive",
        config.page_size,
        rate,
        10,
        &mock.base_url(),
        out,
        retry,
    );
    let toml = match stated {
        Some(_) => toml,
        None => toml.replace(&format!("rate = {rate}\nburst = 10\n"), ""),
    };
    Ok(ExportSpec::from_toml(&toml)?)
}

/// One export against the silent limiter.
pub async fn run_adaptive(
    config: &AdaptiveConfig,
    stated: Option<f64>,
    work_dir: &Path,
) -> anyhow::Result<AdaptiveResult> {
    let token = format!("bench-{}", Uuid::now_v7().simple());
    let mut mock_config = MockConfig::new(42, config.pages * config.page_size);
    mock_config.rate = config.limit;
    mock_config.burst = config.source_burst;
    mock_config.silent_limit = true;
    mock_config.token = token.clone();
    mock_config.max_page_size = config.page_size;
    let mock = MockServer::start(mock_config).await?;
    let label = match stated {
        Some(r) => format!("adaptive-stated-{r}"),
        None => "adaptive-unstated".to_string(),
    };
    let mut fleet = ProcessFleet::start(&label, config.workers, work_dir, &token).await?;
    let out = default_tenant_dir(work_dir, &format!("{label}-out"));
    let id = fleet
        .api
        .submit(&spec(config, stated, &mock, &out)?, None)
        .await?
        .id;
    // The counters when learning is over, by the mock's clock.
    let mut at_learned: Option<(MockStats, u64)> = None;
    let sampler = async {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let stats = mock.stats();
            let Some(first) = stats.first_request_at_ms else {
                continue;
            };
            let since_first = stats.last_request_at_ms.unwrap_or(first) - first;
            if since_first as u128 >= config.learning.as_millis() && at_learned.is_none() {
                let now_ms = first + since_first;
                at_learned = Some((stats, now_ms));
            }
            if started.elapsed() > Duration::from_secs(3600) {
                break;
            }
        }
    };
    let status = tokio::select! {
        status = fleet.wait_ended(id, Duration::from_secs(1800)) => status?,
        _ = sampler => anyhow::bail!("{label}: no end within an hour"),
    };
    fleet.stop().await;
    let end = mock.finish().await;
    anyhow::ensure!(
        status.state == ExportState::Completed,
        "{label} ended {}",
        status.state
    );
    let first_ms = end.first_request_at_ms.unwrap_or(0);
    let last_ms = end.last_request_at_ms.unwrap_or(first_ms);
    let whole = Stretch::between(&MockStats::default(), first_ms, &end, last_ms);
    let after_learning = match &at_learned {
        Some((stats, ms)) => Stretch::between(stats, *ms, &end, last_ms),
        None => Stretch::default(),
    };
    Ok(AdaptiveResult {
        stated,
        whole,
        after_learning,
        learned: status.progress.source_rate,
    })
}

/// The summary's rows: 429s and the limit used after learning.
pub fn adaptive_goals(config: &AdaptiveConfig, results: &[AdaptiveResult]) -> Vec<Goal> {
    let mut goals = Vec::new();
    for r in results {
        let spec = r
            .stated
            .map_or("no rate in the spec".to_string(), |s| format!("spec {s}/s"));
        let after = &r.after_learning;
        let what =
            |measure: &str| format!("adaptive, real limit {}/s, {spec}: {measure}", config.limit);
        goals.push(Goal::new(
            what("429 share after 30 s"),
            format!("{:.2} %", after.share_429() * 100.0),
            "< 1 %",
            Some(after.share_429() < 0.01),
        ));
        let used = after.share_of_limit(config.limit);
        goals.push(Goal::new(
            what("share of the limit used after 30 s"),
            format!("{:.1} %", used * 100.0),
            "≥ 95 %",
            Some(used >= 0.95),
        ));
    }
    goals
}

pub fn render_adaptive(config: &AdaptiveConfig, results: &[AdaptiveResult]) -> String {
    let title = format!(
        "adaptive rate: a source limited to {}/s (burst {}) that says so only by refusing (429, Retry-After, no rate-limit headers); {} pages, {} workers",
        config.limit, config.source_burst, config.pages, config.workers
    );
    let mut t = Table::new(
        &title,
        &[
            "<spec rate",
            "whole run s",
            "429 share (whole)",
            "limit used (whole)",
            "429 share after 30 s",
            "limit used after 30 s",
            "learned rate",
        ],
    );
    let limit = config.limit;
    for r in results {
        t.row(&[
            r.stated.map_or("none".to_string(), |s| format!("{s}/s")),
            format!("{:.1}", r.whole.seconds),
            format!("{:.2} %", r.whole.share_429() * 100.0),
            format!("{:.1} %", r.whole.share_of_limit(limit) * 100.0),
            format!("{:.2} %", r.after_learning.share_429() * 100.0),
            format!("{:.1} %", r.after_learning.share_of_limit(limit) * 100.0),
            r.learned.map_or("-".to_string(), |l| format!("{l:.2}/s")),
        ]);
    }
    t.finish()
}
