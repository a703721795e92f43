//! The json-server style over HTTP: paging by `Link`, `_limit` alone, the
//! cap and a lying total.

use super::totals::header;
use super::*;

#[tokio::test]
async fn pages_by_link_like_json_server() {
    let server = start(MockConfig::new(9, 335)).await;
    let c = client();
    let base = server.url(Style::JsonServer);
    let resp = get(&c, &format!("{base}?_page=1&_limit=10")).await;
    let host = server.addr();
    let url = |n: usize| format!("<http://{host}/json-server/items?_page={n}&_limit=10>");
    let expected = format!(
        "{}; rel=\"first\", {}; rel=\"next\", {}; rel=\"last\"",
        url(1),
        url(2),
        url(34)
    );
    assert_eq!(header(&resp, "link"), Some(expected));
    assert_eq!(header(&resp, "x-total-count").as_deref(), Some("335"));
    let first = body(resp).await;
    assert_eq!(list(&first), all_records(9, 335)[..10].to_vec());

    let resp = get(&c, &format!("{base}?_page=34&_limit=10")).await;
    let link = header(&resp, "link").unwrap();
    assert!(!link.contains("rel=\"next\""), "{link}");
    assert!(
        link.contains(&format!("{}; rel=\"prev\"", url(33))),
        "{link}"
    );
    assert_eq!(list(&body(resp).await).len(), 5);
    server.shutdown().await;
}

#[tokio::test]
async fn limit_alone_gives_the_first_records_without_links() {
    let server = start(MockConfig {
        max_page_size: 50,
        ..MockConfig::new(9, 335)
    })
    .await;
    let c = client();
    let base = server.url(Style::JsonServer);
    let resp = get(&c, &format!("{base}?_limit=7")).await;
    assert_eq!(header(&resp, "link"), None);
    assert_eq!(header(&resp, "x-total-count").as_deref(), Some("335"));
    assert_eq!(list(&body(resp).await), all_records(9, 335)[..7].to_vec());
    // No parameter: the whole collection, cut by the cap.
    let resp = get(&c, &base).await;
    assert_eq!(header(&resp, "link"), None);
    assert_eq!(list(&body(resp).await).len(), 50);
    // `_page` alone pages by json-server's 10, `_limit` is capped.
    let resp = get(&c, &format!("{base}?_page=2")).await;
    assert!(header(&resp, "link")
        .unwrap()
        .contains("_page=34&_limit=10>"));
    assert_eq!(list(&body(resp).await)[0]["id"], 11);
    let resp = get(&c, &format!("{base}?_page=2&_limit=1000")).await;
    assert!(header(&resp, "link")
        .unwrap()
        .contains("_page=7&_limit=50>"));
    assert_eq!(list(&body(resp).await)[0]["id"], 51);
    for bad in ["_page=0", "_page=two", "_limit=-5"] {
        let resp = get(&c, &format!("{base}?{bad}")).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_stated_total_moves_the_last_link() {
    let server = start(MockConfig {
        stated_total: Some(95),
        ..MockConfig::new(9, 335)
    })
    .await;
    let c = client();
    let base = server.url(Style::JsonServer);
    let resp = get(&c, &format!("{base}?_page=10&_limit=10")).await;
    assert_eq!(header(&resp, "x-total-count").as_deref(), Some("95"));
    let link = header(&resp, "link").unwrap();
    assert!(
        link.ends_with("_page=10&_limit=10>; rel=\"last\""),
        "{link}"
    );
    assert!(!link.contains("rel=\"next\""), "{link}");
    // The records are the real ones, past the stated end too.
    let resp = get(&c, &format!("{base}?_page=11&_limit=10")).await;
    assert_eq!(
        list(&body(resp).await),
        all_records(9, 335)[100..110].to_vec()
    );
    server.shutdown().await;
}
