//! Exhaustive tests of the rotation policy, with a fixed clock.

use std::time::Duration;

use super::*;
use crate::store::{RefreshTokenRecord, SessionRecord, UserRecord};

const T0: i64 = 1_000_000;

fn settings() -> Settings {
    Settings::new("http://issuer.test")
}

fn snapshot() -> RefreshSnapshot {
    RefreshSnapshot {
        token: RefreshTokenRecord {
            hash: TokenHash::of("lkr_old"),
            session_id: "s".into(),
            created_at: Timestamp(T0),
            retired_at: None,
            successor_sealed: None,
            is_successor_used: false,
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
        },
        user: UserRecord {
            id: "u".into(),
            username: "alice".into(),
            password_hash: String::new(),
            roles: vec![],
            authz_ver: 1,
            status: UserStatus::Active,
            created_at: Timestamp(T0),
        },
    }
}

fn client(agent: &str) -> ClientContext {
    ClientContext { ip: Some("127.0.0.2".into()), user_agent: Some(agent.into()) }
}

fn run(snap: &RefreshSnapshot, now: i64, settings: &Settings, agent: &str) -> RotationDecision {
    let ctx = RefreshContext {
        client_id: "latchkey".into(),
        now: Timestamp(now),
        policy: RotationPolicy::from(settings),
        client: client(agent),
        successor_hash: TokenHash::of("lkr_new"),
        successor_sealed: b"sealed".to_vec(),
    };
    decide(snap, &ctx)
}

fn retired(snap: &mut RefreshSnapshot, at: i64, successor_used: bool) {
    snap.token.retired_at = Some(Timestamp(at));
    snap.token.successor_sealed = Some(b"sealed-successor".to_vec());
    snap.token.is_successor_used = successor_used;
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
    let RotationDecision::Rotate { successor_hash, touch, event, .. } = d else { panic!("{d:?}") };
    assert_eq!(successor_hash, TokenHash::of("lkr_new"));
    assert_eq!(touch.now, Timestamp(T0 + 10));
    // 14 days from now is past the absolute expiry, so the idle expiry stops there.
    assert_eq!(touch.idle_expires_at, Timestamp(T0 + 5000));
    assert_eq!(event, None);
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
    assert_eq!(revocation.event.session_id.as_deref(), Some("s"));
    assert_eq!(revocation.event.ip.as_deref(), Some("127.0.0.2"));
    assert_eq!(revocation.until, Timestamp(T0 + 50 + 300 + 30));
}

#[test]
fn binding_policy_off_log_deny() {
    let mut s = settings();
    s.binding = BindingPolicy::Off;
    assert!(matches!(run(&snapshot(), T0 + 1, &s, "other/2"), RotationDecision::Rotate { event: None, .. }));
    s.binding = BindingPolicy::Log;
    let RotationDecision::Rotate { event: Some(e), .. } = run(&snapshot(), T0 + 1, &s, "other/2") else {
        panic!()
    };
    assert_eq!(e.kind, "binding_anomaly");
    // Same agent: no anomaly.
    assert!(matches!(run(&snapshot(), T0 + 1, &s, "agent/1"), RotationDecision::Rotate { event: None, .. }));
    s.binding = BindingPolicy::Deny;
    assert_eq!(reason(&run(&snapshot(), T0 + 1, &s, "other/2")), Some(ErrorReason::BindingMismatch));
    assert!(matches!(run(&snapshot(), T0 + 1, &s, "agent/1"), RotationDecision::Rotate { .. }));
    // Log also applies to a grace replay from another agent.
    let mut replayed = snapshot();
    retired(&mut replayed, T0, false);
    s.binding = BindingPolicy::Log;
    let RotationDecision::Replay { event: Some(e), .. } = run(&replayed, T0 + 1, &s, "other/2") else {
        panic!()
    };
    assert_eq!(e.kind, "binding_anomaly");
    s.binding = BindingPolicy::Deny;
    // Deny also applies to a grace replay from another agent.
    let mut snap = snapshot();
    retired(&mut snap, T0, false);
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
        client: client("ua"),
        successor_hash: TokenHash::of("lkr_new"),
        successor_sealed: b"sealed".to_vec(),
    };
    assert_eq!(decide(&snap, &ctx), RotationDecision::Refuse { reason: ErrorReason::UnknownToken });
}
