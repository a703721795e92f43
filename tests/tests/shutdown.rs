//! Processes that stop, politely or not, as real processes: a worker told
//! to stop with SIGTERM drains and hands back what it cannot finish; a
//! scheduler told to stop exits cleanly; a worker killed with SIGKILL while
//! it writes the CSV leaves no file at the final path, and the next attempt
//! cleans up and publishes the complete file exactly once.
//!
//! These tests restart no shared service, so they run beside the others.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use uuid::Uuid;

use pagefleet_shared::model::{ExportState, QueueRole, TaskMessage};
use pagefleet_shared::queue::Broker;
use pagefleet_shared::spec::ExportSpec;
use pagefleet_tests::chaos::fleet::{default_tenant_dir, offset_spec, ProcessFleet};
use pagefleet_tests::mock::{MockConfig, MockServer};

use common::{
    assert_csv_matches_source, assert_manifest, build_fleet_binaries, connect, wait_until,
};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The drain bound every spawned worker gets (`--drain-secs`).
const DRAIN: Duration = Duration::from_secs(5);
/// How long the broker may take to count messages handed back to it.
const BROKER_SETTLE: Duration = Duration::from_secs(5);

fn work_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pagefleet-{label}-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn mock(seed: u64, records: usize, token: &str) -> MockServer {
    let mut config = MockConfig::new(seed, records);
    config.token = token.to_string();
    MockServer::start(config).await.unwrap()
}

fn spec(
    name: &str,
    page_size: usize,
    rate: f64,
    mock: &MockServer,
    out: &Path,
    timeout_ms: u64,
) -> ExportSpec {
    let burst = rate.clamp(1.0, 100.0) as u32;
    let toml = offset_spec(name, page_size, rate, burst, &mock.base_url(), out, "")
        .replace("timeout_ms = 1500", &format!("timeout_ms = {timeout_ms}"));
    ExportSpec::from_toml(&toml).unwrap()
}

