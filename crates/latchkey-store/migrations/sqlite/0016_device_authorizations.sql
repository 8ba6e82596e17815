-- The device authorization grant (RFC 8628, SPEC 13). A device holds the device code (only
-- its SHA-256 is kept); the user types the user code (8 letters, stored without the dash)
-- at /device. `state`: pending, approved, denied or used. The device polls; each poll sets
-- `last_polled_at`, and one that comes too soon raises `interval` by 5 s (`slow_down`).
-- An approval records the user and the browser session that approved it; the first poll
-- after it opens the session (`session_id`) and spends the row.
CREATE TABLE device_authorizations (
    device_code_hash   BLOB PRIMARY KEY,
    user_code          TEXT NOT NULL UNIQUE,
    client_id          TEXT NOT NULL,
    scope              TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL,
    interval_secs      INTEGER NOT NULL,
    last_polled_at     INTEGER,
    state              TEXT NOT NULL,
    user_id            TEXT,
    browser_session_id TEXT,
    decided_at         INTEGER,
    session_id         TEXT
) WITHOUT ROWID;
CREATE INDEX device_authorizations_by_expiry ON device_authorizations(expires_at);
