//! The dashboard in a real browser: runs the Playwright tests of `tests/dashboard/`
//! (`playwright-core` from npm driving Debian's `chromium`, headless) against the real
//! `flotilla serve` binary with the scripted echo agent. Screenshots of the board and of a
//! session page go to `test-artifacts/`.
//!
//! Needs `node`, `chromium` and `tests/dashboard/node_modules` (`.ci/deps.sh` installs all
//! three). On a laptop without them the test says so and skips; under `CI=true` it fails.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::json;

use crate::helpers::*;
use crate::server::*;

/// Whole-suite deadline: the node tests wait for each condition with their own deadlines.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);
/// Ended sessions in the store before the server starts, so the board is tested with a
/// realistic fleet (1,000 cards) and not only the handful the tests spawn.
const SEEDED: usize = 1000;

/// Writes `n` ended sessions (`seed-1`…) straight into the test home's store, spread over
/// the terminal states, each with a realistic prompt, branch and history. Ended sessions
/// have no actor, so the server starts as fast as with none.
async fn seed_ended_sessions(home: &Path, n: usize) {
    use flotilla::store::{NewEvent, NewSession, PrRef, SessionState, TransitionCommit};
    let url = format!("sqlite://{}/flotilla.db", home.display());
    let store = flotilla::store::open(&url).await.expect("store");
    let ended = [
        SessionState::Done,
        SessionState::Merged,
        SessionState::Killed,
        SessionState::Terminated,
        SessionState::Done,
        SessionState::Errored,
    ];
    for i in 0..n {
        let (rec, _) = store
            .create_session(&NewSession {
                project: "demo".into(),
                prefix: "seed".into(),
                agent: "scripted".into(),
                runtime: "process".into(),
                workspace_kind: "worktree".into(),
                branch: None,
                issue: Some(format!("{}", 100 + i)),
                prompt: Some(format!("Seeded task {i}: ").repeat(20)),
                skip_numbers: vec![],
                fixed_id: None,
                meta: serde_json::Value::Null,
                at: chrono::Utc::now(),
            })
            .await
            .expect("create");
        let mut snap = store.load_snapshot(&rec.id).await.expect("load");
        let to = ended[i % ended.len()];
        snap.session.state = to;
        snap.session.branch = Some(format!("session/{}", rec.id));
        if to == SessionState::Merged {
            snap.session.pr = Some(PrRef {
                number: i as i64 + 1,
                url: format!("https://github.com/acme/app/pull/{}", i + 1),
            });
        }
        store
            .commit_transition(&TransitionCommit {
                snapshot: snap,
                event: NewEvent {
                    session_id: Some(rec.id.clone()),
                    kind: "agent.exited".into(),
                    data: json!({"from": "working", "to": to, "state": to, "reason": null}),
                    at: chrono::Utc::now(),
                },
                notifications: Vec::new(),
                instructions: Vec::new(),
            })
            .await
            .expect("commit");
    }
    // One chat conversation with a message from ada.
    let conv = store
        .upsert_conversation("telegram", "chat-42", chrono::Utc::now())
        .await
        .expect("conversation");
    store
        .enqueue_chat_message_with_meta(
            &conv.id,
            "m-1",
            "ada",
            "please fix the login page\nit 500s on submit",
            &Default::default(),
            chrono::Utc::now(),
        )
        .await
        .expect("message");
}

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The Playwright package, installed with `npm ci` when missing (on a laptop that may fail:
/// then skip, unless under CI).
fn playwright_installed(dir: &Path) -> bool {
    if dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return true;
    }
    eprintln!("installing playwright-core (npm ci) in {}", dir.display());
    let ok = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        if ci() {
            panic!("npm ci failed in {} under CI=true", dir.display());
        }
        eprintln!("skipping: playwright-core is not installed");
    }
    ok
}

fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_passes_its_playwright_tests_in_headless_chromium() {
    if !require_tool("node") || !require_tool("npm") || !require_tool("chromium") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tests = root.join("tests/dashboard");
    if !playwright_installed(&tests) {
        return;
    }
    let s = Scratch::new("");
    seed_ended_sessions(&s.home, SEEDED).await;
    let server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    let artifacts = root.join("test-artifacts");
    let run = tokio::process::Command::new("node")
        .args(["--test", "--test-concurrency=1", "dashboard.test.mjs"])
        .current_dir(&tests)
        .env("FLOTILLA_URL", &server.address)
        .env("FLOTILLA_TOKEN", TOKEN)
        .env("FLOTILLA_ARTIFACTS", &artifacts)
        .env("CHROMIUM", chromium_path())
        .env("FLOTILLA_SEEDED", SEEDED.to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(SUITE_TIMEOUT, run)
        .await
        .expect("the Playwright suite finished in time")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let log = std::fs::read_to_string(s.dir.path().join("server.log")).unwrap_or_default();
        panic!(
            "Playwright tests failed ({}):\n{stdout}\n{stderr}\n--- server log ---\n{log}",
            out.status
        );
    }
    // Show the node runner's summary in `cargo test -- --nocapture` runs.
    for line in stdout.lines().filter(|l| l.starts_with("# ")) {
        println!("playwright {line}");
    }
    for shot in ["dashboard-board.png", "dashboard-session.png"] {
        let p = artifacts.join(shot);
        assert!(
            std::fs::metadata(&p).map(|m| m.len() > 0).unwrap_or(false),
            "{} was written",
            p.display()
        );
    }
}

#[actix_web::test]
async fn the_page_and_its_assets_are_served_without_a_token_and_revalidate() {
    let app = spawn_app().await;
    let c = crate::helpers::http_client();
    let page = c
        .get(format!("{}/", app.address))
        .send()
        .await
        .expect("get /");
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/html"));
    assert!(page.headers().contains_key("content-security-policy"));
    let html = page.text().await.expect("html");
    assert!(html.contains("/assets/app.js"));
    for asset in [
        "app.js",
        "app.css",
        "vendor/xterm.js",
        "vendor/xterm.css",
        "vendor/addon-fit.js",
    ] {
        let r = c
            .get(format!("{}/assets/{asset}", app.address))
            .send()
            .await
            .expect("asset");
        assert_eq!(r.status(), 200, "{asset}");
        let etag = r.headers()["etag"].clone();
        let again = c
            .get(format!("{}/assets/{asset}", app.address))
            .header("If-None-Match", etag)
            .send()
            .await
            .expect("asset again");
        assert_eq!(again.status(), 304, "{asset} revalidates");
    }
    let missing = c
        .get(format!("{}/assets/nope.js", app.address))
        .send()
        .await
        .expect("missing");
    assert_eq!(missing.status(), 404);
    let board = c
        .get(format!("{}/api/v1/board", app.address))
        .send()
        .await
        .expect("board");
    assert_eq!(board.status(), 401, "data needs the token");
}

