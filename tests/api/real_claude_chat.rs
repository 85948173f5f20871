//! The chat bridge end to end with the real `claude` CLI as its assistant (`claude -p …
//! --output-format stream-json`), against the fake Anthropic API: messages go in through the
//! HTTP test platform, the CLI really runs its tools in the conversation's checkout, really
//! resumes its session for the next message, really refuses what the permission mode does
//! not allow, and reports its own cost. Skipped without the CLI; under `CI=true` a missing CLI
//! fails. Waits use deadlines, never sleeps.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::chat_driver::ChatDriver;
use crate::fake_anthropic::{request_text, FakeAnthropic, Step};
use crate::helpers::*;

pub(crate) const KEY: &str = "sk-ant-fake-0123456789";

/// The real `claude` (see [`real_cli`]).
fn claude_bin() -> Option<PathBuf> {
    real_cli("claude", "FLOTILLA_CLAUDE_BIN")
}

/// An app whose chat assistant is the real CLI pointed at a fake.
struct RealChat {
    chat: ChatDriver,
    fake: FakeAnthropic,
}

impl std::ops::Deref for RealChat {
    type Target = ChatDriver;
    fn deref(&self) -> &ChatDriver {
        &self.chat
    }
}

impl RealChat {
    /// `mode`: the `chat.assistant.permission_mode` to set, `None` for the default.
    async fn start(mode: Option<&str>) -> Option<RealChat> {
        let bin = claude_bin()?;
        if !require_tool("git") {
            return None;
        }
        let fake = FakeAnthropic::start(Vec::new()).await;
        fake.require_api_key(KEY);
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("chat");
        let home = base.join("claude-home");
        std::fs::create_dir_all(&home).expect("mkdir home");
        let mode = mode
            .map(|m| format!("permission_mode: {m}, "))
            .unwrap_or_default();
        let extra = format!(
            "chat:\n  max_concurrent: 4\n{}",
            claude_chat_yaml(&bin, &fake, &base, &home, &mode)
        );
        let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
        let app = spawn_app_guarded(Backend::Sqlite, &agents, &extra, dir).await?;
        Some(RealChat {
            chat: ChatDriver { app, base },
            fake,
        })
    }
}

/// The `chat:` keys (after `chat:`) of the bridge with the real `claude` at `bin` as its
/// assistant, talking to `model` with its home at `home` (`mode`: more assistant keys, e.g.
/// `permission_mode: x, `); the test platform with `tester` allowed, the paths under `base`.
pub(crate) fn claude_chat_yaml(
    bin: &Path,
    model: &FakeAnthropic,
    base: &Path,
    home: &Path,
    mode: &str,
) -> String {
    format!(
        "  turn_timeout: 120s\n  test_adapter: true\n  allow: {{ test: [tester] }}\n  \
         workspace: {ws}\n  worktrees: {wt}\n  \
         assistant: {{ kind: claude, command: [\"{bin}\"], {mode}env: {{ HOME: \"{home}\", \
         ANTHROPIC_BASE_URL: \"{url}\", ANTHROPIC_API_KEY: \"{KEY}\", \
         CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: \"1\" }} }}\n",
        ws = base.join("ws").display(),
        wt = base.join("worktrees").display(),
        bin = bin.display(),
        home = home.display(),
        url = model.url(),
    )
}

/// The `cost-state` entries the CLI wrote in its own session log (`~/.claude/projects/<cwd>/
/// <session>.jsonl`) for `session`, oldest first: the CLI's figures, read apart from its
/// stream-json output.
fn session_cost_states(home: &Path, session: &str) -> Vec<Value> {
    let root = home.join(".claude").join("projects");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let log = dir.path().join(format!("{session}.jsonl"));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        out.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["type"] == "cost-state" && v["sessionId"] == session),
        );
    }
    out
}

