//! The client's address and user agent. The address is the TCP peer, unless the peer is a
//! configured trusted proxy: then the right-most `X-Forwarded-For` entry that is not itself
//! a trusted proxy (SPEC 5). Entries a client wrote itself are never believed.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use latchkey_core::Caller;

use crate::AppState;

/// A set of trusted proxy networks (`10.0.0.0/8`, `192.0.2.7`, `::1`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses a list of addresses and CIDR networks.
    ///
    /// # Errors
    /// The entry that is neither.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut nets = Vec::new();
        for entry in entries {
            let (addr, len) = match entry.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (entry.as_str(), None),
            };
            let ip: IpAddr = addr.trim().parse().map_err(|_| entry.clone())?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                Some(l) => l.trim().parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(|| entry.clone())?,
                None => max,
            };
            nets.push((ip, len));
        }
        Ok(Self(nets))
    }

    /// Whether an address is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|(net, len)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => prefix_eq(&n.octets(), &i.octets(), *len),
            (IpAddr::V6(n), IpAddr::V6(i)) => prefix_eq(&n.octets(), &i.octets(), *len),
            _ => false,
        })
    }
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let len = usize::from(len);
    let (full, rest) = (len / 8, len % 8);
    if a.get(..full) != b.get(..full) {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    match (a.get(full), b.get(full)) {
        (Some(x), Some(y)) => x & mask == y & mask,
        _ => false,
    }
}

/// Walks `X-Forwarded-For` from the right while the hops are trusted proxies; the first
/// entry that is not one is the client. An entry that does not parse as an address ends the
/// walk at the nearest trusted hop: anything left of it may have been written by the client.
fn client_address(peer: IpAddr, headers: &axum::http::HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
            Ok(ip) => {
                client = ip;
                if !trusted.contains(ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// The client making the request.
pub(crate) struct RequestCaller(pub(crate) Caller);

impl<S> FromRequestParts<S> for RequestCaller
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        // IPv4 clients of a dual-stack listener appear as `::ffff:a.b.c.d`; canonical form
        // makes them IPv4 again (for throttling, trusted_proxies and the device list).
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_canonical());
        let ip = peer.map(|peer| client_address(peer, &parts.headers, &state.trusted_proxies));
        // Bytes that are not ASCII are kept (lossily), not dropped: an agent made unreadable
        // on purpose must not read as no agent at all to the binding policy and risk.
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).chars().take(512).collect());
        Ok(Self(Caller { ip: ip.map(|i| i.to_string()), user_agent, dpop: None }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into(), "192.0.2.7".into(), "fd00::/8".into()]).unwrap();
        assert!(t.contains("10.1.2.3".parse().unwrap()));
        assert!(!t.contains("11.0.0.1".parse().unwrap()));
        assert!(t.contains("192.0.2.7".parse().unwrap()));
        assert!(!t.contains("192.0.2.8".parse().unwrap()));
        assert!(t.contains("fd12::1".parse().unwrap()));
        assert!(!t.contains("fe80::1".parse().unwrap()));
        assert!(TrustedProxies::parse(&["nonsense".into()]).is_err());
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
    }

    #[test]
    fn forwarded_for_walk() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into()]).unwrap();
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let h = |v: &str| {
            let mut m = axum::http::HeaderMap::new();
            m.insert("x-forwarded-for", v.parse().unwrap());
            m
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_address(peer, &h("6.6.6.6, 203.0.113.5"), &t), ip("203.0.113.5"));
        assert_eq!(client_address(peer, &h("203.0.113.5, 10.0.0.9"), &t), ip("203.0.113.5"));
        // An unparseable hop stops the walk: the client's own 6.6.6.6 is not believed.
        assert_eq!(client_address(peer, &h("6.6.6.6, unknown"), &t), peer);
        assert_eq!(client_address(peer, &h("6.6.6.6, 203.0.113.5:4711"), &t), peer);
        // Untrusted peers' headers are ignored; mapped IPv4 is canonical.
        assert_eq!(client_address(ip("8.8.8.8"), &h("6.6.6.6"), &t), ip("8.8.8.8"));
        assert_eq!(client_address(peer, &h("::ffff:203.0.113.5"), &t), ip("203.0.113.5"));
    }
}
