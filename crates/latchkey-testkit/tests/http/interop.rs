//! Interoperability with an independent relying party: the `openidconnect` crate (4.x) finds
//! the endpoints and keys through discovery, sends the user through the server's own sign-in
//! and consent pages with PKCE (S256), `state` and `nonce`, redeems the code, validates the
//! ID token (signature against the published keys, issuer, audience, nonce, `at_hash`,
//! `auth_time`), reads userinfo, refreshes with rotation and sees reuse refused, introspects,
//! finds the consent remembered on a second visit, and receives the token endpoint's protocol
//! errors (`invalid_client`, `invalid_grant`) as the crate's typed errors. No workaround on
//! the server side: only the test server's fixed issuer name needs the discovery step below.

use latchkey_testkit::ISSUER;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreErrorResponseType, CoreJsonWebKeySet, CoreProviderMetadata,
    CoreRevocableToken, CoreTokenIntrospectionResponse, CoreTokenResponse, CoreUserInfoClaims,
};
use openidconnect::{
    AccessToken, AccessTokenHash, AuthenticationContextClass, AuthorizationCode, ClientId, ClientSecret,
    ConfigurationError, CsrfToken, EndSessionUrl, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    HttpClientError, IntrospectionUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RefreshToken, RequestTokenError, RevocationUrl, Scope, StandardErrorResponse,
    SubjectIdentifier, TokenIntrospectionResponse, TokenResponse as _,
};
use openidconnect::{LogoutRequest, PostLogoutRedirectUrl, ProviderMetadataWithLogout};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{TestServer, http_client, send};
use latchkey_testkit::html::hidden_fields;

pub(crate) const REDIRECT_URI: &str = "http://127.0.0.1:9/cb";
pub(crate) const POST_LOGOUT_URI: &str = "http://127.0.0.1:9/signed-out";
pub(crate) const USERNAME: &str = "alice";
pub(crate) const PASSWORD: &str = "correct horse battery";

/// The relying party after discovery, with the two endpoints that `CoreProviderMetadata`
/// does not model (introspection, revocation) set from the discovery document. The
/// typestates are, in order: authorization, device authorization, introspection,
/// revocation, token, userinfo.
pub(crate) type RelyingParty =
    CoreClient<EndpointSet, EndpointNotSet, EndpointSet, EndpointSet, EndpointMaybeSet, EndpointMaybeSet>;

/// A failed token-endpoint request as the crate reports it with a `reqwest` client.
// CHECK: `HttpClientError<reqwest::Error>` is the `AsyncHttpClient::Error` of `reqwest::Client`
// in oauth2 5.0 (re-exported by openidconnect as `openidconnect::HttpClientError`).
pub(crate) type TokenError =
    RequestTokenError<HttpClientError<reqwest::Error>, StandardErrorResponse<CoreErrorResponseType>>;

/// What discovery yields for the relying party.
struct Discovered {
    metadata: CoreProviderMetadata,
    introspection: IntrospectionUrl,
    revocation: RevocationUrl,
    /// From the crate's RP-Initiated Logout metadata (`ProviderMetadataWithLogout`).
    end_session: EndSessionUrl,
}

/// Discovery as a relying party does it, with one test-only step.
///
/// Every test server publishes the fixed issuer `http://latchkey.test` (the `iss` its tokens
/// carry) but listens on a free port, so the crate's own discovery (which fetches
/// `{issuer}/.well-known/openid-configuration` and checks the issuer) cannot reach it. A
/// deployment would simply call `CoreProviderMetadata::discover_async(issuer, &http)`.
/// Here the document is fetched from the listening address, every endpoint in it is pointed
/// at that address, and `issuer` is kept exactly as published, so the crate still checks ID
/// tokens against the real issuer.
async fn discover(s: &TestServer) -> Discovered {
    let c = http_client();
    let doc = send(c.get(s.url("/.well-known/openid-configuration"))).await;
    assert_eq!(doc.status, 200, "{}", doc.text);
    let mut json = doc.json;
    assert_eq!(json["issuer"], ISSUER);
    for (key, value) in json.as_object_mut().expect("discovery is a JSON object") {
        if key == "issuer" {
            continue;
        }
        let moved =
            value.as_str().and_then(|v| v.strip_prefix(ISSUER)).map(|path| format!("{}{path}", s.base));
        if let Some(url) = moved {
            *value = Value::String(url);
        }
    }
    // The keys come from the advertised `jwks_uri` (now at the listening address).
    let jwks = send(c.get(json["jwks_uri"].as_str().expect("jwks_uri"))).await;
    assert_eq!(jwks.status, 200, "{}", jwks.text);
    let keys: CoreJsonWebKeySet = serde_json::from_str(&jwks.text).expect("the crate reads the JWKS");
    let endpoint = |name: &str| json[name].as_str().expect(name).to_owned();
    let introspection = IntrospectionUrl::new(endpoint("introspection_endpoint")).expect("introspection URL");
    let revocation = RevocationUrl::new(endpoint("revocation_endpoint")).expect("revocation URL");
    let with_logout: ProviderMetadataWithLogout =
        serde_json::from_value(json.clone()).expect("the crate reads the logout metadata");
    let end_session =
        with_logout.additional_metadata().end_session_endpoint.clone().expect("end_session_endpoint");
    let metadata: CoreProviderMetadata =
        serde_json::from_value(json).expect("the crate reads the discovery document");
    assert_eq!(metadata.issuer().as_str(), ISSUER);
    Discovered { metadata: metadata.set_jwks(keys), introspection, revocation, end_session }
}

