//! An answer is typed only onto the question its sender was shown. Someone at the terminal
//! answers the agent's dialog and the agent at once asks the next; until the session looks at
//! the screen again it still records the first. An answer sent for the first in that moment
//! (a phone's reply, `flotilla send`) must not land on the second, which nobody has read: the
//! same `y` would approve a `git push` instead of a `cargo test`.
//!
//! The moment is made certain here: the session's looks at the second dialog are held until the
//! answer for the first is refused. A screen's question is not taken while another waits (a
//! redraw cannot end a wait), so the refusal itself has the session take the question on
//! screen as the one that waits now.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use flotilla::actors::supervisor::messages::SendToSession;
use flotilla::config::{AgentKind, AgentSettings};
use flotilla::plugins::agents::ClaudeCodeAgent;

use crate::helpers::*;
use crate::hooked_tmux::{DialogFleet, Hook};

/// The first dialog; a key draws the second; a key to the second has it print `PUSHED`.
const TWO_DIALOGS: &str = r#"clear; printf 'Run cargo test?\n\n› 1. Yes, proceed (y)\n  2. No, and tell Codex what to do differently (esc)\n\nPress enter to confirm or esc to cancel\n'; IFS= read -rsn1 k; clear; printf 'Run git push origin HEAD?\n\n› 1. Yes, proceed (y)\n  2. No, and tell Codex what to do differently (esc)\n\nPress enter to confirm or esc to cancel\n'; IFS= read -rsn1 k; clear; printf 'PUSHED\n'; sleep 600"#;

/// Holds every look at a screen showing `needle` until `release` is set; `held` once one is.
fn hold_looks_at(needle: &'static str, held: Arc<AtomicBool>, release: Arc<AtomicBool>) -> Hook {
    Arc::new(move |out| {
        let (held, release) = (held.clone(), release.clone());
        Box::pin(async move {
            if out.contains(needle) && !release.load(Ordering::SeqCst) {
                held.store(true, Ordering::SeqCst);
                eventually(60, "the held look released", || async {
                    release.load(Ordering::SeqCst).then_some(())
                })
                .await;
            }
        })
    })
}

