//! Discord (wire-formats §4): REST create and edit message (`POST/PATCH
//! /channels/{id}/messages[/{mid}]`, `Authorization: Bot <token>`), split under 2,000
//! characters; inbound messages from the Gateway ([`super::gateway`]) and application
//! commands from `POST /webhooks/discord/interactions` (Ed25519-verified, [`super::verify`]).
//!
//! Rate limits ([`super::discord_limits`]): each answer's `X-RateLimit-Bucket`,
//! `X-RateLimit-Remaining` and `X-RateLimit-Reset-After` are kept per bucket and major
//! parameter (the channel); a request on a spent bucket waits for its reset first instead of
//! meeting a 429, a global 429 holds every route, and a 429 (`retry_after` float,
//! `Retry-After`) is waited out by [`super::Http`].
//!
//! Application commands ([`COMMANDS`]) are registered at start when interactions are
//! configured (`discord.public_key`), only when Discord's list differs
//! ([`DiscordPlatform::register_commands`]). Thread history for a first turn comes from
//! "Get Channel Messages" ([`ChatPlatform::history`]).
//!
//! Triggers (reference §4 Discord): bots are ignored; in a guild the bot must be mentioned
//! (`<@id>` or `<@!id>`, stripped); in a DM no mention is needed; a message that is only the
//! mention is ignored.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::discord_limits::{self, RateLimits, Route};
use super::reply_key::{post_pieces, Marks};
use super::split::split_message;
use super::Http;
use crate::config::DiscordSettings;
use crate::plugins::{
    ChatPlatform, HistoryMessage, InboundMessage, PluginError, PluginResult, ReplyKey,
};

/// Discord's `content` limit, in characters.
pub const MAX_MESSAGE: usize = 2000;

/// The User-Agent Discord requires of bots: `DiscordBot ($url, $versionNumber)`
/// (API reference, "User Agent"); requests without it may be blocked.
pub const USER_AGENT: &str = concat!(
    "DiscordBot (https://github.com/flotilla, ",
    env!("CARGO_PKG_VERSION"),
    ")"
);

/// `allowed_mentions` that parses nothing. Sent on every create *and* edit: an edit without
/// it is parsed "with default allowances" (all mention types), whatever the create said, so
/// an assistant's `@everyone` or `<@id>` would ping on the first streamed edit.
pub fn no_mentions() -> Value {
    json!({"parse": []})
}

/// Replies on Discord.
pub struct DiscordPlatform {
    http: Http,
    api_url: String,
    token: String,
    /// The bot's rate limits: spent buckets per channel, and the global hold (a global 429
    /// holds every route of the bot, not only the one that met it).
    limits: Arc<Mutex<RateLimits>>,
}

impl DiscordPlatform {
    /// The platform, when `discord.bot_token` is set.
    ///
    /// # Errors
    /// `Invalid` when the HTTP client cannot be built.
    pub fn from_settings(s: &DiscordSettings, timeout: Duration) -> PluginResult<Option<Self>> {
        let Some(token) = s.bot_token.as_ref().filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        Ok(Some(Self::new(&s.api_url, token.expose(), timeout)?))
    }

    /// A platform talking to the REST API at `api_url` (with its version, `…/api/v10`).
    ///
    /// # Errors
    /// `Invalid` when the HTTP client cannot be built.
    pub fn new(api_url: &str, token: &str, timeout: Duration) -> PluginResult<Self> {
        Ok(DiscordPlatform {
            http: Http::new("discord", timeout)?,
            api_url: api_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            limits: Arc::new(Mutex::new(RateLimits::default())),
        })
    }

    /// Until when a request `method path` (`POST`, `/channels/1/messages`) waits for its
    /// spent bucket or the global limit, if it must wait now.
    pub fn hold(&self, method: &str, path: &str) -> Option<Instant> {
        let route = Route::of(method, path);
        self.limits
            .lock()
            .ok()
            .and_then(|l| l.wait_until(&route, Instant::now()))
    }

    /// Until when every request waits for a global rate limit Discord reported, if one
    /// holds now.
    pub fn global_hold(&self) -> Option<Instant> {
        self.limits
            .lock()
            .ok()
            .and_then(|l| l.global_hold(Instant::now()))
    }