#[actix_web::test]
async fn the_board_has_every_session_with_its_newest_event_and_the_stream_cursor() {
    let app = spawn_app().await;
    let a = app
        .spawn(json!({"project": "demo", "prompt": "x".repeat(1000)}))
        .await;
    let b = app
        .spawn(json!({"project": "demo", "agent": "failing"}))
        .await;
    app.wait_state(&a, "working").await;
    app.wait_state(&b, "errored").await;
    let (s, v) = app.get("/api/v1/board").await;
    assert_eq!(s, 200, "{v}");
    let cursor = v["cursor"].as_i64().expect("cursor");
    let stored = app.store.last_event_id().await.expect("last id");
    assert!(cursor > 0 && cursor <= stored);
    assert_eq!(
        v["projects"],
        json!([{"name": "demo", "agent": "scripted"}])
    );
    let sessions = v["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 2);
    let ca = sessions.iter().find(|s| s["id"] == a.as_str()).expect("a");
    assert_eq!(ca["state"], "working");
    assert_eq!(ca["branch"], format!("session/{a}"));
    assert_eq!(ca["task"].as_str().map(|t| t.chars().count()), Some(240));
    assert_eq!(ca["last_event"]["kind"], "runtime.started");
    assert!(ca["last_event"]["data"].get("effects").is_none());
    let cb = sessions.iter().find(|s| s["id"] == b.as_str()).expect("b");
    assert_eq!(cb["state"], "errored");
    assert_eq!(cb["reactions"][0]["reaction"], "agent-exited");
    assert!(cb["reactions"][0]["attempts"].as_i64() >= Some(1));
    assert!(cb["last_event"]["id"].as_i64() <= Some(cursor));
}

/// Reads binary frames until their text contains `want`.
async fn read_terminal<S>(ws: &mut S, want: &str) -> String
where
    S: futures::Stream<Item = Result<awc::ws::Frame, awc::error::WsProtocolError>> + Unpin,
{
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !seen.contains(want) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = tokio::time::timeout(left, ws.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {want:?}; saw {seen:?}"))
            .expect("open")
            .expect("frame ok");
        if let awc::ws::Frame::Binary(b) = frame {
            seen.push_str(&String::from_utf8_lossy(&b));
        }
    }
    seen
}

#[actix_web::test]
async fn a_process_terminal_streams_the_log_and_delivers_typed_lines() {
    let app = spawn_app().await;
    let id = app
        .spawn(json!({"project": "demo", "prompt": "say hi"}))
        .await;
    app.wait_state(&id, "working").await;
    app.wait_output(&id, "READY").await;
    let url = format!(
        "{}/api/v1/sessions/{id}/terminal?access_token={TOKEN}",
        app.address.replace("http://", "ws://")
    );
    let (_res, mut ws) = awc::Client::new()
        .ws(url)
        .connect()
        .await
        .expect("terminal connects");
    // The log's tail first, with terminal line ends.
    let first = read_terminal(&mut ws, "READY").await;
    assert!(first.contains("say hi"));
    assert!(first.contains("READY\r\n"));
    // Typed keys: echoed while editing, delivered as a line on Enter.
    ws.send(awc::ws::Message::Binary("helo\u{7f}lo there\r".into()))
        .await
        .expect("type");
    ws.send(awc::ws::Message::Text(
        r#"{"type":"resize","cols":100,"rows":30}"#.into(),
    ))
    .await
    .expect("resize is accepted");
    read_terminal(&mut ws, "got: hello there").await;
    app.wait_output(&id, "got: hello there").await;

    let no_token = awc::Client::new()
        .ws(format!(
            "{}/api/v1/sessions/{id}/terminal",
            app.address.replace("http://", "ws://")
        ))
        .connect()
        .await;
    assert!(no_token.is_err(), "no token, no terminal");
    let (s, _) = app.get("/api/v1/sessions/demo-404/terminal").await;
    assert_eq!(s, 404);
    let (s, _) = app
        .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
        .await;
    assert_eq!(s, 200);
    app.wait_state(&id, "killed").await;
    let (s, _) = app.get(&format!("/api/v1/sessions/{id}/terminal")).await;
    assert_eq!(s, 409, "an ended session has nothing to attach to");
}

/// Metrics the operators' dashboard shows before the service exports them: the GitHub
/// lifecycle and the chat bridge add them (their panels stay empty until then).
const PLANNED_METRICS: [&str; 2] = [
    "flotilla_github_rate_limit_remaining",
    "flotilla_chat_queue_depth",
];

#[actix_web::test]
async fn the_grafana_dashboard_queries_parse_and_use_exported_metrics() {
    let app = spawn_app().await;
    // A reaction fires (agent-exited: notify) so its counter has a sample.
    let id = app
        .spawn(json!({"project": "demo", "agent": "failing"}))
        .await;
    app.wait_state(&id, "errored").await;
    let metrics = app.metrics().await;
    // (Metrics are process-wide: other tests may have counted too.)
    assert!(
        metrics.contains(r#"flotilla_reactions_total{action="notify",reaction="agent-exited"} "#),
        "{metrics}"
    );
    use flotilla::telemetry as t;
    let exported = [
        t::SESSIONS,
        t::SESSION_TRANSITIONS,
        t::HTTP_REQUESTS,
        t::HTTP_DURATION,
        t::ACTOR_RESTARTS,
        t::BUILD_INFO,
        t::EVENTS,
        t::SESSION_ACTORS,
        t::REACTIONS,
        t::ESCALATIONS,
    ];

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/flotilla.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(String::from))
        .collect();
    assert!(exprs.len() >= 15, "{} queries", exprs.len());
    for want in [
        "flotilla_sessions",
        "flotilla_reactions_total",
        "flotilla_escalations_total",
        "flotilla_github_rate_limit_remaining",
        "flotilla_chat_queue_depth",
        "flotilla_http_request_duration_seconds_bucket",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(want)),
            "no panel shows {want}"
        );
    }
    for e in &exprs {
        for name in e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("flotilla_"))
        {
            let family = name.trim_end_matches("_bucket");
            assert!(
                exported.contains(&family) || PLANNED_METRICS.contains(&name),
                "{name} is neither exported nor planned"
            );
        }
    }
    if !require_tool("promtool") {
        return;
    }
    // promtool parses every query as a recording rule (Grafana's variables filled in).
    let mut rules = String::from("groups:\n  - name: grafana\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let q = e
            .replace("$__rate_interval", "5m")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: flotilla:grafana_{i}\n        expr: {}\n",
            serde_json::to_string(&q).expect("quoted")
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, rules).expect("write rules");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
