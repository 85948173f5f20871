//! The chat adapters against fakes that behave like the platforms' published references:
//! Discord parses mentions in edits unless told not to and closes the Gateway for good on
//! some codes; Slack reads `<…>` as mentions and links.
//!
//! Test names start with `chat_platforms_` so the `chat_platforms` group runs them.

use std::sync::Arc;
use std::time::Duration;

use flotilla::plugins::chat::discord::DiscordPlatform;
use flotilla::plugins::chat::gateway::Gateway;
use flotilla::plugins::chat::slack::SlackPlatform;
use flotilla::plugins::{ChatInbox, ChatPlatform};

use crate::chat_platforms::RecordingInbox;
use crate::fake_discord::{self, FakeDiscord};
use crate::fake_slack::{self, FakeSlack};

const TIMEOUT: Duration = Duration::from_secs(10);

/// An assistant's answer, as it grows while streamed: it holds Discord's and Slack's mention
/// syntaxes and a generic type.
fn streamed_answer() -> Vec<String> {
    let full = [
        "Tell @everyone and @here:",
        "the <!channel> and <!here> syntax, and <@U123> / <@!123456> / <@&42>,",
        "are only text here.",
        "A `Vec<T>` of `Option<&str>` & co reads as written.",
    ];
    (1..=full.len()).map(|n| full[..n].join("\n")).collect()
}

/// Sends the first step of the answer, then edits the message through every later step,
/// as the chat core does when it streams.
async fn stream(p: &dyn ChatPlatform, thread: &str) -> String {
    let steps = streamed_answer();
    let id = p.send(thread, &steps[0]).await.expect("first send");
    for step in &steps[1..] {
        p.edit(thread, &id, step).await.expect("edit");
    }
    id
}

#[actix_web::test]
async fn chat_platforms_discord_streamed_reply_parses_no_mention_in_send_or_edits() {
    let dc = FakeDiscord::start("bot-token", 1000).await;
    // The fake parses mentions the way Discord does: an edit without `allowed_mentions`
    // pings (the fake can fail).
    assert_eq!(
        fake_discord::parse_mentions("@everyone <@123> <@&42>", None).expect("valid"),
        vec!["everyone", "user:123", "role:42"]
    );
    let p = DiscordPlatform::new(&dc.api_url, "bot-token", TIMEOUT).expect("platform");
    let id = stream(&p, "C1").await;
    let posted = dc.posted();
    assert_eq!(posted.len(), 1);
    let m = &posted[0];
    assert_eq!(m.id, id);
    assert_eq!(m.edits, 3);
    assert!(m.pinged.is_empty(), "mentions parsed: {:?}", m.pinged);
    let last = streamed_answer().pop().expect("answer");
    assert_eq!(m.content, last, "Discord shows the text as written");
    assert!(m.content.contains("`Vec<T>`"));
    assert_eq!(
        dc.blocked(),
        0,
        "every call carried the DiscordBot User-Agent"
    );
}

#[actix_web::test]
async fn chat_platforms_slack_streamed_reply_parses_no_mention_and_reads_as_written() {
    let sl = FakeSlack::start("xoxb-test", &["C1"]).await;
    // The fake reads control sequences as Slack does (the fake can fail).
    let (shown, pinged) = fake_slack::render("hi <!channel> <@U123> Vec<T> a &amp; b");
    assert_eq!(pinged, vec!["channel", "user:U123"]);
    assert_eq!(shown, "hi @channel @U123 VecT a & b");
    let p = SlackPlatform::new(&sl.api_url, "xoxb-test", TIMEOUT).expect("platform");
    stream(&p, "C1:1700.1").await;
    let posted = sl.posted();
    assert_eq!(posted.len(), 1);
    let m = &posted[0];
    assert_eq!(m.updates, 3);
    assert!(m.pinged.is_empty(), "mentions parsed: {:?}", m.pinged);
    let last = streamed_answer().pop().expect("answer");
    assert_eq!(m.rendered, last, "Slack shows the text as written");
    assert!(m.rendered.contains("`Vec<T>` of `Option<&str>` & co"));
}

