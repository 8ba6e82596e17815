//! Refresh-token rotation (SPEC 4) as a pure decision plus one atomic store call.
//!
//! [`decide`] is the whole policy: revoked and expired sessions are refused; a live token
//! rotates; the newest retired token, presented again within the grace window, before its
//! successor has been used and by the caller that rotated it (the session's DPoP key when
//! it is bound, SPEC 12; otherwise the same IP network and user agent, see `caller.rs`), is
//! a benign concurrent refresh and gets the same successor; a bound session's token without
//! its key is theft;
//! any other retired token is reuse and revokes the session, whatever else is wrong with
//! the request (a scope beyond the grant is judged only after the token's state). The store runs `decide` inside
//! the rotation's transaction, so concurrent refreshes of one token see each other's writes
//! and yield exactly one successor.

use std::time::Duration;

use latchkey_proto::auth::TokenResponse;
use latchkey_proto::{ErrorReason, RefreshToken};

use crate::caller::Caller;
use crate::caller::CallerFingerprint;
use crate::clock::Timestamp;
use crate::crypto::{RefreshTokenKey, new_refresh_token, open_successor, seal_successor};
use crate::ids::{ClientId, Scope};
use crate::keys::KeyError;
use crate::metrics::RefreshOutcome;
use crate::risk::{Observed, RiskAction, RiskPolicy};
use crate::service::Latchkey;
use crate::settings::{BindingPolicy, Settings};
use crate::store::{
    NewSecurityEvent, RefreshSnapshot, RotationDecision, SessionRevocation, StoreError, Touch, UserStatus,
};
use crate::tokens::token_type;

/// The security event of a bound session's token presented without its key (SPEC 12).
pub const DPOP_KEY_MISMATCH: &str = "dpop_key_mismatch";
/// The security event of a refresh that risk did not simply allow (SPEC 12); its detail
/// names the action, the score and the signals.
pub const REFRESH_RISK: &str = "refresh_risk";
/// The security event of a session refreshed from another user agent under
/// `binding = "log"`; of all events, only this one repeats quietly ([`crate::store::ANOMALY_QUIET`]).
pub const BINDING_ANOMALY: &str = "binding_anomaly";

/// Refresh failures.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// `invalid_grant` with this reason.
    #[error("refresh refused: {}", .0.as_str())]
    Refused(ErrorReason),
    /// The request asked for a scope the session does not hold (`invalid_scope`).
    #[error("the scope exceeds what was granted")]
    ScopeExceeded,
    /// The request asked for a resource the session was not granted (`invalid_target`).
    #[error("the resource was not granted")]
    TargetExceeded,
    /// Signing.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The sealed successor could not be opened or sealed (a server fault).
    #[error("successor sealing failed")]
    Sealing,
}

/// The settings a rotation decision depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// The grace window; zero disables it.
    pub refresh_grace: Duration,
    /// Idle timeout.
    pub session_idle_ttl: Duration,
    /// Binding policy.
    pub binding: BindingPolicy,
    /// How long a revocation's feed event must be remembered.
    pub revocation_horizon: Duration,
    /// `risk_policy`.
    pub risk: RiskPolicy,
    /// The fastest a client refreshes (see `risk.rs`).
    pub cadence_floor: Duration,
}

impl From<&Settings> for RotationPolicy {
    fn from(s: &Settings) -> Self {
        Self {
            refresh_grace: s.refresh_grace,
            session_idle_ttl: s.session_idle_ttl,
            binding: s.binding,
            revocation_horizon: s.revocation_horizon(),
            risk: s.risk,
            cadence_floor: crate::risk::cadence_floor(s.access_token_ttl),
        }
    }
}

/// What a token request asked of a refresh besides the token: a narrower `scope`, and
/// `resource`s (RFC 8707) for the access token's `aud`.
#[derive(Debug, Clone, Default)]
pub struct Requested {
    /// The scope asked, when asked.
    pub scope: Option<Scope>,
    /// The resources asked; none means all the session's.
    pub resources: Vec<String>,
}

