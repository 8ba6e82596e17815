//! The second-factor policy (SPEC 11 `mfa`, `mfa_required_roles`) over HTTP: a user who
//! must have a factor and has none gets no session from the password, but `403
//! mfa_enrolment_required` with a token that sets up an authenticator app in place of a
//! Bearer token; the confirmation is the sign-in. The two kinds of `mfa_token` do not
//! stand in for each other, and the page sign-in takes the same path.

use latchkey_core::totp::TotpSecret;
use serde_json::json;

use crate::mfa::code;
use crate::oauth::{browser, hidden_fields};
use crate::{TestServer, http_client, send};

const PASSWORD: &str = "correct horse battery";

/// The `amr` claim of an access token (its signature is checked by other tests).
fn amr_of(access_token: &str) -> serde_json::Value {
    crate::mfa::claims_of(access_token)["amr"].clone()
}

#[tokio::test]
async fn a_role_that_needs_a_factor_sets_one_up_before_any_session() {
    let s = TestServer::start_with(|c| c.settings.mfa.required_roles = vec!["admin".into()]).await;
    let c = http_client();
    s.cli(&["user", "add", "ann", "--password-stdin", "--roles", "admin"], &format!("{PASSWORD}\n"))
        .await
        .expect("user add");
    s.register(&c, "bo", PASSWORD).await;
    // Without the role: the password is enough.
    assert_eq!(s.post(&c, "/auth/login", json!({"username": "bo", "password": PASSWORD})).await.status, 200);

    let login = s.post(&c, "/auth/login", json!({"username": "ann", "password": PASSWORD})).await;
    assert_eq!((login.status, login.str("error")), (403, "mfa_enrolment_required"), "{}", login.text);
    assert!(login.json.get("access_token").is_none());
    let token = login.str("mfa_token").to_owned();
    // It is not a second-step token, nor a Bearer token.
    let step = json!({"mfa_token": token, "method": "totp", "code": "123456"});
    assert_eq!(s.post(&c, "/auth/login/mfa", step).await.status, 401);
    assert_eq!(s.get_auth(&c, "/auth/me", &token).await.status, 401);

    let begun = s.post(&c, "/auth/mfa/totp", json!({"mfa_token": token})).await;
    assert_eq!(begun.status, 200, "{}", begun.text);
    let secret = TotpSecret::from_base32(begun.str("secret")).expect("base32");
    let wrong = s.post(&c, "/auth/mfa/totp/confirm", json!({"mfa_token": token, "code": "000000"})).await;
    assert_eq!((wrong.status, wrong.str("error")), (401, "invalid_credentials"), "{}", wrong.text);
    let done =
        s.post(&c, "/auth/mfa/totp/confirm", json!({"mfa_token": token, "code": code(&s, &secret, 0)})).await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(done.json["recovery_codes"].as_array().map(Vec::len), Some(10), "{}", done.text);
    assert_eq!(amr_of(done.str("access_token")), json!(["pwd", "otp", "mfa"]));
    assert_eq!(s.get_auth(&c, "/auth/me", done.str("access_token")).await.str("username"), "ann");

    // Spent; and the next sign-in asks for the factor like any other.
    let again =
        s.post(&c, "/auth/mfa/totp/confirm", json!({"mfa_token": token, "code": code(&s, &secret, 1)})).await;
    assert_eq!((again.status, again.str("error")), (401, "invalid_token"), "{}", again.text);
    let next = s.post(&c, "/auth/login", json!({"username": "ann", "password": PASSWORD})).await;
    assert_eq!((next.status, next.str("error")), (401, "mfa_required"), "{}", next.text);
    // A second-step token cannot set up another factor.
    let second_step = next.str("mfa_token");
    let sneaky = s.post(&c, "/auth/mfa/totp", json!({"mfa_token": second_step})).await;
    assert_eq!((sneaky.status, sneaky.str("error")), (401, "invalid_token"), "{}", sneaky.text);
    // Neither a Bearer token nor an mfa_token: 401.
    assert_eq!(s.post(&c, "/auth/mfa/totp", json!({})).await.status, 401);
}