    /// "Create Message" for each part of `text`; with `key`, each part carries its own
    /// `nonce` ([`ReplyKey::mark`], at most 25 characters) and `enforce_nonce`: Discord then
    /// answers a part it already created in the past few minutes with that message, and
    /// creates none.
    async fn post(&self, thread: &str, text: &str, key: Option<&ReplyKey>) -> PluginResult<String> {
        let pieces = split_message(text, MAX_MESSAGE);
        // Discord tells a repeat itself: nothing is read.
        let look = |_| async { Ok(Marks::new()) };
        post_pieces(pieces, key, look, |chunk, mark| async move {
            let mut body = json!({"content": chunk, "allowed_mentions": no_mentions()});
            if let Some(mark) = mark {
                body["nonce"] = json!(mark);
                body["enforce_nonce"] = json!(true);
            }
            let path = format!("/channels/{thread}/messages");
            let m = self.call(reqwest::Method::POST, &path, body).await?;
            Ok(m["id"].as_str().map(str::to_string))
        })
        .await
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> PluginResult<Value> {
        let route = Route::of(method.as_str(), path);
        discord_limits::wait_for(&self.limits, &route).await;
        let url = format!("{}{path}", self.api_url);
        let auth = format!("Bot {}", self.token);
        let r = self
            .http
            .call_observed(
                |c| {
                    let req = c
                        .request(method.clone(), &url)
                        .header(reqwest::header::AUTHORIZATION, &auth)
                        .header(reqwest::header::USER_AGENT, USER_AGENT);
                    super::json_body(req, &body)
                },
                |reply| {
                    if let Ok(mut l) = self.limits.lock() {
                        l.observe(
                            &route,
                            reply.status,
                            &reply.headers,
                            &reply.json,
                            Instant::now(),
                        );
                    }
                },
            )
            .await?;
        if (200..300).contains(&r.status) {
            return Ok(r.json);
        }
        let msg = r.json["message"].as_str();
        Err(r.error("discord", msg))
    }
}

#[async_trait]
impl ChatPlatform for DiscordPlatform {
    fn name(&self) -> &'static str {
        "discord"
    }

    fn max_message_len(&self) -> usize {
        MAX_MESSAGE
    }

    async fn send(&self, thread: &str, text: &str) -> PluginResult<String> {
        self.post(thread, text, None).await
    }

    async fn send_once(&self, thread: &str, text: &str, key: &ReplyKey) -> PluginResult<String> {
        self.post(thread, text, Some(key)).await
    }

    async fn edit(&self, thread: &str, message_id: &str, text: &str) -> PluginResult<()> {
        let Some(first) = split_message(text, MAX_MESSAGE).into_iter().next() else {
            return Ok(());
        };
        self.call(
            reqwest::Method::PATCH,
            &format!("/channels/{thread}/messages/{message_id}"),
            json!({"content": first, "allowed_mentions": no_mentions()}),
        )
        .await
        .map(|_| ())
    }

    async fn history(
        &self,
        thread: &str,
        before: &str,
        limit: usize,
    ) -> PluginResult<Vec<HistoryMessage>> {
        // "Get Channel Messages": newest first, `limit` 1–100; an interaction has no
        // message id to page from, so it reads the latest.
        let mut path = format!("/channels/{thread}/messages?limit={}", limit.clamp(1, 100));
        if !before.is_empty() && before.bytes().all(|b| b.is_ascii_digit()) {
            path.push_str(&format!("&before={before}"));
        }
        let v = self.call(reqwest::Method::GET, &path, Value::Null).await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .map(|m| HistoryMessage {
                author: m["author"]["global_name"]
                    .as_str()
                    .or_else(|| m["author"]["username"].as_str())
                    .or_else(|| m["author"]["id"].as_str())
                    .unwrap_or("someone")
                    .to_string(),
                bot: m["author"]["bot"].as_bool().unwrap_or(false),
                text: m["content"].as_str().unwrap_or_default().to_string(),
            })
            .collect())
    }
}

/// The application (slash) commands Flotilla registers: (name, description, takes
/// arguments). Names follow Discord's rule (lower case, `^[-_\p{L}\p{N}]{1,32}$`);
/// descriptions are 1–100 characters. An interaction comes back as `/name args`
/// ([`parse_interaction`]).
pub const COMMANDS: &[(&str, &str, bool)] = &[
    ("help", "The commands Flotilla understands", false),
    (
        "status",
        "Platform, assistant, codebase, directory, session, queue",
        false,
    ),
    (
        "clone",
        "Clone a repository into the workspace and use it",
        true,
    ),
    ("repos", "The repositories in the workspace", false),
    (
        "repo",
        "Use a repository of the workspace (number or name, [pull])",
        true,
    ),
    ("getcwd", "The working directory", false),
    (
        "setcwd",
        "Set the working directory (inside the workspace)",
        true,
    ),
    (
        "reset",
        "Start a fresh assistant session (keeps the codebase)",
        false,
    ),
    ("cancel", "Stop the running turn", false),
    ("templates", "The global templates", false),
    (
        "worktree",
        "create <branch> | list | remove [--force] | orphans",
        true,
    ),
    (
        "spawn",
        "Start a fleet session: <project> [--agent NAME] <task>",
        true,
    ),
    ("fleet", "The fleet's sessions", false),
    (
        "answer",
        "Answer a session that waits: <session> <text>",
        true,
    ),
    ("plan", "Write an implementation plan for a feature", true),
    ("implement", "Implement a plan", true),
    ("commit", "Commit the current changes", true),
    ("review-pr", "Review a pull request", true),
    (
        "create-pr",
        "Open a pull request for the current branch",
        true,
    ),
    ("merge-pr", "Merge a pull request", true),
    ("rca", "Root-cause analysis of a problem", true),
    ("fix-rca", "Fix what a root-cause analysis found", true),
    ("prd", "Write a product requirements document", true),
];

