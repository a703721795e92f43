//! Replaying and discarding dead letters: the letters a filter matches,
//! what a replay of them would cost (a dry run changes nothing), the
//! replay itself with an operator's edits, and a discard with its reason.
//!
//! One transaction per action, its audit row included. Task rows are
//! locked first and export rows last, the order of a landing, so an action
//! and a landing cannot deadlock. Only dead tasks are replayed or
//! discarded: a page that has landed since is skipped, and an action done
//! twice does nothing the second time.

use std::collections::{BTreeMap, BTreeSet};

use deadpool_postgres::Transaction;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::audit::{self, Actor, AuditEntry};
use super::dead_letters::{at_most, filter_params, DlqFilter, OverBound, FILTER_WHERE};
use super::exports::parse_spec;
use super::splits::{split_into, too_many_partitions};
use super::{Store, StoreError};
use crate::adaptive_rate::UNSTATED_START;
use crate::lifecycle;
use crate::model::{ExportState, TaskState};
use crate::pagination::Role;
use crate::replay_edit::{EditError, ReplayEdits, TaskOverrides, MAX_EDITS};
use crate::spec::{ExportSpec, Split};

/// At most this many letters in one replay or discard.
pub const MAX_LETTERS_PER_ACTION: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    OverBound(#[from] OverBound),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error("the filter matches more than {MAX_LETTERS_PER_ACTION} dead letters; narrow it")]
    TooMany,
    #[error("a replay or discard of every dead letter needs a filter (or `all`)")]
    NoFilter,
    #[error("no dry run {0} of this tenant's")]
    UnknownDryRun(Uuid),
    #[error("dry run {id} was of another action; dry-run this one")]
    OtherDryRun { id: Uuid },
    #[error(
        "the pages this would {action} changed since dry run {id} ({then} then, {now} now); \
         dry-run again"
    )]
    Changed {
        action: &'static str,
        id: Uuid,
        then: usize,
        now: usize,
    },
    #[error("a discard needs a reason")]
    NoReason,
    #[error("a discard changes nothing about a page: `set` is for a replay")]
    EditsOnDiscard,
}

/// A replay or discard as asked.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActionRequest {
    #[serde(default)]
    pub filter: DlqFilter,
    /// Every open letter of the tenant (an empty filter is refused without it).
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub dry_run: bool,
    /// The dry run this follows: its pages must still be the ones matched.
    #[serde(default)]
    pub follows: Option<Uuid>,
    /// Replay only: `key=value` edits (see `replay_edit`).
    #[serde(default)]
    pub set: Vec<String>,
    /// Discard only: why (required).
    #[serde(default)]
    pub reason: Option<String>,
    /// Discard only: the exports may publish without the discarded pages.
    #[serde(default)]
    pub accept_gaps: bool,
}

impl ActionRequest {
    /// The bounds of everything free in it: the filter, the reason, the
    /// edits. Every action checks them, whoever asked.
    pub fn check_bounds(&self) -> Result<(), OverBound> {
        self.filter.check_bounds()?;
        let reason = self.reason.as_ref().map_or(0, String::len);
        at_most("reason", reason, 1000, "characters")?;
        at_most("set", self.set.len(), MAX_EDITS, "edits")?;
        let longest = self.set.iter().map(String::len).max().unwrap_or(0);
        at_most("set", longest, 300, "characters an edit")
    }
}

/// One page the action takes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PlannedPage {
    pub dead_letter: Uuid,
    pub task: Uuid,
    pub export: Uuid,
    pub partition: i32,
    pub page: i64,
    pub class: String,
    /// The two halves of its window, when the replay splits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub split_into: Option<[BTreeMap<String, String>; 2]>,
}

/// A matched letter the action leaves alone, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SkippedLetter {
    pub dead_letter: Uuid,
    pub task: Uuid,
    pub why: String,
}

/// What a replay costs at one source key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SourceCost {
    pub source_key: String,
    /// Requests the replay sends at least (a chain page's later pages
    /// come on top: where its chain leads is known only when it is read).
    pub requests_at_least: u64,
    /// The spec's rate for the key, requests per second.
    pub rate: f64,
    pub seconds_at_least: f64,
}

