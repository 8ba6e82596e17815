//! Registration and login (SPEC 5.1): a session per login, with its first refresh token.
//! Unknown users and wrong passwords cost the same and answer the same; failures are
//! throttled per account and per address before any password is checked.

use latchkey_proto::auth::{Credentials, RegisterRequest, RegisterResponse, TokenResponse};
use latchkey_proto::{EmailAddress, ErrorReason, Password, Username};

use crate::caller::Caller;
use crate::clock::Timestamp;
use crate::crypto::{RefreshTokenKey, new_id, new_refresh_token};
use crate::ids::{ClientId, Scope, SessionId, UserId};
use crate::keys::KeyError;
use crate::metrics::LoginOutcome;
use crate::password::PasswordError;
use crate::service::Latchkey;
use crate::settings::{Registration, RegistrationEmail};
use crate::store::{RevocationTarget, SessionRecord, StoreError, UserEmail, UserRecord, UserStatus};
use crate::throttle::{account_key, account_retry_after, address_key, address_retry_after};

pub use latchkey_proto::claims::FIRST_PARTY_CLIENT_ID;
/// The scope of first-party sessions.
pub const FIRST_PARTY_SCOPE: &str = "profile";

/// The lifetimes a new session gets (SPEC 4), copied out of the settings so a session can
/// also be started inside a store transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionLifetimes {
    pub(crate) max: std::time::Duration,
    pub(crate) idle: std::time::Duration,
}

impl From<&crate::settings::Settings> for SessionLifetimes {
    fn from(s: &crate::settings::Settings) -> Self {
        Self { max: s.session_max_ttl, idle: s.session_idle_ttl }
    }
}

impl SessionLifetimes {
    /// A new live session starting `now`.
    pub(crate) fn start(
        self,
        user_id: UserId,
        client_id: ClientId,
        scope: Scope,
        ctx: &Caller,
        now: Timestamp,
    ) -> SessionRecord {
        let expires_at = now.plus(self.max);
        SessionRecord {
            id: SessionId::new(new_id()),
            user_id,
            client_id,
            scope,
            created_at: now,
            last_used_at: now,
            idle_expires_at: now.plus(self.idle).min(expires_at),
            expires_at,
            ip: ctx.ip.clone(),
            user_agent: ctx.user_agent.clone(),
            revoked_at: None,
            revoke_reason: None,
            amr: crate::mfa::AMR_PASSWORD.to_owned(),
            dpop_jkt: ctx.dpop.clone(),
            step_up_at: None,
            browser_session_id: None,
            resources: Vec::new(),
        }
    }
}

/// Registration failures.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// `registration = "closed"`.
    #[error("registration is closed")]
    RegistrationClosed,
    /// The username exists (also: it is another account's email address).
    #[error("username taken")]
    UsernameTaken,
    /// The email address belongs to another account.
    #[error("email taken")]
    EmailTaken,
    /// `registration_email = "required"` and the request has no address.
    #[error("an email address is required")]
    EmailRequired,
    /// The name may not be a new username (see `Username::check_new`).
    #[error("{0}")]
    InvalidUsername(latchkey_proto::username::UsernameError),
    /// Too many attempts from this address; retry after this many seconds.
    #[error("throttled for {retry_after} s")]
    Throttled {
        /// Seconds.
        retry_after: u64,
    },
    /// The password breaks the length rules, or the pool is overloaded.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// Storage.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for RegisterError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// A user to create: by registration (with a password) or by the CLI (perhaps without).
#[derive(Debug)]
pub(crate) struct NewUser {
    /// The username, checked with `Username::check_new` here.
    pub(crate) username: Username,
    /// `None`: no password matches until one is set.
    pub(crate) password: Option<Password>,
    /// The address, and whether it counts as verified already (the CLI can say so).
    pub(crate) email: Option<(EmailAddress, bool)>,
    /// Roles, normalised.
    pub(crate) roles: Vec<String>,
}

/// A placeholder hash that no password matches (a user created without a password).
const NO_PASSWORD: &str = "!";

