//! Whether an agent has credentials, as the agent process will see them: its configured env
//! (`agents.<name>.env`), the files under its HOME. Flotilla's own environment does not reach
//! agents beyond `PATH`, `HOME` and the like, so a key found only there is a warning with the
//! fix, not a pass. Only names are ever printed, never values. Where the CLI has ways Flotilla
//! cannot see (keychains, cloud providers, config files it does not parse), the answer says
//! "unknown" instead of guessing.

use std::path::PathBuf;

use super::{AgentLaunch, Check, HostEnv, Status};
use crate::config::AgentKind;
use crate::domain::policy::BASE_ENV;

/// Claude Code's key variables.
pub const CLAUDE_KEYS: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
];

/// Provider key variables aider and OpenCode read.
pub const PROVIDER_KEYS: &[&str] = &[
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "DEEPSEEK_API_KEY",
    "OPENROUTER_API_KEY",
    "GROQ_API_KEY",
    "MISTRAL_API_KEY",
    "XAI_API_KEY",
    "COHERE_API_KEY",
    "AZURE_API_KEY",
];

/// Codex's built-in providers that need no key.
const KEYLESS_CODEX_PROVIDERS: &[&str] = &["oss", "ollama", "lmstudio"];

/// The credentials check of one agent; `None` for `command` agents (nothing to know).
/// Blocking: reads a few small files.
pub fn check(a: &AgentLaunch, host: &HostEnv) -> Option<Check> {
    let name = format!("agent {}: credentials", a.name);
    let mut c = match a.kind {
        AgentKind::ClaudeCode => claude(a, host),
        AgentKind::Codex => codex(a, host),
        AgentKind::Aider => aider(a, host),
        AgentKind::Opencode => opencode(a, host),
        AgentKind::Command => return None,
    };
    if c.status == Status::Fail && a.is_wrapper() {
        c.status = Status::Warn;
        c.detail.push_str(&format!(
            " (the command `{}` is a wrapper, which may provide them)",
            a.argv0().unwrap_or("")
        ));
    }
    c.name = name;
    Some(c)
}

/// The first of `names` set in the agent's own env.
fn in_agent_env<'a>(a: &AgentLaunch, names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .copied()
        .find(|n| a.env.get(*n).is_some_and(|v| !v.is_empty()))
}

/// The first of `names` set in Flotilla's environment only (where agents do not see it).
fn only_in_host<'a>(a: &AgentLaunch, host: &HostEnv, names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .copied()
        .find(|n| host.get(n).is_some() && a.var(host, n).is_none())
}

fn host_only_warning(a: &AgentLaunch, var: &str) -> Check {
    Check::warn(
        "",
        format!(
            "{var} is set in Flotilla's environment, but agents get only {} from it",
            BASE_ENV.join(", ")
        ),
        Some(format!(
            "pass it on in agents.{}.env, e.g. {var}: \"${{{var}}}\"",
            a.name
        )),
    )
}

fn home_text(a: &AgentLaunch, host: &HostEnv) -> String {
    a.home(host)
        .map(|h| h.display().to_string())
        .unwrap_or_else(|| "(unset)".into())
}

