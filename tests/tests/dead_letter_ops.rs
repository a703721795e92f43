//! The operator's dead-letter tools against the real services, through the
//! `pagefleet` CLI as an operator runs it: a filter that finds a set of
//! letters (with counts and a shared fingerprint), a dry run that changes
//! nothing, the replay that follows it, a second replay that does nothing;
//! an edited replay that splits a failing backfill window; a discard that
//! publishes only once the gaps are accepted, listing them in the manifest;
//! and an audit row for each action.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{assert_csv_matches_source, isolated_fleet, spec_toml, Fleet};
use pagefleet_shared::model::ExportState;
use pagefleet_shared::spec::ExportSpec;
use pagefleet_tests::mock::{MockConfig, MockServer, Style};
use serde_json::Value;

fn token_env(mock: &MockServer) -> String {
    common::secret_env("default", &mock.config().token)
}

/// Runs the CLI with `--json`; its exit code and parsed output.
fn cli_json(fleet: &Fleet, args: &[&str]) -> (Option<i32>, Value) {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let (code, out, err) = fleet.run_cli(&with_json);
    let value = serde_json::from_str(&out).unwrap_or(Value::String(err));
    (code, value)
}

fn ok_json(fleet: &Fleet, args: &[&str]) -> Value {
    let (code, value) = cli_json(fleet, args);
    assert_eq!(code, Some(0), "pagefleet {args:?}: {value}");
    value
}