/// What an action matched and what it did (or, dry, would do).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActionOutcome {
    /// The audit row of this action (a dry run's is what `follows` names).
    pub audit_id: Uuid,
    pub dry_run: bool,
    pub pages: Vec<PlannedPage>,
    pub skipped: Vec<SkippedLetter>,
    pub exports: Vec<Uuid>,
    /// Replay only.
    #[serde(default)]
    pub costs: Vec<SourceCost>,
    #[serde(default)]
    pub requests_at_least: u64,
    /// The longest of the sources' times: they are paced apart.
    #[serde(default)]
    pub seconds_at_least: f64,
    /// The exports' states after the action.
    #[serde(default)]
    pub export_states: BTreeMap<Uuid, ExportState>,
    #[serde(skip)]
    pub outbox_ids: Vec<i64>,
}

/// A matched letter, its task and export, as locked.
struct Matched {
    dead_letter: Uuid,
    task: Uuid,
    export: Uuid,
    partition: i32,
    page: i64,
    role: Role,
    task_state: TaskState,
    class: String,
    source_key: Option<String>,
    overrides: Option<TaskOverrides>,
    /// The partition's query parameters (a backfill window's bounds).
    params: BTreeMap<String, String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Replay,
    Discard,
}

impl Kind {
    fn action(self) -> &'static str {
        match self {
            Kind::Replay => "dlq.replay",
            Kind::Discard => "dlq.discard",
        }
    }
    fn verb(self) -> &'static str {
        match self {
            Kind::Replay => "replay",
            Kind::Discard => "discard",
        }
    }
}

impl Store {
    /// Replays the dead pages a request matches, with its edits; a dry run
    /// only says what it would do. The caller publishes `outbox_ids`.
    pub async fn replay_dead_letters(
        &self,
        actor: &Actor,
        request: &ActionRequest,
    ) -> Result<ActionOutcome, ReplayError> {
        let edits = ReplayEdits::parse(&request.set)?;
        self.act(actor, request, Kind::Replay, &edits).await
    }

    /// Discards the dead pages a request matches, with its reason: each is
    /// a gap in its export, which publishes only once its gaps are accepted.
    pub async fn discard_dead_letters(
        &self,
        actor: &Actor,
        request: &ActionRequest,
    ) -> Result<ActionOutcome, ReplayError> {
        let reason = request.reason.as_deref().map(str::trim).unwrap_or("");
        if reason.is_empty() {
            return Err(ReplayError::NoReason);
        }
        if !request.set.is_empty() {
            return Err(ReplayError::EditsOnDiscard);
        }
        self.act(actor, request, Kind::Discard, &ReplayEdits::default())
            .await
    }

