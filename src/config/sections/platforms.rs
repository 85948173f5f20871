//! `github:`, `slack:`, `telegram:`, `discord:`, `jira:` and `linear:`: the outside services
//! Flotilla talks to.

use serde::Deserialize;

use super::default_true;
use crate::config::values::{HumanDuration, Secret};

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
