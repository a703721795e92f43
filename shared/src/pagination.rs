//! Pagination strategies: where a page is, and where the next one is.
//!
//! One strategy per style of [`PaginationSpec`]. Each is pure: given the
//! position of a page and its response, it returns the records and what comes
//! next — nothing, the next link of a chain, or (for offset and page-number
//! styles whose first page reports a total) every remaining page at once.
//!
//! A URL handed to us by the source (next-URL and `Link` styles) must stay on
//! the source's origin: following it elsewhere would send our credentials to
//! a host the spec never named.

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use crate::flatten::kind;
use crate::spec::PaginationSpec;

/// Where a page is. Stored in Postgres with each page task, so a task can be
/// retried or replayed without any other context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Position {
    Offset {
        offset: u64,
    },
    Page {
        page: u64,
    },
    /// `None` is the first page (no cursor sent).
    Cursor {
        cursor: Option<String>,
    },
    /// Last-record style: the key of the last record seen (`None`: first page).
    After {
        after: Option<String>,
    },
    /// Next-URL and `Link` styles: `None` is the first page.
    Url {
        url: Option<String>,
    },
}

/// Whether a page may lead to more pages. The first page of a partition can
/// fan out; a fanned-out page is a leaf; chain styles walk one page at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Chain,
    Leaf,
}

/// What to request for a position: query parameters added to the base
/// request, or a full URL given by the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Query(Vec<(String, String)>),
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Done,
    Chain(Position),
    /// Every remaining page of the partition (the first page is not included).
    FanOut(Vec<Position>),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PaginationError {
    #[error("records not found at `{path}` in the response body")]
    NoRecords { path: String },
    #[error("`{path}` in the response body is not an array of records (found {found})")]
    NotAnArray { path: String, found: &'static str },
    #[error("`{path}` in the response body is {found}, expected {expected}")]
    BadField {
        path: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("next page URL {url:?} is not usable: {reason}")]
    BadNextUrl { url: String, reason: String },
    #[error("position {position:?} does not belong to the {style} style")]
    WrongPosition {
        position: Position,
        style: &'static str,
    },
    #[error("the source returned the same cursor again; stopping to avoid a loop")]
    CursorLoop,
    #[error("fan-out of {pages} pages is more than the limit of {limit}")]
    TooManyPages { pages: u64, limit: u64 },
}

/// Guards against a bogus `total` asking for a billion tasks.
pub const MAX_PAGES_PER_PARTITION: u64 = 1_000_000;

/// The position of the first page of a partition.
pub fn first_position(spec: &PaginationSpec) -> Position {
    match spec {
        PaginationSpec::Offset { .. } => Position::Offset { offset: 0 },
        PaginationSpec::PageNumber { first_page, .. } => Position::Page { page: *first_page },
        PaginationSpec::Cursor { .. } => Position::Cursor { cursor: None },
        PaginationSpec::LastRecord { .. } => Position::After { after: None },
        PaginationSpec::NextUrl { .. } | PaginationSpec::LinkHeader { .. } => {
            Position::Url { url: None }
        }
    }
}

/// The query parameters (or URL) that fetch the page at `position`.
pub fn target(
    spec: &PaginationSpec,
    page_size: u32,
    position: &Position,
) -> Result<Target, PaginationError> {
    let size = page_size.to_string();
    let wrong = || PaginationError::WrongPosition {
        position: position.clone(),
        style: spec.style_name(),
    };
    let query = match (spec, position) {
        (
            PaginationSpec::Offset {
                offset_param,
                limit_param,
                ..
            },
            Position::Offset { offset },
        ) => vec![
            (offset_param.clone(), offset.to_string()),
            (limit_param.clone(), size),
        ],
        (
            PaginationSpec::PageNumber {
                page_param,
                size_param,
                ..
            },
            Position::Page { page },
        ) => vec![
            (page_param.clone(), page.to_string()),
            (size_param.clone(), size),
        ],
        (
            PaginationSpec::Cursor {
                cursor_param,
                size_param,
                ..
            },
            Position::Cursor { cursor },
        ) => {
            let mut q = vec![(size_param.clone(), size)];
            if let Some(c) = cursor {
                q.push((cursor_param.clone(), c.clone()));
            }
            q
        }
        (
            PaginationSpec::LastRecord {
                param, size_param, ..
            },
            Position::After { after },
        ) => {
            let mut q = vec![(size_param.clone(), size)];
            if let Some(a) = after {
                q.push((param.clone(), a.clone()));
            }
            q
        }
        (
            PaginationSpec::NextUrl { size_param, .. } | PaginationSpec::LinkHeader { size_param },
            Position::Url { url },
        ) => match url {
            Some(url) => return Ok(Target::Url(url.clone())),
            None => vec![(size_param.clone(), size)],
        },
        _ => return Err(wrong()),
    };
    Ok(Target::Query(query))
}

/// The records of a page: the array at `records_path`, or the body itself.
pub fn records<'a>(
    body: &'a Value,
    records_path: Option<&str>,
) -> Result<&'a [Value], PaginationError> {
    let (value, path) = match records_path {
        Some(path) => (
            lookup(body, path).ok_or_else(|| PaginationError::NoRecords {
                path: path.to_string(),
            })?,
            path,
        ),
        None => (body, "(body)"),
    };
    match value {
        Value::Array(items) => Ok(items),
        other => Err(PaginationError::NotAnArray {
            path: path.to_string(),
            found: kind(other),
        }),
    }
}

