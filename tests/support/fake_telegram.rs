//! A stateful fake of the Telegram Bot API (wire-formats §3), for tests.
//!
//! - `POST /bot<token>/<method>` (method names case-insensitive, JSON or query parameters);
//!   a wrong token answers 401 `{"ok":false,"error_code":401,"description":"Unauthorized"}`.
//! - `getUpdates`: updates injected by the test with [`FakeTelegram::push_message`], offset
//!   semantics (a call with `offset` confirms and forgets every earlier update), a real long
//!   poll (`timeout` seconds, answered early when an update arrives).
//! - `sendMessage`/`editMessageText`: text limit 4,096 characters after entity parsing
//!   (400 "message is too long"), a MarkdownV2 parser that refuses unescaped reserved
//!   characters and unclosed entities with the real 400 "can't parse entities" text, "message
//!   is not modified" for an identical edit, "message to edit not found".
//! - Forum topics: [`FakeTelegram::push_topic_message`] writes in a topic of a forum
//!   supergroup (`message_thread_id`, `is_topic_message: true`); `sendMessage` keeps the
//!   `message_thread_id` it was given ([`Sent::message_thread_id`]; without one a message to
//!   a forum lands in its General topic) and answers it in the sent Message.
//! - A group upgraded to a supergroup ([`FakeTelegram::migrate`]): calls naming the old chat
//!   answer 400 with `parameters.migrate_to_chat_id` (Bot API, `ResponseParameters`);
//!   [`FakeTelegram::push_migration`] also delivers the service messages Telegram sends then
//!   (`migrate_to_chat_id` in the old group, `migrate_from_chat_id` in the new supergroup).
//!   Every send and edit is logged with the chat it named and whether it was refused so
//!   ([`FakeTelegram::chat_calls`]).
//! - `getMe` answers the bot ([`BOT_USERNAME`]); commands in groups name it
//!   (`/cmd@FlotillaBot`).
//! - Flood control on demand: [`FakeTelegram::flood_next`] makes the next N send/edit calls
//!   answer 429 with `parameters.retry_after`.
//!
//! - Webhooks (Bot API "Getting updates"): `setWebhook` needs an HTTPS `url` on port 443,
//!   80, 88 or 8443 ("bad webhook: …" otherwise) and a `secret_token` of 1–256 characters
//!   from `A-Z a-z 0-9 _ -`; while a webhook is set, `getUpdates` answers 409 "Conflict:
//!   can't use getUpdates method while webhook is active; use deleteWebhook to delete the
//!   webhook first"; `deleteWebhook` removes it; `getWebhookInfo` reports the URL.
//!
//! Admin helpers are Rust methods, not HTTP.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::fake_server::FakeServer;

/// The bot's username (`getMe`).
pub const BOT_USERNAME: &str = "FlotillaBot";

/// One message the bot sent (its current text after edits).
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// Chat id.
    pub chat_id: i64,
    /// Message id.
    pub message_id: i64,
    /// Text as a user sees it (entities parsed, escapes removed).
    pub text: String,
    /// `parse_mode` of the last accepted send or edit.
    pub parse_mode: Option<String>,
    /// How many accepted edits.
    pub edits: u32,
    /// The forum topic it was sent to (`None`: the chat, or a forum's General topic).
    pub message_thread_id: Option<i64>,
}

/// One `sendMessage`/`editMessageText` as it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatCall {
    /// `sendmessage` or `editmessagetext`.
    pub method: String,
    /// The chat it named (`None`: not a number).
    pub chat_id: Option<i64>,
    /// Refused because that chat became a supergroup (`migrate_to_chat_id`).
    pub refused_migrated: bool,
}

#[derive(Default)]
struct State {
    token: String,
    next_update: i64,
    next_message: i64,
    /// Updates not yet confirmed.
    pending: Vec<Value>,
    /// Highest offset a getUpdates carried.
    confirmed_offset: i64,
    sent: Vec<Sent>,
    flood: u32,
    flood_secs: u64,
    /// Answer the next N sends and edits `502 Bad Gateway` (Telegram's own servers failing).
    outage: u32,
    rejected_markdown: u32,
    /// Refuse the next N MarkdownV2 texts as unparseable, whatever they hold.
    force_reject: u32,
    calls: BTreeMap<String, u64>,
    /// The webhook set by `setWebhook`: (url, secret_token).
    webhook: Option<(String, Option<String>)>,
    /// Groups upgraded to supergroups: (old chat id, new chat id).
    migrated: Vec<(i64, i64)>,
    /// Every send and edit, in order.
    chat_calls: Vec<ChatCall>,
}

