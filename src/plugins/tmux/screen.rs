//! Reading a pane's screen: one capture, the draft of a pasted message on it, whether it was
//! submitted, and the pane log's text without its terminal escapes.

use std::time::Duration;

/// Characters of the message's last line used to recognise the draft on screen.
pub(super) const NEEDLE_CHARS: usize = 24;

/// Marker TUIs show instead of a long paste (`[Pasted text #1 +40 lines]` in Claude Code,
/// `[Pasted Content 5000 chars]` in Codex).
pub(super) const PASTE_PLACEHOLDER: &str = "[Pasted";

/// The last `n` rows of a capture above the blank rows at its bottom. A row blank but for a
/// side panel drawn beside the main column ([`crate::plugins::activity::screen_lines`]: Claude Code's
/// diff panel runs down the whole screen) counts as blank: otherwise the panel's empty rows
/// under a dialog would push the dialog out of the rows the activity probe reads.
pub(super) fn last_rows(screen: &str, n: usize) -> String {
    let all: Vec<&str> = screen.lines().collect();
    let main = crate::plugins::activity::screen_lines(screen);
    let end = main
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .map_or(0, |i| i + 1);
    let all = &all[..end.min(all.len())];
    all[all.len().saturating_sub(n)..]
        .join("\n")
        .trim_end()
        .to_string()
}

/// One capture of the visible screen.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Screen {
    pub(super) rows: Vec<String>,
    pub(super) cursor: usize,
}

impl Screen {
    /// The screen's words: each row's letters and digits, blank rows dropped. What an agent
    /// blinks while it waits (Claude Code's `●` beside a pending tool call, spinner glyphs) is
    /// not a word, so it does not count as the screen moving; a tool's result or a new call in
    /// the transcript does, even one that differs from the last only by a number (`git commit
    /// -m round-14` after `round-13`: Claude words both dialogs "Do you want to proceed?").
    pub(super) fn words(&self) -> Vec<String> {
        self.rows
            .iter()
            .map(|r| {
                r.chars()
                    .filter(|c| c.is_alphanumeric())
                    .collect::<String>()
            })
            .filter(|r| !r.is_empty())
            .collect()
    }
}

/// A wait on the screen that gives up only once the screen has stopped changing for `quiet`
/// (an agent still drawing a long paste on a loaded machine is progress, not failure), and in
/// any case after `cap`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Wait {
    pub(super) quiet: Duration,
    pub(super) cap: Duration,
    /// Only look at a screen that equals the previous capture: while a paste is still being
    /// drawn, an earlier line that happens to end like the last one must not pass for the draft.
    pub(super) settled: bool,
}

/// Where the unsent message shows on screen.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Draft {
    pub(super) row: usize,
    pub(super) text: String,
    pub(super) cursor_on_row: bool,
}

/// Box-drawing borders TUIs draw around their input line.
pub(super) fn strip_borders(s: &str) -> &str {
    s.trim().trim_matches(['│', '┃', '|']).trim()
}

pub(super) fn shows_draft(row: &str, prev: Option<&str>, needle: &str) -> bool {
    if row.contains(PASTE_PLACEHOLDER) || shows_text(row, needle) {
        return true;
    }
    // The needle may straddle a line the TUI wrapped itself (at a space, which the wrap
    // drops): then this row holds its end.
    let row = strip_borders(row);
    !row.is_empty()
        && prev.is_some_and(|p| {
            !shows_text(p, needle) && shows_text(&format!("{}{row}", strip_borders(p)), needle)
        })
}

/// The lowest screen row showing the draft (within the 15 rows above the cursor or the
/// bottom), if any.
pub(super) fn find_draft(s: &Screen, needle: &str) -> Option<Draft> {
    let last = s.rows.len().checked_sub(1)?;
    let high = last.saturating_sub(15).min(s.cursor);
    (high..=last).rev().find_map(|i| {
        let prev = i
            .checked_sub(1)
            .and_then(|j| s.rows.get(j))
            .map(String::as_str);
        shows_draft(&s.rows[i], prev, needle).then(|| Draft {
            row: i,
            text: s.rows[i].clone(),
            cursor_on_row: s.cursor == i,
        })
    })
}