/// Inputs to a decision besides the snapshot. Owned, so the store may run the decision on
/// its own thread.
#[derive(Debug, Clone)]
pub struct RefreshContext {
    /// The client presenting the token: a session's tokens work only for its client.
    pub client_id: ClientId,
    /// Now.
    pub now: Timestamp,
    /// Settings.
    pub policy: RotationPolicy,
    /// The caller.
    pub caller: Caller,
    /// The scope the request asked for (the token endpoint's `scope`), when it asked.
    pub requested_scope: Option<Scope>,
    /// The resources the request asked for (RFC 8707), if any: within the session's.
    pub requested_resources: Vec<String>,
    /// Hash of the successor to install if the token rotates.
    pub successor: RefreshTokenKey,
    /// The successor sealed under the presented token.
    pub successor_sealed: Vec<u8>,
    /// The user has just signed in again (`POST /auth/step-up`): a step-up wait ends, and
    /// this refresh is not scored.
    pub is_stepped_up: bool,
}

fn event(
    ctx: &RefreshContext,
    snap: &RefreshSnapshot,
    kind: &'static str,
    detail: Option<String>,
) -> NewSecurityEvent {
    NewSecurityEvent {
        at: ctx.now,
        kind,
        user_id: Some(snap.user.id.clone()),
        session_id: Some(snap.session.id.clone()),
        ip: ctx.caller.ip.clone(),
        detail,
    }
}

fn revoke(
    ctx: &RefreshContext,
    snap: &RefreshSnapshot,
    reason: ErrorReason,
    kind: &'static str,
    detail: Option<String>,
) -> RotationDecision {
    RotationDecision::Revoke {
        revocation: SessionRevocation {
            reason,
            now: ctx.now,
            until: ctx.now.plus(ctx.policy.revocation_horizon),
            event: event(ctx, snap, kind, detail),
        },
    }
}

