//! The `tmux` runtime: each agent runs in a tmux session (named after the Flotilla session) on
//! a private tmux server per Flotilla instance (`tmux -L <socket>`), so a human can attach and
//! watch or type, and agents survive a Flotilla restart.
//!
//! How it keeps the runtime contract:
//! - **No shell.** The agent's argv is passed to `new-session` as separate arguments, which tmux
//!   hands to `execvp` (a *single* argument would be run through `$SHELL -c`, so a one-element
//!   argv is started as `env -- PROGRAM`). The launch commands reach tmux as a script on stdin
//!   (`start-server ; source-file -`), each word single-quoted in tmux's own syntax, so `;`,
//!   `$`, `~`, newlines and length (a command line holds about 16 KiB) need no special case;
//!   `-s`/`-c` values are format-expanded by tmux, so `#` is doubled there. The one shell
//!   string is tmux's own `pipe-pane` command (`cat >> 'LOG'`, path single-quoted).
//! - **No secret on a command line.** The tmux server keeps the argv of the client that
//!   started it for its whole life, readable by every local user in `/proc/<pid>/cmdline`; the
//!   agent's environment (report token, API keys) goes only in the stdin script.
//! - **Exact environment.** Every tmux client runs under `env -i`: the server started by the
//!   first client then has an empty global environment, and an unattached client's `PATH`
//!   (which tmux would otherwise copy into the pane) is absent, so the pane gets exactly the
//!   spec's variables via `-e` (plus tmux's own `TERM`, `TMUX`, `TMUX_PANE`, `SHELL`).
//! - **Exit status.** `remain-on-exit` is set as a global window option in the same invocation
//!   that creates the session, before the agent can exit, so the pane stays and
//!   `#{pane_dead_status}` can be read. [`Runtime::wait_exit`] watches the pane's pid with a
//!   pidfd (no polling loop), reads the status (from `/proc` while the process is still an
//!   unreaped zombie, else from tmux once it has reaped it), then kills the session.
//! - **Cheap checks.** `is_alive` reads `/proc` (pane pid + start time, so a reused pid is never
//!   mistaken for the agent); `last_output_at` is the mtime of the pane's log, which
//!   `pipe-pane -o` appends to (set up in the same invocation, before the server reads any
//!   output, so nothing is missed).
//! - **Confirmed delivery** (agent-orchestrator weakness #5: long messages left unsubmitted
//!   while reporting success). See [`TmuxRuntime::send_message`]: paste as one bracketed paste,
//!   wait until the draft is visible, press Enter, and report success only when the draft line
//!   was consumed; Enter is retried, and `Ok(false)` means "not confirmed".
//!
//! Every tmux call goes through [`exec::run`] with [`TMUX_TIMEOUT`].
//!
//! **On a remote host** ([`TmuxRuntime::over_ssh`]) the same tmux commands run through the
//! host's SSH transport ([`crate::plugins::hosts::ssh`]); what reads `/proc` or signals locally (liveness,
//! exit status, the hang-up's survivors) is the remote runtime's business
//! ([`super::remote_tmux`]), and messages reach the pane's buffer through stdin, not a file.
//!
//! Beside this file: `screen` reads a capture of the pane (the draft of a pasted message,
//! whether it was submitted) and the pane log's text; `keys` types into the pane (the paste
//! and its Enter, a menu's cursor, an answer in words); the pane's process is read from `/proc`
//! by `plugins::proc`, shared with the `process` runtime.

mod keys;
mod screen;

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::activity::MenuKey;
use super::proc::{process_alive, process_ended, signal_group, start_ticks, zombie_exit_status};
pub use super::runtime_handle::TmuxHandle;
use super::{
    exec, LaunchSpec, OtherQuestion, PluginError, PluginResult, Runtime, RuntimeHandle,
    ScreenQuestion,
};
use crate::domain::exit_status::{killed_by, signal_status};
use keys::{ANSWER_TRIES, ANSWER_WAIT, DRAFT_WAIT, KEY_READY, POLL};
pub use screen::strip_ansi;
use screen::{find_draft, last_rows, needle, shows_draft, shows_text, Screen};

/// Timeout of every tmux command.
pub const TMUX_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of a launch on a remote host that also copies a file there (see [`RemoteFile`]).
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// New sessions are this wide and tall (a detached session has no client to size it).
const WIDTH: &str = "200";
const HEIGHT: &str = "50";
/// How long `destroy` waits for a survivor of the hang-up after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// How much of the log `output` reads from the end when the pane is gone.
const LOG_TAIL_BYTES: u64 = 256 * 1024;
/// After the pane process ends, how long to wait for tmux to reap it and record the status.
const STATUS_WAIT: Duration = Duration::from_secs(2);
/// A file a launch on a remote host writes there in the same ssh call that starts tmux (the
/// prompt): its path, two directories made first (private, as the file), its bytes.
pub(crate) struct RemoteFile<'a> {
    /// Where it goes on the host.
    pub path: &'a Path,
    /// Directories made first.
    pub dirs: [&'a Path; 2],
    /// What it holds.
    pub bytes: &'a [u8],
}

