//! The reaction policy a session's machine runs under: the reaction table of one project (the
//! defaults of reference §2 with the project's overrides) and the lifecycle thresholds.
//!
//! Built from `Settings` by [`Policy::from_settings`]; the machine itself never reads config.

use std::collections::BTreeMap;

use chrono::Duration;
use serde::{Deserialize, Serialize};

use super::keys::ReactionKey;

/// Environment names always passed to agents when Flotilla has them: what a CLI needs to run
/// at all. Nothing else from Flotilla's environment reaches an agent (no tokens).
pub const BASE_ENV: &[&str] = &["PATH", "HOME", "USER", "LANG", "LC_ALL", "TERM", "TMPDIR"];

/// How urgently a human should hear about something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Needs a human now.
    Urgent,
    /// A human should act (merge, decide).
    Action,
    /// Something went wrong but the fleet copes.
    Warning,
    /// For the record.
    Info,
}

/// What a reaction does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReactionAction {
    /// Type instructions into the agent.
    SendToAgent,
    /// Tell a human.
    Notify,
    /// Merge the PR (when `auto_merge` is on).
    AutoMerge,
}

/// When a send-to-agent reaction gives up and tells a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscalateAfter {
    /// After this many attempts.
    Attempts(u32),
    /// This long after the first trigger.
    After(Duration),
}

/// How a PR is merged: the SCM's own type, so policy and plugin never drift apart.
pub use super::pr::MergeMethod;

/// One reaction's settings after merging project overrides over the global table.
#[derive(Debug, Clone, PartialEq)]
pub struct ReactionPolicy {
    /// `false` suppresses sends and merges; notifications still go out.
    pub auto: bool,
    /// What the reaction does.
    pub action: ReactionAction,
    /// Message to send; `None` uses the built-in message (ao sent nothing, #614).
    pub message: Option<String>,
    /// Priority of its notifications.
    pub priority: Option<Priority>,
    /// Sends before escalating.
    pub retries: Option<u32>,
    /// Escalation rule.
    pub escalate_after: Option<EscalateAfter>,
    /// Threshold for time-based triggers (agent-stuck, agent-idle).
    pub threshold: Option<Duration>,
    /// approved-and-green merges for real when set (off by default).
    pub auto_merge: bool,
    /// Merge method for auto-merge.
    pub merge_method: MergeMethod,
    /// all-complete lists every session in its notification.
    pub include_summary: bool,
}

impl ReactionPolicy {
    fn new(action: ReactionAction) -> Self {
        ReactionPolicy {
            auto: true,
            action,
            message: None,
            priority: None,
            retries: None,
            escalate_after: None,
            threshold: None,
            auto_merge: false,
            include_summary: false,
            merge_method: MergeMethod::Squash,
        }
    }
}

/// Everything `step` needs to decide, besides the session and the event.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Reaction table by key (`ci-failed`, …), as configured; look one up with
    /// [`Policy::reaction`].
    pub reactions: BTreeMap<String, ReactionPolicy>,
    /// A session still spawning after this is errored.
    pub spawn_timeout: Duration,
    /// Time between a merge and the clean-up.
    pub merge_grace: Duration,
    /// Spend limits of a session.
    pub budget: Option<Budget>,
    /// A session stuck or waiting for input this long is stopped (errored, `abandoned`).
    pub abandon_after: Duration,
}

/// What crossing a budget does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetAction {
    /// Kill the session and tell a human.
    Stop,
    /// Tell a human; keep going.
    Escalate,
}

/// A session's spend limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// US dollars.
    pub session_usd: Option<f64>,
    /// Input + output tokens.
    pub session_tokens: Option<u64>,
    /// US dollars over all of the project's sessions.
    pub project_usd: Option<f64>,
    /// What happens when crossed.
    pub action: BudgetAction,
}

