//! The pagination styles: the path each one lives at and how an answer (body
//! and headers) is shaped, including the totals it states. Which records a
//! request gets is `pages`' business.

use std::ops::Range;

use axum::http::{header, HeaderName, HeaderValue};
use serde_json::{json, Map, Value};

use super::cursor;
use super::json_server;
use super::pages::Plan;

/// Page size when the request names none.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// The header that states the size of the data set.
const X_TOTAL_COUNT: HeaderName = HeaderName::from_static("x-total-count");

/// One pagination style, served at [`Style::path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Style {
    /// `?offset=O&limit=L` → `{"data":[...],"total":N}`
    Offset,
    /// As `Offset` without `total`.
    OffsetNoTotal,
    /// `?page=P&per_page=S` (P from 1) → `{"items":[...],"total_pages":T}`
    Page,
    /// As `Page` without `total_pages`.
    PageNoTotal,
    /// `?cursor=C&limit=L` → `{"data":[...],"next_cursor":"..."|null}`
    Cursor,
    /// Bare array; next cursor in the `X-Next-Cursor` header.
    CursorHeader,
    /// `?starting_after=ID&limit=L` → `{"data":[...],"has_more":bool}`
    LastRecord,
    /// `?after=ID&limit=L` → `{"data":[...],"next":"http://..."|null}`
    NextUrl,
    /// `?after=ID&limit=L` → `{"data":[...],"next":"/...","done":bool}`
    NextUrlRelative,
    /// Bare array; RFC 8288 `Link` header with `rel="first"` and `rel="next"`.
    Link,
    /// json-server's list endpoint: `?_page=P&_limit=L` (P from 1; `_limit`
    /// alone gives the first L records) → bare array, `X-Total-Count`, and a
    /// `Link` of first/prev/next/last when `_page` was given. See the
    /// `json_server` module for the exact header and how it differs from
    /// json-server's own.
    JsonServer,
}

impl Style {
    pub const ALL: [Style; 11] = [
        Style::Offset,
        Style::OffsetNoTotal,
        Style::Page,
        Style::PageNoTotal,
        Style::Cursor,
        Style::CursorHeader,
        Style::LastRecord,
        Style::NextUrl,
        Style::NextUrlRelative,
        Style::Link,
        Style::JsonServer,
    ];

    /// The path the style is served at.
    pub fn path(self) -> &'static str {
        match self {
            Style::Offset => "/offset/items",
            Style::OffsetNoTotal => "/offset-nototal/items",
            Style::Page => "/page/items",
            Style::PageNoTotal => "/page-nototal/items",
            Style::Cursor => "/cursor/items",
            Style::CursorHeader => "/cursor-header/items",
            Style::LastRecord => "/last-record/items",
            Style::NextUrl => "/next-url/items",
            Style::NextUrlRelative => "/next-url-relative/items",
            Style::Link => "/link/items",
            Style::JsonServer => "/json-server/items",
        }
    }
}

/// Test shorthand for the fixed data set's page: `pages::parse`, then
/// `pages::resolve` over ids `1..=records`.
#[cfg(test)]
pub(crate) fn plan(
    style: Style,
    query: Option<&str>,
    records: usize,
    max_page_size: usize,
    seed: u64,
) -> Result<Plan, String> {
    let ask = super::pages::parse(style, query, max_page_size, seed)?;
    Ok(super::pages::resolve(
        &ask,
        super::pages::Ids::Fixed(records),
        false,
    ))
}

/// A rendered answer, before any fault is applied to it.
#[derive(Debug, Clone)]
pub(crate) struct Rendered {
    pub body: Value,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// What an answer says beyond the records on its page.
#[derive(Debug, Clone)]
pub(crate) struct Dress<'a> {
    pub seed: u64,
    /// The request's Host (already checked to be safe to embed), used for
    /// absolute links.
    pub host: &'a str,
    /// See [`MockConfig::header_totals`](super::MockConfig::header_totals).
    pub header_totals: bool,
    /// See [`MockConfig::stated_total`](super::MockConfig::stated_total).
    pub stated_total: Option<usize>,
    /// See [`MockConfig::next_url`](super::MockConfig::next_url).
    pub next_url: Option<&'a str>,
}

/// Test shorthand for the answer from the fixed data set, dressed as by
/// default.
#[cfg(test)]
pub(crate) fn render(plan: &Plan, seed: u64, host: &str) -> Rendered {
    let data = plan
        .page
        .iter()
        .map(|&id| super::records::record(seed, plan.records, id))
        .collect();
    let dress = Dress {
        seed,
        host,
        header_totals: false,
        stated_total: None,
        next_url: None,
    };
    render_page(plan, data, &dress)
}

/// Builds the answer for `plan` around `data`, the records on its page.
pub(crate) fn render_page(plan: &Plan, data: Vec<Value>, dress: &Dress<'_>) -> Rendered {
    let total = dress.stated_total.unwrap_or(plan.records);
    let mut headers = Vec::new();
    let body = body(plan, Value::Array(data), dress, total, &mut headers);
    // json-server always counts; the other styles only when asked to.
    if dress.header_totals || plan.style == Style::JsonServer {
        headers.push((X_TOTAL_COUNT, HeaderValue::from(total)));
    }
    if dress.header_totals {
        headers.extend(content_range(plan, total));
    }
    Rendered { body, headers }
}

