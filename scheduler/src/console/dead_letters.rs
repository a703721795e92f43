//! Dead letters: the filter (export, class, HTTP status, fingerprint,
//! source key), the counts per class, one letter whole, and the actions on
//! what the filter matches: a dry run (what a replay costs, changing
//! nothing), the replay that follows it, a discard with its reason.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use pagefleet_shared::store::{ActionOutcome, ActionRequest, DeadLetter, ReplayError};

use super::layout::{page, problem, store_problem};
use super::session::Session;
use crate::api::{publish_now, ApiState};
use crate::dlq::DlqQuery;

/// The list's filter as hidden fields (without `all`: the box says it).
fn hidden_filter(form: &FilterForm) -> Markup {
    html! {
        input type="hidden" name="export" value=(form.export);
        input type="hidden" name="class" value=(form.class);
        input type="hidden" name="status" value=(form.status);
        input type="hidden" name="fingerprint" value=(form.fingerprint);
        input type="hidden" name="source_key" value=(form.source_key);
    }
}

/// The filter as the list's form and the action forms carry it.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct FilterForm {
    #[serde(default)]
    export: String,
    #[serde(default)]
    class: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    fingerprint: String,
    #[serde(default)]
    source_key: String,
    /// Every open letter: an action without a filter must say so.
    #[serde(default)]
    all: String,
}

fn some(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

impl FilterForm {
    fn query(&self) -> DlqQuery {
        DlqQuery {
            export: some(&self.export),
            class: some(&self.class),
            status: some(&self.status),
            fingerprint: some(&self.fingerprint),
            source_key: some(&self.source_key),
            limit: Some(200),
            ..DlqQuery::default()
        }
    }

    /// The same filter, as hidden fields of an action's form.
    fn hidden(&self) -> Markup {
        html! {
            (hidden_filter(self))
            input type="hidden" name="all" value=(self.all);
        }
    }

    fn is_empty(&self) -> bool {
        [
            &self.export,
            &self.class,
            &self.status,
            &self.fingerprint,
            &self.source_key,
        ]
        .iter()
        .all(|f| f.trim().is_empty())
    }

    /// Without a filter, the box that says "every open letter".
    fn all_box(&self) -> Markup {
        html! {
            @if self.is_empty() {
                label { input type="checkbox" name="all" value="true"; " every open dead letter (no filter)" }
            }
        }
    }
}

pub async fn list(
    State(state): State<ApiState>,
    session: Session,
    Query(form): Query<FilterForm>,
) -> Response {
    let filter = match form.query().filter() {
        Ok(f) => f,
        Err(e) => return problem(&session, 400, &e.error),
    };
    let page_of = (state.store)
        .list_dead_letters(&session.actor.tenant_id, &filter, None, 200)
        .await;
    let letters = match page_of {
        Ok(p) => p,
        Err(e) => return store_problem(&session, e),
    };
    let body = html! {
        form method="get" action="/console/dlq" id="filter" {
            label { "Export " input type="text" name="export" value=(form.export) size="38"; }
            label { "Class " input type="text" name="class" value=(form.class) size="12"; }
            label { "HTTP status " input type="text" name="status" value=(form.status) size="4"; }
            label { "Fingerprint " input type="text" name="fingerprint" value=(form.fingerprint) size="18"; }
            button type="submit" { "Filter" }
        }
        p id="counts" {
            (letters.total) " open dead letter(s)"
            @for (class, n) in &letters.by_class { " · " (class) " " (n) }
        }
        (table(&letters.letters))
        @if letters.total > 0 {
            fieldset {
                legend { "Replay what the filter matches" }
                form method="post" action="/console/dlq/replay" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="dry_run" value="true";
                    (hidden_filter(&form))
                    (form.all_box())
                    button type="submit" id="dry-run" { "Dry run" }
                    span.note { " shows the pages, what they cost at the sources' rates, and changes nothing" }
                }
            }
            fieldset {
                legend { "Discard what the filter matches" }
                form method="post" action="/console/dlq/discard" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="dry_run" value="true";
                    (hidden_filter(&form))
                    (form.all_box())
                    label { "Reason " input type="text" name="reason" required size="40" maxlength="1000"; }
                    label { input type="checkbox" name="accept_gaps" value="true"; " accept the gaps (publish without these pages)" }
                    button type="submit" id="discard-dry-run" { "Dry run of the discard" }
                }
            }
        }
    };
    page("Dead letters", Some(&session), body)
}

