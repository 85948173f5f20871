//! Latency from a failed-check webhook to Flotilla's instruction being in the real `claude`
//! CLI's next model request.
//!
//! A real Flotilla (in process, SQLite, tmux, webhooks only, hooks through the `flotilla`
//! binary cargo built), the real Claude Code CLI (`FLOTILLA_CLAUDE_BIN`, else where
//! `.ci/deps.sh` installs it; `permission_mode: permissionless` with `IS_SANDBOX=1`, as the
//! bench runs as root), the scripted Messages API (`tests/support/fake_anthropic.rs`) and the
//! fake GitHub (`tests/support/fake_github.rs`). The CLI pushes its branch and opens a PR with
//! `curl`; then, every round, a failing `unit-tests` check run is posted on the PR's head: the
//! clock starts as the fake GitHub sends the signed `check_run` webhook to Flotilla and stops
//! when the model request carrying that round's log excerpt arrives at the fake Messages API
//! (Flotilla stepped the event, pasted the instruction into the CLI's pane and pressed Enter;
//! the CLI submitted it). The scripted answer pushes an empty fix commit, which starts the next
//! round once the session has seen the new head.
//!
//! `FLOTILLA_BENCH_ROUNDS` sets the number of rounds (default 20).

#[path = "../tests/support/fake_anthropic.rs"]
mod fake_anthropic;
#[path = "../tests/support/fake_github.rs"]
mod fake_github;
#[path = "../tests/support/fake_server.rs"]
mod fake_server;
#[path = "support/real_claude.rs"]
mod real_claude;

use std::time::{Duration, Instant};

use fake_anthropic::{request_text, FakeAnthropic, Step};
use fake_github::FakeGithub;
use flotilla::app::Application;
use flotilla::config::{load_with, LoadOptions};
use real_claude::{claude, git, pct, KillTmux};
use serde_json::{json, Value};

const API_TOKEN: &str = "bench-token-0123456789";
const KEY: &str = "sk-ant-bench-0123456789abcdefghijklmnop";
const REPO: &str = "acme/widgets";
const GH_TOKEN: &str = "ghp_bench_reaction";
const SECRET: &str = "bench-reaction-secret";

