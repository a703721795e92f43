//! The HTTP client for a source API: building a page's URL, authenticating
//! from a secret reference, timeouts, and a cap on body size.
//!
//! Secrets are read here, at request time, by the worker that sends the
//! request; they are marked sensitive so they never show in debug output,
//! and no error or log line built here contains one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use sha2::{Digest, Sha256};
use url::Url;

use crate::pagination::Target;
use crate::spec::{hex, AuthSpec, ExportSpec, SecretRef};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("secret {reference} is not available: {reason}")]
    Secret { reference: String, reason: String },
    #[error("cannot build the request URL from {base}: {reason}")]
    Url { base: String, reason: String },
    #[error("request to {url} timed out after {millis} ms")]
    Timeout { url: String, millis: u64 },
    #[error("request to {url} failed: {reason}")]
    Transport { url: String, reason: String },
    #[error("body from {url} broke off after {received} bytes: {reason}")]
    Body {
        url: String,
        received: usize,
        reason: String,
    },
    #[error("body from {url} is larger than the cap of {limit} bytes")]
    TooLarge {
        url: String,
        limit: u64,
        /// The length the response declared, when it did (else the body
        /// was cut off as it passed the cap).
        declared: Option<u64>,
    },
}

impl SourceError {
    /// Every failure but a missing secret, a bad URL or a body over the cap
    /// is worth retrying: those would fail the same way again.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            SourceError::Secret { .. } | SourceError::Url { .. } | SourceError::TooLarge { .. }
        )
    }
}

/// A resolved credential: the header to send. Debug output never shows it.
#[derive(Clone)]
pub struct Credential {
    header: HeaderName,
    value: HeaderValue,
    fingerprint: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}: <redacted>)", self.header)
    }
}

impl Credential {
    /// Reads the secret the spec refers to.
    pub fn resolve(auth: &AuthSpec) -> Result<Credential, SourceError> {
        let secret = read_secret(auth.secret())?;
        let fingerprint = hex(&Sha256::digest(secret.as_bytes()))[..16].to_string();
        let bad = |reason: &str| SourceError::Secret {
            reference: auth.secret().describe(),
            reason: reason.to_string(),
        };
        let (header, raw) = match auth {
            AuthSpec::Bearer { .. } => (AUTHORIZATION, format!("Bearer {secret}")),
            AuthSpec::Header { header, .. } => (
                HeaderName::from_bytes(header.as_bytes()).map_err(|_| bad("bad header name"))?,
                secret,
            ),
        };
        let mut value = HeaderValue::from_str(&raw)
            .map_err(|_| bad("contains characters not allowed in a header"))?;
        value.set_sensitive(true);
        Ok(Credential {
            header,
            value,
            fingerprint,
        })
    }

    /// A short hash that tells credentials apart without revealing them.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn header_name(&self) -> &HeaderName {
        &self.header
    }
}

fn read_secret(reference: &SecretRef) -> Result<String, SourceError> {
    let fail = |reason: String| SourceError::Secret {
        reference: reference.describe(),
        reason,
    };
    let raw = match (&reference.env, &reference.file) {
        (Some(var), _) => std::env::var(var).map_err(|_| fail("the variable is not set".into()))?,
        (None, Some(path)) => {
            std::fs::read_to_string(path).map_err(|e| fail(e.kind().to_string()))?
        }
        (None, None) => return Err(fail("no env or file given".into())),
    };
    let secret = raw.trim().to_string();
    if secret.is_empty() {
        return Err(fail("it is empty".into()));
    }
    Ok(secret)
}

/// The rate-limit bucket of a source: the spec's explicit key within its
/// tenant, else the origin plus the credential's fingerprint, so exports
/// that share an API key share its budget and exports with different keys
/// do not. An explicit key is free text a spec chooses: scoped to the
/// tenant, it can never name (book ahead, or pause) another tenant's
/// bucket.
pub fn source_key(spec: &ExportSpec, tenant: &str, credential: Option<&Credential>) -> String {
    if let Some(key) = &spec.rate_limit.key {
        return format!("tenant:{tenant}:{key}");
    }
    let origin = Url::parse(&spec.source.base_url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| spec.source.base_url.clone());
    match credential {
        Some(c) => format!("{origin}#{}", c.fingerprint()),
        None => origin,
    }
}

/// The URL of one page: base + path + fixed query + partition parameters +
/// the position's parameters; or the URL the source gave.
pub fn page_url(
    spec: &ExportSpec,
    partition_params: &BTreeMap<String, String>,
    target: &Target,
) -> Result<Url, SourceError> {
    let bad = |reason: String| SourceError::Url {
        base: spec.source.base_url.clone(),
        reason,
    };
    match target {
        Target::Url(url) => Url::parse(url).map_err(|e| bad(e.to_string())),
        Target::Query(params) => {
            let mut url = Url::parse(&format!(
                "{}{}",
                spec.source.base_url.trim_end_matches('/'),
                spec.source.path
            ))
            .map_err(|e| bad(e.to_string()))?;
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in spec.source.query.iter().chain(partition_params.iter()) {
                    q.append_pair(k, v);
                }
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            Ok(url)
        }
    }
}

