//! How a human's answer becomes keys on the question the agent shows: a numbered menu's key,
//! the moves of an unnumbered menu's cursor, a refusal that carries an instruction, the
//! free-text option that takes the human's own words, and whether the agent is still busy.

use super::{above_footers, cursor_menu, is_option, CURSOR_MARKS};

/// The options a question lists as [`terminal_question`] words it (`Proceed? [1. Yes | 2. No,
/// and tell … (esc)]`), in order: each one's number (`None` for an unnumbered menu's) and label.
fn listed_options(question: &str) -> Option<Vec<(Option<&str>, &str)>> {
    let (_, listed) = question.trim_end().strip_suffix(']')?.rsplit_once(" [")?;
    Some(
        listed
            .split(" | ")
            .map(|o| match o.split_once(". ") {
                Some((n, label)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
                    (Some(n), label)
                }
                _ => (None, o),
            })
            .collect(),
    )
}

/// What may stand between a refusal's `no` and its instruction (`no, …`, `no - …`).
const REFUSAL_SEPARATORS: &str = ",.:;!-—–";

/// Whether an answer is a bare choice: a number, or y/n/yes/no. Typed as it is onto a menu
/// whose options do not name it (a menu with keys of its own); other words never are.
pub fn is_choice(text: &str) -> bool {
    let t = text.trim();
    (!t.is_empty() && t.len() <= 2 && t.chars().all(|c| c.is_ascii_digit()))
        || ["y", "n", "yes", "no"]
            .iter()
            .any(|w| t.eq_ignore_ascii_case(w))
}

/// The instruction in a refusal that says what to do instead (`no, run cargo check instead`),
/// when the menu `question` (as [`terminal_question`] or an agent's reader words it) has the
/// option for it: a bare No (Claude Code 2.1's) or one that has the agent told what to do
/// (Codex's "No, and tell Codex what to do differently (esc)"), which leave the agent waiting
/// for the instruction, or a Reject (OpenCode's), which ends its turn: the instruction is then
/// its next prompt. Another No (`No, exit`) would lose it.
pub fn refusal_with_instruction<'a>(question: &str, choice: &'a str) -> Option<&'a str> {
    let separator = |c: char| c.is_whitespace() || REFUSAL_SEPARATORS.contains(c);
    let t = choice.trim();
    let head = t.get(..2)?;
    let rest = &t[2..];
    if !head.eq_ignore_ascii_case("no") || !rest.starts_with(separator) {
        return None;
    }
    let instruction = rest.trim_start_matches(separator);
    let asks_instead = listed_options(question)?.into_iter().any(|(_, label)| {
        let label = normalized(key_hint(label).map_or(label, |(rest, _)| rest));
        label == "no"
            || label == "reject"
            || (starts_with_word(&label, "no") && holds_phrase(&label, "tell"))
    });
    (asks_instead && !instruction.is_empty()).then_some(instruction)
}

/// How many rows at the bottom of a screen hold an agent's "busy" line (Claude Code's
/// spinner line sits above its input box and status rows).
const BUSY_ROWS: usize = 10;

/// Whether the bottom of the screen says the agent is busy with a turn: Claude Code's and
/// Codex's "esc to interrupt", OpenCode's "esc interrupt". A prompt typed while a turn winds
/// down can be lost (OpenCode stores it, but the ending loop never runs it).
pub fn shows_busy(screen: &str) -> bool {
    let rows: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    rows[rows.len().saturating_sub(BUSY_ROWS)..]
        .iter()
        .any(|r| {
            let r = r.to_lowercase();
            r.contains("esc to interrupt") || r.contains("esc interrupt")
        })
}

/// The number of the option of the numbered menu `question` that takes words of the human's
/// own (Claude's `Type something.`, OpenCode's `Type your own answer`, an `Other`), if it has
/// one.
pub fn free_text_option(question: &str) -> Option<String> {
    listed_options(question)?
        .into_iter()
        .find_map(|(number, label)| {
            let label = normalized(label);
            matches!(
                label.trim_end_matches('.'),
                "type something" | "other" | "type your own answer"
            )
            .then(|| number.map(str::to_string))?
        })
}

