//! Several nodes on one PostgreSQL (issue 14, part 2): three real `flotilla serve` processes
//! share a database; one is killed with `kill -9`; the others take over its sessions within
//! the lease time, and no instruction or notification is doubled. A store-level test shows a
//! write by a fenced old owner is refused.
//!
//! On a laptop without `FLOTILLA_TEST_PG_URL` these skip; under `CI=true` they fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use futures::{stream, StreamExt};
use serde_json::{json, Value};
use sqlx::Connection;

use flotilla::store::{
    self, Fence, LeaseKind, NewEvent, NewSession, SessionSnapshot, SessionState, SharedStore,
    StoreError, TransitionCommit,
};

use crate::fleet_plugins::scripted_agent_path;
use crate::helpers::*;
use crate::receivers::*;
use crate::server::*;

/// Sessions in the three-node test.
const SESSIONS: usize = 100;
/// Lease time of the test's nodes.
const LEASE_TTL: &str = "3s";

// ---- store level: fencing -------------------------------------------------------------------

fn commit_to(snapshot: &SessionSnapshot, state: SessionState, by: &str) -> TransitionCommit {
    let mut snapshot = snapshot.clone();
    snapshot.session.state = state;
    snapshot.session.updated_at = Utc::now();
    TransitionCommit {
        event: NewEvent {
            session_id: Some(snapshot.session.id.clone()),
            kind: "session.transition".into(),
            data: json!({ "to": state.as_str(), "by": by }),
            at: Utc::now(),
        },
        snapshot,
        notifications: Vec::new(),
        instructions: Vec::new(),
    }
}

async fn fenced_old_owner_is_refused(store: SharedStore) {
    let (created, _) = store
        .create_session(&NewSession {
            project: "demo".into(),
            prefix: "demo".into(),
            agent: "scripted".into(),
            runtime: "process".into(),
            workspace_kind: "worktree".into(),
            branch: None,
            issue: None,
            prompt: Some("work".into()),
            skip_numbers: vec![],
            fixed_id: None,
            meta: json!({}),
            at: Utc::now(),
        })
        .await
        .expect("create");
    let id = created.id.clone();
    let short = Duration::from_millis(200);
    let a = store
        .acquire_lease(LeaseKind::Session, id.as_str(), "node-a", short)
        .await
        .expect("acquire")
        .expect("a free lease is granted");
    assert_eq!(a.generation, 1);
    assert!(
        store
            .acquire_lease(LeaseKind::Session, id.as_str(), "node-b", short)
            .await
            .expect("acquire")
            .is_none(),
        "a held lease is not granted to another node"
    );
    // Node A stops renewing (paused, partitioned); node B takes the lease over once it expired.
    let taken = eventually(10, "lease taken over", || {
        let store = store.clone();
        async move {
            let t = store
                .take_over_expired("node-b", Duration::from_secs(60), 10)
                .await
                .expect("take over");
            (!t.is_empty()).then_some(t)
        }
    })
    .await;
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].key, id.0);
    assert_eq!(taken[0].generation, 2, "a takeover bumps the generation");

    let snapshot = store.load_snapshot(&id).await.expect("snapshot");
    let old = Fence {
        owner: "node-a".into(),
        generation: 1,
    };
    let refused = store
        .commit_transition_fenced(&commit_to(&snapshot, SessionState::Killed, "node-a"), &old)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { generation: 1, .. })),
        "the old owner's write is refused: {refused:?}"
    );
    assert_eq!(
        store.load_session(&id).await.expect("row").state,
        created.state,
        "nothing of the refused write is stored"
    );
    let new = Fence {
        owner: "node-b".into(),
        generation: 2,
    };
    store
        .commit_transition_fenced(&commit_to(&snapshot, SessionState::Working, "node-b"), &new)
        .await
        .expect("the new owner writes");
    assert_eq!(
        store.load_session(&id).await.expect("row").state,
        SessionState::Working
    );
    // Renewal by the old owner returns nothing: it learns it lost the lease.
    assert!(store
        .renew_leases("node-a", short)
        .await
        .expect("renew")
        .is_empty());
    assert_eq!(
        store
            .renew_leases("node-b", short)
            .await
            .expect("renew")
            .len(),
        1
    );
}

