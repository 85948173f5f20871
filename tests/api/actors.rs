//! Supervision: a session actor whose store write fails restarts, reloads what was committed,
//! and goes on working.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use async_trait::async_trait;
use chrono::Utc;
use flotilla::actors::fleet::{Fleet, Plugins, ProjectSpec};
use flotilla::actors::journal::Journal;
use flotilla::actors::supervisor::messages::{GetSession, Spawn, SpawnRequest};
use flotilla::actors::supervisor::{ApplyTo, FleetError, FleetSupervisor};
use flotilla::domain::machine::EventKind;
use flotilla::plugins::agent::CommandAgent;
use flotilla::plugins::process::ProcessRuntime;
use flotilla::plugins::worktree::WorktreeWorkspace;
use flotilla::store::*;
use flotilla::telemetry::METRICS;

use crate::helpers::*;

/// The session commands of a real store, failing the next `fail` commits.
struct FlakyCommits {
    inner: SharedStore,
    fail: AtomicUsize,
}

#[async_trait]
impl SessionCommands for FlakyCommits {
    async fn create_session(&self, n: &NewSession) -> StoreResult<(SessionRecord, EventRecord)> {
        self.inner.create_session(n).await
    }
    async fn commit_transition(&self, c: &TransitionCommit) -> StoreResult<EventRecord> {
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Database(sqlx::Error::PoolTimedOut));
        }
        self.inner.commit_transition(c).await
    }
}

/// A fleet over `store` with these plugins and projects, every other setting a test default.
pub(crate) fn fleet_over(
    store: SharedStore,
    plugins: Plugins,
    projects: BTreeMap<String, ProjectSpec>,
    home: &std::path::Path,
) -> Arc<Fleet> {
    Arc::new(Fleet {
        journal: Arc::new(Journal::new(store.clone())),
        store,
        plugins,
        projects,
        home: home.to_path_buf(),
        max_restarts: 3,
        actor_timeout: Duration::from_secs(10),
        agent_env_passthrough: Vec::new(),
        report_key: vec![7; 32],
        server_url: "http://127.0.0.1:1".into(),
        cli_path: None,
        sandbox: Default::default(),
        spawn_permits: Arc::new(tokio::sync::Semaphore::new(8)),
        lifecycle_order: Default::default(),
        clock: flotilla::clock::Clock::system(),
        output_watch: Arc::new(flotilla::actors::watch::OutputWatch::new()),
        notifications: Default::default(),
    })
}

/// Spawns a session of project `demo` (prompt `p`) through the supervisor.
pub(crate) async fn spawn_demo(sup: &actix::Addr<FleetSupervisor>) -> SessionSnapshot {
    sup.send(Spawn {
        order: SpawnRequest {
            project: "demo".into(),
            prompt: Some("p".into()),
            issue: None,
            agent: None,
            branch: None,
            host: None,
        }
        .try_into()
        .expect("a valid request"),
    })
    .await
    .expect("mailbox")
    .expect("spawn")
}

#[actix_web::test]
async fn an_actor_restarted_after_a_store_error_reloads_its_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let repo = make_repo(dir.path());
    let inner = open(&format!("sqlite://{}/f.db", home.display()))
        .await
        .expect("store");
    let flaky = Arc::new(FlakyCommits {
        inner: inner.clone(),
        fail: AtomicUsize::new(0),
    });
    let store: SharedStore = Arc::new(StoreParts {
        session_commands: flaky.clone(),
        ..StoreParts::of(inner)
    });
    let mut plugins = Plugins::default();
    plugins.runtimes.insert(
        "process".into(),
        Arc::new(ProcessRuntime::new(home.join("runtime"))),
    );
    plugins
        .workspaces
        .insert("worktree".into(), Arc::new(WorktreeWorkspace::new()));
    plugins.agents.insert(
        "scripted".into(),
        Arc::new(CommandAgent {
            name: "scripted".into(),
            argv: vec!["sleep".into(), "600".into()],
            env: BTreeMap::new(),
        }),
    );
    let mut projects = BTreeMap::new();
    projects.insert(
        "demo".to_string(),
        ProjectSpec {
            prefix: "demo".into(),
            ..ProjectSpec::simple("demo", repo, "scripted", "process")
        },
    );
    let fleet = fleet_over(store.clone(), plugins, projects, &home);
    let sup = FleetSupervisor::new(fleet, Arc::new(AtomicBool::new(false))).start();
    let snap = spawn_demo(&sup).await;
    let id = snap.session.id.clone();
    let working = eventually(30, "working", || async {
        let s = sup.send(GetSession { id: id.clone() }).await.ok()?.ok()?;
        (s.session.state == SessionState::Working).then_some(s)
    })
    .await;

    let restarts_before = METRICS.actor_restarts.get();
    flaky.fail.store(1, Ordering::SeqCst);
    let since = Utc::now() - chrono::Duration::seconds(5);
    let r = sup
        .send(ApplyTo {
            id: id.clone(),
            event: EventKind::AgentIdle { since },
        })
        .await
        .expect("mailbox");
    assert!(matches!(r, Err(FleetError::Store(_))), "{r:?}");
    assert!(
        METRICS.actor_restarts.get() > restarts_before,
        "the actor restarted"
    );
    // After the restart the actor holds exactly what the store holds: the failed step is gone.
    let reloaded = eventually(30, "reloaded", || async {
        sup.send(GetSession { id: id.clone() }).await.ok()?.ok()
    })
    .await;
    assert_eq!(reloaded, store.load_snapshot(&id).await.expect("stored"));
    assert_eq!(reloaded.session.activity, working.session.activity);
    // And it works again.
    let ok = sup
        .send(ApplyTo {
            id: id.clone(),
            event: EventKind::AgentIdle { since },
        })
        .await
        .expect("mailbox")
        .expect("applies");
    assert_eq!(ok.session.session.activity, Activity::Idle);
    let stored = store.load_snapshot(&id).await.expect("stored");
    assert_eq!(stored.session.activity, Activity::Idle);
    assert_eq!(
        stored.timers["stuck_check"].deadline,
        flotilla::domain::machine::micros(since) + chrono::Duration::minutes(10),
        "the stuck deadline follows the idle evidence"
    );
    kill_agents(&home);
}
