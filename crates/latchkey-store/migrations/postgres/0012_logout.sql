-- OpenID Connect logout (SPEC 13). A client may register where it may be sent back after
-- RP-initiated logout, and where to receive back-channel logout tokens.
ALTER TABLE clients ADD COLUMN post_logout_redirect_uris TEXT NOT NULL DEFAULT '[]';
ALTER TABLE clients ADD COLUMN backchannel_logout_uri TEXT;
ALTER TABLE clients ADD COLUMN backchannel_logout_session_required BIGINT NOT NULL DEFAULT 0;

-- The browser session an app session was created under (its code's approver): RP-initiated
-- logout ends the browser session and these.
ALTER TABLE sessions ADD COLUMN browser_session_id TEXT;
CREATE INDEX sessions_by_browser_session ON sessions(browser_session_id) WHERE browser_session_id IS NOT NULL;

-- Back-channel logout tokens to deliver, queued in the transaction that ended the session.
-- The token is signed at each attempt (fresh `iat`/`exp`, the same `jti`); a sender claims
-- due rows (`claimed_by`, `claimed_until`) and marks them delivered, failed or for a retry
-- at `next_attempt_at`, until `expires_at`.
CREATE TABLE logout_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    client_id       TEXT NOT NULL,
    uri             TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claimed_by      TEXT,
    claimed_until   BIGINT,
    last_error      TEXT,
    delivered_at    BIGINT
);
CREATE INDEX logout_deliveries_due ON logout_deliveries(state, next_attempt_at);
