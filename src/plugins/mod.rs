//! Plugin slots: one trait per capability, each implemented per vendor or mechanism.
//!
//! | slot | trait | implementations here |
//! |---|---|---|
//! | where the agent runs | [`Runtime`] | `process` ([`process::ProcessRuntime`]), `tmux` ([`tmux::TmuxRuntime`]), `ssh:<host>` ([`remote_tmux::RemoteTmuxRuntime`]) |
//! | which agent runs | [`Agent`] | `claude-code`, `codex`, `aider`, `opencode`, `command` ([`agents`]); activity and usage types in [`activity`] |
//! | where its files are | [`Workspace`] | `worktree` ([`worktree::WorktreeWorkspace`]), `clone` ([`clone::CloneWorkspace`]) |
//! | where tasks come from | [`Tracker`] | `github`, `linear`, `jira` ([`trackers`]) |
//! | where PRs live | [`Scm`] | `github` ([`github::GithubScm`], on octocrab) |
//! | how humans hear | [`Notifier`] | `webhook`, `slack`, `discord`, `telegram`, `desktop`, `chat` ([`notifiers`]) |
//! | where chats come from | [`ChatPlatform`] | `slack`, `telegram`, `discord`, `github`, `jira` ([`chat`]) |
//! | who answers chats | [`Assistant`] | `claude`, `codex`, `command` ([`assistants`]) |
//!
//! The traits and the types they take and give are in `slots/`, one file a slot, and are
//! re-exported here; this file keeps what every slot shares ([`PluginError`]).
//!
//! Plugins never touch the store or actors; actors hold them as `Arc<dyn Trait>`. Every
//! subprocess goes through [`exec`], with an argument vector and a timeout.

pub mod activity;
pub mod agents;
pub mod assistants;
pub mod button_row;
pub mod chat;
pub mod clone;
pub mod exec;
pub mod github;
pub mod hosts;
pub mod notifiers;
pub mod pidfd;
mod proc;
pub mod process;
pub mod remote_tmux;
pub mod repo_lock;
pub mod runtime_handle;
mod slots;
pub mod tmux;
pub mod trackers;
pub mod worktree;

/// The agents module under its former name (`plugins::agent::CommandAgent` keeps working).
pub use self::agents as agent;
pub use self::slots::*;

use std::time::Duration;

/// What went wrong inside a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// A subprocess failed; `stderr` is its captured error output (never secrets).
    #[error("`{program}` failed ({status}): {stderr}")]
    Command {
        /// Program name.
        program: String,
        /// Exit status description.
        status: String,
        /// Captured stderr, trimmed.
        stderr: String,
    },
    /// A call took longer than its timeout.
    #[error("`{what}` timed out after {after:?}")]
    Timeout {
        /// What timed out.
        what: String,
        /// The timeout.
        after: Duration,
    },
    /// The input is not acceptable (bad branch name, unknown agent…).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The runtime, workspace or remote object does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// An answer was not typed: the agent asks another question than the one it answers.
    #[error("the agent asks another question now; nothing was typed")]
    AnotherQuestion,
    /// The slot has no implementation of that name in this build.
    #[error("plugin `{name}` is not available for slot {slot}")]
    Unavailable {
        /// Slot name.
        slot: &'static str,
        /// Plugin name.
        name: String,
    },
    /// An I/O error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A remote service answered with an error. `detail` never holds a secret (no URL with a
    /// token, no credentials).
    #[error("{service} answered HTTP {status}: {detail}")]
    Http {
        /// Which service (`slack`, `telegram`, `webhook`…).
        service: &'static str,
        /// HTTP status (Slack's and Telegram's errors inside a 200 keep their 200).
        status: u16,
        /// The service's error code or a short excerpt of its body.
        detail: String,
        /// How long the service asked us to wait (`Retry-After`, `retry_after`).
        retry_after: Option<Duration>,
    },
    /// The request never got an answer (connection refused, reset, DNS, TLS).
    #[error("{service} unreachable: {detail}")]
    Unreachable {
        /// Which service.
        service: &'static str,
        /// What failed, without the URL (it may hold a token).
        detail: String,
    },
    /// A remote API refused for its rate limit. Try again after `retry_after`.
    #[error("rate limited ({kind}); retry after {retry_after:?}")]
    RateLimited {
        /// `primary` (the hourly budget is spent) or `secondary` (abuse limit).
        kind: &'static str,
        /// How long to wait: `retry-after` for a secondary limit, else until the reset.
        retry_after: Duration,
    },
    /// A remote API answered with an error status (message from its body; never a token).
    #[error("remote API answered {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's message.
        message: String,
    },
    /// The PR cannot be merged as it is (conflicts, blocked, closed): GitHub's 405.
    #[error("not mergeable: {0}")]
    NotMergeable(String),
    /// The object changed under us (the PR head moved since we looked): GitHub's 409.
    #[error("conflict: {0}")]
    Conflict(String),
}

impl PluginError {
    /// Whether trying again later may succeed: timeouts, I/O hiccups, unreachable services,
    /// rate limits (429) and server errors (5xx, 408) — not bad input or refused credentials.
    pub fn is_retriable(&self) -> bool {
        match self {
            PluginError::Timeout { .. }
            | PluginError::Io(_)
            | PluginError::Unreachable { .. }
            | PluginError::RateLimited { .. } => true,
            PluginError::Http {
                status,
                retry_after,
                ..
            } => *status == 429 || *status == 408 || *status >= 500 || retry_after.is_some(),
            PluginError::Api { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// How long the remote service asked us to wait before trying again, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PluginError::Http { retry_after, .. } => *retry_after,
            PluginError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Result alias for plugin calls.
pub type PluginResult<T> = Result<T, PluginError>;

pub use self::chat::reply_key::ReplyKey;
pub use self::runtime_handle::{ProcessHandle, RemoteTmuxHandle, RuntimeHandle, TmuxHandle};

pub use crate::domain::pr::{
    CheckInfo, CiSummary, FailedCheck, MergeMethod, PrRemark, PrStatus, RemarkKind, ReviewBody,
    ReviewComment, ReviewFeedback, ReviewThread, UnknownMergeMethod,
};

impl From<UnknownMergeMethod> for PluginError {
    fn from(e: UnknownMergeMethod) -> Self {
        PluginError::Invalid(e.to_string())
    }
}
