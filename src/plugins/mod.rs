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
//! | where chats come from | [`ChatPlatform`] | (Chat work) |
//! | who answers chats | [`Assistant`] | `claude`, `codex`, `command` ([`assistants`]) |
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
pub mod process;
pub mod remote_tmux;
pub mod repo_lock;
pub mod runtime_handle;
pub mod tmux;
pub mod trackers;
pub mod worktree;

/// The agents module under its former name (`plugins::agent::CommandAgent` keeps working).
pub use self::agents as agent;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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

/// What a runtime needs to start an agent.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Session id (names the runtime's resources).
    pub session_id: String,
    /// Working directory (the workspace).
    pub cwd: PathBuf,
    /// Argument vector; never a shell string.
    pub argv: Vec<String>,
    /// The complete environment of the agent (the runtime clears everything else).
    pub env: BTreeMap<String, String>,
}

pub use self::chat::reply_key::ReplyKey;
pub use self::runtime_handle::{ProcessHandle, RemoteTmuxHandle, RuntimeHandle, TmuxHandle};

/// How a human can attach to a session's terminal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AttachInfo {
    /// `tmux` or `process`.
    pub kind: String,
    /// What to attach to (tmux target, log path).
    pub target: String,
    /// A command line a human can run.
    pub command: Vec<String>,
}

/// Reads the question at the bottom of an agent's screen, worded with its options listed
/// (`Proceed? [1. Yes | 2. No]`, see [`activity::terminal_question`]); `None` when none is
/// drawn. What a runtime answering keys onto a screen looks for.
pub type ScreenQuestion = fn(&str) -> Option<String>;

/// Whether a screen shows a question other than the one an answer is for (see
/// [`Runtime::answer_to`], [`Agent::shows_other_question`]).
pub type OtherQuestion<'a> = dyn Fn(&str) -> bool + Send + Sync + 'a;

/// Where agents run. Implementations must survive a Flotilla restart: a handle persisted
/// before a crash still finds (or reports gone) the same agent afterwards.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Plugin name (`process`, `tmux`).
    fn name(&self) -> &'static str;

    /// Starts the agent and returns a handle to persist.
    ///
    /// # Errors
    /// `Command`/`Io` when it cannot start; nothing is left running in that case.
    async fn create(&self, spec: &LaunchSpec) -> PluginResult<RuntimeHandle>;

    /// Stops the agent and everything it started. Idempotent: destroying a gone runtime is Ok.
    ///
    /// # Errors
    /// `Io` when signalling fails for another reason than "already gone".
    async fn destroy(&self, handle: &RuntimeHandle) -> PluginResult<()>;

    /// Whether the agent still runs. Must not start a subprocess per call where avoidable.
    ///
    /// # Errors
    /// `Invalid` for a handle this runtime did not make.
    async fn is_alive(&self, handle: &RuntimeHandle) -> PluginResult<bool>;

    /// Resolves when the agent ends, with its exit status if known. Event-driven (no polling
    /// loop per session). Cancel-safe: dropping the future stops watching.
    ///
    /// # Errors
    /// `Invalid` for a foreign handle.
    async fn wait_exit(&self, handle: &RuntimeHandle) -> PluginResult<Option<i32>>;

    /// The last `lines` lines of the agent's output.
    ///
    /// # Errors
    /// `NotFound` when no output exists.
    async fn output(&self, handle: &RuntimeHandle, lines: usize) -> PluginResult<String>;

    /// When the agent last produced output, if the runtime can tell cheaply.
    ///
    /// # Errors
    /// `Io` on failure.
    async fn last_output_at(&self, handle: &RuntimeHandle) -> PluginResult<Option<DateTime<Utc>>>;

    /// Delivers a message to the agent and returns whether delivery was confirmed.
    ///
    /// # Errors
    /// `NotFound` when the agent is gone; `Timeout` when it does not take the message.
    async fn send_message(&self, handle: &RuntimeHandle, text: &str) -> PluginResult<bool>;

    /// Answers a question the agent shows (a menu choice like `1`, or `y`/`n`), as keys rather
    /// than a pasted message: TUI menus take key presses and ignore pastes. `read` finds the
    /// question on the agent's screen as its plugin reads it ([`Agent::screen_question`]).
    /// Default: delivered like a message (a line on stdin).
    ///
    /// # Errors
    /// As [`Runtime::send_message`].
    async fn answer(
        &self,
        handle: &RuntimeHandle,
        choice: &str,
        _read: ScreenQuestion,
    ) -> PluginResult<bool> {
        self.send_message(handle, choice).await
    }

    /// [`Runtime::answer`], typed only while the question on screen is the one the answer is
    /// for: while `other` says the screen shows another (the agent moved on before the session
    /// saw it), nothing is typed. Default: `answer` (a runtime that cannot read the screen
    /// cannot tell).
    ///
    /// # Errors
    /// `AnotherQuestion` when the screen shows another question; else as
    /// [`Runtime::send_message`].
    async fn answer_to(
        &self,
        handle: &RuntimeHandle,
        choice: &str,
        read: ScreenQuestion,
        _other: &OtherQuestion<'_>,
    ) -> PluginResult<bool> {
        self.answer(handle, choice, read).await
    }

    /// A position in the agent's input (or its output log) taken just before a message is
    /// typed and stored with the message, so that after a crash [`Runtime::resume_message`]
    /// can tell how far that delivery got. `None`: the runtime cannot tell.
    ///
    /// # Errors
    /// `Io` when the position cannot be read.
    async fn input_mark(&self, _handle: &RuntimeHandle) -> PluginResult<Option<u64>> {
        Ok(None)
    }

    /// Finishes delivering `text`, whose delivery began at `mark` and was cut short by a
    /// crash: completes it when part of it got in, only confirms it when all of it did, and
    /// sends it otherwise; never types it twice, nor onto a half-typed line. Default: sends it
    /// (right for a runtime whose `input_mark` is `None` and whose agents do not outlive
    /// Flotilla).
    ///
    /// # Errors
    /// As [`Runtime::send_message`].
    async fn resume_message(
        &self,
        handle: &RuntimeHandle,
        text: &str,
        _mark: Option<u64>,
    ) -> PluginResult<bool> {
        self.send_message(handle, text).await
    }

    /// How a human attaches. Default: what the handle says ([`RuntimeHandle::attach`]).
    fn attach_info(&self, handle: &RuntimeHandle) -> Option<AttachInfo> {
        handle.attach()
    }

    /// Names of the agents this runtime has running now (for start-up reconciliation: what
    /// runs but is not in the store is an orphan). Session ids for Flotilla's own runtimes.
    ///
    /// # Errors
    /// `Command`/`Io` when the runtime cannot be listed.
    async fn list_live(&self) -> PluginResult<Vec<String>> {
        Ok(Vec::new())
    }

    /// The agent this runtime started for `session_id` at or after `since`, running or
    /// exited, when it still knows it: after a crash, tells whether a launch happened (and
    /// gives its handle) so it is not launched twice. Default: `None` (the runtime cannot
    /// tell; its agents do not outlive Flotilla).
    ///
    /// # Errors
    /// `Command`/`Io` when the runtime cannot be asked.
    async fn find(
        &self,
        _session_id: &str,
        _since: DateTime<Utc>,
    ) -> PluginResult<Option<RuntimeHandle>> {
        Ok(None)
    }
}

