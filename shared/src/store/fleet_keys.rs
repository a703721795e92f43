//! Keys the fleet shares, kept in Postgres (`fleet_keys`): the fingerprint
//! key when the configuration gives none.

use super::{Store, StoreError};
use crate::fingerprint::FingerprintKey;

/// The row of the fingerprint key.
const FINGERPRINT: &str = "fingerprint";

impl Store {
    /// The fleet's fingerprint key: the one stored, or a new random one
    /// stored now. Two processes racing both read the one that won the
    /// insert, so every worker holds the same key.
    pub async fn fingerprint_key(&self) -> Result<FingerprintKey, StoreError> {
        let client = self.client().await?;
        let candidate = FingerprintKey::generate();
        client
            .execute(
                "INSERT INTO fleet_keys (name, key) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&FINGERPRINT, &candidate.as_bytes()],
            )
            .await?;
        let row = client
            .query_one(
                "SELECT key FROM fleet_keys WHERE name = $1",
                &[&FINGERPRINT],
            )
            .await?;
        Ok(FingerprintKey::from_bytes(row.try_get("key")?))
    }
}
