-- Resource indicators (RFC 8707, SPEC 13): the resources a client may ask tokens for, the
-- ones an authorization request named (its code), and the ones an app's session was
-- granted (its access tokens' `aud`). JSON lists of URIs; empty means the `audience`
-- setting.
ALTER TABLE clients ADD COLUMN resources TEXT NOT NULL DEFAULT '[]';
ALTER TABLE auth_codes ADD COLUMN resources TEXT NOT NULL DEFAULT '[]';
ALTER TABLE sessions ADD COLUMN resources TEXT NOT NULL DEFAULT '[]';
