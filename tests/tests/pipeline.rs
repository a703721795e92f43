//! The core pipeline end to end: spec → page tasks on RabbitMQ → workers
//! through the Redis bucket → Postgres → the published CSV and manifest.
//! Only the source API is fake (the mock in `src/mock`).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{assert_csv_matches_source, assert_manifest, spec_toml, Fleet};
use pagefleet_shared::model::{DeadLetterClass, ExportState, QueueRole, TaskMessage};
use pagefleet_shared::queue::Broker;
use pagefleet_shared::spec::ExportSpec;
use pagefleet_tests::mock::{Faults, MockConfig, MockServer, Style};
use uuid::Uuid;

/// Faults heavier than the standard mix, so that every kind shows up in a
/// few hundred requests.
fn test_faults() -> Faults {
    Faults {
        p_429: 0.03,
        p_500: 0.02,
        p_502: 0.01,
        p_503: 0.01,
        p_504: 0.01,
        p_reset: 0.02,
        p_truncated: 0.03,
        p_slow: 0.02,
        p_hang: 0.01,
        slow_ms: 200,
        hang_ms: 2_500, // longer than the specs' 1.5 s timeout
    }
}

fn token_env(mock: &MockServer) -> String {
    common::secret_env("default", &mock.config().token)
}

async fn submit(fleet: &Fleet, toml: &str) -> Uuid {
    let spec = ExportSpec::from_toml(toml).expect("spec");
    fleet.api.submit(&spec, None).await.expect("submit").id
}

