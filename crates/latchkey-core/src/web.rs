//! Browser sign-in for the pages (SPEC 5.3): the sign-in form opens a session (listed
//! among the user's devices) reached through an opaque cookie whose hash is stored; the
//! account page lists devices and connected apps and revokes them.

use latchkey_proto::ErrorReason;
use latchkey_proto::auth::Credentials;

use crate::caller::Caller;
use crate::clock::Timestamp;
use crate::crypto::{TokenHash, b64, random_bytes};
use crate::ids::{ClientId, Scope, SessionId};
use crate::login::{FIRST_PARTY_CLIENT_ID, FIRST_PARTY_SCOPE, LoginError, SessionLifetimes};
use crate::service::Latchkey;
use crate::store::{
    ClientRecord, RevocationTarget, SessionRecord, StoreError, Touch, UserRecord, UserStatus,
};

/// The prefix of browser session cookies.
pub const COOKIE_PREFIX: &str = "lkw_";

/// A signed-in browser: its session (alive) and user (active). Proof that the cookie was
/// checked: its fields are private, so only [`Latchkey::web_sign_in`] and
/// [`Latchkey::web_session`] make one.
#[derive(Debug, Clone)]
pub struct SignedIn {
    session: SessionRecord,
    user: UserRecord,
}

impl SignedIn {
    /// The browser's session.
    pub fn session(&self) -> &SessionRecord {
        &self.session
    }

    /// Its user.
    pub fn user(&self) -> &UserRecord {
        &self.user
    }
}

/// An app the user has connected.
#[derive(Debug, Clone)]
pub struct ConnectedApp {
    /// The app, or `None` when it was removed since.
    pub client: Option<ClientRecord>,
    /// Its id.
    pub client_id: ClientId,
    /// Scopes granted across its live sessions.
    pub scope: Scope,
    /// Its oldest live session's start.
    pub connected_at: crate::clock::Timestamp,
}

impl Latchkey {
    /// Signs a browser in: checks the password (throttled like the API), opens a session
    /// and returns it with the cookie value to set.
    ///
    /// # Errors
    /// See [`LoginError`].
    pub async fn web_sign_in(
        &self,
        creds: Credentials,
        ctx: &Caller,
    ) -> Result<(SignedIn, String), LoginError> {
        let now = self.clock.now();
        let user = self.check_credentials(creds, ctx, now).await?;
        self.after_password(&user, now).await?;
        self.open_web_session(user, crate::mfa::AMR_PASSWORD, ctx, now).await
    }

    /// Completes a browser sign-in with its second factor (the pages' second step).
    ///
    /// # Errors
    /// See [`Latchkey::check_second_factor`]; storage.
    pub async fn web_sign_in_mfa(
        &self,
        token: &latchkey_proto::MfaToken,
        method: crate::mfa::CodeMethod,
        code: &latchkey_proto::OneTimeCode,
        ctx: &Caller,
    ) -> Result<(SignedIn, String), crate::mfa::MfaError> {
        let passed = self.check_second_factor(token, method, code, ctx).await?;
        let now = self.clock.now();
        let amr = passed.amr();
        Ok(self.open_web_session(passed.user, amr, ctx, now).await?)
    }

    /// A new browser session for a user whose sign-in passed; with the cookie value to set.
    pub(crate) async fn open_web_session(
        &self,
        user: UserRecord,
        amr: &str,
        ctx: &Caller,
        now: Timestamp,
    ) -> Result<(SignedIn, String), LoginError> {
        let mut session = SessionLifetimes::from(&self.settings).start(
            user.id.clone(),
            ClientId::from(FIRST_PARTY_CLIENT_ID),
            Scope::from(FIRST_PARTY_SCOPE),
            ctx,
            now,
        );
        session.amr = amr.to_owned();
        let cookie = format!("{COOKIE_PREFIX}{}", b64(&random_bytes::<32>()));
        self.store.insert_web_session(&session, &TokenHash::of(&cookie)).await?;
        self.confirm_sign_in(&user, &session, ctx).await?;
        Ok((SignedIn { session, user }, cookie))
    }

