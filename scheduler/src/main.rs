//! `pagefleet-scheduler`: the control plane daemon.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

use pagefleet_scheduler::auth::AuthConfig;
use pagefleet_scheduler::{run, SchedulerOptions};
use pagefleet_shared::api_token::ApiToken;
use pagefleet_shared::config::ServiceConfig;
use pagefleet_shared::{shutdown, telemetry};

#[derive(Parser, Debug)]
#[command(
    name = "pagefleet-scheduler",
    version,
    about = "pagefleet control plane: HTTP API, planner, outbox relay"
)]
struct Args {
    /// Address of the HTTP API (and /healthz).
    #[arg(long, env = "PAGEFLEET_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of /metrics and /healthz for the monitoring system, apart
    /// from the API (none when absent).
    #[arg(long, env = "PAGEFLEET_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Trust X-Pagefleet-Tenant on requests without a token. Only behind an
    /// authenticating proxy that sets it: anyone reaching this port could
    /// otherwise act for any tenant.
    #[arg(long, env = "PAGEFLEET_TRUST_TENANT_HEADER")]
    trust_tenant_header: bool,
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
    let admin_token = match bootstrap_admin_token() {
        Ok(token) => token,
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
            metrics_listen: args.metrics_listen,
            auth: AuthConfig {
                admin_token,
                trust_tenant_header: args.trust_tenant_header,
            },
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

/// Shortest bootstrap admin token accepted: a guessable one would open
/// every tenant's exports.
const MIN_ADMIN_TOKEN: usize = 32;

/// The bootstrap admin token, from `PAGEFLEET_ADMIN_TOKEN` only: a command
/// line argument would show in the process list.
fn bootstrap_admin_token() -> Result<Option<ApiToken>, String> {
    let Some(token) = std::env::var("PAGEFLEET_ADMIN_TOKEN")
        .ok()
        .as_deref()
        .and_then(ApiToken::presented)
    else {
        return Ok(None);
    };
    if token.reveal().len() < MIN_ADMIN_TOKEN {
        return Err(format!(
            "PAGEFLEET_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN} characters (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(Some(token))
}
