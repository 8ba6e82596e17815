-- Registered clients (apps and feed readers). The secret is stored as its SHA-256 only;
-- a public client has none. Lists are JSON arrays.
CREATE TABLE clients (
    client_id     TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    secret_hash   BLOB,
    redirect_uris TEXT NOT NULL DEFAULT '[]',
    grant_types   TEXT NOT NULL DEFAULT '[]',
    scopes        TEXT NOT NULL DEFAULT '[]',
    created_at    INTEGER NOT NULL
);
