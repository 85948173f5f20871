//! A session as the domain knows it: its id, lifecycle state, activity, PR, cost source, the
//! row that describes it, and the snapshot the machine steps (row, reaction trackers, timers).
//!
//! Plain data: the machine ([`super::machine`]) decides how it changes, the store persists it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::runtime_handle::RuntimeHandle;

use super::keys::{ReactionKey, TimerKey};

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
    /// What the runtime plugin needs to find the agent again (pid, tmux name…), stored as the
    /// runtime's JSON (see [`RuntimeHandle`]).
    #[schema(value_type = Option<Object>)]
    pub runtime_handle: Option<RuntimeHandle>,
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
    /// Reaction trackers by reaction key, as stored ([`ReactionKey::as_str`]; read them with
    /// [`SessionSnapshot::tracker`]).
    pub trackers: BTreeMap<String, ReactionTracker>,
    /// Armed timers by kind, as stored ([`TimerKey`]'s text; see
    /// [`SessionSnapshot::has_timer`]).
    pub timers: BTreeMap<String, TimerRecord>,
}

impl SessionSnapshot {
    /// The tracker of reaction `key`, if it fired.
    pub fn tracker(&self, key: ReactionKey) -> Option<&ReactionTracker> {
        self.trackers.get(key.as_str())
    }

    /// The tracker of reaction `key`, to change it.
    pub fn tracker_mut(&mut self, key: ReactionKey) -> Option<&mut ReactionTracker> {
        self.trackers.get_mut(key.as_str())
    }

    /// Whether timer `key` is armed.
    pub fn has_timer(&self, key: TimerKey) -> bool {
        self.timers.contains_key(&key.to_string())
    }
}
