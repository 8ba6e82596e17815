-- Risk at refresh (SPEC 12): when `risk_policy` asked the session's user to sign in again.
-- Refreshes are refused while it is set; `POST /auth/step-up` clears it.
ALTER TABLE sessions ADD COLUMN step_up_at BIGINT;