fn new_session_at(at: chrono::DateTime<Utc>) -> NewSession {
    NewSession {
        project: "demo".into(),
        prefix: "demo".into(),
        agent: "scripted".into(),
        runtime: "process".into(),
        workspace_kind: "worktree".into(),
        branch: None,
        issue: None,
        prompt: Some("work".into()),
        skip_numbers: vec![],
        fixed_id: None,
        meta: json!({}),
        at,
    }
}

/// A node that died between creating a session and leasing it left a live session without a
/// lease row: another node's takeover claims it once it is older than a lease time.
async fn unleased_live_session_is_claimed(store: SharedStore) {
    let (old, _) = store
        .create_session(&new_session_at(Utc::now() - chrono::Duration::hours(1)))
        .await
        .expect("create");
    let (fresh, _) = store
        .create_session(&new_session_at(Utc::now()))
        .await
        .expect("create");
    let ttl = Duration::from_secs(60);
    let taken = store
        .take_over_expired("node-b", ttl, 10)
        .await
        .expect("take over");
    let keys: Vec<&str> = taken.iter().map(|l| l.key.as_str()).collect();
    assert_eq!(keys, vec![old.id.as_str()], "only the old unleased one");
    assert_eq!(taken[0].generation, 1);
    assert_eq!(
        store
            .lease_holder(LeaseKind::Session, fresh.id.as_str())
            .await
            .expect("holder"),
        None,
        "a session being created keeps its own lease to take"
    );
    assert!(
        store
            .take_over_expired("node-c", ttl, 10)
            .await
            .expect("take over")
            .is_empty(),
        "claimed once"
    );
}

#[actix_web::test]
async fn an_unleased_live_session_is_claimed_on_postgres() {
    let Some(url) = fresh_pg_url().await else {
        return;
    };
    unleased_live_session_is_claimed(store::open(&url).await.expect("store")).await;
}

#[actix_web::test]
async fn an_unleased_live_session_is_claimed_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/u.db", dir.path().display());
    unleased_live_session_is_claimed(store::open(&url).await.expect("store")).await;
}

#[actix_web::test]
async fn a_write_by_a_fenced_old_owner_is_refused_on_postgres() {
    let Some(url) = fresh_pg_url().await else {
        return;
    };
    fenced_old_owner_is_refused(store::open(&url).await.expect("store")).await;
}

#[actix_web::test]
async fn a_write_by_a_fenced_old_owner_is_refused_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/f.db", dir.path().display());
    fenced_old_owner_is_refused(store::open(&url).await.expect("store")).await;
}

