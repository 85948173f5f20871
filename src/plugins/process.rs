//! The `process` runtime: the agent is a plain child process in its own process group.
//!
//! Designed to outlive Flotilla: the agent's stdout and stderr go straight to a log file (not
//! through a pipe Flotilla holds), and its stdin is a named pipe the agent itself holds open
//! for reading and writing, so a Flotilla crash neither breaks its output nor closes its input.
//! Exits are observed without polling: our own children are reaped by a task per child; an
//! agent adopted after a restart is watched through a pidfd (readable when the process ends).
//! A pid is only trusted together with the process start time recorded at launch, so a reused
//! pid is never mistaken for the agent.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::ErrorKind;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

pub use super::runtime_handle::ProcessHandle;
use super::{LaunchSpec, PluginError, PluginResult, Runtime, RuntimeHandle};

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
}

impl ProcessRuntime {
    /// A runtime keeping its files under `dir`.
    pub fn new(dir: PathBuf) -> Self {
        ProcessRuntime {
            dir,
            children: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn child_cell(&self, pid: i32) -> Option<ExitCell> {
        self.children.lock().ok().and_then(|m| m.get(&pid).cloned())
    }
}

fn mkfifo(path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(ErrorKind::InvalidInput, "nul in path"))?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Start time of `pid` in clock ticks, or `None` if there is no such process.
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process of the handle is the one we launched and has not ended.
fn same_process_alive(h: &ProcessHandle) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", h.pid)) {
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .unwrap_or("X");
            start_ticks(h.pid) == Some(h.start_ticks) && state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; the returned fd is owned by us.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn signal_group(pid: i32, sig: i32) -> std::io::Result<()> {
    // SAFETY: killpg takes plain integers.
    if unsafe { libc::killpg(pid, sig) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(e)
    }
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
        let dir = self.dir.join(&spec.session_id);
        tokio::fs::create_dir_all(&dir).await?;
        let log = dir.join("output.log");
        let fifo = dir.join("stdin");
        match tokio::fs::remove_file(&fifo).await {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        mkfifo(&fifo)?;
        // Read+write: opening never blocks, and the agent keeps a writer itself so it never
        // sees EOF when Flotilla goes away.
        let stdin = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let err = out.try_clone()?;
        crate::telemetry::METRICS.subprocess(program);
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .current_dir(&spec.cwd)
            .env_clear()
            .envs(&spec.env)
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| PluginError::Command {
            program: program.clone(),
            status: "spawn failed".into(),
            stderr: e.to_string(),
        })?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| PluginError::Invalid("child has no pid".into()))?;
        let ticks = start_ticks(pid).unwrap_or(0);
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
            let code = child.wait().await.ok().and_then(|s| s.code());
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
            stdin: fifo,
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
        let fd = match pidfd_open(h.pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if !same_process_alive(h) {
            return Ok(None);
        }
        // SAFETY: `fd` is an owned pidfd that stays open for as long as the AsyncFd lives.
        let afd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| PluginError::Io(e.into()))?;
        let _ready = afd.readable().await?;
        Ok(None)
    }

    async fn output(&self, handle: &RuntimeHandle, lines: usize) -> PluginResult<String> {
        let h = ProcessHandle::parse(handle)?;
        tail(&h.log, lines).await
    }

    async fn last_output_at(&self, handle: &RuntimeHandle) -> PluginResult<Option<DateTime<Utc>>> {
        let h = ProcessHandle::parse(handle)?;
        match tokio::fs::metadata(&h.log).await {
            Ok(m) => Ok(m.modified().ok().map(DateTime::<Utc>::from)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn send_message(&self, handle: &RuntimeHandle, text: &str) -> PluginResult<bool> {
        let h = ProcessHandle::parse(handle)?;
        if !self.is_alive(handle).await? {
            return Err(PluginError::NotFound(format!("agent process {}", h.pid)));
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
