-- Refresh tokens stored in the order they are issued (a rowid table, the hash in a unique
-- index) instead of keyed by their random hash. A rotation inserts the successor at the end
-- of the table and retires a token issued moments before, near the end too, so the many
-- rotations of one group commit share the same few table pages; only the narrow hash index
-- takes a random page per rotation. Before, each rotation dirtied two random leaves of the
-- table, and committing those pages to the WAL was the writer's largest cost.
CREATE TABLE refresh_tokens_by_issue (
    id               INTEGER PRIMARY KEY,
    hash             BLOB NOT NULL UNIQUE,
    session_id       TEXT NOT NULL REFERENCES sessions(id),
    created_at       INTEGER NOT NULL,
    retired_at       INTEGER,
    successor_hash   BLOB,
    successor_sealed BLOB
);
INSERT INTO refresh_tokens_by_issue (hash, session_id, created_at, retired_at, successor_hash, successor_sealed)
    SELECT hash, session_id, created_at, retired_at, successor_hash, successor_sealed
    FROM refresh_tokens ORDER BY created_at;
DROP TABLE refresh_tokens;
ALTER TABLE refresh_tokens_by_issue RENAME TO refresh_tokens;
CREATE INDEX refresh_tokens_by_session ON refresh_tokens(session_id);
