//! Loop detection over a whole chain: what a chain page leaves behind so
//! that a source leading back to where it has been is caught, however long
//! the cycle.
//!
//! A chain page marks the position it leads to and (when it held records) a
//! digest of its records' keys. Both are SHA-256 digests: a mark has a fixed
//! size however long a cursor or URL is, and holds no token a URL carried. Marks live per partition in Postgres and
//! are written in the landing transaction; a mark seen before means the
//! chain repeats (`a → b → c → a`, or a different cursor serving the same
//! records), and the page is refused instead of followed forever.

use sha2::{Digest, Sha256};

use super::Next;
#[cfg(test)]
use super::Position;
use crate::spec::hex;

/// What a mark records, for the reason a repeat is refused with.
const LEADS_TO: &str = "leads to ";
const SERVES: &str = "serves keys ";

/// The marks of a chain page: the position it leads to, and the digest of
/// its keys when it has any. Leaves and ends of chains lead nowhere.
pub fn chain_marks<'a>(next: &Next, keys: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut marks = Vec::new();
    if let Next::Chain(position) = next {
        // A position always serializes (plain strings and numbers).
        let text = serde_json::to_string(position).unwrap_or_default();
        marks.push(format!(
            "{LEADS_TO}{}",
            hex(&Sha256::digest(text.as_bytes()))
        ));
    }
    let mut hasher = Sha256::new();
    let mut any = false;
    for key in keys {
        any = true;
        hasher.update(key.as_bytes());
        // A separator no key contains keeps ["ab"] apart from ["a", "b"].
        hasher.update([0u8]);
    }
    if any {
        marks.push(format!("{SERVES}{}", hex(&hasher.finalize())));
    }
    marks
}

/// Why a page whose mark was already made on `earlier_page` is refused.
/// It names pages, not positions: a cursor or URL may carry a token.
pub fn repeat_reason(mark: &str, page_no: i64, earlier_page: i64, partition_no: i32) -> String {
    let what = if mark.starts_with(LEADS_TO) {
        format!("leads where page {earlier_page} already led (the same next position)")
    } else {
        format!("serves exactly the records of page {earlier_page}")
    };
    format!(
        "page {page_no} of partition {partition_no} {what}: the source's chain loops; \
         stopping instead of following it forever"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(c: &str) -> Next {
        Next::Chain(Position::Cursor {
            cursor: Some(c.into()),
        })
    }

    #[test]
    fn a_chain_page_marks_where_it_leads_and_what_it_served() {
        let marks = chain_marks(&cursor("abc"), ["1", "2"].into_iter());
        assert_eq!(marks.len(), 2);
        assert!(
            marks[0].starts_with("leads to ") && !marks[0].contains("abc"),
            "{}",
            marks[0]
        );
        assert_eq!(marks[0].len(), "leads to ".len() + 64);
        assert_ne!(marks[0], chain_marks(&cursor("abd"), std::iter::empty())[0]);
        assert!(marks[1].starts_with("serves keys "));
        // The same keys, whatever cursor led there, make the same digest.
        let again = chain_marks(&Next::Done, ["1", "2"].into_iter());
        assert_eq!(again, vec![marks[1].clone()]);
        let split = chain_marks(&Next::Done, ["12"].into_iter());
        assert_ne!(split, again);
    }

    #[test]
    fn empty_pages_and_ends_mark_nothing() {
        assert!(chain_marks(&Next::Done, std::iter::empty()).is_empty());
        assert!(chain_marks(&Next::FanOut(vec![]), std::iter::empty()).is_empty());
    }

    #[test]
    fn reasons_say_which_page_came_first() {
        let mark = &chain_marks(&cursor("secret-token"), std::iter::empty())[0];
        let reason = repeat_reason(mark, 3, 0, 1);
        assert_eq!(
            reason,
            "page 3 of partition 1 leads where page 0 already led (the same next position): \
             the source's chain loops; stopping instead of following it forever"
        );
        let marks = chain_marks(&Next::Done, ["9"].into_iter());
        assert!(repeat_reason(&marks[0], 5, 2, 0).contains("serves exactly the records of page 2"));
    }
}
