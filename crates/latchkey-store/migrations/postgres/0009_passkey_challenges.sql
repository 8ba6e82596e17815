-- A passkey ceremony between its start and its finish (SPEC 11): the WebAuthn state
-- (challenge, expected user, policies) as JSON, taken (deleted) by the finish, so each
-- challenge is answered once. `user_id` is the registering user; NULL for a sign-in,
-- which names no user before the authenticator answers.
CREATE TABLE passkey_challenges (
    id         TEXT PRIMARY KEY,
    user_id    TEXT REFERENCES users(id),
    state      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX passkey_challenges_by_expiry ON passkey_challenges(expires_at);
