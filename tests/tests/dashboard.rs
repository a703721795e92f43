//! The metrics a team runs on, scraped from `/metrics` while exports run:
//! each moves as it should (pages landing, requests timed by source,
//! token waits, tasks in flight, exports by state, dead letters, a failed
//! finalize, a held file), and every metric the Grafana dashboard and the
//! Prometheus alert rules in `deploy/` name is one the fleet exports.
//! Its own test binary: the process-wide registry holds only its exports.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{spec_toml, Fleet};
use pagefleet_shared::model::ExportState;
use pagefleet_tests::mock::{Faults, MockConfig, MockServer, Style};

/// Every sample: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    (text.lines())
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(series, value)| Some((series.to_string(), value.parse().ok()?)))
        .collect()
}

/// The sum of a metric's samples whose labels contain `labels`.
fn value(samples: &BTreeMap<String, f64>, name: &str, labels: &str) -> f64 {
    (samples.iter())
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name && rest.contains(labels)
        })
        .map(|(_, v)| v)
        .sum()
}

/// Names of the metric families the fleet exports (`# TYPE` lines).
fn exported(text: &str) -> BTreeSet<String> {
    (text.lines())
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

/// `pagefleet_*` names in a query, histogram series folded into their family.
fn metric_names(query: &str, into: &mut BTreeSet<String>) {
    let mut rest = query;
    while let Some(at) = rest.find("pagefleet_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        into.insert(family.to_string());
        rest = &tail[end..];
    }
}

/// Every metric the dashboard's panels and the alert rules query.
fn named_in_deploy() -> BTreeSet<String> {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(deploy.join("grafana/pagefleet.json")).unwrap())
            .expect("the dashboard is JSON");
    let mut names = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{}", panels.len());
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            metric_names(target["expr"].as_str().expect("an expr"), &mut names);
        }
    }
    let alerts = std::fs::read_to_string(deploy.join("prometheus/alerts.yml")).unwrap();
    let exprs: Vec<&str> = (alerts.lines())
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .collect();
    let alert_names: Vec<&str> = (alerts.lines())
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    for wanted in [
        "PagefleetDeadLettersGrowing",
        "PagefleetHigh429Share",
        "PagefleetExportStalled",
        "PagefleetFinalizeFailed",
    ] {
        assert!(alert_names.contains(&wanted), "{wanted} in {alert_names:?}");
    }
    assert_eq!(exprs.len(), alert_names.len(), "one expr per alert");
    for expr in exprs {
        metric_names(expr, &mut names);
    }
    names
}

