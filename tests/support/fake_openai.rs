//! A scripted, stateful fake of the OpenAI model APIs, for running real agent CLIs (Codex,
//! later aider and opencode) against a model on 127.0.0.1.
//!
//! - `POST /v1/responses` (the Responses API, what Codex's `wire_api = "responses"` speaks):
//!   with `"stream": true`, server-sent events as OpenAI documents them, each
//!   `event: <type>` + `data: <json>` with a `sequence_number`: `response.created`,
//!   `response.in_progress`, `response.output_item.added`, then `response.output_text.delta` /
//!   `response.output_text.done` for a message or `response.function_call_arguments.delta` /
//!   `.done` for a function call, `response.output_item.done`, and `response.completed` whose
//!   `response.usage` has `input_tokens`, `input_tokens_details.cached_tokens`, `output_tokens`,
//!   `output_tokens_details.reasoning_tokens`, `total_tokens`. No `[DONE]` sentinel (the
//!   Responses API has none). Without `stream`, the final response object as JSON.
//! - `POST /v1/chat/completions` (OpenAI-compatible Chat Completions): with `"stream": true`,
//!   `chat.completion.chunk` objects (`delta.content`, or `delta.tool_calls[]` with the
//!   function name first and the arguments after), a last chunk with `finish_reason`, a usage
//!   chunk with empty `choices` when `stream_options.include_usage` is set, then
//!   `data: [DONE]`. Without `stream`, a `chat.completion` object.
//! - `GET /v1/models`: a one-model list.
//! - Errors use OpenAI's body `{"error":{"message","type","param","code"}}`; a 429 carries
//!   `retry-after` (seconds) when the step says so. A wrong key (when [`FakeOpenAi::require_key`]
//!   was set) answers 401 `invalid_api_key`.
//!
//! Each model request consumes the next [`Step`] of the script ([`FakeOpenAi::push`] appends);
//! an empty script answers [`FakeOpenAi::set_default`] (initially `Text("Done.")`). Responses
//! requests without tools are side requests (Codex's TUI asks for a session title that way, in
//! parallel with the turn): they get a short text and consume nothing, so the script is the
//! agent's turn alone. Chat Completions requests are all turns (aider sends no tools at all)
//! unless [`FakeOpenAi::side_requests_without_tools`] is set (OpenCode asks for a title that
//! way). Every request body is kept in arrival order.
//!
//! The server runs on its own thread and actix system, so it keeps answering while a test's
//! runtime is busy; it stops when the fake is dropped.

#![allow(dead_code)]

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::fake_server::FakeServer;

/// What the model does for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// An assistant message (ends the agent's turn).
    Text(String),
    /// A function call the agent should run; `arguments` is the JSON object (sent as a
    /// string, as the APIs do).
    Tool { name: String, arguments: Value },
    /// Several function calls in one answer (parallel tool calls): `(name, arguments)`.
    Tools(Vec<(String, Value)>),
    /// An HTTP error answer (`500`, `429`, …) with OpenAI's error body; `retry_after` adds a
    /// `retry-after` header (seconds).
    Error {
        status: u16,
        retry_after: Option<u64>,
    },
    /// A stream that starts (`response.created`) and then fails with `response.failed`
    /// (Chat Completions: an `error` object in the stream).
    Failed { code: String, message: String },
    /// Headers and the first event, then nothing until the client gives up or the fake stops.
    Hang,
}

impl Step {
    /// A text step.
    pub fn text(s: &str) -> Step {
        Step::Text(s.to_string())
    }

    /// A tool-call step.
    pub fn tool(name: &str, arguments: Value) -> Step {
        Step::Tool {
            name: name.to_string(),
            arguments,
        }
    }

    /// A step of several function calls in one answer.
    pub fn tools(calls: &[(&str, Value)]) -> Step {
        Step::Tools(
            calls
                .iter()
                .map(|(name, arguments)| (name.to_string(), arguments.clone()))
                .collect(),
        )
    }

    /// An error step without `retry-after`.
    pub fn error(status: u16) -> Step {
        Step::Error {
            status,
            retry_after: None,
        }
    }
}

