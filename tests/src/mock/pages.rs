//! Which records answer a request: its query parsed into an [`Ask`], then cut
//! from the ordered ids of the data set into a [`Plan`]. One cut serves both
//! the fixed data set (`1..=records`) and a drifting one, so every style pages
//! a live set exactly as it pages the fixed one.

use std::ops::Range;

use super::cursor;
use super::styles::{Style, DEFAULT_PAGE_SIZE};

/// json-server's page size when `_page` comes without `_limit`.
pub const JSON_SERVER_PAGE_SIZE: usize = 10;

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// At this 0-based position of the ordered data set (offset and
    /// page-number styles): a delete before it shifts what it names.
    Position(usize),
    /// After this id (keyset styles); 0 is before every record.
    After(usize),
}

/// A request's query, parsed; independent of the data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ask {
    pub style: Style,
    pub start: Start,
    /// The page size in effect after defaulting and clamping.
    pub limit: usize,
    /// The page number the request named, for the page-numbered styles
    /// (json-server's `Link` header exists only when `_page` was given).
    pub number: Option<usize>,
}

/// Parses a request's query for `style`. Unknown parameters are ignored
/// (clients add partition and fixed parameters); malformed known ones are an
/// error message for a 400.
pub(crate) fn parse(
    style: Style,
    query: Option<&str>,
    max_page_size: usize,
    seed: u64,
) -> Result<Ask, String> {
    let params = Params::new(query);
    let number = page_number(style, &params)?;
    let max = max_page_size.max(1);
    let (size_name, default) = match style {
        Style::Page | Style::PageNoTotal => ("per_page", DEFAULT_PAGE_SIZE),
        // json-server pages by 10 under `_page` and otherwise returns the
        // whole collection, which the cap then cuts.
        Style::JsonServer if number.is_some() => ("_limit", JSON_SERVER_PAGE_SIZE),
        Style::JsonServer => ("_limit", max),
        _ => ("limit", DEFAULT_PAGE_SIZE),
    };
    let limit = params.number(size_name)?.unwrap_or(default).clamp(1, max);
    let start = match style {
        Style::Offset | Style::OffsetNoTotal => {
            Start::Position(params.number("offset")?.unwrap_or(0))
        }
        Style::Page | Style::PageNoTotal | Style::JsonServer => {
            let page = number.unwrap_or(1);
            Start::Position((page - 1).saturating_mul(limit))
        }
        Style::Cursor | Style::CursorHeader => match params.get("cursor") {
            None | Some("") => Start::After(0),
            Some(c) => Start::After(
                cursor::decode(seed, c).ok_or_else(|| format!("invalid cursor: {c:?}"))?,
            ),
        },
        Style::LastRecord => Start::After(params.number("starting_after")?.unwrap_or(0)),
        Style::NextUrl | Style::NextUrlRelative | Style::Link => {
            Start::After(params.number("after")?.unwrap_or(0))
        }
    };
    Ok(Ask {
        style,
        start,
        limit,
        number,
    })
}

/// The page number of the page-numbered styles (from 1): `page` defaults to
/// 1, json-server's `_page` may be absent. Always at least 1.
fn page_number(style: Style, params: &Params) -> Result<Option<usize>, String> {
    let (name, default) = match style {
        Style::Page | Style::PageNoTotal => ("page", Some(1)),
        Style::JsonServer => ("_page", None),
        _ => return Ok(None),
    };
    match params.number(name)?.or(default) {
        Some(0) => Err(format!("invalid {name}: pages start at 1")),
        number => Ok(number),
    }
}

/// A query's parameters; the first of repeated names wins.
struct Params(Vec<(String, String)>);

impl Params {
    fn new(query: Option<&str>) -> Self {
        Params(
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn number(&self, name: &str) -> Result<Option<usize>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<usize>()
                .map(Some)
                .map_err(|_| format!("invalid {name}: {v:?}")),
        }
    }
}

/// The ordered ids a page is cut from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ids<'a> {
    /// `1..=n`: the data set without drift, where position `p` holds id `p + 1`.
    Fixed(usize),
    /// A drifting data set's live ids, ascending.
    Live(&'a [usize]),
}

impl Ids<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Ids::Fixed(n) => *n,
            Ids::Live(ids) => ids.len(),
        }
    }

    /// How many ids are at most `id`, which is also the position of the
    /// first id after it. O(log n).
    fn rank(&self, id: usize) -> usize {
        match self {
            Ids::Fixed(n) => id.min(*n),
            Ids::Live(ids) => ids.partition_point(|&x| x <= id),
        }
    }

    /// The id at a 0-based position.
    fn at(&self, position: usize) -> Option<usize> {
        match self {
            Ids::Fixed(n) => (position < *n).then(|| position + 1),
            Ids::Live(ids) => ids.get(position).copied(),
        }
    }

    /// The ids at these positions, which must lie within the set.
    fn window(&self, positions: Range<usize>) -> Vec<usize> {
        match self {
            Ids::Fixed(_) => positions.map(|p| p + 1).collect(),
            Ids::Live(ids) => ids.get(positions).unwrap_or_default().to_vec(),
        }
    }

    /// The highest id, 0 for an empty set.
    fn max(&self) -> usize {
        match self {
            Ids::Fixed(n) => *n,
            Ids::Live(ids) => ids.last().copied().unwrap_or(0),
        }
    }
}

