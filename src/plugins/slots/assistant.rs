//! Who answers chats: the [`Assistant`] slot and what a turn streams back.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::plugins::PluginResult;

/// One piece of an assistant's streamed answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Chunk {
    /// Text for the user.
    Text {
        /// The text.
        text: String,
    },
    /// A tool call, summarized.
    ToolUse {
        /// Summary.
        summary: String,
    },
    /// The end of the turn, with the id to resume from.
    Result {
        /// Resume id.
        session_id: Option<String>,
    },
    /// The assistant announced its session id before the end (Claude's `system/init`): kept
    /// so a cancelled turn can still be resumed.
    Session {
        /// Resume id.
        session_id: String,
    },
    /// A tool the assistant was not allowed to use (Claude's `permission_denials`): the user
    /// is told, never left with a silent "success".
    Denied {
        /// Tool name (`Bash`, `Write`…).
        tool: String,
        /// What it tried: the command, the path, or the input in short.
        #[serde(default)]
        detail: String,
    },
    /// What the turn used and cost, as the assistant itself reported it (Claude's
    /// `total_cost_usd` and `usage`, Codex's `turn.completed.usage`). Tokens without a cost
    /// are priced by the chat bridge from the `pricing:` table.
    Usage(TurnUsage),
}

/// One turn's usage as the assistant reported it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnUsage {
    /// Input tokens not served from a prompt cache.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Prompt-cache reads and writes.
    #[serde(default)]
    pub cache_tokens: u64,
    /// This turn's cost in US dollars, when the assistant reports one.
    #[serde(default)]
    pub cost_usd: Option<f64>,
    /// What the assistant's session has cost so far, this turn included, when it reports
    /// that (Claude's `total_cost_usd` of a resumed session).
    #[serde(default)]
    pub session_cost_usd: Option<f64>,
    /// The model the turn ran on, when the assistant names it (Claude's `system/init`): what
    /// the tokens are priced at when there is no cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// One assistant turn.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRequest {
    /// Working directory of the assistant.
    pub cwd: PathBuf,
    /// The prompt.
    pub prompt: String,
    /// Session to continue, if any.
    pub resume_id: Option<String>,
}

/// The agent a conversation talks to (claude `-p`, codex `exec`, any command).
#[async_trait]
pub trait Assistant: Send + Sync {
    /// Kind (`claude`, `codex`, `command`), for logs and `/status`.
    fn kind(&self) -> &'static str;

    /// Runs one turn, sending its chunks in order as they arrive; returns when the assistant
    /// has finished. Dropping the future cancels the turn: the assistant's whole process group
    /// is killed (this is how `/cancel` and the turn timeout work).
    ///
    /// # Errors
    /// `Command` when the assistant fails (non-zero exit, no result); `Io` if it cannot start.
    async fn turn(
        &self,
        request: &TurnRequest,
        chunks: tokio::sync::mpsc::Sender<Chunk>,
    ) -> PluginResult<()>;
}
