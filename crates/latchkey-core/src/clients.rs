//! Registered clients (SPEC 5.2, 6): registration by the CLI with the secret shown once and
//! stored as a SHA-256 hash, and client authentication, whose success is the proof type
//! [`AuthenticatedClient`] that client-only operations (the revocation feed) require.

use latchkey_proto::secret::ClientSecret;

use crate::crypto::{TokenHash, b64, new_id, random_bytes};
use crate::ids::{ClientId, RedirectUri, Scope};
use crate::service::Latchkey;
use crate::store::{ClientRecord, StoreError};

/// The grant types a client may be registered for.
pub const GRANT_TYPES: [&str; 4] =
    ["authorization_code", "refresh_token", "client_credentials", crate::oauth::DEVICE_CODE_GRANT];
/// The prefix of generated client secrets (so secret scanners can spot leaks).
pub const SECRET_PREFIX: &str = "lks_";

/// What `latchkey client add` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewClient {
    /// A name for people.
    pub name: String,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Grant types; empty means `authorization_code` and `refresh_token`.
    pub grant_types: Vec<String>,
    /// Scopes; empty means `openid profile`.
    pub scopes: Vec<String>,
    /// A public client (no secret; PKCE only).
    pub is_public: bool,
    /// Exact URIs the app may send the browser to after RP-initiated logout.
    pub post_logout_redirect_uris: Vec<String>,
    /// Where the app receives back-channel logout tokens.
    pub backchannel_logout_uri: Option<String>,
    /// The app needs `sid` in logout tokens (always sent; recorded for its metadata).
    pub backchannel_logout_session_required: bool,
    /// Its authorization requests must be pushed first (RFC 9126).
    pub require_par: bool,
    /// Resources (RFC 8707) it may ask tokens for: absolute URIs without a fragment.
    pub resources: Vec<String>,
    /// A JWK set (JSON) for `private_key_jwt`: the client gets no secret.
    pub jwks: Option<String>,
    /// A URL of its JWK set for `private_key_jwt` (https, or http on loopback).
    pub jwks_uri: Option<String>,
}

/// Registration and authentication failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A field is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// No such client.
    #[error("no client with id {:?}", .0.as_str())]
    UnknownClient(ClientId),
    /// Authentication failed (unknown id, wrong secret, public client).
    #[error("client authentication failed")]
    AuthenticationFailed,
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A client whose credentials were checked: the only way to reach client-only operations.
#[derive(Debug, Clone)]
pub struct AuthenticatedClient(ClientRecord);

impl AuthenticatedClient {
    /// The client.
    pub fn record(&self) -> &ClientRecord {
        &self.0
    }

    /// Whether the client was registered with `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.0.scopes.contains(scope)
    }
}

/// A new client id: 128 random bits, base64url, never starting with `-` (it is typed on
/// command lines, where a leading dash reads as an option).
fn new_client_id() -> ClientId {
    loop {
        let id = new_id();
        if !id.starts_with('-') {
            return ClientId::new(id);
        }
    }
}

fn is_acceptable_redirect_uri(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return false;
    };
    let is_scheme = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    // RFC 6749 §3.1.2: absolute, no fragment.
    is_scheme && !rest.is_empty() && !uri.contains('#') && !uri.chars().any(char::is_whitespace)
}

/// An absolute `https` URI, or `http` on a loopback address (development, and native apps'
/// redirects, RFC 8252 §7.3), with a host and without a fragment or credentials.
pub fn is_https_or_loopback_http(uri: &str) -> bool {
    let Ok(url) = url::Url::parse(uri) else {
        return false;
    };
    let is_loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && is_loopback);
    scheme_ok
        && url.host().is_some()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none()
}

/// A URI an operator registers for the server to call (`backchannel_logout_uri`,
/// `jwks_uri`): `https`, or `http` on a loopback address (development and tests; SPEC 13).
pub fn is_acceptable_server_called_uri(uri: &str) -> bool {
    is_https_or_loopback_http(uri)
}

/// Whether `value` can be a resource indicator (RFC 8707 §2): an absolute URI without a
/// fragment.
pub fn is_resource_indicator(value: &str) -> bool {
    value.len() <= 2048
        && url::Url::parse(value).is_ok_and(|u| u.fragment().is_none() && !u.cannot_be_a_base())
}

