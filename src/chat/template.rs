//! Templates: substitution, the execute-now wrapper, front matter, the seeded workflows.

/// The seeded workflow templates, shipped as Markdown files in `config/templates/` and
/// compiled in (no dependency on the process's working directory, unlike rca). Upserted at
/// start-up when missing or still an earlier seeded text ([`superseded`]), so edits made with
/// `/template-add` survive a restart.
pub const SEEDED: &[(&str, &str)] = &[
    ("plan", include_str!("../../config/templates/plan.md")),
    (
        "implement",
        include_str!("../../config/templates/implement.md"),
    ),
    ("commit", include_str!("../../config/templates/commit.md")),
    (
        "review-pr",
        include_str!("../../config/templates/review-pr.md"),
    ),
    (
        "create-pr",
        include_str!("../../config/templates/create-pr.md"),
    ),
    (
        "merge-pr",
        include_str!("../../config/templates/merge-pr.md"),
    ),
    ("rca", include_str!("../../config/templates/rca.md")),
    ("fix-rca", include_str!("../../config/templates/fix-rca.md")),
    ("prd", include_str!("../../config/templates/prd.md")),
];

/// SHA-256 (hex) of the texts earlier versions seeded (one paragraph each): a stored template
/// still equal to one was never edited, and the current text replaces it.
const SUPERSEDED_SEEDS: &[(&str, &str)] = &[
    (
        "commit",
        "0e40ba7ab7f80968d8d313975c5b9e222eca208923e53928950d786ede8e541b",
    ),
    (
        "create-pr",
        "7c9f8521daf3da32dddd1d1c2fd0a0a832a5f891a5551f3a96a41715691d43c0",
    ),
    (
        "fix-rca",
        "597be8263773f2b31afd78e669924b9badb3d87b484039854d6537e839bf8d07",
    ),
    (
        "implement",
        "50aea471ab67a8062ab0ef7c24ab05bf88c62cc963555e4d06a3556292ea725a",
    ),
    (
        "merge-pr",
        "527e1d58ab34d4aa1e2802c57b060209c41ef819f44914589400ad21525d1ed3",
    ),
    (
        "plan",
        "557a2a43419d601d12a75e7665892e2a03ef15731f16badeeabaa29b3a9533ba",
    ),
    (
        "prd",
        "ceb57c9f2bcec83ed8375fbbae47f336c5f0895b68767bb0380fb72224231f2a",
    ),
    (
        "rca",
        "744f5307402b54fb0a1d559c2f8bf7b91b03adf9c6cfab7030d68bf2cb2bd4b9",
    ),
    (
        "review-pr",
        "47bf792b68275de9802f6f16f1a5fea390c1f901049a1ef3a773d5606e821e8f",
    ),
];

/// Whether `content`, stored as template `name`, is a text an earlier version seeded.
pub fn superseded(name: &str, content: &str) -> bool {
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(content.as_bytes()));
    SUPERSEDED_SEEDS
        .iter()
        .any(|(n, h)| *n == name && *h == digest)
}

