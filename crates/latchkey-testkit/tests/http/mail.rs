//! Mail leaving the outbox (SPEC 10): the background sender delivers to a real SMTP server
//! (the test kit's aiosmtpd sink). A verification mail arrives with both parts and a link
//! that verifies; a mail server that is down slows no request and gets the mail once it is
//! back; a permanent refusal ends the mail `failed`; two nodes on one PostgreSQL outbox send
//! each mail exactly once.
//!
//! Delivery happens in another task and another process, so these tests poll in real time
//! ([`eventually`]); retries come due only when the test advances the server's clock.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use latchkey_core::store::{DeliveryState, NewMail};
use latchkey_core::{Clock, Timestamp};
use latchkey_testkit::smtp::{SinkOptions, SmtpSink};
use latchkey_testkit::{ISSUER, MAIL_FROM, deliver_mail_to};
use serde_json::{Value, json};

use crate::{TestServer, http_client};

const PASSWORD: &str = "correct horse battery";
const WAIT: Duration = Duration::from_secs(30);

/// A server that delivers to `sink`.
async fn server_for(sink: &SmtpSink) -> TestServer {
    let url = sink.url();
    TestServer::start_with(|c| deliver_mail_to(c, &url)).await
}

/// Registers `username` with `email`, signs in and asks for a verification link (`202`).
async fn ask_for_link(s: &TestServer, username: &str, email: &str) -> String {
    let c = http_client();
    let r = s
        .post(&c, "/auth/register", json!({"username": username, "password": PASSWORD, "email": email}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let at = s.login(&c, username, PASSWORD).await.str("access_token").to_owned();
    let sent = s.post_auth(&c, "/auth/email/verify/send", &at, json!({})).await;
    assert_eq!(sent.status, 202, "{}", sent.text);
    at
}

/// `latchkey mail list --state STATE`, newest first.
async fn mail_list(s: &TestServer, state: &str) -> Vec<Value> {
    let out = s.cli(&["mail", "list", "--state", state], "").await.unwrap();
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Polls `check` every 50 ms until it holds, for at most [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of an unlabelled series in the server's metrics.
fn metric(s: &TestServer, name: &str) -> f64 {
    let text = s.service.metrics().render();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test]
async fn a_verification_mail_is_delivered_with_both_parts_and_its_link_verifies() {
    let sink = SmtpSink::start().await;
    let s = server_for(&sink).await;
    let c = http_client();
    let at = ask_for_link(&s, "ann", "Ann@Example.com").await;
    let mail = sink.wait_for(1, WAIT).await.remove(0);

    assert_eq!(mail.header("From"), Some(MAIL_FROM));
    assert_eq!(mail.header("To"), Some("Ann@Example.com"));
    assert_eq!(mail.rcpt_tos, ["Ann@Example.com"]);
    assert_eq!(mail.header("Subject"), Some("Verify your email address"));
    assert_eq!(mail.content_type, "multipart/alternative");
    assert!(mail.text.is_some() && mail.html.is_some());
    let message_id = mail.header("Message-ID").expect("a Message-ID").to_owned();
    let host = ISSUER.trim_start_matches("http://");
    assert!(message_id.starts_with('<') && message_id.ends_with(&format!("@{host}>")), "{message_id}");
    let link = mail.link().expect("a link in both parts");
    assert!(link.starts_with(&format!("{ISSUER}/verify-email?token=lkv_")), "{link}");
    let token = link.rsplit_once("token=").unwrap().1;

    let r = s.post(&c, "/auth/email/verify", json!({"token": token})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(s.get_auth(&c, "/auth/me", &at).await.json["email_verified"], true);

    eventually("the mail is marked sent", || async { mail_list(&s, "sent").await.len() == 1 }).await;
    let sent = mail_list(&s, "sent").await.remove(0);
    assert_eq!((sent["attempts"].as_i64(), &sent["text"]), (Some(1), &Value::Null), "{sent}");
    assert!(sent["sent_at"].is_string(), "{sent}");
    assert!(mail_list(&s, "pending").await.is_empty());
    let row = s.store().list_mail(Some(DeliveryState::Sent), 1).await.unwrap().remove(0);
    assert_eq!(message_id, format!("<{}.{}@{host}>", row.id, row.created_at.0), "stable");
    assert_eq!(metric(&s, "latchkey_mail_sent_total"), 1.0);
    assert_eq!(metric(&s, "latchkey_mail_outbox_pending"), 0.0);
    let logs = latchkey_testkit::captured_logs();
    assert!(!logs.contains(token), "the link token is never logged");
}

/// A mail server that accepts the connection and then says nothing holds no request: the
/// `202` arrives while the sender is still waiting for the greeting. Proved by order, not
/// by a stopwatch: after the answer, the sender's connection is found open and silent (had
/// the request waited for delivery, the sender would have given up and closed it first).
#[tokio::test]
async fn a_mail_server_that_never_answers_holds_no_request() {
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("smtp://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let s = TestServer::start_with(|c| deliver_mail_to(c, &url)).await;
    ask_for_link(&s, "stalled", "stalled@example.com").await;
    let (mut conn, _) =
        tokio::time::timeout(WAIT, listener.accept()).await.expect("the sender connects").unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(500), conn.read(&mut byte)).await;
    assert!(read.is_err(), "the sender is still waiting for the greeting: {read:?}");
}

#[tokio::test]
async fn mail_queued_while_smtp_is_down_arrives_once_after_it_is_back() {
    let mut sink = SmtpSink::reserve();
    let s = server_for(&sink).await;
    ask_for_link(&s, "bo", "bo@example.com").await;
    eventually("the first attempt failed", || async {
        mail_list(&s, "pending").await.first().is_some_and(|m| m["attempts"].as_i64() >= Some(1))
    })
    .await;
    let pending = mail_list(&s, "pending").await.remove(0);
    assert!(pending["last_error"].is_string(), "{pending}");
    assert!(pending["text"].as_str().unwrap().contains("lkv_"), "kept until sent");
    assert!(metric(&s, "latchkey_mail_retried_total") >= 1.0);
    assert_eq!(metric(&s, "latchkey_mail_sent_total"), 0.0);

    sink.launch(&SinkOptions::new()).await;
    // Nothing is due until the backoff has passed on the server's clock.
    s.clock.advance(Duration::from_secs(60));
    let mails = sink.wait_for(1, WAIT).await;
    eventually("the mail is marked sent", || async { mail_list(&s, "sent").await.len() == 1 }).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(sink.messages().len(), 1, "exactly once");
    assert_eq!(mail_list(&s, "sent").await[0]["attempts"], 2);
    assert_eq!(metric(&s, "latchkey_mail_sent_total"), 1.0);
}

/// With a master key, a queued mail's bodies are sealed at rest (its link token is in
/// them until it is sent); the sender and `mail list` open them.
#[tokio::test]
async fn with_a_master_key_queued_mail_is_sealed_at_rest() {
    let mut sink = SmtpSink::reserve();
    let url = sink.url();
    let key =
        latchkey_core::master_key::MasterKey::parse("Zt0e5r3Yv3b7a9o1mK8sQ2wE4rT6yU8iO0pA1sD3fG4=").unwrap();
    let s = TestServer::start_with(|c| {
        deliver_mail_to(c, &url);
        c.master_key = Some(key);
    })
    .await;
    ask_for_link(&s, "kim", "kim@example.com").await;
    eventually("the first attempt failed", || async {
        s.store().list_mail(None, 1).await.unwrap().first().is_some_and(|m| m.attempts >= 1)
    })
    .await;
    let stored = s.store().list_mail(None, 1).await.unwrap().remove(0);
    for body in [stored.text.as_deref().unwrap(), stored.html.as_deref().unwrap()] {
        assert!(body.starts_with("lkm1.") && !body.contains("lkv_"), "sealed: {body}");
    }
    let listed = s.service.list_mail(None, 1).await.unwrap().remove(0);
    assert!(listed.text.unwrap().contains("lkv_"), "mail list opens it");

    sink.launch(&SinkOptions::new()).await;
    s.clock.advance(Duration::from_secs(60));
    let mail = sink.wait_for(1, WAIT).await.remove(0);
    let link = mail.link().expect("a link in both parts");
    let token = link.rsplit_once("token=").unwrap().1;
    let r = s.post(&http_client(), "/auth/email/verify", json!({"token": token})).await;
    assert_eq!(r.status, 204, "{}", r.text);
}

#[tokio::test]
async fn a_permanent_refusal_ends_the_mail_failed() {
    let sink = SmtpSink::start_with(SinkOptions::new().reject_rcpt("cy@example.com")).await;
    let s = server_for(&sink).await;
    ask_for_link(&s, "cy", "cy@example.com").await;
    eventually("the mail is marked failed", || async { mail_list(&s, "failed").await.len() == 1 }).await;
    let failed = mail_list(&s, "failed").await.remove(0);
    assert!(failed["last_error"].as_str().unwrap().contains("550"), "{failed}");
    assert_eq!((failed["attempts"].as_i64(), &failed["text"]), (Some(1), &Value::Null), "{failed}");
    assert_eq!(metric(&s, "latchkey_mail_failed_total"), 1.0);
    assert_eq!(metric(&s, "latchkey_mail_retried_total"), 0.0);
    assert!(sink.messages().is_empty());
}

/// Two nodes on one PostgreSQL outbox, both sending (this always runs on PostgreSQL). The
/// mails fail once while the mail server is down, so that both senders then race for the
/// same due rows when it is back.
#[tokio::test]
async fn two_nodes_on_postgres_send_each_mail_exactly_once() {
    const MAILS: usize = 40;
    let mut sink = SmtpSink::reserve();
    let db = latchkey_testkit::fresh_pg_database().await;
    let url = sink.url();
    let a = TestServer::start_on(Some(&db), |c| deliver_mail_to(c, &url)).await;
    let b = TestServer::start_on(Some(&db), |c| deliver_mail_to(c, &url)).await;
    let now = a.clock.now();
    for i in 0..MAILS {
        let node = if i % 2 == 0 { &a } else { &b };
        let mail = NewMail {
            kind: "verify_email",
            user_id: None,
            recipient: format!("user{i}@example.com"),
            subject: "Verify your email address".into(),
            text: format!("mail {i}"),
            html: format!("<p>mail {i}</p>"),
            created_at: now,
            expires_at: Timestamp(now.0 + 86_400),
        };
        node.store().queue_mail(&mail).await.unwrap();
    }
    eventually("every mail failed once", || async {
        let pending = mail_list(&a, "pending").await;
        pending.len() == MAILS && pending.iter().all(|m| m["attempts"] == 1)
    })
    .await;

    sink.launch(&SinkOptions::new()).await;
    a.clock.advance(Duration::from_secs(60));
    b.clock.advance(Duration::from_secs(60));
    let mails = sink.wait_for(MAILS, WAIT).await;
    eventually("every mail is marked sent", || async { mail_list(&a, "sent").await.len() == MAILS }).await;
    let mails_now = sink.messages();
    assert_eq!(mails_now.len(), MAILS, "no duplicates (first seen {})", mails.len());
    let ids: BTreeSet<&str> = mails_now.iter().map(|m| m.header("Message-ID").unwrap()).collect();
    assert_eq!(ids.len(), MAILS, "distinct Message-IDs");
    let to: BTreeSet<&str> = mails_now.iter().map(|m| m.rcpt_tos[0].as_str()).collect();
    assert_eq!(to.len(), MAILS, "every recipient once");
    let sent = metric(&a, "latchkey_mail_sent_total") + metric(&b, "latchkey_mail_sent_total");
    assert_eq!(sent, MAILS as f64);
}
