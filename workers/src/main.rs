//! `pagefleet-worker`: consumes page and finalize tasks until SIGTERM or
//! Ctrl-C, then drains.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use pagefleet_shared::config::ServiceConfig;
use pagefleet_shared::{shutdown, telemetry};
use pagefleet_workers::{run, WorkerOptions};

#[derive(Parser, Debug)]
#[command(
    name = "pagefleet-worker",
    version,
    about = "pagefleet worker: fetches pages and writes CSV files"
)]
struct Args {
    /// Page tasks in flight at once.
    #[arg(long, env = "PAGEFLEET_WORKER_CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    /// Address for /metrics and /healthz (none when absent).
    #[arg(long, env = "PAGEFLEET_WORKER_METRICS")]
    metrics: Option<SocketAddr>,
    /// Name recorded on the tasks this worker claims (default: host-pid).
    #[arg(long, env = "PAGEFLEET_WORKER_NAME")]
    name: Option<String>,
    /// Benchmark baseline only: no shared token bucket or breaker; each
    /// task only waits out its own 429s.
    #[arg(long, hide = true)]
    no_shared_limiter: bool,
    /// Benchmark baseline only: every chain page goes through the queue,
    /// instead of the worker that landed the page before it fetching it.
    #[arg(long, hide = true)]
    no_follow_chains: bool,
    /// Seconds to finish tasks in flight after SIGTERM.
    #[arg(long, default_value_t = 30)]
    drain_secs: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init_tracing();
    let args = Args::parse();
    let config = match ServiceConfig::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pagefleet-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = shutdown::on_signal();
    if let Some(addr) = args.metrics {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tokio::spawn(async move {
                    if let Err(e) = telemetry::serve_metrics(listener).await {
                        tracing::error!(error = %e, %addr, "metrics server stopped; /metrics and /healthz are gone");
                    }
                });
            }
            Err(e) => {
                eprintln!("pagefleet-worker: cannot listen on {addr}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let defaults = WorkerOptions::default();
    let options = WorkerOptions {
        concurrency: args.concurrency.max(1),
        drain_timeout: Duration::from_secs(args.drain_secs),
        name: args.name.unwrap_or(defaults.name),
        shared_limiter: !args.no_shared_limiter,
        follow_chains: !args.no_follow_chains,
        ..defaults
    };
    match run(&config, options, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "worker stopped");
            eprintln!("pagefleet-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
