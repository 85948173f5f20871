//! `defaults:`, `lifecycle:`, `agents:`, `projects:` and `pricing:`: what a session runs, where,
//! within which budget, and which issues start one by themselves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{default_true, ReactionOverride, RoutingSettings};
use crate::config::values::{
    null_as_default, AgentKind, HumanDuration, PermissionMode, RuntimeKind, ScmKind, TrackerKind,
    WorkspaceKind,
};

/// `defaults:` — what a project uses unless it says otherwise.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsSettings {
    /// Agent name: a built-in kind or a key of `agents:`.
    pub agent: String,
    /// Runtime for agent processes.
    pub runtime: RuntimeKind,
    /// How session workspaces are created.
    pub workspace: WorkspaceKind,
    /// Notifiers used for a priority whose `routing` list is empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub notifiers: Vec<String>,
}

/// `lifecycle:` — session timing knobs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleSettings {
    /// First port of the per-session port blocks (`projects.<name>.setup.ports` each).
    #[serde(default = "default_port_base")]
    pub port_base: u16,
    /// A session still spawning after this long is errored.
    pub spawn_timeout: HumanDuration,
    /// After a merge, how long an active agent may keep its workspace before cleanup.
    pub merge_grace: HumanDuration,
    /// Interval of the periodic check of every live session's runtime (is the agent alive?).
    pub reconcile_interval: HumanDuration,
    /// Actor restarts allowed before the session is marked failed.
    pub max_restarts: u32,
    /// A session stuck or waiting for input this long is stopped (errored, `abandoned`).
    #[serde(default = "default_abandon_after")]
    pub abandon_after: HumanDuration,
    /// Lines `GET /api/v1/sessions/{id}/output` answers when the request names none.
    pub output_lines: usize,
}

/// `agents.<name>` — a named agent configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// Which CLI this is.
    pub kind: AgentKind,
    /// Argument vector. Required for `kind: command`; for other kinds, replaces
    /// the default executable (e.g. a wrapper script).
    #[serde(default, deserialize_with = "null_as_default")]
    pub command: Vec<String>,
    /// Model name passed to the CLI.
    #[serde(default)]
    pub model: Option<String>,
    /// Permission mode passed to the CLI.
    #[serde(default = "default_permission_mode")]
    pub permission_mode: PermissionMode,
    /// Extra arguments appended to the command line.
    #[serde(default, deserialize_with = "null_as_default")]
    pub args: Vec<String>,
    /// Extra environment variables for the agent process.
    #[serde(default, deserialize_with = "null_as_default")]
    pub env: BTreeMap<String, String>,
    /// Sandbox settings for this agent (over the project's, field by field).
    #[serde(default, deserialize_with = "null_as_default")]
    pub sandbox: crate::config::SandboxSettings,
}

fn default_permission_mode() -> PermissionMode {
    PermissionMode::Default
}

impl AgentSettings {
    /// Settings of a built-in kind used by name without an `agents:` entry.
    pub fn built_in(kind: AgentKind) -> Self {
        Self {
            kind,
            command: Vec::new(),
            model: None,
            permission_mode: PermissionMode::Default,
            args: Vec::new(),
            env: BTreeMap::new(),
            sandbox: crate::config::SandboxSettings::default(),
        }
    }
}

