//! Risk at every refresh (SPEC 12): each refresh that the rotation policy would let through
//! is scored from what the server can see, and `risk_policy` turns the score into one
//! action. Pure, like `refresh::decide`, which calls it.
//!
//! The signals and their weights (the documented score):
//!
//! | signal | weight | seen when |
//! | --- | ---: | --- |
//! | `new_network` | 1 | the caller's IP network (/24, /64) is not the one of the session's last use |
//! | `agent_family_changed` | 2 | the caller's user-agent family ("Chrome on Linux") is not the sign-in's, or it sends none |
//! | `fast_cadence` | 1 | the previous refresh was less than a tenth of the access-token lifetime ago (30 s by default): a client refreshes near expiry, single-flight |
//! | `two_networks_at_once` | 3 | a new network, and the previous use less than 2 minutes ago |
//! | `grace_hit` | 1 | a benign duplicate inside the grace window |
//!
//! A DPoP-bound session's token without its key is revoked before any scoring (SPEC 12); a
//! bound session's refresh with its key shows no network signals, since the key proves the
//! client wherever it is.
//!
//! The default policy allows below 3, shortens at 3 (the new access token lives 60 s), asks
//! for a step-up at 5 and revokes at 7: one observation alone (a network moved moments
//! after the last use counts 1 + 3) at most shortens, and revocation needs several at once
//! (that, with another browser family and a fast cadence).

use std::time::Duration;

use crate::clock::Timestamp;

/// What a refresh looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Another IP network than the session's last use.
    NewNetwork,
    /// Another user-agent family than the sign-in's.
    AgentFamilyChanged,
    /// Sooner after the previous refresh than a client refreshes.
    FastCadence,
    /// Another network while the last one was in use moments ago.
    TwoNetworksAtOnce,
    /// A duplicate inside the grace window.
    GraceHit,
}

impl Signal {
    /// Its weight in the score.
    pub fn weight(self) -> u32 {
        match self {
            Self::NewNetwork | Self::FastCadence | Self::GraceHit => 1,
            Self::AgentFamilyChanged => 2,
            Self::TwoNetworksAtOnce => 3,
        }
    }

    /// As security events and docs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewNetwork => "new_network",
            Self::AgentFamilyChanged => "agent_family_changed",
            Self::FastCadence => "fast_cadence",
            Self::TwoNetworksAtOnce => "two_networks_at_once",
            Self::GraceHit => "grace_hit",
        }
    }
}

/// What a refresh gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RiskAction {
    /// As usual.
    Allow,
    /// The new access token lives [`SHORT_ACCESS_TOKEN`].
    Shorten,
    /// Refused with `step_up_required` until the user signs in again (`POST /auth/step-up`).
    StepUp,
    /// The session is revoked.
    Revoke,
}

impl RiskAction {
    /// As metrics and events name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Shorten => "shorten",
            Self::StepUp => "step_up",
            Self::Revoke => "revoke",
        }
    }
}

/// The lifetime of an access token minted under [`RiskAction::Shorten`].
pub const SHORT_ACCESS_TOKEN: Duration = Duration::from_secs(60);

/// How recent the previous use must be for a new network to count as two at once.
const AT_ONCE: i64 = 120;

/// `risk_policy`: the score from which each action applies; `None` never applies it. The
/// highest action whose threshold the score reaches wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiskPolicy {
    /// From this score, shorten.
    pub shorten: Option<u32>,
    /// From this score, step up.
    pub step_up: Option<u32>,
    /// From this score, revoke.
    pub revoke: Option<u32>,
}

impl Default for RiskPolicy {
    fn default() -> Self {
        Self { shorten: Some(3), step_up: Some(5), revoke: Some(7) }
    }
}

impl RiskPolicy {
    /// Scores nothing: every refresh is allowed (`risk_policy = "off"`).
    pub const OFF: Self = Self { shorten: None, step_up: None, revoke: None };

    /// The action for a score.
    pub fn action(&self, score: u32) -> RiskAction {
        let reaches = |t: Option<u32>| t.is_some_and(|t| score >= t);
        if reaches(self.revoke) {
            RiskAction::Revoke
        } else if reaches(self.step_up) {
            RiskAction::StepUp
        } else if reaches(self.shorten) {
            RiskAction::Shorten
        } else {
            RiskAction::Allow
        }
    }

    /// Whether any action is on: without, nothing is scored.
    pub fn is_on(&self) -> bool {
        self.shorten.is_some() || self.step_up.is_some() || self.revoke.is_some()
    }
}

/// What a refresh is scored from.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// Now.
    pub now: Timestamp,
    /// The session's last use.
    pub last_used_at: Timestamp,
    /// The address of the session's last use; `None` when networks do not matter (a bound
    /// session that proved its key).
    pub last_ip: Option<&'a str>,
    /// The sign-in's user agent.
    pub sign_in_agent: Option<&'a str>,
    /// The caller's address.
    pub ip: Option<&'a str>,
    /// The caller's user agent.
    pub agent: Option<&'a str>,
    /// Whether this refresh is a grace-window duplicate.
    pub is_grace_hit: bool,
    /// The fastest a client refreshes: a tenth of the access-token lifetime, at most 30 s.
    pub cadence_floor: Duration,
}

/// The signals a refresh shows.
pub fn signals(o: &Observed<'_>) -> Vec<Signal> {
    let mut out = Vec::new();
    let since_last = o.now.seconds_since(o.last_used_at);
    let network = |ip: Option<&str>| ip.and_then(crate::caller::network);
    let (last, current) = (network(o.last_ip), network(o.ip));
    if last.is_some() && current.is_some() && last != current {
        out.push(Signal::NewNetwork);
        if since_last < AT_ONCE {
            out.push(Signal::TwoNetworksAtOnce);
        }
    }
    // A sign-in with an agent, refreshed without one, changed family as much as any.
    let is_other_family = match (o.sign_in_agent, o.agent) {
        (Some(then), Some(now)) => then != now && crate::device::family(then) != crate::device::family(now),
        (Some(_), None) => true,
        (None, _) => false,
    };
    if is_other_family {
        out.push(Signal::AgentFamilyChanged);
    }
    if since_last < i64::try_from(o.cadence_floor.as_secs()).unwrap_or(i64::MAX) {
        out.push(Signal::FastCadence);
    }
    if o.is_grace_hit {
        out.push(Signal::GraceHit);
    }
    out
}

/// The score of some signals.
pub fn score(signals: &[Signal]) -> u32 {
    signals.iter().map(|s| s.weight()).sum()
}

/// The fastest a client refreshes, for an access-token lifetime.
pub fn cadence_floor(access_token_ttl: Duration) -> Duration {
    (access_token_ttl / 10).min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests;
