//! Reconciliation: what the source said it holds against what its pages
//! delivered, decided before a CSV may take its final path.
//!
//! The ledger of each partition ([`PartitionLedger`]) is what Postgres
//! recorded as pages landed: records and pages delivered, and every count
//! the source stated, by origin, with the values it took. [`reconcile`]
//! turns the ledgers into a [`Verification`]: every check made, whether it
//! held, and in words what disagreed. An export whose checks all hold is
//! complete as far as the source can tell; one with no count to check
//! against says so (`none_stated`) rather than claiming anything.
//!
//! Data that moves while it is read shows as a stated count that changed.
//! Under a style whose positions are keys that costs nothing; under one
//! whose positions count records (offset, page number) a delete shifts
//! records into pages already read, so the partition is read again
//! backwards ([`to_reread`]): a record can only move towards the start, and
//! a walk from the last page to the first cannot be outrun by it. A count
//! that moved is then held to the band it moved in, not to one value.

use serde::{Deserialize, Serialize};

use crate::pagination::totals::preferred;
use crate::pagination::{Counts, UnderDrift};

/// What one partition's landed pages add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLedger {
    pub partition_no: i32,
    pub pages_landed: u64,
    /// Landed pages that held at least one record.
    pub pages_with_records: u64,
    pub records_delivered: u64,
    /// Landed pages whose records were not recorded (landed before the
    /// ledger existed): such a partition cannot be checked.
    pub unrecorded_pages: u64,
    /// The sentinel page past the stated end, when there was a fan-out.
    pub sentinel: Sentinel,
    /// Pages the backward pass re-read, once one was planned (the
    /// delivered counts above are the first pass's alone).
    pub reread_pages: Option<u64>,
    pub stated: Vec<StatedRange>,
}

/// The sentinel pages of a partition (one per fan-out) and the records
/// they held, which should be none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sentinel {
    pub pages: u64,
    pub records: u64,
}

/// The values one origin stated for one count across a partition's pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatedRange {
    pub counts: Counts,
    pub origin: String,
    /// On the partition's first page that stated it, and on its latest.
    pub first: u64,
    pub last: u64,
    pub min: u64,
    pub max: u64,
}

/// The outcome of a reconciliation, as manifests and statuses show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub status: VerificationStatus,
    /// The records the source stated, over every partition (when each
    /// partition stated a count).
    pub source_total: Option<u64>,
    /// Rows in the file.
    pub rows: u64,
    pub checks: Vec<Check>,
    /// Partitions nothing could be checked in, when others were checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchecked_partitions: Vec<i32>,
    /// Pages read a second time by backward passes: the extra requests
    /// moving data cost.
    #[serde(default)]
    pub reread_pages: u64,
    /// What disagreed, in one sentence, when anything did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortfall: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationStatus {
    /// Every count the source stated agrees with what was delivered.
    Agreed,
    /// At least one does not.
    Mismatch,
    /// The source stated no count: nothing could be checked.
    NoneStated,
}

/// One comparison of a stated count with a delivered one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// `None` for a check over the whole export.
    pub partition: Option<i32>,
    pub check: CheckKind,
    pub origin: String,
    pub stated: u64,
    pub observed: u64,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// Records stated against records the partition's pages delivered.
    Records,
    /// Pages stated against the partition's pages that held records.
    Pages,
    /// The stated count did not change while the partition was read.
    Stable,
    /// It changed, and that was made good (a backward pass) or cannot
    /// harm this style.
    Drift,
    /// Rows in the file against the records stated over all partitions.
    Rows,
    /// The page past the stated end came back empty.
    Sentinel,
}

impl Verification {
    pub fn agreed(&self) -> bool {
        self.status != VerificationStatus::Mismatch
    }

    /// Whether the disagreement is more than the accepted gaps explain: a
    /// failed check of a partition without a gap. (The checks over the
    /// whole export fail with any gap, so they are the gaps' to explain.)
    pub fn fails_beyond(&self, gap_partitions: &std::collections::BTreeSet<i32>) -> bool {
        (self.checks.iter())
            .filter(|c| !c.ok)
            .any(|c| c.partition.is_some_and(|p| !gap_partitions.contains(&p)))
    }
}

/// The partitions to read again backwards: their stated counts moved, the
/// style's positions shift, and no backward pass ran yet.
pub fn to_reread(ledgers: &[PartitionLedger], under_drift: UnderDrift) -> Vec<i32> {
    if under_drift != UnderDrift::Shifts {
        return Vec::new();
    }
    ledgers
        .iter()
        .filter(|l| l.reread_pages.is_none() && l.stated.iter().any(StatedRange::moved))
        .map(|l| l.partition_no)
        .collect()
}

