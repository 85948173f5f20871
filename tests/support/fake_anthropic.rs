//! A scripted, stateful fake of Anthropic's Messages API, good enough for the real `claude`
//! CLI to do real work offline (`ANTHROPIC_BASE_URL` = [`FakeAnthropic::url`]).
//!
//! - `POST /v1/messages` (any query string; the CLI sends `?beta=true`):
//!   - a *main turn* — `"stream": true` with a non-empty `tools` list, which is what the CLI's
//!     agent loop sends — consumes the next [`Step`] of the script and is answered with the
//!     Messages API server-sent events (`message_start`, `ping`, `content_block_start` /
//!     `content_block_delta` (`text_delta`, `input_json_delta`) / `content_block_stop`,
//!     `message_delta` with `stop_reason` and `usage.output_tokens`, `message_stop`). An
//!     exhausted script answers `Text("Done.")`.
//!   - any other request (no tools, or `"stream": false`: titles, summaries, quota checks) is a
//!     *side request*: answered with the text `OK` (streamed or as one JSON message) and never
//!     consumes a step.
//! - `POST /v1/messages/count_tokens`: `{"input_tokens": N}` (about a token per 4 bytes).
//! - Anything else: 404 `not_found_error`.
//! - Validation the real API does cheaply: with [`FakeAnthropic::require_api_key`], a missing
//!   or different `x-api-key` answers 401 `authentication_error`; a missing `anthropic-version`
//!   header, a body that is not JSON, or a message request without `model`, `messages` or
//!   `max_tokens` answers 400 `invalid_request_error`. Rejected requests never consume a step
//!   and are not main turns.
//! - Errors have the official shape `{"type":"error","error":{"type","message"},"request_id"}`;
//!   every response carries a `request-id` header; [`Step::Error`] may add `retry-after`.
//! - [`Step::Hang`] holds the request open until the fake is dropped.
//! - Usage: every main answer reports the configured input/output tokens
//!   ([`FakeAnthropic::set_usage`], default 1,200 in / 40 out).
//!
//! Admin helpers are Rust methods, not HTTP.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::fake_server::FakeServer;

/// What the fake answers to one main-turn request.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// One text block, `stop_reason: end_turn`.
    Text(String),
    /// One `tool_use` block (unique id), `stop_reason: tool_use`.
    Tool { name: String, input: Value },
    /// Several `tool_use` blocks in one message (parallel tool use), `stop_reason: tool_use`.
    Tools(Vec<(String, Value)>),
    /// A text block, then a `tool_use` block, `stop_reason: tool_use`.
    TextThenTool {
        text: String,
        name: String,
        input: Value,
    },
    /// That HTTP status with the official error body (`kind` is `error.type`, e.g.
    /// `api_error`, `rate_limit_error`, `overloaded_error`) and an optional `retry-after`.
    Error {
        status: u16,
        kind: String,
        retry_after: Option<u64>,
    },
    /// Accepts the request and never answers while the fake lives.
    Hang,
}

impl Step {
    /// [`Step::Text`].
    pub fn text(s: &str) -> Step {
        Step::Text(s.to_string())
    }

    /// [`Step::Tool`].
    pub fn tool(name: &str, input: Value) -> Step {
        Step::Tool {
            name: name.to_string(),
            input,
        }
    }

    /// [`Step::Tools`].
    pub fn tools(calls: &[(&str, Value)]) -> Step {
        Step::Tools(
            calls
                .iter()
                .map(|(name, input)| (name.to_string(), input.clone()))
                .collect(),
        )
    }

    /// [`Step::TextThenTool`].
    pub fn text_then_tool(text: &str, name: &str, input: Value) -> Step {
        Step::TextThenTool {
            text: text.to_string(),
            name: name.to_string(),
            input,
        }
    }

    /// [`Step::Error`] without `retry-after`.
    pub fn error(status: u16, kind: &str) -> Step {
        Step::Error {
            status,
            kind: kind.to_string(),
            retry_after: None,
        }
    }

