//! Test harness: a real `Application` on port 0 with its own `$FLOTILLA_HOME`, a real git
//! repository, and SQLite (or a fresh PostgreSQL database when asked). No sleeps: helpers wait
//! for conditions with a deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;
use std::time::Duration;

use flotilla::app::Application;
use flotilla::config::{load_with, LoadOptions};
use flotilla::store::SharedStore;
use serde_json::Value;
use tempfile::TempDir;

/// The API token every test app uses.
pub const TOKEN: &str = "test-token-0123456789";

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        flotilla::telemetry::init_tracing(flotilla::telemetry::LogFormat::Text, "debug");
    }
});

/// Fails loudly under CI when a tool is missing; skips (returns false) on a laptop.
pub fn require_tool(tool: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{tool} is required under CI=true but is not installed");
        }
        eprintln!("skipping: {tool} is not installed");
    }
    ok
}

/// A real agent CLI (`claude`, `codex`, `opencode`, `aider`): `$<env_var>`, else on `PATH`, else
/// where `.ci/deps.sh` installs the pinned versions (`$FLOTILLA_CLIS_DIR`, default
/// `~/.cache/flotilla/real-clis`: npm's `node_modules/.bin`, aider's `aider-venv/bin`).
/// `None` (skip) when none exists; under `CI=true` a missing CLI fails the test.
pub fn real_cli(name: &str, env_var: &str) -> Option<PathBuf> {
    let cache = std::env::var_os("FLOTILLA_CLIS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/flotilla/real-clis"))
        })
        .into_iter()
        .flat_map(|d| [d.join("node_modules/.bin"), d.join("aider-venv/bin")])
        .map(|d| d.join(name));
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    });
    let found = std::env::var_os(env_var)
        .map(PathBuf::from)
        .into_iter()
        .chain(on_path)
        .chain(cache)
        .find(|c| c.is_file());
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the real {name} CLI is required under CI=true (.ci/deps.sh installs it; or set {env_var})");
        }
        eprintln!(
            "skipping: the real {name} CLI is not installed (run .ci/deps.sh or set {env_var})"
        );
    }
    found
}

/// Runs git in `dir`, panicking with its stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes a bare repository at `origin`, adds it to `repo` as its `origin` remote and pushes
/// `main` there (the remote the agents push their branches to). Returns `origin`.
pub fn push_to_bare_origin(repo: &Path, origin: &Path) -> std::path::PathBuf {
    let dir = origin.parent().expect("origin's directory");
    let name = origin.file_name().expect("origin's name").to_string_lossy();
    git(dir, &["init", "-q", "--bare", "-b", "main", &name]);
    git(
        repo,
        &["remote", "add", "origin", &origin.display().to_string()],
    );
    git(repo, &["push", "-q", "origin", "main"]);
    origin.to_path_buf()
}

/// A fresh repository with one commit on `main`.
pub fn make_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "hello\n").expect("write");
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    repo
}

/// The agent most tests use: prints its prompt, then echoes each stdin line.
pub const ECHO_AGENT: &str = r#"["sh", "-c", "cat \"$FLOTILLA_PROMPT_FILE\"; echo READY; while read -r line; do echo \"got: $line\"; done"]"#;

/// Which database a test app uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    /// A SQLite file in the app's home.
    Sqlite,
    /// A fresh database on `FLOTILLA_TEST_PG_URL`.
    Postgres,
}

/// Creates a fresh PostgreSQL database and returns its URL, or `None` (skip) on a laptop
/// without `FLOTILLA_TEST_PG_URL`. Under `CI=true` its absence fails the test.
pub async fn fresh_pg_url() -> Option<String> {
    let Ok(admin) = std::env::var("FLOTILLA_TEST_PG_URL") else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("FLOTILLA_TEST_PG_URL must be set under CI=true");
        }
        eprintln!("skipping PostgreSQL: FLOTILLA_TEST_PG_URL is not set");
        return None;
    };
    use sqlx::Connection;
    let name = format!("flotilla_api_{}", uuid::Uuid::new_v4().simple());
    let mut c = sqlx::PgConnection::connect(&admin).await.expect("pg admin");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .expect("create db");
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    Some(format!("{base}/{name}"))
}

