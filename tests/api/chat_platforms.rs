//! Chat platform adapters against their fakes, and the chat webhooks' verification.
//!
//! Adapters are driven directly (a [`RecordingInbox`] stands in for the chat core where a
//! test needs one); webhooks go through the real application.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flotilla::plugins::chat::discord::DiscordPlatform;
use flotilla::plugins::chat::gateway::Gateway;
use flotilla::plugins::chat::github::GithubCommentsPlatform;
use flotilla::plugins::chat::jira::JiraPlatform;
use flotilla::plugins::chat::slack::SlackPlatform;
use flotilla::plugins::chat::telegram::{Poller, TelegramPlatform};
use flotilla::plugins::{
    ChatInbox, ChatPlatform, InboundMessage, InboxReceipt, PluginError, PluginResult, ReplyKey,
};
use serde_json::{json, Value};

use crate::fake_discord::{self, FakeDiscord, BOT_ID};
use crate::fake_jira::{self, FakeJira};
use crate::fake_slack::{self, FakeSlack};
use crate::fake_telegram::FakeTelegram;
use crate::helpers::{eventually, require_tool, spawn_app_with_env, Backend, TestApp, ECHO_AGENT};

const TIMEOUT: Duration = Duration::from_secs(10);

/// An inbox that records what it is given; it can be told to refuse the next N messages.
#[derive(Default)]
pub struct RecordingInbox {
    pub messages: Mutex<Vec<InboundMessage>>,
    pub refuse: AtomicU32,
}

impl RecordingInbox {
    fn texts(&self) -> Vec<String> {
        self.all().into_iter().map(|m| m.text).collect()
    }
    /// The messages addressed to the bot (an unmentioned guild message is handed over only
    /// as a candidate reply to a notification, `meta.unaddressed`, which the real inbox drops
    /// unless it replies to one).
    fn all(&self) -> Vec<InboundMessage> {
        let all = self.messages.lock().expect("lock").clone();
        all.into_iter()
            .filter(|m| !m.meta.contains_key("unaddressed"))
            .collect()
    }
}

#[async_trait]
impl ChatInbox for RecordingInbox {
    async fn receive(&self, message: InboundMessage) -> PluginResult<InboxReceipt> {
        if self
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(PluginError::Invalid("store refused".into()));
        }
        let mut m = self.messages.lock().expect("lock");
        let new = !m.iter().any(|x| x.message_id == message.message_id);
        let conversation = format!("{}:{}", message.platform, message.thread);
        if new {
            m.push(message);
        }
        Ok(InboxReceipt {
            conversation,
            new,
            position: 0,
        })
    }
}

// ---- Telegram ------------------------------------------------------------------------------

/// Scenario 14: a 10,000-character reply of paragraphs goes as several messages of at most
/// 4,096 characters; a chunk Telegram's MarkdownV2 parser refuses is resent as plain text.
#[actix_web::test]
async fn chat_platforms_telegram_splits_a_long_reply_and_resends_refused_markdown_as_plain() {
    let tg = FakeTelegram::start("123:ABC").await;
    let p = TelegramPlatform::new(&tg.url, "123:ABC", TIMEOUT).expect("platform");
    let para = format!(
        "Step {}: run `cargo test` (it's fast) and check v1.2!",
        "x".repeat(240)
    );
    let text = vec![para; 36].join("\n\n");
    assert!(text.chars().count() > 10_000);
    tg.reject_markdown_next(1);
    p.send("555", &text).await.expect("sent");
    let sent = tg.sent();
    assert!(sent.len() >= 3, "{} messages", sent.len());
    assert!(sent.iter().all(|m| m.text.chars().count() <= 4096));
    assert_eq!(tg.rejected_markdown(), 1, "only the forced refusal");
    assert_eq!(
        sent[0].parse_mode, None,
        "the refused chunk went as plain text"
    );
    assert!(
        sent[0].text.contains("`cargo test`"),
        "plain text keeps the markup"
    );
    assert!(sent[1..]
        .iter()
        .all(|m| m.parse_mode.as_deref() == Some("MarkdownV2")));
    assert!(sent[1]
        .text
        .contains("run cargo test (it's fast) and check v1.2!"));
    let joined: usize = sent.iter().map(|m| m.text.matches("Step").count()).sum();
    assert_eq!(joined, 36, "no paragraph lost or cut");
}

/// Flood control mid-stream: the edit completes after `retry_after`.
#[actix_web::test]
async fn chat_platforms_telegram_flood_control_mid_stream_completes_after_the_wait() {
    let tg = FakeTelegram::start("123:ABC").await;
    let p = TelegramPlatform::new(&tg.url, "123:ABC", TIMEOUT).expect("platform");
    let id = p.send("555", "Thinking").await.expect("first");
    tg.flood_next(1, 1);
    p.edit("555", &id, "Thinking… done.")
        .await
        .expect("edit after the wait");
    let sent = tg.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].text, "Thinking… done.");
    assert_eq!(sent[0].edits, 1);
    assert_eq!(tg.calls("editmessagetext"), 2, "one 429, one retry");
    let wrong = TelegramPlatform::new(&tg.url, "999:SECRET-TOKEN", TIMEOUT).expect("platform");
    let e = wrong.send("555", "x").await.expect_err("401");
    assert!(e.to_string().contains("Unauthorized"), "{e}");
    assert!(
        !format!("{e} {e:?}").contains("SECRET-TOKEN"),
        "the token leaked: {e:?}"
    );
}

/// A long-poll client of the fake Telegram `tg` (bot token `123:ABC`).
pub(crate) fn telegram_poller(tg: &FakeTelegram) -> Poller {
    let settings = flotilla::config::TelegramSettings {
        api_url: tg.url.clone(),
        bot_token: Some(flotilla::config::Secret::new("123:ABC")),
        secret_token: None,
        webhook_url: None,
    };
    Poller::from_settings(&settings, TIMEOUT)
        .expect("client")
        .expect("poll mode")
}

/// The long poll confirms an update only after the inbox stored it.
#[actix_web::test]
async fn chat_platforms_telegram_poll_advances_the_offset_only_after_the_inbox_stored() {
    let tg = FakeTelegram::start("123:ABC").await;
    let mut poller = telegram_poller(&tg);
    let inbox = RecordingInbox::default();
    tg.push_message(555, 42, "/status@FlotillaBot");
    inbox.refuse.store(1, Ordering::SeqCst);
    assert!(poller.poll_once(&inbox).await.is_err(), "the store refused");
    assert_eq!(tg.pending(), 1);
    assert_eq!(poller.poll_once(&inbox).await.expect("poll"), 1);
    let got = inbox.all();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (
            got[0].thread.as_str(),
            got[0].author.as_str(),
            got[0].text.as_str()
        ),
        ("555", "42", "/status")
    );
    tg.push_message(555, 42, "second");
    assert_eq!(poller.poll_once(&inbox).await.expect("poll"), 1);
    assert_eq!(
        tg.pending(),
        1,
        "the second is confirmed only by the next poll"
    );
    assert_eq!(inbox.texts(), vec!["/status", "second"]);
}