fn csv_path(fleet: &Fleet, name: &str) -> PathBuf {
    fleet.out_dir.join(format!("{name}.csv"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_style_exports_every_record_exactly_once_through_faults() {
    const RECORDS: usize = 3_000;
    const SEED: u64 = 7;
    let mut config = MockConfig::new(SEED, RECORDS);
    config.rate = 100.0;
    config.burst = 10;
    config.faults = test_faults();
    let mock = MockServer::start(config).await.unwrap();
    let token = token_env(&mock);
    let fleet = Fleet::start(3).await;

    let mut exports = Vec::new();
    // The json-server style is left out so that this test's load (requests,
    // faults, run time) stays what it was tuned for; spec_toml maps it.
    for style in Style::ALL.into_iter().filter(|s| *s != Style::JsonServer) {
        let name = format!(
            "style-{}",
            style.path().trim_start_matches('/').replace("/items", "")
        );
        let toml = spec_toml(&name, &mock, style, &fleet.out_dir, 100, &token);
        exports.push((style, name, submit(&fleet, &toml).await));
    }
    for (style, name, id) in &exports {
        let status = fleet.wait(*id, Duration::from_secs(240)).await;
        assert_eq!(
            status.state,
            ExportState::Completed,
            "{style:?}: {status:?}"
        );
        let path = csv_path(&fleet, name);
        // The tenant sees the path in its own directory.
        let shown = path.strip_prefix(&fleet.out_dir).unwrap();
        assert_eq!(status.output_path.as_deref(), shown.to_str());
        let bytes = assert_csv_matches_source(&path, SEED, RECORDS);
        let manifest = assert_manifest(&path, &bytes, RECORDS);
        assert_eq!(
            manifest["export_id"].as_str(),
            Some(id.to_string().as_str())
        );
        assert_eq!(status.csv_sha256.as_deref(), manifest["sha256"].as_str());
        assert_eq!(status.rows_staged, RECORDS as i64, "{style:?}");
    }

    let stats = mock.stats();
    // The faults really happened, and the fleet came through them.
    for kind in [
        "500",
        "502",
        "503",
        "504",
        "reset",
        "truncated",
        "hang",
        "429",
    ] {
        assert!(
            stats.faults.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} fault was injected in {} requests: {:?}",
            stats.requests,
            stats.faults
        );
    }
    let five_xx: u64 = ["500", "502", "503", "504"]
        .iter()
        .map(|k| stats.faults[*k])
        .sum();
    assert!(
        five_xx * 100 >= stats.requests * 2,
        "5xx share below 2 %: {stats:?}"
    );
    assert!(
        stats.faults["truncated"] * 100 >= stats.requests,
        "truncated share below 1 %: {stats:?}"
    );
    println!("mock stats: {}", serde_json::to_string(&stats).unwrap());
    assert!(stats.status_429 > 0);
    // The shared bucket kept the whole fleet within the source's limit.
    let limit = mock.config().rate as u64 + mock.config().burst as u64;
    assert!(
        stats.peak_requests_1s <= limit,
        "peak {} requests in 1 s exceeds rate + burst = {limit}",
        stats.peak_requests_1s
    );
    // No secret reached the database or the manifests.
    let db = fleet.db().await;
    let leaked: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM exports WHERE spec::text LIKE '%' || $1 || '%')
                  + (SELECT count(*) FROM dead_letters WHERE headers::text LIKE '%' || $1 || '%')",
            &[&mock.config().token],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0, "the token was stored in Postgres");
    for (_, name, _) in &exports {
        let manifest =
            std::fs::read_to_string(fleet.out_dir.join(format!("{name}.csv.manifest.json")))
                .unwrap();
        assert!(!manifest.contains(&mock.config().token));
    }
    fleet.stop().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_delivered_twice_changes_nothing() {
    const RECORDS: usize = 2_000;
    let mock = MockServer::start(MockConfig::new(11, RECORDS))
        .await
        .unwrap();
    let token = token_env(&mock);
    let fleet = Fleet::start(2).await;
    let toml = spec_toml("dup", &mock, Style::Offset, &fleet.out_dir, 100, &token);
    let id = submit(&fleet, &toml).await;

    // Duplicates while the export runs: the first page, published again
    // and again, races its original.
    let broker = Broker::connect(&fleet.config.amqp_url, &fleet.config.namespace)
        .await
        .unwrap();
    let publisher = broker.publisher().await.unwrap();
    let db = fleet.db().await;
    let first: Uuid = db
        .query_one(
            "SELECT id FROM page_tasks WHERE export_id = $1 AND page_no = 0",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    let page = |task_id| {
        serde_json::to_vec(&TaskMessage::Page {
            export_id: id,
            task_id,
        })
        .unwrap()
    };
    for _ in 0..3 {
        publisher
            .publish(QueueRole::Pages, &page(first))
            .await
            .unwrap();
    }
    let status = fleet.wait(id, Duration::from_secs(120)).await;
    assert_eq!(status.state, ExportState::Completed);
    let path = csv_path(&fleet, "dup");
    let bytes = assert_csv_matches_source(&path, 11, RECORDS);
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    let requests_before = mock.stats().requests;

    // Duplicates after the fact: every page and the finalize task again.
    let tasks: Vec<Uuid> = db
        .query("SELECT id FROM page_tasks WHERE export_id = $1", &[&id])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for t in &tasks {
        publisher
            .publish(QueueRole::Pages, &page(*t))
            .await
            .unwrap();
    }
    let finalize = serde_json::to_vec(&TaskMessage::Finalize { export_id: id }).unwrap();
    publisher
        .publish(QueueRole::Finalize, &finalize)
        .await
        .unwrap();

    let mut after = fleet.api.status(id).await.unwrap();
    for _ in 0..100 {
        if after.duplicate_deliveries >= status.duplicate_deliveries + tasks.len() as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = fleet.api.status(id).await.unwrap();
    }
    assert_eq!(
        after.duplicate_deliveries,
        status.duplicate_deliveries + tasks.len() as i64,
        "every late duplicate was seen and absorbed"
    );
    assert_eq!(after.state, ExportState::Completed);
    assert_eq!(after.rows_staged, status.rows_staged);
    assert_eq!(after.pages_landed, status.pages_landed);
    assert_eq!(after.csv_sha256, status.csv_sha256);
    assert_eq!(
        mock.stats().requests,
        requests_before,
        "a done page is never fetched again"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the CSV did not change"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        modified,
        "the CSV was not rewritten"
    );
    broker.close().await;
    fleet.stop().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_that_always_404s_blocks_the_export_until_replayed() {
    const RECORDS: usize = 1_500;
    let mut config = MockConfig::new(23, RECORDS);
    config.fail_record = Some(777);
    let mock = MockServer::start(config).await.unwrap();
    let token = token_env(&mock);
    let fleet = Fleet::start(2).await;
    let toml = spec_toml("poison", &mock, Style::Offset, &fleet.out_dir, 100, &token);
    let id = submit(&fleet, &toml).await;

    let status = fleet.wait(id, Duration::from_secs(120)).await;
    assert_eq!(status.state, ExportState::Blocked, "{status:?}");
    assert_eq!(status.dead_letters_open, 1);
    let path = csv_path(&fleet, "poison");
    assert!(
        !path.exists(),
        "nothing may be published while a page is dead"
    );

    // The operator's view, through the real CLI.
    let cli = |args: &[&str]| fleet.cli().args(args).output().unwrap();
    let listed = cli(&["dlq", "ls", "--json"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["by_class"]["permanent"], 1);
    let letters = listed["letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["last_status"], 404);
    assert_eq!(letters[0]["class"], "permanent");
    assert_eq!(letters[0]["page_no"], 7, "records 701-800 are page 7");
    assert!(letters[0]["reason"].as_str().unwrap().contains("404"));
    assert_eq!(mock.stats().not_found, 1, "a 404 is not retried");

    mock.set_fail_record(None);
    let replay = cli(&["dlq", "replay", "--export", &id.to_string()]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(
        String::from_utf8_lossy(&replay.stdout).contains("replayed 1 page(s) of 1 export(s)"),
        "{}",
        String::from_utf8_lossy(&replay.stdout)
    );
    let again = cli(&["dlq", "replay", "--export", &id.to_string()]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing to replay"),
        "a replay is idempotent"
    );

    let status = fleet.wait(id, Duration::from_secs(120)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    let bytes = assert_csv_matches_source(&path, 23, RECORDS);
    assert_manifest(&path, &bytes, RECORDS);
    fleet.stop().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_without_its_primary_key_is_a_clear_page_error() {
    let mock = MockServer::start(MockConfig::new(5, 300)).await.unwrap();
    let token = token_env(&mock);
    let fleet = Fleet::start(1).await;
    let toml = spec_toml("nokey", &mock, Style::Cursor, &fleet.out_dir, 100, &token)
        .replace("primary_key = [\"id\"]", "primary_key = [\"order_ref\"]");
    let id = submit(&fleet, &toml).await;
    let status = fleet.wait(id, Duration::from_secs(60)).await;
    assert_eq!(status.state, ExportState::Blocked);
    let letters = fleet.api.dead_letters(Some(id), false).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].class, DeadLetterClass::BadPage);
    assert_eq!(
        letters[0].reason,
        "record 0 on page 0 of partition 0: record has no primary key field `order_ref`"
    );
    assert!(!csv_path(&fleet, "nokey").exists());
    fleet.stop().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_returns_the_same_export() {
    let mock = MockServer::start(MockConfig::new(3, 200)).await.unwrap();
    let token = token_env(&mock);
    let fleet = Fleet::start(1).await;
    let toml = spec_toml("idem", &mock, Style::Offset, &fleet.out_dir, 100, &token);
    let spec = ExportSpec::from_toml(&toml).unwrap();
    let a = fleet
        .api
        .submit(&spec, Some("nightly-2026-11-25"))
        .await
        .unwrap();
    let b = fleet
        .api
        .submit(&spec, Some("nightly-2026-11-25"))
        .await
        .unwrap();
    assert!(a.created);
    assert!(!b.created);
    assert_eq!(a.id, b.id);
    let mut other = spec.clone();
    other.page_size = 50;
    let conflict = fleet
        .api
        .submit(&other, Some("nightly-2026-11-25"))
        .await
        .unwrap_err();
    assert_eq!(conflict.status(), Some(409));
    let status = fleet.wait(a.id, Duration::from_secs(60)).await;
    assert_eq!(status.state, ExportState::Completed);
    assert_eq!(fleet.api.list().await.unwrap().len(), 1);
    fleet.stop().await;
    mock.shutdown().await;
}
