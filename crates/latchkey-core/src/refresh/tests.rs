//! Exhaustive tests of the rotation policy, with a fixed clock.

use std::time::Duration;

use super::*;
use crate::caller::CallerFingerprint;
use crate::crypto::RefreshTokenKey;
use crate::store::{RefreshTokenRecord, SessionRecord, UserRecord};

const T0: i64 = 1_000_000;

/// Settings with risk scoring off: these tests are about rotation, binding and keys; risk
/// has its own below.
fn settings() -> Settings {
    let mut s = Settings::new("http://issuer.test");
    s.risk = crate::risk::RiskPolicy::OFF;
    s
}

fn snapshot() -> RefreshSnapshot {
    RefreshSnapshot {
        token: RefreshTokenRecord {
            key: RefreshTokenKey::of("lkr_old"),
            session_id: "s".into(),
            created_at: Timestamp(T0),
            retired_at: None,
            successor_sealed: None,
            is_successor_used: false,
            retired_by: None,
        },
        session: SessionRecord {
            id: "s".into(),
            user_id: "u".into(),
            client_id: "latchkey".into(),
            scope: "profile".into(),
            created_at: Timestamp(T0),
            last_used_at: Timestamp(T0),
            idle_expires_at: Timestamp(T0 + 1000),
            expires_at: Timestamp(T0 + 5000),
            ip: Some("127.0.0.1".into()),
            user_agent: Some("agent/1".into()),
            revoked_at: None,
            revoke_reason: None,
            amr: "pwd".to_owned(),
            dpop_jkt: None,
            step_up_at: None,
            browser_session_id: None,
            resources: Vec::new(),
        },
        user: UserRecord {
            id: "u".into(),
            username: "alice".into(),
            password_hash: String::new(),
            roles: vec![],
            authz_ver: 1,
            status: UserStatus::Active,
            created_at: Timestamp(T0),
            email: None,
        },
    }
}

fn client(agent: &str) -> Caller {
    Caller { ip: Some("127.0.0.2".into()), user_agent: Some(agent.into()), dpop: None }
}

fn run(snap: &RefreshSnapshot, now: i64, settings: &Settings, agent: &str) -> RotationDecision {
    let ctx = RefreshContext {
        client_id: "latchkey".into(),
        now: Timestamp(now),
        policy: RotationPolicy::from(settings),
        caller: client(agent),
        requested_scope: None,
        requested_resources: Vec::new(),
        successor: RefreshTokenKey::of("lkr_new"),
        successor_sealed: b"sealed".to_vec(),
        is_stepped_up: false,
    };
    decide(snap, &ctx)
}

/// Retires the snapshot's token at `at`, rotated by `client("agent/1")`.
fn retired(snap: &mut RefreshSnapshot, at: i64, successor_used: bool) {
    snap.token.retired_at = Some(Timestamp(at));
    snap.token.successor_sealed = Some(b"sealed-successor".to_vec());
    snap.token.is_successor_used = successor_used;
    snap.token.retired_by = Some(CallerFingerprint::of(&client("agent/1")));
}

fn reason(d: &RotationDecision) -> Option<ErrorReason> {
    match d {
        RotationDecision::Refuse { reason } => Some(*reason),
        RotationDecision::Revoke { revocation } => Some(revocation.reason),
        _ => None,
    }
}

#[test]
fn live_token_rotates_and_slides_idle_expiry() {
    let d = run(&snapshot(), T0 + 10, &settings(), "agent/1");
    let RotationDecision::Rotate { successor, touch, events, .. } = d else { panic!("{d:?}") };
    assert_eq!(successor, RefreshTokenKey::of("lkr_new"));
    assert_eq!(touch.now, Timestamp(T0 + 10));
    // 14 days from now is past the absolute expiry, so the idle expiry stops there.
    assert_eq!(touch.idle_expires_at, Timestamp(T0 + 5000));
    assert_eq!(events, []);
}

#[test]
fn idle_expiry_slides_but_never_past_absolute() {
    let mut s = settings();
    s.session_idle_ttl = Duration::from_secs(100);
    let d = run(&snapshot(), T0 + 10, &s, "agent/1");
    let RotationDecision::Rotate { touch, .. } = d else { panic!() };
    assert_eq!(touch.idle_expires_at, Timestamp(T0 + 110));
    let mut snap = snapshot();
    snap.session.idle_expires_at = Timestamp(T0 + 4990);
    let d = run(&snap, T0 + 4950, &s, "agent/1");
    let RotationDecision::Rotate { touch, .. } = d else { panic!() };
    assert_eq!(touch.idle_expires_at, Timestamp(T0 + 5000));
}

