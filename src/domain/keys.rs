//! The names of reactions and timers as types. Stored and shown as the same text as ever
//! (`ci-failed`, `escalate:ci-failed`…): [`ReactionKey::as_str`] and [`TimerKey`]'s
//! `Display` write it, `FromStr` reads it back where it comes from the store or the config.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A reaction of the table (reference §2), or the budget's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReactionKey {
    /// CI failed on the PR.
    CiFailed,
    /// A reviewer requested changes.
    ChangesRequested,
    /// An automated reviewer left comments.
    BugbotComments,
    /// People commented on the PR (conversation comments, review bodies of every state).
    ReviewerComments,
    /// The PR conflicts with its base.
    MergeConflicts,
    /// Approved and CI green: merge, or tell a human.
    ApprovedAndGreen,
    /// Idle past the stuck threshold.
    AgentStuck,
    /// The agent asked a question.
    AgentNeedsInput,
    /// The agent or its runtime is gone.
    AgentExited,
    /// The PR was closed unmerged.
    PrClosed,
    /// Every session of a project ended.
    AllComplete,
    /// Idle past the nudge threshold.
    AgentIdle,
    /// A budget was crossed (a tracker, not a configurable reaction).
    Budget,
}

impl ReactionKey {
    /// Every key, in declaration order.
    pub const ALL: [ReactionKey; 13] = [
        ReactionKey::CiFailed,
        ReactionKey::ChangesRequested,
        ReactionKey::BugbotComments,
        ReactionKey::ReviewerComments,
        ReactionKey::MergeConflicts,
        ReactionKey::ApprovedAndGreen,
        ReactionKey::AgentStuck,
        ReactionKey::AgentNeedsInput,
        ReactionKey::AgentExited,
        ReactionKey::PrClosed,
        ReactionKey::AllComplete,
        ReactionKey::AgentIdle,
        ReactionKey::Budget,
    ];

    /// The kebab-case name, as stored and configured.
    pub fn as_str(self) -> &'static str {
        match self {
            ReactionKey::CiFailed => "ci-failed",
            ReactionKey::ChangesRequested => "changes-requested",
            ReactionKey::BugbotComments => "bugbot-comments",
            ReactionKey::ReviewerComments => "reviewer-comments",
            ReactionKey::MergeConflicts => "merge-conflicts",
            ReactionKey::ApprovedAndGreen => "approved-and-green",
            ReactionKey::AgentStuck => "agent-stuck",
            ReactionKey::AgentNeedsInput => "agent-needs-input",
            ReactionKey::AgentExited => "agent-exited",
            ReactionKey::PrClosed => "pr-closed",
            ReactionKey::AllComplete => "all-complete",
            ReactionKey::AgentIdle => "agent-idle",
            ReactionKey::Budget => "budget",
        }
    }
}

/// Returned when a text names no reaction or timer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key `{0}`")]
pub struct UnknownKey(pub String);

impl FromStr for ReactionKey {
    type Err = UnknownKey;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReactionKey::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKey(s.to_string()))
    }
}

/// A durable timer of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKey {
    /// `spawn_timeout`: a session still spawning at this deadline is errored.
    Spawn,
    /// `stuck_check`: check for an idle agent (stuck threshold).
    Stuck,
    /// `idle_nudge`: nudge an idle agent (`agent-idle`).
    Idle,
    /// `merge_grace`: clean up after a merge.
    MergeGrace,
    /// `abandon`: a session stuck or waiting for input this long is given up.
    Abandon,
    /// `escalate:{reaction}`: tell a human when the reaction's condition still holds.
    Escalate(ReactionKey),
}

/// Prefix of escalation timers.
const ESCALATE: &str = "escalate:";

impl TimerKey {
    /// Whether a stored timer text names an escalation (`escalate:…`), known reaction or not.
    pub fn is_escalation(text: &str) -> bool {
        text.starts_with(ESCALATE)
    }
}

impl fmt::Display for TimerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            TimerKey::Spawn => "spawn_timeout",
            TimerKey::Stuck => "stuck_check",
            TimerKey::Idle => "idle_nudge",
            TimerKey::MergeGrace => "merge_grace",
            TimerKey::Abandon => "abandon",
            TimerKey::Escalate(r) => return write!(f, "{ESCALATE}{}", r.as_str()),
        };
        f.write_str(name)
    }
}

impl FromStr for TimerKey {
    type Err = UnknownKey;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "spawn_timeout" => TimerKey::Spawn,
            "stuck_check" => TimerKey::Stuck,
            "idle_nudge" => TimerKey::Idle,
            "merge_grace" => TimerKey::MergeGrace,
            "abandon" => TimerKey::Abandon,
            other => match other.strip_prefix(ESCALATE).map(str::parse) {
                Some(Ok(r)) => TimerKey::Escalate(r),
                _ => return Err(UnknownKey(s.to_string())),
            },
        })
    }
}

impl Serialize for ReactionKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ReactionKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for TimerKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimerKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_reads_back_from_the_text_it_is_stored_as() {
        for r in ReactionKey::ALL {
            assert_eq!(r.as_str().parse::<ReactionKey>(), Ok(r));
            let t = TimerKey::Escalate(r);
            assert_eq!(t.to_string(), format!("escalate:{}", r.as_str()));
            assert_eq!(t.to_string().parse::<TimerKey>(), Ok(t));
        }
        let timers = [
            (TimerKey::Spawn, "spawn_timeout"),
            (TimerKey::Stuck, "stuck_check"),
            (TimerKey::Idle, "idle_nudge"),
            (TimerKey::MergeGrace, "merge_grace"),
            (TimerKey::Abandon, "abandon"),
        ];
        for (t, text) in timers {
            assert_eq!((t.to_string().as_str(), text.parse()), (text, Ok(t)));
        }
        assert_eq!(
            serde_json::to_string(&ReactionKey::CiFailed)
                .ok()
                .as_deref(),
            Some("\"ci-failed\"")
        );
    }

    #[test]
    fn unknown_text_is_refused() {
        for bad in ["", "ci_failed", "escalate:", "escalate:nope", "spawn"] {
            assert!(bad.parse::<TimerKey>().is_err(), "{bad}");
        }
        assert!("pr-merged".parse::<ReactionKey>().is_err());
    }
}
