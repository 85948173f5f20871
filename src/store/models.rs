//! Records the store reads and writes: sessions, events, reaction trackers, timers, webhook
//! deliveries, conversations, queued chat messages and outbound notifications.
//!
//! These are plain data. The state machine (`actors::session::machine`) decides how they change;
//! the store only persists them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A session id, `{prefix}-{N}`, reserved by the database (see `Store::create_session`).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct SessionId(pub String);

impl SessionId {
    /// Builds the id for the `n`th session of a prefix.
    pub fn new(prefix: &str, n: i64) -> Self {
        SessionId(format!("{prefix}-{n}"))
    }
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A session's lifecycle state, serialized as the snake_case names fixed in INTERFACE.md.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Workspace and runtime are being created; the agent has not been seen yet.
    Spawning,
    /// The agent runs and has no pull request yet (or its PR was closed unmerged).
    Working,
    /// A PR is open and nothing is known to be wrong with it.
    PrOpen,
    /// The PR's CI is failing.
    CiFailed,
    /// The PR waits for a review.
    ReviewPending,
    /// A reviewer requested changes.
    ChangesRequested,
    /// Approved but not (yet) mergeable.
    Approved,
    /// Approved (or no review required), CI green, no conflicts.
    Mergeable,
    /// The PR was merged; the session is cleaned up after a grace period.
    Merged,
    /// The agent asked a question and waits for a human.
    NeedsInput,
    /// The agent has been idle past the stuck threshold.
    Stuck,
    /// Spawning or the runtime failed, or the agent exited with an error.
    Errored,
    /// The runtime was killed (by a user, or it vanished).
    Killed,
    /// The agent finished its task (exited with status 0 and no open PR).
    Done,
    /// Cleaned up after the work ended (e.g. after a merge).
    Terminated,
}

impl SessionState {
    /// Every state, in declaration order (table tests and metrics iterate over it).
    pub const ALL: [SessionState; 15] = [
        SessionState::Spawning,
        SessionState::Working,
        SessionState::PrOpen,
        SessionState::CiFailed,
        SessionState::ReviewPending,
        SessionState::ChangesRequested,
        SessionState::Approved,
        SessionState::Mergeable,
        SessionState::Merged,
        SessionState::NeedsInput,
        SessionState::Stuck,
        SessionState::Errored,
        SessionState::Killed,
        SessionState::Done,
        SessionState::Terminated,
    ];

    /// Terminal sessions have no runtime and no actor; only `restore` revives them.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SessionState::Errored
                | SessionState::Killed
                | SessionState::Done
                | SessionState::Terminated
        )
    }

    /// States in which a pull request is open.
    pub fn has_open_pr(self) -> bool {
        matches!(
            self,
            SessionState::PrOpen
                | SessionState::CiFailed
                | SessionState::ReviewPending
                | SessionState::ChangesRequested
                | SessionState::Approved
                | SessionState::Mergeable
        )
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Spawning => "spawning",
            SessionState::Working => "working",
            SessionState::PrOpen => "pr_open",
            SessionState::CiFailed => "ci_failed",
            SessionState::ReviewPending => "review_pending",
            SessionState::ChangesRequested => "changes_requested",
            SessionState::Approved => "approved",
            SessionState::Mergeable => "mergeable",
            SessionState::Merged => "merged",
            SessionState::NeedsInput => "needs_input",
            SessionState::Stuck => "stuck",
            SessionState::Errored => "errored",
            SessionState::Killed => "killed",
            SessionState::Done => "done",
            SessionState::Terminated => "terminated",
        }
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Returned when a string names no state.
#[derive(Debug, thiserror::Error)]
#[error("unknown session state `{0}`")]
pub struct UnknownState(pub String);

impl FromStr for SessionState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// Where a session's cost figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CostSource {
    /// The agent's own figure (Claude Code's `cost-state` / `total_cost_usd`).
    Agent,
    /// Tokens priced by Flotilla's built-in list prices (the agent reports none).
    PriceTable,
    /// Tokens priced from the user's `pricing:` section (at least one model was; the others
    /// from the built-in prices).
    Config,
    /// Tokens were spent on a model no price table knows and the agent reports no cost: the
    /// cost is unknown (`null`), never counted as 0. The `agent.usage` event names the models.
    Unpriced,
}

