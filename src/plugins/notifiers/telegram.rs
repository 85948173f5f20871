//! `telegram`: `sendMessage` to a chat id (wire-formats §3.4), in MarkdownV2 with every
//! reserved character escaped (§3.5), at most 4,096 characters.
//!
//! The call goes through the Bot API client ([`BotApi`]): its errors carry `error_code`,
//! `description` and flood control's `parameters.retry_after`, returned at once for the
//! outbox to wait out ([`Flood::Report`]); a group upgraded to a supergroup is followed to
//! the new chat, and the move is kept for later notifications (in the store when the app
//! gives one, so also after a restart). The request URL holds the bot token, so errors never
//! carry it.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{plain_text, truncate};
use crate::plugins::chat::telegram_api::{BotApi, Flood, MovedChats};
use crate::plugins::{Notification, Notifier, PluginResult, PostedMessage};

/// Telegram's text limit, with room for escapes (counted before escaping).
const MAX_TEXT: usize = 3_500;

/// Sends to one Telegram chat.
pub struct TelegramNotifier {
    api: BotApi,
    chat_id: String,
}

impl TelegramNotifier {
    /// A notifier sending to `chat_id` through the Bot API at `api_url`.
    pub fn new(client: reqwest::Client, api_url: String, token: String, chat_id: String) -> Self {
        TelegramNotifier {
            api: BotApi::with_client(client, &api_url, &token).on_flood(Flood::Report),
            chat_id,
        }
    }

    /// The same notifier, following chat moves through `moves` (shared with the chat
    /// adapter, and the store behind it).
    pub fn with_moves(self, moves: MovedChats) -> Self {
        TelegramNotifier {
            api: self.api.with_moves(moves),
            ..self
        }
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
        let result = self
            .api
            .call("sendMessage", &body(n, &self.chat_id))
            .await?;
        Ok(posted(&result))
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
