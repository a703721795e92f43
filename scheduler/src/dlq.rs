//! `/v1/dlq`: dead letters filtered and counted, one shown whole, and
//! replays (dry or edited) and discards of the ones a filter matches;
//! `/v1/audit`: what operators did.
//!
//! Every action is the acting tenant's, and is recorded in the audit log
//! with who did it ([`crate::auth::Operator`]).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use pagefleet_shared::model::DeadLetterClass;
use pagefleet_shared::store::{
    ActionOutcome, ActionRequest, AuditQuery, AuditRecord, DeadLetter, DlqFilter, DlqPage,
    OverBound, ReplayError,
};
use pagefleet_shared::tenancy;

use crate::api::{parse_id, publish_now, ApiError, ApiState};
use crate::auth::{Operator, Tenant};

/// The query of `GET /v1/dlq`, as text: each field is parsed and a bad one
/// named.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DlqQuery {
    pub export: Option<String>,
    pub source_key: Option<String>,
    pub class: Option<String>,
    pub status: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub fingerprint: Option<String>,
    /// Dead-letter or task ids, comma-separated.
    pub ids: Option<String>,
    /// Resolved letters too.
    #[serde(default)]
    pub all: bool,
    pub before: Option<String>,
    pub limit: Option<i64>,
}

fn bad(field: &str, why: impl std::fmt::Display) -> ApiError {
    let mut e = ApiError::new(StatusCode::BAD_REQUEST, format!("`{field}`: {why}"));
    e.field = Some(field.into());
    e
}

fn time_of(field: &str, text: &Option<String>) -> Result<Option<OffsetDateTime>, ApiError> {
    (text.as_deref())
        .map(|t| OffsetDateTime::parse(t, &Rfc3339).map_err(|_| bad(field, "not an RFC 3339 time")))
        .transpose()
}

