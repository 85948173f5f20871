//! The store suite. Each test is written once against [`SharedStore`] and run on a fresh
//! SQLite file and on a fresh PostgreSQL database (when `FLOTILLA_TEST_PG_URL` names an admin
//! URL; with `CI=true` that variable is mandatory).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use futures::FutureExt;
use serde_json::json;
use sqlx::Connection;

use super::*;

const PG_ENV: &str = "FLOTILLA_TEST_PG_URL";

// ---- harness ---------------------------------------------------------------------------------

/// Runs `test` on a store backed by a fresh SQLite file.
async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(SharedStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::TempDir::new().expect("create temp dir");
    let url = format!("sqlite://{}", dir.path().join("flotilla.db").display());
    let store = open(&url).await.expect("open sqlite store");
    test(store).await;
}

/// The admin URL of the test server, or `None` (after a note) when PostgreSQL tests are off.
fn pg_admin_url() -> Option<String> {
    match std::env::var(PG_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "{PG_ENV} is not set but CI=true: the PostgreSQL store tests must run in CI \
             (start a server with `.ci/postgres.sh` and export its URL as {PG_ENV})"
        ),
        _ => {
            eprintln!("note: PostgreSQL variant skipped; set {PG_ENV} to run it");
            None
        }
    }
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{database}?{q}"),
        None => format!("{root}/{database}"),
    }
}

/// Runs `test` with the URL of a fresh PostgreSQL database, dropped afterwards; does nothing
/// when PostgreSQL tests are off (see [`pg_admin_url`]).
async fn with_pg_database<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(admin_url) = pg_admin_url() else {
        return;
    };
    let name = format!("flotilla_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect to the PostgreSQL admin URL");
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .expect("create the test database");
    let outcome = AssertUnwindSafe(test(with_database(&admin_url, &name)))
        .catch_unwind()
        .await;
    // FORCE: the store's pool may still be closing its connections.
    let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await;
    if let Err(e) = dropped {
        eprintln!("note: could not drop test database {name}: {e}");
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Runs `test` on a store backed by a fresh PostgreSQL database.
async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(SharedStore) -> Fut,
    Fut: Future<Output = ()>,
{
    with_pg_database(|url| async move {
        let store = open(&url).await.expect("open postgres store");
        test(store).await;
    })
    .await;
}

/// Declares every listed test once per backend: `on_sqlite::NAME` and `on_postgres::NAME`.
macro_rules! store_suite {
    ($($name:ident),+ $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::on_sqlite(super::$name).await;
                }
            )+
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::on_postgres(super::$name).await;
                }
            )+
        }
    };
}

store_suite!(
    a_created_session_loads_back_unchanged,
    an_unknown_session_is_not_found,
    fifty_concurrent_creates_get_fifty_distinct_ids,
    create_skips_the_numbers_it_is_told_to,
    each_prefix_counts_on_its_own,
    commit_transition_replaces_trackers_and_timers_and_appends_an_event,
    commit_transition_on_an_unknown_session_writes_nothing,
    events_are_read_after_an_id_in_total_and_per_session,
    an_event_for_an_unknown_session_is_not_found,
    concurrent_commits_publish_event_ids_in_order_without_gaps,
    count_by_state_counts_each_state_present,
    list_sessions_filters_by_project_state_and_activity,
    a_replayed_webhook_delivery_is_ignored,
    a_writeback_mark_is_claimed_once_until_released,
    a_chat_move_is_kept_per_platform_and_replaced_by_a_later_one,
    a_chat_move_is_found_from_the_chat_it_moved_to,
    the_chat_inbox_dedupes_and_serves_the_oldest_message_first,
    a_running_chat_message_is_served_again_after_a_crash,
    a_settled_messages_replies_wait_in_order_until_posted,
    a_fenced_settle_writes_neither_status_nor_replies,
    the_claim_after_posting_forgets_the_posted_replies_unless_refused,
    chat_calls_on_unknown_rows_are_not_found,
    chat_state_templates_commands_and_meta_round_trip,
    the_outbox_dedupes_and_serves_due_notifications_oldest_first,
    a_notification_reusing_an_id_is_a_conflict,
    a_step_writes_its_notifications_with_its_event_deduplicated_within_the_window,
    a_failed_commit_writes_no_notification,
    notifications_are_listed_counted_deferred_and_folded_into_digests,
    the_board_reads_each_sessions_latest_event_and_all_trackers,
    the_newest_event_of_a_kind_is_found_per_project,
    chat_activity_has_each_conversations_newest_message_and_pending_count,
    a_notification_post_reads_back_what_its_notification_asked,
);

/// sqlx's SQLite driver leaves a connection inside a transaction when a `begin_with` future is
/// dropped after `BEGIN` ran and before it returned (a chat turn cut short by its timeout did
/// this); every later write on the one write connection then failed. The pools now end such a
/// transaction as the connection comes back.
async fn a_write_abandoned_mid_begin_does_not_block_the_next<D: sql::Dialect>(
    store: sql::SqlStore<D>,
) where
    for<'c> &'c mut sql::Conn<D>: sqlx::Executor<'c, Database = sql::Db<D>>,
    sql::SqlStore<D>: Store,
{
    for round in 0..3 {
        store.abandon_a_write_transaction().await;
        let mut new = new_session("abandoned", round);
        new.fixed_id = None;
        store
            .create_session(&new)
            .await
            .unwrap_or_else(|e| panic!("round {round}: the write after an abandoned one: {e}"));
    }
    let created = store
        .list_sessions(&SessionFilter::default())
        .await
        .expect("list");
    assert_eq!(
        created.len(),
        3,
        "every write after an abandoned one committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_write_abandoned_mid_begin_does_not_block_the_next() {
    let dir = tempfile::TempDir::new().expect("create temp dir");
    let url = format!("sqlite://{}", dir.path().join("flotilla.db").display());
    let store = sqlite::open(&url).await.expect("open sqlite store");
    a_write_abandoned_mid_begin_does_not_block_the_next(store).await;
    let memory = sqlite::open("sqlite::memory:")
        .await
        .expect("open memory store");
    a_write_abandoned_mid_begin_does_not_block_the_next(memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_write_abandoned_mid_begin_does_not_block_the_next() {
    with_pg_database(|url| async move {
        let store = postgres::open(&url).await.expect("open postgres store");
        a_write_abandoned_mid_begin_does_not_block_the_next(store).await;
    })
    .await;
}

// ---- fixtures --------------------------------------------------------------------------------

/// A fixed instant plus `secs`: tests never depend on the clock.
fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0)
        .single()
        .expect("valid date")
        + Duration::seconds(secs)
}

fn new_session(prefix: &str, secs: i64) -> NewSession {
    NewSession {
        project: "demo-project".into(),
        prefix: prefix.into(),
        agent: "claude-code".into(),
        runtime: "tmux".into(),
        workspace_kind: "worktree".into(),
        branch: Some(format!("feat/{prefix}")),
        issue: Some("DEMO-42".into()),
        prompt: Some("Fix the flaky test in the parser".into()),
        skip_numbers: vec![],
        fixed_id: None,
        meta: serde_json::Value::Null,
        at: at(secs),
    }
}

async fn create(store: &SharedStore, prefix: &str, secs: i64) -> SessionRecord {
    store
        .create_session(&new_session(prefix, secs))
        .await
        .expect("create session")
        .0
}

fn transition_event(id: &SessionId, to: SessionState, secs: i64) -> NewEvent {
    NewEvent {
        session_id: Some(id.clone()),
        kind: "session.transition".into(),
        data: json!({ "to": to.as_str() }),
        at: at(secs),
    }
}

/// A commit moving `session` to `state` with no trackers or timers.
fn bare_commit(session: &SessionRecord, state: SessionState, secs: i64) -> TransitionCommit {
    let mut session = session.clone();
    session.state = state;
    session.updated_at = at(secs);
    TransitionCommit {
        event: transition_event(&session.id, state, secs),
        snapshot: SessionSnapshot {
            session,
            trackers: BTreeMap::new(),
            timers: BTreeMap::new(),
        },
        notifications: Vec::new(),
        instructions: Vec::new(),
    }
}

fn tracker(reaction: &str, attempts: i64, escalated: bool) -> ReactionTracker {
    ReactionTracker {
        reaction: reaction.into(),
        attempts,
        first_triggered_at: at(10),
        last_triggered_at: at(20 + attempts),
        fingerprint: Some(format!("fp-{reaction}-{attempts}")),
        escalated,
    }
}

fn timer(kind: &str, secs: i64) -> TimerRecord {
    TimerRecord {
        kind: kind.into(),
        deadline: at(secs),
    }
}

fn notification(id: &str, dedupe_key: &str, created: i64, due: i64) -> NotificationRecord {
    NotificationRecord {
        id: id.into(),
        notifier: "slack".into(),
        priority: "action".into(),
        event: "ci.failing".into(),
        session_id: Some(SessionId("demo-1".into())),
        message: format!("notification {id}"),
        dedupe_key: dedupe_key.into(),
        status: NotificationStatus::Pending,
        attempts: 0,
        next_attempt_at: at(due),
        created_at: at(created),
        last_error: None,
        dedupe_until: at(created + 3600),
        context: json!({ "project": "demo-project", "reaction": "ci-failed" }),
        digest_id: None,
    }
}

fn assert_not_found(result: StoreResult<impl std::fmt::Debug>, what: &str) {
    match result {
        Err(StoreError::NotFound { what: w }) => assert_eq!(w, what),
        other => panic!("expected NotFound {{ {what} }}, got {other:?}"),
    }
}

fn ids(events: &[EventRecord]) -> Vec<i64> {
    events.iter().map(|e| e.id).collect()
}

// ---- sessions --------------------------------------------------------------------------------

async fn the_board_reads_each_sessions_latest_event_and_all_trackers(store: SharedStore) {
    let a = create(&store, "a", 0).await;
    let b = create(&store, "b", 1).await;
    let _quiet = create(&store, "c", 2).await;
    let mut c = bare_commit(&a, SessionState::Working, 3);
    c.snapshot
        .trackers
        .insert("ci-failed".into(), tracker("ci-failed", 2, false));
    c.snapshot
        .trackers
        .insert("agent-stuck".into(), tracker("agent-stuck", 1, true));
    store.commit_transition(&c).await.expect("commit a");
    let last_b = store
        .commit_transition(&bare_commit(&b, SessionState::Stuck, 4))
        .await
        .expect("commit b");
    store
        .append_event(&NewEvent {
            session_id: None,
            kind: "fleet.paused".into(),
            data: json!({}),
            at: at(5),
        })
        .await
        .expect("fleet event");

    let latest = store.latest_session_events().await.expect("latest");
    let by_session: Vec<(String, String)> = latest
        .iter()
        .map(|e| (e.session_id.clone().expect("session").0, e.kind.clone()))
        .collect();
    assert_eq!(
        by_session,
        [
            ("c-1".to_string(), "session.created".to_string()),
            ("a-1".to_string(), "session.transition".to_string()),
            ("b-1".to_string(), "session.transition".to_string()),
        ]
    );
    assert_eq!(latest.last().map(|e| e.id), Some(last_b.id));

    let trackers = store.list_trackers().await.expect("trackers");
    let seen: Vec<(&str, &str, i64, bool)> = trackers
        .iter()
        .map(|(s, t)| (s.as_str(), t.reaction.as_str(), t.attempts, t.escalated))
        .collect();
    assert_eq!(
        seen,
        [
            ("a-1", "agent-stuck", 1, true),
            ("a-1", "ci-failed", 2, false)
        ]
    );
}

async fn a_created_session_loads_back_unchanged(store: SharedStore) {
    let new = new_session("demo", 0);
    let (session, event) = store.create_session(&new).await.expect("create");

    assert_eq!(session.id, SessionId("demo-1".into()));
    assert_eq!(session.project, "demo-project");
    assert_eq!(session.state, SessionState::Spawning);
    assert_eq!(session.reason, None);
    assert_eq!(session.agent, "claude-code");
    assert_eq!(session.runtime, "tmux");
    assert_eq!(session.workspace_kind, "worktree");
    assert_eq!(session.branch.as_deref(), Some("feat/demo"));
    assert_eq!(session.workspace, None);
    assert_eq!(session.pr, None);
    assert_eq!(session.issue.as_deref(), Some("DEMO-42"));
    assert_eq!(session.prompt, new.prompt);
    assert_eq!(session.runtime_handle, None);
    assert_eq!(session.activity, Activity::Unknown);
    assert_eq!(session.activity_at, None);
    assert_eq!(session.restart_count, 0);
    assert_eq!(session.created_at, new.at);
    assert_eq!(session.updated_at, new.at);

    assert!(event.id > 0);
    assert_eq!(event.session_id.as_ref(), Some(&session.id));
    assert_eq!(event.kind, "session.created");
    assert_eq!(
        event.data,
        json!({ "project": "demo-project", "agent": "claude-code", "state": "spawning" })
    );
    assert_eq!(event.at, new.at);

    assert_eq!(
        store.load_session(&session.id).await.expect("load"),
        session
    );
    let snapshot = store.load_snapshot(&session.id).await.expect("snapshot");
    assert_eq!(snapshot.session, session);
    assert!(snapshot.trackers.is_empty() && snapshot.timers.is_empty());
    assert_eq!(
        store.events_after(0, 10).await.expect("events"),
        vec![event]
    );
}

async fn an_unknown_session_is_not_found(store: SharedStore) {
    let id = SessionId("nope-7".into());
    assert_not_found(store.load_session(&id).await, "session nope-7");
    assert_not_found(store.load_snapshot(&id).await, "session nope-7");
}

async fn fifty_concurrent_creates_get_fifty_distinct_ids(store: SharedStore) {
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.create_session(&new_session("demo", i)).await })
        })
        .collect();
    let mut got = BTreeSet::new();
    for task in futures::future::join_all(tasks).await {
        let (session, event) = task.expect("task").expect("create");
        assert_eq!(event.session_id.as_ref(), Some(&session.id));
        got.insert(session.id.0);
    }
    let want: BTreeSet<String> = (1..=50).map(|n| format!("demo-{n}")).collect();
    assert_eq!(got, want);
    let listed = store
        .list_sessions(&SessionFilter::default())
        .await
        .expect("list");
    assert_eq!(listed.len(), 50);
    assert_eq!(store.events_after(0, 100).await.expect("events").len(), 50);
}

