//! A stateful fake of Discord (wire-formats §4) for tests: REST messages and the Gateway.
//!
//! - REST under `/api/v10`: `POST /channels/{id}/messages`, `PATCH
//!   /channels/{id}/messages/{mid}` with `Authorization: Bot <token>` (401 `{"message":
//!   "401: Unauthorized", "code": 0}` otherwise); `content` up to 2,000 characters (400
//!   `Invalid Form Body`, code 50035, past it); `X-RateLimit-*` bucket headers on every
//!   answer; [`FakeDiscord::limit_next`] makes the next N calls answer 429 with `Retry-After`,
//!   `X-RateLimit-Scope: user` and `{"message": "You are being rate limited.", "retry_after",
//!   "global": false}`. [`FakeDiscord::limit_global`] opens a window of the global limit
//!   ("Rate Limits", global rate limit: it holds every route of the bot): each REST call
//!   inside it answers 429 with only `Retry-After`, `X-RateLimit-Global: true` and
//!   `X-RateLimit-Scope: global`, and `"global": true` with the time left; every 429 served
//!   is counted ([`FakeDiscord::rate_limited`]: Discord counts them as invalid requests).
//!   [`FakeDiscord::limit_buckets`] turns on per-route limits as "Rate Limits" describes
//!   them: create (`POST`), edit (`PATCH`) and read (`GET`) messages are three buckets, each
//!   with its own `X-RateLimit-Bucket` hash, counted per channel (the major parameter): N
//!   requests a window, every answer telling `X-RateLimit-Limit`, `X-RateLimit-Remaining`
//!   and `X-RateLimit-Reset-After` (seconds left in the window); a request on a spent bucket
//!   answers 429 with `X-RateLimit-Scope: user`, `Retry-After` and `{"retry_after": <seconds
//!   left>, "global": false}`. [`FakeDiscord::hold_edits`] keeps edits' answers back until
//!   [`FakeDiscord::release_edits`] (to order answers in a test).
//! - Gateway at `ws://…/gateway`: op 10 HELLO on connect, op 1 → op 11 ACK, op 2 IDENTIFY
//!   (token checked; a wrong one closes with 4004) → READY with the bot user and a session
//!   id, op 6 RESUME → missed dispatches replayed then RESUMED (unknown session → op 9
//!   `false`). [`FakeDiscord::message_create`] dispatches a `MESSAGE_CREATE` to every
//!   identified connection ([`FakeDiscord::message_reply`]: a reply, type 19 with
//!   `message_reference` and `referenced_message`); [`FakeDiscord::reconnect_all`] sends op 7.
//! - Mentions (Message resource, "Allowed Mentions Object"): each create and edit parses
//!   `@everyone`/`@here`, `<@id>`/`<@!id>` and `<@&id>` from `content` under the request's
//!   `allowed_mentions`; when the field is absent *all* types are parsed (the default for
//!   regular messages, and for edits whatever the create said). `parse` together with a
//!   non-empty `users`/`roles` list, or an unknown type, is refused (400, 50035). Every
//!   mention parsed by any request is kept in [`Posted::pinged`]: what would have notified.
//! - User-Agent (API reference, "User Agent"): REST calls without `DiscordBot (url,
//!   version)` are blocked (403, like Cloudflare's block page).
//! - Nonces ("Create Message"): `nonce` (integer or string, up to 25 characters; longer is
//!   400, 50035) is echoed in the message; with `enforce_nonce: true`, a create whose nonce
//!   the bot used in the past few minutes (here [`NONCE_WINDOW`]) answers that message and
//!   creates none ([`FakeDiscord::nonce_repeats`] counts them).
//! - History ("Get Channel Messages"): `GET /channels/{id}/messages?before&after&limit`
//!   (limit 1–100, default 50) answers the channel's messages, users' and the bot's, newest
//!   first.
//! - Application commands: `GET /applications/@me` (the application, id [`BOT_ID`]),
//!   `GET`/`PUT /applications/{id}/commands` ("Bulk Overwrite Global Application
//!   Commands": names must match `^[-_\p{L}\p{N}]{1,32}$` in lower case, descriptions 1–100
//!   characters, names unique, at most 100; 400 with code 50035 otherwise). Each PUT is
//!   counted ([`FakeDiscord::command_writes`]); the list survives the app's restarts.
//! - Intents: IDENTIFY asking for the privileged Message Content intent when
//!   [`FakeDiscord::disallow_message_content`] was called closes with 4014.

#![allow(dead_code)]

use std::sync::{Arc, Mutex, MutexGuard};

use actix::{Actor, ActorContext, Addr, AsyncContext, Handler, Message, StreamHandler};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use serde_json::{json, Value};

use crate::fake_server::FakeServer;

