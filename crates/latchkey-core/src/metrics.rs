//! Operational counters and latency histograms, rendered as Prometheus text (SPEC 8), so
//! operators can tell races (grace hits) from attacks (reuse detections, throttling).
//!
//! The Prometheus project's `prometheus-client` crate keeps the values and writes the
//! exposition; this module only names the metrics and says when they move. The registry
//! lives in the [`Metrics`] value the service owns: there is no global registry. It must
//! not create a label value from request data that is not bounded (the HTTP layer passes
//! route templates and known methods only), since every label value is a series kept for
//! the life of the process.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::risk::RiskAction;

/// The `Content-Type` of [`Metrics::render`]: the Prometheus text exposition format 0.0.4,
/// which every Prometheus-compatible scraper accepts.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Latency bucket bounds, in seconds.
const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

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

impl LoginOutcome {
    const ALL: [Self; 3] = [Self::Success, Self::Failure, Self::Throttled];

    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Throttled => "throttled",
        }
    }
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
    /// A DPoP-bound session's token came with another key: theft, the session was revoked.
    DpopKeyMismatch,
    /// A DPoP-bound session's token came without a proof: the session was revoked.
    DpopProofMissing,
}

impl RefreshOutcome {
    const ALL: [Self; 6] = [
        Self::Rotated,
        Self::Grace,
        Self::ReuseDetected,
        Self::Refused,
        Self::DpopKeyMismatch,
        Self::DpopProofMissing,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Rotated => "rotated",
            Self::Grace => "grace",
            Self::ReuseDetected => "reuse_detected",
            Self::Refused => "refused",
            Self::DpopKeyMismatch => "dpop_key_mismatch",
            Self::DpopProofMissing => "dpop_proof_missing",
        }
    }
}

/// The `result` label of logins and refreshes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The `reason` label of revocations (an `error_reason`, a closed set).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The `action` label of risk decisions.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

/// The labels of an HTTP request: the HTTP layer bounds `method` to the standard methods
/// and `route` to the router's templates.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    /// Indexed by [`LoginOutcome`]; each is also a series of `latchkey_logins_total`.
    logins: [Counter; 3],
    /// Indexed by [`RefreshOutcome`]; each is also a series of `latchkey_refreshes_total`.
    refreshes: [Counter; 6],
    /// Every theft caught at refresh, whichever way (`latchkey_refresh_reuse_detections`).
    reuse_detections: Counter,
    registrations: Counter,
    password_failures: Counter,
    revocations: Family<ReasonLabel, Counter>,
    risk_actions: Family<ActionLabel, Counter>,
    mail_queued: Counter,
    mail_sent: Counter,
    mail_failed: Counter,
    mail_retried: Counter,
    mail_pending: Gauge,
    logout_sent: Counter,
    logout_retried: Counter,
    logout_failed: Counter,
    logout_pending: Gauge,
    logout_oldest_age: Gauge,
    http: Family<HttpLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("latchkey");
        // Every outcome is created up front, so a scrape shows zeros rather than nothing.
        // A counter's clone shares its value: the per-outcome totals below are the same
        // counters as the labelled series, not copies kept in step.
        let logins_by_result = Family::<ResultLabel, Counter>::default();
        let logins = LoginOutcome::ALL
            .map(|o| logins_by_result.get_or_create_owned(&ResultLabel { result: o.label() }));
        let refreshes_by_result = Family::<ResultLabel, Counter>::default();
        let refreshes = RefreshOutcome::ALL
            .map(|o| refreshes_by_result.get_or_create_owned(&ResultLabel { result: o.label() }));
        let [_, _, throttled] = logins.clone();
        let [_, grace, ..] = refreshes.clone();
        let reuse_detections = Counter::default();
        let registrations = Counter::default();
        let password_failures = Counter::default();
        let revocations = Family::<ReasonLabel, Counter>::default();
        let risk_actions = Family::<ActionLabel, Counter>::default();
        for action in [RiskAction::Shorten, RiskAction::StepUp, RiskAction::Revoke] {
            let _ = risk_actions.get_or_create(&ActionLabel { action: action.as_str() });
        }
        let mail_queued = Counter::default();
        let mail_sent = Counter::default();
        let mail_failed = Counter::default();
        let mail_retried = Counter::default();
        let mail_pending = Gauge::default();
        let logout_sent = Counter::default();
        let logout_retried = Counter::default();
        let logout_failed = Counter::default();
        let logout_pending = Gauge::default();
        let logout_oldest_age = Gauge::default();
        let http = Family::<HttpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );

        // Counters are registered without `_total`: the encoder appends it.
        registry.register("logins", "Login attempts by result", logins_by_result);
        registry.register(
            "login_failures",
            "Failed password checks (wrong username or password), including those that started throttling",
            password_failures.clone(),
        );
        registry.register("login_throttled", "Logins refused with 429", throttled);
        registry.register("registrations", "Users registered over HTTP", registrations.clone());
        registry.register("refreshes", "Refresh requests by result", refreshes_by_result);
        registry.register(
            "refresh_grace_hits",
            "Benign concurrent refreshes answered inside the grace window",
            grace,
        );
        registry.register(
            "refresh_reuse_detections",
            "Stolen refresh tokens caught (sessions revoked): a retired token replayed, or a DPoP-bound session's token without its key",
            reuse_detections.clone(),
        );
        registry.register("revocations", "Sessions revoked by this node, by reason", revocations.clone());
        registry.register(
            "refresh_risk_actions",
            "Refreshes that risk did not simply allow, by action (shorten, step_up, revoke)",
            risk_actions.clone(),
        );
        registry.register("mail_queued", "Mails written to the outbox by this node", mail_queued.clone());
        registry.register("mail_sent", "Mails the mail server accepted from this node", mail_sent.clone());
        registry.register(
            "mail_failed",
            "Mails given up by this node: refused for good, or expired unsent",
            mail_failed.clone(),
        );
        registry.register(
            "mail_retried",
            "Transient mail delivery failures on this node (each is retried later)",
            mail_retried.clone(),
        );
        registry.register(
            "mail_outbox_pending",
            "Mails waiting in the outbox (all nodes)",
            mail_pending.clone(),
        );
        registry.register(
            "backchannel_logout_sent",
            "Back-channel logout tokens an app accepted from this node",
            logout_sent.clone(),
        );
        registry.register(
            "backchannel_logout_retried",
            "Failed back-channel logout deliveries on this node that will be retried",
            logout_retried.clone(),
        );
        registry.register(
            "backchannel_logout_failed",
            "Back-channel logout tokens given up by this node: refused for good, or undelivered for 25 hours",
            logout_failed.clone(),
        );
        registry.register(
            "backchannel_logout_pending",
            "Back-channel logout tokens waiting to be delivered (all nodes)",
            logout_pending.clone(),
        );
        registry.register_with_unit(
            "backchannel_logout_oldest_pending_age",
            "How long the oldest waiting back-channel logout token has waited (all nodes)",
            Unit::Seconds,
            logout_oldest_age.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "HTTP request latency",
            Unit::Seconds,
            http.clone(),
        );
        Self {
            registry,
            logins,
            refreshes,
            reuse_detections,
            registrations,
            password_failures,
            revocations,
            risk_actions,
            mail_queued,
            mail_sent,
            mail_failed,
            mail_retried,
            mail_pending,
            logout_sent,
            logout_retried,
            logout_failed,
            logout_pending,
            logout_oldest_age,
            http,
        }
    }
}

