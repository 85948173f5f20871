//! Telegram (wire-formats §3): replies by `sendMessage`/`editMessageText` in MarkdownV2,
//! split under 4,096 characters on paragraph boundaries; messages in by a `getUpdates` long
//! poll ([`Poller`]) or by `POST /webhooks/telegram` (setWebhook mode, selected by setting
//! `telegram.secret_token`). With `telegram.webhook_url` too, Flotilla calls `setWebhook`
//! at start and `deleteWebhook` at stop; the poller calls `deleteWebhook` before its first
//! poll (a webhook left from webhook mode would make `getUpdates` answer 409).
//!
//! Every Bot API call goes through [`BotApi`] ([`super::telegram_api`]): errors, flood control
//! (429, `parameters.retry_after`, waited out here) and groups upgraded to supergroups
//! (sent to the new chat; the move is recorded, in the store when the app gives one).
//!
//! MarkdownV2 is strict: a chunk Telegram refuses with 400 "can't parse entities" is sent
//! again as plain text (no `parse_mode`), so a reply is never lost to formatting.
//!
//! The poll's offset: an update is confirmed (the next `getUpdates` carries a higher offset)
//! only after [`ChatInbox::receive`] stored it. The offset is kept in memory, not in the
//! store: after a restart the first poll has no offset, Telegram hands back every update not
//! yet confirmed, and the inbox dedupes the ones already stored (by message id). Nothing is
//! lost and nothing runs twice, without a table of our own. The bot token is part of every
//! URL, so errors never carry URLs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::split::split_message;
use super::telegram_api::{BotApi, MovedChats};
use crate::config::TelegramSettings;
use crate::plugins::notifiers::telegram::escape_markdown_v2;
use crate::plugins::{ChatInbox, ChatPlatform, InboundMessage, PluginError, PluginResult};

/// Telegram's text limit (after entity parsing), in characters.
pub const MAX_MESSAGE: usize = 4096;
/// Long-poll wait asked of `getUpdates`, in seconds.
pub const POLL_SECS: u64 = 25;
/// Pause after a failed poll or a refused `receive`, before trying again.
const POLL_BACKOFF: Duration = Duration::from_secs(2);
/// How long after a failed `getMe` the poller asks again.
const GET_ME_RETRY: Duration = Duration::from_secs(60);
/// Tries of `setWebhook`/`deleteWebhook` at start before giving up (logged).
pub const WEBHOOK_TRIES: u32 = 5;

/// Replies on Telegram.
pub struct TelegramPlatform {
    api: BotApi,
}

impl TelegramPlatform {
    /// The platform, when `telegram.bot_token` is set.
    ///
    /// # Errors
    /// `Invalid` when the HTTP client cannot be built.
    pub fn from_settings(s: &TelegramSettings, timeout: Duration) -> PluginResult<Option<Self>> {
        Ok(BotApi::from_settings(s, timeout)?.map(|api| TelegramPlatform { api }))
    }

    /// A platform talking to the Bot API at `api_url` with `token`.
    ///
    /// # Errors
    /// `Invalid` when the HTTP client cannot be built.
    pub fn new(api_url: &str, token: &str, timeout: Duration) -> PluginResult<Self> {
        Ok(TelegramPlatform {
            api: BotApi::new(api_url, token, timeout)?,
        })
    }

    /// The same platform, following chat moves (groups that became supergroups) through
    /// `moves`: sends to the old chat go to the new one.
    pub fn with_moves(self, moves: MovedChats) -> Self {
        TelegramPlatform {
            api: self.api.with_moves(moves),
        }
    }

    /// The bot's username (`getMe`), which commands in groups name (`/cmd@username`).
    ///
    /// # Errors
    /// A failed call, or an answer without a username.
    pub async fn get_me(&self) -> PluginResult<String> {
        self.api.get_me().await
    }

    /// `setWebhook` ([`BotApi::set_webhook`]).
    ///
    /// # Errors
    /// Telegram's 400 ("bad webhook: …") for a URL it will not use, or a failed call.
    pub async fn set_webhook(&self, url: &str, secret_token: &str) -> PluginResult<()> {
        self.api.set_webhook(url, secret_token).await
    }

    /// `deleteWebhook` (pending updates kept). Idempotent.
    ///
    /// # Errors
    /// A failed call.
    pub async fn delete_webhook(&self) -> PluginResult<()> {
        self.api.delete_webhook().await
    }

