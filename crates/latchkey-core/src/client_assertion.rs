//! `private_key_jwt` client authentication (RFC 7523 §2.2, OpenID Connect Core §9, SPEC
//! 13): a client registered with its public keys (`jwks`, or a `jwks_uri` Latchkey fetches)
//! proves itself with a JWT it signs: `iss` and `sub` its client id, `aud` the issuer or
//! the token endpoint URL, a short `exp`, and a `jti` never accepted twice (remembered in
//! the store, so across nodes, until the assertion expires).
//!
//! Fetched key sets are cached per client for [`JWKS_TTL`], fetched again when an
//! assertion names a key id the cache lacks (at most once per [`JWKS_REFETCH_AFTER`]), and
//! the cache holds at most [`JWKS_CACHE_CLIENTS`] clients. The fetch itself is the
//! [`JwksFetcher`] port (the binary's outbound HTTP client: timeouts, no redirects, a
//! size cap).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use crate::clients::ClientError;
use crate::clock::Timestamp;
use crate::crypto::TokenHash;
use crate::ids::ClientId;
use crate::service::Latchkey;
use crate::store::{ClientKeys, ClientRecord};

/// `client_assertion_type` of a JWT assertion.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The signing algorithms accepted (and advertised).
pub const ASSERTION_ALGORITHMS: [&str; 4] = ["RS256", "PS256", "ES256", "EdDSA"];
/// The longest assertion read.
pub const MAX_ASSERTION_LEN: usize = 8 * 1024;
/// The longest an assertion may live (`exp` after now).
pub const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);
/// How long a fetched key set is used.
pub const JWKS_TTL: Duration = Duration::from_secs(300);
/// The least time between two fetches of one client's keys.
pub const JWKS_REFETCH_AFTER: Duration = Duration::from_secs(10);
/// How many clients' fetched key sets are cached.
pub const JWKS_CACHE_CLIENTS: usize = 1024;
/// The largest key set accepted.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;

/// The outbound port: fetches a client's `jwks_uri`.
#[async_trait]
pub trait JwksFetcher: Send + Sync {
    /// The document at `uri` (at most [`MAX_JWKS_BYTES`]).
    ///
    /// # Errors
    /// A line saying why it could not be fetched.
    async fn fetch(&self, uri: &str) -> Result<String, String>;
}

/// Fetched key sets by client.
#[derive(Default)]
pub(crate) struct JwksCache {
    fetcher: std::sync::OnceLock<Arc<dyn JwksFetcher>>,
    sets: Mutex<HashMap<ClientId, (Timestamp, Arc<JwkSet>)>>,
}

/// What an assertion must say.
#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
    jti: String,
}

/// The claims of a JWT, unverified: only to learn which client's keys to verify it with.
fn peek_issuer(assertion: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    let payload = assertion.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Iss>(&bytes).ok().map(|c| c.iss)
}

/// Parses a registered or fetched key set.
///
/// # Errors
/// When it is not a JWK set.
pub fn parse_jwks(text: &str) -> Result<JwkSet, String> {
    if text.len() > MAX_JWKS_BYTES {
        return Err(format!("the key set is larger than {MAX_JWKS_BYTES} bytes"));
    }
    serde_json::from_str::<JwkSet>(text).map_err(|e| format!("not a JWK set: {e}"))
}

fn key_for<'a>(set: &'a JwkSet, kid: Option<&str>) -> Option<&'a Jwk> {
    match kid {
        Some(kid) => set.find(kid),
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    }
}

impl Latchkey {
    /// Sets the port `jwks_uri`s are fetched through (the server does at start; without
    /// it, only clients with registered `jwks` can use `private_key_jwt`).
    pub fn use_jwks_fetcher(&self, fetcher: Arc<dyn JwksFetcher>) {
        let _ = self.jwks.fetcher.set(fetcher);
    }

