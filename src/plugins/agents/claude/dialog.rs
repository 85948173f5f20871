//! Claude Code's tool permission dialogs read from the screen, worded as its
//! `PermissionRequest` hook words them ([`super::waiting_question`]: `approve Write: /w/a.rs`):
//! the screen and the hook then name one dialog alike, whichever sees it first, so a hook
//! report landing after the answer is known for the question just answered.
//!
//! What Claude Code 2.1.328 draws (fixtures in `tests/fixtures/screens`): under a full-width
//! `─` rule, a title line, maybe a line or two under it, a body between two dashed `╌` rules,
//! then the question ("Do you want to …?") and its numbered options.
//!
//! | title | tool | what the hook names, as the dialog shows it |
//! |---|---|---|
//! | `Bash command` | `Bash` | the command, the body's lines joined by spaces (behind a `│` gutter when compound) |
//! | `Create file`, `Overwrite file` | `Write` | the path, the line(s) under the title |
//! | `Edit file` | `Edit` | the path, the line(s) under the title |
//! | `Edit notebook` | `NotebookEdit` | the path, the line(s) under the title but the last (what is done to which cell) |
//! | `Read file` | `Read` | the path in the body's `Read(<path>)` |
//! | `Fetch` | `WebFetch` | the URL in the body's `url: …` |
//! | `Tool use` | `WebSearch` | the query in the body's `Web Search("<query>")` |
//! | `Tool use` | `mcp__<server>__<tool>` | the server, in `<server> — <title> Tool: (MCP)` under the title |
//!
//! An MCP tool's dialog shows the tool by its title (the server's annotation, or its name
//! reworded) and its input abridged: neither gives back the tool's name or its input as the
//! hook has them. So it is worded cut short, as far as the screen knows the hook's wording:
//! `approve mcp__probe__…` for the hook's `approve mcp__probe__echo: {"text":"hi"}`, which the
//! session takes for the same question ([`crate::domain::question`]): one wait, one page, and
//! the hook's wording kept once it is reported.
//!
//! The dialog shows a file by its path relative to the working directory (`notes.txt`, or
//! `../../x` outside it; the hook's `file_path` is absolute): it is joined to the session's
//! workspace as the CLI sees it (resolved). Another dialog is not worded here: its question is
//! the dialog's own text.

use std::path::Path;

use serde_json::json;

use crate::plugins::activity::screen_lines;

/// The permission dialog at the bottom of `screen`, worded as its hook words it, or `None` for
/// another screen or dialog. `workspace` is the agent's working directory (resolved).
pub fn screen_tool_question(screen: &str, workspace: &Path) -> Option<String> {
    let lines: Vec<&str> = screen_lines(screen)
        .into_iter()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let asks = lines
        .iter()
        .rposition(|l| l.starts_with("Do you want") && l.ends_with('?'))?;
    let (title, tool) = lines[..asks].iter().enumerate().rev().find_map(|(i, l)| {
        let tool = match *l {
            "Bash command" => "Bash",
            "Create file" | "Overwrite file" => "Write",
            "Edit file" => "Edit",
            "Edit notebook" => "NotebookEdit",
            "Read file" => "Read",
            "Fetch" => "WebFetch",
            // An MCP tool's, a web search's (and others' not worded here).
            "Tool use" => "",
            _ => return None,
        };
        Some((i, tool))
    })?;
    let dialog = &lines[title + 1..asks];
    let rules: Vec<usize> = dialog
        .iter()
        .enumerate()
        .filter(|(_, l)| l.chars().all(|c| c == '╌'))
        .map(|(i, _)| i)
        .collect();
    let head = &dialog[..rules.first().copied().unwrap_or(dialog.len())];
    let body = match rules.as_slice() {
        [open, close, ..] => &dialog[open + 1..*close],
        _ => &[][..],
    };
    // A compound or long command is drawn behind a `│` gutter, one on each of its lines.
    let gutter = !body.is_empty() && body.iter().all(|l| l.starts_with('│'));
    let body: Vec<&str> = body
        .iter()
        .map(|l| {
            if gutter {
                l.strip_prefix('│').unwrap_or(l).trim_start()
            } else {
                l
            }
        })
        .collect();
    let body = &body[..];
    if tool.is_empty() {
        return tool_use_question(head, body);
    }
    let input = match tool {
        "Bash" => json!({ "command": nonempty(body.join(" "))? }),
        "Write" | "Edit" => json!({ "file_path": absolute(&head.concat(), workspace)? }),
        // The path, then what is done to which cell.
        "NotebookEdit" => {
            let path = match head {
                [path @ .., _what] if !path.is_empty() => path,
                all => all,
            };
            json!({ "notebook_path": absolute(&path.concat(), workspace)? })
        }
        "Read" => {
            let shown = body.concat();
            let path = shown.strip_prefix("Read(")?.strip_suffix(')')?;
            json!({ "file_path": absolute(path, workspace)? })
        }
        _ => {
            let start = body.iter().position(|l| l.starts_with("url: "))?;
            let end = body
                .iter()
                .position(|l| l.starts_with("prompt: "))
                .unwrap_or(body.len());
            let url = body.get(start..end)?.concat();
            json!({ "url": nonempty(url.trim_start_matches("url: ").to_string())? })
        }
    };
    Some(super::waiting_question(tool, &input))
}

