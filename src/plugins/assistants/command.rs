//! The `command` assistant: any argv. The prompt goes on stdin, the resume id in
//! `$FLOTILLA_RESUME_ID`; each stdout line is a JSON [`Chunk`]
//! (`{"type":"text","text":…}`, `{"type":"tool_use","summary":…}`,
//! `{"type":"result","session_id":…}`, `{"type":"session","session_id":…}`,
//! `{"type":"denied","tool":…,"detail":…}`, `{"type":"usage","input_tokens":…,"cost_usd":…}`)
//! or plain text.

use std::collections::BTreeMap;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::guard::TurnGuard;
use super::{run_turn, ParseState};
use crate::plugins::{Assistant, Chunk, PluginResult, TurnRequest};

/// Any command speaking the JSON-lines protocol.
pub struct CommandAssistant {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    /// Runs each turn under `flotilla turn-guard`.
    guard: Option<TurnGuard>,
}

impl CommandAssistant {
    /// An assistant running `argv`.
    pub fn new(argv: Vec<String>, env: BTreeMap<String, String>) -> Self {
        CommandAssistant {
            argv,
            env,
            guard: None,
        }
    }

    /// Runs every turn under `guard` (`None`: as a plain child).
    pub fn with_guard(mut self, guard: Option<TurnGuard>) -> Self {
        self.guard = guard;
        self
    }
}

/// Parses one line: a JSON chunk, or plain text.
pub fn parse_line(line: &str, st: &mut ParseState) -> Vec<Chunk> {
    match serde_json::from_str::<Chunk>(line) {
        Ok(Chunk::Result { session_id }) => {
            st.finished = true;
            if session_id.is_some() {
                st.session_id = session_id.clone();
            }
            vec![Chunk::Result {
                session_id: st.session_id.clone(),
            }]
        }
        Ok(Chunk::Session { session_id }) => {
            st.session_id = Some(session_id.clone());
            vec![Chunk::Session { session_id }]
        }
        Ok(c) => vec![c],
        Err(_) => vec![Chunk::Text {
            text: line.to_string(),
        }],
    }
}

#[async_trait]
impl Assistant for CommandAssistant {
    fn kind(&self) -> &'static str {
        "command"
    }

    async fn turn(&self, request: &TurnRequest, chunks: mpsc::Sender<Chunk>) -> PluginResult<()> {
        let mut env = self.env.clone();
        if let Some(id) = &request.resume_id {
            env.insert("FLOTILLA_RESUME_ID".into(), id.clone());
        }
        run_turn(
            &self.argv,
            &env,
            self.guard.as_ref(),
            request,
            Some(&request.prompt),
            parse_line,
            chunks,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_and_usage_lines_are_chunks() {
        let mut st = ParseState::default();
        assert_eq!(
            parse_line(
                r#"{"type":"denied","tool":"Bash","detail":"`rm x`"}"#,
                &mut st
            ),
            vec![Chunk::Denied {
                tool: "Bash".into(),
                detail: "`rm x`".into()
            }]
        );
        assert_eq!(
            parse_line(
                r#"{"type":"usage","output_tokens":2,"cost_usd":0.5}"#,
                &mut st
            ),
            vec![Chunk::Usage(crate::plugins::TurnUsage {
                output_tokens: 2,
                cost_usd: Some(0.5),
                ..Default::default()
            })]
        );
    }

    #[tokio::test]
    async fn runs_a_command_and_streams_its_lines() {
        let a = CommandAssistant::new(
            vec![
                "python3".into(),
                "-c".into(),
                "import sys; p=sys.stdin.read(); print('{\"type\":\"tool_use\",\"summary\":\"x\"}'); print('you said ' + p)".into(),
            ],
            [("PATH".to_string(), std::env::var("PATH").unwrap_or_default())].into(),
        );
        let (tx, mut rx) = mpsc::channel(16);
        let req = TurnRequest {
            cwd: std::env::temp_dir(),
            prompt: "hello".into(),
            resume_id: None,
        };
        a.turn(&req, tx).await.expect("turn");
        let mut got = Vec::new();
        while let Some(c) = rx.recv().await {
            got.push(c);
        }
        assert_eq!(
            got,
            vec![
                Chunk::ToolUse {
                    summary: "x".into()
                },
                Chunk::Text {
                    text: "you said hello".into()
                },
                Chunk::Result { session_id: None },
            ]
        );
    }
}