/// `projects.<name>` — a repository Flotilla runs sessions in.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettings {
    /// Local clone. Relative paths are resolved against the config file's
    /// directory at load time, so this is absolute afterwards.
    pub repo: PathBuf,
    /// Remote that branches are pushed to.
    #[serde(default = "default_remote")]
    pub remote: String,
    /// `owner/name` on GitHub.
    #[serde(default)]
    pub github_repo: Option<String>,
    /// Base branch for new work and PRs.
    #[serde(default = "default_branch")]
    pub default_branch: String,
    /// Prefix of session ids (`<prefix>-1`); defaults to the project name.
    #[serde(default)]
    pub session_prefix: Option<String>,
    /// Overrides `defaults.agent`.
    #[serde(default)]
    pub agent: Option<String>,
    /// Overrides `defaults.runtime`.
    #[serde(default)]
    pub runtime: Option<RuntimeKind>,
    /// Overrides `defaults.workspace`.
    #[serde(default)]
    pub workspace: Option<WorkspaceKind>,
    /// Run this project's sessions on a host under `hosts:` (its name, or `auto` for the
    /// least-loaded one) instead of this machine.
    #[serde(default)]
    pub host: Option<String>,
    /// Where issues come from.
    #[serde(default)]
    pub tracker: Option<TrackerKind>,
    /// Where PRs live.
    #[serde(default)]
    pub scm: Option<ScmKind>,
    /// Extra agent instructions; relative to the repo root.
    #[serde(default)]
    pub rules_file: Option<PathBuf>,
    /// Partial overrides of the global `reactions:` table, merged field by field.
    #[serde(default, deserialize_with = "null_as_default")]
    pub reactions: BTreeMap<String, ReactionOverride>,
    /// How a new workspace is prepared before the agent starts.
    #[serde(default, deserialize_with = "null_as_default")]
    pub setup: WorkspaceSetup,
    /// Delete a session's local branch when it is killed (the default keeps it).
    #[serde(default)]
    pub delete_branch_on_kill: bool,
    /// Spend limits per session and for the whole project.
    #[serde(default)]
    pub budget: Option<BudgetSettings>,
    /// Agent of the orchestrator session (`flotilla start`); default: the project's agent.
    #[serde(default)]
    pub orchestrator_agent: Option<String>,
    /// Notifier names per priority for this project's sessions; a priority left empty uses
    /// the global `routing` (and then `defaults.notifiers`).
    #[serde(default)]
    pub routing: Option<RoutingSettings>,
    /// Whether and how this project's agents run in a sandbox (agents may override).
    #[serde(default, deserialize_with = "null_as_default")]
    pub sandbox: crate::config::SandboxSettings,
    /// Tracker issues that start a session by themselves (GitHub `issues` webhooks and
    /// polling, `POST /webhooks/linear`, `POST /webhooks/jira`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub intake: IntakeSettings,
    /// What a session started from an issue writes back to it when its PR opens and merges.
    #[serde(default, deserialize_with = "null_as_default")]
    pub writeback: WritebackSettings,
}

/// `projects.<name>.writeback` — the tracker hears about the session's PR: a comment with
/// the PR link and, per stage, labels (GitHub) or a workflow state (Linear, Jira).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WritebackSettings {
    /// Comment on the issue with the PR link when the PR opens and when it merges.
    #[serde(default = "default_true")]
    pub comment: bool,
    /// When the session's PR opens.
    #[serde(default, deserialize_with = "null_as_default")]
    pub opened: WritebackStage,
    /// When the session's PR merges.
    #[serde(default, deserialize_with = "null_as_default")]
    pub merged: WritebackStage,
}

impl Default for WritebackSettings {
    fn default() -> Self {
        WritebackSettings {
            comment: true,
            opened: WritebackStage::default(),
            merged: WritebackStage::default(),
        }
    }
}

/// `projects.<name>.writeback.{opened,merged}` — how the issue moves at one stage.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WritebackStage {
    /// GitHub: labels added to the issue.
    #[serde(default)]
    pub add_labels: Vec<String>,
    /// GitHub: labels taken off the issue (one it does not carry is fine).
    #[serde(default)]
    pub remove_labels: Vec<String>,
    /// Linear and Jira: the workflow state the issue moves to, by name (`In Review`) or
    /// id (Linear state id, Jira transition id).
    #[serde(default)]
    pub state: Option<String>,
}

/// `projects.<name>.setup` — preparing a fresh workspace.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSetup {
    /// Git-ignored files copied from the repo into each workspace (`.env`, …); relative paths.
    #[serde(default)]
    pub copy: Vec<PathBuf>,
    /// Paths symlinked from the repo into each workspace (e.g. `node_modules`); relative paths.
    #[serde(default)]
    pub symlinks: Vec<PathBuf>,
    /// Commands (argument vectors, no shell) run in the workspace after it is created.
    #[serde(default)]
    pub post_create: Vec<Vec<String>>,
    /// Limit for each `post_create` command.
    #[serde(default = "default_post_create_timeout")]
    pub post_create_timeout: HumanDuration,
    /// Ports reserved per session (`FLOTILLA_PORT_BASE` .. +ports); 0 disables.
    #[serde(default = "default_ports")]
    pub ports: u16,
}