/// The crate's client for the registered app, as a confidential client (HTTP Basic).
fn relying_party(discovered: &Discovered, client_id: &str, secret: &str) -> RelyingParty {
    CoreClient::from_provider_metadata(
        discovered.metadata.clone(),
        ClientId::new(client_id.to_owned()),
        Some(ClientSecret::new(secret.to_owned())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT_URI.to_owned()).expect("redirect URI"))
    .set_introspection_url(discovered.introspection.clone())
    .set_revocation_url(discovered.revocation.clone())
}

/// A server with the user and a confidential app, and the relying party for that app.
pub(crate) struct Setup {
    pub(crate) server: TestServer,
    discovered: Discovered,
    client_id: String,
    client_secret: String,
    pub(crate) rp: RelyingParty,
    /// The relying party's own HTTP client: no cookies, and no redirects followed (the
    /// crate's advice against SSRF).
    pub(crate) http: reqwest::Client,
    /// The user's browser: keeps cookies, follows no redirects.
    pub(crate) browser: reqwest::Client,
}

impl Setup {
    /// Starts the server, registers the user and the app (`openid profile`, code and refresh
    /// grants, one loopback redirect URI), and runs discovery.
    pub(crate) async fn new() -> Self {
        let server = TestServer::start().await;
        server.register(&http_client(), USERNAME, PASSWORD).await;
        let out = server
            .cli(
                &[
                    "client",
                    "add",
                    "--name",
                    "Interop App",
                    "--redirect-uri",
                    REDIRECT_URI,
                    "--grant-types",
                    "authorization_code,refresh_token",
                    "--scopes",
                    "openid profile",
                    "--post-logout-redirect-uri",
                    POST_LOGOUT_URI,
                ],
                "",
            )
            .await
            .expect("client add");
        let created: Value = serde_json::from_str(out.trim()).expect("client add prints JSON");
        let client_id = created["client_id"].as_str().expect("client_id").to_owned();
        let client_secret = created["client_secret"].as_str().expect("client_secret").to_owned();
        let discovered = discover(&server).await;
        let rp = relying_party(&discovered, &client_id, &client_secret);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client");
        Self { server, discovered, client_id, client_secret, rp, http, browser: http_client() }
    }
}

/// One authorization request as the crate builds it, and what the crate keeps to finish it.
pub(crate) struct Attempt {
    pub(crate) url: String,
    state: CsrfToken,
    pub(crate) nonce: Nonce,
    pub(crate) verifier: PkceCodeVerifier,
}

impl Attempt {
    /// An authorization request for `openid profile` (the crate adds `openid`) with a fresh
    /// PKCE (S256) challenge, `state` and `nonce`.
    fn begin(rp: &RelyingParty) -> Self {
        Self::asking(rp, &[], None)
    }

    /// The same, also asking for a sign-in at one of `acr_values` (OpenID Connect Core
    /// §3.1.2.1) and no older than `max_age`.
    pub(crate) fn asking(rp: &RelyingParty, acr_values: &[&str], max_age: Option<Duration>) -> Self {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = rp
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("profile".to_owned()))
            .set_pkce_challenge(challenge);
        for acr in acr_values {
            request = request.add_auth_context_value(AuthenticationContextClass::new((*acr).to_owned()));
        }
        if let Some(max_age) = max_age {
            request = request.set_max_age(max_age);
        }
        let (url, state, nonce) = request.url();
        Self { url: String::from(url), state, nonce, verifier }
    }

    /// The code in the redirect the server sent the browser to, after the checks a relying
    /// party makes: its own redirect URI, its `state` back unchanged, and the issuer named in
    /// the response (RFC 9207).
    pub(crate) fn code(&self, location: &str) -> AuthorizationCode {
        assert!(location.starts_with(&format!("{REDIRECT_URI}?")), "{location}");
        let url = reqwest::Url::parse(location).expect("an absolute redirect");
        let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
        assert_eq!(param("error"), None, "{location}");
        assert_eq!(param("state").as_deref(), Some(self.state.secret().as_str()), "{location}");
        assert_eq!(param("iss").as_deref(), Some(ISSUER), "{location}");
        AuthorizationCode::new(param("code").expect("a code"))
    }
}