    /// A client's key set: the registered one, or the fetched one (from the cache while
    /// fresh and while it has `kid`).
    async fn client_jwks(&self, client: &ClientRecord, kid: Option<&str>) -> Option<Arc<JwkSet>> {
        let uri = match client.keys.as_ref()? {
            ClientKeys::Inline(text) => return parse_jwks(text).ok().map(Arc::new),
            ClientKeys::Uri(uri) => uri,
        };
        let now = self.clock.now();
        let ttl = i64::try_from(JWKS_TTL.as_secs()).unwrap_or(i64::MAX);
        let refetch_after = i64::try_from(JWKS_REFETCH_AFTER.as_secs()).unwrap_or(i64::MAX);
        let cached = self.jwks.sets.lock().ok().and_then(|m| m.get(&client.client_id).cloned());
        if let Some((at, set)) = &cached {
            let fresh = now.seconds_since(*at) < ttl;
            let has_key = key_for(set, kid).is_some();
            if (fresh && has_key) || now.seconds_since(*at) < refetch_after {
                return Some(Arc::clone(set));
            }
        }
        let fetcher = self.jwks.fetcher.get()?;
        let set = match fetcher.fetch(uri).await.and_then(|t| parse_jwks(&t)) {
            Ok(set) => Arc::new(set),
            Err(e) => {
                tracing::warn!(client_id = %client.client_id, error = %e, "cannot fetch the client's jwks_uri");
                return cached.map(|(_, set)| set);
            }
        };
        if let Ok(mut m) = self.jwks.sets.lock() {
            if m.len() >= JWKS_CACHE_CLIENTS && !m.contains_key(&client.client_id) {
                let oldest = m.iter().min_by_key(|(_, (at, _))| *at).map(|(id, _)| id.clone());
                if let Some(id) = oldest {
                    m.remove(&id);
                }
            }
            m.insert(client.client_id.clone(), (now, Arc::clone(&set)));
        }
        Some(set)
    }

    /// Authenticates a client by a `private_key_jwt` assertion; `claimed` is the request's
    /// `client_id`, when it sent one (it must be the assertion's).
    ///
    /// # Errors
    /// [`ClientError::AuthenticationFailed`] for every kind of mismatch alike (and a replay).
    pub async fn authenticate_by_assertion(
        &self,
        claimed: Option<&ClientId>,
        assertion: &str,
    ) -> Result<ClientRecord, ClientError> {
        let failed = || ClientError::AuthenticationFailed;
        if assertion.len() > MAX_ASSERTION_LEN {
            return Err(failed());
        }
        let header = decode_header(assertion).map_err(|_| failed())?;
        let alg_ok =
            matches!(header.alg, Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 | Algorithm::EdDSA);
        let issuer = peek_issuer(assertion).ok_or_else(failed)?;
        if !alg_ok || claimed.is_some_and(|c| c.as_str() != issuer) {
            return Err(failed());
        }
        let client = self.store.find_client(&ClientId::from(issuer.as_str())).await?.ok_or_else(failed)?;
        let set = self.client_jwks(&client, header.kid.as_deref()).await.ok_or_else(failed)?;
        let jwk = key_for(&set, header.kid.as_deref()).ok_or_else(failed)?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| failed())?;
        let s = &self.settings;
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_audience(&[s.issuer.clone(), format!("{}/oauth/token", s.issuer)]);
        validation.set_required_spec_claims(&["iss", "sub", "aud", "exp"]);
        let claims = decode::<AssertionClaims>(assertion, &key, &validation).map_err(|_| failed())?.claims;
        let now = self.clock.now();
        let skew = i64::try_from(s.clock_skew.as_secs()).unwrap_or(0);
        let max_life = i64::try_from(MAX_ASSERTION_LIFETIME.as_secs()).unwrap_or(i64::MAX);
        let timely = claims.exp.saturating_add(skew) > now.0
            && claims.exp <= now.0.saturating_add(max_life)
            && claims.iat.is_none_or(|iat| iat <= now.0.saturating_add(skew));
        if claims.iss != claims.sub
            || claims.sub != client.client_id.as_str()
            || !timely
            || claims.jti.is_empty()
        {
            return Err(failed());
        }
        // Once only, on every node, until it would have expired anyway.
        let seen = TokenHash::of(&format!("client_assertion\n{}\n{}", client.client_id, claims.jti));
        if !self.store.remember_dpop_proof(&seen, Timestamp(claims.exp.saturating_add(skew))).await? {
            tracing::warn!(client_id = %client.client_id, "client assertion replayed");
            return Err(failed());
        }
        Ok(client)
    }
}