async fn create_skips_the_numbers_it_is_told_to(store: SharedStore) {
    let mut new = new_session("demo", 0);
    new.skip_numbers = vec![1, 2, 4];
    let first = store.create_session(&new).await.expect("create").0;
    let second = store.create_session(&new).await.expect("create").0;
    let third = store.create_session(&new).await.expect("create").0;
    assert_eq!(
        [first.id.0, second.id.0, third.id.0],
        ["demo-3", "demo-5", "demo-6"]
    );
}

async fn each_prefix_counts_on_its_own(store: SharedStore) {
    let a1 = create(&store, "alpha", 0).await;
    let b1 = create(&store, "beta", 1).await;
    let a2 = create(&store, "alpha", 2).await;
    assert_eq!(
        [a1.id.0, b1.id.0, a2.id.0],
        ["alpha-1", "beta-1", "alpha-2"]
    );
}

async fn commit_transition_replaces_trackers_and_timers_and_appends_an_event(store: SharedStore) {
    let (created, created_event) = store
        .create_session(&new_session("demo", 0))
        .await
        .expect("create");

    // Every mutable field changes; a sub-second time checks microseconds survive.
    let mut session = created.clone();
    session.state = SessionState::CiFailed;
    session.reason = Some("ci_failing".into());
    session.workspace = Some("/work/worktrees/demo-1".into());
    session.pr = Some(PrRef {
        number: 17,
        url: "https://github.com/acme/demo/pull/17".into(),
    });
    session.runtime_handle = Some(crate::domain::runtime_handle::RuntimeHandle::from_json(
        &json!({ "tmux": "flotilla-demo-1", "pid": 4242 }),
    ));
    session.activity = Activity::WaitingInput;
    session.activity_at = Some(at(30) + Duration::microseconds(123_456));
    session.restart_count = 2;
    session.updated_at = at(31);
    let first = SessionSnapshot {
        session,
        trackers: BTreeMap::from([
            ("ci-failed".to_string(), tracker("ci-failed", 2, false)),
            (
                "changes-requested".to_string(),
                tracker("changes-requested", 1, true),
            ),
        ]),
        timers: BTreeMap::from([
            ("idle_check".to_string(), timer("idle_check", 90)),
            (
                "escalate:ci-failed".to_string(),
                timer("escalate:ci-failed", 600),
            ),
        ]),
    };
    let event = store
        .commit_transition(&TransitionCommit {
            snapshot: first.clone(),
            event: transition_event(&created.id, SessionState::CiFailed, 31),
            notifications: Vec::new(),
            instructions: Vec::new(),
        })
        .await
        .expect("commit");
    assert!(event.id > created_event.id);
    assert_eq!(event.kind, "session.transition");
    assert_eq!(event.session_id.as_ref(), Some(&created.id));
    assert_eq!(event.data, json!({ "to": "ci_failed" }));
    assert_eq!(store.load_snapshot(&created.id).await.expect("load"), first);

    // The next step drops a tracker, changes the other and disarms every timer.
    let mut second = first.clone();
    second.session.state = SessionState::PrOpen;
    second.session.reason = None;
    second.session.runtime_handle = None;
    second.session.updated_at = at(40);
    second.trackers.remove("ci-failed");
    second.trackers.insert(
        "changes-requested".into(),
        tracker("changes-requested", 3, true),
    );
    second.timers.clear();
    let event2 = store
        .commit_transition(&TransitionCommit {
            snapshot: second.clone(),
            event: transition_event(&created.id, SessionState::PrOpen, 40),
            notifications: Vec::new(),
            instructions: Vec::new(),
        })
        .await
        .expect("commit");
    assert_eq!(
        store.load_snapshot(&created.id).await.expect("load"),
        second
    );
    assert_eq!(
        store.load_session(&created.id).await.expect("load"),
        second.session
    );

    let events = store
        .session_events(&created.id, 0, 100)
        .await
        .expect("events");
    assert_eq!(events, vec![created_event, event, event2]);
}

async fn commit_transition_on_an_unknown_session_writes_nothing(store: SharedStore) {
    let real = create(&store, "demo", 0).await;
    let before = store.last_event_id().await.expect("last id");

    let mut ghost = real.clone();
    ghost.id = SessionId("ghost-1".into());
    let mut commit = bare_commit(&ghost, SessionState::Working, 5);
    commit
        .snapshot
        .trackers
        .insert("ci-failed".into(), tracker("ci-failed", 1, false));
    commit
        .snapshot
        .timers
        .insert("idle_check".into(), timer("idle_check", 60));
    // A fleet-wide event would not even need the session row: it must not be written either.
    commit.event.session_id = None;
    assert_not_found(store.commit_transition(&commit).await, "session ghost-1");

    assert_eq!(store.last_event_id().await.expect("last id"), before);
    assert_eq!(
        store.events_after(before, 10).await.expect("events"),
        vec![]
    );
    assert_not_found(store.load_session(&ghost.id).await, "session ghost-1");
    assert_eq!(store.load_session(&real.id).await.expect("load"), real);
}

async fn events_are_read_after_an_id_in_total_and_per_session(store: SharedStore) {
    assert_eq!(store.last_event_id().await.expect("last id"), 0);
    assert_eq!(store.events_after(0, 10).await.expect("events"), vec![]);

    let one = create(&store, "demo", 0).await;
    let two = create(&store, "demo", 1).await;
    let fleet = store
        .append_event(&NewEvent {
            session_id: None,
            kind: "fleet.paused".into(),
            data: json!({ "by": "ops", "nested": { "list": [1, 2, 3] } }),
            at: at(2),
        })
        .await
        .expect("append fleet event");
    assert_eq!(fleet.session_id, None);
    let output = store
        .append_event(&NewEvent {
            session_id: Some(one.id.clone()),
            kind: "session.output".into(),
            data: json!({ "line": "cargo test: ok" }),
            at: at(3),
        })
        .await
        .expect("append session event");
    store
        .commit_transition(&bare_commit(&two, SessionState::Working, 4))
        .await
        .expect("commit");

    let all = store.events_after(0, 100).await.expect("events");
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ids increase");
    assert_eq!(store.last_event_id().await.expect("last id"), all[4].id);
    assert_eq!(all[2], fleet);
    assert_eq!(all[3], output);

    // Paging: `after` is exclusive and `limit` caps the page.
    assert_eq!(
        ids(&store.events_after(all[1].id, 2).await.expect("page")),
        ids(&all[2..4])
    );
    assert_eq!(
        store.events_after(all[4].id, 10).await.expect("tail"),
        vec![]
    );
    assert_eq!(store.events_after(0, 0).await.expect("zero"), vec![]);
    assert_eq!(store.events_after(0, -1).await.expect("negative"), vec![]);

    let of_one = store.session_events(&one.id, 0, 100).await.expect("events");
    assert_eq!(
        of_one.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["session.created", "session.output"]
    );
    assert!(of_one
        .iter()
        .all(|e| e.session_id.as_ref() == Some(&one.id)));
    assert_eq!(
        store
            .session_events(&one.id, of_one[0].id, 100)
            .await
            .expect("events"),
        vec![output]
    );
    assert_eq!(
        store
            .session_events(&two.id, 0, 1)
            .await
            .expect("events")
            .len(),
        1
    );
}

