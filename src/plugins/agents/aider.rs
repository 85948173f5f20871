//! The `aider` agent.
//!
//! Launch: `aider [--chat-mode ask | --yes-always] [--model M] --no-check-update
//! --no-show-release-notes --no-analytics --no-gitignore --no-show-model-warnings [args…]
//! --message-file <prompt file>`. Aider has no
//! "start with this message and keep chatting" mode: `--message`/`--message-file` process one
//! message and exit (that is what agent-orchestrator ran too), so an aider session is one
//! turn: it edits, auto-commits and exits, and the session ends with aider's exit status.
//! Resume (`--restore-chat-history`, no message) starts aider interactively on the restored
//! chat, so messages can be typed into it. Permission modes: `default` and `auto-edit` pass
//! nothing (aider applies edits itself and asks before other actions), `suggest` is
//! `--chat-mode ask` (answers without editing), `permissionless` is `--yes-always`.
//! The update check, release notes and analytics are disabled because each can stop an
//! unattended run at a question; so are two more questions aider 0.86.2 asks on a terminal
//! before it reads the message (seen under tmux): "Add .aider* to .gitignore (recommended)?"
//! in every repository whose ignore rules lack `.aider*` (and, answered yes, it leaves an
//! uncommitted `.gitignore` change in the worktree), and, for a model it has no metadata for
//! (any OpenAI-compatible endpoint), "Open documentation url for more info?". Flags checked
//! by running aider 0.86.2.
//!
//! Observation: aider keeps no machine-readable log. Its structured signal is
//! `--notifications-command` (see [`notifications`]): `flotilla hook aider` reports the moment
//! it starts waiting for its human (the session goes idle), and the screen, the fallback,
//! tells a question from the next-message prompt (its `(Y)es/(N)o … [Yes]:` prompts are
//! waiting_input). Usage comes from the transcript it
//! appends to in the repository, `.aider.chat.history.md` (`--chat-history-file`): after
//! every answer a `> Tokens: 1.6k sent, 12 cache hit, 50 received. Cost: $0.0042 message,
//! $0.0042 session.` line (the cost only when aider knows the model's price, e.g. from a
//! `.aider.model.metadata.json`). The counts are aider's, rounded as it prints them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::program;
use crate::config::{AgentSettings, PermissionMode};
use crate::plugins::activity::Usage;
use crate::plugins::{Agent, AgentContext, PluginResult};

/// Aider's transcript file, relative to the repository (its `--chat-history-file` default).
pub const CHAT_HISTORY: &str = ".aider.chat.history.md";

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

    /// Where aider writes its transcript for `workspace`: `--chat-history-file` from the
    /// configured args, else [`CHAT_HISTORY`] in the workspace.
    pub fn chat_history(&self, workspace: &Path) -> PathBuf {
        let args = &self.settings.args;
        let given = args.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix("--chat-history-file=")
                .map(str::to_string)
                .or_else(|| (a == "--chat-history-file").then(|| args.get(i + 1).cloned())?)
        });
        workspace.join(given.unwrap_or_else(|| CHAT_HISTORY.to_string()))
    }
}

/// A token count as aider prints it: `727`, `1.6k`, `12k`.
fn tokens(s: &str) -> Option<u64> {
    match s.strip_suffix('k') {
        Some(k) => k.parse::<f64>().ok().map(|v| (v * 1000.0).round() as u64),
        None => s.parse().ok(),
    }
}

