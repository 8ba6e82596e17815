//! Wiring and serving: opens the store, starts the domain service, binds the listener,
//! runs periodic maintenance (key rotation, reloading keys changed by the CLI or other
//! nodes) and the mail sender (when `smtp_url` is set), and shuts down gracefully.
//! `TestServer` uses this same builder.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use latchkey_core::outbox::{MailTransport, issuer_host};
use latchkey_core::{Clock, Latchkey};
use latchkey_http::{AppState, TrustedProxies, router};
use tokio::net::TcpListener;

use crate::config::{Config, MailConfig};
use crate::smtp::{SmtpMailer, SmtpSecurity};

/// How often maintenance runs by default: new signing keys written by another process are
/// served within this delay (SPEC 6 asks for 10 s).
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(5);

/// Opens the store and starts the domain service for a configuration.
///
/// # Errors
/// The database cannot be opened, or keys cannot be created or decrypted.
pub async fn start_service(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Latchkey>> {
    let store = latchkey_store::open_with(&config.database_url, config.database_pool_size)
        .await
        .with_context(|| format!("opening database {}", redact_userinfo(&config.database_url)))?;
    let app = Latchkey::start(store, clock, config.settings.clone(), config.master_key.clone())
        .await
        .context("starting the service")?;
    Ok(Arc::new(app))
}

/// The SMTP transport for `mail`, greeting the server as the issuer's host.
fn mailer(mail: &MailConfig, issuer: &str) -> anyhow::Result<Arc<dyn MailTransport>> {
    let url = &mail.smtp;
    if url.security() == SmtpSecurity::Plain && url.has_credentials() && !url.is_loopback() {
        tracing::warn!(
            smtp = %url,
            "smtp_url SENDS THE SMTP PASSWORD IN PLAIN TEXT to a host that is not loopback. \
             Use smtp+starttls:// or smtps://."
        );
    }
    let mailer = SmtpMailer::new(url, &mail.from, mail.ca_pem.as_deref(), issuer_host(issuer))
        .map_err(|e| anyhow::anyhow!("mail settings: {e}"))?;
    tracing::info!("mail delivery via {url}");
    Ok(Arc::new(mailer))
}

/// A database URL without its `user:password@` part, for messages.
fn redact_userinfo(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => {
            format!("{scheme}://[redacted]@{}", url.get(at + 1..).unwrap_or_default())
        }
        _ => url.to_owned(),
    }
}

/// A bound, not yet serving, server.
pub struct Server {
    service: Arc<Latchkey>,
    listener: TcpListener,
    state: AppState,
    maintenance_interval: Duration,
    mailer: Option<Arc<dyn MailTransport>>,
}

impl Server {
    /// Builds the server and binds its listener (port 0 picks a free port).
    ///
    /// # Errors
    /// Configuration, database, keys, or the address is taken.
    pub async fn bind(
        config: &Config,
        clock: Arc<dyn Clock>,
        maintenance_interval: Duration,
    ) -> anyhow::Result<Self> {
        if config.master_key.is_none() {
            if config.listen.ip().is_loopback() {
                tracing::info!(
                    "LATCHKEY_MASTER_KEY is not set: signing keys are stored unencrypted (fine on loopback)"
                );
            } else {
                tracing::warn!(
                    "LATCHKEY_MASTER_KEY IS NOT SET: private signing keys are stored UNENCRYPTED in the database. \
                     Anyone who reads the database can mint tokens. Set LATCHKEY_MASTER_KEY (or LATCHKEY_MASTER_KEY_FILE)."
                );
            }
        }
        let mailer = match &config.mail {
            Some(mail) => Some(mailer(mail, &config.settings.issuer)?),
            None => {
                tracing::info!("smtp_url is not set: mail stays in the outbox (`latchkey mail list`)");
                None
            }
        };
        let trusted_proxies = TrustedProxies::parse(&config.trusted_proxies)
            .map_err(|bad| anyhow::anyhow!("trusted_proxies: invalid entry {bad:?}"))?;
        let service = start_service(config, clock).await?;
        let listener =
            TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let state = AppState { service: Arc::clone(&service), trusted_proxies: Arc::new(trusted_proxies) };
        Ok(Self { service, listener, state, maintenance_interval, mailer })
    }

