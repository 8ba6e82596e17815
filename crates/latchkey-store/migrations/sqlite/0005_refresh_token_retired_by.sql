-- Who rotated a refresh token (SPEC 4): a fingerprint of the rotating caller's IP network
-- and user agent, so that a grace-window duplicate from anyone else is reuse.
ALTER TABLE refresh_tokens ADD COLUMN retired_by BLOB;
