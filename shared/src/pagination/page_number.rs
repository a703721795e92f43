//! Page-number style: `?page=N&per_page=M`, counting from `first_page`.
//!
//! With a page count (at `total_pages_path` in the body, from `Link
//! rel="last"`, or derived from a record count in a header such as
//! `X-Total-Count`), the first page fans out every remaining page at once,
//! plus the sentinel page past the last (records there mean the count was
//! wrong); without one, the chain stops on an empty page.

use serde::{Deserialize, Serialize};

use super::fan_out::fan_out;
use super::totals::{self, first_of, Counts, Statement};
use super::{Next, Page, PaginationError, PaginationStyle, Position, Target, UnderDrift};
use crate::spec::{check_path, SpecError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageNumber {
    #[serde(default = "page_param")]
    pub page_param: String,
    #[serde(default = "size_param")]
    pub size_param: String,
    #[serde(default = "one")]
    pub first_page: u64,
    /// Where the body reports the partition's number of pages.
    #[serde(default)]
    pub total_pages_path: Option<String>,
}

fn page_param() -> String {
    "page".into()
}
fn size_param() -> String {
    "per_page".into()
}
fn one() -> u64 {
    1
}

impl PaginationStyle for PageNumber {
    fn first(&self) -> Position {
        Position::Page {
            page: self.first_page,
        }
    }

    fn target(&self, page_size: u32, position: &Position) -> Result<Target, PaginationError> {
        let Position::Page { page } = position else {
            return Err(self.wrong_position(position));
        };
        Ok(Target::Query(vec![
            (self.page_param.clone(), page.to_string()),
            (self.size_param.clone(), page_size.to_string()),
        ]))
    }

    fn next(
        &self,
        _page_size: u32,
        position: &Position,
        page: &Page<'_>,
    ) -> Result<Next, PaginationError> {
        let Position::Page { page: number } = position else {
            return Err(self.wrong_position(position));
        };
        if page.records.is_empty() {
            return Ok(Next::Done);
        }
        let stated = self.stated(page)?;
        let served = page.records.len() as u64;
        let total = first_of(&stated, Counts::Pages)
            .or_else(|| first_of(&stated, Counts::Records).map(|n| n.div_ceil(served)));
        after_page(self.first_page, *number, total)
    }

    fn stated(&self, page: &Page<'_>) -> Result<Vec<Statement>, PaginationError> {
        let body = match &self.total_pages_path {
            Some(path) => totals::body_count(page.body, path, Counts::Pages)?,
            None => None,
        };
        let link = totals::link_last_page(page, &self.page_param, self.first_page);
        Ok(body
            .into_iter()
            .chain(link)
            .chain(totals::header_records(page.headers))
            .collect())
    }

    fn under_drift(&self) -> UnderDrift {
        UnderDrift::Shifts
    }

    fn validate(&self) -> Result<(), SpecError> {
        if let Some(p) = &self.total_pages_path {
            check_path("pagination.total_pages_path", p)?;
        }
        super::check_first_page(self.first_page)
    }
}

/// What follows a non-empty page `number`, given the number of pages the
/// body reported (if any).
fn after_page(first_page: u64, number: u64, total: Option<u64>) -> Result<Next, PaginationError> {
    match total {
        // Only the first page fans out: up to the last page, and the
        // sentinel page past it.
        Some(total) if number == first_page => {
            fan_out(&Position::Page { page: number }, total, |i| {
                first_page.checked_add(i).map(|page| Position::Page { page })
            })
        }
        Some(total) if pages_walked(first_page, number)? >= total => Ok(Next::Done),
        _ => chain(number),
    }
}

/// How many pages the partition has had up to and including `number`.
fn pages_walked(first_page: u64, number: u64) -> Result<u64, PaginationError> {
    let before = number
        .checked_sub(first_page)
        .ok_or(PaginationError::OutOfRange {
            position: Position::Page { page: number },
            reason: "the page is before `first_page`",
        })?;
    // Saturating is exact here: a count past u64::MAX is past any total too.
    Ok(before.saturating_add(1))
}

fn chain(number: u64) -> Result<Next, PaginationError> {
    let page = number
        .checked_add(1)
        .ok_or(PaginationError::OutOfRange {
            position: Position::Page { page: number },
            reason: "the next page number exceeds 2^64 - 1",
        })?;
    Ok(Next::Chain(Position::Page { page }))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{first_position, target, PaginationSpec, Role};
    use super::*;
    use serde_json::json;

    #[test]
    fn page_number_styles() {
        let with_total = PaginationSpec::PageNumber(PageNumber {
            page_param: "page".into(),
            size_param: "per_page".into(),
            first_page: 1,
            total_pages_path: Some("meta.total_pages".into()),
        });
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
            Next::FanOut(vec![
                Position::Page { page: 2 },
                Position::Page { page: 3 },
                Position::Page { page: 4 }
            ])
        );

        let chain = PaginationSpec::PageNumber(PageNumber {
            page_param: "page".into(),
            size_param: "per_page".into(),
            first_page: 0,
            total_pages_path: None,
        });
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

    #[test]
    fn page_targets() {
        let spec = page_number(1, None);
        assert_eq!(
            target(&spec, 25, &Position::Page { page: 4 }),
            Ok(Target::Query(vec![
                ("page".into(), "4".into()),
                ("per_page".into(), "25".into())
            ]))
        );
    }

    #[test]
    fn a_later_page_with_a_total_stops_at_the_last_page() {
        assert_eq!(
            after_page(1, 2, Some(3)),
            Ok(Next::Chain(Position::Page { page: 3 }))
        );
        assert_eq!(after_page(1, 3, Some(3)), Ok(Next::Done));
        assert_eq!(after_page(0, 2, Some(3)), Ok(Next::Done));
        assert_eq!(
            after_page(1, 1, Some(1)),
            Ok(Next::FanOut(vec![Position::Page { page: 2 }]))
        );
        assert_eq!(after_page(1, 1, Some(0)), Ok(Next::FanOut(vec![])));
    }

    #[test]
    fn extreme_page_counts_are_refused_not_overflowed() {
        assert!(matches!(
            after_page(1, 1, Some(u64::MAX)),
            Err(PaginationError::TooManyPages { .. })
        ));
        assert_eq!(after_page(1, u64::MAX, Some(u64::MAX)), Ok(Next::Done));
        // A record count of 2^64 - 1 at one record a page.
        let spec = page_number(1, None);
        let huge = run(
            &spec,
            &Position::Page { page: 1 },
            Role::Chain,
            json!(items(1)),
            &[("x-total-count", "18446744073709551615")],
            None,
        );
        assert!(matches!(huge, Err(PaginationError::TooManyPages { .. })), "{huge:?}");
        // A `Link rel="last"` at the top of u64 counts pages without wrapping.
        let link = r#"</v1/items?page=18446744073709551615>; rel="last""#;
        let last = run(&spec, &Position::Page { page: 1 }, Role::Chain, json!(items(1)), &[("link", link)], None);
        assert!(matches!(last, Err(PaginationError::TooManyPages { .. })), "{last:?}");
        let spec0 = page_number(0, None);
        let wraps = run(&spec0, &Position::Page { page: 0 }, Role::Chain, json!(items(1)), &[("link", link)], None);
        // From page 0, the last page's number plus one does not fit: no
        // count is stated, so the chain simply goes on.
        assert_eq!(wraps, Ok(Next::Chain(Position::Page { page: 1 })));
    }

    #[test]
    fn pages_walked_counts_the_first_page() {
        assert_eq!(pages_walked(1, 1), Ok(1));
        assert_eq!(pages_walked(0, 4), Ok(5));
        assert_eq!(pages_walked(0, u64::MAX), Ok(u64::MAX));
        assert!(matches!(
            pages_walked(5, 4),
            Err(PaginationError::OutOfRange { .. })
        ));
    }

    #[test]
    fn first_page_at_u64_max_does_not_panic() {
        // Reachable through the JSON API: `"first_page": 18446744073709551615`.
        let spec = page_number(u64::MAX, None);
        let first = first_position(&spec);
        assert_eq!(first, Position::Page { page: u64::MAX });
        let err = run(&spec, &first, Role::Chain, json!(items(10)), &[], None).unwrap_err();
        assert_eq!(
            err,
            PaginationError::OutOfRange {
                position: first.clone(),
                reason: "the next page number exceeds 2^64 - 1",
            }
        );
        let with_total = page_number(u64::MAX, Some("total_pages"));
        let body = json!({"items": items(10), "total_pages": 3});
        let err = run(&with_total, &first, Role::Chain, body, &[], Some("items")).unwrap_err();
        assert!(
            matches!(err, PaginationError::OutOfRange { ref position, .. } if *position == first),
            "{err}"
        );
        // Even a single page has a sentinel page after it, which does not fit.
        let body = json!({"items": items(10), "total_pages": 1});
        let one = run(&with_total, &first, Role::Chain, body, &[], Some("items"));
        assert!(matches!(one, Err(PaginationError::OutOfRange { .. })), "{one:?}");
    }

    #[test]
    fn a_spec_cannot_name_a_first_page_near_the_top_of_u64() {
        use super::super::MAX_FIRST_PAGE;
        assert_eq!(page_number(MAX_FIRST_PAGE, None).style().validate(), Ok(()));
        for first in [MAX_FIRST_PAGE + 1, u64::MAX] {
            let err = page_number(first, None).style().validate().unwrap_err();
            assert!(err.to_string().contains("pagination.first_page"), "{err}");
        }
        // Through the parser, as the API receives it.
        let json = r#"{"name":"t","primary_key":["id"],
            "source":{"base_url":"http://127.0.0.1:9","path":"/items"},
            "pagination":{"style":"page_number","first_page":18446744073709551615},
            "rate_limit":{"rate":1},"output":{"dir":"out"}}"#;
        let err = crate::spec::ExportSpec::from_json(json).unwrap_err();
        assert!(err.to_string().contains("pagination.first_page"), "{err}");
    }

    #[test]
    fn page_counts_come_from_links_and_record_counts_too() {
        let spec = page_number(1, None);
        let link = r#"</v1/items?page=2&per_page=10>; rel="next", </v1/items?page=3&per_page=10>; rel="last""#;
        let from_link = run(&spec, &Position::Page { page: 1 }, Role::Chain, json!(items(10)), &[("link", link)], None);
        assert_eq!(
            from_link,
            Ok(Next::FanOut(vec![
                Position::Page { page: 2 },
                Position::Page { page: 3 },
                Position::Page { page: 4 }
            ]))
        );
        // 25 records at the 10 a page the source served: 3 pages.
        let from_count = run(&spec, &Position::Page { page: 1 }, Role::Chain, json!(items(10)), &[("x-total-count", "25")], None);
        assert_eq!(from_link, from_count);
    }

    #[test]
    fn a_position_before_first_page_is_an_error() {
        let spec = page_number(5, Some("total_pages"));
        let body = json!({"items": items(10), "total_pages": 3});
        let err = run(
            &spec,
            &Position::Page { page: 2 },
            Role::Chain,
            body,
            &[],
            Some("items"),
        )
        .unwrap_err();
        assert!(
            matches!(err, PaginationError::OutOfRange { .. }),
            "{err}"
        );
    }
}
