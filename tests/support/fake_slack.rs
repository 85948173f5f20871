//! A stateful fake of the Slack Web API methods the chat bridge uses (wire-formats §2.3),
//! plus a signer that POSTs Events API envelopes the way Slack does (§2.1, §2.2), and one
//! that POSTs slash commands as Slack does ("Implementing slash commands": an
//! `application/x-www-form-urlencoded` body with `token`, `team_id`, `team_domain`,
//! `channel_id`, `channel_name`, `user_id`, `user_name`, `command`, `text`, `api_app_id`,
//! `response_url`, `trigger_id`, signed like events; [`slash_command`], [`post_form_signed`]).
//!
//! - `POST /api/chat.postMessage`, `POST /api/chat.update` (JSON or form bodies) with
//!   `Authorization: Bearer <token>`; errors are `{"ok": false, "error"}` with HTTP 200
//!   (`not_authed`, `invalid_auth`, `channel_not_found`, `no_text`, `message_not_found`,
//!   `msg_too_long` past 4,000 characters on update); postMessage truncates past 40,000 with
//!   the `message_truncated` warning.
//! - Text as Slack reads it ("Formatting text for app surfaces"): `&`, `<`, `>` are control
//!   characters; `<@U…>` mentions a user, `<!channel>`/`<!here>`/`<!everyone>` notify the
//!   channel, `<#C…|name>` and `<url|label>` are links, and only `&amp;`, `&lt;`, `&gt;` are
//!   decoded for display. Each message keeps what it renders as ([`Posted::rendered`]) and
//!   every mention any post or update parsed ([`Posted::pinged`]).
//! - `GET /api/conversations.replies?channel&ts&latest&oldest&inclusive&limit&cursor` (a read
//!   method: query parameters): the thread's messages oldest first, parent included, users'
//!   (added with [`FakeSlack::add_message`]) and the bot's; `thread_not_found` for an
//!   unknown `ts`; `has_more` and a `response_metadata.next_cursor` past `limit` (default
//!   1000, at most 1000). `GET /api/conversations.history` (same parameters but `ts`): the
//!   channel's messages outside threads (a thread's parent included), newest first.
//! - Message metadata ("Using message metadata"): `chat.postMessage` takes `metadata`
//!   (`{"event_type", "event_payload"}`, or that object as a JSON string in a form body;
//!   anything else is `invalid_metadata_format`), and the two reads return it on each
//!   message only with `include_all_metadata=true`.
//! - A bot message's `ts` is the wall clock's `seconds.micros`, strictly increasing.
//! - Rate limit on demand: [`FakeSlack::limit_next`] makes the next N calls answer HTTP 429,
//!   `Retry-After: secs`, `{"ok": false, "error": "ratelimited"}`; [`FakeSlack::too_many_posts`]
//!   makes the next N `chat.postMessage` calls answer `{"ok": false, "error":
//!   "rate_limited"}` ("Application has posted too many messages") with HTTP 200, as Web API
//!   errors come.
//! - Membership: [`FakeSlack::not_in`] makes a channel one the bot is not in (a private
//!   channel, somebody else's DM): `chat.postMessage` and `chat.update` there answer
//!   `{"ok": false, "error": "not_in_channel"}`.
//! - Slash commands' `response_url`s ("Handling user interaction", message responses):
//!   [`FakeSlack::response_url`] hands one out for a channel (its path, `/commands/…`, is
//!   served by this fake) and [`FakeSlack::slash_command`] builds a command carrying one.
//!   A POST of `{"text", "response_type"}` (JSON, no token) is answered `ok` and recorded
//!   ([`FakeSlack::responses`]) for at most five uses, then `used_url` (HTTP 404); an
//!   unknown path answers 404 `no_service`, a body without text 400 `no_text`. (Slack also
//!   expires them after 30 minutes; the fake's time does not move.)

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::fake_server::FakeServer;

