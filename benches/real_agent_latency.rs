//! Latency from the real `claude` CLI showing a permission prompt to the session being
//! `needs_input`.
//!
//! A real Flotilla (in process, SQLite, tmux, hooks through the `flotilla` binary cargo
//! built), the real Claude Code CLI (`FLOTILLA_CLAUDE_BIN`, else where `.ci/deps.sh` installs
//! it) and the scripted Messages API (`tests/support/fake_anthropic.rs`). Every round the model
//! asks for a `git commit`, which `acceptEdits` does not allow: the clock runs from the moment
//! that model request arrived at the fake (the CLI then streams the answer, renders the dialog
//! and runs its hooks) until `GET /api/v1/sessions/{id}` says `needs_input`, polled every 2 ms.
//! The bench then answers `1` and waits for the session to work again.
//!
//! `FLOTILLA_BENCH_ROUNDS` sets the number of prompts (default 30).

#[path = "../tests/support/fake_anthropic.rs"]
mod fake_anthropic;
#[path = "../tests/support/fake_server.rs"]
mod fake_server;
#[path = "support/real_claude.rs"]
mod real_claude;

use std::time::{Duration, Instant};

use fake_anthropic::{FakeAnthropic, Step};
use flotilla::app::Application;
use flotilla::config::{load_with, LoadOptions};
use real_claude::{claude, git, pct, KillTmux};

const API_TOKEN: &str = "bench-token-0123456789";
const KEY: &str = "sk-ant-bench-0123456789abcdefghijklmnop";

