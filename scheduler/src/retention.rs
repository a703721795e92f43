//! The staging retention loop: a pass now and then removes the staged rows
//! of exports that ended published or cancelled longer ago than the
//! fleet's `staging_retention_secs` (see `store::retention`). Several
//! schedulers may run it at once: removing is idempotent.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use pagefleet_shared::store::{Expired, Store, StoreError};

/// Exports looked at a pass.
const EXPORTS_PER_PASS: i64 = 20;
/// Rows removed a statement.
const ROWS_PER_BATCH: i64 = 10_000;

/// How often a pass runs: often enough that rows go within about a
/// quarter of the retention, at most once a second and at least once a
/// minute.
pub fn pass_interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

pub async fn run_staging_retention(store: Store, retention: Duration, shutdown: CancellationToken) {
    let every = pass_interval(retention);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match remove_expired(&store, retention, &shutdown).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(error = %e, "staging retention pass failed; retrying");
                }
            }
        }
    }
}

async fn remove_expired(
    store: &Store,
    retention: Duration,
    shutdown: &CancellationToken,
) -> Result<(), StoreError> {
    for expired in store
        .staging_past_retention(retention, EXPORTS_PER_PASS)
        .await?
    {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let removed = remove_staging(store, &expired, shutdown).await?;
        if let Some(batches) = removed {
            tracing::info!(export = %expired.export_id, state = %expired.state, batches,
                retention_secs = retention.as_secs(), "staging removed after the retention");
        }
    }
    Ok(())
}

/// Removes one export's staging a batch at a time; the number of batches,
/// or `None` when shutdown came first (the next pass goes on).
async fn remove_staging(
    store: &Store,
    expired: &Expired,
    shutdown: &CancellationToken,
) -> Result<Option<u64>, StoreError> {
    let id = expired.export_id;
    let mut after = String::new();
    let mut batches = 0u64;
    while let Some(last) = store
        .remove_staged_batch(id, &after, ROWS_PER_BATCH)
        .await?
    {
        batches += 1;
        after = last;
        if shutdown.is_cancelled() {
            return Ok(None);
        }
    }
    // Nothing left (a key no batch could reach would still be here): the
    // export records that its staging went.
    if !store.has_staged_rows(id).await? {
        store.mark_staging_removed(id).await?;
    }
    Ok(Some(batches))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_come_about_four_times_a_retention_within_a_second_and_a_minute() {
        let secs = |s| Duration::from_secs(s);
        assert_eq!(pass_interval(secs(0)), secs(1));
        assert_eq!(pass_interval(secs(8)), secs(2));
        assert_eq!(pass_interval(secs(7 * 24 * 3600)), secs(60));
    }
}