/// What the agent is doing, as last observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    /// Nothing observed yet.
    #[default]
    Unknown,
    /// Producing output or using tools.
    Active,
    /// Alive but quiet.
    Idle,
    /// Waiting for a human's answer.
    WaitingInput,
    /// The agent process is gone.
    Exited,
}

/// A pull request a session opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PrRef {
    /// The PR number in its repository.
    pub number: i64,
    /// The PR's web URL.
    pub url: String,
}

/// One session row: everything needed to rebuild the actor after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionRecord {
    /// `{prefix}-{N}`.
    pub id: SessionId,
    /// Project name from config.
    pub project: String,
    /// Lifecycle state.
    pub state: SessionState,
    /// Why the session is in this state (e.g. `manually_killed`, `exit_code_1`).
    pub reason: Option<String>,
    /// Name of the agent (a built-in kind or a name under `agents:`).
    pub agent: String,
    /// Runtime plugin name (`process`, `tmux`).
    pub runtime: String,
    /// Workspace plugin name (`worktree`, `clone`).
    pub workspace_kind: String,
    /// Git branch the session works on.
    pub branch: Option<String>,
    /// Path of the session's workspace, once created.
    pub workspace: Option<String>,
    /// The session's PR, once opened.
    pub pr: Option<PrRef>,
    /// Tracker issue id the session works on.
    pub issue: Option<String>,
    /// The task prompt as given by the user.
    pub prompt: Option<String>,
    /// Opaque handle the runtime plugin needs to find the agent again (pid, tmux name…).
    pub runtime_handle: Option<serde_json::Value>,
    /// Last observed activity.
    pub activity: Activity,
    /// When `activity` was observed.
    pub activity_at: Option<DateTime<Utc>>,
    /// How many times the actor was restarted after an error.
    pub restart_count: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    pub updated_at: DateTime<Utc>,
    /// Plugin and lifecycle details that need no column of their own (the agent's resume id,
    /// token usage, whether this is an orchestrator). A JSON object.
    #[serde(default = "empty_object")]
    pub meta: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
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

/// Retry/escalation bookkeeping for one reaction of one session. Persisted so a restart
/// neither resets nor repeats a reaction (ao kept these in memory only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReactionTracker {
    /// Reaction key (`ci-failed`, …).
    pub reaction: String,
    /// How many times the reaction fired.
    pub attempts: i64,
    /// When it first fired in this episode.
    pub first_triggered_at: DateTime<Utc>,
    /// When it last fired.
    pub last_triggered_at: DateTime<Utc>,
    /// Fingerprint of the last trigger (e.g. hash of review thread ids), to send a set once.
    pub fingerprint: Option<String>,
    /// Whether a human was already told; escalation fires once.
    pub escalated: bool,
}

/// A durable one-shot timer of a session. Re-armed from its deadline after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimerRecord {
    /// Kind, e.g. `spawn_timeout`, `idle_check`, `escalate:ci-failed`, `merge_grace`.
    pub kind: String,
    /// When it fires.
    pub deadline: DateTime<Utc>,
}

/// Everything the session machine owns: the row, its trackers and its timers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSnapshot {
    /// The session row.
    pub session: SessionRecord,
    /// Reaction trackers by reaction key.
    pub trackers: BTreeMap<String, ReactionTracker>,
    /// Armed timers by kind.
    pub timers: BTreeMap<String, TimerRecord>,
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

impl MessageStatus {
    /// The snake_case name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Running => "running",
            MessageStatus::Done => "done",
            MessageStatus::Failed => "failed",
        }
    }
}

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
}

impl NotificationStatus {
    /// Every status.
    pub const ALL: [NotificationStatus; 4] = [
        NotificationStatus::Pending,
        NotificationStatus::Delivered,
        NotificationStatus::Failed,
        NotificationStatus::Digested,
    ];

    /// The snake_case name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Pending => "pending",
            NotificationStatus::Delivered => "delivered",
            NotificationStatus::Failed => "failed",
            NotificationStatus::Digested => "digested",
        }
    }
}

impl FromStr for NotificationStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NotificationStatus::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| {
                format!("unknown notification status `{s}` (pending, delivered, failed, digested)")
            })
    }
}

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
    pub pending: std::collections::BTreeMap<String, i64>,
}
