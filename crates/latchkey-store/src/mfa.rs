//! Second factors ([`MfaStore`]), for both backends. Each single use (a TOTP step, a
//! recovery code, an `mfa_token`) is one conditional `UPDATE` whose row count says whether
//! this request won.

use async_trait::async_trait;
use latchkey_core::StoreError;
use latchkey_core::clock::Timestamp;
use latchkey_core::crypto::TokenHash;
use latchkey_core::ids::UserId;
use latchkey_core::store::{FactorRecord, MfaChallengeRecord, MfaStore, NewMail, PasskeyChallengeRecord};

use crate::db::{Access, Backend, Conn, Db, OpFuture, Sql, first_int, op, params, query_all, query_opt};
use crate::outbox::insert_mail_in_tx;
use crate::rows::{self, factor_columns, mfa_challenge_columns, passkey_challenge_columns};

static DROP_UNCONFIRMED: Sql =
    Sql::new("DELETE FROM mfa_factors WHERE user_id = $1 AND kind = $2 AND confirmed_at IS NULL");
static INSERT_FACTOR: Sql = Sql::new(concat!(
    "INSERT INTO mfa_factors (",
    factor_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL)"
));
static FACTORS_OF_USER: Sql = Sql::new(concat!(
    "SELECT ",
    factor_columns!(),
    " FROM mfa_factors WHERE user_id = $1 ORDER BY created_at, id"
));
static INSERT_CONFIRMED: Sql = Sql::new(concat!(
    "INSERT INTO mfa_factors (",
    factor_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $6, NULL) ON CONFLICT (id) DO NOTHING"
));
static FACTOR: Sql = Sql::new(concat!("SELECT ", factor_columns!(), " FROM mfa_factors WHERE id = $1"));
static SET_SECRET: Sql = Sql::new("UPDATE mfa_factors SET secret = $1 WHERE id = $2");
static INSERT_PASSKEY_CHALLENGE: Sql = Sql::new(concat!(
    "INSERT INTO passkey_challenges (",
    passkey_challenge_columns!(),
    ") VALUES ($1, $2, $3, $4, $5)"
));
static TAKE_REGISTRATION_CHALLENGE: Sql = Sql::new(concat!(
    "DELETE FROM passkey_challenges WHERE id = $1 AND expires_at > $2 AND user_id = $3 RETURNING ",
    passkey_challenge_columns!()
));
static TAKE_SIGN_IN_CHALLENGE: Sql = Sql::new(concat!(
    "DELETE FROM passkey_challenges WHERE id = $1 AND expires_at > $2 AND user_id IS NULL RETURNING ",
    passkey_challenge_columns!()
));
static CONFIRM: Sql = Sql::new(
    "UPDATE mfa_factors SET confirmed_at = $1, last_used_step = $2 WHERE id = $3 AND confirmed_at IS NULL \
     RETURNING user_id",
);
static USE_STEP: Sql = Sql::new(
    "UPDATE mfa_factors SET last_used_step = $1 WHERE id = $2 AND confirmed_at IS NOT NULL \
     AND (last_used_step IS NULL OR last_used_step < $1)",
);
static DELETE_FACTOR: Sql = Sql::new("DELETE FROM mfa_factors WHERE id = $1 AND user_id = $2");
static CONFIRMED_LEFT: Sql =
    Sql::new("SELECT COUNT(*) FROM mfa_factors WHERE user_id = $1 AND confirmed_at IS NOT NULL");
static DROP_CODES: Sql = Sql::new("DELETE FROM recovery_codes WHERE user_id = $1");
static INSERT_CODE: Sql =
    Sql::new("INSERT INTO recovery_codes (hash, user_id, created_at, used_at) VALUES ($1, $2, $3, NULL)");
static USE_CODE: Sql =
    Sql::new("UPDATE recovery_codes SET used_at = $1 WHERE hash = $2 AND user_id = $3 AND used_at IS NULL");
static CODES_LEFT: Sql =
    Sql::new("SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL");
static INSERT_CHALLENGE: Sql = Sql::new(concat!(
    "INSERT INTO mfa_challenges (",
    mfa_challenge_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, NULL)"
));
static CHALLENGE: Sql =
    Sql::new(concat!("SELECT ", mfa_challenge_columns!(), " FROM mfa_challenges WHERE hash = $1"));
static SPEND_CHALLENGE: Sql = Sql::new(
    "UPDATE mfa_challenges SET used_at = $1 WHERE hash = $2 AND used_at IS NULL AND expires_at > $1",
);

fn insert_factor(c: &mut dyn Conn, f: FactorRecord) -> OpFuture<'_, ()> {
    Box::pin(async move {
        c.execute(&DROP_UNCONFIRMED, params![&f.user_id, &f.kind]).await?;
        let p = params![&f.id, &f.user_id, &f.kind, &f.name, &f.secret, f.created_at.0];
        c.execute(&INSERT_FACTOR, p).await.map(|_| ())
    })
}

