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

/// Two hosts `a` and `b` of capacity 2, each an sshd of its own with its work directory
/// under `dir`, and their `hosts:` section.
struct TwoHosts {
    a: Sshd,
    b: Sshd,
    wa: std::path::PathBuf,
    wb: std::path::PathBuf,
}

impl TwoHosts {
    fn start(dir: &Path) -> TwoHosts {
        TwoHosts {
            a: Sshd::start(&dir.join("sshd-a")),
            b: Sshd::start(&dir.join("sshd-b")),
            wa: dir.join("host-a"),
            wb: dir.join("host-b"),
        }
    }

    fn yaml(&self) -> String {
        format!(
            "{}{}",
            self.a.host_yaml("a", &self.wa, 2),
            self.b.host_yaml("b", &self.wb, 2)
        )
    }
}

/// Sets up the bare origin the agents push to.
fn with_origin(app: &TestApp) -> std::path::PathBuf {
    push_to_bare_origin(
        &app.repo,
        &app.home.parent().expect("dir").join("origin.git"),
    )
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

/// An app whose project runs on `host` (`a`, `b` or `auto`) of two ssh hosts, with a
/// `sleeper` agent (`sleep 600`): the app, its tmux socket's name, and what keeps the hosts'
/// tmux servers (killed first) and the hosts for the test's length. `None` where sshd or tmux
/// is missing.
async fn sleepers_on_two_hosts(
    host: &str,
) -> Option<(TestApp, String, (TmuxGuard, TmuxGuard, TwoHosts))> {
    if !available() || !require_tool("tmux") || !require_tool("git") {
        return None;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let two = TwoHosts::start(scratch.path());
    let hosts = format!("hosts:\n{}", two.yaml());
    let (mut agents, project) = config(scratch.path(), &format!("    host: {host}\n"), &hosts);
    agents.push_str("  sleeper: { kind: command, command: [\"sleep\", \"600\"] }\n");
    let app = spawn_app_with_agents(Backend::Sqlite, &agents, &project, scratch)
        .await
        .expect("app");
    let socket = flotilla::app::tmux_socket(&app.home);
    let guards = (
        TmuxGuard(format!("{socket}-a")),
        TmuxGuard(format!("{socket}-b")),
    );
    with_origin(&app);
    Some((app, socket, (guards.0, guards.1, two)))
}

/// `host: auto` counts a session placed on a host as its load from the moment it is placed,
/// not only once its pane runs: four spawns in quick succession (none started yet when the
/// next is placed) fill two hosts of capacity 2 evenly, and a fifth finds no room.
#[actix_web::test]
async fn spawns_in_quick_succession_are_spread_over_the_hosts() {
    let Some((app, _socket, _hosts)) = sleepers_on_two_hosts("auto").await else {
        return;
    };

    let mut ids = Vec::new();
    for n in 0..4 {
        let (st, v) = app
            .post(
                "/api/v1/sessions",
                json!({"project": "demo", "agent": "sleeper", "prompt": format!("task {n}")}),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        ids.push(v["id"].as_str().expect("id").to_string());
    }
    let (st, v) = app
        .post(
            "/api/v1/sessions",
            json!({"project": "demo", "agent": "sleeper", "prompt": "one too many"}),
        )
        .await;
    assert_eq!(st, 422, "both hosts are full with four placed: {v}");
    assert!(v.to_string().contains("full"), "{v}");
    let mut on = Vec::new();
    for id in &ids {
        let v = app.wait_state(id, "working").await;
        on.push(v["host"].as_str().unwrap_or("local").to_string());
    }
    on.sort();
    assert_eq!(on, ["a", "a", "b", "b"], "two sessions on each host");
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
    assert_eq!(st, 200, "{v}");
    assert!(v["delivered"] == true || v["pending"] == true, "{v}");
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
    // Over ssh on a loaded machine the typing may outlast the request: then it is pending.
    assert_eq!(st, 200, "{v}");
    assert!(v["delivered"] == true || v["pending"] == true, "{v}");
    app.wait_output(&s1, "got: welcome back").await;

    for id in [&s1, &s2] {
        let (st, v) = app
            .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
            .await;
        assert_eq!(st, 200, "{v}");
    }
}

/// The tmux pane's process on a host's server (the test's hosts are this machine).
fn pane_cmdline(socket: &str, session: &str) -> String {
    let (_, pid) = tmux(
        socket,
        &[
            "display-message",
            "-p",
            "-t",
            &format!("={session}:"),
            "#{pane_pid}",
        ],
    );
    std::fs::read(format!("/proc/{}/cmdline", pid.trim()))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// What a launch on a host needs beyond its worktree and tmux: a batch placed with `host: auto`
/// is spread over both hosts; the project's workspace `setup` runs on the host in the new
/// worktree; Claude Code's folder trust is written into the agent's `.claude.json` on the host
/// for the host's clone; claude's hooks call the `flotilla` Flotilla copied to the host; an
/// agent's `flotilla report` on the host reaches Flotilla through the reverse forward (the
/// session goes `needs_input` with its note).
#[actix_web::test]
async fn hosts_run_setup_trust_claude_report_back_and_take_a_batch_spread() {
    if !available() || !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let two = TwoHosts::start(scratch.path());
    let (wa, wb) = (two.wa.clone(), two.wb.clone());
    let hosts = format!("hosts:\n{}", two.yaml());
    let setup = "    host: auto\n    setup: { copy: [local.env], post_create: [[\"sh\", \"-c\", \"pwd > setup-ran.txt\"]] }\n";
    let (mut agents, project) = config(scratch.path(), setup, &hosts);
    agents.push_str(
        "  reporter: { kind: command, command: [\"sh\", \"-c\", \"flotilla report needs_input --note 'asked from the host' && exec sleep 600\"] }\n",
    );
    // The agent's Claude Code has done its first-run set-up, and trusts no folder yet.
    let claude_json = scratch.path().join("agent-home").join(".claude.json");
    std::fs::create_dir_all(claude_json.parent().expect("home")).expect("home");
    std::fs::write(&claude_json, r#"{"hasCompletedOnboarding": true}"#).expect("claude.json");
    let app = reporting_app(&agents, &project, scratch).await;
    let socket = flotilla::app::tmux_socket(&app.home);
    let _ga = TmuxGuard(format!("{socket}-a"));
    let _gb = TmuxGuard(format!("{socket}-b"));
    with_origin(&app);
    std::fs::write(app.repo.join("local.env"), "SECRET_FOR_DEV=1\n").expect("local.env");

    // A batch with `host: auto` is spread over both hosts, not put on one.
    let (st, v) = app
        .post(
            "/api/v1/sessions/batch",
            json!({"project": "demo", "issues": ["7", "8"]}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let spawned = v["spawned"].as_array().expect("spawned").clone();
    assert_eq!(spawned.len(), 2, "{v}");
    let mut on: Vec<String> = Vec::new();
    for s in &spawned {
        let id = s["id"].as_str().expect("id");
        let v = app.wait_state(id, "working").await;
        on.push(v["host"].as_str().unwrap_or("local").to_string());
    }
    on.sort();
    assert_eq!(on, ["a", "b"], "one session on each host: {v}");

    for s in &spawned {
        let id = s["id"].as_str().expect("id");
        let v = session(&app, id).await;
        let host = v["host"].as_str().expect("host");
        let ws = Path::new(v["workspace"].as_str().expect("workspace")).to_path_buf();
        // Setup ran on the host, in the new worktree.
        assert_eq!(
            std::fs::read_to_string(ws.join("local.env"))
                .ok()
                .as_deref(),
            Some("SECRET_FOR_DEV=1\n"),
            "setup.copy reached the worktree on host {host}"
        );
        assert_eq!(
            std::fs::read_to_string(ws.join("setup-ran.txt"))
                .ok()
                .map(|t| t.trim().to_string()),
            Some(ws.display().to_string()),
            "setup.post_create ran in the worktree on host {host}"
        );
        // claude's hooks run the flotilla copied to that host.
        let cmd = pane_cmdline(&format!("{socket}-{host}"), id);
        let work = if host == "a" { &wa } else { &wb };
        assert!(
            cmd.contains(&format!("{}/bin/", work.display())) && cmd.contains("hook claude-code"),
            "the hook command is the host's flotilla: {cmd}"
        );
    }
    // Folder trust for each host's clone of the repository, in the agent's .claude.json there.
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&claude_json).expect("read")).expect("json");
    for work in [&wa, &wb] {
        let trusted = doc["projects"].as_object().is_some_and(|p| {
            p.iter().any(|(k, v)| {
                k.starts_with(&format!("{}/repos/", work.display()))
                    && v["hasTrustDialogAccepted"] == true
            })
        });
        assert!(trusted, "the host's clone is trusted: {doc}");
    }
    assert_eq!(
        doc["hasCompletedOnboarding"], true,
        "other keys kept: {doc}"
    );

    // An agent on a host reports through `flotilla report`: its session goes needs_input.
    let r = app
        .spawn(json!({"project": "demo", "agent": "reporter", "prompt": "ask", "host": "b"}))
        .await;
    let v = app.wait_state(&r, "needs_input").await;
    assert_eq!(v["host"], "b", "{v}");
    assert!(
        v.to_string().contains("asked from the host"),
        "the report's note: {v}"
    );
    assert!(
        std::fs::read_dir(wb.join("bin"))
            .expect("bin dir on host b")
            .flatten()
            .any(|d| d.path().join("flotilla").is_file()),
        "flotilla installed on host b"
    );

    let (_, all) = app.get("/api/v1/sessions").await;
    for s in all["sessions"].as_array().into_iter().flatten() {
        let id = s["id"].as_str().expect("id");
        let (st, v) = app
            .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
            .await;
        assert_eq!(st, 200, "{v}");
    }
    drop(two);
}

/// The probe a sandboxed agent on a host runs (as `tests/api/sandbox.rs`'s): one
/// `name=yes|no` line per attempt, then `PROBE DONE`, then it waits.
const HOST_PROBE: &str = r#"#!/bin/sh
try() { if sh -c "$2" >/dev/null 2>&1; then echo "$1=yes"; else echo "$1=no"; fi; }
try ssh_key "cat \"$HOME/.ssh/id_test\""
try other_worktree "cat \"$PROBE_OTHER\""
try write_worktree "echo inside > inside.txt && test -s inside.txt"
try prompt "grep -q 'probe the sandbox' \"$FLOTILLA_PROMPT_FILE\""
try write_outside "echo outside > \"$PROBE_OUTSIDE\""
try write_read_only "echo outside > \"$PROBE_READ_ONLY\""
try write_workdir "echo outside > \"$PROBE_WORKDIR_FILE\" && test -s \"$PROBE_WORKDIR_FILE\""
try allowed_via_proxy "curl -sf --max-time 10 --noproxy '' -x \"$HTTP_PROXY\" http://127.0.0.1:$PORT_OK/"
try refused_via_proxy "curl -sf --max-time 10 --noproxy '' -x \"$HTTP_PROXY\" http://127.0.0.1:$PORT_NO/"
try direct_host "curl -sf --max-time 5 --noproxy '*' http://127.0.0.1:$PORT_NO/"
try flotilla_api "curl -sf --max-time 10 --noproxy '*' \"$FLOTILLA_SERVER/healthz\""
echo "PROBE DONE"
while read -r word; do
  try "again_$word" "curl -sf --max-time 10 --noproxy '' -x \"$HTTP_PROXY\" http://127.0.0.1:$PORT_OK/"
done
exec sleep 600
"#;

/// A sandboxed session on a host: its agent runs under bubblewrap on the host (the pane's
/// process is `bwrap`), writes in its worktree there and nowhere else, cannot read the
/// agent's key or another session's worktree, reaches an allowed server only through the
/// egress proxy, which stays in Flotilla (its socket reverse-forwarded to the host): the
/// refused server is a `sandbox.refused` event on the session, never reached. A kill removes
/// the host's run directory. The proxy is reached again after the host's connection drops and
/// comes back. A host without bubblewrap refuses the spawn (422).
#[actix_web::test]
async fn a_sandboxed_session_on_a_host_runs_in_bwrap_there_behind_flotillas_proxy() {
    // Under CI=true each of these fails the test when missing, never skips it.
    if !available()
        || !require_tool("bwrap")
        || !require_tool("tmux")
        || !require_tool("git")
        || !require_tool("curl")
    {
        return;
    }
    use crate::sandbox::{http_server, line};
    use std::sync::atomic::Ordering;
    let scratch = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(scratch.path()).expect("canonical");
    let sshd = Sshd::start(&root.join("sshd-a"));
    let wa = root.join("host-a");
    // Host `plain` has everything but bubblewrap on its PATH.
    let plain_bin = root.join("plain-bin");
    std::fs::create_dir_all(&plain_bin).expect("mkdir");
    for dir in ["/usr/bin", "/bin", "/usr/local/bin"] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let to = plain_bin.join(e.file_name());
            if e.file_name() != "bwrap" && !to.exists() {
                std::os::unix::fs::symlink(e.path(), to).expect("symlink");
            }
        }
    }
    let plain_path = plain_bin.display().to_string();
    let plain = Sshd::start_with_env(&root.join("sshd-plain"), &[("PATH", &plain_path)]);
    // The agent's home holds a key it must not read.
    let home = root.join("agent-home");
    std::fs::create_dir_all(home.join(".ssh")).expect("mkdir");
    std::fs::write(home.join(".ssh/id_test"), "PRIVATE KEY").expect("key");
    let tools = root.join("tools");
    std::fs::create_dir_all(&tools).expect("mkdir");
    let probe = tools.join("probe.sh");
    std::fs::write(&probe, HOST_PROBE).expect("probe");
    // Another session's work on the host, and places outside the worktree.
    let other = wa.join("worktrees/demo/other-1/secret.txt");
    std::fs::create_dir_all(other.parent().expect("parent")).expect("mkdir");
    std::fs::write(&other, "another session's work").expect("write");
    let outside = root.join("outside.txt");
    let workdir_file = wa.join("written-by-agent.txt");
    let (port_ok, hits_ok) = http_server().await;
    let (port_no, hits_no) = http_server().await;

    let agents = format!(
        "  probe:\n    kind: command\n    command: [\"sh\", \"{probe}\"]\n    env: {{ HOME: \"{home}\", PROBE_OTHER: \"{other}\", PROBE_OUTSIDE: \"{outside}\", PROBE_WORKDIR_FILE: \"{wf}\", PROBE_READ_ONLY: \"{ro}\", PORT_OK: \"{port_ok}\", PORT_NO: \"{port_no}\" }}\n",
        probe = probe.display(),
        home = home.display(),
        other = other.display(),
        outside = outside.display(),
        wf = workdir_file.display(),
        ro = tools.join("written.txt").display(),
    );
    let project = format!(
        "    runtime: tmux\n    agent: probe\n    host: a\n    sandbox:\n      enabled: true\n      network: proxy\n      allow_hosts: [\"127.0.0.1:{port_ok}\"]\n      mounts: [{{ path: \"{tools}\" }}]\nhosts:\n{host}{plain}",
        tools = tools.display(),
        host = sshd.host_yaml("a", &wa, 2),
        plain = plain.host_yaml("plain", &root.join("host-plain"), 2),
    );
    let app = reporting_app(&agents, &project, scratch).await;
    let socket = format!("{}-a", flotilla::app::tmux_socket(&app.home));
    let _g = TmuxGuard(socket.clone());
    let _gp = TmuxGuard(format!("{}-plain", flotilla::app::tmux_socket(&app.home)));
    with_origin(&app);

    // A host without bubblewrap refuses the spawn, naming the host and the key; nothing is
    // started there, sandboxed or not.
    let (st, v) = app
        .post(
            "/api/v1/sessions",
            json!({"project": "demo", "prompt": "x", "host": "plain"}),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    let why = v.to_string();
    assert!(
        why.contains("projects.demo.sandbox")
            && why.contains("host plain")
            && why.contains("bwrap"),
        "{v}"
    );
    let (_, all) = app.get("/api/v1/sessions").await;
    assert_eq!(all["sessions"].as_array().map(Vec::len), Some(0), "{all}");

    let id = app
        .spawn(json!({"project": "demo", "prompt": "probe the sandbox"}))
        .await;
    let output = app.wait_output(&id, "PROBE DONE").await;
    let v = session(&app, &id).await;
    assert_eq!(v["host"], "a", "{v}");
    let ws = Path::new(v["workspace"].as_str().expect("workspace")).to_path_buf();
    assert!(ws.starts_with(&wa), "the worktree is on the host: {v}");
    for (name, want) in [
        ("ssh_key", "no"),
        ("other_worktree", "no"),
        ("write_worktree", "yes"),
        // The prompt, copied into the hidden work directory, is shown read-only.
        ("prompt", "yes"),
        // A path mounted read-only (`sandbox.mounts`).
        ("write_read_only", "no"),
        ("allowed_via_proxy", "yes"),
        ("refused_via_proxy", "no"),
        ("direct_host", "no"),
        ("flotilla_api", "yes"),
    ] {
        assert_eq!(line(&output, name), want, "{name}: {output}");
    }
    // Written in the worktree on the host; nothing written outside it: `/tmp` and the host's
    // work directory are private tmpfs inside (what the agent wrote there is gone), a mount
    // is read-only.
    assert_eq!(
        std::fs::read_to_string(ws.join("inside.txt"))
            .ok()
            .as_deref(),
        Some("inside\n")
    );
    assert!(!outside.exists(), "written outside the worktree");
    assert!(
        !workdir_file.exists(),
        "written into the host's work directory"
    );
    assert!(
        !tools.join("written.txt").exists(),
        "written into a read-only mount"
    );
    // The agent on the host is bubblewrap's child: the pane runs `bwrap … sandbox-exec`.
    let cmd = pane_cmdline(&socket, &id);
    assert!(
        cmd.contains("bwrap") && cmd.contains("sandbox-exec") && cmd.contains("--unshare-net"),
        "{cmd}"
    );
    assert!(
        cmd.contains(&format!("{}/bin/", wa.display())),
        "sandbox-exec is the flotilla copied to the host: {cmd}"
    );
    assert!(hits_ok.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        hits_no.load(Ordering::SeqCst),
        0,
        "the refused server was reached"
    );
    // The refused connection is an event on the session, from the proxy in Flotilla.
    eventually(10, "a sandbox.refused event on the session", || async {
        let (_, v) = app.get(&format!("/api/v1/sessions/{id}/events")).await;
        v["events"]
            .as_array()?
            .iter()
            .any(|e| e["kind"] == "sandbox.refused" && e["data"]["port"] == port_no)
            .then_some(())
    })
    .await;
    let run_dir = wa.join("run").join(&id);
    assert!(
        run_dir.join("proxy.sock").exists(),
        "the proxy's socket on the host"
    );

    // The host's connection drops (its sshd and connections killed; the agent runs on) and
    // comes back: the proxy's forward is asked for again, so the agent reaches it again.
    let mut sshd = sshd;
    sshd.vanish();
    wait_reason(&app, &id, "marked host_unreachable", |r| {
        r == "host_unreachable: a"
    })
    .await;
    sshd.restart();
    wait_reason(&app, &id, "host_unreachable cleared", |r| {
        r != "host_unreachable: a"
    })
    .await;
    let before = hits_ok.load(Ordering::SeqCst);
    eventually(
        60,
        "the allowed server reached again after the reconnection",
        || async {
            let (st, _) = app
                .post(
                    &format!("/api/v1/sessions/{id}/send"),
                    json!({"message": "back"}),
                )
                .await;
            let (_, o) = app
                .get(&format!("/api/v1/sessions/{id}/output?lines=200"))
                .await;
            let out = o["output"].as_str().unwrap_or_default().to_string();
            (st == 200 && out.contains("again_back=yes")).then_some(())
        },
    )
    .await;
    assert!(hits_ok.load(Ordering::SeqCst) > before);

    let (st, v) = app
        .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    eventually(30, "the host's sandbox run directory removed", || async {
        (!run_dir.exists()).then_some(())
    })
    .await;
    drop((sshd, plain));
}

/// A sandboxed agent on a host outlives Flotilla and its ssh connection: `kill -9` of the
/// server while the host's connection drops too (so the new one has no forward), then both
/// come back: the adopted session's proxy is served again and its socket forwarded to the
/// host again, so the agent reaches an allowed server through it.
#[actix_web::test]
async fn a_sandboxed_agent_on_a_host_reaches_its_proxy_again_after_flotilla_restarts() {
    if !available()
        || !require_tool("bwrap")
        || !require_tool("tmux")
        || !require_tool("git")
        || !require_tool("curl")
    {
        return;
    }
    use crate::crash::{get, post};
    use crate::sandbox::{http_server, line};
    use crate::server::{Scratch, ServerProc};
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    let mut sshd = Sshd::start(&root.join("sshd-a"));
    let wa = root.join("host-a");
    let home = root.join("agent-home");
    std::fs::create_dir_all(&home).expect("mkdir");
    let tools = root.join("tools");
    std::fs::create_dir_all(&tools).expect("mkdir");
    let probe = tools.join("probe.sh");
    std::fs::write(&probe, HOST_PROBE).expect("probe");
    let (port_ok, hits_ok) = http_server().await;
    let (port_no, _) = http_server().await;
    let agents = format!(
        "  probe:\n    kind: command\n    command: [\"sh\", \"{probe}\"]\n    env: {{ HOME: \"{home}\", PORT_OK: \"{port_ok}\", PORT_NO: \"{port_no}\" }}\n",
        probe = probe.display(),
        home = home.display(),
    );
    let extra = format!(
        "    runtime: tmux\n    agent: probe\n    host: a\n    sandbox:\n      enabled: true\n      allow_hosts: [\"127.0.0.1:{port_ok}\"]\n      mounts: [{{ path: \"{tools}\" }}]\nhosts:\n{host}",
        tools = tools.display(),
        host = sshd.host_yaml("a", &wa, 2),
    );
    let s = Scratch::with_agents(dir, &agents, &extra);
    let repo = s.dir.path().join("repo");
    push_to_bare_origin(&repo, &s.dir.path().join("origin.git"));
    let cli = env!("CARGO_BIN_EXE_flotilla");
    let env = [("FLOTILLA__SERVER__CLI_PATH", cli)];
    let _g = TmuxGuard(format!("{}-a", flotilla::app::tmux_socket(&s.home)));
    let mut server = ServerProc::start_with_env(s.dir.path(), &s.home, &s.cfg, s.port, &env).await;
    let base = server.address.clone();
    let (st, v) = post(
        &base,
        "/api/v1/sessions",
        json!({"project": "demo", "prompt": "probe"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let output = |base: String, id: String| async move {
        let o = get(&base, &format!("/api/v1/sessions/{id}/output?lines=200")).await;
        o["output"].as_str().unwrap_or_default().to_string()
    };
    let first = eventually(60, "the probe done", || async {
        let out = output(base.clone(), id.clone()).await;
        out.contains("PROBE DONE").then_some(out)
    })
    .await;
    assert_eq!(line(&first, "allowed_via_proxy"), "yes", "{first}");

    // Flotilla dies, and so does its connection to the host (the master and its forwards).
    server.kill9();
    sshd.vanish();
    sshd.restart();
    let server = ServerProc::start_with_env(s.dir.path(), &s.home, &s.cfg, s.port, &env).await;
    let base = server.address.clone();
    let before = hits_ok.load(Ordering::SeqCst);
    eventually(
        60,
        "the allowed server reached again after the restart",
        || async {
            let (st, _) = post(
                &base,
                &format!("/api/v1/sessions/{id}/send"),
                json!({"message": "restarted"}),
            )
            .await;
            let out = output(base.clone(), id.clone()).await;
            (st == 200 && out.contains("again_restarted=yes")).then_some(())
        },
    )
    .await;
    assert!(hits_ok.load(Ordering::SeqCst) > before);
    let (st, v) = post(&base, &format!("/api/v1/sessions/{id}/kill"), json!({})).await;
    assert_eq!(st, 200, "{v}");
    drop(server);
    drop(sshd);
}

/// The real `claude` on a host (an sshd on loopback), talking to the scripted model server:
/// it reaches the model at once (no folder-trust or API-key dialog: both were written into its
/// `.claude.json` over ssh, for the host's clone of the repository), and its permission prompt
/// for a command makes the session `needs_input`.
#[actix_web::test]
async fn a_real_claude_on_a_host_starts_trusted_and_its_permission_prompt_is_needs_input() {
    use crate::fake_anthropic::Step;
    use std::time::Duration;
    if !available() {
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let sshd = Sshd::start(&scratch.path().join("sshd-a"));
    let wa = scratch.path().join("host-a");
    let script = vec![
        Step::tool(
            "Bash",
            json!({"command": "git commit -q --allow-empty -m 'Empty commit'", "description": "Commit"}),
        ),
        Step::text("Committed."),
    ];
    let on_host = format!("    host: a\nhosts:\n{}", sshd.host_yaml("a", &wa, 2));
    let Some(r) =
        crate::real_claude_fleet::setup_notifying(script, "auto-edit", "[]", &on_host, &[], "", "")
            .await
    else {
        return;
    };
    let _g = TmuxGuard(format!("{}-a", flotilla::app::tmux_socket(&r.app.home)));
    with_origin(&r.app);
    let id = r
        .app
        .spawn(json!({"project": "demo", "prompt": "Make an empty commit."}))
        .await;
    r.model.wait_for_requests(1, Duration::from_secs(90)).await;
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(r.agent_home.join(".claude.json")).expect("read .claude.json"),
    )
    .expect("json");
    let trusted = cfg["projects"].as_object().is_some_and(|p| {
        p.iter().any(|(k, v)| {
            k.starts_with(&format!("{}/repos/", wa.display()))
                && v["hasTrustDialogAccepted"] == true
        })
    });
    assert!(trusted, "the host's clone is trusted: {cfg}");
    let s = crate::real_claude_fleet::wait_session(&r.app, &id, 90, "needs_input", |s| {
        s["state"] == "needs_input"
    })
    .await;
    assert_eq!(s["host"], "a", "{s}");
    let (st, v) = r
        .app
        .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    drop(sshd);
}

/// Whether an ssh command is the host monitor's (its event stream, its listing of the panes,
/// the host's directories made at a connection) rather than a spawn's.
fn monitor_command(c: &str) -> bool {
    c.contains("tail -n 0 -v -F") || c.contains("list-panes -a") || c.contains("touch --")
}

/// Waits until the host's monitor follows `session`'s pane log (its event stream was started
/// again naming it, and the panes listed after that), so what it does for a new pane is done.
async fn wait_followed(sshd: &Sshd, session: &str) {
    let log = format!("/{session}.log");
    eventually(60, "the monitor follows the new pane", || async {
        let cmds = sshd.commands();
        let tail = cmds
            .iter()
            .rposition(|c| c.contains("tail -n 0 -v -F") && c.contains(&log))?;
        cmds[tail..]
            .iter()
            .any(|c| c.contains("list-panes -a"))
            .then_some(())
    })
    .await;
}

/// What one spawn on a host costs in ssh round trips (each a remote command on the shared
/// connection, a login shell on the host), counted by the host's sshd. After a first spawn
/// (which clones the repository and copies Flotilla's executable there), a spawn runs two
/// commands: the worktree made (or found) in one, the prompt copied and tmux started in the
/// other; the monitor then starts its stream again naming the new pane's log and lists the
/// panes, without making the host's directories again (that is done once per connection).
#[actix_web::test]
async fn a_spawn_on_a_host_costs_two_ssh_round_trips() {
    if !available() || !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let sshd = Sshd::start_logged(&scratch.path().join("sshd-n"));
    let work = scratch.path().join("host-n");
    let hosts = format!("hosts:\n{}", sshd.host_yaml("n", &work, 4));
    let (mut agents, project) = config(scratch.path(), "    host: n\n", &hosts);
    agents.push_str("  sleeper: { kind: command, command: [\"sleep\", \"600\"] }\n");
    let app = reporting_app(&agents, &project, scratch).await;
    let socket = flotilla::app::tmux_socket(&app.home);
    let _g = TmuxGuard(format!("{socket}-n"));
    with_origin(&app);

    let first = app
        .spawn(json!({"project": "demo", "agent": "sleeper", "prompt": "warm up"}))
        .await;
    app.wait_state(&first, "working").await;
    wait_followed(&sshd, &first).await;
    let before = sshd.commands().len();
    let second = app
        .spawn(json!({"project": "demo", "agent": "sleeper", "prompt": "it's a `task`; $HOME\n\\ ünïcode"}))
        .await;
    app.wait_state(&second, "working").await;
    wait_followed(&sshd, &second).await;
    let cmds = sshd.commands().split_off(before);
    // The session's activity probe reads the new pane's screen once (`capture-pane`), when
    // its output first changes, and a reconciliation lists the sessions: observations, not
    // the spawn's.
    let (monitor, spawn): (Vec<&String>, Vec<&String>) = cmds
        .iter()
        .filter(|c| !c.contains("capture-pane") && !c.contains("list-sessions"))
        .partition(|c| monitor_command(c));
    assert_eq!(
        spawn.len(),
        2,
        "the spawn's ssh commands: {spawn:#?}\nall: {:#?}",
        sshd.commands()
    );
    assert!(
        !monitor.iter().any(|c| c.contains("touch --")),
        "the monitor made the host's directories again: {monitor:#?}"
    );
    // The prompt reached the host intact.
    let prompt = std::fs::read_to_string(work.join("prompts").join(format!("{second}.md")))
        .expect("the prompt on the host");
    assert!(
        prompt.contains("it's a `task`; $HOME\n\\ ünïcode"),
        "{prompt}"
    );
}

/// Another program holds `127.0.0.1` at the port a host's reverse forward tries first (the
/// host here is this machine, as a real host's own services might). sshd would still take
/// the forward on `[::1]` alone and call it done, and the agent's report, sent to
/// `127.0.0.1`, would reach that program; so the forward asks for `127.0.0.1` by name, is
/// refused there, takes the next port, and the report arrives.
#[actix_web::test]
async fn a_host_whose_forward_port_is_taken_on_ipv4_still_gets_its_agents_reports() {
    if !available() || !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let sshd = Sshd::start(&scratch.path().join("sshd-t"));
    let work = scratch.path().join("host-t");
    let hosts = format!("hosts:\n{}", sshd.host_yaml("t", &work, 2));
    let (mut agents, project) = config(scratch.path(), "    host: t\n", &hosts);
    agents.push_str(
        "  reporter: { kind: command, command: [\"sh\", \"-c\", \"flotilla report needs_input --note 'asked from the host' && exec sleep 600\"] }\n",
    );
    let app = reporting_app(&agents, &project, scratch).await;
    let _g = TmuxGuard(format!("{}-t", flotilla::app::tmux_socket(&app.home)));
    with_origin(&app);
    // The other program: it takes every connection and closes it unanswered. Should some
    // program of this machine hold that port already, it is the case under test all the same.
    let target = app.address.trim_start_matches("http://");
    let port = flotilla::plugins::hosts::launch::first_port("t", target);
    if let Ok(squatter) = std::net::TcpListener::bind(("127.0.0.1", port)) {
        squatter.set_nonblocking(true).expect("nonblocking");
        let squatter = tokio::net::TcpListener::from_std(squatter).expect("listener");
        // Ends with the test's runtime.
        actix_web::rt::spawn(async move {
            while let Ok((c, _)) = squatter.accept().await {
                drop(c);
            }
        });
    }

    let r = app
        .spawn(json!({"project": "demo", "agent": "reporter", "prompt": "ask", "host": "t"}))
        .await;
    let v = app.wait_state(&r, "needs_input").await;
    assert!(
        v.to_string().contains("asked from the host"),
        "the report's note: {v}"
    );
}

/// An app on SQLite whose agents report back through the `flotilla` binary cargo built.
async fn reporting_app(agents: &str, project: &str, scratch: tempfile::TempDir) -> TestApp {
    let cli = env!("CARGO_BIN_EXE_flotilla");
    let env = [("FLOTILLA__SERVER__CLI_PATH", cli)];
    spawn_app_with_env(Backend::Sqlite, agents, project, scratch, &env)
        .await
        .expect("app")
}

/// An agent on a host killed by a signal it did not ask for (`kill -9`, as the host's
/// out-of-memory killer sends): the host's tmux records the signal, and the session ends
/// `errored` with the shell's status for it (137), not as a runtime that vanished. Under load
/// tmux 3.3 lists the pane dead before it reaps the process, and at times never reaps it: the
/// status then comes from the zombie on the host. (Before, such a listing ended the session
/// `killed` / `runtime_lost`: 2 to 3 runs in 12 under two busy loops.)
#[actix_web::test]
async fn an_agent_killed_by_a_signal_on_a_host_errors_with_its_status() {
    let Some((app, socket, _hosts)) = sleepers_on_two_hosts("a").await else {
        return;
    };
    let (st, v) = app
        .post(
            "/api/v1/sessions",
            json!({"project": "demo", "agent": "sleeper", "prompt": "sleep"}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    app.wait_state(&id, "working").await;
    // The host is this machine: its tmux server is reached through the host's socket.
    crate::fleet_tmux::sigkill_pane(&format!("{socket}-a"), &id);
    crate::fleet_tmux::errored_by_sigkill(&app, &id).await;
}
