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
    let events = f
        .store
        .session_events(&f.id, mark, 100)
        .await
        .expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
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