// ---- three nodes ----------------------------------------------------------------------------

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = http_client()
        .post(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("post");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn states(base: &str) -> BTreeMap<String, String> {
    let v: Value = http_client()
        .get(format!("{base}/api/v1/sessions"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    v["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_string(),
                s["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Lease owners of the sessions, read from the shared database.
async fn owners(url: &str) -> BTreeMap<String, String> {
    let mut c = sqlx::PgConnection::connect(url).await.expect("pg");
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT key, owner FROM leases WHERE kind = 'session'")
            .fetch_all(&mut c)
            .await
            .expect("leases");
    rows.into_iter().collect()
}

/// How many times the agent of `id` echoed `line` (what it received).
fn received(home: &Path, id: &str, line: &str) -> usize {
    let log = std::fs::read_to_string(home.join("runtime").join(id).join("output.log"))
        .unwrap_or_default();
    let want = format!("got: {line}");
    log.lines().filter(|l| l.trim_end() == want).count()
}

#[actix_web::test]
async fn three_nodes_take_over_a_killed_node_and_double_nothing() {
    if !require_tool("git") {
        return;
    }
    let Some(url) = fresh_pg_url().await else {
        return;
    };
    let r = Receivers::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let repo = make_repo(dir.path());
    let agent = format!(
        "  scripted: {{ kind: command, command: [\"{}\"] }}\n",
        scripted_agent_path().display()
    );
    let extra = format!(
        "notifiers:\n  hook: {{ kind: webhook, url: \"{hook}\", secret: \"{WEBHOOK_SECRET}\" }}\n\
         defaults: {{ notifiers: [hook] }}\n\
         notifications: {{ poll_interval: 200ms, dedupe_window: 0s, rate_limit: {{ max: 10000, window: 1m }} }}\n\
         cluster: {{ lease_ttl: {LEASE_TTL}, renew_interval: 500ms }}\n",
        hook = r.webhook_url()
    );
    let cfg = write_config_agents(dir.path(), &repo, &url, &agent, &extra);

    let mut nodes = Vec::new();
    for name in ["node-a", "node-b", "node-c"] {
        let cwd = dir.path().join(name);
        std::fs::create_dir_all(&cwd).expect("node dir");
        let node = ServerProc::start_with_env(
            &cwd,
            &home,
            &cfg,
            free_port(),
            &[("FLOTILLA__CLUSTER__NODE_ID", name)],
        )
        .await;
        nodes.push(node);
    }
    let bases: Vec<String> = nodes.iter().map(|n| n.address.clone()).collect();

    let t0 = std::time::Instant::now();
    // 100 sessions, spawned round-robin on the three nodes.
    let ids: Vec<String> = stream::iter(0..SESSIONS)
        .map(|i| {
            let base = bases[i % bases.len()].clone();
            async move {
                let (st, v) = post(
                    &base,
                    "/api/v1/sessions",
                    json!({"project": "demo", "prompt": "IDLE"}),
                )
                .await;
                assert_eq!(st, 201, "{v}");
                v["id"].as_str().expect("id").to_string()
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let all: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(all.len(), SESSIONS, "distinct ids");
    wait_all_working(&bases[1], &all, dir.path()).await;
    eprintln!("{SESSIONS} sessions working after {:?}", t0.elapsed());
    let before = owners(&url).await;
    let by_a: BTreeSet<String> = before
        .iter()
        .filter(|(_, o)| o.as_str() == "node-a")
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(before.len(), SESSIONS, "every session is leased");
    assert!(!by_a.is_empty(), "node-a owns some sessions: {before:?}");
    let pids: Vec<i32> = by_a.iter().map(|id| agent_pid(&home, id)).collect();

    nodes[0].kill9();
    for p in &pids {
        assert!(alive(*p), "agents outlive their node");
    }

    // Taken over by the survivors once the leases expire (the deadline is generous for a busy
    // machine; the lease time is 3s).
    let after = slowly(120, "node-a's sessions taken over", || {
        let url = url.clone();
        let by_a = by_a.clone();
        async move {
            let o = owners(&url).await;
            by_a.iter()
                .all(|id| matches!(o.get(id).map(String::as_str), Some("node-b" | "node-c")))
                .then_some(o)
        }
    })
    .await;
    assert!(after.values().all(|o| o != "node-a"));
    eprintln!("taken over after {:?}", t0.elapsed());
    // The API names each session's owner (`node`), whichever node answers.
    let moved = by_a.iter().next().expect("one of node-a's sessions");
    let listed = reqwest::Client::new()
        .get(format!("{}/api/v1/sessions", bases[2]))
        .bearer_auth(crate::helpers::TOKEN)
        .send()
        .await
        .expect("list")
        .json::<Value>()
        .await
        .expect("json");
    let row = listed["sessions"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == moved.as_str()))
        .expect("listed");
    assert_eq!(
        row["node"].as_str(),
        after.get(moved).map(String::as_str),
        "{row}"
    );

    // One instruction to every session, all through node-b (node-c's are forwarded to it
    // through the store).
    let sent: Vec<(String, u16, Value)> = stream::iter(ids.clone())
        .map(|id| {
            let base = bases[1].clone();
            async move {
                let (st, v) = post(
                    &base,
                    &format!("/api/v1/sessions/{id}/send"),
                    json!({"message": format!("hello {id}")}),
                )
                .await;
                (id, st, v)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    eprintln!("sent after {:?}", t0.elapsed());
    for (id, st, v) in &sent {
        assert_eq!(*st, 200, "{id}: {v}");
    }
    slowly(120, "every agent got its instruction", || async {
        ids.iter()
            .all(|id| received(&home, id, &format!("hello {id}")) >= 1)
            .then_some(())
    })
    .await;

    // A kill sent to a node that does not own the session runs on its owner.
    let victim = after
        .iter()
        .find(|(_, o)| o.as_str() == "node-b")
        .map(|(k, _)| k.clone())
        .expect("node-b owns a session");
    let (st, v) = post(
        &bases[2],
        &format!("/api/v1/sessions/{victim}/kill"),
        json!({}),
    )
    .await;
    assert_eq!(st, 200, "kill forwarded to the owner: {v}");
    slowly(60, "the forwarded kill done", || async {
        (states(&bases[2]).await.get(&victim).map(String::as_str) == Some("killed")).then_some(())
    })
    .await;
    let ids: Vec<String> = ids.into_iter().filter(|id| *id != victim).collect();
    let sessions = ids.len();

    // Every agent exits: one urgent notification each, delivered by exactly one node.
    stream::iter(ids.clone())
        .map(|id| {
            let base = bases[2].clone();
            async move {
                let (st, v) = post(
                    &base,
                    &format!("/api/v1/sessions/{id}/send"),
                    json!({"message": "exit 3"}),
                )
                .await;
                assert_eq!(st, 200, "{id}: {v}");
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    let hooks = slowly(120, "a notification per exited agent", || async {
        let exited: Vec<Value> = r
            .delivered(Target::Webhook)
            .into_iter()
            .map(|h| h.body)
            .filter(|b| b["event"] == "agent.exited")
            .collect();
        (exited.len() >= sessions).then_some(exited)
    })
    .await;

    for id in &ids {
        assert_eq!(
            received(&home, id, &format!("hello {id}")),
            1,
            "{id} got its instruction once"
        );
    }
    let mut per_session: BTreeMap<String, usize> = BTreeMap::new();
    for h in &hooks {
        *per_session
            .entry(h["session"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_session.len(), sessions, "{per_session:?}");
    assert!(
        per_session.values().all(|n| *n == 1),
        "one agent.exited notification per session: {per_session:?}"
    );
    let repeats: Vec<(String, usize)> = r
        .webhook_ids()
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(
        repeats.is_empty(),
        "no notification delivered twice: {repeats:?}"
    );
}

/// [`eventually_every`] at the cluster tests' 250 ms.
async fn slowly<T, F, Fut>(secs: u64, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_every(Duration::from_millis(250), secs, what, f).await
}

/// Waits until every session of `all` is `working`; on timeout names the others and their
/// states, with the warnings in the nodes' logs (under `dir/node-*/server.log`).
async fn wait_all_working(base: &str, all: &BTreeSet<String>, dir: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let s = states(base).await;
        let behind: BTreeMap<&String, &str> = all
            .iter()
            .map(|id| (id, s.get(id).map(String::as_str).unwrap_or("missing")))
            .filter(|(_, st)| *st != "working")
            .collect();
        if behind.is_empty() {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let mut logs = String::new();
            for node in ["node-a", "node-b", "node-c"] {
                let text =
                    std::fs::read_to_string(dir.join(node).join("server.log")).unwrap_or_default();
                for l in text
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                    .take(40)
                {
                    logs.push_str(&format!("{node}: {l}\n"));
                }
            }
            panic!("timed out waiting for every session working: {behind:?}\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The node's live session actors, from its `/metrics`.
async fn session_actors(base: &str) -> Option<i64> {
    let text = http_client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("flotilla_session_actors "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
}

async fn pg_exec(url: &str, sql: &str, key: &str) {
    let mut c = sqlx::PgConnection::connect(url).await.expect("pg");
    sqlx::query(sql)
        .bind(key)
        .execute(&mut c)
        .await
        .expect("update lease");
}

async fn events_of(url: &str, id: &str, kind: &str) -> i64 {
    let mut c = sqlx::PgConnection::connect(url).await.expect("pg");
    sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE session_id = $1 AND kind = $2")
        .bind(id)
        .bind(kind)
        .fetch_one(&mut c)
        .await
        .expect("count events")
}

/// A node that loses a session's lease and takes it back later drives it with one actor:
/// the actor dropped at the loss stops (it used to keep its timers and exit watch, so after
/// the takeback two actors saw the agent exit and the session had two `agent.exited`).
#[actix_web::test]
async fn a_lease_lost_and_taken_back_leaves_one_actor() {
    if !require_tool("git") {
        return;
    }
    let Some(url) = fresh_pg_url().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let repo = make_repo(dir.path());
    let agent = format!(
        "  scripted: {{ kind: command, command: [\"{}\"] }}\n",
        scripted_agent_path().display()
    );
    let extra = "cluster: { lease_ttl: 2s, renew_interval: 200ms }\n";
    let cfg = write_config_agents(dir.path(), &repo, &url, &agent, extra);
    let cwd = dir.path().join("node-b");
    std::fs::create_dir_all(&cwd).expect("node dir");
    let node = ServerProc::start_with_env(
        &cwd,
        &home,
        &cfg,
        free_port(),
        &[("FLOTILLA__CLUSTER__NODE_ID", "node-b")],
    )
    .await;
    let base = node.address.clone();
    let (st, v) = post(
        &base,
        "/api/v1/sessions",
        json!({"project": "demo", "prompt": "IDLE"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    slowly(60, "the session working", || async {
        (states(&base).await.get(&id).map(String::as_str) == Some("working")).then_some(())
    })
    .await;
    assert_eq!(session_actors(&base).await, Some(1));

    // Another node takes the lease (as after a pause longer than the lease time).
    pg_exec(
        &url,
        "UPDATE leases SET owner = 'node-x', generation = generation + 1, \
         expires_at_ms = (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT + 600000 \
         WHERE kind = 'session' AND key = $1",
        &id,
    )
    .await;
    slowly(30, "node-b's actor stopped after the loss", || async {
        (session_actors(&base).await == Some(0)).then_some(())
    })
    .await;

    // node-x dies: its lease expires and node-b takes the session back.
    pg_exec(
        &url,
        "UPDATE leases SET expires_at_ms = 0 WHERE kind = 'session' AND key = $1",
        &id,
    )
    .await;
    slowly(30, "node-b took the session back", || async {
        (owners(&url).await.get(&id).map(String::as_str) == Some("node-b")).then_some(())
    })
    .await;
    slowly(30, "one actor for the session again", || async {
        (session_actors(&base).await == Some(1)).then_some(())
    })
    .await;

    let (st, v) = post(
        &base,
        &format!("/api/v1/sessions/{id}/send"),
        json!({"message": "exit 3"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    slowly(60, "the session errored", || async {
        (states(&base).await.get(&id).map(String::as_str) == Some("errored")).then_some(())
    })
    .await;
    slowly(30, "the ended session's actor stopped", || async {
        (session_actors(&base).await == Some(0)).then_some(())
    })
    .await;
    assert_eq!(
        events_of(&url, &id, "agent.exited").await,
        1,
        "one agent.exited for one exit"
    );
}
