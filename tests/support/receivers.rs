//! Stateful fakes of the services notifications go to, on `127.0.0.1:0`, speaking their real
//! wire formats (shared/reference/wire-formats.md §2–4) and checking what they are sent:
//!
//! | path | fake of | success | errors it can answer |
//! |---|---|---|---|
//! | `/slack/api/chat.postMessage` | Slack Web API | `{"ok":true,"channel","ts","message"}` | `{"ok":false,"error":"invalid_auth"}` (200), 429 + `Retry-After` + `ratelimited` |
//! | `/slack/hooks/{..}` | Slack incoming webhook | 200 `ok` | 400 `invalid_payload`, 500 `rollup_error`, 429 |
//! | `/discord/api/channels/{id}/messages` | Discord REST | 200 message object | 403 without a `DiscordBot (…)` User-Agent, 401, 400, 429 `{"message","retry_after","global"}` + `Retry-After`, `X-RateLimit-*` |
//! | `/discord/webhooks/{id}/{token}` | Discord webhook | 204 | as above |
//! | `/telegram/bot{token}/sendMessage` | Telegram Bot API | `{"ok":true,"result":{…}}` | `{"ok":false,"error_code","description","parameters":{"retry_after"}}` |
//! | `/webhook` | a Flotilla webhook consumer | 200 | 401 on a bad `X-Flotilla-Signature-256`, 400 without the INTERFACE fields |
//!
//! Each target can be scripted to fail its next requests (500, then 429 with a wait…) and to
//! answer slowly. Accepted deliveries are recorded in arrival order; the webhook receiver
//! dedupes on the body's `id` the way a real consumer would, and counts repeats.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use flotilla::clock::Clock;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::fake_server::FakeServer;

/// Bot token the Slack fake accepts.
pub const SLACK_TOKEN: &str = "xoxb-test-token";
/// Bot token the Discord fake accepts.
pub const DISCORD_TOKEN: &str = "discord-test-token";
/// Bot token the Telegram fake accepts.
pub const TELEGRAM_TOKEN: &str = "123456:telegram-test-token";
/// Secret the webhook fake verifies signatures with.
pub const WEBHOOK_SECRET: &str = "webhook-test-secret";

/// Which fake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// `chat.postMessage`.
    Slack,
    /// A Slack incoming webhook.
    SlackHook,
    /// Discord channel messages.
    Discord,
    /// A Discord webhook.
    DiscordHook,
    /// Telegram `sendMessage`.
    Telegram,
    /// A Flotilla webhook consumer.
    Webhook,
}

/// A scripted answer for the next request to a target.
#[derive(Debug, Clone, Copy)]
pub enum Scripted {
    /// HTTP 500.
    ServerError,
    /// A rate limit asking to wait this many seconds, in the target's own format.
    RateLimited(f64),
}

/// One request that reached a fake.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Which fake.
    pub target: Target,
    /// When it was answered, on the receivers' clock (see [`Receivers::use_clock`]).
    pub at: DateTime<Utc>,
    /// Status answered.
    pub status: u16,
    /// The JSON body.
    pub body: Value,
}

#[derive(Default)]
struct State {
    script: HashMap<Target, VecDeque<Scripted>>,
    delay: HashMap<Target, Duration>,
    /// Targets holding every request until released.
    held: std::collections::HashSet<Target>,
    hits: Vec<Hit>,
    /// Requests that arrived, per target (answered or not).
    arrived: HashMap<Target, usize>,
    /// Webhook ids accepted, with how many times each came.
    webhook_ids: BTreeMap<String, usize>,
    next_id: u64,
    /// What [`Hit::at`] reads.
    clock: Clock,
}

/// The running fakes.
pub struct Receivers {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    state: Arc<Mutex<State>>,
    /// The server (stopped on drop).
    _server: FakeServer,
}

type Shared = web::Data<Arc<Mutex<State>>>;

