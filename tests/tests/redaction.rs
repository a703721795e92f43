//! Nothing leaks: against a leaky source (it echoes our credential in its
//! headers and bodies and signs its next links, which leave the origin), a
//! real export is dead-lettered, and neither the dead letter (through the
//! API and in the `dead_letters` table) nor the export's status carries the
//! credential or the signed value; a second export, with a secret-looking
//! partition parameter, completes, and its manifest and status carry neither
//! that value nor the server's paths. And the fleet's fingerprint key,
//! when none is configured, is one random key every process reads alike.

mod common;

use std::time::Duration;

use common::{create_db, drop_db, isolated_fleet, spec_toml, unique, wait_settled};
use pagefleet_shared::fingerprint::GENERATED_KEY_BYTES;
use pagefleet_shared::model::{DeadLetterClass, ExportState};
use pagefleet_shared::spec::ExportSpec;
use pagefleet_shared::store::Store;
use pagefleet_tests::mock::{MockConfig, MockServer, Style, LEAKED_SIGNATURE};

const PARTITION_SECRET: &str = "PARTITION-SIGNED-VALUE";

/// Fails naming where, when `text` carries any of `secrets`.
fn assert_clean(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{what} carries {secret:?}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaky_source_leaves_no_secret_in_dead_letters_manifests_or_answers() {
    let token = unique("tok-SECRET-");
    let mock = MockServer::start(MockConfig {
        token: token.clone(),
        leaky: true,
        ..MockConfig::new(77, 40)
    })
    .await
    .unwrap();
    let (fleet, token_env) = isolated_fleet(1, &mock).await;
    let (acme, _) = fleet.tenant_client("acme").await;
    let server_dir = fleet.root.display().to_string();
    let secrets = [token.as_str(), LEAKED_SIGNATURE];

    // The chain's first page links off the origin with a signed URL: it is
    // dead-lettered, naming the link without its signature.
    let toml = spec_toml(
        "leaky",
        &mock,
        Style::NextUrl,
        &fleet.out_dir,
        2,
        &token_env,
    );
    let mut spec = ExportSpec::from_toml(&toml).unwrap();
    spec.output.dir = "dead".into();
    let id = acme.submit(&spec, None).await.unwrap().id;
    let status = wait_settled(&acme, id, Duration::from_secs(60)).await;
    assert_eq!(status.state, ExportState::Blocked, "{status:?}");
    assert_clean(
        "the status",
        &serde_json::to_string(&status).unwrap(),
        &secrets,
    );

    let letters = acme.dead_letters(Some(id), true).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.class, DeadLetterClass::BadPage, "{letter:?}");
    assert!(
        letter.reason.contains("signed.invalid") && letter.reason.contains("signature=***"),
        "the refused link is named, redacted: {}",
        letter.reason
    );
    // The source's echoes were there to leak, and were removed.
    assert!(letter.headers.get("x-debug-echo").is_some(), "{letter:?}");
    assert_eq!(letter.headers["x-apikey"], "***");
    assert!(
        (letter.body_excerpt.as_deref()).is_some_and(|b| b.contains("you_sent")),
        "{letter:?}"
    );
    assert_clean(
        "/v1/dlq",
        &serde_json::to_string(&letters).unwrap(),
        &secrets,
    );

    let db = fleet.db().await;
    let rows = db
        .query(
            "SELECT reason, coalesce(body_excerpt, ''), headers::text, attempts::text FROM dead_letters",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    for column in 0..4 {
        let text: String = rows[0].get(column);
        assert_clean("the dead_letters row", &text, &secrets);
    }

    // A completed export with a secret-looking partition parameter: the
    // manifest masks it, and the status names files relative to the
    // tenant's directory.
    let toml = spec_toml(
        "clean",
        &mock,
        Style::Offset,
        &fleet.out_dir,
        10,
        &token_env,
    ) + &format!(
        "\n[[partitions]]\nparams = {{ region = \"eu\", signature = \"{PARTITION_SECRET}\" }}\n"
    );
    let mut spec = ExportSpec::from_toml(&toml).unwrap();
    spec.output.dir = "clean".into();
    let id = acme.submit(&spec, None).await.unwrap().id;
    let status = wait_settled(&acme, id, Duration::from_secs(60)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    assert_eq!(status.output_path.as_deref(), Some("clean/clean.csv"));
    assert_eq!(
        status.manifest_path.as_deref(),
        Some("clean/clean.csv.manifest.json")
    );
    let all = [
        token.as_str(),
        LEAKED_SIGNATURE,
        PARTITION_SECRET,
        &server_dir,
    ];
    assert_clean("the status", &serde_json::to_string(&status).unwrap(), &all);
    let listed = acme.list().await.unwrap();
    assert_clean(
        "the listing",
        &serde_json::to_string(&listed).unwrap(),
        &all,
    );

    let manifest_path = fleet.root.join("acme/clean/clean.csv.manifest.json");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    assert_clean("the manifest", &manifest, &all);
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(manifest["filters"]["partitions"][0]["signature"], "***");
    assert_eq!(manifest["filters"]["partitions"][0]["region"], "eu");

    fleet.stop().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_reads_the_same_generated_fingerprint_key() {
    let (db, url) = create_db("pfkey").await;
    let first = Store::connect(&url, 2).unwrap();
    first.migrate().await.unwrap();
    let second = Store::connect(&url, 2).unwrap();
    // Two processes asking at once: one inserts, both read the winner.
    let (a, b) = tokio::join!(first.fingerprint_key(), second.fingerprint_key());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    assert_eq!(a.as_bytes().len(), GENERATED_KEY_BYTES);
    assert_eq!(
        second.fingerprint_key().await.unwrap(),
        a,
        "kept, not made again"
    );
    assert_eq!(
        a.fingerprint("an api key"),
        b.fingerprint("an api key"),
        "the same bucket name on every worker"
    );
    drop_db(&db).await;
}
