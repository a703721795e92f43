//! "Completed" means complete: every export is held to what the source
//! says it holds. Against a source that caps its page size, states totals
//! in headers, needs a page parameter on its first request (json-server),
//! lies about its total, or leads its chain in a circle, an export either
//! comes out complete and `completed`, or it is not `completed` and says
//! why. Never a silent shortfall.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{assert_csv_matches_source, assert_manifest, spec_toml, unique, Fleet};
use pagefleet_shared::model::ExportState;
use pagefleet_shared::spec::ExportSpec;
use pagefleet_shared::store::ExportStatus;
use pagefleet_shared::verification::{CheckKind, VerificationStatus};
use pagefleet_tests::mock::{Drift, MockConfig, MockServer, Style, Truth};

const SEED: u64 = 31;

/// One export of `style` from `mock`, with `extra` TOML appended to the
/// spec (sections such as `[verify]`) and `pagination` lines replacing the
/// style's own when given. Returns the settled status and the CSV's path.
async fn export(
    fleet: &Fleet,
    mock: &MockServer,
    style: Style,
    page_size: usize,
    edit: impl FnOnce(String) -> String,
) -> (ExportStatus, PathBuf) {
    let name = unique("complete-");
    let token = common::secret_env("default", &mock.config().token);
    let toml = edit(spec_toml(
        &name,
        mock,
        style,
        &fleet.out_dir,
        page_size,
        &token,
    ));
    let spec = ExportSpec::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let id = fleet.api.submit(&spec, None).await.expect("submit").id;
    let status = fleet.wait(id, Duration::from_secs(180)).await;
    (status, fleet.out_dir.join(format!("{name}.csv")))
}

/// The spec with its `[pagination]` section replaced.
fn with_pagination(toml: String, pagination: &str) -> String {
    let start = toml.find("[pagination]").expect("a pagination section");
    let end = start + toml[start..].find("\n\n").expect("the end of the section");
    format!(
        "{}[pagination]\n{pagination}{}",
        &toml[..start],
        &toml[end..]
    )
}

fn held_path(csv: &Path) -> PathBuf {
    PathBuf::from(format!("{}.unverified", csv.display()))
}

fn assert_completed(status: &ExportStatus) {
    assert_eq!(status.state, ExportState::Completed, "{status:#?}");
}

