//! The chat adapters against what the platforms' published references make a client
//! responsible for: Slack's text markup on the way in and its slash commands, Telegram's
//! forum topics and group migrations, Discord's global and per-bucket rate limits.
//!
//! Test names start with `chat_platforms_` so the `chat_platforms` group runs them.

use std::path::Path;
use std::time::Duration;

use flotilla::plugins::chat::discord::DiscordPlatform;
use flotilla::plugins::chat::slack::{self, SlackEvent, SlackPlatform};
use flotilla::plugins::chat::telegram::TelegramPlatform;
use flotilla::plugins::chat::telegram_api::MovedChats;
use flotilla::plugins::notifiers::discord::{DiscordNotifier, Target};
use flotilla::plugins::notifiers::telegram::TelegramNotifier;
use flotilla::plugins::{ChatPlatform, Notification, Notifier};
use serde_json::{json, Value};

use crate::chat_platforms::{telegram_poller, RecordingInbox};
use crate::fake_discord::FakeDiscord;
use crate::fake_slack::{self, FakeSlack};
use crate::fake_telegram::{ChatCall, FakeTelegram};
use crate::helpers::{eventually, spawn_app_with_env, Backend, TestApp, ECHO_AGENT};

const TIMEOUT: Duration = Duration::from_secs(10);
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// Slack delivers `&`, `<`, `>` as entities and wraps every URL in `<…>` ("Formatting text
/// for app surfaces"): the assistant and the commands get the text as the person wrote it,
/// in events and in a thread's history alike.
#[actix_web::test]
async fn chat_platforms_slack_text_arrives_as_the_person_wrote_it() {
    let typed = "/clone https://github.com/acme/w then fix Vec<T> & Option<&str> for <@U2>";
    let delivered = format!("<@U0BOT> {}", fake_slack::as_delivered(typed));
    assert!(delivered.contains("<https://github.com/acme/w>"));
    let body = fake_slack::envelope(json!({"type": "app_mention", "user": "U1",
        "text": delivered, "ts": "1700.1", "channel": "C1"}));
    let Ok(SlackEvent::Message(m)) = slack::parse_event(body.to_string().as_bytes(), true) else {
        panic!("a mention is a message");
    };
    assert_eq!(m.text, typed);

    // Mentions, channels and labelled links as Slack writes them.
    let body = fake_slack::envelope(json!({"type": "app_mention", "user": "U1",
        "text": "<@U0BOT> ask <@U2> in <#C9|ops>, see <https://ci.example/run?a=1&amp;b=2|the run> and <mailto:a@b.io|a@b.io> <!here>",
        "ts": "1700.2", "channel": "C1"}));
    let Ok(SlackEvent::Message(m)) = slack::parse_event(body.to_string().as_bytes(), true) else {
        panic!("a mention is a message");
    };
    assert_eq!(
        m.text,
        "ask @U2 in #ops, see the run (https://ci.example/run?a=1&b=2) and a@b.io @here"
    );

    let sl = FakeSlack::start("xoxb-test", &["C1"]).await;
    sl.add_message(
        "C1",
        "1700.000001",
        None,
        "U1",
        &fake_slack::as_delivered("start"),
    );
    sl.add_message(
        "C1",
        "1700.000002",
        Some("1700.000001"),
        "U1",
        &fake_slack::as_delivered("see https://x.example/a & use Box<dyn Error>"),
    );
    let p = SlackPlatform::new(&sl.api_url, "xoxb-test", TIMEOUT).expect("platform");
    let h = p
        .history("C1:1700.000001", "C1:1700.000003", 10)
        .await
        .expect("history");
    assert!(
        h.iter()
            .any(|m| m.text == "see https://x.example/a & use Box<dyn Error>"),
        "{h:?}"
    );
}

/// Slack retries an event it thinks was not acknowledged, with `X-Slack-Retry-Num` and
/// `X-Slack-Retry-Reason` (Events API, "Retries"): the retry is acknowledged with a 2xx and
/// the message is served once.
#[actix_web::test]
async fn chat_platforms_slack_retried_event_is_served_once() {
    let sl = FakeSlack::start("xoxb-test", &["C1"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    let app = spawn_app_with_env(
        Backend::Sqlite,
        &agents,
        "chat:\n  allow:\n    slack: [U1]\n",
        dir,
        &[
            ("FLOTILLA__SLACK__API_URL", sl.api_url.as_str()),
            ("FLOTILLA__SLACK__BOT_TOKEN", "xoxb-test"),
            ("FLOTILLA__SLACK__SIGNING_SECRET", SLACK_SECRET),
        ],
    )
    .await
    .expect("app");
    let url = format!("{}/webhooks/slack/events", app.address);
    let ev = fake_slack::envelope(json!({"type": "app_mention", "user": "U1",
        "text": "<@U0BOT> /status", "ts": "1700.7", "channel": "C1"}));
    let raw = ev.to_string();
    let (status, body) = fake_slack::post_signed(&url, SLACK_SECRET, &ev).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"new\":true"), "{body}");
    for (n, reason) in [("1", "http_timeout"), ("2", "http_error")] {
        let ts = chrono::Utc::now().timestamp();
        let r = reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", ts.to_string())
            .header(
                "x-slack-signature",
                fake_slack::sign(SLACK_SECRET, ts, &raw),
            )
            .header("x-slack-retry-num", n)
            .header("x-slack-retry-reason", reason)
            .body(raw.clone())
            .send()
            .await
            .expect("retry");
        assert_eq!(r.status().as_u16(), 200, "retry {n}");
        let answer: serde_json::Value = r.json().await.expect("json");
        assert_eq!(
            answer["new"],
            json!(false),
            "retry {n} stored again: {answer}"
        );
    }
    eventually(30, "a Slack reply", || async {
        sl.posted()
            .into_iter()
            .find(|p| p.thread_ts.as_deref() == Some("1700.7"))
    })
    .await;
    assert_eq!(app.store.list_conversations().await.expect("list").len(), 1);
    let replies = sl
        .posted()
        .into_iter()
        .filter(|p| p.thread_ts.as_deref() == Some("1700.7"))
        .count();
    assert_eq!(replies, 1, "one message, one reply");
}

