//! Telling one caller from another at refresh (SPEC 4, 12): a grace-window duplicate is a
//! benign retry only when it comes from the caller that rotated. For Bearer sessions that
//! caller is its IP network (/24 for IPv4, /64 for IPv6, so a phone moving between
//! addresses of one carrier network still counts) and its user agent, reduced here to one
//! fixed-size fingerprint that the store keeps with the retired token.
//!
//! A fingerprint is not a secret and proves nothing on its own; it only narrows who can
//! receive a session's successor through the grace window to callers that look like the
//! one that rotated.

use std::net::IpAddr;

use aws_lc_rs::digest::{Context, SHA256};
use subtle::ConstantTimeEq;

/// Who made a request, as far as the network tells: its address (the TCP peer, or
/// `X-Forwarded-For` from a trusted proxy) and its `User-Agent`. "Caller" is the network's
/// word here; "client" means an OAuth client (an app or a resource server) everywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// Its address.
    pub ip: Option<String>,
    /// Its `User-Agent`.
    pub user_agent: Option<String>,
    /// The DPoP key it proved it holds, at the endpoints that take proofs (SPEC 12):
    /// already checked, replay included. `None` for a Bearer caller.
    pub dpop: Option<crate::dpop::Thumbprint>,
}

/// SHA-256 over a caller's IP network and user agent.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallerFingerprint(pub [u8; 32]);

impl std::fmt::Debug for CallerFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CallerFingerprint({})", crate::crypto::b64(self.0.get(..6).unwrap_or_default()))
    }
}

impl CallerFingerprint {
    /// The fingerprint of the caller of a request. Unknown parts (no address, no user
    /// agent) count as empty, so two callers that both lack them match each other.
    pub fn of(caller: &Caller) -> Self {
        let network = caller.ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()).map(network_of);
        let mut ctx = Context::new(&SHA256);
        // Length-prefixed parts: no user agent can imitate a network boundary.
        let network = network.unwrap_or_default();
        ctx.update(&(network.len() as u64).to_be_bytes());
        ctx.update(network.as_bytes());
        let agent = caller.user_agent.as_deref().unwrap_or_default();
        ctx.update(&(agent.len() as u64).to_be_bytes());
        ctx.update(agent.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Self(out)
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// The network of an address given as text; `None` when it does not parse.
pub(crate) fn network(ip: &str) -> Option<String> {
    ip.parse::<IpAddr>().ok().map(network_of)
}

/// The network an address belongs to, as text: its /24 (IPv4) or /64 (IPv6) prefix.
fn network_of(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let prefix: Vec<String> = s.iter().take(4).map(|x| format!("{x:x}")).collect();
            format!("{}::/64", prefix.join(":"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(ip: &str, agent: &str) -> Caller {
        Caller { ip: Some(ip.into()), user_agent: Some(agent.into()), dpop: None }
    }

    #[test]
    fn one_network_and_agent_is_one_caller() {
        let a = CallerFingerprint::of(&caller("203.0.113.5", "app/1"));
        assert_eq!(a, CallerFingerprint::of(&caller("203.0.113.200", "app/1")));
        assert_eq!(a, CallerFingerprint::of(&caller("::ffff:203.0.113.9", "app/1")));
        assert_ne!(a, CallerFingerprint::of(&caller("203.0.114.5", "app/1")));
        assert_ne!(a, CallerFingerprint::of(&caller("203.0.113.5", "app/2")));
        let v6 = CallerFingerprint::of(&caller("2001:db8:1:2::1", "app/1"));
        assert_eq!(v6, CallerFingerprint::of(&caller("2001:db8:1:2:ffff::9", "app/1")));
        assert_ne!(v6, CallerFingerprint::of(&caller("2001:db8:1:3::1", "app/1")));
    }

    #[test]
    fn missing_parts_do_not_collide_with_present_ones() {
        let none = CallerFingerprint::of(&Caller::default());
        assert_eq!(none, CallerFingerprint::of(&Caller::default()));
        assert_ne!(
            none,
            CallerFingerprint::of(&Caller { ip: None, user_agent: Some("x".into()), dpop: None })
        );
        // The parts are length-prefixed: a user agent cannot imitate a network boundary.
        let split = CallerFingerprint::of(&Caller {
            ip: Some("10.0.0.9".into()),
            user_agent: Some("x".into()),
            dpop: None,
        });
        let joined = Caller { ip: None, user_agent: Some("10.0.0.0/24x".into()), dpop: None };
        assert_ne!(split, CallerFingerprint::of(&joined));
    }

    #[test]
    fn a_fingerprint_matches_only_itself() {
        let a = CallerFingerprint::of(&caller("203.0.113.5", "app/1"));
        let b = CallerFingerprint::of(&caller("198.51.100.5", "app/1"));
        assert!(a.ct_eq(&a));
        assert!(!a.ct_eq(&b));
    }
}