// ---- Discord -------------------------------------------------------------------------------

/// Scenario 15 (adapter part): a guild message without the mention is ignored, a DM is
/// taken, `<@BOTID> /status` arrives as `/status`; the gateway identifies, heartbeats and
/// resumes after op 7.
#[actix_web::test]
async fn chat_platforms_discord_gateway_takes_dms_and_mentions_only_and_resumes() {
    let dc = FakeDiscord::start("bot-token", 200).await;
    let settings = flotilla::config::DiscordSettings {
        api_url: dc.api_url.clone(),
        gateway_url: dc.gateway_url.clone(),
        bot_token: Some(flotilla::config::Secret::new("bot-token")),
        public_key: None,
    };
    let inbox = Arc::new(RecordingInbox::default());
    let gw = Gateway::from_settings(&settings).expect("gateway");
    let task = actix_web::rt::spawn(gw.run(inbox.clone() as Arc<dyn ChatInbox>));
    eventually(10, "identify", || async {
        (dc.gateway_counts().0 == 1).then_some(())
    })
    .await;
    dc.message_create("C1", Some("G1"), "U1", "/status");
    dc.message_create("D1", None, "U1", "/help");
    dc.message_create("C1", Some("G1"), "U1", &format!("<@{BOT_ID}> /status"));
    eventually(10, "two messages", || async {
        (inbox.all().len() == 2).then_some(())
    })
    .await;
    assert_eq!(inbox.texts(), vec!["/help", "/status"]);
    assert_eq!(inbox.all()[1].thread, "C1");
    eventually(10, "heartbeats", || async {
        (dc.gateway_counts().2 >= 1).then_some(())
    })
    .await;
    dc.reconnect_all();
    eventually(15, "resume", || async {
        (dc.gateway_counts().1 == 1).then_some(())
    })
    .await;
    dc.message_create("D1", None, "U2", "after resume");
    eventually(10, "message after resume", || async {
        inbox
            .texts()
            .contains(&"after resume".to_string())
            .then_some(())
    })
    .await;
    assert_eq!(dc.gateway_counts().0, 1, "resumed, not identified again");
    task.abort();
}

/// REST: a long reply splits under 2,000 characters; a 429 bucket is waited out.
#[actix_web::test]
async fn chat_platforms_discord_splits_under_2000_and_waits_out_a_429() {
    let dc = FakeDiscord::start("bot-token", 1000).await;
    let p = DiscordPlatform::new(&dc.api_url, "bot-token", TIMEOUT).expect("platform");
    let text = vec!["word ".repeat(100); 9].join("\n\n");
    p.send("C1", &text).await.expect("sent");
    let posted = dc.posted();
    assert!(posted.len() >= 3);
    assert!(posted.iter().all(|m| m.content.chars().count() <= 2000));
    dc.limit_next(1, 0.3);
    p.edit("C1", &posted[0].id, "edited")
        .await
        .expect("edit after the wait");
    assert_eq!(dc.posted()[0].content, "edited");
}

/// A reply sent again under its key (a retry after a lost answer, a re-delivery after a
/// crash) carries the same `nonce` with `enforce_nonce`, part by part: Discord answers with
/// the first post and creates nothing. Another key posts anew; a plain send carries no nonce.
#[actix_web::test]
async fn chat_platforms_discord_a_reply_sent_again_under_its_key_is_posted_once() {
    let dc = FakeDiscord::start("bot-token", 1000).await;
    let p = DiscordPlatform::new(&dc.api_url, "bot-token", TIMEOUT).expect("platform");
    let text = vec!["word ".repeat(100); 9].join("\n\n");
    let key = |k: &str| ReplyKey::new(k, chrono::Utc::now(), false);
    let first = p
        .send_once("C1", &text, &key("discord:C1/7"))
        .await
        .expect("sent");
    let parts = dc.posted().len();
    assert!(parts >= 3, "{parts}");
    let again = p
        .send_once("C1", &text, &key("discord:C1/7"))
        .await
        .expect("sent again");
    assert_eq!(again, first, "the first post's id");
    assert_eq!(dc.posted().len(), parts, "posted twice");
    assert_eq!(dc.nonce_repeats() as usize, parts);
    p.send_once("C1", &text, &key("discord:C1/8"))
        .await
        .expect("another reply");
    assert_eq!(dc.posted().len(), 2 * parts);
    p.send("C1", "plain").await.expect("plain");
    p.send("C1", "plain").await.expect("plain again");
    assert_eq!(dc.posted().len(), 2 * parts + 2);
}

/// The crash window of a stored reply: posted, but still stored when the node died (it is
/// forgotten in the transaction of the conversation's next claim). Posted again by the next
/// delivery, it is the same post on Discord: one message, not two.
#[actix_web::test]
async fn chat_platforms_discord_a_stored_reply_delivered_again_is_posted_once() {
    let (dc, app) = discord_chat_app().await;
    dc.message_create("D1", None, "U1", "/status");
    let reply = eventually(30, "the reply to /status", || async {
        dc.posted().first().map(|m| m.content.clone())
    })
    .await;
    store_again_once_forgotten(&app, "/status", &reply).await;
    // The conversation's next message delivers what is stored, oldest first.
    dc.message_create("D1", None, "U1", "/help");
    eventually(30, "the reply to /help", || async {
        (dc.posted().len() >= 2 && stored_replies(&app).await == Some(0)).then_some(())
    })
    .await;
    let posts: Vec<String> = dc.posted().into_iter().map(|m| m.content).collect();
    assert_eq!(
        posts.iter().filter(|c| **c == reply).count(),
        1,
        "the stored reply was posted twice: {posts:?}"
    );
    assert_eq!(dc.nonce_repeats(), 1);
}

/// Replies still waiting in the app's `chat_replies` (`None` while the database is busy).
async fn stored_replies(app: &TestApp) -> Option<i64> {
    stored_replies_in(&app.home).await
}

/// Replies still waiting in `chat_replies` of the SQLite database under `home`.
pub(crate) async fn stored_replies_in(home: &std::path::Path) -> Option<i64> {
    use sqlx::ConnectOptions;
    let mut db = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(home.join("flotilla.db"))
        .connect()
        .await
        .ok()?;
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM chat_replies")
        .fetch_one(&mut db)
        .await
        .ok()
}

