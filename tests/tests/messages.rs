//! Every message body the store writes to the outbox is a `TaskMessage`
//! with the right ids, on the queue of its kind. The bodies are built in
//! SQL (migration 4); this is what ties them to the Rust enum the workers
//! and the relay read them with. Each step below makes the store write one
//! kind: submit, a landing's next page, a dead letter, a replay, an unpark,
//! a requeue of an expired lease, a requeue of an idle queued task, the
//! last landing's finalize, and a requeue of an idle finalize.

mod common;

use std::time::Duration;

use uuid::Uuid;

use common::{connect, create_db, drop_db, landing_of, store_spec};
use pagefleet_shared::model::{DeadLetterClass, QueueRole, RequestCounts, TaskMessage};
use pagefleet_shared::pagination::{Next, Position};
use pagefleet_shared::store::{
    ActionRequest, Actor, Claim, DeadLetterInput, DlqFilter, Landed, Landing, PageRows, Store,
    StoreError,
};

/// Reads the outbox rows written since the last call, as (queue, message).
struct Outbox {
    client: tokio_postgres::Client,
    seen: i64,
}

impl Outbox {
    async fn new_messages(&mut self) -> Vec<(i64, QueueRole, TaskMessage)> {
        let rows = self
            .client
            .query(
                "SELECT id, queue, body FROM outbox WHERE id > $1 ORDER BY id",
                &[&self.seen],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                let id: i64 = r.get("id");
                self.seen = self.seen.max(id);
                let queue: String = r.get("queue");
                let body: serde_json::Value = r.get("body");
                let message = serde_json::from_value::<TaskMessage>(body.clone())
                    .unwrap_or_else(|e| panic!("outbox {id} body {body} is no TaskMessage: {e}"));
                (id, QueueRole::parse(&queue).unwrap(), message)
            })
            .collect()
    }

    /// Exactly these messages were written since the last call.
    async fn expect(&mut self, step: &str, expected: &[(QueueRole, TaskMessage)]) -> Vec<i64> {
        let got = self.new_messages().await;
        let messages: Vec<(QueueRole, TaskMessage)> =
            got.iter().map(|(_, q, m)| (*q, m.clone())).collect();
        assert_eq!(messages, expected, "{step}");
        got.iter().map(|(id, _, _)| *id).collect()
    }
}

fn page(export_id: Uuid, task_id: Uuid) -> (QueueRole, TaskMessage) {
    (QueueRole::Pages, TaskMessage::Page { export_id, task_id })
}

fn landing(task_id: Uuid, next: Next) -> Landing {
    let mut rows = PageRows::default();
    rows.push(&format!("k-{task_id}"), "{}").unwrap();
    landing_of(task_id, rows, next)
}

async fn claim(store: &Store, task: Uuid, lease: Duration) {
    let claim = store.claim_page(task, lease, "w1").await.unwrap();
    assert!(
        matches!(claim, Claim::Claimed(_)),
        "claim {task}: {claim:?}"
    );
}

