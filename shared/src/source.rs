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
use url::Url;

use crate::fingerprint::FingerprintKey;
use crate::pagination::Target;
use crate::redact;
use crate::spec::{AuthSpec, ExportSpec, SecretRef};

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
    TooLarge { url: String, limit: u64 },
}

impl SourceError {
    /// Every failure but a missing secret or a bad URL is worth retrying.
    pub fn is_transient(&self) -> bool {
        !matches!(self, SourceError::Secret { .. } | SourceError::Url { .. })
    }
}

/// A resolved credential: the header to send. Debug output never shows it.
#[derive(Clone)]
pub struct Credential {
    header: HeaderName,
    value: HeaderValue,
    fingerprint: String,
    /// The secret (and the header value it makes), to remove from whatever
    /// the source sends back before it is shown.
    known: redact::Known,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}: <redacted>)", self.header)
    }
}

impl Credential {
    /// Reads the secret the spec refers to; its fingerprint is keyed with
    /// the fleet's `key`.
    pub fn resolve(auth: &AuthSpec, key: &FingerprintKey) -> Result<Credential, SourceError> {
        let secret = read_secret(auth.secret())?;
        let fingerprint = key.fingerprint(&secret);
        let mut known = redact::Known::none();
        known.add(&secret);
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
        if let Ok(sent) = value.to_str() {
            known.add(sent);
        }
        Ok(Credential {
            header,
            value,
            fingerprint,
            known,
        })
    }

    /// The secret values to remove from anything shown (see [`redact`]).
    pub fn known(&self) -> &redact::Known {
        &self.known
    }

    /// A short keyed hash that tells credentials apart without revealing
    /// them, and without letting anyone who lacks the key test a guess.
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
        base: redact::url_text(&spec.source.base_url),
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

/// A URL for logs and errors (see [`redact::url`]).
pub fn display_url(url: &Url) -> String {
    redact::url(url)
}

/// Whether a query parameter's name says its value is a credential (see
/// [`redact::is_secret_name`]).
pub fn is_secret_param(name: &str) -> bool {
    redact::is_secret_name(name)
}

/// Response headers as JSON with credentials and cookies removed, by name
/// and by the value of the credential the request sent.
pub fn redacted_headers(headers: &HeaderMap, credential: Option<&Credential>) -> serde_json::Value {
    let none = redact::Known::none();
    redact::headers(headers, credential.map_or(&none, Credential::known))
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
            if response.content_length().is_some_and(|n| n > max_body) {
                return Err(SourceError::TooLarge {
                    url: shown.clone(),
                    limit: max_body,
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
        let key = FingerprintKey::new("fleet-key-1");
        let c = Credential::resolve(&auth, &key).unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert_eq!(c.fingerprint().len(), 16);
        // Keyed: another fleet key, another fingerprint of the same secret.
        let other = Credential::resolve(&auth, &FingerprintKey::new("fleet-key-2")).unwrap();
        assert_ne!(c.fingerprint(), other.fingerprint());
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
        let err = Credential::resolve(&missing, &FingerprintKey::new("k"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("env:PAGEFLEET_TEST_SECRET_MISSING"), "{err}");
    }

    #[test]
    fn headers_are_redacted() {
        let mut h = HeaderMap::new();
        h.insert("set-cookie", HeaderValue::from_static("sid=1"));
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("3"));
        h.insert("x-apikey", HeaderValue::from_static("k"));
        h.insert("x-echo", HeaderValue::from_static("Bearer echo-s3cr3t"));
        let v = redacted_headers(&h, None);
        assert_eq!(v["set-cookie"], "***");
        assert_eq!(v["x-apikey"], "***");
        assert_eq!(v["x-ratelimit-remaining"], "3");
        // The credential the request sent is removed by value, whatever
        // the header is called.
        std::env::set_var("PAGEFLEET_TEST_SECRET_ECHO", "echo-s3cr3t");
        let auth = AuthSpec::Bearer {
            secret: SecretRef {
                env: Some("PAGEFLEET_TEST_SECRET_ECHO".into()),
                file: None,
            },
        };
        let c = Credential::resolve(&auth, &FingerprintKey::new("k")).unwrap();
        let v = redacted_headers(&h, Some(&c));
        assert_eq!(v["x-echo"], "***");
    }

    #[test]
    fn urls_are_shown_without_userinfo() {
        let url = Url::parse("https://user:pw@h/p?sig=1").unwrap();
        assert_eq!(display_url(&url), "https://h/p?sig=***");
    }
}
