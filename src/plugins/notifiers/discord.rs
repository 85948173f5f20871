//! `discord`: a webhook URL, or `POST {api_url}/channels/{channel}/messages` with
//! `Authorization: Bot <token>` (wire-formats §4.1). `content` is at most 2,000 characters and
//! mentions are disabled, so a message can never ping `@everyone`. Every request carries the
//! `DiscordBot (url, version)` User-Agent Discord requires of bots.
//!
//! A 429 carries `Retry-After` and a JSON body `{"retry_after": <float seconds>, "global"}`
//! (§4.2); the body's value is the more precise, so it wins. The notifier keeps Discord's
//! limits as the chat platform does ([`crate::plugins::chat::discord_limits`]): after an
//! answer saying its bucket is spent (`X-RateLimit-Remaining: 0`, `X-RateLimit-Reset-After`)
//! or a 429, the next notification waits for the reset instead of meeting a 429.

use std::sync::Mutex;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, USER_AGENT};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{plain_text, post_json, seconds, status_error, truncate};
use crate::plugins::chat::discord_limits::{self, RateLimits, Route};
use crate::plugins::{Notification, Notifier, PluginError, PluginResult, PostedMessage};

/// Discord's `content` limit.
const MAX_CONTENT: usize = 2_000;

/// Where a Discord notifier posts.
pub enum Target {
    /// A channel webhook URL (a credential: never logged).
    Webhook {
        /// The webhook URL.
        url: String,
    },
    /// A channel, with the bot token.
    Channel {
        /// REST base URL (`discord.api_url`, with the version).
        api_url: String,
        /// Bot token.
        token: String,
        /// Channel id.
        channel: String,
    },
}

/// Posts to Discord.
pub struct DiscordNotifier {
    client: reqwest::Client,
    target: Target,
    /// What Discord said of this target's limits.
    limits: Mutex<RateLimits>,
}

impl DiscordNotifier {
    /// A notifier posting to `target`.
    pub fn new(client: reqwest::Client, target: Target) -> Self {
        DiscordNotifier {
            client,
            target,
            limits: Mutex::new(RateLimits::default()),
        }
    }

    /// The route of this notifier's one request, for its rate limits.
    fn route(&self) -> Route {
        match &self.target {
            Target::Channel { channel, .. } => {
                Route::of("POST", &format!("/channels/{channel}/messages"))
            }
            Target::Webhook { url } => {
                let path = url.split_once("/webhooks/").map_or("", |(_, p)| p);
                Route::of("POST", &format!("/webhooks/{path}"))
            }
        }
    }

    /// Until when the next notification waits for a spent bucket or the global limit, if it
    /// must wait now.
    pub fn hold(&self) -> Option<Instant> {
        let route = self.route();
        self.limits
            .lock()
            .ok()
            .and_then(|l| l.wait_until(&route, Instant::now()))
    }
}

/// Discord's nonce limit.
const MAX_NONCE: usize = 25;

/// The message body. A channel post carries the notification id as an enforced `nonce`, so
/// Discord itself drops a redelivery made within minutes (webhooks take no nonce).
pub fn body(n: &Notification, with_nonce: bool) -> Value {
    let mut b = json!({
        "content": truncate(&plain_text(n), MAX_CONTENT),
        "allowed_mentions": crate::plugins::chat::discord::no_mentions(),
    });
    if with_nonce {
        let nonce: String = n.id.chars().filter(|c| *c != '-').take(MAX_NONCE).collect();
        b["nonce"] = json!(nonce);
        b["enforce_nonce"] = json!(true);
    }
    b
}

#[async_trait]
impl Notifier for DiscordNotifier {
    fn kind(&self) -> &'static str {
        "discord"
    }

    async fn notify(&self, n: &Notification) -> PluginResult<Option<PostedMessage>> {
        let with_nonce = matches!(self.target, Target::Channel { .. });
        let bytes = serde_json::to_vec(&body(n, with_nonce))
            .map_err(|e| PluginError::Invalid(e.to_string()))?;
        let mut headers = HeaderMap::new();
        // Discord requires `DiscordBot (url, version)` of every bot request (webhooks too).
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(crate::plugins::chat::discord::USER_AGENT),
        );
        let url = match &self.target {
            Target::Webhook { url } => url.clone(),
            Target::Channel {
                api_url,
                token,
                channel,
            } => {
                let auth = HeaderValue::from_str(&format!("Bot {token}")).map_err(|_| {
                    PluginError::Invalid("discord.bot_token is not a valid header".into())
                })?;
                headers.insert(AUTHORIZATION, auth);
                format!(
                    "{}/channels/{channel}/messages",
                    api_url.trim_end_matches('/')
                )
            }
        };
        let route = self.route();
        discord_limits::wait_for(&self.limits, &route).await;
        let a = post_json(&self.client, "discord", &url, headers, bytes).await?;
        if let Ok(mut l) = self.limits.lock() {
            let json: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
            l.observe(&route, a.status, &a.headers, &json, Instant::now());
        }
        if (200..300).contains(&a.status) {
            // A channel post answers the message; a webhook's (without `?wait`) answers
            // nothing, and a reply to it would not be to the bot anyway.
            let v: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
            return Ok(match (v["id"].as_str(), v["channel_id"].as_str()) {
                (Some(id), Some(channel)) if with_nonce => Some(PostedMessage {
                    platform: "discord".into(),
                    chat: channel.to_string(),
                    key: id.to_string(),
                }),
                _ => None,
            });
        }
        let mut e = status_error("discord", &a);
        if a.status == 429 {
            let v: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
            if let (Some(secs), PluginError::Http { retry_after, .. }) =
                (v["retry_after"].as_f64().and_then(seconds), &mut e)
            {
                *retry_after = Some(secs);
            }
        }
        Err(e)
    }
}
