//! What the chat bridge manages with the platforms by itself: Telegram's webhook, Discord's
//! application commands, Slack's mention rule, and thread history for a first turn.
//!
//! Test names start with `chat_platforms_` so the `chat_platforms` group runs them.

use std::path::PathBuf;

use serde_json::json;

use crate::fake_discord::{FakeDiscord, BOT_ID};
use crate::fake_slack::{self, FakeSlack};
use crate::fake_telegram::FakeTelegram;
use crate::helpers::{
    eventually, require_tool, spawn_app_with_env, Backend, TestApp, ECHO_AGENT, GUARDED_TURNS,
};

const TG_SECRET: &str = "abc_DEF-123";
const TG_HOOK: &str = "https://flotilla.example.com/webhooks/telegram";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const DISCORD_KEY: [u8; 32] = [7u8; 32];

/// An app with the chat bridge: `env` sets the platform sections, `chat` is YAML under
/// `chat:` (indented two spaces).
async fn app_with(env: &[(&str, &str)], chat: &str) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    // Assistant turns run under the turn guard, as in `flotilla serve`.
    let env: Vec<(&str, &str)> = env.iter().copied().chain([GUARDED_TURNS]).collect();
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    spawn_app_with_env(
        Backend::Sqlite,
        &agents,
        &format!("chat:\n{chat}"),
        dir,
        &env,
    )
    .await
    .expect("app")
}

// ---- Telegram webhook ------------------------------------------------------------------------

/// Webhook mode with `telegram.webhook_url`: start registers the webhook with the secret
/// token, stop removes it; nothing polls meanwhile.
#[actix_web::test]
async fn chat_platforms_telegram_webhook_is_set_at_start_and_deleted_at_stop() {
    let tg = FakeTelegram::start("123:ABC").await;
    let app = app_with(
        &[
            ("FLOTILLA__TELEGRAM__API_URL", tg.url.as_str()),
            ("FLOTILLA__TELEGRAM__BOT_TOKEN", "123:ABC"),
            ("FLOTILLA__TELEGRAM__SECRET_TOKEN", TG_SECRET),
            ("FLOTILLA__TELEGRAM__WEBHOOK_URL", TG_HOOK),
        ],
        "  allow: { telegram: [\"42\"] }\n",
    )
    .await;
    let hook = eventually(30, "setWebhook", || async { tg.webhook() }).await;
    assert_eq!(hook, (TG_HOOK.to_string(), Some(TG_SECRET.to_string())));
    assert_eq!(tg.calls("getupdates"), 0, "webhook mode must not poll");
    app._handle.stop(true).await;
    eventually(30, "deleteWebhook at stop", || async {
        tg.webhook().is_none().then_some(())
    })
    .await;
    assert!(tg.calls("deletewebhook") >= 1);
}

/// Switching to polling: a webhook left from webhook mode is deleted, then the poll works.
#[actix_web::test]
async fn chat_platforms_telegram_polling_deletes_a_leftover_webhook_and_then_polls() {
    let tg = FakeTelegram::start("123:ABC").await;
    tg.preset_webhook(TG_HOOK);
    let _app = app_with(
        &[
            ("FLOTILLA__TELEGRAM__API_URL", tg.url.as_str()),
            ("FLOTILLA__TELEGRAM__BOT_TOKEN", "123:ABC"),
        ],
        "  allow: { telegram: [\"42\"] }\n",
    )
    .await;
    eventually(30, "deleteWebhook", || async {
        tg.webhook().is_none().then_some(())
    })
    .await;
    tg.push_message(555, 42, "/status");
    eventually(30, "a reply through the poll", || async {
        tg.sent().into_iter().find(|m| m.chat_id == 555)
    })
    .await;
}

