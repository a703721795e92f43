//! A page that takes down every worker that fetches it (a body that runs it
//! out of memory, say) must not take the fleet down one worker at a time,
//! forever: after three claims whose worker was lost before an outcome, the
//! task is dead-lettered unfetched, and other exports keep landing.
//!
//! Real processes: the workers holding the page are killed with `kill -9`.

mod common;

use std::time::{Duration, Instant};

use uuid::Uuid;

use common::{assert_csv_matches_source, build_fleet_binaries, connect};
use pagefleet_shared::model::{DeadLetterClass, ExportState};
use pagefleet_shared::spec::ExportSpec;
use pagefleet_tests::chaos::fleet::{default_tenant_dir, offset_spec, ProcessFleet};
use pagefleet_tests::mock::{MockConfig, MockServer};

const HEALTHY_RECORDS: usize = 500;

async fn submit(
    fleet: &ProcessFleet,
    name: &str,
    mock: &MockServer,
    dir: &std::path::Path,
) -> Uuid {
    let toml = offset_spec(
        name,
        10,
        100.0,
        10,
        &mock.base_url(),
        &default_tenant_dir(dir, "out"),
        "",
    );
    let spec = ExportSpec::from_toml(&toml).unwrap();
    fleet.api.submit(&spec, None).await.unwrap().id
}

/// Waits until the export's first page is held by the fleet's newest
/// worker; returns the task's lost claims so far.
async fn held_by_newest(fleet: &ProcessFleet, db: &tokio_postgres::Client, id: Uuid) -> i32 {
    let newest = fleet.workers.last().unwrap().name.clone();
    let started = Instant::now();
    loop {
        let row = db
            .query_one(
                "SELECT COALESCE(claimed_by, ''), state, lost_claims FROM page_tasks
                  WHERE export_id = $1 AND page_no = 0",
                &[&id],
            )
            .await
            .unwrap();
        let (holder, state): (String, String) = (row.get(0), row.get(1));
        if state == "in_flight" && holder.starts_with(&format!("{newest}/")) {
            return row.get(2);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{newest} never took the page (held by {holder:?}, {state})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_kills_its_workers_is_dead_lettered_after_three_and_others_keep_landing() {
    build_fleet_binaries();
    let token = format!("lost-workers-{}", Uuid::now_v7().simple());
    let with_token = |records| MockConfig {
        token: token.clone(),
        ..MockConfig::new(21, records)
    };
    // Every request to the poison source hangs: its page is held, retried
    // on timeouts, for as long as its worker lives.
    let poison = MockServer::start(with_token(10)).await.unwrap();
    poison.set_stall(true);
    let healthy = MockServer::start(with_token(HEALTHY_RECORDS))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("pagefleet-lost-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut fleet = ProcessFleet::start("lostworkers", 1, &dir, &token)
        .await
        .unwrap();
    let db = connect(&fleet.env.database_url).await;

    let poisoned = submit(&fleet, "poisoned", &poison, &dir).await;
    for kill in 0..3 {
        assert_eq!(held_by_newest(&fleet, &db, poisoned).await, kill);
        fleet.workers.last_mut().unwrap().kill9().await;
        fleet.add_worker().unwrap();
    }
    // The fourth worker takes the page over after the third lost claim,
    // and dead-letters it instead of fetching it.
    let status = fleet
        .wait_state(poisoned, &[ExportState::Blocked], Duration::from_secs(60))
        .await
        .unwrap();
    let letters = fleet.api.dead_letters(Some(poisoned), false).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].class, DeadLetterClass::WorkerLost);
    assert!(
        letters[0]
            .reason
            .contains("were lost 3 times before an outcome"),
        "{}",
        letters[0].reason
    );
    assert_eq!(status.pages_dead, 1);

    // The fleet is still there for everyone else.
    let other = submit(&fleet, "other", &healthy, &dir).await;
    let done = fleet
        .wait_ended(other, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.state, ExportState::Completed, "{done:?}");
    assert_csv_matches_source(
        &default_tenant_dir(&dir, "out").join("other.csv"),
        21,
        HEALTHY_RECORDS,
    );

    poison.set_stall(false);
    fleet.stop().await;
    poison.shutdown().await;
    healthy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
