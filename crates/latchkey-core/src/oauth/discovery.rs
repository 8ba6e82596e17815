//! Discovery (OpenID Connect Discovery 1.0 §3, RFC 8414 §2): one document served at both
//! well-known paths.

use serde_json::{Value, json};

use crate::service::Latchkey;

impl Latchkey {
    /// The provider metadata.
    pub fn discovery(&self) -> Value {
        let s = &self.settings;
        let iss = s.issuer.as_str();
        let client_auth = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"];
        let signing = crate::client_assertion::ASSERTION_ALGORITHMS;
        let mut doc = json!({
            "issuer": iss,
            "authorization_endpoint": format!("{iss}/oauth/authorize"),
            "token_endpoint": format!("{iss}/oauth/token"),
            "userinfo_endpoint": format!("{iss}/oauth/userinfo"),
            "jwks_uri": format!("{iss}/jwks.json"),
            "revocation_endpoint": format!("{iss}/oauth/revoke"),
            "introspection_endpoint": format!("{iss}/oauth/introspect"),
            "end_session_endpoint": format!("{iss}/oauth/logout"),
            "device_authorization_endpoint": format!("{iss}/oauth/device_authorization"),
            "pushed_authorization_request_endpoint": format!("{iss}/oauth/par"),
            "require_pushed_authorization_requests": false,
            "backchannel_logout_supported": true,
            "backchannel_logout_session_supported": true,
            "scopes_supported": ["openid", "profile", "offline_access", "roles"],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": crate::clients::GRANT_TYPES,
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [s.id_token_alg.as_str()],
            "token_endpoint_auth_methods_supported": client_auth,
            "revocation_endpoint_auth_methods_supported": client_auth,
            "introspection_endpoint_auth_methods_supported":
                ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": signing,
            "revocation_endpoint_auth_signing_alg_values_supported": signing,
            "introspection_endpoint_auth_signing_alg_values_supported": signing,
            "code_challenge_methods_supported": ["S256"],
            "dpop_signing_alg_values_supported": crate::dpop::ALGORITHMS,
            "prompt_values_supported": ["none", "login", "consent"],
            "acr_values_supported": crate::mfa::AcrLevel::ALL.map(crate::mfa::AcrLevel::as_str),
            "claims_supported": [
                "iss", "sub", "aud", "azp", "exp", "iat", "auth_time", "nonce", "at_hash", "sid",
                "preferred_username", "acr", "amr"
            ],
            "authorization_response_iss_parameter_supported": true,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
            "claims_parameter_supported": false,
        });
        if self.settings.dynamic_registration != crate::settings::DynamicRegistration::Closed
            && let Some(obj) = doc.as_object_mut()
        {
            obj.insert("registration_endpoint".into(), Value::String(format!("{iss}/oauth/register")));
        }
        doc
    }
}