/// What one request is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub style: Style,
    /// The span of ids the page covers, ascending; the page holds the data
    /// set's ids within it (without drift, all of them). Empty past the end,
    /// where it starts just after the last id asked for or held.
    pub ids: Range<usize>,
    /// The ids on the page, ascending.
    pub page: Vec<usize>,
    /// The 0-based position of the page's first record in the ordered data
    /// set (where it would be, for an empty page).
    pub first: usize,
    /// The page size in effect after defaulting and clamping.
    pub limit: usize,
    /// The size of the data set: the real one, which stated totals may hide.
    pub records: usize,
    /// The page number the request named, if any.
    pub number: Option<usize>,
    /// The id the next page of a keyset style starts after; `None` on the
    /// last page.
    pub next_after: Option<usize>,
}

impl Plan {
    /// Whether a keyset client should ask for another page.
    pub(crate) fn more(&self) -> bool {
        self.next_after.is_some()
    }

    /// The last id this page covers (the id before it when the page is empty).
    pub(crate) fn last(&self) -> usize {
        self.ids.end.saturating_sub(1)
    }

    pub(crate) fn contains(&self, id: usize) -> bool {
        self.page.binary_search(&id).is_ok()
    }
}

/// Cuts the page `ask` names from `ids`. With `cursor_cycle`, the fourth
/// page of the cursor styles sends its client back to the second (see
/// [`MockConfig::cursor_cycle`](super::MockConfig::cursor_cycle)).
pub(crate) fn resolve(ask: &Ask, ids: Ids<'_>, cursor_cycle: bool) -> Plan {
    let len = ids.len();
    let first = match ask.start {
        Start::Position(p) => p.min(len),
        Start::After(id) => ids.rank(id),
    };
    let end = first.saturating_add(ask.limit).min(len);
    let page = ids.window(first..end);
    let span = match (page.first(), page.last()) {
        (Some(&lo), Some(&hi)) => lo..hi.saturating_add(1),
        _ => {
            let past = ids.max().saturating_add(1);
            let lo = match ask.start {
                Start::After(id) => id.saturating_add(1).min(past),
                Start::Position(_) => past,
            };
            lo..lo
        }
    };
    let next_after = if cursor_cycle && is_fourth_cursor_page(ask, first, &page) {
        ids.at(ask.limit.saturating_sub(1))
    } else {
        (end < len).then(|| span.end.saturating_sub(1))
    };
    Plan {
        style: ask.style,
        ids: span,
        page,
        first,
        limit: ask.limit,
        records: len,
        number: ask.number,
        next_after,
    }
}

