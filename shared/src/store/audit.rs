//! The audit log: every operator action (replay, dry run, discard, cancel,
//! pause, resume, retry, accepting gaps) with who did it, when, what it was
//! aimed at, the dry run it followed, and what came of it. Each row is
//! written in the transaction of the action it records, so an action that
//! happened always has its row and a row never records what did not happen.

use deadpool_postgres::Transaction;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::model::new_id;

/// Who acts, for whom, and the dry run the action follows.
#[derive(Debug, Clone)]
pub struct Actor {
    pub tenant_id: String,
    /// The caller as the audit log names it (`token <id>`, `admin`,
    /// `proxy:<user>`): never a secret.
    pub name: String,
}

/// One action to record.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub actor: &'a Actor,
    pub action: &'static str,
    pub dry_run: bool,
    pub target: serde_json::Value,
    pub follows: Option<Uuid>,
    pub outcome: serde_json::Value,
}

/// A recorded action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AuditRecord {
    pub id: Uuid,
    pub actor: String,
    pub action: String,
    pub dry_run: bool,
    pub target: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<Uuid>,
    pub outcome: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Records an action in the caller's transaction; returns its id.
pub(super) async fn record(
    tx: &Transaction<'_>,
    entry: &AuditEntry<'_>,
) -> Result<Uuid, StoreError> {
    let id = new_id();
    tx.execute(
        "INSERT INTO audit_log (id, tenant_id, actor, action, dry_run, target, follows, outcome)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &id,
            &entry.actor.tenant_id,
            &entry.actor.name,
            &entry.action,
            &entry.dry_run,
            &entry.target,
            &entry.follows,
            &entry.outcome,
        ],
    )
    .await?;
    Ok(id)
}

fn from_row(r: &tokio_postgres::Row) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        id: r.try_get("id")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        dry_run: r.try_get("dry_run")?,
        target: r.try_get("target")?,
        follows: r.try_get("follows")?,
        outcome: r.try_get("outcome")?,
        at: r.try_get("at")?,
    })
}

const SELECT: &str =
    "SELECT id, actor, action, dry_run, target, follows, outcome, at FROM audit_log";

/// The audit log of a tenant, newest first: `action` keeps one action,
/// `before` pages on (an id from the previous page).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub before: Option<Uuid>,
    #[serde(default)]
    pub limit: Option<i64>,
}

impl Store {
    pub async fn audit_log(
        &self,
        tenant_id: &str,
        query: &AuditQuery,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = query.limit.unwrap_or(50).clamp(1, 500);
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "{SELECT} WHERE tenant_id = $1 AND ($2::text IS NULL OR action = $2)
                       AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
                ),
                &[&tenant_id, &query.action, &query.before, &limit],
            )
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// One of the tenant's audit records.
    pub async fn audit_record(
        &self,
        tenant_id: &str,
        id: Uuid,
    ) -> Result<Option<AuditRecord>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("{SELECT} WHERE tenant_id = $1 AND id = $2"),
                &[&tenant_id, &id],
            )
            .await?;
        row.as_ref().map(from_row).transpose()
    }
}
