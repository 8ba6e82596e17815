//! A real SMTP server for the mail tests: [`SmtpSink`] runs `smtp/sink.py` (aiosmtpd, under
//! `/usr/bin/python3` or `LATCHKEY_TEST_PYTHON`) on a free loopback port and hands back what
//! it received as [`ReceivedMail`], already parsed by Python's email package, so the tests
//! need no MIME parser. [`test_ca`] makes a throwaway CA and a certificate for `127.0.0.1`
//! and `localhost` with `openssl`, for the STARTTLS and SMTPS tests.
//!
//! This is test support and must not be used by the server: it panics on every failure, and
//! [`SmtpSink::wait_for`] polls in real time (delivery happens in another process, so there
//! is no clock to advance). Each sink has its own directory and port; nothing is shared.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// The sink's script, included at build time rather than read from the source tree when a
/// test runs; [`SmtpSink`] writes it into its own directory.
const SINK_PY: &str = include_str!("../smtp/sink.py");

/// How long a sink may take to print `listening` (a loaded 2-core CI machine is slow to
/// start Python).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The Python interpreter that runs the sink: `LATCHKEY_TEST_PYTHON`, else
/// `/usr/bin/python3`. Never a bare `python3`: a pyenv shim first on `PATH` does not see
/// Debian's `python3-aiosmtpd`.
pub fn python() -> String {
    std::env::var("LATCHKEY_TEST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".to_owned())
}

/// How a sink behaves; the default is plain SMTP, no AUTH, every message accepted.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    auth: Option<(String, String)>,
    starttls: Option<(PathBuf, PathBuf)>,
    smtps: Option<(PathBuf, PathBuf)>,
    tempfail: u32,
    reject_rcpt: Option<String>,
}

impl SinkOptions {
    /// Plain SMTP, no AUTH, every message accepted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires AUTH (PLAIN or LOGIN) with these credentials; over TLS only when TLS is on.
    pub fn auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Offers STARTTLS with this certificate chain and key, and requires it before `MAIL`.
    pub fn starttls(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        self.starttls = Some((cert.as_ref().to_owned(), key.as_ref().to_owned()));
        self
    }

    /// Speaks TLS from the first byte (SMTPS) with this certificate chain and key.
    pub fn smtps(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        self.smtps = Some((cert.as_ref().to_owned(), key.as_ref().to_owned()));
        self
    }

    /// Answers `451 4.3.0` to the first `n` `DATA` commands (a temporary failure).
    pub fn tempfail(mut self, n: u32) -> Self {
        self.tempfail = n;
        self
    }

    /// Answers `550 5.1.1` to `RCPT TO` for this address (a permanent failure).
    pub fn reject_rcpt(mut self, address: &str) -> Self {
        self.reject_rcpt = Some(address.to_owned());
        self
    }

    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some((user, password)) = &self.auth {
            args.extend(["--user".to_owned(), user.clone(), "--password".to_owned(), password.clone()]);
        }
        for (flag, pair) in [("--starttls", &self.starttls), ("--smtps", &self.smtps)] {
            if let Some((cert, key)) = pair {
                args.extend([flag.to_owned(), path_arg(cert), path_arg(key)]);
            }
        }
        if self.tempfail > 0 {
            args.extend(["--tempfail".to_owned(), self.tempfail.to_string()]);
        }
        if let Some(address) = &self.reject_rcpt {
            args.extend(["--reject-rcpt".to_owned(), address.clone()]);
        }
        args
    }
}

fn path_arg(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_owned()
}

/// The running sink process. Its stdin is held open: the script exits when it closes, so
/// even a test process killed outright leaves no sink behind.
#[derive(Debug)]
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// A test SMTP server on `127.0.0.1` with a directory of its own. Dropping it kills the
/// process and deletes the directory.
#[derive(Debug)]
pub struct SmtpSink {
    port: u16,
    dir: tempfile::TempDir,
    running: Option<Running>,
    log: Arc<Mutex<String>>,
}

