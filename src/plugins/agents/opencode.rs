//! The `opencode` agent (sst's OpenCode TUI).
//!
//! Launch: `opencode [--agent plan | --auto] [--model provider/model] [args…]
//! (--prompt <prompt> | --session <id> | --continue)`. The whole prompt file is the initial
//! prompt (over [`INLINE_PROMPT_MAX`], a pointer to the file). Permission modes: `suggest` runs
//! OpenCode's read-only `plan` agent, `permissionless` is `--auto` (approve everything not
//! explicitly denied); `default` and `auto-edit` pass nothing (OpenCode's configured
//! permissions apply). Resume: `--session <id>` when the caller knows OpenCode's session id,
//! else `--continue` (OpenCode's last session of this directory). Flags checked against
//! opencode 1.18.
//!
//! Observation: OpenCode keeps its sessions in its own database, which Flotilla does not read;
//! activity comes from the screen.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{program, prompt_pointer, Prompt, INLINE_PROMPT_MAX};
use crate::config::{AgentSettings, PermissionMode};
use crate::plugins::{Agent, AgentContext, PluginResult};

/// Launches OpenCode.
#[derive(Debug, Clone)]
pub struct OpencodeAgent {
    name: String,
    settings: AgentSettings,
}

impl OpencodeAgent {
    /// An OpenCode agent called `name` with its settings.
    pub fn new(name: String, settings: AgentSettings) -> Self {
        OpencodeAgent { name, settings }
    }
}

#[async_trait]
impl Agent for OpencodeAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn preflight(&self) -> Option<crate::preflight::AgentLaunch> {
        Some(crate::preflight::AgentLaunch::from_settings(
            &self.name,
            &self.settings,
        ))
    }

    fn launch(&self, ctx: &AgentContext) -> PluginResult<(Vec<String>, BTreeMap<String, String>)> {
        let s = &self.settings;
        let mut argv = program(s, "opencode");
        match ctx.mode(s) {
            PermissionMode::Default | PermissionMode::AutoEdit => {}
            PermissionMode::Suggest => argv.extend(["--agent".into(), "plan".into()]),
            PermissionMode::Permissionless => argv.push("--auto".into()),
        }
        if let Some(m) = &s.model {
            argv.extend(["--model".into(), m.clone()]);
        }
        argv.extend(s.args.iter().cloned());
        if ctx.resume {
            match &ctx.agent_session_id {
                Some(id) => argv.extend(["--session".into(), id.clone()]),
                None => argv.push("--continue".into()),
            }
        } else {
            let prompt = Prompt::read(&ctx.prompt_file)?;
            argv.push("--prompt".into());
            argv.push(if prompt.full.len() <= INLINE_PROMPT_MAX {
                prompt.full.trim().to_string()
            } else {
                prompt_pointer(&ctx.prompt_file)
            });
        }
        Ok((argv, s.env.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ctx, settings, PROMPT};
    use super::*;
    use crate::config::AgentKind;

    #[test]
    fn launch_argv_for_each_mode_and_resume() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut c = ctx(dir.path(), PROMPT);
        let argv = |mode, c: &AgentContext| {
            let s = settings(
                AgentKind::Opencode,
                mode,
                Some("anthropic/claude-sonnet-4-5"),
            );
            OpencodeAgent::new("opencode".into(), s)
                .launch(c)
                .expect("launch")
                .0
        };
        assert_eq!(
            argv(PermissionMode::Default, &c),
            [
                "opencode",
                "--model",
                "anthropic/claude-sonnet-4-5",
                "--prompt",
                PROMPT.trim()
            ]
        );
        assert_eq!(argv(PermissionMode::Suggest, &c)[1..3], ["--agent", "plan"]);
        assert_eq!(argv(PermissionMode::Permissionless, &c)[1], "--auto");
        c.resume = true;
        assert_eq!(
            argv(PermissionMode::Default, &c).last().map(String::as_str),
            Some("--continue")
        );
        c.agent_session_id = Some("ses_1".into());
        assert_eq!(
            argv(PermissionMode::Default, &c)[3..],
            ["--session", "ses_1"]
        );
    }
}