/// A page's response as the strategies see it.
pub struct Page<'a> {
    pub body: &'a Value,
    pub headers: &'a HeaderMap,
    pub records: &'a [Value],
    /// The URL that was requested (relative next URLs resolve against it).
    pub url: &'a Url,
    /// The origin every followed URL must share.
    pub origin: &'a Url,
}

/// What follows the page at `position`.
pub fn next(
    spec: &PaginationSpec,
    page_size: u32,
    position: &Position,
    role: Role,
    page: &Page<'_>,
) -> Result<Next, PaginationError> {
    if role == Role::Leaf {
        return Ok(Next::Done);
    }
    let n = page.records.len() as u64;
    match (spec, position) {
        (PaginationSpec::Offset { total_path, .. }, Position::Offset { offset }) => {
            if n == 0 {
                return Ok(Next::Done);
            }
            let total = match total_path {
                Some(path) => optional_u64(page.body, path)?,
                None => None,
            };
            match total {
                // Only the first page fans out; the step is what the source
                // really served, in case it clamps the page size.
                Some(total) if *offset == 0 => {
                    let step = n.min(page_size as u64).max(1);
                    let pages = total.div_ceil(step).saturating_sub(1);
                    check_fan_out(pages)?;
                    Ok(Next::FanOut(
                        (1..=pages)
                            .map(|i| Position::Offset { offset: i * step })
                            .collect(),
                    ))
                }
                Some(total) if offset + n >= total => Ok(Next::Done),
                Some(_) => Ok(Next::Chain(Position::Offset { offset: offset + n })),
                None if n < page_size as u64 => Ok(Next::Done),
                None => Ok(Next::Chain(Position::Offset { offset: offset + n })),
            }
        }
        (
            PaginationSpec::PageNumber {
                first_page,
                total_pages_path,
                ..
            },
            Position::Page { page: number },
        ) => {
            if n == 0 {
                return Ok(Next::Done);
            }
            let total = match total_pages_path {
                Some(path) => optional_u64(page.body, path)?,
                None => None,
            };
            match total {
                Some(total) if number == first_page => {
                    let pages = total.saturating_sub(1);
                    check_fan_out(pages)?;
                    Ok(Next::FanOut(
                        (1..=pages)
                            .map(|i| Position::Page {
                                page: first_page + i,
                            })
                            .collect(),
                    ))
                }
                Some(total) if number + 1 - first_page >= total => Ok(Next::Done),
                _ => Ok(Next::Chain(Position::Page { page: number + 1 })),
            }
        }
        (
            PaginationSpec::Cursor {
                cursor_path,
                cursor_header,
                ..
            },
            Position::Cursor { cursor },
        ) => {
            let found = match (cursor_path, cursor_header) {
                (Some(path), _) => optional_string(page.body, path)?,
                (None, Some(header)) => page
                    .headers
                    .get(header.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(|s| s.trim().to_string()),
                (None, None) => None,
            };
            match found {
                Some(c) if !c.is_empty() && n > 0 => {
                    if cursor.as_deref() == Some(c.as_str()) {
                        return Err(PaginationError::CursorLoop);
                    }
                    Ok(Next::Chain(Position::Cursor { cursor: Some(c) }))
                }
                _ => Ok(Next::Done),
            }
        }
        (
            PaginationSpec::LastRecord {
                field,
                has_more_path,
                ..
            },
            Position::After { after },
        ) => {
            let has_more = match lookup(page.body, has_more_path) {
                Some(Value::Bool(b)) => *b,
                None | Some(Value::Null) => false,
                Some(other) => {
                    return Err(PaginationError::BadField {
                        path: has_more_path.clone(),
                        found: kind(other),
                        expected: "a boolean",
                    })
                }
            };
            let Some(last) = page.records.last() else {
                return Ok(Next::Done);
            };
            if !has_more {
                return Ok(Next::Done);
            }
            let key = match lookup(last, field) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                other => {
                    return Err(PaginationError::BadField {
                        path: format!("last record.{field}"),
                        found: other.map(kind).unwrap_or("missing"),
                        expected: "a string or number",
                    })
                }
            };
            if after.as_deref() == Some(key.as_str()) {
                return Err(PaginationError::CursorLoop);
            }
            Ok(Next::Chain(Position::After { after: Some(key) }))
        }
        (
            PaginationSpec::NextUrl {
                next_path,
                done_path,
                ..
            },
            Position::Url { .. },
        ) => {
            if let Some(path) = done_path {
                match lookup(page.body, path) {
                    Some(Value::Bool(true)) => return Ok(Next::Done),
                    None | Some(Value::Null) | Some(Value::Bool(false)) => {}
                    Some(other) => {
                        return Err(PaginationError::BadField {
                            path: path.clone(),
                            found: kind(other),
                            expected: "a boolean",
                        })
                    }
                }
            }
            match optional_string(page.body, next_path)? {
                Some(link) if !link.is_empty() => follow(page, &link),
                _ => Ok(Next::Done),
            }
        }
        (PaginationSpec::LinkHeader { .. }, Position::Url { .. }) => {
            let next = page
                .headers
                .get_all(reqwest::header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(next_link);
            match next {
                Some(link) => follow(page, &link),
                None => Ok(Next::Done),
            }
        }
        _ => Err(PaginationError::WrongPosition {
            position: position.clone(),
            style: spec.style_name(),
        }),
    }
}

fn check_fan_out(pages: u64) -> Result<(), PaginationError> {
    if pages > MAX_PAGES_PER_PARTITION {
        return Err(PaginationError::TooManyPages {
            pages,
            limit: MAX_PAGES_PER_PARTITION,
        });
    }
    Ok(())
}

/// Resolves a next link against the request URL and keeps it on the origin.
fn follow(page: &Page<'_>, link: &str) -> Result<Next, PaginationError> {
    let bad = |reason: &str| PaginationError::BadNextUrl {
        url: link.to_string(),
        reason: reason.to_string(),
    };
    let resolved = page.url.join(link).map_err(|e| bad(&e.to_string()))?;
    if resolved.origin() != page.origin.origin() {
        return Err(bad("it leaves the source's origin"));
    }
    if resolved == *page.url {
        return Err(PaginationError::CursorLoop);
    }
    Ok(Next::Chain(Position::Url {
        url: Some(resolved.to_string()),
    }))
}

/// The target of `rel="next"` in one `Link` header value (RFC 8288), which
/// may list several links: `<a>; rel="first", <b>; rel="next"`.
pub fn next_link(header: &str) -> Option<String> {
    let mut rest = header;
    loop {
        let start = rest.find('<')?;
        let end = start + rest[start..].find('>')?;
        let target = &rest[start + 1..end];
        rest = &rest[end + 1..];
        // Parameters run until the next link, which starts with `<`.
        let params_end = rest.find('<').unwrap_or(rest.len());
        let params = &rest[..params_end];
        let is_next = params.split(';').any(|p| {
            let mut kv = p.splitn(2, '=');
            let key = kv.next().unwrap_or("").trim();
            let value = kv.next().unwrap_or("").trim().trim_matches(',').trim();
            key.eq_ignore_ascii_case("rel")
                && value
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.to_string());
        }
    }
}

/// Walks a dotted path through objects.
pub fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

fn optional_u64(body: &Value, path: &str) -> Result<Option<u64>, PaginationError> {
    match lookup(body, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(Value::String(s)) if s.parse::<u64>().is_ok() => Ok(s.parse().ok()),
        Some(other) => Err(PaginationError::BadField {
            path: path.to_string(),
            found: kind(other),
            expected: "a non-negative integer",
        }),
    }
}

fn optional_string(body: &Value, path: &str) -> Result<Option<String>, PaginationError> {
    match lookup(body, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(PaginationError::BadField {
            path: path.to_string(),
            found: kind(other),
            expected: "a string",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};
    use serde_json::json;

    fn origin() -> Url {
        Url::parse("http://api.test:8080/v1/items").unwrap()
    }

    fn run(
        spec: &PaginationSpec,
        position: &Position,
        role: Role,
        body: Value,
        headers: &[(&str, &str)],
        records_path: Option<&str>,
    ) -> Result<Next, PaginationError> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let url = origin();
        let recs = records(&body, records_path)?.to_vec();
        next(
            spec,
            10,
            position,
            role,
            &Page {
                body: &body,
                headers: &map,
                records: &recs,
                url: &url,
                origin: &url,
            },
        )
    }

    fn items(n: usize) -> Vec<Value> {
        (1..=n).map(|i| json!({"id": i})).collect()
    }

    fn offset(total: bool) -> PaginationSpec {
        PaginationSpec::Offset {
            offset_param: "offset".into(),
            limit_param: "limit".into(),
            total_path: total.then(|| "total".to_string()),
        }
    }

    #[test]
    fn offset_with_total_fans_out_from_the_first_page() {
        let spec = offset(true);
        let first = first_position(&spec);
        assert_eq!(
            target(&spec, 10, &first).unwrap(),
            Target::Query(vec![
                ("offset".into(), "0".into()),
                ("limit".into(), "10".into())
            ])
        );
        let next = run(
            &spec,
            &first,
            Role::Chain,
            json!({"data": items(10), "total": 35}),
            &[],
            Some("data"),
        )
        .unwrap();
        assert_eq!(
            next,
            Next::FanOut(vec![
                Position::Offset { offset: 10 },
                Position::Offset { offset: 20 },
                Position::Offset { offset: 30 },
            ])
        );
        // Leaves never lead anywhere.
        let leaf = run(
            &spec,
            &Position::Offset { offset: 10 },
            Role::Leaf,
            json!({"data": items(10), "total": 35}),
            &[],
            Some("data"),
        )
        .unwrap();
        assert_eq!(leaf, Next::Done);
    }

    #[test]
    fn offset_fan_out_follows_a_clamped_page_size() {
        let next = run(
            &offset(true),
            &Position::Offset { offset: 0 },
            Role::Chain,
            json!({"data": items(4), "total": 10}),
            &[],
            Some("data"),
        )
        .unwrap();
        assert_eq!(
            next,
            Next::FanOut(vec![
                Position::Offset { offset: 4 },
                Position::Offset { offset: 8 }
            ])
        );
    }

    #[test]
    fn offset_exact_and_empty_totals() {
        let one_page = run(
            &offset(true),
            &Position::Offset { offset: 0 },
            Role::Chain,
            json!({"data": items(10), "total": 10}),
            &[],
            Some("data"),
        )
        .unwrap();
        assert_eq!(one_page, Next::FanOut(vec![]));
        let empty = run(
            &offset(true),
            &Position::Offset { offset: 0 },
            Role::Chain,
            json!({"data": [], "total": 0}),
            &[],
            Some("data"),
        )
        .unwrap();
        assert_eq!(empty, Next::Done);
    }

    #[test]
    fn offset_without_total_stops_on_a_short_page() {
        let spec = offset(false);
        let full = run(
            &spec,
            &Position::Offset { offset: 20 },
            Role::Chain,
            json!({"data": items(10)}),
            &[],
            Some("data"),
        )
        .unwrap();
        assert_eq!(full, Next::Chain(Position::Offset { offset: 30 }));
        let short = run(
            &spec,
            &Position::Offset { offset: 30 },
            Role::Chain,
            json!({"data": items(3)}),
            &[],
            Some("data"),
        )
        .unwrap();
        assert_eq!(short, Next::Done);
    }

    #[test]
    fn offset_total_of_wrong_type_is_an_error() {
        let err = run(
            &offset(true),
            &Position::Offset { offset: 0 },
            Role::Chain,
            json!({"data": items(10), "total": "many"}),
            &[],
            Some("data"),
        )
        .unwrap_err();
        assert!(
            matches!(err, PaginationError::BadField { ref path, .. } if path == "total"),
            "{err}"
        );
    }

    #[test]
    fn page_number_styles() {
        let with_total = PaginationSpec::PageNumber {
            page_param: "page".into(),
            size_param: "per_page".into(),
            first_page: 1,
            total_pages_path: Some("meta.total_pages".into()),
        };
        let first = first_position(&with_total);
        assert_eq!(first, Position::Page { page: 1 });
        let next = run(
            &with_total,
            &first,
            Role::Chain,
            json!({"items": items(10), "meta": {"total_pages": 3}}),
            &[],
            Some("items"),
        )
        .unwrap();
        assert_eq!(
            next,
            Next::FanOut(vec![Position::Page { page: 2 }, Position::Page { page: 3 }])
        );

        let chain = PaginationSpec::PageNumber {
            page_param: "page".into(),
            size_param: "per_page".into(),
            first_page: 0,
            total_pages_path: None,
        };
        let n = run(
            &chain,
            &Position::Page { page: 0 },
            Role::Chain,
            json!(items(10)),
            &[],
            None,
        )
        .unwrap();
        assert_eq!(n, Next::Chain(Position::Page { page: 1 }));
        let end = run(
            &chain,
            &Position::Page { page: 5 },
            Role::Chain,
            json!([]),
            &[],
            None,
        )
        .unwrap();
        assert_eq!(end, Next::Done);
    }

    fn cursor_body() -> PaginationSpec {
        PaginationSpec::Cursor {
            cursor_param: "cursor".into(),
            cursor_path: Some("next_cursor".into()),
            cursor_header: None,
            size_param: "limit".into(),
        }
    }

    #[test]
    fn cursor_from_body() {
        let spec = cursor_body();
        let first = first_position(&spec);
        assert_eq!(
            target(&spec, 10, &first).unwrap(),
            Target::Query(vec![("limit".into(), "10".into())])
        );
        let n = run(
            &spec,
            &first,
            Role::Chain,
            json!({"data": items(10), "next_cursor": "abc"}),
            &[],
            Some("data"),
        )
        .unwrap();
        let pos = Position::Cursor {
            cursor: Some("abc".into()),
        };
        assert_eq!(n, Next::Chain(pos.clone()));
        assert_eq!(
            target(&spec, 10, &pos).unwrap(),
            Target::Query(vec![
                ("limit".into(), "10".into()),
                ("cursor".into(), "abc".into())
            ])
        );
        for end in [
            json!({"data": items(3), "next_cursor": null}),
            json!({"data": items(3), "next_cursor": ""}),
            json!({"data": items(3)}),
        ] {
            assert_eq!(
                run(&spec, &pos, Role::Chain, end, &[], Some("data")).unwrap(),
                Next::Done
            );
        }
        let looped = run(
            &spec,
            &pos,
            Role::Chain,
            json!({"data": items(3), "next_cursor": "abc"}),
            &[],
            Some("data"),
        );
        assert_eq!(looped, Err(PaginationError::CursorLoop));
    }

    #[test]
    fn cursor_from_header() {
        let spec = PaginationSpec::Cursor {
            cursor_param: "cursor".into(),
            cursor_path: None,
            cursor_header: Some("X-Next-Cursor".into()),
            size_param: "limit".into(),
        };
        let first = first_position(&spec);
        let n = run(
            &spec,
            &first,
            Role::Chain,
            json!(items(10)),
            &[("x-next-cursor", "zz9")],
            None,
        )
        .unwrap();
        assert_eq!(
            n,
            Next::Chain(Position::Cursor {
                cursor: Some("zz9".into())
            })
        );
        let end = run(&spec, &first, Role::Chain, json!(items(10)), &[], None).unwrap();
        assert_eq!(end, Next::Done);
    }

    #[test]
    fn last_record_style() {
        let spec = PaginationSpec::LastRecord {
            param: "starting_after".into(),
            field: "id".into(),
            has_more_path: "has_more".into(),
            size_param: "limit".into(),
        };
        let first = first_position(&spec);
        let n = run(
            &spec,
            &first,
            Role::Chain,
            json!({"data": items(10), "has_more": true}),
            &[],
            Some("data"),
        )
        .unwrap();
        let pos = Position::After {
            after: Some("10".into()),
        };
        assert_eq!(n, Next::Chain(pos.clone()));
        assert_eq!(
            target(&spec, 10, &pos).unwrap(),
            Target::Query(vec![
                ("limit".into(), "10".into()),
                ("starting_after".into(), "10".into())
            ])
        );
        let end = run(
            &spec,
            &pos,
            Role::Chain,
            json!({"data": items(2), "has_more": false}),
            &[],
            Some("data"),
        )
        .unwrap();
        assert_eq!(end, Next::Done);
        let bad = run(
            &spec,
            &first,
            Role::Chain,
            json!({"data": [{"x": 1}], "has_more": true}),
            &[],
            Some("data"),
        )
        .unwrap_err();
        assert!(matches!(bad, PaginationError::BadField { .. }), "{bad}");
    }

    #[test]
    fn next_url_absolute_relative_and_done() {
        let spec = PaginationSpec::NextUrl {
            next_path: "next".into(),
            done_path: Some("done".into()),
            size_param: "limit".into(),
        };
        let first = first_position(&spec);
        let abs = run(
            &spec,
            &first,
            Role::Chain,
            json!({"data": [], "next": "http://api.test:8080/v1/items?after=5"}),
            &[],
            Some("data"),
        )
        .unwrap();
        assert_eq!(
            abs,
            Next::Chain(Position::Url {
                url: Some("http://api.test:8080/v1/items?after=5".into())
            })
        );
        let rel = run(
            &spec,
            &first,
            Role::Chain,
            json!({"data": [], "next": "/v1/items?after=9", "done": false}),
            &[],
            Some("data"),
        )
        .unwrap();
        assert_eq!(
            rel,
            Next::Chain(Position::Url {
                url: Some("http://api.test:8080/v1/items?after=9".into())
            })
        );
        let done = run(
            &spec,
            &first,
            Role::Chain,
            json!({"data": [], "next": "/v1/items?after=9", "done": true}),
            &[],
            Some("data"),
        )
        .unwrap();
        assert_eq!(done, Next::Done);
        let none = run(
            &spec,
            &first,
            Role::Chain,
            json!({"data": [], "next": null}),
            &[],
            Some("data"),
        )
        .unwrap();
        assert_eq!(none, Next::Done);
        let pos = Position::Url {
            url: Some("http://api.test:8080/v1/items?after=9".into()),
        };
        assert_eq!(
            target(&spec, 10, &pos).unwrap(),
            Target::Url("http://api.test:8080/v1/items?after=9".into())
        );
    }

    #[test]
    fn next_url_may_not_leave_the_origin() {
        let spec = PaginationSpec::NextUrl {
            next_path: "next".into(),
            done_path: None,
            size_param: "limit".into(),
        };
        for evil in [
            "http://evil.test/steal",
            "https://api.test:8080/v1/items",
            "//evil.test/x",
        ] {
            let err = run(
                &spec,
                &Position::Url { url: None },
                Role::Chain,
                json!({"data": [], "next": evil}),
                &[],
                Some("data"),
            )
            .unwrap_err();
            assert!(
                matches!(err, PaginationError::BadNextUrl { .. }),
                "{evil}: {err}"
            );
        }
    }

    #[test]
    fn link_header_parsing() {
        assert_eq!(
            next_link(r#"<http://a/1>; rel="next""#),
            Some("http://a/1".into())
        );
        assert_eq!(
            next_link(r#"<http://a/first>; rel="first", <http://a/2?x=1,2>; rel="next""#),
            Some("http://a/2?x=1,2".into())
        );
        assert_eq!(next_link(r#"<http://a/p>; rel="prev last""#), None);
        assert_eq!(
            next_link(r#"<http://a/n>; title="x"; rel=next"#),
            Some("http://a/n".into())
        );
        assert_eq!(
            next_link(r#"<http://a/n>; REL="Next Last""#),
            Some("http://a/n".into())
        );
        assert_eq!(next_link("garbage"), None);
        assert_eq!(next_link(""), None);

        let spec = PaginationSpec::LinkHeader {
            size_param: "limit".into(),
        };
        let n = run(
            &spec,
            &Position::Url { url: None },
            Role::Chain,
            json!(items(2)),
            &[("link", r#"</v1/items?after=2>; rel="next""#)],
            None,
        )
        .unwrap();
        assert_eq!(
            n,
            Next::Chain(Position::Url {
                url: Some("http://api.test:8080/v1/items?after=2".into())
            })
        );
        let end = run(
            &spec,
            &Position::Url { url: None },
            Role::Chain,
            json!(items(2)),
            &[("link", r#"</v1/items>; rel="first""#)],
            None,
        )
        .unwrap();
        assert_eq!(end, Next::Done);
    }

    #[test]
    fn records_are_found_or_named() {
        let body = json!({"data": {"items": [1, 2]}});
        assert_eq!(records(&body, Some("data.items")).unwrap().len(), 2);
        assert_eq!(
            records(&body, Some("nope")),
            Err(PaginationError::NoRecords {
                path: "nope".into()
            })
        );
        assert!(matches!(
            records(&body, Some("data")),
            Err(PaginationError::NotAnArray { .. })
        ));
        assert!(matches!(
            records(&body, None),
            Err(PaginationError::NotAnArray { .. })
        ));
        assert_eq!(records(&json!([]), None).unwrap().len(), 0);
    }

    #[test]
    fn positions_must_match_the_style() {
        let err = target(&offset(true), 10, &Position::Page { page: 1 }).unwrap_err();
        assert!(matches!(err, PaginationError::WrongPosition { .. }));
    }

    #[test]
    fn absurd_totals_are_refused() {
        let err = run(
            &offset(true),
            &Position::Offset { offset: 0 },
            Role::Chain,
            json!({"data": items(1), "total": u64::MAX}),
            &[],
            Some("data"),
        )
        .unwrap_err();
        assert!(matches!(err, PaginationError::TooManyPages { .. }));
    }
}
