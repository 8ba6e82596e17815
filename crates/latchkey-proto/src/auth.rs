//! Request and response bodies of the first-party session API (SPEC 5.1).
//! Unknown extra fields are ignored, as the spec requires.

use serde::{Deserialize, Serialize};

use crate::email::EmailAddress;
use crate::secret::{LinkToken, MfaToken, OneTimeCode, Password, RefreshToken, serialize_refresh_token};
use crate::username::Username;

/// `POST /auth/register` and `POST /auth/login` body.
#[derive(Debug, Deserialize)]
pub struct Credentials {
    /// The username.
    pub username: Username,
    /// The password.
    pub password: Password,
}

/// `POST /auth/register` body: credentials and, optionally, an email address (SPEC 10;
/// required when the server sets `registration_email = "required"`).
#[derive(Debug, Deserialize)]
pub struct RegisterRequest {
    /// The username.
    pub username: Username,
    /// The password.
    pub password: Password,
    /// The address, unverified until its link is followed.
    #[serde(default)]
    pub email: Option<EmailAddress>,
}

/// `POST /auth/email/verify` body: the token from the link.
#[derive(Debug, Deserialize)]
pub struct VerifyEmailRequest {
    /// An `lkv_` token.
    pub token: LinkToken,
}

/// `POST /auth/email` body: a new address, confirmed from that address before it counts.
#[derive(Debug, Deserialize)]
pub struct EmailChangeRequest {
    /// The new address.
    pub email: EmailAddress,
    /// The password in use now.
    pub current_password: Password,
}

/// `POST /auth/password/forgot` body.
#[derive(Debug, Deserialize)]
pub struct ForgotPasswordRequest {
    /// A username or an email address; any string of a valid username's shape.
    #[serde(deserialize_with = "login")]
    pub login: Username,
}

/// A `login` field: a username's rules, with errors that name the field.
fn login<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Username, D::Error> {
    let text = String::deserialize(d)?;
    Username::parse(&text)
        .map_err(|e| serde::de::Error::custom(e.to_string().replacen("username", "login", 1)))
}

/// `POST /auth/password/reset` body.
#[derive(Debug, Deserialize)]
pub struct PasswordResetRequest {
    /// An `lkp_` token.
    pub token: LinkToken,
    /// The new password.
    pub new_password: Password,
}

/// `POST /auth/register` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The new user's id.
    pub sub: String,
    /// The username as stored.
    pub username: String,
}

/// `POST /auth/refresh` body.
#[derive(Debug, Deserialize)]
pub struct RefreshRequest {
    /// The refresh token to rotate.
    pub refresh_token: RefreshToken,
}

/// `POST /auth/step-up` body (SPEC 12): the session's refresh token and a fresh proof of the
/// user: the password, or a second factor's code.
#[derive(Debug, Deserialize)]
pub struct StepUpRequest {
    /// The session's live refresh token; it rotates when the step-up passes.
    pub refresh_token: RefreshToken,
    /// The user's password.
    #[serde(default)]
    pub password: Option<Password>,
    /// Or a second factor (`totp`, `recovery_code`)…
    #[serde(default)]
    pub method: Option<MfaMethod>,
    /// …and its code.
    #[serde(default)]
    pub code: Option<OneTimeCode>,
}

/// `POST /auth/logout` body, when the client has no access token at hand.
#[derive(Debug, Default, Deserialize)]
pub struct LogoutRequest {
    /// A refresh token of the session to end.
    #[serde(default)]
    pub refresh_token: Option<RefreshToken>,
}

/// `POST /auth/logout-all` body.
#[derive(Debug, Default, Deserialize)]
pub struct LogoutAllRequest {
    /// Keep the session the Bearer token belongs to.
    #[serde(default)]
    pub keep_current: bool,
}

/// `POST /auth/password` body.
#[derive(Debug, Deserialize)]
pub struct PasswordChangeRequest {
    /// The password in use now.
    pub current_password: Password,
    /// The new password.
    pub new_password: Password,
}

