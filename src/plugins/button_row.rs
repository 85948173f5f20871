//! A menu drawn as one row of buttons, picked with ⇆ and confirmed with Enter: OpenCode's
//! prompts (`Allow once   Allow always   Reject   …   ⇆ select  enter confirm`, and the
//! `Confirm   Cancel` that "Allow always" asks next). Nothing in the text marks the selected
//! button: only its colours do, so moving to an option reads a capture with its colours
//! (`capture-pane -e`). Enter confirms whatever is selected, so an answer that names no
//! button is never typed there: a letter may move the selection (`h`/`l` do in OpenCode).
//!
//! Pure: screens in, labels and moves out.

use super::activity::CursorMove;

/// How many of the screen's last non-empty lines may hold the row (a status line or a side
/// panel's last entry can be drawn under it).
const ROW_LINES: usize = 4;

/// The labels of the button row at the bottom of `screen`, left to right; `None` when there
/// is none.
pub fn labels(screen: &str) -> Option<Vec<String>> {
    let lines: Vec<&str> = screen.lines().collect();
    find(&lines).map(|(_, labels)| labels)
}

/// The line nearest above the button row that says something (the prompt's last line of
/// text), with the row's labels: `None` when there is no row.
pub fn question(screen: &str) -> Option<String> {
    let lines: Vec<&str> = screen.lines().collect();
    let (at, labels) = find(&lines)?;
    let above = lines[..at]
        .iter()
        .rev()
        .map(|l| unframed(l))
        .find(|l| !l.is_empty() && !l.chars().all(|c| matches!(c, '▀' | '▄' | '─' | '━')))?;
    Some(format!("{above} [{}]", labels.join(" | ")))
}

/// Which button `choice` names among `labels`: a `y`/`yes` the first that approves (`Yes…`,
/// `Allow…`, `Confirm`), a `n`/`no` the first that refuses (`No…`, `Reject`, `Deny`,
/// `Cancel`), a number the n-th, other text the label it is (ignoring case) or the only label
/// holding it as whole words (`always`).
pub fn pick(labels: &[String], choice: &str) -> Option<usize> {
    const YES: [&str; 6] = ["yes", "allow", "confirm", "approve", "accept", "continue"];
    const NO: [&str; 5] = ["no", "reject", "deny", "cancel", "decline"];
    let answer = choice.split_whitespace().collect::<Vec<_>>().join(" ");
    let answer = answer.to_lowercase();
    let first_word = |l: &String| {
        l.split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or_default()
            .to_lowercase()
    };
    let starting = |words: &[&str]| {
        labels
            .iter()
            .position(|l| words.contains(&first_word(l).as_str()))
    };
    match answer.as_str() {
        "y" | "yes" => return starting(&YES),
        "n" | "no" => return starting(&NO),
        "" => return None,
        _ => {}
    }
    if let Ok(n) = answer.parse::<usize>() {
        return (1..=labels.len()).contains(&n).then(|| n - 1);
    }
    if let Some(i) = labels.iter().position(|l| l.to_lowercase() == answer) {
        return Some(i);
    }
    let mut hits = labels
        .iter()
        .enumerate()
        .filter(|(_, l)| holds_words(&l.to_lowercase(), &answer));
    let (i, _) = hits.next()?;
    hits.next().is_none().then_some(i)
}

/// The move from the selected button to the one `choice` names, read from `styled` (a capture
/// with its SGR colour sequences): `Left(n)`/`Right(n)`, `Right(0)` when it is selected.
/// `None` when there is no row, the choice names no button, or the selection cannot be told
/// (not exactly one button coloured unlike the row's hints).
pub fn move_to(styled: &str, choice: &str) -> Option<CursorMove> {
    let lines: Vec<Styled> = styled.lines().map(Styled::parse).collect();
    let plain: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    let (at, labels) = find(&plain)?;
    let target = pick(&labels, choice)?;
    let selected = lines[at].selected(&labels)?;
    Some(if target < selected {
        CursorMove::Left(selected - target)
    } else {
        CursorMove::Right(target - selected)
    })
}

