//! Dead letters as operators see them: filtered (export, source key,
//! class, HTTP status, time, fingerprint, ids), paged, counted per class,
//! and shown whole. Replaying and discarding them is [`super::replay`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::model::{DeadLetterClass, TaskState};

/// At most this many ids in one filter.
pub const MAX_FILTER_IDS: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub id: Uuid,
    pub export_id: Uuid,
    pub task_id: Uuid,
    pub partition_no: i32,
    pub page_no: i64,
    pub class: DeadLetterClass,
    pub reason: String,
    pub last_status: Option<i32>,
    /// The rate-limit bucket the page draws from (its tenant's key).
    #[serde(default)]
    pub source_key: Option<String>,
    /// Letters failing the same way share it (see `fingerprint`).
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// The request as sent: method, URL without secrets, header names.
    #[serde(default)]
    pub request: serde_json::Value,
    pub body_excerpt: Option<String>,
    pub headers: serde_json::Value,
    /// Every attempt, across parks and redeliveries (the first 10 and the
    /// latest 40).
    pub attempts: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub resolution: Option<String>,
    #[serde(default)]
    pub resolved_by: Option<String>,
    #[serde(default)]
    pub resolution_reason: Option<String>,
    /// Where the page's task is now.
    pub task_state: TaskState,
}

/// Which dead letters an operator means. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DlqFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<DeadLetterClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub since: Option<OffsetDateTime>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub until: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Dead-letter or task ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<Uuid>,
    /// Resolved letters too (listing only: a replay takes open ones).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_resolved: bool,
}

/// A field over its bound, and the bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {why}")]
pub struct OverBound {
    pub field: &'static str,
    pub why: String,
}

pub(super) fn at_most(
    field: &'static str,
    len: usize,
    max: usize,
    what: &str,
) -> Result<(), OverBound> {
    if len > max {
        return Err(OverBound {
            field,
            why: format!("at most {max} {what}"),
        });
    }
    Ok(())
}

impl DlqFilter {
    /// The bounds of its free text, wherever the filter came from.
    pub fn check_bounds(&self) -> Result<(), OverBound> {
        let len = |t: &Option<String>| t.as_ref().map_or(0, String::len);
        at_most("source_key", len(&self.source_key), 300, "characters")?;
        at_most("fingerprint", len(&self.fingerprint), 64, "characters")?;
        at_most("ids", self.ids.len(), MAX_FILTER_IDS, "ids")
    }

    /// Matches every letter: a replay or discard of "everything" must say
    /// so with a filter, not by forgetting one.
    pub fn is_everything(&self) -> bool {
        DlqFilter {
            include_resolved: false,
            ..self.clone()
        } == DlqFilter::default()
    }
}

/// The filter's conditions on `dead_letters d`, parameters `$1`-`$10` in
/// the order of [`filter_params`].
pub(super) const FILTER_WHERE: &str = "d.tenant_id = $1
    AND ($2::uuid IS NULL OR d.export_id = $2)
    AND ($3::text IS NULL OR d.source_key = $3)
    AND ($4::text IS NULL OR d.class = $4)
    AND ($5::int IS NULL OR d.last_status = $5)
    AND ($6::timestamptz IS NULL OR d.created_at >= $6)
    AND ($7::timestamptz IS NULL OR d.created_at < $7)
    AND ($8::text IS NULL OR d.fingerprint = $8)
    AND (cardinality($9::uuid[]) = 0 OR d.id = ANY($9) OR d.task_id = ANY($9))
    AND ($10 OR d.resolved_at IS NULL)";

/// The filter's values, owned, in `FILTER_WHERE`'s order.
pub(super) struct FilterParams {
    tenant: String,
    export: Option<Uuid>,
    source_key: Option<String>,
    class: Option<&'static str>,
    status: Option<i32>,
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
    fingerprint: Option<String>,
    ids: Vec<Uuid>,
    include_resolved: bool,
}

pub(super) fn filter_params(tenant_id: &str, filter: &DlqFilter) -> FilterParams {
    FilterParams {
        tenant: tenant_id.to_string(),
        export: filter.export,
        source_key: filter.source_key.clone(),
        class: filter.class.map(DeadLetterClass::as_str),
        status: filter.status,
        since: filter.since,
        until: filter.until,
        fingerprint: filter.fingerprint.clone(),
        ids: filter.ids.clone(),
        include_resolved: filter.include_resolved,
    }
}

