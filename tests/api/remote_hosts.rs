//! Agents on remote hosts over SSH, end to end: two sshd servers this test starts on
//! 127.0.0.1 (their own host keys, an authorized key of their own) stand for two hosts, each
//! with its own work directory. The scripted agent (as `claude-code`, in tmux on the host)
//! commits and pushes; the commit reaches the origin. Then send, kill, restore, a host that
//! vanishes (its sshd and connections killed: the session gets `host_unreachable: a` and a
//! notification is recorded) and comes back (the reason is cleared, sends work again).

use std::path::Path;

use serde_json::{json, Value};

use crate::fleet_tmux::{config, tmux, TmuxGuard};
use crate::helpers::*;
use crate::sshd::{available, Sshd};

/// Sets up the bare origin the agents push to (as `fleet_tmux` does).
fn with_origin(app: &TestApp) -> std::path::PathBuf {
    let origin = app.home.parent().expect("dir").join("origin.git");
    let out = std::process::Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&origin)
        .output()
        .expect("git");
    assert!(out.status.success());
    git(
        &app.repo,
        &["remote", "add", "origin", &origin.display().to_string()],
    );
    git(&app.repo, &["push", "-q", "origin", "main"]);
    origin
}

async fn session(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/v1/sessions/{id}")).await.1
}

/// Waits until the session's reason satisfies `ok`.
async fn wait_reason(app: &TestApp, id: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    eventually(60, what, || async {
        let s = session(app, id).await;
        ok(&s["reason"]).then_some(s)
    })
    .await
}