/// The row (its index in `lines`) and its labels: the last line, among the bottom
/// [`ROW_LINES`] non-empty ones, whose text runs `label   label … ⇆ select  enter confirm`.
fn find(lines: &[&str]) -> Option<(usize, Vec<String>)> {
    lines
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, l)| !unframed(l).is_empty())
        .take(ROW_LINES)
        .find_map(|(i, l)| row_labels(l).map(|labels| (i, labels)))
}

/// A row's labels: the segments (split at two spaces or more) before its key hints.
fn row_labels(line: &str) -> Option<Vec<String>> {
    let text = unframed(line);
    if !(text.contains("⇆ select") && text.contains("enter confirm")) {
        return None;
    }
    let labels: Vec<String> = text
        .split("  ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .take_while(|s| !is_hint(s))
        .map(str::to_string)
        .collect();
    (2..=6).contains(&labels.len()).then_some(labels)
}

/// Whether a segment of the row is a key hint, not a button.
fn is_hint(segment: &str) -> bool {
    segment.contains('⇆') || segment.starts_with("ctrl+") || segment.starts_with("enter ")
}

/// A line without the frame a TUI draws at its edges (OpenCode's `┃` and `╹`) and blanks.
fn unframed(line: &str) -> &str {
    line.trim_matches(|c: char| c.is_whitespace() || matches!(c, '┃' | '│' | '╹'))
}

/// Whether `phrase` occurs in `text` as whole words.
fn holds_words(text: &str, phrase: &str) -> bool {
    text.match_indices(phrase).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + phrase.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// A background colour as an SGR sequence sets it (`None`: the terminal's default).
type Background = Option<String>;

/// A captured line: its text, and the background of each of its characters.
struct Styled {
    text: String,
    backgrounds: Vec<Background>,
}

impl Styled {
    /// Reads SGR sequences (`ESC [ … m`) for the background; other escape sequences are
    /// dropped.
    fn parse(line: &str) -> Styled {
        let mut text = String::new();
        let mut backgrounds = Vec::new();
        let mut background: Background = None;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '\u{1b}' {
                text.push(c);
                backgrounds.push(background.clone());
                continue;
            }
            if chars.peek() != Some(&'[') {
                chars.next();
                continue;
            }
            chars.next();
            let mut params = String::new();
            let mut last = None;
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    last = Some(c);
                    break;
                }
                params.push(c);
            }
            if last == Some('m') {
                background = sgr_background(&params, background);
            }
        }
        Styled { text, backgrounds }
    }

    /// The one label drawn on a background unlike the row's hints (`enter confirm`), by its
    /// index; `None` unless exactly one is.
    fn selected(&self, labels: &[String]) -> Option<usize> {
        let chars: Vec<char> = self.text.chars().collect();
        let find = |needle: &str, from: usize| -> Option<usize> {
            let n: Vec<char> = needle.chars().collect();
            (from..=chars.len().checked_sub(n.len())?).find(|&i| chars[i..i + n.len()] == n[..])
        };
        let mut from = 0;
        let mut starts = Vec::with_capacity(labels.len());
        for l in labels {
            let at = find(l, from)?;
            starts.push(at);
            from = at + l.chars().count();
        }
        let row = self.backgrounds.get(find("enter confirm", from)?)?;
        let mut unlike = starts
            .iter()
            .enumerate()
            .filter(|(_, &at)| self.backgrounds.get(at) != Some(row));
        let (i, _) = unlike.next()?;
        unlike.next().is_none().then_some(i)
    }
}