/// Token counts the fake reports for each answered request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// All input tokens (cached ones included, as OpenAI counts them).
    pub input: u64,
    /// Of which served from the prompt cache.
    pub cached: u64,
    /// All output tokens (reasoning included).
    pub output: u64,
    /// Of which reasoning.
    pub reasoning: u64,
}

impl Usage {
    fn add(&mut self, o: Usage) {
        self.input += o.input;
        self.cached += o.cached;
        self.output += o.output;
        self.reasoning += o.reasoning;
    }
}

/// One model request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// `/v1/responses` or `/v1/chat/completions`.
    pub path: String,
    /// The JSON body.
    pub body: Value,
    /// Whether it was a side request (consumed no step).
    pub side: bool,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

struct State {
    script: std::collections::VecDeque<Step>,
    default: Step,
    usage: Usage,
    /// Usage reported in completed answers to script (non-side) requests.
    reported: Usage,
    /// Usage reported to side requests.
    reported_side: Usage,
    requests: Vec<Request>,
    key: Option<String>,
    next_id: u64,
    /// Chat Completions requests without tools are side requests.
    chat_side_without_tools: bool,
    /// Steps the script goes on with once a turn request holds the text (see
    /// [`FakeOpenAi::when_told`]).
    when_told: Option<(String, Vec<Step>)>,
    /// Whether the told steps replace what is left of the script
    /// ([`FakeOpenAi::when_told_instead`]).
    told_replaces: bool,
    /// While it holds `true`, requests wait before they take a step ([`FakeOpenAi::hold`]).
    held: tokio::sync::watch::Receiver<bool>,
}

/// Waits while the fake is held: a model that has not answered yet.
async fn released(data: &Mutex<State>) {
    let mut held = lock(data).held.clone();
    let _ = held.wait_for(|h| !*h).await;
}

/// The fake.
pub struct FakeOpenAi {
    url: String,
    state: Arc<Mutex<State>>,
    hold: tokio::sync::watch::Sender<bool>,
    /// The server, on its own thread (stopped on drop).
    _server: FakeServer,
}

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// OpenAI's error body.
fn error_body(status: u16) -> Value {
    let (message, kind, code) = match status {
        400 => ("Invalid request.", "invalid_request_error", Value::Null),
        401 => (
            "Incorrect API key provided.",
            "invalid_request_error",
            json!("invalid_api_key"),
        ),
        404 => (
            "The model does not exist or you do not have access to it.",
            "invalid_request_error",
            json!("model_not_found"),
        ),
        429 => (
            "Rate limit reached for requests. Please try again later.",
            "requests",
            json!("rate_limit_exceeded"),
        ),
        503 => (
            "The engine is currently overloaded, please try again later.",
            "server_error",
            Value::Null,
        ),
        _ => (
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            Value::Null,
        ),
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

fn error_response(status: u16, retry_after: Option<u64>) -> HttpResponse {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = HttpResponse::build(code);
    if let Some(s) = retry_after {
        r.insert_header(("retry-after", s.to_string()));
    }
    r.json(error_body(status))
}

fn usage_json(u: Usage) -> Value {
    json!({
        "input_tokens": u.input,
        "input_tokens_details": {"cached_tokens": u.cached},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": u.input + u.output,
    })
}

fn chat_usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cached},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning},
    })
}

