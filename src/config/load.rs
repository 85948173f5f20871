//! Loading: layer the compiled-in defaults, the user file and `FLOTILLA__…`
//! environment variables with the `config` crate, resolve `${VAR}` references,
//! and turn every shape problem into a `key: reason` issue.
//!
//! Everything here reads the environment only through [`LoadOptions::env`], so
//! tests never touch the process environment. Meaning (paths exist, names
//! resolve) is checked later by `Settings::validate`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat, Map, Source, Value, ValueKind};
use serde::de::DeserializeOwned;

use super::error::{ConfigError, ConfigIssue};
use super::sections::{
    join_relative, AgentSettings, ChatSettings, ClusterSettings, DatabaseSettings,
    DefaultsSettings, DiscordSettings, GithubSettings, JiraSettings, LifecycleSettings,
    LinearSettings, LogSettings, NotificationsSettings, NotifierSettings, PriceSettings,
    ProjectSettings, ReactionSettings, RoutingSettings, ServerSettings, SlackSettings,
    TelegramSettings,
};
use super::Settings;

/// The compiled-in defaults (`config/default.yaml`).
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../../config/default.yaml");

/// Prefix of environment overrides: `FLOTILLA__SERVER__PORT=7801`.
pub const ENV_PREFIX: &str = "FLOTILLA";

/// Separator of the prefix and of nesting levels in environment overrides.
pub const ENV_SEPARATOR: &str = "__";

/// Environment variable naming the user config file when `--config` is absent.
pub const CONFIG_PATH_VAR: &str = "FLOTILLA_CONFIG";

/// Environment variable naming the data directory.
pub const HOME_VAR: &str = "FLOTILLA_HOME";

/// File looked for in the working directory when no path is given.
pub const DEFAULT_FILE_NAME: &str = "flotilla.yaml";

/// How the `config` crate labels values that came from environment variables.
const ENV_ORIGIN: &str = "the environment";

/// The top-level sections, in `default.yaml` order (for "expected one of").
const SECTIONS: &[&str] = &[
    "server",
    "database",
    "cluster",
    "log",
    "defaults",
    "lifecycle",
    "agents",
    "projects",
    "hosts",
    "reactions",
    "github",
    "slack",
    "telegram",
    "discord",
    "jira",
    "linear",
    "notifiers",
    "routing",
    "notifications",
    "chat",
    "pricing",
];

/// List-valued keys that accept a comma-separated string from the environment
/// (`FLOTILLA__ROUTING__URGENT=ops,pager`).
const ENV_LIST_KEYS: &[&str] = &[
    "defaults.notifiers",
    "routing.urgent",
    "routing.action",
    "routing.warning",
    "routing.info",
    "chat.allow.telegram",
    "chat.allow.discord",
    "chat.allow.slack",
    "chat.allow.github",
    "chat.allow.jira",
];

/// Inputs of [`load_with`]: everything loading would otherwise take from the process.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// `--config PATH`; wins over `$FLOTILLA_CONFIG` and `./flotilla.yaml`.
    pub config_path: Option<PathBuf>,
    /// Working directory: where `flotilla.yaml` is looked for, and the base of
    /// relative paths given outside a file.
    pub cwd: PathBuf,
    /// Environment variables: `FLOTILLA__…` overrides, `FLOTILLA_CONFIG`,
    /// `HOME`, and the values of `${VAR}` references.
    pub env: HashMap<String, String>,
}

impl LoadOptions {
    /// Options from the real process: its environment (non-UTF-8 variables are
    /// skipped) and working directory.
    ///
    /// # Errors
    /// `ConfigError::Load` when the working directory cannot be determined.
    pub fn from_process(config_path: Option<PathBuf>) -> Result<Self, ConfigError> {
        let cwd = std::env::current_dir().map_err(|e| ConfigError::Load {
            key: None,
            reason: format!("cannot determine the working directory: {e}"),
        })?;
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Ok(Self {
            config_path,
            cwd,
            env,
        })
    }

