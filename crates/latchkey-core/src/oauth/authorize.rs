//! `GET/POST /oauth/authorize` (RFC 6749 §4.1, RFC 7636, OpenID Connect Core §3.1.2): the
//! request is checked in the order that decides where errors go (an unknown client or a
//! redirect URI that is not registered exactly gets an error page, never a redirect; every
//! later error is redirected with `state`), then the user's sign-in and remembered consent
//! decide the next step: the sign-in page, the consent page, or straight back with a code.

use latchkey_proto::ErrorCode;

use super::{CODE_TTL, OFFLINE_ACCESS, RedirectError, describe_scope, redirect_with};
use crate::clock::Timestamp;
use crate::crypto::{TokenHash, b64, random_bytes};
use crate::ids::{ClientId, RedirectUri, Scope};
use crate::mfa::AcrLevel;
use crate::service::Latchkey;
use crate::store::{AuthCodeRecord, ClientRecord, SessionRecord, StoreError};
use crate::web::SignedIn;

/// The longest `state` or `nonce` accepted.
const MAX_ECHOED_LEN: usize = 1024;

/// The parameters of an authorization request, as received (query or form).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizeParams {
    /// `client_id`.
    pub client_id: Option<String>,
    /// `redirect_uri`.
    pub redirect_uri: Option<String>,
    /// `response_type`.
    pub response_type: Option<String>,
    /// `scope`.
    pub scope: Option<String>,
    /// `state`.
    pub state: Option<String>,
    /// `nonce`.
    pub nonce: Option<String>,
    /// `code_challenge`.
    pub code_challenge: Option<String>,
    /// `code_challenge_method`.
    pub code_challenge_method: Option<String>,
    /// `prompt`.
    pub prompt: Option<String>,
    /// `max_age`.
    pub max_age: Option<String>,
    /// `acr_values`.
    pub acr_values: Option<String>,
    /// `dpop_jkt` (RFC 9449 §10): the thumbprint of the DPoP key the code must be redeemed
    /// with.
    pub dpop_jkt: Option<String>,
    /// `request_uri` (RFC 9126): a pushed request stands for every other parameter.
    pub request_uri: Option<String>,
    /// Every `resource` (RFC 8707; the one parameter that may repeat).
    pub resources: Vec<String>,
    /// `request`, a request object (OpenID Connect Core §6): not supported, so refused
    /// rather than ignored (an app must not believe its signed parameters were used).
    pub request: Option<String>,
    /// Names given more than once (RFC 6749 §3.1: an error).
    pub repeated: Vec<String>,
}

impl AuthorizeParams {
    /// Collects the parameters Latchkey reads; others are ignored (RFC 6749 §3.1).
    pub fn from_pairs<K: AsRef<str>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut p = Self::default();
        for (k, v) in pairs {
            let k = k.as_ref();
            if k == "resource" {
                p.resources.push(v.into());
                continue;
            }
            let slot = match k {
                "client_id" => &mut p.client_id,
                "request_uri" => &mut p.request_uri,
                "request" => &mut p.request,
                "redirect_uri" => &mut p.redirect_uri,
                "response_type" => &mut p.response_type,
                "scope" => &mut p.scope,
                "state" => &mut p.state,
                "nonce" => &mut p.nonce,
                "code_challenge" => &mut p.code_challenge,
                "code_challenge_method" => &mut p.code_challenge_method,
                "prompt" => &mut p.prompt,
                "max_age" => &mut p.max_age,
                "acr_values" => &mut p.acr_values,
                "dpop_jkt" => &mut p.dpop_jkt,
                _ => continue,
            };
            if slot.is_some() {
                p.repeated.push(k.to_owned());
            } else {
                *slot = Some(v.into());
            }
        }
        p
    }

    /// The parameters as pairs (for the consent form and the way back from sign-in),
    /// leaving out `prompt=login`, `max_age` and `acr_values` when `after_sign_in`: the
    /// fresh sign-in honoured them (kept, a slow way back could send the browser round
    /// again), and the ID token's `auth_time` and `acr` tell the app what it reached. The
    /// front channel cannot stop a browser from leaving them out itself: the app checks
    /// those claims.
    ///
    /// A pushed request (RFC 9126) is carried as `client_id` and `request_uri` alone.
    pub fn to_pairs(&self, after_sign_in: bool) -> Vec<(String, String)> {
        let prompt = self.prompt.as_deref().map(|p| {
            if after_sign_in {
                p.split_whitespace().filter(|v| *v != "login").collect::<Vec<_>>().join(" ")
            } else {
                p.to_owned()
            }
        });
        if self.request_uri.is_some() {
            return [("client_id", &self.client_id), ("request_uri", &self.request_uri)]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), v.clone())))
                .collect();
        }
        [
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("response_type", &self.response_type),
            ("scope", &self.scope),
            ("state", &self.state),
            ("nonce", &self.nonce),
            ("code_challenge", &self.code_challenge),
            ("code_challenge_method", &self.code_challenge_method),
            ("prompt", &prompt.filter(|p| !p.is_empty())),
            ("max_age", &self.max_age.clone().filter(|_| !after_sign_in)),
            ("acr_values", &self.acr_values.clone().filter(|_| !after_sign_in)),
            ("dpop_jkt", &self.dpop_jkt),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), v.clone())))
        .chain(self.resources.iter().map(|r| ("resource".to_owned(), r.clone())))
        .collect()
    }
}

