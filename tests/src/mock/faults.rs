//! Seeded fault draws. A request's fault is a pure function of the seed, its
//! path and query, and how many earlier attempts at that same path and query
//! reached the fault stage, so concurrent clients see the same faults per page
//! and attempt whatever order their requests arrive in.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sha2::{Digest, Sha256};

use super::config::Faults;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    TooMany,
    Status500,
    Status502,
    Status503,
    Status504,
    Reset,
    Truncated,
    Slow,
    Hang,
}

impl Fault {
    /// The key under which the fault is counted in `MockStats::faults`.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Fault::TooMany => "429",
            Fault::Status500 => "500",
            Fault::Status502 => "502",
            Fault::Status503 => "503",
            Fault::Status504 => "504",
            Fault::Reset => "reset",
            Fault::Truncated => "truncated",
            Fault::Slow => "slow",
            Fault::Hang => "hang",
        }
    }
}

/// Everything random about one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Draw {
    pub fault: Option<Fault>,
    /// Whether a Retry-After is sent as an HTTP date rather than seconds.
    pub retry_as_date: bool,
    /// Where a truncated body is cut, as a fraction of its length.
    pub cut: f64,
}

/// Draws the fault for attempt number `attempt` (0-based) at `key`.
pub(crate) fn draw(faults: &Faults, seed: u64, key: &str, attempt: u64) -> Draw {
    let mut rng = rng_for(seed, "fault", key, attempt);
    let table = [
        (faults.p_429, Fault::TooMany),
        (faults.p_500, Fault::Status500),
        (faults.p_502, Fault::Status502),
        (faults.p_503, Fault::Status503),
        (faults.p_504, Fault::Status504),
        (faults.p_reset, Fault::Reset),
        (faults.p_truncated, Fault::Truncated),
        (faults.p_slow, Fault::Slow),
        (faults.p_hang, Fault::Hang),
    ];
    let mut fault = None;
    // Every probability is drawn even after a hit, so changing one of them
    // leaves the draws of the others untouched.
    for (p, f) in table {
        // A plain comparison instead of `random_bool`, which panics outside
        // [0, 1]; out-of-range values just saturate here.
        let hit = rng.random::<f64>() < p;
        if hit && fault.is_none() {
            fault = Some(f);
        }
    }
    Draw {
        fault,
        retry_as_date: rng.random_bool(0.5),
        cut: rng.random_range(0.3..0.9),
    }
}

/// A seeded coin flip, for choices that are not tied to a request path.
pub(crate) fn coin(seed: u64, label: &str, n: u64) -> bool {
    rng_for(seed, label, "", n).random_bool(0.5)
}

fn rng_for(seed: u64, label: &str, key: &str, n: u64) -> StdRng {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(n.to_le_bytes());
    h.update(label.as_bytes());
    h.update([0u8]);
    h.update(key.as_bytes());
    StdRng::from_seed(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_reproducible() {
        let f = Faults::standard();
        for attempt in 0..20 {
            let key = format!("/offset/items?offset={}&limit=10", attempt * 10);
            assert_eq!(draw(&f, 5, &key, attempt), draw(&f, 5, &key, attempt));
        }
        let seq = |seed| -> Vec<_> {
            (0..500)
                .map(|i| draw(&f, seed, &format!("/p?{}", i % 50), i / 50).fault)
                .collect()
        };
        assert_eq!(seq(1), seq(1));
        assert_ne!(seq(1), seq(2));
    }

    #[test]
    fn attempts_differ_and_rates_are_right() {
        let f = Faults {
            p_500: 0.2,
            p_reset: 0.2,
            ..Faults::default()
        };
        let draws: Vec<_> = (0..4000).map(|i| draw(&f, 9, "/x?a=1", i).fault).collect();
        let count = |x| draws.iter().filter(|d| **d == Some(x)).count();
        let n500 = count(Fault::Status500);
        let nreset = count(Fault::Reset);
        // 500 is drawn first: 20%; reset only when 500 missed: 16%.
        assert!((700..900).contains(&n500), "{n500}");
        assert!((540..740).contains(&nreset), "{nreset}");
        assert_eq!(count(Fault::Hang), 0);
        assert!(draws.iter().any(Option::is_none));
    }

    #[test]
    fn certain_and_impossible_faults() {
        let always = Faults {
            p_hang: 1.0,
            ..Faults::default()
        };
        let never = Faults {
            p_500: -1.0,
            p_503: f64::NAN,
            ..Faults::default()
        };
        for i in 0..100 {
            assert_eq!(draw(&always, 1, "/k", i).fault, Some(Fault::Hang));
            assert_eq!(draw(&never, 1, "/k", i).fault, None);
        }
    }

    #[test]
    fn both_retry_forms_and_sane_cuts() {
        let draws: Vec<_> = (0..100)
            .map(|i| draw(&Faults::none(), 3, "/k", i))
            .collect();
        assert!(draws.iter().any(|d| d.retry_as_date));
        assert!(draws.iter().any(|d| !d.retry_as_date));
        assert!(draws.iter().all(|d| (0.3..0.9).contains(&d.cut)));
    }
}
