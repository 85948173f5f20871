//! The settings structs, one per config section, mirroring `config/default.yaml`.
//!
//! Every struct denies unknown fields so a typo fails start-up instead of being
//! silently ignored. Defaults live in `config/default.yaml`, not here; the
//! `#[serde(default)]`s below only cover entries of user-named maps (a project,
//! an agent, a reaction), which the defaults file cannot pre-fill.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::values::{
    null_as_default, AgentKind, EscalateAfter, HumanDuration, LogFormat, MergeMethod, NotifierKind,
    PermissionMode, Priority, ReactionAction, RuntimeKind, ScmKind, Secret, TrackerKind,
    WorkspaceKind,
};

/// `server:` — the HTTP listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on (an IP address or `localhost`).
    pub bind: String,
    /// Port to listen on; 0 picks a free one (tests).
    pub port: u16,
    /// Bearer token required on `/api/v1/*`. Mandatory when `bind` is not loopback,
    /// because the API can start processes on this machine.
    pub token: Option<Secret>,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// How long the HTTP edge waits for an actor's answer before replying 503.
    pub actor_timeout: HumanDuration,
    /// How long a client may take to send a request body: a slow or stalled body must not
    /// hold a connection (and a file descriptor) for ever.
    pub body_timeout: HumanDuration,
    /// Webhook requests in flight at once: they are unauthenticated until their body has been
    /// read and its signature checked, so they are capped apart from the API.
    pub max_webhooks_in_flight: usize,
    /// Budget for graceful shutdown.
    pub shutdown_timeout: HumanDuration,
    /// The `flotilla` executable agents' hooks run (`flotilla hook …`); `None` = this
    /// executable when it is `flotilla`.
    #[serde(default)]
    pub cli_path: Option<String>,
}

impl ServerSettings {
    /// Whether `bind` only accepts local connections (127.0.0.0/8, `::1`, `localhost`).
    pub fn is_loopback(&self) -> bool {
        let host = self.bind.trim();
        if host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The base URL a client on this machine uses to reach a server bound here on `port`
    /// (a wildcard bind is reached through loopback).
    pub fn local_url(&self, port: u16) -> String {
        let host = match self.bind.trim() {
            "0.0.0.0" | "" | "localhost" => "127.0.0.1".to_string(),
            "::" | "[::]" => "[::1]".to_string(),
            h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
            h => h.to_string(),
        };
        format!("http://{host}:{port}")
    }

    /// `host:port` for binding, with brackets around an IPv6 address.
    pub fn bind_address(&self) -> String {
        let host = self.bind.trim();
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// `cluster:` — several nodes on one PostgreSQL database (off while `node_id` is null).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// This node's name, unique among the nodes sharing the database; null = one node that
    /// owns everything (the default, and the only choice on SQLite).
    pub node_id: Option<String>,
    /// How long a lease lasts without renewal: a dead node's sessions are taken over after it.
    pub lease_ttl: HumanDuration,
    /// How often a node renews its leases (one query for all of them) and looks for expired
    /// ones to take over; well under `lease_ttl`.
    pub renew_interval: HumanDuration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            node_id: None,
            lease_ttl: HumanDuration::from_secs(15),
            renew_interval: HumanDuration::from_secs(5),
        }
    }
}

/// `database:` — where sessions and events are stored.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite:…` or `postgres://…`; `None` means the SQLite file in the data dir.
    pub url: Option<String>,
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password (postgres://user:pw@host/db).
        f.debug_struct("DatabaseSettings")
            .field("url", &self.url.as_deref().map(redact_url_password))
            .finish()
    }
}

/// Replaces the password of `scheme://user:password@host…` with `***`.
pub fn redact_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end + 3],
                &authority[..colon],
                &rest[at..]
            ),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// `log:` — log output.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A level or an `EnvFilter` directive list (`info,flotilla=debug`).
    pub level: String,
}

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
    pub sandbox: super::SandboxSettings,
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
            sandbox: super::SandboxSettings::default(),
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
    pub sandbox: super::SandboxSettings,
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

