//! The schedules API: `/v1/schedules`. A tenant sees and changes only its
//! own schedules; another tenant's is a 404 like one that does not exist.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use pagefleet_shared::schedule::{CronSchedule, ScheduleError, ScheduleSpec};
use pagefleet_shared::spec::run_naming;
use pagefleet_shared::store::{CreateScheduleError, Fired, ScheduleRecord, ScheduleRun, Submitted};

use crate::api::{
    publish_now, refuse_other_tenants, refuse_refused_source, spec_refused, ApiError, ApiState,
};
use crate::auth::Tenant;

/// Runs listed by `GET /v1/schedules/{name}`.
const RUNS_SHOWN: i64 = 50;

/// A schedule with its most recent runs, newest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleDetail {
    pub schedule: ScheduleRecord,
    pub runs: Vec<ScheduleRun>,
    /// How the runs' windows read, for an incremental schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub cursor_format: Option<pagefleet_shared::spec::CursorFormat>,
}

/// `POST /v1/schedules/{name}/backfill`: a range of the schedule's
/// incremental source as one backfill export.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    pub from: String,
    pub to: String,
    pub window: String,
    #[serde(default)]
    pub max_offset: Option<u64>,
    #[serde(default)]
    pub split_above: Option<u64>,
}

/// The schedule's export as a backfill of `request`'s range: the window
/// parameters and format of its `[incremental]`, no watermark, one file.
fn backfill_spec(
    schedule: &str,
    export: &pagefleet_shared::spec::ExportSpec,
    request: BackfillRequest,
) -> Result<pagefleet_shared::spec::ExportSpec, ApiError> {
    let refused = |why: &str| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("schedule {schedule:?} {why}"),
        )
    };
    let incremental = export
        .incremental
        .as_ref()
        .ok_or_else(|| refused("is not incremental: its windows have no parameters to send"))?;
    let until_param = incremental
        .until_param
        .clone()
        .ok_or_else(|| refused("has no `until_param`: a window needs an upper bound"))?;
    let mut spec = export.clone();
    spec.backfill = Some(pagefleet_shared::spec::BackfillSpec {
        from: request.from.clone(),
        to: request.to.clone(),
        window: request.window,
        format: incremental.format,
        since_param: incremental.since_param.clone(),
        until_param,
        split_above: request.split_above,
        max_offset: request.max_offset,
        min_window: 1,
    });
    // The range stands for the window in the output's names; the file is
    // named by it, so two backfills of one day do not share a file.
    let bounds = pagefleet_shared::spec::Window {
        from: incremental
            .format
            .parse(&request.from)
            .map_err(|e| refused_field("from", e))?,
        to: Some(
            incremental
                .format
                .parse(&request.to)
                .map_err(|e| refused_field("to", e))?,
        ),
    };
    let now = OffsetDateTime::now_utc();
    spec.output.dir = run_naming::fill(&export.output.dir, now, Some((incremental, &bounds)));
    spec.output.file = Some(run_naming::fill(
        &format!(
            "{}-backfill-{{window_start}}-{{window_end}}.csv",
            export.name
        ),
        now,
        Some((incremental, &bounds)),
    ));
    spec.incremental = None;
    spec.output.latest = None;
    spec.pinned(None, OffsetDateTime::now_utc())
        .map_err(spec_refused)
}

