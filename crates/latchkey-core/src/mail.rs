//! The mails Latchkey writes (SPEC 10): each a plain-text and an HTML part rendered from
//! templates (`templates/mail/`), queued in the outbox as a [`NewMail`]. Rendering is pure;
//! sending is the outbox sender's, outside any request. No subject carries a token.

use askama::Template;

use crate::clock::Timestamp;
use crate::store::{NewMail, UserRecord};

#[derive(Template)]
#[template(path = "mail/verify_email.txt")]
struct VerifyEmailText<'a> {
    username: &'a str,
    email: &'a str,
    issuer: &'a str,
    link: &'a str,
}

#[derive(Template)]
#[template(path = "mail/verify_email.html")]
struct VerifyEmailHtml<'a> {
    username: &'a str,
    email: &'a str,
    issuer: &'a str,
    link: &'a str,
}

/// The mail that carries a verification link for `user`'s address `email`, valid until
/// `expires_at`.
///
/// # Errors
/// A template that fails to render (a bug, not an input problem).
pub(crate) fn verify_email(
    user: &UserRecord,
    email: &str,
    issuer: &str,
    link: &str,
    now: Timestamp,
    expires_at: Timestamp,
) -> Result<NewMail, askama::Error> {
    let (username, issuer) = (user.username.as_str(), issuer);
    Ok(NewMail {
        kind: "verify_email",
        user_id: Some(user.id.clone()),
        recipient: email.to_owned(),
        subject: "Verify your email address".to_owned(),
        text: VerifyEmailText { username, email, issuer, link }.render()?,
        html: VerifyEmailHtml { username, email, issuer, link }.render()?,
        created_at: now,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UserStatus;

    #[test]
    fn both_parts_carry_the_link_and_the_html_is_escaped() {
        let user = UserRecord {
            id: "u".into(),
            username: "<script>ann</script>".into(),
            password_hash: String::new(),
            roles: vec![],
            authz_ver: 1,
            status: UserStatus::Active,
            created_at: Timestamp(0),
            email: None,
        };
        let link = "http://issuer.test/verify-email?token=lkv_abc";
        let mail =
            verify_email(&user, "a@example.com", "http://issuer.test", link, Timestamp(1), Timestamp(2))
                .unwrap();
        assert!(mail.text.contains(link));
        assert!(
            mail.html.contains(&format!("href=\"{}\"", link.replace('=', "&#61;")))
                || mail.html.contains(link)
        );
        assert!(mail.text.contains("<script>ann</script>"), "plain text is not escaped");
        assert!(!mail.html.contains("<script>"), "{}", mail.html);
        assert!(!mail.subject.contains("lkv_"));
        assert_eq!(mail.recipient, "a@example.com");
    }
}
