//! Paths, URLs, names and reply text: the checks and shaping the chat commands rely on.

use std::path::{Component, Path, PathBuf};

/// Resolves `input` against `base` (relative) or as given (absolute), lexically (`..` and
/// `.` removed, no symlinks followed: the directory need not exist), and checks the result is
/// `root` or inside it.
///
/// # Errors
/// `Path must be within <root> directory` (the rca wording, scenario 20).
pub fn confine(root: &Path, base: &Path, input: &str) -> Result<PathBuf, String> {
    let joined = if Path::new(input).is_absolute() {
        PathBuf::from(input)
    } else {
        base.join(input)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    if out == root || out.starts_with(root) {
        Ok(out)
    } else {
        Err(format!("Path must be within {} directory", root.display()))
    }
}

pub use crate::domain::clone_url::{valid_name, validate_clone_url};

/// A `/worktree create` branch: `[A-Za-z0-9_-]+` (rca's rule).
pub fn valid_branch(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// Splits a reply under `max` characters: whole paragraphs when they fit, then lines, then
/// hard cuts (on character boundaries).
pub fn split_reply(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    if text.chars().count() <= max {
        return vec![text.to_string()];
    }
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let push = |out: &mut Vec<String>, cur: &mut String| {
        if !cur.trim().is_empty() {
            out.push(std::mem::take(cur));
        } else {
            cur.clear();
        }
    };
    for para in text.split("\n\n") {
        let pieces: Vec<String> = if para.chars().count() > max {
            para.lines()
                .flat_map(|l| {
                    let chars: Vec<char> = l.chars().collect();
                    chars
                        .chunks(max)
                        .map(|c| c.iter().collect::<String>())
                        .collect::<Vec<_>>()
                })
                .collect()
        } else {
            vec![para.to_string()]
        };
        for p in pieces {
            let sep = if cur.is_empty() { 0 } else { 2 };
            if cur.chars().count() + sep + p.chars().count() > max {
                push(&mut out, &mut cur);
            }
            if !cur.is_empty() {
                cur.push_str("\n\n");
            }
            cur.push_str(&p);
        }
    }
    push(&mut out, &mut cur);
    out
}

/// Paragraph openings that mark tool chatter, dropped from batch replies (rca's list).
const TOOL_MARKS: [&str; 7] = ["🔧", "💭", "📝", "✏️", "🗑️", "📂", "🔍"];

/// The batch reply: the texts joined, tool-chatter paragraphs dropped (all of it if nothing
/// else is left), and a one-line summary of the tool calls.
pub fn batch_reply(texts: &[String], tools: &[String]) -> String {
    let joined = texts.join("\n\n");
    let kept: Vec<&str> = joined
        .split("\n\n")
        .filter(|p| !TOOL_MARKS.iter().any(|m| p.trim_start().starts_with(m)))
        .filter(|p| !p.trim().is_empty())
        .collect();
    let mut out = if kept.is_empty() {
        joined.trim().to_string()
    } else {
        kept.join("\n\n")
    };
    if !tools.is_empty() {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for t in tools {
            let name = t
                .trim_start_matches("🔧")
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            match counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, c)) => *c += 1,
                None => counts.push((name, 1)),
            }
        }
        let list: Vec<String> = counts
            .iter()
            .map(|(n, c)| {
                if *c > 1 {
                    format!("{n} ×{c}")
                } else {
                    n.clone()
                }
            })
            .collect();
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(&format!("_Tools used: {}_", list.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_workspace_scenario_20() {
        let root = Path::new("/ws");
        assert_eq!(
            confine(root, Path::new("/ws/a"), "../../etc"),
            Err("Path must be within /ws directory".into())
        );
        assert!(confine(root, root, "../../x").is_err());
        assert!(confine(root, root, "/ws2").is_err());
        assert_eq!(
            confine(root, root, "a/./b/../c"),
            Ok(PathBuf::from("/ws/a/c"))
        );
        assert_eq!(
            confine(root, Path::new("/ws/a"), ".."),
            Ok(PathBuf::from("/ws"))
        );
    }

    #[test]
    fn clone_urls_are_validated_and_normalized() {
        assert_eq!(
            validate_clone_url("git@github.com:o/r.git/"),
            Ok(("https://github.com/o/r.git".into(), "o".into(), "r".into()))
        );
        assert!(validate_clone_url("https://tok@github.com/o/r").is_err());
        assert!(validate_clone_url("ext::sh -c evil").is_err());
        assert!(validate_clone_url("https://github.com/o/..").is_err());
        assert!(validate_clone_url("/tmp/x/repo").is_ok());
    }

    #[test]
    fn batch_replies_drop_tool_paragraphs_scenario_13() {
        let texts = vec![
            "Plan:".to_string(),
            "🔧 BASH\nls".to_string(),
            "Done".to_string(),
        ];
        assert_eq!(batch_reply(&texts, &[]), "Plan:\n\nDone");
        let tools = vec!["🔧 BASH\nls".to_string(), "🔧 BASH\npwd".to_string()];
        assert_eq!(
            batch_reply(&["ok".into()], &tools),
            "ok\n\n_Tools used: BASH ×2_"
        );
    }

    #[test]
    fn long_replies_split_under_the_limit() {
        let text = (0..50)
            .map(|i| format!("paragraph {i} {}", "x".repeat(150)))
            .collect::<Vec<_>>()
            .join("\n\n");
        let parts = split_reply(&text, 1000);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.chars().count() <= 1000));
        assert_eq!(parts.join("\n\n"), text);
        let one = "y".repeat(2500);
        assert!(split_reply(&one, 1000)
            .iter()
            .all(|p| p.chars().count() <= 1000));
    }

    #[test]
    fn names_and_branches() {
        assert!(valid_branch("feat_1-x"));
        assert!(!valid_branch("a/b") && !valid_branch("-x") && !valid_branch(""));
        assert!(valid_name("my.repo") && !valid_name(".."));
    }
}
