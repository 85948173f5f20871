//! The `claude-code` agent (Anthropic's `claude` CLI, interactive).
//!
//! Launch: `claude [--permission-mode acceptEdits|plan | --dangerously-skip-permissions]
//! [--model M] --append-system-prompt <rules> [args…] -- <task>`: the task goes in as the
//! positional prompt, which the interactive CLI submits itself (no blind post-launch typing,
//! agent-orchestrator weakness #18). Over [`INLINE_PROMPT_MAX`] the whole prompt file is given
//! with `--append-system-prompt-file` and the positional prompt points at it. Resume:
//! `--resume <session uuid>` (no positional prompt).
//! Flags checked against `claude --help` of 2.1.x; `tests/api/fleet_plugins.rs` runs every
//! argv we build through the real CLI's parser. Note: the CLI refuses
//! `--dangerously-skip-permissions` as root.
//!
//! Observation: Claude Code appends one JSON object per line to
//! `$CLAUDE_CONFIG_DIR` (default `$HOME/.claude`) `/projects/<cwd, every non-alphanumeric
//! character replaced by '-'>/<session uuid>.jsonl`; paths over 200 characters are cut and
//! suffixed with a hash (as the CLI does). The newest such file that is not a sub-agent's
//! (`agent-*.jsonl`) is this workspace's conversation. Only its last [`TAIL_BYTES`] are read
//! for activity; usage is read on from where the last look stopped ([`usage`]), deduplicating
//! the per-content-block copies of a message by message id.
//!
//! Beside this file: `log` reads the session log (activity, the pending tool call, API
//! failures), `usage` its spend, `dialog`, `ask` and `plan` the dialogs on screen, and `setup`
//! the settings it launches with and its first-run state in `~/.claude.json`.

pub mod ask;
pub mod dialog;
mod log;
pub mod plan;
mod setup;
pub mod usage;

pub use self::log::{classify, pending_tool, recent_api_failure, waiting_question};
use self::setup::launch_settings;
pub use self::setup::{first_run_failure, hook_settings, trust_workspace, trusted};
pub use self::usage::usage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::{program, prompt_pointer, with_message, Prompt, INLINE_PROMPT_MAX};
use crate::config::{AgentSettings, PermissionMode};
use crate::plugins::activity::{
    agent_home, combine, newest_jsonl, read_tail, ActivityProbe, ActivitySignal, Usage, TAIL_BYTES,
};
use crate::plugins::{Agent, AgentContext, PluginError, PluginResult};
use crate::pricing::PriceTable;

/// Longest encoded project directory name before the CLI shortens it with a hash.
const MAX_DIR_NAME: usize = 200;

/// Launches and observes Claude Code.
#[derive(Debug, Clone)]
pub struct ClaudeCodeAgent {
    name: String,
    settings: AgentSettings,
    /// What tokens cost when the agent reports no cost.
    prices: Arc<PriceTable>,
    /// The usage of each log read so far (shared by the clones of this agent).
    tallies: Arc<super::log_tally::Tallies<usage::UsageTally>>,
}

impl ClaudeCodeAgent {
    /// A Claude Code agent called `name` with its settings.
    pub fn new(name: String, settings: AgentSettings) -> Self {
        ClaudeCodeAgent {
            name,
            settings,
            prices: Arc::new(PriceTable::builtin_only()),
            tallies: Arc::default(),
        }
    }

    /// Prices its usage with `prices` (the `pricing:` table) instead of the built-in prices.
    pub fn with_prices(mut self, prices: Arc<PriceTable>) -> Self {
        self.prices = prices;
        self
    }

    /// `$CLAUDE_CONFIG_DIR` or `$HOME/.claude`, as the agent process sees them.
    fn config_dir(&self) -> Option<PathBuf> {
        if let Some(d) = self.settings.env.get("CLAUDE_CONFIG_DIR") {
            return Some(PathBuf::from(d));
        }
        agent_home(&self.settings.env).map(|h| h.join(".claude"))
    }

    /// The directory Claude Code keeps `workspace`'s conversations in.
    pub fn project_dir(&self, workspace: &Path) -> Option<PathBuf> {
        let real = std::fs::canonicalize(workspace).unwrap_or_else(|_| workspace.to_path_buf());
        Some(
            self.config_dir()?
                .join("projects")
                .join(project_dir_name(&real.to_string_lossy())),
        )
    }

    /// The newest conversation id of `workspace` (blocking: one directory listing).
    fn latest_session(&self, workspace: &Path) -> Option<String> {
        let dir = self.project_dir(workspace)?;
        let file = newest_jsonl(&dir, "agent-").ok()??;
        file.file_stem().map(|s| s.to_string_lossy().into_owned())
    }

    async fn latest_log(&self, workspace: &Path) -> PluginResult<Option<PathBuf>> {
        let Some(dir) = self.project_dir(workspace) else {
            return Ok(None);
        };
        tokio::task::spawn_blocking(move || newest_jsonl(&dir, "agent-"))
            .await
            .map_err(|e| PluginError::Io(std::io::Error::other(e)))?
            .map_err(PluginError::Io)
    }
}

