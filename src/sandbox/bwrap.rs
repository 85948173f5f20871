//! The `bwrap` command line that puts one agent in its sandbox (pure: the paths are found by
//! the caller). What the agent sees:
//! - the system read-only (`/`), its own `/dev`, `/proc` (a new PID namespace: no other
//!   process is visible, Flotilla's `/proc/<pid>/environ` included) and a private `/tmp`;
//! - its worktree and what git needs of the repository read-write, the repository's hooks
//!   and config read-only (a hook or `core.fsmonitor` written there would run outside);
//! - its own state directories read-write (`~/.claude`, `~/.codex`, …), the rest of the home
//!   an empty tmpfs (`~/.ssh`, cloud credentials, other repositories: gone), Flotilla's home,
//!   config and database hidden, `/run` replaced (no docker or dbus socket);
//! - no network but its loopback: [`INNER_RUN`] holds the egress proxy's socket, which
//!   `flotilla sandbox-exec` bridges to loopback ports inside.

use std::path::{Path, PathBuf};

use crate::config::{Sandbox, SandboxNetwork};

/// Where the host's per-session run directory (the proxy socket) appears inside.
pub const INNER_RUN: &str = "/run/flotilla";
/// The proxy's socket inside the sandbox.
pub const INNER_PROXY_SOCKET: &str = "/run/flotilla/proxy.sock";
/// The loopback port inside where `HTTP(S)_PROXY` points.
pub const INNER_PROXY_PORT: u16 = 3128;
/// The user id agents run as inside when Flotilla runs as root: Claude Code refuses its
/// permissionless mode as root, and nothing inside needs to be root.
pub const INNER_UID: u32 = 1000;

/// A path hidden inside the sandbox: a directory becomes an empty tmpfs, a file `/dev/null`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hidden {
    /// The path.
    pub path: PathBuf,
    /// Whether it is a directory.
    pub is_dir: bool,
}

/// The host paths one sandbox is made of.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Layout {
    /// The session's worktree (read-write; the working directory).
    pub workspace: PathBuf,
    /// The repository's git directory (read-write: objects, refs, this worktree's index).
    pub git_dir: Option<PathBuf>,
    /// The agent's home: an empty tmpfs inside but for `writable`/`readable` paths under it.
    pub home: Option<PathBuf>,
    /// Hidden outright (Flotilla's home, config and database).
    pub hidden: Vec<Hidden>,
    /// Agent state, read-write when it exists.
    pub writable: Vec<PathBuf>,
    /// Programs and files the agent needs, read-only when they exist (the CLI's install
    /// directory, `flotilla` for hooks, the prompt file).
    pub readable: Vec<PathBuf>,
    /// The session's run directory on the host, mounted at [`INNER_RUN`].
    pub run_dir: PathBuf,
    /// Flotilla runs as root: map the agent to [`INNER_UID`].
    pub as_root: bool,
}

fn push(argv: &mut Vec<String>, flag: &str, paths: &[&Path]) {
    argv.push(flag.to_string());
    for p in paths {
        argv.push(p.to_string_lossy().into_owned());
    }
}

/// `bwrap` (the program `bwrap`) and its arguments, then `--` and `inner`.
pub fn command(bwrap: &Path, sandbox: &Sandbox, layout: &Layout, inner: &[String]) -> Vec<String> {
    let mut a: Vec<String> = vec![bwrap.to_string_lossy().into_owned()];
    for flag in [
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        // The proxy is reached through a socket: even `proxy` mode has no network namespace
        // of the host's.
        "--unshare-net",
    ] {
        a.push(flag.into());
    }
    if layout.as_root {
        a.extend([
            "--unshare-user".into(),
            "--uid".into(),
            INNER_UID.to_string(),
        ]);
        a.extend(["--gid".into(), INNER_UID.to_string()]);
    }
    push(&mut a, "--ro-bind", &[Path::new("/"), Path::new("/")]);
    push(&mut a, "--dev", &[Path::new("/dev")]);
    push(&mut a, "--proc", &[Path::new("/proc")]);
    push(&mut a, "--tmpfs", &[Path::new("/tmp")]);
    push(&mut a, "--tmpfs", &[Path::new("/var/tmp")]);
    push(&mut a, "--tmpfs", &[Path::new("/run")]);
    // Hidden before anything is bound back in (a worktree under Flotilla's home reappears),
    // outer paths first so an inner one is not buried again by its parent's tmpfs.
    let mut hidden: Vec<Hidden> = layout
        .home
        .iter()
        .map(|h| Hidden {
            path: h.clone(),
            is_dir: true,
        })
        .chain(layout.hidden.iter().cloned())
        .collect();
    hidden.sort_by(|x, y| {
        (x.path.components().count(), &x.path).cmp(&(y.path.components().count(), &y.path))
    });
    hidden.dedup_by(|a, b| a.path == b.path);
    for h in &hidden {
        if h.is_dir {
            push(&mut a, "--tmpfs", &[&h.path]);
        } else {
            push(&mut a, "--ro-bind", &[Path::new("/dev/null"), &h.path]);
        }
    }
    for p in &layout.readable {
        push(&mut a, "--ro-bind-try", &[p, p]);
    }
    if let Some(git) = &layout.git_dir {
        push(&mut a, "--bind", &[git, git]);
        for ro in ["hooks", "config"] {
            let p = git.join(ro);
            push(&mut a, "--ro-bind-try", &[&p, &p]);
        }
    }
    for p in &layout.writable {
        push(&mut a, "--bind-try", &[p, p]);
    }
    push(&mut a, "--bind", &[&layout.workspace, &layout.workspace]);
    for m in &sandbox.mounts {
        let flag = if m.writable { "--bind" } else { "--ro-bind" };
        push(&mut a, flag, &[&m.path, &m.path]);
    }
    push(&mut a, "--bind", &[&layout.run_dir, Path::new(INNER_RUN)]);
    push(&mut a, "--chdir", &[&layout.workspace]);
    a.push("--".into());
    a.extend(inner.iter().cloned());
    a
}

