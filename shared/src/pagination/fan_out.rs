//! Fanning out: the first page of a partition whose response reports a
//! total lists every remaining page at once, so they can be fetched in
//! parallel. Shared by the offset and page-number styles.

use super::{Next, PaginationError, Position};

/// Guards against a bogus `total` asking for a billion tasks.
pub const MAX_PAGES_PER_PARTITION: u64 = 1_000_000;

/// The `pages` positions after the first page: `position_of(1..=pages)`,
/// where `position_of` returns `None` when a position does not fit in 64
/// bits (reported as [`PaginationError::OutOfRange`] after `first`).
pub(super) fn fan_out(
    first: &Position,
    pages: u64,
    position_of: impl Fn(u64) -> Option<Position>,
) -> Result<Next, PaginationError> {
    check_fan_out(pages)?;
    let positions = (1..=pages)
        .map(|i| {
            position_of(i).ok_or_else(|| PaginationError::OutOfRange {
                position: first.clone(),
                reason: "a fanned-out page's position exceeds 2^64 - 1",
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Next::FanOut(positions))
}

fn check_fan_out(pages: u64) -> Result<(), PaginationError> {
    if pages > MAX_PAGES_PER_PARTITION {
        return Err(PaginationError::TooManyPages {
            pages,
            limit: MAX_PAGES_PER_PARTITION,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(page: u64) -> Option<Position> {
        Some(Position::Page { page })
    }

    #[test]
    fn lists_every_page_after_the_first() {
        let first = Position::Page { page: 1 };
        assert_eq!(
            fan_out(&first, 2, |i| page(1 + i)),
            Ok(Next::FanOut(vec![
                Position::Page { page: 2 },
                Position::Page { page: 3 }
            ]))
        );
        assert_eq!(fan_out(&first, 0, page), Ok(Next::FanOut(vec![])));
    }

    #[test]
    fn the_limit_is_inclusive() {
        let first = Position::Page { page: 0 };
        let at_limit = fan_out(&first, MAX_PAGES_PER_PARTITION, page).unwrap();
        assert!(
            matches!(at_limit, Next::FanOut(ref p) if p.len() as u64 == MAX_PAGES_PER_PARTITION)
        );
        assert_eq!(
            fan_out(&first, MAX_PAGES_PER_PARTITION + 1, page),
            Err(PaginationError::TooManyPages {
                pages: MAX_PAGES_PER_PARTITION + 1,
                limit: MAX_PAGES_PER_PARTITION
            })
        );
    }

    #[test]
    fn an_unrepresentable_position_is_an_error() {
        let first = Position::Page { page: u64::MAX };
        let err = fan_out(&first, 3, |i| u64::MAX.checked_add(i).and_then(page)).unwrap_err();
        assert!(
            matches!(err, PaginationError::OutOfRange { ref position, .. } if *position == first),
            "{err}"
        );
    }
}