#[test]
fn expiry_is_checked_both_ways() {
    let s = settings();
    assert_eq!(reason(&run(&snapshot(), T0 + 999, &s, "agent/1")), None);
    assert_eq!(reason(&run(&snapshot(), T0 + 1000, &s, "agent/1")), Some(ErrorReason::IdleExpired));
    let mut snap = snapshot();
    snap.session.idle_expires_at = Timestamp(T0 + 9000);
    assert_eq!(reason(&run(&snap, T0 + 4999, &s, "agent/1")), None);
    assert_eq!(reason(&run(&snap, T0 + 5000, &s, "agent/1")), Some(ErrorReason::SessionExpired));
}

#[test]
fn revoked_session_is_refused_with_its_reason_and_not_revoked_again() {
    for r in [ErrorReason::LoggedOut, ErrorReason::ReuseDetected, ErrorReason::PasswordChanged] {
        let mut snap = snapshot();
        snap.session.revoked_at = Some(Timestamp(T0));
        snap.session.revoke_reason = Some(r);
        let d = run(&snap, T0 + 1, &settings(), "agent/1");
        assert_eq!(d, RotationDecision::Refuse { reason: r });
        // A retired token on a revoked session is refused the same way.
        retired(&mut snap, T0, false);
        assert_eq!(run(&snap, T0 + 1, &settings(), "agent/1"), RotationDecision::Refuse { reason: r });
    }
}

#[test]
fn disabled_user_is_refused() {
    let mut snap = snapshot();
    snap.user.status = UserStatus::Disabled;
    assert_eq!(reason(&run(&snap, T0 + 1, &settings(), "agent/1")), Some(ErrorReason::UserDisabled));
}

#[test]
fn grace_replay_needs_window_and_unused_successor() {
    let s = settings(); // 10 s grace
    let mut snap = snapshot();
    retired(&mut snap, T0 + 100, false);
    assert!(matches!(run(&snap, T0 + 100, &s, "agent/1"), RotationDecision::Replay { .. }));
    assert!(matches!(run(&snap, T0 + 110, &s, "agent/1"), RotationDecision::Replay { .. }));
    // Past the window: reuse.
    assert_eq!(reason(&run(&snap, T0 + 111, &s, "agent/1")), Some(ErrorReason::ReuseDetected));
    // Successor already used: reuse, even inside the window.
    retired(&mut snap, T0 + 100, true);
    assert_eq!(reason(&run(&snap, T0 + 101, &s, "agent/1")), Some(ErrorReason::ReuseDetected));
}

#[test]
fn zero_grace_disables_replay() {
    let mut s = settings();
    s.refresh_grace = Duration::ZERO;
    let mut snap = snapshot();
    retired(&mut snap, T0 + 100, false);
    assert_eq!(reason(&run(&snap, T0 + 100, &s, "agent/1")), Some(ErrorReason::ReuseDetected));
}

#[test]
fn reuse_revocation_records_event_and_until() {
    let mut snap = snapshot();
    retired(&mut snap, T0, true);
    let RotationDecision::Revoke { revocation } = run(&snap, T0 + 50, &settings(), "agent/1") else {
        panic!()
    };
    assert_eq!(revocation.reason, ErrorReason::ReuseDetected);
    assert_eq!(revocation.event.kind, "refresh_token_reuse");
    assert_eq!(revocation.event.session_id, Some("s".into()));
    assert_eq!(revocation.event.ip.as_deref(), Some("127.0.0.2"));
    assert_eq!(revocation.until, Timestamp(T0 + 50 + 300 + 30));
}