fn screen(socket: &str, target: &str) -> String {
    let out = std::process::Command::new("tmux")
        .args(["-L", socket, "capture-pane", "-p", "-t", target])
        .output()
        .expect("tmux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[actix_web::test]
async fn an_answer_for_a_dialog_answered_at_the_terminal_is_not_typed_onto_the_next() {
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let (held, release) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let f = DialogFleet::start(
        tempfile::tempdir().expect("tempdir"),
        TWO_DIALOGS,
        BTreeMap::new(),
        Some(hold_looks_at("git push", held.clone(), release.clone())),
        None,
    )
    .await;
    let first = f.question("cargo test").await;
    // Answered at the terminal; the agent asks the next at once, unseen by the session.
    answered_at_the_terminal(&f, "y", &held).await;
    let s = f.session().await.expect("session");
    assert_eq!(s.session.meta["question"].as_str(), Some(first.as_str()));

    refused_then_answered(&f, &first, "git push", "PUSHED", release).await;
}

/// `key` typed at the terminal, and a look at the next dialog it brings held.
async fn answered_at_the_terminal(f: &DialogFleet, key: &str, held: &AtomicBool) {
    f.key_at_the_terminal(key);
    eventually(60, "a look at the next dialog, held", || async {
        held.load(Ordering::SeqCst).then_some(())
    })
    .await;
}

/// A `1` sent for `first` is refused, as the agent's screen asks another question now (`next`,
/// whose looks are held until `release`); once released, the session asks `next` and its answer
/// is typed: the agent then prints `done`.
async fn refused_then_answered(
    f: &DialogFleet,
    first: &str,
    next: &str,
    done: &str,
    release: Arc<AtomicBool>,
) {
    let send = |question: String| SendToSession {
        id: f.id.clone(),
        text: "1".into(),
        allow_restore: false,
        question: Some(question),
    };
    let refused = f
        .sup
        .send(send(first.to_string()))
        .await
        .expect("mailbox")
        .expect_err("typed onto another question");
    assert!(
        refused.to_string().contains("now asks another question"),
        "{refused}"
    );
    let shown = screen(&f.socket, f.id.as_str());
    assert!(
        !shown.contains(done) && shown.contains(next),
        "the answer for `{first}` answered the next dialog:\n{shown}"
    );

    // The refusal has the session look again: the second is asked, and its answer typed.
    release.store(true, Ordering::SeqCst);
    let second = f.question(next).await;
    let sent = f
        .sup
        .send(send(second))
        .await
        .expect("mailbox")
        .expect("send");
    assert!(sent.delivered, "{sent:?}");
    eventually(30, "the second dialog answered", || async {
        screen(&f.socket, f.id.as_str())
            .contains(done)
            .then_some(())
    })
    .await;
}

/// Claude Code's `AskUserQuestion` dialog, drawn as 2.1.328 draws it
/// (`tests/fixtures/screens/claude-ask.txt`).
fn claude_ask_screen(header: &str, question: &str, a: &str, b: &str) -> String {
    let rule = "─".repeat(60);
    format!(
        "{rule}\n ☐ {header}\n\n{question}\n\n❯ 1. {a}\n     one\n  2. {b}\n     two\n  \
         3. Type something.\n{rule}\n  4. Chat about this\n\nEnter to select · ↑/↓ to navigate · \
         Esc to cancel\n"
    )
}

/// Two `AskUserQuestion` calls in a row, read from the screen by Claude Code's plugin (no hook
/// or log tells of them): the questions the dialogs show tell them apart, as a tool dialog's
/// call does.
#[actix_web::test]
async fn an_answer_for_a_claude_question_answered_at_the_terminal_is_not_typed_onto_the_next() {
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let (held, release) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let hold = hold_looks_at("Which size", held.clone(), release.clone());
    let f = claude_asking_colour_then_size(Some(hold)).await;
    let first = f.question("Which colour").await;
    answered_at_the_terminal(&f, "1", &held).await;
    refused_then_answered(&f, &first, "Which size", "SIZE CHOSEN 1", release).await;
}

/// Claude Code's plugin on a scripted screen: an `AskUserQuestion` dialog for the button's
/// colour, a key, then one for its size, a key, then `SIZE CHOSEN <key>`.
async fn claude_asking_colour_then_size(after_output: Option<Hook>) -> DialogFleet {
    let dir = tempfile::tempdir().expect("tempdir");
    let colour = dir.path().join("colour.txt");
    let size = dir.path().join("size.txt");
    let ask = |path: &std::path::Path, header, question, a, b| {
        std::fs::write(path, claude_ask_screen(header, question, a, b)).expect("screen");
    };
    ask(
        &colour,
        "Colour",
        "Which colour should the button be?",
        "Red",
        "Blue",
    );
    ask(
        &size,
        "Size",
        "Which size should the button be?",
        "Small",
        "Large",
    );
    let script = format!(
        "clear; cat '{}'; IFS= read -rsn1 k; clear; cat '{}'; IFS= read -rsn1 k; clear; \
         printf 'SIZE CHOSEN %s\\n' \"$k\"; sleep 600",
        colour.display(),
        size.display()
    );
    let mut settings = AgentSettings::built_in(AgentKind::ClaudeCode);
    settings.command = vec!["bash".into(), "-c".into(), script, "claude".into()];
    let agent = Arc::new(ClaudeCodeAgent::new("dialogs".into(), settings));
    DialogFleet::start_as(dir, agent, after_output, None).await
}

/// The same two questions, unheld: the second, drawn at once, is asked without an answer
/// being refused first.
#[actix_web::test]
async fn a_claude_question_answered_at_the_terminal_and_the_next_drawn_at_once_is_asked() {
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let f = claude_asking_colour_then_size(None).await;
    f.question("Which colour").await;
    f.key_at_the_terminal("1");
    let second = f.question("Which size").await;
    assert!(
        second.contains("Which size should the button be?"),
        "{second}"
    );
}

/// Answered at the terminal, the agent draws the next dialog at once: no work shows between,
/// and the screen's reading of another question does not replace the one that waits unless
/// it settles on a question the agent's plugin tells apart. It does here, so the human is
/// asked the next question without first having an answer refused.
#[actix_web::test]
async fn a_dialog_answered_at_the_terminal_and_the_next_drawn_at_once_is_asked() {
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let f = DialogFleet::start(
        tempfile::tempdir().expect("tempdir"),
        TWO_DIALOGS,
        BTreeMap::new(),
        None,
        None,
    )
    .await;
    f.question("cargo test").await;
    f.key_at_the_terminal("y");
    let second = f.question("git push").await;
    assert!(second.contains("git push origin HEAD"), "{second}");
    let events = f
        .store
        .session_events(&f.id, 0, 1000)
        .await
        .expect("events");
    let waits = events
        .iter()
        .filter(|e| e.kind == "agent.waiting_input")
        .count();
    assert_eq!(waits, 2, "{events:#?}");
}