/// `reactions.<key>` — what happens when a session event fires (see
/// `REACTION_KEYS`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReactionSettings {
    /// `false` blocks every action except `notify`.
    #[serde(default = "default_true")]
    pub auto: bool,
    /// What to do.
    #[serde(default = "default_action")]
    pub action: ReactionAction,
    /// Message for the agent or the notification; `None` lets the service generate one.
    #[serde(default)]
    pub message: Option<String>,
    /// Notification priority (escalations default to urgent).
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Attempts before escalating; `None` = unlimited.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Escalate after this many attempts or this much time.
    #[serde(default)]
    pub escalate_after: Option<EscalateAfter>,
    /// How long the condition must last before the reaction triggers.
    #[serde(default)]
    pub threshold: Option<HumanDuration>,
    /// Include a fleet summary in the notification.
    #[serde(default)]
    pub include_summary: bool,
    /// Merge automatically when approved and green.
    #[serde(default)]
    pub auto_merge: bool,
    /// Merge method when merging.
    #[serde(default = "default_merge_method")]
    pub merge_method: MergeMethod,
}

fn default_true() -> bool {
    true
}

fn default_action() -> ReactionAction {
    ReactionAction::Notify
}

fn default_merge_method() -> MergeMethod {
    MergeMethod::Squash
}

impl Default for ReactionSettings {
    fn default() -> Self {
        Self {
            auto: true,
            action: ReactionAction::Notify,
            message: None,
            priority: None,
            retries: None,
            escalate_after: None,
            threshold: None,
            include_summary: false,
            auto_merge: false,
            merge_method: MergeMethod::Squash,
        }
    }
}

/// `projects.<name>.reactions.<key>` — a partial reaction; the fields given
/// replace those of the global reaction, the rest are inherited.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReactionOverride {
    /// Replaces `auto`.
    #[serde(default)]
    pub auto: Option<bool>,
    /// Replaces `action`.
    #[serde(default)]
    pub action: Option<ReactionAction>,
    /// Replaces `message`.
    #[serde(default)]
    pub message: Option<String>,
    /// Replaces `priority`.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Replaces `retries`.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Replaces `escalate_after`.
    #[serde(default)]
    pub escalate_after: Option<EscalateAfter>,
    /// Replaces `threshold`.
    #[serde(default)]
    pub threshold: Option<HumanDuration>,
    /// Replaces `include_summary`.
    #[serde(default)]
    pub include_summary: Option<bool>,
    /// Replaces `auto_merge`.
    #[serde(default)]
    pub auto_merge: Option<bool>,
    /// Replaces `merge_method`.
    #[serde(default)]
    pub merge_method: Option<MergeMethod>,
}

impl ReactionSettings {
    /// This reaction with the fields set in `o` replaced.
    pub fn merged(&self, o: &ReactionOverride) -> ReactionSettings {
        ReactionSettings {
            auto: o.auto.unwrap_or(self.auto),
            action: o.action.unwrap_or(self.action),
            message: o.message.clone().or_else(|| self.message.clone()),
            priority: o.priority.or(self.priority),
            retries: o.retries.or(self.retries),
            escalate_after: o.escalate_after.or(self.escalate_after),
            threshold: o.threshold.or(self.threshold),
            include_summary: o.include_summary.unwrap_or(self.include_summary),
            auto_merge: o.auto_merge.unwrap_or(self.auto_merge),
            merge_method: o.merge_method.unwrap_or(self.merge_method),
        }
    }
}

