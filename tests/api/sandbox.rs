//! Agents in the bubblewrap sandbox, end to end through the API with a probing agent (a shell
//! script run by the `command` agent kind): what it can see, reach and change from inside.
//! Needs `bwrap` and `curl` (installed by `.ci/deps.sh`); under `CI=true` a missing one fails.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::helpers::*;

/// An HTTP server on loopback answering `ok` to anything, counting its connections.
pub async fn http_server() -> (u16, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf).await;
                let _ = c
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (port, hits)
}

/// The probe: one `name=yes|no` line per attempt, then `PROBE DONE`, then it waits.
const PROBE: &str = r#"#!/bin/sh
try() { if sh -c "$2" >/dev/null 2>&1; then echo "$1=yes"; else echo "$1=no"; fi; }
try ssh_key "cat \"$HOME/.ssh/id_test\""
try other_worktree "cat \"$PROBE_OTHER\""
try config "grep -q token \"$PROBE_CONFIG\""
try database "test -s \"$PROBE_DB\""
try flotilla_environ "grep -q CARGO /proc/$PROBE_PID/environ"
try many_processes "test \$(ls /proc | grep -c '^[0-9]') -gt 10"
try allowed_via_proxy "curl -sf --max-time 10 --noproxy '' -x \"$HTTP_PROXY\" http://127.0.0.1:$PORT_OK/"
try refused_via_proxy "curl -sf --max-time 10 --noproxy '' -x \"$HTTP_PROXY\" http://127.0.0.1:$PORT_NO/"
try direct_host "curl -sf --max-time 5 --noproxy '*' http://127.0.0.1:$PORT_NO/"
try flotilla_api "curl -sf --max-time 10 --noproxy '*' \"$FLOTILLA_SERVER/healthz\""
try root "test \$(id -u) -eq 0"
try commit_and_push "echo hi > sandboxed.txt && git add sandboxed.txt && git -c user.name=a -c user.email=a@example.com commit -qm sandboxed && git push -q origin HEAD"
echo "memory_limit=$(ulimit -v)"
echo "cpu_limit=$(ulimit -t)"
echo "PROBE DONE"
exec sleep 600
"#;

/// The value of the probe's `name=` line in `output`.
pub fn line(output: &str, name: &str) -> String {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {output}"))
        .to_string()
}

#[actix_web::test]
async fn a_sandboxed_agent_works_in_its_worktree_and_reaches_nothing_else() {
    if !require_tool("bwrap") || !require_tool("curl") || !require_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    // The agent's home holds a key it must not read.
    let home = root.join("agent-home");
    std::fs::create_dir_all(home.join(".ssh")).expect("mkdir");
    std::fs::write(home.join(".ssh/id_test"), "PRIVATE KEY").expect("key");
    let tools = root.join("tools");
    std::fs::create_dir_all(&tools).expect("mkdir");
    let probe = tools.join("probe.sh");
    std::fs::write(&probe, PROBE).expect("probe");
    let origin = root.join("origin.git");
    let out = std::process::Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&origin)
        .output()
        .expect("git");
    assert!(out.status.success());
    let (port_ok, hits_ok) = http_server().await;
    let (port_no, hits_no) = http_server().await;
    let flotilla_home = root.join("home");
    let other = flotilla_home.join("worktrees/demo/other-1/secret.txt");
    std::fs::create_dir_all(other.parent().expect("parent")).expect("mkdir");
    std::fs::write(&other, "another session's work").expect("write");

    let agents = format!(
        "  probe:\n    kind: command\n    command: [\"sh\", \"{probe}\"]\n    env: {{ HOME: \"{home}\", PROBE_OTHER: \"{other}\", PROBE_CONFIG: \"{config}\", PROBE_DB: \"{db}\", PROBE_PID: \"{pid}\", PORT_OK: \"{port_ok}\", PORT_NO: \"{port_no}\" }}\n",
        probe = probe.display(),
        home = home.display(),
        other = other.display(),
        config = root.join("flotilla.yaml").display(),
        db = flotilla_home.join("flotilla.db").display(),
        pid = std::process::id(),
    );
    let extra = format!(
        "    agent: probe\n    sandbox:\n      enabled: true\n      network: proxy\n      allow_hosts: [\"127.0.0.1:{port_ok}\"]\n      mounts: [{{ path: \"{tools}\" }}, {{ path: \"{origin}\", writable: true }}]\n      limits: {{ memory_mb: 4096, cpu_seconds: 3600 }}\n",
        tools = tools.display(),
        origin = origin.display(),
    );
    let cli = env!("CARGO_BIN_EXE_flotilla");
    let Some(app) = spawn_app_with_env(
        Backend::Sqlite,
        &agents,
        &extra,
        dir,
        &[("FLOTILLA__SERVER__CLI_PATH", cli)],
    )
    .await
    else {
        return;
    };
    git(
        &app.repo,
        &["remote", "add", "origin", &origin.display().to_string()],
    );
    git(&app.repo, &["push", "-q", "origin", "main"]);

    let id = app.spawn(json!({"project": "demo"})).await;
    let output = app.wait_output(&id, "PROBE DONE").await;
    for (name, want) in [
        ("ssh_key", "no"),
        ("other_worktree", "no"),
        ("config", "no"),
        ("database", "no"),
        ("flotilla_environ", "no"),
        ("many_processes", "no"),
        ("allowed_via_proxy", "yes"),
        ("refused_via_proxy", "no"),
        ("direct_host", "no"),
        ("flotilla_api", "yes"),
        ("root", "no"),
        ("commit_and_push", "yes"),
        // The limits, as the agent's shell sees them (KiB and seconds).
        ("memory_limit", "4194304"),
        ("cpu_limit", "3600"),
    ] {
        assert_eq!(line(&output, name), want, "{name}: {output}");
    }
    assert!(hits_ok.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        hits_no.load(Ordering::SeqCst),
        0,
        "the refused server was reached"
    );
    // The push landed in the origin, from inside.
    let (_, s) = app.get(&format!("/api/v1/sessions/{id}")).await;
    let branch = s["branch"].as_str().expect("branch").to_string();
    let log = std::process::Command::new("git")
        .args([
            "--git-dir",
            &origin.display().to_string(),
            "log",
            "-1",
            "--format=%s",
            &branch,
        ])
        .output()
        .expect("git log");
    assert_eq!(String::from_utf8_lossy(&log.stdout).trim(), "sandboxed");
    // The refused connection is an event on the session.
    let events = eventually(10, "a sandbox.refused event", || async {
        let (_, v) = app.get(&format!("/api/v1/sessions/{id}/events")).await;
        let list: Vec<Value> = v["events"].as_array().cloned().unwrap_or_default();
        list.iter()
            .any(|e| e["kind"] == "sandbox.refused" && e["data"]["port"] == port_no)
            .then_some(list)
    })
    .await;
    assert!(!events.is_empty());
    let (s, _) = app
        .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
        .await;
    assert_eq!(s, 200);
}

