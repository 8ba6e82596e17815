-- A session's repeated anomalies are recorded once an hour (ANOMALY_QUIET in latchkey-core):
-- the check before each such insert probes this index. Partial, so the other security
-- events (sign-ins, failures, revocations) pay nothing for it.
CREATE INDEX security_events_anomalies ON security_events (session_id, kind, at)
    WHERE kind IN ('binding_anomaly', 'refresh_risk');
