//! How humans hear: the [`Notifier`] slot and the [`Notification`] it delivers.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::plugins::{PluginResult, PostedMessage, ReplyKey};

/// A notification to deliver. Serialized as is, it is the `webhook` notifier's body
/// (INTERFACE.md: at least `id`, `priority`, `event`, `session`, `message`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Notification {
    /// Stable id; receivers dedupe on it.
    pub id: String,
    /// `urgent`, `action`, `warning`, `info`.
    pub priority: String,
    /// Event kind (`agent.exited`, `reaction.escalated`, `notifications.digest`…).
    pub event: String,
    /// Session id, if any.
    pub session: Option<String>,
    /// Text: what happened and what is asked of the human.
    pub message: String,
    /// The session's project.
    #[serde(default)]
    pub project: Option<String>,
    /// The reaction that caused it (`agent-exited`, `approved-and-green`…).
    #[serde(default)]
    pub reaction: Option<String>,
    /// Whether a reaction gave up and escalated to humans.
    #[serde(default)]
    pub escalation: bool,
    /// The session's pull request, if it has one.
    #[serde(default)]
    pub pr_url: Option<String>,
    /// The session's state when it was written.
    #[serde(default)]
    pub state: Option<String>,
    /// When it was written (RFC 3339).
    #[serde(default)]
    pub created_at: String,
    /// For a digest (`event` = `notifications.digest`): the notifications it stands for, each
    /// with its own `id` (receivers dedupe those too). Empty otherwise.
    #[serde(default)]
    pub items: Vec<Notification>,
    /// Whether an earlier attempt may have delivered it already (one that failed, or a
    /// process that stopped mid-delivery): a notifier that can find its earlier post (Slack's
    /// bot posts, the `chat` notifier) looks before posting ([`Notification::reply_key`]).
    /// Not sent.
    #[serde(skip)]
    pub may_be_posted: bool,
}

impl Notification {
    /// Whether this is a digest of several notifications.
    pub fn is_digest(&self) -> bool {
        !self.items.is_empty()
    }

    /// The key its posts are made under, the same at every attempt (the id and the time it
    /// was written; an unreadable time reads as now), telling whether one may be out already.
    pub fn reply_key(&self) -> ReplyKey {
        let created = chrono::DateTime::parse_from_rfc3339(&self.created_at)
            .map_or_else(|_| chrono::Utc::now(), |t| t.with_timezone(&chrono::Utc));
        ReplyKey::new(
            format!("notification/{}", self.id),
            created,
            self.may_be_posted,
        )
    }
}

/// How humans hear from Flotilla (desktop, Slack, webhook, chat).
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Plugin kind (`webhook`, `slack`…), for logs.
    fn kind(&self) -> &'static str;

    /// Delivers one notification. At-least-once: the outbox may call it again with the same id.
    /// Returns where it landed when that is a chat message a human can reply to (Telegram,
    /// Slack and Discord bot posts), so the reply can be matched to the session.
    ///
    /// # Errors
    /// Retriable errors (`is_retriable`) are retried by the outbox; others fail the delivery.
    async fn notify(&self, n: &Notification) -> PluginResult<Option<PostedMessage>>;
}