/// The `prompt` values Latchkey honours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prompt {
    /// Show no page: fail with `login_required` / `consent_required` instead.
    pub none: bool,
    /// Ask for the password again.
    pub login: bool,
    /// Ask for consent again.
    pub consent: bool,
}

/// A checked authorization request.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    /// The client.
    pub client: ClientRecord,
    /// The registered redirect URI it named.
    pub redirect_uri: RedirectUri,
    /// The requested scopes, in order, without duplicates.
    pub scopes: Scope,
    /// `state`.
    pub state: Option<String>,
    /// `nonce`.
    pub nonce: Option<String>,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// `prompt`.
    pub prompt: Prompt,
    /// `max_age` in seconds.
    pub max_age: Option<i64>,
    /// The lowest level among the `acr_values` Latchkey knows (OpenID Connect Core
    /// §3.1.2.1: any of them satisfies the app); `None` when it asked for none of them.
    pub min_acr: Option<AcrLevel>,
    /// The DPoP key the code is bound to (`dpop_jkt`).
    pub dpop_jkt: Option<crate::dpop::Thumbprint>,
    /// The resources asked for (RFC 8707), each registered for the client.
    pub resources: Vec<String>,
    /// When the request was pushed (RFC 9126), if it was: a sign-in since meets its
    /// `prompt=login`.
    pub pushed_at: Option<Timestamp>,
    /// The parameters as received.
    pub params: AuthorizeParams,
}

/// A scope in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeInfo {
    /// The scope.
    pub name: String,
    /// What it lets the app do.
    pub description: String,
}

/// What happens next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeStep {
    /// Show the sign-in page.
    Login,
    /// Show the consent page for these scopes.
    Consent {
        /// Everything the app asks for.
        scopes: Vec<ScopeInfo>,
    },
    /// Redirect the browser here (a code, or an error).
    Redirect(String),
}

/// The consent form's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentOutcome {
    /// Redirect the browser here (a code, or `access_denied`).
    Redirect(String),
    /// The session falls short of the request: sign in again first.
    SignInAgain,
}

/// Why an authorization request cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: an error page, never a redirect.
    #[error("{title}: {message}")]
    Page {
        /// A title.
        title: &'static str,
        /// What is wrong.
        message: &'static str,
    },
    /// An error for the client, sent to its redirect URI.
    #[error("{}", .0.description)]
    Redirect(RedirectError),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn page(title: &'static str, message: &'static str) -> AuthorizeError {
    AuthorizeError::Page { title, message }
}

