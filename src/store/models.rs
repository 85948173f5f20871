//! Records the store reads and writes: sessions, events, reaction trackers, timers, webhook
//! deliveries, conversations, queued chat messages and outbound notifications.
//!
//! These are plain data. The state machine (`domain::machine`) decides how they change;
//! the store only persists them.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::domain::session::{
    Activity, CostSource, PrRef, ReactionTracker, SessionId, SessionRecord, SessionSnapshot,
    SessionState, TimerRecord, UnknownState,
};

/// Gives an enum stored as text its names, `as_str` and `FromStr` from one table so that the
/// two cannot drift apart; an unknown name is refused with the list of known ones.
macro_rules! stored_names {
    ($ty:ident $what:literal { $($variant:ident => $name:literal,)+ }) => {
        impl $ty {
            /// The snake_case name stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(format!("unknown {} `{s}` ({})", $what, [$($name),+].join(", "))),
                }
            }
        }
    };
}

/// Input to `Store::create_session`: the id is assigned by the store.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Project name.
    pub project: String,
    /// Prefix of the id (`{prefix}-{N}`).
    pub prefix: String,
    /// Agent name.
    pub agent: String,
    /// Runtime plugin name.
    pub runtime: String,
    /// Workspace plugin name.
    pub workspace_kind: String,
    /// Explicit branch, if the user chose one.
    pub branch: Option<String>,
    /// Tracker issue id.
    pub issue: Option<String>,
    /// Task prompt.
    pub prompt: Option<String>,
    /// Numbers that must not be used (e.g. already taken by remote branches).
    pub skip_numbers: Vec<i64>,
    /// Use exactly this id instead of `{prefix}-{N}` (the orchestrator's `{prefix}-orchestrator`);
    /// creating it twice is a `Conflict`.
    pub fixed_id: Option<String>,
    /// Initial `meta` of the session (e.g. `{"role": "orchestrator"}`); `null` for none.
    pub meta: serde_json::Value,
    /// Creation time.
    pub at: DateTime<Utc>,
}

/// One row of the append-only event log. `id` is monotonic and is the SSE event id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventRecord {
    /// Monotonic id, assigned by the store; ids are committed in increasing order.
    pub id: i64,
    /// The session the event belongs to (none for fleet-wide events).
    pub session_id: Option<SessionId>,
    /// Dotted kind, e.g. `session.transition`, `session.created`, `reaction.escalated`.
    pub kind: String,
    /// Event-specific data.
    pub data: serde_json::Value,
    /// When it happened.
    pub at: DateTime<Utc>,
}

/// An event to append (the id is assigned on insert).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Session, if any.
    pub session_id: Option<SessionId>,
    /// Dotted kind.
    pub kind: String,
    /// Data.
    pub data: serde_json::Value,
    /// When it happened.
    pub at: DateTime<Utc>,
}

/// One atomic write of a state-machine step: the new snapshot (session row, all trackers, all
/// timers replace the stored ones), the event row and the notifications the step causes (the
/// outbox). Persisted in one transaction, so a notification exists exactly when its event does.
#[derive(Debug, Clone)]
pub struct TransitionCommit {
    /// The snapshot after the step.
    pub snapshot: SessionSnapshot,
    /// The event to append.
    pub event: NewEvent,
    /// Outbox rows to add; one whose group already has a live row inside its dedupe window is
    /// skipped (see [`NotificationRecord::dedupe_until`]).
    pub notifications: Vec<NotificationRecord>,
    /// Instructions for the agent the step decided on (a reaction's message), queued in the
    /// step's transaction: stored before anything is typed (see [`InstructionRecord`]).
    pub instructions: Vec<NewInstruction>,
}

/// Filter for `Store::list_sessions`.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    /// Only this project.
    pub project: Option<String>,
    /// Only these states (empty = all).
    pub states: Vec<SessionState>,
    /// Only non-terminal sessions.
    pub active_only: bool,
}

/// A received webhook delivery, recorded before the 2xx so a replay is a no-op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// `github`, `slack`, `telegram`, `discord`, `jira`, `linear`.
    pub platform: String,
    /// The platform's delivery id (e.g. `X-GitHub-Delivery`).
    pub delivery_id: String,
    /// Event name (e.g. `pull_request`).
    pub event: String,
    /// Raw body.
    pub payload: String,
    /// When it was received.
    pub received_at: DateTime<Utc>,
}

