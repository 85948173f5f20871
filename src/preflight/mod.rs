//! Preflight: can this machine start what the config asks for?
//!
//! Two users:
//! - a spawn ([`agent_ready`]): before any session row or worktree exists, the agent's CLI
//!   must resolve on the `PATH` the agent will get; an interactive `claude` that has not done
//!   its first-run set-up is a warning (the spawn goes ahead; the session then waits on the
//!   set-up screen or errors with the CLI's own words). Cheap: a `PATH` lookup and one small
//!   file read, no subprocess; callers run it off the actor thread.
//! - `flotilla doctor` ([`doctor::run`]): every check, one [`Check`] per line, with the cause
//!   and the fix in words; subprocesses (`--version`) only there, each with a timeout.
//!
//! Everything reads the environment through [`HostEnv`] (Flotilla's own environment, captured
//! once), so the checks are testable with fake `PATH` directories and fake homes.

pub mod credentials;
pub mod doctor;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{AgentKind, AgentSettings};
use crate::domain::policy::BASE_ENV;

/// `PATH` when none is set (what the C library's `execvp` searches then).
pub const DEFAULT_PATH: &str = "/usr/bin:/bin";

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Worth knowing; nothing a project needs is missing (or it cannot be told).
    Warn,
    /// Something a project needs is missing: `doctor` exits 1.
    Fail,
}

impl Status {
    /// How the status is printed: `ok`, `warn`, `FAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of `flotilla doctor`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// What was checked (`git`, `agent claude-code: cli`, …).
    pub name: String,
    /// The outcome.
    pub status: Status,
    /// What was found (for a problem: the cause). Never a secret's value.
    pub detail: String,
    /// What to do about a problem, in words.
    pub fix: Option<String>,
}

impl Check {
    /// A check that passed.
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    /// A warning with its fix.
    pub fn warn(name: impl Into<String>, detail: impl Into<String>, fix: Option<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Warn,
            detail: detail.into(),
            fix,
        }
    }

    /// A failure with its fix.
    pub fn fail(name: impl Into<String>, detail: impl Into<String>, fix: Option<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix,
        }
    }
}

/// Why an agent cannot start (the spawn-time preflight's answer, in words).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PreflightError {
    /// A bare program name that no `PATH` directory holds.
    #[error("{agent}: {program} not found on PATH{}", install_hint(.install))]
    NotOnPath {
        /// Agent name.
        agent: String,
        /// The program (`argv[0]`).
        program: String,
        /// How to install it, when it is a known CLI.
        install: Option<String>,
    },
    /// A path that is missing or not an executable file.
    #[error("{agent}: {} is missing or not an executable file", .path.display())]
    NotExecutable {
        /// Agent name.
        agent: String,
        /// The path.
        path: PathBuf,
    },
    /// An interactive `claude` whose first-run set-up was never done for the agent's HOME.
    #[error(
        "{agent}: claude has not completed its first-run set-up for HOME={home}: run `claude` \
         once in a terminal (or set hasCompletedOnboarding in {})",
        .file.display()
    )]
    NotOnboarded {
        /// Agent name.
        agent: String,
        /// The agent's HOME.
        home: String,
        /// The state file that should say so.
        file: PathBuf,
    },
    /// The state file exists but cannot be read or is not JSON.
    #[error("{agent}: cannot read {}: {reason}", .file.display())]
    Unreadable {
        /// Agent name.
        agent: String,
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
}

fn install_hint(install: &Option<String>) -> String {
    install
        .as_ref()
        .map(|i| format!(" (install: {i})"))
        .unwrap_or_default()
}

/// Flotilla's own environment, captured once (tests pass their own).
#[derive(Debug, Clone, Default)]
pub struct HostEnv {
    vars: HashMap<String, String>,
}

