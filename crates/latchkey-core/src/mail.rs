//! The mails Latchkey writes (SPEC 10): each a plain-text and an HTML part rendered from
//! templates (`templates/mail/`), queued in the outbox as a [`NewMail`]. Rendering is pure;
//! sending is the outbox sender's, outside any request. No subject carries a token.
//!
//! No mail carries the username: a username is any text its owner chose, and a reset or
//! verification mail goes to an address nobody has proved yet, so naming the account would
//! let anyone send their own words from this server to any address.

use askama::Template;

use crate::clock::Timestamp;
use crate::mail_seal::seal_body;
use crate::master_key::MasterKey;
use crate::service::Latchkey;
use crate::store::{NewMail, UserRecord};

/// What every link mail says: which address and server it is about, and the link.
struct LinkMail<'a> {
    email: &'a str,
    issuer: &'a str,
    link: &'a str,
}

/// Declares the text and HTML templates of one kind of link mail.
macro_rules! link_templates {
    ($text:ident = $text_path:literal, $html:ident = $html_path:literal) => {
        #[derive(Template)]
        #[template(path = $text_path)]
        struct $text<'a> {
            m: &'a LinkMail<'a>,
        }

        #[derive(Template)]
        #[template(path = $html_path)]
        struct $html<'a> {
            m: &'a LinkMail<'a>,
        }
    };
}

link_templates!(VerifyEmailText = "mail/verify_email.txt", VerifyEmailHtml = "mail/verify_email.html");
link_templates!(
    PasswordResetText = "mail/password_reset.txt",
    PasswordResetHtml = "mail/password_reset.html"
);

/// The notice to the old address when a change of address is asked for (SPEC 10); it
/// carries no token.
#[derive(Template)]
#[template(path = "mail/email_change_requested.txt")]
struct ChangeNoticeText<'a> {
    issuer: &'a str,
    new_email: &'a str,
}

#[derive(Template)]
#[template(path = "mail/email_change_requested.html")]
struct ChangeNoticeHtml<'a> {
    issuer: &'a str,
    new_email: &'a str,
}

/// The notice that a second factor was added or removed (SPEC 11); it carries no token.
#[derive(Template)]
#[template(path = "mail/factor_changed.txt")]
struct FactorChangedText<'a> {
    what: &'a str,
    issuer: &'a str,
}

#[derive(Template)]
#[template(path = "mail/factor_changed.html")]
struct FactorChangedHtml<'a> {
    what: &'a str,
    issuer: &'a str,
}

/// What changed among a user's second factors, as the notice says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FactorChange {
    /// An authenticator app was set up.
    Added,
    /// A factor was removed by the user.
    Removed,
    /// An operator removed every factor.
    Reset,
}

impl FactorChange {
    fn sentence(self) -> &'static str {
        match self {
            Self::Added => "An authenticator app was set up for signing in",
            Self::Removed => "A second sign-in factor was removed",
            Self::Reset => "An administrator removed every second sign-in factor",
        }
    }
}

/// Where a link mail goes and until when its link works.
pub(crate) struct Envelope<'a> {
    /// Seals the bodies at rest, when configured (see `mail_seal.rs`).
    pub(crate) master: Option<&'a MasterKey>,
    /// The account.
    pub(crate) user: &'a UserRecord,
    /// The address.
    pub(crate) email: &'a str,
    /// The server's issuer URL (named in the mail).
    pub(crate) issuer: &'a str,
    /// When the mail is queued.
    pub(crate) now: Timestamp,
    /// When its link stops working (and the mail is no longer worth sending).
    pub(crate) expires_at: Timestamp,
}

impl Envelope<'_> {
    fn mail(&self, kind: &'static str, subject: &str, text: String, html: String) -> NewMail {
        NewMail {
            kind,
            user_id: Some(self.user.id.clone()),
            recipient: self.email.to_owned(),
            subject: subject.to_owned(),
            text: seal_body(self.master, self.email, text),
            html: seal_body(self.master, self.email, html),
            created_at: self.now,
            expires_at: self.expires_at,
        }
    }

    fn fields<'a>(&'a self, link: &'a str) -> LinkMail<'a> {
        LinkMail { email: self.email, issuer: self.issuer, link }
    }
}

