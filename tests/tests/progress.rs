//! `status` says how far an export is, when it will be done and where its
//! time goes, against the real services: a source that allows 8 requests
//! a second bounds an export of 31 pages, the ETA says so, and the time
//! breakdown names the rate-limit wait as the biggest share.

mod common;

use std::time::{Duration, Instant};

use common::{spec_toml, Fleet};
use pagefleet_shared::model::ExportState;
use pagefleet_tests::mock::{MockConfig, MockServer, Style};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_shows_the_eta_and_that_the_source_rate_is_what_takes_the_time() {
    const RECORDS: usize = 600;
    let mut config = MockConfig::new(71, RECORDS);
    config.rate = 8.0;
    config.burst = 1;
    let mock = MockServer::start(config).await.unwrap();
    let token = common::secret_env("default", &mock.config().token);
    let fleet = Fleet::start(2).await;
    // The CLI is built (or found up to date) before anything is timed.
    common::cli_bin();
    let toml = spec_toml("paced", &mock, Style::Offset, &fleet.out_dir, 20, &token);
    let id = fleet.submit_toml(&toml).await;

    // Mid-export, once the fan-out is known and a few pages landed.
    let started = Instant::now();
    let status = loop {
        let status = fleet.api.status(id).await.unwrap();
        if status.pages_total_known && status.pages_landed >= 8 {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status.state, ExportState::Running);
    let eta = status
        .progress
        .eta
        .expect("an ETA once the pages are known");
    let remaining = status.pages_planned - status.pages_landed;
    assert_eq!(eta.pages_remaining, remaining);
    // The pace can be no faster than the source's 8 requests a second.
    assert!(eta.pages_per_s <= 8.0 && eta.pages_per_s > 0.0, "{eta:?}");
    assert!(
        eta.seconds >= remaining as f64 / 8.0,
        "{eta:?} for {remaining} pages"
    );
    let time = status.progress.time;
    assert!(
        time.waiting_for_tokens_s + time.parked_s > time.fetching_s,
        "the rate, not the source's answers, takes the time: {time:?}"
    );
    // The rate it names is the one the fleet runs at: 8/s as the spec
    // states, or less once a 429 taught it lower.
    let why = status.progress.why_slow.clone().unwrap_or_default();
    let rate = status.progress.source_rate.unwrap();
    assert!(rate > 0.0 && rate <= 8.0, "{:?}", status.progress);
    assert!(why.contains("bounds this export"), "{why}");
    assert!(why.contains("the source's rate ("), "{why}");
    let (code, out, err) = fleet.run_cli(&["status", &id.to_string()]);
    assert_eq!(code, Some(0), "{err}");
    for line in [
        "eta       ",
        "page(s) left at",
        "time      fetching",
        "why slow  ",
        "rate      ",
    ] {
        assert!(out.contains(line), "{line:?} in {out}");
    }

    // `watch` follows it to the end, printing the ETA as it goes.
    let (code, _, err) = fleet.run_cli(&["watch", &id.to_string()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains(", eta "), "{err}");
    let status = fleet.api.status(id).await.unwrap();
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    assert_eq!(status.progress.eta, None, "no ETA once it ended");
    assert!(
        status.progress.time.finalizing_s > 0.0,
        "{:?}",
        status.progress
    );
    assert!(status.progress.time.fetching_s > 0.0);
    fleet.stop().await;
    mock.shutdown().await;
}