/// The usage aider reported in its transcript: every `Tokens: …` report summed, and the
/// `$… message` costs summed when aider priced them. `None` when the transcript has no report.
pub fn usage(history: &str) -> Option<Usage> {
    let mut total = Usage::default();
    let mut seen = false;
    let mut cost: Option<f64> = None;
    for line in history.lines() {
        let line = line.trim_start_matches('>').trim();
        if let Some(report) = line.strip_prefix("Tokens: ") {
            seen = true;
            // "727 sent, 12 cache write, 5 cache hit, 10 received." then maybe " Cost: …".
            let (counts, rest) = match report.find(" received.") {
                Some(i) => report.split_at(i + " received".len()),
                None => (report, ""),
            };
            let rest = rest.trim_start_matches('.');
            for part in counts.split(", ") {
                let Some((n, what)) = part.split_once(' ') else {
                    continue;
                };
                let Some(n) = tokens(n) else { continue };
                match what {
                    "sent" => total.input_tokens += n,
                    "received" => total.output_tokens += n,
                    "cache write" | "cache hit" => total.cache_tokens += n,
                    _ => {}
                }
            }
            if let Some(c) = message_cost(rest) {
                *cost.get_or_insert(0.0) += c;
            }
        } else if let Some(c) = message_cost(line) {
            // With both cache figures aider puts the cost on the next line.
            *cost.get_or_insert(0.0) += c;
        }
    }
    total.cost_usd = cost;
    total.cost_source = cost.map(|_| crate::store::CostSource::Agent);
    seen.then_some(total)
}

/// `$X` of a `Cost: $X message, $Y session.` report.
fn message_cost(text: &str) -> Option<f64> {
    let rest = text.trim().strip_prefix("Cost: $")?;
    let (amount, _) = rest.split_once(" message")?;
    amount.parse().ok()
}

/// `--notifications --notifications-command '<cli> hook aider'`: aider runs the command (a
/// shell command line, its own format) each time it starts waiting for its human after the
/// model answered, before it asks a question or for the next message; `flotilla hook aider`
/// reports that. Nothing when Flotilla's executable is unknown or the user's `args` set
/// notifications themselves.
fn notifications(cli: Option<&Path>, args: &[String]) -> Vec<String> {
    let theirs = args
        .iter()
        .any(|a| a.starts_with("--notifications") || a.starts_with("--no-notifications"));
    match cli {
        Some(cli) if !theirs => vec![
            "--notifications".into(),
            "--notifications-command".into(),
            format!(
                "{} hook aider",
                crate::plugins::tmux::shell_quote(&cli.to_string_lossy())
            ),
        ],
        _ => Vec::new(),
    }
}

/// How many of the last output lines may stand after the model API error a run ended on
/// (aider's advice under it, "The API provider is not able to authenticate you…").
const FAILED_RUN_TAIL: usize = 3;

/// The model API error an aider run ended on, from its last output lines: aider 0.86 prints
/// the litellm exception (`litellm.AuthenticationError: …`) and exits 0 when it gives up on a
/// message. An error it retried past is followed by the rest of the run, so only one among
/// the last [`FAILED_RUN_TAIL`] lines counts.
pub fn failed_run(output: &str) -> Option<String> {
    output
        .lines()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(FAILED_RUN_TAIL)
        .find_map(|l| {
            let at = l.find("litellm.")?;
            let error = &l[at..];
            let class = error["litellm.".len()..].split(':').next()?;
            class.ends_with("Error").then(|| error.trim().to_string())
        })
}

