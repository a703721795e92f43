//! Who is calling the API, and which tenant a request acts for.
//!
//! Every route but `/healthz` needs `Authorization: Bearer <token>`. A
//! token is bound to one tenant or to the admin role (see
//! [`pagefleet_shared::api_token`]); the bootstrap admin token comes from
//! the scheduler's environment (`PAGEFLEET_ADMIN_TOKEN`) so the first
//! tenant token can be made. A tenant token acts only for its tenant: an
//! `X-Pagefleet-Tenant` naming another is refused. An admin token acts for
//! the tenant the header names (the default tenant without one).
//!
//! Behind an authenticating proxy the operator may start the scheduler
//! with `--trust-tenant-header`: a request without a token then acts for
//! the tenant the proxy put in `X-Pagefleet-Tenant`. That is never the
//! default, because any client that reaches the port could claim any
//! tenant.
//!
//! The decisions ([`acting_tenant`], [`bearer`]) are pure; the extractors
//! below add the one lookup.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};

use pagefleet_shared::api_token::{ApiToken, TokenRole};
use pagefleet_shared::store::Actor;
use pagefleet_shared::tenancy::TenantId;

use crate::api::{ApiError, ApiState};

/// How the scheduler authenticates callers.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// The bootstrap admin token, from the scheduler's environment.
    pub admin_token: Option<ApiToken>,
    /// Trust `X-Pagefleet-Tenant` on requests without a token (an
    /// authenticating proxy in front sets it).
    pub trust_tenant_header: bool,
}

/// Who a request comes from, once its token is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Tenant(TenantId),
    /// No token, and the operator trusts the proxy's tenant header.
    Proxy,
}

/// Why a request is not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this API needs a token: send `Authorization: Bearer <token>` (the CLI reads PAGEFLEET_TOKEN)")]
    Missing,
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    #[error("the token is not valid (unknown or revoked)")]
    Unknown,
    #[error("this token acts for tenant {own:?}, not {asked:?}")]
    OtherTenant { own: String, asked: String },
    #[error("X-Pagefleet-Tenant must be 1-64 characters of [A-Za-z0-9_.-], not starting with `.`, not ending with `_`, without `__`")]
    BadTenant,
    #[error("this needs an admin token")]
    NotAdmin,
    #[error("the {0} header may be sent only once")]
    Repeated(String),
    #[error("X-Pagefleet-User must be 1-64 characters of [A-Za-z0-9_.-]")]
    BadUser,
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = match e {
            AuthError::Missing | AuthError::Malformed | AuthError::Unknown => {
                StatusCode::UNAUTHORIZED
            }
            AuthError::BadTenant | AuthError::BadUser | AuthError::Repeated(_) => {
                StatusCode::BAD_REQUEST
            }
            AuthError::OtherTenant { .. } | AuthError::NotAdmin => StatusCode::FORBIDDEN,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The one value of a header, `None` without it. Sent twice, it is
/// refused: a proxy that appends its own value (rather than replacing the
/// client's) would otherwise let the client's first value win.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h HeaderValue>, AuthError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(AuthError::Repeated(name.to_string()));
    }
    Ok(first)
}

/// The tenant header's text, when there is one (and only one).
pub fn tenant_header(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    single(headers, "x-pagefleet-tenant")?
        .map(|v| v.to_str().map_err(|_| AuthError::BadTenant))
        .transpose()
}

/// The bearer token of a request: `None` without an Authorization header.
pub fn bearer(headers: &HeaderMap) -> Result<Option<ApiToken>, AuthError> {
    let Some(value) = single(headers, "authorization")? else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = text.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    ApiToken::presented(token)
        .map(Some)
        .ok_or(AuthError::Malformed)
}

/// The tenant a request acts for, from its caller and the tenant header.
pub fn acting_tenant(caller: &Caller, header: Option<&str>) -> Result<TenantId, AuthError> {
    let asked = header
        .map(|h| TenantId::parse(h).map_err(|_| AuthError::BadTenant))
        .transpose()?;
    match (caller, asked) {
        (Caller::Tenant(own), Some(asked)) if &asked != own => Err(AuthError::OtherTenant {
            own: own.to_string(),
            asked: asked.to_string(),
        }),
        (Caller::Tenant(own), _) => Ok(own.clone()),
        (Caller::Admin, asked) => Ok(asked.unwrap_or_else(TenantId::default_tenant)),
        // The proxy vouches for the header; without one it vouched for nobody.
        (Caller::Proxy, asked) => asked.ok_or(AuthError::Missing),
    }
}

/// Checks a request's token against the bootstrap token and the store.
async fn authenticate(state: &ApiState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    identify(state, headers).await.map(|(caller, _)| caller)
}

/// The caller, and its name for the audit log: the token's id and label,
/// never the token.
async fn identify(state: &ApiState, headers: &HeaderMap) -> Result<(Caller, String), ApiError> {
    let Some(token) = bearer(headers)? else {
        return if state.auth.trust_tenant_header {
            Ok((Caller::Proxy, proxy_user(headers)?))
        } else {
            Err(AuthError::Missing.into())
        };
    };
    identify_token(state, &token).await
}

