//! The outbound address policy against the real services: a spec cannot
//! make the fleet fetch its own scheduler API, the cloud metadata service,
//! or anywhere a source points, and read the answer back from the dead
//! letters; a source the operator allowed still exports.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_csv_matches_source, spec_toml, unique, Fleet};
use pagefleet_scheduler::client::ClientError;
use pagefleet_shared::model::{DeadLetterClass, ExportState};
use pagefleet_shared::spec::ExportSpec;
use pagefleet_shared::store::{DeadLetter, Store};
use pagefleet_tests::mock::{MockConfig, MockServer, Style};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

fn token_env(mock: &MockServer) -> String {
    common::secret_env("default", &mock.config().token)
}

/// A fleet that may reach only these mocks: its allow-list names their
/// addresses (127.0.0.1 and the port), nothing else on loopback.
async fn fleet_for(mocks: &[&MockServer]) -> Fleet {
    let allow: Vec<String> = mocks.iter().map(|m| m.addr().to_string()).collect();
    Fleet::start_with(1, move |config, _| config.outbound_allow = allow).await
}

/// A spec against `mock`'s offset style with its base URL and path replaced
/// and few retries, so that an old fleet gives up quickly.
fn spec_at(
    fleet: &Fleet,
    mock: &MockServer,
    token: &str,
    base_url: &str,
    path: &str,
) -> ExportSpec {
    let toml = spec_toml(
        &unique("outbound"),
        mock,
        Style::Offset,
        &fleet.out_dir,
        50,
        token,
    );
    let mut spec = ExportSpec::from_toml(&toml).unwrap();
    spec.source.base_url = base_url.to_string();
    spec.source.path = path.to_string();
    spec.retry.max_attempts = 2;
    spec
}

/// A listener that counts the connections made to it (and answers none).
async fn canary() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (format!("http://{addr}"), hits)
}

/// The export's dead letters, as its tenant reads them through the API.
async fn letters(fleet: &Fleet, id: Uuid) -> Vec<DeadLetter> {
    fleet.api.dead_letters(Some(id), true).await.unwrap()
}

/// Nothing of the scheduler's answers (its metrics, its JSON) is in a
/// dead letter.
fn assert_holds_nothing_of_the_scheduler(letter: &DeadLetter) {
    let all = serde_json::to_string(letter).unwrap();
    for sign in ["# HELP", "# TYPE", "pagefleet_", "\"error\""] {
        assert!(!all.contains(sign), "{sign:?} in the dead letter: {all}");
    }
    assert_eq!(letter.body_excerpt, None, "{letter:?}");
    assert_eq!(letter.last_status, None, "{letter:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_cannot_reach_what_the_policy_refuses() {
    let (seed, records) = (23, 120);
    let mock = MockServer::start(MockConfig::new(seed, records))
        .await
        .unwrap();
    let token = token_env(&mock);
    let fleet = fleet_for(&[&mock]).await;
    let scheduler_port = fleet.api_url.rsplit(':').next().unwrap().to_string();

    // (a) Addresses the URL alone gives away are refused at submit: the
    // fleet's own API (as an address, as `localhost`, in its IPv6 form)
    // and the cloud metadata service.
    for (base, says) in [
        (fleet.api_url.clone(), "is loopback"),
        (
            format!("http://localhost:{scheduler_port}"),
            "localhost resolves to an address that is loopback",
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{scheduler_port}"),
            "is loopback",
        ),
        ("http://169.254.169.254".to_string(), "is link-local"),
        (
            format!("http://127.0.0.2:{}", mock.addr().port()),
            "is loopback",
        ),
    ] {
        let spec = spec_at(&fleet, &mock, &token, &base, "/metrics");
        match fleet.api.submit(&spec, None).await {
            Err(ClientError::Refused {
                status,
                message,
                field,
            }) => {
                assert_eq!(status, 422, "{base}: {message}");
                assert_eq!(field.as_deref(), Some("source.base_url"), "{base}");
                assert!(message.contains(says), "{base}: {message}");
                assert!(message.contains("outbound_allow"), "{base}: {message}");
            }
            other => panic!("{base} was not refused at submit: {other:?}"),
        }
    }

    // (b) A spec that reached the store anyway (submitted before the
    // policy, say) is refused by the worker: dead-lettered at once, naming
    // the host and why, with nothing of the scheduler's answer.
    let store = Store::connect(&fleet.config.database_url, 2).unwrap();
    let spec = spec_at(
        &fleet,
        &mock,
        &token,
        &format!("http://localhost:{scheduler_port}"),
        "/metrics",
    );
    let id = store
        .submit_export("default", None, &spec)
        .await
        .unwrap()
        .id;
    let status = fleet.wait(id, WAIT).await;
    assert_ne!(status.state, ExportState::Completed, "{status:?}");
    let dead = letters(&fleet, id).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].class, DeadLetterClass::Refused, "{dead:?}");
    let reason = &dead[0].reason;
    assert!(
        reason.contains("localhost resolves to an address that is loopback"),
        "{reason}"
    );
    assert_holds_nothing_of_the_scheduler(&dead[0]);
    assert_eq!(status.requests, 0, "nothing was sent: {status:?}");

    // (d) The source the operator allowed still exports, completely.
    let toml = spec_toml("allowed", &mock, Style::Offset, &fleet.out_dir, 50, &token);
    let spec = ExportSpec::from_toml(&toml).unwrap();
    let id = fleet.api.submit(&spec, None).await.unwrap().id;
    let status = fleet.wait(id, WAIT).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    assert_csv_matches_source(&fleet.out_dir.join("allowed.csv"), seed, records);

    fleet.stop().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_cannot_point_the_fleet_elsewhere() {
    // (c) A source whose next URL points at an address the fleet may not
    // reach: the page that handed it out is dead-lettered, naming the URL,
    // and nothing connects there.
    let (target, hits) = canary().await;
    let mut config = MockConfig::new(5, 120);
    config.next_url = Some(format!("{target}/steal?after=50&limit=50"));
    let mock = MockServer::start(config).await.unwrap();
    let token = token_env(&mock);
    let fleet = fleet_for(&[&mock]).await;
    let toml = spec_toml("pointed", &mock, Style::NextUrl, &fleet.out_dir, 50, &token);
    let spec = ExportSpec::from_toml(&toml).unwrap();
    let id = fleet.api.submit(&spec, None).await.unwrap().id;
    let status = fleet.wait(id, WAIT).await;
    assert_ne!(status.state, ExportState::Completed, "{status:?}");
    let dead = letters(&fleet, id).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = &dead[0].reason;
    assert!(reason.contains(&format!("{target}/steal")), "{reason}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the fleet connected to {target}"
    );
    fleet.stop().await;
    mock.shutdown().await;
}
