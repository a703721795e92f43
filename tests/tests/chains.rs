//! Chains without the hop: the worker that lands a chain's page fetches
//! the next one itself, and a worker killed with `kill -9` while it does
//! loses nothing (the reconciler re-queues the page it held).
//!
//! Real processes against the real Postgres, RabbitMQ and Redis; the mock
//! serves a `Link rel="next"` chain, one page at a time.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use uuid::Uuid;

use common::{assert_csv_matches_source, build_fleet_binaries, connect};
use pagefleet_shared::model::ExportState;
use pagefleet_shared::spec::ExportSpec;
use pagefleet_tests::bench::Walk;
use pagefleet_tests::chaos::fleet::{default_tenant_dir, offset_spec, ProcessFleet};
use pagefleet_tests::mock::{MockConfig, MockServer};

const SEED: u64 = 23;
const PAGE_SIZE: usize = 10;

async fn mock(token: &str, pages: usize, latency_ms: u64) -> MockServer {
    let mut config = MockConfig::new(SEED, pages * PAGE_SIZE);
    config.token = token.to_string();
    config.max_page_size = PAGE_SIZE;
    config.latency_ms = latency_ms;
    MockServer::start(config).await.unwrap()
}

fn chain_spec(name: &str, mock: &MockServer, dir: &std::path::Path) -> ExportSpec {
    ExportSpec::from_toml(&chain_toml(name, mock, dir)).unwrap()
}

fn chain_toml(name: &str, mock: &MockServer, dir: &std::path::Path) -> String {
    let offset = offset_spec(
        name,
        PAGE_SIZE,
        500.0,
        10,
        &mock.base_url(),
        &default_tenant_dir(dir, "out"),
        "",
    );
    Walk::LinkChain.adapt(offset)
}

