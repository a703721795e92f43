//! Chaos: an export runs while its workers are killed with SIGKILL, its
//! scheduler dies, and RabbitMQ, Postgres and Redis restart under it. The
//! CSV must come out byte-identical to a fault-free run of the same spec
//! and seed, with no row lost or doubled, and the dead-letter queue must
//! hold exactly the poison pages. `make chaos` runs the full scenario; a
//! small one runs in `make test`.
//!
//! Chaos restarts the machine's shared services: run it alone.

pub mod fleet;
mod report;
pub mod services;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use uuid::Uuid;

use pagefleet_shared::model::{ExportState, QueueRole};
use pagefleet_shared::queue::Broker;
use pagefleet_shared::spec::ExportSpec;

use crate::mock::{Faults, MockConfig, MockServer};
pub use fleet::bin_dir;
use fleet::connect;
pub use fleet::ProcessFleet;
pub use report::{ChaosReport, Redelivery};
use services::Service;

#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub seed: u64,
    pub pages: usize,
    pub page_size: usize,
    pub workers: usize,
    pub worker_kills: usize,
    /// Workers stopped with SIGTERM (and replaced), as a rolling deploy does.
    pub worker_stops: usize,
    pub kill_scheduler: bool,
    pub restarts: Vec<Service>,
    pub poison_pages: usize,
    pub rate: f64,
    pub burst: u32,
    pub faults: Faults,
}

impl ChaosConfig {
    /// The `make chaos` scenario: 2,000 pages, 20 worker kills, a scheduler
    /// kill, a restart of each service, two poison pages.
    pub fn full(seed: u64) -> Self {
        ChaosConfig {
            seed,
            pages: 2_000,
            page_size: 10,
            workers: 3,
            worker_kills: 20,
            worker_stops: 3,
            kill_scheduler: true,
            restarts: vec![Service::RabbitMq, Service::Postgres, Service::Redis],
            poison_pages: 2,
            rate: 50.0,
            burst: 10,
            faults: light_faults(),
        }
    }

    /// The scenario `make test` runs: a few hundred pages, a few kills, one
    /// broker restart.
    pub fn small(seed: u64) -> Self {
        ChaosConfig {
            pages: 300,
            worker_kills: 3,
            worker_stops: 0,
            kill_scheduler: false,
            restarts: vec![Service::RabbitMq],
            rate: 60.0,
            ..ChaosConfig::full(seed)
        }
    }

    fn records(&self) -> usize {
        self.pages * self.page_size
    }
}