/// The rotation policy. Pure: everything it needs is in its arguments.
pub fn decide(snap: &RefreshSnapshot, ctx: &RefreshContext) -> RotationDecision {
    let session = &snap.session;
    let now = ctx.now;
    // Another client's token is not this client's to use (RFC 6749 §6): unknown to it, and
    // nothing to revoke on its word.
    if session.client_id != ctx.client_id {
        return RotationDecision::Refuse { reason: ErrorReason::UnknownToken };
    }
    if session.revoked_at.is_some() {
        let reason = session.revoke_reason.unwrap_or(ErrorReason::RevokedByAdmin);
        return RotationDecision::Refuse { reason };
    }
    if snap.user.status != UserStatus::Active {
        return RotationDecision::Refuse { reason: ErrorReason::UserDisabled };
    }
    if now >= session.expires_at {
        return RotationDecision::Refuse { reason: ErrorReason::SessionExpired };
    }
    if now >= session.idle_expires_at {
        return RotationDecision::Refuse { reason: ErrorReason::IdleExpired };
    }

    // Key continuity (SPEC 12): a bound session's every refresh must prove its key. `None`
    // for a Bearer session; `Some(false)` for another key or no proof, which is theft
    // whatever the token's state.
    let has_session_key =
        session.dpop_jkt.as_ref().map(|bound| ctx.caller.dpop.as_ref().is_some_and(|key| key.ct_eq(bound)));
    let key_mismatch = |token: &str| {
        let detail = Some(format!(
            "{token} token presented {}",
            if ctx.caller.dpop.is_some() { "with another DPoP key" } else { "without a DPoP proof" }
        ));
        revoke(ctx, snap, ErrorReason::ReuseDetected, DPOP_KEY_MISMATCH, detail)
    };

    // A retired token is reuse unless it is the benign concurrent retry of SPEC 4: inside
    // the grace window, before its successor was used, and from the caller that rotated it
    // (the session's key when it has one; otherwise the same IP network and user agent).
    // Without the caller bound, a thief holding a copy could wait for the victim to rotate
    // (the device list shows when) and collect the victim's successor inside the window.
    // Decided before binding and before the requested scope, so theft is reported as theft
    // whatever else the thief sends.
    if let Some(retired_at) = snap.token.retired_at {
        if has_session_key == Some(false) {
            return key_mismatch("retired");
        }
        let grace = i64::try_from(ctx.policy.refresh_grace.as_secs()).unwrap_or(i64::MAX);
        let is_within_window = grace > 0 && now.seconds_since(retired_at) <= grace;
        let is_same_caller = has_session_key.unwrap_or_else(|| {
            snap.token.retired_by.is_some_and(|by| by.ct_eq(&CallerFingerprint::of(&ctx.caller)))
        });
        let is_benign_retry = is_within_window
            && !snap.token.is_successor_used
            && snap.token.successor_sealed.is_some()
            && is_same_caller;
        if !is_benign_retry {
            let detail = Some(format!(
                "retired {} s ago; successor {}; {}",
                now.seconds_since(retired_at),
                if snap.token.is_successor_used { "already used" } else { "unused" },
                if is_same_caller { "same caller" } else { "another caller than the rotation's" }
            ));
            return revoke(ctx, snap, ErrorReason::ReuseDetected, "refresh_token_reuse", detail);
        }
    } else if has_session_key == Some(false) {
        return key_mismatch("live");
    }

    // A session waiting for its user to sign in again (risk's `step_up`) stays waiting; theft
    // was judged above, so a thief's replay still revokes it.
    if session.step_up_at.is_some() && !ctx.is_stepped_up {
        return RotationDecision::Refuse { reason: ErrorReason::StepUpRequired };
    }

    // Binding (SPEC 4): a different user agent than the login's. A bound session's key
    // says more than its user agent, which changes with every browser update.
    let is_foreign_agent = has_session_key.is_none()
        && session.user_agent.is_some()
        && ctx.caller.user_agent != session.user_agent;
    let mut anomaly = None;
    if is_foreign_agent {
        let detail = Some(format!(
            "user agent changed from {:?} to {:?}",
            session.user_agent.as_deref().unwrap_or(""),
            ctx.caller.user_agent.as_deref().unwrap_or("")
        ));
        match ctx.policy.binding {
            BindingPolicy::Off => {}
            BindingPolicy::Log => anomaly = Some(event(ctx, snap, BINDING_ANOMALY, detail)),
            BindingPolicy::Deny => {
                return revoke(ctx, snap, ErrorReason::BindingMismatch, "binding_denied", detail);
            }
        }
    }

    // RFC 6749 §6: a scope beyond the grant is refused, and nothing rotates.
    if let Some(asked) = &ctx.requested_scope
        && !session.scope.covers(asked)
    {
        return RotationDecision::ScopeExceeded;
    }

    if ctx.requested_resources.iter().any(|r| !session.resources.contains(r)) {
        return RotationDecision::TargetExceeded;
    }

    // Risk (SPEC 12), for what would otherwise go through.
    let mut events: Vec<NewSecurityEvent> = anomaly.into_iter().collect();
    let mut shortened = false;
    if !ctx.is_stepped_up && ctx.policy.risk.is_on() {
        // A bound session's key already proves the caller is its client, wherever it is: a
        // phone moving between networks is no signal.
        let is_proven = has_session_key == Some(true);
        let observed = Observed {
            now,
            last_used_at: session.last_used_at,
            last_ip: session.ip.as_deref().filter(|_| !is_proven),
            sign_in_agent: session.user_agent.as_deref(),
            ip: ctx.caller.ip.as_deref(),
            agent: ctx.caller.user_agent.as_deref(),
            is_grace_hit: snap.token.retired_at.is_some(),
            cadence_floor: ctx.policy.cadence_floor,
        };
        let signals = crate::risk::signals(&observed);
        let score = crate::risk::score(&signals);
        let action = ctx.policy.risk.action(score);
        let names: Vec<&str> = signals.iter().map(|s| s.as_str()).collect();
        let risk_event = || {
            event(
                ctx,
                snap,
                REFRESH_RISK,
                Some(format!("{}: score {score} ({})", action.as_str(), names.join(", "))),
            )
        };
        match action {
            RiskAction::Allow => {}
            RiskAction::Shorten => {
                shortened = true;
                events.push(risk_event());
            }
            RiskAction::StepUp => return RotationDecision::StepUp { at: now, event: risk_event() },
            RiskAction::Revoke => {
                let detail = risk_event().detail;
                return revoke(ctx, snap, ErrorReason::SuspiciousRefresh, REFRESH_RISK, detail);
            }
        }
    }

    let touch = Touch {
        now,
        idle_expires_at: now.plus(ctx.policy.session_idle_ttl).min(session.expires_at),
        ip: ctx.caller.ip.clone().or_else(|| session.ip.clone()),
        ends_step_up_wait: ctx.is_stepped_up,
    };
    match snap.token.retired_at {
        None => RotationDecision::Rotate {
            retired_by: CallerFingerprint::of(&ctx.caller),
            successor: ctx.successor,
            successor_sealed: ctx.successor_sealed.clone(),
            touch,
            events,
            shortened,
        },
        Some(_) => RotationDecision::Replay { touch, events, shortened },
    }
}

