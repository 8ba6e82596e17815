//! The mail tests, against a real SMTP server (the test kit's aiosmtpd sink,
//! `latchkey_testkit::smtp`). The mailer (`latchkey::smtp`): each scheme delivers with
//! percent-encoded credentials, TLS is never skipped or downgraded, and failures are sorted
//! into transient and permanent without showing the password. The sink itself, against a
//! hand-written SMTP dialogue: what it receives comes back parsed, its failure modes answer
//! as configured, and a reserved port has nothing listening until the sink is launched there.

// Helpers in an integration-test crate are not `#[test]` functions, so clippy's
// allow-*-in-tests settings do not reach them; a failing index is a failing test here.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::time::Duration;

use latchkey::smtp::{DeliveryError, SmtpMailer, SmtpUrl};
use latchkey_testkit::smtp::{SinkOptions, SmtpSink, TestCa, test_ca};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(30);

// The mailer.

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

// The sink.

/// A minimal SMTP client: one command, one (possibly multi-line) reply code.
struct Dialogue(BufReader<TcpStream>);

impl Dialogue {
    async fn open(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect to the sink");
        let mut d = Self(BufReader::new(stream));
        assert_eq!(d.reply().await, 220);
        d
    }

    async fn reply(&mut self) -> u16 {
        loop {
            let mut line = String::new();
            self.0.read_line(&mut line).await.expect("read a reply");
            assert!(line.len() >= 4, "short reply {line:?}");
            if line.as_bytes()[3] == b' ' {
                return line[..3].parse().expect("a reply code");
            }
        }
    }

    async fn send(&mut self, line: &str) -> u16 {
        self.0.get_mut().write_all(format!("{line}\r\n").as_bytes()).await.expect("write");
        self.reply().await
    }

    /// Sends one message; the reply code to `RCPT TO`, or to the end of `DATA`.
    async fn mail(&mut self, from: &str, to: &str, body: &str) -> u16 {
        assert_eq!(self.send(&format!("MAIL FROM:<{from}>")).await, 250);
        let rcpt = self.send(&format!("RCPT TO:<{to}>")).await;
        if rcpt != 250 {
            assert_eq!(self.send("RSET").await, 250);
            return rcpt;
        }
        assert_eq!(self.send("DATA").await, 354);
        self.send(&format!("{body}\r\n.")).await
    }
}

fn message(to: &str, link: &str) -> String {
    [
        "From: Latchkey <no-reply@latchkey.test>",
        &format!("To: {to}"),
        "Subject: Confirm your email address",
        "Message-ID: <1@latchkey.test>",
        "MIME-Version: 1.0",
        "Content-Type: multipart/alternative; boundary=\"b\"",
        "",
        "--b",
        "Content-Type: text/plain; charset=utf-8",
        "",
        &format!("Open {link} to confirm."),
        "--b",
        "Content-Type: text/html; charset=utf-8",
        "",
        &format!("<p><a href=\"{link}\">Confirm</a></p>"),
        "--b--",
    ]
    .join("\r\n")
}

#[tokio::test]
async fn a_message_comes_back_parsed_with_its_link() {
    let sink = SmtpSink::start().await;
    let link = format!("http://127.0.0.1:8080/verify-email?token=lkv_{}", "x".repeat(43));
    let mut d = Dialogue::open(sink.port()).await;
    assert_eq!(d.send("EHLO test.example").await, 250);
    let code =
        d.mail("bounce@latchkey.test", "alice@example.com", &message("alice@example.com", &link)).await;
    assert_eq!(code, 250);
    assert_eq!(d.send("QUIT").await, 221);

    let mails = sink.wait_for(1, WAIT).await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.mail_from, "bounce@latchkey.test");
    assert_eq!(mail.rcpt_tos, ["alice@example.com"]);
    assert_eq!(mail.auth, None);
    assert!(!mail.tls);
    assert_eq!(mail.content_type, "multipart/alternative");
    assert_eq!(mail.header("subject"), Some("Confirm your email address"));
    assert_eq!(mail.header("MESSAGE-ID"), Some("<1@latchkey.test>"));
    assert!(mail.text.as_deref().unwrap().contains(&link));
    assert_eq!(mail.link().as_deref(), Some(link.as_str()));
    assert!(String::from_utf8_lossy(&mail.raw).contains("Subject: Confirm your email address"));
    assert_eq!(sink.url(), format!("smtp://127.0.0.1:{}", sink.port()));
}

#[tokio::test]
async fn tempfail_and_reject_rcpt_answer_as_configured() {
    let sink = SmtpSink::start_with(SinkOptions::new().tempfail(1).reject_rcpt("Nobody@Example.com")).await;
    let mut d = Dialogue::open(sink.port()).await;
    assert_eq!(d.send("HELO test.example").await, 250);
    let body = message("alice@example.com", "none");
    assert_eq!(d.mail("a@latchkey.test", "nobody@example.com", &body).await, 550);
    assert_eq!(d.mail("a@latchkey.test", "alice@example.com", &body).await, 451);
    assert_eq!(d.mail("a@latchkey.test", "alice@example.com", &body).await, 250);
    let mails = sink.wait_for(1, WAIT).await;
    assert_eq!(mails.len(), 1, "only the third attempt was accepted");
    assert_eq!(mails[0].link(), None);
}

#[tokio::test]
async fn a_reserved_port_is_down_until_launched_and_a_relaunch_appends() {
    let mut sink = SmtpSink::reserve();
    assert!(!sink.is_running());
    assert!(TcpStream::connect(("127.0.0.1", sink.port())).await.is_err(), "nothing listens yet");
    assert!(sink.messages().is_empty());

    for round in 1..=2 {
        sink.launch(&SinkOptions::new()).await;
        let mut d = Dialogue::open(sink.port()).await;
        assert_eq!(d.send("HELO test.example").await, 250);
        let to = format!("user{round}@example.com");
        assert_eq!(d.mail("a@latchkey.test", &to, &message(&to, "none")).await, 250);
        sink.wait_for(round, WAIT).await;
        sink.stop().await;
        assert!(!sink.is_running());
    }
    let mails = sink.messages();
    let tos: Vec<_> = mails.iter().map(|m| m.rcpt_tos.join(",")).collect();
    assert_eq!(tos, ["user1@example.com", "user2@example.com"]);
    assert!(TcpStream::connect(("127.0.0.1", sink.port())).await.is_err(), "stopped");
}

#[test]
fn test_ca_writes_a_ca_and_a_server_certificate() {
    let ca = test_ca();
    for path in [&ca.ca_pem, &ca.cert_pem] {
        let pem = std::fs::read_to_string(path).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{path:?}");
    }
    assert!(std::fs::read_to_string(&ca.key_pem).unwrap().contains("PRIVATE KEY"));
    assert_eq!(ca.ca_pem_bytes(), std::fs::read(&ca.ca_pem).unwrap());
}