/// Whether the draft was consumed: the row that showed it now shows something else that is not
/// the draft (cleared in place, or scrolled away), or, for line editors that leave the
/// submitted line on screen, the cursor left that row for a line without the draft.
pub(super) fn submitted(d: &Draft, s: &Screen, needle: &str) -> bool {
    let row_now = s.rows.get(d.row).map(String::as_str).unwrap_or("");
    let prev = d
        .row
        .checked_sub(1)
        .and_then(|j| s.rows.get(j))
        .map(String::as_str);
    if row_now != d.text && !shows_draft(row_now, prev, needle) {
        return true;
    }
    let cursor_row = s.rows.get(s.cursor).map(String::as_str).unwrap_or("");
    d.cursor_on_row && s.cursor != d.row && !shows_draft(cursor_row, None, needle)
}

/// The end of the message's last non-empty line: what its draft looks like on screen.
pub(super) fn needle(text: &str) -> String {
    let last = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let n = last.chars().count();
    last.chars().skip(n.saturating_sub(NEEDLE_CHARS)).collect()
}

/// Whether `text` (screen rows joined, or a pane's log) shows `needle`, wherever the TUI
/// wrapped it: a wrap drops the space it wraps at, or draws padding, a cursor move and an
/// indent, so both are compared without whitespace.
pub(super) fn shows_text(text: &str, needle: &str) -> bool {
    let squash = |t: &str| t.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    let needle = squash(needle);
    !needle.is_empty() && squash(text).contains(&needle)
}