/// Writes a config file for a test home.
pub fn write_config(dir: &Path, repo: &Path, db_url: &str, agent: &str, extra: &str) -> PathBuf {
    let agents = format!("  scripted: {{ kind: command, command: {agent} }}\n");
    write_config_agents(dir, repo, db_url, &agents, extra)
}

/// Writes a config file with `agents` lines (besides `failing` and `quick`).
pub fn write_config_agents(
    dir: &Path,
    repo: &Path,
    db_url: &str,
    agents: &str,
    extra: &str,
) -> PathBuf {
    // `extra` may override the project's agent and runtime (YAML forbids repeating a key).
    let mut defaults = String::new();
    if !extra.contains("    agent:") {
        defaults.push_str("    agent: scripted\n");
    }
    if !extra.contains("    runtime:") {
        defaults.push_str("    runtime: process\n");
    }
    if !extra.contains("    workspace:") {
        defaults.push_str("    workspace: worktree\n");
    }
    let yaml = format!(
        r#"server: {{ bind: 127.0.0.1, port: 0, token: "{TOKEN}", max_body_bytes: 65536 }}
database: {{ url: "{db_url}" }}
log: {{ level: warn }}
lifecycle: {{ reconcile_interval: 1h }}
agents:
{agents}  failing: {{ kind: command, command: ["sh", "-c", "echo failing; exit 3"] }}
  quick: {{ kind: command, command: ["true"] }}
projects:
  demo:
    repo: {repo}
    default_branch: main
    session_prefix: demo
{defaults}{extra}
"#,
        repo = repo.display()
    );
    let path = dir.join("flotilla.yaml");
    std::fs::write(&path, yaml).expect("write config");
    path
}

/// A running app.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// HTTP client.
    pub client: reqwest::Client,
    /// The app's store.
    pub store: SharedStore,
    /// The repo.
    pub repo: PathBuf,
    /// `$FLOTILLA_HOME`.
    pub home: PathBuf,
    /// The app's clock (session timers, deadlines, chat turn timeouts): the wall clock until a
    /// test [`advance`](flotilla::clock::ManualClock::advance)s it past a threshold.
    pub clock: flotilla::clock::ManualClock,
    /// Stops the server.
    pub _handle: actix_web::dev::ServerHandle,
    /// Owns the temp dir (dropped last).
    pub _dir: TempDir,
}

/// The `FLOTILLA__…` override naming the cargo-built `flotilla` as `server.cli_path`: an app
/// in this test binary then runs its chat assistants under `flotilla turn-guard`, as
/// `flotilla serve` does (its own executable).
pub const GUARDED_TURNS: (&str, &str) =
    ("FLOTILLA__SERVER__CLI_PATH", env!("CARGO_BIN_EXE_flotilla"));

/// [`spawn_app_with_agents`] whose chat turns run under the turn guard ([`GUARDED_TURNS`]).
pub async fn spawn_app_guarded(
    backend: Backend,
    agents: &str,
    extra: &str,
    dir: TempDir,
) -> Option<TestApp> {
    spawn_app_with_env(backend, agents, extra, dir, &[GUARDED_TURNS]).await
}

/// Starts an app on SQLite with the echo agent.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Backend::Sqlite, ECHO_AGENT, "")
        .await
        .expect("sqlite app")
}

/// Starts an app; `None` when the backend is unavailable here (PostgreSQL on a laptop).
pub async fn spawn_app_with(backend: Backend, agent: &str, extra: &str) -> Option<TestApp> {
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = format!("  scripted: {{ kind: command, command: {agent} }}\n");
    spawn_app_with_agents(backend, &agents, extra, dir).await
}

/// Starts an app with `agents` (YAML lines under `agents:`, which must define `scripted`
/// or name another agent in `extra`) and `extra` lines under the project, in `dir`.
pub async fn spawn_app_with_agents(
    backend: Backend,
    agents: &str,
    extra: &str,
    dir: TempDir,
) -> Option<TestApp> {
    spawn_app_with_env(backend, agents, extra, dir, &[]).await
}

