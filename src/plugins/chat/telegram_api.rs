//! The Telegram Bot API client: every Bot API call Flotilla makes is written here once, and
//! the chat adapter ([`super::telegram::TelegramPlatform`]), the long poll
//! ([`super::telegram::Poller`]), the `getMe` of the webhook and the Telegram notifier all
//! call through a [`BotApi`].
//!
//! - Answers are `{"ok": true, "result": …}` or `{"ok": false, "error_code", "description",
//!   "parameters"}` (Bot API, "Making requests"); an error carries `error_code` as its status
//!   and `description` as its detail, never the URL (the bot token is part of it).
//! - Flood control is a 429 with `parameters.retry_after` (or `Retry-After`): waited out
//!   inside the call ([`Flood::Wait`], chat replies and the poll, see [`super::Http`]) or
//!   returned at once with the wait in the error ([`Flood::Report`], the notifier, whose
//!   outbox retries).
//! - A group upgraded to a supergroup refuses every call naming it with
//!   `parameters.migrate_to_chat_id` (`ResponseParameters`): the call is made again there,
//!   and the move is kept in [`MovedChats`], so later calls go to the new chat at once. The
//!   service messages announcing the upgrade (`migrate_to_chat_id` in the old group,
//!   `migrate_from_chat_id` in the new one, [`super::telegram::chat_move`]) are recorded the
//!   same way. Given the store ([`MovedChats::stored`], `chat_moves`), the moves outlive a
//!   restart. A conversation keeps its thread (the old chat id); its replies are sent to the
//!   new chat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::{Http, Reply};
use crate::config::TelegramSettings;
use crate::plugins::{PluginError, PluginResult};
use crate::store::ChatMoves;

/// The platform name moves are stored under.
const PLATFORM: &str = "telegram";

/// What a 429 (flood control) does to a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flood {
    /// Waited out inside the call, then tried again (a few times, a bounded wait).
    Wait,
    /// Returned at once as an error carrying the wait (`PluginError::retry_after`).
    Report,
}

/// One bot's client of the Bot API.
#[derive(Clone)]
pub struct BotApi {
    http: Http,
    /// `{api_url}/bot{token}`: a secret, never logged nor put in an error.
    base: String,
    flood: Flood,
    moves: MovedChats,
}

impl std::fmt::Debug for BotApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotApi")
            .field("flood", &self.flood)
            .finish_non_exhaustive()
    }
}

impl BotApi {
    /// A client of the Bot API at `api_url` for bot `token`, every request bounded by
    /// `timeout`, flood control waited out, moves kept in memory.
    ///
    /// # Errors
    /// `Invalid` when the HTTP client cannot be built.
    pub fn new(api_url: &str, token: &str, timeout: Duration) -> PluginResult<Self> {
        Ok(Self::over(Http::new("telegram", timeout)?, api_url, token))
    }

    /// As [`BotApi::new`], over `client` (whose timeouts are the caller's).
    pub fn with_client(client: reqwest::Client, api_url: &str, token: &str) -> Self {
        Self::over(Http::with_client("telegram", client), api_url, token)
    }

    /// The client of `telegram.bot_token`, when it is set.
    ///
    /// # Errors
    /// `Invalid` when the HTTP client cannot be built.
    pub fn from_settings(s: &TelegramSettings, timeout: Duration) -> PluginResult<Option<Self>> {
        match s.bot_token.as_ref().filter(|t| !t.is_empty()) {
            Some(token) => Self::new(&s.api_url, token.expose(), timeout).map(Some),
            None => Ok(None),
        }
    }

    fn over(http: Http, api_url: &str, token: &str) -> Self {
        BotApi {
            http,
            base: format!("{}/bot{token}", api_url.trim_end_matches('/')),
            flood: Flood::Wait,
            moves: MovedChats::default(),
        }
    }

    /// The same client, treating flood control as `flood` says.
    pub fn on_flood(mut self, flood: Flood) -> Self {
        self.flood = flood;
        self
    }

    /// The same client, keeping chat moves in `moves` (shared with the other Telegram
    /// clients of the process, and the store behind it).
    pub fn with_moves(mut self, moves: MovedChats) -> Self {
        self.moves = moves;
        self
    }

    /// Where this client keeps chat moves.
    pub fn moves(&self) -> &MovedChats {
        &self.moves
    }

