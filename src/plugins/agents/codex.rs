//! The `codex` agent (OpenAI's Codex CLI, interactive TUI, not `exec`).
//!
//! Launch: `codex [resume] [--sandbox S --ask-for-approval on-request |
//! --dangerously-bypass-approvals-and-sandbox] [--model M] -c check_for_update_on_startup=false
//! -c projects={"<worktree>"={trust_level="trusted"}} [args…] (-- <prompt> | <session id>)`.
//! The `projects` override keeps Codex 0.169 from stopping every first launch in a new
//! worktree on "Trust this folder?". The whole prompt file is the positional prompt (Codex
//! has no "append to the system prompt" flag; `model_instructions_file` would replace Codex's
//! own instructions); over [`INLINE_PROMPT_MAX`] the prompt points at the file. Permission
//! modes: `auto-edit` = workspace-write sandbox, `suggest` = read-only sandbox, both asking on
//! request; `permissionless` = no sandbox, no approvals. (Codex 0.169 accepts only `on-request`
//! and `never` for `--ask-for-approval`; `untrusted`/`on-failure` are gone.) Resume:
//! `codex resume … <id>`.
//!
//! Observation: Codex writes `$CODEX_HOME` (default `$HOME/.codex`)
//! `/sessions/YYYY/MM/DD/rollout-<time>-<id>.jsonl`, each line `{timestamp, type, payload}`;
//! the first is `session_meta` with the session `id` and its `cwd`, which is how a rollout is
//! matched to a workspace (newest first, at most [`MAX_SCAN`] files). Activity is the last
//! meaningful entry ([`classify`] lists the 0.169 entry kinds); a turn that ended on a model
//! error is `task_complete` with an `error`, read as failed. Token usage is the cumulative
//! `total_token_usage` of the last `token_count` event (or `token_usage_record`), its cost
//! the price of the model each `turn_context` names, from the `pricing:` table over the
//! built-in list prices ([`usage`]).

pub mod dialog;

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::log_tally::Tally;
use super::{program, prompt_pointer, with_message, Prompt, INLINE_PROMPT_MAX};
use crate::config::{AgentSettings, PermissionMode};
use crate::plugins::activity::{
    agent_home, combine, parse_ts, read_tail, terminal_question, ActivityProbe, ActivitySignal,
    Reading, Usage, TAIL_BYTES,
};
use crate::plugins::{Agent, AgentContext, PluginError, PluginResult};
use crate::pricing::{PriceTable, Priced, Tokens};

/// How many rollout files (newest first) are searched for a workspace's session.
pub const MAX_SCAN: usize = 300;
/// Longest first line (`session_meta`, which may embed instructions) read while matching.
const MAX_META_LINE: u64 = 1024 * 1024;

/// Launches and observes the Codex CLI.
#[derive(Debug, Clone)]
pub struct CodexAgent {
    name: String,
    settings: AgentSettings,
    /// What tokens cost when the agent reports no cost.
    prices: Arc<PriceTable>,
    /// The usage of each rollout read so far (shared by the clones of this agent).
    tallies: Arc<super::log_tally::Tallies<UsageTally>>,
}