async fn an_event_for_an_unknown_session_is_not_found(store: SharedStore) {
    let result = store
        .append_event(&NewEvent {
            session_id: Some(SessionId("ghost-3".into())),
            kind: "session.output".into(),
            data: json!({}),
            at: at(0),
        })
        .await;
    assert_not_found(result, "session ghost-3");
    assert_eq!(store.last_event_id().await.expect("last id"), 0);
}

async fn concurrent_commits_publish_event_ids_in_order_without_gaps(store: SharedStore) {
    const WRITERS: usize = 20;
    const ROUNDS: usize = 3;
    let mut sessions = Vec::new();
    for i in 0..WRITERS {
        sessions.push(create(&store, "demo", i as i64).await);
    }
    let start = store.last_event_id().await.expect("last id");
    let expected = WRITERS * ROUNDS;

    // A reader tails the log like an SSE client while the writers commit.
    let reader = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut cursor = start;
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
            while seen.len() < expected && tokio::time::Instant::now() < deadline {
                for event in store.events_after(cursor, 7).await.expect("tail") {
                    assert!(
                        event.id > cursor,
                        "ids go backwards: {} after {cursor}",
                        event.id
                    );
                    cursor = event.id;
                    seen.push(event.id);
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    let writers: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(i, session)| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let states = [
                    SessionState::Working,
                    SessionState::PrOpen,
                    SessionState::Mergeable,
                ];
                for (round, state) in states.into_iter().enumerate() {
                    let secs = 100 + (i * ROUNDS + round) as i64;
                    store
                        .commit_transition(&bare_commit(&session, state, secs))
                        .await
                        .expect("commit");
                }
            })
        })
        .collect();
    for writer in futures::future::join_all(writers).await {
        writer.expect("writer task");
    }
    let seen = reader.await.expect("reader task");

    let committed = ids(&store.events_after(start, 1000).await.expect("events"));
    assert_eq!(committed.len(), expected);
    let contiguous: Vec<i64> = (start + 1..=start + expected as i64).collect();
    assert_eq!(committed, contiguous, "ids are gap-free");
    assert_eq!(seen, committed, "the tailing reader missed no event");
}

async fn count_by_state_counts_each_state_present(store: SharedStore) {
    assert_eq!(store.count_by_state().await.expect("count"), vec![]);
    let sessions = [
        create(&store, "demo", 0).await,
        create(&store, "demo", 1).await,
        create(&store, "demo", 2).await,
        create(&store, "demo", 3).await,
    ];
    for (session, state) in sessions[1..].iter().zip([
        SessionState::Working,
        SessionState::Working,
        SessionState::Killed,
    ]) {
        store
            .commit_transition(&bare_commit(session, state, 10))
            .await
            .expect("commit");
    }
    assert_eq!(
        store.count_by_state().await.expect("count"),
        vec![
            (SessionState::Spawning, 1),
            (SessionState::Working, 2),
            (SessionState::Killed, 1),
        ]
    );
}

async fn list_sessions_filters_by_project_state_and_activity(store: SharedStore) {
    // Twelve sessions created at the same instant: ties order by number, so demo-2 < demo-10.
    let mut all = Vec::new();
    for _ in 0..12 {
        all.push(create(&store, "demo", 0).await);
    }
    let mut other = new_session("other", -5);
    other.project = "other-project".into();
    let other = store.create_session(&other).await.expect("create").0;
    store
        .commit_transition(&bare_commit(&all[1], SessionState::Working, 5))
        .await
        .expect("commit");
    store
        .commit_transition(&bare_commit(&all[2], SessionState::Done, 5))
        .await
        .expect("commit");

    let list = |filter: SessionFilter| {
        let store = Arc::clone(&store);
        async move {
            store
                .list_sessions(&filter)
                .await
                .expect("list")
                .into_iter()
                .map(|s| s.id.0)
                .collect::<Vec<_>>()
        }
    };
    let mut everything = vec!["other-1".to_string()];
    everything.extend((1..=12).map(|n| format!("demo-{n}")));
    assert_eq!(list(SessionFilter::default()).await, everything);
    assert_eq!(
        list(SessionFilter {
            project: Some("other-project".into()),
            ..Default::default()
        })
        .await,
        [other.id.0.as_str()]
    );
    assert_eq!(
        list(SessionFilter {
            states: vec![SessionState::Working, SessionState::Done],
            ..Default::default()
        })
        .await,
        ["demo-2", "demo-3"]
    );
    let active = list(SessionFilter {
        project: Some("demo-project".into()),
        active_only: true,
        ..Default::default()
    })
    .await;
    assert_eq!(active.len(), 11);
    assert!(!active.contains(&"demo-3".to_string()));
    assert_eq!(
        list(SessionFilter {
            states: vec![SessionState::Done],
            active_only: true,
            ..Default::default()
        })
        .await,
        Vec::<String>::new()
    );
}

// ---- webhooks, chat, outbox ------------------------------------------------------------------

async fn a_replayed_webhook_delivery_is_ignored(store: SharedStore) {
    let delivery = WebhookDelivery {
        platform: "github".into(),
        delivery_id: "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
        event: "pull_request".into(),
        payload: r#"{"action":"opened","number":17}"#.into(),
        received_at: at(0),
    };
    assert!(store
        .record_webhook_delivery(&delivery)
        .await
        .expect("first"));
    assert!(!store
        .record_webhook_delivery(&delivery)
        .await
        .expect("replay"));
    // The same delivery id on another platform is another delivery.
    let slack = WebhookDelivery {
        platform: "slack".into(),
        ..delivery.clone()
    };
    assert!(store
        .record_webhook_delivery(&slack)
        .await
        .expect("other platform"));
}

async fn a_writeback_mark_is_claimed_once_until_released(store: SharedStore) {
    let claim = |mark: &'static str| {
        let store = store.clone();
        async move {
            store
                .claim_writeback("demo-1", mark, at(0))
                .await
                .expect("claim")
        }
    };
    assert!(claim("opened.comment").await);
    assert!(!claim("opened.comment").await, "claimed once");
    assert!(claim("opened.move").await, "another part is another mark");
    store
        .release_writeback("demo-1", "opened.move")
        .await
        .expect("release");
    assert!(
        claim("opened.move").await,
        "a released mark is claimed again"
    );
    assert!(!claim("opened.comment").await);
}

async fn a_chat_move_is_kept_per_platform_and_replaced_by_a_later_one(store: SharedStore) {
    let moved = |platform: &'static str, chat: &'static str| {
        let store = store.clone();
        async move { store.chat_moved_to(platform, chat).await.expect("read") }
    };
    assert_eq!(moved("telegram", "-555").await, None, "nothing moved yet");
    store
        .record_chat_move("telegram", "-555", "-100555", at(0))
        .await
        .expect("record");
    assert_eq!(moved("telegram", "-555").await.as_deref(), Some("-100555"));
    store
        .record_chat_move("telegram", "-555", "-100555", at(1))
        .await
        .expect("recording it again is no error");
    assert_eq!(
        moved("telegram", "-100555").await,
        None,
        "the new chat did not move"
    );
    assert_eq!(
        moved("slack", "-555").await,
        None,
        "another platform's chat"
    );
    store
        .record_chat_move("telegram", "-555", "-100777", at(2))
        .await
        .expect("a later move");
    assert_eq!(moved("telegram", "-555").await.as_deref(), Some("-100777"));
}

async fn a_chat_move_is_found_from_the_chat_it_moved_to(store: SharedStore) {
    let from = |platform: &'static str, chat: &'static str| {
        let store = store.clone();
        async move { store.chat_moved_from(platform, chat).await.expect("read") }
    };
    assert_eq!(from("telegram", "-100555").await, None, "nothing moved yet");
    store
        .record_chat_move("telegram", "-555", "-100555", at(0))
        .await
        .expect("record");
    assert_eq!(from("telegram", "-100555").await.as_deref(), Some("-555"));
    assert_eq!(
        from("telegram", "-555").await,
        None,
        "nothing moved to the old chat"
    );
    assert_eq!(
        from("slack", "-100555").await,
        None,
        "another platform's chat"
    );
    store
        .record_chat_move("telegram", "-555", "-100555", at(1))
        .await
        .expect("recording it again is no error");
    assert_eq!(from("telegram", "-100555").await.as_deref(), Some("-555"));
    // Another chat moved to the same one later: the latest move names it.
    store
        .record_chat_move("telegram", "-666", "-100555", at(2))
        .await
        .expect("a later move");
    assert_eq!(from("telegram", "-100555").await.as_deref(), Some("-666"));
    // The old chat moved on: the chat it left no longer names it.
    store
        .record_chat_move("telegram", "-666", "-100777", at(3))
        .await
        .expect("moved on");
    assert_eq!(from("telegram", "-100777").await.as_deref(), Some("-666"));
    assert_eq!(from("telegram", "-100555").await.as_deref(), Some("-555"));
}

