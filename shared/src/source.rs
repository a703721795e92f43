//! The HTTP client for a source API: building a page's URL, authenticating
//! from a secret reference, timeouts, a cap on body size, and the outbound
//! policy applied to every address connected to.
//!
//! The policy is enforced where the connection is made: IP-literal hosts
//! are checked before sending (no resolver sees them), names by our own
//! resolver, which drops every refused address it finds, so the address
//! checked is the address connected to and a name that resolves elsewhere
//! at request time (DNS rebinding) cannot pass.
//!
//! Secrets are read here, at request time, by the worker that sends the
//! request; they are marked sensitive so they never show in debug output,
//! and no error or log line built here contains one.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use url::Url;

use crate::fingerprint::FingerprintKey;
use crate::outbound::{OutboundPolicy, Refusal};
use crate::pagination::Target;
use crate::redact;
use crate::spec::{AuthSpec, ExportSpec};
use crate::tenancy::SecretSource;

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
    /// Nothing was sent: the outbound policy refuses the address.
    #[error("request to {url} not sent: {refusal}")]
    Refused { url: String, refusal: Refusal },
}

impl SourceError {
    /// Every failure but a missing secret, a bad URL, a refused address or
    /// a body over the cap is worth retrying: those would fail the same way
    /// again.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            SourceError::Secret { .. }
                | SourceError::Url { .. }
                | SourceError::Refused { .. }
                | SourceError::TooLarge { .. }
        )
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
    /// Reads the secret from where isolation allowed (see
    /// `tenancy::secret_source`); its fingerprint is keyed with the fleet's
    /// `key`. A file is read with blocking I/O: call
    /// [`Credential::resolve_off_runtime`] from async code.
    pub fn resolve(
        auth: &AuthSpec,
        from: &SecretSource,
        key: &FingerprintKey,
    ) -> Result<Credential, SourceError> {
        let secret = read_secret(&auth.secret().describe(), from)?;
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

    /// [`Credential::resolve`] on a blocking thread, so a slow file system
    /// never stalls the worker's runtime.
    pub async fn resolve_off_runtime(
        auth: AuthSpec,
        from: SecretSource,
        key: FingerprintKey,
    ) -> Result<Credential, SourceError> {
        let reference = auth.secret().describe();
        tokio::task::spawn_blocking(move || Credential::resolve(&auth, &from, &key))
            .await
            .map_err(|e| SourceError::Secret {
                reference,
                reason: format!("the reading thread failed: {e}"),
            })?
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

/// Largest secret file read: a credential is a line, not a document.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

fn read_secret(reference: &str, from: &SecretSource) -> Result<String, SourceError> {
    let fail = |reason: String| SourceError::Secret {
        reference: reference.to_string(),
        reason,
    };
    let raw = match from {
        SecretSource::Env(var) => {
            std::env::var(var).map_err(|_| fail("the variable is not set".into()))?
        }
        SecretSource::File(path) => read_secret_file(path).map_err(fail)?,
    };
    let secret = raw.trim().to_string();
    if secret.is_empty() {
        return Err(fail("it is empty".into()));
    }
    Ok(secret)
}

/// A regular file (not a symlink a tenant could point elsewhere), at most
/// [`MAX_SECRET_FILE_BYTES`]. Errors name the kind of failure, never the
/// server's path.
fn read_secret_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.kind().to_string())?;
    if !meta.file_type().is_file() {
        return Err("it is not a regular file".into());
    }
    if meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(format!("it is larger than {MAX_SECRET_FILE_BYTES} bytes"));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET_FILE_BYTES).read_to_string(&mut text))
        .map_err(|e| e.kind().to_string())?;
    Ok(text)
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

impl Fetched {
    /// The answer with only the first `bytes` of its body, copied: what a
    /// dead letter may still show once the body itself is no longer
    /// needed (a slice would keep the whole body alive).
    pub fn with_body_start(self, bytes: usize) -> Fetched {
        let start = self.body.get(..bytes).unwrap_or(&self.body);
        Fetched {
            body: Bytes::copy_from_slice(start),
            ..self
        }
    }
}