    /// The bound address.
    ///
    /// # Errors
    /// When the socket has no address.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The domain service.
    pub fn service(&self) -> &Arc<Latchkey> {
        &self.service
    }

    /// Serves until `shutdown` completes, then drains in-flight requests.
    ///
    /// # Errors
    /// When serving fails.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let app = Arc::clone(&self.service);
        let interval = self.maintenance_interval;
        let maintenance = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = app.maintain().await {
                    tracing::warn!(error = %e, "maintenance failed; will retry");
                }
            }
        });
        // The sender wakes when this node queues mail, and at least every second (mail queued
        // by other nodes or the CLI, retries coming due); tests tick faster.
        let sender = self.mailer.clone().map(|mailer| {
            let app = Arc::clone(&self.service);
            tokio::spawn(app.run_mail_sender(mailer, interval.min(Duration::from_secs(1))))
        });
        // Back-channel logout tokens: every node sends, whatever revoked the session. The
        // same client fetches private_key_jwt clients' key sets.
        let outbound = crate::outbound_http::OutboundHttp::new()?;
        self.service.use_jwks_fetcher(Arc::new(outbound.clone()));
        let logout_sender = {
            let app = Arc::clone(&self.service);
            tokio::spawn(app.run_logout_sender(Arc::new(outbound), interval.min(Duration::from_secs(1))))
        };
        let (stop_resets, resets_stop) = tokio::sync::oneshot::channel::<()>();
        let resets = tokio::spawn(Arc::clone(&self.service).run_reset_mailer(async {
            let _ = resets_stop.await;
        }));
        let app = Arc::clone(&self.service);
        let feed_hub = tokio::spawn(async move { app.run_feed_hub().await });
        let addr = self.local_addr()?;
        tracing::info!(%addr, issuer = %self.service.settings().issuer, "latchkey listening");
        let app = Arc::clone(&self.service);
        let shutdown = async move {
            shutdown.await;
            // Feed streams never end by themselves; graceful shutdown waits for them.
            app.feed_hub().close();
        };
        let result = serve(self.listener, router(self.state), shutdown).await;
        maintenance.abort();
        feed_hub.abort();
        // An interrupted POST is retried by whichever node claims it once its lease lapses.
        logout_sender.abort();
        // Forgot-password requests already answered `202` get their links before the end.
        let _ = stop_resets.send(());
        if tokio::time::timeout(RESET_DRAIN_TIMEOUT, resets).await.is_err() {
            tracing::warn!("shutting down with forgot-password requests still queued");
        }
        if let Some(sender) = sender {
            // An interrupted send is retried by whichever node claims the mail next, once
            // its lease lapses.
            sender.abort();
        }
        result
    }
}

/// How long a graceful shutdown waits for accepted forgot-password requests to get their
/// links (each is a few store operations; the queue holds 256).
const RESET_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to send a request head; also how long an idle keep-alive
/// connection is kept. Slow or silent clients (slowloris) are cut off after it.
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP/1.1 on `listener` until `shutdown` completes, then lets in-flight requests
/// finish. Each connection has [`REQUEST_HEAD_TIMEOUT`] to send each request head (the
/// router bounds the body the same way); a failed accept (out of file descriptors) is
/// logged and retried shortly instead of ending the server. HTTP/2 is left to the TLS
/// proxy in front (browsers speak it only over TLS).
async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt as _;

    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(REQUEST_HEAD_TIMEOUT);
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    // Every connection task holds a clone; when all are gone, every connection is done.
    let (alive_tx, mut alive) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(remote));
            router.clone().oneshot(req)
        });
        let builder = builder.clone();
        let mut closing = closing.clone();
        let alive = alive_tx.clone();
        tokio::spawn(async move {
            let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            tokio::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                () = async { let _ = closing.wait_for(|is_closing| *is_closing).await; } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(alive);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    drop(alive_tx);
    let _ = alive.recv().await;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