async fn the_chat_inbox_dedupes_and_serves_the_oldest_message_first(store: SharedStore) {
    let conv = store
        .upsert_conversation("slack", "C042-1700000000.0001", at(0))
        .await
        .expect("upsert");
    assert_eq!(conv.id, "slack:C042-1700000000.0001");
    assert_eq!(conv.platform, "slack");
    assert_eq!(conv.thread, "C042-1700000000.0001");
    assert_eq!((conv.resume_id.as_ref(), conv.cwd.as_ref()), (None, None));
    assert_eq!((conv.created_at, conv.updated_at), (at(0), at(0)));
    // Upserting again returns the same row and changes nothing.
    assert_eq!(
        store
            .upsert_conversation("slack", "C042-1700000000.0001", at(50))
            .await
            .expect("upsert again"),
        conv
    );
    let quiet = store
        .upsert_conversation("telegram", "991", at(1))
        .await
        .expect("upsert");

    assert_eq!(
        store
            .claim_after_posting(&conv.id, &[], None)
            .await
            .expect("claim"),
        None
    );
    let first = store
        .enqueue_chat_message_with_meta(
            &conv.id,
            "m1",
            "U1",
            "please fix the build",
            &BTreeMap::new(),
            at(10),
        )
        .await
        .expect("enqueue")
        .expect("stored");
    assert_eq!(first.status, MessageStatus::Queued);
    assert_eq!(
        (
            first.conversation_id.as_str(),
            first.platform_message_id.as_str()
        ),
        (conv.id.as_str(), "m1")
    );
    assert_eq!(
        (first.author.as_str(), first.body.as_str()),
        ("U1", "please fix the build")
    );
    assert_eq!(first.received_at, at(10));
    let second = store
        .enqueue_chat_message_with_meta(
            &conv.id,
            "m2",
            "U2",
            "and add a test",
            &BTreeMap::new(),
            at(11),
        )
        .await
        .expect("enqueue")
        .expect("stored");
    assert!(second.id > first.id);
    // A redelivery is not stored twice, even with another body.
    assert_eq!(
        store
            .enqueue_chat_message_with_meta(
                &conv.id,
                "m1",
                "U1",
                "changed",
                &BTreeMap::new(),
                at(12)
            )
            .await
            .expect("redelivery"),
        None
    );
    // The same platform id in another conversation is another message.
    assert!(store
        .enqueue_chat_message_with_meta(&quiet.id, "m1", "U3", "hi", &BTreeMap::new(), at(12))
        .await
        .expect("enqueue")
        .is_some());

    // Claims come in order, each marking its message running.
    let claimed = store
        .claim_after_posting(&conv.id, &[], None)
        .await
        .expect("claim");
    let running = |m: &ChatMessageRecord| ChatMessageRecord {
        status: MessageStatus::Running,
        ..m.clone()
    };
    assert_eq!(
        claimed,
        Some(ClaimedMessage {
            message: running(&first),
            resumed: false
        })
    );
    store
        .settle_chat_message(&conv.id, first.id, MessageStatus::Done, &[], None)
        .await
        .expect("done");
    let claimed = store
        .claim_after_posting(&conv.id, &[], None)
        .await
        .expect("claim");
    assert_eq!(claimed.map(|c| c.message), Some(running(&second)));
    store
        .settle_chat_message(&conv.id, second.id, MessageStatus::Failed, &[], None)
        .await
        .expect("failed");
    assert_eq!(
        store
            .claim_after_posting(&conv.id, &[], None)
            .await
            .expect("claim"),
        None
    );
    assert_eq!(
        store.conversations_with_pending().await.expect("pending"),
        [quiet.id.as_str()]
    );

    store
        .set_resume_id(&conv.id, Some("claude-session-abc"), None)
        .await
        .expect("set resume id");
    let listed = store.list_conversations().await.expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, conv.id, "most recently updated first");
    assert_eq!(listed[0].resume_id.as_deref(), Some("claude-session-abc"));
    store
        .set_resume_id(&conv.id, None, None)
        .await
        .expect("clear");
    let listed = store.list_conversations().await.expect("list");
    assert_eq!(listed[0].resume_id, None);
}

async fn a_running_chat_message_is_served_again_after_a_crash(store: SharedStore) {
    let conv = store
        .upsert_conversation("discord", "chan-7", at(0))
        .await
        .expect("upsert");
    let first = store
        .enqueue_chat_message_with_meta(&conv.id, "1", "U1", "one", &BTreeMap::new(), at(1))
        .await
        .expect("enqueue")
        .expect("stored");
    store
        .enqueue_chat_message_with_meta(&conv.id, "2", "U1", "two", &BTreeMap::new(), at(2))
        .await
        .expect("enqueue")
        .expect("stored");
    store
        .settle_chat_message(&conv.id, first.id, MessageStatus::Running, &[], None)
        .await
        .expect("running");

    // What a restarted bridge sees: the conversation is pending and the running message
    // comes first, to be resumed.
    assert_eq!(
        store.conversations_with_pending().await.expect("pending"),
        [conv.id.as_str()]
    );
    let next = store
        .claim_after_posting(&conv.id, &[], None)
        .await
        .expect("claim")
        .expect("a message");
    assert_eq!(
        (next.message.id, next.message.status, next.resumed),
        (first.id, MessageStatus::Running, true)
    );
}

async fn a_settled_messages_replies_wait_in_order_until_posted(store: SharedStore) {
    let conv = store
        .upsert_conversation("telegram", "42", at(0))
        .await
        .expect("upsert");
    let m = store
        .enqueue_chat_message_with_meta(&conv.id, "1", "U1", "hi", &BTreeMap::new(), at(1))
        .await
        .expect("enqueue")
        .expect("stored");
    store
        .claim_after_posting(&conv.id, &[], None)
        .await
        .expect("claim");
    let edit = ChatReply {
        body: "the streamed text, whole".into(),
        edit_of: Some("77".into()),
    };
    let replies = [
        edit.clone(),
        ChatReply::post("part 2"),
        ChatReply::post("part 3"),
    ];
    let before = Utc::now() - Duration::seconds(1);
    store
        .settle_chat_message(&conv.id, m.id, MessageStatus::Done, &replies, None)
        .await
        .expect("settle");
    let after = Utc::now() + Duration::seconds(1);
    // A settled message is still read by its time (the reply address it carries).
    let since = |t| store.chat_messages_since(&conv.id, t);
    let read: Vec<i64> = since(at(1))
        .await
        .expect("since")
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(read, [m.id]);
    assert!(since(at(2)).await.expect("since").is_empty());

    // The message is done and no longer pending; its conversation is, for its replies.
    assert_eq!(
        store
            .claim_after_posting(&conv.id, &[], None)
            .await
            .expect("claim"),
        None
    );
    assert_eq!(
        store.conversations_with_pending().await.expect("pending"),
        [conv.id.as_str()]
    );
    let unsent = store.unsent_chat_replies(&conv.id).await.expect("unsent");
    let read: Vec<_> = unsent
        .iter()
        .map(|r| (r.message_id, r.reply.clone()))
        .collect();
    assert_eq!(
        read,
        replies
            .iter()
            .map(|r| (m.id, r.clone()))
            .collect::<Vec<_>>()
    );
    assert!(unsent.windows(2).all(|w| w[0].id < w[1].id), "{unsent:?}");
    assert!(unsent.iter().all(|r| r.attempts == 0), "{unsent:?}");
    assert!(
        unsent
            .iter()
            .all(|r| before < r.stored_at && r.stored_at < after),
        "{unsent:?}"
    );

    // A failed attempt is counted; a posted reply is forgotten, twice without harm.
    assert_eq!(
        store.chat_reply_failed(unsent[0].id).await.expect("failed"),
        1
    );
    assert_eq!(
        store.chat_reply_failed(unsent[0].id).await.expect("failed"),
        2
    );
    store.chat_reply_done(unsent[0].id).await.expect("done");
    store
        .chat_reply_done(unsent[0].id)
        .await
        .expect("done again");
    let left = store.unsent_chat_replies(&conv.id).await.expect("unsent");
    assert_eq!(left, unsent[1..]);
    for r in &left {
        store.chat_reply_done(r.id).await.expect("done");
    }
    assert!(store
        .conversations_with_pending()
        .await
        .expect("pending")
        .is_empty());
    assert_not_found(
        store.chat_reply_failed(unsent[1].id).await,
        &format!("chat reply {}", unsent[1].id),
    );
}

async fn the_claim_after_posting_forgets_the_posted_replies_unless_refused(store: SharedStore) {
    let conv = store
        .upsert_conversation("discord", "D1", at(0))
        .await
        .expect("upsert");
    let mut ids = Vec::new();
    for n in 1..=3 {
        let m = store
            .enqueue_chat_message_with_meta(
                &conv.id,
                &n.to_string(),
                "U1",
                "hi",
                &BTreeMap::new(),
                at(n),
            )
            .await
            .expect("enqueue")
            .expect("stored");
        ids.push(m.id);
    }
    let ttl = std::time::Duration::from_secs(60);
    let held = store
        .acquire_lease(LeaseKind::Conversation, &conv.id, "node-a", ttl)
        .await
        .expect("acquire")
        .expect("free");
    let mine = Fence {
        owner: "node-a".into(),
        generation: held.generation,
    };
    let first = store
        .claim_after_posting(&conv.id, &[], Some(&mine))
        .await
        .expect("claim")
        .expect("pending");
    assert_eq!((first.message.id, first.resumed), (ids[0], false));
    store
        .settle_chat_message(
            &conv.id,
            ids[0],
            MessageStatus::Done,
            &[ChatReply::post("one"), ChatReply::post("two")],
            Some(&mine),
        )
        .await
        .expect("settle");
    let unsent = store.unsent_chat_replies(&conv.id).await.expect("unsent");
    let posted: Vec<i64> = unsent.iter().map(|r| r.id).collect();

    // Refused (a stale fence): nothing is claimed and nothing forgotten.
    let stale = Fence {
        owner: "node-b".into(),
        generation: mine.generation + 7,
    };
    let refused = store
        .claim_after_posting(&conv.id, &posted, Some(&stale))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { .. })),
        "{refused:?}"
    );
    assert_eq!(
        store.unsent_chat_replies(&conv.id).await.expect("unsent"),
        unsent
    );

    // The first reply out: forgotten as the next message is claimed; the second stays.
    let next = store
        .claim_after_posting(&conv.id, &posted[..1], Some(&mine))
        .await
        .expect("claim")
        .expect("pending");
    assert_eq!(next.message.id, ids[1]);
    assert_eq!(
        store.unsent_chat_replies(&conv.id).await.expect("unsent"),
        unsent[1..]
    );
    // Nothing left to claim: the replies are forgotten all the same.
    store
        .settle_chat_message(&conv.id, ids[1], MessageStatus::Done, &[], Some(&mine))
        .await
        .expect("settle");
    let third = store
        .claim_after_posting(&conv.id, &[], None)
        .await
        .expect("claim")
        .expect("pending");
    store
        .settle_chat_message(&conv.id, third.message.id, MessageStatus::Failed, &[], None)
        .await
        .expect("settle");
    assert_eq!(
        store
            .claim_after_posting(&conv.id, &posted[1..], None)
            .await
            .expect("claim"),
        None
    );
    assert!(store
        .unsent_chat_replies(&conv.id)
        .await
        .expect("unsent")
        .is_empty());
}

