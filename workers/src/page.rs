//! One page task: claim, wait for a token, fetch, classify, retry, and land
//! (or dead-letter).
//!
//! The retry loop lives here, in the worker that holds the delivery, so a
//! retried request needs no new message; the caps come from the spec.
//! The decisions themselves (what an answer means, go or park, retry or
//! dead-letter) are pure functions in [`decide`]; this file is the async
//! shell that waits, sends, records and stores around them.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use uuid::Uuid;

use pagefleet_shared::failure;
use pagefleet_shared::flatten::{flatten_record_within, row_key, FlatRecord, FlattenError};
use pagefleet_shared::guard::Gate;
use pagefleet_shared::limits::{self, Breach, FleetLimits};
use pagefleet_shared::model::{DeadLetterClass, RequestCounts};
use pagefleet_shared::pagination::{
    self, Counts, Page, PageBody, PaginationError, Records, Role, Statement,
};
use pagefleet_shared::rate_keys;
use pagefleet_shared::ratelimit::{Bucket, Waited};
use pagefleet_shared::ratelimit_headers;
use pagefleet_shared::redact;
use pagefleet_shared::retry::{Outcome, RetryBudget};
use pagefleet_shared::source::{self, Credential, Fetched, SourceError};
use pagefleet_shared::spec::{ExportSpec, Split};
use pagefleet_shared::store::{
    Attempt, ChainNext, Claim, DeadLetterInput, Landed, Landing, Lease, PageRows, PageWork,
    StoreError,
};
use pagefleet_shared::telemetry::metrics;
use pagefleet_shared::tenancy;
use tracing::Instrument;

use crate::clock;
use crate::context::WorkerContext;

mod ahead;
mod decide;

use ahead::Ahead;
use decide::{Admission, Answer, Next, Verdict};

/// How long a claim holds a task without a heartbeat.
pub const LEASE: Duration = Duration::from_secs(10);
/// The longest a delivery waits for another worker that holds its task.
const HOLDER_WAIT: Duration = Duration::from_secs(120);

/// How much of a failing body a dead letter keeps.
const BODY_EXCERPT_BYTES: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// Postgres could not be reached or refused the landing: hand the
    /// delivery back so it is tried again.
    #[error("page task {task_id}: {source}")]
    Store { task_id: Uuid, source: StoreError },
}

impl PageError {
    /// Wraps a Postgres error of task `task_id`, for `map_err`.
    fn store(task_id: Uuid) -> impl FnOnce(StoreError) -> PageError {
        move |source| PageError::Store { task_id, source }
    }
}

/// What became of a task.
#[derive(Debug)]
pub enum PageResult {
    Landed {
        rows: u64,
        finalize: bool,
        /// The chain's next page, for this worker to fetch itself (its
        /// message was not published).
        follow: Option<Follow>,
    },
    Duplicate,
    DeadLettered,
    /// Not ours to do (done, dead, cancelled, unknown).
    Skipped,
    /// Handed back with a not-before time (a long wait for the source).
    Parked,
    /// Given up unfinished by a worker shutting down: deliver it again.
    HandedBack,
}

/// How a worker came to run a page task.
#[derive(Debug)]
pub enum Taken {
    /// A delivery from the queue.
    Delivered(Uuid),
    /// The chain's next page after one this worker landed (see
    /// `WorkerContext::follow_chains`).
    Followed(Follow),
}

/// A chain's next page to fetch without the queue, when the page before
/// it landed (the hop is measured from there), and its answer when it was
/// fetched while that page landed.
#[derive(Debug)]
pub struct Follow {
    pub next: ChainNext,
    pub landed_at: std::time::Instant,
    ahead: Option<Box<Ahead>>,
    /// The claim on `next`, made once the landing committed (while the
    /// request sent ahead was out).
    claimed: Option<ClaimMade>,
}

/// A claim made ahead of running the task, and the token it was made with.
#[derive(Debug)]
struct ClaimMade {
    token: String,
    claim: Result<Claim, StoreError>,
}

/// What was done for a chain's next page while the page before it
/// landed: its request, and its claim, made once the landing committed.
#[derive(Debug, Default)]
struct Readied {
    ahead: Option<Box<Ahead>>,
    claimed: Option<ClaimMade>,
}

impl Follow {
    /// Leaves the page to the queue after all (the worker is draining): the
    /// claim made ahead is released and the message sent. Whatever fails
    /// here, the reconciler re-queues the task.
    pub async fn give_back(self, ctx: &WorkerContext) {
        let (task_id, outbox_id) = (self.next.task_id, self.next.outbox_id);
        let claim = self.claimed.as_ref().map(|made| made.token.as_str());
        match ctx
            .store
            .give_back_followed(task_id, claim, outbox_id)
            .await
        {
            Ok(()) => ctx.publish_outbox(&[outbox_id]).await,
            Err(e) => tracing::warn!(error = %e, outbox_id, "not given back; the reconciler will"),
        }
    }

    /// Nothing fetched or claimed ahead (tests).
    pub fn new(next: ChainNext) -> Follow {
        Follow {
            next,
            landed_at: std::time::Instant::now(),
            ahead: None,
            claimed: None,
        }
    }
}

/// A claim token: each claim gets its own, so a second delivery of the
/// same task to this very process (after a channel recovery) sees the
/// first as a live holder instead of claiming it again.
fn claim_token(ctx: &WorkerContext) -> String {
    format!("{}/{}", ctx.worker, pagefleet_shared::model::new_id())
}

impl Taken {
    pub fn task_id(&self) -> Uuid {
        match self {
            Taken::Delivered(task_id) => *task_id,
            Taken::Followed(follow) => follow.next.task_id,
        }
    }
}

/// Claims and runs one page task to the end.
pub async fn handle_page(ctx: &WorkerContext, taken: Taken) -> Result<PageResult, PageError> {
    let task_id = taken.task_id();
    let claim = match &taken {
        Taken::Followed(Follow {
            claimed: Some(made),
            ..
        }) => made.token.clone(),
        _ => claim_token(ctx),
    };
    tokio::select! {
        // A task that finished as the hand-back fired keeps its result.
        biased;
        result = claim_and_run(ctx, taken, &claim) => result,
        // A drain that ran out of time: give the claim up in Postgres so the
        // next worker takes the task at once instead of waiting out a lease.
        // A landing cut short here rolls back; one that already committed
        // leaves nothing to release.
        _ = ctx.hand_back.cancelled() => {
            ctx.store
                .release_claim(task_id, &claim)
                .await
                .map_err(PageError::store(task_id))?;
            Ok(PageResult::HandedBack)
        }
    }
}

