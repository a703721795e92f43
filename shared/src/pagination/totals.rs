//! What a page says about the whole partition: the counts a source states
//! (records, pages) and where it stated them.
//!
//! Every count is a [`Statement`] naming its origin (`header X-Total-Count`,
//! `body total`, `header Link rel="last"`), so the ledger can check each one
//! against what the pages delivered and say which one disagreed. Styles use
//! the same statements to fan out; the finalizer uses them to verify.
//!
//! Headers read, whatever the style: `X-Total-Count`, `X-Total`, and
//! `Content-Range: items 0-99/1234` (the records); `Link rel="last"` gives
//! the last page number when the style knows its page parameter. A header
//! that does not hold a count (`Content-Range: items 0-99/*`, text) states
//! nothing: it is not an error, and the ledger says what was checked.

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use url::Url;

use super::body::optional_u64;
use super::link_header::link_with_rel;
use super::{Page, PaginationError};
use crate::model::text_enum;

text_enum!(
    /// What a count counts: the records in the partition, or its pages (at
    /// the page size the source serves).
    Counts {
        Records => "records",
        Pages => "pages",
    }
);

/// One count a page stated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub counts: Counts,
    /// Where it was stated: `header X-Total-Count`, `body meta.total`.
    pub origin: String,
    pub value: u64,
}

impl Statement {
    pub fn records(origin: impl Into<String>, value: u64) -> Statement {
        Statement {
            counts: Counts::Records,
            origin: origin.into(),
            value,
        }
    }

    pub fn pages(origin: impl Into<String>, value: u64) -> Statement {
        Statement {
            counts: Counts::Pages,
            origin: origin.into(),
            value,
        }
    }
}

/// The header statements of the record count, in a fixed order.
pub fn header_records(headers: &HeaderMap) -> Vec<Statement> {
    let mut stated = Vec::new();
    for name in ["X-Total-Count", "X-Total"] {
        if let Some(n) = header_text(headers, name).and_then(|v| v.trim().parse::<u64>().ok()) {
            stated.push(Statement::records(format!("header {name}"), n));
        }
    }
    if let Some(n) = header_text(headers, "Content-Range").and_then(content_range_total) {
        stated.push(Statement::records("header Content-Range", n));
    }
    stated
}

/// The count at a body path, as a statement; absent or `null` states nothing.
pub fn body_count(
    body: &serde_json::Value,
    path: &str,
    counts: Counts,
) -> Result<Option<Statement>, PaginationError> {
    Ok(optional_u64(body, path)?.map(|value| Statement {
        counts,
        origin: format!("{BODY}{path}"),
        value,
    }))
}

/// Where a page count from `Link rel="last"` was stated.
pub const LINK_LAST: &str = "header Link rel=\"last\"";

/// The number of pages `Link rel="last"` states, pages being numbered from
/// `first_page`: the value of `page_param` in its URL (resolved against
/// the request URL).
pub fn link_last_page(page: &Page<'_>, page_param: &str, first_page: u64) -> Option<Statement> {
    let last = links(page.headers, "last").next()?;
    let url = page.url.join(&last).ok()?;
    let number = query_value(&url, page_param)?.parse::<u64>().ok()?;
    let pages = number.checked_sub(first_page)?.checked_add(1)?;
    Some(Statement::pages(LINK_LAST, pages))
}

/// Every target of `rel` across the response's `Link` headers, in order.
pub(super) fn links<'a>(headers: &'a HeaderMap, rel: &'a str) -> impl Iterator<Item = String> + 'a {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(move |v| link_with_rel(v, rel))
}

/// How the origin of a count stated in the body begins (`body meta.total`).
const BODY: &str = "body ";

/// The first statement of `counts`, preferring the body's.
pub fn first_of(stated: &[Statement], counts: Counts) -> Option<u64> {
    let of = stated.iter().filter(|s| s.counts == counts);
    preferred(of, |s| &s.origin).map(|s| s.value)
}

/// Of several statements of one count, the one to go by: the first stated
/// in the body (the spec named it), else the first at all (a header,
/// found by convention).
pub fn preferred<'a, T>(
    candidates: impl Iterator<Item = &'a T> + Clone,
    origin: impl Fn(&T) -> &str,
) -> Option<&'a T> {
    (candidates.clone())
        .find(|c| origin(c).starts_with(BODY))
        .or_else(|| candidates.clone().next())
}

/// The value of a query parameter of a URL (the first, when repeated).
pub(super) fn query_value(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The complete length of `Content-Range: items 0-99/1234` (RFC 9110
/// syntax, any unit but `bytes`, which counts the body, not records); `*`
/// (unknown) states nothing.
fn content_range_total(value: &str) -> Option<u64> {
    let (unit, range) = value.trim().split_once(' ')?;
    if unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (_, total) = range.trim().rsplit_once('/')?;
    total.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn record_counts_come_from_the_conventional_headers() {
        let h = headers(&[
            ("x-total-count", "336776"),
            ("X-Total", " 12 "),
            ("content-range", "items 0-99/1234"),
        ]);
        assert_eq!(
            header_records(&h),
            vec![
                Statement::records("header X-Total-Count", 336776),
                Statement::records("header X-Total", 12),
                Statement::records("header Content-Range", 1234),
            ]
        );
    }

    #[test]
    fn headers_that_hold_no_count_state_nothing() {
        for (k, v) in [
            ("x-total-count", "many"),
            ("x-total-count", "-1"),
            ("content-range", "items 0-99/*"),
            ("content-range", "items */"),
            ("content-range", "garbage"),
            ("content-range", "bytes 0-99/1234"),
        ] {
            assert_eq!(header_records(&headers(&[(k, v)])), vec![], "{k}: {v}");
        }
        assert_eq!(
            content_range_total("items */1234"),
            Some(1234),
            "an empty page still states the total"
        );
    }

    #[test]
    fn body_counts_name_their_path() {
        let body = json!({"meta": {"total": 7}, "bad": "x"});
        assert_eq!(
            body_count(&body, "meta.total", Counts::Records),
            Ok(Some(Statement::records("body meta.total", 7)))
        );
        assert_eq!(body_count(&body, "absent", Counts::Pages), Ok(None));
        assert!(body_count(&body, "bad", Counts::Records).is_err());
    }

    #[test]
    fn the_last_link_states_the_page_count() {
        let h = headers(&[(
            "link",
            r#"</items?_page=1&_limit=10>; rel="first", </items?_page=2&_limit=10>; rel="next", </items?_page=34&_limit=10>; rel="last""#,
        )]);
        let url = Url::parse("http://api.test/items?_page=1&_limit=10").unwrap();
        let body = json!([]);
        let page = Page {
            body: &body,
            headers: &h,
            records: crate::pagination::Records::of(&[]),
            url: &url,
            origin: &url,
        };
        assert_eq!(
            link_last_page(&page, "_page", 1),
            Some(Statement::pages(LINK_LAST, 34))
        );
        assert_eq!(
            link_last_page(&page, "_page", 0),
            Some(Statement::pages(LINK_LAST, 35))
        );
        assert_eq!(link_last_page(&page, "page", 1), None);
        assert_eq!(link_last_page(&page, "_page", 35), None);
    }

    #[test]
    fn the_body_is_preferred_over_headers() {
        let stated = [
            Statement::records("header X-Total-Count", 9),
            Statement::records("body total", 8),
            Statement::pages("body pages", 2),
        ];
        assert_eq!(first_of(&stated, Counts::Records), Some(8));
        assert_eq!(first_of(&stated[..1], Counts::Records), Some(9));
        assert_eq!(first_of(&stated[..1], Counts::Pages), None);
    }
}
