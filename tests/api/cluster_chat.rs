//! Chat conversations on several nodes sharing one PostgreSQL (issue 14, part 2): three real
//! `flotilla serve` processes with the test chat platform. Messages of many conversations
//! arrive at random nodes and each is answered once, by the node owning its conversation;
//! the owner of some conversations is killed with `kill -9` in the middle of their turns, the
//! others take those conversations over, re-run only the interrupted turns and answer every
//! queued message; a write by the fenced old owner is refused. `chat.max_concurrent` caps
//! the turns of all nodes together (the assistant counts them), a dead node's slots free
//! themselves after the lease time, and a node paused past it stops the turn of the
//! conversation it lost.
//!
//! Each node's test platform keeps the replies it sent in its own memory, so "answered once"
//! is counted over the nodes' reply lists. On a laptop without `FLOTILLA_TEST_PG_URL` this
//! skips; under `CI=true` it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::Connection;

use flotilla::store::{self, Fence, MessageStatus, StoreError};

use crate::chat::chat_yaml;
use crate::helpers::*;
use crate::server::*;

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// Conversations answered in the first round (two messages each).
const CONVERSATIONS: usize = 24;
/// Conversations whose turns are under way when their owner is killed (fewer than
/// `chat.max_concurrent` = 10, the cluster's cap, so all of them start at once).
const HELD: usize = 9;

