//! What the OAuth provider keeps ([`OAuthStore`]), for both backends: registered clients,
//! authorization codes (redemption is one transaction that locks the code row, so two
//! redemptions of one code are serialised and the second takes the reuse path) and consent.

use async_trait::async_trait;
use latchkey_core::StoreError;
use latchkey_core::clock::Timestamp;
use latchkey_core::crypto::TokenHash;
use latchkey_core::ids::{ClientId, Scope, UserId};
use latchkey_core::store::{
    AuthCodeRecord, ClientKeys, ClientRecord, CodeDecide, CodeDecision, CodeIssuer, CodeRedemption,
    OAuthStore, SessionRevocation,
};

use crate::db::{Access, Backend, Conn, Db, DbError, OpFuture, Sql, op, params, query_all, query_opt};
use crate::revocation::revoke_in_tx;
use crate::rows::{self, client_columns, code_columns};
use crate::sessions::insert_session_in_tx;

static INSERT_CLIENT: Sql = Sql::new(concat!(
    "INSERT INTO clients (",
    client_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
));
/// The metadata a client may change (RFC 7592 §2.2): `$1` is the id.
static UPDATE_CLIENT: Sql = Sql::new(
    "UPDATE clients SET name = $2, redirect_uris = $3, grant_types = $4, scopes = $5, \
     post_logout_redirect_uris = $6, backchannel_logout_uri = $7, backchannel_logout_session_required = $8, \
     require_par = $9, resources = $10, jwks = $11, jwks_uri = $12 WHERE client_id = $1",
);
static INSERT_REGISTRATION_TOKEN: Sql =
    Sql::new("INSERT INTO registration_tokens (hash, created_at, expires_at) VALUES ($1, $2, $3)");
static USE_REGISTRATION_TOKEN: Sql = Sql::new(
    "UPDATE registration_tokens SET used_at = $2 WHERE hash = $1 AND used_at IS NULL AND expires_at > $2",
);
static CLIENT: Sql = Sql::new(concat!("SELECT ", client_columns!(), " FROM clients WHERE client_id = $1"));
static CLIENTS: Sql =
    Sql::new(concat!("SELECT ", client_columns!(), " FROM clients ORDER BY created_at, client_id"));
static DELETE_CLIENT: Sql = Sql::new("DELETE FROM clients WHERE client_id = $1");
static INSERT_CODE: Sql = Sql::new(concat!(
    "INSERT INTO auth_codes (",
    code_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
));
static LOCK_CODE: Sql =
    Sql::new(concat!("SELECT ", code_columns!(), " FROM auth_codes WHERE hash = $1 FOR UPDATE"));
static SPEND_CODE: Sql = Sql::new("UPDATE auth_codes SET used_at = $1, session_id = $2 WHERE hash = $3");
static CONSENT: Sql = Sql::new("SELECT scopes FROM consents WHERE user_id = $1 AND client_id = $2");
static LOCK_CONSENT: Sql =
    Sql::new("SELECT scopes FROM consents WHERE user_id = $1 AND client_id = $2 FOR UPDATE");
static SAVE_CONSENT: Sql = Sql::new(
    "INSERT INTO consents (user_id, client_id, scopes, updated_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (user_id, client_id) DO UPDATE SET scopes = EXCLUDED.scopes, updated_at = EXCLUDED.updated_at",
);

fn consent_scopes(row: &dyn crate::db::Row) -> Result<Scope, DbError> {
    rows::scope_list(row, 0, "consents.scopes")
}

/// A client's stored metadata, as the insert and the update write it.
struct ClientColumns {
    uris: String,
    grants: String,
    scopes: String,
    logout_uris: String,
    backchannel_uri: Option<String>,
    session_required: i64,
    require_par: i64,
    resources: String,
    jwks: Option<String>,
    jwks_uri: Option<String>,
}

fn client_columns_of(client: &ClientRecord) -> Result<ClientColumns, DbError> {
    let backchannel = client.backchannel_logout.as_ref();
    let (jwks, jwks_uri) = match &client.keys {
        Some(ClientKeys::Inline(j)) => (Some(j.clone()), None),
        Some(ClientKeys::Uri(u)) => (None, Some(u.clone())),
        None => (None, None),
    };
    Ok(ClientColumns {
        uris: rows::to_json(&client.redirect_uris)?,
        grants: rows::to_json(&client.grant_types)?,
        scopes: rows::scope_json(&client.scopes)?,
        logout_uris: rows::to_json(&client.post_logout_redirect_uris)?,
        backchannel_uri: backchannel.map(|b| b.uri.clone()),
        session_required: i64::from(backchannel.is_some_and(|b| b.session_required)),
        require_par: i64::from(client.require_par),
        resources: rows::to_json(&client.resources)?,
        jwks,
        jwks_uri,
    })
}