/// `GET {base}{path}` as JSON.
async fn get(http: &reqwest::Client, base: &str, path: &str) -> serde_json::Value {
    http.get(format!("{base}{path}"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

async fn state(http: &reqwest::Client, base: &str, id: &str) -> serde_json::Value {
    get(http, base, &format!("/api/v1/sessions/{id}")).await
}

async fn wait_until(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = state(http, base, id).await;
        if pred(&s) {
            return Instant::now();
        }
        if Instant::now() >= deadline {
            let events = get(
                http,
                base,
                &format!("/api/v1/sessions/{id}/events?limit=500"),
            )
            .await;
            panic!("timed out waiting for {what}: {s}\nevents: {events}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn main() {
    let Some(claude) = claude() else {
        eprintln!("real_agent_latency: no claude CLI (run .ci/deps.sh or set FLOTILLA_CLAUDE_BIN)");
        return;
    };
    let rounds: usize = std::env::var("FLOTILLA_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let sys = actix::System::new();
    sys.block_on(async move {
        let script: Vec<Step> = (0..rounds)
            .map(|k| {
                Step::tool(
                    "Bash",
                    serde_json::json!({"command": format!("git commit --allow-empty -q -m round-{k}"), "description": "Commit"}),
                )
            })
            .collect();
        let model = FakeAnthropic::start(script).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        let agent_home = dir.path().join("agent-home");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&agent_home).expect("mkdir");
        std::fs::write(
            agent_home.join(".claude.json"),
            r#"{"hasCompletedOnboarding": true}"#,
        )
        .expect(".claude.json");
        std::fs::create_dir_all(&repo).expect("mkdir");
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README.md"), "bench\n").expect("write");
        git(&repo, &["add", "."]);
        git(
            &repo,
            &["-c", "user.name=a", "-c", "user.email=a@example.com", "commit", "-q", "-m", "init"],
        );
        let cfg = dir.path().join("flotilla.yaml");
        std::fs::write(
            &cfg,
            format!(
                r#"server: {{ bind: 127.0.0.1, port: 0, token: "{API_TOKEN}", cli_path: "{cli}" }}
database: {{ url: "sqlite://{home}/flotilla.db" }}
log: {{ level: error }}
agents:
  claude:
    kind: claude-code
    command: ["{claude}"]
    permission_mode: auto-edit
    env: {{ HOME: "{agent_home}", ANTHROPIC_BASE_URL: "{url}", ANTHROPIC_API_KEY: "{KEY}", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1", GIT_AUTHOR_NAME: a, GIT_AUTHOR_EMAIL: a@example.com, GIT_COMMITTER_NAME: a, GIT_COMMITTER_EMAIL: a@example.com }}
projects:
  bench:
    repo: {repo}
    default_branch: main
    agent: claude
    runtime: tmux
"#,
                cli = env!("CARGO_BIN_EXE_flotilla"),
                home = home.display(),
                claude = claude.display(),
                agent_home = agent_home.display(),
                url = model.url(),
                repo = repo.display(),
            ),
        )
        .expect("config");
        let settings = load_with(&LoadOptions {
            config_path: Some(cfg),
            cwd: dir.path().to_path_buf(),
            env: Default::default(),
        })
        .expect("config loads");
        settings.validate().expect("valid");
        let app = Application::build(settings, home.clone())
            .await
            .expect("app");
        let base = format!("http://127.0.0.1:{}", app.port());
        let socket = flotilla::app::tmux_socket(&home);
        let _tmux = KillTmux(socket);
        let _server = app.spawn();
        let http = reqwest::Client::new();
        let v: serde_json::Value = http
            .post(format!("{base}/api/v1/sessions"))
            .bearer_auth(API_TOKEN)
            .json(&serde_json::json!({"project": "bench", "prompt": "Commit, round after round."}))
            .send()
            .await
            .expect("spawn")
            .json()
            .await
            .expect("json");
        let id = v["id"].as_str().expect("id").to_string();
        let mut lat = Vec::with_capacity(rounds);
        // Each wait is told apart by when it started (`activity_at`).
        let mut last_wait = serde_json::Value::Null;
        for k in 0..rounds {
            let deadline = Instant::now() + Duration::from_secs(60);
            while model.requests().len() < k + 1 {
                if Instant::now() > deadline {
                    let s = state(&http, &base, &id).await;
                    let o = get(&http, &base, &format!("/api/v1/sessions/{id}/output?lines=30")).await;
                    panic!(
                        "round {k}: the model was not asked again; session: {s}\nscreen:\n{}",
                        o["output"].as_str().unwrap_or("")
                    );
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let asked = model
                .all_requests()
                .into_iter()
                .filter(|r| r.main)
                .nth(k)
                .expect("request")
                .at;
            let seen = wait_until(&http, &base, &id, &format!("needs_input {k}"), |s| {
                s["state"] == "needs_input" && s["activity_at"] != last_wait
            })
            .await;
            last_wait = state(&http, &base, &id).await["activity_at"].clone();
            lat.push(seen - asked);
            let r = http
                .post(format!("{base}/api/v1/sessions/{id}/send"))
                .bearer_auth(API_TOKEN)
                .json(&serde_json::json!({"message": "1"}))
                .send()
                .await
                .expect("send");
            assert!(r.status().is_success(), "send: {}", r.status());
            if std::env::var_os("FLOTILLA_BENCH_TRACE").is_some() {
                let r: serde_json::Value = r.json().await.expect("json");
                eprintln!("round {k}: answered at {} -> {r}", chrono::Utc::now());
            }
        }
        // Every prompt is one wait: a flapping session would count more.
        let s = state(&http, &base, &id).await;
        let waits = s["trackers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["reaction"] == "agent-needs-input")
            .and_then(|t| t["attempts"].as_u64())
            .unwrap_or(0);
        if waits != rounds as u64 {
            // Which round flapped: the session's events in order (usage readings aside).
            let ev = get(&http, &base, &format!("/api/v1/sessions/{id}/events?limit=1000")).await;
            let steps: Vec<String> = ev["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["kind"] != "agent.usage")
                .map(|e| format!("{} {} {}", e["at"], e["kind"], e["data"]))
                .collect();
            panic!(
                "one needs-input episode per prompt: {waits} for {rounds}: {s}\n{}",
                steps.join("\n")
            );
        }
        lat.sort();
        println!(
            "real claude permission prompt -> needs_input, {rounds} prompts: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
            pct(&lat, 0.5),
            pct(&lat, 0.9),
            pct(&lat, 0.99),
            lat[lat.len() - 1]
        );
    });
}