/// Whether this is the page a cursor client reaches fourth: the one
/// starting at position `3 × limit`, if it holds anything.
fn is_fourth_cursor_page(ask: &Ask, first: usize, page: &[usize]) -> bool {
    matches!(ask.style, Style::Cursor | Style::CursorHeader)
        && !page.is_empty()
        && Some(first) == ask.limit.checked_mul(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(style: Style, q: &str, records: usize) -> Plan {
        resolve(
            &parse(style, Some(q), 1000, 1).unwrap(),
            Ids::Fixed(records),
            false,
        )
    }

    #[test]
    fn plans_know_their_positions_and_where_to_go_next() {
        let p = cut(Style::Offset, "offset=20&limit=10", 57);
        assert_eq!((p.page.len(), p.first, p.records), (10, 20, 57));
        assert_eq!((p.page.first(), p.next_after), (Some(&21), Some(30)));
        let p = cut(Style::LastRecord, "starting_after=50&limit=10", 57);
        assert_eq!((p.first, p.page.len(), p.next_after), (50, 7, None));
        let p = cut(Style::Page, "page=9&per_page=10", 57);
        assert_eq!((p.ids.clone(), p.first, p.more()), (58..58, 57, false));
        let p = cut(Style::NextUrl, "after=0", 0);
        assert_eq!((p.ids.clone(), p.records, p.last()), (1..1, 0, 0));
        assert!(cut(Style::Offset, "", 57).contains(57));
        assert!(!cut(Style::Offset, "limit=5", 57).contains(6));
    }

    #[test]
    fn json_server_sizes() {
        let ask = |q: &str| parse(Style::JsonServer, Some(q), 1000, 1).unwrap();
        let a = ask("_page=2");
        assert_eq!((a.limit, a.number), (10, Some(2)));
        assert_eq!(a.start, Start::Position(10));
        let a = ask("_limit=25");
        assert_eq!((a.limit, a.number, a.start), (25, None, Start::Position(0)));
        // Neither: the whole collection, as json-server does, cut by the cap.
        let a = parse(Style::JsonServer, None, 300, 1).unwrap();
        assert_eq!(a.limit, 300);
        let a = parse(Style::JsonServer, Some("_page=1&_limit=5000"), 300, 1).unwrap();
        assert_eq!(a.limit, 300);
        assert_eq!(ask("_page=1&_limit=0").limit, 1);
        for q in ["_page=0", "_page=x", "_limit=-1", "_page=1&_limit=1.5"] {
            assert!(parse(Style::JsonServer, Some(q), 1000, 1).is_err(), "{q}");
        }
    }

    #[test]
    fn the_fourth_cursor_page_points_back_at_the_second() {
        let after = |id: usize| format!("cursor={}&limit=10", cursor::encode(1, id));
        let cycled = |style: Style, q: &str, records: usize| {
            let ask = parse(style, Some(q), 1000, 1).unwrap();
            resolve(&ask, Ids::Fixed(records), true)
        };
        for style in [Style::Cursor, Style::CursorHeader] {
            assert_eq!(cycled(style, "limit=10", 100).next_after, Some(10));
            assert_eq!(cycled(style, &after(10), 100).next_after, Some(20));
            assert_eq!(cycled(style, &after(20), 100).next_after, Some(30));
            let fourth = cycled(style, &after(30), 100);
            assert_eq!((fourth.page[0], fourth.next_after), (31, Some(10)));
            // Even when the fourth page is the last one.
            assert_eq!(cycled(style, &after(30), 35).next_after, Some(10));
            // Without a fourth page there is no cycle.
            assert_eq!(cycled(style, &after(30), 30).next_after, None);
            // Other pages are left alone.
            assert_eq!(cycled(style, &after(40), 100).next_after, Some(50));
        }
        assert_eq!(
            cycled(Style::NextUrl, "after=20&limit=10", 100).next_after,
            Some(30)
        );
    }

    fn live_cut(style: Style, q: &str, live: &[usize]) -> Plan {
        resolve(
            &parse(style, Some(q), 1000, 1).unwrap(),
            Ids::Live(live),
            false,
        )
    }

    #[test]
    fn live_sets_are_cut_by_position_or_by_id() {
        let live = [2, 3, 5, 8, 13, 21, 34];
        let p = live_cut(Style::Offset, "offset=2&limit=3", &live);
        assert_eq!(
            (p.page.clone(), p.ids.clone(), p.first),
            (vec![5, 8, 13], 5..14, 2)
        );
        assert_eq!((p.records, p.next_after), (7, Some(13)));
        let p = live_cut(Style::Page, "page=3&per_page=3", &live);
        assert_eq!((p.page.clone(), p.next_after), (vec![34], None));
        // Keyset styles continue after an id, deleted or not.
        let p = live_cut(Style::LastRecord, "starting_after=4&limit=2", &live);
        assert_eq!(
            (p.page.clone(), p.first, p.next_after),
            (vec![5, 8], 2, Some(8))
        );
        let p = live_cut(Style::Link, "after=34", &live);
        assert_eq!(
            (p.page.clone(), p.ids.clone(), p.first),
            (vec![], 35..35, 7)
        );
        let p = live_cut(Style::Offset, "offset=50", &live);
        assert_eq!((p.ids.clone(), p.first, p.more()), (35..35, 7, false));
        let p = live_cut(Style::NextUrl, "after=0", &[]);
        assert_eq!((p.ids.clone(), p.records, p.last()), (1..1, 0, 0));
        assert!(live_cut(Style::Offset, "", &live).contains(21));
        assert!(!live_cut(Style::Offset, "", &live).contains(4));
    }

    #[test]
    fn fixed_and_live_cuts_agree_on_the_same_ids() {
        let live: Vec<usize> = (1..=57).collect();
        for (style, q) in [
            (Style::Offset, "offset=50&limit=10"),
            (Style::Page, "page=2&per_page=20"),
            (Style::JsonServer, "_page=6&_limit=10"),
            (Style::NextUrl, "after=56&limit=10"),
            (Style::NextUrlRelative, "after=99"),
            (Style::Cursor, "limit=7"),
            (
                Style::Cursor,
                &format!("cursor={}&limit=7", cursor::encode(1, 14)),
            ),
        ] {
            let a = parse(style, Some(q), 1000, 1).unwrap();
            for cycle in [false, true] {
                assert_eq!(
                    resolve(&a, Ids::Fixed(57), cycle),
                    resolve(&a, Ids::Live(&live), cycle),
                    "{q}"
                );
            }
        }
    }
}
