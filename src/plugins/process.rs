//! The `process` runtime: the agent is a plain child process in its own process group.
//!
//! Designed to outlive Flotilla: the agent's stdout and stderr go straight to a log file (not
//! through a pipe Flotilla holds), and its stdin is a named pipe the agent itself holds open
//! for reading and writing, so a Flotilla crash neither breaks its output nor closes its input.
//! Exits are observed without polling: our own children are reaped by a task per child; an
//! agent adopted after a restart is watched through a pidfd (readable when the process ends).
//! A pid is only trusted together with the process start time recorded at launch, so a reused
//! pid is never mistaken for the agent.
//!
//! Intent before effect: the agent's identity is on disk before it runs (its pid file is
//! written by the child itself, between `fork` and `exec`), so after a crash [`Runtime::find`]
//! adopts the agent a launch started instead of starting a second one. Messages are appended
//! to a journal file (`stdin.log`) that a relay (`tail -f`, in the agent's process group)
//! copies to the agent's stdin: the journal's length, taken before a message is written, tells
//! after a crash whether (and how much of) that message got in. Handles of agents started by
//! earlier versions name a named pipe instead, and are written to as before.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::proc::{process_alive, process_ended, signal_group, start_ticks};
pub use super::runtime_handle::ProcessHandle;
use super::{LaunchSpec, PluginError, PluginResult, Runtime, RuntimeHandle};

/// The message journal in a session's directory (see the module docs).
const JOURNAL: &str = "stdin.log";

/// Writes the calling process's pid to `path`. Runs in the child between `fork` and `exec`:
/// only async-signal-safe calls, no allocation.
fn write_own_pid(path: &CString) {
    // SAFETY: open/getpid/write/close with a valid NUL-terminated path and a stack buffer.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o600,
        );
        if fd < 0 {
            return;
        }
        let mut n = libc::getpid() as u64;
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 || i == 0 {
                break;
            }
        }
        let _ = libc::write(fd, buf[i..].as_ptr().cast(), buf.len() - i);
        libc::close(fd);
    }
}

/// Starts the relay copying the journal to the agent's stdin (`writer`), in the agent's process
/// group (a kill of the group takes it too) and ending with the agent (`--pid`).
fn spawn_relay(journal: &Path, writer: std::io::PipeWriter, pid: i32) -> PluginResult<()> {
    let mut relay = tokio::process::Command::new("tail")
        .args(["-c", "+1", "-f", &format!("--pid={pid}")])
        .arg(journal)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::null())
        .process_group(pid)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| PluginError::Command {
            program: "tail".into(),
            status: "spawn failed".into(),
            stderr: e.to_string(),
        })?;
    // Reaped by its own task (no zombie once it ends with the agent).
    tokio::spawn(async move {
        let _ = relay.wait().await;
    });
    Ok(())
}

/// `text` as one line of input.
fn line(text: &str) -> String {
    let mut msg = text.to_string();
    if !msg.ends_with('\n') {
        msg.push('\n');
    }
    msg
}

async fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    tokio::fs::metadata(path)
        .await
        .is_ok_and(|m| m.file_type().is_fifo())
}

/// Appends `bytes` to the journal in one `write_all` (off the async threads).
async fn append(path: &Path, bytes: Vec<u8>) -> PluginResult<()> {
    use std::io::Write;
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&bytes))
    })
    .await
    .map_err(|e| PluginError::Io(std::io::Error::other(e)))?
    .map_err(|e| PluginError::NotFound(format!("agent stdin journal: {e}")))
}

/// The journal's bytes from `offset` on.
async fn read_from(path: &Path, offset: u64) -> PluginResult<Vec<u8>> {
    let all = tokio::fs::read(path).await?;
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(all.len());
    Ok(all[start..].to_vec())
}

/// When a process that started `ticks` clock ticks after boot started, on the wall clock.
///
/// Measured back from now through the uptime (10 ms resolution), not forward from the boot
/// time in `/proc/stat`: that one is whole seconds and drifts from the wall clock as the clock
/// is adjusted (here by 0.7 s), which made a launch's own agent look older than its intent.
fn started_at(ticks: u64) -> Option<DateTime<Utc>> {
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // SAFETY: sysconf takes a plain integer.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    let ago = uptime - ticks as f64 / hz as f64;
    let ago = chrono::Duration::milliseconds((ago.max(0.0) * 1000.0) as i64);
    Some(Utc::now() - ago)
}