fn table(letters: &[DeadLetter]) -> Markup {
    html! {
        table id="letters" {
            tr { th { "Dead letter" } th { "Export" } th { "Part" } th { "Page" } th { "Class" } th { "HTTP" } th { "Fingerprint" } th { "Reason" } }
            @for d in letters {
                tr {
                    td { a href={ "/console/dlq/" (d.id) } { (d.id) } }
                    td { a href={ "/console/exports/" (d.export_id) } { (d.export_id.to_string()[..8]) } }
                    td.num { (d.partition_no) }
                    td.num { (d.page_no) }
                    td { (d.class) }
                    td { (d.last_status.map(|s| s.to_string()).unwrap_or_default()) }
                    td { a href={ "/console/dlq?fingerprint=" (d.fingerprint.clone().unwrap_or_default()) } { (d.fingerprint.clone().unwrap_or_default()) } }
                    td { (d.reason) }
                }
            }
        }
    }
}

pub async fn detail(
    State(state): State<ApiState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return problem(&session, 400, "not a dead-letter id");
    };
    let d = match state
        .store
        .dead_letter_detail(&session.actor.tenant_id, id)
        .await
    {
        Ok(Some(d)) => d,
        Ok(None) => return problem(&session, 404, &format!("no dead letter {id}")),
        Err(e) => return store_problem(&session, e),
    };
    let attempts = d.attempts.as_array().cloned().unwrap_or_default();
    let field = |a: &serde_json::Value, k: &str| match a.get(k) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let body = html! {
        table {
            tr { th { "Export" } td { a href={ "/console/exports/" (d.export_id) } { (d.export_id) } } }
            tr { th { "Page" } td { (d.page_no) " of partition " (d.partition_no) " (now " (d.task_state) ")" } }
            tr { th { "Class" } td { (d.class) } }
            tr { th { "Reason" } td { (d.reason) } }
            tr { th { "Last status" } td { (d.last_status.map(|s| s.to_string()).unwrap_or_default()) } }
            tr { th { "Source key" } td { (d.source_key.clone().unwrap_or_default()) } }
            tr { th { "Fingerprint" } td { (d.fingerprint.clone().unwrap_or_default()) } }
            tr { th { "Request" } td { "GET " (field(&d.request, "url")) } }
            @if let Some(r) = &d.resolution {
                tr { th { "Resolved" } td { (r) " by " (d.resolved_by.clone().unwrap_or_default()) " " (d.resolution_reason.clone().unwrap_or_default()) } }
            }
        }
        h2 { "Attempts (" (attempts.len()) ")" }
        table {
            tr { th { "At" } th { "Outcome" } th { "Status" } th { "ms" } th { "Retry-After" } th { "Rate-limit headers" } th { "Error" } }
            @for a in &attempts {
                tr {
                    td { (field(a, "at")) } td { (field(a, "outcome")) } td { (field(a, "status")) }
                    td.num { (field(a, "millis")) } td { (field(a, "retry_after")) }
                    td { (field(a, "rate_limit")) } td { (field(a, "error")) }
                }
            }
        }
        @if let Some(body) = &d.body_excerpt { h2 { "Body excerpt" } pre { (body) } }
    };
    page(&format!("Dead letter {}", d.id), Some(&session), body)
}

#[derive(Deserialize)]
pub struct ActionForm {
    csrf: String,
    #[serde(flatten)]
    filter: FilterForm,
    #[serde(default)]
    dry_run: Option<String>,
    #[serde(default)]
    follows: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    accept_gaps: Option<String>,
}