/// Tasks in flight, by claim holder.
async fn in_flight(db: &tokio_postgres::Client) -> Vec<(Uuid, String)> {
    db.query(
        "SELECT id, claimed_by FROM page_tasks WHERE state = 'in_flight'",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get::<_, Option<String>>(1).unwrap_or_default()))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_worker_and_hands_back_what_it_cannot_finish() {
    build_fleet_binaries();
    let (seed, records) = (31, 400);
    let token = format!("drain-{}", Uuid::now_v7().simple());
    let mock = mock(seed, records, &token).await;
    let dir = work_dir("drain");
    let mut fleet = ProcessFleet::start("drain", 1, &dir, &token).await.unwrap();
    let db = connect(&fleet.env.database_url).await;

    let out = default_tenant_dir(&dir, "out");
    let id = fleet
        .api
        .submit(&spec("drain", 10, 4.0, &mock, &out, 60_000), None)
        .await
        .unwrap()
        .id;
    let worker = fleet.workers[0].name.clone();
    // Once the first pages landed (the page count is known and the rest
    // fanned out), the source starts accepting requests and never
    // answering; the request timeout is longer than the drain, so the
    // worker's tasks cannot finish in it.
    wait_until("pages land", Duration::from_secs(60), || async {
        let status = fleet.api.status(id).await;
        status.is_ok_and(|s| s.pages_landed >= 2)
    })
    .await;
    mock.set_stall(true);
    wait_until(
        "the worker holds stalled tasks",
        Duration::from_secs(60),
        || async {
            mock.stats().faults.get("stall").copied().unwrap_or(0) >= 4
                && in_flight(&db).await.len() >= 4
        },
    )
    .await;
    let held = in_flight(&db).await;
    assert!(held
        .iter()
        .all(|(_, by)| by.starts_with(&format!("{worker}/"))));
    let broker = Broker::connect(AMQP, &fleet.env.namespace).await.unwrap();
    let ready_before = broker.ready_count(QueueRole::Pages).await.unwrap() as usize;

    let asked = Instant::now();
    let status = fleet.workers[0]
        .terminate(Duration::from_secs(30))
        .await
        .unwrap()
        .expect("the worker did not exit after SIGTERM");
    let took = asked.elapsed();
    assert!(
        status.success(),
        "worker exit status after SIGTERM: {status}"
    );
    // The bound: the drain, then a few seconds to release claims.
    assert!(
        took < DRAIN + Duration::from_secs(8),
        "the worker took {took:?} to exit after SIGTERM"
    );
    fleet.workers.clear();
    // Its claims were released, not left to expire: the tasks are queued
    // again and their messages are back in the queue.
    assert_eq!(
        in_flight(&db).await,
        Vec::new(),
        "claims left after the drain"
    );
    for (task, _) in &held {
        let state: String = db
            .query_one("SELECT state FROM page_tasks WHERE id = $1", &[task])
            .await
            .unwrap()
            .get(0);
        assert_eq!(state, "queued", "task {task} after the hand-back");
    }

    // The broker counts a requeued message once its quorum queue has
    // applied the return, which can trail the worker's exit by tens of
    // milliseconds (seen here: 1 of 4 counted 18 ms after the exit): wait
    // for the count instead of reading it once.
    let expected = ready_before + held.len();
    let mut ready = 0;
    let started = Instant::now();
    while started.elapsed() < BROKER_SETTLE {
        ready = broker.ready_count(QueueRole::Pages).await.unwrap() as usize;
        if ready >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.close().await;
    assert!(
        ready >= expected,
        "{ready} messages ready {BROKER_SETTLE:?} after the drain, {ready_before} before, {} handed back",
        held.len()
    );

    // The scheduler stops cleanly on SIGTERM too; a new one takes over.
    let status = fleet
        .scheduler
        .terminate(Duration::from_secs(20))
        .await
        .unwrap()
        .expect("the scheduler did not exit after SIGTERM");
    assert!(
        status.success(),
        "scheduler exit status after SIGTERM: {status}"
    );
    fleet.respawn_scheduler().unwrap();

    // A fresh worker, a healthy source: the export completes, every row once.
    mock.set_stall(false);
    fleet.add_worker().unwrap();
    let status = fleet
        .wait_finished(id, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    let csv = out.join("drain.csv");
    let bytes = assert_csv_matches_source(&csv, seed, records);
    assert_manifest(&csv, &bytes, records);
    fleet.stop().await;
    mock.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Temporary files the finalizer left in `dir`.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalizer_killed_mid_write_leaves_no_file_and_the_next_attempt_publishes_once() {
    build_fleet_binaries();
    // Big enough that writing the CSV takes a while to catch in the act.
    let (seed, records, page_size) = (32, 60_000, 1_000);
    let token = format!("final-{}", Uuid::now_v7().simple());
    let mock = mock(seed, records, &token).await;
    let dir = work_dir("finalize-kill");
    let mut fleet = ProcessFleet::start("final", 1, &dir, &token).await.unwrap();
    let out = default_tenant_dir(&dir, "out");
    let id = fleet
        .api
        .submit(&spec("final", page_size, 1000.0, &mock, &out, 10_000), None)
        .await
        .unwrap()
        .id;
    let csv = out.join("final.csv");

    // Kill -9 the only worker the moment its temporary CSV appears (not the
    // manifest's, which comes after the CSV is in place).
    let started = Instant::now();
    loop {
        if temp_files(&out)
            .iter()
            .any(|n| !n.ends_with(".manifest.tmp"))
        {
            fleet.workers[0].kill9().await;
            break;
        }
        assert!(
            !csv.exists(),
            "the CSV was published before its temporary file was seen; grow the export"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "finalize never started"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    fleet.workers.clear();
    let status = fleet.api.status(id).await.unwrap();
    assert_eq!(status.state, ExportState::Finalizing, "killed mid-write");
    assert!(!csv.exists(), "a half-written CSV reached the final path");
    assert!(
        !temp_files(&out).is_empty(),
        "the killed attempt left its temporary file"
    );

    // The next attempt cleans up and publishes the whole file.
    fleet.add_worker().unwrap();
    let status = fleet
        .wait_finished(id, Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    assert_eq!(
        temp_files(&out),
        Vec::<String>::new(),
        "temporary files left behind"
    );
    let bytes = assert_csv_matches_source(&csv, seed, records);
    assert_manifest(&csv, &bytes, records);

    // A second finalize task after success publishes nothing new.
    let before = std::fs::metadata(&csv).unwrap().modified().unwrap();
    let manifest = PathBuf::from(format!("{}.manifest.json", csv.display()));
    let manifest_before = std::fs::read(&manifest).unwrap();
    let broker = Broker::connect(AMQP, &fleet.env.namespace).await.unwrap();
    let message = serde_json::to_vec(&TaskMessage::Finalize { export_id: id }).unwrap();
    let publisher = broker.publisher().await.unwrap();
    publisher
        .publish(QueueRole::Finalize, &message)
        .await
        .unwrap();
    wait_until(
        "the extra finalize task is consumed",
        Duration::from_secs(30),
        || async { broker.ready_count(QueueRole::Finalize).await.unwrap_or(1) == 0 },
    )
    .await;
    // Give the handler time to do whatever it would do.
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.close().await;
    assert_eq!(std::fs::metadata(&csv).unwrap().modified().unwrap(), before);
    assert_eq!(std::fs::read(&manifest).unwrap(), manifest_before);
    assert_eq!(temp_files(&out), Vec::<String>::new());
    assert_eq!(
        fleet.api.status(id).await.unwrap().state,
        ExportState::Completed
    );
    fleet.stop().await;
    mock.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