/// A message in a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Posted {
    /// Channel id.
    pub channel: String,
    /// Its `ts`.
    pub ts: String,
    /// The thread it was posted in.
    pub thread_ts: Option<String>,
    /// Current text.
    pub text: String,
    /// Accepted `chat.update`s.
    pub updates: u32,
    /// What a person sees: control sequences resolved, entities decoded.
    pub rendered: String,
    /// Every mention parsed by the post or any update (`user:U…`, `channel`, `here`,
    /// `everyone`), in order: each one a notification Slack would have sent.
    pub pinged: Vec<String>,
    /// Its message metadata, if it was posted with some.
    pub metadata: Option<Value>,
}

/// A message posted through a slash command's `response_url`.
#[derive(Debug, Clone, PartialEq)]
pub struct Responded {
    /// The channel the command was typed in.
    pub channel: String,
    /// The URL's path (`/commands/…`).
    pub path: String,
    /// Its text.
    pub text: String,
    /// `in_channel` or `ephemeral` (Slack's default when absent).
    pub response_type: String,
}

/// Posts one `response_url` takes ("up to 5 times within 30 minutes").
const RESPONSE_USES: u32 = 5;

/// How Slack reads `text`: (what it renders as, the mentions it parsed).
pub fn render(text: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut pinged = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('<') {
        out.push_str(&decode(&rest[..i]));
        let after = &rest[i + 1..];
        let Some(end) = after.find('>') else {
            // A lone `<` is not a sequence: shown as is.
            out.push_str(&decode(&rest[i..]));
            rest = "";
            break;
        };
        let inner = &after[..end];
        let (target, label) = match inner.split_once('|') {
            Some((t, l)) => (t, Some(l)),
            None => (inner, None),
        };
        if let Some(id) = target.strip_prefix('@') {
            pinged.push(format!("user:{id}"));
            out.push('@');
            out.push_str(label.unwrap_or(id));
        } else if let Some(cmd) = target.strip_prefix('!') {
            let word = cmd.split('^').next().unwrap_or(cmd);
            if matches!(word, "channel" | "here" | "everyone" | "group") {
                pinged.push(if word == "group" { "channel" } else { word }.to_string());
            }
            out.push('@');
            out.push_str(label.unwrap_or(word));
        } else if let Some(id) = target.strip_prefix('#') {
            out.push('#');
            out.push_str(label.unwrap_or(id));
        } else {
            out.push_str(&decode(label.unwrap_or(target)));
        }
        rest = &after[end + 1..];
    }
    out.push_str(&decode(rest));
    (out, pinged)
}

/// The `text` an Events API message carries for what a person typed ("Formatting text for
/// app surfaces"): `&`, `<`, `>` come as `&amp;`, `&lt;`, `&gt;`, and each URL Slack
/// linked as `<url>` (the control characters are Slack's own).
pub fn as_delivered(typed: &str) -> String {
    let escaped = typed
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let mut out = String::with_capacity(escaped.len());
    for (i, word) in escaped.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if word.starts_with("https://") || word.starts_with("http://") {
            out.push_str(&format!("<{word}>"));
        } else {
            out.push_str(word);
        }
    }
    out
}

