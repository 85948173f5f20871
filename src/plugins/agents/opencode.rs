//! The `opencode` agent (sst's OpenCode TUI).
//!
//! Launch: `opencode [--agent plan | --auto] [--model provider/model] [args…]
//! (--prompt <prompt> | --session <id> | --continue)`. The whole prompt file is the initial
//! prompt (over [`INLINE_PROMPT_MAX`], a pointer to the file). Permission modes, as OpenCode
//! 1.18.33 behaves when run: `default` passes nothing (OpenCode's configured permissions
//! apply; out of the box it edits and runs commands without asking); `auto-edit` sets
//! `OPENCODE_PERMISSION={"edit":"allow","bash":"ask"}` (OpenCode's inline permission config),
//! since passing nothing let commands run unasked; `suggest` runs OpenCode's `plan` agent,
//! which refuses edits but runs shell commands unasked (a command can write files), so it also
//! sets `{"bash":"ask"}`; `permissionless` is `--auto` (approve everything not explicitly
//! denied). An `OPENCODE_PERMISSION` in the agent's configured `env` wins. Resume: `--session <id>` when the caller knows OpenCode's session id,
//! else `--continue` (OpenCode's last session of this directory). Flags checked against
//! opencode 1.18.33.
//!
//! Observation: whether a turn runs or ended, its usage and the session id for `--session` come
//! from OpenCode's own database ([`super::opencode_db`]): the sessions it ran in the
//! workspace, with the tokens and cost OpenCode counted (priced from the provider's model
//! `cost` in its config or its models.dev catalogue), and the newest one's newest message (a
//! turn ends with an assistant message completed other than to call tools; the screen shows
//! no such end, so a finished OpenCode was `active` until its stuck timer). Its permission dialog (1.18.33: "△
//! Permission required", what it wants on the next line, then "Allow once   Allow always
//! Reject" with "⇆ select  enter confirm" on the same line, a row of buttons answered by
//! [`crate::plugins::button_row`]) is read here: `waiting_input`, with the question
//! "Permission required: <what>: <details> [Allow once | Allow always | Reject]" (e.g. "Shell
//! command: $ git push"), without the sidebar a wide terminal shows beside it. By default OpenCode asks before touching anything outside the project
//! (`external_directory`) and for a repeated identical call (`doom_loop`); edits and commands
//! inside it are allowed.

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;

use super::{opencode_db, program, prompt_pointer, with_message, Prompt, INLINE_PROMPT_MAX};
use crate::config::{AgentSettings, PermissionMode};
use crate::plugins::activity::{self, ActivityProbe, ActivitySignal, ActivitySource, Reading};
use crate::plugins::button_row;
use crate::plugins::{Agent, AgentContext, PluginResult};
use crate::store::Activity;

/// OpenCode's inline permission config (JSON), merged over its configured permissions.
pub const PERMISSION_ENV: &str = "OPENCODE_PERMISSION";

/// How many of the screen's last non-empty lines are searched for the permission dialog.
const DIALOG_LINES: usize = 20;
/// How many lines must start text in one column for it to be the sidebar's.
const SIDEBAR_LINES: usize = 3;

/// OpenCode's permission dialog at the bottom of `screen`, as one line for a human: its
/// request and its buttons. The "Always allow" step that "Allow always" opens (its patterns,
/// `Confirm`, `Cancel`) is worded the same way. `None` when the screen's bottom shows no such
/// dialog.
pub fn permission_question(screen: &str) -> Option<String> {
    let screen = without_sidebar(screen);
    let buttons = button_row::labels(&screen)?;
    let lines: Vec<&str> = dialog_lines(&screen)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '▀'))
        .collect();
    let lines = &lines[lines.len().saturating_sub(DIALOG_LINES)..];
    // The buttons are on the dialog's last line, under everything else it shows.
    let answers = lines.iter().rposition(|l| l.contains("enter confirm"))?;
    let head = lines[..answers]
        .iter()
        .rposition(|l| l.ends_with("Permission required") || l.ends_with("Always allow"))?;
    // What it wants: a title ("← Access external directory /x", "# Shell command"), then its
    // details (the command; "Patterns" and the paths).
    let mut q = lines[head].trim_start_matches(['△', ' ']).to_string();
    for (i, line) in lines[head + 1..answers].iter().enumerate() {
        let text = if i == 0 {
            line.trim_start_matches(['←', '→', '#', '⚙', ' '])
        } else {
            line
        };
        if text != "Patterns" {
            q.push_str(": ");
            q.push_str(text.trim());
        }
    }
    q.push_str(&format!(" [{}]", buttons.join(" | ")));
    Some(activity::mask_secrets(&q))
}

