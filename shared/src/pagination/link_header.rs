//! `Link` header style (RFC 8288): the response's `Link: <url>; rel="next"`
//! names the next page; no `next` link ends the chain.

use serde::{Deserialize, Serialize};

use super::follow::{follow, url_target};
use super::{Next, Page, PaginationError, PaginationStyle, Position, Target};
use crate::spec::SpecError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkHeader {
    #[serde(default = "super::limit_param")]
    pub size_param: String,
}

impl PaginationStyle for LinkHeader {
    fn first(&self) -> Position {
        Position::Url { url: None }
    }

    fn target(&self, page_size: u32, position: &Position) -> Result<Target, PaginationError> {
        let Position::Url { url } = position else {
            return Err(self.wrong_position(position));
        };
        Ok(url_target(&self.size_param, page_size, url))
    }

    fn next(
        &self,
        _page_size: u32,
        position: &Position,
        page: &Page<'_>,
    ) -> Result<Next, PaginationError> {
        if !matches!(position, Position::Url { .. }) {
            return Err(self.wrong_position(position));
        }
        // A response may carry several `Link` headers; the first `next` wins.
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

    fn validate(&self) -> Result<(), SpecError> {
        Ok(())
    }
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
        if is_next(&rest[..params_end]) {
            return Some(target.to_string());
        }
    }
}

/// Whether a link's parameters (`; rel="next last"; title=x`) include
/// `rel=next`; relation types are case-insensitive and space-separated.
fn is_next(params: &str) -> bool {
    params.split(';').any(|p| {
        let mut kv = p.splitn(2, '=');
        let key = kv.next().unwrap_or("").trim();
        let value = kv.next().unwrap_or("").trim().trim_matches(',').trim();
        key.eq_ignore_ascii_case("rel")
            && value
                .trim_matches('"')
                .split_ascii_whitespace()
                .any(|r| r.eq_ignore_ascii_case("next"))
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

        let spec = PaginationSpec::LinkHeader(LinkHeader {
            size_param: "limit".into(),
        });
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
}
