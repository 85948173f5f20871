//! The `claude` assistant: `claude -p` with `--output-format stream-json --verbose` (the CLI
//! requires `--verbose` with stream-json in print mode), `--resume <session id>` and
//! `--permission-mode` (`default`, `acceptEdits`, `plan`, `bypassPermissions`; the config's
//! `default` maps to the CLI's `default`, never to bypass).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{run_turn, tool_summary, ParseState, MAX_ARG_PROMPT};
use crate::config::PermissionMode;
use crate::plugins::{Assistant, Chunk, PluginResult, TurnRequest};

/// Claude Code in print mode.
pub struct ClaudeAssistant {
    program: Vec<String>,
    mode: PermissionMode,
    env: BTreeMap<String, String>,
}

impl ClaudeAssistant {
    /// `program` is the argv prefix (e.g. `["claude"]`).
    pub fn new(program: Vec<String>, mode: PermissionMode, env: BTreeMap<String, String>) -> Self {
        ClaudeAssistant { program, mode, env }
    }

    /// The argv of one turn, and whether the prompt goes on stdin.
    pub fn argv(&self, request: &TurnRequest) -> (Vec<String>, bool) {
        let mut argv = self.program.clone();
        let on_stdin = request.prompt.len() > MAX_ARG_PROMPT;
        argv.push("-p".into());
        if !on_stdin {
            argv.push(request.prompt.clone());
        }
        argv.extend(
            ["--output-format", "stream-json", "--verbose"]
                .iter()
                .map(|s| s.to_string()),
        );
        if let Some(id) = &request.resume_id {
            argv.push("--resume".into());
            argv.push(id.clone());
        }
        argv.push("--permission-mode".into());
        argv.push(
            match self.mode {
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
            if v.get("is_error").and_then(Value::as_bool) == Some(true) {
                let msg = v
                    .get("result")
                    .and_then(Value::as_str)
                    .or_else(|| v.get("subtype").and_then(Value::as_str))
                    .unwrap_or("error");
                st.error = Some(msg.to_string());
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

#[async_trait]
impl Assistant for ClaudeAssistant {
    fn kind(&self) -> &'static str {
        "claude"
    }

    async fn turn(&self, request: &TurnRequest, chunks: mpsc::Sender<Chunk>) -> PluginResult<()> {
        let (argv, on_stdin) = self.argv(request);
        let stdin = on_stdin.then_some(request.prompt.as_str());
        run_turn(&argv, &self.env, request, stdin, parse_line, chunks).await
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
        let a = ClaudeAssistant::new(
            vec!["claude".into()],
            PermissionMode::Default,
            Default::default(),
        );
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
}