fn insert_client(c: &mut dyn Conn, client: ClientRecord) -> OpFuture<'_, ()> {
    Box::pin(async move {
        let m = client_columns_of(&client)?;
        let secret = client.secret_hash.as_ref().map(|h| &h.0[..]);
        let registration = client.registration_token_hash.as_ref().map(|h| &h.0[..]);
        let p = params![
            &client.client_id,
            &client.name,
            secret,
            &m.uris,
            &m.grants,
            &m.scopes,
            client.created_at.0,
            &m.logout_uris,
            &m.backchannel_uri,
            m.session_required,
            m.require_par,
            &m.resources,
            &m.jwks,
            &m.jwks_uri,
            registration
        ];
        c.execute(&INSERT_CLIENT, p).await.map(|_| ())
    })
}

fn update_client(c: &mut dyn Conn, client: ClientRecord) -> OpFuture<'_, bool> {
    Box::pin(async move {
        let m = client_columns_of(&client)?;
        let p = params![
            &client.client_id,
            &client.name,
            &m.uris,
            &m.grants,
            &m.scopes,
            &m.logout_uris,
            &m.backchannel_uri,
            m.session_required,
            m.require_par,
            &m.resources,
            &m.jwks,
            &m.jwks_uri
        ];
        Ok(c.execute(&UPDATE_CLIENT, p).await? == 1)
    })
}

fn insert_registration_token(c: &mut dyn Conn, (hash, now, until): ([u8; 32], i64, i64)) -> OpFuture<'_, ()> {
    Box::pin(
        async move { c.execute(&INSERT_REGISTRATION_TOKEN, params![&hash, now, until]).await.map(|_| ()) },
    )
}

fn use_registration_token(c: &mut dyn Conn, (hash, now): ([u8; 32], i64)) -> OpFuture<'_, bool> {
    Box::pin(async move { Ok(c.execute(&USE_REGISTRATION_TOKEN, params![&hash, now]).await? == 1) })
}

fn find_client(c: &mut dyn Conn, id: ClientId) -> OpFuture<'_, Option<ClientRecord>> {
    Box::pin(async move { query_opt(c, &CLIENT, params![&id], rows::client).await })
}

fn clients(c: &mut dyn Conn, (): ()) -> OpFuture<'_, Vec<ClientRecord>> {
    Box::pin(async move { query_all(c, &CLIENTS, params![], rows::client).await })
}

fn delete_client(c: &mut dyn Conn, id: ClientId) -> OpFuture<'_, bool> {
    Box::pin(async move { Ok(c.execute(&DELETE_CLIENT, params![&id]).await? == 1) })
}

fn insert_code(c: &mut dyn Conn, code: AuthCodeRecord) -> OpFuture<'_, ()> {
    Box::pin(async move {
        let resources = rows::to_json(&code.resources)?;
        let p = params![
            &code.hash.0,
            &code.client_id,
            &code.user_id,
            &code.redirect_uri,
            &code.scope,
            &code.nonce,
            &code.code_challenge,
            code.auth_time.0,
            code.created_at.0,
            code.expires_at.0,
            code.used_at.map(|t| t.0),
            &code.session_id,
            &code.browser_session_id,
            &code.dpop_jkt,
            &resources
        ];
        c.execute(&INSERT_CODE, p).await.map(|_| ())
    })
}

/// The decision of one redemption, taken at most once (see [`DbError::DecidedTwice`]).
type DecideOnce = std::sync::Arc<std::sync::Mutex<Option<CodeDecide>>>;

/// The arguments of a redemption.
type Redemption = ([u8; 32], ClientId, i64, SessionRevocation, DecideOnce);

