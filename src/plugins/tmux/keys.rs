//! Typing into the pane: waiting on its screen, pasting a message and confirming that it was
//! submitted, and the keys of an answer (a menu's cursor moved to an option, an answer in
//! words); with how long each waits.

use std::time::Duration;

use super::screen::{submitted, Draft, Screen, Wait};
use super::{escape_arg, TmuxHandle, TmuxRuntime};
use crate::plugins::activity::CursorMove;
use crate::plugins::{OtherQuestion, PluginResult, Runtime, RuntimeHandle, ScreenQuestion};

/// How long a pasted message may take to appear on screen. An upper bound polled against
/// (a loaded machine redraws a long paste slowly; 1.5 s lost a 5,000-character paste under
/// a parallel test run); a quick agent is confirmed as soon as its screen shows it.
pub(super) const DRAFT_WAIT: Wait = Wait {
    quiet: Duration::from_secs(5),
    cap: Duration::from_secs(30),
    settled: true,
};

/// How long an answer's question may stay on screen before the answer is typed again, and
/// how many times it is typed.
pub(super) const ANSWER_WAIT: Wait = Wait {
    quiet: Duration::from_secs(2),
    cap: Duration::from_secs(5),
    settled: false,
};

pub(super) const ANSWER_TRIES: usize = 3;

/// How long a question is on screen before its answer is typed.
pub(super) const KEY_READY: Duration = Duration::from_millis(300);

/// The most arrow keys one answer to an unnumbered menu sends (a menu longer than a screen is
/// not read as one).
const MAX_CURSOR_MOVES: usize = 64;

/// How long to wait for the draft to be consumed after each Enter (first, then retries).
const SUBMIT_WAITS: [Wait; 3] = [
    Wait {
        quiet: Duration::from_secs(3),
        cap: Duration::from_secs(20),
        settled: false,
    },
    Wait {
        quiet: Duration::from_secs(2),
        cap: Duration::from_secs(10),
        settled: false,
    },
    Wait {
        quiet: Duration::from_secs(2),
        cap: Duration::from_secs(10),
        settled: false,
    },
];

/// Screen polling interval while confirming delivery.
pub(super) const POLL: Duration = Duration::from_millis(50);

impl TmuxRuntime {
    /// The visible screen of the pane (one string per row) and the cursor row.
    /// Polls the screen until `found` gives a value, or `wait` runs out.
    pub(super) async fn wait_screen<T>(
        &self,
        pane: &str,
        wait: Wait,
        found: impl Fn(&Screen) -> Option<T>,
    ) -> PluginResult<Option<T>> {
        let start = tokio::time::Instant::now();
        let mut changed = start;
        let mut last: Option<Screen> = None;
        loop {
            let s = self.screen(pane).await?;
            let same = last.as_ref() == Some(&s);
            if same || !wait.settled {
                if let Some(v) = found(&s) {
                    return Ok(Some(v));
                }
            }
            let now = tokio::time::Instant::now();
            if !same {
                changed = now;
                last = Some(s);
            }
            if now - changed >= wait.quiet || now - start >= wait.cap {
                return Ok(None);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub(super) async fn screen(&self, pane: &str) -> PluginResult<Screen> {
        let out = self
            .tmux(&[
                "display-message",
                "-p",
                "-t",
                pane,
                "#{cursor_y}",
                ";",
                "capture-pane",
                "-p",
                "-t",
                pane,
            ])
            .await?;
        let mut lines = out.lines();
        let cursor = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        Ok(Screen {
            rows: lines.map(str::to_string).collect(),
            cursor,
        })
    }

    /// Presses Enter on a pasted `draft` and confirms the submission (see `send_message`).
    pub(super) async fn submit(
        &self,
        h: &TmuxHandle,
        draft: Option<Draft>,
        needle: &str,
    ) -> PluginResult<bool> {
        // A paste the screen never showed went somewhere Flotilla cannot see (a prompt it
        // does not know, that reads keys without echoing them, such as "Press Enter to
        // update"): an Enter would answer that prompt, which nobody read.
        let Some(d) = &draft else {
            tracing::warn!(session = %h.session, "pasted message never appeared on screen; not entered");
            return Ok(false);
        };
        for wait in SUBMIT_WAITS {
            self.tmux(&["send-keys", "-t", &h.pane, "Enter"]).await?;
            let done = self
                .wait_screen(&h.pane, wait, |s| submitted(d, s, needle).then_some(()))
                .await?;
            if done.is_some() {
                return Ok(true);
            }
        }
        tracing::warn!(session = %h.session, "message pasted but not confirmed as submitted");
        Ok(false)
    }

    /// Pastes `text` into the pane's input as one bracketed paste: through a private file
    /// locally, through stdin on a remote host.
    pub(super) async fn paste(&self, h: &TmuxHandle, text: &str) -> PluginResult<()> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let buffer = format!("flotilla-{id}");
        let paste = ["paste-buffer", "-p", "-d", "-b", &buffer, "-t", &h.pane];
        if self.remote.is_some() {
            let mut args = vec!["load-buffer", "-b", &buffer, "-", ";"];
            args.extend(paste);
            return self
                .tmux_input(&args, Some(text.as_bytes()))
                .await
                .map(drop);
        }
        let file = self.log_dir.join(format!("{}.msg-{id}", h.session));
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)?;
            f.write_all(text.as_bytes())?;
        }
        let file_arg = escape_arg(&file.to_string_lossy());
        let mut args = vec!["load-buffer", "-b", &buffer, &file_arg, ";"];
        args.extend(paste);
        let pasted = self.tmux(&args).await;
        if let Err(e) = tokio::fs::remove_file(&file).await {
            tracing::warn!(error = %e, "removing a message file failed");
        }
        pasted.map(drop)
    }