/// An app whose Slack is `sl`, taking messages from `U1`.
async fn slack_app(sl: &FakeSlack) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    spawn_app_with_env(
        Backend::Sqlite,
        &agents,
        "chat:\n  allow:\n    slack: [U1]\n",
        dir,
        &[
            ("FLOTILLA__SLACK__API_URL", sl.api_url.as_str()),
            ("FLOTILLA__SLACK__BOT_TOKEN", "xoxb-test"),
            ("FLOTILLA__SLACK__SIGNING_SECRET", SLACK_SECRET),
        ],
    )
    .await
    .expect("app")
}

/// Replies posted in `channel` itself (not in a thread) whose text contains `needle`.
fn channel_replies(sl: &FakeSlack, channel: &str, needle: &str) -> usize {
    sl.posted()
        .into_iter()
        .filter(|p| p.channel == channel && p.thread_ts.is_none() && p.text.contains(needle))
        .count()
}

/// In Slack a message starting with `/` is a slash command, so the bridge's commands reach
/// it as slash commands ("Implementing slash commands"): a signed form POST that Slack shows
/// as an error unless answered 200 within three seconds. The command is acknowledged as
/// soon as it is stored (an ephemeral note, before the answer: here the answer meets a
/// 429 and waits three seconds), and the answer is posted in the channel by
/// `chat.postMessage`. The team's one command (`/flotilla status`) and a command registered
/// under the bridge's own name (`/status`) are the same conversation: the channel's.
#[actix_web::test]
async fn chat_platforms_slack_slash_command_is_acknowledged_then_answered_in_the_channel() {
    let sl = FakeSlack::start("xoxb-test", &["C1"]).await;
    let app = slack_app(&sl).await;
    let url = format!("{}/webhooks/slack/commands", app.address);
    sl.limit_next(1, 3);
    let form = fake_slack::slash_command("/flotilla", "status", "C1", "U1", None);
    let (status, body) = fake_slack::post_form_signed(&url, SLACK_SECRET, &form).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        sl.posted().is_empty(),
        "the acknowledgement waited for the answer"
    );
    let ack: serde_json::Value = serde_json::from_str(&body).expect("a JSON acknowledgement");
    assert_eq!(ack["response_type"], json!("ephemeral"), "{ack}");
    assert!(ack["text"].as_str().is_some_and(|t| !t.is_empty()), "{ack}");
    eventually(30, "the answer in the channel", || async {
        (channel_replies(&sl, "C1", "Platform: slack") == 1).then_some(())
    })
    .await;
    let form = fake_slack::slash_command("/status", "", "C1", "U1", None);
    let (status, body) = fake_slack::post_form_signed(&url, SLACK_SECRET, &form).await;
    assert_eq!(status, 200, "{body}");
    eventually(30, "the second answer", || async {
        (channel_replies(&sl, "C1", "Platform: slack") == 2).then_some(())
    })
    .await;
    let convs = app.store.list_conversations().await.expect("list");
    assert_eq!(
        convs.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec!["slack:C1"]
    );
}

/// Slash commands are signed like events ("Verifying requests from Slack"): a wrong
/// signature, a tampered body or a timestamp older than five minutes is refused with 401
/// and nothing is stored or answered. Slack's check of the URL's certificate
/// (`ssl_check=1`, no command) is answered 200 and changes nothing.
#[actix_web::test]
async fn chat_platforms_slack_forged_slash_command_is_refused_and_not_stored() {
    let sl = FakeSlack::start("xoxb-test", &["C1"]).await;
    let app = slack_app(&sl).await;
    let url = format!("{}/webhooks/slack/commands", app.address);
    let form = fake_slack::slash_command("/flotilla", "status", "C1", "U1", None);
    let (status, _) = fake_slack::post_form_signed(&url, "not-the-secret", &form).await;
    assert_eq!(status, 401, "wrong secret");
    let now = chrono::Utc::now().timestamp();
    let (status, _) = fake_slack::post_form_signed_at(&url, SLACK_SECRET, &form, now - 600).await;
    assert_eq!(status, 401, "stale timestamp");
    let tampered = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", now.to_string())
        .header(
            "x-slack-signature",
            fake_slack::sign(SLACK_SECRET, now, &form),
        )
        .body(form.replace("text=status", "text=spawn+demo+rm+-rf"))
        .send()
        .await
        .expect("post");
    assert_eq!(tampered.status().as_u16(), 401, "tampered body");
    let unsigned = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(unsigned.status().as_u16(), 401, "unsigned");
    let ssl = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("ssl_check=1&token=gIkuvaNzQIHg97ATvDxqgjtO")
        .send()
        .await
        .expect("post");
    assert_eq!(ssl.status().as_u16(), 200, "ssl_check");
    assert!(app
        .store
        .list_conversations()
        .await
        .expect("list")
        .is_empty());
    // A signed command from the same app is taken: the refusals were the signatures'.
    let (status, _) = fake_slack::post_form_signed(&url, SLACK_SECRET, &form).await;
    assert_eq!(status, 200);
    eventually(30, "the answer", || async {
        (channel_replies(&sl, "C1", "Platform: slack") == 1).then_some(())
    })
    .await;
    assert_eq!(sl.posted().len(), 1, "{:?}", sl.posted());
}

