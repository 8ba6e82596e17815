//! Baselines for the benchmarks, on the same axum, hyper and tokio as Latchkey:
//!
//! - `GET /hello`: a hello-world route, what `bench/whoami.sh` and `bench/compare.sh` measure
//!   notes-api's `GET /whoami` against;
//! - `POST /token`: the floor of a `client_credentials` token endpoint. It reads the form,
//!   compares the client secret, and answers one freshly signed Ed25519 JWT: no database, no
//!   client lookup, no middleware, no metrics. `bench/compare.sh` drives it with the same
//!   workload as Latchkey and the peer, so its figure is about the most a token endpoint on
//!   this stack that signs a JWT per request can reach on the machine
//!   (`GET /.well-known/openid-configuration` points the load tool at it).
//!
//! `cargo run --release -p notes-api --example hello -- 127.0.0.1:8091`

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

/// What `POST /token` needs: its own address and a signing key made at start.
struct Floor {
    base: String,
    key: Ed25519KeyPair,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8091".to_owned());
    let listener =
        tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("binding {listen}"))?;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let floor = Arc::new(Floor { base: format!("http://{listen}"), key });
    let app = Router::new()
        .route("/hello", get(|| async { "Hello, world!" }))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks.json", get(jwks))
        .route("/token", post(token))
        .with_state(floor);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn discovery(State(f): State<Arc<Floor>>) -> Json<serde_json::Value> {
    let base = &f.base;
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "introspection_endpoint": format!("{base}/introspect"),
        "jwks_uri": format!("{base}/jwks.json"),
    }))
}

async fn jwks(State(f): State<Arc<Floor>>) -> Json<serde_json::Value> {
    let x = URL_SAFE_NO_PAD.encode(f.key.public_key().as_ref());
    Json(json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "floor", "alg": "EdDSA"}]}))
}

/// The least a `client_credentials` answer takes: any client id, secret `floor`.
async fn token(State(f): State<Arc<Floor>>, Form(form): Form<HashMap<String, String>>) -> Response {
    let field = |k: &str| form.get(k).map_or("", String::as_str);
    if field("grant_type") != "client_credentials" || field("client_secret") != "floor" {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_request"}))).into_response();
    }
    #[expect(clippy::disallowed_methods, reason = "a baseline with no clock to inject")]
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut jti = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut jti).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "floor"});
    let claims = json!({
        "iss": f.base, "aud": f.base, "sub": field("client_id"), "client_id": field("client_id"),
        "scope": field("scope"), "iat": now, "exp": now + 300, "jti": URL_SAFE_NO_PAD.encode(jti),
    });
    let mut jwt = URL_SAFE_NO_PAD.encode(header.to_string());
    jwt.push('.');
    jwt.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = f.key.sign(jwt.as_bytes());
    jwt.push('.');
    jwt.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
    Json(json!({"access_token": jwt, "token_type": "Bearer", "expires_in": 300, "scope": field("scope")}))
        .into_response()
}
