-- Second factors (SPEC 11). A TOTP factor's secret is sealed under the master key when
-- one is set (its first byte says which: see `mfa.rs`); it counts once confirmed, and
-- `last_used_step` makes each code single-use.
CREATE TABLE mfa_factors (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users(id),
    kind           TEXT NOT NULL,
    name           TEXT NOT NULL,
    secret         BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    confirmed_at   INTEGER,
    last_used_step INTEGER
);
CREATE INDEX mfa_factors_by_user ON mfa_factors(user_id);

-- Recovery codes: SHA-256 only, single use; a new set replaces the old.
CREATE TABLE recovery_codes (
    hash       BLOB PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX recovery_codes_by_user ON recovery_codes(user_id);

-- A sign-in whose password was right and whose second factor is to come (`lkm_`, SHA-256
-- only): 5 minutes, spent by a success. It keeps the password hash it passed, so a new
-- password voids it.
CREATE TABLE mfa_challenges (
    hash          BLOB PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id),
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER
) WITHOUT ROWID;
CREATE INDEX mfa_challenges_by_expiry ON mfa_challenges(expires_at);
