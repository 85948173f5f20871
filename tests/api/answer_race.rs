//! A dialog the agent draws while the answer to the last one is still being confirmed: the
//! session looks at the agent again once the answer is recorded. Seen while the first question
//! still waited, the second was only a redraw (a redraw cannot end a wait), and a still screen
//! raises no output change afterwards, so without that second look the session said `active`
//! with a dialog on screen (OpenCode's "Always allow" step, Codex's next approval).
//!
//! The race is made certain here: the runtime's answer returns only once the session's probe has
//! seen the second dialog, i.e. while the first question is still the one recorded.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use flotilla::actors::supervisor::messages::SendToSession;

use crate::helpers::*;
use crate::hooked_tmux::{DialogFleet, Hook};

/// The first dialog; its answer's key at once draws the second, and the screen then stays still.
const TWO_DIALOGS: &str = r#"clear; printf 'Run cargo test?\n\n› 1. Yes, proceed (y)\n  2. No, and tell Codex what to do differently (esc)\n\nPress enter to confirm or esc to cancel\n'; IFS= read -rsn1 k; clear; printf 'Run git push origin HEAD?\n\n› 1. Yes, proceed (y)\n  2. No, and tell Codex what to do differently (esc)\n\nPress enter to confirm or esc to cancel\n'; sleep 600"#;

#[actix_web::test]
async fn a_dialog_drawn_while_an_answer_is_confirmed_is_asked_once_the_answer_is_recorded() {
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    // An answer is reported only after a look at the screen has seen the second dialog.
    let second_seen = Arc::new(AtomicBool::new(false));
    let seen = second_seen.clone();
    let after_output: Hook = Arc::new(move |out| {
        if out.contains("git push") {
            seen.store(true, Ordering::SeqCst);
        }
        Box::pin(async {})
    });
    let after_answer: Hook = Arc::new(move |_| {
        let seen = second_seen.clone();
        Box::pin(async move {
            eventually(
                30,
                "a look at the second dialog before the answer is recorded",
                || async { seen.load(Ordering::SeqCst).then_some(()) },
            )
            .await;
        })
    });
    let f = DialogFleet::start(
        tempfile::tempdir().expect("tempdir"),
        TWO_DIALOGS,
        BTreeMap::new(),
        Some(after_output),
        Some(after_answer),
    )
    .await;
    f.question("cargo test").await;
    let sent = f
        .sup
        .send(SendToSession {
            id: f.id.clone(),
            text: "y".into(),
            allow_restore: false,
            question: None,
        })
        .await
        .expect("mailbox")
        .expect("send");
    assert!(sent.delivered, "{sent:?}");
    // The second dialog was seen before the answer was recorded; it is asked all the same.
    let asked = f.question("git push").await;
    assert!(asked.contains("git push origin HEAD"), "{asked}");
}