/// The bot's user id in READY.
pub const BOT_ID: &str = "900000000000000001";

/// A message the bot posted.
#[derive(Debug, Clone, PartialEq)]
pub struct Posted {
    /// Channel id.
    pub channel: String,
    /// Message id.
    pub id: String,
    /// Current content.
    pub content: String,
    /// Accepted edits.
    pub edits: u32,
    /// Every mention parsed by the create or any edit (`everyone`, `user:<id>`,
    /// `role:<id>`), in order: each one a notification Discord would have sent.
    pub pinged: Vec<String>,
}

/// The mentions in `content` Discord parses under `allowed` (the request's
/// `allowed_mentions`, `None` when absent: then every type is parsed).
///
/// # Errors
/// The 400 body Discord answers for an invalid `allowed_mentions`.
pub fn parse_mentions(content: &str, allowed: Option<&Value>) -> Result<Vec<String>, Value> {
    let invalid = |why: &str| {
        json!({"message": "Invalid Form Body", "code": 50035,
            "errors": {"allowed_mentions": {"_errors": [{"code": "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE", "message": why}]}}})
    };
    let all = ["users", "roles", "everyone"];
    let (types, users, roles): (Vec<String>, Vec<String>, Vec<String>) = match allowed {
        None | Some(Value::Null) => (all.iter().map(|t| t.to_string()).collect(), vec![], vec![]),
        Some(a) => {
            let list = |k: &str| -> Vec<String> {
                a[k].as_array()
                    .map(|v| {
                        v.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let types = list("parse");
            if let Some(t) = types.iter().find(|t| !all.contains(&t.as_str())) {
                return Err(invalid(&format!(
                    "Value \"{t}\" is not a valid enum value."
                )));
            }
            let (users, roles) = (list("users"), list("roles"));
            if types.iter().any(|t| t == "users") && !users.is_empty() {
                return Err(invalid(
                    "parse:[\"users\"] and users: [ids...] are mutually exclusive.",
                ));
            }
            if types.iter().any(|t| t == "roles") && !roles.is_empty() {
                return Err(invalid(
                    "parse:[\"roles\"] and roles: [ids...] are mutually exclusive.",
                ));
            }
            (types, users, roles)
        }
    };
    let has = |t: &str| types.iter().any(|x| x == t);
    let mut out = Vec::new();
    if has("everyone") && (content.contains("@everyone") || content.contains("@here")) {
        out.push("everyone".to_string());
    }
    let mut rest = content;
    while let Some(i) = rest.find("<@") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find('>') else { break };
        let inner = &rest[..end];
        let (role, id) = match inner.strip_prefix('&') {
            Some(id) => (true, id),
            None => (false, inner.strip_prefix('!').unwrap_or(inner)),
        };
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            continue;
        }
        let parsed = if role {
            has("roles") || roles.iter().any(|r| r == id)
        } else {
            has("users") || users.iter().any(|u| u == id)
        };
        if parsed {
            out.push(format!("{}:{id}", if role { "role" } else { "user" }));
        }
    }
    Ok(out)
}

#[derive(Default)]
struct State {
    token: String,
    heartbeat_ms: u64,
    posted: Vec<Posted>,
    next_id: u64,
    limited: u32,
    limit_secs: f64,
    /// End of a global rate-limit window.
    global_until: Option<std::time::Instant>,
    /// 429s answered.
    rate_limited: u32,
    seq: i64,
    /// Every dispatch sent, with its sequence number (for RESUME replays).
    events: Vec<(i64, String)>,
    sessions: Vec<Addr<GwSession>>,
    session_ids: Vec<String>,
    identifies: u32,
    resumes: u32,
    heartbeats: u32,
    self_url: String,
    /// Whether IDENTIFY may ask for the privileged Message Content intent.
    no_message_content: bool,
    /// REST calls blocked for a missing `DiscordBot` User-Agent.
    blocked: u32,
    /// Gateway connections opened.
    connections: u32,
    /// Every message of every channel (users' and the bot's): (channel, id, message object).
    log: Vec<(String, u64, Value)>,
    /// The application's global commands.
    commands: Vec<Value>,
    /// `PUT /applications/{id}/commands` calls accepted.
    command_writes: u32,
    /// `GET /applications/{id}/commands` calls.
    command_reads: u32,
    /// Per-route limits, when on: (requests per window, window in seconds).
    bucket_limit: Option<(u32, f64)>,
    /// Each bucket's window per channel: (bucket, channel) → (start, requests in it).
    windows: std::collections::HashMap<(String, String), (std::time::Instant, u32)>,
    /// Edits answer only while this is `true` ([`FakeDiscord::hold_edits`]).
    edits_open: Option<tokio::sync::watch::Receiver<bool>>,
    /// Edits received and waiting for [`FakeDiscord::release_edits`].
    edits_waiting: u32,
    /// The bot's messages created with a `nonce`: (nonce, when, the message).
    nonces: Vec<(String, std::time::Instant, Value)>,
    /// Creates answered with an earlier message under `enforce_nonce`.
    nonce_repeats: u32,
}

/// How long a nonce is held against a repeat under `enforce_nonce` (Discord: "the past few
/// minutes").
const NONCE_WINDOW: std::time::Duration = std::time::Duration::from_secs(180);

/// The bucket hashes of the message routes (`X-RateLimit-Bucket`), per method.
fn message_bucket(method: &str, parts: &[&str]) -> Option<(&'static str, String)> {
    let ch = match parts {
        ["api", "v10", "channels", ch, "messages"]
        | ["api", "v10", "channels", ch, "messages", _] => ch.to_string(),
        _ => return None,
    };
    let bucket = match method {
        "POST" => "d721dea6054f6322373d361f98e5c38b",
        "PATCH" => "80c17d2f203122d936070c88c8d10f33",
        "GET" => "c5b1d4d0ba3d1e2b3f0d3e8d1b2a0f7e",
        _ => return None,
    };
    Some((bucket, ch))
}

/// Counts a request against its bucket when per-route limits are on: `Err` is the 429 of a
/// spent bucket, `Ok` the headers its answer carries.
fn take_bucket(
    s: &mut State,
    method: &str,
    parts: &[&str],
) -> Result<Vec<(&'static str, String)>, Box<HttpResponse>> {
    let (Some((limit, window)), Some((bucket, ch))) =
        (s.bucket_limit, message_bucket(method, parts))
    else {
        return Ok(Vec::new());
    };
    let now = std::time::Instant::now();
    let w = s
        .windows
        .entry((bucket.to_string(), ch))
        .or_insert((now, 0));
    let length = std::time::Duration::from_secs_f64(window);
    if now >= w.0 + length {
        *w = (now, 0);
    }
    let left = (w.0 + length).saturating_duration_since(now).as_secs_f64();
    if w.1 >= limit {
        s.rate_limited += 1;
        return Err(Box::new(
            HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", format!("{}", left.ceil() as u64)))
                .insert_header(("X-RateLimit-Limit", limit.to_string()))
                .insert_header(("X-RateLimit-Remaining", "0"))
                .insert_header(("X-RateLimit-Reset-After", format!("{left:.3}")))
                .insert_header(("X-RateLimit-Bucket", bucket))
                .insert_header(("X-RateLimit-Scope", "user"))
                .json(json!({"message": "You are being rate limited.",
                "retry_after": (left * 1000.0).round() / 1000.0, "global": false})),
        ));
    }
    w.1 += 1;
    Ok(vec![
        ("X-RateLimit-Limit", limit.to_string()),
        ("X-RateLimit-Remaining", (limit - w.1).to_string()),
        ("X-RateLimit-Reset-After", format!("{left:.3}")),
        ("X-RateLimit-Bucket", bucket.to_string()),
    ])
}

/// `r` with the bucket's headers in place of the fake's defaults.
fn with_headers(mut r: HttpResponse, headers: &[(&'static str, String)]) -> HttpResponse {
    use actix_web::http::header::{HeaderName, HeaderValue};
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

/// The fake.
pub struct FakeDiscord {
    /// REST base URL (`discord.api_url`), `…/api/v10`.
    pub api_url: String,
    /// Gateway URL (`discord.gateway_url`).
    pub gateway_url: String,
    state: Arc<Mutex<State>>,
    /// Opens the edits held back by [`FakeDiscord::hold_edits`].
    edits_gate: Mutex<Option<tokio::sync::watch::Sender<bool>>>,
    /// The server (stopped on drop).
    _server: FakeServer,
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Message)]
#[rtype(result = "()")]
struct Push(String);

#[derive(Message)]
#[rtype(result = "()")]
struct Reconnect;

struct GwSession {
    state: Shared,
    identified: bool,
}

impl Actor for GwSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let mut s = lock(&self.state);
        ctx.text(
            json!({"op": 10, "d": {"heartbeat_interval": s.heartbeat_ms}, "s": null, "t": null})
                .to_string(),
        );
        s.sessions.push(ctx.address());
        s.connections += 1;
    }
}

impl GwSession {
    fn dispatch(s: &mut State, t: &str, d: Value) -> String {
        s.seq += 1;
        let p = json!({"op": 0, "t": t, "s": s.seq, "d": d}).to_string();
        s.events.push((s.seq, p.clone()));
        p
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for GwSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        let text = match msg {
            Ok(ws::Message::Text(t)) => t.to_string(),
            Ok(ws::Message::Ping(p)) => {
                ctx.pong(&p);
                return;
            }
            Ok(ws::Message::Close(_)) | Err(_) => {
                ctx.stop();
                return;
            }
            _ => return,
        };
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        let state = self.state.clone();
        let mut s = lock(&state);
        match v["op"].as_i64() {
            Some(1) => {
                s.heartbeats += 1;
                ctx.text(json!({"op": 11, "d": null, "s": null, "t": null}).to_string());
            }
            Some(2) => {
                if v["d"]["token"].as_str() != Some(s.token.as_str()) {
                    ctx.close(Some(ws::CloseReason {
                        code: ws::CloseCode::Other(4004),
                        description: Some("Authentication failed.".into()),
                    }));
                    ctx.stop();
                    return;
                }
                let intents = v["d"]["intents"].as_u64().unwrap_or(0);
                if s.no_message_content && intents & (1 << 15) != 0 {
                    ctx.close(Some(ws::CloseReason {
                        code: ws::CloseCode::Other(4014),
                        description: Some("Disallowed intent(s).".into()),
                    }));
                    ctx.stop();
                    return;
                }
                s.identifies += 1;
                let sid = uuid::Uuid::new_v4().simple().to_string();
                s.session_ids.push(sid.clone());
                self.identified = true;
                let url = s.self_url.clone();
                let p = Self::dispatch(
                    &mut s,
                    "READY",
                    json!({"v": 10,
                    "user": {"id": BOT_ID, "username": "flotilla", "bot": true},
                    "guilds": [], "session_id": sid, "resume_gateway_url": url,
                    "application": {"id": BOT_ID}}),
                );
                ctx.text(p);
            }
            Some(6) => {
                let sid = v["d"]["session_id"].as_str().unwrap_or_default();
                if v["d"]["token"].as_str() != Some(s.token.as_str())
                    || !s.session_ids.iter().any(|x| x == sid)
                {
                    ctx.text(json!({"op": 9, "d": false, "s": null, "t": null}).to_string());
                    return;
                }
                s.resumes += 1;
                self.identified = true;
                let from = v["d"]["seq"].as_i64().unwrap_or(0);
                let missed: Vec<String> = s
                    .events
                    .iter()
                    .filter(|(n, p)| *n > from && !p.contains("\"READY\""))
                    .map(|(_, p)| p.clone())
                    .collect();
                for p in missed {
                    ctx.text(p);
                }
                let p = Self::dispatch(&mut s, "RESUMED", Value::Null);
                ctx.text(p);
            }
            _ => {}
        }
    }
}

impl Handler<Push> for GwSession {
    type Result = ();
    fn handle(&mut self, p: Push, ctx: &mut Self::Context) {
        if self.identified {
            ctx.text(p.0);
        }
    }
}

impl Handler<Reconnect> for GwSession {
    type Result = ();
    fn handle(&mut self, _: Reconnect, ctx: &mut Self::Context) {
        ctx.text(json!({"op": 7, "d": null, "s": null, "t": null}).to_string());
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::Other(4000),
            description: None,
        }));
        ctx.stop();
    }
}

