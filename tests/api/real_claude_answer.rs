//! Answering the real `claude` from a phone: its permission prompt makes the session
//! `needs_input`, the Telegram (or Slack, or Discord) notifier posts the question, and a reply to
//! that message (Telegram `reply_to_message`, a Slack thread reply, a Discord reply naming it in
//! `message_reference`) from an allowlisted user is typed
//! into the agent like `flotilla send`; the session goes back to `working`. A stranger's reply
//! does nothing; a reply once the session no longer waits is told so.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fake_anthropic::Step;
use crate::fake_discord::FakeDiscord;
use crate::fake_slack::{self, FakeSlack};
use crate::fake_telegram::FakeTelegram;
use crate::helpers::eventually;
use crate::real_claude_fleet::{session, setup_notifying, wait_session, Real};

const TG_TOKEN: &str = "123:ABC";
const TG_CHAT: i64 = 555;
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// A command that needs approval under `auto-edit` (`git add`), then the end of the turn.
fn script() -> Vec<Step> {
    vec![
        Step::tool(
            "Bash",
            json!({"command": "printf 'hi\\n' > phone.txt && git add phone.txt", "description": "Add phone.txt"}),
        ),
        Step::text("Wrote phone.txt."),
    ]
}

/// Spawns, waits for the permission prompt to make the session `needs_input`; returns its id.
async fn spawn_until_waiting(r: &Real) -> String {
    let id = r
        .app
        .spawn(json!({"project": "demo", "prompt": "Write phone.txt."}))
        .await;
    r.model.wait_for_requests(1, Duration::from_secs(90)).await;
    wait_session(&r.app, &id, 90, "needs_input", |s| {
        s["state"] == "needs_input"
    })
    .await;
    id
}