impl Latchkey {
    /// `latchkey client add`: registers a client; returns it and, for a confidential
    /// client, its secret (shown once, stored only as a hash).
    ///
    /// # Errors
    /// An unacceptable field, storage.
    pub async fn admin_add_client(
        &self,
        new: NewClient,
    ) -> Result<(ClientRecord, Option<ClientSecret>), ClientError> {
        let (record, secret) = self.build_client(new)?;
        self.store.insert_client(&record).await?;
        Ok((record, secret))
    }

    /// A new client's record (with a fresh id, and a secret unless it is public or holds
    /// keys) after the checks every registration makes; not stored yet.
    ///
    /// # Errors
    /// An unacceptable field.
    pub(crate) fn build_client(
        &self,
        new: NewClient,
    ) -> Result<(ClientRecord, Option<ClientSecret>), ClientError> {
        let name = new.name.trim().to_owned();
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(ClientError::Invalid("the name must be printable and not blank".into()));
        }
        if let Some(bad) = new.redirect_uris.iter().find(|u| !is_acceptable_redirect_uri(u)) {
            return Err(ClientError::Invalid(format!(
                "redirect URI {bad:?} must be absolute, without a fragment"
            )));
        }
        if let Some(bad) = new.post_logout_redirect_uris.iter().find(|u| !is_acceptable_redirect_uri(u)) {
            return Err(ClientError::Invalid(format!(
                "post-logout redirect URI {bad:?} must be absolute, without a fragment"
            )));
        }
        if let Some(bad) = new.backchannel_logout_uri.as_ref().filter(|u| !is_acceptable_server_called_uri(u))
        {
            return Err(ClientError::Invalid(format!(
                "back-channel logout URI {bad:?} must be https (or http on a loopback address), \
                 without a fragment"
            )));
        }
        if let Some(bad) = new.resources.iter().find(|r| !is_resource_indicator(r)) {
            return Err(ClientError::Invalid(format!(
                "resource {bad:?} must be an absolute URI without a fragment"
            )));
        }
        if new.backchannel_logout_session_required && new.backchannel_logout_uri.is_none() {
            return Err(ClientError::Invalid(
                "--backchannel-logout-session-required needs --backchannel-logout-uri".into(),
            ));
        }
        let mut grant_types = if new.grant_types.is_empty() {
            vec!["authorization_code".to_owned(), "refresh_token".to_owned()]
        } else {
            new.grant_types.iter().map(|g| g.trim().to_owned()).filter(|g| !g.is_empty()).collect()
        };
        grant_types.sort();
        grant_types.dedup();
        if let Some(bad) = grant_types.iter().find(|g| !GRANT_TYPES.contains(&g.as_str())) {
            return Err(ClientError::Invalid(format!(
                "unknown grant type {bad:?}; use {}",
                GRANT_TYPES.join(", ")
            )));
        }
        if new.is_public && grant_types.iter().any(|g| g == "client_credentials") {
            return Err(ClientError::Invalid("a public client cannot use client_credentials".into()));
        }
        if new.require_par && !grant_types.iter().any(|g| g == "authorization_code") {
            return Err(ClientError::Invalid("--require-par needs the authorization_code grant".into()));
        }
        if grant_types.iter().any(|g| g == "authorization_code") && new.redirect_uris.is_empty() {
            return Err(ClientError::Invalid("authorization_code needs at least one --redirect-uri".into()));
        }
        let mut scopes: Vec<&str> = if new.scopes.is_empty() {
            vec!["openid", "profile"]
        } else {
            new.scopes.iter().flat_map(|s| s.split_whitespace()).collect()
        };
        scopes.sort();
        scopes.dedup();
        let keys = match (new.jwks, new.jwks_uri) {
            (Some(_), Some(_)) => {
                return Err(ClientError::Invalid("give --jwks or --jwks-uri, not both".into()));
            }
            (Some(jwks), None) => {
                crate::client_assertion::parse_jwks(&jwks)
                    .map_err(|e| ClientError::Invalid(format!("--jwks: {e}")))?;
                Some(crate::store::ClientKeys::Inline(jwks))
            }
            (None, Some(uri)) if is_acceptable_server_called_uri(&uri) => {
                Some(crate::store::ClientKeys::Uri(uri))
            }
            (None, Some(uri)) => {
                return Err(ClientError::Invalid(format!(
                    "--jwks-uri {uri:?} must be https (or http on a loopback address), without a fragment"
                )));
            }
            (None, None) => None,
        };
        if new.is_public && keys.is_some() {
            return Err(ClientError::Invalid("a public client has no keys; drop --public".into()));
        }
        let secret = (!new.is_public && keys.is_none())
            .then(|| ClientSecret::new(format!("{SECRET_PREFIX}{}", b64(&random_bytes::<32>()))));
        let record = ClientRecord {
            client_id: new_client_id(),
            name,
            secret_hash: secret.as_ref().map(|s| TokenHash::of(s.expose_secret())),
            redirect_uris: new.redirect_uris.into_iter().map(RedirectUri::from).collect(),
            grant_types,
            scopes: Scope::from_names(scopes),
            created_at: self.clock.now(),
            post_logout_redirect_uris: new
                .post_logout_redirect_uris
                .into_iter()
                .map(RedirectUri::from)
                .collect(),
            backchannel_logout: new.backchannel_logout_uri.map(|uri| crate::store::BackchannelLogout {
                uri,
                session_required: new.backchannel_logout_session_required,
            }),
            require_par: new.require_par,
            resources: new.resources,
            keys,
            registration_token_hash: None,
        };
        Ok((record, secret))
    }

    /// `latchkey client list`.
    ///
    /// # Errors
    /// Storage.
    pub async fn admin_list_clients(&self) -> Result<Vec<ClientRecord>, ClientError> {
        Ok(self.store.list_clients().await?)
    }

    /// `latchkey client remove`: the client, its sessions (revoked as `revoked_by_admin`, with
    /// feed events) and its remembered consents.
    ///
    /// # Errors
    /// An unknown id, storage.
    pub async fn admin_remove_client(&self, client_id: &ClientId) -> Result<(), ClientError> {
        if !self.store.delete_client(client_id).await? {
            return Err(ClientError::UnknownClient(client_id.clone()));
        }
        // What the app held dies with it: its sessions (through the feed too) and consents.
        let target = crate::store::RevocationTarget::ClientSessions { client_id: client_id.clone() };
        let ctx = crate::caller::Caller { ip: None, user_agent: None, dpop: None };
        self.revoke(target, latchkey_proto::ErrorReason::RevokedByAdmin, None, None, &ctx).await?;
        Ok(())
    }

    /// Authenticates a confidential client by id and secret (compared as hashes, in
    /// constant time). Public clients cannot authenticate this way.
    ///
    /// # Errors
    /// [`ClientError::AuthenticationFailed`] for every kind of mismatch alike.
    pub async fn authenticate_client(
        &self,
        client_id: &ClientId,
        secret: &ClientSecret,
    ) -> Result<AuthenticatedClient, ClientError> {
        let presented = TokenHash::of(secret.expose_secret());
        let record = self.store.find_client(client_id).await?;
        match record {
            Some(r) if r.secret_hash.is_some_and(|h| h.ct_eq(&presented)) => Ok(AuthenticatedClient(r)),
            _ => Err(ClientError::AuthenticationFailed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_called_uris_are_https_or_loopback_http() {
        for ok in [
            "https://app.example.com/logout",
            "http://127.0.0.1:9000/bcl",
            "http://[::1]/bcl",
            "http://localhost:3000/x?y=1",
        ] {
            assert!(is_acceptable_server_called_uri(ok), "{ok}");
        }
        for bad in [
            "http://app.example.com/logout",
            "https://app.example.com/logout#frag",
            "https://user:pw@app.example.com/",
            "ftp://127.0.0.1/",
            "/relative",
            "http://10.0.0.1/bcl",
            "",
        ] {
            assert!(!is_acceptable_server_called_uri(bad), "{bad}");
        }
    }

    #[test]
    fn client_ids_never_look_like_options() {
        assert!(
            (0..2000)
                .map(|_| new_client_id())
                .all(|id| !id.as_str().starts_with('-') && id.as_str().len() == 22)
        );
    }

    #[test]
    fn redirect_uris() {
        assert!(is_acceptable_redirect_uri("https://app.example/cb"));
        assert!(is_acceptable_redirect_uri("http://127.0.0.1:8000/cb"));
        assert!(is_acceptable_redirect_uri("com.example.app://oauth"));
        assert!(!is_acceptable_redirect_uri("/relative"));
        assert!(!is_acceptable_redirect_uri("https://app.example/cb#frag"));
        assert!(!is_acceptable_redirect_uri("https://"));
        assert!(!is_acceptable_redirect_uri("https://a b"));
    }
}