/// `Content-Range: items FIRST-LAST/TOTAL`, with the 0-based inclusive
/// positions of the page's records in the ordered data set, or
/// `items */TOTAL` for an empty page.
fn content_range(plan: &Plan, total: usize) -> Option<(HeaderName, HeaderValue)> {
    let range = match positions(plan) {
        p if p.is_empty() => format!("items */{total}"),
        p => format!("items {}-{}/{total}", p.start, p.end - 1),
    };
    header_value(range).map(|v| (header::CONTENT_RANGE, v))
}

/// The positions of the page's records in the ordered data set.
fn positions(plan: &Plan) -> Range<usize> {
    plan.first..plan.first.saturating_add(plan.page.len())
}

/// The body of each style, stating `total`; headers that carry paging go
/// into `headers`.
fn body(
    plan: &Plan,
    data: Value,
    dress: &Dress<'_>,
    total: usize,
    headers: &mut Vec<(HeaderName, HeaderValue)>,
) -> Value {
    let host = dress.host;
    match plan.style {
        Style::Offset => object([("data", data), ("total", json!(total))]),
        Style::OffsetNoTotal => object([("data", data)]),
        Style::Page => {
            let pages = total.div_ceil(plan.limit.max(1));
            object([("items", data), ("total_pages", json!(pages))])
        }
        Style::PageNoTotal => object([("items", data)]),
        Style::Cursor => {
            let next = next_cursor(plan, dress.seed).map_or(Value::Null, Value::String);
            object([("data", data), ("next_cursor", next)])
        }
        Style::CursorHeader => {
            if let Some(v) = next_cursor(plan, dress.seed).and_then(header_value) {
                headers.push((HeaderName::from_static("x-next-cursor"), v));
            }
            data
        }
        Style::LastRecord => object([("data", data), ("has_more", json!(plan.more()))]),
        Style::NextUrl => {
            let next = plan.next_after.map_or(Value::Null, |after| {
                Value::String(dress.next_url.map_or_else(
                    || {
                        format!(
                            "http://{host}{}?after={after}&limit={}",
                            Style::NextUrl.path(),
                            plan.limit
                        )
                    },
                    String::from,
                ))
            });
            object([("data", data), ("next", next)])
        }
        Style::NextUrlRelative => {
            // `next` is present even on the last page: clients must honour `done`.
            let next = format!(
                "{}?after={}&limit={}",
                Style::NextUrlRelative.path(),
                plan.next_after.unwrap_or(plan.last()),
                plan.limit
            );
            object([
                ("data", data),
                ("next", Value::String(next)),
                ("done", json!(!plan.more())),
            ])
        }
        Style::Link => {
            headers.extend(link_header(plan, host));
            data
        }
        Style::JsonServer => {
            headers.extend(json_server::link(plan, host, total));
            data
        }
    }
}

fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    let mut obj = Map::new();
    for (k, v) in fields {
        obj.insert(k.to_string(), v);
    }
    Value::Object(obj)
}

fn next_cursor(plan: &Plan, seed: u64) -> Option<String> {
    plan.next_after.map(|after| cursor::encode(seed, after))
}

fn header_value(text: String) -> Option<HeaderValue> {
    HeaderValue::from_str(&text).ok()
}

