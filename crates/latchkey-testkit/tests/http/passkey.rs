//! Passkeys (SPEC 11) over HTTP, with a software authenticator written here from the
//! WebAuthn format: P-256 keys and signatures from aws-lc-rs, the authenticator data and
//! the attestation object (`fmt: none`) laid out byte by byte, the client data as a
//! browser writes it. The server checks them with `webauthn-rs`; the Chromium test in
//! `browser.rs` runs the same ceremonies through a real browser and its virtual
//! authenticator.

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::future::join_all;
use serde_json::{Value, json};

use crate::{TestServer, http_client};

const PASSWORD: &str = "correct horse battery";

/// Authenticator-data flags (WebAuthn §6.1).
const USER_PRESENT: u8 = 0x01;
const USER_VERIFIED: u8 = 0x04;
const ATTESTED_DATA: u8 = 0x40;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).expect("base64url")
}

/// A CBOR byte string's header and bytes (RFC 8949 §3.1, major type 2).
fn cbor_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = match bytes.len() {
        n @ 0..=23 => vec![0x40 | u8::try_from(n).unwrap()],
        n @ 24..=255 => vec![0x58, u8::try_from(n).unwrap()],
        n => {
            let n = u16::try_from(n).expect("short");
            vec![0x59, (n >> 8) as u8, (n & 0xff) as u8]
        }
    };
    out.extend_from_slice(bytes);
    out
}

/// A CBOR text string of under 24 bytes.
fn cbor_text(text: &str) -> Vec<u8> {
    let mut out = vec![0x60 | u8::try_from(text.len()).unwrap()];
    out.extend_from_slice(text.as_bytes());
    out
}

/// One credential the authenticator holds (discoverable: it keeps the user handle).
struct Credential {
    id: Vec<u8>,
    key: EcdsaKeyPair,
    user_handle: Vec<u8>,
    rp_id: String,
    counter: u32,
}

/// A platform authenticator that verifies its user and keeps discoverable credentials.
struct SoftAuthenticator {
    /// The page origin the "browser" reports in the client data.
    origin: String,
    credentials: Vec<Credential>,
}

impl SoftAuthenticator {
    fn new(origin: &str) -> Self {
        Self { origin: origin.to_owned(), credentials: Vec::new() }
    }

    fn client_data(&self, kind: &str, challenge: &str) -> Vec<u8> {
        json!({"type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": false})
            .to_string()
            .into_bytes()
    }

    /// `navigator.credentials.create` for these options; the credential's JSON form.
    fn create(&mut self, options: &Value) -> Value {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).expect("key");
        let point = key.public_key().as_ref().to_vec();
        assert_eq!((point.len(), point[0]), (65, 4), "an uncompressed P-256 point");
        let rp_id = options["rp"]["id"].as_str().expect("rp.id").to_owned();
        let id: Vec<u8> = digest(&SHA256, pkcs8.as_ref()).as_ref()[..16].to_vec();
        // COSE_Key {1: 2 (EC2), 3: -7 (ES256), -1: 1 (P-256), -2: x, -3: y}.
        let mut cose = vec![0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21];
        cose.extend(cbor_bytes(&point[1..33]));
        cose.push(0x22);
        cose.extend(cbor_bytes(&point[33..]));
        let mut auth_data = digest(&SHA256, rp_id.as_bytes()).as_ref().to_vec();
        auth_data.push(USER_PRESENT | USER_VERIFIED | ATTESTED_DATA);
        auth_data.extend_from_slice(&0u32.to_be_bytes());
        auth_data.extend_from_slice(&[0; 16]); // AAGUID
        auth_data.extend_from_slice(&u16::try_from(id.len()).unwrap().to_be_bytes());
        auth_data.extend_from_slice(&id);
        auth_data.extend_from_slice(&cose);
        // {"fmt": "none", "attStmt": {}, "authData": ...}
        let mut attestation = vec![0xa3];
        attestation.extend(cbor_text("fmt"));
        attestation.extend(cbor_text("none"));
        attestation.extend(cbor_text("attStmt"));
        attestation.push(0xa0);
        attestation.extend(cbor_text("authData"));
        attestation.extend(cbor_bytes(&auth_data));
        let client_data =
            self.client_data("webauthn.create", options["challenge"].as_str().expect("challenge"));
        let user_handle = unb64(options["user"]["id"].as_str().expect("user.id"));
        self.credentials.push(Credential { id: id.clone(), key, user_handle, rp_id, counter: 0 });
        json!({
            "id": b64(&id),
            "rawId": b64(&id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(&client_data),
                "attestationObject": b64(&attestation),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        })
    }

