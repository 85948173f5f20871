//! The real `claude` CLI, headless (`-p … --output-format stream-json`), against the fake
//! Anthropic API: tools really run, permissions really deny, sessions really resume, and API
//! errors are really retried. Skipped (failed under `CI=true`) without the CLI.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::fake_anthropic::{FakeAnthropic, Step};
use crate::helpers::{make_repo, real_cli};

const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// The real `claude` (see [`real_cli`]).
fn claude_bin() -> Option<PathBuf> {
    real_cli("claude", "FLOTILLA_CLAUDE_BIN")
}

/// A temp dir holding a fresh `HOME` and a git repository.
struct Sandbox {
    _dir: TempDir,
    home: PathBuf,
    repo: PathBuf,
}

fn sandbox() -> Sandbox {
    let dir = TempDir::new().expect("tempdir");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("mkdir home");
    let repo = make_repo(dir.path());
    Sandbox {
        _dir: dir,
        home,
        repo,
    }
}

/// What one CLI run printed.
struct Run {
    lines: Vec<Value>,
    stderr: String,
}

impl Run {
    /// The final `result` line.
    fn result(&self) -> &Value {
        self.lines
            .iter()
            .rev()
            .find(|l| l["type"] == "result")
            .unwrap_or_else(|| panic!("no result line; stderr: {}", self.stderr))
    }

    /// `system`/`api_retry` lines.
    fn retries(&self) -> Vec<&Value> {
        self.lines
            .iter()
            .filter(|l| l["type"] == "system" && l["subtype"] == "api_retry")
            .collect()
    }
}

/// Runs `claude -p <task> --output-format stream-json --verbose <args>` in the sandbox's
/// repository with a clean environment pointing at the fake.
async fn claude(bin: &Path, fake: &FakeAnthropic, sb: &Sandbox, task: &str, args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("-p")
        .arg(task)
        .args(["--output-format", "stream-json", "--verbose"])
        .args(args)
        .current_dir(&sb.repo)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &sb.home)
        .env("ANTHROPIC_BASE_URL", fake.url())
        .env("ANTHROPIC_API_KEY", "sk-ant-fake-0123456789")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let child = cmd.output();
    let out = tokio::time::timeout(CLI_TIMEOUT, child)
        .await
        .unwrap_or_else(|_| panic!("claude did not finish within {CLI_TIMEOUT:?}"))
        .expect("claude runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "claude failed ({}): {stderr}\n{stdout}",
        out.status
    );
    let lines = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    Run { lines, stderr }
}