impl HostEnv {
    /// This process's environment (variables that are not UTF-8 are left out).
    pub fn current() -> HostEnv {
        HostEnv {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// An environment made of `vars` (tests).
    pub fn from_vars<I, K, V>(vars: I) -> HostEnv
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        HostEnv {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// A variable's value; empty counts as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// `PATH`, or [`DEFAULT_PATH`].
    pub fn path(&self) -> &str {
        self.get("PATH").unwrap_or(DEFAULT_PATH)
    }
}

/// What an agent is started with, as far as preflight cares: its program and the
/// environment it gets.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentLaunch {
    /// Agent name (`claude-code`, `scripted`, …).
    pub name: String,
    /// Which CLI.
    pub kind: AgentKind,
    /// The executable part of the argv: the configured `command`, else the kind's CLI.
    pub program: Vec<String>,
    /// Extra arguments from config.
    pub args: Vec<String>,
    /// The agent's configured environment (`agents.<name>.env`).
    pub env: BTreeMap<String, String>,
}

impl AgentLaunch {
    /// The launch of an agent configured with `settings`.
    pub fn from_settings(name: &str, settings: &AgentSettings) -> AgentLaunch {
        let program = if settings.command.is_empty() {
            default_program(settings.kind)
                .map(|p| vec![p.to_string()])
                .unwrap_or_default()
        } else {
            settings.command.clone()
        };
        AgentLaunch {
            name: name.to_string(),
            kind: settings.kind,
            program,
            args: settings.args.clone(),
            env: settings.env.clone(),
        }
    }

    /// `argv[0]`, if any.
    pub fn argv0(&self) -> Option<&str> {
        self.program.first().map(String::as_str)
    }

    /// Whether `argv[0]` is something else than the kind's own CLI (a wrapper script, the
    /// scripted test agent): such a program may set up its own HOME and credentials, so the
    /// CLI-specific checks do not apply to it.
    pub fn is_wrapper(&self) -> bool {
        let Some(cli) = default_program(self.kind) else {
            return true;
        };
        self.argv0()
            .and_then(|p| Path::new(p).file_name())
            .is_none_or(|n| n != cli)
    }

    /// A variable as the agent process sees it: its configured env, else Flotilla's for the
    /// names agents inherit ([`BASE_ENV`]).
    pub fn var<'a>(&'a self, host: &'a HostEnv, name: &str) -> Option<&'a str> {
        match self.env.get(name) {
            Some(v) => Some(v.as_str()).filter(|v| !v.is_empty()),
            None if BASE_ENV.contains(&name) => host.get(name),
            None => None,
        }
    }

    /// The agent's `PATH`.
    pub fn path<'a>(&'a self, host: &'a HostEnv) -> &'a str {
        self.var(host, "PATH").unwrap_or(DEFAULT_PATH)
    }

    /// The agent's `HOME`.
    pub fn home(&self, host: &HostEnv) -> Option<PathBuf> {
        self.var(host, "HOME").map(PathBuf::from)
    }

    /// Whether the CLI runs its interactive TUI (the fleet's way), not a one-shot `-p` run.
    pub fn interactive(&self) -> bool {
        !self.args.iter().any(|a| a == "-p" || a == "--print")
    }
}

/// The CLI a built-in kind runs when no `command` is configured.
pub fn default_program(kind: AgentKind) -> Option<&'static str> {
    match kind {
        AgentKind::ClaudeCode => Some("claude"),
        AgentKind::Codex => Some("codex"),
        AgentKind::Aider => Some("aider"),
        AgentKind::Opencode => Some("opencode"),
        AgentKind::Command => None,
    }
}

/// How to install a built-in kind's CLI.
pub fn install_command(kind: AgentKind) -> Option<&'static str> {
    match kind {
        AgentKind::ClaudeCode => Some("npm install -g @anthropic-ai/claude-code"),
        AgentKind::Codex => Some("npm install -g @openai/codex"),
        AgentKind::Aider => Some("python -m pip install aider-install && aider-install"),
        AgentKind::Opencode => Some("npm install -g opencode-ai"),
        AgentKind::Command => None,
    }
}

