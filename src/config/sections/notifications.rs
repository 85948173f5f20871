//! `notifiers:`, `routing:` and `notifications:`: where notifications go, routed by priority,
//! and their rate limits.

use std::fmt;

use serde::Deserialize;

use crate::config::values::{null_as_default, HumanDuration, NotifierKind, Priority, Secret};

/// `notifiers.<name>` — a named notification target. `Debug` hides the URL: Slack and
/// Discord webhook URLs are credentials.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierSettings {
    /// What kind of notifier.
    pub kind: NotifierKind,
    /// Target URL (webhook, or a Slack/Discord incoming webhook).
    #[serde(default)]
    pub url: Option<String>,
    /// HMAC secret for `X-Flotilla-Signature-256` (webhook).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Channel id (Slack, Discord).
    #[serde(default)]
    pub channel: Option<String>,
    /// Chat id (Telegram).
    #[serde(default)]
    pub chat_id: Option<String>,
}

impl fmt::Debug for NotifierSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifierSettings")
            .field("kind", &self.kind)
            .field("url", &self.url.as_ref().map(|_| "***"))
            .field("secret", &self.secret)
            .field("channel", &self.channel)
            .field("chat_id", &self.chat_id)
            .finish()
    }
}

/// `routing:` — notifier names per priority.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSettings {
    /// Notifiers for urgent events.
    #[serde(default, deserialize_with = "null_as_default")]
    pub urgent: Vec<String>,
    /// Notifiers for events needing action.
    #[serde(default, deserialize_with = "null_as_default")]
    pub action: Vec<String>,
    /// Notifiers for warnings.
    #[serde(default, deserialize_with = "null_as_default")]
    pub warning: Vec<String>,
    /// Notifiers for informational events.
    #[serde(default, deserialize_with = "null_as_default")]
    pub info: Vec<String>,
}

impl RoutingSettings {
    /// The list configured for `priority` (possibly empty).
    pub fn for_priority(&self, priority: Priority) -> &[String] {
        match priority {
            Priority::Urgent => &self.urgent,
            Priority::Action => &self.action,
            Priority::Warning => &self.warning,
            Priority::Info => &self.info,
        }
    }
}

/// `notifications:` — the outbox: deduplication, delivery retries and the per-notifier rate
/// limit.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsSettings {
    /// The same session, event, reaction and priority within this window is one notification
    /// per notifier (a question for a human counts as its own reaction: each new one pages);
    /// `0s` turns deduplication off.
    pub dedupe_window: HumanDuration,
    /// Delivery attempts before a notification is dead-lettered (status `failed`).
    pub max_attempts: u32,
    /// Delay before the first retry; doubled on each further attempt.
    pub backoff_initial: HumanDuration,
    /// Longest delay between two attempts.
    pub backoff_max: HumanDuration,
    /// Longest `Retry-After` (429) honoured; a longer one counts as this.
    pub max_retry_after: HumanDuration,
    /// How often the outbox looks for due notifications (it is also woken after each commit).
    pub poll_interval: HumanDuration,
    /// Time limit of one delivery (HTTP request or desktop command).
    pub timeout: HumanDuration,
    /// Deliveries in flight at once per notifier.
    pub concurrency: usize,
    /// Notifications read from the outbox per poll.
    pub batch: usize,
    /// Per-notifier rate limit; what exceeds it is sent as one digest when it frees up.
    pub rate_limit: RateLimitSettings,
}

/// `notifications.rate_limit:` — messages per notifier per window.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Messages (single notifications or digests) a notifier may send per `window`.
    pub max: u32,
    /// The sliding window.
    pub window: HumanDuration,
}
