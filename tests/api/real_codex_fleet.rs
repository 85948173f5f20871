//! The real Codex CLI (npm `@openai/codex`, its interactive TUI under tmux) as a fleet agent,
//! configured as a user would (`CODEX_HOME` with a `fake` provider speaking the Responses API,
//! `tests/support/fake_openai.rs`), spawned and answered through the HTTP API: what the
//! plugin-level tests in `real_codex` check piece by piece, here end to end.
//!
//! Runs under `CI=true` (a missing CLI fails it), or wherever the CLI is found, else skips.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fake_openai::{FakeOpenAi, Step};
use crate::helpers::eventually;
use crate::real_claude_fleet::{spawn_until_idle, wait_session};
use crate::real_codex::{Setup, MODEL};
use crate::real_fleet::{crashed_while_typing, log_mark, AgentFleet, ModelFleet};

/// The fleet with one `codex` agent.
type CodexFleet = ModelFleet<Setup>;

impl CodexFleet {
    /// The fleet with one `codex` agent in `mode`, the model scripted by `script`.
    async fn start(script: Vec<Step>, mode: &str) -> Option<CodexFleet> {
        let model = FakeOpenAi::start(script).await;
        let setup = Setup::new(&model)?;
        let agents = codex_agent_yaml(&setup, mode);
        let dir = codex_dir(&setup);
        Some(CodexFleet {
            fleet: AgentFleet::start(&agents, "codex", dir).await?,
            model,
            setup,
        })
    }
}

/// The `codex` agent's lines under `agents:`, in `mode`, as a user configures it with the
/// scratch `setup` (its model provider the fake).
pub(crate) fn codex_agent_yaml(setup: &Setup, mode: &str) -> String {
    format!(
        "  codex:\n    kind: codex\n    command: [\"{bin}\"]\n    permission_mode: {mode}\n    model: {MODEL}\n    env: {{ HOME: \"{home}\", CODEX_HOME: \"{codex_home}\", FAKE_KEY: sk-fake-0123456789, GIT_AUTHOR_NAME: a, GIT_AUTHOR_EMAIL: a@example.com, GIT_COMMITTER_NAME: a, GIT_COMMITTER_EMAIL: a@example.com }}\n",
        bin = setup.bin.display(),
        home = setup.home.display(),
        codex_home = setup.codex_home.display(),
    )
}

/// A scratch directory for the app: under the target dir, as Codex's sandbox helper fails
/// under /tmp.
pub(crate) fn codex_dir(setup: &Setup) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("codex-fleet-")
        .tempdir_in(setup.root())
        .expect("tempdir")
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
    let (id, waiting) = f.spawn_until_asked("Write out.txt.").await;
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
    let page = f.first_page().await;
    assert!(
        page["message"]
            .as_str()
            .is_some_and(|m| m.contains("$ printf made > out.txt")),
        "{page:#}"
    );

    let sent = f.send(&id, "y").await;
    assert_eq!(sent["delivered"], true, "{sent}");
    // Codex says whose approval it took; whether 0.169's escalated run then returns is its
    // business (see `real_codex`).
    f.screen_with(&id, 30, "You approved codex to run printf made > out.txt")
        .await;
    let back = wait_session(&f.app, &id, 60, "back at work", |s| s["state"] == "working").await;
    assert_eq!(
        back["meta"]["answered"]["question"],
        question.as_str(),
        "{back}"
    );
    assert_eq!(f.pages().len(), 1, "one page for one dialog");
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
    let (id, waiting) = f.spawn_until_asked("Add hello.txt.").await;
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
    f.screen_with(&id, 30, "Conversation interrupted").await;
    wait_session(&f.app, &id, 60, "back at work", |s| s["state"] == "working").await;
    assert_eq!(f.pages().len(), 1);
}