impl TmuxHandle {
    fn parse(h: &RuntimeHandle) -> PluginResult<&Self> {
        h.tmux()
    }

    /// Whether the pane's process is the one we launched and has not ended.
    fn alive(&self) -> bool {
        process_alive(self.pane_pid, self.start_ticks)
    }
}

/// Runs agents in tmux sessions on a private server; pane logs and message files under
/// `log_dir`.
pub struct TmuxRuntime {
    socket: String,
    log_dir: PathBuf,
    /// The tmux binary, resolved on Flotilla's `PATH` once (tmux itself runs with no `PATH`).
    tmux: String,
    /// The host the server runs on, when not this machine.
    remote: Option<crate::plugins::hosts::ssh::SshTransport>,
    /// tmux commands run before each launch (a remote host's exit hook), in script syntax.
    prelude: String,
}

impl TmuxRuntime {
    /// A runtime using the tmux server `tmux -L socket_name`, with its files in `log_dir`.
    pub fn new(socket_name: impl Into<String>, log_dir: PathBuf) -> Self {
        let tmux = std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("tmux"))
                    .find(|p| p.is_file())
            })
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| "tmux".into());
        TmuxRuntime {
            socket: socket_name.into(),
            log_dir,
            tmux,
            remote: None,
            prelude: String::new(),
        }
    }

    /// A runtime whose tmux server `tmux -L socket_name` runs on a host reached through
    /// `ssh`, pane logs in `log_dir` on that host; `prelude` (tmux script syntax, see
    /// [`tmux_quote`]) runs before each launch.
    pub fn over_ssh(
        socket_name: impl Into<String>,
        log_dir: PathBuf,
        ssh: crate::plugins::hosts::ssh::SshTransport,
        prelude: String,
    ) -> Self {
        TmuxRuntime {
            socket: socket_name.into(),
            log_dir,
            tmux: "tmux".into(),
            remote: Some(ssh),
            prelude,
        }
    }

    /// The socket name (`tmux -L NAME`).
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// Runs one tmux invocation (`args` may hold several commands separated by `";"`).
    pub(crate) async fn tmux(&self, args: &[&str]) -> PluginResult<String> {
        self.tmux_input(args, None).await
    }

    /// [`TmuxRuntime::tmux`] with `input` on tmux's stdin.
    async fn tmux_input(&self, args: &[&str], input: Option<&[u8]>) -> PluginResult<String> {
        if let Some(ssh) = &self.remote {
            let mut argv: Vec<&str> = vec!["env", "-i", "tmux", "-L", &self.socket];
            argv.extend(["-f", "/dev/null"]);
            argv.extend_from_slice(args);
            return ssh.run(&argv, input, TMUX_TIMEOUT).await;
        }
        let mut argv: Vec<&str> = vec!["env", "-i"];
        let tmpdir = std::env::var("TMUX_TMPDIR")
            .ok()
            .map(|d| format!("TMUX_TMPDIR={d}"));
        if let Some(t) = &tmpdir {
            argv.push(t);
        }
        argv.extend([self.tmux.as_str(), "-L", &self.socket, "-f", "/dev/null"]);
        argv.extend_from_slice(args);
        exec::run_with_input(&argv, input, None, TMUX_TIMEOUT).await
    }

    /// Runs the tmux commands in `script` (tmux's configuration syntax, see [`tmux_quote`]),
    /// given on stdin, starting the server if needed; returns what they print. On a remote
    /// host `file` is written there first, by the same call (its bytes before the script on
    /// stdin: [`crate::plugins::hosts::ssh::WRITE_THEN_RUN`]).
    async fn tmux_script(
        &self,
        script: &str,
        file: Option<&RemoteFile<'_>>,
    ) -> PluginResult<String> {
        // `source-file` alone does not start a server.
        let args = ["start-server", ";", "source-file", "-"];
        let (Some(ssh), Some(f)) = (&self.remote, file) else {
            return self.tmux_input(&args, Some(script.as_bytes())).await;
        };
        use crate::plugins::hosts::ssh::{printf_b_line, WRITE_THEN_RUN};
        let (path, d0, d1) = (
            f.path.to_string_lossy(),
            f.dirs[0].to_string_lossy(),
            f.dirs[1].to_string_lossy(),
        );
        let mut argv: Vec<&str> = vec!["sh", "-c", WRITE_THEN_RUN, "flotilla-launch"];
        argv.extend([&*path, &*d0, &*d1]);
        argv.extend(["env", "-i", "tmux", "-L", &self.socket, "-f", "/dev/null"]);
        argv.extend(args);
        let mut input = printf_b_line(f.bytes);
        input.extend_from_slice(script.as_bytes());
        ssh.run(&argv, Some(&input), UPLOAD_TIMEOUT).await
    }

    /// The names of the sessions on this runtime's server (empty when no server runs): for
    /// start-up reconciliation against the store.
    ///
    /// # Errors
    /// `Command`/`Timeout` when tmux fails for another reason than "no server".
    pub async fn list_sessions(&self) -> PluginResult<Vec<String>> {
        match self.tmux(&["list-sessions", "-F", "#{session_name}"]).await {
            Ok(out) => Ok(out.lines().map(str::to_string).collect()),
            Err(e) if is_gone(&e) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Stops this runtime's tmux server and every agent in it. Idempotent.
    ///
    /// # Errors
    /// `Command`/`Timeout` when tmux fails for another reason than "no server".
    pub async fn kill_server(&self) -> PluginResult<()> {
        match self.tmux(&["kill-server"]).await {
            Ok(_) => Ok(()),
            Err(e) if is_gone(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The pane process's exit status once it has ended: from `/proc` while it is an unreaped
    /// zombie (tmux 3.3 occasionally never reaps a pane process that exits at once, and then
    /// never records a status), else what tmux recorded once it has reaped it ([`DEAD_STATUS`]:
    /// the status, or for a process killed by signal N the shell's 128 + N). A zombie killed by
    /// a signal is taken only once tmux, still answering for the pane, has not reaped it within
    /// [`STATUS_WAIT`]. `None` when the pane or server is gone (status unknowable), or neither
    /// source has it by then.
    async fn exit_status(&self, h: &TmuxHandle) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + STATUS_WAIT;
        loop {
            // A death by signal waits for tmux's record: a server that is killed hangs up its
            // panes, and that is the runtime lost (`None` below, when tmux no longer answers),
            // not the agent's own end.
            let zombie = zombie_exit_status(h.pane_pid, h.start_ticks);
            if let Some(code) = zombie.filter(|c| killed_by(*c).is_none()) {
                return Some(code);
            }
            match self
                .tmux(&[
                    "display-message",
                    "-p",
                    "-t",
                    &h.pane,
                    &format!("#{{pane_pid}}:#{{pane_dead}}:{DEAD_STATUS}"),
                ])
                .await
            {
                Ok(out) => {
                    let f: Vec<&str> = out.trim().split(':').collect();
                    if f.first() != Some(&h.pane_pid.to_string().as_str()) {
                        return None; // another pane (the server was restarted)
                    }
                    if let (Some(&"1"), Some(code)) =
                        (f.get(1), f.get(2).and_then(|w| dead_status(w)))
                    {
                        return Some(code);
                    }
                    // Not reaped yet.
                }
                Err(_) => return None,
            }
            if tokio::time::Instant::now() >= deadline {
                // tmux still shows our pane unreaped (the 3.3 case above), so its server lives:
                // a signal the zombie records was the agent's own end.
                return zombie;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Kills the handle's session if it is still the one we made (same pane and pid).
    pub(crate) async fn kill_own_session(&self, h: &TmuxHandle) -> PluginResult<()> {
        let owner = match self
            .tmux(&[
                "display-message",
                "-p",
                "-t",
                &h.pane,
                "#{pane_pid} #{session_name}",
            ])
            .await
        {
            Ok(out) => out,
            Err(e) if is_gone(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        if owner.trim() != format!("{} {}", h.pane_pid, h.session) {
            return Ok(()); // a different pane now: ours is gone
        }
        match self.tmux(&["kill-session", "-t", &h.pane]).await {
            Ok(_) => Ok(()),
            Err(e) if is_gone(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn start(
        &self,
        spec: &LaunchSpec,
        name: &str,
        log: &Path,
        file: Option<&RemoteFile<'_>>,
    ) -> PluginResult<String> {
        let mut argv = spec.argv.clone();
        if argv.len() == 1 {
            // tmux runs a single argument through `$SHELL -c`; two arguments are exec'd.
            argv.splice(0..0, ["env".to_string(), "--".to_string()]);
        }
        // The commands go to tmux on stdin (`source-file -`), not on its command line: the
        // first client's argv stays the tmux server's argv for its whole life, and every local
        // user (every agent) can read it from `/proc`. Env values carry tokens.
        let target = format!("={name}:");
        let pipe = format!("cat >> {}", shell_quote(&log.to_string_lossy()));
        let mut words: Vec<String> = ["set-option", "-wg", "remain-on-exit", "on"]
            .iter()
            .map(|w| tmux_quote(w))
            .collect();
        words.push(";".into());
        for w in [
            "new-session",
            "-d",
            "-s",
            &double_hash(name),
            "-c",
            &double_hash(&spec.cwd.to_string_lossy()),
            "-x",
            WIDTH,
            "-y",
            HEIGHT,
            "-P",
            "-F",
            "#{pane_id} #{pane_pid}",
        ] {
            words.push(tmux_quote(w));
        }
        for (k, v) in &spec.env {
            words.push("-e".into());
            words.push(tmux_quote(&format!("{k}={v}")));
        }
        words.push("--".into());
        words.extend(argv.iter().map(|a| tmux_quote(a)));
        words.push(";".into());
        for w in ["pipe-pane", "-o", "-t", &target, &double_hash(&pipe)] {
            words.push(tmux_quote(w));
        }
        let mut script = self.prelude.clone();
        script.push_str(&words.join(" "));
        script.push('\n');
        self.tmux_script(&script, file).await
    }

    /// Starts the agent in tmux session `name`, its pane piped into `log` (a path where the
    /// server runs); returns the pane id and pid, or `None` when a live session of that name runs already
    /// (the caller adopts or refuses it). A dead one left over is replaced. On a remote host,
    /// `file` is written there by the same call, before tmux starts (locally it must be `None`).
    pub(crate) async fn launch(
        &self,
        spec: &LaunchSpec,
        name: &str,
        log: &Path,
        file: Option<&RemoteFile<'_>>,
    ) -> PluginResult<Option<(String, i32)>> {
        let out = match self.start(spec, name, log, file).await {
            Err(PluginError::Command { stderr, .. }) if stderr.contains("duplicate session") => {
                // A session of this name is left over. A dead one (an earlier run that exited)
                // may go; a live one is somebody's agent.
                let dead = self
                    .tmux(&[
                        "display-message",
                        "-p",
                        "-t",
                        &format!("={name}:"),
                        "#{pane_dead}",
                    ])
                    .await
                    .map(|o| o.trim() == "1")
                    .unwrap_or(false);
                if !dead {
                    // Somebody's agent runs there: the caller adopts it or refuses.
                    return Ok(None);
                }
                let _ = self
                    .tmux(&["kill-session", "-t", &format!("={name}")])
                    .await;
                self.start(spec, name, log, file).await?
            }
            other => other?,
        };
        let mut f = out.split_whitespace();
        let (Some(pane), Some(pid)) = (f.next(), f.next().and_then(|p| p.parse::<i32>().ok()))
        else {
            let _ = self
                .tmux(&["kill-session", "-t", &format!("={name}")])
                .await;
            return Err(PluginError::Command {
                program: "tmux".into(),
                status: "unexpected output".into(),
                stderr: out.trim().to_string(),
            });
        };
        Ok(Some((pane.to_string(), pid)))
    }

    /// The pane of tmux session `name` when it was created at or after `since`: its id, pid
    /// and whether it is dead.
    pub(crate) async fn find_pane(
        &self,
        name: &str,
        since: DateTime<Utc>,
    ) -> PluginResult<Option<(String, i32, bool)>> {
        let out = match self
            .tmux(&[
                "display-message",
                "-p",
                "-t",
                &format!("={name}:"),
                "#{session_created} #{pane_id} #{pane_pid} #{pane_dead}",
            ])
            .await
        {
            Ok(o) => o,
            Err(e) if is_gone(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let f: Vec<&str> = out.split_whitespace().collect();
        let (Some(created), Some(pane), Some(pid)) = (
            f.first().and_then(|c| c.parse::<i64>().ok()),
            f.get(1),
            f.get(2).and_then(|p| p.parse::<i32>().ok()),
        ) else {
            return Ok(None);
        };
        if created < since.timestamp() {
            return Ok(None);
        }
        Ok(Some(((*pane).to_string(), pid, f.get(3) == Some(&"1"))))
    }

    /// Whether the handle's agent may still take keys: from `/proc` locally; a remote
    /// runtime checks before it delegates.
    fn takes_keys(&self, h: &TmuxHandle) -> bool {
        self.remote.is_some() || h.alive()
    }
}

/// A dead pane's exit status as one tmux format word: `#{pane_dead_status}`, or `s` and the
/// signal's number when a signal killed its process; empty until tmux has reaped it. Read by
/// [`dead_status`]; shared with the hosts' exit hook and pane listing.
pub const DEAD_STATUS: &str = "#{?pane_dead_signal,s#{pane_dead_signal},#{pane_dead_status}}";

/// The exit status a [`DEAD_STATUS`] word stands for (a signal N as the shell's 128 + N).
pub fn dead_status(word: &str) -> Option<i32> {
    match word.strip_prefix('s') {
        Some(signal) => signal.parse().ok().map(signal_status),
        None => word.parse().ok(),
    }
}

/// tmux ends a command at an argument ending in `;`; `\;` at the end stands for a literal `;`.
fn escape_arg(a: &str) -> String {
    match a.strip_suffix(';') {
        Some(head) => format!("{head}\\;"),
        None => a.to_string(),
    }
}

/// For arguments tmux format-expands (`-s`, `-c`, `pipe-pane`) in a script: `#` doubled.
pub(crate) fn double_hash(a: &str) -> String {
    a.replace('#', "##")
}

/// One word in tmux's configuration syntax: single-quoted (no escapes, no `$`/`~` expansion,
/// `;` and newlines literal), an inner `'` written as `'"'"'` (adjacent quoted parts join).
pub(crate) fn tmux_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\"'\"'"))
}

pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The tmux session name for a Flotilla session id: tmux itself rewrites `.` and `:`; we keep
/// only `[A-Za-z0-9_-]` so the name never needs quoting or escaping.
pub fn session_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// tmux's ways of saying the server, session or pane does not exist.
pub(crate) fn is_gone(e: &PluginError) -> bool {
    match e {
        PluginError::Command { stderr, .. } => {
            let s = stderr.to_lowercase();
            [
                "no server running",
                "error connecting to",
                // The server was shutting down (its last session just ended) as we asked.
                "server exited unexpectedly",
                "can't find",
                // A server with no session left (as it shuts down, or kept by exit-empty
                // off): `list-panes -a` finds nothing to list.
                "no current target",
                "session not found",
                "no such file",
            ]
            .iter()
            .any(|p| s.contains(p))
        }
        _ => false,
    }
}

/// The pane log from byte `offset` on, as text.
async fn read_log_from(path: &Path, offset: u64) -> PluginResult<String> {
    let all = match tokio::fs::read(path).await {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e.into()),
    };
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(all.len());
    Ok(String::from_utf8_lossy(&all[start..]).into_owned())
}

/// The last `lines` lines of the log, escapes removed.
async fn log_tail(path: &Path, lines: usize) -> PluginResult<String> {
    match super::activity::read_tail(path, LOG_TAIL_BYTES).await? {
        Some((text, _)) => {
            let clean = strip_ansi(&text);
            let all: Vec<&str> = clean.lines().collect();
            Ok(all[all.len().saturating_sub(lines)..].join("\n"))
        }
        None => Err(PluginError::NotFound(path.display().to_string())),
    }
}

#[async_trait]
impl Runtime for TmuxRuntime {
    fn name(&self) -> &'static str {
        "tmux"
    }

    async fn create(&self, spec: &LaunchSpec) -> PluginResult<RuntimeHandle> {
        if spec.argv.is_empty() {
            return Err(PluginError::Invalid("empty agent command".into()));
        }
        let name = session_name(&spec.session_id);
        tokio::fs::create_dir_all(&self.log_dir).await?;
        let log = self.log_dir.join(format!("{name}.log"));
        // Create it now: `output` falls back to it, `last_output_at` reads its mtime.
        tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .await?;
        let Some((pane, pid)) = self.launch(spec, &name, &log, None).await? else {
            // Exactly one agent per session: the running one (a launch a crash or a restarted
            // actor did not see finish) is adopted, not refused.
            if let Some(h) = self
                .find(&spec.session_id, DateTime::<Utc>::MIN_UTC)
                .await?
            {
                tracing::info!(session = %spec.session_id, "a tmux session of this agent runs already; adopted instead of starting another");
                return Ok(h);
            }
            return Err(PluginError::Invalid(format!(
                "tmux session {name} already exists on socket {}",
                self.socket
            )));
        };
        let handle = TmuxHandle {
            socket: self.socket.clone(),
            session: name,
            pane,
            pane_pid: pid,
            // 0 if the agent already exited: then it is simply never alive.
            start_ticks: start_ticks(pid).unwrap_or(0),
            log,
        };
        Ok(handle.into())
    }

    async fn destroy(&self, handle: &RuntimeHandle) -> PluginResult<()> {
        let h = TmuxHandle::parse(handle)?;
        self.kill_own_session(h).await?;
        // Closing the pane hangs up its terminal; an agent that ignores SIGHUP is stopped here.
        if h.alive() {
            signal_group(h.pane_pid, libc::SIGTERM)?;
            if tokio::time::timeout(TERM_GRACE, process_ended(h.pane_pid, h.start_ticks))
                .await
                .is_err()
            {
                signal_group(h.pane_pid, libc::SIGKILL)?;
            }
        }
        Ok(())
    }

    async fn is_alive(&self, handle: &RuntimeHandle) -> PluginResult<bool> {
        Ok(TmuxHandle::parse(handle)?.alive())
    }

    async fn wait_exit(&self, handle: &RuntimeHandle) -> PluginResult<Option<i32>> {
        let h = TmuxHandle::parse(handle)?;
        process_ended(h.pane_pid, h.start_ticks).await?;
        let status = self.exit_status(h).await;
        if let Err(e) = self.kill_own_session(h).await {
            tracing::warn!(session = %h.session, error = %e, "removing an exited tmux session failed");
        }
        Ok(status)
    }

    async fn output(&self, handle: &RuntimeHandle, lines: usize) -> PluginResult<String> {
        let h = TmuxHandle::parse(handle)?;
        let start = format!("-{lines}");
        match self
            .tmux(&["capture-pane", "-p", "-J", "-t", &h.pane, "-S", &start])
            .await
        {
            Ok(screen) => Ok(last_rows(&screen, lines)),
            Err(e) if is_gone(&e) => log_tail(&h.log, lines).await,
            Err(e) => Err(e),
        }
    }

    async fn last_output_at(&self, handle: &RuntimeHandle) -> PluginResult<Option<DateTime<Utc>>> {
        let h = TmuxHandle::parse(handle)?;
        super::activity::modified_at(&h.log).await
    }

    /// Pastes `text` as one bracketed paste (`load-buffer` from a file, `paste-buffer -p`, so
    /// the agent sees one paste, not typed keys; trailing newlines are dropped: Enter is the
    /// submission), waits until the draft is visible, presses Enter and confirms the
    /// submission: the screen row that showed the draft (the end of the message's last line,
    /// or a `[Pasted …]` placeholder) must then show something else, or the cursor must have
    /// left it. Waiting for the draft before Enter avoids the paste/Enter race; judging the
    /// draft row, not "any output change", avoids counting the visible draft as delivery.
    /// Unconfirmed after the first Enter, Enter is pressed again (three in all, at most about 7 s),
    /// then `Ok(false)`. A draft that never appears is also `Ok(false)`, and no Enter is
    /// pressed: the keys went to something that does not show them, which an Enter would
    /// answer.
    async fn send_message(&self, handle: &RuntimeHandle, text: &str) -> PluginResult<bool> {
        let h = TmuxHandle::parse(handle)?;
        if !self.takes_keys(h) {
            return Err(PluginError::NotFound(format!(
                "agent in tmux session {}",
                h.session
            )));
        }
        let text = text.trim_end_matches(['\n', '\r']);
        let needle = needle(text);
        if needle.is_empty() {
            self.tmux(&["send-keys", "-t", &h.pane, "Enter"]).await?;
            return Ok(true);
        }
        self.paste(h, text).await?;

        let draft = self
            .wait_screen(&h.pane, DRAFT_WAIT, |s| find_draft(s, &needle))
            .await?;
        self.submit(h, draft, &needle).await
    }

    /// The pane log's length: what the pane showed after it is what the delivery did.
    async fn input_mark(&self, handle: &RuntimeHandle) -> PluginResult<Option<u64>> {
        let h = TmuxHandle::parse(handle)?;
        super::activity::file_len(&h.log).await
    }

    /// Finishes an interrupted delivery from what the pane shows: a draft of the message still
    /// on the input line is submitted; a message whose draft appeared in the log since `mark`
    /// but is no longer on the input line was submitted (only confirmed); otherwise whatever a
    /// half-finished paste left on the input line is cleared (Ctrl-U) and the message sent.
    async fn resume_message(
        &self,
        handle: &RuntimeHandle,
        text: &str,
        mark: Option<u64>,
    ) -> PluginResult<bool> {
        let h = TmuxHandle::parse(handle)?;
        if !h.alive() {
            return Err(PluginError::NotFound(format!(
                "agent in tmux session {}",
                h.session
            )));
        }
        let needle = needle(text.trim_end_matches(['\n', '\r']));
        if needle.is_empty() {
            return self.send_message(handle, text).await;
        }
        let screen = self.screen(&h.pane).await?;
        let on_input_line = screen
            .rows
            .get(screen.cursor)
            .is_some_and(|r| shows_draft(r, None, &needle));
        if on_input_line {
            let draft = find_draft(&screen, &needle);
            return self.submit(h, draft, &needle).await;
        }
        if let Some(mark) = mark {
            let since = read_log_from(&h.log, mark).await?;
            if shows_text(&strip_ansi(&since), &needle) {
                return Ok(true);
            }
        }
        self.tmux(&["send-keys", "-t", &h.pane, "C-u"]).await?;
        self.send_message(handle, text).await
    }

    /// A menu number is typed as a key (the menu acts on it at once); a menu without numbers
    /// has its cursor moved to the option (arrow keys, then Enter); a numbered menu takes the
    /// key of the option a `y`/`no` or the option's own words name; a line prompt's answer is
    /// typed and submitted with Enter. The keys go only once the question is on
    /// screen (an agent's hook may report the wait before its dialog is drawn, and a key typed
    /// then is lost); confirmed when the screen changed.
    async fn answer(
        &self,
        handle: &RuntimeHandle,
        choice: &str,
        read: ScreenQuestion,
    ) -> PluginResult<bool> {
        self.answer_to(handle, choice, read, &|_| false).await
    }

    /// As `answer`, on the question `other` does not refuse: one the agent drew in its place
    /// (answered elsewhere, or asked next before the session saw it) may be waited out while
    /// the answer's own is still to come (a hook reports a dialog before it is drawn), but is
    /// never typed to; checked again just before the first key.
    async fn answer_to(
        &self,
        handle: &RuntimeHandle,
        choice: &str,
        read: ScreenQuestion,
        other: &OtherQuestion<'_>,
    ) -> PluginResult<bool> {
        let h = TmuxHandle::parse(handle)?;
        if !self.takes_keys(h) {
            return Err(PluginError::NotFound(format!(
                "agent in tmux session {}",
                h.session
            )));
        }
        let question = |s: &Screen| read(&s.rows.join("\n"));
        let asked = self
            .wait_screen(&h.pane, DRAFT_WAIT, |s| {
                let text = s.rows.join("\n");
                read(&text).filter(|_| !other(&text)).map(|q| {
                    let line_prompt = super::activity::line_prompt(&text);
                    let buttons = super::button_row::labels(&text);
                    let movable = match &buttons {
                        Some(labels) => super::button_row::pick(labels, choice).is_some(),
                        None => super::activity::cursor_menu_move(&text, choice.trim()).is_some(),
                    };
                    (q, line_prompt, buttons.is_some(), movable)
                })
            })
            .await?;
        let Some((asked, line_prompt, buttons, movable)) = asked else {
            let now = self.screen(&h.pane).await?.rows.join("\n");
            if read(&now).is_some() && other(&now) {
                return Err(PluginError::AnotherQuestion);
            }
            // No question on screen: delivered as a message instead.
            return self.send_message(handle, choice).await;
        };
        if buttons && !movable {
            // Enter confirms the selected button and letters may move it: an answer naming
            // none is not typed there, unless it refuses with an instruction (its Reject).
            if super::activity::refusal_with_instruction(&asked, choice).is_some() {
                return self
                    .answer_in_words(handle, &h.pane, (&asked, read, other), choice.trim())
                    .await;
            }
            tracing::warn!(session = %h.session, "the answer names none of the buttons on screen");
            return Ok(false);
        }
        // Claude Code and Codex drop a key typed just as their dialog is drawn (a hook may
        // report the wait that early); one typed a moment later is taken the first time.
        tokio::time::sleep(KEY_READY).await;
        if other(&self.screen(&h.pane).await?.rows.join("\n")) {
            return Err(PluginError::AnotherQuestion);
        }
        let choice = choice.trim();
        // A line prompt reads the answer up to Enter; a menu takes one key, acting alone: a
        // yes or no picks the option saying so, other words the option they name. A menu
        // without keys (a `❯` cursor on unnumbered options) is answered by moving its cursor
        // to the option, then Enter.
        let named = super::activity::menu_key(&asked, choice).or(movable.then_some(MenuKey::Move));
        let key = match named {
            _ if line_prompt => MenuKey::Literal(choice.to_string()),
            Some(key) => key,
            // A number or yes/no no option names is typed as it is (a menu with keys of its
            // own). Other words are never typed onto a menu as they are: their letters may be
            // its keys (Codex's `p` allows a command for good), and an Enter confirms the
            // highlighted option.
            None if super::activity::is_choice(choice) => MenuKey::Literal(choice.to_string()),
            None => {
                return self
                    .answer_in_words(handle, &h.pane, (&asked, read, other), choice)
                    .await
            }
        };
        // A TUI may ignore keys for a moment after drawing a dialog (against accidental
        // approvals): the answer is typed again, but only while the screen the key landed on
        // keeps its words (`Screen::words`). An agent that took the key and at once asks again
        // in the same words (the next `git commit`, the same menu) moved the screen meanwhile
        // (its transcript, the dialog's command): typing again there would approve a dialog
        // nobody has seen.
        for _ in 0..ANSWER_TRIES {
            let keys: Option<Vec<&str>> = match &key {
                MenuKey::Literal(k) => Some(vec!["-l", k]),
                MenuKey::Escape => Some(vec!["Escape"]),
                MenuKey::Enter => Some(vec!["Enter"]),
                // From where the cursor is now (a try before may have moved it part of the
                // way); the Enter is the key that answers.
                MenuKey::Move => self
                    .move_cursor_to(&h.pane, choice)
                    .await?
                    .then(|| vec!["Enter"]),
            };
            let mut landed_on = None;
            if let Some(keys) = keys {
                landed_on = Some(self.screen(&h.pane).await?.words());
                let mut args = vec!["send-keys", "-t", &h.pane];
                args.extend(keys);
                self.tmux(&args).await?;
            }
            if line_prompt {
                self.tmux(&["send-keys", "-t", &h.pane, "Enter"]).await?;
            }
            // Taken: the question gone, or the screen's words moved away from the ones the key
            // landed on, in two captures in a row (a capture taken while the TUI redraws can
            // miss the dialog for one frame); or away, then the same question back: the agent
            // took the key, ran the call and asks again in the same words (Claude's next `git
            // commit` is drawn within a capture or two).
            let away_before = AtomicBool::new(false);
            let away_ever = AtomicBool::new(false);
            // An agent that blinks under its dialog never leaves the screen quiet: the wait
            // for a dropped key ends when the words have stayed for `ANSWER_WAIT.quiet`.
            let since = tokio::time::Instant::now();
            let taken = self
                .wait_screen(&h.pane, ANSWER_WAIT, |s| {
                    let gone = question(s).as_ref() != Some(&asked);
                    let moved = landed_on.as_ref().is_some_and(|l| *l != s.words());
                    let away = gone || moved;
                    let away_too = away_before.swap(away, Ordering::Relaxed);
                    let was_away = away_ever.fetch_or(away, Ordering::Relaxed);
                    let back = !away && was_away && landed_on.is_some();
                    if (away && away_too) || back {
                        Some(true)
                    } else if !was_away && !away && since.elapsed() >= ANSWER_WAIT.quiet {
                        Some(false)
                    } else {
                        None
                    }
                })
                .await?;
            if taken == Some(true) {
                return Ok(true);
            }
            if landed_on.is_some() && away_ever.load(Ordering::Relaxed) {
                // The screen left the key's screen without settling: not confirmed, and not
                // typed again either.
                break;
            }
        }
        tracing::warn!(session = %h.session, "an answer was typed but the question stayed");
        Ok(false)
    }

    async fn list_live(&self) -> PluginResult<Vec<String>> {
        self.list_sessions().await
    }

    /// The session's tmux session when it was created at or after `since` (tmux counts whole
    /// seconds), its pane running or dead (`remain-on-exit`).
    async fn find(
        &self,
        session_id: &str,
        since: DateTime<Utc>,
    ) -> PluginResult<Option<RuntimeHandle>> {
        let name = session_name(session_id);
        let Some((pane, pid, dead)) = self.find_pane(&name, since).await? else {
            return Ok(None);
        };
        let handle = TmuxHandle {
            socket: self.socket.clone(),
            session: name.clone(),
            pane,
            pane_pid: pid,
            start_ticks: if dead {
                0
            } else {
                start_ticks(pid).unwrap_or(0)
            },
            log: self.log_dir.join(format!("{name}.log")),
        };
        Ok(Some(handle.into()))
    }
}

/// The tmux socket of the Flotilla instance living in `home`: stable across restarts (so
/// agents are found again) and distinct per instance (FNV-1a of the path).
pub fn socket_name(home: &Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in home.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("flotilla-{:012x}", h & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmux_arguments_are_escaped() {
        assert_eq!(escape_arg("a;"), "a\\;");
        assert_eq!(escape_arg("a\\;"), "a\\\\;");
        assert_eq!(escape_arg("a;b"), "a;b");
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
        assert_eq!(tmux_quote("it's; $HOME"), "'it'\"'\"'s; $HOME'");
        assert_eq!(session_name("demo-1"), "demo-1");
        assert_eq!(session_name("my.proj:2"), "my_proj_2");
    }

    /// tmux's words for a server, session or pane that is not there: a listing of a server
    /// whose last session just ended finds "no current target" (it answered as an error, and
    /// the host monitor took the host for unreachable).
    #[test]
    fn a_server_with_nothing_left_is_gone_and_other_failures_are_not() {
        let failed = |stderr: &str| PluginError::Command {
            program: "tmux".into(),
            status: "exit status: 1".into(),
            stderr: stderr.into(),
        };
        for gone in [
            "no current target",
            "no server running on /tmp/tmux-0/x",
            "can't find pane: %3",
        ] {
            assert!(is_gone(&failed(gone)), "{gone}");
        }
        assert!(!is_gone(&failed("unknown command: lsit-panes")));
        assert!(!is_gone(&PluginError::Timeout {
            what: "tmux".into(),
            after: Duration::from_secs(1),
        }));
    }

    #[test]
    fn foreign_handles_are_invalid() {
        let rt = TmuxRuntime::new("t", PathBuf::from("/nonexistent"));
        let h = RuntimeHandle::from_json(&serde_json::json!({"pid": 1}));
        assert!(matches!(
            TmuxHandle::parse(&h),
            Err(PluginError::Invalid(_))
        ));
        assert!(rt.attach_info(&h).is_none());
    }
}
