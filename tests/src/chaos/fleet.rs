//! The fleet as real processes: a scheduler and workers started from the
//! built binaries, killed with SIGKILL and started again.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

/// The directory holding the built binaries (`cargo build --bins` first);
/// `PAGEFLEET_BIN_DIR` points elsewhere (`make bench` uses a release build).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PAGEFLEET_BIN_DIR") {
        return PathBuf::from(dir);
    }
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("debug")
}

/// What every process of one fleet shares.
#[derive(Debug, Clone)]
pub struct FleetEnv {
    pub database_url: String,
    pub namespace: String,
    pub token_var: String,
    pub token: String,
    pub logs: PathBuf,
    /// Extra arguments for every worker.
    pub worker_args: Vec<String>,
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

    /// Peak resident memory so far, from /proc (Linux), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
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
        .spawn()?;
    Ok(Process {
        name: name.to_string(),
        child,
    })
}

pub fn spawn_scheduler(env: &FleetEnv, listen: &str) -> anyhow::Result<Process> {
    let child = command(env, "pagefleet-scheduler", "scheduler")?
        .args(["--listen", listen])
        .spawn()?;
    Ok(Process {
        name: "scheduler".into(),
        child,
    })
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
auth = {{ type = "bearer", secret = {{ env = "PAGEFLEET_CHAOS_TOKEN" }} }}
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