fn sse(kind: &str, seq: &mut u64, mut data: Value) -> Bytes {
    data["type"] = json!(kind);
    data["sequence_number"] = json!(*seq);
    *seq += 1;
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A stream of `first` then, for a hang, nothing ever again.
fn stream_response(events: Vec<Bytes>, hang: bool) -> HttpResponse {
    let head = futures::stream::iter(events.into_iter().map(Ok::<Bytes, actix_web::Error>));
    let body = if hang {
        head.chain(futures::stream::pending()).boxed_local()
    } else {
        head.boxed_local()
    };
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(body)
}

/// Takes the step for a request (or the side answer), recording the request.
fn take_step(
    data: &Mutex<State>,
    req: &HttpRequest,
    body: &Value,
    side: bool,
) -> Result<(Step, Usage, u64), Box<HttpResponse>> {
    let mut s = lock(data);
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    s.requests.push(Request {
        path: req.path().to_string(),
        body: body.clone(),
        side,
        authorization: authorization.clone(),
    });
    if let Some(key) = &s.key {
        if authorization.as_deref() != Some(&format!("Bearer {key}")) {
            return Err(Box::new(error_response(401, None)));
        }
    }
    s.next_id += 1;
    let id = s.next_id;
    let step = if side {
        Step::text("Fake task title")
    } else {
        let told = s
            .when_told
            .as_ref()
            .is_some_and(|(needle, _)| body.to_string().contains(needle.as_str()));
        if told {
            let (_, steps) = s.when_told.take().unwrap_or_default();
            if std::mem::take(&mut s.told_replaces) {
                s.script.clear();
            }
            s.script.extend(steps);
        }
        let d = s.default.clone();
        s.script.pop_front().unwrap_or(d)
    };
    let usage = s.usage;
    if matches!(step, Step::Text(_) | Step::Tool { .. } | Step::Tools(_)) {
        if side {
            s.reported_side.add(usage);
        } else {
            s.reported.add(usage);
        }
    }
    Ok((step, usage, id))
}

fn parse_body(bytes: &[u8]) -> Result<Value, Box<HttpResponse>> {
    serde_json::from_slice(bytes).map_err(|e| {
        Box::new(HttpResponse::BadRequest().json(json!({"error": {
            "message": format!("We could not parse the JSON body of your request. ({e})"),
            "type": "invalid_request_error", "param": null, "code": null}})))
    })
}

/// A function call output item (Responses API), complete.
fn function_call(id: &str, name: &str, arguments: &Value) -> Value {
    json!({
        "type": "function_call", "id": format!("fc_{id}"), "status": "completed",
        "call_id": format!("call_{id}"), "name": name, "arguments": arguments.to_string(),
    })
}

/// The output items a step produces (Responses API), complete; none for a step that is not
/// an answer.
fn output_items(step: &Step, id: u64) -> Vec<Value> {
    match step {
        Step::Text(t) => vec![json!({
            "type": "message", "id": format!("msg_{id}"), "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": t, "annotations": []}],
        })],
        Step::Tool { name, arguments } => vec![function_call(&id.to_string(), name, arguments)],
        Step::Tools(calls) => calls
            .iter()
            .enumerate()
            .map(|(k, (name, arguments))| function_call(&format!("{id}_{k}"), name, arguments))
            .collect(),
        _ => Vec::new(),
    }
}

/// The stream events of one output item at `index`, from `output_item.added` to
/// `output_item.done`.
fn item_events(ev: &mut Vec<Bytes>, seq: &mut u64, index: usize, item: &Value) {
    let item_id = item["id"].clone();
    let mut added = item.clone();
    added["status"] = json!("in_progress");
    if item["type"] == "message" {
        let t = item["content"][0]["text"].clone();
        added["content"] = json!([]);
        ev.push(sse(
            "response.output_item.added",
            seq,
            json!({"output_index": index, "item": added}),
        ));
        let part = json!({"type": "output_text", "text": "", "annotations": []});
        ev.push(sse(
            "response.content_part.added",
            seq,
            json!({"item_id": item_id, "output_index": index, "content_index": 0, "part": part}),
        ));
        ev.push(sse(
            "response.output_text.delta",
            seq,
            json!({"item_id": item_id, "output_index": index, "content_index": 0, "delta": t, "logprobs": []}),
        ));
        ev.push(sse(
            "response.output_text.done",
            seq,
            json!({"item_id": item_id, "output_index": index, "content_index": 0, "text": t, "logprobs": []}),
        ));
        ev.push(sse(
            "response.content_part.done",
            seq,
            json!({"item_id": item_id, "output_index": index, "content_index": 0,
                "part": {"type": "output_text", "text": t, "annotations": []}}),
        ));
    } else {
        let args = item["arguments"].clone();
        added["arguments"] = json!("");
        ev.push(sse(
            "response.output_item.added",
            seq,
            json!({"output_index": index, "item": added}),
        ));
        ev.push(sse(
            "response.function_call_arguments.delta",
            seq,
            json!({"item_id": item_id, "output_index": index, "delta": args}),
        ));
        ev.push(sse(
            "response.function_call_arguments.done",
            seq,
            json!({"item_id": item_id, "output_index": index, "arguments": args}),
        ));
    }
    ev.push(sse(
        "response.output_item.done",
        seq,
        json!({"output_index": index, "item": item}),
    ));
}