fn factors_of(c: &mut dyn Conn, user_id: UserId) -> OpFuture<'_, Vec<FactorRecord>> {
    Box::pin(async move { query_all(c, &FACTORS_OF_USER, params![&user_id], rows::factor).await })
}

async fn replace_codes(
    c: &mut dyn Conn,
    user_id: &UserId,
    codes: &[TokenHash],
    now: i64,
) -> Result<(), crate::db::DbError> {
    c.execute(&DROP_CODES, params![user_id]).await?;
    for code in codes {
        c.execute(&INSERT_CODE, params![&code.0, user_id, now]).await?;
    }
    Ok(())
}

fn confirm(
    c: &mut dyn Conn,
    (id, step, codes, mails, now): (String, i64, Vec<TokenHash>, Vec<NewMail>, i64),
) -> OpFuture<'_, bool> {
    Box::pin(async move {
        let Some(user_id) =
            query_opt(c, &CONFIRM, params![now, step, &id], crate::db::first_id::<UserId>).await?
        else {
            return Ok(false);
        };
        replace_codes(c, &user_id, &codes, now).await?;
        for mail in &mails {
            insert_mail_in_tx(c, mail).await?;
        }
        Ok(true)
    })
}

/// With a confirmed factor, the user's recovery codes become `codes`.
fn new_codes(c: &mut dyn Conn, (user_id, codes, now): (UserId, Vec<TokenHash>, i64)) -> OpFuture<'_, bool> {
    Box::pin(async move {
        let confirmed = query_opt(c, &CONFIRMED_LEFT, params![&user_id], first_int).await?.unwrap_or(0);
        if confirmed == 0 {
            return Ok(false);
        }
        replace_codes(c, &user_id, &codes, now).await?;
        Ok(true)
    })
}

fn insert_confirmed(
    c: &mut dyn Conn,
    (f, mails, now): (FactorRecord, Vec<NewMail>, i64),
) -> OpFuture<'_, bool> {
    Box::pin(async move {
        let p = params![&f.id, &f.user_id, &f.kind, &f.name, &f.secret, now];
        if c.execute(&INSERT_CONFIRMED, p).await? == 0 {
            return Ok(false);
        }
        for mail in &mails {
            insert_mail_in_tx(c, mail).await?;
        }
        Ok(true)
    })
}

fn factor(c: &mut dyn Conn, id: String) -> OpFuture<'_, Option<FactorRecord>> {
    Box::pin(async move { query_opt(c, &FACTOR, params![&id], rows::factor).await })
}

fn set_secret(c: &mut dyn Conn, (id, secret): (String, Vec<u8>)) -> OpFuture<'_, ()> {
    Box::pin(async move { c.execute(&SET_SECRET, params![&secret, &id]).await.map(|_| ()) })
}

fn insert_passkey_challenge(c: &mut dyn Conn, r: PasskeyChallengeRecord) -> OpFuture<'_, ()> {
    Box::pin(async move {
        let p = params![&r.id, &r.user_id, &r.state, r.created_at.0, r.expires_at.0];
        c.execute(&INSERT_PASSKEY_CHALLENGE, p).await.map(|_| ())
    })
}

fn take_passkey_challenge(
    c: &mut dyn Conn,
    (id, user_id, now): (String, Option<UserId>, i64),
) -> OpFuture<'_, Option<PasskeyChallengeRecord>> {
    Box::pin(async move {
        match &user_id {
            Some(user) => {
                let p = params![&id, now, user];
                query_opt(c, &TAKE_REGISTRATION_CHALLENGE, p, rows::passkey_challenge).await
            }
            None => query_opt(c, &TAKE_SIGN_IN_CHALLENGE, params![&id, now], rows::passkey_challenge).await,
        }
    })
}

fn use_step(c: &mut dyn Conn, (id, step): (String, i64)) -> OpFuture<'_, bool> {
    Box::pin(async move { Ok(c.execute(&USE_STEP, params![step, &id]).await? == 1) })
}

fn delete(c: &mut dyn Conn, (user_id, id, mails): (UserId, String, Vec<NewMail>)) -> OpFuture<'_, bool> {
    Box::pin(async move {
        if c.execute(&DELETE_FACTOR, params![&id, &user_id]).await? == 0 {
            return Ok(false);
        }
        let left = query_opt(c, &CONFIRMED_LEFT, params![&user_id], first_int).await?.unwrap_or(0);
        if left == 0 {
            c.execute(&DROP_CODES, params![&user_id]).await?;
        }
        for mail in &mails {
            insert_mail_in_tx(c, mail).await?;
        }
        Ok(true)
    })
}

fn use_code(c: &mut dyn Conn, (user_id, hash, now): (UserId, [u8; 32], i64)) -> OpFuture<'_, bool> {
    Box::pin(async move { Ok(c.execute(&USE_CODE, params![now, &hash, &user_id]).await? == 1) })
}