/// Channel history and application commands; `None` for the message writes.
fn reads_and_commands(
    s: &mut State,
    method: &str,
    parts: &[&str],
    req: &HttpRequest,
    body: &[u8],
) -> Option<HttpResponse> {
    let q: std::collections::HashMap<String, String> =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default();
    let ok = |v: Value| {
        HttpResponse::Ok()
            .insert_header(("X-RateLimit-Limit", "5"))
            .insert_header(("X-RateLimit-Remaining", "4"))
            .insert_header(("X-RateLimit-Reset-After", "1.000"))
            .json(v)
    };
    match (method, parts) {
        ("GET", ["api", "v10", "channels", ch, "messages"]) => {
            let limit: usize = match q.get("limit").map(|l| l.parse::<usize>()) {
                None => 50,
                Some(Ok(n)) if (1..=100).contains(&n) => n,
                Some(_) => {
                    return Some(rest_error(
                        400,
                        json!({"message": "Invalid Form Body", "code": 50035,
                        "errors": {"limit": {"_errors": [{"code": "NUMBER_TYPE_MAX",
                            "message": "int value should be less than or equal to 100."}]}}}),
                    ))
                }
            };
            let before = q.get("before").and_then(|b| b.parse::<u64>().ok());
            let after = q.get("after").and_then(|b| b.parse::<u64>().ok());
            let mut msgs: Vec<&(String, u64, Value)> = s
                .log
                .iter()
                .filter(|(c, n, _)| {
                    c == ch && before.is_none_or(|b| *n < b) && after.is_none_or(|a| *n > a)
                })
                .collect();
            msgs.sort_by_key(|m| std::cmp::Reverse(m.1));
            Some(ok(Value::Array(
                msgs.into_iter().take(limit).map(|m| m.2.clone()).collect(),
            )))
        }
        ("GET", ["api", "v10", "applications", "@me"]) => Some(ok(
            json!({"id": BOT_ID, "name": "Flotilla", "bot_public": true, "flags": 0}),
        )),
        ("GET", ["api", "v10", "applications", app, "commands"]) if *app == BOT_ID => {
            s.command_reads += 1;
            Some(ok(Value::Array(s.commands.clone())))
        }
        ("PUT", ["api", "v10", "applications", app, "commands"]) if *app == BOT_ID => {
            let list: Value = serde_json::from_slice(body).unwrap_or_default();
            let Some(list) = list.as_array() else {
                return Some(rest_error(
                    400,
                    json!({"message": "Invalid Form Body", "code": 50035}),
                ));
            };
            if let Some(e) = commands_problem(list) {
                return Some(rest_error(
                    400,
                    json!({"message": "Invalid Form Body", "code": 50035,
                        "errors": {"_errors": [{"code": "APPLICATION_COMMAND_INVALID", "message": e}]}}),
                ));
            }
            s.command_writes += 1;
            s.commands = list
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut c = c.clone();
                    c["id"] = json!(format!("{}", 1_300_000_000_000_000_000u64 + i as u64));
                    c["application_id"] = json!(BOT_ID);
                    c["version"] = json!("1");
                    c["default_member_permissions"] = Value::Null;
                    c["type"] = json!(c["type"].as_i64().unwrap_or(1));
                    c
                })
                .collect();
            Some(ok(Value::Array(s.commands.clone())))
        }
        _ => None,
    }
}