/// The real `claude` under tmux inside the sandbox, permissionless there (as uid 1000, where
/// Claude Code allows it), reaching the scripted model server only through the sandbox's
/// forward: it runs its tools and commits without a question.
#[actix_web::test]
async fn the_real_claude_works_permissionless_inside_the_sandbox() {
    use crate::fake_anthropic::{FakeAnthropic, Step};
    use std::time::Duration;
    let Some(claude) = crate::real_claude_fleet::claude_bin() else {
        return;
    };
    if !require_tool("bwrap") || !require_tool("tmux") || !require_tool("git") {
        return;
    }
    const KEY: &str = "sk-ant-test-0123456789abcdefghijklmnop";
    let model = FakeAnthropic::start(vec![
        Step::tool(
            "Bash",
            json!({"command": "cat \"$HOME/.ssh/id_test\"; id -u > uid.txt && printf 'made\\n' > made.txt && git add made.txt && git commit -q -m 'Add made'", "description": "Write and commit"}),
        ),
        Step::text("Committed made.txt."),
    ])
    .await;
    model.require_api_key(KEY);
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("agent-home");
    std::fs::create_dir_all(home.join(".ssh")).expect("home");
    std::fs::write(home.join(".ssh/id_test"), "PRIVATE KEY").expect("key");
    std::fs::write(
        home.join(".claude.json"),
        json!({"hasCompletedOnboarding": true, "theme": "dark"}).to_string(),
    )
    .expect(".claude.json");
    let agents = format!(
        "  claude:\n    kind: claude-code\n    command: [\"{bin}\"]\n    env: {{ HOME: \"{home}\", ANTHROPIC_BASE_URL: \"{url}\", ANTHROPIC_API_KEY: \"{KEY}\", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: \"1\", GIT_AUTHOR_NAME: a, GIT_AUTHOR_EMAIL: a@example.com, GIT_COMMITTER_NAME: a, GIT_COMMITTER_EMAIL: a@example.com }}\n",
        bin = claude.display(),
        home = home.display(),
        url = model.url(),
    );
    // No allow list: the model server is reached through the forward Flotilla sets up for
    // the agent's own ANTHROPIC_BASE_URL.
    let extra =
        "    runtime: tmux\n    agent: claude\n    sandbox: { enabled: true, allow_hosts: [] }\n";
    let cli = env!("CARGO_BIN_EXE_flotilla");
    let Some(app) = spawn_app_with_env(
        Backend::Sqlite,
        &agents,
        extra,
        dir,
        &[("FLOTILLA__SERVER__CLI_PATH", cli)],
    )
    .await
    else {
        return;
    };
    let _tmux = crate::fleet_tmux::TmuxGuard(flotilla::app::tmux_socket(&app.home));
    let id = app
        .spawn(json!({"project": "demo", "prompt": "Add made.txt and commit it."}))
        .await;
    let ws = eventually(60, "the session's workspace", || async {
        let (_, s) = app.get(&format!("/api/v1/sessions/{id}")).await;
        s["workspace"].as_str().map(std::path::PathBuf::from)
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, s) = app.get(&format!("/api/v1/sessions/{id}")).await;
        assert_ne!(
            s["state"], "needs_input",
            "a question inside the sandbox: {s}"
        );
        assert_ne!(s["state"], "errored", "{s}");
        let log = std::process::Command::new("git")
            .args(["log", "-1", "--format=%s"])
            .current_dir(&ws)
            .output()
            .expect("git log");
        if String::from_utf8_lossy(&log.stdout).trim() == "Add made" && model.requests().len() >= 2
        {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let (_, o) = app
                .get(&format!("/api/v1/sessions/{id}/output?lines=60"))
                .await;
            panic!(
                "the sandboxed claude did not commit; session {s}\nscreen:\n{}",
                o["output"].as_str().unwrap_or("")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let uid = std::fs::read_to_string(ws.join("uid.txt")).expect("uid.txt");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(uid.trim(), "1000", "root outside runs as 1000 inside");
    }
    // The tool result the model got back came from inside: the key stayed out of reach.
    let second = model.requests()[1].to_string();
    assert!(second.contains("No such file"), "{second}");
    assert!(!second.contains("PRIVATE KEY"), "{second}");
    let (s, _) = app
        .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
        .await;
    assert_eq!(s, 200);
}
