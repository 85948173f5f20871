//! The chat bridge end to end: the real app with the HTTP test platform
//! (`chat.test_adapter`), real git repositories, and the scripted assistant
//! (`tests/support/scripted_assistant.rs`, speaking claude's stream-json) as the `claude`
//! assistant. Scenarios are those of `reference/remote-coding-agent.md` §11; GitHub issue/PR
//! threads are the `InboundMessage` a GitHub comment would produce (thread `owner/repo#N`,
//! meta `kind`, `closes`, `event`), sent through the inbox. Waits use deadlines, never sleeps.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::server::*;

/// The scripted assistant example, built once when missing or older than its source.
pub fn scripted_assistant_path() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("current exe");
            let debug = exe.parent().and_then(Path::parent).expect("target/debug");
            let p = debug.join("examples").join("scripted_assistant");
            let src =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/scripted_assistant.rs");
            let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            if mtime(&p).is_none() || mtime(&p) < mtime(&src) {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let status = std::process::Command::new(cargo)
                    .args(["build", "--quiet", "--example", "scripted_assistant"])
                    .current_dir(env!("CARGO_MANIFEST_DIR"))
                    .status()
                    .expect("cargo runs");
                assert!(status.success(), "building scripted_assistant failed");
            }
            assert!(p.is_file(), "{} is missing", p.display());
            p
        })
        .clone()
}

/// The `chat:` section for a test: the test platform, `tester` allowed, the scripted
/// assistant logging to `log`, the workspace under `base`. `more` adds `chat:` keys.
pub fn chat_yaml(base: &Path, more: &str) -> String {
    let log = base.join("assistant.log");
    format!(
        "chat:\n  max_concurrent: 10\n  turn_timeout: 60s\n  test_adapter: true\n  \
         allow: {{ test: [tester] }}\n  workspace: {ws}\n  worktrees: {wt}\n  \
         assistant: {{ kind: claude, command: [\"{bin}\"], env: {{ SCRIPTED_LOG: \"{log}\" }} }}\n{more}",
        ws = base.join("ws").display(),
        wt = base.join("worktrees").display(),
        bin = scripted_assistant_path().display(),
        log = log.display(),
    )
}

/// A test app with the chat bridge.
pub struct Chat {
    pub app: TestApp,
    pub base: PathBuf,
}

impl Chat {
    async fn start(more: &str) -> Option<Chat> {
        Chat::start_on(Backend::Sqlite, more).await
    }