#[tokio::test]
async fn an_enrolment_token_dies_with_a_new_password_and_its_five_minutes() {
    let s = TestServer::start_with(|c| c.settings.mfa.required = true).await;
    let c = http_client();
    s.register(&c, "cy", PASSWORD).await;
    let first = s.post(&c, "/auth/login", json!({"username": "cy", "password": PASSWORD})).await;
    assert_eq!(first.status, 403, "{}", first.text);
    s.clock.advance(std::time::Duration::from_secs(301));
    let late = s.post(&c, "/auth/mfa/totp", json!({"mfa_token": first.str("mfa_token")})).await;
    assert_eq!(late.status, 401, "{}", late.text);

    let second = s.post(&c, "/auth/login", json!({"username": "cy", "password": PASSWORD})).await;
    s.cli(&["user", "set-password", "cy", "--password-stdin"], "a brand new password\n")
        .await
        .expect("set-password");
    let stale = s.post(&c, "/auth/mfa/totp", json!({"mfa_token": second.str("mfa_token")})).await;
    assert_eq!(stale.status, 401, "a new password voids it: {}", stale.text);
}

#[tokio::test]
async fn the_sign_in_page_takes_a_user_who_must_enrol_to_set_up_an_app() {
    let s = TestServer::start_with(|c| c.settings.mfa.required = true).await;
    s.register(&http_client(), "di", PASSWORD).await;
    let b = browser();
    let page = send(b.get(s.url("/login"))).await;
    let mut form = hidden_fields(&page.text);
    form.push(("username".into(), "di".into()));
    form.push(("password".into(), PASSWORD.into()));
    let setup = send(b.post(s.url("/login")).form(&form)).await;
    assert_eq!(setup.status, 200, "{}", setup.text);
    assert!(setup.header("set-cookie").is_none_or(|v| !v.contains("lk_session=")), "no session yet");
    assert!(setup.text.contains("<h1>Set up authenticator app</h1>"), "{}", setup.text);
    assert!(setup.text.contains("<svg"), "a QR code, inline");
    assert_eq!(send(b.get(s.url("/account"))).await.status, 303, "not signed in");
    let secret_text = setup.text.split("<code id=\"secret\">").nth(1).and_then(|t| t.split('<').next());
    let secret = TotpSecret::from_base32(secret_text.expect("the secret as text")).expect("base32");

    let fields = hidden_fields(&setup.text);
    let post = |code: String| {
        let mut f = fields.clone();
        f.push(("code".into(), code));
        send(b.post(s.url("/login/enrol")).form(&f))
    };
    let wrong = post("000000".into()).await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    assert!(wrong.text.contains("role=\"alert\"") && wrong.text.contains(secret_text.unwrap()));
    let done = post(code(&s, &secret, 0)).await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert!(done.header("set-cookie").is_some_and(|v| v.contains("lk_session=")), "signed in");
    assert!(done.text.contains("Recovery codes"), "{}", done.text);
    assert_eq!(done.text.matches("<li><code>").count(), 10, "{}", done.text);
    let account = send(b.get(s.url("/account"))).await;
    assert_eq!(account.status, 200, "{}", account.text);
    assert!(account.text.contains("Authenticator app"), "{}", account.text);
}

#[tokio::test]
async fn the_policy_reaches_sessions_that_exist_and_keeps_the_last_factor() {
    let s = TestServer::start_with(|c| c.settings.mfa.required_roles = vec!["admin".into()]).await;
    let c = http_client();
    // A role that needs a factor, given to a signed-in user without one: the sessions end.
    let signed_in = s.signed_in(&c, "eli").await;
    s.service.admin_set_roles("eli", &["admin".to_owned()]).await.expect("set roles");
    let refresh = s.refresh(&c, signed_in.str("refresh_token")).await;
    assert_eq!((refresh.status, refresh.str("error_reason")), (400, "revoked_by_admin"), "{}", refresh.text);
    let login = s.post(&c, "/auth/login", json!({"username": "eli", "password": PASSWORD})).await;
    assert_eq!(login.status, 403, "{}", login.text);

    // After setting one up, the last factor cannot be removed.
    let token = login.str("mfa_token").to_owned();
    let begun = s.post(&c, "/auth/mfa/totp", json!({"mfa_token": token})).await;
    let secret = TotpSecret::from_base32(begun.str("secret")).expect("base32");
    let done =
        s.post(&c, "/auth/mfa/totp/confirm", json!({"mfa_token": token, "code": code(&s, &secret, 0)})).await;
    let at = done.str("access_token").to_owned();
    let factors = s.get_auth(&c, "/auth/mfa", &at).await;
    let id = factors.json["factors"][0]["id"].as_str().expect("a factor").to_owned();
    let refused = send(c.delete(s.url(&format!("/auth/mfa/{id}"))).bearer_auth(&at)).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert_eq!(s.get_auth(&c, "/auth/mfa", &at).await.json["factors"].as_array().map(Vec::len), Some(1));
}
