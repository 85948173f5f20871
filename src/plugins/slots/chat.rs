//! Where chats come from: the [`ChatPlatform`] slot, the messages it takes in and posts.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::plugins::{PluginError, PluginResult, ReplyKey};

/// A notification as posted on a chat platform: what a reply to it points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostedMessage {
    /// Platform (`telegram`, `slack`, `discord`), as in [`InboundMessage::platform`].
    pub platform: String,
    /// The chat or channel it went to.
    pub chat: String,
    /// The message, as a reply names it (`InboundMessage::meta["reply_to"]`): `{chat}:{id}`
    /// on Telegram, `{channel}:{ts}` on Slack, the message id on Discord (ids are global
    /// there, and a thread started from a message has the message's id).
    pub key: String,
}

/// An inbound chat message, normalized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct InboundMessage {
    /// Platform name.
    pub platform: String,
    /// Thread/channel key.
    pub thread: String,
    /// Platform message id (dedupe).
    pub message_id: String,
    /// Author's platform id.
    pub author: String,
    /// Text.
    pub text: String,
    /// What the platform knows besides the text (build with `..Default::default()`). Keys the
    /// chat bridge reads: `kind` (`issue` | `pr`, GitHub), `closes` (comma-separated issue
    /// numbers a PR closes), `event` (`closed`: the issue/PR was closed — clean up its
    /// worktree; no turn runs), `context` (issue/PR title and body, appended to prompts),
    /// `base` (the branch to cut worktrees from), `repo_url` (clone URL of the repository),
    /// `reply_to` (the [`PostedMessage::key`] of the message this one replies to, or of the
    /// thread it was written in), `unaddressed` (`true`: the bot was not mentioned; taken only
    /// as a reply to a notification), `answers` (set by the inbox: the session whose
    /// notification this replies to), `moved_from` (the thread this chat had before the
    /// platform gave it a new id, a Telegram group upgraded to a supergroup: the message joins
    /// that thread's conversation when one exists).
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

/// What an accepted inbound message became.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxReceipt {
    /// Conversation id (`{platform}:{thread}`).
    pub conversation: String,
    /// `false` when the platform redelivered a message already stored.
    pub new: bool,
    /// Messages ahead of this one in its conversation (0 = it runs next).
    pub position: usize,
}

/// Where platform adapters (webhook handlers, pollers, the gateway) hand inbound messages.
/// `receive` returns only once the message is durably stored: adapters acknowledge the
/// platform (2xx, Telegram offset) after it and never before.
#[async_trait]
pub trait ChatInbox: Send + Sync {
    /// Stores one inbound message and wakes its conversation.
    ///
    /// # Errors
    /// The store refused: the adapter must not acknowledge (the platform redelivers).
    async fn receive(&self, message: InboundMessage) -> PluginResult<InboxReceipt>;

    /// A thread was closed on its platform (a GitHub issue or PR; `message.meta` has
    /// `event: closed`). Queued after the conversation's own messages when the conversation
    /// exists, so its worktree is released in order; nothing happens otherwise. Not a user's
    /// message: no allowlist applies. `true` when it was queued now.
    ///
    /// # Errors
    /// The store refused: the adapter must not acknowledge.
    async fn thread_closed(&self, message: InboundMessage) -> PluginResult<bool> {
        let _ = message;
        Ok(false)
    }
}

/// A chat platform (Telegram, Discord, Slack, GitHub comments, Jira).
#[async_trait]
pub trait ChatPlatform: Send + Sync {
    /// Platform name.
    fn name(&self) -> &'static str;

    /// Largest message the platform accepts, in characters (replies are split under it).
    fn max_message_len(&self) -> usize;

    /// Posts a reply and returns its platform id (for later edits).
    ///
    /// # Errors
    /// Retriable errors for rate limits (after waiting the platform's `retry_after`).
    async fn send(&self, thread: &str, text: &str) -> PluginResult<String>;

    /// [`ChatPlatform::send`] for a reply that may be sent again: a retry after an answer that
    /// was lost, a re-delivery after a crash between the post and its record. `key` is the
    /// same at every attempt at one reply; a platform that can tell a repeat by it (Discord's
    /// enforced `nonce`; a mark in the post that a later attempt finds in the thread, on
    /// Slack, GitHub and Jira) posts the reply once and answers the first post's id. Default:
    /// `send` (the platform cannot tell, and a repeat is posted again: Telegram).
    ///
    /// # Errors
    /// As `send`.
    async fn send_once(&self, thread: &str, text: &str, key: &ReplyKey) -> PluginResult<String> {
        let _ = key;
        self.send(thread, text).await
    }

    /// Replaces the text of a posted message (streaming replies).
    ///
    /// # Errors
    /// As `send`.
    async fn edit(&self, thread: &str, message_id: &str, text: &str) -> PluginResult<()>;

    /// Up to `limit` messages posted in `thread` before the platform message `before`
    /// (an [`InboundMessage::message_id`]), newest first. Platforms without a readable
    /// history (the default) have none. Read-only.
    ///
    /// # Errors
    /// As `send`.
    async fn history(
        &self,
        _thread: &str,
        _before: &str,
        _limit: usize,
    ) -> PluginResult<Vec<HistoryMessage>> {
        Ok(Vec::new())
    }

    /// Whether `error` (from [`ChatPlatform::send`]) says the bot cannot post in the thread
    /// at all (Slack's `not_in_channel`, `channel_not_found`, `is_archived`): a reply
    /// address handed out with a message ([`META_RESPONSE_URL`]) may carry the reply
    /// instead. None by default.
    fn cannot_post_here(&self, _error: &PluginError) -> bool {
        false
    }

    /// Posts `text` through a reply address the platform handed out with a message
    /// ([`META_RESPONSE_URL`], a capability URL: never logged), split under the platform's
    /// limit, in at most `max_posts` posts (pieces past that are dropped). Returns the
    /// posts made. Platforms without reply addresses (the default) refuse.
    ///
    /// # Errors
    /// As `send`; `Unavailable` on a platform without reply addresses.
    async fn send_to_address(
        &self,
        _address: &str,
        _text: &str,
        _max_posts: usize,
    ) -> PluginResult<usize> {
        Err(PluginError::Unavailable {
            slot: "chat reply address",
            name: self.name().to_string(),
        })
    }
}

/// Message meta key of a reply address a platform hands out with a message: Slack's slash
/// command `response_url` (valid 30 minutes, 5 posts). A capability URL: kept in the inbox
/// only, never logged, never shown by an API or put in an event.
pub const META_RESPONSE_URL: &str = "response_url";

/// An earlier message of a chat thread ([`ChatPlatform::history`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryMessage {
    /// Author's display name or platform id.
    pub author: String,
    /// Whether a bot wrote it (Flotilla's own replies included).
    pub bot: bool,
    /// Text, as the platform stores it.
    pub text: String,
}