impl Receivers {
    /// Starts every fake on one ephemeral port, on the current actix system.
    pub async fn start() -> Receivers {
        let state = Arc::new(Mutex::new(State::default()));
        let data = web::Data::new(state.clone());
        let routes = move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(data.clone())
                .route("/slack/api/chat.postMessage", web::post().to(slack_post))
                .route("/slack/hooks/{tail:.*}", web::post().to(slack_hook))
                .route(
                    "/discord/api/channels/{id}/messages",
                    web::post().to(discord_post),
                )
                .route(
                    "/discord/webhooks/{id}/{token}",
                    web::post().to(discord_hook),
                )
                .route("/telegram/{bot}/sendMessage", web::post().to(telegram_send))
                .route("/webhook", web::post().to(webhook));
        };
        let server = FakeServer::start_with(routes, 2);
        Receivers {
            base: server.url(""),
            state,
            _server: server,
        }
    }

    /// Times hits on `clock` (the application's), so a test that moves the application's
    /// time measures the waits the application kept on it.
    pub fn use_clock(&self, clock: Clock) {
        self.lock().clock = clock;
    }

    /// Config lines pointing Slack, Discord and Telegram at the fakes, with their tokens.
    pub fn service_yaml(&self) -> String {
        format!(
            "slack: {{ api_url: \"{b}/slack/api\", bot_token: \"{SLACK_TOKEN}\" }}\n\
             discord: {{ api_url: \"{b}/discord/api\", bot_token: \"{DISCORD_TOKEN}\" }}\n\
             telegram: {{ api_url: \"{b}/telegram\", bot_token: \"{TELEGRAM_TOKEN}\" }}\n",
            b = self.base
        )
    }

    /// The URL of the webhook fake.
    pub fn webhook_url(&self) -> String {
        format!("{}/webhook", self.base)
    }

    /// Makes the next requests to `target` answer `answers`, in order.
    pub fn script(&self, target: Target, answers: &[Scripted]) {
        self.lock()
            .script
            .entry(target)
            .or_default()
            .extend(answers.iter().copied());
    }

    /// Makes `target` wait this long before answering.
    pub fn delay(&self, target: Target, d: Duration) {
        self.lock().delay.insert(target, d);
    }

    /// Every request to `target`, in arrival order.
    pub fn hits(&self, target: Target) -> Vec<Hit> {
        self.lock()
            .hits
            .iter()
            .filter(|h| h.target == target)
            .cloned()
            .collect()
    }

    /// The accepted (2xx) requests to `target`.
    pub fn delivered(&self, target: Target) -> Vec<Hit> {
        self.hits(target)
            .into_iter()
            .filter(|h| (200..300).contains(&h.status))
            .collect()
    }

    /// Holds every request to `target` (arrived, unanswered) until [`Receivers::release`].
    pub fn hold(&self, target: Target) {
        self.lock().held.insert(target);
    }

    /// Lets held requests to `target` (and later ones) be answered.
    pub fn release(&self, target: Target) {
        self.lock().held.remove(&target);
    }

    /// Requests to `target` that arrived and are not answered yet.
    pub fn in_flight(&self, target: Target) -> usize {
        let st = self.lock();
        let answered = st.hits.iter().filter(|h| h.target == target).count();
        st.arrived.get(&target).copied().unwrap_or(0) - answered
    }

    /// Ids the webhook fake accepted, with how many times each arrived.
    pub fn webhook_ids(&self) -> BTreeMap<String, usize> {
        self.lock().webhook_ids.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts the arrival, waits the target's delay, then takes its next scripted answer (if any).
async fn prologue(s: &Shared, target: Target) -> Option<Scripted> {
    let delay = {
        let mut st = lock(s);
        *st.arrived.entry(target).or_default() += 1;
        st.delay.get(&target).copied()
    };
    while lock(s).held.contains(&target) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    lock(s)
        .script
        .get_mut(&target)
        .and_then(VecDeque::pop_front)
}

fn record(s: &Shared, target: Target, status: u16, body: &Value) {
    let mut st = lock(s);
    let at = st.clock.now();
    st.hits.push(Hit {
        target,
        at,
        status,
        body: body.clone(),
    });
}

fn next_id(s: &Shared) -> u64 {
    let mut st = lock(s);
    st.next_id += 1;
    st.next_id
}

fn parse(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice(bytes).ok()
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> &'a str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

// ---- Slack ----------------------------------------------------------------------------------

async fn slack_post(s: Shared, req: HttpRequest, bytes: web::Bytes) -> HttpResponse {
    let script = prologue(&s, Target::Slack).await;
    let body = parse(&bytes).unwrap_or(Value::Null);
    // Web API errors come inside a 200: `accepted` says whether a message was posted.
    let (resp, accepted) = match script {
        Some(Scripted::ServerError) => (HttpResponse::InternalServerError().finish(), false),
        Some(Scripted::RateLimited(secs)) => (
            HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", format!("{}", secs.ceil())))
                .json(json!({"ok": false, "error": "ratelimited"})),
            false,
        ),
        None if header(&req, "authorization") != format!("Bearer {SLACK_TOKEN}") => (
            HttpResponse::Ok().json(json!({"ok": false, "error": "invalid_auth"})),
            false,
        ),
        None if !body["channel"].is_string() => (
            HttpResponse::Ok().json(json!({"ok": false, "error": "channel_not_found"})),
            false,
        ),
        None if !body["text"].is_string() && !body["blocks"].is_array() => (
            HttpResponse::Ok().json(json!({"ok": false, "error": "no_text"})),
            false,
        ),
        None => {
            let ts = format!("1503435956.{:06}", next_id(&s));
            (
                HttpResponse::Ok().json(json!({
                    "ok": true, "channel": body["channel"], "ts": ts,
                    "message": {"text": body["text"], "username": "flotilla",
                        "bot_id": "B123ABC456", "type": "message", "subtype": "bot_message",
                        "ts": ts},
                })),
                true,
            )
        }
    };
    let status = if accepted {
        200
    } else {
        400.max(resp.status().as_u16())
    };
    record(&s, Target::Slack, status, &body);
    resp
}

async fn slack_hook(s: Shared, bytes: web::Bytes) -> HttpResponse {
    let script = prologue(&s, Target::SlackHook).await;
    let body = parse(&bytes).unwrap_or(Value::Null);
    let resp = match script {
        Some(Scripted::ServerError) => HttpResponse::InternalServerError().body("rollup_error"),
        Some(Scripted::RateLimited(secs)) => HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", format!("{}", secs.ceil())))
            .body("rate_limited"),
        None if !body["text"].is_string() => HttpResponse::BadRequest().body("invalid_payload"),
        None => HttpResponse::Ok().content_type("text/plain").body("ok"),
    };
    record(&s, Target::SlackHook, resp.status().as_u16(), &body);
    resp
}

// ---- Discord --------------------------------------------------------------------------------

fn discord_limited(secs: f64) -> HttpResponse {
    HttpResponse::TooManyRequests()
        .insert_header(("Retry-After", format!("{}", secs.ceil())))
        .insert_header(("X-RateLimit-Limit", "5"))
        .insert_header(("X-RateLimit-Remaining", "0"))
        .insert_header(("X-RateLimit-Reset-After", format!("{secs:.3}")))
        .insert_header(("X-RateLimit-Bucket", "fake-bucket"))
        .insert_header(("X-RateLimit-Scope", "user"))
        .json(
            json!({"message": "You are being rate limited.", "retry_after": secs, "global": false}),
        )
}

/// Discord (API reference, "User Agent") requires bots to send `DiscordBot ($url,
/// $versionNumber)`; requests without it "may be blocked": this fake always blocks them.
fn discord_user_agent_ok(req: &HttpRequest) -> bool {
    let ua = header(req, "user-agent");
    ua.starts_with("DiscordBot (") && ua.contains(')')
}

fn discord_check(body: &Value) -> Option<HttpResponse> {
    let content = body["content"].as_str().unwrap_or("");
    if content.is_empty() || content.chars().count() > 2000 {
        return Some(HttpResponse::BadRequest().json(json!({
            "message": "Invalid Form Body", "code": 50035,
            "errors": {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH",
                "message": "Must be 2000 or fewer in length."}]}},
        })));
    }
    None
}