#[tokio::test]
async fn every_outbox_body_the_store_writes_is_a_task_message() {
    let (db, url) = create_db("pft_msgs_").await;
    let store = Store::connect(&url, 4).unwrap();
    store.migrate().await.unwrap();
    let client = connect(&url).await;
    let mut outbox = Outbox {
        client: connect(&url).await,
        seen: 0,
    };
    let lease = Duration::from_secs(30);
    // Let `updated_at < now() - 0` and `lease_until < now() - 0` hold.
    let tick = || tokio::time::sleep(Duration::from_millis(20));

    // 1. Submit: the first page task of the partition.
    let spec = store_spec("messages");
    let submitted = store.submit_export("default", None, &spec).await.unwrap();
    let export = submitted.id;
    let first: Uuid = client
        .query_one(
            "SELECT id FROM page_tasks WHERE export_id = $1 AND page_no = 0",
            &[&export],
        )
        .await
        .unwrap()
        .get("id");
    let ids = outbox.expect("submit", &[page(export, first)]).await;
    assert_eq!(ids, submitted.outbox_ids);

    // 2. Landing a chain page: the next page task.
    claim(&store, first, lease).await;
    let landed = store
        .land_page(&landing(first, Next::Chain(Position::Offset { offset: 1 })))
        .await
        .unwrap();
    let second: Uuid = client
        .query_one(
            "SELECT id FROM page_tasks WHERE export_id = $1 AND page_no = 1",
            &[&export],
        )
        .await
        .unwrap()
        .get("id");
    let ids = outbox.expect("land next", &[page(export, second)]).await;
    assert!(
        matches!(&landed, Landed::Page { outbox_ids, finalize: false, .. } if *outbox_ids == ids),
        "{landed:?}"
    );

    // 3. Dead letter.
    claim(&store, second, lease).await;
    let dead = store
        .dead_letter(&DeadLetterInput {
            task_id: second,
            class: DeadLetterClass::Permanent,
            reason: "404".to_string(),
            last_status: Some(404),
            body_excerpt: None,
            headers: serde_json::json!({}),
            attempts: Vec::new(),
            counts: RequestCounts::default(),
            request: serde_json::json!({}),
            source_key: None,
            fingerprint: "test".into(),
        })
        .await
        .unwrap();
    let dead_letter_id: Uuid = client
        .query_one("SELECT id FROM dead_letters WHERE task_id = $1", &[&second])
        .await
        .unwrap()
        .get("id");
    let ids = outbox
        .expect(
            "dead letter",
            &[(
                QueueRole::Dead,
                TaskMessage::DeadLetter {
                    export_id: export,
                    task_id: second,
                    dead_letter_id,
                },
            )],
        )
        .await;
    assert_eq!(dead.map(|id| vec![id]), Some(ids));

    // 4. Replay of the dead letter.
    let operator = Actor {
        tenant_id: "default".into(),
        name: "test".into(),
    };
    let request = ActionRequest {
        filter: DlqFilter {
            ids: vec![dead_letter_id],
            ..DlqFilter::default()
        },
        ..ActionRequest::default()
    };
    let replayed = store
        .replay_dead_letters(&operator, &request)
        .await
        .unwrap();
    let tasks: Vec<Uuid> = replayed.pages.iter().map(|p| p.task).collect();
    assert_eq!(tasks, vec![second]);
    assert_eq!(
        outbox.expect("replay", &[page(export, second)]).await,
        replayed.outbox_ids
    );

    // 5. Parked, then due.
    claim(&store, second, lease).await;
    assert!(store
        .park_page(
            second,
            "w1",
            Duration::ZERO,
            0,
            RequestCounts::default(),
            &[]
        )
        .await
        .unwrap());
    let ids = store.unpark_due().await.unwrap();
    assert_eq!(outbox.expect("unpark", &[page(export, second)]).await, ids);

    // 6. A lease that ran out (its worker died).
    claim(&store, second, Duration::ZERO).await;
    tick().await;
    assert_eq!(store.requeue_expired(Duration::ZERO).await.unwrap(), 1);
    outbox
        .expect("requeue expired", &[page(export, second)])
        .await;

    // 7. A queued task nothing touched (its message was lost).
    tick().await;
    assert_eq!(store.requeue_idle_queued(Duration::ZERO).await.unwrap(), 1);
    outbox
        .expect("requeue idle queued", &[page(export, second)])
        .await;

    // 8. The last landing: the finalize task.
    claim(&store, second, lease).await;
    let landed = store.land_page(&landing(second, Next::Done)).await.unwrap();
    let finalize = (
        QueueRole::Finalize,
        TaskMessage::Finalize { export_id: export },
    );
    let ids = outbox
        .expect("land last", std::slice::from_ref(&finalize))
        .await;
    assert!(
        matches!(&landed, Landed::Page { outbox_ids, finalize: true, .. } if *outbox_ids == ids),
        "{landed:?}"
    );

    // 9. An export stuck in finalizing (its finalize message was lost).
    tick().await;
    assert_eq!(
        store.requeue_idle_finalize(Duration::ZERO).await.unwrap(),
        1
    );
    outbox.expect("requeue idle finalize", &[finalize]).await;

    drop(store);
    drop_db(&db).await;
}

/// A row that lacks a column is about the code, not the connection: the
/// task must not be handed back and redelivered for it. A refused
/// connection is worth trying again.
#[tokio::test]
async fn a_missing_column_is_not_retried_and_a_refused_connection_is() {
    let db = connect(common::ADMIN_DB).await;
    let row = db.query_one("SELECT 1 AS one", &[]).await.unwrap();
    let missing = row.try_get::<_, i32>("two").unwrap_err();
    assert!(!StoreError::from(missing).is_retryable());
    let wrong_type = row.try_get::<_, String>("one").unwrap_err();
    assert!(!StoreError::from(wrong_type).is_retryable());
    let refused =
        tokio_postgres::connect("postgres://postgres@127.0.0.1:1/x", tokio_postgres::NoTls)
            .await
            .err()
            .expect("nothing listens on port 1");
    assert!(StoreError::from(refused).is_retryable());
}
