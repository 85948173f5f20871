//! News of the session's PR: opened, checks, reviews, conflicts, bot comments, merges and
//! closes.

use super::{Effect, Machine, Outcome, DEFAULT_MERGE_RETRIES, S, TOLD_WHILE_WAITING};
use crate::domain::keys::{ReactionKey, TimerKey};
use crate::domain::policy::{Priority, ReactionAction};
use crate::domain::session::PrRef;

impl Machine<'_> {
    pub(super) fn pr_opened(&mut self, pr: &PrRef) -> Outcome {
        let st = self.state();
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

    pub(super) fn ci_failed(&mut self, summary: &str, fingerprint: &str) -> Outcome {
        let st = self.state();
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

    pub(super) fn ci_passed(&mut self) -> Outcome {
        let st = self.state();
        if st != S::CiFailed {
            return self.ignore("ci.passed");
        }
        self.set_state(S::PrOpen, Some("ci_passing"));
        Outcome::Applied
    }

    pub(super) fn review_pending(&mut self) -> Outcome {
        let st = self.state();
        if !matches!(st, S::PrOpen) {
            return self.ignore("review.pending");
        }
        self.set_state(S::ReviewPending, Some("review_pending"));
        Outcome::Applied
    }

    pub(super) fn changes_requested(&mut self, summary: &str, fingerprint: &str) -> Outcome {
        let st = self.state();
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
            &format!("A reviewer requested changes. Address each comment and push.\n\n{summary}"),
        );
        Outcome::Applied
    }

    pub(super) fn approved(&mut self) -> Outcome {
        let st = self.state();
        if !self.pr_live() || st == S::Mergeable {
            return self.ignore("review.approved");
        }
        self.set_state(S::Approved, Some("approved"));
        Outcome::Applied
    }

    pub(super) fn merge_ready(&mut self) -> Outcome {
        let st = self.state();
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

    pub(super) fn merge_conflicts(&mut self, summary: &str, fingerprint: &str) -> Outcome {
        self.episode_news(
            ("merge.conflicts", "conflict episode already handled"),
            ReactionKey::MergeConflicts,
            fingerprint,
            &format!("Your PR conflicts with its base branch. Rebase on the base branch, resolve the conflicts and push.\n\n{summary}"),
        )
    }

    pub(super) fn bot_comments(&mut self, summary: &str, fingerprint: &str) -> Outcome {
        self.episode_news(
            ("review.bot_comments", "these bot comments were already sent"),
            ReactionKey::BugbotComments,
            fingerprint,
            &format!("Automated review left comments on your PR. Address each one (or explain why it does not apply) and push.\n\n{summary}"),
        )
    }

    /// News of a live PR whose reaction runs in episodes (`fingerprint`): fired once per
    /// episode; the same episode seen again changes nothing. `event` names the news when the
    /// PR is not live; `repeat` says why a repeat changed nothing.
    fn episode_news(
        &mut self,
        (event, repeat): (&str, &str),
        key: ReactionKey,
        fingerprint: &str,
        message: &str,
    ) -> Outcome {
        if !self.pr_live() {
            return self.ignore(event);
        }
        let before = self.s.tracker(key).cloned();
        self.react(key, Some(fingerprint), message);
        if self.s.tracker(key) == before.as_ref() {
            return Outcome::Noop(repeat.into());
        }
        Outcome::Applied
    }

    pub(super) fn reviewer_comments(&mut self, summary: &str, fingerprint: &str) -> Outcome {
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

    /// A merge was refused: retried until the reaction's retries are spent.
    pub(super) fn merge_failed(&mut self, reason: &str) -> Outcome {
        let st = self.state();
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

    pub(super) fn pr_merged(&mut self) -> Outcome {
        let st = self.state();
        if st.is_terminal() || st == S::Merged {
            return self.ignore("pr.merged");
        }
        self.set_state(S::Merged, Some("pr_merged"));
        self.s.trackers.clear();
        self.s.timers.clear();
        self.arm(TimerKey::MergeGrace, self.at + self.policy.merge_grace);
        Outcome::Applied
    }

    /// The PR was closed unmerged: a human decides whether the session goes on.
    pub(super) fn pr_closed(&mut self) -> Outcome {
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

    /// News of the PR while the agent waits for a human: nothing goes to the agent (an
    /// instruction typed onto its dialog would answer it; it goes once the wait ends, see
    /// [`Self::back_to_work`]), but the human asked is told, once per failure (recorded in
    /// `meta.told_while_waiting`), since it may change their answer. A failure the agent was
    /// already sent is no news.
    pub(super) fn tell_the_waiting_human(
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

    pub(super) fn pr_live(&self) -> bool {
        self.state().has_open_pr()
            || (self.s.session.pr.is_some() && matches!(self.state(), S::Working | S::Stuck))
    }

    pub(super) fn approved_and_green(&mut self) {
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
}