    /// 429 `rate_limit_error` with `retry-after: secs`.
    pub fn rate_limited(secs: u64) -> Step {
        Step::Error {
            status: 429,
            kind: "rate_limit_error".into(),
            retry_after: Some(secs),
        }
    }

    /// 529 `overloaded_error`.
    pub fn overloaded() -> Step {
        Step::error(529, "overloaded_error")
    }

    /// A `Write` of `content` to the plan file that Claude Code's plan mode names in its
    /// system prompt (`~/.claude/plans/<slug>.md`, a new name per session): what a model in
    /// plan mode does before `ExitPlanMode`, which carries no plan of its own since 2.1.
    pub fn write_plan(content: &str) -> Step {
        Step::tool("Write", json!({"file_path": PLAN_FILE, "content": content}))
    }
}

/// Stands for the plan file's path in a scripted tool input; see [`Step::write_plan`].
pub const PLAN_FILE: &str = "{{plan_file}}";

/// The plan file Claude Code's plan mode tells the model to write ("… create your plan at
/// /…/.claude/plans/<slug>.md using the Write tool" or "A plan file already exists at …").
fn plan_file_in(body: &Value) -> Option<String> {
    let text = request_text(body);
    text.split_whitespace()
        .map(|w| w.trim_end_matches(['.', ',', ':', ')']))
        .find(|w| w.starts_with('/') && w.contains("/.claude/plans/") && w.ends_with(".md"))
        .map(str::to_string)
}

/// Stands for the agent's working directory in a scripted tool input (a file in the session's
/// worktree, whose path a test does not know before the spawn).
pub const WORKDIR: &str = "{{workdir}}";

/// The working directory Claude Code's system prompt names ("Primary working directory: /…").
fn workdir_in(body: &Value) -> Option<String> {
    let text = request_text(body);
    text.lines().find_map(|l| {
        let (label, path) = l.split_once(": ")?;
        let path = path.trim();
        (label.to_lowercase().ends_with("working directory") && path.starts_with('/'))
            .then(|| path.to_string())
    })
}

/// Finds what a placeholder stands for in a request body.
type Finder = fn(&Value) -> Option<String>;

/// `step` with [`PLAN_FILE`] and [`WORKDIR`] in its tool input replaced by the plan file and
/// the working directory `body` names.
fn with_plan_file(step: Step, body: &Value) -> Step {
    let fill = |input: Value| -> Value {
        let mut text = input.to_string();
        let finders: [(&str, Finder); 2] = [(PLAN_FILE, plan_file_in), (WORKDIR, workdir_in)];
        for (mark, found) in finders {
            if text.contains(mark) {
                if let Some(path) = found(body) {
                    text = text.replace(mark, &path);
                }
            }
        }
        serde_json::from_str(&text).unwrap_or(input)
    };
    match step {
        Step::Tool { name, input } => Step::Tool {
            name,
            input: fill(input),
        },
        Step::TextThenTool { text, name, input } => Step::TextThenTool {
            text,
            name,
            input: fill(input),
        },
        Step::Tools(calls) => Step::Tools(calls.into_iter().map(|(n, i)| (n, fill(i))).collect()),
        other => other,
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method, e.g. `POST`.
    pub method: String,
    /// Path with query string, e.g. `/v1/messages?beta=true`.
    pub path: String,
    /// Headers, names lower-case (`x-api-key` included: the fake's keys are not secrets).
    pub headers: BTreeMap<String, String>,
    /// JSON body (`Null` when there was none or it did not parse).
    pub body: Value,
    /// Whether it was a main turn (consumed a step).
    pub main: bool,
    /// When it arrived.
    pub at: Instant,
}

struct State {
    script: VecDeque<Step>,
    all: Vec<Recorded>,
    api_key: Option<String>,
    input_tokens: u64,
    output_tokens: u64,
    /// Steps the script goes on with once a main request holds the text (see
    /// [`FakeAnthropic::when_told`]).
    when_told: Option<(String, Vec<Step>)>,
}

/// The fake.
pub struct FakeAnthropic {
    url: String,
    state: Arc<Mutex<State>>,
    wake: Arc<tokio::sync::Notify>,
    shutdown: tokio::sync::watch::Sender<bool>,
    /// The server (stopped on drop, after the streams are told to end).
    _server: FakeServer,
}

/// Unique across every fake in the process, so resumed sessions never see a repeated id.
static IDS: AtomicU64 = AtomicU64::new(1);

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn request_id() -> String {
    format!("req_fake{:016}", IDS.fetch_add(1, Ordering::Relaxed))
}

fn api_error(status: u16, kind: &str, message: &str, retry_after: Option<u64>) -> HttpResponse {
    let rid = request_id();
    let mut b =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("valid status"));
    b.insert_header(("request-id", rid.clone()));
    if let Some(s) = retry_after {
        b.insert_header(("retry-after", s.to_string()));
    }
    b.json(json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": rid,
    }))
}

