-- Dynamic client registration (RFC 7591, 7592; SPEC 13). A client registered over HTTP
-- holds a registration access token for reading, updating and deleting itself (its
-- SHA-256 here). Initial access tokens from `latchkey client registration-token` admit one
-- registration each when `dynamic_registration = "token"`.
ALTER TABLE clients ADD COLUMN registration_token_hash BYTEA;

CREATE TABLE registration_tokens (
    hash       BYTEA PRIMARY KEY,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
