//! Dynamic client registration (RFC 7591) and its management protocol (RFC 7592), SPEC 13:
//! `POST /oauth/register` when `dynamic_registration` is `open`, or `token` with an initial
//! access token from `latchkey client registration-token` (each admits one registration);
//! the answer's `registration_access_token` then reads (`GET`), replaces (`PUT`) and
//! deletes (`DELETE`) the client at its `registration_client_uri`.
//!
//! A client registered this way is held to more than one the operator registers: redirect
//! URIs are `https`, or `http` on a loopback address for native apps (RFC 8252 §7.3); the
//! URIs the server calls (`backchannel_logout_uri`, `jwks_uri`) are `https`; the scopes are
//! [`REGISTRABLE_SCOPES`] only (never the feed's or introspection's, which carry power over
//! other clients' tokens), its grants those of a user's app (no `client_credentials`), and
//! it may not change how it authenticates.

use latchkey_proto::ErrorCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::clients::{ClientError, NewClient, is_https_or_loopback_http};
use crate::clock::Timestamp;
use crate::crypto::{TokenHash, b64, random_bytes};
use crate::ids::ClientId;
use crate::service::Latchkey;
use crate::settings::DynamicRegistration;
use crate::store::{ClientKeys, ClientRecord, StoreError};

/// The scopes a client may register itself for.
pub const REGISTRABLE_SCOPES: [&str; 3] = ["openid", "profile", "offline_access"];
/// How long an initial access token lives.
pub const REGISTRATION_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(86_400);
const INITIAL_TOKEN_PREFIX: &str = "lki_";
const ACCESS_TOKEN_PREFIX: &str = "lkg_";

/// Client metadata as sent (RFC 7591 §2); other members are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ClientMetadata {
    /// Required with the code grant.
    pub redirect_uris: Vec<String>,
    /// A name for people.
    pub client_name: Option<String>,
    /// Default `authorization_code, refresh_token`.
    pub grant_types: Option<Vec<String>>,
    /// `code` only.
    pub response_types: Option<Vec<String>>,
    /// Space-separated, within [`REGISTRABLE_SCOPES`]; default `openid profile`.
    pub scope: Option<String>,
    /// `client_secret_basic` (default), `client_secret_post`, `private_key_jwt` or `none`.
    pub token_endpoint_auth_method: Option<String>,
    /// RP-initiated logout.
    pub post_logout_redirect_uris: Vec<String>,
    /// Back-channel logout (`https`).
    pub backchannel_logout_uri: Option<String>,
    /// Back-channel logout needs `sid`.
    pub backchannel_logout_session_required: Option<bool>,
    /// `private_key_jwt` keys at a URL (`https`).
    pub jwks_uri: Option<String>,
    /// `private_key_jwt` keys, inline.
    pub jwks: Option<Value>,
    /// RFC 7592 `PUT`: must be the client's own.
    pub client_id: Option<String>,
}

/// Why a registration request is refused (RFC 7591 §3.2.2, RFC 7592).
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// `dynamic_registration = "closed"`.
    #[error("dynamic client registration is closed")]
    Closed,
    /// A missing, unknown or spent initial or registration access token.
    #[error("the access token is not valid")]
    InvalidToken,
    /// `invalid_redirect_uri`.
    #[error("{0}")]
    InvalidRedirectUri(String),
    /// `invalid_client_metadata`.
    #[error("{0}")]
    InvalidMetadata(String),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RegistrationError {
    /// The RFC 7591 error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Closed => ErrorCode::AccessDenied,
            Self::InvalidToken => ErrorCode::InvalidToken,
            Self::InvalidRedirectUri(_) => ErrorCode::InvalidRedirectUri,
            Self::InvalidMetadata(_) => ErrorCode::InvalidClientMetadata,
            Self::Store(_) => ErrorCode::ServerError,
        }
    }
}

impl From<ClientError> for RegistrationError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Store(s) => Self::Store(s),
            other => Self::InvalidMetadata(other.to_string()),
        }
    }
}

fn is_https(uri: &str) -> bool {
    url::Url::parse(uri).is_ok_and(|u| u.scheme() == "https" && u.host().is_some() && u.fragment().is_none())
}