/// A slash command typed where the bot is not a member (a private channel, a DM between
/// other people): `chat.postMessage` answers `not_in_channel`, so the answer goes through
/// the command's `response_url` ("Handling user interaction", message responses: a JSON
/// POST of `text` and `response_type`), posted in the channel, instead of being lost after
/// the acknowledgement.
#[actix_web::test]
async fn chat_platforms_slack_slash_command_where_the_bot_is_not_in_is_answered_through_its_response_url(
) {
    let sl = FakeSlack::start("xoxb-test", &["C1", "G1"]).await;
    sl.not_in("G1");
    let app = slack_app(&sl).await;
    let url = format!("{}/webhooks/slack/commands", app.address);
    let form = sl.slash_command("/flotilla", "status", "G1", "U1");
    let (status, body) = fake_slack::post_form_signed(&url, SLACK_SECRET, &form).await;
    assert_eq!(status, 200, "{body}");
    let answer = eventually(30, "the answer through the response_url", || async {
        sl.responses()
            .into_iter()
            .find(|r| r.text.contains("Platform: slack"))
    })
    .await;
    assert_eq!(answer.channel, "G1");
    assert_eq!(answer.response_type, "in_channel");
    assert!(
        sl.calls("chat.postMessage") >= 1,
        "the channel was tried first"
    );
    assert!(sl.posted().is_empty(), "{:?}", sl.posted());
    // A command in a channel the bot is in is still answered there, not through its URL.
    let form = sl.slash_command("/status", "", "C1", "U1");
    let (status, _) = fake_slack::post_form_signed(&url, SLACK_SECRET, &form).await;
    assert_eq!(status, 200);
    eventually(30, "the answer in C1", || async {
        (channel_replies(&sl, "C1", "Platform: slack") == 1).then_some(())
    })
    .await;
    assert_eq!(sl.responses().len(), 1, "{:?}", sl.responses());
}

/// The adapter's side of a `response_url`: `not_in_channel` from `chat.postMessage` is a
/// refusal `cannot_post_here` recognises (a rate limit or a bad token is not), and a long
/// reply posted to the URL is split under Slack's limit, escaped, `in_channel`, in no more
/// posts than asked, the last saying the rest is cut; Slack's sixth post is refused
/// (`used_url`) and fails the call.
#[actix_web::test]
async fn chat_platforms_slack_response_url_posts_are_split_escaped_and_capped() {
    let sl = FakeSlack::start("xoxb-test", &["C1", "G1"]).await;
    sl.not_in("G1");
    let p = SlackPlatform::new(&sl.api_url, "xoxb-test", TIMEOUT).expect("platform");
    let refused = p.send("G1", "hi").await.expect_err("not in the channel");
    assert!(p.cannot_post_here(&refused), "{refused}");
    let other = SlackPlatform::new(&sl.api_url, "xoxb-wrong", TIMEOUT).expect("platform");
    let bad_token = other.send("C1", "hi").await.expect_err("invalid_auth");
    assert!(!p.cannot_post_here(&bad_token), "{bad_token}");

    let url = sl.response_url("G1");
    let long = format!("Vec<T> {}", "word ".repeat(5_000));
    let posts = p.send_to_address(&url, &long, 4).await.expect("posted");
    assert_eq!(posts, 4);
    let r = sl.responses();
    assert_eq!(r.len(), 4, "{r:?}");
    assert!(r
        .iter()
        .all(|m| m.response_type == "in_channel" && m.channel == "G1"));
    assert!(r
        .iter()
        .all(|m| m.text.chars().count() <= slack::MAX_MESSAGE));
    assert!(r[0].text.starts_with("Vec&lt;T&gt; word"), "{}", r[0].text);
    // The reply needed more posts than asked: the last says it is cut.
    assert!(r[3].text.ends_with(slack::CUT_NOTICE), "{}", r[3].text);
    assert!(!r[2].text.contains("is cut"), "{}", r[2].text);
    assert_eq!(p.send_to_address(&url, "fifth", 5).await.expect("fifth"), 1);
    let used = p
        .send_to_address(&url, "sixth", 5)
        .await
        .expect_err("used_url");
    assert!(
        !used.to_string().contains(&url),
        "the error names the URL: {used}"
    );
    assert_eq!(sl.responses().len(), 5);
}

/// A reply for a channel the bot is not in goes through the conversation's newest
/// `response_url` still valid: a later command that carries none (here stripped) is
/// answered through the earlier command's URL while it is younger than Slack's 30 minutes,
/// and not at all once it is older (Slack would refuse it).
#[actix_web::test]
async fn chat_platforms_slack_reply_uses_the_newest_response_url_only_within_30_minutes() {
    let sl = FakeSlack::start("xoxb-test", &["G1"]).await;
    sl.not_in("G1");
    let app = slack_app(&sl).await;
    let url = format!("{}/webhooks/slack/commands", app.address);
    let form = sl.slash_command("/flotilla", "status", "G1", "U1");
    let (status, _) = fake_slack::post_form_signed(&url, SLACK_SECRET, &form).await;
    assert_eq!(status, 200);
    eventually(30, "the first answer", || async {
        (sl.responses().len() == 1).then_some(())
    })
    .await;
    let bare = fake_slack::slash_command_with_url("/status", "", "G1", "U1", None, "");
    let (status, _) = fake_slack::post_form_signed(&url, SLACK_SECRET, &bare).await;
    assert_eq!(status, 200);
    let both = eventually(30, "the second answer through the first URL", || async {
        let r = sl.responses();
        (r.len() == 2).then_some(r)
    })
    .await;
    assert_eq!(both[0].path, both[1].path);
    app.clock.advance(Duration::from_secs(31 * 60));
    let bare = fake_slack::slash_command_with_url("/status", "", "G1", "U1", None, "");
    let (status, _) = fake_slack::post_form_signed(&url, SLACK_SECRET, &bare).await;
    assert_eq!(status, 200);
    eventually(
        30,
        "the third command handled and its answer tried",
        || async {
            let pending = app
                .store
                .conversations_with_pending()
                .await
                .expect("pending");
            pending.is_empty().then_some(())
        },
    )
    .await;
    assert!(
        sl.calls("chat.postMessage") >= 3,
        "every answer tried the channel"
    );
    assert_eq!(sl.responses().len(), 2, "an expired URL was used");
}