impl Metrics {
    /// Counts a login.
    pub fn login(&self, outcome: LoginOutcome) {
        if let Some(c) = self.logins.get(outcome as usize) {
            c.inc();
        }
    }

    /// Counts a refresh.
    pub fn refresh(&self, outcome: RefreshOutcome) {
        if let Some(c) = self.refreshes.get(outcome as usize) {
            c.inc();
        }
        if matches!(
            outcome,
            RefreshOutcome::ReuseDetected
                | RefreshOutcome::DpopKeyMismatch
                | RefreshOutcome::DpopProofMissing
        ) {
            self.reuse_detections.inc();
        }
    }

    /// Counts a failed password check (login or password change), whatever was answered.
    pub fn password_failure(&self) {
        self.password_failures.inc();
    }

    /// Counts a mail written to the outbox.
    pub fn mail_queued(&self) {
        self.mail_queued.inc();
    }

    /// Counts a mail the mail server accepted.
    pub fn mail_sent(&self) {
        self.mail_sent.inc();
    }

    /// Counts mails given up (refused for good, or expired unsent).
    pub fn mail_failed(&self, n: u64) {
        self.mail_failed.inc_by(n);
    }

    /// Counts a transient delivery failure.
    pub fn mail_retried(&self) {
        self.mail_retried.inc();
    }

    /// Sets how many mails wait in the outbox.
    pub fn set_mail_pending(&self, n: i64) {
        self.mail_pending.set(n);
    }

    /// Counts a logout token an app accepted.
    pub fn logout_sent(&self) {
        self.logout_sent.inc();
    }

    /// Counts a failed logout delivery that will be retried.
    pub fn logout_retried(&self) {
        self.logout_retried.inc();
    }

    /// Counts logout tokens given up.
    pub fn logout_failed(&self, n: u64) {
        self.logout_failed.inc_by(n);
    }

    /// Sets the logout queue's length and the age of its oldest entry, in seconds.
    pub fn set_logout_backlog(&self, pending: i64, oldest_age: i64) {
        self.logout_pending.set(pending);
        self.logout_oldest_age.set(oldest_age);
    }

    /// Counts a registration.
    pub fn registration(&self) {
        self.registrations.inc();
    }

    /// Counts a risk action that is not `allow`.
    pub fn risk(&self, action: RiskAction) {
        self.risk_actions.get_or_create(&ActionLabel { action: action.as_str() }).inc();
    }

    /// Counts revoked sessions by reason.
    pub fn revocations(&self, reason: &'static str, n: usize) {
        if n > 0 {
            self.revocations.get_or_create(&ReasonLabel { reason }).inc_by(n as u64);
        }
    }

