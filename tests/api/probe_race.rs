//! A look at the agent that began before a hook reported its next dialog: what it saw ended
//! the last wait (the agent moved on from it), not the one that began meanwhile. Acting on it
//! ended the fresh wait, and a failed check's instruction was then typed onto the dialog being
//! drawn (a real Claude Code under load: its log showed the last dialog's command running
//! while its hook already reported the next).
//!
//! The race is made certain here: the look's capture of the screen (the agent at work after
//! the first dialog) is held until the next dialog's hook report is recorded.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::Actor;
use flotilla::actors::fleet::{Plugins, ProjectSpec};
use flotilla::actors::supervisor::messages::GetSession;
use flotilla::actors::supervisor::{ApplyTo, FleetSupervisor};
use flotilla::domain::machine::{EventKind, ReportedState};
use flotilla::plugins::agent::CommandAgent;
use flotilla::plugins::tmux::TmuxRuntime;
use flotilla::plugins::worktree::WorktreeWorkspace;
use flotilla::store::*;

use crate::actors::{fleet_over, spawn_demo};
use crate::fleet_tmux::TmuxGuard;
use crate::helpers::*;
use crate::hooked_tmux::{Hook, HookedTmux};

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

fn plugins(home: &Path, socket: &str, next: &Path, gate: Arc<Gate>) -> Plugins {
    let after_output: Hook = Arc::new(move |out| {
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
    });
    let mut plugins = Plugins::default();
    plugins.runtimes.insert(
        "tmux".into(),
        Arc::new(HookedTmux {
            inner: TmuxRuntime::new(socket.to_string(), home.join("tmux")),
            after_output: Some(after_output),
            after_answer: None,
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
            env: BTreeMap::from([("NEXT".into(), next.to_string_lossy().into_owned())]),
        }),
    );
    plugins
}

#[actix_web::test]
async fn a_look_begun_before_the_next_dialogs_hook_report_does_not_end_its_wait() {
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let repo = make_repo(dir.path());
    let next = dir.path().join("next");
    let store = open(&format!("sqlite://{}/f.db", home.display()))
        .await
        .expect("store");
    let socket = format!("flotilla-probe-{}", uuid::Uuid::new_v4().simple());
    let _tmux = TmuxGuard(socket.clone());
    let mut projects = BTreeMap::new();
    projects.insert(
        "demo".to_string(),
        ProjectSpec::simple("demo", repo, "dialogs", "tmux"),
    );
    let gate = Arc::new(Gate::default());
    let fleet = fleet_over(
        store.clone(),
        plugins(&home, &socket, &next, gate.clone()),
        projects,
        &home,
    );
    let sup = FleetSupervisor::new(fleet, Arc::new(AtomicBool::new(false))).start();
    let id = spawn_demo(&sup).await.session.id;
    let session = || {
        let (sup, id) = (sup.clone(), id.clone());
        async move { sup.send(GetSession { id }).await.ok().and_then(Result::ok) }
    };
    eventually(60, "the first question", || async {
        let s = session().await?;
        (s.session.state == SessionState::NeedsInput
            && s.session.meta["question"].as_str()?.contains("cargo test"))
        .then_some(())
    })
    .await;
    // Someone at the terminal answers; the look at the agent at work is held.
    let keyed = std::process::Command::new("tmux")
        .args(["-L", &socket, "send-keys", "-t", id.as_str(), "y"])
        .status()
        .expect("tmux");
    assert!(keyed.success());
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
    sup.send(ApplyTo {
        id: id.clone(),
        event: hook,
    })
    .await
    .expect("mailbox")
    .expect("applied");
    eventually(60, "the next question recorded and drawn", || async {
        let s = session().await?;
        (s.session.state == SessionState::NeedsInput
            && s.session.meta["question"].as_str()?.contains("git push")
            && gate.next_seen.load(Ordering::SeqCst) > 0)
            .then_some(())
    })
    .await;
    let mark = store.last_event_id().await.expect("events");
    gate.release.store(true, Ordering::SeqCst);
    // The held look is over once the agent was looked at again after it.
    eventually(60, "a look after the held one", || async {
        (gate.after_release.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    let events = store.session_events(&id, mark, 100).await.expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert!(
        !kinds.contains(&"agent.active"),
        "the held look ended the next wait: {kinds:?}"
    );
    let s = session().await.expect("session");
    assert_eq!(s.session.state, SessionState::NeedsInput);
    assert!(
        s.session.meta["question"]
            .as_str()
            .is_some_and(|q| q.contains("git push")),
        "{:?}",
        s.session.meta
    );
}