impl StatedRange {
    fn moved(&self) -> bool {
        self.min != self.max
    }

    fn spread(&self) -> u64 {
        self.max - self.min
    }

    /// Whether `n` is within what this count may mean: its one value, or,
    /// when it moved, the band it moved in widened by as much again (a
    /// delete and an insert in the same place leave the count alone).
    fn admits(&self, n: u64) -> bool {
        // A count that did not move has no spread: the band is its value.
        let spread = self.spread();
        (self.min.saturating_sub(spread)..=self.max.saturating_add(spread)).contains(&n)
    }
}

/// Checks every stated count against what was delivered, and the file's
/// `rows` against the total over all partitions.
pub fn reconcile(ledgers: &[PartitionLedger], rows: u64, under_drift: UnderDrift) -> Verification {
    let mut checks: Vec<Check> = ledgers
        .iter()
        .flat_map(|l| partition_checks(l, under_drift))
        .collect();
    let total = source_total(ledgers);
    if let Some(total) = &total {
        checks.push(rows_check(total, rows));
    }
    let unchecked_partitions = if checks.is_empty() {
        Vec::new()
    } else {
        let checked = |p: i32| checks.iter().any(|c| c.partition == Some(p));
        (ledgers.iter().map(|l| l.partition_no))
            .filter(|&p| !checked(p))
            .collect()
    };
    let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
    let status = match (checks.is_empty(), failed.is_empty()) {
        (true, _) => VerificationStatus::NoneStated,
        (false, true) => VerificationStatus::Agreed,
        (false, false) => VerificationStatus::Mismatch,
    };
    let shortfall = failed.first().map(|first| match failed.len() {
        1 => first.detail.clone(),
        n => format!("{} (and {} more failed checks)", first.detail, n - 1),
    });
    Verification {
        status,
        source_total: total.map(|t| t.last),
        rows,
        checks,
        unchecked_partitions,
        reread_pages: ledgers.iter().filter_map(|l| l.reread_pages).sum(),
        shortfall,
    }
}

fn partition_checks(ledger: &PartitionLedger, under_drift: UnderDrift) -> Vec<Check> {
    let mut checks = Vec::new();
    if ledger.unrecorded_pages > 0 {
        return checks;
    }
    for stated in &ledger.stated {
        if stated.moved() {
            checks.push(drift_check(ledger, stated, under_drift));
        }
        checks.push(match stated.counts {
            Counts::Records => records_check(ledger, stated),
            Counts::Pages => pages_check(ledger, stated),
        });
    }
    if ledger.sentinel.pages > 0 {
        checks.push(sentinel_check(ledger));
    }
    checks
}

/// Records past the stated end mean the count was too low, unless the
/// count moved (records inserted at the end while it was read).
fn sentinel_check(ledger: &PartitionLedger) -> Check {
    let partition = ledger.partition_no;
    let held = ledger.sentinel.records;
    let moved = ledger.stated.iter().any(StatedRange::moved);
    Check {
        partition: Some(partition),
        check: CheckKind::Sentinel,
        origin: "the page past the stated end".into(),
        stated: 0,
        observed: held,
        ok: held == 0 || moved,
        detail: format!(
            "partition {partition}: the page past the stated end held {held} records{}",
            if held > 0 && !moved {
                "; the stated count is too low"
            } else {
                ""
            }
        ),
    }
}

/// A count that moved: made good by a backward pass, harmless to keys, or
/// a failure.
fn drift_check(ledger: &PartitionLedger, stated: &StatedRange, under_drift: UnderDrift) -> Check {
    let partition = ledger.partition_no;
    let moved = format!(
        "partition {partition}: the {} count in {} changed while it was read \
         (first {}, last {}, between {} and {})",
        stated.counts.as_str(),
        stated.origin,
        stated.first,
        stated.last,
        stated.min,
        stated.max
    );
    let plausible = stated.spread().saturating_mul(10) <= stated.max;
    let (check, ok, outcome) = match (ledger.reread_pages, under_drift) {
        _ if !plausible => (
            CheckKind::Stable,
            false,
            ": it moved by more than a tenth, which is not data moving but a count \
             that cannot be trusted"
                .to_string(),
        ),
        (Some(pages), _) if pages > 0 => (
            CheckKind::Drift,
            true,
            format!(
                "; {pages} pages were read again, last first, so no record that \
                 existed throughout was missed"
            ),
        ),
        (_, UnderDrift::Immune) => (
            CheckKind::Drift,
            true,
            "; this style's positions are keys, which moving data does not shift".to_string(),
        ),
        _ => (
            CheckKind::Stable,
            false,
            ": the data moved during the export, and records may have shifted past a page"
                .to_string(),
        ),
    };
    Check {
        partition: Some(partition),
        check,
        origin: stated.origin.clone(),
        stated: stated.first,
        observed: stated.last,
        ok,
        detail: format!("{moved}{outcome}"),
    }
}