/// Content blocks and stop reason for a step that answers with a message.
fn blocks(step: &Step) -> (Vec<Value>, &'static str) {
    let tool = |name: &str, input: &Value| {
        json!({
            "type": "tool_use",
            "id": format!("toolu_fake{:016}", IDS.fetch_add(1, Ordering::Relaxed)),
            "name": name,
            "input": input,
        })
    };
    match step {
        Step::Text(t) => (vec![json!({"type": "text", "text": t})], "end_turn"),
        Step::Tool { name, input } => (vec![tool(name, input)], "tool_use"),
        Step::Tools(calls) => (calls.iter().map(|(n, i)| tool(n, i)).collect(), "tool_use"),
        Step::TextThenTool { text, name, input } => (
            vec![json!({"type": "text", "text": text}), tool(name, input)],
            "tool_use",
        ),
        Step::Error { .. } | Step::Hang => (Vec::new(), "end_turn"),
    }
}

fn usage(input: u64, output: u64) -> Value {
    json!({
        "input_tokens": input,
        "output_tokens": output,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    })
}

/// Splits a string in two at a character boundary near its middle (the CLI must accumulate
/// partial deltas, as it does against the real API).
fn halves(s: &str) -> (&str, &str) {
    let mut mid = s.len() / 2;
    while !s.is_char_boundary(mid) {
        mid += 1;
    }
    s.split_at(mid)
}

