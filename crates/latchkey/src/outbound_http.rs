//! The server's outbound HTTP (SPEC 13), with hyper's client over rustls: back-channel
//! logout tokens POSTed to an app's `backchannel_logout_uri`, and `private_key_jwt`
//! clients' key sets fetched from their `jwks_uri`. The URIs come from operators, but a
//! slow or hostile receiver must not hurt the server: connecting and the whole exchange
//! time out, no redirect is followed (hyper follows none: a logout token goes only where
//! it was registered to go), and at most [`MAX_RESPONSE_BYTES`] of a logout answer, or
//! [`MAX_JWKS_BYTES`] of a key set, are read.

use std::time::Duration;

use async_trait::async_trait;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use latchkey_core::backchannel::LogoutTransport;
use latchkey_core::client_assertion::{JwksFetcher, MAX_JWKS_BYTES};

use latchkey_core::outbox::DeliveryError;

/// The most of a receiver's answer read (into the delivery's `last_error`).
pub const MAX_RESPONSE_BYTES: usize = 4096;
/// How long connecting (TCP) may take; TLS and the answer share [`POST_TIMEOUT`](latchkey_core::backchannel::POST_TIMEOUT).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The outbound client (cheap to clone: the connection pool is shared).
#[derive(Clone)]
pub struct OutboundHttp {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl OutboundHttp {
    /// A client with the system's roots and the timeouts above.
    ///
    /// # Errors
    /// When the system's roots cannot be loaded.
    pub fn new() -> anyhow::Result<Self> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self { client: Client::builder(TokioExecutor::new()).build(https) })
    }

    async fn exchange(&self, uri: &str, logout_token: &str) -> Result<(), DeliveryError> {
        let req = hyper::Request::post(uri)
            .header(hyper::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(hyper::header::CACHE_CONTROL, "no-store")
            .header(hyper::header::USER_AGENT, concat!("latchkey/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(format!("logout_token={logout_token}"))))
            .map_err(|e| DeliveryError::Permanent(format!("cannot build the request: {e}")))?;
        let res = self.client.request(req).await.map_err(|e| DeliveryError::Transient(one_line(&e)))?;
        let status = res.status();
        if status.is_success() {
            return Ok(());
        }
        // What fits under the cap; a longer answer is cut off, not read on.
        let body = match Limited::new(res.into_body(), MAX_RESPONSE_BYTES).collect().await {
            Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            Err(_) => String::from("(an answer longer than the cap)"),
        };
        let said: String = body.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect();
        let error = format!("HTTP {status}: {said}");
        // Back-Channel Logout §2.8: a 400 is the app refusing the token; sending the same
        // claims again will not change its mind. Anything else may pass.
        if status == hyper::StatusCode::BAD_REQUEST {
            Err(DeliveryError::Permanent(error))
        } else {
            Err(DeliveryError::Transient(error))
        }
    }
}

/// An error and its causes, in one line.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[async_trait]
impl LogoutTransport for OutboundHttp {
    /// The sender bounds the whole exchange by [`POST_TIMEOUT`](latchkey_core::backchannel::POST_TIMEOUT).
    async fn post(&self, uri: &str, logout_token: &str) -> Result<(), DeliveryError> {
        self.exchange(uri, logout_token).await
    }
}

#[async_trait]
impl JwksFetcher for OutboundHttp {
    async fn fetch(&self, uri: &str) -> Result<String, String> {
        let get = async {
            let req = hyper::Request::get(uri)
                .header(hyper::header::ACCEPT, "application/jwk-set+json, application/json")
                .body(Full::new(Bytes::new()))
                .map_err(|e| format!("cannot build the request: {e}"))?;
            let res = self.client.request(req).await.map_err(|e| one_line(&e))?;
            if !res.status().is_success() {
                return Err(format!("HTTP {}", res.status()));
            }
            let body = Limited::new(res.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|_| format!("larger than {MAX_JWKS_BYTES} bytes, or cut off"))?;
            String::from_utf8(body.to_bytes().to_vec()).map_err(|_| "not UTF-8".to_owned())
        };
        tokio::time::timeout(latchkey_core::backchannel::POST_TIMEOUT, get)
            .await
            .unwrap_or_else(|_| Err("no answer in time".to_owned()))
    }
}