/// A `response_url` is a capability (anyone holding it may post in the channel for 30
/// minutes): it is kept with the stored command only, and no API answer, event or
/// acknowledgement shows it.
#[actix_web::test]
async fn chat_platforms_slack_response_url_is_shown_by_no_api_or_event() {
    let sl = FakeSlack::start("xoxb-test", &["G1"]).await;
    sl.not_in("G1");
    let app = slack_app(&sl).await;
    let hook = sl.response_url("G1");
    let secret = hook
        .rsplit('/')
        .next()
        .expect("the URL's last part")
        .to_string();
    let form = fake_slack::slash_command_with_url("/flotilla", "status", "G1", "U1", None, &hook);
    let url = format!("{}/webhooks/slack/commands", app.address);
    let (status, ack) = fake_slack::post_form_signed(&url, SLACK_SECRET, &form).await;
    assert_eq!(status, 200, "{ack}");
    eventually(30, "the answer through the response_url", || async {
        (!sl.responses().is_empty()).then_some(())
    })
    .await;
    let mut shown = vec![("ack".to_string(), ack)];
    for path in [
        "/api/v1/conversations",
        "/api/v1/conversations/slack:G1",
        "/api/v1/board",
        "/api/v1/notifications",
        "/api/v1/sessions",
    ] {
        let (status, v) = app.get(path).await;
        assert_eq!(status, 200, "{path}: {v}");
        shown.push((path.to_string(), v.to_string()));
    }
    shown.push(("metrics".into(), app.metrics().await));
    let events = app.store.events_after(0, 10_000).await.expect("events");
    shown.push((
        "events".into(),
        serde_json::to_string(&events).expect("events as JSON"),
    ));
    assert!(
        shown[1].1.contains("slack:G1"),
        "the conversation is listed: {}",
        shown[1].1
    );
    for (what, text) in &shown {
        assert!(
            !text.contains(&secret),
            "{what} shows the response_url: {text}"
        );
    }
}

/// A slash command has no event id; its `trigger_id` is unique to the invocation. A POST
/// made again with the same `trigger_id` is acknowledged (an empty 200: Slack shows
/// nothing) and stored once, so the command runs and is answered once.
#[actix_web::test]
async fn chat_platforms_slack_slash_command_posted_again_is_stored_once() {
    let sl = FakeSlack::start("xoxb-test", &["C1"]).await;
    let app = slack_app(&sl).await;
    let url = format!("{}/webhooks/slack/commands", app.address);
    let form = fake_slack::slash_command(
        "/flotilla",
        "status",
        "C1",
        "U1",
        Some("398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"),
    );
    let (status, first) = fake_slack::post_form_signed(&url, SLACK_SECRET, &form).await;
    assert_eq!(status, 200, "{first}");
    assert!(first.contains("ephemeral"), "{first}");
    for n in 1..=2 {
        let (status, again) = fake_slack::post_form_signed(&url, SLACK_SECRET, &form).await;
        assert_eq!(status, 200, "again {n}: {again}");
        assert!(again.is_empty(), "again {n} taken as new: {again}");
    }
    eventually(30, "the answer", || async {
        (channel_replies(&sl, "C1", "Platform: slack") == 1).then_some(())
    })
    .await;
    // A different invocation of the same command is a new message.
    let form = fake_slack::slash_command("/flotilla", "status", "C1", "U1", None);
    let (_, second) = fake_slack::post_form_signed(&url, SLACK_SECRET, &form).await;
    assert!(second.contains("ephemeral"), "{second}");
    eventually(30, "the second answer", || async {
        (channel_replies(&sl, "C1", "Platform: slack") == 2).then_some(())
    })
    .await;
    assert_eq!(
        channel_replies(&sl, "C1", "Platform: slack"),
        2,
        "one answer per invocation"
    );
}

/// `chat.postMessage`'s `rate_limited` ("Application has posted too many messages") comes
/// as a Web API error in an HTTP 200: the reply waits and goes out instead of being lost.
#[actix_web::test]
async fn chat_platforms_slack_reply_waits_out_rate_limited_in_a_200() {
    let sl = FakeSlack::start("xoxb-test", &["C1"]).await;
    let p = SlackPlatform::new(&sl.api_url, "xoxb-test", TIMEOUT).expect("platform");
    sl.too_many_posts(1);
    p.send("C1:1700.1", "Working")
        .await
        .expect("posted after the wait");
    assert_eq!(sl.posted().len(), 1);
    assert_eq!(sl.calls("chat.postMessage"), 2, "one refusal, one post");
    let e = p
        .send("C9:1700.1", "x")
        .await
        .expect_err("channel_not_found");
    assert!(e.to_string().contains("channel_not_found"), "{e}");
    assert!(!e.is_retriable());
}

