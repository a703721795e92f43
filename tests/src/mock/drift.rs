//! Drift: a data set that changes while it is read, so that tests can prove
//! an exporter loses nothing that stayed and invents nothing that never was.
//!
//! From the first page served on, records are inserted, updated and deleted
//! at fixed rates. Mutation `n` (from 1) of a kind falls due `n / rate`
//! seconds after that first page. Nothing runs in the background: before a
//! page is cut, every mutation due by then is applied, in the order they fell
//! due (an insert before an update before a delete at the same instant).
//! Which record each mutation hits is drawn from the seed, so the sequence of
//! mutations is a pure function of the seed and the rates; timing only
//! decides how far into it the data set is when a request is answered.
//!
//! The live ids are a sorted `Vec`: positions (offset styles) are an index,
//! ids (keyset styles) a binary search, an insert an append (new ids are
//! above every id ever used), an update a map entry; only a delete costs
//! O(n), a move of the ids after it, which is microseconds at 400,000.

use std::collections::HashMap;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::records::record;

/// At most this many mutations are applied before one request; any more stay
/// due for the next. Keeps every request quick even with absurd rates.
const MAX_CATCH_UP: u32 = 100_000;

/// Keeps the mutation draws apart from the record and fault draws.
const DRIFT_STREAM: u64 = 0xD21F_7000_0000_0001;

/// How fast the data set changes, in mutations per second ("one delete every
/// five seconds" is `deletes_per_sec: 0.2`). A rate that is not a positive
/// finite number never happens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Drift {
    /// Each adds a record with the next id above the highest ever used; as
    /// records are served in id order, it lands at the end.
    pub inserts_per_sec: f64,
    /// Each changes a random live record's content: its `rev` goes up by one.
    pub updates_per_sec: f64,
    /// Each removes a random live record, which moves every later record one
    /// position down for the offset and page-number styles.
    pub deletes_per_sec: f64,
}

/// What really happened to a data set: what an export is judged against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truth {
    /// The initial ids never deleted, ascending: the records that existed
    /// from the first page served until now. A complete export has them all.
    pub survivors: Vec<usize>,
    /// Every id that existed at any time, ascending. An export has no other.
    pub ever: Vec<usize>,
    /// Mutations that changed the data set, by kind.
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
}

/// A record as a drifting data set serves it: the fixed record (of a data set
/// of `records`, the initial size) with `rev`, its number of updates so far.
pub fn record_revision(seed: u64, records: usize, id: usize, rev: u32) -> Value {
    let mut value = record(seed, records, id);
    if let Value::Object(fields) = &mut value {
        fields.insert("rev".into(), Value::from(rev));
    }
    value
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Insert = 0,
    Update = 1,
    Delete = 2,
}

/// In this order when several fall due at the same instant.
const KINDS: [Kind; 3] = [Kind::Insert, Kind::Update, Kind::Delete];

/// A drifting data set.
#[derive(Debug)]
pub(crate) struct Live {
    rates: [f64; 3],
    /// The initial data set is ids `1..=initial`.
    initial: usize,
    /// The live ids, ascending.
    ids: Vec<usize>,
    /// Updates so far of every record ever updated, kept after a delete so
    /// that what was served of a deleted record can still be checked.
    revs: HashMap<usize, u32>,
    /// The id the next insert gets: one above the highest ever used.
    next_id: usize,
    /// When the first page was served.
    started: Option<Instant>,
    /// Mutations of each kind that fell due and were applied; an update or a
    /// delete that finds the set empty falls due and does nothing.
    fell_due: [u64; 3],
    /// Mutations of each kind that changed something.
    done: [u64; 3],
    rng: StdRng,
}

impl Live {
    pub(crate) fn new(seed: u64, records: usize, drift: Drift) -> Self {
        Live {
            rates: [
                drift.inserts_per_sec,
                drift.updates_per_sec,
                drift.deletes_per_sec,
            ],
            initial: records,
            ids: (1..=records).collect(),
            revs: HashMap::new(),
            next_id: records.saturating_add(1),
            started: None,
            fell_due: [0; 3],
            done: [0; 3],
            rng: StdRng::seed_from_u64(seed ^ DRIFT_STREAM),
        }
    }

    /// Before a page is cut: starts the clock on the first call, then applies
    /// every mutation due by `now`.
    pub(crate) fn catch_up(&mut self, now: Instant) {
        self.started.get_or_insert(now);
        self.observe(now);
    }

