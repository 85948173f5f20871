//! Puts one launch in its sandbox: finds the paths the agent needs and must not see (on this
//! machine, or on the agent's ssh host in one call: `plugins::hosts::sandbox::probe`), starts
//! the session's egress proxy (always here, in Flotilla: a refusal is an event on the
//! session; on a host its socket is reverse-forwarded there), and turns the agent's argv into
//! `bwrap … -- flotilla sandbox-exec … -- agent …` (see `crate::sandbox`), the same builder
//! for both.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::actors::fleet::Fleet;
use crate::actors::sandbox_host::{SandboxHost, PROXY_SOCKET};
use crate::config::{Sandbox, SandboxNetwork};
use crate::plugins::hosts::{self, Host};
use crate::plugins::{exec, Agent, PluginError, PluginResult};
use crate::preflight::{resolve, Resolved};
use crate::sandbox::bwrap::{self, Hidden, Layout, INNER_PROXY_PORT};
use crate::sandbox::exec::ExecOptions;

/// Environment variables whose URL an agent must reach: Flotilla itself (hooks, `flotilla
/// report`) and the model APIs' base URLs.
const URL_VARS: &[&str] = &[
    "FLOTILLA_SERVER",
    "ANTHROPIC_BASE_URL",
    "OPENAI_BASE_URL",
    "OPENAI_API_BASE",
];

/// One launch, sandboxed.
pub struct Request<'a> {
    /// The fleet.
    pub fleet: &'a Fleet,
    /// Session id.
    pub session: &'a str,
    /// The sandbox.
    pub sandbox: &'a Sandbox,
    /// The key that turns it on (`projects.<name>.sandbox` / `agents.<name>.sandbox`), named
    /// by errors.
    pub key: &'a str,
    /// The agent plugin (for its state paths).
    pub agent: &'a dyn Agent,
    /// The session's worktree.
    pub workspace: &'a Path,
    /// The prompt file.
    pub prompt_file: &'a Path,
    /// The `flotilla` executable as the agent sees it (on a host: the copy there).
    pub cli: Option<&'a Path>,
    /// The ssh host the agent runs on; `None` for this machine.
    pub host: Option<&'a Arc<Host>>,
}

/// Wraps `argv` in the sandbox and adds the proxy settings to `env`. On a host, `env`'s
/// `FLOTILLA_SERVER` is Flotilla's own address: the sandbox reaches it through the proxy.
///
/// # Errors
/// `Invalid` when bubblewrap (naming the host and the key on a host) or the `flotilla`
/// executable is missing (naming what to install or set), or the allow list is bad;
/// `Io`/`Command` when the proxy, its forward, git or the host fails.
pub async fn wrap(
    r: &Request<'_>,
    argv: Vec<String>,
    env: &mut BTreeMap<String, String>,
) -> PluginResult<Vec<String>> {
    let path_var = env
        .get("PATH")
        .cloned()
        .unwrap_or_else(|| std::env::var("PATH").unwrap_or_default());
    let cli = r.cli.map(Path::to_path_buf).ok_or_else(|| {
        PluginError::Invalid(
            "the sandbox needs the flotilla executable: set server.cli_path".into(),
        )
    })?;
    let (bwrap, layout) = match r.host {
        None => local_layout(r, &cli, &argv, &path_var, env).await?,
        Some(h) => host_layout(r, h, &cli, &argv, &path_var, env).await?,
    };
    let local_run = SandboxHost::run_dir(&r.fleet.home, r.session);

    let (forwards, mut allow) = reachable(env);
    if r.sandbox.network == SandboxNetwork::Proxy {
        allow.extend(r.sandbox.allow_hosts.iter().cloned());
    }
    r.fleet
        .sandbox
        .start_proxy(r.fleet.journal.clone(), &local_run, r.session, &allow)
        .await?;
    if let Some(h) = r.host {
        hosts::sandbox::forward_proxy(
            h,
            r.session,
            &layout.run_dir.join(PROXY_SOCKET),
            &local_run.join(PROXY_SOCKET),
        )
        .await?;
    }
    let limits = &r.sandbox.limits;
    if limits.processes.is_some() && layout.as_root {
        tracing::warn!(
            session = r.session,
            "sandbox.limits.processes is not applied when the agent's user is root (the kernel \
             counts every process of the real user)"
        );
    }
    let opts = ExecOptions {
        proxy: Some(PathBuf::from(bwrap::INNER_RUN).join(PROXY_SOCKET)),
        bridge: (r.sandbox.network == SandboxNetwork::Proxy)
            .then(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), INNER_PROXY_PORT)),
        forward: forwards,
        processes: limits.processes.filter(|_| !layout.as_root),
        memory_mb: limits.memory_mb,
        cpu_seconds: limits.cpu_seconds,
        command: argv,
    };
    let mut inner = vec![cli.to_string_lossy().into_owned(), "sandbox-exec".into()];
    inner.extend(opts.to_args());
    env.extend(bwrap::proxy_env(r.sandbox));
    Ok(bwrap::command(&bwrap, r.sandbox, &layout, &inner))
}

