//! The pagination styles: the path each one lives at, which records a request
//! asks for, and how the answer (body and headers) is shaped.

use std::ops::Range;

use axum::http::{HeaderName, HeaderValue};
use serde_json::{json, Map, Value};

use super::cursor;
use super::records::record;

/// Page size when the request names none.
pub const DEFAULT_PAGE_SIZE: usize = 100;

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
}

impl Style {
    pub const ALL: [Style; 10] = [
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
        }
    }
}

/// What one request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub style: Style,
    /// The ids on this page, ascending; empty past the end.
    pub ids: Range<usize>,
    /// The page size in effect after defaulting and clamping.
    pub limit: usize,
    /// The size of the data set.
    pub records: usize,
}

impl Plan {
    /// Whether records remain after this page.
    fn more(&self) -> bool {
        self.ids.end <= self.records
    }

    /// The last id this page covers (the id before it when the page is empty).
    fn last(&self) -> usize {
        self.ids.end.saturating_sub(1)
    }

    pub(crate) fn contains(&self, id: usize) -> bool {
        self.ids.contains(&id)
    }
}

/// Parses a request's query for `style`. Unknown parameters are ignored
/// (clients add partition and fixed parameters); malformed known ones are an
/// error message for a 400.
pub(crate) fn plan(
    style: Style,
    query: Option<&str>,
    records: usize,
    max_page_size: usize,
    seed: u64,
) -> Result<Plan, String> {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let number = |name: &str| -> Result<Option<usize>, String> {
        match get(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<usize>()
                .map(Some)
                .map_err(|_| format!("invalid {name}: {v:?}")),
        }
    };
    let size_name = match style {
        Style::Page | Style::PageNoTotal => "per_page",
        _ => "limit",
    };
    let max = max_page_size.max(1);
    let limit = number(size_name)?
        .unwrap_or(DEFAULT_PAGE_SIZE)
        .clamp(1, max);
    let after = match style {
        Style::Offset | Style::OffsetNoTotal => number("offset")?.unwrap_or(0),
        Style::Page | Style::PageNoTotal => {
            let page = number("page")?.unwrap_or(1);
            if page == 0 {
                return Err("invalid page: pages start at 1".to_string());
            }
            (page - 1).saturating_mul(limit)
        }
        Style::Cursor | Style::CursorHeader => match get("cursor") {
            None | Some("") => 0,
            Some(c) => cursor::decode(seed, c).ok_or_else(|| format!("invalid cursor: {c:?}"))?,
        },
        Style::LastRecord => number("starting_after")?.unwrap_or(0),
        Style::NextUrl | Style::NextUrlRelative | Style::Link => number("after")?.unwrap_or(0),
    };
    let end_of_data = records.saturating_add(1);
    let lo = after.saturating_add(1).min(end_of_data);
    let hi = lo.saturating_add(limit).min(end_of_data);
    Ok(Plan {
        style,
        ids: lo..hi,
        limit,
        records,
    })
}

/// A rendered answer, before any fault is applied to it.
#[derive(Debug, Clone)]
pub(crate) struct Rendered {
    pub body: Value,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Builds the answer for `plan`. `host` is the request's Host (already
/// checked to be safe to embed), used for absolute next links.
pub(crate) fn render(plan: &Plan, seed: u64, host: &str) -> Rendered {
    let data: Vec<Value> = plan
        .ids
        .clone()
        .map(|id| record(seed, plan.records, id))
        .collect();
    let more = plan.more();
    let last = plan.last();
    let limit = plan.limit;
    let mut headers = Vec::new();
    let wrap = |fields: Vec<(&str, Value)>| {
        let mut obj = Map::new();
        for (k, v) in fields {
            obj.insert(k.to_string(), v);
        }
        Value::Object(obj)
    };
    let body = match plan.style {
        Style::Offset => wrap(vec![
            ("data", Value::Array(data)),
            ("total", json!(plan.records)),
        ]),
        Style::OffsetNoTotal => wrap(vec![("data", Value::Array(data))]),
        Style::Page => {
            let pages = plan.records.div_ceil(limit);
            wrap(vec![
                ("items", Value::Array(data)),
                ("total_pages", json!(pages)),
            ])
        }
        Style::PageNoTotal => wrap(vec![("items", Value::Array(data))]),
        Style::Cursor => {
            let next = if more {
                Value::String(cursor::encode(seed, last))
            } else {
                Value::Null
            };
            wrap(vec![("data", Value::Array(data)), ("next_cursor", next)])
        }
        Style::CursorHeader => {
            if more {
                if let Ok(v) = HeaderValue::from_str(&cursor::encode(seed, last)) {
                    headers.push((HeaderName::from_static("x-next-cursor"), v));
                }
            }
            Value::Array(data)
        }
        Style::LastRecord => wrap(vec![
            ("data", Value::Array(data)),
            ("has_more", json!(more)),
        ]),
        Style::NextUrl => {
            let next = if more {
                Value::String(format!(
                    "http://{host}{}?after={last}&limit={limit}",
                    Style::NextUrl.path()
                ))
            } else {
                Value::Null
            };
            wrap(vec![("data", Value::Array(data)), ("next", next)])
        }
        Style::NextUrlRelative => {
            // `next` is present even on the last page: clients must honour `done`.
            let next = format!(
                "{}?after={last}&limit={limit}",
                Style::NextUrlRelative.path()
            );
            wrap(vec![
                ("data", Value::Array(data)),
                ("next", Value::String(next)),
                ("done", json!(!more)),
            ])
        }
        Style::Link => {
            let path = Style::Link.path();
            let mut link = format!("<http://{host}{path}?limit={limit}>; rel=\"first\"");
            if more {
                link.push_str(&format!(
                    ", <http://{host}{path}?after={last}&limit={limit}>; rel=\"next\""
                ));
            }
            if let Ok(v) = HeaderValue::from_str(&link) {
                headers.push((axum::http::header::LINK, v));
            }
            Value::Array(data)
        }
    };
    Rendered { body, headers }
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
}
