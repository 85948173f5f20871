//! Logs and metrics: the tracing subscriber (readable text by default, JSON on request) and
//! the Prometheus registry with every metric name as a constant.
//!
//! Labels come from small fixed sets only (states, route patterns, status codes), never ids
//! or error text, so the series count stays bounded however large the fleet grows.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tracing_subscriber::{fmt, EnvFilter};

use crate::store::SessionState;

/// Sessions per state (gauge).
pub const SESSIONS: &str = "flotilla_sessions";
/// State transitions (counter, `from`, `to`).
pub const SESSION_TRANSITIONS: &str = "flotilla_session_transitions_total";
/// HTTP requests (counter, `route`, `status`).
pub const HTTP_REQUESTS: &str = "flotilla_http_requests_total";
/// HTTP latency (histogram, `route`).
pub const HTTP_DURATION: &str = "flotilla_http_request_duration_seconds";
/// Session actor restarts after an error (counter).
pub const ACTOR_RESTARTS: &str = "flotilla_actor_restarts_total";
/// Build information (gauge = 1, `version`).
pub const BUILD_INFO: &str = "flotilla_build_info";
/// Events appended to the log (counter).
pub const EVENTS: &str = "flotilla_events_total";
/// Live session actors (gauge).
pub const SESSION_ACTORS: &str = "flotilla_session_actors";
/// Subprocesses Flotilla started (counter, `program`: git, tmux, other).
pub const SUBPROCESSES: &str = "flotilla_subprocesses_total";
/// Agent tokens used, from the agents' own logs (counter, `project`).
pub const AGENT_TOKENS: &str = "flotilla_agent_tokens_total";
/// Agent spend in US dollars, from the agents' own logs (counter, `project`).
pub const AGENT_COST: &str = "flotilla_agent_cost_usd_total";
/// Notification delivery outcomes (counter, `notifier` = a configured name, `outcome` in
/// [`NOTIFICATION_OUTCOMES`]).
pub const NOTIFICATIONS: &str = "flotilla_notifications_total";
/// Notifications waiting in the outbox (gauge: status `pending`).
pub const NOTIFICATION_OUTBOX_DEPTH: &str = "flotilla_notification_outbox_depth";
/// Dead-lettered notifications in the outbox (gauge: status `failed`).
pub const NOTIFICATION_DEAD_LETTERS: &str = "flotilla_notification_dead_letters";
/// Time from a notification's creation to its delivery (histogram, `notifier`).
pub const NOTIFICATION_DELIVERY: &str = "flotilla_notification_delivery_seconds";
/// The `outcome` label values of [`NOTIFICATIONS`].
pub const NOTIFICATION_OUTCOMES: [&str; 4] = ["delivered", "retried", "failed", "digested"];
/// GitHub API requests the `github` plugin made (counter, `kind` = REST path template or
/// `graphql`, `status` = HTTP status or `error`).
pub const GITHUB_REQUESTS: &str = "flotilla_github_requests_total";
/// The last `x-ratelimit-remaining` GitHub reported (gauge).
pub const GITHUB_RATE_LIMIT_REMAINING: &str = "flotilla_github_rate_limit_remaining";
/// Verified GitHub webhook deliveries handed to the supervisor (counter, `event`).
pub const GITHUB_WEBHOOKS: &str = "flotilla_github_webhooks_total";
/// Reactions fired (counter, `reaction` from the configured reaction keys, `action`: `send`
/// to the agent, `notify` a human, or `escalate` to one).
pub const REACTIONS: &str = "flotilla_reactions_total";
/// Reactions escalated to a human (counter, `reaction`).
pub const ESCALATIONS: &str = "flotilla_escalations_total";

/// Chat conversations waiting for a free turn slot (gauge, `platform`).
pub const CHAT_QUEUE_DEPTH: &str = "flotilla_chat_queue_depth";
/// Chat messages processed (counter, `outcome` in [`CHAT_TURN_OUTCOMES`]).
pub const CHAT_TURNS: &str = "flotilla_chat_turns_total";
/// The `outcome` label values of [`CHAT_TURNS`].
pub const CHAT_TURN_OUTCOMES: [&str; 5] = ["done", "failed", "timeout", "cancelled", "rejected"];
/// Attempts at posting a message's stored final replies (counter, `result` in
/// [`CHAT_REPLY_RESULTS`]: `posted`, `retried` (failed, tried again later), `given_up`).
pub const CHAT_REPLIES: &str = "flotilla_chat_replies_total";
/// The `result` label values of [`CHAT_REPLIES`].
pub const CHAT_REPLY_RESULTS: [&str; 3] = ["posted", "retried", "given_up"];

