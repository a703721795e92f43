//! The HTTP server: lifecycle, routing, the per-request pipeline (auth, rate
//! limit, the page from the data set, injected faults, poison pages, answer)
//! and the control endpoints.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::bucket::{Admit, TokenBucket};
use super::changes::{self, Changes};
use super::config::MockConfig;
use super::dataset::Dataset;
use super::drift::Truth;
use super::faults::{self, Fault};
use super::pages::{self, Plan};
use super::respond::{self, add_rate_headers, json_error};
use super::stats::{MockStats, Recorder};
use super::styles::{self, Dress, Rendered, Style};

/// How long `shutdown` waits for in-flight requests (a hanging one may take
/// `hang_ms`) before it stops waiting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A running mock server. Dropping it also stops it, without waiting.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// State shared by all requests. Every lock is held only for a few
/// statements and never across an await.
struct Shared {
    config: MockConfig,
    data: Dataset,
    addr: SocketAddr,
    fail_records: Mutex<Vec<usize>>,
    buckets: Mutex<HashMap<String, TokenBucket>>,
    /// While true every data request answers 503 (a total outage).
    outage: std::sync::atomic::AtomicBool,
    /// While true every data request waits, unanswered, until it is false.
    stall: tokio::sync::watch::Sender<bool>,
    /// Attempts per exact path and query that reached the fault stage.
    attempts: Mutex<HashMap<String, u64>>,
    stats: Mutex<Recorder>,
    changes: Changes,
}

impl Shared {
    fn stats(&self) -> MutexGuard<'_, Recorder> {
        lock(&self.stats)
    }
}