fn redeem(
    c: &mut dyn Conn,
    (hash, client_id, now, reuse, decide): Redemption,
) -> OpFuture<'_, CodeRedemption> {
    Box::pin(async move {
        let Some(code) = query_opt(c, &LOCK_CODE, params![&hash], rows::auth_code).await? else {
            return Ok(CodeRedemption::Unknown);
        };
        if code.client_id != client_id {
            return Ok(CodeRedemption::OtherClient { code: Box::new(code) });
        }
        if code.used_at.is_some() {
            let revoked = match &code.session_id {
                Some(sid) => revoke_in_tx(c, vec![sid.clone()], &reuse).await?,
                None => Vec::new(),
            };
            return Ok(CodeRedemption::Reused { code: Box::new(code), revoked });
        }
        // What stands behind the code, locked: a logout or disconnect that commits first is
        // seen; one that comes later finds the session this redemption opens.
        let browser_session = match &code.browser_session_id {
            Some(id) => query_opt(c, &crate::sessions::LOCK, params![id], rows::session).await?,
            None => None,
        };
        let consented_scopes =
            query_opt(c, &LOCK_CONSENT, params![&code.user_id, &code.client_id], consent_scopes).await?;
        let issuer = CodeIssuer { browser_session, consented_scopes };
        let decide = decide.lock().ok().and_then(|mut slot| slot.take()).ok_or(DbError::DecidedTwice)?;
        let decision = decide(&code, &issuer);
        let session_id = match &decision {
            CodeDecision::Issue { session, refresh_token } => {
                insert_session_in_tx(c, session, refresh_token.as_ref()).await?;
                Some(&session.id)
            }
            CodeDecision::Refuse { .. } => None,
        };
        c.execute(&SPEND_CODE, params![now, session_id, &hash]).await?;
        Ok(CodeRedemption::Redeemed { code: Box::new(code), decision })
    })
}

fn find_consent(c: &mut dyn Conn, (user_id, client_id): (UserId, ClientId)) -> OpFuture<'_, Option<Scope>> {
    Box::pin(async move { query_opt(c, &CONSENT, params![&user_id, &client_id], consent_scopes).await })
}

fn save_consent(
    c: &mut dyn Conn,
    (user_id, client_id, scopes, now): (UserId, ClientId, Scope, i64),
) -> OpFuture<'_, ()> {
    Box::pin(async move {
        let json = rows::scope_json(&scopes)?;
        c.execute(&SAVE_CONSENT, params![&user_id, &client_id, &json, now]).await.map(|_| ())
    })
}

#[async_trait]
impl<B: Backend> OAuthStore for Db<B> {
    async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
        self.0.run(Access::Statement, op(client.clone(), insert_client)).await
    }

    async fn find_client(&self, client_id: &ClientId) -> Result<Option<ClientRecord>, StoreError> {
        self.0.run(Access::Point, op(client_id.clone(), find_client)).await
    }

    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        self.0.run(Access::Scan, op((), clients)).await
    }

    async fn delete_client(&self, client_id: &ClientId) -> Result<bool, StoreError> {
        self.0.run(Access::Statement, op(client_id.clone(), delete_client)).await
    }

    async fn update_client(&self, client: &ClientRecord) -> Result<bool, StoreError> {
        self.0.run(Access::Statement, op(client.clone(), update_client)).await
    }

    async fn insert_registration_token(
        &self,
        hash: &TokenHash,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.0.run(Access::Statement, op((hash.0, now.0, expires_at.0), insert_registration_token)).await
    }

    async fn use_registration_token(&self, hash: &TokenHash, now: Timestamp) -> Result<bool, StoreError> {
        self.0.run(Access::Statement, op((hash.0, now.0), use_registration_token)).await
    }

    async fn insert_auth_code(&self, code: &AuthCodeRecord) -> Result<(), StoreError> {
        self.0.run(Access::Statement, op(code.clone(), insert_code)).await
    }

    async fn redeem_auth_code(
        &self,
        hash: &TokenHash,
        client_id: &ClientId,
        now: Timestamp,
        reuse: &SessionRevocation,
        decide: CodeDecide,
    ) -> Result<CodeRedemption, StoreError> {
        let decide: DecideOnce = std::sync::Arc::new(std::sync::Mutex::new(Some(decide)));
        let args = (hash.0, client_id.clone(), now.0, reuse.clone(), decide);
        self.0.run(Access::Transaction, op(args, redeem)).await
    }

    async fn find_consent(
        &self,
        user_id: &UserId,
        client_id: &ClientId,
    ) -> Result<Option<Scope>, StoreError> {
        self.0.run(Access::Point, op((user_id.clone(), client_id.clone()), find_consent)).await
    }

    async fn save_consent(
        &self,
        user_id: &UserId,
        client_id: &ClientId,
        scopes: &Scope,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.0
            .run(
                Access::Statement,
                op((user_id.clone(), client_id.clone(), scopes.clone(), now.0), save_consent),
            )
            .await
    }
}
