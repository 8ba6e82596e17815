//! The command line (SPEC 6). Every command takes `--database-url` anywhere on its command
//! line; commands that create something print one JSON object on stdout. [`run`] takes its
//! input and output as arguments so tests drive the real command paths in-process.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use latchkey_core::SystemClock;
use latchkey_core::store::DeliveryState;
use latchkey_proto::{Password, Username};
use serde_json::json;
use zeroize::Zeroizing;

use crate::config::{Config, Flags};
use crate::server::{MAINTENANCE_INTERVAL, Server, shutdown_signal, start_service};

/// Latchkey: an authentication and session server.
#[derive(Debug, Parser)]
#[command(name = "latchkey", version, about)]
pub struct Cli {
    /// Database URL (default sqlite://latchkey.db).
    #[arg(long, global = true, env = "LATCHKEY_DATABASE_URL")]
    database_url: Option<String>,
    /// TOML configuration file.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage registered clients (apps, and resource servers reading the feed).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Show recent security events.
    Events {
        /// How many, newest first.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show the outbox (mail waiting to be sent, and sent).
    #[command(subcommand)]
    Mail(MailCommand),
    /// Show back-channel logout deliveries (SPEC 13): tokens waiting for an app, and sent.
    #[command(subcommand)]
    LogoutDeliveries(LogoutDeliveriesCommand),
}

#[derive(Debug, Subcommand)]
enum LogoutDeliveriesCommand {
    /// List deliveries, newest first, one JSON object per line (never a token).
    List {
        /// pending, sent, failed, expired or all.
        #[arg(long, default_value = "all")]
        state: String,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

/// A `--state` of the listing commands: one state, or `None` for all.
fn delivery_state(state: &str) -> anyhow::Result<Option<DeliveryState>> {
    match state {
        "all" => Ok(None),
        other => DeliveryState::parse(other)
            .map(Some)
            .ok_or_else(|| anyhow::anyhow!("--state: expected pending, sent, failed, expired or all")),
    }
}

#[derive(Debug, Subcommand)]
enum MailCommand {
    /// List mail, newest first, one JSON object per line; `text` is the plain-text part
    /// (with its link) while the mail is still to be sent.
    List {
        /// pending, sent, failed, expired or all.
        #[arg(long, default_value = "pending")]
        state: String,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Listen address (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
    /// Issuer URL (default http:// + listen).
    #[arg(long)]
    issuer: Option<String>,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; prints {"sub","username"}.
    Add {
        /// Username.
        username: String,
        /// Read the password from one line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Comma-separated roles.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// An email address (SPEC 10), unverified unless --email-verified.
        #[arg(long)]
        email: Option<String>,
        /// Count the address as verified already.
        #[arg(long, requires = "email")]
        email_verified: bool,
    },
    /// Set a user's email address, or clear it; prints {"sub","username","email","email_verified"}.
    SetEmail {
        /// Username.
        username: String,
        /// The address (omit with --clear).
        #[arg(required_unless_present = "clear", conflicts_with = "clear")]
        email: Option<String>,
        /// Count the address as verified already.
        #[arg(long, conflicts_with = "clear")]
        verified: bool,
        /// Remove the address.
        #[arg(long)]
        clear: bool,
    },
    /// Replace a user's roles (publishes user_changed).
    SetRoles {
        /// Username.
        username: String,
        /// Comma-separated roles (empty for none).
        roles: String,
    },
    /// Set a user's password from standard input (revokes every session).
    SetPassword {
        /// Username.
        username: String,
        /// Read the password from one line of standard input (required).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user and revoke all their sessions.
    Disable {
        /// Username.
        username: String,
    },
    /// Revoke all of a user's sessions (reason revoked_by_admin).
    RevokeSessions {
        /// Username.
        username: String,
    },
    /// List users, one JSON object per line.
    List,
    /// A user's second factors (SPEC 11), for support desks.
    #[command(subcommand)]
    Mfa(UserMfaCommand),
}

#[derive(Debug, Subcommand)]
enum UserMfaCommand {
    /// List the user's factors, one JSON object per line (never their secrets).
    List {
        /// Username.
        username: String,
    },
    /// Remove every factor and recovery code and revoke every session; prints {"removed"}.
    Reset {
        /// Username.
        username: String,
    },
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Register a client; prints {"client_id", "client_secret"} (the secret only for
    /// confidential clients, and only now).
    Add {
        /// A name for people.
        #[arg(long)]
        name: String,
        /// An exact redirect URI (repeat for several).
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// A public client: no secret, PKCE only.
        #[arg(long)]
        public: bool,
        /// Comma-separated grant types (default authorization_code,refresh_token).
        #[arg(long, value_delimiter = ',')]
        grant_types: Vec<String>,
        /// Space-separated scopes (default "openid profile").
        #[arg(long)]
        scopes: Option<String>,
        /// An exact URI the app may send the browser to after RP-initiated logout (repeat
        /// for several).
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// Where the app receives back-channel logout tokens: https, or http on loopback.
        #[arg(long)]
        backchannel_logout_uri: Option<String>,
        /// The app needs `sid` in its logout tokens (Latchkey always sends it).
        #[arg(long)]
        backchannel_logout_session_required: bool,
        /// The app's authorization requests must be pushed first (POST /oauth/par).
        #[arg(long)]
        require_par: bool,
        /// A resource (RFC 8707) the app may ask tokens for: the tokens' `aud` (repeat for
        /// several).
        #[arg(long = "resource")]
        resources: Vec<String>,
        /// The app authenticates with private_key_jwt, its keys fetched from this URL
        /// (https, or http on loopback); it gets no secret.
        #[arg(long)]
        jwks_uri: Option<String>,
        /// The app authenticates with private_key_jwt with these keys (a JWK set, JSON); it
        /// gets no secret.
        #[arg(long)]
        jwks: Option<String>,
    },
    /// List clients, one JSON object per line (no secrets).
    List,
    /// An initial access token for one dynamic registration (`dynamic_registration =
    /// "token"`), valid 24 hours; prints {"registration_token","expires_at"}, shown once.
    RegistrationToken,
    /// Remove a client.
    Remove {
        /// The client's id (ids of older versions may start with `-`).
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// List signing keys, one JSON object per line.
    List,
    /// Create new signing keys; published now, signing after key_publish_ahead.
    Rotate,
    /// Encrypt every signing key stored unencrypted (or in an older sealed form) under
    /// LATCHKEY_MASTER_KEY: the step that moves an existing database to a master key.
    Seal,
}

/// An email address from the command line, refused with the reason (never the value).
fn parse_email(value: &str) -> anyhow::Result<latchkey_proto::EmailAddress> {
    latchkey_proto::EmailAddress::parse(value).map_err(|e| anyhow::anyhow!("{e}"))
}

fn read_password(stdin: &mut dyn BufRead) -> anyhow::Result<Password> {
    let mut line = Zeroizing::new(String::new());
    stdin.read_line(&mut line).context("reading the password from standard input")?;
    let trimmed = line.strip_suffix('\n').unwrap_or(&line);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    Ok(Password::new(trimmed.to_owned()))
}

fn roles(list: &str) -> Vec<String> {
    list.split(',').map(str::to_owned).collect()
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command reports; the binary prints it and exits 1.
pub async fn run(cli: Cli, stdin: &mut dyn BufRead, stdout: &mut dyn Write) -> anyhow::Result<()> {
    run_with_env(cli, &|k| std::env::var(k).ok(), stdin, stdout).await
}

/// As [`run`], with the environment given (for tests, which run in parallel in one
/// process and cannot set process-wide variables).
///
/// # Errors
/// As [`run`].
pub async fn run_with_env(
    cli: Cli,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn BufRead,
    stdout: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut flags = Flags { database_url: cli.database_url, ..Flags::default() };
    if let Command::Serve(args) = &cli.command {
        flags.listen.clone_from(&args.listen);
        flags.issuer.clone_from(&args.issuer);
    }
    let config = Config::load_with(cli.config.as_deref(), &flags, env)?;
    init_logging(&config.log, matches!(cli.command, Command::Serve(_)));
    let mut print = |v: serde_json::Value| writeln!(stdout, "{v}").context("writing to standard output");
    match cli.command {
        Command::Serve(_) => {
            let server = Server::bind(&config, Arc::new(SystemClock), MAINTENANCE_INTERVAL).await?;
            return server.run(shutdown_signal()).await;
        }
        // Before the service starts: with a master key set, the service refuses to load
        // the very plaintext keys this command is for.
        Command::Keys(KeysCommand::Seal) => {
            let Some(master) = &config.master_key else {
                bail!(
                    "keys seal needs LATCHKEY_MASTER_KEY (32 random bytes in base64: `openssl rand -base64 32`)"
                );
            };
            let sealed = seal_keys(&config, master).await?;
            return print(json!({"sealed": sealed}));
        }
        _ => {}
    }
    let app = start_service(&config, Arc::new(SystemClock)).await?;
    match cli.command {
        Command::Serve(_) => {}
        Command::User(cmd) => match cmd {
            UserCommand::Add { username, password_stdin, roles, email, email_verified } => {
                let username = Username::parse(&username).map_err(|e| anyhow::anyhow!("{e}"))?;
                let email = email.as_deref().map(parse_email).transpose()?.map(|e| (e, email_verified));
                let password = if password_stdin { Some(read_password(stdin)?) } else { None };
                let created = app.admin_add_user(username, password, &roles, email).await?;
                print(json!({"sub": created.sub, "username": created.username}))?;
            }
            UserCommand::SetEmail { username, email, verified, clear: _ } => {
                let email = email.as_deref().map(parse_email).transpose()?.map(|e| (e, verified));
                let user = app.admin_set_email(&username, email).await?;
                print(json!({
                    "sub": user.id, "username": user.username,
                    "email": user.email.as_ref().map(|e| &e.address),
                    "email_verified": user.email.as_ref().is_some_and(|e| e.verified_at.is_some()),
                }))?;
            }
            UserCommand::SetRoles { username, roles: list } => {
                app.admin_set_roles(&username, &roles(&list)).await?
            }
            UserCommand::SetPassword { username, password_stdin } => {
                if !password_stdin {
                    bail!("set-password needs --password-stdin");
                }
                app.admin_set_password(&username, &read_password(stdin)?).await?;
            }
            UserCommand::Disable { username } => app.admin_disable_user(&username).await?,
            UserCommand::Mfa(UserMfaCommand::List { username }) => {
                for f in app.admin_list_factors(&username).await? {
                    print(json!({
                        "id": f.id, "kind": f.kind, "name": f.name, "created_at": f.created_at.rfc3339(),
                        "confirmed": f.confirmed_at.is_some(),
                    }))?;
                }
            }
            UserCommand::Mfa(UserMfaCommand::Reset { username }) => {
                let removed = app.admin_reset_mfa(&username).await?;
                print(json!({"removed": removed}))?;
            }
            UserCommand::RevokeSessions { username } => {
                let n = app.admin_revoke_sessions(&username).await?;
                print(json!({"revoked": n}))?;
            }
            UserCommand::List => {
                for u in app.admin_list_users().await? {
                    print(json!({
                        "sub": u.id, "username": u.username, "roles": u.roles,
                        "status": u.status.as_str(), "authz_ver": u.authz_ver,
                        "created_at": u.created_at.rfc3339(),
                        "email": u.email.as_ref().map(|e| &e.address),
                        "email_verified": u.email.as_ref().is_some_and(|e| e.verified_at.is_some()),
                    }))?;
                }
            }
        },
        Command::Keys(cmd) => match cmd {
            KeysCommand::List => {
                for k in app.admin_list_keys().await? {
                    print(serde_json::to_value(k)?)?;
                }
            }
            KeysCommand::Rotate => {
                let kids = app.admin_rotate_keys().await?;
                print(json!({"created": kids}))?;
            }
            KeysCommand::Seal => {}
        },
        Command::Client(cmd) => match cmd {
            ClientCommand::Add {
                name,
                redirect_uris,
                public,
                grant_types,
                scopes,
                post_logout_redirect_uris,
                backchannel_logout_uri,
                backchannel_logout_session_required,
                require_par,
                resources,
                jwks_uri,
                jwks,
            } => {
                let new = latchkey_core::clients::NewClient {
                    name,
                    redirect_uris,
                    grant_types,
                    scopes: scopes.map(|s| vec![s]).unwrap_or_default(),
                    is_public: public,
                    post_logout_redirect_uris,
                    backchannel_logout_uri,
                    backchannel_logout_session_required,
                    require_par,
                    resources,
                    jwks,
                    jwks_uri,
                };
                let (client, secret) = app.admin_add_client(new).await?;
                let mut out = json!({"client_id": client.client_id});
                if let (Some(secret), Some(obj)) = (secret, out.as_object_mut()) {
                    obj.insert("client_secret".into(), json!(secret.expose_secret()));
                }
                print(out)?;
            }
            ClientCommand::RegistrationToken => {
                let (token, until) = app.admin_registration_token().await?;
                print(json!({"registration_token": token, "expires_at": until.rfc3339()}))?;
            }
            ClientCommand::List => {
                for c in app.admin_list_clients().await? {
                    print(json!({
                        "client_id": c.client_id, "name": c.name, "public": c.is_public(), "private_key_jwt": c.keys.is_some(),
                        "redirect_uris": c.redirect_uris, "grant_types": c.grant_types, "scopes": c.scopes.names().collect::<Vec<_>>(),
                        "post_logout_redirect_uris": c.post_logout_redirect_uris,
                        "backchannel_logout_uri": c.backchannel_logout.as_ref().map(|b| &b.uri),
                        "backchannel_logout_session_required": c.backchannel_logout.as_ref().is_some_and(|b| b.session_required),
                        "require_par": c.require_par,
                        "resources": c.resources,
                        "created_at": c.created_at.rfc3339(),
                    }))?;
                }
            }
            ClientCommand::Remove { client_id } => app.admin_remove_client(&client_id.into()).await?,
        },
        Command::Mail(MailCommand::List { state, limit }) => {
            for m in app.list_mail(delivery_state(&state)?, limit).await? {
                print(json!({
                    "id": m.id, "kind": m.kind, "to": m.recipient, "subject": m.subject,
                    "state": m.state.as_str(), "attempts": m.attempts,
                    "created_at": m.created_at.rfc3339(), "next_attempt_at": m.next_attempt_at.rfc3339(),
                    "sent_at": m.sent_at.map(|t| t.rfc3339()), "last_error": m.last_error, "text": m.text,
                }))?;
            }
        }
        Command::LogoutDeliveries(LogoutDeliveriesCommand::List { state, limit }) => {
            for d in app.store().list_logout_deliveries(delivery_state(&state)?, limit).await? {
                print(json!({
                    "id": d.id, "client_id": d.client_id, "uri": d.uri, "sub": d.user_id, "sid": d.session_id,
                    "state": d.state.as_str(), "attempts": d.attempts, "created_at": d.created_at.rfc3339(),
                    "next_attempt_at": d.next_attempt_at.rfc3339(), "sent_at": d.sent_at.map(|t| t.rfc3339()),
                    "last_error": d.last_error,
                }))?;
            }
        }
        Command::Events { limit } => {
            for e in app.store().list_security_events(limit).await? {
                print(json!({
                    "id": e.id, "at": e.at.rfc3339(), "kind": e.kind, "user_id": e.user_id,
                    "session_id": e.session_id, "ip": e.ip, "detail": e.detail,
                }))?;
            }
        }
    }
    Ok(())
}

/// Parses arguments and runs (for tests: `["latchkey", "user", "add", ...]`).
///
/// # Errors
/// Usage errors and command failures.
pub async fn run_args(args: &[&str], stdin: &mut dyn BufRead, stdout: &mut dyn Write) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(args)?;
    run(cli, stdin, stdout).await
}

/// As [`run_args`], with the environment given instead of the process's.
///
/// # Errors
/// Usage errors and command failures.
pub async fn run_args_with_env(
    args: &[&str],
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn BufRead,
    stdout: &mut dyn Write,
) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(args)?;
    run_with_env(cli, env, stdin, stdout).await
}

/// Seals the database's signing keys under `master` (`latchkey keys seal`).
async fn seal_keys(
    config: &Config,
    master: &latchkey_core::master_key::MasterKey,
) -> anyhow::Result<Vec<String>> {
    let store = latchkey_store::open_with(&config.database_url, config.database_pool_size)
        .await
        .context("opening the database")?;
    Ok(latchkey_core::keys::KeyRing::seal_stored_keys(store.as_ref(), master).await?)
}

/// Installs the log subscriber (once per process; later calls do nothing). `RUST_LOG`
/// overrides the `log` setting. Commands other than `serve` log warnings only, so their
/// standard output stays one JSON object per line.
fn init_logging(configured: &str, is_server: bool) {
    let default = if is_server { configured } else { "warn" };
    let directive = std::env::var("RUST_LOG").unwrap_or_else(|_| default.to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&directive)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// The binary's entry point.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdin = std::io::stdin();
    let mut stdin = stdin.lock();
    let mut stdout = std::io::stdout();
    match run(cli, &mut stdin, &mut stdout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
