//! A look at the agent that began before a hook reported its next dialog: what it saw ended
//! the last wait (the agent moved on from it), not the one that began meanwhile. Acting on it
//! ended the fresh wait, and a failed check's instruction was then typed onto the dialog being
//! drawn (a real Claude Code under load: its log showed the last dialog's command running
//! while its hook already reported the next).
//!
//! The race is made certain here: the look's capture of the screen (the agent at work after
//! the first dialog) is held until the next dialog's hook report is recorded.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use flotilla::actors::supervisor::ApplyTo;
use flotilla::domain::machine::{EventKind, ReportedState};
use flotilla::store::*;

use crate::helpers::*;
use crate::hooked_tmux::{DialogFleet, Hook};

/// The first dialog; a key typed at the terminal (not through Flotilla) sets the agent to
/// work; once `$NEXT` exists it draws the next dialog.
const TWO_DIALOGS: &str = r#"clear; printf 'Run cargo test?\n\n› 1. Yes, proceed (y)\n  2. No, and tell Codex what to do differently (esc)\n\nPress enter to confirm or esc to cancel\n'; IFS= read -rsn1 k; clear; printf 'running cargo test\nworking\n'; while [ ! -f "$NEXT" ]; do sleep 0.05; done; clear; printf 'Run git push origin HEAD?\n\n› 1. Yes, proceed (y)\n  2. No, and tell Codex what to do differently (esc)\n\nPress enter to confirm or esc to cancel\n'; sleep 600"#;

/// What the test and the held capture tell each other.
#[derive(Default)]
struct Gate {
    /// A capture of the agent at work is held.
    held: AtomicBool,
    /// Let it go.
    release: AtomicBool,
    /// Captures showing the next dialog, and captures after the release.
    next_seen: AtomicUsize,
    after_release: AtomicUsize,
}