/// The registration's checks beyond the operator's, then the operator's own (`NewClient`).
fn new_client(m: ClientMetadata) -> Result<NewClient, RegistrationError> {
    let bad = |why: &str| RegistrationError::InvalidMetadata(why.to_owned());
    if let Some(uri) =
        m.redirect_uris.iter().chain(&m.post_logout_redirect_uris).find(|u| !is_https_or_loopback_http(u))
    {
        return Err(RegistrationError::InvalidRedirectUri(format!(
            "{uri:?}: redirect URIs must be https, or http on a loopback address, without a fragment"
        )));
    }
    let self_grants = ["authorization_code", "refresh_token", crate::oauth::DEVICE_CODE_GRANT];
    if m.grant_types.as_ref().is_some_and(|g| g.iter().any(|g| !self_grants.contains(&g.as_str()))) {
        return Err(RegistrationError::InvalidMetadata(format!(
            "grant_types: a self-registered app may use {} only",
            self_grants.join(", ")
        )));
    }
    if m.response_types.as_ref().is_some_and(|r| r.iter().any(|t| t != "code")) {
        return Err(bad("response_types: only code is supported"));
    }
    let scopes: Vec<String> =
        m.scope.as_deref().unwrap_or("openid profile").split_whitespace().map(str::to_owned).collect();
    if let Some(s) = scopes.iter().find(|s| !REGISTRABLE_SCOPES.contains(&s.as_str())) {
        return Err(RegistrationError::InvalidMetadata(format!(
            "scope {s:?} cannot be registered here; use {}",
            REGISTRABLE_SCOPES.join(" ")
        )));
    }
    if [&m.backchannel_logout_uri, &m.jwks_uri].into_iter().flatten().any(|u| !is_https(u)) {
        return Err(bad("backchannel_logout_uri and jwks_uri must be https"));
    }
    let method = m.token_endpoint_auth_method.as_deref().unwrap_or("client_secret_basic");
    let has_keys = m.jwks.is_some() || m.jwks_uri.is_some();
    match method {
        "client_secret_basic" | "client_secret_post" | "none" if has_keys => {
            return Err(bad("jwks and jwks_uri go with private_key_jwt"));
        }
        "private_key_jwt" if !has_keys => return Err(bad("private_key_jwt needs jwks or jwks_uri")),
        "client_secret_basic" | "client_secret_post" | "none" | "private_key_jwt" => {}
        _ => {
            return Err(bad(
                "token_endpoint_auth_method: client_secret_basic, client_secret_post, private_key_jwt or none",
            ));
        }
    }
    Ok(NewClient {
        name: m.client_name.unwrap_or_else(|| "Unnamed app".to_owned()),
        redirect_uris: m.redirect_uris,
        grant_types: m.grant_types.unwrap_or_default(),
        scopes,
        is_public: method == "none",
        post_logout_redirect_uris: m.post_logout_redirect_uris,
        backchannel_logout_uri: m.backchannel_logout_uri,
        backchannel_logout_session_required: m.backchannel_logout_session_required.unwrap_or(false),
        require_par: false,
        resources: Vec::new(),
        jwks: m.jwks.map(|j| j.to_string()),
        jwks_uri: m.jwks_uri,
    })
}

/// How a client authenticates at the token endpoint, as metadata says it.
fn auth_method(c: &ClientRecord, post: bool) -> &'static str {
    match (&c.keys, c.secret_hash.is_some()) {
        (Some(_), _) => "private_key_jwt",
        (None, true) if post => "client_secret_post",
        (None, true) => "client_secret_basic",
        (None, false) => "none",
    }
}

impl Latchkey {
    /// `latchkey client registration-token`: an initial access token admitting one
    /// registration (SPEC 13), shown once, stored hashed.
    ///
    /// # Errors
    /// Storage.
    pub async fn admin_registration_token(&self) -> Result<(String, Timestamp), StoreError> {
        let token = format!("{INITIAL_TOKEN_PREFIX}{}", b64(&random_bytes::<32>()));
        let now = self.clock.now();
        let until = now.plus(REGISTRATION_TOKEN_TTL);
        self.store.insert_registration_token(&TokenHash::of(&token), now, until).await?;
        Ok((token, until))
    }

    /// The client's registration as RFC 7591 §3.2.1 answers it.
    fn registration_answer(&self, c: &ClientRecord, post: bool) -> Value {
        let backchannel = c.backchannel_logout.as_ref();
        let mut v = json!({
            "client_id": c.client_id,
            "client_id_issued_at": c.created_at.0,
            "client_name": c.name,
            "redirect_uris": c.redirect_uris,
            "grant_types": c.grant_types,
            "response_types": ["code"],
            "scope": c.scopes.to_string(),
            "token_endpoint_auth_method": auth_method(c, post),
            "post_logout_redirect_uris": c.post_logout_redirect_uris,
            "registration_client_uri": format!("{}/oauth/register/{}", self.settings.issuer, c.client_id),
        });
        if let Some(obj) = v.as_object_mut() {
            if let Some(b) = backchannel {
                obj.insert("backchannel_logout_uri".into(), json!(b.uri));
                obj.insert("backchannel_logout_session_required".into(), json!(b.session_required));
            }
            match &c.keys {
                Some(ClientKeys::Uri(u)) => {
                    obj.insert("jwks_uri".into(), json!(u));
                }
                Some(ClientKeys::Inline(j)) => {
                    obj.insert("jwks".into(), serde_json::from_str(j).unwrap_or(Value::Null));
                }
                None => {}
            }
            if c.secret_hash.is_some() {
                obj.insert("client_secret_expires_at".into(), json!(0));
            }
        }
        v
    }