/// A form field's value.
pub(crate) fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A first visit: the authorization request sends the browser to sign in; it signs in with
/// the login form and allows the consent form. Returns where the server finally sends the
/// browser (the redirect URI with the response).
pub(crate) async fn sign_in_and_allow(
    s: &TestServer,
    browser: &reqwest::Client,
    authorize_url: &str,
) -> String {
    let start = send(browser.get(authorize_url)).await;
    assert_eq!(start.status, 303, "{}", start.text);
    let login_path = start.header("location").expect("Location").to_owned();
    assert!(login_path.starts_with("/login?return_to="), "{login_path}");

    let login = send(browser.get(s.url(&login_path))).await;
    assert_eq!(login.status, 200, "{}", login.text);
    let mut form = hidden_fields(&login.text);
    assert!(field(&form, "csrf").is_some_and(|c| c.len() == 43), "{form:?}");
    assert!(field(&form, "return_to").is_some_and(|r| r.starts_with("/oauth/authorize?")), "{form:?}");
    form.push(("username".to_owned(), USERNAME.to_owned()));
    form.push(("password".to_owned(), PASSWORD.to_owned()));
    let signed_in = send(browser.post(s.url("/login")).form(&form)).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.text);
    let back = signed_in.header("location").expect("Location").to_owned();
    assert_eq!(Some(back.as_str()), field(&form, "return_to"));

    let consent = send(browser.get(s.url(&back))).await;
    assert_eq!(consent.status, 200, "{}", consent.text);
    assert!(consent.text.contains(r#"name="decision" value="allow""#), "{}", consent.text);
    let mut form = hidden_fields(&consent.text);
    assert!(field(&form, "csrf").is_some(), "{form:?}");
    form.push(("decision".to_owned(), "allow".to_owned()));
    let allowed = send(browser.post(s.url("/oauth/authorize")).form(&form)).await;
    assert_eq!(allowed.status, 303, "{}", allowed.text);
    allowed.header("location").expect("Location").to_owned()
}

/// A later visit by the same signed-in user for the same scopes: no page, the server sends
/// the browser straight back to the app.
pub(crate) async fn authorize_again(browser: &reqwest::Client, authorize_url: &str) -> String {
    let a = send(browser.get(authorize_url)).await;
    assert_eq!(a.status, 302, "consent is remembered, so no page: {}", a.text);
    a.header("location").expect("Location").to_owned()
}

/// Redeems a code through `rp` with a copy of the PKCE verifier (the crate's verifier is not
/// `Clone`, on purpose: one request each).
pub(crate) async fn exchange(
    t: &Setup,
    rp: &RelyingParty,
    code: AuthorizationCode,
    verifier: &PkceCodeVerifier,
) -> Result<CoreTokenResponse, TokenError> {
    rp.exchange_code(code)
        .expect("the token endpoint was discovered")
        .set_pkce_verifier(PkceCodeVerifier::new(verifier.secret().clone()))
        .request_async(&t.http)
        .await
}

/// One refresh through the crate; panics unless the server answers with tokens.
async fn refresh(t: &Setup, token: &RefreshToken) -> CoreTokenResponse {
    t.rp.exchange_refresh_token(token)
        .expect("the token endpoint was discovered")
        .request_async(&t.http)
        .await
        .expect("refresh")
}

/// Introspects an access token through the crate.
async fn introspect(t: &Setup, token: &AccessToken) -> CoreTokenIntrospectionResponse {
    t.rp.introspect(token).request_async(&t.http).await.expect("introspection")
}

/// Introspects any token with a plain request (RFC 7662: the app's Basic credentials and
/// `token`); the crate's introspection takes access tokens only.
async fn introspect_by_hand(t: &Setup, token: &str) -> Value {
    let a = send(
        t.http
            .post(t.discovered.introspection.as_str())
            .basic_auth(&t.client_id, Some(&t.client_secret))
            .form(&[("token", token)]),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.json
}

/// The error code of a refused token request.
fn error_code<T>(result: &Result<T, TokenError>) -> CoreErrorResponseType {
    match result {
        Err(RequestTokenError::ServerResponse(e)) => e.error().clone(),
        Err(other) => panic!("expected an OAuth error response, got: {other}"),
        Ok(_) => panic!("expected an OAuth error response, got tokens"),
    }
}

/// Validates the ID token of a token response with the crate (signature against the
/// published keys, allowed algorithm, issuer, audience, expiry, nonce), then its `at_hash`
/// against the access token; returns its subject.
fn check_id_token(t: &Setup, tokens: &CoreTokenResponse, nonce: &Nonce) -> SubjectIdentifier {
    let id_token = tokens.id_token().expect("an ID token for the openid scope");
    let verifier = t.rp.id_token_verifier();
    let claims = id_token.claims(&verifier, nonce).expect("the crate accepts the ID token");
    assert_eq!(claims.issuer().as_str(), ISSUER);
    assert!(claims.audiences().iter().any(|a| a.as_str() == t.client_id), "{:?}", claims.audiences());
    assert_eq!(claims.preferred_username().map(|u| u.as_str()), Some(USERNAME));
    assert!(claims.auth_time().is_some(), "auth_time is present");
    let expected = claims.access_token_hash().expect("at_hash is present");
    let actual = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().expect("the ID token is signed"),
        id_token.signing_key(&verifier).expect("its key is published"),
    )
    .expect("at_hash computes");
    assert_eq!(&actual, expected);
    claims.subject().clone()
}

/// Userinfo through the crate: the same subject as the ID token.
async fn check_userinfo(t: &Setup, tokens: &CoreTokenResponse, subject: &SubjectIdentifier) {
    let info: CoreUserInfoClaims =
        t.rp.user_info(tokens.access_token().clone(), None)
            .expect("the userinfo endpoint was discovered")
            .request_async(&t.http)
            .await
            .expect("userinfo");
    assert_eq!(info.subject(), subject);
    assert_eq!(info.preferred_username().map(|u| u.as_str()), Some(USERNAME));
}

/// Revocation (RFC 7009) of a refresh token, seen through introspection and the token
/// endpoint.
async fn check_revocation(t: &Setup, tokens: &CoreTokenResponse) {
    let token = tokens.refresh_token().expect("a refresh token");
    let before = introspect_by_hand(t, token.secret()).await;
    assert_eq!(before["active"], true, "{before}");
    assert_eq!(before["token_type"], "refresh_token", "{before}");
    // CHECK: oauth2 5.0 refuses a non-https revocation endpoint before sending anything
    // (RFC 7009 §2: "Clients MUST verify that the URL is an HTTPS URL"), and the test server
    // is plain http on loopback; so the revocation itself is a plain request.
    assert!(matches!(
        t.rp.revoke_token(CoreRevocableToken::from(token.clone())),
        Err(ConfigurationError::InsecureUrl(_))
    ));
    let revoked = send(
        t.http
            .post(t.discovered.revocation.as_str())
            .basic_auth(&t.client_id, Some(&t.client_secret))
            .form(&[("token", token.secret().as_str()), ("token_type_hint", "refresh_token")]),
    )
    .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert_eq!(introspect_by_hand(t, token.secret()).await, json!({"active": false}));
    let refused =
        t.rp.exchange_refresh_token(token)
            .expect("the token endpoint was discovered")
            .request_async(&t.http)
            .await;
    assert_eq!(error_code(&refused), CoreErrorResponseType::InvalidGrant);
}

/// Refresh-token rotation through the crate, introspection of the newest access token, then
/// a retired refresh token replayed: refused as reuse, which ends the session.
async fn check_rotation(t: &Setup, tokens: &CoreTokenResponse) {
    let original = tokens.refresh_token().expect("a refresh token");
    let refreshed = refresh(t, original).await;
    let rotated = refreshed.refresh_token().expect("a rotated refresh token");
    assert_ne!(rotated.secret(), original.secret());
    let refreshed_again = refresh(t, rotated).await;
    let newest = refreshed_again.refresh_token().expect("a rotated refresh token");
    assert_ne!(newest.secret(), rotated.secret());

    let live = introspect(t, refreshed_again.access_token()).await;
    assert!(live.active(), "{live:?}");
    assert_eq!(live.client_id().map(|c| c.as_str()), Some(t.client_id.as_str()));
    assert_eq!(live.username(), Some(USERNAME));

    // The first token again, after its successor was used: reuse (SPEC 4).
    let replay =
        t.rp.exchange_refresh_token(original)
            .expect("the token endpoint was discovered")
            .request_async(&t.http)
            .await;
    assert_eq!(error_code(&replay), CoreErrorResponseType::InvalidGrant);
    let ended = introspect(t, refreshed_again.access_token()).await;
    assert!(!ended.active(), "reuse revokes the session and its access tokens: {ended:?}");
}

#[tokio::test]
async fn openidconnect_crate_completes_the_code_flow() {
    let t = Setup::new().await;

    // First visit: sign in and consent through the server's pages.
    let first = Attempt::begin(&t.rp);
    assert!(first.url.starts_with(&t.server.url("/oauth/authorize?")), "{}", first.url);
    let location = sign_in_and_allow(&t.server, &t.browser, &first.url).await;
    let tokens =
        exchange(&t, &t.rp, first.code(&location), &first.verifier).await.expect("the code is redeemed");
    let subject = check_id_token(&t, &tokens, &first.nonce);
    check_userinfo(&t, &tokens, &subject).await;

    // Second visit: the consent is remembered; a new code, a new session, the same user.
    let second = Attempt::begin(&t.rp);
    let location = authorize_again(&t.browser, &second.url).await;
    let more =
        exchange(&t, &t.rp, second.code(&location), &second.verifier).await.expect("the code is redeemed");
    assert_eq!(check_id_token(&t, &more, &second.nonce), subject);

    check_revocation(&t, &more).await;
    check_rotation(&t, &tokens).await;
}

/// RP-initiated logout as the crate builds it: the hint names the browser's own sign-in, so
/// the browser is signed out without a question and sent back with `state`; the app's
/// session is over (its refresh token is refused).
#[tokio::test]
async fn openidconnect_crate_signs_the_browser_out() {
    let t = Setup::new().await;
    let attempt = Attempt::begin(&t.rp);
    let location = sign_in_and_allow(&t.server, &t.browser, &attempt.url).await;
    let tokens = exchange(&t, &t.rp, attempt.code(&location), &attempt.verifier).await.expect("tokens");
    let id_token = tokens.id_token().expect("an ID token");
    let state = CsrfToken::new_random();
    let url = LogoutRequest::from(t.discovered.end_session.clone())
        .set_id_token_hint(id_token)
        .set_client_id(ClientId::new(t.client_id.clone()))
        .set_post_logout_redirect_uri(PostLogoutRedirectUrl::new(POST_LOGOUT_URI.to_owned()).expect("URL"))
        .set_state(state.clone())
        .http_get_url();
    let out = send(t.browser.get(url.as_str())).await;
    assert_eq!(out.status, 303, "{}", out.text);
    let back = reqwest::Url::parse(out.header("location").expect("Location")).expect("absolute");
    assert_eq!(back.as_str().split('?').next(), Some(POST_LOGOUT_URI));
    assert_eq!(
        back.query_pairs().find(|(k, _)| k == "state").map(|(_, v)| v.into_owned()),
        Some(state.secret().clone())
    );
    let refused =
        t.rp.exchange_refresh_token(tokens.refresh_token().expect("a refresh token"))
            .expect("the token endpoint was discovered")
            .request_async(&t.http)
            .await;
    assert_eq!(error_code(&refused), CoreErrorResponseType::InvalidGrant);
}

#[tokio::test]
async fn openidconnect_crate_sees_protocol_errors() {
    let t = Setup::new().await;
    let attempt = Attempt::begin(&t.rp);
    let location = sign_in_and_allow(&t.server, &t.browser, &attempt.url).await;
    let code = attempt.code(&location);

    // A wrong client secret: `invalid_client`, and the code is not spent by it.
    let impostor = relying_party(&t.discovered, &t.client_id, "lks_not-the-secret");
    let wrong = exchange(&t, &impostor, code.clone(), &attempt.verifier).await;
    assert_eq!(error_code(&wrong), CoreErrorResponseType::InvalidClient);
    let tokens = exchange(&t, &t.rp, code.clone(), &attempt.verifier).await.expect("the code still works");
    assert!(introspect(&t, tokens.access_token()).await.active());

    // The same code twice: `invalid_grant`, and what the code produced is revoked.
    let again = exchange(&t, &t.rp, code, &attempt.verifier).await;
    assert_eq!(error_code(&again), CoreErrorResponseType::InvalidGrant);
    assert!(!introspect(&t, tokens.access_token()).await.active(), "a replayed code revokes its tokens");
}
