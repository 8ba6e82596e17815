-- DPoP (SPEC 12). A session opened with a proof is bound to its key for its whole life:
-- `dpop_jkt` is the key's RFC 7638 thumbprint; NULL for a Bearer session.
ALTER TABLE sessions ADD COLUMN dpop_jkt TEXT;
-- An authorization request's `dpop_jkt` (RFC 9449 §10): its code is redeemed only with a
-- proof from that key.
ALTER TABLE auth_codes ADD COLUMN dpop_jkt TEXT;

-- Proofs seen, so that each is accepted once, by any node: SHA-256 over the key's
-- thumbprint and the proof's `jti`, kept until the proof's `iat` window has passed.
CREATE TABLE dpop_proofs (
    hash       BLOB PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX dpop_proofs_by_expiry ON dpop_proofs(expires_at);
