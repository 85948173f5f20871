//! Chat platform adapters: how messages arrive from and replies go to Telegram, Discord,
//! Slack, GitHub comments and Jira comments.
//!
//! | platform | file | inbound | outbound |
//! |---|---|---|---|
//! | `telegram` | [`telegram`] | `getUpdates` long poll or `POST /webhooks/telegram` | `sendMessage`, `editMessageText`, MarkdownV2 |
//! | `discord` | [`discord`] (+ [`gateway`], [`discord_limits`]) | Gateway `MESSAGE_CREATE`, `POST /webhooks/discord/interactions` | `POST/PATCH /channels/{id}/messages` |
//! | `slack` | [`slack`] | `POST /webhooks/slack/events`, `POST /webhooks/slack/commands` | `chat.postMessage`, `chat.update`; a command's `response_url` where the bot is not in the channel |
//! | `github` | [`github`] | `issue_comment`/`pull_request_review_comment` on `/webhooks/github` | issue comments |
//! | `jira` | [`jira`] (+ [`adf`]) | `comment_created` on `/webhooks/jira` | REST v3 comments in ADF |
//!
//! Each adapter is a [`ChatPlatform`] built from its settings section, with its base URL from
//! config (tests point it at the fakes in `tests/support/`) and a timeout on every call. Pure
//! parsers turn a platform's payload into an [`InboundMessage`] (or `None`: not for us);
//! request verification lives in [`verify`], splitting in [`split`]. Adapters never touch the
//! store or actors: inbound messages go to a [`ChatInbox`], and the platform is acknowledged
//! only after `receive` returned Ok. One exception, handed in at construction: Telegram's
//! chat moves ([`telegram_api::MovedChats`] over `store::ChatMoves`), which the Bot API client
//! shared by the Telegram adapter and notifier ([`telegram_api`]) reads and writes.
//!
//! Rate limits: a 429 (Telegram flood control, Slack `ratelimited`, Discord buckets, GitHub
//! secondary limits) is waited out and retried inside the adapter ([`MAX_ATTEMPTS`] tries, a
//! wait of at most [`MAX_RATE_LIMIT_WAIT`] each), so a streamed reply completes after the
//! wait; past that the call fails with [`PluginError::RateLimited`]. Secrets (bot tokens,
//! signing secrets) never appear in errors or logs.

pub mod adf;
pub mod discord;
pub mod discord_limits;
pub mod gateway;
pub mod github;
pub mod history;
pub mod jira;
pub mod reply_key;
pub mod slack;
pub mod split;
pub mod telegram;
pub mod telegram_api;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;

use super::notifiers::{excerpt, retry_after_header, seconds, transport_error};
use super::{ChatInbox, ChatPlatform, PluginError, PluginResult};
use crate::config::Settings;

/// Timeout of every platform call (REST request, one send or edit).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries of one platform call when it answers 429 (the first try included).
pub const MAX_ATTEMPTS: u32 = 4;
/// Longest rate-limit wait honoured inside a call; a longer one fails the call at once.
pub const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(120);
/// Wait when a 429 does not say how long.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);

/// A platform's answer: status, headers, and the body as JSON (`Null` when it is not JSON).
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Reply {
    /// The error for this answer: the platform's own message, never a secret.
    pub(crate) fn error(&self, service: &'static str, detail: Option<&str>) -> PluginError {
        PluginError::Http {
            service,
            status: self.status,
            detail: excerpt(detail.unwrap_or(&self.text)),
            retry_after: rate_limit_wait(&self.headers, &self.json),
        }
    }
}

/// How long a 429 asks us to wait: `Retry-After`, or the body's `retry_after` (Discord, a
/// float) or `parameters.retry_after` (Telegram).
pub(crate) fn rate_limit_wait(headers: &HeaderMap, body: &Value) -> Option<Duration> {
    retry_after_header(headers, chrono::Utc::now())
        .or_else(|| body["retry_after"].as_f64().and_then(seconds))
        .or_else(|| body["parameters"]["retry_after"].as_f64().and_then(seconds))
}

/// One platform's HTTP client: a total timeout per request, and 429s waited out.
#[derive(Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    service: &'static str,
}

