//! Checks of the mock over real HTTP: paging through every style, auth, the
//! rate limit, each fault as a client sees it, reproducible fault draws and
//! poison pages.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

mod cycle;
mod drift;
mod json_server;
mod totals;

const TOKEN: &str = "test-token";

async fn start(config: MockConfig) -> MockServer {
    MockServer::start(config).await.unwrap()
}

/// No connection reuse: a fault that kills a connection must not make the
/// client silently resend on a stale pooled one and skew the counts.
fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn get(client: &Client, url: &str) -> reqwest::Response {
    client.get(url).bearer_auth(TOKEN).send().await.unwrap()
}

async fn body(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), StatusCode::OK);
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

fn list(v: &Value) -> Vec<Value> {
    v.as_array().unwrap().clone()
}

/// Pages through `style` the way its clients must; returns the records in
/// order and the number of requests made.
async fn fetch_all(server: &MockServer, style: Style, limit: usize) -> (Vec<Value>, usize) {
    let c = client();
    let base = server.base_url();
    let path = style.path();
    let mut out = Vec::new();
    let mut pages = 0usize;
    // Extra parameters ride along to show they are ignored.
    let mut url = Some(match style {
        Style::Offset | Style::OffsetNoTotal => {
            format!("{base}{path}?offset=0&limit={limit}&part=a")
        }
        Style::Page | Style::PageNoTotal => format!("{base}{path}?page=1&per_page={limit}&part=a"),
        Style::JsonServer => format!("{base}{path}?_page=1&_limit={limit}&part=a"),
        _ => format!("{base}{path}?limit={limit}&part=a"),
    });
    while let Some(current) = url.take() {
        pages += 1;
        assert!(pages < 1000, "{style:?} does not end");
        let resp = get(&c, &current).await;
        let headers = resp.headers().clone();
        let v = body(resp).await;
        let before = out.len();
        match style {
            Style::Offset => {
                out.extend(list(&v["data"]));
                let total = v["total"].as_u64().unwrap() as usize;
                if out.len() < total {
                    url = Some(format!(
                        "{base}{path}?offset={}&limit={limit}&part=a",
                        out.len()
                    ));
                }
            }
            Style::OffsetNoTotal => {
                out.extend(list(&v["data"]));
                if out.len() - before == limit {
                    url = Some(format!(
                        "{base}{path}?offset={}&limit={limit}&part=a",
                        out.len()
                    ));
                }
            }
            Style::Page => {
                out.extend(list(&v["items"]));
                let total = v["total_pages"].as_u64().unwrap() as usize;
                if pages < total {
                    url = Some(format!("{base}{path}?page={}&per_page={limit}", pages + 1));
                }
            }
            Style::PageNoTotal => {
                out.extend(list(&v["items"]));
                if out.len() > before {
                    url = Some(format!("{base}{path}?page={}&per_page={limit}", pages + 1));
                }
            }
            Style::Cursor => {
                out.extend(list(&v["data"]));
                if let Some(c) = v["next_cursor"].as_str() {
                    url = Some(format!("{base}{path}?cursor={c}&limit={limit}"));
                }
            }
            Style::CursorHeader => {
                out.extend(list(&v));
                if let Some(c) = headers.get("x-next-cursor") {
                    let c = c.to_str().unwrap();
                    url = Some(format!("{base}{path}?cursor={c}&limit={limit}"));
                }
            }
            Style::LastRecord => {
                out.extend(list(&v["data"]));
                if v["has_more"].as_bool().unwrap() {
                    let last = out.last().unwrap()["id"].as_u64().unwrap();
                    url = Some(format!("{base}{path}?starting_after={last}&limit={limit}"));
                }
            }
            Style::NextUrl => {
                out.extend(list(&v["data"]));
                url = v["next"].as_str().map(str::to_string);
            }
            Style::NextUrlRelative => {
                out.extend(list(&v["data"]));
                if !v["done"].as_bool().unwrap() {
                    url = Some(format!("{base}{}", v["next"].as_str().unwrap()));
                }
            }
            Style::Link => {
                out.extend(list(&v));
                let link = headers.get("link").unwrap().to_str().unwrap();
                assert!(link.contains("rel=\"first\""));
                url = link
                    .split(", ")
                    .find(|part| part.ends_with("rel=\"next\""))
                    .map(|part| {
                        let start = part.find('<').unwrap() + 1;
                        let end = part.find('>').unwrap();
                        part[start..end].to_string()
                    });
            }
            Style::JsonServer => {
                out.extend(list(&v));
                assert!(headers.contains_key("x-total-count"));
                url = rel_link(&headers, "next");
            }
        }
    }
    (out, pages)
}