async fn scrape(fleet: &Fleet) -> String {
    reqwest::get(format!("{}/metrics", fleet.metrics_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_metrics_move_with_the_exports_and_the_dashboard_names_only_real_ones() {
    // 120 pages at 30 requests/s: several gauge refreshes while it runs.
    let mut config = MockConfig::new(61, 3_000);
    config.rate = 30.0;
    config.burst = 5;
    config.faults = Faults {
        p_429: 0.05,
        p_500: 0.05,
        ..Faults::none()
    };
    let mock = MockServer::start(config).await.unwrap();
    mock.set_fail_records(vec![2_500]);
    let token = common::secret_env("default", &mock.config().token);
    let fleet = Fleet::start(2).await;
    let blocked = fleet
        .submit_toml(&spec_toml(
            "metered",
            &mock,
            Style::Offset,
            Path::new("metered"),
            50,
            &token,
        ))
        .await;

    // Scraped while it runs: pages land, requests are timed, tasks are
    // out at some point.
    let mut landed = Vec::new();
    let mut tasks_out = 0.0f64;
    let started = Instant::now();
    loop {
        let m = samples(&scrape(&fleet).await);
        landed.push(value(&m, "pagefleet_pages_landed_total", ""));
        let out = value(&m, "pagefleet_page_tasks", "state=\"queued\"")
            + value(&m, "pagefleet_page_tasks", "state=\"in_flight\"")
            + value(&m, "pagefleet_queue_depth", "queue=\"pages\"");
        tasks_out = tasks_out.max(out);
        if fleet.api.status(blocked).await.unwrap().is_settled() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "still running"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let status = fleet.api.status(blocked).await.unwrap();
    assert_eq!(status.state, ExportState::Blocked, "{status:?}");
    assert!(
        tasks_out > 0.0,
        "tasks were queued or in flight at some scrape"
    );
    let first = landed.first().copied().unwrap_or(0.0);
    let last = landed.last().copied().unwrap_or(0.0);
    assert!(
        last > first && landed.windows(2).all(|w| w[1] >= w[0]),
        "{landed:?}"
    );

    // A finalize that fails (the output directory is a link out of the
    // tenant's) and a file held as unverified (a source whose total lies).
    mock.set_fail_records(Vec::new());
    let elsewhere = fleet.out_dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(fleet.root.join("default")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, fleet.root.join("default/link")).unwrap();
    let failing = fleet
        .submit_toml(&spec_toml(
            "failing",
            &mock,
            Style::Cursor,
            Path::new("link"),
            100,
            &token,
        ))
        .await;
    let mut lying = MockConfig::new(62, 300);
    lying.stated_total = Some(250);
    let liar = MockServer::start(lying).await.unwrap();
    let liar_token = common::secret_env("default", &liar.config().token);
    let held = fleet
        .submit_toml(&spec_toml(
            "held",
            &liar,
            Style::Offset,
            Path::new("held"),
            50,
            &liar_token,
        ))
        .await;
    for (id, state) in [
        (failing, ExportState::Failed),
        (held, ExportState::Unverified),
    ] {
        let status = fleet.wait(id, Duration::from_secs(120)).await;
        assert_eq!(status.state, state, "{status:?}");
    }

    // The gauges catch up within a refresh or two.
    let started = Instant::now();
    let (m, text) = loop {
        let text = scrape(&fleet).await;
        let m = samples(&text);
        let settled = value(&m, "pagefleet_exports", "state=\"blocked\"") == 1.0
            && value(&m, "pagefleet_exports", "state=\"failed\"") == 1.0
            && value(&m, "pagefleet_exports", "state=\"unverified\"") == 1.0;
        if settled {
            break (m, text);
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(value(&m, "pagefleet_dead_letters_open", ""), 1.0, "{text}");
    assert_eq!(
        value(&m, "pagefleet_page_tasks", "state=\"dead\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(&m, "pagefleet_finalize_failures_total", ""),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(&m, "pagefleet_artifacts_held_total", ""),
        1.0,
        "{text}"
    );
    let export = format!("export=\"{blocked}\"");
    assert_eq!(
        value(&m, "pagefleet_export_pages_remaining", &export),
        1.0,
        "the dead page"
    );
    assert_eq!(
        value(&m, "pagefleet_export_retries", &export),
        status.retries as f64,
        "{text}"
    );
    assert_eq!(
        value(&m, "pagefleet_export_rate_limited", &export),
        status.rate_limited as f64
    );
    assert!(status.rate_limited > 0 && status.retries > 0, "{status:?}");
    for ended in [failing, held] {
        let label = format!("export=\"{ended}\"");
        assert_eq!(
            value(&m, "pagefleet_export_pages_remaining", &label),
            0.0,
            "ended: no series"
        );
    }
    let timed = value(&m, "pagefleet_source_request_duration_seconds_count", "");
    let requests = value(&m, "pagefleet_source_requests_total", "");
    assert_eq!(timed, requests, "every request is timed by source: {text}");
    assert!(
        value(&m, "pagefleet_token_wait_seconds_count", "source=") > 0.0,
        "{text}"
    );
    assert!(
        text.contains("pagefleet_source_request_duration_seconds_bucket{source="),
        "{text}"
    );

    // Every metric the dashboard and the alerts name is exported.
    let families = exported(&text);
    let named = named_in_deploy();
    assert!(named.len() >= 15, "{named:?}");
    let missing: Vec<&String> = named.iter().filter(|n| !families.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "named in deploy/ but not exported: {missing:?}"
    );

    // An operator's retry finalizes the failed export once its directory
    // is a real one again.
    std::fs::remove_file(fleet.root.join("default/link")).unwrap();
    let (code, out, err) = fleet.run_cli(&["retry", &failing.to_string()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("failed → finalizing"), "{out}");
    let status = fleet.wait(failing, Duration::from_secs(60)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    fleet.stop().await;
    mock.shutdown().await;
    liar.shutdown().await;
}
