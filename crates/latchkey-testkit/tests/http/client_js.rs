//! Runs the JavaScript client's tests (`clients/js/test`, `node --test`) against the real
//! server and notes-api started here, with a small admin endpoint for what only an
//! administrator can do (`user set-roles`, through the same domain call as the CLI).
//! `npm test` in `clients/js` (`test-support/run.js`) starts the same three from the built
//! binaries when these variables are unset: a change to what is set up here belongs there too.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};

use crate::TestServer;
use crate::notes::notes_api_with;

#[derive(serde::Deserialize)]
struct SetRoles {
    user: String,
    roles: String,
}

async fn set_roles(State(s): State<Arc<TestServer>>, Query(q): Query<SetRoles>) -> axum::http::StatusCode {
    let roles: Vec<String> = q.roles.split(',').map(str::to_owned).collect();
    match s.service.admin_set_roles(&q.user, &roles).await {
        Ok(_) => axum::http::StatusCode::OK,
        Err(_) => axum::http::StatusCode::BAD_REQUEST,
    }
}

#[tokio::test]
async fn node_tests_pass() {
    let s = Arc::new(TestServer::start().await);
    let notes = notes_api_with(&s, |b| b.poll_every(Duration::from_millis(100))).await;
    let admin =
        axum::Router::new().route("/set-roles", axum::routing::post(set_roles)).with_state(Arc::clone(&s));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_url = format!("http://{}", listener.local_addr().unwrap());
    let _admin = tokio::spawn(async move {
        let _ = axum::serve(listener, admin).await;
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/js");
    let out = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec", "test/"])
        .current_dir(&dir)
        .env("LATCHKEY_URL", &s.base)
        .env("NOTES_URL", &notes.base)
        .env("ADMIN_URL", &admin_url)
        .output()
        .await
        .expect("Node.js 20 or newer must be installed");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{report}");
    assert!(out.status.success(), "node --test failed:\n{report}");
    assert!(report.contains("pass 16") && report.contains("fail 0"), "every JS test ran:\n{report}");
}
