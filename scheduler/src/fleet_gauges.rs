//! The scheduler's gauges of the fleet (`pagefleet_exports`,
//! `pagefleet_page_tasks`, `pagefleet_queue_depth`,
//! `pagefleet_dead_letters_open`, and per export still going its pages
//! remaining, retries, 429s and idle seconds), refreshed from Postgres and
//! RabbitMQ every few seconds. Every scheduler sets the same values; a
//! dashboard takes the max (or any one).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use pagefleet_shared::model::{ExportState, QueueRole, TaskState};
use pagefleet_shared::queue::Broker;
use pagefleet_shared::store::{FleetSnapshot, Store};
use pagefleet_shared::telemetry::{metrics, FleetGauges};

/// How often the gauges are refreshed.
pub const REFRESH: Duration = Duration::from_secs(2);

const TASK_STATES: [&str; 6] = [
    TaskState::Queued.as_str(),
    "parked",
    TaskState::InFlight.as_str(),
    TaskState::Done.as_str(),
    TaskState::Dead.as_str(),
    TaskState::Discarded.as_str(),
];

pub async fn run_fleet_gauges(store: Store, broker: Arc<Broker>, shutdown: CancellationToken) {
    loop {
        match store.fleet_snapshot().await {
            Ok(snapshot) => set(&metrics().fleet, &snapshot),
            Err(e) => tracing::debug!(error = %e, "fleet gauges not refreshed"),
        }
        for role in [QueueRole::Pages, QueueRole::Finalize, QueueRole::Dead] {
            if let Ok(ready) = broker.ready_count(role).await {
                let gauge = metrics()
                    .fleet
                    .queue_depth
                    .with_label_values(&[role.as_str()]);
                gauge.set(i64::from(ready));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
}

/// Sets every gauge from one snapshot: every state (zero included), and
/// per export only those still going (an export that ended loses its
/// series).
fn set(gauges: &FleetGauges, snapshot: &FleetSnapshot) {
    let count = |pairs: &[(String, i64)], state: &str| {
        (pairs.iter())
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n)
    };
    for state in ExportState::ALL {
        let n = count(&snapshot.exports_by_state, state.as_str());
        gauges.exports.with_label_values(&[state.as_str()]).set(n);
    }
    for state in TASK_STATES {
        let n = count(&snapshot.tasks_by_state, state);
        gauges.page_tasks.with_label_values(&[state]).set(n);
    }
    gauges.dead_letters_open.set(snapshot.dead_letters_open);
    for vec in [
        &gauges.export_pages_remaining,
        &gauges.export_retries,
        &gauges.export_rate_limited,
        &gauges.export_idle_seconds,
    ] {
        vec.reset();
    }
    for export in &snapshot.active {
        let id = export.id.to_string();
        let label = [id.as_str()];
        (gauges.export_pages_remaining.with_label_values(&label)).set(export.pages_remaining);
        (gauges.export_retries.with_label_values(&label)).set(export.retries);
        (gauges.export_rate_limited.with_label_values(&label)).set(export.rate_limited);
        (gauges.export_idle_seconds.with_label_values(&label)).set(export.idle_seconds);
    }
}
