//! Claude Code's own files as Flotilla prepares and reads them: the hook settings it launches
//! with, the trust and API-key answers in `~/.claude.json`, and the first-run set-up's failure.

use std::path::Path;

use serde_json::Value;

use crate::config::PermissionMode;

/// `--settings` for a launch: hooks that tell Flotilla the moment Claude shows a permission
/// dialog or a notification that it waits for the human (`flotilla hook claude-code`, which
/// reads the event from stdin and reports `needs_input` with what is asked).
pub fn hook_settings(cli: &Path) -> Value {
    let quoted = format!("'{}'", cli.to_string_lossy().replace('\'', r"'\''"));
    let hook = serde_json::json!([{
        "matcher": "*",
        "hooks": [{"type": "command", "command": format!("{quoted} hook claude-code"), "timeout": 10}]
    }]);
    serde_json::json!({"hooks": {"PermissionRequest": hook, "Notification": hook}})
}

/// The `--settings` a launch passes, if any: the hooks (when Flotilla knows its own binary)
/// and, for `permissionless`, `skipDangerousModePermissionPrompt`. The operator chose to skip
/// permissions by configuring that mode; without it, every launch stops on Claude Code's
/// "Bypass Permissions mode … Yes, I accept" dialog, which the CLI also skips when the consent
/// comes in with `--settings` (it is the flag's settings source; nothing is written to the
/// user's files).
pub(super) fn launch_settings(cli: Option<&Path>, mode: PermissionMode) -> Option<Value> {
    let mut settings = cli.map_or_else(|| serde_json::json!({}), hook_settings);
    if mode == PermissionMode::Permissionless {
        settings["skipDangerousModePermissionPrompt"] = Value::Bool(true);
    }
    settings
        .as_object()
        .is_some_and(|o| !o.is_empty())
        .then_some(settings)
}

/// Records in Claude Code's `.claude.json` what the user already decided by configuring
/// Flotilla: the project's repository is trusted (its worktrees inherit that, so no "Is this a
/// project you trust?" per spawn), and the API key the agent's configured environment carries
/// is approved (by its last 20 characters, as Claude Code stores it), unless the user rejected
/// it. Other keys are kept; nothing is written when nothing changes; a missing file or one that
/// is not JSON is left alone.
///
/// # Errors
/// When the file cannot be read or replaced.
pub fn trust_workspace(file: &Path, repo: &Path, api_key: Option<&str>) -> std::io::Result<()> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        // No configuration yet: Claude Code's own first-run set-up comes first (the spawn
        // preflight says so); a file made here would only change which screen it shows.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    match trusted(file, &text, &repo.to_string_lossy(), api_key) {
        Some(out) => crate::plugins::write_atomically(file, out.as_bytes()),
        None => Ok(()),
    }
}

/// [`trust_workspace`]'s edit of the text of `.claude.json` (at `file`, for the log): the new
/// text, or `None` when nothing changes or the text is not a JSON object (left alone).
pub fn trusted(file: &Path, text: &str, repo: &str, api_key: Option<&str>) -> Option<String> {
    let mut doc: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            tracing::warn!(file = %file.display(), "not a JSON object; Claude Code's trust left unset");
            return None;
        }
    };
    let before = doc.clone();
    let path = repo.to_string();
    if !doc["projects"].is_object() {
        doc["projects"] = serde_json::json!({});
    }
    if !doc["projects"][&path].is_object() {
        doc["projects"][&path] = serde_json::json!({});
    }
    doc["projects"][&path]["hasTrustDialogAccepted"] = Value::Bool(true);
    if let Some(key) = api_key.filter(|k| !k.is_empty()) {
        let tail: String = {
            let chars: Vec<char> = key.chars().collect();
            chars[chars.len().saturating_sub(20)..].iter().collect()
        };
        let responses = &mut doc["customApiKeyResponses"];
        if !responses.is_object() {
            *responses = serde_json::json!({"approved": [], "rejected": []});
        }
        let listed = |list: &Value| {
            list.as_array()
                .is_some_and(|l| l.iter().any(|v| v.as_str() == Some(tail.as_str())))
        };
        if !listed(&responses["rejected"]) && !listed(&responses["approved"]) {
            if !responses["approved"].is_array() {
                responses["approved"] = serde_json::json!([]);
            }
            if let Some(a) = responses["approved"].as_array_mut() {
                a.push(Value::String(tail));
            }
        }
    }
    (doc != before).then(|| serde_json::to_string_pretty(&doc).unwrap_or_default())
}

/// What Claude Code 2.1.328's first-run set-up prints when it exits 1 before any dialog: its
/// set-up begins with a connectivity check of the vendor's own endpoints (not
/// `ANTHROPIC_BASE_URL`), and offline it shows "Unable to connect to Anthropic services",
/// the failure ("Failed to connect to api.anthropic.com: ENOTFOUND") and advice about
/// networks and countries, then exits.
pub(super) const FIRST_RUN_OFFLINE: &str = "Unable to connect to Anthropic services";

/// The cause of an exit during Claude Code's first-run set-up, in words, from its last
/// output: the set-up screen's own failure line and the fix (`state_file`: where the set-up
/// is recorded). `None` for any other output.
pub fn first_run_failure(output: &str, state_file: Option<&Path>) -> Option<String> {
    let mut lines = output.lines().map(str::trim).filter(|l| !l.is_empty());
    lines.find(|l| l.contains(FIRST_RUN_OFFLINE))?;
    let detail = lines
        .next()
        .filter(|l| !l.starts_with("Check your internet"))
        .map(|l| format!(" ({l})"))
        .unwrap_or_default();
    let fix = match state_file {
        Some(f) => format!(
            "run `claude` once in a terminal for this HOME, or set hasCompletedOnboarding in {}",
            f.display()
        ),
        None => "run `claude` once in a terminal for this HOME".to_string(),
    };
    Some(format!(
        "claude's first-run set-up could not finish: {FIRST_RUN_OFFLINE}{detail}; {fix}"
    ))
}
