//! Restarting the local services the fleet depends on, and waiting for them
//! to answer again. These are the machine's shared Postgres, Redis and
//! RabbitMQ: run chaos alone (its own test binary, or `make chaos`).

use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    RabbitMq,
    Postgres,
    Redis,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::RabbitMq => "RabbitMQ",
            Service::Postgres => "Postgres",
            Service::Redis => "Redis",
        }
    }
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program).args(args).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn postgres_version() -> anyhow::Result<String> {
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    versions
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no cluster under /etc/postgresql"))
}

/// Stops the service the hard way it would die in production, starts it
/// again, and returns once it answers.
pub async fn restart(service: Service) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let task = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        match service {
            Service::RabbitMq => {
                run("rabbitmqctl", &["stop_app"])?;
                run("rabbitmqctl", &["start_app"])?;
                run("rabbitmqctl", &["await_startup"])
            }
            Service::Postgres => {
                let version = postgres_version()?;
                run(
                    "pg_ctlcluster",
                    &[
                        "--skip-systemctl-redirect",
                        &version,
                        "main",
                        "restart",
                        "-m",
                        "immediate",
                    ],
                )
            }
            Service::Redis => {
                // Redis keeps nothing on disk here: a restart loses every bucket.
                let _ = run(
                    "redis-cli",
                    &["-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"],
                );
                run(
                    "redis-server",
                    &[
                        "--daemonize",
                        "yes",
                        "--bind",
                        "127.0.0.1",
                        "-::1",
                        "--port",
                        "6379",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        "/var/lib/redis",
                        "--logfile",
                        "/var/log/redis/ci.log",
                    ],
                )
            }
        }
    });
    task.await??;
    wait_up(service, Duration::from_secs(90)).await?;
    Ok(started.elapsed())
}

pub async fn wait_up(service: Service, limit: Duration) -> anyhow::Result<()> {
    let port = match service {
        Service::RabbitMq => 5672,
        Service::Postgres => 5432,
        Service::Redis => 6379,
    };
    let started = Instant::now();
    loop {
        let up = match service {
            Service::Postgres => Command::new("pg_isready")
                .args(["-h", "127.0.0.1", "-p", "5432", "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false),
            _ => tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok(),
        };
        if up {
            return Ok(());
        }
        if started.elapsed() > limit {
            anyhow::bail!("{} did not come back within {limit:?}", service.name());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
