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
//! matched to a workspace (newest first, at most [`MAX_SCAN`] files). Token usage is the
//! cumulative `total_token_usage` of the last `token_count` event.

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{program, prompt_pointer, Prompt, INLINE_PROMPT_MAX};
use crate::config::{AgentSettings, PermissionMode};
use crate::plugins::activity::{
    agent_home, combine, parse_ts, read_tail, ActivityProbe, ActivitySignal, Reading, Usage,
    TAIL_BYTES,
};
use crate::plugins::{Agent, AgentContext, PluginError, PluginResult};

/// How many rollout files (newest first) are searched for a workspace's session.
pub const MAX_SCAN: usize = 300;
/// Longest first line (`session_meta`, which may embed instructions) read while matching.
const MAX_META_LINE: u64 = 1024 * 1024;

/// Launches and observes the Codex CLI.
#[derive(Debug, Clone)]
pub struct CodexAgent {
    name: String,
    settings: AgentSettings,
}

impl CodexAgent {
    /// A Codex agent called `name` with its settings.
    pub fn new(name: String, settings: AgentSettings) -> Self {
        CodexAgent { name, settings }
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
                    "task_complete" | "turn_aborted" => Some(Reading::Finished(at)),
                    "exec_approval_request"
                    | "apply_patch_approval_request"
                    | "request_user_input"
                    | "elicitation_request" => Some(Reading::Waiting(at)),
                    "error" | "stream_error" => Some(Reading::Failed(at)),
                    "agent_message" => Some(Reading::Replying(at)),
                    "user_message"
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
                    _ => None, // token_count and other bookkeeping
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
                _ => None,
            }
        })
}

/// Usage from the last `token_count` event that carries totals. Codex counts cached input
/// inside `input_tokens`; here it is split out into `cache_tokens`. Reasoning tokens are part of
/// `output_tokens`. No cost: there is no OpenAI price table here.
pub fn usage(log: &str) -> Option<Usage> {
    log.lines()
        .rev()
        .filter(|l| l.contains("token_count"))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| {
            let t = &v["payload"]["info"]["total_token_usage"];
            if v["payload"]["type"].as_str() != Some("token_count") || !t.is_object() {
                return None;
            }
            let n = |k: &str| t[k].as_u64().unwrap_or(0);
            let cached = n("cached_input_tokens");
            Some(Usage {
                input_tokens: n("input_tokens").saturating_sub(cached),
                output_tokens: n("output_tokens"),
                cache_tokens: cached,
                cost_usd: None,
            })
        })
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

#[async_trait]
impl Agent for CodexAgent {
    fn name(&self) -> &str {
        &self.name
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
        let flags: &[&str] = match s.permission_mode {
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
            Some(id) => argv.push(id),
            None => {
                let prompt = Prompt::read(&ctx.prompt_file)?;
                argv.push("--".into());
                argv.push(if prompt.full.len() <= INLINE_PROMPT_MAX {
                    prompt.full.trim().to_string()
                } else {
                    prompt_pointer(&ctx.prompt_file)
                });
            }
        }
        Ok((argv, s.env.clone()))
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

    async fn usage(&self, workspace: &Path) -> PluginResult<Option<Usage>> {
        let Some((path, _)) = self.rollout(workspace).await? else {
            return Ok(None);
        };
        if let Some(u) = read_tail(&path, TAIL_BYTES)
            .await?
            .and_then(|(text, _)| usage(&text))
        {
            return Ok(Some(u));
        }
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => Ok(usage(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
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

    const ID: &str = "0199a2b3-c4d5-7e6f-8a9b-0c1d2e3f4a5b";

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
        let u = usage(&[USER, TOKENS, MESSAGE].join("\n")).expect("usage");
        assert_eq!(
            u,
            Usage {
                input_tokens: 3000,
                output_tokens: 300,
                cache_tokens: 9000,
                cost_usd: None
            }
        );
        let no_info =
            r#"{"timestamp":"t","type":"event_msg","payload":{"type":"token_count","info":null}}"#;
        assert_eq!(usage(no_info), None);
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
        let u = usage(&[USER, TOKENS, MESSAGE].join("\n")).expect("usage");
        assert_eq!(
            u,
            Usage {
                input_tokens: 3000,
                output_tokens: 300,
                cache_tokens: 9000,
                cost_usd: None
            }
        );
        let no_info =
            r#"{"timestamp":"t","type":"event_msg","payload":{"type":"token_count","info":null}}"#;
        assert_eq!(usage(no_info), None);
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
