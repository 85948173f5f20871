//! The `command` agent: any CLI, started with the argument vector from config. The prompt is
//! in the file named by `$FLOTILLA_PROMPT_FILE`, the session id in `$FLOTILLA_SESSION_ID` (both
//! added by the caller). It keeps no log Flotilla can read, so its activity comes from the
//! screen (the trait's default).

use std::collections::BTreeMap;

use crate::plugins::{Agent, AgentContext, PluginError, PluginResult};

/// Runs `argv` (from config) in the workspace.
#[derive(Debug, Clone)]
pub struct CommandAgent {
    /// Agent name from config.
    pub name: String,
    /// Argument vector.
    pub argv: Vec<String>,
    /// Extra environment the config passes to the agent.
    pub env: BTreeMap<String, String>,
}

#[async_trait::async_trait]
impl Agent for CommandAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn preflight(&self) -> Option<crate::preflight::AgentLaunch> {
        Some(crate::preflight::AgentLaunch {
            name: self.name.clone(),
            kind: crate::config::AgentKind::Command,
            program: self.argv.clone(),
            args: Vec::new(),
            env: self.env.clone(),
        })
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
