//! A dialog the agent draws while the answer to the last one is still being confirmed: the
//! session looks at the agent again once the answer is recorded. Seen while the first question
//! still waited, the second was only a redraw (a redraw cannot end a wait), and a still screen
//! raises no output change afterwards, so without that second look the session said `active`
//! with a dialog on screen (OpenCode's "Always allow" step, Codex's next approval).
//!
//! The race is made certain here: the runtime's answer returns only once the session's probe has
//! seen the second dialog, i.e. while the first question is still the one recorded.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::Actor;
use flotilla::actors::fleet::{Plugins, ProjectSpec};
use flotilla::actors::supervisor::messages::{GetSession, SendToSession};
use flotilla::actors::supervisor::FleetSupervisor;
use flotilla::plugins::agent::CommandAgent;
use flotilla::plugins::tmux::TmuxRuntime;
use flotilla::plugins::worktree::WorktreeWorkspace;
use flotilla::store::*;

use crate::actors::{fleet_over, spawn_demo};
use crate::fleet_tmux::TmuxGuard;
use crate::helpers::*;
use crate::hooked_tmux::{Hook, HookedTmux};

/// The first dialog; its answer's key at once draws the second, and the screen then stays still.
const TWO_DIALOGS: &str = r#"clear; printf 'Run cargo test?\n\n› 1. Yes, proceed (y)\n  2. No, and tell Codex what to do differently (esc)\n\nPress enter to confirm or esc to cancel\n'; IFS= read -rsn1 k; clear; printf 'Run git push origin HEAD?\n\n› 1. Yes, proceed (y)\n  2. No, and tell Codex what to do differently (esc)\n\nPress enter to confirm or esc to cancel\n'; sleep 600"#;

fn plugins(home: &Path, socket: &str) -> Plugins {
    let mut plugins = Plugins::default();
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
    plugins.runtimes.insert(
        "tmux".into(),
        Arc::new(HookedTmux {
            inner: TmuxRuntime::new(socket.to_string(), home.join("tmux")),
            after_output: Some(after_output),
            after_answer: Some(after_answer),
        }),
    );
    plugins
        .workspaces
        .insert("worktree".into(), Arc::new(WorktreeWorkspace::new()));
    plugins.agents.insert(
        "dialogs".into(),
        Arc::new(CommandAgent {
            name: "dialogs".into(),
            argv: vec!["bash".into(), "-c".into(), TWO_DIALOGS.into()],
            env: BTreeMap::new(),
        }),
    );
    plugins
}

#[actix_web::test]
async fn a_dialog_drawn_while_an_answer_is_confirmed_is_asked_once_the_answer_is_recorded() {
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let repo = make_repo(dir.path());
    let store = open(&format!("sqlite://{}/f.db", home.display()))
        .await
        .expect("store");
    let socket = format!("flotilla-race-{}", uuid::Uuid::new_v4().simple());
    let _tmux = TmuxGuard(socket.clone());
    let mut projects = BTreeMap::new();
    projects.insert(
        "demo".to_string(),
        ProjectSpec::simple("demo", repo, "dialogs", "tmux"),
    );
    let fleet = fleet_over(store, plugins(&home, &socket), projects, &home);
    let sup = FleetSupervisor::new(fleet, Arc::new(AtomicBool::new(false))).start();
    let snap = spawn_demo(&sup).await;
    let id = snap.session.id.clone();
    let question = |want: &'static str| {
        let (sup, id) = (sup.clone(), id.clone());
        async move {
            eventually(60, want, || async {
                let s = sup.send(GetSession { id: id.clone() }).await.ok()?.ok()?;
                let q = s.session.meta["question"].as_str()?.to_string();
                (s.session.state == SessionState::NeedsInput && q.contains(want)).then_some(q)
            })
            .await
        }
    };
    question("cargo test").await;
    let sent = sup
        .send(SendToSession {
            id: id.clone(),
            text: "y".into(),
            allow_restore: false,
            question: None,
        })
        .await
        .expect("mailbox")
        .expect("send");
    assert!(sent.delivered, "{sent:?}");
    // The second dialog was seen before the answer was recorded; it is asked all the same.
    let asked = question("git push").await;
    assert!(asked.contains("git push origin HEAD"), "{asked}");
}