#[actix_web::test]
async fn sessions_run_on_two_ssh_hosts_and_survive_one_going_away() {
    if !available() || !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut a = Sshd::start(&scratch.path().join("sshd-a"));
    let b = Sshd::start(&scratch.path().join("sshd-b"));
    let (wa, wb) = (scratch.path().join("host-a"), scratch.path().join("host-b"));
    let hooks = crate::receivers::Receivers::start().await;
    let hosts = format!(
        "hosts:\n{}{}notifiers:\n  hook: {{ kind: webhook, url: \"{}\", secret: \"{}\" }}\ndefaults: {{ notifiers: [hook] }}\n\
         notifications: {{ poll_interval: 100ms, backoff_initial: 100ms, backoff_max: 2s, timeout: 5s }}\n",
        a.host_yaml("a", &wa, 2),
        b.host_yaml("b", &wb, 2),
        hooks.webhook_url(),
        crate::receivers::WEBHOOK_SECRET
    );
    let (agents, project) = config(scratch.path(), "", &hosts);
    let app = spawn_app_with_agents(Backend::Sqlite, &agents, &project, scratch)
        .await
        .expect("app");
    let socket = flotilla::app::tmux_socket(&app.home);
    let _ga = TmuxGuard(format!("{socket}-a"));
    let _gb = TmuxGuard(format!("{socket}-b"));
    let origin = with_origin(&app);

    // One session named onto host a; the next placed by Flotilla: b is the least loaded.
    let s1 = app
        .spawn(json!({"project": "demo", "prompt": "remote task one", "host": "a"}))
        .await;
    let v1 = app.wait_state(&s1, "working").await;
    assert_eq!(v1["runtime"], "ssh:a", "{v1}");
    assert_eq!(v1["host"], "a", "the session names its host: {v1}");
    let ws1 = v1["workspace"].as_str().expect("workspace").to_string();
    assert!(ws1.starts_with(&wa.display().to_string()), "{ws1}");
    assert!(
        Path::new(&ws1).join(".git").exists(),
        "worktree made on the host"
    );
    let s2 = app
        .spawn(json!({"project": "demo", "prompt": "remote task two", "host": "auto"}))
        .await;
    let v2 = app.wait_state(&s2, "working").await;
    assert_eq!(
        v2["runtime"], "ssh:b",
        "placed on the least-loaded host: {v2}"
    );
    assert!(v2["workspace"]
        .as_str()
        .is_some_and(|w| w.starts_with(&wb.display().to_string())));
    // An unknown host is refused naming the field.
    let (st, v) = app
        .post(
            "/api/v1/sessions",
            json!({"project": "demo", "prompt": "x", "host": "nowhere"}),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert!(v.to_string().contains("host"), "{v}");

    // The agents' commits reach the origin.
    eventually(60, "both branches pushed to origin", || async {
        let heads = git(
            &origin,
            &["for-each-ref", "--format=%(refname:short)", "refs/heads"],
        );
        [&s1, &s2]
            .iter()
            .all(|id| heads.lines().any(|h| h == format!("session/{id}")))
            .then_some(())
    })
    .await;
    let log = git(&origin, &["log", "--oneline", &format!("session/{s1}")]);
    assert!(log.lines().count() >= 2, "the agent's commit: {log}");

    // Send: typed into the pane on the host, confirmed, and seen in its output.
    let (st, v) = app
        .post(
            &format!("/api/v1/sessions/{s1}/send"),
            json!({"message": "hello over ssh"}),
        )
        .await;
    assert_eq!((st, v["delivered"].as_bool()), (200, Some(true)), "{v}");
    app.wait_output(&s1, "got: hello over ssh").await;
    // Attach goes through ssh.
    let (st, v) = app.get(&format!("/api/v1/sessions/{s1}/attach")).await;
    if st == 200 {
        let cmd = v.to_string();
        assert!(cmd.contains("ssh") && cmd.contains("attach-session"), "{v}");
    }

    // Kill: the tmux session and the worktree on host b go; restore brings them back.
    let (st, v) = app
        .post(&format!("/api/v1/sessions/{s2}/kill"), json!({}))
        .await;
    assert_eq!(
        (st, v["session"]["state"].as_str()),
        (200, Some("killed")),
        "{v}"
    );
    let ws2 = v2["workspace"].as_str().expect("ws").to_string();
    eventually(30, "worktree removed on host b", || async {
        (!Path::new(&ws2).exists()).then_some(())
    })
    .await;
    let (_, live) = tmux(
        &format!("{socket}-b"),
        &["list-sessions", "-F", "#{session_name}"],
    );
    assert!(!live.lines().any(|l| l == s2), "tmux session gone: {live}");
    let (st, v) = app
        .post(&format!("/api/v1/sessions/{s2}/restore"), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    app.wait_state(&s2, "working").await;
    assert!(Path::new(&ws2).join(".git").exists(), "worktree made again");

    // Host a goes away: its session is marked and a human is told; b's is not.
    a.vanish();
    let marked = wait_reason(&app, &s1, "s1 marked host_unreachable", |r| {
        r == "host_unreachable: a"
    })
    .await;
    assert_eq!(marked["meta"]["host_unreachable"]["host"], "a", "{marked}");
    assert_ne!(session(&app, &s2).await["reason"], "host_unreachable: a");
    eventually(
        30,
        "a notification about host a, recorded and delivered",
        || async {
            let (_, v) = app.get("/api/v1/notifications?limit=100").await;
            let recorded = v["notifications"]
                .as_array()?
                .iter()
                .any(|n| n.to_string().contains("Host a cannot be reached"));
            let delivered = hooks
                .delivered(crate::receivers::Target::Webhook)
                .iter()
                .any(|h| h.body.to_string().contains("Host a cannot be reached"));
            (recorded && delivered).then_some(())
        },
    )
    .await;
    // Sends fail while it is away (no hang).
    let (st, _) = app
        .post(
            &format!("/api/v1/sessions/{s1}/send"),
            json!({"message": "anyone there"}),
        )
        .await;
    assert_ne!(st, 200);

    // It comes back: the mark goes, and the agent (which ran on) takes messages again.
    a.restart();
    wait_reason(&app, &s1, "s1's host_unreachable mark cleared", |r| {
        r != "host_unreachable: a"
    })
    .await;
    let (st, v) = app
        .post(
            &format!("/api/v1/sessions/{s1}/send"),
            json!({"message": "welcome back"}),
        )
        .await;
    assert_eq!((st, v["delivered"].as_bool()), (200, Some(true)), "{v}");
    app.wait_output(&s1, "got: welcome back").await;

    for id in [&s1, &s2] {
        let (st, v) = app
            .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
            .await;
        assert_eq!(st, 200, "{v}");
    }
}
