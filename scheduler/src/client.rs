//! A small client of the scheduler's HTTP API, used by the `pagefleet` CLI
//! (and by tests that drive the fleet the way an operator would).

use std::time::Duration;

use serde::de::DeserializeOwned;
use uuid::Uuid;

use pagefleet_shared::spec::ExportSpec;
use pagefleet_shared::store::{
    ActionDone, ActionOutcome, ActionRequest, AuditRecord, DeadLetter, DlqFilter, DlqPage,
    ExportStatus, Submitted,
};

use pagefleet_shared::api_token::ApiToken;
use pagefleet_shared::schedule::ScheduleSpec;
use pagefleet_shared::store::{ScheduleRecord, TokenRecord};

use crate::admin::{CreateToken, CreatedToken};
use crate::api::ApiError;
use crate::dlq::DlqQuery;
use crate::schedules::{BackfillRequest, RunNow, ScheduleDetail};

/// The tasks a replay put back in the queue.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub replayed: Vec<Uuid>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the pagefleet API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{message}")]
    Refused {
        status: u16,
        message: String,
        field: Option<String>,
    },
    #[error("unexpected answer from {url}: {reason}")]
    Protocol { url: String, reason: String },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A refused request: the API's JSON error (message and field), or the
/// status when the body is not one.
fn refusal(status: u16, body: &[u8], url: &str) -> ClientError {
    let parsed: Option<ApiError> = serde_json::from_slice(body).ok();
    ClientError::Refused {
        status,
        message: (parsed.as_ref().map(|e| e.error.clone()))
            .unwrap_or_else(|| format!("HTTP {status} from {url}")),
        field: parsed.and_then(|e| e.field),
    }
}

