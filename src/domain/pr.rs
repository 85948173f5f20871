//! A pull request as the lifecycle sees it: its status, CI, review feedback and how it merges.
//! The SCM plugin fills these in; [`super::pr_events`] turns them into machine events.

use serde::{Deserialize, Serialize};

/// One CI check on a PR's head: a check run or a commit status context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckInfo {
    /// Check run name or status context.
    pub name: String,
    /// `queued`, `in_progress`, `completed` (a status context is `completed` unless pending).
    pub status: String,
    /// Lowercase conclusion (`success`, `failure`, `timed_out`…, or a status's `error`), if
    /// finished.
    pub conclusion: Option<String>,
    /// Where a human (or the agent) reads the details.
    pub url: Option<String>,
}

impl CheckInfo {
    /// Whether this check counts as failed (failure, timed out, cancelled, error…).
    pub fn failed(&self) -> bool {
        matches!(
            self.conclusion.as_deref(),
            Some(
                "failure"
                    | "timed_out"
                    | "cancelled"
                    | "action_required"
                    | "startup_failure"
                    | "error"
            )
        )
    }
}

/// A failed check with what an agent needs to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedCheck {
    /// Check name.
    pub name: String,
    /// Details URL.
    pub url: Option<String>,
    /// The tail of the job's log, when the check is an Actions job whose log is available.
    pub log_excerpt: Option<String>,
}

/// CI on one commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiSummary {
    /// `passing`, `failing`, `pending`, `none`.
    pub state: String,
    /// Every check (latest run per name) and status context.
    pub checks: Vec<CheckInfo>,
    /// The failed ones, with log excerpts.
    pub failed: Vec<FailedCheck>,
}

/// One comment in a review thread or on the PR's conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewComment {
    /// Author login.
    pub author: String,
    /// Markdown body.
    pub body: String,
    /// Written by a bot (an automated reviewer such as Cursor's Bugbot, Copilot, CodeRabbit).
    #[serde(default)]
    pub bot: bool,
}

/// An inline review thread (the lifecycle cares about unresolved ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewThread {
    /// File path.
    pub path: String,
    /// Line in the file, when GitHub still knows it.
    pub line: Option<i64>,
    /// Whether someone resolved it.
    pub resolved: bool,
    /// Comments, first (the one that opened the thread) first.
    pub comments: Vec<ReviewComment>,
}

/// A submitted review's summary body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewBody {
    /// Reviewer login.
    pub author: String,
    /// `approved`, `changes_requested`, `commented`, `dismissed`.
    pub state: String,
    /// Body (may be empty).
    pub body: String,
}

/// Everything humans said on a PR that an agent may have to address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewFeedback {
    /// `approved`, `changes_requested`, `pending`, `none` (as [`PrStatus::review`]).
    pub decision: String,
    /// Unresolved inline threads.
    pub unresolved_threads: Vec<ReviewThread>,
    /// Submitted reviews with their bodies, oldest first.
    pub reviews: Vec<ReviewBody>,
    /// Conversation (issue) comments on the PR, oldest first.
    pub comments: Vec<ReviewComment>,
}

/// Returned when a string names no merge method.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("merge method `{0}` is not merge, squash or rebase")]
pub struct UnknownMergeMethod(pub String);

/// How to merge a PR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeMethod {
    /// A merge commit.
    Merge,
    /// One squashed commit.
    Squash,
    /// Commits replayed onto the base.
    Rebase,
}

impl MergeMethod {
    /// GitHub's `merge_method` value.
    pub fn as_str(self) -> &'static str {
        match self {
            MergeMethod::Merge => "merge",
            MergeMethod::Squash => "squash",
            MergeMethod::Rebase => "rebase",
        }
    }
}

impl std::str::FromStr for MergeMethod {
    type Err = UnknownMergeMethod;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "merge" => Ok(MergeMethod::Merge),
            "squash" => Ok(MergeMethod::Squash),
            "rebase" => Ok(MergeMethod::Rebase),
            other => Err(UnknownMergeMethod(other.to_string())),
        }
    }
}

/// A PR's observed state, as the lifecycle engine consumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrStatus {
    /// Number.
    pub number: i64,
    /// URL.
    pub url: String,
    /// `open`, `merged`, `closed`.
    pub state: String,
    /// `passing`, `failing`, `pending`, `none`.
    pub ci: String,
    /// `approved`, `changes_requested`, `pending`, `none`.
    pub review: String,
    /// Whether it can merge cleanly (`None` while GitHub computes it, or once closed).
    pub mergeable: Option<bool>,
    /// Whether it is a draft.
    pub draft: bool,
    /// Head branch.
    pub head_branch: String,
    /// Head commit.
    pub head_sha: String,
    /// Base branch.
    pub base_branch: String,
    /// GitHub's merge state, lowercase: `clean`, `dirty`, `behind`, `blocked`, `unstable`,
    /// `has_hooks`, `draft`, `unknown`.
    pub merge_state: String,
    /// The head conflicts with the base.
    pub conflicts: bool,
    /// The base has commits the head lacks.
    pub behind: bool,
    /// Checks and status contexts on the head (latest per name).
    pub checks: Vec<CheckInfo>,
    /// Unresolved inline review threads.
    pub unresolved_threads: Vec<ReviewThread>,
    /// What people said outside inline threads (conversation comments, review bodies of
    /// every state), oldest first; never a bot's, the PR author's (the agent) or Flotilla's.
    #[serde(default)]
    pub remarks: Vec<PrRemark>,
}

/// Where a [`PrRemark`] was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemarkKind {
    /// A comment in the PR's conversation.
    Comment,
    /// The body of a submitted review.
    Review,
}

/// A conversation comment or a review body on a PR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrRemark {
    /// Comment or review.
    pub kind: RemarkKind,
    /// GitHub's id (`databaseId`); ids grow with time within a kind.
    pub id: i64,
    /// Author login.
    pub author: String,
    /// A review's state, lowercase (`commented`, `approved`, `changes_requested`,
    /// `dismissed`); `None` for a comment.
    pub state: Option<String>,
    /// Markdown body (never empty).
    pub body: String,
}