/// Context an agent needs to build its launch.
#[derive(Debug, Clone)]
pub struct AgentContext {
    /// Session id.
    pub session_id: String,
    /// Workspace path.
    pub workspace: PathBuf,
    /// File holding the prompt.
    pub prompt_file: PathBuf,
    /// Resume the previous conversation (restore).
    pub resume: bool,
    /// The agent's own conversation id to resume (from [`Agent::agent_session_id`]), when the
    /// caller knows it. With `resume` set and this `None`, the agent looks for the newest
    /// conversation of this workspace itself, and starts afresh when there is none.
    pub agent_session_id: Option<String>,
    /// Instructions to give as the agent's first prompt (a restart for a reaction, with
    /// `resume`), for agents whose [`Agent::takes_message_at_launch`] is true.
    pub message: Option<String>,
    /// The `flotilla` executable the agent's hooks may call (`flotilla hook <kind>`), when
    /// Flotilla has one; the hooks report waits for a human the moment the agent shows them.
    pub flotilla_cli: Option<PathBuf>,
    /// A permission mode that replaces the agent's configured one for this launch (the
    /// sandbox's, `sandbox.permission_mode`).
    pub permission_mode: Option<crate::config::PermissionMode>,
}

impl AgentContext {
    /// The permission mode this launch runs with.
    pub fn mode(&self, s: &crate::config::AgentSettings) -> crate::config::PermissionMode {
        self.permission_mode.unwrap_or(s.permission_mode)
    }
}

/// The files of the machine an agent runs on, as [`Agent::prepare`] edits them: this
/// machine's ([`LocalFiles`]) or a remote host's over SSH
/// ([`crate::plugins::hosts::files::HostFiles`]).
#[async_trait]
pub trait AgentFiles: Send + Sync {
    /// The file's text; `None` when it does not exist.
    ///
    /// # Errors
    /// `Io` (or the transport's error) when it exists but cannot be read.
    async fn read(&self, path: &Path) -> PluginResult<Option<String>>;

