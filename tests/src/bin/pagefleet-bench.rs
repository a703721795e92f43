//! `make bench`: prints one table of how the fleet uses a source's rate
//! limit (see `pagefleet_tests::bench`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use pagefleet_tests::bench::throughput::ThroughputConfig;
use pagefleet_tests::bench::{run_all, BenchConfig, PARTS};

// The mock source runs in this process. A real source would not share the
// fleet's two cores; with glibc's allocator the mock's page rendering took
// a fifth of them, with mimalloc about half that, left to what is measured.
// (The fleet's own binaries keep the system allocator: mimalloc doubled a
// worker's peak RSS for one large page.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "pagefleet-bench",
    about = "Measure rate-limit use, 429s, outage behaviour and the limiter"
)]
struct Args {
    #[arg(long, env = "BENCH_PAGES", default_value_t = 2000)]
    pages: usize,
    #[arg(long, env = "BENCH_RATES", value_delimiter = ',', default_values_t = vec![50.0, 200.0])]
    rates: Vec<f64>,
    #[arg(long, env = "BENCH_WORKERS", value_delimiter = ',', default_values_t = vec![1usize, 4, 8])]
    workers: Vec<usize>,
    #[arg(long, env = "BENCH_OUTAGE_SECS", default_value_t = 60)]
    outage_secs: u64,
    /// Run only these parts (comma-separated): rate, walks, adaptive,
    /// outage, limiter. All by default.
    #[arg(long, env = "BENCH_ONLY", value_delimiter = ',')]
    only: Vec<String>,
    /// Rows of the throughput part: 1m or 10m.
    #[arg(long, env = "BENCH_SCALE", default_value = "1m")]
    scale: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = BenchConfig {
        pages: args.pages,
        rates: args.rates,
        workers: args.workers,
        outage: Duration::from_secs(args.outage_secs),
        only: args.only,
        ..BenchConfig::default()
    };
    let Some(throughput) = ThroughputConfig::at_scale(&args.scale) else {
        eprintln!(
            "pagefleet-bench: BENCH_SCALE is 1m or 10m, not {:?}",
            args.scale
        );
        return ExitCode::from(2);
    };
    let config = BenchConfig {
        throughput,
        ..config
    };
    if let Some(unknown) = config.only.iter().find(|p| !PARTS.contains(&p.as_str())) {
        eprintln!(
            "pagefleet-bench: BENCH_ONLY names {unknown:?}; the parts are {}",
            PARTS.join(", ")
        );
        return ExitCode::from(2);
    }
    match run_all(&config, |line| eprintln!("{line}")).await {
        Ok(table) => {
            println!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pagefleet-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
