//! Stateful fakes of the Linear GraphQL API and Jira Cloud's REST v3, with their real auth
//! schemes and error bodies, written from the vendors' published references:
//!
//! - Linear (`POST /graphql`): `issue(id:)` takes the issue's UUID or its identifier and
//!   answers the issue node (with `state { type }` and its team's workflow `states`); the
//!   `commentCreate(input: {issueId, body})` and `issueUpdate(id, input: {stateId})`
//!   mutations answer `{success, …}`; an unknown issue or state is a GraphQL error
//!   (`Entity not found`, code `NOT_FOUND`) answered 200, a missing key 400; a rate limit
//!   ([`FakeTrackers::limit_linear_next`]) is an error with code `RATELIMITED` and the
//!   `X-RateLimit-Requests-*` headers.
//! - Jira: `GET /rest/api/3/issue/{key}` (fields with `status.statusCategory`),
//!   `POST …/comment` (body an ADF document, 400 otherwise; 201 with the comment),
//!   `GET …/transitions` (the transitions available from the issue's status: Jira Cloud's
//!   default workflow lets any status go to any other, transition ids 11/21/31/41) and
//!   `POST …/transitions` (`{"transition": {"id"}}`; 204 No Content, 400 for an id not
//!   available from the status, 404 for an unknown issue).
//!   At a resource limit ("Rate limiting": "a 503 response may be returned when a resource
//!   limit has been reached", with `Retry-After`; one made before the period ends "will fail
//!   and return the same or longer `Retry-After` period"): [`FakeTrackers::jira_busy_for`]
//!   makes every Jira request answer 503 with `Retry-After` (whole seconds, rounded up) until
//!   the window ends; [`FakeTrackers::jira_down_next`] makes the next N answer a bare 503
//!   (an outage: no `Retry-After`). Every 503 is counted ([`FakeTrackers::jira_503s`]).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::fake_server::{basic_auth, FakeServer, Seen};

#[derive(Default)]
struct State {
    linear_key: String,
    jira_auth: String,
    /// Linear issues by identifier (`ENG-12`): the `issue` node as Linear returns it.
    linear: BTreeMap<String, Value>,
    /// Jira issues by key: the REST resource.
    jira: BTreeMap<String, Value>,
    /// Linear comments: (issue identifier, body).
    linear_comments: Vec<(String, String)>,
    /// Jira comments: (issue key, ADF body).
    jira_comments: Vec<(String, Value)>,
    /// Linear requests still to answer with a rate limit.
    linear_limited: u32,
    /// End of a Jira resource-limit window (503 + `Retry-After`).
    jira_busy_until: Option<std::time::Instant>,
    /// Jira requests still to answer with a bare 503.
    jira_down: u32,
    /// Jira 503s answered.
    jira_503s: u32,
}

/// Jira's 503 while a resource limit holds or the site is down, if it is.
fn jira_unavailable(s: &mut State) -> Option<HttpResponse> {
    let body = json!({"errorMessages": ["Service Unavailable"], "errors": {}});
    if let Some(left) = s
        .jira_busy_until
        .and_then(|t| t.checked_duration_since(std::time::Instant::now()))
        .filter(|d| !d.is_zero())
    {
        s.jira_503s += 1;
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        return Some(
            HttpResponse::ServiceUnavailable()
                .insert_header(("Retry-After", secs.to_string()))
                .json(body),
        );
    }
    if s.jira_down > 0 {
        s.jira_down -= 1;
        s.jira_503s += 1;
        return Some(HttpResponse::ServiceUnavailable().json(body));
    }
    None
}

/// Linear's workflow states of the fake team: (id, name, type).
const LINEAR_STATES: &[(&str, &str, &str)] = &[
    ("st-backlog", "Backlog", "backlog"),
    ("st-todo", "Todo", "unstarted"),
    ("st-progress", "In Progress", "started"),
    ("st-review", "In Review", "started"),
    ("st-done", "Done", "completed"),
    ("st-canceled", "Canceled", "canceled"),
];

/// Jira's statuses of the fake workflow: (transition id, status name, category key).
const JIRA_STATUSES: &[(&str, &str, &str)] = &[
    ("11", "To Do", "new"),
    ("21", "In Progress", "indeterminate"),
    ("31", "In Review", "indeterminate"),
    ("41", "Done", "done"),
];

