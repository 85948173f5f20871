//! The agent's own events: its runtime's start, its signs of life and idleness, its questions
//! and their answers, its reports and its exit.

use chrono::{DateTime, Utc};

use super::{
    is_orchestrator, Effect, EventKind, Machine, Outcome, ReportedState, EARLIER_ANSWERED,
    LATE_REPORT, S, WAITING_SINCE, WAIT_ENDED,
};
use crate::domain::keys::{ReactionKey, TimerKey};
use crate::domain::question::{abridges, same_question};
use crate::domain::runtime_handle::RuntimeHandle;
use crate::domain::session::{Activity, PrRef};

impl Machine<'_> {
    /// A new session asks for its runtime.
    pub(super) fn spawn_requested(&mut self) -> Outcome {
        let st = self.state();
        if st != S::Spawning || self.s.has_timer(TimerKey::Spawn) {
            return self.ignore("session.spawn_requested");
        }
        self.arm(TimerKey::Spawn, self.at + self.policy.spawn_timeout);
        self.intend_launch();
        self.effects.push(Effect::StartRuntime { resume: false });
        Outcome::Applied
    }

    /// The runtime started: the session works (or works on its PR).
    pub(super) fn runtime_started(
        &mut self,
        handle: &serde_json::Value,
        workspace: &Option<String>,
        branch: &Option<String>,
    ) -> Outcome {
        let st = self.state();
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

    pub(super) fn spawn_failed(&mut self, reason: &str) -> Outcome {
        let st = self.state();
        if st != S::Spawning {
            return self.ignore("runtime.spawn_failed");
        }
        self.end(S::Errored, &format!("spawn_failed: {reason}"));
        Outcome::Applied
    }

    /// The agent shows life: back to work from a wait, the stuck watch restarted.
    pub(super) fn agent_active(&mut self) -> Outcome {
        let st = self.state();
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

    /// The agent ended its turn and waits for the next message.
    pub(super) fn agent_idle(&mut self, since: DateTime<Utc>) -> Outcome {
        let st = self.state();
        if st.is_terminal() || st == S::Merged || st == S::Spawning {
            return self.ignore("agent.idle");
        }
        if self.s.session.activity == Activity::Idle && self.s.session.activity_at == Some(since) {
            return Outcome::Noop("already idle".into());
        }
        self.s.session.activity = Activity::Idle;
        self.s.session.activity_at = Some(since);
        if st == S::NeedsInput {
            // The question was answered and the turn ended: idle is not "still asking"
            // (ao #9 kept sessions in needs_input after the agent finished).
            self.back_to_work("input_answered");
        }
        if self.watched() {
            self.arm_idle_watch(since);
        }
        Outcome::Applied
    }

    /// The agent asks its human (`question` in words when known).
    pub(super) fn waiting_input(&mut self, question: &Option<String>) -> Outcome {
        let st = self.state();
        if st.is_terminal() || st == S::Merged {
            return self.ignore("agent.waiting_input");
        }
        let asked = self.s.session.meta["question"].as_str().map(str::to_string);
        let newer = match (question.as_deref(), asked.as_deref()) {
            (Some(q), Some(a)) => !same_question(a, q),
            (q, _) => q.is_some(),
        };
        let waiting = st == S::NeedsInput && self.s.session.activity == Activity::WaitingInput;
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

    /// A human answered the agent's question.
    pub(super) fn input_answered(&mut self, question: &Option<String>) -> Outcome {
        let st = self.state();
        let asked = self.s.session.meta["question"].as_str();
        if st != S::NeedsInput {
            // The agent was seen back at work (its dialog gone from the screen) before
            // the answer's own event: the answer is still recorded, once, so that the
            // dialog's late hook report asks nobody again.
            return match (question.as_deref(), asked) {
                (Some(q), Some(a))
                    if same_question(a, q) && !st.is_terminal() && !self.just_answered(Some(a)) =>
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
        let out = self.agent_active();
        // Back to work because a human answered (not because the agent showed life).
        let to = self.state();
        self.set_state(to, Some("input_answered"));
        self.record_answered();
        out
    }

    /// The agent's process ended (`code` `None`: its runtime vanished).
    pub(super) fn agent_exited(
        &mut self,
        code: Option<i32>,
        output: &Option<String>,
        failure: &Option<String>,
    ) -> Outcome {
        let st = self.state();
        if st.is_terminal() {
            return self.ignore("agent.exited");
        }
        let working_on_pr =
            self.s.session.pr.is_some() && matches!(st, S::NeedsInput | S::Working | S::Stuck);
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
                    &format!("The agent exited after an error it could not get past: {failure}"),
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
                let status = match crate::domain::exit_status::killed_by(c) {
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

    /// A self-report is stronger evidence than inference, but only for live workers.
    pub(super) fn reported(
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
    pub(super) fn ended_a_wait_within(&self, ago: chrono::TimeDelta) -> bool {
        self.s.session.meta[WAIT_ENDED]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| self.at - t.with_timezone(&Utc) < ago)
    }

    /// Whether `question` is one a human answered less than [`LATE_REPORT`] ago: the last
    /// answered or one answered just before it (two dialogs answered in quick succession,
    /// both hooks late).
    pub(super) fn just_answered(&self, question: Option<&str>) -> bool {
        question.is_some_and(|q| self.answered_recently().any(|(a, _)| same_question(a, q)))
    }

    /// Records the question asked as answered now: output that has not changed since still
    /// shows it, and that is not a new one (the session actor's probe). The questions
    /// answered before it within [`LATE_REPORT`] are kept too (newest first): each dialog's
    /// hook may still report it.
    pub(super) fn record_answered(&mut self) {
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
    pub(super) fn record_answered_earlier(&mut self, question: &str) {
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
    pub(super) fn answered_recently(&self) -> impl Iterator<Item = (&str, DateTime<Utc>)> + '_ {
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
}