    /// Replaces the file with `text` atomically (a temporary file renamed over it, mode
    /// 0600), making its directory when missing.
    ///
    /// # Errors
    /// `Io` (or the transport's error) when it cannot be written.
    async fn write(&self, path: &Path, text: &str) -> PluginResult<()>;

    /// `path` with symbolic links resolved where possible (as given otherwise).
    async fn canonical(&self, path: &Path) -> PathBuf {
        path.to_path_buf()
    }
}

/// This machine's files.
pub struct LocalFiles;

#[async_trait]
impl AgentFiles for LocalFiles {
    async fn read(&self, path: &Path) -> PluginResult<Option<String>> {
        match tokio::fs::read_to_string(path).await {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn write(&self, path: &Path, text: &str) -> PluginResult<()> {
        let (path, text) = (path.to_path_buf(), text.to_string());
        tokio::task::spawn_blocking(move || write_atomically(&path, text.as_bytes()))
            .await
            .map_err(|e| PluginError::Io(std::io::Error::other(e)))?
            .map_err(PluginError::Io)
    }

    async fn canonical(&self, path: &Path) -> PathBuf {
        tokio::fs::canonicalize(path)
            .await
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// Writes `file` through a temporary file beside it (mode 0600, synced) renamed over it.
///
/// # Errors
/// When the directory cannot be made or the file written or renamed.
pub fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".flotilla-{}", std::process::id()));
    let tmp = file.with_file_name(name);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, file)
}

/// Which coding agent runs, how it is launched, and what it is doing.
#[async_trait]
pub trait Agent: Send + Sync {
    /// Agent name.
    fn name(&self) -> &str;

    /// Argument vector and extra environment for the launch (the caller adds
    /// `FLOTILLA_SESSION_ID` and `FLOTILLA_PROMPT_FILE`). Reads the prompt file; with
    /// `ctx.resume`, builds the CLI's resume command when a previous conversation is known.
    ///
    /// # Errors
    /// `Invalid` when the agent's settings cannot produce a launch or the prompt is unreadable.
    fn launch(&self, ctx: &AgentContext) -> PluginResult<(Vec<String>, BTreeMap<String, String>)>;

    /// Whether [`Agent::launch`] gives `ctx.message` to the agent as its first prompt (the
    /// CLI takes a prompt on its command line, with or without resuming). When false the
    /// caller types the message in once the agent runs.
    fn takes_message_at_launch(&self) -> bool {
        false
    }

    /// What the agent is doing: from its own session log where it keeps one, else from the
    /// screen in `probe` (rules in [`activity`]). `Ok(None)` when nothing can be told.
    /// Reads files only (a bounded tail); never starts a subprocess.
    ///
    /// # Errors
    /// `Io` when a log exists but cannot be read.
    async fn activity(
        &self,
        probe: &activity::ActivityProbe,
    ) -> PluginResult<Option<activity::ActivitySignal>> {
        Ok(activity::terminal_activity(probe))
    }

    /// Prepares the agent's own configuration before a launch so that it asks nothing Flotilla
    /// can answer for the user (e.g. Claude Code's folder-trust dialog for a worktree Flotilla
    /// made from the user's repository). `repo` is the project's repository; `env` the
    /// environment the agent will get. Default: nothing to do.
    ///
    /// # Errors
    /// `Io` when the agent's configuration cannot be read or written.
    /// `files` are those of the machine the agent runs on (this one, or a remote host's over
    /// SSH), and `repo` is the repository as that machine sees it.
    async fn prepare(
        &self,
        _ctx: &AgentContext,
        _repo: &Path,
        _env: &BTreeMap<String, String>,
        _files: &dyn AgentFiles,
    ) -> PluginResult<()> {
        Ok(())
    }

    /// The agent's own state (config, credentials, conversations) under the environment
    /// `env` it runs with: what a sandbox keeps read-write for it while hiding the rest of the
    /// home. Default: nothing.
    fn state_paths(&self, _env: &BTreeMap<String, String>) -> Vec<PathBuf> {
        Vec::new()
    }

    /// How the agent's screen is read for a question to answer with keys (by a runtime's
    /// [`Runtime::answer`]): by default [`activity::terminal_question`]; an agent whose
    /// dialogs that reading misses reads them itself.
    fn screen_question(&self) -> ScreenQuestion {
        activity::terminal_question
    }

    /// Whether `screen` shows a question other than `asked`, the one the session recorded
    /// (as [`Agent::question`] worded it): an answer to `asked` is then not typed, since its
    /// key would answer a question nobody read. `false` when it cannot tell (no question
    /// drawn, or one this agent words otherwise). `workspace` is the agent's working
    /// directory, symbolic links resolved. By default the [`Agent::screen_question`] reading.
    fn shows_other_question(&self, screen: &str, asked: &str, _workspace: &Path) -> bool {
        (self.screen_question())(screen).is_some_and(|q| !crate::domain::question::alike(&q, asked))
    }

