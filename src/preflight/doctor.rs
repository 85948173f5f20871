//! `flotilla doctor`: every check of the machine against the config, one [`Check`] each.
//!
//! Reads the config and the machine only; needs no running server and changes nothing (the
//! database check writes and removes one probe file in the SQLite directory). Each
//! subprocess (`git --version`, `<agent cli> --version`, …) is an argument vector with
//! [`Doctor::timeout`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use super::{
    claude_onboarding, credentials, install_command, resolve, AgentLaunch, Check, HostEnv,
    Onboarding, Resolved, Status,
};
use crate::config::{AgentKind, RuntimeKind, Settings};
use crate::domain::policy::BASE_ENV;

/// How long one `--version` (or a database connection) may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the checks run against.
#[derive(Debug, Clone)]
pub struct Doctor {
    /// Flotilla's environment (`PATH` for git/tmux/bwrap; what agents inherit).
    pub host: HostEnv,
    /// `$FLOTILLA_HOME` (where the default SQLite file lives).
    pub data_dir: PathBuf,
    /// Timeout of each subprocess and of the database connection.
    pub timeout: Duration,
}

impl Doctor {
    /// Checks for this process's environment and data directory.
    pub fn current() -> Doctor {
        Doctor {
            host: HostEnv::current(),
            data_dir: crate::config::data_dir(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Runs every check, in a stable order: tools, database, agents, sandbox.
    pub async fn run(&self, settings: &Settings) -> Vec<Check> {
        let mut checks = vec![
            self.tool("git", &["--version"], &[], "apt install git")
                .await,
        ];
        let tmux_projects: Vec<String> = settings
            .projects
            .iter()
            .filter(|(_, p)| p.runtime(&settings.defaults) == RuntimeKind::Tmux)
            .map(|(n, _)| n.clone())
            .collect();
        checks.push(if tmux_projects.is_empty() {
            Check::ok("tmux", "not needed: no project uses the tmux runtime")
        } else {
            self.tool("tmux", &["-V"], &tmux_projects, "apt install tmux")
                .await
        });
        checks.push(self.database(settings).await);
        if let Some(cli) = settings
            .server
            .cli_path
            .as_deref()
            .filter(|c| !c.is_empty())
        {
            let projects: Vec<String> = settings.projects.keys().cloned().collect();
            checks.push(self.hooks(cli, &projects).await);
        }
        for (name, used_by) in agents_to_check(settings) {
            let Some(spec) = settings.agent(&name) else {
                continue; // `validate` already refused the config
            };
            let a = AgentLaunch::from_settings(&name, &spec.settings);
            let repos: Vec<PathBuf> = used_by
                .iter()
                .filter_map(|p| settings.project(p).map(|p| p.repo.clone()))
                .collect();
            for mut c in self.agent(&a, &repos).await {
                if c.status == Status::Fail && used_by.is_empty() {
                    c.status = Status::Warn;
                    c.detail.push_str(" (no project uses this agent)");
                }
                checks.push(c);
            }
        }
        let sandboxed = |p: &crate::config::ProjectSettings| {
            let agent = p.agent(&settings.defaults);
            let own = settings
                .agents
                .get(agent)
                .map(|a| a.sandbox.clone())
                .unwrap_or_default();
            p.sandbox.overlay(&own).resolve().is_some()
        };
        // bubblewrap here for the sandboxed projects that run here; on its host for the others.
        let local: Vec<String> = settings
            .projects
            .iter()
            .filter(|(_, p)| p.host.is_none() && sandboxed(p))
            .map(|(n, _)| n.clone())
            .collect();
        checks.push(self.sandbox(&local).await);
        for (name, host) in &settings.hosts {
            let placed: Vec<(&String, &crate::config::ProjectSettings)> = settings
                .projects
                .iter()
                .filter(|(_, p)| {
                    p.host.as_deref() == Some(name.as_str())
                        || p.host.as_deref() == Some(crate::config::hosts::AUTO)
                })
                .collect();
            let needed_by: Vec<String> = placed.iter().map(|(n, _)| (*n).clone()).collect();
            let sandboxed_by: Vec<String> = placed
                .iter()
                .filter(|(_, p)| sandboxed(p))
                .map(|(n, _)| (*n).clone())
                .collect();
            checks.push(self.host(name, host, &needed_by, &sandboxed_by).await);
        }
        checks
    }

    /// The `flotilla` agents run for their hooks and reports (`server.cli_path`): it must run,
    /// and be this version (its `hook` and `report` verbs speak to this server). Not running
    /// is a failure when projects have agents; another version a warning.
    async fn hooks(&self, cli: &str, projects: &[String]) -> Check {
        const NAME: &str = "hooks";
        let this = format!("flotilla {}", env!("CARGO_PKG_VERSION"));
        let fix = Some(format!(
            "point server.cli_path at this flotilla ({this}), or leave it unset"
        ));
        match version(Path::new(cli), &["--version"], None, self.timeout).await {
            Ok(v) if v == this => Check::ok(NAME, format!("server.cli_path {cli}: {v}")),
            Ok(v) => Check::warn(
                NAME,
                format!(
                    "server.cli_path {cli} is `{v}`, not {this}: agents' hooks and reports may not \
                     reach this server as it expects"
                ),
                fix,
            ),
            Err(e) if projects.is_empty() => {
                Check::warn(NAME, format!("server.cli_path {cli}: {e}"), fix)
            }
            Err(e) => Check::fail(
                NAME,
                format!(
                    "server.cli_path {cli}: {e}; the agents of project {} report through it",
                    projects.join(", ")
                ),
                fix,
            ),
        }
    }

    /// A remote host answers over SSH without a prompt (`BatchMode`, the host key known) and
    /// has tmux and git, and bubblewrap when a project placed there (`sandboxed_by`) runs its
    /// agents in a sandbox; a failure when a project runs there (by name or `auto`).
    async fn host(
        &self,
        name: &str,
        h: &crate::config::hosts::HostSettings,
        needed_by: &[String],
        sandboxed_by: &[String],
    ) -> Check {
        let check = format!("host {name}");
        let Resolved::Found(ssh) = resolve("ssh", self.host.path()) else {
            return Check::fail(
                &check,
                "ssh: not found on PATH; remote hosts are reached with the system's OpenSSH client",
                Some("install it (apt install openssh-client)".into()),
            );
        };
        let mut argv: Vec<String> = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        argv.extend([
            "-o".into(),
            format!("ConnectTimeout={}", self.timeout.as_secs().max(1)),
        ]);
        if let Some(port) = h.port {
            argv.extend(["-p".into(), port.to_string()]);
        }
        if let Some(id) = &h.identity_file {
            argv.extend(["-i".into(), id.display().to_string()]);
        }
        if let Some(known) = &h.known_hosts {
            argv.extend([
                "-o".into(),
                format!("UserKnownHostsFile={}", known.display()),
            ]);
        }
        // One remote command line of fixed words: the tools' versions.
        let line = if sandboxed_by.is_empty() {
            "tmux -V && git --version"
        } else {
            // bubblewrap first, so that its absence is the line the failure shows.
            "command -v bwrap >/dev/null 2>&1 || { echo 'bubblewrap (bwrap) is not installed'; \
             exit 127; }; tmux -V && git --version"
        };
        argv.extend([h.ssh.clone(), line.into()]);
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        match version(&ssh, &args, None, self.timeout * 2).await {
            Ok(v) => Check::ok(&check, format!("{} answers: {v}", h.ssh)),
            Err(e) => {
                let mut detail = format!("{} over ssh: {e}", h.ssh);
                if !sandboxed_by.is_empty() {
                    detail.push_str(&format!(
                        "; project {} runs its agents in a sandbox there (bubblewrap)",
                        sandboxed_by.join(", ")
                    ));
                }
                let fix = Some(if sandboxed_by.is_empty() {
                    "check the destination, its key (ssh-copy-id) and known_hosts entry, and that \
                     tmux and git are installed there"
                        .to_string()
                } else {
                    "check the destination, its key (ssh-copy-id) and known_hosts entry, and that \
                     tmux, git and bubblewrap (apt install bubblewrap) are installed there"
                        .to_string()
                });
                if needed_by.is_empty() {
                    Check::warn(&check, detail, fix)
                } else {
                    Check::fail(
                        &check,
                        format!(
                            "{detail}; project {} runs its agents there",
                            needed_by.join(", ")
                        ),
                        fix,
                    )
                }
            }
        }
    }

    /// A tool on Flotilla's `PATH` with its version; missing is a failure when `needed_by`
    /// names projects (or for git, which every workspace needs).
    async fn tool(&self, program: &str, args: &[&str], needed_by: &[String], apt: &str) -> Check {
        match resolve(program, self.host.path()) {
            Resolved::Found(path) => match version(&path, args, None, self.timeout).await {
                Ok(v) => Check::ok(program, format!("{v} ({})", path.display())),
                Err(e) => Check::warn(
                    program,
                    format!("{} {}: {e}", path.display(), args.join(" ")),
                    None,
                ),
            },
            _ => {
                let who = if needed_by.is_empty() {
                    "workspaces need it".to_string()
                } else {
                    format!(
                        "the tmux runtime of project {} needs it",
                        needed_by.join(", ")
                    )
                };
                let mut fix = format!("install it ({apt})");
                if program == "tmux" {
                    fix.push_str(", or set `runtime: process` on those projects");
                }
                Check::fail(
                    program,
                    format!("{program}: not found on PATH ({}); {who}", self.host.path()),
                    Some(fix),
                )
            }
        }
    }

    /// The store URL is usable: a SQLite file whose directory can be written (or created),
    /// or a PostgreSQL server that accepts a connection.
    async fn database(&self, settings: &Settings) -> Check {
        let url = settings.database_url(&self.data_dir);
        let shown = crate::store::redact_url(&url);
        if url.starts_with("sqlite:") {
            if url.contains(":memory:") || url.contains("mode=memory") {
                return Check::warn(
                    "database",
                    format!("{shown}: in memory; nothing survives a restart"),
                    Some("set database.url to a file (or leave it unset)".into()),
                );
            }
            let path = match sqlx::sqlite::SqliteConnectOptions::from_str(&url) {
                Ok(o) => o.get_filename().to_path_buf(),
                Err(e) => {
                    return Check::fail(
                        "database",
                        format!("{shown}: {e}"),
                        Some("fix database.url".into()),
                    )
                }
            };
            let probe = path.clone();
            return match tokio::task::spawn_blocking(move || sqlite_writable(&probe)).await {
                Ok(Ok(detail)) => Check::ok("database", format!("sqlite {detail}")),
                Ok(Err(why)) => Check::fail(
                    "database",
                    format!("sqlite {}: {why}", path.display()),
                    Some(
                        "make the directory writable for this user, or point database.url \
                         (or $FLOTILLA_HOME) elsewhere"
                            .into(),
                    ),
                ),
                Err(e) => Check::fail("database", e.to_string(), None),
            };
        }
        use sqlx::Connection;
        match tokio::time::timeout(self.timeout, sqlx::PgConnection::connect(&url)).await {
            Ok(Ok(c)) => {
                let _ = c.close().await;
                Check::ok("database", format!("{shown}: connected"))
            }
            Ok(Err(e)) => Check::fail(
                "database",
                format!("{shown}: {e}"),
                Some("start PostgreSQL or fix database.url".into()),
            ),
            Err(_) => Check::fail(
                "database",
                format!("{shown}: no connection within {}s", self.timeout.as_secs()),
                Some("start PostgreSQL or fix database.url".into()),
            ),
        }
    }

    /// An agent's lines: its CLI, version, credentials and (claude) first-run set-up.
    /// `repos`: the repositories of the projects using it (a relative command is looked for
    /// there, as the workspace is cut from them).
    pub async fn agent(&self, a: &AgentLaunch, repos: &[PathBuf]) -> Vec<Check> {
        let name = |what: &str| format!("agent {}: {what}", a.name);
        let mut out = Vec::new();
        let Some(program) = a.argv0() else {
            out.push(Check::fail(
                name("cli"),
                "the command is empty",
                Some(format!("set agents.{}.command", a.name)),
            ));
            return out;
        };
        let path_from = if a.env.contains_key("PATH") {
            format!("agents.{}.env.PATH", a.name)
        } else {
            "Flotilla's PATH".into()
        };
        let found = match resolve(program, a.path(&self.host)) {
            Resolved::Found(p) => {
                out.push(Check::ok(
                    name("cli"),
                    format!("{program} at {}", p.display()),
                ));
                Some(p)
            }
            Resolved::InWorkspace(rel) => {
                let hit = repos.iter().map(|r| r.join(&rel)).find(|p| p.is_file());
                out.push(match hit {
                    Some(p) => Check::ok(
                        name("cli"),
                        format!(
                            "{program}: relative to the session's workspace ({} in the repository)",
                            p.display()
                        ),
                    ),
                    None => Check::warn(
                        name("cli"),
                        format!(
                            "{program}: relative to the session's workspace, and not in the \
                             repository of any project using it"
                        ),
                        Some(format!(
                            "use an absolute path in agents.{}.command, or commit the program",
                            a.name
                        )),
                    ),
                });
                None
            }
            Resolved::NotOnPath => {
                let fix = match install_command(a.kind).filter(|_| !a.is_wrapper()) {
                    Some(i) => format!("install it with `{i}`"),
                    None => format!(
                        "install `{program}`, or fix agents.{}.command (an absolute path \
                         always works)",
                        a.name
                    ),
                };
                out.push(Check::fail(
                    name("cli"),
                    format!(
                        "{program}: not found on PATH ({}, from {path_from})",
                        a.path(&self.host)
                    ),
                    Some(fix),
                ));
                None
            }
            Resolved::NotExecutable(p) => {
                out.push(Check::fail(
                    name("cli"),
                    format!("{} is missing or not an executable file", p.display()),
                    Some(format!(
                        "fix agents.{}.command, or `chmod +x {}`",
                        a.name,
                        p.display()
                    )),
                ));
                None
            }
        };
        if let Some(path) = found.filter(|_| a.kind != AgentKind::Command && !a.is_wrapper()) {
            let env = agent_env(a, &self.host);
            out.push(
                match version(&path, &["--version"], Some(&env), self.timeout).await {
                    Ok(v) => Check::ok(name("version"), v),
                    Err(e) => Check::warn(
                        name("version"),
                        format!("`{program} --version`: {e}"),
                        Some(format!("check that `{program}` runs for this user")),
                    ),
                },
            );
        }
        if let Some(c) = credentials::check(a, &self.host) {
            out.push(c);
        }
        if a.kind == AgentKind::ClaudeCode {
            out.push(match claude_onboarding(a, &self.host) {
                Onboarding::Done(f) => {
                    Check::ok(name("first-run set-up"), format!("done ({})", f.display()))
                }
                Onboarding::NotApplicable(why) => {
                    Check::ok(name("first-run set-up"), format!("not checked: {why}"))
                }
                // A warning: the spawn goes ahead, and the session then waits on the set-up
                // screen or errors with the CLI's words.
                Onboarding::NotDone { home, file } => Check::warn(
                    name("first-run set-up"),
                    format!(
                        "claude has not completed its first-run set-up for HOME={home} \
                         ({} has no hasCompletedOnboarding: true)",
                        file.display()
                    ),
                    Some(format!(
                        "run `claude` once in a terminal with HOME={home} (or set \
                         hasCompletedOnboarding in {})",
                        file.display()
                    )),
                ),
                Onboarding::Unreadable { file, reason } => Check::fail(
                    name("first-run set-up"),
                    format!("cannot read {}: {reason}", file.display()),
                    Some(format!(
                        "fix or remove {}, then run `claude` once",
                        file.display()
                    )),
                ),
            });
        }
        out
    }

    /// Whether bubblewrap is there for the sandbox (a warning only: nothing uses it yet).
    /// Whether bubblewrap can make an agent's sandbox here (it needs user or PID and network
    /// namespaces, which some containers refuse): a trial run, not only `--version`. A failure
    /// when a project's agents are sandboxed, else a warning.
    async fn sandbox(&self, needed_by: &[String]) -> Check {
        let fail = |detail: String, fix: &str| {
            if needed_by.is_empty() {
                Check::warn("sandbox", detail, Some(fix.to_string()))
            } else {
                Check::fail(
                    "sandbox",
                    format!(
                        "{detail}; project {} runs its agents in it",
                        needed_by.join(", ")
                    ),
                    Some(fix.to_string()),
                )
            }
        };
        let p = match resolve("bwrap", self.host.path()) {
            Resolved::Found(p) => p,
            _ => {
                return fail(
                    "bubblewrap (bwrap) not found on PATH".into(),
                    "apt install bubblewrap",
                )
            }
        };
        let v = version(&p, &["--version"], None, self.timeout)
            .await
            .unwrap_or_default();
        let mut trial: Vec<&str> = vec!["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"];
        trial.extend(["--unshare-pid", "--unshare-net", "--unshare-ipc"]);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            trial.extend(["--unshare-user", "--uid", "1000", "--gid", "1000"]);
        }
        trial.extend(["--", "true"]);
        match version(&p, &trial, None, self.timeout).await {
            Ok(_) => Check::ok("sandbox", format!("{v} ({}): namespaces work", p.display())),
            Err(e) => fail(
                format!("{} cannot create a sandbox here: {e}", p.display()),
                "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1), \
                 or set sandbox.enabled: false",
            ),
        }
    }
}

/// Every agent worth checking, with the projects using it: the `agents:` entries and the
/// agents projects name (their own, `defaults.agent`, their orchestrator's).
pub fn agents_to_check(settings: &Settings) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = settings
        .agents
        .keys()
        .map(|k| (k.clone(), BTreeSet::new()))
        .collect();
    for (pname, p) in &settings.projects {
        let main = p.agent(&settings.defaults).to_string();
        out.entry(main).or_default().insert(pname.clone());
        if let Some(o) = &p.orchestrator_agent {
            out.entry(o.clone()).or_default().insert(pname.clone());
        }
    }
    out.into_iter()
        .map(|(k, v)| (k, v.into_iter().collect()))
        .collect()
}

/// The environment the agent process gets (without the per-session `FLOTILLA_*` names).
pub fn agent_env(a: &AgentLaunch, host: &HostEnv) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = BASE_ENV
        .iter()
        .filter_map(|n| host.get(n).map(|v| (n.to_string(), v.to_string())))
        .collect();
    env.extend(a.env.clone());
    env
}