/// The server-sent events of one streamed message.
fn sse(model: &str, content: &[Value], stop: &str, input: u64, output: u64) -> String {
    let id = format!("msg_fake{:016}", IDS.fetch_add(1, Ordering::Relaxed));
    let mut events: Vec<(&str, Value)> = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": usage(input, 1),
            }}),
        ),
        ("ping", json!({"type": "ping"})),
    ];
    for (i, block) in content.iter().enumerate() {
        let (start, deltas) = if block["type"] == "tool_use" {
            let raw = block["input"].to_string();
            let (a, b) = halves(&raw);
            let mut start = block.clone();
            start["input"] = json!({});
            let deltas = [a, b]
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                .collect::<Vec<_>>();
            (start, deltas)
        } else {
            let text = block["text"].as_str().unwrap_or_default();
            let (a, b) = halves(text);
            let deltas = [a, b]
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| json!({"type": "text_delta", "text": p}))
                .collect::<Vec<_>>();
            (json!({"type": "text", "text": ""}), deltas)
        };
        events.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": i, "content_block": start}),
        ));
        for d in deltas {
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": i, "delta": d}),
            ));
        }
        events.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        ));
    }
    events.push((
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": stop, "stop_sequence": null},
               "usage": {"output_tokens": output}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

fn message(model: &str, content: Vec<Value>, stop: &str, input: u64, output: u64) -> Value {
    json!({
        "id": format!("msg_fake{:016}", IDS.fetch_add(1, Ordering::Relaxed)),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage(input, output),
    })
}

fn answer(stream: bool, model: &str, step: &Step, input: u64, output: u64) -> HttpResponse {
    let (content, stop) = blocks(step);
    let mut b = HttpResponse::Ok();
    b.insert_header(("request-id", request_id()));
    if stream {
        b.content_type("text/event-stream")
            .insert_header(("cache-control", "no-cache"))
            .body(sse(model, &content, stop, input, output))
    } else {
        b.json(message(model, content, stop, input, output))
    }
}

/// Whether a message request is a turn of the agent loop (see the module docs).
fn is_main_turn(body: &Value) -> bool {
    body["stream"] == json!(true)
        && body["tools"]
            .as_array()
            .is_some_and(|tools| !tools.is_empty())
}

/// The error the real API would give this request before looking at the model, if any.
fn reject(
    req: &HttpRequest,
    parsed: Option<&Value>,
    api_key: Option<&str>,
    is_count: bool,
) -> Option<HttpResponse> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    if let Some(key) = api_key {
        if header("x-api-key") != Some(key) {
            return Some(api_error(
                401,
                "authentication_error",
                "invalid x-api-key",
                None,
            ));
        }
    }
    if header("anthropic-version").is_none() {
        return Some(api_error(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
            None,
        ));
    }
    let Some(body) = parsed.filter(|b| b.is_object()) else {
        return Some(api_error(
            400,
            "invalid_request_error",
            "The request body is not valid JSON.",
            None,
        ));
    };
    let required: &[&str] = if is_count {
        &["model", "messages"]
    } else {
        &["model", "messages", "max_tokens"]
    };
    required
        .iter()
        .find(|k| body.get(**k).is_none())
        .map(|missing| {
            api_error(
                400,
                "invalid_request_error",
                &format!("{missing}: Field required"),
                None,
            )
        })
}

type Shared = (
    Arc<Mutex<State>>,
    Arc<tokio::sync::Notify>,
    tokio::sync::watch::Receiver<bool>,
);

async fn dispatch(req: HttpRequest, body: web::Bytes, st: web::Data<Shared>) -> HttpResponse {
    let (state, wake, shutdown) = (&st.0, &st.1, &st.2);
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let post = req.method() == actix_web::http::Method::POST;
    let is_messages = post && req.path() == "/v1/messages";
    let is_count = post && req.path() == "/v1/messages/count_tokens";
    let api_key = lock(state).api_key.clone();
    let rejection = if is_messages || is_count {
        reject(&req, parsed.as_ref(), api_key.as_deref(), is_count)
    } else {
        Some(api_error(404, "not_found_error", "Not found", None))
    };
    let main = rejection.is_none() && is_messages && parsed.as_ref().is_some_and(is_main_turn);
    let (step, input, output) = {
        let mut s = lock(state);
        s.all.push(Recorded {
            method: req.method().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.path().to_string(), |p| p.to_string()),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: parsed.clone().unwrap_or(Value::Null),
            main,
            at: Instant::now(),
        });
        let told = main
            && s.when_told.as_ref().is_some_and(|(needle, _)| {
                parsed
                    .as_ref()
                    .is_some_and(|b| b.to_string().contains(needle.as_str()))
            });
        if told {
            let (_, steps) = s.when_told.take().unwrap_or_default();
            s.script.extend(steps);
        }
        let step = if main {
            s.script.pop_front().unwrap_or_else(|| Step::text("Done."))
        } else {
            Step::text("OK")
        };
        (step, s.input_tokens, s.output_tokens)
    };
    wake.notify_waiters();
    if let Some(r) = rejection {
        return r;
    }
    let body = parsed.unwrap_or_default();
    if is_count {
        let mut b = HttpResponse::Ok();
        b.insert_header(("request-id", request_id()));
        return b.json(json!({"input_tokens": (body.to_string().len() / 4).max(1)}));
    }
    let model = body["model"].as_str().unwrap_or("claude-sonnet-4-5");
    let step = with_plan_file(step, &body);
    match &step {
        Step::Error {
            status,
            kind,
            retry_after,
        } => api_error(*status, kind, "Scripted error from the fake", *retry_after),
        Step::Hang => {
            let mut rx = shutdown.clone();
            // Ends only when the fake is dropped (the sender says so or goes away).
            let _ = rx.wait_for(|stop| *stop).await;
            api_error(529, "overloaded_error", "The fake was dropped", None)
        }
        _ if main => answer(true, model, &step, input, output),
        _ => answer(body["stream"] == json!(true), model, &step, 10, 1),
    }
}

