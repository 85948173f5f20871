//! What an agent sandbox on a host needs from the host (the bubblewrap command itself is
//! built by `crate::sandbox::bwrap`, as for a local agent, from the paths found here):
//!
//! - **A look at the host** ([`probe`]): in one ssh call, where `bwrap` is, the login user's
//!   home and uid, the worktree's git directory, the agent program's install directory, and
//!   which of the paths to hide or show exist there; the same call makes the session's run
//!   directory (private), where the proxy's socket goes.
//! - **The egress proxy's socket on the host** ([`forward_proxy`]): the proxy stays in
//!   Flotilla (a refusal is an event on the session); its Unix socket is made reachable at
//!   `workdir/run/<session>/proxy.sock` on the host by a Unix-socket reverse forward on the
//!   host's control connection (`ssh -O forward -R <host socket>:<local socket>`), which the
//!   sandbox mounts at `/run/flotilla` like a local one. It is asked for again after every
//!   reconnection ([`restore_forwards`], from the monitor, as the API's TCP forward is), and
//!   cancelled when the agent is gone ([`drop_proxy`]). No secret is on any command line:
//!   only paths.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::state::Host;
use crate::plugins::{PluginError, PluginResult};

/// Timeout of the calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// `$0` the agent's `PATH`, `$1` its program, `$2` its worktree, `$3` the session's run
/// directory (made, mode 0700, when `bwrap` is there), then paths to look for. Prints `key=value` lines (see
/// [`Probe::parse`]). The install directory is found as
/// `session::sandboxed::install_root` finds it locally: the `node_modules` or Python venv that
/// holds the program, else its directory.
const PROBE: &str = r#"PATH="$0:$PATH"
if b=$(command -v bwrap); then
  echo "bwrap=$b"
  mkdir -p -m 700 -- "$3" || exit 1
fi
[ -d "$HOME" ] && echo "home=$HOME"
echo "uid=$(id -u)"
g=$(git -C "$2" rev-parse --path-format=absolute --git-common-dir 2>/dev/null) && echo "git=$g"
if x=$(command -v "$1") && x=$(readlink -f "$x"); then
  d=$(dirname "$x"); r=$d
  while [ "$d" != / ]; do
    case $d in */node_modules) r=$d; break;; esac
    if [ -f "$d/pyvenv.cfg" ]; then r=$d; break; fi
    d=$(dirname "$d")
  done
  echo "install=$r"
fi
shift 4
for p; do if [ -d "$p" ]; then echo "dir=$p"; elif [ -e "$p" ]; then echo "file=$p"; fi; done
"#;

/// `$0` the socket, `$1` its directory (private): the directory made, a stale socket of an
/// earlier connection removed.
const CLEAR_SOCKET: &str =
    "umask 077 && mkdir -p -- \"$1\" && chmod 700 -- \"$1\" && rm -f -- \"$0\"";

/// What [`probe`] found on the host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Probe {
    /// `bwrap`'s path, when installed.
    pub bwrap: Option<PathBuf>,
    /// The login user's home directory.
    pub home: Option<PathBuf>,
    /// Whether the login user is root.
    pub root: bool,
    /// The worktree's repository git directory.
    pub git_dir: Option<PathBuf>,
    /// The directory the agent program is installed in.
    pub install: Option<PathBuf>,
    /// The asked-for paths that exist, with whether each is a directory.
    pub existing: BTreeMap<PathBuf, bool>,
}

impl Probe {
    /// Reads the probe script's output.
    pub fn parse(out: &str) -> Probe {
        let mut p = Probe::default();
        for line in out.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let path = || Some(PathBuf::from(v)).filter(|p| p.is_absolute());
            match k {
                "bwrap" => p.bwrap = path(),
                "home" => p.home = path(),
                "uid" => p.root = v.trim() == "0",
                "git" => p.git_dir = path(),
                "install" => p.install = path(),
                "dir" | "file" => {
                    if let Some(x) = path() {
                        p.existing.insert(x, k == "dir");
                    }
                }
                _ => {}
            }
        }
        p
    }
}

/// Looks at `host` for a sandboxed launch of `program` (on `path_var`, the agent's `PATH`,
/// before the login's) in `workspace`; `candidates` are reported when they exist. Makes
/// `run_dir` there on the way (see [`forward_proxy`]).
///
/// # Errors
/// The transport's.
pub async fn probe(
    host: &Host,
    path_var: &str,
    program: &str,
    workspace: &Path,
    run_dir: &Path,
    candidates: &[PathBuf],
) -> PluginResult<Probe> {
    let (ws, run) = (workspace.to_string_lossy(), run_dir.to_string_lossy());
    let mut argv: Vec<String> = ["sh", "-c", PROBE, path_var, program, &ws, &run]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.extend(candidates.iter().map(|c| c.to_string_lossy().into_owned()));
    let out = host.ssh.run(&argv, None, CALL_TIMEOUT).await?;
    Ok(Probe::parse(&out))
}

/// Whether `bwrap` is on the login `PATH` of `host` (the spawn's early check; the launch
/// looks again). A yes is remembered for the host; a no is asked again next time.
///
/// # Errors
/// The transport's when the host does not answer.
pub async fn has_bwrap(host: &Host) -> PluginResult<bool> {
    use std::sync::atomic::Ordering;
    if host.bwrap_seen.load(Ordering::Relaxed) {
        return Ok(true);
    }
    let out = host
        .ssh
        .run(
            &["sh", "-c", "command -v bwrap || true"],
            None,
            CALL_TIMEOUT,
        )
        .await?;
    let found = out.lines().any(|l| l.trim_start().starts_with('/'));
    host.bwrap_seen.store(found, Ordering::Relaxed);
    Ok(found)
}