/// RFC 8288 `Link` with `rel="first"`, and `rel="next"` unless this is the
/// last page.
fn link_header(plan: &Plan, host: &str) -> Option<(HeaderName, HeaderValue)> {
    let path = Style::Link.path();
    let limit = plan.limit;
    let mut link = format!("<http://{host}{path}?limit={limit}>; rel=\"first\"");
    if let Some(after) = plan.next_after {
        link.push_str(&format!(
            ", <http://{host}{path}?after={after}&limit={limit}>; rel=\"next\""
        ));
    }
    header_value(link).map(|v| (header::LINK, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(style: Style, q: &str, records: usize) -> Range<usize> {
        plan(style, Some(q), records, 1000, 1).unwrap().ids
    }

    #[test]
    fn windows() {
        assert_eq!(ids(Style::Offset, "", 250), 1..101);
        assert_eq!(ids(Style::Offset, "offset=200&limit=100", 250), 201..251);
        assert_eq!(ids(Style::Offset, "offset=900", 250), 251..251);
        assert_eq!(ids(Style::Page, "page=3&per_page=10", 250), 21..31);
        assert_eq!(
            ids(Style::LastRecord, "starting_after=245&limit=10", 250),
            246..251
        );
        assert_eq!(ids(Style::Link, "after=5&limit=0", 250), 6..7);
        assert_eq!(
            ids(Style::NextUrl, "limit=99999&x=1&after=0", 5000),
            1..1001
        );
        assert_eq!(
            ids(Style::Offset, &format!("offset={}", usize::MAX), 10),
            11..11
        );
        let c = cursor::encode(1, 40);
        assert_eq!(
            ids(Style::Cursor, &format!("cursor={c}&limit=5"), 250),
            41..46
        );
        assert_eq!(ids(Style::Cursor, "cursor=&limit=5", 250), 1..6);
    }

    #[test]
    fn bad_params_are_errors() {
        for (style, q) in [
            (Style::Offset, "offset=-1"),
            (Style::Offset, "limit=ten"),
            (Style::Page, "page=0"),
            (Style::Cursor, "cursor=nope"),
            (Style::LastRecord, "starting_after=1.5"),
        ] {
            assert!(plan(style, Some(q), 10, 1000, 1).is_err(), "{q}");
        }
    }

    #[test]
    fn last_pages() {
        let p = plan(Style::Cursor, Some("limit=5"), 5, 1000, 1).unwrap();
        assert_eq!(render(&p, 1, "h").body["next_cursor"], Value::Null);
        let p = plan(Style::NextUrlRelative, Some("after=3&limit=5"), 5, 1000, 1).unwrap();
        let body = render(&p, 1, "h").body;
        assert_eq!(body["done"], true);
        assert_eq!(body["next"], "/next-url-relative/items?after=5&limit=5");
        let p = plan(Style::Link, Some("after=0&limit=2"), 5, 1000, 1).unwrap();
        let r = render(&p, 1, "h:1");
        assert_eq!(
            r.headers[0].1,
            "<http://h:1/link/items?limit=2>; rel=\"first\", <http://h:1/link/items?after=2&limit=2>; rel=\"next\""
        );
        let p = plan(Style::Page, Some("per_page=2"), 5, 1000, 1).unwrap();
        assert_eq!(render(&p, 1, "h").body["total_pages"], 3);
    }

    fn dressed(plan: &Plan, header_totals: bool, stated_total: Option<usize>) -> Rendered {
        let dress = Dress {
            seed: 1,
            host: "h",
            header_totals,
            stated_total,
            next_url: None,
        };
        render_page(plan, Vec::new(), &dress)
    }

    fn header<'a>(r: &'a Rendered, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn totals_in_headers_give_positions() {
        let cases = [
            (Style::Offset, "offset=100&limit=100", "items 100-199/1234"),
            (Style::Page, "page=13&per_page=100", "items 1200-1233/1234"),
            (
                Style::LastRecord,
                "starting_after=10&limit=5",
                "items 10-14/1234",
            ),
            (Style::Link, "limit=1", "items 0-0/1234"),
            (Style::Offset, "offset=1234", "items */1234"),
            (Style::NextUrl, "after=5000", "items */1234"),
        ];
        for (style, q, range) in cases {
            let p = plan(style, Some(q), 1234, 1000, 1).unwrap();
            let r = dressed(&p, true, None);
            assert_eq!(header(&r, "x-total-count"), Some("1234"), "{q}");
            assert_eq!(header(&r, "content-range"), Some(range), "{q}");
            let plain = dressed(&p, false, None);
            assert_eq!(header(&plain, "x-total-count"), None, "{q}");
            assert_eq!(header(&plain, "content-range"), None, "{q}");
        }
    }

    #[test]
    fn a_stated_total_replaces_every_total() {
        let p = plan(Style::Offset, Some("offset=0&limit=10"), 57, 1000, 1).unwrap();
        let r = dressed(&p, true, Some(990));
        assert_eq!(r.body["total"], 990);
        assert_eq!(header(&r, "x-total-count"), Some("990"));
        assert_eq!(header(&r, "content-range"), Some("items 0-9/990"));
        // total_pages follows the stated total and the clamped page size.
        let p = plan(Style::Page, Some("per_page=5000"), 57, 20, 1).unwrap();
        assert_eq!(dressed(&p, false, None).body["total_pages"], 3);
        assert_eq!(dressed(&p, false, Some(990)).body["total_pages"], 50);
        assert_eq!(dressed(&p, false, Some(0)).body["total_pages"], 0);
    }

    #[test]
    fn json_server_always_counts_and_its_last_link_follows_the_stated_total() {
        let p = plan(Style::JsonServer, Some("_page=2&_limit=10"), 57, 1000, 1).unwrap();
        let r = dressed(&p, false, None);
        assert_eq!(header(&r, "x-total-count"), Some("57"));
        assert_eq!(header(&r, "content-range"), None);
        assert!(header(&r, "link").is_some_and(|l| l.ends_with("_page=6&_limit=10>; rel=\"last\"")));
        let r = dressed(&p, true, Some(990));
        assert_eq!(header(&r, "x-total-count"), Some("990"));
        assert_eq!(header(&r, "content-range"), Some("items 10-19/990"));
        assert!(
            header(&r, "link").is_some_and(|l| l.ends_with("_page=99&_limit=10>; rel=\"last\""))
        );
        assert_eq!(
            r.headers
                .iter()
                .filter(|(k, _)| k == "x-total-count")
                .count(),
            1
        );
    }
}
