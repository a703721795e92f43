//! The API's OpenAPI description, generated from the handlers'
//! `#[utoipa::path]` attributes as the router is built (every `/v1` route
//! is added through `utoipa_axum::routes!`, so none can be left out), and
//! served at `/v1/openapi.json`.

use std::sync::OnceLock;

use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "pagefleet",
        description = "Export paginated, rate-limited HTTP APIs to CSV files you can trust. \
                       Every route but /healthz and /v1/openapi.json needs `Authorization: Bearer <token>`; \
                       an admin token acts for the tenant `X-Pagefleet-Tenant` names."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

static DOCUMENT: OnceLock<Document> = OnceLock::new();

/// Keeps the document the router was built with (the first one: every
/// router of a process describes the same routes).
pub fn keep(document: Document) {
    let _ = DOCUMENT.set(document);
}

/// This description.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "fleet", security(()),
    responses((status = 200, description = "the OpenAPI 3.1 description of this API", body = Object)))]
pub async fn serve() -> Response {
    match DOCUMENT.get() {
        Some(document) => Json(document).into_response(),
        None => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
