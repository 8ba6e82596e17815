//! Fuzzing on stable Rust (issue: performance and reliability): proptest generators that
//! mutate committed seed inputs (`crates/latchkey-testkit/fuzz/seeds/`) and throw them at
//! the access-token verifier of `latchkey-verify`, at the server's Bearer check, at the
//! token endpoint's form parsing and at the first-party JSON bodies. Properties: nothing
//! panics or hangs, every refusal is a 4xx with a JSON `error`, and a verifier accepts a
//! mutated token only if it carries the very claims of the token it came from (a mutation
//! that changes nothing the signature covers is no forgery).
//!
//! Bounded by case count: `LATCHKEY_FUZZ_CASES` per target (default 300; `scripts/reliability`
//! runs many more). Failures are shrunk and saved by proptest under `proptest-regressions/`;
//! a crash found becomes a regression test by committing that file (it is replayed first).

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

use crate::{TestServer, http_client};

fn cases() -> u32 {
    std::env::var("LATCHKEY_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
}

/// The seed lines of a corpus file (blank lines and `#` comments skipped).
fn seeds(name: &str) -> Vec<Vec<u8>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// One edit of an input.
#[derive(Debug, Clone)]
enum Edit {
    /// Replace the byte at (position modulo length).
    Set(usize, u8),
    /// Insert bytes at a position.
    Insert(usize, Vec<u8>),
    /// Remove up to n bytes at a position.
    Remove(usize, usize),
    /// Repeat a slice (position, length) in place.
    Repeat(usize, usize),
    /// Insert one of the interesting tokens.
    Token(usize, &'static str),
}

const TOKENS: &[&str] = &[
    "\"",
    "\\",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "null",
    "true",
    "-1",
    "1e999",
    "\\u0000",
    "\u{0}",
    "%",
    "%00",
    "%ff",
    "&",
    "=",
    "+",
    ".",
    "..",
    "\u{feff}",
    "\u{202e}",
    "\r\n",
    "grant_type=",
    "&grant_type=refresh_token",
    "refresh_token",
    "client_id",
    "lkr_",
    "eyJ",
    "alg",
    "none",
    "\"alg\":\"none\"",
    "\u{1F600}",
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Set(p, b)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8)).prop_map(|(p, v)| Edit::Insert(p, v)),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Edit::Remove(p, n)),
        (any::<usize>(), 1usize..32).prop_map(|(p, n)| Edit::Repeat(p, n)),
        (any::<usize>(), proptest::sample::select(TOKENS)).prop_map(|(p, t)| Edit::Token(p, t)),
    ]
}

fn apply(mut input: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = input.len();
        let at = |p: usize| if len == 0 { 0 } else { p % (len + 1) };
        match e {
            Edit::Set(p, b) if len > 0 => input[p % len] = *b,
            Edit::Set(..) => input.push(0),
            Edit::Insert(p, v) => {
                let p = at(*p);
                input.splice(p..p, v.iter().copied());
            }
            Edit::Remove(p, n) => {
                let p = at(*p);
                let end = (p + n).min(len);
                input.drain(p..end);
            }
            Edit::Repeat(p, n) => {
                let p = at(*p);
                let end = (p + n).min(len);
                let part: Vec<u8> = input[p..end].to_vec();
                input.splice(p..p, part.repeat(1 + n % 4));
            }
            Edit::Token(p, t) => {
                let p = at(*p);
                input.splice(p..p, t.bytes());
            }
        }
    }
    input
}

/// A seed picked from `corpus`, mutated by up to 6 edits (sometimes none: seeds must
/// behave too).
fn mutated(corpus: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (proptest::sample::select(corpus), proptest::collection::vec(edit(), 0..6))
        .prop_map(|(seed, edits)| apply(seed, &edits))
}