async fn a_fenced_settle_writes_neither_status_nor_replies(store: SharedStore) {
    let conv = store
        .upsert_conversation("slack", "C1", at(0))
        .await
        .expect("upsert");
    let m = store
        .enqueue_chat_message_with_meta(&conv.id, "1", "U1", "hi", &BTreeMap::new(), at(1))
        .await
        .expect("enqueue")
        .expect("stored");
    let ttl = std::time::Duration::from_secs(60);
    let held = store
        .acquire_lease(LeaseKind::Conversation, &conv.id, "node-a", ttl)
        .await
        .expect("acquire")
        .expect("free");
    let mine = Fence {
        owner: "node-a".into(),
        generation: held.generation,
    };
    store
        .claim_after_posting(&conv.id, &[], Some(&mine))
        .await
        .expect("claim");
    let stale = Fence {
        owner: "node-b".into(),
        generation: mine.generation + 7,
    };
    let refused = store
        .settle_chat_message(
            &conv.id,
            m.id,
            MessageStatus::Done,
            &[ChatReply::post("x")],
            Some(&stale),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { .. })),
        "{refused:?}"
    );
    assert!(store
        .unsent_chat_replies(&conv.id)
        .await
        .expect("unsent")
        .is_empty());
    let pending = store
        .pending_chat_messages(&conv.id)
        .await
        .expect("pending");
    assert_eq!(pending.len(), 1, "still running: {pending:?}");

    assert_not_found(
        store
            .settle_chat_message(
                &conv.id,
                m.id + 1000,
                MessageStatus::Done,
                &[ChatReply::post("x")],
                Some(&mine),
            )
            .await,
        &format!("chat message {}", m.id + 1000),
    );
    assert!(store
        .unsent_chat_replies(&conv.id)
        .await
        .expect("unsent")
        .is_empty());
    store
        .settle_chat_message(
            &conv.id,
            m.id,
            MessageStatus::Done,
            &[ChatReply::post("ok")],
            Some(&mine),
        )
        .await
        .expect("settled by its owner");
    assert_eq!(
        store
            .unsent_chat_replies(&conv.id)
            .await
            .expect("unsent")
            .len(),
        1
    );
}

async fn chat_calls_on_unknown_rows_are_not_found(store: SharedStore) {
    assert_not_found(
        store.set_resume_id("slack:nope", Some("x"), None).await,
        "conversation slack:nope",
    );
    assert_not_found(
        store
            .settle_chat_message("slack:nope", 987_654, MessageStatus::Done, &[], None)
            .await,
        "chat message 987654",
    );
    assert_not_found(
        store
            .enqueue_chat_message_with_meta("slack:nope", "m1", "U1", "hi", &BTreeMap::new(), at(0))
            .await,
        "conversation slack:nope",
    );
}

