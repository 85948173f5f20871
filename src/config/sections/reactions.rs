//! `reactions:` and a project's overrides: what the lifecycle does on each event.

use serde::Deserialize;

use super::default_true;
use crate::config::values::{EscalateAfter, HumanDuration, MergeMethod, Priority, ReactionAction};

/// `reactions.<key>` — what happens when a session event fires (see
/// `REACTION_KEYS`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReactionSettings {
    /// `false` blocks every action except `notify`.
    #[serde(default = "default_true")]
    pub auto: bool,
    /// What to do.
    #[serde(default = "default_action")]
    pub action: ReactionAction,
    /// Message for the agent or the notification; `None` lets the service generate one.
    #[serde(default)]
    pub message: Option<String>,
    /// Notification priority (escalations default to urgent).
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Attempts before escalating; `None` = unlimited.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Escalate after this many attempts or this much time.
    #[serde(default)]
    pub escalate_after: Option<EscalateAfter>,
    /// How long the condition must last before the reaction triggers.
    #[serde(default)]
    pub threshold: Option<HumanDuration>,
    /// Include a fleet summary in the notification.
    #[serde(default)]
    pub include_summary: bool,
    /// Merge automatically when approved and green.
    #[serde(default)]
    pub auto_merge: bool,
    /// Merge method when merging.
    #[serde(default = "default_merge_method")]
    pub merge_method: MergeMethod,
}

fn default_action() -> ReactionAction {
    ReactionAction::Notify
}

fn default_merge_method() -> MergeMethod {
    MergeMethod::Squash
}

impl Default for ReactionSettings {
    fn default() -> Self {
        Self {
            auto: true,
            action: ReactionAction::Notify,
            message: None,
            priority: None,
            retries: None,
            escalate_after: None,
            threshold: None,
            include_summary: false,
            auto_merge: false,
            merge_method: MergeMethod::Squash,
        }
    }
}

/// `projects.<name>.reactions.<key>` — a partial reaction; the fields given
/// replace those of the global reaction, the rest are inherited.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReactionOverride {
    /// Replaces `auto`.
    #[serde(default)]
    pub auto: Option<bool>,
    /// Replaces `action`.
    #[serde(default)]
    pub action: Option<ReactionAction>,
    /// Replaces `message`.
    #[serde(default)]
    pub message: Option<String>,
    /// Replaces `priority`.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Replaces `retries`.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Replaces `escalate_after`.
    #[serde(default)]
    pub escalate_after: Option<EscalateAfter>,
    /// Replaces `threshold`.
    #[serde(default)]
    pub threshold: Option<HumanDuration>,
    /// Replaces `include_summary`.
    #[serde(default)]
    pub include_summary: Option<bool>,
    /// Replaces `auto_merge`.
    #[serde(default)]
    pub auto_merge: Option<bool>,
    /// Replaces `merge_method`.
    #[serde(default)]
    pub merge_method: Option<MergeMethod>,
}

impl ReactionSettings {
    /// This reaction with the fields set in `o` replaced.
    pub fn merged(&self, o: &ReactionOverride) -> ReactionSettings {
        ReactionSettings {
            auto: o.auto.unwrap_or(self.auto),
            action: o.action.unwrap_or(self.action),
            message: o.message.clone().or_else(|| self.message.clone()),
            priority: o.priority.or(self.priority),
            retries: o.retries.or(self.retries),
            escalate_after: o.escalate_after.or(self.escalate_after),
            threshold: o.threshold.or(self.threshold),
            include_summary: o.include_summary.unwrap_or(self.include_summary),
            auto_merge: o.auto_merge.unwrap_or(self.auto_merge),
            merge_method: o.merge_method.unwrap_or(self.merge_method),
        }
    }
}
