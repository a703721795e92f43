//! The web console, served by the scheduler under `/console`: exports (a
//! filtered list, and one export's progress, ETA, time breakdown and
//! actions), dead letters (filtered and counted, one shown whole, a dry
//! run, the replay that follows it, a discard), schedules and the audit
//! log. Server-rendered HTML (maud escapes every value), no script.
//!
//! Signing in takes an API token, checked like a bearer token and kept
//! in an `HttpOnly`, `SameSite=Strict` cookie scoped to `/console`. Every
//! form carries a token derived from the session (`csrf`), checked on
//! every POST; pages forbid framing and load nothing from elsewhere.
//! Every action goes through the same store calls as the API, so it is
//! the acting tenant's and it is in the audit log.

mod dead_letters;
mod exports;
mod layout;
mod lists;
mod session;

use axum::extract::Request;
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::api::ApiState;

/// Refuses a POST a browser says came from another site (sign-in
/// included: a forged sign-in would swap the operator's session for the
/// forger's), and guards every response.
async fn same_site_only(request: Request, next: Next) -> Response {
    let foreign = request.method() == Method::POST
        && (request.headers().get("sec-fetch-site"))
            .and_then(|v| v.to_str().ok())
            .is_some_and(|site| site != "same-origin");
    if foreign {
        return layout::guarded(layout::refused(
            403,
            "a console form must come from the console",
        ));
    }
    layout::guarded(next.run(request).await)
}

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/console", get(session::home))
        .route(
            "/console/login",
            get(session::login_page).post(session::login),
        )
        .route("/console/logout", post(session::logout))
        .route("/console/exports", get(exports::list))
        .route("/console/exports/{id}", get(exports::detail))
        .route("/console/exports/{id}/{action}", post(exports::act))
        .route("/console/dlq", get(dead_letters::list))
        .route("/console/dlq/replay", post(dead_letters::replay))
        .route("/console/dlq/discard", post(dead_letters::discard))
        .route("/console/dlq/{id}", get(dead_letters::detail))
        .route("/console/schedules", get(lists::schedules))
        .route("/console/audit", get(lists::audit))
        .layer(middleware::from_fn(same_site_only))
}