async fn responses(
    req: HttpRequest,
    bytes: web::Bytes,
    data: web::Data<Arc<Mutex<State>>>,
) -> HttpResponse {
    let body = match parse_body(&bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    released(&data).await;
    let side = body["tools"].as_array().is_none_or(|t| t.is_empty());
    let (step, usage, id) = match take_step(&data, &req, &body, side) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Step::Error {
        status,
        retry_after,
    } = step
    {
        return error_response(status, retry_after);
    }
    let model = body["model"].as_str().unwrap_or("gpt-5").to_string();
    let rid = format!("resp_{id}");
    let base = |status: &str| {
        json!({"id": rid, "object": "response", "created_at": now_secs(), "status": status,
            "model": model, "output": [], "usage": null, "error": null})
    };
    let stream = body["stream"].as_bool() == Some(true);
    let items = output_items(&step, id);
    if !stream {
        return match &step {
            _ if !items.is_empty() => {
                let mut r = base("completed");
                r["output"] = json!(items);
                r["usage"] = usage_json(usage);
                HttpResponse::Ok().json(r)
            }
            Step::Hang => {
                futures::future::pending::<()>().await;
                HttpResponse::InternalServerError().finish()
            }
            _ => error_response(500, None),
        };
    }
    let mut seq = 0u64;
    let mut ev = vec![
        sse(
            "response.created",
            &mut seq,
            json!({"response": base("in_progress")}),
        ),
        sse(
            "response.in_progress",
            &mut seq,
            json!({"response": base("in_progress")}),
        ),
    ];
    match &step {
        Step::Hang => return stream_response(ev, true),
        Step::Failed { code, message } => {
            let mut r = base("failed");
            r["error"] = json!({"code": code, "message": message});
            ev.push(sse("response.failed", &mut seq, json!({"response": r})));
        }
        _ if !items.is_empty() => {
            for (index, item) in items.iter().enumerate() {
                item_events(&mut ev, &mut seq, index, item);
            }
            let mut r = base("completed");
            r["output"] = json!(items);
            r["usage"] = usage_json(usage);
            ev.push(sse("response.completed", &mut seq, json!({"response": r})));
        }
        _ => return error_response(500, None),
    }
    stream_response(ev, false)
}

/// A step's function calls as Chat Completions numbers them: `(call id, name, arguments)`.
fn chat_calls(step: &Step, id: u64) -> Vec<(String, String, Value)> {
    match step {
        Step::Tool { name, arguments } => {
            vec![(format!("call_{id}"), name.clone(), arguments.clone())]
        }
        Step::Tools(calls) => calls
            .iter()
            .enumerate()
            .map(|(k, (name, arguments))| {
                (format!("call_{id}_{k}"), name.clone(), arguments.clone())
            })
            .collect(),
        _ => Vec::new(),
    }
}

async fn chat_completions(
    req: HttpRequest,
    bytes: web::Bytes,
    data: web::Data<Arc<Mutex<State>>>,
) -> HttpResponse {
    let body = match parse_body(&bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    released(&data).await;
    let side = lock(&data).chat_side_without_tools
        && body["tools"].as_array().is_none_or(|t| t.is_empty());
    let (step, usage, id) = match take_step(&data, &req, &body, side) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Step::Error {
        status,
        retry_after,
    } = step
    {
        return error_response(status, retry_after);
    }
    let model = body["model"].as_str().unwrap_or("gpt-4.1").to_string();
    let cid = format!("chatcmpl-{id}");
    let created = now_secs();
    let stream = body["stream"].as_bool() == Some(true);
    let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
    let chunk = |choices: Value| {
        json!({"id": cid, "object": "chat.completion.chunk", "created": created,
            "model": model, "system_fingerprint": "fp_fake", "choices": choices})
    };
    let data_line = |v: &Value| Bytes::from(format!("data: {v}\n\n"));
    let (message, finish) = match &step {
        Step::Text(t) => (json!({"role": "assistant", "content": t}), "stop"),
        Step::Tool { .. } | Step::Tools(_) => (
            json!({"role": "assistant", "content": null, "tool_calls": chat_calls(&step, id)
                .iter()
                .map(|(call, name, arguments)| json!({"id": call, "type": "function",
                    "function": {"name": name, "arguments": arguments.to_string()}}))
                .collect::<Vec<_>>()}),
            "tool_calls",
        ),
        _ => (Value::Null, ""),
    };
    if !stream {
        return match step {
            Step::Text(_) | Step::Tool { .. } | Step::Tools(_) => HttpResponse::Ok().json(json!({
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish,
                    "logprobs": null}],
                "usage": chat_usage_json(usage),
            })),
            Step::Hang => {
                futures::future::pending::<()>().await;
                HttpResponse::InternalServerError().finish()
            }
            _ => error_response(500, None),
        };
    }
    let mut ev = Vec::new();
    match &step {
        Step::Hang => {
            ev.push(data_line(&chunk(json!([{"index": 0,
                "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]))));
            return stream_response(ev, true);
        }
        Step::Failed { code, message } => {
            ev.push(data_line(
                &json!({"error": {"message": message, "type": "server_error", "param": null, "code": code}}),
            ));
        }
        Step::Text(t) => {
            ev.push(data_line(&chunk(json!([{"index": 0,
                "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]))));
            ev.push(data_line(&chunk(
                json!([{"index": 0, "delta": {"content": t}, "finish_reason": null}]),
            )));
        }
        Step::Tool { .. } | Step::Tools(_) => {
            for (k, (call, name, arguments)) in chat_calls(&step, id).iter().enumerate() {
                let mut delta = json!({"tool_calls": [{"index": k, "id": call, "type": "function",
                    "function": {"name": name, "arguments": ""}}]});
                // The message's role comes once, with its first chunk.
                if k == 0 {
                    delta["role"] = json!("assistant");
                    delta["content"] = Value::Null;
                }
                ev.push(data_line(&chunk(
                    json!([{"index": 0, "delta": delta, "finish_reason": null}]),
                )));
                ev.push(data_line(&chunk(json!([{"index": 0, "delta": {
                    "tool_calls": [{"index": k, "function": {"arguments": arguments.to_string()}}]},
                    "finish_reason": null}]))));
            }
        }
        Step::Error { .. } => {}
    }
    if matches!(step, Step::Text(_) | Step::Tool { .. } | Step::Tools(_)) {
        ev.push(data_line(&chunk(
            json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
        )));
        if include_usage {
            let mut c = chunk(json!([]));
            c["usage"] = chat_usage_json(usage);
            ev.push(data_line(&c));
        }
    }
    ev.push(Bytes::from_static(b"data: [DONE]\n\n"));
    stream_response(ev, false)
}

async fn models() -> HttpResponse {
    HttpResponse::Ok().json(json!({"object": "list", "data": [
        {"id": "gpt-5-codex", "object": "model", "created": 0, "owned_by": "openai"}]}))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    HttpResponse::NotFound().json(json!({"error": {
        "message": format!("Invalid URL ({} {})", req.method(), req.path()),
        "type": "invalid_request_error", "param": null, "code": null}}))
}

impl FakeOpenAi {
    /// Starts the fake with a script, reporting 1,000 input tokens (200 cached) and 50 output
    /// tokens (10 reasoning) per answer until [`FakeOpenAi::set_usage`].
    pub async fn start(script: Vec<Step>) -> FakeOpenAi {
        let (hold, held) = tokio::sync::watch::channel(false);
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            default: Step::text("Done."),
            usage: Usage {
                input: 1000,
                cached: 200,
                output: 50,
                reasoning: 10,
            },
            reported: Usage::default(),
            reported_side: Usage::default(),
            requests: Vec::new(),
            key: None,
            next_id: 0,
            chat_side_without_tools: false,
            when_told: None,
            told_replaces: false,
            held,
        }));
        let data = web::Data::new(state.clone());
        let server = FakeServer::start_on_own_thread(move |cfg| {
            cfg.app_data(data.clone())
                .route("/v1/responses", web::post().to(responses))
                .route("/v1/chat/completions", web::post().to(chat_completions))
                .route("/v1/models", web::get().to(models))
                .default_service(web::to(not_found));
        });
        FakeOpenAi {
            url: server.url("/v1"),
            state,
            hold,
            _server: server,
        }
    }

    fn s(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The base URL including `/v1` (Codex's `base_url`, `OPENAI_BASE_URL`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests arriving from now on wait (recorded only once they go on) until
    /// [`FakeOpenAi::release`]: a model slow to answer, for as long as a test needs.
    pub fn hold(&self) {
        self.hold.send_replace(true);
    }

    /// Lets held requests, and the ones after them, go on.
    pub fn release(&self) {
        self.hold.send_replace(false);
    }

    /// Appends steps to the script.
    pub fn push(&self, steps: Vec<Step>) {
        self.s().script.extend(steps);
    }

    /// Goes on with `steps` once a turn request holds `needle` (as serialized JSON), after
    /// what is left of the script: a model that acts on an instruction only once it is in its
    /// conversation, in whichever request the agent puts it (an agent that takes a message
    /// typed mid-turn into that turn, or one that queues it for the next).
    pub fn when_told(&self, needle: &str, steps: Vec<Step>) {
        let mut s = self.s();
        s.when_told = Some((needle.to_string(), steps));
        s.told_replaces = false;
    }

    /// [`FakeOpenAi::when_told`], the steps replacing what is left of the script: a model that
    /// turns to an instruction typed mid-turn instead of closing that turn as it would have.
    pub fn when_told_instead(&self, needle: &str, steps: Vec<Step>) {
        let mut s = self.s();
        s.when_told = Some((needle.to_string(), steps));
        s.told_replaces = true;
    }

    /// What an empty script answers.
    pub fn set_default(&self, step: Step) {
        self.s().default = step;
    }

    /// The counts reported from now on.
    pub fn set_usage(&self, usage: Usage) {
        self.s().usage = usage;
    }

    /// Refuse requests whose `Authorization` is not `Bearer <key>` (401 `invalid_api_key`).
    pub fn require_key(&self, key: &str) {
        self.s().key = Some(key.to_string());
    }

    /// Treat Chat Completions requests without tools as side requests (a short text, no step
    /// consumed), as Responses requests always are: for agents that always offer tools on
    /// their turns and ask for a title without (OpenCode).
    pub fn side_requests_without_tools(&self) {
        self.s().chat_side_without_tools = true;
    }

    /// Steps not yet consumed.
    pub fn remaining(&self) -> usize {
        self.s().script.len()
    }

    /// Every model request body, in arrival order (side requests included).
    pub fn requests(&self) -> Vec<Value> {
        self.s().requests.iter().map(|r| r.body.clone()).collect()
    }

    /// Every model request with its path and whether it was a side request.
    pub fn requests_full(&self) -> Vec<Request> {
        self.s().requests.clone()
    }

    /// The bodies of the requests that consumed script steps (the agent's turns).
    pub fn turn_requests(&self) -> Vec<Value> {
        self.s()
            .requests
            .iter()
            .filter(|r| !r.side)
            .map(|r| r.body.clone())
            .collect()
    }

    /// Usage reported in completed answers to turn requests (side requests excluded).
    pub fn reported_usage(&self) -> Usage {
        self.s().reported
    }

    /// Usage reported to side requests.
    pub fn reported_side_usage(&self) -> Usage {
        self.s().reported_side
    }

    /// Whether any request body contains `needle` (as serialized JSON, strings escaped).
    pub fn request_contains(&self, needle: &str) -> bool {
        self.s()
            .requests
            .iter()
            .any(|r| r.body.to_string().contains(needle))
    }

    /// Waits until at least `n` model requests arrived (side requests included), polling until
    /// `deadline`; the requests so far, or an error naming how many came.
    pub async fn wait_for_requests(
        &self,
        n: usize,
        deadline: Duration,
    ) -> Result<Vec<Value>, String> {
        self.wait(n, deadline, false).await
    }

    /// Like [`FakeOpenAi::wait_for_requests`], counting turn requests only.
    pub async fn wait_for_turn_requests(
        &self,
        n: usize,
        deadline: Duration,
    ) -> Result<Vec<Value>, String> {
        self.wait(n, deadline, true).await
    }

    async fn wait(&self, n: usize, deadline: Duration, turns: bool) -> Result<Vec<Value>, String> {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let got = if turns {
                self.turn_requests()
            } else {
                self.requests()
            };
            if got.len() >= n {
                return Ok(got);
            }
            if tokio::time::Instant::now() >= end {
                return Err(format!(
                    "{} of {n} model requests within {deadline:?}",
                    got.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The text of every `function_call_output` (Responses) or `tool` message (Chat Completions)
/// in a request body.
pub fn tool_outputs(body: &Value) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let responses = body["input"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["type"].as_str() == Some("function_call_output"))
        .map(|i| text(&i["output"]));
    let chat = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"].as_str() == Some("tool"))
        .map(|m| text(&m["content"]));
    responses.chain(chat).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(url: &str, body: Value) -> (u16, Option<String>, String) {
        let r = reqwest::Client::new()
            .post(url)
            .bearer_auth("k")
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        let retry = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (status, retry, r.text().await.expect("body"))
    }

    fn events(sse: &str) -> Vec<Value> {
        sse.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).expect("json event"))
            .collect()
    }

    #[actix_web::test]
    async fn the_fake_speaks_responses_and_chat_completions() {
        let fake = FakeOpenAi::start(vec![
            Step::tool("exec_command", json!({"cmd": "ls"})),
            Step::Error {
                status: 429,
                retry_after: Some(7),
            },
            Step::Failed {
                code: "server_error".into(),
                message: "boom".into(),
            },
            Step::text("hi"),
        ])
        .await;
        let responses = format!("{}/responses", fake.url());
        let tools = json!([{"type": "function", "name": "exec_command"}]);
        let req = json!({"model": "gpt-5", "stream": true, "input": [], "tools": tools});
        let (status, _, body) = post(&responses, req.clone()).await;
        assert_eq!(status, 200);
        let ev = events(&body);
        let kinds: Vec<&str> = ev.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        assert_eq!(ev[5]["item"]["arguments"], r#"{"cmd":"ls"}"#);
        assert_eq!(
            ev[6]["response"]["usage"]["input_tokens_details"]["cached_tokens"],
            200
        );
        // A side request (no tools) consumes nothing.
        let (_, _, body) = post(
            &responses,
            json!({"model": "gpt-5", "stream": true, "input": []}),
        )
        .await;
        assert!(body.contains("Fake task title"));
        let (status, retry, body) = post(&responses, req.clone()).await;
        assert_eq!((status, retry.as_deref()), (429, Some("7")));
        let err: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(err["error"]["code"], "rate_limit_exceeded");
        let (_, _, body) = post(&responses, req).await;
        assert_eq!(
            events(&body).last().expect("event")["type"],
            "response.failed"
        );
        // Chat Completions, streamed with a usage chunk.
        let (_, _, body) = post(
            &format!("{}/chat/completions", fake.url()),
            json!({"model": "gpt-4.1", "stream": true, "messages": [],
                "stream_options": {"include_usage": true}}),
        )
        .await;
        assert!(body.trim_end().ends_with("data: [DONE]"));
        let ev = events(&body);
        assert_eq!(ev[1]["choices"][0]["delta"]["content"], "hi");
        assert_eq!(ev[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(ev[3]["usage"]["prompt_tokens"], 1000);
        assert_eq!(fake.requests().len(), 5);
        assert_eq!(fake.turn_requests().len(), 4);
        assert_eq!(fake.reported_usage().input, 2000);
        assert!(fake
            .wait_for_requests(6, Duration::from_millis(50))
            .await
            .is_err());
        // A tool call in Chat Completions, then a hang that never completes.
        fake.push(vec![Step::tool("f", json!({"a": 1})), Step::Hang]);
        let chat = format!("{}/chat/completions", fake.url());
        let (_, _, body) = post(&chat, json!({"model": "m", "stream": true, "messages": []})).await;
        let ev = events(&body);
        assert_eq!(
            ev[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "f"
        );
        assert_eq!(ev[2]["choices"][0]["finish_reason"], "tool_calls");
        let hang = reqwest::Client::new()
            .post(&chat)
            .json(&json!({"model": "m", "stream": true, "messages": []}))
            .send()
            .await
            .expect("headers");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), hang.text())
                .await
                .is_err(),
            "a hanging stream ended"
        );
    }
}
