//! What a mock server is told to be: the data set, the credentials it accepts,
//! its rate limit, the faults it injects and the lies it tells.

use super::drift::Drift;

/// Configuration of one mock server.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Seeds both the record contents and the fault draws.
    pub seed: u64,
    /// Number of records in the data set (ids `1..=records`).
    pub records: usize,
    /// The bearer token the server accepts.
    pub token: String,
    /// Token bucket refill rate, requests per second, per token.
    pub rate: f64,
    /// Token bucket capacity.
    pub burst: u32,
    /// The limit is stated only by refusing, as an nginx `limit_req` in
    /// front of an API states it: no `X-RateLimit-*` headers on any
    /// answer, a 429 with `Retry-After` (whole seconds) and nothing else.
    /// For proving that the fleet learns a limit nobody told it.
    pub silent_limit: bool,
    /// Every admitted request waits this long before it is answered: a
    /// source that takes time to serve a page.
    pub latency_ms: u64,
    /// Injected faults.
    pub faults: Faults,
    /// Any page whose records include this id answers 404 until cleared.
    pub fail_record: Option<usize>,
    /// Larger page-size parameters are clamped to this, in every style.
    pub max_page_size: usize,
    /// Every data page of every style also states the total in headers:
    /// `X-Total-Count: N` and `Content-Range: items FIRST-LAST/N` (0-based
    /// inclusive positions of the page's records in the ordered data set;
    /// `items */N` for an empty page). For exporters that read totals from
    /// headers rather than bodies.
    pub header_totals: bool,
    /// A lie: every total the server states (the `total` and `total_pages`
    /// of the bodies, `X-Total-Count`, `Content-Range`) says this instead of
    /// the real size, while the records served stay the real ones. For
    /// proving that an exporter finishes by the data, not by the total.
    pub stated_total: Option<usize>,
    /// A trap: in the cursor styles (`Cursor`, `CursorHeader`) the fourth
    /// page returns the cursor the first page returned, which leads to the
    /// second page again. A client that follows cursors sees pages 1, 2, 3,
    /// 4, 2, 3, 4, … and the cursors A, B, C, A, B, C, … (A: after the first
    /// page, returned by pages 1 and 4; B after the second; C after the
    /// third): a cycle of three cursors, never one repeated at once.
    /// For proving that an exporter notices a cursor it has followed before.
    ///
    /// "The fourth page" is the page that starts at position `3 × limit`,
    /// with whatever limit the request names; it cycles even when it is the
    /// last page, and there is no cycle when there are at most `3 × limit`
    /// records. Every page is otherwise normal.
    pub cursor_cycle: bool,
    /// A page with no records answers 404 "invalid page", as Django REST
    /// Framework's page-number pagination does past the last page.
    pub not_found_past_the_end: bool,
    /// Data that moves while it is read: when set, the data set starts as
    /// ids `1..=records` and, from the first page served on, records are
    /// inserted, updated and deleted at these rates (see [`Drift`]). Offset
    /// and page-number styles serve positions of the live set, keyset styles
    /// the live ids after the one given, and totals count the live set
    /// (unless `stated_total` says otherwise). Every record then carries
    /// `rev`, its number of updates. [`MockServer::truth`] and
    /// `GET /_mock/truth` tell what really happened.
    ///
    /// [`MockServer::truth`]: super::MockServer::truth
    pub drift: Option<Drift>,
    /// A trap: in the `NextUrl` style every page that has a next one names
    /// this URL as `next` instead of the server's own. For proving that an
    /// exporter does not follow a source wherever it points.
    pub next_url: Option<String>,
    /// A leaky source (see `leak`): every data answer echoes the request's
    /// `Authorization` value in headers and object bodies, and next-URL
    /// links leave the origin with a signed query value. For proving that
    /// nothing the fleet stores or shows carries either.
    pub leaky: bool,
    /// A poison page: see [`Flood`].
    pub flood: Option<Flood>,
}

/// A poison page: the page whose records include record `at` answers, in
/// place of its records, `records` tiny ones (`{"id": N, "v": V}`, ids
/// after the data set's, `v` drawn from the seed), every time, as one
/// page. Everything else about the page (style, totals, links) stays as
/// it was. For proving that one page too big for the fleet is refused
/// before it costs a worker its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood {
    pub at: usize,
    pub records: usize,
}

impl MockConfig {
    /// A fault-free server with token `test-token`, 1000 requests/s and a
    /// burst of 100: generous enough that only tests aiming at the limit hit it.
    pub fn new(seed: u64, records: usize) -> Self {
        MockConfig {
            seed,
            records,
            token: "test-token".to_string(),
            rate: 1000.0,
            burst: 100,
            silent_limit: false,
            latency_ms: 0,
            faults: Faults::default(),
            fail_record: None,
            max_page_size: 1000,
            header_totals: false,
            stated_total: None,
            cursor_cycle: false,
            not_found_past_the_end: false,
            drift: None,
            next_url: None,
            leaky: false,
            flood: None,
        }
    }
}

/// Per-request fault probabilities in `[0, 1]`. They are drawn independently
/// in field order and the first hit wins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// A 429 although the bucket had room (Retry-After 1 s).
    pub p_429: f64,
    pub p_500: f64,
    pub p_502: f64,
    pub p_503: f64,
    pub p_504: f64,
    /// A 200 announcing the full Content-Length that sends about half of the
    /// body and then drops the connection.
    pub p_reset: f64,
    /// A 200 whose JSON body is cut short, with a Content-Length that matches
    /// the cut body (valid HTTP, invalid JSON).
    pub p_truncated: f64,
    /// The body is sent in several chunks spread over `slow_ms`.
    pub p_slow: f64,
    /// Nothing is answered for `hang_ms`.
    pub p_hang: f64,
    pub slow_ms: u64,
    pub hang_ms: u64,
}

impl Faults {
    /// No faults at all.
    pub fn none() -> Self {
        Faults::default()
    }

    /// A mix that a robust exporter must survive: about one request in ten
    /// goes wrong in some way.
    pub fn standard() -> Self {
        Faults {
            p_429: 0.01,
            p_500: 0.01,
            p_502: 0.005,
            p_503: 0.005,
            p_504: 0.005,
            p_reset: 0.01,
            p_truncated: 0.015,
            p_slow: 0.02,
            p_hang: 0.005,
            slow_ms: 300,
            hang_ms: 3000,
        }
    }
}