/// Whether `pid` runs with `FLOTILLA_SESSION_ID=session_id` in its environment: a pid file
/// alone could name a reused pid.
fn runs_session(pid: i32, session_id: &str) -> bool {
    let needle = format!("FLOTILLA_SESSION_ID={session_id}");
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
        .unwrap_or(false)
}

/// How long `destroy` waits after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// How much of the log `output` reads from the end.
const TAIL_BYTES: u64 = 256 * 1024;

impl ProcessHandle {
    fn parse(h: &RuntimeHandle) -> PluginResult<&Self> {
        h.process()
    }
}

/// Exit status of a reaped child: `None` while running, `Some(code)` after.
type ExitCell = watch::Receiver<Option<Option<i32>>>;

/// Runs agents as process groups; files under `dir/{session}/`.
pub struct ProcessRuntime {
    dir: PathBuf,
    /// Children this process spawned, keyed by pid: reaped by their own task (no zombies).
    children: Arc<Mutex<HashMap<i32, ExitCell>>>,
    /// One launch at a time per session: two `create`s of one session never both start.
    launches: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ProcessRuntime {
    /// A runtime keeping its files under `dir`.
    pub fn new(dir: PathBuf) -> Self {
        ProcessRuntime {
            dir,
            children: Arc::new(Mutex::new(HashMap::new())),
            launches: Mutex::new(HashMap::new()),
        }
    }

    /// The lock serializing launches of `session_id`.
    fn launch_lock(&self, session_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.launches.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(session_id.to_string()).or_default().clone()
    }

    /// The live agent of `session_id` that the pid file names (whatever launch started it).
    fn running(&self, session_id: &str) -> Option<ProcessHandle> {
        let dir = self.dir.join(session_id);
        let pid: i32 = std::fs::read_to_string(dir.join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let journal = dir.join(JOURNAL);
        let handle = ProcessHandle {
            pid,
            start_ticks: start_ticks(pid)?,
            log: dir.join("output.log"),
            stdin: if journal.is_file() {
                journal
            } else {
                dir.join("stdin")
            },
        };
        (same_process_alive(&handle) && runs_session(pid, session_id)).then_some(handle)
    }

    fn child_cell(&self, pid: i32) -> Option<ExitCell> {
        self.children.lock().ok().and_then(|m| m.get(&pid).cloned())
    }
}

/// Whether the process of the handle is the one we launched and has not ended.
fn same_process_alive(h: &ProcessHandle) -> bool {
    process_alive(h.pid, h.start_ticks)
}

#[async_trait]
impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn create(&self, spec: &LaunchSpec) -> PluginResult<RuntimeHandle> {
        let (program, args) = spec
            .argv
            .split_first()
            .ok_or_else(|| PluginError::Invalid("empty agent command".into()))?;
        let lock = self.launch_lock(&spec.session_id);
        let _one_launch = lock.lock().await;
        // Exactly one agent per session: one already running (a launch a crash or a restarted
        // actor did not see finish) is adopted, never joined by a second.
        if let Some(h) = self.running(&spec.session_id) {
            tracing::info!(session = %spec.session_id, pid = h.pid, "an agent of this session runs already; adopted instead of starting another");
            return Ok(h.into());
        }
        let dir = self.dir.join(&spec.session_id);
        tokio::fs::create_dir_all(&dir).await?;
        let log = dir.join("output.log");
        // A fresh journal per launch: a new agent never reads its predecessor's messages.
        let journal = dir.join(JOURNAL);
        std::fs::File::create(&journal)?;
        let (reader, writer) = std::io::pipe()?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let err = out.try_clone()?;
        let pid_file = CString::new(dir.join("pid").as_os_str().as_bytes())
            .map_err(|_| PluginError::Invalid("nul in the runtime directory".into()))?;
        crate::telemetry::METRICS.subprocess(program);
        let mut child = {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args)
                .current_dir(&spec.cwd)
                .env_clear()
                .envs(&spec.env)
                .stdin(Stdio::from(reader))
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err))
                .process_group(0)
                .kill_on_drop(false);
            // SAFETY: the hook only makes async-signal-safe calls (open, getpid, write, close)
            // on memory allocated before the fork.
            unsafe {
                cmd.pre_exec(move || {
                    write_own_pid(&pid_file);
                    Ok(())
                });
            }
            cmd.spawn().map_err(|e| PluginError::Command {
                program: program.clone(),
                status: "spawn failed".into(),
                stderr: e.to_string(),
            })?
        };
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| PluginError::Invalid("child has no pid".into()))?;
        let ticks = start_ticks(pid).unwrap_or(0);
        if let Err(e) = spawn_relay(&journal, writer, pid) {
            if start_ticks(pid).is_some() {
                let _ = signal_group(pid, libc::SIGKILL);
                return Err(e);
            }
            // The agent already ended: it needs no input; its exit is observed as usual.
        }
        // For operators (and test clean-up): which process group is this session's agent.
        if let Err(e) = tokio::fs::write(dir.join("pid"), pid.to_string()).await {
            tracing::warn!(error = %e, "writing the pid file failed");
        }
        let (tx, rx) = watch::channel(None);
        if let Ok(mut m) = self.children.lock() {
            m.insert(pid, rx);
        }
        let children = self.children.clone();
        tokio::spawn(async move {
            let code = child.wait().await.ok().and_then(|s| {
                use std::os::unix::process::ExitStatusExt;
                s.code()
                    .or_else(|| s.signal().map(crate::domain::exit_status::signal_status))
            });
            let _ = tx.send(Some(code));
            // Keep the cell a little while for late `wait_exit` callers, then forget it.
            tokio::time::sleep(Duration::from_secs(60)).await;
            if let Ok(mut m) = children.lock() {
                m.remove(&pid);
            }
        });
        let handle = ProcessHandle {
            pid,
            start_ticks: ticks,
            log,
            stdin: journal,
        };
        Ok(handle.into())
    }

    async fn destroy(&self, handle: &RuntimeHandle) -> PluginResult<()> {
        let h = ProcessHandle::parse(handle)?;
        if !same_process_alive(h) {
            return Ok(());
        }
        signal_group(h.pid, libc::SIGTERM)?;
        if tokio::time::timeout(TERM_GRACE, self.wait_exit(handle))
            .await
            .is_err()
        {
            signal_group(h.pid, libc::SIGKILL)?;
        }
        Ok(())
    }

    async fn is_alive(&self, handle: &RuntimeHandle) -> PluginResult<bool> {
        let h = ProcessHandle::parse(handle)?;
        if let Some(cell) = self.child_cell(h.pid) {
            return Ok(cell.borrow().is_none());
        }
        Ok(same_process_alive(h))
    }

    async fn wait_exit(&self, handle: &RuntimeHandle) -> PluginResult<Option<i32>> {
        let h = ProcessHandle::parse(handle)?;
        if let Some(mut cell) = self.child_cell(h.pid) {
            let code = cell
                .wait_for(|c| c.is_some())
                .await
                .map(|c| c.flatten())
                .unwrap_or(None);
            return Ok(code);
        }
        // Not our child (adopted after a restart): the exit status is not ours to read.
        process_ended(h.pid, h.start_ticks).await?;
        Ok(None)
    }

    async fn output(&self, handle: &RuntimeHandle, lines: usize) -> PluginResult<String> {
        let h = ProcessHandle::parse(handle)?;
        tail(&h.log, lines).await
    }

    async fn last_output_at(&self, handle: &RuntimeHandle) -> PluginResult<Option<DateTime<Utc>>> {
        let h = ProcessHandle::parse(handle)?;
        super::activity::modified_at(&h.log).await
    }

    async fn send_message(&self, handle: &RuntimeHandle, text: &str) -> PluginResult<bool> {
        let h = ProcessHandle::parse(handle)?;
        if !self.is_alive(handle).await? {
            return Err(PluginError::NotFound(format!("agent process {}", h.pid)));
        }
        if !is_fifo(&h.stdin).await {
            append(&h.stdin, line(text).into_bytes()).await?;
            return Ok(true);
        }
        let mut tx = tokio::net::unix::pipe::OpenOptions::new()
            .open_sender(&h.stdin)
            .map_err(|e| PluginError::NotFound(format!("agent stdin: {e}")))?;
        let mut msg = text.to_string();
        if !msg.ends_with('\n') {
            msg.push('\n');
        }
        // The whole message is in the pipe once write_all returns: that is delivery here.
        tokio::time::timeout(Duration::from_secs(10), tx.write_all(msg.as_bytes()))
            .await
            .map_err(|_| PluginError::Timeout {
                what: "write to agent stdin".into(),
                after: Duration::from_secs(10),
            })??;
        Ok(true)
    }

    /// The journal's length (`None` for an agent reading a named pipe).
    async fn input_mark(&self, handle: &RuntimeHandle) -> PluginResult<Option<u64>> {
        let h = ProcessHandle::parse(handle)?;
        super::activity::file_len(&h.stdin).await
    }

    /// What the journal holds after `mark` says how far the message got: all of it (done),
    /// a beginning of it (the rest is appended), nothing (it is appended whole).
    async fn resume_message(
        &self,
        handle: &RuntimeHandle,
        text: &str,
        mark: Option<u64>,
    ) -> PluginResult<bool> {
        let h = ProcessHandle::parse(handle)?;
        let Some(mark) = mark.filter(|_| h.stdin.is_file()) else {
            return self.send_message(handle, text).await;
        };
        if !self.is_alive(handle).await? {
            return Err(PluginError::NotFound(format!("agent process {}", h.pid)));
        }
        let written = read_from(&h.stdin, mark).await?;
        let msg = line(text).into_bytes();
        if written.starts_with(&msg) {
            return Ok(true);
        }
        match msg.strip_prefix(written.as_slice()) {
            Some(rest) => {
                append(&h.stdin, rest.to_vec()).await?;
                Ok(true)
            }
            None => {
                // Something else follows the mark: not ours to complete (never typed twice).
                tracing::warn!(
                    pid = h.pid,
                    "an interrupted message cannot be told apart; not re-sent"
                );
                Ok(false)
            }
        }
    }

    /// The agent whose pid file (written by the agent itself before it ran) names a live
    /// process of this session started at or after `since`.
    async fn find(
        &self,
        session_id: &str,
        since: DateTime<Utc>,
    ) -> PluginResult<Option<RuntimeHandle>> {
        let Some(handle) = self.running(session_id) else {
            return Ok(None);
        };
        // Ticks at 10 ms, the launch intent at the microsecond: one second of slack.
        let recent = started_at(handle.start_ticks)
            .is_some_and(|t| t + chrono::Duration::seconds(1) >= since);
        Ok(recent.then(|| handle.into()))
    }

    async fn list_live(&self) -> PluginResult<Vec<String>> {
        let mut out = Vec::new();
        let mut dirs = match tokio::fs::read_dir(&self.dir).await {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        while let Some(d) = dirs.next_entry().await? {
            let Ok(pid) = tokio::fs::read_to_string(d.path().join("pid")).await else {
                continue;
            };
            let Ok(pid) = pid.trim().parse::<i32>() else {
                continue;
            };
            // A live group leader whose start time we did not record is still worth listing.
            if start_ticks(pid).is_some() {
                out.push(d.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(out)
    }
}

/// The last `lines` lines of a file, reading at most `TAIL_BYTES` from its end.
async fn tail(path: &Path, lines: usize) -> PluginResult<String> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(PluginError::NotFound(format!("{}", path.display())))
        }
        Err(e) => return Err(e.into()),
    };
    let len = f.metadata().await?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    f.seek(std::io::SeekFrom::Start(start)).await?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    Ok(all[from..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spec(dir: &Path, argv: &[&str]) -> LaunchSpec {
        let mut env = BTreeMap::new();
        env.insert("PATH".into(), "/usr/bin:/bin".into());
        LaunchSpec {
            session_id: "t-1".into(),
            cwd: dir.to_path_buf(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env,
        }
    }

    #[tokio::test]
    async fn runs_reads_stdin_logs_output_and_reports_exit_code() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = ProcessRuntime::new(dir.path().join("rt"));
        // `head -n 1` echoes one stdin line and exits 0.
        let h = rt
            .create(&spec(dir.path(), &["head", "-n", "1"]))
            .await
            .expect("create");
        assert!(rt.is_alive(&h).await.expect("alive"));
        assert!(rt.send_message(&h, "hello agent").await.expect("send"));
        assert_eq!(rt.wait_exit(&h).await.expect("wait"), Some(0));
        assert_eq!(rt.output(&h, 10).await.expect("out"), "hello agent");
        assert!(!rt.is_alive(&h).await.expect("alive"));
    }

    #[tokio::test]
    async fn a_process_killed_by_a_signal_reports_the_shells_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = ProcessRuntime::new(dir.path().join("rt"));
        let h = rt
            .create(&spec(dir.path(), &["sleep", "600"]))
            .await
            .expect("create");
        let pid = h.process().expect("process").pid;
        // SAFETY: a plain kill(2) of the process this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        assert_eq!(rt.wait_exit(&h).await.expect("wait"), Some(137));
    }

    #[tokio::test]
    async fn a_launch_is_found_again_and_an_interrupted_message_is_finished_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = ProcessRuntime::new(dir.path().join("rt"));
        let before = Utc::now() - chrono::Duration::seconds(2);
        let mut sp = spec(
            dir.path(),
            &["sh", "-c", "while read -r l; do echo \"got: $l\"; done"],
        );
        sp.env.insert("FLOTILLA_SESSION_ID".into(), "t-1".into());
        let h = rt.create(&sp).await.expect("create");
        // The pid file was written by the agent before it ran: a restart finds it.
        let found = rt.find("t-1", before).await.expect("find").expect("found");
        assert_eq!(found, h);
        let later = Utc::now() + chrono::Duration::hours(1);
        assert_eq!(
            rt.find("t-1", later).await.expect("find"),
            None,
            "an older launch"
        );
        assert_eq!(rt.find("t-2", before).await.expect("find"), None);

        assert!(rt.send_message(&h, "first").await.expect("send"));
        let mark = rt.input_mark(&h).await.expect("mark").expect("a journal");
        // A crash cut the write short: half of the message is in.
        let journal = h.process().expect("process").stdin.clone();
        append(&journal, b"sec".to_vec()).await.expect("append");
        assert!(rt
            .resume_message(&h, "second", Some(mark))
            .await
            .expect("resume"));
        // Finished already: resuming again writes nothing.
        let len = tokio::fs::metadata(&journal).await.expect("meta").len();
        assert!(rt
            .resume_message(&h, "second", Some(mark))
            .await
            .expect("again"));
        assert_eq!(
            tokio::fs::metadata(&journal).await.expect("meta").len(),
            len
        );
        // Nothing written yet: sent whole.
        let mark = rt.input_mark(&h).await.expect("mark");
        assert!(rt.resume_message(&h, "third", mark).await.expect("third"));
        let out = loop {
            let o = rt.output(&h, 10).await.unwrap_or_default();
            if o.contains("got: third") {
                break o;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(out, "got: first\ngot: second\ngot: third");
        rt.destroy(&h).await.expect("destroy");
    }

    #[tokio::test]
    async fn an_agent_started_right_after_its_intent_is_found_and_never_started_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = ProcessRuntime::new(dir.path().join("rt"));
        let mut sp = spec(dir.path(), &["sleep", "600"]);
        sp.env.insert("FLOTILLA_SESSION_ID".into(), "t-1".into());
        // The intent is taken at the microsecond, the agent starts milliseconds later: the
        // boot-time clock (whole seconds, drifting) once made it look older than its intent.
        let since = Utc::now();
        let h = rt.create(&sp).await.expect("create");
        let found = rt.find("t-1", since).await.expect("find");
        assert_eq!(found.as_ref(), Some(&h), "its own launch is found");
        // A second create of the running session (a restarted actor, a crash before the
        // handle was saved) adopts it.
        let again = rt.create(&sp).await.expect("second create");
        assert_eq!(
            again, h,
            "the running agent is adopted, not joined by a second"
        );
        rt.destroy(&h).await.expect("destroy");
    }

    #[tokio::test]
    async fn destroy_kills_the_group_and_is_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = ProcessRuntime::new(dir.path().join("rt"));
        let h = rt
            .create(&spec(dir.path(), &["sleep", "600"]))
            .await
            .expect("create");
        rt.destroy(&h).await.expect("destroy");
        assert!(!rt.is_alive(&h).await.expect("alive"));
        rt.destroy(&h).await.expect("second destroy is a no-op");
    }

    #[tokio::test]
    async fn an_adopted_process_is_watched_through_its_pidfd() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ProcessRuntime::new(dir.path().join("rt"));
        let h = first
            .create(&spec(dir.path(), &["sleep", "600"]))
            .await
            .expect("create");
        // A second runtime instance stands for Flotilla after a restart.
        let second = ProcessRuntime::new(dir.path().join("rt"));
        assert!(second.is_alive(&h).await.expect("alive"));
        let waiter = tokio::spawn({
            let h = h.clone();
            async move { second.wait_exit(&h).await }
        });
        first.destroy(&h).await.expect("destroy");
        let code = tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("exit observed")
            .expect("join")
            .expect("wait");
        assert_eq!(code, None, "an adopted process has no readable status");
    }

    #[tokio::test]
    async fn a_forged_handle_with_another_start_time_is_not_alive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = ProcessRuntime::new(dir.path().join("rt"));
        let me = std::process::id() as i32;
        let h = RuntimeHandle::from(ProcessHandle {
            pid: me,
            start_ticks: 1,
            log: dir.path().join("x"),
            stdin: dir.path().join("y"),
        });
        assert!(!rt.is_alive(&h).await.expect("alive"));
    }
}
