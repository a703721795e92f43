//! Pagination: where a page is, and where the next one is.
//!
//! This module owns what every style shares: the vocabulary ([`Position`],
//! [`Role`], [`Target`], [`Page`], [`Next`], [`PaginationError`]), the
//! [`PaginationStyle`] trait, and [`PaginationSpec`], the enum a spec names
//! its style with, which only delegates to the style. Each style lives in its
//! own file and owns its parameters, its requests, its reading of a response
//! and its validation. Every style is pure: given the position of a page and
//! its response, it says what comes next — nothing, the next link of a
//! chain, or (offset and page-number styles whose first page reports a
//! total) every remaining page at once.
//!
//! Adding a style is one new file with a struct that implements
//! [`PaginationStyle`], and one line in the `styles!` list below.
//!
//! Helpers shared by several styles: `body` reads the records and typed
//! fields of a response body, `page_body` splits a body into its records'
//! texts and the rest, `fan_out` lists every remaining page under a
//! limit, `follow` keeps source-given URLs on the source's origin.

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use crate::model::text_enum;
use crate::spec::SpecError;

mod body;
mod fan_out;
mod follow;
mod marks;
mod page_body;
#[cfg(test)]
mod test_support;
pub mod totals;

pub use body::{lookup, records};
pub use fan_out::MAX_PAGES_PER_PARTITION;
pub use page_body::PageBody;

/// The highest `first_page` a spec may name. Sources count from 0 or 1; the
/// bound keeps every page number a spec can reach far from 2^64, though
/// the page arithmetic is checked anyway (a stored task predates any bound).
pub const MAX_FIRST_PAGE: u64 = 1_000_000_000;

/// `pagination.first_page` within [`MAX_FIRST_PAGE`].
pub(crate) fn check_first_page(first_page: u64) -> Result<(), SpecError> {
    if first_page > MAX_FIRST_PAGE {
        return Err(crate::spec::invalid(
            "pagination.first_page",
            format!("must be at most {MAX_FIRST_PAGE}"),
        ));
    }
    Ok(())
}
pub use link_header::next_link;
pub use marks::{chain_marks, repeat_reason};
pub use totals::{Counts, Statement};

/// Where a page is. Stored in Postgres with each page task, so a task can be
/// retried or replayed without any other context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Position {
    Offset {
        offset: u64,
    },
    Page {
        page: u64,
    },
    /// `None` is the first page (no cursor sent).
    Cursor {
        cursor: Option<String>,
    },
    /// Last-record style: the key of the last record seen (`None`: first page).
    After {
        after: Option<String>,
    },
    /// Next-URL and `Link` styles: `None` is the first page.
    Url {
        url: Option<String>,
    },
}

impl Position {
    /// The position as errors and logs show it: a source's URL redacted
    /// (see `redact`), anything else as it is.
    pub fn shown(&self) -> String {
        match self {
            Position::Url { url: Some(url) } => {
                format!("Url {{ url: {:?} }}", crate::redact::url_text(url))
            }
            other => format!("{other:?}"),
        }
    }
}

text_enum!(
    /// Whether a page may lead to more pages. The first page of a partition can
    /// fan out; a fanned-out page is a leaf; chain styles walk one page at a time.
    /// The sentinel is the fanned-out page just past the stated end: it should
    /// come back empty, and a source that answers it 404 or 416 means the same.
    /// A backward page re-reads a partition whose data moved, last page first
    /// (see `verification`); what it leads to was planned with the pass.
    Role {
        Chain => "chain",
        Leaf => "leaf",
        Sentinel => "sentinel",
        Backward => "backward",
    }
);

/// What to request for a position: query parameters added to the base
/// request, or a full URL given by the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Query(Vec<(String, String)>),
    Url(String),
}

impl Target {
    /// The page size, and the key that says where to continue when there
    /// is one (a cursor, the last record's key): the request of the styles
    /// that carry their position in one query parameter.
    pub(crate) fn keyed(
        size_param: &str,
        page_size: u32,
        key_param: &str,
        key: &Option<String>,
    ) -> Target {
        let mut query = vec![(size_param.to_string(), page_size.to_string())];
        if let Some(key) = key {
            query.push((key_param.to_string(), key.clone()));
        }
        Target::Query(query)
    }
}

