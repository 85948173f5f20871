//! What the actors need to run sessions, resolved once from `Settings` at start-up: plugins by
//! name and each project's resolved settings and reaction policy. Actors never read config.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::journal::Journal;
use crate::domain::policy::Policy;
use crate::plugins::{Agent, PluginError, Runtime, Workspace};
use crate::store::SharedStore;

/// A project as the actors use it.
#[derive(Clone)]
pub struct ProjectSpec {
    /// Name.
    pub name: String,
    /// Local clone.
    pub repo: PathBuf,
    /// Remote name.
    pub remote: String,
    /// Base branch.
    pub default_branch: String,
    /// Session id prefix.
    pub prefix: String,
    /// Default agent name.
    pub agent: String,
    /// Runtime plugin name.
    pub runtime: String,
    /// Workspace plugin name.
    pub workspace: String,
    /// Reaction policy.
    pub policy: Arc<Policy>,
    /// Project rules prepended to every prompt.
    pub rules: Option<String>,
    /// How a new workspace is prepared.
    pub setup: crate::config::WorkspaceSetup,
    /// Delete the local branch when a session is killed.
    pub delete_branch_on_kill: bool,
    /// First port of the per-session port blocks.
    pub port_base: u16,
    /// Agent of the orchestrator session.
    pub orchestrator_agent: Option<String>,
    /// `owner/name` on GitHub when the project's PRs live there (the lifecycle watches them).
    pub github_repo: Option<String>,
    /// The project's `sandbox:` (agents' own settings are in `Fleet::sandbox`).
    pub sandbox: crate::config::SandboxSettings,
    /// The host its sessions run on (a name under `hosts:` or `auto`); `None`: this machine.
    pub host: Option<String>,
}

impl ProjectSpec {
    /// A project with defaults for everything but its name, repo and plugins (tests, benches).
    pub fn simple(name: &str, repo: PathBuf, agent: &str, runtime: &str) -> Self {
        ProjectSpec {
            name: name.into(),
            repo,
            remote: "origin".into(),
            default_branch: "main".into(),
            prefix: name.into(),
            agent: agent.into(),
            runtime: runtime.into(),
            workspace: "worktree".into(),
            policy: Arc::new(Policy::defaults()),
            rules: None,
            setup: Default::default(),
            delete_branch_on_kill: false,
            port_base: 20000,
            orchestrator_agent: None,
            github_repo: None,
            sandbox: Default::default(),
            host: None,
        }
    }
}

/// Plugins by name.
#[derive(Default, Clone)]
pub struct Plugins {
    /// Runtimes.
    pub runtimes: HashMap<String, Arc<dyn Runtime>>,
    /// Workspaces.
    pub workspaces: HashMap<String, Arc<dyn Workspace>>,
    /// Agents (built-in kinds and named agents).
    pub agents: HashMap<String, Arc<dyn Agent>>,
    /// Where PRs live (`github`), when configured.
    pub scm: Option<Arc<dyn crate::plugins::Scm>>,
    /// Each project's issue tracker, by project name.
    pub trackers: HashMap<String, Arc<dyn crate::plugins::Tracker>>,
    /// What each project's sessions write back to their issues (`projects.<name>.writeback`).
    pub writebacks: HashMap<String, crate::config::WritebackSettings>,
    /// Remote hosts (each also registered as runtime and workspace `ssh:<name>`).
    pub hosts: crate::plugins::hosts::HostSet,
}

impl Plugins {
    /// The runtime called `name`.
    ///
    /// # Errors
    /// `Unavailable` when this build has none of that name.
    pub fn runtime(&self, name: &str) -> Result<Arc<dyn Runtime>, PluginError> {
        self.runtimes
            .get(name)
            .cloned()
            .ok_or_else(|| PluginError::Unavailable {
                slot: "runtime",
                name: name.to_string(),
            })
    }

    /// The workspace called `name`.
    ///
    /// # Errors
    /// `Unavailable` when this build has none of that name.
    pub fn workspace(&self, name: &str) -> Result<Arc<dyn Workspace>, PluginError> {
        self.workspaces
            .get(name)
            .cloned()
            .ok_or_else(|| PluginError::Unavailable {
                slot: "workspace",
                name: name.to_string(),
            })
    }

    /// The agent called `name`.
    ///
    /// # Errors
    /// `Unavailable` when there is none of that name.
    pub fn agent(&self, name: &str) -> Result<Arc<dyn Agent>, PluginError> {
        self.agents
            .get(name)
            .cloned()
            .ok_or_else(|| PluginError::Unavailable {
                slot: "agent",
                name: name.to_string(),
            })
    }
}

