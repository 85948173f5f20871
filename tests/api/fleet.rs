//! Fleet verbs on the process runtime: workspace setup, failing setup clean-up, batch spawn,
//! the orchestrator, agents' self-reports, orphans, ports.

use serde_json::json;

use crate::app_builder::AppBuilder;
use crate::helpers::*;

#[actix_web::test]
async fn workspace_setup_copies_links_runs_post_create_and_exports_ports() {
    let app = AppBuilder::new()
        .agent_command(
            "scripted",
            &[
                "sh",
                "-c",
                "echo PORT=$FLOTILLA_PORT_BASE COUNT=$FLOTILLA_PORT_COUNT; cat .env; sleep 600",
            ],
        )
        .project(|p| {
            p.setup.copy = vec![".env".into()];
            p.setup.symlinks = vec!["shared-cache".into()];
            p.setup.post_create = vec![vec!["touch".into(), "post-create-ran".into()]];
            p.setup.ports = 10;
        })
        .start()
        .await;
    std::fs::write(app.repo.join(".gitignore"), ".env\nshared-cache\n").expect("write");
    std::fs::write(app.repo.join(".env"), "SECRET_FOR_DEV=1\n").expect("write");
    std::fs::create_dir_all(app.repo.join("shared-cache")).expect("mkdir");
    let id = app.spawn(json!({"project": "demo", "prompt": "p"})).await;
    let s = app.wait_state(&id, "working").await;
    let ws = std::path::PathBuf::from(s["workspace"].as_str().expect("ws"));
    assert!(ws.join("post-create-ran").exists());
    assert!(ws.join("shared-cache").is_symlink());
    let out = app.wait_output(&id, "SECRET_FOR_DEV=1").await;
    assert!(out.contains("PORT=20000 COUNT=10"), "{out}");
}

#[actix_web::test]
async fn a_failing_or_hanging_post_create_errors_the_session_and_leaves_no_workspace() {
    for (cmd, needle) in [
        (vec!["false"], "post_create[0]"),
        (vec!["sleep", "30"], "timed out"),
    ] {
        let argv: Vec<String> = cmd.iter().map(|a| a.to_string()).collect();
        let app = AppBuilder::new()
            .project(move |p| {
                p.setup.post_create = vec![argv];
                p.setup.post_create_timeout = flotilla::config::HumanDuration::from_secs(1);
            })
            .start()
            .await;
        let id = app.spawn(json!({"project": "demo", "prompt": "p"})).await;
        let s = app.wait_state(&id, "errored").await;
        let reason = s["reason"].as_str().unwrap_or("");
        assert!(reason.contains(needle), "{cmd:?}: {reason}");
        let path = app.home.join("worktrees/demo").join(&id);
        assert!(!path.exists(), "the partial workspace was removed");
        let wt = git(&app.repo, &["worktree", "list"]);
        assert!(!wt.contains(&id), "git forgot the worktree: {wt}");
        assert!(s["timers"].as_array().is_some_and(|t| t.is_empty()));
    }
}