/// The three entities Slack decodes for display, and only those.
fn decode(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[derive(Default)]
struct State {
    token: String,
    channels: Vec<String>,
    posted: Vec<Posted>,
    seq: u64,
    /// The last bot message's `ts`, in microseconds.
    last_ts: i64,
    limited: u32,
    limit_secs: u64,
    /// `chat.postMessage` calls still to refuse with `rate_limited`.
    too_many: u32,
    calls: BTreeMap<String, u64>,
    /// Messages people wrote: (channel, ts, thread_ts, user, text).
    others: Vec<(String, String, Option<String>, String, String)>,
    /// Channels the bot is not in.
    not_member: Vec<String>,
    /// Handed-out `response_url` paths: (channel, posts made).
    hooks: BTreeMap<String, (String, u32)>,
    /// Posts made through them.
    responses: Vec<Responded>,
}

/// The fake.
pub struct FakeSlack {
    /// Web API base URL (`slack.api_url`), `…/api`.
    pub api_url: String,
    /// The server's root, where handed-out `response_url`s live.
    base_url: String,
    state: Arc<Mutex<State>>,
    /// The server (stopped on drop).
    _server: FakeServer,
}

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn err(code: &str) -> HttpResponse {
    HttpResponse::Ok().json(json!({"ok": false, "error": code}))
}

async fn dispatch(
    req: HttpRequest,
    body: web::Bytes,
    st: web::Data<Arc<Mutex<State>>>,
) -> HttpResponse {
    if req.path().starts_with("/commands/") {
        return respond(&mut lock(&st), req.path(), &body);
    }
    let method = req.path().trim_start_matches("/api/").to_string();
    let mut s = lock(&st);
    *s.calls.entry(method.clone()).or_default() += 1;
    if s.limited > 0 {
        s.limited -= 1;
        return HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", s.limit_secs.to_string()))
            .json(json!({"ok": false, "error": "ratelimited"}));
    }
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    match auth {
        None => return err("not_authed"),
        Some(a) if a != format!("Bearer {}", s.token) => return err("invalid_auth"),
        _ => {}
    }
    let form = if req.method() == actix_web::http::Method::GET {
        req.query_string().to_string()
    } else {
        std::str::from_utf8(&body).unwrap_or("").to_string()
    };
    let p: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
        web::Query::<BTreeMap<String, String>>::from_query(&form)
            .map(|q| json!(q.into_inner()))
            .unwrap_or(json!({}))
    });
    let Some(channel) = p["channel"].as_str().map(str::to_string) else {
        return err("channel_not_found");
    };
    if !s.channels.contains(&channel) {
        return err("channel_not_found");
    }
    if method == "conversations.replies" || method == "conversations.history" {
        return read(&s, &method, &channel, &p);
    }
    let Some(text) = p["text"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_string)
    else {
        return err("no_text");
    };
    let (rendered, pinged) = render(&text);
    if s.not_member.contains(&channel) && method.starts_with("chat.") {
        return err("not_in_channel");
    }
    match method.as_str() {
        "chat.postMessage" if s.too_many > 0 => {
            s.too_many -= 1;
            err("rate_limited")
        }
        "chat.postMessage" => {
            let metadata = match &p["metadata"] {
                Value::Null => None,
                Value::String(m) => serde_json::from_str::<Value>(m).ok().or(Some(Value::Null)),
                m => Some(m.clone()),
            };
            if metadata
                .as_ref()
                .is_some_and(|m| !m["event_type"].is_string() || !m["event_payload"].is_object())
            {
                return err("invalid_metadata_format");
            }
            s.seq += 1;
            let now = chrono::Utc::now().timestamp_micros();
            s.last_ts = now.max(s.last_ts + 1);
            let ts = format!("{}.{:06}", s.last_ts / 1_000_000, s.last_ts % 1_000_000);
            let truncated = text.chars().count() > 40_000;
            let text: String = text.chars().take(40_000).collect();
            s.posted.push(Posted {
                channel: channel.clone(),
                ts: ts.clone(),
                thread_ts: p["thread_ts"].as_str().map(str::to_string),
                text: text.clone(),
                updates: 0,
                rendered,
                pinged,
                metadata,
            });
            let mut v = json!({"ok": true, "channel": channel, "ts": ts, "message": {"text": text,
                "bot_id": "B0FAKE", "type": "message", "subtype": "bot_message", "ts": ts}});
            if truncated {
                v["response_metadata"] = json!({"warnings": ["message_truncated"]});
            }
            HttpResponse::Ok().json(v)
        }
        "chat.update" => {
            let Some(ts) = p["ts"].as_str().map(str::to_string) else {
                return err("message_not_found");
            };
            if text.chars().count() > 4000 {
                return err("msg_too_long");
            }
            let Some(m) = s
                .posted
                .iter_mut()
                .find(|m| m.channel == channel && m.ts == ts)
            else {
                return err("message_not_found");
            };
            m.text = text.clone();
            m.updates += 1;
            m.rendered = rendered;
            m.pinged.extend(pinged);
            HttpResponse::Ok().json(
                json!({"ok": true, "channel": channel, "ts": ts, "text": text,
                "message": {"text": text, "user": "U0BOT"}}),
            )
        }
        _ => err("unknown_method"),
    }
}

