-- DPoP (SPEC 12). A session opened with a proof is bound to its key for its whole life:
-- `dpop_jkt` is the key's RFC 7638 thumbprint; NULL for a Bearer session.
ALTER TABLE sessions ADD COLUMN dpop_jkt TEXT;
-- An authorization request's `dpop_jkt` (RFC 9449 §10): its code is redeemed only with a
-- proof from that key.
ALTER TABLE auth_codes ADD COLUMN dpop_jkt TEXT;

-- (The DPoP replay cache is the server process's memory on SQLite; see
-- crates/latchkey-store/src/dpop.rs. PostgreSQL keeps it in a table, for all nodes.)
