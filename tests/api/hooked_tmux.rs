//! Tmux with test hooks: a runtime that makes a race certain by holding the session's look at
//! the screen, or its answer, until the test has done its part.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix::{Actor, Addr};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flotilla::actors::fleet::{Plugins, ProjectSpec};
use flotilla::actors::supervisor::messages::GetSession;
use flotilla::actors::supervisor::FleetSupervisor;
use flotilla::clock::Clock;
use flotilla::plugins::agent::CommandAgent;
use flotilla::plugins::tmux::TmuxRuntime;
use flotilla::plugins::worktree::WorktreeWorkspace;
use flotilla::plugins::{
    AttachInfo, LaunchSpec, OtherQuestion, PluginResult, Runtime, RuntimeHandle, ScreenQuestion,
};
use flotilla::store::*;

use crate::actors::{fleet_over, spawn_demo};
use crate::fleet_tmux::TmuxGuard;
use crate::helpers::*;

/// Run with what the runtime read or did (the screen's text; for an answer, `"taken"` or
/// `"not taken"`) before it returns it to the session.
pub type Hook = Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Tmux, with `after_output` run on every capture of the screen and `after_answer` after
/// every answer, before the session gets either; with `silent_exit`, a wait for the agent's
/// exit that never returns (an exit watcher that never reports).
pub struct HookedTmux {
    pub inner: TmuxRuntime,
    pub after_output: Option<Hook>,
    pub after_answer: Option<Hook>,
    pub silent_exit: bool,
}

#[async_trait]
impl Runtime for HookedTmux {
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
        if self.silent_exit {
            return std::future::pending().await;
        }
        self.inner.wait_exit(handle).await
    }
    async fn output(&self, handle: &RuntimeHandle, lines: usize) -> PluginResult<String> {
        let out = self.inner.output(handle, lines).await?;
        if let Some(hook) = &self.after_output {
            hook(out.clone()).await;
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
        if let Some(hook) = &self.after_answer {
            hook(if taken { "taken" } else { "not taken" }.into()).await;
        }
        Ok(taken)
    }
    async fn answer_to(
        &self,
        handle: &RuntimeHandle,
        choice: &str,
        read: ScreenQuestion,
        other: &OtherQuestion<'_>,
    ) -> PluginResult<bool> {
        let taken = self.inner.answer_to(handle, choice, read, other).await?;
        if let Some(hook) = &self.after_answer {
            hook(if taken { "taken" } else { "not taken" }.into()).await;
        }
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

/// One session of a scripted agent (`bash -c <script>`, with `env`) in [`HookedTmux`], on a
/// fleet of its own over SQLite.
pub struct DialogFleet {
    pub store: SharedStore,
    pub sup: Addr<FleetSupervisor>,
    pub id: SessionId,
    pub socket: String,
    _tmux: TmuxGuard,
    _dir: tempfile::TempDir,
}

/// The agent `bash -c <script>`, with `env`.
fn scripted(script: &str, env: BTreeMap<String, String>) -> Arc<CommandAgent> {
    Arc::new(CommandAgent {
        name: "dialogs".into(),
        argv: vec!["bash".into(), "-c".into(), script.into()],
        env,
    })
}

impl DialogFleet {
    /// Spawns the session; `dir` is where the test keeps its own files.
    pub async fn start(
        dir: tempfile::TempDir,
        script: &str,
        env: BTreeMap<String, String>,
        after_output: Option<Hook>,
        after_answer: Option<Hook>,
    ) -> Self {
        Self::start_as(dir, scripted(script, env), after_output, after_answer).await
    }

    /// [`DialogFleet::start`] with `agent`'s plugin (a scripted screen read as a real agent's).
    pub async fn start_as(
        dir: tempfile::TempDir,
        agent: Arc<dyn flotilla::plugins::Agent>,
        after_output: Option<Hook>,
        after_answer: Option<Hook>,
    ) -> Self {
        let runtime = |inner| HookedTmux {
            inner,
            after_output,
            after_answer,
            silent_exit: false,
        };
        Self::start_over(dir, agent, runtime, Clock::system()).await
    }

    /// One session of `script` whose exit the runtime never reports, on a fleet reading `clock`.
    pub async fn start_with_silent_exit(
        dir: tempfile::TempDir,
        script: &str,
        clock: Clock,
    ) -> Self {
        let runtime = |inner| HookedTmux {
            inner,
            after_output: None,
            after_answer: None,
            silent_exit: true,
        };
        Self::start_over(dir, scripted(script, BTreeMap::new()), runtime, clock).await
    }

    async fn start_over(
        dir: tempfile::TempDir,
        agent: Arc<dyn flotilla::plugins::Agent>,
        runtime: impl FnOnce(TmuxRuntime) -> HookedTmux,
        clock: Clock,
    ) -> Self {
        let home = dir.path().join("home");
        let repo = make_repo(dir.path());
        let store = open(&format!("sqlite://{}/f.db", home.display()))
            .await
            .expect("store");
        let socket = format!("flotilla-hooked-{}", uuid::Uuid::new_v4().simple());
        let tmux = TmuxGuard(socket.clone());
        let mut plugins = Plugins::default();
        plugins.runtimes.insert(
            "tmux".into(),
            Arc::new(runtime(TmuxRuntime::new(socket.clone(), home.join("tmux")))),
        );
        plugins
            .workspaces
            .insert("worktree".into(), Arc::new(WorktreeWorkspace::new()));
        plugins.agents.insert("dialogs".into(), agent);
        let projects = BTreeMap::from([(
            "demo".to_string(),
            ProjectSpec::simple("demo", repo, "dialogs", "tmux"),
        )]);
        let mut fleet = fleet_over(store.clone(), plugins, projects, &home);
        Arc::get_mut(&mut fleet).expect("the only handle").clock = clock;
        let sup = FleetSupervisor::new(fleet, Arc::new(AtomicBool::new(false))).start();
        let id = spawn_demo(&sup).await.session.id;
        DialogFleet {
            store,
            sup,
            id,
            socket,
            _tmux: tmux,
            _dir: dir,
        }
    }

    /// The session now.
    pub async fn session(&self) -> Option<SessionSnapshot> {
        let id = self.id.clone();
        self.sup.send(GetSession { id }).await.ok()?.ok()
    }

    /// Types `key` into the agent's terminal as someone attached to it would (not through
    /// Flotilla).
    pub fn key_at_the_terminal(&self, key: &str) {
        let keyed = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", self.id.as_str(), key])
            .status()
            .expect("tmux");
        assert!(keyed.success());
    }

    /// Waits until the session waits on a question that says `want`; the question.
    pub async fn question(&self, want: &str) -> String {
        eventually(60, want, || async {
            let s = self.session().await?;
            let q = s.session.meta["question"].as_str()?.to_string();
            (s.session.state == SessionState::NeedsInput && q.contains(want)).then_some(q)
        })
        .await
    }
}