impl CodexAgent {
    /// A Codex agent called `name` with its settings.
    pub fn new(name: String, settings: AgentSettings) -> Self {
        CodexAgent {
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

    /// `$CODEX_HOME/sessions` (default `$HOME/.codex/sessions`) as the agent sees it.
    fn sessions_dir(&self) -> Option<PathBuf> {
        let home = match self.settings.env.get("CODEX_HOME") {
            Some(h) => PathBuf::from(h),
            None => agent_home(&self.settings.env)?.join(".codex"),
        };
        Some(home.join("sessions"))
    }

    async fn rollout(&self, workspace: &Path) -> PluginResult<Option<(PathBuf, String)>> {
        let Some(dir) = self.sessions_dir() else {
            return Ok(None);
        };
        let ws = workspace.to_path_buf();
        tokio::task::spawn_blocking(move || find_rollout(&dir, &ws))
            .await
            .map_err(|e| PluginError::Io(std::io::Error::other(e)))
    }
}

/// Sub-directories (or files) of `dir`, names descending (newest date first).
fn sorted_desc(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort_by(|a, b| b.file_name().cmp(&a.file_name()));
    v
}

/// The `(id, cwd)` of a rollout's `session_meta` line.
fn session_meta(path: &Path) -> Option<(String, String)> {
    let f = std::fs::File::open(path).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(f)
        .take(MAX_META_LINE)
        .read_line(&mut line)
        .ok()?;
    let v: Value = serde_json::from_str(&line).ok()?;
    if v["type"].as_str() != Some("session_meta") {
        return None;
    }
    let p = &v["payload"];
    Some((
        p["id"].as_str()?.to_string(),
        p["cwd"].as_str()?.to_string(),
    ))
}

/// The newest rollout under `sessions` whose `session_meta.cwd` is `workspace`, with its
/// session id. Blocking (directory listings and first lines).
pub fn find_rollout(sessions: &Path, workspace: &Path) -> Option<(PathBuf, String)> {
    let want = std::fs::canonicalize(workspace).unwrap_or_else(|_| workspace.to_path_buf());
    let same = |cwd: &str| {
        let p = PathBuf::from(cwd);
        p == workspace || std::fs::canonicalize(&p).is_ok_and(|c| c == want)
    };
    let mut scanned = 0;
    for year in sorted_desc(sessions) {
        for month in sorted_desc(&year) {
            for day in sorted_desc(&month) {
                for file in sorted_desc(&day) {
                    let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
                    if !name.is_some_and(|n| n.starts_with("rollout-") && n.ends_with(".jsonl")) {
                        continue;
                    }
                    scanned += 1;
                    if scanned > MAX_SCAN {
                        return None;
                    }
                    if let Some((id, cwd)) = session_meta(&file) {
                        if same(&cwd) {
                            return Some((file, id));
                        }
                    }
                }
            }
        }
    }
    None
}

fn is_context_message(payload: &Value) -> bool {
    payload["content"]
        .as_array()
        .and_then(|c| c.first())
        .and_then(|i| i["text"].as_str())
        .is_some_and(|t| {
            let t = t.trim_start();
            t.starts_with("<environment_context>") || t.starts_with("<user_instructions>")
        })
}

/// Classifies the last meaningful line of a Codex rollout.
///
/// Codex 0.169 writes, per turn: `task_started`, `turn_context`, `thread_settings_applied`,
/// the user `message` (`response_item`) and `item_completed` (`UserMessage`), then per model
/// answer its output items (`function_call`, `message`, `reasoning`), a `token_usage_record`
/// (top-level type) and a `token_count` event, with `item_completed` (`CommandExecution`,
/// `AgentMessage`, …) and `function_call_output` as tools finish, and finally `task_complete`,
/// which carries an `error` when the turn died on a model or stream error (after Codex's
/// retries). Approval requests and decisions are not logged at all: while Codex waits for one
/// the log ends with the pending `function_call`, read as work, and the screen shows the
/// question. Older versions' `user_message`/`agent_message`/`exec_command_*`/
/// `exec_approval_request`/`error` events are still understood.
pub fn classify(log: &str, mtime: DateTime<Utc>) -> Option<Reading> {
    log.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| {
            let at = v["timestamp"].as_str().and_then(parse_ts).unwrap_or(mtime);
            let p = &v["payload"];
            let kind = p["type"].as_str().unwrap_or("");
            match v["type"].as_str()? {
                "session_meta" => Some(Reading::Finished(at)),
                "turn_context" | "compacted" => Some(Reading::Working(at)),
                "event_msg" => match kind {
                    // The turn died on the model API (after Codex's retries): a human decides
                    // whether to try again, as for Claude.
                    "task_complete" if is_error(&p["error"]) => {
                        Some(Reading::ApiFailed(at, api_gave_up(&p["error"], at)))
                    }
                    "task_complete" | "turn_aborted" => Some(Reading::Finished(at)),
                    "exec_approval_request"
                    | "apply_patch_approval_request"
                    | "request_user_input"
                    | "elicitation_request" => Some(Reading::Waiting(at)),
                    "error" | "stream_error" => Some(Reading::Failed(at)),
                    "agent_message" => Some(Reading::Replying(at)),
                    "item_completed" => match p["item"]["type"].as_str() {
                        Some("AgentMessage") => Some(Reading::Replying(at)),
                        _ => Some(Reading::Working(at)),
                    },
                    "item_started"
                    | "user_message"
                    | "task_started"
                    | "agent_reasoning"
                    | "exec_command_begin"
                    | "exec_command_end"
                    | "patch_apply_begin"
                    | "patch_apply_end"
                    | "mcp_tool_call_begin"
                    | "mcp_tool_call_end"
                    | "web_search_begin"
                    | "web_search_end"
                    | "turn_diff" => Some(Reading::Working(at)),
                    // token_count, thread_settings_applied and other bookkeeping.
                    _ => None,
                },
                "response_item" => match kind {
                    "message" => match p["role"].as_str() {
                        Some("user") if !is_context_message(p) => Some(Reading::Working(at)),
                        Some("assistant") => Some(Reading::Replying(at)),
                        _ => None,
                    },
                    "reasoning"
                    | "function_call"
                    | "function_call_output"
                    | "custom_tool_call"
                    | "custom_tool_call_output"
                    | "local_shell_call"
                    | "web_search_call" => Some(Reading::Working(at)),
                    _ => None,
                },
                // token_usage_record, world_state and other bookkeeping.
                _ => None,
            }
        })
}

/// Whether a `task_complete.error` is an actual error (absent and `null` are not).
/// The failure a turn's `task_complete.error` names (`{"message": …, "codex_error_info": …}`).
fn api_gave_up(error: &Value, at: DateTime<Utc>) -> crate::plugins::activity::ApiFailure {
    crate::plugins::activity::ApiFailure {
        logged_at: at,
        status: None,
        message: error["message"]
            .as_str()
            .or(error["codex_error_info"].as_str())
            .unwrap_or("the turn failed")
            .to_string(),
        attempt: None,
        max_retries: None,
    }
}

fn is_error(e: &Value) -> bool {
    !(e.is_null() || e.as_object().is_some_and(|o| o.is_empty()))
}

/// Cumulative counts as Codex logs them (`input_tokens` includes the cached ones).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Totals {
    input: u64,
    cached: u64,
    output: u64,
}

impl Totals {
    fn from_json(t: &Value) -> Option<Totals> {
        t.is_object().then(|| {
            let n = |k: &str| t[k].as_u64().unwrap_or(0);
            Totals {
                input: n("input_tokens"),
                cached: n("cached_input_tokens"),
                output: n("output_tokens"),
            }
        })
    }

    fn since(self, start: Totals) -> Totals {
        Totals {
            input: self.input.saturating_sub(start.input),
            cached: self.cached.saturating_sub(start.cached),
            output: self.output.saturating_sub(start.output),
        }
    }

    /// As priced: cached input is a cache read (Codex logs no cache writes).
    fn tokens(self) -> Tokens {
        Tokens {
            input: self.input.saturating_sub(self.cached),
            output: self.output,
            cache_read: self.cached,
            cache_write: 0,
        }
    }
}

/// The model a line says is in effect from here on (`turn_context.model`, or
/// `thread_settings_applied.thread_settings.model`).
fn model_of(v: &Value) -> Option<&str> {
    let p = &v["payload"];
    match (v["type"].as_str()?, p["type"].as_str()) {
        ("turn_context", _) => p["model"].as_str(),
        ("event_msg", Some("thread_settings_applied")) => p["thread_settings"]["model"].as_str(),
        _ => None,
    }
}

