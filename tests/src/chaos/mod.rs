//! Chaos: an export runs while its workers are killed with SIGKILL, its
//! scheduler dies, and RabbitMQ, Postgres and Redis restart under it. The
//! CSV must come out byte-identical to a fault-free run of the same spec
//! and seed, with no row lost or doubled, and the dead-letter queue must
//! hold exactly the poison pages. `make chaos` runs the full scenario; a
//! small one runs in `make test`.
//!
//! Chaos restarts the machine's shared services: run it alone.

pub(crate) mod fleet;
mod report;
pub mod services;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use uuid::Uuid;

use pagefleet_scheduler::client::ApiClient;
use pagefleet_shared::model::{ExportState, QueueRole};
use pagefleet_shared::queue::Broker;
use pagefleet_shared::ratelimit::RateLimiter;
use pagefleet_shared::spec::ExportSpec;
use pagefleet_shared::store::ExportStatus;

use crate::mock::{Faults, MockConfig, MockServer};
pub use fleet::bin_dir;
use fleet::{free_port, spawn_scheduler, spawn_worker, FleetEnv, Process};
pub use report::ChaosReport;
use services::Service;

const ADMIN_DB: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub seed: u64,
    pub pages: usize,
    pub page_size: usize,
    pub workers: usize,
    pub worker_kills: usize,
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
    KillScheduler,
    Restart(Service),
}

/// One fleet of processes with its own database and namespace.
pub(crate) struct ProcessFleet {
    pub(crate) env: FleetEnv,
    db_name: String,
    listen: String,
    pub(crate) api: ApiClient,
    scheduler: Process,
    pub(crate) workers: Vec<Process>,
    spawned: usize,
}

impl ProcessFleet {
    pub(crate) async fn start(
        label: &str,
        workers: usize,
        work_dir: &Path,
        token: &str,
    ) -> anyhow::Result<Self> {
        Self::start_with(label, workers, work_dir, token, Vec::new()).await
    }

    pub(crate) async fn start_with(
        label: &str,
        workers: usize,
        work_dir: &Path,
        token: &str,
        worker_args: Vec<String>,
    ) -> anyhow::Result<Self> {
        let suffix = Uuid::now_v7().simple().to_string();
        let namespace = format!("chaos-{label}-{}", &suffix[suffix.len() - 8..]);
        let db_name = namespace.replace('-', "_");
        admin(&format!("CREATE DATABASE {db_name}")).await?;
        let logs = work_dir.join(label);
        fleet::ensure_dir(&logs)?;
        let env = FleetEnv {
            database_url: format!("postgres://postgres@127.0.0.1:5432/{db_name}"),
            namespace,
            token_var: "PAGEFLEET_CHAOS_TOKEN".into(),
            token: token.into(),
            logs,
            worker_args,
        };
        let listen = format!("127.0.0.1:{}", free_port()?);
        let scheduler = spawn_scheduler(&env, &listen)?;
        let api = ApiClient::new(&format!("http://{listen}"), None)?;
        let mut fleet = ProcessFleet {
            env,
            db_name,
            listen,
            api,
            scheduler,
            workers: Vec::new(),
            spawned: 0,
        };
        fleet.wait_for_api(Duration::from_secs(60)).await?;
        for _ in 0..workers {
            fleet.add_worker()?;
        }
        Ok(fleet)
    }

    fn add_worker(&mut self) -> anyhow::Result<()> {
        self.spawned += 1;
        let name = format!("{}-w{}", self.env.namespace, self.spawned);
        self.workers.push(spawn_worker(&self.env, &name)?);
        Ok(())
    }