/// Why Discord would refuse this command list ("Application Command Naming", field limits).
fn commands_problem(list: &[Value]) -> Option<String> {
    if list.len() > 100 {
        return Some("at most 100 global commands".into());
    }
    let name_ok = |n: &str| {
        (1..=32).contains(&n.chars().count())
            && n.chars().all(|c| {
                c == '-' || c == '_' || c.is_numeric() || (c.is_alphabetic() && !c.is_uppercase())
            })
    };
    let mut seen = std::collections::HashSet::new();
    for c in list {
        let name = c["name"].as_str().unwrap_or_default();
        if !name_ok(name) {
            return Some(format!("invalid command name {name:?}"));
        }
        if !seen.insert(name.to_string()) {
            return Some(format!("duplicate command name {name:?}"));
        }
        let d = c["description"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .count();
        if c["type"].as_i64().unwrap_or(1) == 1 && !(1..=100).contains(&d) {
            return Some(format!("{name}: description must be 1-100 characters"));
        }
        let options = c["options"].as_array().cloned().unwrap_or_default();
        if options.len() > 25 {
            return Some(format!("{name}: at most 25 options"));
        }
        let mut optional_seen = false;
        for o in &options {
            let on = o["name"].as_str().unwrap_or_default();
            if !name_ok(on)
                || !(1..=100).contains(
                    &o["description"]
                        .as_str()
                        .unwrap_or_default()
                        .chars()
                        .count(),
                )
            {
                return Some(format!("{name}: invalid option {on:?}"));
            }
            let required = o["required"].as_bool().unwrap_or(false);
            if required && optional_seen {
                return Some(format!(
                    "{name}: required options must come before optional ones"
                ));
            }
            optional_seen |= !required;
        }
    }
    None
}

/// A message object as Discord answers it, with its parsed mentions.
fn message_json(id: &str, channel: &str, content: &str, pinged: &[String]) -> Value {
    let users: Vec<Value> = pinged
        .iter()
        .filter_map(|p| p.strip_prefix("user:"))
        .map(|id| json!({"id": id, "username": "someone"}))
        .collect();
    let roles: Vec<&str> = pinged
        .iter()
        .filter_map(|p| p.strip_prefix("role:"))
        .collect();
    json!({"id": id, "channel_id": channel, "content": content, "type": 0,
        "author": {"id": BOT_ID, "bot": true}, "mentions": users, "mention_roles": roles,
        "mention_everyone": pinged.iter().any(|p| p == "everyone")})
}

fn rest_error(status: u16, body: Value) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status")).json(body)
}

