//! The fleet's fingerprint key: what makes a credential's fingerprint (part
//! of its rate-limit bucket's name, in Redis and in metrics) a keyed hash,
//! HMAC-SHA256, instead of a plain hash anyone could test a guessed API key
//! against.
//!
//! Every worker must hold the same key, or the workers sharing one API key
//! would count against different buckets. It comes from the configuration
//! (`fingerprint_key`, `PAGEFLEET_FINGERPRINT_KEY`) or, when that is unset,
//! from Postgres, where the first process to ask creates a random one
//! (`Store::fingerprint_key`).

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::spec::hex;

/// How many random bytes a key made by the fleet has.
pub const GENERATED_KEY_BYTES: usize = 32;

/// The secret key of credential fingerprints. Debug output never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub struct FingerprintKey(Vec<u8>);

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey(<redacted>)")
    }
}

impl From<String> for FingerprintKey {
    fn from(text: String) -> Self {
        FingerprintKey(text.into_bytes())
    }
}

impl FingerprintKey {
    /// A key given as text (configuration).
    pub fn new(text: &str) -> FingerprintKey {
        FingerprintKey(text.as_bytes().to_vec())
    }

    /// A key given as bytes (as Postgres keeps it).
    pub fn from_bytes(bytes: Vec<u8>) -> FingerprintKey {
        FingerprintKey(bytes)
    }

    /// A new random key.
    pub fn generate() -> FingerprintKey {
        use rand::RngExt;
        let bytes: [u8; GENERATED_KEY_BYTES] = rand::rng().random();
        FingerprintKey(bytes.to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first 16 hex digits of HMAC-SHA256(key, secret).
    pub fn fingerprint(&self, secret: &str) -> String {
        // HMAC takes a key of any length (an empty one included), so this
        // cannot fail; the fallback only keeps it from needing an unwrap.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return "0".repeat(16);
        };
        mac.update(secret.as_bytes());
        hex(&mac.finalize().into_bytes())[..16].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_keyed_hmacs() {
        let key = FingerprintKey::new("key");
        // RFC 4231-style check against a known HMAC-SHA256 value:
        // HMAC("key", "The quick brown fox jumps over the lazy dog").
        assert_eq!(
            key.fingerprint("The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424"
        );
        // Not the plain SHA-256 of the secret, which anyone could test.
        use sha2::Digest;
        let plain = hex(&Sha256::digest(b"s3cr3t"))[..16].to_string();
        assert_ne!(key.fingerprint("s3cr3t"), plain);
        assert_ne!(
            key.fingerprint("s3cr3t"),
            FingerprintKey::new("other").fingerprint("s3cr3t")
        );
        assert_eq!(key.fingerprint("s3cr3t"), key.fingerprint("s3cr3t"));
    }

    #[test]
    fn keys_never_show() {
        let key: FingerprintKey = serde_json::from_str("\"topsecretkey\"").unwrap();
        assert_eq!(key, FingerprintKey::new("topsecretkey"));
        assert!(!format!("{key:?}").contains("topsecret"));
        let a = FingerprintKey::generate();
        assert_eq!(a.as_bytes().len(), GENERATED_KEY_BYTES);
        assert_ne!(a, FingerprintKey::generate());
    }
}
