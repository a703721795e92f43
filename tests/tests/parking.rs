//! Parking: a task handed back with a not-before time is not delivered
//! before it, and comes back after it, through Postgres (so a restart
//! loses nothing).

mod common;

use std::time::Duration;

use common::{connect, create_db, drop_db, store_spec};
use pagefleet_shared::model::RequestCounts;
use pagefleet_shared::store::{Claim, Store};

#[tokio::test]
async fn a_parked_task_comes_back_after_its_not_before_time() {
    let (db, url) = create_db("pft_park_").await;
    let store = Store::connect(&url, 4).unwrap();
    store.migrate().await.unwrap();
    let spec = store_spec("parked");
    let export = store.submit_export("default", None, &spec).await.unwrap();
    let client = connect(&url).await;
    let task: uuid::Uuid = client
        .query_one(
            "SELECT id FROM page_tasks WHERE export_id = $1",
            &[&export.id],
        )
        .await
        .unwrap()
        .get(0);

    let Claim::Claimed(_) = store
        .claim_page(task, Duration::from_secs(10), "w1")
        .await
        .unwrap()
    else {
        panic!("first claim");
    };
    assert!(store
        .park_page(
            task,
            "w1",
            Duration::from_millis(1500),
            2,
            RequestCounts {
                requests: 3,
                retries: 2,
                rate_limited: 1,
                ..RequestCounts::default()
            },
            &[],
        )
        .await
        .unwrap());
    assert_eq!(store.parked_count().await.unwrap(), 1);
    // Another worker cannot take it early (a stray delivery is dropped) ...
    assert!(matches!(
        store
            .claim_page(task, Duration::from_secs(10), "w2")
            .await
            .unwrap(),
        Claim::Gone
    ));
    // ... and it is not due yet.
    assert!(store.unpark_due().await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let outbox = store.unpark_due().await.unwrap();
    assert_eq!(outbox.len(), 1, "due: back in the outbox for the relay");
    assert_eq!(store.parked_count().await.unwrap(), 0);
    let Claim::Claimed(work) = store
        .claim_page(task, Duration::from_secs(10), "w2")
        .await
        .unwrap()
    else {
        panic!("claim after not_before");
    };
    assert_eq!(work.failures, 2, "its failures survive parking");
    // The requests it had made were counted when it parked.
    let status = store.export_status(export.id).await.unwrap().unwrap();
    assert_eq!(
        (status.requests, status.retries, status.rate_limited),
        (3, 2, 1)
    );
    drop(store);
    drop_db(&db).await;
}