impl SmtpSink {
    /// A free loopback port with nothing listening on it (yet): for the tests where the mail
    /// server is down. [`SmtpSink::launch`] can start the sink on this port later.
    ///
    /// # Panics
    /// When no port or temporary directory can be had.
    pub fn reserve() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        drop(listener);
        let dir = tempfile::Builder::new().prefix("latchkey-smtp-").tempdir().expect("temp dir");
        std::fs::write(dir.path().join("sink.py"), SINK_PY).expect("write sink.py");
        Self { port, dir, running: None, log: Arc::default() }
    }

    /// Starts a plain sink that accepts everything.
    ///
    /// # Panics
    /// See [`SmtpSink::launch`].
    pub async fn start() -> Self {
        Self::start_with(SinkOptions::new()).await
    }

    /// Starts a sink with these options.
    ///
    /// # Panics
    /// See [`SmtpSink::launch`].
    pub async fn start_with(options: SinkOptions) -> Self {
        let mut sink = Self::reserve();
        sink.launch(&options).await;
        sink
    }

    /// Starts the sink on its port (after [`SmtpSink::reserve`] or [`SmtpSink::stop`]) and
    /// waits until it accepts connections. Messages already received are kept; new ones are
    /// numbered after them.
    ///
    /// # Panics
    /// When the sink is already running, the interpreter is missing, aiosmtpd is not
    /// installed, or the sink does not listen within 20 s.
    pub async fn launch(&mut self, options: &SinkOptions) {
        assert!(self.running.is_none(), "the SMTP sink is already running");
        let python = python();
        let mut child = Command::new(&python)
            .arg("-W")
            .arg("ignore")
            .arg(self.dir.path().join("sink.py"))
            .args(["--port", &self.port.to_string(), "--dir"])
            .arg(self.mail_dir())
            .args(options.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {python} for the SMTP sink ({e}); set LATCHKEY_TEST_PYTHON to a \
                     Python 3 that has aiosmtpd (Debian: apt-get install python3-aiosmtpd \
                     (scripts/test does))"
                )
            });
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::clone(&self.log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = log.lock().expect("log");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim() == "listening" {
                    return true;
                }
            }
            false
        })
        .await;
        if ready != Ok(true) {
            let _ = child.kill().await;
            // Give the stderr reader a moment to collect the traceback after the exit.
            let deadline = Instant::now() + Duration::from_secs(2);
            while self.log.lock().expect("log").is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let log = self.log.lock().expect("log").clone();
            if log.contains("No module named 'aiosmtpd'") {
                panic!(
                    "{python} cannot import aiosmtpd, which the mail tests' SMTP server needs. \
                     Debian: apt-get install python3-aiosmtpd (scripts/test does), or set \
                     LATCHKEY_TEST_PYTHON to a Python 3 that has it."
                );
            }
            panic!("the SMTP sink did not start listening on port {}:\n{log}", self.port);
        }
        self.running = Some(Running { child, stdin });
    }

    /// Stops the sink (it closes its listener and exits) and waits for it; the port stays
    /// reserved and the messages stay readable. Does nothing when it is not running.
    ///
    /// # Panics
    /// When the process cannot be waited for.
    pub async fn stop(&mut self) {
        let Some(mut running) = self.running.take() else { return };
        drop(running.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), running.child.wait()).await.is_err() {
            running.child.kill().await.expect("kill the SMTP sink");
        }
    }

    /// Kills the sink with SIGKILL (no goodbye to open connections) and waits for it.
    ///
    /// # Panics
    /// When the process cannot be killed.
    pub async fn kill(&mut self) {
        if let Some(mut running) = self.running.take() {
            running.child.kill().await.expect("kill the SMTP sink");
        }
    }

    /// Whether the sink process is running.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The port, listening or not.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:PORT` (change the scheme for STARTTLS or SMTPS, and add credentials
    /// with [`SmtpSink::url_with`]).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// `SCHEME://USER:PASSWORD@HOST:PORT`, with user and password percent-encoded.
    pub fn url_with(&self, scheme: &str, host: &str, user: &str, password: &str) -> String {
        format!("{scheme}://{}:{}@{host}:{}", percent_encode(user), percent_encode(password), self.port)
    }

    /// What the sink wrote to stderr so far (Python tracebacks), for failure messages.
    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    fn mail_dir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    /// Every message received so far, in the order received.
    ///
    /// # Panics
    /// When a message file cannot be read or parsed.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        let Ok(entries) = std::fs::read_dir(self.mail_dir()) else { return Vec::new() };
        let mut names: Vec<PathBuf> = entries
            .map(|entry| entry.expect("read the mail directory").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .filter(|path| !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        names.sort();
        names.iter().map(|path| ReceivedMail::read(path)).collect()
    }

    /// Waits until at least `n` messages have arrived and returns them all; polls every
    /// 50 ms in real time.
    ///
    /// # Panics
    /// When fewer than `n` arrive within `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the SMTP sink received {} of {n} messages within {timeout:?}; sink log:\n{}",
                    messages.len(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One message as the sink received and parsed it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`).
    pub mail_from: String,
    /// The envelope recipients (`RCPT TO`) the sink accepted.
    pub rcpt_tos: Vec<String>,
    /// The AUTH login used, if any.
    pub auth: Option<String>,
    /// Whether the message came over TLS (STARTTLS or SMTPS).
    pub tls: bool,
    /// Every header, decoded, in order.
    pub headers: Vec<(String, String)>,
    /// The top-level content type, e.g. `multipart/alternative`.
    pub content_type: String,
    /// The decoded `text/plain` part, if any.
    pub text: Option<String>,
    /// The decoded `text/html` part, if any.
    pub html: Option<String>,
    /// The message bytes as received.
    pub raw: Vec<u8>,
}

impl ReceivedMail {
    fn read(json_path: &Path) -> Self {
        let json = std::fs::read(json_path).expect("read a message's .json");
        let v: Value = serde_json::from_slice(&json).expect("parse a message's .json");
        let string = |key: &str| v[key].as_str().map(str::to_owned);
        let headers = v["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .map(|pair| {
                let name = pair[0].as_str().expect("header name");
                (name.to_owned(), pair[1].as_str().expect("header value").to_owned())
            })
            .collect();
        Self {
            mail_from: string("mail_from").expect("mail_from"),
            rcpt_tos: v["rcpt_tos"]
                .as_array()
                .expect("rcpt_tos")
                .iter()
                .map(|r| r.as_str().expect("recipient").to_owned())
                .collect(),
            auth: string("auth"),
            tls: v["tls"].as_bool().expect("tls"),
            headers,
            content_type: string("content_type").expect("content_type"),
            text: string("text"),
            html: string("html"),
            raw: std::fs::read(json_path.with_extension("eml")).expect("read a message's .eml"),
        }
    }

    /// The first header of this name (compared case-insensitively), decoded.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The link with a link token (`http…?token=lkv_…` or `lkp_…`, 43 base64url characters)
    /// in the text part, or `None` when the text part has none.
    ///
    /// # Panics
    /// When the text part has a link and the HTML part does not have the same one.
    pub fn link(&self) -> Option<String> {
        let link = find_link(self.text.as_deref()?)?;
        let html = self.html.as_deref().unwrap_or_default();
        assert!(html.contains(&link), "the HTML part does not carry the text part's link {link}:\n{html}");
        Some(link)
    }
}

/// Finds `http…?token=lk[vp]_` followed by exactly 43 base64url characters.
fn find_link(text: &str) -> Option<String> {
    const MARK: &str = "?token=lk";
    const TOKEN_LEN: usize = 43;
    let is_b64url = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let mut from = 0;
    while let Some(found) = text[from..].find(MARK) {
        let mark = from + found;
        from = mark + MARK.len();
        let rest = &text.as_bytes()[from..];
        let token_ok = rest.len() >= 2 + TOKEN_LEN
            && matches!(rest[0], b'v' | b'p')
            && rest[1] == b'_'
            && rest[2..2 + TOKEN_LEN].iter().all(|&c| is_b64url(c))
            && !rest.get(2 + TOKEN_LEN).is_some_and(|&c| is_b64url(c));
        let Some(start) = text[..mark].rfind("http") else { continue };
        let url_ok = text[start..mark].bytes().all(|c| c.is_ascii_graphic() && !b"<>\"'".contains(&c));
        if token_ok && url_ok {
            return Some(text[start..from + 2 + TOKEN_LEN].to_owned());
        }
    }
    None
}

/// A throwaway certificate authority and a server certificate it signed for `localhost` and
/// `127.0.0.1` (P-256, valid for two days), made with `openssl`. The files live as long as
/// this value.
#[derive(Debug)]
pub struct TestCa {
    /// Holds the files.
    pub dir: tempfile::TempDir,
    /// The CA certificate (PEM): what a client must trust.
    pub ca_pem: PathBuf,
    /// The server certificate (PEM).
    pub cert_pem: PathBuf,
    /// The server certificate's private key (PEM).
    pub key_pem: PathBuf,
}

impl TestCa {
    /// The CA certificate's PEM bytes.
    ///
    /// # Panics
    /// When the file cannot be read.
    pub fn ca_pem_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.ca_pem).expect("read ca.pem")
    }
}

/// Makes a fresh [`TestCa`]. A leaf signed by a separate CA (rather than one self-signed
/// certificate) because rustls refuses a CA certificate used as the server's own.
///
/// # Panics
/// When `openssl` is missing or fails.
pub fn test_ca() -> TestCa {
    let dir = tempfile::Builder::new().prefix("latchkey-ca-").tempdir().expect("temp dir");
    let p = |name: &str| dir.path().join(name);
    std::fs::write(
        p("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write leaf.ext");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        dir.path(),
        &[
            &["req", "-x509"],
            &ec[..],
            &["-keyout", "ca.key", "-out", "ca.pem"],
            &["-days", "2", "-subj", "/CN=Latchkey test CA"],
        ],
    );
    openssl(
        dir.path(),
        &[&["req"], &ec[..], &["-keyout", "key.pem", "-out", "leaf.csr"], &["-subj", "/CN=localhost"]],
    );
    openssl(
        dir.path(),
        &[
            &["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key"],
            &["-CAcreateserial", "-days", "2", "-extfile", "leaf.ext", "-out", "cert.pem"],
        ],
    );
    TestCa { ca_pem: p("ca.pem"), cert_pem: p("cert.pem"), key_pem: p("key.pem"), dir }
}

fn openssl(dir: &Path, args: &[&[&str]]) {
    let args: Vec<&str> = args.concat();
    let out = std::process::Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}); Debian: apt-get install openssl"));
    assert!(
        out.status.success(),
        "openssl {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::find_link;

    #[test]
    fn find_link_takes_exactly_43_characters_after_the_prefix() {
        let token = "A".repeat(43);
        let text = format!("Open http://127.0.0.1:8080/verify-email?token=lkv_{token} now.");
        assert_eq!(
            find_link(&text).as_deref(),
            Some(format!("http://127.0.0.1:8080/verify-email?token=lkv_{token}").as_str())
        );
        assert_eq!(find_link(&format!("http://x/r?token=lkp_{token}A")), None, "44 characters");
        assert_eq!(find_link(&format!("http://x/r?token=lkx_{token}")), None, "unknown prefix");
        assert_eq!(find_link(&format!("?token=lkp_{token}")), None, "no URL");
    }
}