/// A URL for logs and errors: query values whose names look secret are hidden.
pub fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_fragment(None);
    let _ = shown.set_password(None);
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let shown = if is_secret_param(&k) {
                "***".to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), shown)
        })
        .collect();
    if pairs.is_empty() {
        shown.set_query(None);
    } else {
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

/// Whether a query parameter's name says its value is a credential.
pub fn is_secret_param(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [
        "key",
        "token",
        "secret",
        "password",
        "signature",
        "auth",
        "sig",
    ]
    .iter()
    .any(|s| lower.contains(s))
}

/// Response headers as JSON with credentials and cookies removed.
pub fn redacted_headers(headers: &HeaderMap, credential: Option<&Credential>) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let n = name.as_str();
        let hidden = matches!(
            n,
            "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
        ) || credential.is_some_and(|c| c.header_name() == name)
            || n.contains("token")
            || n.contains("api-key");
        let shown = if hidden {
            "***".to_string()
        } else {
            value
                .to_str()
                .unwrap_or("<binary>")
                .chars()
                .take(256)
                .collect()
        };
        map.insert(n.to_string(), serde_json::Value::String(shown));
    }
    serde_json::Value::Object(map)
}

/// A response read in full (within the cap).
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub elapsed: Duration,
}

/// The shared HTTP client (connection pool, rustls).
#[derive(Clone)]
pub struct SourceClient {
    http: reqwest::Client,
}

impl SourceClient {
    pub fn new() -> Result<SourceClient, SourceError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("pagefleet/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            // A redirect could carry our credential to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SourceError::Transport {
                url: "-".into(),
                reason: e.to_string(),
            })?;
        Ok(SourceClient { http })
    }

    /// Sends one GET and reads the body, all within `timeout`, refusing
    /// bodies over `max_body`.
    pub async fn fetch(
        &self,
        url: &Url,
        credential: Option<&Credential>,
        timeout: Duration,
        max_body: u64,
    ) -> Result<Fetched, SourceError> {
        let shown = display_url(url);
        let started = Instant::now();
        let work = async {
            let mut request = self
                .http
                .get(url.clone())
                .header("accept", "application/json");
            if let Some(c) = credential {
                request = request.header(c.header.clone(), c.value.clone());
            }
            // reqwest's messages carry the full URL; ours are redacted.
            let mut response = request.send().await.map_err(|e| SourceError::Transport {
                url: shown.clone(),
                reason: error_chain(&e.without_url()),
            })?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            if let Some(declared) = response.content_length().filter(|n| *n > max_body) {
                return Err(SourceError::TooLarge {
                    url: shown.clone(),
                    limit: max_body,
                    declared: Some(declared),
                });
            }
            let mut body = BytesMut::new();
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        if (body.len() + chunk.len()) as u64 > max_body {
                            return Err(SourceError::TooLarge {
                                url: shown.clone(),
                                limit: max_body,
                                declared: None,
                            });
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(SourceError::Body {
                            url: shown.clone(),
                            received: body.len(),
                            reason: error_chain(&e.without_url()),
                        })
                    }
                }
            }
            Ok(Fetched {
                status,
                headers,
                body: body.freeze(),
                elapsed: started.elapsed(),
            })
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(SourceError::Timeout {
                url: shown,
                millis: timeout.as_millis() as u64,
            }),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ExportSpec {
        ExportSpec::from_toml(
            r#"
name = "t"
primary_key = ["id"]
[source]
base_url = "http://127.0.0.1:9/api/"
path = "/items"
query = { fixed = "1" }
[pagination]
style = "offset"
[rate_limit]
rate = 5
[output]
dir = "out"
"#,
        )
        .unwrap()
    }

    #[test]
    fn page_urls_combine_every_part() {
        let mut params = BTreeMap::new();
        params.insert("since".to_string(), "2024-01-01".to_string());
        let url = page_url(
            &spec(),
            &params,
            &Target::Query(vec![("offset".into(), "10".into())]),
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/api/items?fixed=1&since=2024-01-01&offset=10"
        );
        let given = page_url(
            &spec(),
            &params,
            &Target::Url("http://127.0.0.1:9/x?a=1".into()),
        )
        .unwrap();
        assert_eq!(given.as_str(), "http://127.0.0.1:9/x?a=1");
    }

    #[test]
    fn secret_query_values_are_hidden() {
        let url = Url::parse("https://h/p?api_key=abc&offset=5&Token=zz").unwrap();
        assert_eq!(
            display_url(&url),
            "https://h/p?api_key=***&offset=5&Token=***"
        );
    }

    #[test]
    fn credentials_resolve_without_leaking() {
        std::env::set_var("PAGEFLEET_TEST_SECRET_X", "s3cr3t-value");
        let auth = AuthSpec::Bearer {
            secret: SecretRef {
                env: Some("PAGEFLEET_TEST_SECRET_X".into()),
                file: None,
            },
        };
        let c = Credential::resolve(&auth).unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert_eq!(c.fingerprint().len(), 16);
        let key = source_key(&spec(), "acme", Some(&c));
        assert!(key.starts_with("http://127.0.0.1:9#"), "{key}");
        assert!(!key.contains("s3cr3t"));
        // A spec's own key is its tenant's: two tenants naming the same
        // key get two buckets.
        let mut keyed = spec();
        keyed.rate_limit.key = Some("shared-budget".into());
        assert_eq!(
            source_key(&keyed, "acme", Some(&c)),
            "tenant:acme:shared-budget"
        );
        assert_ne!(
            source_key(&keyed, "acme", None),
            source_key(&keyed, "globex", None)
        );

        let missing = AuthSpec::Bearer {
            secret: SecretRef {
                env: Some("PAGEFLEET_TEST_SECRET_MISSING".into()),
                file: None,
            },
        };
        let err = Credential::resolve(&missing).unwrap_err().to_string();
        assert!(err.contains("env:PAGEFLEET_TEST_SECRET_MISSING"), "{err}");
    }

    #[test]
    fn headers_are_redacted() {
        let mut h = HeaderMap::new();
        h.insert("set-cookie", HeaderValue::from_static("sid=1"));
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("3"));
        let v = redacted_headers(&h, None);
        assert_eq!(v["set-cookie"], "***");
        assert_eq!(v["x-ratelimit-remaining"], "3");
    }
}