/// The background after the SGR parameters `params` (`48;5;215`, `48;2;r;g;b`, `4x`, `10x`,
/// `49`, `0`) applied to `current`.
fn sgr_background(params: &str, current: Background) -> Background {
    let p: Vec<&str> = params.split(';').collect();
    let mut bg = current;
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            "" | "0" | "49" => bg = None,
            "48" if p.get(i + 1) == Some(&"5") => {
                bg = p.get(i + 2).map(|n| format!("5;{n}"));
                i += 2;
            }
            "48" if p.get(i + 1) == Some(&"2") => {
                bg = Some(format!(
                    "2;{}",
                    p.get(i + 2..i + 5).unwrap_or_default().join(";")
                ));
                i += 4;
            }
            "38" if matches!(p.get(i + 1), Some(&"5")) => i += 2,
            "38" if matches!(p.get(i + 1), Some(&"2")) => i += 4,
            n if (40..=47).contains(&n.parse().unwrap_or(0))
                || (100..=107).contains(&n.parse().unwrap_or(0)) =>
            {
                bg = Some(n.to_string())
            }
            _ => {}
        }
        i += 1;
    }
    bg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::activity::screen_fixture;

    fn labels_of(s: &[&str]) -> Vec<String> {
        s.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn the_real_opencode_row_is_read_with_its_labels() {
        let screen = screen_fixture("opencode-bash-permission.txt");
        assert_eq!(
            labels(&screen),
            Some(labels_of(&["Allow once", "Allow always", "Reject"]))
        );
        assert_eq!(labels("› Ask Codex to do anything\n"), None);
        assert_eq!(
            labels(&screen_fixture("codex-run-command.txt")),
            None,
            "a numbered menu is not a row"
        );
    }

    #[test]
    fn answers_name_buttons() {
        let l = labels_of(&["Allow once", "Allow always", "Reject"]);
        for (answer, want) in [
            ("y", Some(0)),
            ("Yes", Some(0)),
            ("allow once", Some(0)),
            ("always", Some(1)),
            ("Allow Always", Some(1)),
            ("n", Some(2)),
            ("no", Some(2)),
            ("reject", Some(2)),
            ("3", Some(2)),
            ("4", None),
            ("allow", None),
            ("hello", None),
            ("", None),
        ] {
            assert_eq!(pick(&l, answer), want, "{answer:?}");
        }
        let l = labels_of(&["Confirm", "Cancel"]);
        assert_eq!(pick(&l, "yes"), Some(0));
        assert_eq!(pick(&l, "no"), Some(1));
    }

    /// The row as OpenCode 1.18.33 draws it under tmux `capture-pane -e`: the selected
    /// button on colour 215, the others and the hints on 234.
    fn styled_row(selected: usize) -> String {
        let button = |i: usize, label: &str| {
            if i == selected {
                format!("\u{1b}[48;5;215m \u{1b}[38;5;232m{label}\u{1b}[38;5;15m \u{1b}[48;5;234m")
            } else {
                format!(" \u{1b}[38;5;8m{label}\u{1b}[38;5;15m ")
            }
        };
        format!(
            "\u{1b}[48;5;232m  \u{1b}[38;5;215m\u{1b}[48;5;233m┃\u{1b}[38;5;15m\u{1b}[48;5;234m  {} {} {}        \u{1b}[38;5;255mctrl+f \u{1b}[38;5;8mfullscreen\u{1b}[38;5;15m  \u{1b}[38;5;255m⇆ \u{1b}[38;5;8mselect\u{1b}[38;5;15m  \u{1b}[38;5;255menter \u{1b}[38;5;8mconfirm\u{1b}[38;5;15m   \u{1b}[48;5;232m  \n",
            button(0, "Allow once"),
            button(1, "Allow always"),
            button(2, "Reject")
        )
    }

    #[test]
    fn the_move_starts_from_the_button_its_colours_select() {
        let top = "\u{1b}[48;5;234m  ┃  △ Permission required\u{1b}[0m\n";
        let at = |sel: usize, choice: &str| move_to(&format!("{top}{}", styled_row(sel)), choice);
        assert_eq!(at(0, "no"), Some(CursorMove::Right(2)));
        assert_eq!(at(1, "no"), Some(CursorMove::Right(1)));
        assert_eq!(at(2, "y"), Some(CursorMove::Left(2)));
        assert_eq!(at(0, "y"), Some(CursorMove::Right(0)));
        assert_eq!(at(1, "always"), Some(CursorMove::Right(0)));
        assert_eq!(at(0, "hello"), None);
        // Colours that single out no button: no move (Enter would pick blindly).
        let flat = styled_row(9);
        assert_eq!(move_to(&flat, "y"), None);
        assert!(CursorMove::Right(0).arrived() && !CursorMove::Left(1).arrived());
        assert_eq!(CursorMove::Left(1).next_key(), "Left");
        assert_eq!(CursorMove::Right(2).next_key(), "Right");
    }

    #[test]
    fn the_question_is_the_line_above_the_row() {
        let q = question(&screen_fixture("opencode-bash-permission.txt")).expect("row");
        assert!(q.ends_with("[Allow once | Allow always | Reject]"), "{q}");
    }
}