    /// The signed-in browser behind a cookie, if its session is alive; use slides the idle
    /// expiry (recorded at most once a minute).
    ///
    /// # Errors
    /// Storage.
    pub async fn web_session(&self, cookie: &str, ctx: &Caller) -> Result<Option<SignedIn>, StoreError> {
        if !cookie.starts_with(COOKIE_PREFIX) || cookie.len() > 100 {
            return Ok(None);
        }
        let Some(session) = self.store.find_web_session(&TokenHash::of(cookie)).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        if session.revoked_at.is_some() || now >= session.expires_at || now >= session.idle_expires_at {
            return Ok(None);
        }
        let Some(user) =
            self.store.find_user(&session.user_id).await?.filter(|u| u.status == UserStatus::Active)
        else {
            return Ok(None);
        };
        if now.seconds_since(session.last_used_at) >= 60 {
            let touch = Touch {
                now,
                idle_expires_at: now.plus(self.settings.session_idle_ttl).min(session.expires_at),
                ip: ctx.ip.clone().or_else(|| session.ip.clone()),
                ends_step_up_wait: false,
            };
            self.store.touch_session(&session.id, &touch).await?;
        }
        Ok(Some(SignedIn { session, user }))
    }

    /// Signs a browser out (its session is revoked as `logged_out`).
    ///
    /// # Errors
    /// Storage.
    pub async fn web_sign_out(&self, signed_in: &SignedIn, ctx: &Caller) -> Result<(), StoreError> {
        let SignedIn { session, user } = signed_in;
        let target = RevocationTarget::Session { id: session.id.clone(), user_id: Some(user.id.clone()) };
        self.revoke(target, ErrorReason::LoggedOut, Some(&user.id), Some(&session.id), ctx).await?;
        Ok(())
    }

    /// The account page's lists: first-party sessions (devices) and connected apps.
    ///
    /// # Errors
    /// Storage.
    pub async fn account_overview(
        &self,
        user: &UserRecord,
    ) -> Result<(Vec<SessionRecord>, Vec<ConnectedApp>), StoreError> {
        let sessions = self.store.list_live_sessions(&user.id, self.clock.now()).await?;
        let (devices, app_sessions): (Vec<_>, Vec<_>) =
            sessions.into_iter().partition(|s| s.client_id == FIRST_PARTY_CLIENT_ID);
        let mut apps: Vec<ConnectedApp> = Vec::new();
        for s in app_sessions {
            if let Some(app) = apps.iter_mut().find(|a| a.client_id == s.client_id) {
                app.scope = app.scope.union(&s.scope);
                app.connected_at = app.connected_at.min(s.created_at);
            } else {
                apps.push(ConnectedApp {
                    client: None,
                    client_id: s.client_id.clone(),
                    scope: s.scope.clone(),
                    connected_at: s.created_at,
                });
            }
        }
        for app in &mut apps {
            app.client = self.store.find_client(&app.client_id).await?;
        }
        apps.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        Ok((devices, apps))
    }

    /// Revokes one of the user's sessions (a device); `false` when it is not theirs.
    ///
    /// # Errors
    /// Storage.
    pub async fn revoke_device(
        &self,
        user: &UserRecord,
        session_id: &SessionId,
        ctx: &Caller,
    ) -> Result<bool, StoreError> {
        let target = RevocationTarget::Session { id: session_id.clone(), user_id: Some(user.id.clone()) };
        let revoked =
            self.revoke(target, ErrorReason::RevokedByUser, Some(&user.id), Some(session_id), ctx).await?;
        Ok(!revoked.is_empty())
    }

    /// Disconnects an app: every session of the user with it is revoked (reaching APIs
    /// through the feed) and the remembered consent is forgotten, so the app must ask again.
    ///
    /// # Errors
    /// Storage.
    pub async fn revoke_app(
        &self,
        user: &UserRecord,
        client_id: &ClientId,
        ctx: &Caller,
    ) -> Result<usize, StoreError> {
        let target = RevocationTarget::AppGrant { user_id: user.id.clone(), client_id: client_id.clone() };
        let revoked = self.revoke(target, ErrorReason::RevokedByUser, Some(&user.id), None, ctx).await?;
        Ok(revoked.len())
    }
}
