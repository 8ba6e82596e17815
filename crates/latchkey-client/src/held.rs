//! The tokens a client holds for its session, and the form a `TokenStorage` keeps them in.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use latchkey_dpop::ProofKey;
use latchkey_proto::RefreshToken;
use serde::{Deserialize, Serialize};

use crate::{ReceivedTokens, wall_now};

/// The held tokens.
#[derive(Clone)]
pub(crate) struct Tokens {
    pub(crate) access: String,
    /// The session's DPoP key, when the server bound the tokens to it.
    pub(crate) key: Option<Arc<ProofKey>>,
    pub(crate) refresh: Option<RefreshToken>,
    pub(crate) session_id: Option<String>,
    pub(crate) expires_at: SystemTime,
    /// The same moment on the monotonic clock, for refresh decisions.
    pub(crate) expires: Instant,
}

/// The persisted form.
#[derive(Serialize, Deserialize)]
struct Stored {
    access_token: String,
    refresh_token: Option<String>,
    session_id: Option<String>,
    expires_at: u64,
}

impl Tokens {
    /// Tokens from a token answer; `key` is the one the request's proof was made with, kept
    /// when the server bound the tokens to it.
    pub(crate) fn from_answer(
        t: ReceivedTokens,
        keep_refresh: Option<RefreshToken>,
        key: Option<Arc<ProofKey>>,
    ) -> Self {
        let lifetime = Duration::from_secs(t.expires_in);
        let is_bound = t.token_type.as_deref().is_some_and(|tt| tt.eq_ignore_ascii_case("dpop"));
        Self {
            access: t.access_token,
            key: key.filter(|_| is_bound),
            refresh: t.refresh_token.or(keep_refresh),
            session_id: t.session_id,
            expires_at: wall_now() + lifetime,
            expires: Instant::now() + lifetime,
        }
    }

    pub(crate) fn stored(&self) -> String {
        let expires_at = self.expires_at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let s = Stored {
            access_token: self.access.clone(),
            refresh_token: self.refresh.as_ref().map(|r| r.expose_secret().to_owned()),
            session_id: self.session_id.clone(),
            expires_at,
        };
        serde_json::to_string(&s).unwrap_or_default()
    }

    pub(crate) fn restored(text: &str) -> Option<Self> {
        let s: Stored = serde_json::from_str(text).ok()?;
        let expires_at = SystemTime::UNIX_EPOCH + Duration::from_secs(s.expires_at);
        let left = expires_at.duration_since(wall_now()).unwrap_or_default();
        Some(Self {
            access: s.access_token,
            key: None,
            refresh: s.refresh_token.map(RefreshToken::new),
            session_id: s.session_id,
            expires_at,
            expires: Instant::now() + left,
        })
    }
}
