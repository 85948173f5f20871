//! The fleet end to end on real tmux and real git with the scripted agent (driven through the
//! claude-code plugin): five sessions pushing to a bare origin, needs_input and stuck detection,
//! kill, `tmux kill-server` and restore, budgets from the agent's own usage log.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::fleet_plugins::scripted_agent_path;
use crate::helpers::*;

/// A repo with a bare `origin` the agents push to.
fn with_origin(app: &TestApp) -> PathBuf {
    push_to_bare_origin(
        &app.repo,
        &app.home.parent().expect("dir").join("origin.git"),
    )
}

pub fn tmux(socket: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("tmux")
        .arg("-L")
        .arg(socket)
        .args(args)
        .output()
        .expect("tmux");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The app's tmux server is killed when the test ends, and its agents waited for: an agent
/// still writing (Claude Code saves its state as it dies) would put files back into a temp dir
/// being removed, and leave it behind. Fields holding one come first, so it drops first.
pub struct TmuxGuard(pub String);

impl Drop for TmuxGuard {
    fn drop(&mut self) {
        let (_, panes) = tmux(&self.0, &["list-panes", "-a", "-F", "#{pane_pid}"]);
        let _ = tmux(&self.0, &["kill-server"]);
        // A zombie has ended (nobody may reap it here).
        let alive = |pid: &&str| {
            std::fs::read_to_string(Path::new("/proc").join(pid).join("stat")).is_ok_and(|st| {
                st.rsplit(')')
                    .next()
                    .is_some_and(|r| !r.trim_start().starts_with('Z'))
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while panes.lines().any(|p| alive(&p)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Config for the scripted agent as `claude-code` on tmux; `extra` goes under the project.
pub fn config(dir: &Path, extra_project: &str, extra_top: &str) -> (String, String) {
    let agent = scripted_agent_path();
    let home = dir.join("agent-home");
    std::fs::create_dir_all(&home).expect("mkdir");
    let agents = format!(
        "  claude:\n    kind: claude-code\n    command: [\"{}\"]\n    env: {{ HOME: \"{}\", GIT_AUTHOR_NAME: a, GIT_AUTHOR_EMAIL: a@example.com, GIT_COMMITTER_NAME: a, GIT_COMMITTER_EMAIL: a@example.com }}\n",
        agent.display(),
        home.display()
    );
    (
        agents,
        format!("    runtime: tmux\n    agent: claude\n{extra_project}{extra_top}"),
    )
}

/// Kills the process of tmux session `session`'s pane on `socket` with SIGKILL, as the
/// out-of-memory killer does.
pub fn sigkill_pane(socket: &str, session: &str) {
    let (ok, pid) = tmux(
        socket,
        &[
            "list-panes",
            "-t",
            &format!("={session}"),
            "-F",
            "#{pane_pid}",
        ],
    );
    assert!(ok, "{pid}");
    let pid: i32 = pid.trim().parse().expect("pane pid");
    // SAFETY: a plain kill(2) of the agent's process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
}

/// Waits for session `id` to end `errored` with the shell's status for SIGKILL.
pub async fn errored_by_sigkill(app: &TestApp, id: &str) {
    let s = app.wait_state(id, "errored").await;
    assert!(
        s["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("agent_exited_137")),
        "{s}"
    );
}

async fn app_with(extra_project: &str, extra_top: &str) -> Option<(TestApp, TmuxGuard)> {
    if !require_tool("tmux") || !require_tool("git") {
        return None;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let (agents, project) = config(scratch.path(), extra_project, extra_top);
    let app = spawn_app_with_agents(Backend::Sqlite, &agents, &project, scratch).await?;
    let guard = TmuxGuard(flotilla::app::tmux_socket(&app.home));
    Some((app, guard))
}

fn socket(app: &TestApp) -> String {
    flotilla::app::tmux_socket(&app.home)
}

#[actix_web::test]
async fn five_scripted_agents_work_in_five_worktrees_and_push_their_branches() {
    let Some((app, _g)) = app_with("", "").await else {
        return;
    };
    let origin = with_origin(&app);
    let mut ids = Vec::new();
    for n in 1..=5 {
        ids.push(
            app.spawn(json!({"project": "demo", "prompt": format!("task {n}")}))
                .await,
        );
    }
    for id in &ids {
        let s = app.wait_state(id, "working").await;
        assert!(Path::new(s["workspace"].as_str().expect("ws"))
            .join(".git")
            .exists());
    }
    let (_, sessions) = tmux(&socket(&app), &["list-sessions", "-F", "#{session_name}"]);
    for id in &ids {
        assert!(
            sessions.lines().any(|l| l == id),
            "tmux session {id}: {sessions}"
        );
    }
    eventually(60, "every branch pushed to origin", || async {
        let heads = git(
            &origin,
            &["for-each-ref", "--format=%(refname:short)", "refs/heads"],
        );
        ids.iter()
            .all(|id| heads.lines().any(|h| h == format!("session/{id}")))
            .then_some(())
    })
    .await;
    let log = git(&origin, &["log", "--oneline", "session/demo-3"]);
    assert!(
        log.lines().count() >= 2,
        "the agent's commit is on its branch: {log}"
    );
}

#[actix_web::test]
async fn needs_input_is_detected_when_the_agent_asks_and_idle_agents_become_stuck() {
    // An hour on the app's clock, which the test moves: no real wait. (The idle nudge comes
    // no earlier than stuck, so it is not armed and cannot race the stuck timer.)
    let top = "reactions:\n  agent-stuck: { threshold: 1h }\n  agent-idle: { threshold: 2h }\n";
    let Some((app, _g)) = app_with("", top).await else {
        return;
    };
    with_origin(&app);
    let asks = app
        .spawn(json!({"project": "demo", "prompt": "ASK before deleting"}))
        .await;
    let idle = app
        .spawn(json!({"project": "demo", "prompt": "IDLE"}))
        .await;
    let s = app.wait_state(&asks, "needs_input").await;
    assert_eq!(s["trackers"][0]["reaction"], "agent-needs-input");
    app.wait_state(&idle, "working").await;
    app.clock.advance(std::time::Duration::from_secs(3600 + 60));
    let s = app.wait_state(&idle, "stuck").await;
    assert_eq!(s["reason"], "idle_past_threshold");
    // Answering the question brings the first one back to work.
    let (st, v) = app
        .post(
            &format!("/api/v1/sessions/{asks}/send"),
            json!({"message": "y"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let s = app.wait_state(&asks, "working").await;
    assert_eq!(s["reason"], "input_answered", "{s}");
}

/// The agent draws its turn's end, then logs it seconds later without drawing anything (as
/// Claude Code does on a loaded machine): the look woken by the last redraw reads a turn
/// still running, and a second look, with no output to wake it, sees the turn ended.
#[actix_web::test]
async fn an_agent_whose_log_lags_its_screen_is_seen_idle_once_the_log_catches_up() {
    let Some((app, _g)) = app_with("", "").await else {
        return;
    };
    with_origin(&app);
    let id = app
        .spawn(json!({"project": "demo", "prompt": "LATE_LOG work"}))
        .await;
    eventually(30, "the turn's end on screen", || async {
        let (_, o) = app
            .get(&format!("/api/v1/sessions/{id}/output?lines=20"))
            .await;
        o["output"]
            .as_str()
            .is_some_and(|t| t.contains("DONE"))
            .then_some(())
    })
    .await;
    let s = eventually(30, "the session idle", || async {
        let (_, s) = app.get(&format!("/api/v1/sessions/{id}")).await;
        (s["activity"] == "idle").then_some(s)
    })
    .await;
    assert_eq!(s["state"], "working", "{s}");
}

#[actix_web::test]
async fn kill_removes_worktree_and_tmux_session_and_a_second_kill_says_so() {
    let Some((app, _g)) = app_with("", "").await else {
        return;
    };
    with_origin(&app);
    let id = app
        .spawn(json!({"project": "demo", "prompt": "IDLE"}))
        .await;
    let s = app.wait_state(&id, "working").await;
    let ws = s["workspace"].as_str().expect("ws").to_string();
    let (st, v) = app
        .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
        .await;
    assert_eq!((st, v["session"]["state"].as_str()), (200, Some("killed")));
    eventually(30, "tmux session gone and worktree removed", || async {
        let (alive, _) = tmux(&socket(&app), &["has-session", "-t", &id]);
        (!alive && !Path::new(&ws).exists()).then_some(())
    })
    .await;
    let (_, v) = app
        .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
        .await;
    assert_eq!(v["changed"], false);
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("already killed"),
        "{v}"
    );
}

#[actix_web::test]
async fn tmux_kill_server_kills_sessions_with_a_reason_and_restore_brings_them_back() {
    let Some((app, _g)) = app_with("", "").await else {
        return;
    };
    with_origin(&app);
    let a = app
        .spawn(json!({"project": "demo", "prompt": "IDLE"}))
        .await;
    let b = app
        .spawn(json!({"project": "demo", "prompt": "IDLE"}))
        .await;
    app.wait_state(&a, "working").await;
    app.wait_state(&b, "working").await;
    let (ok, _) = tmux(&socket(&app), &["kill-server"]);
    assert!(ok);
    for id in [&a, &b] {
        let s = app.wait_state(id, "killed").await;
        assert_eq!(s["reason"], "runtime_lost");
    }
    for id in [&a, &b] {
        let (st, v) = app
            .post(&format!("/api/v1/sessions/{id}/restore"), json!({}))
            .await;
        assert_eq!(st, 200, "{v}");
        app.wait_state(id, "working").await;
    }
    let (_, sessions) = tmux(&socket(&app), &["list-sessions", "-F", "#{session_name}"]);
    assert_eq!(sessions.lines().count(), 2, "{sessions}");
}

#[actix_web::test]
async fn crossing_the_token_budget_stops_the_agent_and_says_why() {
    let extra = "    budget: { session_tokens: 50, action: stop }\n";
    let Some((app, _g)) = app_with(extra, "").await else {
        return;
    };
    with_origin(&app);
    let id = app
        .spawn(json!({"project": "demo", "prompt": "write the feature"}))
        .await;
    let s = app.wait_state(&id, "killed").await;
    assert_eq!(s["reason"], "budget_exceeded");
    let usage: &Value = &s["meta"]["usage"];
    let tokens =
        usage["input_tokens"].as_u64().unwrap_or(0) + usage["output_tokens"].as_u64().unwrap_or(0);
    assert!(tokens >= 50, "the session shows what was spent: {s}");
    assert!(
        s["trackers"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["reaction"] == "budget")),
        "{s}"
    );
}

/// A `pricing:` entry for the scripted agent's model far above the built-in price: 4,000
/// cache-read tokens a message cost $0.80 at it (about half a cent at Sonnet's list price).
const DEAR_SONNET: &str = "pricing:\n  \"claude-sonnet-4-5*\": { input: 0, output: 0, cache_read: 200, cache_write: 0 }\n";

#[actix_web::test]
async fn usage_priced_from_the_configured_table_trips_the_dollar_budget() {
    let extra = "    budget: { session_usd: 0.5, action: stop }\n";
    let Some((app, _g)) = app_with(extra, DEAR_SONNET).await else {
        return;
    };
    with_origin(&app);
    let id = app
        .spawn(json!({"project": "demo", "prompt": "write the feature"}))
        .await;
    let s = app.wait_state(&id, "killed").await;
    assert_eq!(s["reason"], "budget_exceeded", "{s}");
    let usage: &Value = &s["meta"]["usage"];
    assert_eq!(usage["cost_source"], "config", "{s}");
    // The built-in price would never reach $0.50: the user's entry priced it.
    assert!(usage["cost_usd"].as_f64() >= Some(0.5), "{s}");
    assert!(
        s["trackers"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["reaction"] == "budget")),
        "{s}"
    );
}

#[actix_web::test]
async fn a_killed_session_keeps_the_cost_it_had() {
    let Some((app, _g)) = app_with("", DEAR_SONNET).await else {
        return;
    };
    with_origin(&app);
    let id = app
        .spawn(json!({"project": "demo", "prompt": "write the feature"}))
        .await;
    let before = eventually(30, "a priced usage reading", || async {
        let (_, s) = app.get(&format!("/api/v1/sessions/{id}")).await;
        let cost = s["meta"]["usage"]["cost_usd"].as_f64().filter(|c| *c > 0.0);
        cost.map(|c| (c, s))
    })
    .await;
    assert_eq!(
        before.1["meta"]["usage"]["cost_source"], "config",
        "{}",
        before.1
    );
    let (st, v) = app
        .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
        .await;
    assert_eq!(
        (st, v["session"]["state"].as_str()),
        (200, Some("killed")),
        "{v}"
    );
    let s = app.wait_state(&id, "killed").await;
    let usage = &s["meta"]["usage"];
    assert_eq!(usage["cost_source"], "config", "{s}");
    assert!(usage["cost_usd"].as_f64() >= Some(before.0), "{s}");
}

#[actix_web::test]
async fn after_kill_dash_nine_tmux_sessions_are_readopted_and_new_orphans_reported() {
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    use crate::server::{Scratch, ServerProc};
    let dir = tempfile::tempdir().expect("tempdir");
    let (agents, project) = config(dir.path(), "", "");
    let s = Scratch::with_agents(dir, &agents, &project);
    let sock = flotilla::app::tmux_socket(&s.home);
    let _g = TmuxGuard(sock.clone());
    let mut server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    let base = server.address.clone();
    let c = crate::helpers::http_client();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let v: Value = c
            .post(format!("{base}/api/v1/sessions"))
            .bearer_auth(TOKEN)
            .json(&json!({"project": "demo", "prompt": "IDLE"}))
            .send()
            .await
            .expect("spawn")
            .json()
            .await
            .expect("json");
        ids.push(v["id"].as_str().expect("id").to_string());
    }
    for id in &ids {
        eventually(30, "working", || async {
            session(&c, &base, id)
                .await
                .filter(|v| v["state"] == "working")
        })
        .await;
    }
    server.kill9();
    // While Flotilla is down, someone starts a tmux session on its socket.
    let (ok, _) = tmux(&sock, &["new-session", "-d", "-s", "ghost", "sleep", "600"]);
    assert!(ok);
    let server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    let base = server.address.clone();
    for id in &ids {
        let v = session(&c, &base, id).await.expect("session");
        assert_eq!(v["state"], "working", "re-adopted, not lost: {v}");
    }
    let (_, names) = tmux(&sock, &["list-sessions", "-F", "#{session_name}"]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, vec!["demo-1", "demo-2", "ghost"], "none duplicated");
    let v: Value = c
        .get(format!("{base}/api/v1/orphans"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("orphans")
        .json()
        .await
        .expect("json");
    assert!(
        v["orphans"]
            .as_array()
            .is_some_and(|o| o.iter().any(|o| o["name"] == "tmux:ghost")),
        "{v}"
    );
    // The re-adopted agent takes messages, and killing it still works.
    let r: Value = c
        .post(format!("{base}/api/v1/sessions/demo-1/send"))
        .bearer_auth(TOKEN)
        .json(&json!({"message": "hello again"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(r["delivered"], true, "{r}");
    let r = c
        .post(format!("{base}/api/v1/sessions/demo-2/kill"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("kill");
    assert_eq!(r.status(), 200);
    eventually(30, "tmux session demo-2 gone", || async {
        (!tmux(&sock, &["has-session", "-t", "demo-2"]).0).then_some(())
    })
    .await;
}

/// One session as the API shows it, or `None` while the server cannot answer.
async fn session(c: &reqwest::Client, base: &str, id: &str) -> Option<Value> {
    c.get(format!("{base}/api/v1/sessions/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// A message whose typing takes longer than the request may wait (here the agent does not
/// echo its input, so the draft never shows and the runtime waits it out) is answered
/// `pending`: stored and still being typed. Before, the sender got a 503 "busy; try again",
/// and trying again queued the message twice. It is typed, and journaled, once.
#[actix_web::test]
async fn a_send_slower_than_the_request_is_answered_pending_and_typed_once() {
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let agents = "  mute: { kind: command, command: [\"sh\", \"-c\", \"stty -echo; echo ready; exec sleep 600\"] }\n";
    let Some(app) = spawn_app_with_env(
        Backend::Sqlite,
        agents,
        "    runtime: tmux\n    agent: mute\n",
        scratch,
        &[("FLOTILLA__SERVER__ACTOR_TIMEOUT", "2s")],
    )
    .await
    else {
        return;
    };
    let _guard = TmuxGuard(socket(&app));
    let id = app
        .spawn(json!({"project": "demo", "prompt": "wait"}))
        .await;
    app.wait_output(&id, "ready").await;

    let (st, v) = app
        .post(
            &format!("/api/v1/sessions/{id}/send"),
            json!({"message": "only once please"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["pending"].as_bool(), v["delivered"].as_bool()),
        (Some(true), Some(false)),
        "{v}"
    );

    // The typing goes on without the request and ends in one journaled send.
    let sent = eventually(60, "the send journaled", || async {
        let (_, v) = app.get(&format!("/api/v1/sessions/{id}/events")).await;
        let sent: Vec<Value> = v["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["kind"] == "agent.message_sent")
            .collect();
        (!sent.is_empty()).then_some(sent)
    })
    .await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["data"]["chars"], 16, "{sent:?}");
}

/// A message typed to an agent whose screen never shows it (a prompt Flotilla does not know,
/// such as "Press Enter to update", that reads keys without echoing them) is not submitted:
/// its Enter would have answered that prompt, which nobody read. It is reported not delivered.
#[actix_web::test]
async fn a_message_that_never_shows_on_screen_is_not_entered() {
    if !require_tool("tmux") || !require_tool("git") || !require_tool("bash") {
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let agents = "  prompt: { kind: command, command: [\"bash\", \"-c\", \"echo 'Press Enter to deploy'; while IFS= read -r -s -n1 k; do [ -z \\\"$k\\\" ] && echo DEPLOYED > deployed.txt; done\"] }\n";
    let Some(app) = spawn_app_with_env(
        Backend::Sqlite,
        agents,
        "    runtime: tmux\n    agent: prompt\n",
        scratch,
        &[],
    )
    .await
    else {
        return;
    };
    let _guard = TmuxGuard(socket(&app));
    let id = app
        .spawn(json!({"project": "demo", "prompt": "wait"}))
        .await;
    app.wait_output(&id, "Press Enter to deploy").await;
    let s = app.get(&format!("/api/v1/sessions/{id}")).await.1;
    let ws = std::path::PathBuf::from(s["workspace"].as_str().expect("workspace"));

    let (st, v) = app
        .post(
            &format!("/api/v1/sessions/{id}/send"),
            json!({"message": "please run the tests"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let sent = eventually(60, "the send journaled", || async {
        let (_, v) = app.get(&format!("/api/v1/sessions/{id}/events")).await;
        v["events"]
            .as_array()
            .and_then(|es| es.iter().find(|e| e["kind"] == "agent.message_sent"))
            .cloned()
    })
    .await;
    assert_eq!(sent["data"]["delivered"], false, "{sent}");
    assert!(
        !ws.join("deployed.txt").exists(),
        "an Enter answered the prompt nobody read"
    );
}

/// The periodic reconcile (here every 20 ms) that finds an agent's process gone leaves the
/// exit to the exit watcher, which reads its status a moment later: an agent that exits 0 is
/// `done` and one killed by SIGKILL `errored` with 137, neither `killed` / `runtime_lost`.
/// (Before, a reconcile between the exit and the watcher's report ended the session without
/// a status, as a lost runtime.)
#[actix_web::test]
async fn a_reconcile_between_an_exit_and_its_status_leaves_the_status_to_the_exit_watch() {
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let app = crate::app_builder::AppBuilder::new()
        .agent_command("sleeper", &["sleep", "600"])
        .agent_command("brief", &["sleep", "1"])
        .project(|p| p.runtime = Some(flotilla::config::RuntimeKind::Tmux))
        .settings(|s| {
            s.lifecycle.reconcile_interval =
                flotilla::config::HumanDuration(std::time::Duration::from_millis(20));
        })
        .start()
        .await;
    let _g = TmuxGuard(socket(&app));
    with_origin(&app);
    let killed = app
        .spawn(json!({"project": "demo", "agent": "sleeper", "prompt": "p"}))
        .await;
    let brief = app
        .spawn(json!({"project": "demo", "agent": "brief", "prompt": "p"}))
        .await;
    app.wait_state(&killed, "working").await;
    sigkill_pane(&socket(&app), &killed);
    errored_by_sigkill(&app, &killed).await;
    let s = app.wait_state(&brief, "done").await;
    assert_eq!(s["reason"], "agent_exited_0", "{s}");
}