/// The question of OpenCode's `question` tool at the bottom of `screen`, worded as a numbered
/// menu ("Which colour? [1. Red | 2. Blue | 3. Type your own answer | Dismiss (esc)]").
/// OpenCode 1.18.33 draws it right of a `┃` border: the question, a blank line, each option
/// with its description on the line under it, its own "Type your own answer" last (unless the
/// model turned it off), then "↑↓ select  enter submit  esc dismiss"; an option's number key
/// picks it at once, Esc dismisses the dialog (`no` or `dismiss` picks that).
/// Several questions are tabs ("Colour   Size   Confirm" above the question, "⇆ tab … enter
/// confirm" under it): a number key answers one and shows the next, and the last tab, "Review",
/// lists the answers to send with Enter ("⇆ tab  enter submit  esc dismiss"), worded "Review:
/// Colour: Blue · Size: Large [Submit (enter) | Dismiss (esc)]". `None` when no such dialog
/// is drawn.
pub fn question_dialog(screen: &str) -> Option<String> {
    let screen = without_sidebar(screen);
    let lines: Vec<&str> = dialog_lines(&screen).collect();
    let footer = lines.iter().rposition(|l| !l.is_empty())?;
    let hints = lines[footer];
    let submits = hints.contains("enter submit");
    if !hints.contains("esc dismiss") || !(submits || hints.contains("enter confirm")) {
        return None;
    }
    // The runs of lines between blank ones, nearest the footer first.
    let mut blocks = lines[..footer]
        .split(|l| l.is_empty())
        .filter(|b| !b.is_empty())
        .rev();
    let options = blocks.next()?;
    if !activity::is_option(options[0]) {
        return submits.then(|| review(&lines[..footer])).flatten();
    }
    let question = blocks.next().filter(|q| q.len() <= 4)?.join(" ");
    // A picked option is drawn with a `✓` after it for a moment before OpenCode moves on
    // (seen on the real 1.18.33 after a number key): the question stays the same one.
    let options: Vec<&str> = options
        .iter()
        .copied()
        .filter(|l| activity::is_option(l))
        .map(|l| l.trim_end_matches('✓').trim_end())
        .collect();
    // Esc dismisses the dialog: the model is told the human dismissed it.
    Some(activity::mask_secrets(&format!(
        "{question} [{} | Dismiss (esc)]",
        options.join(" | ")
    )))
}

/// The "Review" tab of OpenCode's questions (the lines above its footer): its answers, and the
/// keys that send or drop them.
fn review(lines: &[&str]) -> Option<String> {
    let at = lines.iter().rposition(|l| *l == "Review")?;
    let answers: Vec<&str> = lines[at + 1..]
        .iter()
        .copied()
        .filter(|l| !l.is_empty())
        .collect();
    (!answers.is_empty()).then(|| {
        activity::mask_secrets(&format!(
            "Review: {} [Submit (enter) | Dismiss (esc)]",
            answers.join(" · ")
        ))
    })
}

/// A model request OpenCode 1.18.33 retries, from its status line: the error's message and the
/// attempt ("The server had an error … [retrying in 1s attempt #2]").
fn retrying(screen: &str) -> Option<(String, u32)> {
    screen.lines().rev().find_map(|l| {
        let (before, after) = l.split_once(" [retrying in ")?;
        let attempt = after.split_once(" attempt #")?.1;
        let attempt: u32 = attempt
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()?;
        let message = before
            .trim_start_matches(|c: char| !c.is_alphanumeric())
            .trim();
        (!message.is_empty()).then(|| (message.to_string(), attempt))
    })
}

/// The question an OpenCode screen asks: its permission prompt, else its question dialog or
/// the bottom line's.
fn asked_on(screen: &str) -> Option<String> {
    permission_question(screen).or_else(|| screen_question(screen))
}

/// How OpenCode's screen is read for a question to answer with keys: its question dialog,
/// which the generic reading misses (its border and sidebar), else that reading.
fn screen_question(screen: &str) -> Option<String> {
    question_dialog(screen).or_else(|| activity::terminal_question(screen))
}

/// The lines of a screen (its sidebar already cut) without OpenCode's left border (`┃`, `╹`)
/// and the blanks around the text.
fn dialog_lines(screen: &str) -> impl Iterator<Item = &str> {
    screen
        .lines()
        .map(|l| l.trim_matches(|c: char| c.is_whitespace() || matches!(c, '┃' | '│' | '╹')))
}