/// `github:` — GitHub API access and webhook verification.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubSettings {
    /// REST base URL.
    pub api_url: String,
    /// GraphQL endpoint.
    pub graphql_url: String,
    /// API token.
    pub token: Option<Secret>,
    /// Secret for `X-Hub-Signature-256` on `/webhooks/github`.
    pub webhook_secret: Option<Secret>,
    /// The login the chat bridge answers to in comments (`@login`); its own comments never
    /// trigger. `None` turns GitHub comments off as a chat platform.
    #[serde(default)]
    pub bot_login: Option<String>,
    /// How often the poller looks at each watched repository (the safety net under webhooks);
    /// `0s` turns polling off.
    pub poll_interval: HumanDuration,
    /// Every this many polls, every watched PR is re-read even if the repo looked unchanged
    /// (check runs do not bump a PR, and a webhook may have been lost).
    pub reconcile_every: u32,
    /// Time limit of one GitHub API request.
    pub timeout: HumanDuration,
    /// Check runs and status contexts that never block auto-merge or count as a CI failure:
    /// exact names, or patterns with `*` (`"codecov/*"`). Empty: every check counts, and
    /// GitHub's own roll-up state is trusted as well.
    #[serde(default)]
    pub ignore_checks: Vec<String>,
}

/// `slack:` — Slack Web API and Events API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSettings {
    /// Web API base URL.
    pub api_url: String,
    /// Bot token (`xoxb-…`).
    pub bot_token: Option<Secret>,
    /// Signing secret verifying `/webhooks/slack/events` and `/webhooks/slack/commands`.
    pub signing_secret: Option<Secret>,
    /// Channel messages are taken only when they mention the bot (`app_mention`); direct
    /// messages always. `false`: every message in a thread is taken as well.
    #[serde(default = "default_true")]
    pub require_mention: bool,
    /// The one slash command a team registers for Flotilla (`/flotilla status`): its text is
    /// read as a message typed to the bot. Any other command reaching
    /// `/webhooks/slack/commands` is taken as typed (`/status`, `/spawn …`, a template).
    #[serde(default = "default_slack_slash_command")]
    pub slash_command: String,
}

fn default_slack_slash_command() -> String {
    "/flotilla".to_string()
}

/// `telegram:` — Telegram Bot API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramSettings {
    /// Bot API base URL.
    pub api_url: String,
    /// Bot token.
    pub bot_token: Option<Secret>,
    /// Expected `X-Telegram-Bot-Api-Secret-Token` on `/webhooks/telegram`.
    pub secret_token: Option<Secret>,
    /// Public HTTPS URL of `/webhooks/telegram`. When set (with `secret_token`), Flotilla
    /// registers it with `setWebhook` at start and removes it with `deleteWebhook` at stop;
    /// without a `secret_token` the bot long-polls and any webhook left is deleted first.
    #[serde(default)]
    pub webhook_url: Option<String>,
}

/// `discord:` — Discord REST, gateway and interactions.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordSettings {
    /// REST base URL.
    pub api_url: String,
    /// Gateway WebSocket URL.
    pub gateway_url: String,
    /// Bot token.
    pub bot_token: Option<Secret>,
    /// Application public key (hex, Ed25519) verifying `/webhooks/discord/interactions`.
    pub public_key: Option<String>,
}

/// `jira:` — Jira Cloud REST API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JiraSettings {
    /// Site URL, e.g. `https://acme.atlassian.net`.
    pub base_url: Option<String>,
    /// Account email for basic auth.
    pub email: Option<String>,
    /// API token for basic auth.
    pub api_token: Option<Secret>,
    /// Secret verifying `/webhooks/jira`.
    pub webhook_secret: Option<Secret>,
    /// The bot's Atlassian account id: comments mentioning it start a chat turn, its own
    /// comments never do. `None` turns Jira comments off as a chat platform.
    #[serde(default)]
    pub bot_account_id: Option<String>,
    /// Which repository a Jira chat conversation works in (see [`JiraRepositories`]).
    #[serde(default)]
    pub repositories: JiraRepositories,
}

/// `jira.repositories` — the repository a Jira conversation gets by itself, from its issue.
/// Strategies in this order, the first that applies wins: `components` (the issue's
/// components, in the order), `labels`, `projects` (the project key), a repository
/// URL in the description on one of `description_hosts`, then `default`. Map keys
/// match without case; values are clone URLs (`https://…`, `git@github.com:…`, `file://…`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JiraRepositories {
    /// Component name → clone URL.
    #[serde(default)]
    pub components: std::collections::BTreeMap<String, String>,
    /// Label → clone URL.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Project key (`ABC` of `ABC-123`) → clone URL.
    #[serde(default)]
    pub projects: std::collections::BTreeMap<String, String>,
    /// Hosts whose `https://<host>/<owner>/<repo>` URLs in a description are taken as the
    /// repository (empty: the description is not read).
    #[serde(default)]
    pub description_hosts: Vec<String>,
    /// The repository when nothing else applies (`None`: the conversation asks for one).
    #[serde(default)]
    pub default: Option<String>,
}

