//! Agents. This module has the `command` agent: any CLI, started with the argument vector
//! from config. (The built-in claude-code, codex, aider and opencode kinds come with the
//! Fleet work.)

use std::collections::BTreeMap;

use super::{Agent, AgentContext, PluginError, PluginResult};

/// Runs `command` (argv from config) in the workspace. The prompt is in the file named by
/// `$FLOTILLA_PROMPT_FILE`, the session id in `$FLOTILLA_SESSION_ID` (added by the caller).
#[derive(Debug, Clone)]
pub struct CommandAgent {
    /// Agent name from config.
    pub name: String,
    /// Argument vector.
    pub argv: Vec<String>,
    /// Extra environment the config passes to the agent.
    pub env: BTreeMap<String, String>,
}

impl Agent for CommandAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn launch(&self, _ctx: &AgentContext) -> PluginResult<(Vec<String>, BTreeMap<String, String>)> {
        if self.argv.is_empty() {
            return Err(PluginError::Invalid(format!(
                "agent {} has an empty command",
                self.name
            )));
        }
        Ok((self.argv.clone(), self.env.clone()))
    }
}