    /// `POST /oauth/register` (RFC 7591): `initial` is the request's Bearer token.
    ///
    /// # Errors
    /// [`RegistrationError`].
    pub async fn register_client(
        &self,
        metadata: ClientMetadata,
        initial: Option<&str>,
    ) -> Result<Value, RegistrationError> {
        match self.settings.dynamic_registration {
            DynamicRegistration::Closed => return Err(RegistrationError::Closed),
            DynamicRegistration::Open => {}
            DynamicRegistration::Token => {
                let token = initial
                    .filter(|t| t.starts_with(INITIAL_TOKEN_PREFIX))
                    .ok_or(RegistrationError::InvalidToken)?;
                // Checked after the metadata would be: a bad request does not burn the token.
                new_client(metadata.clone())?;
                if !self.store.use_registration_token(&TokenHash::of(token), self.clock.now()).await? {
                    return Err(RegistrationError::InvalidToken);
                }
            }
        }
        let post = metadata.token_endpoint_auth_method.as_deref() == Some("client_secret_post");
        let (mut record, secret) = self.build_client(new_client(metadata)?)?;
        let access = format!("{ACCESS_TOKEN_PREFIX}{}", b64(&random_bytes::<32>()));
        record.registration_token_hash = Some(TokenHash::of(&access));
        self.store.insert_client(&record).await?;
        tracing::info!(client_id = %record.client_id, "client registered itself");
        let mut answer = self.registration_answer(&record, post);
        if let Some(obj) = answer.as_object_mut() {
            obj.insert("registration_access_token".into(), json!(access));
            if let Some(secret) = secret {
                obj.insert("client_secret".into(), json!(secret.expose_secret()));
            }
        }
        Ok(answer)
    }

    /// The client a registration access token manages.
    async fn registered(
        &self,
        client_id: &ClientId,
        token: Option<&str>,
    ) -> Result<ClientRecord, RegistrationError> {
        let token =
            token.filter(|t| t.starts_with(ACCESS_TOKEN_PREFIX)).ok_or(RegistrationError::InvalidToken)?;
        let client = self.store.find_client(client_id).await?.ok_or(RegistrationError::InvalidToken)?;
        let presented = TokenHash::of(token);
        match &client.registration_token_hash {
            Some(h) if h.ct_eq(&presented) => Ok(client),
            _ => Err(RegistrationError::InvalidToken),
        }
    }

    /// `GET /oauth/register/{client_id}` (RFC 7592 §2.1).
    ///
    /// # Errors
    /// [`RegistrationError::InvalidToken`] for an unknown client or a wrong token alike.
    pub async fn read_registration(
        &self,
        client_id: &ClientId,
        token: Option<&str>,
    ) -> Result<Value, RegistrationError> {
        let client = self.registered(client_id, token).await?;
        Ok(self.registration_answer(&client, false))
    }

    /// `PUT /oauth/register/{client_id}` (RFC 7592 §2.2): replaces the metadata; the id,
    /// secret and way of authenticating stay.
    ///
    /// # Errors
    /// [`RegistrationError`].
    pub async fn update_registration(
        &self,
        client_id: &ClientId,
        token: Option<&str>,
        metadata: ClientMetadata,
    ) -> Result<Value, RegistrationError> {
        let current = self.registered(client_id, token).await?;
        if metadata.client_id.as_deref() != Some(client_id.as_str()) {
            return Err(RegistrationError::InvalidMetadata("client_id must be the client's own".into()));
        }
        let post = metadata.token_endpoint_auth_method.as_deref() == Some("client_secret_post");
        let (built, _) = self.build_client(new_client(metadata)?)?;
        if auth_method(&built, post) != auth_method(&current, post) {
            return Err(RegistrationError::InvalidMetadata(
                "token_endpoint_auth_method cannot change".into(),
            ));
        }
        let record = ClientRecord {
            client_id: current.client_id.clone(),
            secret_hash: current.secret_hash,
            created_at: current.created_at,
            registration_token_hash: current.registration_token_hash,
            ..built
        };
        if !self.store.update_client(&record).await? {
            return Err(RegistrationError::InvalidToken);
        }
        Ok(self.registration_answer(&record, post))
    }

    /// `DELETE /oauth/register/{client_id}` (RFC 7592 §2.3): the client and what it held
    /// (its sessions revoked, with logout tokens and feed events), as `client remove`.
    ///
    /// # Errors
    /// [`RegistrationError`].
    pub async fn delete_registration(
        &self,
        client_id: &ClientId,
        token: Option<&str>,
    ) -> Result<(), RegistrationError> {
        let client = self.registered(client_id, token).await?;
        self.admin_remove_client(&client.client_id).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_redirects_are_https_or_loopback() {
        for ok in
            ["https://app.example/cb", "http://127.0.0.1:8123/cb", "http://[::1]/cb", "http://localhost/cb"]
        {
            assert!(is_https_or_loopback_http(ok), "{ok}");
        }
        for bad in [
            "http://app.example/cb",
            "https://app.example/cb#x",
            "com.example.app:/cb",
            "javascript:alert(1)",
            "",
        ] {
            assert!(!is_https_or_loopback_http(bad), "{bad}");
        }
    }
}
