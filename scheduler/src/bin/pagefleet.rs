//! `pagefleet`: the operator CLI over the scheduler's HTTP API.
//!
//! Exit codes: 0 success; 1 the API or a service failed; 2 bad input (a
//! spec, an id, an argument); 3 the export is blocked on dead letters;
//! 4 the export failed or was cancelled; 5 not found; 6 every page landed
//! but the counts disagree with the source's (`unverified`: the CSV is held
//! beside its final path); 7 the API refused the token (missing, unknown,
//! revoked, or not allowed to do this); 8 the export is paused; 9 the
//! action does not apply to the export's state (cancel a completed one).
//!
//! The token comes from `PAGEFLEET_TOKEN` (or `--token`, which the process
//! list shows: prefer the variable).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

#[path = "pagefleet/admin.rs"]
mod admin;
#[path = "pagefleet/dlq.rs"]
mod dlq;
#[path = "pagefleet/schedule.rs"]
mod schedule;
use uuid::Uuid;

use pagefleet_scheduler::client::{ApiClient, ClientError};
use pagefleet_scheduler::terminal::shown;
use pagefleet_shared::api_token::ApiToken;
use pagefleet_shared::model::ExportState;
use pagefleet_shared::progress::{self, human_duration as duration};
use pagefleet_shared::spec::ExportSpec;
use pagefleet_shared::store::ExportStatus;
use pagefleet_shared::verification::{Verification, VerificationStatus};

#[derive(Parser, Debug)]
#[command(
    name = "pagefleet",
    version,
    about = "Export paginated, rate-limited HTTP APIs to CSV files you can trust"
)]
struct Cli {
    /// The scheduler's API.
    #[arg(
        long,
        global = true,
        env = "PAGEFLEET_API",
        default_value = "http://127.0.0.1:8080"
    )]
    api: String,
    /// API token (a tenant's, or an admin's).
    #[arg(long, global = true, env = "PAGEFLEET_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// With an admin token: the tenant to act for.
    #[arg(long, global = true, env = "PAGEFLEET_TENANT")]
    tenant: Option<String>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Submit an export spec (TOML).
    Submit {
        spec: PathBuf,
        /// Wait until the CSV is published, showing progress.
        #[arg(long)]
        wait: bool,
        /// Submitting twice with the same key returns the same export.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Check the spec and print it as JSON without submitting.
        #[arg(long)]
        check: bool,
    },
    /// Show an export's state and counters.
    Status { id: String },
    /// List recent exports, newest first.
    Ls {
        /// Only exports in this state (running, blocked, completed…).
        #[arg(long)]
        state: Option<String>,
        /// Only exports whose name contains this.
        #[arg(long)]
        name: Option<String>,
        /// Only exports whose source's base URL contains this.
        #[arg(long)]
        source: Option<String>,
        /// Created at most this long ago: 90s, 30m, 2h, 7d.
        #[arg(long)]
        newer_than: Option<String>,
        /// Created at least this long ago.
        #[arg(long)]
        older_than: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Dead letters: pages that could not be fetched.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Stop an export for good: nothing more is fetched, no CSV; its
    /// staged rows are kept for inspection.
    Cancel { id: String },
    /// Stop fetching an export's pages until it is resumed.
    Pause { id: String },
    /// Fetch a paused export's pages again.
    Resume { id: String },
    /// Finalize a failed export again from its staged pages.
    Retry { id: String },
    /// Let an export publish without the pages discarded from it.
    AcceptGaps { id: String },
    /// Follow an export until it settles; the exit code says how it ended.
    Watch { id: String },
    /// Save an export's published CSV (checked against its SHA-256).
    Download {
        id: String,
        /// Where to write it (default: `<id>.csv` here).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// What operators did: replays, dry runs, discards, cancels…
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Exports that fire on a cron expression.
    Schedule {
        #[command(subcommand)]
        command: schedule::ScheduleCommand,
    },
    /// Operator commands (an admin token).
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// The newest actions first.
    Ls {
        /// Only this action (dlq.replay, dlq.discard, export.cancel…).
        #[arg(long)]
        action: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match e.status() {
            Some(401 | 403) => 7,
            Some(404) => 5,
            Some(400..=499) => 2,
            _ => 1,
        };
        let message = match &e {
            ClientError::Refused {
                field: Some(field), ..
            } => format!("{e} (field `{field}`)"),
            _ => e.to_string(),
        };
        Failure { code, message }
    }
}

fn bad_input(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("pagefleet: {}", shown(&f.message));
            ExitCode::from(f.code)
        }
    }
}

