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

use crate::helpers::*;
use crate::hooked_tmux::{DialogFleet, Hook};

/// The first dialog; a key draws the second; a key to the second says what it approved.
const TWO_DIALOGS: &str = r#"clear; printf 'Run cargo test?\n\n› 1. Yes, proceed (y)\n  2. No, and tell Codex what to do differently (esc)\n\nPress enter to confirm or esc to cancel\n'; IFS= read -rsn1 k; clear; printf 'Run git push origin HEAD?\n\n› 1. Yes, proceed (y)\n  2. No, and tell Codex what to do differently (esc)\n\nPress enter to confirm or esc to cancel\n'; IFS= read -rsn1 k; clear; printf 'PUSHED\n'; sleep 600"#;

/// Holds every look at the second dialog until `release` is set; `held` once one is.
fn hold_looks_at_the_push(held: Arc<AtomicBool>, release: Arc<AtomicBool>) -> Hook {
    Arc::new(move |out| {
        let (held, release) = (held.clone(), release.clone());
        Box::pin(async move {
            if out.contains("git push") && !release.load(Ordering::SeqCst) {
                held.store(true, Ordering::SeqCst);
                eventually(60, "the look at the second dialog released", || async {
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
        Some(hold_looks_at_the_push(held.clone(), release.clone())),
        None,
    )
    .await;
    let first = f.question("cargo test").await;
    // Answered at the terminal; the agent asks the next at once, unseen by the session.
    f.key_at_the_terminal("y");
    eventually(60, "a look at the second dialog, held", || async {
        held.load(Ordering::SeqCst).then_some(())
    })
    .await;
    let s = f.session().await.expect("session");
    assert_eq!(s.session.meta["question"].as_str(), Some(first.as_str()));

    let send = |question: String| SendToSession {
        id: f.id.clone(),
        text: "y".into(),
        allow_restore: false,
        question: Some(question),
    };
    let refused = f
        .sup
        .send(send(first.clone()))
        .await
        .expect("mailbox")
        .expect_err("typed onto another question");
    assert!(
        refused.to_string().contains("now asks another question"),
        "{refused}"
    );
    let shown = screen(&f.socket, f.id.as_str());
    assert!(
        !shown.contains("PUSHED") && shown.contains("git push"),
        "the answer for `{first}` approved the next dialog:\n{shown}"
    );

    // The refusal has the session look again: the second is asked, and its answer typed.
    release.store(true, Ordering::SeqCst);
    let second = f.question("git push").await;
    let sent = f
        .sup
        .send(send(second))
        .await
        .expect("mailbox")
        .expect("send");
    assert!(sent.delivered, "{sent:?}");
    eventually(30, "the second dialog approved", || async {
        screen(&f.socket, f.id.as_str())
            .contains("PUSHED")
            .then_some(())
    })
    .await;
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
