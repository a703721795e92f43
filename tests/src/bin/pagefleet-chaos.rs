//! `make chaos`: runs the chaos scenario for one or more seeds and prints
//! a report per seed. Exits non-zero unless every run passes.

use std::process::ExitCode;

use clap::Parser;

use pagefleet_tests::chaos::{run, ChaosConfig};

#[derive(Parser, Debug)]
#[command(
    name = "pagefleet-chaos",
    about = "Kill and restart the fleet under a running export; the CSV must not change"
)]
struct Args {
    /// Seeds to run, one scenario each.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1u64])]
    seeds: Vec<u64>,
    /// The small scenario of `make test` instead of the full one.
    #[arg(long)]
    small: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut failed = false;
    for seed in args.seeds {
        let config = if args.small {
            ChaosConfig::small(seed)
        } else {
            ChaosConfig::full(seed)
        };
        println!(
            "chaos: seed {seed}: {} pages, {} workers, {} worker kills, {} worker SIGTERMs, restarts {:?}",
            config.pages, config.workers, config.worker_kills, config.worker_stops, config.restarts
        );
        match run(&config).await {
            Ok(report) => {
                println!("{}", report.table());
                failed |= !report.passed();
            }
            Err(e) => {
                println!("chaos: seed {seed} did not finish: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