    /// Calls `method` with `body`; `Ok(result)` on `{"ok": true}`. A numeric `chat_id` that
    /// moved goes to its new chat; a refusal naming a new chat (`migrate_to_chat_id`) is
    /// recorded and the call made again there.
    ///
    /// # Errors
    /// The Bot API's refusal (`Http` with `error_code` and `description`, `retry_after` for
    /// flood control), `RateLimited` when a waited-out flood goes on, `Unreachable`.
    pub async fn call(&self, method: &str, body: &Value) -> PluginResult<Value> {
        let mut body = body.clone();
        let chat = body["chat_id"].as_i64();
        if let Some(new) = match chat {
            Some(old) => self.moves.moved_to(old).await,
            None => None,
        } {
            body["chat_id"] = json!(new);
        }
        let mut r = self.post(method, &body).await?;
        let migrate = if r.json["ok"] == json!(true) {
            None
        } else {
            r.json["parameters"]["migrate_to_chat_id"].as_i64()
        };
        if let (Some(new), Some(old)) = (migrate, body["chat_id"].as_i64()) {
            if new != old {
                tracing::warn!(
                    method,
                    "telegram group became a supergroup; sending there from now on (update a \
                     configured chat_id)"
                );
                // The resend goes out even if the move could not be stored.
                if let Err(e) = self.moves.record(old, new).await {
                    tracing::warn!(error = %e, "telegram chat move not stored");
                }
                body["chat_id"] = json!(new);
                r = self.post(method, &body).await?;
            }
        }
        judge(r)
    }

    /// One request, flood control handled as [`BotApi::on_flood`] said.
    async fn post(&self, method: &str, body: &Value) -> PluginResult<Reply> {
        let url = format!("{}/{method}", self.base);
        let make = |c: &reqwest::Client| c.post(&url).json(body);
        match self.flood {
            Flood::Wait => self.http.call(make).await,
            Flood::Report => self.http.call_once(make).await,
        }
    }

    /// The bot's username (`getMe`), which commands in groups name (`/cmd@username`).
    ///
    /// # Errors
    /// A failed call, or an answer without a username.
    pub async fn get_me(&self) -> PluginResult<String> {
        let me = self.call("getMe", &json!({})).await?;
        me["username"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| PluginError::Invalid("telegram: getMe has no username".into()))
    }

    /// `setWebhook`: Telegram posts updates (messages only) to `url` with `secret_token` in
    /// `X-Telegram-Bot-Api-Secret-Token`. Idempotent.
    ///
    /// # Errors
    /// Telegram's 400 ("bad webhook: …") for a URL it will not use, or a failed call.
    pub async fn set_webhook(&self, url: &str, secret_token: &str) -> PluginResult<()> {
        self.call(
            "setWebhook",
            &json!({"url": url, "secret_token": secret_token, "allowed_updates": ["message"]}),
        )
        .await
        .map(|_| ())
    }

    /// `deleteWebhook` (pending updates kept). Idempotent.
    ///
    /// # Errors
    /// A failed call.
    pub async fn delete_webhook(&self) -> PluginResult<()> {
        self.call("deleteWebhook", &json!({"drop_pending_updates": false}))
            .await
            .map(|_| ())
    }

    /// `getUpdates` (messages only, service messages included) from `offset`, waiting up to
    /// `wait_secs` for one: the updates, oldest first.
    ///
    /// # Errors
    /// A failed call (409 while a webhook is set).
    pub async fn get_updates(
        &self,
        offset: Option<i64>,
        wait_secs: u64,
    ) -> PluginResult<Vec<Value>> {
        let mut body = json!({"timeout": wait_secs, "allowed_updates": ["message"]});
        if let Some(o) = offset {
            body["offset"] = json!(o);
        }
        let result = self.call("getUpdates", &body).await?;
        Ok(result.as_array().cloned().unwrap_or_default())
    }
}

