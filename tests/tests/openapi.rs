//! `/v1/openapi.json` describes every route of the API, and every route it
//! describes is one the scheduler serves: each documented operation is
//! called (with ids that exist nowhere, so nothing changes) and answers as
//! a route of the API does, never as a path the router does not know.

mod common;

use std::collections::BTreeSet;

use common::Fleet;
use serde_json::Value;

/// Every route of the API, as `METHOD path`.
const ROUTES: &[&str] = &[
    "GET /healthz",
    "GET /v1/openapi.json",
    "POST /v1/exports",
    "GET /v1/exports",
    "GET /v1/exports/{id}",
    "POST /v1/exports/{id}/{action}",
    "GET /v1/exports/{id}/download",
    "GET /v1/dlq",
    "GET /v1/dlq/{id}",
    "POST /v1/dlq/replay",
    "POST /v1/dlq/discard",
    "GET /v1/audit",
    "POST /v1/admin/tokens",
    "GET /v1/admin/tokens",
    "DELETE /v1/admin/tokens/{id}",
    "POST /v1/schedules",
    "GET /v1/schedules",
    "GET /v1/schedules/{name}",
    "DELETE /v1/schedules/{name}",
    "POST /v1/schedules/{name}/pause",
    "POST /v1/schedules/{name}/resume",
    "POST /v1/schedules/{name}/run",
    "POST /v1/schedules/{name}/backfill",
];

fn documented(doc: &Value) -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                routes.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    routes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_described_and_every_described_route_is_served() {
    let fleet = Fleet::start(1).await;
    let http = reqwest::Client::new();
    // Served without a token, like /healthz.
    let doc: Value = http
        .get(format!("{}/v1/openapi.json", fleet.api_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let expected: BTreeSet<String> = ROUTES.iter().map(|r| r.to_string()).collect();
    assert_eq!(documented(&doc), expected);

    // The router is built from the described handlers alone: no `/v1`
    // route is added around the description.
    let api_rs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scheduler/src/api.rs"
    ))
    .unwrap();
    assert!(
        !api_rs.contains(".route(\"/v1"),
        "a /v1 route added without its description"
    );

    // Every operation says what it answers, and names schemas that exist.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "ExportStatus",
        "DeadLetter",
        "DlqPage",
        "ActionRequest",
        "ActionOutcome",
        "AuditRecord",
        "ApiError",
    ] {
        assert!(schemas.contains_key(name), "{name} is described");
    }
    let text = doc.to_string();
    for reference in text.split("#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            schemas.contains_key(name),
            "{name} is referenced but not described"
        );
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
            assert!(
                operation["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{method} {path}"
            );
        }
    }

    // Each described route is served: an answer of the API's own (its
    // JSON error, or a success), never the router's bare "no such path".
    let token = fleet.admin_token.reveal().to_string();
    let nobody = uuid::Uuid::now_v7().to_string();
    for route in ROUTES {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path
            .replace("{id}", &nobody)
            .replace("{action}", "pause")
            .replace("{name}", "no-such-schedule");
        let url = format!("{}{path}", fleet.api_url);
        let request = match method {
            "GET" => http.get(&url),
            "POST" => http
                .post(&url)
                .header("content-type", "application/json")
                .body("{}"),
            "DELETE" => http.delete(&url),
            other => panic!("{other}"),
        };
        let answer = request.bearer_auth(&token).send().await.unwrap();
        let status = answer.status().as_u16();
        let body = answer.text().await.unwrap();
        assert_ne!(status, 405, "{route}: the router does not know the method");
        if status == 404 {
            let error: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            assert!(
                error["error"].is_string(),
                "{route}: a 404 of the router's, not the API's: {body:?}"
            );
        }
    }
    fleet.stop().await;
}
