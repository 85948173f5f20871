//! Agents: how each coding-agent CLI is launched (an argument vector, never a shell string),
//! resumed, and observed (activity, token usage).
//!
//! | kind | module | prompt | resume | native activity |
//! |---|---|---|---|---|
//! | `claude-code` | [`claude`] | system part `--append-system-prompt`, task positional | `--resume <id>` | `~/.claude/projects/<cwd>/<id>.jsonl` |
//! | `codex` | [`codex`] | positional | `codex resume <id>` | `~/.codex/sessions/…/rollout-*.jsonl` |
//! | `aider` | [`aider`] | `--message-file` (one turn, then aider exits) | `--restore-chat-history` | screen only; usage from `.aider.chat.history.md` |
//! | `opencode` | [`opencode`] | `--prompt` | `--session <id>` / `--continue` | screen; usage and session id from its database |
//! | `command` | [`command`] | `$FLOTILLA_PROMPT_FILE` | — | screen only |
//!
//! Restarted for a reaction's instructions (an exited agent, see
//! `domain::machine::restart`), every kind but `command` takes them as the resumed
//! conversation's first prompt (`claude --resume <id> -- <text>`, `codex resume <id> <text>`,
//! `opencode --continue --prompt <text>`, `aider --restore-chat-history --message <text>`);
//! `command` agents get them typed in once they run.
//!
//! Every built-in kind takes its [`AgentSettings`]: `command` replaces the executable (a wrapper,
//! or the scripted test agent), `model` and `permission_mode` map to the CLI's flags (nothing is
//! passed for `default`, so the CLI's own default applies; bypass flags only for
//! `permissionless`), `args` are appended before the prompt, and `env` is the only environment
//! the plugin adds (the caller adds `FLOTILLA_*` and the allow-listed base variables).
//!
//! Prompts longer than [`INLINE_PROMPT_MAX`] are not put on the command line (tmux refuses
//! commands over 16 KiB and Linux arguments over 128 KiB); the agent is pointed at the prompt
//! file instead.

pub mod aider;
pub mod claude;
pub mod codex;
pub mod command;
pub mod log_tally;
pub mod opencode;
pub mod opencode_db;
pub mod recent;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub use aider::AiderAgent;
pub use claude::ClaudeCodeAgent;
pub use codex::CodexAgent;
pub use command::CommandAgent;
pub use opencode::OpencodeAgent;

use super::{Agent, PluginError, PluginResult};
use crate::config::{AgentKind, AgentSettings};
use crate::pricing::PriceTable;

/// Largest prompt (bytes of prompt text on the command line) passed inline.
pub const INLINE_PROMPT_MAX: usize = 8 * 1024;

/// The heading `build_prompt` puts before the task; everything else is standing instructions.
const TASK_HEADING: &str = "## Task";

/// The prompt file, read and split.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// Standing instructions (project rules, how to work), if the file has a `## Task` section.
    pub system: Option<String>,
    /// The task itself (the whole file when it has no `## Task` section).
    pub task: String,
    /// The file as written.
    pub full: String,
}

impl Prompt {
    /// Splits prompt text at its `## Task` section: the section's body is the task, the rest is
    /// the standing instructions.
    pub fn parse(full: &str) -> Prompt {
        let start = full
            .match_indices(TASK_HEADING)
            .map(|(i, _)| i)
            .find(|&i| i == 0 || full[..i].ends_with('\n'));
        let Some(start) = start else {
            return Prompt {
                system: None,
                task: full.trim().to_string(),
                full: full.to_string(),
            };
        };
        let body_start = full[start..]
            .find('\n')
            .map(|i| start + i + 1)
            .unwrap_or(full.len());
        let end = full[body_start..]
            .find("\n## ")
            .map(|i| body_start + i + 1)
            .unwrap_or(full.len());
        let system = format!("{}{}", &full[..start], &full[end..]);
        let system = system.trim();
        Prompt {
            system: (!system.is_empty()).then(|| system.to_string()),
            task: full[body_start..end].trim().to_string(),
            full: full.to_string(),
        }
    }

    /// Reads and splits a prompt file.
    ///
    /// # Errors
    /// `Invalid` when the file cannot be read (the launch cannot give the agent its task).
    pub fn read(path: &Path) -> PluginResult<Prompt> {
        std::fs::read_to_string(path)
            .map(|t| Prompt::parse(&t))
            .map_err(|e| PluginError::Invalid(format!("prompt file {}: {e}", path.display())))
    }
}

