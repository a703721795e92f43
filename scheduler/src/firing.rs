//! The firing loop: every scheduler runs it; Postgres makes each slot fire
//! once (see `store::firing`). Each pass counts the runs that ended,
//! fires the due schedules, starts the slots that waited for a run to end,
//! and publishes the first pages of what it started.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use pagefleet_shared::dispatch::{DispatchError, Dispatcher};
use pagefleet_shared::queue::Broker;
use pagefleet_shared::store::{Fired, Store};

/// How often the schedules are looked at: a slot fires within about this
/// of its time (plus one transaction).
pub const FIRING_INTERVAL: Duration = Duration::from_millis(500);
/// How long a skipped slot's row is kept, and how often (in passes) old
/// ones are forgotten.
const KEEP_SKIPPED: Duration = Duration::from_secs(7 * 24 * 3600);
const PRUNE_EVERY: u64 = 120;
/// Schedules fired (and waiting slots started) per pass at most.
const PASS_BUDGET: usize = 200;

/// Fires schedules until `shutdown`. `fired_by` names this scheduler in
/// the firing record.
pub async fn run_firing(
    store: Store,
    broker: Arc<Broker>,
    fired_by: String,
    shutdown: CancellationToken,
) {
    let mut dispatcher = Dispatcher::new();
    let mut failures = 0u32;
    let mut passes = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(FIRING_INTERVAL) => {}
        }
        passes += 1;
        if passes.is_multiple_of(PRUNE_EVERY) {
            match store.prune_skipped_firings(KEEP_SKIPPED).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "forgot old skipped slots"),
                Err(e) => tracing::warn!(error = %e, "pruning skipped slots failed"),
            }
        }
        match fire_once(&store, &broker, &mut dispatcher, &fired_by).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(error = %e, "schedule firing pass failed; retrying");
                }
            }
        }
    }
}

async fn fire_once(
    store: &Store,
    broker: &Broker,
    dispatcher: &mut Dispatcher,
    fired_by: &str,
) -> Result<(), DispatchError> {
    for name in store.settle_schedule_runs().await? {
        tracing::warn!(schedule = %name, "schedule paused: too many runs in a row failed");
    }
    // Each kind of step has a budget per pass, so a flood of due
    // schedules cannot starve the waiting slots (or the next pass's count).
    for _ in 0..PASS_BUDGET {
        let Some(fired) = store.fire_next_due(fired_by).await? else {
            break;
        };
        report(&fired);
        publish(store, broker, dispatcher, &fired).await;
    }
    for _ in 0..PASS_BUDGET {
        let Some(fired) = store.start_next_queued().await? else {
            break;
        };
        report(&fired);
        publish(store, broker, dispatcher, &fired).await;
    }
    Ok(())
}

/// The relay publishes whatever this does not.
async fn publish(store: &Store, broker: &Broker, dispatcher: &mut Dispatcher, fired: &Fired) {
    if fired.outbox_ids.is_empty() {
        return;
    }
    if let Err(e) = dispatcher
        .publish_ids(store, broker, &fired.outbox_ids)
        .await
    {
        tracing::warn!(error = %e, schedule = %fired.name, "publish failed; the relay will retry");
    }
}

fn report(fired: &Fired) {
    for (slot, export) in &fired.started {
        tracing::info!(schedule = %fired.name, %slot, %export, "schedule fired");
    }
    if fired.skipped + fired.queued > 0 || fired.cancelled > 0 {
        tracing::info!(
            schedule = %fired.name,
            skipped = fired.skipped,
            queued = fired.queued,
            cancelled = fired.cancelled,
            "a run was still going (overlap policy)"
        );
    }
    if fired.missed > 0 {
        tracing::warn!(schedule = %fired.name, missed = fired.missed, "slots missed while no scheduler ran (catch-up policy)");
    }
}