#[test]
fn binding_policy_off_log_deny() {
    let mut s = settings();
    s.binding = BindingPolicy::Off;
    assert!(
        matches!(run(&snapshot(), T0 + 1, &s, "other/2"), RotationDecision::Rotate { ref events, .. } if events.is_empty())
    );
    s.binding = BindingPolicy::Log;
    let RotationDecision::Rotate { events, .. } = run(&snapshot(), T0 + 1, &s, "other/2") else { panic!() };
    let [e] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!(e.kind, "binding_anomaly");
    // Same agent: no anomaly.
    assert!(
        matches!(run(&snapshot(), T0 + 1, &s, "agent/1"), RotationDecision::Rotate { ref events, .. } if events.is_empty())
    );
    s.binding = BindingPolicy::Deny;
    assert_eq!(reason(&run(&snapshot(), T0 + 1, &s, "other/2")), Some(ErrorReason::BindingMismatch));
    assert!(matches!(run(&snapshot(), T0 + 1, &s, "agent/1"), RotationDecision::Rotate { .. }));
    // Log also applies to a grace replay whose rotation came from another agent than the
    // login's (the duplicate, from the rotation's caller, is benign).
    let mut replayed = snapshot();
    retired(&mut replayed, T0, false);
    replayed.token.retired_by = Some(CallerFingerprint::of(&client("other/2")));
    s.binding = BindingPolicy::Log;
    let RotationDecision::Replay { events, .. } = run(&replayed, T0 + 1, &s, "other/2") else { panic!() };
    let [e] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!(e.kind, "binding_anomaly");
    s.binding = BindingPolicy::Deny;
    // Deny also applies to such a grace replay.
    let mut snap = snapshot();
    retired(&mut snap, T0, false);
    snap.token.retired_by = Some(CallerFingerprint::of(&client("other/2")));
    assert_eq!(reason(&run(&snap, T0 + 1, &s, "other/2")), Some(ErrorReason::BindingMismatch));
}

#[test]
fn reuse_is_reported_as_reuse_even_from_another_agent_under_deny() {
    let mut s = settings();
    s.binding = BindingPolicy::Deny;
    let mut snap = snapshot();
    retired(&mut snap, T0, true);
    let RotationDecision::Revoke { revocation } = run(&snap, T0 + 1, &s, "thief/1") else { panic!() };
    assert_eq!(revocation.reason, ErrorReason::ReuseDetected);
    assert_eq!(revocation.event.kind, "refresh_token_reuse");
}

#[test]
fn another_clients_token_is_unknown_and_revokes_nothing() {
    let settings = Settings::new("http://issuer");
    let snap = snapshot();
    let ctx = RefreshContext {
        client_id: "some-app".into(),
        now: Timestamp(T0 + 1),
        policy: RotationPolicy::from(&settings),
        caller: client("ua"),
        requested_scope: None,
        requested_resources: Vec::new(),
        successor: RefreshTokenKey::of("lkr_new"),
        successor_sealed: b"sealed".to_vec(),
        is_stepped_up: false,
    };
    assert_eq!(decide(&snap, &ctx), RotationDecision::Refuse { reason: ErrorReason::UnknownToken });
}

/// Issue 12 (1): a thief holding a copy of the token cannot collect the victim's successor
/// through the grace window; only the caller that rotated can.
#[test]
fn grace_replay_needs_the_caller_that_rotated() {
    let s = settings();
    let mut snap = snapshot();
    retired(&mut snap, T0 + 100, false);
    // The rotation's caller (same network, same agent): benign.
    assert!(matches!(run(&snap, T0 + 101, &s, "agent/1"), RotationDecision::Replay { .. }));
    // Same network, another agent: reuse.
    let d = run(&snap, T0 + 101, &s, "thief/1");
    assert_eq!(reason(&d), Some(ErrorReason::ReuseDetected));
    let RotationDecision::Revoke { revocation } = d else { panic!() };
    assert!(revocation.event.detail.unwrap_or_default().contains("another caller"));
    // Same agent, another network: reuse.
    let mut ctx = RefreshContext {
        client_id: "latchkey".into(),
        now: Timestamp(T0 + 101),
        policy: RotationPolicy::from(&s),
        caller: Caller { ip: Some("198.51.100.7".into()), user_agent: Some("agent/1".into()), dpop: None },
        requested_scope: None,
        requested_resources: Vec::new(),
        successor: RefreshTokenKey::of("lkr_new"),
        successor_sealed: b"sealed".to_vec(),
        is_stepped_up: false,
    };
    assert_eq!(reason(&decide(&snap, &ctx)), Some(ErrorReason::ReuseDetected));
    // Another address in the same /24 with the same agent: benign.
    ctx.caller.ip = Some("127.0.0.200".into());
    assert!(matches!(decide(&snap, &ctx), RotationDecision::Replay { .. }));
    // A token retired before callers were recorded: reuse.
    snap.token.retired_by = None;
    assert_eq!(reason(&run(&snap, T0 + 101, &s, "agent/1")), Some(ErrorReason::ReuseDetected));
}

