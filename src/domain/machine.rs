//! The session state machine: `step(snapshot, event, policy) -> Step`.
//!
//! Pure: no I/O, no clock (the time comes in the event), no actix. The `SessionActor` calls
//! `step`, persists the new snapshot and the event row in one transaction, and only then runs
//! the effects. Reaction trackers and timers are part of the snapshot, so they are persisted in
//! that same transaction and survive a crash (ao kept them in memory, reference §10 #2).
//!
//! Timers are data here: `step` adds or removes entries in `snapshot.timers`; the actor arms
//! or cancels real timers from the difference.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

mod host;
mod restart;

pub use host::{unreachable_reason, HOST_KEY};
pub use restart::{launch_message, pending_restart, DueInstruction, PendingRestart, RESTART_KEY};

/// Where a session's launch intent lives in its `meta`: when the machine decided to start a
/// runtime, committed before the runtime starts. After a crash the actor asks the runtime for
/// an agent of this session started since then (`Runtime::find`) and adopts it instead of
/// starting a second one. The runtime's name for the agent is a function of the session id
/// (the tmux session name, the process runtime's directory), so it is fixed before the start
/// too.
pub const LAUNCH_KEY: &str = "launch_at";

/// The `meta` key recording, per reaction, the PR failure a waiting human was told of (see
/// `tell_the_waiting_human`).
pub const TOLD_WHILE_WAITING: &str = "told_while_waiting";

/// The `meta` key of when the wait the session is in began, as notifications count waits: a
/// question asked again after the agent went back to work for longer than [`LATE_REPORT`] is
/// a new wait (answered at the terminal, then asked again), one asked again sooner is the
/// same wait seen again (a screen that flickered, a hook's late report), unless a model API
/// failure the agent gave up on came between. Notifications of one wait are one dedupe group
/// (`notify::routing`).
pub const WAITING_SINCE: &str = "waiting_since";

/// The `meta` key of when the agent last went back to work from a wait.
const WAIT_ENDED: &str = "wait_ended";

/// When the session's latest runtime start was decided, if the machine recorded it.
pub fn launch_intent(s: &SessionSnapshot) -> Option<DateTime<Utc>> {
    s.session
        .meta
        .get(LAUNCH_KEY)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

use super::keys::{ReactionKey, TimerKey};
use super::policy::{BudgetAction, EscalateAfter, MergeMethod, Policy, Priority, ReactionAction};
use super::question::{abridges, same_question};
use crate::domain::runtime_handle::RuntimeHandle;
use crate::domain::session::{
    Activity, PrRef, ReactionTracker, SessionSnapshot, SessionState, TimerRecord,
};

/// Appended to the merge-conflicts fingerprint when its episode ends, so the same conflict
/// coming back is a new episode.
pub const EPISODE_OVER: &str = "#cleared";
/// Failed automatic merges retried before a human is told (approved-and-green `retries`).
const DEFAULT_MERGE_RETRIES: u32 = 2;
/// How late a hook's report of a dialog may arrive after the dialog was answered:
/// Flotilla's Claude hooks time out after 10 s, so a report of the dialog is sent by then.
const LATE_REPORT: chrono::TimeDelta = chrono::TimeDelta::seconds(15);
/// Questions answered before the last one still kept (`meta.answered.earlier`) while their
/// hooks' reports may land: dialogs answered in quick succession.
const EARLIER_ANSWERED: usize = 4;

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

/// Applies one event to a session. See the module docs.
pub fn step(snapshot: &SessionSnapshot, event: &Event, policy: &Policy) -> Step {
    let at = micros(event.at);
    let mut m = Machine {
        s: snapshot.clone(),
        effects: Vec::new(),
        at,
        policy,
    };
    let kind = match &event.kind {
        EventKind::AgentIdle { since } => EventKind::AgentIdle {
            since: micros(*since),
        },
        k => k.clone(),
    };
    let outcome = m.apply(&kind);
    let outcome = match outcome {
        Outcome::Applied if m.s == *snapshot && m.effects.is_empty() => {
            Outcome::Noop("nothing changed".into())
        }
        o => o,
    };
    if outcome == Outcome::Applied {
        m.s.session.updated_at = at;
        m.abandon_watch();
    }
    Step {
        snapshot: m.s,
        effects: m.effects,
        outcome,
    }
}

/// Whether the session is a project's orchestrator (`flotilla start`).
pub fn is_orchestrator(s: &SessionSnapshot) -> bool {
    s.session.meta["role"] == "orchestrator"
}

/// Time as the store keeps it (microseconds), so what the actor holds after a step is exactly
/// what a reload from the store gives back.
pub fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::SubsecRound;
    t.trunc_subsecs(6)
}

struct Machine<'p> {
    s: SessionSnapshot,
    effects: Vec<Effect>,
    at: DateTime<Utc>,
    policy: &'p Policy,
}

use SessionState as S;

