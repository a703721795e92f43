//! A page too big for the fleet is refused by the fleet's ceilings
//! (`[limits]`) before it costs a worker its memory, and dead-lettered at
//! once with the ceiling it broke, while another export on the same fleet
//! completes.
//!
//! Three poison sources, one for each ceiling a body can break on the way
//! in: bytes (while it streams), JSON values (counted from the bytes before
//! anything is parsed) and records per page (before any row is built).

mod common;

use std::time::Duration;

use uuid::Uuid;

use common::{assert_csv_matches_source, spec_toml, Fleet};
use pagefleet_shared::model::{DeadLetterClass, ExportState};
use pagefleet_shared::spec::ExportSpec;
use pagefleet_tests::mock::{Flood, MockConfig, MockServer, Style};

const SEED: u64 = 31;
const RECORDS: usize = 500;
const PAGE_SIZE: usize = 100;

/// Low ceilings, so small floods break them: 256 KiB, 10,000 values and
/// 1,000 records a page. A healthy page of 100 records is far below all.
const MAX_BODY_BYTES: u64 = 256 * 1024;
const MAX_JSON_VALUES: u64 = 10_000;
const MAX_RECORDS: u64 = 1_000;

fn token_env(mock: &MockServer) -> String {
    common::secret_env("default", &mock.config().token)
}

/// A source whose second page (the one holding record 101) answers
/// `records` tiny records instead of its hundred.
async fn flooded(records: usize) -> MockServer {
    let config = MockConfig {
        flood: Some(Flood { at: 101, records }),
        ..MockConfig::new(SEED, RECORDS)
    };
    MockServer::start(config).await.unwrap()
}

async fn submit(fleet: &Fleet, name: &str, mock: &MockServer) -> Uuid {
    let token = token_env(mock);
    let toml = spec_toml(name, mock, Style::Offset, &fleet.out_dir, PAGE_SIZE, &token);
    let spec = ExportSpec::from_toml(&toml).expect("spec");
    fleet.api.submit(&spec, None).await.expect("submit").id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_over_a_ceiling_is_dead_lettered_at_once_and_the_fleet_goes_on() {
    // About 25 bytes and 3 values a tiny record (`{"id":N,"v":V}`), so:
    // 20,000 records are ~500 KB (over the bytes); 8,000 are ~200 KB but
    // 24,003 values with the page around them (over the values); 2,000 are
    // 6,003 values but 2,000 records (over the records).
    let over_bytes = flooded(20_000).await;
    let over_values = flooded(8_000).await;
    let over_records = flooded(2_000).await;
    let healthy = MockServer::start(MockConfig::new(SEED, RECORDS))
        .await
        .unwrap();
    let fleet = Fleet::start_with(2, |config, _| {
        config.limits.max_body_bytes = MAX_BODY_BYTES;
        config.limits.max_json_values = MAX_JSON_VALUES;
        config.limits.max_records_per_page = MAX_RECORDS;
    })
    .await;

    let poisoned = [
        (
            submit(&fleet, "over-bytes", &over_bytes).await,
            "(limits.max_body_bytes)",
            format!("the fleet allows {MAX_BODY_BYTES} bytes per body"),
        ),
        (
            submit(&fleet, "over-values", &over_values).await,
            "(limits.max_json_values)",
            format!("holds 24003 JSON values; the fleet allows {MAX_JSON_VALUES} values per page"),
        ),
        (
            submit(&fleet, "over-records", &over_records).await,
            "(limits.max_records_per_page)",
            format!("holds 2000 records; the fleet allows {MAX_RECORDS} per page"),
        ),
    ];
    let other = submit(&fleet, "healthy", &healthy).await;

    for (id, ceiling, measured) in &poisoned {
        let status = fleet.wait(*id, Duration::from_secs(120)).await;
        assert_eq!(status.state, ExportState::Blocked, "{ceiling}: {status:?}");
        assert_eq!(status.pages_dead, 1, "{ceiling}: {status:?}");
        let letters = fleet.api.dead_letters(Some(*id), false).await.unwrap();
        assert_eq!(letters.len(), 1, "{letters:?}");
        let letter = &letters[0];
        assert_eq!(letter.class, DeadLetterClass::OverLimit, "{letter:?}");
        assert_eq!(letter.page_no, 1);
        assert!(
            letter.reason.starts_with("page 1 of partition 0 "),
            "{}",
            letter.reason
        );
        assert!(letter.reason.contains(ceiling), "{}", letter.reason);
        assert!(
            letter.reason.contains(measured.as_str()),
            "{}",
            letter.reason
        );
        // Refused on the first answer: the same page would break it again.
        let attempts = letter.attempts.as_array().expect("attempts");
        assert_eq!(attempts.len(), 1, "{ceiling}: {attempts:?}");
    }
    // Each poison page was asked for once, beside the export's other pages.
    for mock in [&over_bytes, &over_values, &over_records] {
        let pages = (RECORDS / PAGE_SIZE) as u64 + 1;
        assert_eq!(mock.stats().requests, pages, "{:?}", mock.stats());
    }

    let done = fleet.wait(other, Duration::from_secs(120)).await;
    assert_eq!(done.state, ExportState::Completed, "{done:?}");
    assert_csv_matches_source(&fleet.out_dir.join("healthy.csv"), SEED, RECORDS);

    fleet.stop().await;
    for mock in [over_bytes, over_values, over_records, healthy] {
        mock.shutdown().await;
    }
}