/// `bwrap` and the layout of a sandbox on this machine, `cli` being the `flotilla` executable.
async fn local_layout(
    r: &Request<'_>,
    cli: &Path,
    argv: &[String],
    path_var: &str,
    env: &BTreeMap<String, String>,
) -> PluginResult<(PathBuf, Layout)> {
    let bwrap =
        match resolve("bwrap", path_var) {
            Resolved::Found(p) => p,
            _ => return Err(PluginError::Invalid(
                "the sandbox needs bubblewrap: `bwrap` is not on PATH (Debian: apt-get install \
                 bubblewrap), or set sandbox.enabled: false"
                    .into(),
            )),
        };
    let home = env.get("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
    let mut readable = vec![cli.to_path_buf(), r.prompt_file.to_path_buf()];
    if let Some(program) = argv.first() {
        if let Resolved::Found(p) = resolve(program, path_var) {
            readable.push(install_root(&p));
        }
    }
    // Tools installed under a home (nvm, ~/.local/bin, cargo) stay runnable.
    let homes: Vec<PathBuf> = home.iter().cloned().chain(dirs::home_dir()).collect();
    readable.extend(
        std::env::split_paths(path_var)
            .filter(|d| homes.iter().any(|h| d.starts_with(h)) && d.is_dir()),
    );
    // Flotilla's home, and the home of the user Flotilla runs as when the agent was given
    // another one (its keys are there all the same).
    let mut hidden = vec![Hidden {
        path: r.fleet.home.clone(),
        is_dir: true,
    }];
    if let Some(own) = dirs::home_dir().filter(|h| Some(h) != home.as_ref() && h.is_dir()) {
        hidden.push(Hidden {
            path: own,
            is_dir: true,
        });
    }
    for p in &r.fleet.sandbox.hidden {
        if let Ok(meta) = tokio::fs::metadata(p).await {
            hidden.push(Hidden {
                path: p.clone(),
                is_dir: meta.is_dir(),
            });
        }
    }
    let layout = Layout {
        workspace: r.workspace.to_path_buf(),
        git_dir: git_common_dir(r.workspace).await,
        home,
        hidden,
        writable: r.agent.state_paths(env),
        readable,
        run_dir: SandboxHost::run_dir(&r.fleet.home, r.session),
        as_root: is_root(),
    };
    Ok((bwrap, layout))
}

/// `bwrap` and the layout of a sandbox on `host`, from one look at it: the same rules as
/// [`local_layout`] with the host's paths. Hidden: the host's work directory (other
/// sessions' worktrees, logs, prompts, clones; the session's own worktree, git directory,
/// prompt and Flotilla's executable are bound back), the login user's home when the agent
/// has another, and Flotilla's home, config and database should they exist there too.
async fn host_layout(
    r: &Request<'_>,
    host: &Host,
    cli: &Path,
    argv: &[String],
    path_var: &str,
    env: &BTreeMap<String, String>,
) -> PluginResult<(PathBuf, Layout)> {
    let home = env.get("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
    let own_files: Vec<PathBuf> = std::iter::once(r.fleet.home.clone())
        .chain(r.fleet.sandbox.hidden.iter().cloned())
        .collect();
    let candidates: Vec<PathBuf> = own_files
        .iter()
        .cloned()
        .chain(std::env::split_paths(path_var))
        .collect();
    let program = argv.first().map(String::as_str).unwrap_or_default();
    let run_dir = hosts::sandbox::run_dir(host, r.session);
    let found =
        hosts::sandbox::probe(host, path_var, program, r.workspace, &run_dir, &candidates).await?;
    let bwrap = found
        .bwrap
        .clone()
        .ok_or_else(|| hosts::sandbox::no_bwrap(&host.name, r.key))?;
    let mut hidden = vec![Hidden {
        path: host.settings.workdir.clone(),
        is_dir: true,
    }];
    if let Some(own) = found.home.clone().filter(|h| Some(h) != home.as_ref()) {
        hidden.push(Hidden {
            path: own,
            is_dir: true,
        });
    }
    for p in &own_files {
        if let Some(is_dir) = found.existing.get(p) {
            hidden.push(Hidden {
                path: p.clone(),
                is_dir: *is_dir,
            });
        }
    }
    // The prompt's local path: the remote runtime puts the host's copy in its place.
    let mut readable = vec![cli.to_path_buf(), r.prompt_file.to_path_buf()];
    readable.extend(found.install.clone());
    let homes: Vec<&PathBuf> = home.iter().chain(found.home.iter()).collect();
    readable.extend(std::env::split_paths(path_var).filter(|d| {
        homes.iter().any(|h| d.starts_with(h)) && found.existing.get(d) == Some(&true)
    }));
    let layout = Layout {
        workspace: r.workspace.to_path_buf(),
        git_dir: found.git_dir.clone(),
        home,
        hidden,
        writable: r.agent.state_paths(env),
        readable,
        run_dir,
        as_root: found.root,
    };
    Ok((bwrap, layout))
}

/// An adopted agent's sandbox after a restart of Flotilla: its egress proxy served again
/// (from the allow list its launch saved; nothing when it was not sandboxed) and, on a host
/// (`runtime` is `ssh:<host>`), the proxy's socket there forwarded again.
///
/// # Errors
/// The proxy's or the forward's.
pub async fn readopt(fleet: &Fleet, session: &str, runtime: &str) -> PluginResult<()> {
    let run_dir = SandboxHost::run_dir(&fleet.home, session);
    let sandboxed = fleet
        .sandbox
        .restore_proxy(fleet.journal.clone(), &run_dir, session)
        .await?;
    let host = hosts::host_of(runtime).and_then(|h| fleet.plugins.hosts.get(h));
    match host {
        Some(h) if sandboxed => {
            let remote = hosts::sandbox::run_dir(h, session).join(PROXY_SOCKET);
            hosts::sandbox::forward_proxy(h, session, &remote, &run_dir.join(PROXY_SOCKET)).await
        }
        _ => Ok(()),
    }
}

/// The agent of `rec` is gone: its proxy stops, its run directory goes, and on a host the
/// proxy's forward and the run directory there too.
pub async fn release(fleet: &Fleet, rec: &crate::store::SessionRecord) {
    let id = rec.id.as_str();
    fleet.sandbox.stop(id);
    let host = hosts::host_of(&rec.runtime).and_then(|h| fleet.plugins.hosts.get(h));
    let sandboxed = fleet
        .project(&rec.project)
        .and_then(|p| fleet.sandbox.sandbox_for(p, &rec.agent))
        .is_some();
    if let (Some(h), true) = (host, sandboxed) {
        hosts::sandbox::drop_proxy(h, id).await;
    }
    let run_dir = SandboxHost::run_dir(&fleet.home, id);
    if let Err(e) = tokio::fs::remove_dir_all(&run_dir).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(error = %e, "removing the sandbox run directory failed");
        }
    }
}

