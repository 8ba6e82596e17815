-- Refresh tokens keyed by an id that the token itself carries and that sorts by issue time
-- (SPEC 3: `lkr_` + base64url of a 16-byte id, 6 bytes of milliseconds first, and 32
-- random bytes). A lookup reads the row by its key and checks the hash of the whole token;
-- the unique index on the hash is gone, and with it the one random B-tree page each
-- rotation dirtied in it (the table's own pages are shared by the rotations of one group
-- commit, since successors are appended at the end). Tokens issued before carry no id:
-- theirs is the first 16 bytes of their hash, which a lookup derives the same way.
CREATE TABLE refresh_tokens_by_key (
    id               BLOB PRIMARY KEY,
    hash             BLOB NOT NULL,
    session_id       TEXT NOT NULL REFERENCES sessions(id),
    created_at       INTEGER NOT NULL,
    retired_at       INTEGER,
    successor_id     BLOB,
    successor_sealed BLOB,
    retired_by       BLOB
) WITHOUT ROWID;
INSERT INTO refresh_tokens_by_key (id, hash, session_id, created_at, retired_at, successor_id, successor_sealed, retired_by)
    SELECT substr(hash, 1, 16), hash, session_id, created_at, retired_at, substr(successor_hash, 1, 16),
           successor_sealed, retired_by
    FROM refresh_tokens ORDER BY substr(hash, 1, 16);
DROP TABLE refresh_tokens;
ALTER TABLE refresh_tokens_by_key RENAME TO refresh_tokens;
CREATE INDEX refresh_tokens_by_session ON refresh_tokens(session_id);