/// Where `argv[0]` leads, as the runtime will resolve it.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    /// An executable file.
    Found(PathBuf),
    /// A relative path with a `/`: resolved against the session's workspace, which does not
    /// exist yet; not checked.
    InWorkspace(PathBuf),
    /// A bare name no `PATH` directory holds.
    NotOnPath,
    /// A path that is missing or not an executable file.
    NotExecutable(PathBuf),
}

/// Resolves `program` like `execvp` does with `path_var` as `PATH`: a name with a `/` is a
/// path (relative ones are relative to the working directory, the session's workspace); a
/// bare name is looked up in each `PATH` directory in turn (an empty entry is the working
/// directory, which is not checked).
pub fn resolve(program: &str, path_var: &str) -> Resolved {
    if program.contains('/') {
        let p = PathBuf::from(program);
        if p.is_relative() {
            return Resolved::InWorkspace(p);
        }
        return if is_executable(&p) {
            Resolved::Found(p)
        } else {
            Resolved::NotExecutable(p)
        };
    }
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        if is_executable(&candidate) {
            return Resolved::Found(candidate);
        }
    }
    Resolved::NotOnPath
}

/// A regular file (following links) with an execute bit.
fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether Claude Code's first-run set-up is done for an agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Onboarding {
    /// `hasCompletedOnboarding: true` in this file.
    Done(PathBuf),
    /// The file is missing or does not say so.
    NotDone {
        /// The agent's HOME (or config dir).
        home: String,
        /// The state file.
        file: PathBuf,
    },
    /// The file exists but cannot be read or parsed.
    Unreadable {
        /// The state file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// Not checked, and why (a wrapper, a one-shot `-p` run, no HOME).
    NotApplicable(String),
}

/// Claude Code's state file as the agent sees it: `$CLAUDE_CONFIG_DIR/.claude.json`, else
/// `$HOME/.claude.json`.
pub fn claude_state_file(a: &AgentLaunch, host: &HostEnv) -> Option<PathBuf> {
    if let Some(dir) = a.var(host, "CLAUDE_CONFIG_DIR") {
        return Some(Path::new(dir).join(".claude.json"));
    }
    a.home(host).map(|h| h.join(".claude.json"))
}

/// Reads whether an interactive `claude` agent has done its first-run set-up (blocking: one
/// small file read).
pub fn claude_onboarding(a: &AgentLaunch, host: &HostEnv) -> Onboarding {
    if a.kind != AgentKind::ClaudeCode {
        return Onboarding::NotApplicable("not a claude-code agent".into());
    }
    if a.is_wrapper() {
        return Onboarding::NotApplicable(format!(
            "the command `{}` is not the claude CLI",
            a.argv0().unwrap_or("")
        ));
    }
    if !a.interactive() {
        return Onboarding::NotApplicable("runs claude with -p (no first-run screen)".into());
    }
    let Some(file) = claude_state_file(a, host) else {
        return Onboarding::NotApplicable("the agent has no HOME".into());
    };
    let home = a
        .var(host, "CLAUDE_CONFIG_DIR")
        .map(|d| format!("{d} (CLAUDE_CONFIG_DIR)"))
        .or_else(|| a.home(host).map(|h| h.display().to_string()))
        .unwrap_or_default();
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Onboarding::NotDone { home, file }
        }
        Err(e) => {
            return Onboarding::Unreadable {
                file,
                reason: e.to_string(),
            }
        }
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) if v["hasCompletedOnboarding"].as_bool() == Some(true) => Onboarding::Done(file),
        Ok(_) => Onboarding::NotDone { home, file },
        Err(e) => Onboarding::Unreadable {
            file,
            reason: format!("not JSON: {e}"),
        },
    }
}

