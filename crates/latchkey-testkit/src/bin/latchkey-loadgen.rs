//! The load tool of `bench/`: drives one workload at one server over loopback with N
//! connections for S seconds and prints one line of figures (`key=value` pairs: requests/s,
//! p50, p90, p99, max, errors). The same tool drives Latchkey and the peer provider, so the
//! figures compare like with like.
//!
//! ```text
//! latchkey-loadgen --url http://127.0.0.1:8080 --connections 64 --seconds 10 [--login-flood 4]
//! latchkey-loadgen --url URL --workload oauth-refresh --seed latchkey|peer --client-id ID --client-secret S
//! latchkey-loadgen --url URL --workload client-credentials|introspect|jwks --client-id ID --client-secret S
//! ```
//!
//! Workloads:
//! - `refresh` (default): Latchkey's first-party `POST /auth/refresh`; each connection
//!   rotates its own chain (every refresh token used exactly once). `--login-flood N` adds N
//!   connections logging in meanwhile (their rate is reported).
//! - `oauth-refresh`: the same through the OAuth token endpoint (`grant_type=refresh_token`,
//!   client authenticated by `client_secret_post`). Chains are seeded with `--seed latchkey`
//!   (authorization code flow with PKCE through Latchkey's sign-in and consent pages) or
//!   `--seed peer` (the peer's bench-only `POST /bench/seed?n=N`).
//! - `client-credentials`: `grant_type=client_credentials` with `--scope`.
//! - `introspect`: RFC 7662 introspection of a refresh token (seeded as for `oauth-refresh`;
//!   opaque on both servers, so both look it up).
//! - `introspect-access`: introspection of an access token, what resource servers send: a
//!   `client_credentials` token of the client itself: a JWT on Latchkey; on the peer, which
//!   does not introspect JWTs, an opaque one (`--resource https://api-opaque.example`).
//! - `jwks`: `GET` of the `jwks_uri`.
//! - `get`: `GET --path P` (with `--bearer TOKEN` if given), expecting 200: an API route.
//!
//! `--dpop` adds a fresh DPoP proof (RFC 9449, ES256, one key for the run) to every token
//! request of `refresh`, `oauth-refresh` and `client-credentials`, and to the sign-ins that
//! seed `refresh`, so those sessions are bound to the key. With `get`, `--dpop --sign-in
//! LATCHKEY_URL` signs in there with a proof and sends the bound token as
//! `Authorization: DPoP` with a fresh proof (and `ath`) on every request.
//!
//! Endpoints come from the server's `/.well-known/openid-configuration`, so the issuer must
//! be the address the tool talks to.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a benchmark tool fails loudly"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use latchkey_testkit::html::hidden_fields;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Refresh,
    OauthRefresh,
    ClientCredentials,
    Introspect,
    IntrospectAccess,
    Jwks,
    Get,
}

struct Args {
    url: String,
    connections: usize,
    seconds: u64,
    login_flood: usize,
    workload: Workload,
    seed: String,
    client_id: String,
    client_secret: String,
    redirect_uri: String,
    scope: String,
    path: String,
    bearer: Option<String>,
    /// RFC 8707 `resource` for the token `introspect-access` introspects.
    resource: Option<String>,
    /// The DPoP key, with `--dpop`.
    dpop: Option<latchkey_dpop::ProofKey>,
    /// Where `get --dpop` signs in for its bound token.
    sign_in: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        connections: 16,
        seconds: 10,
        login_flood: 0,
        workload: Workload::Refresh,
        seed: "latchkey".into(),
        client_id: String::new(),
        client_secret: String::new(),
        redirect_uri: "http://127.0.0.1/cb".into(),
        scope: "api".into(),
        path: "/".into(),
        bearer: None,
        resource: None,
        dpop: None,
        sign_in: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value(),
            "--connections" => a.connections = value().parse().expect("--connections N"),
            "--seconds" => a.seconds = value().parse().expect("--seconds N"),
            "--login-flood" => a.login_flood = value().parse().expect("--login-flood N"),
            "--workload" => {
                a.workload = match value().as_str() {
                    "refresh" => Workload::Refresh,
                    "oauth-refresh" => Workload::OauthRefresh,
                    "client-credentials" => Workload::ClientCredentials,
                    "introspect" => Workload::Introspect,
                    "introspect-access" => Workload::IntrospectAccess,
                    "jwks" => Workload::Jwks,
                    "get" => Workload::Get,
                    other => panic!("unknown workload {other}; see the file's doc comment"),
                }
            }
            "--seed" => a.seed = value(),
            "--client-id" => a.client_id = value(),
            "--client-secret" => a.client_secret = value(),
            "--redirect-uri" => a.redirect_uri = value(),
            "--scope" => a.scope = value(),
            "--path" => a.path = value(),
            "--bearer" => a.bearer = Some(value()),
            "--resource" => a.resource = Some(value()),
            "--sign-in" => a.sign_in = Some(value()),
            "--dpop" => a.dpop = Some(latchkey_dpop::ProofKey::generate_es256().expect("a DPoP key")),
            other => panic!("unknown flag {other}; see the file's doc comment"),
        }
    }
    a
}