async fn the_outbox_dedupes_and_serves_due_notifications_oldest_first(store: SharedStore) {
    // Created out of order; `late` is not due yet.
    let b = notification(
        "00000000-0000-0000-0000-00000000000b",
        "demo-1:ci.failing:0",
        5,
        5,
    );
    let a = notification(
        "00000000-0000-0000-0000-00000000000a",
        "demo-2:ci.failing:0",
        1,
        9,
    );
    let c = notification(
        "00000000-0000-0000-0000-00000000000c",
        "demo-3:ci.failing:0",
        5,
        6,
    );
    let late = notification(
        "00000000-0000-0000-0000-00000000000d",
        "demo-4:ci.failing:0",
        0,
        60,
    );
    for n in [&b, &a, &c, &late] {
        assert!(store.enqueue_notification(n).await.expect("enqueue"));
    }
    let mut dup = notification("00000000-0000-0000-0000-0000000000ff", &b.dedupe_key, 7, 7);
    dup.message = "same event again".into();
    assert!(!store.enqueue_notification(&dup).await.expect("duplicate"));

    assert_eq!(
        store.due_notifications(at(10), 10).await.expect("due"),
        vec![a.clone(), b.clone(), c.clone()]
    );
    assert_eq!(
        store.due_notifications(at(10), 2).await.expect("due"),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(
        store.due_notifications(at(5), 10).await.expect("due"),
        vec![b.clone()]
    );

    // A failed attempt is retried later; a delivered one is never due again.
    store
        .update_notification(
            &a.id,
            NotificationStatus::Pending,
            1,
            at(30),
            Some("HTTP 502"),
        )
        .await
        .expect("retry later");
    store
        .update_notification(&b.id, NotificationStatus::Delivered, 1, at(5), None)
        .await
        .expect("delivered");
    assert_eq!(
        store.due_notifications(at(10), 10).await.expect("due"),
        vec![c.clone()]
    );
    let retried = store.due_notifications(at(30), 10).await.expect("due");
    assert_eq!(ids_of(&retried), [a.id.as_str(), c.id.as_str()]);
    assert_eq!(retried[0].attempts, 1);
    assert_eq!(retried[0].next_attempt_at, at(30));
    assert_eq!(retried[0].last_error.as_deref(), Some("HTTP 502"));
    store
        .update_notification(&c.id, NotificationStatus::Failed, 5, at(6), Some("gave up"))
        .await
        .expect("failed");
    assert_eq!(
        ids_of(&store.due_notifications(at(100), 10).await.expect("due")),
        [late.id.as_str(), a.id.as_str()]
    );

    assert_not_found(
        store
            .update_notification("missing", NotificationStatus::Delivered, 1, at(0), None)
            .await,
        "notification missing",
    );
}

fn ids_of(notifications: &[NotificationRecord]) -> Vec<&str> {
    notifications.iter().map(|n| n.id.as_str()).collect()
}

/// A post reads back where it went and, while the outbox holds its notification, when that was
/// made and the question it asked; a post whose row is gone reads neither.
async fn a_notification_post_reads_back_what_its_notification_asked(store: SharedStore) {
    let mut n = notification("00000000-0000-0000-0000-0000000000a1", "k-ask", 5, 5);
    n.context["question"] = json!("approve Bash: git push");
    assert!(store.enqueue_notification(&n).await.expect("enqueue"));
    let post = |key: &str, notification: &str| NotificationPost {
        platform: "telegram".into(),
        key: key.into(),
        chat: "555".into(),
        session_id: SessionId("demo-1".into()),
        notification_id: notification.into(),
        created_at: at(9),
        notified_at: None,
        notified_question: None,
    };
    store
        .record_notification_post(&post("555:1", &n.id))
        .await
        .expect("record");
    store
        .record_notification_post(&post("555:2", "gone"))
        .await
        .expect("record");
    let read = store
        .notification_post("telegram", "555:1")
        .await
        .expect("read")
        .expect("post");
    assert_eq!((read.chat.as_str(), read.created_at), ("555", at(9)));
    assert_eq!(read.notified_at, Some(at(5)));
    assert_eq!(
        read.notified_question.as_deref(),
        Some("approve Bash: git push")
    );
    let orphan = store
        .notification_post("telegram", "555:2")
        .await
        .expect("read")
        .expect("post");
    assert_eq!((orphan.notified_at, orphan.notified_question), (None, None));
    assert!(store
        .notification_post("slack", "555:1")
        .await
        .expect("read")
        .is_none());
}

async fn a_notification_reusing_an_id_is_a_conflict(store: SharedStore) {
    let n = notification("00000000-0000-0000-0000-000000000001", "k1", 0, 0);
    assert!(store.enqueue_notification(&n).await.expect("enqueue"));
    let clash = notification(&n.id, "k2", 1, 1);
    match store.enqueue_notification(&clash).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
}

async fn a_step_writes_its_notifications_with_its_event_deduplicated_within_the_window(
    store: SharedStore,
) {
    let session = create(&store, "demo", 0).await;
    let mut commit = bare_commit(&session, SessionState::NeedsInput, 10);
    let mut first = notification("n-1", "slack|demo-1|agent.waiting_input", 10, 10);
    first.dedupe_until = at(70);
    let mut ops = notification("n-2", "ops|demo-1|agent.waiting_input", 10, 10);
    ops.notifier = "ops".into();
    ops.dedupe_until = at(70);
    commit.notifications = vec![first.clone(), ops.clone()];
    store.commit_transition(&commit).await.expect("commit");
    let due = store.due_notifications(at(10), 10).await.expect("due");
    assert_eq!(due, vec![first.clone(), ops.clone()], "read back unchanged");

    // The same group inside its window: the step commits, the notification is dropped.
    let mut again = bare_commit(&session, SessionState::Working, 20);
    let mut repeat = notification("n-3", &first.dedupe_key, 20, 20);
    repeat.dedupe_until = at(80);
    again.notifications = vec![repeat];
    store.commit_transition(&again).await.expect("commit");
    assert_eq!(
        store
            .due_notifications(at(30), 10)
            .await
            .expect("due")
            .len(),
        2
    );

    // After the window a new one is written; the old row keeps its history under an
    // archived key.
    let mut later = bare_commit(&session, SessionState::NeedsInput, 70);
    let mut fresh = notification("n-4", &first.dedupe_key, 70, 70);
    fresh.dedupe_until = at(130);
    later.notifications = vec![fresh.clone()];
    store.commit_transition(&later).await.expect("commit");
    let due = store.due_notifications(at(70), 10).await.expect("due");
    assert_eq!(ids_of(&due), ["n-1", "n-2", "n-4"]);
    assert_eq!(due[0].dedupe_key, format!("{}#n-1", first.dedupe_key));
    assert_eq!(due[2].dedupe_key, first.dedupe_key);

    // A window of zero (`dedupe_until == created_at`) deduplicates nothing.
    let mut zero = bare_commit(&session, SessionState::Working, 71);
    let mut z1 = notification("n-5", "zero", 71, 71);
    z1.dedupe_until = at(71);
    zero.notifications = vec![z1];
    store.commit_transition(&zero).await.expect("commit");
    let mut zero2 = bare_commit(&session, SessionState::NeedsInput, 72);
    let mut z2 = notification("n-6", "zero", 72, 72);
    z2.dedupe_until = at(72);
    zero2.notifications = vec![z2];
    store.commit_transition(&zero2).await.expect("commit");
    assert_eq!(
        store
            .due_notifications(at(80), 10)
            .await
            .expect("due")
            .len(),
        5
    );
}

async fn a_failed_commit_writes_no_notification(store: SharedStore) {
    let session = create(&store, "demo", 0).await;
    let mut ghost = session.clone();
    ghost.id = SessionId("demo-404".into());
    let mut commit = bare_commit(&ghost, SessionState::Errored, 10);
    commit.notifications = vec![notification("n-1", "k", 10, 10)];
    assert_not_found(store.commit_transition(&commit).await, "session demo-404");
    assert!(store
        .due_notifications(at(100), 10)
        .await
        .expect("due")
        .is_empty());
}

async fn notifications_are_listed_counted_deferred_and_folded_into_digests(store: SharedStore) {
    for (i, id) in ["n-1", "n-2", "n-3", "n-4"].iter().enumerate() {
        let secs = i as i64;
        assert!(store
            .enqueue_notification(&notification(id, &format!("k-{id}"), secs, secs))
            .await
            .expect("enqueue"));
    }
    store
        .update_notification(
            "n-1",
            NotificationStatus::Failed,
            8,
            at(9),
            Some("HTTP 500"),
        )
        .await
        .expect("dead-letter");

    let all = store.list_notifications(None, 10).await.expect("list");
    assert_eq!(ids_of(&all), ["n-4", "n-3", "n-2", "n-1"], "newest first");
    assert_eq!(
        ids_of(&store.list_notifications(None, 2).await.expect("list")),
        ["n-4", "n-3"]
    );
    let failed = store
        .list_notifications(Some(NotificationStatus::Failed), 10)
        .await
        .expect("list");
    assert_eq!(ids_of(&failed), ["n-1"]);
    assert_eq!(failed[0].last_error.as_deref(), Some("HTTP 500"));

    // Deferring moves only pending rows.
    let moved = store
        .defer_notifications(&["n-1".into(), "n-2".into(), "nope".into()], at(60))
        .await
        .expect("defer");
    assert_eq!(moved, 1);
    assert_eq!(
        ids_of(&store.due_notifications(at(10), 10).await.expect("due")),
        ["n-3", "n-4"]
    );
    assert_eq!(
        store.defer_notifications(&[], at(60)).await.expect("none"),
        0
    );

    // Folding writes the digest and marks the pending members, atomically.
    let mut digest = notification("d-1", "digest|d-1", 20, 20);
    digest.event = "notifications.digest".into();
    digest.context = json!({ "items": [{ "id": "n-2" }, { "id": "n-3" }] });
    match store
        .fold_into_digest(&digest, &["n-1".into(), "n-2".into(), "n-3".into()])
        .await
    {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("the dead-lettered n-1 cannot be folded: {other:?}"),
    }
    assert!(store
        .list_notifications(Some(NotificationStatus::Digested), 10)
        .await
        .expect("list")
        .is_empty());
    let folded = store
        .fold_into_digest(&digest, &["n-2".into(), "n-3".into()])
        .await
        .expect("fold");
    assert_eq!(folded, 2);
    let due = store.due_notifications(at(100), 10).await.expect("due");
    assert_eq!(ids_of(&due), ["n-4", "d-1"]);
    assert_eq!(due[1], digest);
    let digested = store
        .list_notifications(Some(NotificationStatus::Digested), 10)
        .await
        .expect("list");
    assert_eq!(ids_of(&digested), ["n-3", "n-2"]);
    assert!(digested
        .iter()
        .all(|n| n.digest_id.as_deref() == Some("d-1")));
    match store.fold_into_digest(&digest, &["n-4".into()]).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(
        store
            .list_notifications(Some(NotificationStatus::Pending), 10)
            .await
            .expect("list")
            .len(),
        2,
        "a failed fold changes nothing"
    );

    let mut counts = store.count_notifications().await.expect("count");
    counts.sort_by_key(|(s, _)| s.as_str());
    assert_eq!(
        counts,
        vec![
            (NotificationStatus::Digested, 2),
            (NotificationStatus::Failed, 1),
            (NotificationStatus::Pending, 2),
        ]
    );
}

// ---- backend-specific ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_sqlite_file_still_has_everything() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    // The parent directories do not exist yet: open creates them.
    let path = dir.path().join("state").join("nested").join("flotilla.db");
    let url = format!("sqlite://{}", path.display());

    let (snapshot, conv_id, last_event) = {
        let store = open(&url).await.expect("open");
        let session = create(&store, "demo", 0).await;
        let mut commit = bare_commit(&session, SessionState::Working, 5);
        commit
            .snapshot
            .trackers
            .insert("ci-failed".into(), tracker("ci-failed", 1, false));
        commit
            .snapshot
            .timers
            .insert("idle_check".into(), timer("idle_check", 60));
        let event = store.commit_transition(&commit).await.expect("commit");
        let conv = store
            .upsert_conversation("slack", "T1", at(0))
            .await
            .expect("conversation");
        store
            .enqueue_chat_message_with_meta(&conv.id, "m1", "U1", "hi", &BTreeMap::new(), at(1))
            .await
            .expect("enqueue");
        store
            .enqueue_notification(&notification("n-1", "k-1", 0, 0))
            .await
            .expect("notify");
        (commit.snapshot, conv.id, event)
    };
    assert!(path.exists());

    let store = open(&url).await.expect("reopen");
    assert_eq!(
        store
            .load_snapshot(&snapshot.session.id)
            .await
            .expect("load"),
        snapshot
    );
    assert_eq!(store.last_event_id().await.expect("last id"), last_event.id);
    assert_eq!(store.events_after(0, 10).await.expect("events").len(), 2);
    assert_eq!(
        store.conversations_with_pending().await.expect("pending"),
        [conv_id]
    );
    assert_eq!(
        store.due_notifications(at(0), 10).await.expect("due").len(),
        1
    );
    // The counter survived too: the next id is not reused.
    assert_eq!(create(&store, "demo", 9).await.id.0, "demo-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_sqlite_store_works_and_handles_concurrent_creates() {
    let store = open("sqlite::memory:").await.expect("open in memory");
    store.ping().await.expect("ping");
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.create_session(&new_session("mem", i)).await })
        })
        .collect();
    for task in futures::future::join_all(tasks).await {
        task.expect("task").expect("create");
    }
    let listed = store
        .list_sessions(&SessionFilter::default())
        .await
        .expect("list");
    assert_eq!(listed.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_sqlite_row_is_reported_not_panicked_on() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("flotilla.db").display());
    let store = open(&url).await.expect("open");
    let session = create(&store, "demo", 0).await;

    // Hand-edit the database behind the store's back.
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    sqlx::query("UPDATE sessions SET state = 'exploded' WHERE id = $1")
        .bind(session.id.as_str())
        .execute(&mut conn)
        .await
        .expect("corrupt the row");
    conn.close().await.expect("close");

    for result in [
        store.load_session(&session.id).await.map(drop),
        store
            .list_sessions(&SessionFilter::default())
            .await
            .map(drop),
        store.count_by_state().await.map(drop),
    ] {
        match result {
            Err(StoreError::Corrupt(msg)) => assert!(msg.contains("exploded"), "{msg}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}

/// The property behind the advisory lock, made deterministic: a transaction that took event
/// id N and has not committed yet (a slow writer, e.g. another Flotilla process) must not be
/// overtaken by a later writer's N+1, or a reader resuming "after N+1" would never see N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_slow_event_writer_is_never_overtaken() {
    with_pg_database(|url| async move {
        let store = open(&url).await.expect("open postgres store");
        create(&store, "demo", 0).await;
        let start = store.last_event_id().await.expect("last id");

        // The slow writer follows the store's protocol by hand and stops before committing.
        let mut slow = sqlx::PgConnection::connect(&url).await.expect("connect");
        let mut tx = slow.begin().await.expect("begin");
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(postgres::EVENT_LOG_LOCK)
            .execute(&mut *tx)
            .await
            .expect("lock");
        let slow_id: i64 = sqlx::query_scalar(
            "INSERT INTO events (session_id, kind, data, at) \
             VALUES (NULL, 'fleet.slow', '{}', now()) RETURNING id",
        )
        .fetch_one(&mut *tx)
        .await
        .expect("insert");

        let fast = tokio::spawn({
            let store = Arc::clone(&store);
            async move {
                store
                    .append_event(&NewEvent {
                        session_id: None,
                        kind: "fleet.fast".into(),
                        data: json!({}),
                        at: at(1),
                    })
                    .await
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(
            store.events_after(start, 10).await.expect("events"),
            vec![],
            "a later event became visible before an earlier one committed"
        );
        assert!(
            !fast.is_finished(),
            "the fast writer did not wait for the slow one"
        );

        tx.commit().await.expect("commit");
        let fast = fast.await.expect("task").expect("append");
        assert!(fast.id > slow_id);
        assert_eq!(
            ids(&store.events_after(start, 10).await.expect("events")),
            [slow_id, fast.id]
        );
    })
    .await;
}

#[tokio::test]
async fn opening_a_mysql_url_is_unsupported() {
    match open("mysql://x").await {
        Err(StoreError::UnsupportedUrl(scheme)) => assert_eq!(scheme, "mysql"),
        Err(other) => panic!("expected UnsupportedUrl, got {other:?}"),
        Ok(_) => panic!("expected UnsupportedUrl, got a store"),
    }
}

#[test]
fn redact_url_hides_the_password() {
    let redacted = redact_url("postgres://flotilla:s3cr3t@db.internal:5432/flotilla");
    assert_eq!(
        redacted,
        "postgres://flotilla:***@db.internal:5432/flotilla"
    );
    assert!(!redacted.contains("s3cr3t"));
    // Nothing to hide: unchanged.
    assert_eq!(
        redact_url("postgres://flotilla@127.0.0.1:55432/postgres"),
        "postgres://flotilla@127.0.0.1:55432/postgres"
    );
    assert_eq!(
        redact_url("sqlite://data/flotilla.db"),
        "sqlite://data/flotilla.db"
    );
}

#[test]
fn the_test_database_url_keeps_host_and_options() {
    assert_eq!(
        with_database("postgres://flotilla@127.0.0.1:55432/postgres", "t1"),
        "postgres://flotilla@127.0.0.1:55432/t1"
    );
    assert_eq!(
        with_database("postgres://u:p@h/postgres?sslmode=disable", "t2"),
        "postgres://u:p@h/t2?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://h:5432", "t3"),
        "postgres://h:5432/t3"
    );
}

async fn chat_state_templates_commands_and_meta_round_trip(store: SharedStore) {
    let mut conv = store
        .upsert_conversation("test", "acme/widget#7", at(0))
        .await
        .expect("upsert");
    assert_eq!(
        (conv.worktree.as_ref(), conv.last_command.as_ref()),
        (None, None)
    );
    conv.cwd = Some("/ws/acme/widget".into());
    conv.codebase = Some("acme/widget".into());
    conv.worktree = Some("/wt/widget/issue-7".into());
    conv.last_command = Some("plan".into());
    conv.resume_id = Some("s1".into());
    store
        .update_conversation(&conv, None)
        .await
        .expect("update");
    let back = store.get_conversation(&conv.id).await.expect("get");
    assert_eq!(
        (
            back.cwd,
            back.codebase,
            back.worktree.clone(),
            back.last_command,
            back.resume_id
        ),
        (
            conv.cwd.clone(),
            conv.codebase.clone(),
            conv.worktree.clone(),
            conv.last_command.clone(),
            conv.resume_id.clone()
        )
    );
    assert_eq!(
        store
            .conversations_with_worktree("/wt/widget/issue-7")
            .await
            .expect("users"),
        vec![conv.id.clone()]
    );
    assert!(matches!(
        store.get_conversation("test:nope").await,
        Err(StoreError::NotFound { .. })
    ));
    // Meta is kept with the message; pending lists queued and running ones in order.
    let meta = std::collections::BTreeMap::from([("kind".to_string(), "issue".to_string())]);
    let m = store
        .enqueue_chat_message_with_meta(&conv.id, "c1", "u", "/status", &meta, at(1))
        .await
        .expect("enqueue")
        .expect("stored");
    assert_eq!(m.meta, meta);
    store
        .enqueue_chat_message_with_meta(&conv.id, "c2", "u", "hi", &BTreeMap::new(), at(2))
        .await
        .expect("enqueue");
    let pending = store
        .pending_chat_messages(&conv.id)
        .await
        .expect("pending");
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].meta, meta);
    assert!(pending[1].meta.is_empty());
    // Templates: upsert replaces, list is by name, delete says whether it existed.
    let t = |name: &str, content: &str| ChatTemplateRecord {
        name: name.into(),
        description: format!("about {name}"),
        content: content.into(),
        updated_at: at(3),
    };
    store
        .upsert_chat_template(&t("plan", "v1"))
        .await
        .expect("t");
    store
        .upsert_chat_template(&t("commit", "c"))
        .await
        .expect("t");
    store
        .upsert_chat_template(&t("plan", "v2"))
        .await
        .expect("t");
    let got = store
        .get_chat_template("plan")
        .await
        .expect("get")
        .expect("some");
    assert_eq!((got.content.as_str(), got.updated_at), ("v2", at(3)));
    let names: Vec<String> = store
        .list_chat_templates()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["commit", "plan"]);
    assert!(store.delete_chat_template("plan").await.expect("delete"));
    assert!(!store.delete_chat_template("plan").await.expect("delete"));
    assert_eq!(store.get_chat_template("plan").await.expect("get"), None);
    // Codebase commands merge, a name registered again points at its new path.
    let cmds = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    store
        .add_codebase_commands("acme/widget", &cmds(&[("a", "x/a.md"), ("b", "x/b.md")]))
        .await
        .expect("add");
    store
        .add_codebase_commands("acme/widget", &cmds(&[("a", "y/a.md")]))
        .await
        .expect("add");
    assert_eq!(
        store.codebase_commands("acme/widget").await.expect("get"),
        cmds(&[("a", "y/a.md"), ("b", "x/b.md")])
    );
    assert!(store
        .codebase_commands("other")
        .await
        .expect("get")
        .is_empty());
}

async fn the_newest_event_of_a_kind_is_found_per_project(store: SharedStore) {
    let a = create(&store, "a", 0).await;
    let mut other = new_session("b", 1);
    other.project = "other-project".into();
    let (b, _) = store.create_session(&other).await.expect("create");
    let created = |p: &'static str| {
        let store = store.clone();
        async move {
            store
                .last_project_event_id(p, "session.created")
                .await
                .expect("query")
        }
    };
    let first = created("demo-project").await.expect("a was created");
    assert!(created("other-project").await.expect("b was created") > first);
    assert_eq!(created("nobody").await, None);
    let later = store
        .append_event(&transition_event(&a.id, SessionState::Done, 2))
        .await
        .expect("append");
    store
        .append_event(&transition_event(&b.id, SessionState::Done, 3))
        .await
        .expect("append");
    assert_eq!(
        store
            .last_project_event_id("demo-project", "session.transition")
            .await
            .expect("query"),
        Some(later.id)
    );
    assert_eq!(
        created("demo-project").await,
        Some(first),
        "other kinds don't count"
    );
}