/// Fallback for `agent-stuck.threshold` when the table has none (reference §2: 10m).
const DEFAULT_STUCK_THRESHOLD_MIN: i64 = 10;
/// Fallback for the `agent-idle` nudge threshold.
const DEFAULT_IDLE_THRESHOLD_MIN: i64 = 5;

impl Policy {
    /// The defaults of reference §2 with their numbers (also what `config/default.yaml` says).
    pub fn defaults() -> Self {
        use ReactionAction::*;
        let mut r = BTreeMap::new();
        let mut add = |k: ReactionKey, p: ReactionPolicy| {
            r.insert(k.as_str().to_string(), p);
        };
        add(
            ReactionKey::CiFailed,
            ReactionPolicy {
                retries: Some(2),
                escalate_after: Some(EscalateAfter::Attempts(2)),
                ..ReactionPolicy::new(SendToAgent)
            },
        );
        for (k, m) in [
            (ReactionKey::ChangesRequested, 30),
            (ReactionKey::BugbotComments, 30),
            (ReactionKey::MergeConflicts, 15),
        ] {
            add(
                k,
                ReactionPolicy {
                    escalate_after: Some(EscalateAfter::After(Duration::minutes(m))),
                    ..ReactionPolicy::new(SendToAgent)
                },
            );
        }
        add(
            ReactionKey::ReviewerComments,
            ReactionPolicy::new(SendToAgent),
        );
        add(
            ReactionKey::ApprovedAndGreen,
            ReactionPolicy {
                priority: Some(Priority::Action),
                ..ReactionPolicy::new(Notify)
            },
        );
        add(
            ReactionKey::AgentStuck,
            ReactionPolicy {
                priority: Some(Priority::Urgent),
                threshold: Some(Duration::minutes(DEFAULT_STUCK_THRESHOLD_MIN)),
                ..ReactionPolicy::new(Notify)
            },
        );
        for k in [ReactionKey::AgentNeedsInput, ReactionKey::AgentExited] {
            add(
                k,
                ReactionPolicy {
                    priority: Some(Priority::Urgent),
                    ..ReactionPolicy::new(Notify)
                },
            );
        }
        add(
            ReactionKey::PrClosed,
            ReactionPolicy {
                priority: Some(Priority::Action),
                ..ReactionPolicy::new(Notify)
            },
        );
        add(
            ReactionKey::AllComplete,
            ReactionPolicy {
                priority: Some(Priority::Info),
                include_summary: true,
                ..ReactionPolicy::new(Notify)
            },
        );
        add(
            ReactionKey::AgentIdle,
            ReactionPolicy {
                retries: Some(2),
                escalate_after: Some(EscalateAfter::After(Duration::minutes(15))),
                threshold: Some(Duration::minutes(DEFAULT_IDLE_THRESHOLD_MIN)),
                ..ReactionPolicy::new(SendToAgent)
            },
        );
        Policy {
            reactions: r,
            spawn_timeout: Duration::minutes(5),
            merge_grace: Duration::minutes(5),
            budget: None,
            abandon_after: Duration::hours(24),
        }
    }

    /// The settings of reaction `key`, if the table has it.
    pub fn reaction(&self, key: ReactionKey) -> Option<&ReactionPolicy> {
        self.reactions.get(key.as_str())
    }

    /// Idle time after which a session is stuck (`agent-stuck.threshold`).
    pub fn stuck_threshold(&self) -> Duration {
        self.reaction(ReactionKey::AgentStuck)
            .and_then(|r| r.threshold)
            .unwrap_or_else(|| Duration::minutes(DEFAULT_STUCK_THRESHOLD_MIN))
    }

    /// Idle time after which the agent is nudged (`agent-idle.threshold`).
    pub fn idle_threshold(&self) -> Duration {
        self.reaction(ReactionKey::AgentIdle)
            .and_then(|r| r.threshold)
            .unwrap_or_else(|| Duration::minutes(DEFAULT_IDLE_THRESHOLD_MIN))
    }
}