/// A message in a forum topic (`is_topic_message`, `message_thread_id`) is a conversation of
/// its own, and the reply goes to that topic: without `message_thread_id` Telegram posts it
/// in the forum's General topic.
#[actix_web::test]
async fn chat_platforms_telegram_replies_in_the_forum_topic_the_message_came_from() {
    let tg = FakeTelegram::start("123:ABC").await;
    let mut poller = telegram_poller(&tg);
    let inbox = RecordingInbox::default();
    tg.push_topic_message(-1001, 7, 42, "/status");
    tg.push_topic_message(-1001, 9, 42, "/status");
    tg.push_message(-1002, 42, "/status");
    assert_eq!(poller.poll_once(&inbox).await.expect("poll"), 3);
    let threads: Vec<String> = inbox
        .messages
        .lock()
        .expect("lock")
        .iter()
        .map(|m| m.thread.clone())
        .collect();
    assert_eq!(threads, vec!["-1001:7", "-1001:9", "-1002"]);

    let p = TelegramPlatform::new(&tg.url, "123:ABC", TIMEOUT).expect("platform");
    let id = p.send(&threads[0], "Thinking").await.expect("sent");
    p.edit(&threads[0], &id, "Thinking… done.")
        .await
        .expect("edited");
    p.send(&threads[2], "plain group").await.expect("sent");
    let sent = tg.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        (sent[0].chat_id, sent[0].message_thread_id),
        (-1001, Some(7))
    );
    assert_eq!(
        (sent[0].text.as_str(), sent[0].edits),
        ("Thinking… done.", 1)
    );
    assert_eq!((sent[1].chat_id, sent[1].message_thread_id), (-1002, None));
}

/// In a group with several bots a command names its bot (`/cmd@botname`): one for another
/// bot is not ours, in the long poll and on the webhook alike (our name from `getMe`).
#[actix_web::test]
async fn chat_platforms_telegram_commands_for_another_bot_are_not_taken() {
    let tg = FakeTelegram::start("123:ABC").await;
    let mut poller = telegram_poller(&tg);
    poller.learn_username().await;
    let inbox = RecordingInbox::default();
    tg.push_message(-100, 42, "/status@OtherBot");
    tg.push_message(-100, 42, "/help@FlotillaBot");
    tg.push_message(-100, 42, "/status");
    poller.poll_once(&inbox).await.expect("poll");
    let texts: Vec<String> = inbox
        .messages
        .lock()
        .expect("lock")
        .iter()
        .map(|m| m.text.clone())
        .collect();
    assert_eq!(texts, vec!["/help", "/status"]);

    let dir = tempfile::tempdir().expect("tempdir");
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    let app = spawn_app_with_env(
        Backend::Sqlite,
        &agents,
        "chat:\n  allow:\n    telegram: [\"42\"]\n",
        dir,
        &[
            ("FLOTILLA__TELEGRAM__API_URL", tg.url.as_str()),
            ("FLOTILLA__TELEGRAM__BOT_TOKEN", "123:ABC"),
            ("FLOTILLA__TELEGRAM__SECRET_TOKEN", "abc_DEF-123"),
        ],
    )
    .await
    .expect("app");
    let post = |id: i64, text: &str| {
        let update = json!({"update_id": id, "message": {"message_id": id,
            "from": {"id": 42, "is_bot": false, "first_name": "U"},
            "chat": {"id": -200, "type": "group", "title": "G"}, "date": 1, "text": text}});
        app.client
            .post(format!("{}/webhooks/telegram", app.address))
            .header("x-telegram-bot-api-secret-token", "abc_DEF-123")
            .json(&update)
            .send()
    };
    assert_eq!(
        post(1, "/status@OtherBot").await.expect("post").status(),
        200
    );
    assert!(app
        .store
        .list_conversations()
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        post(2, "/status@FlotillaBot").await.expect("post").status(),
        200
    );
    assert_eq!(app.store.list_conversations().await.expect("list").len(), 1);
}

/// A group upgraded to a supergroup answers `parameters.migrate_to_chat_id` (Bot API,
/// `ResponseParameters`): the reply goes to the new chat, and later calls go there at once.
#[actix_web::test]
async fn chat_platforms_telegram_follows_a_group_migrated_to_a_supergroup() {
    let tg = FakeTelegram::start("123:ABC").await;
    tg.migrate(-555, -100_555);
    let p = TelegramPlatform::new(&tg.url, "123:ABC", TIMEOUT).expect("platform");
    let id = p
        .send("-555", "first")
        .await
        .expect("sent after the migration");
    p.edit("-555", &id, "first, edited").await.expect("edited");
    p.send("-555", "second").await.expect("sent");
    let sent = tg.sent();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|m| m.chat_id == -100_555), "{sent:?}");
    assert_eq!(sent[0].text, "first, edited");
    assert_eq!(
        tg.calls("sendmessage") + tg.calls("editmessagetext"),
        4,
        "the old chat refused once, then every call went to the new one"
    );
}

/// The Telegram notifier follows the migration too: a notification for the old group lands
/// in the supergroup, and the post key it answers is the new chat's (replies come from
/// there).
#[actix_web::test]
async fn chat_platforms_telegram_notifier_follows_a_group_migrated_to_a_supergroup() {
    let tg = FakeTelegram::start("123:ABC").await;
    tg.migrate(-555, -100_555);
    let n = TelegramNotifier::new(
        reqwest::Client::new(),
        tg.url.clone(),
        "123:ABC".into(),
        "-555".into(),
    );
    let note = Notification {
        id: "n1".into(),
        priority: "action".into(),
        event: "merge.ready".into(),
        session: Some("demo-1".into()),
        message: "Ready to merge.".into(),
        ..Notification::default()
    };
    let posted = n
        .notify(&note)
        .await
        .expect("sent to the supergroup")
        .expect("posted");
    assert_eq!(posted.chat, "-100555");
    n.notify(&Notification {
        id: "n2".into(),
        ..note
    })
    .await
    .expect("second");
    assert!(tg.sent().iter().all(|m| m.chat_id == -100_555));
    assert_eq!(tg.sent().len(), 2);
    assert_eq!(tg.calls("sendmessage"), 3, "the old group refused once");
}

const TG_SECRET: &str = "abc_DEF-123";

