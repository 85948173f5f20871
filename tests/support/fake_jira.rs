//! A stateful fake of the Jira Cloud comment API (wire-formats §5.2), plus a signer that
//! POSTs `comment_created` webhooks like a secured admin webhook (§5.1).
//!
//! - `POST /rest/api/3/issue/{key}/comment` and `PUT …/comment/{id}` with HTTP Basic
//!   `email:api_token` (401 `{"errorMessages": ["Client must be authenticated…"]}`
//!   otherwise); the body must be a valid ADF document (400 otherwise, see [`adf_problem`]);
//!   an unknown issue is 404.
//!   Comments are stored with their ADF body and their entity `properties` (`[{"key",
//!   "value"}]`, a key of 1 to 255 characters; 400 otherwise). 201 with the comment JSON.
//! - `GET /rest/api/3/issue/{key}/comment?startAt&maxResults&orderBy` ("Get comments"): a
//!   page `{startAt, maxResults, total, comments}`, oldest first or, with
//!   `orderBy=-created`, newest first; `created` is the wall clock's, in Jira's
//!   `2026-01-01T00:00:00.000+0000` form.
//! - `POST /rest/api/3/comment/list?expand` ("Get comments by IDs", body `{"ids": [...]}`):
//!   a page `{startAt, maxResults, total, isLast, values}` of the comments found; each one
//!   carries its `properties` only with `expand=properties`.
//! - Rate limit on demand: [`FakeJira::limit_next`] → 429 with `Retry-After`.

#![allow(dead_code)]

use std::sync::{Arc, Mutex, MutexGuard};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::fake_server::{basic_auth, FakeServer, Seen};

/// A stored comment.
#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
    /// Issue key.
    pub issue: String,
    /// Comment id.
    pub id: String,
    /// ADF body.
    pub body: Value,
    /// When it was made.
    pub created: chrono::DateTime<chrono::Utc>,
    /// Its entity properties, as posted (`{"key", "value"}`).
    pub properties: Vec<Value>,
}

/// A comment as Jira answers it; with its `properties` when they were asked for.
fn comment_json(c: &Comment, properties: bool) -> Value {
    let at = c.created.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string();
    let mut v = json!({"id": c.id, "body": c.body, "created": at, "updated": at,
        "author": {"accountId": "bot-account", "displayName": "Flotilla"},
        "jsdPublic": true});
    if properties {
        v["properties"] = json!(c.properties);
    }
    v
}

/// A query parameter of `req`.
fn param(req: &HttpRequest, name: &str) -> Option<String> {
    web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .ok()?
        .get(name)
        .cloned()
}

/// "Get comments by IDs": the comments among `ids`, in id order.
fn comments_by_ids(s: &State, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    let Some(ids) = v["ids"].as_array() else {
        return errors(400, "The ids are required.");
    };
    let ids: Vec<String> = ids
        .iter()
        .map(|i| {
            i.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| i.to_string())
        })
        .collect();
    let properties = param(req, "expand").is_some_and(|e| e.split(',').any(|x| x == "properties"));
    let mut found: Vec<&Comment> = s.comments.iter().filter(|c| ids.contains(&c.id)).collect();
    found.sort_by_key(|c| c.id.parse::<u64>().unwrap_or(0));
    let values: Vec<Value> = found.iter().map(|c| comment_json(c, properties)).collect();
    HttpResponse::Ok().json(
        json!({"startAt": 0, "maxResults": 1000, "total": values.len(),
        "isLast": true, "values": values}),
    )
}

/// "Get comments": a page of the issue's comments.
fn issue_comments(s: &State, req: &HttpRequest, key: &str) -> HttpResponse {
    let mut all: Vec<&Comment> = s.comments.iter().filter(|c| c.issue == key).collect();
    match param(req, "orderBy").as_deref() {
        None | Some("created" | "+created") => {}
        Some("-created") => all.reverse(),
        Some(o) => return errors(400, &format!("The orderBy value '{o}' is not supported.")),
    }
    let start = param(req, "startAt")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let max = param(req, "maxResults")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(5000)
        .clamp(1, 5000);
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(max)
        .map(|c| comment_json(c, false))
        .collect();
    HttpResponse::Ok().json(
        json!({"startAt": start, "maxResults": max, "total": all.len(),
        "comments": page}),
    )
}

