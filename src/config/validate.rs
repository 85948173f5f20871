//! [`Settings::validate`]: checks that a loaded configuration makes sense
//! (paths exist, names resolve, numbers are in range, the API is not exposed
//! without a token) and reports every problem at once as `key: reason`.
//!
//! Only reads the filesystem (project repositories, rules files); never the
//! network and never the environment.

use std::collections::HashMap;
use std::path::Path;

use super::error::{ConfigError, ConfigIssue};
use super::sections::{ProjectSettings, ReactionOverride, ReactionSettings};
use super::values::{
    AgentKind, EscalateAfter, HumanDuration, NotifierKind, Priority, Secret, TrackerKind,
};
use super::{Settings, REACTION_KEYS};

/// Most attempts a reaction may be configured to make (`retries`, `escalate_after`).
pub const MAX_REACTION_ATTEMPTS: u32 = 100;

/// Every routing priority, in `routing` order.
const PRIORITIES: [Priority; 4] = [
    Priority::Urgent,
    Priority::Action,
    Priority::Warning,
    Priority::Info,
];

const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// Collects issues in the order they are found.
#[derive(Default)]
struct Issues(Vec<ConfigIssue>);

impl Issues {
    fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(ConfigIssue::new(key, reason));
    }

    fn check(&mut self, key: &str, result: Result<(), String>) {
        if let Err(reason) = result {
            self.push(key, reason);
        }
    }
}