impl Default for WorkspaceSetup {
    fn default() -> Self {
        WorkspaceSetup {
            copy: Vec::new(),
            symlinks: Vec::new(),
            post_create: Vec::new(),
            post_create_timeout: default_post_create_timeout(),
            ports: default_ports(),
        }
    }
}

fn default_post_create_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(300))
}

fn default_ports() -> u16 {
    10
}

/// `projects.<name>.budget` — what a session or project may spend.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSettings {
    /// Cost limit per session, in US dollars.
    #[serde(default)]
    pub session_usd: Option<f64>,
    /// Token limit per session (input + output).
    #[serde(default)]
    pub session_tokens: Option<u64>,
    /// Cost limit over all of the project's sessions, in US dollars.
    #[serde(default)]
    pub project_usd: Option<f64>,
    /// What happens when a limit is crossed: `stop` the agent, or `escalate` to a human.
    #[serde(default)]
    pub action: BudgetAction,
}

/// `pricing.<model>` — what one model (or `*` glob of models) costs, in US dollars per
/// million tokens. Used for agents and chat turns that report tokens but no cost.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriceSettings {
    /// Input tokens not served from a prompt cache.
    pub input: f64,
    /// Output tokens (reasoning included).
    pub output: f64,
    /// Prompt-cache reads; default: the input price.
    #[serde(default)]
    pub cache_read: Option<f64>,
    /// Prompt-cache writes; default: the input price.
    #[serde(default)]
    pub cache_write: Option<f64>,
}

/// US dollars per million tokens, per kind of token (what it costs: `crate::pricing`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Input tokens not served from a prompt cache.
    pub input: f64,
    /// Output tokens (reasoning included).
    pub output: f64,
    /// Input tokens read from a prompt cache.
    pub cache_read: f64,
    /// Input tokens written to a prompt cache.
    pub cache_write: f64,
}

impl PriceSettings {
    /// The typed price (cache prices defaulted).
    pub fn price(&self) -> Price {
        Price {
            input: self.input,
            output: self.output,
            cache_read: self.cache_read.unwrap_or(self.input),
            cache_write: self.cache_write.unwrap_or(self.input),
        }
    }
}

/// What crossing a budget does.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BudgetAction {
    /// Kill the session (reason `budget_exceeded`) and tell a human.
    #[default]
    Stop,
    /// Tell a human, keep going.
    Escalate,
}

fn default_abandon_after() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(24 * 3600))
}

fn default_port_base() -> u16 {
    20000
}

fn default_remote() -> String {
    "origin".to_string()
}

fn default_branch() -> String {
    "main".to_string()
}

impl ProjectSettings {
    /// The agent name this project uses (`agent` or `defaults.agent`).
    pub fn agent<'a>(&'a self, defaults: &'a DefaultsSettings) -> &'a str {
        self.agent.as_deref().unwrap_or(&defaults.agent)
    }

    /// The runtime this project uses (`runtime` or `defaults.runtime`).
    pub fn runtime(&self, defaults: &DefaultsSettings) -> RuntimeKind {
        self.runtime.unwrap_or(defaults.runtime)
    }

    /// The workspace kind this project uses (`workspace` or `defaults.workspace`).
    pub fn workspace(&self, defaults: &DefaultsSettings) -> WorkspaceKind {
        self.workspace.unwrap_or(defaults.workspace)
    }

    /// `rules_file` as a path (relative ones joined onto `repo`).
    pub fn rules_path(&self) -> Option<PathBuf> {
        self.rules_file
            .as_deref()
            .map(|p| join_relative(&self.repo, p))
    }
}

/// `base.join(path)` unless `path` is absolute.
pub(crate) fn join_relative(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// `projects.<name>.intake` — tracker issues that start a session by themselves.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeSettings {
    /// An issue given this label (matched without case) starts one session, once per issue.
    /// `None`: no intake.
    #[serde(default)]
    pub label: Option<String>,
    /// Issues assigned to this user start a session too (matched without case): GitHub
    /// login, Jira account id, display name or email, Linear user id or name. `None`: no
    /// intake by assignee.
    #[serde(default)]
    pub assignee: Option<String>,
}