    /// What the agent waits for, as one line for a human, when `activity` said
    /// `waiting_input`: by default the question at the bottom of the screen.
    async fn question(&self, probe: &activity::ActivityProbe) -> Option<String> {
        probe
            .terminal
            .as_deref()
            .and_then(activity::terminal_question)
    }

    /// The cause of a failed exit in words, from the agent's last output (`output`, its last
    /// non-blank lines), when the agent recognizes it: e.g. Claude Code's first-run set-up
    /// screen that could not reach the vendor. It becomes the last line the session's
    /// `reason` names. Default: none (the last output line speaks for itself).
    fn exit_cause(&self, _output: &str) -> Option<String> {
        None
    }

    /// Whether a run that exited 0 may have failed all the same, so its last output is read
    /// for [`Agent::failed_run`]. Default: no (an exit 0 is a finished run, and no capture of
    /// the screen is taken for it).
    fn reads_clean_exit(&self) -> bool {
        false
    }

    /// Why a run that exited 0 failed all the same, when the agent's last output (`output`)
    /// says so: the task was not done (aider exits 0 after the model API refused it). Called
    /// only when [`Agent::reads_clean_exit`]. Default: none.
    fn failed_run(&self, _output: &str) -> Option<String> {
        None
    }

    /// Tokens used and their cost so far in the workspace's current conversation, where the
    /// agent's log reports them. `Ok(None)` for agents that do not.
    ///
    /// # Errors
    /// `Io` when a log exists but cannot be read.
    async fn usage(&self, _workspace: &Path) -> PluginResult<Option<activity::Usage>> {
        Ok(None)
    }

    /// The agent's own id for the newest conversation in `workspace` (what its resume flag
    /// takes), if it keeps one Flotilla can find.
    ///
    /// # Errors
    /// `Io` when the agent's session directory cannot be read.
    async fn agent_session_id(&self, _workspace: &Path) -> PluginResult<Option<String>> {
        Ok(None)
    }

    /// What the spawn-time preflight checks before a session is created (its program and
    /// environment); `None` (the default) skips the check, e.g. for test doubles.
    fn preflight(&self) -> Option<crate::preflight::AgentLaunch> {
        None
    }
}

/// A workspace created for a session.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceInfo {
    /// Its path.
    pub path: PathBuf,
    /// Its branch.
    pub branch: String,
}

/// What a workspace needs to be created.
#[derive(Debug, Clone)]
pub struct WorkspaceRequest {
    /// Project repository (a local clone).
    pub repo: PathBuf,
    /// Remote name.
    pub remote: String,
    /// Base branch.
    pub base_branch: String,
    /// Branch to create or reuse.
    pub branch: String,
    /// Where to put the workspace.
    pub path: PathBuf,
}

/// Where a session's files live (a git worktree or clone).
#[async_trait]
pub trait Workspace: Send + Sync {
    /// Plugin name.
    fn name(&self) -> &'static str;

    /// Creates the workspace on `branch` (created from the base if it does not exist; reused if
    /// it does, which is how restore recreates a workspace). A failure leaves nothing behind.
    ///
    /// # Errors
    /// `Invalid` for a bad branch name; `Command` when git fails.
    async fn create(&self, req: &WorkspaceRequest) -> PluginResult<WorkspaceInfo>;

    /// Removes the workspace; keeps the branch. Idempotent.
    ///
    /// # Errors
    /// `Command` when git fails for another reason than "already gone".
    async fn destroy(&self, repo: &Path, path: &Path) -> PluginResult<()>;

    /// Whether the workspace exists.
    async fn exists(&self, path: &Path) -> bool;

    /// Makes the workspace of `req` unless it exists (a restart's, a restore's); `true` when
    /// it made it, so a failed launch removes only what it made. Default: [`Workspace::exists`]
    /// then [`Workspace::create`]; a remote host's asks once for both.
    ///
    /// # Errors
    /// As [`Workspace::create`].
    async fn ensure(&self, req: &WorkspaceRequest) -> PluginResult<bool> {
        if self.exists(&req.path).await {
            return Ok(false);
        }
        self.create(req).await.map(|_| true)
    }

    /// Where a session's workspace goes, given where Flotilla would put it on this machine
    /// (`<home>/worktrees/<project>/<session>`). Default: there; a remote host's workspace
    /// maps it under the host's work directory.
    fn place(&self, local: &Path) -> PathBuf {
        local.to_path_buf()
    }

