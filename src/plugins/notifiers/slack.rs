//! `slack`: an incoming webhook (`url`), or `chat.postMessage` to a `channel` with the bot
//! token. Both carry Block Kit blocks — the session, its PR and what is asked of the human —
//! and a plain `text` fallback for notifications.
//!
//! A channel post carries the notification's mark in its message metadata (`event_type`
//! [`NOTIFICATION_EVENT`], "Using message metadata"). When an earlier attempt may have posted
//! it ([`Notification::may_be_posted`]), the channel is read first (`conversations.history`,
//! as the chat bridge reads it for a stored reply) and a post found there is not made again.
//! An incoming webhook cannot read: there a repeat is posted.
//!
//! Errors (wire-formats §2.3, §2.4): incoming webhooks use HTTP statuses with a plain-text
//! code; the Web API answers `{"ok": false, "error": "…"}`, usually with HTTP 200. A 429 (or
//! `ratelimited`) carries `Retry-After`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde_json::{json, Value};

use super::{
    ask, excerpt, item_line, plain_text, post_json, retry_after_header, status_error, truncate,
};
use crate::plugins::chat::reply_key::{post_pieces, Marks};
use crate::plugins::chat::slack::SlackPlatform;
use crate::plugins::{Notification, Notifier, PluginError, PluginResult, PostedMessage};

/// Slack truncates `text` above 40,000 characters; we keep well under its 4,000 advice.
const MAX_TEXT: usize = 3_900;
/// Block Kit section text limit.
const MAX_SECTION: usize = 2_900;
/// Digest items listed before "… and N more".
const MAX_DIGEST_ITEMS: usize = 40;

/// Where a Slack notifier posts.
pub enum Target {
    /// An incoming-webhook URL (a credential: never logged).
    IncomingWebhook {
        /// The hook URL.
        url: String,
    },
    /// A channel, through `chat.postMessage`.
    Channel {
        /// Web API base URL (`slack.api_url`).
        api_url: String,
        /// Bot token (`xoxb-…`).
        token: String,
        /// Channel id.
        channel: String,
    },
}

/// The `event_type` of the metadata a notification's channel post carries.
pub const NOTIFICATION_EVENT: &str = "flotilla_notification";

/// Posts to Slack.
pub struct SlackNotifier {
    client: reqwest::Client,
    target: Target,
    /// Reads a channel for an earlier post (a [`Target::Channel`]'s).
    reader: Option<SlackPlatform>,
}

impl SlackNotifier {
    /// A notifier posting to `target`, each read bounded by `timeout`.
    ///
    /// # Errors
    /// `Invalid` when the HTTP client cannot be built.
    pub fn new(client: reqwest::Client, target: Target, timeout: Duration) -> PluginResult<Self> {
        let reader = match &target {
            Target::Channel { api_url, token, .. } => {
                Some(SlackPlatform::new(api_url, token, timeout)?)
            }
            Target::IncomingWebhook { .. } => None,
        };
        Ok(SlackNotifier {
            client,
            target,
            reader,
        })
    }
}

/// Escapes the three characters Slack's mrkdwn reserves (shared with the chat bridge).
pub use crate::plugins::chat::slack::escape;

/// The Block Kit blocks of a notification.
pub fn blocks(n: &Notification) -> Value {
    if n.is_digest() {
        let mut lines: Vec<String> = n
            .items
            .iter()
            .take(MAX_DIGEST_ITEMS)
            .map(|i| escape(&item_line(i)))
            .collect();
        if n.items.len() > MAX_DIGEST_ITEMS {
            lines.push(format!("… and {} more", n.items.len() - MAX_DIGEST_ITEMS));
        }
        return json!([
            {"type": "header", "text": {"type": "plain_text",
                "text": format!("Flotilla digest: {} notifications", n.items.len())}},
            {"type": "section", "text": {"type": "mrkdwn",
                "text": truncate(&lines.join("\n"), MAX_SECTION)}},
        ]);
    }
    let session = n.session.as_deref().unwrap_or("flotilla");
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Session*\n{}", escape(session))}),
        json!({"type": "mrkdwn", "text": format!("*Priority*\n{}", escape(&n.priority))}),
    ];
    if let Some(p) = &n.project {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Project*\n{}", escape(p))}));
    }
    let pr = match &n.pr_url {
        Some(url) => format!("<{}|{}>", escape(url), escape(url)),
        None => "none".to_string(),
    };
    fields.push(json!({"type": "mrkdwn", "text": format!("*PR*\n{pr}")}));
    json!([
        {"type": "section", "text": {"type": "mrkdwn",
            "text": truncate(&format!("*{}*", escape(&n.message)), MAX_SECTION)}},
        {"type": "section", "fields": fields},
        {"type": "context", "elements": [{"type": "mrkdwn",
            "text": escape(&format!("{} ({}{})", ask(&n.priority), n.event,
                if n.escalation { ", escalated" } else { "" }))}]},
    ])
}