    /// `navigator.credentials.get` with credential `which`; its JSON form.
    fn get(&mut self, options: &Value, which: usize) -> Value {
        let challenge = options["challenge"].as_str().expect("challenge").to_owned();
        let client_data = self.client_data("webauthn.get", &challenge);
        let credential = &mut self.credentials[which];
        assert_eq!(options["rpId"].as_str(), Some(credential.rp_id.as_str()));
        credential.counter += 1;
        let mut auth_data = digest(&SHA256, credential.rp_id.as_bytes()).as_ref().to_vec();
        auth_data.push(USER_PRESENT | USER_VERIFIED);
        auth_data.extend_from_slice(&credential.counter.to_be_bytes());
        let signed = [&auth_data[..], digest(&SHA256, &client_data).as_ref()].concat();
        let signature = credential.key.sign(&SystemRandom::new(), &signed).expect("sign");
        json!({
            "id": b64(&credential.id),
            "rawId": b64(&credential.id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(&client_data),
                "authenticatorData": b64(&auth_data),
                "signature": b64(signature.as_ref()),
                "userHandle": b64(&credential.user_handle),
            },
            "clientExtensionResults": {},
        })
    }
}

/// Signs in `name` (registered already) and adds a passkey with `device`; the access
/// token and the registration's answer.
async fn with_passkey_for(
    s: &TestServer,
    c: &reqwest::Client,
    name: &str,
    device: &mut SoftAuthenticator,
) -> (String, Value) {
    let at = s.login(c, name, PASSWORD).await.str("access_token").to_owned();
    add_passkey(s, c, &at, device).await
}

/// Adds a passkey with `device` for the session of `at`; `at` and the registration's answer.
async fn add_passkey(
    s: &TestServer,
    c: &reqwest::Client,
    at: &str,
    device: &mut SoftAuthenticator,
) -> (String, Value) {
    let start = s.post_auth(c, "/auth/passkeys/register/start", at, json!({})).await;
    assert_eq!(start.status, 200, "{}", start.text);
    let credential = device.create(&start.json["publicKey"]);
    let body = json!({"challenge_id": start.str("challenge_id"), "credential": credential, "name": "Laptop"});
    let done = s.post_auth(c, "/auth/passkeys/register/finish", at, body).await;
    assert_eq!(done.status, 200, "{}", done.text);
    (at.to_owned(), done.json)
}

/// Registers `name`, signs in and adds a passkey with `device`; the access token and the
/// registration's answer.
async fn with_passkey(
    s: &TestServer,
    c: &reqwest::Client,
    name: &str,
    device: &mut SoftAuthenticator,
) -> (String, Value) {
    let at = s.signed_in(c, name).await.str("access_token").to_owned();
    add_passkey(s, c, &at, device).await
}

/// A passkey sign-in with credential `which`: the answer.
async fn passkey_login(
    s: &TestServer,
    c: &reqwest::Client,
    device: &mut SoftAuthenticator,
    which: usize,
) -> latchkey_testkit::Answer {
    let start = s.post(c, "/auth/passkeys/login/start", json!({})).await;
    assert_eq!(start.status, 200, "{}", start.text);
    let credential = device.get(&start.json["publicKey"], which);
    s.post(
        c,
        "/auth/passkeys/login/finish",
        json!({"challenge_id": start.str("challenge_id"), "credential": credential}),
    )
    .await
}

