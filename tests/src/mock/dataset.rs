//! The data set a server answers from: the fixed ids `1..=records`, or a
//! drifting live set when [`MockConfig::drift`] is set. It cuts each page
//! (under one short lock when drifting) and makes the records on it, and it
//! tells the truth about what the data set held.

use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;

use super::config::MockConfig;
use super::drift::{record_revision, Live, Truth};
use super::pages::{self, Ask, Ids, Plan};
use super::records::record;
use super::server::lock;

pub(crate) struct Dataset {
    seed: u64,
    /// The initial size, which also shapes every record's content.
    records: usize,
    cursor_cycle: bool,
    live: Option<Mutex<Live>>,
}

impl Dataset {
    pub(crate) fn new(config: &MockConfig) -> Self {
        Dataset {
            seed: config.seed,
            records: config.records,
            cursor_cycle: config.cursor_cycle,
            live: config
                .drift
                .map(|drift| Mutex::new(Live::new(config.seed, config.records, drift))),
        }
    }

    /// The page `ask` names as the data set stands at `now`, and the records
    /// on it. A drifting set first applies every mutation due by then (its
    /// clock starts at the first page).
    pub(crate) fn page(&self, ask: &Ask, now: Instant) -> (Plan, Vec<Value>) {
        let Some(live) = &self.live else {
            let plan = pages::resolve(ask, Ids::Fixed(self.records), self.cursor_cycle);
            let data = plan.page.iter().map(|&id| self.record(id)).collect();
            return (plan, data);
        };
        let (plan, revs) = {
            let mut live = lock(live);
            live.catch_up(now);
            let plan = pages::resolve(ask, Ids::Live(live.ids()), self.cursor_cycle);
            let revs: Vec<u32> = plan.page.iter().map(|&id| live.rev(id)).collect();
            (plan, revs)
        };
        // Records are made outside the lock: it guards ids, not content.
        let data = plan
            .page
            .iter()
            .zip(revs)
            .map(|(&id, rev)| record_revision(self.seed, self.records, id, rev))
            .collect();
        (plan, data)
    }

    /// What the data set held, up to `now`.
    pub(crate) fn truth(&self, now: Instant) -> Truth {
        match &self.live {
            None => {
                let all: Vec<usize> = (1..=self.records).collect();
                Truth {
                    survivors: all.clone(),
                    ever: all,
                    ..Truth::default()
                }
            }
            Some(live) => {
                let mut live = lock(live);
                live.observe(now);
                live.truth()
            }
        }
    }

    /// The record with this id as it stands at `now`; `None` if it does not
    /// exist (never did, or was deleted).
    pub(crate) fn record_now(&self, id: usize, now: Instant) -> Option<Value> {
        match &self.live {
            None => (1..=self.records).contains(&id).then(|| self.record(id)),
            Some(live) => {
                let rev = {
                    let mut live = lock(live);
                    live.observe(now);
                    live.is_live(id).then(|| live.rev(id))
                }?;
                Some(record_revision(self.seed, self.records, id, rev))
            }
        }
    }

    /// Whether `value` is exactly a version some record had at some time up
    /// to `now`: what an exporter may have read of it.
    pub(crate) fn was_version(&self, value: &Value, now: Instant) -> bool {
        let Some(id) = number(value, "id") else {
            return false;
        };
        match &self.live {
            None => self.record_now(id, now).is_some_and(|r| r == *value),
            Some(live) => {
                let latest = {
                    let mut live = lock(live);
                    live.observe(now);
                    live.existed(id).then(|| live.rev(id))
                };
                let rev = number(value, "rev").and_then(|r| u32::try_from(r).ok());
                match (latest, rev) {
                    (Some(latest), Some(rev)) if rev <= latest => {
                        record_revision(self.seed, self.records, id, rev) == *value
                    }
                    _ => false,
                }
            }
        }
    }

    fn record(&self, id: usize) -> Value {
        record(self.seed, self.records, id)
    }
}