impl DlqQuery {
    pub fn filter(&self) -> Result<DlqFilter, ApiError> {
        let ids = match self.ids.as_deref() {
            None | Some("") => Vec::new(),
            Some(list) => (list.split(','))
                .map(|id| {
                    Uuid::parse_str(id.trim())
                        .map_err(|_| bad("ids", format!("{id:?} is not an id")))
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let status = (self.status.as_deref())
            .map(|s| {
                s.parse::<i32>()
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                    .ok_or_else(|| bad("status", "not an HTTP status"))
            })
            .transpose()?;
        let class = (self.class.as_deref())
            .map(|c| {
                c.parse::<DeadLetterClass>()
                    .map_err(|_| bad("class", class_help(c)))
            })
            .transpose()?;
        let filter = DlqFilter {
            export: self.export.as_deref().map(parse_id).transpose()?,
            source_key: self.source_key.clone(),
            class,
            status,
            since: time_of("since", &self.since)?,
            until: time_of("until", &self.until)?,
            fingerprint: self.fingerprint.clone(),
            ids,
            include_resolved: self.all,
        };
        check_bounds(&filter)?;
        Ok(filter)
    }
}

/// The bounds of a filter's free text (`DlqFilter::check_bounds`), as a
/// refusal naming the field.
fn check_bounds(filter: &DlqFilter) -> Result<(), ApiError> {
    filter.check_bounds().map_err(over_bound)
}

fn over_bound(e: OverBound) -> ApiError {
    bad(e.field, e.why)
}

fn class_help(given: &str) -> String {
    format!(
        "{given:?} is not a class (permanent, exhausted, rate_limited, bad_page, worker_lost, \
         refused, over_limit)"
    )
}

#[utoipa::path(get, path = "/v1/dlq", tag = "dead letters", params(DlqQuery),
    responses((status = 200, description = "a page of letters and the counts of all the filter matches", body = DlqPage),
        (status = 400, description = "a filter field is not valid, naming it", body = ApiError), (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
pub async fn list(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Query(q): Query<DlqQuery>,
) -> Result<Response, ApiError> {
    let filter = q.filter()?;
    let before = q.before.as_deref().map(parse_id).transpose()?;
    let limit = q.limit.unwrap_or(50);
    let page = (state.store)
        .list_dead_letters(tenant.as_str(), &filter, before, limit)
        .await?;
    Ok(Json(page).into_response())
}

#[utoipa::path(get, path = "/v1/dlq/{id}", tag = "dead letters",
    params(("id" = Uuid, Path, description = "a dead-letter or task id")),
    responses((status = 200, description = "the letter whole: request, attempts, body excerpt", body = DeadLetter),
        (status = 404, description = "no such letter of this tenant's", body = ApiError), (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
pub async fn show(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    match state.store.dead_letter_detail(tenant.as_str(), id).await? {
        Some(letter) => Ok(Json(letter).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no dead letter {id}"),
        )),
    }
}

/// The body of a replay or discard: an [`ActionRequest`], or the older
/// `{"task": ID}` / `{"export": ID}`.
#[derive(Debug, Deserialize)]
struct ActionBody {
    #[serde(flatten)]
    request: ActionRequest,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    export: Option<String>,
}

fn action_request(body: &[u8]) -> Result<ActionRequest, ApiError> {
    let body: ActionBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("request is not valid JSON: {e}"),
        )
    })?;
    let mut request = body.request;
    if let Some(task) = &body.task {
        request.filter.ids.push(parse_id(task)?);
    }
    if let Some(export) = &body.export {
        request.filter.export = Some(parse_id(export)?);
    }
    request.check_bounds().map_err(over_bound)?;
    Ok(request)
}

fn refused(e: ReplayError) -> ApiError {
    match e {
        ReplayError::Store(e) => e.into(),
        ReplayError::OverBound(e) => over_bound(e),
        ReplayError::UnknownDryRun(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
        ReplayError::Changed { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        other => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, other.to_string()),
    }
}

#[utoipa::path(post, path = "/v1/dlq/replay", tag = "dead letters", request_body = ActionRequest,
    responses((status = 200, description = "what was (or, dry, would be) replayed and what it costs", body = ActionOutcome),
        (status = 409, description = "the pages changed since the dry run it follows", body = ApiError),
        (status = 422, description = "an edit does not fit a page, or no filter", body = ApiError), (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
pub async fn replay(
    State(state): State<ApiState>,
    Operator(actor): Operator,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = action_request(&body)?;
    check_edits(&state, &actor.tenant_id, &request)?;
    let outcome = (state.store)
        .replay_dead_letters(&actor, &request)
        .await
        .map_err(refused)?;
    finish(&state, "replay", &outcome).await;
    Ok(Json(outcome).into_response())
}

#[utoipa::path(post, path = "/v1/dlq/discard", tag = "dead letters", request_body = ActionRequest,
    responses((status = 200, description = "what was (or, dry, would be) discarded", body = ActionOutcome),
        (status = 422, description = "no reason, or no filter", body = ApiError), (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
pub async fn discard(
    State(state): State<ApiState>,
    Operator(actor): Operator,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = action_request(&body)?;
    let outcome = (state.store)
        .discard_dead_letters(&actor, &request)
        .await
        .map_err(refused)?;
    finish(&state, "discard", &outcome).await;
    Ok(Json(outcome).into_response())
}

/// A new secret reference must be the tenant's own, like a spec's.
fn check_edits(state: &ApiState, tenant: &str, request: &ActionRequest) -> Result<(), ApiError> {
    let edits = pagefleet_shared::replay_edit::ReplayEdits::parse(&request.set)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    if let Some(secret) = &edits.overrides.secret {
        tenancy::check_secret(state.secrets_dir.as_deref(), tenant, secret).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("`--set secret`: {e}"),
            )
        })?;
    }
    Ok(())
}

async fn finish(state: &ApiState, what: &str, outcome: &ActionOutcome) {
    if outcome.dry_run {
        return;
    }
    if !outcome.pages.is_empty() {
        tracing::info!(pages = outcome.pages.len(), audit = %outcome.audit_id, "dead letters: {what}");
    }
    publish_now(state, &outcome.outbox_ids).await;
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "the tenant's operator actions, newest first", body = Vec<AuditRecord>), (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
pub async fn audit(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    if q.action.as_ref().is_some_and(|a| a.len() > 64) {
        return Err(bad("action", "at most 64 characters"));
    }
    let records = state.store.audit_log(tenant.as_str(), &q).await?;
    Ok(Json(records).into_response())
}
