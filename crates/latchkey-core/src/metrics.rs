//! Operational counters and latency histograms, rendered as Prometheus text (SPEC 8), so
//! operators can tell races (grace hits) from attacks (reuse detections, throttling).
//! Plain atomics and a mutex-guarded map; no global registry.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Latency bucket bounds, in seconds.
const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Outcome labels of a login.
#[derive(Debug, Clone, Copy)]
pub enum LoginOutcome {
    /// Signed in.
    Success,
    /// Wrong username or password.
    Failure,
    /// Refused with 429.
    Throttled,
}

/// Outcome labels of a refresh.
#[derive(Debug, Clone, Copy)]
pub enum RefreshOutcome {
    /// Rotated.
    Rotated,
    /// A benign concurrent refresh inside the grace window.
    Grace,
    /// A retired token was replayed: the session was revoked.
    ReuseDetected,
    /// Refused (revoked, expired, unknown).
    Refused,
}

/// The server's metrics.
#[derive(Default)]
pub struct Metrics {
    logins: [AtomicU64; 3],
    refreshes: [AtomicU64; 4],
    registrations: AtomicU64,
    password_failures: AtomicU64,
    revocations: Mutex<BTreeMap<&'static str, u64>>,
    http: Mutex<BTreeMap<(String, String, u16), Histogram>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// Counts a login.
    pub fn login(&self, outcome: LoginOutcome) {
        if let Some(c) = self.logins.get(outcome as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a refresh.
    pub fn refresh(&self, outcome: RefreshOutcome) {
        if let Some(c) = self.refreshes.get(outcome as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a failed password check (login or password change), whatever was answered.
    pub fn password_failure(&self) {
        self.password_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a registration.
    pub fn registration(&self) {
        self.registrations.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts revoked sessions by reason.
    pub fn revocations(&self, reason: &'static str, n: usize) {
        if n > 0 {
            *lock(&self.revocations).entry(reason).or_default() += n as u64;
        }
    }

    /// Records one HTTP request.
    pub fn http_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut map = lock(&self.http);
        let h = map.entry((method.to_owned(), route.to_owned(), status)).or_default();
        for (bound, count) in BUCKETS.iter().zip(h.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.push_str(
            "# HELP latchkey_logins_total Login attempts by result.\n# TYPE latchkey_logins_total counter\n",
        );
        for (label, c) in ["success", "failure", "throttled"].iter().zip(&self.logins) {
            let _ = writeln!(out, "latchkey_logins_total{{result=\"{label}\"}} {}", load(c));
        }
        out.push_str("# HELP latchkey_login_failures_total Failed password checks (wrong username or password), including those that started throttling.\n# TYPE latchkey_login_failures_total counter\n");
        let _ = writeln!(out, "latchkey_login_failures_total {}", load(&self.password_failures));
        out.push_str("# HELP latchkey_login_throttled_total Logins refused with 429.\n# TYPE latchkey_login_throttled_total counter\n");
        let _ = writeln!(out, "latchkey_login_throttled_total {}", load(&self.logins[2]));
        out.push_str("# HELP latchkey_registrations_total Users registered over HTTP.\n# TYPE latchkey_registrations_total counter\n");
        let _ = writeln!(out, "latchkey_registrations_total {}", load(&self.registrations));
        out.push_str("# HELP latchkey_refreshes_total Refresh requests by result.\n# TYPE latchkey_refreshes_total counter\n");
        for (label, c) in ["rotated", "grace", "reuse_detected", "refused"].iter().zip(&self.refreshes) {
            let _ = writeln!(out, "latchkey_refreshes_total{{result=\"{label}\"}} {}", load(c));
        }
        out.push_str("# HELP latchkey_refresh_grace_hits_total Benign concurrent refreshes answered inside the grace window.\n# TYPE latchkey_refresh_grace_hits_total counter\n");
        let _ = writeln!(out, "latchkey_refresh_grace_hits_total {}", load(&self.refreshes[1]));
        out.push_str("# HELP latchkey_refresh_reuse_detections_total Retired refresh tokens replayed (sessions revoked).\n# TYPE latchkey_refresh_reuse_detections_total counter\n");
        let _ = writeln!(out, "latchkey_refresh_reuse_detections_total {}", load(&self.refreshes[2]));
        out.push_str("# HELP latchkey_revocations_total Sessions revoked by this node, by reason.\n# TYPE latchkey_revocations_total counter\n");
        for (reason, n) in lock(&self.revocations).iter() {
            let _ = writeln!(out, "latchkey_revocations_total{{reason=\"{reason}\"}} {n}");
        }
        out.push_str("# HELP latchkey_http_request_duration_seconds HTTP request latency.\n# TYPE latchkey_http_request_duration_seconds histogram\n");
        for ((method, route, status), h) in lock(&self.http).iter() {
            let labels = format!("method=\"{method}\",route=\"{}\",status=\"{status}\"", escape(route));
            for (bound, count) in BUCKETS.iter().zip(h.counts.iter()) {
                let _ = writeln!(
                    out,
                    "latchkey_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "latchkey_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "latchkey_http_request_duration_seconds_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "latchkey_http_request_duration_seconds_count{{{labels}}} {}", h.count);
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.login(LoginOutcome::Failure);
        m.refresh(RefreshOutcome::Grace);
        m.revocations("logged_out", 2);
        m.http_request("POST", "/auth/refresh", 200, 0.003);
        let text = m.render();
        assert!(text.contains("latchkey_logins_total{result=\"failure\"} 1"));
        assert!(text.contains("latchkey_refresh_grace_hits_total 1"));
        assert!(text.contains("latchkey_revocations_total{reason=\"logged_out\"} 2"));
        assert!(text.contains("route=\"/auth/refresh\",status=\"200\",le=\"0.005\"} 1"));
        assert!(text.contains("route=\"/auth/refresh\",status=\"200\",le=\"0.0025\"} 0"));
    }
}
