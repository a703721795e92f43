//! Schema migrations, applied at start by every process that needs them.
//!
//! All pending migrations run in one transaction under a transaction-level
//! advisory lock, so two schedulers starting at once apply each migration
//! exactly once, and a crash mid-way leaves the schema as it was.

use super::{Store, StoreError};

/// Ordered list of (version, SQL). Never edit an applied migration; add one.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../migrations/0001_core.sql")),
    (2, include_str!("../../migrations/0002_claims.sql")),
    (3, include_str!("../../migrations/0003_parking.sql")),
    (4, include_str!("../../migrations/0004_task_messages.sql")),
    (5, include_str!("../../migrations/0005_ledger.sql")),
    (6, include_str!("../../migrations/0006_lost_claims.sql")),
    (7, include_str!("../../migrations/0007_api_tokens.sql")),
    (8, include_str!("../../migrations/0008_fleet_keys.sql")),
    (9, include_str!("../../migrations/0009_schedules.sql")),
    (10, include_str!("../../migrations/0010_incremental.sql")),
    (11, include_str!("../../migrations/0011_operations.sql")),
    (12, include_str!("../../migrations/0012_progress.sql")),
    (13, include_str!("../../migrations/0013_learned_rate.sql")),
    (14, include_str!("../../migrations/0014_landing_time.sql")),
    (
        15,
        include_str!("../../migrations/0015_staging_retention.sql"),
    ),
];

/// An arbitrary constant that names "pagefleet migrations" among advisory locks.
const MIGRATION_LOCK: i64 = 0x7061_6765_666c_6565;

impl Store {
    /// Applies every migration not yet applied. Idempotent.
    pub async fn migrate(&self) -> Result<Vec<i32>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version int PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
        let applied: Vec<i32> = tx
            .query("SELECT version FROM schema_migrations", &[])
            .await?
            .iter()
            .map(|r| r.try_get("version"))
            .collect::<Result<_, _>>()?;
        let mut newly = Vec::new();
        for (version, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            tx.batch_execute(sql)
                .await
                .map_err(|e| StoreError::Migration {
                    version: *version,
                    source: e,
                })?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .await?;
            newly.push(*version);
        }
        tx.commit().await?;
        Ok(newly)
    }
}
