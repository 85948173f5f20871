//! Reactions: counting each firing, sending the agent its instruction or telling a human,
//! escalating when the retries are spent, and the episodes of fingerprinted triggers.

use super::{Effect, Machine, Outcome, EPISODE_OVER, S};
use crate::domain::keys::{ReactionKey, TimerKey};
use crate::domain::policy::{EscalateAfter, Priority, ReactionAction};
use crate::domain::session::{Activity, ReactionTracker};

impl Machine<'_> {
    /// Ends the open episode of a fingerprinted reaction (its fingerprint gets
    /// [`EPISODE_OVER`]), so the same trigger returning is sent again. Attempts stay (a
    /// flapping condition must not reset them, ao #1531); the episode's escalation is moot.
    pub(super) fn end_episode(&mut self, key: ReactionKey) -> Outcome {
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
    pub(super) fn condition_holds(&self, reaction: ReactionKey) -> bool {
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

    /// Counts one firing of `key`; returns `false` if this fingerprint was already handled.
    pub(super) fn bump(&mut self, key: ReactionKey, fingerprint: Option<&str>) -> bool {
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
        if fingerprint.is_some() && t.attempts > 0 && t.fingerprint.as_deref() == fingerprint {
            return false;
        }
        t.attempts += 1;
        t.last_triggered_at = at;
        if fingerprint.is_some() {
            t.fingerprint = fingerprint.map(str::to_string);
        }
        true
    }

    /// Fires a reaction: counts it, then sends, notifies or escalates as its policy says.
    pub(super) fn react(
        &mut self,
        key: ReactionKey,
        fingerprint: Option<&str>,
        default_message: &str,
    ) {
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

    pub(super) fn escalate(&mut self, key: ReactionKey) {
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
