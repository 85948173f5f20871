//! Timers come due: spawn timeout, stuck and idle watches, abandonment, the merge grace and
//! reaction escalations.

use super::{pending_restart, Effect, Machine, Outcome, S};
use crate::domain::keys::{ReactionKey, TimerKey};
use crate::domain::policy::Priority;
use crate::domain::session::Activity;

impl Machine<'_> {
    pub(super) fn timer(&mut self, kind: &str) -> Outcome {
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
}
