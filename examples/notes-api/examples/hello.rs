//! A hello-world axum route, the baseline `bench/whoami.sh` measures notes-api's
//! `GET /whoami` against: `cargo run --release -p notes-api --example hello -- 127.0.0.1:8091`.

use anyhow::Context;
use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8091".to_owned());
    let listener =
        tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("binding {listen}"))?;
    let app = Router::new().route("/hello", get(|| async { "Hello, world!" }));
    axum::serve(listener, app).await?;
    Ok(())
}
