//! `Link` header style (RFC 8288): the response's `Link: <url>; rel="next"`
//! names the next page; no `next` link ends the chain.
//!
//! When the first page also links `rel="last"` and its URL differs from the
//! `next` one only in a page number (`page_param`, or the one query
//! parameter that differs), the first page fans out every page up to the
//! last at once, plus one page past it (the sentinel, which must come back
//! empty). `first_page` sends the page parameter on the first request too:
//! some sources (json-server) answer a request without it with one page and
//! no links at all.

use serde::{Deserialize, Serialize};

use url::Url;

use super::fan_out::fan_out;
use super::follow::{follow, url_target};
use super::totals::{self, links, query_value, Statement};
use super::{Next, Page, PaginationError, PaginationStyle, Position, Target};
use crate::spec::{invalid, SpecError};

/// The most pages a `Link` header fans out to, and the longest last URL it
/// fans out from (each page's position is a copy of it).
const MAX_LINK_FAN_OUT: u64 = 100_000;
const MAX_LINK_URL: usize = 2_048;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkHeader {
    #[serde(default = "super::limit_param")]
    pub size_param: String,
    /// The query parameter holding the page number in the source's links;
    /// found by comparing `next` and `last` when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_param: Option<String>,
    /// Sent as `page_param` on the first request (requires `page_param`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_page: Option<u64>,
}

impl PaginationStyle for LinkHeader {
    fn first(&self) -> Position {
        Position::Url { url: None }
    }

    fn target(&self, page_size: u32, position: &Position) -> Result<Target, PaginationError> {
        let Position::Url { url } = position else {
            return Err(self.wrong_position(position));
        };
        let mut target = url_target(&self.size_param, page_size, url);
        if let (Target::Query(query), Some(param), Some(first)) =
            (&mut target, &self.page_param, self.first_page)
        {
            query.push((param.clone(), first.to_string()));
        }
        Ok(target)
    }

    fn next(
        &self,
        _page_size: u32,
        position: &Position,
        page: &Page<'_>,
    ) -> Result<Next, PaginationError> {
        let Position::Url { url: here } = position else {
            return Err(self.wrong_position(position));
        };
        // A response may carry several `Link` headers; the first `next` wins.
        let Some(next) = links(page.headers, "next").next() else {
            return Ok(Next::Done);
        };
        if here.is_none() && !page.records.is_empty() {
            if let Some(pages) = self.numbered_pages(page)? {
                return Ok(pages);
            }
        }
        follow(page, &next)
    }

    fn stated(&self, page: &Page<'_>) -> Result<Vec<Statement>, PaginationError> {
        let mut stated = totals::header_records(page.headers);
        // Pages count from `first_page`, or from 1 as the sources that
        // number their links do (GitHub, GitLab, json-server).
        let first = self.first_page.unwrap_or(1);
        if let Some(param) = self.page_param.clone().or_else(|| detected_param(page)) {
            stated.extend(totals::link_last_page(page, &param, first));
        }
        Ok(stated)
    }

    fn validate(&self) -> Result<(), SpecError> {
        if self.first_page.is_some() && self.page_param.is_none() {
            return Err(invalid(
                "pagination.first_page",
                "needs `page_param`, the parameter it is sent as",
            ));
        }
        if let Some(first) = self.first_page {
            super::check_first_page(first)?;
        }
        Ok(())
    }
}

impl LinkHeader {
    /// Every page after the first up to `rel="last"`, and the sentinel
    /// page past it, when the links number their pages; `None` (walk the
    /// chain) when they do not.
    fn numbered_pages(&self, page: &Page<'_>) -> Result<Option<Next>, PaginationError> {
        let Some((next, last)) = next_and_last(page) else {
            return Ok(None);
        };
        if next.origin() != page.origin.origin() || last.origin() != page.origin.origin() {
            return Ok(None);
        }
        let Some(numbered) = Numbered::find(&next, &last, self.page_param.as_deref()) else {
            return Ok(None);
        };
        let first = Position::Url { url: None };
        // Up to `last`, and one past it.
        let pages = (numbered.last.saturating_sub(numbered.next)).saturating_add(2);
        // Every position is a copy of the last URL: bound what that costs,
        // and walk the chain past the bound.
        if pages > MAX_LINK_FAN_OUT || last.as_str().len() > MAX_LINK_URL {
            return Ok(None);
        }
        fan_out(&first, pages, |i| {
            let number = numbered.next.checked_add(i - 1)?;
            Some(Position::Url {
                url: Some(with_query(&last, &numbered.param, &number.to_string()).to_string()),
            })
        })
        .map(Some)
    }
}

