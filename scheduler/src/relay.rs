//! The outbox relay and the lease reconciler.
//!
//! Workers publish what their landings wrote right after committing; the
//! relay publishes whatever is left (a worker died in between, the broker
//! was away), with confirms, then marks it sent. The reconciler puts back
//! in-flight tasks whose lease ran out long ago.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use pagefleet_shared::queue::{Broker, Publisher};
use pagefleet_shared::store::Store;
use pagefleet_shared::telemetry::metrics;

/// Messages younger than this are left to the process that wrote them.
const RELAY_MIN_AGE: Duration = Duration::from_secs(2);
const RELAY_INTERVAL: Duration = Duration::from_millis(250);
const RELAY_BATCH: i64 = 500;
const RECONCILE_INTERVAL: Duration = Duration::from_secs(10);
/// How long after a lease ran out a task is re-published.
const LEASE_GRACE: Duration = Duration::from_secs(30);

/// Publishes unsent outbox messages until `shutdown`.
pub async fn run_relay(store: Store, broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut publisher: Option<Publisher> = None;
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RELAY_INTERVAL) => {}
        }
        match relay_once(&store, &broker, &mut publisher).await {
            Ok(n) => {
                failures = 0;
                if n > 0 {
                    tracing::debug!(published = n, "outbox relayed");
                }
            }
            Err(e) => {
                failures += 1;
                publisher = None;
                if failures == 1 || failures % 20 == 0 {
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
    publisher: &mut Option<Publisher>,
) -> Result<usize, String> {
    let pending = store
        .outbox_pending(RELAY_MIN_AGE, RELAY_BATCH)
        .await
        .map_err(|e| e.to_string())?;
    if pending.is_empty() {
        return Ok(0);
    }
    if publisher.as_ref().is_none_or(|p| !p.is_open()) {
        *publisher = Some(broker.publisher().await.map_err(|e| e.to_string())?);
    }
    let Some(p) = publisher.as_ref() else {
        return Ok(0);
    };
    let mut sent = Vec::with_capacity(pending.len());
    let mut error = None;
    for message in &pending {
        match p.publish(message.queue, message.body.to_string().as_bytes()).await {
            Ok(()) => sent.push(message.id),
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    store
        .outbox_mark_sent(&sent)
        .await
        .map_err(|e| e.to_string())?;
    metrics().outbox_published.inc_by(sent.len() as u64);
    match error {
        Some(e) => Err(e),
        None => Ok(sent.len()),
    }
}

/// Re-queues tasks whose worker vanished without the broker noticing.
pub async fn run_reconciler(store: Store, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RECONCILE_INTERVAL) => {}
        }
        match store.requeue_expired(LEASE_GRACE).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(requeued = n, "re-queued page tasks with expired leases"),
            Err(e) => tracing::warn!(error = %e, "lease reconciler failed"),
        }
    }
}