    async fn wait_for_api(&self, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http
                .get(format!("http://{}/healthz", self.listen))
                .send()
                .await
            {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if started.elapsed() > limit {
                anyhow::bail!("scheduler API not healthy within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Restarts any process that exited by itself, as a supervisor would.
    fn supervise(&mut self) -> anyhow::Result<usize> {
        let mut restarted = 0;
        if self.scheduler.exited() {
            self.scheduler = spawn_scheduler(&self.env, &self.listen)?;
            restarted += 1;
        }
        let before = self.workers.len();
        self.workers.retain_mut(|w| !w.exited());
        for _ in self.workers.len()..before {
            self.add_worker()?;
            restarted += 1;
        }
        Ok(restarted)
    }

    /// Waits until the export is settled (see `ExportStatus::is_settled`)
    /// in one of `states`.
    pub(crate) async fn wait_state(
        &mut self,
        id: Uuid,
        states: &[ExportState],
        limit: Duration,
    ) -> anyhow::Result<ExportStatus> {
        let started = Instant::now();
        loop {
            self.supervise()?;
            if let Ok(status) = self.api.status(id).await {
                if status.is_settled() && states.contains(&status.state) {
                    return Ok(status);
                }
                if started.elapsed() > limit {
                    anyhow::bail!("export {id} still {} after {limit:?}", status.state);
                }
            } else if started.elapsed() > limit {
                anyhow::bail!("export {id}: API unreachable after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub(crate) async fn stop(mut self) {
        for w in &mut self.workers {
            w.kill9().await;
        }
        self.scheduler.kill9().await;
        if let Ok(broker) =
            Broker::connect("amqp://guest:guest@127.0.0.1:5672/%2f", &self.env.namespace).await
        {
            let _ = broker.delete_queues().await;
            broker.close().await;
        }
        if let Ok(limiter) = RateLimiter::new("redis://127.0.0.1:6379", &self.env.namespace) {
            let _ = limiter.clear().await;
        }
        let _ = admin(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.db_name
        ))
        .await;
    }
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn admin(sql: &str) -> anyhow::Result<()> {
    connect(ADMIN_DB).await?.batch_execute(sql).await?;
    Ok(())
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
    let reference_out = work_dir.join("reference-out");
    let reference = ProcessFleet::start("ref", 2, work_dir, token).await?;
    let spec = ExportSpec::from_toml(&spec_toml(config, mock, &reference_out))?;
    let ok_before = mock.stats().ok;
    let id = reference.api.submit(&spec, None).await?.id;
    let mut reference = reference;
    let status = reference
        .wait_state(
            id,
            &[
                ExportState::Completed,
                ExportState::Failed,
                ExportState::Blocked,
            ],
            Duration::from_secs(900),
        )
        .await?;
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
    let chaos_out = work_dir.join("chaos-out");
    let mut fleet = ProcessFleet::start("run", config.workers, work_dir, token).await?;
    let spec = ExportSpec::from_toml(&spec_toml(config, mock, &chaos_out))?;
    let ok_before = mock.stats().ok;
    let started = Instant::now();
    let id = fleet.api.submit(&spec, None).await?.id;

    let mut events: Vec<Event> =
        std::iter::repeat_n(Event::KillWorker, config.worker_kills).collect();
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
                let killed_at = db_now(&fleet.env.database_url).await.ok();
                fleet.add_worker()?;
                report.worker_kills += 1;
                if let (Some(at), false) = (killed_at, held.is_empty()) {
                    let url = fleet.env.database_url.clone();
                    monitors.push(tokio::spawn(redelivery_delay(
                        url,
                        victim.name.clone(),
                        held,
                        at,
                    )));
                }
            }
            Event::KillScheduler => {
                fleet.scheduler.kill9().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                fleet.scheduler = spawn_scheduler(&fleet.env, &fleet.listen)?;
                report.scheduler_kills += 1;
            }
            Event::Restart(service) => {
                let took = services::restart(service).await?;
                report.restarts.push((service, took));
            }
        }
    }
    report.events_done_at = started.elapsed();

    // 3. The export ends blocked on exactly the poison pages.
    let end_states = [
        ExportState::Blocked,
        ExportState::Completed,
        ExportState::Failed,
    ];
    let status = fleet
        .wait_state(id, &end_states, Duration::from_secs(900))
        .await?;
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
    let status = fleet
        .wait_state(
            id,
            &[ExportState::Completed, ExportState::Failed],
            Duration::from_secs(600),
        )
        .await?;
    report.elapsed = started.elapsed();
    anyhow::ensure!(
        status.state == ExportState::Completed,
        "chaos run ended {}",
        status.state
    );
    for m in monitors {
        if let Ok(delay) = m.await {
            report.redelivery_delays.push(delay);
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
    report.duplicate_fetches = (mock.stats().ok - ok_before).saturating_sub(config.pages as u64);
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