#[utoipa::path(post, path = "/v1/schedules/{name}/backfill", tag = "schedules",
    params(("name" = String, Path, description = "the schedule")),
    request_body(content = BackfillRequest, description = "the range and its windows"),
    responses((status = 200, description = "the backfill export", body = Submitted),
        (status = 404, description = "no such schedule of this tenant's", body = ApiError),
        (status = 422, description = "refused, naming the field", body = ApiError), (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
pub async fn backfill(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: BackfillRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("backfill request is not valid: {e}"),
        )
    })?;
    let export = state
        .store
        .schedule_export(tenant.as_str(), &name)
        .await?
        .ok_or_else(|| no_schedule(&name))?;
    let spec = backfill_spec(&name, &export, request)?;
    refuse_other_tenants(&state, &tenant, &spec)?;
    refuse_refused_source(&state, &spec)?;
    let submitted = state
        .store
        .submit_export(tenant.as_str(), None, &spec)
        .await
        .map_err(|e| match e {
            pagefleet_shared::store::SubmitError::Store(e) => ApiError::from(e),
            other => ApiError::new(StatusCode::CONFLICT, other.to_string()),
        })?;
    publish_now(&state, &submitted.outbox_ids).await;
    tracing::info!(schedule = %name, export = %submitted.id, "backfill submitted");
    Ok((StatusCode::CREATED, Json(submitted)).into_response())
}

/// What a run-now did.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunNow {
    /// `started`, `queued` or `skipped` (the overlap policy's answer).
    pub outcome: String,
    pub export_id: Option<uuid::Uuid>,
}

fn parse_schedule(body: &[u8]) -> Result<(ScheduleSpec, CronSchedule), ApiError> {
    let invalid = |message: String, field: Option<String>| {
        let mut err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message);
        err.field = field;
        err
    };
    let spec: ScheduleSpec = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("schedule is not valid: {e}"), None))?;
    let cron = spec.validate().map_err(|e| {
        let field = match &e {
            ScheduleError::Invalid { field, .. } => Some(field.to_string()),
            ScheduleError::Export(pagefleet_shared::spec::SpecError::Invalid { field, .. }) => {
                Some(format!("export.{field}"))
            }
            ScheduleError::Export(_) => Some("export".into()),
        };
        invalid(e.to_string(), field)
    })?;
    Ok((spec, cron))
}

fn refused_field(field: &str, message: String) -> ApiError {
    let mut err = ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("`{field}`: {message}"),
    );
    err.field = Some(field.to_string());
    err
}

fn no_schedule(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no schedule {name:?}"))
}

