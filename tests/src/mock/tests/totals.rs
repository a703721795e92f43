//! Totals over HTTP: stated in headers on request, lied about on request,
//! and the page-size cap in every style.

use super::*;

/// The URL of the first page of `style` with `size` records asked for.
pub(super) fn first_page(server: &MockServer, style: Style, size: usize) -> String {
    let param = match style {
        Style::Page | Style::PageNoTotal => "per_page",
        Style::JsonServer => "_limit",
        _ => "limit",
    };
    format!("{}?{param}={size}", server.url(style))
}

pub(super) fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// The records of a page in any style's body.
pub(super) fn records_of(style: Style, v: &Value) -> Vec<Value> {
    match style {
        Style::Page | Style::PageNoTotal => list(&v["items"]),
        Style::CursorHeader | Style::Link | Style::JsonServer => list(v),
        _ => list(&v["data"]),
    }
}

#[tokio::test]
async fn header_totals_on_every_style() {
    let server = start(MockConfig {
        header_totals: true,
        ..MockConfig::new(1, 257)
    })
    .await;
    let c = client();
    for style in Style::ALL {
        let resp = get(&c, &first_page(&server, style, 50)).await;
        assert_eq!(header(&resp, "x-total-count").as_deref(), Some("257"));
        let range = header(&resp, "content-range");
        assert_eq!(range.as_deref(), Some("items 0-49/257"), "{style:?}");
        assert_eq!(records_of(style, &body(resp).await).len(), 50);
    }
    let base = server.base_url();
    for (q, range) in [
        ("/offset/items?offset=250&limit=50", "items 250-256/257"),
        ("/page/items?page=6&per_page=50", "items 250-256/257"),
        (
            "/last-record/items?starting_after=199&limit=50",
            "items 199-248/257",
        ),
        ("/offset-nototal/items?offset=257", "items */257"),
        ("/link/items?after=257", "items */257"),
    ] {
        let resp = get(&c, &format!("{base}{q}")).await;
        assert_eq!(
            header(&resp, "content-range").as_deref(),
            Some(range),
            "{q}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn no_header_totals_by_default() {
    let server = start(MockConfig::new(1, 30)).await;
    let c = client();
    for style in Style::ALL {
        let resp = get(&c, &first_page(&server, style, 10)).await;
        // json-server always counts.
        let count = (style == Style::JsonServer).then(|| "30".to_string());
        assert_eq!(header(&resp, "x-total-count"), count, "{style:?}");
        assert_eq!(header(&resp, "content-range"), None, "{style:?}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_stated_total_lies_but_the_records_are_real() {
    let server = start(MockConfig {
        header_totals: true,
        stated_total: Some(10_000),
        max_page_size: 40,
        ..MockConfig::new(4, 100)
    })
    .await;
    let c = client();
    let base = server.base_url();
    let resp = get(&c, &format!("{base}/offset/items?offset=80&limit=50")).await;
    assert_eq!(header(&resp, "x-total-count").as_deref(), Some("10000"));
    assert_eq!(
        header(&resp, "content-range").as_deref(),
        Some("items 80-99/10000")
    );
    let v = body(resp).await;
    assert_eq!(v["total"], 10_000);
    let expected: Vec<Value> = all_records(4, 100).split_off(80);
    assert_eq!(list(&v["data"]), expected);
    // 10 000 records in pages of 40 (the cap, not the 50 asked for).
    let v = body(get(&c, &format!("{base}/page/items?per_page=50")).await).await;
    assert_eq!(v["total_pages"], 250);
    let v = body(get(&c, &format!("{base}/page/items?page=4&per_page=50")).await).await;
    assert!(list(&v["items"]).is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn the_page_size_cap_holds_in_every_style() {
    let server = start(MockConfig {
        max_page_size: 30,
        ..MockConfig::new(2, 257)
    })
    .await;
    let c = client();
    for style in Style::ALL {
        let v = body(get(&c, &first_page(&server, style, 1000)).await).await;
        assert_eq!(records_of(style, &v).len(), 30, "{style:?}");
        if style == Style::Page {
            assert_eq!(v["total_pages"], 9);
        }
    }
    server.shutdown().await;
}