/// The token response of login and refresh (SPEC 5.1).
#[derive(Serialize)]
pub struct TokenResponse {
    /// The signed JWT access token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The session's one live refresh token.
    #[serde(serialize_with = "serialize_refresh_token")]
    pub refresh_token: RefreshToken,
    /// The session id (the `sid` claim).
    pub session_id: String,
    /// The granted scope, space-separated.
    pub scope: String,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("session_id", &self.session_id)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// One entry of `GET /auth/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Session id.
    pub id: String,
    /// The client the session belongs to.
    pub client_id: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC.
    pub last_used_at: String,
    /// RFC 3339 UTC.
    pub idle_expires_at: String,
    /// RFC 3339 UTC.
    pub expires_at: String,
    /// The client address at the last login or refresh.
    pub ip: Option<String>,
    /// The user agent at login.
    pub user_agent: Option<String>,
    /// Whether this is the session of the token that asked.
    pub current: bool,
}

/// `GET /auth/sessions` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsResponse {
    /// The user's live sessions, newest first.
    pub sessions: Vec<SessionInfo>,
}

/// `GET /auth/me` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeResponse {
    /// User id.
    pub sub: String,
    /// Username.
    pub username: String,
    /// Current roles.
    pub roles: Vec<String>,
    /// The account's email address, `null` when it has none (SPEC 10).
    #[serde(default)]
    pub email: Option<String>,
    /// Whether that address was proven.
    #[serde(default)]
    pub email_verified: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_response_shape_is_pinned() {
        let r = TokenResponse {
            access_token: "a.b.c".into(),
            token_type: "Bearer",
            expires_in: 300,
            refresh_token: RefreshToken::new("lkr_x".into()),
            session_id: "s1".into(),
            scope: "profile".into(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"access_token":"a.b.c","token_type":"Bearer","expires_in":300,"refresh_token":"lkr_x","session_id":"s1","scope":"profile"}"#
        );
        assert!(!format!("{r:?}").contains("lkr_x"));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let c: Credentials = serde_json::from_str(r#"{"username":"a","password":"p","extra":1}"#).unwrap();
        assert_eq!(c.username.as_str(), "a");
    }
}

/// A token answer as a client reads it: the first-party one (SPEC 5.1, with `session_id`)
/// or the OAuth token endpoint's (SPEC 5.2, `refresh_token` only for clients that may
/// refresh). Unknown fields are ignored.
#[derive(Debug, Deserialize)]
pub struct ReceivedTokens {
    /// The access token.
    pub access_token: String,
    /// `Bearer`, or `DPoP` for an access token bound to the client's key (SPEC 12).
    #[serde(default)]
    pub token_type: Option<String>,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// The refresh token, when one was issued.
    #[serde(default)]
    pub refresh_token: Option<RefreshToken>,
    /// The session id (first-party answers).
    #[serde(default)]
    pub session_id: Option<String>,
    /// The granted scope.
    #[serde(default)]
    pub scope: String,
    /// The ID token (OpenID Connect).
    #[serde(default)]
    pub id_token: Option<String>,
}

/// A second-factor method (SPEC 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MfaMethod {
    /// A code from an authenticator app (RFC 6238).
    Totp,
    /// One of the user's single-use recovery codes.
    RecoveryCode,
    /// A passkey (WebAuthn): the assertion in `challenge_id` and `credential`.
    Passkey,
}

/// The body of `401 mfa_required` (SPEC 11).
#[derive(Debug, Serialize)]
pub struct MfaRequired {
    /// Always `mfa_required`.
    pub error: crate::ErrorCode,
    /// For people.
    pub error_description: &'static str,
    /// The token to complete the sign-in with at `POST /auth/login/mfa`.
    pub mfa_token: MfaTokenOut,
    /// The methods the user has.
    pub methods: Vec<MfaMethod>,
}

/// The body of `403 mfa_enrolment_required` (SPEC 11).
#[derive(Debug, Serialize)]
pub struct MfaEnrolmentRequired {
    /// Always `mfa_enrolment_required`.
    pub error: crate::ErrorCode,
    /// For people.
    pub error_description: &'static str,
    /// The token to set up an authenticator app with, in place of a Bearer token.
    pub mfa_token: MfaTokenOut,
}

/// An `mfa_token` on its way out (serialised as its text).
pub struct MfaTokenOut(pub MfaToken);

impl std::fmt::Debug for MfaTokenOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MfaTokenOut([redacted])")
    }
}

impl Serialize for MfaTokenOut {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose_secret())
    }
}