/// A POST to a handed-out `response_url`: no token (the URL is the capability).
fn respond(s: &mut State, path: &str, body: &[u8]) -> HttpResponse {
    let Some((channel, uses)) = s.hooks.get_mut(path) else {
        return HttpResponse::NotFound().body("no_service");
    };
    if *uses >= RESPONSE_USES {
        return HttpResponse::NotFound().body("used_url");
    }
    let p: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(text) = p["text"].as_str().filter(|t| !t.is_empty()) else {
        return HttpResponse::BadRequest().body("no_text");
    };
    *uses += 1;
    let r = Responded {
        channel: channel.clone(),
        path: path.to_string(),
        text: text.to_string(),
        response_type: p["response_type"]
            .as_str()
            .unwrap_or("ephemeral")
            .to_string(),
    };
    s.responses.push(r);
    HttpResponse::Ok().body("ok")
}

/// A message as the reads list it.
struct Listed {
    ts: String,
    thread_ts: Option<String>,
    /// The user, or the bot's id.
    who: String,
    text: String,
    bot: bool,
    metadata: Option<Value>,
}

/// `conversations.replies` (the thread at `ts`, oldest first) or `conversations.history`
/// (the channel outside threads, newest first), within `oldest`/`latest`, a page of `limit`
/// from `cursor` (an offset, opaque to clients).
fn read(s: &State, method: &str, channel: &str, p: &Value) -> HttpResponse {
    let num = |t: &str| t.parse::<f64>().unwrap_or(0.0);
    let param = |k: &str| {
        p[k].as_str()
            .map(str::to_string)
            .or_else(|| p.get(k).filter(|v| !v.is_null()).map(Value::to_string))
    };
    let mut all: Vec<Listed> = s
        .others
        .iter()
        .filter(|m| m.0 == channel)
        .map(|m| Listed {
            ts: m.1.clone(),
            thread_ts: m.2.clone(),
            who: m.3.clone(),
            text: m.4.clone(),
            bot: false,
            metadata: None,
        })
        .collect();
    all.extend(
        s.posted
            .iter()
            .filter(|m| m.channel == channel)
            .map(|m| Listed {
                ts: m.ts.clone(),
                thread_ts: m.thread_ts.clone(),
                who: "B0FAKE".into(),
                text: m.text.clone(),
                bot: true,
                metadata: m.metadata.clone(),
            }),
    );
    let thread = if method == "conversations.replies" {
        let Some(ts) = p["ts"].as_str() else {
            return err("invalid_arguments");
        };
        if !all.iter().any(|m| m.ts == ts) {
            return err("thread_not_found");
        }
        Some(ts.to_string())
    } else {
        None
    };
    let inclusive =
        param("inclusive").as_deref() == Some("true") || param("inclusive").as_deref() == Some("1");
    let within = |t: &str| {
        let ok_latest = match param("latest") {
            Some(l) if inclusive => num(t) <= num(&l),
            Some(l) => num(t) < num(&l),
            None => true,
        };
        let ok_oldest = match param("oldest") {
            Some(o) if inclusive => num(t) >= num(&o),
            Some(o) => num(t) > num(&o),
            None => true,
        };
        ok_latest && ok_oldest
    };
    let mut listed: Vec<_> = all
        .into_iter()
        .filter(|m| match &thread {
            Some(ts) => m.ts == *ts || m.thread_ts.as_deref() == Some(ts.as_str()),
            None => m.thread_ts.is_none() || m.thread_ts.as_deref() == Some(m.ts.as_str()),
        })
        .filter(|m| within(&m.ts))
        .collect();
    listed.sort_by(|a, b| num(&a.ts).total_cmp(&num(&b.ts)));
    if thread.is_none() {
        listed.reverse();
    }
    let limit = param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(if thread.is_some() { 1000 } else { 100 })
        .clamp(1, 1000);
    let from = param("cursor")
        .and_then(|c| {
            c.strip_prefix("offset:")
                .and_then(|o| o.parse::<usize>().ok())
        })
        .unwrap_or(0);
    let with_metadata = param("include_all_metadata").as_deref() == Some("true")
        || param("include_all_metadata").as_deref() == Some("1");
    let has_more = listed.len() > from + limit;
    let messages: Vec<Value> = listed
        .into_iter()
        .skip(from)
        .take(limit)
        .map(|l| {
            let mut m = json!({"type": "message", "ts": l.ts, "text": l.text});
            if let Some(th) = l.thread_ts.or_else(|| thread.clone()) {
                m["thread_ts"] = json!(th);
            }
            if l.bot {
                m["bot_id"] = json!(l.who);
                m["subtype"] = json!("bot_message");
            } else {
                m["user"] = json!(l.who);
            }
            if let (true, Some(meta)) = (with_metadata, l.metadata) {
                m["metadata"] = meta;
            }
            m
        })
        .collect();
    let next = if has_more {
        format!("offset:{}", from + limit)
    } else {
        String::new()
    };
    HttpResponse::Ok().json(
        json!({"ok": true, "messages": messages, "has_more": has_more,
        "response_metadata": {"next_cursor": next}}),
    )
}

