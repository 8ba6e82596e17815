//! Step-up (SPEC 11) through an independent relying party, the `openidconnect` crate: an
//! app asks with `acr_values` for a sign-in stronger than the browser's session has, or
//! with `max_age` for a recent one, and the server signs the user in again before it
//! answers; the crate validates each ID token and its `acr` check accepts or refuses the
//! level reached. `acr_values` is a request, not a guarantee (OpenID Connect Core
//! §3.1.2.1): a user without a second factor comes back at `pwd`, which the app sees.

use std::time::Duration;

use latchkey_core::totp::TotpSecret;
use latchkey_testkit::html::hidden_fields;
use openidconnect::core::CoreTokenResponse;
use openidconnect::{AuthenticationContextClass, TokenResponse as _};
use serde_json::json;

use crate::interop::{Attempt, PASSWORD, REDIRECT_URI, Setup, USERNAME, authorize_again, exchange};
use crate::send;

const PWD: &str = "urn:latchkey:acr:pwd";
const MFA: &str = "urn:latchkey:acr:mfa";
const PHR: &str = "urn:latchkey:acr:phr";

/// Redeems the code the browser was sent back with and validates the ID token with the
/// crate, whose `acr` check insists on `want`; returns the `amr` values.
async fn tokens_at(t: &Setup, attempt: &Attempt, location: &str, want: &'static str) -> Vec<String> {
    let tokens: CoreTokenResponse =
        exchange(t, &t.rp, attempt.code(location), &attempt.verifier).await.expect("the code is redeemed");
    let id_token = tokens.id_token().expect("an ID token");
    let verifier =
        t.rp.id_token_verifier().set_auth_context_verifier_fn(move |acr| match acr.map(|a| a.as_str()) {
            Some(a) if a == want => Ok(()),
            other => Err(format!("acr {other:?}, wanted {want}")),
        });
    let claims = id_token.claims(&verifier, &attempt.nonce).expect("the crate accepts the ID token");
    let amr = claims.auth_method_refs().expect("amr is present");
    amr.iter().map(|a| a.as_str().to_owned()).collect()
}

/// The crate refuses an ID token at a level the app did not want.
async fn refused_below(t: &Setup, attempt: &Attempt, location: &str, want: &'static str) {
    let tokens =
        exchange(t, &t.rp, attempt.code(location), &attempt.verifier).await.expect("the code is redeemed");
    let verifier = t.rp.id_token_verifier().set_auth_context_verifier_fn(move |acr| {
        if acr == Some(&AuthenticationContextClass::new(want.to_owned())) {
            Ok(())
        } else {
            Err("weak".into())
        }
    });
    let id_token = tokens.id_token().expect("an ID token");
    assert!(id_token.claims(&verifier, &attempt.nonce).is_err(), "the relying party sees the weaker level");
}

/// An authorization request that must sign the user in again: the browser goes to the
/// sign-in page, gives the password and, with `secret`, the app's code on the second step,
/// and comes back to the request (without `acr_values`: the fresh sign-in honoured it).
/// Returns where the server then sends the browser (consent is remembered).
async fn sign_in_again(t: &Setup, attempt: &Attempt, secret: Option<&TotpSecret>) -> String {
    let s = &t.server;
    let start = send(t.browser.get(&attempt.url)).await;
    assert_eq!(start.status, 303, "a sign-in is asked for: {}", start.text);
    let login_path = start.header("location").expect("Location").to_owned();
    assert!(login_path.starts_with("/login?return_to="), "{login_path}");
    let login = send(t.browser.get(s.url(&login_path))).await;
    let mut form = hidden_fields(&login.text);
    form.push(("username".to_owned(), USERNAME.to_owned()));
    form.push(("password".to_owned(), PASSWORD.to_owned()));
    let mut answer = send(t.browser.post(s.url("/login")).form(&form)).await;
    if let Some(secret) = secret {
        assert_eq!(answer.status, 200, "the second step: {}", answer.text);
        assert!(answer.text.contains("Authentication code"), "{}", answer.text);
        let mut form = hidden_fields(&answer.text);
        form.retain(|(k, _)| k != "method");
        form.push(("method".to_owned(), "totp".to_owned()));
        form.push(("code".to_owned(), crate::mfa::code(s, secret, 0)));
        answer = send(t.browser.post(s.url("/login/mfa")).form(&form)).await;
    }
    assert_eq!(answer.status, 303, "{}", answer.text);
    let back = answer.header("location").expect("Location").to_owned();
    assert!(back.starts_with("/oauth/authorize?") && !back.contains("acr_values"), "{back}");
    authorize_again(&t.browser, &s.url(&back)).await
}

