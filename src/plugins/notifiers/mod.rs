//! Notifier plugins: how a [`Notification`] reaches a human.
//!
//! | kind | file | wire |
//! |---|---|---|
//! | `webhook` | [`webhook`] | POST JSON, `X-Flotilla-Signature-256: sha256=<hex HMAC>` |
//! | `slack` | [`slack`] | incoming webhook, or `chat.postMessage` with the bot token; Block Kit |
//! | `discord` | [`discord`] | webhook URL, or `POST /channels/{id}/messages` with the bot token |
//! | `telegram` | [`telegram`] | `sendMessage` to a chat id, MarkdownV2 |
//! | `desktop` | [`desktop`] | `notify-send` (Linux) / `osascript` (macOS), argument vectors |
//! | `chat` | [`chat`] | the conversation that spawned the session: needs the chat bridge |
//!
//! Every plugin takes its base URL from config (tests point them at local fakes), bounds each
//! call with a timeout, and never puts a secret in an error or a log line: reqwest errors are
//! stripped of their URL (Slack and Discord webhook URLs and Telegram's `/bot<token>/` path
//! are credentials). Errors say whether a retry may help (`PluginError::is_retriable`) and
//! carry the service's `Retry-After`; the outbox decides what to do with them.

pub mod chat;
pub mod desktop;
pub mod discord;
pub mod slack;
pub mod telegram;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;

use super::{Notification, Notifier, PluginError, PluginResult};
use crate::config::{NotifierKind, NotifierSettings, Settings};

/// Longest excerpt of an error body kept in `last_error`.
const ERROR_EXCERPT: usize = 200;

/// Builds the notifier `name` from its settings. `timeout` bounds every call it makes; a
/// Telegram notifier follows chat moves through `telegram_moves`.
///
/// # Errors
/// `Invalid` when a setting the kind needs is missing (validation reports these first) or the
/// HTTP client cannot be built.
pub fn build(
    name: &str,
    n: &NotifierSettings,
    settings: &Settings,
    timeout: Duration,
    telegram_moves: &super::chat::telegram_api::MovedChats,
) -> PluginResult<Arc<dyn Notifier>> {
    let missing =
        |what: &str| PluginError::Invalid(format!("notifiers.{name}: {what} is required"));
    let secret = |s: Option<&crate::config::Secret>| {
        s.filter(|s| !s.is_empty()).map(|s| s.expose().to_string())
    };
    Ok(match n.kind {
        NotifierKind::Webhook => Arc::new(webhook::WebhookNotifier::new(
            http_client(timeout)?,
            n.url.clone().ok_or_else(|| missing("url"))?,
            secret(n.secret.as_ref()),
        )),
        NotifierKind::Slack => {
            let target = match (&n.url, &n.channel) {
                (Some(url), _) => slack::Target::IncomingWebhook { url: url.clone() },
                (None, Some(channel)) => slack::Target::Channel {
                    api_url: settings.slack.api_url.clone(),
                    token: secret(settings.slack.bot_token.as_ref())
                        .ok_or_else(|| missing("slack.bot_token"))?,
                    channel: channel.clone(),
                },
                (None, None) => return Err(missing("url or channel")),
            };
            Arc::new(slack::SlackNotifier::new(
                http_client(timeout)?,
                target,
                timeout,
            )?)
        }
        NotifierKind::Discord => {
            let target = match (&n.url, &n.channel) {
                (Some(url), _) => discord::Target::Webhook { url: url.clone() },
                (None, Some(channel)) => discord::Target::Channel {
                    api_url: settings.discord.api_url.clone(),
                    token: secret(settings.discord.bot_token.as_ref())
                        .ok_or_else(|| missing("discord.bot_token"))?,
                    channel: channel.clone(),
                },
                (None, None) => return Err(missing("url or channel")),
            };
            Arc::new(discord::DiscordNotifier::new(http_client(timeout)?, target))
        }
        NotifierKind::Telegram => Arc::new(
            telegram::TelegramNotifier::new(
                http_client(timeout)?,
                settings.telegram.api_url.clone(),
                secret(settings.telegram.bot_token.as_ref())
                    .ok_or_else(|| missing("telegram.bot_token"))?,
                n.chat_id.clone().ok_or_else(|| missing("chat_id"))?,
            )
            .with_moves(telegram_moves.clone()),
        ),
        NotifierKind::Desktop => Arc::new(desktop::DesktopNotifier::new(timeout)),
        NotifierKind::Chat => Arc::new(chat::ChatNotifier),
    })
}

/// The HTTP client of one notifier: a total timeout per request, no redirects (a redirect
/// could carry the body, and its signature, somewhere else).
pub(crate) fn http_client(timeout: Duration) -> PluginResult<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("flotilla/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| PluginError::Invalid(format!("cannot build an HTTP client: {e}")))
}

/// An answer from a service: status, headers and body text.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

/// POSTs `body` (JSON) to `url` with `headers`. Only transport failures are errors here; the
/// caller judges the status, since each service signals errors its own way.
async fn post_json(
    client: &reqwest::Client,
    service: &'static str,
    url: &str,
    headers: HeaderMap,
    body: Vec<u8>,
) -> PluginResult<Answer> {
    let resp = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| transport_error(service, e))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.map_err(|e| transport_error(service, e))?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// A reqwest failure without its URL (which may hold a token).
pub(crate) fn transport_error(service: &'static str, e: reqwest::Error) -> PluginError {
    if e.is_timeout() {
        return PluginError::Unreachable {
            service,
            detail: "the request timed out".into(),
        };
    }
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut cur = std::error::Error::source(&e);
    while let Some(c) = cur {
        detail.push_str(": ");
        detail.push_str(&c.to_string());
        cur = c.source();
    }
    PluginError::Unreachable { service, detail }
}

