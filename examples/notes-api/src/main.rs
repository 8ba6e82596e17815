//! The notes-api binary: `notes-api --issuer URL [--listen ADDR] [--audience AUD] [--resource-url URL]
//! (--feed-client-id ID --feed-client-secret SECRET | --insecure-without-revocation)`
//! (also `NOTES_API_*` variables). It refuses to start without one of the two: an API that
//! does not follow the revocation feed accepts logged-out users' tokens until they expire.

use anyhow::Context;
use clap::Parser;

/// A small protected API built on latchkey-verify.
#[derive(Parser)]
#[command(name = "notes-api")]
// Exactly one of the two: the feed, or the insecure choice spelled out.
#[command(group(
    clap::ArgGroup::new("revocation").required(true).args(["feed_client_id", "insecure_without_revocation"])
))]
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
    /// The URL clients reach this API at, which their DPoP proofs name (default: `http://`
    /// and the listen address); set it behind a proxy or TLS.
    #[arg(long, env = "NOTES_API_RESOURCE_URL")]
    resource_url: Option<String>,
    /// Feed client id (a client with the scope revocations:read).
    #[arg(long, env = "NOTES_API_FEED_CLIENT_ID", requires = "feed_client_secret")]
    feed_client_id: Option<String>,
    /// Feed client secret.
    #[arg(
        long,
        env = "NOTES_API_FEED_CLIENT_SECRET",
        requires = "feed_client_id",
        conflicts_with = "insecure_without_revocation"
    )]
    feed_client_secret: Option<String>,
    /// Follow no revocation feed: logged-out, revoked and demoted users' tokens stay
    /// accepted until they expire (5 minutes by default). For trying notes-api out.
    #[arg(
        long,
        env = "NOTES_API_INSECURE_WITHOUT_REVOCATION",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    insecure_without_revocation: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    let mut builder = latchkey_verify::Verifier::builder(&args.issuer);
    if let Some(aud) = args.audience {
        builder = builder.audience(aud);
    }
    // Never the request's Host, which the client chooses: a proof made for another API
    // could be replayed here.
    builder = builder.resource_url(args.resource_url.unwrap_or_else(|| format!("http://{}", args.listen)));
    if let (Some(id), Some(secret)) = (args.feed_client_id, args.feed_client_secret) {
        builder = builder.feed_credentials(id, secret);
    }
    if args.insecure_without_revocation {
        builder = builder.insecure_without_revocation();
    }
    let verifier = builder.build().await.context("starting the token verifier")?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %args.listen, "notes-api listening");
    notes_api::serve(listener, notes_api::app(verifier)).await;
    Ok(())
}