/// Runs a gateway against `dc` with `token` and waits (bounded) for it to give up.
async fn gateway_stops(dc: &FakeDiscord, token: &str) -> u16 {
    let settings = flotilla::config::DiscordSettings {
        api_url: dc.api_url.clone(),
        gateway_url: dc.gateway_url.clone(),
        bot_token: Some(flotilla::config::Secret::new(token)),
        public_key: None,
    };
    let inbox = Arc::new(RecordingInbox::default());
    let gw = Gateway::from_settings(&settings).expect("gateway");
    let stopped =
        tokio::time::timeout(Duration::from_secs(20), gw.run(inbox as Arc<dyn ChatInbox>))
            .await
            .expect("the gateway gave up instead of reconnecting for ever");
    stopped.code
}

#[actix_web::test]
async fn chat_platforms_discord_gateway_does_not_retry_a_bad_token_or_a_disallowed_intent() {
    let dc = FakeDiscord::start("bot-token", 1000).await;
    assert_eq!(gateway_stops(&dc, "wrong-token").await, 4004);
    assert_eq!(dc.connections(), 1, "reconnected after 4004");
    let dc = FakeDiscord::start("bot-token", 1000).await;
    dc.disallow_message_content();
    assert_eq!(gateway_stops(&dc, "bot-token").await, 4014);
    assert_eq!(dc.connections(), 1, "reconnected after 4014");
    assert_eq!(dc.gateway_counts().0, 0);
}

#[actix_web::test]
async fn chat_platforms_github_streamed_reply_edits_its_comment() {
    let gh = crate::fake_github::FakeGithub::start("ghp_test").await;
    gh.create_repo("acme/app");
    let n = gh.create_issue("acme/app", "Bug", "@flotilla please fix");
    let p =
        flotilla::plugins::chat::github::GithubCommentsPlatform::new(&gh.url, "ghp_test", TIMEOUT)
            .expect("platform");
    let thread = format!("acme/app#{n}");
    let id = stream(&p, &thread).await;
    let id_num: i64 = id.parse().expect("numeric comment id");
    assert_eq!(
        gh.count("PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}"),
        3
    );
    assert_eq!(
        gh.issue_comment_body("acme/app", id_num),
        streamed_answer().pop()
    );
    let e = p
        .edit(&thread, "999999", "gone")
        .await
        .expect_err("an unknown comment is 404");
    assert!(e.to_string().contains("404"), "{e}");
}

/// Everything our Markdown→ADF conversion produces passes the fake's schema checks, and
/// the streamed edits (`PUT …/comment/{id}`) do too.
#[actix_web::test]
async fn chat_platforms_jira_rich_reply_is_valid_adf_when_sent_and_edited() {
    let jr = crate::fake_jira::FakeJira::start("bot@acme.io", "jira-token", &["ABC-1"]).await;
    let p = flotilla::plugins::chat::jira::JiraPlatform::new(
        &jr.url,
        "bot@acme.io",
        "jira-token",
        TIMEOUT,
    )
    .expect("platform");
    let md = "# Plan\n\nRun **now** with `cargo test`, see [docs](https://x.io) and _why_.\n\
              Second line\n\n```rust\nfn main() {}\n```\n\n- one\n- **two**\n\n1. first\n2. `second`\n\n\
              ###### Small\n\n-\n\n";
    let id = p.send("ABC-1", md).await.expect("valid ADF");
    p.edit("ABC-1", &id, &format!("{md}\n\nDone."))
        .await
        .expect("valid ADF edit");
    for step in streamed_answer() {
        p.edit("ABC-1", &id, &step).await.expect("valid ADF edit");
    }
    let bad = serde_json::json!({"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": "x", "marks": [{"type": "code"}, {"type": "em"}]}]}]});
    assert!(crate::fake_jira::adf_problem(&bad).is_some());
}
