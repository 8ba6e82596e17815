//! Column lists and row readers, each written once for both backends. A value this version
//! cannot read (JSON that does not parse, a hash of the wrong length, an unknown status or
//! event type) is [`DbError::Corrupt`], never a default.

use latchkey_core::caller::CallerFingerprint;
use latchkey_core::clock::Timestamp;
use latchkey_core::crypto::TokenHash;
use latchkey_core::dpop::Thumbprint;
use latchkey_core::ids::Scope;
use latchkey_core::store::{
    AuthCodeRecord, BackchannelLogout, ClientKeys, ClientRecord, DeliveryState, DeviceAuthorizationRecord,
    DeviceState, FactorRecord, FeedEventRecord, LinkPurpose, LinkRecord, LogoutDeliveryRecord, MailRecord,
    MfaChallengeRecord, PasskeyChallengeRecord, SecurityEventRecord, SessionRecord, StoredKey,
    ThrottleRecord, UserEmail, UserRecord, UserStatus,
};
use latchkey_proto::ErrorReason;
use latchkey_proto::events::RevocationEvent;

use crate::db::{DbError, Row};

/// The columns [`user`] reads, from `users u`.
macro_rules! user_columns {
    () => {
        "u.id, u.username, u.password_hash, u.roles, u.authz_ver, u.status, u.created_at, u.email, \
         u.email_key, u.email_verified_at"
    };
}
pub(crate) use user_columns;

/// The columns [`link`] reads, in `link_tokens`' own order (also its insert list).
macro_rules! link_columns {
    () => {
        "hash, purpose, user_id, email, email_key, created_at, expires_at, used_at, voided_at"
    };
}
pub(crate) use link_columns;

/// The columns [`factor`] reads, in its order.
macro_rules! factor_columns {
    () => {
        "id, user_id, kind, name, secret, created_at, confirmed_at, last_used_step"
    };
}
pub(crate) use factor_columns;

/// The columns [`mfa_challenge`] reads, in its order.
macro_rules! mfa_challenge_columns {
    () => {
        "hash, user_id, password_hash, created_at, expires_at, used_at"
    };
}
pub(crate) use mfa_challenge_columns;

/// The columns [`passkey_challenge`] reads, in its order.
macro_rules! passkey_challenge_columns {
    () => {
        "id, user_id, state, created_at, expires_at"
    };
}
pub(crate) use passkey_challenge_columns;

/// The columns [`mail`] reads, from `outbox`.
macro_rules! mail_columns {
    () => {
        "id, kind, user_id, recipient, subject, text_body, html_body, created_at, expires_at, state, \
         attempts, next_attempt_at, last_error, sent_at"
    };
}
pub(crate) use mail_columns;

/// The columns [`device_authorization`] reads (also the insert list).
macro_rules! device_columns {
    () => {
        "device_code_hash, user_code, client_id, scope, created_at, expires_at, interval_secs, \
         last_polled_at, state, user_id, browser_session_id, decided_at, session_id"
    };
}
pub(crate) use device_columns;

/// The columns [`logout_delivery`] reads.
macro_rules! logout_delivery_columns {
    () => {
        "id, client_id, uri, user_id, session_id, created_at, expires_at, state, attempts, \
         next_attempt_at, last_error, delivered_at"
    };
}
pub(crate) use logout_delivery_columns;

/// The columns [`session`] reads, from `sessions s`.
macro_rules! session_columns {
    () => {
        "s.id, s.user_id, s.client_id, s.scope, s.created_at, s.last_used_at, s.idle_expires_at, \
         s.expires_at, s.ip, s.user_agent, s.revoked_at, s.revoke_reason, s.amr, \
         s.dpop_jkt, s.step_up_at, s.browser_session_id, s.resources"
    };
}
pub(crate) use session_columns;

/// The columns [`auth_code`] reads, in `auth_codes`' own order (also its insert list).
macro_rules! code_columns {
    () => {
        "hash, client_id, user_id, redirect_uri, scope, nonce, code_challenge, auth_time, created_at, \
         expires_at, used_at, session_id, browser_session_id, dpop_jkt, resources"
    };
}
pub(crate) use code_columns;

