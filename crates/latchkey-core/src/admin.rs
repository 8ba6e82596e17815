//! Administration, as the CLI uses it (SPEC 6): users (add, set roles, set password,
//! disable, revoke sessions, list) and signing keys (list, rotate). Every change is
//! written to the database, so a server running on it sees it at once.

use latchkey_proto::auth::RegisterResponse;
use latchkey_proto::{ErrorReason, Password};

use crate::keys::{KeyError, unpublish_at};
use crate::login::{NewUser, RegisterError};
use crate::mail::FactorChange;
use crate::service::Latchkey;
use crate::store::{
    FactorRecord, RevocationTarget, SessionRevocation, StoreError, UserChange, UserChangeKind, UserEmail,
    UserRecord,
};

/// Administration failures.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No such user.
    #[error("no user named {0:?}")]
    UnknownUser(String),
    /// Creating the user failed.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// Password rules.
    #[error(transparent)]
    Password(#[from] crate::password::PasswordError),
    /// Keys.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// A mail template failed to render.
    #[error("mail template: {0}")]
    Template(#[from] askama::Error),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One row of `latchkey keys list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: from when it signs.
    pub activates_at: String,
    /// `pending` (published, not signing yet), `active`, or `retiring` (published until its
    /// tokens expire).
    pub state: &'static str,
}

fn normalise_roles(roles: &[String]) -> Vec<String> {
    let mut out: Vec<String> = roles.iter().map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()).collect();
    out.sort();
    out.dedup();
    out
}

impl Latchkey {
    async fn user_named(&self, username: &str) -> Result<UserRecord, AdminError> {
        self.store
            .find_user_by_username(username)
            .await?
            .ok_or_else(|| AdminError::UnknownUser(username.to_owned()))
    }

    async fn change_user(
        &self,
        username: &str,
        kind: UserChangeKind,
        event_kind: &'static str,
    ) -> Result<(), AdminError> {
        let reason = match &kind {
            UserChangeKind::SetRoles(_) => None,
            UserChangeKind::SetPassword { .. } => Some(ErrorReason::PasswordChanged),
            UserChangeKind::Disable => Some(ErrorReason::UserDisabled),
        };
        let user = self.user_named(username).await?;
        let now = self.clock.now();
        let change = UserChange {
            user_id: user.id.clone(),
            kind,
            now,
            until: self.revocation_until(now),
            event: self.event(now, event_kind, Some(&user.id), None, None),
        };
        let (_, revoked) = self
            .store
            .apply_user_change(&change)
            .await
            .inspect(|_| self.feed.changed())?
            .ok_or_else(|| AdminError::UnknownUser(username.to_owned()))?;
        if let Some(reason) = reason {
            self.metrics.revocations(reason.as_str(), revoked.len());
        }
        Ok(())
    }

    /// `latchkey user add`. Without a password the user cannot sign in until one is set.
    ///
    /// # Errors
    /// A taken name, password rules, storage.
    pub async fn admin_add_user(
        &self,
        username: latchkey_proto::Username,
        password: Option<Password>,
        roles: &[String],
        email: Option<(latchkey_proto::EmailAddress, bool)>,
    ) -> Result<RegisterResponse, AdminError> {
        let new = NewUser { username, password, email, roles: normalise_roles(roles) };
        let user = self.create_user(new).await?;
        Ok(RegisterResponse { sub: user.id.into_string(), username: user.username })
    }

    /// `latchkey user set-email`: sets (verified or not) or clears a user's address.
    ///
    /// # Errors
    /// Unknown user, an address another user holds, storage.
    pub async fn admin_set_email(
        &self,
        username: &str,
        email: Option<(latchkey_proto::EmailAddress, bool)>,
    ) -> Result<UserRecord, AdminError> {
        let mut user = self.user_named(username).await?;
        if let Some((address, _)) = &email
            && self.is_address_taken(address, Some(&user.id)).await?
        {
            return Err(RegisterError::EmailTaken.into());
        }
        let now = self.clock.now();
        user.email = email.map(|(address, verified)| UserEmail::new(&address, verified.then_some(now)));
        match self.store.set_user_email(&user.id, user.email.as_ref(), now).await {
            Ok(true) => {}
            Ok(false) => return Err(AdminError::UnknownUser(username.to_owned())),
            Err(StoreError::Conflict(_)) => return Err(RegisterError::EmailTaken.into()),
            Err(e) => return Err(e.into()),
        }
        self.record(self.event(now, "email_changed", Some(&user.id), None, None)).await;
        Ok(user)
    }

    /// `latchkey user set-roles`: bumps `authz_ver`, publishes `user_changed`.
    ///
    /// # Errors
    /// Unknown user, storage.
    pub async fn admin_set_roles(&self, username: &str, roles: &[String]) -> Result<(), AdminError> {
        let roles = normalise_roles(roles);
        let needs_factor = self.settings.mfa.applies_to(&roles);
        self.change_user(username, UserChangeKind::SetRoles(roles), "roles_changed").await?;
        // SPEC 11: a user the policy now covers and who has no factor keeps no session;
        // the next sign-in goes through setting one up.
        if needs_factor {
            let user = self.user_named(username).await?;
            let factors = self.store.list_factors(&user.id).await?;
            if !factors.iter().any(|f| f.confirmed_at.is_some()) {
                self.admin_revoke_sessions(username).await?;
            }
        }
        Ok(())
    }

