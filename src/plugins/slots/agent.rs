//! Which agent runs: the [`Agent`] slot, what it is launched with, and the files it prepares.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::plugins::{activity, PluginError, PluginResult, ScreenQuestion};

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