#[tokio::test]
async fn a_passkey_is_registered_and_then_signs_in_without_a_username() {
    let s = TestServer::start_on_localhost(|_| {}).await;
    let c = http_client();
    let mut device = SoftAuthenticator::new(s.issuer());
    let at = s.signed_in(&c, "ann").await.str("access_token").to_owned();
    let start = s.post_auth(&c, "/auth/passkeys/register/start", &at, json!({})).await;
    assert_eq!(start.status, 200, "{}", start.text);
    let options = &start.json["publicKey"];
    assert_eq!(options["rp"]["id"], "localhost", "{options}");
    assert_eq!(options["authenticatorSelection"]["residentKey"], "required", "{options}");
    assert_eq!(options["authenticatorSelection"]["userVerification"], "required", "{options}");
    assert_eq!(options["user"]["name"], "ann");
    let credential = device.create(options);
    let body =
        json!({"challenge_id": start.str("challenge_id"), "credential": credential, "name": " Laptop\n"});
    let done = s.post_auth(&c, "/auth/passkeys/register/finish", &at, body.clone()).await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(done.json["name"], "Laptop");
    assert!(done.json.get("recovery_codes").is_none(), "codes come when asked for: {}", done.text);
    // The challenge was answered: the same finish again is refused.
    let again = s.post_auth(&c, "/auth/passkeys/register/finish", &at, body).await;
    assert_eq!((again.status, again.str("error")), (400, "invalid_request"), "{}", again.text);
    let listed = s.get_auth(&c, "/auth/mfa", &at).await;
    assert_eq!(listed.json["factors"][0]["kind"], "passkey", "{}", listed.text);
    assert_eq!(listed.json["factors"][0]["id"], done.json["id"]);

    // Username-less sign-in: a session, `amr` of a hardware key, the phishing-resistant level.
    let signed_in = passkey_login(&s, &c, &mut device, 0).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.text);
    let claims = crate::mfa::claims_of(signed_in.str("access_token"));
    assert_eq!(claims["amr"], json!(["hwk", "mfa"]), "{claims}");
    assert_eq!(claims["acr"], "urn:latchkey:acr:phr");
    assert_eq!(s.get_auth(&c, "/auth/me", signed_in.str("access_token")).await.str("username"), "ann");

    // The password now leads to the passkey (or a recovery code) as the second step.
    let login = s.post(&c, "/auth/login", json!({"username": "ann", "password": PASSWORD})).await;
    assert_eq!((login.status, login.str("error")), (401, "mfa_required"), "{}", login.text);
    assert_eq!(login.json["methods"], json!(["passkey"]), "SPEC 11: a passkey as the only factor");
    let token = login.str("mfa_token").to_owned();
    let no_proof = s.post(&c, "/auth/login/mfa", json!({"mfa_token": token, "method": "passkey"})).await;
    assert_eq!(no_proof.status, 400, "{}", no_proof.text);
    let start = s.post(&c, "/auth/passkeys/login/start", json!({})).await;
    let credential = device.get(&start.json["publicKey"], 0);
    let body = json!({"mfa_token": token, "method": "passkey", "challenge_id": start.str("challenge_id"), "credential": credential});
    let second = s.post(&c, "/auth/login/mfa", body).await;
    assert_eq!(second.status, 200, "{}", second.text);
    let at = second.str("access_token").to_owned();
    assert_eq!(crate::mfa::claims_of(&at)["amr"], json!(["pwd", "hwk", "mfa"]));
    // Recovery codes on request; then they are a method too.
    let codes = s.post_auth(&c, "/auth/mfa/recovery-codes", &at, json!({})).await;
    assert_eq!(codes.json["recovery_codes"].as_array().map(Vec::len), Some(10), "{}", codes.text);
    let login = s.post(&c, "/auth/login", json!({"username": "ann", "password": PASSWORD})).await;
    assert_eq!(login.json["methods"], json!(["passkey", "recovery_code"]));
}