/// A key that picks a menu option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MenuKey {
    /// Typed as text: the option's number or the letter it names.
    Literal(String),
    /// The Escape key (an option marked `(esc)`).
    Escape,
    /// The Enter key (an option marked `(enter)`).
    Enter,
    /// A menu without keys of its own (a `❯` cursor on unnumbered options, a row of buttons):
    /// the cursor moves to the option, one arrow key at a time, then Enter picks it.
    Move,
}

/// How far the cursor of an unnumbered menu (or the selection of a row of buttons, see
/// [`super::button_row`]) must move to reach the option wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorMove {
    /// This many rows up.
    Up(usize),
    /// This many rows down (`Down(0)`: the cursor is on it; Enter alone picks it).
    Down(usize),
    /// This many buttons left.
    Left(usize),
    /// This many buttons right (`Right(0)`: it is selected).
    Right(usize),
}

impl CursorMove {
    /// The next key to send (tmux `send-keys` key names): one arrow while the cursor is not on
    /// the option, then `Enter`.
    pub fn next_key(self) -> &'static str {
        match self {
            CursorMove::Up(n) if n > 0 => "Up",
            CursorMove::Down(n) if n > 0 => "Down",
            CursorMove::Left(n) if n > 0 => "Left",
            CursorMove::Right(n) if n > 0 => "Right",
            _ => "Enter",
        }
    }

    /// Whether the cursor is on the option wanted (the next key is Enter).
    pub fn arrived(self) -> bool {
        self.next_key() == "Enter"
    }
}

/// The move that picks what `choice` means in the unnumbered `❯`-cursor menu at the bottom of
/// `screen` (as [`terminal_question`] reads it above an "Enter to confirm" footer): a
/// `y`/`yes`/`n`/`no` picks the first option starting with that word; other text picks the
/// option it names (the whole label, or the one label containing it); a number `n` picks the
/// n-th option. `None` when the screen shows no such menu (a numbered one takes
/// [`menu_key`]'s key) or no option matches.
pub fn cursor_menu_move(screen: &str, choice: &str) -> Option<CursorMove> {
    let (lines, confirm_footer) = above_footers(screen);
    if !confirm_footer || lines.last().is_some_and(|l| is_option(l)) {
        return None;
    }
    let menu = cursor_menu(&lines)?;
    // Top to bottom: (has the cursor, label).
    let options: Vec<(bool, String)> = menu
        .iter()
        .rev()
        .map(|l| {
            let t = l.trim_start();
            let label = t.trim_start_matches(CURSOR_MARKS).trim();
            (t.starts_with(CURSOR_MARKS), label.to_string())
        })
        .collect();
    let cursor = options.iter().position(|(c, _)| *c)?;
    let choice = choice.trim();
    let lower = choice.to_lowercase();
    let word = match lower.as_str() {
        "y" | "yes" => Some("yes"),
        "n" | "no" => Some("no"),
        _ => None,
    };
    let target = match (word, choice.parse::<usize>()) {
        (Some(word), _) => options
            .iter()
            .position(|(_, l)| starts_with_word(l, word))?,
        (None, Ok(n)) if (1..=options.len()).contains(&n) => n - 1,
        _ => match options.iter().position(|(_, l)| l.to_lowercase() == lower) {
            Some(i) => i,
            None if lower.is_empty() => return None,
            None => {
                let mut hits = options
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, l))| l.to_lowercase().contains(&lower));
                let (i, _) = hits.next()?;
                if hits.next().is_some() {
                    return None;
                }
                i
            }
        },
    };
    Some(if target < cursor {
        CursorMove::Up(cursor - target)
    } else {
        CursorMove::Down(target - cursor)
    })
}

/// Whether `label` starts with `word` as a whole word (`Yes, proceed` with `yes`, not
/// `Yesterday`), ignoring case.
fn starts_with_word(label: &str, word: &str) -> bool {
    label
        .get(..word.len())
        .is_some_and(|l| l.eq_ignore_ascii_case(word))
        && !label[word.len()..].starts_with(|c: char| c.is_alphanumeric())
}

