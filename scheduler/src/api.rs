//! The HTTP API: `/v1/exports` (and an operator's actions on one),
//! `/v1/dlq`, `/v1/audit`, `/v1/schedules`, `/v1/admin/tokens`, `/healthz`.
//!
//! Every route but `/healthz` needs a token ([`crate::auth`]); another
//! tenant's export or dead letter is a 404, as if it did not exist. The
//! scheduler's metrics are on their own listener (`--metrics-listen`), so
//! the API port shows nothing to a caller without a token.
//!
//! Every error is a JSON body `{"error": "...", "field": "..."}` with a 4xx
//! or 5xx status; `field` names the spec field when a spec was refused.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use pagefleet_shared::dispatch::Dispatcher;
use pagefleet_shared::outbound::OutboundPolicy;
use pagefleet_shared::progress::parse_age;
use pagefleet_shared::queue::Broker;
use pagefleet_shared::redact;
use pagefleet_shared::spec::{ExportSpec, SpecError};
use pagefleet_shared::store::{ExportListFilter, ExportStatus, Store, SubmitError, Submitted};
use pagefleet_shared::tenancy::{self, TenantId};

use crate::auth::{AuthConfig, Tenant};
use crate::{admin, dlq, download, export_actions, openapi, schedules};

/// Largest spec accepted by the API.
const MAX_SPEC_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub broker: Arc<Broker>,
    /// See `ServiceConfig::output_root`: checked at submit so a spec that
    /// would write outside its tenant's directory is refused at once.
    pub output_root: std::path::PathBuf,
    /// See `ServiceConfig::secrets_dir`.
    pub secrets_dir: Option<std::path::PathBuf>,
    pub auth: Arc<AuthConfig>,
    /// The workers' outbound policy: a base URL it refuses from the URL
    /// alone (an IP literal, `localhost`) is refused at submit.
    pub outbound: Arc<OutboundPolicy>,
}

pub fn router(state: ApiState) -> Router {
    let (api, mut document) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(submit, list))
        .routes(routes!(status))
        .routes(routes!(export_actions::act))
        .routes(routes!(download::download))
        .routes(routes!(dlq::list))
        .routes(routes!(dlq::replay))
        .routes(routes!(dlq::discard))
        .routes(routes!(dlq::show))
        .routes(routes!(dlq::audit))
        .routes(routes!(admin::create_token, admin::list_tokens))
        .routes(routes!(admin::revoke_token))
        .routes(routes!(schedules::create, schedules::list))
        .routes(routes!(schedules::show, schedules::remove))
        .routes(routes!(schedules::pause))
        .routes(routes!(schedules::resume))
        .routes(routes!(schedules::run_now))
        .routes(routes!(schedules::backfill))
        .routes(routes!(health))
        .routes(routes!(openapi::serve))
        .split_for_parts();
    document.info.version = env!("CARGO_PKG_VERSION").to_string();
    openapi::keep(document);
    api.merge(crate::console::router())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_SPEC_BYTES))
        .with_state(state)
}

/// An API error: status, message, and the spec field when there is one.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    status: u16,
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status: status.as_u16(),
            error: error.into(),
            field: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self)).into_response()
    }
}

/// A Postgres error is the server's business: its text (statements,
/// constraint names, addresses) goes to the scheduler's log under a
/// reference, and the client gets the reference and what to do.
impl From<pagefleet_shared::store::StoreError> for ApiError {
    fn from(e: pagefleet_shared::store::StoreError) -> Self {
        let reference = pagefleet_shared::model::new_id();
        tracing::error!(error = %e, %reference, "store error in API");
        let (status, what) = if e.is_retryable() {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable; try again shortly",
            )
        } else {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        };
        ApiError::new(
            status,
            format!("{what} (reference {reference} in the scheduler's log)"),
        )
    }
}

/// A spec reaching for another tenant's files or secrets is refused at
/// once, naming the field (the workers check again before they act).
pub(crate) fn refuse_other_tenants(
    state: &ApiState,
    tenant: &TenantId,
    spec: &ExportSpec,
) -> Result<(), ApiError> {
    let refused = |field: &str, e: tenancy::IsolationError| {
        let mut err = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("spec field `{field}`: {e}"),
        );
        err.field = Some(field.into());
        err
    };
    tenancy::resolve_dir(&state.output_root, tenant.as_str(), &spec.output.dir)
        .map_err(|e| refused("output.dir", e))?;
    if let Some(auth) = &spec.source.auth {
        tenancy::check_secret(state.secrets_dir.as_deref(), tenant.as_str(), auth.secret())
            .map_err(|e| refused("source.auth.secret", e))?;
    }
    Ok(())
}

