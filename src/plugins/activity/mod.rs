//! What an agent is doing, and what it has cost: the types every agent plugin reports, the
//! freshness rules, the terminal heuristics used when an agent keeps no log of its own, and the
//! file helpers (tail reads) the per-agent parsers share.
//!
//! Each agent module turns its own evidence into a [`Reading`] (`agents::claude` reads Claude
//! Code's JSONL session log, `agents::codex` reads Codex's rollout files); [`Reading::signal`]
//! applies the freshness rules below, and [`combine`] merges it with what the screen shows.
//! Everything here is pure except the `read_*`/`newest_*` file helpers; nothing here starts a
//! subprocess or touches the store.
//!
//! # Rules (shared by all agents)
//! - A **pending question** (a tool call that asks the human, an approval request) is
//!   `waiting_input` for as long as it is the last thing in the log. It stops being last the
//!   moment anything else is written, so it cannot stick after the agent moves on (the
//!   "sticky waiting_input after a finished turn" weakness of agent-orchestrator, #9).
//! - **Work in progress** (a prompt the model is answering, a tool running) is `active` while
//!   its last entry is at most [`WEAK_WINDOW`] old, then `idle`: nothing was written for that
//!   long, whatever the reason.
//! - A **finished turn** is `idle`, timestamped with the entry that finished it, so a stuck
//!   detector can measure how long the agent has been quiet.
//! - Assistant text without an end-of-turn marker may be mid-turn: `active` for
//!   [`ACTIVE_WINDOW`], then `idle`.
//! - The **screen** says `waiting_input` only when its bottom shows a live question: a yes/no
//!   prompt on the last line with nothing typed after it, or a numbered option list under a
//!   question (see [`terminal_waiting`]). A question that has scrolled up, a prompt with its
//!   answer after it (`… [Yes]: y`), or prose ending with `?`, does not count.
//! - An agent's own log wins over the screen, except that a live question on the screen
//!   beats "active" (Claude's log shows a tool call, not the permission dialog in front of it).
//! - A **model API failure** the agent retries (Claude's `system`/`api_error` entries) is
//!   `active` with [`ActivitySignal::api_failure`] set: the agent is busy, but the failure is
//!   not progress (the session records it and does not count it as a sign of life). One it
//!   gave up on (the turn ended on an API error) is `waiting_input`: a human decides whether
//!   to try again.

mod answer;

pub use answer::{
    cursor_menu_move, free_text_option, is_choice, menu_key, refusal_with_instruction, shows_busy,
    CursorMove, MenuKey,
};

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::PluginResult;
use crate::domain::question::same_question;
use crate::store::Activity;

/// Work newer than this is `active` even without an end-of-work marker.
pub const ACTIVE_WINDOW: Duration = Duration::seconds(30);
/// Work in progress older than this (nothing written since) is reported `idle`.
pub const WEAK_WINDOW: Duration = Duration::minutes(5);
/// How much of a log file's end the activity parsers read.
pub const TAIL_BYTES: u64 = 128 * 1024;
/// How many non-empty screen lines from the bottom the terminal heuristics look at.
const SCREEN_LINES: usize = 14;

/// Where an activity reading came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivitySource {
    /// The agent's own session log (Claude JSONL, Codex rollout): timestamps are the agent's.
    Native,
    /// The terminal: `at` is when output last changed (or when we looked), so a consumer must
    /// not treat a terminal-only `idle` as proof of how long the agent has been idle.
    Terminal,
}

/// What an agent is doing, when that was true, and how we know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivitySignal {
    /// The classification.
    pub activity: Activity,
    /// When the evidence was produced (log entry time; last output time for the terminal).
    pub at: DateTime<Utc>,
    /// Where it came from.
    pub source: ActivitySource,
    /// The newest model API failure of the current turn, if any. When its `logged_at` is
    /// `at`, it is what the agent is doing now: retrying (`active`) or given up
    /// (`waiting_input`); otherwise the turn went on after it (recorded only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_failure: Option<ApiFailure>,
}

/// How [`ApiFailure::question`] begins and ends.
const API_FAILED: &str = "the model API failed ";
const TRY_AGAIN: &str = "; answer to try again";

/// A model API failure an agent logged (a 5xx, a 429, a timeout…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiFailure {
    /// When the agent logged it. A signal whose `at` is this time is the failure itself
    /// (retrying, or given up); a later one carries it as what happened earlier in the turn.
    pub logged_at: DateTime<Utc>,
    /// The HTTP status, when there was an answer (none for a timeout or a lost connection).
    pub status: Option<u16>,
    /// What the agent says about it (`500 Internal server error`, `Request timed out.`).
    pub message: String,
    /// The agent's retry this failure leads to (1-based); `None` once it gave up.
    pub attempt: Option<u32>,
    /// How many retries the agent makes.
    pub max_retries: Option<u32>,
}

impl ApiFailure {
    /// Whether `sig` is this failure itself, not later work of the same turn.
    pub fn is_current(&self, sig: &ActivitySignal) -> bool {
        self.logged_at == sig.at
    }

