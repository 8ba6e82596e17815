//! Real processes for the tests that need them: [`NodeProcess`] runs `latchkey serve` as its
//! own process (so a test can `kill -9` it), and [`PrivatePostgres`] runs a PostgreSQL
//! server of the test's own (so a test can stop and start it without disturbing the shared
//! one every other test uses).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A `latchkey serve` process on a free loopback port.
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// What the process wrote to stderr so far (its log), for failure messages.
    pub log: Arc<Mutex<String>>,
}

impl NodeProcess {
    /// Starts `bin serve` on `database_url` with the test issuer, the environment `env`
    /// added, and waits until it listens.
    ///
    /// # Panics
    /// When the process cannot start or does not listen within 60 s.
    pub async fn spawn(bin: &Path, database_url: &str, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(bin);
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--issuer",
                crate::ISSUER,
                "--database-url",
                database_url,
            ])
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start the latchkey process");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sink = Arc::clone(&log);
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("latchkey listening")
                    && let (Some(addr), Some(tx)) = (listen_addr(&line), tx.take())
                {
                    let _ = tx.send(addr);
                }
                let mut log = sink.lock().expect("log");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(addr)) => addr,
            _ => {
                let _ = child.start_kill();
                panic!("latchkey did not start listening:\n{}", log.lock().expect("log"));
            }
        };
        Self { child, base: format!("http://{addr}"), log }
    }

    /// An absolute URL for a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The process id (for reading its memory and open files under `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process is running")
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and waits for it to die.
    pub async fn kill_9(mut self) {
        self.child.kill().await.expect("kill -9");
    }
}

/// The `addr=` field of the server's "listening" log line.
fn listen_addr(line: &str) -> Option<String> {
    let rest = &line[line.find("addr=")? + "addr=".len()..];
    let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
    (!addr.is_empty()).then_some(addr)
}

/// A PostgreSQL server of the test's own: a fresh cluster (`initdb`, trust auth) in a
/// temporary directory, on a free port, that the test may stop and start. Run as root, the
/// server runs as the `postgres` user (PostgreSQL refuses root). Stopped when dropped.
#[derive(Debug)]
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// Creates and starts the cluster.
    ///
    /// # Panics
    /// When PostgreSQL's server programs are not installed (`scripts/test` installs nothing
    /// here: Debian's `postgresql` package puts them under `/usr/lib/postgresql/<v>/bin`) or
    /// the cluster cannot start.
    pub async fn start() -> Self {
        let bin = postgres_bin_dir().expect(
            "PostgreSQL's server programs (initdb, pg_ctl) were not found under /usr/lib/postgresql/*/bin \
             or by pg_config --bindir",
        );
        let as_postgres = is_root().await;
        let dir = tempfile::Builder::new().prefix("latchkey-pg-").tempdir().expect("temp dir");
        if as_postgres {
            run(Command::new("chown").arg("-R").arg("postgres:postgres").arg(dir.path())).await;
        }
        let port = free_port();
        let pg = Self { bin, dir, port, as_postgres };
        let data = pg.data_dir();
        let data = data.to_str().expect("utf-8 path");
        run(&mut pg
            .command("initdb", &["-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]))
        .await;
        pg.start_server().await;
        pg
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    ///
    /// # Panics
    /// When it does not start.
    pub async fn start_server(&self) {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let (data, log) = (data.to_str().expect("utf-8"), log.to_str().expect("utf-8"));
        run(&mut self.command("pg_ctl", &["-D", data, "-l", log, "-o", &options, "-w", "-t", "60", "start"]))
            .await;
    }

    /// Stops the server: `mode` is `fast` (clients disconnected, clean shutdown) or
    /// `immediate` (every process killed, recovery at the next start, as after a crash).
    ///
    /// # Panics
    /// When it does not stop.
    pub async fn stop_server(&self, mode: &str) {
        let data = self.data_dir();
        run(&mut self.command("pg_ctl", &["-D", data.to_str().expect("utf-8"), "-m", mode, "-w", "stop"]))
            .await;
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// One of PostgreSQL's programs, run as `postgres` when the test runs as root.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        Command::from(self.std_command(program, args))
    }

    /// [`Self::command`] for blocking use (in `drop`).
    fn std_command(&self, program: &str, args: &[&str]) -> std::process::Command {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            std::process::Command::new(program)
        };
        command.args(args).stdin(Stdio::null());
        command
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data_dir();
        let Some(data) = data.to_str() else { return };
        let _ = self
            .std_command("pg_ctl", &["-D", data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs a command to completion; panics with its output when it fails.
async fn run(command: &mut Command) {
    let out = command.output().await.expect("run a PostgreSQL program");
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where `initdb` and `pg_ctl` live: the newest `/usr/lib/postgresql/<v>/bin`, else
/// `pg_config --bindir`.
fn postgres_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let out = std::process::Command::new("pg_config").arg("--bindir").output().ok()?;
    let bin = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    bin.join("initdb").exists().then_some(bin)
}

async fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .await
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}
