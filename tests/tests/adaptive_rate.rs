//! A spec without a rate against a source that states its limit only by
//! refusing (429 with `Retry-After`, no rate-limit headers): the fleet
//! starts low, finds the limit, completes the export, and says in the
//! export's status what it learned.
//!
//! Real processes against the real Postgres, RabbitMQ and Redis.

mod common;

use std::time::Duration;

use uuid::Uuid;

use common::{assert_csv_matches_source, build_fleet_binaries};
use pagefleet_shared::model::ExportState;
use pagefleet_shared::spec::ExportSpec;
use pagefleet_tests::chaos::fleet::{default_tenant_dir, offset_spec, ProcessFleet};
use pagefleet_tests::mock::{MockConfig, MockServer};

const SEED: u64 = 31;
const PAGES: usize = 80;
const PAGE_SIZE: usize = 10;
/// What the source really allows; nobody says so.
const LIMIT: f64 = 20.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_rate_the_fleet_finds_the_limit_and_says_what_it_learned() {
    build_fleet_binaries();
    let token = format!("adaptive-{}", Uuid::now_v7().simple());
    let mut config = MockConfig::new(SEED, PAGES * PAGE_SIZE);
    config.token = token.clone();
    config.max_page_size = PAGE_SIZE;
    config.rate = LIMIT;
    config.burst = 5;
    config.silent_limit = true;
    let source = MockServer::start(config).await.unwrap();
    let dir = std::env::temp_dir().join(format!("pagefleet-adaptive-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut fleet = ProcessFleet::start("adaptive", 2, &dir, &token)
        .await
        .unwrap();
    let toml = offset_spec(
        "unstated",
        PAGE_SIZE,
        1.0,
        1,
        &source.base_url(),
        &default_tenant_dir(&dir, "out"),
        "max_attempts = 20\nmax_elapsed_ms = 600000\nbase_ms = 200\ncap_ms = 5000",
    )
    .replace("[rate_limit]\nrate = 1\nburst = 1\n", "");
    assert!(!toml.contains("rate_limit"), "{toml}");
    let spec = ExportSpec::from_toml(&toml).unwrap();
    assert_eq!(spec.rate_limit.rate, None);
    let id = fleet.api.submit(&spec, None).await.unwrap().id;
    let status = fleet
        .wait_ended(id, Duration::from_secs(240))
        .await
        .unwrap();
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    assert_csv_matches_source(
        &default_tenant_dir(&dir, "out").join("unstated.csv"),
        SEED,
        PAGES * PAGE_SIZE,
    );
    let progress = &status.progress;
    assert!(progress.rate_learned, "{progress:?}");
    assert_eq!(progress.stated_rate, None);
    let learned = progress.source_rate.unwrap();
    // It started at 1/s: it grew, and no further than the source let it.
    assert!(
        learned > 2.0 && learned < LIMIT * 1.5,
        "learned {learned}/s against a limit of {LIMIT}/s"
    );
    // The source never saw the fleet's backlog: refusals stay a small
    // share of what was sent.
    let stats = source.stats();
    assert!(
        stats.status_429 * 10 < stats.requests,
        "{} of {} requests refused",
        stats.status_429,
        stats.requests
    );
    fleet.stop().await;
    source.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