/// Issue 12 (4): a scope beyond the grant is refused without rotating, but only after the
/// token's state: a retired token is reuse whatever scope comes with it.
#[test]
fn scope_is_judged_after_the_tokens_state() {
    let s = settings();
    let mut ctx = RefreshContext {
        client_id: "latchkey".into(),
        now: Timestamp(T0 + 1),
        policy: RotationPolicy::from(&s),
        caller: client("agent/1"),
        requested_scope: Some("profile admin".into()),
        requested_resources: Vec::new(),
        successor: RefreshTokenKey::of("lkr_new"),
        successor_sealed: b"sealed".to_vec(),
        is_stepped_up: false,
    };
    assert_eq!(decide(&snapshot(), &ctx), RotationDecision::ScopeExceeded);
    let mut snap = snapshot();
    retired(&mut snap, T0, true);
    assert_eq!(reason(&decide(&snap, &ctx)), Some(ErrorReason::ReuseDetected));
    // Narrower or equal scopes rotate.
    ctx.requested_scope = Some("profile".into());
    assert!(matches!(decide(&snapshot(), &ctx), RotationDecision::Rotate { .. }));
    ctx.requested_scope = Some(Scope::from(""));
    assert!(matches!(decide(&snapshot(), &ctx), RotationDecision::Rotate { .. }));
}

// Key continuity (SPEC 12).

fn key(n: u8) -> crate::dpop::Thumbprint {
    crate::dpop::Thumbprint::parse(&format!("{}{n:03}", "k".repeat(40))).unwrap()
}

/// A decision for a session bound to `key(1)`, asked by a caller holding `presented`
/// (and, to show the key outweighs the network, from another network and user agent).
fn run_bound(snap: &RefreshSnapshot, now: i64, presented: Option<u8>) -> RotationDecision {
    let mut snap = snap.clone();
    snap.session.dpop_jkt = Some(key(1));
    let ctx = RefreshContext {
        client_id: "latchkey".into(),
        now: Timestamp(now),
        policy: RotationPolicy::from(&settings()),
        caller: Caller {
            ip: Some("203.0.113.9".into()),
            user_agent: Some("other-agent/9".into()),
            dpop: presented.map(key),
        },
        requested_scope: None,
        requested_resources: Vec::new(),
        successor: RefreshTokenKey::of("lkr_new"),
        successor_sealed: b"sealed".to_vec(),
        is_stepped_up: false,
    };
    decide(&snap, &ctx)
}

fn revoked_as(d: &RotationDecision) -> Option<(ErrorReason, &'static str)> {
    match d {
        RotationDecision::Revoke { revocation } => Some((revocation.reason, revocation.event.kind)),
        _ => None,
    }
}

#[test]
fn a_bound_sessions_live_token_rotates_only_with_its_key() {
    let d = run_bound(&snapshot(), T0 + 1, Some(1));
    // Another network and user agent: no anomaly, the key is what counts.
    assert!(matches!(d, RotationDecision::Rotate { ref events, .. } if events.is_empty()), "{d:?}");
    for presented in [Some(2), None] {
        let d = run_bound(&snapshot(), T0 + 1, presented);
        assert_eq!(revoked_as(&d), Some((ErrorReason::ReuseDetected, DPOP_KEY_MISMATCH)), "{presented:?}");
    }
}

#[test]
fn a_duplicate_with_the_sessions_key_is_benign_and_with_another_key_is_theft() {
    let mut snap = snapshot();
    retired(&mut snap, T0, false);
    // Same key inside the window: the same successor, whatever the network says.
    assert!(matches!(run_bound(&snap, T0 + 5, Some(1)), RotationDecision::Replay { .. }));
    // Another key, or none: theft, reported as a key mismatch.
    for presented in [Some(2), None] {
        let d = run_bound(&snap, T0 + 5, presented);
        assert_eq!(revoked_as(&d), Some((ErrorReason::ReuseDetected, DPOP_KEY_MISMATCH)), "{presented:?}");
    }
    // The session's key does not stretch the window or revive a used successor.
    let d = run_bound(&snap, T0 + 11, Some(1));
    assert_eq!(revoked_as(&d), Some((ErrorReason::ReuseDetected, "refresh_token_reuse")));
    retired(&mut snap, T0, true);
    let d = run_bound(&snap, T0 + 5, Some(1));
    assert_eq!(revoked_as(&d), Some((ErrorReason::ReuseDetected, "refresh_token_reuse")));
}

