//! The cursor cycle over HTTP, as a client that follows cursors sees it.

use super::*;

/// Follows `style`'s cursors for `hops` pages; returns each page's first id
/// and the cursor it returned.
async fn follow(server: &MockServer, style: Style, hops: usize) -> Vec<(u64, Option<String>)> {
    let c = client();
    let mut seen = Vec::new();
    let mut url = format!("{}?limit=10", server.url(style));
    for _ in 0..hops {
        let resp = get(&c, &url).await;
        let header = resp
            .headers()
            .get("x-next-cursor")
            .map(|v| v.to_str().unwrap().to_string());
        let v = body(resp).await;
        let (data, next) = match style {
            Style::Cursor => (
                list(&v["data"]),
                v["next_cursor"].as_str().map(str::to_string),
            ),
            _ => (list(&v), header),
        };
        seen.push((data[0]["id"].as_u64().unwrap(), next.clone()));
        let Some(cursor) = next else { break };
        url = format!("{}?cursor={cursor}&limit=10", server.url(style));
    }
    seen
}

#[tokio::test]
async fn cursors_cycle_through_pages_two_three_and_four() {
    let server = start(MockConfig {
        cursor_cycle: true,
        ..MockConfig::new(3, 100)
    })
    .await;
    for style in [Style::Cursor, Style::CursorHeader] {
        let seen = follow(&server, style, 8).await;
        let firsts: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
        assert_eq!(firsts, [1, 11, 21, 31, 11, 21, 31, 11], "{style:?}");
        let cursors: Vec<&str> = seen.iter().map(|(_, c)| c.as_deref().unwrap()).collect();
        let (a, b, c) = (cursors[0], cursors[1], cursors[2]);
        assert!(a != b && b != c && a != c);
        assert_eq!(cursors, [a, b, c, a, b, c, a, b], "{style:?}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn without_the_cycle_cursors_run_to_the_end() {
    let server = start(MockConfig::new(3, 100)).await;
    let seen = follow(&server, Style::Cursor, 20).await;
    assert_eq!(seen.len(), 10);
    assert_eq!(seen[9], (91, None));
    server.shutdown().await;
}
