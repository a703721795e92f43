//! The schedules and the audit log, newest first.

use axum::extract::State;
use axum::response::Response;
use maud::html;

use pagefleet_shared::store::AuditQuery;

use super::layout::{page, store_problem};
use super::session::Session;
use crate::api::ApiState;

pub async fn schedules(State(state): State<ApiState>, session: Session) -> Response {
    let schedules = match state.store.list_schedules(&session.actor.tenant_id).await {
        Ok(s) => s,
        Err(e) => return store_problem(&session, e),
    };
    let body = html! {
        table {
            tr { th { "Name" } th { "Cron" } th { "Time zone" } th { "Next slot" } th { "Overlap" } th { "Failures in a row" } th { "Paused" } }
            @for s in &schedules {
                tr {
                    td { (s.name) } td { (s.cron) } td { (s.time_zone) } td { (s.next_slot) }
                    td { (format!("{:?}", s.overlap).to_lowercase()) }
                    td.num { (s.consecutive_failures) "/" (s.pause_after_failures) }
                    td { @if s.paused { "paused: " (s.paused_reason.clone().unwrap_or_default()) } }
                }
            }
        }
    };
    page("Schedules", Some(&session), body)
}

pub async fn audit(State(state): State<ApiState>, session: Session) -> Response {
    let query = AuditQuery {
        limit: Some(200),
        ..AuditQuery::default()
    };
    let records = match state
        .store
        .audit_log(&session.actor.tenant_id, &query)
        .await
    {
        Ok(r) => r,
        Err(e) => return store_problem(&session, e),
    };
    let body = html! {
        table id="audit" {
            tr { th { "At" } th { "Action" } th { "Dry run" } th { "Who" } th { "Follows" } th { "Outcome" } }
            @for r in &records {
                tr {
                    td { (r.at) } td { (r.action) } td { @if r.dry_run { "yes" } }
                    td { (r.actor) }
                    td { (r.follows.map(|f| f.to_string()).unwrap_or_default()) }
                    td { (r.outcome.to_string()) }
                }
            }
        }
    };
    page("Audit log", Some(&session), body)
}