/// A poisoned lock only means another request panicked mid-update; the
/// counters are still worth serving, so recover instead of panicking too.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MockServer {
    /// Starts a server on an ephemeral port of 127.0.0.1.
    pub async fn start(config: MockConfig) -> std::io::Result<MockServer> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a server on `addr`.
    pub async fn start_on(config: MockConfig, addr: SocketAddr) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            data: Dataset::new(&config),
            fail_records: Mutex::new(config.fail_record.into_iter().collect()),
            config,
            addr,
            buckets: Mutex::new(HashMap::new()),
            outage: std::sync::atomic::AtomicBool::new(false),
            stall: tokio::sync::watch::Sender::new(false),
            attempts: Mutex::new(HashMap::new()),
            stats: Mutex::new(Recorder::new(Instant::now())),
            changes: Changes::default(),
        });
        let app = router(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                // A dropped sender means the server handle is gone: stop too.
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "mock server stopped with an error");
            }
        });
        Ok(MockServer {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The full URL of a style's endpoint.
    pub fn url(&self, style: Style) -> String {
        format!("{}{}", self.base_url(), style.path())
    }

    pub fn config(&self) -> &MockConfig {
        &self.shared.config
    }

    pub fn stats(&self) -> MockStats {
        self.shared.stats().snapshot()
    }

    /// When each request arrived, µs since the server started, in order.
    pub fn arrivals_us(&self) -> Vec<u64> {
        self.shared.stats().arrivals_us().to_vec()
    }

    /// What the data set really held, up to now: with [`MockConfig::drift`],
    /// the initial records never deleted, every id that ever existed and how
    /// many mutations there were; without it, all ids `1..=records` twice.
    pub fn truth(&self) -> Truth {
        self.shared.data.truth(Instant::now())
    }

    /// The record with this id as the server would serve it now, or `None`
    /// if it does not exist (never did, or was deleted).
    pub fn record_now(&self, id: usize) -> Option<Value> {
        self.shared.data.record_now(id, Instant::now())
    }

    /// Whether `record` is exactly a version that its id had at some time,
    /// deleted or not: what an exporter may legitimately have read.
    pub fn was_version(&self, record: &Value) -> bool {
        self.shared.data.was_version(record, Instant::now())
    }

    /// The change log behind `/changes` (see `changes`).
    pub fn changes(&self) -> &Changes {
        &self.shared.changes
    }

    /// Makes every page containing `id` answer 404, or clears that with `None`.
    pub fn set_fail_record(&self, id: Option<usize>) {
        self.set_fail_records(id.into_iter().collect());
    }

    /// Starts or ends a total outage: every data request answers 503.
    pub fn set_outage(&self, down: bool) {
        self.shared
            .outage
            .store(down, std::sync::atomic::Ordering::Relaxed);
    }

    /// Forgets the busiest second seen so far, so `peak_requests_1s` covers
    /// only what comes next.
    pub fn reset_peak(&self) {
        self.shared.stats().reset_peak();
    }

    /// Starts or ends a stall: while it lasts every data request is held
    /// open without an answer (a source that accepts and never replies);
    /// when it ends, they are answered as usual.
    pub fn set_stall(&self, stalled: bool) {
        self.shared.stall.send_replace(stalled);
    }

    /// Poisons every page holding any of these ids (several poison pages).
    pub fn set_fail_records(&self, ids: Vec<usize>) {
        *lock(&self.shared.fail_records) = ids;
    }

    /// Shuts down and returns the stats as they stand afterwards, so requests
    /// that were in flight are included.
    pub async fn finish(self) -> MockStats {
        let shared = self.shared.clone();
        self.shutdown().await;
        let stats = shared.stats().snapshot();
        stats
    }

    /// Stops accepting, lets in-flight requests finish for a short grace
    /// period, then stops waiting.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let mut app = Router::new();
    for style in Style::ALL {
        app = app.route(
            style.path(),
            get(
                move |State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap| async move {
                    serve_data(shared, style, uri, headers).await
                },
            ),
        );
    }
    app.route("/changes", get(serve_changes))
        .route("/_mock/stats", get(get_stats))
        .route("/_mock/truth", get(get_truth))
        .route("/_mock/fail_record", post(post_fail_record))
        .fallback(unknown_path)
        .with_state(shared)
}

async fn get_stats(State(shared): State<Arc<Shared>>) -> Json<MockStats> {
    Json(shared.stats().snapshot())
}

async fn get_truth(State(shared): State<Arc<Shared>>) -> Json<Truth> {
    Json(shared.data.truth(Instant::now()))
}

#[derive(Deserialize)]
struct FailRecord {
    id: Option<usize>,
}

async fn post_fail_record(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<FailRecord>,
) -> Json<serde_json::Value> {
    *lock(&shared.fail_records) = body.id.into_iter().collect();
    Json(json!({ "fail_record": body.id }))
}

/// The change log: authenticated and counted like a data request.
async fn serve_changes(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    axum::extract::Query(params): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    shared.stats().arrival(Instant::now());
    if bearer(&headers) != Some(shared.config.token.as_str()) {
        shared.stats().unauthorized();
        return json_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let bound = |name: &str| {
        params
            .get(name)
            .map(|v| changes::instant(name, v))
            .transpose()
    };
    let query = match (bound("updated_since"), bound("updated_until")) {
        (Ok(since), Ok(until)) => changes::Query {
            since,
            until,
            after: params.get("starting_after").and_then(|a| a.parse().ok()),
            offset: params.get("offset").and_then(|o| o.parse().ok()),
            limit: params
                .get("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(100)
                .clamp(1, 1000),
        },
        (Err(e), _) | (_, Err(e)) => return json_error(StatusCode::BAD_REQUEST, &e),
    };
    match query.offset {
        Some(offset) => match shared.changes.offset_page(&query, offset) {
            Ok(page) => Json(page).into_response(),
            Err(e) => json_error(StatusCode::BAD_REQUEST, &e),
        },
        None => Json(shared.changes.page(&query)).into_response(),
    }
}

/// Wrong paths are counted like data requests so a misconfigured client
/// shows up in the stats.
async fn unknown_path(State(shared): State<Arc<Shared>>) -> Response {
    {
        let mut stats = shared.stats();
        stats.arrival(Instant::now());
        stats.not_found();
    }
    json_error(StatusCode::NOT_FOUND, "not found")
}

/// Auth, then the token bucket, then the rest of the answer; every response
/// that got past auth carries the rate-limit headers.
async fn serve_data(shared: Arc<Shared>, style: Style, uri: Uri, headers: HeaderMap) -> Response {
    // The clock is read under the stats lock so arrivals are recorded in
    // time order, which the sliding peak window relies on.
    {
        let mut stats = shared.stats();
        stats.arrival(Instant::now());
    }
    let config = &shared.config;
    let token = match bearer(&headers) {
        Some(token) if token == config.token => token,
        _ => {
            shared.stats().unauthorized();
            let mut resp = json_error(StatusCode::UNAUTHORIZED, "unauthorized");
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    };
    let mut stall = shared.stall.subscribe();
    if *stall.borrow() {
        shared.stats().fault("stall");
        let _ = stall.wait_for(|stalled| !stalled).await;
    }
    if shared.outage.load(std::sync::atomic::Ordering::Relaxed) {
        shared.stats().fault("outage");
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "down for everyone");
    }
    let admit = {
        let now = Instant::now();
        let mut buckets = lock(&shared.buckets);
        buckets
            .entry(token.to_string())
            .or_insert_with(|| TokenBucket::new(config.rate, config.burst, now))
            .try_take(now)
    };
    let info = match admit {
        Admit::Allowed(info) => info,
        Admit::Limited {
            info,
            retry_after_secs,
        } => {
            let n = shared.stats().bucket_429();
            let as_date = !config.silent_limit && faults::coin(config.seed, "bucket-429", n);
            let mut resp = respond::too_many(retry_after_secs, as_date, SystemTime::now());
            if !config.silent_limit {
                add_rate_headers(&mut resp, &info);
            }
            return resp;
        }
    };
    if config.latency_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(config.latency_ms)).await;
    }
    let mut resp = answer(&shared, style, &uri, &headers).await;
    if !config.silent_limit {
        add_rate_headers(&mut resp, &info);
    }
    resp
}

/// Everything after admission: parameters, the page (cut from the data set
/// as it stands on arrival), injected faults, poison pages and the answer.
async fn answer(shared: &Arc<Shared>, style: Style, uri: &Uri, headers: &HeaderMap) -> Response {
    let config = &shared.config;
    // Malformed parameters are the client's bug, answered the same way every
    // time rather than hidden behind random faults.
    let (plan, data) = match pages::parse(style, uri.query(), config.max_page_size, config.seed) {
        Ok(ask) => shared.data.page(&ask, Instant::now()),
        Err(message) => {
            shared.stats().bad_request();
            return json_error(StatusCode::BAD_REQUEST, &message);
        }
    };
    let key = uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string());
    let attempt = {
        let mut attempts = lock(&shared.attempts);
        let seen = attempts.entry(key.clone()).or_insert(0);
        *seen += 1;
        *seen - 1
    };
    let draw = faults::draw(&config.faults, config.seed, &key, attempt);
    if let Some(fault) = draw.fault {
        match fault {
            Fault::TooMany => {
                shared.stats().fault(fault.key());
                return respond::too_many(1, draw.retry_as_date, SystemTime::now());
            }
            Fault::Status500 | Fault::Status502 | Fault::Status503 | Fault::Status504 => {
                shared.stats().fault(fault.key());
                return status_fault(fault);
            }
            Fault::Hang => {
                shared.stats().fault(fault.key());
                tokio::time::sleep(Duration::from_millis(config.faults.hang_ms)).await;
            }
            // Body faults damage a 200, so they are applied once it exists.
            Fault::Reset | Fault::Truncated | Fault::Slow => {}
        }
    }
    let poisoned = lock(&shared.fail_records)
        .iter()
        .any(|id| plan.contains(*id));
    if poisoned {
        shared.stats().not_found();
        if config.leaky {
            return super::leak::error_answer(StatusCode::NOT_FOUND, "not found", headers);
        }
        return json_error(StatusCode::NOT_FOUND, "not found");
    }
    if config.not_found_past_the_end && plan.page.is_empty() {
        shared.stats().not_found();
        return json_error(StatusCode::NOT_FOUND, "invalid page");
    }
    let data = match config.flood {
        Some(flood) if plan.contains(flood.at) => flood_records(config.seed, config.records, flood),
        _ => data,
    };
    let mut rendered = render(shared, &plan, data, headers);
    if config.leaky {
        super::leak::dress(&mut rendered, headers);
    }
    let bytes = match serde_json::to_vec(&rendered.body) {
        Ok(bytes) => Bytes::from(bytes),
        Err(_) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, "could not encode page"),
    };
    let count = plan.page.len();
    let mut resp = match draw.fault {
        Some(Fault::Reset) => {
            shared.stats().fault("reset");
            respond::reset(bytes)
        }
        Some(Fault::Truncated) => {
            shared.stats().fault("truncated");
            respond::truncated(bytes, draw.cut)
        }
        Some(Fault::Slow) => {
            shared.stats().fault("slow");
            let counted = shared.clone();
            respond::slow(bytes, config.faults.slow_ms, move || {
                counted.stats().ok(count)
            })
        }
        _ => {
            shared.stats().ok(count);
            respond::json_ok(bytes)
        }
    };
    for (name, value) in rendered.headers {
        resp.headers_mut().insert(name, value);
    }
    resp
}