impl FilterParams {
    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.tenant,
            &self.export,
            &self.source_key,
            &self.class,
            &self.status,
            &self.since,
            &self.until,
            &self.fingerprint,
            &self.ids,
            &self.include_resolved,
        ]
    }
}

const LETTER_COLUMNS: &str = "d.id, d.export_id, d.task_id, t.partition_no, t.page_no, d.class,
    d.reason, d.last_status, d.source_key, d.fingerprint, d.request, d.body_excerpt, d.headers,
    d.attempts, d.created_at, d.resolution, d.resolved_by, d.resolution_reason,
    t.state AS task_state";

/// One page of a listing, with the counts of everything the filter matches.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DlqPage {
    pub letters: Vec<DeadLetter>,
    /// Letters the filter matches, all pages.
    pub total: i64,
    /// The same, per class (the class filter aside, so the counts show
    /// what else is there).
    pub by_class: BTreeMap<String, i64>,
    /// Pass as `before` for the next page; `None` on the last.
    pub next_before: Option<Uuid>,
}

fn letter_from_row(r: &tokio_postgres::Row) -> Result<DeadLetter, StoreError> {
    let class: String = r.try_get("class")?;
    let task_state: String = r.try_get("task_state")?;
    Ok(DeadLetter {
        id: r.try_get("id")?,
        export_id: r.try_get("export_id")?,
        task_id: r.try_get("task_id")?,
        partition_no: r.try_get("partition_no")?,
        page_no: r.try_get("page_no")?,
        class: class.parse()?,
        reason: r.try_get("reason")?,
        last_status: r.try_get("last_status")?,
        source_key: r.try_get("source_key")?,
        fingerprint: r.try_get("fingerprint")?,
        request: r.try_get("request")?,
        body_excerpt: r.try_get("body_excerpt")?,
        headers: r.try_get("headers")?,
        attempts: r.try_get("attempts")?,
        created_at: r.try_get("created_at")?,
        resolution: r.try_get("resolution")?,
        resolved_by: r.try_get("resolved_by")?,
        resolution_reason: r.try_get("resolution_reason")?,
        task_state: task_state.parse()?,
    })
}

impl Store {
    /// The letters a filter matches, newest first, `limit` (1-500) after
    /// `before`, with the counts of all of them.
    pub async fn list_dead_letters(
        &self,
        tenant_id: &str,
        filter: &DlqFilter,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<DlqPage, StoreError> {
        let limit = limit.clamp(1, 500);
        let client = self.client().await?;
        let values = filter_params(tenant_id, filter);
        let mut params = values.params();
        params.push(&before);
        let fetch = limit + 1;
        params.push(&fetch);
        let rows = client
            .query(
                &format!(
                    "SELECT {LETTER_COLUMNS} FROM dead_letters d JOIN page_tasks t ON t.id = d.task_id
                      WHERE {FILTER_WHERE} AND ($11::uuid IS NULL OR d.id < $11)
                      ORDER BY d.id DESC LIMIT $12"
                ),
                &params,
            )
            .await?;
        let mut letters = rows
            .iter()
            .map(letter_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_before = if letters.len() as i64 > limit {
            letters.truncate(limit as usize);
            letters.last().map(|l| l.id)
        } else {
            None
        };
        let any_class = filter_params(
            tenant_id,
            &DlqFilter {
                class: None,
                ..filter.clone()
            },
        );
        let counts = client
            .query(
                &format!(
                    "SELECT d.class, count(*) AS n FROM dead_letters d
                      WHERE {FILTER_WHERE} GROUP BY d.class"
                ),
                &any_class.params(),
            )
            .await?;
        let mut by_class = BTreeMap::new();
        let mut total = 0;
        for row in &counts {
            let class: String = row.try_get("class")?;
            let n: i64 = row.try_get("n")?;
            if filter.class.is_none_or(|c| c.as_str() == class) {
                total += n;
            }
            by_class.insert(class, n);
        }
        Ok(DlqPage {
            letters,
            total,
            by_class,
            next_before,
        })
    }

    /// One of the tenant's dead letters, by its id or its task's.
    pub async fn dead_letter_detail(
        &self,
        tenant_id: &str,
        id: Uuid,
    ) -> Result<Option<DeadLetter>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {LETTER_COLUMNS} FROM dead_letters d JOIN page_tasks t ON t.id = d.task_id
                      WHERE d.tenant_id = $1 AND (d.id = $2 OR d.task_id = $2)
                      ORDER BY d.id DESC LIMIT 1"
                ),
                &[&tenant_id, &id],
            )
            .await?;
        row.as_ref().map(letter_from_row).transpose()
    }
}