pub struct ApiClient {
    base: String,
    token: Option<ApiToken>,
    tenant: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client that sends `token` (the API refuses requests without one,
    /// unless a trusted proxy vouches for them).
    pub fn new(base: &str, token: Option<ApiToken>) -> Result<ApiClient, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Unreachable {
                url: base.to_string(),
                reason: e.to_string(),
            })?;
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            tenant: None,
            http,
        })
    }

    /// The same client, acting for `tenant` (`X-Pagefleet-Tenant`): what an
    /// admin token does, or a trusted proxy. A tenant token needs no tenant.
    pub fn for_tenant(mut self, tenant: impl Into<String>) -> ApiClient {
        self.tenant = Some(tenant.into());
        self
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            r = r.bearer_auth(token.reveal());
        }
        if let Some(t) = &self.tenant {
            r = r.header("x-pagefleet-tenant", t);
        }
        r
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<T, ClientError> {
        let url = format!("{}{}", self.base, path);
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        if !status.is_success() {
            return Err(refusal(status.as_u16(), &body, &url));
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol {
            url,
            reason: e.to_string(),
        })
    }

    pub async fn submit(
        &self,
        spec: &ExportSpec,
        idempotency_key: Option<&str>,
    ) -> Result<Submitted, ClientError> {
        let mut r = self
            .request(reqwest::Method::POST, "/v1/exports")
            .json(spec);
        if let Some(k) = idempotency_key {
            r = r.header("idempotency-key", k);
        }
        self.send(r, "/v1/exports").await
    }

    pub async fn status(&self, id: Uuid) -> Result<ExportStatus, ClientError> {
        let path = format!("/v1/exports/{id}");
        self.send(self.request(reqwest::Method::GET, &path), &path)
            .await
    }

    pub async fn list(&self) -> Result<Vec<ExportStatus>, ClientError> {
        self.list_where(&[]).await
    }

    /// Exports as `GET /v1/exports` filters them (`state`, `name`,
    /// `source`, `newer_than`, `older_than`, `limit`).
    pub async fn list_where(
        &self,
        query: &[(&str, String)],
    ) -> Result<Vec<ExportStatus>, ClientError> {
        let path = "/v1/exports";
        let r = self.request(reqwest::Method::GET, path).query(query);
        self.send(r, path).await
    }

    /// The open dead letters of an export (or all, resolved too), the
    /// first page of them.
    pub async fn dead_letters(
        &self,
        export: Option<Uuid>,
        all: bool,
    ) -> Result<Vec<DeadLetter>, ClientError> {
        let query = DlqQuery {
            export: export.map(|e| e.to_string()),
            all,
            limit: Some(500),
            ..DlqQuery::default()
        };
        Ok(self.dlq(&query).await?.letters)
    }

    /// Dead letters as a query filters them, with their counts.
    pub async fn dlq(&self, query: &DlqQuery) -> Result<DlqPage, ClientError> {
        let path = "/v1/dlq";
        let r = self.request(reqwest::Method::GET, path).query(query);
        self.send(r, path).await
    }

    /// One dead letter, by its id or its task's.
    pub async fn dead_letter(&self, id: Uuid) -> Result<DeadLetter, ClientError> {
        let path = format!("/v1/dlq/{id}");
        self.send(self.request(reqwest::Method::GET, &path), &path)
            .await
    }

    /// Replays (or, `dry_run`, prices) what a request matches.
    pub async fn dlq_replay(&self, request: &ActionRequest) -> Result<ActionOutcome, ClientError> {
        let path = "/v1/dlq/replay";
        let r = self.request(reqwest::Method::POST, path).json(request);
        self.send(r, path).await
    }

    /// Discards what a request matches, with its reason.
    pub async fn dlq_discard(&self, request: &ActionRequest) -> Result<ActionOutcome, ClientError> {
        let path = "/v1/dlq/discard";
        let r = self.request(reqwest::Method::POST, path).json(request);
        self.send(r, path).await
    }

    /// Replays one dead task (by task or dead-letter id) or every dead
    /// task of an export; returns the tasks replayed.
    pub async fn replay(
        &self,
        task: Option<Uuid>,
        export: Option<Uuid>,
    ) -> Result<Replayed, ClientError> {
        let request = ActionRequest {
            filter: DlqFilter {
                export,
                ids: task.into_iter().collect(),
                ..DlqFilter::default()
            },
            ..ActionRequest::default()
        };
        let outcome = self.dlq_replay(&request).await?;
        Ok(Replayed {
            replayed: outcome.pages.iter().map(|p| p.task).collect(),
        })
    }

    /// `action` (`cancel`, `pause`, `resume`, `retry`, `accept-gaps`) on an export.
    pub async fn export_action(&self, id: Uuid, action: &str) -> Result<ActionDone, ClientError> {
        let path = format!("/v1/exports/{id}/{action}");
        self.send(self.request(reqwest::Method::POST, &path), &path)
            .await
    }

    /// Streams an export's published CSV into `out`, checking its SHA-256
    /// against the one the API states; returns the bytes and the digest.
    pub async fn download(
        &self,
        id: Uuid,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<(u64, String), ClientError> {
        use sha2::{Digest, Sha256};
        let path = format!("/v1/exports/{id}/download");
        let url = format!("{}{}", self.base, path);
        let unreachable = |e: &dyn std::fmt::Display| ClientError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        };
        let mut response = (self.request(reqwest::Method::GET, &path).send().await)
            .map_err(|e| unreachable(&e))?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body = response.bytes().await.map_err(|e| unreachable(&e))?;
            return Err(refusal(status, &body, &url));
        }
        let stated = (response.headers().get(crate::download::SHA256_HEADER))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut digest = Sha256::new();
        let mut bytes = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|e| unreachable(&e))? {
            digest.update(&chunk);
            bytes += chunk.len() as u64;
            out.write_all(&chunk).map_err(|e| unreachable(&e))?;
        }
        let sha256 = pagefleet_shared::spec::hex(&digest.finalize());
        if stated.as_deref().is_some_and(|s| s != sha256) {
            return Err(ClientError::Protocol {
                url,
                reason: format!(
                    "the file's SHA-256 is {sha256}, not the {stated:?} its export states"
                ),
            });
        }
        Ok((bytes, sha256))
    }

    /// The audit log, newest first.
    pub async fn audit(
        &self,
        action: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, ClientError> {
        let path = "/v1/audit";
        let mut query = vec![("limit", limit.to_string())];
        if let Some(action) = action {
            query.push(("action", action.to_string()));
        }
        let r = self.request(reqwest::Method::GET, path).query(&query);
        self.send(r, path).await
    }

    /// Creates a token (admin only): for `tenant`, or an admin token.
    pub async fn create_token(&self, request: &CreateToken) -> Result<CreatedToken, ClientError> {
        let path = "/v1/admin/tokens";
        let r = self.request(reqwest::Method::POST, path).json(request);
        self.send(r, path).await
    }

    /// Every token (admin only); never the tokens themselves.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, ClientError> {
        let path = "/v1/admin/tokens";
        self.send(self.request(reqwest::Method::GET, path), path)
            .await
    }

    /// Revokes a token (admin only).
    pub async fn revoke_token(&self, id: Uuid) -> Result<TokenRecord, ClientError> {
        let path = format!("/v1/admin/tokens/{id}");
        self.send(self.request(reqwest::Method::DELETE, &path), &path)
            .await
    }

    pub async fn create_schedule(
        &self,
        spec: &ScheduleSpec,
    ) -> Result<ScheduleRecord, ClientError> {
        let path = "/v1/schedules";
        let r = self.request(reqwest::Method::POST, path).json(spec);
        self.send(r, path).await
    }

    pub async fn schedules(&self) -> Result<Vec<ScheduleRecord>, ClientError> {
        let path = "/v1/schedules";
        self.send(self.request(reqwest::Method::GET, path), path)
            .await
    }

    /// The schedule with its most recent runs.
    pub async fn schedule(&self, name: &str) -> Result<ScheduleDetail, ClientError> {
        let path = format!("/v1/schedules/{name}");
        self.send(self.request(reqwest::Method::GET, &path), &path)
            .await
    }

    /// `pause`, `resume` or `run` on the schedule.
    async fn schedule_action<T: DeserializeOwned>(
        &self,
        name: &str,
        action: &str,
    ) -> Result<T, ClientError> {
        let path = format!("/v1/schedules/{name}/{action}");
        self.send(self.request(reqwest::Method::POST, &path), &path)
            .await
    }

    pub async fn pause_schedule(&self, name: &str) -> Result<ScheduleDetail, ClientError> {
        self.schedule_action(name, "pause").await
    }

    pub async fn resume_schedule(&self, name: &str) -> Result<ScheduleDetail, ClientError> {
        self.schedule_action(name, "resume").await
    }

    pub async fn run_schedule_now(&self, name: &str) -> Result<RunNow, ClientError> {
        self.schedule_action(name, "run").await
    }

    pub async fn remove_schedule(&self, name: &str) -> Result<serde_json::Value, ClientError> {
        let path = format!("/v1/schedules/{name}");
        self.send(self.request(reqwest::Method::DELETE, &path), &path)
            .await
    }

    /// A range of the schedule's incremental source as one backfill export.
    pub async fn backfill_schedule(
        &self,
        name: &str,
        request: &BackfillRequest,
    ) -> Result<Submitted, ClientError> {
        let path = format!("/v1/schedules/{name}/backfill");
        let r = self.request(reqwest::Method::POST, &path).json(request);
        self.send(r, &path).await
    }
}