/// `Ok(result)` for `{"ok": true}` with a 2xx; else the error: the Bot API's `error_code` as
/// the status (the HTTP status when there is none), its `description`, and the wait flood
/// control asks for.
fn judge(r: Reply) -> PluginResult<Value> {
    if (200..300).contains(&r.status) && r.json["ok"] == json!(true) {
        return Ok(r.json["result"].clone());
    }
    let status = r.json["error_code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(r.status);
    let mut e = r.error("telegram", r.json["description"].as_str());
    if let PluginError::Http { status: s, .. } = &mut e {
        *s = status;
    }
    Err(e)
}

/// Telegram chats that moved (old id → new id), shared by every Telegram client of the
/// process: what one learns, the others use at once. With a store, a move is written there
/// too and a chat not seen yet is looked up there (once per chat and direction and process),
/// so the moves outlive a restart. Both directions are asked: sends to the old chat go to
/// the new one ([`MovedChats::moved_to`]), and messages from the new chat find the old
/// chat's conversation ([`MovedChats::moved_from`]). Cheap to clone.
#[derive(Clone, Default)]
pub struct MovedChats {
    inner: Arc<Moves>,
}

impl std::fmt::Debug for MovedChats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MovedChats")
            .field("stored", &self.inner.store.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Moves {
    store: Option<Arc<dyn ChatMoves>>,
    /// What is known of each chat asked about: `Some(new)` moved, `None` did not.
    known: Mutex<HashMap<i64, Option<i64>>>,
    /// The reverse: `Some(old)` the chat old moved to this one, `None` none did.
    known_from: Mutex<HashMap<i64, Option<i64>>>,
}

impl MovedChats {
    /// Moves kept in memory only (tests, and clients built without the store).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Moves kept in `store` (and remembered in memory).
    pub fn stored(store: Arc<dyn ChatMoves>) -> Self {
        MovedChats {
            inner: Arc::new(Moves {
                store: Some(store),
                known: Mutex::default(),
                known_from: Mutex::default(),
            }),
        }
    }

    fn known(&self, chat: i64) -> Option<Option<i64>> {
        self.inner.known.lock().ok()?.get(&chat).copied()
    }

    fn remember(&self, chat: i64, to: Option<i64>) {
        if let Ok(mut k) = self.inner.known.lock() {
            k.insert(chat, to);
        }
    }

    /// The chat `chat` moved to, if it did. A store that cannot be read is logged and
    /// asked again next time (the call then meets the refusal and follows it).
    pub async fn moved_to(&self, chat: i64) -> Option<i64> {
        if let Some(k) = self.known(chat) {
            return k;
        }
        let store = self.inner.store.as_ref()?;
        match store.chat_moved_to(PLATFORM, &chat.to_string()).await {
            Ok(to) => {
                let to = to.and_then(|t| t.parse::<i64>().ok());
                self.remember(chat, to);
                to
            }
            Err(e) => {
                tracing::warn!(error = %e, "telegram chat moves cannot be read");
                None
            }
        }
    }

    /// The chat that moved to `chat` (a group that became this supergroup), if one did.
    ///
    /// # Errors
    /// `Unreachable` (retriable) when the store cannot be read: the message must not be
    /// taken as one of a new conversation meanwhile. Asked again next time.
    pub async fn moved_from(&self, chat: i64) -> PluginResult<Option<i64>> {
        if let Some(k) = self
            .inner
            .known_from
            .lock()
            .ok()
            .and_then(|k| k.get(&chat).copied())
        {
            return Ok(k);
        }
        let Some(store) = self.inner.store.as_ref() else {
            return Ok(None);
        };
        let from = store
            .chat_moved_from(PLATFORM, &chat.to_string())
            .await
            .map_err(|e| PluginError::Unreachable {
                service: "store",
                detail: format!("telegram chat moves cannot be read: {e}"),
            })?
            .and_then(|f| f.parse::<i64>().ok());
        if let Ok(mut k) = self.inner.known_from.lock() {
            k.insert(chat, from);
        }
        Ok(from)
    }

    /// Records that chat `from` is now chat `to`: in memory at once, then in the store.
    ///
    /// # Errors
    /// `Unreachable` (retriable) when the store refused the write; the move is known in
    /// memory all the same.
    pub async fn record(&self, from: i64, to: i64) -> PluginResult<()> {
        if from == to {
            return Ok(());
        }
        self.remember(from, Some(to));
        // A chat already known to be the new one needs no look-up.
        if let Ok(mut k) = self.inner.known.lock() {
            k.entry(to).or_insert(None);
        }
        if let Ok(mut k) = self.inner.known_from.lock() {
            // A chat `from` had moved to before now comes from nothing known here.
            k.retain(|new, old| *old != Some(from) || *new == to);
            k.insert(to, Some(from));
        }
        let Some(store) = &self.inner.store else {
            return Ok(());
        };
        let at = chrono::Utc::now();
        store
            .record_chat_move(PLATFORM, &from.to_string(), &to.to_string(), at)
            .await
            .map_err(|e| PluginError::Unreachable {
                service: "store",
                detail: format!("telegram chat move not stored: {e}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn moves_in_memory_are_shared_by_clones() {
        let m = MovedChats::in_memory();
        let other = m.clone();
        assert_eq!(m.moved_to(-555).await, None);
        other.record(-555, -100_555).await.expect("record");
        assert_eq!(m.moved_to(-555).await, Some(-100_555));
        assert_eq!(m.moved_to(-100_555).await, None);
        assert_eq!(m.moved_from(-100_555).await.expect("read"), Some(-555));
        assert_eq!(m.moved_from(-555).await.expect("read"), None);
        // The group moved on: its first supergroup no longer names it.
        m.record(-555, -100_777).await.expect("record");
        assert_eq!(m.moved_from(-100_777).await.expect("read"), Some(-555));
        assert_eq!(m.moved_from(-100_555).await.expect("read"), None);
    }
}