/// `linear:` — Linear GraphQL API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearSettings {
    /// GraphQL endpoint.
    pub api_url: String,
    /// API key.
    pub api_key: Option<Secret>,
    /// Secret verifying `/webhooks/linear`.
    pub webhook_secret: Option<Secret>,
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

/// `notifiers.<name>` — a named notification target. `Debug` hides the URL: Slack and
/// Discord webhook URLs are credentials.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierSettings {
    /// What kind of notifier.
    pub kind: NotifierKind,
    /// Target URL (webhook, or a Slack/Discord incoming webhook).
    #[serde(default)]
    pub url: Option<String>,
    /// HMAC secret for `X-Flotilla-Signature-256` (webhook).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Channel id (Slack, Discord).
    #[serde(default)]
    pub channel: Option<String>,
    /// Chat id (Telegram).
    #[serde(default)]
    pub chat_id: Option<String>,
}

impl fmt::Debug for NotifierSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifierSettings")
            .field("kind", &self.kind)
            .field("url", &self.url.as_ref().map(|_| "***"))
            .field("secret", &self.secret)
            .field("channel", &self.channel)
            .field("chat_id", &self.chat_id)
            .finish()
    }
}

/// `routing:` — notifier names per priority.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSettings {
    /// Notifiers for urgent events.
    #[serde(default, deserialize_with = "null_as_default")]
    pub urgent: Vec<String>,
    /// Notifiers for events needing action.
    #[serde(default, deserialize_with = "null_as_default")]
    pub action: Vec<String>,
    /// Notifiers for warnings.
    #[serde(default, deserialize_with = "null_as_default")]
    pub warning: Vec<String>,
    /// Notifiers for informational events.
    #[serde(default, deserialize_with = "null_as_default")]
    pub info: Vec<String>,
}

impl RoutingSettings {
    /// The list configured for `priority` (possibly empty).
    pub fn for_priority(&self, priority: Priority) -> &[String] {
        match priority {
            Priority::Urgent => &self.urgent,
            Priority::Action => &self.action,
            Priority::Warning => &self.warning,
            Priority::Info => &self.info,
        }
    }
}

/// `notifications:` — the outbox: deduplication, delivery retries and the per-notifier rate
/// limit.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsSettings {
    /// The same session, event, reaction and priority within this window is one notification
    /// per notifier (a question for a human counts as its own reaction: each new one pages);
    /// `0s` turns deduplication off.
    pub dedupe_window: HumanDuration,
    /// Delivery attempts before a notification is dead-lettered (status `failed`).
    pub max_attempts: u32,
    /// Delay before the first retry; doubled on each further attempt.
    pub backoff_initial: HumanDuration,
    /// Longest delay between two attempts.
    pub backoff_max: HumanDuration,
    /// Longest `Retry-After` (429) honoured; a longer one counts as this.
    pub max_retry_after: HumanDuration,
    /// How often the outbox looks for due notifications (it is also woken after each commit).
    pub poll_interval: HumanDuration,
    /// Time limit of one delivery (HTTP request or desktop command).
    pub timeout: HumanDuration,
    /// Deliveries in flight at once per notifier.
    pub concurrency: usize,
    /// Notifications read from the outbox per poll.
    pub batch: usize,
    /// Per-notifier rate limit; what exceeds it is sent as one digest when it frees up.
    pub rate_limit: RateLimitSettings,
}

/// `notifications.rate_limit:` — messages per notifier per window.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Messages (single notifications or digests) a notifier may send per `window`.
    pub max: u32,
    /// The sliding window.
    pub window: HumanDuration,
}

