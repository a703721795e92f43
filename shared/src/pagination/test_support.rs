//! Test helpers shared by the style tests: a page run through a style, and
//! one spec of each style.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};
use url::Url;

use super::*;

pub fn origin() -> Url {
    Url::parse("http://api.test:8080/v1/items").unwrap()
}

/// `next` for a page of `body` (records at `records_path`) and `headers`,
/// requested from [`origin`] with a page size of 10.
/// `run` for the common case: records under `data`, no headers.
pub fn run_data(
    spec: &PaginationSpec,
    position: &Position,
    role: Role,
    body: Value,
) -> Result<Next, PaginationError> {
    run(spec, position, role, body, &[], Some("data"))
}

pub fn run(
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
            records: super::Records::of(&recs),
            url: &url,
            origin: &url,
        },
    )
}

pub fn items(n: usize) -> Vec<Value> {
    (1..=n).map(|i| json!({"id": i})).collect()
}

pub fn offset(total: bool) -> PaginationSpec {
    PaginationSpec::Offset(Offset {
        offset_param: "offset".into(),
        limit_param: "limit".into(),
        total_path: total.then(|| "total".to_string()),
    })
}

pub fn page_number(first_page: u64, total_pages_path: Option<&str>) -> PaginationSpec {
    PaginationSpec::PageNumber(PageNumber {
        page_param: "page".into(),
        size_param: "per_page".into(),
        first_page,
        total_pages_path: total_pages_path.map(str::to_string),
    })
}

pub fn cursor_body() -> PaginationSpec {
    PaginationSpec::Cursor(Cursor {
        cursor_param: "cursor".into(),
        cursor_path: Some("next_cursor".into()),
        cursor_header: None,
        size_param: "limit".into(),
    })
}

pub fn last_record() -> PaginationSpec {
    PaginationSpec::LastRecord(LastRecord {
        param: "starting_after".into(),
        field: "id".into(),
        has_more_path: "has_more".into(),
        size_param: "limit".into(),
    })
}

pub fn next_url(done_path: Option<&str>) -> PaginationSpec {
    PaginationSpec::NextUrl(NextUrl {
        next_path: "next".into(),
        done_path: done_path.map(str::to_string),
        size_param: "limit".into(),
    })
}

pub fn link_header() -> PaginationSpec {
    PaginationSpec::LinkHeader(LinkHeader {
        size_param: "limit".into(),
        page_param: None,
        first_page: None,
    })
}