#[derive(Default)]
struct State {
    auth: String,
    issues: Vec<String>,
    comments: Vec<Comment>,
    next_id: u64,
    limited: u32,
}

/// The fake.
pub struct FakeJira {
    /// Site URL (`jira.base_url`).
    pub url: String,
    state: Arc<Mutex<State>>,
    /// The server (stopped on drop).
    server: FakeServer,
}

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn errors(status: u16, msg: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"))
        .json(json!({"errorMessages": [msg], "errors": {}}))
}

async fn dispatch(
    req: HttpRequest,
    body: web::Bytes,
    st: web::Data<Arc<Mutex<State>>>,
) -> HttpResponse {
    let mut s = lock(&st);
    if s.limited > 0 {
        s.limited -= 1;
        return HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", "1"))
            .json(json!({"errorMessages": ["Rate limit exceeded."], "errors": {}}));
    }
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if auth != Some(s.auth.as_str()) {
        return errors(401, "Client must be authenticated to access this resource.");
    }
    let parts: Vec<&str> = req.path().trim_matches('/').split('/').collect();
    if parts == ["rest", "api", "3", "comment", "list"] && req.method() == "POST" {
        return comments_by_ids(&s, &req, &body);
    }
    let (key, comment_id) = match parts.as_slice() {
        ["rest", "api", "3", "issue", key, "comment"] => (key.to_string(), None),
        ["rest", "api", "3", "issue", key, "comment", id] => {
            (key.to_string(), Some(id.to_string()))
        }
        _ => return errors(404, "Not Found"),
    };
    if !s.issues.contains(&key) {
        return errors(
            404,
            "Issue does not exist or you do not have permission to see it.",
        );
    }
    if req.method() == "GET" && comment_id.is_none() {
        return issue_comments(&s, &req, &key);
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let doc = &v["body"];
    if let Some(problem) = adf_problem(doc) {
        return HttpResponse::BadRequest().json(json!({"errorMessages": [],
            "errors": {"comment": format!("Comment body is not valid Atlassian Document Format: {problem}")}}));
    }
    match (req.method().as_str(), comment_id) {
        ("POST", None) => {
            let properties = match &v["properties"] {
                Value::Null => Vec::new(),
                Value::Array(p) if p.iter().all(|e| {
                    e["key"].as_str().is_some_and(|k| (1..=255).contains(&k.chars().count()))
                        && e.get("value").is_some()
                }) => p.clone(),
                _ => return HttpResponse::BadRequest().json(json!({"errorMessages": [],
                    "errors": {"properties": "Each property needs a key of 1 to 255 characters and a value."}})),
            };
            s.next_id += 1;
            let c = Comment {
                issue: key,
                id: (10_000 + s.next_id).to_string(),
                body: doc.clone(),
                created: chrono::Utc::now(),
                properties,
            };
            let v = comment_json(&c, false);
            s.comments.push(c);
            HttpResponse::Created().json(v)
        }
        ("PUT", Some(id)) => match s.comments.iter_mut().find(|c| c.id == id && c.issue == key) {
            Some(c) => {
                c.body = doc.clone();
                HttpResponse::Ok().json(json!({"id": id, "body": doc}))
            }
            None => errors(404, "Can not find a comment for the id."),
        },
        _ => errors(405, "Method Not Allowed"),
    }
}

// ---- ADF validation --------------------------------------------------------------------------

/// Why `doc` is not a valid ADF document, checked against Atlassian's published ADF JSON
/// schema (go.atlassian.com/adf-json-schema) for the nodes and marks Jira comments take:
/// `doc` has `version` 1 and block content; each node's children are of the kinds the
/// schema allows (lists hold `listItem`s, at least one; a `listItem` starts with a
/// paragraph, list or code block); `heading.attrs.level` is 1–6; `text` is non-empty and
/// its marks are known, not repeated, with `link.attrs.href` set, never marked inside a
/// `codeBlock`, and `code` combines with `link` only; `mention` has `attrs.id`.
pub fn adf_problem(doc: &Value) -> Option<String> {
    if doc["type"] != "doc" || doc["version"] != 1 {
        return Some("the root must be {\"type\": \"doc\", \"version\": 1}".into());
    }
    let Some(content) = doc["content"].as_array() else {
        return Some("doc.content must be an array".into());
    };
    content.iter().find_map(|n| node_problem(n, BLOCK, "doc"))
}

/// Top-level block nodes.
const BLOCK: &[&str] = &[
    "paragraph",
    "heading",
    "bulletList",
    "orderedList",
    "codeBlock",
    "blockquote",
    "rule",
    "panel",
    "table",
    "mediaGroup",
    "mediaSingle",
    "expand",
];
/// Inline nodes.
const INLINE: &[&str] = &[
    "text",
    "hardBreak",
    "mention",
    "emoji",
    "inlineCard",
    "date",
    "status",
    "mediaInline",
];
/// Marks a text node may carry.
const MARKS: &[&str] = &[
    "code",
    "em",
    "link",
    "strike",
    "strong",
    "subsup",
    "textColor",
    "underline",
    "backgroundColor",
];

fn node_problem(n: &Value, allowed: &[&str], parent: &str) -> Option<String> {
    let Some(kind) = n["type"].as_str() else {
        return Some(format!("a child of {parent} has no type"));
    };
    if !allowed.contains(&kind) {
        return Some(format!("{kind} is not allowed in {parent}"));
    }
    let children = n["content"].as_array();
    let check = |kinds: &[&str], at_least_one: bool| -> Option<String> {
        match children {
            None if at_least_one => Some(format!("{kind} needs content")),
            None => None,
            Some(c) if at_least_one && c.is_empty() => Some(format!("{kind} needs content")),
            Some(c) => c.iter().find_map(|x| node_problem(x, kinds, kind)),
        }
    };
    match kind {
        "paragraph" => check(INLINE, false),
        "heading" => match n["attrs"]["level"].as_u64() {
            Some(1..=6) => check(INLINE, false),
            _ => Some("heading.attrs.level must be 1 to 6".into()),
        },
        "bulletList" | "orderedList" => check(&["listItem"], true),
        "listItem" => {
            let first = children.and_then(|c| c.first());
            if !first.is_some_and(|f| {
                matches!(
                    f["type"].as_str(),
                    Some("paragraph" | "bulletList" | "orderedList" | "codeBlock" | "mediaSingle")
                )
            }) {
                return Some("listItem must start with a paragraph, list or code block".into());
            }
            check(
                &[
                    "paragraph",
                    "bulletList",
                    "orderedList",
                    "codeBlock",
                    "mediaSingle",
                ],
                true,
            )
        }
        "codeBlock" => {
            if let Some(p) = children.and_then(|c| {
                c.iter().find(|x| {
                    x.get("marks")
                        .is_some_and(|m| !m.as_array().is_some_and(|a| a.is_empty()))
                })
            }) {
                return Some(format!("text in a codeBlock takes no marks: {p}"));
            }
            check(&["text"], false)
        }
        "blockquote" => check(
            &[
                "paragraph",
                "bulletList",
                "orderedList",
                "codeBlock",
                "mediaGroup",
                "mediaSingle",
            ],
            true,
        ),
        "rule" | "hardBreak" => children.map(|_| format!("{kind} has no content")),
        "text" => text_problem(n),
        "mention" => n["attrs"]["id"]
            .as_str()
            .is_none()
            .then(|| "mention.attrs.id is required".into()),
        _ => None,
    }
}

fn text_problem(n: &Value) -> Option<String> {
    if n["text"].as_str().is_none_or(|t| t.is_empty()) {
        return Some("text nodes need a non-empty text".into());
    }
    let marks = match &n["marks"] {
        Value::Null => return None,
        Value::Array(m) => m,
        _ => return Some("marks must be an array".into()),
    };
    let mut seen: Vec<&str> = Vec::new();
    for m in marks {
        let Some(t) = m["type"].as_str() else {
            return Some("a mark has no type".into());
        };
        if !MARKS.contains(&t) {
            return Some(format!("unknown mark {t}"));
        }
        if seen.contains(&t) {
            return Some(format!("mark {t} repeated"));
        }
        if t == "link" && !m["attrs"]["href"].is_string() {
            return Some("link.attrs.href is required".into());
        }
        seen.push(t);
    }
    if seen.contains(&"code") && seen.iter().any(|t| !matches!(*t, "code" | "link")) {
        return Some("the code mark combines with link only".into());
    }
    None
}

impl FakeJira {
    /// Starts the fake; requests must carry Basic `email:token`; `issues` exist.
    pub async fn start(email: &str, token: &str, issues: &[&str]) -> FakeJira {
        let state = Arc::new(Mutex::new(State {
            auth: basic_auth(email, token),
            issues: issues.iter().map(|i| i.to_string()).collect(),
            ..State::default()
        }));
        let data = web::Data::new(state.clone());
        let server = FakeServer::start(move |cfg| {
            cfg.app_data(data.clone())
                .default_service(web::to(dispatch));
        });
        FakeJira {
            url: server.url(""),
            state,
            server,
        }
    }

    /// Comments posted, in order.
    pub fn comments(&self) -> Vec<Comment> {
        lock(&self.state).comments.clone()
    }

    /// The next `n` calls answer 429.
    pub fn limit_next(&self, n: u32) {
        lock(&self.state).limited = n;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.server.requests()
    }
}

/// A `comment_created` webhook body: `author` comments `body` (wiki text) on `key`.
pub fn comment_created(key: &str, comment_id: &str, author: &str, body: &str) -> Value {
    json!({"timestamp": 1_700_000_000_000_i64, "webhookEvent": "comment_created",
        "issue_event_type_name": "issue_commented",
        "user": {"accountId": author, "displayName": "Someone"}, "matchedWebhookIds": [1],
        "issue": {"id": "10000", "key": key, "self": "https://x/rest/api/2/issue/10000",
            "fields": {"summary": "A task", "project": {"key": key.split('-').next().unwrap_or("X")}}},
        "comment": {"id": comment_id, "self": "https://x/comment", "author": {"accountId": author,
            "displayName": "Someone"}, "body": body, "updateAuthor": {"accountId": author},
            "created": "2026-01-01T00:00:00.000+0000", "updated": "2026-01-01T00:00:00.000+0000"}})
}

/// POSTs `body` to `url` with `X-Hub-Signature: sha256=<hmac>` under `secret`.
pub async fn post_signed(url: &str, secret: &str, body: &Value) -> u16 {
    let raw = body.to_string();
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header(
            "x-atlassian-webhook-identifier",
            uuid::Uuid::new_v4().to_string(),
        )
        .header(
            "x-hub-signature",
            flotilla::plugins::github::events::sign(secret.as_bytes(), raw.as_bytes()),
        )
        .body(raw)
        .send()
        .await
        .expect("post webhook")
        .status()
        .as_u16()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_platforms_fake_jira_adf_validation_refuses_what_the_schema_refuses() {
        let doc = |content: Value| json!({"type": "doc", "version": 1, "content": content});
        let p = |inline: Value| doc(json!([{"type": "paragraph", "content": inline}]));
        assert_eq!(
            adf_problem(&p(json!([{"type": "text", "text": "ok",
            "marks": [{"type": "strong"}, {"type": "link", "attrs": {"href": "https://x"}}]}]))),
            None
        );
        for bad in [
            json!({"type": "doc", "version": 2, "content": []}),
            doc(json!([{"type": "text", "text": "bare text at the top"}])),
            p(json!([{"type": "text", "text": ""}])),
            p(json!([{"type": "text", "text": "x", "marks": [{"type": "bold"}]}])),
            p(
                json!([{"type": "text", "text": "x", "marks": [{"type": "code"}, {"type": "strong"}]}]),
            ),
            p(json!([{"type": "text", "text": "x", "marks": [{"type": "link", "attrs": {}}]}])),
            p(json!([{"type": "paragraph"}])),
            doc(json!([{"type": "heading", "attrs": {"level": 7}}])),
            doc(json!([{"type": "bulletList", "content": []}])),
            doc(json!([{"type": "bulletList", "content": [{"type": "paragraph"}]}])),
            doc(
                json!([{"type": "codeBlock", "content": [{"type": "text", "text": "x", "marks": [{"type": "em"}]}]}]),
            ),
        ] {
            assert!(adf_problem(&bad).is_some(), "accepted {bad}");
        }
    }
}