/// The URL of an RFC 8288 `Link` header's `rel` entry.
fn rel_link(headers: &reqwest::header::HeaderMap, rel: &str) -> Option<String> {
    let link = headers.get("link")?.to_str().ok()?;
    let entry = link
        .split(", ")
        .find(|part| part.ends_with(&format!("rel=\"{rel}\"")))?;
    let start = entry.find('<')? + 1;
    let end = entry.find('>')?;
    Some(entry[start..end].to_string())
}

#[tokio::test]
async fn every_style_serves_every_record_once() {
    let n = 257;
    let expected = serde_json::to_string(&all_records(5, n)).unwrap();
    for style in Style::ALL {
        let server = start(MockConfig::new(5, n)).await;
        let (got, pages) = fetch_all(&server, style, 50).await;
        assert_eq!(got.len(), n, "{style:?}");
        // Compared as text: exact number literals matter, not just values.
        assert_eq!(serde_json::to_string(&got).unwrap(), expected, "{style:?}");
        let stats = server.stats();
        assert_eq!(stats.requests, pages as u64, "{style:?}");
        assert_eq!(stats.ok, pages as u64, "{style:?}");
        assert_eq!(stats.records_served, n as u64, "{style:?}");
        server.shutdown().await;
    }
}

#[tokio::test]
async fn page_size_defaults_and_clamps() {
    let server = start(MockConfig {
        max_page_size: 120,
        ..MockConfig::new(1, 300)
    })
    .await;
    let c = client();
    let v = body(get(&c, &format!("{}/offset/items", server.base_url())).await).await;
    assert_eq!(list(&v["data"]).len(), DEFAULT_PAGE_SIZE);
    let v = body(
        get(
            &c,
            &format!("{}/cursor/items?limit=100000", server.base_url()),
        )
        .await,
    )
    .await;
    assert_eq!(list(&v["data"]).len(), 120);
    // A body with an integer above 2^53 keeps its exact literal on the wire.
    let text = get(&c, &format!("{}/offset/items?limit=1", server.base_url()))
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("\"big\":9007199254740994"), "{text}");
    server.shutdown().await;
}

