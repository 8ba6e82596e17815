-- The browser session that approved an authorization code: the code is good only while that
-- session is live (a logout before the redemption leaves it worthless).
ALTER TABLE auth_codes ADD COLUMN browser_session_id TEXT;