async fn run(cli: Cli) -> Result<u8, Failure> {
    let token = cli.token.as_deref().and_then(ApiToken::presented);
    let mut client = ApiClient::new(&cli.api, token)?;
    if let Some(tenant) = &cli.tenant {
        client = client.for_tenant(tenant);
    }
    let json = cli.json;
    match cli.command {
        Command::Submit {
            spec,
            wait,
            idempotency_key,
            check,
        } => {
            let options = SubmitOptions {
                wait,
                idempotency_key,
                check,
                json,
            };
            submit(&client, &spec, options).await
        }
        Command::Status { id } => status(&client, &id, json).await,
        Command::Ls {
            state,
            name,
            source,
            newer_than,
            older_than,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            for (key, value) in [
                ("state", state),
                ("name", name),
                ("source", source),
                ("newer_than", newer_than),
                ("older_than", older_than),
            ] {
                query.extend(value.map(|v| (key, v)));
            }
            list(&client, &query, json).await
        }
        Command::Dlq { command } => dlq::run(&client, command, json).await,
        Command::Cancel { id } => export_action(&client, &id, "cancel", json).await,
        Command::Pause { id } => export_action(&client, &id, "pause", json).await,
        Command::Resume { id } => export_action(&client, &id, "resume", json).await,
        Command::Retry { id } => export_action(&client, &id, "retry", json).await,
        Command::AcceptGaps { id } => export_action(&client, &id, "accept-gaps", json).await,
        Command::Watch { id } => wait_and_report(&client, parse_id(&id)?, json).await,
        Command::Download { id, output } => download(&client, &id, output, json).await,
        Command::Audit {
            command: AuditCommand::Ls { action, limit },
        } => dlq::audit(&client, action.as_deref(), limit, json).await,
        Command::Schedule { command } => schedule::run(&client, command, json).await,
        Command::Admin { command } => admin::run(&client, command, json).await,
    }
}

struct SubmitOptions {
    wait: bool,
    idempotency_key: Option<String>,
    check: bool,
    json: bool,
}

async fn submit(client: &ApiClient, path: &Path, options: SubmitOptions) -> Result<u8, Failure> {
    let spec = load_spec(path)?;
    if options.check {
        print_json(&spec);
        return Ok(0);
    }
    let submitted = client
        .submit(&spec, options.idempotency_key.as_deref())
        .await?;
    if !options.wait {
        if options.json {
            print_json(&submitted);
        } else {
            let verb = if submitted.created {
                "submitted"
            } else {
                "already submitted"
            };
            println!("export {} {verb}", submitted.id);
        }
        return Ok(0);
    }
    if !options.json {
        eprintln!("export {} submitted; waiting for the CSV", submitted.id);
    }
    wait_and_report(client, submitted.id, options.json).await
}

/// Waits for the export to settle and reports it; the exit code says how
/// it ended.
async fn wait_and_report(client: &ApiClient, id: Uuid, json: bool) -> Result<u8, Failure> {
    let status = wait_for(client, id, json).await?;
    report_final(client, &status, json).await
}

async fn status(client: &ApiClient, id: &str, json: bool) -> Result<u8, Failure> {
    let status = client.status(parse_id(id)?).await?;
    if json {
        print_json(&status);
    } else {
        print_status(&status);
    }
    Ok(0)
}

async fn list(client: &ApiClient, query: &[(&str, String)], json: bool) -> Result<u8, Failure> {
    let list = client.list_where(query).await?;
    if json {
        print_json(&list);
        return Ok(0);
    }
    println!(
        "{:<36}  {:<10}  {:>13}  {:>9}  NAME",
        "ID", "STATE", "PAGES", "ROWS"
    );
    for s in list {
        println!(
            "{:<36}  {:<10}  {:>13}  {:>9}  {}",
            s.id,
            s.state,
            format!("{}/{}", s.pages_landed, s.pages_planned),
            s.rows_staged,
            shown(&s.name)
        );
    }
    Ok(0)
}

/// Writes the CSV to a temporary file beside the target, renamed into
/// place once its digest checked out.
async fn download(
    client: &ApiClient,
    id: &str,
    output: Option<PathBuf>,
    json: bool,
) -> Result<u8, Failure> {
    let id = parse_id(id)?;
    let target = output.unwrap_or_else(|| PathBuf::from(format!("{id}.csv")));
    let temp = target.with_extension("csv.partial");
    let failed = |what: &str, e: &dyn std::fmt::Display| Failure {
        code: 1,
        message: format!("cannot {what} {}: {e}", temp.display()),
    };
    let mut file = std::fs::File::create(&temp).map_err(|e| failed("write", &e))?;
    let fetched = client.download(id, &mut file).await;
    let (bytes, sha256) = match fetched {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(e.into());
        }
    };
    file.sync_all().map_err(|e| failed("sync", &e))?;
    std::fs::rename(&temp, &target).map_err(|e| failed("rename", &e))?;
    if json {
        print_json(&serde_json::json!({"file": target, "bytes": bytes, "sha256": sha256}));
    } else {
        println!(
            "{}: {bytes} bytes, sha256 {sha256} (as the export states)",
            target.display()
        );
    }
    Ok(0)
}

