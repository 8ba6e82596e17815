//! DPoP for the client (SPEC 12): proofs on the requests of a bound session, the access
//! token as `Authorization: DPoP`, and the one retry a server's nonce asks for (RFC 9449
//! §8, §9). The key itself is the session's (`Tokens::key` in `lib.rs`).

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use latchkey_dpop::ProofKey;
use reqwest::StatusCode;

use crate::{Client, Error, wall_now};

impl Client {
    /// Sends the request `build` makes, with a fresh `DPoP` proof for `method url` when there
    /// is a `key` (with `ath` for `access`, the origin's latest nonce), and again once with a
    /// new proof when the server answers that it wants a nonce (RFC 9449 §8, §9).
    pub(crate) async fn send_proved(
        &self,
        key: Option<&ProofKey>,
        method: &reqwest::Method,
        url: &str,
        access: Option<&str>,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let Some(key) = key else {
            return build().send().await.map_err(Error::transport);
        };
        let origin = reqwest::Url::parse(url).map(|u| u.origin().ascii_serialization()).unwrap_or_default();
        let mut is_retry = false;
        loop {
            let nonce = lock(&self.inner.nonces).get(&origin).cloned();
            let proof = key
                .proof(method.as_str(), url, unix_now(), access, nonce.as_deref())
                .map_err(|_| Error::Dpop)?;
            let res = build().header("DPoP", proof).send().await.map_err(Error::transport)?;
            let Some(fresh) =
                res.headers().get("dpop-nonce").and_then(|v| v.to_str().ok()).map(str::to_owned)
            else {
                return Ok(res);
            };
            lock(&self.inner.nonces).insert(origin.clone(), fresh);
            let (res, wants_nonce) = wants_nonce(res).await?;
            if !wants_nonce || is_retry {
                return Ok(res);
            }
            is_retry = true;
        }
    }
}

/// The request with its access token: `DPoP` for a token bound to the session's key.
pub(crate) fn authorized(
    req: reqwest::RequestBuilder,
    access: &str,
    is_bound: bool,
) -> reqwest::RequestBuilder {
    if is_bound {
        req.header(reqwest::header::AUTHORIZATION, format!("DPoP {access}"))
    } else {
        req.bearer_auth(access)
    }
}

/// Seconds since the epoch, for proofs' `iat`.
fn unix_now() -> i64 {
    wall_now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether an answer asks for a DPoP nonce: `400 use_dpop_nonce` at a token endpoint, or a
/// `401` whose `DPoP` challenge says `use_dpop_nonce` at a resource. A `400` is read to tell,
/// so the answer is rebuilt for the caller.
async fn wants_nonce(res: reqwest::Response) -> Result<(reqwest::Response, bool), Error> {
    if res.status() == StatusCode::UNAUTHORIZED {
        let asks = res
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("use_dpop_nonce"));
        return Ok((res, asks));
    }
    if res.status() != StatusCode::BAD_REQUEST {
        return Ok((res, false));
    }
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.bytes().await.map_err(Error::transport)?;
    let asks = serde_json::from_slice::<serde_json::Value>(&body)
        .is_ok_and(|v| v.get("error").and_then(serde_json::Value::as_str) == Some("use_dpop_nonce"));
    let mut rebuilt = http::Response::new(body.to_vec());
    *rebuilt.status_mut() = status;
    *rebuilt.headers_mut() = headers;
    Ok((reqwest::Response::from(rebuilt), asks))
}