#[actix_web::test]
async fn a_real_claude_chat_turn_writes_a_file_then_resumes_and_records_the_cost_it_reported() {
    let Some(c) = RealChat::start(None).await else {
        return;
    };
    let home = c.base.join("claude-home");
    let cwd = c.with_codebase("t1").await;
    let target = cwd.join("hello.txt");
    c.fake.push(vec![
        Step::tool(
            "Write",
            json!({"file_path": target.to_str().expect("utf-8 path"), "content": "hi\n"}),
        ),
        Step::text("Wrote hello.txt for you."),
    ]);
    c.send("t1", "Create hello.txt containing hi").await;
    let reply = c.wait_reply("t1", "Wrote hello.txt for you.").await;
    // (a) The default permission mode (auto-edit) lets a chat turn edit its checkout.
    assert_eq!(
        std::fs::read_to_string(&target).expect("hello.txt written"),
        "hi\n"
    );
    assert!(!reply.contains("not allowed"), "{reply}");
    let reqs = c.fake.requests();
    assert_eq!(
        reqs.len(),
        2,
        "one request for the tool, one for the answer"
    );
    assert!(request_text(&reqs[0]).contains("Create hello.txt containing hi"));
    assert!(c
        .fake
        .last_request_text()
        .contains("File created successfully"));
    let session = c.conversation("t1").await.resume_id.expect("resume id");

    // (d) The recorded cost is the one the CLI reported, not one priced here.
    let usage = c.wait_usage(1).await;
    let first = &usage[0];
    assert_eq!(first["conversation"], "test:t1");
    assert_eq!(first["assistant"], "claude");
    assert_eq!(first["cost_source"], "agent");
    assert_eq!(first["session"], session.as_str());
    let states = session_cost_states(&home, &session);
    let reported = states.last().expect("the CLI logged its cost");
    assert!(reported["totalCostUSD"].as_f64().expect("totalCostUSD") > 0.0);
    assert_eq!(
        first["usage"]["cost_usd"], reported["totalCostUSD"],
        "{states:?}"
    );
    let model = reqs[0]["model"].as_str().expect("model");
    let by_model = &reported["modelUsage"][model];
    assert_eq!(first["usage"]["input_tokens"], by_model["inputTokens"]);
    assert_eq!(first["usage"]["output_tokens"], by_model["outputTokens"]);
    assert_eq!(first["usage"]["input_tokens"], 2 * 1200, "the fake's usage");

    // (b) A second message resumes the same session: the model sees the first exchange.
    c.fake.push(vec![Step::text("You asked for hello.txt.")]);
    c.send("t1", "What did I ask for first?").await;
    c.wait_reply("t1", "You asked for hello.txt.").await;
    let reqs = c.fake.requests();
    assert_eq!(reqs.len(), 3);
    let text = request_text(&reqs[2]);
    assert!(text.contains("Create hello.txt containing hi"), "{text}");
    assert!(text.contains("Wrote hello.txt for you."), "{text}");
    assert!(text.contains("What did I ask for first?"), "{text}");
    assert_eq!(
        c.conversation("t1").await.resume_id.as_deref(),
        Some(session.as_str()),
        "claude -p --resume keeps the session id"
    );
    let usage = c.wait_usage(2).await;
    let second = &usage[1];
    assert_eq!(second["session"], session.as_str());
    // (d) again: a resumed turn is charged what it added; the session's running total is the
    // CLI's too.
    let states = session_cost_states(&home, &session);
    assert_eq!(states.len(), 2, "{states:?}");
    let total = |i: usize| states[i]["totalCostUSD"].as_f64().expect("totalCostUSD");
    let turn_cost = second["usage"]["cost_usd"].as_f64().expect("cost_usd");
    assert!(
        (turn_cost - (total(1) - total(0))).abs() < 1e-9,
        "{turn_cost} vs {states:?}"
    );
    assert_eq!(
        second["usage"]["session_cost_usd"],
        states[1]["totalCostUSD"]
    );
    assert_eq!(
        second["usage"]["input_tokens"], 1200,
        "one request this turn"
    );
    assert_eq!(second["usage"]["output_tokens"], 40);
}

#[actix_web::test]
async fn a_real_claude_chat_turn_in_default_mode_names_what_the_cli_refused() {
    let Some(c) = RealChat::start(Some("default")).await else {
        return;
    };
    let cwd = c.with_codebase("t2").await;
    let x = cwd.join("x.txt");
    let y = cwd.join("y.txt");
    let command = format!("echo hi > {}", x.display());
    c.fake.push(vec![
        Step::text_then_tool(
            "Writing the files.",
            "Bash",
            json!({"command": command, "description": "write x.txt"}),
        ),
        Step::tool(
            "Write",
            json!({"file_path": y.to_str().expect("utf-8 path"), "content": "y\n"}),
        ),
        Step::text("Could not write them."),
    ]);
    c.send("t2", "make x.txt and y.txt").await;
    let reply = c.wait_reply("t2", "was not allowed to").await;
    // (c) Headless `default` refuses the edits, and the reply says so instead of "done".
    assert!(!x.exists() && !y.exists(), "refused tools must not run");
    assert!(reply.contains("Could not write them."), "{reply}");
    assert!(reply.contains("🚫 Claude was not allowed to:"), "{reply}");
    assert!(reply.contains(&format!("Bash `{command}`")), "{reply}");
    assert!(reply.contains(&format!("Write {}", y.display())), "{reply}");
    assert!(reply.contains("permission mode is `default`"), "{reply}");
    assert!(reply.contains("permission_mode: auto-edit"), "{reply}");
    // The model was told too: both tool results are errors.
    let reqs = c.fake.wait_for_requests(3, Duration::from_secs(5)).await;
    for r in &reqs[1..] {
        let last = r["messages"]
            .as_array()
            .and_then(|m| m.last())
            .expect("a last message");
        let results: Vec<&Value> = last["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == "tool_result")
            .collect();
        assert!(results.iter().all(|b| b["is_error"] == true), "{results:?}");
    }
    // The message counts as handled (the user was told), and its cost is still recorded.
    let usage = c.wait_usage(1).await;
    assert_eq!(usage[0]["cost_source"], "agent");
    assert!(usage[0]["usage"]["cost_usd"].as_f64().expect("cost") > 0.0);
}
