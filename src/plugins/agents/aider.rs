//! The `aider` agent.
//!
//! Launch: `aider [--chat-mode ask | --yes-always] [--model M] --no-check-update
//! --no-show-release-notes --no-analytics [args…] --message-file <prompt file>`. Aider has no
//! "start with this message and keep chatting" mode: `--message`/`--message-file` process one
//! message and exit (that is what agent-orchestrator ran too), so an aider session is one
//! turn: it edits, auto-commits and exits, and the session ends with aider's exit status.
//! Resume (`--restore-chat-history`, no message) starts aider interactively on the restored
//! chat, so messages can be typed into it. Permission modes: `default` and `auto-edit` pass
//! nothing (aider applies edits itself and asks before other actions), `suggest` is
//! `--chat-mode ask` (answers without editing), `permissionless` is `--yes-always`.
//! The update check, release notes and analytics are disabled because each can stop an
//! unattended run at a question. Flags checked against aider 0.86.
//!
//! Observation: aider keeps no machine-readable log, so activity comes from the screen
//! (its `(Y)es/(N)o … [Yes]:` prompts are waiting_input).

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::program;
use crate::config::{AgentSettings, PermissionMode};
use crate::plugins::{Agent, AgentContext, PluginResult};

/// Launches aider.
#[derive(Debug, Clone)]
pub struct AiderAgent {
    name: String,
    settings: AgentSettings,
}

impl AiderAgent {
    /// An aider agent called `name` with its settings.
    pub fn new(name: String, settings: AgentSettings) -> Self {
        AiderAgent { name, settings }
    }
}

#[async_trait]
impl Agent for AiderAgent {
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
        let mut argv = program(s, "aider");
        match ctx.mode(s) {
            PermissionMode::Default | PermissionMode::AutoEdit => {}
            PermissionMode::Suggest => argv.extend(["--chat-mode".into(), "ask".into()]),
            PermissionMode::Permissionless => argv.push("--yes-always".into()),
        }
        if let Some(m) = &s.model {
            argv.extend(["--model".into(), m.clone()]);
        }
        argv.extend(
            [
                "--no-check-update",
                "--no-show-release-notes",
                "--no-analytics",
            ]
            .map(String::from),
        );
        argv.extend(s.args.iter().cloned());
        if ctx.resume {
            argv.push("--restore-chat-history".into());
        } else {
            // Fail now, not inside aider, when the prompt is missing.
            std::fs::metadata(&ctx.prompt_file).map_err(|e| {
                crate::plugins::PluginError::Invalid(format!(
                    "prompt file {}: {e}",
                    ctx.prompt_file.display()
                ))
            })?;
            argv.extend([
                "--message-file".into(),
                ctx.prompt_file.to_string_lossy().into_owned(),
            ]);
        }
        Ok((argv, s.env.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ctx, path, settings, PROMPT};
    use super::*;
    use crate::config::AgentKind;

    #[test]
    fn launch_argv_for_each_mode_and_resume() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut c = ctx(dir.path(), PROMPT);
        let argv = |mode, c: &AgentContext| {
            AiderAgent::new(
                "aider".into(),
                settings(AgentKind::Aider, mode, Some("gpt-4o")),
            )
            .launch(c)
            .expect("launch")
            .0
        };
        let file = path(&c.prompt_file);
        assert_eq!(
            argv(PermissionMode::Default, &c),
            [
                "aider",
                "--model",
                "gpt-4o",
                "--no-check-update",
                "--no-show-release-notes",
                "--no-analytics",
                "--message-file",
                file.as_str()
            ]
        );
        assert_eq!(
            argv(PermissionMode::AutoEdit, &c),
            argv(PermissionMode::Default, &c)
        );
        assert_eq!(
            argv(PermissionMode::Suggest, &c)[1..3],
            ["--chat-mode", "ask"]
        );
        assert_eq!(argv(PermissionMode::Permissionless, &c)[1], "--yes-always");
        c.resume = true;
        let resumed = argv(PermissionMode::Default, &c);
        assert_eq!(
            resumed.last().map(String::as_str),
            Some("--restore-chat-history")
        );
        assert!(!resumed.contains(&"--message-file".to_string()));
    }
}