async fn claim_and_run(
    ctx: &WorkerContext,
    taken: Taken,
    claim: &str,
) -> Result<PageResult, PageError> {
    let task_id = taken.task_id();
    let (claimed, hop_from, ahead) = match taken {
        Taken::Delivered(task_id) => (wait_for_claim(ctx, task_id, claim).await?, None, None),
        Taken::Followed(follow) => {
            let made = match follow.claimed {
                Some(made) => made.claim,
                None => ctx.store.claim_followed(follow.next, LEASE, claim).await,
            };
            let claimed = settle_followed(ctx, follow.next, made).await?;
            (claimed, Some(follow.landed_at), follow.ahead)
        }
    };
    let work = match claimed {
        Claimed::Work(work) => work,
        Claimed::Nothing(result) => return Ok(result),
    };
    if work.export_state.is_terminal() {
        return Ok(PageResult::Skipped);
    }
    if let Some(reason) = decide::lost_too_often(&work) {
        // Fetching it again would most likely take this worker down too.
        let class = DeadLetterClass::WorkerLost;
        let shown = Shown::nothing();
        return dead_letter(ctx, &work, &mut Tally::default(), class, reason, shown).await;
    }
    let span = tracing::info_span!("page", export = %work.export_id, task = %task_id,
        partition = work.partition_no, page = work.page_no);
    tokio::select! {
        result = run_task(ctx, &work, claim, hop_from, ahead).instrument(span) => result,
        lost = heartbeat(ctx, task_id, claim) => Ok(lost),
    }
}

/// What claiming a task came to.
enum Claimed {
    /// This worker holds the task now.
    Work(Box<PageWork>),
    /// Nothing to run: the delivery's result as it stands.
    Nothing(PageResult),
}

/// Claims the task, waiting while another worker holds it.
async fn wait_for_claim(
    ctx: &WorkerContext,
    task_id: Uuid,
    claim: &str,
) -> Result<Claimed, PageError> {
    let waiting_since = std::time::Instant::now();
    loop {
        let claimed = ctx.store.claim_page(task_id, LEASE, claim).await;
        match claimed.map_err(PageError::store(task_id))? {
            Claim::Claimed(work) => return Ok(Claimed::Work(work)),
            Claim::Gone => return Ok(Claimed::Nothing(PageResult::Skipped)),
            Claim::Duplicate => {
                metrics().duplicate_deliveries.inc();
                return Ok(Claimed::Nothing(PageResult::Skipped));
            }
            // Another worker holds the task. Keep this delivery, unacked,
            // until the holder lands it (then it is gone) or dies (then its
            // lease runs out within LEASE and this one takes over). Acking
            // while the holder lives would be wrong after a broker restart:
            // the holder's own delivery died with its channel, so this one
            // is the task's only message, and were the holder then killed,
            // only the reconciler could bring it back, at the end of the
            // queue. Past HOLDER_WAIT the holder is stuck, not slow; leave
            // the task to it and to the reconciler.
            Claim::Held { remaining } if waiting_since.elapsed() < HOLDER_WAIT => {
                tokio::select! {
                    _ = tokio::time::sleep(remaining.min(LEASE) + Duration::from_millis(500)) => {}
                    // Nothing claimed, nothing to finish: a draining worker
                    // hands such a delivery back at once.
                    _ = ctx.draining.cancelled() => return Ok(Claimed::Nothing(PageResult::HandedBack)),
                }
            }
            Claim::Held { .. } => return Ok(Claimed::Nothing(PageResult::Skipped)),
        }
    }
}

/// What claiming a chain's next page for this worker (which landed the
/// page before it) came to. Not claimed (the export paused or ended
/// meanwhile), its message goes to the queue after all.
async fn settle_followed(
    ctx: &WorkerContext,
    next: ChainNext,
    claimed: Result<Claim, StoreError>,
) -> Result<Claimed, PageError> {
    let task_id = next.task_id;
    match claimed.map_err(PageError::store(task_id))? {
        Claim::Claimed(work) => Ok(Claimed::Work(work)),
        Claim::Gone | Claim::Duplicate | Claim::Held { .. } => {
            ctx.publish_outbox(&[next.outbox_id]).await;
            Ok(Claimed::Nothing(PageResult::Skipped))
        }
    }
}

/// Keeps the lease fresh while the task waits for tokens and retries;
/// returns once another worker took the task over (it decided this one was
/// dead), or the claim was given back. A task this claim landed needs no
/// lease, and its worker may still be busy with it (a chain's next page's
/// answer is out): the heartbeat stops extending then and never returns.
/// A failed extension is only logged: the next one may succeed within the
/// lease.
async fn heartbeat(ctx: &WorkerContext, task_id: Uuid, claim: &str) -> PageResult {
    loop {
        tokio::time::sleep(LEASE / 4).await;
        match ctx.store.extend_lease(task_id, LEASE, claim).await {
            Ok(Lease::Extended) => {}
            Ok(Lease::TaskDone) => return std::future::pending().await,
            Ok(Lease::Lost) => return PageResult::Skipped,
            Err(e) => tracing::debug!(error = %e, %task_id, "lease not extended"),
        }
    }
}

/// How many attempts a task's history keeps, and how many of the first
/// ones stay when it is full (the rest are the latest).
const HISTORY: usize = 50;
const HISTORY_HEAD: usize = 10;

