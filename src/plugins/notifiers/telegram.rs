//! `telegram`: `sendMessage` to a chat id (wire-formats §3.4), in MarkdownV2 with every
//! reserved character escaped (§3.5), at most 4,096 characters.
//!
//! Answers are `{"ok": true, "result": …}` or `{"ok": false, "error_code", "description",
//! "parameters": {"retry_after"}}`; flood control is a 429 with `parameters.retry_after`.
//! The request URL holds the bot token, so errors never carry it.

use std::sync::Mutex;

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use super::{excerpt, plain_text, post_json, seconds, status_error, truncate, Answer};
use crate::plugins::{Notification, Notifier, PluginError, PluginResult, PostedMessage};

/// Telegram's text limit, with room for escapes (counted before escaping).
const MAX_TEXT: usize = 3_500;

/// Sends to one Telegram chat.
pub struct TelegramNotifier {
    client: reqwest::Client,
    api_url: String,
    token: String,
    chat_id: String,
    /// The supergroup the configured group became (`parameters.migrate_to_chat_id`), once
    /// Telegram said so: later notifications go there at once.
    migrated: Mutex<Option<i64>>,
}

impl TelegramNotifier {
    /// A notifier sending to `chat_id` through the Bot API at `api_url`.
    pub fn new(client: reqwest::Client, api_url: String, token: String, chat_id: String) -> Self {
        TelegramNotifier {
            client,
            api_url,
            token,
            chat_id,
            migrated: Mutex::new(None),
        }
    }

    /// The chat to send to: the configured one, or the supergroup it became.
    fn target(&self) -> String {
        match self.migrated.lock().ok().and_then(|m| *m) {
            Some(id) => id.to_string(),
            None => self.chat_id.clone(),
        }
    }

    /// One `sendMessage` to `chat`: the answer's status and JSON (`Null` when not JSON).
    async fn send(&self, n: &Notification, chat: &str) -> PluginResult<(Answer, Value)> {
        let bytes =
            serde_json::to_vec(&body(n, chat)).map_err(|e| PluginError::Invalid(e.to_string()))?;
        let url = format!(
            "{}/bot{}/sendMessage",
            self.api_url.trim_end_matches('/'),
            self.token
        );
        let a = post_json(&self.client, "telegram", &url, HeaderMap::new(), bytes).await?;
        let v: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
        Ok((a, v))
    }
}

/// Escapes text for MarkdownV2: the 18 reserved characters and the backslash.
pub fn escape_markdown_v2(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if matches!(
            c,
            '_' | '*'
                | '['
                | ']'
                | '('
                | ')'
                | '~'
                | '`'
                | '>'
                | '#'
                | '+'
                | '-'
                | '='
                | '|'
                | '{'
                | '}'
                | '.'
                | '!'
                | '\\'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The `sendMessage` body: the first line bold, the rest plain.
pub fn body(n: &Notification, chat_id: &str) -> Value {
    let text = truncate(&plain_text(n), MAX_TEXT);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let mut md = format!("*{}*", escape_markdown_v2(first));
    if !rest.is_empty() {
        md.push('\n');
        md.push_str(&escape_markdown_v2(rest));
    }
    // A numeric id goes as a number; `@channelname` as a string.
    let chat: Value = chat_id
        .parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(chat_id));
    json!({
        "chat_id": chat,
        "text": md,
        "parse_mode": "MarkdownV2",
        "link_preview_options": {"is_disabled": true},
    })
}

/// Where a sent message landed (`result` of `sendMessage`): `{chat}:{message_id}`, the key
/// a reply's `reply_to_message` names (`plugins::chat::telegram::parse_update`).
fn posted(result: &Value) -> Option<PostedMessage> {
    let chat = result["chat"]["id"].as_i64()?;
    let id = result["message_id"].as_i64()?;
    Some(PostedMessage {
        platform: "telegram".into(),
        chat: chat.to_string(),
        key: format!("{chat}:{id}"),
    })
}

#[async_trait]
impl Notifier for TelegramNotifier {
    fn kind(&self) -> &'static str {
        "telegram"
    }

    async fn notify(&self, n: &Notification) -> PluginResult<Option<PostedMessage>> {
        let chat = self.target();
        let (mut a, mut v) = self.send(n, &chat).await?;
        // A group upgraded to a supergroup refuses with `parameters.migrate_to_chat_id`
        // (Bot API, `ResponseParameters`): send there, now and from now on.
        if let Some(new) = v["parameters"]["migrate_to_chat_id"].as_i64() {
            if v["ok"] != json!(true) && new.to_string() != chat {
                tracing::warn!(
                    "telegram notifier: the group became a supergroup; update its chat_id"
                );
                if let Ok(mut m) = self.migrated.lock() {
                    *m = Some(new);
                }
                (a, v) = self.send(n, &new.to_string()).await?;
            }
        }
        if (200..300).contains(&a.status) && v["ok"] == json!(true) {
            return Ok(posted(&v["result"]));
        }
        if v.is_null() {
            return Err(status_error("telegram", &a));
        }
        let status = v["error_code"]
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(a.status);
        Err(PluginError::Http {
            service: "telegram",
            status,
            detail: excerpt(v["description"].as_str().unwrap_or("unexpected answer")),
            retry_after: v["parameters"]["retry_after"].as_f64().and_then(seconds),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_v2_escapes_every_reserved_character() {
        assert_eq!(
            escape_markdown_v2("a_b*c[d](e)~f`g>h#i+j-k=l|m{n}o.p!q\\r"),
            "a\\_b\\*c\\[d\\]\\(e\\)\\~f\\`g\\>h\\#i\\+j\\-k\\=l\\|m\\{n\\}o\\.p\\!q\\\\r"
        );
    }

    #[test]
    fn body_bolds_the_headline_and_sends_numeric_chat_ids_as_numbers() {
        let n = Notification {
            priority: "urgent".into(),
            session: Some("demo-1".into()),
            message: "exit 3.".into(),
            ..Notification::default()
        };
        let b = body(&n, "-100123");
        assert_eq!(b["chat_id"], json!(-100123));
        assert!(b["text"]
            .as_str()
            .expect("text")
            .starts_with("*\\[URGENT\\] demo\\-1: exit 3\\.*\n"));
        assert_eq!(body(&n, "@ops")["chat_id"], json!("@ops"));
    }
}
