//! Assistants: the agents a chat conversation talks to, one subprocess per turn.
//!
//! - `claude`: `claude -p <prompt> --output-format stream-json --verbose [--model M] [--resume ID]
//!   --permission-mode <mode>`; parses `system/init`, `assistant` (text and `tool_use` blocks)
//!   and `result` lines (session id, `permission_denials`, the CLI's own cost and tokens,
//!   errors).
//! - `codex`: `codex exec --json [--sandbox workspace-write | --sandbox read-only | …] [--model M]
//!   [resume ID] <prompt>`; parses `thread.started`, `item.completed` (agent_message,
//!   command_execution) and `turn.completed` (with its token `usage`) / `turn.failed`.
//! - `command`: any argv. The prompt arrives on stdin (then stdin closes), the resume id in
//!   `$FLOTILLA_RESUME_ID`. It prints JSON lines shaped like [`Chunk`]
//!   (`{"type":"text","text":"…"}`, `{"type":"tool_use","summary":"…"}`,
//!   `{"type":"result","session_id":"…"}`, `{"type":"denied","tool":"Bash","detail":"…"}`,
//!   `{"type":"usage","input_tokens":1,"output_tokens":2,"cache_tokens":0,"cost_usd":0.01}`);
//!   any other line is plain text for the user.
//!
//! Every assistant runs from an argument vector (never a shell), in its own process group,
//! with a scrubbed environment (`PATH`, `HOME`, `LANG` plus what `chat.assistant` lists);
//! dropping the turn's future kills the whole group (cancel, timeout). With a [`TurnGuard`]
//! (always when Flotilla runs as its `flotilla` binary) the group's leader is `flotilla
//! turn-guard`, which runs the assistant and kills the group by itself when the node dies or,
//! clustered, stops renewing its leases ([`guard`]); the turn sees the assistant's own
//! output, exit status and errors.

pub mod claude;
pub mod codex;
pub mod command;
pub mod guard;
pub mod guard_exec;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

pub use self::guard::TurnGuard;
use super::{Assistant, Chunk, PluginError, PluginResult, TurnRequest};
use crate::config::{ChatAssistantSettings, PermissionMode};

/// Variables every assistant gets from Flotilla's environment (nothing else, unless listed).
pub const BASE_ENV: [&str; 3] = ["PATH", "HOME", "LANG"];

/// Prompts longer than this go on stdin rather than in argv (Linux caps one argument at
/// 128 KiB).
pub const MAX_ARG_PROMPT: usize = 64 * 1024;

/// Builds the configured assistant, its turns run under `guard` (`None`: as plain
/// children, for a program embedding Flotilla without its `flotilla` binary).
///
/// # Errors
/// `Unavailable` for an unknown kind; `Invalid` for a `command` without argv.
pub fn from_settings(
    s: &ChatAssistantSettings,
    guard: Option<TurnGuard>,
) -> PluginResult<Arc<dyn Assistant>> {
    let env = scrubbed_env(s);
    match s.kind.as_str() {
        "claude" | "codex" => {
            let cli = CliTurns::new(program(s, &s.kind), s.permission_mode, env)
                .with_model(s.model.clone())
                .with_guard(guard);
            Ok(match s.kind.as_str() {
                "claude" => Arc::new(claude::ClaudeAssistant(cli)),
                _ => Arc::new(codex::CodexAssistant(cli)),
            })
        }
        "command" => {
            if s.command.is_empty() {
                return Err(PluginError::Invalid(
                    "chat.assistant.command is empty".into(),
                ));
            }
            Ok(Arc::new(
                command::CommandAssistant::new(s.command.clone(), env).with_guard(guard),
            ))
        }
        other => Err(PluginError::Unavailable {
            slot: "assistant",
            name: other.to_string(),
        }),
    }
}

