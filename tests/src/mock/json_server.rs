//! The json-server style: what json-server 0.17.4's list endpoint
//! (`GET /items?_page=P&_limit=L`) sends besides the bare array, so that
//! exporters aimed at json-server backed sources can be proven against it.
//!
//! `X-Total-Count` is always sent; the `Link` header only when `_page` was
//! given, in json-server's format: `<URL>; rel="first"`, then `prev` (when
//! the page is past the first), `next` (when it is before the last) and
//! `last`, joined by `, `. The last page is `ceil(total / limit)`, at least 1.
//!
//! Where this differs from json-server itself: its links repeat the request
//! URL with only the page number replaced, while these are canonical
//! (`?_page=N&_limit=L`, with the clamped limit); it sends no links at all for
//! a page past the end and no `first`/`last` when one page holds everything,
//! while these always carry `first` and `last`; and it reads a malformed or
//! zero `_page` as 1, while the mock answers 400 as for every style.

use axum::http::{header, HeaderName, HeaderValue};

use super::pages::Plan;
use super::styles::Style;

/// The `Link` header of a json-server page stating `total` records; `None`
/// when the request named no `_page`.
pub(crate) fn link(plan: &Plan, host: &str, total: usize) -> Option<(HeaderName, HeaderValue)> {
    let page = plan.number?;
    let limit = plan.limit.max(1);
    let last = total.div_ceil(limit).max(1);
    let mut rels = vec![(1, "first")];
    if page > 1 {
        rels.push((page - 1, "prev"));
    }
    if page < last {
        rels.push((page + 1, "next"));
    }
    rels.push((last, "last"));
    let path = Style::JsonServer.path();
    let text = rels
        .iter()
        .map(|(n, rel)| format!("<http://{host}{path}?_page={n}&_limit={limit}>; rel=\"{rel}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let value = HeaderValue::from_str(&text).ok()?;
    Some((header::LINK, value))
}

#[cfg(test)]
mod tests {
    use super::super::pages::{parse, resolve, Ids};
    use super::*;

    fn link_of(q: &str, total: usize) -> Option<String> {
        let ask = parse(Style::JsonServer, Some(q), 1000, 1).unwrap();
        let plan = resolve(&ask, Ids::Fixed(335), false);
        link(&plan, "h:1", total).map(|(_, v)| v.to_str().unwrap().to_string())
    }

    fn url(page: usize, limit: usize) -> String {
        format!("http://h:1/json-server/items?_page={page}&_limit={limit}")
    }

    #[test]
    fn links_as_json_server_writes_them() {
        let first = format!(
            "<{}>; rel=\"first\", <{}>; rel=\"next\", <{}>; rel=\"last\"",
            url(1, 10),
            url(2, 10),
            url(34, 10)
        );
        assert_eq!(link_of("_page=1&_limit=10", 335), Some(first));
        let middle = format!(
            "<{}>; rel=\"first\", <{}>; rel=\"prev\", <{}>; rel=\"next\", <{}>; rel=\"last\"",
            url(1, 10),
            url(4, 10),
            url(6, 10),
            url(34, 10)
        );
        assert_eq!(link_of("_page=5&_limit=10", 335), Some(middle));
        let last = format!(
            "<{}>; rel=\"first\", <{}>; rel=\"prev\", <{}>; rel=\"last\"",
            url(1, 10),
            url(33, 10),
            url(34, 10)
        );
        assert_eq!(link_of("_page=34&x=1&_limit=10", 335), Some(last));
    }

    #[test]
    fn edge_pages() {
        let only = format!(
            "<{}>; rel=\"first\", <{}>; rel=\"last\"",
            url(1, 500),
            url(1, 500)
        );
        assert_eq!(link_of("_page=1&_limit=500", 335), Some(only.clone()));
        // An empty data set still has a first and a last page.
        assert_eq!(link_of("_page=1&_limit=500", 0), Some(only));
        let past = format!(
            "<{}>; rel=\"first\", <{}>; rel=\"prev\", <{}>; rel=\"last\"",
            url(1, 100),
            url(8, 100),
            url(4, 100)
        );
        assert_eq!(link_of("_page=9&_limit=100", 335), Some(past));
        // `_page` without `_limit` pages by 10; `_limit` alone has no links.
        assert!(link_of("_page=2", 335).is_some_and(|l| l.contains(&url(34, 10))));
        assert_eq!(link_of("_limit=10", 335), None);
        assert_eq!(link_of("", 335), None);
    }
}