impl Machine<'_> {
    fn state(&self) -> S {
        self.s.session.state
    }

    fn set_state(&mut self, to: S, reason: Option<&str>) {
        self.s.session.state = to;
        self.s.session.reason = reason.map(str::to_string);
    }

    fn arm(&mut self, kind: TimerKey, deadline: DateTime<Utc>) {
        self.s.timers.insert(
            kind.to_string(),
            TimerRecord {
                kind: kind.to_string(),
                deadline,
            },
        );
    }

    fn disarm(&mut self, kind: TimerKey) {
        self.s.timers.remove(&kind.to_string());
    }

    fn ignore(&mut self, what: &str) -> Outcome {
        Outcome::Noop(format!("{what} ignored in state {}", self.state()))
    }

    /// Ends the session: no timers survive a terminal state, the runtime goes.
    fn end(&mut self, to: S, reason: &str) {
        self.set_state(to, Some(reason));
        self.s.timers.clear();
        self.clear_restart();
        self.s.session.activity = Activity::Exited;
        self.s.session.activity_at = Some(self.at);
        self.effects.push(Effect::DestroyRuntime);
    }

    /// Live states an agent works in without a PR (the stuck/idle watch applies).
    fn watched(&self) -> bool {
        // Orchestrators wait for humans and workers by design: never "stuck" (ao PR #2121).
        matches!(self.state(), S::Working | S::PrOpen) && !is_orchestrator(&self.s)
    }

    /// Every live state has a timed exit: stuck and needs_input (which wait for a human)
    /// end after `abandon_after`, so nothing is parked forever (ao #1933/#2025).
    fn abandon_watch(&mut self) {
        if matches!(self.state(), S::Stuck | S::NeedsInput) {
            if !self.s.has_timer(TimerKey::Abandon) {
                self.arm(TimerKey::Abandon, self.at + self.policy.abandon_after);
            }
        } else {
            self.disarm(TimerKey::Abandon);
        }
    }

    fn arm_idle_watch(&mut self, since: DateTime<Utc>) {
        let stuck = since + self.policy.stuck_threshold();
        self.arm(TimerKey::Stuck, stuck);
        let nudge = since + self.policy.idle_threshold();
        if nudge < stuck {
            self.arm(TimerKey::Idle, nudge);
        }
    }

    /// Records the launch intent ([`LAUNCH_KEY`]) with the step that asks for the start.
    fn intend_launch(&mut self) {
        if !self.s.session.meta.is_object() {
            self.s.session.meta = json!({});
        }
        self.s.session.meta[LAUNCH_KEY] = json!(self.at);
    }

    fn apply(&mut self, ev: &EventKind) -> Outcome {
        let st = self.state();
        match ev {
            EventKind::SpawnRequested => {
                if st != S::Spawning || self.s.has_timer(TimerKey::Spawn) {
                    return self.ignore("session.spawn_requested");
                }
                self.arm(TimerKey::Spawn, self.at + self.policy.spawn_timeout);
                self.intend_launch();
                self.effects.push(Effect::StartRuntime { resume: false });
                Outcome::Applied
            }
            EventKind::RuntimeStarted {
                handle,
                workspace,
                branch,
            } => {
                if st.is_terminal() {
                    // Killed while it was starting: take the late runtime down too.
                    self.s.session.runtime_handle = Some(RuntimeHandle::from_json(handle));
                    self.s.timers.clear();
                    self.effects.push(Effect::DestroyRuntime);
                    return Outcome::Applied;
                }
                if st != S::Spawning {
                    // An agent can report (e.g. needs_input) before its runtime's start is
                    // recorded: keep the state, but never lose the handle.
                    if self.s.session.runtime_handle.is_some() {
                        return self.ignore("runtime.started");
                    }
                    self.s.session.runtime_handle = Some(RuntimeHandle::from_json(handle));
                    self.disarm(TimerKey::Spawn);
                    return Outcome::Applied;
                }
                self.s.session.runtime_handle = Some(RuntimeHandle::from_json(handle));
                if workspace.is_some() {
                    self.s.session.workspace = workspace.clone();
                }
                if branch.is_some() {
                    self.s.session.branch = branch.clone();
                }
                self.disarm(TimerKey::Spawn);
                let to = if self.s.session.pr.is_some() {
                    S::PrOpen
                } else {
                    S::Working
                };
                self.set_state(to, None);
                self.s.session.activity = Activity::Active;
                self.s.session.activity_at = Some(self.at);
                // Until the agent says otherwise, "started" counts as the last activity, so an
                // agent that never shows a sign of life still reaches `stuck` in time.
                self.arm(TimerKey::Stuck, self.at + self.policy.stuck_threshold());
                Outcome::Applied
            }
            EventKind::SpawnFailed { reason } => {
                if st != S::Spawning {
                    return self.ignore("runtime.spawn_failed");
                }
                self.end(S::Errored, &format!("spawn_failed: {reason}"));
                Outcome::Applied
            }
            EventKind::AgentActive => {
                if st.is_terminal() || st == S::Merged {
                    return self.ignore("agent.active");
                }
                self.s.session.activity = Activity::Active;
                self.s.session.activity_at = Some(self.at);
                if st == S::NeedsInput {
                    self.s.session.meta[WAIT_ENDED] = serde_json::json!(self.at);
                }
                if matches!(st, S::Stuck | S::NeedsInput) {
                    self.back_to_work("agent_active");
                }
                if self.watched() {
                    self.disarm(TimerKey::Idle);
                    self.arm(TimerKey::Stuck, self.at + self.policy.stuck_threshold());
                }
                Outcome::Applied
            }
            EventKind::AgentIdle { since } => {
                if st.is_terminal() || st == S::Merged || st == S::Spawning {
                    return self.ignore("agent.idle");
                }
                if self.s.session.activity == Activity::Idle
                    && self.s.session.activity_at == Some(*since)
                {
                    return Outcome::Noop("already idle".into());
                }
                self.s.session.activity = Activity::Idle;
                self.s.session.activity_at = Some(*since);
                if st == S::NeedsInput {
                    // The question was answered and the turn ended: idle is not "still asking"
                    // (ao #9 kept sessions in needs_input after the agent finished).
                    self.back_to_work("input_answered");
                }
                if self.watched() {
                    self.arm_idle_watch(*since);
                }
                Outcome::Applied
            }
            EventKind::AgentWaitingInput { question } => {
                if st.is_terminal() || st == S::Merged {
                    return self.ignore("agent.waiting_input");
                }
                let asked = self.s.session.meta["question"].as_str().map(str::to_string);
                let newer = match (question.as_deref(), asked.as_deref()) {
                    (Some(q), Some(a)) => !same_question(a, q),
                    (q, _) => q.is_some(),
                };
                let waiting =
                    st == S::NeedsInput && self.s.session.activity == Activity::WaitingInput;
                if waiting && newer && self.just_answered(question.as_deref()) {
                    // A dialog just answered, seen late (its hook, or a log or screen that
                    // lags the agent) while the agent asks the next: the agent cannot ask
                    // both, and the next is the newer. Replacing it would have the human
                    // answer a question the screen no longer shows.
                    return Outcome::Noop("the question just answered; a newer one waits".into());
                }
                if waiting && !newer {
                    // The same wait seen again (by the hook, then the screen): its start stays.
                    // A fuller wording of it (the hook's, after the screen's cut short) is
                    // kept, and asks nothing again; unless a dialog just answered had that
                    // wording too (its hook's late report would name another tool of the
                    // server).
                    if let (Some(q), Some(a)) = (question, asked.as_deref()) {
                        if abridges(a, q) && !self.just_answered(Some(q)) {
                            self.s.session.meta["question"] = serde_json::json!(q);
                            return Outcome::Applied;
                        }
                    }
                    return Outcome::Noop("already needs input".into());
                }
                // The question the agent went back to work from, seen again at once, is that
                // wait still (see `WAITING_SINCE`).
                if newer || !self.ended_a_wait_within(LATE_REPORT) {
                    self.s.session.meta[WAITING_SINCE] = serde_json::json!(self.at);
                }
                self.s.session.activity = Activity::WaitingInput;
                self.s.session.activity_at = Some(self.at);
                match question {
                    Some(q) => self.s.session.meta["question"] = serde_json::json!(q),
                    None => {
                        if let Some(m) = self.s.session.meta.as_object_mut() {
                            m.remove("question");
                        }
                    }
                }
                self.disarm(TimerKey::Stuck);
                self.disarm(TimerKey::Idle);
                self.disarm(TimerKey::Spawn);
                if st != S::NeedsInput {
                    self.set_state(S::NeedsInput, Some("awaiting_user_input"));
                }
                let message = match question {
                    Some(q) => format!("The agent is waiting for input: {q}"),
                    None => "The agent is waiting for input.".to_string(),
                };
                self.react(ReactionKey::AgentNeedsInput, None, &message);
                Outcome::Applied
            }
            EventKind::InputAnswered { question } => {
                let asked = self.s.session.meta["question"].as_str();
                if st != S::NeedsInput {
                    // The agent was seen back at work (its dialog gone from the screen) before
                    // the answer's own event: the answer is still recorded, once, so that the
                    // dialog's late hook report asks nobody again.
                    return match (question.as_deref(), asked) {
                        (Some(q), Some(a))
                            if same_question(a, q)
                                && !st.is_terminal()
                                && !self.just_answered(Some(a)) =>
                        {
                            self.record_answered();
                            Outcome::Applied
                        }
                        _ => self.ignore("agent.input_answered"),
                    };
                }
                if let (Some(q), Some(a)) = (question.as_deref(), asked) {
                    if !same_question(a, q) {
                        // Answered while the agent already asks the next: kept among the
                        // earlier answers, so that the answered dialog's late hook report is
                        // not taken for a newer question and put in place of the one waiting.
                        return if self.just_answered(Some(q)) {
                            Outcome::Noop("a newer question waits".into())
                        } else {
                            self.record_answered_earlier(q);
                            Outcome::Applied
                        };
                    }
                }
                let out = self.apply(&EventKind::AgentActive);
                // Back to work because a human answered (not because the agent showed life).
                let to = self.state();
                self.set_state(to, Some("input_answered"));
                self.record_answered();
                out
            }
            EventKind::AgentExited {
                code,
                output,
                failure,
            } => {
                if st.is_terminal() {
                    return self.ignore("agent.exited");
                }
                let working_on_pr = self.s.session.pr.is_some()
                    && matches!(st, S::NeedsInput | S::Working | S::Stuck);
                if st.has_open_pr() || st == S::Merged || working_on_pr {
                    // The PR outlives the agent: its lifecycle goes on (a later send restores),
                    // also when the agent was working on it or waiting on a human (the
                    // question goes with the agent; the PR is looked at again).
                    if working_on_pr {
                        self.back_to_work("agent_exited");
                    }
                    self.s.session.activity = Activity::Exited;
                    self.s.session.activity_at = Some(self.at);
                    self.disarm(TimerKey::Stuck);
                    self.disarm(TimerKey::Idle);
                    return Outcome::Applied;
                }
                match (code, failure) {
                    (Some(0), None) => self.end(S::Done, "agent_exited_0"),
                    (Some(0), Some(failure)) => {
                        let failure: String = failure.trim().chars().take(200).collect();
                        self.end(S::Errored, &format!("agent_failed: {failure}"));
                        self.react(
                            ReactionKey::AgentExited,
                            None,
                            &format!(
                                "The agent exited after an error it could not get past: {failure}"
                            ),
                        );
                    }
                    (Some(c), _) => {
                        // The reason names the cause: the agent's last line of output.
                        let last = output
                            .as_deref()
                            .and_then(|o| o.lines().rev().find(|l| !l.trim().is_empty()))
                            .map(|l| l.trim().chars().take(200).collect::<String>());
                        let reason = match &last {
                            Some(l) => format!("agent_exited_{c}: {l}"),
                            None => format!("agent_exited_{c}"),
                        };
                        self.end(S::Errored, &reason);
                        // A death by signal (the out-of-memory killer's SIGKILL) says so.
                        let status = match crate::domain::exit_status::killed_by(*c) {
                            Some(signal) => format!("status {c}, killed by {signal}"),
                            None => format!("status {c}"),
                        };
                        let message = match output.as_deref().map(str::trim) {
                            Some(o) if !o.is_empty() => {
                                format!("The agent exited with {status}. Its last output:\n{o}")
                            }
                            _ => format!("The agent exited with {status}."),
                        };
                        self.react(ReactionKey::AgentExited, None, &message);
                    }
                    (None, _) => {
                        self.end(S::Killed, "runtime_lost");
                        self.react(
                            ReactionKey::AgentExited,
                            None,
                            "The agent's runtime vanished.",
                        );
                    }
                }
                Outcome::Applied
            }
            EventKind::PrOpened { pr } => {
                if st.is_terminal() || st == S::Merged {
                    return self.ignore("pr.opened");
                }
                let changed = self.s.session.pr.as_ref() != Some(pr);
                self.s.session.pr = Some(pr.clone());
                if matches!(st, S::Working | S::Stuck) {
                    self.set_state(S::PrOpen, Some("pr_created"));
                } else if !changed {
                    return Outcome::Noop("PR already known".into());
                }
                Outcome::Applied
            }
            EventKind::CiFailed {
                summary,
                fingerprint,
            } => {
                if st == S::NeedsInput && self.s.session.pr.is_some() {
                    return self.tell_the_waiting_human(
                        ReactionKey::CiFailed,
                        fingerprint,
                        &format!("CI failed on the PR.\n\n{summary}"),
                    );
                }
                if !self.pr_live() {
                    return self.ignore("ci.failed");
                }
                self.set_state(S::CiFailed, Some("ci_failing"));
                self.react(
                    ReactionKey::CiFailed,
                    Some(fingerprint),
                    &format!("CI failed on your PR. Fix it and push.\n\n{summary}"),
                );
                Outcome::Applied
            }
            EventKind::CiPassed => {
                if st != S::CiFailed {
                    return self.ignore("ci.passed");
                }
                self.set_state(S::PrOpen, Some("ci_passing"));
                Outcome::Applied
            }
            EventKind::ReviewPending => {
                if !matches!(st, S::PrOpen) {
                    return self.ignore("review.pending");
                }
                self.set_state(S::ReviewPending, Some("review_pending"));
                Outcome::Applied
            }
            EventKind::ChangesRequested {
                summary,
                fingerprint,
            } => {
                if st == S::NeedsInput && self.s.session.pr.is_some() {
                    return self.tell_the_waiting_human(
                        ReactionKey::ChangesRequested,
                        fingerprint,
                        &format!("A reviewer requested changes on the PR.\n\n{summary}"),
                    );
                }
                if !self.pr_live() {
                    return self.ignore("review.changes_requested");
                }
                self.set_state(S::ChangesRequested, Some("changes_requested"));
                self.react(
                    ReactionKey::ChangesRequested,
                    Some(fingerprint),
                    &format!(
                        "A reviewer requested changes. Address each comment and push.\n\n{summary}"
                    ),
                );
                Outcome::Applied
            }
            EventKind::Approved => {
                if !self.pr_live() || st == S::Mergeable {
                    return self.ignore("review.approved");
                }
                self.set_state(S::Approved, Some("approved"));
                Outcome::Applied
            }
            EventKind::MergeReady => {
                if !self.pr_live() {
                    return self.ignore("merge.ready");
                }
                if st == S::Mergeable {
                    return Outcome::Noop("already mergeable".into());
                }
                self.set_state(S::Mergeable, Some("merge_ready"));
                self.approved_and_green();
                Outcome::Applied
            }
            EventKind::MergeConflicts {
                summary,
                fingerprint,
            } => {
                if !self.pr_live() {
                    return self.ignore("merge.conflicts");
                }
                let before = self.s.tracker(ReactionKey::MergeConflicts).cloned();
                self.react(
                    ReactionKey::MergeConflicts,
                    Some(fingerprint),
                    &format!("Your PR conflicts with its base branch. Rebase on the base branch, resolve the conflicts and push.\n\n{summary}"),
                );
                if self.s.tracker(ReactionKey::MergeConflicts) == before.as_ref() {
                    return Outcome::Noop("conflict episode already handled".into());
                }
                Outcome::Applied
            }
            EventKind::ConflictsCleared => self.end_episode(ReactionKey::MergeConflicts),
            EventKind::BotComments {
                summary,
                fingerprint,
            } => {
                if !self.pr_live() {
                    return self.ignore("review.bot_comments");
                }
                let before = self.s.tracker(ReactionKey::BugbotComments).cloned();
                self.react(
                    ReactionKey::BugbotComments,
                    Some(fingerprint),
                    &format!("Automated review left comments on your PR. Address each one (or explain why it does not apply) and push.\n\n{summary}"),
                );
                if self.s.tracker(ReactionKey::BugbotComments) == before.as_ref() {
                    return Outcome::Noop("these bot comments were already sent".into());
                }
                Outcome::Applied
            }
            EventKind::BotCommentsResolved => self.end_episode(ReactionKey::BugbotComments),
            EventKind::ReviewerComments {
                summary,
                fingerprint,
            } => {
                if !self.pr_live() {
                    return self.ignore("review.comments");
                }
                self.react(
                    ReactionKey::ReviewerComments,
                    Some(fingerprint),
                    &format!("Reviewers wrote on your PR. Address what they ask (or answer why not) and push.\n\n{summary}"),
                );
                Outcome::Applied
            }
            EventKind::MergeFailed { reason } => {
                if st != S::Mergeable {
                    // A refused manual merge is recorded on a live PR; nothing else changes.
                    if self.pr_live() {
                        return Outcome::Applied;
                    }
                    return self.ignore("merge.failed");
                }
                // Back to approved: the next observation that finds the PR still ready merges
                // again, until the reaction's retries are spent and a human is told.
                self.set_state(S::Approved, Some("merge_failed"));
                let key = ReactionKey::ApprovedAndGreen;
                let retries = self
                    .policy
                    .reaction(key)
                    .and_then(|r| r.retries)
                    .unwrap_or(DEFAULT_MERGE_RETRIES);
                let spent = self
                    .s
                    .tracker(key)
                    .is_some_and(|t| !t.escalated && t.attempts > i64::from(retries));
                if spent {
                    if let Some(t) = self.s.tracker_mut(key) {
                        t.escalated = true;
                    }
                    self.effects.push(Effect::Notify {
                        reaction: Some(key),
                        priority: Priority::Action,
                        message: format!(
                            "Auto-merge failed {} times; merge it by hand. Last error: {reason}",
                            retries + 1
                        ),
                        escalation: true,
                    });
                }
                Outcome::Applied
            }
            EventKind::PrMerged => {
                if st.is_terminal() || st == S::Merged {
                    return self.ignore("pr.merged");
                }
                self.set_state(S::Merged, Some("pr_merged"));
                self.s.trackers.clear();
                self.s.timers.clear();
                self.arm(TimerKey::MergeGrace, self.at + self.policy.merge_grace);
                Outcome::Applied
            }
            EventKind::PrClosed => {
                if !self.pr_live() {
                    return self.ignore("pr.closed");
                }
                self.s.session.pr = None;
                self.s.trackers.clear();
                self.s.timers.retain(|k, _| !TimerKey::is_escalation(k));
                self.set_state(S::Working, Some("pr_closed_waiting_decision"));
                self.arm(TimerKey::Stuck, self.at + self.policy.stuck_threshold());
                self.react(
                    ReactionKey::PrClosed,
                    None,
                    "The PR was closed without merging: decide whether to resume or kill the session.",
                );
                Outcome::Applied
            }
            EventKind::KillRequested { reason } => {
                if st.is_terminal() {
                    return Outcome::Noop(format!("session {} is already {st}", self.s.session.id));
                }
                self.end(S::Killed, reason);
                // A killed session keeps its row and branch as history, not its worktree.
                self.effects.push(Effect::CleanupWorkspace);
                Outcome::Applied
            }
            EventKind::RestoreRequested => {
                if !(st.is_terminal() || st == S::Stuck) {
                    return Outcome::Rejected(format!(
                        "session {} is {st}; only errored, killed, done, terminated or stuck sessions can be restored",
                        self.s.session.id
                    ));
                }
                if st == S::Stuck {
                    self.effects.push(Effect::DestroyRuntime);
                }
                if st == S::Terminated {
                    // Its PR ended; a restored session starts without one.
                    self.s.session.pr = None;
                }
                self.set_state(S::Spawning, Some("restored"));
                // The old runtime is gone (or being destroyed); a new one is started.
                self.s.session.runtime_handle = None;
                self.s.session.activity = Activity::Unknown;
                self.s.session.activity_at = None;
                self.s.timers.clear();
                self.arm(TimerKey::Spawn, self.at + self.policy.spawn_timeout);
                self.intend_launch();
                self.effects.push(Effect::StartRuntime { resume: true });
                Outcome::Applied
            }
            EventKind::AgentRestarted { handle, prompted } => self.restarted(handle, *prompted),
            EventKind::RestartFailed { reason } => {
                if pending_restart(&self.s).is_none() {
                    return self.ignore("agent.restart_failed");
                }
                self.restart_failed(reason);
                Outcome::Applied
            }
            EventKind::AgentReported {
                state,
                note,
                pr,
                hook,
            } => self.reported(*state, note.as_deref(), pr.as_ref(), *hook),
            EventKind::UsageObserved {
                usage,
                project_usd,
                unpriced_models,
            } => self.usage(*usage, *project_usd, unpriced_models),
            EventKind::AgentApiError {
                logged_at,
                status,
                message,
                attempt,
                max_retries,
            } => {
                if st.is_terminal() || st == S::Merged {
                    return self.ignore("agent.api_error");
                }
                // The last failure, for the session page; the event row is its history.
                self.s.session.meta["api_error"] = serde_json::json!({
                    "logged_at": logged_at, "status": status, "message": message,
                    "attempt": attempt, "max_retries": max_retries,
                });
                if attempt.is_none() {
                    // A turn given up on is news: the wait it leads to is a new one, even
                    // asked seconds after the last in the same words (a human's "try again"
                    // that failed at once), not that wait seen again (see `WAITING_SINCE`).
                    if let Some(m) = self.s.session.meta.as_object_mut() {
                        m.remove(WAIT_ENDED);
                    }
                }
                Outcome::Applied
            }
            EventKind::TimerFired { kind } => self.timer(kind),
            EventKind::HostUnreachable { host } => self.host_unreachable(host),
            EventKind::HostReachable { host } => self.host_reachable(host),
            EventKind::ActorGaveUp { reason } => {
                if st.is_terminal() {
                    return self.ignore("session.actor_gave_up");
                }
                self.end(S::Errored, reason);
                Outcome::Applied
            }
        }
    }

    /// A self-report is stronger evidence than inference, but only for live workers.
    fn reported(
        &mut self,
        state: ReportedState,
        note: Option<&str>,
        pr: Option<&PrRef>,
        hook: bool,
    ) -> Outcome {
        let st = self.state();
        if is_orchestrator(&self.s) {
            return Outcome::Rejected("orchestrator sessions do not report".into());
        }
        if st.is_terminal() || st == S::Merged {
            return Outcome::Rejected(format!(
                "session {} is {st}; reports are not accepted",
                self.s.session.id
            ));
        }
        use ReportedState as R;
        let kind = match state {
            R::NeedsInput => EventKind::AgentWaitingInput {
                question: note.map(str::to_string),
            },
            R::PrCreated | R::DraftPrCreated | R::ReadyForReview if pr.is_some() => {
                EventKind::PrOpened {
                    pr: pr.cloned().unwrap_or(PrRef {
                        number: 0,
                        url: String::new(),
                    }),
                }
            }
            R::Waiting | R::ReadyForReview | R::Completed => {
                EventKind::AgentIdle { since: self.at }
            }
            _ => EventKind::AgentActive,
        };
        // A hook runs beside the dialog it reports, so its report can land after a human
        // answered that dialog: recorded, not a wait of its own. (Another question is a new
        // wait, however soon it comes.)
        let out =
            if hook && state == R::NeedsInput && st != S::NeedsInput && self.just_answered(note) {
                Outcome::Noop("the hook reported the dialog just answered".into())
            } else {
                self.apply(&kind)
            };
        // A report is recorded even when it changes nothing else; whether a hook made it tells
        // the session's looks that its dialog may not be drawn yet.
        self.s.session.meta["last_report"] =
            serde_json::json!({"state": state, "at": self.at, "hook": hook});
        match out {
            Outcome::Noop(_) => Outcome::Applied,
            o => o,
        }
    }

    /// Whether the agent went back to work from a wait less than `ago` ago.
    fn ended_a_wait_within(&self, ago: chrono::TimeDelta) -> bool {
        self.s.session.meta[WAIT_ENDED]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| self.at - t.with_timezone(&Utc) < ago)
    }

    /// Whether `question` is one a human answered less than [`LATE_REPORT`] ago: the last
    /// answered or one answered just before it (two dialogs answered in quick succession,
    /// both hooks late).
    fn just_answered(&self, question: Option<&str>) -> bool {
        question.is_some_and(|q| self.answered_recently().any(|(a, _)| same_question(a, q)))
    }

    /// Records the question asked as answered now: output that has not changed since still
    /// shows it, and that is not a new one (the session actor's probe). The questions
    /// answered before it within [`LATE_REPORT`] are kept too (newest first): each dialog's
    /// hook may still report it.
    fn record_answered(&mut self) {
        let answered = self.s.session.meta["question"].clone();
        let earlier: Vec<serde_json::Value> = self
            .answered_recently()
            .map(|(q, at)| serde_json::json!({"question": q, "at": at}))
            .take(EARLIER_ANSWERED)
            .collect();
        self.s.session.meta["answered"] =
            serde_json::json!({"question": answered, "at": self.at, "earlier": earlier});
    }

    /// Records `question` as answered now among the earlier answers, the last answer
    /// (`meta.answered`'s question and time, which notifications group by) unchanged.
    fn record_answered_earlier(&mut self, question: &str) {
        let earlier: Vec<serde_json::Value> =
            std::iter::once(serde_json::json!({"question": question, "at": self.at}))
                .chain(
                    self.s.session.meta["answered"]["earlier"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .cloned(),
                )
                .take(EARLIER_ANSWERED)
                .collect();
        self.s.session.meta["answered"]["earlier"] = serde_json::json!(earlier);
    }

    /// The questions answered less than [`LATE_REPORT`] ago, newest first, with when:
    /// `meta.answered` and its `earlier` ones (absent in a record written before them).
    fn answered_recently(&self) -> impl Iterator<Item = (&str, DateTime<Utc>)> + '_ {
        let answered = &self.s.session.meta["answered"];
        let earlier = answered["earlier"].as_array().into_iter().flatten();
        std::iter::once(answered)
            .chain(earlier)
            .filter_map(|a| {
                let at = DateTime::parse_from_rfc3339(a["at"].as_str()?).ok()?;
                Some((a["question"].as_str()?, at.with_timezone(&Utc)))
            })
            .filter(|(_, at)| self.at - *at < LATE_REPORT)
    }

    /// Records spend; crossing the budget stops the agent or escalates, as configured. Spend
    /// without a price (`unpriced_models`) is recorded in `meta.unpriced_models`, and a human
    /// is told once when a US-dollar budget cannot count it.
    fn usage(
        &mut self,
        mut usage: Usage,
        project_usd: Option<f64>,
        unpriced: &[String],
    ) -> Outcome {
        let old: Option<Usage> = serde_json::from_value(self.s.session.meta["usage"].clone()).ok();
        if self.state().is_terminal() {
            // A session that ended keeps the cost it had when a last reading has none.
            if let (None, Some(o)) = (usage.cost_usd, old.filter(|o| o.cost_usd.is_some())) {
                usage.cost_usd = o.cost_usd;
                usage.cost_source = o.cost_source;
            }
        }
        if old == Some(usage) {
            return Outcome::Noop("usage unchanged".into());
        }
        self.s.session.meta["usage"] = serde_json::to_value(usage).unwrap_or_default();
        if self.state().is_terminal() {
            // The agent's final figure (written as it exits) is kept; no budget acts any more,
            // and a terminal session holds no timers.
            self.s.timers.clear();
            return Outcome::Applied;
        }
        let newly_unpriced =
            !unpriced.is_empty() && self.s.session.meta["unpriced_models"].is_null();
        if unpriced.is_empty() {
            if let Some(m) = self.s.session.meta.as_object_mut() {
                m.remove("unpriced_models");
            }
        } else {
            self.s.session.meta["unpriced_models"] = serde_json::json!(unpriced);
        }
        let Some(b) = self.policy.budget else {
            return Outcome::Applied;
        };
        if newly_unpriced && (b.session_usd.is_some() || b.project_usd.is_some()) {
            self.effects.push(Effect::Notify {
                reaction: Some(ReactionKey::Budget),
                priority: Priority::Warning,
                message: format!(
                    "No price for model {}: this session's cost is unknown and its dollar \
                     budget cannot count it. Add the model under `pricing:` in the config.",
                    unpriced.join(", ")
                ),
                escalation: false,
            });
        }
        let tokens = usage.input_tokens + usage.output_tokens;
        let over = match (b.session_usd, usage.cost_usd, b.session_tokens) {
            (Some(max), Some(cost), _) if cost >= max => {
                Some(format!("spent ${cost:.2} of a ${max:.2} budget"))
            }
            (_, _, Some(max)) if tokens >= max => {
                Some(format!("used {tokens} of a {max}-token budget"))
            }
            _ => match (b.project_usd, project_usd) {
                (Some(max), Some(spent)) if spent >= max => Some(format!(
                    "the project spent ${spent:.2} of its ${max:.2} budget"
                )),
                _ => None,
            },
        };
        let Some(why) = over else {
            return Outcome::Applied;
        };
        if self
            .s
            .tracker(ReactionKey::Budget)
            .is_some_and(|t| t.escalated)
        {
            return Outcome::Applied;
        }
        self.bump(ReactionKey::Budget, None);
        if let Some(t) = self.s.tracker_mut(ReactionKey::Budget) {
            t.escalated = true;
        }
        let message = match b.action {
            BudgetAction::Stop => {
                self.end(S::Killed, "budget_exceeded");
                format!("Budget exceeded ({why}): the agent was stopped.")
            }
            BudgetAction::Escalate => format!("Budget exceeded ({why}): the agent keeps going."),
        };
        self.effects.push(Effect::Notify {
            reaction: Some(ReactionKey::Budget),
            priority: Priority::Urgent,
            message,
            escalation: true,
        });
        Outcome::Applied
    }

    /// Ends the open episode of a fingerprinted reaction (its fingerprint gets
    /// [`EPISODE_OVER`]), so the same trigger returning is sent again. Attempts stay (a
    /// flapping condition must not reset them, ao #1531); the episode's escalation is moot.
    fn end_episode(&mut self, key: ReactionKey) -> Outcome {
        let Some(fp) = self.s.tracker_mut(key).and_then(|t| t.fingerprint.as_mut()) else {
            return Outcome::Noop(format!("no {} episode", key.as_str()));
        };
        if fp.ends_with(EPISODE_OVER) {
            return Outcome::Noop(format!("no {} episode open", key.as_str()));
        }
        fp.push_str(EPISODE_OVER);
        self.disarm(TimerKey::Escalate(key));
        Outcome::Applied
    }

    /// Whether what triggered `reaction` is still the case: an escalation deadline that
    /// passes after the agent fixed CI or answered the review tells nobody anything.
    fn condition_holds(&self, reaction: ReactionKey) -> bool {
        let st = self.state();
        match reaction {
            ReactionKey::CiFailed => st == S::CiFailed,
            ReactionKey::ChangesRequested => st == S::ChangesRequested,
            ReactionKey::MergeConflicts | ReactionKey::BugbotComments => self
                .s
                .tracker(reaction)
                .and_then(|t| t.fingerprint.as_deref())
                .is_some_and(|fp| !fp.ends_with(EPISODE_OVER)),
            ReactionKey::AgentStuck => st == S::Stuck,
            ReactionKey::AgentNeedsInput => st == S::NeedsInput,
            ReactionKey::AgentIdle => self.s.session.activity == Activity::Idle,
            _ => true,
        }
    }

    /// News of the PR while the agent waits for a human: nothing goes to the agent (an
    /// instruction typed onto its dialog would answer it; it goes once the wait ends, see
    /// [`Self::back_to_work`]), but the human asked is told, once per failure (recorded in
    /// `meta.told_while_waiting`), since it may change their answer. A failure the agent was
    /// already sent is no news.
    fn tell_the_waiting_human(
        &mut self,
        reaction: ReactionKey,
        fingerprint: &str,
        news: &str,
    ) -> Outcome {
        let key = reaction.as_str();
        let sent = self
            .s
            .tracker(reaction)
            .and_then(|t| t.fingerprint.as_deref());
        let told = self.s.session.meta[TOLD_WHILE_WAITING][key].as_str();
        if sent == Some(fingerprint) || told == Some(fingerprint) {
            return Outcome::Noop(format!("{key} already known while the agent waits"));
        }
        if !self.s.session.meta.is_object() {
            self.s.session.meta = serde_json::json!({});
        }
        self.s.session.meta[TOLD_WHILE_WAITING][key] = serde_json::json!(fingerprint);
        let asked = match self.s.session.meta["question"].as_str() {
            Some(q) => format!(" ({q})"),
            None => String::new(),
        };
        self.effects.push(Effect::Notify {
            reaction: None,
            priority: Priority::Action,
            message: format!(
                "While the agent waits for your answer{asked}: {news}\n\nThe agent is told once it has your answer."
            ),
            escalation: false,
        });
        Outcome::Applied
    }

    /// Leaves `needs_input` or `stuck` for the state work goes on in: `pr_open` with a PR,
    /// else `working`. Back from a human's question with a PR, the PR is looked at again
    /// ([`Effect::CheckPr`]): its news of the wait is acted on now, and the state it implies
    /// (failing, reviewed, approved) is found again.
    fn back_to_work(&mut self, reason: &str) {
        if self.s.session.pr.is_none() {
            self.set_state(S::Working, Some(reason));
            return;
        }
        if self.state() == S::NeedsInput {
            self.effects.push(Effect::CheckPr);
        }
        self.set_state(S::PrOpen, Some(reason));
    }

    fn pr_live(&self) -> bool {
        self.state().has_open_pr()
            || (self.s.session.pr.is_some() && matches!(self.state(), S::Working | S::Stuck))
    }

    fn timer(&mut self, kind: &str) -> Outcome {
        let Some(t) = self.s.timers.get(kind).cloned() else {
            return Outcome::Noop(format!("timer {kind} is not armed"));
        };
        if t.deadline > self.at {
            return Outcome::Noop(format!("timer {kind} is not due yet"));
        }
        self.s.timers.remove(kind);
        let st = self.state();
        if st.is_terminal() {
            // Stale timers of an ended session (e.g. written by an older version) go too.
            self.s.timers.clear();
            return Outcome::Applied;
        }
        match kind.parse::<TimerKey>() {
            Ok(TimerKey::Spawn) => {
                if st == S::Spawning {
                    self.end(S::Errored, "spawn_timeout");
                } else if pending_restart(&self.s).is_some() {
                    self.restart_failed("the agent did not start in time");
                }
            }
            Ok(TimerKey::Stuck) => {
                if self.watched() {
                    // Stuck needs positive evidence: a timestamped quiet period. `Unknown`
                    // activity never makes a session stuck (reference §5).
                    let since = self.s.session.activity_at.unwrap_or(self.at);
                    let quiet =
                        matches!(self.s.session.activity, Activity::Idle | Activity::Active);
                    if quiet && since + self.policy.stuck_threshold() <= self.at {
                        self.disarm(TimerKey::Idle);
                        self.set_state(S::Stuck, Some("idle_past_threshold"));
                        self.react(
                            ReactionKey::AgentStuck,
                            None,
                            "The agent has been idle past the stuck threshold.",
                        );
                    } else {
                        self.arm(
                            TimerKey::Stuck,
                            self.at.max(since) + self.policy.stuck_threshold(),
                        );
                    }
                }
            }
            Ok(TimerKey::Idle) => {
                if self.watched() && self.s.session.activity == Activity::Idle {
                    self.react(
                        ReactionKey::AgentIdle,
                        None,
                        "You appear to be idle. Continue with your task; if you are blocked, say what you need.",
                    );
                }
            }
            Ok(TimerKey::Abandon) => {
                if matches!(st, S::Stuck | S::NeedsInput) {
                    let hours = self.policy.abandon_after.num_hours();
                    self.end(S::Errored, "abandoned");
                    self.effects.push(Effect::Notify {
                        reaction: None,
                        priority: Priority::Urgent,
                        message: format!(
                            "No progress for {hours}h while {st}: the agent was stopped; restore the session to continue."
                        ),
                        escalation: true,
                    });
                }
            }
            Ok(TimerKey::MergeGrace) => {
                if st == S::Merged {
                    self.end(S::Terminated, "pr_merged");
                    self.effects.push(Effect::CleanupWorkspace);
                }
            }
            Ok(TimerKey::Escalate(key)) => {
                let due = self.s.tracker(key).map(|t| !t.escalated).unwrap_or(false);
                if due && !st.is_terminal() && self.condition_holds(key) {
                    self.escalate(key);
                }
            }
            // An escalation of a reaction this version does not know has no tracker to
            // escalate: it goes quietly.
            Err(_) if TimerKey::is_escalation(kind) => {}
            Err(_) => {
                self.effects.push(Effect::Log {
                    message: format!("unknown timer {kind} dropped"),
                });
            }
        }
        Outcome::Applied
    }

    fn approved_and_green(&mut self) {
        let key = ReactionKey::ApprovedAndGreen;
        let Some(r) = self.policy.reaction(key).cloned() else {
            return;
        };
        self.bump(key, None);
        if r.auto && (r.auto_merge || r.action == ReactionAction::AutoMerge) {
            if self.s.tracker(key).is_some_and(|t| t.escalated) {
                return; // merges kept failing and a human was told: theirs now
            }
            self.effects.push(Effect::Merge {
                method: r.merge_method,
            });
        } else {
            self.effects.push(Effect::Notify {
                reaction: Some(key),
                priority: r.priority.unwrap_or(Priority::Action),
                message: r
                    .message
                    .unwrap_or_else(|| "The PR is approved and green: ready to merge.".into()),
                escalation: false,
            });
        }
    }

    /// Counts one firing of `key`; returns `false` if this fingerprint was already handled.
    fn bump(&mut self, key: ReactionKey, fingerprint: Option<&String>) -> bool {
        let at = self.at;
        let t = self
            .s
            .trackers
            .entry(key.as_str().to_string())
            .or_insert_with(|| ReactionTracker {
                reaction: key.as_str().to_string(),
                attempts: 0,
                first_triggered_at: at,
                last_triggered_at: at,
                fingerprint: None,
                escalated: false,
            });
        if fingerprint.is_some() && t.attempts > 0 && t.fingerprint.as_ref() == fingerprint {
            return false;
        }
        t.attempts += 1;
        t.last_triggered_at = at;
        if fingerprint.is_some() {
            t.fingerprint = fingerprint.cloned();
        }
        true
    }

    /// Fires a reaction: counts it, then sends, notifies or escalates as its policy says.
    fn react(&mut self, key: ReactionKey, fingerprint: Option<&String>, default_message: &str) {
        let Some(r) = self.policy.reaction(key).cloned() else {
            return;
        };
        if !self.bump(key, fingerprint) {
            return;
        }
        let message = r.message.clone().unwrap_or_else(|| default_message.into());
        match r.action {
            ReactionAction::Notify | ReactionAction::AutoMerge => {
                self.effects.push(Effect::Notify {
                    reaction: Some(key),
                    priority: r.priority.unwrap_or(Priority::Info),
                    message,
                    escalation: false,
                });
            }
            ReactionAction::SendToAgent => {
                let Some(t) = self.s.tracker(key).cloned() else {
                    return;
                };
                if t.escalated {
                    // Escalation fires once; later triggers wait for a human.
                    return;
                }
                let over = match r.escalate_after {
                    Some(EscalateAfter::Attempts(n)) => t.attempts > i64::from(n),
                    Some(EscalateAfter::After(d)) => t.first_triggered_at + d <= self.at,
                    None => false,
                } || r.retries.is_some_and(|n| t.attempts > i64::from(n));
                if over {
                    self.escalate(key);
                } else if !r.auto {
                    self.effects.push(Effect::Notify {
                        reaction: Some(key),
                        priority: r.priority.unwrap_or(Priority::Info),
                        message,
                        escalation: false,
                    });
                } else {
                    if self.agent_gone() {
                        self.restart_for(key, message);
                    } else {
                        self.effects.push(Effect::SendToAgent {
                            reaction: key,
                            message,
                            given_at_launch: false,
                        });
                    }
                    if let Some(EscalateAfter::After(d)) = r.escalate_after {
                        let kind = TimerKey::Escalate(key);
                        if !self.s.has_timer(kind) {
                            self.arm(kind, t.first_triggered_at + d);
                        }
                    }
                }
            }
        }
    }

    fn escalate(&mut self, key: ReactionKey) {
        let priority = self
            .policy
            .reaction(key)
            .and_then(|r| r.priority)
            .unwrap_or(Priority::Urgent);
        let attempts = match self.s.tracker_mut(key) {
            Some(t) => {
                t.escalated = true;
                t.attempts
            }
            None => 0,
        };
        self.disarm(TimerKey::Escalate(key));
        self.effects.push(Effect::Notify {
            reaction: Some(key),
            priority,
            message: format!(
                "Reaction {} escalated after {attempts} attempt(s): a human is needed.",
                key.as_str()
            ),
            escalation: true,
        });
    }
}

#[cfg(test)]
mod tests;
