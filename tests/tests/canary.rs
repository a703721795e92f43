//! The canary: a full export with a recognisable secret, through seeded
//! faults (5xx, resets, 429s), a dead letter and a replay, against a source
//! that echoes the credential back in headers and bodies. Afterwards every
//! table of the fleet's database, every log line the fleet wrote (at debug
//! level), every file under the output root, every API answer, every Redis
//! key and value of the fleet's namespace and the metrics are searched for
//! the secret, the header value built from it, and the fleet's
//! fingerprint input. None may hold any of them.
//!
//! This binary holds one test: it installs the process's log subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{secret_env, spec_toml, Fleet};
use pagefleet_shared::model::ExportState;
use pagefleet_shared::spec::ExportSpec;
use pagefleet_tests::mock::{Faults, MockConfig, MockServer, Style};

/// Every log line of this process, kept for the search.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("log buffer poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn assert_absent(what: &str, text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            !text.contains(needle),
            "{what} holds {needle:?}:\n{}",
            excerpt(text, needle)
        );
    }
}

fn excerpt(text: &str, needle: &str) -> String {
    let at = text.find(needle).unwrap_or(0);
    let start = text[..at]
        .char_indices()
        .rev()
        .nth(200)
        .map_or(0, |(i, _)| i);
    text[start..].chars().take(400 + needle.len()).collect()
}

/// Every row of every table of the fleet's database, as text.
async fn dump_database(fleet: &Fleet) -> String {
    let db = fleet.db().await;
    let tables: Vec<String> = db
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.len() > 5, "{tables:?}");
    let mut dump = String::new();
    for table in tables {
        let row = db
            .query_one(
                &format!("SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM \"{table}\" t"),
                &[],
            )
            .await
            .unwrap();
        let text: String = row.get(0);
        dump.push_str(&format!("== {table}\n{text}\n"));
    }
    dump
}

/// Every key and value of the fleet's namespace in Redis.
async fn dump_redis(fleet: &Fleet) -> String {
    let client = redis::Client::open(fleet.config.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", fleet.config.namespace))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut dump = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let value: Vec<String> = match kind.as_str() {
            "hash" => redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "string" => vec![redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap()],
            _ => Vec::new(),
        };
        dump.push_str(&format!("{key} {kind} {value:?}\n"));
    }
    dump
}

/// Every file under `dir`, as text.
fn dump_files(dir: &std::path::Path) -> String {
    let mut dump = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                dump.push_str(&format!(
                    "== {}\n{}\n",
                    path.display(),
                    String::from_utf8_lossy(&bytes)
                ));
            }
        }
    }
    dump
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_is_found_anywhere_after_an_export_through_faults_dead_letters_and_a_replay() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    const RECORDS: usize = 1_200;
    let secret = format!("CANARY-{}-SECRET", uuid::Uuid::now_v7().simple());
    let mut config = MockConfig {
        token: secret.clone(),
        leaky: true,
        // Often enough that a 60-page export meets several of each.
        faults: Faults {
            p_429: 0.15,
            p_500: 0.1,
            ..Faults::standard()
        },
        ..MockConfig::new(61, RECORDS)
    };
    config.fail_record = Some(555);
    let mock = MockServer::start(config).await.unwrap();
    let fleet = Fleet::start(2).await;
    let (acme, _) = fleet.tenant_client("acme").await;
    let var = secret_env("acme", &secret);
    let mut spec = ExportSpec::from_toml(&spec_toml(
        "canary",
        &mock,
        Style::Offset,
        &fleet.out_dir,
        20,
        &var,
    ))
    .unwrap();
    spec.output.dir = "canary".into();
    let id = acme.submit(&spec, None).await.unwrap().id;

    // The page holding record 555 answers 404: a dead letter.
    let status = common::wait_settled(&acme, id, Duration::from_secs(180)).await;
    assert_eq!(status.state, ExportState::Blocked, "{status:?}");
    let letters = acme.dead_letters(Some(id), true).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let mut answers = vec![
        serde_json::to_string(&status).unwrap(),
        serde_json::to_string(&letters).unwrap(),
    ];

    // Replayed once the source is fixed: the export completes.
    mock.set_fail_record(None);
    let replayed = acme.replay(None, Some(id)).await.unwrap();
    assert_eq!(replayed.replayed.len(), 1);
    let status = common::wait_settled(&acme, id, Duration::from_secs(180)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    let stats = mock.stats();
    assert!(
        status.retries > 0 && status.rate_limited > 0,
        "the faults were meant to cause retries and 429s: {status:?}"
    );
    assert!(stats.requests > 12, "{stats:?}");
    common::assert_csv_matches_source(&fleet.root.join("acme/canary/canary.csv"), 61, RECORDS);

    answers.push(serde_json::to_string(&status).unwrap());
    answers.push(serde_json::to_string(&acme.list().await.unwrap()).unwrap());
    answers.push(serde_json::to_string(&acme.dead_letters(None, true).await.unwrap()).unwrap());
    answers.push(serde_json::to_string(&fleet.api.tokens().await.unwrap()).unwrap());
    let metrics = reqwest::get(format!("{}/metrics", fleet.metrics_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let bearer = format!("Bearer {secret}");
    let needles = [secret.as_str(), bearer.as_str()];
    let log_text = logs.text();
    assert!(
        log_text.contains(&id.to_string()),
        "the logs were captured: {} bytes",
        log_text.len()
    );
    assert_absent("the logs", &log_text, &needles);
    assert_absent("the database", &dump_database(&fleet).await, &needles);
    assert_absent("Redis", &dump_redis(&fleet).await, &needles);
    assert_absent("the output files", &dump_files(&fleet.root), &needles);
    assert_absent("the API's answers", &answers.join("\n"), &needles);
    assert_absent("the metrics", &metrics, &needles);
    // The source did echo it: the search would have found a leak.
    assert!(mock.config().leaky);
    fleet.stop().await;
    mock.shutdown().await;
}