#[utoipa::path(post, path = "/v1/schedules", tag = "schedules",
    request_body(content = Object, description = "a schedule: cron, time_zone, overlap, catch_up, pause_after_failures and the export spec"),
    responses((status = 200, description = "created", body = ScheduleRecord),
        (status = 404, description = "no such schedule of this tenant's", body = ApiError),
        (status = 422, description = "refused, naming the field", body = ApiError), (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
pub async fn create(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    body: Bytes,
) -> Result<Response, ApiError> {
    // Finding an impossible expression's next slot can take a while: off
    // the runtime.
    let (spec, cron) = tokio::task::spawn_blocking(move || parse_schedule(&body))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "schedule check failed"))??;
    // What a run would be now is what the tenant checks apply to.
    let sample = spec
        .export
        .pinned(None, OffsetDateTime::now_utc())
        .map_err(|e| {
            let mut err = spec_refused(e);
            err.field = err.field.map(|f| format!("export.{f}"));
            err
        })?;
    refuse_other_tenants(&state, &tenant, &sample)?;
    refuse_refused_source(&state, &sample)?;
    let record = state
        .store
        .create_schedule(tenant.as_str(), &spec, &cron)
        .await
        .map_err(|e| match e {
            CreateScheduleError::NameTaken { .. } | CreateScheduleError::TooMany => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            CreateScheduleError::NoFutureSlot { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            CreateScheduleError::Store(e) => e.into(),
        })?;
    tracing::info!(schedule = %record.name, cron = %record.cron, tenant = %tenant, "schedule created");
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

#[utoipa::path(get, path = "/v1/schedules", tag = "schedules",
    responses((status = 200, description = "the tenant's schedules", body = Vec<ScheduleRecord>),
        (status = 404, description = "no such schedule of this tenant's", body = ApiError),
        (status = 422, description = "refused, naming the field", body = ApiError), (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
pub async fn list(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
) -> Result<Response, ApiError> {
    Ok(Json(state.store.list_schedules(tenant.as_str()).await?).into_response())
}

#[utoipa::path(get, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "the schedule")),
    responses((status = 200, description = "the schedule and its recent runs", body = ScheduleDetail),
        (status = 404, description = "no such schedule of this tenant's", body = ApiError),
        (status = 422, description = "refused, naming the field", body = ApiError), (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
pub async fn show(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let schedule = state
        .store
        .schedule(tenant.as_str(), &name)
        .await?
        .ok_or_else(|| no_schedule(&name))?;
    let runs = state.store.schedule_runs(schedule.id, RUNS_SHOWN).await?;
    let cursor_format = state
        .store
        .schedule_export(tenant.as_str(), &name)
        .await?
        .and_then(|spec| spec.incremental.map(|i| i.format));
    Ok(Json(ScheduleDetail {
        schedule,
        runs,
        cursor_format,
    })
    .into_response())
}

#[utoipa::path(post, path = "/v1/schedules/{name}/pause", tag = "schedules",
    params(("name" = String, Path, description = "the schedule")),
    responses((status = 200, description = "paused", body = ScheduleRecord),
        (status = 404, description = "no such schedule of this tenant's", body = ApiError),
        (status = 422, description = "refused, naming the field", body = ApiError), (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
pub async fn pause(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if !state
        .store
        .pause_schedule(tenant.as_str(), &name, "paused by hand")
        .await?
    {
        return Err(no_schedule(&name));
    }
    show(State(state), Tenant(tenant), Path(name)).await
}

#[utoipa::path(post, path = "/v1/schedules/{name}/resume", tag = "schedules",
    params(("name" = String, Path, description = "the schedule")),
    responses((status = 200, description = "resumed", body = ScheduleRecord),
        (status = 404, description = "no such schedule of this tenant's", body = ApiError),
        (status = 422, description = "refused, naming the field", body = ApiError), (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
pub async fn resume(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let schedule = state
        .store
        .schedule(tenant.as_str(), &name)
        .await?
        .ok_or_else(|| no_schedule(&name))?;
    let next = CronSchedule::parse(&schedule.cron, &schedule.time_zone)
        .ok()
        .and_then(|cron| cron.next_after(OffsetDateTime::now_utc()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("schedule {name:?} has no future slot to resume at"),
            )
        })?;
    if !state
        .store
        .resume_schedule(tenant.as_str(), &name, next)
        .await?
    {
        return Err(no_schedule(&name));
    }
    show(State(state), Tenant(tenant), Path(name)).await
}

#[utoipa::path(delete, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "the schedule")),
    responses((status = 200, description = "removed", body = Object),
        (status = 404, description = "no such schedule of this tenant's", body = ApiError),
        (status = 422, description = "refused, naming the field", body = ApiError), (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
pub async fn remove(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if !state.store.delete_schedule(tenant.as_str(), &name).await? {
        return Err(no_schedule(&name));
    }
    Ok(Json(serde_json::json!({ "removed": name })).into_response())
}

#[utoipa::path(post, path = "/v1/schedules/{name}/run", tag = "schedules",
    params(("name" = String, Path, description = "the schedule")),
    responses((status = 200, description = "what the overlap policy made of it", body = RunNow),
        (status = 404, description = "no such schedule of this tenant's", body = ApiError),
        (status = 422, description = "refused, naming the field", body = ApiError), (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
pub async fn run_now(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let fired: Fired = state
        .store
        .run_schedule_now(tenant.as_str(), &name, "run-now")
        .await?
        .ok_or_else(|| no_schedule(&name))?;
    publish_now(&state, &fired.outbox_ids).await;
    let answer = match fired.started.first() {
        Some((_, export)) => RunNow {
            outcome: "started".into(),
            export_id: Some(*export),
        },
        None if fired.queued > 0 => RunNow {
            outcome: "queued".into(),
            export_id: None,
        },
        None => RunNow {
            outcome: "skipped".into(),
            export_id: None,
        },
    };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}