    /// The user file to load, if any: `config_path`, else `$FLOTILLA_CONFIG`
    /// (both must exist), else `flotilla.yaml` in `cwd` if it exists.
    ///
    /// # Errors
    /// `ConfigError::Load` when an explicitly named file does not exist.
    pub fn user_file(&self) -> Result<Option<PathBuf>, ConfigError> {
        let explicit = match &self.config_path {
            Some(p) => Some(("--config", p.clone())),
            None => self
                .env
                .get(CONFIG_PATH_VAR)
                .filter(|p| !p.is_empty())
                .map(|p| (CONFIG_PATH_VAR, PathBuf::from(p))),
        };
        match explicit {
            Some((source, path)) => {
                let path = join_relative(&self.cwd, &path);
                if path.is_file() {
                    Ok(Some(path))
                } else {
                    Err(ConfigError::Load {
                        key: None,
                        reason: format!(
                            "config file {} (from {source}) does not exist or is not a file",
                            path.display()
                        ),
                    })
                }
            }
            None => {
                let path = self.cwd.join(DEFAULT_FILE_NAME);
                Ok(path.is_file().then_some(path))
            }
        }
    }
}

/// Loads the configuration from the real process environment and working
/// directory. Call `Settings::validate` on the result before using it.
///
/// # Errors
/// See [`load_with`].
pub fn load(config_path: Option<PathBuf>) -> Result<Settings, ConfigError> {
    load_with(&LoadOptions::from_process(config_path)?)
}

/// Loads the configuration: defaults → user file → `FLOTILLA__…` overrides,
/// then resolves `${VAR}` references and relative project paths.
///
/// # Errors
/// `ConfigError::Load` for an unreadable or unparsable file, or for a single
/// shape problem; `ConfigError::LoadMany` when several keys are wrong (unknown
/// keys, wrong types, bad durations, unset `${VAR}`s), each naming its key.
pub fn load_with(opts: &LoadOptions) -> Result<Settings, ConfigError> {
    let user_file = opts.user_file()?;

    let mut builder =
        Config::builder().add_source(File::from_str(DEFAULT_CONFIG_YAML, FileFormat::Yaml));
    if let Some(path) = &user_file {
        builder = builder.add_source(File::from(path.as_path()).format(FileFormat::Yaml));
    }
    // The prefix separator must be set explicitly, or the overrides are ignored.
    let env: Map<String, String> = opts
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    builder = builder.add_source(
        Environment::with_prefix(ENV_PREFIX)
            .prefix_separator(ENV_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .source(Some(env)),
    );
    let merged = builder
        .build()
        .and_then(|c| c.collect())
        .map_err(|e| build_error(e, user_file.as_deref()))?;

    let mut root = Value::new(None, ValueKind::Table(merged));
    split_env_lists(&mut root, "");
    let mut issues = Vec::new();
    expand_env_refs(&mut root, "", &opts.env, &mut issues);
    if let ValueKind::Table(table) = &root.kind {
        check_sections(table, user_file.as_deref(), &mut issues);
    }
    if !issues.is_empty() {
        issues.sort_by(|a, b| a.key.cmp(&b.key));
        return Err(ConfigError::from_load_issues(issues));
    }
    let mut settings: Settings = root.try_deserialize().map_err(|e| {
        ConfigError::from_load_issues(vec![issue_from("", e, user_file.as_deref())])
    })?;

    let base = user_file
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| opts.cwd.clone());
    resolve_paths(&mut settings, &base, &opts.env);
    settings.config_file = user_file;
    Ok(settings)
}

/// The data directory from the real environment: `$FLOTILLA_HOME`, else `~/.flotilla`.
pub fn data_dir() -> PathBuf {
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k == HOME_VAR || k == "HOME")
        .collect();
    data_dir_with(&env)
}

/// The data directory from `env`: `$FLOTILLA_HOME`, else `$HOME/.flotilla`.
pub(crate) fn data_dir_with(env: &HashMap<String, String>) -> PathBuf {
    match env.get(HOME_VAR).filter(|h| !h.is_empty()) {
        Some(h) => expand_tilde(Path::new(h), env),
        None => home_dir(env).join(".flotilla"),
    }
}

