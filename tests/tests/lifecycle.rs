//! An operator's actions on running exports, against the real services:
//! pause stops the fetching (pages in flight still land) and resume picks
//! it up to a complete CSV; cancel stops an export for good, publishes
//! nothing and keeps its staged rows; an action that does not apply to the
//! export's state is refused, naming it; each action has its audit row.

mod common;

use std::time::{Duration, Instant};

use common::{assert_csv_matches_source, spec_toml, Fleet};
use pagefleet_shared::model::ExportState;
use pagefleet_tests::mock::{MockConfig, MockServer, Style};
use uuid::Uuid;

/// Waits until the export has landed at least `pages`.
async fn landed_at_least(fleet: &Fleet, id: Uuid, pages: i64) {
    let started = Instant::now();
    loop {
        let status = fleet.api.status(id).await.unwrap();
        if status.pages_landed >= pages {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pages landed, once they stop moving: a page in flight when the export
/// was paused or cancelled may still land, then nothing does.
async fn landed_once_still(fleet: &Fleet, id: Uuid) -> i64 {
    let mut last = -1;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = fleet.api.status(id).await.unwrap().pages_landed;
        if now == last {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_stops_fetching_resume_finishes_and_cancel_ends_without_a_csv() {
    const RECORDS: usize = 2_000;
    let mut config = MockConfig::new(41, RECORDS);
    // Slow enough to act mid-export: 40 pages at 10 requests/s.
    config.rate = 10.0;
    config.burst = 2;
    let mock = MockServer::start(config).await.unwrap();
    let token = common::secret_env("default", &mock.config().token);
    let fleet = Fleet::start(2).await;
    // The CLI is built (or found up to date) before anything is timed.
    common::cli_bin();
    let paused = fleet
        .submit_toml(&spec_toml(
            "paused",
            &mock,
            Style::Cursor,
            &fleet.out_dir,
            50,
            &token,
        ))
        .await;
    landed_at_least(&fleet, paused, 4).await;
    let arg = paused.to_string();
    let (code, out, err) = fleet.run_cli(&["pause", &arg]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("→ paused"), "{out}");
    let still = landed_once_still(&fleet, paused).await;
    let requests = mock.stats().requests;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = fleet.api.status(paused).await.unwrap();
    assert_eq!(status.state, ExportState::Paused);
    assert_eq!(status.pages_landed, still, "nothing lands while paused");
    assert_eq!(
        mock.stats().requests,
        requests,
        "nothing is fetched while paused"
    );
    assert!(still < 40, "paused mid-export: {still} of 40 pages");
    let (code, _, _) = fleet.run_cli(&["watch", &arg]);
    assert_eq!(code, Some(8), "watch says paused");
    let (code, _, err) = fleet.run_cli(&["pause", &arg]);
    assert_eq!(code, Some(9), "a paused export cannot be paused: {err}");
    assert!(
        err.contains("cannot pause an export that is paused"),
        "{err}"
    );

    let (code, out, err) = fleet.run_cli(&["resume", &arg]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("paused → running"), "{out}");
    let status = fleet.wait(paused, Duration::from_secs(120)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    assert_csv_matches_source(&fleet.out_dir.join("paused.csv"), 41, RECORDS);
    // Downloaded, byte for byte, its digest checked.
    let saved = fleet.out_dir.join("downloaded.csv");
    let (code, out, err) = fleet.run_cli(&["download", &arg, "-o", saved.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("(as the export states)"), "{out}");
    assert_eq!(
        std::fs::read(&saved).unwrap(),
        std::fs::read(fleet.out_dir.join("paused.csv")).unwrap()
    );

    // A pause reaches a page that is retrying through an outage: it stops
    // within a heartbeat instead of retrying on.
    mock.set_outage(true);
    let retrying = fleet
        .submit_toml(&spec_toml(
            "retrying",
            &mock,
            Style::Cursor,
            &fleet.out_dir,
            50,
            &token,
        ))
        .await;
    let before = mock.stats().requests;
    let started = Instant::now();
    while mock.stats().requests < before + 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no retries seen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _, err) = fleet.run_cli(&["pause", &retrying.to_string()]);
    assert_eq!(code, Some(0), "{err}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after_pause = mock.stats().requests;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        mock.stats().requests,
        after_pause,
        "a paused page stops retrying"
    );
    mock.set_outage(false);
    let (code, _, err) = fleet.run_cli(&["resume", &retrying.to_string()]);
    assert_eq!(code, Some(0), "{err}");
    let status = fleet.wait(retrying, Duration::from_secs(120)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");

    // Cancel, mid-export.
    let cancelled = fleet
        .submit_toml(&spec_toml(
            "cancelled",
            &mock,
            Style::Offset,
            &fleet.out_dir,
            50,
            &token,
        ))
        .await;
    landed_at_least(&fleet, cancelled, 3).await;
    let arg = cancelled.to_string();
    let (code, out, err) = fleet.run_cli(&["cancel", &arg]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("→ cancelled"), "{out}");
    let still = landed_once_still(&fleet, cancelled).await;
    let status = fleet.api.status(cancelled).await.unwrap();
    assert_eq!(status.state, ExportState::Cancelled);
    assert!(status.pages_landed < status.pages_planned, "{status:?}");
    assert_eq!(status.pages_landed, still);
    assert!(
        status
            .error
            .as_deref()
            .unwrap_or("")
            .starts_with("cancelled by admin"),
        "{status:?}"
    );
    assert!(
        !fleet.out_dir.join("cancelled.csv").exists(),
        "no CSV for a cancelled export"
    );
    let staged: i64 = fleet
        .db()
        .await
        .query_one(
            "SELECT count(*) AS n FROM staged_rows WHERE export_id = $1",
            &[&cancelled],
        )
        .await
        .unwrap()
        .get("n");
    assert!(staged > 0, "staging is kept for inspection");
    let (code, _, err) = fleet.run_cli(&["cancel", &arg]);
    assert_eq!(code, Some(9), "{err}");
    assert!(err.contains("it has ended"), "{err}");
    let (code, _, err) = fleet.run_cli(&["download", &arg]);
    assert_eq!(code, Some(2), "a cancelled export has no CSV: {err}");
    assert!(err.contains("only a published CSV is downloaded"), "{err}");
    let (code, _, _) = fleet.run_cli(&["resume", &Uuid::now_v7().to_string()]);
    assert_eq!(code, Some(5), "an unknown export is not found");

    // `ls` filters by state, name, source and age.
    let listed = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["ls", "--json"];
        all.extend_from_slice(args);
        let (code, out, err) = fleet.run_cli(&all);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        let exports: serde_json::Value = serde_json::from_str(&out).unwrap();
        (exports.as_array().unwrap().iter())
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed(&["--state", "cancelled"]), vec!["cancelled"]);
    assert_eq!(listed(&["--name", "paus"]), vec!["paused"]);
    assert_eq!(listed(&["--newer-than", "1h"]).len(), 3);
    assert!(listed(&["--older-than", "1h"]).is_empty());
    assert_eq!(listed(&["--source", &mock.base_url()]).len(), 3);
    assert!(listed(&["--source", "https://elsewhere.example"]).is_empty());
    let (code, _, err) = fleet.run_cli(&["ls", "--newer-than", "2w"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("newer_than"), "{err}");

    let audit: serde_json::Value = {
        let (_, out, _) = fleet.run_cli(&["audit", "ls", "--json"]);
        serde_json::from_str(&out).unwrap()
    };
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["outcome"]["to"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("export.cancel", "cancelled"),
            ("export.resume", "running"),
            ("export.pause", "paused"),
            ("export.resume", "running"),
            ("export.pause", "paused"),
        ],
        "refused actions are not actions"
    );
    fleet.stop().await;
    mock.shutdown().await;
}