async fn requests(mock: &MockServer) -> u64 {
    mock.stats().requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_filtered_set_of_dead_letters_is_priced_dry_then_replayed_once() {
    const RECORDS: usize = 1_000;
    let mut config = MockConfig::new(31, RECORDS);
    // Records 150, 450 and 850: pages 1, 4 and 8 of the offset export (and
    // pages of the cursor one) answer 404.
    config.rate = 200.0;
    let mock = MockServer::start(config).await.unwrap();
    mock.set_fail_records(vec![150, 450, 850]);
    let token = token_env(&mock);
    let fleet = Fleet::start(2).await;
    let offset = fleet
        .submit_toml(&spec_toml(
            "ops-offset",
            &mock,
            Style::Offset,
            &fleet.out_dir,
            100,
            &token,
        ))
        .await;
    let cursor = fleet
        .submit_toml(&spec_toml(
            "ops-cursor",
            &mock,
            Style::Cursor,
            &fleet.out_dir,
            100,
            &token,
        ))
        .await;
    for id in [offset, cursor] {
        let status = fleet.wait(id, Duration::from_secs(120)).await;
        assert_eq!(status.state, ExportState::Blocked, "{status:?}");
    }

    // The filter finds the offset export's three, counted by class, with
    // one fingerprint: one endpoint failing one way.
    let offset_arg = offset.to_string();
    let page = ok_json(
        &fleet,
        &[
            "dlq",
            "ls",
            "--export",
            &offset_arg,
            "--class",
            "permanent",
            "--status",
            "404",
        ],
    );
    assert_eq!(page["total"], 3, "{page}");
    assert_eq!(page["by_class"]["permanent"], 3);
    let letters = page["letters"].as_array().unwrap();
    let pages: BTreeSet<i64> = letters
        .iter()
        .map(|l| l["page_no"].as_i64().unwrap())
        .collect();
    assert_eq!(pages, BTreeSet::from([1, 4, 8]));
    let fingerprints: BTreeSet<&str> = letters
        .iter()
        .map(|l| l["fingerprint"].as_str().unwrap())
        .collect();
    assert_eq!(fingerprints.len(), 1, "{fingerprints:?}");
    let fingerprint = fingerprints.into_iter().next().unwrap();
    let same = ok_json(&fleet, &["dlq", "ls", "--fingerprint", fingerprint]);
    assert_eq!(
        same["total"], 3,
        "the cursor export's letters fail elsewhere: {same}"
    );
    let everything = ok_json(&fleet, &["dlq", "ls"]);
    assert!(everything["total"].as_i64().unwrap() >= 4, "{everything}");
    let paged = ok_json(&fleet, &["dlq", "ls", "--limit", "2"]);
    assert_eq!(paged["letters"].as_array().unwrap().len(), 2);
    let next = paged["next_before"].as_str().expect("a next page");
    let rest = ok_json(&fleet, &["dlq", "ls", "--limit", "500", "--before", next]);
    assert_eq!(
        rest["letters"].as_array().unwrap().len() + 2,
        everything["letters"].as_array().unwrap().len()
    );

    // One letter whole: its request without the token, its attempt.
    let id = letters[0]["id"].as_str().unwrap();
    let shown = ok_json(&fleet, &["dlq", "show", id]);
    let url = shown["request"]["url"].as_str().unwrap();
    assert!(url.contains("/offset/items"), "{url}");
    assert!(
        !shown.to_string().contains(&mock.config().token),
        "no secret in a letter"
    );
    assert_eq!(shown["request"]["headers"]["authorization"], "***");
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.last().unwrap()["status"], 404, "{attempts:?}");

    // The dry run prices the three and changes nothing.
    let before = requests(&mock).await;
    let dry = ok_json(
        &fleet,
        &["dlq", "replay", "--export", &offset_arg, "--dry-run"],
    );
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["pages"].as_array().unwrap().len(), 3);
    assert_eq!(dry["requests_at_least"], 3);
    assert!(dry["seconds_at_least"].as_f64().unwrap() > 0.0, "{dry}");
    let dry_id = dry["audit_id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(requests(&mock).await, before, "a dry run sends nothing");
    let still = ok_json(&fleet, &["dlq", "ls", "--export", &offset_arg]);
    assert_eq!(still["total"], 3, "a dry run resolves nothing");
    let status = fleet.api.status(offset).await.unwrap();
    assert_eq!(status.state, ExportState::Blocked);

    // A replay that claims to follow the dry run but takes other pages is
    // refused.
    let (code, refused) = cli_json(&fleet, &["dlq", "replay", id, "--follows", &dry_id]);
    assert_eq!(code, Some(2), "{refused}");
    assert!(
        refused.to_string().contains("changed since dry run"),
        "{refused}"
    );

    // The source is fixed; the replay that follows the dry run lands them.
    mock.set_fail_records(Vec::new());
    let replayed = ok_json(
        &fleet,
        &[
            "dlq",
            "replay",
            "--export",
            &offset_arg,
            "--follows",
            &dry_id,
        ],
    );
    assert_eq!(replayed["dry_run"], false);
    assert_eq!(replayed["pages"].as_array().unwrap().len(), 3);
    let status = fleet.wait(offset, Duration::from_secs(120)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    assert_csv_matches_source(&fleet.out_dir.join("ops-offset.csv"), 31, RECORDS);

    // A second replay finds nothing to do.
    let (code, out, _) = fleet.run_cli(&["dlq", "replay", "--export", &offset_arg]);
    assert_eq!(code, Some(0));
    assert!(out.contains("nothing to replay"), "{out}");

    // Everything else, by `--all`: the cursor export's page.
    let rest = ok_json(&fleet, &["dlq", "replay", "--all"]);
    assert_eq!(rest["pages"].as_array().unwrap().len(), 1, "{rest}");
    let status = fleet.wait(cursor, Duration::from_secs(120)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");

    // Every action has its audit row, the replay naming its dry run.
    let audit = ok_json(&fleet, &["audit", "ls", "--action", "dlq.replay"]);
    let rows = audit.as_array().unwrap();
    assert_eq!(
        rows.len(),
        4,
        "dry run, the one refused is not an action, replay, nothing, all: {audit}"
    );
    let replay_row = rows
        .iter()
        .find(|r| r["follows"].as_str() == Some(dry_id.as_str()))
        .expect("the replay's row names its dry run");
    assert_eq!(replay_row["dry_run"], false);
    assert_eq!(replay_row["actor"], "admin (bootstrap token)");
    assert_eq!(replay_row["outcome"]["pages"].as_array().unwrap().len(), 3);
    let dry_row = rows
        .iter()
        .find(|r| r["id"].as_str() == Some(&dry_id))
        .unwrap();
    assert_eq!(dry_row["dry_run"], true);
    assert_eq!(dry_row["target"]["filter"]["export"], offset_arg.as_str());
    fleet.stop().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discarded_pages_publish_only_as_accepted_gaps_listed_in_the_manifest() {
    const RECORDS: usize = 1_000;
    let mock = MockServer::start(MockConfig::new(32, RECORDS))
        .await
        .unwrap();
    mock.set_fail_records(vec![250, 650]);
    let token = token_env(&mock);
    let fleet = Fleet::start(2).await;
    let toml = spec_toml("gaps", &mock, Style::Offset, &fleet.out_dir, 100, &token);
    let export = fleet.submit_toml(&toml).await;
    let status = fleet.wait(export, Duration::from_secs(120)).await;
    assert_eq!(status.state, ExportState::Blocked, "{status:?}");
    let export_arg = export.to_string();
    let page = ok_json(&fleet, &["dlq", "ls", "--export", &export_arg]);
    let letters = page["letters"].as_array().unwrap();
    assert_eq!(letters.len(), 2);
    let first = letters.iter().find(|l| l["page_no"] == 2).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // A discard needs a reason; one page discarded without accepting the
    // gap leaves the export blocked, and says so.
    let (code, _, err) = fleet.run_cli(&["dlq", "discard", &first]);
    assert_eq!(
        code,
        Some(2),
        "clap refuses a discard without --reason: {err}"
    );
    ok_json(
        &fleet,
        &[
            "dlq",
            "discard",
            &first,
            "--reason",
            "records 201-300 were purged upstream",
        ],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = fleet.api.status(export).await.unwrap();
    assert_eq!(status.state, ExportState::Blocked, "{status:?}");
    assert_eq!((status.pages_discarded, status.accept_gaps), (1, false));
    assert!(!fleet.out_dir.join("gaps.csv").exists());
    let (_, shown, _) = fleet.run_cli(&["status", &export_arg]);
    assert!(
        shown.contains("1 discarded page(s), not accepted"),
        "{shown}"
    );

    // The other, its gap accepted: the first still holds the export back
    // (an acceptance covers the pages it names, not those before it).
    let done = ok_json(
        &fleet,
        &[
            "dlq",
            "discard",
            "--export",
            &export_arg,
            "--reason",
            "records 601-700 were purged upstream",
            "--accept-gaps",
        ],
    );
    assert_eq!(done["pages"].as_array().unwrap().len(), 1, "{done}");
    let (code, _, err) = fleet.run_cli(&["watch", &export_arg]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("2 page(s) were discarded and not every gap is accepted"),
        "{err}"
    );
    assert!(!fleet.out_dir.join("gaps.csv").exists());

    // Accepting the export's gaps publishes it, completed with gaps.
    let (code, out, err) = fleet.run_cli(&["accept-gaps", &export_arg]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("blocked → finalizing"), "{out}");
    let (code, _, err) = fleet.run_cli(&["accept-gaps", &export_arg]);
    assert_eq!(code, Some(9), "nothing left to accept: {err}");
    let (code, _, err) = fleet.run_cli(&["watch", &export_arg]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("2 discarded page(s) as accepted gaps"),
        "{err}"
    );
    let status = fleet.api.status(export).await.unwrap();
    assert_eq!(status.state, ExportState::CompletedWithGaps, "{status:?}");

    let csv = fleet.out_dir.join("gaps.csv");
    let mut reader = csv::Reader::from_path(&csv).unwrap();
    let id_column = (reader.headers().unwrap().iter())
        .position(|h| h == "id")
        .unwrap();
    let ids: BTreeSet<usize> = reader
        .records()
        .map(|r| r.unwrap()[id_column].parse().unwrap())
        .collect();
    let expected: BTreeSet<usize> = (1..=RECORDS)
        .filter(|id| !(201..=300).contains(id) && !(601..=700).contains(id))
        .collect();
    assert_eq!(ids, expected, "every record but the two discarded pages'");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(fleet.out_dir.join("gaps.csv.manifest.json")).unwrap(),
    )
    .unwrap();
    let gaps = manifest["gaps"]
        .as_array()
        .expect("the manifest lists the gaps");
    let listed: Vec<(i64, &str)> = gaps
        .iter()
        .map(|g| (g["page"].as_i64().unwrap(), g["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        vec![
            (2, "records 201-300 were purged upstream"),
            (6, "records 601-700 were purged upstream"),
        ]
    );
    for gap in gaps {
        assert_eq!(gap["discarded_by"], "admin (bootstrap token)");
        assert_eq!(gap["class"], "permanent");
    }
    // The shortfall is not hidden: the verification still says it.
    assert_eq!(manifest["verification"]["status"], "mismatch", "{manifest}");

    let audit = ok_json(&fleet, &["audit", "ls", "--action", "dlq.discard"]);
    let rows = audit.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{audit}");
    assert_eq!(rows[0]["target"]["accept_gaps"], true);
    assert_eq!(
        rows[1]["target"]["reason"],
        "records 201-300 were purged upstream"
    );
    fleet.stop().await;
    mock.shutdown().await;
}

/// Records in each hour of a three-hour range; the middle hour is dense.
fn per_hour(hour: i64) -> i64 {
    if hour == 1 {
        100
    } else {
        20
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edited_replay_splits_a_window_the_source_cannot_serve_whole() {
    let mock = MockServer::start(MockConfig::new(33, 0)).await.unwrap();
    let start = time::macros::datetime!(2025-03-01 00:00 UTC).unix_timestamp();
    let mut id = 0;
    for hour in 0..3 {
        let n = per_hour(hour);
        for j in 0..n {
            id += 1;
            mock.changes()
                .upsert_at(id, start + hour * 3600 + 1 + j * 3599 / n);
        }
    }
    // The source refuses offsets past 60, and the spec does not know it:
    // the dense hour's pages at 80 and 100 die.
    mock.changes().set_max_offset(Some(60));
    let (fleet, token) = isolated_fleet(2, &mock).await;
    let (acme, _) = fleet.tenant_client("acme").await;
    let toml = format!(
        r#"name = "dense"
primary_key = ["id"]
page_size = 20

[source]
base_url = "{base}"
path = "/changes"
records_path = "data"
auth = {{ type = "bearer", secret = {{ env = "{token}" }} }}

[pagination]
style = "offset"
total_path = "total"

[rate_limit]
rate = 200
burst = 20

[backfill]
from = "2025-03-01T00:00:00Z"
to = "2025-03-01T03:00:00Z"
window = "1h"
format = "rfc3339"
since_param = "updated_since"
until_param = "updated_until"

[output]
dir = "dense"
"#,
        base = mock.base_url()
    );
    let spec = ExportSpec::from_toml(&toml).unwrap();
    let export = acme.submit(&spec, None).await.unwrap().id;
    let status = common::wait_settled(&acme, export, Duration::from_secs(120)).await;
    assert_eq!(status.state, ExportState::Blocked, "{status:?}");
    let export_arg = export.to_string();
    let as_acme = |args: &[&str]| {
        let mut all = vec!["--tenant", "acme"];
        all.extend_from_slice(args);
        ok_json(&fleet, &all)
    };
    let page = as_acme(&["dlq", "ls", "--export", &export_arg, "--status", "400"]);
    assert_eq!(
        page["total"], 2,
        "offsets 80 and 100 of the dense hour: {page}"
    );

    // A page size is refused for a fanned-out page, naming why.
    let (code, refused) = cli_json(
        &fleet,
        &[
            "--tenant",
            "acme",
            "dlq",
            "replay",
            "--export",
            &export_arg,
            "--set",
            "page_size=10",
        ],
    );
    assert_eq!(code, Some(2), "{refused}");
    assert!(refused.to_string().contains("chain page only"), "{refused}");

    let dry = as_acme(&[
        "dlq",
        "replay",
        "--export",
        &export_arg,
        "--set",
        "window=split",
        "--dry-run",
    ]);
    let halves = &dry["pages"][0]["split_into"];
    assert_eq!(halves[0]["updated_since"], "2025-03-01T01:00:00Z", "{dry}");
    assert_eq!(halves[0]["updated_until"], "2025-03-01T01:30:00Z");
    assert_eq!(halves[1]["updated_until"], "2025-03-01T02:00:00Z");
    let dry_id = dry["audit_id"].as_str().unwrap().to_string();
    let status = acme.status(export).await.unwrap();
    assert_eq!(
        (status.state, status.partitions),
        (ExportState::Blocked, 3),
        "dry: nothing split"
    );

    as_acme(&[
        "dlq",
        "replay",
        "--export",
        &export_arg,
        "--set",
        "window=split",
        "--follows",
        &dry_id,
    ]);
    let status = common::wait_settled(&acme, export, Duration::from_secs(120)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    assert_eq!(status.partitions, 5, "the dense window became two");
    let csv = fleet
        .root
        .join("acme")
        .join(status.output_path.clone().unwrap());
    let mut reader = csv::Reader::from_path(&csv).unwrap();
    let ids: Vec<u64> = reader
        .records()
        .map(|r| r.unwrap()[0].parse().unwrap())
        .collect();
    assert_eq!(ids.len() as u64, id, "no duplicate, none missing");
    assert_eq!(
        ids.iter().copied().collect::<BTreeSet<_>>(),
        (1..=id).collect()
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(format!("{}.manifest.json", csv.display())).unwrap())
            .unwrap();
    assert_eq!(manifest["verification"]["status"], "agreed", "{manifest}");
    let splits = manifest["splits"].as_array().unwrap();
    assert_eq!(splits.len(), 1);
    assert!(splits[0]["reason"]
        .as_str()
        .unwrap()
        .contains("split on replay"));
    let page = as_acme(&["dlq", "ls", "--export", &export_arg]);
    assert_eq!(page["total"], 0, "both letters resolved by the split");
    fleet.stop().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_with_a_rotated_secret_reaches_every_page_the_first_one_fans_out() {
    const RECORDS: usize = 600;
    let mock = MockServer::start(MockConfig::new(34, RECORDS))
        .await
        .unwrap();
    // The spec's key is revoked: the first page is refused (401).
    let revoked = common::secret_env("default", "revoked-key");
    let fleet = Fleet::start(2).await;
    let toml = spec_toml(
        "rotated",
        &mock,
        Style::Offset,
        &fleet.out_dir,
        50,
        &revoked,
    );
    let export = fleet.submit_toml(&toml).await;
    let status = fleet.wait(export, Duration::from_secs(60)).await;
    assert_eq!(status.state, ExportState::Blocked, "{status:?}");
    let export_arg = export.to_string();
    let page = ok_json(&fleet, &["dlq", "ls", "--export", &export_arg]);
    assert_eq!(page["letters"][0]["last_status"], 401, "{page}");

    // A page size would shift the offsets the first page fans out to.
    let (code, refused) = cli_json(
        &fleet,
        &[
            "dlq",
            "replay",
            "--export",
            &export_arg,
            "--set",
            "page_size=100",
        ],
    );
    assert_eq!(code, Some(2), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("positions pages by the export's page size"),
        "{refused}"
    );
    // Another tenant's secret is not this tenant's to name.
    let (code, refused) = cli_json(
        &fleet,
        &[
            "dlq",
            "replay",
            "--export",
            &export_arg,
            "--set",
            "secret.env=PAGEFLEET_SECRET_globex__KEY",
        ],
    );
    assert_eq!(code, Some(2), "{refused}");

    let rotated = common::secret_env("default", &mock.config().token);
    let secret = format!("secret.env={rotated}");
    let replayed = ok_json(
        &fleet,
        &["dlq", "replay", "--export", &export_arg, "--set", &secret],
    );
    assert_eq!(replayed["pages"].as_array().unwrap().len(), 1);
    // Page 0 lands with the new key and fans out 12 pages and a sentinel:
    // they carry it too, or they would die with 401.
    let status = fleet.wait(export, Duration::from_secs(60)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    assert_eq!(status.dead_letters_open, 0);
    assert_csv_matches_source(&fleet.out_dir.join("rotated.csv"), 34, RECORDS);
    let audit = ok_json(&fleet, &["audit", "ls", "--action", "dlq.replay"]);
    let text = audit.to_string();
    assert!(text.contains(&rotated), "the reference is audited: {audit}");
    assert!(!text.contains(&mock.config().token), "never the secret");
    fleet.stop().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tenant_reaches_none_of_the_dead_letters_exports_or_audit() {
    let mock = MockServer::start(MockConfig::new(35, 300)).await.unwrap();
    mock.set_fail_records(vec![120]);
    let (fleet, token) = isolated_fleet(1, &mock).await;
    let (acme, _) = fleet.tenant_client("acme").await;
    let (globex, _) = fleet.tenant_client("globex").await;
    let toml = spec_toml(
        "mine",
        &mock,
        Style::Offset,
        std::path::Path::new("mine"),
        100,
        &token,
    );
    let export = acme
        .submit(&ExportSpec::from_toml(&toml).unwrap(), None)
        .await
        .unwrap()
        .id;
    let status = common::wait_settled(&acme, export, Duration::from_secs(60)).await;
    assert_eq!(status.state, ExportState::Blocked, "{status:?}");
    let letter = acme.dead_letters(Some(export), false).await.unwrap()[0].clone();

    // The other tenant sees nothing and changes nothing.
    let not_found = globex.dead_letter(letter.id).await.unwrap_err();
    assert_eq!(not_found.status(), Some(404), "{not_found}");
    assert!(globex.dead_letters(None, true).await.unwrap().is_empty());
    let request = pagefleet_shared::store::ActionRequest {
        filter: pagefleet_shared::store::DlqFilter {
            export: Some(export),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(globex.dlq_replay(&request).await.unwrap().pages.is_empty());
    let discard = pagefleet_shared::store::ActionRequest {
        reason: Some("not mine".into()),
        ..request.clone()
    };
    assert!(globex.dlq_discard(&discard).await.unwrap().pages.is_empty());
    let mut sink = Vec::new();
    let refused = globex.download(export, &mut sink).await.unwrap_err();
    assert_eq!(refused.status(), Some(404), "{refused}");
    for action in ["cancel", "pause", "resume", "retry", "accept-gaps"] {
        let refused = globex.export_action(export, action).await.unwrap_err();
        assert_eq!(refused.status(), Some(404), "{action}: {refused}");
    }
    // Its own two tries are in its own log, taking nothing; acme's log
    // holds none of them.
    let theirs = globex.audit(None, 500).await.unwrap();
    assert_eq!(theirs.len(), 2, "{theirs:?}");
    assert!(theirs
        .iter()
        .all(|r| r.outcome["pages"] == serde_json::json!([])));
    assert!(
        acme.audit(None, 500).await.unwrap().is_empty(),
        "globex's actions are not acme's"
    );
    let status = acme.status(export).await.unwrap();
    assert_eq!(
        (status.state, status.dead_letters_open),
        (ExportState::Blocked, 1)
    );

    // A reason of blanks is no reason, whatever the client.
    let blank = pagefleet_shared::store::ActionRequest {
        reason: Some("   ".into()),
        ..request.clone()
    };
    let refused = acme.dlq_discard(&blank).await.unwrap_err();
    assert_eq!(refused.status(), Some(422), "{refused}");
    let edits = pagefleet_shared::store::ActionRequest {
        reason: Some("gone".into()),
        set: vec!["page_size=5".into()],
        ..request.clone()
    };
    assert_eq!(
        acme.dlq_discard(&edits).await.unwrap_err().status(),
        Some(422)
    );
    fleet.stop().await;
    mock.shutdown().await;
}