/// Shared dependencies of the supervisor and every session actor.
pub struct Fleet {
    /// Event-log writer and publisher.
    pub journal: Arc<Journal>,
    /// Store, for reads.
    pub store: SharedStore,
    /// Plugins.
    pub plugins: Plugins,
    /// Projects by name.
    pub projects: BTreeMap<String, ProjectSpec>,
    /// `$FLOTILLA_HOME`: worktrees, prompts and runtime files live under it.
    pub home: PathBuf,
    /// Restarts after which an actor gives up and marks its session errored.
    pub max_restarts: u32,
    /// Timeout for asking an actor something.
    pub actor_timeout: Duration,
    /// Environment variables passed to every agent (besides the config's own): only these
    /// names are copied from Flotilla's environment; secrets never are.
    pub agent_env_passthrough: Vec<String>,
    /// Key of the per-session report tokens (`flotilla report`); never leaves the process.
    pub report_key: Vec<u8>,
    /// URL agents use to reach this service (for `flotilla report`).
    pub server_url: String,
    /// The `flotilla` executable agent hooks call (`flotilla hook <kind>`); `None`: no hooks,
    /// the agent's log and screen are all Flotilla reads.
    pub cli_path: Option<std::path::PathBuf>,
    /// Agent sandboxes: settings, hidden paths, each sandboxed session's egress proxy.
    pub sandbox: Arc<super::sandbox_host::SandboxHost>,
    /// Caps how many sessions create workspaces and start agents at once (batch spawns).
    pub spawn_permits: Arc<tokio::sync::Semaphore>,
    /// The time session timers, deadlines and event timestamps read (a test moves it).
    pub clock: crate::clock::Clock,
    /// Routes agents' output changes to their session actors (one inotify watcher).
    pub output_watch: Arc<super::watch::OutputWatch>,
    /// Routes a step's notify effects to outbox rows and wakes the outbox after a commit.
    pub notifications: crate::notify::Notifications,
    /// Runs each session's runtime and workspace effects one batch after the other.
    pub lifecycle_order: LifecycleOrder,
}

/// Runs the effect batches that start or stop a session's agent or create or remove its
/// workspace one after the other, in the order they were committed, across actor
/// incarnations: a `restore` right after a `kill` must not start the agent in a worktree the
/// kill's clean-up is still removing (the agent then finds its working directory gone).
#[derive(Default)]
pub struct LifecycleOrder(std::sync::Mutex<HashMap<String, tokio::task::JoinHandle<()>>>);

impl LifecycleOrder {
    /// Spawns `work` to run once the session's previous batch given here has finished.
    pub fn run_after_previous(
        &self,
        session: &str,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let mut tails = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tails.retain(|_, h| !h.is_finished());
        let previous = tails.remove(session);
        let handle = tokio::spawn(async move {
            if let Some(p) = previous {
                // A batch that panicked is over as well.
                let _ = p.await;
            }
            work.await;
        });
        tails.insert(session.to_string(), handle);
    }
}

impl Fleet {
    /// The project called `name`.
    pub fn project(&self, name: &str) -> Option<&ProjectSpec> {
        self.projects.get(name)
    }

    /// Where a session's workspace goes.
    pub fn workspace_path(&self, project: &str, session: &str) -> PathBuf {
        self.home.join("worktrees").join(project).join(session)
    }

    /// The token an agent presents to report its own state: HMAC-SHA256(report key, id).
    pub fn report_token(&self, session: &str) -> String {
        use hmac::{Mac, SimpleHmac};
        match SimpleHmac::<sha2::Sha256>::new_from_slice(&self.report_key) {
            Ok(mut m) => {
                m.update(session.as_bytes());
                hex::encode(m.finalize().into_bytes())
            }
            Err(_) => String::new(),
        }
    }

    /// The API token of a project's orchestrator session.
    pub fn orchestrator_token(&self, project: &str) -> String {
        self.report_token(&format!("orchestrator:{project}"))
    }

    /// Checks a report token in constant time.
    pub fn check_report_token(&self, session: &str, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        let want = self.report_token(session);
        !want.is_empty() && bool::from(want.as_bytes().ct_eq(token.as_bytes()))
    }

    /// Where a session's prompt file goes.
    pub fn prompt_path(&self, session: &str) -> PathBuf {
        self.home.join("prompts").join(format!("{session}.md"))
    }
}

impl crate::read::EventSource for Journal {
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<crate::store::EventRecord>> {
        Journal::subscribe(self)
    }
}

impl Fleet {
    /// The read side over this fleet's store, journal, runtimes and configuration.
    pub fn read_model(&self) -> crate::read::ReadModel {
        let mut agents: Vec<String> = self.plugins.agents.keys().cloned().collect();
        agents.sort();
        crate::read::ReadModel::new(
            self.store.clone(),
            self.journal.clone(),
            self.plugins
                .runtimes
                .iter()
                .map(|(n, r)| (n.clone(), r.clone())),
            crate::read::Catalog {
                projects: self
                    .projects
                    .values()
                    .map(|p| (p.name.clone(), p.agent.clone()))
                    .collect(),
                agents,
                worktrees: self.home.join("worktrees"),
            },
        )
    }
}