/// A notification as posted on a chat platform (`PostedMessage`), and the session it was
/// about: a reply to that message answers the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationPost {
    /// Platform (`telegram`, `slack`, `discord`).
    pub platform: String,
    /// The message as a reply names it (`PostedMessage::key`).
    pub key: String,
    /// The chat or channel it went to.
    pub chat: String,
    /// The session it was about.
    pub session_id: SessionId,
    /// The outbox row it delivered.
    pub notification_id: String,
    /// When it was delivered.
    pub created_at: DateTime<Utc>,
    /// When the notification it delivered was made (for a question, as its wait began), read
    /// from the outbox while it holds the row; `record_notification_post` ignores it.
    pub notified_at: Option<DateTime<Utc>>,
    /// The question that notification asked (its context's `question`), read likewise.
    pub notified_question: Option<String>,
}

/// A chat conversation (platform + thread).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConversationRecord {
    /// Stable id: `{platform}:{thread}`.
    pub id: String,
    /// Platform name.
    pub platform: String,
    /// Platform thread/channel key.
    pub thread: String,
    /// The assistant's resume id (Claude session id, Codex thread id).
    pub resume_id: Option<String>,
    /// Working directory of the conversation.
    pub cwd: Option<String>,
    /// Codebase the conversation works on.
    pub codebase: Option<String>,
    /// Worktree the assistant runs in (takes precedence over `cwd`); shared by an issue and
    /// the PR that closes it.
    #[serde(default)]
    pub worktree: Option<String>,
    /// The last template or command run (`router`, `plan`…).
    #[serde(default)]
    pub last_command: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A global chat command template (`/name args`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatTemplateRecord {
    /// Name, invoked as `/name`.
    pub name: String,
    /// One line for `/templates`.
    pub description: String,
    /// The Markdown body with `$1`…`$9` and `$ARGUMENTS`.
    pub content: String,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Processing state of a queued chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Stored, waiting for its turn.
    Queued,
    /// Being processed (reset to queued after a crash).
    Running,
    /// Finished.
    Done,
    /// Failed or cancelled; never retried automatically.
    Failed,
}

stored_names!(MessageStatus "message status" {
    Queued => "queued",
    Running => "running",
    Done => "done",
    Failed => "failed",
});

/// An inbound chat message in the durable inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessageRecord {
    /// Monotonic id; order within a conversation.
    pub id: i64,
    /// Conversation id.
    pub conversation_id: String,
    /// Platform message id, unique per conversation (dedupes redeliveries).
    pub platform_message_id: String,
    /// Author's platform user id.
    pub author: String,
    /// Message text.
    pub body: String,
    /// The platform's extra facts (`InboundMessage::meta`).
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Processing state.
    pub status: MessageStatus,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
}

/// A chat message claimed for its turn (by the owner of its conversation when clustered).
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedMessage {
    /// The message, now `running`.
    pub message: ChatMessageRecord,
    /// It was `running` already: a turn a crash or a dead owner interrupted, run again.
    pub resumed: bool,
}

/// One post of a message's final reply: a new message in the thread, or the final text of
/// the message a streamed reply was growing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatReply {
    /// The text, under the platform's message limit.
    pub body: String,
    /// The platform message to edit instead of posting a new one.
    pub edit_of: Option<String>,
}

impl ChatReply {
    /// A new message in the thread.
    pub fn post(body: impl Into<String>) -> Self {
        ChatReply {
            body: body.into(),
            edit_of: None,
        }
    }
}

/// A reply stored with the message it answers and not posted yet.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatReplyRecord {
    /// Monotonic id: the order the conversation's replies are posted in.
    pub id: i64,
    /// The chat message it answers.
    pub message_id: i64,
    /// What to post.
    pub reply: ChatReply,
    /// Failed attempts at posting it so far.
    pub attempts: i64,
    /// When it was stored: no post of it can be older.
    pub stored_at: DateTime<Utc>,
}

/// Delivery state of an outbox notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationStatus {
    /// Waiting for (re)delivery at `next_attempt_at`.
    Pending,
    /// Delivered.
    Delivered,
    /// Gave up after the configured attempts, or the notifier refused it for good: the
    /// dead-letter state.
    Failed,
    /// Folded into a digest (`digest_id`) by the per-notifier rate limit; the digest carries
    /// the delivery.
    Digested,
    /// Not sent: the question it asked no longer waits (answered, or the agent asked another)
    /// by the time the notifier could take it (a page held by the rate limit, waiting for a
    /// retry, or read late).
    Superseded,
}

