//! `pagefleet-fuzz`: runs each target (or those named) for a bounded time
//! and prints a table of targets, executions and crashes, then each crash
//! with its shrunk input. Exits 1 when any target crashed.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use pagefleet_fuzz::runner::Budget;
use pagefleet_fuzz::targets::TARGETS;

#[derive(Parser)]
#[command(about = "Fuzz pagefleet's parsers for a bounded time")]
struct Args {
    /// Seconds per target.
    #[arg(long, env = "FUZZ_SECONDS", default_value_t = 20)]
    seconds: u64,
    /// Seed of the first batch; a run is repeatable with the same seed
    /// (and the same number of batches, which the time decides).
    #[arg(long, env = "FUZZ_SEED")]
    seed: Option<u64>,
    /// List the targets and exit.
    #[arg(long)]
    list: bool,
    /// Targets to run (default: all).
    targets: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for target in TARGETS {
            println!("{}", target.name);
        }
        return ExitCode::SUCCESS;
    }
    if let Some(unknown) = args
        .targets
        .iter()
        .find(|name| !TARGETS.iter().any(|t| t.name == name.as_str()))
    {
        eprintln!("pagefleet-fuzz: no target {unknown:?} (see --list)");
        return ExitCode::from(2);
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    println!("seed {seed}, {} s per target", args.seconds);
    println!("{:<20} {:>12} {:>8}", "target", "executions", "crashes");
    let mut found = Vec::new();
    for target in TARGETS {
        if !args.targets.is_empty() && !args.targets.iter().any(|n| n == target.name) {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let report = (target.run)(&Budget::Until(deadline, seed));
        println!(
            "{:<20} {:>12} {:>8}",
            target.name,
            report.executions,
            report.crashes.len()
        );
        found.extend(report.crashes.into_iter().map(|c| (target.name, c)));
    }
    for (name, crash) in &found {
        println!(
            "\n== {name}: {}\nminimal input: {}",
            crash.message, crash.input
        );
    }
    if found.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("\n{} crash(es)", found.len());
        ExitCode::FAILURE
    }
}