async fn chat_activity_has_each_conversations_newest_message_and_pending_count(store: SharedStore) {
    let a = store
        .upsert_conversation("telegram", "a", at(0))
        .await
        .expect("conversation");
    let b = store
        .upsert_conversation("slack", "b", at(0))
        .await
        .expect("conversation");
    store
        .upsert_conversation("discord", "quiet", at(0))
        .await
        .expect("conversation");
    let mut ids = Vec::new();
    for (i, body) in ["one", "two", "three"].iter().enumerate() {
        let m = store
            .enqueue_chat_message_with_meta(
                &a.id,
                &format!("m{i}"),
                "ada",
                body,
                &BTreeMap::new(),
                at(i as i64),
            )
            .await
            .expect("enqueue")
            .expect("new");
        ids.push(m.id);
    }
    store
        .settle_chat_message(&a.id, ids[0], MessageStatus::Done, &[], None)
        .await
        .expect("status");
    let only = store
        .enqueue_chat_message_with_meta(&b.id, "x", "bob", "hello", &BTreeMap::new(), at(5))
        .await
        .expect("enqueue")
        .expect("new");
    store
        .settle_chat_message(&b.id, only.id, MessageStatus::Failed, &[], None)
        .await
        .expect("status");

    let act = store.chat_activity().await.expect("activity");
    let newest: Vec<(&str, &str)> = act
        .latest
        .iter()
        .map(|m| (m.conversation_id.as_str(), m.body.as_str()))
        .collect();
    assert_eq!(newest, [(a.id.as_str(), "three"), (b.id.as_str(), "hello")]);
    assert_eq!(act.latest[1].status, MessageStatus::Failed);
    assert_eq!(
        act.pending.into_iter().collect::<Vec<_>>(),
        [(a.id.clone(), 2)],
        "two of a's wait; b's failed; quiet has none"
    );
}

// ---- several nodes: chat claims and session creation under leases ---------------------------