/// The fake.
pub struct FakeTelegram {
    /// Base URL (`telegram.api_url`).
    pub url: String,
    state: Arc<Mutex<State>>,
    wake: Arc<tokio::sync::Notify>,
    /// The server (stopped on drop).
    _server: FakeServer,
}

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn fail(status: u16, description: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"))
        .json(json!({"ok": false, "error_code": status, "description": description}))
}

fn ok(result: Value) -> HttpResponse {
    HttpResponse::Ok().json(json!({"ok": true, "result": result}))
}

/// Checks MarkdownV2 and returns the visible text, or the error description Telegram gives.
pub fn parse_markdown_v2(s: &str) -> Result<String, String> {
    const RESERVED: &str = "_*[]()~`>#+-=|{}.!";
    let mut out = String::new();
    let mut open: Vec<&'static str> = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut byte = 0usize;
    let err = |c: char| {
        format!(
            "Bad Request: can't parse entities: Character '{c}' is reserved and must be escaped with the preceding '\\'"
        )
    };
    while i < chars.len() {
        let c = chars[i];
        let at = byte;
        byte += c.len_utf8();
        match c {
            '\\' => {
                let Some(&n) = chars.get(i + 1) else {
                    return Err(
                        "Bad Request: can't parse entities: Can't find end of the entity".into(),
                    );
                };
                out.push(n);
                byte += n.len_utf8();
                i += 2;
                continue;
            }
            '`' => {
                let fence = chars[i..].starts_with(&['`', '`', '`']);
                let width = if fence { 3 } else { 1 };
                let mut j = i + width;
                let mut body = String::new();
                loop {
                    let Some(&d) = chars.get(j) else {
                        let what = if fence { "Pre" } else { "Code" };
                        return Err(format!(
                            "Bad Request: can't parse entities: Can't find end of {what} entity at byte offset {at}"
                        ));
                    };
                    if d == '\\' {
                        if let Some(&n) = chars.get(j + 1) {
                            body.push(n);
                            j += 2;
                            continue;
                        }
                    }
                    if d == '`' && (!fence || chars[j..].starts_with(&['`', '`', '`'])) {
                        break;
                    }
                    body.push(d);
                    j += 1;
                }
                out.push_str(&body);
                byte += chars[i + width..j + width]
                    .iter()
                    .map(|c| c.len_utf8())
                    .sum::<usize>();
                i = j + width;
                continue;
            }
            '*' | '_' | '~' => {
                let tag: &'static str = match c {
                    '*' => "Bold",
                    '_' => "Italic",
                    _ => "Strikethrough",
                };
                if open.last() == Some(&tag) {
                    open.pop();
                } else {
                    open.push(tag);
                }
            }
            '|' if chars.get(i + 1) == Some(&'|') => {
                if open.last() == Some(&"Spoiler") {
                    open.pop();
                } else {
                    open.push("Spoiler");
                }
                byte += 1;
                i += 2;
                continue;
            }
            '[' => open.push("TextUrl"),
            ']' if open.last() == Some(&"TextUrl") => {
                open.pop();
                if chars.get(i + 1) == Some(&'(') {
                    let mut j = i + 2;
                    while j < chars.len() && chars[j] != ')' {
                        j += if chars[j] == '\\' { 2 } else { 1 };
                    }
                    if j >= chars.len() {
                        return Err(err('('));
                    }
                    byte += chars[i + 1..=j].iter().map(|c| c.len_utf8()).sum::<usize>();
                    i = j + 1;
                    continue;
                }
            }
            c if RESERVED.contains(c) => return Err(err(c)),
            c => out.push(c),
        }
        i += 1;
    }
    if let Some(tag) = open.last() {
        return Err(format!(
            "Bad Request: can't parse entities: Can't find end of {tag} entity at byte offset {}",
            s.len()
        ));
    }
    Ok(out)
}

