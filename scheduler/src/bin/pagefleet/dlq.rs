//! `pagefleet dlq ls|show|replay|discard` and `pagefleet audit ls`: dead
//! letters filtered, inspected, replayed (dry, or with edits) and
//! discarded, and the log of what operators did.

use clap::{Args, Subcommand};
use uuid::Uuid;

use pagefleet_scheduler::client::ApiClient;
use pagefleet_scheduler::dlq::DlqQuery;
use pagefleet_scheduler::terminal::shown;
use pagefleet_shared::store::{ActionOutcome, ActionRequest, DeadLetter, DlqPage};

use crate::{bad_input, parse_id, print_json, Failure};

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// List dead letters (open ones unless --all), newest first, with the
    /// counts per class of everything the filter matches.
    Ls {
        #[command(flatten)]
        filter: FilterArgs,
        /// Include resolved (replayed, discarded) letters.
        #[arg(long)]
        all: bool,
        /// Letters per page (1-500).
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// The next page: the id `ls` printed last.
        #[arg(long)]
        before: Option<String>,
    },
    /// One dead letter whole: the request, every attempt, the body excerpt.
    Show {
        /// A dead-letter or task id.
        id: String,
    },
    /// Put the dead pages a filter matches back in the queue.
    Replay {
        #[command(flatten)]
        action: ActionArgs,
        /// Change the pages before replaying them: page_size=N (chain
        /// pages), secret.env=NAME or secret.file=NAME, window=split
        /// (a backfill window's first page).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Give dead pages up: each is a gap; its export publishes only with
    /// --accept-gaps (or `pagefleet accept-gaps`), ending
    /// completed_with_gaps with the gaps in its manifest.
    Discard {
        #[command(flatten)]
        action: ActionArgs,
        /// Why (recorded with the letters and in the audit log).
        #[arg(long)]
        reason: String,
        /// Let the exports publish without these pages.
        #[arg(long)]
        accept_gaps: bool,
    },
}

#[derive(Args, Debug, Default)]
pub struct FilterArgs {
    #[arg(long)]
    export: Option<String>,
    /// The rate-limit key the pages draw from.
    #[arg(long)]
    source_key: Option<String>,
    /// permanent, exhausted, rate_limited, bad_page, worker_lost, refused, over_limit.
    #[arg(long)]
    class: Option<String>,
    /// The last HTTP status.
    #[arg(long)]
    status: Option<u16>,
    /// Dead-lettered at or after (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Dead-lettered before (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// Letters failing the same way (`ls` and `show` print it).
    #[arg(long)]
    fingerprint: Option<String>,
}

#[derive(Args, Debug)]
pub struct ActionArgs {
    /// Dead-letter or task ids (none: every letter the filter matches).
    ids: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Every open dead letter of the tenant (needed without ids or a filter).
    #[arg(long)]
    all: bool,
    /// Print what would be done, and what it costs; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// The dry run this follows: refused if the pages changed since.
    #[arg(long)]
    follows: Option<String>,
}

impl FilterArgs {
    fn query(&self, ids: &[String]) -> DlqQuery {
        DlqQuery {
            export: self.export.clone(),
            source_key: self.source_key.clone(),
            class: self.class.clone(),
            status: self.status.map(|s| s.to_string()),
            since: self.since.clone(),
            until: self.until.clone(),
            fingerprint: self.fingerprint.clone(),
            ids: (!ids.is_empty()).then(|| ids.join(",")),
            ..DlqQuery::default()
        }
    }
}

/// The action's request: the filter parsed the way the API parses a
/// listing's, so `ls` and `replay` with the same flags mean the same letters.
fn action_request(args: &ActionArgs) -> Result<ActionRequest, Failure> {
    for id in &args.ids {
        parse_id(id)?;
    }
    let filter = args
        .filter
        .query(&args.ids)
        .filter()
        .map_err(|e| bad_input(e.error))?;
    Ok(ActionRequest {
        filter,
        all: args.all,
        dry_run: args.dry_run,
        follows: args.follows.as_deref().map(parse_id).transpose()?,
        ..ActionRequest::default()
    })
}