/// Counters of one task's requests, reported when it lands or dies, and
/// its attempts not yet recorded on the task.
#[derive(Debug, Default)]
struct Tally {
    counts: RequestCounts,
    attempts: Vec<Attempt>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// At most 200 characters of a header or an error in an attempt.
fn bounded(mut text: String) -> String {
    if text.len() > 200 {
        let mut end = 200;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// `X-RateLimit-*`, `RateLimit`, `RateLimit-*` (the IETF draft's), lowercase.
fn is_rate_limit_header(name: &str) -> bool {
    name.starts_with("x-ratelimit") || name.starts_with("ratelimit")
}

impl Tally {
    /// Takes over what another tally counted (a request sent for this
    /// task before it was claimed).
    fn absorb(&mut self, other: Tally) {
        let (mine, theirs) = (&mut self.counts, other.counts);
        mine.requests += theirs.requests;
        mine.retries += theirs.retries;
        mine.rate_limited += theirs.rate_limited;
        mine.time.fetching_us += theirs.time.fetching_us;
        mine.time.tokens_us += theirs.time.tokens_us;
        mine.source_rate_milli = theirs.source_rate_milli.or(mine.source_rate_milli);
        for attempt in other.attempts {
            self.push(attempt);
        }
    }

    fn record(&mut self, outcome: &str, status: Option<u16>, elapsed: Duration) {
        self.push(Attempt {
            at: clock::rfc3339(time::OffsetDateTime::now_utc()),
            outcome: outcome.to_string(),
            status,
            millis: elapsed.as_millis() as u64,
            error: None,
            retry_after: None,
            rate_limit: Default::default(),
        });
    }

    /// An attempt that got no answer, with what went wrong (redacted).
    fn record_error(&mut self, outcome: &str, error: String, elapsed: Duration) {
        self.record(outcome, None, elapsed);
        if let Some(last) = self.attempts.last_mut() {
            last.error = Some(bounded(error));
        }
    }

    /// An answer, with the `Retry-After` and rate-limit headers it carried.
    fn record_answer(&mut self, outcome: &str, response: &Fetched) {
        self.record(outcome, Some(response.status), response.elapsed);
        let Some(last) = self.attempts.last_mut() else {
            return;
        };
        for (name, value) in &response.headers {
            let Ok(value) = value.to_str() else { continue };
            let name = name.as_str();
            if name == "retry-after" {
                last.retry_after = Some(bounded(value.to_string()));
            } else if is_rate_limit_header(name) && last.rate_limit.len() < 8 {
                last.rate_limit
                    .insert(name.to_string(), bounded(value.to_string()));
            }
        }
    }

    fn push(&mut self, attempt: Attempt) {
        // Keep the history bounded: the first attempts and the latest ones.
        if self.attempts.len() >= HISTORY {
            self.attempts.remove(HISTORY_HEAD);
        }
        self.attempts.push(attempt);
    }

    fn count_failure(&mut self, outcome: &Outcome) {
        if matches!(outcome, Outcome::RateLimited { .. }) {
            self.counts.rate_limited += 1;
            metrics().rate_limited.inc();
        }
    }

    fn count_retry(&mut self) {
        self.counts.retries += 1;
        metrics().retries.inc();
    }
}

/// What every attempt of a task sends, resolved once per claim.
struct Request {
    url: url::Url,
    /// The origin every followed URL must keep.
    origin: url::Url,
    credential: Option<Credential>,
    bucket: Bucket,
    timeout: Duration,
    /// Where the answer's records are (`source.records_path`).
    records_path: Option<String>,
}

impl Request {
    /// The request as a dead letter shows it (no secret in it).
    fn as_shown(&self) -> Value {
        let header = self.credential.as_ref().map(|c| c.header_name().as_str());
        failure::shown_request(&source::display_url(&self.url), header)
    }

    /// How much of a body a dead letter of this request reads: the excerpt
    /// and room for a credential across its cut (see `redact::excerpt`).
    fn excerpt_window(&self) -> usize {
        let none = redact::Known::none();
        let known = self.credential.as_ref().map_or(&none, Credential::known);
        redact::excerpt_window(BODY_EXCERPT_BYTES, known)
    }

    /// What a dead letter of this request shows: `response`, with this
    /// request's credential removed from it by value.
    fn shown<'a>(&'a self, response: Option<&'a Fetched>) -> Shown<'a> {
        Shown {
            response,
            known: self.credential.as_ref().map(Credential::known),
            request: Some(self),
        }
    }
}

/// The answer a dead letter shows, and the secrets to remove from it (and
/// from the reason) first.
struct Shown<'a> {
    response: Option<&'a Fetched>,
    known: Option<&'a redact::Known>,
    /// The request, when the task got as far as making one.
    request: Option<&'a Request>,
}

impl Shown<'_> {
    /// No answer and no credential: the task never sent anything.
    fn nothing() -> Shown<'static> {
        Shown {
            response: None,
            known: None,
            request: None,
        }
    }
}

/// What one attempt came to.
#[derive(Debug)]
enum Attempted {
    /// A 2xx with a JSON body.
    Land { response: Fetched, body: PageBody },
    /// Anything else; `response` when there was an answer at all.
    Failed {
        outcome: Outcome,
        response: Option<Fetched>,
    },
    /// Not sent: the outbound policy refuses the address. Asking again
    /// would be refused again.
    Refused { reason: String },
    /// An answer over one of the fleet's ceilings (`measured` says what
    /// and which): dead-lettered at once, never retried.
    OverLimit {
        measured: String,
        response: Option<Fetched>,
    },
}