/// The spawn-time preflight: `Ok` when the agent can start as far as cheap checks tell (its
/// CLI resolves on the agent's `PATH`), with warnings for what may still stop it once started:
/// an interactive `claude` whose first-run set-up is not done (its TUI then shows a set-up
/// screen, or exits when that screen cannot reach the vendor; the session says which).
/// Blocking (a few `stat`s and one small file read): run it with `spawn_blocking`.
///
/// # Errors
/// [`PreflightError`] naming the agent, the cause and the fix.
pub fn agent_ready(a: &AgentLaunch, host: &HostEnv) -> Result<Vec<String>, PreflightError> {
    let Some(program) = a.argv0() else {
        // An empty command is reported by validation; nothing to look up.
        return Ok(Vec::new());
    };
    match resolve(program, a.path(host)) {
        Resolved::Found(_) | Resolved::InWorkspace(_) => {}
        Resolved::NotOnPath => {
            return Err(PreflightError::NotOnPath {
                agent: a.name.clone(),
                program: program.to_string(),
                install: (!a.is_wrapper())
                    .then(|| install_command(a.kind).map(str::to_string))
                    .flatten(),
            })
        }
        Resolved::NotExecutable(path) => {
            return Err(PreflightError::NotExecutable {
                agent: a.name.clone(),
                path,
            })
        }
    }
    match claude_onboarding(a, host) {
        Onboarding::Done(_) | Onboarding::NotApplicable(_) => Ok(Vec::new()),
        Onboarding::NotDone { home, file } => Ok(vec![PreflightError::NotOnboarded {
            agent: a.name.clone(),
            home,
            file,
        }
        .to_string()]),
        Onboarding::Unreadable { file, reason } => Err(PreflightError::Unreadable {
            agent: a.name.clone(),
            file,
            reason,
        }),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    /// Writes an executable shell script `name` into `dir` running `body`.
    pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        std::fs::create_dir_all(dir).expect("mkdir");
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::script;
    use super::*;

    fn launch(kind: AgentKind, command: &[&str], env: &[(&str, &str)]) -> AgentLaunch {
        let mut s = AgentSettings::built_in(kind);
        s.command = command.iter().map(|c| c.to_string()).collect();
        s.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AgentLaunch::from_settings("agent-x", &s)
    }

    #[test]
    fn programs_resolve_like_execvp() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let claude = script(&b, "claude", "echo hi");
        std::fs::create_dir_all(&a).expect("mkdir");
        // Not executable: skipped in PATH, refused as a path.
        std::fs::write(a.join("claude"), "x").expect("write");
        let path = format!("{}::{}", a.display(), b.display());
        assert_eq!(resolve("claude", &path), Resolved::Found(claude.clone()));
        assert_eq!(resolve("nope", &path), Resolved::NotOnPath);
        assert_eq!(
            resolve(&claude.to_string_lossy(), ""),
            Resolved::Found(claude)
        );
        let plain = a.join("claude");
        assert_eq!(
            resolve(&plain.to_string_lossy(), &path),
            Resolved::NotExecutable(plain)
        );
        assert_eq!(
            resolve("./agent.sh", &path),
            Resolved::InWorkspace(PathBuf::from("./agent.sh"))
        );
        // A directory is not a program.
        assert_eq!(
            resolve("b", &dir.path().to_string_lossy()),
            Resolved::NotOnPath
        );
    }

    #[test]
    fn the_agents_env_wins_and_only_base_names_are_inherited() {
        let host = HostEnv::from_vars([
            ("PATH", "/host/bin"),
            ("HOME", "/host/home"),
            ("ANTHROPIC_API_KEY", "k"),
        ]);
        let a = launch(AgentKind::ClaudeCode, &[], &[("HOME", "/agent/home")]);
        assert_eq!(a.path(&host), "/host/bin");
        assert_eq!(a.home(&host), Some(PathBuf::from("/agent/home")));
        assert_eq!(a.var(&host, "ANTHROPIC_API_KEY"), None, "not inherited");
        assert_eq!(a.program, ["claude"]);
        assert!(!a.is_wrapper());
        let wrapped = launch(AgentKind::ClaudeCode, &["/opt/bin/my-claude"], &[]);
        assert!(wrapped.is_wrapper());
        let full = launch(AgentKind::ClaudeCode, &["/opt/bin/claude"], &[]);
        assert!(!full.is_wrapper());
        assert_eq!(HostEnv::default().path(), DEFAULT_PATH);
    }

    #[test]
    fn a_missing_cli_names_the_binary_and_how_to_install_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let host = HostEnv::from_vars([("PATH", dir.path().to_string_lossy().into_owned())]);
        let a = launch(AgentKind::ClaudeCode, &[], &[]);
        let e = agent_ready(&a, &host).expect_err("missing");
        assert_eq!(
            e.to_string(),
            "agent-x: claude not found on PATH (install: npm install -g @anthropic-ai/claude-code)"
        );
        let c = launch(AgentKind::Command, &["my-agent", "--flag"], &[]);
        assert_eq!(
            agent_ready(&c, &host).expect_err("missing").to_string(),
            "agent-x: my-agent not found on PATH"
        );
        let abs = launch(AgentKind::Command, &["/nonexistent/agent"], &[]);
        assert!(matches!(
            agent_ready(&abs, &host),
            Err(PreflightError::NotExecutable { .. })
        ));
        // The agent's own PATH is the one searched.
        script(&dir.path().join("bin"), "my-agent", "true");
        let env_path = dir.path().join("bin").to_string_lossy().into_owned();
        let c = launch(AgentKind::Command, &["my-agent"], &[("PATH", &env_path)]);
        assert_eq!(agent_ready(&c, &host), Ok(Vec::new()));
    }

    #[test]
    fn interactive_claude_needs_its_first_run_set_up() {
        let dir = tempfile::tempdir().expect("tmp");
        let bin = dir.path().join("bin");
        script(&bin, "claude", "echo 2.1.0");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("mkdir");
        let host = HostEnv::from_vars([
            ("PATH", bin.to_string_lossy().into_owned()),
            ("HOME", "/elsewhere".into()),
        ]);
        let home_s = home.to_string_lossy().into_owned();
        let a = launch(AgentKind::ClaudeCode, &[], &[("HOME", &home_s)]);
        let warnings = agent_ready(&a, &host).expect("a warning, not a refusal");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let msg = &warnings[0];
        assert!(
            msg.contains(&format!("first-run set-up for HOME={home_s}")),
            "{msg}"
        );
        assert!(msg.contains("run `claude` once in a terminal"), "{msg}");

        std::fs::write(
            home.join(".claude.json"),
            "{\"hasCompletedOnboarding\": false}",
        )
        .expect("write");
        assert!(matches!(
            claude_onboarding(&a, &host),
            Onboarding::NotDone { .. }
        ));
        std::fs::write(home.join(".claude.json"), "{not json").expect("write");
        assert!(matches!(
            agent_ready(&a, &host),
            Err(PreflightError::Unreadable { .. })
        ));
        std::fs::write(
            home.join(".claude.json"),
            "{\"hasCompletedOnboarding\": true}",
        )
        .expect("write");
        assert_eq!(agent_ready(&a, &host), Ok(Vec::new()));

        // CLAUDE_CONFIG_DIR moves the state file.
        let cfg = dir.path().join("cfg");
        std::fs::create_dir_all(&cfg).expect("mkdir");
        let cfg_s = cfg.to_string_lossy().into_owned();
        let c = launch(
            AgentKind::ClaudeCode,
            &[],
            &[("HOME", &home_s), ("CLAUDE_CONFIG_DIR", &cfg_s)],
        );
        assert!(matches!(
            claude_onboarding(&c, &host),
            Onboarding::NotDone { .. }
        ));

        // Not checked: a wrapper, or a one-shot -p run.
        let w = launch(AgentKind::ClaudeCode, &["sh"], &[("HOME", &cfg_s)]);
        assert!(matches!(
            claude_onboarding(&w, &host),
            Onboarding::NotApplicable(_)
        ));
        let mut p = launch(AgentKind::ClaudeCode, &[], &[("HOME", &cfg_s)]);
        p.args = vec!["-p".into()];
        assert!(matches!(
            claude_onboarding(&p, &host),
            Onboarding::NotApplicable(_)
        ));
    }
}
