//! A page's rows enter staging by key whichever way they go in: copied
//! when none of the page's keys is staged yet, merged when one is (the copy
//! fails at that key and its savepoint undoes it). Either way a re-fetched
//! row replaces the staged one, is counted as replaced, and never
//! duplicates; a key listed twice in one page keeps its last row.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use uuid::Uuid;

use common::{connect, create_db, drop_db, landing_of, store_spec};
use pagefleet_shared::pagination::{Next, Position};
use pagefleet_shared::store::{Claim, Landed, Landing, PageRows, Store};

fn landing(task_id: Uuid, rows: &[(&str, &str)], next: Next) -> Landing {
    let mut packed = PageRows::default();
    for (key, row) in rows {
        packed.push(key, row).unwrap();
    }
    landing_of(task_id, packed, next)
}

/// Claims page `page_no` of the export and lands `rows` on it, leading on
/// to the next page; returns (inserted, replaced).
async fn land(
    store: &Store,
    client: &tokio_postgres::Client,
    export: Uuid,
    page_no: i64,
    rows: &[(&str, &str)],
) -> (u64, u64) {
    let task: Uuid = client
        .query_one(
            "SELECT id FROM page_tasks WHERE export_id = $1 AND page_no = $2",
            &[&export, &page_no],
        )
        .await
        .unwrap()
        .get("id");
    let claim = store
        .claim_page(task, Duration::from_secs(30), "w1")
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Claimed(_)), "{claim:?}");
    let next = Next::Chain(Position::Offset {
        offset: (page_no as u64 + 1) * 10,
    });
    match store.land_page(&landing(task, rows, next)).await.unwrap() {
        Landed::Page {
            rows_inserted,
            rows_replaced,
            ..
        } => (rows_inserted, rows_replaced),
        other => panic!("page {page_no} did not land: {other:?}"),
    }
}

async fn staged(client: &tokio_postgres::Client, export: Uuid) -> BTreeMap<String, String> {
    let rows = client
        .query(
            "SELECT row_key, data FROM staged_rows WHERE export_id = $1",
            &[&export],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test]
async fn copied_and_merged_pages_stage_one_row_a_key_and_count_what_they_replace() {
    let (db, url) = create_db("pft_merge_").await;
    let store = Store::connect(&url, 4).unwrap();
    store.migrate().await.unwrap();
    let client = connect(&url).await;
    let export = store
        .submit_export("default", None, &store_spec("merge"))
        .await
        .unwrap()
        .id;

    // A first page: every key new, one listed twice (its last row stays).
    let first = [("b", "1"), ("a", "1"), ("c", "1"), ("a", "2")];
    assert_eq!(land(&store, &client, export, 0, &first).await, (3, 1));
    // Keys with a tab, a backslash, a newline and a quote go in as they are.
    let odd = [("d\t\\\n\"", "{\"x\":\"\\t\\\\\"}"), ("e", "1")];
    assert_eq!(land(&store, &client, export, 1, &odd).await, (2, 0));
    // A page that re-fetches two staged keys among new ones: the copy
    // stops at the first staged key, and the whole page merges.
    let mixed = [("f", "1"), ("c", "2"), ("g", "1"), ("a", "3")];
    assert_eq!(land(&store, &client, export, 2, &mixed).await, (2, 2));
    // A page wholly staged already.
    let again = [("f", "2"), ("g", "2")];
    assert_eq!(land(&store, &client, export, 3, &again).await, (0, 2));

    let expected: BTreeMap<String, String> = [
        ("a", "3"),
        ("b", "1"),
        ("c", "2"),
        ("d\t\\\n\"", "{\"x\":\"\\t\\\\\"}"),
        ("e", "1"),
        ("f", "2"),
        ("g", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(staged(&client, export).await, expected);
    // The finalizer reads them back in key order.
    let mut read = store.staged_rows(export).await.unwrap();
    let mut in_order = Vec::new();
    // In batches that do not divide the rows: the last is short, and
    // asking past it gives nothing, not an error.
    loop {
        let batch = read.next_batch(3).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for row in batch {
            in_order.push((
                row.key().unwrap().to_string(),
                row.data().unwrap().to_string(),
            ));
        }
    }
    assert!(read.next_batch(3).await.unwrap().is_empty());
    assert_eq!(in_order, expected.clone().into_iter().collect::<Vec<_>>());
    let counted = client
        .query_one(
            "SELECT rows_staged, rows_replaced FROM exports WHERE id = $1",
            &[&export],
        )
        .await
        .unwrap();
    let (rows_staged, rows_replaced): (i64, i64) = (counted.get(0), counted.get(1));
    assert_eq!((rows_staged, rows_replaced), (7, 5));
    drop(store);
    drop_db(&db).await;
}