/// The crash window of a stored reply: once `reply` (the answer to the message `asked`) is
/// posted and forgotten, it is put back in the outbox under its own id, stored when its
/// message came, as a crash between the post and the claim that forgets it leaves it.
async fn store_again_once_forgotten(app: &TestApp, asked: &str, reply: &str) {
    use sqlx::ConnectOptions;
    eventually(30, "the reply forgotten", || async {
        (stored_replies(app).await == Some(0)).then_some(())
    })
    .await;
    let mut db = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(app.home.join("flotilla.db"))
        .connect()
        .await
        .expect("db");
    sqlx::query(
        "INSERT INTO chat_replies (id, conversation_id, message_id, body, created_at) \
         SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'chat_replies'), \
         conversation_id, id, ?1, received_at FROM chat_messages WHERE body = ?2",
    )
    .bind(reply)
    .bind(asked)
    .execute(&mut db)
    .await
    .expect("the reply stored again");
}

/// Slack: a stored reply's pieces carry their mark in the message's metadata. A first attempt
/// reads nothing; an attempt after one that may have posted reads the thread (or, for a slash
/// command's conversation, the channel) and posts only the pieces not there yet.
#[actix_web::test]
async fn chat_platforms_slack_a_reply_sent_again_under_its_key_is_posted_once() {
    let sl = FakeSlack::start("xoxb-test", &["C1"]).await;
    let p = SlackPlatform::new(&sl.api_url, "xoxb-test", TIMEOUT).expect("platform");
    sl.add_message("C1", "1700.1", None, "U1", "<@U0BOT> hello");
    let text = vec!["x<y ".repeat(200); 9].join("\n\n");
    let key = ReplyKey::new("slack:C1:1700.1/7", chrono::Utc::now(), false);
    let first = p.send_once("C1:1700.1", &text, &key).await.expect("sent");
    let parts = sl.posted().len();
    assert!(parts >= 2, "{parts}");
    assert_eq!(
        sl.calls("conversations.replies"),
        0,
        "a first attempt reads"
    );
    assert!(sl
        .posted()
        .iter()
        .all(|m| m.metadata.as_ref().is_some_and(|v| {
            v["event_type"] == json!("flotilla_reply") && v["event_payload"]["mark"].is_string()
        })));
    let again = p
        .send_once("C1:1700.1", &text, &key.again())
        .await
        .expect("sent again");
    assert_eq!(again, first, "the first post's ts");
    assert_eq!(sl.posted().len(), parts, "posted twice");
    assert_eq!(sl.calls("conversations.replies"), 1);
    // Another reply is not taken for this one.
    let other = ReplyKey::new("slack:C1:1700.1/8", chrono::Utc::now(), true);
    p.send_once("C1:1700.1", &text, &other)
        .await
        .expect("another reply");
    assert_eq!(sl.posted().len(), 2 * parts);
    // A slash command's conversation is the channel: its history is read.
    let channel = ReplyKey::new("slack:C1/9", chrono::Utc::now(), false);
    p.send_once("C1", "in the channel", &channel)
        .await
        .expect("sent");
    p.send_once("C1", "in the channel", &channel.again())
        .await
        .expect("sent again");
    assert_eq!(sl.calls("conversations.history"), 1);
    assert_eq!(sl.posted().len(), 2 * parts + 1);
    p.send("C1", "plain").await.expect("plain");
    assert_eq!(sl.posted().last().and_then(|m| m.metadata.clone()), None);
}

/// The crash window on Slack, end to end: the reply posted again after the restart is found
/// in the thread by its mark and not posted twice; the first delivery read nothing.
#[actix_web::test]
async fn chat_platforms_slack_a_stored_reply_delivered_again_is_posted_once() {
    let sl = FakeSlack::start("xoxb-test", &["C1"]).await;
    let app = slack_chat_app(&sl).await;
    let url = format!("{}/webhooks/slack/events", app.address);
    let thread = format!("{}.000100", chrono::Utc::now().timestamp());
    let mention = |ts: &str, text: &str| {
        fake_slack::envelope(json!({"type": "app_mention", "user": "U1", "channel": "C1",
            "text": format!("<@U0BOT> {text}"), "ts": ts, "thread_ts": thread}))
    };
    // Slack keeps what people write: the thread's reads find its parent.
    sl.add_message("C1", &thread, None, "U1", "<@U0BOT> /status");
    let (status, body) =
        fake_slack::post_signed(&url, SLACK_SECRET, &mention(&thread, "/status")).await;
    assert_eq!(status, 200, "{body}");
    let reply = eventually(30, "the reply to /status", || async {
        sl.posted().first().map(|m| fake_slack::render(&m.text).0)
    })
    .await;
    store_again_once_forgotten(&app, "/status", &reply).await;
    assert_eq!(
        sl.calls("conversations.replies"),
        0,
        "a first delivery read"
    );
    let next = format!("{}.000200", chrono::Utc::now().timestamp());
    sl.add_message("C1", &next, Some(&thread), "U1", "<@U0BOT> /help");
    let (status, body) =
        fake_slack::post_signed(&url, SLACK_SECRET, &mention(&next, "/help")).await;
    assert_eq!(status, 200, "{body}");
    eventually(30, "the reply to /help", || async {
        (sl.posted().len() >= 2 && stored_replies(&app).await == Some(0)).then_some(())
    })
    .await;
    let posts: Vec<String> = sl
        .posted()
        .iter()
        .map(|m| fake_slack::render(&m.text).0)
        .collect();
    assert_eq!(
        posts.iter().filter(|c| **c == reply).count(),
        1,
        "the stored reply was posted twice: {posts:?}"
    );
    assert!(sl.calls("conversations.replies") >= 1);
}

// ---- Slack, Jira, GitHub outbound ----------------------------------------------------------

#[actix_web::test]
async fn chat_platforms_slack_replies_in_thread_and_streams_through_a_429() {
    let sl = FakeSlack::start("xoxb-test", &["C1"]).await;
    let p = SlackPlatform::new(&sl.api_url, "xoxb-test", TIMEOUT).expect("platform");
    let ts = p.send("C1:1700.1", "Working").await.expect("posted");
    sl.limit_next(1, 1);
    p.edit("C1:1700.1", &ts, "Working… done")
        .await
        .expect("updated after the wait");
    let posted = sl.posted();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].thread_ts.as_deref(), Some("1700.1"));
    assert_eq!(posted[0].text, "Working… done");
    let bad = SlackPlatform::new(&sl.api_url, "xoxb-wrong", TIMEOUT).expect("platform");
    let e = bad.send("C1:1.0", "x").await.expect_err("invalid_auth");
    assert!(e.to_string().contains("invalid_auth"), "{e}");
    assert!(!format!("{e:?}").contains("xoxb-wrong"));
}

#[actix_web::test]
async fn chat_platforms_jira_replies_in_adf() {
    let jr = FakeJira::start("bot@acme.io", "jira-token", &["ABC-123"]).await;
    let p = JiraPlatform::new(&jr.url, "bot@acme.io", "jira-token", TIMEOUT).expect("platform");
    jr.limit_next(1);
    p.send("ABC-123", "## Plan\n\nRun **tests**.\n\n- one\n- two")
        .await
        .expect("commented");
    let c = jr.comments();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].body["content"][0]["type"], "heading");
    assert_eq!(
        c[0].body["content"][1]["content"][1]["marks"][0]["type"],
        "strong"
    );
    assert_eq!(c[0].body["content"][2]["type"], "bulletList");
    let bad = JiraPlatform::new(&jr.url, "bot@acme.io", "nope", TIMEOUT).expect("platform");
    assert!(bad.send("ABC-123", "x").await.is_err());
}

