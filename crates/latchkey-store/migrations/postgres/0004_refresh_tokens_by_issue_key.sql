-- Refresh tokens keyed by an id that the token itself carries and that sorts by issue time
-- (SPEC 3: `lkr_` + base64url of a 16-byte id, 6 bytes of milliseconds first, and 32
-- random bytes). A lookup reads the row by its key and checks the hash of the whole token;
-- new keys land at the right edge of the primary key instead of on a random leaf (fewer
-- pages dirtied per rotation, fewer full-page images in the WAL). Tokens issued before
-- carry no id: theirs is the first 16 bytes of their hash, which a lookup derives the
-- same way.
ALTER TABLE refresh_tokens ADD COLUMN id BYTEA;
UPDATE refresh_tokens SET id = substring(hash FROM 1 FOR 16);
ALTER TABLE refresh_tokens ALTER COLUMN id SET NOT NULL;
ALTER TABLE refresh_tokens DROP CONSTRAINT refresh_tokens_pkey;
ALTER TABLE refresh_tokens ADD PRIMARY KEY (id);
ALTER TABLE refresh_tokens RENAME COLUMN successor_hash TO successor_id;
UPDATE refresh_tokens SET successor_id = substring(successor_id FROM 1 FOR 16) WHERE successor_id IS NOT NULL;
