//! Which rate-limit bucket a request draws from, and at what rate.
//!
//! A bucket belongs to its tenant: every key a spec can name or imply is
//! prefixed with the tenant id, so no tenant can book another's bucket ahead
//! (a spec with `rate = 0.001` reserves a slot a thousand seconds out) or
//! share a pause with it. Within a tenant the bucket is the spec's explicit
//! `rate_limit.key`, else the source's origin and the credential's keyed
//! fingerprint, so a tenant's exports that share an API key share its
//! budget.
//!
//! A budget several tenants must share (one API key the platform holds, an
//! unauthenticated API that limits the fleet's address) is declared by the
//! operator, not by a spec: `[[shared_rate_keys]]` names it, gives its rate
//! and burst, and the origins it covers. A spec whose base URL has one of
//! those origins draws from it at the operator's rate and burst, whatever
//! the spec says (the rate is fixed where the key is declared, not by
//! whichever request comes). Naming the key in `rate_limit.key` is not
//! enough: a spec pointed at its own server could otherwise drain or pause
//! the shared budget with the answers it gives, so a spec of another
//! origin that names it gets its tenant's own bucket of that name.
//! Pure: no I/O.

use serde::{Deserialize, Serialize};
use url::Url;

use crate::ratelimit::Bucket;
use crate::spec::ExportSpec;

/// Highest rate and burst an operator may declare (the spec's own bounds).
const MAX_RATE: f64 = 100_000.0;
const MAX_BURST: u32 = 10_000;

/// A budget the operator declares for several tenants to share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedRateKey {
    /// What specs name as `rate_limit.key`; 1-64 of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// Requests per second, for every tenant together.
    pub rate: f64,
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// The sources whose requests draw from this budget
    /// (`https://api.example.com`); at least one.
    pub origins: Vec<String>,
}

fn default_burst() -> u32 {
    1
}

/// Why a declared shared key cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SharedKeyError {
    #[error("shared_rate_keys: name {0:?} must be 1-64 characters of [A-Za-z0-9_.-]")]
    Name(String),
    #[error("shared_rate_keys {name:?}: rate must be above 0 and at most {MAX_RATE}")]
    Rate { name: String },
    #[error("shared_rate_keys {name:?}: burst must be between 1 and {MAX_BURST}")]
    Burst { name: String },
    #[error("shared_rate_keys {name:?}: origin {origin:?} is not an http(s) URL")]
    Origin { name: String, origin: String },
    #[error("shared_rate_keys {name:?}: name the origins it covers (`origins = [\"https://…\"]`)")]
    NoOrigins { name: String },
    #[error("shared_rate_keys: {0:?} is declared twice")]
    Duplicate(String),
}

/// Checks the operator's declarations once, at start.
pub fn validate(keys: &[SharedRateKey]) -> Result<(), SharedKeyError> {
    for (i, key) in keys.iter().enumerate() {
        let name = &key.name;
        if !crate::model::is_plain_name(name) {
            return Err(SharedKeyError::Name(name.clone()));
        }
        if !(key.rate.is_finite() && key.rate > 0.0 && key.rate <= MAX_RATE) {
            return Err(SharedKeyError::Rate { name: name.clone() });
        }
        if !(1..=MAX_BURST).contains(&key.burst) {
            return Err(SharedKeyError::Burst { name: name.clone() });
        }
        if key.origins.is_empty() {
            return Err(SharedKeyError::NoOrigins { name: name.clone() });
        }
        for origin in &key.origins {
            if origin_of(origin).is_none() {
                return Err(SharedKeyError::Origin {
                    name: name.clone(),
                    origin: origin.clone(),
                });
            }
        }
        if keys[..i].iter().any(|k| k.name == *name) {
            return Err(SharedKeyError::Duplicate(name.clone()));
        }
    }
    Ok(())
}

/// `scheme://host:port` of an http(s) URL.
fn origin_of(url: &str) -> Option<String> {
    let url = Url::parse(url).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.origin().ascii_serialization())
}

