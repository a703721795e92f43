//! The test fleet: a scheduler and workers running in-process against the
//! real Postgres, Redis and RabbitMQ, each test in its own database, queue
//! namespace and Redis key prefix, so tests run in parallel and leave
//! nothing behind.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use pagefleet_scheduler::admin::CreateToken;
use pagefleet_scheduler::auth::AuthConfig;
use pagefleet_scheduler::client::ApiClient;
use pagefleet_scheduler::SchedulerOptions;
use pagefleet_shared::api_token::ApiToken;
use pagefleet_shared::config::ServiceConfig;
use pagefleet_shared::flatten::{flatten_record, Cell};
use pagefleet_shared::queue::Broker;
use pagefleet_shared::ratelimit::RateLimiter;
use pagefleet_shared::spec::ExportSpec;
use pagefleet_shared::store::ExportStatus;
use pagefleet_tests::mock::{all_records, MockServer, Style};
use pagefleet_workers::WorkerOptions;

pub const ADMIN_DB: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub struct Fleet {
    pub config: ServiceConfig,
    /// The API as the default tenant, with the fleet's admin token.
    pub api: ApiClient,
    pub api_url: String,
    /// The fleet's output root: each tenant writes under `<root>/<tenant>/`.
    pub root: PathBuf,
    /// The scheduler's own metrics listener.
    pub metrics_url: String,
    /// The bootstrap admin token the scheduler was started with.
    pub admin_token: ApiToken,
    pub out_dir: PathBuf,
    db_name: String,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// `TEST_LOG=1`: the in-process fleet's logs go to the test's output
/// (shown for a failing test; `RUST_LOG` filters, `info` by default).
pub fn init_test_log() {
    if pagefleet_tests::chaos::fleet::test_log_enabled() {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

pub fn unique(prefix: &str) -> String {
    let id = Uuid::now_v7().simple().to_string();
    format!("{prefix}{}", &id[id.len() - 12..])
}

impl Fleet {
    /// A scheduler and `workers` workers on fresh, private resources.
    pub async fn start(workers: usize) -> Fleet {
        Self::start_with(workers, |_, _| {}).await
    }

    /// Like `start`, with the fleet's configuration adjusted first (it is
    /// given the test's output directory too).
    pub async fn start_with(
        workers: usize,
        configure: impl FnOnce(&mut ServiceConfig, &Path),
    ) -> Fleet {
        Self::start_full(workers, configure, false).await
    }

    /// A fleet whose scheduler trusts `X-Pagefleet-Tenant` on requests
    /// without a token, as behind an authenticating proxy.
    pub async fn start_trusting_tenant_header(workers: usize) -> Fleet {
        Self::start_full(workers, |_, _| {}, true).await
    }

    async fn start_full(
        workers: usize,
        configure: impl FnOnce(&mut ServiceConfig, &Path),
        trust_tenant_header: bool,
    ) -> Fleet {
        init_test_log();
        let ns = unique("pft");
        let db_name = ns.replace('-', "_");
        admin(&format!("CREATE DATABASE {db_name}")).await;
        let mut config = ServiceConfig {
            database_url: format!("postgres://postgres@127.0.0.1:5432/{db_name}"),
            namespace: ns.clone(),
            // The mock sources listen on loopback; a test may narrow this.
            outbound_allow: vec!["127.0.0.1".into()],
            ..ServiceConfig::default()
        };
        // Isolation is always on: specs write under `<root>/<tenant>/`; the
        // default tenant's directory is where most tests point `output.dir`.
        let root = std::env::temp_dir().join(&ns);
        config.output_root = root.display().to_string();
        let out_dir = root.join(pagefleet_shared::model::DEFAULT_TENANT);
        configure(&mut config, &out_dir);
        std::fs::create_dir_all(&out_dir).unwrap();
        let shutdown = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut tasks = Vec::new();
        let admin_token = ApiToken::generate();
        {
            let admin_token = admin_token.clone();
            let config = config.clone();
            let shutdown = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                let options = SchedulerOptions {
                    listen: "127.0.0.1:0".parse().unwrap(),
                    metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
                    auth: AuthConfig {
                        admin_token: Some(admin_token),
                        trust_tenant_header,
                    },
                };
                if let Err(e) =
                    pagefleet_scheduler::run(&config, options, shutdown, Some(ready_tx)).await
                {
                    panic!("scheduler failed: {e}");
                }
            }));
        }
        let bound = tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .expect("scheduler did not start in 30 s")
            .expect("scheduler stopped before listening");
        for i in 0..workers {
            let config = config.clone();
            let shutdown = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                let options = WorkerOptions {
                    concurrency: 4,
                    drain_timeout: Duration::from_secs(5),
                    name: format!("{}-w{i}", config.namespace),
                    ..WorkerOptions::default()
                };
                if let Err(e) = pagefleet_workers::run(&config, options, shutdown).await {
                    panic!("worker failed: {e}");
                }
            }));
        }
        let api_url = format!("http://{}", bound.api);
        let metrics_url = format!("http://{}", bound.metrics.expect("a metrics listener"));
        let api = ApiClient::new(&api_url, Some(admin_token.clone())).unwrap();
        Fleet {
            config,
            api,
            api_url,
            root,
            metrics_url,
            admin_token,
            out_dir,
            db_name,
            shutdown,
            tasks,
        }
    }

    /// The `pagefleet` CLI pointed at this fleet, with its admin token in
    /// `PAGEFLEET_TOKEN` (acting for the default tenant).
    pub fn cli(&self) -> std::process::Command {
        let mut cli = std::process::Command::new(cli_bin());
        cli.args(["--api", &self.api_url])
            .env("PAGEFLEET_TOKEN", self.admin_token.reveal())
            .env_remove("PAGEFLEET_TENANT");
        cli
    }

    /// Runs the CLI: its exit code, standard output and standard error.
    pub fn run_cli(&self, args: &[&str]) -> (Option<i32>, String, String) {
        run_command(self.cli().args(args))
    }

    /// A client with a new token of `tenant`'s, made through the admin API
    /// as an operator would; returns the token too.
    pub async fn tenant_client(&self, tenant: &str) -> (ApiClient, ApiToken) {
        let created = self
            .api
            .create_token(&CreateToken {
                tenant: Some(tenant.into()),
                admin: false,
                label: format!("test {tenant}"),
            })
            .await
            .expect("create a tenant token");
        let token = ApiToken::presented(&created.token).expect("a token");
        (
            ApiClient::new(&self.api_url, Some(token.clone())).unwrap(),
            token,
        )
    }

    /// Submits an export spec's TOML as the admin (the default tenant).
    pub async fn submit_toml(&self, toml: &str) -> Uuid {
        let spec = ExportSpec::from_toml(toml).expect("a valid spec");
        self.api.submit(&spec, None).await.expect("submitted").id
    }

    /// Waits until the export completes, fails, or is blocked with every
    /// other page landed.
    pub async fn wait(&self, id: Uuid, limit: Duration) -> ExportStatus {
        wait_settled(&self.api, id, limit).await
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        connect(&self.config.database_url).await
    }

    /// Stops the fleet and removes its database, queues, keys and files.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
        if let Ok(broker) = Broker::connect(&self.config.amqp_url, &self.config.namespace).await {
            let _ = broker.delete_queues().await;
            broker.close().await;
        }
        if let Ok(limiter) = RateLimiter::new(&self.config.redis_url, &self.config.namespace) {
            let _ = limiter.clear().await;
        }
        admin(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.db_name
        ))
        .await;
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Runs a command to its end: exit code, standard output, standard error.
pub fn run_command(command: &mut std::process::Command) -> (Option<i32>, String, String) {
    let out = command.output().expect("the command runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until the export, as `api`'s tenant sees it, completes, fails, or
/// is blocked with every other page landed.
pub async fn wait_settled(api: &ApiClient, id: Uuid, limit: Duration) -> ExportStatus {
    let started = Instant::now();
    loop {
        let status = api.status(id).await.expect("status");
        if status.is_settled() {
            return status;
        }
        assert!(
            started.elapsed() < limit,
            "export {id} still {} after {limit:?}: {status:?}",
            status.state
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A spec for tests of the store alone: it is never fetched.
pub fn store_spec(name: &str) -> ExportSpec {
    let toml = format!(
        r#"
name = "{name}"
primary_key = ["id"]
[source]
base_url = "http://127.0.0.1:9"
path = "/items"
[pagination]
style = "offset"
[rate_limit]
rate = 5
[output]
dir = "out"
"#
    );
    ExportSpec::from_toml(&toml).expect("the store tests' spec")
}

/// A landing of `rows` on task `task_id`, leading to `next`, under the
/// fleet's default ceilings (the store tests').
pub fn landing_of(
    task_id: Uuid,
    rows: pagefleet_shared::store::PageRows,
    next: pagefleet_shared::pagination::Next,
) -> pagefleet_shared::store::Landing {
    pagefleet_shared::store::Landing {
        task_id,
        rows,
        columns: std::collections::BTreeSet::new(),
        next,
        counts: pagefleet_shared::model::RequestCounts::default(),
        stated: Vec::new(),
        marks: Vec::new(),
        max_pages: 1_000_000,
        max_columns: 2_000,
        max_cursor: None,
        split: None,
    }
}

/// Sets a new secret variable of `tenant`'s to `value` and returns its
/// name, for a spec to name (a spec reads only
/// `PAGEFLEET_SECRET_<tenant>__*`).
pub fn secret_env(tenant: &str, value: &str) -> String {
    let var = format!("PAGEFLEET_SECRET_{tenant}__{}", unique("T").to_uppercase());
    std::env::set_var(&var, value);
    var
}

/// A fleet with tenant `acme`'s secret variable set to the mock's token;
/// returns the variable's name for the spec to name.
pub async fn isolated_fleet(workers: usize, mock: &MockServer) -> (Fleet, String) {
    let token = secret_env("acme", &mock.config().token);
    (Fleet::start(workers).await, token)
}

/// A private database for a test of the store alone; `drop_db` removes it.
pub async fn create_db(prefix: &str) -> (String, String) {
    let db = unique(prefix);
    admin(&format!("CREATE DATABASE {db}")).await;
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    (db, url)
}

pub async fn drop_db(db: &str) {
    admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("postgres");
    tokio::spawn(connection);
    client
}

async fn admin(sql: &str) {
    connect(ADMIN_DB).await.batch_execute(sql).await.expect(sql);
}

/// The TOML of an export spec against a mock style.
pub fn spec_toml(
    name: &str,
    mock: &MockServer,
    style: Style,
    out_dir: &Path,
    page_size: usize,
    token_env: &str,
) -> String {
    let (records_path, pagination) = match style {
        Style::Offset => ("data", "style = \"offset\"\ntotal_path = \"total\""),
        Style::OffsetNoTotal => ("data", "style = \"offset\""),
        Style::Page => (
            "items",
            "style = \"page_number\"\nfirst_page = 1\ntotal_pages_path = \"total_pages\"",
        ),
        Style::PageNoTotal => ("items", "style = \"page_number\"\nfirst_page = 1"),
        Style::Cursor => ("data", "style = \"cursor\"\ncursor_path = \"next_cursor\""),
        Style::CursorHeader => ("", "style = \"cursor\"\ncursor_header = \"X-Next-Cursor\""),
        Style::LastRecord => (
            "data",
            "style = \"last_record\"\nfield = \"id\"\nhas_more_path = \"has_more\"",
        ),
        Style::NextUrl => ("data", "style = \"next_url\"\nnext_path = \"next\""),
        Style::NextUrlRelative => (
            "data",
            "style = \"next_url\"\nnext_path = \"next\"\ndone_path = \"done\"",
        ),
        Style::Link => ("", "style = \"link_header\""),
        Style::JsonServer => (
            "",
            "style = \"page_number\"\npage_param = \"_page\"\nsize_param = \"_limit\"\nfirst_page = 1",
        ),
    };
    let records_line = if records_path.is_empty() {
        String::new()
    } else {
        format!("records_path = \"{records_path}\"\n")
    };
    let config = mock.config();
    format!(
        r#"name = "{name}"
primary_key = ["id"]
page_size = {page_size}

[source]
base_url = "{base}"
path = "{path}"
{records_line}auth = {{ type = "bearer", secret = {{ env = "{token_env}" }} }}
timeout_ms = 1500

[pagination]
{pagination}

[rate_limit]
rate = {rate}
burst = {burst}

[retry]
max_attempts = 10
base_ms = 50
cap_ms = 1000
# These tests inject far more faults than a 10 % retry budget covers.
budget_ratio = 1.0

[output]
dir = "{out}"
"#,
        base = mock.base_url(),
        path = style.path(),
        rate = config.rate,
        burst = config.burst,
        out = out_dir.display(),
    )
}

/// Checks a published CSV against the mock's records: every record exactly
/// once, in key order, every value equal to the source's. Returns the
/// file's bytes.
pub fn assert_csv_matches_source(path: &Path, seed: u64, records: usize) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut reader = csv::ReaderBuilder::new().from_reader(bytes.as_slice());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let expected = all_records(seed, records);
    let mut seen = 0usize;
    for (i, row) in reader.records().enumerate() {
        let row = row.unwrap_or_else(|e| panic!("CSV row {i} does not parse: {e}"));
        assert!(i < expected.len(), "more rows than the source has");
        let source = flatten_record(&expected[i]).unwrap();
        for (c, column) in header.iter().enumerate() {
            let want = match source.get(column) {
                None | Some(Cell::Null) => String::new(),
                Some(Cell::Raw { r }) => r.clone(),
                Some(Cell::Text(t)) => {
                    if t.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                        format!("'{t}")
                    } else {
                        t.clone()
                    }
                }
            };
            assert_eq!(
                row.get(c).unwrap_or(""),
                want,
                "row {i} (id {}), column {column}",
                expected[i]["id"]
            );
        }
        for column in source.keys() {
            assert!(
                header.contains(column),
                "column {column} missing from the header"
            );
        }
        seen += 1;
    }
    assert_eq!(seen, records, "row count");
    bytes
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    pagefleet_shared::spec::hex(&Sha256::digest(bytes))
}

/// Checks the manifest beside a CSV against the file.
pub fn assert_manifest(csv_path: &Path, bytes: &[u8], rows: usize) -> serde_json::Value {
    let manifest_path = PathBuf::from(format!("{}.manifest.json", csv_path.display()));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).expect("manifest"))
            .expect("manifest JSON");
    assert_eq!(
        manifest["rows"].as_u64(),
        Some(rows as u64),
        "manifest rows"
    );
    assert_eq!(
        manifest["bytes"].as_u64(),
        Some(bytes.len() as u64),
        "manifest bytes"
    );
    assert_eq!(
        manifest["sha256"].as_str(),
        Some(sha256_hex(bytes).as_str()),
        "manifest sha256"
    );
    // Where the time went: every phase took some, and moved the file's rows.
    let phases = &manifest["phases"];
    for phase in ["wall", "fetching", "landing", "finalizing"] {
        let seconds = phases[phase]["seconds"].as_f64().unwrap_or(-1.0);
        assert!(seconds > 0.0, "manifest phases.{phase}: {phases}");
        let rows_per_s = phases[phase]["rows_per_s"].as_f64().unwrap_or(-1.0);
        assert!(
            (rows_per_s * seconds - rows as f64).abs() < 1.0 + rows as f64 * 1e-9,
            "manifest phases.{phase}: {phases}"
        );
    }
    manifest
}

/// `--release` when the tests themselves are a release build: `bin_dir`
/// finds the binaries beside the running test, in the same profile.
fn release_flag() -> &'static [&'static str] {
    if cfg!(debug_assertions) {
        &[]
    } else {
        &["--release"]
    }
}

/// The scheduler and worker binaries that process-level tests spawn,
/// built (or found up to date) once per test process.
pub fn build_fleet_binaries() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-q", "--workspace", "--bins"])
            .args(release_flag())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build");
        assert!(status.success(), "building the fleet's binaries failed");
    });
}

/// The `pagefleet` CLI binary, built (or found up to date) once per test
/// process so a test never runs a stale CLI.
pub fn cli_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = std::process::Command::new(env!("CARGO"))
                .args([
                    "build",
                    "-q",
                    "-p",
                    "pagefleet-scheduler",
                    "--bin",
                    "pagefleet",
                ])
                .args(release_flag())
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("cargo build");
            assert!(status.success(), "building the pagefleet CLI failed");
            pagefleet_tests::chaos::fleet::bin_dir().join("pagefleet")
        })
        .clone()
}

/// Polls `check` until it holds; fails the test past `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