/// An operator's action on one export.
async fn export_action(
    client: &ApiClient,
    id: &str,
    action: &str,
    json: bool,
) -> Result<u8, Failure> {
    let done = match client.export_action(parse_id(id)?, action).await {
        Ok(done) => done,
        Err(e) if e.status() == Some(409) => {
            return Err(Failure {
                code: 9,
                message: e.to_string(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        print_json(&done);
    } else {
        println!(
            "export {}: {} → {} (audit {})",
            done.export, done.from, done.to, done.audit_id
        );
    }
    Ok(0)
}

/// Reads and validates a TOML spec. A relative output directory is sent as
/// written: the scheduler resolves it (under the tenant's directory when the
/// fleet isolates tenants, against its own working directory otherwise).
fn load_spec(path: &Path) -> Result<ExportSpec, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad_input(format!("cannot read spec {}: {e}", path.display())))?;
    ExportSpec::from_toml(&text).map_err(|e| bad_input(format!("{}: {e}", path.display())))
}

fn parse_id(text: &str) -> Result<Uuid, Failure> {
    Uuid::parse_str(text).map_err(|_| bad_input(format!("{text:?} is not an id")))
}

fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        // The API's own types always serialize; say so loudly if one did not.
        Err(e) => eprintln!("pagefleet: cannot print the answer as JSON: {e}"),
    }
}

