-- Pushed authorization requests (RFC 9126, SPEC 13). The request_uri is kept as its SHA-256;
-- `params` is the checked request as a JSON list of [name, value] pairs. The first browser
-- to use it is bound to it (`browser_key`, the SHA-256 of its CSRF cookie) and has until
-- `expires_at` (then extended for the sign-in) to finish; the code it produces spends it.
CREATE TABLE pushed_requests (
    hash        BYTEA PRIMARY KEY,
    client_id   TEXT NOT NULL,
    params      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    browser_key BYTEA,
    used_at     BIGINT
);
CREATE INDEX pushed_requests_by_expiry ON pushed_requests(expires_at);

-- A client that must push its authorization requests.
ALTER TABLE clients ADD COLUMN require_par BIGINT NOT NULL DEFAULT 0;