/// The consent form's fields for `attempt` as the browser would post them: its CSRF token,
/// the request's parameters and Allow.
async fn consent_form(t: &Setup, attempt: &Attempt) -> Vec<(String, String)> {
    let login = send(t.browser.get(t.server.url("/login"))).await;
    let mut form: Vec<(String, String)> =
        hidden_fields(&login.text).into_iter().filter(|(k, _)| k == "csrf").collect();
    let url = reqwest::Url::parse(&attempt.url).expect("an absolute URL");
    form.extend(url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())));
    form.push(("decision".to_owned(), "allow".to_owned()));
    form
}

/// Sets up an authenticator app for the user through the API; its secret.
async fn enrol(t: &Setup) -> TotpSecret {
    let s = &t.server;
    let at = s.login(&t.http, USERNAME, PASSWORD).await.str("access_token").to_owned();
    let begun = s.post_auth(&t.http, "/auth/mfa/totp", &at, json!({})).await;
    assert_eq!(begun.status, 200, "{}", begun.text);
    let secret = TotpSecret::from_base32(begun.str("secret")).expect("base32");
    let code = crate::mfa::code(s, &secret, 0);
    let confirmed = s.post_auth(&t.http, "/auth/mfa/totp/confirm", &at, json!({"code": code})).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.text);
    secret
}

#[tokio::test]
async fn acr_values_and_max_age_ask_for_a_new_sign_in_at_the_level_asked() {
    let t = Setup::new().await;
    let s = &t.server;
    let doc = send(t.http.get(s.url("/.well-known/openid-configuration"))).await;
    assert_eq!(doc.json["acr_values_supported"], json!([PWD, MFA, PHR]), "{}", doc.text);

    // The first sign-in, with the password: `pwd`.
    let first = Attempt::asking(&t.rp, &[], None);
    let location = crate::interop::sign_in_and_allow(s, &t.browser, &first.url).await;
    assert_eq!(tokens_at(&t, &first, &location, PWD).await, ["pwd"]);

    // Asking for the level the session has: straight back, no page.
    let same = Attempt::asking(&t.rp, &[PWD], None);
    let location = authorize_again(&t.browser, &same.url).await;
    tokens_at(&t, &same, &location, PWD).await;

    // A higher level under prompt=none: `login_required`, no page.
    let quiet = Attempt::asking(&t.rp, &[MFA], None);
    let none = send(t.browser.get(format!("{}&prompt=none", quiet.url))).await;
    assert_eq!(none.status, 302, "{}", none.text);
    let to = none.header("location").unwrap_or_default();
    assert!(to.starts_with(REDIRECT_URI) && to.contains("error=login_required"), "{to}");

    // The consent form posted with a higher level is no way round: sign in first.
    let consent = consent_form(&t, &Attempt::asking(&t.rp, &[MFA], None)).await;
    let answer = send(t.browser.post(s.url("/oauth/authorize")).form(&consent)).await;
    assert_eq!(answer.status, 303, "{}", answer.text);
    assert!(
        answer.header("location").unwrap_or_default().starts_with("/login?"),
        "{:?}",
        answer.header("location")
    );

    // A higher level for a user without a factor: a new sign-in, which can only reach
    // `pwd`; the app sees it and refuses.
    let weak = Attempt::asking(&t.rp, &[MFA], None);
    let location = sign_in_again(&t, &weak, None).await;
    refused_below(&t, &weak, &location, MFA).await;

    // With an authenticator app: the new sign-in asks for its code and reaches `mfa`.
    // (Setting it up ended the browser's session; the app asks for any of two levels.)
    let secret = enrol(&t).await;
    s.clock.advance(Duration::from_secs(30));
    let strong = Attempt::asking(&t.rp, &[PHR, MFA], None);
    let location = sign_in_again(&t, &strong, Some(&secret)).await;
    let amr = tokens_at(&t, &strong, &location, MFA).await;
    assert_eq!(amr, ["pwd", "otp", "mfa"]);
    // The session has the level now: no page.
    let again = Attempt::asking(&t.rp, &[MFA], None);
    let location = authorize_again(&t.browser, &again.url).await;
    tokens_at(&t, &again, &location, MFA).await;
    // A passkey's level is still above it: prompt=none cannot reach it.
    let phr_only = Attempt::asking(&t.rp, &[PHR], None);
    let none = send(t.browser.get(format!("{}&prompt=none", phr_only.url))).await;
    assert!(none.header("location").unwrap_or_default().contains("error=login_required"));

    // max_age: a sign-in older than asked means signing in again.
    s.clock.advance(Duration::from_secs(120));
    let fresh = Attempt::asking(&t.rp, &[], Some(Duration::from_secs(60)));
    let location = sign_in_again(&t, &fresh, Some(&secret)).await;
    tokens_at(&t, &fresh, &location, MFA).await;
    let recent = Attempt::asking(&t.rp, &[], Some(Duration::from_secs(60)));
    let location = authorize_again(&t.browser, &recent.url).await;
    tokens_at(&t, &recent, &location, MFA).await;
}