    /// What a human is asked once the agent gave up.
    pub fn question(&self) -> String {
        format!(
            "{API_FAILED}({}){TRY_AGAIN}",
            crate::plugins::notifiers::truncate(&self.said(), 200)
        )
    }

    /// The agent's words for it, without what looks like a credential (a provider's error
    /// may quote the key it refused).
    pub fn said(&self) -> String {
        mask_secrets(self.message.trim())
    }

    /// Whether a session's question is the one [`ApiFailure::question`] asks: no dialog is
    /// drawn, the agent waits for its next prompt.
    pub fn asked(question: &str) -> bool {
        question.starts_with(API_FAILED) && question.ends_with(TRY_AGAIN)
    }
}

/// Tokens an agent used so far and what they cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens not served from a prompt cache.
    pub input_tokens: u64,
    /// Output tokens (reasoning included where the agent counts it in its output).
    pub output_tokens: u64,
    /// Prompt-cache tokens: reads and writes (Claude), cached input (Codex).
    pub cache_tokens: u64,
    /// Cost in US dollars: the agent's own figure where it reports one, else the tokens
    /// priced from the `pricing:` table (over the built-in prices) when every model used has
    /// a price; `None` otherwise.
    pub cost_usd: Option<f64>,
    /// Where `cost_usd` came from: the agent, a price table, or `unpriced` (null cost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_source: Option<crate::store::CostSource>,
    /// Models that spent tokens but have no price (why `cost_usd` is `None`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unpriced_models: Vec<String>,
}

/// What an activity check gets from the caller.
#[derive(Debug, Clone)]
pub struct ActivityProbe {
    /// The session's workspace (agents key their logs by it).
    pub workspace: PathBuf,
    /// The last lines of the agent's screen or output, if the caller has them.
    pub terminal: Option<String>,
    /// When the runtime last saw output, if it can tell.
    pub last_output_at: Option<DateTime<Utc>>,
    /// The time of the check (passed in so classification is testable).
    pub now: DateTime<Utc>,
}

/// One agent-independent reading of the last meaningful log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// The agent asked the human something and nothing happened since.
    Waiting(DateTime<Utc>),
    /// A prompt is being answered or a tool runs.
    Working(DateTime<Utc>),
    /// Assistant output without an end-of-turn marker (maybe mid-turn).
    Replying(DateTime<Utc>),
    /// The turn ended (or the session has not started one).
    Finished(DateTime<Utc>),
    /// The agent reported an error and stopped (blocked); reported as idle.
    Failed(DateTime<Utc>),
    /// A model request failed and the agent retries it.
    ApiRetrying(DateTime<Utc>, ApiFailure),
    /// The turn ended on a model API failure the agent gave up on.
    ApiFailed(DateTime<Utc>, ApiFailure),
}

impl Reading {
    /// Applies the freshness rules at time `now`.
    pub fn signal(self, now: DateTime<Utc>) -> ActivitySignal {
        let (activity, at) = match &self {
            Reading::ApiRetrying(at, f) => return api_signal(Activity::Active, *at, f),
            Reading::ApiFailed(at, f) => return api_signal(Activity::WaitingInput, *at, f),
            _ => self.plain(now),
        };
        ActivitySignal {
            activity,
            at,
            source: ActivitySource::Native,
            api_failure: None,
        }
    }

    fn plain(self, now: DateTime<Utc>) -> (Activity, DateTime<Utc>) {
        match self {
            Reading::Waiting(at) => (Activity::WaitingInput, at),
            Reading::Working(at) if now - at <= WEAK_WINDOW => (Activity::Active, at),
            Reading::Replying(at) if now - at <= ACTIVE_WINDOW => (Activity::Active, at),
            Reading::Working(at)
            | Reading::Replying(at)
            | Reading::Finished(at)
            | Reading::Failed(at)
            | Reading::ApiRetrying(at, _)
            | Reading::ApiFailed(at, _) => (Activity::Idle, at),
        }
    }
}

fn api_signal(activity: Activity, at: DateTime<Utc>, f: &ApiFailure) -> ActivitySignal {
    ActivitySignal {
        activity,
        at,
        source: ActivitySource::Native,
        api_failure: Some(f.clone()),
    }
}

/// Merges an agent's native signal with what the screen shows (rules in the module doc).
pub fn combine(native: Option<ActivitySignal>, probe: &ActivityProbe) -> Option<ActivitySignal> {
    let on_screen = probe.terminal.as_deref().is_some_and(terminal_waiting);
    match native {
        Some(n) if n.activity == Activity::WaitingInput => Some(n),
        Some(n) if on_screen && n.activity == Activity::Active => Some(ActivitySignal {
            activity: Activity::WaitingInput,
            at: probe.last_output_at.unwrap_or(probe.now),
            source: ActivitySource::Terminal,
            api_failure: None,
        }),
        Some(n) => Some(n),
        None => terminal_activity(probe),
    }
}