/// The page-size parameter most APIs name, the default of every style
/// that does not say otherwise.
pub(crate) fn limit_param() -> String {
    "limit".into()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Done,
    Chain(Position),
    /// Every remaining page of the partition (the first page is not
    /// included); the last is always the sentinel page past the stated end.
    FanOut(Vec<Position>),
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum PaginationError {
    #[error("records not found at `{path}` in the response body")]
    NoRecords { path: String },
    #[error("`{path}` in the response body is not an array of records (found {found})")]
    NotAnArray { path: String, found: &'static str },
    #[error("`{path}` in the response body is {found}, expected {expected}")]
    BadField {
        path: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("next page URL {url:?} is not usable: {reason}")]
    BadNextUrl { url: String, reason: String },
    #[error("position {} does not belong to the {style} style", position.shown())]
    WrongPosition {
        position: Position,
        style: &'static str,
    },
    #[error("the source returned the same cursor again; stopping to avoid a loop")]
    CursorLoop,
    #[error("fan-out of {pages} pages is more than the limit of {limit}")]
    TooManyPages { pages: u64, limit: u64 },
    /// The page after `position` has no 64-bit position (a `first_page` or a
    /// stored position near `u64::MAX`); wrapping around would re-fetch the
    /// start of the partition.
    #[error("the page after {} is out of range: {reason}", position.shown())]
    OutOfRange {
        position: Position,
        reason: &'static str,
    },
}

/// A page's response as the styles see it.
pub struct Page<'a> {
    pub body: &'a Value,
    pub headers: &'a HeaderMap,
    pub records: Records<'a>,
    /// The URL that was requested (relative next URLs resolve against it).
    pub url: &'a Url,
    /// The origin every followed URL must share.
    pub origin: &'a Url,
}

/// What the styles know of a page's records: how many there are, and the
/// last (a style may steer by its fields). The records themselves are
/// flattened one at a time and never held together as trees.
#[derive(Debug, Clone, Copy)]
pub struct Records<'a> {
    count: usize,
    last: Option<&'a Value>,
}

impl<'a> Records<'a> {
    pub fn new(count: usize, last: Option<&'a Value>) -> Records<'a> {
        Records { count, last }
    }

    /// Every record at hand.
    pub fn of(records: &'a [Value]) -> Records<'a> {
        Records::new(records.len(), records.last())
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn last(&self) -> Option<&'a Value> {
        self.last
    }
}

/// One pagination style: its parameters (the struct) and its behaviour.
///
/// A style only ever sees positions it made itself (by [`first`] or through
/// [`Next`]); any other position is answered with
/// [`PaginationStyle::wrong_position`].
///
/// [`first`]: PaginationStyle::first
pub trait PaginationStyle: StyleName {
    /// The position of the first page of a partition.
    fn first(&self) -> Position;

    /// The query parameters (or URL) that fetch the page at `position`.
    fn target(&self, page_size: u32, position: &Position) -> Result<Target, PaginationError>;

    /// What follows the page at `position`, which may lead further (its
    /// role is [`Role::Chain`]; leaves never get here).
    fn next(
        &self,
        page_size: u32,
        position: &Position,
        page: &Page<'_>,
    ) -> Result<Next, PaginationError>;

    /// The counts the page states about its partition (see [`totals`]):
    /// by default, the record counts in conventional headers.
    fn stated(&self, page: &Page<'_>) -> Result<Vec<Statement>, PaginationError> {
        Ok(totals::header_records(page.headers))
    }

    /// What records that move while the partition is read (inserts and
    /// deletes before them) do to this style's positions. By default the
    /// style cannot tell (a source's URLs may hold offsets or keys).
    fn under_drift(&self) -> UnderDrift {
        UnderDrift::Unknown
    }

    /// Checks what serde's types cannot; errors name `pagination.<field>`.
    fn validate(&self) -> Result<(), SpecError>;

    /// The error for a position of another style.
    fn wrong_position(&self, position: &Position) -> PaginationError {
        PaginationError::WrongPosition {
            position: position.clone(),
            style: self.name(),
        }
    }
}

/// What moving data does to a style's positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderDrift {
    /// Positions are keys (a cursor, the last record's id): a delete or an
    /// insert elsewhere moves nothing a later page depends on.
    Immune,
    /// Positions count records (an offset, a page number): a delete before
    /// a page shifts records into pages already read. A backward pass
    /// (last page first) re-reads what may have been missed.
    Shifts,
    /// Positions are the source's own URLs: they may count or key.
    Unknown,
}

/// The name a spec selects a style by (`style = "offset"`); implemented
/// for every style by `styles!` from its line there.
pub trait StyleName {
    fn name(&self) -> &'static str;
}

/// Declares the styles: each `file::Type => "name"` line is the module of a style, its
/// struct, and the variant of [`PaginationSpec`] that holds it. The variant's
/// snake-case name is the `style` a spec selects it by, and must equal the
/// style's `NAME` (a test checks every style).
macro_rules! styles {
    ($($file:ident :: $style:ident => $name:literal),+ $(,)?) => {
        $(
            mod $file;
            pub use self::$file::$style;

            impl $style {
                pub const NAME: &'static str = $name;
            }

            impl StyleName for $style {
                fn name(&self) -> &'static str {
                    $name
                }
            }
        )+

        /// One pagination style and its parameters, tagged by `style` in the
        /// spec. See [`PaginationStyle`] for behaviour.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "style", rename_all = "snake_case")]
        pub enum PaginationSpec {
            $($style($style),)+
        }

        /// The name of every style, in declaration order.
        pub const STYLES: &[&str] = &[$($style::NAME,)+];

        impl PaginationSpec {
            /// The style's behaviour; every operation on a spec's pagination
            /// goes through here.
            pub fn style(&self) -> &dyn PaginationStyle {
                match self {
                    $(PaginationSpec::$style(style) => style,)+
                }
            }
        }
    };
}