/// What a vendor CLI's turns run with (`claude`, `codex`).
pub struct CliTurns {
    /// The argv prefix (e.g. `["claude"]`).
    pub program: Vec<String>,
    /// The configured permission mode, mapped to the CLI's flags by its assistant.
    pub mode: PermissionMode,
    /// The scrubbed environment ([`scrubbed_env`]).
    pub env: BTreeMap<String, String>,
    /// `--model` for every turn; `None`: the CLI's default.
    pub model: Option<String>,
    /// Runs each turn under `flotilla turn-guard`.
    pub guard: Option<TurnGuard>,
}

impl CliTurns {
    /// Turns of `program` in `mode` with `env`, on the CLI's default model, as plain children.
    pub fn new(program: Vec<String>, mode: PermissionMode, env: BTreeMap<String, String>) -> Self {
        CliTurns {
            program,
            mode,
            env,
            model: None,
            guard: None,
        }
    }

    /// Runs every turn on `model` (`--model`).
    pub fn with_model(mut self, model: Option<String>) -> Self {
        self.model = model;
        self
    }

    /// Runs every turn under `guard` (`None`: as a plain child).
    pub fn with_guard(mut self, guard: Option<TurnGuard>) -> Self {
        self.guard = guard;
        self
    }

    /// Runs one turn of `argv` ([`run_turn`]), the prompt on stdin when `on_stdin`.
    async fn run(
        &self,
        (argv, on_stdin): (Vec<String>, bool),
        request: &TurnRequest,
        parse: LineParser,
        chunks: mpsc::Sender<Chunk>,
    ) -> PluginResult<()> {
        let stdin = on_stdin.then_some(request.prompt.as_str());
        let guard = self.guard.as_ref();
        run_turn(&argv, &self.env, guard, request, stdin, parse, chunks).await
    }
}

fn program(s: &ChatAssistantSettings, default: &str) -> Vec<String> {
    if s.command.is_empty() {
        vec![default.to_string()]
    } else {
        s.command.clone()
    }
}

/// The environment an assistant runs with: [`BASE_ENV`] and `env_passthrough` copied from
/// Flotilla's own environment, then `env`. Flotilla's tokens never get in unless listed.
pub fn scrubbed_env(s: &ChatAssistantSettings) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for name in BASE_ENV
        .iter()
        .map(|n| n.to_string())
        .chain(s.env_passthrough.iter().cloned())
    {
        if let Ok(v) = std::env::var(&name) {
            env.insert(name, v);
        }
    }
    env.extend(s.env.clone());
    env
}

/// Kills a process group when dropped (the turn was cancelled or timed out), unless
/// disarmed after a normal exit.
struct GroupGuard {
    pgid: Option<i32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pgid.take() {
            // SAFETY: killpg takes plain integers; the group is the child's own (process_group(0)).
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
    }
}

/// Parses one stdout line of an assistant into chunks.
pub type LineParser = fn(&str, &mut ParseState) -> Vec<Chunk>;

/// What a parser remembers between lines.
#[derive(Debug, Default)]
pub struct ParseState {
    /// The session id seen so far.
    pub session_id: Option<String>,
    /// Whether a result line arrived.
    pub finished: bool,
    /// An error the assistant reported in-band.
    pub error: Option<String>,
    /// The model the assistant said it runs (Claude's `system/init.model`).
    pub model: Option<String>,
}

