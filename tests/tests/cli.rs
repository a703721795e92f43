//! The operator CLI and the API refuse bad input with errors that name the
//! field, and exit codes that mean something.

mod common;

use std::process::Command;

use std::time::Duration;

use common::{assert_csv_matches_source, cli_bin, isolated_fleet, spec_toml, unique, Fleet};
use pagefleet_tests::mock::{MockConfig, MockServer, Style};

const GOOD: &str = r#"
name = "orders"
primary_key = ["id"]

[source]
base_url = "http://127.0.0.1:9"
path = "/items"
records_path = "data"

[pagination]
style = "offset"

[rate_limit]
rate = 5

[output]
dir = "out"
"#;

fn submit_file(spec: &str, api: &str) -> (i32, String, String) {
    let path = std::env::temp_dir().join(format!("{}.toml", unique("spec-")));
    std::fs::write(&path, spec).unwrap();
    let out = Command::new(cli_bin())
        .args(["--api", api, "submit"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn malformed_specs_are_refused_naming_the_field() {
    // The CLI validates before it talks to anyone: no API is listening here.
    let api = "http://127.0.0.1:9";
    let cases = [
        (
            GOOD.replace("style = \"offset\"", "style = \"telepathy\""),
            "pagination.style",
        ),
        (
            GOOD.replace("primary_key = [\"id\"]", "primary_key = []"),
            "primary_key",
        ),
        (GOOD.replace("primary_key = [\"id\"]\n", ""), "primary_key"),
        (
            GOOD.replace("http://127.0.0.1:9", "not a url"),
            "source.base_url",
        ),
        (GOOD.replace("rate = 5", "rate = -1"), "rate_limit.rate"),
        (
            GOOD.replace("[pagination]\nstyle = \"offset\"\n", ""),
            "pagination",
        ),
        ("name = \"x\"\nthis is not toml".to_string(), "TOML"),
    ];
    for (spec, field) in cases {
        let (code, _, stderr) = submit_file(&spec, api);
        assert_eq!(code, 2, "exit code for a bad `{field}`; stderr: {stderr}");
        assert!(
            stderr.contains(field),
            "stderr should name `{field}`: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn an_unreachable_api_is_a_clear_failure() {
    let (code, _, stderr) = submit_file(GOOD, "http://127.0.0.1:9");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot reach the pagefleet API at http://127.0.0.1:9"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_bad_specs_with_422_and_the_field() {
    let fleet = Fleet::start(0).await;
    let http = reqwest::Client::new();
    let admin = fleet.admin_token.reveal();
    let mut spec: serde_json::Value =
        serde_json::to_value(pagefleet_shared::spec::ExportSpec::from_toml(GOOD).unwrap()).unwrap();
    spec["source"]["base_url"] = "ftp://nope".into();
    let response = http
        .post(format!("{}/v1/exports", fleet.api_url))
        .bearer_auth(admin)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["field"], "source.base_url");
    assert!(body["error"].as_str().unwrap().contains("scheme"));

    let response = http
        .post(format!("{}/v1/exports", fleet.api_url))
        .bearer_auth(admin)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);

    let response = http
        .get(format!("{}/v1/exports/not-an-id", fleet.api_url))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let missing = http
        .get(format!(
            "{}/v1/exports/{}",
            fleet.api_url,
            uuid::Uuid::now_v7()
        ))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let status = fleet
        .cli()
        .args(["status", &uuid::Uuid::now_v7().to_string()])
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(5), "not found");
    let metrics = http
        .get(format!("{}/metrics", fleet.metrics_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Unlabelled metrics are there from the start; those by source key
    // (token waits, request durations) once a source was asked
    // (tests/tests/dashboard.rs).
    for name in [
        "pagefleet_source_429_total",
        "pagefleet_finalize_failures_total",
        "pagefleet_artifacts_held_total",
        "pagefleet_tasks_parked_total",
        "pagefleet_source_pauses_total",
        "pagefleet_retry_budget_denied_total",
        "pagefleet_breaker_open_total",
        "pagefleet_dead_letters_total",
        "pagefleet_rows_replaced_total",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    fleet.stop().await;
}

/// A fleet that isolates tenants resolves a spec's relative `output.dir`
/// under the tenant's directory: the CLI sends it as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_submits_a_relative_output_dir_to_a_fleet_with_an_output_root() {
    let (seed, records) = (43, 150);
    let mock = MockServer::start(MockConfig::new(seed, records))
        .await
        .unwrap();
    let (fleet, token) = isolated_fleet(1, &mock).await;
    let toml = spec_toml("orders", &mock, Style::Offset, &fleet.out_dir, 50, &token).replace(
        &format!("dir = \"{}\"", fleet.out_dir.display()),
        "dir = \"nightly\"",
    );
    assert!(toml.contains("dir = \"nightly\""), "{toml}");
    let spec = fleet.out_dir.join("orders.toml");
    std::fs::write(&spec, toml).unwrap();

    // Tenant acme's own token: the CLI acts for acme without naming it.
    let (_, acme_token) = fleet.tenant_client("acme").await;
    let mut cli = fleet.cli();
    cli.env("PAGEFLEET_TOKEN", acme_token.reveal())
        .arg("submit")
        .arg(&spec)
        .arg("--wait");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || cli.output().unwrap()),
    )
    .await
    .expect("submit --wait did not finish in 120 s")
    .unwrap();
    let said = format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("completed"),
        "{said}"
    );
    let csv = fleet.root.join("acme/nightly/orders.csv");
    assert_csv_matches_source(&csv, seed, records);
    fleet.stop().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_a_tenant_chose_cannot_drive_the_operator_s_terminal() {
    // A name that would clear the screen and retitle the terminal.
    let fleet = Fleet::start(0).await;
    let spec = GOOD
        .replace(
            "name = \"orders\"",
            r#"name = "orders\u001b[2J\u001b]0;pwned\u0007""#,
        )
        .replace("dir = \"out\"", "dir = \"out\"\nfile = \"orders.csv\"");
    let spec = pagefleet_shared::spec::ExportSpec::from_toml(&spec).unwrap();
    let id = fleet.api.submit(&spec, None).await.unwrap().id;
    for args in [
        vec!["ls".to_string()],
        vec!["status".to_string(), id.to_string()],
    ] {
        let out = fleet.cli().args(&args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(
            !stdout.contains('\u{1b}') && !stdout.contains('\u{7}'),
            "{args:?}: {stdout:?}"
        );
        assert!(
            stdout.contains("orders\\u{1b}[2J\\u{1b}]0;pwned\\u{7}"),
            "{args:?}: {stdout}"
        );
    }
    fleet.stop().await;
}