    /// Sends or edits one chunk: MarkdownV2 first, plain text when Telegram cannot parse it.
    async fn deliver(&self, method: &str, mut body: Value, text: &str) -> PluginResult<Value> {
        body["text"] = json!(to_markdown_v2(text));
        body["parse_mode"] = json!("MarkdownV2");
        match self.api.call(method, &body).await {
            Err(PluginError::Http {
                status: 400,
                detail,
                ..
            }) if detail.contains("can't parse entities") => {
                tracing::info!(method, "MarkdownV2 refused; resending as plain text");
                let mut plain = body;
                plain["text"] = json!(text);
                if let Some(o) = plain.as_object_mut() {
                    o.remove("parse_mode");
                }
                self.api.call(method, &plain).await
            }
            other => other,
        }
    }
}

/// A chat id goes as a number when it is one (`-100…`), else as `@channel`.
fn chat_id(thread: &str) -> Value {
    thread
        .parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(thread))
}

/// A thread → its chat id and forum topic: `{chat}` is a whole chat, `{chat}:{topic}` one
/// topic of a forum supergroup ([`parse_update`]), whose messages carry its
/// `message_thread_id`.
fn target(thread: &str) -> (Value, Option<i64>) {
    if let Some((chat, topic)) = thread.rsplit_once(':') {
        if let (Ok(chat), Ok(topic)) = (chat.parse::<i64>(), topic.parse::<i64>()) {
            return (Value::from(chat), Some(topic));
        }
    }
    (chat_id(thread), None)
}