impl FakeSlack {
    /// Starts the fake on `127.0.0.1:0`; calls must carry `Bearer {token}`; `channels` exist.
    pub async fn start(token: &str, channels: &[&str]) -> FakeSlack {
        let state = Arc::new(Mutex::new(State {
            token: token.to_string(),
            channels: channels.iter().map(|c| c.to_string()).collect(),
            limit_secs: 1,
            ..State::default()
        }));
        let data = web::Data::new(state.clone());
        let server = FakeServer::start(move |cfg| {
            cfg.app_data(data.clone())
                .default_service(web::to(dispatch));
        });
        FakeSlack {
            api_url: server.url("/api"),
            base_url: server.url(""),
            state,
            _server: server,
        }
    }

    /// Messages posted, in order.
    pub fn posted(&self) -> Vec<Posted> {
        lock(&self.state).posted.clone()
    }

    /// The next `n` calls answer 429 with `Retry-After: secs`.
    pub fn limit_next(&self, n: u32, secs: u64) {
        let mut s = lock(&self.state);
        s.limited = n;
        s.limit_secs = secs;
    }

    /// The next `n` `chat.postMessage` calls answer `rate_limited` (HTTP 200).
    pub fn too_many_posts(&self, n: u32) {
        lock(&self.state).too_many = n;
    }

    /// A message someone wrote in `channel` at `ts` (in `thread_ts`'s thread, if any), as
    /// Slack would store it (text already in Slack's escaped form).
    pub fn add_message(
        &self,
        channel: &str,
        ts: &str,
        thread_ts: Option<&str>,
        user: &str,
        text: &str,
    ) {
        lock(&self.state).others.push((
            channel.to_string(),
            ts.to_string(),
            thread_ts.map(str::to_string),
            user.to_string(),
            text.to_string(),
        ));
    }

    /// Calls per method.
    pub fn calls(&self, method: &str) -> u64 {
        lock(&self.state).calls.get(method).copied().unwrap_or(0)
    }

    /// The bot is not in `channel` (it exists): posts there answer `not_in_channel`.
    pub fn not_in(&self, channel: &str) {
        lock(&self.state).not_member.push(channel.to_string());
    }

    /// A fresh `response_url` for a command typed in `channel`, served by this fake.
    pub fn response_url(&self, channel: &str) -> String {
        let path = format!(
            "/commands/T123ABC456/{}/{}",
            uuid::Uuid::new_v4().as_u128() % 1_000_000_000_000,
            uuid::Uuid::new_v4().simple()
        );
        lock(&self.state)
            .hooks
            .insert(path.clone(), (channel.to_string(), 0));
        format!("{}{path}", self.base_url)
    }

