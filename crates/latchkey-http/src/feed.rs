//! The revocation feed (SPEC 5.4), for resource servers authenticated as clients with the
//! scope `revocations:read`: `GET /revocations?after=SEQ` (a page) and
//! `GET /revocations/stream` (Server-Sent Events: the events still in force after the
//! resume point, then every new one as it is written; `id:` is the seq, `Last-Event-ID`
//! resumes, a comment every 15 s keeps proxies from closing an idle stream).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use latchkey_core::Latchkey;
use latchkey_core::feed::StreamSlot;
use latchkey_core::store::FeedEventRecord;
use latchkey_proto::ErrorCode;
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::client_auth::BasicClient;

#[derive(Deserialize)]
pub(crate) struct After {
    #[serde(default)]
    after: i64,
}

fn bad_after() -> ApiError {
    ApiError::Status(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidRequest,
        "after must be a non-negative integer.",
    )
}

pub(crate) async fn revocations(
    State(s): State<AppState>,
    BasicClient(client): BasicClient,
    after: Result<Query<After>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(After { after }) = after.map_err(|_| bad_after())?;
    if after < 0 {
        return Err(bad_after());
    }
    Ok(Json(s.service.revocations(&client, after).await?).into_response())
}

/// Where a stream is: what it has sent, what it still has to send.
struct Position {
    service: Arc<Latchkey>,
    live: broadcast::Receiver<FeedEventRecord>,
    closing: tokio::sync::watch::Receiver<bool>,
    last: i64,
    pending: VecDeque<FeedEventRecord>,
    is_caught_up: bool,
    /// Counts this stream against the client's cap while it is open.
    _slot: StreamSlot,
}

impl Position {
    /// The next event to send, or `None` to end the stream (the client reconnects with
    /// `Last-Event-ID` and loses nothing).
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(record) = self.pending.pop_front() {
                if record.seq <= self.last {
                    continue; // seen already (catch-up and live overlap)
                }
                self.last = record.seq;
                let data = serde_json::to_string(&record.event).ok()?;
                return Some((Ok(Event::default().id(record.seq.to_string()).data(data)), self));
            }
            if !self.is_caught_up {
                match self.service.feed_events_after(self.last).await {
                    Ok(page) if page.is_empty() => self.is_caught_up = true,
                    Ok(page) => self.pending.extend(page),
                    Err(e) => {
                        tracing::warn!(error = %e, "feed stream could not catch up; closing it");
                        return None;
                    }
                }
                continue;
            }
            let received = tokio::select! {
                received = self.live.recv() => received,
                _ = self.closing.wait_for(|is_closing| *is_closing) => return None,
            };
            match received {
                Ok(record) => self.pending.push_back(record),
                // Fell behind the hub: read the rest from the store.
                Err(broadcast::error::RecvError::Lagged(_)) => self.is_caught_up = false,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

pub(crate) async fn stream(
    State(s): State<AppState>,
    BasicClient(client): BasicClient,
    headers: HeaderMap,
    after: Result<Query<After>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let slot = s.service.open_feed_stream(&client)?;
    let Query(After { after }) = after.map_err(|_| bad_after())?;
    let start = match headers.get("last-event-id") {
        Some(v) => v.to_str().ok().and_then(|v| v.trim().parse::<i64>().ok()).ok_or_else(bad_after)?,
        None => after,
    };
    if start < 0 {
        return Err(bad_after());
    }
    // Subscribe before catching up, so nothing written in between is missed.
    let position = Position {
        live: s.service.feed_hub().subscribe(),
        closing: s.service.feed_hub().closing(),
        service: Arc::clone(&s.service),
        last: start,
        pending: VecDeque::new(),
        is_caught_up: false,
        _slot: slot,
    };
    let events = futures_util::stream::unfold(position, Position::next);
    let keep_alive = KeepAlive::new().interval(Duration::from_secs(15)).text("keep-alive");
    Ok(Sse::new(events).keep_alive(keep_alive).into_response())
}