impl Latchkey {
    /// The envelope of a mail about `user` to `email`, queued `now`, worth sending until
    /// `expires_at`.
    pub(crate) fn envelope<'a>(
        &'a self,
        user: &'a UserRecord,
        email: &'a str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Envelope<'a> {
        Envelope {
            master: self.keys.master_key(),
            user,
            email,
            issuer: &self.settings.issuer,
            now,
            expires_at,
        }
    }
}

/// The mail that carries a verification link.
///
/// # Errors
/// A template that fails to render (a bug, not an input problem).
pub(crate) fn verify_email(to: &Envelope<'_>, link: &str) -> Result<NewMail, askama::Error> {
    let f = to.fields(link);
    Ok(to.mail(
        "verify_email",
        "Verify your email address",
        VerifyEmailText { m: &f }.render()?,
        VerifyEmailHtml { m: &f }.render()?,
    ))
}

/// The notice to the account's current address that `new_email` was asked for.
///
/// # Errors
/// A template that fails to render.
pub(crate) fn email_change_requested(to: &Envelope<'_>, new_email: &str) -> Result<NewMail, askama::Error> {
    let issuer = to.issuer;
    Ok(to.mail(
        "email_change_requested",
        "Your email address is being changed",
        ChangeNoticeText { issuer, new_email }.render()?,
        ChangeNoticeHtml { issuer, new_email }.render()?,
    ))
}

/// The notice to the account's verified address that its second factors changed.
///
/// # Errors
/// A template that fails to render.
pub(crate) fn factor_changed(to: &Envelope<'_>, change: FactorChange) -> Result<NewMail, askama::Error> {
    let (what, issuer) = (change.sentence(), to.issuer);
    Ok(to.mail(
        "mfa_changed",
        "Your sign-in settings changed",
        FactorChangedText { what, issuer }.render()?,
        FactorChangedHtml { what, issuer }.render()?,
    ))
}

/// The mail that carries a password-reset link.
///
/// # Errors
/// A template that fails to render.
pub(crate) fn password_reset(to: &Envelope<'_>, link: &str) -> Result<NewMail, askama::Error> {
    let f = to.fields(link);
    Ok(to.mail(
        "password_reset",
        "Reset your password",
        PasswordResetText { m: &f }.render()?,
        PasswordResetHtml { m: &f }.render()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UserStatus;

    #[test]
    fn both_parts_carry_the_link_and_neither_the_username() {
        let user = UserRecord {
            id: "u".into(),
            username: "Call +1 555 0100 to keep your account".into(),
            password_hash: String::new(),
            roles: vec![],
            authz_ver: 1,
            status: UserStatus::Active,
            created_at: Timestamp(0),
            email: None,
        };
        let to = Envelope {
            master: None,
            user: &user,
            email: "a<b>@example.com",
            issuer: "http://issuer.test",
            now: Timestamp(1),
            expires_at: Timestamp(2),
        };
        for (mail, token) in [
            (verify_email(&to, "http://issuer.test/verify-email?token=lkv_abc").unwrap(), "lkv_abc"),
            (password_reset(&to, "http://issuer.test/reset-password?token=lkp_abc").unwrap(), "lkp_abc"),
        ] {
            assert!(mail.text.contains(token), "{}", mail.text);
            assert!(mail.html.contains(token), "{}", mail.html);
            assert!(!mail.text.contains("555") && !mail.html.contains("555"), "{}", mail.text);
            if mail.kind == "verify_email" {
                assert!(mail.text.contains("a<b>@example.com"), "plain text is not escaped");
            }
            assert!(!mail.html.contains("<b>"), "{}", mail.html);
            assert!(!mail.subject.contains(token));
            assert_eq!(mail.recipient, "a<b>@example.com");
        }
    }
}
