//! The outbox relay, the parking lot and the lease reconciler.
//!
//! Workers publish what their landings wrote right after committing; the
//! relay publishes whatever is left (a worker died in between, the broker
//! was away), with confirms, then marks it sent. Each pass also puts parked
//! tasks whose not-before time has come back on the queue. The reconciler puts back
//! in-flight tasks whose lease ran out long ago.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use pagefleet_shared::dispatch::{DispatchError, Dispatcher};
use pagefleet_shared::model::QueueRole;
use pagefleet_shared::queue::{Broker, QueueError};
use pagefleet_shared::store::{OutboxFilter, Store, StoreError};

/// Messages younger than this are left to the process that wrote them.
const RELAY_MIN_AGE: Duration = Duration::from_secs(2);
const RELAY_INTERVAL: Duration = Duration::from_millis(200);
const RELAY_BATCH: i64 = pagefleet_shared::dispatch::CHUNK as i64;
/// With `LEASE_GRACE`, bounds how long a dead worker's task waits when its
/// redelivery went missing: lease (10 s) + grace + interval, about 15 s,
/// inside the 30 s a takeover may take.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(2);
/// How long after a lease ran out a task is re-published. The broker's own
/// redelivery usually wins; the grace keeps the two from racing.
const LEASE_GRACE: Duration = Duration::from_secs(3);
/// How long a queued task (or a finalizing export) may sit untouched with
/// empty queues before its message is presumed lost.
const IDLE_GRACE: Duration = Duration::from_secs(30);
/// Past this a queued task is re-published even while the queues are busy;
/// a duplicate of a task still waiting in the queue is absorbed.
const STALE_QUEUED: Duration = Duration::from_secs(15 * 60);

/// Publishes unsent outbox messages until `shutdown`.
pub async fn run_relay(store: Store, broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut dispatcher = Dispatcher::new();
    let mut failures = 0u32;
    let mut backlog = false;
    loop {
        // A full batch means more may be waiting: go again at once.
        let pause = if backlog {
            Duration::ZERO
        } else {
            RELAY_INTERVAL
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        backlog = false;
        match relay_once(&store, &broker, &mut dispatcher).await {
            Ok(n) => {
                failures = 0;
                backlog = n as i64 >= RELAY_BATCH;
                if n > 0 {
                    tracing::debug!(published = n, "outbox relayed");
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(error = %e, "outbox relay failed; retrying");
                }
                tokio::time::sleep(Duration::from_secs(1).min(RELAY_INTERVAL * failures)).await;
            }
        }
    }
}

async fn relay_once(
    store: &Store,
    broker: &Broker,
    dispatcher: &mut Dispatcher,
) -> Result<usize, DispatchError> {
    // Parked tasks whose time has come go back to the queue first.
    let due = store.unpark_due().await?;
    let unparked = dispatcher.publish_ids(store, broker, &due).await?;
    let filter = OutboxFilter::Pending {
        min_age: RELAY_MIN_AGE,
        limit: RELAY_BATCH,
    };
    Ok(unparked + dispatcher.publish(store, broker, filter).await?)
}

/// Puts back what lost its message: in-flight tasks whose worker died
/// (lease long expired) and, when the queues are idle, queued tasks and
/// finalize tasks nothing is about to deliver.
pub async fn run_reconciler(store: Store, broker: Arc<Broker>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RECONCILE_INTERVAL) => {}
        }
        if let Err(e) = reconcile_once(&store, &broker).await {
            tracing::warn!(error = %e, "reconciler pass failed");
        }
    }
}

/// Why a reconciler pass stopped early; the next pass tries again.
#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

async fn reconcile_once(store: &Store, broker: &Broker) -> Result<(), ReconcileError> {
    let expired = store.requeue_expired(LEASE_GRACE).await?;
    log_requeued(expired, "re-queued page tasks with expired leases");
    // A queued task untouched for very long has lost its message whatever
    // the queues look like (a busy fleet never shows them empty).
    let stale = store.requeue_idle_queued(STALE_QUEUED).await?;
    log_requeued(
        stale,
        &format!("re-published queued page tasks idle for {STALE_QUEUED:?}"),
    );
    if store.outbox_has_unsent().await? {
        // The relay has not caught up: an empty queue proves nothing yet.
        return Ok(());
    }
    if broker.ready_count(QueueRole::Pages).await? == 0 {
        let n = store.requeue_idle_queued(IDLE_GRACE).await?;
        log_requeued(
            n,
            "re-published queued page tasks that had lost their message",
        );
    }
    if broker.ready_count(QueueRole::Finalize).await? == 0 {
        let n = store.requeue_idle_finalize(IDLE_GRACE).await?;
        log_requeued(n, "re-published finalize tasks that had lost their message");
    }
    Ok(())
}

/// One line per sweep that found something; silence when it found nothing.
fn log_requeued(count: u64, what: &str) {
    if count > 0 {
        tracing::warn!(requeued = count, "{what}");
    }
}
