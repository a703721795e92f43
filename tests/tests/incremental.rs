//! Incremental runs of a schedule against a change log the test writes
//! while the runs read it. Records are inserted and updated between the
//! runs and during them; the union of the runs' CSVs, merged by key, must
//! equal what the source held at the last run's upper bound, with no
//! record missing from all of them. A run over an empty window still
//! advances the watermark to its upper bound; the manifests state the
//! windows; each run writes its own file; `latest` names the newest.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use common::{secret_env, wait_settled, Fleet};
use pagefleet_shared::model::{ExportState, DEFAULT_TENANT};
use pagefleet_shared::schedule::{CatchUpPolicy, OverlapPolicy, ScheduleSpec};
use pagefleet_shared::spec::ExportSpec;
use pagefleet_tests::mock::{MockConfig, MockServer};

const LOOKBACK: i64 = 5;

fn spec(mock: &MockServer, token_var: &str, start: OffsetDateTime) -> ExportSpec {
    let toml = format!(
        r#"name = "changes"
primary_key = ["id"]
page_size = 5

[source]
base_url = "{base}"
path = "/changes"
records_path = "data"
auth = {{ type = "bearer", secret = {{ env = "{token_var}" }} }}

[pagination]
style = "last_record"
param = "starting_after"
field = "id"
has_more_path = "has_more"

[rate_limit]
rate = 6
burst = 1

[incremental]
cursor_field = "updated_at"
format = "rfc3339"
since_param = "updated_since"
until_param = "updated_until"
start = "{start}"
lookback = {LOOKBACK}
lag_s = 1

[output]
dir = "changes/{{date}}"
file = "changes-{{window_start}}.csv"
latest = "changes/latest.json"
"#,
        base = mock.base_url(),
        start = start.format(&Rfc3339).unwrap(),
    );
    ExportSpec::from_toml(&toml).unwrap()
}

/// One finished run: its export, its window's upper bound, its file.
struct Run {
    export: Uuid,
    upper: i64,
    from: i64,
    csv: PathBuf,
}

async fn run_now(fleet: &Fleet, during: impl FnOnce()) -> Run {
    let ran = fleet.api.run_schedule_now("changes").await.unwrap();
    assert_eq!(ran.outcome, "started");
    let export = ran.export_id.unwrap();
    // Change the source while the run reads it: after its third page.
    let started = std::time::Instant::now();
    loop {
        let status = fleet.api.status(export).await.unwrap();
        if status.pages_landed >= 3 || status.is_settled() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    during();
    let status = wait_settled(&fleet.api, export, Duration::from_secs(120)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    let db = fleet.db().await;
    let row = db
        .query_one(
            "SELECT window_from, window_to FROM schedule_firings WHERE export_id = $1",
            &[&export],
        )
        .await
        .unwrap();
    let csv = fleet
        .root
        .join(DEFAULT_TENANT)
        .join(status.output_path.clone().unwrap());
    Run {
        export,
        from: row.get(0),
        upper: row.get::<_, Option<i64>>(1).unwrap(),
        csv,
    }
}

/// id → (updated_at, rev) of a run's CSV.
fn rows(path: &Path) -> BTreeMap<u64, (String, u64)> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    // An export that found no rows has no columns either.
    let (Some(id), Some(at), Some(rev)) = (col("id"), col("updated_at"), col("rev")) else {
        assert_eq!(reader.records().count(), 0, "rows without the columns");
        return BTreeMap::new();
    };
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (
                r[id].parse().unwrap(),
                (r[at].to_string(), r[rev].parse().unwrap()),
            )
        })
        .collect()
}