/// Polls the export until it stops moving, with a progress bar on a
/// terminal and plain lines otherwise (CI, pipes).
async fn wait_for(client: &ApiClient, id: Uuid, quiet: bool) -> Result<ExportStatus, Failure> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal() && !quiet;
    let bar = tty.then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} pages  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut last_line = Instant::now() - Duration::from_secs(60);
    let mut unreachable = 0u32;
    loop {
        let status = match client.status(id).await {
            Ok(s) => {
                unreachable = 0;
                s
            }
            Err(e @ ClientError::Unreachable { .. }) => {
                unreachable += 1;
                if unreachable > 60 {
                    return Err(e.into());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let total = if status.pages_total_known { "" } else { "+" };
        let eta = (status.progress.eta.as_ref())
            .map_or(String::new(), |e| format!(", eta {}", duration(e.seconds)));
        let msg = format!(
            "{} rows, {} retries, {} 429s, {} parked, {} dead{eta}",
            status.rows_staged,
            status.retries,
            status.rate_limited,
            status.progress.pages_parked,
            status.dead_letters_open
        );
        if let Some(bar) = &bar {
            bar.set_length(status.pages_planned as u64);
            bar.set_position(status.pages_landed as u64);
            bar.set_message(format!("{} · {msg}", status.state));
        } else if !quiet && last_line.elapsed() >= Duration::from_secs(2) {
            eprintln!(
                "[{:>5.1}s] {} pages {}/{}{total} · {msg}",
                started.elapsed().as_secs_f64(),
                status.state,
                status.pages_landed,
                status.pages_planned
            );
            last_line = Instant::now();
        }
        if status.is_settled() {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn report_final(
    client: &ApiClient,
    status: &ExportStatus,
    json: bool,
) -> Result<u8, Failure> {
    if json {
        print_json(status);
    }
    match status.state {
        ExportState::Completed => {
            if !json {
                print_status(status);
            }
            Ok(0)
        }
        ExportState::Blocked if status.pages_dead == 0 && !status.accept_gaps => {
            if !json {
                print_status(status);
                eprintln!(
                    "export {} is blocked: {} page(s) were discarded and not every gap is \
                     accepted; pagefleet accept-gaps {} publishes without them",
                    status.id, status.pages_discarded, status.id
                );
            }
            Ok(3)
        }
        ExportState::Blocked => {
            if !json {
                print_status(status);
                let letters = match client.dead_letters(Some(status.id), false).await {
                    Ok(letters) => letters,
                    Err(e) => {
                        eprintln!("pagefleet: cannot list the dead letters: {e}");
                        Vec::new()
                    }
                };
                eprintln!(
                    "export {} is blocked on {} dead letter(s):",
                    status.id, status.dead_letters_open
                );
                for d in letters {
                    eprintln!(
                        "  task {} (partition {}, page {}): {}",
                        d.task_id,
                        d.partition_no,
                        d.page_no,
                        shown(&d.reason)
                    );
                }
                eprintln!(
                    "fix the cause, then: pagefleet dlq replay --export {} --dry-run",
                    status.id
                );
            }
            Ok(3)
        }
        ExportState::CompletedWithGaps => {
            if !json {
                print_status(status);
                eprintln!(
                    "export {} published with {} discarded page(s) as accepted gaps: its manifest lists them",
                    status.id, status.pages_discarded
                );
            }
            Ok(0)
        }
        ExportState::Paused => {
            if !json {
                print_status(status);
                eprintln!(
                    "export {} is paused: pagefleet resume {}",
                    status.id, status.id
                );
            }
            Ok(8)
        }
        ExportState::Unverified => {
            if !json {
                print_status(status);
                eprintln!(
                    "export {} is unverified: {}",
                    status.id,
                    shown(status.error.as_deref().unwrap_or("the counts disagree"))
                );
                eprintln!(
                    "the CSV is held beside its final path; set verify.on_mismatch = \"publish\" to publish such a file anyway"
                );
            }
            Ok(6)
        }
        _ => {
            if !json {
                print_status(status);
            }
            Ok(4)
        }
    }
}

fn print_status(s: &ExportStatus) {
    let total = if s.pages_total_known { "" } else { " (so far)" };
    println!("export    {}  ({})", s.id, shown(&s.name));
    println!("state     {}", s.state);
    println!("pages     {}/{}{total}", s.pages_landed, s.pages_planned);
    println!(
        "rows      {} staged, {} replaced by merge",
        s.rows_staged, s.rows_replaced
    );
    println!(
        "requests  {} ({} retries, {} 429s, {} duplicate deliveries)",
        s.requests, s.retries, s.rate_limited, s.duplicate_deliveries
    );
    if s.dead_letters_open > 0 {
        println!("dead      {} open dead letter(s)", s.dead_letters_open);
    }
    print_progress(s);
    if s.pages_discarded > 0 {
        let accepted = match s.accept_gaps {
            true => "accepted as gaps",
            false => "not accepted: pagefleet accept-gaps to publish without them",
        };
        println!(
            "gaps      {} discarded page(s), {accepted}",
            s.pages_discarded
        );
    }
    if let Some(e) = &s.error {
        println!("error     {}", shown(e));
    }
    if let Some(p) = &s.output_path {
        println!("csv       {p}");
        println!("sha256    {}", s.csv_sha256.as_deref().unwrap_or("-"));
        println!(
            "rows      {} in the CSV, {} bytes",
            s.csv_rows.unwrap_or(0),
            s.csv_bytes.unwrap_or(0)
        );
    }
    if let Some(p) = &s.manifest_path {
        println!("manifest  {p}");
    }
    if let Some(v) = &s.verification {
        println!("verified  {}", verified_line(v));
    }
    if let Some(at) = s.staging_removed_at {
        let at = (at.format(&time::format_description::well_known::Rfc3339))
            .unwrap_or_else(|_| at.to_string());
        println!("staging   removed {at} (the retention had passed)");
    }
}

/// The ETA, the parked pages, where the time goes and why it is slow.
fn print_progress(s: &ExportStatus) {
    let p = &s.progress;
    if let Some(eta) = &p.eta {
        println!(
            "eta       {} ({} page(s) left at {:.2} pages/s{})",
            duration(eta.seconds),
            eta.pages_remaining,
            eta.pages_per_s,
            p.source_rate
                .map_or(String::new(), |r| format!("; the source's rate is {r}/s"))
        );
    } else if !s.state.is_terminal() && !s.pages_total_known {
        println!("eta       unknown until the chain's last page is read");
    }
    println!(
        "rate      {}",
        progress::rate_line(p.source_rate, p.stated_rate, p.rate_learned)
    );
    if p.pages_parked > 0 {
        println!(
            "parked    {} page(s) until their source has tokens",
            p.pages_parked
        );
    }
    let t = &p.time;
    println!(
        "time      fetching {:.1}s · tokens {:.1}s · retrying {:.1}s · parked {:.1}s · \
         waiting for a worker {:.1}s · finalizing {:.1}s (pages summed)",
        t.fetching_s,
        t.waiting_for_tokens_s,
        t.retrying_s,
        t.parked_s,
        t.waiting_for_a_worker_s,
        t.finalizing_s
    );
    if let Some(why) = &p.why_slow {
        println!("why slow  {why}");
    }
}

/// What the finalizer checked, in one line.
fn verified_line(v: &Verification) -> String {
    let total = v
        .source_total
        .map_or(String::new(), |t| format!(", source total {t}"));
    match (v.status, &v.shortfall) {
        (VerificationStatus::NoneStated, _) => {
            "none stated: the source gave no count to check against".to_string()
        }
        (_, Some(shortfall)) => format!("MISMATCH{total}: {}", shown(shortfall)),
        (_, None) => format!("{} checks agree{total}", v.checks.len()),
    }
}
