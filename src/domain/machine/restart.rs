//! Instructions for an agent that has exited: the machine restarts it instead of typing into
//! a dead terminal.
//!
//! An agent may end while its PR lives on (aider answers one message and exits; any agent may
//! stop after "done"): the session keeps its state with activity `exited`. When a
//! send-to-agent reaction fires then, the machine stores what is due in the snapshot
//! ([`PendingRestart`] under `meta.restart_for`, committed before anything runs) and asks for
//! [`Effect::RestartAgent`]: the agent is started again in its worktree, resumed, with the
//! instructions as its first prompt where the agent takes one. [`EventKind::AgentRestarted`]
//! then records the new runtime and emits one [`Effect::SendToAgent`] per instruction (only
//! recorded when the launch already gave it, typed in otherwise). The reaction was counted
//! once, when it fired.
//!
//! After a crash between the two steps the actor looks for a runtime started since the
//! decision (`Runtime::find`): found, the restart happened and it is adopted without a second
//! launch; not found, the restart is run again. Nothing is delivered twice either way.
//! Terminal sessions (a human's kill included) hold no pending restart and never restart.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Effect, Machine, Outcome};
use crate::domain::keys::{ReactionKey, TimerKey};
use crate::domain::policy::Priority;
use crate::domain::runtime_handle::RuntimeHandle;
use crate::domain::session::{Activity, SessionSnapshot};

/// Where a session's [`PendingRestart`] lives in its `meta`.
pub const RESTART_KEY: &str = "restart_for";

/// One instruction a reaction has for the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueInstruction {
    /// The reaction (`ci-failed`, …).
    pub reaction: ReactionKey,
    /// What to tell the agent.
    pub message: String,
}

/// A restart under way: what it delivers, stored before it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRestart {
    /// When the restart was decided: a runtime started since then is this restart's.
    pub at: DateTime<Utc>,
    /// The instructions the restart was launched with.
    pub launch: Vec<DueInstruction>,
    /// Instructions that became due while it was under way (typed in once it runs).
    #[serde(default)]
    pub later: Vec<DueInstruction>,
}

/// The session's restart under way, if any.
pub fn pending_restart(s: &SessionSnapshot) -> Option<PendingRestart> {
    s.session
        .meta
        .get(RESTART_KEY)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// The instructions of a restart as one first prompt.
pub fn launch_message(due: &[DueInstruction]) -> String {
    due.iter()
        .map(|d| d.message.trim())
        .collect::<Vec<_>>()
        .join("\n\n")
}

impl Machine<'_> {
    /// Whether instructions can no longer be typed in: the agent exited, or a restart is
    /// under way (the old terminal is gone, the new one not recorded yet).
    pub(super) fn agent_gone(&self) -> bool {
        self.s.session.activity == Activity::Exited || pending_restart(&self.s).is_some()
    }

    fn set_restart(&mut self, p: Option<&PendingRestart>) {
        match p.and_then(|p| serde_json::to_value(p).ok()) {
            Some(v) => {
                if !self.s.session.meta.is_object() {
                    self.s.session.meta = serde_json::json!({});
                }
                self.s.session.meta[RESTART_KEY] = v;
            }
            None => {
                if let Some(m) = self.s.session.meta.as_object_mut() {
                    m.remove(RESTART_KEY);
                }
            }
        }
    }

    pub(super) fn clear_restart(&mut self) {
        self.set_restart(None);
    }

    /// `key`'s instruction is due and the agent is gone: restart it with the instruction, or
    /// add the instruction to the restart under way (a newer one of the same reaction replaces
    /// the older).
    pub(super) fn restart_for(&mut self, key: ReactionKey, message: String) {
        let due = DueInstruction {
            reaction: key,
            message,
        };
        match pending_restart(&self.s) {
            Some(mut p) => {
                p.later.retain(|d| d.reaction != key);
                p.later.push(due);
                self.set_restart(Some(&p));
            }
            None => {
                let p = PendingRestart {
                    at: self.at,
                    launch: vec![due.clone()],
                    later: Vec::new(),
                };
                self.set_restart(Some(&p));
                self.arm(TimerKey::Spawn, self.at + self.policy.spawn_timeout);
                self.effects.push(Effect::RestartAgent { due: vec![due] });
            }
        }
    }

    /// The restarted agent runs: record it, then deliver what is due.
    pub(super) fn restarted(&mut self, handle: &serde_json::Value, prompted: bool) -> Outcome {
        let st = self.state();
        if st.is_terminal() {
            // Killed while it restarted: take the late runtime down too.
            self.s.session.runtime_handle = Some(RuntimeHandle::from_json(handle));
            self.s.timers.clear();
            self.clear_restart();
            self.effects.push(Effect::DestroyRuntime);
            return Outcome::Applied;
        }
        let pending = pending_restart(&self.s);
        let handle = RuntimeHandle::from_json(handle);
        if pending.is_none() && self.s.session.runtime_handle.as_ref() == Some(&handle) {
            return Outcome::Noop("this restart is already recorded".into());
        }
        // A restart that came after its deadline passed still runs: it is adopted.
        self.s.session.runtime_handle = Some(handle);
        self.s.session.activity = Activity::Active;
        self.s.session.activity_at = Some(self.at);
        self.disarm(TimerKey::Spawn);
        self.clear_restart();
        if self.watched() {
            self.arm(TimerKey::Stuck, self.at + self.policy.stuck_threshold());
        }
        let Some(p) = pending else {
            return Outcome::Applied;
        };
        let sends = p
            .launch
            .into_iter()
            .map(|d| (d, prompted))
            .chain(p.later.into_iter().map(|d| (d, false)));
        for (d, given) in sends {
            self.effects.push(Effect::SendToAgent {
                reaction: d.reaction,
                message: d.message,
                given_at_launch: given,
            });
        }
        Outcome::Applied
    }

    /// The restart failed: a human is told what could not be delivered.
    pub(super) fn restart_failed(&mut self, reason: &str) {
        let Some(p) = pending_restart(&self.s) else {
            return;
        };
        self.clear_restart();
        self.disarm(TimerKey::Spawn);
        let keys: Vec<ReactionKey> = p
            .launch
            .iter()
            .chain(&p.later)
            .map(|d| d.reaction)
            .collect();
        let reactions: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        self.effects.push(Effect::Notify {
            reaction: keys.first().copied(),
            priority: Priority::Urgent,
            message: format!(
                "The agent had exited and could not be restarted to deliver {}: {reason}",
                reactions.join(", ")
            ),
            escalation: true,
        });
    }
}