/// Whether `s` is a well-formed S256 challenge: 43 base64url characters (32 bytes).
fn is_s256_challenge(s: &str) -> bool {
    s.len() == 43 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Latchkey {
    /// Checks an authorization request from the browser whose CSRF cookie is `browser`
    /// (a pushed request is bound to the first browser that opens it).
    ///
    /// # Errors
    /// [`AuthorizeError::Page`] for an unknown client or redirect URI, or a pushed request
    /// that is unknown, expired, spent or another browser's; [`AuthorizeError::Redirect`]
    /// for the rest.
    pub async fn check_authorize(
        &self,
        params: AuthorizeParams,
        browser: &str,
    ) -> Result<AuthorizeRequest, AuthorizeError> {
        if params.request_uri.is_none() {
            return self.check_authorize_params(params, false).await;
        }
        let (params, pushed_at) = self.resolve_pushed_request(params, browser).await?;
        let mut req = self.check_authorize_params(params, true).await?;
        req.pushed_at = Some(pushed_at);
        Ok(req)
    }

    /// The checks of [`Latchkey::check_authorize`] on the parameters themselves; `pushed`
    /// says they came from a pushed request (which a `require_par` client needs).
    pub(super) async fn check_authorize_params(
        &self,
        params: AuthorizeParams,
        pushed: bool,
    ) -> Result<AuthorizeRequest, AuthorizeError> {
        let repeated = |name: &str| params.repeated.iter().any(|r| r == name);
        if repeated("client_id") || repeated("redirect_uri") {
            return Err(page("Invalid request", "The client_id and redirect_uri may be given only once."));
        }
        let client_id = params.client_id.as_deref().filter(|c| !c.is_empty());
        let client_id = client_id.ok_or_else(|| page("Invalid request", "The request names no client."))?;
        let client = self
            .store
            .find_client(&ClientId::from(client_id))
            .await?
            .ok_or_else(|| page("Unknown app", "No app with this client_id is registered here."))?;
        let redirect_uri = params
            .redirect_uri
            .clone()
            .map(RedirectUri::from)
            .ok_or_else(|| page("Invalid request", "The request has no redirect_uri."))?;
        if !client.redirect_uris.contains(&redirect_uri) {
            return Err(page(
                "Invalid redirect URI",
                "The redirect_uri is not registered for this app, so Latchkey will not send you there.",
            ));
        }
        if client.require_par && !pushed {
            return Err(page(
                "Invalid request",
                "This app must push its authorization requests first (POST /oauth/par).",
            ));
        }
        let fail = |error: ErrorCode, description: &'static str| {
            AuthorizeError::Redirect(RedirectError {
                redirect_uri: redirect_uri.clone(),
                state: params.state.clone().filter(|s| s.len() <= MAX_ECHOED_LEN),
                error,
                description,
                reason: None,
            })
        };
        if !params.repeated.is_empty() {
            return Err(fail(ErrorCode::InvalidRequest, "A parameter was given more than once."));
        }
        if params.request.is_some() {
            return Err(fail(
                ErrorCode::RequestNotSupported,
                "Request objects are not supported; push the request (PAR) instead.",
            ));
        }
        match params.response_type.as_deref() {
            None => return Err(fail(ErrorCode::InvalidRequest, "response_type is required.")),
            Some("code") => {}
            Some(_) => {
                return Err(fail(
                    ErrorCode::UnsupportedResponseType,
                    "Only response_type=code is supported.",
                ));
            }
        }
        if !client.grant_types.iter().any(|g| g == "authorization_code") {
            return Err(fail(
                ErrorCode::UnauthorizedClient,
                "This app may not use the authorization code flow.",
            ));
        }
        let echoed_too_long = [&params.state, &params.nonce]
            .iter()
            .any(|v| v.as_ref().is_some_and(|v| v.len() > MAX_ECHOED_LEN));
        if echoed_too_long {
            return Err(fail(ErrorCode::InvalidRequest, "state and nonce may be at most 1024 characters."));
        }
        let may_refresh = client.grant_types.iter().any(|g| g == "refresh_token");
        let mut scopes: Vec<&str> = Vec::new();
        let scopes = match params.scope.as_deref() {
            Some(s) if !s.trim().is_empty() => {
                for scope in s.split(' ').filter(|s| !s.is_empty()) {
                    let allowed = client.scopes.contains(scope) || (scope == OFFLINE_ACCESS && may_refresh);
                    if !allowed {
                        return Err(fail(
                            ErrorCode::InvalidScope,
                            "The app asked for a scope it is not allowed.",
                        ));
                    }
                    if !scopes.contains(&scope) {
                        scopes.push(scope);
                    }
                }
                Scope::from_names(scopes)
            }
            // No scope: the client's registered scopes (RFC 6749 §3.3).
            _ => client.scopes.clone(),
        };
        let code_challenge = params.code_challenge.clone().ok_or_else(|| {
            fail(ErrorCode::InvalidRequest, "PKCE is required: send code_challenge (S256).")
        })?;
        if params.code_challenge_method.as_deref() != Some("S256") {
            return Err(fail(ErrorCode::InvalidRequest, "code_challenge_method must be S256."));
        }
        if !is_s256_challenge(&code_challenge) {
            return Err(fail(ErrorCode::InvalidRequest, "code_challenge must be 43 base64url characters."));
        }
        let mut prompt = Prompt::default();
        for value in params.prompt.as_deref().unwrap_or_default().split(' ') {
            match value {
                "none" => prompt.none = true,
                "login" => prompt.login = true,
                "consent" => prompt.consent = true,
                _ => {} // select_account and unknown values: nothing to do
            }
        }
        if prompt.none && (prompt.login || prompt.consent) {
            return Err(fail(ErrorCode::InvalidRequest, "prompt=none cannot be combined with other values."));
        }
        let max_age =
            match params.max_age.as_deref() {
                None => None,
                Some(v) => Some(v.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
                    fail(ErrorCode::InvalidRequest, "max_age must be a number of seconds.")
                })?),
            };
        let min_acr =
            params.acr_values.as_deref().unwrap_or_default().split(' ').filter_map(AcrLevel::parse).min();
        let dpop_jkt = match params.dpop_jkt.as_deref() {
            None => None,
            Some(j) => Some(crate::dpop::Thumbprint::parse(j).ok_or_else(|| {
                fail(ErrorCode::InvalidRequest, "dpop_jkt must be a JWK SHA-256 thumbprint (RFC 7638).")
            })?),
        };
        if params.resources.iter().any(|r| !client.resources.contains(r)) {
            return Err(fail(
                ErrorCode::InvalidTarget,
                "The app asked for a resource it is not registered for.",
            ));
        }
        let mut resources = params.resources.clone();
        resources.sort();
        resources.dedup();
        Ok(AuthorizeRequest {
            pushed_at: None,
            resources,
            client,
            redirect_uri,
            scopes,
            state: params.state.clone(),
            nonce: params.nonce.clone(),
            code_challenge,
            prompt,
            max_age,
            min_acr,
            dpop_jkt,
            params,
        })
    }

    fn redirect_error(
        req: &AuthorizeRequest,
        error: ErrorCode,
        description: &'static str,
        reason: Option<&'static str>,
    ) -> RedirectError {
        RedirectError {
            redirect_uri: req.redirect_uri.clone(),
            state: req.state.clone(),
            error,
            description,
            reason,
        }
    }

    /// The next step of a checked request for whoever is signed in on this browser.
    ///
    /// # Errors
    /// `login_required` / `consent_required` under `prompt=none`; storage.
    pub async fn authorize_step(
        &self,
        req: &AuthorizeRequest,
        signed_in: Option<&SignedIn>,
    ) -> Result<AuthorizeStep, AuthorizeError> {
        let now = self.clock.now();
        let signed_in = match signed_in {
            Some(pair)
                if !Self::wants_login(req, pair.session())
                    && !Self::falls_short(req, pair.session(), now) =>
            {
                pair
            }
            _ if req.prompt.none => {
                return Err(AuthorizeError::Redirect(Self::redirect_error(
                    req,
                    ErrorCode::LoginRequired,
                    "The user is not signed in.",
                    None,
                )));
            }
            _ => return Ok(AuthorizeStep::Login),
        };
        // No consent is not an empty one: an app that asks for no scope is still asked for
        // once (it gets the user's identity and a session the user can see and end).
        let granted = self.store.find_consent(&signed_in.user().id, &req.client.client_id).await?;
        let is_covered = granted.is_some_and(|g| g.covers(&req.scopes));
        if is_covered && !req.prompt.consent {
            return Ok(AuthorizeStep::Redirect(self.issue_code(req, signed_in, now).await?));
        }
        if req.prompt.none {
            return Err(AuthorizeError::Redirect(Self::redirect_error(
                req,
                ErrorCode::ConsentRequired,
                "The user has not allowed this app yet.",
                None,
            )));
        }
        let scopes = req
            .scopes
            .names()
            .map(|s| ScopeInfo { name: s.to_owned(), description: describe_scope(s) })
            .collect();
        Ok(AuthorizeStep::Consent { scopes })
    }

    /// Whether `prompt=login` still asks for a sign-in: for a pushed request, one since it
    /// was pushed meets it (the browser cannot drop a pushed `prompt`); otherwise the way
    /// back from sign-in carries the request without it.
    fn wants_login(req: &AuthorizeRequest, session: &SessionRecord) -> bool {
        req.prompt.login && req.pushed_at.is_none_or(|pushed| session.created_at < pushed)
    }

    /// Whether a session falls short of what the request asks besides `prompt=login`:
    /// older than `max_age`, or below the lowest `acr_values` level (step-up).
    fn falls_short(req: &AuthorizeRequest, session: &SessionRecord, now: Timestamp) -> bool {
        let too_old = req.max_age.is_some_and(|max| now.seconds_since(session.created_at) > max);
        let too_weak = req.min_acr.is_some_and(|min| AcrLevel::of(&session.amr) < min);
        too_old || too_weak
    }

    /// The user's answer on the consent page: Allow remembers the consent and returns with
    /// a code; Deny returns with `access_denied` and `error_reason=user_denied`. A session
    /// that falls short of the request (the form can be posted with any parameters) is
    /// sent to sign in again, as the authorization request itself would be.
    ///
    /// # Errors
    /// Storage.
    pub async fn decide_consent(
        &self,
        req: &AuthorizeRequest,
        signed_in: &SignedIn,
        allow: bool,
    ) -> Result<ConsentOutcome, AuthorizeError> {
        if Self::wants_login(req, signed_in.session())
            || Self::falls_short(req, signed_in.session(), self.clock.now())
        {
            return Ok(ConsentOutcome::SignInAgain);
        }
        if !allow {
            let denied = Self::redirect_error(
                req,
                ErrorCode::AccessDenied,
                "The user denied your request",
                Some("user_denied"),
            );
            return Ok(ConsentOutcome::Redirect(denied.url(&self.settings.issuer)));
        }
        let now = self.clock.now();
        let user = signed_in.user();
        let granted = self
            .store
            .find_consent(&user.id, &req.client.client_id)
            .await?
            .unwrap_or_default()
            .union(&req.scopes);
        self.store.save_consent(&user.id, &req.client.client_id, &granted, now).await?;
        Ok(ConsentOutcome::Redirect(self.issue_code(req, signed_in, now).await?))
    }

    async fn issue_code(
        &self,
        req: &AuthorizeRequest,
        signed_in: &SignedIn,
        now: Timestamp,
    ) -> Result<String, AuthorizeError> {
        let code = format!("lkc_{}", b64(&random_bytes::<32>()));
        let record = AuthCodeRecord {
            hash: TokenHash::of(&code),
            client_id: req.client.client_id.clone(),
            user_id: signed_in.user().id.clone(),
            redirect_uri: req.redirect_uri.clone(),
            scope: req.scopes.clone(),
            nonce: req.nonce.clone(),
            code_challenge: req.code_challenge.clone(),
            auth_time: signed_in.session().created_at,
            created_at: now,
            expires_at: now.plus(CODE_TTL),
            used_at: None,
            session_id: None,
            browser_session_id: Some(signed_in.session().id.clone()),
            dpop_jkt: req.dpop_jkt.clone(),
            resources: req.resources.clone(),
        };
        if let Some(uri) = &req.params.request_uri
            && !self.store.spend_pushed_request(&TokenHash::of(uri), now).await?
        {
            return Err(page(
                "Request already used",
                "This sign-in request was used already. Start again from the app.",
            ));
        }
        self.store.insert_auth_code(&record).await?;
        let mut params = vec![("code", code.as_str())];
        if let Some(s) = &req.state {
            params.push(("state", s));
        }
        params.push(("iss", &self.settings.issuer));
        Ok(redirect_with(req.redirect_uri.as_str(), &params))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_noticed() {
        let p = AuthorizeParams::from_pairs([
            ("client_id", "a"),
            ("scope", "openid"),
            ("scope", "profile"),
            ("x", "y"),
        ]);
        assert_eq!(p.client_id.as_deref(), Some("a"));
        assert_eq!(p.scope.as_deref(), Some("openid"));
        assert_eq!(p.repeated, vec!["scope".to_owned()]);
    }

    #[test]
    fn the_way_back_from_sign_in_drops_prompt_login_max_age_and_acr_values_only() {
        let p = AuthorizeParams::from_pairs([
            ("client_id", "a"),
            ("prompt", "login consent"),
            ("acr_values", "urn:latchkey:acr:mfa"),
        ]);
        assert_eq!(
            p.to_pairs(true),
            vec![("client_id".to_owned(), "a".to_owned()), ("prompt".to_owned(), "consent".to_owned())]
        );
        let only_login = AuthorizeParams::from_pairs([("prompt", "login")]);
        assert!(only_login.to_pairs(true).is_empty());
        assert_eq!(only_login.to_pairs(false).len(), 1);
        assert_eq!(p.to_pairs(false).len(), 3, "the consent form keeps acr_values");
        let aged = AuthorizeParams::from_pairs([("max_age", "0")]);
        assert!(aged.to_pairs(true).is_empty(), "a slow way back must not loop");
    }

    #[test]
    fn s256_challenges_have_one_shape() {
        assert!(is_s256_challenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(!is_s256_challenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c"));
        assert!(!is_s256_challenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM"));
    }
}
