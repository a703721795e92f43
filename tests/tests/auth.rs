//! The API lets nobody in without a token: every route but `/healthz`
//! answers 401 without one, a tenant's token acts only for its tenant
//! (another tenant's export is a 404, naming another tenant is a 403), only
//! an admin token manages tokens, a revoked token stops working at once,
//! and the store keeps only hashes. Trusting a proxy's tenant header is a
//! flag, off unless asked for; the scheduler's metrics are on their own
//! listener.

mod common;

use std::time::Duration;

use common::{spec_toml, store_spec, unique, Fleet};
use pagefleet_scheduler::admin::CreateToken;
use pagefleet_scheduler::client::ApiClient;
use pagefleet_shared::model::ExportState;
use pagefleet_shared::spec::ExportSpec;
use pagefleet_tests::mock::{MockConfig, MockServer, Style};
use sha2::{Digest, Sha256};

/// Every route of the API, with a method and a body that would be valid.
fn routes(export: &str) -> Vec<(reqwest::Method, String, Option<String>)> {
    use reqwest::Method;
    let spec = serde_json::to_string(&store_spec("unauthorized")).unwrap();
    vec![
        (Method::POST, "/v1/exports".into(), Some(spec)),
        (Method::GET, "/v1/exports".into(), None),
        (Method::GET, format!("/v1/exports/{export}"), None),
        (Method::GET, "/v1/dlq".into(), None),
        (
            Method::POST,
            "/v1/dlq/replay".into(),
            Some(format!(r#"{{"export": "{export}"}}"#)),
        ),
        (
            Method::POST,
            "/v1/admin/tokens".into(),
            Some(r#"{"admin": true}"#.into()),
        ),
        (Method::GET, "/v1/admin/tokens".into(), None),
        (
            Method::DELETE,
            format!("/v1/admin/tokens/{}", uuid::Uuid::now_v7()),
            None,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_but_healthz_answers_without_a_valid_token() {
    let fleet = Fleet::start(0).await;
    let export = fleet
        .api
        .submit(&store_spec("mine"), None)
        .await
        .unwrap()
        .id
        .to_string();
    let http = reqwest::Client::new();
    let garbage = format!("pft_{}", "0".repeat(64));
    for (method, path, body) in routes(&export) {
        for token in [None, Some("not-a-token"), Some(garbage.as_str())] {
            let mut request = http.request(method.clone(), format!("{}{path}", fleet.api_url));
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            if let Some(b) = &body {
                request = request.body(b.clone());
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status().as_u16(),
                401,
                "{method} {path} with {token:?}"
            );
            let text = response.text().await.unwrap();
            assert!(!text.contains("mine"), "{method} {path}: {text}");
        }
        // A tenant header alone is no credential unless the operator says so.
        let mut request = http
            .request(method.clone(), format!("{}{path}", fleet.api_url))
            .header("x-pagefleet-tenant", "default");
        if let Some(b) = &body {
            request = request.body(b.clone());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{method} {path} + header");
    }
    let health = http
        .get(format!("{}/healthz", fleet.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    // Metrics are not on the API's port, but on their own listener.
    let metrics = http
        .get(format!("{}/metrics", fleet.api_url))
        .bearer_auth(fleet.admin_token.reveal())
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status().as_u16(), 404);
    let metrics = http
        .get(format!("{}/metrics", fleet.metrics_url))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    assert!(metrics.text().await.unwrap().contains("pagefleet_"));
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_token_reaches_only_its_tenant_s_exports() {
    let (seed, records) = (51, 90);
    let mock = MockServer::start(MockConfig::new(seed, records))
        .await
        .unwrap();
    let fleet = Fleet::start(1).await;
    let (acme, acme_token) = fleet.tenant_client("acme").await;
    let (globex, _) = fleet.tenant_client("globex").await;
    let secret = format!("PAGEFLEET_SECRET_acme__{}", unique("T"));
    std::env::set_var(&secret, &mock.config().token);
    let mut spec = ExportSpec::from_toml(&spec_toml(
        "acme-orders",
        &mock,
        Style::Offset,
        &fleet.out_dir,
        30,
        &secret,
    ))
    .unwrap();
    spec.output.dir = "orders".into();
    let id = acme.submit(&spec, None).await.unwrap().id;
    let status = common::wait_settled(&acme, id, Duration::from_secs(60)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");

    // Another tenant: as if the export did not exist.
    let err = globex.status(id).await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    assert!(globex.list().await.unwrap().is_empty());
    assert!(globex
        .dead_letters(Some(id), true)
        .await
        .unwrap()
        .is_empty());
    let replayed = globex.replay(None, Some(id)).await.unwrap();
    assert!(replayed.replayed.is_empty());
    // acme's token cannot be pointed at another tenant.
    let err = ApiClient::new(&fleet.api_url, Some(acme_token.clone()))
        .unwrap()
        .for_tenant("globex")
        .list()
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    assert!(err.to_string().contains("\"acme\""), "{err}");
    // Nor manage tokens.
    let err = acme.tokens().await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let err = acme
        .create_token(&CreateToken {
            tenant: Some("globex".into()),
            ..CreateToken::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    // The admin sees acme's export when it names acme.
    let as_acme = ApiClient::new(&fleet.api_url, Some(fleet.admin_token.clone()))
        .unwrap()
        .for_tenant("acme");
    assert_eq!(as_acme.status(id).await.unwrap().id, id);

    // Only hashes are stored, and a revoked token stops at once.
    let db = fleet.db().await;
    let stored: Vec<Vec<u8>> = db
        .query("SELECT token_hash FROM api_tokens", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(stored.contains(&Sha256::digest(acme_token.reveal().as_bytes()).to_vec()));
    let dump: String = db
        .query_one("SELECT string_agg(t::text, ' ') FROM api_tokens t", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!dump.contains(&acme_token.reveal()[4..]), "{dump}");
    let listed = fleet.api.tokens().await.unwrap();
    let acme_record = listed
        .iter()
        .find(|t| t.tenant_id.as_deref() == Some("acme"))
        .unwrap();
    fleet.api.revoke_token(acme_record.id).await.unwrap();
    let err = acme.status(id).await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    fleet.stop().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_tokens_with_an_admin_token() {
    let fleet = Fleet::start(0).await;
    let run = common::run_command;
    let (code, token, said) = run(fleet.cli().args([
        "admin", "token", "create", "--tenant", "acme", "--label", "nightly",
    ]));
    assert_eq!(code, Some(0), "{said}");
    let token = token.trim().to_string();
    assert!(token.starts_with("pft_"), "{token}");
    assert!(said.contains("shown only now"), "{said}");

    // The new token works for acme through the CLI, and is no admin.
    let (code, _, said) = run(fleet.cli().env("PAGEFLEET_TOKEN", &token).arg("ls"));
    assert_eq!(code, Some(0), "{said}");
    let (code, _, said) = run(fleet
        .cli()
        .env("PAGEFLEET_TOKEN", &token)
        .args(["admin", "token", "ls"]));
    assert_eq!(code, Some(7), "{said}");
    assert!(said.contains("admin token"), "{said}");

    let (code, listed, said) = run(fleet.cli().args(["admin", "token", "ls", "--json"]));
    assert_eq!(code, Some(0), "{said}");
    assert!(!listed.contains(&token[4..]), "ls shows no token: {listed}");
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let id = listed[0]["id"].as_str().unwrap().to_string();
    assert_eq!(listed[0]["tenant_id"], "acme");
    assert_eq!(listed[0]["label"], "nightly");

    let (code, _, said) = run(fleet.cli().args(["admin", "token", "revoke", &id]));
    assert_eq!(code, Some(0), "{said}");
    let (code, _, said) = run(fleet.cli().env("PAGEFLEET_TOKEN", &token).arg("ls"));
    assert_eq!(code, Some(7), "{said}");
    assert!(said.contains("unknown or revoked"), "{said}");
    let (code, _, said) = run(fleet.cli().env_remove("PAGEFLEET_TOKEN").arg("ls"));
    assert_eq!(code, Some(7), "{said}");
    assert!(said.contains("PAGEFLEET_TOKEN"), "{said}");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_tenant_header_is_the_tenant() {
    let fleet = Fleet::start_trusting_tenant_header(0).await;
    let http = reqwest::Client::new();
    let spec = serde_json::to_string(&store_spec("proxied")).unwrap();
    let submitted = http
        .post(format!("{}/v1/exports", fleet.api_url))
        .header("x-pagefleet-tenant", "acme")
        .body(spec)
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status().as_u16(), 201);
    // What the proxy forwards: no token, the tenant it vouches for.
    let proxied = |tenant: &str| {
        ApiClient::new(&fleet.api_url, None)
            .unwrap()
            .for_tenant(tenant)
    };
    assert_eq!(proxied("acme").list().await.unwrap().len(), 1);
    assert!(proxied("globex").list().await.unwrap().is_empty());
    // The proxy must name the tenant.
    let unnamed = ApiClient::new(&fleet.api_url, None).unwrap().list().await;
    assert_eq!(unnamed.unwrap_err().status(), Some(401));
    fleet.stop().await;
}
