-- Tables for pgbench's raw rotate transaction (bench/compare.sh): the shape of Latchkey's
-- sessions and refresh_tokens, 10,000 sessions with one live token each.
DROP TABLE IF EXISTS bench_tokens;
DROP TABLE IF EXISTS bench_sessions;
CREATE TABLE bench_sessions (
    id BIGINT PRIMARY KEY, user_id TEXT NOT NULL, last_used_at BIGINT NOT NULL,
    idle_expires_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, revoked_at BIGINT
);
CREATE TABLE bench_tokens (
    hash BYTEA PRIMARY KEY, session_id BIGINT NOT NULL REFERENCES bench_sessions(id),
    created_at BIGINT NOT NULL, retired_at BIGINT, successor_hash BYTEA
);
CREATE INDEX bench_tokens_by_session ON bench_tokens(session_id);
INSERT INTO bench_sessions SELECT i, 'u' || i, 0, 100, 1000 FROM generate_series(1, 10000) i;
INSERT INTO bench_tokens (hash, session_id, created_at) SELECT sha256(i::text::bytea), i, 0 FROM generate_series(1, 10000) i;