async fn post_message(base: &str, thread: &str, text: &str) -> Value {
    let r = http_client()
        .post(format!("{base}/api/v1/chat/test/messages"))
        .bearer_auth(TOKEN)
        .json(&json!({"thread": thread, "text": text}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.expect("receipt")
}

/// The replies node `base` sent to `thread` (none when the node is gone).
async fn replies(base: &str, thread: &str) -> Vec<String> {
    let Ok(r) = http_client()
        .get(format!("{base}/api/v1/chat/test/replies?thread={thread}"))
        .bearer_auth(TOKEN)
        .send()
        .await
    else {
        return Vec::new();
    };
    let v: Value = r.json().await.unwrap_or(Value::Null);
    v["replies"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["text"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The assistant's answers to `tag` sent by each node, in `(node, count)`.
async fn answers(bases: &[(String, String)], thread: &str, tag: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (node, base) in bases {
        let n = replies(base, thread)
            .await
            .iter()
            .filter(|t| t.starts_with("echo:") && t.contains(&format!("{tag} ")))
            .count();
        if n > 0 {
            out.insert(node.clone(), n);
        }
    }
    out
}

/// `(tag, event)` of every scripted assistant run (`start`/`end`), from its shared log.
fn runs(log: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            let prompt = v["prompt"].as_str().unwrap_or_default().to_string();
            let tag = prompt
                .split_whitespace()
                .find(|w| w.starts_with("tag-"))?
                .to_string();
            Some((tag, v["event"].as_str().unwrap_or_default().to_string()))
        })
        .collect()
}

fn count(runs: &[(String, String)], tag: &str, event: &str) -> usize {
    runs.iter().filter(|(t, e)| t == tag && e == event).count()
}

/// Status and claimer of every chat message, by its body's tag. A message settled with
/// replies still to post reads `replying`: `done` is answered.
async fn messages(url: &str) -> BTreeMap<String, (String, Option<String>)> {
    let mut c = sqlx::PgConnection::connect(url).await.expect("pg");
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT body, CASE WHEN EXISTS (SELECT 1 FROM chat_replies r WHERE r.message_id = m.id) \
         THEN 'replying' ELSE status END, claimed_by FROM chat_messages m",
    )
    .fetch_all(&mut c)
    .await
    .expect("messages");
    rows.into_iter()
        .filter_map(|(body, status, by)| {
            let tag = body.split_whitespace().find(|w| w.starts_with("tag-"))?;
            Some((tag.to_string(), (status, by)))
        })
        .collect()
}

/// Conversation lease owners and generations, by conversation id.
async fn conversation_leases(url: &str) -> BTreeMap<String, (String, i64)> {
    let mut c = sqlx::PgConnection::connect(url).await.expect("pg");
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT key, owner, generation FROM leases WHERE kind = 'conversation'")
            .fetch_all(&mut c)
            .await
            .expect("leases");
    rows.into_iter().map(|(k, o, g)| (k, (o, g))).collect()
}

/// A node picked at random for each message.
fn random_node() -> usize {
    usize::from(uuid::Uuid::new_v4().as_bytes()[0]) % NODES.len()
}

/// [`eventually_every`] at the cluster tests' 250 ms.
async fn slowly<T, F, Fut>(secs: u64, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_every(Duration::from_millis(250), secs, what, f).await
}

/// Real `flotilla serve` nodes on one fresh PostgreSQL database with the test platform and
/// the scripted assistant, leases of 3 s renewed every 300 ms, and the `/say` template.
struct Nodes {
    /// The nodes, in [`NODES`] order (first field: they stop before the directory goes).
    procs: Vec<ServerProc>,
    /// `(node name, address)` of the nodes still alive.
    bases: Vec<(String, String)>,
    url: String,
    /// The chat directory (`chat_yaml`'s base).
    base: PathBuf,
    /// The scripted assistant's log.
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Nodes {
    /// `count` nodes with `chat.max_concurrent: cap` and `more` under `chat:`; `None` when
    /// skipped (no git, or no PostgreSQL outside CI).
    async fn start(count: usize, cap: usize, more: &str) -> Option<Nodes> {
        if !require_tool("git") {
            return None;
        }
        let url = fresh_pg_url().await?;
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        let repo = make_repo(dir.path());
        let base = dir.path().join("chat");
        std::fs::create_dir_all(&base).expect("mkdir");
        let extra = format!(
            "{}cluster: {{ lease_ttl: 3s, renew_interval: 300ms }}\n",
            chat_yaml(&base, more).replace("max_concurrent: 10", &format!("max_concurrent: {cap}"))
        );
        let agent = "  scripted: { kind: command, command: [\"cat\"] }\n";
        let cfg = write_config_agents(dir.path(), &repo, &url, agent, &extra);
        let mut procs = Vec::new();
        for name in &NODES[..count] {
            let cwd = dir.path().join(name);
            std::fs::create_dir_all(&cwd).expect("node dir");
            procs.push(
                ServerProc::start_with_env(
                    &cwd,
                    &home,
                    &cfg,
                    free_port(),
                    &[("FLOTILLA__CLUSTER__NODE_ID", name)],
                )
                .await,
            );
        }
        let bases = NODES
            .iter()
            .zip(&procs)
            .map(|(n, p)| (n.to_string(), p.address.clone()))
            .collect();
        // `/say <words>`: an assistant turn whose prompt is just the words (no codebase needed).
        {
            let mut c = sqlx::PgConnection::connect(&url).await.expect("pg");
            sqlx::query(
                "INSERT INTO chat_templates (name, description, content, updated_at) \
                 VALUES ('say', 'say it', '$ARGUMENTS', now())",
            )
            .execute(&mut c)
            .await
            .expect("template");
        }
        Some(Nodes {
            procs,
            bases,
            url,
            log: base.join("assistant.log"),
            base,
            _dir: dir,
        })
    }

    /// `kill -9` of node `i`; it leaves `bases`.
    fn kill9(&mut self, i: usize) {
        self.procs[i].kill9();
        let name = NODES[i];
        self.bases.retain(|(n, _)| n != name);
    }
}

#[actix_web::test]
async fn chat_conversations_are_run_once_by_their_owner_and_taken_over_after_kill_9() {
    // Short idle time: conversations are given up and leased again by the next receiver.
    let Some(mut nodes) = Nodes::start(NODES.len(), 10, "  idle_after: 2s\n").await else {
        return;
    };
    let url = nodes.url.clone();
    let log = nodes.log.clone();
    let gate = nodes.base.join("gate");
    let bases = nodes.bases.clone();

    // ---- round 1: messages at random nodes, each answered once by its owner ----------------
    let mut first_tags = Vec::new();
    for round in 0..2 {
        for i in 0..CONVERSATIONS {
            let tag = format!("tag-c{i}-m{round}");
            let node = random_node();
            post_message(&bases[node].1, &format!("c{i}"), &format!("/say {tag} end")).await;
            first_tags.push((format!("c{i}"), tag));
        }
    }
    slowly(180, "every first-round message done", || async {
        let m = messages(&url).await;
        first_tags
            .iter()
            .all(|(_, t)| m.get(t).is_some_and(|(s, _)| s == "done"))
            .then_some(())
    })
    .await;
    let m = messages(&url).await;
    let r = runs(&log);
    for (thread, tag) in &first_tags {
        let a = answers(&bases, thread, tag).await;
        let claimer = m
            .get(tag)
            .and_then(|(_, by)| by.clone())
            .expect("claimed_by");
        assert_eq!(
            a,
            BTreeMap::from([(claimer.clone(), 1)]),
            "{tag}: answered once, by the node that claimed it"
        );
        assert_eq!(count(&r, tag, "start"), 1, "{tag} ran once");
    }

    // ---- round 2: turns under way when their owner dies -------------------------------------
    let held: Vec<(String, String)> = (0..HELD)
        .map(|i| (format!("h{i}"), format!("tag-h{i}")))
        .collect();
    for (thread, tag) in &held {
        let node = random_node();
        post_message(
            &bases[node].1,
            thread,
            &format!("/say {tag} WAIT:{} end", gate.display()),
        )
        .await;
    }
    slowly(120, "every held turn started", || async {
        let r = runs(&log);
        held.iter()
            .all(|(_, t)| count(&r, t, "start") == 1)
            .then_some(())
    })
    .await;
    let leases = conversation_leases(&url).await;
    let mut by_owner: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (thread, tag) in &held {
        let (owner, _) = leases
            .get(&format!("test:{thread}"))
            .cloned()
            .expect("a running conversation is leased");
        by_owner
            .entry(owner)
            .or_default()
            .push((thread.clone(), tag.clone()));
    }
    let (victim, doomed) = by_owner
        .iter()
        .max_by_key(|(_, v)| v.len())
        .map(|(o, v)| (o.clone(), v.clone()))
        .expect("an owner");
    let victim_index = NODES.iter().position(|n| *n == victim).expect("node");
    let survivor = (victim_index + 1) % NODES.len();
    // A second message behind each doomed turn, stored by another node: the owner is woken
    // through the store and keeps it queued behind the running turn.
    let behind: Vec<(String, String)> = doomed
        .iter()
        .map(|(thread, _)| (thread.clone(), format!("tag-{thread}-behind")))
        .collect();
    for (thread, tag) in &behind {
        let receipt = post_message(&bases[survivor].1, thread, &format!("/say {tag} end")).await;
        assert_eq!(receipt["position"], 1, "{receipt}");
    }
    let old_generation = leases
        .get(&format!("test:{}", doomed[0].0))
        .map(|(_, g)| *g)
        .expect("generation");

    nodes.kill9(victim_index);
    let bases = nodes.bases.clone();
    // The interrupted turns' assistants die with their node (their turn guards see it gone);
    // opening the gate lets the re-runs finish.
    std::fs::write(&gate, "open").expect("gate");

    slowly(120, "the dead node's conversations taken over", || async {
        let l = conversation_leases(&url).await;
        doomed
            .iter()
            .all(|(t, _)| {
                l.get(&format!("test:{t}"))
                    .is_some_and(|(o, _)| *o != victim)
            })
            .then_some(())
    })
    .await;
    let all_second: Vec<(String, String)> = held.iter().chain(&behind).cloned().collect();
    slowly(180, "every message done", || async {
        let m = messages(&url).await;
        all_second
            .iter()
            .all(|(_, t)| m.get(t).is_some_and(|(s, _)| s == "done"))
            .then_some(())
    })
    .await;

    let m = messages(&url).await;
    let r = runs(&log);
    let doomed_tags: BTreeSet<&String> = doomed.iter().map(|(_, t)| t).collect();
    for (thread, tag) in &all_second {
        let a = answers(&bases, thread, tag).await;
        let claimer = m
            .get(tag)
            .and_then(|(_, by)| by.clone())
            .expect("claimed_by");
        assert_ne!(claimer, victim, "{tag} finished by a survivor");
        assert_eq!(
            a,
            BTreeMap::from([(claimer.clone(), 1)]),
            "{tag}: answered once by a survivor"
        );
        let starts = count(&r, tag, "start");
        if doomed_tags.contains(tag) {
            assert_eq!(starts, 2, "{tag}: the interrupted turn ran again, once");
        } else {
            assert_eq!(starts, 1, "{tag} ran once");
        }
    }
    // No finished turn ran again after the takeover.
    for (_, tag) in &first_tags {
        assert_eq!(count(&r, tag, "start"), 1, "{tag} ran once");
    }

    // The dead owner's fence is refused for its old conversation.
    let store = store::open(&url).await.expect("store");
    let conversation = format!("test:{}", doomed[0].0);
    let id: i64 = {
        let mut c = sqlx::PgConnection::connect(&url).await.expect("pg");
        sqlx::query_scalar("SELECT id FROM chat_messages WHERE conversation_id = $1 LIMIT 1")
            .bind(&conversation)
            .fetch_one(&mut c)
            .await
            .expect("a message")
    };
    let stale = Fence {
        owner: victim.clone(),
        generation: old_generation,
    };
    let refused = store
        .settle_chat_message(&conversation, id, MessageStatus::Failed, &[], Some(&stale))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { .. })),
        "{refused:?}"
    );
    assert!(matches!(
        store
            .claim_after_posting(&conversation, &[], Some(&stale))
            .await,
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(
        messages(&url)
            .await
            .get(&doomed[0].1)
            .map(|(s, _)| s.as_str()),
        Some("done"),
        "the refused write changed nothing"
    );
}

/// Turns running on every node together, as the database's slots say.
async fn slots_in_use(url: &str) -> i64 {
    let mut c = sqlx::PgConnection::connect(url).await.expect("pg");
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM chat_turn_slots WHERE holder IS NOT NULL \
         AND expires_at_ms >= (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
    )
    .fetch_one(&mut c)
    .await
    .expect("slots")
}

/// Every held slot as (conversation, holder).
async fn slot_rows(url: &str) -> Vec<(String, String)> {
    let mut c = sqlx::PgConnection::connect(url).await.expect("pg");
    sqlx::query_as("SELECT conversation, holder FROM chat_turn_slots WHERE holder IS NOT NULL")
        .fetch_all(&mut c)
        .await
        .expect("slots")
}

/// The most runs of live nodes the scripted assistant ever counted at once (`RUNNING:`).
fn peak_running(log: &Path) -> u64 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["running"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Tags of `tags` whose run started and has not ended (runs of every node, dead ones too).
fn running_tags(log: &Path, tags: &[(String, String)]) -> Vec<String> {
    let r = runs(log);
    tags.iter()
        .filter(|(_, t)| count(&r, t, "start") > count(&r, t, "end"))
        .map(|(_, t)| t.clone())
        .collect()
}

/// Whether a node told `thread` that every slot is busy.
async fn told_busy(bases: &[(String, String)], thread: &str) -> bool {
    for (_, base) in bases {
        if replies(base, thread)
            .await
            .iter()
            .any(|t| t.contains("assistant slots are busy"))
        {
            return true;
        }
    }
    false
}

#[actix_web::test]
async fn chat_turns_are_capped_across_the_cluster_and_a_dead_nodes_slots_expire() {
    const CAP: u64 = 2;
    let Some(mut nodes) = Nodes::start(NODES.len(), CAP as usize, "").await else {
        return;
    };
    let url = nodes.url.clone();
    let log = nodes.log.clone();
    let gates = nodes.base.join("gates");
    let counted = nodes.base.join("running");
    std::fs::create_dir_all(&gates).expect("mkdir");
    let bases = nodes.bases.clone();
    // A turn that runs until the test opens its gate, counted by the scripted assistant.
    let held = |tag: &str| {
        format!(
            "/say {tag} RUNNING:{} WAIT:{} end",
            counted.display(),
            gates.join(tag).display()
        )
    };
    let open = |tag: &str| std::fs::write(gates.join(tag), "open").expect("gate");

    // ---- many conversations on every node: never more than CAP turns at once --------------
    let tags: Vec<(String, String)> = (0..8)
        .map(|i| (format!("k{i}"), format!("tag-k{i}")))
        .collect();
    for (i, (thread, tag)) in tags.iter().enumerate() {
        post_message(&bases[i % NODES.len()].1, thread, &held(tag)).await;
    }
    slowly(120, "the cap's turns running", || async {
        (running_tags(&log, &tags).len() == CAP as usize).then_some(())
    })
    .await;
    let mut opened = BTreeSet::new();
    loop {
        // Holds every turn until the cap is full or nothing is left, then frees the oldest.
        let next = slowly(120, "a full cap or every message done", || async {
            let in_db = slots_in_use(&url).await;
            assert!(in_db <= CAP as i64, "{in_db} slots held at once");
            let running: Vec<String> = running_tags(&log, &tags)
                .into_iter()
                .filter(|t| !opened.contains(t))
                .collect();
            assert!(
                running.len() <= CAP as usize,
                "running at once: {running:?}"
            );
            let m = messages(&url).await;
            let done = tags
                .iter()
                .filter(|(_, t)| m.get(t).is_some_and(|(s, _)| s == "done"))
                .count();
            let left = tags.len() - done - running.len();
            if done == tags.len() {
                Some(None)
            } else if running.len() == CAP as usize || (!running.is_empty() && left == 0) {
                Some(running.first().cloned())
            } else {
                None
            }
        })
        .await;
        let Some(tag) = next else { break };
        open(&tag);
        opened.insert(tag);
    }
    assert!(
        peak_running(&log) <= CAP,
        "the assistant counted {} turns at once",
        peak_running(&log)
    );
    let r = runs(&log);
    let mut busy = 0;
    for (thread, tag) in &tags {
        assert_eq!(count(&r, tag, "start"), 1, "{tag} ran once");
        assert_eq!(
            answers(&bases, thread, tag).await.values().sum::<usize>(),
            1,
            "{tag} answered once"
        );
        if told_busy(&bases, thread).await {
            busy += 1;
        }
    }
    assert!(
        busy > 0,
        "a waiting conversation is told the slots are busy"
    );

    // ---- a node dies holding a slot: the slot frees itself after the lease time ------------
    // The receiving node normally runs a conversation, but another node's sweep may win a
    // free one: which node runs what is read back, not assumed.
    let dying = vec![("x1".to_string(), "tag-x1".to_string())];
    post_message(&bases[0].1, "x1", &held("tag-x1")).await;
    slowly(60, "x1 running on the doomed node", || async {
        (running_tags(&log, &dying).len() == 1).then_some(())
    })
    .await;
    let rows = slot_rows(&url).await;
    assert_eq!(rows.len(), 1, "x1's slot: {rows:?}");
    assert_eq!(rows[0].0, "test:x1");
    let victim = NODES
        .iter()
        .position(|n| *n == rows[0].1)
        .expect("x1's slot is held by a node");
    let keeper = vec![("x2".to_string(), "tag-x2".to_string())];
    post_message(&bases[(victim + 1) % 3].1, "x2", &held("tag-x2")).await;
    slowly(60, "x2 running", || async {
        (running_tags(&log, &keeper).len() == 1).then_some(())
    })
    .await;
    // The cap is full: x3 waits, and is told so.
    post_message(
        &bases[(victim + 2) % 3].1,
        "x3",
        &format!("/say tag-x3 RUNNING:{} end", counted.display()),
    )
    .await;
    slowly(60, "x3 told every slot is busy", || async {
        told_busy(&bases, "x3").await.then_some(())
    })
    .await;
    assert_eq!(count(&runs(&log), "tag-x3", "start"), 0, "x3 waits");
    let x3_owner = conversation_leases(&url)
        .await
        .get("test:x3")
        .map(|(o, _)| o.clone())
        .expect("x3 is leased while it waits");
    let here = bases
        .iter()
        .find(|(n, _)| *n == x3_owner)
        .map(|(_, b)| b.clone())
        .expect("x3's owner");
    let running_here = slot_rows(&url)
        .await
        .iter()
        .filter(|(_, n)| *n == x3_owner)
        .count();
    let stats: Value = http_client()
        .get(format!("{here}/api/v1/chat/stats"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json");
    assert_eq!(stats["cap_scope"], "cluster", "{stats}");
    assert_eq!(stats["max_concurrent"], CAP, "{stats}");
    assert_eq!(stats["cluster_active"], 2, "x1 and x2: {stats}");
    assert_eq!(stats["active"], running_here, "{stats}");
    assert_eq!(stats["queued"], 1, "x3 waits there: {stats}");

    nodes.kill9(victim);
    let bases = nodes.bases.clone();
    // The dead node's run died with it (its turn guard); the database's slot of it is only
    // freed by expiry.
    open("tag-x1");
    slowly(120, "x3 run and x1 re-run by a survivor", || async {
        let m = messages(&url).await;
        ["tag-x1", "tag-x3"]
            .iter()
            .all(|t| m.get(*t).is_some_and(|(s, _)| s == "done"))
            .then_some(())
    })
    .await;
    for (thread, tag) in [("x1", "tag-x1"), ("x3", "tag-x3")] {
        assert_eq!(
            answers(&bases, thread, tag).await.values().sum::<usize>(),
            1,
            "{tag} answered once, by a survivor"
        );
    }
    let r = runs(&log);
    assert_eq!(
        count(&r, "tag-x2", "end"),
        0,
        "x2 still holds its slot: x3 and x1's re-run ran in the dead node's expired slot"
    );
    assert!(
        !slot_rows(&url)
            .await
            .iter()
            .any(|(_, h)| h == NODES[victim]),
        "the dead node holds no slot any more"
    );
    assert!(slots_in_use(&url).await <= CAP as i64);
    open("tag-x2");
    wait_done(&url, "tag-x2").await;
    assert!(
        peak_running(&log) <= CAP,
        "the assistant counted {} turns of live nodes at once",
        peak_running(&log)
    );
    assert_eq!(slots_in_use(&url).await, 0, "every slot freed");
}

/// Sends `signal` (`STOP`, `CONT`) to process `pid`.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Waits until the message tagged `tag` is done.
async fn wait_done(url: &str, tag: &str) {
    slowly(60, &format!("{tag} done"), || async {
        messages(url)
            .await
            .get(tag)
            .is_some_and(|(s, _)| s == "done")
            .then_some(())
    })
    .await;
}

/// Waits until node `by` holds `thread`'s conversation and has started `tag`'s run again
/// (the second run of it).
async fn wait_rerun_by(nodes: &Nodes, thread: &str, tag: &str, by: usize) {
    let conversation = format!("test:{thread}");
    slowly(
        60,
        &format!("{thread} taken over and re-run by {}", NODES[by]),
        || async {
            let owner = conversation_leases(&nodes.url)
                .await
                .get(&conversation)
                .cloned();
            (owner.is_some_and(|(o, _)| o == NODES[by])
                && count(&runs(&nodes.log), tag, "start") == 2)
                .then_some(())
        },
    )
    .await;
}

/// Posts `/say <tag> WAIT:<gate> end` to `thread` (received by the first node) and waits for
/// its assistant run to start. Returns the run's pid and the index of the node running it: the
/// receiver takes the conversation when it is free, but another node's sweep may win it.
async fn held_turn(nodes: &Nodes, thread: &str, tag: &str, gate: &Path) -> (u64, usize) {
    held_turn_saying(nodes, thread, tag, "", gate).await
}

/// [`held_turn`] with `words` (scripted assistant keywords) before the gate.
async fn held_turn_saying(
    nodes: &Nodes,
    thread: &str,
    tag: &str,
    words: &str,
    gate: &Path,
) -> (u64, usize) {
    post_message(
        &nodes.bases[0].1,
        thread,
        &format!("/say {tag} {words}WAIT:{} end", gate.display()),
    )
    .await;
    let pid = slowly(60, &format!("{tag} running"), || async {
        std::fs::read_to_string(&nodes.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["event"] == "start" && v["prompt"].as_str().unwrap_or("").contains(tag))
            .and_then(|v| v["pid"].as_u64())
    })
    .await;
    let rows = slot_rows(&nodes.url).await;
    let conversation = format!("test:{thread}");
    assert_eq!(rows.len(), 1, "one slot, held for {conversation}: {rows:?}");
    assert_eq!(rows[0].0, conversation);
    let owner = NODES
        .iter()
        .position(|n| *n == rows[0].1)
        .expect("a node holds the slot");
    (pid, owner)
}

/// A node paused past the lease time loses the conversation whose turn it runs: its
/// assistant is already gone (its turn guard saw the heartbeat go stale, see
/// [`a_paused_nodes_assistant_dies_before_another_node_runs_the_message_again`]); once it
/// resumes and learns the lease is lost, it ends that turn without a reply (neither the
/// answer nor the failure of the killed assistant) and holds no slot, while the new owner
/// runs the message again in its own slot.
#[actix_web::test]
async fn a_node_that_lost_a_conversation_stops_its_turn_and_frees_the_slot() {
    let Some(nodes) = Nodes::start(2, 2, "").await else {
        return;
    };
    let (url, bases) = (nodes.url.clone(), nodes.bases.clone());
    let gate = nodes.base.join("gate-y1");
    let (first_pid, a) = held_turn(&nodes, "y1", "tag-y1", &gate).await;
    let b = 1 - a;

    // The owner freezes past the lease time: the other node takes the conversation and runs
    // y1 again.
    signal(nodes.procs[a].pid(), "STOP");
    wait_rerun_by(&nodes, "y1", "tag-y1", b).await;
    signal(nodes.procs[a].pid(), "CONT");
    // Well within `chat.turn_timeout` (60 s), which would also stop it.
    slowly(30, "the old owner's run of y1 stopped", || async {
        gone(first_pid).then_some(())
    })
    .await;
    slowly(60, "the old owner holds no slot", || async {
        let rows = slot_rows(&url).await;
        (rows == [("test:y1".to_string(), NODES[b].to_string())]).then_some(())
    })
    .await;
    let said = replies(&bases[a].1, "y1").await;
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains("is on the case"),
        "the old owner said nothing after its turn's notice about the turn it gave up: {said:?}"
    );
    std::fs::write(&gate, "open").expect("gate");
    wait_done(&url, "tag-y1").await;
    assert_eq!(
        answers(&bases, "y1", "tag-y1").await,
        BTreeMap::from([(NODES[b].to_string(), 1)]),
        "answered once, by the new owner"
    );
    assert!(slot_rows(&url).await.is_empty(), "every slot freed");
}

/// Chat messages node `base` finished handling (any outcome), from its `/metrics`.
async fn turns_ended(base: &str) -> u64 {
    let Ok(r) = http_client().get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("flotilla_chat_turns_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A node paused past the lease time says nothing of that turn when it resumes: its fence no
/// longer holds the conversation's lease, so whatever its turn ended with is dropped, and the
/// new owner's answer is the only one. Before the turn guard its assistant finished while the
/// node was frozen (the answer waiting in the pipe); now the guard kills it while the node is
/// still paused, so what waits in the pipe is that assistant's end (killed), whose failure
/// reply is dropped the same way. Opening the gate while the node is frozen still lets an old
/// run answer if the guard were late, and the fence would drop that answer too.
#[actix_web::test]
async fn a_node_that_lost_a_conversation_does_not_post_the_answer_its_assistant_finished() {
    let Some(nodes) = Nodes::start(2, 2, "").await else {
        return;
    };
    let bases = nodes.bases.clone();
    let gate = nodes.base.join("gate-z1");
    let (first_pid, a) = held_turn(&nodes, "z1", "tag-z1", &gate).await;
    let b = 1 - a;

    // Read before the pause: a frozen node answers no request.
    let before = turns_ended(&bases[a].1).await;
    signal(nodes.procs[a].pid(), "STOP");
    wait_rerun_by(&nodes, "z1", "tag-z1", b).await;
    // Both runs answer now; the old owner's answer waits in its pipe while it is frozen.
    std::fs::write(&gate, "open").expect("gate");
    slowly(
        60,
        "the new owner answered and the old owner's assistant ended",
        || async {
            let by_b = answers(&bases[b..=b], "z1", "tag-z1").await;
            (by_b.get(NODES[b]) == Some(&1) && gone(first_pid)).then_some(())
        },
    )
    .await;
    signal(nodes.procs[a].pid(), "CONT");
    slowly(60, "the old owner finished handling z1", || async {
        (turns_ended(&bases[a].1).await > before).then_some(())
    })
    .await;
    assert_eq!(
        answers(&bases, "z1", "tag-z1").await,
        BTreeMap::from([(NODES[b].to_string(), 1)]),
        "answered once, by the new owner; the old owner's reply was dropped"
    );
}

/// The runs of `tag` that started, as their `start` log lines, in order.
fn starts_of(log: &Path, tag: &str) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["event"] == "start"
                && v["prompt"]
                    .as_str()
                    .unwrap_or("")
                    .split_whitespace()
                    .any(|w| w == tag)
        })
        .collect()
}

/// A node paused past the lease time: its assistant's turn guard sees the node's heartbeat
/// (touched after each committed lease renewal) go stale and kills the assistant while the
/// node is still stopped, before the lease and the turn slot expire. So when the other node
/// takes the conversation over and runs the message again there is never a second run beside
/// the first: the cap (1 here) holds across the cluster, as the re-run itself counts at its
/// start. Before the guard the paused node's assistant ran on until the node resumed.
#[actix_web::test]
async fn a_paused_nodes_assistant_dies_before_another_node_runs_the_message_again() {
    let Some(nodes) = Nodes::start(2, 1, "").await else {
        return;
    };
    let (url, bases) = (nodes.url.clone(), nodes.bases.clone());
    let gate = nodes.base.join("gate-p1");
    let counted = nodes.base.join("running-p1");
    let words = format!("RUNNING:{} ", counted.display());
    let (first_pid, a) = held_turn_saying(&nodes, "p1", "tag-p1", &words, &gate).await;
    let b = 1 - a;

    signal(nodes.procs[a].pid(), "STOP");
    // Within a lease time or two: the guard acts before the lease (3 s) can expire.
    slowly(
        30,
        "the paused node's assistant gone while the node is stopped",
        || async { gone(first_pid).then_some(()) },
    )
    .await;
    wait_rerun_by(&nodes, "p1", "tag-p1", b).await;
    let starts = starts_of(&nodes.log, "tag-p1");
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert_eq!(
        starts[1]["running"], 1,
        "the re-run started alone: the paused node's run was gone by then: {starts:?}"
    );
    signal(nodes.procs[a].pid(), "CONT");

    std::fs::write(&gate, "open").expect("gate");
    wait_done(&url, "tag-p1").await;
    assert_eq!(
        answers(&bases, "p1", "tag-p1").await,
        BTreeMap::from([(NODES[b].to_string(), 1)]),
        "answered once, by the new owner"
    );
    assert!(
        peak_running(&nodes.log) <= 1,
        "the assistant counted {} runs at once (cap 1)",
        peak_running(&nodes.log)
    );
    slowly(60, "every slot freed", || async {
        slot_rows(&url).await.is_empty().then_some(())
    })
    .await;
}
