//! The admin API: `/v1/admin/tokens`. Only an admin token reaches it.
//!
//! A created token is in the answer once and nowhere else: the store keeps
//! its hash, the log its id.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use pagefleet_shared::api_token::{ApiToken, TokenRole};
use pagefleet_shared::store::TokenRecord;
use pagefleet_shared::tenancy::TenantId;

use crate::api::{parse_id, ApiError, ApiState};
use crate::auth::Admin;

/// Longest token label.
const MAX_LABEL: usize = 200;

/// `{"tenant": "acme"}` for a tenant token, `{"admin": true}` for another
/// admin token; a label says whose it is.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreateToken {
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub label: String,
}

/// The new token (shown this once) and its record.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub record: TokenRecord,
}

/// What a request to create a token asks for, checked.
fn token_request(request: &CreateToken) -> Result<(TokenRole, Option<TenantId>), ApiError> {
    let bad = |message: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message);
    if request.label.chars().count() > MAX_LABEL || request.label.chars().any(char::is_control) {
        return Err(bad(
            "label must be at most 200 characters, without control characters",
        ));
    }
    match (&request.tenant, request.admin) {
        (Some(tenant), false) => TenantId::parse(tenant)
            .map(|t| (TokenRole::Tenant, Some(t)))
            .map_err(|e| bad(&e.to_string())),
        (None, true) => Ok((TokenRole::Admin, None)),
        _ => Err(bad("give exactly one of `tenant` or `admin: true`")),
    }
}

#[utoipa::path(post, path = "/v1/admin/tokens", tag = "admin", request_body = CreateToken,
    responses((status = 201, description = "the new token, shown this once", body = CreatedToken),
        (status = 422, description = "refused", body = ApiError), (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
pub async fn create_token(
    State(state): State<ApiState>,
    _: Admin,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: CreateToken = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("token request is not valid JSON: {e}"),
        )
    })?;
    let (role, tenant) = token_request(&request)?;
    let token = ApiToken::generate();
    let record = state
        .store
        .create_token(
            &token,
            role,
            tenant.as_ref().map(TenantId::as_str),
            &request.label,
        )
        .await?;
    tracing::info!(token_id = %record.id, role = %record.role, tenant = ?record.tenant_id, "API token created");
    let created = CreatedToken {
        token: token.reveal().to_string(),
        record,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[utoipa::path(get, path = "/v1/admin/tokens", tag = "admin",
    responses((status = 200, description = "every token's record, never a token", body = Vec<TokenRecord>), (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
pub async fn list_tokens(
    State(state): State<ApiState>,
    _: Admin,
) -> Result<Json<Vec<TokenRecord>>, ApiError> {
    Ok(Json(state.store.list_tokens().await?))
}

#[utoipa::path(delete, path = "/v1/admin/tokens/{id}", tag = "admin",
    params(("id" = Uuid, Path, description = "the token's record")),
    responses((status = 200, description = "revoked", body = TokenRecord),
        (status = 404, description = "no such token", body = ApiError), (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
pub async fn revoke_token(
    State(state): State<ApiState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<TokenRecord>, ApiError> {
    let id = parse_id(&id)?;
    match state.store.revoke_token(id).await? {
        Some(record) => {
            tracing::info!(token_id = %record.id, "API token revoked");
            Ok(Json(record))
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no token {id}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_request_names_one_tenant_or_the_admin_role() {
        let ask = |tenant: Option<&str>, admin: bool, label: &str| {
            token_request(&CreateToken {
                tenant: tenant.map(String::from),
                admin,
                label: label.into(),
            })
        };
        let (role, tenant) = ask(Some("acme"), false, "ci").unwrap();
        assert_eq!(role, TokenRole::Tenant);
        assert_eq!(tenant.unwrap().as_str(), "acme");
        assert_eq!(ask(None, true, "").unwrap(), (TokenRole::Admin, None));
        for refused in [
            ask(None, false, ""),
            ask(Some("acme"), true, ""),
            ask(Some("a__b"), false, ""),
            ask(Some("acme"), false, "line\nbreak"),
            ask(Some("acme"), false, &"x".repeat(201)),
        ] {
            assert!(refused.is_err());
        }
    }
}
