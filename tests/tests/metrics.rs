//! `/metrics` counts what happened. This test binary runs one export and
//! nothing else, so the process-wide registry holds exactly its counts:
//! each counter must equal what the export's own status and the mock
//! source saw, not merely exist.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{spec_toml, Fleet};
use pagefleet_shared::model::ExportState;
use pagefleet_shared::spec::ExportSpec;
use pagefleet_tests::mock::{Faults, MockConfig, MockServer, Style};

/// Unlabelled samples by name, and labelled ones summed under their name.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut values = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if let Ok(v) = value.parse::<f64>() {
            *values.entry(name.to_string()).or_insert(0.0) += v;
        }
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_export_did() {
    let (seed, records, page_size) = (51, 400, 20);
    let mut config = MockConfig::new(seed, records);
    config.faults = Faults {
        p_429: 0.15,
        p_500: 0.1,
        ..Faults::none()
    };
    let mock = MockServer::start(config).await.unwrap();
    let token = common::secret_env("default", &mock.config().token);
    let fleet = Fleet::start(2).await;
    let toml = spec_toml(
        "metrics",
        &mock,
        Style::Offset,
        &fleet.out_dir,
        page_size,
        &token,
    );
    let id = fleet
        .api
        .submit(&ExportSpec::from_toml(&toml).unwrap(), None)
        .await
        .unwrap()
        .id;
    let status = fleet.wait(id, Duration::from_secs(120)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    // Every page of records, and the sentinel page past the stated total.
    let pages = records / page_size + 1;

    let text = reqwest::get(format!("{}/metrics", fleet.metrics_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = samples(&text);
    let get = |name: &str| m.get(name).copied().unwrap_or(0.0) as i64;
    let seen = mock.stats();
    assert!(
        status.rate_limited > 0 && status.retries > 0,
        "the faults were meant to cause 429s and retries: {status:?}"
    );
    assert_eq!(get("pagefleet_pages_landed_total"), pages as i64, "{text}");
    assert_eq!(get("pagefleet_rows_staged_total"), records as i64, "{text}");
    assert_eq!(get("pagefleet_exports_finalized_total"), 1, "{text}");
    assert_eq!(
        get("pagefleet_source_429_total"),
        status.rate_limited,
        "{text}"
    );
    assert_eq!(get("pagefleet_retries_total"), status.retries, "{text}");
    assert_eq!(
        get("pagefleet_source_requests_total"),
        status.requests,
        "{text}"
    );
    assert_eq!(status.requests, seen.requests as i64, "the mock's count");
    assert!(get("pagefleet_source_pauses_total") > 0, "{text}");
    assert!(
        get("pagefleet_outbox_published_total") >= pages as i64,
        "{text}"
    );
    assert_eq!(get("pagefleet_dead_letters_total"), 0, "{text}");
    assert_eq!(
        get("pagefleet_token_wait_seconds_count"),
        status.requests,
        "{text}"
    );
    fleet.stop().await;
    mock.shutdown().await;
}