/// The key that picks what an answer means in the numbered menu `question` (as
/// [`terminal_question`] words it, `Proceed? [1. Yes | 2. No, and tell … (esc)]`): a
/// `y`/`yes`/`n`/`no` picks the first option starting with that word; other text picks the
/// option it names: the one whose label is the answer (ignoring case, and the key hint
/// `(a)`), else the only one whose label holds the answer as whole words (`don't ask again`,
/// `always`). The option is picked by the key it names (`(y)`, `(esc)`, `(enter)`) or else by
/// its number. An unnumbered option counts only with an Enter or Esc key hint (OpenCode's
/// `Submit (enter)`). A yes or no that no option starts with picks a review's Submit/Confirm or
/// Cancel/Dismiss (or the option marked Enter or Esc).
/// `None` for a number, an ambiguous answer or one no option names: typed as it is.
pub fn menu_key(question: &str, choice: &str) -> Option<MenuKey> {
    let hint = |label: &str| key_hint(label).map(|(_, k)| k.to_ascii_lowercase());
    // (number, label) of each option a key picks.
    let options: Vec<(Option<&str>, &str)> = listed_options(question)?
        .into_iter()
        .filter(|(n, label)| n.is_some() || matches!(hint(label).as_deref(), Some("enter" | "esc")))
        .collect();
    let answer = normalized(choice);
    let word = match answer.as_str() {
        "y" | "yes" => Some("yes"),
        "n" | "no" => Some("no"),
        _ => None,
    };
    let (number, label) = match word {
        Some(word) => *options
            .iter()
            .find(|(_, l)| starts_with_word(l, word))
            .or_else(|| {
                // A review step's options (Claude's "Submit answers" / "Cancel", OpenCode's
                // "Submit (enter)" / "Dismiss (esc)").
                let (key, words) = match word {
                    "yes" => ("enter", ["submit", "confirm"]),
                    _ => ("esc", ["cancel", "dismiss"]),
                };
                options.iter().find(|(_, l)| {
                    hint(l).as_deref() == Some(key) || words.iter().any(|w| starts_with_word(l, w))
                })
            })?,
        None if answer.is_empty() || answer.chars().all(|c| c.is_ascii_digit()) => return None,
        None => {
            let bare = |l: &str| normalized(key_hint(l).map_or(l, |(rest, _)| rest));
            match options
                .iter()
                .find(|(_, l)| normalized(l) == answer || bare(l) == answer)
            {
                Some(o) => *o,
                None => {
                    let mut hits = options
                        .iter()
                        .filter(|(_, l)| holds_phrase(&normalized(l), &answer));
                    let only = *hits.next()?;
                    if hits.next().is_some() {
                        return None;
                    }
                    only
                }
            }
        }
    };
    Some(match key_hint(label).map(|(_, k)| k) {
        Some(k) if k.eq_ignore_ascii_case("esc") => MenuKey::Escape,
        Some(k) if k.eq_ignore_ascii_case("enter") => MenuKey::Enter,
        Some(k) if k.chars().count() == 1 => MenuKey::Literal(k.to_string()),
        _ => MenuKey::Literal(number?.to_string()),
    })
}

/// An option's label without its key hint, and the hint: `Yes, proceed (y)` → (`Yes,
/// proceed`, `y`).
fn key_hint(label: &str) -> Option<(&str, &str)> {
    label
        .trim_end()
        .strip_suffix(')')
        .and_then(|l| l.rsplit_once('('))
        .map(|(rest, k)| (rest.trim_end(), k))
}

/// Text compared as a human would type it: trimmed, lower case, a typographic apostrophe
/// (`don’t`, as Claude draws it) as a plain one, runs of spaces as one.
fn normalized(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .replace(['’', '‘'], "'")
}