fn codes_left(c: &mut dyn Conn, user_id: UserId) -> OpFuture<'_, i64> {
    Box::pin(async move { Ok(query_opt(c, &CODES_LEFT, params![&user_id], first_int).await?.unwrap_or(0)) })
}

fn insert_challenge(c: &mut dyn Conn, m: MfaChallengeRecord) -> OpFuture<'_, ()> {
    Box::pin(async move {
        let p = params![&m.hash.0, &m.user_id, &m.password_hash, m.created_at.0, m.expires_at.0];
        c.execute(&INSERT_CHALLENGE, p).await.map(|_| ())
    })
}

fn challenge(c: &mut dyn Conn, hash: [u8; 32]) -> OpFuture<'_, Option<MfaChallengeRecord>> {
    Box::pin(async move { query_opt(c, &CHALLENGE, params![&hash], rows::mfa_challenge).await })
}

fn spend(c: &mut dyn Conn, (hash, now): ([u8; 32], i64)) -> OpFuture<'_, bool> {
    Box::pin(async move { Ok(c.execute(&SPEND_CHALLENGE, params![now, &hash]).await? == 1) })
}

#[async_trait]
impl<B: Backend> MfaStore for Db<B> {
    async fn insert_factor(&self, factor: &FactorRecord) -> Result<(), StoreError> {
        self.0.run(Access::Transaction, op(factor.clone(), insert_factor)).await
    }

    async fn list_factors(&self, user_id: &UserId) -> Result<Vec<FactorRecord>, StoreError> {
        self.0.run(Access::Scan, op(user_id.clone(), factors_of)).await
    }

    async fn confirm_factor(
        &self,
        factor_id: &str,
        step: i64,
        recovery_codes: &[TokenHash],
        mails: &[NewMail],
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let args = (factor_id.to_owned(), step, recovery_codes.to_vec(), mails.to_vec(), now.0);
        self.0.run(Access::Transaction, op(args, confirm)).await
    }

    async fn use_totp_step(&self, factor_id: &str, step: i64) -> Result<bool, StoreError> {
        self.0.run(Access::Statement, op((factor_id.to_owned(), step), use_step)).await
    }

    async fn delete_factor(
        &self,
        user_id: &UserId,
        factor_id: &str,
        mails: &[NewMail],
    ) -> Result<bool, StoreError> {
        let args = (user_id.clone(), factor_id.to_owned(), mails.to_vec());
        self.0.run(Access::Transaction, op(args, delete)).await
    }

    async fn use_recovery_code(
        &self,
        user_id: &UserId,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.0.run(Access::Statement, op((user_id.clone(), hash.0, now.0), use_code)).await
    }

    async fn count_recovery_codes(&self, user_id: &UserId) -> Result<i64, StoreError> {
        self.0.run(Access::Point, op(user_id.clone(), codes_left)).await
    }

    async fn replace_recovery_codes(
        &self,
        user_id: &UserId,
        codes: &[TokenHash],
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.0.run(Access::Transaction, op((user_id.clone(), codes.to_vec(), now.0), new_codes)).await
    }

    async fn insert_confirmed_factor(
        &self,
        factor: &FactorRecord,
        mails: &[NewMail],
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let args = (factor.clone(), mails.to_vec(), now.0);
        self.0.run(Access::Transaction, op(args, insert_confirmed)).await
    }

    async fn find_factor(&self, factor_id: &str) -> Result<Option<FactorRecord>, StoreError> {
        self.0.run(Access::Point, op(factor_id.to_owned(), factor)).await
    }

    async fn update_factor_secret(&self, factor_id: &str, secret: &[u8]) -> Result<(), StoreError> {
        self.0.run(Access::Statement, op((factor_id.to_owned(), secret.to_vec()), set_secret)).await
    }

    async fn insert_passkey_challenge(&self, challenge: &PasskeyChallengeRecord) -> Result<(), StoreError> {
        self.0.run(Access::Statement, op(challenge.clone(), insert_passkey_challenge)).await
    }

    async fn take_passkey_challenge(
        &self,
        id: &str,
        user_id: Option<&UserId>,
        now: Timestamp,
    ) -> Result<Option<PasskeyChallengeRecord>, StoreError> {
        let args = (id.to_owned(), user_id.cloned(), now.0);
        self.0.run(Access::Statement, op(args, take_passkey_challenge)).await
    }

    async fn insert_mfa_challenge(&self, challenge: &MfaChallengeRecord) -> Result<(), StoreError> {
        self.0.run(Access::Statement, op(challenge.clone(), insert_challenge)).await
    }

    async fn find_mfa_challenge(&self, hash: &TokenHash) -> Result<Option<MfaChallengeRecord>, StoreError> {
        self.0.run(Access::Point, op(hash.0, challenge)).await
    }

    async fn spend_mfa_challenge(&self, hash: &TokenHash, now: Timestamp) -> Result<bool, StoreError> {
        self.0.run(Access::Statement, op((hash.0, now.0), spend)).await
    }
}
