//! The README's command blocks work when pasted. "Running it yourself" is
//! run here as written, with bash, from the repository's root, against the
//! local services (only the database and the namespace are private to this
//! test, through the variables the README documents); every other `sh`
//! block is one `.ci/run` runs itself, and the README's spec parses.

mod common;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_csv_matches_source, assert_manifest, create_db, drop_db, unique};
use pagefleet_shared::queue::Broker;
use pagefleet_shared::ratelimit::RateLimiter;
use pagefleet_shared::spec::ExportSpec;

/// The mock's defaults, which the walkthrough leaves as they are.
const MOCK_SEED: u64 = 42;
const MOCK_RECORDS: usize = 10_000;
const WALKTHROUGH: &str = "## Running it yourself";
const LIMIT: Duration = Duration::from_secs(600);

fn repo_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::canonicalize(&root).unwrap_or(root)
}

fn readme() -> String {
    std::fs::read_to_string(repo_root().join("README.md")).expect("README.md")
}

/// The fenced blocks of `text` with their info string, in order, each with
/// the heading it stands under.
fn fenced_blocks(text: &str) -> Vec<(String, String, String)> {
    let mut blocks = Vec::new();
    let mut heading = String::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        match &mut open {
            Some((info, body)) => {
                if line.trim_end() == "```" {
                    blocks.push((heading.clone(), info.clone(), std::mem::take(body)));
                    open = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
            None if line.starts_with("```") => {
                open = Some((
                    line.trim_start_matches('`').trim().to_string(),
                    String::new(),
                ));
            }
            None if line.starts_with('#') => heading = line.trim().to_string(),
            None => {}
        }
    }
    assert!(open.is_none(), "README.md has an unclosed code block");
    blocks
}

#[test]
fn every_shell_block_is_run_by_ci_or_by_this_test() {
    let ci = std::fs::read_to_string(repo_root().join(".ci/run")).expect(".ci/run");
    let shell: Vec<_> = fenced_blocks(&readme())
        .into_iter()
        .filter(|(_, info, _)| info == "sh")
        .collect();
    let (_, _, first) = &shell[0];
    for command in ["make demo", "make test"] {
        assert!(
            first.contains(command),
            "the README starts with `{command}`"
        );
        assert!(ci.contains(command), ".ci/run runs `{command}`");
    }
    let others: Vec<_> = shell[1..].iter().map(|(h, _, _)| h.as_str()).collect();
    assert_eq!(
        others,
        [WALKTHROUGH],
        "a new `sh` block in the README needs a test that runs it"
    );
}

#[test]
fn the_config_in_the_readme_parses() {
    let configs: Vec<_> = fenced_blocks(&readme())
        .into_iter()
        .filter(|(_, info, _)| info == "toml config")
        .collect();
    assert!(!configs.is_empty(), "the README shows a config file");
    for (heading, _, text) in configs {
        let config: pagefleet_shared::config::ServiceConfig = toml::from_str(&text)
            .unwrap_or_else(|e| panic!("the config under {heading:?} does not parse: {e}"));
        if let Err(e) = config.validate() {
            panic!("the config under {heading:?} is refused: {e}");
        }
    }
}

#[test]
fn the_spec_in_the_readme_parses() {
    let specs: Vec<_> = fenced_blocks(&readme())
        .into_iter()
        .filter(|(_, info, _)| info == "toml")
        .collect();
    assert!(!specs.is_empty(), "the README shows a spec");
    for (heading, _, toml) in specs {
        if let Err(e) = ExportSpec::from_toml(&toml) {
            panic!("the spec under {heading:?} does not parse: {e}");
        }
    }
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// SIGTERM to every process the block started (its process group).
fn stop_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{pgid}")])
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_it_yourself_works_as_written() {
    for port in [8080, 9000] {
        assert!(
            port_is_free(port),
            "port {port} is taken; the README's walkthrough needs it"
        );
    }
    let (_, block) = fenced_blocks(&readme())
        .into_iter()
        .find(|(heading, info, _)| heading == WALKTHROUGH && info == "sh")
        .map(|(h, _, b)| (h, b))
        .expect("the README has a walkthrough block");
    let root = repo_root();
    let csv = root.join("out/default/orders-cursor.csv");
    let manifest = PathBuf::from(format!("{}.manifest.json", csv.display()));
    for stale in [&csv, &manifest] {
        let _ = std::fs::remove_file(stale);
    }
    let (db, url) = create_db("readme").await;
    let namespace = unique("readme-");

    let mut child = Command::new("bash")
        .args(["-eu", "-c", &block])
        .current_dir(&root)
        .env("PAGEFLEET_DATABASE_URL", &url)
        .env("PAGEFLEET_NAMESPACE", &namespace)
        .env_remove("PAGEFLEET_OUTPUT_ROOT")
        .env_remove("PAGEFLEET_API")
        .env_remove("PAGEFLEET_TOKEN")
        .env_remove("PAGEFLEET_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("bash");
    let pgid = child.id();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for bash") {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stop_group(pgid);
    let output = child.wait_with_output().expect("bash output");
    let said = format!(
        "stdout:\n{}\nstderr:\n{}\nlogs: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        root.join("out").display()
    );
    let status = status.unwrap_or_else(|| panic!("the walkthrough ran over {LIMIT:?}\n{said}"));
    assert!(status.success(), "the walkthrough failed: {status}\n{said}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("state     completed"), "{said}");
    assert!(
        stdout.contains("csv       orders-cursor.csv\n"),
        "the CLI names the CSV in the tenant's directory, not the server's path\n{said}"
    );

    let bytes = assert_csv_matches_source(&csv, MOCK_SEED, MOCK_RECORDS);
    assert_manifest(&csv, &bytes, MOCK_RECORDS);
    if let Ok(broker) = Broker::connect("amqp://guest:guest@127.0.0.1:5672/%2f", &namespace).await {
        let _ = broker.delete_queues().await;
        broker.close().await;
    }
    if let Ok(limiter) = RateLimiter::new("redis://127.0.0.1:6379", &namespace) {
        let _ = limiter.clear().await;
    }
    drop_db(&db).await;
}