/// Whether a question read from the screen is the one a human already answered (in any of its
/// wordings, see [`same_question`]), still
/// shown only because the output has not changed since the answer was typed (`answered_at`):
/// the tail of a log the agent wrote nothing more to after the answer, or a screen not yet
/// redrawn. Such a screen is not a new wait. Any output after the answer, or another
/// question, is.
pub fn answered_still_shown(
    answered: Option<(&str, DateTime<Utc>)>,
    question: Option<&str>,
    last_output_at: Option<DateTime<Utc>>,
) -> bool {
    match (answered, question, last_output_at) {
        (Some((asked, at)), Some(q), Some(out)) => same_question(asked, q) && out <= at,
        _ => false,
    }
}

/// Classifies from the screen alone: `waiting_input` for a live question, `idle` for a bare
/// prompt on the last line, `active` when output changed within [`ACTIVE_WINDOW`], else
/// nothing (the screen cannot tell).
pub fn terminal_activity(probe: &ActivityProbe) -> Option<ActivitySignal> {
    let at = probe.last_output_at.unwrap_or(probe.now);
    let signal = |activity| {
        Some(ActivitySignal {
            activity,
            at,
            source: ActivitySource::Terminal,
            api_failure: None,
        })
    };
    if let Some(text) = probe.terminal.as_deref() {
        if terminal_waiting(text) {
            return signal(Activity::WaitingInput);
        }
        if let Some(last) = bottom_lines(text).last() {
            if is_bare_prompt(last) {
                return signal(Activity::Idle);
            }
        }
    }
    match probe.last_output_at {
        Some(t) if probe.now - t <= ACTIVE_WINDOW => signal(Activity::Active),
        _ => None,
    }
}

/// The last [`SCREEN_LINES`] non-empty lines, right-trimmed, oldest first, without a side
/// panel (see [`screen_lines`]).
fn bottom_lines(text: &str) -> Vec<&str> {
    let mut v: Vec<&str> = screen_lines(text)
        .into_iter()
        .rev()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .take(SCREEN_LINES)
        .collect();
    v.reverse();
    v
}

/// The lines of a screen, each cut where a side panel begins: a TUI may draw a second
/// column beside its main one (Claude Code's "1 file changed" diff panel, right of a `│`
/// drawn down the whole screen), whose text would end every line of a dialog. A column counts
/// as a panel's border when a `│` stands in it on at least four in five non-empty lines (eight
/// at least), most of which do not start with a `│` (a box's right edge has its left one).
pub fn screen_lines(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    match side_panel_column(&lines) {
        Some(col) => lines
            .iter()
            .map(|l| match l.char_indices().nth(col) {
                Some((at, _)) => &l[..at],
                None => l,
            })
            .collect(),
        None => lines,
    }
}

/// The character column of a side panel's border in `lines`, if there is one.
fn side_panel_column(lines: &[&str]) -> Option<usize> {
    let rows: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.trim().is_empty())
        .collect();
    if rows.len() < 8 {
        return None;
    }
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for r in &rows {
        for (i, c) in r.chars().enumerate() {
            if c == '│' && i >= 20 {
                *counts.entry(i).or_default() += 1;
            }
        }
    }
    let (col, n) = counts.into_iter().max_by_key(|&(_, n)| n)?;
    // A box (a composer, a dialog) has its left edge on the same rows; a panel does not.
    let boxed = rows
        .iter()
        .filter(|r| {
            r.chars()
                .position(|c| !c.is_whitespace())
                .is_some_and(|i| i < col && matches!(r.chars().nth(i), Some('│' | '┃' | '║')))
        })
        .count();
    (n * 5 >= rows.len() * 4 && boxed * 2 < rows.len()).then_some(col)
}

fn is_bare_prompt(line: &str) -> bool {
    matches!(line.trim(), ">" | "❯" | "$" | "#" | "›" | "│ >" | "│ > │")
}

/// Hint lines TUIs print under a dialog; skipped when looking for the dialog itself.
fn is_footer(line: &str) -> bool {
    let l = line.to_lowercase();
    [
        "esc to cancel",
        "esc to exit",
        "esc back",
        "enter to confirm",
        "enter to select",
        "to navigate",
    ]
    .iter()
    .any(|f| l.contains(f))
}

/// A yes/no prompt still open: `(y/n)`, `[Y/n]`, `(yes/no)`, aider's `(Y)es/(N)o … [Yes]:`,
/// with nothing typed after it. A prompt followed by an answer (`… [Yes]: y`, left on the
/// screen while the agent works on without printing) was answered: the agent echoed the
/// answer and moved on, so the line is no longer a question.
fn is_yes_no(line: &str) -> bool {
    let l = line.to_lowercase();
    let l = l.trim_end();
    let asks = [
        "(y/n)", "[y/n]", "(yes/no)", "[yes/no]", "(y)es", "[y/n]:", "y/n?",
    ]
    .iter()
    .any(|p| l.contains(p))
        || l.ends_with("[yes]:")
        || l.ends_with("[no]:");
    asks && l.ends_with([')', ']', ':', '?'])
}

