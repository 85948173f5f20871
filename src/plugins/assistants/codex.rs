//! The `codex` assistant: `codex exec --json --skip-git-repo-check [sandbox flags]
//! [resume <thread id>] <prompt>`. Events: `thread.started` (the resume id),
//! `item.completed` with `agent_message` (text) or `command_execution` (a tool call),
//! `turn.completed` (the end, with the turn's token `usage`) and `turn.failed` / `error` (the
//! turn failed).

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{CliTurns, ParseState, MAX_ARG_PROMPT};
use crate::config::PermissionMode;
use crate::plugins::{Assistant, Chunk, PluginResult, TurnRequest, TurnUsage};

/// Codex in exec mode.
pub struct CodexAssistant(pub CliTurns);

impl CodexAssistant {
    /// The argv of one turn, and whether the prompt goes on stdin (`-` as the prompt).
    pub fn argv(&self, request: &TurnRequest) -> (Vec<String>, bool) {
        let mut argv = self.0.program.clone();
        argv.push("exec".into());
        argv.push("--json".into());
        argv.push("--skip-git-repo-check".into());
        match self.0.mode {
            PermissionMode::Default => {}
            // `exec` never asks for approval; the sandbox is what bounds it (codex 0.169 has
            // no `--full-auto`: checked by the real-CLI test).
            PermissionMode::AutoEdit => {
                argv.push("--sandbox".into());
                argv.push("workspace-write".into());
            }
            PermissionMode::Suggest => {
                argv.push("--sandbox".into());
                argv.push("read-only".into());
            }
            PermissionMode::Permissionless => {
                argv.push("--dangerously-bypass-approvals-and-sandbox".into())
            }
        }
        if let Some(m) = &self.0.model {
            argv.push("--model".into());
            argv.push(m.clone());
        }
        if let Some(id) = &request.resume_id {
            argv.push("resume".into());
            argv.push(id.clone());
        }
        // A prompt that looks like a flag (`-rf`) would be parsed as one: stdin takes it.
        let on_stdin = request.prompt.len() > MAX_ARG_PROMPT || request.prompt.starts_with('-');
        argv.push(if on_stdin {
            "-".into()
        } else {
            request.prompt.clone()
        });
        (argv, on_stdin)
    }
}

/// Parses one line of `codex exec --json`.
pub fn parse_line(line: &str, st: &mut ParseState) -> Vec<Chunk> {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    match v.get("type").and_then(Value::as_str) {
        Some("thread.started") => {
            if let Some(id) = v.get("thread_id").and_then(Value::as_str) {
                st.session_id = Some(id.to_string());
                out.push(Chunk::Session {
                    session_id: id.to_string(),
                });
            }
        }
        Some("item.completed") => {
            let item = v.get("item").cloned().unwrap_or(Value::Null);
            let kind = item
                .get("type")
                .or_else(|| item.get("item_type"))
                .and_then(Value::as_str);
            match kind {
                Some("agent_message") | Some("assistant_message") => {
                    if let Some(t) = item.get("text").and_then(Value::as_str) {
                        out.push(Chunk::Text { text: t.into() });
                    }
                }
                Some("command_execution") => {
                    let cmd = item.get("command").and_then(Value::as_str).unwrap_or("");
                    out.push(Chunk::ToolUse {
                        summary: format!("🔧 BASH\n{cmd}"),
                    });
                }
                _ => {}
            }
        }
        Some("turn.completed") => {
            // Tokens only: `codex exec` reports no cost and no model (the chat bridge prices
            // them at `chat.assistant.model` from the `pricing:` table). `input_tokens`
            // includes the cached ones.
            if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
                let cached = n("cached_input_tokens");
                out.push(Chunk::Usage(TurnUsage {
                    input_tokens: n("input_tokens").saturating_sub(cached),
                    output_tokens: n("output_tokens"),
                    cache_tokens: cached,
                    ..TurnUsage::default()
                }));
            }
            st.finished = true;
            out.push(Chunk::Result {
                session_id: st.session_id.clone(),
            });
        }
        Some("turn.failed") => {
            let msg = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("turn failed");
            st.error = Some(msg.to_string());
        }
        Some("error") => {
            let msg = v.get("message").and_then(Value::as_str).unwrap_or("error");
            // MCP client start-up noise is not the turn's failure (rca drops it too).
            if !msg.contains("MCP") {
                st.error = Some(msg.to_string());
            }
        }
        _ => {}
    }
    out
}

#[async_trait]
impl Assistant for CodexAssistant {
    fn kind(&self) -> &'static str {
        "codex"
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

    #[test]
    fn argv_resumes_with_the_thread_id() {
        let a = CodexAssistant(CliTurns::new(
            vec!["codex".into()],
            PermissionMode::Default,
            Default::default(),
        ));
        let (argv, _) = a.argv(&TurnRequest {
            cwd: "/tmp".into(),
            prompt: "go".into(),
            resume_id: Some("t1".into()),
        });
        assert_eq!(
            argv,
            [
                "codex",
                "exec",
                "--json",
                "--skip-git-repo-check",
                "resume",
                "t1",
                "go"
            ]
        );
    }

    #[test]
    fn parses_thread_messages_commands_and_the_end() {
        let mut st = ParseState::default();
        parse_line(r#"{"type":"thread.started","thread_id":"t1"}"#, &mut st);
        let c = parse_line(
            r#"{"type":"item.completed","item":{"id":"i","type":"agent_message","text":"hi"}}"#,
            &mut st,
        );
        assert_eq!(c, vec![Chunk::Text { text: "hi".into() }]);
        let c = parse_line(
            r#"{"type":"turn.completed","usage":{"input_tokens":24763,"cached_input_tokens":24448,"output_tokens":122}}"#,
            &mut st,
        );
        assert_eq!(
            c,
            vec![
                Chunk::Usage(TurnUsage {
                    input_tokens: 315,
                    output_tokens: 122,
                    cache_tokens: 24448,
                    ..TurnUsage::default()
                }),
                Chunk::Result {
                    session_id: Some("t1".into())
                }
            ]
        );
    }
}
