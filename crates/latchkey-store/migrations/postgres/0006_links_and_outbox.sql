-- Link tokens from mails (SPEC 10): `lkv_` verifies an address, `lkp_` resets a password.
-- Only the SHA-256 is kept; single use (`used_at`); a newer link of the same purpose voids
-- the older ones (`voided_at`). Kept past expiry so that a late click answers `used` or
-- `expired`, not `unknown`, until pruning.
CREATE TABLE link_tokens (
    hash       BYTEA PRIMARY KEY,
    purpose    TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id),
    email      TEXT NOT NULL,
    email_key  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    voided_at  BIGINT
);
CREATE INDEX link_tokens_by_user ON link_tokens(user_id, purpose);
CREATE INDEX link_tokens_by_expiry ON link_tokens(expires_at);

-- Mail waiting to be sent, written in the transaction of its cause (SPEC 10). A sender
-- claims due rows (`claimed_by`, `claimed_until`), and marks them sent, failed or for a
-- retry at `next_attempt_at`; the bodies are dropped once a row is done.
CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    kind            TEXT NOT NULL,
    user_id         TEXT,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    text_body       TEXT,
    html_body       TEXT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claimed_by      TEXT,
    claimed_until   BIGINT,
    last_error      TEXT,
    sent_at         BIGINT
);
CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