/// Jira: a stored reply's comments carry their mark in a comment property. An attempt after
/// one that may have posted reads the issue's newest comments and their properties, and posts
/// only the pieces not there yet; a first attempt reads nothing.
#[actix_web::test]
async fn chat_platforms_jira_a_reply_sent_again_under_its_key_is_posted_once() {
    let jr = FakeJira::start("bot@acme.io", "jira-token", &["ABC-123"]).await;
    let p = JiraPlatform::new(&jr.url, "bot@acme.io", "jira-token", TIMEOUT).expect("platform");
    let reads = || {
        let seen = jr.requests();
        let n = |m: &str, p: &str| {
            seen.iter()
                .filter(|r| r.method == m && r.path.starts_with(p))
                .count()
        };
        (
            n("GET", "/rest/api/3/issue/ABC-123/comment"),
            n("POST", "/rest/api/3/comment/list"),
        )
    };
    p.send("ABC-123", "someone else's earlier comment")
        .await
        .expect("commented");
    let text = vec!["word ".repeat(1000); 9].join("\n\n");
    let key = ReplyKey::new("jira:ABC-123/7", chrono::Utc::now(), false);
    let first = p.send_once("ABC-123", &text, &key).await.expect("sent");
    let parts = jr.comments().len() - 1;
    assert!(parts >= 2, "{parts}");
    assert_eq!(reads(), (0, 0), "a first attempt reads");
    assert!(jr.comments()[1..].iter().all(|c| c.properties.len() == 1
        && c.properties[0]["key"] == json!("flotilla.reply")
        && c.properties[0]["value"]["mark"].is_string()));
    let again = p
        .send_once("ABC-123", &text, &key.again())
        .await
        .expect("sent again");
    assert_eq!(again, first, "the last comment's id");
    assert_eq!(jr.comments().len(), parts + 1, "posted twice");
    assert_eq!(reads(), (1, 1));
    let other = ReplyKey::new("jira:ABC-123/8", chrono::Utc::now(), true);
    p.send_once("ABC-123", &text, &other)
        .await
        .expect("another reply");
    assert_eq!(jr.comments().len(), 2 * parts + 1);
    assert!(
        jr.comments()[0].properties.is_empty(),
        "a plain send carries a mark"
    );
}

#[actix_web::test]
async fn chat_platforms_github_replies_as_issue_comments() {
    let gh = crate::fake_github::FakeGithub::start("ghp_test").await;
    gh.create_repo("acme/app");
    let n = gh.create_issue("acme/app", "Bug", "@flotilla please fix");
    let p = GithubCommentsPlatform::new(&gh.url, "ghp_test", TIMEOUT).expect("platform");
    let id = p
        .send(&format!("acme/app#{n}"), "On it.")
        .await
        .expect("commented");
    assert!(id.parse::<i64>().is_ok());
    assert_eq!(
        gh.count("POST /repos/{owner}/{repo}/issues/{number}/comments"),
        1
    );
    // rca #157: a reply over GitHub's 65,536-character limit goes as several comments.
    let long = vec!["z".repeat(999); 70].join("\n\n");
    p.send(&format!("acme/app#{n}"), &long)
        .await
        .expect("commented");
    assert_eq!(
        gh.count("POST /repos/{owner}/{repo}/issues/{number}/comments"),
        3
    );
}

/// GitHub: a stored reply's comment ends on its mark in an HTML comment. An attempt after one
/// that may have posted lists the issue's comments since the reply was stored and posts only
/// what is not there yet; a first attempt reads nothing.
#[actix_web::test]
async fn chat_platforms_github_a_reply_sent_again_under_its_key_is_posted_once() {
    let gh = crate::fake_github::FakeGithub::start("ghp_test").await;
    gh.create_repo("acme/app");
    let n = gh.create_issue("acme/app", "Bug", "@flotilla please fix");
    let thread = format!("acme/app#{n}");
    let p = GithubCommentsPlatform::new(&gh.url, "ghp_test", TIMEOUT).expect("platform");
    let list = "GET /repos/{owner}/{repo}/issues/{number}/comments";
    let post = "POST /repos/{owner}/{repo}/issues/{number}/comments";
    let key = ReplyKey::new("github:acme/app#1/7", chrono::Utc::now(), false);
    let first = p.send_once(&thread, "On it.", &key).await.expect("sent");
    assert_eq!((gh.count(post), gh.count(list)), (1, 0));
    let comments = gh.issue_comments("acme/app", n);
    let body = &comments.last().expect("a comment").1;
    assert!(body.starts_with("On it.\n\n<!-- flotilla-reply "), "{body}");
    let again = p
        .send_once(&thread, "On it.", &key.again())
        .await
        .expect("sent again");
    assert_eq!(again, first, "the first comment's id");
    assert_eq!((gh.count(post), gh.count(list)), (1, 1), "posted twice");
    let other = ReplyKey::new("github:acme/app#1/8", chrono::Utc::now(), true);
    p.send_once(&thread, "On it.", &other)
        .await
        .expect("another reply");
    assert_eq!(gh.count(post), 2);
    p.send(&thread, "plain").await.expect("plain");
    let comments = gh.issue_comments("acme/app", n);
    assert_eq!(comments.last().map(|c| c.1.as_str()), Some("plain"));
}

// ---- Webhooks through the application ------------------------------------------------------

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const TG_SECRET: &str = "abc_DEF-123";
const JIRA_SECRET: &str = "jira-hook-secret";
const GH_SECRET: &str = "gh-hook-secret";
const DISCORD_KEY: [u8; 32] = [7u8; 32];

async fn app() -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    let pk = fake_discord::public_key_hex(&DISCORD_KEY);
    spawn_app_with_env(
        Backend::Sqlite,
        &agents,
        "",
        dir,
        &[
            ("FLOTILLA__SLACK__SIGNING_SECRET", SLACK_SECRET),
            ("FLOTILLA__TELEGRAM__SECRET_TOKEN", TG_SECRET),
            ("FLOTILLA__DISCORD__PUBLIC_KEY", &pk),
            ("FLOTILLA__JIRA__WEBHOOK_SECRET", JIRA_SECRET),
            ("FLOTILLA__JIRA__BOT_ACCOUNT_ID", "bot-account"),
            ("FLOTILLA__GITHUB__WEBHOOK_SECRET", GH_SECRET),
            ("FLOTILLA__GITHUB__BOT_LOGIN", "flotilla[bot]"),
        ],
    )
    .await
    .expect("app")
}