/// The columns [`client`] reads (also its insert list).
macro_rules! client_columns {
    () => {
        "client_id, name, secret_hash, redirect_uris, grant_types, scopes, created_at, \
         post_logout_redirect_uris, backchannel_logout_uri, backchannel_logout_session_required, require_par, resources, jwks, jwks_uri, \
         registration_token_hash"
    };
}
pub(crate) use client_columns;

/// The columns [`signing_key`] reads (also its insert list).
macro_rules! key_columns {
    () => {
        "kid, alg, private_key, created_at, activates_at"
    };
}
pub(crate) use key_columns;

/// The columns [`feed_event`] reads.
macro_rules! feed_columns {
    () => {
        "seq, type, sid, sub, jti, authz_ver, until"
    };
}
pub(crate) use feed_columns;

/// A JSON list of strings (roles, redirect URIs), as stored.
pub(crate) fn to_json<T: serde::Serialize>(list: &[T]) -> Result<String, DbError> {
    serde_json::to_string(list).map_err(|e| DbError::corrupt("a string list", e))
}

/// Parses a JSON list of strings read from `column`.
pub(crate) fn json_list(row: &dyn Row, i: usize, column: &str) -> Result<Vec<String>, DbError> {
    serde_json::from_str(&row.text(i)?).map_err(|e| DbError::corrupt(column, e))
}

/// A scope as stored where it is a JSON list of its names (a client's scopes, a consent).
pub(crate) fn scope_json(scope: &Scope) -> Result<String, DbError> {
    to_json(&scope.names().collect::<Vec<_>>())
}

/// Parses a scope stored as a JSON list of its names, read from `column`.
pub(crate) fn scope_list(row: &dyn Row, i: usize, column: &str) -> Result<Scope, DbError> {
    json_list(row, i, column).map(Scope::from_names)
}

/// A 32-byte hash read from `column`.
fn hash32(bytes: Vec<u8>, column: &str) -> Result<[u8; 32], DbError> {
    bytes.try_into().map_err(|b: Vec<u8>| DbError::corrupt(column, format!("{} bytes, not 32", b.len())))
}

/// A user from [`user_columns`] starting at column 0.
pub(crate) fn user(row: &dyn Row) -> Result<UserRecord, DbError> {
    let status = row.text(5)?;
    Ok(UserRecord {
        id: row.text(0)?.into(),
        username: row.text(1)?,
        password_hash: row.text(2)?,
        roles: json_list(row, 3, "users.roles")?,
        authz_ver: row.int(4)?,
        status: UserStatus::parse(&status).ok_or_else(|| DbError::corrupt("users.status", status))?,
        created_at: Timestamp(row.int(6)?),
        email: user_email(row.opt_text(7)?, row.opt_text(8)?, row.opt_int(9)?)?,
    })
}

/// An address with its key, or neither; one without the other is corrupt.
fn user_email(
    address: Option<String>,
    key: Option<String>,
    verified_at: Option<i64>,
) -> Result<Option<UserEmail>, DbError> {
    match (address, key) {
        (Some(address), Some(key)) => {
            Ok(Some(UserEmail { address, key, verified_at: verified_at.map(Timestamp) }))
        }
        (None, None) => Ok(None),
        _ => Err(DbError::corrupt("users.email_key", "an address without its key, or a key without one")),
    }
}

/// A link token from [`link_columns`].
pub(crate) fn link(row: &dyn Row) -> Result<LinkRecord, DbError> {
    let purpose = row.text(1)?;
    Ok(LinkRecord {
        hash: TokenHash(hash32(row.blob(0)?, "link_tokens.hash")?),
        purpose: LinkPurpose::parse(&purpose)
            .ok_or_else(|| DbError::corrupt("link_tokens.purpose", purpose))?,
        user_id: row.text(2)?.into(),
        email: row.text(3)?,
        email_key: row.text(4)?,
        created_at: Timestamp(row.int(5)?),
        expires_at: Timestamp(row.int(6)?),
        used_at: row.opt_int(7)?.map(Timestamp),
        voided_at: row.opt_int(8)?.map(Timestamp),
    })
}

