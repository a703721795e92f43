//! One page task: claim, wait for a token, fetch, classify, retry, and land
//! (or dead-letter).
//!
//! The retry loop lives here, in the worker that holds the delivery, so a
//! retried request needs no new message; the caps come from the spec.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use uuid::Uuid;

use pagefleet_shared::flatten::{flatten_record, row_key};
use pagefleet_shared::guard::Gate;
use pagefleet_shared::model::{DeadLetterClass, RequestCounts};
use pagefleet_shared::pagination::{self, Page};
use pagefleet_shared::ratelimit::{Bucket, Waited};
use pagefleet_shared::ratelimit_headers;
use pagefleet_shared::retry::{
    classify_status, parse_retry_after, Outcome, RetryBudget, StatusClass,
};
use pagefleet_shared::source::{self, Credential, Fetched};
use pagefleet_shared::store::{
    Attempt, Claim, DeadLetterInput, Landed, Landing, PageWork, StoreError,
};
use pagefleet_shared::telemetry::metrics;
use pagefleet_shared::tenancy;
use tracing::Instrument;

use crate::context::WorkerContext;

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

/// What became of a task.
#[derive(Debug, Clone, PartialEq)]
pub enum PageResult {
    Landed {
        rows: u64,
        finalize: bool,
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

/// Claims and runs one page task to the end.
pub async fn handle_page(ctx: &WorkerContext, task_id: Uuid) -> Result<PageResult, PageError> {
    // Each claim gets its own token: a second delivery of the same task to
    // this very process (after a channel recovery) sees the first as a live
    // holder instead of claiming it again.
    let claim = format!("{}/{}", ctx.worker, pagefleet_shared::model::new_id());
    tokio::select! {
        // A task that finished as the hand-back fired keeps its result.
        biased;
        result = claim_and_run(ctx, task_id, &claim) => result,
        // A drain that ran out of time: give the claim up in Postgres so the
        // next worker takes the task at once instead of waiting out a lease.
        // A landing cut short here rolls back; one that already committed
        // leaves nothing to release.
        _ = ctx.hand_back.cancelled() => {
            ctx.store
                .release_claim(task_id, &claim)
                .await
                .map_err(|source| PageError::Store { task_id, source })?;
            Ok(PageResult::HandedBack)
        }
    }
}

async fn claim_and_run(
    ctx: &WorkerContext,
    task_id: Uuid,
    claim: &str,
) -> Result<PageResult, PageError> {
    let store_err = |source| PageError::Store { task_id, source };
    let waiting_since = std::time::Instant::now();
    let work = loop {
        match ctx
            .store
            .claim_page(task_id, LEASE, claim)
            .await
            .map_err(store_err)?
        {
            Claim::Claimed(work) => break work,
            Claim::Gone => return Ok(PageResult::Skipped),
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
                    _ = ctx.draining.cancelled() => return Ok(PageResult::HandedBack),
                }
            }
            Claim::Held { .. } => return Ok(PageResult::Skipped),
        }
    };
    if work.export_state.is_terminal() {
        return Ok(PageResult::Skipped);
    }
    // Keep the lease fresh while the task waits for tokens and retries; stop
    // if another worker took the task over (it decided this one was dead).
    let heartbeat = async {
        loop {
            tokio::time::sleep(LEASE / 4).await;
            match ctx.store.extend_lease(task_id, LEASE, claim).await {
                Ok(true) => {}
                Ok(false) => return Ok(PageResult::Skipped),
                Err(e) => tracing::debug!(error = %e, %task_id, "lease not extended"),
            }
        }
    };
    let span = tracing::info_span!("page", export = %work.export_id, task = %task_id,
        partition = work.partition_no, page = work.page_no);
    tokio::select! {
        result = run_task(ctx, &work, claim).instrument(span) => result,
        lost = heartbeat => lost,
    }
}

/// Counters of one task's requests, reported when it lands or dies.
#[derive(Default)]
struct Tally {
    counts: RequestCounts,
    attempts: Vec<Attempt>,
}

impl Tally {
    fn record(&mut self, outcome: &str, status: Option<u16>, elapsed: Duration) {
        // Keep the history bounded: the first attempts and the latest ones.
        if self.attempts.len() >= 50 {
            self.attempts.remove(10);
        }
        self.attempts.push(Attempt {
            at: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            outcome: outcome.to_string(),
            status,
            millis: elapsed.as_millis() as u64,
        });
    }
}

