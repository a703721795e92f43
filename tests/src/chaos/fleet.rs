//! The fleet as real processes: a scheduler and workers started from the
//! built binaries, killed with SIGKILL and started again.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use uuid::Uuid;

use pagefleet_scheduler::client::ApiClient;
use pagefleet_shared::api_token::ApiToken;
use pagefleet_shared::model::ExportState;
use pagefleet_shared::queue::Broker;
use pagefleet_shared::ratelimit::RateLimiter;
use pagefleet_shared::store::ExportStatus;

const ADMIN_DB: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The directory holding the built binaries: the one this program was
/// built into (cargo puts a workspace's binaries side by side, wherever
/// `CARGO_TARGET_DIR` and the profile say; a test runs from `deps/` below
/// it). `PAGEFLEET_BIN_DIR` points elsewhere.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PAGEFLEET_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let own_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    match own_dir {
        Some(dir) if dir.ends_with("deps") => dir.parent().map(Path::to_path_buf).unwrap_or(dir),
        Some(dir) => dir,
        // No /proc to read our own path from: cargo's default layout.
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug"),
    }
}

/// What every process of one fleet shares.
#[derive(Debug, Clone)]
pub struct FleetEnv {
    pub database_url: String,
    pub namespace: String,
    pub token_var: String,
    pub token: String,
    /// The scheduler's bootstrap admin token; the harness's API client
    /// uses it.
    pub admin_token: ApiToken,
    /// The fleet's output root (the work directory): the default tenant
    /// writes under `<root>/default/`.
    pub output_root: PathBuf,
    pub logs: PathBuf,
    /// Extra arguments for every worker.
    pub worker_args: Vec<String>,
    /// Extra environment for every worker (the fleet's ceilings, say).
    pub worker_env: Vec<(String, String)>,
}

pub struct Process {
    pub name: String,
    child: Child,
}

impl Process {
    /// SIGKILL: no drain, no goodbye.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// The process id, until it has been waited for.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Peak resident memory so far, from /proc (Linux), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    /// Its resident memory now, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    /// SIGTERM, as a supervisor asks a process to stop; then waits up to
    /// `limit` for it to exit. `None` when it was still running then.
    pub async fn terminate(&mut self, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("{} has already exited", self.name))?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        Ok(tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .transpose()?)
    }

    /// Whether it has exited by itself.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