/// A numbered choice: `❯ 1. Yes`, `  2. No, and tell Claude…`, `› 1. Yes, proceed (y)`.
pub fn is_option(line: &str) -> bool {
    let t = line
        .trim_start()
        .trim_start_matches(['❯', '›', '>', '│', '*'])
        .trim_start();
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && t[digits..].starts_with(". ")
}

/// Whether the question at the bottom of the screen is a line prompt (`[Yes]:`, `(y/n)`),
/// which reads a whole line: a letter typed to it needs an Enter. A menu takes a letter as a
/// key of its own (Codex's `(y)`), and an Enter there would go to the next thing drawn.
pub fn line_prompt(text: &str) -> bool {
    above_footers(text).0.last().is_some_and(|l| is_yes_no(l))
}

/// The bottom lines of the screen above its footers, and whether a footer says "enter to
/// confirm" (a modal menu).
fn above_footers(text: &str) -> (Vec<&str>, bool) {
    let mut lines = bottom_lines(text);
    let mut confirm_footer = false;
    while lines.last().is_some_and(|l| is_footer(l)) {
        confirm_footer |= lines
            .last()
            .is_some_and(|l| l.to_lowercase().contains("enter to confirm"));
        lines.pop();
    }
    (lines, confirm_footer)
}

/// Whether the bottom of the screen shows a question waiting for the human (see
/// [`terminal_question`]).
pub fn terminal_waiting(text: &str) -> bool {
    terminal_question(text).is_some()
}

/// The question at the bottom of the screen, as one line for a human ("Do you want to
/// proceed? [1. Yes | 2. … | 4. No]"), or `None` when no live question is shown: a yes/no
/// prompt on the last (non-footer) line; a block of numbered options directly under a line
/// that asks something (`Do you want to proceed?`); or, above a "Enter to confirm" footer, a
/// menu of unnumbered options with a `❯` cursor (Claude Code's trust and API-key dialogs).
/// Secrets that a dialog shows (an API key's tail) are masked. Else a row of buttons picked
/// with ⇆ ([`super::button_row`], OpenCode's prompts): the line above it and its buttons.
pub fn terminal_question(text: &str) -> Option<String> {
    listed_question(text).or_else(|| super::button_row::question(text).map(|q| mask_secrets(&q)))
}

/// [`terminal_question`] for a prompt on the last line or options listed one a line.
fn listed_question(text: &str) -> Option<String> {
    let (lines, confirm_footer) = above_footers(text);
    let last = lines.last()?;
    if is_yes_no(last) {
        return Some(mask_secrets(last.trim()));
    }
    let options: Vec<&str> = if is_option(last) {
        // Options, with the description lines and rules a menu may put between them
        // (Claude's AskUserQuestion).
        lines
            .iter()
            .rev()
            .take_while(|l| is_option(l) || is_rule(l) || l.starts_with("    "))
            .copied()
            .collect()
    } else if confirm_footer {
        cursor_menu(&lines)?
    } else {
        return None;
    };
    // The line above the option block must be the question (within a few lines). A modal
    // menu ("Enter to confirm") may ask without a question mark (Claude's bypass-mode
    // disclaimer): then its title, the first line of the dialog under its top rule, says what.
    let above = || lines.iter().rev().skip(options.len());
    let question = match above()
        .take(4)
        .find(|l| l.trim_end().ends_with('?') || l.contains("? "))
    {
        Some(q) => q,
        None if confirm_footer => above().take(8).take_while(|l| !is_rule(l)).last()?,
        None => return None,
    };
    let mut opts: Vec<String> = options
        .iter()
        .rev()
        // A numbered menu is listed by its options alone (no descriptions or rules).
        .filter(|o| !is_option(last) || is_option(o))
        .map(|o| {
            o.trim()
                .trim_start_matches(['❯', '›', '>', '│', '*'])
                .trim()
                .to_string()
        })
        .collect();
    opts.retain(|o| !o.is_empty());
    Some(mask_secrets(&format!(
        "{} [{}]",
        question.trim(),
        opts.join(" | ")
    )))
}

/// A horizontal rule drawn with box characters.
fn is_rule(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && t.chars().all(|c| matches!(c, '─' | '━' | '╌' | '-' | '═'))
}

/// What marks the highlighted option of a menu without numbers.
const CURSOR_MARKS: [char; 3] = ['❯', '›', '>'];