    /// Records one HTTP request. `method` and `route` must come from bounded sets (see the
    /// module comment).
    pub fn http_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let labels = HttpLabels { method: method.to_owned(), route: route.to_owned(), status };
        self.http.get_or_create(&labels).observe(seconds);
    }

    /// The Prometheus text exposition format 0.0.4 (served as [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a `String` cannot fail, and no label here fails to encode.
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }
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
        assert!(text.contains("latchkey_logins_total{result=\"failure\"} 1"), "{text}");
        assert!(text.contains("latchkey_logins_total{result=\"success\"} 0"), "{text}");
        assert!(text.contains("latchkey_refresh_grace_hits_total 1"), "{text}");
        assert!(text.contains("latchkey_refreshes_total{result=\"grace\"} 1"), "{text}");
        assert!(text.contains("latchkey_revocations_total{reason=\"logged_out\"} 2"), "{text}");
        assert!(text.contains("route=\"/auth/refresh\",status=\"200\",le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("route=\"/auth/refresh\",status=\"200\",le=\"0.0025\"} 0"), "{text}");
        assert!(text.contains("route=\"/auth/refresh\",status=\"200\",le=\"+Inf\"} 1"), "{text}");
        assert!(text.contains(
            "latchkey_http_request_duration_seconds_count{method=\"POST\",route=\"/auth/refresh\",status=\"200\"} 1"
        ));
    }

    /// The names, types and help lines operators' dashboards and alerts use (README,
    /// docs/security.md): a change here is a breaking change for them. A labelled family
    /// shows its `# TYPE` line once it has a series (as in the Go client).
    #[test]
    fn keeps_the_documented_names_and_types() {
        let m = Metrics::default();
        m.revocations("logged_out", 1);
        m.http_request("GET", "/healthz", 200, 0.001);
        let text = m.render();
        for line in [
            "# HELP latchkey_logins_total Login attempts by result.",
            "# TYPE latchkey_logins_total counter",
            "# TYPE latchkey_login_failures_total counter",
            "latchkey_login_failures_total 0",
            "# TYPE latchkey_login_throttled_total counter",
            "latchkey_login_throttled_total 0",
            "# TYPE latchkey_registrations_total counter",
            "latchkey_registrations_total 0",
            "# TYPE latchkey_refreshes_total counter",
            "latchkey_refreshes_total{result=\"reuse_detected\"} 0",
            "# TYPE latchkey_refresh_grace_hits_total counter",
            "# HELP latchkey_refresh_reuse_detections_total Stolen refresh tokens caught (sessions revoked): a retired token replayed, or a DPoP-bound session's token without its key.",
            "# TYPE latchkey_refresh_reuse_detections_total counter",
            "latchkey_refresh_reuse_detections_total 0",
            "# TYPE latchkey_revocations_total counter",
            "# TYPE latchkey_mail_queued_total counter",
            "# TYPE latchkey_mail_sent_total counter",
            "latchkey_mail_sent_total 0",
            "# TYPE latchkey_mail_failed_total counter",
            "latchkey_mail_failed_total 0",
            "# TYPE latchkey_mail_retried_total counter",
            "latchkey_mail_retried_total 0",
            "# TYPE latchkey_mail_outbox_pending gauge",
            "latchkey_mail_outbox_pending 0",
            "# TYPE latchkey_backchannel_logout_sent_total counter",
            "latchkey_backchannel_logout_sent_total 0",
            "# TYPE latchkey_backchannel_logout_retried_total counter",
            "# TYPE latchkey_backchannel_logout_failed_total counter",
            "# TYPE latchkey_backchannel_logout_pending gauge",
            "latchkey_backchannel_logout_pending 0",
            "# TYPE latchkey_backchannel_logout_oldest_pending_age_seconds gauge",
            "# HELP latchkey_http_request_duration_seconds HTTP request latency.",
            "# TYPE latchkey_http_request_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert!(!text.contains("_total_total"), "{text}");
    }

    /// The per-outcome totals are the labelled series themselves, so they cannot drift apart.
    #[test]
    fn outcome_totals_follow_their_labelled_series() {
        let m = Metrics::default();
        m.login(LoginOutcome::Throttled);
        m.login(LoginOutcome::Throttled);
        m.refresh(RefreshOutcome::ReuseDetected);
        let text = m.render();
        assert!(text.contains("latchkey_logins_total{result=\"throttled\"} 2"), "{text}");
        assert!(text.contains("latchkey_login_throttled_total 2"), "{text}");
        assert!(text.contains("latchkey_refreshes_total{result=\"reuse_detected\"} 1"), "{text}");
        assert!(text.contains("latchkey_refresh_reuse_detections_total 1"), "{text}");
        assert!(text.contains("latchkey_refresh_grace_hits_total 0"), "{text}");
    }

    #[test]
    fn escapes_label_values() {
        let m = Metrics::default();
        m.http_request("GET", "/a\"b\\c", 404, 0.0001);
        let text = m.render();
        assert!(text.contains("route=\"/a\\\"b\\\\c\""), "{text}");
    }
}