async fn dispatch(
    req: HttpRequest,
    body: web::Bytes,
    st: web::Data<(Arc<Mutex<State>>, Arc<tokio::sync::Notify>)>,
) -> HttpResponse {
    let (state, wake) = (&st.0, &st.1);
    let path = req.path().trim_start_matches('/').to_string();
    let Some((bot, method)) = path.split_once('/') else {
        return fail(404, "Not Found");
    };
    let method = method.to_ascii_lowercase();
    if bot != format!("bot{}", lock(state).token) {
        return fail(401, "Unauthorized");
    }
    let mut p: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    if let Ok(q) = web::Query::<BTreeMap<String, String>>::from_query(req.query_string()) {
        for (k, v) in q.into_inner() {
            p[k] = serde_json::from_str(&v).unwrap_or(Value::String(v));
        }
    }
    *lock(state).calls.entry(method.clone()).or_default() += 1;
    match method.as_str() {
        "setwebhook" => {
            let url = p["url"].as_str().unwrap_or_default().to_string();
            let mut s = lock(state);
            if url.is_empty() {
                s.webhook = None;
                return ok(json!(true));
            }
            if let Some(e) = webhook_url_problem(&url) {
                return fail(400, &format!("Bad Request: bad webhook: {e}"));
            }
            let secret = p["secret_token"].as_str().map(str::to_string);
            if let Some(t) = &secret {
                let charset = t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if t.is_empty() || t.len() > 256 || !charset {
                    return fail(400, "Bad Request: secret token contains unallowed characters");
                }
            }
            s.webhook = Some((url, secret));
            ok(json!(true))
        }
        "getme" => ok(json!({"id": 1, "is_bot": true, "first_name": "Flotilla",
            "username": BOT_USERNAME, "can_join_groups": true,
            "can_read_all_group_messages": false, "supports_inline_queries": false})),
        "deletewebhook" => {
            lock(state).webhook = None;
            ok(json!(true))
        }
        "getwebhookinfo" => {
            let s = lock(state);
            let url = s.webhook.as_ref().map(|w| w.0.clone()).unwrap_or_default();
            ok(json!({"url": url, "has_custom_certificate": false,
                "pending_update_count": s.pending.len()}))
        }
        "getupdates" if lock(state).webhook.is_some() => fail(
            409,
            "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
        ),
        "getupdates" => {
            let timeout = p["timeout"].as_u64().unwrap_or(0).min(50);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            loop {
                let notified = wake.notified();
                {
                    let mut s = lock(state);
                    if let Some(o) = p["offset"].as_i64() {
                        s.pending
                            .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= o);
                        s.confirmed_offset = s.confirmed_offset.max(o);
                    }
                    let limit = p["limit"].as_u64().unwrap_or(100).clamp(1, 100) as usize;
                    if !s.pending.is_empty() || tokio::time::Instant::now() >= deadline {
                        let out: Vec<Value> = s.pending.iter().take(limit).cloned().collect();
                        return ok(Value::Array(out));
                    }
                }
                let _ = tokio::time::timeout_at(deadline, notified).await;
            }
        }
        "sendmessage" | "editmessagetext" => {
            let mut s = lock(state);
            let named = p["chat_id"]
                .as_i64()
                .or_else(|| p["chat_id"].as_str()?.parse().ok());
            s.chat_calls.push(ChatCall {
                method: method.clone(),
                chat_id: named,
                refused_migrated: false,
            });
            if s.outage > 0 {
                s.outage -= 1;
                return fail(502, "Bad Gateway");
            }
            if s.flood > 0 {
                s.flood -= 1;
                let secs = s.flood_secs;
                return HttpResponse::TooManyRequests().json(
                    json!({"ok": false, "error_code": 429,
                    "description": format!("Too Many Requests: retry after {secs}"),
                    "parameters": {"retry_after": secs}}),
                );
            }
            let Some(chat) = p["chat_id"]
                .as_i64()
                .or_else(|| p["chat_id"].as_str()?.parse().ok())
            else {
                return fail(400, "Bad Request: chat not found");
            };
            if let Some(&(_, to)) = s.migrated.iter().find(|m| m.0 == chat) {
                if let Some(c) = s.chat_calls.last_mut() {
                    c.refused_migrated = true;
                }
                return HttpResponse::BadRequest().json(json!({"ok": false, "error_code": 400,
                    "description": "Bad Request: group chat was upgraded to a supergroup chat",
                    "parameters": {"migrate_to_chat_id": to}}));
            }
            let Some(raw) = p["text"].as_str() else {
                return fail(400, "Bad Request: message text is empty");
            };
            let mode = p["parse_mode"].as_str().map(str::to_string);
            let text = match mode.as_deref() {
                Some("MarkdownV2") if s.force_reject > 0 => {
                    s.force_reject -= 1;
                    s.rejected_markdown += 1;
                    return fail(400, "Bad Request: can't parse entities: Can't find end of Bold entity at byte offset 0");
                }
                Some("MarkdownV2") => match parse_markdown_v2(raw) {
                    Ok(t) => t,
                    Err(e) => {
                        s.rejected_markdown += 1;
                        return fail(400, &e);
                    }
                },
                _ => raw.to_string(),
            };
            if text.trim().is_empty() {
                return fail(400, "Bad Request: message text is empty");
            }
            if text.chars().count() > 4096 {
                return fail(400, "Bad Request: message is too long");
            }
            if method == "sendmessage" {
                s.next_message += 1;
                let id = s.next_message;
                let topic = p["message_thread_id"].as_i64();
                s.sent.push(Sent {
                    chat_id: chat,
                    message_id: id,
                    text: text.clone(),
                    parse_mode: mode,
                    edits: 0,
                    message_thread_id: topic,
                });
                let mut m = json!({"message_id": id, "chat": {"id": chat, "type": "private"}, "date": 1_700_000_000, "text": text});
                if let Some(t) = topic {
                    m["message_thread_id"] = json!(t);
                    m["is_topic_message"] = json!(true);
                    m["chat"] = json!({"id": chat, "type": "supergroup", "is_forum": true});
                }
                return ok(m);
            }
            let Some(id) = p["message_id"].as_i64() else {
                return fail(400, "Bad Request: message identifier is not specified");
            };
            let Some(m) = s
                .sent
                .iter_mut()
                .find(|m| m.chat_id == chat && m.message_id == id)
            else {
                return fail(400, "Bad Request: message to edit not found");
            };
            if m.text == text {
                return fail(400, "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message");
            }
            m.text = text.clone();
            m.parse_mode = mode;
            m.edits += 1;
            ok(
                json!({"message_id": id, "chat": {"id": chat, "type": "private"}, "date": 1_700_000_000, "edit_date": 1_700_000_001, "text": text}),
            )
        }
        _ => fail(404, "Not Found: method not found"),
    }
}

