//! What a launch on a host needs beyond its worktree and its tmux session:
//!
//! - **Flotilla's executable on the host** ([`install_cli`]): the agents' hooks and their
//!   `flotilla report` run there. The running `flotilla` binary is copied once per host to
//!   `workdir/bin/<sha256 prefix>/flotilla` (a new build gets a new directory; the host is
//!   assumed to be the same OS and architecture), and that directory is put first on the
//!   agent's `PATH`.
//! - **Flotilla's API from the host** ([`server_url`]): a reverse TCP forward on the host's
//!   control connection (`ssh -O forward -R 127.0.0.1:PORT:<local address>`), bound to the
//!   host's IPv4 loopback, which agents dial. Its port is chosen once per host (a hash of
//!   the host's name and Flotilla's port, the next one when taken) and asked for again by its
//!   number after every reconnection ([`restore_forward`]), so agents started earlier keep a
//!   working `FLOTILLA_SERVER`. The report token travels in the agent's environment (tmux
//!   gets it on stdin), never on a command line.
//! - **The project's workspace `setup`** ([`setup`]) in the new worktree on the host: `copy`
//!   uploads the repository's (ignored) files, `symlinks` point into the host's clone of the
//!   repository (both in one call, the files' bytes on its stdin), `post_create` commands run
//!   in the worktree (each an argv, quoted word by word, a call of its own with its timeout).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ssh::SshTransport;
use super::state::Host;
use crate::config::WorkspaceSetup;
use crate::plugins::{exec, PluginError, PluginResult};

/// Timeout of copying Flotilla's executable to a host.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Timeout of the small calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Ports tried for the reverse forward before giving up.
const FORWARD_TRIES: u16 = 8;

/// `$0` the executable's final path, `$1` its directory; the bytes on stdin.
const WRITE_EXE: &str = "umask 022 && mkdir -p -- \"$1\" && cat > \"$0.flotilla-tmp\" && chmod 755 \"$0.flotilla-tmp\" && mv -f -- \"$0.flotilla-tmp\" \"$0\"";
/// `$0` a file's path, `$1` its directory; the bytes on stdin.
const WRITE_FILE: &str = "mkdir -p -- \"$1\" && cat > \"$0\"";
/// The copies and links of a workspace `setup` in one call: `$1` the number N of files, then
/// N pairs (a file's path, its directory), each file's bytes one line of stdin as
/// [`super::ssh::printf_b_line`] encodes them; then triples (a link's target, the link, its
/// directory), each link made unless something is there.
const COPY_AND_LINK: &str = r#"n=$1; shift
while [ "$n" -gt 0 ]; do
  { IFS= read -r b && mkdir -p -- "$2" && printf '%b' "$b" > "$1"; } || exit 1
  shift 2; n=$((n - 1))