/// Runs `argv` as one turn (under `guard` when given): `stdin_text` (if any) on stdin, each
/// stdout line through `parse`, chunks sent in order. A `Result` chunk is always sent last
/// (with the last seen session id) when the process exits 0 and the parser saw none.
///
/// # Errors
/// `Io` if it cannot start; `Command` on a non-zero exit or an in-band error.
pub async fn run_turn(
    argv: &[String],
    env: &BTreeMap<String, String>,
    guard: Option<&TurnGuard>,
    request: &TurnRequest,
    stdin_text: Option<&str>,
    parse: LineParser,
    chunks: mpsc::Sender<Chunk>,
) -> PluginResult<()> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| PluginError::Invalid("empty assistant command".into()))?;
    tracing::debug!(program = %program, args = args.len(), guarded = guard.is_some(), "assistant turn");
    crate::telemetry::METRICS.subprocess(program);
    // The guard leads the process group and the assistant runs in it: killing the group
    // (cancel, timeout, abandonment) still kills both.
    let guarded = guard.map(|g| g.wrap(argv));
    let (exe, exe_args) = match &guarded {
        Some(g) => (&g[0], &g[1..]),
        None => (program, args),
    };
    let mut cmd = Command::new(exe);
    cmd.args(exe_args)
        .env_clear()
        .envs(env)
        .current_dir(&request.cwd)
        .stdin(if stdin_text.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let group = GroupGuard {
        pgid: child.id().and_then(|p| i32::try_from(p).ok()),
    };
    if let (Some(text), Some(mut stdin)) = (stdin_text, child.stdin.take()) {
        let text = text.to_string();
        // A writer task: a large prompt must not block reading stdout.
        tokio::spawn(async move {
            let _ = stdin.write_all(text.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
    }
    let mut stderr = child.stderr.take();
    let stderr_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(64 * 1024).read_to_end(&mut buf).await;
        }
        String::from_utf8_lossy(&buf).trim().to_string()
    });
    let mut state = ParseState::default();
    if let Some(out) = child.stdout.take() {
        let mut lines = BufReader::new(out).lines();
        while let Some(line) = lines.next_line().await? {
            if line.trim().is_empty() {
                continue;
            }
            for c in parse(&line, &mut state) {
                if chunks.send(c).await.is_err() {
                    // Nobody listens any more: the turn was abandoned.
                    return Err(PluginError::Invalid("turn abandoned".into()));
                }
            }
        }
    }
    let status = child.wait().await?;
    let mut group = group;
    group.pgid = None;
    let stderr = stderr_task.await.unwrap_or_default();
    if guard.is_some() {
        // The assistant could not start: the same error as starting it here.
        if let Some(e) = guard::spawn_error(status.code(), &stderr) {
            return Err(PluginError::Io(e));
        }
    }
    if let Some(e) = state.error.take() {
        return Err(PluginError::Command {
            program: program.clone(),
            status: status.to_string(),
            stderr: e,
        });
    }
    if !status.success() {
        return Err(PluginError::Command {
            program: program.clone(),
            status: status.to_string(),
            stderr: last_lines(&stderr, 5),
        });
    }
    if !state.finished {
        let _ = chunks
            .send(Chunk::Result {
                session_id: state.session_id.clone(),
            })
            .await;
    }
    Ok(())
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A one-line summary of a tool call, in the manner of rca's `formatToolCall`:
/// `🔧 BASH` then the command (cut at 100), a path, a pattern, or the JSON input (cut at 80).
pub fn tool_summary(name: &str, input: &serde_json::Value) -> String {
    let s = |k: &str| input.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let detail = match name {
        "Bash" => cut(s("command"), 100),
        "Read" => format!("Reading: {}", s("file_path")),
        "Write" => format!("Writing: {}", s("file_path")),
        "Edit" | "MultiEdit" => format!("Editing: {}", s("file_path")),
        "Glob" => format!("Pattern: {}", s("pattern")),
        "Grep" => format!("Searching: {}", s("pattern")),
        n if n.starts_with("mcp__") => {
            let parts: Vec<&str> = n.splitn(3, "__").skip(1).collect();
            format!("MCP: {}", parts.join(" "))
        }
        _ => cut(&input.to_string(), 80),
    };
    format!("🔧 {}\n{}", name.to_uppercase(), detail)
}

pub(crate) fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_summaries_follow_the_tool() {
        assert_eq!(
            tool_summary("Bash", &serde_json::json!({"command": "ls"})),
            "🔧 BASH\nls"
        );
        assert_eq!(
            tool_summary("mcp__a__b", &serde_json::json!({})),
            "🔧 MCP__A__B\nMCP: a b"
        );
    }

    #[test]
    fn the_environment_is_scrubbed() {
        let s = ChatAssistantSettings {
            env: [("X".to_string(), "1".to_string())].into(),
            ..ChatAssistantSettings::default()
        };
        let env = scrubbed_env(&s);
        assert!(env
            .keys()
            .all(|k| BASE_ENV.contains(&k.as_str()) || k == "X"));
    }
}