/// The request with a fresh DPoP proof for `POST url` when the run has a key.
fn proved(req: reqwest::RequestBuilder, a: &Args, url: &str) -> reqwest::RequestBuilder {
    proved_for(req, a, "POST", url, None)
}

/// The request with a fresh DPoP proof for `method url` (and `ath` of `token`) when the
/// run has a key.
fn proved_for(
    req: reqwest::RequestBuilder,
    a: &Args,
    method: &str,
    url: &str,
    token: Option<&str>,
) -> reqwest::RequestBuilder {
    let Some(key) = &a.dpop else { return req };
    #[expect(clippy::disallowed_methods, reason = "proofs carry the real time the server checks")]
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let proof = key.proof(method, url, i64::try_from(now).expect("time"), token, None).expect("a proof");
    req.header("DPoP", proof)
}

/// Sends a request; returns the status (0 when there was no answer) and the JSON body.
async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    match req.send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            (status, res.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx]) / 1000.0
}

/// The server's endpoints, from its discovery document.
#[derive(Clone)]
struct Endpoints {
    authorize: String,
    token: String,
    introspect: String,
    jwks: String,
}

async fn discover(client: &reqwest::Client, base: &str) -> Endpoints {
    let (status, d) = call(client.get(format!("{base}/.well-known/openid-configuration"))).await;
    assert_eq!(status, 200, "discovery failed: {d}");
    let field =
        |name: &str| d[name].as_str().unwrap_or_else(|| panic!("discovery has no {name}: {d}")).to_owned();
    Endpoints {
        authorize: field("authorization_endpoint"),
        token: field("token_endpoint"),
        introspect: field("introspection_endpoint"),
        jwks: field("jwks_uri"),
    }
}

/// What one connection needs to send its next request.
struct Conn {
    client: reqwest::Client,
    args: Arc<Args>,
    endpoints: Option<Endpoints>,
    /// The refresh token to use next (refresh workloads) or the token to introspect.
    token: String,
}

impl Conn {
    fn endpoints(&self) -> &Endpoints {
        self.endpoints.as_ref().expect("endpoints")
    }

    /// One request of the workload; `Err` describes a failure.
    async fn step(&mut self) -> Result<(), String> {
        let a = &self.args;
        let (status, body, expect_token) = match a.workload {
            Workload::Refresh => {
                let url = format!("{}/auth/refresh", a.url);
                let req = self.client.post(&url).json(&json!({"refresh_token": self.token}));
                let (s, b) = call(proved(req, a, &url)).await;
                (s, b, true)
            }
            Workload::OauthRefresh => {
                let form = [
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &self.token),
                    ("client_id", &a.client_id),
                    ("client_secret", &a.client_secret),
                ];
                let token = &self.endpoints().token;
                let (s, b) = call(proved(self.client.post(token).form(&form), a, token)).await;
                (s, b, true)
            }
            Workload::ClientCredentials => {
                let token = &self.endpoints().token;
                let (s, b) =
                    call(proved(self.client.post(token).form(&client_credentials(a)), a, token)).await;
                let ok = b["access_token"].is_string();
                return if s == 200 && ok { Ok(()) } else { Err(format!("{s} {b}")) };
            }
            Workload::Introspect | Workload::IntrospectAccess => {
                let form = [
                    ("token", &*self.token),
                    ("client_id", &a.client_id),
                    ("client_secret", &a.client_secret),
                ];
                let (s, b) = call(self.client.post(&self.endpoints().introspect).form(&form)).await;
                return if s == 200 && b["active"] == true { Ok(()) } else { Err(format!("{s} {b}")) };
            }
            Workload::Get => {
                let url = format!("{}{}", a.url, a.path);
                let mut req = self.client.get(&url);
                if a.dpop.is_some() {
                    let token = self.token.as_str();
                    req = proved_for(
                        req.header("authorization", format!("DPoP {token}")),
                        a,
                        "GET",
                        &url,
                        Some(token),
                    );
                } else if let Some(token) = &a.bearer {
                    req = req.bearer_auth(token);
                }
                let s = match req.send().await {
                    Ok(res) => {
                        let s = res.status().as_u16();
                        let _ = res.bytes().await; // read to the end: the connection is reused
                        s
                    }
                    Err(_) => 0,
                };
                return if s == 200 { Ok(()) } else { Err(format!("{s}")) };
            }
            Workload::Jwks => {
                let (s, b) = call(self.client.get(&self.endpoints().jwks)).await;
                return if s == 200 && b["keys"].is_array() { Ok(()) } else { Err(format!("{s} {b}")) };
            }
        };
        match body["refresh_token"].as_str() {
            Some(next) if status == 200 && expect_token => {
                next.clone_into(&mut self.token);
                Ok(())
            }
            _ => Err(format!("{status} {body}")),
        }
    }
}

