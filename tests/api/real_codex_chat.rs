//! The chat bridge end to end with the real `codex` CLI as its assistant (`codex exec --json`),
//! against the scripted Responses API (`tests/support/fake_openai.rs`), pointed at it through
//! `$CODEX_HOME/config.toml` as a user would: messages go in through the HTTP test platform,
//! Codex really runs the scripted command in the conversation's checkout, really resumes its
//! thread for the next message (`codex exec resume <id>`), and a model that keeps failing ends
//! the turn with a reply that says so, not "done". Usage is priced from the price table at
//! `chat.assistant.model` (Codex reports no cost).
//!
//! Runs the CLI from `FLOTILLA_CODEX_BIN` (see [`real_cli`]); under `CI=true` a missing CLI
//! fails. Temp directories live under the target dir: Codex's sandbox helper breaks when `HOME`
//! or `CODEX_HOME` is under `/tmp`. Waits use deadlines, never sleeps.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::chat_driver::ChatDriver;
use crate::fake_openai::{tool_outputs, FakeOpenAi, Step};
use crate::helpers::*;

const MODEL: &str = "gpt-5-codex";
const KEY: &str = "sk-fake-0123456789";

/// An app whose chat assistant is the real `codex exec` pointed at a fake.
struct CodexChat {
    chat: ChatDriver,
    fake: FakeOpenAi,
}

impl std::ops::Deref for CodexChat {
    type Target = ChatDriver;
    fn deref(&self) -> &ChatDriver {
        &self.chat
    }
}

impl CodexChat {
    async fn start() -> Option<CodexChat> {
        let bin = real_cli("codex", "FLOTILLA_CODEX_BIN")?;
        if !require_tool("git") {
            return None;
        }
        let fake = FakeOpenAi::start(Vec::new()).await;
        fake.require_key(KEY);
        let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(&scratch).expect("target tmp");
        let dir = tempfile::Builder::new()
            .prefix("real-codex-chat-")
            .tempdir_in(&scratch)
            .expect("tempdir");
        let base = std::fs::canonicalize(dir.path())
            .expect("canonical")
            .join("chat");
        let home = base.join("home");
        let codex_home = base.join("codex-home");
        std::fs::create_dir_all(&home).expect("mkdir home");
        std::fs::create_dir_all(&codex_home).expect("mkdir codex home");
        // No retries: a failing model must end the turn now, not after Codex's backoff.
        std::fs::write(
            codex_home.join("config.toml"),
            format!(
                r#"model = "{MODEL}"
model_provider = "fake"
check_for_update_on_startup = false

[model_providers.fake]
name = "fake"
base_url = "{}"
env_key = "FAKE_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
"#,
                fake.url()
            ),
        )
        .expect("config.toml");
        let extra = format!(
            "chat:\n  max_concurrent: 4\n  turn_timeout: 120s\n  test_adapter: true\n  \
             allow: {{ test: [tester] }}\n  workspace: {ws}\n  worktrees: {wt}\n  \
             assistant: {{ kind: codex, command: [\"{bin}\"], model: {MODEL}, env: {{ \
             HOME: \"{home}\", CODEX_HOME: \"{codex_home}\", FAKE_KEY: \"{KEY}\" }} }}\n",
            ws = base.join("ws").display(),
            wt = base.join("worktrees").display(),
            bin = bin.display(),
            home = home.display(),
            codex_home = codex_home.display(),
        );
        let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
        let app = spawn_app_guarded(Backend::Sqlite, &agents, &extra, dir).await?;
        Some(CodexChat {
            chat: ChatDriver { app, base },
            fake,
        })
    }
}

/// Every text a request carries (instructions aside): its input items' text parts.
fn input_text(body: &Value) -> String {
    let mut out = String::new();
    for item in body["input"].as_array().into_iter().flatten() {
        for part in item["content"].as_array().into_iter().flatten() {
            if let Some(t) = part["text"].as_str() {
                out.push_str(t);
                out.push('\n');
            }
        }
    }
    out
}

#[actix_web::test]
async fn a_real_codex_chat_turn_runs_a_command_then_resumes_its_thread() {
    let Some(c) = CodexChat::start().await else {
        return;
    };
    let cwd = c.with_codebase("c1").await;
    c.fake.push(vec![
        Step::tool(
            "exec_command",
            json!({"cmd": "printf made > out.txt && echo WROTE-$((20+22))"}),
        ),
        Step::text("Wrote out.txt for you."),
    ]);
    c.send("c1", "Create out.txt containing made").await;
    let reply = c.wait_reply("c1", "Wrote out.txt for you.").await;
    // The default mode (auto-edit: Codex's workspace-write sandbox) lets the turn write its
    // checkout.
    assert_eq!(
        std::fs::read_to_string(cwd.join("out.txt")).ok().as_deref(),
        Some("made"),
        "{reply}"
    );
    assert!(!reply.contains("failed"), "{reply}");
    let turns = c.fake.turn_requests();
    assert_eq!(turns.len(), 2, "one request for the command, one after it");
    assert!(input_text(&turns[0]).contains("Create out.txt containing made"));
    assert!(
        tool_outputs(&turns[1])
            .iter()
            .any(|o| o.contains("WROTE-42")),
        "the command's output went back to the model"
    );
    let thread = c
        .conversation("c1")
        .await
        .resume_id
        .expect("the codex thread id is kept for the next message");

    // Priced at chat.assistant.model from the built-in table: codex exec reports no cost.
    let usage = c.wait_usage(1).await;
    assert_eq!(usage[0]["assistant"], "codex");
    assert_eq!(usage[0]["cost_source"], "price_table", "{}", usage[0]);
    assert!(usage[0]["usage"]["cost_usd"].as_f64().expect("cost") > 0.0);

    // The next message resumes the same thread: the model sees the first exchange.
    c.fake.push(vec![Step::text("You asked for out.txt.")]);
    c.send("c1", "What did I ask for first?").await;
    c.wait_reply("c1", "You asked for out.txt.").await;
    let turns = c.fake.turn_requests();
    assert_eq!(turns.len(), 3);
    let text = input_text(&turns[2]);
    assert!(text.contains("Create out.txt containing made"), "{text}");
    assert!(text.contains("Wrote out.txt for you."), "{text}");
    assert!(text.contains("What did I ask for first?"), "{text}");
    assert_eq!(
        c.conversation("c1").await.resume_id.as_deref(),
        Some(thread.as_str()),
        "codex exec resume keeps the thread id"
    );
}

#[actix_web::test]
async fn a_real_codex_chat_turn_whose_model_fails_says_so_and_the_next_message_works() {
    let Some(c) = CodexChat::start().await else {
        return;
    };
    c.with_codebase("c2").await;
    c.fake.push(vec![Step::error(500)]);
    c.send("c2", "Say something").await;
    let reply = c.wait_reply("c2", "The assistant failed").await;
    assert!(reply.contains("/reset"), "{reply}");
    assert!(
        !c.replies("c2").await.iter().any(|r| r.contains("Done")),
        "a failed turn is not reported as done"
    );
    // The conversation is not stuck: the next message gets an answer.
    c.fake.push(vec![Step::text("Back again.")]);
    c.send("c2", "Try again").await;
    c.wait_reply("c2", "Back again.").await;
}