#[async_trait]
impl Agent for AiderAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn reads_clean_exit(&self) -> bool {
        true
    }

    fn failed_run(&self, output: &str) -> Option<String> {
        failed_run(output)
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
                "--no-gitignore",
                "--no-show-model-warnings",
            ]
            .map(String::from),
        );
        argv.extend(notifications(ctx.flotilla_cli.as_deref(), &s.args));
        argv.extend(s.args.iter().cloned());
        if ctx.resume {
            argv.push("--restore-chat-history".into());
            // Aider answers a `--message` and exits, as it does with its task.
            if let Some(m) = &ctx.message {
                argv.extend(["--message".into(), m.clone()]);
            }
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

    fn takes_message_at_launch(&self) -> bool {
        true
    }

    async fn usage(&self, workspace: &Path) -> PluginResult<Option<Usage>> {
        match tokio::fs::read_to_string(self.chat_history(workspace)).await {
            Ok(text) => Ok(usage(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
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
                "--no-gitignore",
                "--no-show-model-warnings",
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

        // With Flotilla's executable known, aider reports each wait through it.
        c.resume = false;
        c.flotilla_cli = Some(PathBuf::from("/opt/my tools/flotilla"));
        let with = argv(PermissionMode::Default, &c);
        let at = with
            .iter()
            .position(|a| a == "--notifications-command")
            .expect("notifications command");
        assert_eq!(with[at - 1], "--notifications");
        assert_eq!(with[at + 1], "'/opt/my tools/flotilla' hook aider");
        let mut s = settings(AgentKind::Aider, PermissionMode::Default, None);
        s.args = vec!["--no-notifications".into()];
        let theirs = AiderAgent::new("aider".into(), s)
            .launch(&c)
            .expect("launch")
            .0;
        assert!(
            !theirs.iter().any(|a| a == "--notifications-command"),
            "{theirs:?}"
        );
    }

    #[test]
    fn usage_sums_the_reports_in_aiders_transcript() {
        // As aider 0.86.2 writes them: one report per answer, the cost on the next line when
        // both cache figures are there, no cost for a model without a price.
        let history = "# aider chat started at 2026-12-02 00:23:42\n\n\
            #### Change hello.txt to say goodbye  \n\n\
            > Tokens: 727 sent, 10 received. Cost: $0.0016 message, $0.0016 session.  \n\
            > Applied edit to hello.txt  \n\
            > Tokens: 1.6k sent, 12 cache write, 3 cache hit, 1.2k received.  \n\
            > Cost: $0.02 message, $0.02 session.  \n\
            #### next  \n\
            > Tokens: 12k sent, 50 received.  \n";
        let u = usage(history).expect("usage");
        assert_eq!(
            (u.input_tokens, u.cache_tokens, u.output_tokens),
            (727 + 1600 + 12000, 15, 10 + 1200 + 50)
        );
        assert!((u.cost_usd.expect("cost") - 0.0216).abs() < 1e-9);
        assert_eq!(u.cost_source, Some(crate::store::CostSource::Agent));
        let unpriced = usage("> Tokens: 727 sent, 10 received.  \n").expect("usage");
        assert_eq!((unpriced.cost_usd, unpriced.cost_source), (None, None));
        assert_eq!(usage("# aider chat started\n"), None);
    }

    #[test]
    fn the_transcript_path_follows_chat_history_file() {
        let ws = Path::new("/w");
        let mut s = settings(AgentKind::Aider, PermissionMode::Default, None);
        assert_eq!(
            AiderAgent::new("a".into(), s.clone()).chat_history(ws),
            ws.join(CHAT_HISTORY)
        );
        s.args = vec!["--chat-history-file".into(), "h.md".into()];
        assert_eq!(
            AiderAgent::new("a".into(), s.clone()).chat_history(ws),
            ws.join("h.md")
        );
        s.args = vec!["--chat-history-file=/abs/h.md".into()];
        assert_eq!(
            AiderAgent::new("a".into(), s).chat_history(ws),
            PathBuf::from("/abs/h.md")
        );
    }

    /// The real aider 0.86.2's last screen after the model API refused its key (exit 0).
    #[test]
    fn a_run_that_ended_on_the_model_apis_error_failed() {
        let screen = "Repo-map: using 4096 tokens, auto refresh\nREADME.md\n\
            ░█  ░█  litellm.AuthenticationError: AuthenticationError: OpenAIException - \
            Incorrect API key provided.\n\
            The API provider is not able to authenticate you. Check your API key.\n";
        assert_eq!(
            failed_run(screen).as_deref(),
            Some(
                "litellm.AuthenticationError: AuthenticationError: OpenAIException - \
                 Incorrect API key provided."
            )
        );
        // Retried past: the run went on (an edit, a commit) after the error.
        let recovered = "litellm.InternalServerError: boom\nRetrying in 0.2 seconds...\n\
            Applied edit to README.md\nCommit 1a2b3c4 Say goodbye\nTokens: 1k sent\n";
        assert_eq!(failed_run(recovered), None);
        assert_eq!(failed_run("Applied edit to README.md\n"), None);
    }
}
