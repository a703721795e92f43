//! Two publishers (two schedulers' relays, or a relay and a worker) over
//! the same outbox never publish the same message at the same time, and
//! between them publish every message.

mod common;

use std::time::Duration;

use common::{connect, create_db, drop_db};
use pagefleet_shared::store::{OutboxFilter, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_publish_each_message_exactly_once() {
    let (db, url) = create_db("pft_outbox_").await;
    let store = Store::connect(&url, 8).unwrap();
    store.migrate().await.unwrap();
    let client = connect(&url).await;
    client
        .batch_execute(
            "INSERT INTO outbox (queue, body)
             SELECT 'pages', jsonb_build_object('n', n) FROM generate_series(1, 500) AS n",
        )
        .await
        .unwrap();

    let relay = |store: Store| async move {
        let mut published = Vec::new();
        loop {
            let filter = OutboxFilter::Pending {
                min_age: Duration::ZERO,
                limit: 50,
            };
            let (n, _) = store
                .publish_outbox::<_, _, ()>(filter, |messages| async move {
                    // Publishing takes a while; the other relay runs meanwhile.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    (messages.iter().map(|m| m.id).collect(), None)
                })
                .await
                .unwrap();
            if n == 0 {
                return published;
            }
            published.push(n);
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(relay(store.clone())),
        tokio::spawn(relay(store.clone()))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let total: usize = a.iter().chain(b.iter()).sum();
    assert_eq!(
        total, 500,
        "every message published exactly once between the two"
    );
    assert!(!a.is_empty() && !b.is_empty(), "both relays took a share");
    let sent: i64 = client
        .query_one(
            "SELECT count(DISTINCT id) FROM outbox WHERE sent_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sent, 500);
    drop(store);
    drop_db(&db).await;
}