/// An app taking Telegram updates on its webhook (no long poll: the test posts each update)
/// from user 42, on the SQLite database in `db`, which outlives the app.
async fn telegram_app(tg: &FakeTelegram, db: &Path) -> TestApp {
    telegram_app_with(tg, db, "").await
}

/// [`telegram_app`] with more `chat:` keys (`chat_keys`, indented by two).
async fn telegram_app_with(tg: &FakeTelegram, db: &Path, chat_keys: &str) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    let db_url = format!("sqlite://{}", db.join("flotilla.db").display());
    spawn_app_with_env(
        Backend::Sqlite,
        &agents,
        &format!("chat:\n  allow:\n    telegram: [\"42\"]\n{chat_keys}"),
        dir,
        &[
            ("FLOTILLA__TELEGRAM__API_URL", tg.url.as_str()),
            ("FLOTILLA__TELEGRAM__BOT_TOKEN", "123:ABC"),
            ("FLOTILLA__TELEGRAM__SECRET_TOKEN", TG_SECRET),
            ("FLOTILLA__DATABASE__URL", db_url.as_str()),
        ],
    )
    .await
    .expect("app")
}

/// Posts one update to the app's Telegram webhook; returns the status.
async fn post_update(app: &TestApp, update: &Value) -> u16 {
    app.client
        .post(format!("{}/webhooks/telegram", app.address))
        .header("x-telegram-bot-api-secret-token", TG_SECRET)
        .json(update)
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

/// User 42 writes `text` in group `chat` (update and message id `id`).
fn group_message(id: i64, chat: i64, text: &str) -> Value {
    json!({"update_id": id, "message": {"message_id": id,
        "from": {"id": 42, "is_bot": false, "first_name": "U"},
        "chat": {"id": chat, "type": "group", "title": "G"}, "date": 1, "text": text}})
}

/// User 42 writes `text` in supergroup `chat` (update and message id `id`).
fn supergroup_message(id: i64, chat: i64, text: &str) -> Value {
    let mut u = group_message(id, chat, text);
    u["message"]["chat"]["type"] = json!("supergroup");
    u
}

/// Waits until a message containing `needle` was sent to chat `chat`.
async fn sent_containing(tg: &FakeTelegram, chat: i64, needle: &str) {
    eventually(60, &format!("{needle:?} sent to {chat}"), || async {
        tg.sent()
            .iter()
            .any(|m| m.chat_id == chat && m.text.contains(needle))
            .then_some(())
    })
    .await;
}

/// Waits until `n` messages were sent to chat `chat`.
async fn sent_to(tg: &FakeTelegram, chat: i64, n: usize) {
    eventually(30, "the replies in the chat", || async {
        (tg.sent().iter().filter(|m| m.chat_id == chat).count() >= n).then_some(())
    })
    .await;
}

/// The move a refusal taught is kept in the store: after a restart on the same database the
/// conversation of the old group still gets its replies in the supergroup, and the first one
/// goes there at once, without meeting the refusal again.
#[actix_web::test]
async fn chat_platforms_telegram_migration_is_remembered_across_a_restart() {
    let tg = FakeTelegram::start("123:ABC").await;
    tg.migrate(-555, -100_555);
    let db = tempfile::tempdir().expect("tempdir");
    let app = telegram_app(&tg, db.path()).await;
    assert_eq!(
        post_update(&app, &group_message(1, -555, "/status")).await,
        200
    );
    sent_to(&tg, -100_555, 1).await;
    let refused = |calls: &[ChatCall]| calls.iter().filter(|c| c.refused_migrated).count();
    assert_eq!(refused(&tg.chat_calls()), 1, "learnt from one refusal");
    app._handle.stop(true).await;
    drop(app);

    let before = tg.chat_calls().len();
    let app = telegram_app(&tg, db.path()).await;
    assert_eq!(
        post_update(&app, &group_message(2, -555, "/status")).await,
        200
    );
    sent_to(&tg, -100_555, 2).await;
    let after = tg.chat_calls().split_off(before);
    assert!(!after.is_empty());
    assert!(
        after
            .iter()
            .all(|c| c.chat_id == Some(-100_555) && !c.refused_migrated),
        "after the restart every call went to the supergroup at once: {after:?}"
    );
    assert!(tg.sent().iter().all(|m| m.chat_id == -100_555));
    assert_eq!(
        app.store.list_conversations().await.expect("list").len(),
        1,
        "one conversation: the old group's"
    );
}

/// Telegram announces the upgrade in a service message (`migrate_to_chat_id` in the old
/// group): the move is recorded when it arrives, before any send could be refused, and it is
/// no message for the bridge.
#[actix_web::test]
async fn chat_platforms_telegram_service_message_records_the_migration_before_any_send() {
    let tg = FakeTelegram::start("123:ABC").await;
    let notices = tg.push_migration(-555, -100_555);
    let db = tempfile::tempdir().expect("tempdir");
    let app = telegram_app(&tg, db.path()).await;
    assert_eq!(post_update(&app, &notices[0]).await, 200);
    assert_eq!(
        app.store
            .chat_moved_to("telegram", "-555")
            .await
            .expect("read")
            .as_deref(),
        Some("-100555")
    );
    assert!(app
        .store
        .list_conversations()
        .await
        .expect("list")
        .is_empty());
    // A message of the old group delivered late (sent just before the upgrade).
    assert_eq!(
        post_update(&app, &group_message(1, -555, "/status")).await,
        200
    );
    sent_to(&tg, -100_555, 1).await;
    let calls = tg.chat_calls();
    assert!(
        calls
            .iter()
            .all(|c| c.chat_id == Some(-100_555) && !c.refused_migrated),
        "no call was refused: {calls:?}"
    );

    // The long poll records the notice the new supergroup gets (`migrate_from_chat_id`)
    // where the chat adapter and the notifier look.
    let tg = FakeTelegram::start("123:ABC").await;
    tg.push_migration(-777, -100_777);
    let moves = MovedChats::in_memory();
    let mut poller = telegram_poller(&tg).with_moves(moves.clone());
    let inbox = RecordingInbox::default();
    assert_eq!(
        poller.poll_once(&inbox).await.expect("poll"),
        0,
        "no message"
    );
    assert_eq!(moves.moved_to(-777).await, Some(-100_777));
    let p = TelegramPlatform::new(&tg.url, "123:ABC", TIMEOUT)
        .expect("platform")
        .with_moves(moves.clone());
    p.send("-777", "reply").await.expect("sent");
    let n = TelegramNotifier::new(
        reqwest::Client::new(),
        tg.url.clone(),
        "123:ABC".into(),
        "-777".into(),
    )
    .with_moves(moves);
    let note = Notification {
        id: "n1".into(),
        priority: "action".into(),
        event: "merge.ready".into(),
        session: Some("demo-1".into()),
        message: "Ready to merge.".into(),
        ..Notification::default()
    };
    n.notify(&note).await.expect("notified");
    let calls = tg.chat_calls();
    assert_eq!(calls.len(), 2);
    assert!(
        calls
            .iter()
            .all(|c| c.chat_id == Some(-100_777) && !c.refused_migrated),
        "{calls:?}"
    );
}

/// A global 429 ("Rate Limits": `X-RateLimit-Global`, `"global": true`) holds every route
/// of the bot: a message for another channel waits it out instead of meeting another 429
/// (Discord counts each as an invalid request).
#[actix_web::test]
async fn chat_platforms_discord_global_rate_limit_holds_every_channel() {
    let dc = FakeDiscord::start("bot-token", 1000).await;
    let p = std::sync::Arc::new(
        DiscordPlatform::new(&dc.api_url, "bot-token", TIMEOUT).expect("platform"),
    );
    dc.limit_global(1.0);
    let first = {
        let p = p.clone();
        tokio::spawn(async move { p.send("C1", "one").await })
    };
    eventually(10, "the global hold", || async { p.global_hold() }).await;
    p.send("C2", "two").await.expect("sent after the hold");
    first.await.expect("task").expect("sent after the wait");
    assert_eq!(dc.rate_limited(), 1, "only the first request met the limit");
    let channels: Vec<String> = dc.posted().into_iter().map(|m| m.channel).collect();
    assert_eq!(channels.len(), 2);
    assert!(channels.contains(&"C1".to_string()) && channels.contains(&"C2".to_string()));
}

/// Discord's per-route limits ("Rate Limits") are kept per `X-RateLimit-Bucket` and major
/// parameter (the channel): after an answer with `X-RateLimit-Remaining: 0` and
/// `X-RateLimit-Reset-After`, the next request on that bucket waits for the reset instead of
/// meeting a 429 (each one an invalid request to Discord). An answer from another bucket of
/// the same channel (an edit in flight meanwhile) does not free it, and the same bucket of
/// another channel is not held.
#[actix_web::test]
async fn chat_platforms_discord_spent_bucket_waits_for_its_reset_per_bucket_and_channel() {
    let dc = FakeDiscord::start("bot-token", 1000).await;
    let p = std::sync::Arc::new(
        DiscordPlatform::new(&dc.api_url, "bot-token", TIMEOUT).expect("platform"),
    );
    dc.limit_buckets(2, 3.0);
    let first = p.send("C1", "one").await.expect("sent");
    assert!(p.hold("POST", "/channels/C1/messages").is_none());
    dc.hold_edits();
    let edit = {
        let (p, first) = (p.clone(), first.clone());
        tokio::spawn(async move { p.edit("C1", &first, "one, edited").await })
    };
    eventually(10, "the edit in flight", || async {
        (dc.edits_waiting() == 1).then_some(())
    })
    .await;
    p.send("C1", "two").await.expect("sent");
    assert!(
        p.hold("POST", "/channels/C1/messages").is_some(),
        "Remaining 0 holds the bucket"
    );
    assert!(
        p.hold("POST", "/channels/C2/messages").is_none(),
        "another channel's bucket is its own"
    );
    dc.release_edits();
    edit.await.expect("task").expect("edited");
    assert!(
        p.hold("POST", "/channels/C1/messages").is_some(),
        "the edit bucket's answer freed the create bucket"
    );
    assert!(p
        .hold("PATCH", &format!("/channels/C1/messages/{first}"))
        .is_none());
    p.send("C2", "elsewhere").await.expect("sent at once");
    p.send("C1", "three").await.expect("sent after the reset");
    assert_eq!(dc.rate_limited(), 0, "a request met a 429");
    let c1: Vec<String> = dc
        .posted()
        .into_iter()
        .filter(|m| m.channel == "C1")
        .map(|m| m.content)
        .collect();
    assert_eq!(c1, ["one, edited", "two", "three"]);
}

/// The Discord notifier keeps the bucket too: after an answer with `X-RateLimit-Remaining: 0`
/// the next notification to that channel waits for `X-RateLimit-Reset-After` and is posted,
/// instead of meeting a 429 and going back to the outbox.
#[actix_web::test]
async fn chat_platforms_discord_notifier_waits_for_a_spent_bucket() {
    let dc = FakeDiscord::start("bot-token", 1000).await;
    dc.limit_buckets(1, 2.0);
    let n = DiscordNotifier::new(
        reqwest::Client::new(),
        Target::Channel {
            api_url: dc.api_url.clone(),
            token: "bot-token".into(),
            channel: "C7".into(),
        },
    );
    let note = |id: &str| Notification {
        id: id.into(),
        priority: "action".into(),
        event: "merge.ready".into(),
        session: Some("demo-1".into()),
        message: format!("Ready to merge ({id})."),
        ..Notification::default()
    };
    n.notify(&note("n1")).await.expect("posted");
    assert!(n.hold().is_some(), "Remaining 0 holds the bucket");
    n.notify(&note("n2")).await.expect("posted after the reset");
    assert_eq!(dc.rate_limited(), 0, "a notification met a 429");
    assert_eq!(dc.posted().len(), 2);
}

/// After Telegram upgraded a group to a supergroup, what people write in the supergroup goes
/// on in the group's conversation: same conversation, its codebase and resume id, replies
/// sent to the supergroup; also after a restart. A supergroup whose old group had no
/// conversation starts one of its own.
#[actix_web::test]
async fn chat_platforms_telegram_messages_from_the_supergroup_continue_the_groups_conversation() {
    if !crate::helpers::require_tool("git") {
        return;
    }
    let tg = FakeTelegram::start("123:ABC").await;
    let db = tempfile::tempdir().expect("tempdir");
    let base = db.path().join("chat");
    let log = base.join("assistant.log");
    let keys = format!(
        "  turn_timeout: 60s\n  workspace: {ws}\n  worktrees: {wt}\n  \
         assistant: {{ kind: claude, command: [\"{bin}\"], env: {{ SCRIPTED_LOG: \"{log}\" }} }}\n",
        ws = base.join("ws").display(),
        wt = base.join("worktrees").display(),
        bin = crate::chat::scripted_assistant_path().display(),
        log = log.display(),
    );
    let app = telegram_app_with(&tg, db.path(), &keys).await;
    let owner = base.join("src").join("acme");
    std::fs::create_dir_all(&owner).expect("mkdir");
    crate::helpers::git(
        &owner,
        &["clone", "-q", &app.repo.display().to_string(), "widget"],
    );
    let clone = format!("/clone {}", owner.join("widget").display());
    assert_eq!(
        post_update(&app, &group_message(1, -555, &clone)).await,
        200
    );
    sent_containing(&tg, -555, "acme/widget").await;
    assert_eq!(
        post_update(&app, &group_message(2, -555, "first")).await,
        200
    );
    sent_containing(&tg, -555, "echo: first").await;
    let before = app
        .store
        .get_conversation("telegram:-555")
        .await
        .expect("the group's conversation");
    let resume = before.resume_id.clone().expect("a resume id after a turn");

    // The upgrade: Telegram says so in both chats, then people write in the supergroup.
    for notice in tg.push_migration(-555, -100_555) {
        assert_eq!(post_update(&app, &notice).await, 200);
    }
    assert_eq!(
        post_update(&app, &supergroup_message(3, -100_555, "second")).await,
        200
    );
    sent_containing(&tg, -100_555, "echo: second").await;
    let starts: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "start")
        .collect();
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert_eq!(
        starts[1]["resume"].as_str(),
        Some(resume.as_str()),
        "the second turn resumed the group's assistant session"
    );
    assert_eq!(starts[1]["cwd"], starts[0]["cwd"], "in the same checkout");
    let list = app.store.list_conversations().await.expect("list");
    let ids: Vec<&str> = list.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["telegram:-555"], "one conversation: the group's");
    let after = app
        .store
        .get_conversation("telegram:-555")
        .await
        .expect("conversation");
    assert_eq!(after.codebase, before.codebase);
    assert!(
        tg.sent()
            .iter()
            .filter(|m| m.text.contains("echo: second"))
            .all(|m| m.chat_id == -100_555),
        "the reply went to the supergroup"
    );

    // After a restart the move is read back from the store: still the group's conversation.
    app._handle.stop(true).await;
    drop(app);
    let app = telegram_app_with(&tg, db.path(), &keys).await;
    assert_eq!(
        post_update(&app, &supergroup_message(4, -100_555, "third")).await,
        200
    );
    sent_containing(&tg, -100_555, "echo: third").await;
    let list = app.store.list_conversations().await.expect("list");
    let ids: Vec<&str> = list.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        ["telegram:-555"],
        "still one conversation after a restart"
    );

    // A group without a conversation here: its supergroup's conversation is its own.
    for notice in tg.push_migration(-777, -100_777) {
        assert_eq!(post_update(&app, &notice).await, 200);
    }
    assert_eq!(
        post_update(&app, &supergroup_message(5, -100_777, "/status")).await,
        200
    );
    sent_to(&tg, -100_777, 1).await;
    let list = app.store.list_conversations().await.expect("list");
    let mut ids: Vec<&str> = list.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["telegram:-100777", "telegram:-555"]);
}