done
while [ $# -ge 3 ]; do
  [ -e "$2" ] || [ -L "$2" ] || { mkdir -p -- "$3" && ln -s -- "$1" "$2"; } || exit 1
  shift 3
done"#;
/// Files larger than this are copied by a call of their own (`cat`, not one line the host's
/// shell reads byte by byte).
const INLINE_COPY_MAX: usize = 256 * 1024;
/// `$0` the directory, `$@` the command.
const RUN_IN: &str = "cd -- \"$0\" && exec \"$@\"";

/// The reverse forward of one host: where it leads and the port it has on the host.
#[derive(Debug, Default)]
pub struct Forward {
    /// `address:port` of Flotilla's API on this machine.
    target: Option<String>,
    /// The port on the host's loopback, once one was bound.
    port: Option<u16>,
}

/// The path of Flotilla's executable `local` on `host`, copied there when missing.
///
/// # Errors
/// When the executable cannot be read or the host cannot take it.
pub async fn install_cli(host: &Host, local: &Path) -> PluginResult<PathBuf> {
    let mut installed = host.cli.lock().await;
    if let Some(p) = installed.as_ref() {
        return Ok(p.clone());
    }
    let digest = digest(local).await?;
    let dir = host.bin_dir().join(digest);
    let exe = dir.join("flotilla");
    let (e, d) = (exe.to_string_lossy(), dir.to_string_lossy());
    if host
        .ssh
        .run(&["test", "-x", &e], None, CALL_TIMEOUT)
        .await
        .is_err()
    {
        let bytes = tokio::fs::read(local).await?;
        host.ssh
            .run(
                &["sh", "-c", WRITE_EXE, &e, &d],
                Some(&bytes),
                UPLOAD_TIMEOUT,
            )
            .await?;
        tracing::info!(host = %host.name, path = %exe.display(), "flotilla installed on the host");
    }
    *installed = Some(exe.clone());
    Ok(exe)
}

/// The first 16 hex digits of the SHA-256 of Flotilla's executable `local` (one per process:
/// the executable does not change under a running Flotilla), by coreutils' `sha256sum`.
async fn digest(local: &Path) -> PluginResult<String> {
    static DIGEST: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DIGEST
        .get_or_try_init(|| async {
            let p = local.to_string_lossy();
            let out = exec::run(&["sha256sum", "--", &p], None, UPLOAD_TIMEOUT).await?;
            out.split_whitespace()
                .next()
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(|h| h[..16].to_string())
                .ok_or_else(|| {
                    PluginError::Invalid(format!("sha256sum of {}: {out}", local.display()))
                })
        })
        .await
        .cloned()
}

/// `scheme://address:port` → (`scheme`, `address:port`).
fn split_url(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    (!authority.is_empty() && authority.contains(':')).then_some((scheme, authority))
}

/// The port tried first for `host`'s forward to `target`: stable for the pair, in 20000–59999.
pub fn first_port(host: &str, target: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in host.bytes().chain([0]).chain(target.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    20_000 + u16::try_from(h % 40_000).unwrap_or(0)
}

/// Asks for the forward of the host's `127.0.0.1:port` to `target`. The address is explicit
/// because sshd, given none, binds every loopback family it can and reports success when
/// one of them binds: with another program on `127.0.0.1:port`, the forward would listen on
/// `[::1]` alone, and the agents' `http://127.0.0.1:port` would reach that program instead.
async fn request(ssh: &SshTransport, port: u16, target: &str) -> PluginResult<()> {
    let spec = format!("127.0.0.1:{port}:{target}");
    ssh.control("forward", &["-R", &spec], CALL_TIMEOUT)
        .await
        .map(drop)
}

/// Flotilla's API URL (`local_url`, how this machine reaches it) as the agents on `host`
/// reach it: through the host's reverse forward, made when missing. Asking again on the same
/// connection costs no round trip to the host (the master answers that it has it).
///
/// # Errors
/// `Invalid` for a URL without a port; the transport's error when no port can be bound.
pub async fn server_url(host: &Host, local_url: &str) -> PluginResult<String> {
    let (scheme, target) = split_url(local_url)
        .ok_or_else(|| PluginError::Invalid(format!("server URL {local_url} has no port")))?;
    let mut fwd = host.forward.lock().await;
    if fwd.target.as_deref() != Some(target) {
        *fwd = Forward {
            target: Some(target.to_string()),
            port: None,
        };
    }
    // The port it had first (the same connection answers at once; a new one binds it
    // again), then the candidates, should another program have taken it meanwhile.
    let first = first_port(&host.name, target);
    let ports: Vec<u16> = fwd
        .port
        .into_iter()
        .chain((0..FORWARD_TRIES).map(|i| 20_000 + (first - 20_000 + i * 997) % 40_000))
        .collect();
    let mut last = None;
    for p in ports {
        match request(&host.ssh, p, target).await {
            Ok(()) => {
                fwd.port = Some(p);
                return Ok(format!("{scheme}://127.0.0.1:{p}"));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| PluginError::Invalid("no port for the reverse forward".into())))
}

/// Asks a (re)connected host's control connection for the forward it had, by its port, so
/// the agents already running there reach Flotilla again. Nothing when none was made yet.
pub async fn restore_forward(host: &Host) {
    let fwd = host.forward.lock().await;
    if let (Some(target), Some(port)) = (fwd.target.as_deref(), fwd.port) {
        if let Err(e) = request(&host.ssh, port, target).await {
            tracing::warn!(host = %host.name, port, error = %e, "restoring the reverse forward to Flotilla failed; hooks of running agents cannot report");
        }
    }
}

/// Runs the project's workspace `setup` in the new worktree `ws` on `host`: `copy` from the
/// local repository `repo`, `symlinks` into the host's clone `clone`, `post_create` in `ws`.
///
/// # Errors
/// `Io` for a local file that cannot be read; the transport's error (naming the step for
/// `post_create`) otherwise.
pub async fn setup(
    host: &Host,
    repo: &Path,
    clone: &Path,
    ws: &Path,
    setup: &WorkspaceSetup,
) -> PluginResult<()> {
    let words = |p: &Path| {
        let parent = p
            .parent()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into());
        (p.to_string_lossy().into_owned(), parent)
    };
    // The copies (all but large files) and the links in one call.
    let mut inline: Vec<String> = Vec::new();
    let mut input: Vec<u8> = Vec::new();
    for rel in &setup.copy {
        let bytes = match tokio::fs::read(repo.join(rel)).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %rel.display(), "setup.copy: not in the repository; skipped");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let (to, dir) = words(&ws.join(rel));
        if bytes.len() > INLINE_COPY_MAX {
            host.ssh
                .run(
                    &["sh", "-c", WRITE_FILE, &to, &dir],
                    Some(&bytes),
                    UPLOAD_TIMEOUT,
                )
                .await?;
            continue;
        }
        input.extend(super::ssh::printf_b_line(&bytes));
        inline.extend([to, dir]);
    }
    if !inline.is_empty() || !setup.symlinks.is_empty() {
        let mut argv: Vec<String> = ["sh", "-c", COPY_AND_LINK, "flotilla-setup"]
            .iter()
            .map(|w| w.to_string())
            .collect();
        argv.push((inline.len() / 2).to_string());
        argv.append(&mut inline);
        for rel in &setup.symlinks {
            let from = clone.join(rel).to_string_lossy().into_owned();
            let (to, dir) = words(&ws.join(rel));
            argv.extend([from, to, dir]);
        }
        host.ssh.run(&argv, Some(&input), UPLOAD_TIMEOUT).await?;
    }
    let dir = ws.to_string_lossy();
    for (i, argv) in setup.post_create.iter().enumerate() {
        let mut remote: Vec<&str> = vec!["sh", "-c", RUN_IN, &dir];
        remote.extend(argv.iter().map(String::as_str));
        host.ssh
            .run(&remote, None, setup.post_create_timeout.get())
            .await
            .map_err(|e| {
                PluginError::Invalid(format!(
                    "setup.post_create[{i}] ({}) failed on host {}: {e}",
                    argv.join(" "),
                    host.name
                ))
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copy-and-link script as a host's shell runs it: every file's bytes in place, its
    /// directory made, a link made where nothing is and left alone where something is.
    #[tokio::test]
    async fn copies_and_links_are_made_in_one_call() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        std::fs::write(d.join("taken"), "mine").expect("write");
        let files: [(&str, &[u8]); 2] =
            [("a/b/one.env", b"K=it's $x\n"), ("two", &[0, 255, 92, 10])];
        let mut input = Vec::new();
        let mut argv: Vec<String> = ["sh", "-c", COPY_AND_LINK, "t", "2"]
            .iter()
            .map(|w| w.to_string())
            .collect();
        for (rel, bytes) in files {
            let p = d.join(rel);
            argv.push(p.to_string_lossy().into_owned());
            argv.push(p.parent().expect("dir").to_string_lossy().into_owned());
            input.extend(crate::plugins::hosts::ssh::printf_b_line(bytes));
        }
        for link in ["l/new", "taken"] {
            let p = d.join(link);
            argv.push("/target".into());
            argv.push(p.to_string_lossy().into_owned());
            argv.push(p.parent().expect("dir").to_string_lossy().into_owned());
        }
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        exec::run_with_input(&args, Some(&input), None, exec::QUICK)
            .await
            .expect("script");
        for (rel, bytes) in files {
            assert_eq!(std::fs::read(d.join(rel)).expect(rel), bytes);
        }
        assert_eq!(
            std::fs::read_link(d.join("l/new")).expect("link"),
            Path::new("/target")
        );
        assert_eq!(
            std::fs::read_to_string(d.join("taken")).expect("kept"),
            "mine"
        );
    }

    #[test]
    fn the_server_url_splits_and_the_forward_port_is_stable_and_in_range() {
        assert_eq!(
            split_url("http://127.0.0.1:8080"),
            Some(("http", "127.0.0.1:8080"))
        );
        assert_eq!(split_url("https://[::1]:9/x"), Some(("https", "[::1]:9")));
        assert_eq!(split_url("http://box"), None);
        let p = first_port("a", "127.0.0.1:8080");
        assert_eq!(p, first_port("a", "127.0.0.1:8080"));
        assert!((20_000..60_000).contains(&p));
        assert_ne!(p, first_port("b", "127.0.0.1:8080"));
    }
}
