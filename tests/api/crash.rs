//! Crash test: `kill -9` the real server while sessions run and timers are armed, start it
//! again, and find everything back: sessions, events (ids continuing), trackers, timer
//! deadlines; the agents are re-adopted; an SSE client resuming with `Last-Event-ID` misses
//! nothing and sees nothing twice.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::events::{ids, Sse};
use crate::helpers::*;
use crate::server::*;

/// `GET base+path` with the API token; the JSON answer.
pub async fn get(base: &str, path: &str) -> Value {
    crate::helpers::http_client()
        .get(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// `POST base+path` with the API token; the status and the JSON answer.
pub async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = crate::helpers::http_client()
        .post(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("post");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn wait_state(base: &str, id: &str, state: &str) -> Value {
    eventually(30, &format!("{id} {state}"), || async {
        let v = get(base, &format!("/api/v1/sessions/{id}")).await;
        (v["state"] == state).then_some(v)
    })
    .await
}

/// What must survive: state, reason, trackers and timers of every session.
fn durable(v: &Value) -> Value {
    json!({
        "id": v["id"], "state": v["state"], "reason": v["reason"], "branch": v["branch"],
        "workspace": v["workspace"], "trackers": v["trackers"], "timers": v["timers"],
    })
}

#[actix_web::test]
async fn kill_dash_nine_and_restart_loses_nothing() {
    if !require_tool("git") {
        return;
    }
    // A long stuck threshold: working sessions hold an armed timer with a known deadline.
    let s = Scratch::new("reactions:\n  agent-stuck: { threshold: 2h }\n");
    let mut server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    let base = server.address.clone();

    let mut working = Vec::new();
    for _ in 0..3 {
        let (st, v) = post(
            &base,
            "/api/v1/sessions",
            json!({"project": "demo", "prompt": "work"}),
        )
        .await;
        assert_eq!(st, 201, "{v}");
        working.push(v["id"].as_str().expect("id").to_string());
    }
    let (_, v) = post(
        &base,
        "/api/v1/sessions",
        json!({"project": "demo", "agent": "failing"}),
    )
    .await;
    let failed = v["id"].as_str().expect("id").to_string();
    for id in &working {
        wait_state(&base, id, "working").await;
    }
    let f = wait_state(&base, &failed, "errored").await;
    assert_eq!(f["trackers"][0]["reaction"], "agent-exited");

    // An SSE client reads everything so far.
    let mut sse = Sse::open(&base, None).await;
    let (_, last_before) = {
        let mut n = 0;
        for id in working.iter().chain([&failed]) {
            let ev = get(&base, &format!("/api/v1/sessions/{id}/events")).await;
            n += ev["events"].as_array().map(Vec::len).unwrap_or(0);
        }
        ((), n)
    };
    let seen_before = sse.read_until(|e| e.len() >= last_before).await;
    let last_seen = *ids(&seen_before).last().expect("some events");

    let mut before = Vec::new();
    for id in working.iter().chain([&failed]) {
        before.push(durable(
            &get(&base, &format!("/api/v1/sessions/{id}")).await,
        ));
    }
    for b in &before[..3] {
        let timers = b["timers"].as_array().expect("timers");
        assert!(
            timers.iter().any(|t| t["kind"] == "stuck_check"),
            "armed: {b}"
        );
    }
    let pids: Vec<i32> = working.iter().map(|id| agent_pid(&s.home, id)).collect();

    server.kill9();
    drop(sse);
    for p in &pids {
        assert!(alive(*p), "agents outlive the server");
    }

    let server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    let base = server.address.clone();
    let mut after = Vec::new();
    for id in working.iter().chain([&failed]) {
        after.push(durable(
            &get(&base, &format!("/api/v1/sessions/{id}")).await,
        ));
    }
    assert_eq!(
        before, after,
        "sessions, trackers and timer deadlines are back"
    );

    // Resume the stream where the client left off, then make new events.
    let mut resumed = Sse::open(&base, Some(last_seen)).await;
    let (st, v) = post(
        &base,
        &format!("/api/v1/sessions/{}/send", working[0]),
        json!({"message": "still there?"}),
    )
    .await;
    assert_eq!(st, 200, "the adopted agent takes messages: {v}");
    let (st, _) = post(
        &base,
        &format!("/api/v1/sessions/{}/kill", working[1]),
        json!({}),
    )
    .await;
    assert_eq!(st, 200);
    eventually(30, "killed agent gone", || async {
        (!alive(pids[1])).then_some(())
    })
    .await;
    let (_, v) = post(
        &base,
        "/api/v1/sessions",
        json!({"project": "demo", "agent": "quick"}),
    )
    .await;
    let newest = v["id"].as_str().expect("id").to_string();
    assert_eq!(newest, "demo-5", "ids continue");
    wait_state(&base, &newest, "done").await;

    // The adopted agent's exit is still observed (pidfd), without the server being its parent.
    // SAFETY: signal to a process group this test's server started.
    unsafe {
        libc::killpg(pids[2], libc::SIGKILL);
    }
    let lost = wait_state(&base, &working[2], "killed").await;
    assert_eq!(lost["reason"], "runtime_lost");

    let mut full = Sse::open(&base, None).await;
    let everything = full
        .read_until(|e| {
            e.iter()
                .any(|x| x["kind"] == "agent.exited" && x["session_id"] == working[2].as_str())
        })
        .await;
    let all_ids = ids(&everything);
    assert!(
        all_ids.windows(2).all(|w| w[1] == w[0] + 1),
        "no gaps: {all_ids:?}"
    );
    let after_resume = resumed
        .read_until(|e| {
            e.iter()
                .any(|x| x["kind"] == "agent.exited" && x["session_id"] == working[2].as_str())
        })
        .await;
    let mut union: Vec<i64> = ids(&seen_before);
    union.extend(ids(&after_resume));
    let set: BTreeSet<i64> = union.iter().copied().collect();
    assert_eq!(set.len(), union.len(), "nothing seen twice");
    assert_eq!(
        union, all_ids,
        "nothing missed: the two connections together saw every event in order"
    );
    assert!(ids(&after_resume)[0] > last_seen);
    assert!(ids(&after_resume).iter().all(|i| *i > last_seen));
}

/// A node killed with `-9` in the middle of a chat turn: its assistant (under `flotilla
/// turn-guard`) dies by itself while the node is down, so when the restarted node runs the
/// interrupted message again (`resumed`, its prompt saying so) there is one assistant on it,
/// and the message is answered once. Before the guard the orphan ran on (nobody kills its process group) and
/// finished beside the re-run.
#[actix_web::test]
async fn a_chat_turns_assistant_dies_with_its_node_killed_9_and_the_restart_answers_once() {
    if !require_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("chat");
    std::fs::create_dir_all(base.join("ws")).expect("mkdir");
    let extra = crate::chat::chat_yaml(&base, "");
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    let s = Scratch::with_agents(dir, &agents, &extra);
    let mut server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    let gate = base.join("gate");
    let say = |address: String, text: String| async move {
        let (st, v) = post(
            &address,
            "/api/v1/chat/test/messages",
            json!({"thread": "k1", "text": text, "author": "tester"}),
        )
        .await;
        assert_eq!(st, 200, "{v}");
    };
    say(
        server.address.clone(),
        format!("/setcwd {}", base.join("ws").display()),
    )
    .await;
    say(
        server.address.clone(),
        format!("tag-k1 WAIT:{}", gate.display()),
    )
    .await;
    let log = base.join("assistant.log");
    let runs = |event: &str| -> Vec<Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| {
                v["event"] == event && v["prompt"].as_str().unwrap_or("").contains("tag-k1")
            })
            .collect()
    };
    let first = eventually(30, "the turn's assistant running", || async {
        runs("start").first().and_then(|v| v["pid"].as_u64())
    })
    .await;

    server.kill9();
    eventually(
        30,
        "the orphaned assistant gone while its node is down",
        || async { gone(first).then_some(()) },
    )
    .await;

    let server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    eventually(30, "the interrupted message run again", || async {
        (runs("start").len() == 2).then_some(())
    })
    .await;
    std::fs::write(&gate, "open").expect("gate");
    let answers = eventually(30, "the answer", || async {
        let v = get(&server.address, "/api/v1/chat/test/replies?thread=k1").await;
        let answers: Vec<String> = v["replies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["text"].as_str())
            .filter(|t| t.starts_with("echo: ") && t.contains("tag-k1"))
            .map(str::to_string)
            .collect();
        (!answers.is_empty()).then_some(answers)
    })
    .await;
    assert_eq!(answers.len(), 1, "answered once: {answers:?}");
    assert_eq!(runs("end").len(), 1, "one run finished: the re-run");
    assert_eq!(runs("start").len(), 2, "the interrupted run and its re-run");
    // The re-run is told that its message's last turn was cut short; the first run was not.
    let note = "Note from Flotilla: this message was already being answered";
    let prompts: Vec<String> = runs("start")
        .iter()
        .map(|v| v["prompt"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(!prompts[0].contains(note), "{prompts:?}");
    assert!(prompts[1].starts_with(note), "{prompts:?}");
    assert!(answers[0].contains(note), "{answers:?}");
}

/// A `/spawn` whose message a crash left `running` after its session had started (the node
/// died between the spawn and the message's end) is run again on restart: it answers with
/// the session it started and starts no second agent on the task. (It started `demo-2`.)
#[actix_web::test]
async fn a_spawn_run_again_after_a_crash_answers_with_its_session_and_starts_no_second() {
    if !require_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("chat");
    std::fs::create_dir_all(&base).expect("mkdir");
    let extra = crate::chat::chat_yaml(&base, "");
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    let s = Scratch::with_agents(dir, &agents, &extra);
    let mut server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    let (st, v) = post(
        &server.address,
        "/api/v1/chat/test/messages",
        json!({"thread": "sp", "text": "/spawn demo write the docs", "author": "tester"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let started = |address: String| async move {
        let v = get(&address, "/api/v1/chat/test/replies?thread=sp").await;
        v["replies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["text"].as_str())
            .filter(|t| t.starts_with("Started session"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    eventually(30, "the spawn's answer", || async {
        (started(server.address.clone()).await.len() == 1).then_some(())
    })
    .await;
    server.kill9();

    // The kill came between the spawn and the message's end: the message is still running.
    {
        use sqlx::ConnectOptions;
        let mut db = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(s.home.join("flotilla.db"))
            .connect()
            .await
            .expect("db");
        let set = sqlx::query(
            "UPDATE chat_messages SET status = 'running', finished_at = NULL \
             WHERE body = '/spawn demo write the docs'",
        )
        .execute(&mut db)
        .await
        .expect("update");
        assert_eq!(set.rows_affected(), 1);
    }
    // (The test platform keeps its replies in the server's memory: these are the new run's.)
    let server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    let answers = eventually(30, "the re-run's answer", || async {
        let a = started(server.address.clone()).await;
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(answers, vec!["Started session demo-1 (demo).".to_string()]);
    let sessions = get(&server.address, "/api/v1/sessions").await;
    let ids: Vec<&str> = sessions["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["demo-1"], "{sessions}");
}
