-- Keys the whole fleet shares and no tenant sees. `fingerprint` keys the
-- HMAC of credential fingerprints (rate-limit bucket names), when the
-- configuration does not give one; the first process to ask inserts a
-- random key, every later one reads it.
CREATE TABLE fleet_keys (
    name text PRIMARY KEY,
    key bytea NOT NULL CHECK (length(key) >= 16),
    created_at timestamptz NOT NULL DEFAULT now()
);
