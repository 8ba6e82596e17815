//! The SMTP mailer (`src/smtp.rs`) against a real SMTP server (the test kit's aiosmtpd sink):
//! each scheme delivers with percent-encoded credentials, TLS is never skipped or downgraded,
//! and failures are sorted into transient and permanent without showing the password.

// Helpers in an integration-test crate are not `#[test]` functions, so clippy's
// allow-*-in-tests settings do not reach them; a failing index is a failing test here.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

// Until `pub mod smtp;` is declared in the binary's lib.rs, the mailer is compiled into this
// test directly. The sink comes in the same way rather than through a dev-dependency on
// latchkey-testkit, which itself depends on this crate.
#[allow(dead_code, unreachable_pub, reason = "compiled in by path; not every item is used here")]
#[path = "../../latchkey-testkit/src/smtp.rs"]
mod sink;
#[allow(dead_code, unreachable_pub, reason = "compiled in by path; not every item is used here")]
#[path = "../src/smtp.rs"]
mod smtp;

use std::time::Duration;

use sink::{SinkOptions, SmtpSink, TestCa, test_ca};
use smtp::{DeliveryError, SmtpMailer, SmtpUrl};

const WAIT: Duration = Duration::from_secs(30);
const USER: &str = "al@x";
const PASSWORD: &str = "p:w@1 secret";
const FROM: &str = "Latchkey <no-reply@latchkey.test>";
const DATE: i64 = 1_700_000_000;

fn mailer(url: &str, ca: Option<&TestCa>) -> SmtpMailer {
    let url = SmtpUrl::parse(url).expect("a valid smtp_url");
    let ca_pem = ca.map(TestCa::ca_pem_bytes);
    SmtpMailer::new(&url, FROM, ca_pem.as_deref(), "latchkey.test").expect("a mailer")
}

fn link() -> String {
    format!("http://127.0.0.1:8080/verify-email?token=lkv_{}", "a".repeat(43))
}

async fn send(mailer: &SmtpMailer, to: &str, id: u32) -> Result<(), DeliveryError> {
    let link = link();
    mailer
        .send(
            to,
            "Verify your email address",
            &format!("Hello,\n\nopen {link} to verify.\n"),
            &format!("<p>Hello,</p><p><a href=\"{link}\">Verify</a></p>"),
            &format!("<{id}.1700000000@latchkey.test>"),
            DATE,
        )
        .await
}

/// The error's text, after checking that it is the expected kind and holds no password.
fn failure(result: Result<(), DeliveryError>, permanent: bool) -> String {
    let (is_permanent, text) = match result.expect_err("the delivery fails") {
        DeliveryError::Permanent(text) => (true, text),
        DeliveryError::Transient(text) => (false, text),
    };
    assert_eq!(is_permanent, permanent, "{text}");
    for secret in [PASSWORD, "secret", "p%3Aw"] {
        assert!(!text.contains(secret), "the password leaked: {text}");
    }
    text
}

