//! The SSH transport: every command Flotilla runs on a host goes through the system's OpenSSH
//! client, as an argument vector turned into one remote command line with each word
//! single-quoted (ssh joins its arguments with spaces and the remote login shell parses the
//! result, so an unquoted word would be split or expanded there).
//!
//! All calls share one control connection per host (`ControlMaster=auto`, `ControlPath` under
//! Flotilla's home, `ControlPersist`), so a call costs a round trip, not a handshake. They run
//! with `BatchMode=yes` (never a password or passphrase prompt), `StrictHostKeyChecking=yes`,
//! a connect timeout, keep-alives (a vanished host ends the connection within seconds), and
//! each under its own timeout ([`crate::plugins::exec`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::config::hosts::HostSettings;
use crate::plugins::{exec, PluginResult};

/// How long an idle control connection stays up.
const CONTROL_PERSIST: &str = "60s";
/// How long establishing the connection may take.
const CONNECT_TIMEOUT: &str = "5";
/// Most calls at once per host: each is a session on the shared connection, and sshd allows
/// 10 per connection by default (`MaxSessions`); the event stream is one more.
const MAX_CALLS: usize = 8;

/// How to reach one host.
#[derive(Debug, Clone)]
pub struct SshTransport {
    /// The host's name in the configuration.
    pub name: String,
    destination: String,
    options: Vec<String>,
    calls: std::sync::Arc<tokio::sync::Semaphore>,
}

/// One word for a POSIX shell: single-quoted, an inner `'` as `'\''`.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The remote command line for `argv`: each word quoted, joined with spaces.
pub fn shell_join<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| shell_quote(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `sh -c` script that writes a file and then runs a command, in one call: `$1` the file,
/// `$2` and `$3` directories made first (private, as the file), the file's bytes the first
/// line of stdin as [`printf_b_line`] encodes them; then the words after `$3` are run (not
/// through a shell) with the rest of stdin. A file that cannot be written runs nothing.
pub const WRITE_THEN_RUN: &str = "(umask 077 && mkdir -p -- \"$2\" \"$3\" && IFS= read -r b && printf '%b' \"$b\" > \"$1\") || exit 1; shift 3; exec \"$@\"";

/// `bytes` as one line of stdin that `IFS= read -r b; printf '%b' "$b"` turns back into
/// them in any POSIX shell: printable ASCII other than `\` as it is, every other byte as
/// `\0ooo`; then a newline. (The shell reads a line byte by byte and never past its end,
/// so what follows on stdin is left for the next command: no length to read exactly, which
/// `head -c` does not promise on every system.)
pub fn printf_b_line(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 1);
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("\\0{b:03o}").as_bytes());
        }
    }
    out.push(b'\n');
    out
}

impl SshTransport {
    /// The transport of host `name`, its control sockets in `control_dir`.
    pub fn new(name: &str, h: &HostSettings, control_dir: &Path) -> Self {
        let mut options: Vec<String> = [
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            "ControlMaster=auto",
            "ServerAliveInterval=2",
            "ServerAliveCountMax=3",
            "LogLevel=ERROR",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        options.push(format!("ConnectTimeout={CONNECT_TIMEOUT}"));
        options.push(format!("ControlPersist={CONTROL_PERSIST}"));
        // `%C`: a hash of the connection (short: a socket path holds ~100 bytes).
        options.push(format!("ControlPath={}/%C", control_dir.display()));
        if let Some(k) = &h.known_hosts {
            options.push(format!("UserKnownHostsFile={}", k.display()));
        }
        if let Some(i) = &h.identity_file {
            options.push(format!("IdentityFile={}", i.display()));
            options.push("IdentitiesOnly=yes".into());
        }
        if let Some(p) = h.port {
            options.push(format!("Port={p}"));
        }
        SshTransport {
            name: name.to_string(),
            destination: h.ssh.clone(),
            options,
            calls: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CALLS)),
        }
    }

    /// The `ssh` argv (without the remote command): options, then `--`-free destination.
    pub fn ssh_argv(&self, tty: bool) -> Vec<String> {
        let mut argv = vec!["ssh".to_string()];
        if tty {
            argv.push("-t".into());
        }
        for o in &self.options {
            argv.push("-o".into());
            argv.push(o.clone());
        }
        argv.push(self.destination.clone());
        argv
    }

    /// The full local argv that runs `remote` on the host.
    pub fn command<S: AsRef<str>>(&self, remote: &[S], tty: bool) -> Vec<String> {
        let mut argv = self.ssh_argv(tty);
        argv.push("--".into());
        argv.push(shell_join(remote));
        argv
    }

    /// Runs `remote` (an argv) on the host, `input` on its stdin; returns its stdout.
    ///
    /// # Errors
    /// `Timeout` past `timeout`; `Command` when ssh or the remote command fails (ssh's own
    /// failures exit 255: see [`is_unreachable`]).
    pub async fn run<S: AsRef<str>>(
        &self,
        remote: &[S],
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> PluginResult<String> {
        let argv = self.command(remote, false);
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        // Waiting for a turn counts against the call's timeout.
        let call = async {
            let _turn = self.calls.acquire().await.ok();
            exec::run_with_input(&args, input, None, timeout).await
        };
        tokio::time::timeout(timeout, call).await.map_err(|_| {
            crate::plugins::PluginError::Timeout {
                what: format!("ssh {}", self.name),
                after: timeout,
            }
        })?
    }

    /// Asks the host's control connection (the master process, on this machine) to do `op`
    /// with `args`, e.g. `forward -R 0:127.0.0.1:8080`; returns what it prints. Reaches the
    /// host only for what the operation itself needs (a new forward's request).
    ///
    /// # Errors
    /// `Command` when no master runs or it refuses; `Timeout` past `timeout`.
    pub async fn control(
        &self,
        op: &str,
        args: &[&str],
        timeout: Duration,
    ) -> PluginResult<String> {
        let mut argv = vec!["ssh".to_string(), "-O".into(), op.into()];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv.extend(self.ssh_argv(false).into_iter().skip(1));
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        exec::run(&args, None, timeout).await
    }

    /// A long-lived `ssh` running `remote`, its stdout piped (the host's event stream).
    ///
    /// # Errors
    /// `Io` when ssh cannot be started.
    pub fn stream<S: AsRef<str>>(&self, remote: &[S]) -> std::io::Result<tokio::process::Child> {
        let argv = self.command(remote, false);
        tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
    }
}