    async fn act(
        &self,
        actor: &Actor,
        request: &ActionRequest,
        kind: Kind,
        edits: &ReplayEdits,
    ) -> Result<ActionOutcome, ReplayError> {
        request.check_bounds()?;
        if request.filter.is_everything() && !request.all {
            return Err(ReplayError::NoFilter);
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        // A dry run reads; only the action itself locks what it takes.
        let lock = !request.dry_run;
        let matched = lock_matched(&tx, &actor.tenant_id, &request.filter, lock).await?;
        if lock && edits.split_window {
            lock_split_windows(&tx, &matched).await?;
        }
        let exports = lock_exports(&tx, &matched, lock).await?;
        let (taken, skipped) = choose(matched, &exports);
        let pages = plan_pages(&taken, &exports, edits)?;
        let digest = action_digest(kind, request, &pages);
        if let Some(id) = request.follows {
            check_follows(&tx, actor, id, kind, &digest, pages.len()).await?;
        }
        let mut outcome = ActionOutcome {
            audit_id: Uuid::nil(),
            dry_run: request.dry_run,
            exports: taken
                .iter()
                .map(|m| m.export)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            costs: Vec::new(),
            requests_at_least: 0,
            seconds_at_least: 0.0,
            export_states: BTreeMap::new(),
            outbox_ids: Vec::new(),
            pages,
            skipped,
        };
        if kind == Kind::Replay {
            outcome.costs = costs(&taken, &outcome.pages, &exports);
            outcome.requests_at_least = outcome.costs.iter().map(|c| c.requests_at_least).sum();
            outcome.seconds_at_least = (outcome.costs.iter())
                .map(|c| c.seconds_at_least)
                .fold(0.0, f64::max);
        }
        if !request.dry_run {
            match kind {
                Kind::Replay => replay_pages(&tx, actor, &taken, &mut outcome, edits).await?,
                Kind::Discard => {
                    let reason = request.reason.as_deref().unwrap_or("").trim();
                    discard_pages(&tx, actor, &taken, reason, request.accept_gaps).await?;
                }
            }
            resolve_landed(&tx, actor, &outcome.skipped).await?;
            for export in outcome.exports.clone() {
                let (state, outbox) = settle(&tx, export).await?;
                outcome.export_states.insert(export, state);
                outcome.outbox_ids.extend(outbox);
            }
        }
        outcome.audit_id = audit::record(
            &tx,
            &AuditEntry {
                actor,
                action: kind.action(),
                dry_run: request.dry_run,
                target: audit_target(request, &digest),
                follows: request.follows,
                outcome: audit_outcome(&outcome),
            },
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(outcome)
    }
}

/// The matched open letters with their tasks, the task rows locked.
async fn lock_matched(
    tx: &Transaction<'_>,
    tenant_id: &str,
    filter: &DlqFilter,
    lock: bool,
) -> Result<Vec<Matched>, ReplayError> {
    let filter = DlqFilter {
        include_resolved: false,
        ..filter.clone()
    };
    let values = filter_params(tenant_id, &filter);
    let mut params = values.params();
    let cap = MAX_LETTERS_PER_ACTION as i64 + 1;
    params.push(&cap);
    let rows = tx
        .query(
            &format!(
                "SELECT d.id, d.task_id, d.export_id, t.partition_no, t.page_no, t.role, t.state,
                        d.class, d.source_key, t.overrides, p.params
                   FROM dead_letters d JOIN page_tasks t ON t.id = d.task_id
                   JOIN partitions p ON p.export_id = t.export_id AND p.partition_no = t.partition_no
                  WHERE {FILTER_WHERE}
                  ORDER BY t.id LIMIT $11 {}",
                if lock { "FOR UPDATE OF t" } else { "" }
            ),
            &params,
        )
        .await
        .map_err(StoreError::from)?;
    if rows.len() > MAX_LETTERS_PER_ACTION {
        return Err(ReplayError::TooMany);
    }
    rows.iter().map(matched_from_row).collect()
}

fn matched_from_row(r: &tokio_postgres::Row) -> Result<Matched, ReplayError> {
    let role: String = r.try_get("role").map_err(StoreError::from)?;
    let state: String = r.try_get("state").map_err(StoreError::from)?;
    let export: Uuid = r.try_get("export_id").map_err(StoreError::from)?;
    let overrides: Option<serde_json::Value> = r.try_get("overrides").map_err(StoreError::from)?;
    let overrides = overrides
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| StoreError::Corrupt {
            what: "task overrides",
            export_id: export,
            message: e.to_string(),
        })?;
    let params: serde_json::Value = r.try_get("params").map_err(StoreError::from)?;
    let params = serde_json::from_value(params).map_err(|e| StoreError::Corrupt {
        what: "partition params",
        export_id: export,
        message: e.to_string(),
    })?;
    let get = |e| ReplayError::Store(StoreError::from(e));
    Ok(Matched {
        params,
        dead_letter: r.try_get("id").map_err(get)?,
        task: r.try_get("task_id").map_err(get)?,
        export,
        partition: r.try_get("partition_no").map_err(get)?,
        page: r.try_get("page_no").map_err(get)?,
        role: role.parse().map_err(StoreError::from)?,
        task_state: state.parse().map_err(StoreError::from)?,
        class: r.try_get("class").map_err(get)?,
        source_key: r.try_get("source_key").map_err(get)?,
        overrides,
    })
}

/// The matched letters' exports, locked (after their tasks), with their
/// states and specs.
/// Every dead or discarded page of the windows a replay splits, locked
/// before the exports (the split supersedes them all).
async fn lock_split_windows(tx: &Transaction<'_>, matched: &[Matched]) -> Result<(), StoreError> {
    let exports: Vec<Uuid> = matched.iter().map(|m| m.export).collect();
    let partitions: Vec<i32> = matched.iter().map(|m| m.partition).collect();
    tx.query(
        "SELECT t.id FROM page_tasks t
           JOIN unnest($1::uuid[], $2::int4[]) AS w(export_id, partition_no)
             ON t.export_id = w.export_id AND t.partition_no = w.partition_no
          WHERE t.state IN ('dead', 'discarded')
          ORDER BY t.id FOR UPDATE OF t",
        &[&exports, &partitions],
    )
    .await?;
    Ok(())
}

async fn lock_exports(
    tx: &Transaction<'_>,
    matched: &[Matched],
    lock: bool,
) -> Result<BTreeMap<Uuid, (ExportState, ExportSpec)>, ReplayError> {
    let ids: Vec<Uuid> = (matched.iter().map(|m| m.export))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let rows = tx
        .query(
            &format!(
                "SELECT id, state, spec FROM exports WHERE id = ANY($1) ORDER BY id {}",
                if lock { "FOR UPDATE" } else { "" }
            ),
            &[&ids],
        )
        .await
        .map_err(StoreError::from)?;
    let mut exports = BTreeMap::new();
    for row in rows {
        let id: Uuid = row.try_get("id").map_err(StoreError::from)?;
        let state: String = row.try_get("state").map_err(StoreError::from)?;
        let spec = parse_spec(id, row.try_get("spec").map_err(StoreError::from)?)?;
        exports.insert(id, (state.parse().map_err(StoreError::from)?, spec));
    }
    Ok(exports)
}

/// The letters whose page is still dead in an export that may go on; the
/// rest are skipped with the reason.
fn choose(
    matched: Vec<Matched>,
    exports: &BTreeMap<Uuid, (ExportState, ExportSpec)>,
) -> (Vec<Matched>, Vec<SkippedLetter>) {
    let mut taken = Vec::new();
    let mut skipped = Vec::new();
    for m in matched {
        let state = exports.get(&m.export).map(|(s, _)| *s);
        let why = match (m.task_state, state) {
            (_, Some(s)) if s.is_terminal() => Some(format!("its export is {s}")),
            (TaskState::Dead, _) => None,
            (TaskState::Done, _) => Some("the page has landed since".to_string()),
            (other, _) => Some(format!("the page is {other}, not dead")),
        };
        match why {
            Some(why) => skipped.push(SkippedLetter {
                dead_letter: m.dead_letter,
                task: m.task,
                why,
            }),
            None => taken.push(m),
        }
    }
    (taken, skipped)
}

/// Each taken page with its edits checked against it; one that does not
/// fit refuses the whole action.
fn plan_pages(
    taken: &[Matched],
    exports: &BTreeMap<Uuid, (ExportState, ExportSpec)>,
    edits: &ReplayEdits,
) -> Result<Vec<PlannedPage>, ReplayError> {
    taken
        .iter()
        .map(|m| {
            let spec = exports.get(&m.export).map(|(_, spec)| spec);
            let split_into = match (edits.split_window, spec) {
                (true, Some(spec)) => Some(halves(m, spec)?),
                _ => None,
            };
            if let Some(spec) = spec {
                let is_chain = m.role == Role::Chain;
                edits
                    .overrides
                    .check_for(spec, is_chain, m.partition, m.page)?;
            }
            Ok(PlannedPage {
                dead_letter: m.dead_letter,
                task: m.task,
                export: m.export,
                partition: m.partition,
                page: m.page,
                class: m.class.clone(),
                split_into,
            })
        })
        .collect()
}

/// The halves of a backfill window's first page.
fn halves(m: &Matched, spec: &ExportSpec) -> Result<[BTreeMap<String, String>; 2], EditError> {
    let refuse = |why: &str| EditError::NotForPage {
        partition: m.partition,
        page: m.page,
        why: why.into(),
    };
    let Some(backfill) = &spec.backfill else {
        return Err(refuse(
            "`window=split` needs a [backfill] export: its partitions are windows",
        ));
    };
    backfill.halve(&m.params).ok_or_else(|| {
        refuse("its window cannot be halved: a half would be shorter than `min_window`")
    })
}

/// What the replay costs per source key, at the specs' rates (a spec that
/// states none at the rate learning starts from): one request a page, two for a window split (each half's first page), once a window.
fn costs(
    taken: &[Matched],
    pages: &[PlannedPage],
    exports: &BTreeMap<Uuid, (ExportState, ExportSpec)>,
) -> Vec<SourceCost> {
    let mut by_key: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    let mut split = BTreeSet::new();
    for (m, page) in taken.iter().zip(pages) {
        let rate = exports
            .get(&m.export)
            .and_then(|(_, s)| s.rate_limit.rate)
            .unwrap_or(UNSTATED_START);
        let key = m.source_key.clone().unwrap_or_else(|| "unknown".into());
        let requests = match &page.split_into {
            Some(_) if split.insert((m.export, m.partition)) => 2,
            Some(_) => 0,
            None => 1,
        };
        let entry = by_key.entry(key).or_insert((0, rate));
        entry.0 += requests;
        // Exports sharing a key share its budget: the slowest rate bounds it.
        entry.1 = entry.1.min(rate);
    }
    by_key
        .into_iter()
        .map(|(source_key, (requests, rate))| SourceCost {
            source_key,
            requests_at_least: requests,
            rate,
            seconds_at_least: if rate > 0.0 {
                requests as f64 / rate
            } else {
                0.0
            },
        })
        .collect()
}

/// Names what an action does (its kind, edits, reason, acceptance) and the
/// pages it takes, so a later action can check that it does what its dry
/// run showed.
fn action_digest(kind: Kind, request: &ActionRequest, pages: &[PlannedPage]) -> String {
    let mut hash = Sha256::new();
    hash.update(kind.action());
    for part in [
        request.set.join("\n").as_str(),
        request.reason.as_deref().unwrap_or(""),
    ] {
        hash.update(b"\0");
        hash.update(part.trim());
    }
    hash.update([u8::from(request.accept_gaps)]);
    for page in pages {
        hash.update(page.task.as_bytes());
    }
    crate::spec::hex(&hash.finalize()[..16])
}

async fn check_follows(
    tx: &Transaction<'_>,
    actor: &Actor,
    id: Uuid,
    kind: Kind,
    digest: &str,
    now: usize,
) -> Result<(), ReplayError> {
    let row = tx
        .query_opt(
            "SELECT action, dry_run, target->>'pages_digest' AS digest,
                    jsonb_array_length(outcome->'pages') AS pages
               FROM audit_log WHERE id = $1 AND tenant_id = $2",
            &[&id, &actor.tenant_id],
        )
        .await
        .map_err(StoreError::from)?;
    let Some(row) = row else {
        return Err(ReplayError::UnknownDryRun(id));
    };
    let action: String = row.try_get("action").map_err(StoreError::from)?;
    let dry: bool = row.try_get("dry_run").map_err(StoreError::from)?;
    if action != kind.action() || !dry {
        return Err(ReplayError::OtherDryRun { id });
    }
    let then_digest: Option<String> = row.try_get("digest").map_err(StoreError::from)?;
    if then_digest.as_deref() != Some(digest) {
        let then: Option<i32> = row.try_get("pages").map_err(StoreError::from)?;
        return Err(ReplayError::Changed {
            action: kind.verb(),
            id,
            then: then.unwrap_or(0).max(0) as usize,
            now,
        });
    }
    Ok(())
}

/// Puts the pages back in the queue (or splits their windows), with the
/// edits on their tasks, and resolves their letters.
async fn replay_pages(
    tx: &Transaction<'_>,
    actor: &Actor,
    taken: &[Matched],
    outcome: &mut ActionOutcome,
    edits: &ReplayEdits,
) -> Result<(), ReplayError> {
    let mut split = BTreeSet::new();
    for (m, page) in taken.iter().zip(outcome.pages.iter()) {
        let overrides = (!edits.overrides.is_empty())
            .then(|| edits.overrides.over(m.overrides.as_ref()))
            .or_else(|| m.overrides.clone());
        let overrides = overrides
            .map(|o| serde_json::to_value(&o))
            .transpose()
            .map_err(|e| StoreError::Corrupt {
                what: "task overrides",
                export_id: m.export,
                message: e.to_string(),
            })?;
        if let Some(halves) = &page.split_into {
            // A window splits once, whichever of its dead pages asked; the
            // halves take the edits from the page it splits on.
            if split.insert((m.export, m.partition)) {
                set_overrides(tx, m.task, &overrides).await?;
                let outbox = split_window(tx, actor, m, halves).await?;
                outcome.outbox_ids.extend(outbox);
            }
            continue;
        }
        requeue(tx, m.task, &overrides).await?;
        outcome
            .outbox_ids
            .push(write_page_message(tx, m.export, m.task).await?);
    }
    let tasks: Vec<Uuid> = taken.iter().map(|m| m.task).collect();
    tx.execute(
        "UPDATE dead_letters SET resolved_at = now(), resolution = 'replayed', resolved_by = $2
          WHERE task_id = ANY($1) AND resolved_at IS NULL",
        &[&tasks, &actor.name],
    )
    .await
    .map_err(StoreError::from)?;
    Ok(())
}

async fn set_overrides(
    tx: &Transaction<'_>,
    task: Uuid,
    overrides: &Option<serde_json::Value>,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE page_tasks SET overrides = $2 WHERE id = $1",
        &[&task, overrides],
    )
    .await?;
    Ok(())
}