#[async_trait]
impl ChatPlatform for TelegramPlatform {
    fn name(&self) -> &'static str {
        "telegram"
    }

    fn max_message_len(&self) -> usize {
        MAX_MESSAGE
    }

    async fn send(&self, thread: &str, text: &str) -> PluginResult<String> {
        let mut last = None;
        let (chat, topic) = target(thread);
        for chunk in split_message(text, MAX_MESSAGE) {
            let mut body = json!({"chat_id": chat, "link_preview_options": {"is_disabled": true}});
            // Without it a reply to a forum topic lands in the forum's General topic.
            if let Some(t) = topic {
                body["message_thread_id"] = json!(t);
            }
            let m = self.deliver("sendMessage", body, &chunk).await?;
            last = m["message_id"].as_i64();
        }
        last.map(|id| id.to_string())
            .ok_or_else(|| PluginError::Invalid("nothing to send".into()))
    }

    async fn edit(&self, thread: &str, message_id: &str, text: &str) -> PluginResult<()> {
        let id: i64 = message_id
            .parse()
            .map_err(|_| PluginError::Invalid(format!("bad Telegram message id {message_id}")))?;
        // A streamed message cannot grow past the limit: the core starts a new message
        // before that; here only the first chunk fits.
        let first = split_message(text, MAX_MESSAGE).into_iter().next();
        let Some(first) = first else {
            return Ok(());
        };
        let body = json!({"chat_id": target(thread).0, "message_id": id});
        match self.deliver("editMessageText", body, &first).await {
            Err(PluginError::Http {
                status: 400,
                detail,
                ..
            }) if detail.contains("message is not modified") => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

/// Converts Markdown to MarkdownV2: fenced and inline code kept (only `` ` `` and `\`
/// escaped inside), `**bold**` made `*bold*`, every other reserved character escaped.
pub fn to_markdown_v2(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("```") {
            if let Some(end) = after.find("```") {
                out.push_str("```");
                out.push_str(&escape_code(&after[..end]));
                out.push_str("```");
                rest = &after[end + 3..];
                continue;
            }
        }
        if let Some(after) = rest.strip_prefix('`') {
            if let Some(end) = after
                .find(['`', '\n'])
                .filter(|&e| e > 0 && after[e..].starts_with('`'))
            {
                out.push('`');
                out.push_str(&escape_code(&after[..end]));
                out.push('`');
                rest = &after[end + 1..];
                continue;
            }
        }
        if let Some(after) = rest.strip_prefix("**") {
            if let Some(end) = after
                .find("**")
                .filter(|&e| e > 0 && !after[..e].contains('\n'))
            {
                out.push('*');
                out.push_str(&escape_markdown_v2(&after[..end]));
                out.push('*');
                rest = &after[end + 2..];
                continue;
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push_str(&escape_markdown_v2(&c.to_string()));
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn escape_code(s: &str) -> String {
    s.replace('\\', "\\\\").replace('`', "\\`")
}

/// The inbound message in a Telegram `Update`, if it is a new text message from a human.
/// Edits, channel posts, bots and non-text messages give `None`. `/cmd@BotName` becomes
/// `/cmd` (group chats address commands to a bot that way). A reply names the message it
/// replies to in `meta.reply_to` (`{chat}:{message_id}`, a notification's post key).
///
/// The thread is the chat, or `{chat}:{message_thread_id}` for a message in a forum topic
/// (`is_topic_message`): each topic is a conversation of its own, and replies go to it
/// (`sendMessage`'s `message_thread_id`). A reply thread in a group that is not a forum also
/// has a `message_thread_id`, but `sendMessage` takes one for forum topics only.
pub fn parse_update(update: &Value) -> Option<InboundMessage> {
    parse_update_for(update, None)
}

/// [`parse_update`] for the bot whose username is `bot` (`getMe`): a command addressed to
/// another bot (`/cmd@OtherBot`, Telegram's form for commands in groups with several bots)
/// is not for us. Without the username every command is taken.
pub fn parse_update_for(update: &Value, bot: Option<&str>) -> Option<InboundMessage> {
    let m = update.get("message")?;
    if m["from"]["is_bot"].as_bool().unwrap_or(false) {
        return None;
    }
    let text = m["text"].as_str()?.trim();
    if text.is_empty() {
        return None;
    }
    if let (Some(bot), Some(to)) = (bot, command_addressee(text)) {
        if !to.eq_ignore_ascii_case(bot.trim_start_matches('@')) {
            return None;
        }
    }
    let chat = m["chat"]["id"].as_i64()?;
    let id = m["message_id"].as_i64()?;
    let author = m["from"]["id"].as_i64()?;
    let mut meta = std::collections::BTreeMap::new();
    if let Some(replied) = m["reply_to_message"]["message_id"].as_i64() {
        meta.insert("reply_to".to_string(), format!("{chat}:{replied}"));
    }
    let thread = match m["message_thread_id"].as_i64() {
        Some(topic) if m["is_topic_message"].as_bool() == Some(true) => format!("{chat}:{topic}"),
        _ => chat.to_string(),
    };
    Some(InboundMessage {
        platform: "telegram".into(),
        thread,
        message_id: format!("{chat}:{id}"),
        author: author.to_string(),
        text: strip_bot_suffix(text),
        meta,
    })
}

/// The move a service message in `update` announces, as (old chat, new chat): a group
/// upgraded to a supergroup says `migrate_to_chat_id` in the old group and
/// `migrate_from_chat_id` in the new supergroup (Bot API, `Message`).
pub fn chat_move(update: &Value) -> Option<(i64, i64)> {
    let m = update.get("message")?;
    let chat = m["chat"]["id"].as_i64()?;
    let (from, to) = if let Some(to) = m["migrate_to_chat_id"].as_i64() {
        (chat, to)
    } else {
        (m["migrate_from_chat_id"].as_i64()?, chat)
    };
    (from != to).then_some((from, to))
}

/// Marks a message written in a chat another chat moved to (a supergroup a group became) with
/// the thread it would have had in the old chat, `meta.moved_from` (`{old}` or
/// `{old}:{topic}`): the inbox puts it in that thread's conversation when one exists, so the
/// conversation goes on after the upgrade (its replies still go to the new chat,
/// [`BotApi::call`]). A message of a chat nothing moved to is left as it is.
///
/// # Errors
/// `Unreachable` when the moves cannot be read (the update must not be acknowledged).
pub async fn mark_moved_from(m: &mut InboundMessage, moves: &MovedChats) -> PluginResult<()> {
    let (chat, topic) = target(&m.thread);
    let Some(chat) = chat.as_i64() else {
        return Ok(());
    };
    if let Some(old) = moves.moved_from(chat).await? {
        let thread = match topic {
            Some(t) => format!("{old}:{t}"),
            None => old.to_string(),
        };
        m.meta.insert("moved_from".to_string(), thread);
    }
    Ok(())
}

/// The bot a command names: `/status@FlotillaBot now` → `FlotillaBot`.
fn command_addressee(text: &str) -> Option<&str> {
    let first = text.strip_prefix('/')?.split(char::is_whitespace).next()?;
    first.split_once('@').map(|(_, bot)| bot)
}

/// `/status@FlotillaBot now` → `/status now`.
fn strip_bot_suffix(text: &str) -> String {
    if !text.starts_with('/') {
        return text.to_string();
    }
    let (first, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let cmd = first.split('@').next().unwrap_or(first);
    if rest.is_empty() {
        cmd.to_string()
    } else {
        format!("{cmd} {rest}")
    }
}

/// The `getUpdates` long poll.
pub struct Poller {
    api: BotApi,
    /// The next update id to ask for; advanced only past updates the inbox stored.
    offset: Option<i64>,
    /// The bot's username (`getMe`), once known: commands for other bots are skipped.
    username: Option<String>,
}

impl Poller {
    /// The poller, when `telegram.bot_token` is set and `secret_token` is not (with a secret
    /// token Telegram pushes to `/webhooks/telegram` and `getUpdates` would answer 409).
    ///
    /// # Errors
    /// `Invalid` when the HTTP client cannot be built.
    pub fn from_settings(s: &TelegramSettings, timeout: Duration) -> PluginResult<Option<Self>> {
        if s.secret_token.as_ref().is_some_and(|t| !t.is_empty()) {
            return Ok(None);
        }
        // The request outlives the long poll itself.
        let api = BotApi::from_settings(s, timeout + Duration::from_secs(POLL_SECS))?;
        Ok(api.map(|api| Poller {
            api,
            offset: None,
            username: None,
        }))
    }

    /// The same poller, recording the chat moves service messages announce in `moves`.
    pub fn with_moves(self, moves: MovedChats) -> Self {
        Poller {
            api: self.api.with_moves(moves),
            ..self
        }
    }

    /// Removes any webhook (one left by webhook mode would make every `getUpdates` answer
    /// 409), then polls until the task is aborted.
    pub async fn run(mut self, inbox: Arc<dyn ChatInbox>) {
        for attempt in 1..=WEBHOOK_TRIES {
            match self.delete_webhook().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "telegram deleteWebhook failed");
                    tokio::time::sleep(POLL_BACKOFF).await;
                }
            }
        }
        self.learn_username().await;
        let mut asked = tokio::time::Instant::now();
        loop {
            // A failed `getMe` is asked again now and then (every command is taken meanwhile).
            if self.username.is_none() && asked.elapsed() >= GET_ME_RETRY {
                self.learn_username().await;
                asked = tokio::time::Instant::now();
            }
            if let Err(e) = self.poll_once(inbox.as_ref()).await {
                tracing::warn!(error = %e, "telegram poll failed");
                tokio::time::sleep(POLL_BACKOFF).await;
            }
        }
    }

    /// Asks `getMe` for the bot's username (kept for [`Poller::poll_once`]); a failure is
    /// logged and every command is taken meanwhile.
    pub async fn learn_username(&mut self) {
        match self.api.get_me().await {
            Ok(name) => self.username = Some(name),
            Err(e) => tracing::warn!(error = %e, "telegram getMe failed"),
        }
    }

    /// `deleteWebhook` (pending updates kept: the poll reads them).
    ///
    /// # Errors
    /// The call failed.
    pub async fn delete_webhook(&self) -> PluginResult<()> {
        self.api.delete_webhook().await
    }

    /// One `getUpdates`, each update handed to `inbox` in order; a service message saying a
    /// group became a supergroup ([`chat_move`]) is recorded first, and a message from such
    /// a supergroup names the group it was ([`mark_moved_from`]). Returns how many messages
    /// were stored.
    ///
    /// # Errors
    /// The poll failed, or the inbox (or the store, for a move) refused an update (the
    /// offset stays before it, so the next poll gets it again).
    pub async fn poll_once(&mut self, inbox: &dyn ChatInbox) -> PluginResult<usize> {
        let updates = self.api.get_updates(self.offset, POLL_SECS).await?;
        let mut stored = 0;
        for u in &updates {
            let Some(id) = u["update_id"].as_i64() else {
                continue;
            };
            if let Some((from, to)) = chat_move(u) {
                self.api.moves().record(from, to).await?;
            }
            if let Some(mut msg) = parse_update_for(u, self.username.as_deref()) {
                mark_moved_from(&mut msg, self.api.moves()).await?;
                inbox.receive(msg).await?;
                stored += 1;
            }
            self.offset = Some(id + 1);
        }
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_v2_escapes_plain_text_per_the_vector() {
        assert_eq!(
            to_markdown_v2("v1.2 (beta)! a_b"),
            "v1\\.2 \\(beta\\)\\! a\\_b"
        );
    }

    #[test]
    fn markdown_v2_keeps_code_and_bold() {
        assert_eq!(
            to_markdown_v2("**Done.** run `a_b()` then\n```\nx = 1 # c\\\n```"),
            "*Done\\.* run `a_b()` then\n```\nx = 1 # c\\\\\n```"
        );
        // An unclosed fence or bold is escaped as text.
        assert_eq!(to_markdown_v2("``` open"), "\\`\\`\\` open");
        assert_eq!(to_markdown_v2("**open"), "\\*\\*open");
    }

    #[test]
    fn updates_parse_to_messages_and_skip_bots_and_edits() {
        let u = json!({"update_id": 7, "message": {"message_id": 3, "from": {"id": 42, "is_bot": false},
            "chat": {"id": -100, "type": "group"}, "date": 1, "text": "/status@FlotillaBot now"}});
        let m = parse_update(&u).expect("message");
        assert_eq!(m.thread, "-100");
        assert_eq!(m.message_id, "-100:3");
        assert_eq!(m.author, "42");
        assert_eq!(m.text, "/status now");
        assert!(!m.meta.contains_key("reply_to"));
        let mut reply = u.clone();
        reply["message"]["reply_to_message"] = json!({"message_id": 2, "chat": {"id": -100}});
        let m = parse_update(&reply).expect("reply");
        assert_eq!(m.meta.get("reply_to").map(String::as_str), Some("-100:2"));
        let mut bot = u.clone();
        bot["message"]["from"]["is_bot"] = json!(true);
        assert!(parse_update(&bot).is_none());
        let edit = json!({"update_id": 8, "edited_message": u["message"].clone()});
        assert!(parse_update(&edit).is_none());
        // A command for another bot is not ours once we know our name.
        let mut other = u.clone();
        other["message"]["text"] = json!("/status@OtherBot");
        assert!(parse_update_for(&other, Some("FlotillaBot")).is_none());
        assert!(parse_update_for(&u, Some("flotillabot")).is_some());
        assert!(parse_update(&other).is_some(), "unknown name: taken");
        // A forum topic is its own thread; a reply thread of a plain group is not.
        let mut topic = u.clone();
        topic["message"]["message_thread_id"] = json!(5);
        topic["message"]["is_topic_message"] = json!(true);
        assert_eq!(parse_update(&topic).expect("topic").thread, "-100:5");
        assert_eq!(target("-100:5"), (json!(-100), Some(5)));
        assert_eq!(target("-100"), (json!(-100), None));
        assert_eq!(target("@ops"), (json!("@ops"), None));
        topic["message"]["is_topic_message"] = json!(null);
        assert_eq!(parse_update(&topic).expect("reply thread").thread, "-100");
        let photo = json!({"update_id": 9, "message": {"message_id": 4, "from": {"id": 42},
            "chat": {"id": 1}, "photo": []}});
        assert!(parse_update(&photo).is_none());
    }

    #[test]
    fn the_upgrade_to_a_supergroup_is_read_from_either_service_message() {
        let to = json!({"update_id": 1, "message": {"message_id": 5, "date": 1,
            "chat": {"id": -555, "type": "group"}, "migrate_to_chat_id": -100_555_i64}});
        let from = json!({"update_id": 2, "message": {"message_id": 1, "date": 1,
            "chat": {"id": -100_555_i64, "type": "supergroup"}, "migrate_from_chat_id": -555}});
        assert_eq!(chat_move(&to), Some((-555, -100_555)));
        assert_eq!(chat_move(&from), Some((-555, -100_555)));
        assert!(
            parse_update(&to).is_none(),
            "a service message is no message"
        );
        let text = json!({"update_id": 3, "message": {"message_id": 2, "date": 1,
            "from": {"id": 42}, "chat": {"id": -555}, "text": "hi"}});
        assert_eq!(chat_move(&text), None);
    }
}
