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
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flotilla::actors::fleet::{Plugins, ProjectSpec};
use flotilla::actors::supervisor::messages::{GetSession, SendToSession};
use flotilla::actors::supervisor::FleetSupervisor;
use flotilla::plugins::agent::CommandAgent;
use flotilla::plugins::tmux::TmuxRuntime;
use flotilla::plugins::worktree::WorktreeWorkspace;
use flotilla::plugins::{
    AttachInfo, LaunchSpec, PluginResult, Runtime, RuntimeHandle, ScreenQuestion,
};
use flotilla::store::*;

use crate::actors::{fleet_over, spawn_demo};
use crate::fleet_tmux::TmuxGuard;
use crate::helpers::*;

/// The first dialog; its answer's key at once draws the second, and the screen then stays still.
const TWO_DIALOGS: &str = r#"clear; printf 'Run cargo test?\n\n› 1. Yes, proceed (y)\n  2. No, and tell Codex what to do differently (esc)\n\nPress enter to confirm or esc to cancel\n'; IFS= read -rsn1 k; clear; printf 'Run git push origin HEAD?\n\n› 1. Yes, proceed (y)\n  2. No, and tell Codex what to do differently (esc)\n\nPress enter to confirm or esc to cancel\n'; sleep 600"#;

/// Tmux, except that an answer is reported only after a look at the screen has seen the
/// second dialog.
struct SeenBeforeRecorded {
    inner: TmuxRuntime,
    second_seen: AtomicBool,
}

#[async_trait]
impl Runtime for SeenBeforeRecorded {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn create(&self, spec: &LaunchSpec) -> PluginResult<RuntimeHandle> {
        self.inner.create(spec).await
    }
    async fn destroy(&self, handle: &RuntimeHandle) -> PluginResult<()> {
        self.inner.destroy(handle).await
    }
    async fn is_alive(&self, handle: &RuntimeHandle) -> PluginResult<bool> {
        self.inner.is_alive(handle).await
    }
    async fn wait_exit(&self, handle: &RuntimeHandle) -> PluginResult<Option<i32>> {
        self.inner.wait_exit(handle).await
    }
    async fn output(&self, handle: &RuntimeHandle, lines: usize) -> PluginResult<String> {
        let out = self.inner.output(handle, lines).await?;
        if out.contains("git push") {
            self.second_seen.store(true, Ordering::SeqCst);
        }
        Ok(out)
    }
    async fn last_output_at(&self, handle: &RuntimeHandle) -> PluginResult<Option<DateTime<Utc>>> {
        self.inner.last_output_at(handle).await
    }
    async fn send_message(&self, handle: &RuntimeHandle, text: &str) -> PluginResult<bool> {
        self.inner.send_message(handle, text).await
    }
    async fn answer(
        &self,
        handle: &RuntimeHandle,
        choice: &str,
        read: ScreenQuestion,
    ) -> PluginResult<bool> {
        let taken = self.inner.answer(handle, choice, read).await?;
        eventually(
            30,
            "a look at the second dialog before the answer is recorded",
            || async { self.second_seen.load(Ordering::SeqCst).then_some(()) },
        )
        .await;
        Ok(taken)
    }
    async fn input_mark(&self, handle: &RuntimeHandle) -> PluginResult<Option<u64>> {
        self.inner.input_mark(handle).await
    }
    async fn resume_message(
        &self,
        handle: &RuntimeHandle,
        text: &str,
        mark: Option<u64>,
    ) -> PluginResult<bool> {
        self.inner.resume_message(handle, text, mark).await
    }
    fn attach_info(&self, handle: &RuntimeHandle) -> Option<AttachInfo> {
        self.inner.attach_info(handle)
    }
    async fn list_live(&self) -> PluginResult<Vec<String>> {
        self.inner.list_live().await
    }
    async fn find(&self, id: &str, since: DateTime<Utc>) -> PluginResult<Option<RuntimeHandle>> {
        self.inner.find(id, since).await
    }
}

fn plugins(home: &Path, socket: &str) -> Plugins {
    let mut plugins = Plugins::default();
    plugins.runtimes.insert(
        "tmux".into(),
        Arc::new(SeenBeforeRecorded {
            inner: TmuxRuntime::new(socket.to_string(), home.join("tmux")),
            second_seen: AtomicBool::new(false),
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