async fn run_task(
    ctx: &WorkerContext,
    work: &PageWork,
    claim: &str,
) -> Result<PageResult, PageError> {
    let task_id = work.task_id;
    let spec = &work.spec;
    let mut tally = Tally::default();

    // Checked here as well as at submit: the worker is what holds the
    // secrets, and a spec may predate the fleet's isolation.
    if let Some(auth) = &spec.source.auth {
        if let Err(e) =
            tenancy::check_secret(ctx.output_root.as_deref(), &work.tenant_id, auth.secret())
        {
            let reason = e.to_string();
            return dead_letter(
                ctx,
                work,
                &mut tally,
                DeadLetterClass::Permanent,
                reason,
                None,
                None,
            )
            .await;
        }
    }
    let credential = match spec
        .source
        .auth
        .as_ref()
        .map(Credential::resolve)
        .transpose()
    {
        Ok(c) => c,
        Err(e) => {
            return dead_letter(
                ctx,
                work,
                &mut tally,
                DeadLetterClass::Permanent,
                e.to_string(),
                None,
                None,
            )
            .await;
        }
    };
    let (url, origin) = match page_url(work) {
        Ok(urls) => urls,
        Err((class, reason)) => {
            return dead_letter(ctx, work, &mut tally, class, reason, None, None).await
        }
    };
    let bucket = Bucket {
        key: source::source_key(spec, credential.as_ref()),
        rate: spec.rate_limit.rate,
        burst: spec.rate_limit.burst,
    };
    let timeout = Duration::from_millis(spec.source.timeout_ms);
    let mut budget = RetryBudget::resume(&spec.retry, work.failures, work.failing_for);
    let mut last: Option<Fetched> = None;
    let mut retrying = work.failures > 0;

    loop {
        if ctx.shared_limiter {
            // The breaker and the retry budget first: during an outage the
            // source sees probes, not the fleet's backlog of retries.
            loop {
                let gate = ctx
                    .guard
                    .admit(&bucket.key, retrying, timeout, spec.retry.budget_ratio)
                    .await;
                let state = match gate {
                    Gate::Go | Gate::NoBudget(_) => 0,
                    Gate::Probe => 1,
                    Gate::Open(_) => 2,
                };
                metrics()
                    .breaker_state
                    .with_label_values(&[bucket.key.as_str()])
                    .set(state);
                match gate {
                    Gate::Go | Gate::Probe => break,
                    Gate::Open(wait) | Gate::NoBudget(wait) => {
                        if matches!(gate, Gate::NoBudget(_)) {
                            metrics().retry_budget_denied.inc();
                        }
                        if wait > ctx.park_after {
                            return park(ctx, work, claim, &tally, budget.failed_attempts(), wait)
                                .await;
                        }
                        tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
                    }
                }
            }
            match ctx
                .limiter
                .permit(&bucket, ctx.max_token_wait, ctx.park_after)
                .await
            {
                Waited::Go(waited) => metrics().token_wait.observe(waited.as_secs_f64()),
                Waited::Park(wait) => {
                    return park(ctx, work, claim, &tally, budget.failed_attempts(), wait).await;
                }
            }
        }
        tally.counts.requests += 1;
        let fetched = ctx
            .source
            .fetch(
                &url,
                credential.as_ref(),
                timeout,
                spec.source.max_body_bytes,
            )
            .await;
        if ctx.shared_limiter {
            // The breaker hears about every answer, the successes included:
            // an answer of any class but "transient" means the source is up.
            let healthy = match &fetched {
                Err(e) => !e.is_transient(),
                Ok(r) => classify_status(r.status) != StatusClass::Transient,
            };
            if ctx.guard.record(&bucket.key, healthy).await {
                metrics().breaker_opened.inc();
            }
        }
        let outcome = match fetched {
            Err(e) => {
                metrics().requests.with_label_values(&["error"]).inc();
                tally.record("error", None, timeout.min(Duration::from_secs(3600)));
                if e.is_transient() {
                    Outcome::Transient {
                        reason: e.to_string(),
                    }
                } else {
                    Outcome::Permanent {
                        reason: e.to_string(),
                    }
                }
            }
            Ok(response) => {
                let status = response.status;
                if ctx.shared_limiter {
                    if let Some(said) =
                        ratelimit_headers::parse(&response.headers, SystemTime::now())
                    {
                        let _ = ctx.limiter.sync_with_source(&bucket, said.remaining).await;
                    }
                }
                metrics()
                    .requests
                    .with_label_values(&[&format!("{}xx", status / 100)])
                    .inc();
                let class = classify_status(status);
                tally.record(
                    match class {
                        StatusClass::Success => "success",
                        StatusClass::RateLimited => "rate_limited",
                        StatusClass::Transient => "transient",
                        StatusClass::Permanent => "permanent",
                    },
                    Some(status),
                    response.elapsed,
                );
                let outcome = match class {
                    StatusClass::Success => match serde_json::from_slice::<Value>(&response.body) {
                        Ok(body) => {
                            return land(ctx, work, &mut tally, &response, &body, &url, &origin)
                                .await;
                        }
                        Err(e) => Outcome::Transient {
                            reason: format!(
                                "HTTP {status} from {} with a body that is not JSON ({e})",
                                source::display_url(&url)
                            ),
                        },
                    },
                    StatusClass::RateLimited => {
                        let date = response.headers.get("date").and_then(|v| v.to_str().ok());
                        let retry_after = response
                            .headers
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| parse_retry_after(v, SystemTime::now(), date));
                        Outcome::RateLimited { retry_after }
                    }
                    StatusClass::Transient => Outcome::Transient {
                        reason: format!("HTTP {status} from {}", source::display_url(&url)),
                    },
                    StatusClass::Permanent => Outcome::Permanent {
                        reason: format!("HTTP {status} from {}", source::display_url(&url)),
                    },
                };
                last = Some(response);
                outcome
            }
        };
        retrying = matches!(outcome, Outcome::Transient { .. });
        let status = last.as_ref().map(|r| r.status);
        match &outcome {
            Outcome::Permanent { reason } => {
                let reason = reason.clone();
                return dead_letter(
                    ctx,
                    work,
                    &mut tally,
                    DeadLetterClass::Permanent,
                    reason,
                    status,
                    last.as_ref(),
                )
                .await;
            }
            Outcome::RateLimited { .. } => {
                tally.counts.rate_limited += 1;
                metrics().rate_limited.inc();
            }
            _ => {}
        }
        let delay = budget.next_delay(&outcome);
        if let Outcome::RateLimited { retry_after } = &outcome {
            // The source asked for quiet: pause the whole fleet for this
            // source now, whether or not this task will try again.
            let pause = delay
                .or(*retry_after)
                .unwrap_or_else(|| Duration::from_millis(spec.retry.base_ms));
            if !ctx.shared_limiter {
                // The naive baseline: each task waits out its own 429.
                tokio::time::sleep(pause).await;
            } else if let Err(e) = {
                metrics().source_pauses.inc();
                ctx.limiter.pause(&bucket, pause).await
            } {
                tracing::warn!(error = %e, "cannot set the fleet-wide pause in Redis; paused locally");
            }
        }
        let Some(delay) = delay else {
            let (class, reason) = match &outcome {
                Outcome::RateLimited { .. } => (
                    DeadLetterClass::RateLimited,
                    "still rate-limited after the retry cap".to_string(),
                ),
                Outcome::Transient { reason } => (
                    DeadLetterClass::Exhausted,
                    format!("retries exhausted; last: {reason}"),
                ),
                _ => (DeadLetterClass::Exhausted, "retries exhausted".to_string()),
            };
            return dead_letter(ctx, work, &mut tally, class, reason, status, last.as_ref()).await;
        };
        tally.counts.retries += 1;
        metrics().retries.inc();
        match &outcome {
            // The limiter makes every worker wait out the pause set above.
            Outcome::RateLimited { .. } => {}
            Outcome::Transient { reason } => {
                tracing::debug!(task = %task_id, %reason, delay_ms = delay.as_millis() as u64, "transient failure; retrying");
                tokio::time::sleep(delay).await;
            }
            _ => {}
        }
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
        .park_page(work.task_id, claim, wait, failures, tally.counts)
        .await
        .map_err(|source| PageError::Store {
            task_id: work.task_id,
            source,
        })?;
    if parked {
        metrics().tasks_parked.inc();
        tracing::debug!(task = %work.task_id, wait_ms = wait.as_millis() as u64, "task parked");
    }
    Ok(PageResult::Parked)
}

