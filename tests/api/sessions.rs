//! Sessions over the real HTTP API: spawn a real process in a real worktree, watch its exit
//! drive the machine, read its output, send, kill, restore.

use std::collections::HashSet;

use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn spawn_starts_the_agent_in_its_worktree_and_output_is_readable() {
    if !require_tool("git") {
        return;
    }
    let app = spawn_app().await;
    let id = app
        .spawn(json!({"project": "demo", "prompt": "Write a haiku"}))
        .await;
    assert_eq!(id, "demo-1");
    let s = app.wait_state(&id, "working").await;
    let ws = s["workspace"].as_str().expect("workspace path");
    assert!(
        std::path::Path::new(ws).join("README.md").exists(),
        "worktree checked out"
    );
    assert_eq!(s["branch"], "session/demo-1");
    let branches = git(&app.repo, &["branch", "--list", "session/demo-1"]);
    assert!(branches.contains("session/demo-1"));
    let out = app.wait_output(&id, "READY").await;
    assert!(
        out.contains("Write a haiku"),
        "the prompt file reached the agent: {out}"
    );
    assert!(s["timers"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t["kind"] == "stuck_check")));
}

#[actix_web::test]
async fn send_delivers_to_the_agent_and_kill_is_idempotent() {
    let app = spawn_app().await;
    let id = app.spawn(json!({"project": "demo", "prompt": "p"})).await;
    app.wait_state(&id, "working").await;
    let (s, v) = app
        .post(
            &format!("/api/v1/sessions/{id}/send"),
            json!({"message": "hello there"}),
        )
        .await;
    assert_eq!((s, v["delivered"].as_bool()), (200, Some(true)), "{v}");
    app.wait_output(&id, "got: hello there").await;
    let pid = agent_pid(&app.home, &id);
    let (s, v) = app
        .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["changed"], true);
    assert_eq!(v["session"]["state"], "killed");
    assert_eq!(v["session"]["reason"], "manually_killed");
    eventually(30, "agent process gone", || async {
        (!alive(pid)).then_some(())
    })
    .await;
    let (s, v) = app
        .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["changed"], false);
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("already killed"),
        "{v}"
    );
    let ws = v["session"]["workspace"].as_str().expect("ws").to_string();
    assert!(
        !std::path::Path::new(&ws).exists(),
        "kill removed the worktree"
    );
    let branches = git(&app.repo, &["branch", "--list", "session/demo-1"]);
    assert!(
        branches.contains("session/demo-1"),
        "the branch is kept by default"
    );
    // Sending to a dead session restores it first, then delivers.
    let (s, v) = app
        .post(
            &format!("/api/v1/sessions/{id}/send"),
            json!({"message": "back again"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["restored"], true);
    assert_eq!(v["delivered"], true);
    app.wait_output(&id, "got: back again").await;
    assert!(
        std::path::Path::new(&ws).exists(),
        "restore recreated the worktree"
    );
}

#[actix_web::test]
async fn agent_exit_status_drives_the_machine() {
    let app = spawn_app().await;
    let done = app
        .spawn(json!({"project": "demo", "agent": "quick"}))
        .await;
    let failed = app
        .spawn(json!({"project": "demo", "agent": "failing"}))
        .await;
    let d = app.wait_state(&done, "done").await;
    assert_eq!(d["reason"], "agent_exited_0");
    let f = app.wait_state(&failed, "errored").await;
    // The reason names the cause: the agent's last line of output.
    assert_eq!(f["reason"], "agent_exited_3: failing");
    let t = f["trackers"].as_array().expect("trackers");
    assert!(
        t.iter()
            .any(|t| t["reaction"] == "agent-exited" && t["attempts"] == 1),
        "{f}"
    );
    assert!(
        f["timers"].as_array().is_some_and(|t| t.is_empty()),
        "no timers after the end"
    );
    let out = app.wait_output(&failed, "failing").await;
    assert!(out.contains("failing"));
}

#[actix_web::test]
async fn restore_brings_a_killed_session_back_to_working() {
    let app = spawn_app().await;
    let id = app.spawn(json!({"project": "demo", "prompt": "p"})).await;
    app.wait_state(&id, "working").await;
    let (s, _) = app
        .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
        .await;
    assert_eq!(s, 200);
    app.wait_state(&id, "killed").await;
    let (s, v) = app
        .post(&format!("/api/v1/sessions/{id}/restore"), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["session"]["state"], "spawning");
    let back = app.wait_state(&id, "working").await;
    assert_eq!(back["branch"], "session/demo-1", "same branch");
    let (s, v) = app
        .post(&format!("/api/v1/sessions/{id}/restore"), json!({}))
        .await;
    assert_eq!(s, 409, "a working session cannot be restored: {v}");
}

#[actix_web::test]
async fn merge_without_an_open_pr_is_a_409_that_says_why() {
    let app = spawn_app().await;
    let id = app
        .spawn(json!({"project": "demo", "agent": "quick"}))
        .await;
    let (s, v) = app
        .post(&format!("/api/v1/sessions/{id}/merge"), json!({}))
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("no open PR"));
}