/// A base URL the outbound policy refuses from the URL alone (an IP
/// literal, `localhost`) is refused now, naming the field; any other host
/// name is judged by the workers on what it resolves to when fetched.
pub(crate) fn refuse_refused_source(state: &ApiState, spec: &ExportSpec) -> Result<(), ApiError> {
    let field = "source.base_url";
    // The spec was validated: its base URL parses.
    let Ok(base) = url::Url::parse(&spec.source.base_url) else {
        return Ok(());
    };
    state.outbound.check_url(&base).map_err(|refusal| {
        let mut err = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("spec field `{field}`: {refusal}"),
        );
        err.field = Some(field.into());
        err
    })
}

/// The request body as a spec; a refusal names the spec field.
fn parse_spec_body(body: &[u8]) -> Result<ExportSpec, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "spec is not UTF-8"))?;
    ExportSpec::from_json(text).map_err(spec_refused)
}

/// A spec that does not parse or validate: 422 naming the field.
pub(crate) fn spec_refused(e: SpecError) -> ApiError {
    let mut err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string());
    if let SpecError::Invalid { field, .. } = &e {
        err.field = Some(field.clone());
    }
    err
}

/// The `Idempotency-Key` header, when there is one: 1-200 characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= 200 => Ok(Some(key.to_string())),
        Ok(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key must be 1-200 characters",
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key is not text",
        )),
    }
}

#[utoipa::path(post, path = "/v1/exports", tag = "exports",
    request_body(content = Object, description = "an export spec (JSON; see the README's \"The export spec\")"),
    params(("Idempotency-Key" = Option<String>, Header, description = "the same key returns the same export")),
    responses(
        (status = 201, description = "submitted", body = Submitted),
        (status = 200, description = "already submitted with this key", body = Submitted),
        (status = 409, description = "the key was used for another spec", body = ApiError),
        (status = 422, description = "the spec is refused, naming the field", body = ApiError),
        (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
async fn submit(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let submitted_spec = parse_spec_body(&body)?;
    // A one-off incremental export runs its window from its start; the
    // output's placeholders are filled now.
    let spec = submitted_spec
        .pinned(None, time::OffsetDateTime::now_utc())
        .map_err(spec_refused)?;
    let key = idempotency_key(&headers)?;
    refuse_other_tenants(&state, &tenant, &spec)?;
    refuse_refused_source(&state, &spec)?;
    let submitted = state
        .store
        .submit_run(tenant.as_str(), key.as_deref(), &submitted_spec, &spec)
        .await
        .map_err(|e| match e {
            SubmitError::IdempotencyConflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            SubmitError::Store(e) => e.into(),
        })?;
    if submitted.created {
        publish_now(&state, &submitted.outbox_ids).await;
        tracing::info!(export = %submitted.id, name = %spec.name, style = spec.pagination.style_name(), "export submitted");
    }
    let code = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(submitted)).into_response())
}

