//! What the machine takes and gives: events, the effects a step asks for, and its outcome.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::DueInstruction;
use crate::domain::keys::ReactionKey;
use crate::domain::policy::{MergeMethod, Priority};
use crate::domain::session::{PrRef, SessionSnapshot, SessionState};

/// Something that happened to a session, stamped with the time it was observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When it was observed (the machine never reads a clock).
    pub at: DateTime<Utc>,
    /// What happened.
    pub kind: EventKind,
}

/// The events a session reacts to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A new session's actor starts it: arm the spawn deadline and start the runtime.
    SpawnRequested,
    /// The runtime runs the agent.
    RuntimeStarted {
        /// Runtime handle to persist.
        handle: serde_json::Value,
        /// Workspace path.
        workspace: Option<String>,
        /// Branch.
        branch: Option<String>,
    },
    /// Creating the workspace or runtime failed.
    SpawnFailed {
        /// Why.
        reason: String,
    },
    /// The agent produced output or used a tool.
    AgentActive,
    /// The agent has been quiet since `since`.
    AgentIdle {
        /// Last sign of activity.
        since: DateTime<Utc>,
    },
    /// The agent asks a human something.
    AgentWaitingInput {
        /// What it asks, as one line for a human ("approve Bash: git push", "trust this
        /// folder? [No, exit | Yes, I trust this folder]"), when it can be told.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        question: Option<String>,
    },
    /// A human answered the question the session waits on (`send` while `needs_input`, once
    /// the question left the screen). `question` is the one answered: a newer question that
    /// arrived meanwhile keeps the session waiting.
    InputAnswered {
        /// The question that was answered, as the session recorded it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        question: Option<String>,
    },
    /// The agent process ended. `code` is `None` when the status is unknown (the runtime
    /// vanished, or the process ended while Flotilla was down); a death by signal N is
    /// 128 + N, as a shell reports it (see [`crate::domain::exit_status`]).
    AgentExited {
        /// Exit status.
        code: Option<i32>,
        /// The last lines the agent printed, so an error names its cause.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<String>,
        /// Why a run that exited 0 failed all the same, in the agent's words (aider exits 0
        /// after the model API refused it): the task was not done.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<String>,
    },
    /// The session's PR was found.
    PrOpened {
        /// The PR.
        pr: PrRef,
    },
    /// CI failed; `summary` lists failed checks, `fingerprint` identifies the failure set.
    CiFailed {
        /// Failed checks with URLs and an excerpt.
        summary: String,
        /// Identifies this set of failures.
        fingerprint: String,
    },
    /// CI passed.
    CiPassed,
    /// The PR waits for review.
    ReviewPending,
    /// A reviewer requested changes.
    ChangesRequested {
        /// Review threads as file:line, author, body.
        summary: String,
        /// Identifies this set of threads.
        fingerprint: String,
    },
    /// The PR was approved.
    Approved,
    /// Approved (or no review needed), green, no conflicts.
    MergeReady,
    /// The PR conflicts with its base.
    MergeConflicts {
        /// Rebase instructions context.
        summary: String,
        /// Identifies the conflict episode.
        fingerprint: String,
    },
    /// The PR no longer conflicts with its base: the conflict episode is over.
    ConflictsCleared,
    /// Automated reviewers (bots) left unresolved threads.
    BotComments {
        /// The threads as file:line, author, body.
        summary: String,
        /// Identifies this set of threads.
        fingerprint: String,
    },
    /// Every bot thread is resolved: that episode is over.
    BotCommentsResolved,
    /// People wrote on the PR outside inline threads (conversation comments, review bodies
    /// of any state): the new ones, grouped.
    ReviewerComments {
        /// The new remarks as author, kind, body.
        summary: String,
        /// The newest remark ids seen (a watermark: only newer ones are new).
        fingerprint: String,
    },
    /// An automatic merge was refused (the reason as the SCM gave it).
    MergeFailed {
        /// Why, e.g. "405 Pull Request is not mergeable".
        reason: String,
    },
    /// The PR was merged.
    PrMerged,
    /// The PR was closed without merging.
    PrClosed,
    /// A user asked to kill the session.
    KillRequested {
        /// Why (e.g. `manually_killed`).
        reason: String,
    },
    /// A user asked to bring a dead session back.
    RestoreRequested,
    /// A durable timer fired.
    TimerFired {
        /// Timer kind.
        kind: String,
    },
    /// The actor failed too often and gave up.
    ActorGaveUp {
        /// Why.
        reason: String,
    },
    /// The agent was started again in its worktree because instructions were due while it
    /// had exited (see [`restart`]).
    AgentRestarted {
        /// Runtime handle of the new agent.
        handle: serde_json::Value,
        /// Whether the instructions of the restart (`PendingRestart::launch`) went in as the
        /// agent's first prompt; if not, they are typed in now.
        prompted: bool,
    },
    /// Restarting an exited agent for due instructions failed.
    RestartFailed {
        /// Why.
        reason: String,
    },
    /// The agent reported its own state (`flotilla report`), authenticated by its token.
    AgentReported {
        /// What it says it is doing.
        state: ReportedState,
        /// Its note, if any.
        note: Option<String>,
        /// The PR it opened, if it says so.
        pr: Option<PrRef>,
        /// Sent by the agent's hook (`flotilla hook`), which runs beside the dialog it
        /// reports and so may land after that dialog was answered.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        hook: bool,
    },
    /// The agent's log shows a failed model API request: one it retries (`attempt` of
    /// `max_retries`), or the one it gave up on (`attempt: None`; the wait for a human that
    /// follows is an `AgentWaitingInput`). Recorded, never a sign of life.
    AgentApiError {
        /// When the agent logged it (repeats of the same entry are not new failures).
        logged_at: DateTime<Utc>,
        /// The HTTP status, when the server answered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// The agent's words for it.
        message: String,
        /// The retry it leads to (1-based); `None` once the agent gave up.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempt: Option<u32>,
        /// How many retries the agent makes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_retries: Option<u32>,
    },
    /// The agent's own log shows this much spend so far (cumulative).
    UsageObserved {
        /// Totals for the session.
        usage: Usage,
        /// What the whole project has spent, this session included (for its budget).
        #[serde(default)]
        project_usd: Option<f64>,
        /// Models that spent tokens but have no price (why `usage.cost_usd` is `None`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unpriced_models: Vec<String>,
    },
    /// The remote host the session's agent runs on cannot be reached (see `host`).
    HostUnreachable {
        /// The host's name under `hosts:`.
        host: String,
    },
    /// The session's host answers again.
    HostReachable {
        /// The host's name.
        host: String,
    },
}

