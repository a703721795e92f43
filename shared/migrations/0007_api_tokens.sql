-- API tokens: each is bound to one tenant or to the admin role. Only the
-- SHA-256 of a token is kept (a token is 256 random bits, so a plain hash
-- cannot be reversed by guessing); the token itself is shown once, when it
-- is created.
CREATE TABLE api_tokens (
    id          uuid PRIMARY KEY,
    role        text NOT NULL CHECK (role IN ('tenant', 'admin')),
    tenant_id   text,
    label       text NOT NULL DEFAULT '',
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CHECK ((role = 'tenant') = (tenant_id IS NOT NULL))
);