/// The proxy environment of an agent whose sandbox allows the network through the proxy
/// (`None` mode gets none: there is nothing to reach).
pub fn proxy_env(sandbox: &Sandbox) -> Vec<(String, String)> {
    if sandbox.network != SandboxNetwork::Proxy {
        return Vec::new();
    }
    let url = format!("http://127.0.0.1:{INNER_PROXY_PORT}");
    let mut env = Vec::new();
    for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        env.push((k.to_string(), url.clone()));
    }
    // Loopback services (Flotilla, a local model server) are forwarded to the same port.
    for k in ["NO_PROXY", "no_proxy"] {
        env.push((k.to_string(), "localhost,127.0.0.1,::1".to_string()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PermissionMode, SandboxLimits, SandboxMount};

    fn sandbox() -> Sandbox {
        Sandbox {
            network: SandboxNetwork::Proxy,
            allow_hosts: vec![],
            mounts: vec![SandboxMount {
                path: "/srv/cache".into(),
                writable: false,
            }],
            permission_mode: PermissionMode::Permissionless,
            limits: SandboxLimits::default(),
        }
    }

    fn pos(argv: &[String], window: &[&str]) -> usize {
        argv.windows(window.len())
            .position(|w| w.iter().zip(window).all(|(a, b)| a == b))
            .unwrap_or_else(|| panic!("{window:?} not in {argv:?}"))
    }

    #[test]
    fn hides_first_then_binds_back_and_ends_with_the_agent() {
        let layout = Layout {
            workspace: "/home/u/.flotilla/worktrees/p/p-1".into(),
            git_dir: Some("/home/u/code/p/.git".into()),
            home: Some("/home/u".into()),
            hidden: vec![
                Hidden {
                    path: "/home/u/.flotilla".into(),
                    is_dir: true,
                },
                Hidden {
                    path: "/etc/flotilla.yaml".into(),
                    is_dir: false,
                },
            ],
            writable: vec!["/home/u/.claude".into()],
            readable: vec!["/opt/claude".into()],
            run_dir: "/home/u/.flotilla/run/p-1".into(),
            as_root: true,
        };
        let argv = command(
            Path::new("/usr/bin/bwrap"),
            &sandbox(),
            &layout,
            &["claude".into(), "--x".into()],
        );
        assert_eq!(argv[0], "/usr/bin/bwrap");
        assert_eq!(&argv[argv.len() - 3..], ["--", "claude", "--x"]);
        let home = pos(&argv, &["--tmpfs", "/home/u"]);
        let fl = pos(&argv, &["--tmpfs", "/home/u/.flotilla"]);
        let ws = pos(
            &argv,
            &[
                "--bind",
                "/home/u/.flotilla/worktrees/p/p-1",
                "/home/u/.flotilla/worktrees/p/p-1",
            ],
        );
        let git = pos(&argv, &["--bind", "/home/u/code/p/.git"]);
        let hooks = pos(&argv, &["--ro-bind-try", "/home/u/code/p/.git/hooks"]);
        assert!(
            home < fl && fl < ws && home < git && git < hooks,
            "{argv:?}"
        );
        pos(&argv, &["--ro-bind", "/dev/null", "/etc/flotilla.yaml"]);
        pos(&argv, &["--bind-try", "/home/u/.claude", "/home/u/.claude"]);
        pos(&argv, &["--ro-bind", "/srv/cache", "/srv/cache"]);
        pos(&argv, &["--bind", "/home/u/.flotilla/run/p-1", INNER_RUN]);
        pos(&argv, &["--unshare-user", "--uid", "1000", "--gid", "1000"]);
        pos(&argv, &["--unshare-pid"]);
        pos(&argv, &["--unshare-net"]);
        // The run directory is bound after Flotilla's home is hidden.
        assert!(fl < pos(&argv, &["--bind", "/home/u/.flotilla/run/p-1"]));
    }

    #[test]
    fn a_non_root_user_keeps_its_uid_and_none_mode_gets_no_proxy_env() {
        let argv = command(
            Path::new("bwrap"),
            &sandbox(),
            &Layout {
                workspace: "/w".into(),
                run_dir: "/r".into(),
                ..Default::default()
            },
            &["a".into()],
        );
        assert!(!argv.iter().any(|a| a == "--uid"), "{argv:?}");
        assert!(proxy_env(&sandbox())
            .iter()
            .any(|(k, v)| k == "HTTPS_PROXY" && v == "http://127.0.0.1:3128"));
        let none = Sandbox {
            network: SandboxNetwork::None,
            ..sandbox()
        };
        assert!(proxy_env(&none).is_empty());
    }
}