fn home_dir(env: &HashMap<String, String>) -> PathBuf {
    env.get("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(dirs::home_dir)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `~` or `~/…` → the home directory; other paths unchanged.
fn expand_tilde(path: &Path, env: &HashMap<String, String>) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => home_dir(env).join(rest),
        Err(_) => path.to_path_buf(),
    }
}

/// Makes project paths absolute: `repo` against the config file's directory
/// (or the working directory), `~` expanded in `repo` and `rules_file`.
fn resolve_paths(settings: &mut Settings, base: &Path, env: &HashMap<String, String>) {
    for project in settings.projects.values_mut() {
        project.repo = join_relative(base, &expand_tilde(&project.repo, env));
        if let Some(rules) = &project.rules_file {
            project.rules_file = Some(expand_tilde(rules, env));
        }
    }
}

fn build_error(e: config::ConfigError, user_file: Option<&Path>) -> ConfigError {
    let reason = match e {
        config::ConfigError::FileParse { uri, cause } => {
            let file = uri
                .or_else(|| user_file.map(|p| p.display().to_string()))
                .unwrap_or_else(|| "config/default.yaml".to_string());
            format!("{file}: invalid YAML: {cause}")
        }
        other => other.to_string(),
    };
    ConfigError::Load { key: None, reason }
}

/// Environment values are plain strings; for list keys, split them on commas.
fn split_env_lists(value: &mut Value, path: &str) {
    if let ValueKind::Table(table) = &mut value.kind {
        for (key, child) in table.iter_mut() {
            let child_path = join_key(path, key);
            if ENV_LIST_KEYS.contains(&child_path.as_str()) && child.origin() == Some(ENV_ORIGIN) {
                if let ValueKind::String(s) = &child.kind {
                    let items = s
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::new(None, ValueKind::String(s.to_string())))
                        .collect();
                    child.kind = ValueKind::Array(items);
                }
            } else {
                split_env_lists(child, &child_path);
            }
        }
    }
}

/// Replaces `${VAR}` in every string value; an unset variable is an issue at its key.
fn expand_env_refs(
    value: &mut Value,
    path: &str,
    env: &HashMap<String, String>,
    issues: &mut Vec<ConfigIssue>,
) {
    match &mut value.kind {
        ValueKind::String(s) if s.contains('$') => match expand_str(s, env) {
            Ok(expanded) => *s = expanded,
            Err(reason) => issues.push(ConfigIssue::new(path, reason)),
        },
        ValueKind::Table(table) => {
            for (key, child) in table.iter_mut() {
                expand_env_refs(child, &join_key(path, key), env, issues);
            }
        }
        ValueKind::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                expand_env_refs(child, &format!("{path}[{i}]"), env, issues);
            }
        }
        _ => {}
    }
}

/// Expands `${NAME}` from `env`; `$${` is a literal `${`, a lone `$` stays.
pub(crate) fn expand_str(s: &str, env: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated ${{ in {s:?}"))?;
            let name = &body[..end];
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "invalid environment variable reference ${{{name}}} (use ${{NAME}}; write $${{ for a literal ${{)"
                ));
            }
            let value = env
                .get(name)
                .ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Deserializes each section (and each entry of the named maps) on its own,
