//! Staging retention against the real Postgres: a published export's
//! staged rows are kept through the retention and removed after it (the
//! CSV untouched, the export recording when), a cancelled export's go too,
//! and a paused export's stay whatever its age.

mod common;

use std::time::{Duration, Instant};

use common::{spec_toml, Fleet};
use pagefleet_shared::model::ExportState;
use pagefleet_tests::mock::{MockConfig, MockServer, Style};
use uuid::Uuid;

const RETENTION_SECS: u64 = 8;

async fn staged(fleet: &Fleet, id: Uuid) -> i64 {
    let row = (fleet.db().await)
        .query_one(
            "SELECT count(*) AS n FROM staged_rows WHERE export_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    row.get("n")
}

async fn staging_removed(fleet: &Fleet, id: Uuid) -> bool {
    let row = (fleet.db().await)
        .query_one(
            "SELECT staging_removed_at IS NOT NULL AS removed FROM exports WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    row.get("removed")
}

async fn wait_for(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staging_of_ended_exports_goes_after_the_retention_and_no_other() {
    let mut config = MockConfig::new(31, 200);
    // Slow enough that an export can be paused or cancelled part-way.
    config.rate = 4.0;
    config.burst = 1;
    let mock = MockServer::start(config).await.unwrap();
    let token = common::secret_env("default", &mock.config().token);
    let fleet = Fleet::start_with(2, |c, _| c.staging_retention_secs = RETENTION_SECS).await;
    let submit = |name: &str, page_size: usize| {
        let toml = spec_toml(
            name,
            &mock,
            Style::Offset,
            &fleet.out_dir,
            page_size,
            &token,
        );
        let fleet = &fleet;
        async move { fleet.submit_toml(&toml).await }
    };

    // Paused and cancelled part-way, each with rows staged.
    let paused = submit("paused", 5).await;
    let cancelled = submit("cancelled", 5).await;
    wait_for(
        "rows staged for both",
        Duration::from_secs(60),
        async || staged(&fleet, paused).await > 0 && staged(&fleet, cancelled).await > 0,
    )
    .await;
    fleet.api.export_action(paused, "pause").await.unwrap();
    fleet.api.export_action(cancelled, "cancel").await.unwrap();

    let published = submit("published", 100).await;
    let status = fleet.wait(published, Duration::from_secs(120)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    let csv = fleet.out_dir.join("published.csv");
    let before = std::fs::read(&csv).unwrap();
    // Just ended: well within the retention, every row is still staged.
    assert_eq!(staged(&fleet, published).await, 200);
    assert!(!staging_removed(&fleet, published).await);

    let limit = Duration::from_secs(RETENTION_SECS * 6);
    wait_for(
        "the published export's staging removed",
        limit,
        async || staging_removed(&fleet, published).await,
    )
    .await;
    assert_eq!(staged(&fleet, published).await, 0);
    let status = fleet.api.status(published).await.unwrap();
    assert!(status.staging_removed_at.is_some(), "{status:?}");
    wait_for(
        "the cancelled export's staging removed",
        limit,
        async || staging_removed(&fleet, cancelled).await,
    )
    .await;
    assert_eq!(staged(&fleet, cancelled).await, 0);

    // The file is what was published; the paused export kept its rows.
    assert_eq!(std::fs::read(&csv).unwrap(), before);
    assert!(staged(&fleet, paused).await > 0);
    assert!(!staging_removed(&fleet, paused).await);
    let paused_status = fleet.api.status(paused).await.unwrap();
    assert_eq!(paused_status.state, ExportState::Paused);
    fleet.stop().await;
    mock.shutdown().await;
}
