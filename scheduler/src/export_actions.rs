//! `POST /v1/exports/{id}/{cancel,pause,resume,retry,accept-gaps}`: an
//! operator's actions on one export, each recorded in the audit log. Which
//! state an action applies to is `lifecycle::ExportAction`'s to say; a
//! refusal is a 409 naming the state and why.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use pagefleet_shared::lifecycle::ExportAction;
use pagefleet_shared::store::{ActionDone, ActionError};

use crate::api::{parse_id, publish_now, ApiError, ApiState};
use crate::auth::Operator;

/// An action's name in a path.
pub fn action_named(name: &str) -> Option<ExportAction> {
    match name {
        "cancel" => Some(ExportAction::Cancel),
        "pause" => Some(ExportAction::Pause),
        "resume" => Some(ExportAction::Resume),
        "retry" => Some(ExportAction::Retry),
        "accept-gaps" => Some(ExportAction::AcceptGaps),
        _ => None,
    }
}

#[utoipa::path(post, path = "/v1/exports/{id}/{action}", tag = "exports",
    params(("id" = Uuid, Path, description = "the export"),
           ("action" = String, Path, description = "cancel, pause, resume, retry or accept-gaps")),
    responses((status = 200, description = "the state it moved from and to", body = ActionDone),
        (status = 404, description = "no such export or action", body = ApiError),
        (status = 409, description = "the action does not apply to the export's state", body = ApiError), (status = 401, description = "no token, or not a valid one", body = ApiError),
        (status = 403, description = "the token may not do this", body = ApiError)))]
pub async fn act(
    State(state): State<ApiState>,
    Operator(actor): Operator,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let Some(action) = action_named(&name) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no action {name:?} (cancel, pause, resume, retry, accept-gaps)"),
        ));
    };
    let done = (state.store.export_action(&actor, id, action).await).map_err(|e| match e {
        ActionError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
        ActionError::Refused { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        ActionError::Store(e) => e.into(),
    })?;
    tracing::info!(export = %id, action = %done.action, from = %done.from, to = %done.to, actor = %actor.name, "export action");
    publish_now(&state, &done.outbox_ids).await;
    Ok(Json(done).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_its_path_name() {
        for (name, action) in [
            ("cancel", ExportAction::Cancel),
            ("pause", ExportAction::Pause),
            ("resume", ExportAction::Resume),
            ("retry", ExportAction::Retry),
            ("accept-gaps", ExportAction::AcceptGaps),
        ] {
            assert_eq!(action_named(name), Some(action));
            assert_eq!(action.as_str().replace('_', "-"), name);
        }
        assert_eq!(action_named("delete"), None);
    }
}
