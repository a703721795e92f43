//! The memory rows of `make bench`: one worker lands a single page of
//! 400,000 small records (`{"id":17}`, about 5.5 MB), served at once by a
//! source that ignores the page size it is asked for, as one that lists
//! everything in one answer does. Measured: the worker's resident memory
//! before the page and at its peak, against the body's size. The fleet's
//! ceilings are raised for the run (a page this large is over the
//! defaults, which is the first defence).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::http::header;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use tokio::net::TcpListener;
use uuid::Uuid;

use pagefleet_shared::model::ExportState;
use pagefleet_shared::spec::ExportSpec;

use super::report::{Goal, Table};
use crate::chaos::fleet::default_tenant_dir;
use crate::chaos::ProcessFleet;

#[derive(Debug, Clone)]
pub struct MemoryConfig {
    pub records: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig { records: 400_000 }
    }
}

#[derive(Debug, Clone)]
pub struct MemoryResult {
    pub records: usize,
    pub body_bytes: usize,
    pub rows: u64,
    /// The worker's resident memory once started and idle.
    pub before_kib: u64,
    pub peak_kib: u64,
}

impl MemoryResult {
    /// What the page cost the worker beyond what it held before it.
    pub fn page_kib(&self) -> u64 {
        self.peak_kib.saturating_sub(self.before_kib)
    }

    pub fn times_body(&self) -> f64 {
        (self.page_kib() * 1024) as f64 / self.body_bytes.max(1) as f64
    }
}

/// `{"data":[{"id":1},{"id":2},…],"next":null}`.
pub fn small_records_body(records: usize) -> Bytes {
    let mut body = String::with_capacity(records * 14 + 32);
    body.push_str(r#"{"data":["#);
    for id in 1..=records {
        if id > 1 {
            body.push(',');
        }
        body.push_str(r#"{"id":"#);
        body.push_str(&id.to_string());
        body.push('}');
    }
    body.push_str(r#"],"next":null}"#);
    Bytes::from(body)
}

/// Serves `body` at `/items`, whatever the query asks.
async fn serve_one_page(body: Bytes) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().route(
        "/items",
        get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, server))
}

fn spec(base_url: &str, out: &Path, max_body_bytes: usize) -> String {
    format!(
        r#"name = "memory"
primary_key = ["id"]
page_size = 100000

[source]
base_url = "{base_url}"
path = "/items"
records_path = "data"
max_body_bytes = {max_body_bytes}
timeout_ms = 30000

[pagination]
style = "cursor"
cursor_param = "after"
cursor_path = "next"
size_param = "limit"

[rate_limit]
rate = 10
burst = 1

[output]
dir = "{out}"
"#,
        out = out.display()
    )
}

pub async fn run_memory(config: &MemoryConfig, work_dir: &Path) -> anyhow::Result<MemoryResult> {
    let body = small_records_body(config.records);
    let body_bytes = body.len();
    let (addr, server) = serve_one_page(body).await?;
    let ceiling = (body_bytes * 2).to_string();
    let records = (config.records * 2).to_string();
    let worker_env = vec![
        ("PAGEFLEET_MAX_BODY_BYTES".to_string(), ceiling),
        ("PAGEFLEET_MAX_RECORDS_PER_PAGE".to_string(), records),
        (
            "PAGEFLEET_MAX_JSON_VALUES".to_string(),
            (config.records * 3).to_string(),
        ),
    ];
    let token = format!("bench-{}", Uuid::now_v7().simple());
    let mut fleet =
        ProcessFleet::start_with_env("memory", 1, work_dir, &token, Vec::new(), worker_env).await?;
    // Idle a moment, so the worker's start-up is behind it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_kib = fleet.workers.first().and_then(|w| w.rss_kib()).unwrap_or(0);
    let out = default_tenant_dir(work_dir, "memory-out");
    let spec = ExportSpec::from_toml(&spec(&format!("http://{addr}"), &out, body_bytes * 2))?;
    let id = fleet.api.submit(&spec, None).await?.id;
    let status = fleet.wait_ended(id, Duration::from_secs(600)).await?;
    let peak_kib = (fleet.workers.first())
        .and_then(|w| w.peak_rss_kib())
        .unwrap_or(0);
    fleet.stop().await;
    server.abort();
    let _ = std::fs::remove_dir_all(&out);
    anyhow::ensure!(
        status.state == ExportState::Completed,
        "the page of {} records ended {}: {}",
        config.records,
        status.state,
        status.error.unwrap_or_default()
    );
    Ok(MemoryResult {
        records: config.records,
        body_bytes,
        rows: status.csv_rows.unwrap_or(0).max(0) as u64,
        before_kib,
        peak_kib,
    })
}

pub fn memory_goals(r: &MemoryResult) -> Vec<Goal> {
    let page_mb = (r.page_kib() * 1024) as f64 / 1e6;
    vec![Goal::new(
        format!(
            "memory: a page of {} small records ({:.1} MB): worker peak RSS over its idle RSS",
            r.records,
            r.body_bytes as f64 / 1e6
        ),
        format!("{page_mb:.1} MB = {:.1}× the body", r.times_body()),
        "≤ 4× the body, < 150 MB",
        Some(r.times_body() <= 4.0 && page_mb < 150.0),
    )]
}

pub fn render_memory(r: &MemoryResult) -> String {
    let title = format!(
        "memory: one worker lands one page of {} small records, served at once whatever the page size asked",
        r.records
    );
    let mut t = Table::new(
        &title,
        &[
            "body MB",
            "rows",
            "worker RSS before MiB",
            "peak MiB",
            "page cost MB",
            "× body",
        ],
    );
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    t.row(&[
        format!("{:.1}", r.body_bytes as f64 / 1e6),
        r.rows.to_string(),
        mib(r.before_kib),
        mib(r.peak_kib),
        format!("{:.1}", (r.page_kib() * 1024) as f64 / 1e6),
        format!("{:.1}", r.times_body()),
    ]);
    t.finish()
}