fn assert_unverified(status: &ExportStatus, csv: &Path, why: &str) {
    assert_eq!(status.state, ExportState::Unverified, "{status:#?}");
    let error = status.error.as_deref().unwrap_or("");
    assert!(error.contains(why), "{why:?} not in {error:?}");
    let verification = status.verification.as_ref().expect("a verification");
    assert_eq!(verification.status, VerificationStatus::Mismatch);
    assert!(!csv.exists(), "nothing may take the final path");
    let held = held_path(csv);
    assert!(held.exists(), "the held file {}", held.display());
    // Shown relative to the tenant's directory, where these tests write.
    let shown = held.file_name().and_then(|n| n.to_str());
    assert_eq!(status.output_path.as_deref(), shown);
    let manifest = format!("{}.manifest.json", held.display());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).expect("the held file's manifest"))
            .expect("manifest JSON");
    assert_eq!(manifest["verification"]["status"], "mismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_capped_page_size_without_a_total_still_exports_everything() {
    // Asked for 100 a page, the source serves 30: every page is short.
    const RECORDS: usize = 500;
    let mut config = MockConfig::new(SEED, RECORDS);
    config.max_page_size = 30;
    let mock = MockServer::start(config).await.unwrap();
    let fleet = Fleet::start(1).await;
    let (status, csv) = export(&fleet, &mock, Style::OffsetNoTotal, 100, |t| t).await;
    assert_completed(&status);
    let bytes = assert_csv_matches_source(&csv, SEED, RECORDS);
    let manifest = assert_manifest(&csv, &bytes, RECORDS);
    // Nothing was stated, and the manifest says so rather than claiming more.
    assert_eq!(manifest["verification"]["status"], "none_stated");
    // 17 pages of 30 (the last holds 20), then the empty page that ends it.
    assert_eq!(status.pages_landed, 18);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn totals_are_checked_and_the_checks_are_in_the_manifest() {
    const RECORDS: usize = 1_000;
    let mock = MockServer::start(MockConfig::new(SEED, RECORDS))
        .await
        .unwrap();
    let fleet = Fleet::start(1).await;
    let (status, csv) = export(&fleet, &mock, Style::Offset, 100, |t| t).await;
    assert_completed(&status);
    let bytes = assert_csv_matches_source(&csv, SEED, RECORDS);
    let manifest = assert_manifest(&csv, &bytes, RECORDS);
    let verification = status.verification.expect("a verification");
    assert_eq!(verification.status, VerificationStatus::Agreed);
    assert_eq!(manifest["verification"]["status"], "agreed");
    let checks: Vec<(CheckKind, &str, u64)> = verification
        .checks
        .iter()
        .map(|c| (c.check, c.origin.as_str(), c.observed))
        .collect();
    assert_eq!(
        checks,
        [
            (CheckKind::Records, "body total", RECORDS as u64),
            (CheckKind::Sentinel, "the page past the stated end", 0),
            (CheckKind::Rows, "all partitions", RECORDS as u64),
        ]
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chain_past_the_page_cap_stops_with_the_reason() {
    let mock = MockServer::start(MockConfig::new(SEED, 1_000))
        .await
        .unwrap();
    let fleet = Fleet::start(1).await;
    let (status, _) = export(&fleet, &mock, Style::Cursor, 100, |t| {
        format!("{t}\n[verify]\nmax_pages_per_partition = 3\n")
    })
    .await;
    assert_eq!(status.state, ExportState::Blocked, "{status:#?}");
    let letters = fleet
        .api
        .dead_letters(Some(status.id), false)
        .await
        .unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(
        letters[0]
            .reason
            .contains("would have 4 pages, more than verify.max_pages_per_partition = 3"),
        "{}",
        letters[0].reason
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn header_totals_fan_out_and_are_checked() {
    const RECORDS: usize = 1_000;
    let mut config = MockConfig::new(SEED, RECORDS);
    config.header_totals = true;
    let mock = MockServer::start(config).await.unwrap();
    let fleet = Fleet::start(1).await;
    // No total in the body: only X-Total-Count and Content-Range say it.
    let (status, csv) = export(&fleet, &mock, Style::OffsetNoTotal, 100, |t| t).await;
    assert_completed(&status);
    assert_csv_matches_source(&csv, SEED, RECORDS);
    // The first page planned the other nine and the sentinel past them.
    assert_eq!(status.pages_landed, 11);
    let verification = status.verification.expect("a verification");
    assert_eq!(verification.status, VerificationStatus::Agreed);
    let origins: Vec<&str> = verification
        .checks
        .iter()
        .map(|c| c.origin.as_str())
        .collect();
    assert_eq!(
        origins,
        [
            "header Content-Range",
            "header X-Total-Count",
            "the page past the stated end",
            "all partitions"
        ]
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_json_server_export_without_its_page_parameter_is_not_completed() {
    const RECORDS: usize = 2_000;
    let mock = MockServer::start(MockConfig::new(SEED, RECORDS))
        .await
        .unwrap();
    let fleet = Fleet::start(1).await;
    let link = "style = \"link_header\"\nsize_param = \"_limit\"\n";
    let (status, csv) = export(&fleet, &mock, Style::JsonServer, 100, |t| {
        with_pagination(t, link)
    })
    .await;
    assert_unverified(
        &status,
        &csv,
        "header X-Total-Count stated 2000 records, its pages delivered 100",
    );
    // Told to send `_page` first, the same export fans out from rel="last".
    let paged = format!("{link}page_param = \"_page\"\nfirst_page = 1\n");
    let (status, csv) = export(&fleet, &mock, Style::JsonServer, 100, |t| {
        with_pagination(t, &paged)
    })
    .await;
    assert_completed(&status);
    assert_csv_matches_source(&csv, SEED, RECORDS);
    assert_eq!(status.pages_landed, 21, "20 pages and the sentinel");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_total_that_lies_is_caught_either_way() {
    const RECORDS: usize = 1_000;
    let fleet = Fleet::start(1).await;

    let mut high = MockConfig::new(SEED, RECORDS);
    high.stated_total = Some(3 * RECORDS);
    let mock = MockServer::start(high).await.unwrap();
    let (status, csv) = export(&fleet, &mock, Style::Offset, 100, |t| t).await;
    assert_unverified(
        &status,
        &csv,
        "body total stated 3000 records, its pages delivered 1000; records are missing",
    );
    // The pages planned past the first empty one were not fetched.
    let fetched = mock.stats().requests as i64;
    println!(
        "a total 3x too high: {fetched} requests for {} pages planned",
        status.pages_planned
    );
    assert!(fetched < status.pages_planned - 10, "{fetched} requests");

    // Too low: the sentinel page past the stated end still held records.
    let mut low = MockConfig::new(SEED, RECORDS);
    low.stated_total = Some(RECORDS / 2);
    let mock = MockServer::start(low).await.unwrap();
    let (status, csv) = export(&fleet, &mock, Style::Offset, 100, |t| t).await;
    assert_unverified(
        &status,
        &csv,
        "body total stated 500 records, its pages delivered 600; the source served more than it stated",
    );
    // A spec that says to publish anyway gets the file, and the warning.
    let (status, csv) = export(&fleet, &mock, Style::Offset, 100, |t| {
        format!("{t}\n[verify]\non_mismatch = \"publish\"\n")
    })
    .await;
    assert_completed(&status);
    assert!(csv.exists());
    let verification = status.verification.expect("a verification");
    assert_eq!(verification.status, VerificationStatus::Mismatch);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.manifest.json", csv.display())).unwrap())
            .unwrap();
    assert_eq!(manifest["verification"]["status"], "mismatch");
    assert!(manifest["verification"]["shortfall"]
        .as_str()
        .is_some_and(|s| s.contains("served more than it stated")));

    // Absurd: more pages than a partition may have are never planned.
    let mut absurd = MockConfig::new(SEED, RECORDS);
    absurd.stated_total = Some(1_000_000_000);
    let mock = MockServer::start(absurd).await.unwrap();
    let (status, _) = export(&fleet, &mock, Style::Offset, 100, |t| t).await;
    assert_eq!(status.state, ExportState::Blocked, "{status:#?}");
    assert_eq!(status.pages_planned, 1, "nothing was fanned out");
    let letters = fleet
        .api
        .dead_letters(Some(status.id), false)
        .await
        .unwrap();
    assert!(
        letters[0]
            .reason
            .contains("fan-out of 10000000 pages is more than the limit"),
        "{}",
        letters[0].reason
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cursor_that_cycles_is_stopped_with_the_reason() {
    let mut config = MockConfig::new(SEED, 1_000);
    config.cursor_cycle = true;
    let mock = MockServer::start(config).await.unwrap();
    let fleet = Fleet::start(1).await;
    let (status, _) = export(&fleet, &mock, Style::Cursor, 100, |t| t).await;
    assert_eq!(status.state, ExportState::Blocked, "{status:#?}");
    // Cursors a → b → c → a: pages 0 to 3 were fetched; page 3 led back to
    // where page 0 did.
    assert_eq!(status.pages_landed, 3);
    let letters = fleet
        .api
        .dead_letters(Some(status.id), false)
        .await
        .unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(
        letters[0].reason.contains(
            "page 3 of partition 0 leads where page 0 already led (the same next position): \
             the source's chain loops"
        ),
        "{}",
        letters[0].reason
    );
    fleet.stop().await;
}

/// The drift the issue asks for: one insert a second, five updates a
/// second, one delete every five seconds, from the first page served.
fn moving_source(records: usize) -> MockConfig {
    let mut config = MockConfig::new(SEED, records);
    config.rate = 50.0;
    config.burst = 10;
    config.header_totals = true;
    config.drift = Some(Drift {
        inserts_per_sec: 1.0,
        updates_per_sec: 5.0,
        deletes_per_sec: 0.2,
    });
    config
}

/// The ids in a published CSV, in file order.
fn csv_ids(csv: &Path) -> Vec<usize> {
    let mut reader = csv::Reader::from_path(csv).expect("the CSV");
    let id = reader
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "id")
        .expect("an id column");
    reader
        .records()
        .map(|r| r.unwrap()[id].parse().unwrap())
        .collect()
}

/// Every record that existed for the whole export is in the file exactly
/// once, and nothing is there that never existed.
fn assert_holds_the_survivors(csv: &Path, truth: &Truth) {
    let ids = csv_ids(csv);
    let unique: BTreeSet<usize> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "a record is in the file twice");
    let missing: Vec<&usize> = truth
        .survivors
        .iter()
        .filter(|id| !unique.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "survivors missing from the file: {missing:?}"
    );
    let ever: BTreeSet<usize> = truth.ever.iter().copied().collect();
    assert!(
        unique.is_subset(&ever),
        "the file holds ids that never existed"
    );
}

async fn export_moving_data(style: Style) {
    const RECORDS: usize = 20_000;
    let mock = MockServer::start(moving_source(RECORDS)).await.unwrap();
    let fleet = Fleet::start(2).await;
    let (status, csv) = export(&fleet, &mock, style, 100, |t| t).await;
    let truth = mock.truth();
    println!(
        "{style:?}: {} inserted, {} updated, {} deleted; {} requests for {} pages, {} re-read",
        truth.inserted,
        truth.updated,
        truth.deleted,
        status.requests,
        status.pages_landed,
        status.verification.as_ref().map_or(0, |v| v.reread_pages)
    );
    assert!(
        truth.deleted > 0 && truth.inserted > 0,
        "the data did move: {truth:?}"
    );
    assert_completed(&status);
    assert_holds_the_survivors(&csv, &truth);
    let verification = status.verification.expect("a verification");
    assert_eq!(
        verification.status,
        VerificationStatus::Agreed,
        "{verification:#?}"
    );
    assert!(
        verification
            .checks
            .iter()
            .any(|c| c.check == CheckKind::Drift),
        "the drift is recorded: {verification:#?}"
    );
    // The backward pass re-read every page that held records, once.
    assert!(verification.reread_pages >= (RECORDS / 100) as u64);
    assert!(verification.reread_pages <= (RECORDS / 100 + 2) as u64);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offset_export_of_moving_data_comes_out_complete() {
    export_moving_data(Style::Offset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_number_export_of_moving_data_comes_out_complete() {
    export_moving_data(Style::Page).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moving_data_under_links_that_may_count_is_not_called_complete() {
    // 100 pages, one at a time: long enough for inserts to move the total.
    let mock = MockServer::start(moving_source(10_000)).await.unwrap();
    let fleet = Fleet::start(1).await;
    let (status, csv) = export(&fleet, &mock, Style::Link, 100, |t| t).await;
    assert!(mock.truth().inserted > 0, "the data did move");
    assert_unverified(&status, &csv, "changed while it was read");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_that_answers_404_past_its_last_page_still_completes() {
    // Django REST Framework's page numbers: the sentinel page is a 404.
    const RECORDS: usize = 1_000;
    let mut config = MockConfig::new(SEED, RECORDS);
    config.not_found_past_the_end = true;
    let mock = MockServer::start(config).await.unwrap();
    let fleet = Fleet::start(1).await;
    let (status, csv) = export(&fleet, &mock, Style::Page, 100, |t| t).await;
    assert_completed(&status);
    assert_csv_matches_source(&csv, SEED, RECORDS);
    assert_eq!(mock.stats().not_found, 1, "the sentinel page, once");
    assert_eq!(status.dead_letters_open, 0);
    fleet.stop().await;
}
