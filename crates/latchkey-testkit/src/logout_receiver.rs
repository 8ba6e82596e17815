//! A back-channel logout receiver for the tests (SPEC 13): an app's
//! `backchannel_logout_uri` on a loopback port, keeping every `logout_token` POSTed to it.
//! It can be reserved without listening (the app is down), started later on the same
//! port, stopped, and told to answer with another status.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;

#[derive(Default)]
struct Shared {
    tokens: Mutex<Vec<String>>,
    /// The status to answer with; 0 means 200.
    status: AtomicU16,
}

/// The receiver.
pub struct LogoutReceiver {
    port: u16,
    shared: Arc<Shared>,
    running: Option<tokio::task::JoinHandle<()>>,
}

async fn receive(State(shared): State<Arc<Shared>>, body: String) -> StatusCode {
    let token = body
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "logout_token")
        .map(|(_, v)| v.to_owned());
    let Some(token) = token else { return StatusCode::BAD_REQUEST };
    let status = shared.status.load(Ordering::Relaxed);
    if status == 0 {
        shared.tokens.lock().expect("receiver lock").push(token);
        StatusCode::OK
    } else {
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl LogoutReceiver {
    /// A free loopback port with nothing listening on it yet.
    ///
    /// # Panics
    /// When no port can be had.
    pub fn reserve() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        drop(listener);
        Self { port, shared: Arc::default(), running: None }
    }

    /// A receiver listening now.
    ///
    /// # Panics
    /// See [`LogoutReceiver::launch`].
    pub async fn start() -> Self {
        let mut r = Self::reserve();
        r.launch().await;
        r
    }

    /// Listens on the reserved port (tokens received before are kept).
    ///
    /// # Panics
    /// When the port is taken.
    pub async fn launch(&mut self) {
        assert!(self.running.is_none(), "the receiver is already running");
        let listener =
            tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await.expect("bind the receiver");
        let app = axum::Router::new().route("/bcl", post(receive)).with_state(Arc::clone(&self.shared));
        self.running = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    /// Stops listening.
    pub async fn stop(&mut self) {
        if let Some(task) = self.running.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Answers every POST with `status` from now on (200 and keeping the token when 0).
    pub fn answer_with(&self, status: u16) {
        self.shared.status.store(status, Ordering::Relaxed);
    }

    /// The `backchannel_logout_uri` to register.
    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}/bcl", self.port)
    }

    /// Every token accepted so far, in arrival order.
    ///
    /// # Panics
    /// When the lock is poisoned.
    pub fn tokens(&self) -> Vec<String> {
        self.shared.tokens.lock().expect("receiver lock").clone()
    }

    /// Waits until at least `n` tokens arrived; returns them all.
    ///
    /// # Panics
    /// When they do not arrive within `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let started = Instant::now();
        loop {
            let tokens = self.tokens();
            if tokens.len() >= n {
                return tokens;
            }
            assert!(started.elapsed() < timeout, "{} of {n} logout tokens arrived", tokens.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for LogoutReceiver {
    fn drop(&mut self) {
        if let Some(task) = self.running.take() {
            task.abort();
        }
    }
}
