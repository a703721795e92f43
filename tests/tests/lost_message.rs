//! No task is left without a message. A redelivery that finds its task
//! held by a live worker stays unacked until that worker lands it or dies
//! (after a broker restart it is the task's only message). And a task whose
//! worker died and whose message vanished anyway is re-published from
//! Postgres by the scheduler's reconciler, well within the 30 s a takeover
//! may take.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use uuid::Uuid;

use pagefleet_shared::model::{ExportState, QueueRole};
use pagefleet_shared::queue::{Broker, QueueNames};
use pagefleet_shared::spec::ExportSpec;
use pagefleet_tests::chaos::fleet::{default_tenant_dir, offset_spec, ProcessFleet};
use pagefleet_tests::mock::{MockConfig, MockServer};

use common::{assert_csv_matches_source, build_fleet_binaries, connect};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// One single-page export submitted to a fleet with no worker yet, so its
/// task's message waits in the queue. (Its first page also plans the
/// sentinel page past the stated total; the checks are about the first.)
struct OnePage {
    seed: u64,
    mock: MockServer,
    dir: PathBuf,
    fleet: ProcessFleet,
    id: Uuid,
    db: tokio_postgres::Client,
}

const RECORDS: usize = 10;

impl OnePage {
    async fn submit(label: &str, seed: u64) -> OnePage {
        build_fleet_binaries();
        let token = format!("{label}-{}", Uuid::now_v7().simple());
        let mut mock_config = MockConfig::new(seed, RECORDS);
        mock_config.token = token.clone();
        let mock = MockServer::start(mock_config).await.unwrap();
        let dir =
            std::env::temp_dir().join(format!("pagefleet-{label}-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let fleet = ProcessFleet::start(label, 0, &dir, &token).await.unwrap();
        let toml = offset_spec(
            label,
            RECORDS,
            100.0,
            10,
            &mock.base_url(),
            &default_tenant_dir(&dir, "out"),
            "",
        );
        let id = fleet
            .api
            .submit(&ExportSpec::from_toml(&toml).unwrap(), None)
            .await
            .unwrap()
            .id;
        let db = connect(&fleet.env.database_url).await;
        OnePage {
            seed,
            mock,
            dir,
            fleet,
            id,
            db,
        }
    }

    /// Waits for the export to complete, then checks that the fleet's
    /// worker landed the page, that the task's message was written
    /// `messages` times, and that the CSV holds every record; cleans up.
    async fn completes(mut self, label: &str, since: Instant, what: &str, messages: i64) {
        let status = self
            .fleet
            .wait_finished(self.id, Duration::from_secs(60))
            .await
            .unwrap();
        let took = since.elapsed();
        assert_eq!(status.state, ExportState::Completed, "{status:?}");
        println!("{what} → export completed: {took:.1?}");
        assert!(
            took < Duration::from_secs(30),
            "{what}: taken over after {took:?}"
        );
        let claimed_by: String = self
            .db
            .query_one(
                "SELECT claimed_by FROM page_tasks WHERE export_id = $1 AND page_no = 0",
                &[&self.id],
            )
            .await
            .unwrap()
            .get::<_, Option<String>>(0)
            .unwrap_or_default();
        assert!(
            claimed_by.starts_with(&self.fleet.workers[0].name),
            "taken over by {claimed_by}"
        );
        let written: i64 = self
            .db
            .query_one(
                "SELECT count(*) FROM outbox o JOIN page_tasks t ON t.id::text = o.body->>'task_id'
                  WHERE o.queue = 'pages' AND t.page_no = 0",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(written, messages, "messages written for the task");
        let csv = default_tenant_dir(&self.dir, "out").join(format!("{label}.csv"));
        assert_csv_matches_source(&csv, self.seed, RECORDS);
        self.fleet.stop().await;
        self.mock.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_s_task_whose_message_was_lost_is_republished() {
    let mut export = OnePage::submit("lost", 33).await;
    let broker = Broker::connect(AMQP, &export.fleet.env.namespace)
        .await
        .unwrap();
    let started = Instant::now();
    while broker.ready_count(QueueRole::Pages).await.unwrap() < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "task never published"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.close().await;

    // A worker claimed the task and died, and its message is gone too.
    let queue = QueueNames::new(&export.fleet.env.namespace).name(QueueRole::Pages);
    let purge = std::process::Command::new("rabbitmqctl")
        .args(["purge_queue", &queue])
        .output()
        .unwrap();
    assert!(purge.status.success(), "purge: {purge:?}");
    let ghosted = export
        .db
        .execute(
            "UPDATE page_tasks SET state = 'in_flight', claimed_by = 'ghost/1',
                    claimed_at = now(), lease_until = now(), deliveries = deliveries + 1
              WHERE export_id = $1",
            &[&export.id],
        )
        .await
        .unwrap();
    assert_eq!(ghosted, 1, "one task planned");
    let lease_ran_out = Instant::now();
    export.fleet.add_worker().unwrap();
    // The original message and the reconciler's.
    export
        .completes("lost", lease_ran_out, "lease ran out", 2)
        .await;
}

/// Messages delivered to consumers and not yet acked, from the broker.
fn unacked(queue: &str) -> u64 {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "name", "messages_unacknowledged"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let mut cols = l.split_whitespace();
            (cols.next() == Some(queue)).then(|| cols.next()?.parse().ok())?
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_waits_while_the_holder_lives_and_takes_over_when_it_dies() {
    let mut export = OnePage::submit("held", 34).await;
    // Another worker holds the task and keeps its lease alive: as after a
    // broker restart, its own delivery is gone and the queue's message is
    // the one the fleet's worker gets.
    let hold = "UPDATE page_tasks SET state = 'in_flight', claimed_by = 'holder/1',
                       claimed_at = now(), lease_until = now() + interval '10 seconds'
                 WHERE export_id = $1";
    let id = export.id;
    assert_eq!(export.db.execute(hold, &[&id]).await.unwrap(), 1);
    export.fleet.add_worker().unwrap();
    let queue = QueueNames::new(&export.fleet.env.namespace).name(QueueRole::Pages);
    let started = Instant::now();
    // Through two lease periods the delivery stays held, unacked.
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(25) {
        export.db.execute(hold, &[&id]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        if started.elapsed() > Duration::from_secs(12) {
            samples.push(unacked(&queue));
        }
    }
    assert!(
        samples.len() >= 3 && samples.iter().all(|&n| n == 1),
        "the redelivery was dropped while the holder lived: unacked {samples:?}"
    );
    assert_eq!(
        export.fleet.api.status(id).await.unwrap().state,
        ExportState::Running
    );
    // The holder dies: its lease runs out and the waiting delivery takes
    // over, with the one message the task ever had (the reconciler never
    // had to write a second).
    export
        .completes("held", Instant::now(), "holder died", 1)
        .await;
}
