//! Two wordings of one question. A source that sees only the start of what another names (an
//! MCP tool's dialog on screen shows its server, not the tool's name and input its hook
//! reports) words it cut short, ending in `…`; the fuller wording starts with what it keeps.
//! Both are one question: one wait, one page, and the fuller wording is the one kept.

/// Whether `a` and `b` word one question: alike, or one cut short and the other starting with
/// what it keeps.
pub fn same_question(a: &str, b: &str) -> bool {
    a == b || abridges(a, b) || abridges(b, a)
}

/// Whether `short` is cut short (ends in `…`) and `full` says more, starting with what `short`
/// keeps.
pub fn abridges(short: &str, full: &str) -> bool {
    short.strip_suffix('…').is_some_and(|kept| {
        !kept.trim().is_empty()
            && full != short
            && full.len() > kept.len()
            && full.starts_with(kept)
    })
}

/// Whether two wordings name one question as far as words can tell: alike but for
/// whitespace (a screen wraps a long command where it likes), or one a start of the other (a
/// screen may cut a call short, with or without `…`). Looser than [`same_question`]: what
/// may pass for one question, not what is recorded as one.
pub fn alike(a: &str, b: &str) -> bool {
    let squeeze = |s: &str| {
        s.trim_end_matches('…')
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
    };
    let (a, b) = (squeeze(a), squeeze(b));
    !a.is_empty() && !b.is_empty() && (a.starts_with(&b) || b.starts_with(&a))
}

/// Whether `session` still waits on the question `answers` (as it showed it, or as a
/// notification worded it): else why not, naming what it waits on now. An answer is only
/// typed onto the question its sender read.
pub fn still_asks(session: &super::session::SessionRecord, answers: &str) -> Result<(), String> {
    let now = session.meta["question"].as_str();
    let waiting = session.state == super::session::SessionState::NeedsInput;
    match now {
        Some(q) if waiting && same_question(q, answers) => Ok(()),
        Some(q) if waiting => Err(format!(
            "session {} no longer waits on that question; it now asks: {q}. Nothing was typed",
            session.id
        )),
        _ => Err(format!(
            "session {} no longer waits on that question (it is {}). Nothing was typed",
            session.id, session.state
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_goes_only_to_the_question_its_sender_read() {
        let session = |state: &str, question: &str| -> super::super::session::SessionRecord {
            serde_json::from_value(serde_json::json!({
                "id": "demo-1", "project": "demo", "state": state, "reason": null,
                "agent": "claude", "runtime": "tmux", "workspace_kind": "worktree",
                "branch": null, "workspace": null, "pr": null, "issue": null, "prompt": null,
                "runtime_handle": null, "activity": "waiting_input",
                "activity_at": "2026-01-01T10:00:00Z", "restart_count": 0,
                "created_at": "2026-01-01T10:00:00Z", "updated_at": "2026-01-01T10:00:00Z",
                "meta": {"question": question},
            }))
            .expect("record")
        };
        let push = session("needs_input", "approve Bash: git push");
        assert_eq!(still_asks(&push, "approve Bash: git push"), Ok(()));
        // One cut short (the screen's wording) is the same question.
        assert_eq!(still_asks(&push, "approve Bash: git pu…"), Ok(()));
        let other = still_asks(&push, "approve Bash: git status").expect_err("another");
        assert!(
            other.contains("it now asks: approve Bash: git push"),
            "{other}"
        );
        let working = session("working", "approve Bash: git push");
        let gone = still_asks(&working, "approve Bash: git push").expect_err("not waiting");
        assert!(gone.contains("(it is working)"), "{gone}");
    }

    #[test]
    fn a_question_cut_short_is_the_one_it_starts() {
        let full = r#"approve mcp__probe__echo: {"text":"hi"}"#;
        assert!(same_question("approve mcp__probe__…", full));
        assert!(same_question(full, "approve mcp__probe__…"));
        assert!(abridges("approve mcp__probe__…", full));
        assert!(!abridges(full, "approve mcp__probe__…"));
        assert!(same_question(full, full));
        // Another server's, another question; an uncut wording is whole.
        assert!(!same_question("approve mcp__other__…", full));
        assert!(!same_question("approve mcp__probe__", full));
        assert!(!same_question("approve Bash: a", "approve Bash: ab"));
        // Nothing kept names nothing.
        assert!(!same_question("…", full));
        assert!(!abridges("approve mcp__probe__…", "approve mcp__probe__…"));
    }

    #[test]
    fn one_wording_of_a_call_and_another_wrapped_or_cut_are_alike() {
        let full = "approve Bash: git rm -q counter.txt && git commit -q -m 'Drop the counter'";
        // Wrapped on screen, or cut short with or without an ellipsis.
        assert!(alike(
            full,
            "approve Bash: git rm -q counter.txt && git  commit -q -m 'Drop the\n counter'"
        ));
        assert!(alike(
            full,
            "approve Bash: git rm -q counter.txt && git commit…"
        ));
        assert!(alike(
            "approve mcp__probe__echo: {\"text\":\"hi\"}",
            "approve mcp__probe__…"
        ));
        // Another call.
        assert!(!alike(
            full,
            "approve Bash: curl -sS -f -X POST \"$GITHUB_API/repos\""
        ));
        assert!(!alike(full, "approve Write: /w/counter.txt"));
        assert!(!alike(full, ""));
    }
}