/// Page numbers in a source's links: the parameter, and its value in the
/// `next` and the `last` link.
#[derive(Debug, PartialEq)]
struct Numbered {
    param: String,
    next: u64,
    last: u64,
}

impl Numbered {
    /// The page parameter is `param` when given; otherwise the one query
    /// parameter whose value differs between the two links, both numbers.
    fn find(next: &Url, last: &Url, param: Option<&str>) -> Option<Numbered> {
        let param = match param {
            Some(p) => p.to_string(),
            None => the_one_difference(next, last)?,
        };
        let number = |url: &Url| query_value(url, &param)?.parse::<u64>().ok();
        let (n, l) = (number(next)?, number(last)?);
        (l >= n && next.path() == last.path()).then_some(Numbered {
            param,
            next: n,
            last: l,
        })
    }
}

/// The page parameter the page's `next` and `last` links differ in.
fn detected_param(page: &Page<'_>) -> Option<String> {
    let (next, last) = next_and_last(page)?;
    Numbered::find(&next, &last, None).map(|n| n.param)
}

/// The page's first `next` and `last` links, resolved against its URL.
fn next_and_last(page: &Page<'_>) -> Option<(Url, Url)> {
    let next = page.url.join(&links(page.headers, "next").next()?).ok()?;
    let last = page.url.join(&links(page.headers, "last").next()?).ok()?;
    Some((next, last))
}

fn the_one_difference(a: &Url, b: &Url) -> Option<String> {
    let pairs = |u: &Url| -> Vec<(String, String)> { u.query_pairs().into_owned().collect() };
    let (a, b) = (pairs(a), pairs(b));
    if a.len() != b.len() {
        return None;
    }
    let mut differing = a.iter().filter(|p| !b.contains(p));
    let (name, _) = differing.next()?;
    if differing.next().is_some() || !b.iter().any(|(k, _)| k == name) {
        return None;
    }
    Some(name.clone())
}

/// `url` with `name` set to `value` (its other parameters kept, in order).
fn with_query(url: &Url, name: &str, value: &str) -> Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .map(|(k, v)| if k == name { (k, value.to_string()) } else { (k, v) })
        .collect();
    let mut out = url.clone();
    out.query_pairs_mut().clear().extend_pairs(pairs);
    out
}

/// The target of `rel="next"` in one `Link` header value (RFC 8288), which
/// may list several links: `<a>; rel="first", <b>; rel="next"`.
pub fn next_link(header: &str) -> Option<String> {
    link_with_rel(header, "next")
}

/// The target of the first link with relation `rel` in one `Link` header
/// value.
pub(super) fn link_with_rel(header: &str, rel: &str) -> Option<String> {
    let mut rest = header;
    loop {
        let start = rest.find('<')?;
        let end = start + rest[start..].find('>')?;
        let target = &rest[start + 1..end];
        rest = &rest[end + 1..];
        // Parameters run until the next link, which starts with `<`.
        let params_end = rest.find('<').unwrap_or(rest.len());
        if has_rel(&rest[..params_end], rel) {
            return Some(target.to_string());
        }
    }
}

