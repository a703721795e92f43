//! The chain rows of `make bench`: a `Link rel="next"` chain (one page at a
//! time, by nature) against a source that takes 20 ms and 50 ms to answer
//! a page, with the worker that lands a page fetching the next itself and,
//! for comparison, with every page going through the queue. A chain can go
//! no faster than one page per latency; what the fleet adds between pages
//! (parsing, landing, the hop) is read from when the requests arrived.

use std::path::Path;
use std::time::Duration;

use uuid::Uuid;

use pagefleet_shared::model::ExportState;
use pagefleet_shared::spec::ExportSpec;

use super::report::{Goal, Table};
use super::Walk;
use crate::chaos::fleet::{default_tenant_dir, offset_spec};
use crate::chaos::ProcessFleet;
use crate::mock::{MockConfig, MockServer};

#[derive(Debug, Clone)]
pub struct ChainConfig {
    pub pages: usize,
    pub page_size: usize,
    pub latencies_ms: Vec<u64>,
    pub workers: usize,
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            pages: 300,
            page_size: 10,
            latencies_ms: vec![20, 50],
            workers: 4,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ChainResult {
    pub latency_ms: u64,
    /// The worker that landed a page fetched the next one.
    pub followed: bool,
    pub pages_per_s: f64,
    /// Median time from a page's answer to the next page's request.
    pub median_between: Duration,
}

impl ChainResult {
    /// Pages a second over what the latency allows (one page per latency).
    pub fn share_of_latency_bound(&self) -> f64 {
        self.pages_per_s * self.latency_ms as f64 / 1000.0
    }
}

fn spec(config: &ChainConfig, mock: &MockServer, out: &Path) -> anyhow::Result<ExportSpec> {
    let retry = "max_attempts = 10\nmax_elapsed_ms = 600000\nbase_ms = 200\ncap_ms = 5000";
    let offset = offset_spec(
        "chain",
        config.page_size,
        1000.0,
        10,
        &mock.base_url(),
        out,
        retry,
    );
    let toml = Walk::LinkChain.adapt(offset);
    Ok(ExportSpec::from_toml(&toml)?)
}

/// One chain export against a source answering after `latency_ms`.
pub async fn run_chain(
    config: &ChainConfig,
    latency_ms: u64,
    followed: bool,
    work_dir: &Path,
) -> anyhow::Result<ChainResult> {
    let token = format!("bench-{}", Uuid::now_v7().simple());
    let mut mock_config = MockConfig::new(42, config.pages * config.page_size);
    mock_config.rate = 10_000.0;
    mock_config.burst = 1_000;
    mock_config.latency_ms = latency_ms;
    mock_config.token = token.clone();
    mock_config.max_page_size = config.page_size;
    let mock = MockServer::start(mock_config).await?;
    let label = format!(
        "chain-{latency_ms}ms-{}",
        if followed { "followed" } else { "queued" }
    );
    let args = match followed {
        true => Vec::new(),
        false => vec!["--no-follow-chains".to_string()],
    };
    let mut fleet =
        ProcessFleet::start_with(&label, config.workers, work_dir, &token, args).await?;
    let out = default_tenant_dir(work_dir, &format!("{label}-out"));
    let id = fleet
        .api
        .submit(&spec(config, &mock, &out)?, None)
        .await?
        .id;
    let status = fleet.wait_ended(id, Duration::from_secs(900)).await?;
    fleet.stop().await;
    let arrivals = mock.arrivals_us();
    mock.shutdown().await;
    anyhow::ensure!(
        status.state == ExportState::Completed,
        "{label} ended {}",
        status.state
    );
    let span_us = match (arrivals.first(), arrivals.last()) {
        (Some(first), Some(last)) => last - first,
        _ => 0,
    };
    let mut between: Vec<u64> = arrivals
        .windows(2)
        .map(|w| (w[1] - w[0]).saturating_sub(latency_ms * 1000))
        .collect();
    between.sort_unstable();
    let median = between.get(between.len() / 2).copied().unwrap_or(0);
    Ok(ChainResult {
        latency_ms,
        followed,
        pages_per_s: arrivals.len().saturating_sub(1) as f64 / (span_us.max(1) as f64 / 1e6),
        median_between: Duration::from_micros(median),
    })
}

/// The summary's rows: the followed chain against 1/latency.
pub fn chain_goals(results: &[ChainResult]) -> Vec<Goal> {
    results
        .iter()
        .filter(|r| r.followed)
        .map(|r| {
            let share = r.share_of_latency_bound();
            Goal::new(
                format!(
                    "chain, source latency {} ms: pages/s (median answer → next request)",
                    r.latency_ms
                ),
                format!(
                    "{:.1} = {:.0} % of 1/latency ({:.1} ms)",
                    r.pages_per_s,
                    share * 100.0,
                    r.median_between.as_secs_f64() * 1000.0
                ),
                "≥ 90 % of 1/latency",
                Some(share >= 0.9),
            )
        })
        .collect()
}

pub fn render_chain(config: &ChainConfig, results: &[ChainResult]) -> String {
    let title = format!(
        "chain: Link rel=\"next\" only, {} pages of {} records, {} workers, source latency as shown",
        config.pages, config.page_size, config.workers
    );
    let mut t = Table::new(
        &title,
        &[
            "latency ms",
            "<next page fetched by",
            "pages/s",
            "of 1/latency",
            "median answer → next request ms",
        ],
    );
    for r in results {
        let by = match r.followed {
            true => "the worker that landed the page",
            false => "the queue (baseline)",
        };
        t.row(&[
            r.latency_ms.to_string(),
            by.to_string(),
            format!("{:.1}", r.pages_per_s),
            format!("{:.0} %", r.share_of_latency_bound() * 100.0),
            format!("{:.1}", r.median_between.as_secs_f64() * 1000.0),
        ]);
    }
    t.finish()
}