/// The screen without OpenCode's sidebar (the session's title, context, cost, directory and
/// branch, drawn without a border right of the session when the terminal is wide): cut at
/// the column where, on at least [`SIDEBAR_LINES`] lines, text starts after a gap of four
/// blanks or more in the right half of the screen.
fn without_sidebar(screen: &str) -> String {
    let lines: Vec<Vec<char>> = screen.lines().map(|l| l.chars().collect()).collect();
    let width = lines.iter().map(Vec::len).max().unwrap_or(0);
    let mut starts: BTreeMap<usize, usize> = BTreeMap::new();
    for l in &lines {
        if let Some(col) = last_island(l).filter(|&c| c >= width / 2) {
            *starts.entry(col).or_default() += 1;
        }
    }
    let Some((&col, _)) = starts
        .iter()
        .filter(|(_, &n)| n >= SIDEBAR_LINES)
        .max_by_key(|(_, &n)| n)
    else {
        return screen.to_string();
    };
    let cut = |l: &Vec<char>| -> String {
        let blank_before = col >= 2
            && l.get(col - 2..col)
                .is_some_and(|g| g.iter().all(|c| *c == ' '));
        if l.len() > col && blank_before {
            l[..col].iter().collect()
        } else {
            l.iter().collect()
        }
    };
    lines.iter().map(cut).collect::<Vec<_>>().join("\n")
}

/// Where the last run of text on a line starts, when four blanks or more stand before it.
fn last_island(line: &[char]) -> Option<usize> {
    let end = line.iter().rposition(|c| !c.is_whitespace())? + 1;
    let mut blanks = 0;
    for i in (0..end).rev() {
        if line[i] == ' ' {
            blanks += 1;
            if blanks == 4 {
                // The run starts after the blanks that precede it.
                let start = line[i..end].iter().position(|c| *c != ' ')?;
                return Some(i + start);
            }
        } else {
            blanks = 0;
        }
    }
    None
}

/// Launches OpenCode.
#[derive(Debug, Clone)]
pub struct OpencodeAgent {
    name: String,
    settings: AgentSettings,
    /// Connections to OpenCode's database, kept between looks.
    dbs: opencode_db::Databases,
}

