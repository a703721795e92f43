//! Postgres: the source of truth.
//!
//! Owns the schema (see `migrations/`) and every statement the fleet runs.
//! Each submodule is one part of an export's life: [`exports`] (submit and
//! status), [`landing`] (claim a page task, land it in one transaction, or
//! dead-letter it), [`ledger`] (the counts pages stated, the marks chains
//! left, and what partitions add up to), [`finalize`] (stream staged rows, mark the CSV published),
//! [`outbox`] (messages waiting to be published), [`dead_letters`] (filter,
//! count and show them), [`replay`] (replay, dry-run and discard them),
//! [`operations`] (an operator's cancel, pause, resume, retry and accepted
//! gaps), [`audit`] (every operator action), [`tokens`] (API tokens, kept as hashes), [`fleet_keys`] (keys
//! the fleet shares).
//!
//! Outbox bodies are `model::TaskMessage` as JSON, built in SQL by the
//! `pagefleet_*_message` functions of migration 4 and nowhere else.

mod audit;
mod dead_letters;
mod exports;
mod finalize;
mod firing;
mod fleet_keys;
mod landing;
mod ledger;
mod migrations;
mod operations;
mod outbox;
mod page_copy;
mod page_rows;
mod replay;
mod retention;
mod schedules;
mod snapshot;
mod splits;
mod tokens;

pub use audit::{Actor, AuditQuery, AuditRecord};
pub use dead_letters::{DeadLetter, DlqFilter, DlqPage, OverBound, MAX_FILTER_IDS};
pub use exports::{ExportListFilter, ExportStatus, Progress, SubmitError, Submitted};
pub use finalize::{FinalizeLock, FinalizeWork, Gap, Published, StagedRecord, StagedRows};
pub use firing::Fired;
pub use landing::{Attempt, ChainNext, Claim, DeadLetterInput, Landed, Landing, Lease, PageWork};
pub use operations::{ActionDone, ActionError};
pub use outbox::{OutboxFilter, OutboxMessage};
pub use page_rows::{CannotPack, PageRows};
pub use replay::{
    ActionOutcome, ActionRequest, PlannedPage, ReplayError, SkippedLetter, SourceCost,
};
pub use retention::Expired;
pub use schedules::{CreateScheduleError, ScheduleRecord, ScheduleRun};
pub use snapshot::{ActiveExport, FleetSnapshot};
pub use splits::PartitionSplit;
pub use tokens::TokenRecord;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use crate::config::redact_url;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("postgres connection string is not valid ({url}): {message}")]
    Config { url: String, message: String },
    #[error("cannot get a postgres connection: {0}")]
    Pool(String),
    #[error("postgres: {}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("migration {version} failed: {}", describe(.source))]
    Migration {
        version: i32,
        source: tokio_postgres::Error,
    },
    #[error("stored {what} of export {export_id} is not readable: {message}")]
    Corrupt {
        what: &'static str,
        export_id: uuid::Uuid,
        message: String,
    },
    /// A value the schema or the statement guarantees was not there: the
    /// code and the database disagree.
    #[error("{table}.{column} is missing for {whose}")]
    Missing {
        table: &'static str,
        column: &'static str,
        whose: String,
    },
    #[error("{0}")]
    State(#[from] crate::model::UnknownState),
    #[error("a page's rows for export {export_id} cannot be staged: {message}")]
    Rows {
        export_id: uuid::Uuid,
        message: String,
    },
}

impl StoreError {
    /// Whether trying again later can succeed: Postgres unreachable,
    /// restarting, out of resources, or a transaction conflict. Anything
    /// else is about the data and will fail the same way every time.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Pool(_) => true,
            StoreError::Postgres(e) => match e.code() {
                None => !is_about_the_data(e),
                Some(code) => {
                    let c = code.code();
                    c.starts_with("08")
                        || c.starts_with("40")
                        || c.starts_with("53")
                        || c.starts_with("57P")
                }
            },
            _ => false,
        }
    }
}

/// A client-side error without SQLSTATE that no retry can fix: a column
/// missing from a row or of another type, a parameter that cannot be sent.
/// tokio-postgres exposes its error kind only through these messages.
fn is_about_the_data(e: &tokio_postgres::Error) -> bool {
    let text = e.to_string();
    [
        "error deserializing column",
        "invalid column",
        "error serializing parameter",
    ]
    .iter()
    .any(|start| text.starts_with(start))
}

/// tokio-postgres prints "db error" for every server error; the server's
/// message and SQLSTATE are what an operator needs.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

/// A pool of Postgres connections and the statements of the fleet.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    /// Builds a pool; connections are opened lazily and replaced when broken,
    /// so a Postgres restart costs the requests in flight, not the process.
    pub fn connect(database_url: &str, max_size: usize) -> Result<Store, StoreError> {
        let config: tokio_postgres::Config =
            database_url
                .parse()
                .map_err(|e: tokio_postgres::Error| StoreError::Config {
                    url: redact_url(database_url),
                    message: e.to_string(),
                })?;
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(std::time::Duration::from_secs(30)))
            .create_timeout(Some(std::time::Duration::from_secs(10)))
            .build()
            .map_err(|e| StoreError::Config {
                url: redact_url(database_url),
                message: e.to_string(),
            })?;
        Ok(Store { pool })
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))
    }

    /// A cheap round trip, for health checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// Every outbox body is built by the SQL functions of migration 4,
    /// which tests/tests/messages.rs ties to `TaskMessage`; a statement
    /// spelling a message out by hand would escape that test.
    #[test]
    fn no_statement_spells_out_a_task_message() {
        let sources = [
            ("dead_letters.rs", include_str!("dead_letters.rs")),
            ("exports.rs", include_str!("exports.rs")),
            ("finalize.rs", include_str!("finalize.rs")),
            ("landing.rs", include_str!("landing.rs")),
            ("migrations.rs", include_str!("migrations.rs")),
            ("outbox.rs", include_str!("outbox.rs")),
        ];
        for (file, source) in sources {
            for hand_built in [concat!("jsonb_build", "_object"), concat!("'type", "'")] {
                assert!(
                    !source.contains(hand_built),
                    "store/{file} builds a message with {hand_built}; use a pagefleet_*_message function"
                );
            }
        }
    }
}
