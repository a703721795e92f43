//! Staging retention against the real Postgres: a published export's
//! staged rows are kept through the retention and removed after it (the
//! CSV untouched, the export recording when), a cancelled export's go too,
//! and a paused export's stay whatever its age.

mod common;

use std::time::Duration;

use common::{spec_toml, wait_until, Fleet};
use pagefleet_shared::model::ExportState;
use pagefleet_tests::mock::{MockConfig, MockServer, Style};
use uuid::Uuid;

const RETENTION_SECS: u64 = 8;

async fn staged(db: &tokio_postgres::Client, id: Uuid) -> i64 {
    let row = db
        .query_one(
            "SELECT count(*) AS n FROM staged_rows WHERE export_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    row.get("n")
}

async fn staging_removed(db: &tokio_postgres::Client, id: Uuid) -> bool {
    let row = db
        .query_one(
            "SELECT staging_removed_at IS NOT NULL AS removed FROM exports WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    row.get("removed")
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
    // One connection for every look, however often the waits poll.
    let db = fleet.db().await;
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
    wait_until(
        "rows staged for both",
        Duration::from_secs(60),
        async || staged(&db, paused).await > 0 && staged(&db, cancelled).await > 0,
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
    assert_eq!(staged(&db, published).await, 200);
    assert!(!staging_removed(&db, published).await);

    let limit = Duration::from_secs(RETENTION_SECS * 6);
    wait_until(
        "the published export's staging removed",
        limit,
        async || staging_removed(&db, published).await,
    )
    .await;
    assert_eq!(staged(&db, published).await, 0);
    let status = fleet.api.status(published).await.unwrap();
    assert!(status.staging_removed_at.is_some(), "{status:?}");
    wait_until(
        "the cancelled export's staging removed",
        limit,
        async || staging_removed(&db, cancelled).await,
    )
    .await;
    assert_eq!(staged(&db, cancelled).await, 0);

    // The file is what was published; the paused export kept its rows.
    assert_eq!(std::fs::read(&csv).unwrap(), before);
    assert!(staged(&db, paused).await > 0);
    assert!(!staging_removed(&db, paused).await);
    let paused_status = fleet.api.status(paused).await.unwrap();
    assert_eq!(paused_status.state, ExportState::Paused);
    fleet.stop().await;
    mock.shutdown().await;
}