/// The records of a flooded page (see [`Flood`](super::Flood)): the same
/// for the same seed, every time.
fn flood_records(seed: u64, records: usize, flood: super::Flood) -> Vec<Value> {
    (0..flood.records)
        .map(|i| {
            let id = records + 1 + i;
            let v = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(id as u64)
                % 1000;
            json!({ "id": id, "v": v })
        })
        .collect()
}

/// The page's answer around `data`, the records on it, dressed as
/// configured.
fn render(shared: &Shared, plan: &Plan, data: Vec<Value>, headers: &HeaderMap) -> Rendered {
    let config = &shared.config;
    let host = host_of(headers, shared.addr);
    let dress = Dress {
        seed: config.seed,
        host: &host,
        header_totals: config.header_totals,
        stated_total: config.stated_total,
        next_url: config.next_url.as_deref(),
    };
    styles::render_page(plan, data, &dress)
}

/// Gateways answer in HTML, applications in JSON: clients must not assume
/// an error body parses.
fn status_fault(fault: Fault) -> Response {
    match fault {
        Fault::Status502 => (
            StatusCode::BAD_GATEWAY,
            Html("<html><body><h1>502 Bad Gateway</h1></body></html>"),
        )
            .into_response(),
        Fault::Status503 => json_error(StatusCode::SERVICE_UNAVAILABLE, "service unavailable"),
        Fault::Status504 => (
            StatusCode::GATEWAY_TIMEOUT,
            Html("<html><body><h1>504 Gateway Timeout</h1></body></html>"),
        )
            .into_response(),
        _ => json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal server error"),
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The request's Host, for absolute next links; anything that could break
/// out of a URL or header falls back to the bound address.
fn host_of(headers: &HeaderMap, addr: SocketAddr) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| addr.to_string())
}
