//! Exports: the list (filtered by state and name), one export's progress,
//! ETA, time breakdown and dead letters, and the actions its state allows.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use pagefleet_shared::lifecycle::ExportAction;
use pagefleet_shared::progress::{self, human_duration};
use pagefleet_shared::store::{ActionError, DlqFilter, ExportListFilter, ExportStatus};

use super::layout::{page, problem, refreshing, store_problem};
use super::session::Session;
use crate::api::{as_tenant_sees, publish_now, ApiState};
use crate::export_actions::action_named;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    name: String,
}

pub async fn list(
    State(state): State<ApiState>,
    session: Session,
    Query(q): Query<ListQuery>,
) -> Response {
    let filter = ExportListFilter {
        state: q.state.parse().ok(),
        name: Some(q.name.clone()).filter(|n| !n.is_empty() && n.len() <= 300),
        ..ExportListFilter::default()
    };
    let listed = (state.store)
        .list_exports_where(&session.actor.tenant_id, &filter, 100)
        .await;
    let shown = match listed {
        Ok(exports) => exports,
        Err(e) => return store_problem(&session, e),
    };
    let body = html! {
        form method="get" action="/console/exports" {
            label { "State " input type="text" name="state" value=(q.state) placeholder="any"; }
            label { "Name contains " input type="text" name="name" value=(q.name); }
            button type="submit" { "Filter" }
        }
        p.note { "The newest " (shown.len()) " export(s) the filter matches (100 at most)" }
        table {
            tr { th { "Export" } th { "Name" } th { "State" } th { "Pages" } th { "Rows" } th { "ETA" } th { "Created" } }
            @for e in &shown {
                tr {
                    td { a href={ "/console/exports/" (e.id) } { (e.id) } }
                    td { (e.name) }
                    td.state { (e.state) }
                    td.num { (e.pages_landed) "/" (e.pages_planned) @if !e.pages_total_known { "+" } }
                    td.num { (e.rows_staged) }
                    td { (e.progress.eta.as_ref().map(|x| human_duration(x.seconds)).unwrap_or_default()) }
                    td { (e.created_at) }
                }
            }
        }
    };
    page("Exports", Some(&session), body)
}

pub async fn detail(
    State(state): State<ApiState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return problem(&session, 400, "not an export id");
    };
    let status = match state.store.export_status(id).await {
        Ok(Some(s)) if s.tenant_id == session.actor.tenant_id => as_tenant_sees(&state, s),
        Ok(_) => return problem(&session, 404, &format!("no export {id}")),
        Err(e) => return store_problem(&session, e),
    };
    let filter = DlqFilter {
        export: Some(id),
        ..DlqFilter::default()
    };
    let letters = (state.store)
        .list_dead_letters(&session.actor.tenant_id, &filter, None, 50)
        .await
        .map(|p| p.letters)
        .unwrap_or_default();
    let body = html! {
        (summary(&status))
        (progress(&status))
        (actions(&session, &status))
        @if !letters.is_empty() {
            h2 { "Dead letters" }
            p { a href={ "/console/dlq?export=" (id) } { "Filter, dry-run and replay them" } }
            table {
                tr { th { "Dead letter" } th { "Page" } th { "Class" } th { "HTTP" } th { "Reason" } }
                @for d in &letters {
                    tr {
                        td { a href={ "/console/dlq/" (d.id) } { (d.id) } }
                        td.num { (d.page_no) }
                        td { (d.class) }
                        td { (d.last_status.map(|s| s.to_string()).unwrap_or_default()) }
                        td { (d.reason) }
                    }
                }
            }
        }
    };
    let response = page(&format!("Export {}", status.name), Some(&session), body);
    match status.is_settled() {
        true => response,
        false => refreshing(response, 5),
    }
}