#[tokio::test]
async fn assertions_that_do_not_fit_are_refused() {
    let s = TestServer::start_on_localhost(|_| {}).await;
    let c = http_client();
    let mut device = SoftAuthenticator::new(s.issuer());
    with_passkey(&s, &c, "bo", &mut device).await;

    // Another site's page asking for this site's passkey (a phishing origin).
    let mut phished =
        SoftAuthenticator { origin: "http://localhost.evil.example".into(), credentials: Vec::new() };
    std::mem::swap(&mut phished.credentials, &mut device.credentials);
    let refused = passkey_login(&s, &c, &mut phished, 0).await;
    assert_eq!((refused.status, refused.str("error")), (401, "invalid_credentials"), "{}", refused.text);
    std::mem::swap(&mut phished.credentials, &mut device.credentials);

    // An assertion replayed with its challenge spent; a credential the server never saw.
    let start = s.post(&c, "/auth/passkeys/login/start", json!({})).await;
    let credential = device.get(&start.json["publicKey"], 0);
    let body = json!({"challenge_id": start.str("challenge_id"), "credential": credential});
    assert_eq!(s.post(&c, "/auth/passkeys/login/finish", body.clone()).await.status, 200);
    assert_eq!(s.post(&c, "/auth/passkeys/login/finish", body).await.status, 400, "the challenge is spent");
    let mut stranger = SoftAuthenticator::new(s.issuer());
    let options =
        json!({"rp": {"id": "localhost"}, "challenge": "AAAA", "user": {"id": "AAAAAAAAAAAAAAAAAAAAAA"}});
    stranger.create(&options);
    assert_eq!(passkey_login(&s, &c, &mut stranger, 0).await.status, 401);
    // Garbage in the credential: 400, never 5xx.
    let start = s.post(&c, "/auth/passkeys/login/start", json!({})).await;
    let junk = json!({"challenge_id": start.str("challenge_id"), "credential": {"id": 5}});
    assert_eq!(s.post(&c, "/auth/passkeys/login/finish", junk).await.status, 400);

    // Dee's passkey does not finish Bo's password sign-in.
    let mut dees = SoftAuthenticator::new(s.issuer());
    with_passkey(&s, &c, "dee", &mut dees).await;
    let login = s.post(&c, "/auth/login", json!({"username": "bo", "password": PASSWORD})).await;
    let start = s.post(&c, "/auth/passkeys/login/start", json!({})).await;
    let credential = dees.get(&start.json["publicKey"], 0);
    let body = json!({"mfa_token": login.str("mfa_token"), "method": "passkey", "challenge_id": start.str("challenge_id"), "credential": credential});
    assert_eq!(s.post(&c, "/auth/login/mfa", body).await.status, 401);
}

