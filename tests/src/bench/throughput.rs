//! The throughput rows of `make bench`: an unthrottled export of many
//! rows (1,000,000 by default; 10,000,000 with `BENCH_SCALE=10m`) from the
//! mock, 1,000-row pages, end to end: rows a second from submit to the
//! published file, the workers' peak memory, and where the time went (the
//! manifest's phases: fetching and landing summed over pages, finalizing,
//! each with its rows a second).

use std::path::Path;
use std::time::{Duration, Instant};

use uuid::Uuid;

use pagefleet_shared::model::ExportState;
use pagefleet_shared::progress::{Phase, Phases};
use pagefleet_shared::spec::ExportSpec;

use super::report::{Goal, Table};
use crate::chaos::fleet::{default_tenant_dir, offset_spec};
use crate::chaos::ProcessFleet;
use crate::mock::{MockConfig, MockServer};

#[derive(Debug, Clone)]
pub struct ThroughputConfig {
    pub rows: usize,
    pub page_size: usize,
    pub workers: usize,
}

impl Default for ThroughputConfig {
    fn default() -> Self {
        ThroughputConfig {
            rows: 1_000_000,
            page_size: 1_000,
            workers: 4,
        }
    }
}

impl ThroughputConfig {
    /// `BENCH_SCALE`: `1m` (the default) or `10m` rows.
    pub fn at_scale(scale: &str) -> Option<ThroughputConfig> {
        let rows = match scale {
            "1m" => 1_000_000,
            "10m" => 10_000_000,
            _ => return None,
        };
        Some(ThroughputConfig {
            rows,
            ..ThroughputConfig::default()
        })
    }
}

#[derive(Debug, Clone)]
pub struct ThroughputResult {
    pub rows: u64,
    pub wall: Duration,
    /// The workers' largest peak RSS.
    pub worker_rss_kib: u64,
    /// As the manifest records them.
    pub phases: Phases,
}

impl ThroughputResult {
    pub fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.wall.as_secs_f64().max(0.001)
    }
}

pub async fn run_throughput(
    config: &ThroughputConfig,
    work_dir: &Path,
) -> anyhow::Result<ThroughputResult> {
    let token = format!("bench-{}", Uuid::now_v7().simple());
    let mut mock_config = MockConfig::new(42, config.rows);
    mock_config.rate = 1_000_000.0;
    mock_config.burst = 10_000;
    mock_config.token = token.clone();
    mock_config.max_page_size = config.page_size;
    let mock = MockServer::start(mock_config).await?;
    let label = format!("throughput-{}", config.rows);
    let mut fleet = ProcessFleet::start(&label, config.workers, work_dir, &token).await?;
    let out = default_tenant_dir(work_dir, &format!("{label}-out"));
    let retry = "max_attempts = 10\nmax_elapsed_ms = 600000\nbase_ms = 200\ncap_ms = 5000";
    let toml = offset_spec(
        "throughput",
        config.page_size,
        100_000.0,
        1_000,
        &mock.base_url(),
        &out,
        retry,
    );
    let spec = ExportSpec::from_toml(&toml)?;
    let started = Instant::now();
    let id = fleet.api.submit(&spec, None).await?.id;
    let status = fleet.wait_ended(id, Duration::from_secs(7200)).await?;
    let wall = started.elapsed();
    let worker_rss_kib = (fleet.workers.iter())
        .filter_map(|w| w.peak_rss_kib())
        .max()
        .unwrap_or(0);
    fleet.stop().await;
    mock.shutdown().await;
    anyhow::ensure!(
        status.state == ExportState::Completed,
        "{label} ended {}",
        status.state
    );
    let manifest = std::fs::read(out.join("throughput.csv.manifest.json"))?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest)?;
    let phases: Phases = serde_json::from_value(manifest["phases"].clone())?;
    let _ = std::fs::remove_dir_all(&out);
    Ok(ThroughputResult {
        rows: status.csv_rows.unwrap_or(0).max(0) as u64,
        wall,
        worker_rss_kib,
        phases,
    })
}

/// The summary's rows: rows a second, and the workers' memory.
pub fn throughput_goals(r: &ThroughputResult) -> Vec<Goal> {
    let mib = r.worker_rss_kib as f64 / 1024.0;
    vec![
        Goal::new(
            format!("throughput: {} rows end to end, rows/s", r.rows),
            format!("{:.0}", r.rows_per_s()),
            "≥ 150,000",
            Some(r.rows_per_s() >= 150_000.0),
        ),
        Goal::new(
            format!("throughput: worker peak RSS over {} rows", r.rows),
            format!("{mib:.0} MiB"),
            "< 150 MB",
            Some(mib * 1.048_576 < 150.0),
        ),
    ]
}

pub fn render_throughput(config: &ThroughputConfig, r: &ThroughputResult) -> String {
    let title = format!(
        "throughput: {} rows from the mock, unthrottled, pages of {}, {} workers (page times summed over pages running side by side)",
        config.rows, config.page_size, config.workers
    );
    let mut t = Table::new(
        &title,
        &[
            "rows",
            "wall s",
            "rows/s",
            "worker RSS MiB",
            "fetching s (rows/s)",
            "landing s (rows/s)",
            "finalizing s (rows/s)",
        ],
    );
    let phase = |p: &Phase| format!("{:.1} ({:.0})", p.seconds, p.rows_per_s.unwrap_or(0.0));
    t.row(&[
        r.rows.to_string(),
        format!("{:.1}", r.wall.as_secs_f64()),
        format!("{:.0}", r.rows_per_s()),
        format!("{:.0}", r.worker_rss_kib as f64 / 1024.0),
        phase(&r.phases.fetching),
        phase(&r.phases.landing),
        phase(&r.phases.finalizing),
    ]);
    t.finish()
}
