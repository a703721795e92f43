//! URLs handed to us by the source, shared by the next-URL and `Link` styles:
//! what to request for a URL position, and following a next link.
//!
//! A followed URL must stay on the source's origin: following it elsewhere
//! would send our credentials to a host the spec never named. A refused URL
//! is named redacted (`redact::url_text`): the error reaches dead letters,
//! and a source's links may be signed.

use super::{Next, Page, PaginationError, Position, Target};
use crate::redact;

/// The first page is the spec's own request with the size parameter; every
/// later page is exactly the URL the source gave.
pub(super) fn url_target(size_param: &str, page_size: u32, url: &Option<String>) -> Target {
    match url {
        Some(url) => Target::Url(url.clone()),
        None => Target::Query(vec![(size_param.to_string(), page_size.to_string())]),
    }
}

/// Resolves a next link against the request URL and keeps it on the origin.
pub(super) fn follow(page: &Page<'_>, link: &str) -> Result<Next, PaginationError> {
    let bad = |url: String, reason: &str| PaginationError::BadNextUrl {
        url,
        reason: reason.to_string(),
    };
    let resolved =
        (page.url.join(link)).map_err(|e| bad(redact::url_text(link), &e.to_string()))?;
    if resolved.origin() != page.origin.origin() {
        let reason = "it leaves the source's origin";
        return Err(bad(redact::url(&resolved), reason));
    }
    if resolved == *page.url {
        return Err(PaginationError::CursorLoop);
    }
    Ok(Next::Chain(Position::Url {
        url: Some(resolved.to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;
    use serde_json::json;
    use url::Url;

    fn follow_from(url: &str, link: &str) -> Result<Next, PaginationError> {
        let url = Url::parse(url).unwrap();
        let origin = Url::parse("http://api.test:8080/v1/items").unwrap();
        let body = json!([]);
        let headers = HeaderMap::new();
        let page = Page {
            body: &body,
            headers: &headers,
            records: crate::pagination::Records::of(&[]),
            url: &url,
            origin: &origin,
        };
        follow(&page, link)
    }

    #[test]
    fn url_targets() {
        assert_eq!(
            url_target("limit", 5, &None),
            Target::Query(vec![("limit".into(), "5".into())])
        );
        assert_eq!(
            url_target("limit", 5, &Some("http://a/x?p=2".into())),
            Target::Url("http://a/x?p=2".into())
        );
    }

    #[test]
    fn a_link_to_the_page_itself_is_a_loop() {
        let here = "http://api.test:8080/v1/items?after=3";
        assert_eq!(
            follow_from(here, "/v1/items?after=3"),
            Err(PaginationError::CursorLoop)
        );
        assert_eq!(
            follow_from(here, "?after=4"),
            Ok(Next::Chain(Position::Url {
                url: Some("http://api.test:8080/v1/items?after=4".into())
            }))
        );
    }

    #[test]
    fn a_refused_link_is_named_without_its_secrets() {
        for link in [
            "http://evil.test/x?after=2&signature=SIGNED-VALUE",
            "http://user:SIGNED-VALUE@evil.test/x",
            "http://[::1?sig=SIGNED-VALUE",
        ] {
            let err = follow_from("http://api.test:8080/v1/items", link).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, PaginationError::BadNextUrl { .. }), "{text}");
            assert!(!text.contains("SIGNED-VALUE"), "{text}");
        }
        let err = follow_from(
            "http://api.test:8080/v1/items",
            "http://evil.test/x?after=2&signature=S",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("http://evil.test/x?after=2&signature=***"),
            "{err}"
        );
    }

    #[test]
    fn an_unparsable_link_is_named() {
        let err = follow_from("http://api.test:8080/v1/items", "http://[::1").unwrap_err();
        assert!(
            matches!(err, PaginationError::BadNextUrl { ref url, .. } if url == "http://[::1"),
            "{err}"
        );
    }
}