styles! {
    offset::Offset => "offset",
    page_number::PageNumber => "page_number",
    cursor::Cursor => "cursor",
    last_record::LastRecord => "last_record",
    next_url::NextUrl => "next_url",
    link_header::LinkHeader => "link_header",
}

impl PaginationSpec {
    pub fn style_name(&self) -> &'static str {
        self.style().name()
    }
}

/// The position of the first page of a partition.
pub fn first_position(spec: &PaginationSpec) -> Position {
    spec.style().first()
}

/// The query parameters (or URL) that fetch the page at `position`.
pub fn target(
    spec: &PaginationSpec,
    page_size: u32,
    position: &Position,
) -> Result<Target, PaginationError> {
    spec.style().target(page_size, position)
}

/// The counts a page states about its partition, whatever its role.
pub fn stated(spec: &PaginationSpec, page: &Page<'_>) -> Result<Vec<Statement>, PaginationError> {
    spec.style().stated(page)
}

/// What follows the page at `position`. A leaf (a fanned-out page) is
/// always the end: the page that fanned it out already listed its siblings;
/// so is a backward page, whose pass was planned whole.
pub fn next(
    spec: &PaginationSpec,
    page_size: u32,
    position: &Position,
    role: Role,
    page: &Page<'_>,
) -> Result<Next, PaginationError> {
    match role {
        Role::Leaf | Role::Sentinel | Role::Backward => Ok(Next::Done),
        Role::Chain => spec.style().next(page_size, position, page),
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn positions_must_match_the_style() {
        let err = target(&offset(true), 10, &Position::Page { page: 1 }).unwrap_err();
        assert!(matches!(err, PaginationError::WrongPosition { .. }));
    }

    #[test]
    fn every_style_rejects_positions_of_another_kind() {
        let specs = [
            offset(true),
            page_number(1, None),
            cursor_body(),
            last_record(),
            next_url(None),
            link_header(),
        ];
        let foreign = |spec: &PaginationSpec| match spec.style().first() {
            Position::Offset { .. } => Position::Cursor { cursor: None },
            _ => Position::Offset { offset: 0 },
        };
        for spec in &specs {
            let position = foreign(spec);
            let expected = || PaginationError::WrongPosition {
                position: position.clone(),
                style: spec.style_name(),
            };
            assert_eq!(target(spec, 10, &position), Err(expected()));
            let next = run(spec, &position, Role::Chain, json!([]), &[], None);
            assert_eq!(next, Err(expected()), "{}", spec.style_name());
        }
    }

    #[test]
    fn leaves_end_without_asking_the_style() {
        // Even a position of the wrong kind: a leaf is the end, whatever it holds.
        let next = run_data(
            &cursor_body(),
            &Position::Offset { offset: 10 },
            Role::Leaf,
            json!({"data": items(10), "next_cursor": "abc"}),
        );
        assert_eq!(next, Ok(Next::Done));
    }

    #[test]
    fn style_names_are_the_spec_tags() {
        assert_eq!(
            STYLES,
            [
                "offset",
                "page_number",
                "cursor",
                "last_record",
                "next_url",
                "link_header"
            ]
        );
        for name in STYLES {
            // Required fields may be missing; an unknown variant may not.
            match serde_json::from_value::<PaginationSpec>(json!({ "style": name })) {
                Ok(spec) => assert_eq!(spec.style_name(), *name),
                Err(e) => assert!(e.to_string().contains("missing field"), "{name}: {e}"),
            }
        }
        for spec in [next_url(None), link_header(), offset(false)] {
            let value = serde_json::to_value(&spec).unwrap();
            assert_eq!(value["style"], spec.style_name());
        }
    }

    #[test]
    fn specs_serialize_flat_with_their_tag() {
        // The spec hash (idempotency, manifests) is over this exact shape.
        let value = serde_json::to_string(&page_number(1, Some("meta.total_pages"))).unwrap();
        assert_eq!(
            value,
            r#"{"style":"page_number","page_param":"page","size_param":"per_page","first_page":1,"total_pages_path":"meta.total_pages"}"#
        );
        let err = serde_json::from_value::<PaginationSpec>(json!({"style": "offset", "zzz": 1}))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown field `zzz`, expected one of `offset_param`, `limit_param`, `total_path`"
        );
    }
}