    /// `latchkey user set-password`: revokes every session (`password_changed`).
    ///
    /// # Errors
    /// Unknown user, password rules, storage.
    pub async fn admin_set_password(&self, username: &str, password: &Password) -> Result<(), AdminError> {
        let password_hash = self.passwords.hash(password).await?;
        let kind = UserChangeKind::SetPassword { password_hash, keep_session: None };
        self.change_user(username, kind, "password_changed").await
    }

    /// `latchkey user disable`: revokes every session (`user_disabled`).
    ///
    /// # Errors
    /// Unknown user, storage.
    pub async fn admin_disable_user(&self, username: &str) -> Result<(), AdminError> {
        self.change_user(username, UserChangeKind::Disable, "user_disabled").await
    }

    /// `latchkey user mfa list`: the user's second factors, confirmed or not.
    ///
    /// # Errors
    /// Unknown user, storage.
    pub async fn admin_list_factors(&self, username: &str) -> Result<Vec<FactorRecord>, AdminError> {
        let user = self.user_named(username).await?;
        Ok(self.store.list_factors(&user.id).await?)
    }

    /// `latchkey user mfa reset`, for a support desk whose user lost the device: removes
    /// every factor and the recovery codes, and revokes every session (`revoked_by_admin`),
    /// as removing a factor does (SPEC 11). Returns how many factors went.
    ///
    /// # Errors
    /// Unknown user, storage.
    pub async fn admin_reset_mfa(&self, username: &str) -> Result<usize, AdminError> {
        let user = self.user_named(username).await?;
        let now = self.clock.now();
        let mut removed = 0;
        for factor in self.store.list_factors(&user.id).await? {
            // One notice, with the first factor to go.
            let notice =
                if removed == 0 { self.factor_notice(&user, FactorChange::Reset, now)? } else { Vec::new() };
            if self.store.delete_factor(&user.id, &factor.id, &notice).await? {
                self.notice_queued(&notice);
                removed += 1;
            }
        }
        self.record(self.event(now, "mfa_reset", Some(&user.id), None, None)).await;
        self.admin_revoke_sessions(username).await?;
        Ok(removed)
    }

    /// `latchkey user revoke-sessions`: revokes every session (`revoked_by_admin`).
    /// Returns how many.
    ///
    /// # Errors
    /// Unknown user, storage.
    pub async fn admin_revoke_sessions(&self, username: &str) -> Result<usize, AdminError> {
        let user = self.user_named(username).await?;
        let now = self.clock.now();
        let revocation = SessionRevocation {
            reason: ErrorReason::RevokedByAdmin,
            now,
            until: self.revocation_until(now),
            event: self.event(now, "session_revoked", Some(&user.id), None, None),
        };
        let target = RevocationTarget::UserSessions { user_id: user.id, except: None };
        let revoked = self.store.revoke_sessions(&target, &revocation).await?.len();
        self.feed.changed();
        self.metrics.revocations(ErrorReason::RevokedByAdmin.as_str(), revoked);
        Ok(revoked)
    }

    /// `latchkey user list`.
    ///
    /// # Errors
    /// Storage.
    pub async fn admin_list_users(&self) -> Result<Vec<UserRecord>, AdminError> {
        Ok(self.store.list_users().await?)
    }

    /// `latchkey keys list`.
    ///
    /// # Errors
    /// Storage.
    pub async fn admin_list_keys(&self) -> Result<Vec<KeyInfo>, AdminError> {
        let now = self.clock.now();
        let stored = self.store.list_signing_keys().await?;
        Ok(stored
            .iter()
            .map(|k| KeyInfo {
                kid: k.kid.clone(),
                alg: k.alg.clone(),
                created_at: k.created_at.rfc3339(),
                activates_at: k.activates_at.rfc3339(),
                state: if k.activates_at > now {
                    "pending"
                } else if unpublish_at(&stored, k, now, std::time::Duration::ZERO).is_some() {
                    "retiring"
                } else {
                    "active"
                },
            })
            .collect())
    }

    /// `latchkey keys rotate`: a new key for every algorithm in use, published now and
    /// signing after `key_publish_ahead`. Returns the new kids.
    ///
    /// # Errors
    /// Storage, key generation.
    pub async fn admin_rotate_keys(&self) -> Result<Vec<String>, AdminError> {
        let now = self.clock.now();
        let s = &self.settings;
        let mut algs = vec![s.access_token_alg];
        if s.id_token_alg != s.access_token_alg {
            algs.push(s.id_token_alg);
        }
        let mut kids = Vec::new();
        for alg in algs {
            kids.push(
                self.keys.create_key(self.store.as_ref(), alg, now, now.plus(s.key_publish_ahead)).await?,
            );
        }
        self.keys.reload(self.store.as_ref(), now).await?;
        Ok(kids)
    }
}
