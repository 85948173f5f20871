//! Slack (wire-formats §2): events in at `POST /webhooks/slack/events` and slash commands at
//! `POST /webhooks/slack/commands` (both signing-secret verified in
//! [`super::verify::slack`]), replies by `chat.postMessage` in the thread and
//! streaming by `chat.update`. Web API errors are `{"ok": false, "error"}` (usually HTTP
//! 200); a 429 with `Retry-After` is waited out by [`super::Http`].
//!
//! A conversation is a thread: `{channel}:{thread_ts}`, where a top-level mention starts the
//! thread at its own `ts`. A slash command has no message and no thread (Slack does not let
//! an app's commands be invoked in threads): its conversation is the channel, `{channel}`,
//! shared by every command typed there, and its replies are posted in the channel itself
//! ([`parse_command`]). Where the bot cannot post (`not_in_channel`, `channel_not_found`,
//! `is_archived`: a private channel or DM it is not in), the bridge posts the reply to the
//! command's `response_url` instead ([`ChatPlatform::send_to_address`]; kept in the
//! message's meta, never logged). `app_mention` events and direct messages are taken; other
//! messages inside threads only with `slack.require_mention: false`; including the `thread_broadcast` and `file_share` subtypes (people wrote them);
//! bot messages, edits and other subtypes are not. Slack sends both `app_mention` and
//! `message` for a mention in a thread: both carry the same `{channel}:{ts}` message id, so
//! the inbox stores it once.
//!
//! Outgoing text is escaped ([`escape`]): Slack reads `<…>` as links and mentions, so an
//! assistant's `<!channel>` would ping the channel and `Vec<T>` would lose its `<T>`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::reply_key::{post_pieces, Marks, MARK_PAGES};
use super::split::split_message;
use super::Http;
use crate::config::SlackSettings;
use crate::plugins::{
    ChatPlatform, HistoryMessage, InboundMessage, PluginError, PluginResult, ReplyKey,
    META_RESPONSE_URL,
};

/// Slack's advice for `text` (`chat.update` refuses more), in characters.
pub const MAX_MESSAGE: usize = 4000;
/// Ends the last post of a reply cut to the posts a slash command's `response_url` still takes.
pub const CUT_NOTICE: &str = "\n… (the rest of this reply is cut: a slash command's reply \
    takes only a few posts; add the bot to this channel for whole replies)";

/// Replies on Slack.
pub struct SlackPlatform {
    http: Http,
    api_url: String,
    token: String,
}

impl SlackPlatform {
    /// The platform, when `slack.bot_token` is set.
    ///
    /// # Errors
    /// `Invalid` when the HTTP client cannot be built.
    pub fn from_settings(s: &SlackSettings, timeout: Duration) -> PluginResult<Option<Self>> {
        let Some(token) = s.bot_token.as_ref().filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        Ok(Some(Self::new(&s.api_url, token.expose(), timeout)?))
    }