    async fn start_on(backend: Backend, more: &str) -> Option<Chat> {
        if !require_tool("git") {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("chat");
        std::fs::create_dir_all(&base).expect("mkdir");
        let extra = chat_yaml(&base, more);
        let app = spawn_app_in(dir, backend, &extra).await?;
        Some(Chat { app, base })
    }

    /// A repository at `<base>/src/acme/widget` (clone of the app's repo) to `/clone`.
    fn upstream(&self) -> PathBuf {
        let p = self.base.join("src").join("acme");
        std::fs::create_dir_all(&p).expect("mkdir");
        let target = p.join("widget");
        if !target.exists() {
            git(
                &p,
                &[
                    "clone",
                    "-q",
                    &self.app.repo.display().to_string(),
                    "widget",
                ],
            );
        }
        target
    }

    async fn send_as(&self, thread: &str, author: &str, text: &str, meta: Value) -> Value {
        let (s, v) = self
            .app
            .post(
                "/api/v1/chat/test/messages",
                json!({"thread": thread, "text": text, "author": author, "meta": meta}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn send(&self, thread: &str, text: &str) -> Value {
        self.send_as(thread, "tester", text, json!({})).await
    }

    async fn replies(&self, thread: &str) -> Vec<String> {
        let (s, v) = self
            .app
            .get(&format!(
                "/api/v1/chat/test/replies?thread={}",
                urlenc(thread)
            ))
            .await;
        assert_eq!(s, 200);
        v["replies"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| r["text"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until a reply of `thread` contains `needle`; returns all replies.
    async fn wait_reply(&self, thread: &str, needle: &str) -> Vec<String> {
        eventually(
            30,
            &format!("a reply in {thread} containing {needle:?}"),
            || async {
                let r = self.replies(thread).await;
                r.iter().any(|t| t.contains(needle)).then_some(r)
            },
        )
        .await
    }

    /// The scripted assistant's log lines.
    fn log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.base.join("assistant.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn starts(&self) -> Vec<Value> {
        self.log()
            .into_iter()
            .filter(|v| v["event"] == "start")
            .collect()
    }

    async fn stats(&self) -> Value {
        self.app.get("/api/v1/chat/stats").await.1
    }

    /// `/clone`s the upstream into the workspace for `thread`.
    async fn with_codebase(&self, thread: &str) {
        let up = self.upstream();
        self.send(thread, &format!("/clone {}", up.display())).await;
        self.wait_reply(thread, "acme/widget").await;
    }

    fn gate(&self, name: &str) -> PathBuf {
        self.base.join(format!("gate-{name}"))
    }
}

fn urlenc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Like `spawn_app_with`, but in a directory the caller prepared; chat turns run under the
/// turn guard.
async fn spawn_app_in(dir: tempfile::TempDir, backend: Backend, extra: &str) -> Option<TestApp> {
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    spawn_app_guarded(backend, &agents, extra, dir).await
}

#[actix_web::test]
async fn messages_of_one_conversation_run_in_order_and_an_error_blocks_nothing() {
    if let Some(c) = Chat::start("").await {
        in_order_and_isolated(c).await;
    }
}

#[actix_web::test]
async fn messages_run_in_order_on_postgres_too() {
    if let Some(c) = Chat::start_on(Backend::Postgres, "").await {
        in_order_and_isolated(c).await;
    }
}

async fn in_order_and_isolated(c: Chat) {
    c.with_codebase("a").await;
    let gate = c.gate("one");
    c.send("a", &format!("one WAIT:{}", gate.display())).await;
    let r = c.send("a", "two FAIL").await;
    assert_eq!(r["position"], 1, "one message ahead: {r}");
    c.send("a", "three").await;
    c.wait_reply("a", "Queued: 1 message").await;
    // Nothing after `one` starts while it runs.
    eventually(10, "one started", || async {
        (c.starts().len() == 1).then_some(())
    })
    .await;
    std::fs::write(&gate, "").expect("gate");
    let replies = c.wait_reply("a", "echo: three").await;
    let prompts: Vec<String> = c
        .starts()
        .iter()
        .map(|v| v["prompt"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(prompts.len(), 3);
    assert!(prompts[0].starts_with("one") && prompts[1].starts_with("two"));
    assert_eq!(prompts[2], "three");
    let failed = replies.iter().position(|t| t.contains("assistant failed"));
    let third = replies.iter().position(|t| t.contains("echo: three"));
    assert!(failed < third, "{replies:?}");
    eventually(10, "nothing active", || async {
        let s = c.stats().await;
        (s["active"] == 0 && s["queued"] == 0).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn at_most_max_concurrent_conversations_run_and_the_rest_wait_in_fifo_order() {
    if !require_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("chat");
    std::fs::create_dir_all(&base).expect("mkdir");
    let extra = chat_yaml(&base, "").replace("max_concurrent: 10", "max_concurrent: 2");
    let Some(app) = spawn_app_in(dir, Backend::Sqlite, &extra).await else {
        return;
    };
    let c = Chat { app, base };
    for t in ["x", "y", "z"] {
        c.with_codebase(t).await;
    }
    for t in ["x", "y", "z"] {
        c.send(t, &format!("hold WAIT:{}", c.gate(t).display()))
            .await;
        if t != "z" {
            let want = if t == "x" { 1 } else { 2 };
            eventually(10, "started", || async {
                (c.starts().len() >= want).then_some(())
            })
            .await;
        }
    }
    c.wait_reply("z", "number 1 in the queue").await;
    let s = c.stats().await;
    assert_eq!(
        (s["active"].as_u64(), s["queued"].as_u64()),
        (Some(2), Some(1)),
        "{s}"
    );
    let metrics = c
        .app
        .client
        .get(format!("{}/metrics", c.app.address))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains("flotilla_chat_queue_depth{platform=\"test\"} 1"),
        "{metrics}"
    );
    assert_eq!(c.starts().len(), 2, "the third waits");
    // The conversations list shows who runs, who waits and at which place, and what they said.
    let (status, v) = c.app.get("/api/v1/conversations").await;
    assert_eq!(status, 200, "{v}");
    let by_thread: std::collections::BTreeMap<String, Value> = v["conversations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["thread"].as_str().unwrap_or_default().to_string(),
                c.clone(),
            )
        })
        .collect();
    for t in ["x", "y"] {
        let row = &by_thread[t];
        assert_eq!(row["running"], true, "{row}");
        assert_eq!(row["queue_position"], Value::Null, "{row}");
        assert_eq!(row["pending"], 1, "{row}");
        assert_eq!(row["last_message"]["status"], "running", "{row}");
    }
    let z = &by_thread["z"];
    assert_eq!(
        (&z["running"], &z["queue_position"], &z["pending"]),
        (&json!(false), &json!(1), &json!(1)),
        "{z}"
    );
    let body = z["last_message"]["body"].as_str().unwrap_or_default();
    assert!(body.starts_with("hold WAIT:"), "{z}");
    std::fs::write(c.gate("x"), "").expect("gate");
    std::fs::write(c.gate("z"), "").expect("gate");
    c.wait_reply("z", "echo: hold").await;
    std::fs::write(c.gate("y"), "").expect("gate");
    c.wait_reply("y", "echo: hold").await;
    eventually(10, "drained", || async {
        let s = c.stats().await;
        (s["active"] == 0 && s["queued"] == 0).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn templates_substitute_exactly_and_run_wrapped_unknown_commands_do_not() {
    let Some(c) = Chat::start("").await else {
        return;
    };
    c.with_codebase("t").await;
    // Scenario 6: the seeded `plan` template, wrapped to execute now.
    c.send("t", "/plan build X").await;
    c.wait_reply("t", "echo:").await;
    let p = c.starts().last().cloned().expect("a turn")["prompt"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        p.contains("`/plan`") && p.contains("# Plan: build X") && p.contains(".flotilla/plans/"),
        "{p}"
    );
    // Scenario 4 through a template added from a file.
    let up = c.base.join("ws/acme/widget/fix.md");
    std::fs::write(
        &up,
        "---\ndescription: Fix things\n---\nFix $1 in $2 ($ARGUMENTS) costs \\$5 $3\n",
    )
    .expect("write");
    c.send("t", "/template-add fix fix.md").await;
    c.wait_reply("t", "Template /fix saved").await;
    c.send("t", "/fix bug app.ts").await;
    eventually(30, "fix ran", || async {
        c.starts()
            .iter()
            .any(|v| {
                v["prompt"]
                    .as_str()
                    .is_some_and(|p| p.contains("Fix bug in app.ts (bug app.ts) costs $5 $3"))
            })
            .then_some(())
    })
    .await;
    c.send("t", "/templates").await;
    c.wait_reply("t", "/fix - Fix things").await;
    // Scenario 7: unknown command, no assistant call.
    let before = c.starts().len();
    c.send("t", "/nope").await;
    c.wait_reply("t", "Unknown command: /nope").await;
    assert_eq!(c.starts().len(), before);
}

#[actix_web::test]
async fn a_fresh_conversation_without_a_codebase_never_calls_the_assistant() {
    let Some(c) = Chat::start("").await else {
        return;
    };
    c.send("fresh", "hello there").await;
    c.wait_reply("fresh", "No codebase configured").await;
    assert!(c.starts().is_empty());
    // Scenario 20: paths stay inside the workspace.
    c.send("fresh", "/setcwd ../../etc").await;
    c.wait_reply("fresh", "Path must be within").await;
    c.with_codebase("fresh").await;
    // From `ws/acme/widget`, three levels up leaves the workspace.
    c.send("fresh", "/load-commands ../../../x").await;
    eventually(30, "the second refusal", || async {
        let r = c.replies("fresh").await;
        (r.iter()
            .filter(|t| t.contains("Path must be within"))
            .count()
            == 2)
            .then_some(())
    })
    .await;
    // Clone URLs with credentials are refused (they would end up in .git/config).
    c.send("fresh", "/clone https://tok@github.com/o/r").await;
    c.wait_reply("fresh", "credentials in clone URLs are refused")
        .await;
}

#[actix_web::test]
async fn the_router_template_takes_plain_messages() {
    let Some(c) = Chat::start("").await else {
        return;
    };
    c.with_codebase("r").await;
    std::fs::write(
        c.base.join("ws/acme/widget/router.md"),
        "Route this request: $ARGUMENTS",
    )
    .expect("write");
    c.send("r", "/template-add router router.md").await;
    c.wait_reply("r", "Template /router saved").await;
    c.send("r", "why does login fail").await;
    c.wait_reply("r", "echo: Route this request: why does login fail")
        .await;
    c.send("r", "/status").await;
    c.wait_reply("r", "Last command: router").await;
}

#[actix_web::test]
async fn the_resume_id_is_kept_per_conversation_and_reset_starts_fresh() {
    let Some(c) = Chat::start("").await else {
        return;
    };
    c.with_codebase("s").await;
    c.send("s", "first").await;
    c.wait_reply("s", "echo: first").await;
    c.send("s", "second").await;
    c.wait_reply("s", "echo: second").await;
    let starts = c.starts();
    assert!(starts[0]["resume"].is_null());
    let sid = starts[1]["resume"]
        .as_str()
        .expect("second resumes")
        .to_string();
    assert!(sid.starts_with("sess-"));
    c.send("s", "/reset").await;
    c.wait_reply("s", "Session reset").await;
    c.send("s", "third").await;
    c.wait_reply("s", "echo: third").await;
    assert!(c.starts()[2]["resume"].is_null(), "fresh after /reset");
    // Scenario 11: plan-feature → execute starts a fresh session.
    c.send(
        "s",
        "/command-set plan-feature cmds/plan-feature.md Plan $1",
    )
    .await;
    c.wait_reply("s", "Command plan-feature registered").await;
    c.send("s", "/command-set execute cmds/execute.md Execute it")
        .await;
    c.wait_reply("s", "Command execute registered").await;
    c.send("s", "/command-invoke plan-feature login").await;
    c.wait_reply("s", "Plan login").await;
    c.send("s", "/command-invoke execute").await;
    c.wait_reply("s", "Execute it").await;
    let starts = c.starts();
    assert!(!starts[3]["resume"].is_null(), "plan-feature resumes");
    assert!(
        starts[4]["resume"].is_null(),
        "execute after plan-feature starts fresh"
    );
}

#[actix_web::test]
async fn a_vanished_worktree_falls_back_to_the_main_checkout() {
    let Some(c) = Chat::start("").await else {
        return;
    };
    c.with_codebase("w").await;
    c.send("w", "/worktree create feat").await;
    let r = c.wait_reply("w", "Worktree created at").await;
    let path = c.base.join("worktrees/widget/feat");
    assert!(path.join(".git").exists(), "{r:?}");
    c.send("w", "in the worktree").await;
    c.wait_reply("w", "echo: in the worktree").await;
    let cwd = |i: usize| c.starts()[i]["cwd"].as_str().unwrap_or("").to_string();
    assert!(cwd(0).ends_with("worktrees/widget/feat"));
    std::fs::remove_dir_all(&path).expect("rm");
    c.send("w", "after removal").await;
    c.wait_reply("w", "echo: after removal").await;
    assert!(cwd(1).ends_with("ws/acme/widget"), "{}", cwd(1));
    assert!(
        c.starts()[1]["resume"].is_null(),
        "the session ended with the worktree"
    );
    c.send("w", "/status").await;
    c.wait_reply("w", "Worktree: none").await;
}

#[actix_web::test]
async fn batch_mode_sends_a_notice_and_one_answer_stream_mode_edits_one_message() {
    let Some(c) = Chat::start("").await else {
        return;
    };
    c.with_codebase("b").await;
    let before = c.replies("b").await.len();
    c.send("b", "TOOLS please").await;
    let r = c.wait_reply("b", "Done").await;
    assert_eq!(r.len() - before, 2, "{r:?}");
    assert_eq!(r[before], "Flotilla is on the case...");
    assert_eq!(r[before + 1], "Plan:\n\nDone\n\n_Tools used: BASH_");

    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("chat");
    std::fs::create_dir_all(&base).expect("mkdir");
    let extra = chat_yaml(
        &base,
        "  reply_modes: { test: stream }\n  stream_interval: 1ms\n",
    );
    let Some(app) = spawn_app_in(dir, Backend::Sqlite, &extra).await else {
        return;
    };
    let c = Chat { app, base };
    c.with_codebase("s").await;
    let before = c.replies("s").await.len();
    c.send("s", "TOOLS please").await;
    let r = c.wait_reply("s", "Done").await;
    assert_eq!(r.len() - before, 1, "one message, edited: {r:?}");
    assert!(r[before].starts_with("Plan:"));
}

#[actix_web::test]
async fn an_error_result_fails_the_turn_and_the_reply_still_names_the_refused_tools() {
    let Some(c) = Chat::start("").await else {
        return;
    };
    c.with_codebase("r").await;
    c.send("r", "REFUSED please").await;
    let r = c.wait_reply("r", "The assistant failed").await;
    let answer = r
        .iter()
        .find(|t| t.contains("Tried."))
        .unwrap_or_else(|| panic!("the text before the error is kept: {r:?}"));
    assert!(
        answer.contains("🚫 Claude was not allowed to:\n• Bash `make deploy`"),
        "{answer}"
    );
    assert!(
        answer.contains("permission mode is `auto-edit`"),
        "{answer}"
    );
    let failed = r
        .iter()
        .find(|t| t.contains("The assistant failed"))
        .expect("failure reply");
    assert!(failed.contains("error_max_turns"), "{failed}");
    // The cost the assistant reported is recorded even for a failed turn.
    let usage = eventually(30, "a chat.turn_usage event", || async {
        let events = c.app.store.events_after(0, 1000).await.expect("events");
        events
            .into_iter()
            .find(|e| e.kind == "chat.turn_usage")
            .map(|e| e.data)
    })
    .await;
    assert_eq!(usage["usage"]["cost_usd"], 0.25);
    assert_eq!(usage["cost_source"], "agent");
    assert_eq!(usage["conversation"], "test:r");
}

#[actix_web::test]
async fn turns_priced_from_the_table_count_toward_the_chat_budget_which_then_refuses_turns() {
    // 10 input tokens at $10,000 and 5 output at $20,000 per million: $0.20 a turn.
    let more = "  budget_usd: 0.3\npricing:\n  \"scripted-*\": { input: 10000, output: 20000 }\n";
    let Some(c) = Chat::start(more).await else {
        return;
    };
    let usage_events = || async {
        let events = c.app.store.events_after(0, 1000).await.expect("events");
        events
            .into_iter()
            .filter(|e| e.kind == "chat.turn_usage")
            .map(|e| e.data)
            .collect::<Vec<_>>()
    };
    c.with_codebase("b").await;
    c.send("b", "NOCOST one").await;
    c.wait_reply("b", "echo: NOCOST one").await;
    let first = eventually(30, "the first turn's usage", || async {
        usage_events().await.into_iter().next()
    })
    .await;
    assert_eq!(first["cost_source"], "config", "{first}");
    assert_eq!(first["usage"]["model"], "scripted-model", "{first}");
    let cost = first["usage"]["cost_usd"].as_f64().expect("priced");
    assert!((cost - 0.2).abs() < 1e-9, "{first}");
    // Under the budget: the second turn runs, and crosses it.
    c.send("b", "NOCOST two").await;
    c.wait_reply("b", "echo: NOCOST two").await;
    c.wait_reply("b", "has now spent $0.40 of its $0.30 budget")
        .await;
    // Spent: the next turn is refused with a reply and the assistant never runs.
    c.send("b", "three").await;
    let r = c.wait_reply("b", "no more assistant turns here").await;
    assert!(r.iter().any(|t| t.contains("$0.40 of its $0.30")), "{r:?}");
    assert!(!r.iter().any(|t| t.contains("echo: three")), "{r:?}");
    assert_eq!(c.starts().len(), 2, "{:?}", c.starts());
    // Commands still work; another conversation has its own budget.
    c.send("b", "/status").await;
    c.with_codebase("other").await;
    c.send("other", "NOCOST MODEL:mystery-1 four").await;
    c.wait_reply("other", "echo: NOCOST MODEL:mystery-1 four")
        .await;
    // A model without a price: the cost is unknown and says so, never 0.
    let unknown = eventually(30, "the unpriced turn's usage", || async {
        usage_events()
            .await
            .into_iter()
            .find(|e| e["conversation"] == "test:other")
    })
    .await;
    assert_eq!(unknown["cost_source"], "unpriced", "{unknown}");
    assert!(unknown["usage"]["cost_usd"].is_null(), "{unknown}");
    assert_eq!(
        unknown["unpriced_models"],
        json!(["mystery-1"]),
        "{unknown}"
    );
}

#[actix_web::test]
async fn cancel_kills_the_running_turn_and_the_timeout_stops_a_slow_one() {
    let Some(c) = Chat::start("").await else {
        return;
    };
    c.with_codebase("k").await;
    c.send("k", "slow SLEEP:60").await;
    let pid = eventually(10, "slow turn started", || async {
        c.starts().first().and_then(|v| v["pid"].as_i64())
    })
    .await;
    c.send("k", "/cancel").await;
    c.wait_reply("k", "⏹ Cancelled.").await;
    c.wait_reply("k", "Cancelled the running turn").await;
    eventually(10, "assistant killed", || async {
        (!alive(pid as i32)).then_some(())
    })
    .await;
    c.send("k", "after cancel").await;
    c.wait_reply("k", "echo: after cancel").await;

    // The turn timeout (60s) runs on the app's clock: once the slow turn has started, moving
    // the clock past it stops the turn without waiting a minute.
    c.with_codebase("t").await;
    let before = c.starts().len();
    c.send("t", "slow SLEEP:60").await;
    let pid = eventually(10, "second slow turn started", || async {
        c.starts().get(before).and_then(|v| v["pid"].as_i64())
    })
    .await;
    assert!(
        c.replies("t")
            .await
            .iter()
            .all(|r| !r.contains("took longer")),
        "not timed out before the clock moved"
    );
    c.app.clock.advance(std::time::Duration::from_secs(61));
    c.wait_reply("t", "took longer than 1m").await;
    eventually(10, "timed-out assistant killed", || async {
        (!alive(pid as i32)).then_some(())
    })
    .await;
    c.send("t", "next").await;
    c.wait_reply("t", "echo: next").await;
}

#[actix_web::test]
async fn authors_outside_the_allowlist_are_dropped_before_storage() {
    let Some(c) = Chat::start("").await else {
        return;
    };
    let r = c.send_as("q", "mallory", "/status", json!({})).await;
    assert_eq!(r["new"], false);
    c.send("q", "/help").await;
    let replies = c.wait_reply("q", "Commands:").await;
    assert_eq!(
        replies.len(),
        1,
        "only the allowed author was served: {replies:?}"
    );
    let (_, list) = c.app.get("/api/v1/conversations").await;
    assert!(list.to_string().contains("test:q"));
    // The assistant's environment is scrubbed: nothing but PATH, HOME, LANG and the listed.
    c.with_codebase("q").await;
    c.send("q", "ENV").await;
    let r = c.wait_reply("q", "env: ").await;
    let env = r
        .iter()
        .find(|t| t.starts_with("env: "))
        .cloned()
        .unwrap_or_default();
    for name in env.trim_start_matches("env: ").split(',') {
        assert!(
            ["PATH", "HOME", "LANG", "SCRIPTED_LOG"].contains(&name),
            "unexpected variable {name}"
        );
    }
}

#[actix_web::test]
async fn spawn_starts_a_fleet_session_whose_notifications_come_back_to_the_chat() {
    if !require_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("chat");
    std::fs::create_dir_all(&base).expect("mkdir");
    let extra = format!(
        "{}notifiers:\n  chatback: {{ kind: chat }}\ndefaults: {{ notifiers: [chatback] }}\n",
        chat_yaml(&base, "")
    );
    let Some(app) = spawn_app_in(dir, Backend::Sqlite, &extra).await else {
        return;
    };
    let c = Chat { app, base };
    c.send("f", "/spawn demo add a --verbose flag").await;
    c.wait_reply("f", "Started session demo-1 (demo).").await;
    assert_eq!(
        c.app
            .store
            .conversation_for_session("demo-1")
            .await
            .expect("link"),
        Some("test:f".to_string())
    );
    c.send("f", "/fleet").await;
    c.wait_reply("f", "demo-1").await;
    c.send("f", "/spawn nope do it").await;
    c.wait_reply("f", "Cannot spawn").await;
    // The return path: an agent that exits fires `agent-exited` (notify, urgent), routed to
    // the `chat` notifier, which posts into the conversation the session came from.
    c.send("f", "/spawn demo --agent failing break things")
        .await;
    c.wait_reply("f", "Started session demo-2 (demo).").await;
    c.wait_reply("f", "🔔 demo-2 (urgent)").await;
    // The same /spawn twice, the second sent before the first ran: two sessions (only a
    // message run again after a crash answers with the session it started).
    c.send("f", "/spawn demo add a --quiet flag").await;
    c.send("f", "/spawn demo add a --quiet flag").await;
    c.wait_reply("f", "Started session demo-3 (demo).").await;
    c.wait_reply("f", "Started session demo-4 (demo).").await;
}

#[actix_web::test]
async fn github_issue_and_pr_threads_share_worktrees_and_clean_up_in_order() {
    let Some(c) = Chat::start("").await else {
        return;
    };
    let up = c.upstream();
    let meta = |kind: &str, extra: Value| {
        let mut m = json!({"kind": kind, "repo_url": up.display().to_string(), "base": "main"});
        if let (Some(o), Some(e)) = (m.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                o.insert(k.clone(), v.clone());
            }
        }
        m
    };
    // Scenario 17: the first comment creates codebase and worktree `issue-7`.
    c.send_as(
        "acme/widget#7",
        "tester",
        "/status",
        meta("issue", json!({})),
    )
    .await;
    c.wait_reply("acme/widget#7", "Codebase: acme/widget").await;
    let wt = c.base.join("worktrees/widget/issue-7");
    assert!(wt.join(".git").exists());
    let branch = git(&wt, &["rev-parse", "--abbrev-ref", "HEAD"]);
    assert_eq!(branch.trim(), "issue-7");
    c.send_as("acme/widget#7", "tester", "hello", meta("issue", json!({})))
        .await;
    c.wait_reply("acme/widget#7", "echo: hello").await;
    assert!(c.starts()[0]["cwd"]
        .as_str()
        .unwrap_or("")
        .ends_with("issue-7"));
    // Scenario 18: PR #8 closing #7 shares its worktree; closing the PR keeps it.
    c.send_as(
        "acme/widget#8",
        "tester",
        "/status",
        meta("pr", json!({"closes": "7"})),
    )
    .await;
    c.wait_reply("acme/widget#8", "issue-7").await;
    assert!(!c.base.join("worktrees/widget/pr-8").exists());
    c.send_as(
        "acme/widget#8",
        "tester",
        "closed",
        meta("pr", json!({"event": "closed"})),
    )
    .await;
    eventually(30, "PR detached", || async {
        let (_, v) = c
            .app
            .get("/api/v1/conversations/test:acme%2Fwidget%238")
            .await;
        v["worktree"].is_null().then_some(())
    })
    .await;
    assert!(wt.exists(), "#7 still uses it");
    c.send_as(
        "acme/widget#7",
        "tester",
        "closed",
        meta("issue", json!({"event": "closed"})),
    )
    .await;
    eventually(30, "worktree removed", || async {
        (!wt.exists()).then_some(())
    })
    .await;
    // A PR of its own gets `pr-N`, cut from the PR's head (`pull/N/head`, as forks need).
    git(&up, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(up.join("feature.txt"), "f\n").expect("write");
    git(&up, &["add", "."]);
    git(&up, &["commit", "-q", "-m", "feature"]);
    git(&up, &["update-ref", "refs/pull/10/head", "feature"]);
    git(&up, &["checkout", "-q", "main"]);
    let head = git(&up, &["rev-parse", "feature"]);
    c.send_as("acme/widget#10", "tester", "/status", meta("pr", json!({})))
        .await;
    c.wait_reply("acme/widget#10", "pr-10").await;
    let pr = c.base.join("worktrees/widget/pr-10");
    assert_eq!(git(&pr, &["rev-parse", "HEAD"]), head);
    // Scenario 19: a failing `git worktree add` explains and never calls the assistant.
    std::fs::create_dir_all(c.base.join("worktrees/widget/issue-9/junk")).expect("mkdir");
    let before = c.starts().len();
    c.send_as(
        "acme/widget#9",
        "tester",
        "fix it",
        meta("issue", json!({})),
    )
    .await;
    c.wait_reply("acme/widget#9", "Could not prepare a worktree")
        .await;
    assert_eq!(c.starts().len(), before);
}

#[actix_web::test]
async fn kill_dash_nine_with_thirty_queued_messages_loses_none_and_keeps_order() {
    if !require_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("chat");
    std::fs::create_dir_all(&base).expect("mkdir");
    let extra = chat_yaml(&base, "").replace("max_concurrent: 10", "max_concurrent: 2");
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    let s = Scratch::with_agents(dir, &agents, &extra);
    let mut server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    let client = http_client();
    let post = |text: String, thread: String| {
        let client = client.clone();
        let url = format!("{}/api/v1/chat/test/messages", server.address);
        async move {
            let r = client
                .post(url)
                .bearer_auth(TOKEN)
                .json(&json!({"thread": thread, "text": text, "author": "tester"}))
                .send()
                .await
                .expect("post");
            assert_eq!(r.status().as_u16(), 200);
        }
    };
    // Every conversation gets a directory first (plain messages need one).
    let ws = base.join("ws");
    std::fs::create_dir_all(&ws).expect("ws");
    for t in 0..5 {
        post(format!("/setcwd {}", ws.display()), format!("c{t}")).await;
    }
    // Slow turns: the kill lands while most of the 30 are still queued.
    for i in 0..6 {
        for t in 0..5 {
            post(format!("m{t}-{i} SLEEP:1"), format!("c{t}")).await;
        }
    }
    let log = base.join("assistant.log");
    let read = || -> Vec<Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    eventually(30, "some turns ran", || async {
        (read().iter().filter(|v| v["event"] == "end").count() >= 2).then_some(())
    })
    .await;
    server.kill9();
    // What was running at the kill may run again (documented); everything else exactly once.
    let db = format!("sqlite://{}/flotilla.db", s.home.display());
    let store = flotilla::store::open(&db).await.expect("store");
    let mut running = Vec::new();
    for t in 0..5 {
        for m in store
            .pending_chat_messages(&format!("test:c{t}"))
            .await
            .expect("pending")
        {
            if m.status == flotilla::store::MessageStatus::Running {
                running.push(m.body.clone());
            }
        }
    }
    drop(store);
    let mut server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    // A message run again is told so first; it is the same message.
    let note = "Note from Flotilla: this message was already being answered";
    let (ends, noted) = loop {
        let prompts: Vec<String> = read()
            .into_iter()
            .filter(|v| v["event"] == "end")
            .filter_map(|v| v["prompt"].as_str().map(str::to_string))
            .collect();
        let noted: Vec<String> = prompts
            .iter()
            .filter(|p| p.starts_with(note))
            .filter_map(|p| p.split_once("\n\n---\n\n").map(|(_, m)| m.to_string()))
            .collect();
        let ends: Vec<String> = prompts
            .into_iter()
            .map(|p| match p.split_once("\n\n---\n\n") {
                Some((_, m)) if p.starts_with(note) => m.to_string(),
                _ => p,
            })
            .collect();
        let distinct: std::collections::BTreeSet<&String> = ends.iter().collect();
        if distinct.len() == 30 {
            break (ends, noted);
        }
        if tokio::time::Instant::now() > deadline {
            // Say what is missing and where the store thinks it is.
            let store = flotilla::store::open(&db).await.expect("store");
            let mut pending = Vec::new();
            for t in 0..5 {
                for m in store
                    .pending_chat_messages(&format!("test:c{t}"))
                    .await
                    .expect("pending")
                {
                    pending.push(format!("{} {:?}", m.body, m.status));
                }
            }
            let log = std::fs::read_to_string(s.dir.path().join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "not all 30 processed: {} distinct ends; running at kill {running:?}; \
                 pending now {pending:?}; server log tail {tail:#?}",
                distinct.len()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // Only a message that was running at the kill runs again.
    for p in &noted {
        assert!(
            running.contains(p),
            "{p} ran again but was not running: {running:?}"
        );
    }
    for t in 0..5 {
        let mine: Vec<&String> = ends
            .iter()
            .filter(|p| p.starts_with(&format!("m{t}-")))
            .collect();
        let mut dedup = mine.clone();
        dedup.dedup();
        let expected: Vec<String> = (0..6).map(|i| format!("m{t}-{i} SLEEP:1")).collect();
        assert_eq!(
            dedup.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            expected.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "in order within c{t}"
        );
        for p in &mine {
            let n = mine.iter().filter(|q| q == &p).count();
            let allowed = if running.contains(p) { 2 } else { 1 };
            assert!(n <= allowed, "{p} ran {n} times");
        }
    }
    let (_, stats) = {
        let r = client
            .get(format!("{}/api/v1/chat/stats", server.address))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("stats");
        (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
    };
    assert!(stats["queued"] == 0, "{stats}");
    server.kill9();
}

#[actix_web::test]
async fn an_idle_conversation_actor_stops_and_comes_back_from_the_store() {
    let Some(c) = Chat::start("  idle_after: 200ms\n").await else {
        return;
    };
    c.send("i", "/help").await;
    c.wait_reply("i", "Commands:").await;
    eventually(30, "the idle actor stopped", || async {
        (c.stats().await["actors"] == 0).then_some(())
    })
    .await;
    c.send("i", "/getcwd").await;
    c.wait_reply("i", "Working directory: not set").await;
    assert_eq!(c.replies("i").await.len(), 2);
}

#[actix_web::test]
async fn a_plain_reply_in_the_thread_answers_the_session_that_asked_there() {
    if !require_tool("git") || !require_tool("tmux") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("chat");
    std::fs::create_dir_all(&base).expect("mkdir");
    // The scripted agent as claude-code on tmux: "ASK" makes it ask before going on.
    let (agents, project) = crate::fleet_tmux::config(dir.path(), "", "");
    let extra = format!(
        "{project}{}notifiers:\n  chatback: {{ kind: chat }}\ndefaults: {{ notifiers: [chatback] }}\n",
        chat_yaml(&base, "")
    );
    let Some(app) = spawn_app_guarded(Backend::Sqlite, &agents, &extra, dir).await else {
        return;
    };
    let _tmux = crate::fleet_tmux::TmuxGuard(flotilla::app::tmux_socket(&app.home));
    let c = Chat { app, base };
    c.send("f", "/spawn demo ASK before deleting").await;
    c.wait_reply("f", "Started session demo-1 (demo).").await;
    c.app.wait_state("demo-1", "needs_input").await;
    // The question comes to the thread; the reply there is the answer.
    c.wait_reply("f", "Reply here to answer it.").await;
    c.send("f", "y").await;
    // The confirmation names the question answered.
    c.wait_reply("f", "Answered demo-1: y (to: ").await;
    let s = c.app.wait_state("demo-1", "working").await;
    assert_eq!(s["reason"], "input_answered", "{s}");
    // Nothing waits now: a plain message is an ordinary chat turn again, and /answer says so.
    c.send("f", "/answer demo-1 y").await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = c.replies("f").await;
        if r.iter().any(|t| t.contains("does not wait for an answer")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "replies: {r:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