/// A second factor from [`factor_columns`].
pub(crate) fn factor(row: &dyn Row) -> Result<FactorRecord, DbError> {
    Ok(FactorRecord {
        id: row.text(0)?,
        user_id: row.text(1)?.into(),
        kind: row.text(2)?,
        name: row.text(3)?,
        secret: row.blob(4)?,
        created_at: Timestamp(row.int(5)?),
        confirmed_at: row.opt_int(6)?.map(Timestamp),
        last_used_step: row.opt_int(7)?,
    })
}

/// A sign-in waiting for its factor, from [`mfa_challenge_columns`].
pub(crate) fn mfa_challenge(row: &dyn Row) -> Result<MfaChallengeRecord, DbError> {
    Ok(MfaChallengeRecord {
        hash: TokenHash(hash32(row.blob(0)?, "mfa_challenges.hash")?),
        user_id: row.text(1)?.into(),
        password_hash: row.text(2)?,
        created_at: Timestamp(row.int(3)?),
        expires_at: Timestamp(row.int(4)?),
        used_at: row.opt_int(5)?.map(Timestamp),
    })
}

/// A passkey ceremony's state, from [`passkey_challenge_columns`].
pub(crate) fn passkey_challenge(row: &dyn Row) -> Result<PasskeyChallengeRecord, DbError> {
    Ok(PasskeyChallengeRecord {
        id: row.text(0)?,
        user_id: row.opt_text(1)?.map(Into::into),
        state: row.text(2)?,
        created_at: Timestamp(row.int(3)?),
        expires_at: Timestamp(row.int(4)?),
    })
}

/// A queued mail from [`mail_columns`].
pub(crate) fn mail(row: &dyn Row) -> Result<MailRecord, DbError> {
    let state = row.text(9)?;
    Ok(MailRecord {
        id: row.int(0)?,
        kind: row.text(1)?,
        user_id: row.opt_text(2)?.map(Into::into),
        recipient: row.text(3)?,
        subject: row.text(4)?,
        text: row.opt_text(5)?,
        html: row.opt_text(6)?,
        created_at: Timestamp(row.int(7)?),
        expires_at: Timestamp(row.int(8)?),
        state: DeliveryState::parse(&state).ok_or_else(|| DbError::corrupt("outbox.state", state))?,
        attempts: row.int(10)?,
        next_attempt_at: Timestamp(row.int(11)?),
        last_error: row.opt_text(12)?,
        sent_at: row.opt_int(13)?.map(Timestamp),
    })
}

/// A device authorization from [`device_columns`].
pub(crate) fn device_authorization(row: &dyn Row) -> Result<DeviceAuthorizationRecord, DbError> {
    let state = row.text(8)?;
    Ok(DeviceAuthorizationRecord {
        device_code_hash: TokenHash(hash32(row.blob(0)?, "device_authorizations.device_code_hash")?),
        user_code: row.text(1)?,
        client_id: row.text(2)?.into(),
        scope: row.text(3)?.into(),
        created_at: Timestamp(row.int(4)?),
        expires_at: Timestamp(row.int(5)?),
        interval_secs: row.int(6)?,
        last_polled_at: row.opt_int(7)?.map(Timestamp),
        state: DeviceState::parse(&state)
            .ok_or_else(|| DbError::corrupt("device_authorizations.state", state))?,
        user_id: row.opt_text(9)?.map(Into::into),
        browser_session_id: row.opt_text(10)?.map(Into::into),
        decided_at: row.opt_int(11)?.map(Timestamp),
        session_id: row.opt_text(12)?.map(Into::into),
    })
}

