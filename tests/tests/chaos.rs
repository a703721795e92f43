//! The small chaos scenario, so CI guards crash safety: worker processes
//! killed with SIGKILL and a RabbitMQ restart during a few-hundred-page
//! export; the CSV must be byte-identical to a fault-free run.
//!
//! It restarts the shared RabbitMQ, so it lives in its own test binary
//! (cargo runs test binaries one after another) with a single test.

mod common;

use pagefleet_tests::chaos::{run, ChaosConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_and_a_broker_restart_leave_the_csv_unchanged() {
    common::build_fleet_binaries();
    let report = run(&ChaosConfig::small(20261125)).await.expect("chaos run");
    println!("{}", report.table());
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.worker_kills, 3);
    assert_eq!(report.restarts.len(), 1);
}
