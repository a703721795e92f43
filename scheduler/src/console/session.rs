//! Signing in and out, and the session every other page needs: the
//! operator its cookie's token is, and the form token that proves a POST
//! came from one of the console's own pages.

use axum::extract::{FromRequestParts, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use pagefleet_shared::api_token::ApiToken;
use pagefleet_shared::store::Actor;

use super::layout::{page, refused};
use crate::api::ApiState;
use crate::auth::operator_of;

const TOKEN_COOKIE: &str = "pagefleet_console";
const TENANT_COOKIE: &str = "pagefleet_console_tenant";
/// A session lasts a working day.
const MAX_AGE_S: u32 = 12 * 3600;

/// A signed-in operator.
pub struct Session {
    pub actor: Actor,
    /// Every form's hidden `csrf` field.
    pub csrf: String,
}

impl Session {
    /// The refusal of a form that did not come from this session's pages.
    pub fn foreign_form(&self, csrf: &str) -> Option<Response> {
        let ours = csrf.len() == self.csrf.len()
            && (csrf.bytes().zip(self.csrf.bytes())).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0;
        (!ours).then(|| refused(403, "this form is not from this session; reload the page"))
    }
}

/// The form token of a session: a digest of its API token and the tenant
/// it acts for, so it is known only to pages served to that session, and a
/// form made for one tenant does not act for another.
fn csrf_of(token: &ApiToken, tenant: &str) -> String {
    let digest = Sha256::digest(format!(
        "pagefleet console form:{tenant}:{}",
        token.reveal()
    ));
    pagefleet_shared::spec::hex(&digest[..16])
}

/// A cookie's value. Sent twice (one planted with another path or domain
/// beside the console's own), it is no value: which one is the console's
/// cannot be told.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = (headers.get_all(COOKIE).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v);
    let first = values.next();
    match values.next() {
        Some(_) => None,
        None => first,
    }
}

impl FromRequestParts<ApiState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Response> {
        let to_login = || Redirect::to("/console/login").into_response();
        let token = cookie(&parts.headers, TOKEN_COOKIE)
            .and_then(ApiToken::presented)
            .ok_or_else(to_login)?;
        let tenant = cookie(&parts.headers, TENANT_COOKIE).filter(|t| !t.is_empty());
        let actor = (operator_of(state, &token, tenant).await).map_err(|_| to_login())?;
        let csrf = csrf_of(&token, &actor.tenant_id);
        Ok(Session { actor, csrf })
    }
}

pub async fn home() -> Redirect {
    Redirect::to("/console/exports")
}

pub async fn login_page() -> Response {
    login_form(None)
}

fn login_form(error: Option<&str>) -> Response {
    page(
        "Sign in",
        None,
        html! {
            @if let Some(e) = error { p.error { (e) } }
            form method="post" action="/console/login" {
                label { "API token " input type="password" name="token" autocomplete="off" required; }
                label { "Tenant (admin tokens) " input type="text" name="tenant" placeholder="default"; }
                button type="submit" { "Sign in" }
            }
        },
    )
}

#[derive(Deserialize)]
pub struct Login {
    token: String,
    #[serde(default)]
    tenant: String,
}

/// A cookie value: the characters a token or tenant name is made of.
fn cookie_safe(text: &str) -> bool {
    text.len() <= 300
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

pub async fn login(State(state): State<ApiState>, Form(login): Form<Login>) -> Response {
    let tenant = login.tenant.trim();
    let Some(token) = ApiToken::presented(&login.token) else {
        return login_form(Some("give an API token"));
    };
    if !cookie_safe(token.reveal()) || !cookie_safe(tenant) {
        return login_form(Some(
            "this token or tenant cannot be kept by the console; use the CLI",
        ));
    }
    let tenant_arg = (!tenant.is_empty()).then_some(tenant);
    if let Err(e) = operator_of(&state, &token, tenant_arg).await {
        return login_form(Some(&e.error));
    }
    let attributes =
        format!("HttpOnly; Secure; SameSite=Strict; Path=/console; Max-Age={MAX_AGE_S}");
    let mut response = Redirect::to("/console/exports").into_response();
    for value in [
        format!("{TOKEN_COOKIE}={}; {attributes}", token.reveal()),
        format!("{TENANT_COOKIE}={tenant}; {attributes}"),
    ] {
        if let Ok(value) = value.parse() {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

pub async fn logout(session: Session, Form(form): Form<CsrfOnly>) -> Response {
    if let Some(refusal) = session.foreign_form(&form.csrf) {
        return refusal;
    }
    let mut response = Redirect::to("/console/login").into_response();
    for name in [TOKEN_COOKIE, TENANT_COOKIE] {
        let value = format!("{name}=; HttpOnly; Secure; SameSite=Strict; Path=/console; Max-Age=0");
        if let Ok(value) = value.parse() {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others_and_the_form_token_is_the_sessions() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            "a=1; pagefleet_console=pft_abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, TOKEN_COOKIE), Some("pft_abc"));
        assert_eq!(cookie(&headers, TENANT_COOKIE), None);
        let a = csrf_of(&ApiToken::presented("pft_abc").unwrap(), "acme");
        let b = csrf_of(&ApiToken::presented("pft_abd").unwrap(), "acme");
        let other_tenant = csrf_of(&ApiToken::presented("pft_abc").unwrap(), "globex");
        assert_ne!(a, b);
        assert_ne!(a, other_tenant);
        headers.append(COOKIE, "pagefleet_console=pft_planted".parse().unwrap());
        assert_eq!(cookie(&headers, TOKEN_COOKIE), None, "two values are none");
        assert_eq!(a.len(), 32);
        assert!(!a.contains("abc"));
    }

    #[test]
    fn only_plain_text_goes_into_a_cookie() {
        assert!(cookie_safe("pft_0123abcdef"));
        assert!(cookie_safe(""));
        assert!(!cookie_safe("a; Path=/"));
        assert!(!cookie_safe("a b"));
    }
}
