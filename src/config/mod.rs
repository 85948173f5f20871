//! Configuration: the [`Settings`] tree, how it is loaded and how it is checked.
//!
//! Layers, last wins: `config/default.yaml` (compiled in, so the binary runs with
//! no files) → the user file (`--config PATH`, else `$FLOTILLA_CONFIG`, else
//! `./flotilla.yaml` if present) → environment variables `FLOTILLA__SECTION__KEY`.
//! `${ENV_VAR}` references in string values are then resolved.
//!
//! Layout:
//! - [`values`]: value types — [`Secret`], [`HumanDuration`], [`EscalateAfter`], closed enums.
//! - [`sections`]: one struct per config section (`ServerSettings`, `ProjectSettings`, …).
//! - [`mod@load`]: [`load()`] / [`load_with`]: layering, `${VAR}` resolution, key-naming errors.
//! - [`validate`]: [`Settings::validate`], every semantic problem at once.
//! - [`error`]: [`ConfigError`] and [`ConfigIssue`] (`key: reason`, exit code 2).
//! - [`init`]: `flotilla init` — detect the repository and write a commented `flotilla.yaml`.
//!
//! This module reads files and the environment only while loading; it never
//! starts anything and holds no global state.

pub mod error;
pub mod hosts;
pub mod init;
pub mod load;
pub mod sandbox;
pub mod sections;
pub mod validate;
pub mod values;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use error::{ConfigError, ConfigIssue};
pub use load::{data_dir, load, load_with, LoadOptions, DEFAULT_CONFIG_YAML};
pub use sandbox::{Sandbox, SandboxLimits, SandboxMount, SandboxNetwork, SandboxSettings};
pub use sections::{
    AgentSettings, BudgetAction, BudgetSettings, ChatAllow, ChatAssistantSettings, ChatReplyMode,
    ChatSettings, ClusterSettings, DatabaseSettings, DefaultsSettings, DiscordSettings,
    GithubSettings, JiraRepositories, JiraSettings, LifecycleSettings, LinearSettings, LogSettings,
    NotificationsSettings, NotifierSettings, Price, PriceSettings, ProjectSettings,
    RateLimitSettings, ReactionOverride, ReactionSettings, RoutingSettings, ServerSettings,
    SlackSettings, TelegramSettings, WorkspaceSetup, WritebackSettings, WritebackStage,
};
pub use values::{
    AgentKind, EscalateAfter, HumanDuration, LogFormat, MergeMethod, NotifierKind, PermissionMode,
    Priority, ReactionAction, RuntimeKind, ScmKind, Secret, TrackerKind, WorkspaceKind,
};

use values::null_as_default;

/// The reaction keys Flotilla knows (agent-orchestrator §2). `reactions:` and
/// `projects.<name>.reactions:` accept only these.
pub const REACTION_KEYS: &[&str] = &[
    "ci-failed",
    "changes-requested",
    "bugbot-comments",
    "reviewer-comments",
    "merge-conflicts",
    "approved-and-green",
    "agent-stuck",
    "agent-needs-input",
    "agent-exited",
    "pr-closed",
    "all-complete",
    "agent-idle",
];

