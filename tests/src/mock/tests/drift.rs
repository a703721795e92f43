//! Drift over HTTP: the truth endpoint, and what paging a moving data set
//! yields in each kind of style.

use std::collections::BTreeSet;

use super::totals::records_of;
use super::*;

fn drift(per_sec: f64) -> Drift {
    Drift {
        inserts_per_sec: per_sec,
        updates_per_sec: per_sec,
        deletes_per_sec: per_sec,
    }
}

fn id_of(record: &Value) -> usize {
    record["id"].as_u64().unwrap() as usize
}

async fn truth_over_http(server: &MockServer) -> Truth {
    let url = format!("{}/_mock/truth", server.base_url());
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn without_drift_the_truth_is_the_fixed_set() {
    let server = start(MockConfig::new(2, 20)).await;
    let truth = truth_over_http(&server).await;
    assert_eq!(truth, server.truth());
    assert_eq!(truth.survivors, (1..=20).collect::<Vec<_>>());
    assert_eq!(truth.ever, truth.survivors);
    assert_eq!((truth.inserted, truth.updated, truth.deleted), (0, 0, 0));
    let v = body(get(&client(), &server.url(Style::Offset)).await).await;
    let served = list(&v["data"]);
    assert!(served.iter().all(|r| r.get("rev").is_none()));
    assert!(served.iter().all(|r| server.was_version(r)));
    assert_eq!(server.record_now(3).as_ref(), Some(&served[2]));
    assert_eq!(server.record_now(21), None);
    // The control endpoint is not a data request.
    assert_eq!(server.stats().requests, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn drift_starts_at_the_first_page_and_is_told_by_the_truth() {
    let server = start(MockConfig {
        drift: Some(drift(100.0)),
        ..MockConfig::new(2, 500)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.truth().deleted, 0, "moved before the first page");
    let v = body(get(&client(), &server.url(Style::Offset)).await).await;
    assert!(list(&v["data"]).iter().all(|r| r["rev"] == 0));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let truth = truth_over_http(&server).await;
    assert!(truth.inserted >= 15 && truth.updated >= 15, "{truth:?}");
    assert!(truth.deleted >= 15, "{truth:?}");
    assert_eq!(
        truth.ever,
        (1..=500 + truth.inserted as usize).collect::<Vec<_>>()
    );
    // Deletes hit inserted records too, so at most that many initial ones went.
    assert!(truth.survivors.len() >= 500 - truth.deleted as usize);
    assert!(truth.survivors.len() < 500);
    let later = server.truth();
    assert!(later
        .survivors
        .iter()
        .all(|id| truth.survivors.contains(id)));
    server.shutdown().await;
}

/// Pages through a keyset style with a pause between pages, until a short
/// page; returns every record served.
async fn read_slowly(server: &MockServer, style: Style) -> Vec<Value> {
    let c = client();
    let mut out: Vec<Value> = Vec::new();
    loop {
        let after = out.last().map_or(0, id_of);
        let url = match style {
            Style::LastRecord => format!("{}?starting_after={after}&limit=50", server.url(style)),
            _ => format!("{}?after={after}&limit=50", server.url(style)),
        };
        let page = records_of(style, &body(get(&c, &url).await).await);
        let short = page.len() < 50;
        out.extend(page);
        // Inserts keep coming, so the read ends where the style would end
        // it, on a short page (no `has_more`, `next` or `rel="next"`).
        if short {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_keyset_read_of_moving_data_misses_no_survivor() {
    for style in [Style::LastRecord, Style::NextUrl, Style::Link] {
        let server = start(MockConfig {
            drift: Some(drift(200.0)),
            ..MockConfig::new(6, 600)
        })
        .await;
        let served = read_slowly(&server, style).await;
        let truth = server.truth();
        assert!(truth.deleted > 0 && truth.updated > 0, "{truth:?}");
        let ids: Vec<usize> = served.iter().map(id_of).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{style:?}");
        let got: BTreeSet<usize> = ids.iter().copied().collect();
        let missing: Vec<&usize> = truth
            .survivors
            .iter()
            .filter(|id| !got.contains(id))
            .collect();
        assert!(missing.is_empty(), "{style:?} missed {missing:?}");
        assert!(ids.iter().all(|id| truth.ever.binary_search(id).is_ok()));
        assert!(served.iter().all(|r| server.was_version(r)), "{style:?}");
        server.shutdown().await;
    }
}

#[tokio::test]
async fn an_offset_read_of_moving_data_states_the_live_count() {
    let server = start(MockConfig {
        drift: Some(Drift {
            deletes_per_sec: 100.0,
            ..Drift::default()
        }),
        header_totals: true,
        ..MockConfig::new(6, 300)
    })
    .await;
    let c = client();
    let url = format!("{}?offset=0&limit=1000", server.url(Style::Offset));
    get(&c, &url).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resp = get(&c, &url).await;
    let count: usize = resp.headers()["x-total-count"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let v = body(resp).await;
    let served: Vec<usize> = list(&v["data"]).iter().map(id_of).collect();
    assert_eq!(v["total"].as_u64().unwrap() as usize, served.len());
    assert_eq!(count, served.len());
    assert!(served.len() <= 290, "{}", served.len());
    // Everything served at that moment was alive then, so every survivor
    // since is among it.
    let truth = server.truth();
    assert!(truth.survivors.iter().all(|id| served.contains(id)));
    server.shutdown().await;
}
