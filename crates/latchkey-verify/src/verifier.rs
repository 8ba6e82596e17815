//! [`Verifier`]: local access-token verification (SPEC 8) plus the revocation state
//! (SPEC 5.4), and the error reasons of SPEC 5.5.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::{Validation, decode, decode_header};
use latchkey_proto::TokenErrorReason;
use latchkey_proto::claims::{AccessTokenClaims, ClaimsCheck, MAX_ACCESS_TOKEN_LEN, is_access_token_typ};

use crate::clock::{TimeFn, system_time, unix_secs};
use crate::feed::{self, FeedSource, Revocations};
use crate::jwks::{self, JwksError, KeySet};

/// What to do when the revocation feed has been unreachable for too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedPolicy {
    /// Refuse every token (the default): a revoked session must not slip through.
    FailClosed,
    /// Keep accepting tokens on signature, claims and the revocations already known.
    FailOpen,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The token is not acceptable (SPEC 5.5 reasons).
    #[error("invalid token: {}", .0.as_str())]
    Invalid(TokenErrorReason),
    /// The revocation feed has been unreachable longer than allowed (fail closed).
    #[error("revocation feed unavailable")]
    FeedUnavailable,
    /// The `DPoP` proof that came with the token is not acceptable (SPEC 12): answered
    /// `401 invalid_dpop_proof`.
    #[error(transparent)]
    Proof(#[from] latchkey_dpop::ProofError),
    /// The proof was seen before by this verifier.
    #[error("the DPoP proof was used before")]
    ProofReplayed,
    /// The replay cache is full of live proofs (far more DPoP requests than it was sized
    /// for): answered `503` rather than forgetting proofs that could then be replayed.
    #[error("the DPoP replay cache is full")]
    ProofCacheFull,
}

/// Why [`VerifierBuilder::build`] refused to build a verifier.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Neither [`VerifierBuilder::feed_credentials`] nor
    /// [`VerifierBuilder::insecure_without_revocation`] was called. Without the feed a
    /// verifier cannot see logouts, theft or role changes (SPEC 5.4), so going without it
    /// must be a choice written in the code, not a forgotten setting.
    #[error(
        "no revocation feed: give feed_credentials() (a client with the scope revocations:read), \
         or call insecure_without_revocation() to accept revoked tokens until they expire"
    )]
    NoRevocationFeed,
    /// Both [`VerifierBuilder::feed_credentials`] and
    /// [`VerifierBuilder::insecure_without_revocation`] were called: one of them is a
    /// mistake, and guessing which could silently drop revocation.
    #[error("feed_credentials() and insecure_without_revocation() both given: choose one")]
    ConflictingRevocationChoice,
    /// `build` was not awaited inside a Tokio runtime: the verifier runs the feed follower
    /// and the scheduled key refresh as Tokio tasks.
    #[error("no Tokio runtime: build the verifier inside one (e.g. under #[tokio::main])")]
    NoTokioRuntime,
    /// The JWKS given to [`VerifierBuilder::jwks_json`] is not a JWKS document.
    #[error("the JWKS given to jwks_json() is not a JWKS document")]
    InvalidJwksJson(#[source] serde_json::Error),
    /// The keys could not be fetched.
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

pub use latchkey_proto::claims::FIRST_PARTY_CLIENT_ID;

/// A verified token's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The claims.
    pub claims: AccessTokenClaims,
}

impl Verified {
    /// Whether the token carries a role. A third-party app's token carries the user's roles
    /// only when the app was granted the scope `roles` (SPEC 13), so an app without it fails
    /// every role check.
    pub fn has_role(&self, role: &str) -> bool {
        self.claims.roles.iter().any(|r| r == role)
    }

    /// Whether the token carries a scope (one of the space-separated values of `scope`).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.claims.scope.split_whitespace().any(|s| s == scope)
    }

    /// Whether the token was issued to Latchkey's own clients ([`FIRST_PARTY_CLIENT_ID`])
    /// rather than to an app through OAuth (an authorization code, a device code or
    /// `client_credentials`). A first-party token acts with the user's whole authority; an
    /// app's token only within the scopes the user granted it, which is what
    /// `axum::AccessToken::require_app_scope` checks.
    pub fn is_first_party(&self) -> bool {
        self.claims.client_id == FIRST_PARTY_CLIENT_ID
    }
}

/// Whether revocation was waived with [`VerifierBuilder::insecure_without_revocation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RevocationWaiver {
    NotWaived,
    InsecureWaived,
}

