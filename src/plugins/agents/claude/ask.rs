//! Claude Code's `AskUserQuestion` dialog read from the screen: which of the tool call's
//! questions it shows, so that an answer read for one call is not typed onto the next.
//!
//! What Claude Code 2.1.328 draws (fixtures `claude-ask.txt`, `claude-questions-review.txt`):
//! under a full-width `─` rule, a line of tabs, one a question (`☐ Color`, `☒` once
//! answered, then `✔ Submit` when there are several), then either the current question's
//! text and its numbered options, or, on the last tab, `Review your answers` with each
//! question behind a `●`.
//!
//! The hook and the log word the call as `Which color? [Red | Blue]; Which size? […]`
//! ([`super::waiting_question`]); the screen shows one question at a time, wrapped where it
//! likes and rendered from markdown. So a question is compared by its letters and digits only,
//! and a dialog is another call's only when none of its questions is in the wording asked.

use crate::plugins::activity::screen_lines;

/// The questions of the `AskUserQuestion` dialog at the bottom of `screen` (the one it shows,
/// or all of them on the review tab), or `None` for another screen or a dialog half drawn.
pub fn screen_questions(screen: &str) -> Option<Vec<String>> {
    let lines: Vec<&str> = screen_lines(screen)
        .into_iter()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    // The tab line: right under a rule, so a todo list's `☐` in the transcript is not one.
    let tabs = (1..lines.len())
        .rev()
        .find(|&i| is_rule(lines[i - 1]) && is_tab_line(lines[i]))?;
    let rest = &lines[tabs + 1..];
    let first_option = rest.iter().position(|l| is_option(l))?;
    let asked = &rest[..first_option];
    let questions: Vec<String> = match asked.first() {
        Some(&"Review your answers") => asked
            .iter()
            .filter_map(|l| l.strip_prefix('●'))
            .map(|q| q.trim().to_string())
            .collect(),
        _ => vec![asked.join(" ")],
    };
    (!questions.is_empty() && questions.iter().all(|q| !letters(q).is_empty())).then_some(questions)
}

/// Whether `asked` (a hook's, the log's or the screen's wording) names `question`: its letters
/// and digits appear in it, or `asked` is cut short before where they would be.
pub fn names(asked: &str, question: &str) -> bool {
    let (a, q) = (letters(asked), letters(question));
    a.contains(&q) || asked.ends_with('…')
}

/// `text`'s letters and digits, lower-cased: what survives wrapping and markdown.
fn letters(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn is_rule(line: &str) -> bool {
    line.chars().count() > 8 && line.chars().all(|c| c == '─')
}

/// `☐ Color`, `←  ☒ Colour  ☒ Size  ✔ Submit  →`.
fn is_tab_line(line: &str) -> bool {
    let tabs = line.trim_start_matches('←').trim_end_matches('→').trim();
    tabs.starts_with(['☐', '☒']) && tabs.split(['☐', '☒']).skip(1).all(|t| !t.trim().is_empty())
}

/// `❯ 1. Red`, `2. Blue`.
fn is_option(line: &str) -> bool {
    let line = line.trim_start_matches('❯').trim_start();
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && line[digits..].starts_with(". ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::activity::screen_fixture;

    #[test]
    fn the_question_shown_is_read_and_named_by_the_hooks_wording() {
        let ask = screen_fixture("claude-ask.txt");
        assert_eq!(
            screen_questions(&ask),
            Some(vec!["Which color?".to_string()])
        );
        let hook = super::super::waiting_question(
            "AskUserQuestion",
            &serde_json::json!({"questions": [
                {"question": "Which color?", "header": "Color",
                 "options": [{"label": "Red"}, {"label": "Blue"}]},
            ]}),
        );
        assert!(names(&hook, "Which color?"));
        assert!(!names(&hook, "Which size?"));
        // Wrapped and rendered: the letters still match.
        assert!(names(
            "Rename `parse_args` to parse? [Yes | No]",
            "Rename parse_args\nto parse?"
        ));
        // A wording cut short may hold the question past its end.
        assert!(names("Which color? [Red | Blue]; Which…", "Which size?"));
    }

    #[test]
    fn the_review_tab_shows_every_question() {
        let review = screen_fixture("claude-questions-review.txt");
        assert_eq!(
            screen_questions(&review),
            Some(vec![
                "Which colour should the button be?".to_string(),
                "Which size should the button be?".to_string(),
            ])
        );
    }

    #[test]
    fn other_screens_show_no_questions() {
        for name in [
            "claude-bash-permission.txt",
            "claude-trust.txt",
            "claude-idle.txt",
            "claude-create-file.txt",
        ] {
            assert_eq!(screen_questions(&screen_fixture(name)), None, "{name}");
        }
        // Half drawn: no option yet.
        let ask = screen_fixture("claude-ask.txt");
        let cut = &ask[..ask.find("❯ 1. Red").expect("the first option")];
        assert_eq!(screen_questions(cut), None);
        // A todo list in the transcript is not a tab line.
        let todo = "● Update Todos\n  ⎿  ☐ Fix the parser\n     ☐ Run the tests\n\n Do it?\n❯ 1. Yes\n  2. No\n";
        assert_eq!(screen_questions(todo), None);
    }
}