async fn discord_post(
    s: Shared,
    req: HttpRequest,
    path: web::Path<String>,
    bytes: web::Bytes,
) -> HttpResponse {
    let script = prologue(&s, Target::Discord).await;
    let body = parse(&bytes).unwrap_or(Value::Null);
    let resp = match script {
        Some(Scripted::ServerError) => HttpResponse::InternalServerError().finish(),
        Some(Scripted::RateLimited(secs)) => discord_limited(secs),
        None if !discord_user_agent_ok(&req) => HttpResponse::Forbidden().body("error code: 1010"),
        None if header(&req, "authorization") != format!("Bot {DISCORD_TOKEN}") => {
            HttpResponse::Unauthorized().json(json!({"message": "401: Unauthorized", "code": 0}))
        }
        None => discord_check(&body).unwrap_or_else(|| {
            HttpResponse::Ok().json(json!({
                "id": next_id(&s).to_string(), "channel_id": path.into_inner(),
                "content": body["content"], "nonce": body["nonce"], "type": 0,
            }))
        }),
    };
    record(&s, Target::Discord, resp.status().as_u16(), &body);
    resp
}

async fn discord_hook(s: Shared, req: HttpRequest, bytes: web::Bytes) -> HttpResponse {
    let script = prologue(&s, Target::DiscordHook).await;
    let body = parse(&bytes).unwrap_or(Value::Null);
    let resp = match script {
        Some(Scripted::ServerError) => HttpResponse::InternalServerError().finish(),
        Some(Scripted::RateLimited(secs)) => discord_limited(secs),
        None if !discord_user_agent_ok(&req) => HttpResponse::Forbidden().body("error code: 1010"),
        None => discord_check(&body).unwrap_or_else(|| HttpResponse::NoContent().finish()),
    };
    record(&s, Target::DiscordHook, resp.status().as_u16(), &body);
    resp
}