async fn dispatch(
    req: HttpRequest,
    stream: web::Payload,
    st: web::Data<Shared>,
) -> Result<HttpResponse, actix_web::Error> {
    let path = req.path().to_string();
    if path.starts_with("/gateway") {
        let session = GwSession {
            state: st.get_ref().clone(),
            identified: false,
        };
        return ws::start(session, &req, stream);
    }
    let body = stream.to_bytes().await.unwrap_or_default();
    if req.method() == actix_web::http::Method::PATCH {
        let gate = {
            let mut s = lock(&st);
            let gate = s.edits_open.clone().filter(|g| !*g.borrow());
            if gate.is_some() {
                s.edits_waiting += 1;
            }
            gate
        };
        if let Some(mut g) = gate {
            let _ = g.wait_for(|open| *open).await;
            lock(&st).edits_waiting -= 1;
        }
    }
    let mut s = lock(&st);
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let ua = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !(ua.starts_with("DiscordBot (") && ua.contains(')')) {
        s.blocked += 1;
        return Ok(HttpResponse::Forbidden().body("error code: 1010"));
    }
    if auth != Some(format!("Bot {}", s.token).as_str()) {
        return Ok(rest_error(
            401,
            json!({"message": "401: Unauthorized", "code": 0}),
        ));
    }
    if let Some(left) = s
        .global_until
        .and_then(|t| t.checked_duration_since(std::time::Instant::now()))
    {
        s.rate_limited += 1;
        let secs = left.as_secs_f64();
        return Ok(HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", format!("{}", secs.ceil() as u64)))
            .insert_header(("X-RateLimit-Global", "true"))
            .insert_header(("X-RateLimit-Scope", "global"))
            .json(json!({"message": "You are being rate limited.", "retry_after": (secs * 1000.0).round() / 1000.0, "global": true})));
    }
    if s.limited > 0 {
        s.limited -= 1;
        s.rate_limited += 1;
        let secs = s.limit_secs;
        return Ok(HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", format!("{}", secs.ceil() as u64)))
            .insert_header(("X-RateLimit-Limit", "5"))
            .insert_header(("X-RateLimit-Remaining", "0"))
            .insert_header(("X-RateLimit-Reset-After", format!("{secs:.3}")))
            .insert_header(("X-RateLimit-Bucket", "fakebucket"))
            .insert_header(("X-RateLimit-Scope", "user"))
            .json(json!({"message": "You are being rate limited.", "retry_after": secs, "global": false})));
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let bucket = match take_bucket(&mut s, req.method().as_str(), &parts) {
        Ok(h) => h,
        Err(limited) => return Ok(*limited),
    };
    if let Some(answer) = reads_and_commands(&mut s, req.method().as_str(), &parts, &req, &body) {
        return Ok(with_headers(answer, &bucket));
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let content = v["content"].as_str().unwrap_or_default().to_string();
    if content.chars().count() > 2000 {
        return Ok(rest_error(
            400,
            json!({"message": "Invalid Form Body", "code": 50035,
            "errors": {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH",
                "message": "Must be 2000 or fewer in length."}]}}}),
        ));
    }
    if content.is_empty() {
        return Ok(rest_error(
            400,
            json!({"message": "Cannot send an empty message", "code": 50006}),
        ));
    }
    let pinged = match parse_mentions(&content, v.get("allowed_mentions")) {
        Ok(p) => p,
        Err(body) => return Ok(rest_error(400, body)),
    };
    // "Create Message": `nonce` (integer or string, up to 25 characters); with
    // `enforce_nonce`, a message the same author created with it in the past few minutes is
    // answered instead, and none is created.
    let nonce = match &v["nonce"] {
        Value::String(n) => Some(n.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    if nonce.as_ref().is_some_and(|n| n.chars().count() > 25) {
        return Ok(rest_error(
            400,
            json!({"message": "Invalid Form Body", "code": 50035,
            "errors": {"nonce": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH",
                "message": "Must be 25 or fewer in length."}]}}}),
        ));
    }
    let repeat = nonce
        .as_ref()
        .filter(|_| v["enforce_nonce"] == true)
        .and_then(|n| {
            s.nonces
                .iter()
                .rev()
                .find(|(m, at, _)| m == n && at.elapsed() < NONCE_WINDOW)
                .map(|(_, _, msg)| msg.clone())
        });
    let answer = match (req.method().as_str(), parts.as_slice()) {
        ("POST", ["api", "v10", "channels", _, "messages"]) if repeat.is_some() => {
            s.nonce_repeats += 1;
            repeat.unwrap_or_default()
        }
        ("POST", ["api", "v10", "channels", ch, "messages"]) => {
            s.next_id += 1;
            let id = format!("{}", 1_100_000_000_000_000_000u64 + s.next_id);
            s.posted.push(Posted {
                channel: ch.to_string(),
                id: id.clone(),
                content: content.clone(),
                edits: 0,
                pinged: pinged.clone(),
            });
            let mut m = message_json(&id, ch, &content, &pinged);
            if let Some(n) = &nonce {
                m["nonce"] = json!(n);
                s.nonces
                    .push((n.clone(), std::time::Instant::now(), m.clone()));
            }
            let n = id.parse().unwrap_or(0);
            s.log.push((ch.to_string(), n, m.clone()));
            m
        }
        ("PATCH", ["api", "v10", "channels", ch, "messages", mid]) => {
            let Some(m) = s
                .posted
                .iter_mut()
                .find(|m| m.channel == *ch && m.id == *mid)
            else {
                return Ok(rest_error(
                    404,
                    json!({"message": "Unknown Message", "code": 10008}),
                ));
            };
            m.content = content.clone();
            m.edits += 1;
            m.pinged.extend(pinged.iter().cloned());
            let m = message_json(mid, ch, &content, &pinged);
            if let Some(l) = s.log.iter_mut().find(|l| l.0 == *ch && l.2["id"] == *mid) {
                l.2 = m.clone();
            }
            m
        }
        _ => {
            return Ok(rest_error(
                404,
                json!({"message": "404: Not Found", "code": 0}),
            ))
        }
    };
    Ok(with_headers(
        HttpResponse::Ok()
            .insert_header(("X-RateLimit-Limit", "5"))
            .insert_header(("X-RateLimit-Remaining", "4"))
            .insert_header(("X-RateLimit-Reset-After", "1.000"))
            .insert_header(("X-RateLimit-Bucket", "fakebucket"))
            .json(answer),
        &bucket,
    ))
}