/// The loopback addresses to forward into the sandbox and the proxy entries they need, from
/// the URLs in `env`; a non-loopback host is only allowed (reached through the proxy).
fn reachable(env: &BTreeMap<String, String>) -> (Vec<SocketAddr>, Vec<String>) {
    let mut forwards = Vec::new();
    let mut allow = Vec::new();
    for var in URL_VARS {
        let Some((host, port)) = env.get(*var).and_then(|u| host_port(u)) else {
            continue;
        };
        let ip = if host.eq_ignore_ascii_case("localhost") {
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        } else {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()
        };
        match ip {
            Some(ip) if ip.is_loopback() => {
                let addr = SocketAddr::new(ip, port);
                if !forwards.contains(&addr) {
                    forwards.push(addr);
                    allow.push(addr.to_string());
                }
            }
            _ => allow.push(format!("{host}:{port}")),
        }
    }
    (forwards, allow)
}

/// `(host, port)` of an `http(s)://` URL (the scheme's port when none is given).
fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => (h, p.parse().ok()?),
        _ => (authority, default),
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// The directory a CLI is installed in, as far as the sandbox must show it: the
/// `node_modules` that holds an npm CLI, a Python venv, else the program's directory.
fn install_root(program: &Path) -> PathBuf {
    let real = std::fs::canonicalize(program).unwrap_or_else(|_| program.to_path_buf());
    for dir in real.ancestors().skip(1) {
        if dir.file_name().is_some_and(|n| n == "node_modules") || dir.join("pyvenv.cfg").is_file()
        {
            return dir.to_path_buf();
        }
    }
    real.parent().map_or(real.clone(), Path::to_path_buf)
}