impl Latchkey {
    /// Rotates a first-party refresh token (SPEC 4, 5.1 `POST /auth/refresh`).
    ///
    /// # Errors
    /// [`RefreshError::Refused`] with the reason for every refusal.
    pub async fn refresh(
        &self,
        presented: &RefreshToken,
        caller: &Caller,
    ) -> Result<TokenResponse, RefreshError> {
        let client = ClientId::from(crate::login::FIRST_PARTY_CLIENT_ID);
        self.refresh_for(&client, presented, Requested::default(), caller).await
    }

    /// Rotates a refresh token presented by `client_id` (the first-party API, or an app at
    /// the token endpoint): the same engine, grace window and reuse detection for both.
    /// `requested` is the token request's `scope` and `resource`s, which may narrow the
    /// grant but not widen it.
    ///
    /// # Errors
    /// [`RefreshError::Refused`] with the reason for every refusal;
    /// [`RefreshError::ScopeExceeded`].
    pub async fn refresh_for(
        &self,
        client_id: &ClientId,
        presented: &RefreshToken,
        requested: Requested,
        caller: &Caller,
    ) -> Result<TokenResponse, RefreshError> {
        self.rotate(client_id, presented, requested, caller, false).await
    }

    /// The rotation itself; `is_stepped_up` after the user signed in again (see
    /// [`RefreshContext::is_stepped_up`]).
    pub(crate) async fn rotate(
        &self,
        client_id: &ClientId,
        presented: &RefreshToken,
        requested: Requested,
        caller: &Caller,
        is_stepped_up: bool,
    ) -> Result<TokenResponse, RefreshError> {
        if !presented.expose_secret().starts_with(RefreshToken::PREFIX) {
            self.metrics.refresh(RefreshOutcome::Refused);
            return Err(RefreshError::Refused(ErrorReason::UnknownToken));
        }
        let now = self.clock.now();
        let successor = new_refresh_token();
        let successor_sealed = seal_successor(presented, &successor).ok_or(RefreshError::Sealing)?;
        let ctx = RefreshContext {
            client_id: client_id.clone(),
            now,
            policy: RotationPolicy::from(&self.settings),
            caller: caller.clone(),
            requested_scope: requested.scope,
            requested_resources: requested.resources.clone(),
            successor: RefreshTokenKey::of(successor.expose_secret()),
            successor_sealed,
            is_stepped_up,
        };
        let presented_key = RefreshTokenKey::of(presented.expose_secret());
        let outcome =
            self.store.rotate_refresh_token(&presented_key, Box::new(move |snap| decide(snap, &ctx))).await?;
        let Some((snap, decision)) = outcome else {
            self.metrics.refresh(RefreshOutcome::Refused);
            return Err(RefreshError::Refused(ErrorReason::UnknownToken));
        };
        let (refresh_token, shortened) = match decision {
            RotationDecision::Rotate { shortened, .. } => {
                self.metrics.refresh(RefreshOutcome::Rotated);
                (successor, shortened)
            }
            RotationDecision::Replay { shortened, .. } => {
                self.metrics.refresh(RefreshOutcome::Grace);
                let sealed = snap.token.successor_sealed.as_deref().ok_or(RefreshError::Sealing)?;
                (open_successor(presented, sealed).ok_or(RefreshError::Sealing)?, shortened)
            }
            RotationDecision::StepUp { .. } => {
                self.metrics.refresh(RefreshOutcome::Refused);
                self.metrics.risk(RiskAction::StepUp);
                tracing::warn!(sid = %snap.session.id, sub = %snap.user.id, "risky refresh; the user must sign in again");
                return Err(RefreshError::Refused(ErrorReason::StepUpRequired));
            }
            RotationDecision::Revoke { revocation } => {
                if revocation.event.kind == DPOP_KEY_MISMATCH {
                    let outcome = match caller.dpop {
                        Some(_) => RefreshOutcome::DpopKeyMismatch,
                        None => RefreshOutcome::DpopProofMissing,
                    };
                    self.metrics.refresh(outcome);
                    tracing::warn!(sid = %snap.session.id, sub = %snap.user.id, "refresh without the session's DPoP key; session revoked");
                } else if revocation.event.kind == REFRESH_RISK {
                    self.metrics.refresh(RefreshOutcome::Refused);
                    self.metrics.risk(RiskAction::Revoke);
                    tracing::warn!(sid = %snap.session.id, sub = %snap.user.id, "risky refresh; session revoked");
                } else if revocation.reason == ErrorReason::ReuseDetected {
                    self.metrics.refresh(RefreshOutcome::ReuseDetected);
                    tracing::warn!(sid = %snap.session.id, sub = %snap.user.id, "refresh token reuse detected; session revoked");
                } else {
                    self.metrics.refresh(RefreshOutcome::Refused);
                }
                self.metrics.revocations(revocation.reason.as_str(), 1);
                self.feed.changed();
                return Err(RefreshError::Refused(revocation.reason));
            }
            RotationDecision::Refuse { reason } => {
                self.metrics.refresh(RefreshOutcome::Refused);
                return Err(RefreshError::Refused(reason));
            }
            RotationDecision::ScopeExceeded => {
                self.metrics.refresh(RefreshOutcome::Refused);
                return Err(RefreshError::ScopeExceeded);
            }
            RotationDecision::TargetExceeded => {
                self.metrics.refresh(RefreshOutcome::Refused);
                return Err(RefreshError::TargetExceeded);
            }
        };
        let lifetime = if shortened {
            self.metrics.risk(RiskAction::Shorten);
            crate::risk::SHORT_ACCESS_TOKEN.min(self.settings.access_token_ttl)
        } else {
            self.settings.access_token_ttl
        };
        let audience = if requested.resources.is_empty() {
            snap.session.resources.as_slice()
        } else {
            &requested.resources
        };
        let access_token =
            self.mint_access_token(&snap.user, &snap.session, caller.dpop.as_ref(), audience, lifetime, now)?;
        Ok(TokenResponse {
            access_token,
            token_type: token_type(caller.dpop.as_ref()),
            expires_in: self.access_token_lifetime(&snap.session, lifetime, now),
            refresh_token,
            session_id: snap.session.id.into_string(),
            scope: snap.session.scope.into_string(),
        })
    }
}

#[cfg(test)]
mod tests;