/// The long poll marks a message from a supergroup a group became (a forum topic of it too)
/// with the group's thread, `meta.moved_from`, for the inbox; other chats' messages are
/// left as they are.
#[actix_web::test]
async fn chat_platforms_telegram_poll_names_the_group_a_supergroup_message_comes_from() {
    let tg = FakeTelegram::start("123:ABC").await;
    tg.push_migration(-555, -100_555);
    tg.push_message(-100_555, 42, "in the supergroup");
    tg.push_topic_message(-100_555, 5, 42, "in a topic");
    tg.push_message(-100_999, 42, "elsewhere");
    let moves = MovedChats::in_memory();
    let mut poller = telegram_poller(&tg).with_moves(moves.clone());
    let inbox = RecordingInbox::default();
    assert_eq!(poller.poll_once(&inbox).await.expect("poll"), 3);
    let got: Vec<(String, Option<String>)> = inbox
        .messages
        .lock()
        .expect("lock")
        .iter()
        .map(|m| (m.thread.clone(), m.meta.get("moved_from").cloned()))
        .collect();
    assert_eq!(
        got,
        [
            ("-100555".to_string(), Some("-555".to_string())),
            ("-100555:5".to_string(), Some("-555:5".to_string())),
            ("-100999".to_string(), None),
        ]
    );
}