/// States an agent may report about itself (agent-orchestrator's `report` vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum ReportedState {
    /// It started and read its task.
    Started,
    /// It is working.
    Working,
    /// It waits for something external (CI, a review).
    Waiting,
    /// It needs a human's answer.
    NeedsInput,
    /// It is fixing CI.
    FixingCi,
    /// It is addressing review comments.
    AddressingReviews,
    /// It opened a PR.
    PrCreated,
    /// It opened a draft PR.
    DraftPrCreated,
    /// Its PR is ready for review.
    ReadyForReview,
    /// It finished the task.
    Completed,
}

/// Token usage and cost as the agent's own log reports them (cumulative per session).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Usage {
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cache read/write tokens.
    pub cache_tokens: u64,
    /// Cost in US dollars, when known.
    pub cost_usd: Option<f64>,
    /// Whether the agent reported the cost or Flotilla priced the tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_source: Option<crate::domain::session::CostSource>,
}

impl EventKind {
    /// Dotted name used as the event-log kind.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::SpawnRequested => "session.spawn_requested",
            EventKind::RuntimeStarted { .. } => "runtime.started",
            EventKind::SpawnFailed { .. } => "runtime.spawn_failed",
            EventKind::AgentActive => "agent.active",
            EventKind::AgentIdle { .. } => "agent.idle",
            EventKind::AgentWaitingInput { .. } => "agent.waiting_input",
            EventKind::InputAnswered { .. } => "agent.input_answered",
            EventKind::AgentExited { .. } => "agent.exited",
            EventKind::PrOpened { .. } => "pr.opened",
            EventKind::CiFailed { .. } => "ci.failed",
            EventKind::CiPassed => "ci.passed",
            EventKind::ReviewPending => "review.pending",
            EventKind::ChangesRequested { .. } => "review.changes_requested",
            EventKind::Approved => "review.approved",
            EventKind::MergeReady => "merge.ready",
            EventKind::MergeConflicts { .. } => "merge.conflicts",
            EventKind::ConflictsCleared => "merge.conflicts_cleared",
            EventKind::BotComments { .. } => "review.bot_comments",
            EventKind::BotCommentsResolved => "review.bot_comments_resolved",
            EventKind::ReviewerComments { .. } => "review.comments",
            EventKind::MergeFailed { .. } => "merge.failed",
            EventKind::PrMerged => "pr.merged",
            EventKind::PrClosed => "pr.closed",
            EventKind::KillRequested { .. } => "session.kill_requested",
            EventKind::RestoreRequested => "session.restore_requested",
            EventKind::TimerFired { .. } => "timer.fired",
            EventKind::ActorGaveUp { .. } => "session.actor_gave_up",
            EventKind::AgentRestarted { .. } => "agent.restarted",
            EventKind::RestartFailed { .. } => "agent.restart_failed",
            EventKind::AgentReported { .. } => "agent.reported",
            EventKind::UsageObserved { .. } => "agent.usage",
            EventKind::AgentApiError { .. } => "agent.api_error",
            EventKind::HostUnreachable { .. } => "host.unreachable",
            EventKind::HostReachable { .. } => "host.reachable",
        }
    }
}