/// The JSON body: `text` fallback plus blocks (and the channel for `chat.postMessage`).
pub fn body(n: &Notification, channel: Option<&str>) -> Value {
    let mut b = json!({
        "text": truncate(&escape(&plain_text(n)), MAX_TEXT),
        "blocks": blocks(n),
        "unfurl_links": false,
    });
    if let Some(c) = channel {
        b["channel"] = json!(c);
    }
    b
}

#[async_trait]
impl Notifier for SlackNotifier {
    fn kind(&self) -> &'static str {
        "slack"
    }

    async fn notify(&self, n: &Notification) -> PluginResult<Option<PostedMessage>> {
        match &self.target {
            Target::IncomingWebhook { url } => {
                let bytes = serde_json::to_vec(&body(n, None))
                    .map_err(|e| PluginError::Invalid(e.to_string()))?;
                let a = post_json(&self.client, "slack", url, HeaderMap::new(), bytes).await?;
                // An incoming webhook answers `ok`, not where the message went.
                if (200..300).contains(&a.status) {
                    Ok(None)
                } else {
                    Err(status_error("slack", &a))
                }
            }
            Target::Channel {
                api_url,
                token,
                channel,
            } => {
                let url = format!("{}/chat.postMessage", api_url.trim_end_matches('/'));
                let mut headers = HeaderMap::new();
                let auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    PluginError::Invalid("slack.bot_token is not a valid header".into())
                })?;
                headers.insert(AUTHORIZATION, auth);
                let key = n.reply_key();
                // Nothing to read with stands for nothing found (the reader is a channel's).
                let look = |since| async move {
                    match &self.reader {
                        Some(r) => {
                            r.marks_since(channel, None, since, NOTIFICATION_EVENT)
                                .await
                        }
                        None => Ok(Marks::new()),
                    }
                };
                // The channel Slack answers with (an id, where the config may name the channel).
                let posted_in = std::sync::Mutex::new(channel.clone());
                let body = body(n, Some(channel));
                let text = body["text"].as_str().unwrap_or_default().to_string();
                let post = |_text: String, mark: Option<String>| {
                    let (url, headers, posted_in) = (&url, headers.clone(), &posted_in);
                    let mut body = body.clone();
                    if let Some(mark) = mark {
                        body["metadata"] = json!({"event_type": NOTIFICATION_EVENT,
                            "event_payload": {"mark": mark}});
                    }
                    async move {
                        let bytes = serde_json::to_vec(&body)
                            .map_err(|e| PluginError::Invalid(e.to_string()))?;
                        let a = post_json(&self.client, "slack", url, headers, bytes).await?;
                        let (ts, answered_in) = posted_ts(&a)?;
                        if let Some(c) = answered_in {
                            *posted_in.lock().unwrap_or_else(|p| p.into_inner()) = c;
                        }
                        Ok(Some(ts))
                    }
                };
                let ts = post_pieces(vec![text], Some(&key), look, post).await?;
                let channel = posted_in.into_inner().unwrap_or_else(|p| p.into_inner());
                // A reply in this message's thread carries `thread_ts` = its `ts`.
                Ok(Some(PostedMessage {
                    platform: "slack".into(),
                    key: format!("{channel}:{ts}"),
                    chat: channel,
                }))
            }
        }
    }
}

/// The `ts` of a `chat.postMessage` answer, and the channel it names; the error it says.
fn posted_ts(a: &super::Answer) -> PluginResult<(String, Option<String>)> {
    if !(200..300).contains(&a.status) {
        return Err(status_error("slack", a));
    }
    let v: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
    if v["ok"] == json!(true) {
        if let Some(ts) = v["ts"].as_str() {
            return Ok((ts.to_string(), v["channel"].as_str().map(str::to_string)));
        }
    }
    let code = v["error"].as_str().unwrap_or("unexpected answer");
    // `ratelimited` comes with Retry-After; `rate_limited` (too many posts) without.
    let limited = matches!(code, "ratelimited" | "rate_limited");
    let retry_after = retry_after_header(&a.headers, Utc::now())
        .or(limited.then_some(std::time::Duration::from_secs(1)));
    Err(PluginError::Http {
        service: "slack",
        status: a.status,
        detail: excerpt(code),
        retry_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_show_the_session_its_pr_and_the_ask() {
        let n = Notification {
            id: "n1".into(),
            priority: "action".into(),
            event: "merge.ready".into(),
            session: Some("demo-2".into()),
            message: "The PR is approved & green: ready to merge.".into(),
            project: Some("demo".into()),
            pr_url: Some("https://github.com/acme/w/pull/9".into()),
            ..Notification::default()
        };
        let b = body(&n, Some("C1")).to_string();
        assert!(b.contains("demo-2"));
        assert!(b.contains("<https://github.com/acme/w/pull/9|"));
        assert!(b.contains("approved &amp; green"));
        assert!(b.contains("Please act"));
        assert!(b.contains("\"channel\":\"C1\""));
    }
}