/// The whole configuration. Obtain it with [`load()`] / [`load_with`], then call
/// [`Settings::validate`] before using it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// HTTP listener.
    pub server: ServerSettings,
    /// Session store.
    pub database: DatabaseSettings,
    /// Several nodes on one PostgreSQL database.
    #[serde(default)]
    pub cluster: ClusterSettings,
    /// Log output.
    pub log: LogSettings,
    /// Project defaults.
    pub defaults: DefaultsSettings,
    /// Session timing.
    pub lifecycle: LifecycleSettings,
    /// Named agents; built-in kinds need no entry.
    #[serde(default, deserialize_with = "null_as_default")]
    pub agents: BTreeMap<String, AgentSettings>,
    /// Projects by name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub projects: BTreeMap<String, ProjectSettings>,
    /// Remote hosts agents may run on over SSH, by name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub hosts: BTreeMap<String, crate::config::hosts::HostSettings>,
    /// Global reaction table, keyed by [`REACTION_KEYS`].
    #[serde(default, deserialize_with = "null_as_default")]
    pub reactions: BTreeMap<String, ReactionSettings>,
    /// GitHub access.
    pub github: GithubSettings,
    /// Slack access.
    pub slack: SlackSettings,
    /// Telegram access.
    pub telegram: TelegramSettings,
    /// Discord access.
    pub discord: DiscordSettings,
    /// Jira access.
    pub jira: JiraSettings,
    /// Linear access.
    pub linear: LinearSettings,
    /// Named notifiers.
    #[serde(default, deserialize_with = "null_as_default")]
    pub notifiers: BTreeMap<String, NotifierSettings>,
    /// Notifier names per priority.
    pub routing: RoutingSettings,
    /// The notification outbox.
    pub notifications: NotificationsSettings,
    /// Chat conversations.
    pub chat: ChatSettings,
    /// Prices per model (name or `*` glob) for usage reported without a cost; over the
    /// built-in list prices.
    #[serde(default, deserialize_with = "null_as_default")]
    pub pricing: BTreeMap<String, PriceSettings>,
    /// The user's config file these settings were read from (hidden from sandboxed agents).
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
}

/// A resolved agent: its name (as used in config and the API) and its settings.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    /// The name it was looked up by (`claude-code`, `scripted`, …).
    pub name: String,
    /// Its settings; for a built-in kind without an entry, the defaults of that kind.
    pub settings: AgentSettings,
}

impl AgentSpec {
    /// Which CLI this agent is.
    pub fn kind(&self) -> AgentKind {
        self.settings.kind
    }
}

impl Settings {
    /// The data directory: `$FLOTILLA_HOME` from `env`, else `~/.flotilla`.
    pub fn data_dir(env: &HashMap<String, String>) -> PathBuf {
        load::data_dir_with(env)
    }

