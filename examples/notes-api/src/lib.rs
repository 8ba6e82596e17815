//! notes-api (SPEC 5.6): a protected API built only on `latchkey-verify`. Every request is
//! answered from memory: the token is verified locally and the revocation feed is followed
//! in the background, so no request reaches the Latchkey server or a database.
//!
//! Any valid token may read and write notes; `DELETE /notes/{id}` needs the role `manager`
//! and, when the token was issued to a third-party app rather than to Latchkey's own
//! clients, the scope `notes` as well (SPEC 13): a user's roles do not pass to every app
//! the user signs in to.

use std::sync::{Arc, Mutex};

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use latchkey_verify::Verifier;
use latchkey_verify::axum::AccessToken;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// Its id.
    pub id: u64,
    /// Its text.
    pub text: String,
    /// Who wrote it (`sub`).
    pub owner: String,
}

/// The API's state: the verifier and the notes.
#[derive(Clone)]
pub struct NotesState {
    verifier: Arc<Verifier>,
    notes: Arc<Mutex<(u64, Vec<Note>)>>,
}

impl FromRef<NotesState> for Arc<Verifier> {
    fn from_ref(state: &NotesState) -> Self {
        Arc::clone(&state.verifier)
    }
}

#[derive(Deserialize)]
struct NewNote {
    text: String,
}

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    (status, Json(json!({"error": code, "error_description": description}))).into_response()
}

async fn whoami(AccessToken(token): AccessToken) -> Json<serde_json::Value> {
    let c = &token.claims;
    Json(json!({"sub": c.sub, "sid": c.sid, "roles": c.roles, "scope": c.scope}))
}

async fn list(State(s): State<NotesState>, _token: AccessToken) -> Json<Vec<Note>> {
    Json(s.notes.lock().map(|n| n.1.clone()).unwrap_or_default())
}

async fn create(
    State(s): State<NotesState>,
    AccessToken(token): AccessToken,
    body: Result<Json<NewNote>, JsonRejection>,
) -> Response {
    let Ok(Json(new)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Expected a JSON body {\"text\": \"...\"}.",
        );
    };
    let Ok(mut notes) = s.notes.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "Notes are unavailable.");
    };
    notes.0 += 1;
    let note = Note { id: notes.0, text: new.text, owner: token.claims.sub };
    notes.1.push(note.clone());
    (StatusCode::CREATED, Json(note)).into_response()
}

/// `DELETE /notes/{id}`: the role `manager` of everyone, and the scope `notes` of apps'
/// tokens (`403 insufficient_scope` without either).
async fn remove(
    State(s): State<NotesState>,
    token: AccessToken,
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Response {
    // The scope first: an app without it is told which scope to ask the user for
    // (`scope="notes"` in the challenge), whatever roles its token carries.
    if let Err(rejection) = token.require_app_scope("notes").and_then(|()| token.require_role("manager")) {
        return rejection.into_response();
    }
    let Ok(Path(id)) = id else {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "The note id must be a number.");
    };
    let Ok(mut notes) = s.notes.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "Notes are unavailable.");
    };
    let before = notes.1.len();
    notes.1.retain(|n| n.id != id);
    if notes.1.len() == before {
        return error(StatusCode::NOT_FOUND, "not_found", "No such note.");
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The API's routes.
pub fn app(verifier: Arc<Verifier>) -> Router {
    let state = NotesState { verifier, notes: Arc::new(Mutex::new((0, Vec::new()))) };
    Router::new()
        .route("/whoami", get(whoami))
        .route("/notes", get(list).post(create))
        .route("/notes/{id}", delete(remove))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "No such endpoint.") })
        .with_state(state)
}

/// The largest request head the API reads (hyper's default is about 400 KiB): big enough
/// that even a megabyte of `Authorization` header reaches the verifier and gets the
/// SPEC 5.5 `401` rather than a bare `431`. The buffer only grows as a client sends.
pub const MAX_REQUEST_HEAD: usize = 2 * 1024 * 1024;

/// Serves `app` on `listener` (HTTP/1.1 and HTTP/2) until the process ends; a failed accept
/// (out of file descriptors) is logged and retried shortly.
pub async fn serve(listener: tokio::net::TcpListener, app: Router) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    // A client has 10 s to send each request head (idle keep-alive connections close then).
    builder
        .http1()
        .max_buf_size(MAX_REQUEST_HEAD)
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