// ---- Telegram -------------------------------------------------------------------------------

/// Whether `text` is valid MarkdownV2 for what we send: every reserved character escaped,
/// except the `*` pairs of bold.
pub fn markdown_v2_ok(text: &str) -> bool {
    let mut chars = text.chars();
    let mut stars = 0;
    while let Some(c) = chars.next() {
        match c {
            // The guard consumes the escaped character; a trailing backslash is an error.
            '\\' if chars.next().is_none() => return false,
            '\\' => {}
            '*' => stars += 1,
            '_' | '[' | ']' | '(' | ')' | '~' | '`' | '>' | '#' | '+' | '-' | '=' | '|' | '{'
            | '}' | '.' | '!' => return false,
            _ => {}
        }
    }
    stars % 2 == 0
}

async fn telegram_send(s: Shared, path: web::Path<String>, bytes: web::Bytes) -> HttpResponse {
    let script = prologue(&s, Target::Telegram).await;
    let body = parse(&bytes).unwrap_or(Value::Null);
    let text = body["text"].as_str().unwrap_or("");
    let error = |code: u16, description: &str| {
        HttpResponse::build(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST))
            .json(json!({"ok": false, "error_code": code, "description": description}))
    };
    let resp = match script {
        Some(Scripted::ServerError) => error(500, "Internal Server Error"),
        Some(Scripted::RateLimited(secs)) => {
            let n = secs.ceil() as u64;
            HttpResponse::TooManyRequests().json(json!({
                "ok": false, "error_code": 429,
                "description": format!("Too Many Requests: retry after {n}"),
                "parameters": {"retry_after": n},
            }))
        }
        None if path.as_str() != format!("bot{TELEGRAM_TOKEN}") => error(401, "Unauthorized"),
        None if body["chat_id"].is_null() => error(400, "Bad Request: chat not found"),
        None if text.is_empty() || text.chars().count() > 4096 => {
            error(400, "Bad Request: message is too long")
        }
        None if body["parse_mode"] == "MarkdownV2" && !markdown_v2_ok(text) => {
            error(400, "Bad Request: can't parse entities")
        }
        None => HttpResponse::Ok().json(json!({
            "ok": true,
            "result": {"message_id": next_id(&s), "date": 1_700_000_000,
                "chat": {"id": body["chat_id"], "type": "private"}, "text": text},
        })),
    };
    record(&s, Target::Telegram, resp.status().as_u16(), &body);
    resp
}

// ---- Flotilla webhook consumer ---------------------------------------------------------------

fn signed(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn webhook(s: Shared, req: HttpRequest, bytes: web::Bytes) -> HttpResponse {
    let script = prologue(&s, Target::Webhook).await;
    let body = parse(&bytes).unwrap_or(Value::Null);
    let signature_ok = header(&req, "x-flotilla-signature-256") == signed(WEBHOOK_SECRET, &bytes);
    let fields_ok = ["id", "priority", "event", "session", "message"]
        .iter()
        .all(|k| body.get(*k).is_some());
    let resp = match script {
        Some(Scripted::ServerError) => HttpResponse::InternalServerError().body("boom"),
        Some(Scripted::RateLimited(secs)) => HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", format!("{}", secs.ceil())))
            .body("slow down"),
        None if !signature_ok => HttpResponse::Unauthorized().body("bad signature"),
        None if !fields_ok => HttpResponse::BadRequest().body("missing fields"),
        None => {
            if let Some(id) = body["id"].as_str() {
                *lock(&s).webhook_ids.entry(id.to_string()).or_default() += 1;
            }
            HttpResponse::Ok().json(json!({"received": body["id"]}))
        }
    };
    record(&s, Target::Webhook, resp.status().as_u16(), &body);
    resp
}