/// A back-channel logout delivery from [`logout_delivery_columns`].
pub(crate) fn logout_delivery(row: &dyn Row) -> Result<LogoutDeliveryRecord, DbError> {
    let state = row.text(7)?;
    Ok(LogoutDeliveryRecord {
        id: row.int(0)?,
        client_id: row.text(1)?.into(),
        uri: row.text(2)?,
        user_id: row.text(3)?.into(),
        session_id: row.text(4)?.into(),
        created_at: Timestamp(row.int(5)?),
        expires_at: Timestamp(row.int(6)?),
        state: DeliveryState::parse(&state)
            .ok_or_else(|| DbError::corrupt("logout_deliveries.state", state))?,
        attempts: row.int(8)?,
        next_attempt_at: Timestamp(row.int(9)?),
        last_error: row.opt_text(10)?,
        sent_at: row.opt_int(11)?.map(Timestamp),
    })
}

/// A session from [`session_columns`] starting at column 0.
pub(crate) fn session(row: &dyn Row) -> Result<SessionRecord, DbError> {
    let reason = row.opt_text(11)?;
    Ok(SessionRecord {
        id: row.text(0)?.into(),
        user_id: row.text(1)?.into(),
        client_id: row.text(2)?.into(),
        scope: row.text(3)?.into(),
        created_at: Timestamp(row.int(4)?),
        last_used_at: Timestamp(row.int(5)?),
        idle_expires_at: Timestamp(row.int(6)?),
        expires_at: Timestamp(row.int(7)?),
        ip: row.opt_text(8)?,
        user_agent: row.opt_text(9)?,
        revoked_at: row.opt_int(10)?.map(Timestamp),
        // A reason a newer version wrote is reported as an admin revocation: the session is
        // revoked either way, and the revocation is the fact that matters.
        revoke_reason: reason.map(|r| ErrorReason::parse(&r).unwrap_or(ErrorReason::RevokedByAdmin)),
        amr: row.text(12)?,
        dpop_jkt: thumbprint(row.opt_text(13)?, "sessions.dpop_jkt")?,
        step_up_at: row.opt_int(14)?.map(Timestamp),
        browser_session_id: row.opt_text(15)?.map(Into::into),
        resources: json_list(row, 16, "sessions.resources")?,
    })
}

/// A stored DPoP key thumbprint; one of another form is corrupt.
fn thumbprint(stored: Option<String>, column: &str) -> Result<Option<Thumbprint>, DbError> {
    stored.map(|t| Thumbprint::parse(&t).ok_or_else(|| DbError::corrupt(column, t))).transpose()
}

/// An authorization code from [`code_columns`].
pub(crate) fn auth_code(row: &dyn Row) -> Result<AuthCodeRecord, DbError> {
    Ok(AuthCodeRecord {
        hash: TokenHash(hash32(row.blob(0)?, "auth_codes.hash")?),
        client_id: row.text(1)?.into(),
        user_id: row.text(2)?.into(),
        redirect_uri: row.text(3)?.into(),
        scope: row.text(4)?.into(),
        nonce: row.opt_text(5)?,
        code_challenge: row.text(6)?,
        auth_time: Timestamp(row.int(7)?),
        created_at: Timestamp(row.int(8)?),
        expires_at: Timestamp(row.int(9)?),
        used_at: row.opt_int(10)?.map(Timestamp),
        session_id: row.opt_text(11)?.map(Into::into),
        browser_session_id: row.opt_text(12)?.map(Into::into),
        dpop_jkt: thumbprint(row.opt_text(13)?, "auth_codes.dpop_jkt")?,
        resources: json_list(row, 14, "auth_codes.resources")?,
    })
}