/// The session's cumulative totals a line reports: `token_count.info.total_token_usage`, or
/// (0.169) `token_usage_record.thread_token_usage`.
fn totals_of(v: &Value) -> Option<Totals> {
    let p = &v["payload"];
    match (v["type"].as_str()?, p["type"].as_str()) {
        ("event_msg", Some("token_count")) => Totals::from_json(&p["info"]["total_token_usage"]),
        ("token_usage_record", _) => Totals::from_json(&p["thread_token_usage"]),
        _ => None,
    }
}

/// Usage over a whole rollout: the last cumulative totals (Codex counts cached input inside
/// `input_tokens`; here it is split out into `cache_tokens`; reasoning is part of
/// `output_tokens`), and the cost at `prices` (the `pricing:` table over the built-in list
/// prices), each stretch of tokens at the price of the model in effect then (a `/model`
/// switch starts a new stretch). Codex reports no cost of its own. Cost is `None`
/// (`unpriced`, the models named) when tokens were spent on a model without a price. `None`
/// without any totals.
///
/// Codex logs only its turn requests: the TUI's session-title request is not counted.
pub fn usage(log: &str, prices: &PriceTable) -> Option<Usage> {
    let mut tally = UsageTally::default();
    tally.feed(log);
    tally.usage(prices)
}

/// What the lines of a rollout read so far add up to (see [`usage`]).
#[derive(Debug, Default)]
pub struct UsageTally {
    /// The model in effect.
    model: Option<String>,
    /// The last cumulative totals.
    last: Option<Totals>,
    /// The totals when the model in effect took over.
    stretch_start: Totals,
    /// The tokens of each earlier stretch, with its model.
    stretches: Vec<(Option<String>, Totals)>,
}