#[actix_web::test]
async fn batch_spawn_skips_duplicates_and_issues_with_live_sessions() {
    let app = spawn_app().await;
    let (s, v) = app
        .post(
            "/api/v1/sessions/batch",
            json!({"project": "demo", "issues": ["7", "8", "7"]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let spawned: Vec<&str> = v["spawned"]
        .as_array()
        .expect("spawned")
        .iter()
        .filter_map(|s| s["branch"].as_str())
        .collect();
    assert_eq!(spawned, vec!["feat/7", "feat/8"]);
    assert_eq!(v["skipped"][0]["reason"], "duplicate in batch");
    let first = v["spawned"][0]["id"].as_str().expect("id").to_string();
    app.wait_state(&first, "working").await;
    let (_, v) = app
        .post(
            "/api/v1/sessions/batch",
            json!({"project": "demo", "issues": ["7", "9"]}),
        )
        .await;
    assert_eq!(v["skipped"][0]["issue"], "7");
    assert_eq!(v["skipped"][0]["reason"], "live session");
    assert_eq!(v["skipped"][0]["session"], first.as_str());
    assert_eq!(v["spawned"].as_array().map(Vec::len), Some(1));
}

#[actix_web::test]
async fn the_orchestrator_is_started_once_and_gets_its_own_token() {
    let bin = env!("CARGO_BIN_EXE_flotilla");
    let agent = format!(
        r#"["sh", "-c", "echo TOKEN=$${{FLOTILLA_TOKEN:+set}}; cat \"$FLOTILLA_PROMPT_FILE\"; {bin} status --json; sleep 600"]"#
    );
    let app = spawn_app_with(Backend::Sqlite, &agent, "")
        .await
        .expect("app");
    let (s, v) = app
        .post("/api/v1/projects/demo/orchestrator", json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["created"], true);
    assert_eq!(v["session"]["id"], "demo-orchestrator");
    let (s2, v2) = app
        .post("/api/v1/projects/demo/orchestrator", json!({}))
        .await;
    assert_eq!(s2, 200);
    assert_eq!(v2["created"], false, "never two");
    // The prompt (which teaches the CLI) is printed after the token line: waiting for it, not
    // for the token line, leaves no race with `cat`.
    let out = app.wait_output("demo-orchestrator", "flotilla spawn").await;
    assert!(out.contains("TOKEN=set"), "its own token: {out}");
    // With its own token, the orchestrator drives the API through the CLI.
    // (Its JSON is written a line at a time: waited for down to the line that matters.)
    let out = app
        .wait_output("demo-orchestrator", "\"id\": \"demo-orchestrator\"")
        .await;
    assert!(out.contains("\"sessions\""), "{out}");
    let (_, list) = app.get("/api/v1/sessions").await;
    assert_eq!(list["sessions"].as_array().map(Vec::len), Some(1));
    let (s, _) = app
        .post("/api/v1/projects/nope/orchestrator", json!({}))
        .await;
    assert_eq!(s, 422);
}

#[actix_web::test]
async fn an_agent_reports_needs_input_with_its_session_token_only() {
    let bin = env!("CARGO_BIN_EXE_flotilla");
    let agent =
        format!(r#"["sh", "-c", "{bin} report needs_input --note 'which db?' && sleep 600"]"#);
    let app = spawn_app_with(Backend::Sqlite, &agent, "")
        .await
        .expect("app");
    let id = app.spawn(json!({"project": "demo", "prompt": "p"})).await;
    let s = app.wait_state(&id, "needs_input").await;
    assert_eq!(s["trackers"][0]["reaction"], "agent-needs-input");
    // The API token is not a report token, and a report token is bound to its session.
    let r = app
        .client
        .post(format!("{}/agent/v1/sessions/{id}/report", app.address))
        .bearer_auth(TOKEN)
        .json(&json!({"state": "working"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
}

#[actix_web::test]
async fn orphans_are_listed() {
    let app = spawn_app().await;
    std::fs::create_dir_all(app.home.join("worktrees/demo/ghost-1")).expect("mkdir");
    let (s, v) = app.get("/api/v1/orphans").await;
    assert_eq!(s, 200);
    let names: Vec<&str> = v["orphans"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert!(names.iter().any(|n| n.ends_with("ghost-1")), "{v}");
}

#[actix_web::test]
async fn the_clone_workspace_is_a_full_clone_and_is_removed_on_kill() {
    let app = AppBuilder::new()
        .project(|p| p.workspace = Some(flotilla::config::WorkspaceKind::Clone))
        .start()
        .await;
    let id = app.spawn(json!({"project": "demo", "prompt": "p"})).await;
    let s = app.wait_state(&id, "working").await;
    let ws = std::path::PathBuf::from(s["workspace"].as_str().expect("ws"));
    assert!(ws.join(".git").is_dir(), "a clone, not a worktree");
    assert_eq!(
        git(&ws, &["rev-parse", "--abbrev-ref", "HEAD"]).trim(),
        "session/demo-1"
    );
    assert!(ws.join("README.md").exists());
    let (st, _) = app
        .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
        .await;
    assert_eq!(st, 200);
    eventually(30, "clone removed", || async {
        (!ws.exists()).then_some(())
    })
    .await;
}