fn claude(a: &AgentLaunch, host: &HostEnv) -> Check {
    if let Some(v) = in_agent_env(a, CLAUDE_KEYS) {
        return Check::ok("", format!("{v} set in the agent's env"));
    }
    if let Some(v) = in_agent_env(a, &["CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX"]) {
        return Check::warn(
            "",
            format!("unknown: {v} is set; cloud provider credentials are not checked"),
            None,
        );
    }
    let dir = a
        .var(host, "CLAUDE_CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| a.home(host).map(|h| h.join(".claude")));
    if let Some(dir) = &dir {
        let creds = dir.join(".credentials.json");
        if creds.is_file() {
            return Check::ok("", format!("logged in ({})", creds.display()));
        }
        let settings = dir.join("settings.json");
        if std::fs::read_to_string(&settings).is_ok_and(|t| t.contains("\"apiKeyHelper\"")) {
            return Check::ok("", format!("apiKeyHelper in {}", settings.display()));
        }
    }
    if let Some(v) = only_in_host(a, host, CLAUDE_KEYS) {
        return host_only_warning(a, v);
    }
    let where_ = dir
        .map(|d| d.join(".credentials.json").display().to_string())
        .unwrap_or_else(|| "~/.claude/.credentials.json (no HOME)".into());
    let detail = format!(
        "no {} in the agent's env and no {where_}",
        CLAUDE_KEYS.join(" / ")
    );
    let fix = Some(format!(
        "log in once with `claude` (HOME={}), or set ANTHROPIC_API_KEY in agents.{}.env",
        home_text(a, host),
        a.name
    ));
    if cfg!(target_os = "macos") {
        // Claude Code keeps its login in the keychain there.
        return Check::warn(
            "",
            format!("unknown: {detail} (it may be in the keychain)"),
            fix,
        );
    }
    Check::fail("", detail, fix)
}

/// `$CODEX_HOME` (from the agent's env) or `$HOME/.codex`.
pub fn codex_home(a: &AgentLaunch, host: &HostEnv) -> Option<PathBuf> {
    a.var(host, "CODEX_HOME")
        .map(PathBuf::from)
        .or_else(|| a.home(host).map(|h| h.join(".codex")))
}

fn codex(a: &AgentLaunch, host: &HostEnv) -> Check {
    let Some(home) = codex_home(a, host) else {
        return Check::warn("", "unknown: the agent has no HOME or CODEX_HOME", None);
    };
    let config = home.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap_or_default();
    let provider = toml_string(&text, None, "model_provider");
    if let Some(p) = provider.as_deref().filter(|p| *p != "openai") {
        let table = format!("model_providers.{p}");
        return match toml_string(&text, Some(&table), "env_key") {
            Some(var) if a.var(host, &var).is_some() => Check::ok(
                "",
                format!("model provider {p}: {var} set in the agent's env"),
            ),
            Some(var) if host.get(&var).is_some() => host_only_warning(a, &var),
            Some(var) => Check::fail(
                "",
                format!(
                    "model provider {p} (in {}) reads its key from {var}, which the agent's env \
                     does not set",
                    config.display()
                ),
                Some(format!("set {var} in agents.{}.env", a.name)),
            ),
            None if KEYLESS_CODEX_PROVIDERS.contains(&p) || has_table(&text, &table) => {
                Check::ok("", format!("model provider {p} needs no key"))
            }
            None => Check::warn(
                "",
                format!(
                    "unknown: model provider {p} has no [{table}] table in {}",
                    config.display()
                ),
                None,
            ),
        };
    }
    let auth = home.join("auth.json");
    if auth.is_file() {
        return Check::ok("", format!("logged in ({})", auth.display()));
    }
    if in_agent_env(a, &["OPENAI_API_KEY"]).is_some() {
        return Check::ok("", "OPENAI_API_KEY set in the agent's env");
    }
    if only_in_host(a, host, &["OPENAI_API_KEY"]).is_some() {
        return host_only_warning(a, "OPENAI_API_KEY");
    }
    Check::fail(
        "",
        format!(
            "no {} and no OPENAI_API_KEY in the agent's env",
            auth.display()
        ),
        Some(format!(
            "run `codex login` (HOME={}), or set OPENAI_API_KEY in agents.{}.env",
            home_text(a, host),
            a.name
        )),
    )
}

fn aider(a: &AgentLaunch, host: &HostEnv) -> Check {
    if let Some(v) = in_agent_env(a, PROVIDER_KEYS) {
        return Check::ok("", format!("{v} set in the agent's env"));
    }
    let home = a.home(host);
    let files: Vec<PathBuf> = home
        .iter()
        .flat_map(|h| [h.join(".aider.conf.yml"), h.join(".env")])
        .collect();
    if let Some(f) = files.iter().find(|f| f.is_file()) {
        return Check::ok(
            "",
            format!("{} present (keys in it not inspected)", f.display()),
        );
    }
    if let Some(v) = only_in_host(a, host, PROVIDER_KEYS) {
        return host_only_warning(a, v);
    }
    Check::warn(
        "",
        format!(
            "unknown: no provider key ({}, …) in the agent's env and no ~/.aider.conf.yml or \
             ~/.env; aider may still find one in the repository's .env",
            PROVIDER_KEYS[..3].join(", ")
        ),
        Some(format!(
            "set your provider's key in agents.{}.env (e.g. ANTHROPIC_API_KEY)",
            a.name
        )),
    )
}

fn opencode(a: &AgentLaunch, host: &HostEnv) -> Check {
    if let Some(v) = in_agent_env(a, PROVIDER_KEYS) {
        return Check::ok("", format!("{v} set in the agent's env"));
    }
    let home = a.home(host);
    let data = a
        .var(host, "XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".local/share")));
    let config = a
        .var(host, "XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".config")));
    if let Some(auth) = data.map(|d| d.join("opencode/auth.json")) {
        if auth.is_file() {
            return Check::ok("", format!("logged in ({})", auth.display()));
        }
    }
    let configs: Vec<PathBuf> = config
        .iter()
        .flat_map(|c| {
            [
                c.join("opencode/opencode.json"),
                c.join("opencode/opencode.jsonc"),
            ]
        })
        .collect();
    if let Some(f) = configs.iter().find(|f| f.is_file()) {
        return Check::ok(
            "",
            format!("{} present (keys in it not inspected)", f.display()),
        );
    }
    if let Some(v) = only_in_host(a, host, PROVIDER_KEYS) {
        return host_only_warning(a, v);
    }
    Check::warn(
        "",
        "unknown: no provider key in the agent's env, no opencode auth.json and no opencode \
         config file",
        Some(format!(
            "run `opencode auth login` (HOME={}), or set your provider's key in agents.{}.env",
            home_text(a, host),
            a.name
        )),
    )
}

/// A string value `key = "…"` of a TOML document, at the top level (`table` `None`) or in
/// `[table]`. A small reader for the two keys Flotilla needs from Codex's config, not a TOML
/// parser: anything it does not understand reads as absent.
pub fn toml_string(text: &str, table: Option<&str>, key: &str) -> Option<String> {
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(h) = table_header(line) {
            current = Some(h);
            continue;
        }
        if current.as_deref() != table {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if unquote(k.trim()) != key {
            continue;
        }
        let v = v.trim();
        let q = v.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let rest = &v[1..];
        return rest.find(q).map(|end| rest[..end].to_string());
    }
    None
}

fn has_table(text: &str, table: &str) -> bool {
    text.lines()
        .filter_map(|l| table_header(l.trim()))
        .any(|h| h == table)
}

/// `[a.b]` or `[a."b"]` → `a.b`.
fn table_header(line: &str) -> Option<String> {
    let inner = line.strip_prefix('[')?.split(']').next()?;
    if line.starts_with("[[") {
        return Some(String::new());
    }
    Some(
        inner
            .split('.')
            .map(|p| unquote(p.trim()))
            .collect::<Vec<_>>()
            .join("."),
    )
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::AgentSettings;

    fn launch(kind: AgentKind, home: &Path, env: &[(&str, &str)]) -> AgentLaunch {
        let mut s = AgentSettings::built_in(kind);
        s.env
            .insert("HOME".into(), home.to_string_lossy().into_owned());
        for (k, v) in env {
            s.env.insert(k.to_string(), v.to_string());
        }
        AgentLaunch::from_settings("a", &s)
    }

    fn status(c: &Option<Check>) -> Status {
        c.as_ref().expect("a check").status
    }

    #[test]
    fn claude_credentials_come_from_the_agents_env_or_its_login_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let host = HostEnv::from_vars([("ANTHROPIC_API_KEY", "sk-secret-value")]);
        let a = launch(AgentKind::ClaudeCode, dir.path(), &[]);
        // Only in Flotilla's env: the agent will not get it.
        let c = check(&a, &host).expect("check");
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail.contains("ANTHROPIC_API_KEY is set in Flotilla's"),
            "{c:?}"
        );
        assert!(
            !format!("{c:?}").contains("sk-secret-value"),
            "never the value"
        );
        // Nowhere.
        let c = check(&a, &HostEnv::default()).expect("check");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.fix.as_deref().unwrap_or("").contains("claude"), "{c:?}");
        // In the agent's env.
        let k = launch(
            AgentKind::ClaudeCode,
            dir.path(),
            &[("ANTHROPIC_API_KEY", "x")],
        );
        let c = check(&k, &host).expect("check");
        assert_eq!(c.status, Status::Ok);
        assert_eq!(c.detail, "ANTHROPIC_API_KEY set in the agent's env");
        // The login file.
        std::fs::create_dir_all(dir.path().join(".claude")).expect("mkdir");
        std::fs::write(dir.path().join(".claude/.credentials.json"), "{}").expect("write");
        assert_eq!(status(&check(&a, &HostEnv::default())), Status::Ok);
        // A wrapper may bring its own: a warning, not a failure.
        let mut w = launch(AgentKind::ClaudeCode, &dir.path().join("nohome"), &[]);
        w.program = vec!["/opt/wrapper".into()];
        assert_eq!(status(&check(&w, &HostEnv::default())), Status::Warn);
    }

    #[test]
    fn codex_reads_its_login_or_the_model_providers_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let codex_home = dir.path().join(".codex");
        std::fs::create_dir_all(&codex_home).expect("mkdir");
        let a = launch(AgentKind::Codex, dir.path(), &[]);
        assert_eq!(status(&check(&a, &HostEnv::default())), Status::Fail);
        let k = launch(AgentKind::Codex, dir.path(), &[("OPENAI_API_KEY", "x")]);
        assert_eq!(status(&check(&k, &HostEnv::default())), Status::Ok);
        std::fs::write(codex_home.join("auth.json"), "{}").expect("write");
        assert_eq!(status(&check(&a, &HostEnv::default())), Status::Ok);

        std::fs::write(
            codex_home.join("config.toml"),
            "model = \"m\"\nmodel_provider = \"local\" # comment\n\n[model_providers.local]\n\
             base_url = \"http://127.0.0.1:9/v1\"\nenv_key = \"LOCAL_KEY\"\nwire_api = \"responses\"\n",
        )
        .expect("write");
        let c = check(&a, &HostEnv::default()).expect("check");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.detail.contains("LOCAL_KEY"), "{c:?}");
        let k = launch(AgentKind::Codex, dir.path(), &[("LOCAL_KEY", "x")]);
        assert_eq!(status(&check(&k, &HostEnv::default())), Status::Ok);
        // CODEX_HOME moves everything.
        let other = dir.path().join("other");
        std::fs::create_dir_all(&other).expect("mkdir");
        let c = launch(
            AgentKind::Codex,
            dir.path(),
            &[("CODEX_HOME", &other.to_string_lossy())],
        );
        assert_eq!(status(&check(&c, &HostEnv::default())), Status::Fail);
    }

    #[test]
    fn aider_and_opencode_say_unknown_rather_than_guess() {
        let dir = tempfile::tempdir().expect("tmp");
        for kind in [AgentKind::Aider, AgentKind::Opencode] {
            let a = launch(kind, dir.path(), &[]);
            let c = check(&a, &HostEnv::default()).expect("check");
            assert_eq!(c.status, Status::Warn, "{kind}: {c:?}");
            assert!(c.detail.starts_with("unknown"), "{c:?}");
            let k = launch(kind, dir.path(), &[("OPENROUTER_API_KEY", "x")]);
            assert_eq!(status(&check(&k, &HostEnv::default())), Status::Ok);
        }
        std::fs::write(dir.path().join(".aider.conf.yml"), "model: x\n").expect("write");
        let a = launch(AgentKind::Aider, dir.path(), &[]);
        assert_eq!(status(&check(&a, &HostEnv::default())), Status::Ok);
        std::fs::create_dir_all(dir.path().join(".local/share/opencode")).expect("mkdir");
        std::fs::write(dir.path().join(".local/share/opencode/auth.json"), "{}").expect("w");
        let o = launch(AgentKind::Opencode, dir.path(), &[]);
        assert_eq!(status(&check(&o, &HostEnv::default())), Status::Ok);
        let c = launch(AgentKind::Command, dir.path(), &[]);
        assert!(check(&c, &HostEnv::default()).is_none());
    }

    #[test]
    fn the_toml_reader_finds_top_level_and_table_strings() {
        let t = "a = 'x'\n[model_providers.\"p\"]\nenv_key = \"K\"\n[other]\nenv_key = \"J\"\n";
        assert_eq!(toml_string(t, None, "a").as_deref(), Some("x"));
        assert_eq!(
            toml_string(t, Some("model_providers.p"), "env_key").as_deref(),
            Some("K")
        );
        assert_eq!(toml_string(t, None, "env_key"), None);
        assert!(has_table(t, "other"));
    }
}