/// A page's rows and what follows it, or why the page cannot be used
/// (a reason for the dead letter: no records, a record without its key, a
/// broken pagination field).
fn prepare(
    work: &PageWork,
    tally: &Tally,
    response: &Fetched,
    body: &Value,
    url: &url::Url,
    origin: &url::Url,
) -> Result<Landing, String> {
    let spec = &work.spec;
    let at = format!("page {} of partition {}", work.page_no, work.partition_no);
    let records = pagination::records(body, spec.source.records_path.as_deref())
        .map_err(|e| format!("{at}: {e}"))?;
    let mut rows = Vec::with_capacity(records.len());
    let mut columns = BTreeSet::new();
    for (i, record) in records.iter().enumerate() {
        let key =
            row_key(record, &spec.primary_key).map_err(|e| format!("record {i} on {at}: {e}"))?;
        let row = flatten_record(record).map_err(|e| format!("record {i} on {at}: {e}"))?;
        if spec.columns.is_none() {
            columns.extend(row.keys().cloned());
        }
        rows.push((key, serde_json::to_string(&row).unwrap_or_default()));
    }
    let page = Page {
        body,
        headers: &response.headers,
        records,
        url,
        origin,
    };
    let next = pagination::next(
        &spec.pagination,
        spec.page_size,
        &work.position,
        work.role,
        &page,
    )
    .map_err(|e| format!("{at}: {e}"))?;
    Ok(Landing {
        task_id: work.task_id,
        rows,
        columns,
        next,
        counts: tally.counts,
    })
}

