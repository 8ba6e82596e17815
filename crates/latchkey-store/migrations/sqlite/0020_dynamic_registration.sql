-- Dynamic client registration (RFC 7591, 7592; SPEC 13). A client registered over HTTP
-- holds a registration access token for reading, updating and deleting itself (its
-- SHA-256 here). Initial access tokens from `latchkey client registration-token` admit one
-- registration each when `dynamic_registration = "token"`.
ALTER TABLE clients ADD COLUMN registration_token_hash BLOB;

CREATE TABLE registration_tokens (
    hash       BLOB PRIMARY KEY,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) WITHOUT ROWID;