/// Removes terminal escape sequences (CSI, OSC, two-byte escapes, character-set designations),
/// carriage returns and other control characters but newlines and tabs; cursor movements
/// along the line (`CSI n C`, `CSI n G`) become the spaces they skip.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    // The cursor's column as far as the text tells (for `CSI n G`).
    let mut col = 0usize;
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\u{1b}' => match it.next() {
                Some('[') => {
                    let mut params = String::new();
                    for c in it.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            // Cursor movements are how TUIs (Ink) draw the spaces between
                            // words: forward `n`, or to column `n`.
                            let n: usize = params.parse().unwrap_or(1).clamp(1, 400);
                            let pad = match c {
                                'C' => n,
                                'G' if n - 1 > col => n - 1 - col,
                                'G' if !out.ends_with([' ', '\n']) && !out.is_empty() => 1,
                                _ => 0,
                            };
                            out.extend(std::iter::repeat_n(' ', pad));
                            col += pad;
                            break;
                        }
                        params.push(c);
                    }
                }
                Some(']') | Some('P') | Some('_') => {
                    while let Some(c) = it.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' && it.peek() == Some(&'\\') {
                            it.next();
                            break;
                        }
                    }
                }
                // Character-set designations (`ESC ( B`, as TUIs reset on exit): one more.
                Some('(' | ')' | '*' | '+') => {
                    it.next();
                }
                _ => {}
            },
            '\r' => col = 0,
            '\n' => {
                out.push('\n');
                col = 0;
            }
            // Other control characters (shift in/out, bell) are not text.
            c if c.is_control() && c != '\t' => {}
            c => {
                out.push(c);
                col += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real `claude` 2.1.328 with its diff panel beside an overwrite dialog: the rows the
    /// activity probe reads (the last 20) hold the dialog, not the panel's empty rows below it.
    #[test]
    fn the_last_rows_of_a_screen_with_a_side_panel_hold_its_dialog() {
        let screen = crate::plugins::activity::screen_fixture("claude-overwrite-file-panel.txt");
        let rows = last_rows(&screen, 20);
        assert!(rows.lines().count() <= 20);
        assert!(
            rows.contains("Do you want to overwrite README.md?"),
            "{rows}"
        );
        assert!(
            crate::plugins::activity::terminal_question(&rows).is_some(),
            "{rows}"
        );
        // Without a panel: the blank rows at the bottom go, the last n stay.
        assert_eq!(last_rows("a\nb\nc\n\n   \n", 2), "b\nc");
        assert_eq!(last_rows("", 5), "");
    }

    fn screen(rows: &[&str], cursor: usize) -> Screen {
        Screen {
            rows: rows.iter().map(|s| s.to_string()).collect(),
            cursor,
        }
    }

    #[test]
    fn the_needle_is_the_end_of_the_last_line() {
        assert_eq!(needle("first\nsecond line\n\n"), "second line");
        assert_eq!(needle(&"x".repeat(100)).len(), NEEDLE_CHARS);
        assert_eq!(needle("\n \n"), "");
    }

    /// Claude Code 2.1.328's transcript of a message whose last line it wrapped, as its pane
    /// log holds it: the needle straddles the wrap.
    #[test]
    fn a_message_wrapped_in_the_log_is_seen_there() {
        let text = "Line 060: paste\nword021 word022 word023 LONG-MESSAGE-END";
        let n = needle(text);
        let log = "\u{1b}[38;5;231mword021 word022 word023 \u{1b}[39m      \u{1b}[1B  \u{1b}[38;5;231mLONG-MESSAGE-END\u{1b}[39m   ";
        assert!(
            !strip_ansi(log).contains(&n),
            "the needle straddles the wrap"
        );
        assert!(shows_text(&strip_ansi(log), &n));
        assert!(!shows_text(&strip_ansi(log), "word023 OTHER-END"));
    }

    #[test]
    fn a_line_editor_submission_is_seen_through_the_cursor() {
        let n = "hello";
        let before = screen(&["> hello", "", ""], 0);
        let d = find_draft(&before, n).expect("draft");
        assert!(d.cursor_on_row);
        // Enter not taken yet.
        assert!(!submitted(&d, &before, n));
        // Taken: the echo prints below and the cursor moves to a fresh prompt.
        assert!(submitted(
            &d,
            &screen(&["> hello", "got: hello", "> "], 2),
            n
        ));
    }

    #[test]
    fn a_tui_submission_is_seen_through_the_cleared_input_row() {
        let n = "fix it";
        let draft = screen(
            &[
                "transcript",
                "╭──╮",
                "│ > [Pasted text #1 +40 lines] │",
                "╰──╯",
                "  ? for shortcuts",
            ],
            4,
        );
        let d = find_draft(&draft, n).expect("placeholder is the draft");
        assert_eq!(d.row, 2);
        assert!(!submitted(&d, &draft, n));
        let after = screen(
            &[
                "> please ... fix it",
                "╭──╮",
                "│ >                      │",
                "╰──╯",
                "  esc to interrupt",
            ],
            4,
        );
        assert!(submitted(&d, &after, n));
    }

    /// Claude Code 2.1.328's input box wraps a long line at a space, which it drops: a needle
    /// with that space straddles the rows.
    #[test]
    fn a_draft_wrapped_at_a_space_inside_its_needle_is_seen() {
        let text = "w24x000 w24x001 w24x022 w24x023 THE-END-MARK";
        let n = needle(text);
        assert!(n.contains(' '), "{n}");
        let before = screen(
            &[
                "──────",
                "❯ w24x000 w24x001 w24x022 w24x023",
                "  THE-END-MARK",
                "──────",
                "  ⏵⏵ accept edits on",
            ],
            2,
        );
        let d = find_draft(&before, &n).expect("the wrapped draft");
        assert_eq!(d.row, 2);
        let after = screen(&["──────", "❯", "", "──────", "  esc to interrupt"], 1);
        assert!(submitted(&d, &after, &n));
        assert!(!submitted(&d, &before, &n));
    }

    #[test]
    fn a_draft_visible_elsewhere_is_not_a_submission() {
        // agent-orchestrator #5: output changed (the draft appeared), nothing was submitted.
        let n = "deploy now";
        let d = find_draft(&screen(&["", "> deploy now"], 1), n).expect("draft");
        assert!(!submitted(
            &d,
            &screen(&["status: ok", "> deploy now"], 1),
            n
        ));
    }

    #[test]
    fn ansi_escapes_are_stripped_from_the_log() {
        assert_eq!(
            strip_ansi("\u{1b}[1;32mok\u{1b}[0m\r\n\u{1b}]0;title\u{7}done"),
            "ok\ndone"
        );
        // What a TUI writes as it exits: a character-set reset and shift-in.
        assert_eq!(strip_ansi("bye\n\u{1b}(B\u{f}\u{1b}[?25h"), "bye\n");
        // Spaces drawn as cursor movements (Ink) stay spaces.
        assert_eq!(
            strip_ansi("Unable\u{1b}[1Cto\u{1b}[Cconnect\u{1b}[2Cnow"),
            "Unable to connect  now"
        );
        // Claude Code 2.1.328 places each word at its column.
        assert_eq!(
            strip_ansi(" Claude\u{1b}[9GCode\u{1b}[14Gmight\r\nx\u{1b}[1Gy"),
            " Claude Code might\nx y"
        );
    }
}
