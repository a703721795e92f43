//! Next-URL style: the body names the next page's URL (absolute, or
//! relative to the request). A missing, null or empty URL, or `done_path`
//! being true, ends the chain.

use serde::{Deserialize, Serialize};

use super::body::{flag, optional_string};
use super::follow::{follow, url_target};
use super::{Next, Page, PaginationError, PaginationStyle, Position, Target};
use crate::spec::{check_path, SpecError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextUrl {
    pub next_path: String,
    #[serde(default)]
    pub done_path: Option<String>,
    #[serde(default = "super::limit_param")]
    pub size_param: String,
}

impl PaginationStyle for NextUrl {
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
        if let Some(path) = &self.done_path {
            if flag(page.body, path)? {
                return Ok(Next::Done);
            }
        }
        match optional_string(page.body, &self.next_path)? {
            Some(link) if !link.is_empty() => follow(page, &link),
            _ => Ok(Next::Done),
        }
    }

    fn validate(&self) -> Result<(), SpecError> {
        check_path("pagination.next_path", &self.next_path)?;
        if let Some(p) = &self.done_path {
            check_path("pagination.done_path", p)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{first_position, target, PaginationSpec, Role};
    use super::*;
    use serde_json::json;

    #[test]
    fn next_url_absolute_relative_and_done() {
        let spec = PaginationSpec::NextUrl(NextUrl {
            next_path: "next".into(),
            done_path: Some("done".into()),
            size_param: "limit".into(),
        });
        let first = first_position(&spec);
        let abs = run_data(
            &spec,
            &first,
            Role::Chain,
            json!({"data": [], "next": "http://api.test:8080/v1/items?after=5"}),
        )
        .unwrap();
        assert_eq!(
            abs,
            Next::Chain(Position::Url {
                url: Some("http://api.test:8080/v1/items?after=5".into())
            })
        );
        let rel = run_data(
            &spec,
            &first,
            Role::Chain,
            json!({"data": [], "next": "/v1/items?after=9", "done": false}),
        )
        .unwrap();
        assert_eq!(
            rel,
            Next::Chain(Position::Url {
                url: Some("http://api.test:8080/v1/items?after=9".into())
            })
        );
        let done = run_data(
            &spec,
            &first,
            Role::Chain,
            json!({"data": [], "next": "/v1/items?after=9", "done": true}),
        )
        .unwrap();
        assert_eq!(done, Next::Done);
        let none = run_data(
            &spec,
            &first,
            Role::Chain,
            json!({"data": [], "next": null}),
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
        let spec = PaginationSpec::NextUrl(NextUrl {
            next_path: "next".into(),
            done_path: None,
            size_param: "limit".into(),
        });
        for evil in [
            "http://evil.test/steal",
            "https://api.test:8080/v1/items",
            "//evil.test/x",
        ] {
            let err = run_data(
                &spec,
                &Position::Url { url: None },
                Role::Chain,
                json!({"data": [], "next": evil}),
            )
            .unwrap_err();
            assert!(
                matches!(err, PaginationError::BadNextUrl { .. }),
                "{evil}: {err}"
            );
        }
    }

    #[test]
    fn an_empty_next_url_ends_and_a_broken_done_flag_is_named() {
        let spec = next_url(Some("done"));
        let first = spec.style().first();
        let empty = run_data(
            &spec,
            &first,
            Role::Chain,
            json!({"data": [], "next": ""}),
        );
        assert_eq!(empty, Ok(Next::Done));
        let err = run_data(
            &spec,
            &first,
            Role::Chain,
            json!({"data": [], "next": "/v1/items?after=1", "done": "no"}),
        );
        assert!(
            matches!(err, Err(PaginationError::BadField { ref path, expected: "a boolean", .. }) if path == "done"),
            "{err:?}"
        );
    }
}
