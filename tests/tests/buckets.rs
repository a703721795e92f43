//! A tenant cannot book another tenant's rate-limit bucket ahead. Two
//! tenants export from the same source with the same credential; one asks
//! for a rate of one request in 1,000 s. In a bucket both share, each of its
//! requests would reserve a slot 1,000 s later than the last, and the other
//! tenant's pages would wait behind them for hours. Every bucket is its
//! tenant's own, so the other tenant's export completes at its own rate
//! while the slow one is still waiting, against the real Redis.

mod common;

use std::time::Duration;

use common::{assert_csv_matches_source, secret_env, spec_toml, Fleet};
use pagefleet_shared::model::ExportState;
use pagefleet_shared::spec::ExportSpec;
use pagefleet_tests::mock::{MockConfig, MockServer, Style};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_cannot_book_another_tenant_s_bucket_ahead() {
    let (seed, records) = (71, 200);
    let mock = MockServer::start(MockConfig::new(seed, records))
        .await
        .unwrap();
    let fleet = Fleet::start(2).await;
    let (acme, _) = fleet.tenant_client("acme").await;
    let (globex, _) = fleet.tenant_client("globex").await;
    let spec_for = |tenant: &str, rate: &str, burst: u32| {
        let var = secret_env(tenant, &mock.config().token);
        let toml = spec_toml(tenant, &mock, Style::Offset, &fleet.out_dir, 10, &var);
        let toml = toml.replace(
            &format!("rate = {}\n", mock.config().rate),
            &format!("rate = {rate}\n"),
        );
        let toml = toml.replace(
            &format!("burst = {}\n", mock.config().burst),
            &format!("burst = {burst}\n"),
        );
        assert!(toml.contains(&format!("rate = {rate}\n")), "{toml}");
        assert!(toml.contains(&format!("burst = {burst}\n")), "{toml}");
        let mut spec = ExportSpec::from_toml(&toml).unwrap();
        spec.output.dir = "out".into();
        spec
    };

    // globex first: its burst goes at once, then it reserves slots far out.
    let slow = globex
        .submit(&spec_for("globex", "0.001", 3), None)
        .await
        .unwrap()
        .id;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let id = acme
        .submit(&spec_for("acme", "50", 5), None)
        .await
        .unwrap()
        .id;
    let status = common::wait_settled(&acme, id, Duration::from_secs(90)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    assert_csv_matches_source(&fleet.root.join("acme/out/acme.csv"), seed, records);

    // globex is still held to its own rate: far from done.
    let slow = globex.status(slow).await.unwrap();
    assert_ne!(slow.state, ExportState::Completed, "{slow:?}");
    assert!(slow.pages_landed < slow.pages_planned, "{slow:?}");
    fleet.stop().await;
    mock.shutdown().await;
}