fn records_check(ledger: &PartitionLedger, stated: &StatedRange) -> Check {
    let (partition, delivered) = (ledger.partition_no, ledger.records_delivered);
    let ok = stated.admits(delivered);
    let why = if delivered < stated.last {
        "; records are missing (did the first request need a page parameter, \
         or did the source stop early?)"
    } else if delivered > stated.last {
        "; the source served more than it stated"
    } else {
        ""
    };
    Check {
        partition: Some(partition),
        check: CheckKind::Records,
        origin: stated.origin.clone(),
        stated: stated.last,
        observed: delivered,
        ok,
        detail: format!(
            "partition {partition}: {} stated {} records, its pages delivered {delivered}{why}",
            stated.origin, stated.last
        ),
    }
}

fn pages_check(ledger: &PartitionLedger, stated: &StatedRange) -> Check {
    let (partition, delivered) = (ledger.partition_no, ledger.pages_with_records);
    // An empty partition may be stated as one (empty) page.
    let ok = stated.admits(delivered) || (delivered == 0 && stated.last <= 1);
    Check {
        partition: Some(partition),
        check: CheckKind::Pages,
        origin: stated.origin.clone(),
        stated: stated.last,
        observed: delivered,
        ok,
        detail: format!(
            "partition {partition}: {} stated {} pages, {delivered} pages held records",
            stated.origin, stated.last
        ),
    }
}

fn rows_check(total: &StatedRange, rows: u64) -> Check {
    let stated = total.last;
    Check {
        partition: None,
        check: CheckKind::Rows,
        origin: "all partitions".into(),
        stated,
        observed: rows,
        ok: total.admits(rows),
        detail: format!(
            "the source stated {stated} records over all partitions; the file holds {rows} rows"
        ),
    }
}