impl FakeDiscord {
    /// Starts the fake on `127.0.0.1:0` for bot `token`; the gateway asks for a heartbeat
    /// every `heartbeat_ms`.
    pub async fn start(token: &str, heartbeat_ms: u64) -> FakeDiscord {
        let state = Arc::new(Mutex::new(State {
            token: token.to_string(),
            heartbeat_ms,
            limit_secs: 1.0,
            ..State::default()
        }));
        let data = web::Data::new(state.clone());
        let server = FakeServer::start(move |cfg| {
            cfg.app_data(data.clone())
                .default_service(web::to(dispatch));
        });
        let gateway_url = format!("ws://127.0.0.1:{}/gateway", server.port());
        lock(&state).self_url = gateway_url.clone();
        FakeDiscord {
            api_url: server.url("/api/v10"),
            gateway_url,
            state,
            edits_gate: Mutex::new(None),
            _server: server,
        }
    }

    /// Dispatches `MESSAGE_CREATE` from `author` in `channel` (a guild channel when
    /// `guild` is set, else a DM) to every identified connection; returns the message id.
    pub fn message_create(
        &self,
        channel: &str,
        guild: Option<&str>,
        author: &str,
        content: &str,
    ) -> String {
        self.create(channel, guild, author, content, None)
    }