/// The retry loop: admit, send, judge, then land, park, dead-letter, or
/// wait and go again.
async fn run_task(
    ctx: &WorkerContext,
    work: &PageWork,
    claim: &str,
    mut hop_from: Option<std::time::Instant>,
    ahead: Option<Box<Ahead>>,
) -> Result<PageResult, PageError> {
    let mut tally = Tally::default();
    tally.counts.time.queued_us = micros(work.queued_for);
    // A chain page fetched ahead was sent with this task's credential,
    // read just before.
    let prepared = match ahead.as_ref().and_then(|a| a.credential_for(work)) {
        Some(credential) => request_with(ctx, work, credential),
        None => prepare_request(ctx, work).await,
    };
    let request = match prepared {
        Ok(request) => request,
        Err((class, reason)) => {
            return dead_letter(ctx, work, &mut tally, class, reason, Shown::nothing()).await;
        }
    };
    let retry = &work.spec.retry;
    let mut budget = RetryBudget::resume(retry, work.failures, work.failing_for);
    let base = Duration::from_millis(retry.base_ms);
    // The latest answer that did not land: what a dead letter shows.
    let mut last: Option<Fetched> = None;
    let mut retrying = work.failures > 0;
    let mut ahead = ahead.and_then(|a| ahead::for_request(*a, &request, &mut tally));
    loop {
        let attempted = match ahead.take() {
            // Sent while the page before landed: no hop at all.
            Some(attempted) => {
                hop_from = None;
                metrics().chain_hop.observe(0.0);
                attempted
            }
            None => {
                let admitting = std::time::Instant::now();
                if let Some(wait) = admit(ctx, work, &request, retrying, &mut tally).await {
                    tally.counts.time.parked_us += micros(wait);
                    return park(ctx, work, claim, &tally, budget.failed_attempts(), wait).await;
                }
                tally.counts.time.tokens_us += micros(admitting.elapsed());
                if let Some(landed_at) = hop_from.take() {
                    (metrics().chain_hop).observe(landed_at.elapsed().as_secs_f64());
                }
                attempt(ctx, work, &request, &mut tally).await
            }
        };
        let outcome = match attempted {
            Attempted::Land { response, body } => {
                // The page's split holds the body now; a dead letter
                // would show only its start.
                let response = response.with_body_start(request.excerpt_window());
                return land(ctx, work, &mut tally, &response, body, &request).await;
            }
            // Nothing was fetched, so there is no answer to show either.
            Attempted::Refused { reason } => {
                let class = DeadLetterClass::Refused;
                let shown = request.shown(None);
                return dead_letter(ctx, work, &mut tally, class, reason, shown).await;
            }
            Attempted::OverLimit { measured, response } => {
                let (class, reason) = (
                    DeadLetterClass::OverLimit,
                    decide::over_limit(work, &measured),
                );
                let shown = request.shown(response.as_ref());
                return dead_letter(ctx, work, &mut tally, class, reason, shown).await;
            }
            Attempted::Failed { outcome, response } => {
                if decide::past_the_end(work.role, response.as_ref().map(|r| r.status)) {
                    return land_past_the_end(ctx, work, &tally).await;
                }
                last = response.or(last);
                outcome
            }
        };
        retrying = matches!(outcome, Outcome::Transient { .. });
        tally.count_failure(&outcome);
        let after = decide::after_failure(&outcome, &mut budget, base);
        if let Some(pause) = after.pause_source {
            pause_source(ctx, &request.bucket, pause).await;
        }
        if !matches!(after.next, Next::DeadLetter { .. }) {
            record_attempts(ctx, work, claim, &mut tally).await;
        }
        match after.next {
            Next::DeadLetter { class, reason } => {
                let shown = request.shown(last.as_ref());
                return dead_letter(ctx, work, &mut tally, class, reason, shown).await;
            }
            // The limiter makes every worker wait out the pause set above.
            Next::RetryWhenUnpaused => tally.count_retry(),
            Next::RetryAfter(delay) => {
                tally.count_retry();
                let delay_ms = delay.as_millis() as u64;
                tracing::debug!(task = %work.task_id, ?outcome, delay_ms, "transient failure; retrying");
                tally.counts.time.retrying_us += micros(delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Writes this claim's attempts so far to the task's history: a worker
/// lost before the task ends leaves them to the dead letter. A failed
/// write costs the history those attempts, never the task.
async fn record_attempts(ctx: &WorkerContext, work: &PageWork, claim: &str, tally: &mut Tally) {
    let attempts = std::mem::take(&mut tally.attempts);
    if let Err(e) = ctx
        .store
        .record_attempts(work.task_id, claim, &attempts)
        .await
    {
        tracing::debug!(error = %e, task = %work.task_id, "attempts not recorded");
    }
}

/// Resolves what the task sends, or the dead-letter class and reason when
/// it cannot send anything.
async fn prepare_request(
    ctx: &WorkerContext,
    work: &PageWork,
) -> Result<Request, (DeadLetterClass, String)> {
    let credential = resolve_credential(ctx, work).await?;
    request_with(ctx, work, credential)
}

/// The credential the task's spec names, read from its tenant's secrets.
async fn resolve_credential(
    ctx: &WorkerContext,
    work: &PageWork,
) -> Result<Option<Credential>, (DeadLetterClass, String)> {
    let permanent = |e: &dyn std::fmt::Display| (DeadLetterClass::Permanent, e.to_string());
    let Some(auth) = &work.spec.source.auth else {
        return Ok(None);
    };
    // Checked here as well as at submit: the worker is what holds the
    // secrets, and a spec may predate the fleet's isolation.
    let from = tenancy::secret_source(ctx.secrets_dir.as_deref(), &work.tenant_id, auth.secret())
        .map_err(|e| permanent(&e))?;
    let key = ctx.fingerprint_key.clone();
    let credential = Credential::resolve_off_runtime(auth.clone(), from, key)
        .await
        .map_err(|e| permanent(&e))?;
    Ok(Some(credential))
}

/// The task's request, with the credential resolved for it (or for its
/// request sent ahead, moments before: see `Ahead::credential_for`).
fn request_with(
    ctx: &WorkerContext,
    work: &PageWork,
    credential: Option<Credential>,
) -> Result<Request, (DeadLetterClass, String)> {
    let spec = &work.spec;
    check_listed_columns(&ctx.limits, work)?;
    let (url, origin) = page_url(work)?;
    // Refused before it takes a token; a name is judged again on fetch.
    (ctx.source.check_url(&url)).map_err(|e| (DeadLetterClass::Refused, e.to_string()))?;
    let bucket = rate_keys::bucket_for(
        spec,
        &work.tenant_id,
        credential.as_ref().map(Credential::fingerprint),
        &ctx.shared_rate_keys,
        ctx.limits.max_unstated_rate as f64,
    );
    Ok(Request {
        url,
        origin,
        credential,
        bucket,
        timeout: Duration::from_millis(spec.source.timeout_ms),
        records_path: spec.source.records_path.clone(),
    })
}

/// A spec's own column list within the fleet's ceilings: refused before
/// anything is fetched.
fn check_listed_columns(
    limits: &FleetLimits,
    work: &PageWork,
) -> Result<(), (DeadLetterClass, String)> {
    let Some(columns) = &work.spec.columns else {
        return Ok(());
    };
    let over = |breach: Breach| {
        (
            DeadLetterClass::OverLimit,
            decide::over_limit(work, &breach),
        )
    };
    limits.check_columns(columns.len() as u64).map_err(over)?;
    for column in columns {
        limits.check_column_name(column).map_err(over)?;
    }
    Ok(())
}

/// Waits until the breaker, the retry budget and the token bucket let the
/// task send; `Some(wait)` when the wait is long enough to park instead.
/// The rate the bucket ran at goes to the tally (and the export's status).
/// Without the shared limiter (the naive baseline) every attempt goes at once.
async fn admit(
    ctx: &WorkerContext,
    work: &PageWork,
    request: &Request,
    retrying: bool,
    tally: &mut Tally,
) -> Option<Duration> {
    if !ctx.shared_limiter {
        return None;
    }
    let key = request.bucket.key.as_str();
    // The breaker and the retry budget first: during an outage the
    // source sees probes, not the fleet's backlog of retries.
    loop {
        let ratio = work.spec.retry.budget_ratio;
        let gate = ctx.guard.admit(key, retrying, request.timeout, ratio).await;
        match judge_gate(&gate, key, ctx.park_after) {
            Admission::Go => break,
            Admission::Park(wait) => return Some(wait),
            Admission::Wait(wait) => tokio::time::sleep(wait).await,
        }
    }
    let permit = ctx
        .limiter
        .permit(&request.bucket, ctx.max_token_wait, ctx.park_after);
    let waited = permit.await;
    if let Some(rate) = ctx.limiter.learned_rate(&request.bucket) {
        (metrics().source_rate.with_label_values(&[key])).set(rate);
        tally.counts.source_rate_milli = Some((rate * 1000.0).round() as u64);
    }
    match waited {
        Waited::Go(waited) => {
            (metrics().token_wait.with_label_values(&[key])).observe(waited.as_secs_f64());
            None
        }
        Waited::Park(wait) => Some(wait),
    }
}

/// What the guard's answer means for the request, shown in the metrics.
fn judge_gate(gate: &Gate, key: &str, park_after: Duration) -> Admission {
    let gauge = metrics().breaker_state.with_label_values(&[key]);
    gauge.set(decide::breaker_gauge(gate));
    if matches!(gate, Gate::NoBudget(_)) {
        metrics().retry_budget_denied.inc();
    }
    decide::admission(gate, park_after)
}

/// Sends one request, tells the breaker, and judges what came back.
async fn attempt(
    ctx: &WorkerContext,
    work: &PageWork,
    request: &Request,
    tally: &mut Tally,
) -> Attempted {
    let credential = request.credential.as_ref();
    let (max_body, cap_setting) = ctx.limits.body_cap(work.spec.source.max_body_bytes);
    let sent = std::time::Instant::now();
    let fetched = (ctx.source)
        .fetch(&request.url, credential, request.timeout, max_body)
        .await;
    tally.counts.time.fetching_us += micros(sent.elapsed());
    // Not a request sent, and nothing the breaker should hear of: the
    // source was neither up nor down.
    if let Err(refused @ SourceError::Refused { .. }) = &fetched {
        tally.record("refused", None, Duration::ZERO);
        let reason = refused.to_string();
        return Attempted::Refused { reason };
    }
    tally.counts.requests += 1;
    if ctx.shared_limiter {
        // The breaker hears about every answer, the successes included:
        // an answer of any class but "transient" means the source is up.
        let healthy = match &fetched {
            Err(e) => !e.is_transient(),
            Ok(r) => decide::source_is_up(r.status),
        };
        let said = (fetched.as_ref().ok())
            .and_then(|r| ratelimit_headers::parse(&r.headers, SystemTime::now()));
        // Side by side: two round trips to Redis on every page's path.
        let breaker = ctx.guard.record(&request.bucket.key, healthy);
        let (opened, ()) = tokio::join!(breaker, follow_the_source(ctx, request, said));
        if opened {
            metrics().breaker_opened.inc();
        }
    }
    match fetched {
        Err(SourceError::TooLarge { declared, .. }) => {
            metrics().requests.with_label_values(&["too_large"]).inc();
            tally.record(
                "too_large",
                None,
                request.timeout.min(Duration::from_secs(3600)),
            );
            Attempted::OverLimit {
                measured: limits::body_over_cap(declared, max_body, cap_setting),
                response: None,
            }
        }
        Err(e) => {
            metrics().requests.with_label_values(&["error"]).inc();
            let took = sent.elapsed();
            (metrics()
                .request_duration
                .with_label_values(&[&request.bucket.key]))
            .observe(took.as_secs_f64());
            let none = redact::Known::none();
            let known = request.credential.as_ref().map_or(&none, Credential::known);
            tally.record_error("error", redact::text(&e.to_string(), known), took);
            let outcome = decide::transport_failure(e.is_transient(), e.to_string());
            Attempted::Failed {
                outcome,
                response: None,
            }
        }
        Ok(response) => judge_response(ctx, request, tally, response).await,
    }
}

/// Lets the shared bucket follow what the source says is left, and the
/// rate its policy states.
async fn follow_the_source(
    ctx: &WorkerContext,
    request: &Request,
    said: Option<ratelimit_headers::SourceBudget>,
) {
    let Some(said) = said else { return };
    let bucket = &request.bucket;
    let policy_rate = said.policy_rate.filter(|_| bucket.follows_policy);
    let synced = (ctx.limiter).sync_with_source(bucket, said.remaining, policy_rate);
    if let Err(e) = synced.await {
        tracing::debug!(error = %e, "bucket not synced with the source's headers");
    }
}

/// Records an answer and judges it.
async fn judge_response(
    ctx: &WorkerContext,
    request: &Request,
    tally: &mut Tally,
    response: Fetched,
) -> Attempted {
    let status = response.status;
    let class = format!("{}xx", status / 100);
    metrics().requests.with_label_values(&[&class]).inc();
    (metrics()
        .request_duration
        .with_label_values(&[&request.bucket.key]))
    .observe(response.elapsed.as_secs_f64());
    tally.record_answer(decide::attempt_label(status), &response);
    let shown_url = source::display_url(&request.url);
    let header = |name| response.headers.get(name).and_then(|v| v.to_str().ok());
    let answer = Answer {
        status,
        body: response.body.clone(),
        records_path: request.records_path.as_deref(),
        retry_after: header("retry-after"),
        date: header("date"),
        shown_url: &shown_url,
        limits: &ctx.limits,
    };
    match decide::judge(&answer, SystemTime::now()) {
        Verdict::Land(body) => Attempted::Land { response, body },
        Verdict::OverLimit(breach) => Attempted::OverLimit {
            measured: breach.to_string(),
            response: Some(response),
        },
        Verdict::Failed(outcome) => Attempted::Failed {
            outcome,
            response: Some(response),
        },
    }
}

/// A 429 asked for quiet: pause the source for the whole fleet.
async fn pause_source(ctx: &WorkerContext, bucket: &Bucket, pause: Duration) {
    if !ctx.shared_limiter {
        // The naive baseline: each task waits out its own 429.
        tokio::time::sleep(pause).await;
        return;
    }
    metrics().source_pauses.inc();
    if let Err(e) = ctx.limiter.pause(bucket, pause).await {
        tracing::warn!(error = %e, "cannot set the fleet-wide pause in Redis; paused locally");
    }
}

/// The page's URL and the origin every followed URL must keep, or the
/// dead-letter class and reason when the stored task cannot make one.
fn page_url(work: &PageWork) -> Result<(url::Url, url::Url), (DeadLetterClass, String)> {
    let spec = &work.spec;
    let target = pagination::target(&spec.pagination, spec.page_size, &work.position)
        .map_err(|e| (DeadLetterClass::BadPage, e.to_string()))?;
    let url = source::page_url(spec, &work.partition_params, &target)
        .map_err(|e| (DeadLetterClass::Permanent, e.to_string()))?;
    let origin = url::Url::parse(&spec.source.base_url)
        .map_err(|e| (DeadLetterClass::Permanent, e.to_string()))?;
    Ok((url, origin))
}

/// Hands the task back to Postgres with a not-before time and frees this
/// worker for other work; the scheduler re-publishes it when it is due.
async fn park(
    ctx: &WorkerContext,
    work: &PageWork,
    claim: &str,
    tally: &Tally,
    failures: u32,
    wait: Duration,
) -> Result<PageResult, PageError> {
    let parked = ctx
        .store
        .park_page(
            work.task_id,
            claim,
            wait,
            failures,
            tally.counts,
            &tally.attempts,
        )
        .await
        .map_err(PageError::store(work.task_id))?;
    if parked {
        metrics().tasks_parked.inc();
        tracing::debug!(task = %work.task_id, wait_ms = wait.as_millis() as u64, "task parked");
    }
    Ok(PageResult::Parked)
}

/// A record the one-pass flattener left to the tree path: parsed, keyed,
/// placed by its cursor and flattened, in that order, so the first thing
/// wrong with it is the reason given.
fn by_tree(
    text: &str,
    spec: &ExportSpec,
    max_name: usize,
    max_cursor: &mut Option<i64>,
    into: &mut FlatRecord,
) -> Result<(), (DeadLetterClass, String)> {
    let bad = |e: &dyn std::fmt::Display| (DeadLetterClass::BadPage, e.to_string());
    let record: Value = serde_json::from_str(text).map_err(|e| bad(&e))?;
    let key = row_key(&record, &spec.primary_key).map_err(|e| bad(&e))?;
    if let Some(incremental) = &spec.incremental {
        // A record without a readable cursor cannot be placed in a
        // window: the page is refused rather than a watermark guessed.
        let cursor = incremental.cursor_of(&record).map_err(|e| bad(&e))?;
        *max_cursor = (*max_cursor).max(Some(cursor));
    }
    let row = flatten_record_within(&record, max_name).map_err(|e| match e {
        FlattenError::ColumnNameTooLong { .. } => (DeadLetterClass::OverLimit, e.to_string()),
        other => bad(&other),
    })?;
    into.load_row(&key, &row).map_err(|e| bad(&e))
}

/// A page's rows and what follows it, or why the page cannot be used
/// (the class and reason for the dead letter: no records, a record without
/// its key, a broken pagination field, a ceiling of the fleet).
fn prepare(
    limits: &FleetLimits,
    work: &PageWork,
    tally: &Tally,
    response: &Fetched,
    body: &PageBody,
    request: &Request,
) -> Result<Landing, (DeadLetterClass, String)> {
    let spec = &work.spec;
    let at = format!("page {} of partition {}", work.page_no, work.partition_no);
    let bad_page = |e: &dyn std::fmt::Display| (DeadLetterClass::BadPage, format!("{at}: {e}"));
    let over = |breach: Breach| {
        (
            DeadLetterClass::OverLimit,
            decide::over_limit(work, &breach),
        )
    };
    let records = body.records().map_err(|e| bad_page(&e))?;
    let count = records.len();
    // Before any row is built: the rows are what a page costs next.
    limits.check_records(count).map_err(over)?;
    // Rows are about as long as their records, keys and a little more
    // included; reserved, not touched, so a guess over costs nothing.
    let mut rows = PageRows::with_capacity(count, body.len().saturating_mul(2));
    let mut columns = BTreeSet::new();
    let mut max_cursor: Option<i64> = None;
    let mut last_text: Option<&str> = None;
    let max_name = usize::try_from(limits.max_column_name_bytes).unwrap_or(usize::MAX);
    // One holder for every record of the page: its buffers are reused.
    let mut record = FlatRecord::default();
    for (i, text) in records.enumerate() {
        let bad = |e: &dyn std::fmt::Display| {
            (DeadLetterClass::BadPage, format!("record {i} on {at}: {e}"))
        };
        if record.flatten_text(text, &spec.primary_key, max_name) {
            if let Some(incremental) = &spec.incremental {
                let tree: Value = serde_json::from_str(text).map_err(|e| bad(&e))?;
                let cursor = incremental.cursor_of(&tree).map_err(|e| bad(&e))?;
                max_cursor = max_cursor.max(Some(cursor));
            }
        } else {
            by_tree(text, spec, max_name, &mut max_cursor, &mut record)
                .map_err(|(class, e)| (class, format!("record {i} on {at}: {e}")))?;
        }
        if spec.columns.is_none() {
            for name in record.columns() {
                if !columns.contains(name) {
                    limits.check_column_name(name).map_err(over)?;
                    columns.insert(name.to_owned());
                }
            }
            // The export's columns are counted where they are all known,
            // in the landing; a page alone over the ceiling stops here.
            limits.check_columns(columns.len() as u64).map_err(over)?;
        }
        let staged = record.staged_json();
        limits.check_record(i, staged.len()).map_err(over)?;
        rows.push(record.key(), staged).map_err(|e| bad(&e))?;
        last_text = Some(text);
    }
    // Only the last record is a tree beyond its row: the styles that page
    // by it read its fields.
    let last: Option<Value> = match last_text {
        Some(text) => Some(serde_json::from_str(text).map_err(|e| bad_page(&e))?),
        None => None,
    };
    let page = Page {
        body: body.rest(),
        headers: &response.headers,
        records: Records::new(count, last.as_ref()),
        url: &request.url,
        origin: &request.origin,
    };
    let next = pagination::next(
        &spec.pagination,
        spec.page_size,
        &work.position,
        work.role,
        &page,
    )
    .map_err(|e| bad_page(&e))?;
    let stated = match stated(spec, &page) {
        Ok(stated) => stated,
        // A chain page steers by its counts, so a broken one is an error
        // there (as `next` said already); any other page states nothing.
        Err(e) if work.role != Role::Chain => {
            tracing::debug!(task = %work.task_id, error = %e, "a count on the page is not readable");
            Vec::new()
        }
        Err(e) => return Err(bad_page(&e)),
    };
    let marks = match work.role {
        Role::Chain => pagination::chain_marks(&next, rows.keys()),
        Role::Leaf | Role::Sentinel | Role::Backward => Vec::new(),
    };
    if let Some(split) = backfill_split(work, &stated) {
        return Ok(Landing {
            split: Some(split),
            ..empty_landing(work, tally, limits)
        });
    }
    Ok(Landing {
        task_id: work.task_id,
        rows,
        columns,
        next,
        counts: tally.counts,
        stated,
        marks,
        max_pages: spec.verify.max_pages_per_partition,
        max_columns: limits.max_columns,
        max_cursor,
        split: None,
    })
}

/// A landing of no records that ends its chain.
fn empty_landing(work: &PageWork, tally: &Tally, limits: &FleetLimits) -> Landing {
    Landing {
        task_id: work.task_id,
        rows: PageRows::default(),
        columns: BTreeSet::new(),
        next: pagination::Next::Done,
        counts: tally.counts,
        stated: Vec::new(),
        marks: Vec::new(),
        max_pages: work.spec.verify.max_pages_per_partition,
        max_columns: limits.max_columns,
        max_cursor: None,
        split: None,
    }
}

/// A backfill window whose first page states more records than the source
/// lets a walk reach: its halves (see `BackfillSpec::halve`).
fn backfill_split(work: &PageWork, stated: &[Statement]) -> Option<Split> {
    let backfill = work.spec.backfill.as_ref()?;
    if work.page_no != 0 || work.role != Role::Chain {
        return None;
    }
    backfill.split(&work.partition_params, stated, work.spec.page_size)
}

/// The counts a page states: the style's, and the spec's `verify.total_path`.
fn stated(spec: &ExportSpec, page: &Page<'_>) -> Result<Vec<Statement>, PaginationError> {
    let mut stated = pagination::stated(&spec.pagination, page)?;
    if let Some(path) = &spec.verify.total_path {
        let body = pagination::totals::body_count(page.body, path, Counts::Records)?;
        // A path the style reads already (offset's `total_path`) is one statement.
        if let Some(body) = body.filter(|b| !stated.contains(b)) {
            stated.push(body);
        }
    }
    Ok(stated)
}

/// Lands a 2xx page, or dead-letters it when its data cannot be used.
async fn land(
    ctx: &WorkerContext,
    work: &PageWork,
    tally: &mut Tally,
    response: &Fetched,
    body: PageBody,
    request: &Request,
) -> Result<PageResult, PageError> {
    let (landed, readied) = match stage(ctx, work, tally, response, body, request).await? {
        Staged::Landed(landed, readied) => (landed, readied),
        Staged::Unusable(class, reason) => {
            let shown = request.shown(Some(response));
            return dead_letter(ctx, work, tally, class, reason, shown).await;
        }
    };
    let (class, reason) = match landed {
        Landed::Refused { reason } => (DeadLetterClass::BadPage, reason),
        Landed::OverLimit { breach } => (
            DeadLetterClass::OverLimit,
            decide::over_limit(work, &breach),
        ),
        landed => return Ok(landed_result(ctx, work, landed, readied).await),
    };
    let shown = request.shown(Some(response));
    dead_letter(ctx, work, tally, class, reason, shown).await
}

/// A sentinel page the source answered 404 or 416: the end, as an empty
/// page would have said. It lands with no records.
async fn land_past_the_end(
    ctx: &WorkerContext,
    work: &PageWork,
    tally: &Tally,
) -> Result<PageResult, PageError> {
    let landing = empty_landing(work, tally, &ctx.limits);
    let landed = ctx
        .store
        .land_page(&landing)
        .await
        .map_err(PageError::store(work.task_id))?;
    Ok(landed_result(ctx, work, landed, Readied::default()).await)
}

/// Counts and publishes what a landing did. A chain's next page is left
/// to this worker (with what was readied for it), unless the worker is
/// draining.
async fn landed_result(
    ctx: &WorkerContext,
    work: &PageWork,
    landed: Landed,
    readied: Readied,
) -> PageResult {
    match landed {
        // Only a page with marks or a plan can be refused, and the callers
        // that can meet one handle it first.
        Landed::Refused { .. } | Landed::OverLimit { .. } => PageResult::Skipped,
        Landed::Duplicate => {
            metrics().duplicate_deliveries.inc();
            PageResult::Duplicate
        }
        Landed::Page {
            rows_inserted,
            rows_replaced,
            outbox_ids,
            finalize,
            chain_next,
        } => {
            let landed_at = std::time::Instant::now();
            metrics().pages_landed.inc();
            metrics().rows_staged.inc_by(rows_inserted);
            metrics().rows_replaced.inc_by(rows_replaced);
            let follow = chain_next.filter(|_| ctx.follow_chains).map(|next| Follow {
                next,
                landed_at,
                ahead: readied.ahead,
                claimed: readied.claimed,
            });
            // A draining worker leaves the chain to the queue.
            let follow = match follow {
                Some(follow) if ctx.draining.is_cancelled() => {
                    follow.give_back(ctx).await;
                    None
                }
                follow => follow,
            };
            let followed = follow.as_ref().map(|f| f.next.outbox_id);
            let publish: Vec<i64> = outbox_ids
                .into_iter()
                .filter(|id| Some(*id) != followed)
                .collect();
            ctx.publish_outbox(&publish).await;
            tracing::debug!(export = %work.export_id, page = work.page_no, rows = rows_inserted, "page landed");
            PageResult::Landed {
                rows: rows_inserted + rows_replaced,
                finalize,
                follow,
            }
        }
    }
}

/// What staging a page came to; a Postgres that did not answer is the
/// error instead (hand the delivery back).
enum Staged {
    /// With what was readied for the chain's next page meanwhile.
    Landed(Landed, Readied),
    /// Why the page's data cannot be used: it is dead-lettered.
    Unusable(DeadLetterClass, String),
}

/// Lands a chain's page while its next page's request is out, and claims
/// the next page's task as soon as the landing has written it. From that
/// claim until the answer is in, the claim's lease is kept fresh (a slow
/// source may take longer than a lease); a claim lost meanwhile (taken
/// over, or given back as the export paused) drops the answer and leaves
/// the page to whoever holds it now. Dropped before it returns (a drain
/// that ran out of time), it gives the claim back (`PendingClaim`).
async fn land_and_fetch_next(
    ctx: &WorkerContext,
    work: &PageWork,
    landing: &Landing,
    next: &pagination::Position,
) -> (Result<Landed, StoreError>, Readied) {
    let (claimed_tx, claimed_rx) = tokio::sync::oneshot::channel::<(Uuid, String)>();
    let land_then_claim = async {
        let landed = ctx.store.land_page(landing).await;
        let mut pending = None;
        let claimed = match &landed {
            Ok(Landed::Page {
                chain_next: Some(next),
                ..
            }) if !ctx.draining.is_cancelled() => {
                let token = claim_token(ctx);
                let claim = ctx.store.claim_followed(*next, LEASE, &token).await;
                if matches!(claim, Ok(Claim::Claimed(_))) {
                    pending = Some(PendingClaim::new(ctx, *next, &token));
                    let _ = claimed_tx.send((next.task_id, token.clone()));
                }
                Some(ClaimMade { token, claim })
            }
            _ => None,
        };
        (landed, claimed, pending)
    };
    let fetch_while_claimed = async {
        let keep_claim = async {
            match claimed_rx.await {
                Ok((task_id, token)) => heartbeat(ctx, task_id, &token).await,
                // Nothing was claimed: nothing to keep.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            ahead = ahead::fetch(ctx, work, next) => Ok(ahead),
            _lost = keep_claim => Err(ClaimLost),
        }
    };
    let ((landed, mut claimed, pending), ahead) =
        tokio::join!(land_then_claim, fetch_while_claimed);
    if let Some(pending) = pending {
        pending.settled();
    }
    let ahead = match ahead {
        Ok(ahead) => ahead.map(Box::new),
        Err(ClaimLost) => {
            if let Some(made) = claimed.as_mut() {
                made.claim = Ok(Claim::Gone);
            }
            None
        }
    };
    (landed, Readied { ahead, claimed })
}

/// The claim on a chain's next page was lost while its answer was out.
struct ClaimLost;

/// A claim made on a chain's next page that nothing holds yet: dropped
/// unsettled, it is given back (released, its message unsent for the
/// relay), so a drain cut short does not leave the page to a lease's end.
struct PendingClaim {
    store: Option<pagefleet_shared::store::Store>,
    next: ChainNext,
    token: String,
}

impl PendingClaim {
    fn new(ctx: &WorkerContext, next: ChainNext, token: &str) -> PendingClaim {
        PendingClaim {
            store: Some(ctx.store.clone()),
            next,
            token: token.to_string(),
        }
    }

    /// Held by the caller now: nothing to give back.
    fn settled(mut self) {
        self.store = None;
    }
}

impl Drop for PendingClaim {
    fn drop(&mut self) {
        let (Some(store), Ok(runtime)) = (self.store.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let (next, token) = (self.next, std::mem::take(&mut self.token));
        // Best effort: without it, the reconciler re-queues the task when
        // its lease runs out.
        runtime.spawn(async move {
            let given = store.give_back_followed(next.task_id, Some(&token), next.outbox_id);
            if let Err(e) = given.await {
                tracing::debug!(error = %e, task = %next.task_id, "followed claim not given back");
            }
        });
    }
}

/// Stores the page in Postgres.
async fn stage(
    ctx: &WorkerContext,
    work: &PageWork,
    tally: &Tally,
    response: &Fetched,
    body: PageBody,
    request: &Request,
) -> Result<Staged, PageError> {
    let preparing = std::time::Instant::now();
    let prepared = prepare(&ctx.limits, work, tally, response, &body, request);
    // The rows are built: where the records lay is not needed again.
    drop(body);
    let mut landing = match prepared {
        Ok(landing) => landing,
        Err((class, reason)) => return Ok(Staged::Unusable(class, reason)),
    };
    landing.counts.time.landing_us += micros(preparing.elapsed());
    // A chain's next page is fetched while this one lands: the landing's
    // round trips, and the next page's claim, hide behind the source's
    // latency.
    let (landed, readied) = match (&landing.next, work.role) {
        (pagination::Next::Chain(next), Role::Chain) if ctx.follow_chains => {
            land_and_fetch_next(ctx, work, &landing, next).await
        }
        _ => (ctx.store.land_page(&landing).await, Readied::default()),
    };
    match landed {
        Ok(landed) => Ok(Staged::Landed(landed, readied)),
        Err(source) if source.is_retryable() => Err(PageError::Store {
            task_id: work.task_id,
            source,
        }),
        // The page's data cannot be stored (say, text Postgres
        // refuses): fetching it again would fail the same way.
        Err(e) => Ok(Staged::Unusable(
            DeadLetterClass::BadPage,
            format!(
                "page {} of partition {} cannot be stored: {e}",
                work.page_no, work.partition_no
            ),
        )),
    }
}

/// The URL a letter's fingerprint is of: the request's, or the source's
/// when the task never made one.
fn fingerprint_url(work: &PageWork, request: Option<&Request>) -> Option<url::Url> {
    match request {
        Some(r) => Some(r.url.clone()),
        None => url::Url::parse(&work.spec.source.base_url).ok(),
    }
}

/// Records the task as dead with what it saw last (`shown.response`: the
/// latest answer, when there was one). The reason, the body excerpt and
/// the headers are redacted first (see `redact`): a source may echo our
/// credential, and a reason may quote a URL the source gave.
async fn dead_letter(
    ctx: &WorkerContext,
    work: &PageWork,
    tally: &mut Tally,
    class: DeadLetterClass,
    reason: String,
    shown: Shown<'_>,
) -> Result<PageResult, PageError> {
    let none = redact::Known::none();
    let known = shown.known.unwrap_or(&none);
    let reason = redact::text(&reason, known).replace('\0', "\u{fffd}");
    tracing::warn!(export = %work.export_id, task = %work.task_id, page = work.page_no,
        partition = work.partition_no, %class, %reason, "page dead-lettered");
    let response = shown.response;
    let fingerprint = failure::fingerprint(
        class,
        response.map(|r| r.status),
        fingerprint_url(work, shown.request).as_ref(),
        &reason,
    );
    let input = DeadLetterInput {
        task_id: work.task_id,
        class,
        reason,
        last_status: response.map(|r| r.status),
        body_excerpt: response.map(|r| redact::excerpt(&r.body, BODY_EXCERPT_BYTES, known)),
        headers: response
            .map(|r| redact::headers(&r.headers, known))
            .unwrap_or_else(|| Value::Object(Default::default())),
        attempts: std::mem::take(&mut tally.attempts),
        counts: tally.counts,
        request: shown
            .request
            .map_or(serde_json::json!({}), Request::as_shown),
        source_key: shown.request.map(|r| r.bucket.key.clone()),
        fingerprint,
    };
    let outbox = ctx
        .store
        .dead_letter(&input)
        .await
        .map_err(PageError::store(work.task_id))?;
    if let Some(id) = outbox {
        metrics().dead_letters.inc();
        ctx.publish_outbox(&[id]).await;
    }
    Ok(PageResult::DeadLettered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attempt_history_keeps_the_first_and_the_latest() {
        let mut tally = Tally::default();
        for i in 0..60 {
            tally.record(&format!("a{i}"), Some(503), Duration::from_millis(i));
        }
        let outcomes: Vec<&str> = tally.attempts.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes.len(), HISTORY);
        let first: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
        let latest: Vec<String> = (20..60).map(|i| format!("a{i}")).collect();
        assert_eq!(outcomes[..HISTORY_HEAD], first);
        assert_eq!(outcomes[HISTORY_HEAD..], latest);
        assert_eq!(tally.attempts[59 - 10].millis, 59);
    }

    #[test]
    fn an_attempt_is_stamped_in_rfc3339_utc() {
        let mut tally = Tally::default();
        tally.record("success", Some(200), Duration::from_millis(12));
        let at = &tally.attempts[0].at;
        let parsed =
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339);
        assert!(parsed.is_ok_and(|t| t.offset().is_utc()), "{at:?}");
        assert_eq!(tally.attempts[0].status, Some(200));
    }
}