    /// Deletes a session's local branch (when the config says killed sessions lose it).
    /// Idempotent: a missing branch is Ok.
    ///
    /// # Errors
    /// `Command` when git fails for another reason.
    async fn delete_branch(&self, repo: &Path, branch: &str) -> PluginResult<()>;
}

/// An issue from a tracker, as the prompt builder needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Issue {
    /// Tracker id (`42`, `INT-100`).
    pub id: String,
    /// Title.
    pub title: String,
    /// Body (Markdown).
    pub body: String,
    /// Labels.
    pub labels: Vec<String>,
    /// Web URL.
    pub url: String,
    /// Branch the tracker suggests.
    pub branch: Option<String>,
    /// The issue is done with (GitHub `closed`, Linear state type `completed`/`canceled`,
    /// Jira status category `done`): a spawn for it is refused.
    #[serde(default)]
    pub closed: bool,
}

/// What to write back to an issue at one stage of its session's PR (opened, merged). Every
/// part is optional; a tracker ignores the parts it has no notion of (labels on Jira/Linear,
/// states on GitHub).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBack {
    /// A comment (Markdown; Jira gets it as an ADF paragraph with its links).
    pub comment: Option<String>,
    /// Labels to add (GitHub).
    pub add_labels: Vec<String>,
    /// Labels to take off (GitHub); one the issue does not carry is not an error.
    pub remove_labels: Vec<String>,
    /// The workflow state to move to (Linear, Jira), by name or id.
    pub state: Option<String>,
}

impl WriteBack {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.comment.is_none()
            && self.add_labels.is_empty()
            && self.remove_labels.is_empty()
            && self.state.is_none()
    }
}

/// Where tasks come from (GitHub issues, Linear, Jira), and where their progress goes back.
#[async_trait]
pub trait Tracker: Send + Sync {
    /// Fetches one issue, with whether it is closed.
    ///
    /// # Errors
    /// `NotFound` for an unknown issue; anything else (auth, network) aborts a spawn before
    /// anything is created.
    async fn issue(&self, id: &str) -> PluginResult<Issue>;

    /// Writes `w` to issue `id`: the comment first, then labels, then the state. Not
    /// idempotent (a second call comments twice): the caller records what was written.
    ///
    /// # Errors
    /// `NotFound` for an unknown issue, `Invalid` for a state the issue cannot move to (no
    /// such workflow state or transition), the API's error otherwise.
    async fn write_back(&self, id: &str, w: &WriteBack) -> PluginResult<()>;

    /// Ids of the open issues carrying `label`, for polling intake. Trackers without a
    /// listing answer an empty list.
    ///
    /// # Errors
    /// The API's error.
    async fn labelled(&self, label: &str) -> PluginResult<Vec<String>> {
        let _ = label;
        Ok(vec![])
    }
}

pub use crate::domain::pr::{
    CheckInfo, CiSummary, FailedCheck, MergeMethod, PrRemark, PrStatus, RemarkKind, ReviewBody,
    ReviewComment, ReviewFeedback, ReviewThread, UnknownMergeMethod,
};

impl From<UnknownMergeMethod> for PluginError {
    fn from(e: UnknownMergeMethod) -> Self {
        PluginError::Invalid(e.to_string())
    }
}

/// The remote API's rate-limit budget, from the last response's `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Requests (or GraphQL points) per window.
    pub limit: i64,
    /// Left in the window.
    pub remaining: i64,
    /// When the window resets (UTC epoch seconds).
    pub reset: i64,
}

/// Where PRs live (GitHub). `repo` is always `owner/name`.
///
/// Reads are idempotent and may be answered from conditional requests (an unchanged resource
/// costs no quota). Every call has a timeout. Rate limits surface as
/// [`PluginError::RateLimited`] carrying how long to wait.
#[async_trait]
pub trait Scm: Send + Sync {
    /// Finds the open PR whose head is `branch`, with its full status.
    ///
    /// # Errors
    /// `RateLimited`, `Timeout`, `Api` on API failure.
    async fn find_pr(&self, repo: &str, branch: &str) -> PluginResult<Option<PrStatus>>;

    /// One PR's status (state, CI rollup, review decision, mergeability, threads).
    ///
    /// # Errors
    /// `NotFound` for an unknown PR; `RateLimited`, `Timeout`, `Api` on API failure.
    async fn pr_status(&self, repo: &str, number: i64) -> PluginResult<PrStatus>;

    /// Many PRs' status in as few requests as possible (GraphQL aliases, 50 PRs a request).
    /// Unknown numbers are left out of the answer.
    ///
    /// # Errors
    /// `RateLimited`, `Timeout`, `Api` on API failure.
    async fn batch_status(&self, repo: &str, numbers: &[i64]) -> PluginResult<Vec<PrStatus>>;