#[tokio::test]
async fn requires_the_bearer_token() {
    let server = start(MockConfig::new(1, 10)).await;
    let c = client();
    let url = format!("{}/offset/items", server.base_url());
    let attempts = [
        c.get(&url).send().await.unwrap(),
        c.get(&url).bearer_auth("wrong").send().await.unwrap(),
        c.get(&url)
            .basic_auth(TOKEN, Some("x"))
            .send()
            .await
            .unwrap(),
    ];
    for resp in attempts {
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert!(v["error"].is_string());
    }
    let stats = server.stats();
    assert_eq!((stats.requests, stats.unauthorized, stats.ok), (3, 3, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn bucket_limits_with_headers_and_both_retry_forms() {
    let server = start(MockConfig {
        rate: 1.0,
        burst: 5,
        ..MockConfig::new(3, 100)
    })
    .await;
    let c = client();
    let url = format!("{}/offset/items?limit=1", server.base_url());
    let (mut seconds, mut dates, mut limited) = (0, 0, 0);
    for i in 0..40 {
        let resp = get(&c, &url).await;
        let h = resp.headers();
        assert_eq!(h["x-ratelimit-limit"], "5");
        assert!(h.contains_key("x-ratelimit-remaining"));
        assert!(h.contains_key("x-ratelimit-reset"));
        if i < 5 {
            assert_eq!(resp.status(), StatusCode::OK, "request {i}");
            assert_eq!(h["x-ratelimit-remaining"], (4 - i).to_string().as_str());
            continue;
        }
        if resp.status() != StatusCode::TOO_MANY_REQUESTS {
            // A token refilled while the test ran.
            continue;
        }
        limited += 1;
        assert_eq!(h["x-ratelimit-remaining"], "0");
        let retry = h["retry-after"].to_str().unwrap().to_string();
        if let Ok(secs) = retry.parse::<u64>() {
            assert!(secs >= 1);
            seconds += 1;
        } else {
            let when = httpdate::parse_http_date(&retry).unwrap();
            assert!(when > std::time::SystemTime::now());
            dates += 1;
        }
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert!(v["error"].is_string());
    }
    assert!(limited >= 30, "{limited}");
    assert!(seconds > 0 && dates > 0, "{seconds} {dates}");
    let stats = server.stats();
    assert_eq!(stats.bucket_429, limited);
    assert_eq!(stats.status_429, limited);
    assert_eq!(stats.faults["429"], 0);
    assert_eq!(stats.requests, 40);
    server.shutdown().await;
}

/// Turns one fault on.
type SetFault = fn(&mut Faults);

#[tokio::test]
async fn injected_429_and_5xx() {
    let cases: [(SetFault, StatusCode, &str); 5] = [
        (|f| f.p_429 = 1.0, StatusCode::TOO_MANY_REQUESTS, "429"),
        (|f| f.p_500 = 1.0, StatusCode::INTERNAL_SERVER_ERROR, "500"),
        (|f| f.p_502 = 1.0, StatusCode::BAD_GATEWAY, "502"),
        (|f| f.p_503 = 1.0, StatusCode::SERVICE_UNAVAILABLE, "503"),
        (|f| f.p_504 = 1.0, StatusCode::GATEWAY_TIMEOUT, "504"),
    ];
    for (set, status, key) in cases {
        let mut config = MockConfig::new(1, 10);
        set(&mut config.faults);
        let server = start(config).await;
        let resp = get(&client(), &format!("{}/page/items", server.base_url())).await;
        assert_eq!(resp.status(), status);
        assert!(resp.headers().contains_key("x-ratelimit-remaining"));
        if key == "429" {
            let retry = resp.headers()["retry-after"].to_str().unwrap().to_string();
            assert!(
                retry == "1" || httpdate::parse_http_date(&retry).is_ok(),
                "{retry}"
            );
        }
        let stats = server.stats();
        assert_eq!(stats.faults[key], 1);
        assert_eq!(stats.bucket_429, 0);
        assert_eq!(stats.ok, 0);
        server.shutdown().await;
    }
}

/// Asks for pages 0..20, three attempts each, in the given order and with the
/// given concurrency; returns the fault counts.
async fn fault_profile(seed: u64, reverse: bool, concurrent: bool) -> (BTreeMap<String, u64>, u64) {
    let server = start(MockConfig {
        faults: Faults {
            p_429: 0.05,
            p_500: 0.1,
            p_502: 0.05,
            p_503: 0.05,
            p_504: 0.05,
            p_reset: 0.05,
            p_truncated: 0.1,
            p_slow: 0.05,
            slow_ms: 20,
            ..Faults::default()
        },
        ..MockConfig::new(seed, 500)
    })
    .await;
    let mut urls: Vec<String> = (0..60)
        .map(|i| {
            format!(
                "{}/offset/items?offset={}&limit=25",
                server.base_url(),
                (i % 20) * 25
            )
        })
        .collect();
    if reverse {
        urls.reverse();
    }
    let c = client();
    let fetch = |url: String| {
        let c = c.clone();
        async move {
            // Outcomes differ by fault; only the server's tally matters here.
            if let Ok(resp) = c.get(&url).bearer_auth(TOKEN).send().await {
                let _ = resp.bytes().await;
            }
        }
    };
    if concurrent {
        futures::future::join_all(urls.into_iter().map(fetch)).await;
    } else {
        for url in urls {
            fetch(url).await;
        }
    }
    let stats = server.stats();
    server.shutdown().await;
    assert_eq!(stats.requests, 60);
    (stats.faults, stats.ok)
}

#[tokio::test]
async fn fault_draws_do_not_depend_on_arrival_order() {
    let a = fault_profile(21, false, false).await;
    let b = fault_profile(21, true, true).await;
    assert_eq!(a, b);
    assert!(a.0.values().sum::<u64>() > 0, "{a:?}");
    let other = fault_profile(22, false, false).await;
    assert_ne!(a.0, other.0);
}

#[tokio::test]
async fn reset_really_fails_the_client() {
    let server = start(MockConfig {
        faults: Faults {
            p_reset: 1.0,
            ..Faults::default()
        },
        ..MockConfig::new(1, 500)
    })
    .await;
    let url = format!("{}/offset/items?limit=200", server.base_url());
    let resp = get(&client(), &url).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let announced: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(announced > 1000);
    assert!(resp.bytes().await.is_err());

    // The same over a raw socket: about half of the promised body arrives.
    let mut sock = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let request = format!(
        "GET /offset/items?limit=200 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n",
        server.addr()
    );
    sock.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"));
    assert!(
        head.contains(&format!("content-length: {announced}")),
        "{head}"
    );
    let got = raw.len() - split;
    assert!(
        got < announced && got >= announced / 3,
        "{got} of {announced}"
    );

    let stats = server.stats();
    assert_eq!(stats.faults["reset"], 2);
    assert_eq!((stats.ok, stats.records_served), (0, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn truncated_is_valid_http_but_invalid_json() {
    let server = start(MockConfig {
        faults: Faults {
            p_truncated: 1.0,
            ..Faults::default()
        },
        ..MockConfig::new(1, 50)
    })
    .await;
    for style in Style::ALL {
        let resp = get(&client(), &server.url(style)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let announced: usize = resp.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let bytes = resp.bytes().await.unwrap();
        assert_eq!(bytes.len(), announced);
        assert!(
            serde_json::from_slice::<Value>(&bytes).is_err(),
            "{style:?}"
        );
    }
    let stats = server.stats();
    assert_eq!(stats.faults["truncated"], Style::ALL.len() as u64);
    assert_eq!(stats.ok, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn slow_body_arrives_whole_but_late() {
    let server = start(MockConfig {
        faults: Faults {
            p_slow: 1.0,
            slow_ms: 300,
            ..Faults::default()
        },
        ..MockConfig::new(1, 50)
    })
    .await;
    let started = Instant::now();
    let v = body(get(&client(), &format!("{}/offset/items", server.base_url())).await).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(list(&v["data"]).len(), 50);
    let stats = server.stats();
    assert_eq!(
        (stats.faults["slow"], stats.ok, stats.records_served),
        (1, 1, 50)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn hang_outlasts_a_client_timeout() {
    let server = start(MockConfig {
        faults: Faults {
            p_hang: 1.0,
            hang_ms: 1500,
            ..Faults::default()
        },
        ..MockConfig::new(1, 50)
    })
    .await;
    let c = Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = c
        .get(format!("{}/offset/items", server.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(server.stats().faults["hang"], 1);
    server.shutdown().await;
}

#[tokio::test]
async fn poison_page_answers_404_until_cleared() {
    let server = start(MockConfig {
        fail_record: Some(150),
        ..MockConfig::new(1, 300)
    })
    .await;
    let c = client();
    let base = server.base_url();
    let poisoned = format!("{base}/offset/items?offset=100&limit=100");
    let resp = get(&c, &poisoned).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(resp.headers().contains_key("x-ratelimit-remaining"));
    let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(v, json!({"error": "not found"}));
    body(get(&c, &format!("{base}/offset/items?offset=0&limit=100")).await).await;

    // Cleared through the control endpoint, which is itself not counted.
    let cleared = c
        .post(format!("{base}/_mock/fail_record"))
        .json(&json!({"id": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), StatusCode::OK);
    let v = body(get(&c, &poisoned).await).await;
    assert_eq!(list(&v["data"]).len(), 100);

    server.set_fail_record(Some(7));
    assert_eq!(
        get(&c, &format!("{base}/cursor/items?limit=10"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    c.post(format!("{base}/_mock/fail_record"))
        .json(&json!({"id": 250}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        get(&c, &format!("{base}/page/items?page=3&per_page=100"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    let over_http: MockStats = c
        .get(format!("{base}/_mock/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http, server.stats());
    assert_eq!(over_http.requests, 5);
    assert_eq!(over_http.not_found, 3);
    assert_eq!(over_http.ok, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_parameters_answer_400() {
    let server = start(MockConfig::new(1, 30)).await;
    let c = client();
    for q in [
        "/cursor/items?cursor=deadbeef",
        "/offset/items?limit=-3",
        "/page/items?page=0",
    ] {
        let resp = get(&c, &format!("{}{q}", server.base_url())).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{q}");
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert!(v["error"].is_string());
    }
    assert_eq!(server.stats().bad_request, 3);
    server.shutdown().await;
}

#[tokio::test]
async fn peak_and_timestamps_are_tracked() {
    let server = start(MockConfig::new(1, 30)).await;
    let c = client();
    let url = format!("{}/offset/items?limit=1", server.base_url());
    futures::future::join_all((0..12).map(|_| get(&c, &url))).await;
    let stats = server.stats();
    assert_eq!(stats.requests, 12);
    assert_eq!(stats.peak_requests_1s, 12);
    let (first, last) = (
        stats.first_request_at_ms.unwrap(),
        stats.last_request_at_ms.unwrap(),
    );
    assert!(first <= last);
    let addr = server.addr();
    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
