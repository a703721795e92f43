//! The scheduler outlives a broker connection that never comes back.
//!
//! After a RabbitMQ restart, lapin's recovery can reach the broker while it
//! is still starting and wait for a handshake that never comes; the
//! connection then stays `Reconnecting` for good. A proxy in front of the
//! broker reproduces that on demand: it cuts the scheduler's connection and
//! swallows the reconnection. An export submitted meanwhile must still be
//! published by the relay once the scheduler has replaced its connection.

mod common;

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use common::{assert_csv_matches_source, secret_env, spec_toml, Fleet};
use pagefleet_scheduler::broker_watch::RENEW_AFTER;
use pagefleet_shared::model::{ExportState, DEFAULT_TENANT};
use pagefleet_shared::spec::ExportSpec;
use pagefleet_tests::mock::{MockConfig, MockServer, Style};
use pagefleet_tests::tcp_proxy::TcpProxy;
use pagefleet_workers::WorkerOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_publishes_again_after_a_reconnection_that_never_answers() {
    let (seed, records) = (77, 60);
    let mock = MockServer::start(MockConfig::new(seed, records))
        .await
        .unwrap();
    let token = secret_env(DEFAULT_TENANT, &mock.config().token);
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap())
        .await
        .unwrap();
    let proxied = format!("amqp://guest:guest@{}/%2f", proxy.addr());
    // Only the scheduler goes through the proxy; the worker talks to the
    // broker directly and is not what this test is about.
    let fleet = Fleet::start_with(0, |config, _| config.amqp_url = proxied).await;
    let stop_worker = CancellationToken::new();
    let worker = {
        let mut config = fleet.config.clone();
        config.amqp_url = "amqp://guest:guest@127.0.0.1:5672/%2f".into();
        let stop = stop_worker.clone();
        tokio::spawn(async move {
            let options = WorkerOptions {
                name: format!("{}-direct", config.namespace),
                ..WorkerOptions::default()
            };
            pagefleet_workers::run(&config, options, stop).await
        })
    };

    // The scheduler's connection drops; its reconnection is swallowed.
    proxy.cut(1);
    let cut_at = Instant::now();
    let deadline = cut_at + Duration::from_secs(10);
    while proxy.swallowed() == 0 {
        assert!(Instant::now() < deadline, "the scheduler never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let toml = spec_toml("renewal", &mock, Style::Offset, &fleet.out_dir, 20, &token);
    let id = fleet
        .api
        .submit(&ExportSpec::from_toml(&toml).unwrap(), None)
        .await
        .expect("a submit is accepted while the broker is away (the outbox keeps it)")
        .id;
    let status = fleet.wait(id, RENEW_AFTER + Duration::from_secs(60)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    assert!(
        cut_at.elapsed() >= RENEW_AFTER,
        "the export completed before the connection could have been renewed: \
         the reconnection was not the one swallowed"
    );
    assert_csv_matches_source(&fleet.out_dir.join("renewal.csv"), seed, records);

    stop_worker.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), worker).await;
    fleet.stop().await;
}