    /// Whether anything about the repo's open PRs changed since the last call (ao's "Guard
    /// 1"): one conditional request, free when nothing changed. The first call says `true`.
    /// Check runs and statuses do not bump a PR; poll those per head with [`Scm::ci`].
    ///
    /// # Errors
    /// `RateLimited`, `Timeout`, `Api` on API failure.
    async fn repo_changed(&self, repo: &str) -> PluginResult<bool>;

    /// CI on commit `head_sha`: every check, the failed ones with their URLs and the tail of
    /// their job logs.
    ///
    /// # Errors
    /// `RateLimited`, `Timeout`, `Api` on API failure (a missing log is not an error).
    async fn ci(&self, repo: &str, head_sha: &str) -> PluginResult<CiSummary>;

    /// What humans said: the review decision, unresolved threads (file:line, author, body),
    /// review bodies and conversation comments.
    ///
    /// # Errors
    /// `NotFound` for an unknown PR; `RateLimited`, `Timeout`, `Api` on API failure.
    async fn review_feedback(&self, repo: &str, number: i64) -> PluginResult<ReviewFeedback>;

    /// Merges a PR with `method`. With `expected_head`, refuses if the head moved. Returns the
    /// merge commit sha. Not idempotent: a merged PR answers `NotMergeable`.
    ///
    /// # Errors
    /// `NotMergeable` (conflicts, closed, draft), `Conflict` (the head is not
    /// `expected_head`), `NotFound`, `RateLimited`, `Timeout`, `Api`.
    async fn merge(
        &self,
        repo: &str,
        number: i64,
        method: MergeMethod,
        expected_head: Option<&str>,
    ) -> PluginResult<String>;

    /// The budget the last response reported, if any.
    fn rate_limit(&self) -> Option<RateLimit>;
}

/// A notification to deliver. Serialized as is, it is the `webhook` notifier's body
/// (INTERFACE.md: at least `id`, `priority`, `event`, `session`, `message`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Notification {
    /// Stable id; receivers dedupe on it.
    pub id: String,
    /// `urgent`, `action`, `warning`, `info`.
    pub priority: String,
    /// Event kind (`agent.exited`, `reaction.escalated`, `notifications.digest`…).
    pub event: String,
    /// Session id, if any.
    pub session: Option<String>,
    /// Text: what happened and what is asked of the human.
    pub message: String,
    /// The session's project.
    #[serde(default)]
    pub project: Option<String>,
    /// The reaction that caused it (`agent-exited`, `approved-and-green`…).
    #[serde(default)]
    pub reaction: Option<String>,
    /// Whether a reaction gave up and escalated to humans.
    #[serde(default)]
    pub escalation: bool,
    /// The session's pull request, if it has one.
    #[serde(default)]
    pub pr_url: Option<String>,
    /// The session's state when it was written.
    #[serde(default)]
    pub state: Option<String>,
    /// When it was written (RFC 3339).
    #[serde(default)]
    pub created_at: String,
    /// For a digest (`event` = `notifications.digest`): the notifications it stands for, each
    /// with its own `id` (receivers dedupe those too). Empty otherwise.
    #[serde(default)]
    pub items: Vec<Notification>,
    /// Whether an earlier attempt may have delivered it already (one that failed, or a
    /// process that stopped mid-delivery): a notifier that can find its earlier post (Slack's
    /// bot posts, the `chat` notifier) looks before posting ([`Notification::reply_key`]).
    /// Not sent.
    #[serde(skip)]
    pub may_be_posted: bool,
}

impl Notification {
    /// Whether this is a digest of several notifications.
    pub fn is_digest(&self) -> bool {
        !self.items.is_empty()
    }

    /// The key its posts are made under, the same at every attempt (the id and the time it
    /// was written; an unreadable time reads as now), telling whether one may be out already.
    pub fn reply_key(&self) -> ReplyKey {
        let created = chrono::DateTime::parse_from_rfc3339(&self.created_at)
            .map_or_else(|_| chrono::Utc::now(), |t| t.with_timezone(&chrono::Utc));
        ReplyKey::new(
            format!("notification/{}", self.id),
            created,
            self.may_be_posted,
        )
    }
}

/// How humans hear from Flotilla (desktop, Slack, webhook, chat).
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Plugin kind (`webhook`, `slack`…), for logs.
    fn kind(&self) -> &'static str;

    /// Delivers one notification. At-least-once: the outbox may call it again with the same id.
    /// Returns where it landed when that is a chat message a human can reply to (Telegram,
    /// Slack and Discord bot posts), so the reply can be matched to the session.
    ///
    /// # Errors
    /// Retriable errors (`is_retriable`) are retried by the outbox; others fail the delivery.
    async fn notify(&self, n: &Notification) -> PluginResult<Option<PostedMessage>>;
}