/// Holds the first capture of the agent at work until the test releases it; counts the
/// captures of the next dialog and those after the release.
fn hold_the_look_at_work(gate: Arc<Gate>) -> Hook {
    Arc::new(move |out| {
        let gate = gate.clone();
        Box::pin(async move {
            if gate.release.load(Ordering::SeqCst) {
                gate.after_release.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if out.contains("git push") {
                gate.next_seen.fetch_add(1, Ordering::SeqCst);
            }
            if out.contains("working") && !gate.held.swap(true, Ordering::SeqCst) {
                eventually(60, "the held capture released", || async {
                    gate.release.load(Ordering::SeqCst).then_some(())
                })
                .await;
            }
        })
    })
}

#[actix_web::test]
async fn a_look_begun_before_the_next_dialogs_hook_report_does_not_end_its_wait() {
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let next = dir.path().join("next");
    let gate = Arc::new(Gate::default());
    let f = DialogFleet::start(
        dir,
        TWO_DIALOGS,
        BTreeMap::from([("NEXT".into(), next.to_string_lossy().into_owned())]),
        Some(hold_the_look_at_work(gate.clone())),
        None,
    )
    .await;
    f.question("cargo test").await;
    // Someone at the terminal answers; the look at the agent at work is held.
    f.key_at_the_terminal("y");
    eventually(60, "a look at the agent at work, held", || async {
        gate.held.load(Ordering::SeqCst).then_some(())
    })
    .await;
    // Meanwhile the agent draws its next dialog and its hook reports it.
    std::fs::write(&next, "").expect("next");
    let hook = EventKind::AgentReported {
        state: ReportedState::NeedsInput,
        note: Some("approve Bash: git push origin HEAD".into()),
        pr: None,
        hook: true,
    };
    f.sup
        .send(ApplyTo {
            id: f.id.clone(),
            event: hook,
        })
        .await
        .expect("mailbox")
        .expect("applied");
    eventually(60, "the next question recorded and drawn", || async {
        let s = f.session().await?;
        (s.session.state == SessionState::NeedsInput
            && s.session.meta["question"].as_str()?.contains("git push")
            && gate.next_seen.load(Ordering::SeqCst) > 0)
            .then_some(())
    })
    .await;
    let mark = f.store.last_event_id().await.expect("events");
    gate.release.store(true, Ordering::SeqCst);
    // The held look is over once the agent was looked at again after it.
    eventually(60, "a look after the held one", || async {
        (gate.after_release.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    let kinds = kinds_since(&f, mark).await;
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    assert!(
        !kinds.contains(&"agent.active"),
        "the held look ended the next wait: {kinds:?}"
    );
    let s = f.session().await.expect("session");
    assert_eq!(s.session.state, SessionState::NeedsInput);
    assert!(
        s.session.meta["question"]
            .as_str()
            .is_some_and(|q| q.contains("git push")),
        "{:?}",
        s.session.meta
    );
}

/// One line of a Claude Code log: a content block of the model's response `msg`, a `Bash`
/// call `tool` of `command`, logged at `at`.
fn claude_call(msg: &str, tool: &str, command: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    serde_json::json!({
        "type": "assistant",
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "message": {"id": msg, "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "tool_use", "id": tool, "name": "Bash",
                "input": {"command": command, "description": command}}],
            "stop_reason": null, "usage": {"input_tokens": 4, "output_tokens": 20}},
    })
    .to_string()
}

/// Appends `line` to the log at `path`.
fn log_line(path: &std::path::Path, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log");
    writeln!(f, "{line}").expect("append");
}

/// A hook counting the captures of the screen (each a look at the agent) once `counting` is
/// set: the count, the switch, the hook.
fn counting_looks() -> (Arc<AtomicUsize>, Arc<AtomicBool>, Hook) {
    let looks = Arc::new(AtomicUsize::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let hook: Hook = {
        let (looks, counting) = (looks.clone(), counting.clone());
        Arc::new(move |_| {
            if counting.load(Ordering::SeqCst) {
                looks.fetch_add(1, Ordering::SeqCst);
            }
            Box::pin(async {})
        })
    };
    (looks, counting, hook)
}

/// The kinds of the session's events after event `mark`, oldest first.
async fn kinds_since(f: &DialogFleet, mark: i64) -> Vec<String> {
    let events = f
        .store
        .session_events(&f.id, mark, 100)
        .await
        .expect("events");
    events.into_iter().map(|e| e.kind).collect()
}

/// Claude Code's hook reports the session's dialog about the Bash command `command`.
async fn hook_reports(f: &DialogFleet, command: &str) {
    f.sup
        .send(ApplyTo {
            id: f.id.clone(),
            event: EventKind::AgentReported {
                state: ReportedState::NeedsInput,
                note: Some(format!("approve Bash: {command}")),
                pr: None,
                hook: true,
            },
        })
        .await
        .expect("mailbox")
        .expect("applied");
}

/// A fleet whose one session runs Claude Code's plugin on the scripted screen `script` (a
/// file `dir` names can drive it), with `after_output` run after each capture: the fleet,
/// the Claude log of the session's workspace, begun with the prompt "Commit twice." two
/// seconds ago, and that time.
async fn claude_on_screen(
    dir: tempfile::TempDir,
    script: String,
    after_output: Option<Hook>,
) -> (
    DialogFleet,
    std::path::PathBuf,
    chrono::DateTime<chrono::Utc>,
) {
    let (f, log) = claude_without_log(dir, script, after_output).await;
    let started = chrono::Utc::now() - chrono::TimeDelta::seconds(2);
    log_line(
        &log,
        &serde_json::json!({"type": "user", "timestamp": started.to_rfc3339(),
            "message": {"role": "user", "content": "Commit twice."}})
        .to_string(),
    );
    (f, log, started)
}

/// [`claude_on_screen`] before Claude wrote its log: the fleet and where the log will be.
async fn claude_without_log(
    dir: tempfile::TempDir,
    script: String,
    after_output: Option<Hook>,
) -> (DialogFleet, std::path::PathBuf) {
    use flotilla::config::{AgentKind, AgentSettings};
    use flotilla::plugins::agents::ClaudeCodeAgent;

    let config = dir.path().join("claude");
    let mut settings = AgentSettings::built_in(AgentKind::ClaudeCode);
    settings.command = vec!["bash".into(), "-c".into(), script, "claude".into()];
    settings.env.insert(
        "CLAUDE_CONFIG_DIR".into(),
        config.to_string_lossy().into_owned(),
    );
    let agent = ClaudeCodeAgent::new("dialogs".into(), settings);
    let f = DialogFleet::start_as(dir, Arc::new(agent.clone()), after_output, None).await;
    let ws = eventually(60, "the session at work", || async {
        let s = f.session().await?;
        s.session.workspace.clone().map(std::path::PathBuf::from)
    })
    .await;
    let project = agent.project_dir(&ws).expect("project dir");
    std::fs::create_dir_all(&project).expect("project dir");
    (
        f,
        project.join("0b0d6c1e-1111-4222-8333-444455556666.jsonl"),
    )
}

/// Two calls in one response (parallel tool use): Claude Code asks about the first as soon as
/// its block is complete, so under load the second block can be logged after the first
/// call's hook was reported, before the dialog is drawn. That entry is the same response, not
/// work since the dialog: the wait stands (it once went back to `working`, and the same
/// dialog was paged twice). The answer's result, logged after, ends it.
#[actix_web::test]
async fn a_parallel_call_logged_after_the_first_calls_hook_report_does_not_end_its_wait() {
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let poke = dir.path().join("poke");
    // The spinner while the dialog is not drawn yet; each poke adds output (a look follows).
    let script = format!(
        "clear; printf 'Working...\\n'; while :; do if [ -f '{p}' ]; then rm -f '{p}'; \
         printf '.'; fi; sleep 0.05; done",
        p = poke.display()
    );
    // Captures of the screen since the response's second call was logged.
    let (looks, counting, after_output) = counting_looks();
    let (f, log, started) = claude_on_screen(dir, script, Some(after_output)).await;
    log_line(
        &log,
        &claude_call(
            "msg_par",
            "toolu_1",
            "git commit -m one",
            started + chrono::TimeDelta::seconds(1),
        ),
    );
    // The first call's hook reports its dialog.
    hook_reports(&f, "git commit -m one").await;
    let waiting = f.question("git commit -m one").await;
    let since = f
        .session()
        .await
        .and_then(|s| s.session.activity_at)
        .expect("the wait's time");
    let mark = f.store.last_event_id().await.expect("events");
    // The response's second call, logged after the report.
    counting.store(true, Ordering::SeqCst);
    log_line(
        &log,
        &claude_call(
            "msg_par",
            "toolu_2",
            "git commit -m two",
            since + chrono::TimeDelta::milliseconds(20),
        ),
    );
    // Two looks at the agent since: the first read the log; the second, a poke later, began
    // after the first was over.
    for n in 1..=2 {
        std::fs::write(&poke, "").expect("poke");
        eventually(60, "a look at the agent", || async {
            (looks.load(Ordering::SeqCst) >= n).then_some(())
        })
        .await;
    }
    let kinds = kinds_since(&f, mark).await;
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    assert!(
        !kinds.contains(&"agent.active"),
        "the response's second call ended the first call's wait: {kinds:?}"
    );
    let s = f.session().await.expect("session");
    assert_eq!(s.session.state, SessionState::NeedsInput);
    assert_eq!(s.session.meta["question"].as_str(), Some(waiting.as_str()));

    // Answered at the terminal: the call's result is logged, and the wait ends on it.
    log_line(
        &log,
        &serde_json::json!({"type": "user",
            "timestamp": (chrono::Utc::now() + chrono::TimeDelta::milliseconds(20))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "message": {"role": "user", "content": [{"type": "tool_result",
                "tool_use_id": "toolu_1", "content": "", "is_error": false}]}})
        .to_string(),
    );
    std::fs::write(&poke, "").expect("poke");
    eventually(60, "back to work on the call's result", || async {
        let s = f.session().await?;
        (s.session.state == SessionState::Working).then_some(())
    })
    .await;
}

/// Two calls in one response, both pending, and a dialog on screen that does not say which
/// call it asks about: the question is worded from the log's first unanswered call, the one
/// Claude Code asks about first (it once named the newest).
#[actix_web::test]
async fn of_two_pending_parallel_calls_the_question_names_the_first() {
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ask = dir.path().join("ask");
    // At work until `ask` exists; then a dialog that names no call.
    let script = format!(
        "clear; printf 'Working...\\n'; while [ ! -f '{a}' ]; do sleep 0.05; done; clear; \
         printf 'Do you want to proceed?\\n❯ 1. Yes\\n  2. No\\n'; sleep 600",
        a = ask.display()
    );
    let (f, log, started) = claude_on_screen(dir, script, None).await;
    for (n, (tool, command)) in [
        ("toolu_1", "git commit -m one"),
        ("toolu_2", "git commit -m two"),
    ]
    .into_iter()
    .enumerate()
    {
        let at = started + chrono::TimeDelta::milliseconds(500 * (n as i64 + 1));
        log_line(&log, &claude_call("msg_par", tool, command, at));
    }
    std::fs::write(&ask, "").expect("ask");
    let q = f.question("git commit").await;
    assert!(
        q.contains("git commit -m one") && !q.contains("git commit -m two"),
        "{q}"
    );
}

/// A first turn's dialog reported by its hook before Claude Code wrote any log, while the
/// screen still shows the spinner (the dialog is drawn a moment later): the screen's work is
/// not newer evidence than the hook's wait, so the wait stands and the question is paged once.
/// (It went back to `working` 27 ms after the report, then was asked and paged again: the
/// 31-for-30 count of `real_agent_latency`, and a real Claude fleet's double page.) The log's
/// call result, written after, ends it.
#[actix_web::test]
async fn a_first_turns_hook_report_stands_while_only_the_spinner_shows() {
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // A spinner that never stops: output changes, so the session looks again and again.
    let script =
        "clear; printf 'Working...\\n'; while :; do printf '.'; sleep 0.1; done".to_string();
    let (looks, counting, after_output) = counting_looks();
    let (f, log) = claude_without_log(dir, script, Some(after_output)).await;
    let mark = f.store.last_event_id().await.expect("events");
    hook_reports(&f, "git commit -m one").await;
    let waiting = f.question("git commit -m one").await;
    counting.store(true, Ordering::SeqCst);
    eventually(60, "three looks at the spinner", || async {
        (looks.load(Ordering::SeqCst) >= 3).then_some(())
    })
    .await;
    let kinds = kinds_since(&f, mark).await;
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    assert!(
        !kinds.contains(&"agent.active") && !kinds.contains(&"agent.waiting_input"),
        "the spinner ended the hook's wait: {kinds:?}"
    );
    let s = f.session().await.expect("session");
    assert_eq!(s.session.state, SessionState::NeedsInput);
    assert_eq!(s.session.meta["question"].as_str(), Some(waiting.as_str()));

    // Answered at the terminal: Claude logs the call and its result, and the wait ends.
    let now = chrono::Utc::now();
    log_line(
        &log,
        &claude_call("msg_1", "toolu_1", "git commit -m one", now),
    );
    log_line(
        &log,
        &serde_json::json!({"type": "user",
            "timestamp": (now + chrono::TimeDelta::milliseconds(20))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "message": {"role": "user", "content": [{"type": "tool_result",
                "tool_use_id": "toolu_1", "content": "", "is_error": false}]}})
        .to_string(),
    );
    eventually(60, "back to work on the call's result", || async {
        let s = f.session().await?;
        (s.session.state == SessionState::Working).then_some(())
    })
    .await;
}

/// The same first turn, its log never found (a `CLAUDE_CONFIG_DIR` Flotilla does not see):
/// once the screen has shown the hook's dialog, the screen moving on is the dialog answered
/// at the terminal, and the session goes back to work (it stayed `needs_input` until Claude's
/// next report). The spinner before the dialog still does not end the wait, and the dialog is
/// not paged twice.
#[actix_web::test]
async fn a_hook_reported_dialog_answered_at_the_terminal_ends_its_wait_without_a_log() {
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (draw, answered) = (dir.path().join("draw"), dir.path().join("answered"));
    // The spinner until `draw`; the dialog until `answered`; then work again.
    let script = format!(
        "clear; printf 'Working...\\n'; while [ ! -f '{d}' ]; do printf '.'; sleep 0.1; done; \
         clear; printf 'Do you want to proceed?\\n❯ 1. Yes\\n  2. No\\n'; \
         while [ ! -f '{a}' ]; do sleep 0.05; done; \
         clear; printf 'Committing...\\n'; while :; do printf '.'; sleep 0.1; done",
        d = draw.display(),
        a = answered.display()
    );
    let dialogs = Arc::new(AtomicUsize::new(0));
    let seen: Hook = {
        let dialogs = dialogs.clone();
        Arc::new(move |screen: String| {
            if screen.contains("Do you want to proceed?") {
                dialogs.fetch_add(1, Ordering::SeqCst);
            }
            Box::pin(async {})
        })
    };
    let (f, _log) = claude_without_log(dir, script, Some(seen)).await;
    let mark = f.store.last_event_id().await.expect("events");
    hook_reports(&f, "git commit -m one").await;
    f.question("git commit -m one").await;
    std::fs::write(&draw, "").expect("draw");
    eventually(60, "a look at the dialog", || async {
        (dialogs.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    let s = f.session().await.expect("session");
    assert_eq!(s.session.state, SessionState::NeedsInput);
    std::fs::write(&answered, "").expect("answered");
    eventually(60, "back to work once the dialog is gone", || async {
        let s = f.session().await?;
        (s.session.state == SessionState::Working).then_some(())
    })
    .await;
    let kinds = kinds_since(&f, mark).await;
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "agent.reported").count(),
        1,
        "{kinds:?}"
    );
    assert!(
        !kinds.contains(&"agent.waiting_input"),
        "the dialog was asked again: {kinds:?}"
    );
    assert!(kinds.contains(&"agent.active"), "{kinds:?}");
}