/// Some weather on top of the chaos: the source fails now and then too.
fn light_faults() -> Faults {
    Faults {
        p_429: 0.005,
        p_500: 0.005,
        p_503: 0.005,
        p_reset: 0.005,
        p_truncated: 0.005,
        hang_ms: 2_500,
        p_hang: 0.002,
        ..Faults::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Event {
    KillWorker,
    StopWorker,
    KillScheduler,
    Restart(Service),
}

fn spec_toml(config: &ChaosConfig, mock: &MockServer, out: &Path) -> String {
    fleet::offset_spec(
        "chaos",
        config.page_size,
        config.rate,
        config.burst,
        &mock.base_url(),
        out,
        "max_attempts = 12\nbase_ms = 100\ncap_ms = 2000",
    )
}

/// Runs the reference export and the chaos export and compares them.
pub async fn run(config: &ChaosConfig) -> anyhow::Result<ChaosReport> {
    for s in [Service::Postgres, Service::Redis, Service::RabbitMq] {
        services::wait_up(s, Duration::from_secs(60)).await?;
    }
    let work_dir = std::env::temp_dir().join(format!(
        "pagefleet-chaos-{}-{}",
        config.seed,
        Uuid::now_v7().simple()
    ));
    fleet::ensure_dir(&work_dir)?;
    let token = format!("chaos-{}", Uuid::now_v7().simple());
    let mut mock_config = MockConfig::new(config.seed, config.records());
    mock_config.token = token.clone();
    mock_config.rate = config.rate;
    mock_config.burst = config.burst;
    mock_config.faults = config.faults.clone();
    mock_config.max_page_size = config.page_size.max(1);
    let mock = MockServer::start(mock_config).await?;
    let mut report = ChaosReport::new(config);
    let result = scenario(config, &mock, &token, &work_dir, &mut report).await;
    mock.shutdown().await;
    match result {
        Ok(()) => {
            if report.passed() {
                let _ = std::fs::remove_dir_all(&work_dir);
            } else {
                report.logs = Some(work_dir);
            }
            Ok(report)
        }
        Err(e) => Err(e.context(format!(
            "chaos seed {}; logs kept in {}",
            config.seed,
            work_dir.display()
        ))),
    }
}

async fn scenario(
    config: &ChaosConfig,
    mock: &MockServer,
    token: &str,
    work_dir: &Path,
    report: &mut ChaosReport,
) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);

    // 1. The fault-free reference: same spec and seed, nobody killed.
    let reference_out = fleet::default_tenant_dir(work_dir, "reference-out");
    let reference = ProcessFleet::start("ref", 2, work_dir, token).await?;
    let spec = ExportSpec::from_toml(&spec_toml(config, mock, &reference_out))?;
    let ok_before = mock.stats().ok;
    let id = reference.api.submit(&spec, None).await?.id;
    let mut reference = reference;
    let status = reference.wait_ended(id, Duration::from_secs(900)).await?;
    reference.stop().await;
    anyhow::ensure!(
        status.state == ExportState::Completed,
        "reference run ended {}",
        status.state
    );
    let reference_csv = std::fs::read(reference_out.join("chaos.csv"))?;
    report.reference_sha = crate::chaos::report::sha256(&reference_csv);
    report.reference_duplicate_fetches =
        (mock.stats().ok - ok_before).saturating_sub(config.pages as u64);

    // 2. The same export under chaos, with poison pages.
    let poison: Vec<usize> = {
        let mut pages: Vec<usize> = (1..config.pages).collect();
        pages.shuffle(&mut rng);
        pages.truncate(config.poison_pages);
        pages.sort();
        pages
    };
    mock.set_fail_records(
        poison
            .iter()
            .map(|p| p * config.page_size + 1 + rng.random_range(0..config.page_size))
            .collect(),
    );
    let chaos_out = fleet::default_tenant_dir(work_dir, "chaos-out");
    let mut fleet = ProcessFleet::start("run", config.workers, work_dir, token).await?;
    let spec = ExportSpec::from_toml(&spec_toml(config, mock, &chaos_out))?;
    mock.reset_peak();
    let before = mock.stats();
    let ok_before = before.ok;
    let started = Instant::now();
    let id = fleet.api.submit(&spec, None).await?.id;

    let mut events: Vec<Event> =
        std::iter::repeat_n(Event::KillWorker, config.worker_kills).collect();
    events.extend(std::iter::repeat_n(Event::StopWorker, config.worker_stops));
    if config.kill_scheduler {
        events.push(Event::KillScheduler);
    }
    events.extend(config.restarts.iter().map(|s| Event::Restart(*s)));
    events.shuffle(&mut rng);
    // Spread the events over most of the expected run.
    let expected = config.pages as f64 / config.rate;
    let gap = (expected * 0.6 / events.len().max(1) as f64).max(0.2);
    let mut monitors = Vec::new();
    for event in events {
        let wait = rng.random_range(gap * 0.5..gap * 1.5);
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        report.supervisor_restarts += fleet.supervise()?;
        match event {
            Event::KillWorker => {
                let i = rng.random_range(0..fleet.workers.len());
                let mut victim = fleet.workers.swap_remove(i);
                let held = in_flight_of(&fleet.env.database_url, &victim.name)
                    .await
                    .unwrap_or_default();
                victim.kill9().await;
                let since_start = started.elapsed();
                let killed_at = db_now(&fleet.env.database_url).await.ok();
                fleet.add_worker()?;
                report.worker_kills += 1;
                report
                    .timeline
                    .push((since_start, format!("kill -9 worker {}", victim.name)));
                if let (Some(at), false) = (killed_at, held.is_empty()) {
                    let url = fleet.env.database_url.clone();
                    let worker = victim.name.clone();
                    let tasks = held.len();
                    monitors.push(tokio::spawn(async move {
                        let delay = redelivery_delay(url, worker.clone(), held, at).await;
                        Redelivery {
                            worker,
                            killed_at: since_start,
                            tasks,
                            delay,
                        }
                    }));
                }
            }
            Event::StopWorker => {
                // A rolling deploy: the replacement starts, the old one is
                // asked to stop and drains.
                let i = rng.random_range(0..fleet.workers.len());
                let mut victim = fleet.workers.swap_remove(i);
                fleet.add_worker()?;
                let at = started.elapsed();
                let asked = Instant::now();
                let exited = victim.terminate(Duration::from_secs(60)).await?;
                let took = asked.elapsed();
                if exited.is_none() {
                    victim.kill9().await;
                }
                let clean = exited.is_some_and(|s| s.success());
                report.worker_stops.push((took, clean));
                report.timeline.push((
                    at,
                    format!(
                        "SIGTERM worker {} (exited {} after {:.1} s)",
                        victim.name,
                        if clean { "cleanly" } else { "badly" },
                        took.as_secs_f64()
                    ),
                ));
            }
            Event::KillScheduler => {
                fleet.scheduler.kill9().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                fleet.respawn_scheduler()?;
                report.scheduler_kills += 1;
                report
                    .timeline
                    .push((started.elapsed(), "kill -9 scheduler".into()));
            }
            Event::Restart(service) => {
                let at = started.elapsed();
                let took = services::restart(service).await?;
                report.restarts.push((service, took));
                report.timeline.push((
                    at,
                    format!(
                        "{} restart ({:.1} s down)",
                        service.name(),
                        took.as_secs_f64()
                    ),
                ));
            }
        }
    }
    report.events_done_at = started.elapsed();

    // 3. The export ends blocked on exactly the poison pages.
    let status = fleet.wait_ended(id, Duration::from_secs(900)).await?;
    if config.poison_pages > 0 {
        anyhow::ensure!(
            status.state == ExportState::Blocked,
            "chaos run ended {} instead of blocked",
            status.state
        );
    }
    let letters = fleet.api.dead_letters(Some(id), false).await?;
    report.dead_letters = letters.len();
    report.dead_letter_pages = letters.iter().map(|d| d.page_no as usize).collect();
    report.dead_letter_pages.sort();
    report.poison_pages = poison.clone();
    let broker = Broker::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        &fleet.env.namespace,
    )
    .await?;
    report.dlq_messages = broker.ready_count(QueueRole::Dead).await? as usize;
    broker.close().await;

    // 4. The operator fixes the source and replays: the export completes.
    mock.set_fail_records(Vec::new());
    if !letters.is_empty() {
        fleet.api.replay(None, Some(id)).await?;
    }
    let status = fleet.wait_finished(id, Duration::from_secs(600)).await?;
    report.elapsed = started.elapsed();
    anyhow::ensure!(
        status.state == ExportState::Completed,
        "chaos run ended {}",
        status.state
    );
    for m in monitors {
        if let Ok(redelivery) = m.await {
            report.redelivery_delays.push(redelivery);
        }
    }
    let db = connect(&fleet.env.database_url).await?;
    let row = db
        .query_one(
            "SELECT COALESCE(sum(deliveries), 0)::int8 - count(*) FROM page_tasks WHERE export_id = $1",
            &[&id],
        )
        .await?;
    report.redeliveries = row.get::<_, i64>(0).max(0) as u64;
    report.duplicate_deliveries = status.duplicate_deliveries as u64;
    let after = mock.stats();
    report.duplicate_fetches = (after.ok - ok_before).saturating_sub(config.pages as u64);
    report.source_limit_429s = after.bucket_429 - before.bucket_429;
    report.peak_requests_1s = after.peak_requests_1s;
    report.source_limit_1s = config.rate as u64 + u64::from(config.burst);
    let csv = std::fs::read(chaos_out.join("chaos.csv"))?;
    report.chaos_sha = crate::chaos::report::sha256(&csv);
    let (lost, doubled) = count_rows(&csv, config.records())?;
    report.rows_lost = lost;
    report.duplicate_rows = doubled;
    fleet.stop().await;
    Ok(())
}

