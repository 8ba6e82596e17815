//! RP-initiated logout (SPEC 13; OpenID Connect RP-Initiated Logout 1.0 §2–§3): checking
//! an end-session request (`id_token_hint`, `client_id`, `post_logout_redirect_uri`,
//! `state`), deciding whether the user must confirm, and ending the browser session with
//! every app session created under it.
//!
//! Rules: a hint must be an ID token this server signed for the client (an expired one is
//! fine: it still names the session, §2); a `post_logout_redirect_uri` must match one the
//! client registered exactly, and needs the client to be known (from the hint or
//! `client_id`), or nothing is redirected anywhere; the user is asked unless the hint
//! names an app session of the browser's own session, so a link on another site cannot
//! sign anyone out silently; and a hint ends another session only for the user signed in
//! here (a leaked ID token is no way to sign its user out). The page handler renders;
//! nothing here knows HTTP.

use latchkey_proto::ErrorReason;
use serde::Deserialize;

use crate::caller::Caller;
use crate::ids::{ClientId, SessionId, UserId};
use crate::service::Latchkey;
use crate::store::{ClientRecord, RevocationTarget, StoreError};
use crate::web::SignedIn;

/// The longest `id_token_hint` looked at (an ID token is well under 2 KiB).
const MAX_HINT_LEN: usize = 8 * 1024;
/// The longest `state` carried back.
const MAX_STATE_LEN: usize = 2 * 1024;

/// An end-session request's parameters, as sent (query or form).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndSessionParams {
    /// An ID token the app holds.
    pub id_token_hint: Option<String>,
    /// The app, when it sends no hint.
    pub client_id: Option<String>,
    /// Where to send the browser afterwards (registered exactly).
    pub post_logout_redirect_uri: Option<String>,
    /// Carried back to the app on the redirect.
    pub state: Option<String>,
}

impl EndSessionParams {
    /// The parameters as `(name, value)` pairs, for the confirmation form's hidden fields.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("id_token_hint", &self.id_token_hint),
            ("client_id", &self.client_id),
            ("post_logout_redirect_uri", &self.post_logout_redirect_uri),
            ("state", &self.state),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

/// Why an end-session request is refused (shown on an error page; never redirected).
#[derive(Debug, thiserror::Error)]
pub enum EndSessionError {
    /// The hint is not an ID token of this server.
    #[error("the id_token_hint is not an ID token issued here")]
    InvalidHint,
    /// `client_id` names no client.
    #[error("unknown client")]
    UnknownClient,
    /// `client_id` and the hint's audience differ.
    #[error("client_id does not match the id_token_hint")]
    ClientMismatch,
    /// A redirect without a client to check it against.
    #[error("post_logout_redirect_uri needs an id_token_hint or a client_id")]
    RedirectWithoutClient,
    /// A redirect the client did not register.
    #[error("post_logout_redirect_uri is not registered for this client")]
    UnregisteredRedirect,
    /// A parameter too long to be real.
    #[error("a parameter is too long")]
    TooLong,
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The session an `id_token_hint` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintedSession {
    /// `sid`.
    pub session_id: SessionId,
    /// `sub`.
    pub user_id: UserId,
}

/// A checked end-session request.
#[derive(Debug, Clone)]
pub struct EndSession {
    /// The parameters as sent (echoed by the confirmation form).
    pub params: EndSessionParams,
    /// The app asking, when known.
    pub client: Option<ClientRecord>,
    /// Where to send the browser afterwards: the registered URI with `state` added.
    pub redirect: Option<String>,
    /// The session the hint names.
    pub hinted: Option<HintedSession>,
}

/// What an ID token hint must carry.
#[derive(Deserialize)]
struct HintClaims {
    iss: String,
    sub: String,
    aud: String,
    sid: String,
}

/// `uri` with `state` appended to its query, the rest of it exactly as registered
/// (registered URIs carry no fragment).
fn with_state(uri: &str, state: Option<&str>) -> String {
    match state {
        Some(state) => {
            let sep = if uri.contains('?') { '&' } else { '?' };
            format!("{uri}{sep}state={}", super::form_encode(state))
        }
        None => uri.to_owned(),
    }
}

impl Latchkey {
    /// Verifies an ID token hint: this server's signature with a key it still publishes,
    /// `typ` JWT (never an access token), this issuer. Expiry does not matter.
    fn verify_id_token_hint(&self, hint: &str) -> Result<HintClaims, EndSessionError> {
        let (_, claims) = self
            .keys
            .current()
            .verify_jwt::<HintClaims>(hint, |typ| typ == Some("JWT"))
            .map_err(|_| EndSessionError::InvalidHint)?;
        if claims.iss != self.settings.issuer {
            return Err(EndSessionError::InvalidHint);
        }
        Ok(claims)
    }