/// Whether a SQLite file can be created or written at `path`: `Ok(what was found)`.
fn sqlite_writable(path: &Path) -> Result<String, String> {
    if path.exists() {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(|_| format!("{} (writable)", path.display()))
            .map_err(|e| format!("cannot be opened for writing: {e}"));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    // The nearest directory that exists: Flotilla creates the rest.
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) => existing = p,
            None => break,
        }
    }
    if !existing.is_dir() {
        return Err(format!("{} is not a directory", existing.display()));
    }
    let probe = existing.join(format!(".flotilla-doctor-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(if existing == dir {
                format!("{} (directory writable; will be created)", path.display())
            } else {
                format!(
                    "{} (will be created under {}, which is writable)",
                    path.display(),
                    existing.display()
                )
            })
        }
        Err(e) => Err(format!("cannot write in {}: {e}", existing.display())),
    }
}

/// Runs `program args…` (an argument vector, never a shell) with `timeout`; the first
/// non-empty line of its output. With `env`, the child gets exactly that environment.
///
/// # Errors
/// A sentence: it could not start, timed out (and was killed), or exited non-zero.
pub async fn version(
    program: &Path,
    args: &[&str],
    env: Option<&BTreeMap<String, String>>,
    timeout: Duration,
) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(env) = env {
        cmd.env_clear().envs(env);
    }
    // A program being written (an update in progress, or a file another process still holds
    // open for writing across its fork) cannot run for a moment: tried again briefly, as
    // `plugins::exec::spawn` does (which preflight cannot use: plugins depend on it).
    let mut tries = 0;
    let child = loop {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 5 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => break other.map_err(|e| format!("cannot run it: {e}"))?,
        }
    };
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| format!("no answer within {}s", timeout.as_secs_f32()))?
        .map_err(|e| e.to_string())?;
    let first = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| l.chars().take(120).collect::<String>())
    };
    let line = first(&out.stdout).or_else(|| first(&out.stderr));
    if out.status.success() {
        Ok(line.unwrap_or_else(|| "(no version printed)".into()))
    } else {
        Err(format!(
            "exited with {}{}",
            out.status,
            line.map(|l| format!(": {l}")).unwrap_or_default()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::script;
    use super::*;
    use crate::config::load::tests::settings_from;
    use crate::config::AgentSettings;

    fn doctor(path: &Path, data_dir: &Path) -> Doctor {
        Doctor {
            host: HostEnv::from_vars([("PATH", path.to_string_lossy().into_owned())]),
            data_dir: data_dir.to_path_buf(),
            timeout: Duration::from_secs(5),
        }
    }

    fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name} in {checks:#?}"))
    }

    #[tokio::test]
    async fn tools_report_their_version_and_tmux_only_when_a_project_uses_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let bin = dir.path().join("bin");
        script(&bin, "git", "echo 'git version 9.9.9'");
        let d = doctor(&bin, &dir.path().join("home"));
        let process = settings_from(
            "projects:\n  demo: { repo: /tmp/demo, runtime: process, agent: scripted }\n\
             agents:\n  scripted: { kind: command, command: [\"/bin/sh\"] }\n",
        );
        let checks = d.run(&process).await;
        let git = find(&checks, "git");
        assert_eq!(git.status, Status::Ok);
        assert!(git.detail.starts_with("git version 9.9.9"), "{git:?}");
        assert_eq!(find(&checks, "tmux").status, Status::Ok, "not needed");
        let sandbox = find(&checks, "sandbox");
        assert_eq!(sandbox.status, Status::Warn);
        assert_eq!(sandbox.detail, "bubblewrap (bwrap) not found on PATH");
        assert_eq!(sandbox.fix.as_deref(), Some("apt install bubblewrap"));
        // A project that runs its agents in the sandbox makes the same a failure.
        let sandboxed = settings_from(
            "projects:\n  demo: { repo: /tmp/demo, runtime: process, agent: scripted, \
             sandbox: { enabled: true } }\n\
             agents:\n  scripted: { kind: command, command: [\"/bin/sh\"] }\n",
        );
        let sandbox = find(&d.run(&sandboxed).await, "sandbox").clone();
        assert_eq!(sandbox.status, Status::Fail);
        assert!(sandbox.detail.contains("project demo"), "{sandbox:?}");

        let tmux = settings_from("projects:\n  demo: { repo: /tmp/demo, runtime: tmux }\n");
        let checks = d.run(&tmux).await;
        let t = find(&checks, "tmux");
        assert_eq!(t.status, Status::Fail, "{t:?}");
        assert!(t.detail.contains("project demo"), "{t:?}");
        script(&bin, "tmux", "echo 'tmux 3.4'");
        script(&bin, "bwrap", "echo 'bubblewrap 0.9.0'");
        let checks = d.run(&tmux).await;
        assert!(find(&checks, "tmux").detail.starts_with("tmux 3.4"));
        assert_eq!(find(&checks, "sandbox").status, Status::Ok);

        let none = doctor(&dir.path().join("empty"), dir.path());
        let checks = none.run(&process).await;
        let git = find(&checks, "git");
        assert_eq!(git.status, Status::Fail);
        assert_eq!(git.fix.as_deref(), Some("install it (apt install git)"));
    }

    #[tokio::test]
    async fn the_flotilla_agents_report_through_must_run_and_be_this_version() {
        let dir = tempfile::tempdir().expect("tmp");
        let bin = dir.path().join("bin");
        script(&bin, "git", "echo 'git version 9.9.9'");
        let d = doctor(&bin, &dir.path().join("home"));
        let with_cli = |cli: &Path| {
            settings_from(&format!(
                "server: {{ cli_path: \"{}\" }}\nprojects:\n  demo: {{ repo: /tmp/demo, runtime: process }}\n",
                cli.display()
            ))
        };
        let this = format!("flotilla {}", env!("CARGO_PKG_VERSION"));
        let same = script(&bin, "flotilla", &format!("echo '{this}'"));
        let c = find(&d.run(&with_cli(&same)).await, "hooks").clone();
        assert_eq!(c.status, Status::Ok, "{c:?}");
        let old = script(&bin, "flotilla-old", "echo 'flotilla 0.0.1'");
        let c = find(&d.run(&with_cli(&old)).await, "hooks").clone();
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.detail.contains("flotilla 0.0.1"), "{c:?}");
        let gone = dir.path().join("nowhere").join("flotilla");
        let c = find(&d.run(&with_cli(&gone)).await, "hooks").clone();
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.detail.contains("project demo"), "{c:?}");
        // Unset: agents run this executable; nothing to check.
        let unset = settings_from("projects:\n  demo: { repo: /tmp/demo, runtime: process }\n");
        assert!(d.run(&unset).await.iter().all(|c| c.name != "hooks"));
    }

    #[tokio::test]
    async fn a_host_that_does_not_answer_fails_for_the_projects_placed_there_only() {
        // A port nothing listens on: ssh is refused at once, whatever the machine.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = tempfile::tempdir().expect("tmp");
        let d = Doctor {
            host: HostEnv::current(),
            data_dir: dir.path().join("home"),
            timeout: Duration::from_secs(5),
        };
        let yaml = format!(
            "hosts:\n  gone: {{ ssh: \"nobody@127.0.0.1\", port: {port}, workdir: /srv/f }}\n"
        );
        let s = settings_from(&yaml);
        let h = &s.hosts["gone"];
        let c = d.host("gone", h, &[], &[]).await;
        assert_eq!(c.status, Status::Warn, "{c:?}");
        let c = d.host("gone", h, &["demo".to_string()], &[]).await;
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.detail.contains("nobody@127.0.0.1") && c.detail.contains("demo"),
            "{c:?}"
        );
        assert!(c.fix.is_some());
        // A project sandboxed there needs bubblewrap on the host: the check says so.
        let c = d
            .host("gone", h, &["demo".to_string()], &["demo".to_string()])
            .await;
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.detail.contains("sandbox"), "{c:?}");
        assert!(
            c.fix.as_deref().is_some_and(|f| f.contains("bubblewrap")),
            "{c:?}"
        );
    }
    #[tokio::test]
    async fn the_sqlite_directory_must_be_writable() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = doctor(dir.path(), &dir.path().join("home"));
        let s = settings_from("");
        let c = d.database(&s).await;
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.detail.contains("will be created"), "{c:?}");
        // A data dir under a file cannot be made.
        std::fs::write(dir.path().join("file"), "x").expect("write");
        let bad = doctor(dir.path(), &dir.path().join("file").join("home"));
        let c = bad.database(&s).await;
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.detail.contains("is not a directory"), "{c:?}");
        assert!(c.fix.is_some());
        let mem = settings_from("database: { url: \"sqlite::memory:\" }\n");
        assert_eq!(d.database(&mem).await.status, Status::Warn);
    }

    #[tokio::test]
    async fn an_agent_cli_is_found_on_the_agents_path_with_its_version() {
        let dir = tempfile::tempdir().expect("tmp");
        let bin = dir.path().join("bin");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("mkdir");
        let d = doctor(&dir.path().join("empty"), dir.path());
        let mut s = AgentSettings::built_in(AgentKind::ClaudeCode);
        s.env
            .insert("HOME".into(), home.to_string_lossy().into_owned());
        s.env
            .insert("PATH".into(), bin.to_string_lossy().into_owned());
        let a = AgentLaunch::from_settings("claude-code", &s);

        let checks = d.agent(&a, &[]).await;
        let cli = find(&checks, "agent claude-code: cli");
        assert_eq!(cli.status, Status::Fail);
        assert!(
            cli.detail.starts_with("claude: not found on PATH"),
            "{cli:?}"
        );
        assert_eq!(
            cli.fix.as_deref(),
            Some("install it with `npm install -g @anthropic-ai/claude-code`")
        );
        let onboarding = find(&checks, "agent claude-code: first-run set-up");
        assert_eq!(onboarding.status, Status::Warn);
        assert!(
            onboarding
                .detail
                .contains(&format!("first-run set-up for HOME={}", home.display())),
            "{onboarding:?}"
        );

        // The version runs with the agent's env (its HOME), not Flotilla's.
        script(&bin, "claude", "echo \"2.1.328 (Claude Code) $HOME\"");
        std::fs::write(
            home.join(".claude.json"),
            "{\"hasCompletedOnboarding\":true}",
        )
        .expect("write");
        let checks = d.agent(&a, &[]).await;
        assert_eq!(find(&checks, "agent claude-code: cli").status, Status::Ok);
        let v = find(&checks, "agent claude-code: version");
        assert_eq!(
            v.detail,
            format!("2.1.328 (Claude Code) {}", home.display())
        );
        assert_eq!(
            find(&checks, "agent claude-code: first-run set-up").status,
            Status::Ok
        );

        // A CLI that hangs is cut off.
        script(&bin, "claude", "exec /bin/sleep 30");
        let quick = Doctor {
            timeout: Duration::from_millis(200),
            ..d.clone()
        };
        let checks = quick.agent(&a, &[]).await;
        let v = find(&checks, "agent claude-code: version");
        assert_eq!(v.status, Status::Warn);
        assert!(v.detail.contains("no answer within"), "{v:?}");
    }

    #[tokio::test]
    async fn an_unused_agent_only_warns_and_command_agents_get_no_version_run() {
        let dir = tempfile::tempdir().expect("tmp");
        let bin = dir.path().join("bin");
        // Would leave a mark if run.
        let mark = dir.path().join("ran");
        script(
            &bin,
            "my-agent",
            &format!("touch {}", mark.to_string_lossy()),
        );
        let d = doctor(&bin, dir.path());
        let s = settings_from(&format!(
            "agents:\n  mine: {{ kind: command, command: [\"my-agent\"] }}\n  \
             gone: {{ kind: command, command: [\"{}/nope\"] }}\n\
             projects:\n  demo: {{ repo: /tmp/demo, runtime: process, agent: mine }}\n",
            bin.display()
        ));
        let checks = d.run(&s).await;
        assert_eq!(find(&checks, "agent mine: cli").status, Status::Ok);
        assert!(!checks.iter().any(|c| c.name == "agent mine: version"));
        assert!(!mark.exists(), "a command agent is never run");
        let gone = find(&checks, "agent gone: cli");
        assert_eq!(gone.status, Status::Warn, "unused: {gone:?}");
        assert!(gone.detail.ends_with("(no project uses this agent)"));
    }

    #[test]
    fn agents_to_check_are_the_configured_and_the_used_ones() {
        let s = settings_from(
            "agents:\n  spare: { kind: aider }\n\
             projects:\n  a: { repo: /tmp/a }\n  b: { repo: /tmp/b, agent: codex, orchestrator_agent: spare }\n",
        );
        let m = agents_to_check(&s);
        assert_eq!(m["claude-code"], ["a"]);
        assert_eq!(m["codex"], ["b"]);
        assert_eq!(m["spare"], ["b"]);
        assert_eq!(m.len(), 3);
    }
}