/// The approved command ran once and its result went back to the model, once.
async fn assert_answered(r: &Real, id: &str) {
    r.model.wait_for_requests(2, Duration::from_secs(60)).await;
    let s = wait_session(&r.app, id, 60, "back to working", |s| {
        s["state"] == "working" && s["waiting_for"].is_null()
    })
    .await;
    let ws = std::path::PathBuf::from(s["workspace"].as_str().expect("workspace"));
    assert_eq!(
        std::fs::read_to_string(ws.join("phone.txt")).unwrap_or_default(),
        "hi\n",
        "the approved command ran"
    );
    let results: usize = r
        .model
        .requests()
        .iter()
        .map(|q| {
            q["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_array())
                .map_or(0, |c| {
                    c.iter()
                        .filter(|b| b["type"] == "tool_result" && b["is_error"] != true)
                        .count()
                })
        })
        .sum();
    assert_eq!(results, 1, "one tool result, sent once");
}

/// The fleet with the real Claude scripted by `steps`, a Telegram notifier on the fake Bot API
/// and user 42 allowed to answer there.
async fn telegram_fleet(steps: Vec<Step>) -> Option<(FakeTelegram, Real)> {
    let tg = FakeTelegram::start(TG_TOKEN).await;
    let env = [
        ("FLOTILLA__TELEGRAM__API_URL", tg.url.as_str()),
        ("FLOTILLA__TELEGRAM__BOT_TOKEN", TG_TOKEN),
    ];
    let chat = "chat:\n  allow: { telegram: [\"42\"] }\n";
    let notifier = format!("tg: {{ kind: telegram, chat_id: \"{TG_CHAT}\" }}");
    let r = setup_notifying(steps, "auto-edit", "[]", chat, &env, &notifier, "").await?;
    Some((tg, r))
}

#[actix_web::test]
async fn a_telegram_reply_to_the_needs_input_notification_answers_the_real_claude() {
    let Some((tg, r)) = telegram_fleet(script()).await else {
        return;
    };
    let id = spawn_until_waiting(&r).await;
    let note = eventually(30, "the Telegram notification", || async {
        tg.sent()
            .into_iter()
            .find(|m| m.text.contains(&id) && m.text.contains("waiting for input"))
    })
    .await;
    assert!(note.text.contains("approve Bash"), "{}", note.text);

    // A stranger's reply is dropped: stored nowhere, typed nowhere.
    let stranger = tg.push_reply(TG_CHAT, 99, "1", note.message_id);
    let stranger_update = stranger["update_id"].as_i64().expect("update id");
    eventually(30, "the stranger's update confirmed", || async {
        (tg.confirmed_offset() > stranger_update).then_some(())
    })
    .await;
    assert_eq!(session(&r.app, &id).await["state"], "needs_input");

    // Words that name none of the dialog's options are not typed onto it (an Enter would
    // approve the highlighted Yes), and the user is told so.
    tg.push_reply(TG_CHAT, 42, "maybe later", note.message_id);
    let refused = eventually(60, "the 'could not answer' reply", || async {
        tg.sent()
            .into_iter()
            .find(|m| m.text.contains(&format!("Could not answer {id}")))
    })
    .await;
    assert!(refused.text.contains("maybe later"), "{}", refused.text);
    assert_eq!(session(&r.app, &id).await["state"], "needs_input");

    // The allowed user's reply answers it: menu choice 1 (Yes).
    tg.push_reply(TG_CHAT, 42, "1", note.message_id);
    assert_answered(&r, &id).await;
    let confirmed = eventually(30, "the bot's confirmation", || async {
        tg.sent()
            .into_iter()
            .find(|m| m.text.contains(&format!("Answered {id}")))
    })
    .await;
    // It names what the answer approved.
    assert!(
        confirmed.text.contains("(to: approve Bash: printf"),
        "{}",
        confirmed.text
    );

    // The same reply again: the session no longer waits, and the user is told.
    tg.push_reply(TG_CHAT, 42, "1", note.message_id);
    let told = eventually(30, "the 'no longer waits' reply", || async {
        tg.sent()
            .into_iter()
            .find(|m| m.text.contains("does not wait for an answer now"))
    })
    .await;
    assert!(told.text.contains(&id), "{}", told.text);
    assert_eq!(
        r.model.requests().len(),
        2,
        "nothing more reached the model"
    );
}

/// A late reply to an earlier question's notification does not answer the next question.
/// The human approves the real Claude's first command from elsewhere (the API, as the
/// dashboard does); the agent at once asks about a second command, which pages on its own;
/// a Telegram reply "1" to the *first* notification, meant for the command it named, is not
/// typed onto the second dialog (it would approve a command its author never read): the bot
/// says which question now waits. A reply to the second notification answers it. (Before, the
/// late reply approved the second command.)
#[actix_web::test]
async fn a_late_reply_to_an_earlier_questions_notification_does_not_answer_the_next_one() {
    let mut steps = script();
    steps.insert(
        1,
        Step::tool(
            "Bash",
            json!({"command": "git commit -q -m 'Add phone.txt'", "description": "Commit"}),
        ),
    );
    let Some((tg, r)) = telegram_fleet(steps).await else {
        return;
    };
    let id = spawn_until_waiting(&r).await;
    let page = |needle: &'static str| {
        let tg = &tg;
        let id = id.clone();
        eventually(30, needle, move || {
            let found = tg.sent().into_iter().find(|m| {
                m.text.contains(&id)
                    && m.text.contains("waiting for input")
                    && m.text.contains(needle)
            });
            async move { found }
        })
    };
    let first = page("git add phone.txt").await;

    // Answered elsewhere; the agent asks about the commit at once, and that pages too.
    let (code, sent) = r
        .app
        .post(
            &format!("/api/v1/sessions/{id}/send"),
            json!({"message": "1"}),
        )
        .await;
    assert_eq!((code, &sent["delivered"]), (200, &json!(true)), "{sent}");
    wait_session(&r.app, &id, 90, "needs_input on the commit", |s| {
        s["state"] == "needs_input"
            && s["meta"]["question"]
                .as_str()
                .is_some_and(|q| q.contains("git commit"))
    })
    .await;
    let second = page("git commit").await;

    // The late reply to the first page is not typed: the commit still waits, unrun.
    tg.push_reply(TG_CHAT, 42, "1", first.message_id);
    let told = eventually(
        60,
        "the 'no longer waits on that question' reply",
        || async {
            tg.sent()
                .into_iter()
                .find(|m| m.text.contains("no longer waits on that question"))
        },
    )
    .await;
    assert!(
        told.text.contains(&id) && told.text.contains("git commit"),
        "{}",
        told.text
    );
    let s = session(&r.app, &id).await;
    assert_eq!(s["state"], "needs_input", "{s}");
    assert_eq!(r.model.requests().len(), 2, "the commit did not run");

    // A reply to the commit's own page answers it.
    tg.push_reply(TG_CHAT, 42, "1", second.message_id);
    r.model.wait_for_requests(3, Duration::from_secs(60)).await;
    let s = wait_session(&r.app, &id, 60, "back to working", |s| {
        s["state"] == "working" && s["waiting_for"].is_null()
    })
    .await;
    let ws = std::path::PathBuf::from(s["workspace"].as_str().expect("workspace"));
    let log = std::process::Command::new("git")
        .args(["log", "--format=%s", "-1"])
        .current_dir(&ws)
        .output()
        .expect("git log");
    assert_eq!(String::from_utf8_lossy(&log.stdout).trim(), "Add phone.txt");
}