    /// Dispatches `MESSAGE_CREATE` for a *reply* (Message resource: type 19 `REPLY`, a
    /// `message_reference` of type 0 `DEFAULT` naming the message, its channel and guild, and
    /// the `referenced_message` object when the fake knows it) from `author` to message
    /// `to` in `channel`; returns the reply's id. Unmentioned, as a phone's reply is.
    pub fn message_reply(
        &self,
        channel: &str,
        guild: Option<&str>,
        author: &str,
        content: &str,
        to: &str,
    ) -> String {
        self.create(channel, guild, author, content, Some(to))
    }

    fn create(
        &self,
        channel: &str,
        guild: Option<&str>,
        author: &str,
        content: &str,
        reply_to: Option<&str>,
    ) -> String {
        let mut s = lock(&self.state);
        s.next_id += 1;
        let id = format!("{}", 1_100_000_000_000_000_000u64 + s.next_id);
        let mut d = json!({"id": id, "channel_id": channel, "content": content, "type": 0,
            "author": {"id": author, "username": "user", "bot": false}, "mentions": [],
            "timestamp": "2026-01-01T00:00:00+00:00"});
        if let Some(g) = guild {
            d["guild_id"] = json!(g);
            d["member"] = json!({"roles": []});
        }
        if content.contains(&format!("<@{BOT_ID}>")) {
            d["mentions"] = json!([{"id": BOT_ID, "username": "flotilla", "bot": true}]);
        }
        if let Some(to) = reply_to {
            d["type"] = json!(19);
            let mut reference = json!({"type": 0, "message_id": to, "channel_id": channel});
            if let Some(g) = guild {
                reference["guild_id"] = json!(g);
            }
            d["message_reference"] = reference;
            d["referenced_message"] = s
                .posted
                .iter()
                .find(|p| p.id == to && p.channel == channel)
                .map(|p| message_json(&p.id, &p.channel, &p.content, &[]))
                .unwrap_or(Value::Null);
        }
        let n = id.parse().unwrap_or(0);
        s.log.push((channel.to_string(), n, d.clone()));
        let p = GwSession::dispatch(&mut s, "MESSAGE_CREATE", d);
        for a in &s.sessions {
            a.do_send(Push(p.clone()));
        }
        id
    }