/// The `tool_result` blocks of a request's last user message.
fn last_tool_results(body: &Value) -> Vec<Value> {
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .expect("a user message");
    last["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "tool_result")
        .cloned()
        .collect()
}

#[actix_web::test]
async fn real_claude_writes_a_file_and_reports_cost() {
    let Some(bin) = claude_bin() else { return };
    let sb = sandbox();
    let target = sb.repo.join("hello.txt");
    let fake = FakeAnthropic::start(vec![
        Step::tool(
            "Write",
            json!({"file_path": target.to_str().expect("utf-8 path"), "content": "hi\n"}),
        ),
        Step::text("Done."),
    ])
    .await;
    fake.require_api_key("sk-ant-fake-0123456789");
    let run = claude(
        &bin,
        &fake,
        &sb,
        "Create hello.txt containing hi",
        &["--permission-mode", "acceptEdits"],
    )
    .await;

    assert_eq!(
        std::fs::read_to_string(&target).expect("hello.txt written"),
        "hi\n"
    );
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2, "one turn for the tool, one for the answer");
    assert_eq!(fake.remaining(), 0);
    assert!(request_text_has(&reqs[0], "Create hello.txt containing hi"));
    let results = last_tool_results(&reqs[1]);
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(results[0]["is_error"] != json!(true), "{results:?}");
    let tool_use_id = reqs[1]["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "assistant"))
        .and_then(|m| m["content"][0]["id"].as_str())
        .expect("the assistant's tool_use is replayed");
    assert_eq!(results[0]["tool_use_id"], tool_use_id);
    assert!(fake
        .last_request_text()
        .contains("File created successfully"));

    let result = run.result();
    assert_eq!(result["subtype"], "success", "{result}");
    assert_eq!(result["result"], "Done.");
    assert_eq!(result["num_turns"], 2);
    assert!(result["total_cost_usd"].as_f64().expect("total_cost_usd") > 0.0);
    let model = reqs[0]["model"].as_str().expect("model");
    let usage = &result["modelUsage"][model];
    assert!(
        usage["costUSD"].as_f64().expect("costUSD") > 0.0,
        "{result}"
    );
    assert_eq!(usage["inputTokens"], 2 * 1200, "{result}");
    assert_eq!(usage["outputTokens"], 2 * 40, "{result}");
    // Every request the CLI made is a main turn under CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC.
    for r in fake.all_requests() {
        assert_eq!(r.path, "/v1/messages?beta=true");
        assert_eq!(r.headers["anthropic-version"], "2023-06-01");
        assert!(r.main);
    }
}

fn request_text_has(body: &Value, needle: &str) -> bool {
    crate::fake_anthropic::request_text(body).contains(needle)
}

#[actix_web::test]
async fn real_claude_default_mode_denies_a_writing_bash_command() {
    let Some(bin) = claude_bin() else { return };
    let sb = sandbox();
    let target = sb.repo.join("x.txt");
    let command = format!("echo hi > {}", target.display());
    let fake = FakeAnthropic::start(vec![
        Step::text_then_tool(
            "Writing the file.",
            "Bash",
            json!({"command": command, "description": "write x.txt"}),
        ),
        Step::text("Could not write it."),
    ])
    .await;
    let run = claude(
        &bin,
        &fake,
        &sb,
        "make x.txt",
        &["--permission-mode", "default"],
    )
    .await;

    assert!(!target.exists(), "the denied command must not run");
    let result = run.result();
    let denials = result["permission_denials"].as_array().expect("denials");
    assert_eq!(denials.len(), 1, "{result}");
    assert_eq!(denials[0]["tool_name"], "Bash");
    assert_eq!(denials[0]["tool_input"]["command"], command.as_str());
    let reqs = fake.wait_for_requests(2, Duration::from_secs(5)).await;
    let results = last_tool_results(&reqs[1]);
    assert_eq!(results[0]["is_error"], true, "{results:?}");
    assert_eq!(result["result"], "Could not write it.");
}

#[actix_web::test]
async fn real_claude_resume_replays_the_earlier_conversation() {
    let Some(bin) = claude_bin() else { return };
    let sb = sandbox();
    let fake = FakeAnthropic::start(vec![Step::text("First answer.")]).await;
    let first = claude(
        &bin,
        &fake,
        &sb,
        "remember the word PELICAN",
        &["--permission-mode", "acceptEdits"],
    )
    .await;
    let session = first.result()["session_id"]
        .as_str()
        .expect("session_id")
        .to_string();

    fake.push(vec![Step::text("Second answer.")]);
    let second = claude(
        &bin,
        &fake,
        &sb,
        "what was the word?",
        &["--permission-mode", "acceptEdits", "--resume", &session],
    )
    .await;
    assert_eq!(second.result()["result"], "Second answer.");
    assert_eq!(second.result()["session_id"], session.as_str());
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    let text = crate::fake_anthropic::request_text(&reqs[1]);
    assert!(text.contains("remember the word PELICAN"), "{text}");
    assert!(text.contains("First answer."), "{text}");
    assert!(fake.last_request_text().contains("what was the word?"));
}

#[actix_web::test]
async fn real_claude_retries_server_errors_and_overload() {
    let Some(bin) = claude_bin() else { return };
    let sb = sandbox();
    let fake = FakeAnthropic::start(vec![
        Step::error(500, "api_error"),
        Step::overloaded(),
        Step::text("ok"),
    ])
    .await;
    let run = claude(
        &bin,
        &fake,
        &sb,
        "hi",
        &["--permission-mode", "acceptEdits"],
    )
    .await;
    assert_eq!(run.result()["result"], "ok");
    assert_eq!(run.result()["is_error"], false);
    assert_eq!(fake.requests().len(), 3, "two errors, then the answer");
    let statuses: Vec<&Value> = run.retries().iter().map(|r| &r["error_status"]).collect();
    assert_eq!(statuses, [&json!(500), &json!(529)]);
    // The retries are the CLI's own: its SDK retry counter stays 0.
    for r in fake.all_requests() {
        assert_eq!(r.headers["x-stainless-retry-count"], "0");
    }
}

#[actix_web::test]
async fn real_claude_waits_out_a_rate_limit_retry_after() {
    let Some(bin) = claude_bin() else { return };
    let sb = sandbox();
    let fake = FakeAnthropic::start(vec![Step::rate_limited(1), Step::text("ok")]).await;
    let run = claude(
        &bin,
        &fake,
        &sb,
        "hi",
        &["--permission-mode", "acceptEdits"],
    )
    .await;
    assert_eq!(run.result()["result"], "ok");
    let all = fake.all_requests();
    assert_eq!(all.len(), 2);
    let gap = all[1].at.duration_since(all[0].at);
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    let retries = run.retries();
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0]["error_status"], 429);
    assert!(retries[0]["retry_delay_ms"].as_u64().expect("delay") >= 1000);
}