async fn post(app: &TestApp, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut r = app
        .client
        .post(format!("{}{path}", app.address))
        .header("content-type", "application/json");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.body(body.to_string()).send().await.expect("post");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

async fn nothing_stored(app: &TestApp) {
    assert!(
        app.store
            .list_conversations()
            .await
            .expect("list")
            .is_empty(),
        "a refused request stored a conversation"
    );
}

#[actix_web::test]
async fn chat_platforms_unsigned_or_badly_signed_webhooks_get_401_and_store_nothing() {
    let app = app().await;
    let slack_body = fake_slack::envelope(json!({"type": "app_mention", "user": "U1",
        "text": "<@U0BOT> hi", "ts": "1.0", "channel": "C1"}))
    .to_string();
    let now = chrono::Utc::now().timestamp();
    let stale = (now - 600).to_string();
    let nows = now.to_string();
    let good_old = fake_slack::sign(SLACK_SECRET, now - 600, &slack_body);
    let wrong = fake_slack::sign("not-the-secret", now, &slack_body);
    for h in [
        vec![],
        vec![
            ("x-slack-request-timestamp", nows.as_str()),
            ("x-slack-signature", wrong.as_str()),
        ],
        vec![
            ("x-slack-request-timestamp", stale.as_str()),
            ("x-slack-signature", good_old.as_str()),
        ],
    ] {
        assert_eq!(
            post(&app, "/webhooks/slack/events", &h, &slack_body)
                .await
                .0,
            401
        );
    }

    let update =
        json!({"update_id": 1, "message": {"message_id": 1, "from": {"id": 42, "is_bot": false},
        "chat": {"id": 42, "type": "private"}, "date": 1, "text": "hi"}})
        .to_string();
    for h in [
        vec![],
        vec![("x-telegram-bot-api-secret-token", "abc_DEF-12")],
    ] {
        assert_eq!(post(&app, "/webhooks/telegram", &h, &update).await.0, 401);
    }

    let ping = r#"{"type":1}"#;
    let (sig, ts) = fake_discord::sign_interaction(&[8u8; 32], ping);
    for h in [
        vec![],
        vec![
            ("x-signature-ed25519", sig.as_str()),
            ("x-signature-timestamp", ts.as_str()),
        ],
    ] {
        assert_eq!(
            post(&app, "/webhooks/discord/interactions", &h, ping)
                .await
                .0,
            401
        );
    }
    let (good, ts) = fake_discord::sign_interaction(&DISCORD_KEY, ping);
    let other_ts = (ts.parse::<i64>().expect("ts") + 1).to_string();
    let h = [
        ("x-signature-ed25519", good.as_str()),
        ("x-signature-timestamp", other_ts.as_str()),
    ];
    assert_eq!(
        post(&app, "/webhooks/discord/interactions", &h, ping)
            .await
            .0,
        401
    );

    let jira = fake_jira::comment_created("ABC-1", "10001", "u1", "[~accountid:bot-account] hi")
        .to_string();
    let bad = flotilla::plugins::github::events::sign(b"wrong", jira.as_bytes());
    for h in [vec![], vec![("x-hub-signature", bad.as_str())]] {
        assert_eq!(post(&app, "/webhooks/jira", &h, &jira).await.0, 401);
    }

    // Scenario 16: a GitHub comment with a wrong HMAC is dropped.
    let gh = json!({"action": "created", "issue": {"number": 1}, "comment": {"id": 5,
        "body": "@flotilla hi", "user": {"login": "alice"}}, "repository": {"full_name": "a/b"}})
    .to_string();
    let bad = flotilla::plugins::github::events::sign(b"wrong", gh.as_bytes());
    let h = [
        ("x-github-event", "issue_comment"),
        ("x-github-delivery", "d-1"),
        ("x-hub-signature-256", bad.as_str()),
    ];
    assert_eq!(post(&app, "/webhooks/github", &h, &gh).await.0, 401);
    nothing_stored(&app).await;
}

#[actix_web::test]
async fn chat_platforms_slack_url_verification_and_discord_ping_are_answered() {
    let app = app().await;
    let body = json!({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"});
    let (status, text) = fake_slack::post_signed(
        &format!("{}/webhooks/slack/events", app.address),
        SLACK_SECRET,
        &body,
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        v["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );

    // Bot messages and edits are acknowledged and never stored.
    for ev in [
        json!({"type": "message", "subtype": "bot_message", "bot_id": "B1", "text": "hi",
            "ts": "3.0", "thread_ts": "1.0", "channel": "C1"}),
        json!({"type": "message", "subtype": "message_changed", "channel": "C1", "ts": "4.0",
            "message": {"user": "U1", "text": "edited", "ts": "1.0"}}),
    ] {
        let url = format!("{}/webhooks/slack/events", app.address);
        let (status, _) =
            fake_slack::post_signed(&url, SLACK_SECRET, &fake_slack::envelope(ev)).await;
        assert_eq!(status, 200);
    }

    let ping = r#"{"type":1,"id":"1","application_id":"2"}"#;
    let (sig, ts) = fake_discord::sign_interaction(&DISCORD_KEY, ping);
    let h = [
        ("x-signature-ed25519", sig.as_str()),
        ("x-signature-timestamp", ts.as_str()),
    ];
    let (status, text) = post(&app, "/webhooks/discord/interactions", &h, ping).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&text).expect("json"),
        json!({"type": 1})
    );
    nothing_stored(&app).await;
}

/// The bot's own comment, an edited comment and an @mention in an issue body are
/// acknowledged and trigger nothing.
#[actix_web::test]
async fn chat_platforms_own_edited_and_body_mentions_on_github_trigger_nothing() {
    let app = app().await;
    let repo = json!({"full_name": "acme/app", "name": "app", "owner": {"login": "acme"}});
    let cases = [
        (
            "issue_comment",
            json!({"action": "created", "issue": {"number": 3, "body": "x"},
            "comment": {"id": 1, "body": "@flotilla[bot] I replied", "user": {"login": "flotilla[bot]"}},
            "repository": repo, "sender": {"login": "flotilla[bot]"}}),
        ),
        (
            "issue_comment",
            json!({"action": "edited", "issue": {"number": 3, "body": "x"},
            "comment": {"id": 2, "body": "@flotilla do it", "user": {"login": "alice"}},
            "repository": repo, "sender": {"login": "alice"}}),
        ),
        (
            "issues",
            json!({"action": "opened", "issue": {"number": 4, "title": "t",
            "body": "@flotilla fix this", "user": {"login": "alice"}, "state": "open", "labels": []},
            "repository": repo, "sender": {"login": "alice"}}),
        ),
    ];
    for (i, (event, body)) in cases.iter().enumerate() {
        let raw = body.to_string();
        let sig = flotilla::plugins::github::events::sign(GH_SECRET.as_bytes(), raw.as_bytes());
        let id = format!("delivery-{i}");
        let h = [
            ("x-github-event", *event),
            ("x-github-delivery", id.as_str()),
            ("x-hub-signature-256", sig.as_str()),
        ];
        let (status, text) = post(&app, "/webhooks/github", &h, &raw).await;
        assert_eq!(status, 200, "{event}: {text}");
    }
    nothing_stored(&app).await;
}

// ---- End to end: platform → webhook/poll/gateway → chat core → reply on the fake -----------

/// An app whose chat bridge talks to the fakes: `env` sets the platform sections, `allow`
/// is the YAML under `chat.allow`.
async fn chat_app(env: &[(&str, &str)], allow: &str) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    let extra = format!("chat:\n  allow:\n{allow}");
    spawn_app_with_env(Backend::Sqlite, &agents, &extra, dir, env)
        .await
        .expect("app")
}

/// The chat app on Slack (`sl`), serving U1.
async fn slack_chat_app(sl: &FakeSlack) -> TestApp {
    chat_app(
        &[
            ("FLOTILLA__SLACK__API_URL", sl.api_url.as_str()),
            ("FLOTILLA__SLACK__BOT_TOKEN", "xoxb-test"),
            ("FLOTILLA__SLACK__SIGNING_SECRET", SLACK_SECRET),
        ],
        "    slack: [U1]\n",
    )
    .await
}

/// Slack: a signed `app_mention` from an allowed user gets a reply in its thread; one from
/// a user missing from the allowlist gets none.
#[actix_web::test]
async fn chat_platforms_slack_mention_reaches_the_inbox_and_the_reply_reaches_the_thread() {
    let sl = FakeSlack::start("xoxb-test", &["C1"]).await;
    let app = slack_chat_app(&sl).await;
    let url = format!("{}/webhooks/slack/events", app.address);
    let stranger = fake_slack::envelope(json!({"type": "app_mention", "user": "U9",
        "text": "<@U0BOT> /status", "ts": "1700.4", "channel": "C1"}));
    assert_eq!(
        fake_slack::post_signed(&url, SLACK_SECRET, &stranger)
            .await
            .0,
        200
    );
    let ev = fake_slack::envelope(json!({"type": "app_mention", "user": "U1",
        "text": "<@U0BOT> /status", "ts": "1700.5", "channel": "C1"}));
    let (status, body) = fake_slack::post_signed(&url, SLACK_SECRET, &ev).await;
    assert_eq!(status, 200, "{body}");
    let reply = eventually(30, "a Slack reply", || async {
        sl.posted()
            .into_iter()
            .find(|p| p.thread_ts.as_deref() == Some("1700.5"))
    })
    .await;
    assert!(!reply.text.is_empty());
    assert!(
        sl.posted()
            .iter()
            .all(|p| p.thread_ts.as_deref() != Some("1700.4")),
        "the stranger got a reply"
    );
}

/// Telegram (long poll): a message reaches the inbox, the offset is confirmed, and the
/// reply reaches the chat.
#[actix_web::test]
async fn chat_platforms_telegram_poll_message_gets_a_reply() {
    let tg = FakeTelegram::start("123:ABC").await;
    let app = chat_app(
        &[
            ("FLOTILLA__TELEGRAM__API_URL", tg.url.as_str()),
            ("FLOTILLA__TELEGRAM__BOT_TOKEN", "123:ABC"),
        ],
        "    telegram: [\"42\"]\n",
    )
    .await;
    let u = tg.push_message(555, 42, "/status");
    let reply = eventually(30, "a Telegram reply", || async {
        tg.sent().into_iter().find(|m| m.chat_id == 555)
    })
    .await;
    assert!(!reply.text.is_empty());
    let id = u["update_id"].as_i64().expect("id");
    eventually(30, "the offset confirmed", || async {
        (tg.confirmed_offset() > id).then_some(())
    })
    .await;
    drop(app);
}

/// The fake Discord and an app on it that allows user `U1`, once the gateway identified.
async fn discord_chat_app() -> (FakeDiscord, TestApp) {
    let dc = FakeDiscord::start("bot-token", 500).await;
    let app = chat_app(
        &[
            ("FLOTILLA__DISCORD__API_URL", dc.api_url.as_str()),
            ("FLOTILLA__DISCORD__GATEWAY_URL", dc.gateway_url.as_str()),
            ("FLOTILLA__DISCORD__BOT_TOKEN", "bot-token"),
        ],
        "    discord: [\"U1\"]\n",
    )
    .await;
    eventually(30, "gateway identify", || async {
        (dc.gateway_counts().0 >= 1).then_some(())
    })
    .await;
    (dc, app)
}

/// Scenario 15 end to end: a guild message without the mention is ignored, a DM is served,
/// `<@BOTID> /status` runs `/status`, a user missing from the allowlist gets no reply.
#[actix_web::test]
async fn chat_platforms_discord_scenario_15_end_to_end() {
    let (dc, _app) = discord_chat_app().await;
    dc.message_create("C1", Some("G1"), "U1", "/status");
    dc.message_create("D9", None, "U9", "/status");
    dc.message_create("C2", Some("G1"), "U1", &format!("<@{BOT_ID}> /status"));
    dc.message_create("D1", None, "U1", "/status");
    eventually(30, "replies in C2 and D1", || async {
        let p = dc.posted();
        (p.iter().any(|m| m.channel == "C2") && p.iter().any(|m| m.channel == "D1")).then_some(())
    })
    .await;
    let posted = dc.posted();
    assert!(
        posted.iter().all(|m| m.channel != "C1"),
        "unmentioned guild message answered"
    );
    assert!(
        posted.iter().all(|m| m.channel != "D9"),
        "non-allowlisted user answered"
    );
    assert!(posted.iter().all(|m| m.content.chars().count() <= 2000));
}

/// Jira: a signed `comment_created` mentioning the bot gets an ADF reply on the issue.
#[actix_web::test]
async fn chat_platforms_jira_comment_mention_gets_an_adf_reply() {
    let jr = FakeJira::start("bot@acme.io", "jira-token", &["ABC-123"]).await;
    let app = chat_app(
        &[
            ("FLOTILLA__JIRA__BASE_URL", jr.url.as_str()),
            ("FLOTILLA__JIRA__EMAIL", "bot@acme.io"),
            ("FLOTILLA__JIRA__API_TOKEN", "jira-token"),
            ("FLOTILLA__JIRA__WEBHOOK_SECRET", JIRA_SECRET),
            ("FLOTILLA__JIRA__BOT_ACCOUNT_ID", "bot-account"),
        ],
        "    jira: [\"u1\"]\n",
    )
    .await;
    let hook =
        fake_jira::comment_created("ABC-123", "10001", "u1", "[~accountid:bot-account] /status");
    let status = fake_jira::post_signed(
        &format!("{}/webhooks/jira", app.address),
        JIRA_SECRET,
        &hook,
    )
    .await;
    assert_eq!(status, 200);
    let c = eventually(30, "a Jira reply", || async {
        jr.comments().into_iter().next()
    })
    .await;
    assert_eq!(c.issue, "ABC-123");
    assert_eq!(c.body["type"], "doc");
}

/// GitHub: a new comment mentioning the bot gets a reply comment; the bot's own reply (which
/// GitHub delivers as an `issue_comment` too) does not trigger another turn.
/// An app answering `@flotilla[bot]` mentions from alice on the fake GitHub, which sends it
/// its webhooks.
async fn github_chat_app(gh: &crate::fake_github::FakeGithub) -> TestApp {
    let app = chat_app(
        &[
            ("FLOTILLA__GITHUB__API_URL", gh.url.as_str()),
            ("FLOTILLA__GITHUB__TOKEN", "ghp_test"),
            ("FLOTILLA__GITHUB__WEBHOOK_SECRET", GH_SECRET),
            ("FLOTILLA__GITHUB__BOT_LOGIN", "flotilla[bot]"),
        ],
        "    github: [alice]\n",
    )
    .await;
    gh.set_webhook(&format!("{}/webhooks/github", app.address), GH_SECRET);
    app
}

#[actix_web::test]
async fn chat_platforms_github_mention_gets_one_reply_and_the_reply_does_not_loop() {
    let gh = crate::fake_github::FakeGithub::start("ghp_test").await;
    gh.create_repo("acme/app");
    let n = gh.create_issue("acme/app", "Bug", "@flotilla please fix");
    let app = github_chat_app(&gh).await;
    gh.add_comment("acme/app", n, "alice", "@flotilla /status")
        .await;
    let kind = "POST /repos/{owner}/{repo}/issues/{number}/comments";
    eventually(60, "a GitHub reply", || async {
        (gh.count(kind) >= 1).then_some(())
    })
    .await;
    // The reply's own webhook was delivered (and answered) before `count` could see it.
    eventually(30, "the reply's webhook", || async {
        gh.deliveries()
            .iter()
            .any(|d| d.body.contains("flotilla[bot]") && d.status == 200)
            .then_some(())
    })
    .await;
    let convs = app.store.list_conversations().await.expect("list");
    assert_eq!(convs.len(), 1);
    assert_eq!(gh.count(kind), 1, "the bot answered its own comment");
}

/// Closing a GitHub issue releases the worktree its conversation used, whoever closed it (a
/// close is not a message: no allowlist); closing an issue nobody talked about creates nothing.
#[actix_web::test]
async fn chat_platforms_closing_a_github_issue_removes_its_worktree() {
    if !require_tool("git") {
        return;
    }
    let gh = crate::fake_github::FakeGithub::start("ghp_test").await;
    gh.create_repo("acme/app");
    let n = gh.create_issue("acme/app", "Bug", "it breaks");
    let quiet = gh.create_issue("acme/app", "Other", "nobody asks");
    let app = github_chat_app(&gh).await;
    gh.add_comment("acme/app", n, "alice", "@flotilla /status")
        .await;
    let id = format!("github:acme/app#{n}");
    let wt = eventually(60, "the issue's worktree", || async {
        let c = app.store.get_conversation(&id).await.ok()?;
        c.worktree
            .map(PathBuf::from)
            .filter(|w| w.join(".git").exists())
    })
    .await;
    assert!(wt.ends_with(format!("issue-{n}")), "{}", wt.display());

    gh.close_issue("acme/app", n).await;
    eventually(60, "the worktree removed", || async {
        (!wt.exists()).then_some(())
    })
    .await;
    let c = app.store.get_conversation(&id).await.expect("conversation");
    assert_eq!(c.worktree, None);

    gh.close_issue("acme/app", quiet).await;
    eventually(30, "the quiet close delivered", || async {
        gh.deliveries()
            .iter()
            .filter(|d| d.event == "issues" && d.status == 200)
            .count()
            .eq(&2)
            .then_some(())
    })
    .await;
    let convs = app.store.list_conversations().await.expect("list");
    assert_eq!(convs.len(), 1, "a close creates no conversation");
}

/// A Telegram (long poll) app whose assistant is the scripted one, in `mode` (`batch` or
/// `stream`), with a codebase cloned for chat 555.
pub(crate) async fn telegram_assistant_app(tg: &FakeTelegram, mode: &str) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("chat");
    let base2 = base.clone();
    std::fs::create_dir_all(&base).expect("mkdir");
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    let extra = format!(
        "chat:\n  turn_timeout: 60s\n  stream_interval: 100ms\n  allow: {{ telegram: [\"42\"] }}\n  \
         reply_modes: {{ telegram: {mode} }}\n  workspace: {ws}\n  worktrees: {wt}\n  \
         assistant: {{ kind: claude, command: [\"{bin}\"] }}\n",
        ws = base.join("ws").display(),
        wt = base.join("worktrees").display(),
        bin = crate::chat::scripted_assistant_path().display(),
    );
    let app = spawn_app_with_env(
        Backend::Sqlite,
        &agents,
        &extra,
        dir,
        &[
            ("FLOTILLA__TELEGRAM__API_URL", tg.url.as_str()),
            ("FLOTILLA__TELEGRAM__BOT_TOKEN", "123:ABC"),
        ],
    )
    .await
    .expect("app");
    // `/clone` takes owner/name from the path, as from a URL.
    let owner = base2.join("src").join("acme");
    std::fs::create_dir_all(&owner).expect("mkdir");
    crate::helpers::git(
        &owner,
        &["clone", "-q", &app.repo.display().to_string(), "widget"],
    );
    tg.push_message(
        555,
        42,
        &format!("/clone {}", owner.join("widget").display()),
    );
    let r = eventually(60, "the clone's reply", || async {
        tg.sent().into_iter().next()
    })
    .await;
    assert!(r.text.contains("acme/widget"), "{}", r.text);
    app
}

/// Scenario 14 end to end: a 10,000-character answer reaches Telegram as several messages
/// of at most 4,096 characters; the chunk MarkdownV2 refuses is resent as plain text, and
/// flood control on the way only delays it.
#[actix_web::test]
async fn chat_platforms_scenario_14_a_long_answer_reaches_telegram_split_and_complete() {
    if !crate::helpers::require_tool("git") {
        return;
    }
    let tg = FakeTelegram::start("123:ABC").await;
    let _app = telegram_assistant_app(&tg, "batch").await;
    let before = tg.sent().len();
    let para = format!("Paragraph {} ends here.", "y".repeat(270));
    let prompt = vec![para; 36].join("\n\n");
    assert!(prompt.chars().count() > 10_000);
    tg.reject_markdown_next(1);
    tg.flood_next(1, 1);
    tg.push_message(555, 42, &prompt);
    let sent = eventually(90, "the whole answer", || async {
        let s: Vec<_> = tg.sent().into_iter().skip(before).collect();
        let n: usize = s.iter().map(|m| m.text.matches("ends here.").count()).sum();
        (n == 36).then_some(s)
    })
    .await;
    assert!(sent.len() >= 3, "{} messages", sent.len());
    assert!(sent.iter().all(|m| m.text.chars().count() <= 4096));
    assert_eq!(tg.rejected_markdown(), 1);
    assert_eq!(
        sent.iter().filter(|m| m.parse_mode.is_none()).count(),
        1,
        "exactly the refused chunk went as plain text"
    );
}

/// Flood control in the middle of a streamed answer: the stream completes after the wait.
#[actix_web::test]
async fn chat_platforms_telegram_stream_completes_after_flood_control() {
    if !crate::helpers::require_tool("git") {
        return;
    }
    let tg = FakeTelegram::start("123:ABC").await;
    let _app = telegram_assistant_app(&tg, "stream").await;
    let before = tg.sent().len();
    tg.flood_next(2, 1);
    tg.push_message(555, 42, "TOOLS please");
    eventually(60, "the streamed answer complete", || async {
        tg.sent()
            .into_iter()
            .skip(before)
            .any(|m| m.text.contains("Done"))
            .then_some(())
    })
    .await;
    assert!(tg.calls("sendmessage") + tg.calls("editmessagetext") >= 3);
}

/// Telegram in setWebhook mode: an update with the right secret token is stored and
/// answered (and no long poll runs: `getUpdates` is never called).
#[actix_web::test]
async fn chat_platforms_telegram_webhook_update_gets_a_reply() {
    let tg = FakeTelegram::start("123:ABC").await;
    let app = chat_app(
        &[
            ("FLOTILLA__TELEGRAM__API_URL", tg.url.as_str()),
            ("FLOTILLA__TELEGRAM__BOT_TOKEN", "123:ABC"),
            ("FLOTILLA__TELEGRAM__SECRET_TOKEN", TG_SECRET),
        ],
        "    telegram: [\"42\"]\n",
    )
    .await;
    let update =
        json!({"update_id": 9, "message": {"message_id": 3, "from": {"id": 42, "is_bot": false},
        "chat": {"id": 777, "type": "private"}, "date": 1, "text": "/status"}})
        .to_string();
    let h = [("x-telegram-bot-api-secret-token", TG_SECRET)];
    let (status, body) = post(&app, "/webhooks/telegram", &h, &update).await;
    assert_eq!(status, 200, "{body}");
    // A redelivery of the same update is acknowledged and stored once.
    assert_eq!(post(&app, "/webhooks/telegram", &h, &update).await.0, 200);
    eventually(30, "a Telegram reply", || async {
        tg.sent().into_iter().find(|m| m.chat_id == 777)
    })
    .await;
    assert_eq!(tg.calls("getupdates"), 0, "webhook mode must not poll");
    assert_eq!(app.store.list_conversations().await.expect("list").len(), 1);
}

/// Discord interactions: a signed application command is stored and acknowledged with a
/// type 4 answer; the reply comes through REST.
#[actix_web::test]
async fn chat_platforms_discord_slash_command_interaction_gets_a_reply() {
    let dc = FakeDiscord::start("bot-token", 1000).await;
    let pk = fake_discord::public_key_hex(&DISCORD_KEY);
    let app = chat_app(
        &[
            ("FLOTILLA__DISCORD__API_URL", dc.api_url.as_str()),
            ("FLOTILLA__DISCORD__BOT_TOKEN", "bot-token"),
            ("FLOTILLA__DISCORD__GATEWAY_URL", dc.gateway_url.as_str()),
            ("FLOTILLA__DISCORD__PUBLIC_KEY", pk.as_str()),
        ],
        "    discord: [\"U1\"]\n",
    )
    .await;
    let body = json!({"id": "5001", "type": 2, "application_id": "2", "channel_id": "C7",
        "data": {"id": "1", "name": "status", "type": 1}, "member": {"user": {"id": "U1"}}})
    .to_string();
    let (sig, ts) = fake_discord::sign_interaction(&DISCORD_KEY, &body);
    let h = [
        ("x-signature-ed25519", sig.as_str()),
        ("x-signature-timestamp", ts.as_str()),
    ];
    let (status, text) = post(&app, "/webhooks/discord/interactions", &h, &body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).expect("json")["type"],
        4
    );
    eventually(30, "a reply in C7", || async {
        dc.posted().into_iter().find(|m| m.channel == "C7")
    })
    .await;
}