    /// Checks an end-session request (§2, §3).
    ///
    /// # Errors
    /// [`EndSessionError`]: the request is shown an error page, never redirected.
    pub async fn check_end_session(&self, params: EndSessionParams) -> Result<EndSession, EndSessionError> {
        let too_long = params.id_token_hint.as_ref().is_some_and(|h| h.len() > MAX_HINT_LEN)
            || params.state.as_ref().is_some_and(|s| s.len() > MAX_STATE_LEN)
            || [&params.client_id, &params.post_logout_redirect_uri]
                .into_iter()
                .any(|v| v.as_ref().is_some_and(|v| v.len() > MAX_HINT_LEN));
        if too_long {
            return Err(EndSessionError::TooLong);
        }
        let hint = params.id_token_hint.as_deref().map(|h| self.verify_id_token_hint(h)).transpose()?;
        let client_id = match (&hint, params.client_id.as_deref()) {
            (Some(h), Some(id)) if h.aud != id => return Err(EndSessionError::ClientMismatch),
            (Some(h), _) => Some(ClientId::from(h.aud.as_str())),
            (None, Some(id)) => Some(ClientId::from(id)),
            (None, None) => None,
        };
        let client = match &client_id {
            Some(id) => {
                let found = self.store.find_client(id).await?;
                // A hint's app may have been removed since; a named one must exist.
                if found.is_none() && hint.is_none() {
                    return Err(EndSessionError::UnknownClient);
                }
                found
            }
            None => None,
        };
        let redirect = match params.post_logout_redirect_uri.as_deref() {
            None => None,
            Some(uri) => {
                let client = client.as_ref().ok_or(EndSessionError::RedirectWithoutClient)?;
                if !client.post_logout_redirect_uris.iter().any(|r| r.as_str() == uri) {
                    return Err(EndSessionError::UnregisteredRedirect);
                }
                Some(with_state(uri, params.state.as_deref()))
            }
        };
        let hinted = hint.map(|h| HintedSession { session_id: h.sid.into(), user_id: h.sub.into() });
        Ok(EndSession { params, client, redirect, hinted })
    }

    /// Whether the user must confirm: not when the hint names the browser's own session
    /// or an app session created under it, for the same user, and not when this browser
    /// has no session (there is nothing it could end); otherwise yes.
    ///
    /// # Errors
    /// Storage.
    pub async fn end_session_needs_confirmation(
        &self,
        req: &EndSession,
        browser: Option<&SignedIn>,
    ) -> Result<bool, StoreError> {
        let Some(b) = browser else { return Ok(false) };
        let hinted = match &req.hinted {
            Some(h) => self.store.find_session(&h.session_id).await?.filter(|s| s.user_id == h.user_id),
            None => None,
        };
        Ok(!hinted.is_some_and(|s| {
            s.user_id == b.user().id
                && (s.id == b.session().id || s.browser_session_id.as_ref() == Some(&b.session().id))
        }))
    }

    /// Ends the browser's session and every app session created under it, and the session
    /// the hint names when it is the signed-in user's (a hint alone, from another browser
    /// or another user, ends nothing: an ID token is not a credential). Each with its feed
    /// event and back-channel logout tokens. Returns how many sessions ended.
    ///
    /// # Errors
    /// Storage.
    pub async fn end_session(
        &self,
        req: &EndSession,
        browser: Option<&SignedIn>,
        ctx: &Caller,
    ) -> Result<usize, StoreError> {
        let Some(b) = browser else { return Ok(0) };
        let (user, session) = (&b.user().id, &b.session().id);
        let target = RevocationTarget::BrowserSession { id: session.clone(), user_id: user.clone() };
        let mut ended =
            self.revoke(target, ErrorReason::LoggedOut, Some(user), Some(session), ctx).await?.len();
        if let Some(h) = req.hinted.as_ref().filter(|h| &h.user_id == user) {
            let target =
                RevocationTarget::Session { id: h.session_id.clone(), user_id: Some(h.user_id.clone()) };
            ended += self
                .revoke(target, ErrorReason::LoggedOut, Some(user), Some(&h.session_id), ctx)
                .await?
                .len();
        }
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_appended_to_the_registered_uri() {
        assert_eq!(
            with_state("https://app.example/bye", Some("a b&c")),
            "https://app.example/bye?state=a+b%26c"
        );
        assert_eq!(
            with_state("https://app.example/bye?x=1", Some("s")),
            "https://app.example/bye?x=1&state=s"
        );
        assert_eq!(with_state("https://app.example/bye", None), "https://app.example/bye");
        assert_eq!(
            with_state("https://app.example", Some("s")),
            "https://app.example?state=s",
            "as registered"
        );
    }
}
