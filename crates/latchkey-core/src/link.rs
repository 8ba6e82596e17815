//! Link tokens from mails (SPEC 10): how they are made, how long they live, and the pure
//! judgement of whether a stored link may be used now. The store applies the judgement
//! inside the redemption's transaction.

use std::time::Duration;

use latchkey_proto::{LinkKind, LinkToken, LinkTokenReason};

use crate::clock::Timestamp;
use crate::crypto::{TokenHash, b64, random_bytes};
use crate::ids::UserId;
use crate::store::{LinkPurpose, LinkRecord, UserRecord, UserStatus};

/// How long a verification link works (SPEC 10).
pub const VERIFY_LINK_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a password-reset link works (SPEC 10).
pub const RESET_LINK_TTL: Duration = Duration::from_secs(30 * 60);

/// A new link token: its prefix and base64url of 256 random bits.
pub fn new_link_token(kind: LinkKind) -> LinkToken {
    LinkToken::new(format!("{}{}", kind.prefix(), b64(&random_bytes::<32>())))
}

/// A new link of `purpose` for `user_id`, mailed to `email` (with its key), valid for `ttl`
/// from `now`: the token to put in the mail, and the record to store (its hash only).
pub fn new_link(
    purpose: LinkPurpose,
    user_id: &UserId,
    (email, email_key): (&str, &str),
    now: Timestamp,
    ttl: Duration,
) -> (LinkToken, LinkRecord) {
    let kind = match purpose {
        LinkPurpose::VerifyEmail | LinkPurpose::ChangeEmail => LinkKind::Verify,
        LinkPurpose::PasswordReset => LinkKind::Reset,
    };
    let token = new_link_token(kind);
    let link = LinkRecord {
        hash: TokenHash::of(token.expose_secret()),
        purpose,
        user_id: user_id.clone(),
        email: email.to_owned(),
        email_key: email_key.to_owned(),
        created_at: now,
        expires_at: now.plus(ttl),
        used_at: None,
        voided_at: None,
    };
    (token, link)
}

/// Whether `link` may verify its address now: not used, not replaced, not expired, and its
/// address still the account's (a link for an address since replaced is expired).
///
/// # Errors
/// Why not, as the `error_reason` the client sees.
pub fn judge_verification(
    link: &LinkRecord,
    user: &UserRecord,
    now: Timestamp,
) -> Result<(), LinkTokenReason> {
    if link.purpose == LinkPurpose::ChangeEmail {
        // A new address: it becomes the account's when the link is used.
        return judge(link, LinkPurpose::ChangeEmail, user, now);
    }
    judge(link, LinkPurpose::VerifyEmail, user, now)?;
    match &user.email {
        Some(e) if e.key == link.email_key => Ok(()),
        _ => Err(LinkTokenReason::Expired),
    }
}

/// Whether `link` may reset the password now.
///
/// # Errors
/// Why not.
pub fn judge_reset(link: &LinkRecord, user: &UserRecord, now: Timestamp) -> Result<(), LinkTokenReason> {
    judge(link, LinkPurpose::PasswordReset, user, now)
}

/// What every link must be: of the purpose asked for (another purpose is an unknown link
/// here), unused (used wins over expired: it is the truer answer), not replaced, not past
/// its lifetime, and its account active.
fn judge(
    link: &LinkRecord,
    purpose: LinkPurpose,
    user: &UserRecord,
    now: Timestamp,
) -> Result<(), LinkTokenReason> {
    if link.purpose != purpose {
        return Err(LinkTokenReason::Unknown);
    }
    if link.used_at.is_some() {
        return Err(LinkTokenReason::Used);
    }
    if link.voided_at.is_some() || now >= link.expires_at || user.status != UserStatus::Active {
        return Err(LinkTokenReason::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::TokenHash;
    use crate::store::UserEmail;

    const T0: i64 = 1_000_000;

    fn user(email_key: Option<&str>, status: UserStatus) -> UserRecord {
        UserRecord {
            id: "u".into(),
            username: "ann".into(),
            password_hash: String::new(),
            roles: vec![],
            authz_ver: 1,
            status,
            created_at: Timestamp(0),
            email: email_key.map(|k| UserEmail { address: k.into(), key: k.into(), verified_at: None }),
        }
    }

    fn link(purpose: LinkPurpose) -> LinkRecord {
        LinkRecord {
            hash: TokenHash::of("lkv_x"),
            purpose,
            user_id: "u".into(),
            email: "a@example.com".into(),
            email_key: "a@example.com".into(),
            created_at: Timestamp(T0),
            expires_at: Timestamp(T0 + 100),
            used_at: None,
            voided_at: None,
        }
    }

    #[test]
    fn a_fresh_link_works_until_its_expiry() {
        let u = user(Some("a@example.com"), UserStatus::Active);
        let l = link(LinkPurpose::VerifyEmail);
        assert_eq!(judge_verification(&l, &u, Timestamp(T0)), Ok(()));
        assert_eq!(judge_verification(&l, &u, Timestamp(T0 + 99)), Ok(()));
        assert_eq!(judge_verification(&l, &u, Timestamp(T0 + 100)), Err(LinkTokenReason::Expired));
        let r = link(LinkPurpose::PasswordReset);
        assert_eq!(judge_reset(&r, &u, Timestamp(T0 + 99)), Ok(()));
        assert_eq!(judge_reset(&r, &u, Timestamp(T0 + 100)), Err(LinkTokenReason::Expired));
    }

    #[test]
    fn used_wins_over_expired_and_voided_is_expired() {
        let u = user(Some("a@example.com"), UserStatus::Active);
        let mut l = link(LinkPurpose::VerifyEmail);
        l.voided_at = Some(Timestamp(T0 + 1));
        assert_eq!(judge_verification(&l, &u, Timestamp(T0 + 2)), Err(LinkTokenReason::Expired));
        l.used_at = Some(Timestamp(T0 + 1));
        assert_eq!(judge_verification(&l, &u, Timestamp(T0 + 500)), Err(LinkTokenReason::Used));
    }

    #[test]
    fn a_link_for_another_purpose_an_old_address_or_a_disabled_user_does_not_work() {
        let u = user(Some("a@example.com"), UserStatus::Active);
        assert_eq!(
            judge_reset(&link(LinkPurpose::VerifyEmail), &u, Timestamp(T0)),
            Err(LinkTokenReason::Unknown)
        );
        assert_eq!(
            judge_verification(&link(LinkPurpose::PasswordReset), &u, Timestamp(T0)),
            Err(LinkTokenReason::Unknown)
        );
        let moved = user(Some("b@example.com"), UserStatus::Active);
        let l = link(LinkPurpose::VerifyEmail);
        assert_eq!(judge_verification(&l, &moved, Timestamp(T0)), Err(LinkTokenReason::Expired));
        assert_eq!(
            judge_verification(&l, &user(None, UserStatus::Active), Timestamp(T0)),
            Err(LinkTokenReason::Expired)
        );
        let disabled = user(Some("a@example.com"), UserStatus::Disabled);
        assert_eq!(judge_verification(&l, &disabled, Timestamp(T0)), Err(LinkTokenReason::Expired));
    }

    #[test]
    fn tokens_are_well_formed_and_distinct() {
        let a = new_link_token(LinkKind::Verify);
        let b = new_link_token(LinkKind::Verify);
        assert_eq!(a.kind(), Some(LinkKind::Verify));
        assert_eq!(new_link_token(LinkKind::Reset).kind(), Some(LinkKind::Reset));
        assert_ne!(a.expose_secret(), b.expose_secret());
    }
}
