//! An operator's actions on an export: cancel, pause, resume, retry (a
//! failed finalize) and accepting its gaps. Which state each applies to is
//! `lifecycle::ExportAction`; each runs in one transaction with its audit
//! row.
//!
//! - cancel: `cancelled`, with who did it; its unpublished page messages
//!   are dropped and a delivery of one does nothing (claims skip a
//!   cancelled export); staging is kept for inspection; no CSV.
//! - pause: `paused`; no page is claimed until it is resumed (a page in
//!   flight still lands).
//! - resume: `running` (or `blocked`, or `finalizing` when every page has
//!   landed), and every queued page published again.
//! - retry: a `failed` export back to `finalizing`, its finalize message
//!   written.
//! - accept gaps: the export may publish without the pages discarded from
//!   it so far (a page discarded later needs its own acceptance).

use deadpool_postgres::Transaction;
use uuid::Uuid;

use super::audit::{self, Actor, AuditEntry};
use super::replay::settle;
use super::{Store, StoreError};
use crate::lifecycle::ExportAction;
use crate::model::ExportState;

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no export {0}")]
    NotFound(Uuid),
    #[error("export {id}: {why}")]
    Refused { id: Uuid, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<tokio_postgres::Error> for ActionError {
    fn from(e: tokio_postgres::Error) -> Self {
        ActionError::Store(e.into())
    }
}

/// What an action did to an export.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ActionDone {
    pub export: Uuid,
    pub action: String,
    pub from: ExportState,
    pub to: ExportState,
    pub audit_id: Uuid,
    #[serde(skip)]
    pub outbox_ids: Vec<i64>,
}

impl Store {
    /// Applies `action` to the tenant's export, or says why not.
    pub async fn export_action(
        &self,
        actor: &Actor,
        export: Uuid,
        action: ExportAction,
    ) -> Result<ActionDone, ActionError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let row = tx
            .query_opt(
                "SELECT state FROM exports WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
                &[&export, &actor.tenant_id],
            )
            .await
            .map_err(StoreError::from)?;
        let Some(row) = row else {
            return Err(ActionError::NotFound(export));
        };
        let from: ExportState = row
            .try_get::<_, String>("state")
            .map_err(StoreError::from)?
            .parse()
            .map_err(StoreError::from)?;
        if !action.applies_to(from) {
            return Err(ActionError::Refused {
                id: export,
                why: action.refusal(from),
            });
        }
        let (to, outbox_ids) = apply(&tx, actor, export, action).await?;
        let audit_id = audit::record(
            &tx,
            &AuditEntry {
                actor,
                action: action_name(action),
                dry_run: false,
                target: serde_json::json!({ "export": export }),
                follows: None,
                outcome: serde_json::json!({ "from": from, "to": to }),
            },
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(ActionDone {
            export,
            action: action.as_str().to_string(),
            from,
            to,
            audit_id,
            outbox_ids,
        })
    }
}

fn action_name(action: ExportAction) -> &'static str {
    match action {
        ExportAction::Cancel => "export.cancel",
        ExportAction::Pause => "export.pause",
        ExportAction::Resume => "export.resume",
        ExportAction::Retry => "export.retry",
        ExportAction::AcceptGaps => "export.accept_gaps",
    }
}

async fn apply(
    tx: &Transaction<'_>,
    actor: &Actor,
    export: Uuid,
    action: ExportAction,
) -> Result<(ExportState, Vec<i64>), ActionError> {
    match action {
        ExportAction::Cancel => {
            let error = format!("cancelled by {}", actor.name);
            set_state(tx, export, ExportState::Cancelled, Some(&error)).await?;
            tx.execute(
                "DELETE FROM outbox WHERE sent_at IS NULL AND queue = 'pages'
                   AND body->>'export_id' = $1::text",
                &[&export.to_string()],
            )
            .await?;
            tx.execute(
                "UPDATE dead_letters SET resolved_at = now(), resolution = 'cancelled',
                        resolved_by = $2
                  WHERE export_id = $1 AND resolved_at IS NULL",
                &[&export, &actor.name],
            )
            .await?;
            Ok((ExportState::Cancelled, Vec::new()))
        }
        ExportAction::Pause => {
            set_state(tx, export, ExportState::Paused, None).await?;
            Ok((ExportState::Paused, Vec::new()))
        }
        ExportAction::Resume => {
            // Resumed as blocked, then settled like a replay would: blocked
            // while a page is dead, finalizing when every page landed
            // while it was paused, running otherwise.
            set_state(tx, export, ExportState::Blocked, None).await?;
            let (to, finalize) = settle(tx, export).await?;
            let mut outbox = republish_queued(tx, export).await?;
            outbox.extend(finalize);
            Ok((to, outbox))
        }
        ExportAction::Retry => {
            tx.execute(
                "UPDATE exports SET state = 'finalizing', error = NULL, finished_at = NULL,
                        updated_at = now() WHERE id = $1",
                &[&export],
            )
            .await?;
            let id: i64 = tx
                .query_one(
                    "INSERT INTO outbox (queue, body)
                     VALUES ('finalize', pagefleet_finalize_message($1)) RETURNING id",
                    &[&export],
                )
                .await?
                .try_get("id")?;
            Ok((ExportState::Finalizing, vec![id]))
        }
        ExportAction::AcceptGaps => {
            let accepted = tx
                .execute(
                    "UPDATE page_tasks SET gap_accepted = true, updated_at = now()
                      WHERE export_id = $1 AND state = 'discarded' AND NOT gap_accepted",
                    &[&export],
                )
                .await?;
            if accepted == 0 {
                return Err(ActionError::Refused {
                    id: export,
                    why: "no discarded page waits for its gap to be accepted".into(),
                });
            }
            let (to, finalize) = settle(tx, export).await?;
            Ok((to, finalize.into_iter().collect()))
        }
    }
}

async fn set_state(
    tx: &Transaction<'_>,
    export: Uuid,
    state: ExportState,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let finished = state.is_terminal();
    tx.execute(
        "UPDATE exports SET state = $2, error = COALESCE($3, error),
                finished_at = CASE WHEN $4 THEN now() ELSE finished_at END, updated_at = now()
          WHERE id = $1",
        &[&export, &state.as_str(), &error, &finished],
    )
    .await?;
    Ok(())
}

/// Every queued page of the export published again (a paused export's
/// deliveries were dropped). Parked pages keep their time.
async fn republish_queued(tx: &Transaction<'_>, export: Uuid) -> Result<Vec<i64>, StoreError> {
    let rows = tx
        .query(
            "INSERT INTO outbox (queue, body)
             SELECT 'pages', pagefleet_page_message(export_id, id) FROM page_tasks
              WHERE export_id = $1 AND state = 'queued'
                AND (not_before IS NULL OR not_before <= now())
             RETURNING id",
            &[&export],
        )
        .await?;
    rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
}
