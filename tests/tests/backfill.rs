//! A backfill over 12 windows of a source that refuses offsets past 60:
//! one export, one partition per window, one CSV equal to the source's
//! rows for the range. The dense window is split, and its halves again,
//! because each states more records than a walk can reach; the splits
//! are recorded in the manifest and the counts still agree.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use time::macros::datetime;

use common::{isolated_fleet, wait_settled};
use pagefleet_shared::model::ExportState;
use pagefleet_shared::spec::ExportSpec;
use pagefleet_tests::mock::{MockConfig, MockServer};

/// Records in each hour of the range; hour 5 is dense.
fn per_hour(hour: i64) -> i64 {
    if hour == 5 {
        240
    } else {
        20
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backfill_of_twelve_windows_splits_the_one_too_deep_for_the_source() {
    let mock = MockServer::start(MockConfig::new(8, 0)).await.unwrap();
    let start = datetime!(2025-01-01 00:00 UTC).unix_timestamp();
    let mut id = 0;
    for hour in 0..12 {
        let n = per_hour(hour);
        for j in 0..n {
            id += 1;
            // Inside (hour, hour + 1]: never on a window's lower bound.
            mock.changes()
                .upsert_at(id, start + hour * 3600 + 1 + j * 3599 / n);
        }
    }
    // Outside the range: not exported.
    mock.changes().upsert_at(id + 1, start - 10);
    mock.changes().upsert_at(id + 2, start + 12 * 3600 + 10);
    mock.changes().set_max_offset(Some(60));
    let (fleet, token) = isolated_fleet(2, &mock).await;
    let (acme, _) = fleet.tenant_client("acme").await;
    let toml = format!(
        r#"name = "history"
primary_key = ["id"]
page_size = 20

[source]
base_url = "{base}"
path = "/changes"
records_path = "data"
auth = {{ type = "bearer", secret = {{ env = "{token}" }} }}

[pagination]
style = "offset"
total_path = "total"

[rate_limit]
rate = 200
burst = 20

[backfill]
from = "2025-01-01T00:00:00Z"
to = "2025-01-01T12:00:00Z"
window = "1h"
format = "rfc3339"
since_param = "updated_since"
until_param = "updated_until"
max_offset = 60
min_window = 60

[output]
dir = "backfill"
"#,
        base = mock.base_url()
    );
    let spec = ExportSpec::from_toml(&toml).unwrap();
    let export = acme.submit(&spec, None).await.unwrap().id;
    let status = wait_settled(&acme, export, Duration::from_secs(180)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");

    // One CSV with exactly the range's rows.
    let csv = fleet
        .root
        .join("acme")
        .join(status.output_path.clone().unwrap());
    let mut reader = csv::Reader::from_path(&csv).unwrap();
    let ids: Vec<u64> = reader
        .records()
        .map(|r| r.unwrap()[0].parse().unwrap())
        .collect();
    let expected: BTreeSet<u64> = (1..=id).collect();
    assert_eq!(ids.len(), expected.len(), "no duplicate, none missing");
    assert_eq!(ids.iter().copied().collect::<BTreeSet<_>>(), expected);

    // The dense hour (240 records; a walk reaches 60) was split, and its
    // halves (about 120 each) again, and so on until each fits: recorded,
    // each split in two new partitions.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.manifest.json", csv.display())).unwrap())
            .unwrap();
    let splits = manifest["splits"]
        .as_array()
        .expect("splits in the manifest");
    assert!(splits.len() >= 3, "{splits:?}");
    assert_eq!(splits[0]["params"]["updated_since"], "2025-01-01T05:00:00Z");
    assert_eq!(splits[0]["params"]["updated_until"], "2025-01-01T06:00:00Z");
    for split in splits {
        let reason = split["reason"].as_str().unwrap();
        assert!(reason.contains("deepest offset"), "{reason}");
        let since = split["params"]["updated_since"].as_str().unwrap();
        assert!(
            since.starts_with("2025-01-01T05:"),
            "only the dense hour splits: {split}"
        );
    }
    assert_eq!(status.partitions as usize, 12 + 2 * splits.len());
    assert_eq!(manifest["verification"]["status"], "agreed", "{manifest}");
    assert_eq!(
        manifest["filters"]["partitions"].as_array().unwrap().len(),
        12
    );
    // A refused offset is a 400, a dead letter, and a blocked export: the
    // export completing says no walk went past the cap.
    fleet.stop().await;
}

/// `examples/backfill.toml`, pointed at this test's mock seeded like
/// `pagefleet-mock`: a year in 12 windows, March split, every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backfill_example_runs_against_the_mock() {
    use pagefleet_tests::mock::{BACKFILL_MAX_OFFSET, BACKFILL_PER_MONTH};
    let mock = MockServer::start(MockConfig::new(8, 0)).await.unwrap();
    let ids = mock.changes().seed_2025(1, BACKFILL_PER_MONTH);
    mock.changes().set_max_offset(Some(BACKFILL_MAX_OFFSET));
    std::env::set_var("PAGEFLEET_SECRET_default__MOCK_TOKEN", &mock.config().token);
    let fleet = common::Fleet::start(2).await;
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("examples/backfill.toml")).unwrap();
    let spec =
        ExportSpec::from_toml(&text.replace("http://127.0.0.1:9000", &mock.base_url())).unwrap();
    let export = fleet.api.submit(&spec, None).await.unwrap().id;
    let status = wait_settled(&fleet.api, export, Duration::from_secs(300)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    assert_eq!(status.csv_rows, Some((ids.end - ids.start) as i64));
    let csv = fleet.out_dir.join(status.output_path.unwrap());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.manifest.json", csv.display())).unwrap())
            .unwrap();
    let splits = manifest["splits"].as_array().unwrap();
    assert!(!splits.is_empty());
    assert_eq!(splits[0]["params"]["updated_since"], "2025-03-01T00:00:00Z");
    fleet.stop().await;
}