/// The records stated over every partition, when each stated a count:
/// the first origin's values (the body's before headers), summed.
fn source_total(ledgers: &[PartitionLedger]) -> Option<StatedRange> {
    let mut sum = StatedRange {
        counts: Counts::Records,
        origin: "all partitions".into(),
        first: 0,
        last: 0,
        min: 0,
        max: 0,
    };
    for ledger in ledgers {
        let records = ledger.stated.iter().filter(|s| s.counts == Counts::Records);
        let one = preferred(records, |s| &s.origin)?;
        sum.first = sum.first.saturating_add(one.first);
        sum.last = sum.last.saturating_add(one.last);
        sum.min = sum.min.saturating_add(one.min);
        sum.max = sum.max.saturating_add(one.max);
    }
    (!ledgers.is_empty()).then_some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stated(counts: Counts, origin: &str, values: (u64, u64, u64, u64)) -> StatedRange {
        let (first, last, min, max) = values;
        StatedRange {
            counts,
            origin: origin.into(),
            first,
            last,
            min,
            max,
        }
    }

    fn steady(counts: Counts, origin: &str, value: u64) -> StatedRange {
        stated(counts, origin, (value, value, value, value))
    }

    fn ledger(records: u64, pages: u64, stated: Vec<StatedRange>) -> PartitionLedger {
        PartitionLedger {
            partition_no: 0,
            pages_landed: pages + 1,
            pages_with_records: pages,
            records_delivered: records,
            unrecorded_pages: 0,
            sentinel: Sentinel::default(),
            reread_pages: None,
            stated,
        }
    }

    #[test]
    fn agreeing_counts_are_agreed_and_every_check_is_listed() {
        let l = ledger(
            1000,
            10,
            vec![
                steady(Counts::Records, "body total", 1000),
                steady(Counts::Records, "header X-Total-Count", 1000),
                steady(Counts::Pages, "body total_pages", 10),
            ],
        );
        let v = reconcile(&[l], 1000, UnderDrift::Shifts);
        assert_eq!(v.status, VerificationStatus::Agreed);
        assert_eq!(v.source_total, Some(1000));
        let kinds: Vec<CheckKind> = v.checks.iter().map(|c| c.check).collect();
        use CheckKind::*;
        assert_eq!(kinds, [Records, Records, Pages, Rows]);
        assert!(v.checks.iter().all(|c| c.ok));
        assert_eq!(v.shortfall, None);
        assert!(v.agreed());
    }

    #[test]
    fn a_shortfall_is_named_with_its_origin() {
        // json-server without a page parameter: one page of 500, and
        // X-Total-Count says 336776.
        let l = ledger(
            500,
            1,
            vec![steady(Counts::Records, "header X-Total-Count", 336776)],
        );
        let v = reconcile(&[l], 500, UnderDrift::Unknown);
        assert_eq!(v.status, VerificationStatus::Mismatch);
        assert!(!v.agreed());
        let shortfall = v.shortfall.unwrap();
        assert!(
            shortfall.starts_with(
                "partition 0: header X-Total-Count stated 336776 records, its pages delivered 500; records are missing"
            ),
            "{shortfall}"
        );
        assert!(
            shortfall.ends_with("(and 1 more failed checks)"),
            "{shortfall}"
        );
    }

    #[test]
    fn more_records_than_stated_is_a_mismatch_too() {
        // The sentinel page past a total that was too low held records.
        let l = ledger(1010, 11, vec![steady(Counts::Records, "body total", 1000)]);
        let v = reconcile(&[l], 1010, UnderDrift::Shifts);
        assert_eq!(v.status, VerificationStatus::Mismatch);
        assert!(v.checks[0].detail.contains("served more than it stated"));
    }

    #[test]
    fn a_count_that_moved_fails_the_stable_check() {
        let l = ledger(
            20003,
            201,
            vec![stated(
                Counts::Records,
                "body total",
                (20000, 20003, 19999, 20004),
            )],
        );
        let v = reconcile(&[l], 20003, UnderDrift::Shifts);
        assert_eq!(v.status, VerificationStatus::Mismatch);
        let stable = &v.checks[0];
        assert_eq!(stable.check, CheckKind::Stable);
        assert!(!stable.ok);
        assert!(
            stable.detail.contains("changed while it was read"),
            "{}",
            stable.detail
        );
        // The latest count is what the deliveries are held to.
        assert!(v.checks[1].ok);
    }

    #[test]
    fn duplicates_across_pages_show_in_the_rows_check() {
        let l = ledger(100, 1, vec![steady(Counts::Records, "body total", 100)]);
        let v = reconcile(&[l], 98, UnderDrift::Shifts);
        assert_eq!(v.status, VerificationStatus::Mismatch);
        let rows = v.checks.last().unwrap();
        assert_eq!(
            (rows.check, rows.partition, rows.ok),
            (CheckKind::Rows, None, false)
        );
    }

    #[test]
    fn nothing_stated_is_said_so() {
        let v = reconcile(&[ledger(42, 1, vec![])], 42, UnderDrift::Shifts);
        assert_eq!(v.status, VerificationStatus::NoneStated);
        assert!(v.checks.is_empty());
        assert_eq!(v.source_total, None);
        assert!(v.agreed(), "nothing disagrees, though nothing was proven");
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["status"], "none_stated");
    }

    #[test]
    fn a_total_over_partitions_needs_every_partition() {
        let mut second = ledger(5, 1, vec![]);
        second.partition_no = 1;
        let first = ledger(10, 1, vec![steady(Counts::Records, "body total", 10)]);
        let v = reconcile(&[first.clone(), second], 15, UnderDrift::Shifts);
        assert_eq!(v.source_total, None, "partition 1 stated nothing");
        assert_eq!(v.status, VerificationStatus::Agreed);
        let mut stated_too = ledger(5, 1, vec![steady(Counts::Records, "body total", 5)]);
        stated_too.partition_no = 1;
        assert_eq!(
            reconcile(&[first, stated_too], 15, UnderDrift::Shifts).source_total,
            Some(15)
        );
    }

    #[test]
    fn an_empty_partition_may_be_one_stated_page() {
        let l = ledger(0, 0, vec![steady(Counts::Pages, "body total_pages", 1)]);
        assert_eq!(
            reconcile(&[l], 0, UnderDrift::Shifts).status,
            VerificationStatus::Agreed
        );
        let l = ledger(0, 0, vec![steady(Counts::Pages, "body total_pages", 2)]);
        assert_eq!(
            reconcile(&[l], 0, UnderDrift::Shifts).status,
            VerificationStatus::Mismatch
        );
    }

    fn moving(records: u64) -> PartitionLedger {
        ledger(
            records,
            201,
            vec![stated(
                Counts::Records,
                "body total",
                (20000, 20003, 19999, 20004),
            )],
        )
    }

    #[test]
    fn a_moving_count_under_a_shifting_style_asks_for_a_backward_pass() {
        assert_eq!(to_reread(&[moving(20003)], UnderDrift::Shifts), vec![0]);
        assert_eq!(
            to_reread(&[moving(20003)], UnderDrift::Immune),
            Vec::<i32>::new()
        );
        assert_eq!(
            to_reread(&[moving(20003)], UnderDrift::Unknown),
            Vec::<i32>::new()
        );
        let steady_one = ledger(10, 1, vec![steady(Counts::Records, "body total", 10)]);
        assert_eq!(
            to_reread(&[steady_one], UnderDrift::Shifts),
            Vec::<i32>::new()
        );
        let mut reread = moving(20003);
        reread.reread_pages = Some(201);
        assert_eq!(
            to_reread(&[reread], UnderDrift::Shifts),
            Vec::<i32>::new(),
            "once only"
        );
    }

    #[test]
    fn a_moving_count_made_good_is_held_to_its_band() {
        let mut reread = moving(20003);
        reread.reread_pages = Some(201);
        let v = reconcile(&[reread.clone()], 20002, UnderDrift::Shifts);
        assert_eq!(v.status, VerificationStatus::Agreed, "{v:#?}");
        assert_eq!(v.checks[0].check, CheckKind::Drift);
        assert_eq!(v.reread_pages, 201);
        assert!(v.checks[0]
            .detail
            .contains("201 pages were read again, last first"));
        // The band is 19999..=20004 widened by its spread of 5.
        assert!(reconcile(&[reread.clone()], 19994, UnderDrift::Shifts).agreed());
        assert!(!reconcile(&[reread.clone()], 19993, UnderDrift::Shifts).agreed());
        reread.records_delivered = 500;
        let short = reconcile(&[reread], 500, UnderDrift::Shifts);
        assert!(!short.agreed(), "a real shortfall is outside any band");
        // Keys do not shift: a moving count is harmless to a cursor.
        let keyed = reconcile(&[moving(20003)], 20003, UnderDrift::Immune);
        assert_eq!(keyed.status, VerificationStatus::Agreed);
        assert!(keyed.checks[0].detail.contains("positions are keys"));
    }

    #[test]
    fn a_sentinel_page_with_records_means_the_count_was_low() {
        let mut l = ledger(600, 6, vec![steady(Counts::Records, "body total", 500)]);
        l.sentinel = Sentinel {
            pages: 1,
            records: 100,
        };
        let v = reconcile(&[l.clone()], 600, UnderDrift::Shifts);
        let sentinel = v
            .checks
            .iter()
            .find(|c| c.check == CheckKind::Sentinel)
            .unwrap();
        assert!(!sentinel.ok);
        assert!(sentinel.detail.ends_with("the stated count is too low"));
        l.sentinel.records = 0;
        l.records_delivered = 500;
        let v = reconcile(&[l], 500, UnderDrift::Shifts);
        assert_eq!(v.status, VerificationStatus::Agreed);
        assert!(v
            .checks
            .iter()
            .any(|c| c.check == CheckKind::Sentinel && c.ok));
    }

    #[test]
    fn a_count_that_jumps_is_no_drift() {
        // A source stating 0 on some page: not data moving.
        let mut l = ledger(
            1000,
            10,
            vec![stated(Counts::Records, "body total", (1000, 0, 0, 1000))],
        );
        l.reread_pages = Some(10);
        let v = reconcile(&[l], 1000, UnderDrift::Shifts);
        assert_eq!(v.status, VerificationStatus::Mismatch);
        assert_eq!(v.checks[0].check, CheckKind::Stable);
        assert!(v.checks[0].detail.contains("cannot be trusted"));
    }

    #[test]
    fn partitions_that_cannot_be_checked_are_named() {
        let first = ledger(10, 1, vec![steady(Counts::Records, "body total", 10)]);
        let mut unrecorded = ledger(10, 1, vec![steady(Counts::Records, "body total", 99)]);
        unrecorded.partition_no = 1;
        unrecorded.unrecorded_pages = 1;
        let mut silent = ledger(5, 1, vec![]);
        silent.partition_no = 2;
        let v = reconcile(&[first, unrecorded, silent], 25, UnderDrift::Shifts);
        assert_eq!(v.unchecked_partitions, vec![1, 2]);
    }

    #[test]
    fn a_backward_pass_that_read_nothing_repairs_nothing() {
        let mut l = moving(20003);
        l.reread_pages = Some(0);
        let v = reconcile(&[l], 20003, UnderDrift::Shifts);
        assert_eq!(v.status, VerificationStatus::Mismatch);
    }
}
