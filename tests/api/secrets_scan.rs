//! No secret from the config or an agent's `env:` reaches a place other users or programs can
//! read: any process's command line (`/proc/*/cmdline`, what `ps -eo args` shows), the
//! server's log at debug level, events or API answers. The real server binary runs a session
//! on tmux; then every such place is scanned for each value.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::server::*;

fn command_lines() -> String {
    let mut all = String::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        if let Ok(b) = std::fs::read(e.path().join("cmdline")) {
            all.push_str(&String::from_utf8_lossy(&b).replace('\0', " "));
            all.push('\n');
        }
    }
    all
}

async fn get(base: &str, path: &str) -> String {
    http_client()
        .get(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text")
}

#[actix_web::test]
async fn no_configured_secret_is_on_a_command_line_in_the_log_or_in_an_answer() {
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let agent_secret = format!("agent-secret-{}", uuid::Uuid::new_v4().simple());
    let github_token = format!("ghp_{}", uuid::Uuid::new_v4().simple());
    let webhook_secret = format!("whsec-{}", uuid::Uuid::new_v4().simple());
    let agents = format!(
        "  scripted: {{ kind: command, command: {ECHO_AGENT}, env: {{ API_KEY: \"{agent_secret}\" }} }}\n"
    );
    let s = Scratch::with_agents(
        tempfile::tempdir().expect("tempdir"),
        &agents,
        "    runtime: tmux\n",
    );
    let socket = flotilla::app::tmux_socket(&s.home);
    let _tmux = crate::fleet_tmux::TmuxGuard(socket);
    let server = ServerProc::start_with_env(
        s.dir.path(),
        &s.home,
        &s.cfg,
        s.port,
        &[
            ("FLOTILLA__LOG__LEVEL", "debug"),
            ("FLOTILLA__GITHUB__TOKEN", &github_token),
            ("FLOTILLA__GITHUB__WEBHOOK_SECRET", &webhook_secret),
        ],
    )
    .await;
    let base = server.address.clone();
    let r = http_client()
        .post(format!("{base}/api/v1/sessions"))
        .bearer_auth(TOKEN)
        .json(&json!({"project": "demo", "prompt": "work"}))
        .send()
        .await
        .expect("spawn");
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    // The agent runs, and has its secret: it echoes its prompt, then lines sent to it.
    eventually(30, "the agent to run", || async {
        let v: Value = serde_json::from_str(&get(&base, &format!("/api/v1/sessions/{id}")).await)
            .unwrap_or(Value::Null);
        (v["state"] == "working").then_some(())
    })
    .await;
    let sent = http_client()
        .post(format!("{base}/api/v1/sessions/{id}/send"))
        .bearer_auth(TOKEN)
        .json(&json!({"message": "hello"}))
        .send()
        .await
        .expect("send");
    assert!(sent.status().is_success());
    let sent_body = sent.text().await.unwrap_or_default();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let output = get(&base, &format!("/api/v1/sessions/{id}/output")).await;
        if output.contains("got: hello") {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let session = get(&base, &format!("/api/v1/sessions/{id}")).await;
            let events = get(&base, &format!("/api/v1/sessions/{id}/events")).await;
            panic!("the agent's answer never showed; the send said {sent_body}\noutput: {output}\nsession: {session}\nevents: {events}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A forged webhook is logged and refused, without the secret.
    let forged = http_client()
        .post(format!("{base}/webhooks/github"))
        .header("X-GitHub-Event", "ping")
        .header("X-Hub-Signature-256", "sha256=00")
        .body("{}")
        .send()
        .await
        .expect("webhook");
    assert_eq!(forged.status(), 401);

    let answers = [
        get(&base, "/api/v1/sessions").await,
        get(&base, &format!("/api/v1/sessions/{id}")).await,
        get(&base, &format!("/api/v1/sessions/{id}/events")).await,
        get(&base, &format!("/api/v1/sessions/{id}/output")).await,
        get(&base, "/api/v1/board").await,
        get(&base, "/metrics").await,
    ]
    .join("\n");
    let log = std::fs::read_to_string(s.dir.path().join("server.log")).expect("log");
    assert!(
        log.contains("DEBUG") || log.contains("\"level\":\"DEBUG\""),
        "the log is at debug level: {}",
        &log[..log.len().min(2000)]
    );
    let procs = command_lines();
    // The server token is the tests' shared constant, which other tests' client verbs pass
    // as `--token` while this one runs: it is checked in the log and answers only.
    for (name, secret, on_cmdline) in [
        ("the agent's env", agent_secret.as_str(), true),
        ("github.token", github_token.as_str(), true),
        ("github.webhook_secret", webhook_secret.as_str(), true),
        ("server.token", TOKEN, false),
    ] {
        assert!(
            !(on_cmdline && procs.contains(secret)),
            "{name} is on a command line"
        );
        assert!(!log.contains(secret), "{name} is in the server's log");
        assert!(!answers.contains(secret), "{name} is in an API answer");
    }
    drop(server);
}