    /// A slash command's form body ([`slash_command`]) whose `response_url` is this fake's.
    pub fn slash_command(&self, command: &str, text: &str, channel: &str, user: &str) -> String {
        let url = self.response_url(channel);
        slash_command_with_url(command, text, channel, user, None, &url)
    }

    /// Posts made through `response_url`s, in order.
    pub fn responses(&self) -> Vec<Responded> {
        lock(&self.state).responses.clone()
    }
}

/// Slack's `v0=` signature of `body` at `ts` under `secret`.
pub fn sign(secret: &str, ts: i64, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// The Events API envelope around `event`.
pub fn envelope(event: Value) -> Value {
    json!({"token": "XXYYZZ", "team_id": "T123ABC456", "api_app_id": "A123ABC456", "event": event,
        "type": "event_callback", "event_id": format!("Ev{}", uuid::Uuid::new_v4().simple()),
        "event_time": chrono::Utc::now().timestamp(),
        "authorizations": [{"team_id": "T123ABC456", "user_id": "U0BOT", "is_bot": true, "is_enterprise_install": false}]})
}

/// POSTs `body` to `url` signed like Slack (now), returning status and body text.
pub async fn post_signed(url: &str, secret: &str, body: &Value) -> (u16, String) {
    let raw = body.to_string();
    let ts = chrono::Utc::now().timestamp();
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sign(secret, ts, &raw))
        .body(raw)
        .send()
        .await
        .expect("post event");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// A slash command's form body as Slack POSTs it: `/command text` typed by `user` in
/// `channel`, with a fresh `trigger_id` unless one is given.
pub fn slash_command(
    command: &str,
    text: &str,
    channel: &str,
    user: &str,
    trigger_id: Option<&str>,
) -> String {
    let response_url = format!(
        "https://hooks.slack.com/commands/T123ABC456/{}/{}",
        uuid::Uuid::new_v4().as_u128() % 1_000_000_000_000,
        uuid::Uuid::new_v4().simple()
    );
    slash_command_with_url(command, text, channel, user, trigger_id, &response_url)
}

/// [`slash_command`] carrying `response_url`.
pub fn slash_command_with_url(
    command: &str,
    text: &str,
    channel: &str,
    user: &str,
    trigger_id: Option<&str>,
    response_url: &str,
) -> String {
    let trigger = trigger_id.map(str::to_string).unwrap_or_else(|| {
        let n = uuid::Uuid::new_v4().as_u128();
        format!(
            "{}.{}.{:032x}",
            n % 1_000_000_000_000,
            47_445_629_121_u64,
            n
        )
    });
    let fields = [
        ("token", "gIkuvaNzQIHg97ATvDxqgjtO"),
        ("team_id", "T123ABC456"),
        ("team_domain", "acme"),
        ("enterprise_id", ""),
        ("enterprise_name", ""),
        ("channel_id", channel),
        ("channel_name", "ops"),
        ("user_id", user),
        ("user_name", "steve"),
        ("command", command),
        ("text", text),
        ("api_app_id", "A123ABC456"),
        ("is_enterprise_install", "false"),
        ("response_url", response_url),
        ("trigger_id", trigger.as_str()),
    ];
    let mut form = String::new();
    for (k, v) in fields {
        if !form.is_empty() {
            form.push('&');
        }
        form.push_str(k);
        form.push('=');
        form.push_str(&form_encode(v));
    }
    form
}

/// `application/x-www-form-urlencoded` encoding of one value (space as `+`).
fn form_encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// POSTs a form `body` to `url` signed like Slack at `ts`, returning status and body text.
pub async fn post_form_signed_at(url: &str, secret: &str, body: &str, ts: i64) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sign(secret, ts, body))
        .body(body.to_string())
        .send()
        .await
        .expect("post command");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// [`post_form_signed_at`] now.
pub async fn post_form_signed(url: &str, secret: &str, body: &str) -> (u16, String) {
    post_form_signed_at(url, secret, body, chrono::Utc::now().timestamp()).await
}