/// [`COMMANDS`] as Discord application command objects (type 1, `CHAT_INPUT`), each
/// taking arguments with one optional string option `args`.
pub fn command_objects() -> Vec<Value> {
    COMMANDS
        .iter()
        .map(|(name, description, args)| {
            let mut c = json!({"name": name, "description": description, "type": 1});
            if *args {
                c["options"] = json!([{"type": 3, "name": "args",
                    "description": "Arguments, as typed after the command", "required": false}]);
            }
            c
        })
        .collect()
}

/// An option's (name, description, type, required).
type OptionKey = (String, String, i64, bool);
/// A command's (name, description, type, options).
type CommandKey = (String, String, i64, Vec<OptionKey>);

/// What makes two command lists the same for Discord: names, descriptions, types and
/// options (ids, versions and defaults Discord adds are ignored), sorted by name.
fn command_key(list: &Value) -> Vec<CommandKey> {
    let mut out: Vec<_> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let options = c["options"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| {
                    (
                        o["name"].as_str().unwrap_or_default().to_string(),
                        o["description"].as_str().unwrap_or_default().to_string(),
                        o["type"].as_i64().unwrap_or(0),
                        o["required"].as_bool().unwrap_or(false),
                    )
                })
                .collect();
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["description"].as_str().unwrap_or_default().to_string(),
                c["type"].as_i64().unwrap_or(1),
                options,
            )
        })
        .collect();
    out.sort();
    out
}

impl DiscordPlatform {
    /// Registers [`COMMANDS`] as the application's global commands, idempotently: the
    /// current list is read first (`GET /applications/{id}/commands`) and overwritten
    /// (`PUT`, "Bulk Overwrite Global Application Commands") only when it differs, so
    /// restarts spend none of Discord's daily command creates. Returns whether it wrote.
    ///
    /// # Errors
    /// As [`ChatPlatform::send`]; Discord's 400 when it refuses a command.
    pub async fn register_commands(&self) -> PluginResult<bool> {
        let app = self
            .call(reqwest::Method::GET, "/applications/@me", Value::Null)
            .await?;
        let Some(id) = app["id"].as_str() else {
            return Err(PluginError::Invalid(
                "discord: /applications/@me has no id".into(),
            ));
        };
        let path = format!("/applications/{id}/commands");
        let current = self.call(reqwest::Method::GET, &path, Value::Null).await?;
        let wanted = Value::Array(command_objects());
        if command_key(&current) == command_key(&wanted) {
            return Ok(false);
        }
        self.call(reqwest::Method::PUT, &path, wanted).await?;
        Ok(true)
    }
}

/// The inbound message in a `MESSAGE_CREATE` dispatch's `d`, if it is for the bot
/// `bot_id`: not from a bot, and in a guild only when it mentions the bot (mention stripped).
pub fn parse_message_create(d: &Value, bot_id: &str) -> Option<InboundMessage> {
    if d["author"]["bot"].as_bool().unwrap_or(false) {
        return None;
    }
    let author = d["author"]["id"].as_str()?;
    if author == bot_id {
        return None;
    }
    let content = d["content"].as_str()?;
    let in_guild = d.get("guild_id").is_some_and(|g| !g.is_null());
    let (m1, m2) = (format!("<@{bot_id}>"), format!("<@!{bot_id}>"));
    let mentioned = !bot_id.is_empty() && (content.contains(&m1) || content.contains(&m2));
    // A reply names the message it answers; a thread started from a message has its id.
    // Either may be a notification's: unmentioned guild messages go to the inbox marked
    // `unaddressed`, which takes them only then.
    let reply_to = d["message_reference"]["message_id"]
        .as_str()
        .or(d["channel_id"].as_str())?;
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("reply_to".to_string(), reply_to.to_string());
    if in_guild && !mentioned {
        meta.insert("unaddressed".to_string(), "true".to_string());
    }
    let text = content.replace(&m1, " ").replace(&m2, " ");
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = if content.contains('\n') {
        content.replace(&m1, "").replace(&m2, "").trim().to_string()
    } else {
        text
    };
    if text.is_empty() {
        return None;
    }
    Some(InboundMessage {
        platform: "discord".into(),
        thread: d["channel_id"].as_str()?.to_string(),
        message_id: d["id"].as_str()?.to_string(),
        author: author.to_string(),
        text,
        meta,
    })
}

