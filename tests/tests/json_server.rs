//! Against a real peer: json-server 0.17.4 (npm), the "fake REST API" many
//! teams prototype on. Its list endpoint pages with `_page` and `_limit`,
//! states `X-Total-Count` on every answer, and links first/next/last pages —
//! but a request without `_page` gets one page and no links at all. An
//! export that forgets `_page` must not be called complete; one that sends
//! it fans out from `Link rel="last"` and is verified against the total.
//!
//! Runs wherever `node` is; `make test` installs json-server first
//! (`tests/peers/json-server`). Without `node` it says so and passes.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{unique, Fleet};
use pagefleet_shared::model::ExportState;
use pagefleet_shared::verification::{CheckKind, VerificationStatus};
use serde_json::{json, Value};

/// Records json-server serves; `JSON_SERVER_RECORDS` sets another number
/// (336776 reproduces the case that once came out short and `completed`).
fn records() -> usize {
    std::env::var("JSON_SERVER_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000)
}

/// A running json-server, killed on drop.
struct JsonServer {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for JsonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/json-server")
}

fn node_is_here() -> bool {
    Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The records json-server serves: text that needs quoting, and numbers
/// JavaScript keeps exact.
fn record(id: usize) -> Value {
    json!({
        "id": id,
        "name": format!("item \"{id}\", with a comma"),
        "amount": (id * 37) % 1000,
    })
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

async fn start_json_server() -> Option<JsonServer> {
    if !node_is_here() {
        eprintln!("json_server: `node` is not on this machine; skipping the json-server peer test");
        return None;
    }
    let cli = peer_dir().join("node_modules/json-server/lib/cli/bin.js");
    assert!(
        cli.exists(),
        "json-server is not installed: run `make peers` (npm ci in {})",
        peer_dir().display()
    );
    let dir = TempDir(std::env::temp_dir().join(unique("json-server-")));
    std::fs::create_dir_all(&dir.0).unwrap();
    let items: Vec<Value> = (1..=records()).map(record).collect();
    let db = dir.0.join("db.json");
    std::fs::write(&db, serde_json::to_vec(&json!({ "items": items })).unwrap()).unwrap();
    let port = free_port();
    let child = Command::new("node")
        .arg(&cli)
        .args([
            "--port",
            &port.to_string(),
            "--host",
            "127.0.0.1",
            "--quiet",
        ])
        .arg(&db)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start json-server");
    let server = JsonServer {
        child,
        port,
        _dir: dir,
    };
    wait_until_up(port).await;
    Some(server)
}

async fn wait_until_up(port: u16) {
    let url = format!("http://127.0.0.1:{port}/items?_limit=1");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("json-server did not answer on port {port} within 30 s");
}

fn spec(name: &str, port: u16, out: &Path, pagination: &str) -> String {
    format!(
        r#"name = "{name}"
primary_key = ["id"]
page_size = 500

[source]
base_url = "http://127.0.0.1:{port}"
path = "/items"

[pagination]
style = "link_header"
size_param = "_limit"
{pagination}

[rate_limit]
rate = 200
burst = 20

[output]
dir = "{out}"
"#,
        out = out.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_export_that_forgets_the_page_parameter_is_unverified_not_completed() {
    let Some(server) = start_json_server().await else {
        return;
    };
    let fleet = Fleet::start(1).await;
    let name = unique("json-server-limit-only-");
    let path = fleet.out_dir.join(format!("{name}.toml"));
    std::fs::write(&path, spec(&name, server.port, &fleet.out_dir, "")).unwrap();
    let out = fleet
        .cli()
        .args(["submit", "--wait"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "exit code; stderr: {stderr}");
    assert!(
        stderr.contains(&format!(
            "header X-Total-Count stated {} records, its pages delivered 500",
            records()
        )),
        "{stderr}"
    );
    let csv = fleet.out_dir.join(format!("{name}.csv"));
    assert!(!csv.exists(), "a short file must not take the final path");
    let held = std::fs::read_to_string(format!("{}.unverified", csv.display())).unwrap();
    assert_eq!(held.lines().count(), 1 + 500, "the header and the one page");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_parameter_fans_out_from_the_last_link_and_agrees_with_the_total() {
    let Some(server) = start_json_server().await else {
        return;
    };
    let fleet = Fleet::start(2).await;
    let name = unique("json-server-paged-");
    let toml = spec(
        &name,
        server.port,
        &fleet.out_dir,
        "page_param = \"_page\"\nfirst_page = 1",
    );
    let spec = pagefleet_shared::spec::ExportSpec::from_toml(&toml).unwrap();
    let id = fleet.api.submit(&spec, None).await.unwrap().id;
    let status = fleet.wait(id, Duration::from_secs(180)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:#?}");
    // Pages of 500, and the sentinel page past the last, all planned by
    // the first page.
    assert_eq!(status.pages_landed as usize, records().div_ceil(500) + 1);
    let verification = status.verification.expect("a verification");
    assert_eq!(verification.status, VerificationStatus::Agreed);
    assert_eq!(verification.source_total, Some(records() as u64));
    let checked: Vec<(CheckKind, &str)> = verification
        .checks
        .iter()
        .map(|c| (c.check, c.origin.as_str()))
        .collect();
    assert!(checked.contains(&(CheckKind::Records, "header X-Total-Count")));
    assert!(checked.contains(&(CheckKind::Pages, "header Link rel=\"last\"")));

    let csv = fleet.out_dir.join(format!("{name}.csv"));
    let mut reader = csv::Reader::from_path(&csv).unwrap();
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["amount", "id", "name"]
    );
    // Rows come in key order, and numeric keys order as numbers.
    let expected = 1..=records();
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), records(), "every record exactly once");
    for (row, id) in rows.iter().zip(expected) {
        let want = record(id);
        assert_eq!(row[1].parse::<usize>().unwrap(), id);
        assert_eq!(&row[0], want["amount"].to_string());
        assert_eq!(&row[2], want["name"].as_str().unwrap());
    }
    fleet.stop().await;
}
