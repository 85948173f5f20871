//! The `flotilla` binary: config errors exit 2 naming the key; init; client verbs.

use serde_json::Value;

use crate::helpers::*;
use crate::server::*;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn bad_configs_exit_2_naming_the_key_and_create_nothing() {
    let cases = [
        ("server: { prot: 1 }", "server.prot"),
        ("server: { port: abc }", "server.port"),
        (
            "lifecycle: { spawn_timeout: 5 parsecs }",
            "lifecycle.spawn_timeout",
        ),
        ("server: { bind: 0.0.0.0 }", "server.token"),
        ("database: { url: \"mysql://x\" }", "database.url"),
    ];
    for (yaml, key) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        std::fs::write(dir.path().join("flotilla.yaml"), yaml).expect("write");
        let o = cli(dir.path(), &home, &["serve"]);
        assert_eq!(o.status.code(), Some(2), "{yaml}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(key),
            "{yaml}: stderr should name {key}: {}",
            stderr(&o)
        );
        assert!(
            !home.join("flotilla.db").exists(),
            "{yaml}: nothing was created"
        );
    }
}

#[test]
fn several_problems_are_reported_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("flotilla.yaml"),
        "server: { prot: 1 }\nlog: { format: xml }\nlifecycle: { merge_grace: soon }\n",
    )
    .expect("write");
    let o = cli(dir.path(), &dir.path().join("h"), &["serve"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    for key in ["server.prot", "log.format", "lifecycle.merge_grace"] {
        assert!(e.contains(key), "{key} missing from {e}");
    }
}

#[test]
fn usage_errors_exit_2_and_completions_print() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = cli(dir.path(), dir.path(), &["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let o = cli(dir.path(), dir.path(), &["completions", "bash"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("flotilla"));
}

#[test]
fn init_writes_a_config_that_loads_and_has_a_token() {
    if !require_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = make_repo(dir.path());
    git(
        &repo,
        &["remote", "add", "origin", "git@github.com:acme/widgets.git"],
    );
    let o = cli(&repo, &dir.path().join("h"), &["init"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(repo.join("flotilla.yaml")).expect("written");
    assert!(text.contains("acme/widgets"), "{text}");
    assert!(text.contains('#'), "commented");
    let again = cli(&repo, &dir.path().join("h"), &["init"]);
    assert_eq!(again.status.code(), Some(1), "refuses to overwrite");
}

#[actix_web::test]
async fn client_verbs_drive_a_running_server() {
    let s = Scratch::new("");
    let _server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    let o = s.run(&["spawn", "--project", "demo", "--agent", "quick"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("demo-1 "), "{}", stdout(&o));
    let o = s.run(&["spawn", "--prompt", "long task"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "the only project is the default: {}",
        stderr(&o)
    );
    eventually(30, "demo-2 working", || async {
        let o = s.run(&["status", "--json"]);
        let v: Value = serde_json::from_slice(&o.stdout).ok()?;
        (v["sessions"][1]["state"] == "working").then_some(())
    })
    .await;
    let o = s.run(&["status"]);
    let table = stdout(&o);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("demo-2") && table.contains("working"),
        "{table}"
    );
    // An answer to a question the session does not ask is refused, saying what it is doing.
    let o = s.run(&[
        "send",
        "demo-2",
        "--question",
        "approve Bash: git push",
        "1",
    ]);
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("no longer waits on that question (it is working)"),
        "{}",
        stderr(&o)
    );
    let o = s.run(&["send", "demo-2", "hello", "agent"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("delivered"));
    let o = s.run(&["kill", "demo-2"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("killed"), "{}", stdout(&o));
    let o = s.run(&["kill", "demo-2"]);
    assert!(stdout(&o).contains("already killed"), "{}", stdout(&o));
    let o = s.run(&["logs", "demo-2", "--no-follow"]);
    assert!(
        stdout(&o).contains("session.kill_requested"),
        "{}",
        stdout(&o)
    );
    std::fs::write(s.dir.path().join("issues.txt"), "11\n12 # second\n11\n").expect("write");
    let file = s.dir.path().join("issues.txt").display().to_string();
    let o = s.run(&["batch-spawn", "--file", &file, "--agent", "quick"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("demo-3") && stdout(&o).contains("demo-4"),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("skipped 11: duplicate in batch"),
        "{}",
        stderr(&o)
    );
    let o = s.run(&["start", "--no-attach"]);
    assert!(
        stdout(&o).contains("demo-orchestrator") && stdout(&o).contains("started"),
        "{}",
        stdout(&o)
    );
    let o = s.run(&["start", "--no-attach"]);
    assert!(stdout(&o).contains("already running"), "{}", stdout(&o));
    let o = s.run(&["status", "--orphans"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("no orphans"), "{}", stdout(&o));
    let o = s.run(&["kill", "demo-99"]);
    assert_eq!(o.status.code(), Some(1), "a failed operation exits 1");
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    let o = s.run(&["spawn", "--project", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("project"), "{}", stderr(&o));
    let bad = cli(
        s.dir.path(),
        &s.home,
        &[
            "--server",
            &format!("http://127.0.0.1:{}", s.port),
            "--config",
            &s.cfg.display().to_string(),
            "--token",
            "wrong",
            "status",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("401"), "{}", stderr(&bad));
}

#[test]
fn doctor_fails_naming_a_missing_agent_binary_and_passes_when_it_is_there() {
    if !require_tool("git") {
        return;
    }
    // Missing: FAIL, exit 1, the binary named, with the fix.
    let agents = "  scripted: { kind: command, command: [\"flotilla-test-no-such-agent\"] }\n";
    let s = Scratch::with_agents(tempfile::tempdir().expect("tempdir"), agents, "");
    let cfg = s.cfg.display().to_string();
    let o = cli(s.dir.path(), &s.home, &["doctor", "--config", &cfg]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    let line = out
        .lines()
        .find(|l| l.contains("agent scripted: cli"))
        .unwrap_or_else(|| panic!("no agent line in {out}"));
    assert!(line.starts_with("FAIL"), "{out}");
    assert!(
        line.contains("flotilla-test-no-such-agent: not found on PATH"),
        "{out}"
    );
    assert!(
        out.contains("fix: install `flotilla-test-no-such-agent`"),
        "{out}"
    );
    assert!(
        !s.home.join("flotilla.db").exists(),
        "doctor creates nothing"
    );
    let o = cli(
        s.dir.path(),
        &s.home,
        &["doctor", "--config", &cfg, "--json"],
    );
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["ok"], false);
    let agent = v["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "agent scripted: cli"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(agent["status"], "fail", "{v}");

    // Present (a script at an absolute path): ok, exit 0.
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = dir.path().join("my-agent.sh");
    std::fs::write(&agent, "#!/bin/sh\necho hi\n").expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let agents = format!(
        "  scripted: {{ kind: command, command: [\"{}\"] }}\n",
        agent.display()
    );
    let s = Scratch::with_agents(dir, &agents, "");
    let cfg = s.cfg.display().to_string();
    let o = cli(s.dir.path(), &s.home, &["doctor", "--config", &cfg]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    let line = out
        .lines()
        .find(|l| l.contains("agent scripted: cli"))
        .unwrap_or_else(|| panic!("no agent line in {out}"));
    assert!(line.starts_with("ok"), "{out}");
    assert!(line.contains("my-agent.sh"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok") && l.contains("git")),
        "{out}"
    );

    // A bad config is still exit 2.
    std::fs::write(s.dir.path().join("bad.yaml"), "server: { prot: 1 }\n").expect("write");
    let bad = s.dir.path().join("bad.yaml").display().to_string();
    let o = cli(s.dir.path(), &s.home, &["doctor", "--config", &bad]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[actix_web::test]
async fn spawn_with_a_missing_agent_binary_exits_1_naming_it() {
    let agents = format!(
        "  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n  \
         ghost: {{ kind: command, command: [\"flotilla-test-no-such-agent\"] }}\n"
    );
    let s = Scratch::with_agents(tempfile::tempdir().expect("tempdir"), &agents, "");
    let _server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    let o = s.run(&["spawn", "--project", "demo", "--agent", "ghost"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ghost: flotilla-test-no-such-agent not found on PATH (HTTP 422"),
        "{}",
        stderr(&o)
    );
    let o = s.run(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["sessions"], serde_json::json!([]), "no session was made");
}
