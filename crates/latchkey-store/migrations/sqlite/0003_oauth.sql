-- The OAuth 2.1 / OpenID Connect provider and the pages.

-- A browser's sign-in on the pages: a session (listed among the user's devices) reached by
-- the hash of the session cookie.
CREATE TABLE web_sessions (
    cookie_hash BLOB PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions(id),
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX web_sessions_by_session ON web_sessions(session_id);

-- Authorization codes, by hash: single-use, kept past their expiry so that a late second
-- use still revokes what the first produced (session_id).
CREATE TABLE auth_codes (
    hash           BLOB PRIMARY KEY,
    client_id      TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    scope          TEXT NOT NULL,
    nonce          TEXT,
    code_challenge TEXT NOT NULL,
    auth_time      INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER,
    session_id     TEXT
) WITHOUT ROWID;
CREATE INDEX auth_codes_by_expiry ON auth_codes(expires_at);

-- Remembered consent per (user, client): the scopes granted so far, a JSON array.
CREATE TABLE consents (
    user_id    TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, client_id)
) WITHOUT ROWID;

-- Introspection asks whether an access token was revoked.
CREATE INDEX revocation_events_by_jti ON revocation_events(jti) WHERE jti IS NOT NULL;