impl Tally for UsageTally {
    fn feed(&mut self, log: &str) {
        for line in log.lines() {
            let relevant = line.contains("token_count")
                || line.contains("token_usage_record")
                || line.contains("turn_context")
                || line.contains("thread_settings_applied");
            if !relevant {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if let Some(t) = totals_of(&v) {
                self.last = Some(t);
            } else if let Some(m) = model_of(&v) {
                if self.model.as_deref() != Some(m) {
                    let upto = self.last.unwrap_or_default();
                    self.stretches
                        .push((self.model.take(), upto.since(self.stretch_start)));
                    self.stretch_start = upto;
                    self.model = Some(m.to_string());
                }
            }
        }
    }
}

impl UsageTally {
    /// The usage so far, priced with `prices`; `None` without any totals.
    pub fn usage(&self, prices: &PriceTable) -> Option<Usage> {
        let t = self.last?;
        let mut priced = Priced::default();
        let current = (self.model.clone(), t.since(self.stretch_start));
        for (model, tokens) in self.stretches.iter().chain([&current]) {
            priced.add(prices, model.as_deref().unwrap_or(""), tokens.tokens());
        }
        let (cost_usd, cost_source) = priced.result();
        Some(Usage {
            input_tokens: t.input.saturating_sub(t.cached),
            output_tokens: t.output,
            cache_tokens: t.cached,
            cost_usd,
            cost_source,
            unpriced_models: priced.unpriced,
        })
    }
}

/// `-c projects={"<workspace>"={trust_level="trusted"}}`: Codex 0.169 otherwise stops the
/// first launch in every new worktree on "Trust this folder?". (The dotted
/// `projects."<path>".trust_level` form is not honoured.) The canonical path is trusted too
/// when it differs (a workspace under a symlink).
fn trust_override(workspace: &Path) -> String {
    let mut paths = vec![workspace.to_path_buf()];
    if let Ok(c) = std::fs::canonicalize(workspace) {
        if c != workspace {
            paths.push(c);
        }
    }
    let entries: Vec<String> = paths
        .iter()
        .map(|p| {
            format!(
                "{}={{trust_level=\"trusted\"}}",
                toml_string(&p.to_string_lossy())
            )
        })
        .collect();
    format!("projects={{{}}}", entries.join(","))
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The question a Codex screen asks: its approval dialog worded whole, else the bottom line's.
fn asked_on(screen: &str) -> Option<String> {
    dialog::screen_question(screen).or_else(|| terminal_question(screen))
}

#[async_trait]
impl Agent for CodexAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn preflight(&self) -> Option<crate::preflight::AgentLaunch> {
        Some(crate::preflight::AgentLaunch::from_settings(
            &self.name,
            &self.settings,
        ))
    }

    fn state_paths(&self, env: &BTreeMap<String, String>) -> Vec<PathBuf> {
        match env.get("CODEX_HOME").filter(|d| !d.is_empty()) {
            Some(dir) => vec![PathBuf::from(dir)],
            None => env
                .get("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| vec![PathBuf::from(h).join(".codex")])
                .unwrap_or_default(),
        }
    }

    fn launch(&self, ctx: &AgentContext) -> PluginResult<(Vec<String>, BTreeMap<String, String>)> {
        let s = &self.settings;
        let mut argv = program(s, "codex");
        let resume_id = if ctx.resume {
            ctx.agent_session_id.clone().or_else(|| {
                let dir = self.sessions_dir()?;
                find_rollout(&dir, &ctx.workspace).map(|(_, id)| id)
            })
        } else {
            None
        };
        if resume_id.is_some() {
            argv.push("resume".into());
        }
        let flags: &[&str] = match ctx.mode(s) {
            PermissionMode::Default => &[],
            PermissionMode::AutoEdit => &[
                "--sandbox",
                "workspace-write",
                "--ask-for-approval",
                "on-request",
            ],
            PermissionMode::Suggest => {
                &["--sandbox", "read-only", "--ask-for-approval", "on-request"]
            }
            PermissionMode::Permissionless => &["--dangerously-bypass-approvals-and-sandbox"],
        };
        argv.extend(flags.iter().map(|f| f.to_string()));
        if let Some(m) = &s.model {
            argv.extend(["--model".into(), m.clone()]);
        }
        // An update prompt would block an unattended TUI.
        argv.extend(["-c".into(), "check_for_update_on_startup=false".into()]);
        argv.extend(["-c".into(), trust_override(&ctx.workspace)]);
        argv.extend(s.args.iter().cloned());
        match resume_id {
            Some(id) => {
                argv.push(id);
                // `codex resume [SESSION_ID] [PROMPT]`: the restart's instructions.
                if let Some(m) = &ctx.message {
                    argv.extend(["--".into(), m.clone()]);
                }
            }
            None => {
                let prompt = Prompt::read(&ctx.prompt_file)?;
                argv.push("--".into());
                let task = if prompt.full.len() <= INLINE_PROMPT_MAX {
                    prompt.full.trim().to_string()
                } else {
                    prompt_pointer(&ctx.prompt_file)
                };
                argv.push(with_message(task, ctx.message.as_deref()));
            }
        }
        Ok((argv, s.env.clone()))
    }

    fn takes_message_at_launch(&self) -> bool {
        true
    }

    async fn activity(&self, probe: &ActivityProbe) -> PluginResult<Option<ActivitySignal>> {
        let native = match self.rollout(&probe.workspace).await? {
            Some((path, _)) => read_tail(&path, TAIL_BYTES)
                .await?
                .and_then(|(text, mtime)| classify(&text, mtime))
                .map(|r| r.signal(probe.now)),
            None => None,
        };
        Ok(combine(native, probe))
    }

    async fn question(&self, probe: &ActivityProbe) -> Option<String> {
        asked_on(probe.terminal.as_deref()?)
    }

    fn shows_other_question(&self, screen: &str, asked: &str, _workspace: &Path) -> bool {
        asked_on(screen).is_some_and(|q| !crate::domain::question::alike(&q, asked))
    }

    async fn usage(&self, workspace: &Path) -> PluginResult<Option<Usage>> {
        let Some((path, _)) = self.rollout(workspace).await? else {
            return Ok(None);
        };
        // The whole log, read on from the last look: cost is priced per stretch of the model
        // in effect, which a tail cannot tell.
        Ok(self
            .tallies
            .read(&path, |t| t.usage(&self.prices))
            .await?
            .flatten())
    }

    async fn agent_session_id(&self, workspace: &Path) -> PluginResult<Option<String>> {
        Ok(self.rollout(workspace).await?.map(|(_, id)| id))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ctx, path, settings, PROMPT};
    use super::*;
    use crate::config::AgentKind;
    use crate::store::Activity;

    fn builtin_usage(log: &str) -> Option<Usage> {
        usage(log, &PriceTable::builtin_only())
    }

    const ID: &str = "0199a2b3-c4d5-7e6f-8a9b-0c1d2e3f4a5b";

    /// An answer is typed only onto the dialog it answers, worded as the session records it.
    #[test]
    fn another_approval_on_screen_is_another_question() {
        use crate::plugins::activity::screen_fixture;
        let a = CodexAgent::new(
            "codex".into(),
            settings(AgentKind::Codex, PermissionMode::Default, None),
        );
        let ws = Path::new("/w");
        let run = screen_fixture("codex-run-command.txt");
        let edits = screen_fixture("codex-edits.txt");
        let asked = dialog::screen_question(&run).expect("dialog");
        assert!(!a.shows_other_question(&run, &asked, ws));
        assert!(a.shows_other_question(&edits, &asked, ws));
        assert!(!a.shows_other_question("› \n", &asked, ws));
    }

    fn meta(cwd: &str) -> String {
        format!(
            r#"{{"timestamp":"2025-10-01T11:58:00.000Z","type":"session_meta","payload":{{"id":"{ID}","timestamp":"2025-10-01T11:58:00.000Z","cwd":"{cwd}","originator":"codex_cli_rs","cli_version":"0.46.0","instructions":null,"source":"cli","model_provider":"openai"}}}}"#
        )
    }
    const CONTEXT: &str = r#"{"timestamp":"2025-10-01T11:58:00.100Z","type":"response_item","payload":{"type":"message","role":"user","content":[{"type":"input_text","text":"<environment_context>\n  <cwd>/w</cwd>\n</environment_context>"}]}}"#;
    const TURN: &str = r#"{"timestamp":"2025-10-01T11:59:00.000Z","type":"turn_context","payload":{"cwd":"/w","approval_policy":"on-request","sandbox_policy":{"mode":"workspace-write"},"model":"gpt-5-codex","effort":"medium","summary":"auto"}}"#;
    const USER: &str = r#"{"timestamp":"2025-10-01T11:59:00.100Z","type":"event_msg","payload":{"type":"user_message","message":"Fix the parser.","images":[]}}"#;
    const CALL: &str = r#"{"timestamp":"2025-10-01T11:59:10.000Z","type":"response_item","payload":{"type":"function_call","name":"shell","arguments":"{\"command\":[\"bash\",\"-lc\",\"cargo test\"]}","call_id":"call_1"}}"#;
    const APPROVAL: &str = r#"{"timestamp":"2025-10-01T11:59:11.000Z","type":"event_msg","payload":{"type":"exec_approval_request","call_id":"call_1","command":["bash","-lc","cargo test"],"cwd":"/w"}}"#;
    const OUTPUT: &str = r#"{"timestamp":"2025-10-01T11:59:40.000Z","type":"response_item","payload":{"type":"function_call_output","call_id":"call_1","output":"{\"output\":\"test result: ok\",\"metadata\":{\"exit_code\":0,\"duration_seconds\":28.1}}"}}"#;
    const TOKENS: &str = r#"{"timestamp":"2025-10-01T11:59:44.000Z","type":"event_msg","payload":{"type":"token_count","info":{"total_token_usage":{"input_tokens":12000,"cached_input_tokens":9000,"output_tokens":300,"reasoning_output_tokens":128,"total_tokens":12300},"last_token_usage":{"input_tokens":6000,"cached_input_tokens":5000,"output_tokens":100,"reasoning_output_tokens":64,"total_tokens":6100},"model_context_window":272000},"rate_limits":{"primary":{"used_percent":7.0,"window_minutes":300}}}}"#;
    const MESSAGE: &str = r#"{"timestamp":"2025-10-01T11:59:45.000Z","type":"event_msg","payload":{"type":"agent_message","message":"All tests pass."}}"#;
    const COMPLETE: &str = r#"{"timestamp":"2025-10-01T11:59:45.500Z","type":"event_msg","payload":{"type":"task_complete","last_agent_message":"All tests pass."}}"#;

    fn now() -> DateTime<Utc> {
        parse_ts("2025-10-01T12:00:00Z").expect("ts")
    }

    // Codex 0.169.0 (TUI, `--sandbox workspace-write --ask-for-approval on-request`), recorded
    // against the scripted model server; long fields trimmed, `metadata` and `world_state`
    // lines dropped.
    mod v169 {
        pub const META: &str = r#"{"timestamp":"2026-12-01T22:00:51.430Z","ordinal":0,"type":"session_meta","payload":{"session_id":"01a2339f-f74e-7782-b01d-5f21762d97b8","id":"01a2339f-f74e-7782-b01d-5f21762d97b8","timestamp":"2026-12-01T22:00:51.297Z","cwd":"/w","originator":"codex-tui","cli_version":"0.169.0","source":"cli","model_provider":"fake"}}"#;
        pub const STARTED: &str = r#"{"timestamp":"2026-12-01T22:00:51.430Z","ordinal":1,"type":"event_msg","payload":{"type":"task_started","turn_id":"01a2339f-f7c6-7cf1-9b01-066a5cfde6b3","started_at":1796162451}}"#;
        pub const CONTEXT: &str = r#"{"timestamp":"2026-12-01T22:00:51.451Z","ordinal":3,"type":"response_item","payload":{"type":"message","id":"msg_01a2339f-f7fa-73d1-aeff-5d309cde4951","role":"user","content":[{"type":"input_text","text":"<environment_context>\n  <cwd>/w</cwd>\n "}]}}"#;
        pub const TURN: &str = r#"{"timestamp":"2026-12-01T22:00:51.454Z","ordinal":5,"type":"turn_context","payload":{"turn_id":"01a2339f-f7c6-7cf1-9b01-066a5cfde6b3","cwd":"/w","approval_policy":"on-request","model":"gpt-5-codex","sandbox_policy":{"type":"workspace-write","network_access":false}}}"#;
        pub const SETTINGS: &str = r#"{"timestamp":"2026-12-01T22:00:51.455Z","ordinal":6,"type":"event_msg","payload":{"type":"thread_settings_applied","thread_settings":{"model":"gpt-5-codex","model_provider_id":"fake","approval_policy":"on-request"}}}"#;
        pub const USER: &str = r#"{"timestamp":"2026-12-01T22:00:51.469Z","ordinal":7,"type":"response_item","payload":{"type":"message","id":"msg_01a2339f-f80d-79e2-b10c-d70a4382e682","role":"user","content":[{"type":"input_text","text":"write the file"}]}}"#;
        pub const USER_ITEM: &str = r#"{"timestamp":"2026-12-01T22:00:51.470Z","ordinal":8,"type":"event_msg","payload":{"type":"item_completed","turn_id":"01a2339f","item":{"type":"UserMessage","id":"01a2339f-f80d-79e2-b10c-d7199852a7ce","content":[{"type":"text","text":"write the file","text_elements":[]}]}}}"#;
        pub const CALL: &str = r#"{"timestamp":"2026-12-01T22:00:51.513Z","ordinal":9,"type":"response_item","payload":{"type":"function_call","status":"completed","id":"fc_0","name":"exec_command","arguments":"{\"cmd\": \"echo made > out.txt && echo WROTE-OK\"}","call_id":"call_0"}}"#;
        pub const RECORD_1: &str = r#"{"timestamp":"2026-12-01T22:00:51.517Z","ordinal":10,"type":"token_usage_record","payload":{"response_id":"resp_0","usage":{"input_tokens":1000,"cached_input_tokens":200,"cache_write_input_tokens":0,"output_tokens":50,"reasoning_output_tokens":10,"total_tokens":1050},"thread_token_usage":{"input_tokens":1000,"cached_input_tokens":200,"cache_write_input_tokens":0,"output_tokens":50,"reasoning_output_tokens":10,"total_tokens":1050}}}"#;
        pub const EXEC_ITEM: &str = r#"{"timestamp":"2026-12-01T22:00:51.785Z","ordinal":11,"type":"event_msg","payload":{"type":"item_completed","turn_id":"01a2339f","item":{"type":"CommandExecution","id":"call_0","command":["/bin/bash","-lc","echo made > out.txt && echo WROTE-OK"],"status":"completed","exit_code":0}}}"#;
        pub const OUTPUT: &str = r#"{"timestamp":"2026-12-01T22:00:51.790Z","ordinal":12,"type":"response_item","payload":{"type":"function_call_output","id":"fco_01a2339f-f94e-7212-8f8f-8ec23f48a48d","call_id":"call_0","output":"Chunk ID: e1dcd0\nWall time: 0.0662 secon"}}"#;
        pub const COUNT_1: &str = r#"{"timestamp":"2026-12-01T22:00:51.800Z","ordinal":13,"type":"event_msg","payload":{"type":"token_count","info":{"total_token_usage":{"input_tokens":1000,"cached_input_tokens":200,"cache_write_input_tokens":0,"output_tokens":50,"reasoning_output_tokens":10,"total_tokens":1050},"last_token_usage":{"input_tokens":1000,"cached_input_tokens":200,"cache_write_input_tokens":0,"output_tokens":50,"reasoning_output_tokens":10,"total_tokens":1050},"last_usage_includes_reasoning":false,"model_context_window":258400},"rate_limits":null}}"#;
        pub const AGENT_ITEM: &str = r#"{"timestamp":"2026-12-01T22:00:51.853Z","ordinal":14,"type":"event_msg","payload":{"type":"item_completed","turn_id":"01a2339f","item":{"type":"AgentMessage","id":"msg_2","content":[{"type":"Text","text":"done"}]}}}"#;
        pub const REPLY: &str = r#"{"timestamp":"2026-12-01T22:00:51.859Z","ordinal":15,"type":"response_item","payload":{"type":"message","id":"msg_2","role":"assistant","content":[{"type":"output_text","text":"done","annotations":[]}]}}"#;
        pub const RECORD_2: &str = r#"{"timestamp":"2026-12-01T22:00:51.863Z","ordinal":16,"type":"token_usage_record","payload":{"response_id":"resp_2","usage":{"input_tokens":1000,"cached_input_tokens":200,"cache_write_input_tokens":0,"output_tokens":50,"reasoning_output_tokens":10,"total_tokens":1050},"thread_token_usage":{"input_tokens":2000,"cached_input_tokens":400,"cache_write_input_tokens":0,"output_tokens":100,"reasoning_output_tokens":20,"total_tokens":2100}}}"#;
        pub const COUNT_2: &str = r#"{"timestamp":"2026-12-01T22:00:51.864Z","ordinal":17,"type":"event_msg","payload":{"type":"token_count","info":{"total_token_usage":{"input_tokens":2000,"cached_input_tokens":400,"cache_write_input_tokens":0,"output_tokens":100,"reasoning_output_tokens":20,"total_tokens":2100},"last_token_usage":{"input_tokens":1000,"cached_input_tokens":200,"cache_write_input_tokens":0,"output_tokens":50,"reasoning_output_tokens":10,"total_tokens":1050},"last_usage_includes_reasoning":false,"model_context_window":258400},"rate_limits":null}}"#;
        pub const COMPLETE: &str = r#"{"timestamp":"2026-12-01T22:00:51.877Z","ordinal":18,"type":"event_msg","payload":{"type":"task_complete","turn_id":"01a2339f-f7c6-7cf1-9b01-066a5cfde6b3","last_agent_message":"done","duration_ms":472}}"#;
        /// A turn whose every model request answered 500 (30 attempts over ~25 s).
        pub const FAILED: &str = r#"{"timestamp":"2026-12-01T21:58:37.288Z","ordinal":9,"type":"event_msg","payload":{"type":"task_complete","root_turn_id":"01a2339d-8ba2-7930-a173-459453b4f924","turn_id":"01a2339d-8ba2-7930-a173-459453b4f924","last_agent_message":null,"error":{"message":"We’re currently experiencing high demand, which may cause temporary errors.","codex_error_info":"internal_server_error"},"started_at":1796162292,"completed_at":1796162317,"duration_ms":24640}}"#;
    }

    fn state_at(lines: &[&str], now: &str) -> Option<Activity> {
        let now = parse_ts(now).expect("ts");
        classify(&lines.join("\n"), now).map(|r| r.signal(now).activity)
    }

    #[test]
    fn codex_0_169_rollout_events_map_to_activity() {
        use v169::*;
        let at = "2026-12-01T22:01:00Z";
        let s = |lines: &[&str]| state_at(lines, at);
        assert_eq!(s(&[META]), Some(Activity::Idle));
        assert_eq!(s(&[META, STARTED]), Some(Activity::Active));
        assert_eq!(
            s(&[META, STARTED, CONTEXT, TURN, SETTINGS]),
            Some(Activity::Active)
        );
        assert_eq!(
            s(&[META, STARTED, TURN, USER, USER_ITEM]),
            Some(Activity::Active)
        );
        // A command running, or waiting for an approval (which 0.169 does not log): the
        // pending call followed by its usage record.
        assert_eq!(
            s(&[META, USER_ITEM, CALL, RECORD_1]),
            Some(Activity::Active)
        );
        assert_eq!(
            s(&[META, CALL, RECORD_1, EXEC_ITEM, OUTPUT, COUNT_1]),
            Some(Activity::Active)
        );
        assert_eq!(
            s(&[META, OUTPUT, COUNT_1, AGENT_ITEM]),
            Some(Activity::Active)
        );
        assert_eq!(
            s(&[META, AGENT_ITEM, REPLY, RECORD_2, COUNT_2, COMPLETE]),
            Some(Activity::Idle)
        );
        assert_eq!(
            classify(&[META, REPLY, COUNT_2, COMPLETE].join("\n"), now()),
            Some(Reading::Finished(
                parse_ts("2026-12-01T22:00:51.877Z").expect("ts")
            ))
        );
        // A model error after Codex's retries ends the turn with `error`: failed, not
        // finished, and a human is asked whether to try again.
        let at = parse_ts("2026-12-01T21:58:37.288Z").expect("ts");
        let Some(Reading::ApiFailed(t, failure)) =
            classify(&[META, TURN, USER, USER_ITEM, FAILED].join("\n"), now())
        else {
            panic!("a failed turn")
        };
        assert_eq!(t, at);
        assert_eq!(
            failure.question(),
            "the model API failed (We’re currently experiencing high demand, which may cause \
             temporary errors.); answer to try again"
        );
        assert_eq!(s(&[META, USER_ITEM, FAILED]), Some(Activity::WaitingInput));
        // A pending call goes quiet after the weak window (an approval nobody answers too:
        // only the screen can tell).
        assert_eq!(
            state_at(&[META, CALL, RECORD_1], "2026-12-01T22:10:00Z"),
            Some(Activity::Idle)
        );
    }

    #[test]
    fn codex_0_169_usage_and_cost() {
        use v169::*;
        let log = [
            META, STARTED, TURN, SETTINGS, USER, CALL, RECORD_1, OUTPUT, COUNT_1, REPLY, RECORD_2,
            COUNT_2, COMPLETE,
        ]
        .join("\n");
        let u = builtin_usage(&log).expect("usage");
        assert_eq!(
            (u.input_tokens, u.cache_tokens, u.output_tokens),
            (1600, 400, 100)
        );
        // gpt-5-codex: $1.25 input, $0.125 cached, $10 output per million tokens.
        let want = (1600.0 * 1.25 + 400.0 * 0.125 + 100.0 * 10.0) / 1e6;
        assert!((u.cost_usd.expect("priced") - want).abs() < 1e-12, "{u:?}");
        // Before the first token_count, the usage record's thread totals count.
        let u = builtin_usage(&[META, TURN, CALL, RECORD_1].join("\n")).expect("usage");
        assert_eq!((u.input_tokens, u.cache_tokens), (800, 200));
        // An unknown model has no price; no totals, no usage.
        let other = TURN.replace("gpt-5-codex", "my-local-model");
        let u =
            builtin_usage(&[META, other.as_str(), RECORD_1, COUNT_1].join("\n")).expect("usage");
        assert_eq!(u.cost_usd, None);
        assert_eq!(u.cost_source, Some(crate::store::CostSource::Unpriced));
        assert_eq!(u.unpriced_models, ["my-local-model"]);
        // Priced once the user's table knows it, overriding nothing else.
        let table = PriceTable::from_settings(
            &[(
                "my-local-*".to_string(),
                crate::config::PriceSettings {
                    input: 2.0,
                    output: 4.0,
                    cache_read: Some(1.0),
                    cache_write: None,
                },
            )]
            .into_iter()
            .collect(),
        );
        let u = usage(
            &[META, other.as_str(), RECORD_1, COUNT_1].join("\n"),
            &table,
        )
        .expect("usage");
        let want = (800.0 * 2.0 + 200.0 * 1.0 + 50.0 * 4.0) / 1e6;
        assert!((u.cost_usd.expect("priced") - want).abs() < 1e-12, "{u:?}");
        assert_eq!(u.cost_source, Some(crate::store::CostSource::Config));
        assert!(u.unpriced_models.is_empty());
        assert_eq!(builtin_usage(&[META, TURN, USER].join("\n")), None);
    }

    /// A rollout's lines with a `/model` switch to `mini` between its two turns.
    fn with_model_switch(mini: &str) -> [&str; 7] {
        use v169::*;
        [META, TURN, RECORD_1, COUNT_1, mini, RECORD_2, COUNT_2]
    }

    #[test]
    fn a_model_switch_prices_each_stretch_at_its_model() {
        use v169::*;
        let mini = TURN.replace("gpt-5-codex", "gpt-5-mini");
        let log = with_model_switch(&mini).join("\n");
        let u = builtin_usage(&log).expect("usage");
        let first = (800.0 * 1.25 + 200.0 * 0.125 + 50.0 * 10.0) / 1e6;
        let second = (800.0 * 0.25 + 200.0 * 0.025 + 50.0 * 2.0) / 1e6;
        assert!((u.cost_usd.expect("priced") - (first + second)).abs() < 1e-12);
        // A stretch on an unpriced model makes the whole cost unknown.
        let odd = TURN.replace("gpt-5-codex", "gpt-9");
        let log = [META, TURN, COUNT_1, odd.as_str(), COUNT_2].join("\n");
        assert_eq!(builtin_usage(&log).expect("usage").cost_usd, None);
    }

    /// Read on line by line (a look after each), a rollout adds up to what it does read
    /// whole, its model switch included.
    #[tokio::test]
    async fn a_rollout_read_on_look_by_look_adds_up_as_read_whole() {
        use super::super::log_tally::{append, Tallies};
        use v169::*;
        let mini = TURN.replace("gpt-5-codex", "gpt-5-mini");
        let lines = with_model_switch(&mini);
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("rollout.jsonl");
        let tallies = Tallies::<UsageTally>::default();
        let prices = PriceTable::builtin_only();
        for (i, line) in lines.iter().enumerate() {
            append(&path, &format!("{line}\n"));
            let read_on = tallies
                .read(&path, |t| t.usage(&prices))
                .await
                .expect("read")
                .expect("a rollout");
            assert_eq!(
                read_on,
                builtin_usage(&lines[..=i].join("\n")),
                "after line {i}"
            );
        }
        assert!(builtin_usage(&lines.join("\n")).is_some_and(|u| u.cost_usd.is_some()));
    }

    #[test]
    fn the_trust_override_is_a_toml_table_keyed_by_the_workspace() {
        assert_eq!(
            trust_override(Path::new("/nonexistent/w \"x\"\\y")),
            r#"projects={"/nonexistent/w \"x\"\\y"={trust_level="trusted"}}"#
        );
        let dir = tempfile::tempdir().expect("tmp");
        let real = dir.path().join("real");
        std::fs::create_dir_all(&real).expect("mkdir");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let canonical = std::fs::canonicalize(&real).expect("canonical");
        assert_eq!(
            trust_override(&link),
            format!(
                "projects={{{}={{trust_level=\"trusted\"}},{}={{trust_level=\"trusted\"}}}}",
                toml_string(&path(&link)),
                toml_string(&path(&canonical))
            )
        );
    }

    fn state(lines: &[&str]) -> Option<Activity> {
        classify(&lines.join("\n"), now()).map(|r| r.signal(now()).activity)
    }

    #[test]
    fn rollout_events_map_to_activity() {
        let m = meta("/w");
        assert_eq!(state(&[&m, CONTEXT]), Some(Activity::Idle));
        assert_eq!(state(&[&m, CONTEXT, TURN, USER]), Some(Activity::Active));
        assert_eq!(state(&[&m, TURN, USER, CALL]), Some(Activity::Active));
        assert_eq!(
            state(&[&m, TURN, USER, CALL, APPROVAL]),
            Some(Activity::WaitingInput)
        );
        assert_eq!(
            state(&[&m, TURN, USER, CALL, APPROVAL, OUTPUT]),
            Some(Activity::Active)
        );
        assert_eq!(
            state(&[&m, USER, CALL, OUTPUT, TOKENS, MESSAGE, COMPLETE]),
            Some(Activity::Idle)
        );
        // token_count lines are bookkeeping, not activity.
        assert_eq!(state(&[&m, USER, COMPLETE, TOKENS]), Some(Activity::Idle));
    }

    #[test]
    fn usage_is_the_last_cumulative_total() {
        let u = builtin_usage(&[USER, TOKENS, MESSAGE].join("\n")).expect("usage");
        assert_eq!(
            u,
            Usage {
                input_tokens: 3000,
                output_tokens: 300,
                cache_tokens: 9000,
                cost_usd: None,
                cost_source: Some(crate::store::CostSource::Unpriced),
                unpriced_models: vec!["unknown".into()],
            }
        );
        let no_info =
            r#"{"timestamp":"t","type":"event_msg","payload":{"type":"token_count","info":null}}"#;
        assert_eq!(builtin_usage(no_info), None);
    }

    #[test]
    fn launch_argv_for_each_mode_and_resume() {
        let dir = tempfile::tempdir().expect("tmp");
        let home = dir.path().join("home");
        let c = ctx(dir.path(), PROMPT);
        let agent = |mode| {
            let mut s = settings(AgentKind::Codex, mode, Some("gpt-5-codex"));
            s.env.insert("HOME".into(), path(&home));
            CodexAgent::new("codex".into(), s)
        };
        let (argv, _) = agent(PermissionMode::Default).launch(&c).expect("launch");
        let trust = format!(
            "projects={{{}={{trust_level=\"trusted\"}}}}",
            toml_string(&path(&c.workspace))
        );
        assert_eq!(
            argv,
            [
                "codex",
                "--model",
                "gpt-5-codex",
                "-c",
                "check_for_update_on_startup=false",
                "-c",
                &trust,
                "--",
                PROMPT.trim()
            ]
        );
        let (argv, _) = agent(PermissionMode::AutoEdit).launch(&c).expect("launch");
        assert_eq!(
            argv[1..5],
            [
                "--sandbox",
                "workspace-write",
                "--ask-for-approval",
                "on-request"
            ]
        );
        let (argv, _) = agent(PermissionMode::Suggest).launch(&c).expect("launch");
        assert_eq!(argv[1..3], ["--sandbox", "read-only"]);
        let (argv, _) = agent(PermissionMode::Permissionless)
            .launch(&c)
            .expect("launch");
        assert_eq!(argv[1], "--dangerously-bypass-approvals-and-sandbox");

        // Resume finds the rollout of this workspace.
        let mut c = c;
        c.resume = true;
        std::fs::create_dir_all(&c.workspace).expect("ws");
        let day = home.join(".codex/sessions/2025/10/01");
        std::fs::create_dir_all(&day).expect("mkdir");
        std::fs::write(
            day.join(format!("rollout-2025-10-01T11-58-00-{ID}.jsonl")),
            meta(&path(&c.workspace)),
        )
        .expect("write");
        std::fs::write(
            day.join("rollout-2025-10-01T11-59-00-other.jsonl"),
            meta("/elsewhere"),
        )
        .expect("write");
        let (argv, _) = agent(PermissionMode::AutoEdit).launch(&c).expect("launch");
        assert_eq!(argv[1], "resume");
        assert_eq!(argv.last().map(String::as_str), Some(ID));
        // A restart's instructions follow the id (`codex resume [SESSION_ID] [PROMPT]`).
        c.message = Some("Fix CI and push.".into());
        let (with, _) = agent(PermissionMode::AutoEdit).launch(&c).expect("launch");
        assert_eq!(with[with.len() - 3..], [ID, "--", "Fix CI and push."]);
        c.message = None;
        // A resumed session runs in the same worktree: trusted too.
        let canonical = std::fs::canonicalize(&c.workspace).expect("canonical");
        assert!(
            argv.iter().any(|a| a.starts_with("projects={")
                && a.contains(&toml_string(&path(&canonical)))),
            "{argv:?}"
        );
        assert!(!argv.contains(&"--".to_string()));
    }

    #[tokio::test]
    async fn activity_usage_and_id_come_from_the_matching_rollout() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = settings(AgentKind::Codex, PermissionMode::Default, None);
        s.env
            .insert("CODEX_HOME".into(), path(&dir.path().join("ch")));
        let a = CodexAgent::new("codex".into(), s);
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(&ws).expect("ws");
        let day = dir.path().join("ch/sessions/2025/10/01");
        std::fs::create_dir_all(&day).expect("mkdir");
        let m = meta(&path(&ws));
        std::fs::write(
            day.join(format!("rollout-x-{ID}.jsonl")),
            [m.as_str(), USER, CALL, APPROVAL].join("\n"),
        )
        .expect("write");
        let probe = ActivityProbe {
            workspace: ws.clone(),
            terminal: None,
            last_output_at: None,
            now: now(),
        };
        let sig = a.activity(&probe).await.expect("ok").expect("signal");
        assert_eq!(sig.activity, Activity::WaitingInput);
        assert_eq!(
            a.agent_session_id(&ws).await.expect("ok").as_deref(),
            Some(ID)
        );
        assert_eq!(a.usage(&ws).await.expect("ok"), None);
    }
}
