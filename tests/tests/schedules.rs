//! Schedules on real scheduler processes: each slot fires exactly once
//! however many schedulers run, a killed scheduler's next slot is fired by
//! another within a bound, and slots missed while no scheduler ran follow
//! the schedule's catch-up policy.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use uuid::Uuid;

use pagefleet_shared::schedule::{CatchUpPolicy, OverlapPolicy, ScheduleSpec};
use pagefleet_shared::spec::ExportSpec;
use pagefleet_tests::chaos::fleet::{
    default_tenant_dir, free_port, offset_spec, spawn_scheduler, Process, ProcessFleet,
};
use pagefleet_tests::mock::{MockConfig, MockServer};

use common::{build_fleet_binaries, connect};

/// A slot is fired within this of its time by some live scheduler: the
/// firing loop's 500 ms interval, one transaction, and slack for a loaded
/// 2-core machine.
const FIRING_BOUND: Duration = Duration::from_secs(3);

struct Setup {
    mock: MockServer,
    dir: std::path::PathBuf,
    fleet: ProcessFleet,
    db: tokio_postgres::Client,
}

async fn setup(label: &str, workers: usize) -> Setup {
    build_fleet_binaries();
    let token = format!("{label}-{}", Uuid::now_v7().simple());
    let mut config = MockConfig::new(5, 10);
    config.token = token.clone();
    let mock = MockServer::start(config).await.unwrap();
    let dir = std::env::temp_dir().join(format!("pagefleet-{label}-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let fleet = ProcessFleet::start(label, workers, &dir, &token)
        .await
        .unwrap();
    let db = connect(&fleet.env.database_url).await;
    Setup {
        mock,
        dir,
        fleet,
        db,
    }
}

fn schedule(s: &Setup, name: &str, cron: &str, catch_up: CatchUpPolicy) -> ScheduleSpec {
    let out = default_tenant_dir(&s.dir, name);
    let toml = offset_spec(name, 10, 100.0, 10, &s.mock.base_url(), &out, "");
    ScheduleSpec {
        name: name.into(),
        cron: cron.into(),
        time_zone: "UTC".into(),
        overlap: OverlapPolicy::Skip,
        catch_up,
        catch_up_window_s: 3600,
        pause_after_failures: 0,
        export: ExportSpec::from_toml(&toml).unwrap(),
    }
}

/// One decided slot.
#[derive(Debug)]
struct Firing {
    slot: OffsetDateTime,
    outcome: String,
    fired_by: String,
    fired_at: OffsetDateTime,
}

async fn firings(db: &tokio_postgres::Client, name: &str) -> Vec<Firing> {
    db.query(
        "SELECT f.slot, f.outcome, f.fired_by, f.fired_at
           FROM schedule_firings f JOIN schedules s ON s.id = f.schedule_id
          WHERE s.name = $1 ORDER BY f.slot",
        &[&name],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| Firing {
        slot: r.get(0),
        outcome: r.get(1),
        fired_by: r.get(2),
        fired_at: r.get(3),
    })
    .collect()
}

/// `scheduler-<pid>-<suffix>` → pid.
fn pid_of(fired_by: &str) -> u32 {
    fired_by
        .split('-')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("fired_by {fired_by:?} names no pid"))
}

async fn wait_for_slots(db: &tokio_postgres::Client, name: &str, n: usize, limit: Duration) {
    let started = Instant::now();
    while firings(db, name).await.len() < n {
        assert!(
            started.elapsed() < limit,
            "fewer than {n} slots of {name} fired in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_schedulers_fire_each_slot_once_and_survive_a_kill() {
    let mut s = setup("sched3", 1).await;
    let mut others: Vec<Process> = (0..2)
        .map(|_| {
            spawn_scheduler(&s.fleet.env, &format!("127.0.0.1:{}", free_port().unwrap())).unwrap()
        })
        .collect();
    let spec = schedule(&s, "every2s", "*/2 * * * * *", CatchUpPolicy::Once);
    s.fleet.api.create_schedule(&spec).await.unwrap();

    // Let the three compete for a dozen slots, then kill the one that
    // fired the latest, right after it did.
    wait_for_slots(&s.db, "every2s", 12, Duration::from_secs(60)).await;
    let last = firings(&s.db, "every2s").await.pop().unwrap();
    let victim = pid_of(&last.fired_by);
    let killed_at = OffsetDateTime::now_utc();
    if s.fleet.scheduler.pid() == Some(victim) {
        s.fleet.scheduler.kill9().await;
    } else {
        let i = others
            .iter()
            .position(|p| p.pid() == Some(victim))
            .expect("the firing scheduler is one of ours");
        others[i].kill9().await;
    }
    wait_for_slots(&s.db, "every2s", 24, Duration::from_secs(60)).await;

    let all = firings(&s.db, "every2s").await;
    // Every slot from the first to the last decided once: 2 s apart, no
    // gap (none missed), no repeat (the primary key), nothing left over.
    for pair in all.windows(2) {
        assert_eq!(
            pair[1].slot - pair[0].slot,
            time::Duration::seconds(2),
            "a gap or a repeat: {pair:?}"
        );
    }
    let missed: i64 =
        s.db.query_one(
            "SELECT missed_slots FROM schedules WHERE name = 'every2s'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(missed, 0);
    // Each started slot has its own export, and no export is unaccounted.
    let started = all.iter().filter(|f| f.outcome == "started").count() as i64;
    let exports: i64 =
        s.db.query_one("SELECT count(*) FROM exports", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(exports, started, "one export per started slot");
    assert!(started >= 1);
    // More than one scheduler took part.
    let mut by: BTreeMap<u32, usize> = BTreeMap::new();
    for f in &all {
        *by.entry(pid_of(&f.fired_by)).or_default() += 1;
    }
    assert!(by.len() >= 2, "slots fired by {by:?}");
    // After the kill, the next slot was fired by another, within the bound.
    let next = all
        .iter()
        .find(|f| f.slot > killed_at)
        .expect("a slot after the kill");
    assert_ne!(
        pid_of(&next.fired_by),
        victim,
        "a killed scheduler fired {next:?}"
    );
    let late = next.fired_at - next.slot;
    assert!(
        late < FIRING_BOUND,
        "the slot after the kill fired {late} late: {next:?}"
    );
    for f in all.iter().filter(|f| f.slot > killed_at) {
        assert_ne!(pid_of(&f.fired_by), victim);
        assert!(f.fired_at - f.slot < FIRING_BOUND, "late: {f:?}");
    }

    for mut p in others {
        p.kill9().await;
    }
    s.fleet.stop().await;
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_missed_while_no_scheduler_ran_follow_the_catch_up_policy() {
    let mut s = setup("catchup", 1).await;
    let policies = [
        ("all5s", CatchUpPolicy::All),
        ("once5s", CatchUpPolicy::Once),
        ("skip5s", CatchUpPolicy::Skip),
    ];
    for (name, policy) in policies {
        let spec = schedule(&s, name, "*/5 * * * * *", policy);
        s.fleet.api.create_schedule(&spec).await.unwrap();
    }
    // Wait until each has fired one slot, then take the only scheduler down.
    for (name, _) in policies {
        wait_for_slots(&s.db, name, 1, Duration::from_secs(30)).await;
    }
    s.fleet.scheduler.kill9().await;
    let s0 = policies_last_slot(&s.db, &policies.map(|p| p.0)).await;
    // Down across two slots (s0+5, s0+10); back 3 s after the second, so
    // the latest missed slot is past its on-time grace (half the 5 s
    // interval) when the scheduler looks.
    let back = s0 + time::Duration::seconds(13);
    let wait = back - OffsetDateTime::now_utc();
    assert!(wait.is_positive(), "the kill took too long: back at {back}");
    tokio::time::sleep(wait.try_into().unwrap()).await;
    s.fleet.respawn_scheduler().unwrap();
    // The next on-time slot, s0+15, fires for all three.
    let slot = |k: i64| s0 + time::Duration::seconds(5 * k);
    for (name, _) in policies {
        let started = Instant::now();
        while !firings(&s.db, name).await.iter().any(|f| f.slot == slot(3)) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{name}: s0+15 never fired"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let decided = |all: Vec<Firing>| -> Vec<i64> {
        all.iter()
            .filter(|f| f.slot > s0 && f.slot <= slot(3))
            .map(|f| (f.slot - s0).whole_seconds())
            .collect()
    };
    assert_eq!(
        decided(firings(&s.db, "all5s").await),
        vec![5, 10, 15],
        "all: every missed slot"
    );
    assert_eq!(
        decided(firings(&s.db, "once5s").await),
        vec![10, 15],
        "once: the latest missed slot"
    );
    assert_eq!(
        decided(firings(&s.db, "skip5s").await),
        vec![15],
        "skip: none of the missed slots"
    );
    for (name, missed) in [("all5s", 0i64), ("once5s", 1), ("skip5s", 2)] {
        let got: i64 =
            s.db.query_one(
                "SELECT missed_slots FROM schedules WHERE name = $1",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(got, missed, "{name}: missed slots counted");
    }
    s.fleet.stop().await;
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// The latest slot fired by every one of `names` (they share a cron).
async fn policies_last_slot(db: &tokio_postgres::Client, names: &[&str]) -> OffsetDateTime {
    let mut latest = Vec::new();
    for name in names {
        latest.push(firings(db, name).await.pop().unwrap().slot);
    }
    let first = latest[0];
    assert!(
        latest.iter().all(|s| *s == first),
        "the schedules are on different slots: {latest:?}"
    );
    first
}