fn summary(s: &ExportStatus) -> Markup {
    html! {
        table {
            tr { th { "Export" } td { (s.id) } }
            tr { th { "State" } td.state id="state" { (s.state) } }
            tr { th { "Pages" } td { (s.pages_landed) "/" (s.pages_planned) @if !s.pages_total_known { " (so far)" } } }
            tr { th { "Rows" } td { (s.rows_staged) " staged, " (s.rows_replaced) " replaced by merge" } }
            tr { th { "Requests" } td { (s.requests) " (" (s.retries) " retries, " (s.rate_limited) " 429s)" } }
            tr { th { "Dead letters" } td { (s.dead_letters_open) " open" } }
            @if s.pages_discarded > 0 {
                tr { th { "Gaps" } td { (s.pages_discarded) " discarded page(s)" @if !s.accept_gaps { ", not all accepted" } } }
            }
            @if let Some(e) = &s.error { tr { th { "Error" } td.error { (e) } } }
            @if let Some(p) = &s.output_path { tr { th { "CSV" } td { (p) " · " (s.csv_rows.unwrap_or(0)) " rows" } } }
            @if let Some(v) = &s.verification {
                tr { th { "Verified" } td { (format!("{:?}", v.status).to_lowercase()) @if let Some(t) = v.source_total { ", source total " (t) } } }
            }
        }
    }
}

fn progress(s: &ExportStatus) -> Markup {
    let p = &s.progress;
    let t = &p.time;
    html! {
        h2 { "Progress" }
        table {
            tr { th { "ETA" } td id="eta" {
                @match &p.eta {
                    Some(e) => { (human_duration(e.seconds)) " (" (e.pages_remaining) " page(s) left at " (format!("{:.2}", e.pages_per_s)) " pages/s)" }
                    None => { "—" }
                }
            } }
            tr { th { "Parked" } td { (p.pages_parked) " page(s)" } }
            tr { th { "Source rate" } td { (progress::rate_line(p.source_rate, p.stated_rate, p.rate_learned)) } }
        }
        h2 { "Where the time goes" }
        table {
            tr { th { "Fetching" } th { "Waiting for tokens" } th { "Retrying" } th { "Parked" } th { "Waiting for a worker" } th { "Finalizing" } }
            tr {
                @for v in [t.fetching_s, t.waiting_for_tokens_s, t.retrying_s, t.parked_s, t.waiting_for_a_worker_s, t.finalizing_s] {
                    td.num { (format!("{v:.1} s")) }
                }
            }
        }
        @if let Some(why) = &p.why_slow { p id="why-slow" { "Why slow: " (why) } }
    }
}

const ACTIONS: [(ExportAction, &str, &str); 5] = [
    (ExportAction::Pause, "pause", "Pause"),
    (ExportAction::Resume, "resume", "Resume"),
    (ExportAction::Retry, "retry", "Retry the finalize"),
    (ExportAction::AcceptGaps, "accept-gaps", "Accept the gaps"),
    (ExportAction::Cancel, "cancel", "Cancel"),
];

fn actions(session: &Session, s: &ExportStatus) -> Markup {
    html! {
        p {
            @for (action, path, label) in ACTIONS {
                @if action.applies_to(s.state) {
                    form.inline method="post" action={ "/console/exports/" (s.id) "/" (path) } {
                        input type="hidden" name="csrf" value=(session.csrf);
                        button type="submit" { (label) }
                    }
                    " "
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct ActionForm {
    csrf: String,
}

pub async fn act(
    State(state): State<ApiState>,
    session: Session,
    Path((id, name)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some(refusal) = session.foreign_form(&form.csrf) {
        return refusal;
    }
    let (Ok(id), Some(action)) = (uuid::Uuid::parse_str(&id), action_named(&name)) else {
        return problem(&session, 404, "no such export or action");
    };
    match state.store.export_action(&session.actor, id, action).await {
        Ok(done) => {
            publish_now(&state, &done.outbox_ids).await;
            Redirect::to(&format!("/console/exports/{id}")).into_response()
        }
        Err(ActionError::NotFound(_)) => problem(&session, 404, &format!("no export {id}")),
        Err(e @ ActionError::Refused { .. }) => problem(&session, 409, &e.to_string()),
        Err(ActionError::Store(e)) => store_problem(&session, e),
    }
}