/// As [`spawn_app_with_agents`], with `FLOTILLA__…` overrides in `env`
/// (e.g. `FLOTILLA__GITHUB__WEBHOOK_SECRET`).
pub async fn spawn_app_with_env(
    backend: Backend,
    agents: &str,
    extra: &str,
    dir: TempDir,
    env: &[(&str, &str)],
) -> Option<TestApp> {
    LazyLock::force(&TRACING);
    let home = dir.path().join("home");
    let repo = make_repo(dir.path());
    let db = match backend {
        Backend::Sqlite => format!("sqlite://{}/flotilla.db", home.display()),
        Backend::Postgres => fresh_pg_url().await?,
    };
    let cfg = write_config_agents(dir.path(), &repo, &db, agents, extra);
    let settings = load_with(&LoadOptions {
        config_path: Some(cfg),
        cwd: dir.path().to_path_buf(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
    .expect("config loads");
    start_app(settings, dir, home, repo).await
}

/// Starts an app from `settings` (validated here) with `$FLOTILLA_HOME` `home`, the project
/// repository `repo`, and `dir` owning both.
pub async fn start_app(
    settings: flotilla::config::Settings,
    dir: TempDir,
    home: PathBuf,
    repo: PathBuf,
) -> Option<TestApp> {
    settings.validate().expect("config valid");
    let clock = flotilla::clock::ManualClock::new();
    let app = Application::build_with_clock(settings, home.clone(), clock.clock())
        .await
        .expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let store = app.store();
    let handle = app.spawn();
    let t = TestApp {
        address,
        client: http_client(),
        store,
        repo,
        home,
        clock,
        _handle: handle,
        _dir: dir,
    };
    t.wait_ready().await;
    Some(t)
}

/// Waits until `f` returns `Some`, polling every 20 ms, up to `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_every(Duration::from_millis(20), secs, what, f).await
}

/// [`eventually`], polling every `period`: the cluster tests poll HTTP lists and the
/// database every 250 ms, which a 20 ms loop would load as much as the nodes under test.
pub async fn eventually_every<T, F, Fut>(period: Duration, secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(period).await;
    }
}

/// [`eventually`], moving `clock` forward by `step` after each miss: the waits the
/// application keeps on its clock (retries, backoffs, rate windows, poll intervals) pass in a
/// few real milliseconds each, while the order of what happens stays the application's.
pub async fn eventually_advancing<T, F, Fut>(
    clock: &flotilla::clock::ManualClock,
    step: Duration,
    secs: u64,
    what: &str,
    mut f: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        clock.advance(step);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestApp {
    /// A request builder with the token.
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.address, path))
            .bearer_auth(TOKEN)
    }

    /// GET as JSON (status, body).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .req(reqwest::Method::GET, path)
            .send()
            .await
            .expect("get");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// POST JSON (status, body).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .req(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .expect("post");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Answers the question session `waiting` (as read from the API) waits on, as the
    /// dashboard does (`send` naming the question); the API's answer, which must be a 200.
    pub async fn answer(&self, waiting: &Value, message: &str) -> Value {
        let id = waiting["id"].as_str().expect("session id");
        let (code, v) = self
            .post(
                &format!("/api/v1/sessions/{id}/send"),
                serde_json::json!({"message": message, "question": waiting["waiting_for"]}),
            )
            .await;
        assert_eq!(code, 200, "{v}");
        v
    }

    /// Waits (deadline `secs`) for session `id`'s first event of `kind`; its data.
    pub async fn event_data(&self, id: &str, kind: &str, secs: u64) -> Value {
        eventually(secs, &format!("a {kind} event of {id}"), || async {
            let (_, v) = self.get(&format!("/api/v1/sessions/{id}/events")).await;
            v["events"].as_array().and_then(|es| {
                es.iter()
                    .find(|e| e["kind"] == kind)
                    .map(|e| e["data"].clone())
            })
        })
        .await
    }

    /// Spawns a session and returns its id.
    pub async fn spawn(&self, body: Value) -> String {
        let (s, v) = self.post("/api/v1/sessions", body).await;
        assert_eq!(s, 201, "{v}");
        v["id"].as_str().expect("id").to_string()
    }

    /// Waits for `/readyz`.
    pub async fn wait_ready(&self) {
        let url = format!("{}/readyz", self.address);
        let c = self.client.clone();
        eventually(30, "readyz", || {
            let c = c.clone();
            let url = url.clone();
            async move {
                match c.get(&url).send().await {
                    Ok(r) if r.status().is_success() => Some(()),
                    _ => None,
                }
            }
        })
        .await
    }

    /// `/metrics` as text (process-wide: other tests may have counted too).
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Waits until the session is in `state`; returns its JSON (the panic shows the last).
    pub async fn wait_state(&self, id: &str, state: &str) -> Value {
        let path = format!("/api/v1/sessions/{id}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (_, v) = self.get(&path).await;
            if v["state"] == state {
                return v;
            }
            if tokio::time::Instant::now() > deadline {
                let (_, o) = self.get(&format!("{path}/output")).await;
                panic!("timed out waiting for {id} to be {state}; last: {v}; output: {o}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the session's output contains `text` (the panic shows the last output).
    pub async fn wait_output(&self, id: &str, text: &str) -> String {
        let path = format!("/api/v1/sessions/{id}/output?lines=500");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (_, v) = self.get(&path).await;
            let o = v["output"].as_str().unwrap_or("").to_string();
            if o.contains(text) {
                return o;
            }
            if tokio::time::Instant::now() > deadline {
                let (_, s) = self.get(&format!("/api/v1/sessions/{id}")).await;
                panic!("timed out waiting for {id} output to contain {text:?}; output: {o:?}; session: {s}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Kills every agent process group started under `home` (test clean-up).
pub fn kill_agents(home: &Path) {
    let Ok(dirs) = std::fs::read_dir(home.join("runtime")) else {
        return;
    };
    for d in dirs.flatten() {
        if let Ok(pid) = std::fs::read_to_string(d.path().join("pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: plain signal to a process group we started.
                unsafe {
                    libc::killpg(pid, libc::SIGKILL);
                }
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        kill_agents(&self.home);
    }
}

/// Whether process group `pid` still has a live (non-zombie) leader.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let st = s
                .rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next())
                .unwrap_or("X");
            st != "Z" && st != "X"
        }
        Err(_) => false,
    }
}

/// Whether process `pid` is gone (or a zombie).
pub fn gone(pid: impl TryInto<i32>) -> bool {
    pid.try_into().map_or(true, |p| !alive(p))
}

/// The pid the process runtime recorded for a session.
pub fn agent_pid(home: &Path, id: &str) -> i32 {
    std::fs::read_to_string(home.join("runtime").join(id).join("pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid")
}

/// The tests' HTTP client: a request that hangs fails the test instead of hanging the run.
/// Reads time out individually, so long-lived streams (SSE) still work while data flows.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// Asserts `e` is GitHub's primary rate limit, with a wait until its reset (within the hour
/// a primary budget lasts).
#[track_caller]
pub fn assert_primary_rate_limit(e: &flotilla::plugins::PluginError) {
    assert!(
        matches!(
            e,
            flotilla::plugins::PluginError::RateLimited {
                kind: "primary",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.retry_after()
            .is_some_and(|d| d > Duration::ZERO && d <= Duration::from_secs(3600)),
        "{e:?}"
    );
}

/// GitHub settings pointing at a fake GitHub at `url`, with `token`.
pub fn github_settings(url: &str, token: &str) -> flotilla::config::GithubSettings {
    use flotilla::config::{HumanDuration, Secret};
    flotilla::config::GithubSettings {
        api_url: url.to_string(),
        graphql_url: format!("{url}/graphql"),
        token: Some(Secret::new(token)),
        webhook_secret: None,
        bot_login: None,
        poll_interval: HumanDuration::from_secs(30),
        reconcile_every: 10,
        timeout: HumanDuration::from_secs(10),
        ignore_checks: vec![],
    }
}