impl Settings {
    /// Checks the meaning of the configuration.
    ///
    /// # Errors
    /// `ConfigError::Invalid` with every problem found, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut v = Issues::default();
        self.check_server(&mut v);
        self.check_database_and_log(&mut v);
        self.check_cluster(&mut v);
        self.check_defaults_and_lifecycle(&mut v);
        self.check_agents(&mut v);
        self.check_projects(&mut v);
        for (key, why) in crate::config::hosts::problems(&self.hosts) {
            v.push(key, why);
        }
        self.check_reactions(&mut v);
        self.check_integrations(&mut v);
        self.check_notifiers_and_routing(&mut v);
        self.check_notifications(&mut v);
        self.check_chat(&mut v);
        self.check_pricing(&mut v);
        if v.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(v.0))
        }
    }

    fn check_server(&self, v: &mut Issues) {
        let s = &self.server;
        if s.bind.trim().is_empty() {
            v.push("server.bind", "must not be empty");
        }
        let has_token = s.token.as_ref().is_some_and(|t| !t.is_empty());
        if !s.is_loopback() && !has_token {
            v.push(
                "server.token",
                "required when server.bind is not a loopback address",
            );
        } else {
            check_secret(v, "server.token", s.token.as_ref());
        }
        if s.max_body_bytes == 0 {
            v.push("server.max_body_bytes", "must be at least 1");
        }
        v.check("server.actor_timeout", positive(s.actor_timeout));
        v.check("server.body_timeout", positive(s.body_timeout));
        if s.max_webhooks_in_flight == 0 {
            v.push("server.max_webhooks_in_flight", "must be at least 1");
        }
    }

    fn check_database_and_log(&self, v: &mut Issues) {
        if let Some(url) = &self.database.url {
            v.check("database.url", check_database_url(url));
        }
        v.check("log.level", check_log_level(&self.log.level));
    }

    fn check_cluster(&self, v: &mut Issues) {
        let c = &self.cluster;
        v.check("cluster.lease_ttl", positive(c.lease_ttl));
        v.check("cluster.renew_interval", positive(c.renew_interval));
        if c.renew_interval.get() * 2 > c.lease_ttl.get() {
            v.push(
                "cluster.renew_interval",
                "must be at most half of cluster.lease_ttl (a lease must survive one missed renewal)",
            );
        }
        let Some(node) = &c.node_id else {
            return;
        };
        v.check("cluster.node_id", check_node_id(node));
        let postgres = self
            .database
            .url
            .as_deref()
            .is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"));
        if !postgres {
            v.push(
                "cluster.node_id",
                "several nodes need a postgres:// database.url (SQLite is one node: leave it null)",
            );
        }
    }

    fn check_defaults_and_lifecycle(&self, v: &mut Issues) {
        v.check(
            "defaults.agent",
            self.check_agent_name(&self.defaults.agent),
        );
        self.check_notifier_names(v, "defaults.notifiers", &self.defaults.notifiers);
        let l = &self.lifecycle;
        v.check("lifecycle.spawn_timeout", positive(l.spawn_timeout));
        v.check(
            "lifecycle.reconcile_interval",
            positive(l.reconcile_interval),
        );
        if l.output_lines == 0 {
            v.push("lifecycle.output_lines", "must be at least 1");
        }
    }

    fn check_agents(&self, v: &mut Issues) {
        for (name, agent) in &self.agents {
            let key = format!("agents.{name}");
            if !is_name(name) {
                v.push(&key, "agent name must match [A-Za-z0-9_-]+");
            }
            if let Some(kind) = AgentKind::built_in(name) {
                if agent.kind != kind {
                    v.push(
                        format!("{key}.kind"),
                        format!(
                            "an agent named after the built-in kind {name} must have kind {name}"
                        ),
                    );
                }
            }
            if agent.kind == AgentKind::Command && agent.command.is_empty() {
                v.push(
                    format!("{key}.command"),
                    "required for kind command (an argument vector, e.g. [\"./agent.sh\", \"--flag\"])",
                );
            }
            for (i, arg) in agent.command.iter().enumerate() {
                if i == 0 && arg.trim().is_empty() {
                    v.push(format!("{key}.command[0]"), "the program must not be empty");
                }
            }
            for (field, why) in agent.sandbox.problems() {
                v.push(format!("{key}.sandbox.{field}"), why);
            }
            for var in agent.env.keys() {
                if var.is_empty() || var.contains(['=', '\0']) {
                    v.push(
                        format!("{key}.env"),
                        format!("{var:?} is not a valid environment variable name"),
                    );
                }
            }
        }
    }

    fn check_projects(&self, v: &mut Issues) {
        // Lowercased so ids cannot collide on case-insensitive filesystems.
        let mut prefixes: HashMap<String, &str> = HashMap::new();
        for (name, p) in &self.projects {
            let key = format!("projects.{name}");
            if !is_name(name) {
                v.push(&key, "project name must match [A-Za-z0-9_-]+");
            }
            check_repo(v, &key, p);
            for (field, why) in p.sandbox.problems() {
                v.push(format!("{key}.sandbox.{field}"), why);
            }
            if p.intake
                .assignee
                .as_deref()
                .is_some_and(|a| a.trim().is_empty())
            {
                v.push(
                    format!("{key}.intake.assignee"),
                    "must not be empty (null turns intake by assignee off)",
                );
            }
            if p.remote.trim().is_empty() {
                v.push(format!("{key}.remote"), "must not be empty");
            }
            v.check(
                &format!("{key}.default_branch"),
                check_branch(&p.default_branch),
            );
            if let Some(gh) = &p.github_repo {
                v.check(&format!("{key}.github_repo"), check_github_repo(gh));
            }

            let prefix = self.session_prefix(name);
            if p.session_prefix.is_some() && !is_name(&prefix) {
                v.push(format!("{key}.session_prefix"), "must match [A-Za-z0-9_-]+");
            }
            if let Some(other) = prefixes.insert(prefix.to_lowercase(), name) {
                v.push(
                    format!("{key}.session_prefix"),
                    format!("{prefix:?} is already used by project {other}; set a unique session_prefix"),
                );
            }

            if let Some(agent) = &p.agent {
                v.check(&format!("{key}.agent"), self.check_agent_name(agent));
            }
            if let Some(rules) = p.rules_path() {
                if !rules.is_file() {
                    v.push(
                        format!("{key}.rules_file"),
                        format!("{} does not exist or is not a file", rules.display()),
                    );
                }
            }
            if let Some(tracker) = p.tracker {
                v.check(&format!("{key}.tracker"), self.check_tracker(tracker));
            }
            check_setup(v, &key, &p.setup);
            if let Some(h) = &p.host {
                v.check(
                    &format!("{key}.host"),
                    crate::config::hosts::check_host_ref(&self.hosts, h),
                );
            }
            if let Some(b) = &p.budget {
                for (k, val) in [
                    ("session_usd", b.session_usd),
                    ("project_usd", b.project_usd),
                ] {
                    if val.is_some_and(|x| !(x.is_finite() && x > 0.0)) {
                        v.push(format!("{key}.budget.{k}"), "must be a positive number");
                    }
                }
                if b.session_tokens == Some(0) {
                    v.push(format!("{key}.budget.session_tokens"), "must be positive");
                }
            }
            if let Some(agent) = &p.orchestrator_agent {
                v.check(
                    &format!("{key}.orchestrator_agent"),
                    self.check_agent_name(agent),
                );
            }
            for (rkey, o) in &p.reactions {
                let rk = format!("{key}.reactions.{rkey}");
                if !REACTION_KEYS.contains(&rkey.as_str()) {
                    v.push(rk, unknown_reaction());
                } else {
                    check_override(v, &rk, o);
                }
            }
        }
    }

    fn check_reactions(&self, v: &mut Issues) {
        for (rkey, r) in &self.reactions {
            let key = format!("reactions.{rkey}");
            if !REACTION_KEYS.contains(&rkey.as_str()) {
                v.push(key, unknown_reaction());
            } else {
                check_reaction(v, &key, r);
            }
        }
    }

    fn check_integrations(&self, v: &mut Issues) {
        let http = &["http", "https"];
        v.check("github.api_url", check_url(&self.github.api_url, http));
        v.check(
            "github.graphql_url",
            check_url(&self.github.graphql_url, http),
        );
        check_secret(v, "github.token", self.github.token.as_ref());
        check_secret(
            v,
            "github.webhook_secret",
            self.github.webhook_secret.as_ref(),
        );

        v.check("slack.api_url", check_url(&self.slack.api_url, http));
        check_secret(v, "slack.bot_token", self.slack.bot_token.as_ref());
        check_secret(
            v,
            "slack.signing_secret",
            self.slack.signing_secret.as_ref(),
        );
        v.check(
            "slack.slash_command",
            check_slash_command(&self.slack.slash_command),
        );

        v.check("telegram.api_url", check_url(&self.telegram.api_url, http));
        check_secret(v, "telegram.bot_token", self.telegram.bot_token.as_ref());
        check_secret(
            v,
            "telegram.secret_token",
            self.telegram.secret_token.as_ref(),
        );

        if let Some(url) = &self.telegram.webhook_url {
            v.check("telegram.webhook_url", check_url(url, &["https"]));
            if self
                .telegram
                .secret_token
                .as_ref()
                .is_none_or(|t| t.is_empty())
            {
                v.push(
                    "telegram.webhook_url",
                    "needs telegram.secret_token (Telegram sends it with each update; without it anyone could post updates)",
                );
            }
        }

        v.check("discord.api_url", check_url(&self.discord.api_url, http));
        v.check(
            "discord.gateway_url",
            check_url(&self.discord.gateway_url, &["ws", "wss"]),
        );
        check_secret(v, "discord.bot_token", self.discord.bot_token.as_ref());
        if let Some(key) = &self.discord.public_key {
            if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                v.push("discord.public_key", "must be 64 hex characters");
            }
        }

        if let Some(url) = &self.jira.base_url {
            v.check("jira.base_url", check_url(url, http));
        }
        check_secret(v, "jira.api_token", self.jira.api_token.as_ref());
        check_secret(v, "jira.webhook_secret", self.jira.webhook_secret.as_ref());
        let repos = &self.jira.repositories;
        for (section, map) in [
            ("components", &repos.components),
            ("labels", &repos.labels),
            ("projects", &repos.projects),
        ] {
            for (name, url) in map {
                v.check(
                    &format!("jira.repositories.{section}.{name}"),
                    crate::domain::clone_url::validate_clone_url(url).map(|_| ()),
                );
            }
        }
        if let Some(url) = &repos.default {
            v.check(
                "jira.repositories.default",
                crate::domain::clone_url::validate_clone_url(url).map(|_| ()),
            );
        }
        for host in &repos.description_hosts {
            if host.is_empty() || host.contains(['/', '@', ' ', ':']) {
                v.push(
                    "jira.repositories.description_hosts",
                    format!("{host:?} is not a host name (e.g. github.com)"),
                );
            }
        }

        v.check("linear.api_url", check_url(&self.linear.api_url, http));
        check_secret(v, "linear.api_key", self.linear.api_key.as_ref());
        check_secret(
            v,
            "linear.webhook_secret",
            self.linear.webhook_secret.as_ref(),
        );
    }

    fn check_notifiers_and_routing(&self, v: &mut Issues) {
        for (name, n) in &self.notifiers {
            let key = format!("notifiers.{name}");
            if !is_name(name) {
                v.push(&key, "notifier name must match [A-Za-z0-9_-]+");
            }
            if let Some(url) = &n.url {
                v.check(&format!("{key}.url"), check_url(url, &["http", "https"]));
            }
            check_secret(v, &format!("{key}.secret"), n.secret.as_ref());
            let missing = match n.kind {
                NotifierKind::Webhook if n.url.is_none() => Some("url: required for kind webhook"),
                NotifierKind::Slack | NotifierKind::Discord
                    if n.url.is_none() && n.channel.is_none() =>
                {
                    Some("channel: required (or an incoming-webhook url)")
                }
                NotifierKind::Telegram if n.chat_id.is_none() => {
                    Some("chat_id: required for kind telegram")
                }
                _ => None,
            };
            if let Some(m) = missing {
                if let Some((field, reason)) = m.split_once(": ") {
                    v.push(format!("{key}.{field}"), reason);
                }
            }
            // Channel posts use the platform's bot token; incoming webhooks carry their own.
            let token = |s: Option<&Secret>| s.is_some_and(|t| !t.is_empty());
            let needs = match n.kind {
                NotifierKind::Slack if n.url.is_none() && !token(self.slack.bot_token.as_ref()) => {
                    Some("slack.bot_token")
                }
                NotifierKind::Discord
                    if n.url.is_none() && !token(self.discord.bot_token.as_ref()) =>
                {
                    Some("discord.bot_token")
                }
                NotifierKind::Telegram if !token(self.telegram.bot_token.as_ref()) => {
                    Some("telegram.bot_token")
                }
                _ => None,
            };
            if let Some(t) = needs {
                let hint = if n.kind == NotifierKind::Telegram {
                    ""
                } else {
                    " (or give it an incoming-webhook url)"
                };
                v.push(
                    format!("{key}.kind"),
                    format!("a {} notifier posting to a chat needs {t}{hint}", n.kind),
                );
            }
        }
        let r = &self.routing;
        self.check_notifier_names(v, "routing.urgent", &r.urgent);
        self.check_notifier_names(v, "routing.action", &r.action);
        self.check_notifier_names(v, "routing.warning", &r.warning);
        self.check_notifier_names(v, "routing.info", &r.info);
        for (name, p) in &self.projects {
            if let Some(r) = &p.routing {
                for (prio, list) in [
                    ("urgent", &r.urgent),
                    ("action", &r.action),
                    ("warning", &r.warning),
                    ("info", &r.info),
                ] {
                    self.check_notifier_names(v, &format!("projects.{name}.routing.{prio}"), list);
                }
            }
        }
        self.check_routes_resolve(v);
    }

    /// A route that resolves to no notifier would drop notifications silently (ao #1939), so
    /// once any notifier exists every priority but `info` must reach one, globally and in every
    /// project. (A `chat` notifier posts into the conversation a session was `/spawn`ed from.)
    fn check_routes_resolve(&self, v: &mut Issues) {
        if self.notifiers.is_empty() {
            return;
        }
        for prio in PRIORITIES {
            let key = format!("routing.{prio}");
            let names = self.notifiers_for(prio);
            // `info` is for the record (the event log and dashboard keep it); INTERFACE.md's
            // example routes it nowhere on purpose. Everything a human must hear must route.
            if names.is_empty() && prio != Priority::Info {
                v.push(
                    &key,
                    format!(
                        "resolves to no notifier: list notifiers under routing.{prio} or defaults.notifiers, \
                         or {prio} notifications would be dropped silently"
                    ),
                );
            }
        }
    }

    fn check_notifications(&self, v: &mut Issues) {
        let n = &self.notifications;
        if n.max_attempts == 0 {
            v.push("notifications.max_attempts", "must be at least 1");
        }
        v.check("notifications.backoff_initial", positive(n.backoff_initial));
        v.check("notifications.backoff_max", positive(n.backoff_max));
        if n.backoff_max < n.backoff_initial {
            v.push(
                "notifications.backoff_max",
                "must not be shorter than notifications.backoff_initial",
            );
        }
        v.check("notifications.poll_interval", positive(n.poll_interval));
        v.check("notifications.timeout", positive(n.timeout));
        if n.concurrency == 0 {
            v.push("notifications.concurrency", "must be at least 1");
        }
        if n.batch == 0 {
            v.push("notifications.batch", "must be at least 1");
        }
        if n.rate_limit.max == 0 {
            v.push("notifications.rate_limit.max", "must be at least 1");
        }
        v.check(
            "notifications.rate_limit.window",
            positive(n.rate_limit.window),
        );
    }

    fn check_chat(&self, v: &mut Issues) {
        if self.chat.max_concurrent == 0 {
            v.push("chat.max_concurrent", "must be at least 1");
        }
        v.check("chat.turn_timeout", positive(self.chat.turn_timeout));
        v.check("chat.idle_after", positive(self.chat.idle_after));
        if self.chat.thread_history > MAX_THREAD_HISTORY {
            v.push(
                "chat.thread_history",
                format!("must be 0 to {MAX_THREAD_HISTORY} (one page of a platform's history)"),
            );
        }
        let a = &self.chat.assistant;
        match a.kind.as_str() {
            "claude" | "codex" => {}
            "command" if a.command.is_empty() => {
                v.push("chat.assistant.command", "required for kind command");
            }
            "command" => {}
            other => v.push(
                "chat.assistant.kind",
                format!("unknown assistant {other:?}: use claude, codex or command"),
            ),
        }
        if a.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
            v.push(
                "chat.assistant.model",
                "must not be empty (omit it for the CLI's default)",
            );
        }
        if self
            .chat
            .budget_usd
            .is_some_and(|x| !(x.is_finite() && x > 0.0))
        {
            v.push("chat.budget_usd", "must be a positive number");
        }
    }

    fn check_pricing(&self, v: &mut Issues) {
        for (model, p) in &self.pricing {
            let key = format!("pricing.{model}");
            if model.trim().is_empty() {
                v.push(&key, "the model name or `*` glob must not be empty");
            }
            for (k, val) in [
                ("input", Some(p.input)),
                ("output", Some(p.output)),
                ("cache_read", p.cache_read),
                ("cache_write", p.cache_write),
            ] {
                if val.is_some_and(|x| !(x.is_finite() && x >= 0.0)) {
                    v.push(
                        format!("{key}.{k}"),
                        "must be a non-negative number of US dollars per million tokens",
                    );
                }
            }
        }
    }

    fn check_agent_name(&self, name: &str) -> Result<(), String> {
        if self.agents.contains_key(name) || AgentKind::built_in(name).is_some() {
            Ok(())
        } else {
            Err(format!(
                "unknown agent {name:?}: use a built-in kind ({}) or define it under agents:",
                AgentKind::BUILT_IN
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }

    fn check_notifier_names(&self, v: &mut Issues, key: &str, names: &[String]) {
        for name in names {
            if !self.notifiers.contains_key(name) {
                v.push(
                    key,
                    format!("unknown notifier {name:?}: define it under notifiers:"),
                );
            }
        }
    }

    fn check_tracker(&self, tracker: TrackerKind) -> Result<(), String> {
        let set = |s: Option<&Secret>| s.is_some_and(|s| !s.is_empty());
        match tracker {
            TrackerKind::Github => Ok(()),
            TrackerKind::Linear if !set(self.linear.api_key.as_ref()) => {
                Err("linear needs linear.api_key".to_string())
            }
            TrackerKind::Jira
                if self.jira.base_url.is_none()
                    || self.jira.email.is_none()
                    || !set(self.jira.api_token.as_ref()) =>
            {
                Err("jira needs jira.base_url, jira.email and jira.api_token".to_string())
            }
            _ => Ok(()),
        }
    }
}

fn unknown_reaction() -> String {
    format!(
        "unknown reaction, expected one of: {}",
        REACTION_KEYS.join(", ")
    )
}

fn check_repo(v: &mut Issues, key: &str, p: &ProjectSettings) {
    let key = format!("{key}.repo");
    let repo = &p.repo;
    if !repo.exists() {
        v.push(key, format!("{} does not exist", repo.display()));
    } else if !repo.is_dir() {
        v.push(key, format!("{} is not a directory", repo.display()));
    } else if !is_git_repo(repo) {
        v.push(
            key,
            format!("{} is not a git repository (no .git)", repo.display()),
        );
    }
}

fn check_reaction(v: &mut Issues, key: &str, r: &ReactionSettings) {
    check_reaction_numbers(v, key, r.retries, r.escalate_after, r.threshold);
}

fn check_override(v: &mut Issues, key: &str, o: &ReactionOverride) {
    // Only the fields the project sets: inherited ones are checked globally.
    check_reaction_numbers(v, key, o.retries, o.escalate_after, o.threshold);
}

fn check_reaction_numbers(
    v: &mut Issues,
    key: &str,
    retries: Option<u32>,
    escalate_after: Option<EscalateAfter>,
    threshold: Option<HumanDuration>,
) {
    if retries.is_some_and(|r| r > MAX_REACTION_ATTEMPTS) {
        v.push(
            format!("{key}.retries"),
            format!("must be at most {MAX_REACTION_ATTEMPTS}"),
        );
    }
    match escalate_after {
        Some(EscalateAfter::Attempts(0)) => v.push(
            format!("{key}.escalate_after"),
            "must be at least 1 attempt (or a duration like \"30m\")",
        ),
        Some(EscalateAfter::Attempts(n)) if n > MAX_REACTION_ATTEMPTS => v.push(
            format!("{key}.escalate_after"),
            format!("must be at most {MAX_REACTION_ATTEMPTS} attempts"),
        ),
        Some(EscalateAfter::Duration(d)) => v.check(&format!("{key}.escalate_after"), positive(d)),
        _ => {}
    }
    if let Some(t) = threshold {
        v.check(&format!("{key}.threshold"), positive(t));
    }
}

/// A Slack slash command as typed: `/` and a name without spaces.
fn check_slash_command(c: &str) -> Result<(), String> {
    let name = c.strip_prefix('/').unwrap_or_default();
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(format!(
            "`{c}` is not a slash command: `/` and a name without spaces (e.g. /flotilla)"
        ));
    }
    Ok(())
}

fn check_secret(v: &mut Issues, key: &str, secret: Option<&Secret>) {
    if secret.is_some_and(Secret::is_empty) {
        v.push(
            key,
            "is empty (an unset-but-empty ${VAR}?); remove it or set it to null",
        );
    }
}

fn positive(d: HumanDuration) -> Result<(), String> {
    if d.get().is_zero() {
        Err("must be longer than 0s".to_string())
    } else {
        Ok(())
    }
}

/// Names used in ids, URLs and file names: `[A-Za-z0-9_-]+`.
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn check_branch(branch: &str) -> Result<(), String> {
    if branch.is_empty()
        || branch.starts_with('-')
        || branch.contains("..")
        || branch.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        Err(format!("{branch:?} is not a valid branch name"))
    } else {
        Ok(())
    }
}

