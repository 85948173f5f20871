//! The session state machine: `step(snapshot, event, policy) -> Step`.
//!
//! Pure: no I/O, no clock (the time comes in the event), no actix. The `SessionActor` calls
//! `step`, persists the new snapshot and the event row in one transaction, and only then runs
//! the effects. Reaction trackers and timers are part of the snapshot, so they are persisted in
//! that same transaction and survive a crash (ao kept them in memory, reference §10 #2).
//!
//! Timers are data here: `step` adds or removes entries in `snapshot.timers`; the actor arms
//! or cancels real timers from the difference.
//!
//! `step` dispatches each event to a handler by what it is about: `events` holds what goes in
//! and out; `agent` the agent's own events, `pr` news of its PR, `timers` deadlines coming due,
//! `spend` usage and budgets, `host` remote hosts, `restart` restarts; `reactions` is the
//! reaction engine they all fire.

use chrono::{DateTime, Utc};
use serde_json::json;

mod agent;
mod events;
mod host;
mod pr;
mod reactions;
mod restart;
mod spend;
mod timers;

pub use events::*;

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
use super::policy::Policy;
use crate::domain::session::{Activity, SessionSnapshot, SessionState, TimerRecord};

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
            EventKind::SpawnRequested => self.spawn_requested(),
            EventKind::RuntimeStarted {
                handle,
                workspace,
                branch,
            } => self.runtime_started(handle, workspace, branch),
            EventKind::SpawnFailed { reason } => self.spawn_failed(reason),
            EventKind::AgentActive => self.agent_active(),
            EventKind::AgentIdle { since } => self.agent_idle(*since),
            EventKind::AgentWaitingInput { question } => self.waiting_input(question),
            EventKind::InputAnswered { question } => self.input_answered(question),
            EventKind::AgentExited {
                code,
                output,
                failure,
            } => self.agent_exited(*code, output, failure),
            EventKind::PrOpened { pr } => self.pr_opened(pr),
            EventKind::CiFailed {
                summary,
                fingerprint,
            } => self.ci_failed(summary, fingerprint),
            EventKind::CiPassed => self.ci_passed(),
            EventKind::ReviewPending => self.review_pending(),
            EventKind::ChangesRequested {
                summary,
                fingerprint,
            } => self.changes_requested(summary, fingerprint),
            EventKind::Approved => self.approved(),
            EventKind::MergeReady => self.merge_ready(),
            EventKind::MergeConflicts {
                summary,
                fingerprint,
            } => self.merge_conflicts(summary, fingerprint),
            EventKind::ConflictsCleared => self.end_episode(ReactionKey::MergeConflicts),
            EventKind::BotComments {
                summary,
                fingerprint,
            } => self.bot_comments(summary, fingerprint),
            EventKind::BotCommentsResolved => self.end_episode(ReactionKey::BugbotComments),
            EventKind::ReviewerComments {
                summary,
                fingerprint,
            } => self.reviewer_comments(summary, fingerprint),
            EventKind::MergeFailed { reason } => self.merge_failed(reason),
            EventKind::PrMerged => self.pr_merged(),
            EventKind::PrClosed => self.pr_closed(),
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
}

#[cfg(test)]
mod tests;
