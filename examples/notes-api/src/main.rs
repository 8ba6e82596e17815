//! The notes-api binary: `notes-api --issuer URL [--listen ADDR] [--audience AUD]
//! [--feed-client-id ID --feed-client-secret SECRET]` (also `NOTES_API_*` variables).

use anyhow::Context;
use clap::Parser;

/// A small protected API built on latchkey-verify.
#[derive(Parser)]
#[command(name = "notes-api")]
struct Args {
    /// The Latchkey issuer URL.
    #[arg(long, env = "NOTES_API_ISSUER")]
    issuer: String,
    /// Listen address.
    #[arg(long, env = "NOTES_API_LISTEN", default_value = "127.0.0.1:8090")]
    listen: String,
    /// Audience tokens must carry (default: the issuer).
    #[arg(long, env = "NOTES_API_AUDIENCE")]
    audience: Option<String>,
    /// Feed client id (a client with the scope revocations:read).
    #[arg(long, env = "NOTES_API_FEED_CLIENT_ID", requires = "feed_client_secret")]
    feed_client_id: Option<String>,
    /// Feed client secret.
    #[arg(long, env = "NOTES_API_FEED_CLIENT_SECRET", requires = "feed_client_id")]
    feed_client_secret: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    let mut builder = latchkey_verify::Verifier::builder(&args.issuer);
    if let Some(aud) = args.audience {
        builder = builder.audience(aud);
    }
    if let (Some(id), Some(secret)) = (args.feed_client_id, args.feed_client_secret) {
        builder = builder.feed_credentials(id, secret);
    }
    let verifier =
        builder.build().await.map_err(|e| anyhow::anyhow!(e)).context("fetching the issuer's keys")?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %args.listen, "notes-api listening");
    notes_api::serve(listener, notes_api::app(verifier)).await;
    Ok(())
}
