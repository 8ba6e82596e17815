-- An email address on the account (SPEC 10): stored as given (`email`), unique and looked
-- up case-insensitively through `email_key` (the address in lower case, computed by the
-- server so that both backends agree), verified once `email_verified_at` is set.
ALTER TABLE users ADD COLUMN email TEXT;
ALTER TABLE users ADD COLUMN email_key TEXT;
ALTER TABLE users ADD COLUMN email_verified_at BIGINT;
CREATE UNIQUE INDEX users_by_email_key ON users(email_key) WHERE email_key IS NOT NULL;