/// A chat message is claimed (`queued` → `running`) only under the conversation's current
/// lease; a node whose lease was taken over can neither claim, settle nor store reply state;
/// the new owner gets the interrupted message again and then the rest, each once.
async fn chat_claims_are_fenced_by_the_conversation_lease(store: SharedStore) {
    let ttl = std::time::Duration::from_millis(200);
    let conv = store
        .upsert_conversation("test", "t-1", at(0))
        .await
        .expect("upsert");
    for (i, body) in ["one", "two", "three"].iter().enumerate() {
        store
            .enqueue_chat_message_with_meta(
                &conv.id,
                &format!("m{i}"),
                "tester",
                body,
                &BTreeMap::new(),
                at(1 + i as i64),
            )
            .await
            .expect("enqueue")
            .expect("stored");
    }
    let a = store
        .acquire_lease(LeaseKind::Conversation, &conv.id, "node-a", ttl)
        .await
        .expect("acquire")
        .expect("a free lease is granted");
    let fa = Fence {
        owner: "node-a".into(),
        generation: a.generation,
    };
    assert!(store
        .acquire_lease(LeaseKind::Conversation, &conv.id, "node-b", ttl)
        .await
        .expect("acquire")
        .is_none());
    let first = store
        .claim_after_posting(&conv.id, &[], Some(&fa))
        .await
        .expect("claim")
        .expect("a message");
    assert_eq!(first.message.body, "one");
    assert!(!first.resumed);
    assert_eq!(first.message.status, MessageStatus::Running);
    let forged = Fence {
        owner: "node-b".into(),
        generation: a.generation,
    };
    assert!(matches!(
        store
            .claim_after_posting(&conv.id, &[], Some(&forged))
            .await,
        Err(StoreError::Fenced { .. })
    ));

    // node-a stops renewing; node-b takes the conversation over once the lease expired.
    let taken = {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let t = store
                .take_over_expired("node-b", std::time::Duration::from_secs(60), 10)
                .await
                .expect("take over");
            if !t.is_empty() {
                break t;
            }
            assert!(std::time::Instant::now() < deadline, "never taken over");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].kind, LeaseKind::Conversation);
    assert_eq!(taken[0].generation, a.generation + 1);
    let fb = Fence {
        owner: "node-b".into(),
        generation: taken[0].generation,
    };

    // The old owner's writes are refused and change nothing.
    let refused = store
        .settle_chat_message(
            &conv.id,
            first.message.id,
            MessageStatus::Done,
            &[],
            Some(&fa),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { .. })),
        "{refused:?}"
    );
    let mut state = store.get_conversation(&conv.id).await.expect("conv");
    state.cwd = Some("/elsewhere".into());
    assert!(matches!(
        store.update_conversation(&state, Some(&fa)).await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(matches!(
        store.set_resume_id(&conv.id, Some("r-a"), Some(&fa)).await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(matches!(
        store.claim_after_posting(&conv.id, &[], Some(&fa)).await,
        Err(StoreError::Fenced { .. })
    ));
    let unchanged = store.get_conversation(&conv.id).await.expect("conv");
    assert_eq!(unchanged.cwd, None);
    assert_eq!(unchanged.resume_id, None);
    assert!(store
        .renew_leases("node-a", ttl)
        .await
        .expect("renew")
        .is_empty());

    // The new owner re-runs the interrupted message, then claims the others once each.
    let again = store
        .claim_after_posting(&conv.id, &[], Some(&fb))
        .await
        .expect("claim")
        .expect("the interrupted message");
    assert_eq!(again.message.id, first.message.id);
    assert!(again.resumed, "a message left running is handed out again");
    store
        .update_conversation(&state, Some(&fb))
        .await
        .expect("the owner stores reply state");
    store
        .set_resume_id(&conv.id, Some("r-b"), Some(&fb))
        .await
        .expect("resume id");
    let mut bodies = Vec::new();
    let mut id = again.message.id;
    loop {
        store
            .settle_chat_message(&conv.id, id, MessageStatus::Done, &[], Some(&fb))
            .await
            .expect("settle");
        match store
            .claim_after_posting(&conv.id, &[], Some(&fb))
            .await
            .expect("claim")
        {
            Some(c) => {
                assert!(!c.resumed);
                bodies.push(c.message.body.clone());
                id = c.message.id;
            }
            None => break,
        }
    }
    assert_eq!(bodies, ["two", "three"]);
    let after = store.get_conversation(&conv.id).await.expect("conv");
    assert_eq!(after.cwd.as_deref(), Some("/elsewhere"));
    assert_eq!(after.resume_id.as_deref(), Some("r-b"));
    assert!(store
        .pending_chat_messages(&conv.id)
        .await
        .expect("pending")
        .is_empty());
    // A settle naming another conversation than the message's writes nothing.
    let other = store
        .upsert_conversation("test", "t-2", at(0))
        .await
        .expect("upsert");
    let m = store
        .enqueue_chat_message_with_meta(&other.id, "x", "tester", "x", &BTreeMap::new(), at(9))
        .await
        .expect("enqueue")
        .expect("stored");
    assert!(matches!(
        store
            .settle_chat_message(&conv.id, m.id, MessageStatus::Done, &[], Some(&fb))
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

/// Claims racing on one conversation never hand one queued message to two claimers.
async fn concurrent_chat_claims_take_each_message_once(store: SharedStore) {
    let conv = store
        .upsert_conversation("test", "race", at(0))
        .await
        .expect("upsert");
    for i in 0..20 {
        store
            .enqueue_chat_message_with_meta(
                &conv.id,
                &format!("m{i}"),
                "tester",
                "x",
                &BTreeMap::new(),
                at(i),
            )
            .await
            .expect("enqueue");
    }
    let lease = store
        .acquire_lease(
            LeaseKind::Conversation,
            &conv.id,
            "node-a",
            std::time::Duration::from_secs(60),
        )
        .await
        .expect("acquire")
        .expect("granted");
    let fence = Fence {
        owner: "node-a".into(),
        generation: lease.generation,
    };
    // Each claimer settles what it claimed, so the next claim moves on.
    let claimers = (0..4).map(|_| {
        let store = store.clone();
        let fence = fence.clone();
        let conv = conv.id.clone();
        tokio::spawn(async move {
            let mut fresh = Vec::new();
            while let Some(c) = store
                .claim_after_posting(&conv, &[], Some(&fence))
                .await
                .expect("claim")
            {
                if !c.resumed {
                    fresh.push(c.message.id);
                }
                // A resumed one is another claimer's, being settled right now: settling it
                // twice is harmless, running it twice is what the drain loop prevents.
                let _ = store
                    .settle_chat_message(
                        &conv,
                        c.message.id,
                        MessageStatus::Done,
                        &[],
                        Some(&fence),
                    )
                    .await;
            }
            fresh
        })
    });
    let mut all = Vec::new();
    for c in claimers.collect::<Vec<_>>() {
        all.extend(c.await.expect("claimer"));
    }
    let distinct: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "a message claimed twice: {all:?}"
    );
    assert_eq!(all.len(), 20, "every message claimed once");
}

/// A clustered node creates a session and its lease in one transaction; a fixed id whose
/// lease another node holds creates nothing.
async fn a_session_is_created_with_its_lease(store: SharedStore) {
    let ttl = std::time::Duration::from_secs(60);
    let (s, _, lease) = store
        .create_session_leased(&new_session("lz", 0), "node-a", ttl)
        .await
        .expect("create");
    assert_eq!(lease.key, s.id.0);
    assert_eq!(lease.generation, 1);
    assert_eq!(
        store
            .lease_holder(LeaseKind::Session, s.id.as_str())
            .await
            .expect("holder"),
        Some(Fence {
            owner: "node-a".into(),
            generation: 1
        })
    );
    store
        .acquire_lease(LeaseKind::Session, "lz-orch", "node-b", ttl)
        .await
        .expect("acquire")
        .expect("granted");
    let mut fixed = new_session("lz", 1);
    fixed.fixed_id = Some("lz-orch".into());
    let refused = store.create_session_leased(&fixed, "node-a", ttl).await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { .. })),
        "{refused:?}"
    );
    assert!(matches!(
        store.load_session(&SessionId("lz-orch".into())).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// The cluster-wide turn cap: `cap` slots shared by every node, each taken by one claim, freed
/// by its own token only, renewed with its holder's leases, and free again once its holder
/// stops renewing for a lease time (a dead node) or restarts.
async fn turn_slots_cap_turns_across_nodes(store: SharedStore) {
    let long = std::time::Duration::from_secs(60);
    let short = std::time::Duration::from_millis(300);
    for node in ["node-a", "node-b", "node-c"] {
        store.prepare_turn_slots(node, 2).await.expect("prepare");
    }
    let a = store
        .claim_turn_slot("node-a", "tok-a", "test:a", 2, long)
        .await
        .expect("claim");
    let b = store
        .claim_turn_slot("node-b", "tok-b", "test:b", 2, long)
        .await
        .expect("claim");
    assert_eq!((a, b), (Some(0), Some(1)), "two free slots, two claims");
    assert_eq!(
        store
            .claim_turn_slot("node-c", "tok-c", "test:c", 2, long)
            .await
            .expect("claim"),
        None,
        "the cap is reached whoever asks"
    );
    assert_eq!(store.turn_slots_in_use().await.expect("count"), 2);
    assert!(store.release_turn_slot("tok-b").await.expect("release"));
    assert!(
        !store.release_turn_slot("tok-b").await.expect("release"),
        "freed once"
    );
    assert_eq!(store.turn_slots_in_use().await.expect("count"), 1);

    // node-c takes the freed slot for a short time and stops renewing it (it died); node-a
    // renews its own with its leases and keeps it.
    assert_eq!(
        store
            .claim_turn_slot("node-c", "tok-c", "test:c", 2, short)
            .await
            .expect("claim"),
        Some(1)
    );
    store.renew_leases("node-a", long).await.expect("renew");
    let taken = {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(slot) = store
                .claim_turn_slot("node-b", "tok-b2", "test:b", 2, long)
                .await
                .expect("claim")
            {
                break slot;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the dead node's slot never freed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    assert_eq!(taken, 1, "the expired slot, not node-a's renewed one");
    assert!(
        !store.release_turn_slot("tok-c").await.expect("release"),
        "the dead node's stale token frees nothing"
    );
    assert_eq!(store.turn_slots_in_use().await.expect("count"), 2);
    store.renew_leases("node-c", long).await.expect("renew");
    assert_eq!(
        store
            .claim_turn_slot("node-c", "tok-c2", "test:c", 2, long)
            .await
            .expect("claim"),
        None,
        "renewing a lost slot does not take it back"
    );

    // A restarted node-a starts with none of its former slots.
    store
        .prepare_turn_slots("node-a", 2)
        .await
        .expect("prepare");
    assert_eq!(store.turn_slots_in_use().await.expect("count"), 1);
    assert_eq!(
        store
            .claim_turn_slot("node-c", "tok-c3", "test:c", 2, long)
            .await
            .expect("claim"),
        Some(0)
    );
    // A larger cap on one node adds slots; a smaller one never uses those above it.
    store
        .prepare_turn_slots("node-d", 3)
        .await
        .expect("prepare");
    assert_eq!(
        store
            .claim_turn_slot("node-d", "tok-d", "test:d", 2, long)
            .await
            .expect("claim"),
        None
    );
    assert_eq!(
        store
            .claim_turn_slot("node-d", "tok-d", "test:d", 3, long)
            .await
            .expect("claim"),
        Some(2)
    );
}

/// Many concurrent claimers on several nodes: exactly `cap` get a slot.
async fn concurrent_turn_slot_claims_never_exceed_the_cap(store: SharedStore) {
    store
        .prepare_turn_slots("node-a", 3)
        .await
        .expect("prepare");
    let claimers = (0..24).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .claim_turn_slot(
                    &format!("node-{}", i % 3),
                    &format!("tok-{i}"),
                    &format!("test:{i}"),
                    3,
                    std::time::Duration::from_secs(60),
                )
                .await
                .expect("claim")
        })
    });
    let mut got = Vec::new();
    for c in claimers.collect::<Vec<_>>() {
        if let Some(slot) = c.await.expect("claimer") {
            got.push(slot);
        }
    }
    got.sort_unstable();
    assert_eq!(
        got,
        [0, 1, 2],
        "each slot claimed once, no more than the cap"
    );
    assert_eq!(store.turn_slots_in_use().await.expect("count"), 3);
}

mod cluster_on_sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn turn_slots_cap_turns_across_nodes() {
        super::on_sqlite(super::turn_slots_cap_turns_across_nodes).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_turn_slot_claims_never_exceed_the_cap() {
        super::on_sqlite(super::concurrent_turn_slot_claims_never_exceed_the_cap).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chat_claims_are_fenced_by_the_conversation_lease() {
        super::on_sqlite(super::chat_claims_are_fenced_by_the_conversation_lease).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_chat_claims_take_each_message_once() {
        super::on_sqlite(super::concurrent_chat_claims_take_each_message_once).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_is_created_with_its_lease() {
        super::on_sqlite(super::a_session_is_created_with_its_lease).await;
    }
}

mod cluster_on_postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn turn_slots_cap_turns_across_nodes() {
        super::on_postgres(super::turn_slots_cap_turns_across_nodes).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_turn_slot_claims_never_exceed_the_cap() {
        super::on_postgres(super::concurrent_turn_slot_claims_never_exceed_the_cap).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chat_claims_are_fenced_by_the_conversation_lease() {
        super::on_postgres(super::chat_claims_are_fenced_by_the_conversation_lease).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_chat_claims_take_each_message_once() {
        super::on_postgres(super::concurrent_chat_claims_take_each_message_once).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_is_created_with_its_lease() {
        super::on_postgres(super::a_session_is_created_with_its_lease).await;
    }
}

/// A message to a conversation that exists takes no write to find it: the upsert reads it
/// while another writer holds SQLite's write lock (before, it queued behind every write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserting_a_conversation_that_exists_takes_no_write() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("flotilla.db").display());
    let store = open(&url).await.expect("open");
    let created = store
        .upsert_conversation("slack", "C1:1.2", Utc::now())
        .await
        .expect("created");
    let mut writer = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut writer)
        .await
        .expect("hold the write lock");
    let found = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        store.upsert_conversation("slack", "C1:1.2", Utc::now()),
    )
    .await
    .expect("answered while the write lock is held")
    .expect("found");
    assert_eq!(found, created);
    sqlx::query("COMMIT")
        .execute(&mut writer)
        .await
        .expect("release");
}