/// The operator a token is, acting for `tenant` (the default tenant when
/// an admin names none): what the console checks its session cookie with.
pub async fn operator_of(
    state: &ApiState,
    token: &ApiToken,
    tenant: Option<&str>,
) -> Result<Actor, ApiError> {
    let (caller, name) = identify_token(state, token).await?;
    let tenant = acting_tenant(&caller, tenant)?;
    Ok(Actor {
        tenant_id: tenant.as_str().to_string(),
        name,
    })
}

async fn identify_token(state: &ApiState, token: &ApiToken) -> Result<(Caller, String), ApiError> {
    if state
        .auth
        .admin_token
        .as_ref()
        .is_some_and(|admin| admin.hash() == token.hash())
    {
        return Ok((Caller::Admin, "admin (bootstrap token)".into()));
    }
    let Some(record) = state.store.find_token(token).await? else {
        return Err(AuthError::Unknown.into());
    };
    let name = format!("token {} ({})", record.id, record.label);
    match (record.role, record.tenant_id) {
        (TokenRole::Admin, _) => Ok((Caller::Admin, format!("admin {name}"))),
        (TokenRole::Tenant, Some(tenant)) => TenantId::parse(&tenant)
            .map(|t| (Caller::Tenant(t), name))
            .map_err(|_| AuthError::Unknown.into()),
        (TokenRole::Tenant, None) => Err(AuthError::Unknown.into()),
    }
}

/// Behind a trusted proxy, the user it names in `X-Pagefleet-User` (a
/// plain name), for the audit log.
fn proxy_user(headers: &HeaderMap) -> Result<String, AuthError> {
    match single(headers, "x-pagefleet-user")? {
        None => Ok("proxy".into()),
        Some(value) => match value.to_str() {
            Ok(user) if pagefleet_shared::model::is_plain_name(user) => Ok(format!("proxy:{user}")),
            _ => Err(AuthError::BadUser),
        },
    }
}

/// The tenant a request acts for, authenticated.
pub struct Tenant(pub TenantId);

impl FromRequestParts<ApiState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let caller = authenticate(state, &parts.headers).await?;
        let header = tenant_header(&parts.headers)?;
        Ok(Tenant(acting_tenant(&caller, header)?))
    }
}

/// The tenant a request acts for and who is acting, for an action the
/// audit log records.
pub struct Operator(pub Actor);

impl FromRequestParts<ApiState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let (caller, name) = identify(state, &parts.headers).await?;
        let header = tenant_header(&parts.headers)?;
        let tenant = acting_tenant(&caller, header)?;
        Ok(Operator(Actor {
            tenant_id: tenant.as_str().to_string(),
            name,
        }))
    }
}

/// A request from an admin token.
pub struct Admin;

impl FromRequestParts<ApiState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        match authenticate(state, &parts.headers).await? {
            Caller::Admin => Ok(Admin),
            _ => Err(AuthError::NotAdmin.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    #[test]
    fn a_tenant_token_acts_only_for_its_tenant() {
        let acme = Caller::Tenant(tenant("acme"));
        assert_eq!(acting_tenant(&acme, None), Ok(tenant("acme")));
        assert_eq!(acting_tenant(&acme, Some("acme")), Ok(tenant("acme")));
        assert_eq!(
            acting_tenant(&acme, Some("globex")),
            Err(AuthError::OtherTenant {
                own: "acme".into(),
                asked: "globex".into()
            })
        );
    }

    #[test]
    fn an_admin_acts_for_the_tenant_it_names() {
        assert_eq!(
            acting_tenant(&Caller::Admin, Some("globex")),
            Ok(tenant("globex"))
        );
        assert_eq!(
            acting_tenant(&Caller::Admin, None),
            Ok(TenantId::default_tenant())
        );
        assert_eq!(
            acting_tenant(&Caller::Admin, Some("a__b")),
            Err(AuthError::BadTenant)
        );
    }

    #[test]
    fn a_trusted_proxy_must_name_the_tenant() {
        assert_eq!(
            acting_tenant(&Caller::Proxy, Some("acme")),
            Ok(tenant("acme"))
        );
        assert_eq!(acting_tenant(&Caller::Proxy, None), Err(AuthError::Missing));
    }

    #[test]
    fn a_header_sent_twice_is_refused() {
        let mut h = HeaderMap::new();
        h.append("x-pagefleet-tenant", "victim".parse().unwrap());
        h.append("x-pagefleet-tenant", "attacker".parse().unwrap());
        assert_eq!(
            tenant_header(&h),
            Err(AuthError::Repeated("x-pagefleet-tenant".into()))
        );
        h.append("authorization", "Bearer a".parse().unwrap());
        h.append("authorization", "Bearer b".parse().unwrap());
        assert!(matches!(bearer(&h), Err(AuthError::Repeated(_))));
    }

    #[test]
    fn the_bearer_token_is_read_strictly() {
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert("authorization", value.parse().unwrap());
            bearer(&h)
        };
        assert_eq!(bearer(&HeaderMap::new()), Ok(None));
        let token = with("Bearer pft_abc").unwrap().unwrap();
        assert_eq!(token.reveal(), "pft_abc");
        assert!(with("bearer pft_abc").unwrap().is_some());
        for bad in ["pft_abc", "Basic dXNlcg==", "Bearer ", "Bearer   "] {
            assert_eq!(with(bad), Err(AuthError::Malformed), "{bad:?}");
        }
    }
}
