-- How the user signed in to open each session (SPEC 11 `amr`, RFC 8176 values separated by
-- spaces). Sessions from before second factors were all opened with the password.
ALTER TABLE sessions ADD COLUMN amr TEXT NOT NULL DEFAULT 'pwd';