/// A notification as posted on a chat platform: what a reply to it points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostedMessage {
    /// Platform (`telegram`, `slack`, `discord`), as in [`InboundMessage::platform`].
    pub platform: String,
    /// The chat or channel it went to.
    pub chat: String,
    /// The message, as a reply names it (`InboundMessage::meta["reply_to"]`): `{chat}:{id}`
    /// on Telegram, `{channel}:{ts}` on Slack, the message id on Discord (ids are global
    /// there, and a thread started from a message has the message's id).
    pub key: String,
}

/// An inbound chat message, normalized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct InboundMessage {
    /// Platform name.
    pub platform: String,
    /// Thread/channel key.
    pub thread: String,
    /// Platform message id (dedupe).
    pub message_id: String,
    /// Author's platform id.
    pub author: String,
    /// Text.
    pub text: String,
    /// What the platform knows besides the text (build with `..Default::default()`). Keys the
    /// chat bridge reads: `kind` (`issue` | `pr`, GitHub), `closes` (comma-separated issue
    /// numbers a PR closes), `event` (`closed`: the issue/PR was closed — clean up its
    /// worktree; no turn runs), `context` (issue/PR title and body, appended to prompts),
    /// `base` (the branch to cut worktrees from), `repo_url` (clone URL of the repository),
    /// `reply_to` (the [`PostedMessage::key`] of the message this one replies to, or of the
    /// thread it was written in), `unaddressed` (`true`: the bot was not mentioned; taken only
    /// as a reply to a notification), `answers` (set by the inbox: the session whose
    /// notification this replies to), `moved_from` (the thread this chat had before the
    /// platform gave it a new id, a Telegram group upgraded to a supergroup: the message joins
    /// that thread's conversation when one exists).
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

/// What an accepted inbound message became.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxReceipt {
    /// Conversation id (`{platform}:{thread}`).
    pub conversation: String,
    /// `false` when the platform redelivered a message already stored.
    pub new: bool,
    /// Messages ahead of this one in its conversation (0 = it runs next).
    pub position: usize,
}

/// Where platform adapters (webhook handlers, pollers, the gateway) hand inbound messages.
/// `receive` returns only once the message is durably stored: adapters acknowledge the
/// platform (2xx, Telegram offset) after it and never before.
#[async_trait]
pub trait ChatInbox: Send + Sync {
    /// Stores one inbound message and wakes its conversation.
    ///
    /// # Errors
    /// The store refused: the adapter must not acknowledge (the platform redelivers).
    async fn receive(&self, message: InboundMessage) -> PluginResult<InboxReceipt>;

    /// A thread was closed on its platform (a GitHub issue or PR; `message.meta` has
    /// `event: closed`). Queued after the conversation's own messages when the conversation
    /// exists, so its worktree is released in order; nothing happens otherwise. Not a user's
    /// message: no allowlist applies. `true` when it was queued now.
    ///
    /// # Errors
    /// The store refused: the adapter must not acknowledge.
    async fn thread_closed(&self, message: InboundMessage) -> PluginResult<bool> {
        let _ = message;
        Ok(false)
    }
}

/// A chat platform (Telegram, Discord, Slack, GitHub comments, Jira).
#[async_trait]
pub trait ChatPlatform: Send + Sync {
    /// Platform name.
    fn name(&self) -> &'static str;

    /// Largest message the platform accepts, in characters (replies are split under it).
    fn max_message_len(&self) -> usize;

    /// Posts a reply and returns its platform id (for later edits).
    ///
    /// # Errors
    /// Retriable errors for rate limits (after waiting the platform's `retry_after`).
    async fn send(&self, thread: &str, text: &str) -> PluginResult<String>;

    /// [`ChatPlatform::send`] for a reply that may be sent again: a retry after an answer that
    /// was lost, a re-delivery after a crash between the post and its record. `key` is the
    /// same at every attempt at one reply; a platform that can tell a repeat by it (Discord's
    /// enforced `nonce`; a mark in the post that a later attempt finds in the thread, on
    /// Slack, GitHub and Jira) posts the reply once and answers the first post's id. Default:
    /// `send` (the platform cannot tell, and a repeat is posted again: Telegram).
    ///
    /// # Errors
    /// As `send`.
    async fn send_once(&self, thread: &str, text: &str, key: &ReplyKey) -> PluginResult<String> {
        let _ = key;
        self.send(thread, text).await
    }

    /// Replaces the text of a posted message (streaming replies).
    ///
    /// # Errors
    /// As `send`.
    async fn edit(&self, thread: &str, message_id: &str, text: &str) -> PluginResult<()>;

