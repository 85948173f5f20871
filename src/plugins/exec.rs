//! The one way Flotilla runs a subprocess: an argument vector (never a shell string), a
//! timeout, stderr captured into the error, the argv logged at debug level.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::{PluginError, PluginResult};

/// Default timeout for quick tool calls (git plumbing, tmux commands).
pub const QUICK: Duration = Duration::from_secs(30);

/// Starts `cmd`. A program being written cannot run for a moment (`ETXTBSY`: an update in
/// progress, or a file another process still holds open for writing across its fork): that
/// start is tried again a few times, 20 ms apart.
///
/// # Errors
/// The start failed.
pub async fn spawn(cmd: &mut Command) -> std::io::Result<tokio::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 5 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// Runs `argv` in `cwd` and returns its stdout.
///
/// # Errors
/// `Invalid` for an empty argv; `Timeout` past `timeout` (the child is killed);
/// `Command` on a non-zero exit, with the trimmed stderr.
pub async fn run(argv: &[&str], cwd: Option<&Path>, timeout: Duration) -> PluginResult<String> {
    run_with_input(argv, None, cwd, timeout).await
}

/// [`run`], writing `input` to the child's stdin (then closing it): for what must not appear
/// on a command line, where every local user can read it (`/proc/<pid>/cmdline`).
///
/// # Errors
/// As [`run`].
pub async fn run_with_input(
    argv: &[&str],
    input: Option<&[u8]>,
    cwd: Option<&Path>,
    timeout: Duration,
) -> PluginResult<String> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| PluginError::Invalid("empty command".into()))?;
    tracing::debug!(argv = ?argv, "exec");
    crate::telemetry::METRICS.subprocess(program);
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = spawn(&mut cmd).await?;
    let feed = async {
        if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
            use tokio::io::AsyncWriteExt;
            stdin.write_all(bytes).await?;
            // Dropping stdin closes it: the child sees the end of its input.
        }
        child.wait_with_output().await
    };
    let out = tokio::time::timeout(timeout, feed)
        .await
        .map_err(|_| PluginError::Timeout {
            what: argv.join(" "),
            after: timeout,
        })??;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(PluginError::Command {
            program: (*program).to_string(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn captures_stdout_and_reports_failures_with_stderr() {
        assert_eq!(
            run(&["echo", "hi"], None, QUICK).await.ok().as_deref(),
            Some("hi\n")
        );
        match run(&["ls", "/definitely/not/here"], None, QUICK).await {
            Err(PluginError::Command { stderr, .. }) => assert!(stderr.contains("not")),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            run_with_input(&["cat"], Some(b"fed"), None, QUICK)
                .await
                .ok()
                .as_deref(),
            Some("fed")
        );
        match run(&["sleep", "5"], None, Duration::from_millis(50)).await {
            Err(PluginError::Timeout { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
