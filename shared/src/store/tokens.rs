//! API tokens in Postgres: create, find by hash, list, revoke. Only the
//! hash is ever written (see [`crate::api_token`]).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::api_token::{ApiToken, TokenRole};
use crate::model::new_id;

/// A token as listed: who it acts for, never the token or its hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TokenRecord {
    pub id: Uuid,
    pub role: TokenRole,
    pub tenant_id: Option<String>,
    pub label: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

fn record(row: &tokio_postgres::Row) -> Result<TokenRecord, StoreError> {
    let role: String = row.try_get("role")?;
    Ok(TokenRecord {
        id: row.try_get("id")?,
        role: role.parse()?,
        tenant_id: row.try_get("tenant_id")?,
        label: row.try_get("label")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

const COLUMNS: &str = "id, role, tenant_id, label, created_at, revoked_at";

impl Store {
    /// Stores a new token's hash; `tenant` is `None` exactly for admin tokens.
    pub async fn create_token(
        &self,
        token: &ApiToken,
        role: TokenRole,
        tenant: Option<&str>,
        label: &str,
    ) -> Result<TokenRecord, StoreError> {
        let row = self
            .client()
            .await?
            .query_one(
                &format!(
                    "INSERT INTO api_tokens (id, role, tenant_id, label, token_hash)
                     VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
                ),
                &[&new_id(), &role.as_str(), &tenant, &label, &token.hash()],
            )
            .await?;
        record(&row)
    }

    /// The live (unrevoked) token with this hash.
    pub async fn find_token(&self, token: &ApiToken) -> Result<Option<TokenRecord>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM api_tokens
                     WHERE token_hash = $1 AND revoked_at IS NULL"
                ),
                &[&token.hash()],
            )
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// Every token, newest first, revoked ones included.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {COLUMNS} FROM api_tokens ORDER BY id DESC"),
                &[],
            )
            .await?;
        rows.iter().map(record).collect()
    }

    /// Revokes a token; `None` when there is no such token. Revoking twice
    /// keeps the first time.
    pub async fn revoke_token(&self, id: Uuid) -> Result<Option<TokenRecord>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())
                     WHERE id = $1 RETURNING {COLUMNS}"
                ),
                &[&id],
            )
            .await?;
        row.as_ref().map(record).transpose()
    }
}
