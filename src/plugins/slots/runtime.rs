//! Where an agent runs: the [`Runtime`] slot and what a launch gives it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::plugins::{PluginResult, RuntimeHandle};

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
