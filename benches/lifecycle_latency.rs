//! Latency from a failed-check webhook to the instruction typed into the agent's pane.
//!
//! A real Flotilla (in process, SQLite), the fake GitHub delivering signed webhooks, and the
//! scripted agent on real tmux. Each round marks the previous check green and adds a new
//! failing check on the PR head; the clock runs from the moment the fake sends the failing
//! check's webhook until the agent has the instruction (it logs a submitted message to its
//! JSONL log, polled every 2 ms). That covers signature check, persistence, routing, the SCM
//! reads (PR status, checks, job log), the machine step and its commit, and the tmux paste
//! with its delivery confirmation.
//!
//! `FLOTILLA_BENCH_EVENTS` changes the number of rounds (default 1,000).

#[path = "../tests/support/fake_github.rs"]
mod fake_github;
#[path = "../tests/support/fake_server.rs"]
mod fake_server;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fake_github::FakeGithub;
use flotilla::app::Application;
use flotilla::config::{load_with, LoadOptions};

const TOKEN: &str = "ghp_latency";
const SECRET: &str = "latency-secret";
const REPO: &str = "acme/latency";
const API_TOKEN: &str = "bench-token-0123456789";

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// The scripted agent example, built in this profile's directory.
fn scripted_agent() -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    let profile = exe.parent().and_then(Path::parent).expect("target dir");
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .args([
            "build",
            "--quiet",
            "--release",
            "--example",
            "scripted_agent",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the scripted agent failed");
    profile.join("examples").join("scripted_agent")
}

/// Reads what the agents appended to their JSONL logs since the last call (incrementally: a
/// measuring loop that re-read whole logs every 2 ms would itself load the machine).
#[derive(Default)]
struct Logs {
    offsets: std::collections::HashMap<PathBuf, u64>,
}

impl Logs {
    /// Whether a user message containing `needle` was appended since the last look.
    fn told(&mut self, home: &Path, needle: &str) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let mut found = false;
        for dir in std::fs::read_dir(home.join(".claude/projects"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = f.path();
                let at = self.offsets.get(&path).copied().unwrap_or(0);
                let Ok(mut file) = std::fs::File::open(&path) else {
                    continue;
                };
                if file.seek(SeekFrom::Start(at)).is_err() {
                    continue;
                }
                let mut new = String::new();
                if file.read_to_string(&mut new).is_err() {
                    continue;
                }
                // Only whole lines count; a partial last line is read again next time.
                let whole = new.rfind('\n').map(|i| i + 1).unwrap_or(0);
                self.offsets.insert(path, at + whole as u64);
                found |= new[..whole]
                    .lines()
                    .any(|l| l.contains("\"type\":\"user\"") && l.contains(needle));
            }
        }
        found
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let rounds: usize = std::env::var("FLOTILLA_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let agent = scripted_agent();
    let sys = actix::System::new();
    sys.block_on(async move {
        let gh = FakeGithub::start(TOKEN).await;
        let bare = gh.create_repo(REPO);
        gh.require_reviews(REPO);
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        let agent_home = dir.path().join("agent-home");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&agent_home).expect("mkdir");
        std::fs::create_dir_all(&repo).expect("mkdir");
        git(&repo, &["init", "-q", "-b", "main"]);
        git(&repo, &["remote", "add", "origin", bare.to_str().expect("utf-8")]);
        git(&repo, &["fetch", "-q", "origin"]);
        git(&repo, &["checkout", "-q", "-B", "main", "origin/main"]);
        let cfg = dir.path().join("flotilla.yaml");
        std::fs::write(
            &cfg,
            format!(
                r#"server: {{ bind: 127.0.0.1, port: 0, token: "{API_TOKEN}" }}
database: {{ url: "sqlite://{home}/flotilla.db" }}
log: {{ level: error }}
agents:
  claude:
    kind: claude-code
    command: ["{agent}"]
    env: {{ HOME: "{agent_home}", GIT_AUTHOR_NAME: a, GIT_AUTHOR_EMAIL: a@example.com, GIT_COMMITTER_NAME: a, GIT_COMMITTER_EMAIL: a@example.com, SCRIPTED_GITHUB_API: "{api}", SCRIPTED_GITHUB_REPO: {REPO}, SCRIPTED_GITHUB_TOKEN: {TOKEN} }}
projects:
  bench:
    repo: {repo}
    agent: claude
    runtime: tmux
    scm: github
    github_repo: {REPO}
    reactions:
      ci-failed: {{ retries: 100, escalate_after: 1000h }}
github: {{ api_url: "{api}", graphql_url: "{api}/graphql", token: {TOKEN}, webhook_secret: {SECRET}, poll_interval: 0s }}
"#,
                home = home.display(),
                agent = agent.display(),
                agent_home = agent_home.display(),
                repo = repo.display(),
                api = gh.url,
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
        let _server = app.spawn();
        gh.set_webhook(&format!("{base}/webhooks/github"), SECRET);
        // No idle connections kept: the server may close one just as it is reused.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        // 20 rounds per session: each round adds check runs to its PR head, and a head with
        // hundreds of checks would measure pagination, not the reaction.
        let sessions = rounds.div_ceil(20).max(1);
        let mut ids = vec![];
        for k in 0..sessions {
            let v: serde_json::Value = http
                .post(format!("{base}/api/v1/sessions"))
                .bearer_auth(API_TOKEN)
                .json(&serde_json::json!({"project": "bench", "prompt": format!("OPEN_PR latency {k}")}))
                .send()
                .await
                .expect("spawn")
                .json()
                .await
                .expect("json");
            ids.push(v["id"].as_str().expect("id").to_string());
        }
        let mut heads = vec![];
        for id in &ids {
            let deadline = Instant::now() + Duration::from_secs(120);
            let branch = loop {
                let s: serde_json::Value = http
                    .get(format!("{base}/api/v1/sessions/{id}"))
                    .bearer_auth(API_TOKEN)
                    .send()
                    .await
                    .expect("get")
                    .json()
                    .await
                    .expect("json");
                if s["state"] == "review_pending" {
                    break s["branch"].as_str().expect("branch").to_string();
                }
                assert!(Instant::now() < deadline, "no PR: {s}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            heads.push(gh.branch_sha(REPO, &branch).expect("head"));
        }
        let mut lat = Vec::with_capacity(rounds);
        let mut logs = Logs::default();
        for i in 0..rounds {
            let head = &heads[i % sessions];
            if i >= sessions {
                let prev = format!("check-{}", i - sessions);
                gh.add_check_run(REPO, head, &prev, Some("success"), None)
                    .await;
                // Not timed: wait until the session has taken the green check.
                let id = &ids[i % sessions];
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let s: serde_json::Value = http
                        .get(format!("{base}/api/v1/sessions/{id}"))
                        .bearer_auth(API_TOKEN)
                        .send()
                        .await
                        .expect("get")
                        .json()
                        .await
                        .expect("json");
                    if s["state"] != "ci_failed" {
                        break;
                    }
                    assert!(Instant::now() < deadline, "round {i}: stuck in ci_failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let name = format!("check-{i}");
            let needle = format!("Failed check: {name}\\n");
            let t = Instant::now();
            gh.add_check_run(REPO, head, &name, Some("failure"), Some("boom"))
                .await;
            let deadline = t + Duration::from_secs(30);
            while !logs.told(&agent_home, &needle) {
                assert!(Instant::now() < deadline, "round {i}: never typed");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            lat.push(t.elapsed());
        }
        lat.sort();
        println!(
            "webhook → pane over {rounds} failed-check events: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
            pct(&lat, 0.50),
            pct(&lat, 0.90),
            pct(&lat, 0.99),
            lat[lat.len() - 1]
        );
        let _ = std::process::Command::new("tmux")
            .args(["-L", &socket, "kill-server"])
            .output();
    });
}
