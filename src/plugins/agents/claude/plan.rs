//! The plan a plan-mode session asks the human to approve. Since Claude Code 2.1 the
//! `ExitPlanMode` call carries no plan: the model writes it to a plan file in the CLI's config
//! directory (`<config>/plans/<slug>.md`, named in its system prompt) and the approval dialog
//! shows that file. So the plan is found through the session's own log: the last `Write` or
//! `Edit` of a file in that `plans/` directory.

use std::path::{Component, Path, PathBuf};

use serde_json::{json, Value};

/// How much of a plan file is read: the question shows its first words only.
pub const PLAN_READ_MAX: u64 = 4096;

/// Whether a pending `name` call with `input` is a plan approval that names no plan.
pub fn lacks_plan(name: &str, input: &Value) -> bool {
    name == "ExitPlanMode"
        && input
            .get("plan")
            .and_then(Value::as_str)
            .is_none_or(|p| p.trim().is_empty())
}

/// The `plans/` directory of the Claude config directory that holds `log`
/// (`<config>/projects/<project>/<session>.jsonl`).
pub fn plans_dir(log: &Path) -> Option<PathBuf> {
    Some(log.parent()?.parent()?.parent()?.join("plans"))
}

/// The plan file the session wrote last according to its `log`: a `.md` file directly in
/// `plans` (nothing else, so an agent cannot make Flotilla read another file).
pub fn plan_file(log: &str, plans: &Path) -> Option<PathBuf> {
    log.lines()
        .rev()
        .filter(|l| l.contains("\"tool_use\"") && l.contains("/plans/"))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|entry| {
            entry["message"]["content"]
                .as_array()?
                .iter()
                .rev()
                .find_map(|block| written_plan(block, plans))
        })
}

/// The plan file a `Write`/`Edit` block writes, if it writes one in `plans`.
fn written_plan(block: &Value, plans: &Path) -> Option<PathBuf> {
    if block["type"] != "tool_use"
        || !matches!(block["name"].as_str(), Some("Write" | "Edit" | "MultiEdit"))
    {
        return None;
    }
    let path = Path::new(block["input"]["file_path"].as_str()?);
    let plain = path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    (plain && path.parent() == Some(plans) && path.extension().is_some_and(|e| e == "md"))
        .then(|| path.to_path_buf())
}

/// The head of the plan for the session whose log is at `log_path` with (tail) text `log`,
/// read by the hook process (blocking is fine there).
pub fn read_plan_blocking(log_path: &Path, log: &str) -> Option<String> {
    use std::io::Read;
    let file = plan_file(log, &plans_dir(log_path)?)?;
    let mut text = String::new();
    std::fs::File::open(file)
        .ok()?
        .take(PLAN_READ_MAX)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// [`read_plan_blocking`] for the server's tasks.
pub async fn read_plan(log_path: &Path, log: &str) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let file = plan_file(log, &plans_dir(log_path)?)?;
    let mut bytes = Vec::new();
    tokio::fs::File::open(file)
        .await
        .ok()?
        .take(PLAN_READ_MAX)
        .read_to_end(&mut bytes)
        .await
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// `input` with `plan` set to `plan`.
pub fn with_plan(input: &Value, plan: &str) -> Value {
    let mut out = if input.is_object() {
        input.clone()
    } else {
        json!({})
    };
    out["plan"] = json!(plan);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &str) -> String {
        json!({"type": "assistant", "message": {"content": [
            {"type": "tool_use", "name": "Write", "input": {"file_path": path, "content": "x"}}
        ]}})
        .to_string()
    }

    #[test]
    fn the_last_plan_written_in_the_config_plans_dir_is_the_plan() {
        let plans = Path::new("/h/.claude/plans");
        let log = [
            write("/h/.claude/plans/old.md"),
            write("/w/src/main.rs"),
            write("/h/.claude/plans/new.md"),
        ]
        .join("\n");
        assert_eq!(
            plan_file(&log, plans),
            Some(PathBuf::from("/h/.claude/plans/new.md"))
        );
    }

    #[test]
    fn files_outside_the_plans_dir_are_never_the_plan() {
        let plans = Path::new("/h/.claude/plans");
        for bad in [
            "/h/.claude/plans/../../secret.md",
            "/other/plans/x.md",
            "/h/.claude/plans/sub/x.md",
            "/h/.claude/plans/x.txt",
        ] {
            assert_eq!(plan_file(&write(bad), plans), None, "{bad}");
        }
    }

    #[test]
    fn plans_dir_is_beside_the_projects_dir() {
        assert_eq!(
            plans_dir(Path::new("/h/.claude/projects/-w/s.jsonl")),
            Some(PathBuf::from("/h/.claude/plans"))
        );
    }

    #[test]
    fn only_an_exit_plan_mode_without_a_plan_lacks_one() {
        assert!(lacks_plan("ExitPlanMode", &json!({})));
        assert!(lacks_plan("ExitPlanMode", &json!({"plan": " "})));
        assert!(!lacks_plan("ExitPlanMode", &json!({"plan": "1. x"})));
        assert!(!lacks_plan("Bash", &json!({})));
        assert_eq!(with_plan(&json!({}), "p")["plan"], "p");
    }
}
