//! Supervision: a session actor whose store write fails restarts, reloads what was committed,
//! and goes on working.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flotilla::actors::fleet::{Fleet, Plugins, ProjectSpec};
use flotilla::actors::journal::Journal;
use flotilla::actors::session::machine::EventKind;
use flotilla::actors::supervisor::messages::{GetSession, Spawn, SpawnRequest};
use flotilla::actors::supervisor::{ApplyTo, FleetError, FleetSupervisor};
use flotilla::plugins::agent::CommandAgent;
use flotilla::plugins::process::ProcessRuntime;
use flotilla::plugins::worktree::WorktreeWorkspace;
use flotilla::store::*;
use flotilla::telemetry::METRICS;

use crate::helpers::*;

/// Delegates to a real store but fails the next `fail` commits.
struct FlakyStore {
    inner: SharedStore,
    fail: AtomicUsize,
}

#[async_trait]
impl Store for FlakyStore {
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
    async fn create_session(&self, n: &NewSession) -> StoreResult<(SessionRecord, EventRecord)> {
        self.inner.create_session(n).await
    }
    async fn load_session(&self, id: &SessionId) -> StoreResult<SessionRecord> {
        self.inner.load_session(id).await
    }
    async fn load_snapshot(&self, id: &SessionId) -> StoreResult<SessionSnapshot> {
        self.inner.load_snapshot(id).await
    }
    async fn list_sessions(&self, f: &SessionFilter) -> StoreResult<Vec<SessionRecord>> {
        self.inner.list_sessions(f).await
    }
    async fn count_by_state(&self) -> StoreResult<Vec<(SessionState, i64)>> {
        self.inner.count_by_state().await
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
    async fn append_event(&self, e: &NewEvent) -> StoreResult<EventRecord> {
        self.inner.append_event(e).await
    }
    async fn events_after(&self, a: i64, l: i64) -> StoreResult<Vec<EventRecord>> {
        self.inner.events_after(a, l).await
    }
    async fn session_events(
        &self,
        id: &SessionId,
        a: i64,
        l: i64,
    ) -> StoreResult<Vec<EventRecord>> {
        self.inner.session_events(id, a, l).await
    }
    async fn last_event_id(&self) -> StoreResult<i64> {
        self.inner.last_event_id().await
    }
    async fn last_project_event_id(&self, project: &str, kind: &str) -> StoreResult<Option<i64>> {
        self.inner.last_project_event_id(project, kind).await
    }
    async fn latest_session_events(&self) -> StoreResult<Vec<EventRecord>> {
        self.inner.latest_session_events().await
    }
    async fn list_trackers(&self) -> StoreResult<Vec<(SessionId, ReactionTracker)>> {
        self.inner.list_trackers().await
    }
    async fn record_webhook_delivery(&self, d: &WebhookDelivery) -> StoreResult<bool> {
        self.inner.record_webhook_delivery(d).await
    }
    async fn upsert_conversation(
        &self,
        p: &str,
        t: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<ConversationRecord> {
        self.inner.upsert_conversation(p, t, at).await
    }
    async fn list_conversations(&self) -> StoreResult<Vec<ConversationRecord>> {
        self.inner.list_conversations().await
    }
    async fn set_resume_id(&self, c: &str, r: Option<&str>) -> StoreResult<()> {
        self.inner.set_resume_id(c, r).await
    }
    async fn enqueue_chat_message(
        &self,
        c: &str,
        m: &str,
        a: &str,
        b: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<ChatMessageRecord>> {
        self.inner.enqueue_chat_message(c, m, a, b, at).await
    }
    async fn next_chat_message(&self, c: &str) -> StoreResult<Option<ChatMessageRecord>> {
        self.inner.next_chat_message(c).await
    }
    async fn set_chat_message_status(&self, id: i64, s: MessageStatus) -> StoreResult<()> {
        self.inner.set_chat_message_status(id, s).await
    }
    async fn conversations_with_pending(&self) -> StoreResult<Vec<String>> {
        self.inner.conversations_with_pending().await
    }
    async fn enqueue_notification(&self, n: &NotificationRecord) -> StoreResult<bool> {
        self.inner.enqueue_notification(n).await
    }
    async fn due_notifications(
        &self,
        now: DateTime<Utc>,
        l: i64,
    ) -> StoreResult<Vec<NotificationRecord>> {
        self.inner.due_notifications(now, l).await
    }
    async fn update_notification(
        &self,
        id: &str,
        s: NotificationStatus,
        a: i64,
        n: DateTime<Utc>,
        e: Option<&str>,
    ) -> StoreResult<()> {
        self.inner.update_notification(id, s, a, n, e).await
    }
    async fn list_notifications(
        &self,
        s: Option<NotificationStatus>,
        l: i64,
    ) -> StoreResult<Vec<NotificationRecord>> {
        self.inner.list_notifications(s, l).await
    }
    async fn count_notifications(&self) -> StoreResult<Vec<(NotificationStatus, i64)>> {
        self.inner.count_notifications().await
    }
    async fn defer_notifications(&self, ids: &[String], u: DateTime<Utc>) -> StoreResult<u64> {
        self.inner.defer_notifications(ids, u).await
    }
    async fn fold_into_digest(&self, d: &NotificationRecord, m: &[String]) -> StoreResult<u64> {
        self.inner.fold_into_digest(d, m).await
    }
}

#[actix_web::test]
async fn an_actor_restarted_after_a_store_error_reloads_its_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let repo = make_repo(dir.path());
    let inner = open(&format!("sqlite://{}/f.db", home.display()))
        .await
        .expect("store");
    let flaky = Arc::new(FlakyStore {
        inner,
        fail: AtomicUsize::new(0),
    });
    let store: SharedStore = flaky.clone();
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
    let fleet = Arc::new(Fleet {
        journal: Arc::new(Journal::new(store.clone())),
        store: store.clone(),
        plugins,
        projects,
        home: home.clone(),
        max_restarts: 3,
        actor_timeout: Duration::from_secs(10),
        agent_env_passthrough: Vec::new(),
        report_key: vec![7; 32],
        server_url: "http://127.0.0.1:1".into(),
        cli_path: None,
        sandbox: Default::default(),
        spawn_permits: Arc::new(tokio::sync::Semaphore::new(8)),
        lifecycle_order: Default::default(),
        output_watch: Arc::new(flotilla::actors::watch::OutputWatch::new()),
        notifications: Default::default(),
    });
    let sup = FleetSupervisor::new(fleet, Arc::new(AtomicBool::new(false))).start();
    let snap = sup
        .send(Spawn {
            order: SpawnRequest {
                project: "demo".into(),
                prompt: Some("p".into()),
                issue: None,
                agent: None,
                branch: None,
            }
            .try_into()
            .expect("a valid request"),
        })
        .await
        .expect("mailbox")
        .expect("spawn");
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
        flotilla::actors::session::machine::micros(since) + chrono::Duration::minutes(10),
        "the stuck deadline follows the idle evidence"
    );
    kill_agents(&home);
}