/// The process-wide metrics.
pub struct Metrics {
    registry: Registry,
    /// See [`SESSIONS`].
    pub sessions: IntGaugeVec,
    /// See [`SESSION_TRANSITIONS`].
    pub transitions: IntCounterVec,
    /// See [`HTTP_REQUESTS`].
    pub http_requests: IntCounterVec,
    /// See [`HTTP_DURATION`].
    pub http_duration: HistogramVec,
    /// See [`ACTOR_RESTARTS`].
    pub actor_restarts: IntCounter,
    /// See [`EVENTS`].
    pub events: IntCounter,
    /// See [`SESSION_ACTORS`].
    pub session_actors: IntGauge,
    /// See [`SUBPROCESSES`].
    pub subprocesses: IntCounterVec,
    /// See [`AGENT_TOKENS`].
    pub agent_tokens: IntCounterVec,
    /// See [`AGENT_COST`].
    pub agent_cost: prometheus::CounterVec,
    /// See [`NOTIFICATIONS`].
    pub notifications: IntCounterVec,
    /// See [`NOTIFICATION_OUTBOX_DEPTH`].
    pub outbox_depth: IntGauge,
    /// See [`NOTIFICATION_DEAD_LETTERS`].
    pub dead_letters: IntGauge,
    /// See [`NOTIFICATION_DELIVERY`].
    pub notification_delivery: HistogramVec,
    /// See [`GITHUB_REQUESTS`].
    pub github_requests: IntCounterVec,
    /// See [`GITHUB_RATE_LIMIT_REMAINING`].
    pub github_rate_limit_remaining: IntGauge,
    /// See [`GITHUB_WEBHOOKS`].
    pub github_webhooks: IntCounterVec,
    /// See [`REACTIONS`].
    pub reactions: IntCounterVec,
    /// See [`ESCALATIONS`].
    pub escalations: IntCounterVec,
    /// See [`CHAT_QUEUE_DEPTH`].
    pub chat_queue_depth: IntGaugeVec,
    /// See [`CHAT_TURNS`].
    pub chat_turns: IntCounterVec,
    /// See [`CHAT_REPLIES`].
    pub chat_replies: IntCounterVec,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let sessions = IntGaugeVec::new(Opts::new(SESSIONS, "Sessions by state."), &["state"])?;
    let transitions = IntCounterVec::new(
        Opts::new(SESSION_TRANSITIONS, "Session state transitions."),
        &["from", "to"],
    )?;
    let http_requests = IntCounterVec::new(
        Opts::new(HTTP_REQUESTS, "HTTP requests by route pattern and status."),
        &["route", "status"],
    )?;
    let http_duration = HistogramVec::new(
        HistogramOpts::new(HTTP_DURATION, "HTTP request latency by route pattern.").buckets(vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]),
        &["route"],
    )?;
    let actor_restarts = IntCounter::new(ACTOR_RESTARTS, "Session actor restarts after errors.")?;
    let events = IntCounter::new(EVENTS, "Events appended to the event log.")?;
    let session_actors = IntGauge::new(SESSION_ACTORS, "Live session actors.")?;
    let subprocesses = IntCounterVec::new(
        Opts::new(SUBPROCESSES, "Subprocesses Flotilla started."),
        &["program"],
    )?;
    let agent_tokens = IntCounterVec::new(
        Opts::new(AGENT_TOKENS, "Agent tokens used, from the agents' logs."),
        &["project"],
    )?;
    let agent_cost = prometheus::CounterVec::new(
        Opts::new(
            AGENT_COST,
            "Agent spend in US dollars, from the agents' logs.",
        ),
        &["project"],
    )?;
    let notifications = IntCounterVec::new(
        Opts::new(NOTIFICATIONS, "Notification delivery outcomes by notifier."),
        &["notifier", "outcome"],
    )?;
    let outbox_depth = IntGauge::new(
        NOTIFICATION_OUTBOX_DEPTH,
        "Notifications waiting in the outbox.",
    )?;
    let dead_letters = IntGauge::new(
        NOTIFICATION_DEAD_LETTERS,
        "Notifications dead-lettered after their retry budget.",
    )?;
    let notification_delivery = HistogramVec::new(
        HistogramOpts::new(
            NOTIFICATION_DELIVERY,
            "Time from a notification's creation to its delivery, by notifier.",
        )
        .buckets(vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ]),
        &["notifier"],
    )?;
    let github_requests = IntCounterVec::new(
        Opts::new(GITHUB_REQUESTS, "GitHub API requests by kind and status."),
        &["kind", "status"],
    )?;
    let github_rate_limit_remaining = IntGauge::new(
        GITHUB_RATE_LIMIT_REMAINING,
        "The last x-ratelimit-remaining GitHub reported.",
    )?;
    let github_webhooks = IntCounterVec::new(
        Opts::new(
            GITHUB_WEBHOOKS,
            "Verified GitHub webhook deliveries by event.",
        ),
        &["event"],
    )?;
    let reactions = IntCounterVec::new(
        Opts::new(REACTIONS, "Reactions fired, by reaction and action."),
        &["reaction", "action"],
    )?;
    let escalations = IntCounterVec::new(
        Opts::new(ESCALATIONS, "Reactions escalated to a human, by reaction."),
        &["reaction"],
    )?;
    let chat_queue_depth = IntGaugeVec::new(
        Opts::new(
            CHAT_QUEUE_DEPTH,
            "Chat conversations waiting for a turn slot, by platform.",
        ),
        &["platform"],
    )?;
    let chat_turns = IntCounterVec::new(
        Opts::new(CHAT_TURNS, "Chat messages processed, by outcome."),
        &["outcome"],
    )?;
    for o in CHAT_TURN_OUTCOMES {
        chat_turns.with_label_values(&[o]);
    }
    let chat_replies = IntCounterVec::new(
        Opts::new(CHAT_REPLIES, "Attempts at posting chat replies, by result."),
        &["result"],
    )?;
    for r in CHAT_REPLY_RESULTS {
        chat_replies.with_label_values(&[r]);
    }
    let build_info = IntGaugeVec::new(
        Opts::new(BUILD_INFO, "Build information; always 1."),
        &["version"],
    )?;
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    registry.register(Box::new(sessions.clone()))?;
    registry.register(Box::new(transitions.clone()))?;
    registry.register(Box::new(http_requests.clone()))?;
    registry.register(Box::new(http_duration.clone()))?;
    registry.register(Box::new(actor_restarts.clone()))?;
    registry.register(Box::new(events.clone()))?;
    registry.register(Box::new(session_actors.clone()))?;
    registry.register(Box::new(subprocesses.clone()))?;
    registry.register(Box::new(agent_tokens.clone()))?;
    registry.register(Box::new(agent_cost.clone()))?;
    registry.register(Box::new(notifications.clone()))?;
    registry.register(Box::new(outbox_depth.clone()))?;
    registry.register(Box::new(dead_letters.clone()))?;
    registry.register(Box::new(notification_delivery.clone()))?;
    registry.register(Box::new(github_requests.clone()))?;
    registry.register(Box::new(github_rate_limit_remaining.clone()))?;
    registry.register(Box::new(github_webhooks.clone()))?;
    registry.register(Box::new(reactions.clone()))?;
    registry.register(Box::new(escalations.clone()))?;
    registry.register(Box::new(chat_queue_depth.clone()))?;
    registry.register(Box::new(chat_turns.clone()))?;
    registry.register(Box::new(chat_replies.clone()))?;
    registry.register(Box::new(build_info))?;
    // Every state is present from the start, so dashboards see zeros rather than gaps.
    for s in SessionState::ALL {
        sessions.with_label_values(&[s.as_str()]).set(0);
    }
    Ok(Metrics {
        registry,
        sessions,
        transitions,
        http_requests,
        http_duration,
        actor_restarts,
        events,
        session_actors,
        subprocesses,
        agent_tokens,
        agent_cost,
        notifications,
        outbox_depth,
        dead_letters,
        notification_delivery,
        github_requests,
        github_rate_limit_remaining,
        github_webhooks,
        reactions,
        escalations,
        chat_queue_depth,
        chat_turns,
        chat_replies,
    })
}

