-- Latchkey schema, SQLite. Times are seconds since the Unix epoch (UTC).

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL DEFAULT '[]',
    authz_ver     INTEGER NOT NULL,
    status        TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users(id),
    client_id       TEXT NOT NULL,
    scope           TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    last_used_at    INTEGER NOT NULL,
    idle_expires_at INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    ip              TEXT,
    user_agent      TEXT,
    revoked_at      INTEGER,
    revoke_reason   TEXT
);
CREATE INDEX sessions_by_user ON sessions(user_id);
CREATE INDEX sessions_by_expiry ON sessions(expires_at);
CREATE INDEX sessions_by_idle_expiry ON sessions(idle_expires_at);
CREATE INDEX sessions_by_revocation ON sessions(revoked_at);

-- One row per refresh token ever issued: the live one has retired_at NULL. Retired rows
-- are kept so that replaying any of them is detected as reuse.
CREATE TABLE refresh_tokens (
    hash             BLOB PRIMARY KEY,
    session_id       TEXT NOT NULL REFERENCES sessions(id),
    created_at       INTEGER NOT NULL,
    retired_at       INTEGER,
    successor_hash   BLOB,
    successor_sealed BLOB
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_by_session ON refresh_tokens(session_id);

CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    alg          TEXT NOT NULL,
    private_key  BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    activates_at INTEGER NOT NULL
);

CREATE TABLE throttles (
    key             TEXT PRIMARY KEY,
    count           INTEGER NOT NULL,
    window_start    INTEGER NOT NULL,
    last_failure_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE security_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    user_id    TEXT,
    session_id TEXT,
    ip         TEXT,
    detail     TEXT
);

CREATE TABLE revocation_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    type       TEXT NOT NULL,
    sid        TEXT,
    sub        TEXT,
    jti        TEXT,
    authz_ver  INTEGER,
    until      INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX revocation_events_by_until ON revocation_events(until);