/// The repository's git directory a worktree uses (`git rev-parse --git-common-dir`).
async fn git_common_dir(workspace: &Path) -> Option<PathBuf> {
    let out = exec::run(
        &[
            "git",
            "rev-parse",
            "--path-format=absolute",
            "--git-common-dir",
        ],
        Some(workspace),
        exec::QUICK,
    )
    .await
    .ok()?;
    let p = PathBuf::from(out.trim());
    p.is_absolute().then_some(p)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_forwarded_and_others_allowed() {
        let env = BTreeMap::from([
            (
                "FLOTILLA_SERVER".to_string(),
                "http://127.0.0.1:7700".to_string(),
            ),
            (
                "ANTHROPIC_BASE_URL".to_string(),
                "http://localhost:9001/v1".to_string(),
            ),
            (
                "OPENAI_BASE_URL".to_string(),
                "https://llm.example.com/v1".to_string(),
            ),
            ("OTHER".to_string(), "http://10.0.0.1:1".to_string()),
        ]);
        let (forwards, allow) = reachable(&env);
        assert_eq!(
            forwards,
            [
                "127.0.0.1:7700".parse::<SocketAddr>().expect("addr"),
                "127.0.0.1:9001".parse().expect("addr")
            ]
        );
        assert_eq!(
            allow,
            ["127.0.0.1:7700", "127.0.0.1:9001", "llm.example.com:443"]
        );
        assert_eq!(host_port("http://u:p@h:81/x"), Some(("h".into(), 81)));
        assert_eq!(host_port("ftp://h"), None);
    }

    #[test]
    fn an_npm_cli_shows_its_whole_node_modules() {
        let dir = tempfile::tempdir().expect("tmp");
        let pkg = dir.path().join("node_modules/@scope/cli");
        std::fs::create_dir_all(&pkg).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("node_modules/.bin")).expect("mkdir");
        std::fs::write(pkg.join("cli.js"), "").expect("write");
        let bin = dir.path().join("node_modules/.bin/cli");
        std::os::unix::fs::symlink("../@scope/cli/cli.js", &bin).expect("link");
        let root = std::fs::canonicalize(dir.path()).expect("canon");
        assert_eq!(install_root(&bin), root.join("node_modules"));
        let plain = dir.path().join("tool");
        std::fs::write(&plain, "").expect("write");
        assert_eq!(install_root(&plain), root);
    }
}