/// A fresh start's first prompt with a restart's instructions after the task.
pub fn with_message(task: String, message: Option<&str>) -> String {
    match message {
        Some(m) => format!("{task}\n\n{m}"),
        None => task,
    }
}

/// What to say instead of an over-long prompt: where the task is.
pub fn prompt_pointer(path: &Path) -> String {
    format!(
        "Your instructions and task are in the file {}. Read it first, then do the task.",
        path.display()
    )
}

/// The executable part of the argv: the configured `command` if any, else `default`.
pub(crate) fn program(settings: &AgentSettings, default: &str) -> Vec<String> {
    if settings.command.is_empty() {
        vec![default.to_string()]
    } else {
        settings.command.clone()
    }
}

/// The agent plugin for a configured (or built-in) agent called `name`; agents that report
/// tokens without a cost price them with `prices`.
///
/// # Errors
/// `Invalid` for a `command` agent without a command.
pub fn from_settings(
    name: &str,
    settings: &AgentSettings,
    prices: &Arc<PriceTable>,
) -> PluginResult<Arc<dyn Agent>> {
    let name = name.to_string();
    let s = settings.clone();
    Ok(match settings.kind {
        AgentKind::ClaudeCode => {
            Arc::new(ClaudeCodeAgent::new(name, s).with_prices(prices.clone()))
        }
        AgentKind::Codex => Arc::new(CodexAgent::new(name, s).with_prices(prices.clone())),
        AgentKind::Aider => Arc::new(AiderAgent::new(name, s)),
        AgentKind::Opencode => Arc::new(OpencodeAgent::new(name, s)),
        AgentKind::Command => {
            if s.command.is_empty() {
                return Err(PluginError::Invalid(format!(
                    "agent {name} (kind command) has an empty command"
                )));
            }
            Arc::new(CommandAgent {
                name,
                argv: s.command,
                env: s.env.into_iter().collect::<BTreeMap<_, _>>(),
            })
        }
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::path::{Path, PathBuf};

    use crate::config::{AgentKind, AgentSettings, PermissionMode};
    use crate::plugins::AgentContext;

    pub const PROMPT: &str = "## Project rules\n\nUse tabs.\n\n## Task\n\nFix the parser.\n\n## How to work\n\nCommit your work.\n";

    pub fn settings(kind: AgentKind, mode: PermissionMode, model: Option<&str>) -> AgentSettings {
        let mut s = AgentSettings::built_in(kind);
        s.permission_mode = mode;
        s.model = model.map(str::to_string);
        s
    }

    /// A context whose prompt file holds `prompt`, in a fresh temp dir.
    pub fn ctx(dir: &Path, prompt: &str) -> AgentContext {
        let prompt_file = dir.join("prompt.md");
        std::fs::write(&prompt_file, prompt).expect("write prompt");
        AgentContext {
            permission_mode: None,
            flotilla_cli: None,
            session_id: "demo-1".into(),
            workspace: dir.join("ws"),
            prompt_file,
            resume: false,
            agent_session_id: None,
            message: None,
        }
    }

    pub fn path(p: &Path) -> String {
        PathBuf::from(p).to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_section_is_split_from_the_standing_instructions() {
        let p = Prompt::parse(test_support::PROMPT);
        assert_eq!(p.task, "Fix the parser.");
        assert_eq!(
            p.system.as_deref(),
            Some("## Project rules\n\nUse tabs.\n\n## How to work\n\nCommit your work.")
        );
        let plain = Prompt::parse("just do it\n");
        assert_eq!(plain.task, "just do it");
        assert_eq!(plain.system, None);
        // A "## Task" inside a line is not a heading.
        assert_eq!(Prompt::parse("see ## Task below").system, None);
    }

    #[test]
    fn a_command_agent_needs_a_command() {
        let s = AgentSettings::built_in(AgentKind::Command);
        assert!(matches!(
            from_settings("x", &s, &Arc::new(PriceTable::builtin_only())),
            Err(PluginError::Invalid(_))
        ));
        let mut s = s;
        s.command = vec!["my-agent".into()];
        let prices = Arc::new(PriceTable::builtin_only());
        assert_eq!(from_settings("x", &s, &prices).expect("agent").name(), "x");
    }
}