impl OpencodeAgent {
    /// An OpenCode agent called `name` with its settings.
    pub fn new(name: String, settings: AgentSettings) -> Self {
        OpencodeAgent {
            name,
            settings,
            dbs: opencode_db::Databases::default(),
        }
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
        let mut env = s.env.clone();
        let permission = match ctx.mode(s) {
            PermissionMode::Default => None,
            PermissionMode::AutoEdit => Some(r#"{"edit":"allow","bash":"ask"}"#),
            PermissionMode::Suggest => {
                argv.extend(["--agent".into(), "plan".into()]);
                Some(r#"{"bash":"ask"}"#)
            }
            PermissionMode::Permissionless => {
                argv.push("--auto".into());
                None
            }
        };
        if let Some(p) = permission {
            env.entry(PERMISSION_ENV.into())
                .or_insert_with(|| p.to_string());
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
            if let Some(m) = &ctx.message {
                argv.extend(["--prompt".into(), m.clone()]);
            }
        } else {
            let prompt = Prompt::read(&ctx.prompt_file)?;
            argv.push("--prompt".into());
            let task = if prompt.full.len() <= INLINE_PROMPT_MAX {
                prompt.full.trim().to_string()
            } else {
                prompt_pointer(&ctx.prompt_file)
            };
            argv.push(with_message(task, ctx.message.as_deref()));
        }
        Ok((argv, env))
    }

    async fn activity(&self, probe: &ActivityProbe) -> PluginResult<Option<ActivitySignal>> {
        let screen = probe.terminal.as_deref().unwrap_or_default();
        if permission_question(screen).is_some() || question_dialog(screen).is_some() {
            return Ok(Some(ActivitySignal {
                activity: Activity::WaitingInput,
                at: probe.last_output_at.unwrap_or(probe.now),
                source: ActivitySource::Terminal,
                api_failure: None,
            }));
        }
        // OpenCode's own record of the turn (the screen shows no end of a turn); without a
        // database, the screen alone.
        let reading = match opencode_db::db_path(&self.settings.env) {
            Some(db) => opencode_db::last_turn(&self.dbs, &db, &probe.workspace).await?,
            None => None,
        };
        // A model request OpenCode retries shows only on its status line; the turn's record
        // stands still meanwhile. Recorded as the failure at that record's time (one event
        // for the run of retries), never as a sign of life.
        if let (Some(Reading::Working(at)), Some((message, attempt))) = (&reading, retrying(screen))
        {
            return Ok(Some(
                Reading::ApiRetrying(
                    *at,
                    activity::ApiFailure {
                        logged_at: *at,
                        status: None,
                        message,
                        attempt: Some(attempt),
                        max_retries: None,
                    },
                )
                .signal(probe.now),
            ));
        }
        Ok(activity::combine(
            reading.map(|r| r.signal(probe.now)),
            probe,
        ))
    }

    async fn question(&self, probe: &ActivityProbe) -> Option<String> {
        asked_on(probe.terminal.as_deref()?)
    }

    fn shows_other_question(&self, screen: &str, asked: &str, _workspace: &Path) -> bool {
        asked_on(screen).is_some_and(|q| !crate::domain::question::alike(&q, asked))
    }

    fn screen_question(&self) -> crate::plugins::ScreenQuestion {
        screen_question
    }

    async fn usage(&self, workspace: &Path) -> PluginResult<Option<activity::Usage>> {
        let Some(db) = opencode_db::db_path(&self.settings.env) else {
            return Ok(None);
        };
        Ok(opencode_db::sessions_of(&self.dbs, &db, workspace)
            .await?
            .map(|(u, _)| u))
    }

    async fn agent_session_id(&self, workspace: &Path) -> PluginResult<Option<String>> {
        let Some(db) = opencode_db::db_path(&self.settings.env) else {
            return Ok(None);
        };
        Ok(opencode_db::sessions_of(&self.dbs, &db, workspace)
            .await?
            .map(|(_, id)| id))
    }

    fn takes_message_at_launch(&self) -> bool {
        true
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
        assert_eq!(
            argv(PermissionMode::AutoEdit, &c),
            argv(PermissionMode::Default, &c)
        );
        let env = |mode, extra: Option<&str>| {
            let mut s = settings(AgentKind::Opencode, mode, None);
            if let Some(e) = extra {
                s.env.insert(PERMISSION_ENV.into(), e.into());
            }
            OpencodeAgent::new("opencode".into(), s)
                .launch(&c)
                .expect("launch")
                .1
                .get(PERMISSION_ENV)
                .cloned()
        };
        assert_eq!(env(PermissionMode::Default, None), None);
        assert_eq!(env(PermissionMode::Permissionless, None), None);
        assert_eq!(
            env(PermissionMode::AutoEdit, None).as_deref(),
            Some(r#"{"edit":"allow","bash":"ask"}"#)
        );
        assert_eq!(
            env(PermissionMode::Suggest, None).as_deref(),
            Some(r#"{"bash":"ask"}"#)
        );
        assert_eq!(
            env(PermissionMode::AutoEdit, Some("{}")).as_deref(),
            Some("{}")
        );
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

    /// The bottom of OpenCode 1.18.33's screen asking to write outside the project.
    const DIALOG: &str = "  ┃  Write outside\n  ┃\n     ← Write /tmp/x/outside.txt\n     ▣  Build · Fake model\n  ┃\n  ┃  △ Permission required\n  ┃    ← Access external directory /tmp/x\n  ┃\n  ┃  Patterns\n  ┃\n  ┃  - /tmp/x/*\n  ┃\n  ┃\n  ┃   Allow once   Allow always   Reject                 ctrl+f fullscreen  ⇆ select  enter confirm\n  ┃\n";

    #[test]
    fn the_permission_dialog_is_a_question() {
        assert_eq!(
            permission_question(DIALOG).as_deref(),
            Some("Permission required: Access external directory /tmp/x: - /tmp/x/* [Allow once | Allow always | Reject]")
        );
        let shell = "  ┃  △ Permission required\n  ┃    # Shell command\n  ┃\n  ┃  $ git push\n  ┃\n  ┃   Allow once   Allow always   Reject      ⇆ select  enter confirm\n";
        assert_eq!(
            permission_question(shell).as_deref(),
            Some("Permission required: Shell command: $ git push [Allow once | Allow always | Reject]")
        );
        // Answered: the transcript scrolls on and the dialog is gone.
        let done = "  ┃  # Wrote /tmp/x/outside.txt\n  ┃\n     Wrote it.\n     ▣  Build · Fake model · 20.1s\n  ┃  Build · Fake model Fake\n  ╹▀▀▀▀▀▀▀▀\n   /tmp/x   1.1K (1%) · $0.00  ctrl+p commands\n";
        assert_eq!(permission_question(done), None);
        // Real screens of 1.18.33 in a 200-column pane, its sidebar beside the dialog.
        assert_eq!(
            permission_question(&activity::screen_fixture("opencode-bash-permission.txt"))
                .as_deref(),
            Some(
                "Permission required: Shell command: $ printf made > cmd.txt && echo \
                 WROTE-$((20+22)) [Allow once | Allow always | Reject]"
            )
        );
        assert_eq!(
            permission_question(&activity::screen_fixture("opencode-always-allow.txt")).as_deref(),
            Some(
                "Always allow: This will allow the following patterns until OpenCode is \
                 restarted: - printf *: - echo * [Confirm | Cancel]"
            )
        );
        assert_eq!(permission_question(""), None);
    }

    #[tokio::test]
    async fn the_permission_dialog_reads_as_waiting_input() {
        let agent = OpencodeAgent::new(
            "opencode".into(),
            settings(AgentKind::Opencode, PermissionMode::Default, None),
        );
        let probe = ActivityProbe {
            workspace: "/w".into(),
            terminal: Some(DIALOG.into()),
            last_output_at: None,
            now: chrono::Utc::now(),
        };
        let sig = agent.activity(&probe).await.expect("ok").expect("signal");
        assert_eq!(sig.activity, Activity::WaitingInput);
        assert!(agent
            .question(&probe)
            .await
            .is_some_and(|q| q.starts_with("Permission required: Access external directory")));
    }

    /// The real OpenCode 1.18.33 asking with its `question` tool (sidebar beside it).
    #[test]
    fn the_question_tools_dialog_is_a_numbered_menu() {
        let screen = activity::screen_fixture("opencode-question.txt");
        let q = question_dialog(&screen).expect("the question");
        assert_eq!(
            q,
            "Which colour should the button be? [1. Red | 2. Blue | 3. Type your own answer | \
             Dismiss (esc)]"
        );
        // The generic reading misses it (its border, the sidebar beside its options).
        assert_eq!(activity::terminal_question(&screen), None);
        assert_eq!(screen_question(&screen).as_deref(), Some(q.as_str()));
        // Answered as any numbered menu: an option's number key, or the free-text option.
        assert_eq!(
            activity::menu_key(&q, "Blue"),
            Some(activity::MenuKey::Literal("2".into()))
        );
        assert_eq!(activity::free_text_option(&q).as_deref(), Some("3"));
        // `no` (or `dismiss`) dismisses it with Esc; an option is still picked by its words.
        for no in ["no", "dismiss", "Dismiss"] {
            assert_eq!(
                activity::menu_key(&q, no),
                Some(activity::MenuKey::Escape),
                "{no}"
            );
        }
        // The option just picked, marked while OpenCode moves on: still the same question, so
        // a `send` naming it is not refused as answering another, and its words still match.
        let picked = screen.replacen("2. Blue  ", "2. Blue ✓", 1);
        assert_ne!(picked, screen);
        assert_eq!(question_dialog(&picked).as_deref(), Some(q.as_str()));
        // Several questions: a tab each, answered the same way, then a review of the answers.
        let tab = activity::screen_fixture("opencode-questions-tab.txt");
        assert_eq!(
            question_dialog(&tab).as_deref(),
            Some(
                "Which colour should the button be? [1. Red | 2. Blue | 3. Type your own answer | \
             Dismiss (esc)]"
            )
        );
        let review = question_dialog(&activity::screen_fixture("opencode-questions-review.txt"))
            .expect("the review");
        assert_eq!(
            review,
            "Review: Colour: Blue · Size: Large [Submit (enter) | Dismiss (esc)]"
        );
        for (answer, key) in [
            ("yes", activity::MenuKey::Enter),
            ("Submit", activity::MenuKey::Enter),
            ("no", activity::MenuKey::Escape),
            ("dismiss", activity::MenuKey::Escape),
        ] {
            assert_eq!(activity::menu_key(&review, answer), Some(key), "{answer}");
        }
        assert_eq!(activity::menu_key(&review, "Blue"), None);
        for other in ["opencode-bash-permission.txt", "opencode-always-allow.txt"] {
            assert_eq!(
                question_dialog(&activity::screen_fixture(other)),
                None,
                "{other}"
            );
        }
    }

    /// The real OpenCode 1.18.33's status line while it retries a model request.
    #[test]
    fn a_retried_model_request_is_read_from_the_status_line() {
        let screen = "  ┃  Build · Fake model Fake\n   ⬝⬝⬝⬝⬝⬝⬝⬝ The server had an error while \
            processing your request. Sorry about that! [retrying in 1s attempt #2]       \
            esc interrupt\n";
        assert_eq!(
            retrying(screen),
            Some((
                "The server had an error while processing your request. Sorry about that!"
                    .to_string(),
                2
            ))
        );
        assert_eq!(retrying("  ┃  Build · Fake model Fake\n"), None);
    }
}
