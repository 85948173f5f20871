//! The real Codex CLI (npm `@openai/codex`, its interactive TUI under tmux) as a fleet agent,
//! configured as a user would (`CODEX_HOME` with a `fake` provider speaking the Responses API,
//! `tests/support/fake_openai.rs`), spawned and answered through the HTTP API: what the
//! plugin-level tests in `real_codex` check piece by piece, here end to end.
//!
//! Runs under `CI=true` (a missing CLI fails it), or wherever the CLI is found, else skips.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fake_openai::{FakeOpenAi, Step};
use crate::fleet_tmux::TmuxGuard;
use crate::helpers::{eventually, require_tool, spawn_app_with_env, Backend, TestApp};
use crate::real_claude_fleet::{notifications_with, wait_session};
use crate::real_codex::{Setup, MODEL};
use crate::receivers::Receivers;

/// The fleet with one `codex` agent in `mode`, the model scripted by `script`.
struct CodexFleet {
    app: TestApp,
    model: FakeOpenAi,
    hooks: Receivers,
    _setup: Setup,
    _tmux: TmuxGuard,
}

impl CodexFleet {
    async fn start(script: Vec<Step>, mode: &str) -> Option<CodexFleet> {
        let model = FakeOpenAi::start(script).await;
        let setup = Setup::new(&model)?;
        if !require_tool("tmux") {
            return None;
        }
        let hooks = Receivers::start().await;
        let agents = format!(
            "  codex:\n    kind: codex\n    command: [\"{bin}\"]\n    permission_mode: {mode}\n    model: {MODEL}\n    env: {{ HOME: \"{home}\", CODEX_HOME: \"{codex_home}\", FAKE_KEY: sk-fake-0123456789, GIT_AUTHOR_NAME: a, GIT_AUTHOR_EMAIL: a@example.com, GIT_COMMITTER_NAME: a, GIT_COMMITTER_EMAIL: a@example.com }}\n",
            bin = setup.bin.display(),
            home = setup.home.display(),
            codex_home = setup.codex_home.display(),
        );
        let project = format!(
            "    runtime: tmux\n    agent: codex\n{services}notifiers:\n  hook: {{ kind: webhook, url: \"{hook}\" }}\nrouting: {{ urgent: [hook], action: [hook], warning: [hook] }}\n",
            services = hooks.service_yaml(),
            hook = hooks.webhook_url(),
        );
        // Worktrees under the target dir too: Codex's sandbox helper fails under /tmp.
        let dir = tempfile::Builder::new()
            .prefix("codex-fleet-")
            .tempdir_in(setup.root())
            .expect("tempdir");
        let cli = env!("CARGO_BIN_EXE_flotilla");
        let app = spawn_app_with_env(
            Backend::Sqlite,
            &agents,
            &project,
            dir,
            &[("FLOTILLA__SERVER__CLI_PATH", cli)],
        )
        .await?;
        let tmux = TmuxGuard(flotilla::app::tmux_socket(&app.home));
        Some(CodexFleet {
            app,
            model,
            hooks,
            _setup: setup,
            _tmux: tmux,
        })
    }

    async fn screen(&self, id: &str) -> String {
        let (_, v) = self
            .app
            .get(&format!("/api/v1/sessions/{id}/output?lines=60"))
            .await;
        v["output"].as_str().unwrap_or("").to_string()
    }