/// `chat:` — conversations with the assistant over chat platforms.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatSettings {
    /// Conversations whose assistant may run at the same time.
    pub max_concurrent: usize,
    /// Longest a single assistant turn may take.
    pub turn_timeout: HumanDuration,
    /// Who may talk to Flotilla.
    pub allow: ChatAllow,
    /// The assistant conversations talk to.
    #[serde(default)]
    pub assistant: ChatAssistantSettings,
    /// Root of the conversations' checkouts (`/clone`, `/repos`, `/setcwd`); every path a
    /// command takes must stay inside it. Default `$FLOTILLA_HOME/chat/workspace`.
    #[serde(default)]
    pub workspace: Option<std::path::PathBuf>,
    /// Where issue/PR worktrees (`issue-N`, `pr-N`) go. Default `$FLOTILLA_HOME/chat/worktrees`.
    #[serde(default)]
    pub worktrees: Option<std::path::PathBuf>,
    /// Reply mode per platform name (`stream` or `batch`); unlisted platforms use `batch`.
    #[serde(default)]
    pub reply_modes: std::collections::BTreeMap<String, ChatReplyMode>,
    /// Least time between two edits of a streamed reply (platform rate limits).
    #[serde(default = "default_stream_interval")]
    pub stream_interval: HumanDuration,
    /// A conversation actor with nothing to do stops after this long (it comes back from the
    /// store on the next message).
    #[serde(default = "default_idle_after")]
    pub idle_after: HumanDuration,
    /// The name the bot uses for itself ("<name> is on the case...").
    #[serde(default = "default_bot_name")]
    pub bot_name: String,
    /// Most one conversation may spend, in US dollars (the sum of its turns' costs, as the
    /// assistant reported them or priced from `pricing:`). Once reached, further assistant
    /// turns are refused with a reply saying so; commands still work. `None`: no limit.
    #[serde(default)]
    pub budget_usd: Option<f64>,
    /// Earlier thread messages (Discord, Slack) given to a conversation's first turn as
    /// context, the newest ones kept; 0 turns it off.
    #[serde(default = "default_thread_history")]
    pub thread_history: usize,
    /// Serve the HTTP test platform (`POST /api/v1/chat/test/messages`,
    /// `GET /api/v1/chat/test/replies`): for end-to-end tests only.
    #[serde(default)]
    pub test_adapter: bool,
}

fn default_stream_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(1))
}

fn default_thread_history() -> usize {
    20
}

fn default_idle_after() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(600))
}

fn default_bot_name() -> String {
    "Flotilla".into()
}

/// How a turn's answer reaches the chat.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ChatReplyMode {
    /// One message, edited as text arrives (throttled by `chat.stream_interval`).
    Stream,
    /// A notice, then the final answer with tool calls summarized.
    #[default]
    Batch,
}

/// `chat.assistant:` — which assistant answers and how it runs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatAssistantSettings {
    /// `claude` (`claude -p … --output-format stream-json`), `codex` (`codex exec --json`)
    /// or `command` (any argv speaking the JSON-lines protocol of `plugins::assistants`).
    #[serde(default = "default_assistant_kind")]
    pub kind: String,
    /// The argv: the program for `claude`/`codex` (default the kind's name), the whole
    /// command for `command`.
    #[serde(default)]
    pub command: Vec<String>,
    /// Permission mode of every chat turn (never bypass unless asked): `auto-edit` (the
    /// default: Claude's `acceptEdits`, Codex's `workspace-write` sandbox — turns edit files in
    /// the conversation's directory, as `/implement` or `/plan` need, while commands that
    /// change things are refused), `default` or `suggest` (read-only turns: Claude headless
    /// refuses every edit, and the reply names what it refused), `permissionless` (everything,
    /// unasked). A value set here is always honoured.
    #[serde(default = "default_assistant_permission_mode")]
    pub permission_mode: PermissionMode,
    /// Environment variables passed through from Flotilla's environment besides `PATH`,
    /// `HOME`, `LANG` (e.g. `ANTHROPIC_API_KEY`). Nothing else reaches the assistant.
    #[serde(default, deserialize_with = "null_as_default")]
    pub env_passthrough: Vec<String>,
    /// Extra variables set for the assistant.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// The model turns run on (`--model`); also names the model a turn's tokens are priced
    /// at when the assistant reports none (Codex `exec` does not). `None`: the CLI's default.
    #[serde(default)]
    pub model: Option<String>,
}