/// Whether a link's parameters (`; rel="next last"; title=x`) include
/// `rel`; relation types are case-insensitive and space-separated.
fn has_rel(params: &str, rel: &str) -> bool {
    params.split(';').any(|p| {
        let mut kv = p.splitn(2, '=');
        let key = kv.next().unwrap_or("").trim();
        let value = kv.next().unwrap_or("").trim().trim_matches(',').trim();
        key.eq_ignore_ascii_case("rel")
            && value
                .trim_matches('"')
                .split_ascii_whitespace()
                .any(|r| r.eq_ignore_ascii_case(rel))
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{PaginationSpec, Role};
    use super::*;
    use serde_json::json;

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

        let spec = link_header();
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
    fn rel_parameters() {
        let is_next = |p| has_rel(p, "next");
        assert!(is_next(r#"; rel="next""#));
        assert!(is_next("; rel=next,"));
        assert!(is_next(r#"; title="a"; rel="prev next""#));
        assert!(!is_next(r#"; rel="nextpage""#));
        assert!(!is_next(r#"; title="next""#));
        assert!(!is_next(""));
        // An unclosed link is no link.
        assert_eq!(next_link(r#"<http://a/1; rel="next""#), None);
    }

    #[test]
    fn the_first_next_link_across_several_headers_wins() {
        let n = run(
            &link_header(),
            &Position::Url { url: None },
            Role::Chain,
            json!(items(2)),
            &[
                ("link", r#"</v1/items>; rel="first""#),
                ("link", r#"</v1/items?after=2>; rel="next""#),
                ("link", r#"</v1/items?after=9>; rel="next""#),
            ],
            None,
        );
        assert_eq!(
            n,
            Ok(Next::Chain(Position::Url {
                url: Some("http://api.test:8080/v1/items?after=2".into())
            }))
        );
    }

    fn json_server_links(page: u64, last: u64) -> String {
        let link = |p: u64, rel: &str| format!("<http://api.test:8080/v1/items?_page={p}&_limit=10>; rel=\"{rel}\"");
        let mut all = vec![link(1, "first")];
        if page < last {
            all.push(link(page + 1, "next"));
        }
        all.push(link(last, "last"));
        all.join(", ")
    }

    fn page_urls(next: &Next) -> Vec<String> {
        match next {
            Next::FanOut(positions) => positions
                .iter()
                .map(|p| match p {
                    Position::Url { url: Some(u) } => u.clone(),
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("not a fan-out: {other:?}"),
        }
    }

    #[test]
    fn numbered_links_fan_out_to_the_last_page_and_one_past_it() {
        let links = json_server_links(1, 4);
        let next = run(
            &link_header(),
            &Position::Url { url: None },
            Role::Chain,
            json!(items(10)),
            &[("link", &links)],
            None,
        )
        .unwrap();
        let pages: Vec<String> = (2..=5)
            .map(|p| format!("http://api.test:8080/v1/items?_page={p}&_limit=10"))
            .collect();
        assert_eq!(page_urls(&next), pages);
    }

    #[test]
    fn a_named_page_param_is_sent_first_and_steers_the_fan_out() {
        let spec = PaginationSpec::LinkHeader(LinkHeader {
            size_param: "_limit".into(),
            page_param: Some("_page".into()),
            first_page: Some(1),
        });
        assert_eq!(
            spec.style().target(10, &Position::Url { url: None }),
            Ok(Target::Query(vec![
                ("_limit".into(), "10".into()),
                ("_page".into(), "1".into())
            ]))
        );
        let links = json_server_links(1, 2);
        let next = run(&spec, &Position::Url { url: None }, Role::Chain, json!(items(10)), &[("link", &links)], None).unwrap();
        assert_eq!(page_urls(&next).len(), 2, "page 2 and the sentinel page 3");
    }

    #[test]
    fn links_that_do_not_number_pages_are_walked() {
        // `next` and `last` differ in two parameters: no page number to trust.
        let links = r#"</v1/items?after=10&x=1>; rel="next", </v1/items?after=90&x=2>; rel="last""#;
        let next = run(&link_header(), &Position::Url { url: None }, Role::Chain, json!(items(10)), &[("link", links)], None).unwrap();
        assert_eq!(
            next,
            Next::Chain(Position::Url {
                url: Some("http://api.test:8080/v1/items?after=10&x=1".into())
            })
        );
        // A later chain page never fans out.
        let later = Position::Url { url: Some("http://api.test:8080/v1/items?_page=2&_limit=10".into()) };
        let links = json_server_links(2, 4);
        let next = run(&link_header(), &later, Role::Chain, json!(items(10)), &[("link", &links)], None).unwrap();
        assert!(matches!(next, Next::Chain(_)), "{next:?}");
    }

    #[test]
    fn first_page_needs_a_page_param() {
        let spec = LinkHeader {
            size_param: "limit".into(),
            page_param: None,
            first_page: Some(1),
        };
        assert!(spec.validate().is_err());
    }

    #[test]
    fn the_one_differing_parameter_is_the_page_number() {
        let u = |q: &str| Url::parse(&format!("http://a/items?{q}")).unwrap();
        assert_eq!(the_one_difference(&u("p=2&l=5"), &u("p=9&l=5")), Some("p".into()));
        assert_eq!(the_one_difference(&u("p=2&l=5"), &u("p=9&l=6")), None);
        assert_eq!(the_one_difference(&u("p=2"), &u("p=2")), None);
        assert_eq!(the_one_difference(&u("p=2"), &u("q=2")), None);
        assert_eq!(
            Numbered::find(&u("page=3"), &u("page=2"), None),
            None,
            "a last page before the next one is no numbering"
        );
        assert_eq!(
            with_query(&u("a=1&page=2&b=3"), "page", "7").as_str(),
            "http://a/items?a=1&page=7&b=3"
        );
    }

    #[test]
    fn a_fan_out_too_large_to_hold_walks_the_chain_instead() {
        let links = json_server_links(1, MAX_LINK_FAN_OUT + 5);
        let next = run(&link_header(), &Position::Url { url: None }, Role::Chain, json!(items(10)), &[("link", &links)], None).unwrap();
        assert!(matches!(next, Next::Chain(_)), "{next:?}");
    }
}
