//! The schedules API and CLI as a tenant uses them: add, list, show,
//! run-now under each overlap policy, pause, resume, remove; invalid
//! schedules are refused naming the field; another tenant's schedule is
//! a 404 for every verb.

mod common;

use common::{secret_env, spec_toml, Fleet};
use pagefleet_scheduler::client::ClientError;
use pagefleet_shared::model::{ExportState, DEFAULT_TENANT};
use pagefleet_shared::schedule::{CatchUpPolicy, OverlapPolicy, ScheduleSpec};
use pagefleet_shared::spec::ExportSpec;
use pagefleet_tests::mock::{MockConfig, MockServer, Style};

/// Once a year: nothing fires during the test but what it asks for.
const YEARLY: &str = "0 0 1 1 *";

fn schedule(name: &str, export: &ExportSpec, overlap: OverlapPolicy) -> ScheduleSpec {
    ScheduleSpec {
        name: name.into(),
        cron: YEARLY.into(),
        time_zone: "Europe/Berlin".into(),
        overlap,
        catch_up: CatchUpPolicy::Once,
        catch_up_window_s: 3600,
        pause_after_failures: 3,
        export: export.clone(),
    }
}

fn status_of(e: ClientError) -> Option<u16> {
    e.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_manages_its_schedules_and_only_its_own() {
    let mock = MockServer::start(MockConfig::new(9, 20)).await.unwrap();
    let token = secret_env(DEFAULT_TENANT, &mock.config().token);
    // No workers: a run that starts stays running, so overlaps are certain.
    let fleet = Fleet::start(0).await;
    let toml = spec_toml("nightly", &mock, Style::Offset, &fleet.out_dir, 10, &token);
    let spec_path = fleet.root.join("nightly.toml");
    std::fs::write(&spec_path, &toml).unwrap();
    let export = ExportSpec::from_toml(&toml).unwrap();

    // The CLI adds, lists and shows it.
    let spec_arg = spec_path.display().to_string();
    let (code, out, err) = fleet.run_cli(&[
        "schedule",
        "add",
        &spec_arg,
        "--cron",
        YEARLY,
        "--time-zone",
        "Europe/Berlin",
        "--overlap",
        "queue_one",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("schedule nightly created"), "{out}");
    let (code, out, _) = fleet.run_cli(&["schedule", "ls"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("nightly") && out.contains("Europe/Berlin") && out.contains("active"),
        "{out}"
    );
    // The first slot is the next 1 January, midnight in Berlin.
    let listed = fleet.api.schedules().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].next_slot.month(), time::Month::December);
    assert_eq!(listed[0].next_slot.day(), 31);
    assert_eq!(listed[0].next_slot.hour(), 23);

    // queue_one: a run starts, the next waits, the one after is skipped.
    let outcomes: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let (code, out, err) = fleet.run_cli(&["schedule", "run-now", "nightly", "--json"]);
            assert_eq!(code, Some(0), "{err}");
            let ran: serde_json::Value = serde_json::from_str(&out).unwrap();
            v.push(ran["outcome"].as_str().unwrap().to_string());
        }
        v
    };
    assert_eq!(outcomes, ["started", "queued", "skipped"]);
    let (code, out, _) = fleet.run_cli(&["schedule", "show", "nightly"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("queue_one") && out.contains("(run-now)") && out.contains("queued"),
        "{out}"
    );
    let detail = fleet.api.schedule("nightly").await.unwrap();
    assert_eq!(detail.runs.len(), 3);
    let started = detail.runs.iter().find(|r| r.outcome == "started").unwrap();
    let run = fleet.api.status(started.export_id.unwrap()).await.unwrap();
    assert_eq!(
        run.name, "nightly",
        "a schedule's run is an ordinary export"
    );

    // cancel_running: the running export is cancelled and a new one starts.
    fleet
        .api
        .create_schedule(&schedule("hourly", &export, OverlapPolicy::CancelRunning))
        .await
        .unwrap();
    let first = fleet.api.run_schedule_now("hourly").await.unwrap();
    let second = fleet.api.run_schedule_now("hourly").await.unwrap();
    assert_eq!(
        (first.outcome.as_str(), second.outcome.as_str()),
        ("started", "started")
    );
    let cancelled = fleet.api.status(first.export_id.unwrap()).await.unwrap();
    assert_eq!(cancelled.state, ExportState::Cancelled);
    assert!(cancelled.error.unwrap().contains("cancel_running"));
    let running = fleet.api.status(second.export_id.unwrap()).await.unwrap();
    assert!(!running.state.is_terminal(), "{running:?}");

    // Pause and resume.
    let paused = fleet.api.pause_schedule("hourly").await.unwrap();
    assert!(paused.schedule.paused);
    let resumed = fleet.api.resume_schedule("hourly").await.unwrap();
    assert!(!resumed.schedule.paused);

    // Invalid schedules name their field; a taken name is a conflict.
    let mut bad = schedule("bad", &export, OverlapPolicy::Skip);
    bad.cron = "61 * * * *".into();
    let e = fleet.api.create_schedule(&bad).await.unwrap_err();
    assert_eq!(status_of(e), Some(422));
    bad.cron = YEARLY.into();
    bad.time_zone = "Mars/Olympus".into();
    match fleet.api.create_schedule(&bad).await.unwrap_err() {
        ClientError::Refused {
            status: 422, field, ..
        } => assert_eq!(field.as_deref(), Some("time_zone")),
        other => panic!("{other:?}"),
    }
    let e = fleet
        .api
        .create_schedule(&schedule("hourly", &export, OverlapPolicy::Skip))
        .await
        .unwrap_err();
    assert_eq!(status_of(e), Some(409));

    // Another tenant sees none of it and can touch none of it.
    let (acme, _) = fleet.tenant_client("acme").await;
    assert!(acme.schedules().await.unwrap().is_empty());
    assert_eq!(
        status_of(acme.schedule("hourly").await.unwrap_err()),
        Some(404)
    );
    assert_eq!(
        status_of(acme.run_schedule_now("hourly").await.unwrap_err()),
        Some(404)
    );
    assert_eq!(
        status_of(acme.pause_schedule("hourly").await.unwrap_err()),
        Some(404)
    );
    assert_eq!(
        status_of(acme.resume_schedule("hourly").await.unwrap_err()),
        Some(404)
    );
    assert_eq!(
        status_of(acme.remove_schedule("hourly").await.unwrap_err()),
        Some(404)
    );
    assert!(!fleet.api.schedule("hourly").await.unwrap().schedule.paused);

    // Removing keeps the exports.
    let (code, out, _) = fleet.run_cli(&["schedule", "rm", "hourly"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        status_of(fleet.api.schedule("hourly").await.unwrap_err()),
        Some(404)
    );
    assert!(fleet.api.status(second.export_id.unwrap()).await.is_ok());

    fleet.stop().await;
}

/// A schedule whose runs keep ending `unverified` (the source states half
/// the records it serves), or `blocked` on a dead letter (a page the source
/// refuses), pauses itself after `pause_after_failures` in a row, saying
/// why; a blocked run does not hold the schedule's next slots; `resume`
/// starts the count again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_pauses_after_runs_in_a_row_fail() {
    let mut lying = MockConfig::new(9, 40);
    lying.stated_total = Some(20);
    pauses_after_two(lying, ExportState::Unverified).await;
    let mut refusing = MockConfig::new(9, 40);
    refusing.fail_record = Some(25);
    pauses_after_two(refusing, ExportState::Blocked).await;
}