/// The error for a non-2xx answer: its status, an excerpt of its body, its `Retry-After`.
fn status_error(service: &'static str, a: &Answer) -> PluginError {
    PluginError::Http {
        service,
        status: a.status,
        detail: excerpt(&a.body),
        retry_after: retry_after_header(&a.headers, Utc::now()),
    }
}

/// The first [`ERROR_EXCERPT`] characters of a body, on one line.
pub(crate) fn excerpt(body: &str) -> String {
    let one_line: String = body
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    truncate(&one_line, ERROR_EXCERPT)
}

/// `Retry-After` as seconds (integer or decimal) or an HTTP date, relative to `now`.
pub fn retry_after_header(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<f64>() {
        return seconds(secs);
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or_default())
}

/// A non-negative, finite number of seconds as a duration.
pub(crate) fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// `s` cut to at most `max` characters, ending in `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// What is asked of the human at each priority.
pub fn ask(priority: &str) -> &'static str {
    match priority {
        "urgent" => "A human is needed now.",
        "action" => "Please act when you can (merge, decide, answer).",
        "warning" => "Something went wrong; the fleet is handling it.",
        _ => "For your information.",
    }
}

/// One line: `[URGENT] demo-3: The agent exited with status 3.`
pub fn headline(n: &Notification) -> String {
    let who = n.session.as_deref().unwrap_or("flotilla");
    if n.is_digest() {
        format!(
            "[DIGEST] {} notifications held back by the rate limit",
            n.items.len()
        )
    } else {
        format!("[{}] {who}: {}", n.priority.to_uppercase(), n.message)
    }
}

/// Plain text of a notification (desktop, Discord, the `text` fallback of Slack): the
/// headline, then project, PR and what is asked, or a digest's items one per line.
pub fn plain_text(n: &Notification) -> String {
    let mut lines = vec![headline(n)];
    if n.is_digest() {
        lines.extend(n.items.iter().map(item_line));
        return lines.join("\n");
    }
    let mut facts = Vec::new();
    if let Some(p) = &n.project {
        facts.push(format!("project {p}"));
    }
    if let Some(s) = &n.state {
        facts.push(format!("state {s}"));
    }
    if let Some(r) = &n.reaction {
        facts.push(format!(
            "reaction {r}{}",
            if n.escalation { " (escalated)" } else { "" }
        ));
    }
    if !facts.is_empty() {
        lines.push(facts.join(" · "));
    }
    if let Some(pr) = &n.pr_url {
        lines.push(format!("PR: {pr}"));
    }
    lines.push(ask(&n.priority).to_string());
    lines.join("\n")
}

/// One digest item: `• [urgent] demo-1 (agent.waiting_input): The agent is waiting for input.`
pub fn item_line(i: &Notification) -> String {
    format!(
        "• [{}] {} ({}): {}",
        i.priority,
        i.session.as_deref().unwrap_or("flotilla"),
        i.event,
        truncate(&i.message, 200)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    fn with_retry_after(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).expect("header"));
        h
    }

    #[test]
    fn retry_after_reads_seconds_decimals_and_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .expect("date")
            .with_timezone(&Utc);
        assert_eq!(
            retry_after_header(&with_retry_after("2"), now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after_header(&with_retry_after("1.5"), now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after_header(&with_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(retry_after_header(&with_retry_after("-1"), now), None);
        assert_eq!(retry_after_header(&with_retry_after("soon"), now), None);
        assert_eq!(retry_after_header(&HeaderMap::new(), now), None);
    }

    #[test]
    fn text_says_who_what_and_what_is_asked() {
        let n = Notification {
            id: "n1".into(),
            priority: "urgent".into(),
            event: "agent.exited".into(),
            session: Some("demo-3".into()),
            message: "The agent exited with status 3.".into(),
            project: Some("demo".into()),
            reaction: Some("agent-exited".into()),
            pr_url: Some("https://github.com/acme/w/pull/7".into()),
            ..Notification::default()
        };
        let t = plain_text(&n);
        assert!(t.starts_with("[URGENT] demo-3: The agent exited with status 3."));
        assert!(t.contains("project demo"));
        assert!(t.contains("PR: https://github.com/acme/w/pull/7"));
        assert!(t.contains("A human is needed now."));
        let d = Notification {
            items: vec![n.clone(), n],
            ..Notification::default()
        };
        assert!(plain_text(&d).contains("[DIGEST] 2 notifications"));
        assert_eq!(plain_text(&d).lines().count(), 3);
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("héllo wörld", 5), "héll…");
        assert_eq!(excerpt("a\nb"), "a b");
    }

    #[test]
    fn retriable_errors_are_rate_limits_server_errors_and_transport() {
        let http = |status, retry_after| PluginError::Http {
            service: "x",
            status,
            detail: String::new(),
            retry_after,
        };
        assert!(http(429, None).is_retriable());
        assert!(http(500, None).is_retriable());
        assert!(http(503, None).is_retriable());
        assert!(http(200, Some(Duration::from_secs(1))).is_retriable());
        assert!(!http(400, None).is_retriable());
        assert!(!http(404, None).is_retriable());
        assert!(PluginError::Unreachable {
            service: "x",
            detail: String::new()
        }
        .is_retriable());
        assert_eq!(
            http(429, Some(Duration::from_secs(3))).retry_after(),
            Some(Duration::from_secs(3))
        );
    }
}