    /// Applies every mutation due by `now` if the clock runs, without
    /// starting it: looking at the data set does not set it moving.
    pub(crate) fn observe(&mut self, now: Instant) {
        let Some(started) = self.started else { return };
        let elapsed = now.saturating_duration_since(started).as_secs_f64();
        for _ in 0..MAX_CATCH_UP {
            let Some(kind) = self.next_due(elapsed) else {
                return;
            };
            self.apply(kind);
        }
    }

    /// The kind of the earliest mutation due by `elapsed` seconds.
    fn next_due(&self, elapsed: f64) -> Option<Kind> {
        KINDS
            .into_iter()
            .filter_map(|kind| {
                let rate = self.rates[kind as usize];
                let count = self.fell_due[kind as usize];
                let at = (rate.is_finite() && rate > 0.0).then(|| (count + 1) as f64 / rate)?;
                (at <= elapsed).then_some((at, kind))
            })
            // min_by keeps the first of equals, so KINDS order breaks ties.
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, kind)| kind)
    }

    fn apply(&mut self, kind: Kind) {
        self.fell_due[kind as usize] += 1;
        let changed = match kind {
            Kind::Insert => self.insert(),
            Kind::Update => self.update(),
            Kind::Delete => self.delete(),
        };
        if changed {
            self.done[kind as usize] += 1;
        }
    }

    fn insert(&mut self) -> bool {
        let Some(after) = self.next_id.checked_add(1) else {
            return false;
        };
        self.ids.push(self.next_id);
        self.next_id = after;
        true
    }

    fn update(&mut self) -> bool {
        let Some(position) = self.pick() else {
            return false;
        };
        let Some(&id) = self.ids.get(position) else {
            return false;
        };
        let rev = self.revs.entry(id).or_insert(0);
        *rev = rev.saturating_add(1);
        true
    }

    fn delete(&mut self) -> bool {
        match self.pick() {
            Some(position) if position < self.ids.len() => {
                self.ids.remove(position);
                true
            }
            _ => false,
        }
    }

    /// A random position of a live record.
    fn pick(&mut self) -> Option<usize> {
        (!self.ids.is_empty()).then(|| self.rng.random_range(0..self.ids.len()))
    }

    /// The live ids, ascending.
    pub(crate) fn ids(&self) -> &[usize] {
        &self.ids
    }

    /// How often this record has been updated.
    pub(crate) fn rev(&self, id: usize) -> u32 {
        self.revs.get(&id).copied().unwrap_or(0)
    }

    pub(crate) fn is_live(&self, id: usize) -> bool {
        self.ids.binary_search(&id).is_ok()
    }

    /// Whether this id existed at any time.
    pub(crate) fn existed(&self, id: usize) -> bool {
        (1..self.next_id).contains(&id)
    }

    pub(crate) fn truth(&self) -> Truth {
        let survivors = self.ids.iter().copied();
        Truth {
            survivors: survivors.take_while(|&id| id <= self.initial).collect(),
            ever: (1..self.next_id).collect(),
            inserted: self.done[Kind::Insert as usize],
            updated: self.done[Kind::Update as usize],
            deleted: self.done[Kind::Delete as usize],
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;

    fn drift(inserts: f64, updates: f64, deletes: f64) -> Drift {
        Drift {
            inserts_per_sec: inserts,
            updates_per_sec: updates,
            deletes_per_sec: deletes,
        }
    }

    fn at(t0: Instant, secs: f64) -> Instant {
        t0 + Duration::from_secs_f64(secs)
    }

    #[test]
    fn nothing_moves_until_the_first_page() {
        let t0 = Instant::now();
        let mut live = Live::new(1, 100, drift(10.0, 10.0, 10.0));
        live.observe(at(t0, 5.0));
        assert_eq!(live.ids(), (1..=100).collect::<Vec<_>>());
        live.catch_up(t0);
        assert_eq!(live.truth().deleted, 0);
        live.observe(at(t0, 0.5));
        let truth = live.truth();
        assert_eq!((truth.inserted, truth.updated, truth.deleted), (5, 5, 5));
    }

    #[test]
    fn mutations_fall_due_at_their_rates() {
        let t0 = Instant::now();
        let mut live = Live::new(1, 1000, drift(2.0, 4.0, 1.0));
        live.catch_up(t0);
        live.catch_up(at(t0, 2.5));
        let truth = live.truth();
        assert_eq!((truth.inserted, truth.updated, truth.deleted), (5, 10, 2));
        assert_eq!(live.ids().len(), 1003);
        assert_eq!(truth.ever, (1..=1005).collect::<Vec<_>>());
        assert_eq!(truth.survivors.len(), 998);
        assert_eq!(&live.ids()[998..], [1001, 1002, 1003, 1004, 1005]);
        let revs: u32 = (1..=1005).map(|id| live.rev(id)).sum();
        assert_eq!(revs, 10);
    }

    #[test]
    fn timing_only_decides_how_far_the_sequence_has_got() {
        let t0 = Instant::now();
        let rates = drift(3.0, 7.0, 5.0);
        let mut once = Live::new(9, 200, rates);
        once.catch_up(t0);
        once.catch_up(at(t0, 10.0));
        let mut often = Live::new(9, 200, rates);
        for step in 0..=1000 {
            often.catch_up(at(t0, step as f64 / 100.0));
        }
        assert_eq!(once.ids(), often.ids());
        assert_eq!(once.revs, often.revs);
        assert_eq!(once.truth(), often.truth());
        let mut other = Live::new(10, 200, rates);
        other.catch_up(t0);
        other.catch_up(at(t0, 10.0));
        assert_ne!(once.ids(), other.ids());
    }

    #[test]
    fn ids_stay_sorted_and_deleted_ids_never_come_back() {
        let t0 = Instant::now();
        let mut live = Live::new(4, 20, drift(5.0, 5.0, 8.0));
        live.catch_up(t0);
        let mut before: BTreeSet<usize> = live.ids().iter().copied().collect();
        let mut gone = BTreeSet::new();
        for step in 1..=200 {
            live.catch_up(at(t0, step as f64 / 10.0));
            let ids = live.ids();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
            let now: BTreeSet<usize> = ids.iter().copied().collect();
            gone.extend(before.difference(&now));
            assert!(now.is_disjoint(&gone), "{now:?} {gone:?}");
            before = now;
        }
        let truth = live.truth();
        assert!(truth.deleted > 20, "{truth:?}");
        assert_eq!(
            truth.ever,
            (1..=20 + truth.inserted as usize).collect::<Vec<_>>()
        );
        assert!(truth
            .survivors
            .iter()
            .all(|&id| id <= 20 && live.is_live(id)));
        assert!(!live.existed(0) && !live.existed(truth.ever.len() + 1));
    }

    #[test]
    fn an_empty_set_takes_no_updates_or_deletes() {
        let t0 = Instant::now();
        let mut live = Live::new(1, 0, drift(0.0, 3.0, 3.0));
        live.catch_up(t0);
        live.catch_up(at(t0, 2.0));
        let truth = live.truth();
        assert_eq!((truth.updated, truth.deleted), (0, 0));
        assert_eq!(live.fell_due, [0, 6, 6]);
        assert!(truth.survivors.is_empty() && truth.ever.is_empty());
    }

    #[test]
    fn rates_that_are_not_positive_numbers_never_happen() {
        let t0 = Instant::now();
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut live = Live::new(1, 10, drift(rate, rate, rate));
            live.catch_up(t0);
            live.catch_up(at(t0, 100.0));
            assert_eq!(live.truth(), Live::new(1, 10, Drift::default()).truth());
        }
    }

    #[test]
    fn catching_up_is_bounded_per_request() {
        let t0 = Instant::now();
        let mut live = Live::new(1, 10, drift(1e9, 0.0, 0.0));
        live.catch_up(t0);
        live.catch_up(at(t0, 1.0));
        assert_eq!(live.truth().inserted, u64::from(MAX_CATCH_UP));
        live.catch_up(at(t0, 1.0));
        assert_eq!(live.truth().inserted, 2 * u64::from(MAX_CATCH_UP));
    }

    #[test]
    fn revisions_add_rev_to_the_fixed_record() {
        let v = record_revision(3, 50, 7, 2);
        assert_eq!(v["rev"], 2);
        let mut fixed = v.clone();
        if let Value::Object(fields) = &mut fixed {
            fields.remove("rev");
        }
        assert_eq!(fixed, record(3, 50, 7));
    }
}