/// Opens the PR for the current branch (what `gh pr create` does), from the CLI's Bash tool.
const OPEN_PR: &str = r#"git commit --allow-empty -q -m 'Start the counter' && git push -q origin HEAD && curl -sS -f -X POST "$GITHUB_API/repos/acme/widgets/pulls" -H "Authorization: Bearer $GITHUB_TOKEN" -d "{\"title\":\"Counter\",\"head\":\"$(git branch --show-current)\",\"base\":\"main\"}""#;

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn session(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/api/v1/sessions/{id}", self.base))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    async fn screen(&self, id: &str) -> String {
        let o: Value = self
            .http
            .get(format!(
                "{}/api/v1/sessions/{id}/output?lines=40",
                self.base
            ))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        o["output"].as_str().unwrap_or("").to_string()
    }

    /// Polls (every 5 ms, up to 120 s) until `pred` gives a value.
    async fn wait<T>(&self, id: &str, what: &str, mut pred: impl FnMut(&Value) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = self.session(id).await;
            if let Some(v) = pred(&s) {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; session: {s}\nscreen:\n{}",
                    self.screen(id).await
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Waits (up to 120 s) for the first main request holding `needle`; returns when it arrived.
async fn request_with(model: &FakeAnthropic, needle: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(r) = model
            .all_requests()
            .into_iter()
            .filter(|r| r.main)
            .find(|r| request_text(&r.body).contains(needle))
        {
            return r.at;
        }
        assert!(
            Instant::now() < deadline,
            "no model request with {needle:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn main() {
    let Some(claude) = claude() else {
        eprintln!(
            "real_agent_reaction: no claude CLI (run .ci/deps.sh or set FLOTILLA_CLAUDE_BIN)"
        );
        return;
    };
    let rounds: usize = std::env::var("FLOTILLA_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let sys = actix::System::new();
    sys.block_on(async move {
        let mut script = vec![
            Step::tool(
                "Bash",
                json!({"command": OPEN_PR, "description": "Push and open the PR"}),
            ),
            Step::text("Opened the PR."),
        ];
        for k in 0..rounds {
            script.push(Step::tool(
                "Bash",
                json!({"command": format!("git commit --allow-empty -q -m fix-{k} && git push -q origin HEAD"), "description": "Push a fix"}),
            ));
            script.push(Step::text(&format!("Pushed fix {k}.")));
        }
        let model = FakeAnthropic::start(script).await;
        model.require_api_key(KEY);
        let gh = FakeGithub::start(GH_TOKEN).await;
        let bare = gh.create_repo(REPO);
        gh.require_reviews(REPO);
        gh.watch_pushes();
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
        // The project's clone of the fake's repository (its origin).
        git(
            dir.path(),
            &["clone", "-q", bare.to_str().expect("utf-8"), repo.to_str().expect("utf-8")],
        );
        let cfg = dir.path().join("flotilla.yaml");
        std::fs::write(
            &cfg,
            format!(
                r#"server: {{ bind: 127.0.0.1, port: 0, token: "{API_TOKEN}", cli_path: "{cli}" }}
database: {{ url: "sqlite://{home}/flotilla.db" }}
log: {{ level: error }}
github: {{ api_url: "{api}", graphql_url: "{api}/graphql", token: {GH_TOKEN}, webhook_secret: {SECRET}, poll_interval: 0s }}
agents:
  claude:
    kind: claude-code
    command: ["{claude}"]
    permission_mode: permissionless
    env: {{ HOME: "{agent_home}", IS_SANDBOX: "1", ANTHROPIC_BASE_URL: "{url}", ANTHROPIC_API_KEY: "{KEY}", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1", GITHUB_API: "{api}", GITHUB_TOKEN: "{GH_TOKEN}", GIT_AUTHOR_NAME: a, GIT_AUTHOR_EMAIL: a@example.com, GIT_COMMITTER_NAME: a, GIT_COMMITTER_EMAIL: a@example.com }}
projects:
  bench:
    repo: {repo}
    default_branch: main
    agent: claude
    runtime: tmux
    scm: github
    github_repo: {REPO}
    reactions:
      ci-failed: {{ retries: {retries}, escalate_after: {retries} }}
"#,
                cli = env!("CARGO_BIN_EXE_flotilla"),
                home = home.display(),
                api = gh.url,
                claude = claude.display(),
                agent_home = agent_home.display(),
                url = model.url(),
                repo = repo.display(),
                retries = rounds + 10,
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
        let _tmux = KillTmux(flotilla::app::tmux_socket(&home));
        let _server = app.spawn();
        gh.set_webhook(&format!("{base}/webhooks/github"), SECRET);
        let api = Api {
            http: reqwest::Client::new(),
            base: base.clone(),
        };
        let v: Value = api
            .http
            .post(format!("{base}/api/v1/sessions"))
            .bearer_auth(API_TOKEN)
            .json(&json!({"project": "bench", "prompt": "Push a fix for every failed check."}))
            .send()
            .await
            .expect("spawn")
            .json()
            .await
            .expect("json");
        let id = v["id"].as_str().expect("id").to_string();
        let branch = api
            .wait(&id, "the PR found", |s| {
                (s["state"] == "review_pending").then(|| s["branch"].as_str().map(str::to_string))
            })
            .await
            .expect("branch");
        let mut head = String::new();
        let mut lat = Vec::with_capacity(rounds);
        for k in 0..rounds {
            // The CLI's turn is over (its answer consumed the text step) and the session saw
            // the new head: nothing of the previous round is in flight.
            let done = 2 + 2 * k;
            let deadline = Instant::now() + Duration::from_secs(120);
            let next = loop {
                let h = gh.branch_sha(REPO, &branch).unwrap_or_default();
                if model.requests().len() >= done && h != head {
                    break h;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {k}: no new push; screen:\n{}",
                    api.screen(&id).await
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            head = next;
            api.wait(&id, "the new head seen", |s| {
                (s["state"] == "review_pending").then_some(())
            })
            .await;
            let marker = format!("round-{k}: assertion failed: widgets == {k}");
            let posted = Instant::now();
            gh.add_check_run(
                REPO,
                &head,
                "unit-tests",
                Some("failure"),
                Some(&format!("running 12 tests\n{marker}\nerror: test failed")),
            )
            .await;
            let seen = request_with(&model, &marker).await;
            lat.push(seen - posted);
        }
        // Every failure reached the CLI once.
        let s = api.session(&id).await;
        let attempts = s["trackers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["reaction"] == "ci-failed")
            .and_then(|t| t["attempts"].as_u64())
            .unwrap_or(0);
        assert_eq!(attempts, rounds as u64, "one instruction per failure: {s}");
        lat.sort();
        println!(
            "real claude failed-check webhook -> instruction in its next model request, {rounds} rounds: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
            pct(&lat, 0.5),
            pct(&lat, 0.9),
            pct(&lat, 0.99),
            lat[lat.len() - 1]
        );
    });
}