/// Login failures.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Wrong username or password (the same for both).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many failures; retry after this many seconds.
    #[error("throttled for {retry_after} s")]
    Throttled {
        /// Seconds.
        retry_after: u64,
    },
    /// The password was right; the user has a second factor, to be proved with this
    /// token (SPEC 11).
    #[error("a second factor is required")]
    MfaRequired {
        /// For `POST /auth/login/mfa` (or the pages' second step).
        mfa_token: latchkey_proto::MfaToken,
        /// The methods the user has.
        methods: Vec<latchkey_proto::auth::MfaMethod>,
    },
    /// The password was right; the user has no second factor but must have one (SPEC 11
    /// `mfa`, `mfa_required_roles`), and sets it up with this token before any session.
    #[error("a second factor must be set up")]
    MfaEnrolmentRequired {
        /// For `POST /auth/mfa/totp` and its `/confirm` (or the pages' set-up step).
        mfa_token: latchkey_proto::MfaToken,
    },
    /// Over 1 KiB, or the password pool is overloaded.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// Signing.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Latchkey {
    /// Registers a user (SPEC 5.1 `POST /auth/register`).
    ///
    /// # Errors
    /// See [`RegisterError`].
    pub async fn register(
        &self,
        req: RegisterRequest,
        ctx: &Caller,
    ) -> Result<RegisterResponse, RegisterError> {
        if self.settings.registration == Registration::Closed {
            return Err(RegisterError::RegistrationClosed);
        }
        // Every attempt counts, whatever its outcome: the 409 for a taken name is the
        // oracle this limits (SPEC 10).
        if let Some(ip) = ctx.ip.as_deref() {
            let now = self.clock.now();
            let policy = &self.settings.throttle;
            let window = i64::try_from(policy.address_window.as_secs()).unwrap_or(i64::MAX);
            let key = crate::throttle::registration_key(ip, now);
            let rec = self.store.record_throttle_failure(&key, now, window).await?;
            if let Some(retry_after) = crate::throttle::registration_retry_after(&rec, policy, now) {
                if rec.count == policy.registration_attempts + 1 {
                    self.record(self.event(now, "registration_throttled", None, None, Some(ctx))).await;
                }
                return Err(RegisterError::Throttled { retry_after });
            }
        }
        if req.email.is_none() && self.settings.registration_email == RegistrationEmail::Required {
            return Err(RegisterError::EmailRequired);
        }
        let new = NewUser {
            username: req.username,
            password: Some(req.password),
            email: req.email.map(|e| (e, false)),
            roles: Vec::new(),
        };
        let user = self.create_user(new).await?;
        self.metrics.registration();
        Ok(RegisterResponse { sub: user.id.into_string(), username: user.username })
    }

    /// Creates a user (also used by the CLI). A new username may not be another account's
    /// email address either: sign-in tries usernames first, so it would take over that
    /// address's sign-in.
    pub(crate) async fn create_user(&self, new: NewUser) -> Result<UserRecord, RegisterError> {
        new.username.check_new().map_err(RegisterError::InvalidUsername)?;
        // Check for a taken name or address first, so a duplicate costs no argon2 hash.
        self.check_available(&new).await?;
        let password_hash = match &new.password {
            Some(password) => self.passwords.hash(password).await?,
            None => NO_PASSWORD.to_owned(),
        };
        let now = self.clock.now();
        let user = UserRecord {
            id: UserId::new(new_id()),
            username: new.username.as_str().to_owned(),
            password_hash,
            roles: new.roles.clone(),
            authz_ver: 1,
            status: UserStatus::Active,
            created_at: now,
            email: new
                .email
                .as_ref()
                .map(|(address, verified)| UserEmail::new(address, verified.then_some(now))),
        };
        match self.store.insert_user(&user).await {
            Ok(()) => Ok(user),
            // A race with another registration: say which one is taken now.
            Err(StoreError::Conflict(_)) => Err(match self.check_available(&new).await {
                Err(taken) => taken,
                Ok(()) => RegisterError::UsernameTaken,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a new user's username and email address are free.
    async fn check_available(&self, new: &NewUser) -> Result<(), RegisterError> {
        let name = new.username.as_str();
        let name_as_email = name.to_ascii_lowercase();
        if self.store.find_user_by_username(name).await?.is_some()
            || self.store.find_user_by_email(&name_as_email).await?.is_some()
        {
            return Err(RegisterError::UsernameTaken);
        }
        if let Some((address, _)) = &new.email
            && self.is_address_taken(address, None).await?
        {
            return Err(RegisterError::EmailTaken);
        }
        Ok(())
    }

    /// Whether `address` is another account's (`except` is the asking user): its address,
    /// or its username (sign-in tries usernames first, so that account would keep the
    /// address's sign-in and recovery).
    pub(crate) async fn is_address_taken(
        &self,
        address: &EmailAddress,
        except: Option<&UserId>,
    ) -> Result<bool, StoreError> {
        let is_other = |u: &UserRecord| except != Some(&u.id);
        let by_address = self.store.find_user_by_email(&address.key()).await?;
        let by_name = match self.store.find_user_by_username(address.as_str()).await? {
            Some(u) => Some(u),
            None => self.store.find_user_by_username(&address.key()).await?,
        };
        Ok(by_address.iter().chain(by_name.iter()).any(is_other))
    }

    /// The account a sign-in names: the user with that username, or else the user whose
    /// *verified* address it is (SPEC 10). An unverified address names nobody, so it signs
    /// in no one and answers like an unknown username.
    pub(crate) async fn resolve_login(&self, login: &str) -> Result<Option<UserRecord>, StoreError> {
        if let Some(user) = self.store.find_user_by_username(login).await? {
            return Ok(Some(user));
        }
        let Ok(address) = EmailAddress::parse(login) else { return Ok(None) };
        let user = self.store.find_user_by_email(&address.key()).await?;
        Ok(user.filter(|u| u.email.as_ref().is_some_and(|e| e.verified_at.is_some())))
    }

    /// Signs a user in: a new session and its tokens (SPEC 5.1 `POST /auth/login`).
    ///
    /// # Errors
    /// See [`LoginError`].
    pub async fn login(&self, creds: Credentials, ctx: &Caller) -> Result<TokenResponse, LoginError> {
        let now = self.clock.now();
        let user = self.check_credentials(creds, ctx, now).await?;
        self.after_password(&user, now).await?;
        self.open_session(&user, crate::mfa::AMR_PASSWORD, ctx, now).await
    }

    /// Checks a username and password with throttling (per account and per address, also
    /// against parallel guesses), the same cost for unknown users, and the metrics: the
    /// part of signing in shared by the API and the sign-in page.
    ///
    /// # Errors
    /// See [`LoginError`].
    pub(crate) async fn check_credentials(
        &self,
        creds: Credentials,
        ctx: &Caller,
        now: Timestamp,
    ) -> Result<UserRecord, LoginError> {
        let user = self.resolve_login(creds.username.as_str()).await?;
        // One counter per account, whichever name it was reached by (username or address).
        let acct = account_key(user.as_ref().map_or(creds.username.as_str(), |u| u.username.as_str()));
        let addr = ctx.ip.as_deref().map(address_key);
        if let Some(retry_after) = self.throttled_for(&acct, addr.as_deref(), now).await? {
            self.metrics.login(LoginOutcome::Throttled);
            return Err(LoginError::Throttled { retry_after });
        }

        let is_valid =
            self.passwords.verify(&creds.password, user.as_ref().map(|u| u.password_hash.as_str())).await?;
        let user = match user {
            Some(u) if is_valid && u.status == UserStatus::Active => u,
            other => {
                let user_id = other.as_ref().map(|u| &u.id);
                let locked =
                    self.record_failure("login_failed", user_id, &acct, addr.as_deref(), ctx, now).await?;
                return Err(match locked {
                    Some(retry_after) => {
                        self.metrics.login(LoginOutcome::Throttled);
                        LoginError::Throttled { retry_after }
                    }
                    None => {
                        self.metrics.login(LoginOutcome::Failure);
                        LoginError::InvalidCredentials
                    }
                });
            }
        };
        // Parallel guesses all pass the first check while their failures are still being
        // hashed; a right guess that arrives after the threshold was crossed meanwhile must
        // not get in, or throttling would allow as many guesses as the hashing queue holds.
        if let Some(retry_after) = self.throttled_for(&acct, addr.as_deref(), now).await? {
            self.metrics.login(LoginOutcome::Throttled);
            return Err(LoginError::Throttled { retry_after });
        }

        self.metrics.login(LoginOutcome::Success);
        Ok(user)
    }

    /// After a right password: `Ok` once the account's failure count is cleared (no
    /// second factor: the sign-in is complete), [`LoginError::MfaRequired`] with the
    /// `mfa_token` and methods to finish with, or [`LoginError::MfaEnrolmentRequired`] for
    /// a user the policy says must set up a factor first. A user with a factor keeps the
    /// count until the factor is proved, or a thief with the password could clear it by
    /// signing in again between rounds of guessed codes.
    ///
    /// # Errors
    /// Those two; storage.
    pub(crate) async fn after_password(&self, user: &UserRecord, now: Timestamp) -> Result<(), LoginError> {
        if let Some((mfa_token, methods)) = self.second_factor_needed(user, now).await? {
            return Err(LoginError::MfaRequired { mfa_token, methods });
        }
        self.store.delete_throttle(&account_key(&user.username)).await?;
        if self.settings.mfa.applies_to(&user.roles) {
            let mfa_token = self.new_challenge(user, crate::mfa::ENROL_TOKEN_PREFIX, now).await?;
            return Err(LoginError::MfaEnrolmentRequired { mfa_token });
        }
        Ok(())
    }

    /// Seconds the account or the address must still wait, if either is locked.
    pub(crate) async fn throttled_for(
        &self,
        acct: &str,
        addr: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<u64>, StoreError> {
        let policy = &self.settings.throttle;
        let acct_rec = self.store.find_throttle(acct).await?;
        let addr_rec = match addr {
            Some(k) => self.store.find_throttle(k).await?,
            None => None,
        };
        Ok(account_retry_after(acct_rec.as_ref(), policy, now).max(address_retry_after(
            addr_rec.as_ref(),
            policy,
            now,
        )))
    }

    /// Counts a failed password check against the account and the address, records the
    /// security event, and returns the wait if this failure locked either.
    pub(crate) async fn record_failure(
        &self,
        kind: &'static str,
        user_id: Option<&UserId>,
        acct: &str,
        addr: Option<&str>,
        ctx: &Caller,
        now: Timestamp,
    ) -> Result<Option<u64>, StoreError> {
        let policy = &self.settings.throttle;
        let window = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let acct_rec = self.store.record_throttle_failure(acct, now, window(policy.account_window)).await?;
        let addr_rec = match addr {
            Some(k) => Some(self.store.record_throttle_failure(k, now, window(policy.address_window)).await?),
            None => None,
        };
        let locked = account_retry_after(Some(&acct_rec), policy, now).max(address_retry_after(
            addr_rec.as_ref(),
            policy,
            now,
        ));
        self.metrics.password_failure();
        let mut event = self.event(now, kind, user_id, None, Some(ctx));
        if locked.is_some() {
            event.kind = "login_throttled";
            event.detail = Some(format!(
                "{kind}: account failures {}, address failures {}",
                acct_rec.count,
                addr_rec.map_or(0, |r| r.count)
            ));
        }
        self.record(event).await;
        Ok(locked)
    }

    /// Confirms a sign-in after its session is stored: the password it checked is still
    /// the user's and the user still active. A password reset or change (or a disable) that
    /// committed while the password was being hashed revoked every session but this one,
    /// which did not exist yet; without this check a thief signing in with the old password
    /// in a loop would keep a session through the owner's recovery. The read waits for a
    /// change in progress, so a change either sees the session or is seen here. A refused
    /// sign-in's session is revoked before any token or cookie leaves.
    ///
    /// # Errors
    /// [`LoginError::InvalidCredentials`] when the account changed; storage.
    pub(crate) async fn confirm_sign_in(
        &self,
        checked: &UserRecord,
        session: &SessionRecord,
        ctx: &Caller,
    ) -> Result<(), LoginError> {
        let current = self.store.find_user_settled(&checked.id).await?;
        let target = RevocationTarget::Session { id: session.id.clone(), user_id: Some(checked.id.clone()) };
        let reason = match current {
            Some(u) if u.status != UserStatus::Active => ErrorReason::UserDisabled,
            Some(u) if u.password_hash == checked.password_hash => {
                // A factor confirmed while this password-only sign-in was being checked:
                // its "end every other session" ran before this session existed, so the
                // session ends here and the sign-in goes on to the second factor. (The
                // confirmation commits before that revocation runs, so a session stored
                // after the revocation always finds the factor here.)
                if session.amr != crate::mfa::AMR_PASSWORD {
                    return Ok(());
                }
                let now = self.clock.now();
                let Some((mfa_token, methods)) = self.second_factor_needed(&u, now).await? else {
                    return Ok(());
                };
                self.revoke(target, ErrorReason::RevokedByUser, Some(&checked.id), Some(&session.id), ctx)
                    .await?;
                return Err(LoginError::MfaRequired { mfa_token, methods });
            }
            _ => ErrorReason::PasswordChanged,
        };
        self.revoke(target, reason, Some(&checked.id), Some(&session.id), ctx).await?;
        Err(LoginError::InvalidCredentials)
    }

    /// Creates a first-party session with its first refresh token, and mints its tokens.
    pub(crate) async fn open_session(
        &self,
        user: &UserRecord,
        amr: &str,
        ctx: &Caller,
        now: Timestamp,
    ) -> Result<TokenResponse, LoginError> {
        let mut session = SessionLifetimes::from(&self.settings).start(
            user.id.clone(),
            ClientId::from(FIRST_PARTY_CLIENT_ID),
            Scope::from(FIRST_PARTY_SCOPE),
            ctx,
            now,
        );
        session.amr = amr.to_owned();
        let refresh_token = new_refresh_token();
        self.store.insert_session(&session, &RefreshTokenKey::of(refresh_token.expose_secret())).await?;
        self.confirm_sign_in(user, &session, ctx).await?;
        let access_token = self.mint_access_token(
            user,
            &session,
            ctx.dpop.as_ref(),
            &[],
            self.settings.access_token_ttl,
            now,
        )?;
        Ok(TokenResponse {
            access_token,
            token_type: crate::tokens::token_type(ctx.dpop.as_ref()),
            expires_in: self.access_token_lifetime(&session, self.settings.access_token_ttl, now),
            refresh_token,
            session_id: session.id.into_string(),
            scope: session.scope.into_string(),
        })
    }
}