fn work_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pagefleet-chains-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The workers (by name) whose claims landed the export's pages.
async fn claimed_by(db: &tokio_postgres::Client, id: Uuid) -> Vec<String> {
    let rows = db
        .query(
            "SELECT claimed_by FROM page_tasks WHERE export_id = $1 ORDER BY page_no",
            &[&id],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let claim: String = r.get(0);
            claim.split('/').next().unwrap_or("").to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_that_lands_a_chain_page_fetches_the_next() {
    build_fleet_binaries();
    let token = format!("chains-{}", Uuid::now_v7().simple());
    let pages = 40;
    let source = mock(&token, pages, 0).await;
    let dir = work_dir();
    let mut fleet = ProcessFleet::start("chainfollow", 3, &dir, &token)
        .await
        .unwrap();
    let db = connect(&fleet.env.database_url).await;
    let id = (fleet.api)
        .submit(&chain_spec("followed", &source, &dir), None)
        .await
        .unwrap()
        .id;
    let status = fleet
        .wait_ended(id, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    assert_csv_matches_source(
        &default_tenant_dir(&dir, "out").join("followed.csv"),
        SEED,
        pages * PAGE_SIZE,
    );
    // Through the queue, three workers would share the chain's pages;
    // followed, the worker that took the first page lands them all.
    let workers: BTreeSet<String> = claimed_by(&db, id).await.into_iter().collect();
    assert_eq!(workers.len(), 1, "pages claimed by {workers:?}");
    // Every message was written, and none is left unsent.
    let unsent: i64 = db
        .query_one("SELECT count(*) FROM outbox WHERE sent_at IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(unsent, 0);
    fleet.stop().await;
    source.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_following_a_chain_loses_nothing() {
    build_fleet_binaries();
    let token = format!("chains-{}", Uuid::now_v7().simple());
    let pages = 60;
    // 50 ms a page: the chain takes seconds, long enough to kill into.
    let source = mock(&token, pages, 50).await;
    let dir = work_dir();
    let mut fleet = ProcessFleet::start("chainkill", 2, &dir, &token)
        .await
        .unwrap();
    let db = connect(&fleet.env.database_url).await;
    let id = (fleet.api)
        .submit(&chain_spec("killed", &source, &dir), None)
        .await
        .unwrap()
        .id;
    // Wait until the chain is well under way, then kill whichever worker
    // holds its page in flight: it is following the chain.
    let started = Instant::now();
    let holder = loop {
        let row = db
            .query_opt(
                "SELECT claimed_by, page_no FROM page_tasks
                  WHERE export_id = $1 AND state = 'in_flight' AND page_no >= 10",
                &[&id],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            let claim: String = row.get(0);
            break claim.split('/').next().unwrap_or("").to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the chain never reached page 10"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let victim = (fleet.workers.iter_mut())
        .find(|w| w.name == holder)
        .unwrap_or_else(|| panic!("no worker named {holder}"));
    victim.kill9().await;
    fleet.add_worker().unwrap();
    let status = fleet
        .wait_ended(id, Duration::from_secs(180))
        .await
        .unwrap();
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    assert_eq!(status.csv_rows, Some((pages * PAGE_SIZE) as i64));
    assert_csv_matches_source(
        &default_tenant_dir(&dir, "out").join("killed.csv"),
        SEED,
        pages * PAGE_SIZE,
    );
    // The killed worker's page was taken over: the chain's pages were not
    // all landed by one worker.
    let workers: BTreeSet<String> = claimed_by(&db, id).await.into_iter().collect();
    assert!(workers.len() >= 2, "{workers:?}");
    fleet.stop().await;
    source.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_made_while_a_slow_answer_is_out_is_kept_past_its_lease() {
    build_fleet_binaries();
    let token = format!("chains-{}", Uuid::now_v7().simple());
    let pages = 3;
    // Longer than a worker's 10 s lease: the next page's task is claimed
    // as soon as the page before lands, while its answer is still out.
    let source = mock(&token, pages, 12_000).await;
    let dir = work_dir();
    let mut fleet = ProcessFleet::start("chainslow", 2, &dir, &token)
        .await
        .unwrap();
    let db = connect(&fleet.env.database_url).await;
    let toml = chain_toml("slow", &source, &dir).replace("timeout_ms = 1500", "timeout_ms = 20000");
    let spec = ExportSpec::from_toml(&toml).unwrap();
    assert_eq!(spec.source.timeout_ms, 20_000);
    let id = (fleet.api).submit(&spec, None).await.unwrap().id;
    let status = fleet
        .wait_ended(id, Duration::from_secs(180))
        .await
        .unwrap();
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    // The lease was kept fresh: no claim was taken over, and one worker
    // followed the chain to its end.
    let lost: i64 = db
        .query_one(
            "SELECT COALESCE(sum(lost_claims), 0)::int8 FROM page_tasks WHERE export_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(lost, 0);
    let workers: BTreeSet<String> = claimed_by(&db, id).await.into_iter().collect();
    assert_eq!(workers.len(), 1, "pages claimed by {workers:?}");
    // Nothing was fetched twice: no takeover sent a page's request again.
    let stats = source.stats();
    assert_eq!(stats.requests, stats.ok, "{stats:?}");
    assert!(stats.ok <= pages as u64 + 1, "{stats:?}");
    fleet.stop().await;
    source.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_paused_while_its_answer_is_out_does_not_land_until_resumed() {
    build_fleet_binaries();
    let token = format!("chains-{}", Uuid::now_v7().simple());
    let pages = 3;
    let source = mock(&token, pages, 6_000).await;
    let dir = work_dir();
    let mut fleet = ProcessFleet::start("chainpause", 2, &dir, &token)
        .await
        .unwrap();
    let db = connect(&fleet.env.database_url).await;
    let toml =
        chain_toml("paused", &source, &dir).replace("timeout_ms = 1500", "timeout_ms = 20000");
    let id = (fleet.api)
        .submit(&ExportSpec::from_toml(&toml).unwrap(), None)
        .await
        .unwrap()
        .id;
    let state_of = |page: i64| {
        let db = &db;
        async move {
            let row = db
                .query_opt(
                    "SELECT state FROM page_tasks WHERE export_id = $1 AND page_no = $2",
                    &[&id, &page],
                )
                .await
                .unwrap();
            row.map(|r| r.get::<_, String>(0))
        }
    };
    // Page 0 lands after 6 s; page 1's request went out before that.
    let started = Instant::now();
    while state_of(0).await.as_deref() != Some("done") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "page 0 never landed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.api.export_action(id, "pause").await.unwrap();
    // Page 1's answer comes while the export is paused: it must not land.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_ne!(
        state_of(1).await.as_deref(),
        Some("done"),
        "page 1 landed while paused"
    );
    fleet.api.export_action(id, "resume").await.unwrap();
    let status = fleet
        .wait_ended(id, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    assert_eq!(status.csv_rows, Some((pages * PAGE_SIZE) as i64));
    fleet.stop().await;
    source.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