/// The metrics of this process.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| match build() {
    Ok(m) => m,
    // Only reachable through a programming error in `build` (duplicate names).
    Err(e) => panic!("metric registration failed: {e}"),
});

impl Metrics {
    /// Records a state change.
    pub fn transition(&self, from: SessionState, to: SessionState) {
        if from != to {
            self.transitions
                .with_label_values(&[from.as_str(), to.as_str()])
                .inc();
            self.sessions.with_label_values(&[from.as_str()]).dec();
            self.sessions.with_label_values(&[to.as_str()]).inc();
        }
    }

    /// Counts a subprocess start; the label is the program's name when it is one we run
    /// routinely (bounded), else `other`.
    pub fn subprocess(&self, program: &str) {
        let name = std::path::Path::new(program)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        let label = match name {
            "git" | "tmux" => name,
            _ => "other",
        };
        self.subprocesses.with_label_values(&[label]).inc();
    }

    /// Counts one delivery outcome of `notifier` (a configured name; `outcome` one of
    /// [`NOTIFICATION_OUTCOMES`]).
    pub fn notification(&self, notifier: &str, outcome: &str, n: u64) {
        self.notifications
            .with_label_values(&[notifier, outcome])
            .inc_by(n);
    }

    /// Makes every outcome of `notifier` present from the start (zeros rather than gaps).
    pub fn register_notifier(&self, notifier: &str) {
        for outcome in NOTIFICATION_OUTCOMES {
            self.notifications.with_label_values(&[notifier, outcome]);
        }
    }

    /// Records a reaction that fired: `action` is `send` (a message to the agent), `notify` or
    /// `escalate` (a human).
    pub fn reaction(&self, reaction: &str, action: &str) {
        self.reactions.with_label_values(&[reaction, action]).inc();
    }

    /// Records an escalation to a human.
    pub fn escalation(&self, reaction: &str) {
        self.escalations.with_label_values(&[reaction]).inc();
    }

    /// Sets the state gauge from stored counts (at start-up).
    pub fn set_counts(&self, counts: &[(SessionState, i64)]) {
        for s in SessionState::ALL {
            let n = counts
                .iter()
                .find(|(st, _)| *st == s)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            self.sessions.with_label_values(&[s.as_str()]).set(n);
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if let Err(e) = enc.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber. `RUST_LOG` overrides `level`. Safe to call twice
/// (the second call is ignored).
pub fn init_tracing(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