    /// Up to `limit` messages posted in `thread` before the platform message `before`
    /// (an [`InboundMessage::message_id`]), newest first. Platforms without a readable
    /// history (the default) have none. Read-only.
    ///
    /// # Errors
    /// As `send`.
    async fn history(
        &self,
        _thread: &str,
        _before: &str,
        _limit: usize,
    ) -> PluginResult<Vec<HistoryMessage>> {
        Ok(Vec::new())
    }

    /// Whether `error` (from [`ChatPlatform::send`]) says the bot cannot post in the thread
    /// at all (Slack's `not_in_channel`, `channel_not_found`, `is_archived`): a reply
    /// address handed out with a message ([`META_RESPONSE_URL`]) may carry the reply
    /// instead. None by default.
    fn cannot_post_here(&self, _error: &PluginError) -> bool {
        false
    }

    /// Posts `text` through a reply address the platform handed out with a message
    /// ([`META_RESPONSE_URL`], a capability URL: never logged), split under the platform's
    /// limit, in at most `max_posts` posts (pieces past that are dropped). Returns the
    /// posts made. Platforms without reply addresses (the default) refuse.
    ///
    /// # Errors
    /// As `send`; `Unavailable` on a platform without reply addresses.
    async fn send_to_address(
        &self,
        _address: &str,
        _text: &str,
        _max_posts: usize,
    ) -> PluginResult<usize> {
        Err(PluginError::Unavailable {
            slot: "chat reply address",
            name: self.name().to_string(),
        })
    }
}

/// Message meta key of a reply address a platform hands out with a message: Slack's slash
/// command `response_url` (valid 30 minutes, 5 posts). A capability URL: kept in the inbox
/// only, never logged, never shown by an API or put in an event.
pub const META_RESPONSE_URL: &str = "response_url";

/// An earlier message of a chat thread ([`ChatPlatform::history`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryMessage {
    /// Author's display name or platform id.
    pub author: String,
    /// Whether a bot wrote it (Flotilla's own replies included).
    pub bot: bool,
    /// Text, as the platform stores it.
    pub text: String,
}

/// One piece of an assistant's streamed answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Chunk {
    /// Text for the user.
    Text {
        /// The text.
        text: String,
    },
    /// A tool call, summarized.
    ToolUse {
        /// Summary.
        summary: String,
    },
    /// The end of the turn, with the id to resume from.
    Result {
        /// Resume id.
        session_id: Option<String>,
    },
    /// The assistant announced its session id before the end (Claude's `system/init`): kept
    /// so a cancelled turn can still be resumed.
    Session {
        /// Resume id.
        session_id: String,
    },
    /// A tool the assistant was not allowed to use (Claude's `permission_denials`): the user
    /// is told, never left with a silent "success".
    Denied {
        /// Tool name (`Bash`, `Write`…).
        tool: String,
        /// What it tried: the command, the path, or the input in short.
        #[serde(default)]
        detail: String,
    },
    /// What the turn used and cost, as the assistant itself reported it (Claude's
    /// `total_cost_usd` and `usage`, Codex's `turn.completed.usage`). Tokens without a cost
    /// are priced by the chat bridge from the `pricing:` table.
    Usage(TurnUsage),
}

/// One turn's usage as the assistant reported it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnUsage {
    /// Input tokens not served from a prompt cache.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Prompt-cache reads and writes.
    #[serde(default)]
    pub cache_tokens: u64,
    /// This turn's cost in US dollars, when the assistant reports one.
    #[serde(default)]
    pub cost_usd: Option<f64>,
    /// What the assistant's session has cost so far, this turn included, when it reports
    /// that (Claude's `total_cost_usd` of a resumed session).
    #[serde(default)]
    pub session_cost_usd: Option<f64>,
    /// The model the turn ran on, when the assistant names it (Claude's `system/init`): what
    /// the tokens are priced at when there is no cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// One assistant turn.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRequest {
    /// Working directory of the assistant.
    pub cwd: PathBuf,
    /// The prompt.
    pub prompt: String,
    /// Session to continue, if any.
    pub resume_id: Option<String>,
}

/// The agent a conversation talks to (claude `-p`, codex `exec`, any command).
#[async_trait]
pub trait Assistant: Send + Sync {
    /// Kind (`claude`, `codex`, `command`), for logs and `/status`.
    fn kind(&self) -> &'static str;

    /// Runs one turn, sending its chunks in order as they arrive; returns when the assistant
    /// has finished. Dropping the future cancels the turn: the assistant's whole process group
    /// is killed (this is how `/cancel` and the turn timeout work).
    ///
    /// # Errors
    /// `Command` when the assistant fails (non-zero exit, no result); `Io` if it cannot start.
    async fn turn(
        &self,
        request: &TurnRequest,
        chunks: tokio::sync::mpsc::Sender<Chunk>,
    ) -> PluginResult<()>;
}