/// The `chat` notifier posts a session's notification into the Slack thread it was spawned
/// from under the notification's key: one that may have been posted before (a retry, a restart
/// mid-delivery) reads the thread and is not posted again.
#[actix_web::test]
async fn chat_platforms_slack_a_chat_notification_that_may_have_been_posted_is_posted_once() {
    use flotilla::actors::chat::notifier::BridgeNotifier;
    use flotilla::actors::chat::platforms::ChatPlatforms;
    use flotilla::plugins::{Notification, Notifier};

    let sl = FakeSlack::start("xoxb-test", &["C1"]).await;
    sl.add_message("C1", "1700.1", None, "U1", "<@U0BOT> /spawn demo fix it");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = flotilla::store::open(&format!("sqlite://{}/c.db", dir.path().display()))
        .await
        .expect("store");
    let conv = store
        .upsert_conversation("slack", "C1:1700.1", chrono::Utc::now())
        .await
        .expect("conversation");
    store
        .link_session_to_conversation("demo-1", &conv.id)
        .await
        .expect("link");
    let mut platforms = ChatPlatforms::default();
    let slack = SlackPlatform::new(&sl.api_url, "xoxb-test", TIMEOUT).expect("platform");
    platforms.register(Arc::new(slack));
    let n = BridgeNotifier::new(store, platforms);
    let note = Notification {
        id: "n1".into(),
        priority: "urgent".into(),
        event: "agent.exited".into(),
        session: Some("demo-1".into()),
        message: "demo-1 exited with status 3".into(),
        created_at: chrono::Utc::now().to_rfc3339(),
        ..Notification::default()
    };
    let bot_posts = || {
        sl.posted()
            .into_iter()
            .filter(|p| p.text.contains("🔔"))
            .count()
    };
    n.notify(&note).await.expect("posted");
    assert_eq!(bot_posts(), 1);
    assert_eq!(
        sl.calls("conversations.replies"),
        0,
        "a first attempt reads nothing"
    );
    let again = Notification {
        may_be_posted: true,
        ..note.clone()
    };
    n.notify(&again).await.expect("found");
    assert_eq!(bot_posts(), 1, "{:?}", sl.posted());
    assert_eq!(sl.calls("conversations.replies"), 1);
    n.notify(&Notification {
        id: "n2".into(),
        ..again
    })
    .await
    .expect("posted");
    assert_eq!(bot_posts(), 2, "another notification is posted");
}
