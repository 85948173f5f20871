//! Spend: usage readings recorded, and the budget's action when one is crossed.

use super::{Effect, Machine, Outcome, Usage, S};
use crate::domain::keys::ReactionKey;
use crate::domain::policy::{BudgetAction, Priority};

impl Machine<'_> {
    /// Records spend; crossing the budget stops the agent or escalates, as configured. Spend
    /// without a price (`unpriced_models`) is recorded in `meta.unpriced_models`, and a human
    /// is told once when a US-dollar budget cannot count it.
    pub(super) fn usage(
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
}
