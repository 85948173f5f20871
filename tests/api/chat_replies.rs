//! A chat message's final reply is stored with the message's status and posted from there:
//! a platform that fails for longer than one call's retries gets it later instead of never,
//! and a node killed with `-9` while the reply waits posts it after the restart without
//! running the turn again.

use std::path::Path;

use serde_json::Value;

use crate::chat_platforms::telegram_assistant_app;
use crate::fake_telegram::FakeTelegram;
use crate::helpers::*;
use crate::server::*;

/// The bot's messages in chat 555 that answer `tag` (the scripted assistant's echo).
fn answers(tg: &FakeTelegram, tag: &str) -> Vec<String> {
    tg.sent()
        .into_iter()
        .map(|m| m.text)
        .filter(|t| t.contains(&format!("echo: {tag}")))
        .collect()
}

#[actix_web::test]
async fn a_reply_the_platform_refuses_past_a_calls_retries_is_posted_once_it_recovers() {
    if !require_tool("git") {
        return;
    }
    let tg = FakeTelegram::start("123:ABC").await;
    let app = telegram_assistant_app(&tg, "batch").await;
    // Telegram's servers fail 12 calls: the turn's notice spends five (and is given up), the
    // reply's first attempt five more; before replies were stored that lost the reply.
    tg.outage_next(12);
    tg.push_message(555, 42, "tag-r1 hello");
    let got = eventually(60, "the answer after the flood", || async {
        let a = answers(&tg, "tag-r1");
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(got.len(), 1, "{got:?}");
    let metrics = app.metrics().await;
    for result in ["posted", "retried"] {
        let line = format!("flotilla_chat_replies_total{{result=\"{result}\"}} ");
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in {metrics}"));
        assert!(n >= 1, "{line}{n}");
    }
    assert!(
        tg.calls("sendmessage") >= 12,
        "the outage was met: {}",
        tg.calls("sendmessage")
    );
}

/// The assistant log's `event` lines for prompts holding `tag`.
fn runs(log: &Path, event: &str, tag: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == event && v["prompt"].as_str().unwrap_or("").contains(tag))
        .count()
}

#[actix_web::test]
async fn a_reply_waiting_for_its_platform_survives_kill_9_and_the_turn_is_not_run_again() {
    if !require_tool("git") {
        return;
    }
    let tg = FakeTelegram::start("123:ABC").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("chat");
    std::fs::create_dir_all(base.join("ws")).expect("mkdir");
    let log = base.join("assistant.log");
    let extra = format!(
        "chat:\n  turn_timeout: 60s\n  allow: {{ telegram: [\"42\"] }}\n  \
         reply_modes: {{ telegram: batch }}\n  \
         workspace: {ws}\n  worktrees: {wt}\n  \
         assistant: {{ kind: claude, command: [\"{bin}\"], env: {{ SCRIPTED_LOG: \"{log}\" }} }}\n",
        ws = base.join("ws").display(),
        wt = base.join("worktrees").display(),
        bin = crate::chat::scripted_assistant_path().display(),
        log = log.display(),
    );
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    let s = Scratch::with_agents(dir, &agents, &extra);
    let env = [
        ("FLOTILLA__TELEGRAM__API_URL", tg.url.as_str()),
        ("FLOTILLA__TELEGRAM__BOT_TOKEN", "123:ABC"),
    ];
    let mut server = ServerProc::start_with_env(s.dir.path(), &s.home, &s.cfg, s.port, &env).await;
    tg.push_message(555, 42, &format!("/setcwd {}", base.join("ws").display()));
    eventually(60, "the /setcwd reply", || async {
        tg.sent().into_iter().next()
    })
    .await;

    // Every post fails: the turn's notice is tried five times before the turn and given up;
    // a sixth call is the first try of the reply, stored with the message's status before.
    tg.outage_next(u32::MAX);
    let calls = tg.calls("sendmessage");
    tg.push_message(555, 42, "tag-k9 hello");
    eventually(60, "the turn over and its reply tried", || async {
        (runs(&log, "end", "tag-k9") == 1 && tg.calls("sendmessage") >= calls + 6).then_some(())
    })
    .await;
    server.kill9();
    assert!(answers(&tg, "tag-k9").is_empty());

    tg.outage_next(0);
    let _server = ServerProc::start_with_env(s.dir.path(), &s.home, &s.cfg, s.port, &env).await;
    let got = eventually(60, "the stored reply posted after the restart", || async {
        let a = answers(&tg, "tag-k9");
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(runs(&log, "start", "tag-k9"), 1, "the turn ran once");
}

/// A slash command typed where the bot is not a member is answered through its
/// `response_url`, which only the process that took the command kept. After a `kill -9`, a
/// reply it left stored still goes out through that URL, read back from the stored command,
/// instead of being given up as a channel the bot cannot post in.
#[actix_web::test]
async fn a_stored_reply_for_a_channel_the_bot_is_not_in_uses_the_commands_url_after_kill_9() {
    use crate::fake_slack::{self, FakeSlack};
    use sqlx::ConnectOptions;
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    let sl = FakeSlack::start("xoxb-test", &["G1"]).await;
    sl.not_in("G1");
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    let s = Scratch::with_agents(dir, &agents, "chat:\n  allow:\n    slack: [U1]\n");
    let env = [
        ("FLOTILLA__SLACK__API_URL", sl.api_url.as_str()),
        ("FLOTILLA__SLACK__BOT_TOKEN", "xoxb-test"),
        ("FLOTILLA__SLACK__SIGNING_SECRET", SECRET),
    ];
    let mut server = ServerProc::start_with_env(s.dir.path(), &s.home, &s.cfg, s.port, &env).await;
    let url = format!("{}/webhooks/slack/commands", server.address);
    let form = sl.slash_command("/flotilla", "status", "G1", "U1");
    let (status, body) = fake_slack::post_form_signed(&url, SECRET, &form).await;
    assert_eq!(status, 200, "{body}");
    let stored = || crate::chat_platforms::stored_replies_in(&s.home);
    eventually(30, "the answer through the URL, forgotten", || async {
        (sl.responses().len() == 1 && stored().await == Some(0)).then_some(())
    })
    .await;
    server.kill9();
    // A reply the killed node had stored and not posted yet.
    let mut c = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(s.home.join("flotilla.db"))
        .connect()
        .await
        .expect("db");
    sqlx::query(
        "INSERT INTO chat_replies (conversation_id, message_id, body, created_at) \
         SELECT conversation_id, id, 'the reply the crash left', received_at \
         FROM chat_messages WHERE conversation_id = 'slack:G1'",
    )
    .execute(&mut c)
    .await
    .expect("a stored reply");
    drop(c);
    let _server = ServerProc::start_with_env(s.dir.path(), &s.home, &s.cfg, s.port, &env).await;
    eventually(60, "the stored reply through the command's URL", || async {
        (sl.responses()
            .iter()
            .any(|r| r.text == "the reply the crash left")
            && stored().await == Some(0))
        .then_some(())
    })
    .await;
    assert!(sl.posted().is_empty(), "{:?}", sl.posted());
    assert_eq!(sl.responses().len(), 2, "{:?}", sl.responses());
}