pub async fn run(client: &ApiClient, command: DlqCommand, json: bool) -> Result<u8, Failure> {
    match command {
        DlqCommand::Ls {
            filter,
            all,
            limit,
            before,
        } => {
            let query = DlqQuery {
                all,
                limit: Some(limit),
                before,
                ..filter.query(&[])
            };
            let page = client.dlq(&query).await?;
            match json {
                true => print_json(&page),
                false => print_page(&page),
            }
            Ok(0)
        }
        DlqCommand::Show { id } => {
            let letter = client.dead_letter(parse_id(&id)?).await?;
            match json {
                true => print_json(&letter),
                false => print_letter(&letter),
            }
            Ok(0)
        }
        DlqCommand::Replay { action, set } => {
            let request = ActionRequest {
                set,
                ..action_request(&action)?
            };
            let outcome = client.dlq_replay(&request).await?;
            match json {
                true => print_json(&outcome),
                false => print_outcome("replay", &outcome),
            }
            Ok(0)
        }
        DlqCommand::Discard {
            action,
            reason,
            accept_gaps,
        } => {
            let request = ActionRequest {
                reason: Some(reason),
                accept_gaps,
                ..action_request(&action)?
            };
            let outcome = client.dlq_discard(&request).await?;
            match json {
                true => print_json(&outcome),
                false => print_outcome("discard", &outcome),
            }
            Ok(0)
        }
    }
}

fn print_page(page: &DlqPage) {
    let counts: Vec<String> = (page.by_class.iter())
        .map(|(class, n)| format!("{class} {n}"))
        .collect();
    println!(
        "{} dead letter(s){}",
        page.total,
        match counts.is_empty() {
            true => String::new(),
            false => format!(" · {}", counts.join(" · ")),
        }
    );
    if page.letters.is_empty() {
        return;
    }
    println!(
        "{:<36}  {:<8}  {:>4}  {:>6}  {:<12}  {:>4}  {:<16}  REASON",
        "DEAD LETTER", "EXPORT", "PART", "PAGE", "CLASS", "HTTP", "FINGERPRINT"
    );
    for d in &page.letters {
        let export = d.export_id.to_string();
        println!(
            "{:<36}  {:<8}  {:>4}  {:>6}  {:<12}  {:>4}  {:<16}  {}{}",
            d.id,
            &export[..8],
            d.partition_no,
            d.page_no,
            d.class,
            d.last_status.map_or("-".into(), |s| s.to_string()),
            d.fingerprint.as_deref().unwrap_or("-"),
            shown(&one_line(&d.reason, 80)),
            d.resolution
                .as_ref()
                .map_or(String::new(), |r| format!("  [{r}]")),
        );
    }
    if let Some(next) = page.next_before {
        println!("more: pagefleet dlq ls --before {next}");
    }
}