/// A `Tool use` dialog: an MCP tool's (`<server> — <title> Tool: (MCP)` under the title,
/// worded cut short after its server) or a web search's (the body's `Web Search("<query>")`).
/// `None` for another tool's.
fn tool_use_question(head: &[&str], body: &[&str]) -> Option<String> {
    if let Some(named) = head.first().and_then(|l| l.strip_suffix("(MCP)")) {
        let (server, _) = named.split_once(" — ")?;
        let server = nonempty(super::mcp_server_name(server.trim()))?;
        return Some(format!("approve mcp__{server}__…"));
    }
    let shown = body.join(" ");
    let query = shown.strip_prefix("Web Search(\"")?.strip_suffix("\")")?;
    Some(super::waiting_question(
        "WebSearch",
        &json!({ "query": nonempty(query.to_string())? }),
    ))
}

fn nonempty(s: String) -> Option<String> {
    (!s.trim().is_empty()).then_some(s)
}

/// A path as the hook names it: absolute as shown, or the shown relative path joined to the
/// workspace, `..` taken lexically (a file outside it is shown as `../../x`; the workspace is
/// resolved, so no symbolic link is stepped over). `None` for a path the dialog abbreviates
/// (`~/…`, `…`) or none at all.
fn absolute(shown: &str, workspace: &Path) -> Option<String> {
    use std::path::{Component, PathBuf};
    let shown = shown.trim();
    if shown.is_empty() || shown.starts_with('~') || shown.contains('…') {
        return None;
    }
    if shown.starts_with('/') {
        return Some(shown.to_string());
    }
    let mut path = PathBuf::new();
    for c in workspace.join(shown).components() {
        match c {
            Component::ParentDir => {
                path.pop();
            }
            Component::CurDir => {}
            other => path.push(other),
        }
    }
    Some(path.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::question::abridges;
    use crate::plugins::activity::{screen_fixture as screen, terminal_question};

    fn hook(tool: &str, input: serde_json::Value) -> Option<String> {
        Some(super::super::waiting_question(tool, &input))
    }

    #[test]
    fn a_command_behind_a_gutter_is_worded_as_its_hook_words_it() {
        // Claude Code 2.1.328 under a real run: a compound command, then a wrapped one beside
        // the diff panel.
        let compound = "git add counter.txt && git commit -q -m 'Add the widget counter' && git push -q origin HEAD";
        let ws = Path::new("/tmp/.tmpvJXWhV/home/worktrees/demo/demo-1");
        assert_eq!(
            screen_tool_question(&screen("claude-bash-compound.txt"), ws),
            hook(
                "Bash",
                json!({"command": compound, "description": "Commit and push"})
            )
        );
        let curl = r#"curl -sS -f -X POST "$GITHUB_API/repos/acme/widgets/pulls" -H "Authorization: Bearer $GITHUB_TOKEN" -H 'Accept: application/vnd.github+json' -d "{\"title\":\"Add the widget counter\",\"head\":\"$(git branch --show-current)\",\"base\":\"main\",\"body\":\"Counts widgets.\"}""#;
        assert_eq!(
            screen_tool_question(&screen("claude-bash-wrapped-panel.txt"), ws),
            hook("Bash", json!({"command": curl}))
        );
    }

    /// Real screens of `claude` 2.1.328, each against what its hook reported for that dialog.
    #[test]
    fn each_dialog_on_screen_is_worded_as_its_hook_words_it() {
        let ws = Path::new("/tmp/.tmpZdmhIb/home/worktrees/demo/demo-1");
        let q = |name: &str| screen_tool_question(&screen(name), ws);
        assert_eq!(
            q("claude-bash-permission.txt"),
            hook(
                "Bash",
                json!({"command": "git commit --allow-empty -m wip"})
            )
        );
        assert_eq!(
            q("claude-create-file.txt"),
            hook("Write", json!({"file_path": ws.join("notes.txt")}))
        );
        assert_eq!(
            q("claude-edit-file.txt"),
            hook("Edit", json!({"file_path": ws.join("README.md")}))
        );
        assert_eq!(
            q("claude-edit-file.txt").as_deref(),
            Some("approve Edit: /tmp/.tmpZdmhIb/home/worktrees/demo/demo-1/README.md")
        );
        // With Claude's diff panel drawn beside the dialog.
        assert_eq!(
            q("claude-overwrite-file-panel.txt"),
            hook("Write", json!({"file_path": ws.join("README.md")}))
        );
        assert_eq!(
            q("claude-fetch-panel.txt").as_deref(),
            Some("approve WebFetch: https://example.com/docs/page")
        );
        assert_eq!(
            q("claude-read-outside-panel.txt").as_deref(),
            Some("approve Read: /etc/hostname")
        );
        // Each is also a question on screen (the panel beside it notwithstanding).
        for name in [
            "claude-create-file.txt",
            "claude-edit-file.txt",
            "claude-overwrite-file-panel.txt",
            "claude-fetch-panel.txt",
            "claude-read-outside-panel.txt",
        ] {
            assert!(terminal_question(&screen(name)).is_some(), "{name}");
        }
        // A file outside the working directory is shown relative to it; a long path whole.
        let ws3 = Path::new("/tmp/.tmpBJ18j3/home/worktrees/demo/demo-1");
        assert_eq!(
            screen_tool_question(&screen("claude-create-outside.txt"), ws3).as_deref(),
            Some("approve Write: /tmp/flotilla-outside-capture.txt")
        );
        let long = "a-rather-long-directory-name-for-wrapping/another-long-directory-name-here/\
                    yet-another-directory-with-a-long-name/and-the-file-itself-has-a-long-name-too.txt";
        assert_eq!(
            screen_tool_question(&screen("claude-create-long.txt"), ws3),
            hook("Write", json!({"file_path": ws3.join(long)}))
        );
        // A notebook edit, a web search (beside the diff panel), an MCP tool's call (also
        // beside the panel): as their hooks reported them.
        let ws4 = Path::new("/tmp/.tmp1zYUxT/home/worktrees/demo/demo-1");
        let q4 = |name: &str| screen_tool_question(&screen(name), ws4);
        assert_eq!(
            q4("claude-notebook-edit.txt"),
            hook(
                "NotebookEdit",
                json!({"notebook_path": ws4.join("nb.ipynb"), "cell_id": "c1",
                       "new_source": "print(2)", "edit_mode": "replace"})
            )
        );
        assert_eq!(
            q4("claude-notebook-edit.txt").as_deref(),
            Some("approve NotebookEdit: /tmp/.tmp1zYUxT/home/worktrees/demo/demo-1/nb.ipynb")
        );
        assert_eq!(
            q4("claude-web-search-panel.txt"),
            hook("WebSearch", json!({"query": "rust tmux crate"}))
        );
        assert_eq!(
            q4("claude-web-search-panel.txt").as_deref(),
            Some("approve WebSearch: rust tmux crate")
        );
        // The MCP tool's is cut short: the same question as the hook's, which says more.
        let mcp =
            hook("mcp__probe__echo", json!({"text": "hello from the model"})).expect("worded");
        for name in ["claude-mcp-tool.txt", "claude-mcp-tool-panel.txt"] {
            let seen = q4(name).expect(name);
            assert_eq!(seen, "approve mcp__probe__…", "{name}");
            assert!(abridges(&seen, &mcp), "{name}: {seen} / {mcp}");
        }
        for name in [
            "claude-notebook-edit.txt",
            "claude-web-search-panel.txt",
            "claude-mcp-tool.txt",
            "claude-mcp-tool-panel.txt",
        ] {
            assert!(terminal_question(&screen(name)).is_some(), "{name}");
        }
        // Other screens are not a tool dialog.
        for name in ["claude-trust.txt", "claude-idle.txt", "claude-ask.txt"] {
            assert_eq!(q(name), None, "{name}");
        }
    }

    /// An MCP server's name with characters a tool name cannot hold is shown as configured
    /// and put in its tools' names with `_` for them: the screen's wording still starts the
    /// hook's, and not another server's.
    #[test]
    fn an_mcp_dialog_is_cut_short_after_its_server_as_its_tools_name_it() {
        let shown = screen("claude-mcp-tool.txt").replace("probe — Echo", "my probe.v2 — Echo");
        let seen = screen_tool_question(&shown, Path::new("/w")).expect("worded");
        let mine = hook("mcp__my_probe_v2__echo", json!({"text": "x"})).expect("worded");
        let other = hook("mcp__my_probe_v2_b__echo", json!({"text": "x"})).expect("worded");
        assert!(abridges(&seen, &mine), "{seen} / {mine}");
        assert!(!abridges(&seen, &other), "{seen} / {other}");
    }

    #[test]
    fn paths_are_absolute_as_the_hook_names_them() {
        let ws = Path::new("/w");
        assert_eq!(absolute("src/a.rs", ws).as_deref(), Some("/w/src/a.rs"));
        assert_eq!(absolute("/etc/x", ws).as_deref(), Some("/etc/x"));
        assert_eq!(absolute("~/x", ws), None);
        assert_eq!(absolute("…/deep/x", ws), None);
        assert_eq!(absolute(" ", ws), None);
        assert_eq!(
            absolute("../../x", Path::new("/a/b/c")).as_deref(),
            Some("/a/x")
        );
        assert_eq!(
            absolute("./d/../e", Path::new("/a")).as_deref(),
            Some("/a/e")
        );
    }
}