/// Rows missing from and rows doubled in a CSV of ids `1..=records`.
fn count_rows(csv: &[u8], records: usize) -> anyhow::Result<(usize, usize)> {
    let mut reader = csv::Reader::from_reader(csv);
    let id_col = reader
        .headers()?
        .iter()
        .position(|h| h == "id")
        .ok_or_else(|| anyhow::anyhow!("no id column"))?;
    let mut seen = HashSet::new();
    let mut rows = 0usize;
    for row in reader.records() {
        let row = row?;
        rows += 1;
        if let Some(id) = row.get(id_col).and_then(|v| v.parse::<usize>().ok()) {
            if (1..=records).contains(&id) {
                seen.insert(id);
            }
        }
    }
    Ok((records - seen.len(), rows - seen.len()))
}

async fn in_flight_of(url: &str, worker: &str) -> anyhow::Result<Vec<Uuid>> {
    let db = connect(url).await?;
    Ok(db
        .query(
            "SELECT id FROM page_tasks WHERE state = 'in_flight' AND claimed_by LIKE $1 || '/%'",
            &[&worker],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

async fn db_now(url: &str) -> anyhow::Result<time::OffsetDateTime> {
    Ok(connect(url)
        .await?
        .query_one("SELECT now()", &[])
        .await?
        .get(0))
}

/// How long after the kill the last of the dead worker's tasks was claimed
/// by another worker (tasks it had landed just before dying don't count).
async fn redelivery_delay(
    url: String,
    dead: String,
    tasks: Vec<Uuid>,
    killed_at: time::OffsetDateTime,
) -> Duration {
    let limit = Duration::from_secs(180);
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut pending: HashSet<Uuid> = tasks.into_iter().collect();
    while !pending.is_empty() && started.elapsed() < limit {
        if let Ok(db) = connect(&url).await {
            let ids: Vec<Uuid> = pending.iter().copied().collect();
            if let Ok(rows) = db
                .query(
                    "SELECT id, state, claimed_by, claimed_at FROM page_tasks WHERE id = ANY($1)",
                    &[&ids],
                )
                .await
            {
                for r in rows {
                    let id: Uuid = r.get(0);
                    let state: String = r.get(1);
                    let by: Option<String> = r.get(2);
                    let at: Option<time::OffsetDateTime> = r.get(3);
                    let by_dead = by
                        .as_deref()
                        .is_some_and(|b| b.starts_with(&format!("{dead}/")));
                    if !by_dead {
                        if let Some(at) = at {
                            let d = (at - killed_at).max(time::Duration::ZERO);
                            worst = worst.max(Duration::from_secs_f64(d.as_seconds_f64()));
                        }
                        pending.remove(&id);
                    } else if state == "done" || state == "dead" {
                        pending.remove(&id);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if pending.is_empty() {
        worst
    } else {
        limit
    }
}