fn linear_state(id_or_name: &str) -> Option<Value> {
    LINEAR_STATES
        .iter()
        .find(|(id, name, _)| *id == id_or_name || *name == id_or_name)
        .map(|(id, name, kind)| json!({"id": id, "name": name, "type": kind}))
}

fn jira_status(name: &str) -> Option<Value> {
    JIRA_STATUSES
        .iter()
        .find(|(_, n, _)| *n == name)
        .map(|(i, n, k)| {
            json!({"id": format!("1{i}"), "name": n,
            "statusCategory": {"key": k, "name": k}})
        })
}

fn not_found(what: &str) -> HttpResponse {
    HttpResponse::Ok().json(json!({"data": null, "errors": [{
        "message": format!("Entity not found: {what}"),
        "extensions": {"code": "NOT_FOUND", "type": "invalid input"}}]}))
}

type Shared = web::Data<Arc<Mutex<State>>>;

/// One server hosting both fakes.
pub struct FakeTrackers {
    /// Base URL: Linear at `{url}/graphql`, Jira at `{url}`.
    pub url: String,
    state: Arc<Mutex<State>>,
    /// The server (stopped on drop).
    server: FakeServer,
}

fn lock(s: &Arc<Mutex<State>>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

async fn linear(req: HttpRequest, body: web::Json<Value>, st: Shared) -> HttpResponse {
    let mut s = lock(&st);
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != s.linear_key {
        return HttpResponse::BadRequest().json(json!({"errors": [{
            "message": "Authentication required, not authenticated",
            "extensions": {"code": "AUTHENTICATION_ERROR", "type": "authentication error"}}]}));
    }
    if s.linear_limited > 0 {
        // Linear's rate limit: a GraphQL error with code RATELIMITED and the
        // `X-RateLimit-Requests-*` headers (reset in UTC epoch milliseconds).
        s.linear_limited -= 1;
        let reset = chrono::Utc::now().timestamp_millis() + 30_000;
        return HttpResponse::BadRequest()
            .insert_header(("x-ratelimit-requests-limit", "1500"))
            .insert_header(("x-ratelimit-requests-remaining", "0"))
            .insert_header(("x-ratelimit-requests-reset", reset.to_string()))
            .json(json!({"errors": [{"message": "Rate limit exceeded",
                "extensions": {"code": "RATELIMITED", "type": "ratelimited",
                    "userPresentableMessage": "Rate limit exceeded. Please try again later."}}]}));
    }
    let query = body["query"].as_str().unwrap_or("");
    let vars = &body["variables"];
    // The issue by UUID or identifier, as Linear resolves `id` arguments.
    let find = |s: &State, id: &str| -> Option<String> {
        s.linear
            .iter()
            .find(|(k, v)| k.as_str() == id || v["id"] == id)
            .map(|(k, _)| k.clone())
    };
    if query.contains("commentCreate(") {
        let (Some(issue), Some(text)) = (vars["issueId"].as_str(), vars["body"].as_str()) else {
            return HttpResponse::BadRequest().json(json!({"errors": [{
                "message": "Variable \"$issueId\" of required type \"String!\" was not provided.",
                "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}}]}));
        };
        let Some(key) = find(&s, issue) else {
            return not_found("Issue");
        };
        s.linear_comments.push((key, text.to_string()));
        let n = s.linear_comments.len();
        return HttpResponse::Ok().json(json!({"data": {"commentCreate": {
            "success": true, "comment": {"id": format!("comment-{n}")}}}}));
    }
    if query.contains("issueUpdate(") {
        let Some(key) = find(&s, vars["id"].as_str().unwrap_or("")) else {
            return not_found("Issue");
        };
        let Some(state) = LINEAR_STATES
            .iter()
            .find(|(id, _, _)| Some(*id) == vars["stateId"].as_str())
            .and_then(|(id, _, _)| linear_state(id))
        else {
            return not_found("WorkflowState");
        };
        let issue = s.linear.get_mut(&key).expect("found");
        issue["state"] = state.clone();
        return HttpResponse::Ok().json(json!({"data": {"issueUpdate": {
            "success": true, "issue": {"id": issue["id"], "state": {"name": state["name"]}}}}}));
    }
    if !query.contains("issue(id:") {
        return HttpResponse::BadRequest().json(json!({"errors": [{
            "message": "Query not supported by the fake", "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}}]}));
    }
    let id = vars["id"].as_str().unwrap_or("");
    match find(&s, id).and_then(|k| s.linear.get(&k)) {
        Some(issue) => HttpResponse::Ok().json(json!({"data": {"issue": issue}})),
        None => not_found("Issue"),
    }
}

/// Jira's basic-auth check: `None` when authenticated, the 401 otherwise.
fn jira_auth(req: &HttpRequest, s: &State) -> Option<HttpResponse> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    (auth != s.jira_auth).then(|| {
        HttpResponse::Unauthorized()
            .insert_header(("www-authenticate", "Basic realm=\"jira\""))
            .json(json!({"errorMessages": ["You do not have the permission to see the specified issue."], "errors": {}}))
    })
}

fn jira_missing() -> HttpResponse {
    HttpResponse::NotFound().json(json!({
        "errorMessages": ["Issue does not exist or you do not have permission to see it."],
        "errors": {}}))
}

async fn jira(req: HttpRequest, key: web::Path<String>, st: Shared) -> HttpResponse {
    let mut s = lock(&st);
    if let Some(r) = jira_unavailable(&mut s) {
        return r;
    }
    if let Some(r) = jira_auth(&req, &s) {
        return r;
    }
    match s.jira.get(key.as_str()) {
        Some(issue) => HttpResponse::Ok().json(issue),
        None => jira_missing(),
    }
}

async fn jira_comment(
    req: HttpRequest,
    key: web::Path<String>,
    body: web::Json<Value>,
    st: Shared,
) -> HttpResponse {
    let mut s = lock(&st);
    if let Some(r) = jira_unavailable(&mut s) {
        return r;
    }
    if let Some(r) = jira_auth(&req, &s) {
        return r;
    }
    if !s.jira.contains_key(key.as_str()) {
        return jira_missing();
    }
    if let Some(problem) = crate::fake_jira::adf_problem(&body["body"]) {
        return HttpResponse::BadRequest().json(json!({
            "errorMessages": [], "errors": {"comment": format!("Comment body is not valid ADF: {problem}")}}));
    }
    s.jira_comments
        .push((key.to_string(), body["body"].clone()));
    let id = 10_000 + s.jira_comments.len();
    HttpResponse::Created().json(json!({"id": id.to_string(), "body": body["body"],
        "self": format!("/rest/api/3/issue/{key}/comment/{id}"),
        "author": {"accountId": "flotilla-bot"}, "created": "2026-01-01T00:00:00.000+0000"}))
}

async fn jira_transitions(req: HttpRequest, key: web::Path<String>, st: Shared) -> HttpResponse {
    let mut s = lock(&st);
    if let Some(r) = jira_unavailable(&mut s) {
        return r;
    }
    if let Some(r) = jira_auth(&req, &s) {
        return r;
    }
    let Some(issue) = s.jira.get(key.as_str()) else {
        return jira_missing();
    };
    let current = issue["fields"]["status"]["name"].as_str().unwrap_or("");
    let transitions: Vec<Value> = JIRA_STATUSES
        .iter()
        .filter(|(_, name, _)| *name != current)
        .map(|(id, name, _)| {
            json!({"id": id, "name": name, "hasScreen": false,
            "isGlobal": true, "isInitial": false, "isAvailable": true, "isConditional": false,
            "to": jira_status(name)})
        })
        .collect();
    HttpResponse::Ok().json(json!({"expand": "transitions", "transitions": transitions}))
}

async fn jira_transition(
    req: HttpRequest,
    key: web::Path<String>,
    body: web::Json<Value>,
    st: Shared,
) -> HttpResponse {
    let mut s = lock(&st);
    if let Some(r) = jira_unavailable(&mut s) {
        return r;
    }
    if let Some(r) = jira_auth(&req, &s) {
        return r;
    }
    let Some(issue) = s.jira.get_mut(key.as_str()) else {
        return jira_missing();
    };
    let current = issue["fields"]["status"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let wanted = body["transition"]["id"].as_str().unwrap_or("");
    let Some((_, name, _)) = JIRA_STATUSES
        .iter()
        .find(|(id, name, _)| *id == wanted && *name != current)
    else {
        return HttpResponse::BadRequest().json(json!({
            "errorMessages": [format!("Transition id '{wanted}' is not valid for this issue.")],
            "errors": {}}));
    };
    issue["fields"]["status"] = jira_status(name).expect("known status");
    HttpResponse::NoContent().finish()
}

impl FakeTrackers {
    /// Starts on a random port; Linear accepts `linear_key`, Jira `email:token` (basic).
    pub async fn start(linear_key: &str, jira_email: &str, jira_token: &str) -> FakeTrackers {
        let state = Arc::new(Mutex::new(State {
            linear_key: linear_key.into(),
            jira_auth: basic_auth(jira_email, jira_token),
            ..Default::default()
        }));
        let data = web::Data::new(state.clone());
        let server = FakeServer::start(move |cfg| {
            cfg.app_data(data.clone())
                .route("/graphql", web::post().to(linear))
                .route("/rest/api/3/issue/{key}", web::get().to(jira))
                .route(
                    "/rest/api/3/issue/{key}/comment",
                    web::post().to(jira_comment),
                )
                .route(
                    "/rest/api/3/issue/{key}/transitions",
                    web::get().to(jira_transitions),
                )
                .route(
                    "/rest/api/3/issue/{key}/transitions",
                    web::post().to(jira_transition),
                );
        });
        FakeTrackers {
            url: server.url(""),
            state,
            server,
        }
    }

    /// Adds a Linear issue.
    pub fn add_linear(
        &self,
        identifier: &str,
        title: &str,
        description: &str,
        branch: &str,
        labels: &[&str],
    ) {
        let states: Vec<Value> = LINEAR_STATES
            .iter()
            .filter_map(|(id, _, _)| linear_state(id))
            .collect();
        let issue = json!({
            "id": format!("uuid-{}", identifier.to_lowercase()),
            "identifier": identifier, "title": title, "description": description,
            "url": format!("https://linear.app/acme/issue/{}", identifier.to_lowercase()),
            "branchName": branch,
            "state": linear_state("Todo"),
            "team": {"id": "team-1", "key": "ENG", "states": {"nodes": states}},
            "labels": {"nodes": labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>()},
        });
        lock(&self.state).linear.insert(identifier.into(), issue);
    }

    /// The next `n` Linear requests are refused with Linear's rate limit (`RATELIMITED`).
    pub fn limit_linear_next(&self, n: u32) {
        lock(&self.state).linear_limited = n;
    }

    /// For the next `secs` seconds every Jira request answers 503 with `Retry-After` (a
    /// resource limit reached).
    pub fn jira_busy_for(&self, secs: u64) {
        lock(&self.state).jira_busy_until =
            Some(std::time::Instant::now() + std::time::Duration::from_secs(secs));
    }

    /// The next `n` Jira requests answer a bare 503 (no `Retry-After`).
    pub fn jira_down_next(&self, n: u32) {
        lock(&self.state).jira_down = n;
    }

    /// Jira 503s answered so far.
    pub fn jira_503s(&self) -> u32 {
        lock(&self.state).jira_503s
    }

    /// Moves Linear issue `identifier` to workflow state `name` (as a person would).
    pub fn set_linear_state(&self, identifier: &str, name: &str) {
        let state = linear_state(name).expect("a state of the fake team");
        if let Some(i) = lock(&self.state).linear.get_mut(identifier) {
            i["state"] = state;
        }
    }

    /// The name of Linear issue `identifier`'s workflow state.
    pub fn linear_state_of(&self, identifier: &str) -> String {
        lock(&self.state).linear[identifier]["state"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Comments made on Linear issue `identifier`.
    pub fn linear_comments(&self, identifier: &str) -> Vec<String> {
        lock(&self.state)
            .linear_comments
            .iter()
            .filter(|(k, _)| k == identifier)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Moves Jira issue `key` to status `name` (as a person would).
    pub fn set_jira_status(&self, key: &str, name: &str) {
        let status = jira_status(name).expect("a status of the fake workflow");
        if let Some(i) = lock(&self.state).jira.get_mut(key) {
            i["fields"]["status"] = status;
        }
    }

    /// The name of Jira issue `key`'s status.
    pub fn jira_status_of(&self, key: &str) -> String {
        lock(&self.state).jira[key]["fields"]["status"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Comments made on Jira issue `key` (ADF bodies).
    pub fn jira_comments(&self, key: &str) -> Vec<Value> {
        lock(&self.state)
            .jira_comments
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Adds a Jira issue whose description is the ADF `description`.
    pub fn add_jira(&self, key: &str, summary: &str, description: Value, labels: &[&str]) {
        let issue = json!({
            "id": "10042", "key": key,
            "self": format!("{}/rest/api/3/issue/10042", self.url),
            "fields": {"summary": summary, "description": description, "labels": labels,
                       "status": jira_status("To Do")},
        });
        lock(&self.state).jira.insert(key.into(), issue);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.server.requests()
    }
}