stored_names!(NotificationStatus "notification status" {
    Pending => "pending",
    Delivered => "delivered",
    Failed => "failed",
    Digested => "digested",
    Superseded => "superseded",
});

/// A notification for one notifier, delivered from the durable outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationRecord {
    /// Id (UUID string); receivers use it to dedupe.
    pub id: String,
    /// Notifier name from config.
    pub notifier: String,
    /// `urgent`, `action`, `warning`, `info`.
    pub priority: String,
    /// Event kind that caused it.
    pub event: String,
    /// Session, if any.
    pub session_id: Option<SessionId>,
    /// Human-readable text.
    pub message: String,
    /// Dedupe key: names the group (notifier, session, event, reaction, priority). At most one
    /// row holds a given key; a newer notification of the group is written only once the
    /// holder's `dedupe_until` has passed (the holder's key is then archived).
    pub dedupe_key: String,
    /// End of this notification's dedupe window (`created_at` when deduplication is off).
    pub dedupe_until: DateTime<Utc>,
    /// Delivery state.
    pub status: NotificationStatus,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// Earliest time of the next attempt.
    pub next_attempt_at: DateTime<Utc>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last delivery error (no secrets).
    pub last_error: Option<String>,
    /// What notifiers render beyond the message: `project`, `reaction`, `escalation`,
    /// `pr_url`, `branch`, `state`, and for a digest its `items`. A JSON object.
    pub context: serde_json::Value,
    /// For a `digested` notification, the digest that carried it.
    pub digest_id: Option<String>,
}

/// What the chat inbox holds per conversation (see `Store::chat_activity`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatActivity {
    /// The newest message of each conversation that has any, oldest conversation first.
    pub latest: Vec<ChatMessageRecord>,
    /// Messages queued or running, per conversation id (absent = none).
    pub pending: BTreeMap<String, i64>,
}

/// What an instruction for an agent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstructionKind {
    /// A human's message (`send`).
    Message,
    /// A human's answer to the question on screen (a menu number, y/n): typed as keys.
    Answer,
    /// A reaction's message (CI failed, review comments…).
    Reaction,
}

/// How far an instruction's delivery got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstructionState {
    /// Stored, nothing typed yet.
    Pending,
    /// Typing started (at the stored mark); a crash here is finished or re-sent at restart.
    Typing,
    /// Submitted and confirmed.
    Delivered,
    /// Typed, but the runtime could not confirm the submission (never typed again).
    Unconfirmed,
    /// Not delivered: the agent was gone, or (an answer) asked another question.
    Dropped,
}

stored_names!(InstructionKind "instruction kind" {
    Message => "message",
    Answer => "answer",
    Reaction => "reaction",
});

stored_names!(InstructionState "instruction state" {
    Pending => "pending",
    Typing => "typing",
    Delivered => "delivered",
    Unconfirmed => "unconfirmed",
    Dropped => "dropped",
});

/// An instruction to queue (the id is assigned on insert; it starts `pending`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewInstruction {
    /// The session whose agent gets it.
    pub session_id: SessionId,
    /// What it is.
    pub kind: InstructionKind,
    /// The reaction key, for a reaction's message.
    pub reaction: Option<String>,
    /// The text to type.
    pub body: String,
    /// When it was decided.
    pub at: DateTime<Utc>,
}

/// An instruction for an agent, stored before it is typed: intent before effect.
#[derive(Debug, Clone, PartialEq)]
pub struct InstructionRecord {
    /// Monotonic id: a session's instructions are delivered in id order.
    pub id: i64,
    /// The session whose agent gets it.
    pub session_id: SessionId,
    /// What it is.
    pub kind: InstructionKind,
    /// The reaction key, for a reaction's message.
    pub reaction: Option<String>,
    /// The text to type.
    pub body: String,
    /// How far its delivery got.
    pub state: InstructionState,
    /// The runtime's input mark taken just before typing began (`Runtime::input_mark`).
    pub mark: Option<i64>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When its state last changed.
    pub updated_at: DateTime<Utc>,
}