fn runner() -> TestRunner {
    TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A refusal must be a 4xx with a JSON `error`; 2xx is allowed where the input can be valid.
fn check_answer(
    what: &str,
    input: &[u8],
    status: u16,
    body: &str,
    may_succeed: bool,
) -> Result<(), TestCaseError> {
    let shown = String::from_utf8_lossy(input);
    prop_assert!(status < 500, "{what}: {status} for {shown:?}: {body}");
    if (200..300).contains(&status) {
        prop_assert!(may_succeed, "{what}: accepted {shown:?}: {body}");
    } else {
        let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        prop_assert!(
            json["error"].is_string(),
            "{what}: {status} without a JSON error for {shown:?}: {body}"
        );
    }
    Ok(())
}

#[test]
fn fuzz_the_access_token_verifier_and_the_bearer_check() {
    let rt = runtime();
    let (s, verifier, token, claims) = rt.block_on(async {
        let s = TestServer::start().await;
        let c = http_client();
        let login = s.signed_in(&c, "fuzzed").await;
        let (id, secret) = crate::feed::feed_client(&s, "revocations:read").await;
        let verifier = latchkey_verify::Verifier::builder(latchkey_testkit::ISSUER)
            .endpoint(&s.base)
            .feed_credentials(id, secret)
            .use_stream(false)
            .build()
            .await
            .unwrap();
        let token = login.str("access_token").to_owned();
        let mut claims = None;
        for _ in 0..200 {
            if let Ok(v) = verifier.verify(&token).await {
                claims = Some(v.claims);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (s, Arc::new(verifier), token, claims.expect("the verifier accepts the real token"))
    });
    let mut corpus = seeds("access-tokens.txt");
    corpus.push(token.clone().into_bytes());
    // The real token, segment by segment, so edits hit every part.
    for (i, part) in token.split('.').enumerate() {
        corpus.push(format!("{}{part}", ".".repeat(i)).into_bytes());
    }
    let c = http_client();
    let accepted = std::sync::atomic::AtomicUsize::new(0);
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    runner()
        .run(&mutated(corpus), |input| {
            let text = String::from_utf8_lossy(&input).into_owned();
            let (verified, me) = rt.block_on(async {
                let verified = tokio::time::timeout(Duration::from_secs(30), verifier.verify(&text)).await;
                let me = match reqwest::header::HeaderValue::from_bytes(format!("Bearer {text}").as_bytes()) {
                    Ok(value) => {
                        let res =
                            c.get(s.url("/auth/me")).header("authorization", value).send().await.unwrap();
                        Some((res.status().as_u16(), res.text().await.unwrap()))
                    }
                    Err(_) => None, // not a valid header value: no client can send it
                };
                (verified, me)
            });
            let verified = verified.map_err(|_| TestCaseError::fail(format!("verify hung on {text:?}")))?;
            if let Ok(v) = verified {
                accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                prop_assert_eq!(
                    &v.claims.jti,
                    &claims.jti,
                    "a mutation verified with other claims: {:?}",
                    text
                );
                prop_assert_eq!(&v.claims.sub, &claims.sub);
            }
            if let Some((status, body)) = me {
                *statuses.lock().unwrap().entry(status).or_default() += 1;
                check_answer("/auth/me", &input, status, &body, true)?;
                if status == 200 {
                    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    prop_assert_eq!(json["sub"].as_str(), Some(claims.sub.as_str()));
                }
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "access tokens: {} cases, {} accepted by the verifier (the real token, unchanged where the signature looks); /auth/me answers {:?}",
        cases(),
        accepted.into_inner(),
        statuses.into_inner().unwrap()
    );
}

/// Throws mutated bodies at `path` with `content_type`; none may cause a 5xx or a reply
/// without a JSON error.
fn fuzz_bodies(corpus: &str, path: &str, content_type: &'static str, may_succeed: bool) {
    let rt = runtime();
    let s = rt.block_on(async {
        let s = TestServer::start().await;
        s.signed_in(&http_client(), "alice").await;
        s
    });
    let c = http_client();
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    runner()
        .run(&mutated(seeds(corpus)), |input| {
            let (status, body) = rt.block_on(async {
                // Generous: a hang is what this catches, and a loaded CI machine starves the
                // server's low-priority password-hashing threads for seconds at a time.
                let res = tokio::time::timeout(
                    Duration::from_secs(60),
                    c.post(s.url(path)).header("content-type", content_type).body(input.clone()).send(),
                )
                .await
                .expect("the server answers in time")
                .unwrap();
                (res.status().as_u16(), res.text().await.unwrap())
            });
            *statuses.lock().unwrap().entry(status).or_default() += 1;
            check_answer(path, &input, status, &body, may_succeed)
        })
        .unwrap();
    eprintln!("{path}: {} cases, answers {:?}", cases(), statuses.into_inner().unwrap());
    rt.block_on(async {
        assert_eq!(http_client().get(s.url("/healthz")).send().await.unwrap().status(), 200);
    });
}

#[test]
fn fuzz_the_token_endpoint_form() {
    fuzz_bodies("token-form.txt", "/oauth/token", "application/x-www-form-urlencoded", false);
}

#[test]
fn fuzz_the_first_party_json_bodies() {
    for path in ["/auth/login", "/auth/refresh", "/auth/register"] {
        // Registration may succeed on a mutated username; login as alice may succeed too
        // (a mutation that only touched whitespace).
        fuzz_bodies("first-party-json.txt", path, "application/json", path != "/auth/refresh");
    }
}