/// Claude Code's name for a project directory: every character that is not an ASCII letter or
/// digit becomes `-` (one per UTF-16 unit, as in JavaScript); names over 200 characters are cut
/// and suffixed with `-` and a base-36 hash of the path.
pub fn project_dir_name(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else {
            out.extend(std::iter::repeat_n('-', c.len_utf16()));
        }
    }
    if out.len() <= MAX_DIR_NAME {
        return out;
    }
    // Java-style string hash over UTF-16 units, as the CLI computes it.
    let mut h: i32 = 0;
    for unit in path.encode_utf16() {
        h = h
            .wrapping_shl(5)
            .wrapping_sub(h)
            .wrapping_add(i32::from(unit));
    }
    format!(
        "{}-{}",
        &out[..MAX_DIR_NAME],
        base36(i64::from(h).unsigned_abs())
    )
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".into();
    }
    let mut v = Vec::new();
    while n > 0 {
        v.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    v.reverse();
    String::from_utf8_lossy(&v).into_owned()
}

/// An MCP server's name as Claude Code puts it in its tools' names (`mcp__<server>__<tool>`):
/// each character other than a letter, digit, `_` or `-` made `_` (`my server` → `my_server`).
pub fn mcp_server_name(configured: &str) -> String {
    configured
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[async_trait]
impl Agent for ClaudeCodeAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn preflight(&self) -> Option<crate::preflight::AgentLaunch> {
        Some(crate::preflight::AgentLaunch::from_settings(
            &self.name,
            &self.settings,
        ))
    }

    fn exit_cause(&self, output: &str) -> Option<String> {
        let file = self.preflight().and_then(|a| {
            crate::preflight::claude_state_file(&a, &crate::preflight::HostEnv::current())
        });
        first_run_failure(output, file.as_deref())
    }

    fn launch(&self, ctx: &AgentContext) -> PluginResult<(Vec<String>, BTreeMap<String, String>)> {
        let s = &self.settings;
        let mut argv = program(s, "claude");
        match ctx.mode(s) {
            PermissionMode::Default => {}
            PermissionMode::AutoEdit => {
                argv.extend(["--permission-mode".into(), "acceptEdits".into()])
            }
            PermissionMode::Suggest => argv.extend(["--permission-mode".into(), "plan".into()]),
            PermissionMode::Permissionless => argv.push("--dangerously-skip-permissions".into()),
        }
        if let Some(m) = &s.model {
            argv.extend(["--model".into(), m.clone()]);
        }
        if let Some(settings) = launch_settings(ctx.flotilla_cli.as_deref(), ctx.mode(s)) {
            argv.extend(["--settings".into(), settings.to_string()]);
        }
        let prompt = Prompt::read(&ctx.prompt_file)?;
        let resume_id = if ctx.resume {
            ctx.agent_session_id
                .clone()
                .or_else(|| self.latest_session(&ctx.workspace))
        } else {
            None
        };
        let inline = prompt.full.len() <= INLINE_PROMPT_MAX;
        if inline {
            if let Some(system) = &prompt.system {
                argv.extend(["--append-system-prompt".into(), system.clone()]);
            }
        } else {
            argv.extend([
                "--append-system-prompt-file".into(),
                ctx.prompt_file.to_string_lossy().into_owned(),
            ]);
        }
        if let Some(id) = resume_id {
            argv.extend(["--resume".into(), id]);
            argv.extend(s.args.iter().cloned());
            // Instructions for a restart: the resumed conversation's next user turn.
            if let Some(m) = &ctx.message {
                argv.extend(["--".into(), m.clone()]);
            }
        } else {
            argv.extend(s.args.iter().cloned());
            argv.push("--".into());
            let task = if inline {
                prompt.task
            } else {
                prompt_pointer(&ctx.prompt_file)
            };
            argv.push(with_message(task, ctx.message.as_deref()));
        }
        Ok((argv, s.env.clone()))
    }

    fn takes_message_at_launch(&self) -> bool {
        true
    }

    fn state_paths(&self, env: &BTreeMap<String, String>) -> Vec<PathBuf> {
        let home = env.get("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
        match env.get("CLAUDE_CONFIG_DIR").filter(|d| !d.is_empty()) {
            Some(dir) => vec![PathBuf::from(dir)],
            None => home
                .map(|h| vec![h.join(".claude"), h.join(".claude.json")])
                .unwrap_or_default(),
        }
    }

    async fn prepare(
        &self,
        _ctx: &AgentContext,
        repo: &Path,
        env: &BTreeMap<String, String>,
        files: &dyn crate::plugins::AgentFiles,
    ) -> PluginResult<()> {
        let file = match env.get("CLAUDE_CONFIG_DIR").filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir).join(".claude.json"),
            None => match env.get("HOME").filter(|h| !h.is_empty()) {
                Some(home) => PathBuf::from(home).join(".claude.json"),
                None => return Ok(()),
            },
        };
        let repo = files.canonical(repo).await;
        let key = env.get("ANTHROPIC_API_KEY").map(String::as_str);
        // One writer at a time in this process; the file is replaced atomically.
        static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _guard = LOCK.lock().await;
        // No configuration yet: Claude Code's own first-run set-up comes first.
        let Some(text) = files.read(&file).await? else {
            return Ok(());
        };
        match trusted(&file, &text, &repo.to_string_lossy(), key) {
            Some(out) => files.write(&file, &out).await,
            None => Ok(()),
        }
    }

    async fn activity(&self, probe: &ActivityProbe) -> PluginResult<Option<ActivitySignal>> {
        let native = match self.latest_log(&probe.workspace).await? {
            Some(path) => read_tail(&path, TAIL_BYTES)
                .await?
                .and_then(|(text, mtime)| {
                    let mut sig = classify(&text, mtime)?.signal(probe.now);
                    if sig.api_failure.is_none() {
                        sig.api_failure = recent_api_failure(&text, mtime);
                    }
                    Some(sig)
                }),
            None => None,
        };
        Ok(combine(native, probe))
    }

    async fn question(&self, probe: &ActivityProbe) -> Option<String> {
        let from_log = match self.latest_log(&probe.workspace).await {
            Ok(Some(path)) => match read_tail(&path, TAIL_BYTES).await.ok().flatten() {
                Some((text, _)) => match pending_tool(&text) {
                    Some((name, input)) if plan::lacks_plan(&name, &input) => {
                        let input = match plan::read_plan(&path, &text).await {
                            Some(p) => plan::with_plan(&input, &p),
                            None => input,
                        };
                        Some((name, input))
                    }
                    other => other,
                },
                None => None,
            },
            _ => None,
        };
        let from_log = from_log.map(|(name, input)| {
            crate::plugins::activity::mask_secrets(&waiting_question(&name, &input))
        });
        let on_screen = match probe.terminal.as_deref() {
            Some(t) => match crate::plugins::activity::terminal_question(t) {
                Some(asked) => {
                    // A file in the working directory is shown relative to it as the CLI
                    // sees it (symbolic links resolved).
                    let cwd = tokio::fs::canonicalize(&probe.workspace)
                        .await
                        .unwrap_or_else(|_| probe.workspace.clone());
                    Some(match dialog::screen_tool_question(t, &cwd) {
                        Some(q) => (crate::plugins::activity::mask_secrets(&q), true),
                        None => (asked, false),
                    })
                }
                None => None,
            },
            None => None,
        };
        match (from_log, on_screen) {
            // The log lags the screen (Claude Code draws the next dialog before it logs the
            // call): a tool dialog on screen that is not the log's pending call is the one
            // asked now, and the one a key would answer.
            (Some(logged), Some((shown, true)))
                if !crate::domain::question::alike(&logged, &shown) =>
            {
                Some(shown)
            }
            // The log words a call in full (the screen may cut it).
            (Some(logged), _) => Some(logged),
            (None, shown) => shown.map(|(q, _)| q),
        }
    }

    /// A dialog is told from the question recorded by what the screen says of the call behind
    /// it: a tool dialog worded as its hook words it, or the questions an `AskUserQuestion`
    /// dialog shows. The screen's generic wording (its title and options) is not how a hook or
    /// the log word a question, so it only ever confirms one; a dialog that says nothing of
    /// its call (the trust dialog) is never another.
    fn shows_other_question(&self, screen: &str, asked: &str, workspace: &Path) -> bool {
        use crate::domain::question::alike;
        use crate::plugins::activity::{mask_secrets, terminal_question};
        match terminal_question(screen) {
            Some(generic) if !alike(&generic, asked) => {}
            _ => return false,
        }
        if let Some(tool) = dialog::screen_tool_question(screen, workspace) {
            return !alike(&mask_secrets(&tool), asked);
        }
        ask::screen_questions(screen)
            .is_some_and(|qs| !qs.iter().any(|q| ask::names(asked, &mask_secrets(q))))
    }

    async fn usage(&self, workspace: &Path) -> PluginResult<Option<Usage>> {
        let Some(path) = self.latest_log(workspace).await? else {
            return Ok(None);
        };
        self.tallies.read(&path, |t| t.usage(&self.prices)).await
    }

    async fn agent_session_id(&self, workspace: &Path) -> PluginResult<Option<String>> {
        Ok(self
            .latest_log(workspace)
            .await?
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned())))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_first_run_set_up_that_cannot_reach_the_vendor_is_named() {
        // Claude Code 2.1.328 with a fresh HOME, offline (recorded under tmux).
        let out = "Welcome to Claude Code v2.1.328\n Unable to connect to Anthropic services\n Failed to connect to api.anthropic.com: ENOTFOUND\n Check your internet connection and network settings.\n Claude Code might not be available in your country. Check supported countries at https://anthropic.com/supported-countries";
        let cause = super::first_run_failure(out, Some(std::path::Path::new("/h/.claude.json")))
            .expect("recognized");
        assert_eq!(
            cause,
            "claude's first-run set-up could not finish: Unable to connect to Anthropic services \
             (Failed to connect to api.anthropic.com: ENOTFOUND); run `claude` once in a terminal \
             for this HOME, or set hasCompletedOnboarding in /h/.claude.json"
        );
        assert_eq!(
            super::first_run_failure("error: unknown option '--x'", None),
            None
        );
    }

    use super::super::test_support::{ctx, path, settings, PROMPT};
    use super::*;
    use chrono::{DateTime, Utc};
    use serde_json::Value;

    use crate::config::AgentKind;
    use crate::plugins::activity::{parse_ts, Reading};
    use crate::store::Activity;

    fn builtin_usage(log: &str) -> Usage {
        usage(log, &PriceTable::builtin_only())
    }

    const SESSION: &str = "0b0d6c1e-1111-4222-8333-444455556666";

    /// An answer is typed only onto the question it answers: a tool dialog worded as its hook
    /// words it tells another call apart; a dialog worded otherwise cannot be told.
    #[test]
    fn another_tool_dialog_on_screen_is_another_question() {
        use crate::plugins::activity::{screen_fixture, terminal_question};
        let a = agent(PermissionMode::Default, None);
        let ws = Path::new("/tmp/.tmpZdmhIb/home/worktrees/demo/demo-1");
        let other = |screen: &str, asked: &str| a.shows_other_question(screen, asked, ws);
        let bash = screen_fixture("claude-bash-permission.txt");
        // The dialog asked, as its hook or the log words it, or the screen's generic wording.
        assert!(!other(
            &bash,
            "approve Bash: git commit --allow-empty -m wip"
        ));
        assert!(!other(&bash, "approve Bash: git commit --allow-empty…"));
        let generic = terminal_question(&bash).expect("a dialog");
        assert!(!other(&bash, &generic));
        // Another call.
        assert!(other(&bash, "approve Bash: git push origin HEAD"));
        assert!(other(&bash, "approve Write: /w/notes.txt"));
        // An `AskUserQuestion` dialog by the questions it shows.
        let ask = screen_fixture("claude-ask.txt");
        assert!(other(&ask, "approve Bash: git push"));
        assert!(!other(&ask, "Which color? [Red | Blue]"));
        assert!(!other(
            &ask,
            "Which color? [Red | Blue]; Which size? [S | L]"
        ));
        assert!(other(&ask, "Which size? [S | L]"));
        assert!(!other(&ask, &terminal_question(&ask).expect("a dialog")));
        // A dialog that says nothing of its call (the trust dialog) is not another; no dialog
        // refuses nothing.
        assert!(!other(
            &screen_fixture("claude-trust.txt"),
            "approve Bash: git push"
        ));
        assert!(!other(
            &screen_fixture("claude-idle.txt"),
            "approve Bash: git push"
        ));
    }

    fn agent(mode: PermissionMode, model: Option<&str>) -> ClaudeCodeAgent {
        ClaudeCodeAgent::new(
            "claude-code".into(),
            settings(AgentKind::ClaudeCode, mode, model),
        )
    }

    // Recorded-format lines (Claude Code 2.x JSONL), trimmed of fields we do not read.
    const USER: &str = r#"{"parentUuid":null,"isSidechain":false,"userType":"external","cwd":"/w","sessionId":"0b0d6c1e-1111-4222-8333-444455556666","version":"2.0.14","gitBranch":"main","type":"user","message":{"role":"user","content":"Fix the parser."},"uuid":"u1","timestamp":"2025-10-01T11:59:00.000Z"}"#;
    const TEXT: &str = r#"{"parentUuid":"u1","type":"assistant","message":{"id":"msg_01A","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Let me look at the parser."}],"stop_reason":null,"usage":{"input_tokens":4,"cache_creation_input_tokens":2000,"cache_read_input_tokens":10000,"output_tokens":3,"service_tier":"standard"}},"requestId":"req_1","uuid":"a1","timestamp":"2025-10-01T11:59:02.000Z"}"#;
    const TOOL: &str = r#"{"parentUuid":"a1","type":"assistant","message":{"id":"msg_01A","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"tool_use","id":"toolu_01","name":"Bash","input":{"command":"cargo test","description":"Run tests"}}],"stop_reason":"tool_use","usage":{"input_tokens":4,"cache_creation_input_tokens":2000,"cache_read_input_tokens":10000,"output_tokens":120,"service_tier":"standard"}},"requestId":"req_1","uuid":"a2","timestamp":"2025-10-01T11:59:03.000Z"}"#;
    const RESULT: &str = r#"{"parentUuid":"a2","type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_01","type":"tool_result","content":"test result: ok","is_error":false}]},"uuid":"u2","timestamp":"2025-10-01T11:59:40.000Z","toolUseResult":{"stdout":"test result: ok","stderr":"","interrupted":false}}"#;
    const DONE: &str = r#"{"parentUuid":"u2","type":"assistant","message":{"id":"msg_01B","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"All tests pass."}],"stop_reason":"end_turn","usage":{"input_tokens":10,"cache_creation_input_tokens":0,"cache_read_input_tokens":12000,"output_tokens":40,"service_tier":"standard"}},"uuid":"a3","timestamp":"2025-10-01T11:59:45.000Z"}"#;
    const ASK: &str = r#"{"parentUuid":"u2","type":"assistant","message":{"id":"msg_01C","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"tool_use","id":"toolu_02","name":"AskUserQuestion","input":{"questions":[{"question":"Delete the old parser?","header":"Cleanup","options":[{"label":"Yes"},{"label":"No"}],"multiSelect":false}]}}],"stop_reason":"tool_use","usage":{"input_tokens":5,"output_tokens":30}},"uuid":"a4","timestamp":"2025-10-01T11:59:50.000Z"}"#;
    const ANSWER: &str = r#"{"parentUuid":"a4","type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_02","type":"tool_result","content":"User has answered your questions: \"Delete the old parser?\"=\"Yes\"."}]},"uuid":"u3","timestamp":"2025-10-01T11:59:58.000Z"}"#;
    const SNAPSHOT: &str = r#"{"type":"file-history-snapshot","messageId":"m1","snapshot":{"messageId":"m1","trackedFileBackups":{},"timestamp":"2025-10-01T11:59:59.000Z"},"isSnapshotUpdate":false}"#;
    const API_ERROR: &str = r#"{"type":"assistant","isApiErrorMessage":true,"message":{"id":"x","model":"<synthetic>","role":"assistant","content":[{"type":"text","text":"API Error: 529 Overloaded"}],"stop_reason":"stop_sequence","usage":{"input_tokens":0,"output_tokens":0}},"timestamp":"2025-10-01T11:59:59.000Z"}"#;

    fn now() -> DateTime<Utc> {
        parse_ts("2025-10-01T12:00:00Z").expect("ts")
    }

    fn state(lines: &[&str]) -> Option<Activity> {
        classify(&lines.join("\n"), now()).map(|r| r.signal(now()).activity)
    }

    #[test]
    fn trust_and_key_approval_are_recorded_in_an_existing_config_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join(".claude.json");
        let repo = Path::new("/src/repo");
        trust_workspace(&file, repo, Some("sk-x")).expect("missing file");
        assert!(!file.exists(), "no .claude.json is made for a fresh HOME");
        std::fs::write(&file, r#"{"hasCompletedOnboarding":true,"customApiKeyResponses":{"approved":[],"rejected":["0123456789abcdefghij"]}}"#).expect("write");
        trust_workspace(&file, repo, Some("sk-ant-0123456789abcdefghij")).expect("update");
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
        assert_eq!(v["projects"]["/src/repo"]["hasTrustDialogAccepted"], true);
        assert_eq!(v["hasCompletedOnboarding"], true);
        assert_eq!(
            v["customApiKeyResponses"]["approved"],
            serde_json::json!([]),
            "a rejected key stays rejected"
        );
        trust_workspace(&file, repo, Some("sk-ant-other-key-98765432109876543210"))
            .expect("update");
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
        assert_eq!(
            v["customApiKeyResponses"]["approved"],
            serde_json::json!(["98765432109876543210"])
        );
        std::fs::write(&file, "not json").expect("write");
        trust_workspace(&file, repo, None).expect("left alone");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "not json");
    }

    #[test]
    fn a_pending_tool_call_is_phrased_as_what_the_human_decides() {
        let ask = serde_json::json!({"questions": [{"question": "Which color?",
            "options": [{"label": "Red"}, {"label": "Blue"}]}]});
        assert_eq!(
            waiting_question("AskUserQuestion", &ask),
            "Which color? [Red | Blue]"
        );
        assert_eq!(
            waiting_question("Write", &serde_json::json!({"file_path": "/w/a.rs"})),
            "approve Write: /w/a.rs"
        );
        let tool = r#"{"type":"assistant","timestamp":"2025-10-01T12:00:00Z","message":{"id":"m","model":"x","content":[{"type":"tool_use","id":"t","name":"Bash","input":{"command":"ls"}}],"stop_reason":null}}"#;
        let (name, input) = pending_tool(&[USER, tool].join("\n")).expect("pending");
        assert_eq!(waiting_question(&name, &input), "approve Bash: ls");
        // Answered: the tool result comes after it.
        assert_eq!(pending_tool(&[USER, tool, USER].join("\n")), None);
    }

    #[test]
    fn of_parallel_calls_the_first_unanswered_one_is_pending() {
        // One response's two calls, each logged as an entry of its own: Claude asks about
        // the first one first.
        let second = TOOL
            .replace("toolu_01", "toolu_03")
            .replace("cargo test", "cargo fmt")
            .replace("\"a2\"", "\"a5\"");
        let log = [USER, TEXT, TOOL, &second].join("\n");
        let (name, input) = pending_tool(&log).expect("pending");
        assert_eq!(waiting_question(&name, &input), "approve Bash: cargo test");
        // Once the first has its result (logged before the second block, as a result of a
        // call answered at once would be), the second is the one asked.
        let result = r#"{"type":"user","timestamp":"2025-10-01T11:59:04.000Z","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01","content":"ok"}]}}"#;
        let log = [USER, TEXT, TOOL, result, &second].join("\n");
        let (name, input) = pending_tool(&log).expect("pending");
        assert_eq!(waiting_question(&name, &input), "approve Bash: cargo fmt");
        // Another response's call is not the first response's.
        let next = second.replace("msg_01A", "msg_01D");
        let (name, input) = pending_tool(&[USER, TEXT, TOOL, &next].join("\n")).expect("pending");
        assert_eq!(waiting_question(&name, &input), "approve Bash: cargo fmt");
    }

    #[test]
    fn the_agents_own_cost_wins_when_it_covers_the_last_message() {
        let cost = r#"{"type":"cost-state","sessionId":"s","totalCostUSD":0.0112,"hasUnknownModelCost":false}"#;
        let priced = builtin_usage(&[USER, TEXT].join("\n"));
        assert_eq!(
            priced.cost_source,
            Some(crate::store::CostSource::PriceTable)
        );
        let own = builtin_usage(&[USER, TEXT, cost].join("\n"));
        assert_eq!(own.cost_usd, Some(0.0112));
        assert_eq!(own.cost_source, Some(crate::store::CostSource::Agent));
        assert_eq!(own.input_tokens, priced.input_tokens);
        // A message after the figure: the figure no longer covers everything.
        let later = builtin_usage(
            &[
                USER,
                TEXT,
                cost,
                TEXT.replace("msg_01A", "msg_02B").as_str(),
            ]
            .join("\n"),
        );
        assert_eq!(
            later.cost_source,
            Some(crate::store::CostSource::PriceTable)
        );
        let unknown = cost.replace("false", "true");
        assert_eq!(
            builtin_usage(&[USER, TEXT, unknown.as_str()].join("\n")).cost_source,
            Some(crate::store::CostSource::PriceTable)
        );
    }

    #[test]
    fn log_entries_map_to_activity() {
        assert_eq!(state(&[USER]), Some(Activity::Active));
        assert_eq!(state(&[USER, TEXT, TOOL]), Some(Activity::Active));
        assert_eq!(state(&[USER, TEXT, TOOL, RESULT]), Some(Activity::Active));
        assert_eq!(
            state(&[USER, TEXT, TOOL, RESULT, DONE]),
            Some(Activity::Idle)
        );
        // Snapshots and other bookkeeping lines are skipped.
        assert_eq!(state(&[DONE, SNAPSHOT]), Some(Activity::Idle));
        assert_eq!(state(&[USER, API_ERROR]), Some(Activity::WaitingInput));
        assert_eq!(state(&[SNAPSHOT]), None);
        // Text 58 s old without end_turn: not active any more.
        assert_eq!(state(&[USER, TEXT]), Some(Activity::Idle));
    }

    /// As 2.1.328 logs a 500 it retries, and the turn it then gives up.
    const RETRYING: &str = r#"{"type":"system","subtype":"api_error","level":"error","error":{"message":"500 {\"type\":\"error\"}","status":500,"formatted":"500 scripted"},"retryInMs":582,"retryAttempt":1,"maxRetries":2,"timestamp":"2025-10-01T11:59:58.000Z"}"#;
    const GAVE_UP: &str = r#"{"type":"assistant","error":"server_error","isApiErrorMessage":true,"message":{"id":"y","model":"<synthetic>","role":"assistant","content":[{"type":"text","text":"API Error: 500 scripted. This is a server-side issue, usually temporary."}],"stop_reason":"stop_sequence"},"timestamp":"2025-10-01T11:59:59.000Z"}"#;

    #[test]
    fn model_api_failures_are_retrying_then_a_question_for_a_human() {
        let now = DateTime::parse_from_rfc3339("2025-10-01T12:00:00Z")
            .expect("date")
            .with_timezone(&Utc);
        let log = [USER, RETRYING].join("\n");
        let Some(Reading::ApiRetrying(_, f)) = classify(&log, now) else {
            panic!("retrying: {:?}", classify(&log, now));
        };
        assert_eq!(
            (f.status, f.attempt, f.max_retries, f.message.as_str()),
            (Some(500), Some(1), Some(2), "500 scripted")
        );
        let sig = Reading::ApiRetrying(now, f).signal(now);
        assert_eq!(sig.activity, Activity::Active);
        assert!(sig.api_failure.is_some());
        let summary = r#"{"type":"system","subtype":"turn_duration","durationMs":9,"timestamp":"2025-10-01T11:59:59.500Z"}"#;
        let log = [USER, RETRYING, GAVE_UP, summary].join("\n");
        let Some(Reading::ApiFailed(_, f)) = classify(&log, now) else {
            panic!("gave up: {:?}", classify(&log, now));
        };
        assert_eq!((f.status, f.attempt), (Some(500), None));
        assert_eq!(f.message, "API Error: 500 scripted");
        assert!(
            f.question().contains("API Error: 500 scripted"),
            "{}",
            f.question()
        );
    }

    #[test]
    fn a_question_waits_only_until_it_is_answered() {
        assert_eq!(state(&[USER, ASK]), Some(Activity::WaitingInput));
        // agent-orchestrator #9: after the answer (and after the turn ends) it is not sticky.
        assert_eq!(state(&[USER, ASK, ANSWER]), Some(Activity::Active));
        assert_eq!(state(&[USER, ASK, ANSWER, DONE]), Some(Activity::Idle));
    }

    #[test]
    fn a_parallel_call_logged_late_dates_from_its_message_not_its_entry() {
        // The second call of the same response (`msg_01A`), logged seconds after the first
        // call's dialog was shown: the response began with its first block.
        let second = TOOL
            .replace("toolu_01", "toolu_03")
            .replace("cargo test", "cargo fmt")
            .replace("\"a2\"", "\"a5\"")
            .replace("11:59:03.000Z", "11:59:07.000Z");
        let r = classify(&[USER, TEXT, TOOL, &second].join("\n"), now()).expect("reading");
        let s = r.signal(now());
        assert_eq!(s.activity, Activity::Active);
        assert_eq!(s.at, parse_ts("2025-10-01T11:59:02Z").expect("ts"));
        // Another response is its own time.
        let next = second.replace("msg_01A", "msg_01D");
        let r = classify(&[USER, TEXT, TOOL, &next].join("\n"), now()).expect("reading");
        assert_eq!(
            r.signal(now()).at,
            parse_ts("2025-10-01T11:59:07Z").expect("ts")
        );
    }

    #[test]
    fn a_finished_turn_is_idle_since_its_last_entry() {
        let r = classify(&[USER, DONE].join("\n"), now()).expect("reading");
        assert_eq!(
            r.signal(now()).at,
            parse_ts("2025-10-01T11:59:45Z").expect("ts")
        );
    }

    #[test]
    fn usage_counts_each_message_once_and_prices_it() {
        let u = builtin_usage(&[USER, TEXT, TOOL, RESULT, DONE].join("\n"));
        assert_eq!(u.input_tokens, 14);
        assert_eq!(u.output_tokens, 160);
        assert_eq!(u.cache_tokens, 2000 + 10000 + 12000);
        // Sonnet: $3 in, $15 out, writes 3.75, reads 0.30 per million.
        let expected = (14.0 * 3.0 + 160.0 * 15.0 + 2000.0 * 3.75 + 22000.0 * 0.3) / 1e6;
        let cost = u.cost_usd.expect("priced");
        assert!((cost - expected).abs() < 1e-12, "{cost} vs {expected}");
        let unknown = builtin_usage(&TEXT.replace("claude-sonnet-4-5-20250929", "mystery-1"));
        assert_eq!(unknown.cost_usd, None);
        assert_eq!(
            unknown.cost_source,
            Some(crate::store::CostSource::Unpriced)
        );
        assert_eq!(unknown.unpriced_models, ["mystery-1"]);
    }

    #[test]
    fn the_configured_table_prices_what_the_agent_does_not() {
        let table = crate::pricing::PriceTable::from_settings(
            &[(
                "claude-sonnet-4-5*".to_string(),
                crate::config::PriceSettings {
                    input: 1.0,
                    output: 2.0,
                    cache_read: Some(0.5),
                    cache_write: Some(0.25),
                },
            )]
            .into_iter()
            .collect(),
        );
        let u = usage(&[USER, TEXT, TOOL, RESULT, DONE].join("\n"), &table);
        let expected = (14.0 * 1.0 + 160.0 * 2.0 + 2000.0 * 0.25 + 22000.0 * 0.5) / 1e6;
        assert!(
            (u.cost_usd.expect("priced") - expected).abs() < 1e-12,
            "{u:?}"
        );
        assert_eq!(u.cost_source, Some(crate::store::CostSource::Config));
        // The agent's own figure still wins over the user's table.
        let cost = r#"{"type":"cost-state","sessionId":"s","totalCostUSD":0.0112,"hasUnknownModelCost":false}"#;
        let own = usage(&[USER, TEXT, cost].join("\n"), &table);
        assert_eq!(own.cost_source, Some(crate::store::CostSource::Agent));
    }

    #[test]
    fn project_dirs_are_named_like_the_cli_names_them() {
        assert_eq!(project_dir_name("/home/u/my.proj_x"), "-home-u-my-proj-x");
        let long = format!("/{}", "a".repeat(250));
        let name = project_dir_name(&long);
        assert_eq!(&name[..200], format!("-{}", "a".repeat(199)));
        assert_eq!(&name[200..201], "-");
        assert!(name.len() > 201 && name[201..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }

    #[test]
    fn launch_puts_rules_in_the_system_prompt_and_the_task_last() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = ctx(dir.path(), PROMPT);
        let (argv, env) = agent(PermissionMode::Default, None)
            .launch(&c)
            .expect("launch");
        assert_eq!(
            argv,
            [
                "claude",
                "--append-system-prompt",
                "## Project rules\n\nUse tabs.\n\n## How to work\n\nCommit your work.",
                "--",
                "Fix the parser."
            ]
        );
        assert!(env.is_empty());
    }

    #[test]
    fn permission_modes_model_args_and_command_override() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = ctx(dir.path(), "just do it");
        let argv = |mode| {
            let mut s = settings(AgentKind::ClaudeCode, mode, Some("sonnet"));
            s.command = vec!["/opt/wrapper".into(), "--wrapped".into()];
            s.args = vec!["--verbose".into()];
            ClaudeCodeAgent::new("c".into(), s)
                .launch(&c)
                .expect("launch")
                .0
        };
        assert_eq!(
            argv(PermissionMode::AutoEdit),
            [
                "/opt/wrapper",
                "--wrapped",
                "--permission-mode",
                "acceptEdits",
                "--model",
                "sonnet",
                "--verbose",
                "--",
                "just do it"
            ]
        );
        assert_eq!(
            argv(PermissionMode::Suggest)[2..4],
            ["--permission-mode", "plan"]
        );
        let bypass = argv(PermissionMode::Permissionless);
        assert_eq!(bypass[2], "--dangerously-skip-permissions");
        // The operator's choice answers the CLI's bypass-mode disclaimer.
        let i = bypass
            .iter()
            .position(|a| a == "--settings")
            .expect("--settings");
        let settings: Value = serde_json::from_str(&bypass[i + 1]).expect("json");
        assert_eq!(settings["skipDangerousModePermissionPrompt"], true);
        assert!(!argv(PermissionMode::AutoEdit)
            .iter()
            .any(|a| a == "--settings"));
        assert!(!argv(PermissionMode::Default)
            .iter()
            .any(|a| a.contains("permission")));
    }

    #[test]
    fn a_long_prompt_is_passed_by_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let big = format!("## Task\n\n{}\n", "x".repeat(INLINE_PROMPT_MAX));
        let c = ctx(dir.path(), &big);
        let (argv, _) = agent(PermissionMode::Default, None)
            .launch(&c)
            .expect("launch");
        assert_eq!(argv[1], "--append-system-prompt-file");
        assert_eq!(argv[2], path(&c.prompt_file));
        assert!(argv.iter().all(|a| a.len() < 1024));
    }

    #[test]
    fn resume_uses_the_known_or_the_newest_conversation() {
        let dir = tempfile::tempdir().expect("tmp");
        let home = dir.path().join("home");
        let mut s = settings(AgentKind::ClaudeCode, PermissionMode::Default, None);
        s.env.insert("HOME".into(), path(&home));
        let a = ClaudeCodeAgent::new("c".into(), s);
        let mut c = ctx(dir.path(), PROMPT);
        c.resume = true;
        std::fs::create_dir_all(&c.workspace).expect("ws");
        // Nothing to resume: a fresh start with the task.
        let (argv, env) = a.launch(&c).expect("launch");
        assert_eq!(argv.last().map(String::as_str), Some("Fix the parser."));
        assert_eq!(env.get("HOME"), Some(&path(&home)));
        // A conversation on disk is found.
        let pdir = a.project_dir(&c.workspace).expect("dir");
        std::fs::create_dir_all(&pdir).expect("mkdir");
        std::fs::write(pdir.join(format!("{SESSION}.jsonl")), USER).expect("write");
        std::fs::write(pdir.join("agent-5.jsonl"), USER).expect("write");
        let (argv, _) = a.launch(&c).expect("launch");
        let i = argv.iter().position(|x| x == "--resume").expect("--resume");
        assert_eq!(argv[i + 1], SESSION);
        assert!(!argv.contains(&"--".to_string()), "no new prompt on resume");
        // A restart's instructions: the resumed conversation's next prompt.
        c.message = Some("CI failed on your PR. Fix it and push.".into());
        let (argv, _) = a.launch(&c).expect("launch");
        assert_eq!(
            argv[argv.len() - 2..],
            ["--", "CI failed on your PR. Fix it and push."]
        );
        assert_eq!(argv[i + 1], SESSION);
        assert!(a.takes_message_at_launch());
        c.message = None;
        // An id the caller knows wins.
        c.agent_session_id = Some("given".into());
        assert!(a
            .launch(&c)
            .expect("launch")
            .0
            .contains(&"given".to_string()));
    }

    #[tokio::test]
    async fn a_dialog_on_screen_that_the_log_has_not_caught_up_with_is_the_question() {
        // Claude Code draws the next permission dialog before it logs the call: the log's
        // pending call is the one just answered (`cargo test`), the screen asks another.
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = settings(AgentKind::ClaudeCode, PermissionMode::Default, None);
        s.env.insert("HOME".into(), path(&dir.path().join("home")));
        let a = ClaudeCodeAgent::new("c".into(), s);
        let ws = dir.path().join("ws");
        let pdir = a.project_dir(&ws).expect("dir");
        std::fs::create_dir_all(&pdir).expect("mkdir");
        std::fs::write(
            pdir.join(format!("{SESSION}.jsonl")),
            [USER, TOOL].join("\n"),
        )
        .expect("log");
        let probe = |screen: &str| ActivityProbe {
            workspace: ws.clone(),
            terminal: Some(screen.to_string()),
            last_output_at: None,
            now: now(),
        };
        let other = crate::plugins::activity::screen_fixture("claude-bash-permission.txt");
        assert_eq!(
            a.question(&probe(&other)).await.as_deref(),
            Some("approve Bash: git commit --allow-empty -m wip")
        );
        // The log's own call on screen keeps the log's wording (in full).
        let same = other.replace("git commit --allow-empty -m wip", "cargo test");
        assert_eq!(
            a.question(&probe(&same)).await.as_deref(),
            Some(
                waiting_question(
                    "Bash",
                    &serde_json::json!({"command": "cargo test", "description": "Run tests"})
                )
                .as_str()
            )
        );
        // No dialog the screen words: the log's call.
        assert_eq!(
            a.question(&probe("Do you want to proceed? (y/n)")).await,
            Some(waiting_question(
                "Bash",
                &serde_json::json!({"command": "cargo test", "description": "Run tests"})
            ))
        );
    }

    #[tokio::test]
    async fn activity_and_usage_come_from_the_workspace_log() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = settings(AgentKind::ClaudeCode, PermissionMode::Default, None);
        s.env.insert("HOME".into(), path(&dir.path().join("home")));
        let a = ClaudeCodeAgent::new("c".into(), s);
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(&ws).expect("ws");
        let probe = ActivityProbe {
            workspace: ws.clone(),
            terminal: Some("Do you want to proceed? (y/n)".into()),
            last_output_at: None,
            now: now(),
        };
        // No log yet: the screen decides.
        let sig = a.activity(&probe).await.expect("ok").expect("signal");
        assert_eq!(sig.activity, Activity::WaitingInput);
        let pdir = a.project_dir(&ws).expect("dir");
        std::fs::create_dir_all(&pdir).expect("mkdir");
        std::fs::write(
            pdir.join(format!("{SESSION}.jsonl")),
            [USER, TEXT, TOOL, RESULT, DONE].join("\n"),
        )
        .expect("write");
        let sig = a.activity(&probe).await.expect("ok").expect("signal");
        // The log says the turn finished: a stale question on screen does not override it.
        assert_eq!(sig.activity, Activity::Idle);
        assert_eq!(
            a.usage(&ws)
                .await
                .expect("ok")
                .expect("usage")
                .output_tokens,
            160
        );
        assert_eq!(
            a.agent_session_id(&ws).await.expect("ok").as_deref(),
            Some(SESSION)
        );
    }
}
