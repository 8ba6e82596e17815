-- Latchkey schema, PostgreSQL: the three SQLite migrations (init, clients, oauth) as one.
-- Times are seconds since the Unix epoch (UTC), as BIGINT, exactly as in SQLite. Hashes and
-- sealed blobs are BYTEA. The JSON lists are TEXT holding JSON, so the code reads and writes
-- them exactly as the SQLite store does.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL DEFAULT '[]',
    authz_ver     BIGINT NOT NULL,
    status        TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users(id),
    client_id       TEXT NOT NULL,
    scope           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    last_used_at    BIGINT NOT NULL,
    idle_expires_at BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    ip              TEXT,
    user_agent      TEXT,
    revoked_at      BIGINT,
    revoke_reason   TEXT
);
CREATE INDEX sessions_by_user ON sessions(user_id);
CREATE INDEX sessions_by_expiry ON sessions(expires_at);
CREATE INDEX sessions_by_idle_expiry ON sessions(idle_expires_at);
CREATE INDEX sessions_by_revocation ON sessions(revoked_at);

-- One row per refresh token ever issued: the live one has retired_at NULL. Retired rows
-- are kept so that replaying any of them is detected as reuse.
CREATE TABLE refresh_tokens (
    hash             BYTEA PRIMARY KEY,
    session_id       TEXT NOT NULL REFERENCES sessions(id),
    created_at       BIGINT NOT NULL,
    retired_at       BIGINT,
    successor_hash   BYTEA,
    successor_sealed BYTEA
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens(session_id);

CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    alg          TEXT NOT NULL,
    private_key  BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    activates_at BIGINT NOT NULL
);

CREATE TABLE throttles (
    key             TEXT PRIMARY KEY,
    count           BIGINT NOT NULL,
    window_start    BIGINT NOT NULL,
    last_failure_at BIGINT NOT NULL
);

CREATE TABLE security_events (
    id         BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    user_id    TEXT,
    session_id TEXT,
    ip         TEXT,
    detail     TEXT
);

-- The revocation feed (SPEC 5.4). Rows are inserted only under the feed's advisory lock, so
-- seqs commit in seq order (see src/postgres/mod.rs).
CREATE TABLE revocation_events (
    seq        BIGSERIAL PRIMARY KEY,
    type       TEXT NOT NULL,
    sid        TEXT,
    sub        TEXT,
    jti        TEXT,
    authz_ver  BIGINT,
    until      BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX revocation_events_by_until ON revocation_events(until);
-- Introspection asks whether an access token was revoked.
CREATE INDEX revocation_events_by_jti ON revocation_events(jti) WHERE jti IS NOT NULL;

-- Registered clients (apps and feed readers). The secret is stored as its SHA-256 only;
-- a public client has none. Lists are JSON arrays.
CREATE TABLE clients (
    client_id     TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    secret_hash   BYTEA,
    redirect_uris TEXT NOT NULL DEFAULT '[]',
    grant_types   TEXT NOT NULL DEFAULT '[]',
    scopes        TEXT NOT NULL DEFAULT '[]',
    created_at    BIGINT NOT NULL
);

-- A browser's sign-in on the pages: a session (listed among the user's devices) reached by
-- the hash of the session cookie.
CREATE TABLE web_sessions (
    cookie_hash BYTEA PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions(id),
    created_at  BIGINT NOT NULL
);
CREATE INDEX web_sessions_by_session ON web_sessions(session_id);

-- Authorization codes, by hash: single-use, kept past their expiry so that a late second
-- use still revokes what the first produced (session_id).
CREATE TABLE auth_codes (
    hash           BYTEA PRIMARY KEY,
    client_id      TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    scope          TEXT NOT NULL,
    nonce          TEXT,
    code_challenge TEXT NOT NULL,
    auth_time      BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT,
    session_id     TEXT
);
CREATE INDEX auth_codes_by_expiry ON auth_codes(expires_at);

-- Remembered consent per (user, client): the scopes granted so far, a JSON array.
CREATE TABLE consents (
    user_id    TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);
