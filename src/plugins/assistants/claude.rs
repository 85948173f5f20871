//! The `claude` assistant: `claude -p` with `--output-format stream-json --verbose` (the CLI
//! requires `--verbose` with stream-json in print mode), `--resume <session id>` and
//! `--permission-mode` (`default`, `acceptEdits`, `plan`, `bypassPermissions`; the config's
//! `default` maps to the CLI's `default`, never to bypass; `auto-edit`, the chat default, to
//! `acceptEdits`).
//!
//! Headless, the CLI cannot ask: a tool its mode does not allow is refused, the model is told,
//! and the turn still ends `success`. The `result` line lists those refusals in
//! `permission_denials` ([`Chunk::Denied`], so the reply can name them) and carries the
//! turn's own cost (`total_cost_usd`, `modelUsage.<model>.costUSD`) and tokens
//! ([`Chunk::Usage`]). A result with `is_error` or an `error_*` subtype fails the turn.

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{tool_summary, CliTurns, ParseState, MAX_ARG_PROMPT};
use crate::config::PermissionMode;
use crate::plugins::{Assistant, Chunk, PluginResult, TurnRequest, TurnUsage};

/// Claude Code in print mode.
pub struct ClaudeAssistant(pub CliTurns);

impl ClaudeAssistant {
    /// The argv of one turn, and whether the prompt goes on stdin.
    pub fn argv(&self, request: &TurnRequest) -> (Vec<String>, bool) {
        let mut argv = self.0.program.clone();
        // A prompt that looks like a flag (`-rf`) would be parsed as one: stdin takes it.
        let on_stdin = request.prompt.len() > MAX_ARG_PROMPT || request.prompt.starts_with('-');
        argv.push("-p".into());
        if !on_stdin {
            argv.push(request.prompt.clone());
        }
        argv.extend(
            ["--output-format", "stream-json", "--verbose"]
                .iter()
                .map(|s| s.to_string()),
        );
        if let Some(m) = &self.0.model {
            argv.push("--model".into());
            argv.push(m.clone());
        }
        if let Some(id) = &request.resume_id {
            argv.push("--resume".into());
            argv.push(id.clone());
        }
        argv.push("--permission-mode".into());
        argv.push(
            match self.0.mode {
                PermissionMode::Default => "default",
                PermissionMode::AutoEdit => "acceptEdits",
                PermissionMode::Suggest => "plan",
                PermissionMode::Permissionless => "bypassPermissions",
            }
            .into(),
        );
        (argv, on_stdin)
    }
}

/// Parses one line of Claude's stream-json.
pub fn parse_line(line: &str, st: &mut ParseState) -> Vec<Chunk> {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return Vec::new();
    };
    let session = v
        .get("session_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut out = Vec::new();
    match v.get("type").and_then(Value::as_str) {
        Some("system") => {
            if let Some(m) = v.get("model").and_then(Value::as_str) {
                st.model = Some(m.to_string());
            }
            if let Some(id) = session {
                if st.session_id.as_deref() != Some(&id) {
                    st.session_id = Some(id.clone());
                    out.push(Chunk::Session { session_id: id });
                }
            }
        }
        Some("assistant") => {
            let blocks = v
                .pointer("/message/content")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for b in blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = b.get("text").and_then(Value::as_str).unwrap_or("");
                        if !text.is_empty() {
                            out.push(Chunk::Text { text: text.into() });
                        }
                    }
                    Some("tool_use") => {
                        let name = b.get("name").and_then(Value::as_str).unwrap_or("tool");
                        let input = b.get("input").cloned().unwrap_or(Value::Null);
                        out.push(Chunk::ToolUse {
                            summary: tool_summary(name, &input),
                        });
                    }
                    _ => {}
                }
            }
        }
        Some("result") => {
            if session.is_some() {
                st.session_id = session;
            }
            out.extend(denials(&v));
            out.extend(usage(&v).map(|mut u| {
                u.model = u.model.or_else(|| st.model.clone());
                Chunk::Usage(u)
            }));
            let subtype = v.get("subtype").and_then(Value::as_str).unwrap_or("");
            if v.get("is_error").and_then(Value::as_bool) == Some(true)
                || subtype.starts_with("error")
            {
                st.error = Some(result_error(&v, subtype));
            }
            st.finished = true;
            out.push(Chunk::Result {
                session_id: st.session_id.clone(),
            });
        }
        _ => {}
    }
    out
}