/// Why Telegram would refuse `url` as a webhook: HTTPS only, on ports 443, 80, 88 or 8443.
fn webhook_url_problem(url: &str) -> Option<&'static str> {
    let Some(rest) = url.strip_prefix("https://") else {
        return Some("An HTTPS URL must be provided for webhook");
    };
    let host = rest.split('/').next().unwrap_or_default();
    match host.rsplit_once(':').map(|(_, p)| p) {
        None | Some("443" | "80" | "88" | "8443") => None,
        Some(_) => Some("Webhook can be set up only on ports 80, 88, 443 or 8443"),
    }
}

impl FakeTelegram {
    /// Starts the fake on `127.0.0.1:0` for bot `token`.
    pub async fn start(token: &str) -> FakeTelegram {
        let state = Arc::new(Mutex::new(State {
            token: token.to_string(),
            next_update: 1000,
            flood_secs: 1,
            ..State::default()
        }));
        let wake = Arc::new(tokio::sync::Notify::new());
        let data = web::Data::new((state.clone(), wake.clone()));
        let server = FakeServer::start(move |cfg| {
            cfg.app_data(data.clone())
                .default_service(web::to(dispatch));
        });
        FakeTelegram {
            url: server.url(""),
            state,
            wake,
            _server: server,
        }
    }