    /// Moves the cursor of the unnumbered menu on screen (a `❯` list, or a row of buttons, see
    /// [`super::button_row`]) to the option `choice` names, one arrow key at a time, each
    /// confirmed by the cursor moving on screen (keys sent at once could outrun a TUI that
    /// redraws between them). `true` when the cursor is on it (the caller then presses
    /// Enter); `false` when the menu went away or the cursor did not follow: the caller sees
    /// whether the question is still asked.
    pub(super) async fn move_cursor_to(&self, pane: &str, choice: &str) -> PluginResult<bool> {
        let text = self.screen(pane).await?.rows.join("\n");
        let buttons = crate::plugins::button_row::labels(&text).is_some();
        let first = if buttons {
            self.cursor_at(pane, choice, true).await?
        } else {
            crate::plugins::activity::cursor_menu_move(&text, choice)
        };
        let Some(mut at) = first else {
            return Ok(false);
        };
        for _ in 0..MAX_CURSOR_MOVES {
            if at.arrived() {
                return Ok(true);
            }
            self.tmux(&["send-keys", "-t", pane, at.next_key()]).await?;
            let before = at;
            let deadline = tokio::time::Instant::now() + ANSWER_WAIT.cap;
            at = loop {
                // A frame caught mid-redraw may lack the menu: wait for one that has it moved.
                match self.cursor_at(pane, choice, buttons).await? {
                    Some(next) if next != before => break next,
                    _ if tokio::time::Instant::now() >= deadline => return Ok(false),
                    _ => tokio::time::sleep(POLL).await,
                }
            };
        }
        Ok(false)
    }

    /// Where the menu's cursor is, as the move to `choice`: a row of buttons shows its
    /// selection only in colour, so it is read from a capture with them (`capture-pane -e`).
    async fn cursor_at(
        &self,
        pane: &str,
        choice: &str,
        buttons: bool,
    ) -> PluginResult<Option<CursorMove>> {
        Ok(if buttons {
            let styled = self.tmux(&["capture-pane", "-p", "-e", "-t", pane]).await?;
            crate::plugins::button_row::move_to(&styled, choice)
        } else {
            let text = self.screen(pane).await?.rows.join("\n");
            crate::plugins::activity::cursor_menu_move(&text, choice)
        })
    }

    /// An answer in words that name no option of the menu `asked` on screen: `no, <what to
    /// do instead>` presses a No that has the agent ask for an instruction (or a Reject that
    /// ends its turn), then sends the words as a message once the agent is no longer busy;
    /// other words go to the menu's free-text option (Claude's "Type something."), typed
    /// there and entered. Otherwise nothing is typed: `Ok(false)`.
    pub(super) async fn answer_in_words(
        &self,
        handle: &RuntimeHandle,
        pane: &str,
        (asked, read, other): (&str, ScreenQuestion, &OtherQuestion<'_>),
        words: &str,
    ) -> PluginResult<bool> {
        if let Some(instruction) = crate::plugins::activity::refusal_with_instruction(asked, words)
        {
            if !self.answer_to(handle, "no", read, other).await? {
                return Ok(false);
            }
            // OpenCode stores a prompt typed while its refused turn winds down, but never
            // runs it.
            let idle = |s: &Screen| {
                (!crate::plugins::activity::shows_busy(&s.rows.join("\n"))).then_some(())
            };
            if self.wait_screen(pane, DRAFT_WAIT, idle).await?.is_none() {
                tracing::warn!(
                    pane,
                    "the agent stayed busy after the refusal; instruction not sent"
                );
                return Ok(false);
            }
            return self.send_message(handle, instruction).await;
        }
        let Some(option) = crate::plugins::activity::free_text_option(asked) else {
            tracing::warn!(pane, "the answer names none of the options on screen");
            return Ok(false);
        };
        if !self.answer_to(handle, &option, read, other).await? {
            return Ok(false);
        }
        let question = |s: &Screen| read(&s.rows.join("\n"));
        let typing = question(&self.screen(pane).await?);
        self.tmux(&["send-keys", "-t", pane, "-l", words]).await?;
        self.tmux(&["send-keys", "-t", pane, "Enter"]).await?;
        let entered = self
            .wait_screen(pane, ANSWER_WAIT, |s| (question(s) != typing).then_some(()))
            .await?;
        Ok(entered.is_some())
    }
}