/// The bucket a request of `tenant`'s export draws from. `fingerprint` is
/// the credential's keyed fingerprint, when the source is authenticated;
/// `unstated_ceiling` the most a bucket whose spec states no rate may
/// learn (the fleet's `limits.max_unstated_rate`).
pub fn bucket_for(
    spec: &ExportSpec,
    tenant: &str,
    fingerprint: Option<&str>,
    shared: &[SharedRateKey],
    unstated_ceiling: f64,
) -> Bucket {
    let origin = origin_of(&spec.source.base_url).unwrap_or_else(|| spec.source.base_url.clone());
    let declared = shared.iter().find(|s| {
        s.origins
            .iter()
            .any(|o| origin_of(o).as_deref() == Some(&origin))
    });
    if let Some(s) = declared {
        return Bucket {
            follows_policy: false,
            ..Bucket::stated(format!("shared:{}", s.name), s.rate, s.burst)
        };
    }
    let key = match (&spec.rate_limit.key, fingerprint) {
        (Some(key), _) => format!("tenant:{tenant}:{key}"),
        (None, Some(fp)) => format!("tenant:{tenant}:{origin}#{fp}"),
        (None, None) => format!("tenant:{tenant}:{origin}"),
    };
    let burst = spec.rate_limit.burst;
    match spec.rate_limit.rate {
        Some(rate) => Bucket::stated(key, rate, burst),
        None => Bucket::unstated(key, unstated_ceiling, burst),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adaptive_rate::RateBounds;

    fn spec(key: Option<&str>, rate: f64) -> ExportSpec {
        let mut spec = ExportSpec::from_toml(
            r#"
name = "t"
primary_key = ["id"]
[source]
base_url = "https://api.example.com/v2"
path = "/items"
[pagination]
style = "offset"
[rate_limit]
rate = 5
[output]
dir = "out"
"#,
        )
        .unwrap();
        spec.rate_limit.key = key.map(String::from);
        spec.rate_limit.rate = Some(rate);
        spec
    }

    fn example() -> SharedRateKey {
        SharedRateKey {
            name: "example".into(),
            rate: 10.0,
            burst: 20,
            origins: vec!["https://api.example.com".into()],
        }
    }

    #[test]
    fn every_key_a_spec_can_name_or_imply_is_its_tenant_s() {
        for key in [None, Some("budget")] {
            let acme = bucket_for(&spec(key, 5.0), "acme", Some("fp"), &[], 100.0);
            let globex = bucket_for(&spec(key, 0.001), "globex", Some("fp"), &[], 100.0);
            assert_ne!(acme.key, globex.key, "{key:?}");
            assert!(acme.key.starts_with("tenant:acme:"), "{}", acme.key);
        }
        assert_eq!(
            bucket_for(&spec(None, 5.0), "acme", Some("fp"), &[], 100.0).key,
            "tenant:acme:https://api.example.com#fp"
        );
        assert_eq!(
            bucket_for(&spec(None, 5.0), "acme", None, &[], 100.0).key,
            "tenant:acme:https://api.example.com"
        );
        // A tenant cannot name another tenant's bucket by its text.
        let forged = bucket_for(
            &spec(Some("x:tenant:globex:budget"), 5.0),
            "acme",
            None,
            &[],
            100.0,
        );
        assert!(forged.key.starts_with("tenant:acme:"));
    }

    #[test]
    fn a_shared_key_is_the_operator_s_rate_whatever_the_spec_says() {
        let shared = [example()];
        for (key, tenant) in [(Some("example"), "acme"), (None, "globex")] {
            let bucket = bucket_for(&spec(key, 0.001), tenant, Some("fp"), &shared, 100.0);
            assert_eq!(
                bucket,
                Bucket {
                    follows_policy: false,
                    ..Bucket::stated("shared:example", 10.0, 20)
                },
                "{key:?} {tenant}"
            );
        }
        // Naming the shared key from another origin (a server the tenant
        // runs, whose 429s would pause everyone) gets the tenant's own.
        let mut elsewhere = spec(Some("example"), 5.0);
        elsewhere.source.base_url = "https://attacker.example.net".into();
        let own = bucket_for(&elsewhere, "acme", None, &shared, 100.0);
        assert_eq!(own.key, "tenant:acme:example");
        assert_eq!(own.bounds, RateBounds::stated(5.0));
    }

    #[test]
    fn a_spec_without_a_rate_learns_it_under_the_fleets_ceiling() {
        let mut unstated = spec(None, 5.0);
        unstated.rate_limit.rate = None;
        let bucket = bucket_for(&unstated, "acme", None, &[], 40.0);
        assert_eq!(bucket.bounds, RateBounds::unstated(40.0));
        assert_eq!(bucket.bounds.ceiling, 40.0);
        // The operator's shared key states its rate, whatever the spec.
        let shared = bucket_for(&unstated, "acme", None, &[example()], 40.0);
        assert_eq!(shared.bounds, RateBounds::stated(10.0));
    }

    #[test]
    fn declarations_are_checked() {
        assert_eq!(validate(&[example()]), Ok(()));
        let with = |f: fn(&mut SharedRateKey)| {
            let mut k = example();
            f(&mut k);
            validate(&[k])
        };
        assert!(matches!(
            with(|k| k.name = "a b".into()),
            Err(SharedKeyError::Name(_))
        ));
        assert!(matches!(
            with(|k| k.rate = 0.0),
            Err(SharedKeyError::Rate { .. })
        ));
        assert!(matches!(
            with(|k| k.rate = f64::NAN),
            Err(SharedKeyError::Rate { .. })
        ));
        assert!(matches!(
            with(|k| k.burst = 0),
            Err(SharedKeyError::Burst { .. })
        ));
        assert!(matches!(
            with(|k| k.origins = vec!["ftp://x".into()]),
            Err(SharedKeyError::Origin { .. })
        ));
        assert!(matches!(
            with(|k| k.origins.clear()),
            Err(SharedKeyError::NoOrigins { .. })
        ));
        assert_eq!(
            validate(&[example(), example()]),
            Err(SharedKeyError::Duplicate("example".into()))
        );
    }
}