/// An unnumbered menu ending on the last line: the line holding the `❯` cursor and its
/// neighbours whose text starts in the same column. Newest first, like the numbered block.
fn cursor_menu<'a>(lines: &[&'a str]) -> Option<Vec<&'a str>> {
    let text_col = |l: &str| -> usize {
        l.chars()
            .take_while(|c| c.is_whitespace() || CURSOR_MARKS.contains(c))
            .count()
    };
    let cursor = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with(CURSOR_MARKS))?;
    let col = text_col(lines[cursor]);
    // The menu must reach the bottom: everything below the cursor is an option too.
    if lines[cursor + 1..].iter().any(|l| text_col(l) != col) {
        return None;
    }
    let mut start = cursor;
    while start > 0 && text_col(lines[start - 1]) == col && lines[start - 1].chars().count() < 80 {
        start -= 1;
    }
    let menu: Vec<&str> = lines[start..].iter().rev().copied().collect();
    (menu.len() >= 2).then_some(menu)
}

/// Masks what looks like a credential in text taken from a screen: words with a known key
/// prefix, and long runs of letters and digits mixed.
pub fn mask_secrets(text: &str) -> String {
    let trim = |w: &str| -> String {
        w.trim_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_string()
    };
    let prefixed = |core: &str| {
        ["sk-", "ghp_", "gho_", "xox", "github_pat_"]
            .iter()
            .any(|p| core.starts_with(p))
    };
    let long = |core: &str| {
        core.len() >= 24
            && core.chars().any(|c| c.is_ascii_digit())
            && core.chars().any(|c| c.is_ascii_alphabetic())
    };
    let secret = |w: &str| {
        let core = trim(w);
        prefixed(&core) || long(&core)
    };
    // A file name is judged by the parts of its stem: a timestamp and a slug
    // ("1764870000000-brave-falcon.md", a migration's "20261204120000_create_users.sql") are
    // long and mixed together, not one by one as a key is.
    let secret_part = |p: &str| {
        let core = trim(p);
        match core.rsplit_once('.') {
            Some((_, ext)) if is_extension(ext) => {
                prefixed(&core) || core.split(['-', '.', '_']).any(long)
            }
            _ => secret(p),
        }
    };
    text.split(' ')
        .map(|w| {
            // A path (a permission dialog's file) or a URL (an error's) is long and mixed as
            // a whole: its parts are what may be a secret. A relative path is one that starts
            // at a dot or names a file (`.opencode/plans/x.md`, `src/lib.rs`); a word with a
            // slash and neither may be a base64 key.
            let path = ["/", "~/", "."].iter().any(|p| w.starts_with(p))
                || (w.contains('/')
                    && w.rsplit('/')
                        .next()
                        .and_then(|f| trim(f).rsplit_once('.').map(|(_, e)| is_extension(e)))
                        .unwrap_or(false));
            let masked = if w.contains("://") {
                w.split(['/', '?', '&', '=']).any(secret)
            } else if path {
                w.split('/').any(secret_part)
            } else {
                secret(w)
            };
            if masked {
                "[secret]".to_string()
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `ext` reads as a file name's extension (`md`, `rs`, `jsonl`, `mp4`).
fn is_extension(ext: &str) -> bool {
    (1..=8).contains(&ext.len())
        && ext.chars().all(|c| c.is_ascii_alphanumeric())
        && ext.chars().any(|c| c.is_ascii_alphabetic())
}

/// Parses an RFC 3339 timestamp (`2025-10-01T12:00:00.123Z`).
pub fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// When the file at `path` was last written, `None` when there is no such file: a runtime's
/// output log, whose last write is the agent's last output.
///
/// # Errors
/// `Io` for other failures.
pub async fn modified_at(path: &Path) -> PluginResult<Option<DateTime<Utc>>> {
    match tokio::fs::metadata(path).await {
        Ok(m) => Ok(m.modified().ok().map(DateTime::<Utc>::from)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The length of the regular file at `path`, `None` when there is none (missing, or a pipe):
/// how far a runtime's input journal or pane log has got, the mark a resumed delivery starts
/// from.
///
/// # Errors
/// `Io` for other failures.
pub async fn file_len(path: &Path) -> PluginResult<Option<u64>> {
    match tokio::fs::metadata(path).await {
        Ok(m) => Ok(m.is_file().then_some(m.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The complete lines among the last `max` bytes of `path` (a partial first line is dropped),
/// with the file's modification time. `Ok(None)` when the file does not exist.
///
/// # Errors
/// `Io` for other read failures.
pub async fn read_tail(path: &Path, max: u64) -> PluginResult<Option<(String, DateTime<Utc>)>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta = f.metadata().await?;
    let mtime = meta
        .modified()
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(|_| Utc::now());
    let start = meta.len().saturating_sub(max);
    // One byte early: if that byte is the newline ending the previous line, the first line we
    // keep is complete; otherwise the fragment up to the first newline is dropped.
    f.seek(std::io::SeekFrom::Start(start.saturating_sub(1)))
        .await?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).await?;
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        text = text
            .split_once('\n')
            .map(|(_, rest)| rest.to_string())
            .unwrap_or_default();
    }
    Ok(Some((text, mtime)))
}

/// The newest `*.jsonl` file in `dir` (by modification time) whose name does not start with
/// `skip_prefix`, or `None` when there is none (or no directory). Blocking: one directory
/// listing; async callers run it on the blocking pool.
///
/// # Errors
/// When the directory exists but cannot be read.
pub fn newest_jsonl(dir: &Path, skip_prefix: &str) -> std::io::Result<Option<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.ends_with(".jsonl") || (!skip_prefix.is_empty() && name.starts_with(skip_prefix)) {
            continue;
        }
        let Ok(mtime) = entry.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        if best.as_ref().is_none_or(|(t, _)| mtime > *t) {
            best = Some((mtime, entry.path()));
        }
    }
    Ok(best.map(|(_, p)| p))
}

/// `HOME` as the agent sees it: the agent's configured environment wins over Flotilla's own.
pub fn agent_home(env: &BTreeMap<String, String>) -> Option<PathBuf> {
    env.get("HOME")
        .cloned()
        .or_else(|| std::env::var("HOME").ok())
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// A real agent's screen captured under tmux, from `tests/fixtures/screens` (the unit tests'
/// fixtures).
#[cfg(test)]
pub(crate) fn screen_fixture(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/screens")
            .join(name),
    )
    .expect("fixture")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(terminal: &str, last: Option<i64>) -> ActivityProbe {
        let now = parse_ts("2025-10-01T12:00:00Z").expect("ts");
        ActivityProbe {
            workspace: PathBuf::from("/w"),
            terminal: Some(terminal.to_string()),
            last_output_at: last.map(|s| now - Duration::seconds(s)),
            now,
        }
    }

    #[test]
    fn a_yes_no_prompt_on_the_last_line_is_waiting_input() {
        assert!(terminal_waiting(
            "working...\nDo you want to proceed? (y/n) "
        ));
        assert!(terminal_waiting(
            "Add src/main.rs to the chat? (Y)es/(N)o/(D)on't ask again [Yes]: "
        ));
        assert!(terminal_waiting("Overwrite? [Y/n]"));
    }

    #[test]
    fn claude_and_codex_option_dialogs_are_waiting_input() {
        let claude = "\
 Bash command
   rm -rf target
 Do you want to proceed?
 ❯ 1. Yes
   2. Yes, and don't ask again for rm commands in /w
   3. No, and tell Claude what to do differently (esc)
";
        assert!(terminal_waiting(claude));
        let codex = &screen_fixture("codex-run-command.txt");
        assert!(terminal_waiting(codex));
        assert!(
            !line_prompt(claude) && !line_prompt(codex),
            "menus take keys"
        );
        assert!(line_prompt(
            "Add src/main.rs to the chat? (Y)es/(N)o/(D)on't ask again [Yes]: "
        ));
        assert!(line_prompt("working...\nDo you want to proceed? (y/n) "));
        // A yes or no answers a menu by the option it names.
        let claude_q = terminal_question(claude).expect("claude question");
        let codex_q = terminal_question(codex).expect("codex question");
        let key = |q: &str, c: &str| menu_key(q, c);
        assert_eq!(key(&claude_q, "yes"), Some(MenuKey::Literal("1".into())));
        assert_eq!(
            key(&claude_q, "n"),
            Some(MenuKey::Escape),
            "its No says (esc)"
        );
        assert_eq!(key(&codex_q, "y"), Some(MenuKey::Literal("y".into())));
        assert_eq!(key(&codex_q, "No"), Some(MenuKey::Escape));
        assert_eq!(key(&claude_q, "2"), None, "a number is typed as it is");
        assert_eq!(key("Proceed? [1. Nothing | 2. Yesterday]", "no"), None);
        // A review step (the real Claude's, after two questions): yes submits, no cancels.
        let review =
            terminal_question(&screen_fixture("claude-questions-review.txt")).expect("the review");
        assert!(
            review.ends_with("[1. Submit answers | 2. Cancel]"),
            "{review}"
        );
        assert_eq!(key(&review, "yes"), Some(MenuKey::Literal("1".into())));
        assert_eq!(key(&review, "no"), Some(MenuKey::Literal("2".into())));
    }

    /// Screens captured from the real `claude` 2.1.328 under tmux (tests/fixtures/screens).
    #[test]
    fn real_claude_dialogs_are_questions() {
        let screen = screen_fixture;
        let trust = terminal_question(&screen("claude-trust.txt")).expect("trust dialog");
        assert!(trust.contains("one you trust?"), "{trust}");
        assert!(
            trust.contains("No, exit | Yes, I trust this folder"),
            "{trust}"
        );
        let key = terminal_question(&screen("claude-apikey.txt")).expect("api key dialog");
        assert_eq!(
            key,
            "Do you want to use this API key? [Yes | No (recommended)]"
        );
        let bash = terminal_question(&screen("claude-bash-permission.txt")).expect("permission");
        assert!(
            bash.starts_with("Do you want to proceed? [1. Yes | 2. Yes"),
            "{bash}"
        );
        assert!(bash.ends_with("4. No]"), "{bash}");
        let ask = terminal_question(&screen("claude-ask.txt")).expect("AskUserQuestion");
        assert_eq!(
            ask,
            "Which color? [1. Red | 2. Blue | 3. Type something. | 4. Chat about this]"
        );
        // The finished turn under it (prompt, status line) is not a question.
        assert_eq!(terminal_question(&screen("claude-idle.txt")), None);
        // A modal menu without a question mark is asked by its title.
        assert_eq!(
            terminal_question(&screen("claude-bypass-disclaimer.txt")).as_deref(),
            Some("WARNING: Claude Code running in Bypass Permissions mode [No, exit | Yes, I accept]")
        );
    }

    #[test]
    fn a_side_panel_is_cut_off_and_a_box_is_not() {
        let left = format!("{:<40}", "Do you want to proceed?");
        let mut panel: Vec<String> = (0..9).map(|i| format!("{:<40}│ diff {i}", "")).collect();
        panel.push(format!("{left}│ more"));
        let text = panel.join("\n");
        let cut = screen_lines(&text);
        assert_eq!(cut.len(), 10);
        assert_eq!(cut[9].trim_end(), "Do you want to proceed?");
        assert!(cut.iter().all(|l| !l.contains('│')));
        let boxed: Vec<String> = (0..10).map(|i| format!("│ line {i:<30}│")).collect();
        let text = boxed.join("\n");
        assert_eq!(screen_lines(&text), text.lines().collect::<Vec<_>>());
    }

    #[test]
    fn secrets_on_screen_are_masked() {
        assert_eq!(
            mask_secrets("ANTHROPIC_API_KEY: sk-ant-...0123456789abcdefghij ok"),
            "ANTHROPIC_API_KEY: [secret] ok"
        );
        assert_eq!(mask_secrets("git commit -m wip"), "git commit -m wip");
        // A path is judged by its parts: a long one is no secret, a key in it is.
        let path = "approve Write: /tmp/.tmpZdmhIb/home/worktrees/demo/demo-1/notes.txt";
        assert_eq!(mask_secrets(path), path);
        assert_eq!(
            mask_secrets("cat /srv/keys/sk-ant-0123456789abcdef"),
            "cat [secret]"
        );
        assert_eq!(mask_secrets("/k/a1b2c3d4e5f6a1b2c3d4e5f6a1b2"), "[secret]");
        // A relative path, and a file named by a timestamp and a slug (OpenCode's plans, a
        // migration): no secret. A key as a file's stem, or with a slash in it, still is.
        for path in [
            "Plan at .opencode/plans/1764870000000-brave-falcon.md is complete.",
            "Edit src/migrations/20261204120000_create_users_table.sql",
            "approve Write: /w/notes/1764870000000-brave-falcon.md",
        ] {
            assert_eq!(mask_secrets(path), path);
        }
        assert_eq!(
            mask_secrets("cat keys/a1b2c3d4e5f6a1b2c3d4e5f6a1b2.pem"),
            "cat [secret]"
        );
        assert_eq!(mask_secrets("cat .keys/sk-ant-0123.pem"), "cat [secret]");
        assert_eq!(
            mask_secrets("key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY2"),
            "key [secret]"
        );
        // So is a URL, to its query's values.
        let url = "error sending request for url (http://127.0.0.1:59691/agent/v1/sessions/demo-1/report):";
        assert_eq!(mask_secrets(url), url);
        assert_eq!(
            mask_secrets("GET https://h.example/x?token=ghp_0123456789abcdef"),
            "GET [secret]"
        );
    }

    #[test]
    fn an_answered_question_or_prose_question_is_not_waiting() {
        // The question scrolled up: the agent printed more after the answer.
        assert!(!terminal_waiting(
            "Do you want to proceed? (y/n)\n> y\ngot: y\nworking\n> "
        ));
        // A finished turn whose prose ends with a question (agent-orchestrator #9).
        assert!(!terminal_waiting(
            "I fixed the bug. Should I also update the docs?\n\n> \n  ? for shortcuts"
        ));
        // A numbered list in prose, with no question above it.
        assert!(!terminal_waiting("Steps:\n1. build\n2. test"));
        // The prompt with the answer typed after it, left on screen while the agent works on
        // without printing (aider waiting for the model after "y").
        assert!(!terminal_waiting(
            "README.md\nAdd file to the chat? (Y)es/(N)o/(D)on't ask again [Yes]: y"
        ));
        assert!(!terminal_waiting("Do you want to proceed? (y/n) yes"));
        // Asked again: a fresh prompt under the answered one is a question.
        assert!(terminal_waiting(
            "Add file to the chat? (Y)es/(N)o/(D)on't ask again [Yes]: y\n\
             src/lib.rs\nAdd file to the chat? (Y)es/(N)o/(D)on't ask again [Yes]: "
        ));
    }

    #[test]
    fn terminal_fallback_uses_prompt_and_output_age() {
        let idle = terminal_activity(&probe("done\n> ", Some(600))).expect("signal");
        assert_eq!(idle.activity, Activity::Idle);
        assert_eq!(idle.source, ActivitySource::Terminal);
        let active = terminal_activity(&probe("compiling foo", Some(3))).expect("signal");
        assert_eq!(active.activity, Activity::Active);
        assert_eq!(terminal_activity(&probe("compiling foo", Some(600))), None);
    }

    #[test]
    fn freshness_rules() {
        let now = parse_ts("2025-10-01T12:00:00Z").expect("ts");
        let ago = |s| now - Duration::seconds(s);
        let a = |r: Reading| r.signal(now).activity;
        assert_eq!(a(Reading::Working(ago(120))), Activity::Active);
        assert_eq!(a(Reading::Working(ago(301))), Activity::Idle);
        assert_eq!(a(Reading::Replying(ago(10))), Activity::Active);
        assert_eq!(a(Reading::Replying(ago(31))), Activity::Idle);
        assert_eq!(a(Reading::Finished(ago(1))), Activity::Idle);
        assert_eq!(a(Reading::Failed(ago(1))), Activity::Idle);
        // A pending question does not go stale: it is true until something else is logged.
        assert_eq!(a(Reading::Waiting(ago(3600))), Activity::WaitingInput);
        assert_eq!(Reading::Finished(ago(90)).signal(now).at, ago(90));
    }

    #[test]
    fn the_screen_overrides_active_but_not_a_finished_turn() {
        let p = probe("Do you want to proceed?\n❯ 1. Yes\n  2. No", Some(1));
        let active = Reading::Working(p.now).signal(p.now);
        assert_eq!(
            combine(Some(active), &p).map(|s| s.activity),
            Some(Activity::WaitingInput)
        );
        let idle = Reading::Finished(p.now).signal(p.now);
        assert_eq!(
            combine(Some(idle), &p).map(|s| s.activity),
            Some(Activity::Idle)
        );
    }

    #[tokio::test]
    async fn tail_drops_the_partial_first_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("x.jsonl");
        std::fs::write(&f, "aaaaaaaaaa\nbbbb\ncccc\n").expect("write");
        let tail = |n| {
            let f = f.clone();
            async move { read_tail(&f, n).await.expect("read").expect("some").0 }
        };
        assert_eq!(tail(12).await, "bbbb\ncccc\n"); // starts inside "aaa…"
        assert_eq!(tail(10).await, "bbbb\ncccc\n"); // starts exactly at "bbbb"
        assert_eq!(tail(9).await, "cccc\n"); // starts inside "bbbb"
        assert_eq!(tail(100).await, "aaaaaaaaaa\nbbbb\ncccc\n");
        assert!(read_tail(&dir.path().join("none"), 10)
            .await
            .expect("ok")
            .is_none());
        std::fs::write(dir.path().join("agent-1.jsonl"), "{}").expect("write");
        let newest = newest_jsonl(dir.path(), "agent-").expect("ok");
        assert_eq!(newest, Some(f));
    }

    #[test]
    fn an_answered_question_on_unchanged_output_is_not_asked_again() {
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("ts")
                .with_timezone(&Utc)
        };
        let answered = Some(("Proceed? (y/n)", t("2026-12-02T10:00:05Z")));
        // Nothing written since the answer: the log's tail still ends on it.
        assert!(answered_still_shown(
            answered,
            Some("Proceed? (y/n)"),
            Some(t("2026-12-02T10:00:01Z"))
        ));
        // Output after the answer: whatever it shows is current.
        assert!(!answered_still_shown(
            answered,
            Some("Proceed? (y/n)"),
            Some(t("2026-12-02T10:00:06Z"))
        ));
        // Another question, or nothing answered yet, is a wait.
        assert!(!answered_still_shown(
            answered,
            Some("Overwrite? (y/n)"),
            Some(t("2026-12-02T10:00:01Z"))
        ));
        assert!(!answered_still_shown(
            None,
            Some("Proceed? (y/n)"),
            Some(t("2026-12-02T10:00:01Z"))
        ));
        assert!(!answered_still_shown(
            answered,
            Some("Proceed? (y/n)"),
            None
        ));
        // The answered question as its hook worded it, on a screen that words it cut short.
        let full = Some((
            r#"approve mcp__probe__echo: {"text":"hi"}"#,
            t("2026-12-02T10:00:05Z"),
        ));
        assert!(answered_still_shown(
            full,
            Some("approve mcp__probe__…"),
            Some(t("2026-12-02T10:00:01Z"))
        ));
    }

    #[test]
    fn a_model_api_failure_never_quotes_the_key_it_refused() {
        let f = ApiFailure {
            logged_at: Utc::now(),
            status: Some(401),
            message: "Incorrect API key provided: sk-proj-0123456789abcdefghijklmnop.".into(),
            attempt: None,
            max_retries: None,
        };
        assert!(!f.said().contains("0123456789abcdef"), "{}", f.said());
        assert!(f.said().starts_with("Incorrect API key provided:"));
        assert!(
            !f.question().contains("0123456789abcdef"),
            "{}",
            f.question()
        );
    }
}
