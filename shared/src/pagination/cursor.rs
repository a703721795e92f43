//! Cursor style: an opaque cursor read from the body (`cursor_path`) or a
//! response header (`cursor_header`), sent back as `cursor_param`.
//!
//! An absent, null or empty cursor, or an empty page, ends the chain; the
//! same cursor twice in a row is a loop, not an endless export.

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

use super::body::optional_string;
use super::{Next, Page, PaginationError, PaginationStyle, Position, Target, UnderDrift};
use crate::spec::{check_path, invalid, SpecError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    #[serde(default = "cursor_param")]
    pub cursor_param: String,
    #[serde(default)]
    pub cursor_path: Option<String>,
    #[serde(default)]
    pub cursor_header: Option<String>,
    #[serde(default = "super::limit_param")]
    pub size_param: String,
}

fn cursor_param() -> String {
    "cursor".into()
}
impl Cursor {
    /// The cursor the response gives for the next page, if any.
    fn found(&self, page: &Page<'_>) -> Result<Option<String>, PaginationError> {
        match (&self.cursor_path, &self.cursor_header) {
            (Some(path), _) => optional_string(page.body, path),
            (None, Some(header)) => Ok(header_value(page.headers, header)),
            (None, None) => Ok(None),
        }
    }
}

impl PaginationStyle for Cursor {
    fn first(&self) -> Position {
        Position::Cursor { cursor: None }
    }

    fn target(&self, page_size: u32, position: &Position) -> Result<Target, PaginationError> {
        let Position::Cursor { cursor } = position else {
            return Err(self.wrong_position(position));
        };
Ok(Target::keyed(
            &self.size_param,
            page_size,
            &self.cursor_param,
            cursor,
        ))
    }

    fn next(
        &self,
        _page_size: u32,
        position: &Position,
        page: &Page<'_>,
    ) -> Result<Next, PaginationError> {
        let Position::Cursor { cursor } = position else {
            return Err(self.wrong_position(position));
        };
        let found = self.found(page)?;
        after_page(cursor.as_deref(), found, page.records.len())
    }

    fn under_drift(&self) -> UnderDrift {
        UnderDrift::Immune
    }

    fn validate(&self) -> Result<(), SpecError> {
        match (&self.cursor_path, &self.cursor_header) {
            (Some(p), None) => check_path("pagination.cursor_path", p),
            (None, Some(h)) => match reqwest::header::HeaderName::from_bytes(h.as_bytes()) {
                Ok(_) => Ok(()),
                Err(_) => Err(invalid(
                    "pagination.cursor_header",
                    "is not a valid header name",
                )),
            },
            _ => Err(invalid(
                "pagination",
                "cursor style needs exactly one of `cursor_path` or `cursor_header`",
            )),
        }
    }
}

/// The trimmed value of `header`; a value that is not visible ASCII counts
/// as absent.
fn header_value(headers: &HeaderMap, header: &str) -> Option<String> {
    headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

/// What follows a page of `served` records sent with cursor `current` whose
/// response gave cursor `found`.
fn after_page(
    current: Option<&str>,
    found: Option<String>,
    served: usize,
) -> Result<Next, PaginationError> {
    match found {
        Some(c) if !c.is_empty() && served > 0 => {
            if current == Some(c.as_str()) {
                return Err(PaginationError::CursorLoop);
            }
            Ok(Next::Chain(Position::Cursor { cursor: Some(c) }))
        }
        _ => Ok(Next::Done),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{first_position, target, PaginationSpec, Role};
    use super::*;
    use reqwest::header::HeaderValue;
    use serde_json::json;

    #[test]
    fn cursor_from_body() {
        let spec = cursor_body();
        let first = first_position(&spec);
        assert_eq!(
            target(&spec, 10, &first).unwrap(),
            Target::Query(vec![("limit".into(), "10".into())])
        );
        let n = run_data(
            &spec,
            &first,
            Role::Chain,
            json!({"data": items(10), "next_cursor": "abc"}),
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
        let looped = run_data(
            &spec,
            &pos,
            Role::Chain,
            json!({"data": items(3), "next_cursor": "abc"}),
        );
        assert_eq!(looped, Err(PaginationError::CursorLoop));
    }

    #[test]
    fn cursor_from_header() {
        let spec = PaginationSpec::Cursor(Cursor {
            cursor_param: "cursor".into(),
            cursor_path: None,
            cursor_header: Some("X-Next-Cursor".into()),
            size_param: "limit".into(),
        });
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
    fn an_empty_page_ends_even_with_a_cursor() {
        assert_eq!(after_page(None, Some("abc".into()), 0), Ok(Next::Done));
        assert_eq!(
            after_page(Some("abc"), Some("abd".into()), 1),
            Ok(Next::Chain(Position::Cursor {
                cursor: Some("abd".into())
            }))
        );
    }

    #[test]
    fn header_cursors_are_trimmed() {
        let mut headers = HeaderMap::new();
        headers.insert("x-next-cursor", HeaderValue::from_static("  zz9 "));
        assert_eq!(header_value(&headers, "X-Next-Cursor"), Some("zz9".into()));
        assert_eq!(header_value(&headers, "x-other"), None);
    }

    #[test]
    fn a_numeric_body_cursor_is_its_text() {
        let n = run_data(
            &cursor_body(),
            &Position::Cursor { cursor: None },
            Role::Chain,
            json!({"data": items(1), "next_cursor": 42}),
        );
        assert_eq!(
            n,
            Ok(Next::Chain(Position::Cursor {
                cursor: Some("42".into())
            }))
        );
    }
}