/// `auto-edit`: a headless turn cannot ask, so `default` would refuse every edit a command
/// such as `/implement` exists to make (Claude prints them as `permission_denials` and ends
/// "successfully"). `auto-edit` lets edits happen and still refuses risky commands.
fn default_assistant_permission_mode() -> PermissionMode {
    PermissionMode::AutoEdit
}

fn default_assistant_kind() -> String {
    "claude".into()
}

impl Default for ChatAssistantSettings {
    fn default() -> Self {
        ChatAssistantSettings {
            kind: default_assistant_kind(),
            command: Vec::new(),
            permission_mode: default_assistant_permission_mode(),
            env_passthrough: Vec::new(),
            env: Default::default(),
            model: None,
        }
    }
}

/// `chat.allow:` — user ids allowed per platform; an empty list allows nobody.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatAllow {
    /// Telegram user ids.
    #[serde(default, deserialize_with = "null_as_default")]
    pub telegram: Vec<String>,
    /// Discord user ids.
    #[serde(default, deserialize_with = "null_as_default")]
    pub discord: Vec<String>,
    /// Slack user ids.
    #[serde(default, deserialize_with = "null_as_default")]
    pub slack: Vec<String>,
    /// GitHub logins.
    #[serde(default, deserialize_with = "null_as_default")]
    pub github: Vec<String>,
    /// Jira account ids.
    #[serde(default, deserialize_with = "null_as_default")]
    pub jira: Vec<String>,
    /// Authors allowed on the HTTP test platform (`chat.test_adapter`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub test: Vec<String>,
}

impl ChatAllow {
    /// The allowlist of `platform` (empty for an unknown platform: nobody).
    pub fn for_platform(&self, platform: &str) -> &[String] {
        match platform {
            "telegram" => &self.telegram,
            "discord" => &self.discord,
            "slack" => &self.slack,
            "github" => &self.github,
            "jira" => &self.jira,
            "test" => &self.test,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_database_password() {
        assert_eq!(
            redact_url_password("postgres://flo:s3cret@db:5432/flotilla?sslmode=require"),
            "postgres://flo:***@db:5432/flotilla?sslmode=require"
        );
        assert_eq!(
            redact_url_password("sqlite:///tmp/x.db"),
            "sqlite:///tmp/x.db"
        );
        let d = DatabaseSettings {
            url: Some("postgres://u:pw@h/db".into()),
        };
        assert!(!format!("{d:?}").contains("pw"));
    }

    #[test]
    fn notifier_debug_hides_the_url() {
        let n = NotifierSettings {
            kind: NotifierKind::Slack,
            url: Some("https://hooks.slack.com/services/T0/B0/s3cret".into()),
            secret: None,
            channel: None,
            chat_id: None,
        };
        assert!(!format!("{n:?}").contains("s3cret"));
    }

    #[test]
    fn loopback_detection() {
        let mut s = ServerSettings {
            bind: "127.0.0.1".into(),
            port: 1,
            token: None,
            max_body_bytes: 1,
            actor_timeout: HumanDuration::default(),
            body_timeout: HumanDuration::default(),
            max_webhooks_in_flight: 1,
            shutdown_timeout: HumanDuration::default(),
            cli_path: None,
        };
        assert!(s.is_loopback());
        for (bind, loopback) in [
            ("::1", true),
            ("[::1]", true),
            ("localhost", true),
            ("0.0.0.0", false),
            ("192.168.1.2", false),
            ("example.com", false),
        ] {
            s.bind = bind.into();
            assert_eq!(s.is_loopback(), loopback, "{bind}");
        }
        s.bind = "::1".into();
        assert_eq!(s.bind_address(), "[::1]:1");
    }
}