async fn pauses_after_two(config: MockConfig, ends: ExportState) {
    let mock = MockServer::start(config).await.unwrap();
    let token = secret_env(DEFAULT_TENANT, &mock.config().token);
    let fleet = Fleet::start(1).await;
    let toml = spec_toml("flaky", &mock, Style::Offset, &fleet.out_dir, 10, &token);
    let export = ExportSpec::from_toml(&toml).unwrap();
    let mut spec = schedule("flaky", &export, OverlapPolicy::Skip);
    spec.pause_after_failures = 2;
    fleet.api.create_schedule(&spec).await.unwrap();
    for run in 1..=2 {
        let ran = fleet.api.run_schedule_now("flaky").await.unwrap();
        assert_eq!(ran.outcome, "started", "run {run} ({ends}): {ran:?}");
        let status = common::wait_settled(
            &fleet.api,
            ran.export_id.unwrap(),
            std::time::Duration::from_secs(60),
        )
        .await;
        assert_eq!(status.state, ends, "run {run}: {status:?}");
        // The scheduler counts the run within a firing pass.
        let started = std::time::Instant::now();
        loop {
            let s = fleet.api.schedule("flaky").await.unwrap().schedule;
            if s.consecutive_failures == run {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "{s:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let paused = fleet.api.schedule("flaky").await.unwrap().schedule;
    assert!(paused.paused, "{paused:?}");
    assert!(
        paused.paused_reason.unwrap().contains("2 runs in a row"),
        "the reason is given"
    );
    let resumed = fleet.api.resume_schedule("flaky").await.unwrap().schedule;
    assert!(!resumed.paused);
    assert_eq!(resumed.consecutive_failures, 0);
    fleet.stop().await;
}

/// Old skipped slots are forgotten; started ones, and recent skipped ones,
/// stay.
#[tokio::test]
async fn old_skipped_slots_are_pruned() {
    let (db, url) = common::create_db("pft_prune_").await;
    let store = pagefleet_shared::store::Store::connect(&url, 2).unwrap();
    store.migrate().await.unwrap();
    let client = common::connect(&url).await;
    client
        .batch_execute(
            "INSERT INTO schedules (id, tenant_id, name, cron, time_zone, spec, overlap, catch_up,
                                    catch_up_window_s, pause_after_failures, next_slot)
             VALUES ('00000000-0000-7000-8000-000000000001', 'default', 's', '* * * * *', 'UTC',
                     '{}', 'skip', 'once', 60, 0, now());
             INSERT INTO schedule_firings (schedule_id, slot, outcome, fired_by, fired_at)
             SELECT '00000000-0000-7000-8000-000000000001', now() - make_interval(mins => n),
                    CASE WHEN n % 2 = 0 THEN 'skipped' ELSE 'started' END, 'test',
                    now() - make_interval(days => CASE WHEN n < 10 THEN 0 ELSE 8 END)
               FROM generate_series(1, 20) AS n;",
        )
        .await
        .unwrap();
    let pruned = store
        .prune_skipped_firings(std::time::Duration::from_secs(7 * 24 * 3600))
        .await
        .unwrap();
    // n = 10, 12, ..., 20 are old and skipped.
    assert_eq!(pruned, 6);
    let left: i64 = client
        .query_one("SELECT count(*) FROM schedule_firings", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 14);
    common::drop_db(&db).await;
}