/// A registered client from [`client_columns`].
pub(crate) fn client(row: &dyn Row) -> Result<ClientRecord, DbError> {
    let secret_hash = row.opt_blob(2)?.map(|h| hash32(h, "clients.secret_hash")).transpose()?;
    Ok(ClientRecord {
        client_id: row.text(0)?.into(),
        name: row.text(1)?,
        secret_hash: secret_hash.map(TokenHash),
        redirect_uris: json_list(row, 3, "clients.redirect_uris")?.into_iter().map(Into::into).collect(),
        grant_types: json_list(row, 4, "clients.grant_types")?,
        scopes: scope_list(row, 5, "clients.scopes")?,
        created_at: Timestamp(row.int(6)?),
        post_logout_redirect_uris: json_list(row, 7, "clients.post_logout_redirect_uris")?
            .into_iter()
            .map(Into::into)
            .collect(),
        backchannel_logout: row
            .opt_text(8)?
            .map(|uri| Ok::<_, DbError>(BackchannelLogout { uri, session_required: row.int(9)? != 0 }))
            .transpose()?,
        require_par: row.int(10)? != 0,
        resources: json_list(row, 11, "clients.resources")?,
        keys: match (row.opt_text(12)?, row.opt_text(13)?) {
            (Some(jwks), None) => Some(ClientKeys::Inline(jwks)),
            (None, Some(uri)) => Some(ClientKeys::Uri(uri)),
            (None, None) => None,
            (Some(_), Some(_)) => return Err(DbError::corrupt("clients.jwks", "both jwks and jwks_uri")),
        },
        registration_token_hash: row
            .opt_blob(14)?
            .map(|h| hash32(h, "clients.registration_token_hash"))
            .transpose()?
            .map(TokenHash),
    })
}

/// A signing key from [`key_columns`].
pub(crate) fn signing_key(row: &dyn Row) -> Result<StoredKey, DbError> {
    Ok(StoredKey {
        kid: row.text(0)?,
        alg: row.text(1)?,
        private_key: row.blob(2)?,
        created_at: Timestamp(row.int(3)?),
        activates_at: Timestamp(row.int(4)?),
    })
}

/// A throttle counter from `count, window_start, last_failure_at`.
pub(crate) fn throttle(row: &dyn Row) -> Result<ThrottleRecord, DbError> {
    Ok(ThrottleRecord {
        count: row.int(0)?,
        window_start: Timestamp(row.int(1)?),
        last_failure_at: Timestamp(row.int(2)?),
    })
}

/// A security event from `id, at, kind, user_id, session_id, ip, detail`.
pub(crate) fn security_event(row: &dyn Row) -> Result<SecurityEventRecord, DbError> {
    Ok(SecurityEventRecord {
        id: row.int(0)?,
        at: Timestamp(row.int(1)?),
        kind: row.text(2)?,
        user_id: row.opt_text(3)?.map(Into::into),
        session_id: row.opt_text(4)?.map(Into::into),
        ip: row.opt_text(5)?,
        detail: row.opt_text(6)?,
    })
}

/// A feed event from [`feed_columns`].
pub(crate) fn feed_event(row: &dyn Row) -> Result<FeedEventRecord, DbError> {
    let seq = row.int(0)?;
    let kind = row.text(1)?;
    let until = row.int(6)?;
    let needed = |i: usize, column: &str| {
        row.opt_text(i)?.ok_or_else(|| DbError::corrupt(column, format!("missing in a {kind} event")))
    };
    let event = match kind.as_str() {
        "session_revoked" => {
            RevocationEvent::SessionRevoked { seq, sid: needed(2, "revocation_events.sid")?, until }
        }
        "user_changed" => RevocationEvent::UserChanged {
            seq,
            sub: needed(3, "revocation_events.sub")?,
            authz_ver: row.opt_int(5)?.ok_or_else(|| {
                DbError::corrupt("revocation_events.authz_ver", "missing in a user_changed event")
            })?,
            until,
        },
        "token_revoked" => {
            RevocationEvent::TokenRevoked { seq, jti: needed(4, "revocation_events.jti")?, until }
        }
        _ => return Err(DbError::corrupt("revocation_events.type", kind)),
    };
    Ok(FeedEventRecord { seq, event })
}

/// A stored caller fingerprint (`refresh_tokens.retired_by`).
pub(crate) fn fingerprint(bytes: Vec<u8>) -> Result<CallerFingerprint, DbError> {
    hash32(bytes, "refresh_tokens.retired_by").map(CallerFingerprint)
}