/// `POST /auth/login/mfa` body.
#[derive(Debug, Deserialize)]
pub struct MfaLoginRequest {
    /// From the `mfa_required` answer.
    pub mfa_token: MfaToken,
    /// How the user proves the second factor.
    pub method: MfaMethod,
    /// The code (`totp`, `recovery_code`).
    #[serde(default)]
    pub code: Option<OneTimeCode>,
    /// The passkey assertion (`passkey`): from `POST /auth/passkeys/login/start`.
    #[serde(default)]
    pub challenge_id: Option<String>,
    /// The passkey assertion (`passkey`): the `PublicKeyCredential` in its JSON form.
    #[serde(default)]
    pub credential: Option<serde_json::Value>,
}

/// The answer of `POST /auth/passkeys/register/start` and `/login/start` (SPEC 11).
#[derive(Debug, Serialize)]
pub struct PasskeyOptions {
    /// To send back with the finish.
    pub challenge_id: String,
    /// WebAuthn's options in their JSON form (binary values base64url), for
    /// `PublicKeyCredential.parseCreationOptionsFromJSON` / `parseRequestOptionsFromJSON`.
    #[serde(rename = "publicKey")]
    pub public_key: serde_json::Value,
}

/// The body of `POST /auth/passkeys/register/finish` and `/login/finish` (SPEC 11).
#[derive(Debug, Deserialize)]
pub struct PasskeyFinish {
    /// From the start.
    pub challenge_id: String,
    /// The `PublicKeyCredential` in its JSON form (`toJSON()`).
    pub credential: serde_json::Value,
    /// Registration: a name for the passkey, for the user's list (at most 100 characters).
    #[serde(default)]
    pub name: Option<String>,
}

/// The answer of `POST /auth/passkeys/register/finish`.
#[derive(Debug, Serialize)]
pub struct PasskeyRegistered {
    /// The new factor's id (for `DELETE /auth/mfa/{id}`).
    pub id: String,
    /// Its name.
    pub name: String,
}

/// `POST /auth/mfa/totp` body: empty with a Bearer token; a user who must set up a factor
/// before signing in sends the `mfa_token` of `mfa_enrolment_required` instead.
#[derive(Debug, Default, Deserialize)]
pub struct TotpStartRequest {
    /// From `mfa_enrolment_required`.
    #[serde(default)]
    pub mfa_token: Option<MfaToken>,
}

/// `POST /auth/mfa/totp/confirm` body.
#[derive(Debug, Deserialize)]
pub struct TotpConfirmRequest {
    /// A code from the app, proving it holds the secret.
    pub code: OneTimeCode,
    /// From `mfa_enrolment_required`, in place of a Bearer token.
    #[serde(default)]
    pub mfa_token: Option<MfaToken>,
}

/// The answer to a confirmation with an `mfa_token`: the sign-in it completes, and the new
/// recovery codes.
#[derive(Debug, Serialize)]
pub struct EnrolledSignIn {
    /// The new session's tokens.
    #[serde(flatten)]
    pub tokens: TokenResponse,
    /// Ten single-use codes, shown once.
    #[serde(flatten)]
    pub recovery_codes: RecoveryCodes,
}

/// `POST /auth/mfa/totp` answer: what the authenticator app needs.
#[derive(Serialize)]
pub struct TotpEnrolment {
    /// The secret in base32, to type in.
    pub secret: String,
    /// The `otpauth://` URI, to scan.
    pub otpauth_uri: String,
}

impl std::fmt::Debug for TotpEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpEnrolment([redacted])")
    }
}

/// New recovery codes, shown once (`POST /auth/mfa/totp/confirm`).
#[derive(Serialize)]
pub struct RecoveryCodes {
    /// Ten single-use codes.
    pub recovery_codes: Vec<String>,
}

impl std::fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryCodes([redacted])")
    }
}

/// One entry of `GET /auth/mfa`.
#[derive(Debug, Serialize)]
pub struct MfaFactorView {
    /// Its id (for `DELETE /auth/mfa/{id}`).
    pub id: String,
    /// `totp` or `passkey`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// When it was set up (RFC 3339).
    pub created_at: String,
}

/// `GET /auth/mfa` answer.
#[derive(Debug, Serialize)]
pub struct MfaFactors {
    /// The confirmed factors.
    pub factors: Vec<MfaFactorView>,
    /// How many unused recovery codes are left.
    pub recovery_codes_left: usize,
}