#[actix_web::test]
async fn fake_anthropic_validates_and_answers_side_requests() {
    let fake = FakeAnthropic::start(vec![Step::text("main")]).await;
    fake.require_api_key("k");
    let http = reqwest::Client::new();
    let url = format!("{}/v1/messages", fake.url());
    let post = |body: Value, key: Option<&str>| {
        let mut r = http
            .post(&url)
            .header("anthropic-version", "2023-06-01")
            .json(&body);
        if let Some(k) = key {
            r = r.header("x-api-key", k);
        }
        r.send()
    };
    let ok_body =
        json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});

    let r = post(ok_body.clone(), None).await.expect("send");
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("request-id"));
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "authentication_error");

    let r = post(json!({"model": "m", "messages": []}), Some("k"))
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("max_tokens"));

    // A non-streaming side request does not consume the step.
    let r = post(ok_body.clone(), Some("k")).await.expect("send");
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.expect("json");
    assert_eq!(m["type"], "message");
    assert_eq!(m["content"][0]["text"], "OK");
    assert_eq!(fake.remaining(), 1);

    let r = http
        .post(format!("{url}/count_tokens"))
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", "k")
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let c: Value = r.json().await.expect("json");
    assert!(c["input_tokens"].as_u64().expect("count") > 0);

    let r = http
        .get(format!("{}/v1/models", fake.url()))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);

    // A main turn streams the scripted step.
    let mut main = ok_body;
    main["stream"] = json!(true);
    main["tools"] = json!([{"name": "Bash", "input_schema": {"type": "object"}}]);
    let r = post(main, Some("k")).await.expect("send");
    assert_eq!(r.status(), 200);
    let sse = r.text().await.expect("body");
    assert!(sse.starts_with("event: message_start\ndata: "), "{sse}");
    assert!(sse.contains("\"stop_reason\":\"end_turn\""), "{sse}");
    assert!(sse.contains("\"output_tokens\":40"), "{sse}");
    assert!(sse.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(fake.remaining(), 0);
    assert_eq!(fake.all_requests().len(), 6);
}

#[actix_web::test]
async fn fake_anthropic_hang_holds_the_request_until_dropped() {
    let fake = FakeAnthropic::start(vec![Step::Hang]).await;
    let url = format!("{}/v1/messages", fake.url());
    let body = json!({"model": "m", "max_tokens": 10, "stream": true,
        "tools": [{"name": "Bash"}], "messages": [{"role": "user", "content": "hi"}]});
    let send = reqwest::Client::new()
        .post(&url)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send();
    let pending = tokio::time::timeout(Duration::from_millis(300), send).await;
    assert!(pending.is_err(), "a hanging step must not answer");
    assert_eq!(
        fake.wait_for_requests(1, Duration::from_secs(5))
            .await
            .len(),
        1
    );
}