/// A side effect for the actor to perform **after** the step is persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Effect {
    /// Create the workspace (if missing) and start the agent in the runtime.
    StartRuntime {
        /// Resume the agent's previous conversation where it supports that.
        resume: bool,
    },
    /// Tear the runtime down (idempotent).
    DestroyRuntime,
    /// Remove the workspace (idempotent).
    CleanupWorkspace,
    /// Type a message into the agent.
    SendToAgent {
        /// Reaction that sends it.
        reaction: ReactionKey,
        /// Text.
        message: String,
        /// The agent already got it as the first prompt of its restart: only record the send.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        given_at_launch: bool,
    },
    /// Start the exited agent again in its worktree, resumed, with these instructions as its
    /// first prompt where the agent takes one (see [`restart`]).
    RestartAgent {
        /// The instructions due.
        due: Vec<DueInstruction>,
    },
    /// Tell a human.
    Notify {
        /// Reaction, if one caused it.
        reaction: Option<ReactionKey>,
        /// Priority for routing.
        priority: Priority,
        /// Text.
        message: String,
        /// Whether this is an escalation.
        escalation: bool,
    },
    /// Merge the PR.
    Merge {
        /// Method.
        method: MergeMethod,
    },
    /// Look at the session's PR again now. What it said while the agent waited for a human
    /// (a failed check, a review) was not acted on then: an instruction typed onto the
    /// agent's dialog would have answered it (its Enter confirms the highlighted option).
    CheckPr,
    /// Write a log line (warnings for ignored events).
    Log {
        /// Text.
        message: String,
    },
}

impl Effect {
    /// Whether it starts or stops the agent or creates or removes its workspace (such effects
    /// run in commit order, see `LifecycleOrder`).
    pub fn is_lifecycle(&self) -> bool {
        matches!(
            self,
            Effect::StartRuntime { .. }
                | Effect::RestartAgent { .. }
                | Effect::DestroyRuntime
                | Effect::CleanupWorkspace
        )
    }
}

/// How the machine took the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The snapshot changed or effects are due: persist and run them.
    Applied,
    /// Nothing to do (e.g. killing a killed session); the reason says why.
    Noop(String),
    /// The request is not allowed in this state (HTTP 409); the reason says why.
    Rejected(String),
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The snapshot after the event.
    pub snapshot: SessionSnapshot,
    /// Effects to run after persisting, in order.
    pub effects: Vec<Effect>,
    /// Whether to persist and act.
    pub outcome: Outcome,
}

impl Step {
    /// Event-log data describing this step.
    pub fn event_data(&self, from: SessionState, event: &Event) -> serde_json::Value {
        json!({
            "from": from,
            "to": self.snapshot.session.state,
            "state": self.snapshot.session.state,
            "reason": self.snapshot.session.reason,
            "event": event.kind,
            "effects": self.effects,
        })
    }
}