/// so that one pass reports a problem in every section, not just the first.
fn check_sections(root: &Map<String, Value>, file: Option<&Path>, issues: &mut Vec<ConfigIssue>) {
    for (name, value) in root {
        let v = value.clone();
        match name.as_str() {
            "server" => check::<ServerSettings>(name, v, file, issues),
            "database" => check::<DatabaseSettings>(name, v, file, issues),
            "cluster" => check::<ClusterSettings>(name, v, file, issues),
            "log" => check::<LogSettings>(name, v, file, issues),
            "defaults" => check::<DefaultsSettings>(name, v, file, issues),
            "lifecycle" => check::<LifecycleSettings>(name, v, file, issues),
            "agents" => check_named::<AgentSettings>(name, v, file, issues),
            "projects" => check_named::<ProjectSettings>(name, v, file, issues),
            "hosts" => check_named::<crate::config::hosts::HostSettings>(name, v, file, issues),
            "reactions" => check_named::<ReactionSettings>(name, v, file, issues),
            "github" => check::<GithubSettings>(name, v, file, issues),
            "slack" => check::<SlackSettings>(name, v, file, issues),
            "telegram" => check::<TelegramSettings>(name, v, file, issues),
            "discord" => check::<DiscordSettings>(name, v, file, issues),
            "jira" => check::<JiraSettings>(name, v, file, issues),
            "linear" => check::<LinearSettings>(name, v, file, issues),
            "notifiers" => check_named::<NotifierSettings>(name, v, file, issues),
            "routing" => check::<RoutingSettings>(name, v, file, issues),
            "notifications" => check::<NotificationsSettings>(name, v, file, issues),
            "chat" => check::<ChatSettings>(name, v, file, issues),
            "pricing" => check_named::<PriceSettings>(name, v, file, issues),
            _ => issues.push(ConfigIssue::new(
                name.clone(),
                format!("unknown section, expected one of: {}", SECTIONS.join(", ")),
            )),
        }
    }
}

fn check<T: DeserializeOwned>(
    key: &str,
    value: Value,
    file: Option<&Path>,
    issues: &mut Vec<ConfigIssue>,
) {
    if let Err(e) = value.try_deserialize::<T>() {
        issues.push(issue_from(key, e, file));
    }
}

fn check_named<T: DeserializeOwned>(
    key: &str,
    value: Value,
    file: Option<&Path>,
    issues: &mut Vec<ConfigIssue>,
) {
    match value.kind {
        ValueKind::Nil => {}
        ValueKind::Table(entries) => {
            for (name, entry) in entries {
                check::<T>(&join_key(key, &name), entry, file, issues);
            }
        }
        _ => issues.push(ConfigIssue::new(key, "expected a map of name: settings")),
    }
}

/// Turns a `config` crate error into an issue whose key is `prefix` plus the
/// path the error carries, and whose reason no longer repeats the key.
/// `file` is the user file, named in place of the crate's relative path.
fn issue_from(prefix: &str, e: config::ConfigError, file: Option<&Path>) -> ConfigIssue {
    let (key, reason) = describe(e, file);
    let key = match key {
        Some(k) if !k.is_empty() => join_key(prefix, &k),
        _ => prefix.to_string(),
    };
    // serde reports an unknown field from the struct that contains it.
    if let Some(rest) = reason.strip_prefix("unknown field `") {
        if let Some(end) = rest.find('`') {
            let field = &rest[..end];
            return ConfigIssue::new(
                join_key(&key, field),
                format!("unknown field{}", &rest[end + 1..]),
            );
        }
    }
    // "expected struct ServerSettings" means nothing to a user.
    let reason = match reason.find("expected struct ") {
        Some(i) => {
            let tail = &reason[i + "expected struct ".len()..];
            let tail = tail.find(' ').map_or("", |j| &tail[j..]);
            format!("{}expected a map of settings{tail}", &reason[..i])
        }
        None => reason,
    };
    ConfigIssue::new(key, reason)
}

fn describe(e: config::ConfigError, file: Option<&Path>) -> (Option<String>, String) {
    match e {
        config::ConfigError::Type {
            origin,
            unexpected,
            expected,
            key,
        } => (
            key,
            with_origin(
                format!("invalid type: {unexpected}, expected {expected}"),
                origin,
                file,
            ),
        ),
        config::ConfigError::At { error, origin, key } => {
            let (inner, reason) = describe(*error, file);
            let key = match (key, inner) {
                (Some(k), Some(i)) => Some(join_key(&k, &i)),
                (k, i) => k.or(i),
            };
            (key, with_origin(reason, origin, file))
        }
        config::ConfigError::NotFound(key) => (Some(key), "missing required field".to_string()),
        config::ConfigError::Message(m) => (None, m),
        other => (None, other.to_string()),
    }
}

fn with_origin(reason: String, origin: Option<String>, file: Option<&Path>) -> String {
    match (origin, file) {
        (Some(o), _) if o == ENV_ORIGIN => format!("{reason} (from {o})"),
        // Only the user file has a uri (the defaults are loaded from a string).
        (Some(_), Some(f)) => format!("{reason} (in {})", f.display()),
        (Some(o), None) => format!("{reason} (in {o})"),
        (None, _) => reason,
    }
}