async fn land(
    ctx: &WorkerContext,
    work: &PageWork,
    tally: &mut Tally,
    response: &Fetched,
    body: &Value,
    url: &url::Url,
    origin: &url::Url,
) -> Result<PageResult, PageError> {
    let stored = match prepare(work, tally, response, body, url, origin) {
        Err(reason) => Err(reason),
        Ok(landing) => match ctx.store.land_page(&landing).await {
            Ok(landed) => Ok(landed),
            Err(source) if source.is_retryable() => {
                return Err(PageError::Store {
                    task_id: work.task_id,
                    source,
                })
            }
            // The page's data cannot be stored (say, text Postgres
            // refuses): fetching it again would fail the same way.
            Err(e) => Err(format!(
                "page {} of partition {} cannot be stored: {e}",
                work.page_no, work.partition_no
            )),
        },
    };
    let landed = match stored {
        Ok(landed) => landed,
        Err(reason) => {
            let status = Some(response.status);
            return dead_letter(
                ctx,
                work,
                tally,
                DeadLetterClass::BadPage,
                reason,
                status,
                Some(response),
            )
            .await;
        }
    };
    match landed {
        Landed::Duplicate => {
            metrics().duplicate_deliveries.inc();
            Ok(PageResult::Duplicate)
        }
        Landed::Page {
            rows_inserted,
            rows_replaced,
            outbox_ids,
            finalize,
        } => {
            metrics().pages_landed.inc();
            metrics().rows_staged.inc_by(rows_inserted);
            metrics().rows_replaced.inc_by(rows_replaced);
            ctx.publish_outbox(&outbox_ids).await;
            tracing::debug!(export = %work.export_id, page = work.page_no, rows = rows_inserted, "page landed");
            Ok(PageResult::Landed {
                rows: rows_inserted + rows_replaced,
                finalize,
            })
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn dead_letter(
    ctx: &WorkerContext,
    work: &PageWork,
    tally: &mut Tally,
    class: DeadLetterClass,
    reason: String,
    status: Option<u16>,
    response: Option<&Fetched>,
) -> Result<PageResult, PageError> {
    tracing::warn!(export = %work.export_id, task = %work.task_id, page = work.page_no,
        partition = work.partition_no, %class, %reason, "page dead-lettered");
    let input = DeadLetterInput {
        task_id: work.task_id,
        class,
        reason: reason.replace('\0', "\u{fffd}"),
        last_status: status,
        body_excerpt: response.map(|r| excerpt(&r.body)),
        headers: response
            .map(|r| source::redacted_headers(&r.headers, None))
            .unwrap_or_else(|| Value::Object(Default::default())),
        attempts: std::mem::take(&mut tally.attempts),
        counts: tally.counts,
    };
    let outbox = ctx
        .store
        .dead_letter(&input)
        .await
        .map_err(|source| PageError::Store {
            task_id: work.task_id,
            source,
        })?;
    if let Some(id) = outbox {
        metrics().dead_letters.inc();
        ctx.publish_outbox(&[id]).await;
    }
    Ok(PageResult::DeadLettered)
}

/// The start of a body as text Postgres accepts (no NUL).
fn excerpt(body: &[u8]) -> String {
    let cut = body.len().min(BODY_EXCERPT_BYTES);
    String::from_utf8_lossy(&body[..cut]).replace('\0', "\u{fffd}")
}
