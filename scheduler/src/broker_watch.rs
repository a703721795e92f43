//! Keeps the scheduler's RabbitMQ connection alive.
//!
//! A worker that loses the broker for long exits and its supervisor starts
//! a fresh one; the scheduler holds the API and the loops, so it replaces
//! its connection instead. lapin's own recovery can stay `Reconnecting`
//! forever (a handshake with a broker that was still starting is never
//! answered and has no timeout); without this, the outbox relay would
//! retry on the dead connection and nothing would be published again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use pagefleet_shared::queue::{Broker, Outage};

/// How often the connection's state is looked at.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// A connection down this long is replaced. lapin's recovery after a broker
/// restart takes a few seconds; this leaves it room to finish first.
pub const RENEW_AFTER: Duration = Duration::from_secs(20);
/// The longest wait between two failed renewals.
const MAX_RETRY_GAP: Duration = Duration::from_secs(300);

/// Renews the connection whenever it has been down for `RENEW_AFTER`,
/// until `shutdown`.
pub async fn run_broker_watch(broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut outage = Outage::default();
    let mut failures = 0u32;
    let mut next_try = RENEW_AFTER;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
        let down = outage.observe(broker.is_connected(), Instant::now());
        if down < next_try {
            continue;
        }
        match broker.renew().await {
            Ok(()) => {
                tracing::warn!(
                    ?down,
                    "RabbitMQ connection was down; replaced it with a new one"
                );
                outage.reset();
                failures = 0;
                next_try = RENEW_AFTER;
            }
            Err(e) => {
                failures += 1;
                // Each attempt that times out may leave its half-open
                // connection behind: back off, up to `MAX_RETRY_GAP`.
                next_try = down
                    + RENEW_AFTER
                        .saturating_mul(failures.min(15))
                        .min(MAX_RETRY_GAP);
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(error = %e, ?down, "RabbitMQ connection is down and a new one failed; retrying");
                }
            }
        }
    }
}