/// The error of a sandboxed launch on a host without bubblewrap: it names the host and the
/// key that turns the sandbox on; the agent is never started unsandboxed.
pub fn no_bwrap(host: &str, key: &str) -> PluginError {
    PluginError::Invalid(format!(
        "{key}: the sandbox needs bubblewrap on host {host}, and `bwrap` is not on its PATH \
         (Debian: apt-get install bubblewrap), or set sandbox.enabled: false"
    ))
}

/// The run directory of `session`'s sandbox on `host` (the proxy socket's directory).
pub fn run_dir(host: &Host, session: &str) -> PathBuf {
    host.settings.workdir.join("run").join(session)
}

/// The reverse forwards of sandbox proxies on one host, by session: the socket on the host
/// and the local one it leads to.
#[derive(Debug, Default)]
pub struct ProxyForwards(BTreeMap<String, (PathBuf, PathBuf)>);

async fn request(host: &Host, remote: &Path, local: &Path) -> PluginResult<()> {
    let spec = format!("{}:{}", remote.display(), local.display());
    host.ssh
        .control("forward", &["-R", &spec], CALL_TIMEOUT)
        .await
        .map(drop)
}

/// Asks the host's control connection for the forward; when the host refuses (a socket left
/// by an earlier connection, or no directory yet), clears the place and asks once more. A
/// forward the connection already has is answered at once and its socket left alone.
async fn establish(host: &Host, remote: &Path, local: &Path) -> PluginResult<()> {
    if request(host, remote, local).await.is_ok() {
        return Ok(());
    }
    let dir = remote
        .parent()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into());
    let sock = remote.to_string_lossy();
    host.ssh
        .run(&["sh", "-c", CLEAR_SOCKET, &sock, &dir], None, CALL_TIMEOUT)
        .await?;
    request(host, remote, local).await
}

/// Makes `session`'s proxy socket `local` reachable at `remote` on `host`, and remembers it
/// for reconnections. The socket's directory is the probe's (a new session's) or made when
/// the host refuses the forward for want of it (an adopted session's, see [`establish`]).
///
/// # Errors
/// The transport's when the host cannot take the forward.
pub async fn forward_proxy(
    host: &Host,
    session: &str,
    remote: &Path,
    local: &Path,
) -> PluginResult<()> {
    let mut fwd = host.proxy_forwards.lock().await;
    establish(host, remote, local).await?;
    fwd.0.insert(
        session.to_string(),
        (remote.to_path_buf(), local.to_path_buf()),
    );
    Ok(())
}

/// Asks a (re)connected host's control connection for every proxy forward it had, so the
/// sandboxed agents running there reach their proxies again (a no-op on the same connection).
pub async fn restore_forwards(host: &Host) {
    let fwd = host.proxy_forwards.lock().await;
    for (session, (remote, local)) in &fwd.0 {
        if let Err(e) = establish(host, remote, local).await {
            tracing::warn!(host = %host.name, session = %session, error = %e, "restoring a sandbox proxy's forward failed; the agent's network is cut until it is back");
        }
    }
}

/// Cancels `session`'s proxy forward on `host` and removes its run directory there (its
/// agent is gone). Nothing when it had none.
pub async fn drop_proxy(host: &Host, session: &str) {
    let remote = run_dir(host, session);
    let known = host.proxy_forwards.lock().await.0.remove(session);
    if let Some((sock, local)) = known {
        let spec = format!("{}:{}", sock.display(), local.display());
        if let Err(e) = host
            .ssh
            .control("cancel", &["-R", &spec], CALL_TIMEOUT)
            .await
        {
            tracing::debug!(host = %host.name, session = %session, error = %e, "cancelling a sandbox proxy's forward");
        }
    }
    let dir = remote.to_string_lossy();
    if let Err(e) = host
        .ssh
        .run(&["rm", "-rf", "--", &dir], None, CALL_TIMEOUT)
        .await
    {
        tracing::warn!(host = %host.name, session = %session, error = %e, "removing the sandbox run directory on the host failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_output_is_read_line_by_line() {
        let p = Probe::parse(
            "bwrap=/usr/bin/bwrap\nhome=/home/u\nuid=0\ngit=relative\n\
             install=/opt/node_modules\ndir=/home/u/.local/bin\nfile=/etc/flotilla.yaml\n\
             noise\n",
        );
        assert_eq!(p.bwrap.as_deref(), Some(Path::new("/usr/bin/bwrap")));
        assert_eq!(p.home.as_deref(), Some(Path::new("/home/u")));
        assert!(p.root);
        assert_eq!(p.git_dir, None, "a relative path is not taken");
        assert_eq!(p.install.as_deref(), Some(Path::new("/opt/node_modules")));
        assert_eq!(p.existing.get(Path::new("/home/u/.local/bin")), Some(&true));
        assert_eq!(
            p.existing.get(Path::new("/etc/flotilla.yaml")),
            Some(&false)
        );
        let none = Probe::parse("uid=1000\n");
        assert_eq!(none.bwrap, None);
        assert!(!none.root);
        let e = no_bwrap("a", "projects.demo.sandbox").to_string();
        assert!(
            e.contains("projects.demo.sandbox") && e.contains("host a") && e.contains("bwrap"),
            "{e}"
        );
    }
}