    /// Sends op 7 RECONNECT to every connection and closes it.
    pub fn reconnect_all(&self) {
        let sessions = std::mem::take(&mut lock(&self.state).sessions);
        for a in sessions {
            a.do_send(Reconnect);
        }
    }

    /// Messages posted through REST.
    pub fn posted(&self) -> Vec<Posted> {
        lock(&self.state).posted.clone()
    }

    /// For the next `secs`, every REST call meets the global rate limit (429, `global`).
    pub fn limit_global(&self, secs: f64) {
        lock(&self.state).global_until =
            Some(std::time::Instant::now() + std::time::Duration::from_secs_f64(secs));
    }

    /// How many 429s were answered.
    pub fn rate_limited(&self) -> u32 {
        lock(&self.state).rate_limited
    }

    /// The next `n` REST calls answer 429 asking to wait `secs`.
    pub fn limit_next(&self, n: u32, secs: f64) {
        let mut s = lock(&self.state);
        s.limited = n;
        s.limit_secs = secs;
    }

    /// Per-route limits from now on: `limit` requests per `window_secs` for each message
    /// bucket (create, edit, read) of each channel.
    pub fn limit_buckets(&self, limit: u32, window_secs: f64) {
        lock(&self.state).bucket_limit = Some((limit, window_secs));
    }

    /// Edits wait for [`FakeDiscord::release_edits`] before they are answered.
    pub fn hold_edits(&self) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut s = lock(&self.state);
        s.edits_open = Some(rx);
        drop(s);
        *self.edits_gate.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }

    /// Answers the edits held back, and every later one at once.
    pub fn release_edits(&self) {
        if let Some(tx) = self
            .edits_gate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = tx.send(true);
        }
        lock(&self.state).edits_open = None;
    }

    /// Edits received and held back.
    pub fn edits_waiting(&self) -> u32 {
        lock(&self.state).edits_waiting
    }

    /// IDENTIFY asking for the privileged Message Content intent is closed with 4014, as
    /// when the intent is not enabled in the Developer Portal.
    pub fn disallow_message_content(&self) {
        lock(&self.state).no_message_content = true;
    }

    /// REST calls blocked for a missing `DiscordBot (…)` User-Agent.
    pub fn blocked(&self) -> u32 {
        lock(&self.state).blocked
    }

    /// Accepted `PUT /applications/{id}/commands` calls.
    pub fn command_writes(&self) -> u32 {
        lock(&self.state).command_writes
    }

    /// `GET /applications/{id}/commands` calls so far.
    pub fn command_reads(&self) -> u32 {
        lock(&self.state).command_reads
    }

    /// The application's global commands.
    pub fn commands(&self) -> Vec<Value> {
        lock(&self.state).commands.clone()
    }

    /// Adds a message to `channel`'s history without dispatching it (one posted before the
    /// bot was listening); returns its id.
    pub fn add_history(&self, channel: &str, author: &str, content: &str) -> String {
        let mut s = lock(&self.state);
        s.next_id += 1;
        let n = 1_100_000_000_000_000_000u64 + s.next_id;
        let m = json!({"id": n.to_string(), "channel_id": channel, "content": content, "type": 0,
            "author": {"id": author, "username": format!("user{author}"), "bot": false},
            "mentions": [], "timestamp": "2026-01-01T00:00:00+00:00"});
        s.log.push((channel.to_string(), n, m));
        n.to_string()
    }

    /// Creates answered with an earlier message under `enforce_nonce` so far.
    pub fn nonce_repeats(&self) -> u32 {
        lock(&self.state).nonce_repeats
    }

    /// Gateway connections opened so far.
    pub fn connections(&self) -> u32 {
        lock(&self.state).connections
    }

    /// (identifies, resumes, heartbeats) seen by the gateway.
    pub fn gateway_counts(&self) -> (u32, u32, u32) {
        let s = lock(&self.state);
        (s.identifies, s.resumes, s.heartbeats)
    }
}

/// Signs an interaction like Discord: Ed25519 over `timestamp + body` with `secret_key`
/// (32 bytes); returns (`X-Signature-Ed25519`, `X-Signature-Timestamp`).
pub fn sign_interaction(secret_key: &[u8; 32], body: &str) -> (String, String) {
    use ed25519_dalek::Signer;
    let key = ed25519_dalek::SigningKey::from_bytes(secret_key);
    let ts = chrono::Utc::now().timestamp().to_string();
    let sig = key.sign(format!("{ts}{body}").as_bytes());
    (hex::encode(sig.to_bytes()), ts)
}

/// The hex public key for `secret_key` (`discord.public_key`).
pub fn public_key_hex(secret_key: &[u8; 32]) -> String {
    hex::encode(
        ed25519_dalek::SigningKey::from_bytes(secret_key)
            .verifying_key()
            .to_bytes(),
    )
}