/// Two edits the model asks for in one answer (parallel tool calls): Codex asks about each in
/// turn, and each is its own wait and its own page, naming its own file; each `send y`
/// approves the dialog on screen, and both files are written.
#[actix_web::test]
async fn a_real_codexs_parallel_edits_each_ask_and_page_on_their_own() {
    let patch = |file: &str| {
        json!({"cmd": format!(
            "apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: {file}\n+{file}\n*** End Patch\nEOF"
        )})
    };
    let Some(f) = CodexFleet::start(
        vec![
            Step::tools(&[
                ("exec_command", patch("one.txt")),
                ("exec_command", patch("two.txt")),
            ]),
            Step::text("Wrote both."),
        ],
        "suggest",
    )
    .await
    else {
        return;
    };
    let (id, waiting) = f.spawn_until_asked("Add one.txt and two.txt.").await;
    f.allow_two_parallel_calls(&id, &waiting, ["one.txt", "two.txt"], |q, file| {
        q.contains(&format!("/{file} [1. Yes, proceed (y)"))
    })
    .await;
}

/// A Codex whose tmux session is gone (a reboot, a killed server) is restored into its own
/// conversation: the restore relaunches `codex resume <its session id>` in the same worktree,
/// and the next message reaches the model with the earlier turn as its history.
#[actix_web::test]
async fn a_real_codex_restored_after_its_terminal_died_resumes_its_conversation() {
    let Some(f) = CodexFleet::start(
        vec![
            Step::text("Noted: the number is 4217."),
            Step::text("It was 4217."),
        ],
        "auto-edit",
    )
    .await
    else {
        return;
    };
    let id = f
        .app
        .spawn(json!({"project": "demo", "prompt": "Remember the number 4217."}))
        .await;
    f.screen_with(&id, 90, "Noted: the number is 4217.").await;
    let before = wait_session(&f.app, &id, 60, "the first turn's end", |s| {
        s["activity"] == "idle"
    })
    .await;

    // Its terminal dies with it (as on a reboot), and it is restored.
    let panes = f.kill_terminal_and_restore(&id, "codex resume").await;
    // Codex names its session log `rollout-<time>-<session id>.jsonl`.
    let rollouts = rollout_ids(&f.setup.codex_home.join("sessions"));
    assert_eq!(rollouts.len(), 1, "{rollouts:?}");
    assert!(
        panes.contains(&rollouts[0]),
        "resumed by its id {}: {panes}",
        rollouts[0]
    );
    f.resumes_the_number(&id, &before, &f.model).await;
}

/// The session ids of the rollouts under `dir` (any depth).
fn rollout_ids(dir: &std::path::Path) -> Vec<String> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            ids.extend(rollout_ids(&p));
        } else if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
            if let Some(stem) = name.strip_suffix(".jsonl") {
                ids.push(stem[stem.len().saturating_sub(36)..].to_string());
            }
        }
    }
    ids
}

/// A turn Codex gives up on after the model API's errors waits for a human (as Claude's and
/// OpenCode's do): the session needs input saying what failed, and a message sent then starts
/// Codex's next turn. (Before, the session went idle: nobody was told.)
#[actix_web::test]
async fn a_real_codex_turn_ended_on_an_api_error_waits_for_a_human() {
    let Some(f) = CodexFleet::start(Vec::new(), "auto-edit").await else {
        return;
    };
    // Codex's own retries off (0.169 makes about 30 over 25 s by default).
    let config = f.setup.codex_home.join("config.toml");
    let mut toml = std::fs::read_to_string(&config).expect("config.toml");
    toml.push_str("request_max_retries = 0\nstream_max_retries = 0\n");
    std::fs::write(&config, toml).expect("config.toml");
    f.model.set_default(Step::error(500));
    let (id, waiting) = f.spawn_until_asked("Write out.txt.").await;
    let question = waiting["waiting_for"].as_str().unwrap_or_default();
    assert!(
        question.starts_with("the model API failed (")
            && question.ends_with("; answer to try again"),
        "{waiting}"
    );

    let before = f.model.turn_requests().len();
    f.model.set_default(Step::text("Working again."));
    let sent = f.send(&id, "Try again.").await;
    assert_eq!(sent["delivered"], true, "{sent}\n{}", f.screen(&id).await);
    let turns = f
        .model
        .wait_for_turn_requests(before + 1, Duration::from_secs(60))
        .await
        .expect("the prompt after the failure");
    assert!(
        turns[before].to_string().contains("Try again."),
        "{}",
        turns[before]
    );
    f.screen_with(&id, 60, "Working again.").await;
}

