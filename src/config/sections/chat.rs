//! `chat:`: the chat bridge, its assistant and who may use it.

use serde::Deserialize;

use crate::config::values::{null_as_default, HumanDuration, PermissionMode};

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
