//! How a source key's rate is learned, fleet-wide: what the limiter's
//! script in Redis (`ratelimit`) does with a 429 and with the headers a
//! source sends, and where an unlearned bucket starts. Pure: the numbers
//! and the rules; the state lives beside the bucket in Redis.
//!
//! Users rarely know a source's real limit, and many sources state it
//! only by refusing. So a bucket's rate is not fixed but learned, one rate
//! per source key for every worker:
//!
//! - **Start.** At the rate the spec (or the operator's shared key) states,
//!   trusted until the source disagrees; with no rate stated, at
//!   [`UNSTATED_START`] request/s, growing by [`Adaptation::growth_per_s`]
//!   each second the bucket is what holds the fleet back ("slow start"),
//!   up to the fleet's `limits.max_unstated_rate`.
//! - **A 429** cuts the rate to [`Adaptation::cut`] of what was refused and
//!   remembers the refused rate. Answers that arrive while the fleet is
//!   already paused by a 429 are the same refusal: one cut per pause. A
//!   refusal within [`Adaptation::soon`] of the last pause's end says the
//!   limit is well below the rate just refused: the remembered refusal is
//!   [`Adaptation::deep`] of it, so a spec 10× too high settles within
//!   seconds, not minutes.
//! - **After a 429** the rate grows back quickly to [`Adaptation::margin`]
//!   of the refused rate, then probes: the remembered refusal creeps up by
//!   [`Adaptation::probe_per_s`] a second while the bucket binds, and the
//!   rate follows a margin below it. A source whose limit rose is found
//!   again; one whose limit did not refuses again, rarely.
//! - **A source that states its policy** (`RateLimit-Policy: q=100;w=60`,
//!   IETF; the strictest of several) sets the rate to `q / w` on every
//!   answer, except for an operator's shared key (a policy describes one
//!   credential's plan, and one tenant's answers must not set everyone's
//!   rate); the `remaining` count
//!   of `X-RateLimit-*` and `RateLimit` headers keeps the bucket from
//!   believing in tokens the source says are gone.
//! - The rate never exceeds the stated one (the spec's is a ceiling, not
//!   a target to probe past), and never falls below [`FLOOR_SHARE`] of it.
//!   A higher stated rate than the one the bucket learned under starts the
//!   learning again: what was refused then says nothing now.
//!
//! Growth counts only while requests wait on the bucket: a fleet held back
//! by something else (a slow source, few workers) does not inflate a rate
//! it has not tried.

/// Requests per second an unlearned bucket starts at when the spec states
/// no rate.
pub const UNSTATED_START: f64 = 1.0;

/// The lowest rate learning may reach, as a share of the ceiling: a
/// source that refuses everything is paused by its `Retry-After`, not
/// starved to nothing.
pub const FLOOR_SHARE: f64 = 0.001;

/// The spec's lowest rate, which learning never goes under either.
pub const MIN_RATE: f64 = 0.001;

/// How long a bucket's learned rate is kept after its last use, in
/// milliseconds: the next export of the source starts from what the
/// last one learned.
pub const LEARNED_TTL_MS: u64 = 6 * 3600 * 1000;

/// The learning's tunables, passed to the script with every decision so
/// every worker learns alike (and a test can learn quickly).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adaptation {
    /// What a 429 leaves of the refused rate.
    pub cut: f64,
    /// Growth a second while the bucket binds, as a share of the rate,
    /// before the first refusal and back up to `margin` after one.
    pub growth_per_s: f64,
    /// How far below the last refused rate the rate settles.
    pub margin: f64,
    /// Creep a second of the remembered refusal, once settled.
    pub probe_per_s: f64,
    /// A refusal this soon after the last pause ended counts as far over
    /// the limit.
    pub soon: std::time::Duration,
    /// What is remembered of a rate refused that soon.
    pub deep: f64,
}

impl Adaptation {
    /// Measured in `make bench` against a source stating its limit only by
    /// refusing (`Retry-After: 1`): the rate settles within about 30 s of a
    /// spec 10× too high or of no rate at all, and then a 429 comes every
    /// minute or so.
    pub const DEFAULT: Adaptation = Adaptation {
        cut: 0.7,
        growth_per_s: 0.25,
        margin: 0.97,
        probe_per_s: 0.0005,
        soon: std::time::Duration::from_secs(10),
        deep: 0.95,
    };
}

impl Default for Adaptation {
    fn default() -> Self {
        Adaptation::DEFAULT
    }
}

/// Where a bucket's rate starts and the most it may reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateBounds {
    /// Requests per second the bucket never exceeds.
    pub ceiling: f64,
    /// Where a bucket with nothing learned starts.
    pub start: f64,
    /// Where learning stops cutting.
    pub floor: f64,
}

impl RateBounds {
    /// A rate someone stated (the spec, the operator): started at and
    /// never exceeded.
    pub fn stated(rate: f64) -> RateBounds {
        RateBounds {
            ceiling: rate,
            start: rate,
            floor: (rate * FLOOR_SHARE).max(MIN_RATE).min(rate),
        }
    }

    /// No rate stated: start low, find the limit, never past `ceiling`
    /// (the fleet's `limits.max_unstated_rate`).
    pub fn unstated(ceiling: f64) -> RateBounds {
        let ceiling = ceiling.max(MIN_RATE);
        RateBounds {
            ceiling,
            start: UNSTATED_START.min(ceiling),
            floor: (ceiling * FLOOR_SHARE).max(MIN_RATE).min(ceiling),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stated_rate_is_where_the_bucket_starts_and_its_ceiling() {
        let b = RateBounds::stated(50.0);
        assert_eq!((b.ceiling, b.start), (50.0, 50.0));
        assert!((b.floor - 0.05).abs() < 1e-12);
        // A tiny stated rate is its own floor.
        assert_eq!(RateBounds::stated(0.001).floor, 0.001);
    }

    #[test]
    fn an_unstated_rate_starts_low_under_the_fleets_ceiling() {
        let b = RateBounds::unstated(100.0);
        assert_eq!((b.ceiling, b.start), (100.0, UNSTATED_START));
        assert!(b.floor <= b.start && b.floor >= MIN_RATE);
        // A ceiling under the start wins.
        assert_eq!(RateBounds::unstated(0.5).start, 0.5);
    }

    #[test]
    fn the_defaults_cut_then_settle_below_the_refusal() {
        let a = Adaptation::DEFAULT;
        assert!(a.cut < a.margin && a.margin < 1.0);
        assert!(a.probe_per_s > 0.0 && a.probe_per_s < a.growth_per_s);
        assert!(a.deep < 1.0 && a.deep * a.margin > a.cut);
    }
}