/// A one-line message that Codex's composer wraps inside its last 24 characters (what a
/// delivery looks for on screen) is submitted and confirmed like any other: it was left
/// unsubmitted (`delivered: false`). Lengths around the 200-column pane's width, 8 characters
/// apart, so that some wrap inside that end; each reaches the model once, on its own.
#[actix_web::test]
async fn messages_wrapped_in_codexs_composer_are_each_submitted_once() {
    let script = (0..10).map(|_| Step::text("Ok.")).collect();
    let Some(f) = CodexFleet::start(script, "auto-edit").await else {
        return;
    };
    let id = spawn_until_idle(&f.app, "Say ok.").await;
    let words = 21..28;
    for n in words.clone() {
        let message: String = (0..n)
            .map(|i| format!("w{n}x{i:03} "))
            .chain([format!("END-OF-{n}")])
            .collect();
        let v = f.send(&id, &message).await;
        assert_eq!(v["delivered"], true, "{n} words: {v}");
        let end = format!("END-OF-{n}");
        eventually(60, "the message reaches the model", || async {
            f.model.request_contains(&end).then_some(())
        })
        .await;
        wait_session(&f.app, &id, 60, "the turn ends", |s| {
            s["activity"] == "idle"
        })
        .await;
    }
    // None ran into the next.
    let sent: Vec<String> = f.model.requests().iter().map(Value::to_string).collect();
    for n in words {
        assert!(
            !sent.iter().any(|t| t.contains(&format!("END-OF-{n}w"))),
            "the next message was typed onto the one of {n} words"
        );
    }
}

/// A long message Codex took just before a crash, before Flotilla recorded it delivered, is
/// not typed a second time when the next send finishes the open delivery. Codex's composer
/// shows such a paste as a placeholder (`[Pasted Content 3717 chars]`): what its transcript
/// shows once the message is taken is what the resume must recognise.
#[actix_web::test]
async fn a_long_message_codex_took_before_a_crash_is_not_typed_again() {
    const END: &str = "LONG-MESSAGE-END";
    let script = vec![
        Step::text("Ok."),
        Step::text("Read it."),
        Step::text("Done."),
    ];
    let Some(f) = CodexFleet::start(script, "auto-edit").await else {
        return;
    };
    let id = spawn_until_idle(&f.app, "Say ok.").await;
    let mark = log_mark(&f.app, &id);
    let long: String = (1..=60)
        .map(|i| format!("Line {i:03}: one more step of a long instruction to paste\n"))
        .chain((0..24).map(|i| format!("word{i:03} ")))
        .chain([END.to_string()])
        .collect();
    let v = f.send(&id, &long).await;
    assert_eq!(v["delivered"], true, "{v}");
    eventually(60, "the long message reaches the model", || async {
        f.model.request_contains(END).then_some(())
    })
    .await;
    wait_session(&f.app, &id, 60, "its turn ends", |s| {
        s["activity"] == "idle"
    })
    .await;

    let ins = crashed_while_typing(&f.app, &id, &long, mark).await;
    let v = f.send(&id, "SENT-AFTER-THE-CRASH").await;
    assert_eq!(v["delivered"], true, "{v}");
    eventually(60, "the next message reaches the model", || async {
        f.model
            .request_contains("SENT-AFTER-THE-CRASH")
            .then_some(())
    })
    .await;
    // Each request carries the conversation so far: none may hold the message twice.
    let counts: Vec<usize> = f
        .model
        .turn_requests()
        .iter()
        .map(|q| q.to_string().matches(END).count())
        .collect();
    assert!(
        counts.iter().all(|&n| n <= 1) && counts.last() == Some(&1),
        "the long message was typed once, per turn: {counts:?} in {:#?}",
        f.model
            .requests_full()
            .iter()
            .map(|r| (
                r.side,
                r.body
                    .to_string()
                    .chars()
                    .rev()
                    .take(400)
                    .collect::<String>()
            ))
            .collect::<Vec<_>>()
    );
    let ins = f.app.store.load_instruction(ins).await.expect("load");
    assert_eq!(
        ins.state,
        flotilla::store::InstructionState::Delivered,
        "{ins:?}"
    );
}