    fn s(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// A user writes `text` in `chat`; returns the update.
    pub fn push_message(&self, chat: i64, from: i64, text: &str) -> Value {
        let u = {
            let mut s = self.s();
            s.next_update += 1;
            s.next_message += 1;
            let u = json!({"update_id": s.next_update, "message": {"message_id": s.next_message,
                "from": {"id": from, "is_bot": false, "first_name": "User"},
                "chat": {"id": chat, "type": if chat < 0 { "group" } else { "private" }},
                "date": 1_700_000_000, "text": text}});
            s.pending.push(u.clone());
            u
        };
        self.wake.notify_waiters();
        u
    }

    /// A user writes `text` in forum topic `topic` of the forum supergroup `chat`; returns
    /// the update.
    pub fn push_topic_message(&self, chat: i64, topic: i64, from: i64, text: &str) -> Value {
        let u = {
            let mut s = self.s();
            s.next_update += 1;
            s.next_message += 1;
            let u = json!({"update_id": s.next_update, "message": {"message_id": s.next_message,
                "message_thread_id": topic, "is_topic_message": true,
                "from": {"id": from, "is_bot": false, "first_name": "User"},
                "chat": {"id": chat, "type": "supergroup", "title": "Forum", "is_forum": true},
                "date": 1_700_000_000, "text": text}});
            s.pending.push(u.clone());
            u
        };
        self.wake.notify_waiters();
        u
    }

    /// Group `old` became the supergroup `new`: calls naming `old` are refused with
    /// `migrate_to_chat_id`.
    pub fn migrate(&self, old: i64, new: i64) {
        self.s().migrated.push((old, new));
    }

    /// Group `old` becomes the supergroup `new` as Telegram tells a bot: calls naming `old`
    /// are refused ([`FakeTelegram::migrate`]), and two service messages arrive, one in the
    /// old group (`migrate_to_chat_id`) and one in the new supergroup
    /// (`migrate_from_chat_id`). Returns those updates.
    pub fn push_migration(&self, old: i64, new: i64) -> Vec<Value> {
        let out = {
            let mut s = self.s();
            s.migrated.push((old, new));
            let mut out = Vec::new();
            for (chat, kind, field, other) in [
                (old, "group", "migrate_to_chat_id", new),
                (new, "supergroup", "migrate_from_chat_id", old),
            ] {
                s.next_update += 1;
                s.next_message += 1;
                let u = json!({"update_id": s.next_update, "message": {
                    "message_id": s.next_message,
                    "from": {"id": 42, "is_bot": false, "first_name": "User"},
                    "chat": {"id": chat, "type": kind, "title": "G"},
                    "date": 1_700_000_000, field: other}});
                s.pending.push(u.clone());
                out.push(u);
            }
            out
        };
        self.wake.notify_waiters();
        out
    }

    /// Every `sendMessage`/`editMessageText` so far, in order.
    pub fn chat_calls(&self) -> Vec<ChatCall> {
        self.s().chat_calls.clone()
    }

    /// A user replies to message `reply_to` of `chat` (Telegram's `reply_to_message`, which
    /// carries the message replied to); returns the update.
    pub fn push_reply(&self, chat: i64, from: i64, text: &str, reply_to: i64) -> Value {
        let u = {
            let mut s = self.s();
            let replied = s
                .sent
                .iter()
                .find(|m| m.chat_id == chat && m.message_id == reply_to)
                .map(|m| m.text.clone())
                .unwrap_or_default();
            s.next_update += 1;
            s.next_message += 1;
            let u = json!({"update_id": s.next_update, "message": {"message_id": s.next_message,
                "from": {"id": from, "is_bot": false, "first_name": "User"},
                "chat": {"id": chat, "type": if chat < 0 { "group" } else { "private" }},
                "date": 1_700_000_000, "text": text,
                "reply_to_message": {"message_id": reply_to,
                    "from": {"id": 1, "is_bot": true, "first_name": "Flotilla"},
                    "chat": {"id": chat, "type": if chat < 0 { "group" } else { "private" }},
                    "date": 1_700_000_000, "text": replied}}});
            s.pending.push(u.clone());
            u
        };
        self.wake.notify_waiters();
        u
    }

    /// Messages the bot sent, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.s().sent.clone()
    }

    /// The next `n` sendMessage/editMessageText calls answer 429 with `retry_after: secs`.
    pub fn flood_next(&self, n: u32, secs: u64) {
        let mut s = self.s();
        s.flood = n;
        s.flood_secs = secs;
    }

    /// The next `n` sendMessage/editMessageText calls answer `502 Bad Gateway`.
    pub fn outage_next(&self, n: u32) {
        self.s().outage = n;
    }

    /// The next `n` MarkdownV2 texts are refused with "can't parse entities".
    pub fn reject_markdown_next(&self, n: u32) {
        self.s().force_reject = n;
    }

    /// How many MarkdownV2 texts were refused.
    pub fn rejected_markdown(&self) -> u32 {
        self.s().rejected_markdown
    }

    /// The highest offset a `getUpdates` carried (every update below it is confirmed).
    pub fn confirmed_offset(&self) -> i64 {
        self.s().confirmed_offset
    }

    /// Updates not yet confirmed.
    pub fn pending(&self) -> usize {
        self.s().pending.len()
    }

    /// The webhook currently set: (url, secret_token).
    pub fn webhook(&self) -> Option<(String, Option<String>)> {
        self.s().webhook.clone()
    }

    /// Sets a webhook as if an earlier run (or a person) had.
    pub fn preset_webhook(&self, url: &str) {
        self.s().webhook = Some((url.to_string(), None));
    }

    /// Calls of `method` (lower case) so far.
    pub fn calls(&self, method: &str) -> u64 {
        self.s().calls.get(method).copied().unwrap_or(0)
    }
}
