//! Codex's approval dialogs read from the screen, worded whole for the human who decides.
//!
//! Codex 0.169 has no hook that reports an approval (and logs none), so the screen is all
//! there is. What it draws (fixtures `tests/fixtures/screens/codex-*.txt`), at the bottom:
//!
//! ```text
//!   Would you like to run the following command?        (or "… make the following edits?")
//!   Environment: local
//!   Reason: Write out.txt?                              (the model's justification, if any)
//!   $ printf made > out.txt                             (a command's lines; a long one cut
//!   [… 78 lines] ^a view all                             with this marker)
//! › 1. Yes, proceed (y)
//!   2. Yes, and don't ask again for commands that start with `printf made > out.txt` (p)
//!   3. No, and tell Codex what to do differently (esc)
//!   Press enter to confirm or esc to cancel
//! ```
//!
//! The generic reading ([`crate::plugins::activity::terminal_question`]) takes the nearest
//! line ending in `?` above the options as the question: the model's reason, or a line of the
//! command itself, and never the command. Here the question is the title, every line under it
//! and the options: `Would you like to run the following command? Environment: local · Reason:
//! Write out.txt? · $ printf made > out.txt [1. Yes, proceed (y) | … | 3. No, … (esc)]`.

use crate::plugins::activity::{mask_secrets, screen_lines};

/// What ends Codex's approval dialogs.
const FOOTER: &str = "Press enter to confirm or esc to cancel";

/// The approval dialog at the bottom of `screen` as one line for a human, or `None` when the
/// screen's bottom is not one (fully drawn: title, options and footer).
pub fn screen_question(screen: &str) -> Option<String> {
    let lines: Vec<&str> = screen_lines(screen)
        .into_iter()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let (footer, rest) = lines.split_last()?;
    if *footer != FOOTER {
        return None;
    }
    let title = rest
        .iter()
        .rposition(|l| l.starts_with("Would you like to") && l.ends_with('?'))?;
    let dialog = &rest[title + 1..];
    let first_option = dialog.iter().position(|l| option(l).is_some())?;
    let options: Vec<&str> = dialog[first_option..]
        .iter()
        .map(|l| option(l))
        .collect::<Option<_>>()?;
    let body = body(&dialog[..first_option]);
    let text = if body.is_empty() {
        format!("{} [{}]", rest[title], options.join(" | "))
    } else {
        format!("{} {body} [{}]", rest[title], options.join(" | "))
    };
    Some(mask_secrets(&text))
}

/// The lines between the title and the options: fields (`Reason: …`) one part each, the
/// command's lines (from `$ `) one part, the cut marker without its key hint.
fn body(lines: &[&str]) -> String {
    let command = lines.iter().position(|l| l.starts_with("$ "));
    let (fields, command) = lines.split_at(command.unwrap_or(lines.len()));
    let command: Vec<&str> = command
        .iter()
        .map(|l| l.strip_suffix("^a view all").map_or(*l, str::trim_end))
        .collect();
    let mut parts: Vec<String> = fields.iter().map(|l| l.to_string()).collect();
    if !command.is_empty() {
        parts.push(command.join(" "));
    }
    parts.join(" · ")
}

/// An option line's text without the cursor mark (`1. Yes, proceed (y)`), if it is one.
fn option(line: &str) -> Option<&str> {
    let text = line.trim_start_matches(['›', '❯', '>']).trim_start();
    let (number, label) = text.split_once(". ")?;
    (!number.is_empty() && number.chars().all(|c| c.is_ascii_digit()) && !label.is_empty())
        .then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::activity::{menu_key, screen_fixture, terminal_question, MenuKey};

    #[test]
    fn a_command_approval_names_the_command_and_the_reason() {
        let q = screen_question(&screen_fixture("codex-run-command.txt")).expect("dialog");
        assert_eq!(
            q,
            "Would you like to run the following command? Environment: local · Reason: Write \
             out.txt? · $ printf made > out.txt [1. Yes, proceed (y) | 2. Yes, and don't ask \
             again for commands that start with `printf made > out.txt` (p) | 3. No, and tell \
             Codex what to do differently (esc)]"
        );
    }

    #[test]
    fn a_many_line_command_is_named_whole_and_a_cut_one_says_so() {
        let q = screen_question(&screen_fixture("codex-run-heredoc.txt")).expect("dialog");
        assert!(
            q.starts_with(
                "Would you like to run the following command? Environment: local · Reason: \
                 Write the notes file outside the read-only sandbox · $ cat > notes.txt <<EOF \
                 1 2 3 4 5 6 7 8 9 10 11 12 EOF ["
            ),
            "{q}"
        );
        let cut = screen_question(&screen_fixture("codex-run-cut.txt")).expect("dialog");
        assert!(
            cut.contains("line 36 line 37 [… 78 lines] [1. Yes, proceed (y) | 2. No,"),
            "{cut}"
        );
        // The generic reading took a line of the command for the question.
        let generic = terminal_question(&screen_fixture("codex-run-cut.txt")).expect("asked");
        assert!(generic.starts_with("line "), "{generic}");
    }

    #[test]
    fn an_edit_approval_names_the_file() {
        let q = screen_question(&screen_fixture("codex-edits.txt")).expect("dialog");
        assert!(
            q.starts_with(
                "Would you like to make the following edits? Description: Apply proposed file \
                 edits · Destination: /"
            ) && q.ends_with(
                "/demo-1/hello.txt [1. Yes, proceed (y) | 2. Yes, and don't ask again for these \
                 files (a) | 3. No, and tell Codex what to do differently (esc)]"
            ),
            "{q}"
        );
    }

    #[test]
    fn answers_pick_the_options_the_real_dialogs_name() {
        for name in [
            "codex-run-command.txt",
            "codex-run-heredoc.txt",
            "codex-run-cut.txt",
            "codex-edits.txt",
        ] {
            let asked = terminal_question(&screen_fixture(name)).expect(name);
            let key = |c: &str| menu_key(&asked, c);
            assert_eq!(key("y"), Some(MenuKey::Literal("y".into())), "{name}");
            assert_eq!(key("yes"), Some(MenuKey::Literal("y".into())), "{name}");
            assert_eq!(key("no"), Some(MenuKey::Escape), "{name}");
        }
        let asked = terminal_question(&screen_fixture("codex-edits.txt")).expect("asked");
        assert_eq!(
            menu_key(&asked, "don't ask again for these files"),
            Some(MenuKey::Literal("a".into()))
        );
    }

    #[test]
    fn other_screens_and_half_drawn_dialogs_are_not_read() {
        let full = screen_fixture("codex-run-command.txt");
        // Codex draws the footer last: until then the dialog is not read here.
        let half = full.replace(FOOTER, "");
        assert_eq!(screen_question(&half), None);
        assert_eq!(screen_question("› Ask Codex to do anything\n"), None);
        assert_eq!(
            screen_question(&screen_fixture("claude-bash-permission.txt")),
            None
        );
        // Options only, no title: not a Codex approval.
        assert_eq!(
            screen_question(&format!("› 1. Yes\n  2. No\n{FOOTER}\n")),
            None
        );
    }
}