/// Whether `phrase` occurs in `text` as whole words (`ask again` in `don't ask again for`,
/// not `ask` in `asking`).
fn holds_phrase(text: &str, phrase: &str) -> bool {
    !phrase.is_empty()
        && text.match_indices(phrase).any(|(i, _)| {
            let before = text[..i].chars().next_back();
            let after = text[i + phrase.len()..].chars().next();
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::activity::{screen_fixture, terminal_question, terminal_waiting};

    #[test]
    fn a_menu_that_takes_the_humans_own_words_names_its_option() {
        let ask = terminal_question(&screen_fixture("claude-ask.txt")).expect("ask");
        assert_eq!(free_text_option(&ask).as_deref(), Some("3"));
        let bash = terminal_question(&screen_fixture("claude-bash-permission.txt")).expect("q");
        assert_eq!(free_text_option(&bash), None);
        assert_eq!(
            free_text_option("Pick? [1. Red | 2. Other]").as_deref(),
            Some("2")
        );
    }

    #[test]
    fn a_refusal_carries_an_instruction_only_to_a_menu_that_asks_for_one() {
        let q = |name: &str| terminal_question(&screen_fixture(name)).expect(name);
        let bash = q("claude-bash-permission.txt");
        let codex = q("codex-run-command.txt");
        // OpenCode's permission buttons, as its plugin words them: Reject ends the turn, and
        // the instruction is its next prompt.
        let opencode = crate::plugins::agents::opencode::permission_question(&screen_fixture(
            "opencode-bash-permission.txt",
        ))
        .expect("opencode");
        for (answer, want) in [
            (
                "no, run cargo check instead",
                Some("run cargo check instead"),
            ),
            ("No - just print it", Some("just print it")),
            ("NO: stop", Some("stop")),
            ("no leave it", Some("leave it")),
            ("no", None),
            ("no, ", None),
            ("nope, later", None),
            ("not now", None),
            ("yes, and run it twice", None),
        ] {
            assert_eq!(refusal_with_instruction(&bash, answer), want, "{answer:?}");
            assert_eq!(refusal_with_instruction(&codex, answer), want, "{answer:?}");
            assert_eq!(
                refusal_with_instruction(&opencode, answer),
                want,
                "{answer:?}"
            );
        }
        // Claude's folder-trust "No, exit" ends the agent: nothing would read an instruction.
        let trust = q("claude-trust.txt");
        assert_eq!(
            refusal_with_instruction(&trust, "no, use another folder"),
            None
        );
    }

    /// The real agents' busy lines (Claude Code's and Codex's above their input, OpenCode's
    /// under it); a transcript that merely mentions the words far up is not busy.
    #[test]
    fn a_busy_agent_is_read_from_the_bottom_of_its_screen() {
        for busy in [
            "● Bash(ls)\n\n✻ Thinking… (esc to interrupt)\n╭──╮\n│ > │\n╰──╯\n  ? for shortcuts",
            "• Working (3s • esc to interrupt)\n\n› Ask Codex\n\n  100% context left",
            "  ┃  Build · Fake model Fake\n   ⬝⬝⬝⬝■■■■  esc interrupt\n ╹▀▀▀▀\n  ctrl+p commands",
        ] {
            assert!(shows_busy(busy), "{busy}");
        }
        let idle = screen_fixture("opencode-bash-permission.txt");
        assert!(!shows_busy(&idle));
        let mentioned = format!("Press esc to interrupt a turn.{}\n> ", "\nline".repeat(12));
        assert!(!shows_busy(&mentioned));
    }

    /// A numbered menu answered in its own words: the option named, by its key or number.
    #[test]
    fn an_answer_naming_a_numbered_option_picks_it() {
        let lit = |k: &str| Some(MenuKey::Literal(k.into()));
        let bash = terminal_question(&screen_fixture("claude-bash-permission.txt")).expect("q");
        let ask = terminal_question(&screen_fixture("claude-ask.txt")).expect("q");
        let codex = "Would you like to run the following command? [1. Yes, proceed (y) | \
                     2. Yes, and don't ask again for this command (a) | \
                     3. No, and tell Codex what to do differently (esc)]";
        let trust = "Do you trust the contents of this directory? [1. Yes, continue | \
                     2. No, quit]";
        let trust_new = "Do you trust the files in this folder? [1. Trust and continue | \
                         2. Quit without trusting]";
        let cases: &[(&str, &str, Option<MenuKey>)] = &[
            // Claude draws `don’t`; a human types `don't`.
            (&bash, "don't ask again", lit("2")),
            (&bash, "  Don’t ask  again ", lit("2")),
            (&bash, "auto mode", lit("3")),
            (&bash, "switch to auto mode", lit("3")),
            (&bash, "No", lit("4")),
            (&ask, "blue", lit("2")),
            (&ask, "Chat about this", lit("4")),
            (codex, "don't ask again", lit("a")),
            (codex, "Yes, proceed", lit("y")),
            (codex, "yes, proceed (y)", lit("y")),
            (
                codex,
                "tell Codex what to do differently",
                Some(MenuKey::Escape),
            ),
            (trust, "continue", lit("1")),
            (trust_new, "Trust and continue", lit("1")),
            (trust_new, "trust and continue", lit("1")),
            (trust_new, "quit", lit("2")),
            // Ambiguous, unnamed, a part of a word, or a number: typed as it is.
            (&bash, "yes, and", None),
            (&bash, "ask", lit("2")),
            (&bash, "as", None),
            (codex, "and", None),
            (&ask, "green", None),
            (&ask, "3", None),
            (trust_new, "trust", lit("1")),
            (trust_new, "trusting and", None),
            ("Proceed? [1. Always | 2. Always here]", "always", lit("1")),
            ("Proceed? [1. Always now | 2. Always here]", "always", None),
            ("Proceed? (y/n)", "always", None),
        ];
        for (q, answer, want) in cases {
            assert_eq!(&menu_key(q, answer), want, "{answer:?} to {q}");
        }
    }

    /// Claude's trust, API-key and bypass dialogs (real screens) have no keys of their own: an
    /// answer moves the `❯` cursor to the option it names, then Enter picks it.
    #[test]
    fn an_answer_to_an_unnumbered_menu_moves_its_cursor() {
        let screen = screen_fixture;
        let trust = screen("claude-trust.txt");
        let mv = |s: &str, c: &str| cursor_menu_move(s, c);
        assert_eq!(mv(&trust, "yes"), Some(CursorMove::Down(1)));
        assert_eq!(mv(&trust, "Y"), Some(CursorMove::Down(1)));
        assert_eq!(mv(&trust, "no"), Some(CursorMove::Down(0)));
        assert_eq!(
            mv(&trust, "Yes, I trust this folder"),
            Some(CursorMove::Down(1))
        );
        assert_eq!(mv(&trust, "trust"), Some(CursorMove::Down(1)));
        assert_eq!(mv(&trust, "2"), Some(CursorMove::Down(1)));
        assert_eq!(mv(&trust, "3"), None, "no third option");
        assert_eq!(mv(&trust, "maybe"), None);
        let key = screen("claude-apikey.txt");
        assert_eq!(mv(&key, "yes"), Some(CursorMove::Up(1)));
        assert_eq!(mv(&key, "No"), Some(CursorMove::Down(0)));
        let bypass = screen("claude-bypass-disclaimer.txt");
        assert_eq!(mv(&bypass, "yes"), Some(CursorMove::Down(1)));
        // The keys: one arrow per row, Enter once there.
        assert_eq!(CursorMove::Up(2).next_key(), "Up");
        assert_eq!(CursorMove::Down(1).next_key(), "Down");
        assert!(CursorMove::Down(0).arrived() && CursorMove::Up(0).arrived());
        // Another marker, another position.
        let gt = "Apply these changes?\n  Apply\n> Skip\n  Cancel\n\nEnter to confirm";
        assert!(terminal_waiting(gt));
        assert_eq!(mv(gt, "apply"), Some(CursorMove::Up(1)));
        assert_eq!(mv(gt, "Cancel"), Some(CursorMove::Down(1)));
        // A numbered menu is answered by its keys, not by moving.
        assert_eq!(mv(&screen("claude-bash-permission.txt"), "yes"), None);
        assert_eq!(mv(&screen("claude-idle.txt"), "yes"), None);
        // Ambiguous text picks nothing.
        assert_eq!(mv(gt, "a"), None);
    }
}
