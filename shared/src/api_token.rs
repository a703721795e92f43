//! API tokens: what a caller presents, and the only form of it the fleet
//! keeps (its SHA-256).
//!
//! A token is `pft_` and 64 hex digits of 256 random bits. Because it is
//! that random, a plain hash is enough to store it: nobody can guess a
//! preimage, so no slow password hash is needed, and a lookup is one index
//! probe on the hash. The token itself is shown once, when it is created,
//! and never logged, stored or echoed.

use rand::RngExt;
use sha2::{Digest, Sha256};

use crate::model::text_enum;

const PREFIX: &str = "pft_";

text_enum!(
    /// What a token may do.
    TokenRole {
        /// Act for one tenant: its exports and dead letters, nothing else.
        Tenant => "tenant",
        /// Manage tokens, and act for any tenant it names.
        Admin => "admin",
    }
);

/// A token as presented or just created. Debug output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl ApiToken {
    /// A new random token.
    pub fn generate() -> ApiToken {
        let bytes: [u8; 32] = rand::rng().random();
        ApiToken(format!("{PREFIX}{}", crate::spec::hex(&bytes)))
    }

    /// A presented token, as text; empty text is no token.
    pub fn presented(text: &str) -> Option<ApiToken> {
        let text = text.trim();
        (!text.is_empty()).then(|| ApiToken(text.to_string()))
    }

    /// The only form of the token that is stored or compared.
    pub fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.0.as_bytes()).to_vec()
    }

    /// The token itself, to hand to its owner once.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_never_shown_in_debug() {
        let a = ApiToken::generate();
        let b = ApiToken::generate();
        assert_ne!(a, b);
        assert!(a.reveal().starts_with("pft_"));
        assert_eq!(a.reveal().len(), 4 + 64);
        assert!(!format!("{a:?}").contains(&a.reveal()[4..]));
    }

    #[test]
    fn the_hash_is_what_identifies_a_token() {
        let a = ApiToken::generate();
        let same = ApiToken::presented(&format!(" {} ", a.reveal())).unwrap();
        assert_eq!(a.hash(), same.hash());
        assert_eq!(a.hash().len(), 32);
        assert_ne!(a.hash(), ApiToken::generate().hash());
        assert_eq!(ApiToken::presented("  "), None);
    }
}