/// An application command interaction (type 2) as a message: `/name opt1 opt2`.
pub fn parse_interaction(v: &Value) -> Option<InboundMessage> {
    if v["type"].as_i64() != Some(2) {
        return None;
    }
    let name = v["data"]["name"].as_str()?;
    let mut text = format!("/{name}");
    for o in v["data"]["options"].as_array().into_iter().flatten() {
        match &o["value"] {
            Value::String(s) => {
                text.push(' ');
                text.push_str(s);
            }
            Value::Null => {}
            other => {
                text.push(' ');
                text.push_str(&other.to_string());
            }
        }
    }
    let author = v["member"]["user"]["id"]
        .as_str()
        .or_else(|| v["user"]["id"].as_str())?;
    Some(InboundMessage {
        platform: "discord".into(),
        thread: v["channel_id"]
            .as_str()
            .or_else(|| v["channel"]["id"].as_str())?
            .to_string(),
        message_id: format!("interaction-{}", v["id"].as_str()?),
        author: author.to_string(),
        text,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(content: &str, guild: bool, bot: bool) -> Value {
        let mut d = json!({"id": "9", "channel_id": "C1", "content": content,
            "author": {"id": "U1", "bot": bot}, "mentions": []});
        if guild {
            d["guild_id"] = json!("G1");
        }
        d
    }

    #[test]
    fn guild_messages_need_the_mention_and_dms_do_not() {
        // Unmentioned in a guild: only a candidate reply (to the message it references, or
        // to the message its thread was started from).
        let m = parse_message_create(&msg("/status", true, false), "B1").expect("candidate");
        assert_eq!(m.meta.get("unaddressed").map(String::as_str), Some("true"));
        assert_eq!(m.meta.get("reply_to").map(String::as_str), Some("C1"));
        let mut reply = msg("1", true, false);
        reply["message_reference"] = json!({"message_id": "77", "channel_id": "C1"});
        let m = parse_message_create(&reply, "B1").expect("reply");
        assert_eq!(m.meta.get("reply_to").map(String::as_str), Some("77"));
        let m = parse_message_create(&msg("<@B1> /status", true, false), "B1").expect("mentioned");
        assert_eq!(m.text, "/status");
        let m = parse_message_create(&msg("hi <@!B1> there", true, false), "B1").expect("nick");
        assert_eq!(m.text, "hi there");
        let m = parse_message_create(&msg("/status", false, false), "B1").expect("dm");
        assert_eq!((m.thread.as_str(), m.author.as_str()), ("C1", "U1"));
        assert!(parse_message_create(&msg("<@B1>", true, false), "B1").is_none());
        assert!(parse_message_create(&msg("<@B1> hi", true, true), "B1").is_none());
    }

    #[test]
    fn command_names_and_descriptions_follow_discord_rules() {
        let objects = command_objects();
        assert!(objects.len() <= 100);
        for c in &objects {
            let name = c["name"].as_str().expect("name");
            assert!((1..=32).contains(&name.chars().count()), "{name}");
            assert!(name
                .chars()
                .all(|ch| ch == '-' || ch == '_' || ch.is_lowercase() || ch.is_numeric()));
            let d = c["description"].as_str().expect("description");
            assert!((1..=100).contains(&d.chars().count()), "{name}: {d}");
        }
        let names: std::collections::BTreeSet<_> =
            objects.iter().map(|c| c["name"].to_string()).collect();
        assert_eq!(names.len(), objects.len());
        // Discord's answer adds ids and defaults: still the same list.
        let mut answered = objects.clone();
        answered[0]["id"] = json!("1");
        answered[0]["default_member_permissions"] = Value::Null;
        answered.reverse();
        assert_eq!(
            command_key(&Value::Array(answered)),
            command_key(&Value::Array(objects))
        );
    }

    #[test]
    fn slash_command_interactions_become_commands() {
        let v = json!({"id": "77", "type": 2, "channel_id": "C1",
            "data": {"name": "repo", "options": [{"name": "n", "value": "acme"}]},
            "member": {"user": {"id": "U1"}}});
        let m = parse_interaction(&v).expect("command");
        assert_eq!(m.text, "/repo acme");
        assert_eq!(m.message_id, "interaction-77");
        assert!(parse_interaction(&json!({"type": 1})).is_none());
    }
}