/// The tools the CLI refused this turn (`permission_denials: [{tool_name, tool_input}]`).
fn denials(v: &Value) -> Vec<Chunk> {
    v.get("permission_denials")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|d| {
            let tool = d
                .get("tool_name")
                .and_then(Value::as_str)
                .unwrap_or("tool")
                .to_string();
            let input = d.get("tool_input").cloned().unwrap_or(Value::Null);
            Chunk::Denied {
                detail: denied_detail(&tool, &input),
                tool,
            }
        })
        .collect()
}

/// What a refused tool tried, in a few words: the command, the path, else its input.
pub fn denied_detail(tool: &str, input: &Value) -> String {
    let s = |k: &str| input.get(k).and_then(Value::as_str).map(str::to_string);
    let detail = match tool {
        "Bash" => s("command").map(|c| format!("`{}`", c.replace('`', "'"))),
        _ => s("file_path")
            .or_else(|| s("notebook_path"))
            .or_else(|| s("path"))
            .or_else(|| s("url"))
            .or_else(|| s("pattern")),
    };
    let detail = detail.unwrap_or_else(|| match input {
        Value::Null => String::new(),
        other => other.to_string(),
    });
    super::cut(&detail, 200)
}

/// The turn's usage from the result line, every figure the CLI's own. Claude Code 2.1 gives
/// a resumed session's running totals in `total_cost_usd` and `modelUsage` (a session's second
/// turn shows both turns) and this turn alone in `model_usage_since_last_result`. Tokens and
/// cost come from the latter (summed over the models the turn used) when it is there, else
/// from `modelUsage` (or `usage`) and `total_cost_usd`; `session_cost_usd` is the running
/// total. `None` when the line reports none of them.
fn usage(v: &Value) -> Option<TurnUsage> {
    const TURN: &str = "model_usage_since_last_result";
    if ["total_cost_usd", "modelUsage", TURN, "usage"]
        .iter()
        .all(|k| v.get(k).is_none())
    {
        return None;
    }
    let models = |key: &str| -> Vec<Value> {
        v.get(key)
            .and_then(Value::as_object)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    };
    let (turn, all) = (models(TURN), models("modelUsage"));
    // The one model the turn used, when its per-model figures name exactly one.
    let named = [TURN, "modelUsage"].iter().find_map(|k| {
        let m = v.get(*k).and_then(Value::as_object)?;
        (m.len() == 1).then(|| m.keys().next().cloned()).flatten()
    });
    let total = v.get("total_cost_usd").and_then(Value::as_f64);
    let mut u = if !turn.is_empty() {
        sum_models(&turn)
    } else if !all.is_empty() {
        TurnUsage {
            cost_usd: total.or(sum_models(&all).cost_usd),
            ..sum_models(&all)
        }
    } else {
        let t = v.get("usage").cloned().unwrap_or(Value::Null);
        TurnUsage {
            input_tokens: count(&t, "input_tokens"),
            output_tokens: count(&t, "output_tokens"),
            cache_tokens: count(&t, "cache_read_input_tokens")
                + count(&t, "cache_creation_input_tokens"),
            cost_usd: total,
            session_cost_usd: None,
            model: None,
        }
    };
    u.session_cost_usd = total.or(sum_models(&all).cost_usd);
    u.model = named;
    Some(u)
}