/// All human-readable text of one request: system prompt, text blocks, tool results and
/// tool-use inputs, one per line.
pub fn request_text(body: &Value) -> String {
    fn push_content(out: &mut Vec<String>, content: &Value) {
        match content {
            Value::String(s) => out.push(s.clone()),
            Value::Array(blocks) => {
                for b in blocks {
                    match b["type"].as_str() {
                        Some("text") => out.push(b["text"].as_str().unwrap_or_default().into()),
                        Some("tool_result") => push_content(out, &b["content"]),
                        Some("tool_use") => out.push(format!(
                            "{} {}",
                            b["name"].as_str().unwrap_or("?"),
                            b["input"]
                        )),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    push_content(&mut out, &body["system"]);
    for m in body["messages"].as_array().into_iter().flatten() {
        push_content(&mut out, &m["content"]);
    }
    out.join("\n")
}

impl FakeAnthropic {
    /// Starts on 127.0.0.1 with that script.
    pub async fn start(script: Vec<Step>) -> FakeAnthropic {
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            all: Vec::new(),
            api_key: None,
            input_tokens: 1200,
            output_tokens: 40,
            when_told: None,
        }));
        let wake = Arc::new(tokio::sync::Notify::new());
        let (shutdown, rx) = tokio::sync::watch::channel(false);
        let data = web::Data::new((state.clone(), wake.clone(), rx));
        let server = FakeServer::start(move |cfg| {
            cfg.app_data(data.clone())
                .default_service(web::to(dispatch));
        });
        FakeAnthropic {
            url: server.url(""),
            state,
            wake,
            shutdown,
            _server: server,
        }
    }

    /// Base URL without `/v1` (`ANTHROPIC_BASE_URL`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// From now on, requests without exactly this `x-api-key` answer 401.
    pub fn require_api_key(&self, key: &str) {
        lock(&self.state).api_key = Some(key.to_string());
    }

    /// Token counts every later main answer reports.
    pub fn set_usage(&self, input_tokens: u64, output_tokens: u64) {
        let mut s = lock(&self.state);
        s.input_tokens = input_tokens;
        s.output_tokens = output_tokens;
    }

    /// Appends steps to the script.
    pub fn push(&self, steps: Vec<Step>) {
        lock(&self.state).script.extend(steps);
    }

    /// Goes on with `steps` once a main request holds `needle` (as serialized JSON), after
    /// what is left of the script: a model that acts on an instruction only once it is in its
    /// conversation, in whichever request the CLI puts it.
    pub fn when_told(&self, needle: &str, steps: Vec<Step>) {
        lock(&self.state).when_told = Some((needle.to_string(), steps));
    }

    /// Steps not consumed yet.
    pub fn remaining(&self) -> usize {
        lock(&self.state).script.len()
    }

    /// Every main-turn request body, in order (errors and hangs included).
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.state)
            .all
            .iter()
            .filter(|r| r.main)
            .map(|r| r.body.clone())
            .collect()
    }

    /// Every request, main or not, in order.
    pub fn all_requests(&self) -> Vec<Recorded> {
        lock(&self.state).all.clone()
    }

    /// [`request_text`] of the last main request (empty when there was none).
    pub fn last_request_text(&self) -> String {
        self.requests().last().map(request_text).unwrap_or_default()
    }

    /// Whether any main request's text holds `needle`.
    pub fn request_contains(&self, needle: &str) -> bool {
        self.requests()
            .iter()
            .any(|b| request_text(b).contains(needle))
    }

    /// Waits until at least `n` main requests arrived; panics with what came after `deadline`.
    pub async fn wait_for_requests(&self, n: usize, deadline: Duration) -> Vec<Value> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                panic!(
                    "waited {deadline:?} for {n} main requests to the fake Anthropic API, got {}",
                    self.requests().len()
                );
            }
        }
    }
}

impl Drop for FakeAnthropic {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