fn command(env: &FleetEnv, binary: &str, log_name: &str) -> anyhow::Result<Command> {
    let path = bin_dir().join(binary);
    if !path.exists() {
        anyhow::bail!(
            "{} is not built; run `cargo build --workspace --bins`",
            path.display()
        );
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(env.logs.join(format!("{log_name}.log")))?;
    let mut cmd = Command::new(path);
    cmd.env("PAGEFLEET_DATABASE_URL", &env.database_url)
        .env("PAGEFLEET_NAMESPACE", &env.namespace)
        .env("PAGEFLEET_OUTPUT_ROOT", &env.output_root)
        // The mock source listens on loopback.
        .env("PAGEFLEET_OUTBOUND_ALLOW", "127.0.0.1")
        .env(&env.token_var, &env.token)
        .env("RUST_LOG", "info,pagefleet_workers=info")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    Ok(cmd)
}

pub fn spawn_worker(env: &FleetEnv, name: &str) -> anyhow::Result<Process> {
    let child = command(env, "pagefleet-worker", name)?
        .args(["--name", name, "--concurrency", "4", "--drain-secs", "5"])
        .args(&env.worker_args)
        .envs(env.worker_env.iter().map(|(k, v)| (k, v)))
        .spawn()?;
    Ok(Process {
        name: name.to_string(),
        child,
    })
}

pub fn spawn_scheduler(env: &FleetEnv, listen: &str) -> anyhow::Result<Process> {
    let child = command(env, "pagefleet-scheduler", "scheduler")?
        .env("PAGEFLEET_ADMIN_TOKEN", env.admin_token.reveal())
        .args(["--listen", listen])
        .spawn()?;
    Ok(Process {
        name: "scheduler".into(),
        child,
    })
}

/// The default tenant's secret variable that process fleets' specs name
/// (a spec reads only its tenant's `PAGEFLEET_SECRET_<tenant>__*`).
pub const CHAOS_SECRET: &str = "PAGEFLEET_SECRET_default__CHAOS_TOKEN";

/// Where a process fleet started in `work_dir` writes the default tenant's
/// directory `name`: under `<work_dir>/default/`.
pub fn default_tenant_dir(work_dir: &Path, name: &str) -> PathBuf {
    work_dir
        .join(pagefleet_shared::model::DEFAULT_TENANT)
        .join(name)
}

/// One fleet of processes with its own database and namespace.
pub struct ProcessFleet {
    pub env: FleetEnv,
    db_name: String,
    listen: String,
    pub api: ApiClient,
    pub scheduler: Process,
    pub workers: Vec<Process>,
    spawned: usize,
}

impl ProcessFleet {
    pub async fn start(
        label: &str,
        workers: usize,
        work_dir: &Path,
        token: &str,
    ) -> anyhow::Result<Self> {
        Self::start_with(label, workers, work_dir, token, Vec::new()).await
    }

    pub async fn start_with(
        label: &str,
        workers: usize,
        work_dir: &Path,
        token: &str,
        worker_args: Vec<String>,
    ) -> anyhow::Result<Self> {
        Self::start_with_env(label, workers, work_dir, token, worker_args, Vec::new()).await
    }

    /// [`start_with`](Self::start_with), every worker also given `worker_env`.
    pub async fn start_with_env(
        label: &str,
        workers: usize,
        work_dir: &Path,
        token: &str,
        worker_args: Vec<String>,
        worker_env: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        let suffix = Uuid::now_v7().simple().to_string();
        let namespace = format!("chaos-{label}-{}", &suffix[suffix.len() - 8..]);
        let db_name = namespace.replace('-', "_");
        admin(&format!("CREATE DATABASE {db_name}")).await?;
        let logs = work_dir.join(label);
        ensure_dir(&logs)?;
        let env = FleetEnv {
            database_url: format!("postgres://postgres@127.0.0.1:5432/{db_name}"),
            namespace,
            token_var: CHAOS_SECRET.into(),
            token: token.into(),
            admin_token: ApiToken::generate(),
            output_root: work_dir.to_path_buf(),
            logs,
            worker_args,
            worker_env,
        };
        let listen = format!("127.0.0.1:{}", free_port()?);
        let scheduler = spawn_scheduler(&env, &listen)?;
        let api = ApiClient::new(&format!("http://{listen}"), Some(env.admin_token.clone()))?;
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

    pub fn add_worker(&mut self) -> anyhow::Result<()> {
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

    /// Starts a new scheduler in place of one that was stopped or killed.
    pub fn respawn_scheduler(&mut self) -> anyhow::Result<()> {
        self.scheduler = spawn_scheduler(&self.env, &self.listen)?;
        Ok(())
    }

    /// Restarts any process that exited by itself, as a supervisor would.
    pub fn supervise(&mut self) -> anyhow::Result<usize> {
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

    /// Waits until the export completes or fails.
    pub async fn wait_finished(
        &mut self,
        id: Uuid,
        limit: Duration,
    ) -> anyhow::Result<ExportStatus> {
        self.wait_state(id, &[ExportState::Completed, ExportState::Failed], limit)
            .await
    }

    /// Waits until the export completes, fails, or is blocked on dead pages.
    pub async fn wait_ended(&mut self, id: Uuid, limit: Duration) -> anyhow::Result<ExportStatus> {
        self.wait_state(
            id,
            &[
                ExportState::Completed,
                ExportState::Failed,
                ExportState::Blocked,
            ],
            limit,
        )
        .await
    }

    /// Waits until the export is settled (see `ExportStatus::is_settled`)
    /// in one of `states`.
    pub async fn wait_state(
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

    pub async fn stop(mut self) {
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

/// `TEST_LOG=1`: a test that fails prints the logs of the processes its
/// fleet started (they are written to files under the fleet's work
/// directory either way).
pub fn test_log_enabled() -> bool {
    std::env::var("TEST_LOG").is_ok_and(|v| !v.is_empty() && v != "0")
}

impl Drop for ProcessFleet {
    fn drop(&mut self) {
        if !(std::thread::panicking() && test_log_enabled()) {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.env.logs) else {
            return;
        };
        let mut logs: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            eprintln!("===== {} =====\n{text}", log.display());
        }
    }
}

pub(crate) async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn admin(sql: &str) -> anyhow::Result<()> {
    connect(ADMIN_DB).await?.batch_execute(sql).await?;
    Ok(())
}

/// A free loopback port for the scheduler's API.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn ensure_dir(path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path)?;
    Ok(())
}

/// The spec both `make chaos` and `make bench` export: offset pagination
/// with a total (every page fanned out at once) against the mock source,
/// authenticated from the fleet's token variable.
pub fn offset_spec(
    name: &str,
    page_size: usize,
    rate: f64,
    burst: u32,
    base_url: &str,
    out: &Path,
    retry: &str,
) -> String {
    format!(
        r#"name = "{name}"
primary_key = ["id"]
page_size = {page_size}

[source]
base_url = "{base_url}"
path = "/offset/items"
records_path = "data"
auth = {{ type = "bearer", secret = {{ env = "{CHAOS_SECRET}" }} }}
timeout_ms = 1500

[pagination]
style = "offset"
total_path = "total"

[rate_limit]
rate = {rate}
burst = {burst}

[retry]
{retry}

[output]
dir = "{out}"
"#,
        out = out.display()
    )
}