/// A dead task queued again, its failures forgotten, with its overrides.
async fn requeue(
    tx: &Transaction<'_>,
    task: Uuid,
    overrides: &Option<serde_json::Value>,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE page_tasks SET state = 'queued', deliveries = 0, last_error = NULL,
                failures = 0, first_failure_at = NULL, not_before = NULL, lost_claims = 0,
                attempt_log = '[]', overrides = $2, updated_at = now()
          WHERE id = $1 AND state = 'dead'",
        &[&task, overrides],
    )
    .await?;
    Ok(())
}

async fn write_page_message(
    tx: &Transaction<'_>,
    export: Uuid,
    task: Uuid,
) -> Result<i64, StoreError> {
    Ok(tx
        .query_one(
            "INSERT INTO outbox (queue, body) VALUES ('pages', pagefleet_page_message($1, $2))
             RETURNING id",
            &[&export, &task],
        )
        .await?
        .try_get("id")?)
}

/// Splits a dead window's partition in two: the window is read again
/// whole, as two partitions with a first page each. Its dead pages are
/// done (they stage nothing, and the split partition is left out of the
/// reconciliation); rows its landed pages staged are delivered again by
/// the halves and merge by key. Refused while a page of the window is
/// still queued or in flight.
async fn split_window(
    tx: &Transaction<'_>,
    actor: &Actor,
    m: &Matched,
    halves: &[BTreeMap<String, String>; 2],
) -> Result<Vec<i64>, ReplayError> {
    let refuse = |why: String| EditError::NotForPage {
        partition: m.partition,
        page: m.page,
        why,
    };
    let open: i64 = tx
        .query_one(
            "SELECT count(*) AS open FROM page_tasks
              WHERE export_id = $1 AND partition_no = $2 AND state IN ('queued', 'in_flight')",
            &[&m.export, &m.partition],
        )
        .await
        .map_err(StoreError::from)?
        .try_get("open")
        .map_err(StoreError::from)?;
    if open > 0 {
        return Err(refuse(format!(
            "its window still has {open} page(s) queued or in flight: split it once they settle"
        ))
        .into());
    }
    let split = Split {
        halves: halves.clone(),
        reason: format!(
            "split on replay by {} (page {} dead-lettered)",
            actor.name, m.page
        ),
    };
    let outbox = split_into(tx, m.task, m.export, &actor.tenant_id, m.partition, &split)
        .await?
        .ok_or_else(|| refuse(too_many_partitions()))?;
    let superseded: Vec<Uuid> = tx
        .query(
            "UPDATE page_tasks SET state = 'done', records = 0, updated_at = now()
              WHERE export_id = $1 AND partition_no = $2 AND state IN ('dead', 'discarded')
          RETURNING id",
            &[&m.export, &m.partition],
        )
        .await
        .map_err(StoreError::from)?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()
        .map_err(StoreError::from)?;
    tx.execute(
        "UPDATE dead_letters SET resolved_at = now(), resolution = 'replayed', resolved_by = $2,
                resolution_reason = 'window split'
          WHERE task_id = ANY($1) AND resolved_at IS NULL",
        &[&superseded, &actor.name],
    )
    .await
    .map_err(StoreError::from)?;
    tx.execute(
        "UPDATE exports SET pages_planned = pages_planned + 2, pages_landed = pages_landed + $2
          WHERE id = $1",
        &[&m.export, &(superseded.len() as i64)],
    )
    .await
    .map_err(StoreError::from)?;
    Ok(outbox)
}