/// Substitutes `$1`…`$9` with the arguments and `$ARGUMENTS` with all of them joined by
/// spaces, in one left-to-right pass over the template (so an argument containing `$2` is
/// never substituted again, and arguments are inserted literally: no `$&` expansion).
/// `$10` is `$1` followed by `0`, never the tenth argument. A placeholder without an argument
/// stays as written; `\$` becomes `$` (and protects what follows from substitution).
pub fn substitute(template: &str, args: &[String]) -> String {
    let all = args.join(" ");
    let mut out = String::with_capacity(template.len() + all.len());
    let mut rest = template;
    while let Some(i) = rest.find(['$', '\\']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("\\$") {
            out.push('$');
            rest = after;
            continue;
        }
        if let Some(after) = tail.strip_prefix('\\') {
            out.push('\\');
            rest = after;
            continue;
        }
        if let Some(after) = tail.strip_prefix("$ARGUMENTS") {
            out.push_str(&all);
            rest = after;
            continue;
        }
        let mut chars = tail[1..].chars();
        match chars.next() {
            Some(d @ '1'..='9') => {
                let n = (d as usize) - ('0' as usize);
                match args.get(n - 1) {
                    Some(a) => out.push_str(a),
                    None => {
                        out.push('$');
                        out.push(d);
                    }
                }
                rest = &tail[2..];
            }
            _ => {
                out.push('$');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `description:` of a YAML front matter, if the file starts with one.
pub fn front_matter_description(content: &str) -> Option<String> {
    let body = content.strip_prefix("---")?;
    let end = body.find("\n---")?;
    body[..end].lines().find_map(|l| {
        l.trim()
            .strip_prefix("description:")
            .map(|d| d.trim().trim_matches('"').trim_matches('\'').to_string())
    })
}

/// The template body without its front matter.
pub fn strip_front_matter(content: &str) -> &str {
    if let Some(body) = content.strip_prefix("---") {
        if let Some(end) = body.find("\n---") {
            let after = &body[end + 4..];
            return after.strip_prefix('\n').unwrap_or(after);
        }
    }
    content
}

/// Wraps an invoked template so the assistant acts on it now, without asking; `context`
/// (issue or PR details) follows after a `---` separator.
pub fn execute_now(name: &str, content: &str, context: Option<&str>) -> String {
    let mut p = format!(
        "The user invoked the `/{name}` command. Execute the following instructions now; \
         do not ask for confirmation.\n\n---\n\n{}\n\n---\n\nRemember: the user already \
         decided to run this command. Act on it.",
        content.trim()
    );
    if let Some(c) = context.filter(|c| !c.trim().is_empty()) {
        p.push_str("\n\n---\n\n");
        p.push_str(c.trim());
    }
    p
}

/// The prompt of a message run again because a restart (or its node's death) cut its turn
/// short: the assistant is told first, since the cut turn may already have done some of the
/// work (edited files, run commands) in the same session and workspace, and its answer may
/// never have reached the user.
pub fn after_interruption(prompt: &str) -> String {
    format!(
        "Note from Flotilla: this message was already being answered, and that turn was cut \
         off before it finished (Flotilla restarted, or another node took this conversation \
         over). Some of its steps may be done already: check before repeating any. Its answer \
         may not have reached the user, so answer in full.\n\n---\n\n{prompt}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_messages_prompt_says_so_first_and_keeps_the_prompt_whole() {
        let p = after_interruption("Which number was it?");
        assert!(p.starts_with("Note from Flotilla: this message was already being answered"));
        assert!(p.ends_with("\n\n---\n\nWhich number was it?"), "{p}");
    }

    fn a(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn substitution_scenario_4() {
        assert_eq!(
            substitute(
                "Fix $1 in $2 ($ARGUMENTS) costs \\$5",
                &a(&["bug", "app.ts"])
            ),
            "Fix bug in app.ts (bug app.ts) costs $5"
        );
        assert_eq!(substitute("keep $3 as is", &a(&["x"])), "keep $3 as is");
    }

    #[test]
    fn no_ten_or_dollar_ampersand_quirks() {
        let ten = a(&["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]);
        assert_eq!(substitute("$10", &ten), "a0");
        assert_eq!(substitute("$1 $2", &a(&["$&", "$1"])), "$& $1");
        assert_eq!(substitute("$$1 $ $x \\n", &a(&["v"])), "$v $ $x \\n");
        assert_eq!(substitute("$ARGUMENTS!", &a(&[])), "!");
    }

    #[test]
    fn front_matter_is_read_and_stripped() {
        let t = "---\ndescription: Plan a feature\nargument-hint: x\n---\nBody $1\n";
        assert_eq!(
            front_matter_description(t).as_deref(),
            Some("Plan a feature")
        );
        assert_eq!(strip_front_matter(t), "Body $1\n");
        assert_eq!(strip_front_matter("plain"), "plain");
    }

    #[test]
    fn the_wrapper_puts_context_after_a_separator() {
        let p = execute_now("plan", "do X", Some("Issue #7"));
        assert!(p.contains("`/plan`") && p.contains("do X"));
        assert!(p.ends_with("---\n\nIssue #7"));
    }

    #[test]
    fn every_seeded_template_has_a_description() {
        for (name, body) in SEEDED {
            assert!(front_matter_description(body).is_some(), "{name}");
            assert!(!superseded(name, body), "{name}");
        }
        let old = "---\ndescription: Commit the current changes with a good message\nargument-hint: [target]\n---\nReview the working tree (`git status`, `git diff`). Commit $ARGUMENTS (everything if nothing is named) with a concise message that says why. Do not push.\n";
        assert!(superseded("commit", old));
        assert!(!superseded("plan", old));
    }
}