#[test]
fn a_bearer_session_ignores_a_proof_and_keeps_the_network_rule() {
    let mut snap = snapshot();
    retired(&mut snap, T0, false);
    let mut ctx_caller = client("agent/1");
    ctx_caller.dpop = Some(key(7));
    let ctx = RefreshContext {
        client_id: "latchkey".into(),
        now: Timestamp(T0 + 5),
        policy: RotationPolicy::from(&settings()),
        caller: ctx_caller,
        requested_scope: None,
        requested_resources: Vec::new(),
        successor: RefreshTokenKey::of("lkr_new"),
        successor_sealed: b"sealed".to_vec(),
        is_stepped_up: false,
    };
    // A proof's key is part of neither the Bearer fingerprint nor the decision.
    assert!(matches!(decide(&snap, &ctx), RotationDecision::Replay { .. }));
}

// Risk (SPEC 12): the decision applies risk's action, and a step-up wait holds.

/// A decision with the default risk policy, from `ip` with `agent`, at `now`.
fn run_risky(
    snap: &RefreshSnapshot,
    now: i64,
    ip: &str,
    agent: &str,
    is_stepped_up: bool,
) -> RotationDecision {
    let ctx = RefreshContext {
        client_id: "latchkey".into(),
        now: Timestamp(now),
        policy: RotationPolicy::from(&Settings::new("http://issuer.test")),
        caller: Caller { ip: Some(ip.into()), user_agent: Some(agent.into()), dpop: None },
        requested_scope: None,
        requested_resources: Vec::new(),
        successor: RefreshTokenKey::of("lkr_new"),
        successor_sealed: b"sealed".to_vec(),
        is_stepped_up,
    };
    decide(snap, &ctx)
}

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";

#[test]
fn risk_shortens_steps_up_and_revokes_by_score() {
    // An ordinary refresh: nothing.
    let d = run_risky(&snapshot(), T0 + 200, "127.0.0.9", "agent/1", false);
    assert!(
        matches!(d, RotationDecision::Rotate { shortened: false, ref events, .. } if events.is_empty()),
        "{d:?}"
    );
    // Another network and browser family, some minutes later: shortened, with an event.
    let d = run_risky(&snapshot(), T0 + 200, "203.0.113.9", FIREFOX, false);
    let RotationDecision::Rotate { shortened: true, events, .. } = d else { panic!("{d:?}") };
    // (The binding policy's `log` notes the other user agent as well.)
    let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["binding_anomaly", REFRESH_RISK]);
    let detail = events[1].detail.as_deref().unwrap();
    assert!(detail.starts_with("shorten: score 3 (new_network, agent_family_changed)"), "{detail}");
    // The same a minute after the last use, from both networks at once: step up.
    let d = run_risky(&snapshot(), T0 + 60, "203.0.113.9", FIREFOX, false);
    assert!(matches!(&d, RotationDecision::StepUp { event, .. } if event.kind == REFRESH_RISK), "{d:?}");
    // And seconds after it: revoked.
    let d = run_risky(&snapshot(), T0 + 5, "203.0.113.9", FIREFOX, false);
    assert_eq!(revoked_as(&d), Some((ErrorReason::SuspiciousRefresh, REFRESH_RISK)));
    // After the user stepped up, the same refresh goes through unscored (the binding policy
    // still notes the user agent).
    let d = run_risky(&snapshot(), T0 + 5, "203.0.113.9", FIREFOX, true);
    let RotationDecision::Rotate { shortened: false, events, .. } = d else { panic!("{d:?}") };
    assert!(events.iter().all(|e| e.kind != REFRESH_RISK), "{events:?}");
}

#[test]
fn a_session_waiting_for_step_up_refuses_until_stepped_up_but_theft_still_revokes() {
    let mut snap = snapshot();
    snap.session.step_up_at = Some(Timestamp(T0));
    let d = run_risky(&snap, T0 + 200, "127.0.0.9", "agent/1", false);
    assert_eq!(d, RotationDecision::Refuse { reason: ErrorReason::StepUpRequired });
    assert!(matches!(
        run_risky(&snap, T0 + 200, "127.0.0.9", "agent/1", true),
        RotationDecision::Rotate { .. }
    ));
    retired(&mut snap, T0, true);
    let d = run_risky(&snap, T0 + 200, "127.0.0.9", "agent/1", false);
    assert_eq!(revoked_as(&d), Some((ErrorReason::ReuseDetected, "refresh_token_reuse")));
}
