//! Offset style: `?offset=N&limit=M`.
//!
//! With a total (at `total_path` in the body, or in a header such as
//! `X-Total-Count`), the first page fans out every remaining page at once,
//! plus one page past the total (the sentinel: records there mean the total
//! was wrong). Without one, the chain goes on until an empty page — a short
//! page is not the end, since many sources cap the page size — stepping by
//! what the source really served.

use serde::{Deserialize, Serialize};

use super::fan_out::fan_out;
use super::totals::{self, first_of, Counts, Statement};
use super::{Next, Page, PaginationError, PaginationStyle, Position, Target, UnderDrift};
use crate::spec::{check_path, SpecError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offset {
    #[serde(default = "offset_param")]
    pub offset_param: String,
    #[serde(default = "limit_param")]
    pub limit_param: String,
    /// Where the body reports the partition's number of records.
    #[serde(default)]
    pub total_path: Option<String>,
}

fn offset_param() -> String {
    "offset".into()
}
fn limit_param() -> String {
    "limit".into()
}

impl PaginationStyle for Offset {
    fn first(&self) -> Position {
        Position::Offset { offset: 0 }
    }

    fn target(&self, page_size: u32, position: &Position) -> Result<Target, PaginationError> {
        let Position::Offset { offset } = position else {
            return Err(self.wrong_position(position));
        };
        Ok(Target::Query(vec![
            (self.offset_param.clone(), offset.to_string()),
            (self.limit_param.clone(), page_size.to_string()),
        ]))
    }

    fn next(
        &self,
        page_size: u32,
        position: &Position,
        page: &Page<'_>,
    ) -> Result<Next, PaginationError> {
        let Position::Offset { offset } = position else {
            return Err(self.wrong_position(position));
        };
        let served = page.records.len() as u64;
        if served == 0 {
            return Ok(Next::Done);
        }
        let total = first_of(&self.stated(page)?, Counts::Records);
        after_page(*offset, served, page_size, total)
    }

    fn stated(&self, page: &Page<'_>) -> Result<Vec<Statement>, PaginationError> {
        let body = match &self.total_path {
            Some(path) => totals::body_count(page.body, path, Counts::Records)?,
            None => None,
        };
        Ok(body
            .into_iter()
            .chain(totals::header_records(page.headers))
            .collect())
    }

    fn under_drift(&self) -> UnderDrift {
        UnderDrift::Shifts
    }

    fn validate(&self) -> Result<(), SpecError> {
        if let Some(p) = &self.total_path {
            check_path("pagination.total_path", p)?;
        }
        Ok(())
    }
}

/// What follows a non-empty page of `served` records at `offset`, given the
/// total the body reported (if any).
fn after_page(
    offset: u64,
    served: u64,
    page_size: u32,
    total: Option<u64>,
) -> Result<Next, PaginationError> {
    // Saturating is exact here: a sum past u64::MAX is past any total too.
    let reached = offset.saturating_add(served);
    match total {
        // Only the first page fans out.
        Some(total) if offset == 0 => fan_out_all(total, served, page_size),
        Some(total) if reached >= total => Ok(Next::Done),
        _ => chain(offset, served),
    }
}

/// Every page after the first, `total` records in all, and the sentinel
/// page past them. The step is what the source really served, in case it
/// clamps the page size.
fn fan_out_all(total: u64, served: u64, page_size: u32) -> Result<Next, PaginationError> {
    let step = served.min(u64::from(page_size)).max(1);
    let pages = total.div_ceil(step);
    fan_out(&Position::Offset { offset: 0 }, pages, |i| {
        i.checked_mul(step).map(|offset| Position::Offset { offset })
    })
}

fn chain(offset: u64, served: u64) -> Result<Next, PaginationError> {
    let next = offset
        .checked_add(served)
        .ok_or(PaginationError::OutOfRange {
            position: Position::Offset { offset },
            reason: "the next offset exceeds 2^64 - 1",
        })?;
    Ok(Next::Chain(Position::Offset { offset: next }))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{first_position, target, Role};
    use super::*;
    use serde_json::json;

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
        let next = run_data(
            &spec,
            &first,
            Role::Chain,
            json!({"data": items(10), "total": 35}),
        )
        .unwrap();
        assert_eq!(
            next,
            Next::FanOut(vec![
                Position::Offset { offset: 10 },
                Position::Offset { offset: 20 },
                Position::Offset { offset: 30 },
                Position::Offset { offset: 40 },
            ])
        );
        // Leaves never lead anywhere.
        let leaf = run_data(
            &spec,
            &Position::Offset { offset: 10 },
            Role::Leaf,
            json!({"data": items(10), "total": 35}),
        )
        .unwrap();
        assert_eq!(leaf, Next::Done);
    }

    #[test]
    fn offset_fan_out_follows_a_clamped_page_size() {
        let next = run_data(
            &offset(true),
            &Position::Offset { offset: 0 },
            Role::Chain,
            json!({"data": items(4), "total": 10}),
        )
        .unwrap();
        assert_eq!(
            next,
            Next::FanOut(vec![
                Position::Offset { offset: 4 },
                Position::Offset { offset: 8 },
                Position::Offset { offset: 12 },
            ])
        );
    }

    #[test]
    fn offset_exact_and_empty_totals() {
        let one_page = run_data(
            &offset(true),
            &Position::Offset { offset: 0 },
            Role::Chain,
            json!({"data": items(10), "total": 10}),
        )
        .unwrap();
        // Only the sentinel page, which must come back empty.
        assert_eq!(one_page, Next::FanOut(vec![Position::Offset { offset: 10 }]));
        let empty = run_data(
            &offset(true),
            &Position::Offset { offset: 0 },
            Role::Chain,
            json!({"data": [], "total": 0}),
        )
        .unwrap();
        assert_eq!(empty, Next::Done);
    }

    #[test]
    fn offset_without_total_stops_on_an_empty_page() {
        let spec = offset(false);
        let full = run_data(
            &spec,
            &Position::Offset { offset: 20 },
            Role::Chain,
            json!({"data": items(10)}),
        )
        .unwrap();
        assert_eq!(full, Next::Chain(Position::Offset { offset: 30 }));
        let short = run_data(
            &spec,
            &Position::Offset { offset: 30 },
            Role::Chain,
            json!({"data": items(3)}),
        )
        .unwrap();
        // A source capping its page size serves short pages all along.
        assert_eq!(short, Next::Chain(Position::Offset { offset: 33 }));
        let empty = run_data(
            &spec,
            &Position::Offset { offset: 33 },
            Role::Chain,
            json!({"data": []}),
        )
        .unwrap();
        assert_eq!(empty, Next::Done);
    }

    #[test]
    fn a_header_total_fans_out_too() {
        let next = run(
            &offset(false),
            &Position::Offset { offset: 0 },
            Role::Chain,
            json!({"data": items(10)}),
            &[("x-total-count", "25")],
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
    }

    #[test]
    fn offset_total_of_wrong_type_is_an_error() {
        let err = run_data(
            &offset(true),
            &Position::Offset { offset: 0 },
            Role::Chain,
            json!({"data": items(10), "total": "many"}),
        )
        .unwrap_err();
        assert!(
            matches!(err, PaginationError::BadField { ref path, .. } if path == "total"),
            "{err}"
        );
    }

    #[test]
    fn absurd_totals_are_refused() {
        let err = run_data(
            &offset(true),
            &Position::Offset { offset: 0 },
            Role::Chain,
            json!({"data": items(1), "total": u64::MAX}),
        )
        .unwrap_err();
        assert!(matches!(err, PaginationError::TooManyPages { .. }));
    }

    #[test]
    fn a_later_page_with_a_total_chains_until_the_total() {
        // A chain page (not the first) of a partition whose total appeared late.
        assert_eq!(
            after_page(20, 10, 10, Some(35)),
            Ok(Next::Chain(Position::Offset { offset: 30 }))
        );
        assert_eq!(after_page(30, 5, 10, Some(35)), Ok(Next::Done));
        assert_eq!(after_page(30, 10, 10, Some(35)), Ok(Next::Done));
    }

    #[test]
    fn a_full_page_without_total_chains() {
        assert_eq!(
            after_page(0, 10, 10, None),
            Ok(Next::Chain(Position::Offset { offset: 10 }))
        );
        // More than asked for is still not a short page.
        assert_eq!(
            after_page(0, 12, 10, None),
            Ok(Next::Chain(Position::Offset { offset: 12 }))
        );
        assert_eq!(
            after_page(0, 9, 10, None),
            Ok(Next::Chain(Position::Offset { offset: 9 }))
        );
    }

    #[test]
    fn fan_out_steps_by_what_was_served() {
        assert_eq!(
            fan_out_all(25, 10, 10),
            Ok(Next::FanOut(vec![
                Position::Offset { offset: 10 },
                Position::Offset { offset: 20 },
                Position::Offset { offset: 30 },
            ]))
        );
        // A source serving more than the page size still steps by page size.
        assert_eq!(
            fan_out_all(25, 20, 10),
            Ok(Next::FanOut(vec![
                Position::Offset { offset: 10 },
                Position::Offset { offset: 20 },
                Position::Offset { offset: 30 },
            ]))
        );
        assert_eq!(fan_out_all(0, 10, 10), Ok(Next::FanOut(vec![])));
    }

    #[test]
    fn extreme_totals_and_page_sizes_are_refused_not_overflowed() {
        // A total of 2^64 - 1 is ~2^60 pages: refused by the fan-out cap.
        assert!(matches!(
            fan_out_all(u64::MAX, 10, 10),
            Err(PaginationError::TooManyPages { .. })
        ));
        // The largest page size with a total of u64::MAX: still too many.
        assert!(matches!(
            fan_out_all(u64::MAX, u64::MAX, u32::MAX),
            Err(PaginationError::TooManyPages { .. })
        ));
        // A source serving nothing per page would divide by zero; the step
        // is at least 1 (and then the pages are too many).
        assert!(matches!(
            fan_out_all(u64::MAX, 0, 10),
            Err(PaginationError::TooManyPages { .. })
        ));
        // A page bigger than the total: the sentinel page only.
        assert_eq!(
            fan_out_all(5, 10, u32::MAX),
            Ok(Next::FanOut(vec![Position::Offset { offset: 10 }]))
        );
        assert_eq!(after_page(u64::MAX, u64::MAX, u32::MAX, Some(1)), Ok(Next::Done));
    }

    #[test]
    fn offsets_near_the_top_of_u64_do_not_overflow() {
        let top = u64::MAX - 5;
        // Past every possible total: the end, not a wrapped offset.
        assert_eq!(after_page(top, 10, 10, Some(u64::MAX)), Ok(Next::Done));
        // No total: the next offset does not exist.
        let err = after_page(top, 10, 10, None).unwrap_err();
        assert!(
            matches!(err, PaginationError::OutOfRange { ref position, .. }
                if *position == Position::Offset { offset: top }),
            "{err}"
        );
        assert_eq!(
            after_page(u64::MAX - 10, 10, 10, None),
            Ok(Next::Chain(Position::Offset { offset: u64::MAX }))
        );
    }
}