    /// The store URL: `database.url` if set, else `sqlite://{data_dir}/flotilla.db`.
    pub fn database_url(&self, data_dir: &Path) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", data_dir.join("flotilla.db").display()),
        }
    }

    /// The project called `name`.
    pub fn project(&self, name: &str) -> Option<&ProjectSettings> {
        self.projects.get(name)
    }

    /// Prefix of session ids in `project`: its `session_prefix`, else its name.
    pub fn session_prefix(&self, project: &str) -> String {
        self.project(project)
            .and_then(|p| p.session_prefix.clone())
            .unwrap_or_else(|| project.to_string())
    }

    /// The reactions in force for `project`: the global table with the project's
    /// overrides merged field by field. An unknown project gets the global table.
    pub fn reactions_for(&self, project: &str) -> BTreeMap<String, ReactionSettings> {
        let mut table = self.reactions.clone();
        if let Some(p) = self.project(project) {
            for (key, o) in &p.reactions {
                let merged = table.get(key).cloned().unwrap_or_default().merged(o);
                table.insert(key.clone(), merged);
            }
        }
        table
    }

    /// The agent called `name`: an `agents:` entry, else a built-in kind with
    /// default settings; `None` if neither.
    pub fn agent(&self, name: &str) -> Option<AgentSpec> {
        let settings = match self.agents.get(name) {
            Some(s) => s.clone(),
            None => AgentSettings::built_in(AgentKind::built_in(name)?),
        };
        Some(AgentSpec {
            name: name.to_string(),
            settings,
        })
    }

    /// The agent `project` uses (its `agent`, else `defaults.agent`); `None`
    /// for an unknown project or an unresolvable name (which `validate` reports).
    pub fn project_agent(&self, project: &str) -> Option<AgentSpec> {
        let p = self.project(project)?;
        self.agent(p.agent(&self.defaults))
    }

    /// Notifier names for `priority`: `routing.<priority>`, or `defaults.notifiers`
    /// when that list is empty.
    pub fn notifiers_for(&self, priority: Priority) -> &[String] {
        let routed = self.routing.for_priority(priority);
        if routed.is_empty() {
            &self.defaults.notifiers
        } else {
            routed
        }
    }

    /// Notifier names for `priority` in `project`: `projects.<name>.routing.<priority>`, else
    /// [`Settings::notifiers_for`]. An unknown project gets the global route.
    pub fn project_notifiers_for(&self, project: &str, priority: Priority) -> &[String] {
        let own = self
            .project(project)
            .and_then(|p| p.routing.as_ref())
            .map(|r| r.for_priority(priority))
            .unwrap_or_default();
        if own.is_empty() {
            self.notifiers_for(priority)
        } else {
            own
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::tests::{bare_opts, settings_from};

    #[test]
    fn helpers_resolve_defaults_and_overrides() {
        let s = settings_from(
            r#"
agents:
  scripted: { kind: command, command: ["./agent.sh"] }
projects:
  demo:
    repo: /tmp/demo
    agent: scripted
    runtime: process
    reactions:
      ci-failed: { retries: 5, message: "fix CI" }
      agent-stuck: { priority: warning }
  other: { repo: /tmp/other, session_prefix: oth }
"#,
        );
        let demo = s.project("demo").unwrap();
        assert_eq!(demo.agent(&s.defaults), "scripted");
        assert_eq!(demo.runtime(&s.defaults), RuntimeKind::Process);
        assert_eq!(demo.workspace(&s.defaults), WorkspaceKind::Worktree);
        assert_eq!(s.session_prefix("demo"), "demo");
        assert_eq!(s.session_prefix("other"), "oth");

        let r = s.reactions_for("demo");
        let ci = &r["ci-failed"];
        assert_eq!(ci.retries, Some(5));
        assert_eq!(ci.message.as_deref(), Some("fix CI"));
        // Inherited from the global table.
        assert_eq!(ci.action, ReactionAction::SendToAgent);
        assert_eq!(ci.escalate_after, Some(EscalateAfter::Attempts(2)));
        assert_eq!(r["agent-stuck"].priority, Some(Priority::Warning));
        assert_eq!(
            r["agent-stuck"].threshold.map(HumanDuration::get),
            Some(std::time::Duration::from_secs(600))
        );
        // Other projects and the global table are untouched.
        assert_eq!(s.reactions_for("other")["ci-failed"].retries, Some(2));
        assert_eq!(s.reactions["ci-failed"].retries, Some(2));
        assert_eq!(r.len(), REACTION_KEYS.len());

        assert_eq!(s.project_agent("demo").unwrap().kind(), AgentKind::Command);
        assert_eq!(
            s.project_agent("other").unwrap().kind(),
            AgentKind::ClaudeCode
        );
        assert_eq!(s.agent("aider").unwrap().kind(), AgentKind::Aider);
        assert!(s.agent("nope").is_none());
    }

    #[test]
    fn database_url_defaults_to_sqlite_in_data_dir() {
        let s = load_with(&bare_opts(&[])).unwrap();
        assert_eq!(
            s.database_url(Path::new("/var/lib/flotilla")),
            "sqlite:///var/lib/flotilla/flotilla.db"
        );
        let env = HashMap::from([("FLOTILLA_HOME".to_string(), "/srv/flo".to_string())]);
        assert_eq!(Settings::data_dir(&env), PathBuf::from("/srv/flo"));
        let env = HashMap::from([("HOME".to_string(), "/home/u".to_string())]);
        assert_eq!(Settings::data_dir(&env), PathBuf::from("/home/u/.flotilla"));
    }

    #[test]
    fn every_reaction_key_has_a_default() {
        let s = load_with(&bare_opts(&[])).unwrap();
        let keys: Vec<&str> = s.reactions.keys().map(String::as_str).collect();
        let mut expected = REACTION_KEYS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected);
    }
}