impl Http {
    /// A client for `service` whose every request is bounded by `timeout`.
    pub(crate) fn new(service: &'static str, timeout: Duration) -> PluginResult<Self> {
        Ok(Self::with_client(
            service,
            super::notifiers::http_client(timeout)?,
        ))
    }

    /// A client for `service` over `client` (its timeouts are the caller's).
    pub(crate) fn with_client(service: &'static str, client: reqwest::Client) -> Self {
        Http { client, service }
    }

    /// Sends the request `make` builds, again after the platform's wait while it answers 429.
    /// Any other status is returned for the caller to judge.
    ///
    /// # Errors
    /// `Unreachable` on transport failure (URL stripped), `RateLimited` when the platform
    /// keeps refusing or asks for more than [`MAX_RATE_LIMIT_WAIT`].
    pub(crate) async fn call(
        &self,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> PluginResult<Reply> {
        self.call_observed(make, |_| {}).await
    }

    /// As [`Http::call`], showing `observe` every answer, the 429s waited out included (a
    /// platform whose limits are wider than one request, Discord's global limit, learns of
    /// them there).
    ///
    /// # Errors
    /// As [`Http::call`].
    pub(crate) async fn call_observed(
        &self,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        observe: impl Fn(&Reply),
    ) -> PluginResult<Reply> {
        let mut attempt = 1;
        loop {
            let reply = self.call_once(&make).await?;
            observe(&reply);
            if reply.status != 429 {
                return Ok(reply);
            }
            let wait =
                rate_limit_wait(&reply.headers, &reply.json).unwrap_or(DEFAULT_RATE_LIMIT_WAIT);
            if attempt >= MAX_ATTEMPTS || wait > MAX_RATE_LIMIT_WAIT {
                return Err(PluginError::RateLimited {
                    kind: "secondary",
                    retry_after: wait,
                });
            }
            tracing::info!(
                service = self.service,
                attempt,
                wait_ms = wait.as_millis() as u64,
                "rate limited; waiting"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Sends the request `make` builds once: a 429 is returned like any other answer (for a
    /// caller that leaves the waiting to somebody else, as the notification outbox does).
    ///
    /// # Errors
    /// `Unreachable` on transport failure (URL stripped).
    pub(crate) async fn call_once(
        &self,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> PluginResult<Reply> {
        let resp = make(&self.client)
            .send()
            .await
            .map_err(|e| transport_error(self.service, e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp
            .text()
            .await
            .map_err(|e| transport_error(self.service, e))?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            headers,
            json,
            text,
        })
    }
}

/// `req` with `body` as its JSON body, or none for `Value::Null` (a GET carries no body).
pub(crate) fn json_body(req: reqwest::RequestBuilder, body: &Value) -> reqwest::RequestBuilder {
    if body.is_null() {
        req
    } else {
        req.json(body)
    }
}

/// Finds an `@name` mention in `text`: `@` not preceded by a word character, followed by
/// whitespace, `,`, `:`, `;`, `.`, `!`, `?` or the end. Returns the text with every such
/// mention removed and trimmed, or `None` when there is no mention.
pub fn strip_mention(text: &str, name: &str, case_insensitive: bool) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let needle = format!("@{name}");
    let (hay, pat) = if case_insensitive {
        (text.to_lowercase(), needle.to_lowercase())
    } else {
        (text.to_string(), needle.clone())
    };
    // Lowercasing can change byte lengths for some scripts; bail out to an exact search then.
    let (hay, pat) = if hay.len() == text.len() {
        (hay, pat)
    } else {
        (text.to_string(), needle)
    };
    let mut out = String::with_capacity(text.len());
    let mut found = false;
    let mut last = 0;
    let mut from = 0;
    while let Some(pos) = hay[from..].find(&pat) {
        let start = from + pos;
        let end = start + pat.len();
        let before_ok = text[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '/'));
        let after_ok = text[end..]
            .chars()
            .next()
            .is_none_or(|c| c.is_whitespace() || ",:;.!?".contains(c));
        if before_ok && after_ok {
            found = true;
            out.push_str(&text[last..start]);
            // Drop the punctuation that addressed the bot (`@bot, do x`).
            let mut skip = end;
            if let Some(c) = text[end..].chars().next() {
                if ",:;".contains(c) {
                    skip += c.len_utf8();
                }
            }
            last = skip;
        }
        from = end;
    }
    if !found {
        return None;
    }
    out.push_str(&text[last..]);
    Some(collapse_spaces(&out))
}

/// Each line's runs of whitespace made one space, the whole trimmed.
fn collapse_spaces(s: &str) -> String {
    s.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

/// Every chat platform configured in `settings` (those with credentials), each bounding its
/// calls with `timeout`; Telegram follows chat moves through `telegram_moves`. A platform
/// without its token is left out, not an error.
///
/// # Errors
/// `Invalid` when an HTTP client cannot be built.
pub fn platforms_from(
    settings: &Settings,
    timeout: Duration,
    telegram_moves: &telegram_api::MovedChats,
) -> PluginResult<Vec<Arc<dyn ChatPlatform>>> {
    let mut out: Vec<Arc<dyn ChatPlatform>> = Vec::new();
    if let Some(p) = telegram::TelegramPlatform::from_settings(&settings.telegram, timeout)? {
        out.push(Arc::new(p.with_moves(telegram_moves.clone())));
    }
    if let Some(p) = discord::DiscordPlatform::from_settings(&settings.discord, timeout)? {
        out.push(Arc::new(p));
    }
    if let Some(p) = slack::SlackPlatform::from_settings(&settings.slack, timeout)? {
        out.push(Arc::new(p));
    }
    if let Some(p) = github::GithubCommentsPlatform::from_settings(&settings.github, timeout)? {
        out.push(Arc::new(p));
    }
    if let Some(p) = jira::JiraPlatform::from_settings(&settings.jira, timeout)? {
        out.push(Arc::new(p));
    }
    Ok(out)
}

/// What [`start_listeners`] started, to be stopped at shutdown ([`Listeners::stop`]).
#[derive(Default)]
pub struct Listeners {
    /// The long poll and gateway tasks, and the start-up registrations.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The Telegram webhook Flotilla registered (deleted at stop).
    telegram_webhook: Option<Arc<telegram::TelegramPlatform>>,
}

impl Listeners {
    /// Aborts the listeners and removes the Telegram webhook Flotilla registered (best
    /// effort: a failure is logged; Telegram keeps undelivered updates for the next start).
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(tg) = self.telegram_webhook {
            match tg.delete_webhook().await {
                Ok(()) => tracing::info!("telegram webhook removed"),
                Err(e) => tracing::warn!(error = %e, "telegram deleteWebhook failed"),
            }
        }
    }

    /// How many tasks run (tests).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether nothing was started.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.telegram_webhook.is_none()
    }
}

/// Starts what talks to the platforms without a webhook being called, each only when its
/// `chat.allow` list names somebody (a bot token alone may be there for notifications, and a
/// poll would then swallow updates nobody may send; allowlists are closed by default):
/// - the Telegram long poll (`telegram.bot_token` set, no `secret_token`), which first
///   deletes any webhook; or, in webhook mode with `telegram.webhook_url`, `setWebhook`
///   with the secret token (removed again by [`Listeners::stop`]);
/// - the Discord gateway (`discord.bot_token`), and with `discord.public_key` (interactions)
///   the registration of the application commands, written only when Discord's differ.
///
/// Each hands every message to `inbox` and runs until stopped or the actix system stops.
/// Must be called inside the actix system (the gateway's WebSocket client is not `Send`).
///
/// # Errors
/// `Invalid` when an HTTP client cannot be built.
pub fn start_listeners(
    settings: &Settings,
    inbox: Arc<dyn ChatInbox>,
    timeout: Duration,
    telegram_moves: &telegram_api::MovedChats,
) -> PluginResult<Listeners> {
    let mut out = Listeners::default();
    let allowed = |ids: &Vec<String>| !ids.is_empty();
    if allowed(&settings.chat.allow.telegram) {
        start_telegram(settings, inbox.clone(), timeout, telegram_moves, &mut out)?;
    }
    if allowed(&settings.chat.allow.discord) {
        if let Some(gw) = gateway::Gateway::from_settings(&settings.discord) {
            let inbox = inbox.clone();
            out.tasks.push(actix_rt::spawn(async move {
                // `run` logs why it stopped; nothing else can fix a bad token or intent.
                let _stopped = gw.run(inbox).await;
            }));
        }
        let interactions = settings
            .discord
            .public_key
            .as_ref()
            .is_some_and(|k| !k.is_empty());
        if interactions {
            if let Some(p) = discord::DiscordPlatform::from_settings(&settings.discord, timeout)? {
                out.tasks
                    .push(actix_rt::spawn(register_discord_commands(p)));
            }
        }
    }
    Ok(out)
}

fn start_telegram(
    settings: &Settings,
    inbox: Arc<dyn ChatInbox>,
    timeout: Duration,
    moves: &telegram_api::MovedChats,
    out: &mut Listeners,
) -> PluginResult<()> {
    if let Some(poller) = telegram::Poller::from_settings(&settings.telegram, timeout)? {
        let poller = poller.with_moves(moves.clone());
        out.tasks.push(actix_rt::spawn(async move {
            poller.run(inbox).await;
        }));
        return Ok(());
    }
    let tg = &settings.telegram;
    let (Some(url), Some(secret)) = (
        tg.webhook_url.as_ref().filter(|u| !u.is_empty()),
        tg.secret_token.as_ref().filter(|t| !t.is_empty()),
    ) else {
        return Ok(());
    };
    let Some(p) = telegram::TelegramPlatform::from_settings(tg, timeout)? else {
        return Ok(());
    };
    let p = Arc::new(p);
    out.telegram_webhook = Some(p.clone());
    let (url, secret) = (url.clone(), secret.expose().to_string());
    out.tasks.push(actix_rt::spawn(async move {
        for attempt in 1..=telegram::WEBHOOK_TRIES {
            match p.set_webhook(&url, &secret).await {
                Ok(()) => {
                    tracing::info!("telegram webhook registered");
                    return;
                }
                // A 400 ("bad webhook") will not get better by trying again.
                Err(e) if !e.is_retriable() => {
                    tracing::error!(error = %e, "telegram setWebhook refused");
                    return;
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "telegram setWebhook failed");
                    tokio::time::sleep(Duration::from_secs(2 * u64::from(attempt))).await;
                }
            }
        }
    }));
    Ok(())
}

async fn register_discord_commands(p: discord::DiscordPlatform) {
    for attempt in 1..=3u64 {
        match p.register_commands().await {
            Ok(true) => {
                tracing::info!("discord application commands registered");
                return;
            }
            Ok(false) => {
                tracing::debug!("discord application commands already up to date");
                return;
            }
            Err(e) if !e.is_retriable() => {
                tracing::error!(error = %e, "discord refused the application commands");
                return;
            }
            Err(e) => {
                tracing::warn!(attempt, error = %e, "discord command registration failed");
                tokio::time::sleep(Duration::from_secs(2 * attempt)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_need_a_boundary_and_are_stripped() {
        assert_eq!(
            strip_mention("@Flotilla, run /status", "flotilla", true).as_deref(),
            Some("run /status")
        );
        assert_eq!(
            strip_mention("please @flotilla fix it", "flotilla", true).as_deref(),
            Some("please fix it")
        );
        assert_eq!(
            strip_mention("@flotilla", "flotilla", true).as_deref(),
            Some("")
        );
        assert_eq!(strip_mention("@flotillabot hi", "flotilla", true), None);
        assert_eq!(strip_mention("me@flotilla hi", "flotilla", true), None);
        assert_eq!(strip_mention("@Flotilla hi", "flotilla", false), None);
        assert_eq!(
            strip_mention("@flotilla[bot] hi", "flotilla[bot]", true).as_deref(),
            Some("hi")
        );
    }

    #[test]
    fn rate_limit_wait_reads_header_then_bodies() {
        let mut h = HeaderMap::new();
        assert_eq!(
            rate_limit_wait(&h, &serde_json::json!({"parameters": {"retry_after": 3}})),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            rate_limit_wait(&h, &serde_json::json!({"retry_after": 0.5})),
            Some(Duration::from_millis(500))
        );
        h.insert("retry-after", "2".parse().expect("header"));
        assert_eq!(
            rate_limit_wait(&h, &serde_json::json!({"retry_after": 9})),
            Some(Duration::from_secs(2))
        );
    }
}