fn check_github_repo(s: &str) -> Result<(), String> {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match s.split_once('/') {
        Some((owner, name)) if ok_part(owner) && ok_part(name) => Ok(()),
        _ => Err(format!("{s:?} is not of the form owner/name")),
    }
}

fn check_database_url(url: &str) -> Result<(), String> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        if rest.is_empty() {
            return Err(
                "sqlite: URL has no path (use sqlite:///path/to/file.db or sqlite::memory:)".into(),
            );
        }
        return Ok(());
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        if url.chars().any(char::is_whitespace) {
            return Err("must not contain whitespace".into());
        }
        return Ok(());
    }
    Err("must start with sqlite: or postgres:// (postgresql://)".into())
}

/// A `level` or comma-separated `target=level` directives (the `EnvFilter` syntax,
/// minus bare targets, which are almost always a misspelt level).
fn check_node_id(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err("1 to 64 letters, digits, '-', '_' or '.'".into())
    }
}

fn check_log_level(s: &str) -> Result<(), String> {
    let is_level = |l: &str| LOG_LEVELS.iter().any(|x| x.eq_ignore_ascii_case(l.trim()));
    let hint = || format!("use one of {} or target=level", LOG_LEVELS.join(", "));
    if s.trim().is_empty() {
        return Err(format!("must not be empty; {}", hint()));
    }
    for d in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let ok = match d.rsplit_once('=') {
            Some((target, level)) => !target.trim().is_empty() && is_level(level),
            None => is_level(d),
        };
        if !ok {
            return Err(format!("{d:?} is not a valid level directive; {}", hint()));
        }
    }
    Ok(())
}