/// A webhook URL without the secret token is refused by validation (anyone could post
/// updates), and an `http://` one too (Telegram takes HTTPS only).
#[test]
fn chat_platforms_telegram_webhook_url_needs_https_and_the_secret_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let load = |env: &[(&str, &str)]| {
        flotilla::config::load_with(&flotilla::config::LoadOptions {
            config_path: None,
            cwd: dir.path().to_path_buf(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .expect("config loads")
    };
    let s = load(&[("FLOTILLA__TELEGRAM__WEBHOOK_URL", TG_HOOK)]);
    let e = format!("{:?}", s.validate().expect_err("no secret token"));
    assert!(
        e.contains("telegram.webhook_url") && e.contains("secret_token"),
        "{e}"
    );
    let s = load(&[
        (
            "FLOTILLA__TELEGRAM__WEBHOOK_URL",
            "http://flotilla.example.com/webhooks/telegram",
        ),
        ("FLOTILLA__TELEGRAM__SECRET_TOKEN", TG_SECRET),
    ]);
    let e = format!("{:?}", s.validate().expect_err("http"));
    assert!(
        e.contains("telegram.webhook_url") && e.contains("https"),
        "{e}"
    );
    let s = load(&[
        ("FLOTILLA__TELEGRAM__WEBHOOK_URL", TG_HOOK),
        ("FLOTILLA__TELEGRAM__SECRET_TOKEN", TG_SECRET),
    ]);
    let r = s.validate();
    assert!(!format!("{r:?}").contains("telegram.webhook_url"), "{r:?}");
}

// ---- Discord application commands ----------------------------------------------------------

fn discord_env(dc: &FakeDiscord, pk: &str) -> Vec<(&'static str, String)> {
    vec![
        ("FLOTILLA__DISCORD__API_URL", dc.api_url.clone()),
        ("FLOTILLA__DISCORD__GATEWAY_URL", dc.gateway_url.clone()),
        ("FLOTILLA__DISCORD__BOT_TOKEN", "bot-token".into()),
        ("FLOTILLA__DISCORD__PUBLIC_KEY", pk.to_string()),
    ]
}

/// Commands are written once: a restart finds them registered and writes nothing.
#[actix_web::test]
async fn chat_platforms_discord_commands_are_registered_once_across_restarts() {
    let dc = FakeDiscord::start("bot-token", 1000).await;
    let pk = crate::fake_discord::public_key_hex(&DISCORD_KEY);
    let env = discord_env(&dc, &pk);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for run in 1..=2 {
        let app = app_with(&env, "  allow: { discord: [\"U1\"] }\n").await;
        eventually(30, "the command list read", || async {
            (dc.command_reads() >= run).then_some(())
        })
        .await;
        eventually(30, "the registration done", || async {
            (dc.command_writes() == 1 && !dc.commands().is_empty()).then_some(())
        })
        .await;
        app._handle.stop(true).await;
    }
    assert_eq!(dc.command_writes(), 1, "a restart rewrote the commands");
    let names: Vec<String> = dc
        .commands()
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    for n in ["status", "clone", "plan", "review-pr", "prd"] {
        assert!(names.contains(&n.to_string()), "{n} missing from {names:?}");
    }
}

// ---- Slack mention rule ----------------------------------------------------------------------

async fn slack_app(sl: &FakeSlack, chat: &str, extra_env: &[(&str, &str)]) -> TestApp {
    let mut env = vec![
        ("FLOTILLA__SLACK__API_URL", sl.api_url.as_str()),
        ("FLOTILLA__SLACK__BOT_TOKEN", "xoxb-test"),
        ("FLOTILLA__SLACK__SIGNING_SECRET", SLACK_SECRET),
    ];
    env.extend_from_slice(extra_env);
    app_with(&env, chat).await
}

/// By default a thread message without a mention is not taken; a DM is; with
/// `slack.require_mention: false` the thread message is taken.
#[actix_web::test]
async fn chat_platforms_slack_channel_messages_need_a_mention_unless_configured() {
    let sl = FakeSlack::start("xoxb-test", &["C1", "D1"]).await;
    let app = slack_app(&sl, "  allow: { slack: [U1] }\n", &[]).await;
    let url = format!("{}/webhooks/slack/events", app.address);
    let thread_msg = |ts: &str| {
        fake_slack::envelope(json!({"type": "message", "user": "U1", "text": "/status",
            "ts": ts, "thread_ts": "1600000000.000001", "channel": "C1", "channel_type": "channel"}))
    };
    let (status, body) =
        fake_slack::post_signed(&url, SLACK_SECRET, &thread_msg("1600000000.000002")).await;
    assert_eq!(status, 200, "{body}");
    // Handed to the inbox only as a candidate reply to a notification: not stored.
    assert!(
        body.contains("\"ok\":true") && body.contains("\"new\":false"),
        "{body}"
    );
    let dm = fake_slack::envelope(json!({"type": "message", "user": "U1", "text": "/status",
        "ts": "1600000000.000003", "channel": "D1", "channel_type": "im"}));
    fake_slack::post_signed(&url, SLACK_SECRET, &dm).await;
    eventually(30, "a DM reply", || async {
        sl.posted().into_iter().find(|p| p.channel == "D1")
    })
    .await;
    assert!(
        sl.posted().iter().all(|p| p.channel != "C1"),
        "unmentioned thread message answered"
    );
    assert_eq!(app.store.list_conversations().await.expect("list").len(), 1);

    let sl2 = FakeSlack::start("xoxb-test", &["C1"]).await;
    let app2 = slack_app(
        &sl2,
        "  allow: { slack: [U1] }\n",
        &[("FLOTILLA__SLACK__REQUIRE_MENTION", "false")],
    )
    .await;
    let url2 = format!("{}/webhooks/slack/events", app2.address);
    fake_slack::post_signed(&url2, SLACK_SECRET, &thread_msg("1600000000.000004")).await;
    eventually(30, "a thread reply without a mention", || async {
        sl2.posted().into_iter().find(|p| p.channel == "C1")
    })
    .await;
}

// ---- Thread history for a first turn ------------------------------------------------------

/// `chat:` YAML for the scripted assistant (it answers `echo: <prompt>`), streaming off,
/// keeping `history` earlier thread messages; with the allow list `allow`.
fn assistant_chat(dir: &std::path::Path, allow: &str, history: usize) -> String {
    format!(
        "  turn_timeout: 60s\n  allow: {{ {allow} }}\n  thread_history: {history}\n  \
         workspace: {ws}\n  worktrees: {wt}\n  \
         assistant: {{ kind: claude, command: [\"{bin}\"] }}\n",
        ws = dir.join("ws").display(),
        wt = dir.join("worktrees").display(),
        bin = crate::chat::scripted_assistant_path().display(),
    )
}

/// A repository to `/clone` (owner/name from its path), under `base`.
fn clonable(app: &TestApp, base: &std::path::Path) -> PathBuf {
    let owner = base.join("src").join("acme");
    std::fs::create_dir_all(&owner).expect("mkdir");
    crate::helpers::git(
        &owner,
        &["clone", "-q", &app.repo.display().to_string(), "widget"],
    );
    owner.join("widget")
}

/// Discord: the first assistant turn's prompt carries the channel's earlier messages, only
/// the newest `thread_history`; the next turn does not get them again.
#[actix_web::test]
async fn chat_platforms_discord_first_turn_gets_the_thread_history_bounded() {
    if !require_tool("git") {
        return;
    }
    let dc = FakeDiscord::start("bot-token", 1000).await;
    let base = tempfile::tempdir().expect("tempdir");
    for i in 1..=6 {
        dc.add_history("C5", "U7", &format!("old message {i}"));
    }
    let env = [
        ("FLOTILLA__DISCORD__API_URL", dc.api_url.as_str()),
        ("FLOTILLA__DISCORD__GATEWAY_URL", dc.gateway_url.as_str()),
        ("FLOTILLA__DISCORD__BOT_TOKEN", "bot-token"),
    ];
    let app = app_with(&env, &assistant_chat(base.path(), "discord: [\"U1\"]", 4)).await;
    eventually(30, "gateway identify", || async {
        (dc.gateway_counts().0 >= 1).then_some(())
    })
    .await;
    let repo = clonable(&app, base.path());
    dc.message_create(
        "C5",
        Some("G1"),
        "U1",
        &format!("<@{BOT_ID}> /clone {}", repo.display()),
    );
    eventually(60, "the clone's reply", || async {
        dc.posted()
            .into_iter()
            .find(|m| m.channel == "C5" && m.content.contains("acme/widget"))
    })
    .await;
    dc.message_create(
        "C5",
        Some("G1"),
        "U1",
        &format!("<@{BOT_ID}> what was said?"),
    );
    let reply = eventually(60, "the first turn's echo", || async {
        let text: String = dc
            .posted()
            .into_iter()
            .filter(|m| m.channel == "C5")
            .map(|m| m.content)
            .collect::<Vec<_>>()
            .join("\n");
        text.contains("what was said?").then_some(text)
    })
    .await;
    assert!(
        reply.contains("Earlier messages in this thread (4 most recent"),
        "{reply}"
    );
    assert!(
        reply.contains("old message 6") && reply.contains("old message 5"),
        "{reply}"
    );
    assert!(!reply.contains("old message 4"), "not bounded: {reply}");
    let (six, five) = (reply.find("old message 6"), reply.find("old message 5"));
    assert!(five < six, "oldest first: {reply}");
    // The second turn resumes the assistant's session: no history again.
    let before = dc.posted().len();
    dc.message_create("C5", Some("G1"), "U1", &format!("<@{BOT_ID}> and now?"));
    let second = eventually(60, "the second turn's echo", || async {
        dc.posted()
            .into_iter()
            .skip(before)
            .find(|m| m.content.contains("and now?"))
    })
    .await;
    assert!(
        !second.content.contains("Earlier messages"),
        "{}",
        second.content
    );
}

/// Slack: the first assistant turn in a thread carries the thread's earlier messages
/// (parent and replies, newest `thread_history` kept, oldest first).
#[actix_web::test]
async fn chat_platforms_slack_first_turn_gets_the_thread_history_bounded() {
    if !require_tool("git") {
        return;
    }
    let sl = FakeSlack::start("xoxb-test", &["C1"]).await;
    let base = tempfile::tempdir().expect("tempdir");
    let parent = "1600000000.000001";
    sl.add_message("C1", parent, None, "U7", "the build is red");
    for i in 2..=7 {
        sl.add_message(
            "C1",
            &format!("1600000000.00000{i}"),
            Some(parent),
            "U7",
            &format!("reply {i} &lt;T&gt;"),
        );
    }
    let app = slack_app(&sl, &assistant_chat(base.path(), "slack: [U1]", 3), &[]).await;
    let url = format!("{}/webhooks/slack/events", app.address);
    let repo = clonable(&app, base.path());
    let clone = fake_slack::envelope(json!({"type": "app_mention", "user": "U1",
        "text": format!("<@U0BOT> /clone {}", repo.display()), "ts": "1600000000.000010",
        "thread_ts": parent, "channel": "C1"}));
    fake_slack::post_signed(&url, SLACK_SECRET, &clone).await;
    eventually(60, "the clone's reply", || async {
        sl.posted()
            .into_iter()
            .find(|p| p.rendered.contains("acme/widget"))
    })
    .await;
    let ask = fake_slack::envelope(json!({"type": "app_mention", "user": "U1",
        "text": "<@U0BOT> summarize please", "ts": "1800000000.000001",
        "thread_ts": parent, "channel": "C1"}));
    fake_slack::post_signed(&url, SLACK_SECRET, &ask).await;
    let reply = eventually(60, "the first turn's echo", || async {
        let text: String = sl
            .posted()
            .into_iter()
            .map(|p| p.rendered)
            .collect::<Vec<_>>()
            .join("\n");
        text.contains("summarize please").then_some(text)
    })
    .await;
    assert!(
        reply.contains("Earlier messages in this thread (3 most recent"),
        "{reply}"
    );
    assert!(
        reply.contains("reply 7 <T>") && reply.contains("reply 6 <T>"),
        "{reply}"
    );
    assert!(
        !reply.contains("reply 5") && !reply.contains("the build is red"),
        "not bounded: {reply}"
    );
    assert!(sl.calls("conversations.replies") >= 1);
}