/// How a built verifier learns of revocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RevocationCheck {
    /// From the feed it follows.
    Feed,
    /// Not at all: chosen with [`VerifierBuilder::insecure_without_revocation`].
    InsecureNone,
}

/// Builds a [`Verifier`]: either [`Self::feed_credentials`] or
/// [`Self::insecure_without_revocation`] must be called, or [`Self::build`] refuses.
/// `Debug` leaves out the feed client's secret.
#[derive(Clone)]
pub struct VerifierBuilder {
    issuer: String,
    endpoint: Option<String>,
    audience: Option<String>,
    feed: Option<(String, String)>,
    waiver: RevocationWaiver,
    poll_every: Duration,
    use_stream: bool,
    max_feed_staleness: Duration,
    policy: FeedPolicy,
    skew: i64,
    http: Option<reqwest::Client>,
    initial_jwks: Option<String>,
    now: TimeFn,
    dpop_replay_capacity: usize,
    resource_url: ResourceUrl,
}

impl std::fmt::Debug for VerifierBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierBuilder")
            .field("issuer", &self.issuer)
            .field("endpoint", &self.endpoint)
            .field("audience", &self.audience)
            .field("feed_client_id", &self.feed.as_ref().map(|(id, _)| id))
            .field("waiver", &self.waiver)
            .field("poll_every", &self.poll_every)
            .field("use_stream", &self.use_stream)
            .field("max_feed_staleness", &self.max_feed_staleness)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl VerifierBuilder {
    /// Where to reach the server for keys and the feed, when that is not the issuer URL
    /// (an internal address, a test server).
    #[must_use]
    pub fn endpoint(mut self, base_url: impl Into<String>) -> Self {
        self.endpoint = Some(base_url.into());
        self
    }

    /// The audience tokens must carry (default: the issuer).
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Credentials of a client with the scope `revocations:read`, to follow the feed
    /// (SPEC 5.4): logouts, theft and role changes then reach the verifier within
    /// milliseconds.
    #[must_use]
    pub fn feed_credentials(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        self.feed = Some((client_id.into(), client_secret.into()));
        self
    }

    /// Builds a verifier that follows no feed and so checks no revocation: the token of a
    /// user who logged out, whose session was stolen and revoked, who was disabled or lost a
    /// role stays accepted, with its old roles, until it expires (5 minutes by default, plus
    /// the 30 s skew). For offline use, benchmarks, and APIs whose owners accept that
    /// window; [`Self::build`] logs a warning. Without this call or
    /// [`Self::feed_credentials`], `build` refuses with [`BuildError::NoRevocationFeed`].
    #[must_use]
    pub fn insecure_without_revocation(mut self) -> Self {
        self.waiver = RevocationWaiver::InsecureWaived;
        self
    }

    /// How often to page the feed while its stream is down, and how long to wait before
    /// reconnecting the stream (default 500 ms).
    #[must_use]
    pub fn poll_every(mut self, every: Duration) -> Self {
        self.poll_every = every;
        self
    }

    /// Whether to follow the feed's SSE stream (default) or only page it every
    /// [`Self::poll_every`] (behind proxies that buffer or cut long responses).
    #[must_use]
    pub fn use_stream(mut self, use_stream: bool) -> Self {
        self.use_stream = use_stream;
        self
    }

    /// How long the feed may be unreachable before [`FeedPolicy`] applies (default 30 s).
    #[must_use]
    pub fn max_feed_staleness(mut self, limit: Duration) -> Self {
        self.max_feed_staleness = limit;
        self
    }

    /// Fail closed (default) or open when the feed is unreachable.
    #[must_use]
    pub fn feed_policy(mut self, policy: FeedPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Starts from this JWKS document instead of fetching one (offline use, benchmarks);
    /// an unknown `kid` still triggers a (rate-limited) fetch.
    #[must_use]
    pub fn jwks_json(mut self, jwks: impl Into<String>) -> Self {
        self.initial_jwks = Some(jwks.into());
        self
    }

    /// The URL clients reach this API at (`https://api.example.com`, with any path prefix a
    /// proxy strips): DPoP proofs name it in `htu`, with the request's path. Without it (or
    /// [`Self::insecure_htu_from_host`]) the verifier takes no DPoP: a bound token gets
    /// `invalid_dpop_proof`.
    #[must_use]
    pub fn resource_url(mut self, url: impl Into<String>) -> Self {
        self.resource_url = ResourceUrl::Configured(url.into().trim_end_matches('/').to_owned());
        self
    }

    /// Checks DPoP proofs against `http://` and each request's `Host` instead of a
    /// configured URL. The client chooses the `Host`, so a proof and token captured at
    /// another API that accepts the same tokens can be replayed here once; for tests and a
    /// process clients reach directly only.
    #[must_use]
    pub fn insecure_htu_from_host(mut self) -> Self {
        self.resource_url = ResourceUrl::InsecureFromHost;
        self
    }

    /// How many DPoP proofs the replay cache holds (default 1,000,000, at most about 25 MB: a
    /// proof is kept two to four minutes, so at least 4,000 DPoP requests a second, sustained).
    /// Past it, DPoP requests are answered `503` until old proofs expire: forgetting one
    /// early would let it be replayed. One key's proofs may fill a quarter of it at most.
    #[must_use]
    pub fn dpop_replay_capacity(mut self, capacity: usize) -> Self {
        self.dpop_replay_capacity = capacity.max(1);
        self
    }

    /// The HTTP client to use (for tests that count requests).
    #[must_use]
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// The clock tokens are judged by (default: the system clock): it decides `exp`,
    /// `iat` and `nbf` (with the 30 s skew) and when revocations may be forgotten. Tests
    /// inject a clock they move, as openidconnect's `IdTokenVerifier::set_time_fn` allows.
    /// Network timing (feed staleness, JWKS refetch limits, polling) stays on the
    /// monotonic clock: it measures the connection to the server, not the tokens.
    #[must_use]
    pub fn time_fn(mut self, now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.now = Arc::new(now);
        self
    }

    /// Finds the keys through discovery and fetches them, starts loading the revocation
    /// snapshot (with feed credentials), then keeps following the feed in the background
    /// for as long as the verifier lives. Until the snapshot arrives, tokens are refused
    /// under [`FeedPolicy::FailClosed`]. Must be awaited inside a Tokio runtime with I/O
    /// and time enabled (`#[tokio::main]` has both): the background work runs as Tokio
    /// tasks.
    ///
    /// # Errors
    /// [`BuildError::NoRevocationFeed`] or [`BuildError::ConflictingRevocationChoice`] when
    /// the revocation choice is missing or contradictory, [`BuildError::NoTokioRuntime`]
    /// outside a Tokio runtime (both before any request), and [`BuildError::Jwks`] or
    /// [`BuildError::InvalidJwksJson`] when the keys cannot be had.
    pub async fn build(self) -> Result<Arc<Verifier>, BuildError> {
        let (feed, revocation) = match (self.feed, self.waiver) {
            (Some(credentials), RevocationWaiver::NotWaived) => (Some(credentials), RevocationCheck::Feed),
            (None, RevocationWaiver::InsecureWaived) => (None, RevocationCheck::InsecureNone),
            (None, RevocationWaiver::NotWaived) => return Err(BuildError::NoRevocationFeed),
            (Some(_), RevocationWaiver::InsecureWaived) => {
                return Err(BuildError::ConflictingRevocationChoice);
            }
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoTokioRuntime)?;
        let http = self.http.unwrap_or_default();
        let issuer = self.issuer.trim_end_matches('/').to_owned();
        let base = self.endpoint.as_deref().unwrap_or(&issuer).trim_end_matches('/').to_owned();
        let (jwks_url, keys) = match &self.initial_jwks {
            Some(json) => (
                format!("{base}/jwks.json"),
                KeySet::from_jwks(&serde_json::from_str(json).map_err(BuildError::InvalidJwksJson)?),
            ),
            None => {
                let url = jwks::discover(&http, &issuer, &base).await;
                let keys = jwks::fetch(&http, &url).await?;
                (url, keys)
            }
        };
        let revocations = Arc::new(RwLock::new(Revocations::default()));
        match feed {
            Some((client_id, client_secret)) => {
                let src = FeedSource {
                    url: format!("{base}/revocations"),
                    client_id,
                    client_secret,
                    poll_every: self.poll_every,
                    use_stream: self.use_stream,
                    now: Arc::clone(&self.now),
                };
                runtime.spawn(feed::follow(http.clone(), src, Arc::downgrade(&revocations)));
            }
            None => tracing::warn!(
                issuer = %issuer,
                "latchkey-verify built with insecure_without_revocation(): revoked tokens are \
                 accepted until they expire"
            ),
        }
        let verifier = Arc::new(Verifier {
            audience: self.audience.unwrap_or_else(|| issuer.clone()),
            issuer,
            jwks_url,
            http,
            keys: RwLock::new(keys),
            // The first unknown kid may refetch at once.
            last_jwks_fetch: Mutex::new(
                Instant::now().checked_sub(JWKS_REFETCH_EVERY).unwrap_or_else(Instant::now),
            ),
            revocations,
            revocation,
            max_feed_staleness: self.max_feed_staleness,
            policy: self.policy,
            skew: self.skew,
            now: self.now,
            cache: Mutex::new(HashMap::new()),
            proofs: Mutex::new(crate::dpop::ReplayCache::new(self.dpop_replay_capacity)),
            resource_url: self.resource_url,
        });
        runtime.spawn(refresh_keys_on_schedule(Arc::downgrade(&verifier)));
        Ok(verifier)
    }
}

/// The most verified tokens remembered (a token seen again costs a lookup, not a signature
/// check; revocation still applies to it).
const CACHE_LIMIT: usize = 10_000;
/// The least time between two JWKS fetches for unknown `kid`s.
const JWKS_REFETCH_EVERY: Duration = Duration::from_secs(10);

/// How often the keys are refetched on schedule, so a key published ahead of its use is
/// known before the first token it signs arrives.
const JWKS_REFRESH_EVERY: Duration = Duration::from_secs(300);

/// Refetches the keys every [`JWKS_REFRESH_EVERY`] while the verifier lives.
async fn refresh_keys_on_schedule(verifier: std::sync::Weak<Verifier>) {
    loop {
        tokio::time::sleep(JWKS_REFRESH_EVERY).await;
        let Some(v) = verifier.upgrade() else { return };
        match jwks::fetch(&v.http, &v.jwks_url).await {
            Ok(keys) => *v.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = keys,
            Err(e) => tracing::warn!(error = %e, "scheduled JWKS refresh failed"),
        }
    }
}

/// Verifies access tokens.
pub struct Verifier {
    issuer: String,
    audience: String,
    jwks_url: String,
    http: reqwest::Client,
    keys: RwLock<KeySet>,
    last_jwks_fetch: Mutex<Instant>,
    revocations: Arc<RwLock<Revocations>>,
    revocation: RevocationCheck,
    max_feed_staleness: Duration,
    policy: FeedPolicy,
    skew: i64,
    pub(crate) now: TimeFn,
    cache: Mutex<HashMap<String, Verified>>,
    /// DPoP proofs seen (see `dpop.rs`).
    pub(crate) proofs: Mutex<crate::dpop::ReplayCache>,
    /// Where clients reach this API, for the proofs' `htu`.
    pub(crate) resource_url: ResourceUrl,
}

/// Where a DPoP proof's `htu` must point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResourceUrl {
    /// Not configured: DPoP is refused (a bound token then cannot be used here).
    Unset,
    /// [`VerifierBuilder::resource_url`].
    Configured(String),
    /// [`VerifierBuilder::insecure_htu_from_host`].
    InsecureFromHost,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Verifier {
    /// Starts building a verifier for tokens from `issuer`. Call
    /// [`VerifierBuilder::feed_credentials`] (or, knowingly,
    /// [`VerifierBuilder::insecure_without_revocation`]) before
    /// [`VerifierBuilder::build`].
    pub fn builder(issuer: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder {
            issuer: issuer.into(),
            endpoint: None,
            audience: None,
            feed: None,
            waiver: RevocationWaiver::NotWaived,
            poll_every: Duration::from_millis(500),
            use_stream: true,
            max_feed_staleness: Duration::from_secs(30),
            policy: FeedPolicy::FailClosed,
            skew: 30,
            http: None,
            initial_jwks: None,
            now: Arc::new(system_time),
            dpop_replay_capacity: crate::dpop::DEFAULT_REPLAY_CAPACITY,
            resource_url: ResourceUrl::Unset,
        }
    }

    /// Verifies a token that came as `Authorization: Bearer`: signature and claims (or the
    /// cache), then the revocation state. A DPoP-bound token is refused
    /// ([`TokenErrorReason::DpopRequired`]): without its proof it proves nothing; see
    /// [`Self::verify_dpop`].
    ///
    /// # Errors
    /// The reason of SPEC 5.5, or [`VerifyError::FeedUnavailable`].
    pub async fn verify(&self, token: &str) -> Result<Verified, VerifyError> {
        let verified = self.verify_token(token).await?;
        if verified.claims.cnf.is_some() {
            return Err(VerifyError::Invalid(TokenErrorReason::DpopRequired));
        }
        Ok(verified)
    }

    /// Signature, claims and revocation, whatever the token is bound to.
    pub(crate) async fn verify_token(&self, token: &str) -> Result<Verified, VerifyError> {
        if token.len() > MAX_ACCESS_TOKEN_LEN {
            return Err(VerifyError::Invalid(TokenErrorReason::Malformed));
        }
        let now = unix_secs((self.now)());
        let cached = lock(&self.cache).get(token).cloned();
        let verified = match cached {
            // A cached token skips only the signature: its claims are judged again against
            // the clock of this call.
            Some(v) => {
                v.claims.check(&self.claims_check(now)).map_err(VerifyError::Invalid)?;
                v
            }
            None => {
                let v = self.check_signature_and_claims(token, now).await?;
                let mut cache = lock(&self.cache);
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
                cache.insert(token.to_owned(), v.clone());
                v
            }
        };
        self.check_revocation(&verified)?;
        Ok(verified)
    }

    async fn check_signature_and_claims(&self, token: &str, now: i64) -> Result<Verified, VerifyError> {
        let invalid = VerifyError::Invalid;
        let header = decode_header(token).map_err(|_| invalid(TokenErrorReason::Malformed))?;
        if !is_access_token_typ(header.typ.as_deref()) {
            return Err(invalid(TokenErrorReason::Malformed));
        }
        // `jku`, `x5u` and an embedded `jwk` are ignored: keys come only from our JWKS.
        let kid = header.kid.as_deref().ok_or(invalid(TokenErrorReason::UnknownKey))?;
        let key = match self.key(kid) {
            Some(k) => k,
            None => {
                self.refetch_keys().await;
                self.key(kid).ok_or(invalid(TokenErrorReason::UnknownKey))?
            }
        };
        if header.alg != key.alg {
            return Err(invalid(TokenErrorReason::BadSignature));
        }
        let mut validation = Validation::new(key.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = decode::<AccessTokenClaims>(token, &key.decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => invalid(TokenErrorReason::BadSignature),
                _ => invalid(TokenErrorReason::Malformed),
            })?
            .claims;
        claims.check(&self.claims_check(now)).map_err(invalid)?;
        Ok(Verified { claims })
    }

    fn claims_check(&self, now: i64) -> ClaimsCheck<'_> {
        ClaimsCheck {
            issuer: &self.issuer,
            audience: &self.audience,
            now,
            skew: self.skew,
            allow_expired: false,
        }
    }

    fn key(&self, kid: &str) -> Option<Arc<jwks::Key>> {
        self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner).0.get(kid).cloned()
    }

    /// Fetches the JWKS again, at most once per [`JWKS_REFETCH_EVERY`].
    async fn refetch_keys(&self) {
        {
            let mut last = lock(&self.last_jwks_fetch);
            if last.elapsed() < JWKS_REFETCH_EVERY {
                return;
            }
            *last = Instant::now();
        }
        match jwks::fetch(&self.http, &self.jwks_url).await {
            Ok(keys) => *self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = keys,
            Err(e) => tracing::warn!(error = %e, "could not refresh the JWKS"),
        }
    }

    fn check_revocation(&self, v: &Verified) -> Result<(), VerifyError> {
        match self.revocation {
            RevocationCheck::Feed => {}
            RevocationCheck::InsecureNone => return Ok(()),
        }
        let state = feed::read(&self.revocations);
        let is_fresh =
            state.is_streaming || state.last_ok.is_some_and(|t| t.elapsed() <= self.max_feed_staleness);
        if !is_fresh && self.policy == FeedPolicy::FailClosed {
            return Err(VerifyError::FeedUnavailable);
        }
        let c = &v.claims;
        if c.sid.as_deref().is_some_and(|sid| state.is_session_revoked(sid)) || state.is_token_revoked(&c.jti)
        {
            return Err(VerifyError::Invalid(TokenErrorReason::Revoked));
        }
        if state.latest_authz_ver(&c.sub).is_some_and(|latest| c.authz_ver < latest) {
            return Err(VerifyError::Invalid(TokenErrorReason::ClaimsStale));
        }
        Ok(())
    }
}