fn number(value: &Value, field: &str) -> Option<usize> {
    let n = value.get(field)?.as_u64()?;
    usize::try_from(n).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::drift::Drift;
    use super::super::styles::Style;
    use super::*;

    fn ask(style: Style, q: &str) -> Ask {
        pages::parse(style, Some(q), 1000, 1).unwrap()
    }

    fn drifting(drift: Drift) -> Dataset {
        Dataset::new(&MockConfig {
            drift: Some(drift),
            ..MockConfig::new(1, 300)
        })
    }

    #[test]
    fn the_fixed_set_is_the_records_and_its_own_truth() {
        let data = Dataset::new(&MockConfig::new(1, 30));
        let now = Instant::now();
        let (plan, records) = data.page(&ask(Style::Offset, "offset=10&limit=5"), now);
        assert_eq!(plan.page, [11, 12, 13, 14, 15]);
        assert_eq!(records, super::super::all_records(1, 30)[10..15].to_vec());
        let truth = data.truth(now);
        assert_eq!(truth.survivors, (1..=30).collect::<Vec<_>>());
        assert_eq!(truth.ever, truth.survivors);
        assert_eq!((truth.inserted, truth.updated, truth.deleted), (0, 0, 0));
        assert_eq!(data.record_now(30, now), Some(record(1, 30, 30)));
        assert_eq!(data.record_now(31, now), None);
        assert!(data.was_version(&record(1, 30, 4), now));
        assert!(!data.was_version(&record(2, 30, 4), now));
    }

    #[test]
    fn deletes_shift_positions_and_totals_count_the_live_set() {
        let data = drifting(Drift {
            deletes_per_sec: 3.0,
            ..Drift::default()
        });
        let t0 = Instant::now();
        let (plan, _) = data.page(&ask(Style::Offset, "limit=1000"), t0);
        assert_eq!(plan.records, 300);
        let later = t0 + Duration::from_secs(1);
        let (plan, records) = data.page(&ask(Style::Offset, "limit=1000"), later);
        assert_eq!((plan.records, records.len()), (297, 297));
        let truth = data.truth(later);
        assert_eq!(plan.page, truth.survivors);
        assert_eq!(truth.ever, (1..=300).collect::<Vec<_>>());
        let gone = (1..=300).find(|id| !plan.page.contains(id)).unwrap();
        assert_eq!(data.record_now(gone, later), None);
        assert!(data.was_version(&record_revision(1, 300, gone, 0), later));
        assert!(records.iter().all(|r| r["rev"] == 0));
    }

    #[test]
    fn updates_and_inserts_show_in_what_is_served() {
        let data = drifting(Drift {
            inserts_per_sec: 2.0,
            updates_per_sec: 50.0,
            ..Drift::default()
        });
        let t0 = Instant::now();
        data.page(&ask(Style::LastRecord, "starting_after=0"), t0);
        let later = t0 + Duration::from_secs(2);
        let (plan, records) = data.page(&ask(Style::LastRecord, "starting_after=290"), later);
        assert_eq!(plan.page, (291..=304).collect::<Vec<_>>());
        assert!(records.iter().all(|r| data.was_version(r, later)));
        let (_, all) = data.page(&ask(Style::NextUrl, "limit=1000"), later);
        let revs: u64 = all.iter().map(|r| r["rev"].as_u64().unwrap()).sum();
        assert_eq!(revs, 100);
        let updated = all.iter().find(|r| r["rev"] != 0).unwrap();
        assert!(data.was_version(updated, later));
        let id = updated["id"].as_u64().unwrap() as usize;
        assert_eq!(data.record_now(id, later).as_ref(), Some(updated));
        let rev = updated["rev"].as_u64().unwrap() as u32;
        assert!(data.was_version(&record_revision(1, 300, id, rev - 1), later));
        assert!(!data.was_version(&record_revision(1, 300, id, rev + 1), later));
        assert!(!data.was_version(&record_revision(1, 300, 305, 0), later));
        assert!(!data.was_version(&record(1, 300, id), later));
    }
}
