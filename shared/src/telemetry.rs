//! Logs and metrics: tracing setup (JSON when asked) and the Prometheus
//! registry every process exposes on `/metrics`.

use std::sync::OnceLock;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Installs the tracing subscriber. `PAGEFLEET_LOG_FORMAT=json` gives JSON
/// lines; `RUST_LOG` filters (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("PAGEFLEET_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The fleet's metrics. One set per process.
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub rate_limited: IntCounter,
    pub retries: IntCounter,
    /// Per source key: the time a request took, answered or not (p95 from
    /// its buckets).
    pub request_duration: HistogramVec,
    /// Per source key: the time a task waited for a rate-limit token.
    pub token_wait: HistogramVec,
    /// Per source key: the rate its bucket runs at, as the fleet learned
    /// it (requests per second; see `adaptive_rate`).
    pub source_rate: GaugeVec,
    /// From a chain page's landing to its next page's request, when the
    /// worker that landed it fetches the next one itself.
    pub chain_hop: Histogram,
    pub pages_landed: IntCounter,
    pub duplicate_deliveries: IntCounter,
    pub rows_staged: IntCounter,
    pub rows_replaced: IntCounter,
    pub dead_letters: IntCounter,
    pub exports_finalized: IntCounter,
    pub export_seconds: Histogram,
    pub outbox_published: IntCounter,
    pub tasks_parked: IntCounter,
    /// Per source key: 0 closed, 1 half-open (a probe is out), 2 open.
    pub breaker_state: IntGaugeVec,
    pub retry_budget_denied: IntCounter,
    pub source_pauses: IntCounter,
    pub breaker_opened: IntCounter,
    /// Finalizes that failed the export (its CSV could not be written).
    pub finalize_failures: IntCounter,
    /// Files held beside their final path because their counts disagree.
    pub artifacts_held: IntCounter,
    /// The scheduler's view of the fleet, refreshed every few seconds
    /// (see `scheduler::fleet_gauges`).
    pub fleet: FleetGauges,
}

/// Gauges the scheduler sets from Postgres and RabbitMQ.
pub struct FleetGauges {
    /// Exports by state (every state, zero included).
    pub exports: IntGaugeVec,
    /// Page tasks by state: queued, in_flight, parked, dead, discarded.
    pub page_tasks: IntGaugeVec,
    /// Messages ready on each queue.
    pub queue_depth: IntGaugeVec,
    pub dead_letters_open: IntGauge,
    /// Per export still going (the newest few hundred): pages not landed,
    /// retries, 429s, and seconds since its last progress.
    pub export_pages_remaining: IntGaugeVec,
    pub export_retries: IntGaugeVec,
    pub export_rate_limited: IntGaugeVec,
    pub export_idle_seconds: IntGaugeVec,
}

pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new_custom(Some("pagefleet".into()), None)
            .unwrap_or_else(|_| Registry::new());
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).unwrap_or_else(|_| unreachable_counter());
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .unwrap_or_else(|_| unreachable_histogram());
            let _ = registry.register(Box::new(h.clone()));
            h
        };
        let requests = IntCounterVec::new(
            Opts::new(
                "source_requests_total",
                "Requests sent to source APIs, by status class",
            ),
            &["status"],
        )
        .unwrap_or_else(|_| unreachable_vec());
        let _ = registry.register(Box::new(requests.clone()));
        let breaker_state = IntGaugeVec::new(
            Opts::new(
                "breaker_state",
                "Circuit breaker per source as last seen: 0 closed, 1 half-open, 2 open",
            ),
            &["source"],
        )
        .unwrap_or_else(|_| unreachable_gauge());
        let _ = registry.register(Box::new(breaker_state.clone()));
        let histogram_vec = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["source"])
                .unwrap_or_else(|_| unreachable_histogram_vec());
            let _ = registry.register(Box::new(h.clone()));
            h
        };
        let gauge_vec = |name: &str, help: &str, label: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &[label])
                .unwrap_or_else(|_| unreachable_gauge());
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let source_rate = GaugeVec::new(
            Opts::new(
                "source_rate",
                "Requests per second each source key's bucket runs at, as learned fleet-wide",
            ),
            &["source"],
        )
        .unwrap_or_else(|_| std::process::abort());
        let _ = registry.register(Box::new(source_rate.clone()));
        let dead_letters_open = IntGauge::new("dead_letters_open", "Dead letters not resolved")
            .unwrap_or_else(|_| std::process::abort());
        let _ = registry.register(Box::new(dead_letters_open.clone()));
        let fleet = FleetGauges {
            exports: gauge_vec("exports", "Exports by state", "state"),
            page_tasks: gauge_vec(
                "page_tasks",
                "Page tasks by state (parked: queued with a not-before time)",
                "state",
            ),
            queue_depth: gauge_vec("queue_depth", "Messages ready on each queue", "queue"),
            dead_letters_open,
            export_pages_remaining: gauge_vec(
                "export_pages_remaining",
                "Pages of an export still going not yet landed",
                "export",
            ),
            export_retries: gauge_vec(
                "export_retries",
                "Retries of an export still going",
                "export",
            ),
            export_rate_limited: gauge_vec(
                "export_rate_limited",
                "429 answers to an export still going",
                "export",
            ),
            export_idle_seconds: gauge_vec(
                "export_idle_seconds",
                "Seconds since an export still going last made progress",
                "export",
            ),
        };
        Metrics {
            fleet,
            request_duration: histogram_vec(
                "source_request_duration_seconds",
                "Time a request to a source took, by source key",
                vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            ),
            finalize_failures: counter(
                "finalize_failures_total",
                "Finalizes that failed their export",
            ),
            artifacts_held: counter(
                "artifacts_held_total",
                "CSV files held beside their final path (unverified)",
            ),
            breaker_state,
            source_rate,
            chain_hop: histogram(
                "chain_hop_seconds",
                "From a chain page's landing to the request of the next page, fetched by the same worker",
                vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0],
            ),
            retry_budget_denied: counter(
                "retry_budget_denied_total",
                "Retries held back because the source's retry budget was spent",
            ),
            requests,
            rate_limited: counter("source_429_total", "429 answers from source APIs"),
            retries: counter("retries_total", "Retried requests"),
            token_wait: histogram_vec(
                "token_wait_seconds",
                "Time spent waiting for a rate-limit token, by source key",
                vec![0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            ),
            pages_landed: counter("pages_landed_total", "Pages landed in Postgres"),
            duplicate_deliveries: counter(
                "duplicate_deliveries_total",
                "Deliveries of pages already landed (absorbed)",
            ),
            rows_staged: counter("rows_staged_total", "New rows staged"),
            rows_replaced: counter("rows_replaced_total", "Staged rows replaced by a re-fetch"),
            dead_letters: counter("dead_letters_total", "Tasks dead-lettered"),
            exports_finalized: counter("exports_finalized_total", "CSV files published"),
            export_seconds: histogram(
                "export_duration_seconds",
                "Submit-to-publish time of exports",
                vec![1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0],
            ),
            outbox_published: counter("outbox_published_total", "Outbox messages published"),
            source_pauses: counter(
                "source_pauses_total",
                "Fleet-wide pauses of a source set after a 429",
            ),
            tasks_parked: counter(
                "tasks_parked_total",
                "Tasks handed back with a not-before time instead of waiting",
            ),
            breaker_opened: counter(
                "breaker_open_total",
                "Failures that left a source's circuit breaker open",
            ),
            registry,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            // A scrape gets what was encoded before the failure.
            tracing::warn!(error = %e, "metrics not fully encoded");
        }
        // The text encoder writes UTF-8; lossy only to need no unwrap.
        String::from_utf8_lossy(&buf).into_owned()
    }
}

// Metric construction fails only on invalid names, which are constants
// above; these keep that impossible case from needing an unwrap.
fn unreachable_counter() -> IntCounter {
    IntCounter::new("invalid_metric_fallback", "fallback").unwrap_or_else(|_| std::process::abort())
}
fn unreachable_histogram() -> Histogram {
    Histogram::with_opts(HistogramOpts::new("invalid_histogram_fallback", "fallback"))
        .unwrap_or_else(|_| std::process::abort())
}
fn unreachable_histogram_vec() -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new("invalid_histogram_vec_fallback", "fallback"),
        &["x"],
    )
    .unwrap_or_else(|_| std::process::abort())
}
fn unreachable_gauge() -> IntGaugeVec {
    IntGaugeVec::new(Opts::new("invalid_gauge_fallback", "fallback"), &["x"])
        .unwrap_or_else(|_| std::process::abort())
}
fn unreachable_vec() -> IntCounterVec {
    IntCounterVec::new(Opts::new("invalid_vec_fallback", "fallback"), &["x"])
        .unwrap_or_else(|_| std::process::abort())
}

/// Serves [`metrics_router`] on `listener`. Returns only when serving
/// fails; the caller logs that (a process without `/healthz` looks dead to
/// its supervisor).
pub async fn serve_metrics(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, metrics_router()).await
}

/// An axum router with `/metrics` and `/healthz`.
pub fn metrics_router() -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|| async { metrics().render() }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }))
}