    async fn event_kinds(&self, id: &str) -> Vec<String> {
        let (_, v) = self.app.get(&format!("/api/v1/sessions/{id}/events")).await;
        v["events"]
            .as_array()
            .map(|es| {
                es.iter()
                    .filter_map(|e| e["kind"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `send` as a human does; the API's answer.
    async fn send(&self, id: &str, text: &str) -> Value {
        let (code, v) = self
            .app
            .post(
                &format!("/api/v1/sessions/{id}/send"),
                json!({ "message": text }),
            )
            .await;
        assert_eq!(code, 200, "{v}");
        v
    }
}

/// Waits until the screen holds `needle`; the screen.
async fn screen_with(f: &CodexFleet, id: &str, secs: u64, needle: &str) -> String {
    eventually(secs, needle, || {
        let screen = f.screen(id);
        async move {
            let screen = screen.await;
            screen.contains(needle).then_some(screen)
        }
    })
    .await
}

/// A command the model asks to run outside Codex's read-only sandbox: the session needs input
/// with the dialog worded whole (the command and the model's reason, not just the nearest line
/// ending in `?`), one page says so, and `send y` approves it through Codex's own key.
#[actix_web::test]
async fn a_real_codex_asking_to_run_a_command_needs_input_and_a_send_approves_it() {
    let Some(f) = CodexFleet::start(
        vec![
            Step::tool(
                "exec_command",
                json!({"cmd": "printf made > out.txt", "sandbox_permissions": "require_escalated",
                    "justification": "Write out.txt?"}),
            ),
            Step::text("Wrote out.txt."),
        ],
        "suggest",
    )
    .await
    else {
        return;
    };
    let id = f
        .app
        .spawn(json!({"project": "demo", "prompt": "Write out.txt."}))
        .await;
    let waiting = wait_session(&f.app, &id, 150, "needs_input", |s| {
        s["state"] == "needs_input" && s["waiting_for"].is_string()
    })
    .await;
    let question = waiting["waiting_for"]
        .as_str()
        .expect("question")
        .to_string();
    assert!(
        question.starts_with("Would you like to run the following command?")
            && question.contains("Reason: Write out.txt?")
            && question.contains("$ printf made > out.txt")
            && question.ends_with("3. No, and tell Codex what to do differently (esc)]"),
        "{question}"
    );
    let pages = eventually(30, "the page", || {
        let n = notifications_with(&f.hooks, "waiting for input");
        async move { (!n.is_empty()).then_some(n) }
    })
    .await;
    assert!(
        pages[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("$ printf made > out.txt")),
        "{pages:#?}"
    );

    let sent = f.send(&id, "y").await;
    assert_eq!(sent["delivered"], true, "{sent}");
    // Codex says whose approval it took; whether 0.169's escalated run then returns is its
    // business (see `real_codex`).
    screen_with(
        &f,
        &id,
        30,
        "You approved codex to run printf made > out.txt",
    )
    .await;
    let back = wait_session(&f.app, &id, 60, "back at work", |s| s["state"] == "working").await;
    assert_eq!(
        back["meta"]["answered"]["question"],
        question.as_str(),
        "{back}"
    );
    assert_eq!(
        notifications_with(&f.hooks, "waiting for input").len(),
        1,
        "one page for one dialog; events: {:?}",
        f.event_kinds(&id).await
    );
}

/// An edit the model asks for (an `apply_patch` command, which Codex turns into an edit under
/// its read-only sandbox) is worded with the file it would write; `send "no, …"` refuses it
/// (Codex's `esc`), nothing is written, and the words after the no are the agent's next
/// prompt.
#[actix_web::test]
async fn a_real_codex_edit_refused_with_an_instruction_writes_nothing_and_takes_the_instruction() {
    let patch =
        "apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: hello.txt\n+hello\n*** End Patch\nEOF";
    let Some(f) = CodexFleet::start(
        vec![
            Step::tool("exec_command", json!({ "cmd": patch })),
            Step::text("Leaving it."),
        ],
        "suggest",
    )
    .await
    else {
        return;
    };
    let id = f
        .app
        .spawn(json!({"project": "demo", "prompt": "Add hello.txt."}))
        .await;
    let waiting = wait_session(&f.app, &id, 150, "needs_input", |s| {
        s["state"] == "needs_input" && s["waiting_for"].is_string()
    })
    .await;
    let question = waiting["waiting_for"]
        .as_str()
        .expect("question")
        .to_string();
    let ws = std::path::PathBuf::from(waiting["workspace"].as_str().expect("workspace"));
    assert!(
        question.starts_with("Would you like to make the following edits?")
            && question.contains("/hello.txt [1. Yes, proceed (y)"),
        "{question}"
    );

    // Refused with what to do instead: Codex's "No, and tell Codex what to do differently"
    // (esc) drops the turn and waits for the words, which start the next one.
    let sent = f.send(&id, "no, leave the readme as it is").await;
    assert_eq!(sent["delivered"], true, "{sent}");
    let turns = f
        .model
        .wait_for_turn_requests(2, Duration::from_secs(60))
        .await
        .expect("the next prompt");
    assert!(
        turns[1].to_string().contains("leave the readme as it is"),
        "{}",
        turns[1]
    );
    assert!(!ws.join("hello.txt").exists(), "a refused edit was written");
    screen_with(&f, &id, 30, "Conversation interrupted").await;
    wait_session(&f.app, &id, 60, "back at work", |s| s["state"] == "working").await;
    assert_eq!(notifications_with(&f.hooks, "waiting for input").len(), 1);
}
