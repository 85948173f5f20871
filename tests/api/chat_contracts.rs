//! The chat adapters against what the platforms' published references make a client
//! responsible for: Slack's text markup on the way in, Telegram's forum topics and group
//! migrations, Discord's global rate limit.
//!
//! Test names start with `chat_platforms_` so the `chat_platforms` group runs them.

use std::time::Duration;

use flotilla::plugins::chat::slack::{self, SlackEvent, SlackPlatform};
use flotilla::plugins::ChatPlatform;
use serde_json::json;

use crate::fake_slack::{self, FakeSlack};

const TIMEOUT: Duration = Duration::from_secs(10);

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
