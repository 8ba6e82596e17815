//! Each signal alone and in combination, against the default policy.

use super::*;

const T0: i64 = 1_000_000;
const CHROME: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
const CHROME_NEXT: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/157.0.0.0 Safari/537.36";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";

/// An ordinary refresh: same network and agent, four and a half minutes after the last.
fn ordinary() -> Observed<'static> {
    Observed {
        now: Timestamp(T0 + 270),
        last_used_at: Timestamp(T0),
        last_ip: Some("198.51.100.7"),
        sign_in_agent: Some(CHROME),
        ip: Some("198.51.100.9"),
        agent: Some(CHROME),
        is_grace_hit: false,
        cadence_floor: cadence_floor(Duration::from_secs(300)),
    }
}

fn judged(o: &Observed<'_>) -> (Vec<Signal>, RiskAction) {
    let s = signals(o);
    let action = RiskPolicy::default().action(score(&s));
    (s, action)
}

#[test]
fn an_ordinary_refresh_shows_nothing() {
    assert_eq!(judged(&ordinary()), (vec![], RiskAction::Allow));
    // A browser update is the same family; an address in the same /24 the same network.
    let o = Observed { agent: Some(CHROME_NEXT), ..ordinary() };
    assert_eq!(judged(&o), (vec![], RiskAction::Allow));
}

#[test]
fn each_signal_alone_is_allowed_or_at_most_shortened() {
    let cases = [
        (Observed { ip: Some("203.0.113.5"), ..ordinary() }, vec![Signal::NewNetwork], RiskAction::Allow),
        (
            Observed { agent: Some(FIREFOX), ..ordinary() },
            vec![Signal::AgentFamilyChanged],
            RiskAction::Allow,
        ),
        (Observed { now: Timestamp(T0 + 5), ..ordinary() }, vec![Signal::FastCadence], RiskAction::Allow),
        (Observed { is_grace_hit: true, ..ordinary() }, vec![Signal::GraceHit], RiskAction::Allow),
        // A new network in use at once with the old one: two signals of one observation.
        (
            Observed { ip: Some("203.0.113.5"), now: Timestamp(T0 + 60), ..ordinary() },
            vec![Signal::NewNetwork, Signal::TwoNetworksAtOnce],
            RiskAction::Shorten,
        ),
    ];
    for (o, expected, action) in cases {
        assert_eq!(judged(&o), (expected, action), "{o:?}");
    }
}

#[test]
fn combinations_step_up_and_only_many_strong_ones_revoke() {
    let moved = Observed { ip: Some("203.0.113.5"), agent: Some(FIREFOX), ..ordinary() };
    assert_eq!(judged(&moved).1, RiskAction::Shorten, "new network and browser: 3");
    let at_once = Observed { now: Timestamp(T0 + 60), ..moved };
    assert_eq!(judged(&at_once).1, RiskAction::StepUp, "both networks at once, another browser: 6");
    let hammering = Observed { now: Timestamp(T0 + 5), ..moved };
    assert_eq!(score(&signals(&hammering)), 7, "new network, at once, another browser, fast");
    assert_eq!(judged(&hammering).1, RiskAction::Revoke);
    let everything = Observed { now: Timestamp(T0 + 5), is_grace_hit: true, ..moved };
    assert_eq!(score(&signals(&everything)), 8);
    assert_eq!(judged(&everything).1, RiskAction::Revoke);
}

#[test]
fn unknown_addresses_and_agents_are_no_signal() {
    let o = Observed {
        last_ip: None,
        ip: Some("203.0.113.5"),
        sign_in_agent: None,
        agent: Some(FIREFOX),
        ..ordinary()
    };
    assert_eq!(judged(&o), (vec![], RiskAction::Allow));
    let o = Observed { ip: Some("not an address"), ..ordinary() };
    assert_eq!(judged(&o), (vec![], RiskAction::Allow));
    // An agent at sign-in and none now is another family.
    let o = Observed { agent: None, ..ordinary() };
    assert_eq!(judged(&o).0, [Signal::AgentFamilyChanged]);
}

#[test]
fn the_policy_takes_the_highest_action_reached_and_off_allows_all() {
    let p = RiskPolicy::default();
    assert_eq!(
        [0, 2, 3, 4, 5, 6, 7, 30].map(|s| p.action(s)),
        [
            RiskAction::Allow,
            RiskAction::Allow,
            RiskAction::Shorten,
            RiskAction::Shorten,
            RiskAction::StepUp,
            RiskAction::StepUp,
            RiskAction::Revoke,
            RiskAction::Revoke
        ]
    );
    assert_eq!(RiskPolicy::OFF.action(100), RiskAction::Allow);
    let no_step_up = RiskPolicy { step_up: None, ..RiskPolicy::default() };
    assert_eq!(no_step_up.action(5), RiskAction::Shorten);
    assert!(!RiskPolicy::OFF.is_on());
}