#[tokio::test]
async fn one_passkey_challenge_answered_in_parallel_signs_in_once() {
    let s = TestServer::start_on_localhost(|_| {}).await;
    let c = http_client();
    let mut device = SoftAuthenticator::new(s.issuer());
    with_passkey(&s, &c, "eve", &mut device).await;
    for round in 0..5 {
        let start = s.post(&c, "/auth/passkeys/login/start", json!({})).await;
        let credential = device.get(&start.json["publicKey"], 0);
        let body = json!({"challenge_id": start.str("challenge_id"), "credential": credential});
        let answers = join_all((0..8).map(|_| s.post(&c, "/auth/passkeys/login/finish", body.clone()))).await;
        let won = answers.iter().filter(|a| a.status == 200).count();
        assert_eq!(won, 1, "round {round}: {:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
        assert!(answers.iter().all(|a| a.status == 200 || a.status == 400), "round {round}");
    }
}

#[tokio::test]
async fn passkeys_need_an_issuer_with_a_domain_name_and_a_recent_sign_in() {
    let s = TestServer::start_with(|c| c.settings.issuer = "http://127.0.0.1:9".into()).await;
    let c = http_client();
    let page = crate::send(c.get(s.url("/login"))).await;
    assert!(!page.text.contains("Sign in with a passkey"), "no button that cannot work");
    let at = s.signed_in(&c, "fay").await.str("access_token").to_owned();
    let start = s.post_auth(&c, "/auth/passkeys/register/start", &at, json!({})).await;
    assert_eq!((start.status, start.str("error")), (404, "not_found"), "{}", start.text);
    assert_eq!(s.post(&c, "/auth/passkeys/login/start", json!({})).await.status, 404);

    let s = TestServer::start_on_localhost(|_| {}).await;
    let at = s.signed_in(&c, "gus").await.str("access_token").to_owned();
    s.clock.advance(std::time::Duration::from_secs(301));
    let old = s.post_auth(&c, "/auth/passkeys/register/start", &at, json!({})).await;
    assert_eq!((old.status, old.str("error")), (403, "login_required"), "{}", old.text);
}

#[tokio::test]
async fn another_users_challenge_id_is_left_alone_and_starts_are_limited() {
    let s = TestServer::start_on_localhost(|_| {}).await;
    let c = http_client();
    let mut device = SoftAuthenticator::new(s.issuer());
    let hal = s.signed_in(&c, "hal").await.str("access_token").to_owned();
    let ivy = s.signed_in(&c, "ivy").await.str("access_token").to_owned();
    let start = s.post_auth(&c, "/auth/passkeys/register/start", &hal, json!({})).await;
    let credential = device.create(&start.json["publicKey"]);
    let body = json!({"challenge_id": start.str("challenge_id"), "credential": credential});
    let foreign = s.post_auth(&c, "/auth/passkeys/register/finish", &ivy, body.clone()).await;
    assert_eq!(foreign.status, 400, "{}", foreign.text);
    let own = s.post_auth(&c, "/auth/passkeys/register/finish", &hal, body).await;
    assert_eq!(own.status, 200, "Ivy's attempt did not spend Hal's challenge: {}", own.text);

    // Each sign-in start stores state: one address gets 30 a minute.
    let mut statuses = Vec::new();
    for _ in 0..31 {
        statuses.push(s.post(&c, "/auth/passkeys/login/start", json!({})).await);
    }
    assert!(statuses[..30].iter().all(|a| a.status == 200));
    let last = &statuses[30];
    assert_eq!((last.status, last.str("error")), (429, "too_many_requests"), "{}", last.text);
    assert!(last.header("retry-after").is_some());
}

#[tokio::test]
async fn forged_user_handles_and_counters_that_go_back_are_refused() {
    let s = TestServer::start_on_localhost(|_| {}).await;
    let c = http_client();
    let mut jo = SoftAuthenticator::new(s.issuer());
    let mut kim = SoftAuthenticator::new(s.issuer());
    with_passkey(&s, &c, "jo", &mut jo).await;
    with_passkey(&s, &c, "kim", &mut kim).await;
    // Jo's credential presented as Kim's (the user handle is the authenticator's word).
    let start = s.post(&c, "/auth/passkeys/login/start", json!({})).await;
    let mut credential = jo.get(&start.json["publicKey"], 0);
    credential["response"]["userHandle"] = json!(b64(&kim.credentials[0].user_handle));
    let body = json!({"challenge_id": start.str("challenge_id"), "credential": credential});
    let forged = s.post(&c, "/auth/passkeys/login/finish", body).await;
    assert_eq!((forged.status, forged.str("error")), (401, "invalid_credentials"), "{}", forged.text);
    // A copy of the authenticator whose counter is behind the original's.
    assert_eq!(passkey_login(&s, &c, &mut jo, 0).await.status, 200);
    let original = jo.credentials[0].counter;
    jo.credentials[0].counter = 0;
    let cloned = passkey_login(&s, &c, &mut jo, 0).await;
    assert_eq!(cloned.status, 401, "a counter that did not move forward: {}", cloned.text);
    let events = s.cli(&["events", "--limit", "1"], "").await.expect("events");
    assert!(events.contains("possibly a cloned authenticator"), "{events}");
    jo.credentials[0].counter = original;
    assert_eq!(passkey_login(&s, &c, &mut jo, 0).await.status, 200, "the original moves on");
}

#[tokio::test]
async fn the_pages_second_step_takes_only_the_users_own_passkey() {
    let s = TestServer::start_on_localhost(|_| {}).await;
    let c = http_client();
    let mut lee = SoftAuthenticator::new(s.issuer());
    let mut mo = SoftAuthenticator::new(s.issuer());
    with_passkey(&s, &c, "lee", &mut lee).await;
    with_passkey(&s, &c, "mo", &mut mo).await;
    let b = crate::oauth::browser();
    let page = crate::send(b.get(s.url("/login"))).await;
    let mut form = crate::oauth::hidden_fields(&page.text);
    form.push(("username".into(), "lee".into()));
    form.push(("password".into(), PASSWORD.into()));
    let step = crate::send(b.post(s.url("/login")).form(&form)).await;
    assert_eq!(step.status, 200, "{}", step.text);
    assert!(step.text.contains("Sign in with a passkey") && !step.text.contains("Authentication code"));
    let token =
        step.text.split("data-mfa-token=\"").nth(1).and_then(|t| t.split('"').next()).expect("the token");
    let csrf = form.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.clone()).expect("csrf");
    let finish = |device: &mut SoftAuthenticator, start: &latchkey_testkit::Answer| {
        let credential = device.get(&start.json["publicKey"], 0);
        json!({"csrf": csrf, "return_to": "/account", "mfa_token": token,
               "challenge_id": start.str("challenge_id"), "credential": credential})
    };
    let start = s.post(&c, "/auth/passkeys/login/start", json!({})).await;
    let wrong = crate::send(b.post(s.url("/login/passkey")).json(&finish(&mut mo, &start))).await;
    assert_eq!(wrong.status, 401, "Mo's passkey does not finish Lee's sign-in: {}", wrong.text);
    let start = s.post(&c, "/auth/passkeys/login/start", json!({})).await;
    let right = crate::send(b.post(s.url("/login/passkey")).json(&finish(&mut lee, &start))).await;
    assert_eq!((right.status, right.json["redirect"].as_str()), (200, Some("/account")), "{}", right.text);
    let account = crate::send(b.get(s.url("/account"))).await;
    assert!(account.text.contains("Signed in as lee"), "{}", account.text);
}