    /// A platform talking to the Web API at `api_url`.
    ///
    /// # Errors
    /// `Invalid` when the HTTP client cannot be built.
    pub fn new(api_url: &str, token: &str, timeout: Duration) -> PluginResult<Self> {
        Ok(SlackPlatform {
            http: Http::new("slack", timeout)?,
            api_url: api_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    async fn call(&self, method: &str, body: &Value) -> PluginResult<Value> {
        let url = format!("{}/{method}", self.api_url);
        self.answered(|| {
            self.http
                .call(|c| c.post(&url).bearer_auth(&self.token).json(body))
        })
        .await
    }

    /// A read method (`conversations.replies`): form-encoded query parameters, as Slack's
    /// read methods take them (JSON bodies are for write methods).
    async fn call_get(&self, method: &str, query: &[(&str, String)]) -> PluginResult<Value> {
        let url = format!("{}/{method}", self.api_url);
        self.answered(|| {
            self.http
                .call(|c| c.get(&url).bearer_auth(&self.token).query(query))
        })
        .await
    }

    /// The `{"ok": true}` answer of `request`, made again while Slack refuses it for a rate
    /// limit inside an HTTP 200: `chat.postMessage`'s `rate_limited` ("Application has
    /// posted too many messages", no `Retry-After`: about one message a second per
    /// channel) or `ratelimited`. The HTTP 429s are waited out by [`Http`] already.
    async fn answered<F, Fut>(&self, request: F) -> PluginResult<Value>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = PluginResult<super::Reply>>,
    {
        let mut attempt = 1;
        loop {
            let r = request().await?;
            if (200..300).contains(&r.status) && r.json["ok"] == json!(true) {
                return Ok(r.json);
            }
            let code = r.json["error"].as_str();
            if !matches!(code, Some("rate_limited" | "ratelimited")) {
                return Err(r.error("slack", code));
            }
            let wait = super::rate_limit_wait(&r.headers, &r.json).unwrap_or(RATE_LIMITED_WAIT);
            if attempt >= super::MAX_ATTEMPTS || wait > super::MAX_RATE_LIMIT_WAIT {
                return Err(PluginError::RateLimited {
                    kind: "secondary",
                    retry_after: wait,
                });
            }
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

impl SlackPlatform {
    /// `chat.postMessage` for each piece of `text`. With `key`, each piece carries its mark
    /// ([`ReplyKey::mark`]) in the message's `metadata` ("Using message metadata",
    /// [`REPLY_EVENT`]); when an earlier attempt may have posted it, the thread is read first
    /// and a piece already there is not posted again.
    async fn post(&self, thread: &str, text: &str, key: Option<&ReplyKey>) -> PluginResult<String> {
        let (channel, ts) = parse_thread(thread)?;
        let pieces = split_escaped(text, MAX_MESSAGE);
        let look = |since| self.marks_since(channel, ts, since, REPLY_EVENT);
        post_pieces(pieces, key, look, |chunk, mark| async move {
            let mut body = json!({"channel": channel, "text": chunk});
            if let Some(ts) = ts {
                body["thread_ts"] = json!(ts);
            }
            if let Some(mark) = mark {
                body["metadata"] =
                    json!({"event_type": REPLY_EVENT, "event_payload": {"mark": mark}});
            }
            let v = self.call("chat.postMessage", &body).await?;
            Ok(v["ts"].as_str().map(str::to_string))
        })
        .await
    }

    /// The marks of the posts of `event` (metadata's `event_type`: a reply's, a
    /// notification's) in the thread (or, without one, the channel) since `since`, with their
    /// `ts`: `conversations.replies` or `conversations.history` with `include_all_metadata`,
    /// page by page up to [`MARK_PAGES`].
    pub(crate) async fn marks_since(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        since: DateTime<Utc>,
        event: &str,
    ) -> PluginResult<Marks> {
        let (method, mut query) = match thread_ts {
            Some(ts) => ("conversations.replies", vec![("ts", ts.to_string())]),
            None => ("conversations.history", Vec::new()),
        };
        query.extend([
            ("channel", channel.to_string()),
            ("oldest", format!("{}.000000", since.timestamp())),
            ("include_all_metadata", "true".to_string()),
            ("limit", HISTORY_PAGE.to_string()),
        ]);
        let mut marks = Marks::new();
        for _ in 0..MARK_PAGES {
            let v = self.call_get(method, &query).await?;
            for m in v["messages"].as_array().into_iter().flatten() {
                let meta = &m["metadata"];
                if let (Some(kind), Some(mark), Some(ts)) = (
                    meta["event_type"].as_str(),
                    meta["event_payload"]["mark"].as_str(),
                    m["ts"].as_str(),
                ) {
                    if kind == event {
                        marks.insert(mark.to_string(), ts.to_string());
                    }
                }
            }
            match v["response_metadata"]["next_cursor"].as_str() {
                Some(c) if !c.is_empty() && v["has_more"] != json!(false) => {
                    query.retain(|(k, _)| *k != "cursor");
                    query.push(("cursor", c.to_string()));
                }
                _ => break,
            }
        }
        Ok(marks)
    }
}

/// The `event_type` of the metadata a stored reply's posts carry (their mark in the payload).
const REPLY_EVENT: &str = "flotilla_reply";

/// Wait after a `rate_limited` answer that names none: `chat.postMessage` allows about one
/// message a second per channel.
const RATE_LIMITED_WAIT: Duration = Duration::from_secs(1);

/// `chat.postMessage` errors that say the bot cannot post in the channel at all (not a
/// member of a private channel or of somebody else's DM, the channel gone or archived): a
/// slash command's reply then goes through its `response_url`.
const CANNOT_POST: &[&str] = &[
    "not_in_channel",
    "channel_not_found",
    "is_archived",
    "restricted_action",
];

/// Most replies read in one `conversations.replies` page for a thread's history.
const HISTORY_PAGE: usize = 200;

/// Escapes the three characters Slack's text formatting reserves (`&`, `<`, `>` become
/// `&amp;`, `&lt;`, `&gt;`: "Formatting text for app surfaces", escaping text), so text
/// shows as written and carries no `<!channel>` or `<@U…>` control sequence.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `text` escaped, in pieces of at most `max` characters *after* escaping (an `&lt;` takes
/// four), each piece split from the raw text so no entity is cut.
pub fn split_escaped(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    for piece in split_message(text, max) {
        push_escaped(&piece, max, &mut out);
    }
    out
}

fn push_escaped(raw: &str, max: usize, out: &mut Vec<String>) {
    let e = escape(raw);
    let (n, elen) = (raw.chars().count(), e.chars().count());
    if elen <= max || n <= 1 {
        out.push(e);
        return;
    }
    // Fewer raw characters than `raw` in each sub-piece, in proportion: this ends.
    let budget = (n * max / elen).clamp(1, n - 1);
    for sub in split_message(raw, budget) {
        push_escaped(&sub, max, out);
    }
}

/// `{channel}:{thread_ts}` → its parts; a slash command's conversation, `{channel}`, has no
/// thread (its replies go to the channel itself).
fn parse_thread(thread: &str) -> PluginResult<(&str, Option<&str>)> {
    let (channel, ts) = match thread.split_once(':') {
        Some((c, ts)) => (c, Some(ts)),
        None => (thread, None),
    };
    if channel.is_empty() || ts.is_some_and(str::is_empty) {
        return Err(PluginError::Invalid(format!("bad Slack thread {thread}")));
    }
    Ok((channel, ts))
}

#[async_trait]
impl ChatPlatform for SlackPlatform {
    fn name(&self) -> &'static str {
        "slack"
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

    fn cannot_post_here(&self, error: &PluginError) -> bool {
        matches!(error, PluginError::Http { service: "slack", detail, .. }
            if CANNOT_POST.contains(&detail.as_str()))
    }

    /// A slash command's `response_url` ("Handling user interaction", message responses): a
    /// JSON POST of `{"text", "response_type": "in_channel"}`, no token; each piece is one of
    /// the URL's five uses (a reply needing more is cut, its last post ending on
    /// [`CUT_NOTICE`]). Its answer is `ok` (or `{"ok": true}`) with a 2xx; anything
    /// else (`expired_url`, `used_url`, a 404) fails the post. The URL never appears in an
    /// error.
    async fn send_to_address(
        &self,
        address: &str,
        text: &str,
        max_posts: usize,
    ) -> PluginResult<usize> {
        if !(address.starts_with("https://") || address.starts_with("http://")) {
            return Err(PluginError::Invalid(
                "a response_url is not an http(s) URL".into(),
            ));
        }
        let mut chunks = split_escaped(text, MAX_MESSAGE);
        if chunks.len() > max_posts {
            // More than the URL still takes: the last post says where the reply stops.
            chunks = split_escaped(text, MAX_MESSAGE - CUT_NOTICE.chars().count());
            chunks.truncate(max_posts);
            if let Some(last) = chunks.last_mut() {
                last.push_str(CUT_NOTICE);
            }
        }
        let mut posts = 0;
        for chunk in chunks {
            let body = json!({"text": chunk, "response_type": "in_channel"});
            let r = self.http.call(|c| c.post(address).json(&body)).await?;
            let refused = r.json["ok"] == json!(false);
            if !(200..300).contains(&r.status) || refused {
                return Err(r.error("slack", r.json["error"].as_str()));
            }
            posts += 1;
        }
        Ok(posts)
    }

    async fn edit(&self, thread: &str, message_id: &str, text: &str) -> PluginResult<()> {
        let (channel, _) = parse_thread(thread)?;
        // The core keeps a streamed message under MAX_MESSAGE raw characters; escaping can
        // push it past Slack's limit, and then the message shows its first escaped piece.
        let Some(first) = split_escaped(text, MAX_MESSAGE).into_iter().next() else {
            return Ok(());
        };
        self.call(
            "chat.update",
            &json!({"channel": channel, "ts": message_id, "text": first}),
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
        let (channel, thread_ts) = parse_thread(thread)?;
        // A slash command's conversation is the whole channel, not a thread: no history is
        // read for it (the channel's other talk is not this conversation's).
        let Some(thread_ts) = thread_ts else {
            return Ok(Vec::new());
        };
        // `conversations.replies` answers the thread oldest first (parent included); the
        // messages up to `latest` (exclusive) are read in one page and the newest kept.
        let mut query = vec![
            ("channel", channel.to_string()),
            ("ts", thread_ts.to_string()),
            ("limit", HISTORY_PAGE.to_string()),
        ];
        if let Some((_, ts)) = before.split_once(':') {
            query.push(("latest", ts.to_string()));
            query.push(("inclusive", "false".to_string()));
        }
        let v = self.call_get("conversations.replies", &query).await?;
        let before_ts = before.split_once(':').map(|(_, ts)| ts);
        let mut out: Vec<HistoryMessage> = v["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["ts"].as_str() != before_ts)
            .map(|m| HistoryMessage {
                author: m["user"]
                    .as_str()
                    .or_else(|| m["username"].as_str())
                    .or_else(|| m["bot_id"].as_str())
                    .unwrap_or("someone")
                    .to_string(),
                bot: m.get("bot_id").is_some_and(|b| !b.is_null()),
                text: plain_text(m["text"].as_str().unwrap_or_default()),
            })
            .collect();
        out.reverse();
        out.truncate(limit);
        Ok(out)
    }
}

/// Slack's three entities back to characters.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A message's `text` as its author wrote it. Slack delivers text in its own markup
/// ("Formatting text for app surfaces": `&`, `<` and `>` are control characters): what a
/// person typed as `&`, `<`, `>` arrives as `&amp;`, `&lt;`, `&gt;`, and every `<…>` is a
/// control sequence: `<@U…>` a user, `<#C…|name>` a channel, `<!here>` a special mention,
/// `<https://…>` or `<https://…|label>` a link (Slack wraps every URL someone types).
/// Links become their URL (with the label first when it says something else), mentions
/// `@…`/`#…`, and the entities their characters.
pub fn plain_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('<') {
        out.push_str(&unescape(&rest[..i]));
        let after = &rest[i + 1..];
        let Some(end) = after.find('>') else {
            out.push_str(&unescape(&rest[i..]));
            return out;
        };
        out.push_str(&control_sequence(&after[..end]));
        rest = &after[end + 1..];
    }
    out.push_str(&unescape(rest));
    out
}

/// What one `<…>` control sequence (without its brackets) reads as.
fn control_sequence(inner: &str) -> String {
    let (target, label) = match inner.split_once('|') {
        Some((t, l)) => (t, Some(unescape(l))),
        None => (inner, None),
    };
    if let Some(id) = target.strip_prefix('@') {
        return format!("@{}", label.unwrap_or_else(|| id.to_string()));
    }
    if let Some(id) = target.strip_prefix('#') {
        return format!("#{}", label.unwrap_or_else(|| id.to_string()));
    }
    if let Some(cmd) = target.strip_prefix('!') {
        // `<!here>`, `<!subteam^S…|@team>`, `<!date^…|fallback>`: the label when there is one.
        return label.unwrap_or_else(|| format!("@{}", cmd.split('^').next().unwrap_or(cmd)));
    }
    let url = unescape(target);
    match label {
        None => url,
        Some(l) if l.is_empty() || l == url => url,
        // `<mailto:a@b.c|a@b.c>` and `<http://example.com|example.com>` say the same twice.
        Some(l)
            if url
                .split_once(':')
                .is_some_and(|(_, r)| r.trim_start_matches('/') == l) =>
        {
            if url.starts_with("mailto:") {
                l
            } else {
                url
            }
        }
        Some(l) => format!("{l} ({url})"),
    }
}

/// What a verified Events API body asks of us.
#[derive(Debug, PartialEq)]
pub enum SlackEvent {
    /// `url_verification`: answer with the challenge.
    Challenge(String),
    /// A message for the assistant.
    Message(InboundMessage),
    /// Anything else (bot messages, edits, other events): acknowledge and drop.
    Ignored,
}

/// Reads an Events API body (already verified).
///
/// # Errors
/// The body is not a JSON object.
pub fn parse_event(body: &[u8], require_mention: bool) -> Result<SlackEvent, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    match v["type"].as_str() {
        Some("url_verification") => {
            return Ok(v["challenge"]
                .as_str()
                .map(|c| SlackEvent::Challenge(c.to_string()))
                .unwrap_or(SlackEvent::Ignored))
        }
        Some("event_callback") => {}
        _ => return Ok(SlackEvent::Ignored),
    }
    let e = &v["event"];
    let kind = e["type"].as_str().unwrap_or_default();
    // `thread_broadcast` (a thread reply also sent to the channel) and `file_share` (a
    // message with a file) are written by people; every other subtype is a system or bot
    // message, or an edit/deletion.
    let user_subtype = matches!(
        e["subtype"].as_str(),
        None | Some("thread_broadcast") | Some("file_share")
    );
    if e.get("bot_id").is_some_and(|b| !b.is_null())
        || !user_subtype
        || e.get("edited").is_some_and(|s| !s.is_null())
    {
        return Ok(SlackEvent::Ignored);
    }
    let (Some(channel), Some(ts), Some(user), Some(text)) = (
        e["channel"].as_str(),
        e["ts"].as_str(),
        e["user"].as_str(),
        e["text"].as_str(),
    ) else {
        return Ok(SlackEvent::Ignored);
    };
    let thread_ts = e["thread_ts"].as_str();
    // A mention comes as `app_mention` (in a channel or a thread); a direct message is a
    // `message` in an `im`. Other thread messages only with `require_mention: false`, or
    // (`unaddressed`) when the thread is a notification's: the inbox decides that.
    let in_thread = thread_ts.is_some_and(|t| t != ts);
    let (take, unaddressed) = match kind {
        "app_mention" => (true, false),
        "message" if e["channel_type"] == "im" => (true, false),
        "message" if in_thread => (true, require_mention),
        _ => (false, false),
    };
    if !take {
        return Ok(SlackEvent::Ignored);
    }
    let mut meta = std::collections::BTreeMap::new();
    if let (Some(t), true) = (thread_ts, in_thread) {
        meta.insert("reply_to".to_string(), format!("{channel}:{t}"));
    }
    if unaddressed {
        meta.insert("unaddressed".to_string(), "true".to_string());
    }
    let text = plain_text(&strip_user_mentions(text)).trim().to_string();
    if text.is_empty() {
        return Ok(SlackEvent::Ignored);
    }
    Ok(SlackEvent::Message(InboundMessage {
        platform: "slack".into(),
        thread: format!("{channel}:{}", thread_ts.unwrap_or(ts)),
        message_id: format!("{channel}:{ts}"),
        author: user.to_string(),
        text,
        meta,
    }))
}

/// Whether `body` is Slack's check of the Request URL's certificate (`ssl_check=1` and no
/// `command`): it carries no command and changes nothing, so it is answered 200 before the
/// signature is looked at (as Slack's Bolt does).
pub fn is_ssl_check(body: &[u8]) -> bool {
    let mut ssl = false;
    for (k, v) in form_urlencoded::parse(body) {
        match k.as_ref() {
            "command" => return false,
            "ssl_check" => ssl = v == "1",
            _ => {}
        }
    }
    ssl
}

/// Reads a slash-command POST (already verified): Slack's `application/x-www-form-urlencoded`
/// fields `command`, `text`, `channel_id`, `user_id` and `trigger_id` (Slack's "Implementing
/// slash commands"). The message is the channel's (`thread` = `{channel}`: commands cannot be
/// invoked in threads), with `trigger_id` as its message id so a POST made again is stored
/// once; the author is `user_id`, as for events (the same `chat.allow.slack` list). Its
/// `response_url` is kept in `meta` ([`META_RESPONSE_URL`]): the reply's way in when the bot
/// cannot post in the channel.
///
/// The text is what the person would have typed to the bot ([`command_text`]): `umbrella`
/// (`slack.slash_command`, `/flotilla`) carries the bridge's command in its text; any other
/// command is taken as typed.
///
/// # Errors
/// The body is not a form, or a field the bridge needs is missing.
pub fn parse_command(body: &[u8], umbrella: &str) -> Result<InboundMessage, String> {
    if std::str::from_utf8(body).is_err() {
        return Err("form body is not UTF-8".into());
    }
    let fields: std::collections::BTreeMap<String, String> = form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |k: &str| fields.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let need = |k: &str| get(k).ok_or_else(|| format!("form has no `{k}`"));
    let command = need("command")?;
    let (channel, user, trigger) = (need("channel_id")?, need("user_id")?, need("trigger_id")?);
    Ok(InboundMessage {
        platform: "slack".into(),
        thread: channel.to_string(),
        message_id: trigger.to_string(),
        author: user.to_string(),
        text: command_text(
            command,
            &plain_text(fields.get("text").map(String::as_str).unwrap_or_default()),
            umbrella,
        ),
        meta: get("response_url")
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .map(|u| (META_RESPONSE_URL.to_string(), u.to_string()))
            .into_iter()
            .collect(),
    })
}

/// The message a slash command stands for. `umbrella` (`/flotilla`): its text is what the
/// person would have typed to the bot, a bridge command named without its slash included
/// (`/flotilla status` → `/status`, `/flotilla spawn demo fix it` → `/spawn demo fix it`,
/// `/flotilla /plan X` → `/plan X`, `/flotilla why is CI red?` → the question, nothing →
/// `/help`). Any other command is the message as typed (`/status`, `/spawn demo …`, a
/// template's `/plan X`), parsed by the bridge like any message; one it does not know is
/// answered "Unknown command".
pub fn command_text(command: &str, text: &str, umbrella: &str) -> String {
    let text = text.trim();
    let name = |c: &str| c.trim().trim_start_matches('/').to_lowercase();
    if name(command) != name(umbrella) {
        return if text.is_empty() {
            command.trim().to_string()
        } else {
            format!("{} {text}", command.trim())
        };
    }
    let first = text.split_whitespace().next().unwrap_or_default();
    if text.is_empty() {
        "/help".to_string()
    } else if text.starts_with('/') {
        text.to_string()
    } else if crate::chat::parse::DETERMINISTIC.contains(&first.to_lowercase().as_str()) {
        format!("/{}{}", first.to_lowercase(), &text[first.len()..])
    } else {
        text.to_string()
    }
}

/// Removes leading `<@U…>` mentions (the bot being addressed).
fn strip_user_mentions(text: &str) -> String {
    let mut t = text.trim();
    while let Some(rest) = t.strip_prefix("<@") {
        match rest.find('>') {
            Some(end) => t = rest[end + 1..].trim_start(),
            None => break,
        }
    }
    t.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_split_under_the_limit_after_escaping() {
        assert_eq!(
            escape("a <!channel> & Vec<T>"),
            "a &lt;!channel&gt; &amp; Vec&lt;T&gt;"
        );
        let text = "<>".repeat(30);
        let parts = split_escaped(&text, 40);
        assert!(parts.iter().all(|p| p.chars().count() <= 40), "{parts:?}");
        assert_eq!(parts.concat(), escape(&text));
    }

    #[test]
    fn received_text_reads_as_written() {
        assert_eq!(plain_text("Vec&lt;T&gt; &amp;&amp; x"), "Vec<T> && x");
        assert_eq!(
            plain_text("/clone <https://github.com/a/b>"),
            "/clone https://github.com/a/b"
        );
        assert_eq!(
            plain_text("<http://example.com|example.com> <https://x.io/q?a=1&amp;b=2|logs>"),
            "http://example.com logs (https://x.io/q?a=1&b=2)"
        );
        assert_eq!(
            plain_text("<@U1> <@U2|bob> <#C1|ops> <#C2> <!here> <!subteam^S1|@devs>"),
            "@U1 @bob #ops #C2 @here @devs"
        );
        assert_eq!(
            plain_text("<mailto:a@b.io|a@b.io> a &lt; b"),
            "a@b.io a < b"
        );
        assert_eq!(plain_text("unclosed <https://x"), "unclosed <https://x");
    }

    #[test]
    fn a_slash_command_is_the_message_its_user_would_have_typed() {
        // Slack's documented example ("Verifying requests from Slack"), text filled in.
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fflotilla&text=spawn+demo+fix+%26lt%3Bthe%26gt%3B+%3Chttps%3A%2F%2Fx.io%3E&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let m = parse_command(body.as_bytes(), "/flotilla").expect("parse");
        assert_eq!(
            (m.platform.as_str(), m.thread.as_str(), m.author.as_str()),
            ("slack", "G8PSS9T3V", "U2CERLKJA")
        );
        assert_eq!(
            m.message_id,
            "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
        );
        assert_eq!(m.text, "/spawn demo fix <the> https://x.io");
        assert_eq!(
            m.meta.get(META_RESPONSE_URL).map(String::as_str),
            Some(
                "https://hooks.slack.com/commands/T1DC2JH3J/397700885554/96rGlfmibIGlgcZRskXaIFfN"
            )
        );
        assert!(parse_command(b"command=%2Fx&user_id=U1&trigger_id=t", "/flotilla").is_err());
        assert!(is_ssl_check(b"ssl_check=1&token=x"));
        assert!(!is_ssl_check(b"ssl_check=1&command=%2Fx"));

        let u = "/flotilla";
        assert_eq!(command_text("/flotilla", "status", u), "/status");
        assert_eq!(command_text("/Flotilla", "  ", u), "/help");
        assert_eq!(command_text("/flotilla", "/plan add X", u), "/plan add X");
        assert_eq!(command_text("/flotilla", "Cancel", u), "/cancel");
        assert_eq!(
            command_text("/flotilla", "why is CI red?", u),
            "why is CI red?"
        );
        assert_eq!(command_text("/status", "", u), "/status");
        assert_eq!(
            command_text("/spawn", "demo fix it", u),
            "/spawn demo fix it"
        );
        assert_eq!(command_text("/plan", "add X", u), "/plan add X");
    }

    #[test]
    fn url_verification_answers_the_challenge() {
        let b = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
        assert_eq!(
            parse_event(b, true),
            Ok(SlackEvent::Challenge(
                "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P".into()
            ))
        );
    }

    fn envelope(event: Value) -> Vec<u8> {
        json!({"token": "XXYYZZ", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
            "event_id": "Ev1", "event_time": 1, "event": event})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn thread_messages_need_a_mention_unless_configured_and_dms_never_do() {
        let thread = envelope(json!({"type": "message", "user": "U1", "text": "more",
            "ts": "2.0", "thread_ts": "1.0", "channel": "C1", "channel_type": "channel"}));
        // Unmentioned: only a candidate reply to a notification posted as C1:1.0.
        let Ok(SlackEvent::Message(m)) = parse_event(&thread, true) else {
            panic!("a thread message is a candidate reply");
        };
        assert_eq!(m.meta.get("unaddressed").map(String::as_str), Some("true"));
        assert_eq!(m.meta.get("reply_to").map(String::as_str), Some("C1:1.0"));
        let Ok(SlackEvent::Message(m)) = parse_event(&thread, false) else {
            panic!("taken without require_mention");
        };
        assert!(!m.meta.contains_key("unaddressed"));
        let top = envelope(json!({"type": "message", "user": "U1", "text": "more",
            "ts": "2.0", "channel": "C1", "channel_type": "channel"}));
        assert_eq!(parse_event(&top, true), Ok(SlackEvent::Ignored));
        let dm = envelope(json!({"type": "message", "user": "U1", "text": "hi",
            "ts": "2.0", "channel": "D1", "channel_type": "im"}));
        assert!(matches!(parse_event(&dm, true), Ok(SlackEvent::Message(_))));
        let mention = envelope(json!({"type": "app_mention", "user": "U1",
            "text": "<@U0BOT> hi", "ts": "3.0", "thread_ts": "1.0", "channel": "C1"}));
        assert!(matches!(
            parse_event(&mention, true),
            Ok(SlackEvent::Message(_))
        ));
    }

    #[test]
    fn app_mentions_and_thread_messages_are_taken_and_bots_and_edits_are_not() {
        let b = envelope(json!({"type": "app_mention", "user": "U061F7AUR",
            "text": "<@U0LAN0Z89> is it everything a river should be?", "ts": "1515449522.000016",
            "channel": "C123ABC456", "event_ts": "1515449522000016"}));
        let SlackEvent::Message(m) = parse_event(&b, false).expect("parse") else {
            panic!("not a message")
        };
        assert_eq!(m.thread, "C123ABC456:1515449522.000016");
        assert_eq!(m.text, "is it everything a river should be?");
        assert_eq!(m.author, "U061F7AUR");
        let b = envelope(
            json!({"type": "message", "user": "U1", "text": "more", "ts": "2.0",
            "thread_ts": "1.0", "channel": "C1", "channel_type": "channel"}),
        );
        let SlackEvent::Message(m) = parse_event(&b, false).expect("parse") else {
            panic!("not a message")
        };
        assert_eq!(
            (m.thread.as_str(), m.message_id.as_str()),
            ("C1:1.0", "C1:2.0")
        );
        for (subtype, ts) in [("thread_broadcast", "3.0"), ("file_share", "4.0")] {
            let b = envelope(json!({"type": "message", "subtype": subtype, "user": "U1",
                "text": "<@U0BOT> look", "ts": ts, "thread_ts": "1.0", "channel": "C1",
                "channel_type": "channel"}));
            let SlackEvent::Message(m) = parse_event(&b, false).expect("parse") else {
                panic!("{subtype} dropped")
            };
            assert_eq!(m.text, "look");
        }
        for ev in [
            json!({"type": "message", "user": "U1", "text": "top", "ts": "2.0", "channel": "C1", "channel_type": "channel"}),
            json!({"type": "message", "bot_id": "B1", "text": "x", "ts": "2.0", "thread_ts": "1.0", "channel": "C1"}),
            json!({"type": "message", "subtype": "message_changed", "ts": "2.0", "channel": "C1"}),
        ] {
            assert_eq!(parse_event(&envelope(ev), false), Ok(SlackEvent::Ignored));
        }
    }
}