impl ActionForm {
    fn request(&self) -> Result<ActionRequest, String> {
        let filter = self.filter.query().filter().map_err(|e| e.error)?;
        let follows = (self.follows.as_deref().and_then(some))
            .map(|f| uuid::Uuid::parse_str(&f).map_err(|_| "not a dry-run id".to_string()))
            .transpose()?;
        Ok(ActionRequest {
            all: self.filter.all == "true",
            filter,
            dry_run: self.dry_run.as_deref() == Some("true"),
            follows,
            reason: self.reason.clone(),
            accept_gaps: self.accept_gaps.as_deref() == Some("true"),
            set: Vec::new(),
        })
    }
}

pub async fn replay(
    State(state): State<ApiState>,
    session: Session,
    Form(form): Form<ActionForm>,
) -> Response {
    act(state, session, form, "replay").await
}

pub async fn discard(
    State(state): State<ApiState>,
    session: Session,
    Form(form): Form<ActionForm>,
) -> Response {
    act(state, session, form, "discard").await
}

async fn act(state: ApiState, session: Session, form: ActionForm, verb: &str) -> Response {
    if let Some(refusal) = session.foreign_form(&form.csrf) {
        return refusal;
    }
    let request = match form.request() {
        Ok(r) => r,
        Err(why) => return problem(&session, 400, &why),
    };
    let outcome = match verb {
        "replay" => {
            state
                .store
                .replay_dead_letters(&session.actor, &request)
                .await
        }
        _ => {
            state
                .store
                .discard_dead_letters(&session.actor, &request)
                .await
        }
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(ReplayError::Store(e)) => return store_problem(&session, e),
        Err(e) => return problem(&session, 422, &e.to_string()),
    };
    if !outcome.dry_run {
        publish_now(&state, &outcome.outbox_ids).await;
    }
    let title = match (outcome.dry_run, verb) {
        (true, _) => format!("Dry run of a {verb}"),
        (false, "replay") => "Replayed".to_string(),
        (false, _) => "Discarded".to_string(),
    };
    let body = result(&session, &form.filter, &request, &outcome, verb);
    page(&title, Some(&session), body)
}

fn result(
    session: &Session,
    filter: &FilterForm,
    request: &ActionRequest,
    o: &ActionOutcome,
    verb: &str,
) -> Markup {
    html! {
        p id="outcome" {
            @if o.dry_run { "Would " (verb) " " } @else { (verb) "ed " }
            (o.pages.len()) " page(s) of " (o.exports.len()) " export(s)"
            @if o.dry_run { "; nothing changed." }
        }
        @if verb == "replay" && !o.pages.is_empty() {
            p id="cost" {
                "Cost: at least " (o.requests_at_least) " request(s), "
                (format!("{:.1}", o.seconds_at_least)) " s at the sources' rates"
            }
        }
        table {
            tr { th { "Page" } th { "Partition" } th { "Export" } th { "Class" } th { "Dead letter" } }
            @for p in &o.pages {
                tr {
                    td.num { (p.page) } td.num { (p.partition) }
                    td { a href={ "/console/exports/" (p.export) } { (p.export) } }
                    td { (p.class) } td { (p.dead_letter) }
                }
            }
        }
        @for s in &o.skipped { p.note { "Skipped " (s.dead_letter) ": " (s.why) } }
        @for (export, state) in &o.export_states {
            p { "Export " a href={ "/console/exports/" (export) } { (export) } " is " span.state { (state) } }
        }
        @if o.dry_run && !o.pages.is_empty() {
            form method="post" action={ "/console/dlq/" (verb) } {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="follows" value=(o.audit_id);
                (filter.hidden())
                @if let Some(reason) = &request.reason { input type="hidden" name="reason" value=(reason); }
                @if request.accept_gaps { input type="hidden" name="accept_gaps" value="true"; }
                button type="submit" id=(verb) { (if verb == "replay" { "Replay exactly these" } else { "Discard exactly these" }) }
            }
        }
        p.note { "Audit record " (o.audit_id) " · " a href="/console/audit" { "audit log" } }
    }
}