/// Whether a failed call failed to reach the host (ssh exits 255), rather than the remote
/// command failing.
pub fn is_unreachable(e: &crate::plugins::PluginError) -> bool {
    match e {
        crate::plugins::PluginError::Command {
            program, status, ..
        } => program == "ssh" && status.contains("255"),
        crate::plugins::PluginError::Timeout { .. } => true,
        _ => false,
    }
}

/// `dir/rel` as a path on the host.
pub fn remote_path(dir: &Path, rel: &str) -> PathBuf {
    dir.join(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a host's shell makes of [`printf_b_line`] followed by more input, through
    /// [`WRITE_THEN_RUN`] (`cat` takes the rest): every byte back, the rest untouched.
    #[tokio::test]
    async fn a_file_and_the_input_after_it_travel_on_one_stdin() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("d/prompt.md");
        let (d1, d2) = (dir.path().join("d"), dir.path().join("logs"));
        let mut bytes: Vec<u8> = (0u8..=255).collect();
        bytes.extend_from_slice("it's `x`; $HOME %s %b \\c \\0101 \n\n ünï \n".as_bytes());
        for shell in ["sh", "bash"] {
            let mut input = printf_b_line(&bytes);
            input.extend_from_slice(b"the rest\nof it");
            let (f, a, b) = (
                file.to_string_lossy(),
                d1.to_string_lossy(),
                d2.to_string_lossy(),
            );
            let out = crate::plugins::exec::run_with_input(
                &[shell, "-c", WRITE_THEN_RUN, "t", &f, &a, &b, "cat"],
                Some(&input),
                None,
                crate::plugins::exec::QUICK,
            )
            .await
            .expect(shell);
            assert_eq!(out, "the rest\nof it", "{shell}");
            assert_eq!(std::fs::read(&file).expect("file"), bytes, "{shell}");
            assert!(d2.is_dir());
            std::fs::remove_file(&file).expect("rm");
        }
        assert!(printf_b_line(b"a\\b\n").ends_with(b"a\\0134b\\0012\n"));
    }

    #[test]
    fn an_argv_becomes_one_quoted_remote_command() {
        assert_eq!(
            shell_join(&[
                "git",
                "-C",
                "/srv/a b",
                "log",
                "--format=%H",
                "it's; rm -rf ~"
            ]),
            "git -C '/srv/a b' log --format=%H 'it'\\''s; rm -rf ~'"
        );
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
        assert_eq!(shell_quote("a\nb"), "'a\nb'");
        let h = HostSettings {
            ssh: "me@box".into(),
            port: Some(2222),
            workdir: "/srv/f".into(),
            capacity: 1,
            identity_file: None,
            known_hosts: None,
        };
        let t = SshTransport::new("box", &h, Path::new("/tmp/c"));
        let argv = t.command(&["true"], false);
        assert!(argv.contains(&"BatchMode=yes".to_string()));
        assert!(argv.contains(&"Port=2222".to_string()));
        assert!(argv.contains(&"ControlPath=/tmp/c/%C".to_string()));
        assert_eq!(&argv[argv.len() - 3..], ["me@box", "--", "true"]);
    }
}