/// `a` + `b` as a dotted key (`b` may start with `[index]`).
fn join_key(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else if b.starts_with('[') {
        format!("{a}{b}")
    } else {
        format!("{a}.{b}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{EscalateAfter, LogFormat, PermissionMode, Secret};
    use std::time::Duration;

    /// Options with no user file and the given environment.
    pub(crate) fn bare_opts(env: &[(&str, &str)]) -> LoadOptions {
        LoadOptions {
            config_path: None,
            cwd: PathBuf::from("/nonexistent/flotilla-config-test"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// A temp dir holding `flotilla.yaml` with `yaml`, and options using it as cwd.
    pub(crate) fn with_file(yaml: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, LoadOptions) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DEFAULT_FILE_NAME), yaml).unwrap();
        let mut opts = bare_opts(env);
        opts.cwd = dir.path().to_path_buf();
        (dir, opts)
    }

    /// Settings loaded from `yaml` as the user file; panics on error.
    pub(crate) fn settings_from(yaml: &str) -> Settings {
        let (_dir, opts) = with_file(yaml, &[]);
        load_with(&opts).unwrap_or_else(|e| panic!("load failed:\n{e}"))
    }

    fn load_err(yaml: &str, env: &[(&str, &str)]) -> ConfigError {
        let (_dir, opts) = with_file(yaml, env);
        match load_with(&opts) {
            Ok(_) => panic!("expected a load error"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults_load_with_no_file() {
        let s = load_with(&bare_opts(&[])).unwrap();
        assert_eq!(s.server.bind, "127.0.0.1");
        assert_eq!(s.server.port, 7700);
        assert!(s.server.token.is_none());
        assert_eq!(s.server.max_body_bytes, 1_048_576);
        assert_eq!(s.server.actor_timeout.get(), Duration::from_secs(10));
        assert!(s.database.url.is_none());
        assert_eq!(s.log.format, LogFormat::Text);
        assert_eq!(s.defaults.agent, "claude-code");
        assert_eq!(s.lifecycle.spawn_timeout.get(), Duration::from_secs(300));
        assert_eq!(s.lifecycle.max_restarts, 3);
        assert!(s.projects.is_empty() && s.agents.is_empty() && s.notifiers.is_empty());
        assert_eq!(
            s.reactions["ci-failed"].escalate_after,
            Some(EscalateAfter::Attempts(2))
        );
        assert_eq!(
            s.reactions["changes-requested"].escalate_after,
            Some(EscalateAfter::Duration(Duration::from_secs(1800).into()))
        );
        assert!(s.reactions["all-complete"].include_summary);
        assert_eq!(s.github.api_url, "https://api.github.com");
        assert_eq!(s.discord.gateway_url, "wss://gateway.discord.gg");
        assert_eq!(s.chat.max_concurrent, 10);
        assert_eq!(s.chat.turn_timeout.get(), Duration::from_secs(1800));
        s.validate().unwrap();
    }

    #[test]
    fn chat_turns_may_edit_by_default_and_an_explicit_mode_is_honoured() {
        let s = load_with(&bare_opts(&[])).unwrap();
        assert_eq!(s.chat.assistant.permission_mode, PermissionMode::AutoEdit);
        assert_eq!(
            crate::config::ChatAssistantSettings::default().permission_mode,
            PermissionMode::AutoEdit
        );
        let s = settings_from("chat:\n  assistant: { kind: claude, command: [x] }\n");
        assert_eq!(s.chat.assistant.permission_mode, PermissionMode::AutoEdit);
        for (mode, want) in [
            ("default", PermissionMode::Default),
            ("suggest", PermissionMode::Suggest),
        ] {
            let s = settings_from(&format!(
                "chat:\n  assistant: {{ kind: claude, permission_mode: {mode} }}\n"
            ));
            assert_eq!(s.chat.assistant.permission_mode, want);
        }
    }

    #[test]
    fn user_file_overrides_defaults_and_keeps_the_rest() {
        let s = settings_from("server: { port: 7800 }\nlog: { format: json }\n");
        assert_eq!(s.server.port, 7800);
        assert_eq!(s.server.bind, "127.0.0.1");
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.log.level, "info");
    }

    #[test]
    fn explicit_path_and_flotilla_config_are_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("custom.yaml");
        std::fs::write(&path, "server: { port: 7811 }\n").unwrap();

        let mut opts = bare_opts(&[]);
        opts.config_path = Some(path.clone());
        assert_eq!(load_with(&opts).unwrap().server.port, 7811);

        let path_str = path.display().to_string();
        let opts = bare_opts(&[("FLOTILLA_CONFIG", path_str.as_str())]);
        assert_eq!(load_with(&opts).unwrap().server.port, 7811);

        let mut opts = bare_opts(&[]);
        opts.config_path = Some(dir.path().join("missing.yaml"));
        let err = load_with(&opts).unwrap_err().to_string();
        assert!(err.contains("missing.yaml"), "{err}");
    }

    #[test]
    fn env_override_wins_over_the_file() {
        let (_dir, opts) = with_file(
            "server: { port: 7800 }\n",
            &[
                ("FLOTILLA__SERVER__PORT", "7801"),
                ("FLOTILLA__DATABASE__URL", "postgres://flo@db/flotilla"),
                ("FLOTILLA__LIFECYCLE__SPAWN_TIMEOUT", "90s"),
                ("FLOTILLA__ROUTING__URGENT", "ops, pager"),
                ("FLOTILLA_HOME", "/srv/flotilla"),
            ],
        );
        let s = load_with(&opts).unwrap();
        assert_eq!(s.server.port, 7801);
        assert_eq!(
            s.database.url.as_deref(),
            Some("postgres://flo@db/flotilla")
        );
        assert_eq!(s.lifecycle.spawn_timeout.get(), Duration::from_secs(90));
        assert_eq!(s.routing.urgent, vec!["ops", "pager"]);
    }

    #[test]
    fn env_override_with_a_bad_value_names_the_key() {
        let e = load_err("", &[("FLOTILLA__SERVER__PORT", "high")]);
        let msg = e.to_string();
        assert!(msg.starts_with("server.port: "), "{msg}");
        assert!(msg.contains("the environment"), "{msg}");
    }

    #[test]
    fn env_refs_are_resolved_and_unset_ones_name_the_key() {
        let (_dir, opts) = with_file(
            "github: { token: \"${GITHUB_TOKEN}\", webhook_secret: \"pre-${HOOK}-post $5 $${LIT}\" }\n",
            &[("GITHUB_TOKEN", "ghp_abc"), ("HOOK", "x")],
        );
        let s = load_with(&opts).unwrap();
        assert_eq!(s.github.token.as_ref().map(Secret::expose), Some("ghp_abc"));
        assert_eq!(
            s.github.webhook_secret.as_ref().map(Secret::expose),
            Some("pre-x-post $5 ${LIT}")
        );

        let e = load_err("github: { token: \"${GITHUB_TOKEN}\" }\n", &[]);
        assert_eq!(
            e.to_string(),
            "github.token: environment variable GITHUB_TOKEN is not set"
        );
        let e = load_err(
            "agents: { a: { kind: command, command: [x, \"${NOPE}\"] } }\n",
            &[],
        );
        assert_eq!(
            e.to_string(),
            "agents.a.command[1]: environment variable NOPE is not set"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load_err("server: { prot: 7800 }\n", &[]);
        let msg = e.to_string();
        assert!(msg.starts_with("server.prot: unknown field"), "{msg}");
        let e = load_err("servr: { port: 7800 }\n", &[]);
        assert!(e.to_string().starts_with("servr: unknown section"), "{e}");
        let e = load_err("projects: { demo: { repo: /x, colour: red } }\n", &[]);
        assert!(
            e.to_string()
                .starts_with("projects.demo.colour: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_is_named() {
        let e = load_err("server: { port: \"abc\" }\n", &[]);
        let msg = e.to_string();
        assert!(msg.starts_with("server.port: invalid type"), "{msg}");
        assert!(msg.contains("flotilla.yaml"), "{msg}");
        let e = load_err("chat: { allow: { telegram: 5 } }\n", &[]);
        assert!(e.to_string().starts_with("chat.allow.telegram: "), "{e}");
        let e = load_err("log: { format: xml }\n", &[]);
        assert!(
            e.to_string()
                .starts_with("log.format: unknown value \"xml\", expected one of: text, json"),
            "{e}"
        );
    }

    #[test]
    fn bad_duration_is_named() {
        let e = load_err("lifecycle: { spawn_timeout: 5 parsecs }\n", &[]);
        let msg = e.to_string();
        assert!(
            msg.starts_with("lifecycle.spawn_timeout: invalid duration \"5 parsecs\""),
            "{msg}"
        );
        let e = load_err("reactions: { ci-failed: { escalate_after: soon } }\n", &[]);
        assert!(
            e.to_string()
                .starts_with("reactions.ci-failed.escalate_after: "),
            "{e}"
        );
    }

    #[test]
    fn missing_required_field_is_named() {
        let e = load_err("projects: { demo: { default_branch: main } }\n", &[]);
        assert_eq!(e.to_string(), "projects.demo.repo: missing required field");
    }

    #[test]
    fn several_load_problems_are_reported_together() {
        let e = load_err(
            "server: { prot: 1 }\nlifecycle: { merge_grace: forever }\nchat: { max_concurrent: lots }\n",
            &[],
        );
        let keys: Vec<String> = e.issues().into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            [
                "chat.max_concurrent",
                "lifecycle.merge_grace",
                "server.prot"
            ]
        );
        assert_eq!(e.to_string().lines().count(), 3);
    }

    #[test]
    fn yaml_syntax_error_names_the_file() {
        let e = load_err("server: [unclosed\n", &[]);
        assert!(matches!(e, ConfigError::Load { key: None, .. }));
        assert!(e.to_string().contains("flotilla.yaml"), "{e}");
    }

    #[test]
    fn nulls_are_accepted_for_optional_values_and_maps() {
        let s = settings_from(
            "server: { token: null }\ndatabase: { url: ~ }\nagents:\nnotifiers:\nprojects:\n  demo: { repo: /x, github_repo: null, reactions: }\nrouting: { urgent: null }\n",
        );
        assert!(s.server.token.is_none());
        assert!(s.agents.is_empty());
        assert!(s.project("demo").unwrap().github_repo.is_none());
        assert!(s.routing.urgent.is_empty());
    }

    #[test]
    fn map_keys_keep_their_case_from_files() {
        let s = settings_from(
            "projects: { MyProj: { repo: /x } }\nnotifiers: { OpsHook: { kind: desktop } }\nagents: { Scripted: { kind: command, command: [x], env: { API_KEY: k } } }\n",
        );
        assert!(s.project("MyProj").is_some());
        assert!(s.notifiers.contains_key("OpsHook"));
        assert_eq!(s.agents["Scripted"].env["API_KEY"], "k");
    }

    #[test]
    fn relative_repo_is_resolved_against_the_config_file() {
        let (dir, opts) = with_file("projects: { demo: { repo: ./code/demo } }\n", &[]);
        let s = load_with(&opts).unwrap();
        assert_eq!(s.projects["demo"].repo, dir.path().join("./code/demo"));
        let (_dir, opts) = with_file(
            "projects: { demo: { repo: ~/src/demo } }\n",
            &[("HOME", "/home/flo")],
        );
        let s = load_with(&opts).unwrap();
        assert_eq!(s.projects["demo"].repo, PathBuf::from("/home/flo/src/demo"));
    }

    #[test]
    fn expand_str_edge_cases() {
        let env = HashMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand_str("${A}${A}", &env).unwrap(), "11");
        assert_eq!(expand_str("cost $5", &env).unwrap(), "cost $5");
        assert!(expand_str("${A", &env)
            .unwrap_err()
            .contains("unterminated"));
        assert!(expand_str("${A-B}", &env).unwrap_err().contains("invalid"));
    }
}
