-- One refresh rotation's statements as one transaction, the database's own limit for
-- Latchkey's rotation on PostgreSQL (bench/compare.sh): find the live token, lock its
-- session, retire the token and insert its successor, slide the session.
\set s random(1, 10000)
BEGIN;
SELECT hash FROM bench_tokens WHERE session_id = :s AND retired_at IS NULL;
SELECT id, revoked_at, idle_expires_at FROM bench_sessions WHERE id = :s FOR UPDATE;
WITH old AS (
  UPDATE bench_tokens SET retired_at = 1, successor_hash = sha256((random()::text || clock_timestamp()::text)::bytea)
  WHERE session_id = :s AND retired_at IS NULL RETURNING successor_hash
) INSERT INTO bench_tokens (hash, session_id, created_at) SELECT successor_hash, :s, 1 FROM old;
UPDATE bench_sessions SET last_used_at = 1, idle_expires_at = 2 WHERE id = :s;
COMMIT;