/// SPEC 11: adding a passkey ends the user's other sessions, and a removed passkey neither
/// signs in nor stands between the password and a session any more.
#[tokio::test]
async fn a_passkey_added_ends_other_sessions_and_a_removed_one_is_gone() {
    let s = TestServer::start_on_localhost(|_| {}).await;
    let c = http_client();
    let mut device = SoftAuthenticator::new(s.issuer());
    s.register(&c, "max", PASSWORD).await;
    let other = s.login(&c, "max", PASSWORD).await;
    let (at, added) = with_passkey_for(&s, &c, "max", &mut device).await;
    let refused = s.refresh(&c, other.str("refresh_token")).await;
    assert_eq!((refused.status, refused.str("error_reason")), (400, "revoked_by_user"), "{}", refused.text);

    let id = added["id"].as_str().expect("the passkey's id");
    let removed = crate::send(c.delete(s.url(&format!("/auth/mfa/{id}"))).bearer_auth(&at)).await;
    assert_eq!(removed.status, 204, "{}", removed.text);
    assert_eq!(passkey_login(&s, &c, &mut device, 0).await.status, 401, "the removed passkey is unknown");
    assert_eq!(s.post(&c, "/auth/login", json!({"username": "max", "password": PASSWORD})).await.status, 200);
}