fn one_line(text: &str, max: usize) -> String {
    let line: String = text.replace(['\n', '\r'], " ");
    match line.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

fn print_letter(d: &DeadLetter) {
    println!("dead letter  {}", d.id);
    println!("export       {}", d.export_id);
    println!(
        "task         {} (partition {}, page {}, now {})",
        d.task_id, d.partition_no, d.page_no, d.task_state
    );
    println!("class        {}", d.class);
    println!("reason       {}", shown(&d.reason));
    if let Some(s) = d.last_status {
        println!("last status  {s}");
    }
    println!(
        "source key   {}",
        shown(d.source_key.as_deref().unwrap_or("-"))
    );
    println!("fingerprint  {}", d.fingerprint.as_deref().unwrap_or("-"));
    println!("at           {}", d.created_at);
    if let Some(r) = &d.resolution {
        let by = d.resolved_by.as_deref().unwrap_or("?");
        let why =
            (d.resolution_reason.as_deref()).map_or(String::new(), |w| format!(": {}", shown(w)));
        println!("resolved     {r} by {}{why}", shown(by));
    }
    if let Some(url) = d.request.get("url").and_then(|u| u.as_str()) {
        println!("request      GET {}", shown(url));
    }
    if let Some(headers) = d.request.get("headers").and_then(|h| h.as_object()) {
        for (name, value) in headers {
            println!(
                "             {}: {}",
                shown(name),
                shown(value.as_str().unwrap_or(""))
            );
        }
    }
    let attempts = d.attempts.as_array().map(Vec::as_slice).unwrap_or(&[]);
    println!("attempts     {}", attempts.len());
    for a in attempts {
        let field = |k: &str| {
            a.get(k)
                .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
        };
        let mut line = format!(
            "  {}  {:<14} {:>4}  {:>6} ms",
            field("at").unwrap_or_default(),
            field("outcome").unwrap_or_default(),
            field("status")
                .filter(|s| s != "null")
                .unwrap_or_else(|| "-".into()),
            field("millis").unwrap_or_default(),
        );
        if let Some(r) = field("retry_after") {
            line.push_str(&format!("  Retry-After {r}"));
        }
        if let Some(limits) = a.get("rate_limit").and_then(|v| v.as_object()) {
            for (k, v) in limits {
                line.push_str(&format!("  {k}: {}", v.as_str().unwrap_or("")));
            }
        }
        if let Some(e) = field("error") {
            line.push_str(&format!("  {e}"));
        }
        println!("{}", shown(&line));
    }
    if let Some(body) = &d.body_excerpt {
        println!("body         {}", shown(&one_line(body, 300)));
    }
    println!("replay:      pagefleet dlq replay {} --dry-run", d.id);
}

fn print_outcome(verb: &str, o: &ActionOutcome) {
    let exports = o.exports.len();
    let pages = o.pages.len();
    if pages == 0 && o.skipped.is_empty() {
        println!(
            "nothing to {verb}: no open dead letter matches (audit {})",
            o.audit_id
        );
        return;
    }
    if o.dry_run {
        println!(
            "dry run {}: would {verb} {pages} page(s) of {exports} export(s); nothing changed",
            o.audit_id
        );
    } else {
        let done = if verb == "replay" {
            "replayed"
        } else {
            "discarded"
        };
        println!(
            "{done} {pages} page(s) of {exports} export(s) (audit {})",
            o.audit_id
        );
    }
    for p in &o.pages {
        let split = match &p.split_into {
            Some([a, b]) => format!("  split into {} and {}", params(a), params(b)),
            None => String::new(),
        };
        println!(
            "  page {:>5} of partition {:>3}  export {}  {:<12}  task {}{split}",
            p.page, p.partition, p.export, p.class, p.task
        );
    }
    for s in &o.skipped {
        println!("  skipped {}: {}", s.dead_letter, shown(&s.why));
    }
    if verb == "replay" && pages > 0 {
        println!(
            "cost         at least {} request(s), {:.1} s at the sources' rates",
            o.requests_at_least, o.seconds_at_least
        );
        for c in &o.costs {
            println!(
                "  {}: {} request(s) at {}/s",
                shown(&c.source_key),
                c.requests_at_least,
                c.rate
            );
        }
    }
    for (export, state) in &o.export_states {
        println!("export {export} is {state}");
    }
    if o.dry_run && pages > 0 {
        println!(
            "to {verb} exactly these: repeat the command without --dry-run, with --follows {}",
            o.audit_id
        );
    }
}

fn params(p: &std::collections::BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = p.iter().map(|(k, v)| format!("{k}={v}")).collect();
    shown(&pairs.join("&"))
}

/// `pagefleet audit ls`.
pub async fn audit(
    client: &ApiClient,
    action: Option<&str>,
    limit: i64,
    json: bool,
) -> Result<u8, Failure> {
    let records = client.audit(action, limit).await?;
    if json {
        print_json(&records);
        return Ok(0);
    }
    println!(
        "{:<36}  {:<26}  {:<20}  {:<4}  ACTOR / OUTCOME",
        "ID", "AT", "ACTION", "DRY"
    );
    for r in records {
        let follows = r
            .follows
            .map_or(String::new(), |f: Uuid| format!("  follows {f}"));
        println!(
            "{:<36}  {:<26}  {:<20}  {:<4}  {}  {}{follows}",
            r.id,
            r.at,
            shown(&r.action),
            if r.dry_run { "yes" } else { "" },
            shown(&r.actor),
            shown(&r.outcome.to_string())
        );
    }
    Ok(0)
}