fn count(o: &Value, k: &str) -> u64 {
    o.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// Tokens and `costUSD` summed over `modelUsage`-shaped entries (cost `None` if none has one).
fn sum_models(models: &[Value]) -> TurnUsage {
    let mut u = TurnUsage::default();
    for m in models {
        u.input_tokens += count(m, "inputTokens");
        u.output_tokens += count(m, "outputTokens");
        u.cache_tokens += count(m, "cacheReadInputTokens") + count(m, "cacheCreationInputTokens");
        if let Some(c) = m.get("costUSD").and_then(Value::as_f64) {
            u.cost_usd = Some(u.cost_usd.unwrap_or(0.0) + c);
        }
    }
    u
}

/// What an error result says: its `result` text or `errors`, after a non-success subtype.
fn result_error(v: &Value, subtype: &str) -> String {
    let text = v
        .get("result")
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty())
        .map(str::to_string)
        .or_else(|| {
            let errors: Vec<String> = v
                .get("errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                .collect();
            (!errors.is_empty()).then(|| errors.join("; "))
        });
    match (subtype, text) {
        ("" | "success", Some(t)) => t,
        ("" | "success", None) => "error".into(),
        (sub, Some(t)) => format!("{sub}: {t}"),
        (sub, None) => sub.to_string(),
    }
}

#[async_trait]
impl Assistant for ClaudeAssistant {
    fn kind(&self) -> &'static str {
        "claude"
    }

    async fn turn(&self, request: &TurnRequest, chunks: mpsc::Sender<Chunk>) -> PluginResult<()> {
        self.0
            .run(self.argv(request), request, parse_line, chunks)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(resume: Option<&str>) -> TurnRequest {
        TurnRequest {
            cwd: "/tmp".into(),
            prompt: "hi".into(),
            resume_id: resume.map(str::to_string),
        }
    }

    #[test]
    fn argv_has_print_mode_stream_json_resume_and_a_safe_permission_mode() {
        let a = ClaudeAssistant(CliTurns::new(
            vec!["claude".into()],
            PermissionMode::Default,
            Default::default(),
        ));
        let (argv, stdin) = a.argv(&req(Some("abc")));
        assert!(!stdin);
        assert_eq!(
            argv,
            [
                "claude",
                "-p",
                "hi",
                "--output-format",
                "stream-json",
                "--verbose",
                "--resume",
                "abc",
                "--permission-mode",
                "default"
            ]
        );
        let (argv, _) = a.argv(&req(None));
        assert!(!argv.contains(&"--resume".to_string()));
        let mut flag = req(None);
        flag.prompt = "--dangerously-skip-permissions".into();
        let (argv, stdin) = a.argv(&flag);
        assert!(stdin && !argv.contains(&flag.prompt));
    }

    #[test]
    fn parses_init_text_tool_use_and_result() {
        let mut st = ParseState::default();
        let c = parse_line(
            r#"{"type":"system","subtype":"init","session_id":"s1"}"#,
            &mut st,
        );
        assert_eq!(
            c,
            vec![Chunk::Session {
                session_id: "s1".into()
            }]
        );
        let c = parse_line(
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Plan:"},{"type":"tool_use","name":"Bash","input":{"command":"ls"}}]}}"#,
            &mut st,
        );
        assert_eq!(c.len(), 2);
        let c = parse_line(
            r#"{"type":"result","subtype":"success","is_error":false,"result":"ok","session_id":"s1"}"#,
            &mut st,
        );
        assert_eq!(
            c,
            vec![Chunk::Result {
                session_id: Some("s1".into())
            }]
        );
        assert!(st.finished && st.error.is_none());
    }

    /// A result line as Claude Code 2.1 prints it headless (trimmed).
    const DENIED: &str = r#"{"type":"result","subtype":"success","is_error":false,"result":"Could not write it.","session_id":"s2","total_cost_usd":0.0112,"usage":{"input_tokens":2400,"output_tokens":80,"cache_read_input_tokens":0,"cache_creation_input_tokens":0},"modelUsage":{"claude-opus-5-5":{"inputTokens":2400,"outputTokens":80,"cacheReadInputTokens":5,"cacheCreationInputTokens":7,"costUSD":0.0112}},"permission_denials":[{"tool_name":"Bash","tool_use_id":"t3","tool_input":{"command":"echo hi > /tmp/x.txt","description":"write x.txt"}},{"tool_name":"Write","tool_use_id":"t4","tool_input":{"file_path":"/tmp/y.txt","content":"y"}}]}"#;

    #[test]
    fn permission_denials_and_the_agents_cost_come_from_the_result_line() {
        let mut st = ParseState::default();
        let c = parse_line(DENIED, &mut st);
        assert_eq!(
            c,
            vec![
                Chunk::Denied {
                    tool: "Bash".into(),
                    detail: "`echo hi > /tmp/x.txt`".into()
                },
                Chunk::Denied {
                    tool: "Write".into(),
                    detail: "/tmp/y.txt".into()
                },
                Chunk::Usage(TurnUsage {
                    input_tokens: 2400,
                    output_tokens: 80,
                    cache_tokens: 12,
                    cost_usd: Some(0.0112),
                    session_cost_usd: Some(0.0112),
                    model: Some("claude-opus-5-5".into()),
                }),
                Chunk::Result {
                    session_id: Some("s2".into())
                },
            ]
        );
        // Refusals are not an error: the turn ran, and the reply says what was refused.
        assert!(st.error.is_none());
    }

    #[test]
    fn the_cost_falls_back_to_the_models_own_figures_and_tokens_to_usage() {
        let mut st = ParseState::default();
        let c = parse_line(
            r#"{"type":"result","subtype":"success","is_error":false,"modelUsage":{"a":{"inputTokens":1,"outputTokens":2,"costUSD":0.5},"b":{"inputTokens":3,"outputTokens":4,"costUSD":0.25}}}"#,
            &mut st,
        );
        assert_eq!(
            c[0],
            Chunk::Usage(TurnUsage {
                input_tokens: 4,
                output_tokens: 6,
                cache_tokens: 0,
                cost_usd: Some(0.75),
                session_cost_usd: Some(0.75),
                model: None,
            })
        );
        let c = parse_line(
            r#"{"type":"result","subtype":"success","usage":{"input_tokens":9,"output_tokens":8,"cache_read_input_tokens":1}}"#,
            &mut st,
        );
        assert_eq!(
            c[0],
            Chunk::Usage(TurnUsage {
                input_tokens: 9,
                output_tokens: 8,
                cache_tokens: 1,
                cost_usd: None,
                session_cost_usd: None,
                model: None,
            })
        );
        // The model `system/init` named prices a turn that reports only tokens.
        let mut st = ParseState::default();
        parse_line(
            r#"{"type":"system","subtype":"init","session_id":"s","model":"claude-sonnet-4-5-20250929"}"#,
            &mut st,
        );
        let c = parse_line(
            r#"{"type":"result","subtype":"success","usage":{"input_tokens":9,"output_tokens":8}}"#,
            &mut st,
        );
        assert!(
            matches!(&c[0], Chunk::Usage(u) if u.model.as_deref() == Some("claude-sonnet-4-5-20250929")),
            "{c:?}"
        );
    }

    #[test]
    fn a_resumed_turn_costs_what_it_added_not_the_sessions_running_total() {
        // Claude Code 2.1.328, the second turn of a session: `total_cost_usd` and
        // `modelUsage` hold both turns, `model_usage_since_last_result` this one.
        let mut st = ParseState::default();
        let c = parse_line(
            r#"{"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.0168,"usage":{"input_tokens":1200,"output_tokens":40},"modelUsage":{"m":{"inputTokens":3600,"outputTokens":120,"costUSD":0.0168}},"model_usage_since_last_result":{"m":{"inputTokens":1200,"outputTokens":40,"cacheReadInputTokens":3,"costUSD":0.0056}}}"#,
            &mut st,
        );
        assert_eq!(
            c[0],
            Chunk::Usage(TurnUsage {
                input_tokens: 1200,
                output_tokens: 40,
                cache_tokens: 3,
                cost_usd: Some(0.0056),
                session_cost_usd: Some(0.0168),
                model: Some("m".into()),
            })
        );
    }

    #[test]
    fn an_error_result_or_an_error_subtype_fails_the_turn() {
        let mut st = ParseState::default();
        parse_line(
            r#"{"type":"result","subtype":"success","is_error":true,"result":"API Error: 401"}"#,
            &mut st,
        );
        assert_eq!(st.error.as_deref(), Some("API Error: 401"));
        let mut st = ParseState::default();
        parse_line(
            r#"{"type":"result","subtype":"error_max_turns","is_error":false,"num_turns":9}"#,
            &mut st,
        );
        assert_eq!(st.error.as_deref(), Some("error_max_turns"));
        let mut st = ParseState::default();
        parse_line(
            r#"{"type":"result","subtype":"error_during_execution","errors":["boom"]}"#,
            &mut st,
        );
        assert_eq!(st.error.as_deref(), Some("error_during_execution: boom"));
    }

    #[test]
    fn denied_details_name_the_command_or_the_path() {
        use serde_json::json;
        assert_eq!(
            denied_detail("Bash", &json!({"command": "rm `x`"})),
            "`rm 'x'`"
        );
        assert_eq!(
            denied_detail("Edit", &json!({"file_path": "/a/b.rs"})),
            "/a/b.rs"
        );
        assert_eq!(
            denied_detail("WebFetch", &json!({"url": "https://x"})),
            "https://x"
        );
        assert_eq!(denied_detail("Task", &json!({"n": 1})), r#"{"n":1}"#);
    }
}