#[actix_web::test]
async fn a_slack_thread_reply_to_the_needs_input_notification_answers_the_real_claude() {
    let sl = FakeSlack::start("xoxb-test", &["C1"]).await;
    let env = [
        ("FLOTILLA__SLACK__API_URL", sl.api_url.as_str()),
        ("FLOTILLA__SLACK__BOT_TOKEN", "xoxb-test"),
        ("FLOTILLA__SLACK__SIGNING_SECRET", SLACK_SECRET),
    ];
    let chat = "chat:\n  allow: { slack: [U1] }\n";
    let Some(r) = setup_notifying(
        script(),
        "auto-edit",
        "[]",
        chat,
        &env,
        "sl: { kind: slack, channel: C1 }",
        "",
    )
    .await
    else {
        return;
    };
    let id = spawn_until_waiting(&r).await;
    let note = eventually(30, "the Slack notification", || async {
        sl.posted()
            .into_iter()
            .find(|p| p.thread_ts.is_none() && p.rendered.contains("waiting for input"))
    })
    .await;
    let url = format!("{}/webhooks/slack/events", r.app.address);
    let reply = |user: &str, ts: &str, text: &str| -> Value {
        // A plain thread reply: no mention of the bot.
        fake_slack::envelope(json!({"type": "message", "channel_type": "channel",
            "user": user, "text": text, "ts": ts, "thread_ts": note.ts, "channel": "C1"}))
    };
    // A stranger's thread reply is not served.
    let (code, body) =
        fake_slack::post_signed(&url, SLACK_SECRET, &reply("U9", "1800.1", "1")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(session(&r.app, &id).await["state"], "needs_input");

    let (code, body) =
        fake_slack::post_signed(&url, SLACK_SECRET, &reply("U1", "1800.2", "1")).await;
    assert_eq!(code, 200, "{body}");
    assert_answered_in_thread(&r, &sl, &id, &note.ts).await;

    let (code, _) =
        fake_slack::post_signed(&url, SLACK_SECRET, &reply("U1", "1800.3", "yes")).await;
    assert_eq!(code, 200);
    eventually(30, "the 'no longer waits' reply in the thread", || async {
        sl.posted().into_iter().find(|p| {
            p.thread_ts.as_deref() == Some(note.ts.as_str())
                && p.rendered.contains("does not wait for an answer now")
        })
    })
    .await;
    assert_eq!(
        r.model.requests().len(),
        2,
        "nothing more reached the model"
    );
}

async fn assert_answered_in_thread(r: &Real, sl: &FakeSlack, id: &str, ts: &str) {
    assert_answered(r, id).await;
    eventually(30, "the confirmation in the thread", || async {
        sl.posted().into_iter().find(|p| {
            p.thread_ts.as_deref() == Some(ts) && p.rendered.contains(&format!("Answered {id}"))
        })
    })
    .await;
}

#[actix_web::test]
async fn a_discord_reply_to_the_needs_input_notification_answers_the_real_claude() {
    const CHANNEL: &str = "1100";
    const GUILD: &str = "1200";
    let dc = FakeDiscord::start("bot-token", 1000).await;
    let env = [
        ("FLOTILLA__DISCORD__API_URL", dc.api_url.as_str()),
        ("FLOTILLA__DISCORD__GATEWAY_URL", dc.gateway_url.as_str()),
        ("FLOTILLA__DISCORD__BOT_TOKEN", "bot-token"),
    ];
    let chat = "chat:\n  allow: { discord: [\"U1\"] }\n";
    let notifier = format!("dc: {{ kind: discord, channel: \"{CHANNEL}\" }}");
    let Some(r) = setup_notifying(script(), "auto-edit", "[]", chat, &env, &notifier, "").await
    else {
        return;
    };
    eventually(30, "the gateway's IDENTIFY", || async {
        (dc.gateway_counts().0 >= 1).then_some(())
    })
    .await;
    let id = spawn_until_waiting(&r).await;
    let note = eventually(30, "the Discord notification", || async {
        dc.posted().into_iter().find(|m| {
            m.channel == CHANNEL
                && m.content.contains(&id)
                && m.content.contains("waiting for input")
        })
    })
    .await;
    assert!(note.content.contains("approve Bash"), "{}", note.content);

    // A stranger's reply (in the guild channel, no mention, as from a phone) does nothing.
    dc.message_reply(CHANNEL, Some(GUILD), "U9", "1", &note.id);
    // A message in the channel that replies to nothing and mentions nobody is not for the bot.
    dc.message_create(CHANNEL, Some(GUILD), "U1", "1");
    // The allowed user's reply answers it: menu choice 1 (Yes).
    dc.message_reply(CHANNEL, Some(GUILD), "U1", "1", &note.id);
    assert_answered(&r, &id).await;
    let confirmations = eventually(30, "the bot's confirmation", || async {
        let c: Vec<_> = dc
            .posted()
            .into_iter()
            .filter(|m| m.channel == CHANNEL && m.content.contains(&format!("Answered {id}")))
            .collect();
        (!c.is_empty()).then_some(c)
    })
    .await;
    assert_eq!(confirmations.len(), 1, "answered once: {confirmations:?}");

    // The same reply again: the session no longer waits, and the user is told.
    dc.message_reply(CHANNEL, Some(GUILD), "U1", "1", &note.id);
    let told = eventually(30, "the 'no longer waits' reply", || async {
        dc.posted()
            .into_iter()
            .find(|m| m.content.contains("does not wait for an answer now"))
    })
    .await;
    assert!(told.content.contains(&id), "{}", told.content);
    // Had the stranger's reply answered, the allowed one would have been told so too.
    let not_waiting = dc
        .posted()
        .into_iter()
        .filter(|m| m.content.contains("does not wait for an answer now"))
        .count();
    assert_eq!(not_waiting, 1, "{:?}", dc.posted());
    assert_eq!(
        r.model.requests().len(),
        2,
        "nothing more reached the model"
    );
    assert_eq!(
        session(&r.app, &id).await["state"],
        "working",
        "the session works on"
    );
}
