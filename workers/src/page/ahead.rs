//! A chain's next page, fetched while the page before it lands.
//!
//! A chain goes one page at a time: page *k+1*'s position is in page *k*'s
//! answer. Landing *k* costs a transaction of round trips to Postgres;
//! fetching *k+1* costs the source's latency. Done one after the other, a
//! chain runs at `1 / (latency + landing)`; side by side, at `1 / latency`.
//! So once page *k* is parsed, its worker sends *k+1*'s request (through
//! the rate limiter, like any) while *k* lands, and keeps the answer for
//! the task *k+1* it claims once *k* has landed (`follow`). Nothing is
//! stored before that claim: if *k* does not land, or *k+1* is not claimed
//! (or its claim is lost before the answer is in), or its request is not
//! the one the claimed task would send, the answer is dropped and the
//! task fetches its page as usual. A wait for a token long enough to park
//! sends nothing ahead.

use std::time::Duration;

use pagefleet_shared::pagination::Position;
use pagefleet_shared::retry::Outcome;
use pagefleet_shared::store::PageWork;

use pagefleet_shared::source::Credential;
use pagefleet_shared::spec::AuthSpec;

use super::{admit, attempt, pause_source, prepare_request, Attempted, Request, Tally};
use crate::context::WorkerContext;

/// The next page's request and what it came to, with what it counted.
#[derive(Debug)]
pub(super) struct Ahead {
    url: url::Url,
    /// Whose credential it was sent with, and under which spec's auth.
    tenant_id: String,
    auth: Option<AuthSpec>,
    credential: Option<Credential>,
    attempted: Attempted,
    tally: Tally,
}

/// Sends the request of the chain page after `work`'s, at `next`; `None`
/// when nothing was sent. Its credential is read afresh, as every page's
/// is (a secret rotated in place is picked up on the next page), and kept
/// for the claimed task's own request.
pub(super) async fn fetch(ctx: &WorkerContext, work: &PageWork, next: &Position) -> Option<Ahead> {
    if ctx.draining.is_cancelled() {
        return None;
    }
    let mut next_work = work.clone();
    next_work.position = next.clone();
    next_work.page_no += 1;
    next_work.failures = 0;
    let request = prepare_request(ctx, &next_work).await.ok()?;
    let mut tally = Tally::default();
    if admit(ctx, &next_work, &request, false, &mut tally)
        .await
        .is_some()
    {
        return None;
    }
    let attempted = attempt(ctx, &next_work, &request, &mut tally).await;
    // The fleet hears of a refusal now, whatever becomes of this answer.
    if let Attempted::Failed {
        outcome: Outcome::RateLimited { retry_after },
        ..
    } = &attempted
    {
        let base = Duration::from_millis(work.spec.retry.base_ms);
        pause_source(ctx, &request.bucket, retry_after.unwrap_or(base)).await;
    }
    Some(Ahead {
        url: request.url,
        tenant_id: next_work.tenant_id.clone(),
        auth: next_work.spec.source.auth.clone(),
        credential: request.credential,
        attempted,
        tally,
    })
}

impl Ahead {
    /// The credential the request was sent with, for the claimed task's
    /// own request: only when the task is the same tenant's under the same
    /// auth (as a chain's next page always is), else `None` (resolve it).
    pub(super) fn credential_for(&self, work: &PageWork) -> Option<Option<Credential>> {
        let same = self.tenant_id == work.tenant_id && self.auth == work.spec.source.auth;
        same.then(|| self.credential.clone())
    }
}

/// The answer fetched ahead, for the claimed task whose request is
/// `request`; its counts go to the task's tally either way, since the
/// request was sent.
pub(super) fn for_request(ahead: Ahead, request: &Request, tally: &mut Tally) -> Option<Attempted> {
    tally.absorb(ahead.tally);
    (ahead.url == request.url).then_some(ahead.attempted)
}