async fn watermark(fleet: &Fleet) -> i64 {
    // The watermark moves when the scheduler counts the run (within a
    // firing pass); wait for it.
    let db = fleet.db().await;
    let started = std::time::Instant::now();
    loop {
        let row = db
            .query_one(
                "SELECT s.watermark, bool_and(f.settled) FROM schedules s
                   JOIN schedule_firings f ON f.schedule_id = s.id
                  WHERE s.name = 'changes' GROUP BY s.watermark",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, Option<bool>>(1) == Some(true) {
            return row.get::<_, Option<i64>>(0).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "runs not settled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consecutive_runs_miss_no_change_and_chase_none() {
    let mock = MockServer::start(MockConfig::new(3, 0)).await.unwrap();
    let changes = mock.changes();
    let token = secret_env(DEFAULT_TENANT, &mock.config().token);
    let fleet = Fleet::start(2).await;
    let start = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let schedule = ScheduleSpec {
        name: "changes".into(),
        cron: "0 0 1 1 *".into(),
        time_zone: "UTC".into(),
        overlap: OverlapPolicy::Skip,
        catch_up: CatchUpPolicy::Once,
        catch_up_window_s: 3600,
        pause_after_failures: 3,
        export: spec(&mock, &token, start),
    };
    fleet.api.create_schedule(&schedule).await.unwrap();

    // Run 1: the source is empty; the watermark still reaches the window's
    // upper bound.
    let first = run_now(&fleet, || {}).await;
    assert_eq!(first.from, start.unix_timestamp() - LOOKBACK);
    assert!(rows(&first.csv).is_empty());
    assert_eq!(
        watermark(&fleet).await,
        first.upper,
        "an empty window advances to upper"
    );

    // Between runs: 40 records appear (stamped after run 1's upper bound).
    for id in 1..=40 {
        changes.upsert(id);
    }
    // Whole seconds: let them fall before the next run's upper bound.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Run 2, with records updated (read and not yet read) and inserted
    // while it reads.
    let second = run_now(&fleet, || {
        for id in [2, 25, 39] {
            changes.upsert(id);
        }
        changes.upsert(41);
    })
    .await;
    assert_eq!(second.from, first.upper - LOOKBACK);
    let w2 = watermark(&fleet).await;
    assert!(
        w2 <= second.upper,
        "the watermark is what was seen, not the clock"
    );

    // Between runs: more updates and inserts.
    for id in [5, 10, 25, 42, 43] {
        changes.upsert(id);
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Run 3, with more changes while it reads (of records not changed
    // between the runs: their version at run 3's upper bound is the one
    // run 2 or run 3 read).
    let third = run_now(&fleet, || {
        for id in [1, 30] {
            changes.upsert(id);
        }
        changes.upsert(44);
    })
    .await;
    assert_eq!(
        third.from,
        w2 - LOOKBACK,
        "each window starts at the watermark, less the lookback"
    );

    // The union of the runs, merged by key (later runs win), is the source
    // at run 3's upper bound.
    let mut union = BTreeMap::new();
    for run in [&first, &second, &third] {
        union.extend(rows(&run.csv));
    }
    let truth: BTreeMap<u64, (String, u64)> = changes
        .at(third.upper)
        .into_iter()
        .map(|(id, r)| {
            (
                id,
                (
                    r["updated_at"].as_str().unwrap().to_string(),
                    r["rev"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    let missing: Vec<_> = truth.keys().filter(|id| !union.contains_key(id)).collect();
    assert!(missing.is_empty(), "missing from every run: {missing:?}");
    assert_eq!(
        union, truth,
        "the union is the source at the last upper bound"
    );
    // What changed after run 3's upper bound is the next run's: a record
    // inserted while it read is not in it.
    assert!(
        !rows(&third.csv).contains_key(&44),
        "run 3 chased a change past its upper bound"
    );

    // Each run has its own file and a manifest stating its window; the
    // latest pointer names the last run.
    let files: std::collections::BTreeSet<_> = [&first, &second, &third]
        .iter()
        .map(|r| r.csv.clone())
        .collect();
    assert_eq!(files.len(), 3, "runs do not overwrite each other");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("{}.manifest.json", third.csv.display())).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["window"]["cursor_field"], "updated_at");
    let shown = |t: i64| {
        OffsetDateTime::from_unix_timestamp(t)
            .unwrap()
            .format(&Rfc3339)
            .unwrap()
    };
    assert_eq!(manifest["window"]["from"], shown(third.from));
    assert_eq!(manifest["window"]["to"], shown(third.upper));
    let latest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fleet.root.join(DEFAULT_TENANT).join("changes/latest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(latest["export_id"], third.export.to_string());
    assert!(
        latest["file"]
            .as_str()
            .unwrap()
            .ends_with(third.csv.file_name().unwrap().to_str().unwrap()),
        "{latest}"
    );
    assert!(
        !latest.to_string().contains(fleet.root.to_str().unwrap()),
        "no server path: {latest}"
    );

    // `schedule show` lists the runs with their windows and states.
    let (code, out, err) = fleet.run_cli(&["schedule", "show", "changes"]);
    assert_eq!(code, Some(0), "{err}");
    let window = format!("({}, {}]", shown(third.from), shown(third.upper));
    assert!(out.contains(&window) && out.contains("completed"), "{out}");

    // The same source backfilled through the CLI: the range up to run 3's
    // upper bound in 30-minute windows, one CSV of what it holds now.
    let (code, out, err) = fleet.run_cli(&[
        "schedule",
        "backfill",
        "changes",
        "--from",
        &shown(start.unix_timestamp()),
        "--to",
        &shown(third.upper),
        "--window",
        "30m",
        "--wait",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let backfilled = std::fs::read_dir(fleet.root.join(DEFAULT_TENANT).join("changes"))
        .unwrap()
        .filter_map(|d| d.ok())
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten())
        .filter_map(|f| f.ok())
        .map(|f| f.path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("changes-backfill-") && name.ends_with(".csv")
        })
        .expect("the backfill's CSV");
    let now: BTreeMap<u64, (String, u64)> = changes
        .now()
        .into_iter()
        .filter(|(_, r)| {
            let at = OffsetDateTime::parse(r["updated_at"].as_str().unwrap(), &Rfc3339).unwrap();
            at.unix_timestamp() <= third.upper
        })
        .map(|(id, r)| {
            (
                id,
                (
                    r["updated_at"].as_str().unwrap().to_string(),
                    r["rev"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(
        rows(&backfilled),
        now,
        "the backfill holds the range as the source holds it now"
    );

    fleet.stop().await;
}

/// `examples/incremental.toml`, pointed at this test's mock (seeded with a
/// day of history like `pagefleet-mock`), runs once and exports it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incremental_example_runs_against_the_mock() {
    let mock = MockServer::start(MockConfig::new(3, 0)).await.unwrap();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    mock.changes().seed_history(500, now - 120);
    std::env::set_var("PAGEFLEET_SECRET_default__MOCK_TOKEN", &mock.config().token);
    let fleet = Fleet::start(1).await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("examples/incremental.toml")).unwrap();
    let text = text.replace("http://127.0.0.1:9000", &mock.base_url());
    let spec = ExportSpec::from_toml(&text).unwrap();
    let id = fleet.api.submit(&spec, Some("nightly-1")).await.unwrap().id;
    let status = wait_settled(&fleet.api, id, Duration::from_secs(120)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    // A retry with the same key, later (another window would be pinned
    // now), is the same submission.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = fleet.api.submit(&spec, Some("nightly-1")).await.unwrap();
    assert_eq!((again.id, again.created), (id, false));
    let csv = fleet
        .root
        .join(DEFAULT_TENANT)
        .join(status.output_path.unwrap());
    assert_eq!(
        rows(&csv).len(),
        500,
        "the whole history, stamped before the lag"
    );
    assert!(fleet
        .root
        .join(DEFAULT_TENANT)
        .join("changes/latest.json")
        .is_file());
    fleet.stop().await;
}