#[tokio::test]
async fn plain_starttls_and_smtps_deliver_with_percent_encoded_credentials() {
    let ca = test_ca();
    let auth = || SinkOptions::new().auth(USER, PASSWORD);
    let cases = [
        ("smtp", "127.0.0.1", auth(), false),
        ("smtp+starttls", "localhost", auth().starttls(&ca.cert_pem, &ca.key_pem), true),
        ("smtps", "127.0.0.1", auth().smtps(&ca.cert_pem, &ca.key_pem), true),
    ];
    for (i, (scheme, host, options, tls)) in (1..).zip(cases) {
        let sink = SmtpSink::start_with(options).await;
        let url = sink.url_with(scheme, host, USER, PASSWORD);
        assert!(url.contains("al%40x:p%3Aw%401%20secret@"), "{url}");
        let mailer = mailer(&url, Some(&ca));
        send(&mailer, "Alice <alice@example.com>", i).await.unwrap_or_else(|e| panic!("{scheme}: {e}"));

        let mails = sink.wait_for(1, WAIT).await;
        let mail = &mails[0];
        assert_eq!(mail.auth.as_deref(), Some(USER), "{scheme}");
        assert_eq!(mail.tls, tls, "{scheme}");
        assert_eq!(mail.mail_from, "no-reply@latchkey.test");
        assert_eq!(mail.rcpt_tos, ["alice@example.com"]);
        assert_eq!(mail.header("From"), Some(FROM));
        assert_eq!(mail.header("To"), Some("Alice <alice@example.com>"));
        assert_eq!(mail.header("Subject"), Some("Verify your email address"));
        let message_id = format!("<{i}.1700000000@latchkey.test>");
        assert_eq!(mail.header("Message-ID"), Some(message_id.as_str()));
        let date = mail.header("Date").expect("a Date header");
        assert!(date.contains("14 Nov 2023 22:13:20"), "the given date, not the clock's: {date}");
        assert_eq!(mail.content_type, "multipart/alternative");
        assert!(mail.text.as_deref().unwrap().starts_with("Hello,\n"), "{:?}", mail.text);
        assert!(mail.html.as_deref().unwrap().contains("<a href="), "{:?}", mail.html);
        assert_eq!(mail.link(), Some(link()));
    }
}

#[tokio::test]
async fn an_untrusted_certificate_fails_as_transient_and_is_never_downgraded() {
    let (trusted, other) = (test_ca(), test_ca());
    let starttls = SmtpSink::start_with(SinkOptions::new().starttls(&other.cert_pem, &other.key_pem)).await;
    let smtps = SmtpSink::start_with(SinkOptions::new().smtps(&other.cert_pem, &other.key_pem)).await;
    let no_starttls = SmtpSink::start().await;
    let urls = [
        format!("smtp+starttls://127.0.0.1:{}", starttls.port()),
        format!("smtps://127.0.0.1:{}", smtps.port()),
        // A server that does not offer STARTTLS: plain text is never the fallback.
        format!("smtp+starttls://127.0.0.1:{}", no_starttls.port()),
    ];
    for url in &urls {
        failure(send(&mailer(url, Some(&trusted)), "bob@example.com", 1).await, false);
    }
    // The system's roots alone do not trust a test CA either.
    failure(send(&mailer(&urls[1], None), "bob@example.com", 2).await, false);
    for sink in [&starttls, &smtps, &no_starttls] {
        assert!(sink.messages().is_empty(), "nothing may be delivered");
    }
}

#[tokio::test]
async fn a_temporary_failure_is_transient_and_the_retry_delivers() {
    let sink = SmtpSink::start_with(SinkOptions::new().tempfail(1)).await;
    let mailer = mailer(&sink.url(), None);
    let text = failure(send(&mailer, "carol@example.com", 1).await, false);
    assert!(text.contains("451"), "{text}");
    send(&mailer, "carol@example.com", 1).await.expect("the retry is delivered");
    assert_eq!(sink.wait_for(1, WAIT).await.len(), 1);
}

#[tokio::test]
async fn a_refused_recipient_is_permanent_with_the_reply() {
    let sink = SmtpSink::start_with(SinkOptions::new().reject_rcpt("dave@example.com")).await;
    let mailer = mailer(&sink.url(), None);
    let text = failure(send(&mailer, "dave@example.com", 1).await, true);
    assert!(text.contains("550"), "{text}");
    let text = failure(send(&mailer, "not an address", 2).await, true);
    assert!(text.contains("recipient"), "{text}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn a_down_server_or_refused_credentials_are_transient_without_the_password() {
    let down = SmtpSink::reserve();
    failure(
        send(&mailer(&down.url_with("smtp", "127.0.0.1", USER, PASSWORD), None), "e@x.example", 1).await,
        false,
    );

    let sink = SmtpSink::start_with(SinkOptions::new().auth(USER, "another password")).await;
    let mailer = mailer(&sink.url_with("smtp", "127.0.0.1", USER, PASSWORD), None);
    let text = failure(send(&mailer, "e@x.example", 2).await, false);
    assert!(text.contains("535"), "{text}");
    assert!(sink.messages().is_empty());
}
