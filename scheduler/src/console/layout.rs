//! The page every console page sits in: the navigation, the style, the
//! headers that keep it from being framed or loading anything else.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::session::Session;

const STYLE: &str = "
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d2330; }
nav { background: #1d2330; padding: .6em 1.2em; display: flex; gap: 1.2em; align-items: center; }
nav a, nav span { color: #e8ecf3; text-decoration: none; }
nav form { margin-left: auto; }
main { padding: 1em 1.5em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; }
th, td { border-bottom: 1px solid #dde2ea; padding: .3em .7em; text-align: left; vertical-align: top; }
th { background: #f3f5f9; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.state { font-weight: 600; }
.error { color: #a3261b; font-weight: 600; }
.note { color: #566; }
form.inline { display: inline; }
fieldset { border: 1px solid #dde2ea; margin: .8em 0; }
label { margin-right: 1em; }
pre { background: #f3f5f9; padding: .6em; white-space: pre-wrap; word-break: break-all; }
";

/// A whole page; `session` adds the navigation (signed in).
pub fn page(title: &str, session: Option<&Session>, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · pagefleet" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                nav {
                    strong { span { "pagefleet" } }
                    @if let Some(s) = session {
                        a href="/console/exports" { "Exports" }
                        a href="/console/dlq" { "Dead letters" }
                        a href="/console/schedules" { "Schedules" }
                        a href="/console/audit" { "Audit log" }
                        span.note { (s.actor.name) " · tenant " (s.actor.tenant_id) }
                        form method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// The same page with a refresh every few seconds (an export still going).
pub fn refreshing(mut response: Response, seconds: u32) -> Response {
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert("refresh", value);
    }
    response
}

/// No framing, no script, nothing loaded from elsewhere, no referrer, no
/// cache: on every console response, redirects and refusals included.
pub fn guarded(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A page saying why not, with its status.
pub fn refused(status: u16, why: &str) -> Response {
    let mut response = page("Refused", None, html! { p.error { (why) } });
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    response
}

/// The store could not answer: the API's reference-only message (the
/// details go to the scheduler's log).
pub fn store_problem(session: &Session, e: pagefleet_shared::store::StoreError) -> Response {
    problem(session, 503, &crate::api::ApiError::from(e).error)
}

/// A refusal page inside the signed-in layout.
pub fn problem(session: &Session, status: u16, why: &str) -> Response {
    let mut response = page("Refused", Some(session), html! { p.error { (why) } });
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    response
}
