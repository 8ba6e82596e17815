//! The test SMTP server (`latchkey_testkit::smtp`) against a hand-written SMTP dialogue: what
//! it receives comes back parsed, its failure modes answer as configured, and a reserved port
//! has nothing listening until the sink is launched there.

// Helpers in an integration-test crate are not `#[test]` functions, so clippy's
// allow-*-in-tests settings do not reach them; a failing index is a failing test here.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

// Until `pub mod smtp;` is declared in the testkit's lib.rs, the module is compiled into this
// test directly; the `dead_code` allowance covers the parts only other tests use.
#[allow(dead_code, unreachable_pub, reason = "test support used only in part here")]
#[path = "../src/smtp.rs"]
mod smtp;

use std::time::Duration;

use smtp::{SinkOptions, SmtpSink};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(30);

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
    let ca = smtp::test_ca();
    for path in [&ca.ca_pem, &ca.cert_pem] {
        let pem = std::fs::read_to_string(path).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{path:?}");
    }
    assert!(std::fs::read_to_string(&ca.key_pem).unwrap().contains("PRIVATE KEY"));
    assert_eq!(ca.ca_pem_bytes(), std::fs::read(&ca.ca_pem).unwrap());
}