/// Checks `url` is `scheme://host[:port][/…]` with one of `schemes`.
/// Most earlier thread messages a first turn may be given (Discord pages hold 100).
const MAX_THREAD_HISTORY: usize = 100;

pub(crate) fn check_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let expected = || {
        schemes
            .iter()
            .map(|s| format!("{s}://"))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} is not a valid URL (contains whitespace)"));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("{url:?} is not a URL (expected {})", expected()));
    };
    if !schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
        return Err(format!("{url:?} must start with {}", expected()));
    }
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, tail)) if h.parse::<std::net::Ipv6Addr>().is_ok() => {
                (h, tail.strip_prefix(':'))
            }
            _ => return Err(format!("{url:?} has an invalid IPv6 host")),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    let host_ok = !host.is_empty()
        && (host.contains(':')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')));
    if !host_ok {
        return Err(format!("{url:?} has no valid host"));
    }
    if let Some(p) = port {
        if p.parse::<u16>().is_err() {
            return Err(format!("{url:?} has an invalid port"));
        }
    }
    Ok(())
}

/// Whether `path` looks like a git repository (has `.git`, a directory or a
/// worktree's file).
pub fn is_git_repo(path: &Path) -> bool {
    path.join(".git").exists()
}

/// Workspace setup paths stay inside the repo; commands are non-empty argument vectors.
fn check_setup(v: &mut Issues, key: &str, s: &crate::config::sections::WorkspaceSetup) {
    for (field, paths) in [("copy", &s.copy), ("symlinks", &s.symlinks)] {
        for (i, p) in paths.iter().enumerate() {
            let bad = p.is_absolute()
                || p.components()
                    .any(|c| matches!(c, std::path::Component::ParentDir));
            if bad || p.as_os_str().is_empty() {
                v.push(
                    format!("{key}.setup.{field}[{i}]"),
                    "must be a relative path inside the repository (no `..`)",
                );
            }
        }
    }
    for (i, argv) in s.post_create.iter().enumerate() {
        if argv.first().is_none_or(|p| p.trim().is_empty()) {
            v.push(
                format!("{key}.setup.post_create[{i}]"),
                "must be a non-empty argument vector",
            );
        }
    }
    if s.post_create_timeout.get().is_zero() {
        v.push(
            format!("{key}.setup.post_create_timeout"),
            "must be longer than 0s",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::tests::{settings_from, with_file};
    use crate::config::load_with;

    fn issues(yaml: &str) -> Vec<ConfigIssue> {
        match settings_from(yaml).validate() {
            Ok(()) => Vec::new(),
            Err(e) => e.issues(),
        }
    }

    fn keys(yaml: &str) -> Vec<String> {
        issues(yaml).into_iter().map(|i| i.key).collect()
    }

    fn git_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        dir
    }

    #[test]
    fn pricing_entries_are_typed_and_bad_ones_name_their_key() {
        let s = settings_from(
            "pricing:\n  my-model: { input: 1.5, output: 6, cache_read: 0.15 }\n  \"gpt-5*\": { input: 2, output: 8 }\n",
        );
        assert!(s.validate().is_ok());
        let p = s.pricing["my-model"].price();
        assert_eq!(
            (p.input, p.output, p.cache_read, p.cache_write),
            (1.5, 6.0, 0.15, 1.5)
        );
        assert_eq!(s.pricing["gpt-5*"].price().output, 8.0);
        assert_eq!(
            issues("pricing:\n  my-model: { input: -1, output: 6, cache_write: -0.5 }\n"),
            vec![
                ConfigIssue::new(
                    "pricing.my-model.input",
                    "must be a non-negative number of US dollars per million tokens"
                ),
                ConfigIssue::new(
                    "pricing.my-model.cache_write",
                    "must be a non-negative number of US dollars per million tokens"
                ),
            ]
        );
        assert_eq!(
            keys("pricing:\n  \" \": { input: 1, output: 1 }\n"),
            ["pricing. "]
        );
        // Shape errors are named at load: an unknown field, a missing price, a wrong type.
        let err = |yaml: &str| match crate::config::load_with(&with_file(yaml, &[]).1) {
            Ok(_) => panic!("expected a load error for {yaml}"),
            Err(e) => e.to_string(),
        };
        let e = err("pricing:\n  my-model: { input: 1, output: 1, cached: 2 }\n");
        assert!(
            e.starts_with("pricing.my-model.cached: unknown field"),
            "{e}"
        );
        let e = err("pricing:\n  my-model: { input: 1 }\n");
        assert!(
            e.contains("pricing.my-model") && e.contains("output"),
            "{e}"
        );
        let e = err("pricing:\n  my-model: { input: cheap, output: 1 }\n");
        assert!(e.starts_with("pricing.my-model.input"), "{e}");
    }

    #[test]
    fn a_sandboxed_project_on_a_host_is_valid() {
        let repo = git_dir();
        let yaml = |sandbox: &str| {
            format!(
                "hosts:\n  box: {{ ssh: me@box, workdir: /srv/f }}\nagents: {{ s: {{ kind: command, command: [./a.sh] }} }}\nprojects:\n  demo:\n    repo: {}\n    agent: s\n    host: box\n{sandbox}",
                repo.path().display()
            )
        };
        // The sandbox runs on the host (bubblewrap there is checked at launch and by doctor).
        let found = issues(&yaml("    sandbox: { enabled: true }\n"));
        assert!(
            !found
                .iter()
                .any(|i| i.key.starts_with("projects.demo.sandbox")),
            "{found:?}"
        );
        assert!(!keys(&yaml("")).contains(&"projects.demo.sandbox".to_string()));
    }

    #[test]
    fn the_slack_slash_command_is_a_command_name() {
        assert!(keys("slack: { slash_command: /deploy-bot }\n").is_empty());
        for bad in ["flotilla", "/", "\"/flo tilla\""] {
            assert_eq!(
                keys(&format!("slack: {{ slash_command: {bad} }}\n")),
                ["slack.slash_command"],
                "{bad}"
            );
        }
    }

    #[test]
    fn the_chat_budget_must_be_positive() {
        assert_eq!(
            issues("chat: { budget_usd: 0 }\n"),
            vec![ConfigIssue::new(
                "chat.budget_usd",
                "must be a positive number"
            )]
        );
        assert!(keys("chat: { budget_usd: 2.5 }\n").is_empty());
        assert_eq!(
            keys("chat: { assistant: { model: \"\" } }\n"),
            ["chat.assistant.model"]
        );
    }

    #[test]
    fn non_loopback_bind_without_token_names_server_token() {
        let found = issues("server: { bind: 0.0.0.0 }\n");
        assert_eq!(
            found,
            vec![ConfigIssue::new(
                "server.token",
                "required when server.bind is not a loopback address"
            )]
        );
        assert!(keys("server: { bind: 0.0.0.0, token: s3cret-token }\n").is_empty());
        assert!(keys("server: { bind: \"::1\" }\n").is_empty());
    }

    #[test]
    fn a_valid_project_passes() {
        let repo = git_dir();
        let yaml = format!(
            "agents: {{ scripted: {{ kind: command, command: [./agent.sh] }} }}\nprojects:\n  demo:\n    repo: {}\n    github_repo: acme/widgets\n    agent: scripted\n    intake: {{ label: flotilla, assignee: null }}\n    reactions: {{ ci-failed: {{ retries: 4 }} }}\nnotifiers: {{ ops: {{ kind: webhook, url: \"https://hooks.example.com/x\" }} }}\nrouting: {{ urgent: [ops] }}\ndefaults: {{ notifiers: [ops] }}\n",
            repo.path().display()
        );
        assert_eq!(issues(&yaml), vec![]);
    }

    #[test]
    fn several_problems_are_reported_at_once() {
        let not_git = tempfile::tempdir().unwrap();
        let found = keys(&format!(
            r#"
server: {{ bind: 10.0.0.1 }}
database: {{ url: "mysql://x" }}
log: {{ level: verbose }}
defaults: {{ agent: gpt-9 }}
agents:
  scripted: {{ kind: command }}
projects:
  a: {{ repo: {}, session_prefix: same }}
  b: {{ repo: /nonexistent/flotilla/b, session_prefix: same, agent: nope, intake: {{ assignee: " " }} }}
  "bad name": {{ repo: /nonexistent/x, session_prefix: "no spaces" }}
notifiers:
  hook: {{ kind: webhook, url: "ftp://example.com" }}
  tg: {{ kind: telegram }}
chat: {{ max_concurrent: 0 }}
"#,
            not_git.path().display()
        ));
        for k in [
            "server.token",
            "database.url",
            "log.level",
            "defaults.agent",
            "agents.scripted.command",
            "projects.a.repo",
            "projects.b.repo",
            "projects.b.session_prefix",
            "projects.b.agent",
            "projects.b.intake.assignee",
            "projects.bad name",
            "projects.bad name.session_prefix",
            "notifiers.hook.url",
            "notifiers.tg.chat_id",
            "chat.max_concurrent",
        ] {
            assert!(found.iter().any(|f| f == k), "missing {k} in {found:?}");
        }
    }

    #[test]
    fn unknown_reaction_keys_are_rejected() {
        let repo = git_dir();
        let found = keys(&format!(
            "reactions: {{ ci-faild: {{ action: notify }} }}\nprojects: {{ demo: {{ repo: {}, reactions: {{ pr-merged: {{ auto: false }} }} }} }}\n",
            repo.path().display()
        ));
        assert_eq!(
            found,
            ["projects.demo.reactions.pr-merged", "reactions.ci-faild"]
        );
    }

    #[test]
    fn reaction_numbers_are_sane() {
        let repo = git_dir();
        let found = keys(&format!(
            "reactions: {{ ci-failed: {{ retries: 1000, escalate_after: 0 }}, agent-stuck: {{ threshold: 0s }} }}\nprojects: {{ demo: {{ repo: {}, reactions: {{ agent-idle: {{ escalate_after: 0s }} }} }} }}\n",
            repo.path().display()
        ));
        assert_eq!(
            found,
            [
                "projects.demo.reactions.agent-idle.escalate_after",
                "reactions.agent-stuck.threshold",
                "reactions.ci-failed.retries",
                "reactions.ci-failed.escalate_after",
            ]
        );
    }

    #[test]
    fn routing_to_an_unknown_notifier_is_rejected() {
        let found = issues(
            "notifiers: { ops: { kind: desktop } }\nrouting: { urgent: [ops, pager] }\ndefaults: { notifiers: [nope] }\n",
        );
        assert_eq!(
            found,
            vec![
                ConfigIssue::new(
                    "defaults.notifiers",
                    "unknown notifier \"nope\": define it under notifiers:"
                ),
                ConfigIssue::new(
                    "routing.urgent",
                    "unknown notifier \"pager\": define it under notifiers:"
                ),
            ]
        );
    }

    #[test]
    fn every_priority_must_resolve_to_a_notifier_once_one_exists() {
        // No notifiers at all: nothing to route, nothing to check.
        assert!(keys("routing: { urgent: [] }\n").is_empty());
        let found = issues(
            "notifiers: { ops: { kind: webhook, url: \"http://127.0.0.1:9/x\" } }\nrouting: { urgent: [ops], action: [ops] }\n",
        );
        let found: Vec<&str> = found.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            found,
            ["routing.warning"],
            "info may stay silent (INTERFACE.md's example)"
        );
        // defaults.notifiers fills the gaps.
        assert!(keys(
            "notifiers: { ops: { kind: desktop } }\nrouting: { urgent: [ops] }\ndefaults: { notifiers: [ops] }\n"
        )
        .is_empty());
    }

    #[test]
    fn project_routes_name_known_notifiers_and_may_reach_chat() {
        let repo = git_dir();
        let found = issues(&format!(
            "notifiers: {{ ops: {{ kind: desktop }}, room: {{ kind: chat }} }}\ndefaults: {{ notifiers: [ops] }}\nrouting: {{ action: [room] }}\nprojects: {{ demo: {{ repo: {}, routing: {{ urgent: [pager], info: [room] }} }} }}\n",
            repo.path().display()
        ));
        let keys: Vec<&str> = found.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["projects.demo.routing.urgent"], "{found:?}");
        assert!(found[0].reason.contains("unknown notifier \"pager\""));
    }

    #[test]
    fn notifier_urls_and_tokens_are_checked() {
        let found = keys(
            "notifiers:\n  a: { kind: webhook, url: \"not a url\" }\n  s: { kind: slack, channel: C1 }\n  t: { kind: telegram, chat_id: \"42\" }\n  d: { kind: discord, url: \"https://discord.example/api/webhooks/1/x\" }\ndefaults: { notifiers: [a] }\n",
        );
        assert_eq!(
            found,
            ["notifiers.a.url", "notifiers.s.kind", "notifiers.t.kind"]
        );
        assert!(keys(
            "slack: { bot_token: xoxb-1 }\ntelegram: { bot_token: \"1:x\" }\nnotifiers:\n  s: { kind: slack, channel: C1 }\n  t: { kind: telegram, chat_id: \"42\" }\ndefaults: { notifiers: [s, t] }\n"
        )
        .is_empty());
    }

    #[test]
    fn jira_repositories_must_be_clone_urls_and_hosts_named_by_key() {
        let found = keys(
            "jira:\n  repositories:\n    projects: { ABC: \"https://u:p@github.com/a/b\", OK: \"https://github.com/a/b\" }\n    components: { api: \"ftp://x/y\" }\n    labels: { web: \"git@github.com:a/web\" }\n    description_hosts: [\"github.com/x\"]\n    default: \"not a url\"\n",
        );
        assert_eq!(
            found,
            [
                "jira.repositories.components.api",
                "jira.repositories.projects.ABC",
                "jira.repositories.default",
                "jira.repositories.description_hosts",
            ]
        );
        assert!(
            keys("jira:\n  repositories:\n    default: \"https://gitlab.com/a/b.git\"\n")
                .is_empty()
        );
    }

    #[test]
    fn notification_numbers_are_sane() {
        let found = keys(
            "notifications: { max_attempts: 0, backoff_initial: 10s, backoff_max: 1s, concurrency: 0, rate_limit: { max: 0, window: 0s } }\n",
        );
        assert_eq!(
            found,
            [
                "notifications.max_attempts",
                "notifications.backoff_max",
                "notifications.concurrency",
                "notifications.rate_limit.max",
                "notifications.rate_limit.window",
            ]
        );
    }

    #[test]
    fn empty_secret_from_env_is_reported() {
        let (_dir, opts) = with_file(
            "github: { token: \"${GITHUB_TOKEN}\" }\n",
            &[("GITHUB_TOKEN", "")],
        );
        let e = load_with(&opts).unwrap().validate().unwrap_err();
        assert_eq!(e.issues()[0].key, "github.token");
    }

    #[test]
    fn url_checks() {
        let http = &["http", "https"];
        for ok in [
            "https://api.github.com",
            "http://127.0.0.1:8080/hook?x=1",
            "https://user:pw@example.com/",
            "http://[::1]:9000/x",
        ] {
            assert_eq!(check_url(ok, http), Ok(()), "{ok}");
        }
        for bad in [
            "api.github.com",
            "ftp://x",
            "https://",
            "https://exa mple.com",
            "http://host:99999",
            "http://[zz]/",
        ] {
            assert!(check_url(bad, http).is_err(), "{bad}");
        }
        assert!(check_url("wss://gateway.discord.gg", &["ws", "wss"]).is_ok());
    }

    #[test]
    fn database_url_and_log_level_checks() {
        assert!(check_database_url("sqlite:///tmp/f.db").is_ok());
        assert!(check_database_url("sqlite::memory:").is_ok());
        assert!(check_database_url("postgresql://u:p@h/db").is_ok());
        assert!(check_database_url("mysql://h/db").is_err());
        assert!(check_database_url("sqlite:").is_err());
        assert!(check_log_level("info").is_ok());
        assert!(check_log_level("warn,flotilla=debug,actix_web=info").is_ok());
        assert!(check_log_level("verbose").is_err());
        assert!(check_log_level("flotilla=loud").is_err());
    }

    #[test]
    fn built_in_agent_names_keep_their_kind() {
        assert_eq!(
            keys("agents: { codex: { kind: aider } }\n"),
            ["agents.codex.kind"]
        );
        assert!(keys("agents: { codex: { kind: codex, model: o3 } }\n").is_empty());
    }
}