#[utoipa::path(get, path = "/v1/exports/{id}", tag = "exports",
    params(("id" = Uuid, Path, description = "the export")),
    responses(
        (status = 200, description = "its state, counters, progress, ETA and time breakdown", body = ExportStatus),
        (status = 404, description = "no such export of this tenant's", body = ApiError),
        (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
async fn status(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    match state.store.export_status(id).await? {
        Some(s) if s.tenant_id == tenant.as_str() => {
            Ok(Json(as_tenant_sees(&state, s)).into_response())
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no export {id}"),
        )),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    state: Option<String>,
    name: Option<String>,
    source: Option<String>,
    newer_than: Option<String>,
    older_than: Option<String>,
}

impl ListQuery {
    /// The filter, each field parsed and a bad one named.
    fn filter(&self) -> Result<ExportListFilter, ApiError> {
        let bad = |field: &str, why: &str| {
            let mut e = ApiError::new(StatusCode::BAD_REQUEST, format!("`{field}`: {why}"));
            e.field = Some(field.into());
            e
        };
        let age = |field: &str, text: &Option<String>| {
            (text.as_deref())
                .map(|t| {
                    parse_age(t).ok_or_else(|| bad(field, "an age such as 90s, 30m, 2h or 7d"))
                })
                .transpose()
        };
        let text = |field: &str, text: &Option<String>| match text {
            Some(t) if t.len() > 300 => Err(bad(field, "at most 300 characters")),
            _ => Ok(text.clone().filter(|t| !t.is_empty())),
        };
        Ok(ExportListFilter {
            state: (self.state.as_deref().filter(|s| !s.is_empty()))
                .map(|s| s.parse().map_err(|_| bad("state", "not an export state")))
                .transpose()?,
            name: text("name", &self.name)?,
            source: text("source", &self.source)?,
            newer_than_s: age("newer_than", &self.newer_than)?,
            older_than_s: age("older_than", &self.older_than)?,
        })
    }
}

#[utoipa::path(get, path = "/v1/exports", tag = "exports",
    params(("limit" = Option<i64>, Query, description = "1-1000, default 50"),
           ("state" = Option<String>, Query, description = "an export state"),
           ("name" = Option<String>, Query, description = "part of the export's name"),
           ("source" = Option<String>, Query, description = "part of its source's base URL"),
           ("newer_than" = Option<String>, Query, description = "created at most this long ago: 90s, 30m, 2h, 7d"),
           ("older_than" = Option<String>, Query, description = "created at least this long ago")),
    responses((status = 200, description = "the newest exports", body = Vec<ExportStatus>), (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
async fn list(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let filter = q.filter()?;
    let exports = (state.store)
        .list_exports_where(tenant.as_str(), &filter, limit)
        .await?;
    let exports: Vec<ExportStatus> = (exports.into_iter())
        .map(|s| as_tenant_sees(&state, s))
        .collect();
    Ok(Json(exports).into_response())
}

/// A tenant sees its files by their paths in its own directory, never the
/// server's (see `redact::tenant_path`).
pub(crate) fn as_tenant_sees(state: &ApiState, mut status: ExportStatus) -> ExportStatus {
    let root = state.output_root.as_path();
    let roots = tenancy::tenant_roots(root, &status.tenant_id);
    for path in [&mut status.output_path, &mut status.manifest_path] {
        *path = (path.take()).and_then(|p| redact::tenant_path(&roots, std::path::Path::new(&p)));
    }
    status.error = (status.error.take()).map(|e| redact::tenant_text(&e, &roots, root));
    status
}

#[utoipa::path(get, path = "/healthz", tag = "fleet",
    responses(
        (status = 200, description = "Postgres and RabbitMQ are reachable", body = Object),
        (status = 503, description = "one is not", body = Object)))]
async fn health(State(state): State<ApiState>) -> Response {
    let db = state.store.ping().await.is_ok();
    let broker = state.broker.is_connected();
    let body = serde_json::json!({"postgres": db, "rabbitmq": broker});
    let code = if db && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Publishes what a request just wrote rather than waiting for the relay's
/// next pass; on failure the relay still has it.
pub(crate) async fn publish_now(state: &ApiState, outbox_ids: &[i64]) {
    let mut dispatcher = Dispatcher::new();
    if let Err(e) = dispatcher
        .publish_ids(&state.store, &state.broker, outbox_ids)
        .await
    {
        tracing::warn!(error = %e, "publish failed; the relay will retry");
    }
}

pub(crate) fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{text:?} is not an export or task id"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagefleet_shared::store::StoreError;

    #[test]
    fn a_store_error_reaches_the_client_as_a_reference_only() {
        let internal = StoreError::Corrupt {
            what: "spec",
            export_id: Uuid::nil(),
            message: "column secret_token of relation exports at 10.0.0.7".into(),
        };
        let answer = ApiError::from(internal);
        assert_eq!(answer.status, 500);
        assert!(
            answer.error.starts_with("internal error (reference "),
            "{}",
            answer.error
        );
        for leaked in ["secret_token", "exports", "10.0.0.7", "spec"] {
            assert!(
                !answer.error.contains(leaked),
                "{leaked} in {}",
                answer.error
            );
        }
        let unavailable = ApiError::from(StoreError::Pool("timed out at 10.0.0.7:5432".into()));
        assert_eq!(unavailable.status, 503);
        assert!(
            !unavailable.error.contains("10.0.0.7"),
            "{}",
            unavailable.error
        );
    }
}