#[actix_web::test]
async fn fifty_parallel_spawns_get_fifty_distinct_ids() {
    let app = spawn_app().await;
    let futs = (0..50).map(|_| app.spawn(json!({"project": "demo", "agent": "quick"})));
    let ids: Vec<String> = futures::future::join_all(futs).await;
    let set: HashSet<&String> = ids.iter().collect();
    assert_eq!(set.len(), 50, "{ids:?}");
    for n in 1..=50 {
        assert!(set.contains(&format!("demo-{n}")), "demo-{n} missing");
    }
    let (_, v) = app.get("/api/v1/sessions?project=demo").await;
    assert_eq!(v["sessions"].as_array().map(Vec::len), Some(50));
}

#[actix_web::test]
async fn list_filters_by_project_and_state() {
    let app = spawn_app().await;
    let a = app
        .spawn(json!({"project": "demo", "agent": "quick"}))
        .await;
    let b = app.spawn(json!({"project": "demo", "prompt": "p"})).await;
    app.wait_state(&a, "done").await;
    app.wait_state(&b, "working").await;
    let (_, v) = app.get("/api/v1/sessions?state=done").await;
    let ids: Vec<&str> = v["sessions"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, vec![a.as_str()]);
    let (_, v) = app.get("/api/v1/sessions?state=done,working").await;
    assert_eq!(v["sessions"].as_array().map(Vec::len), Some(2));
    let (_, v) = app.get("/api/v1/sessions?project=other").await;
    assert_eq!(v["sessions"].as_array().map(Vec::len), Some(0));
    let (s, v) = app.get("/api/v1/sessions?state=sleeping").await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(
        v["error"]["message"]
            .as_str()
            .map(|m| m.starts_with("state:")),
        Some(true)
    );
}

#[actix_web::test]
async fn session_events_record_every_transition_in_order() {
    let app = spawn_app().await;
    let id = app
        .spawn(json!({"project": "demo", "agent": "quick"}))
        .await;
    app.wait_state(&id, "done").await;
    let (s, v) = app.get(&format!("/api/v1/sessions/{id}/events")).await;
    assert_eq!(s, 200);
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "session.created",
            "session.spawn_requested",
            "runtime.started",
            "agent.exited"
        ]
    );
    let ids: Vec<i64> = v["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["id"].as_i64())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
}

#[actix_web::test]
async fn the_same_api_works_on_postgres() {
    let Some(app) = crate::app_builder::AppBuilder::new()
        .backend(Backend::Postgres)
        .try_start()
        .await
    else {
        return;
    };
    let id = app.spawn(json!({"project": "demo", "prompt": "p"})).await;
    app.wait_state(&id, "working").await;
    let (s, v) = app
        .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
        .await;
    assert_eq!((s, v["session"]["state"].as_str()), (200, Some("killed")));
    let ids: Vec<String> = futures::future::join_all(
        (0..20).map(|_| app.spawn(json!({"project": "demo", "agent": "quick"}))),
    )
    .await;
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 20);
}