/// Gives the pages up: each is a gap (counted as settled, so the export
/// can finish once its gaps are accepted), its chain planned no further.
async fn discard_pages(
    tx: &Transaction<'_>,
    actor: &Actor,
    taken: &[Matched],
    reason: &str,
    accept_gaps: bool,
) -> Result<(), StoreError> {
    let tasks: Vec<Uuid> = taken.iter().map(|m| m.task).collect();
    tx.execute(
        "UPDATE page_tasks SET state = 'discarded', gap_accepted = $2, updated_at = now()
          WHERE id = ANY($1) AND state = 'dead'",
        &[&tasks, &accept_gaps],
    )
    .await?;
    tx.execute(
        "UPDATE partitions p SET planned_all = true
           FROM page_tasks t
          WHERE t.id = ANY($1) AND p.export_id = t.export_id AND p.partition_no = t.partition_no",
        &[&tasks],
    )
    .await?;
    tx.execute(
        "UPDATE exports e SET pages_landed = pages_landed + n.n, updated_at = now()
           FROM (SELECT export_id, count(*) AS n FROM page_tasks WHERE id = ANY($1)
                  GROUP BY export_id) n
          WHERE e.id = n.export_id",
        &[&tasks],
    )
    .await?;
    tx.execute(
        "UPDATE dead_letters SET resolved_at = now(), resolution = 'discarded', resolved_by = $2,
                resolution_reason = $3
          WHERE task_id = ANY($1) AND resolved_at IS NULL",
        &[&tasks, &actor.name, &reason],
    )
    .await?;
    Ok(())
}

