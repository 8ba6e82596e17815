//! The client against small scripted HTTP servers (one request per connection, answers
//! chosen by path): where the token goes, redirects, the typed re-auth reason, and OAuth
//! client authentication. Behaviour against the real server is tested in
//! `crates/latchkey-testkit/tests/http/client.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// One request as the server read it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    body: String,
}

/// An answer: status, extra headers, JSON body.
type Answer = (u16, Vec<(&'static str, String)>, String);

/// A scripted server that records what reaches it, down to bare connections.
#[derive(Clone)]
struct Fake {
    base: String,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    async fn start(answer: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Self {
            base: format!("http://{}", listener.local_addr().unwrap()),
            connections: Arc::default(),
            seen: Arc::default(),
        };
        let (connections, seen, answer) =
            (Arc::clone(&fake.connections), Arc::clone(&fake.seen), Arc::new(answer));
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                let (seen, answer) = (Arc::clone(&seen), Arc::clone(&answer));
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut socket).await else { return };
                    seen.lock().unwrap().push(request.clone());
                    let (status, headers, body) = answer(&request);
                    let mut head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                        body.len()
                    );
                    for (name, value) in headers {
                        head.push_str(&format!("{name}: {value}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = socket.write_all(format!("{head}{body}").as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        fake
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    while data.len() < head_end + length {
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    let mut first = head.lines().next()?.split(' ');
    Some(Seen {
        method: first.next()?.to_owned(),
        path: first.next()?.to_owned(),
        authorization: header("authorization"),
        body: String::from_utf8_lossy(&data[head_end..]).into_owned(),
    })
}

fn tokens(access: &str, refresh: Option<&str>, expires_in: u64) -> String {
    json!({"access_token": access, "refresh_token": refresh, "expires_in": expires_in, "session_id": "s1"})
        .to_string()
}

/// An issuer whose login gives `at-1` (for 300 s) and whose refresh gives `at-2`.
async fn issuer() -> Fake {
    Fake::start(|r| match r.path.as_str() {
        "/auth/login" => (200, vec![], tokens("at-1", Some("lkr_one"), 300)),
        "/auth/refresh" => (200, vec![], tokens("at-2", Some("lkr_two"), 300)),
        _ => (200, vec![], "{}".to_owned()),
    })
    .await
}

/// An API that answers 200 to everything.
async fn api() -> Fake {
    Fake::start(|_| (200, vec![], "{}".to_owned())).await
}

#[tokio::test]
async fn the_token_goes_to_the_issuer_and_the_listed_api_origins_only() {
    let (auth, notes, elsewhere) = (issuer().await, api().await, api().await);
    let client = Client::builder(auth.url("/")).api_origin(&notes.base).build().unwrap();
    client.login("alice", "correct horse battery").await.unwrap();

    assert_eq!(client.get(&notes.url("/whoami")).await.unwrap().status(), 200);
    assert_eq!(client.get(&auth.url("/auth/me")).await.unwrap().status(), 200);
    assert_eq!(notes.seen()[0].authorization.as_deref(), Some("Bearer at-1"));
    assert_eq!(auth.seen().last().unwrap().authorization.as_deref(), Some("Bearer at-1"));

    // Another port on the same host is another origin: refused, and not one byte reaches it.
    let port_of = |base: &str| base.rsplit(':').next().unwrap().to_owned();
    let expected = Error::OriginNotAllowed { origin: elsewhere.base.clone() };
    assert_eq!(client.get(&elsewhere.url("/whoami")).await.err(), Some(expected.clone()));
    let posted = client.request(reqwest::Method::POST, &elsewhere.url("/notes"), |r| r.body("x")).await;
    assert_eq!(posted.err(), Some(expected));
    // Nor does the same host and port under another scheme or another name.
    let https = format!("https://127.0.0.1:{}/whoami", port_of(&notes.base));
    assert!(matches!(client.get(&https).await, Err(Error::OriginNotAllowed { .. })));
    let localhost = format!("http://localhost:{}/whoami", port_of(&notes.base));
    assert!(matches!(client.get(&localhost).await, Err(Error::OriginNotAllowed { .. })));
    assert!(matches!(client.get("not a url").await, Err(Error::InvalidUrl(_))));
    assert_eq!(elsewhere.connections(), 0);
    assert_eq!(notes.seen().len(), 1);
}

#[tokio::test]
async fn a_refused_origin_is_refused_before_a_refresh_and_before_sign_in() {
    let (auth, elsewhere) = (issuer().await, api().await);
    let client = Client::builder(&auth.base).build().unwrap();
    // Not signed in: the origin is still what is reported, since it is the app's mistake.
    let expected = Some(Error::OriginNotAllowed { origin: elsewhere.base.clone() });
    assert_eq!(client.get(&elsewhere.url("/")).await.err(), expected);
    // An access token that is due for refresh: the refusal comes first, no refresh is made.
    let answer: ReceivedTokens = serde_json::from_str(&tokens("at-1", Some("lkr_one"), 0)).unwrap();
    client.set_tokens(answer).await.unwrap();
    let built = AtomicUsize::new(0);
    let refused = client
        .request(reqwest::Method::GET, &elsewhere.url("/"), |r| {
            built.fetch_add(1, Ordering::SeqCst);
            r
        })
        .await;
    assert_eq!(refused.err(), expected);
    assert_eq!(built.load(Ordering::SeqCst), 0, "the request is not even built");
    assert!(auth.seen().is_empty(), "no refresh for a refused call");
    assert_eq!(elsewhere.connections(), 0);
}

#[tokio::test]
async fn a_redirect_is_followed_within_its_origin_only() {
    let elsewhere = api().await;
    let target = elsewhere.url("/collect");
    let notes = Fake::start(move |r| match r.path.as_str() {
        "/away" => (307, vec![("location", target.clone())], String::new()),
        "/moved" => (307, vec![("location", "/here".to_owned())], String::new()),
        _ => (200, vec![], "{}".to_owned()),
    })
    .await;
    let auth = issuer().await;
    let client = Client::builder(&auth.base).api_origin(&notes.base).build().unwrap();
    client.login("alice", "correct horse battery").await.unwrap();

    let moved = client.get(&notes.url("/moved")).await.unwrap();
    assert_eq!(moved.status(), 200);
    let seen = notes.seen();
    assert_eq!(seen.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(), ["/moved", "/here"]);
    assert!(seen.iter().all(|s| s.authorization.as_deref() == Some("Bearer at-1")));

    let away = client.get(&notes.url("/away")).await.unwrap();
    assert_eq!(away.status(), 307, "the redirect is the caller's to see, not followed");
    assert_eq!(elsewhere.connections(), 0);
}

#[tokio::test]
async fn a_refused_refresh_reports_a_typed_reason_once() {
    for (answer, expected) in [
        (Some("reuse_detected"), ErrorReason::ReuseDetected),
        (Some("revoked_by_admin"), ErrorReason::RevokedByAdmin),
        (Some("a_reason_from_the_future"), ErrorReason::UnknownToken),
        (None, ErrorReason::UnknownToken),
    ] {
        let auth = Fake::start(move |r| match r.path.as_str() {
            "/auth/login" => (200, vec![], tokens("at-1", Some("lkr_one"), 300)),
            _ => (400, vec![], json!({"error": "invalid_grant", "error_reason": answer}).to_string()),
        })
        .await;
        let seen: Arc<Mutex<Vec<ErrorReason>>> = Arc::default();
        let log = Arc::clone(&seen);
        let client =
            Client::builder(&auth.base).on_reauth(move |r| log.lock().unwrap().push(r)).build().unwrap();
        client.login("alice", "correct horse battery").await.unwrap();
        assert_eq!(client.refresh().await.err(), Some(Error::Reauth(expected)), "{answer:?}");
        assert_eq!(client.refresh().await.err(), Some(Error::NotSignedIn));
        assert_eq!(*seen.lock().unwrap(), [expected], "{answer:?}");
    }
}

#[tokio::test]
async fn a_session_without_a_refresh_token_ends_as_expired() {
    let auth = issuer().await;
    let seen: Arc<Mutex<Vec<ErrorReason>>> = Arc::default();
    let log = Arc::clone(&seen);
    let client = Client::builder(&auth.base).on_reauth(move |r| log.lock().unwrap().push(r)).build().unwrap();
    client.set_tokens(serde_json::from_str(&tokens("at-1", None, 0)).unwrap()).await.unwrap();
    let ended = client.get(&auth.url("/auth/me")).await.err();
    assert_eq!(ended, Some(Error::Reauth(ErrorReason::SessionExpired)));
    assert_eq!(*seen.lock().unwrap(), [ErrorReason::SessionExpired]);
    assert!(auth.seen().is_empty(), "nothing to present, so nothing is sent");
}

#[tokio::test]
async fn server_errors_carry_the_typed_code() {
    let auth = Fake::start(|r| match r.path.as_str() {
        "/auth/login" => (503, vec![], json!({"error": "temporarily_unavailable"}).to_string()),
        _ => (502, vec![], "<html>bad gateway</html>".to_owned()),
    })
    .await;
    let client = Client::builder(&auth.base).build().unwrap();
    let down = client.login("alice", "correct horse battery").await.err();
    assert_eq!(down, Some(Error::Server { status: 503, error: Some(ErrorCode::TemporarilyUnavailable) }));
    assert_eq!(down.unwrap().to_string(), "the server answered 503 temporarily_unavailable");
    client.set_tokens(serde_json::from_str(&tokens("at-1", Some("lkr_one"), 300)).unwrap()).await.unwrap();
    assert_eq!(client.refresh().await.err(), Some(Error::Server { status: 502, error: None }));
}

#[tokio::test]
async fn an_oauth_client_authenticates_with_its_secret_kept_out_of_debug() {
    let auth = issuer().await;
    let secret = "lks_s3cret+with:odd chars";
    let builder = Client::builder(&auth.base).oauth("app-1", Some(ClientSecret::new(secret.to_owned())));
    assert!(!format!("{builder:?}").contains("s3cret"), "{builder:?}");
    let client = builder.build().unwrap();
    assert!(!format!("{client:?}").contains("s3cret"));
    let answer: ReceivedTokens = serde_json::from_str(&tokens("at-1", Some("lkr_one"), 0)).unwrap();
    client.set_tokens(answer).await.unwrap();
    // The refresh is an OAuth one: `/oauth/token`, Basic with the form-urlencoded id and
    // secret (RFC 6749 §2.3.1).
    let _ = client.refresh().await;
    let request = auth.seen().pop().unwrap();
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/oauth/token"));
    assert!(
        request.body.contains("grant_type=refresh_token") && request.body.contains("refresh_token=lkr_one")
    );
    let basic = request.authorization.unwrap();
    let expected = format!("app-1:{}", "lks_s3cret%2Bwith%3Aodd+chars");
    assert_eq!(basic, format!("Basic {}", base64_of(&expected)));
}

/// Standard base64, for comparing a Basic header (the crate has no base64 dependency).
fn base64_of(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn form_urlencoding_leaves_generated_values_alone() {
    assert!(matches!(form_urlencoded("lks_AZaz09-_"), std::borrow::Cow::Borrowed(_)));
    assert_eq!(form_urlencoded("a:b c+d/é"), "a%3Ab+c%2Bd%2F%C3%A9");
}

#[test]
fn builder_refuses_bad_urls() {
    assert!(matches!(Client::builder("127.0.0.1:8080").build(), Err(Error::InvalidUrl(_))));
    let with_path =
        Client::builder("http://127.0.0.1:8080").api_origin("http://127.0.0.1:8090/notes").build();
    assert!(matches!(with_path, Err(Error::InvalidUrl(why)) if why.contains("http://127.0.0.1:8090")));
}