fn client_credentials(a: &Args) -> [(&'static str, &str); 4] {
    [
        ("grant_type", "client_credentials"),
        ("scope", &a.scope),
        ("client_id", &a.client_id),
        ("client_secret", &a.client_secret),
    ]
}

/// First-party sessions: registers a user and logs in `n` times; returns refresh tokens.
async fn first_party_chains(client: &reqwest::Client, a: &Args, user: &str, password: &str) -> Vec<String> {
    let (status, body) = call(
        client
            .post(format!("{}/auth/register", a.url))
            .json(&json!({"username": user, "password": password})),
    )
    .await;
    assert!(status == 201, "register failed: {status} {body}");
    let mut chains = Vec::with_capacity(a.connections);
    let url = format!("{}/auth/login", a.url);
    for _ in 0..a.connections {
        let req = client.post(&url).json(&json!({"username": user, "password": password}));
        let (status, body) = call(proved(req, a, &url)).await;
        assert!(status == 200, "login failed: {status} {body}");
        chains.push(body["refresh_token"].as_str().expect("refresh_token").to_owned());
    }
    chains
}

/// A DPoP-bound access token from Latchkey at `base`: a new user signs in with a proof.
async fn bound_token(client: &reqwest::Client, a: &Args, base: &str, user: &str, password: &str) -> String {
    let body = json!({"username": user, "password": password});
    let (status, b) = call(client.post(format!("{base}/auth/register")).json(&body)).await;
    assert!(status == 201, "register failed: {status} {b}");
    let url = format!("{base}/auth/login");
    let (status, b) = call(proved(client.post(&url).json(&body), a, &url)).await;
    assert!(status == 200 && b["token_type"] == "DPoP", "DPoP sign-in failed: {status} {b}");
    b["access_token"].as_str().expect("access_token").to_owned()
}

/// OAuth refresh tokens from the peer's bench-only seeding endpoint.
async fn peer_chains(client: &reqwest::Client, a: &Args) -> Vec<String> {
    let (status, body) = call(client.post(format!("{}/bench/seed?n={}", a.url, a.connections))).await;
    assert_eq!(status, 200, "seeding the peer failed: {body}");
    body["refresh_tokens"]
        .as_array()
        .expect("refresh_tokens")
        .iter()
        .map(|t| t.as_str().expect("token").to_owned())
        .collect()
}

/// OAuth refresh tokens from Latchkey the way an app gets them: one user signs in on the
/// sign-in page and allows the app once; then each chain is one authorization request
/// (straight back with a code) and one code exchange with PKCE.
async fn latchkey_oauth_chains(a: &Args, e: &Endpoints, user: &str, password: &str) -> Vec<String> {
    let api = reqwest::Client::new();
    let (status, body) = call(
        api.post(format!("{}/auth/register", a.url)).json(&json!({"username": user, "password": password})),
    )
    .await;
    assert!(status == 201, "register failed: {status} {body}");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .expect("client");
    let verifier = latchkey_core::crypto::b64(&latchkey_core::crypto::random_bytes::<32>());
    let challenge = latchkey_core::crypto::b64(&latchkey_core::crypto::TokenHash::of(&verifier).0);
    let authorize = reqwest::Url::parse_with_params(
        &e.authorize,
        [
            ("response_type", "code"),
            ("client_id", &a.client_id),
            ("redirect_uri", &a.redirect_uri),
            ("scope", "openid offline_access"),
            ("state", "bench"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .expect("authorize url");
    let absolute = |location: &str| {
        if location.starts_with('/') { format!("{}{location}", a.url) } else { location.to_owned() }
    };
    let mut chains = Vec::with_capacity(a.connections);
    while chains.len() < a.connections {
        // Follow redirects by hand, answering the sign-in and consent pages, until the
        // redirect to the app.
        let mut next = authorize.to_string();
        let code = loop {
            if next.starts_with(&a.redirect_uri) {
                let url = reqwest::Url::parse(&next).expect("redirect");
                break url.query_pairs().find(|(k, _)| k == "code").expect("code").1.into_owned();
            }
            let res = browser.get(&next).send().await.expect("get");
            if res.status().is_redirection() {
                next = absolute(res.headers()["location"].to_str().expect("location"));
                continue;
            }
            let page = res.text().await.expect("page");
            let mut form = hidden_fields(&page);
            let target = if page.contains("name=\"password\"") {
                form.push(("username".into(), user.into()));
                form.push(("password".into(), password.into()));
                "/login"
            } else {
                assert!(page.contains(">Allow</button>"), "unexpected page: {page}");
                form.push(("decision".into(), "allow".into()));
                "/oauth/authorize"
            };
            let res = browser.post(format!("{}{target}", a.url)).form(&form).send().await.expect("post");
            assert!(res.status().is_redirection(), "{target}: {}", res.status());
            next = absolute(res.headers()["location"].to_str().expect("location"));
        };
        let form = [
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &a.redirect_uri),
            ("code_verifier", &verifier),
            ("client_id", &a.client_id),
            ("client_secret", &a.client_secret),
        ];
        let (status, body) = call(api.post(&e.token).form(&form)).await;
        assert_eq!(status, 200, "code exchange failed: {body}");
        chains.push(body["refresh_token"].as_str().expect("refresh_token (scope offline_access)").to_owned());
    }
    chains
}

#[tokio::main]
async fn main() {
    let args = Arc::new(parse_args());
    let client = reqwest::Client::builder().pool_max_idle_per_host(1024).build().expect("client");
    let user = format!("load-{}", std::process::id());
    let password = "load test password";
    let endpoints = match args.workload {
        Workload::Refresh | Workload::Get => None,
        _ => Some(discover(&client, &args.url).await),
    };
    let tokens: Vec<String> = match (args.workload, endpoints.as_ref()) {
        (Workload::Refresh, _) => first_party_chains(&client, &args, &user, password).await,
        (Workload::OauthRefresh | Workload::Introspect, Some(e)) if args.seed == "latchkey" => {
            latchkey_oauth_chains(&args, e, &user, password).await
        }
        (Workload::OauthRefresh | Workload::Introspect, _) => peer_chains(&client, &args).await,
        (Workload::IntrospectAccess, Some(e)) => {
            let mut form = client_credentials(&args).to_vec();
            if let Some(resource) = &args.resource {
                form.push(("resource", resource));
            }
            let (status, body) = call(client.post(&e.token).form(&form)).await;
            let token = body["access_token"]
                .as_str()
                .unwrap_or_else(|| panic!("client_credentials: {status} {body}"));
            vec![token.to_owned(); args.connections]
        }
        (Workload::Get, _) if args.dpop.is_some() => {
            let base = args.sign_in.as_deref().expect("get --dpop needs --sign-in LATCHKEY_URL");
            vec![bound_token(&client, &args, base, &user, password).await; args.connections]
        }
        _ => vec![String::new(); args.connections],
    };
    assert!(
        tokens.len() >= args.connections,
        "seeded {} chains for {} connections",
        tokens.len(),
        args.connections
    );
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let logins = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for _ in 0..args.login_flood {
        let (client, url, stop, logins, user) = (
            client.clone(),
            format!("{}/auth/login", args.url),
            Arc::clone(&stop),
            Arc::clone(&logins),
            user.clone(),
        );
        flood.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (status, _) =
                    call(client.post(&url).json(&json!({"username": user, "password": password}))).await;
                if status == 200 {
                    logins.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for token in tokens.into_iter().take(args.connections) {
        let mut conn =
            Conn { client: client.clone(), args: Arc::clone(&args), endpoints: endpoints.clone(), token };
        let errors = Arc::clone(&errors);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(65_536);
            while Instant::now() < deadline {
                let t = Instant::now();
                let result = conn.step().await;
                let micros = u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX);
                match result {
                    Ok(()) => latencies.push(micros),
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("request failed: {e}");
                        if matches!(conn.args.workload, Workload::Refresh | Workload::OauthRefresh) {
                            break; // the chain is gone
                        }
                    }
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        let _ = f.await;
    }
    all.sort_unstable();
    println!(
        "workload={:?} connections={} login_flood={} requests={} requests_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} errors={} logins_per_s={:.1}",
        args.workload,
        args.connections,
        args.login_flood,
        all.len(),
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.90),
        percentile(&all, 0.99),
        percentile(&all, 1.0),
        errors.load(Ordering::Relaxed),
        logins.load(Ordering::Relaxed) as f64 / elapsed,
    );
}
