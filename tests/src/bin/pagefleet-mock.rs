//! `pagefleet-mock`: the mock source API as a standalone server, for
//! `make demo` and for poking at by hand. Prints one ready line, serves until
//! Ctrl-C or SIGTERM, then prints its final stats as JSON. Flags (or their
//! `MOCK_*` variables) turn on its lies and drift; `GET /_mock/truth` then
//! tells what the data set really held.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use clap::builder::BoolishValueParser;
use clap::{Parser, ValueEnum};
use pagefleet_tests::mock::{Drift, Faults, MockConfig, MockServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FaultPreset {
    None,
    Standard,
}

#[derive(Debug, Parser)]
#[command(
    name = "pagefleet-mock",
    about = "Mock paginated, rate-limited source API with seeded faults"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MOCK_LISTEN", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Seed for the records and the fault draws.
    #[arg(long, env = "MOCK_SEED", default_value_t = 42)]
    seed: u64,
    /// Number of records served (ids 1..=records).
    #[arg(long, env = "MOCK_RECORDS", default_value_t = 10_000)]
    records: usize,
    /// Bearer token the server accepts.
    #[arg(
        long,
        env = "MOCK_TOKEN",
        default_value = "test-token",
        hide_env_values = true
    )]
    token: String,
    /// Token bucket refill rate, requests per second.
    #[arg(long, env = "MOCK_RATE", default_value_t = 1000.0)]
    rate: f64,
    /// Token bucket capacity.
    #[arg(long, env = "MOCK_BURST", default_value_t = 100)]
    burst: u32,
    /// State the limit only by refusing: no rate-limit headers, 429s with
    /// `Retry-After` alone (as an nginx `limit_req` in front of an API).
    #[arg(long, env = "MOCK_SILENT_LIMIT")]
    silent_limit: bool,
    /// Fault preset.
    #[arg(long, env = "MOCK_FAULTS", value_enum, default_value_t = FaultPreset::None)]
    faults: FaultPreset,
    /// Override how long a hanging request waits, in milliseconds.
    #[arg(long, env = "MOCK_HANG_MS")]
    hang_ms: Option<u64>,
    /// Override how long a slow body takes, in milliseconds.
    #[arg(long, env = "MOCK_SLOW_MS")]
    slow_ms: Option<u64>,
    /// Answer 404 for every page that contains this record id.
    #[arg(long, env = "MOCK_FAIL_RECORD")]
    fail_record: Option<usize>,
    /// Largest page size served; larger requests are clamped.
    #[arg(long, env = "MOCK_MAX_PAGE_SIZE", default_value_t = 1000)]
    max_page_size: usize,
    /// Also state totals in headers (X-Total-Count, Content-Range) in every
    /// style.
    #[arg(long, env = "MOCK_HEADER_TOTALS", value_parser = BoolishValueParser::new())]
    header_totals: bool,
    /// State this total everywhere instead of the real one (a lie).
    #[arg(long, env = "MOCK_STATED_TOTAL")]
    stated_total: Option<usize>,
    /// The cursor styles' fourth page points back at the second, forever
    /// (three cursors in a cycle).
    #[arg(long, env = "MOCK_CURSOR_CYCLE", value_parser = BoolishValueParser::new())]
    cursor_cycle: bool,
    /// Drift: records inserted per second, from the first page served on.
    #[arg(long, env = "MOCK_DRIFT_INSERTS_PER_SEC", default_value_t = 0.0, value_parser = rate)]
    drift_inserts_per_sec: f64,
    /// Drift: records updated per second (their `rev` goes up).
    #[arg(long, env = "MOCK_DRIFT_UPDATES_PER_SEC", default_value_t = 0.0, value_parser = rate)]
    drift_updates_per_sec: f64,
    /// Drift: records deleted per second (0.2 is one every five seconds).
    #[arg(long, env = "MOCK_DRIFT_DELETES_PER_SEC", default_value_t = 0.0, value_parser = rate)]
    drift_deletes_per_sec: f64,
}

/// A drift rate: a finite number of mutations per second, at least 0.
fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "{text:?} is not a rate (a number of mutations per second, at least 0)"
        )),
    }
}

impl Args {
    fn config(&self) -> MockConfig {
        let mut faults = match self.faults {
            FaultPreset::None => Faults::none(),
            FaultPreset::Standard => Faults::standard(),
        };
        if let Some(ms) = self.hang_ms {
            faults.hang_ms = ms;
        }
        if let Some(ms) = self.slow_ms {
            faults.slow_ms = ms;
        }
        MockConfig {
            token: self.token.clone(),
            rate: self.rate,
            burst: self.burst,
            silent_limit: self.silent_limit,
            faults,
            fail_record: self.fail_record,
            max_page_size: self.max_page_size,
            header_totals: self.header_totals,
            stated_total: self.stated_total,
            cursor_cycle: self.cursor_cycle,
            drift: self.drift(),
            ..MockConfig::new(self.seed, self.records)
        }
    }

    /// Drift only when some rate is above 0, so that the records keep their
    /// fixed shape (no `rev`) otherwise.
    fn drift(&self) -> Option<Drift> {
        let drift = Drift {
            inserts_per_sec: self.drift_inserts_per_sec,
            updates_per_sec: self.drift_updates_per_sec,
            deletes_per_sec: self.drift_deletes_per_sec,
        };
        (drift != Drift::default()).then_some(drift)
    }
}

/// The 2025 history behind `/changes`: records per month (five times as
/// many in March), and the deepest offset the log serves.
const BACKFILL_PER_MONTH: u64 = pagefleet_tests::mock::BACKFILL_PER_MONTH;
const BACKFILL_MAX_OFFSET: usize = pagefleet_tests::mock::BACKFILL_MAX_OFFSET;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = MockServer::start_on(args.config(), args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // `/changes` starts with a day of history (examples/incremental.toml)
    // and a year of 2025 behind an offset cap (examples/backfill.toml).
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let changes = server.changes();
    changes.seed_history(args.records as u64, now);
    changes.seed_2025(args.records as u64 + 1, BACKFILL_PER_MONTH);
    changes.set_max_offset(Some(BACKFILL_MAX_OFFSET));
    {
        // Scripts wait for this exact line, so it must not sit in a buffer.
        let mut out = std::io::stdout().lock();
        writeln!(out, "pagefleet-mock listening on {}", server.base_url())?;
        out.flush()?;
    }
    wait_for_stop().await.context("cannot listen for signals")?;
    let stats = server.finish().await;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(&stats)?)?;
    out.flush()?;
    Ok(())
}

/// Resolves on Ctrl-C, or on SIGTERM where there is such a thing.
async fn wait_for_stop() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            res = tokio::signal::ctrl_c() => res,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
