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

#[cfg(test)]
mod tests {
    use super::*;

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
}
