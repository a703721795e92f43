//! `pagefleet-scheduler`: the control plane daemon.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

use pagefleet_scheduler::{run, SchedulerOptions};
use pagefleet_shared::config::ServiceConfig;
use pagefleet_shared::{shutdown, telemetry};

#[derive(Parser, Debug)]
#[command(
    name = "pagefleet-scheduler",
    version,
    about = "pagefleet control plane: HTTP API, planner, outbox relay"
)]
struct Args {
    /// Address of the HTTP API (also /metrics and /healthz).
    #[arg(long, env = "PAGEFLEET_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init_tracing();
    let args = Args::parse();
    let config = match ServiceConfig::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pagefleet-scheduler: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = shutdown::on_signal();
    match run(
        &config,
        SchedulerOptions {
            listen: args.listen,
        },
        shutdown,
        None,
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "scheduler stopped");
            eprintln!("pagefleet-scheduler: {e}");
            ExitCode::FAILURE
        }
    }
}
