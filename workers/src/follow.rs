//! Chains without the hop: the worker that lands a chain's page goes on to
//! fetch the next one itself, in the slot of the delivery it just acked.
//!
//! The landing still writes the next page's task and its message in one
//! transaction; the worker claims the task and marks the message sent in
//! one statement (`Store::claim_followed`), so a crash anywhere loses
//! nothing: before the claim the message is unsent and the relay publishes
//! it; after it, the task is in flight under a lease and the reconciler
//! re-queues it when the lease runs out. The queue is the fallback, not
//! the path: a draining worker, a task it could not claim, or one it
//! handed back unfinished goes back to it.

use crate::context::WorkerContext;
use crate::page::{handle_page, Follow, PageError, PageResult, Taken};

/// Runs a chain's pages one after another for as long as each landing
/// plans the next and the worker is not draining.
pub async fn follow_chain(ctx: &WorkerContext, mut follow: Follow) {
    loop {
        let next = follow.next;
        if ctx.draining.is_cancelled() {
            follow.give_back(ctx).await;
            return;
        }
        let result = handle_page(ctx, Taken::Followed(follow)).await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "chain page not finished; back to the queue");
        }
        match next_step(result) {
            Step::Next(then) => follow = then,
            Step::Done => return,
            // Its claim was released or lost: only the message is left to
            // send (if Postgres is away, the reconciler re-queues the task
            // once its lease runs out, or, released, once the queues idle).
            Step::BackToTheQueue => {
                Follow::new(next).give_back(ctx).await;
                return;
            }
        }
    }
}

/// What a followed page's result leads to.
#[derive(Debug)]
enum Step {
    /// Its landing planned the chain's next page: fetch it.
    Next(Follow),
    /// It reached a final state (or was never claimed, and its message
    /// went to the queue then).
    Done,
    /// Claimed and left unfinished: its message must be sent again.
    BackToTheQueue,
}

fn next_step(result: Result<PageResult, PageError>) -> Step {
    match result {
        Ok(PageResult::Landed {
            follow: Some(next), ..
        }) => Step::Next(next),
        Ok(PageResult::HandedBack) | Err(_) => Step::BackToTheQueue,
        Ok(_) => Step::Done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagefleet_shared::store::{ChainNext, StoreError};
    use uuid::Uuid;

    fn next() -> ChainNext {
        ChainNext {
            task_id: Uuid::nil(),
            outbox_id: 7,
        }
    }

    #[test]
    fn a_landing_that_plans_the_next_page_goes_on() {
        let landed = Ok(PageResult::Landed {
            rows: 10,
            finalize: false,
            follow: Some(Follow::new(next())),
        });
        assert!(matches!(next_step(landed), Step::Next(f) if f.next == next()));
        let last = Ok(PageResult::Landed {
            rows: 10,
            finalize: true,
            follow: None,
        });
        assert!(matches!(next_step(last), Step::Done));
        for done in [
            PageResult::DeadLettered,
            PageResult::Skipped,
            PageResult::Parked,
            PageResult::Duplicate,
        ] {
            assert!(matches!(next_step(Ok(done)), Step::Done));
        }
    }

    #[test]
    fn an_unfinished_page_goes_back_to_the_queue() {
        assert!(matches!(
            next_step(Ok(PageResult::HandedBack)),
            Step::BackToTheQueue
        ));
        let away = PageError::Store {
            task_id: Uuid::nil(),
            source: StoreError::Pool("connection refused".into()),
        };
        assert!(matches!(next_step(Err(away)), Step::BackToTheQueue));
    }
}