/// Letters whose page landed since: resolved, saying so.
async fn resolve_landed(
    tx: &Transaction<'_>,
    actor: &Actor,
    skipped: &[SkippedLetter],
) -> Result<(), StoreError> {
    let letters: Vec<Uuid> = skipped.iter().map(|s| s.dead_letter).collect();
    tx.execute(
        "UPDATE dead_letters d SET resolved_at = now(), resolution = 'landed_since', resolved_by = $2
           FROM page_tasks t
          WHERE d.id = ANY($1) AND t.id = d.task_id AND t.state = 'done' AND d.resolved_at IS NULL",
        &[&letters, &actor.name],
    )
    .await?;
    Ok(())
}

/// Moves a blocked export on once its dead pages are settled (see
/// `lifecycle::fetching_state`): to `finalizing` (with its finalize
/// message) when every page has landed, else `running`. Returns its state
/// and the outbox id of the finalize message.
pub(super) async fn settle(
    tx: &Transaction<'_>,
    export: Uuid,
) -> Result<(ExportState, Option<i64>), StoreError> {
    let row = tx
        .query_one(
            "SELECT e.state,
                    EXISTS (SELECT 1 FROM page_tasks t WHERE t.export_id = e.id AND t.state = 'dead')
                        AS dead,
                    NOT pagefleet_gaps_settled(e.id) AS unaccepted_gaps,
                    e.pages_landed >= e.pages_planned
                      AND NOT EXISTS (SELECT 1 FROM partitions p
                                       WHERE p.export_id = e.id AND NOT p.planned_all) AS all_landed
               FROM exports e WHERE e.id = $1",
            &[&export],
        )
        .await?;
    let state: ExportState = row.try_get::<_, String>("state")?.parse()?;
    if state != ExportState::Blocked {
        return Ok((state, None));
    }
    let next = lifecycle::fetching_state(row.try_get("dead")?, row.try_get("unaccepted_gaps")?);
    let all_landed: bool = row.try_get("all_landed")?;
    if next == ExportState::Running && all_landed {
        tx.execute(
            "UPDATE exports SET state = 'finalizing', updated_at = now() WHERE id = $1",
            &[&export],
        )
        .await?;
        let id: i64 = tx
            .query_one(
                "INSERT INTO outbox (queue, body) VALUES ('finalize', pagefleet_finalize_message($1))
                 RETURNING id",
                &[&export],
            )
            .await?
            .try_get("id")?;
        return Ok((ExportState::Finalizing, Some(id)));
    }
    tx.execute(
        "UPDATE exports SET state = $2, updated_at = now() WHERE id = $1",
        &[&export, &next.as_str()],
    )
    .await?;
    Ok((next, None))
}

fn audit_target(request: &ActionRequest, digest: &str) -> serde_json::Value {
    serde_json::json!({
        "filter": request.filter,
        "all": request.all,
        "set": request.set,
        "reason": request.reason,
        "accept_gaps": request.accept_gaps,
        "pages_digest": digest,
    })
}

fn audit_outcome(outcome: &ActionOutcome) -> serde_json::Value {
    serde_json::json!({
        "pages": outcome.pages.iter().map(|p| p.task).collect::<Vec<_>>(),
        "skipped": outcome.skipped.len(),
        "exports": outcome.export_states,
        "requests_at_least": outcome.requests_at_least,
    })
}