/// The shared HTTP client (connection pools, rustls, the outbound policy).
#[derive(Clone)]
pub struct SourceClient {
    /// For every port no allow rule names. A resolver learns the host but
    /// not the port, so each port a rule names gets a client of its own
    /// whose resolver knows it: the clients number one more than those
    /// ports, whatever the specs ask for.
    any_port: reqwest::Client,
    by_port: HashMap<u16, reqwest::Client>,
    policy: Arc<OutboundPolicy>,
}

impl SourceClient {
    pub fn new(policy: OutboundPolicy) -> Result<SourceClient, SourceError> {
        let policy = Arc::new(policy);
        let by_port = (policy.rule_ports().into_iter())
            .map(|port| Ok((port, http_client(&policy, Some(port))?)))
            .collect::<Result<_, SourceError>>()?;
        Ok(SourceClient {
            any_port: http_client(&policy, None)?,
            by_port,
            policy,
        })
    }

    /// What the outbound policy decides from the URL alone (the scheme,
    /// an IP-literal host, `localhost`); a name is judged again on what it
    /// resolves to when fetched.
    pub fn check_url(&self, url: &Url) -> Result<(), SourceError> {
        let port = url.port_or_known_default().unwrap_or(0);
        self.policy
            .check_url(url)
            .map_err(|refusal| SourceError::Refused {
                url: display_url(url),
                refusal: refusal.at_port(port),
            })
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
        let port = url.port_or_known_default().unwrap_or(0);
        let refused = |refusal: Refusal| SourceError::Refused {
            url: shown.clone(),
            refusal: refusal.at_port(port),
        };
        // An IP literal never reaches the resolver: this is its check.
        self.check_url(url)?;
        let http = self.by_port.get(&port).unwrap_or(&self.any_port);
        let started = Instant::now();
        let work = async {
            let mut request = http.get(url.clone()).header("accept", "application/json");
            if let Some(c) = credential {
                request = request.header(c.header.clone(), c.value.clone());
            }
            // reqwest's messages carry the full URL; ours are redacted.
            let mut response = request.send().await.map_err(|e| match refusal_in(&e) {
                Some(refusal) => refused(refusal.clone()),
                None => SourceError::Transport {
                    url: shown.clone(),
                    reason: error_chain(&e.without_url()),
                },
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
            // A declared length (within the cap, checked above) is reserved
            // at once: growing by doubling would copy the body and, at the
            // last doubling, hold it twice.
            let declared = response.content_length().unwrap_or(0).min(max_body);
            let mut body = BytesMut::with_capacity(usize::try_from(declared).unwrap_or(0));
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

/// One client of [`SourceClient`]: its resolver judges every address at
/// `port` (`None`: a port no rule names).
fn http_client(
    policy: &Arc<OutboundPolicy>,
    port: Option<u16>,
) -> Result<reqwest::Client, SourceError> {
    reqwest::Client::builder()
        .user_agent(concat!("pagefleet/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(30))
        // A redirect could carry our credential to another host.
        .redirect(reqwest::redirect::Policy::none())
        // Through a proxy the address checked would be the proxy's, and
        // the source's would go unchecked.
        .no_proxy()
        .dns_resolver(Arc::new(PolicyResolver {
            policy: policy.clone(),
            port,
        }))
        .build()
        .map_err(|e| SourceError::Transport {
            url: "-".into(),
            reason: e.to_string(),
        })
}

/// The system resolver, keeping only the addresses the policy allows; a
/// name with none left fails with the refusal of the first.
struct PolicyResolver {
    policy: Arc<OutboundPolicy>,
    port: Option<u16>,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let port = self.port;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if found.is_empty() {
                let what = format!("{host} resolves to no address");
                return Err(std::io::Error::new(std::io::ErrorKind::NotFound, what).into());
            }
            let kept = screen(&policy, &host, port, &found)?;
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The addresses of `host` the policy allows at `port`, or the refusal of
/// the first when it allows none.
fn screen(
    policy: &OutboundPolicy,
    host: &str,
    port: Option<u16>,
    found: &[SocketAddr],
) -> Result<Vec<SocketAddr>, Refusal> {
    let mut first = None;
    let mut kept = Vec::new();
    for addr in found {
        match policy.check_ip(host, addr.ip(), port) {
            Ok(()) => kept.push(*addr),
            Err(refusal) => {
                tracing::debug!(%host, ip = %addr.ip(), "address refused by the outbound policy");
                first.get_or_insert(refusal);
            }
        }
    }
    match first {
        Some(refusal) if kept.is_empty() => Err(refusal),
        _ => Ok(kept),
    }
}

/// The refusal our resolver gave, somewhere in reqwest's chain of causes.
fn refusal_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(refusal) = c.downcast_ref::<Refusal>() {
            return Some(refusal);
        }
        cause = c.source();
    }
    None
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
    use crate::spec::SecretRef;

    #[test]
    fn a_kept_body_start_is_a_copy_not_a_view_of_the_whole() {
        let whole = Bytes::from(vec![b'x'; 10_000]);
        let fetched = Fetched {
            status: 200,
            headers: HeaderMap::new(),
            body: whole.clone(),
            elapsed: Duration::ZERO,
        };
        let kept = fetched.with_body_start(100);
        assert_eq!(kept.body.len(), 100);
        assert_ne!(kept.body.as_ptr(), whole.as_ptr(), "its own allocation");
        let short = Fetched {
            body: Bytes::from_static(b"ab"),
            ..kept
        };
        assert_eq!(short.with_body_start(100).body, &b"ab"[..]);
    }

    #[test]
    fn a_secret_file_is_a_small_regular_file_never_a_symlink() {
        let dir = std::env::temp_dir().join(format!("pagefleet-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("key");
        std::fs::write(&good, "s3cr3t\n").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.join("link")).unwrap();
        std::fs::write(
            dir.join("big"),
            vec![b'x'; MAX_SECRET_FILE_BYTES as usize + 1],
        )
        .unwrap();
        let read = |name: &str| read_secret("file:x", &SecretSource::File(dir.join(name)));
        assert_eq!(read("key").unwrap(), "s3cr3t");
        for (name, why) in [
            ("link", "not a regular file"),
            ("big", "larger than"),
            ("missing", "not found"),
        ] {
            let err = read(name).unwrap_err().to_string();
            assert!(err.contains(why), "{name}: {err}");
            assert!(!err.contains(&*dir.to_string_lossy()), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
        let from = SecretSource::Env("PAGEFLEET_TEST_SECRET_X".into());
        let key = FingerprintKey::new("fleet-key-1");
        let c = Credential::resolve(&auth, &from, &key).unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert_eq!(c.fingerprint().len(), 16);
        // Keyed: another fleet key, another fingerprint of the same secret.
        let other = Credential::resolve(&auth, &from, &FingerprintKey::new("fleet-key-2")).unwrap();
        assert_ne!(c.fingerprint(), other.fingerprint());
        assert!(!c.fingerprint().contains("s3cr3t"));

        let missing = AuthSpec::Bearer {
            secret: SecretRef {
                env: Some("PAGEFLEET_TEST_SECRET_MISSING".into()),
                file: None,
            },
        };
        let from = SecretSource::Env("PAGEFLEET_TEST_SECRET_MISSING".into());
        let err = Credential::resolve(&missing, &from, &FingerprintKey::new("k"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("env:PAGEFLEET_TEST_SECRET_MISSING"), "{err}");
    }

    #[test]
    fn screening_keeps_the_allowed_addresses_of_a_name() {
        let policy = OutboundPolicy::from_rules(&["127.0.0.1:9000"]).unwrap();
        let found: Vec<SocketAddr> = ["[::1]:0", "127.0.0.1:0", "8.8.8.8:0"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let kept = screen(&policy, "localhost", Some(9000), &found).unwrap();
        assert_eq!(kept, [found[1], found[2]]);
        // At a port no rule names, only the public address is left.
        assert_eq!(
            screen(&policy, "localhost", None, &found).unwrap(),
            [found[2]]
        );
        // A name that resolves only to refused addresses (a rebinding, say)
        // fails with the first refusal.
        let inside: Vec<SocketAddr> = ["169.254.169.254:0", "10.0.0.1:0"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let refusal = screen(&policy, "rebind.example", None, &inside).unwrap_err();
        assert_eq!(
            refusal.at_port(80).to_string(),
            "rebind.example resolves to an address that is link-local \
             (169.254.0.0/16); allow it with outbound_allow"
        );
    }

    /// A listener on 127.0.0.1 that answers every connection with `{}` and
    /// counts them.
    async fn counting_server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        (addr, hits)
    }

    fn hits(counter: &std::sync::atomic::AtomicUsize) -> usize {
        counter.load(std::sync::atomic::Ordering::SeqCst)
    }

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_refused_address_is_not_connected_to() {
        let (addr, counter) = counting_server().await;
        let client = SourceClient::new(OutboundPolicy::default()).unwrap();
        let url = Url::parse(&format!("http://{addr}/metrics?token=x")).unwrap();
        let err = client.fetch(&url, None, WAIT, 1000).await.unwrap_err();
        assert!(matches!(err, SourceError::Refused { .. }), "{err:?}");
        assert!(!err.is_transient());
        assert_eq!(
            err.to_string(),
            format!(
                "request to http://{addr}/metrics?token=*** not sent: {addr} is loopback \
                 (127.0.0.0/8); allow it with outbound_allow"
            )
        );
        let mapped = Url::parse(&format!("http://[::ffff:127.0.0.1]:{}/", addr.port())).unwrap();
        let err = client.fetch(&mapped, None, WAIT, 1000).await.unwrap_err();
        assert!(matches!(err, SourceError::Refused { .. }), "{err:?}");
        assert_eq!(hits(&counter), 0, "nothing may reach a refused address");

        // Allowed by the operator, the same URL is fetched.
        let allowed = OutboundPolicy::from_rules(&[addr.to_string()]).unwrap();
        let client = SourceClient::new(allowed).unwrap();
        let fetched = client.fetch(&url, None, WAIT, 1000).await.unwrap();
        assert_eq!((fetched.status, &fetched.body[..]), (200, &b"{}"[..]));
        assert_eq!(hits(&counter), 1);
    }

    #[tokio::test]
    async fn a_name_is_judged_on_the_addresses_it_resolves_to() {
        let (addr, counter) = counting_server().await;
        let url = Url::parse(&format!("http://localhost:{}/items", addr.port())).unwrap();
        // The port's own client resolves `localhost` and keeps 127.0.0.1.
        let allowed = OutboundPolicy::from_rules(&[addr.to_string()]).unwrap();
        let client = SourceClient::new(allowed).unwrap();
        let fetched = client.fetch(&url, None, WAIT, 1000).await.unwrap();
        assert_eq!(fetched.status, 200);
        assert_eq!(hits(&counter), 1);

        // Straight to the resolver, without the URL's own check: a name
        // whose every address is refused fails with the refusal, unsent.
        let http = http_client(&Arc::new(OutboundPolicy::default()), None).unwrap();
        let err = http.get(url.clone()).send().await.unwrap_err();
        let refusal = refusal_in(&err).unwrap_or_else(|| panic!("no refusal in {err:?}"));
        let text = refusal.clone().at_port(addr.port()).to_string();
        assert!(text.starts_with("localhost resolves to "), "{text}");
        assert!(text.contains("an address that is loopback"), "{text}");
        assert_eq!(hits(&counter), 1, "the refused name was not connected to");
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
        let from = SecretSource::Env("PAGEFLEET_TEST_SECRET_ECHO".into());
        let c = Credential::resolve(&auth, &from, &FingerprintKey::new("k")).unwrap();
        let v = redacted_headers(&h, Some(&c));
        assert_eq!(v["x-echo"], "***");
    }

    #[test]
    fn urls_are_shown_without_userinfo() {
        let url = Url::parse("https://user:pw@h/p?sig=1").unwrap();
        assert_eq!(display_url(&url), "https://h/p?sig=***");
    }
}
